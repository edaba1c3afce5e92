//! One subscription's receive state (sans-IO): the checked parse of every datagram, the
//! session filter, sequencing, gap and duplicate accounting, latency from payload stamps,
//! and the events its [`Handler`] sees.
//!
//! # How to drive it
//!
//! Feed in, in arrival order, every datagram received for the subscription with
//! [`handle_datagram`](ReceiveState::handle_datagram) (the bytes, what the receive said
//! about them, and the time when latency is recorded), and what else the backend
//! reported with [`handle_unreadable`](ReceiveState::handle_unreadable),
//! [`handle_rearm`](ReceiveState::handle_rearm) and
//! [`handle_receive_error`](ReceiveState::handle_receive_error). The state calls the
//! handler during `handle_datagram`: each message in order with its sequence number,
//! each [`Gap`] once, the end of session once. Everything else is counted
//! ([`stats`](ReceiveState::stats)): nothing is dropped silently.
//!
//! With a reorder window ([`ReceiveConfig::reorder_window`]), a data packet that arrives
//! ahead of a missing one is held for up to the window, so that the missing one can still
//! come first: a packet reordered within the window is delivered in order, neither a gap
//! nor a duplicate. A heartbeat or end of session that overtook a packet waits the same
//! way. Then call [`handle_timeout`](ReceiveState::handle_timeout) at
//! [`poll_timeout`](ReceiveState::poll_timeout) (and [`finish`](ReceiveState::finish) at
//! the end): a held packet whose time ran out goes on, and the gap before it is declared.
//! A wait runs out there and only there, so hand over everything that has arrived
//! before calling it: a straggler later in a long batch is still in time.
//! The window holds at most 1,024 packets and 2 MiB; when it is full, the oldest wait
//! ends at once.
//! Without a window (the default), nothing waits: a gap is declared when a later packet
//! shows it, and a straggler is a duplicate.
//!
//! It owns no socket and reads no clock; it never allocates after construction and never
//! panics, whatever the bytes.
//!
//! ```
//! use multipoint_dataplane::core::receive::{DatagramInfo, Handler, ReceiveConfig, ReceiveState};
//! use multipoint_dataplane::wire::{pack_all, Session};
//!
//! struct Seen(Vec<u64>);
//! impl Handler for Seen {
//!     fn on_message(&mut self, sequence: u64, _message: &[u8]) {
//!         self.0.push(sequence);
//!     }
//! }
//!
//! let session = Session::new("FEED1")?;
//! // Message 2 is lost on the way.
//! // 27-byte datagrams: one message each.
//! let packets = pack_all(&session, 1, 27, [&b"one"[..], b"two", b"three"])?;
//! let mut state = ReceiveState::new(&ReceiveConfig::default());
//! let mut seen = Seen(Vec::new());
//! for packet in [&packets[0], &packets[2]] {
//!     state.handle_datagram(packet, DatagramInfo::default(), 0, &mut seen);
//! }
//! assert_eq!(seen.0, [1, 3]);
//! assert_eq!((state.stats().gaps, state.stats().missing), (1, 1));
//! assert_eq!(state.session(), Some(session));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::reorder::Reorder;
use super::sequence::{Gap, SequenceTracker, StartAt, Verdict};
use crate::io::segments;
use crate::latency::{read_stamp, LatencyHistogram};
use crate::stats::{SubscriptionCounters, SubscriptionStats};
use crate::wire::{Packet, Session};

/// What a subscription calls for each message and event. On a shard it runs on the
/// shard's thread.
pub trait Handler: Send + 'static {
    /// A message with its sequence number. `message` borrows the receive buffer.
    fn on_message(&mut self, sequence: u64, message: &[u8]);
    /// Messages `gap.first_missing..gap.end()` were lost (they will not be delivered).
    fn on_gap(&mut self, gap: Gap) {
        let _ = gap;
    }
    /// The publisher ended the session.
    fn on_end_of_session(&mut self) {}
}

