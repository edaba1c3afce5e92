//! Drives one subscription's `ReceiveState` with datagrams and events cut from the input.
//!
//! The input is a small configuration followed by operations, read front to back (bytes
//! missing at the end read as zero, so every input is a valid script):
//!
//! ```text
//! config: u8   bits 0-1 start (0 One, 1 FirstSeen, 2 At(u64 follows), 3 One),
//!              bit 2 a session is configured (u8 index into SESSIONS follows),
//!              bit 3 timestamps, bit 4 a reorder window (u16 ns follows),
//!              bit 5 only synthesized packets (raw datagrams become synthesized ones),
//!              bit 6 several senders (each datagram is preceded by a u8 choosing one of
//!              three source ports), bit 7 the first sender is named (with its port)
//! op:     u8   bits 0-2 what: 0-1 a raw datagram, 2 a synthesized packet, 3 a GRO batch
//!              of synthesized packets, 4 timeout, 5 unreadable, 6 re-arm, 7 receive error;
//!              bit 3 truncated, bit 4 a GRO segment size (u16) follows, bit 5 a kernel
//!              drop count (u32) follows; bits 6-7 how far the clock moves (x 64 ns)
//! ```
//!
//! A raw datagram is a u16 length and that many bytes. A synthesized packet is a session
//! index, a kind/count byte, a filler length and a 16-bit sequence number (or a full u64
//! when bit 7 of the kind byte is set); it is a well-formed MoldUDP64 packet whose message
//! `n` reads `[session index, n as u64 big-endian, filler...]`, so what is delivered can
//! be checked against its sequence number.
//!
//! Invariants checked, after every operation and in the handler:
//!
//! - nothing panics;
//! - delivered messages and declared gaps are strictly increasing and contiguous: each
//!   starts where the previous one ended, and together they end at `next_expected()`;
//!   every gap has a count of at least 1; nothing comes after the end of session, which
//!   the handler sees at most once (and exactly when the counter says one came);
//! - the session followed is the configured one, or else the one locked onto, and never
//!   changes once known, nor does the sender; with only synthesized packets, every
//!   message delivered is of one session and carries its own sequence number;
//! - the counters agree with what was fed and what the handler saw: datagrams, truncated,
//!   re-arms, receive errors, kernel drops, GRO batches; packets and malformed add up to
//!   the segments of the datagrams (checked here with the wire parser; sequence 0 is
//!   malformed); messages, bytes,
//!   gaps, missing; the latency histogram has one sample (or skew) per stamped message;
//! - without a reorder window nothing is held; after `finish` nothing is; no more messages
//!   are delivered or counted as duplicates than the well-formed data packets of the
//!   followed session and sender carried, and, when nothing was suspect, foreign or of
//!   another session (and few enough packets came for all to be held before the lock),
//!   every one of them was one or the other.

#![no_main]

