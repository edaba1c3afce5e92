//! With kernel stamps on, after warm-up, publishing and receiving still allocate nothing
//! on the heap: a counting global allocator sees no allocation while a publisher that
//! samples one send in 10 for transmit stamps sends 100,000 messages and a shard that
//! records wire→application latency receives them, on both backends.
//!
//! This file is its own test binary with a single test, so that nothing else allocates
//! while the counter is watched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    assert_nothing_allocated, group, loopback_publisher, loopback_subscription, shards_on,
    start_or_skip, Checker, Paced, Stream, BACKENDS,
};
use multipoint_dataplane::{KernelStamps, Publisher, PublisherConfig, SubscriptionConfig};
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
fn with_kernel_stamps_on_publishing_and_receiving_allocate_nothing_after_warm_up() {
    alloc::mark_thread();
    let mut findings = Vec::new();
    let mut runs = 0;
    for (b, backend) in BACKENDS.into_iter().enumerate() {
        let test = format!("{backend:?}, kernel stamps");
        let Some(mut shards) = start_or_skip(&test, shards_on(backend)) else {
            continue;
        };
        let group = group(104, b as u8 + 1);
        let stream = Stream::new();
        let sub = shards
            .subscribe(
                SubscriptionConfig {
                    kernel_stamps: KernelStamps::Software,
                    ..loopback_subscription(group)
                },
                Checker::new(&stream),
            )
            .unwrap();
        let mut publisher = Publisher::new(PublisherConfig {
            tx_stamp_every: 10,
            ..loopback_publisher(backend, "STAMPALLOC", group)
        })
        .unwrap();
        let mut paced = Paced::new(&stream, WINDOW, || sub.stats().messages);
        paced.publish_all(&mut publisher, 1..=WARM_UP, "the warm-up messages");

        let before = snapshot();
        let measured = WARM_UP + 1..=WARM_UP + MEASURED;
        paced.publish_all(&mut publisher, measured, "the measured messages");
        let after = snapshot();
        let sent = paced.sent;

        let tx = publisher.send_latency(common::STALL).unwrap();
        let _ = publisher.close();
        let closed = sub.close().unwrap();
        shards.shutdown();
        closed
            .handler
            .assert_complete(&test, WARM_UP + MEASURED, sent.value());
        assert!(tx.stats.recorded > 0, "{test}: {:?}", tx.stats);
        assert!(
            closed.kernel.stats.stamped > 0,
            "{test}: {:?}",
            closed.kernel.stats
        );
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
    assert_nothing_allocated(
        runs,
        &findings,
        &format!("{MEASURED} messages were published and received with kernel stamps"),
    );
}
