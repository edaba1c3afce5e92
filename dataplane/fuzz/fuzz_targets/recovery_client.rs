//! Drives a `ReceiveState` with recovery (as they come, or in order) with a stream, the
//! server's replies, forged and malformed replies, timeouts and request polls cut from the
//! input, and checks that recovery never delivers a message twice, out of order (in
//! order), with the wrong bytes, or after it was given up.
//!
//! ```text
//! config: u8   bit 0 in order, bits 1-2 deadline (x 250 µs, at least 1 µs),
//!              bits 3-4 random delay (x 100 µs)
//! op:     u8   bits 0-2 what: 0-1 a stream data packet, 2 a stream heartbeat or end,
//!              3 a reply from the server, 4 a reply from a stranger, 5 raw bytes from the
//!              server, 6 time passes (u16 x 1 µs) and timers run, 7 requests are polled;
//!              bits 3-7 the number of messages in a packet (1 + n % 8)
//! ```
//!
//! A packet is a u16 offset from the highest number sent so far (minus 256, so that it
//! can point back) and the count from the op byte; message `n` is `n` as eight
//! big-endian bytes, so what is delivered is checked against its number.
//!
//! Invariants: no panic; a number is delivered at most once and never after it was
//! declared lost; in order, deliveries strictly increase and none comes as recovered;
//! every delivered message carries its own number; the counters agree with the handler
//! (`messages`, `recovered`, `missing`); every request polled is 20 bytes for the server,
//! of the session, from 1, for at least one message; after `finish` nothing is missing
//! any more and nothing waits.

#![no_main]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use multipoint_dataplane::core::receive::{DatagramInfo, ReceiveConfig, ReceiveState};
use multipoint_dataplane::core::recovery::RecoveryConfig;
use multipoint_dataplane::core::sequence::Gap;
use multipoint_dataplane::wire::{
    write_end_of_session, write_heartbeat, PacketBuilder, ReRequest, Session,
};

use multipoint_test_support::input::Input;

#[path = "../common/record.rs"]
mod record;
use record::{Record, Recorder};

const SESSION: Session = Session::from_bytes(*b"FUZZREC   ");
const MAX_OPS: usize = 512;

fn server() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 7000))
}
fn publisher() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 5000))
}
fn stranger() -> SocketAddr {
    SocketAddr::from(([10, 6, 6, 6], 7000))
}

#[derive(Default)]
struct Seen {
    in_order: bool,
    delivered: HashSet<u64>,
    /// Ranges declared lost, `first..end`.
    lost: Vec<(u64, u64)>,
    last: u64,
    messages: u64,
    recovered: u64,
    missing: u64,
    ends: u32,
}

impl Record for Seen {
    fn take(&mut self, sequence: u64, message: &[u8], recovered: bool) {
        assert_eq!(message, sequence.to_be_bytes(), "message {sequence}");
        assert!(
            self.delivered.insert(sequence),
            "{sequence} delivered twice"
        );
        assert!(
            !self.lost.iter().any(|&(a, b)| (a..b).contains(&sequence)),
            "{sequence} delivered after it was lost"
        );
        if self.in_order {
            assert!(!recovered, "in order, nothing comes as recovered");
            assert!(sequence > self.last, "{sequence} after {}", self.last);
        }
        self.last = self.last.max(sequence);
        self.messages += 1;
        self.recovered += u64::from(recovered);
    }
    fn gap(&mut self, gap: Gap) {
        assert!(gap.count >= 1);
        let lost = gap.first_missing..gap.end();
        assert!(
            !self.delivered.iter().any(|n| lost.contains(n)),
            "{lost:?} lost after some of it was delivered"
        );
        self.lost.push((gap.first_missing, gap.end()));
        self.missing += gap.count;
    }
    fn end_of_session(&mut self) {
        self.ends += 1;
        assert_eq!(self.ends, 1, "the end is heard once");
    }
}