use libfuzzer_sys::fuzz_target;
use multipoint_dataplane::core::receive::{DatagramInfo, Handler, ReceiveConfig, ReceiveState};
use multipoint_dataplane::core::sequence::{Gap, StartAt};
use multipoint_dataplane::stats::SubscriptionStats;
use multipoint_dataplane::wire::{
    write_end_of_session, write_heartbeat, Packet, PacketBuilder, PacketKind, Session,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use multipoint_test_support::input::Input;

/// The sessions synthesized packets belong to (a configured session is one of them too).
const SESSIONS: [[u8; 10]; 3] = [*b"FEED-A    ", *b"FEED-B    ", *b"\x00\xffbinary\x01\x7f"];

/// Most operations taken from one input: enough for long stories, bounded run time.
const MAX_OPS: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut input = Input { rest: data };
    let config = input.u8();
    let start = match config & 3 {
        1 => StartAt::FirstSeen,
        2 => StartAt::At(input.u64()),
        _ => StartAt::One,
    };
    let session = (config & 4 != 0).then(|| Session::from_bytes(SESSIONS[input.u8() as usize % 3]));
    let timestamps = config & 8 != 0;
    let window = if config & 16 != 0 {
        u64::from(input.u16()).max(1)
    } else {
        0
    };
    let synthesized_only = config & 32 != 0;
    let senders = config & 64 != 0;
    let sender = (config & 128 != 0).then(|| source(0));
    let mut state = ReceiveState::new(&ReceiveConfig {
        session,
        sender,
        start,
        timestamps,
        reorder_window: Duration::from_nanos(window),
        ..ReceiveConfig::default()
    });
    let mut check = Checker::new(&state, synthesized_only, timestamps);
    assert_eq!(state.session(), session);
    assert_eq!(state.has_timers(), window > 0);
    assert_eq!(state.wants_clock(), timestamps || window > 0);

    let mut now = 0u64;
    let mut datagram = Vec::new();
    for _ in 0..MAX_OPS {
        let Some(op) = input.op() else {
            break;
        };
        now += u64::from(op >> 6) * 64;
        match op & 7 {
            what @ 0..=3 => {
                datagram.clear();
                let from = source(if senders { input.u8() } else { 0 });
                let mut gro = None;
                if what >= 2 || synthesized_only {
                    let batch = if what == 3 { 1 + input.u8() % 4 } else { 1 };
                    gro = synthesize(&mut input, batch, &mut datagram);
                } else {
                    let len = usize::from(input.u16());
                    datagram.extend_from_slice(input.bytes(len));
                }
                let info = DatagramInfo {
                    truncated: op & 8 != 0,
                    // Synthesized packets are cut at their own boundaries only, so that
                    // every message delivered is one of theirs. (A segment size of 0, which
                    // once panicked, is no coalescing.)
                    gro_segment: if op & 16 != 0 && !synthesized_only {
                        Some(input.u16())
                    } else {
                        gro
                    },
                    kernel_drops: (op & 32 != 0).then(|| input.u32()),
                    source: Some(from),
                    ..DatagramInfo::default()
                };
                check.fed(&datagram, info);
                state.handle_datagram(&datagram, info, now, &mut check);
            }
            4 => {
                now += u64::from(input.u16());
                state.handle_timeout(now, &mut check);
            }
            5 => {
                check.expect.malformed += 1;
                state.handle_unreadable();
            }
            6 => {
                check.expect.rearms += 1;
                state.handle_rearm();
            }
            _ => {
                check.expect.receive_errors += 1;
                state.handle_receive_error(i32::from(input.u8()));
            }
        }
        check.after(&state);
        if let Some(deadline) = state.poll_timeout() {
            assert!(window > 0, "only a reorder window holds packets");
            assert!(
                deadline <= now.saturating_add(window),
                "a wait is at most the window"
            );
        }
    }
    now += 1;
    state.finish(now, &mut check);
    check.after(&state);
    assert_eq!(state.poll_timeout(), None, "finish lets everything go");
    check.at_the_end(&state);
});

/// Sender `i` of three: 127.0.0.1, ports 5000 to 5002.
fn source(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000 + u16::from(i % 3)))
}

/// Appends `batch` well-formed packets of equal length to `out` (see the module docs) and
/// returns the GRO segment size when there are several.
fn synthesize(input: &mut Input<'_>, batch: u8, out: &mut Vec<u8>) -> Option<u16> {
    let kind = input.u8();
    let filler = usize::from(input.u8() % 24);
    let count: u16 = match kind & 0x7f {
        0 => 0,
        0x7f => 0xFFFF,
        n => u16::from(n % 8) + 1,
    };
    let mut segment = 0;
    for _ in 0..batch {
        let session = Session::from_bytes(SESSIONS[usize::from(input.u8() % 3)]);
        let sequence = if kind & 0x80 != 0 {
            input.u64()
        } else {
            u64::from(input.u16())
        };
        let start = out.len();
        let mut buf = [0u8; 20 + 8 * (2 + 9 + 24)];
        let len = match count {
            0 => write_heartbeat(&mut buf, &session, sequence).unwrap_or(0),
            0xFFFF => write_end_of_session(&mut buf, &session, sequence).unwrap_or(0),
            n => {
                let Ok(mut builder) = PacketBuilder::start(&mut buf, &session, sequence) else {
                    return None;
                };
                let index = SESSIONS
                    .iter()
                    .position(|s| s == session.as_bytes())
                    .unwrap_or(0);
                for i in 0..u64::from(n) {
                    let mut message = [0u8; 9 + 24];
                    message[0] = index as u8;
                    message[1..9].copy_from_slice(&sequence.wrapping_add(i).to_be_bytes());
                    message[9..9 + filler].fill(0xEE);
                    // Only a sequence that runs out stops it: then the packet is shorter.
                    if builder.push(&mut buf, &message[..9 + filler]).is_err() {
                        break;
                    }
                }
                builder.finish(&mut buf)
            }
        };
        out.extend_from_slice(&buf[..len]);
        let len = out.len() - start;
        if segment == 0 {
            segment = len;
        } else if len != segment {
            // Packets of a batch must be the same size to be cut apart again; a shorter one
            // (a sequence that ran out) ends the batch.
            out.truncate(start);
            break;
        }
    }
    (out.len() > segment).then(|| u16::try_from(segment).unwrap_or(u16::MAX))
}

