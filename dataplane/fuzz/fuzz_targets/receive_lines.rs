//! Drives a `ReceiveState` that arbitrates between two lines, A and B
//! (`ReceiveConfig::lines`), with datagrams on either line from the lines' senders and
//! from forgers, replies of a re-request server and of a stranger, and timeouts, all cut
//! from the input; then checks the stream and each line's book.
//!
//! The input is a small configuration followed by up to 256 operations, read front to
//! back (bytes missing at the end read as zero, so every input is a valid script):
//!
//! ```text
//! config: u8   bit 0 the session is named; bits 1-2 line A's sender, bits 3-4 line B's:
//!              0 not named, 1 or 3 named with its port, 2 named by address (port 0);
//!              bit 5 recovery (2 bytes follow, after the wait and silence), bit 6 in
//!              order; bit 7 only synthesized packets (raw bytes become synthesized ones)
//! shape:  u8   bits 0-1 aligned: 0 off, else every data packet carries K = n messages
//!              from 1 + j·K, and heartbeats and ends point at such a boundary;
//!              bit 2 a small sequence window (u8 follows: 1 + n)
//! wait:   u16  LinesConfig::wait, × 16 ns (0 to about 1 ms)
//! silence:u16  LinesConfig::silence, × 16 ns (at least 1 ns)
//! [recovery: u8 deadline, (1 + n) × 4 µs; u8 bits 0-3 delay × 16 µs, bits 4-5 1 + n
//!            requests in flight, bits 6-7 room for 1, 2, 8 or 64 gaps]
//! op:     u8   bits 0-2 what: 0 raw datagram on line A, 1 synthesized packet on line A,
//!              2 raw on B, 3 synthesized on B, 4 a reply from the server, 5 a reply
//!              from a stranger, 6 time passes (u16 × 16 ns follows) and the timers run,
//!              7 the clock jumps to poll_timeout() (if that is later) and they run;
//!              bits 3-4 for a line datagram, its source: 0 the line's sender, 1 its
//!              address on another port, 2 a stranger (on line B: line A's sender),
//!              3 unknown; for a reply, bit 3 raw bytes;
//!              bits 5-7 the clock moves ahead first (× 128 ns)
//! ```
//!
//! Raw bytes are a u8 length and that many bytes. A synthesized packet is a kind byte
//! (bits 0-2: 0 heartbeat, 7 end of session, else data of that many messages; bit 3 the
//! other session; bits 6-7 where it starts: 0 a u16 follows, 1 a u64 follows, 2 where this
//! line's last synthesized packet ended, 3 that minus a u8 that follows). For a reply,
//! start 2 answers the oldest request polled and not yet answered (its count capped by
//! the request's). Message `n` of a synthesized packet is `n` as u64 big-endian, a byte
//! that is 1 when its source is not one the line's configuration trusts (a forger's
//! packet, the stranger's reply), else 0, and the session's index.
//!
//! After every operation `poll_transmit` is drained; the clock only moves forward.
//!
//! Invariants checked, after every operation, after `finish` and in the handler:
//!
//! - nothing panics (debug assertions and overflow checks on);
//! - no sequence number is handed to the handler twice (`on_message` or
//!   `on_recovered`), none is handed over after it was declared lost nor declared lost
//!   after it was handed over, and none is declared lost twice; with only synthesized
//!   packets, every message handed over carries its own number, is of one session (the
//!   named one, if named) and never a forger's or a stranger's;
//! - without recovery, or in order: messages and gaps are strictly increasing and
//!   contiguous, and end at `next_expected()`; as they come, live messages are strictly
//!   increasing; `on_recovered` only as they come; nothing after the end of session,
//!   heard at most once (exactly when `ended` says so);
//! - the stream's counters agree with what was fed and seen: datagrams, packets plus
//!   malformed (a malformed copy of what was taken counts as a packet), messages, missing, gaps (without recovery), recovered (as they come),
//!   replies from a stranger; every counter only grows;
//! - per line (`line_stats()`): wins + duplicates <= packets; packets <= the datagrams
//!   with a whole header fed on that line (so line B's are 0 when nothing came on B; a
//!   copy of what the stream has taken is counted on its header alone);
//!   gaps_alone <= gaps <= losses; down is 0 or 1 and agrees with what `on_line` said,
//!   down_events is the number of times `on_line` said down, which alternates with up;
//!   every counter but down only grows;
//! - the stream's `duplicates` stays 0 with aligned, synthesized packets and no recovery.
//!   (With two lines and no recovery a whole copy of a packet the stream already has,
//!   from either line, repeated or not, is counted as its line's duplicate, never the
//!   stream's; only the old leading messages of a packet that partly overlaps what was
//!   delivered count there, which cannot happen when every packet is cut at the same
//!   boundaries, as a publisher's two lines are. Unaligned packets of the lines' own
//!   senders can overlap, so the stronger "0 whenever no packet is fed twice" is false.)
//! - every request polled is 20 bytes for the server, of the stream's session, for at
//!   least one message from 1;
//! - `poll_timeout()` is never more than max(wait, recovery deadline) ahead of now;
//!   after the timers ran at `now` (and the requests due were polled) it is later than
//!   `now`, so a driver never spins; after `finish` it is `None` and nothing is polled.

