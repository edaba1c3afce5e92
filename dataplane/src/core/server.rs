//! The re-request server's decisions (sans-IO): which MoldUDP64 Requests are answered
//! from a [`RetransmitStore`], with what, and which are refused and why.
//!
//! # How to drive it
//!
//! Feed every datagram that arrived at the server's address to
//! [`handle_request`](RerequestServer::handle_request) with its source address and the
//! time; when it returns a length, send that many bytes of the reply buffer back to the
//! source (and tell [`handle_reply_failed`](RerequestServer::handle_reply_failed) if the
//! send failed). A datagram without a readable source goes to
//! [`handle_unaddressed`](RerequestServer::handle_unaddressed), a failed receive to
//! [`handle_receive_failed`](RerequestServer::handle_receive_failed), so that they are
//! counted too. Nothing else: there are no timers, and the buckets refill lazily from
//! the `now` of each request.
//!
//! # What is answered
//!
//! A well-formed Request (exactly 20 bytes, a range that does not overflow) for the
//! server's own session, from sequence 1 on, whose first sequence number is stored, is
//! answered with one data packet of whole stored messages from that number on: as many
//! as fit the reply buffer and the requester's byte budget, at most the count asked for.
//! **A count of 0 is answered as a count of 1**: the requester plainly wants the message
//! at that number, and one message is the least amplification a useful answer has (a
//! refusal would teach a client that sends 0 nothing it can act on).
//!
//! Everything else is answered with nothing and counted by reason ([`ServerStats`]), so
//! that `requests` is always the sum of `replies` and every refusal.
//!
//! # No amplification
//!
//! Each requesting IP address has two token buckets, both full at first: one of replies
//! (default 1,000 a second, burst 100) and one of reply bytes (default 2,000,000 a second,
//! burst 200,000). A reply takes one token and its length in bytes; a reply is cut to the
//! whole messages the byte bucket still holds, and refused when it holds not one.
//! Malformed, foreign and unanswerable requests take nothing and create no entry: they
//! cost a parse and are never answered.
//!
//! Requesters are keyed by **IP address, not address and port**: a host picks its source
//! ports freely, so per-port buckets would hand one host 64 K budgets and let it fill the
//! table; and a reflected flood (requests forged with a victim's address) aims at the
//! victim's address whatever the port, so per-address buckets cap what any one address
//! can be sent. The price: subscribers behind one address (a NAT, or several on one
//! host) share one budget — raise the rates for them. IPv4-mapped IPv6 addresses count
//! as their IPv4 address.
//!
//! The table of requesters is bounded ([`ServerConfig::max_requesters`]) and allocated up
//! front (a std `HashMap`, whose SipHash with random keys resists chosen collisions, with
//! room reserved for twice the entries, so that removing and inserting rehashes in place
//! and never grows it). When it is full, a new address takes the entry of the least
//! recently served requester if that one's buckets have refilled completely (it is idle:
//! forgetting it loses nothing); otherwise the new address is refused (`requesters_full`).
//!
//! Nothing here panics, whatever the bytes, addresses or times; a `now` earlier than one
//! seen before counts as no time passed. Nothing allocates after
//! [`RerequestServer::new`].
//!
//! ```
//! use std::time::Instant;
//! use multipoint_dataplane::core::server::{RerequestServer, ServerConfig};
//! use multipoint_dataplane::core::store::{RetransmitStore, StoreConfig};
//! use multipoint_dataplane::wire::{pack_all, Packet, ReRequestRepr, Session};
//!
//! let session = Session::new("FEED1")?;
//! let mut store = RetransmitStore::new(&StoreConfig::default())?;
//! let msgs: [&[u8]; 2] = [b"one", b"two"];
//! store.append_packet(&pack_all(&session, 1, 1472, msgs)?[0]);
//!
//! let mut server = RerequestServer::new(session, ServerConfig::default())?;
//! let mut request = [0u8; 20];
//! ReRequestRepr { session, sequence: 2, count: 5 }.emit(&mut request)?;
//! let mut reply = [0u8; 1472];
//! let from = "127.0.0.1:5000".parse()?;
//! let len = server.handle_request(&request, from, Instant::now(), &store, &mut reply);
//! let packet = Packet::new_checked(&reply[..len.unwrap_or(0)])?;
//! assert_eq!(packet.messages().collect::<Vec<_>>(), [b"two"]);
//! assert_eq!(server.stats().replies, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::packetizer::ConfigError;
use super::store::{Answer, RetransmitStore};
use crate::wire::{ReRequest, ReRequestRepr, Session};

