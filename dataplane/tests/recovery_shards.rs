//! Recovery through the whole data plane on the simulated network, with the network
//! losing 10 % of everything (stream packets, requests and replies alike) and reordering
//! some: a publisher with a re-request server and shards whose subscription recovers; and
//! a [`Fanout`] root with a server sending its stream by unicast to three leaves, each a
//! subscription that recovers from the root. Every message arrives: in order, or as it
//! comes with the recovered ones marked. And the same publisher on two lines, each
//! losing its own tenth, to a subscription that arbitrates between them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::publish_step;
use multipoint_control::Interface;
use multipoint_dataplane::core::sequence::Gap;
use multipoint_dataplane::io::sim::{Impairments, SimNet};
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    Closed, Fanout, FanoutConfig, Handler, LineB, LineBConfig, LinesConfig, Network, OfferError,
    Publisher, PublisherConfig, RecoveryConfig, RerequestConfig, ShardConfig, Shards, Subscription,
    SubscriptionConfig,
};

const MESSAGES: u64 = 30_000;
/// Messages the fan-out root sends each of its leaves.
const FANOUT_MESSAGES: u64 = 20_000;
const LEAVES: u8 = 3;

/// A simulated network (random source seeded with `seed`) that loses 10 % of everything
/// and delays 2 % by up to 300 µs.
fn lossy(seed: u64) -> SimNet {
    let net = SimNet::new(seed);
    net.impair(Impairments {
        loss: 0.10,
        reorder: 0.02,
        reorder_by: Duration::from_micros(300),
        ..Impairments::none()
    });
    net
}

/// Recovery from `server`, in order or as it comes, giving a gap up after 5 s.
fn recovery(server: SocketAddr, in_order: bool) -> RecoveryConfig {
    RecoveryConfig {
        in_order,
        deadline: Duration::from_secs(5),
        ..RecoveryConfig::new(server)
    }
}

fn message(seq: u64) -> [u8; 24] {
    let mut m = [0u8; 24];
    m[..8].copy_from_slice(&seq.to_be_bytes());
    m[8..16].copy_from_slice(&(!seq).to_be_bytes());
    m
}

#[derive(Default)]
struct Seen {
    order: Vec<u64>,
    recovered: HashSet<u64>,
    bad: u64,
    gaps: Vec<Gap>,
}

impl Seen {
    fn take(&mut self, sequence: u64, msg: &[u8], recovered: bool) {
        if msg != message(sequence) {
            self.bad += 1;
        }
        self.order.push(sequence);
        if recovered {
            self.recovered.insert(sequence);
        }
    }
}

impl Handler for Seen {
    fn on_message(&mut self, sequence: u64, msg: &[u8]) {
        self.take(sequence, msg, false);
    }
    fn on_recovered(&mut self, sequence: u64, msg: &[u8]) {
        self.take(sequence, msg, true);
    }
    fn on_gap(&mut self, gap: Gap) {
        self.gaps.push(gap);
    }
}

/// With `two_lines`, the publisher sends on a second group too and the subscription
/// arbitrates between both (each line loses its own tenth).
fn recovers_through_the_shards(in_order: bool, two_lines: bool) {
    let net = lossy(if in_order { 11 } else { 12 } + if two_lines { 10 } else { 0 });
    let group: SocketAddr = "239.9.9.9:9000".parse().unwrap();
    let group_b: SocketAddr = "239.9.9.10:9000".parse().unwrap();
    let server: SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let session = Session::new("SIMREC").unwrap();
    let mut shards = Shards::start(ShardConfig {
        pin: false,
        network: Network::Sim(net.clone()),
        ..ShardConfig::default()
    })
    .unwrap();
    let sub = shards
        .subscribe(
            SubscriptionConfig {
                session: Some(session),
                recovery: Some(recovery(server, in_order)),
                // A wait for the other line generous against a busy machine's stalls:
                // a gap is then what both lines lost.
                line_b: two_lines.then(|| LineBConfig {
                    arbitration: LinesConfig {
                        wait: Duration::from_millis(20),
                        ..LinesConfig::default()
                    },
                    ..LineBConfig::new(group_b)
                }),
                ..SubscriptionConfig::new(group)
            },
            Seen::default(),
        )
        .unwrap();
    let mut publisher = Publisher::new(PublisherConfig {
        network: Network::Sim(net.clone()),
        bind: Some("10.0.0.1:5000".parse().unwrap()),
        rerequest: Some(RerequestConfig::new(server)),
        line_b: two_lines.then(|| LineB::new(group_b, Interface::Default)),
        heartbeat: Duration::from_millis(20),
        ..PublisherConfig::new(session, group)
    })
    .unwrap();
    let mut next = 1;
    let begun = Instant::now();
    while sub.stats().ended == 0 {
        assert!(
            begun.elapsed() < Duration::from_secs(60),
            "stuck: {:?}",
            sub.stats()
        );
        publish_step(&mut publisher, &mut next, MESSAGES, 200, message);
        publisher.poll();
        std::thread::sleep(Duration::from_micros(500));
    }
    let closed = sub.close().unwrap();
    shards.shutdown();
    arrived_once(&closed, in_order, MESSAGES);
    let st = closed.stats;
    assert!(!closed.recovery.is_empty());
    if !two_lines {
        // A tenth of everything was lost: the stream, the requests and the replies.
        assert!(st.recovered > MESSAGES / 20, "{st:?}");
        assert!(
            st.retries > 0,
            "lost requests and replies were asked again: {st:?}"
        );
        return;
    }
    // Each line lost a tenth of its packets; the stream only what both lost (about a
    // hundredth), and only that was asked for. No copy reached the handler twice (the order checks
    // above), and neither did a stream duplicate.
    let [a, b] = [&closed.lines[0].0, &closed.lines[1].0];
    assert!(a.wins > 0 && b.wins > 0, "{a:?} {b:?}");
    assert!(a.gaps_alone > 0 && b.gaps_alone > 0, "{a:?} {b:?}");
    assert!(st.gaps * 2 < a.gaps.min(b.gaps), "{st:?} {a:?} {b:?}");
    assert!(st.recovered > 0 && st.recovered < MESSAGES / 20, "{st:?}");
    assert_eq!(st.duplicates, 0, "{st:?}");
}

