//! A multishot receive ends when the shard's buffer ring runs dry (ENOBUFS); the shard
//! re-arms it, counts it, and nothing is lost: the datagrams wait in the socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{group, loopback_publisher, loopback_subscription, offer, wait_for};
use multipoint_dataplane::{BackendChoice, Publisher, PublisherConfig, ShardConfig, Shards};

#[test]
fn a_receive_that_runs_out_of_buffers_is_rearmed_and_loses_nothing() {
    // Two receive buffers, and a handler slow enough that a burst outruns them.
    let mut shards = Shards::start(ShardConfig {
        backend: BackendChoice::Uring,
        buffers: 2,
        gro: false,
        ..ShardConfig::default()
    })
    .unwrap();
    let group = group(77, 2);
    let mut next = 1u64;
    let sub = shards
        .subscribe(loopback_subscription(group), move |seq: u64, _: &[u8]| {
            assert_eq!(seq, next, "in order, none missing");
            next += 1;
            if seq % 64 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        })
        .unwrap();
    let mut publisher = Publisher::new(PublisherConfig {
        gso: false,
        ..loopback_publisher(BackendChoice::Uring, "REARM", group)
    })
    .unwrap();
    let n = 20_000u64;
    for i in 0..n {
        offer(&mut publisher, &[i as u8; 100]);
    }
    publisher.flush();
    wait_for(Duration::from_secs(20), || sub.stats().messages >= n);
    let stats = sub.stats();
    assert!(
        stats.rearms > 0,
        "the burst should have emptied the buffer ring: {stats:?}"
    );
    assert_eq!(stats.kernel_drops, 0, "{stats:?}");
    assert_eq!(stats.messages, n, "{stats:?}");
    assert_eq!((stats.gaps, stats.missing), (0, 0), "{stats:?}");
}
