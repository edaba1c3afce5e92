//! A/B line arbitration on the sans-IO receive state, with exact counters: one stream
//! sent on two lines, each losing, lagging or going silent as the test says, and
//! (where a server is given) the state's re-requests answered from everything sent.
//! Time is virtual (nanoseconds), so each run is the same.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use multipoint_dataplane::core::lines::{Line, LineStats, LinesConfig};
use multipoint_dataplane::core::receive::{DatagramInfo, Handler, ReceiveConfig, ReceiveState};
use multipoint_dataplane::core::recovery::RecoveryConfig;
use multipoint_dataplane::core::sequence::Gap;
use multipoint_dataplane::wire::{pack_all, ReRequest, Session};

const SESSION: Session = Session::from_bytes(*b"LINES     ");
/// One 16-byte message to a packet (20 header + 2 length + 16 = 38 bytes).
const DATAGRAM: usize = 38;
/// A packet every 10 µs on each line.
const SPACING: u64 = 10_000;
const MS: u64 = 1_000_000;

fn sender(line: Line) -> SocketAddr {
    match line {
        Line::A => "10.0.1.1:5000".parse().unwrap(),
        Line::B => "10.0.2.1:5000".parse().unwrap(),
    }
}

fn server() -> SocketAddr {
    "10.0.1.1:7000".parse().unwrap()
}

/// The message numbered `seq`.
fn message(seq: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..8].copy_from_slice(&seq.to_be_bytes());
    m[8..].copy_from_slice(&seq.wrapping_mul(0x9E37_79B9).to_le_bytes());
    m
}

/// Packets 1..=n, one message each.
fn stream(n: u64) -> Vec<Vec<u8>> {
    let msgs: Vec<[u8; 16]> = (1..=n).map(message).collect();
    pack_all(&SESSION, 1, DATAGRAM, msgs.iter().map(|m| &m[..])).unwrap()
}

#[derive(Default)]
struct Seen {
    messages: Vec<u64>,
    handed: HashSet<u64>,
    recovered: Vec<u64>,
    gaps: Vec<(u64, u64)>,
    lines: Vec<(Line, bool)>,
}

impl Seen {
    fn take(&mut self, sequence: u64, msg: &[u8]) {
        assert_eq!(msg, &message(sequence)[..], "content of {sequence}");
        assert!(
            self.handed.insert(sequence),
            "{sequence} was handed over twice"
        );
        self.messages.push(sequence);
    }
}

impl Handler for Seen {
    fn on_message(&mut self, sequence: u64, msg: &[u8]) {
        self.take(sequence, msg);
    }
    fn on_recovered(&mut self, sequence: u64, msg: &[u8]) {
        self.take(sequence, msg);
        self.recovered.push(sequence);
    }
    fn on_gap(&mut self, gap: Gap) {
        self.gaps.push((gap.first_missing, gap.count));
    }
    fn on_line(&mut self, line: Line, up: bool) {
        self.lines.push((line, up));
    }
}

/// How each line carries the stream.
#[derive(Clone, Copy)]
struct Carry {
    /// How long after line A's schedule this line's copy arrives.
    lag: u64,
    /// Packets (by index) the line loses.
    lost: fn(usize) -> bool,
    /// Packets (by index) the line is silent for (nothing at all arrives).
    silent: fn(usize) -> bool,
}

const CLEAN: Carry = Carry {
    lag: 0,
    lost: |_| false,
    silent: |_| false,
};

struct Run {
    seen: Seen,
    state: ReceiveState,
}

impl Run {
    fn line(&self, line: Line) -> LineStats {
        self.state.line_stats().unwrap()[line.index()]
    }
}

fn config(recovery: Option<RecoveryConfig>) -> ReceiveConfig {
    ReceiveConfig {
        session: Some(SESSION),
        sender: Some(sender(Line::A)),
        recovery,
        lines: Some(LinesConfig {
            sender_b: Some(sender(Line::B)),
            ..LinesConfig::default()
        }),
        ..ReceiveConfig::default()
    }
}