#[test]
fn ten_percent_loss_everywhere_is_recovered_in_order_through_the_shards() {
    recovers_through_the_shards(true, false);
}

#[test]
fn ten_percent_loss_everywhere_is_recovered_as_it_comes_through_the_shards() {
    recovers_through_the_shards(false, false);
}

#[test]
fn two_lines_losing_a_tenth_each_recover_only_what_both_lost_in_order() {
    recovers_through_the_shards(true, true);
}

#[test]
fn two_lines_losing_a_tenth_each_recover_only_what_both_lost_as_it_comes() {
    recovers_through_the_shards(false, true);
}

/// Checks that a subscription got every message of `1..=messages` once, byte for byte
/// (in order, or as it came with the recovered ones marked), and nothing was given up.
fn arrived_once(closed: &Closed<Seen>, in_order: bool, messages: u64) {
    let (st, seen) = (&closed.stats, &closed.handler);
    assert_eq!(seen.bad, 0);
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert_eq!(
        (st.messages, st.missing, st.gaps_given_up),
        (messages, 0, 0),
        "{st:?}"
    );
    let mut numbers = seen.order.clone();
    if in_order {
        assert_eq!(numbers, (1..=messages).collect::<Vec<_>>());
        assert!(seen.recovered.is_empty());
    } else {
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=messages).collect::<Vec<_>>(), "each once");
        assert_eq!(seen.recovered.len() as u64, st.recovered);
    }
}

/// Checks that a leaf got every message once (see [`arrived_once`]) and recovered a
/// tenth of them from the root.
fn assert_complete(closed: &Closed<Seen>, in_order: bool, messages: u64) {
    arrived_once(closed, in_order, messages);
    let st = &closed.stats;
    // A tenth of the stream to this leaf was lost, and came back from the root.
    assert!(st.recovered > messages / 20, "{st:?}");
    assert!(!closed.recovery.is_empty());
}

fn leaves_recover_from_the_root(in_order: bool) {
    let net = lossy(if in_order { 21 } else { 22 });
    let root: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let server: SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let session = Session::new("SIMFAN").unwrap();
    let mut fanout = Fanout::start(
        net.bind(root).unwrap(),
        FanoutConfig {
            pin: false,
            heartbeat: Duration::from_millis(20),
            rerequest: Some(RerequestConfig::new(server)),
            ..FanoutConfig::new(session)
        },
    )
    .unwrap();
    assert_eq!(fanout.rerequest_address(), Some(server));
    let mut shards = Shards::start(ShardConfig {
        pin: false,
        network: Network::Sim(net.clone()),
        ..ShardConfig::default()
    })
    .unwrap();
    let leaves = fanout.leaves();
    let subs: Vec<Subscription<Seen>> = (0..LEAVES)
        .map(|i| {
            let addr = SocketAddr::from(([10, 0, 1, 2 + i], 6000));
            // As a rooted leaf's: bound to its address, taking data from the root only.
            let socket = net.bind(addr).unwrap();
            socket.connect(root);
            let sub = shards
                .subscribe_socket(
                    socket,
                    SubscriptionConfig {
                        session: Some(session),
                        recovery: Some(recovery(server, in_order)),
                        ..SubscriptionConfig::new(addr)
                    },
                    Seen::default(),
                )
                .unwrap();
            leaves.add(addr).unwrap();
            sub
        })
        .collect();

    let mut next = 1;
    let begun = Instant::now();
    while subs.iter().any(|s| s.stats().ended == 0) {
        let stats: Vec<_> = subs.iter().map(Subscription::stats).collect();
        assert!(
            begun.elapsed() < Duration::from_secs(60),
            "stuck: {stats:?}"
        );
        if publish_step(&mut fanout, &mut next, FANOUT_MESSAGES, 200, message) {
            assert_eq!(fanout.offer(b"late"), Err(OfferError::SessionEnded));
        }
        fanout.poll();
        std::thread::sleep(Duration::from_micros(500));
    }
    let closed: Vec<Closed<Seen>> = subs.into_iter().map(|s| s.close().unwrap()).collect();
    shards.shutdown();
    let served = fanout.rerequest_stats().unwrap();
    let stats = fanout.close();
    assert_eq!(stats.messages, FANOUT_MESSAGES);
    for leaf in &closed {
        assert_complete(leaf, in_order, FANOUT_MESSAGES);
    }
    // The root answered the leaves (every reply counted by a leaf came from it, as only
    // its address counts), and nothing was refused; lost requests and replies were asked
    // again. (A straggler the reordering delivered late counts as recovered too, so the
    // messages served need not reach the messages recovered.)
    let replies: u64 = closed.iter().map(|c| c.stats.replies).sum();
    assert!(replies > 0 && served.replies >= replies, "{served:?}");
    assert_eq!(
        served.requests,
        served.replies + served.refused(),
        "{served:?}"
    );
    assert!(closed.iter().any(|c| c.stats.retries > 0));
}

#[test]
fn ten_percent_loss_everywhere_is_recovered_from_the_fanout_root_in_order() {
    leaves_recover_from_the_root(true);
}

#[test]
fn ten_percent_loss_everywhere_is_recovered_from_the_fanout_root_as_it_comes() {
    leaves_recover_from_the_root(false);
}
