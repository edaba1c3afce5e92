//! The cost of A/B line arbitration on one shard: messages per second through one
//! subscription's sans-IO receive state (`core::receive`), with one line and with two.
//!
//! One group per message size (`lines_32B`, `lines_256B`). An iteration feeds a stream of
//! about [`MESSAGES`] messages, in full default-size (1472-byte) packets, to a fresh
//! receive state (made outside the timing) and counts the messages handed to the handler.
//! As on a shard, packets arrive in a small ring of receive buffers per line (64, hot in
//! the caches): the measured loop writes each packet's sequence number into the next
//! buffer of its line's ring (the rest of the packet is the same in every one) and hands
//! it over. The runs:
//!
//! - `one_line`: every packet once, from line A's sender;
//! - `two_lines`: every packet on line A, and its copy on line B four packets later (the
//!   copy is the other line's duplicate, dropped);
//! - `two_lines_5pct_loss_each`: the same with each line losing a different 5% of its
//!   packets (the other line fills every one: nothing is missing).
//!
//! The ratio of `two_lines` to `one_line` is the cost of arbitration: each message takes
//! one packet's work on the winning line and one duplicate check on the other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use multipoint_dataplane::core::receive::{DatagramInfo, Handler, ReceiveConfig, ReceiveState};
use multipoint_dataplane::wire::{pack_all, Packet, Session, DEFAULT_MAX_DATAGRAM};
use multipoint_dataplane::{Line, LinesConfig};

const SIZES: [usize; 2] = [32, 256];
/// Messages per iteration.
const MESSAGES: u64 = 100_000;
/// How many packets line B runs behind line A.
const LAG: usize = 4;
/// Where a MoldUDP64 header keeps the sequence number.
const SEQUENCE: std::ops::Range<usize> = 10..18;

/// Counts what it is handed.
#[derive(Default)]
struct Count(u64);

impl Handler for Count {
    fn on_message(&mut self, _sequence: u64, message: &[u8]) {
        self.0 += message.len() as u64;
    }
}

fn sender(line: Line) -> SocketAddr {
    match line {
        Line::A => "10.0.1.1:5000".parse().unwrap(),
        Line::B => "10.0.2.1:5000".parse().unwrap(),
    }
}

/// How a run feeds the stream.
#[derive(Clone, Copy)]
enum Feed {
    OneLine,
    TwoLines,
    TwoLinesLossy,
}

impl Feed {
    fn lines(self) -> bool {
        !matches!(self, Feed::OneLine)
    }

    /// The packets of a stream of `n` in the order they arrive: (line, index).
    fn order(self, n: usize) -> Vec<(Line, usize)> {
        let lost_a = |i: usize| matches!(self, Feed::TwoLinesLossy) && i % 20 == 3;
        let lost_b = |i: usize| matches!(self, Feed::TwoLinesLossy) && i % 20 == 13;
        let mut order = Vec::with_capacity(2 * n);
        for i in 0..n + LAG {
            if i < n && !lost_a(i) {
                order.push((Line::A, i));
            }
            if self.lines() && i >= LAG && !lost_b(i - LAG) {
                order.push((Line::B, i - LAG));
            }
        }
        order
    }
}

fn config(session: Session, feed: Feed) -> ReceiveConfig {
    ReceiveConfig {
        session: Some(session),
        sender: Some(sender(Line::A)),
        lines: feed.lines().then(|| LinesConfig {
            sender_b: Some(sender(Line::B)),
            ..LinesConfig::default()
        }),
        ..ReceiveConfig::default()
    }
}

/// Receive buffers per line.
const RING: usize = 64;

/// Feeds a stream of `packets` packets like `template` (of `per_packet` messages) in the
/// order `feed` says to a fresh receive state `iters` times; returns the time it took
/// (the states made outside it).
fn run(
    iters: u64,
    session: Session,
    feed: Feed,
    (template, per_packet, packets): (&[u8], u64, usize),
    expect: u64,
) -> Duration {
    let order = feed.order(packets);
    let mut rings = [vec![template.to_vec(); RING], vec![template.to_vec(); RING]];
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut state = ReceiveState::new(&config(session, feed));
        let mut count = Count::default();
        let info = |line| DatagramInfo {
            source: Some(sender(line)),
            ..DatagramInfo::default()
        };
        let (a, b) = (info(Line::A), info(Line::B));
        let start = Instant::now();
        for (k, &(line, i)) in order.iter().enumerate() {
            let info = if line == Line::A { a } else { b };
            let buffer = &mut rings[line.index()][i % RING];
            let sequence = 1 + i as u64 * per_packet;
            buffer[SEQUENCE].copy_from_slice(&sequence.to_be_bytes());
            // A microsecond a packet: the waits for the other line are a few packets long.
            state.handle_line_datagram(line, buffer, info, k as u64 * 1_000, &mut count);
        }
        total += start.elapsed();
        assert_eq!(count.0, expect, "every message, once");
        assert_eq!(state.stats().missing, 0);
    }
    total
}

fn lines(c: &mut Criterion) {
    let session = Session::new("BENCH").unwrap();
    for size in SIZES {
        let msgs: Vec<Vec<u8>> = (0..MESSAGES).map(|i| vec![i as u8; size]).collect();
        let packed = pack_all(
            &session,
            1,
            DEFAULT_MAX_DATAGRAM,
            msgs.iter().map(|m| &m[..]),
        )
        .unwrap();
        // Full packets only: every buffer of a ring holds the same number of messages.
        let template = packed[0].clone();
        let per_packet = u64::from(Packet::new_checked(&template[..]).unwrap().count());
        let packets = (MESSAGES / per_packet) as usize;
        let messages = packets as u64 * per_packet;
        let expect = messages * size as u64;
        let stream = (&template[..], per_packet, packets);
        let mut g = c.benchmark_group(format!("lines_{size}B"));
        g.throughput(Throughput::Elements(messages))
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .sample_size(30);
        for (name, feed) in [
            ("one_line", Feed::OneLine),
            ("two_lines", Feed::TwoLines),
            ("two_lines_5pct_loss_each", Feed::TwoLinesLossy),
        ] {
            g.bench_function(name, |b| {
                b.iter_custom(|iters| run(iters, session, feed, stream, expect))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, lines);
criterion_main!(benches);
