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
}

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
    /// recorded); otherwise pass 0.
    pub fn wants_clock(&self) -> bool {
        self.timestamps
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
        let c = &self.counters;
        let Ok(packet) = Packet::new_checked(bytes) else {
            c.malformed.add(1);
            return;
        };
        c.packets.add(1);
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