/// A data packet of messages `first..first + count`.
fn data(first: u64, count: u16) -> Vec<u8> {
    let mut buf = vec![0u8; 20 + usize::from(count) * 10];
    let Ok(mut b) = PacketBuilder::start(&mut buf, &SESSION, first) else {
        return Vec::new();
    };
    for n in 0..u64::from(count) {
        if b.push(&mut buf, &(first + n).to_be_bytes()).is_err() {
            break;
        }
    }
    let len = b.finish(&mut buf);
    buf.truncate(len);
    buf
}

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input { rest: bytes };
    let config = input.u8();
    let in_order = config & 1 != 0;
    let deadline =
        Duration::from_micros(u64::from((config >> 1) & 3) * 250).max(Duration::from_micros(1));
    let delay = Duration::from_micros(u64::from((config >> 3) & 3) * 100);
    let mut state = ReceiveState::new(&ReceiveConfig {
        session: Some(SESSION),
        sender: Some(publisher()),
        recovery: Some(RecoveryConfig {
            in_order,
            deadline,
            delay,
            seed: 1,
            max_gaps: 64,
            hold_bytes: 1 << 16,
            ..RecoveryConfig::new(server())
        }),
        ..ReceiveConfig::default()
    });
    let mut seen = Recorder(Seen {
        in_order,
        ..Seen::default()
    });
    let mut now = 1_000_000u64;
    let mut highest = 1u64;
    let from = |source| DatagramInfo {
        source: Some(source),
        ..DatagramInfo::default()
    };
    for _ in 0..MAX_OPS {
        let Some(op) = input.op() else {
            break;
        };
        let count = 1 + u16::from(op >> 3) % 8;
        let mut first = || {
            (highest + u64::from(input.u16()))
                .saturating_sub(256)
                .max(1)
        };
        match op & 7 {
            0 | 1 => {
                let f = first();
                let packet = data(f, count);
                highest = highest.max(f + u64::from(count));
                state.handle_datagram(&packet, from(publisher()), now, &mut seen);
            }
            2 => {
                let f = first();
                let mut buf = [0u8; 20];
                let written = if count % 2 == 0 {
                    write_heartbeat(&mut buf, &SESSION, f)
                } else {
                    write_end_of_session(&mut buf, &SESSION, f)
                };
                if let Ok(len) = written {
                    state.handle_datagram(&buf[..len], from(publisher()), now, &mut seen);
                }
            }
            3 | 4 => {
                let f = first();
                let source = if op & 7 == 3 { server() } else { stranger() };
                state.handle_reply(&data(f, count), from(source), now, &mut seen);
            }
            5 => {
                let len = usize::from(input.u8());
                let raw: Vec<u8> = (0..len).map(|_| input.u8()).collect();
                state.handle_reply(&raw, from(server()), now, &mut seen);
            }
            6 => {
                now += u64::from(input.u16()) * 1_000;
                if state.poll_timeout().is_some_and(|at| at <= now) {
                    state.handle_timeout(now, &mut seen);
                }
            }
            _ => {
                let mut buf = [0u8; 20];
                while let Some((len, to)) = state.poll_transmit(now, &mut buf) {
                    assert_eq!((len, to), (20, server()));
                    let request = ReRequest::new_checked(&buf[..]).expect("a valid request");
                    assert_eq!(request.session(), SESSION);
                    assert!(request.sequence() >= 1 && request.count() >= 1);
                    assert!(request.sequence() < highest.max(1) + (1 << 31));
                }
            }
        }
        let st = state.stats();
        assert_eq!(st.messages, seen.messages);
        assert_eq!(st.missing, seen.missing);
        if !in_order {
            assert_eq!(st.recovered, seen.recovered);
        }
    }
    state.finish(now, &mut seen);
    let st = state.stats();
    assert_eq!((st.messages, st.missing), (seen.messages, seen.missing));
    let mut buf = [0u8; 20];
    assert_eq!(
        state.poll_transmit(now, &mut buf),
        None,
        "nothing asked after the finish"
    );
});
