//! The publisher's async twins on a tokio runtime (feature `tokio`): `offer_async` awaits
//! room through four buffers and every message arrives; `close_async` ends the session
//! and returns the counters. On the simulated network (sends that stay in flight, so that
//! the task does wait) and on loopback.

#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{loopback_publisher, loopback_subscription, shards_on, start_or_skip, BACKENDS};
use multipoint_dataplane::io::sim::SimNet;
use multipoint_dataplane::wire::{Packet, PacketKind, Session};
use multipoint_dataplane::{Network, Publisher, PublisherConfig};

const MESSAGES: u64 = 100_000;

fn message(seq: u64) -> [u8; 32] {
    let mut msg = [seq as u8; 32];
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    msg
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn offer_async_through_four_buffers_delivers_every_message_and_close_async_returns_the_stats() {
    let net = SimNet::new(41);
    let group: SocketAddr = "239.255.4.1:7401".parse().unwrap();
    let member = net.bind("0.0.0.0:7401".parse().unwrap()).unwrap();
    member.join(group.ip(), None).unwrap();
    // Sends stay in flight for a millisecond: four buffers run out, and the task waits.
    net.defer_sends_to(group, Duration::from_millis(1));
    let publisher = Publisher::new(PublisherConfig {
        network: Network::Sim(net.clone()),
        buffers: 4,
        ..PublisherConfig::new(Session::new("ASYNC").unwrap(), group)
    })
    .unwrap();
    let stats = runtime().block_on(async move {
        let mut publisher = publisher;
        for seq in 1..=MESSAGES {
            assert_eq!(publisher.offer_async(&message(seq)).await, Ok(seq));
        }
        publisher.close_async().await
    });
    assert_eq!(stats.messages, MESSAGES, "{stats:?}");
    assert!(stats.backpressure > 0, "the task had to wait: {stats:?}");
    let mut buf = vec![0u8; 65_536];
    let (mut next, mut ended) = (1u64, false);
    while let Some(d) = member.recv(Instant::now(), &mut buf) {
        let packet = Packet::new_checked(&buf[..d.len]).unwrap();
        match packet.kind() {
            PacketKind::Data => {
                assert_eq!(packet.sequence(), next, "in order, none lost");
                for (seq, msg) in (next..).zip(packet.messages()) {
                    assert_eq!(msg, message(seq));
                    next = seq + 1;
                }
            }
            PacketKind::EndOfSession => ended = true,
            _ => {}
        }
    }
    assert_eq!(next, MESSAGES + 1, "every message arrived");
    assert!(ended, "close_async sent the end of session");
}

#[test]
fn offer_async_on_loopback_delivers_every_message() {
    for (i, backend) in BACKENDS.into_iter().enumerate() {
        let test = format!("offer_async on loopback, {backend:?}");
        let Some(mut shards) = start_or_skip(&test, shards_on(backend)) else {
            continue;
        };
        let group = common::group(131, 1 + i as u8);
        let sub = shards
            .subscribe(loopback_subscription(group), |_: u64, _: &[u8]| {})
            .unwrap();
        let publisher = Publisher::new(PublisherConfig {
            buffers: 4,
            ..loopback_publisher(backend, "ASYNC", group)
        })
        .unwrap();
        let stats = runtime().block_on(async {
            let mut publisher = publisher;
            for seq in 1..=MESSAGES {
                assert_eq!(publisher.offer_async(&message(seq)).await, Ok(seq));
                // Never far ahead of the subscriber, so that its socket never overflows.
                if seq % 4_096 == 0 {
                    publisher.flush();
                    let deadline = Instant::now() + common::STALL;
                    while sub.stats().messages + 8_192 < seq {
                        assert!(Instant::now() < deadline, "{test}: the subscriber stalled");
                        publisher.poll();
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            publisher.close_async().await
        });
        common::wait_until("every message", common::STALL, || {
            sub.stats().messages == MESSAGES
        });
        assert_eq!(stats.messages, MESSAGES, "{test}: {stats:?}");
        assert_eq!(stats.send_errors, 0, "{test}: {stats:?}");
        assert_eq!(sub.stats().gaps, 0, "{test}");
    }
}