impl<F: FnMut(u64, &[u8]) + Send + 'static> Handler for F {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        self(sequence, message)
    }
}

impl Handler for Box<dyn Handler> {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        (**self).on_message(sequence, message)
    }
    fn on_gap(&mut self, gap: Gap) {
        (**self).on_gap(gap)
    }
    fn on_end_of_session(&mut self) {
        (**self).on_end_of_session()
    }
}

/// What a receive state follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveConfig {
    /// Follow only this session; `None`: the first session seen.
    pub session: Option<Session>,
    /// Where the stream starts (see [`StartAt`]).
    pub start: StartAt,
    /// Record one-way latency from a timestamp in each message's first 8 bytes
    /// ([`crate::latency::write_stamp`]).
    pub timestamps: bool,
    /// How long a packet that arrives ahead of a missing one is held for the missing one
    /// (see the module docs); zero, the default: not at all.
    pub reorder_window: Duration,
}

/// Most packets a reorder window holds at once (when it is full, the oldest wait ends).
const REORDER_PACKETS: usize = 1024;
/// Most bytes of packets a reorder window holds at once.
const REORDER_BYTES: usize = 2 << 20;

/// What the receive said about one datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatagramInfo {
    /// It was longer than the receive buffer (or its control messages did not fit).
    pub truncated: bool,
    /// The segment size when the kernel coalesced several datagrams (UDP GRO).
    pub gro_segment: Option<u16>,
    /// The socket's cumulative count of datagrams the kernel dropped (`SO_RXQ_OVFL`).
    pub kernel_drops: Option<u32>,
}

/// How far `ReceiveState::release_held` lets held packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upto {
    /// Those whose turn came: the next expected number reached them.
    Turn,
    /// Those too, and those whose wait ran out by `now` (the gaps before them declared).
    Expired,
    /// Every one.
    All,
}

/// One subscription's receive state. See the module docs.
#[derive(Debug)]
pub struct ReceiveState {
    tracker: SequenceTracker,
    counters: Arc<SubscriptionCounters>,
    /// The session the tracker follows, published once it is known.
    session: Arc<OnceLock<Session>>,
    /// Whether `session` is set (a plain flag, so the hot path reads no shared memory).
    session_known: bool,
    latency: Box<LatencyHistogram>,
    timestamps: bool,
    /// The reorder window in nanoseconds (0: none).
    window: u64,
    /// The packets held in the window (present when there is one).
    reorder: Option<Box<Reorder>>,
}

impl ReceiveState {
    /// A receive state for `config`, with its counters and an empty latency histogram.
    pub fn new(config: &ReceiveConfig) -> ReceiveState {
        let tracker = match config.session {
            Some(s) => SequenceTracker::with_session(*s.as_bytes(), config.start),
            None => SequenceTracker::new(config.start),
        };
        let session = Arc::new(OnceLock::new());
        if let Some(s) = config.session {
            let _ = session.set(s);
        }
        ReceiveState {
            tracker,
            counters: Arc::new(SubscriptionCounters::default()),
            session,
            session_known: config.session.is_some(),
            latency: Box::new(LatencyHistogram::new()),
            timestamps: config.timestamps,
            window: u64::try_from(config.reorder_window.as_nanos()).unwrap_or(u64::MAX),
            reorder: (!config.reorder_window.is_zero())
                .then(|| Box::new(Reorder::new(REORDER_PACKETS, REORDER_BYTES))),
        }
    }

    /// The counters and the session, as other threads read them while the state runs.
    pub(crate) fn shared(&self) -> (Arc<SubscriptionCounters>, Arc<OnceLock<Session>>) {
        (Arc::clone(&self.counters), Arc::clone(&self.session))
    }

    /// The counters now.
    pub fn stats(&self) -> SubscriptionStats {
        self.counters.snapshot()
    }

    /// The session followed: the one configured, or else the first one seen.
    pub fn session(&self) -> Option<Session> {
        self.session.get().copied()
    }

