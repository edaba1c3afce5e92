//! What hostile or careless input must not do: a handler that panics loses only its own
//! subscription, a packet numbered at the very top of the sequence space does not bring
//! a shard down, a dropped subscription leaves its group, and empty batches do not
//! silence heartbeats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    group, loopback_publisher, loopback_subscription as sub_config, new_publisher, offer,
    shards_on, start_or_skip, wait_until, BACKENDS,
};
use multipoint_control::{Direction, Interface, MultipointSocket, Roles, Transport};
use multipoint_dataplane::wire::{write_heartbeat, PacketBuilder, Session};
use multipoint_dataplane::{Error, Publisher, PublisherConfig, ShardConfig, SubscriptionConfig};

#[test]
fn a_panicking_handler_loses_its_subscription_and_the_shard_goes_on() {
    for backend in BACKENDS {
        let config = ShardConfig {
            shards: 1,
            ..shards_on(backend)
        };
        let Some(mut shards) = start_or_skip("panicking handler", config) else {
            return;
        };
        let (bad_group, good_group) = (group(120, 1), group(120, 2));
        let bad = shards
            .subscribe(sub_config(bad_group), |seq: u64, _: &[u8]| {
                if seq == 3 {
                    panic!("handler bug (this panic is part of the test)");
                }
            })
            .unwrap();
        let good = shards
            .subscribe(sub_config(good_group), |_: u64, _: &[u8]| {})
            .unwrap();
        assert_eq!(bad.shard(), good.shard(), "both on the one shard");

        let mut to_bad = new_publisher(backend, "BAD", bad_group);
        let mut to_good = new_publisher(backend, "GOOD", good_group);
        for i in 0..10u8 {
            offer(&mut to_bad, &[i]);
            to_bad.flush();
        }
        // Packets are counted before their messages go to the handler; messages after.
        wait_until(
            "the bad handler to have run",
            Duration::from_secs(5),
            || bad.stats().packets >= 3,
        );
        for i in 0..1000u32 {
            offer(&mut to_good, &i.to_be_bytes());
        }
        to_good.flush();
        wait_until("the good subscription", Duration::from_secs(5), || {
            good.stats().messages == 1000
        });
        assert!(matches!(bad.close(), Err(Error::HandlerPanicked { .. })));
        assert_eq!(good.close().unwrap().stats.gaps, 0);
    }
}

#[test]
fn a_packet_at_the_top_of_the_sequence_space_does_not_bring_a_shard_down() {
    for backend in BACKENDS {
        let Some(mut shards) = start_or_skip("top of sequence space", shards_on(backend)) else {
            return;
        };
        let group = group(120, 3);
        let session = Session::new("TOP").unwrap();
        let sub = shards
            .subscribe(
                SubscriptionConfig {
                    session: Some(session),
                    ..sub_config(group)
                },
                |_: u64, _: &[u8]| {},
            )
            .unwrap();
        // The last message numbers a u64 can carry: u64::MAX - 2 and u64::MAX - 1.
        let mut buf = [0u8; 64];
        let mut b = PacketBuilder::start(&mut buf, &session, u64::MAX - 2).unwrap();
        b.push(&mut buf, b"x").unwrap();
        b.push(&mut buf, b"y").unwrap();
        let len = b.finish(&mut buf);
        let tx = MultipointSocket::new(Transport::Udp4Multicast, Roles::LEAF).unwrap();
        tx.set_interface(Interface::LOOPBACK_V4).unwrap();
        let m = tx.join_leaf(group, Direction::SenderOnly, None).unwrap();
        m.send(&buf[..len]).unwrap();
        wait_until("the packet", Duration::from_secs(5), || {
            sub.stats().packets == 1
        });
        // So far ahead of 1 that it waits as suspect, until the sender goes on from it: a
        // heartbeat announcing u64::MAX as the next number.
        assert_eq!(sub.stats().messages, 0);
        let hb_len = write_heartbeat(&mut buf, &session, u64::MAX).unwrap();
        m.send(&buf[..hb_len]).unwrap();
        wait_until("the heartbeat", Duration::from_secs(5), || {
            sub.stats().packets == 2
        });
        let stats = sub.close().unwrap().stats;
        assert_eq!(stats.messages, 2, "{stats:?}");
        assert_eq!(stats.gaps, 1, "everything below was missing: {stats:?}");
        assert_eq!((stats.suspect, stats.heartbeats), (0, 1), "{stats:?}");
    }
}

