//! The async side, on a tokio runtime of one thread: shards started, a subscription made
//! and closed, and a rooted leaf joined without blocking it; a subscription's events as a
//! `Stream` deliver a whole loopback stream in order, and `recv` reads them in place.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::poll_fn;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_core::Stream;
use multipoint::{
    DataLeaf, DataLeafConfig, Direction, Event, Interface, OfferError, OwnedEvent, PollConfig,
    PollSubscription, Publisher, PublisherConfig, Session, ShardConfig, Shards, SubscriptionConfig,
    Transport, UnicastRoot, UnicastRootConfig,
};

const MESSAGES: u64 = 200_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// A group on a port nobody uses now.
fn group(last: u8) -> SocketAddr {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    SocketAddr::from(([239, 255, 122, last], port))
}

fn message(sequence: u64) -> Vec<u8> {
    let mut m = sequence.to_le_bytes().to_vec();
    m.resize(8 + (sequence % 40) as usize, (sequence % 253) as u8);
    m
}

/// Publishes messages `1..=MESSAGES` to `group` from a thread of its own, never more
/// than a few thousand ahead of `read`, then closes (ending the session).
fn publish(group: SocketAddr, read: Arc<AtomicU64>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut publisher = Publisher::new(PublisherConfig {
            interface: Interface::LOOPBACK_V4,
            scope: 0,
            ..PublisherConfig::new(Session::new("ASYNC").unwrap(), group)
        })
        .unwrap();
        let begun = Instant::now();
        for sequence in 1..=MESSAGES {
            loop {
                match publisher.offer(&message(sequence)) {
                    Ok(s) => break assert_eq!(s, sequence),
                    Err(OfferError::Backpressure) => publisher.poll(),
                    Err(e) => panic!("{e}"),
                }
            }
            while sequence > read.load(Ordering::Relaxed) + 3_000 {
                assert!(
                    begun.elapsed() < Duration::from_secs(120),
                    "the reader stalled"
                );
                publisher.flush();
                publisher.poll();
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        publisher.close().messages
    })
}

async fn next(sub: &mut PollSubscription) -> Option<OwnedEvent> {
    poll_fn(|cx| Pin::new(&mut *sub).poll_next(cx)).await
}

#[test]
fn a_subscription_as_a_tokio_stream_delivers_the_whole_stream_in_order() {
    runtime().block_on(async {
        let mut shards = Shards::start_async(ShardConfig::default()).await.unwrap();
        let group = group(1);
        let config = SubscriptionConfig {
            interface: Interface::LOOPBACK_V4,
            recv_buffer: 16 << 20,
            ..SubscriptionConfig::new(group)
        };
        let mut sub = shards
            .subscribe_poll_async(config, PollConfig::new(1 << 25))
            .await
            .unwrap();
        let read = Arc::new(AtomicU64::new(0));
        let publisher = publish(group, Arc::clone(&read));
        let mut expected = 1;
        let reading = async {
            while let Some(event) = next(&mut sub).await {
                match event {
                    OwnedEvent::Message {
                        sequence,
                        message: m,
                    } => {
                        assert_eq!(sequence, expected, "in order");
                        assert_eq!(m, message(sequence));
                        expected += 1;
                        read.store(sequence, Ordering::Relaxed);
                    }
                    OwnedEvent::EndOfSession => return,
                    other => panic!("unexpected {other:?}"),
                }
            }
            panic!("the stream ended before the end of session");
        };
        tokio::time::timeout(Duration::from_secs(120), reading)
            .await
            .expect("the whole stream within two minutes");
        assert_eq!(expected, MESSAGES + 1);
        assert_eq!(publisher.join().unwrap(), MESSAGES);
        assert_eq!(sub.stats().messages, MESSAGES);
        assert_eq!(sub.ring_stats().dropped, 0);
        let (closed, mut rest) = sub.close_async().await.unwrap();
        assert_eq!(closed.stats.gaps, 0);
        // The writer went with the subscription: the stream ends.
        assert!(poll_fn(|cx| Pin::new(&mut rest).poll_next(cx))
            .await
            .is_none());
        shards.shutdown_async().await;
    });
}

#[test]
fn recv_reads_events_in_place_and_a_rooted_leaf_joins_asynchronously() {
    let mut root =
        UnicastRoot::start(UnicastRootConfig::new(Session::new("AROOT").unwrap())).unwrap();
    let at = root.control_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    runtime().block_on(async {
        let mut shards = Shards::start_async(ShardConfig::default()).await.unwrap();
        let leaf =
            DataLeaf::new(DataLeafConfig::new(Transport::RootedUnicast, "async-leaf")).unwrap();
        let (writer, mut reader) = multipoint::poll_ring(PollConfig::default()).unwrap();
        let joined = leaf
            .join_async(&mut shards, at, Direction::ReceiverOnly, writer)
            .await
            .unwrap();
        // The root publishes from a thread of its own once the leaf is in.
        let feeder = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                for i in 0..10_000u32 {
                    while root.offer(&i.to_be_bytes()).is_err() {
                        root.poll();
                    }
                }
                root.flush();
                while !done.load(Ordering::Acquire) {
                    root.poll();
                    std::thread::sleep(Duration::from_millis(1));
                }
                root.close()
            })
        };
        let mut next = 0u32;
        let reading = async {
            while next < 10_000 {
                reader
                    .recv(
                        |event| {
                            if let Event::Message { message, .. } = event {
                                assert_eq!(message, next.to_be_bytes());
                                next += 1;
                            }
                        },
                        512,
                    )
                    .await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), reading)
            .await
            .expect("every message within a minute");
        done.store(true, Ordering::Release);
        let stats = feeder.join().unwrap();
        assert_eq!(stats.messages, 10_000);
        let closed = joined.leave_async().await.unwrap().unwrap();
        assert_eq!(closed.stats.messages, 10_000);
        shards.shutdown_async().await;
    });
}
