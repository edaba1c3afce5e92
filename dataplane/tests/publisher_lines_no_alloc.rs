//! After warm-up, publishing on two lines allocates nothing on the heap: a counting global
//! allocator sees no allocation while a publisher with a line B sends 50,000 messages to
//! two groups and a shard receives both, on both backends.
//!
//! This file is its own test binary with a single test, so that nothing else allocates
//! while the counter is watched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    group, loopback_publisher, loopback_subscription, shards_on, start_or_skip, AllocWatch,
    Checker, Paced, Stream, BACKENDS,
};
use multipoint_control::Interface;
use multipoint_dataplane::{LineB, Publisher, PublisherConfig};
use multipoint_test_support::alloc;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

const WARM_UP: u64 = 20_000;
const MEASURED: u64 = 50_000;
const WINDOW: u64 = 3_000;

#[test]
fn after_warm_up_publishing_on_two_lines_allocates_nothing() {
    let mut watch = AllocWatch::new();
    for (i, backend) in BACKENDS.into_iter().enumerate() {
        let test = format!("{backend:?}");
        let Some(mut shards) = start_or_skip(&test, shards_on(backend)) else {
            continue;
        };
        let (a, b) = (group(104, 1 + i as u8), group(105, 1 + i as u8));
        let stream = Stream::new();
        let sub_a = shards
            .subscribe(loopback_subscription(a), Checker::new(&stream))
            .unwrap();
        let sub_b = shards
            .subscribe(loopback_subscription(b), Checker::new(&stream))
            .unwrap();
        let mut publisher = Publisher::new(PublisherConfig {
            line_b: Some(LineB::new(b, Interface::LOOPBACK_V4)),
            ..loopback_publisher(backend, "NOALLOC2", a)
        })
        .unwrap();
        let slower = || sub_a.stats().messages.min(sub_b.stats().messages);
        let mut paced = Paced::new(&stream, WINDOW, slower);
        paced.publish_all(&mut publisher, 1..=WARM_UP, "the warm-up messages");

        watch.start();
        let measured = WARM_UP + 1..=WARM_UP + MEASURED;
        paced.publish_all(&mut publisher, measured, "the measured messages");
        watch.stop(&test);
        let sent = paced.sent;

        let (published, line_b) = publisher.close_lines();
        let line_b = line_b.unwrap();
        for (line, sub) in [("line A", sub_a), ("line B", sub_b)] {
            let closed = sub.close().unwrap();
            closed.handler.assert_complete(
                &format!("{test}, {line}"),
                WARM_UP + MEASURED,
                sent.value(),
            );
        }
        shards.shutdown();
        assert_eq!(line_b.packets, published.packets, "{test}: {line_b:?}");
        assert!(line_b.gso_sends > 0, "{test}: {line_b:?}");
    }
    watch.assert_nothing_allocated(&format!(
        "{MEASURED} messages were published on two lines and received"
    ));
}