/// Nanounits per unit: bucket levels are kept in billionths of a reply or a byte, so that
/// refilling at `rate` per second adds exactly `rate` per nanosecond.
const NANO: u64 = 1_000_000_000;

/// No entry (the end of the list of requesters).
const NONE: u32 = u32::MAX;

/// How a [`RerequestServer`] limits what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Replies a second to one requesting address, on average.
    pub replies_per_second: u64,
    /// Replies one address may have at once after being quiet.
    pub reply_burst: u64,
    /// Reply bytes (whole datagrams, header included) a second to one address.
    pub bytes_per_second: u64,
    /// Reply bytes one address may have at once after being quiet.
    pub byte_burst: u64,
    /// Requesting addresses remembered at once (their entries are allocated up front).
    pub max_requesters: usize,
}

impl Default for ServerConfig {
    /// 1,000 replies a second (burst 100) and 2,000,000 bytes a second (burst 200,000) per
    /// address, 4,096 addresses. At 1,472-byte datagrams the reply bucket binds first
    /// (1,000 full replies are 1.47 MB); with jumbo datagrams the byte bucket does.
    fn default() -> ServerConfig {
        ServerConfig {
            replies_per_second: 1_000,
            reply_burst: 100,
            bytes_per_second: 2_000_000,
            byte_burst: 200_000,
            max_requesters: 4_096,
        }
    }
}

/// What a re-request server counted. Every request is counted once under `replies` or
/// under exactly one refusal, so `requests == replies + refused()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Datagrams handled.
    pub requests: u64,
    /// Requests answered with a reply.
    pub replies: u64,
    /// Messages in the replies.
    pub messages_served: u64,
    /// Bytes of the replies (whole datagrams).
    pub bytes_served: u64,
    /// Not a MoldUDP64 Request: not 20 bytes, or a range past the last sequence number
    /// (or a datagram whose source address the driver could not read).
    pub malformed: u64,
    /// A Request for another session.
    pub foreign_session: u64,
    /// A Request from sequence number 0, which no message has.
    pub sequence_zero: u64,
    /// A Request from a sequence number not sent yet.
    pub not_yet_sent: u64,
    /// A Request from a sequence number that fell out of the store.
    pub no_longer_stored: u64,
    /// Refused: the address had no reply token left.
    pub rate_limited: u64,
    /// Refused: the address's byte budget did not hold the first message asked for.
    pub bytes_limited: u64,
    /// Refused: a new address, and every remembered one was still busy.
    pub requesters_full: u64,
    /// Refused: the message asked for does not fit one reply datagram.
    pub too_large: u64,
    /// Replies the driver could not send (a subset of `replies`).
    pub reply_errors: u64,
    /// Receives that failed at the driver's socket (no request is counted for them).
    pub receive_errors: u64,
}

impl ServerStats {
    /// Requests answered with nothing, whatever the reason.
    pub fn refused(&self) -> u64 {
        self.malformed
            + self.foreign_session
            + self.sequence_zero
            + self.not_yet_sent
            + self.no_longer_stored
            + self.rate_limited
            + self.bytes_limited
            + self.requesters_full
            + self.too_large
    }

    /// Adds `other`'s counters to these (to total several servers).
    pub fn merge(&mut self, other: &ServerStats) {
        let ServerStats {
            requests,
            replies,
            messages_served,
            bytes_served,
            malformed,
            foreign_session,
            sequence_zero,
            not_yet_sent,
            no_longer_stored,
            rate_limited,
            bytes_limited,
            requesters_full,
            too_large,
            reply_errors,
            receive_errors,
        } = *other;
        self.requests += requests;
        self.replies += replies;
        self.messages_served += messages_served;
        self.bytes_served += bytes_served;
        self.malformed += malformed;
        self.foreign_session += foreign_session;
        self.sequence_zero += sequence_zero;
        self.not_yet_sent += not_yet_sent;
        self.no_longer_stored += no_longer_stored;
        self.rate_limited += rate_limited;
        self.bytes_limited += bytes_limited;
        self.requesters_full += requesters_full;
        self.too_large += too_large;
        self.reply_errors += reply_errors;
        self.receive_errors += receive_errors;
    }
}