#![no_main]

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use multipoint_dataplane::core::lines::{Line, LineStats, LinesConfig};
use multipoint_dataplane::core::receive::{DatagramInfo, ReceiveConfig, ReceiveState};
use multipoint_dataplane::core::recovery::RecoveryConfig;
use multipoint_dataplane::core::sequence::Gap;
use multipoint_dataplane::stats::SubscriptionStats;
use multipoint_dataplane::wire::{
    write_end_of_session, write_heartbeat, Packet, PacketBuilder, ReRequest, Session,
};

use multipoint_test_support::input::Input;

#[path = "../common/record.rs"]
mod record;
use record::{Record, Recorder};

/// The stream's session, and another one.
const SESSIONS: [Session; 2] = [
    Session::from_bytes(*b"LINES     "),
    Session::from_bytes(*b"OTHER     "),
];

/// Most operations taken from one input.
const MAX_OPS: usize = 256;

/// Most requests remembered for replies to answer.
const REQUESTS: usize = 64;

fn at(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([a, b, c, d], port))
}

/// Line A's sender.
fn sender_a() -> SocketAddr {
    at(10, 0, 1, 1, 5000)
}
/// Line B's sender.
fn sender_b() -> SocketAddr {
    at(10, 0, 2, 1, 5000)
}
/// The re-request server.
fn server() -> SocketAddr {
    at(10, 0, 1, 1, 7000)
}
/// Someone else, replying.
fn stranger() -> SocketAddr {
    at(10, 6, 6, 6, 7000)
}

/// Source `i` of a datagram on `line`: its sender, its address on another port, a
/// stranger (on line B, line A's sender), or unknown.
fn source(line: Line, i: u8) -> Option<SocketAddr> {
    let own = match line {
        Line::A => sender_a(),
        Line::B => sender_b(),
    };
    match i & 3 {
        0 => Some(own),
        1 => Some(SocketAddr::new(own.ip(), own.port() + 1)),
        2 => Some(match line {
            Line::A => at(10, 6, 6, 6, 5000),
            Line::B => sender_a(),
        }),
        _ => None,
    }
}

/// How a line's sender is named: 0 not, 1 or 3 with its port, 2 by address.
fn named(line: Line, bits: u8) -> Option<SocketAddr> {
    let own = match line {
        Line::A => sender_a(),
        Line::B => sender_b(),
    };
    match bits & 3 {
        0 => None,
        2 => Some(SocketAddr::new(own.ip(), 0)),
        _ => Some(own),
    }
}

/// Whether a datagram from `source` is one the line named `want` trusts.
fn trusted(want: Option<SocketAddr>, source: Option<SocketAddr>) -> bool {
    want.is_none_or(|w| {
        source.is_some_and(|s| s.ip() == w.ip() && (w.port() == 0 || s.port() == w.port()))
    })
}

