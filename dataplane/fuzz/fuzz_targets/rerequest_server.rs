//! Drives a re-request server over a retransmission store filled by a packetizer, with a
//! stream, requests, sources and times all cut from the input.
//!
//! The input is a small configuration followed by operations, read front to back (bytes
//! missing at the end read as zero, so every input is a valid script):
//!
//! ```text
//! config: u8 store messages (1 + n), u16 store bytes (1 + n), u16 max datagram
//!         (22 + n % 1500), u8 reply burst (1 + n), u16 replies a second (1 + n),
//!         u16 byte burst (1 + n), u16 bytes a second (1 + n), u8 requesters (1 + n % 8)
//! op:     u8  bits 0-1 what: 0 offer messages (u8 how many, then a u8 length each),
//!             1 a structured request, 2 a raw datagram (u8 length, bytes), 3 flush;
//!             bits 2-4 which of eight sources it comes from;
//!             bits 5-7 how far the clock moves (0, µs, ms, up to 2 s, or back)
//! request: u8 session (0 ours, else another), u8 where (relative to the stored range),
//!          u16 offset, u16 count
//! ```
//!
//! Message `s` is `len` bytes of `s * 31 + i`, so what is stored can be checked against
//! what was offered.
//!
//! Invariants checked after every request:
//!
//! - nothing panics;
//! - a reply is at most the maximum datagram, a well-formed data packet of the server's
//!   session, starts at the requested sequence number, holds at least one and at most
//!   `max(count, 1)` messages, and those are exactly the messages offered under those
//!   numbers, all of them stored when the request came;
//! - a reply comes only for a well-formed request of the session for a stored sequence
//!   number;
//! - the counters add up: `requests == replies + refused()`, and the replies, messages
//!   and bytes served are what was seen;
//! - per address, while no entry can have been forgotten (no more addresses than the
//!   table holds), the replies and bytes sent never exceed the bursts plus what the rates
//!   refilled in the time that passed: no amplification;
//! - the store holds an unbroken range ending where the packetizer's closed packets end,
//!   within its bounds.

#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use multipoint_dataplane::core::packetizer::{HeapSlots, Packetizer, PacketizerConfig, Slots};
use multipoint_dataplane::core::server::{RerequestServer, ServerConfig};
use multipoint_dataplane::core::store::{RetransmitStore, StoreConfig};
use multipoint_dataplane::core::Clock;
use multipoint_dataplane::wire::{
    Packet, PacketKind, PacketRepr, ReRequest, ReRequestRepr, Session,
};

use multipoint_test_support::input::Input;

const SESSION: Session = Session::from_bytes(*b"FUZZSERVER");
const OTHER: Session = Session::from_bytes(*b"FUZZOTHER ");
const BUFFERS: u16 = 8;

/// Most operations taken from one input: enough for long stories, bounded run time.
const MAX_OPS: usize = 512;

/// The eight sources: two ports of one address, an IPv4-mapped twin of it, and others.
fn source(i: u8) -> SocketAddr {
    let ip = match i % 8 {
        0 | 1 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        2 => IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
        3 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        4 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)),
        5 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        6 => IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 7)),
        _ => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)),
    };
    SocketAddr::new(ip, 4000 + u16::from(i % 2))
}

/// The address a source's bucket belongs to.
fn key(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), IpAddr::V4),
        ip => ip,
    }
}

fn message(s: u64, len: u8) -> Vec<u8> {
    (0..u64::from(len)).map(|i| (s * 31 + i) as u8).collect()
}

/// A clock the script moves.
struct Time(Instant);

impl Clock for Time {
    fn now(&self) -> Instant {
        self.0
    }
}