/// One bucket's refill rate and size, in nanounits.
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Added per nanosecond (the rate per second).
    per_ns: u64,
    /// A full bucket.
    full: u64,
}

impl Rate {
    fn new(per_second: u64, burst: u64, what: &str) -> Result<Rate, ConfigError> {
        if per_second == 0 || burst == 0 {
            return Err(ConfigError(format!(
                "a re-request server needs {what} per second and a {what} burst of at least 1 \
                 (given {per_second} and {burst})"
            )));
        }
        let full = burst.checked_mul(NANO).ok_or_else(|| {
            ConfigError(format!(
                "a {what} burst of {burst} is too large (at most {})",
                u64::MAX / NANO
            ))
        })?;
        Ok(Rate {
            per_ns: per_second,
            full,
        })
    }

    /// `level` after `ns` nanoseconds of refilling.
    fn refill(&self, level: u64, ns: u64) -> u64 {
        level
            .saturating_add(ns.saturating_mul(self.per_ns))
            .min(self.full)
    }
}

/// A remembered requesting address.
#[derive(Debug, Clone, Copy)]
struct Requester {
    ip: IpAddr,
    /// Reply tokens, in nanoreplies, as of `at`.
    replies: u64,
    /// Reply bytes, in nanobytes, as of `at`.
    bytes: u64,
    at: Instant,
    /// The entry served next more recently, or `NONE`.
    newer: u32,
    /// The entry served next less recently, or `NONE`.
    older: u32,
}

/// Answers MoldUDP64 Requests for one session from a store. See the module docs.
#[derive(Debug)]
pub struct RerequestServer {
    session: Session,
    replies: Rate,
    bytes: Rate,
    max_requesters: usize,
    /// Entry of each remembered address (capacity reserved up front).
    by_ip: HashMap<IpAddr, u32>,
    /// The entries (capacity `max_requesters`, reserved up front).
    requesters: Vec<Requester>,
    /// The most and the least recently served entry, or `NONE`.
    newest: u32,
    oldest: u32,
    stats: ServerStats,
}

impl RerequestServer {
    /// A server for `session`, limited as `config` says; its table of requesters is
    /// allocated now.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a rate or burst of 0, a burst too large to count, or
    /// `max_requesters` of 0 or above 2^31.
    pub fn new(session: Session, config: ServerConfig) -> Result<RerequestServer, ConfigError> {
        let replies = Rate::new(config.replies_per_second, config.reply_burst, "replies")?;
        let bytes = Rate::new(config.bytes_per_second, config.byte_burst, "bytes")?;
        if config.max_requesters == 0 || config.max_requesters > 1 << 31 {
            return Err(ConfigError(format!(
                "max_requesters {} is outside 1..=2^31",
                config.max_requesters
            )));
        }
        let mut by_ip = HashMap::new();
        by_ip.reserve(config.max_requesters * 2);
        Ok(RerequestServer {
            session,
            replies,
            bytes,
            max_requesters: config.max_requesters,
            by_ip,
            requesters: Vec::with_capacity(config.max_requesters),
            newest: NONE,
            oldest: NONE,
            stats: ServerStats::default(),
        })
    }

    /// The session it answers for.
    pub fn session(&self) -> Session {
        self.session
    }

    /// Counters so far.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Addresses remembered now.
    pub fn requesters(&self) -> usize {
        self.requesters.len()
    }