/// Where a synthesized packet starts, and what it is.
struct Shape {
    /// Aligned packets of this many messages (0: not aligned).
    aligned: u64,
}

impl Shape {
    /// The boundary at or before `sequence` (0 stays 0: malformed).
    fn align(&self, sequence: u64) -> u64 {
        if self.aligned == 0 || sequence == 0 {
            sequence
        } else {
            1 + (sequence - 1) / self.aligned * self.aligned
        }
    }
}

/// Writes into `out` the packet the kind byte read from `input` says (see the module
/// docs), starting from `cursor` (this line's, or the request answered), with its
/// messages tagged `forged`; returns the number one past it (or where a heartbeat or end
/// points).
fn synthesize(
    input: &mut Input<'_>,
    shape: &Shape,
    cursor: (u64, Option<u16>),
    forged: bool,
    out: &mut Vec<u8>,
) -> u64 {
    out.clear();
    let kind = input.u8();
    let session_index = (kind >> 3) & 1;
    let session = SESSIONS[usize::from(session_index)];
    let start = match kind >> 6 {
        0 => u64::from(input.u16()),
        1 => input.u64(),
        2 => cursor.0,
        _ => cursor.0.saturating_sub(u64::from(input.u8())),
    };
    let start = shape.align(start);
    let mut count = match kind & 7 {
        0 => 0,
        7 => 0xFFFF,
        n => u16::from(n),
    };
    if count != 0 && count != 0xFFFF {
        if shape.aligned > 0 {
            count = shape.aligned as u16;
        }
        if let Some(cap) = cursor.1 {
            count = count.min(cap.max(1));
        }
    }
    let mut buf = [0u8; 20 + 8 * (2 + 10)];
    let len = match count {
        0 => write_heartbeat(&mut buf, &session, start).unwrap_or(0),
        0xFFFF => write_end_of_session(&mut buf, &session, start).unwrap_or(0),
        n => {
            let Ok(mut builder) = PacketBuilder::start(&mut buf, &session, start) else {
                return start;
            };
            for i in 0..u64::from(n) {
                let mut message = [0u8; 10];
                message[..8].copy_from_slice(&start.wrapping_add(i).to_be_bytes());
                message[8] = u8::from(forged);
                message[9] = session_index;
                // Only a sequence that runs out stops it: then the packet is shorter.
                if builder.push(&mut buf, &message).is_err() {
                    break;
                }
            }
            builder.finish(&mut buf)
        }
    };
    out.extend_from_slice(&buf[..len]);
    match Packet::new_checked(&out[..]) {
        Ok(p) if p.count() != 0 && p.count() != 0xFFFF => {
            p.sequence().saturating_add(u64::from(p.count()))
        }
        _ => start,
    }
}

/// Whether `bytes` is a packet the state counts (`packets`): well-formed, sequence not 0.
fn well_formed(bytes: &[u8]) -> bool {
    Packet::new_checked(bytes).is_ok_and(|p| p.sequence() != 0)
}

/// The handler, and what it must have seen.
struct Seen {
    /// Messages and gaps must be contiguous (no recovery, or in order).
    contiguous: bool,
    /// Recovery delivers as messages come.
    as_they_come: bool,
    synthesized_only: bool,
    /// The named session's index, if one is named.
    session: Option<u8>,
    /// Where the next message or gap starts (contiguous).
    next: Option<u64>,
    /// The last live message (as they come).
    last_live: Option<u64>,
    handed: HashSet<u64>,
    /// Ranges declared lost, `first..end`.
    lost: Vec<(u64, u64)>,
    delivered_session: Option<u8>,
    messages: u64,
    recovered: u64,
    gaps: u64,
    missing: u64,
    ended: bool,
    /// Whether each line is down, as `on_line` said, and how many times it went down.
    down: [bool; 2],
    downs: [u64; 2],
}

