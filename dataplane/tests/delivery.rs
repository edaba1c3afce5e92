//! End to end on loopback: a million messages of mixed sizes (0 to 1024 bytes) from one
//! publisher reach two subscribers, on two shards, complete, in order and unchanged, on
//! each backend with segmentation offload (GSO on the publisher, GRO on the shards) on and
//! off; and the counters say whether offload was in use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::{
    assert_received_stream, await_end_of_session, group, loopback_subscription, start_or_skip,
    Checker, Expected, Net, Paced, Stream,
};
use std::time::Duration;

use multipoint_dataplane::io::sim::{Impairments, SimNet};
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    BackendChoice, Publisher, PublisherConfig, ShardConfig, Subscription, SubscriptionConfig,
};

const MESSAGES: u64 = 1_000_000;

/// How far the publisher may run ahead of the slower subscriber, in messages: about 1.5
/// MB of payload, well inside a socket receive buffer of 4 MiB (the usual rmem_max).
const WINDOW: u64 = 3_000;

/// Asserts that segmentation offload was in use (`offload`) or not, as counted by `stats`:
/// some of the `ops` operations (sends or receives) were `batches` of several packets, so
/// there were fewer of them than `packets`; or none was, and there was one per packet.
fn assert_offload(
    who: &str,
    offload: bool,
    (batches, ops, packets): (u64, u64, u64),
    stats: &dyn std::fmt::Debug,
) {
    if offload {
        assert!(batches > 0, "{who} unused: {stats:?}");
        assert!(ops < packets, "{who}: {stats:?}");
    } else {
        assert_eq!(batches, 0, "{who}: {stats:?}");
        assert_eq!(ops, packets, "{who}: {stats:?}");
    }
}

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
                recv_buffer: 16 << 20,
                ..loopback_subscription(group)
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
    let mut paced = Paced::new(&stream, WINDOW, slowest);
    paced.publish_all(&mut publisher, 1..=MESSAGES, "every message to arrive");
    let sent = paced.sent;
    let published = publisher.close();
    assert_eq!(published.messages, MESSAGES);
    assert_eq!(published.send_errors, 0, "{published:?}");
    await_end_of_session(&subs);

    for (i, sub) in subs.into_iter().enumerate() {
        let who = format!("{test}: subscriber {i}");
        let closed = sub.close().unwrap();
        assert_received_stream(&who, &closed, &published, Expected::stream(MESSAGES, sent));
        let stats = closed.stats;
        assert_eq!(stats.end_of_session, 1, "{who}: {stats:?}");
        // Every data packet the publisher sent came in (heartbeats aside).
        assert_eq!(
            stats.packets - stats.heartbeats - stats.end_of_session,
            published.packets - published.heartbeats - 1,
            "{who}: data packets, {stats:?} against {published:?}"
        );
        let gro = (stats.gro_batches, stats.datagrams, stats.packets);
        assert_offload(&format!("{who}: GRO"), offload, gro, &stats);
    }
    let gso = (published.gso_sends, published.sends, published.packets);
    assert_offload("GSO", offload, gso, &published);
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

/// A stream whose packets the network reorders (one in twenty held back by 200 µs)
/// arrives complete and in order, without a gap or a duplicate, through a subscription
/// with a reorder window of 5 ms: the shard holds what comes early and runs the window's
/// timers.
#[test]
fn a_stream_reordered_on_the_way_arrives_in_order_through_a_reorder_window_on_sim() {
    const COUNT: u64 = 100_000;
    let sim = SimNet::new(102);
    sim.impair(Impairments {
        reorder: 0.05,
        reorder_by: Duration::from_micros(200),
        ..Impairments::none()
    });
    let net = Net::Sim(sim.clone());
    let group = group(101, 6);
    let mut shards = start_or_skip("reorder", net.shards(ShardConfig::default())).unwrap();
    let stream = Stream::new();
    let config = SubscriptionConfig {
        reorder_window: Duration::from_millis(5),
        ..loopback_subscription(group)
    };
    let sub = shards.subscribe(config, Checker::new(&stream)).unwrap();
    let mut publisher =
        Publisher::new(net.publisher(Session::new("REORDER").unwrap(), group)).unwrap();
    let mut paced = Paced::new(&stream, WINDOW, || sub.stats().messages);
    paced.publish_all(&mut publisher, 1..=COUNT, "every message to arrive");
    let sent = paced.sent;
    let published = publisher.close();
    await_end_of_session(std::slice::from_ref(&sub));
    assert!(sim.stats().reordered > 0, "{:?}", sim.stats());
    let closed = sub.close().unwrap();
    assert!(closed.stats.reordered > 0, "{:?}", closed.stats);
    assert_received_stream(
        "reorder",
        &closed,
        &published,
        Expected::stream(COUNT, sent),
    );
    shards.shutdown();
}
