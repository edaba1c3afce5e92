//! After warm-up, publishing and receiving allocate nothing on the heap: a counting global
//! allocator sees no allocation while a publisher sends 100,000 messages and a shard
//! receives them, on both backends, with segmentation offload on and off.
//!
//! This file is its own test binary with a single test, so that nothing else allocates
//! while the counter is watched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    group, publish_paced, start_or_skip, wait_until, Checker, Checksum, Stream, BACKENDS, STALL,
};
use multipoint_control::Interface;
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{Publisher, PublisherConfig, ShardConfig, SubscriptionConfig};
use multipoint_test_support::alloc;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// (all threads, publishing thread)
fn snapshot() -> (u64, u64) {
    (alloc::allocations(), alloc::marked_allocations())
}

const WARM_UP: u64 = 20_000;
const MEASURED: u64 = 100_000;
const WINDOW: u64 = 3_000;

#[test]
fn after_warm_up_publishing_and_receiving_allocate_nothing() {
    alloc::mark_thread();
    // The counter sees allocations on this thread and on others.
    let before = snapshot();
    drop(std::hint::black_box(vec![0u8; 64]));
    let mid = snapshot();
    std::thread::spawn(|| drop(std::hint::black_box(vec![0u8; 64])))
        .join()
        .unwrap();
    let after = snapshot();
    assert!(mid.0 > before.0 && mid.1 > before.1, "{before:?} {mid:?}");
    assert!(after.0 > mid.0, "{mid:?} {after:?}");

    let mut findings = Vec::new();
    let mut runs = 0;
    for (b, backend) in BACKENDS.into_iter().enumerate() {
        for (o, offload) in [true, false].into_iter().enumerate() {
            let test = format!("{backend:?}, offload {offload}");
            let Some(mut shards) = start_or_skip(
                &test,
                ShardConfig {
                    backend,
                    gro: offload,
                    ..ShardConfig::default()
                },
            ) else {
                continue;
            };
            let group = group(103, (b * 2 + o + 1) as u8);
            let stream = Stream::new();
            let sub = shards
                .subscribe(
                    SubscriptionConfig {
                        interface: Interface::LOOPBACK_V4,
                        ..SubscriptionConfig::new(group)
                    },
                    Checker::new(&stream),
                )
                .unwrap();
            let mut publisher = Publisher::new(PublisherConfig {
                interface: Interface::LOOPBACK_V4,
                backend,
                gso: offload,
                ..PublisherConfig::new(Session::new("NOALLOC").unwrap(), group)
            })
            .unwrap();
            let received = || sub.stats().messages;
            let mut sent = Checksum::default();

            publish_paced(
                &mut publisher,
                &stream,
                1..=WARM_UP,
                WINDOW,
                received,
                Some(&mut sent),
            );
            publisher.flush();
            wait_until("the warm-up messages", STALL, || {
                publisher.poll();
                received() == WARM_UP
            });

            let before = snapshot();
            publish_paced(
                &mut publisher,
                &stream,
                WARM_UP + 1..=WARM_UP + MEASURED,
                WINDOW,
                received,
                Some(&mut sent),
            );
            publisher.flush();
            wait_until("the measured messages", STALL, || {
                publisher.poll();
                received() == WARM_UP + MEASURED
            });
            let after = snapshot();

            let published = publisher.close();
            let closed = sub.close().unwrap();
            shards.shutdown();
            closed
                .handler
                .assert_complete(&test, WARM_UP + MEASURED, sent.value());
            if offload {
                assert!(published.gso_sends > 0, "{test}: {published:?}");
                assert!(closed.stats.gro_batches > 0, "{test}: {:?}", closed.stats);
            }
            let total = after.0 - before.0;
            let publishing = after.1 - before.1;
            if total > 0 {
                findings.push(format!(
                    "{test}: {total} allocations, {publishing} on the publishing thread, \
                     {} on other threads (the shard)",
                    total - publishing
                ));
            }
            runs += 1;
        }
    }
    assert!(runs > 0, "no backend could run here");
    assert!(
        findings.is_empty(),
        "allocations after warm-up while {MEASURED} messages were published and received:\n{}",
        findings.join("\n")
    );
}