    /// Handles one datagram that arrived from `source` at `now`: returns the length of
    /// the reply written at the start of `reply` (at most `reply.len()` bytes; give it the
    /// maximum datagram) to send back to `source`, or `None` when it is answered with
    /// nothing (and counted). See the module docs.
    pub fn handle_request(
        &mut self,
        payload: &[u8],
        source: SocketAddr,
        now: Instant,
        store: &RetransmitStore,
        reply: &mut [u8],
    ) -> Option<usize> {
        self.stats.requests += 1;
        let Ok(request) = ReRequestRepr::parse(&ReRequest::new_unchecked(payload)) else {
            self.stats.malformed += 1;
            return None;
        };
        if request.session != self.session {
            self.stats.foreign_session += 1;
            return None;
        }
        if request.sequence == 0 {
            self.stats.sequence_zero += 1;
            return None;
        }
        if request.sequence >= store.next() {
            self.stats.not_yet_sent += 1;
            return None;
        }
        if request.sequence < store.first() {
            self.stats.no_longer_stored += 1;
            return None;
        }
        let Some(entry) = self.entry(canonical_ip(source.ip()), now) else {
            self.stats.requesters_full += 1;
            return None;
        };
        let Some(requester) = self.requesters.get_mut(entry) else {
            self.stats.requesters_full += 1;
            return None;
        };
        if requester.replies < NANO {
            self.stats.rate_limited += 1;
            return None;
        }
        let budget = usize::try_from(requester.bytes / NANO).unwrap_or(usize::MAX);
        let room = reply.len().min(budget);
        let Some(buf) = reply.get_mut(..room) else {
            self.stats.bytes_limited += 1;
            return None;
        };
        match store.answer(&self.session, request.sequence, request.count, buf) {
            Answer::Written { len, messages } => {
                requester.replies -= NANO;
                requester.bytes = requester.bytes.saturating_sub(len as u64 * NANO);
                self.stats.replies += 1;
                self.stats.messages_served += u64::from(messages);
                self.stats.bytes_served += len as u64;
                Some(len)
            }
            Answer::TooLarge { needed } if needed <= reply.len() => {
                self.stats.bytes_limited += 1;
                None
            }
            Answer::TooLarge { .. } => {
                self.stats.too_large += 1;
                None
            }
            // Ruled out above; counted as what they are all the same.
            Answer::NotYetSent => {
                self.stats.not_yet_sent += 1;
                None
            }
            Answer::NoLongerStored => {
                self.stats.no_longer_stored += 1;
                None
            }
        }
    }

    /// The driver could not send the last reply [`handle_request`](Self::handle_request)
    /// gave (it stays counted as a reply, and its budget stays spent).
    pub fn handle_reply_failed(&mut self) {
        self.stats.reply_errors += 1;
    }

    /// A datagram arrived whose source address the driver could not read: it cannot be
    /// answered, and counts as a malformed request.
    pub fn handle_unaddressed(&mut self) {
        self.stats.requests += 1;
        self.stats.malformed += 1;
    }

    /// Receiving at the driver's socket failed.
    pub fn handle_receive_failed(&mut self) {
        self.stats.receive_errors += 1;
    }

    /// The entry of `ip`, its buckets refilled to `now` and moved to the front of the
    /// list: found, new, or taken over from the least recently served requester if that
    /// one is idle. `None` when the table is full and nobody is idle.
    fn entry(&mut self, ip: IpAddr, now: Instant) -> Option<usize> {
        if let Some(&entry) = self.by_ip.get(&ip) {
            let index = entry as usize;
            let (replies, bytes) = (self.replies, self.bytes);
            let requester = self.requesters.get_mut(index)?;
            let ns = elapsed_ns(requester.at, now);
            requester.replies = replies.refill(requester.replies, ns);
            requester.bytes = bytes.refill(requester.bytes, ns);
            requester.at = requester.at.max(now);
            self.touch(entry);
            return Some(index);
        }
        let fresh = Requester {
            ip,
            replies: self.replies.full,
            bytes: self.bytes.full,
            at: now,
            newer: NONE,
            older: NONE,
        };
        let entry = if self.requesters.len() < self.max_requesters {
            let entry = u32::try_from(self.requesters.len()).ok()?;
            self.requesters.push(fresh);
            entry
        } else {
            let entry = self.oldest;
            let oldest = *self.requesters.get(entry as usize)?;
            let ns = elapsed_ns(oldest.at, now);
            let idle = self.replies.refill(oldest.replies, ns) == self.replies.full
                && self.bytes.refill(oldest.bytes, ns) == self.bytes.full;
            if !idle {
                return None;
            }
            self.unlink(entry);
            self.by_ip.remove(&oldest.ip);
            *self.requesters.get_mut(entry as usize)? = fresh;
            entry
        };
        self.by_ip.insert(ip, entry);
        self.link_newest(entry);
        Some(entry as usize)
    }