/// What the counters must say, from what was fed.
#[derive(Default, Debug)]
struct Expected {
    datagrams: u64,
    truncated: u64,
    malformed: u64,
    packets: u64,
    gro_batches: u64,
    rearms: u64,
    receive_errors: u64,
    kernel_drops: u64,
}

/// The handler, and the bookkeeping of what it must have seen.
struct Checker {
    synthesized_only: bool,
    timestamps: bool,
    expect: Expected,
    /// Where the next message or gap must start (unknown only for a late joiner that has
    /// seen nothing yet).
    next: Option<u64>,
    /// The session followed, once known.
    session: Option<Session>,
    ended: bool,
    end_calls: u64,
    messages: u64,
    bytes: u64,
    stamped: u64,
    gaps: u64,
    missing: u64,
    /// The messages of the well-formed data packets, per session and sender.
    offered: HashMap<([u8; 10], Option<SocketAddr>), u64>,
    /// The sender followed, once known.
    sender: Option<SocketAddr>,
    /// The session index of the first message delivered (synthesized packets only).
    delivered_session: Option<u8>,
    /// The counters after the previous operation.
    previous: SubscriptionStats,
}

impl Checker {
    fn new(state: &ReceiveState, synthesized_only: bool, timestamps: bool) -> Checker {
        Checker {
            synthesized_only,
            timestamps,
            expect: Expected::default(),
            next: state.next_expected(),
            session: state.session(),
            ended: false,
            end_calls: 0,
            messages: 0,
            bytes: 0,
            stamped: 0,
            gaps: 0,
            missing: 0,
            offered: HashMap::new(),
            sender: state.sender(),
            delivered_session: None,
            previous: state.stats(),
        }
    }

    /// Accounts for a datagram about to be handed over, from the wire format alone.
    fn fed(&mut self, payload: &[u8], info: DatagramInfo) {
        let e = &mut self.expect;
        e.datagrams += 1;
        if let Some(drops) = info.kernel_drops {
            e.kernel_drops = u64::from(drops);
        }
        if info.truncated {
            e.truncated += 1;
            return;
        }
        if payload.is_empty() {
            e.malformed += 1;
            return;
        }
        // GRO: segments of the given size, the last one possibly shorter. A size of 0
        // describes no segmentation at all, so the payload is one datagram.
        let segment = match info.gro_segment {
            Some(s) if s > 0 && usize::from(s) < payload.len() => {
                e.gro_batches += 1;
                usize::from(s)
            }
            _ => payload.len(),
        };
        for bytes in payload.chunks(segment) {
            let Ok(packet) = Packet::new_checked(bytes) else {
                e.malformed += 1;
                continue;
            };
            if packet.sequence() == 0 {
                // MoldUDP64 numbers from 1.
                e.malformed += 1;
                continue;
            }
            e.packets += 1;
            if packet.kind() == PacketKind::Data {
                let key = (*packet.session().as_bytes(), info.source);
                *self.offered.entry(key).or_default() += u64::from(packet.message_count());
            }
        }
    }

    /// One message or gap covering `first..end`: it must start where the last one ended.
    fn covers(&mut self, first: u64, end: u64, what: &str) {
        assert!(!self.ended, "{what} {first} after the end of session");
        assert!(first < end, "{what} {first}..{end} is empty");
        if let Some(next) = self.next {
            assert_eq!(first, next, "{what} does not start where the stream stood");
        }
        self.next = Some(end);
    }