impl Seen {
    fn covers(&mut self, first: u64, end: u64, what: &str) {
        assert!(first < end, "{what} {first}..{end} is empty");
        if let Some(next) = self.next {
            assert_eq!(first, next, "{what} does not start where the stream stood");
        }
        self.next = Some(end);
    }
}

impl Record for Seen {
    fn take(&mut self, sequence: u64, message: &[u8], recovered: bool) {
        assert!(
            !self.ended,
            "{sequence} handed over after the end of session"
        );
        assert!(self.handed.insert(sequence), "{sequence} handed over twice");
        assert!(
            !self.lost.iter().any(|&(a, b)| (a..b).contains(&sequence)),
            "{sequence} handed over after it was declared lost"
        );
        if self.synthesized_only {
            assert_eq!(
                message.len(),
                10,
                "not a synthesized message: {message:02x?}"
            );
            assert_eq!(
                message[..8],
                sequence.to_be_bytes(),
                "handed over under another number"
            );
            assert_eq!(
                message[8], 0,
                "{sequence}: a forger's message was handed over"
            );
            let index = *self.delivered_session.get_or_insert(message[9]);
            assert_eq!(message[9], index, "messages of two sessions handed over");
            if let Some(named) = self.session {
                assert_eq!(
                    index, named,
                    "a message of another session than the named one"
                );
            }
        }
        if recovered {
            assert!(
                self.as_they_come,
                "on_recovered, but recovery is not as they come"
            );
            self.recovered += 1;
        } else if self.contiguous {
            self.covers(sequence, sequence + 1, "message");
        } else {
            assert!(
                self.last_live.is_none_or(|l| sequence > l),
                "live message {sequence} after {:?}",
                self.last_live
            );
            self.last_live = Some(sequence);
        }
        self.messages += 1;
    }

    fn gap(&mut self, gap: Gap) {
        assert!(!self.ended, "a gap after the end of session");
        assert!(gap.count >= 1, "an empty gap");
        let end = gap
            .first_missing
            .checked_add(gap.count)
            .expect("a gap past u64::MAX");
        let range = gap.first_missing..end;
        assert!(
            !self.handed.iter().any(|n| range.contains(n)),
            "{range:?} declared lost after some of it was handed over"
        );
        assert!(
            !self
                .lost
                .iter()
                .any(|&(a, b)| a < end && gap.first_missing < b),
            "{range:?} declared lost twice"
        );
        if self.contiguous {
            self.covers(gap.first_missing, end, "gap");
        }
        self.lost.push((gap.first_missing, end));
        self.gaps += 1;
        self.missing += gap.count;
    }
    fn end_of_session(&mut self) {
        assert!(!self.ended, "end of session heard twice");
        self.ended = true;
    }
    fn line(&mut self, line: Line, up: bool) {
        let i = line.index();
        assert_eq!(
            self.down[i],
            up,
            "{line:?} said {} twice",
            if up { "up" } else { "down" }
        );
        self.down[i] = !up;
        if !up {
            self.downs[i] += 1;
        }
    }
}

/// What the stream's counters must say, from what was fed.
#[derive(Default)]
struct Fed {
    datagrams: u64,
    packets: u64,
    malformed: u64,
    /// Well-formed packets fed on each line.
    on_line: [u64; 2],
    stranger_replies: u64,
}

