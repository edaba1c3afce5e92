//! After warm-up, publishing and receiving allocate nothing on the heap: a counting global
//! allocator sees no allocation while a publisher sends 100,000 messages in batches and
//! 100,000 more in a plain `offer_wait` loop (adaptive batching), and a shard receives
//! them, on both backends, with segmentation offload on and off.
//!
//! This file is its own test binary with a single test, so that nothing else allocates
//! while the counter is watched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    group, loopback_publisher, loopback_subscription, shards_on, start_or_skip, AllocWatch,
    Checker, Paced, Stream, BACKENDS,
};
use multipoint_dataplane::{Publisher, PublisherConfig, ShardConfig};
use multipoint_test_support::alloc;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

const WARM_UP: u64 = 20_000;
const MEASURED: u64 = 100_000;
const WINDOW: u64 = 3_000;

#[test]
fn after_warm_up_publishing_and_receiving_allocate_nothing() {
    let mut watch = AllocWatch::new();
    // The counter sees allocations on this thread and on others.
    let before = AllocWatch::snapshot();
    drop(std::hint::black_box(vec![0u8; 64]));
    let mid = AllocWatch::snapshot();
    std::thread::spawn(|| drop(std::hint::black_box(vec![0u8; 64])))
        .join()
        .unwrap();
    let after = AllocWatch::snapshot();
    assert!(mid.0 > before.0 && mid.1 > before.1, "{before:?} {mid:?}");
    assert!(after.0 > mid.0, "{mid:?} {after:?}");

    for (b, backend) in BACKENDS.into_iter().enumerate() {
        for (o, offload) in [true, false].into_iter().enumerate() {
            let test = format!("{backend:?}, offload {offload}");
            let Some(mut shards) = start_or_skip(
                &test,
                ShardConfig {
                    gro: offload,
                    ..shards_on(backend)
                },
            ) else {
                continue;
            };
            let group = group(103, (b * 2 + o + 1) as u8);
            let stream = Stream::new();
            let sub = shards
                .subscribe(loopback_subscription(group), Checker::new(&stream))
                .unwrap();
            let mut publisher = Publisher::new(PublisherConfig {
                gso: offload,
                ..loopback_publisher(backend, "NOALLOC", group)
            })
            .unwrap();
            let mut paced = Paced::new(&stream, WINDOW, || sub.stats().messages);
            paced.publish_all(&mut publisher, 1..=WARM_UP, "the warm-up messages");

            watch.start();
            let measured = WARM_UP + 1..=WARM_UP + MEASURED;
            paced.publish_all(&mut publisher, measured, "the measured messages");
            // A plain offer loop too (adaptive batching, no begin_batch), waiting for room
            // with offer_wait.
            let plain = WARM_UP + MEASURED + 1..=WARM_UP + 2 * MEASURED;
            offer_plainly(&mut publisher, &mut paced, &stream, plain);
            watch.stop(&test);
            let sent = paced.sent;

            let published = publisher.close();
            let closed = sub.close().unwrap();
            shards.shutdown();
            closed
                .handler
                .assert_complete(&test, WARM_UP + 2 * MEASURED, sent.value());
            if offload {
                assert!(published.gso_sends > 0, "{test}: {published:?}");
                assert!(closed.stats.gro_batches > 0, "{test}: {:?}", closed.stats);
            }
        }
    }
    watch.assert_nothing_allocated(&format!("{MEASURED} messages were published and received"));
}

/// Offers messages `seqs` of `stream` one by one with `offer_wait` (no batch), never more
/// than [`WINDOW`] ahead of the subscriber, then flushes and waits for the last.
fn offer_plainly<R: Fn() -> u64>(
    publisher: &mut Publisher,
    paced: &mut Paced<'_, R>,
    stream: &Stream,
    seqs: std::ops::RangeInclusive<u64>,
) {
    let mut buf = [0u8; common::MAX_LEN];
    let last = *seqs.end();
    for seq in seqs {
        let len = stream.write(seq, &mut buf);
        paced.sent.add(seq, &buf[..len]);
        let got = publisher.offer_wait(&buf[..len], common::STALL);
        assert_eq!(got, Ok(seq));
        if paced.received() + WINDOW < seq {
            common::flush_and_wait(publisher, "the subscriber to catch up", || {
                paced.received() + WINDOW >= seq
            });
        }
    }
    common::flush_and_wait(publisher, "the plain offers", || paced.received() == last);
}
