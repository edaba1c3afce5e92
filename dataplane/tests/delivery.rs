//! End to end on loopback: a million messages of mixed sizes (0 to 1024 bytes) from one
//! publisher reach two subscribers, on two shards, complete, in order and unchanged, on
//! each backend with segmentation offload (GSO on the publisher, GRO on the shards) on and
//! off; and the counters say whether offload was in use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::{
    group, publish_paced, start_or_skip, wait_until, Checker, Checksum, Net, Stream, STALL,
};
use multipoint_control::Interface;
use multipoint_dataplane::io::sim::SimNet;
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    BackendChoice, Publisher, PublisherConfig, ShardConfig, Subscription, SubscriptionConfig,
};

const MESSAGES: u64 = 1_000_000;

/// How far the publisher may run ahead of the slower subscriber, in messages: about 1.5
/// MB of payload, well inside a socket receive buffer of 4 MiB (the usual rmem_max).
const WINDOW: u64 = 3_000;

fn a_million_messages_reach_two_subscribers(
    test: &str,
    net: Net,
    offload: bool,
    group: SocketAddr,
) {
    let Some(mut shards) = start_or_skip(
        test,
        net.shards(ShardConfig {
            gro: offload,
            shards: 2,
            ..ShardConfig::default()
        }),
    ) else {
        return;
    };
    let kind = net.kind();
    assert_eq!(shards.backend().kind, kind);

    let stream = Stream::new();
    let subs: Vec<Subscription<Checker>> = (0..2)
        .map(|_| {
            let config = SubscriptionConfig {
                interface: Interface::LOOPBACK_V4,
                recv_buffer: 16 << 20,
                ..SubscriptionConfig::new(group)
            };
            shards.subscribe(config, Checker::new(&stream)).unwrap()
        })
        .collect();
    assert_eq!(
        subs.iter().map(Subscription::shard).collect::<Vec<_>>(),
        [0, 1],
        "round robin puts the two subscriptions on the two shards"
    );

    let mut publisher = Publisher::new(PublisherConfig {
        gso: offload,
        ..net.publisher(Session::new("DELIVERY").unwrap(), group)
    })
    .unwrap();
    assert_eq!(publisher.backend().kind, kind);

    let slowest = || subs.iter().map(|s| s.stats().messages).min().unwrap_or(0);
    let mut sent = Checksum::default();
    publish_paced(
        &mut publisher,
        &stream,
        1..=MESSAGES,
        WINDOW,
        slowest,
        Some(&mut sent),
    );
    publisher.flush();
    wait_until("every message to arrive", STALL, || {
        publisher.poll();
        slowest() == MESSAGES
    });
    let published = publisher.close();
    assert_eq!(published.messages, MESSAGES);
    assert_eq!(published.send_errors, 0, "{published:?}");
    wait_until("the end of session", STALL, || {
        subs.iter().all(|s| s.stats().end_of_session == 1)
    });

    for (i, sub) in subs.into_iter().enumerate() {
        let who = format!("{test}: subscriber {i}");
        let closed = sub.close().unwrap();
        let stats = closed.stats;
        closed.handler.assert_complete(&who, MESSAGES, sent.value());
        assert_eq!(
            closed.handler.ends, 1,
            "{who}: end of session handed over once"
        );
        assert_eq!(stats.messages, MESSAGES, "{who}: {stats:?}");
        assert_eq!(stats.bytes, published.bytes, "{who}: {stats:?}");
        assert_eq!(
            (stats.gaps, stats.missing, stats.duplicates),
            (0, 0, 0),
            "{who}: {stats:?}"
        );
        assert_eq!(
            (stats.kernel_drops, stats.receive_errors),
            (0, 0),
            "{who}: {stats:?}"
        );
        assert_eq!(
            (stats.malformed, stats.truncated, stats.other_session),
            (0, 0, 0),
            "{who}: {stats:?}"
        );
        assert_eq!(stats.end_of_session, 1, "{who}: {stats:?}");
        // Every data packet the publisher sent came in (heartbeats aside).
        assert_eq!(
            stats.packets - stats.heartbeats - stats.end_of_session,
            published.packets - published.heartbeats - 1,
            "{who}: data packets, {stats:?} against {published:?}"
        );
        if offload {
            assert!(stats.gro_batches > 0, "{who}: GRO unused: {stats:?}");
            assert!(stats.datagrams < stats.packets, "{who}: {stats:?}");
        } else {
            assert_eq!(stats.gro_batches, 0, "{who}: {stats:?}");
            assert_eq!(stats.datagrams, stats.packets, "{who}: {stats:?}");
        }
    }
    if offload {
        assert!(published.gso_sends > 0, "GSO unused: {published:?}");
        assert!(published.sends < published.packets, "{published:?}");
    } else {
        assert_eq!(published.gso_sends, 0, "{published:?}");
        assert_eq!(published.sends, published.packets, "{published:?}");
    }
    shards.shutdown();
}

#[test]
fn a_million_messages_arrive_complete_in_order_and_unchanged_on_io_uring_with_gso_and_gro() {
    a_million_messages_reach_two_subscribers(
        "io_uring, offload on",
        Net::Host(BackendChoice::Uring),
        true,
        group(101, 1),
    );
}

#[test]
fn a_million_messages_arrive_complete_in_order_and_unchanged_on_io_uring_without_offload() {
    a_million_messages_reach_two_subscribers(
        "io_uring, offload off",
        Net::Host(BackendChoice::Uring),
        false,
        group(101, 2),
    );
}

#[test]
fn a_million_messages_arrive_complete_in_order_and_unchanged_on_mmsg_with_gso_and_gro() {
    a_million_messages_reach_two_subscribers(
        "mmsg, offload on",
        Net::Host(BackendChoice::Mmsg),
        true,
        group(101, 3),
    );
}

#[test]
fn a_million_messages_arrive_complete_in_order_and_unchanged_on_mmsg_without_offload() {
    a_million_messages_reach_two_subscribers(
        "mmsg, offload off",
        Net::Host(BackendChoice::Mmsg),
        false,
        group(101, 4),
    );
}

/// The same stream on a simulated network (without GRO, which the simulation does not
/// coalesce), through the same publisher and shards.
#[test]
fn a_million_messages_arrive_complete_in_order_and_unchanged_on_sim() {
    a_million_messages_reach_two_subscribers(
        "sim",
        Net::Sim(SimNet::new(101)),
        false,
        group(101, 5),
    );
}
