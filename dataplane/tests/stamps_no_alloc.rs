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
    group, loopback_publisher, loopback_subscription, shards_on, start_or_skip, AllocWatch,
    Checker, Paced, Stream, BACKENDS,
};
use multipoint_dataplane::{KernelStamps, Publisher, PublisherConfig, SubscriptionConfig};
use multipoint_test_support::alloc;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

const WARM_UP: u64 = 20_000;
const MEASURED: u64 = 100_000;
const WINDOW: u64 = 3_000;

#[test]
fn with_kernel_stamps_on_publishing_and_receiving_allocate_nothing_after_warm_up() {
    let mut watch = AllocWatch::new();
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

        watch.start();
        let measured = WARM_UP + 1..=WARM_UP + MEASURED;
        paced.publish_all(&mut publisher, measured, "the measured messages");
        watch.stop(&test);
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
    }
    watch.assert_nothing_allocated(&format!(
        "{MEASURED} messages were published and received with kernel stamps"
    ));
}