    /// The next sequence number to deliver (`None` for a late joiner that has seen
    /// nothing yet).
    pub fn next_expected(&self) -> Option<u64> {
        self.tracker.next_expected()
    }

    /// Whether [`handle_datagram`](Self::handle_datagram) needs the time (latency is
    /// recorded, or there is a reorder window); otherwise pass 0.
    pub fn wants_clock(&self) -> bool {
        self.timestamps || self.reorder.is_some()
    }

    /// Whether the state has a reorder window (and so timers: see
    /// [`poll_timeout`](Self::poll_timeout)).
    pub fn reorders(&self) -> bool {
        self.reorder.is_some()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is to be called next (latency clock,
    /// nanoseconds): the earliest time a held packet stops waiting; `None` when nothing
    /// is held.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.reorder.as_ref()?.deadline()
    }

    /// The time is `now`: held packets whose time ran out go on (the gaps before them are
    /// declared), with every held packet their turn lets go after them.
    pub fn handle_timeout<H: Handler + ?Sized>(&mut self, now: u64, handler: &mut H) {
        self.release_held(now, Upto::Expired, handler);
    }

    /// Lets every held packet go, in order (the gaps before them are declared): at the
    /// end of a subscription, so that nothing held is lost.
    pub fn finish<H: Handler + ?Sized>(&mut self, now: u64, handler: &mut H) {
        self.release_held(now, Upto::All, handler);
    }

    /// The latency recorded so far.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// Swaps the latency histogram for `fresh` (reset first, so no allocation happens
    /// here) and returns the old one.
    pub fn swap_latency(&mut self, mut fresh: Box<LatencyHistogram>) -> Box<LatencyHistogram> {
        fresh.reset();
        std::mem::swap(&mut self.latency, &mut fresh);
        fresh
    }

    /// The latency histogram, for the final report.
    pub fn into_latency(self) -> LatencyHistogram {
        *self.latency
    }

    /// Takes one received datagram (or GRO batch of datagrams): every MoldUDP64 packet in
    /// it is checked, filtered by session and sequenced, and `handler` sees what is new.
    /// `now_ns` is the receive time on the latency clock
    /// ([`crate::latency::now_ns`]), read only when [`wants_clock`](Self::wants_clock).
    pub fn handle_datagram<H: Handler + ?Sized>(
        &mut self,
        payload: &[u8],
        info: DatagramInfo,
        now_ns: u64,
        handler: &mut H,
    ) {
        let c = &self.counters;
        c.datagrams.add(1);
        if let Some(drops) = info.kernel_drops {
            c.kernel_drops.set(u64::from(drops));
        }
        if info.truncated {
            c.truncated.add(1);
            return;
        }
        if payload.is_empty() {
            // No header at all; the splitter below would yield no packet to count.
            c.malformed.add(1);
            return;
        }
        if info
            .gro_segment
            .is_some_and(|s| usize::from(s) < payload.len())
        {
            c.gro_batches.add(1);
        }
        for packet in segments(payload, info.gro_segment) {
            self.handle_packet(packet, now_ns, handler);
        }
    }

    /// A receive completion whose buffer could not be read.
    pub fn handle_unreadable(&mut self) {
        self.counters.malformed.add(1);
    }

    /// The receive had to be re-armed (a multishot receive ended).
    pub fn handle_rearm(&mut self) {
        self.counters.rearms.add(1);
    }

    /// A receive failed with `errno`.
    pub fn handle_receive_error(&mut self, errno: i32) {
        self.counters.receive_errors.add(1);
        tracing::debug!(errno, "receive error");
    }

    fn handle_packet<H: Handler + ?Sized>(&mut self, bytes: &[u8], now: u64, handler: &mut H) {
        let Ok(packet) = Packet::new_checked(bytes) else {
            self.counters.malformed.add(1);
            return;
        };
        self.counters.packets.add(1);
        if self.reorder.is_some() && self.waits(&packet) {
            if self.hold(bytes, &packet, now) {
                return;
            }
            // The window is full: the oldest wait ends now (everything held goes on, the
            // gap before it is declared), and this packet may wait in turn.
            self.release_held(now, Upto::All, handler);
            if self.waits(&packet) && self.hold(bytes, &packet, now) {
                return;
            }
        }
        self.apply(&packet, now, handler);
        if self.reorder.as_ref().is_some_and(|r| !r.is_empty()) {
            // Only turns here, no time: a long batch takes time to hand over, and the
            // straggler a held packet waits for may be later in that same batch. Waits
            // run out in handle_timeout, which the driver calls once it has handed over
            // everything that had arrived.
            self.release_held(now, Upto::Turn, handler);
        }
    }

    /// Holds `packet` (whose bytes are `bytes`) in the reorder window until the window
    /// has passed; returns whether there was room.
    fn hold(&mut self, bytes: &[u8], packet: &Packet<&[u8]>, now: u64) -> bool {
        let until = now.saturating_add(self.window);
        let first = packet.sequence();
        let held = self
            .reorder
            .as_mut()
            .is_some_and(|r| r.hold(bytes, first, until));
        if held {
            self.counters.reordered.add(1);
        }
        held
    }

    /// Whether a packet of the session followed arrived ahead of a missing one (and may
    /// wait for it in the reorder window): a data packet that starts beyond the next
    /// expected number, or a heartbeat or end of session that points beyond it (what it
    /// says is news only once what it overtook has come).
    fn waits(&self, packet: &Packet<&[u8]>) -> bool {
        let followed = self
            .tracker
            .session()
            .is_some_and(|s| s == *packet.session().as_bytes());
        followed
            && !self.tracker.ended()
            && self
                .tracker
                .next_expected()
                .is_some_and(|next| packet.sequence() > next)
    }

    /// Lets held packets go, in order, as far as `upto` says.
    fn release_held<H: Handler + ?Sized>(&mut self, now: u64, upto: Upto, handler: &mut H) {
        // Out of `self` while its packets are applied (which needs all of `self`).
        let Some(mut reorder) = self.reorder.take() else {
            return;
        };
        loop {
            let next = self.tracker.next_expected().unwrap_or(0);
            let due = match upto {
                Upto::All => reorder.first(),
                // A wait cannot run out at a time before every hold began.
                Upto::Turn => reorder.next_due(next, 0),
                Upto::Expired => reorder.next_due(next, now),
            };
            let Some(held) = due else {
                break;
            };
            self.apply(&Packet::new_unchecked(reorder.bytes(&held)), now, handler);
            reorder.release(&held);
        }
        self.reorder = Some(reorder);
    }

    /// Sequences one checked packet and tells `handler` what it brings.
    fn apply<H: Handler + ?Sized>(&mut self, packet: &Packet<&[u8]>, now: u64, handler: &mut H) {
        let c = &self.counters;
        let count = packet.count();
        let verdict =
            self.tracker
                .handle_packet(*packet.session().as_bytes(), packet.sequence(), count);
        if !self.session_known {
            if let Some(session) = self.tracker.session() {
                // Once per subscription: the tracker just locked onto its first session.
                let _ = self.session.set(Session::from_bytes(session));
                self.session_known = true;
            }
        }
        if let Some(gap) = verdict.gap() {
            c.gaps.add(1);
            c.missing.add(gap.count);
            handler.on_gap(gap);
        }
        match verdict {
            Verdict::Deliver { skip, .. } => {
                // new_checked guarantees sequence + count does not overflow, so neither
                // does first + i (a counting range would step past the last number and
                // could).
                let first = packet.sequence() + u64::from(skip);
                let (mut messages, mut bytes) = (0u64, 0u64);
                for (i, msg) in packet.messages().skip(usize::from(skip)).enumerate() {
                    let sequence = first + i as u64;
                    if self.timestamps {
                        if let Some(stamp) = read_stamp(msg) {
                            self.latency.record_since(stamp, now);
                        }
                    }
                    handler.on_message(sequence, msg);
                    messages += 1;
                    bytes += msg.len() as u64;
                }
                c.messages.add(messages);
                c.bytes.add(bytes);
                c.duplicates.add(u64::from(skip));
            }
            Verdict::Duplicate | Verdict::AfterEnd => {
                c.duplicates.add(u64::from(packet.message_count()))
            }
            Verdict::Heartbeat { .. } => c.heartbeats.add(1),
            Verdict::EndOfSession { .. } => {
                c.end_of_session.add(1);
                if c.end_of_session.get() == 1 {
                    handler.on_end_of_session();
                }
            }
            Verdict::OtherSession => c.other_session.add(1),
            Verdict::OutOfRange => c.malformed.add(1),
        }
    }
}

/// A [`ReceiveState`] that starts from sequence 1 and follows the first session.
impl Default for ReceiveState {
    fn default() -> ReceiveState {
        ReceiveState::new(&ReceiveConfig {
            start: StartAt::One,
            ..ReceiveConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{pack_all, write_heartbeat};

    /// What a handler saw: messages, then gaps (as first missing, count).
    #[derive(Default)]
    struct Seen {
        messages: Vec<u64>,
        gaps: Vec<(u64, u64)>,
    }

    impl Handler for Seen {
        fn on_message(&mut self, sequence: u64, _message: &[u8]) {
            self.messages.push(sequence);
        }
        fn on_gap(&mut self, gap: Gap) {
            self.gaps.push((gap.first_missing, gap.count));
        }
    }

    /// Packets 1..=5, one message each (27-byte datagrams hold one 5-byte message).
    fn five() -> Vec<Vec<u8>> {
        let session = Session::from_bytes(*b"REORDER   ");
        let msgs: Vec<[u8; 5]> = (1..=5u8).map(|i| [i; 5]).collect();
        pack_all(&session, 1, 27, msgs.iter().map(|m| &m[..])).unwrap_or_else(|e| panic!("{e}"))
    }

    fn windowed(ns: u64) -> ReceiveState {
        ReceiveState::new(&ReceiveConfig {
            reorder_window: Duration::from_nanos(ns),
            ..ReceiveConfig::default()
        })
    }

    fn feed(state: &mut ReceiveState, packet: &[u8], now: u64, seen: &mut Seen) {
        state.handle_datagram(packet, DatagramInfo::default(), now, seen);
    }

    #[test]
    fn a_packet_reordered_within_the_window_is_delivered_in_order_not_as_a_duplicate() {
        let p = five();
        let mut state = windowed(1_000);
        let mut seen = Seen::default();
        for (i, at) in [(0, 0), (2, 10), (3, 20), (1, 30), (4, 40)] {
            feed(&mut state, &p[i], at, &mut seen);
        }
        assert_eq!(seen.messages, [1, 2, 3, 4, 5]);
        assert!(seen.gaps.is_empty());
        let stats = state.stats();
        assert_eq!((stats.duplicates, stats.gaps, stats.reordered), (0, 0, 2));
        assert_eq!(state.poll_timeout(), None, "nothing held any more");
    }

    #[test]
    fn a_missing_packet_is_declared_when_the_window_runs_out_not_before() {
        let p = five();
        let mut state = windowed(1_000);
        let mut seen = Seen::default();
        feed(&mut state, &p[0], 0, &mut seen);
        feed(&mut state, &p[2], 100, &mut seen);
        feed(&mut state, &p[3], 200, &mut seen);
        assert_eq!(state.poll_timeout(), Some(1_100));
        state.handle_timeout(1_099, &mut seen);
        assert_eq!((&seen.messages[..], &seen.gaps[..]), (&[1][..], &[][..]));
        state.handle_timeout(1_100, &mut seen);
        assert_eq!(seen.gaps, [(2, 1)]);
        assert_eq!(seen.messages, [1, 3, 4], "4 went on with 3");
        // The straggler is old now.
        feed(&mut state, &p[1], 1_200, &mut seen);
        assert_eq!(state.stats().duplicates, 1);
    }

    #[test]
    fn a_wait_runs_out_only_at_a_timeout_so_a_straggler_later_in_the_batch_is_in_time() {
        let p = five();
        let mut state = windowed(1_000);
        let mut seen = Seen::default();
        feed(&mut state, &p[0], 0, &mut seen);
        feed(&mut state, &p[2], 10, &mut seen);
        // Handing over a long batch took longer than the window: 4 and then 2 come late
        // on the clock, but no timeout ran in between.
        feed(&mut state, &p[3], 5_000, &mut seen);
        feed(&mut state, &p[1], 5_010, &mut seen);
        assert_eq!(seen.messages, [1, 2, 3, 4]);
        assert!(seen.gaps.is_empty());
        assert_eq!(state.stats().duplicates, 0);
    }

    #[test]
    fn a_heartbeat_that_overtook_a_packet_waits_in_the_window_too() {
        let p = five();
        let mut state = windowed(1_000);
        let mut seen = Seen::default();
        feed(&mut state, &p[0], 0, &mut seen);
        feed(&mut state, &p[2], 10, &mut seen);
        let mut heartbeat = [0u8; 20];
        let session = Session::from_bytes(*b"REORDER   ");
        let len = write_heartbeat(&mut heartbeat, &session, 6).unwrap_or_else(|e| panic!("{e}"));
        feed(&mut state, &heartbeat[..len], 20, &mut seen);
        assert!(
            seen.gaps.is_empty(),
            "the heartbeat waits for 2 like 3 does"
        );
        feed(&mut state, &p[1], 30, &mut seen);
        assert_eq!(seen.messages, [1, 2, 3]);
        assert!(seen.gaps.is_empty(), "4 and 5 may still come");
        state.handle_timeout(1_020, &mut seen);
        assert_eq!(
            seen.gaps,
            [(4, 2)],
            "the heartbeat speaks when its wait runs out"
        );
        assert_eq!(state.stats().heartbeats, 1);
    }

    #[test]
    fn a_full_window_ends_the_oldest_wait_and_keeps_what_it_held() {
        let p = five();
        let mut state = windowed(1_000_000);
        state.reorder = Some(Box::new(Reorder::new(2, 1024)));
        let mut seen = Seen::default();
        feed(&mut state, &p[0], 0, &mut seen);
        // 2 is missing: 3 and 4 wait, and 5 finds the window full.
        for i in [2, 3, 4] {
            feed(&mut state, &p[i], 10, &mut seen);
        }
        assert_eq!(seen.messages, [1, 3, 4, 5], "nothing held is lost");
        assert_eq!(seen.gaps, [(2, 1)], "only what is really missing");
        assert_eq!(state.stats().reordered, 2);
    }

    #[test]
    fn finishing_lets_everything_held_go_and_without_a_window_nothing_waits() {
        let p = five();
        let mut state = windowed(1_000_000);
        let mut seen = Seen::default();
        feed(&mut state, &p[0], 0, &mut seen);
        feed(&mut state, &p[4], 10, &mut seen);
        assert_eq!(seen.messages, [1]);
        state.finish(20, &mut seen);
        assert_eq!(
            (&seen.messages[..], &seen.gaps[..]),
            (&[1, 5][..], &[(2, 3)][..])
        );

        let mut plain = ReceiveState::default();
        let mut seen = Seen::default();
        assert!(!plain.wants_clock() && !plain.reorders());
        feed(&mut plain, &p[0], 0, &mut seen);
        feed(&mut plain, &p[2], 0, &mut seen);
        feed(&mut plain, &p[1], 0, &mut seen);
        assert_eq!(seen.messages, [1, 3]);
        assert_eq!(seen.gaps, [(2, 1)]);
        assert_eq!(plain.stats().duplicates, 1);
    }
}