    /// Moves `entry` to the front of the list.
    fn touch(&mut self, entry: u32) {
        if self.newest != entry {
            self.unlink(entry);
            self.link_newest(entry);
        }
    }

    /// Takes `entry` out of the list.
    fn unlink(&mut self, entry: u32) {
        let Some(&Requester { newer, older, .. }) = self.requesters.get(entry as usize) else {
            return;
        };
        match self.requesters.get_mut(newer as usize) {
            Some(n) => n.older = older,
            None => self.newest = older,
        }
        match self.requesters.get_mut(older as usize) {
            Some(o) => o.newer = newer,
            None => self.oldest = newer,
        }
    }

    /// Puts `entry` (not in the list) at its front.
    fn link_newest(&mut self, entry: u32) {
        let previous = self.newest;
        if let Some(r) = self.requesters.get_mut(entry as usize) {
            r.newer = NONE;
            r.older = previous;
        }
        match self.requesters.get_mut(previous as usize) {
            Some(p) => p.newer = entry,
            None => self.oldest = entry,
        }
        self.newest = entry;
    }
}

/// Nanoseconds from `then` to `now` (0 if `now` is earlier), saturating.
fn elapsed_ns(then: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(then).as_nanos()).unwrap_or(u64::MAX)
}

/// `ip`, an IPv4-mapped IPv6 address as its IPv4 address.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::store::StoreConfig;
    use crate::core::Clock;
    use crate::core::FakeClock;
    use crate::wire::{pack_all, Packet, PacketRepr};

    const DATAGRAM: usize = 1472;

    fn session() -> Session {
        Session::from_bytes(*b"SERVER    ")
    }

    /// A store of messages 1..=n, each 10 bytes of its low byte, 20 to a packet.
    fn store(n: u64, config: StoreConfig) -> RetransmitStore {
        let mut store = RetransmitStore::new(&config).unwrap_or_else(|e| panic!("{e}"));
        let msgs: Vec<Vec<u8>> = (1..=n).map(|s| vec![s as u8; 10]).collect();
        let mut next = 1;
        for chunk in msgs.chunks(20) {
            let packets = pack_all(&session(), next, DATAGRAM, chunk.iter().map(Vec::as_slice))
                .unwrap_or_else(|e| panic!("{e}"));
            for packet in packets {
                store.append_packet(&packet);
            }
            next += chunk.len() as u64;
        }
        store
    }

    fn request(session: Session, sequence: u64, count: u16) -> [u8; 20] {
        let mut buf = [0u8; 20];
        ReRequestRepr {
            session,
            sequence,
            count,
        }
        .emit(&mut buf)
        .unwrap_or_else(|e| panic!("{e}"));
        buf
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    struct Fixture {
        clock: FakeClock,
        server: RerequestServer,
        store: RetransmitStore,
        reply: Vec<u8>,
    }

    impl Fixture {
        fn new(config: ServerConfig) -> Fixture {
            Fixture {
                clock: FakeClock::new(),
                server: RerequestServer::new(session(), config).unwrap_or_else(|e| panic!("{e}")),
                store: store(300, StoreConfig::default()),
                reply: vec![0; DATAGRAM],
            }
        }

        fn ask(&mut self, from: &str, sequence: u64, count: u16) -> Option<PacketRepr> {
            self.raw(from, &request(session(), sequence, count))
        }

        fn raw(&mut self, from: &str, datagram: &[u8]) -> Option<PacketRepr> {
            let len = self.server.handle_request(
                datagram,
                addr(from),
                self.clock.now(),
                &self.store,
                &mut self.reply,
            )?;
            let packet = Packet::new_checked(&self.reply[..len]).unwrap_or_else(|e| panic!("{e}"));
            Some(PacketRepr::parse(&packet).unwrap_or_else(|e| panic!("{e}")))
        }
    }

    #[test]
    fn a_request_is_answered_with_the_stored_messages_from_its_sequence() {
        let mut f = Fixture::new(ServerConfig::default());
        let reply = f
            .ask("10.0.0.9:4000", 15, 10)
            .unwrap_or_else(|| panic!("no reply"));
        assert_eq!((reply.session, reply.sequence), (session(), 15));
        assert_eq!(
            reply.messages,
            (15..25u64).map(|s| vec![s as u8; 10]).collect::<Vec<_>>()
        );
        let zero = f
            .ask("10.0.0.9:4000", 99, 0)
            .unwrap_or_else(|| panic!("no reply"));
        assert_eq!(
            zero.messages,
            [vec![99u8; 10]],
            "a count of 0 is taken as 1"
        );
        let most = f
            .ask("10.0.0.9:4000", 1, u16::MAX)
            .unwrap_or_else(|| panic!("no reply"));
        assert_eq!(most.messages.len(), (DATAGRAM - 20) / 12, "as many as fit");
        assert_eq!(
            f.server.stats(),
            ServerStats {
                requests: 3,
                replies: 3,
                messages_served: 10 + 1 + 121,
                bytes_served: (20 + 120) + (20 + 12) + (20 + 121 * 12),
                ..ServerStats::default()
            }
        );
    }

    #[test]
    fn each_unanswerable_request_is_counted_under_its_reason() {
        let config = StoreConfig {
            messages: 50,
            bytes: 1 << 20,
        };
        let mut f = Fixture::new(ServerConfig::default());
        f.store = store(100, config);
        let from = "10.0.0.9:4000";
        assert!(f.raw(from, &[0; 19]).is_none());
        assert!(f.raw(from, &[0; 21]).is_none());
        let mut overflow = request(session(), u64::MAX - 1, 0);
        overflow[18..].copy_from_slice(&2u16.to_be_bytes());
        assert!(f.raw(from, &overflow).is_none());
        assert!(f
            .raw(from, &request(Session::from_bytes(*b"OTHER     "), 60, 1))
            .is_none());
        assert!(f.ask(from, 0, 1).is_none());
        assert!(f.ask(from, 101, 1).is_none());
        assert!(f.ask(from, u64::MAX - 5, 5).is_none());
        assert!(f.ask(from, 50, 1).is_none());
        assert!(f.ask(from, 51, 1).is_some());
        assert_eq!(
            f.server.stats(),
            ServerStats {
                requests: 9,
                replies: 1,
                messages_served: 1,
                bytes_served: 32,
                malformed: 3,
                foreign_session: 1,
                sequence_zero: 1,
                not_yet_sent: 2,
                no_longer_stored: 1,
                ..ServerStats::default()
            }
        );
        assert_eq!(f.server.requesters(), 1, "refused requests create no entry");
    }

    #[test]
    fn one_address_gets_its_burst_then_its_rate_whatever_its_ports() {
        let mut f = Fixture::new(ServerConfig::default());
        for port in 0..100u16 {
            assert!(f.ask(&format!("10.0.0.9:{}", 1000 + port), 1, 1).is_some());
        }
        assert!(f.ask("10.0.0.9:9999", 1, 1).is_none(), "the burst is spent");
        assert!(
            f.ask("[::ffff:10.0.0.9]:9999", 1, 1).is_none(),
            "the same address"
        );
        f.clock.advance(Duration::from_micros(999));
        assert!(
            f.ask("10.0.0.9:1000", 1, 1).is_none(),
            "not a whole token yet"
        );
        f.clock.advance(Duration::from_micros(1));
        assert!(f.ask("10.0.0.9:1000", 1, 1).is_some(), "1 ms refills one");
        assert!(f.ask("10.0.0.9:1000", 1, 1).is_none());
        assert!(
            f.ask("10.0.0.10:1000", 1, 1).is_some(),
            "another address is not held up"
        );
        let stats = f.server.stats();
        assert_eq!((stats.replies, stats.rate_limited), (102, 4));
        assert_eq!(stats.requests, stats.replies + stats.refused());
        assert_eq!(f.server.requesters(), 2);
    }

    #[test]
    fn the_byte_budget_cuts_replies_to_whole_messages_and_then_refuses() {
        let config = ServerConfig {
            byte_burst: 100,
            bytes_per_second: 1_000,
            ..ServerConfig::default()
        };
        let mut f = Fixture::new(config);
        // 100 bytes: a header and six 12-byte blocks (92); then 8 bytes are left.
        let reply = f
            .ask("10.0.0.9:1", 1, 50)
            .unwrap_or_else(|| panic!("no reply"));
        assert_eq!(reply.messages.len(), 6);
        assert!(f.ask("10.0.0.9:1", 7, 50).is_none());
        // 24 more bytes (24 ms at 1,000 a second) make 32: one message.
        f.clock.advance(Duration::from_millis(24));
        let reply = f
            .ask("10.0.0.9:1", 7, 50)
            .unwrap_or_else(|| panic!("no reply"));
        assert_eq!((reply.sequence, reply.messages.len()), (7, 1));
        let stats = f.server.stats();
        assert_eq!((stats.replies, stats.bytes_limited), (2, 1));
        assert_eq!(stats.bytes_served, 92 + 32);
    }

    #[test]
    fn a_message_larger_than_the_reply_buffer_is_too_large() {
        let mut f = Fixture::new(ServerConfig::default());
        f.reply.truncate(31);
        assert!(f.ask("10.0.0.9:1", 1, 1).is_none());
        assert_eq!(f.server.stats().too_large, 1);
    }

    #[test]
    fn a_full_table_gives_an_idle_entry_to_a_newcomer_and_refuses_when_none_is_idle() {
        let config = ServerConfig {
            max_requesters: 2,
            ..ServerConfig::default()
        };
        let mut f = Fixture::new(config);
        assert!(f.ask("10.0.0.1:1", 1, 1).is_some());
        assert!(f.ask("10.0.0.2:1", 1, 1).is_some());
        assert!(
            f.ask("10.0.0.3:1", 1, 1).is_none(),
            "both just spent a token"
        );
        // A token refills in 1 ms, and the bytes (32 of 200,000 at 2,000,000 a second) in
        // 16 µs: after 1 ms both are idle again; .1 is the least recently served.
        f.clock.advance(Duration::from_millis(1));
        assert!(f.ask("10.0.0.2:1", 1, 1).is_some(), ".2 is busy again");
        assert!(
            f.ask("10.0.0.3:1", 1, 1).is_some(),
            ".3 takes the entry of .1"
        );
        assert!(
            f.ask("10.0.0.1:1", 1, 1).is_none(),
            ".1 is forgotten; .2 and .3 busy"
        );
        f.clock.advance(Duration::from_millis(1));
        assert!(
            f.ask("10.0.0.1:1", 1, 100).is_some(),
            ".2 was idle: .1 is back, full"
        );
        let stats = f.server.stats();
        assert_eq!((stats.replies, stats.requesters_full), (5, 2));
        assert_eq!(f.server.requesters(), 2);
    }

    #[test]
    fn a_clock_that_goes_back_refills_nothing() {
        let mut f = Fixture::new(ServerConfig {
            reply_burst: 1,
            ..ServerConfig::default()
        });
        f.clock.advance(Duration::from_secs(1));
        assert!(f.ask("10.0.0.1:1", 1, 1).is_some());
        let earlier = f.clock.now() - Duration::from_millis(500);
        let req = request(session(), 1, 1);
        let got =
            f.server
                .handle_request(&req, addr("10.0.0.1:1"), earlier, &f.store, &mut f.reply);
        assert_eq!(got, None);
        assert_eq!(f.server.stats().rate_limited, 1);
    }

    #[test]
    fn merged_counters_add_up_and_bad_settings_are_refused() {
        let mut a = ServerStats {
            requests: 3,
            replies: 1,
            malformed: 2,
            ..ServerStats::default()
        };
        a.merge(&a.clone());
        assert_eq!((a.requests, a.replies, a.refused()), (6, 2, 4));
        for config in [
            ServerConfig {
                replies_per_second: 0,
                ..ServerConfig::default()
            },
            ServerConfig {
                byte_burst: 0,
                ..ServerConfig::default()
            },
            ServerConfig {
                byte_burst: u64::MAX,
                ..ServerConfig::default()
            },
            ServerConfig {
                max_requesters: 0,
                ..ServerConfig::default()
            },
        ] {
            assert!(
                RerequestServer::new(session(), config).is_err(),
                "{config:?}"
            );
        }
    }
}