/// What one address was sent.
#[derive(Default)]
struct Sent {
    replies: u64,
    bytes: u64,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { rest: data };
    let store_config = StoreConfig {
        messages: 1 + usize::from(input.u8()),
        bytes: 1 + usize::from(input.u16()),
    };
    let max_datagram = 22 + usize::from(input.u16() % 1500);
    let server_config = ServerConfig {
        reply_burst: 1 + u64::from(input.u8()),
        replies_per_second: 1 + u64::from(input.u16()),
        byte_burst: 1 + u64::from(input.u16()),
        bytes_per_second: 1 + u64::from(input.u16()),
        max_requesters: 1 + usize::from(input.u8() % 8),
    };
    let start = Instant::now();
    let mut clock = Time(start);
    let config = PacketizerConfig {
        max_datagram,
        max_delay: Duration::from_secs(3600),
        ..PacketizerConfig::new(SESSION)
    };
    let mut packetizer = Packetizer::new(config, usize::from(BUFFERS), clock.0).expect("valid");
    packetizer.set_store(RetransmitStore::new(&store_config).expect("valid"));
    let mut slots = HeapSlots::new(BUFFERS, max_datagram);
    let mut server = RerequestServer::new(SESSION, server_config).expect("valid");
    let mut reply = vec![0u8; max_datagram];

    let mut offered: Vec<Vec<u8>> = vec![Vec::new()]; // offered[s] is message s
    let mut sent: HashMap<IpAddr, Sent> = HashMap::new();
    let mut replies = 0u64;
    let mut messages_served = 0u64;
    let mut bytes_served = 0u64;
    // The latest time seen (the clock may go back; the buckets must not refill then).
    let mut latest = start;