    /// The state after an operation agrees with everything seen and fed.
    fn after(&mut self, state: &ReceiveState) {
        // The session (configured, or locked onto) and the sender: once known, fixed.
        match (self.session, state.session()) {
            (Some(old), now) => assert_eq!(now, Some(old), "the session changed"),
            (None, now) => self.session = now,
        }
        match (self.sender, state.sender()) {
            (Some(old), now) => assert_eq!(now, Some(old), "the sender changed"),
            (None, now) => self.sender = now,
        }
        // The stream stands where the handler's events ended.
        match (self.next, state.next_expected()) {
            (Some(next), expected) => assert_eq!(expected, Some(next), "next expected"),
            (None, expected) => self.next = expected,
        }

        let s = state.stats();
        let e = &self.expect;
        assert_eq!(s.datagrams, e.datagrams, "datagrams");
        assert_eq!(s.truncated, e.truncated, "truncated");
        assert_eq!(s.malformed, e.malformed, "malformed");
        assert_eq!(s.packets, e.packets, "packets");
        assert_eq!(s.gro_batches, e.gro_batches, "GRO batches");
        assert_eq!(s.rearms, e.rearms, "re-arms");
        assert_eq!(s.receive_errors, e.receive_errors, "receive errors");
        assert_eq!(s.kernel_drops, e.kernel_drops, "kernel drops");
        assert_eq!(s.messages, self.messages, "messages");
        assert_eq!(s.bytes, self.bytes, "bytes");
        assert_eq!(s.gaps, self.gaps, "gaps");
        assert_eq!(s.missing, self.missing, "missing");
        assert!(s.end_of_session <= s.packets);
        assert_eq!(
            self.end_calls,
            u64::from(s.end_of_session > 0),
            "end of session seen"
        );
        assert!(s.heartbeats + s.end_of_session + s.other_session <= s.packets);
        assert!(s.reordered <= s.packets);
        if !state.has_timers() {
            assert_eq!(s.reordered, 0);
        }
        let offered: u64 = self.offered.values().sum();
        assert!(
            s.messages + s.duplicates <= offered,
            "more delivered than offered"
        );
        assert!(s.foreign_source + s.suspect + s.other_session <= s.packets);
        // Counters only grow.
        let p = self.previous;
        for (now, before, what) in [
            (s.duplicates, p.duplicates, "duplicates"),
            (s.other_session, p.other_session, "other session"),
            (s.heartbeats, p.heartbeats, "heartbeats"),
            (s.end_of_session, p.end_of_session, "end of session"),
            (s.reordered, p.reordered, "reordered"),
            (s.foreign_source, p.foreign_source, "foreign source"),
            (s.suspect, p.suspect, "suspect"),
        ] {
            assert!(now >= before, "{what} went down from {before} to {now}");
        }
        self.previous = s;

        let latency = state.latency();
        assert_eq!(
            latency.len() + latency.skewed(),
            self.stamped,
            "latency samples"
        );
    }

    /// After `finish`: the offered messages of the followed session and sender are
    /// accounted for.
    fn at_the_end(&self, state: &ReceiveState) {
        let s = state.stats();
        let offered = match state.session() {
            Some(session) => self
                .offered
                .get(&(*session.as_bytes(), state.sender()))
                .copied()
                .unwrap_or(0),
            None => 0,
        };
        assert!(
            s.messages + s.duplicates <= offered,
            "more delivered than the followed sender offered: {s:?}"
        );
        // Nothing else came, and few enough packets for all to be held before the lock.
        if s.suspect + s.foreign_source + s.other_session == 0 && s.packets <= 16 && state.locked()
        {
            assert_eq!(
                s.messages + s.duplicates,
                offered,
                "messages offered but neither delivered nor counted as duplicates: {s:?}"
            );
        }
    }
}

impl Handler for Checker {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        let end = sequence
            .checked_add(1)
            .expect("a message numbered u64::MAX");
        self.covers(sequence, end, "message");
        self.messages += 1;
        self.bytes += message.len() as u64;
        if self.timestamps && message.len() >= 8 {
            self.stamped += 1;
        }
        if self.synthesized_only {
            assert!(
                message.len() >= 9,
                "not a synthesized message: {message:02x?}"
            );
            let index = *self.delivered_session.get_or_insert(message[0]);
            assert_eq!(message[0], index, "messages of two sessions delivered");
            assert_eq!(
                message[1..9],
                sequence.to_be_bytes(),
                "delivered under another number"
            );
        }
    }

    fn on_gap(&mut self, gap: Gap) {
        assert!(gap.count >= 1, "an empty gap");
        let end = gap
            .first_missing
            .checked_add(gap.count)
            .expect("a gap past u64::MAX");
        assert_eq!(gap.end(), end);
        assert!(gap.contains(gap.first_missing) && !gap.contains(end));
        self.covers(gap.first_missing, end, "gap");
        self.gaps += 1;
        self.missing += gap.count;
    }

    fn on_end_of_session(&mut self) {
        assert!(!self.ended, "end of session told twice");
        self.ended = true;
        self.end_calls += 1;
    }
}