/// Every counter of `s` (for "only grows").
fn counters(s: &SubscriptionStats) -> [(u64, &'static str); 24] {
    [
        (s.packets, "packets"),
        (s.datagrams, "datagrams"),
        (s.messages, "messages"),
        (s.bytes, "bytes"),
        (s.gaps, "gaps"),
        (s.missing, "missing"),
        (s.duplicates, "duplicates"),
        (s.other_session, "other_session"),
        (s.malformed, "malformed"),
        (s.truncated, "truncated"),
        (s.heartbeats, "heartbeats"),
        (s.end_of_session, "end_of_session"),
        (s.reordered, "reordered"),
        (s.foreign_source, "foreign_source"),
        (s.suspect, "suspect"),
        (s.requests, "requests"),
        (s.retries, "retries"),
        (s.replies, "replies"),
        (s.recovered, "recovered"),
        (s.gaps_given_up, "gaps_given_up"),
        (s.reply_foreign_source, "reply_foreign_source"),
        (s.reply_unasked, "reply_unasked"),
        (s.ended, "ended"),
        (s.shard_failures, "shard_failures"),
    ]
}

fn line_counters(l: &LineStats) -> [(u64, &'static str); 7] {
    [
        (l.packets, "packets"),
        (l.wins, "wins"),
        (l.duplicates, "duplicates"),
        (l.gaps, "gaps"),
        (l.losses, "losses"),
        (l.gaps_alone, "gaps_alone"),
        (l.down_events, "down_events"),
    ]
}

/// The checks after every operation.
struct Check {
    recovery: bool,
    in_order: bool,
    as_they_come: bool,
    zero_duplicates: bool,
    previous: SubscriptionStats,
    previous_lines: [LineStats; 2],
}

impl Check {
    fn after(&mut self, state: &ReceiveState, seen: &Seen, fed: &Fed) {
        let s = state.stats();
        assert_eq!(s.datagrams, fed.datagrams, "datagrams");
        // A copy of what the stream has already taken is dropped on its header alone,
        // counted as a packet (its line's duplicate) even when its body is malformed.
        assert_eq!(
            s.packets + s.malformed,
            fed.packets + fed.malformed,
            "every segment a packet or malformed"
        );
        assert!(s.packets >= fed.packets, "packets");
        assert!(s.malformed <= fed.malformed, "malformed");
        assert_eq!(s.messages, seen.messages, "messages");
        assert_eq!(s.missing, seen.missing, "missing");
        assert_eq!(s.ended, u64::from(seen.ended), "ended");
        assert_eq!(
            s.reply_foreign_source,
            if self.recovery {
                fed.stranger_replies
            } else {
                0
            },
            "replies from a stranger"
        );
        if !self.recovery {
            assert_eq!(s.gaps, seen.gaps, "gaps");
            assert_eq!((s.requests, s.replies, s.recovered), (0, 0, 0));
        }
        if self.as_they_come {
            assert_eq!(s.recovered, seen.recovered, "recovered");
        }
        if self.zero_duplicates {
            assert_eq!(
                s.duplicates, 0,
                "a stream duplicate of aligned packets: {s:?}"
            );
        }
        if !self.in_order {
            // Only in-order recovery holds packets in a reorder window.
            assert_eq!(s.reordered, 0, "no reorder window");
        }
        assert!(s.foreign_source + s.other_session <= s.packets);
        for ((now, what), (before, _)) in counters(&s).into_iter().zip(counters(&self.previous)) {
            assert!(now >= before, "{what} went down from {before} to {now}");
        }
        self.previous = s;

        if seen.contiguous {
            assert_eq!(state.next_expected(), seen.next, "next expected");
        }

        let lines = state.line_stats().expect("two lines");
        for line in [Line::A, Line::B] {
            let i = line.index();
            let l = lines[i];
            assert!(
                l.wins + l.duplicates <= l.packets,
                "{line:?}: more wins and duplicates than packets: {l:?}"
            );
            assert!(
                l.packets <= fed.on_line[i],
                "{line:?}: {} packets, {} fed on it: {l:?}",
                l.packets,
                fed.on_line[i]
            );
            assert!(l.gaps_alone <= l.gaps, "{line:?}: {l:?}");
            assert!(l.gaps <= l.losses, "{line:?}: {l:?}");
            assert!(l.down <= 1, "{line:?}: down {}", l.down);
            assert_eq!(
                l.down == 1,
                seen.down[i],
                "{line:?} down, as the handler heard"
            );
            assert_eq!(l.down_events, seen.downs[i], "{line:?} down events");
            let before = self.previous_lines[i];
            for ((now, what), (was, _)) in line_counters(&l).into_iter().zip(line_counters(&before))
            {
                assert!(now >= was, "{line:?}: {what} went down from {was} to {now}");
            }
        }
        assert!(
            fed.on_line[1] > 0 || lines[1].packets == 0,
            "line B brought packets, but nothing came on it"
        );
        self.previous_lines = lines;
    }
}

/// Drains the requests due at `now`: each one 20 bytes for the server, of the stream's
/// session, remembered for replies to answer.
fn drain(state: &mut ReceiveState, now: u64, requests: &mut VecDeque<(u64, u16)>) {
    let mut buf = [0u8; 64];
    let mut polled = 0;
    while let Some((len, to)) = state.poll_transmit(now, &mut buf) {
        assert_eq!((len, to), (20, server()), "a request");
        let request = ReRequest::new_checked(&buf[..len]).expect("a valid request");
        assert_eq!(
            Some(request.session()),
            state.session(),
            "the request's session"
        );
        assert!(
            request.sequence() >= 1 && request.count() >= 1,
            "an empty request"
        );
        if requests.len() == REQUESTS {
            requests.pop_front();
        }
        requests.push_back((request.sequence(), request.count()));
        polled += 1;
        assert!(polled < 100_000, "poll_transmit never says None");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { rest: data };
    let config = input.u8();
    let shape_byte = input.u8();
    let session = (config & 1 != 0).then_some(SESSIONS[0]);
    let want_a = named(Line::A, config >> 1);
    let want_b = named(Line::B, config >> 3);
    let recovers = config & 32 != 0;
    let in_order = recovers && config & 64 != 0;
    let synthesized_only = config & 128 != 0;
    let shape = Shape {
        aligned: u64::from(shape_byte & 3),
    };
    let sequence_window = if shape_byte & 4 != 0 {
        1 + u64::from(input.u8())
    } else {
        ReceiveConfig::default().sequence_window
    };
    let wait_ns = u64::from(input.u16()) * 16;
    let silence_ns = (u64::from(input.u16()) * 16).max(1);
    let recovery = recovers.then(|| {
        let deadline = input.u8();
        let knobs = input.u8();
        RecoveryConfig {
            in_order,
            deadline: Duration::from_micros((1 + u64::from(deadline)) * 4),
            delay: Duration::from_micros(u64::from(knobs & 15) * 16),
            max_in_flight: 1 + usize::from((knobs >> 4) & 3),
            max_gaps: [1, 2, 8, 64][usize::from(knobs >> 6)],
            min_timeout: Duration::from_micros(1),
            hold_bytes: 1 << 16,
            seed: 1,
            ..RecoveryConfig::new(server())
        }
    });
    let deadline_ns = recovery.map_or(0, |r| r.deadline.as_nanos() as u64);
    let mut state = ReceiveState::new(&ReceiveConfig {
        session,
        sender: want_a,
        sequence_window,
        recovery,
        lines: Some(LinesConfig {
            wait: Duration::from_nanos(wait_ns),
            silence: Duration::from_nanos(silence_ns),
            sender_b: want_b,
        }),
        ..ReceiveConfig::default()
    });
    assert!(state.has_timers() && state.wants_clock());
    assert_eq!(state.recovers(), recovers);
    // How far ahead of now a deadline may be.
    let horizon = wait_ns.max(deadline_ns);

    let mut seen = Recorder(Seen {
        contiguous: !recovers || in_order,
        as_they_come: recovers && !in_order,
        synthesized_only,
        session: session.map(|_| 0),
        next: state.next_expected(),
        last_live: None,
        handed: HashSet::new(),
        lost: Vec::new(),
        delivered_session: None,
        messages: 0,
        recovered: 0,
        gaps: 0,
        missing: 0,
        ended: false,
        down: [false; 2],
        downs: [0; 2],
    });
    let mut check = Check {
        recovery: recovers,
        in_order,
        as_they_come: recovers && !in_order,
        zero_duplicates: shape.aligned > 0 && synthesized_only && !recovers,
        previous: state.stats(),
        previous_lines: state.line_stats().expect("two lines"),
    };
    let mut fed = Fed::default();
    let mut requests: VecDeque<(u64, u16)> = VecDeque::new();
    // One past each line's last synthesized packet.
    let mut cursor = [1u64; 2];
    let mut now = 0u64;
    let mut datagram = Vec::new();

    for _ in 0..MAX_OPS {
        let Some(op) = input.op() else {
            break;
        };
        now += u64::from(op >> 5) * 128;
        let mut timers_ran = false;
        match op & 7 {
            what @ 0..=3 => {
                let line = if what < 2 { Line::A } else { Line::B };
                let from = source(line, op >> 3);
                if what & 1 == 1 || synthesized_only {
                    let want = if line == Line::A { want_a } else { want_b };
                    let forged = !trusted(want, from);
                    let i = line.index();
                    cursor[i] =
                        synthesize(&mut input, &shape, (cursor[i], None), forged, &mut datagram);
                } else {
                    let len = usize::from(input.u8());
                    datagram.clear();
                    datagram.extend_from_slice(input.bytes(len));
                }
                fed.datagrams += 1;
                if well_formed(&datagram) {
                    fed.packets += 1;
                } else {
                    fed.malformed += 1;
                }
                // A whole header: it may count as a packet of the line (see `after`).
                if datagram.len() >= 20 {
                    fed.on_line[line.index()] += 1;
                }
                let info = DatagramInfo {
                    source: from,
                    ..DatagramInfo::default()
                };
                state.handle_line_datagram(line, &datagram, info, now, &mut seen);
            }
            what @ 4..=5 => {
                let from = if what == 4 { server() } else { stranger() };
                if op & 8 != 0 && !synthesized_only {
                    let len = usize::from(input.u8());
                    datagram.clear();
                    datagram.extend_from_slice(input.bytes(len));
                } else {
                    // Start 2 answers the oldest request (and takes it out).
                    let answers = input.rest.first().is_some_and(|kind| kind >> 6 == 2);
                    let cursor = match requests.front().copied().filter(|_| answers) {
                        Some((first, count)) => {
                            requests.pop_front();
                            (first, Some(count))
                        }
                        None => (1, None),
                    };
                    synthesize(&mut input, &shape, cursor, what == 5, &mut datagram);
                }
                if recovers {
                    if what == 5 {
                        fed.stranger_replies += 1;
                    } else if !datagram.is_empty() && Packet::new_checked(&datagram[..]).is_err() {
                        fed.malformed += 1;
                    }
                }
                let info = DatagramInfo {
                    source: Some(from),
                    ..DatagramInfo::default()
                };
                state.handle_reply(&datagram, info, now, &mut seen);
            }
            6 => {
                now += u64::from(input.u16()) * 16;
                state.handle_timeout(now, &mut seen);
                timers_ran = true;
            }
            _ => {
                if let Some(deadline) = state.poll_timeout() {
                    now = now.max(deadline);
                }
                state.handle_timeout(now, &mut seen);
                timers_ran = true;
            }
        }
        drain(&mut state, now, &mut requests);
        check.after(&state, &seen, &fed);
        if let Some(deadline) = state.poll_timeout() {
            assert!(
                deadline <= now.saturating_add(horizon),
                "a deadline {} ns ahead of now, more than {horizon}",
                deadline - now
            );
            if timers_ran {
                assert!(
                    deadline > now,
                    "the timers ran at {now}, and the next deadline is {deadline}"
                );
            }
        }
    }

    now += 1;
    state.finish(now, &mut seen);
    check.after(&state, &seen, &fed);
    assert_eq!(state.poll_timeout(), None, "finish lets everything go");
    let mut buf = [0u8; 64];
    assert_eq!(
        state.poll_transmit(now, &mut buf),
        None,
        "nothing asked after finish"
    );
    if seen.contiguous {
        assert_eq!(state.next_expected(), seen.next);
    }
});
