//! Recovery through the whole data plane on the simulated network: a publisher with a
//! re-request server, and shards whose subscription recovers, with the network losing
//! 10 % of everything (stream packets, requests and replies alike) and reordering some.
//! Every message arrives: in order, or as it comes with the recovered ones marked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use multipoint_dataplane::core::sequence::Gap;
use multipoint_dataplane::io::sim::{Impairments, SimNet};
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    Handler, Network, OfferError, Publisher, PublisherConfig, RecoveryConfig, RerequestConfig,
    ShardConfig, Shards, SubscriptionConfig,
};

const MESSAGES: u64 = 30_000;

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

fn recovers_through_the_shards(in_order: bool) {
    let net = SimNet::new(if in_order { 11 } else { 12 });
    net.impair(Impairments {
        loss: 0.10,
        reorder: 0.02,
        reorder_by: Duration::from_micros(300),
        ..Impairments::none()
    });
    let group: SocketAddr = "239.9.9.9:9000".parse().unwrap();
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
                recovery: Some(RecoveryConfig {
                    in_order,
                    deadline: Duration::from_secs(5),
                    ..RecoveryConfig::new(server)
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
        if next <= MESSAGES {
            publisher.begin_batch();
            for _ in 0..200 {
                if next > MESSAGES {
                    break;
                }
                match publisher.offer(&message(next)) {
                    Ok(_) => next += 1,
                    Err(OfferError::Backpressure) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            publisher.end_batch();
            publisher.flush();
        } else if !publisher.is_ended() {
            publisher.end_session();
        }
        publisher.poll();
        std::thread::sleep(Duration::from_micros(500));
    }
    let closed = sub.close().unwrap();
    shards.shutdown();
    let (st, seen) = (closed.stats, closed.handler);
    assert_eq!(seen.bad, 0);
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert_eq!(
        (st.messages, st.missing, st.gaps_given_up),
        (MESSAGES, 0, 0)
    );
    let mut numbers = seen.order.clone();
    if in_order {
        assert_eq!(numbers, (1..=MESSAGES).collect::<Vec<_>>());
        assert!(seen.recovered.is_empty());
    } else {
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=MESSAGES).collect::<Vec<_>>(), "each once");
        assert_eq!(seen.recovered.len() as u64, st.recovered);
    }
    // A tenth of everything was lost: the stream, the requests and the replies.
    assert!(st.recovered > MESSAGES / 20, "{st:?}");
    assert!(
        st.retries > 0,
        "lost requests and replies were asked again: {st:?}"
    );
    assert!(!closed.recovery.is_empty());
}

#[test]
fn ten_percent_loss_everywhere_is_recovered_in_order_through_the_shards() {
    recovers_through_the_shards(true);
}

#[test]
fn ten_percent_loss_everywhere_is_recovered_as_it_comes_through_the_shards() {
    recovers_through_the_shards(false);
}
