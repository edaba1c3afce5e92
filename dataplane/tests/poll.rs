//! Receiving on the application's own thread: a subscription delivers into a poll ring
//! that the shard writes, and a reader on another thread polls it. On loopback a
//! million-message stream arrives whole and in order; a reader that does not keep up is
//! told exactly what the ring dropped and where, and the shard never waited for it; a
//! closure handler sees gaps and the end of session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{group, loopback_subscription, publish_step, start_or_skip, Net, Paced, Stream};
use multipoint_dataplane::io::sim::{Impairments, SimNet};
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    on_event, BackendChoice, Event, Network, PollConfig, Publisher, PublisherConfig, ShardConfig,
    Shards, SubscriptionConfig,
};

const MESSAGES: u64 = 1_000_000;

/// What a reader saw.
#[derive(Debug, Default)]
struct Read {
    sequences: Vec<u64>,
    bad: u64,
    /// Losses told, by the sequence number of the message before them (0: none yet).
    lost_after: HashMap<u64, u64>,
    lost: u64,
    ends: u32,
}

impl Read {
    fn take(&mut self, stream: Option<&Stream>, event: Event<'_>) {
        match event {
            Event::Message { sequence, message } => {
                if stream.is_some_and(|s| !s.matches(sequence, message)) {
                    self.bad += 1;
                }
                self.sequences.push(sequence);
            }
            Event::Lost { count } => {
                let before = self.sequences.last().copied().unwrap_or(0);
                *self.lost_after.entry(before).or_insert(0) += count;
                self.lost += count;
            }
            Event::EndOfSession => self.ends += 1,
            _ => {}
        }
    }
}

#[test]
fn a_poll_reader_on_another_thread_gets_every_message_of_a_million_message_stream_in_order() {
    let test = "poll reader, loopback";
    let net = Net::Host(BackendChoice::Auto);
    let Some(mut shards) = start_or_skip(test, net.shards(ShardConfig::default())) else {
        return;
    };
    let group = group(121, 1);
    let stream = Stream::new();
    // Room for the whole stream: however long the reader's thread is kept off the CPU,
    // the ring never drops, so every message the shard received must be read.
    let ring = PollConfig::new(1 << 27);
    let config = SubscriptionConfig {
        recv_buffer: 16 << 20,
        ..loopback_subscription(group)
    };
    let mut sub = shards.subscribe_poll(config, ring).unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let reader = {
        let read = Arc::clone(&read);
        let stream = stream.clone();
        std::thread::spawn(move || {
            let mut seen = Read::default();
            let begun = Instant::now();
            while seen.ends == 0 {
                assert!(
                    begun.elapsed() < Duration::from_secs(120),
                    "stuck: {:?}",
                    sub
                );
                sub.poll_wait(
                    |event| seen.take(Some(&stream), event),
                    4096,
                    Duration::from_millis(100),
                );
                read.store(seen.sequences.len() as u64, Ordering::Relaxed);
            }
            (seen, sub)
        })
    };
    let mut publisher =
        Publisher::new(net.publisher(Session::new("POLLED").unwrap(), group)).unwrap();
    // Paced by what the reader read, so that the kernel never drops either.
    let mut paced = Paced::new(&stream, 3_000, || read.load(Ordering::Relaxed));
    paced.publish_all(
        &mut publisher,
        1..=MESSAGES,
        "the reader to read every message",
    );
    let published = publisher.close();
    let (seen, sub) = reader.join().unwrap();
    assert_eq!(seen.bad, 0);
    assert_eq!(seen.sequences.len() as u64, MESSAGES);
    assert!(seen.sequences.iter().copied().eq(1..=MESSAGES), "in order");
    assert_eq!((seen.lost, seen.ends), (0, 1));
    let (closed, _rest) = sub.close().unwrap();
    assert_eq!(closed.stats.messages, MESSAGES, "{:?}", closed.stats);
    assert_eq!(closed.handler.dropped, 0);
    assert_eq!(
        closed.handler.written,
        MESSAGES + 1,
        "the messages and the end"
    );
    assert_eq!(published.messages, MESSAGES);
    shards.shutdown();
}

/// A simulated network that delivers everything, shards on it and a publisher.
fn sim(name: &str, seed: u64) -> (SimNet, Shards, Publisher, std::net::SocketAddr) {
    let net = SimNet::new(seed);
    let group = "239.9.9.21:9000".parse().unwrap();
    let shards = Shards::start(ShardConfig {
        pin: false,
        network: Network::Sim(net.clone()),
        ..ShardConfig::default()
    })
    .unwrap();
    let publisher = Publisher::new(PublisherConfig {
        network: Network::Sim(net.clone()),
        heartbeat: Duration::from_millis(20),
        ..PublisherConfig::new(Session::new(name).unwrap(), group)
    })
    .unwrap();
    (net, shards, publisher, group)
}

