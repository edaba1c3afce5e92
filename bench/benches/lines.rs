//! The cost of A/B line arbitration on one shard: messages per second through one
//! subscription's sans-IO receive state (`core::receive`), with one line and with two.
//!
//! One group per message size (`lines_32B`, `lines_256B`). An iteration feeds a stream of
//! [`MESSAGES`] messages, packed into default-size (1472-byte) packets, to a fresh
//! receive state (made outside the timing) and counts the messages handed to the handler:
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
use multipoint_dataplane::wire::{pack_all, Session, DEFAULT_MAX_DATAGRAM};
use multipoint_dataplane::{Line, LinesConfig};

const SIZES: [usize; 2] = [32, 256];
/// Messages per iteration.
const MESSAGES: u64 = 100_000;
/// How many packets line B runs behind line A.
const LAG: usize = 4;

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

/// Feeds `packets` in `order` to a fresh receive state `iters` times; returns the time it
/// took (the states made outside it).
fn run(iters: u64, session: Session, feed: Feed, packets: &[Vec<u8>], expect: u64) -> Duration {
    let order = feed.order(packets.len());
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
            // A microsecond a packet: the waits for the other line are a few packets long.
            state.handle_line_datagram(line, &packets[i], info, k as u64 * 1_000, &mut count);
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
        let packets = pack_all(
            &session,
            1,
            DEFAULT_MAX_DATAGRAM,
            msgs.iter().map(|m| &m[..]),
        )
        .unwrap();
        let expect = MESSAGES * size as u64;
        let mut g = c.benchmark_group(format!("lines_{size}B"));
        g.throughput(Throughput::Elements(MESSAGES))
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .sample_size(30);
        for (name, feed) in [
            ("one_line", Feed::OneLine),
            ("two_lines", Feed::TwoLines),
            ("two_lines_5pct_loss_each", Feed::TwoLinesLossy),
        ] {
            g.bench_function(name, |b| {
                b.iter_custom(|iters| run(iters, session, feed, &packets, expect))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, lines);
criterion_main!(benches);