/// Sends `n` packets on both lines as `a` and `b` say, runs the state's timers and
/// answers its re-requests (one way 20 µs each way) until nothing is left to do.
fn run(n: u64, a: Carry, b: Carry, recovery: Option<RecoveryConfig>) -> Run {
    let packets = stream(n);
    let mut arrivals: Vec<(u64, Line, usize)> = Vec::new();
    for (line, carry) in [(Line::A, a), (Line::B, b)] {
        for i in 0..packets.len() {
            if !(carry.lost)(i) && !(carry.silent)(i) {
                arrivals.push((i as u64 * SPACING + carry.lag, line, i));
            }
        }
    }
    arrivals.sort_by_key(|&(at, line, _)| (at, line.index()));
    let mut state = ReceiveState::new(&config(recovery));
    let mut seen = Seen::default();
    let mut replies: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut now = 0;
    let mut next = arrivals.into_iter().peekable();
    let end = n * SPACING + 500 * MS;
    while now < end {
        let due_arrival = next.peek().map(|a| a.0);
        let due_reply = replies.iter().map(|r| r.0).min();
        let due_timer = state.poll_timeout();
        let Some(at) = [due_arrival, due_reply, due_timer]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        now = at.max(now);
        if due_arrival == Some(at) {
            let (_, line, i) = next.next().unwrap();
            let info = DatagramInfo {
                source: Some(sender(line)),
                ..DatagramInfo::default()
            };
            state.handle_line_datagram(line, &packets[i], info, now, &mut seen);
        } else if due_reply == Some(at) {
            let k = replies.iter().position(|r| r.0 == at).unwrap();
            let (_, reply) = replies.swap_remove(k);
            let info = DatagramInfo {
                source: Some(server()),
                ..DatagramInfo::default()
            };
            state.handle_reply(&reply, info, now, &mut seen);
        } else {
            state.handle_timeout(now, &mut seen);
        }
        let mut buf = [0u8; 64];
        while let Some((len, to)) = state.poll_transmit(now, &mut buf) {
            assert_eq!(to, server());
            let request = ReRequest::new_checked(&buf[..len]).unwrap();
            // One message to a packet: the reply is the packet of the first number asked.
            let i = (request.sequence() - 1) as usize;
            replies.push((now + 40_000, packets[i].clone()));
        }
    }
    state.finish(now, &mut seen);
    Run { seen, state }
}