/// Offers messages `1..=count` (each its sequence number, big-endian, in 24 bytes) in
/// batches, then ends the session; waits for the subscription's end of session.
fn publish(publisher: &mut Publisher, count: u64, ended: impl Fn() -> bool) {
    let mut next = 1;
    let begun = Instant::now();
    while !ended() {
        assert!(begun.elapsed() < Duration::from_secs(60), "stuck at {next}");
        publish_step(publisher, &mut next, count, 500, |seq| {
            let mut m = [0u8; 24];
            m[..8].copy_from_slice(&seq.to_be_bytes());
            m
        });
        publisher.poll();
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_reader_that_does_not_keep_up_is_told_exactly_what_it_lost_and_the_shard_never_waits() {
    let (_net, mut shards, mut publisher, group) = sim("SLOWPOLL", 31);
    let count = 60_000;
    let mut sub = shards
        .subscribe_poll(
            SubscriptionConfig::new(group),
            PollConfig::new(PollConfig::MIN_CAPACITY),
        )
        .unwrap();
    // Nobody reads while the whole stream is published: the shard goes on receiving (it
    // sees the end of session) with a ring that holds a tenth of it.
    let stats = |s: &multipoint_dataplane::PollSubscription| s.stats().end_of_session > 0;
    publish(&mut publisher, count, || stats(&sub));
    let received = sub.stats();
    assert_eq!(
        (received.messages, received.missing),
        (count, 0),
        "{received:?}"
    );
    let ring = sub.ring_stats();
    assert!(ring.dropped > count / 2, "{ring:?}");
    // Now read everything there is. The end of session did not fit: it waits in its
    // place and goes once the reader made room (the shard's next turn).
    let mut seen = Read::default();
    let begun = Instant::now();
    while seen.ends == 0 {
        assert!(
            begun.elapsed() < Duration::from_secs(30),
            "no end: {seen:?}"
        );
        sub.poll_wait(|e| seen.take(None, e), 1000, Duration::from_millis(100));
    }
    assert_eq!(
        sub.poll(|e| seen.take(None, e), 1000),
        0,
        "nothing after the end"
    );
    assert_eq!(seen.lost, ring.dropped, "every drop is told: {seen:?}");
    assert_eq!(seen.sequences.len() as u64 + seen.lost, count);
    assert_eq!(seen.ends, 1, "the end of session is told once");
    // Each loss sits where it happened: what follows it continues past exactly the
    // messages dropped.
    let mut previous = 0;
    for &sequence in &seen.sequences {
        let between = seen.lost_after.remove(&previous).unwrap_or(0);
        assert_eq!(sequence, previous + 1 + between, "after {previous}");
        previous = sequence;
    }
    assert_eq!(
        previous + seen.lost_after.remove(&previous).unwrap_or(0),
        count
    );
    assert!(seen.lost_after.is_empty());
    let (closed, mut rest) = sub.close().unwrap();
    assert_eq!(closed.handler.dropped, seen.lost);
    assert_eq!(rest.poll(|_| {}, 10), 0);
    assert!(rest.is_closed());
    shards.shutdown();
}

#[test]
fn a_closure_handler_sees_messages_gaps_and_the_end_of_session() {
    let (net, mut shards, mut publisher, group) = sim("EVENTS", 32);
    net.impair(Impairments {
        loss: 0.05,
        ..Impairments::none()
    });
    #[derive(Default, Debug)]
    struct Heard {
        messages: u64,
        missing: u64,
        ends: u32,
    }
    let heard = Arc::new(Mutex::new(Heard::default()));
    let log = Arc::clone(&heard);
    let sub = shards
        .subscribe(
            SubscriptionConfig::new(group),
            on_event(move |event: Event<'_>| {
                let mut h = log.lock().unwrap();
                match event {
                    Event::Message { .. } => h.messages += 1,
                    Event::Gap(gap) => h.missing += gap.count,
                    Event::EndOfSession => h.ends += 1,
                    _ => {}
                }
            }),
        )
        .unwrap();
    publish(&mut publisher, 20_000, || heard.lock().unwrap().ends > 0);
    let closed = sub.close().unwrap();
    let heard = heard.lock().unwrap();
    let st = closed.stats;
    assert!(st.missing > 0, "the network lost some: {st:?}");
    assert_eq!(
        (heard.messages, heard.missing),
        (st.messages, st.missing),
        "{heard:?} {st:?}"
    );
    assert_eq!(heard.ends, 1);
    shards.shutdown();
}
