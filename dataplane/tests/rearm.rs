//! A multishot receive ends when the shard's buffer ring runs dry (ENOBUFS); the shard
//! re-arms it, counts it, and nothing is lost: the datagrams wait in the socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use multipoint_control::Interface;
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    BackendChoice, OfferError, Publisher, PublisherConfig, ShardConfig, Shards, SubscriptionConfig,
};

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
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, 77, 2), port));
    let mut next = 1u64;
    let sub = shards
        .subscribe(
            SubscriptionConfig {
                interface: Interface::LOOPBACK_V4,
                ..SubscriptionConfig::new(group)
            },
            move |seq: u64, _: &[u8]| {
                assert_eq!(seq, next, "in order, none missing");
                next += 1;
                if seq % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            },
        )
        .unwrap();
    let mut publisher = Publisher::new(PublisherConfig {
        interface: Interface::LOOPBACK_V4,
        backend: BackendChoice::Uring,
        gso: false,
        ..PublisherConfig::new(Session::new("REARM").unwrap(), group)
    })
    .unwrap();
    let n = 20_000u64;
    for i in 0..n {
        let msg = [i as u8; 100];
        loop {
            match publisher.offer(&msg) {
                Ok(_) => break,
                Err(OfferError::Backpressure) => publisher.poll(),
                Err(e) => panic!("{e}"),
            }
        }
    }
    publisher.flush();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sub.stats().messages < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = sub.stats();
    assert!(
        stats.rearms > 0,
        "the burst should have emptied the buffer ring: {stats:?}"
    );
    assert_eq!(stats.kernel_drops, 0, "{stats:?}");
    assert_eq!(stats.messages, n, "{stats:?}");
    assert_eq!((stats.gaps, stats.missing), (0, 0), "{stats:?}");
}