    for _ in 0..MAX_OPS {
        let Some(op) = input.op() else {
            break;
        };
        let from = source((op >> 2) & 7);
        let step = match op >> 5 {
            0 | 1 => Duration::ZERO,
            2 => Duration::from_micros(u64::from(input.u8())),
            3 | 4 => Duration::from_millis(u64::from(input.u8())),
            5 => Duration::from_millis(u64::from(input.u16()) % 2000),
            _ => Duration::ZERO,
        };
        if op >> 5 == 7 {
            // Back in time, but not before the start.
            let back = Duration::from_micros(u64::from(input.u16()));
            clock.0 = clock
                .0
                .checked_sub(back)
                .filter(|t| *t >= start)
                .unwrap_or(start);
        } else {
            clock.0 += step;
        }
        latest = latest.max(clock.0);
        match op & 3 {
            0 => {
                let n = input.u8() % 64;
                for _ in 0..n {
                    let len = input.u8();
                    let s = packetizer.next_sequence();
                    let msg = message(s, len);
                    let mut taken = packetizer.offer(&msg, &mut slots, &clock);
                    if taken.is_err() {
                        transmit(&mut packetizer, &mut slots, clock.0);
                        taken = packetizer.offer(&msg, &mut slots, &clock);
                    }
                    if let Ok(got) = taken {
                        assert_eq!(got, s);
                        offered.push(msg);
                    }
                    transmit(&mut packetizer, &mut slots, clock.0);
                }
            }
            3 => {
                packetizer.flush(&mut slots);
                transmit(&mut packetizer, &mut slots, clock.0);
            }
            kind => {
                let store = packetizer.store().expect("a store");
                let mut datagram = [0u8; 64];
                let datagram: &[u8] = if kind == 1 {
                    let session = if input.u8() == 0 { SESSION } else { OTHER };
                    let place = input.u8();
                    let offset = u64::from(input.u16());
                    let count = input.u16();
                    let sequence = match place % 4 {
                        0 => store.first().wrapping_add(offset % 64),
                        1 => store.next().wrapping_sub(offset % 64),
                        2 => offset,
                        _ => u64::MAX - offset,
                    };
                    let repr = ReRequestRepr {
                        session,
                        sequence,
                        count,
                    };
                    match repr.emit(&mut datagram) {
                        Ok(len) => &datagram[..len],
                        Err(_) => {
                            // An overflowing range: written by hand, it must be refused.
                            datagram[..10].copy_from_slice(session.as_bytes());
                            datagram[10..18].copy_from_slice(&sequence.to_be_bytes());
                            datagram[18..20].copy_from_slice(&count.to_be_bytes());
                            &datagram[..20]
                        }
                    }
                } else {
                    let len = usize::from(input.u8() % 40);
                    let bytes = input.bytes(len);
                    datagram[..bytes.len()].copy_from_slice(bytes);
                    &datagram[..bytes.len()]
                };
                let asked = ReRequestRepr::parse(&ReRequest::new_unchecked(datagram)).ok();
                let (first, next) = (store.first(), store.next());
                let got = server.handle_request(datagram, from, clock.0, store, &mut reply);
                if let Some(len) = got {
                    let asked = asked.expect("a reply only to a well-formed request");
                    assert_eq!(asked.session, SESSION);
                    assert!(asked.sequence >= first && asked.sequence < next);
                    assert!(asked.sequence >= 1);
                    assert!(len <= max_datagram);
                    let packet = Packet::new_checked(&reply[..len]).expect("a valid packet");
                    assert_eq!(packet.kind(), PacketKind::Data);
                    let repr = PacketRepr::parse(&packet).expect("parses");
                    assert_eq!(repr.session, SESSION);
                    assert_eq!(repr.sequence, asked.sequence);
                    let n = repr.messages.len();
                    assert!(n >= 1 && n <= usize::from(asked.count.max(1)));
                    assert!(asked.sequence + n as u64 <= next, "only stored messages");
                    for (i, m) in repr.messages.iter().enumerate() {
                        let s = asked.sequence as usize + i;
                        assert_eq!(Some(m), offered.get(s), "message {s}");
                    }
                    replies += 1;
                    messages_served += n as u64;
                    bytes_served += len as u64;
                    let to = sent.entry(key(from)).or_default();
                    to.replies += 1;
                    to.bytes += len as u64;
                }
            }
        }
        let stats = server.stats();
        assert_eq!(stats.requests, stats.replies + stats.refused());
        assert_eq!(
            (stats.replies, stats.messages_served, stats.bytes_served),
            (replies, messages_served, bytes_served)
        );
        assert!(server.requesters() <= server_config.max_requesters);
        // Eight sources are six addresses: with room for all, none is ever forgotten, and
        // what each was sent is bounded by its buckets.
        if server_config.max_requesters >= 6 {
            let secs = latest.duration_since(start).as_secs_f64();
            for to in sent.values() {
                let replies = server_config.reply_burst as f64
                    + secs * server_config.replies_per_second as f64;
                let bytes =
                    server_config.byte_burst as f64 + secs * server_config.bytes_per_second as f64;
                assert!(
                    to.replies as f64 <= replies + 1e-6,
                    "{} replies",
                    to.replies
                );
                assert!(to.bytes as f64 <= bytes + 1e-6, "{} bytes", to.bytes);
            }
        }
        let store = packetizer.store().expect("a store");
        assert_eq!(
            store.next(),
            packetizer.unclosed_sequence(),
            "every closed packet stored"
        );
        assert!(store.first() <= store.next());
        assert!(store.len() <= store_config.messages as u64);
        assert!(store.stored_bytes() <= store_config.bytes as u64);
        let st = store.stats();
        assert_eq!((st.malformed, st.discontinuous), (0, 0));
    }
});

/// Hands out whatever is due and gives the slots back (the packets go nowhere: only the
/// store matters here).
fn transmit(packetizer: &mut Packetizer, slots: &mut HeapSlots, now: Instant) {
    let Some(ready) = packetizer.poll_transmit() else {
        return;
    };
    let ready: Vec<(u16, u16)> = ready.to_vec();
    packetizer.handle_transmitted(ready.len(), now);
    for (slot, _) in ready {
        slots.give_back(slot);
    }
}