fn every(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

#[test]
fn a_burst_line_a_loses_comes_from_line_b_in_order_with_no_gap() {
    // B runs 20 µs behind A; A loses packets 100..110 (numbers 101..=110).
    let b = Carry {
        lag: 20_000,
        ..CLEAN
    };
    let a = Carry {
        lost: |i| (100..110).contains(&i),
        ..CLEAN
    };
    let r = run(1000, a, b, None);
    assert_eq!(r.seen.messages, every(1000), "in order, nothing twice");
    assert!(r.seen.gaps.is_empty());
    let stats = r.state.stats();
    assert_eq!((stats.gaps, stats.missing, stats.duplicates), (0, 0, 0));
    let (la, lb) = (r.line(Line::A), r.line(Line::B));
    assert_eq!((la.packets, la.wins, la.duplicates), (990, 990, 0));
    assert_eq!((la.gaps, la.losses, la.gaps_alone), (1, 10, 1));
    assert_eq!((lb.packets, lb.wins, lb.duplicates), (1000, 10, 990));
    assert_eq!((lb.gaps, lb.losses, lb.gaps_alone), (0, 0, 0));
    assert_eq!((la.down_events, lb.down_events), (0, 0));
    // The 10 that waited for B waited at most the 20 µs B runs behind.
    assert_eq!(stats.messages, 1000);
}

#[test]
fn what_line_b_loses_line_a_has_and_b_is_counted_behind() {
    let b = Carry {
        lag: 20_000,
        lost: |i| i % 50 == 7,
        ..CLEAN
    };
    let r = run(1000, CLEAN, b, None);
    assert_eq!(r.seen.messages, every(1000));
    let (la, lb) = (r.line(Line::A), r.line(Line::B));
    assert_eq!((la.wins, la.gaps, la.gaps_alone), (1000, 0, 0));
    assert_eq!((lb.wins, lb.duplicates), (0, 980));
    assert_eq!((lb.gaps, lb.losses, lb.gaps_alone), (20, 20, 20));
    let behind = r.state.line_behind(Line::B).unwrap();
    assert_eq!(behind.len(), 980, "one sample a packet both brought");
    let p50 = behind.percentiles().p50;
    assert!((19_980..=20_020).contains(&p50), "p50 {p50} ns");
    assert_eq!(
        r.state.line_behind(Line::A).unwrap().percentiles().max,
        0,
        "A was first"
    );
}

#[test]
fn a_packet_both_lines_lose_is_one_gap_declared_after_the_wait() {
    let lost: fn(usize) -> bool = |i| i == 500;
    let a = Carry { lost, ..CLEAN };
    let b = Carry {
        lag: 20_000,
        lost,
        ..CLEAN
    };
    let r = run(1000, a, b, None);
    assert_eq!(r.seen.gaps, [(501, 1)], "one gap, heard once");
    let stats = r.state.stats();
    assert_eq!((stats.gaps, stats.missing, stats.duplicates), (1, 1, 0));
    let (la, lb) = (r.line(Line::A), r.line(Line::B));
    assert_eq!((la.gaps, la.gaps_alone), (1, 0));
    assert_eq!((lb.gaps, lb.gaps_alone), (1, 0));
    let mut expected = every(1000);
    expected.retain(|&s| s != 501);
    assert_eq!(r.seen.messages, expected);
}

#[test]
fn a_packet_both_lines_lose_is_recovered_from_the_server_as_they_come_and_in_order() {
    let lost: fn(usize) -> bool = |i| i == 500 || (700..705).contains(&i);
    for in_order in [false, true] {
        let a = Carry { lost, ..CLEAN };
        let b = Carry {
            lag: 20_000,
            lost,
            ..CLEAN
        };
        let recovery = RecoveryConfig {
            in_order,
            seed: 7,
            ..RecoveryConfig::new(server())
        };
        let r = run(1000, a, b, Some(recovery));
        let stats = r.state.stats();
        assert_eq!(stats.missing, 0, "in order {in_order}: {stats:?}");
        assert_eq!(stats.recovered, 6, "in order {in_order}");
        assert_eq!(
            stats.gaps, 2,
            "in order {in_order}: both lines lost two runs"
        );
        assert!(r.seen.gaps.is_empty());
        if in_order {
            assert_eq!(r.seen.messages, every(1000));
        } else {
            let mut got = r.seen.messages.clone();
            got.sort_unstable();
            assert_eq!(got, every(1000));
            assert_eq!(r.seen.recovered.len(), 6);
        }
        let (la, lb) = (r.line(Line::A), r.line(Line::B));
        assert_eq!(
            (la.gaps_alone, lb.gaps_alone),
            (0, 0),
            "in order {in_order}"
        );
        // Only what both lost is asked for, a packet's worth (one message) a request.
        assert_eq!(
            (stats.requests, stats.retries),
            (6, 0),
            "in order {in_order}"
        );
    }
}

#[test]
fn a_line_b_5_ms_behind_wins_nothing_and_its_lag_is_measured() {
    let b = Carry {
        lag: 5 * MS,
        ..CLEAN
    };
    let r = run(2000, CLEAN, b, None);
    assert_eq!(r.seen.messages, every(2000));
    let stats = r.state.stats();
    assert_eq!((stats.gaps, stats.duplicates), (0, 0));
    let (la, lb) = (r.line(Line::A), r.line(Line::B));
    assert_eq!((la.wins, lb.wins, lb.duplicates), (2000, 0, 2000));
    let behind = r.state.line_behind(Line::B).unwrap();
    assert_eq!(behind.len(), 2000);
    let p50 = behind.percentiles().p50;
    assert!((4_990_000..=5_010_000).contains(&p50), "p50 {p50} ns");
    assert_eq!(
        (la.down_events, lb.down_events),
        (0, 0),
        "5 ms is not silence"
    );
}

#[test]
fn line_b_silent_for_100_ms_is_reported_down_then_up_and_nothing_is_lost() {
    // 10 µs a packet: packets 3000..13000 are 100 ms.
    let b = Carry {
        lag: 20_000,
        silent: |i| (3000..13000).contains(&i),
        ..CLEAN
    };
    let r = run(20_000, CLEAN, b, None);
    assert_eq!(r.seen.messages, every(20_000));
    let lb = r.line(Line::B);
    assert_eq!((lb.down_events, lb.down), (1, 0), "down once, up again");
    assert_eq!(r.seen.lines, [(Line::B, false), (Line::B, true)]);
    assert_eq!((lb.gaps, lb.losses, lb.gaps_alone), (1, 10_000, 1));
    assert_eq!(r.line(Line::A).down_events, 0);
}

#[test]
fn line_a_silent_leaves_line_b_carrying_the_stream_without_a_gap() {
    let a = Carry {
        silent: |i| (3000..13000).contains(&i),
        ..CLEAN
    };
    let b = Carry {
        lag: 20_000,
        ..CLEAN
    };
    let r = run(20_000, a, b, None);
    assert_eq!(r.seen.messages, every(20_000));
    assert_eq!(r.state.stats().gaps, 0);
    let (la, lb) = (r.line(Line::A), r.line(Line::B));
    assert_eq!(la.down_events, 1);
    assert_eq!(lb.wins, 10_000);
    assert_eq!(r.seen.lines, [(Line::A, false), (Line::A, true)]);
}

#[test]
fn packets_on_line_b_from_anyone_but_its_sender_never_reach_the_stream() {
    let packets = stream(3);
    let mut state = ReceiveState::new(&config(None));
    let mut seen = Seen::default();
    let forger = DatagramInfo {
        source: Some("10.9.9.9:5000".parse().unwrap()),
        ..DatagramInfo::default()
    };
    let a = DatagramInfo {
        source: Some(sender(Line::A)),
        ..DatagramInfo::default()
    };
    state.handle_line_datagram(Line::A, &packets[0], a, 0, &mut seen);
    state.handle_line_datagram(Line::B, &packets[1], forger, 10, &mut seen);
    // Line A's sender on line B is not line B's sender either.
    state.handle_line_datagram(Line::B, &packets[1], a, 20, &mut seen);
    assert_eq!(seen.messages, [1]);
    assert_eq!(state.stats().foreign_source, 2);
    assert_eq!(state.line_stats().unwrap()[1].packets, 0);
}

#[test]
fn without_lines_a_datagram_said_to_come_on_line_b_is_dropped_and_counted() {
    let packets = stream(1);
    let mut state = ReceiveState::new(&ReceiveConfig {
        session: Some(SESSION),
        ..ReceiveConfig::default()
    });
    let mut seen = Seen::default();
    state.handle_line_datagram(Line::B, &packets[0], DatagramInfo::default(), 0, &mut seen);
    assert!(seen.messages.is_empty());
    assert_eq!(state.stats().foreign_source, 1);
    assert!(state.line_stats().is_none());
}

#[test]
fn the_wait_for_the_slower_line_is_a_setting_and_a_line_slower_than_it_loses_the_race() {
    // B 3 ms behind; A loses one packet; the wait is 5 ms: B fills it, no gap.
    let packets = stream(10);
    let mut state = ReceiveState::new(&ReceiveConfig {
        lines: Some(LinesConfig {
            wait: Duration::from_millis(5),
            sender_b: Some(sender(Line::B)),
            ..LinesConfig::default()
        }),
        ..config(None)
    });
    let mut seen = Seen::default();
    let from = |line| DatagramInfo {
        source: Some(sender(line)),
        ..DatagramInfo::default()
    };
    for (i, p) in packets.iter().enumerate() {
        if i != 4 {
            state.handle_line_datagram(Line::A, p, from(Line::A), i as u64 * SPACING, &mut seen);
        }
    }
    assert_eq!(seen.messages, [1, 2, 3, 4], "5 waits for line B");
    assert_eq!(state.poll_timeout(), Some(5 * SPACING + 5 * MS));
    for (i, p) in packets.iter().enumerate() {
        state.handle_line_datagram(
            Line::B,
            p,
            from(Line::B),
            i as u64 * SPACING + 3 * MS,
            &mut seen,
        );
    }
    assert_eq!(seen.messages, every(10));
    assert_eq!(state.stats().gaps, 0);
    assert_eq!(state.poll_timeout(), None);
}

fn from(source: SocketAddr) -> DatagramInfo {
    DatagramInfo {
        source: Some(source),
        ..DatagramInfo::default()
    }
}

/// Packet `n`: message `n` alone.
fn packet(n: u64) -> Vec<u8> {
    pack_all(&SESSION, n, DATAGRAM, [&message(n)[..]])
        .unwrap()
        .remove(0)
}

#[test]
fn a_suspect_packet_confirmed_by_the_other_line_is_the_win_of_the_line_it_came_on() {
    let mut state = ReceiveState::new(&ReceiveConfig {
        sequence_window: 10,
        ..config(None)
    });
    let mut seen = Seen::default();
    state.handle_line_datagram(Line::A, &packet(1), from(sender(Line::A)), 0, &mut seen);
    // 100 is too far ahead: suspect until the sender goes on from it, which line B does.
    state.handle_line_datagram(
        Line::A,
        &packet(100),
        from(sender(Line::A)),
        10_000,
        &mut seen,
    );
    state.handle_line_datagram(
        Line::B,
        &packet(101),
        from(sender(Line::B)),
        20_000,
        &mut seen,
    );
    assert_eq!(seen.messages, [1, 100, 101]);
    let [a, b] = state.line_stats().unwrap();
    assert_eq!((a.packets, a.wins, b.packets, b.wins), (2, 2, 1, 1));
}

#[test]
fn a_stream_that_locks_at_the_finish_on_line_b_counts_its_packets_as_line_bs() {
    let mut state = ReceiveState::new(&ReceiveConfig {
        lines: Some(LinesConfig::default()),
        ..ReceiveConfig::default()
    });
    let mut seen = Seen::default();
    state.handle_line_datagram(Line::B, &stream(1)[0], from(sender(Line::B)), 0, &mut seen);
    state.finish(10_000, &mut seen);
    assert_eq!(seen.messages, [1]);
    let [a, b] = state.line_stats().unwrap();
    assert_eq!((a.packets, b.packets, b.wins), (0, 1, 1));
}

#[test]
fn one_sender_on_both_lines_locks_once_and_each_line_keeps_its_own_packets() {
    let mut state = ReceiveState::new(&ReceiveConfig {
        lines: Some(LinesConfig::default()),
        ..ReceiveConfig::default()
    });
    let mut seen = Seen::default();
    let s = stream(4);
    state.handle_line_datagram(Line::A, &s[0], from(sender(Line::A)), 0, &mut seen);
    state.handle_line_datagram(Line::B, &s[1], from(sender(Line::A)), 10_000, &mut seen);
    // The third packet that follows on locks the stream onto the sender.
    state.handle_line_datagram(Line::B, &s[2], from(sender(Line::A)), 20_000, &mut seen);
    state.handle_line_datagram(Line::A, &s[3], from(sender(Line::A)), 30_000, &mut seen);
    assert_eq!(seen.messages, [1, 2, 3, 4]);
    let [a, b] = state.line_stats().unwrap();
    assert_eq!((a.packets, b.packets), (2, 2));
    assert_eq!((a.wins, b.wins), (2, 2));
}