#[test]
fn dropping_a_subscription_leaves_its_group() {
    let Some(mut shards) = start_or_skip("drop", ShardConfig::default()) else {
        return;
    };
    let group = group(120, 4);
    let sub = shards
        .subscribe(sub_config(group), |_: u64, _: &[u8]| {})
        .unwrap();
    let joined = |g: &SocketAddr| {
        let SocketAddr::V4(v4) = g else {
            unreachable!()
        };
        let hex = format!("{:08X}", u32::from_ne_bytes(v4.ip().octets()));
        std::fs::read_to_string("/proc/net/igmp")
            .unwrap()
            .contains(&hex)
    };
    // /proc/net/igmp is walked by position: a read while other tests join and leave can
    // skip an entry, so look until it shows.
    wait_until("the membership", Duration::from_secs(5), || joined(&group));
    drop(sub);
    wait_until("the membership to go", Duration::from_secs(5), || {
        !joined(&group)
    });
}

#[test]
fn empty_batches_do_not_silence_heartbeats() {
    for backend in BACKENDS {
        let Some(mut shards) = start_or_skip("heartbeats", shards_on(backend)) else {
            return;
        };
        let group = group(120, 5);
        let sub = shards
            .subscribe(sub_config(group), |_: u64, _: &[u8]| {})
            .unwrap();
        let mut p = Publisher::new(PublisherConfig {
            heartbeat: Duration::from_millis(20),
            ..loopback_publisher(backend, "HB", group)
        })
        .unwrap();
        // An application loop with nothing to publish: empty batches, flushes and polls.
        wait_until("heartbeats", Duration::from_secs(5), || {
            p.begin_batch();
            p.end_batch();
            p.flush();
            p.poll();
            sub.stats().heartbeats >= 3
        });
    }
}

/// A handler that remembers what it heard of its shard's failure.
#[derive(Default)]
struct Failures {
    heard: Vec<String>,
}

impl multipoint_dataplane::Handler for Failures {
    fn on_message(&mut self, _sequence: u64, _message: &[u8]) {}
    fn on_failure(&mut self, reason: &str) {
        self.heard.push(reason.to_owned());
    }
}

/// Two subscriptions on one simulated shard whose backend then fails as `fault` says:
/// both hear it at once (handler, stats, `failure()`), a new subscription is refused
/// with the reason, and closing still gives each handler back.
fn a_failing_shard_tells_every_subscription(
    fault: multipoint_dataplane::io::sim::ReceiveFault,
    says: &str,
) {
    use multipoint_dataplane::io::sim::SimNet;
    use multipoint_dataplane::Network;
    let net = SimNet::new(77);
    let config = ShardConfig {
        shards: 1,
        pin: false,
        network: Network::Sim(net.clone()),
        ..ShardConfig::default()
    };
    let mut shards = multipoint_dataplane::Shards::start(config).unwrap();
    let subs: Vec<_> = (1..=2)
        .map(|i| {
            shards
                .subscribe(sub_config(group(121, i)), Failures::default())
                .unwrap()
        })
        .collect();
    net.break_receives(fault);
    wait_until("the failure", Duration::from_secs(10), || {
        subs.iter().all(|s| s.failure().is_some())
    });
    let refused = shards.subscribe(sub_config(group(121, 3)), Failures::default());
    assert!(
        matches!(&refused, Err(Error::ShardFailed { reason, .. }) if reason.contains(says)),
        "{:?}",
        refused.err()
    );
    for sub in subs {
        let reason = sub.failure().unwrap();
        assert!(reason.contains(says), "{reason}");
        assert_eq!(sub.stats().shard_failures, 1);
        let closed = sub.close().unwrap();
        assert_eq!(
            closed.handler.heard,
            [reason],
            "heard once, with the reason"
        );
    }
    shards.shutdown();
}

#[test]
fn a_shard_whose_backend_keeps_failing_tells_every_subscription_at_once() {
    a_failing_shard_tells_every_subscription(
        multipoint_dataplane::io::sim::ReceiveFault::Errno(libc_ebadf()),
        "failed 3 times in a row",
    );
}

#[test]
fn a_shard_whose_thread_panics_tells_every_subscription_at_once() {
    a_failing_shard_tells_every_subscription(
        multipoint_dataplane::io::sim::ReceiveFault::Panic,
        "panicked",
    );
}

/// EBADF, the error a receive on a closed descriptor gets.
fn libc_ebadf() -> i32 {
    9
}
