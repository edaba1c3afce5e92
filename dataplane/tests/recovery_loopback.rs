//! Recovery over real sockets on loopback: a publisher with a re-request server on
//! 127.0.0.1 multicasts a stream; a subscriber reads it from a real group socket but
//! deliberately ignores every 7th packet, and gets every one of them back, byte for
//! byte, by re-request over a real unicast socket. The subscriber is the sans-IO receive
//! state driven by this test, so that the packets it ignores are chosen exactly; the
//! publisher, its server and every socket are the real ones.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{free_port, group, loopback_publisher, STALL};
use multipoint_control::{Direction, Interface, MultipointSocket, Roles, Transport};
use multipoint_dataplane::core::receive::{DatagramInfo, Handler, ReceiveConfig, ReceiveState};
use multipoint_dataplane::core::sequence::Gap;
use multipoint_dataplane::latency::now_ns;
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    BackendChoice, OfferError, Publisher, PublisherConfig, RecoveryConfig, RerequestConfig,
};

const MESSAGES: u64 = 20_000;

/// Message `seq`: 8 to 200 bytes, its number first, then a pattern of it.
fn message(seq: u64) -> Vec<u8> {
    let len = 8 + (seq * 13 % 193) as usize;
    let mut m: Vec<u8> = (0..len)
        .map(|i| (seq as u8).wrapping_mul(3) ^ i as u8)
        .collect();
    m[..8].copy_from_slice(&seq.to_be_bytes());
    m
}

/// Checks an in-order stream from 1, byte for byte.
#[derive(Default)]
struct InOrder {
    next: u64,
    bad: u64,
    gaps: Vec<Gap>,
    ended: bool,
}

impl Handler for InOrder {
    fn on_message(&mut self, sequence: u64, msg: &[u8]) {
        if sequence != self.next + 1 || msg != message(sequence) {
            self.bad += 1;
        }
        self.next = sequence;
    }
    fn on_recovered(&mut self, _sequence: u64, _msg: &[u8]) {
        self.bad += 1;
    }
    fn on_gap(&mut self, gap: Gap) {
        self.gaps.push(gap);
    }
    fn on_end_of_session(&mut self) {
        self.ended = true;
    }
}

/// Publishes the stream, a few hundred messages at a time, serving re-requests between.
fn publish_some(publisher: &mut Publisher, next: &mut u64) {
    let upto = (*next + 300).min(MESSAGES + 1);
    publisher.begin_batch();
    while *next < upto {
        match publisher.offer(&message(*next)) {
            Ok(seq) => {
                assert_eq!(seq, *next);
                *next += 1;
            }
            Err(OfferError::Backpressure) => break,
            Err(e) => panic!("{e}"),
        }
    }
    publisher.end_batch();
    publisher.flush();
    publisher.poll();
    if *next > MESSAGES && !publisher.is_ended() {
        publisher.end_session();
    }
}

#[test]
fn a_subscriber_ignoring_every_seventh_packet_recovers_them_byte_for_byte() {
    let group = group(12, 7);
    let server = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // A stall of the shared machine makes the subscriber ask again sooner than the
    // server answers; the default burst (100) would then refuse some, which is not what
    // this test is about.
    let mut rerequest = RerequestConfig::new(server);
    rerequest.server.reply_burst = 100_000;
    rerequest.server.byte_burst = 1 << 30;
    let mut publisher = Publisher::new(PublisherConfig {
        rerequest: Some(rerequest),
        ..loopback_publisher(BackendChoice::Auto, "EVERY7", group)
    })
    .unwrap();
    assert_eq!(publisher.rerequest_address(), Some(server));

    let stream = MultipointSocket::new(Transport::Udp4Multicast, Roles::LEAF).unwrap();
    stream.set_interface(Interface::LOOPBACK_V4).unwrap();
    let _membership = stream
        .join_leaf(group, Direction::ReceiverOnly, None)
        .unwrap();
    let requests = UdpSocket::bind("127.0.0.1:0").unwrap();
    requests.set_nonblocking(true).unwrap();

    let mut state = ReceiveState::new(&ReceiveConfig {
        session: Some(Session::new("EVERY7").unwrap()),
        recovery: Some(RecoveryConfig {
            in_order: true,
            // Generous: the test must not depend on how fast a shared machine is.
            deadline: Duration::from_secs(5),
            ..RecoveryConfig::new(server)
        }),
        ..ReceiveConfig::default()
    });
    let mut seen = InOrder::default();
    let (mut next, mut packets, mut ignored) = (1u64, 0u64, 0u64);
    let mut buf = vec![0u8; 65_536];
    let begun = Instant::now();
    while !seen.ended {
        assert!(
            begun.elapsed() < STALL,
            "still waiting: {:?}",
            state.stats()
        );
        if next <= MESSAGES || !publisher.is_ended() {
            publish_some(&mut publisher, &mut next);
        } else {
            publisher.poll();
        }
        while let Some(d) = stream
            .recv_timeout(&mut buf, Duration::from_millis(1))
            .unwrap()
        {
            packets += 1;
            if packets % 7 == 0 {
                ignored += 1;
                continue;
            }
            let info = DatagramInfo {
                truncated: d.truncated,
                source: Some(d.source),
                ..DatagramInfo::default()
            };
            state.handle_datagram(&buf[..d.len], info, now_ns(), &mut seen);
        }
        loop {
            match requests.recv_from(&mut buf) {
                Ok((len, from)) => {
                    let info = DatagramInfo {
                        source: Some(from),
                        ..DatagramInfo::default()
                    };
                    state.handle_reply(&buf[..len], info, now_ns(), &mut seen);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        if state.poll_timeout().is_some_and(|at| at <= now_ns()) {
            state.handle_timeout(now_ns(), &mut seen);
        }
        let mut request = [0u8; 20];
        while let Some((len, to)) = state.poll_transmit(now_ns(), &mut request) {
            requests.send_to(&request[..len], to).unwrap();
        }
    }
    let st = state.stats();
    assert!(state.sender().is_some_and(|s| s.ip().is_loopback()));
    assert_eq!(seen.next, MESSAGES, "every message, in order");
    assert_eq!(seen.bad, 0, "each in its place, byte for byte");
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert_eq!(
        (st.messages, st.missing, st.gaps_given_up),
        (MESSAGES, 0, 0)
    );
    assert!(ignored > 10, "{ignored} packets ignored");
    assert!(st.recovered > 0 && st.replies > 0);
    let served = publisher.rerequest_stats().unwrap();
    assert!(served.replies >= st.replies, "{served:?}");
    assert_eq!(served.refused(), 0, "{served:?}");
}
