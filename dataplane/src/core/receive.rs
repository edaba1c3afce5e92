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
//! # Recovery
//!
//! With [`ReceiveConfig::recovery`] a gap is not lost at once: the missing range is
//! asked for by MoldUDP64 re-request (see [`crate::core::recovery`] for how and when),
//! and the server's replies, handed to [`handle_reply`](ReceiveState::handle_reply),
//! fill it. The driver sends what [`poll_transmit`](ReceiveState::poll_transmit) gives
//! (from the socket it reads the replies on) and calls
//! [`handle_timeout`](ReceiveState::handle_timeout) at
//! [`poll_timeout`](ReceiveState::poll_timeout). Two ways to deliver:
//!
//! - **as they come** (the default): live messages at once; a recovered one (or one that
//!   straggled in late on the stream) when it arrives, through
//!   [`Handler::on_recovered`]; the end of session is heard once nothing is missing any
//!   more. A heartbeat or end of session that reveals a loss at the tail of the stream
//!   has it asked for too (the end waits for that, or for its repeat).
//! - **in order** ([`RecoveryConfig::in_order`]): packets behind a gap wait in the
//!   reorder window (up to [`RecoveryConfig::hold_bytes`]) until it is filled, and
//!   recovered messages come through [`Handler::on_message`] in their place.
//!
//! A range still missing at its deadline is given up: [`Handler::on_gap`], counted in
//! `missing` and `gaps_given_up`. Counters: `requests`, `retries`, `replies`,
//! `recovered`, and the replies dropped (`reply_foreign_source`: from anyone but the
//! server; `reply_unasked`: answering nothing still asked); recovery times in
//! [`recovery_times`](ReceiveState::recovery_times).
//!
//! # What it trusts
//!
//! MoldUDP64 carries no authentication, and anyone who can reach the port can send a
//! datagram naming the session. So the state trusts only what it can see:
//!
//! - **One sender.** A stream is bound to one session from one sender (source address
//!   and port, as the backend reports it in [`DatagramInfo::source`]). The sender is
//!   named ([`ReceiveConfig::sender`] with its port: a rooted leaf's root), or learned at
//!   the *lock*: a stream that names no session locks onto the first sender that sends
//!   [`DEFAULT_LOCK_AFTER`] packets following on from each other (each starting where the
//!   one before ended, or a little further), so that a stranger's forgery sent first does
//!   not capture it; one that names its session locks at its first packet (see
//!   [`ReceiveConfig::lock_after`]). Packets before the lock are held (for 4 senders at a
//!   time, 16 packets and 128 KiB each) and replayed at the lock, so nothing the real
//!   sender sent first is lost. From then on, packets of the session from any other
//!   sender count as `foreign_source` and never touch the stream's state;
//!   [`session`](ReceiveState::session) and [`sender`](ReceiveState::sender) say what it
//!   locked onto.
//! - **No blind jumps.** A data packet or heartbeat pointing more than the sequence window
//!   ([`DEFAULT_SEQUENCE_WINDOW`]) ahead of the next expected number is held as
//!   *suspect* (one at a time) and followed only when the sender confirms it: its next
//!   packet goes on from there. If the stream goes on from where it was instead, the
//!   suspect is dropped and counted (`suspect`). An end of session is honoured only at the
//!   next expected number; one ahead of it (the packets before it lost) waits until they
//!   come or the end is repeated, and one before it (an end the stream has already passed)
//!   is counted as suspect and ignored. Sequence 0 (MoldUDP64 numbers from 1) is
//!   malformed, and so is a data packet whose messages would run past 2^64 - 1. So a
//!   jump the sender did not confirm can claim at most the window's worth of missing
//!   messages.
//!
//! It owns no socket and reads no clock; it never panics, whatever the bytes, and never
//! allocates after construction (except once to publish why its shard failed,
//! [`handle_failure`](ReceiveState::handle_failure)).
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
//! // The session is named: the stream is bound to the first sender of it.
//! let mut state = ReceiveState::new(&ReceiveConfig {
//!     session: Some(session),
//!     ..ReceiveConfig::default()
//! });
//! let mut seen = Seen(Vec::new());
//! for packet in [&packets[0], &packets[2]] {
//!     state.handle_datagram(packet, DatagramInfo::default(), 0, &mut seen);
//! }
//! assert_eq!(seen.0, [1, 3]);
//! assert_eq!((state.stats().gaps, state.stats().missing), (1, 1));
//! assert_eq!(state.session(), Some(session));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::lines::{Change, Line, LineStats, Lines, LinesConfig, SharedLines};
use super::lock::Lock;
use super::recovery::{Recovery, RecoveryConfig};
use super::reorder::Reorder;
use super::sequence::{Gap, SequenceTracker, StartAt, Verdict};
use crate::core::stamps::{KernelLatency, RxStamp, RxStamps};
use crate::io::{canonical, segments};
use crate::latency::{read_stamp, LatencyHistogram};
use crate::stats::{SubscriptionCounters, SubscriptionStats};
use crate::wire::{Packet, Session, END_OF_SESSION_COUNT, HEARTBEAT_COUNT};

/// What a subscription calls for each message and event. On a shard it runs on the
/// shard's thread.
pub trait Handler: Send + 'static {
    /// A message with its sequence number. `message` borrows the receive buffer.
    fn on_message(&mut self, sequence: u64, message: &[u8]);
    /// A message that was missing and came late, recovered by re-request or straggling
    /// in after later ones (only when recovery delivers as messages come, see
    /// [`RecoveryConfig::in_order`]: in order, recovered messages come through
    /// [`on_message`](Self::on_message) in their place). By default the same as
    /// `on_message`.
    fn on_recovered(&mut self, sequence: u64, message: &[u8]) {
        self.on_message(sequence, message)
    }
    /// Messages `gap.first_missing..gap.end()` were lost for good (they will not be
    /// delivered). With recovery, that is once they could not be recovered by their
    /// deadline.
    fn on_gap(&mut self, gap: Gap) {
        let _ = gap;
    }
    /// The publisher ended the session.
    fn on_end_of_session(&mut self) {}
    /// With two lines ([`ReceiveConfig::lines`]): `line` went down (`up` false: silent
    /// for [`LinesConfig::silence`] while the other line brought packets) or came up
    /// again (`up` true: it brought a packet).
    fn on_line(&mut self, line: Line, up: bool) {
        let _ = (line, up);
    }
    /// The shard serving the subscription failed (`reason` says how: its receive backend
    /// kept failing, or its thread panicked) and receives nothing more for it. The
    /// subscription's [`failure`](crate::Subscription::failure) and its stats
    /// (`shard_failures`) say the same; closing it still gives the handler back.
    fn on_failure(&mut self, reason: &str) {
        let _ = reason;
    }
    /// Called on the shard after each of its turns (and before the subscription is
    /// closed): a handler that hands events on in batches (such as a
    /// [poll ring](crate::subscribe::ring)) publishes them here; one with nothing new
    /// should return at once. By default nothing.
    fn flush(&mut self) {}
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
    fn on_recovered(&mut self, sequence: u64, message: &[u8]) {
        (**self).on_recovered(sequence, message)
    }
    fn on_gap(&mut self, gap: Gap) {
        (**self).on_gap(gap)
    }
    fn on_end_of_session(&mut self) {
        (**self).on_end_of_session()
    }
    fn on_line(&mut self, line: Line, up: bool) {
        (**self).on_line(line, up)
    }
    fn on_failure(&mut self, reason: &str) {
        (**self).on_failure(reason)
    }
    fn flush(&mut self) {
        (**self).flush()
    }
}

/// What a receive state follows, and how far it trusts what it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveConfig {
    /// Follow only this session; `None`: the session of the sender the stream locks onto.
    pub session: Option<Session>,
    /// Follow only this sender: its address and port, or, with port 0, any port of that
    /// address (the port is then learned at the lock). `None`: the sender is learned at
    /// the lock (see [`lock_after`](Self::lock_after)).
    pub sender: Option<SocketAddr>,
    /// Where the stream starts (see [`StartAt`]).
    pub start: StartAt,
    /// Record one-way latency from a timestamp in each message's first 8 bytes
    /// ([`crate::latency::write_stamp`]).
    pub timestamps: bool,
    /// How long a packet that arrives ahead of a missing one is held for the missing one
    /// (see the module docs); zero, the default: not at all.
    pub reorder_window: Duration,
    /// How far ahead of the next expected number a data packet or heartbeat may point and
    /// still be followed at once; one further ahead is held as suspect until the sender
    /// confirms it (see the module docs). At least 1; default
    /// [`DEFAULT_SEQUENCE_WINDOW`].
    pub sequence_window: u64,
    /// How many packets that follow on from each other a sender must send before the
    /// stream locks onto it (1 to 16). 0, the default: [`DEFAULT_LOCK_AFTER`] when no
    /// session is named, 1 (its first packet) when one is. A sender named with its port
    /// is locked onto at its first packet whatever this says. The packets before the
    /// lock are held and delivered at the lock, so a stream that locks after 3 packets
    /// delivers its first message only when its third packet arrives.
    pub lock_after: u8,
    /// Recover lost messages by re-request from the publisher's server (see
    /// [`crate::core::recovery`]); `None`, the default: a gap is lost at once.
    pub recovery: Option<RecoveryConfig>,
    /// Record wire→application latency from the kernel's receive stamp of each datagram
    /// ([`DatagramInfo::kernel_stamp`], see [`crate::core::stamps`]).
    pub kernel_stamps: bool,
    /// Arbitrate between two lines of the stream, A and B (see the module docs and
    /// [`crate::core::lines`]); feed line B's datagrams with
    /// [`handle_line_datagram`](ReceiveState::handle_line_datagram). `None`, the default:
    /// one line.
    pub lines: Option<LinesConfig>,
}

/// The default [`ReceiveConfig::sequence_window`]: 2^30 (1,073,741,824) numbers. That is
/// more than 2.7 s of a 10 GbE line filled with the smallest possible messages (3 bytes
/// each with their length, 484 to a 1,500-byte frame: about 393 million a second), and
/// minutes of any real feed or of our own publisher (about 20 million a second on the
/// development machine), so a real sender never needs confirming, short of a long
/// outage; and a forged jump that is followed at once can claim at most this many
/// missing messages.
pub const DEFAULT_SEQUENCE_WINDOW: u64 = 1 << 30;

/// How many packets that follow on from each other lock a stream that names no session
/// ([`ReceiveConfig::lock_after`] 0): three (at worst two heartbeat intervals on an idle
/// stream), so that a stranger's single forgery never captures it.
pub const DEFAULT_LOCK_AFTER: u8 = 3;

impl Default for ReceiveConfig {
    fn default() -> ReceiveConfig {
        ReceiveConfig {
            session: None,
            sender: None,
            start: StartAt::One,
            timestamps: false,
            reorder_window: Duration::ZERO,
            sequence_window: DEFAULT_SEQUENCE_WINDOW,
            lock_after: 0,
            recovery: None,
            kernel_stamps: false,
            lines: None,
        }
    }
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
    /// The segment size when the kernel coalesced several datagrams (UDP GRO); 0 or one
    /// at least the payload's length: not coalesced.
    pub gro_segment: Option<u16>,
    /// The socket's cumulative count of datagrams the kernel dropped (`SO_RXQ_OVFL`).
    pub kernel_drops: Option<u32>,
    /// Where it came from (the receive's source address); `None`: not known, which never
    /// matches a named [`ReceiveConfig::sender`].
    pub source: Option<SocketAddr>,
    /// The kernel's receive stamp and the handler's clock (read only with
    /// [`ReceiveConfig::kernel_stamps`]).
    pub kernel_stamp: RxStamp,
}

/// How far `ReceiveState::release_held` lets held packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upto {
    /// Those whose turn came: the next expected number reached them.
    Turn,
    /// The lowest-numbered one whatever its time (the gap before it is declared), then
    /// those whose turn that lets come: the oldest wait ends.
    Oldest,
    /// Those too, and those whose wait ran out by `now` (the gaps before them declared).
    Expired,
    /// Every one.
    All,
}

/// What a subscription's receive state publishes for other threads once it knows it.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// The session the stream is bound to.
    pub(crate) session: OnceLock<Session>,
    /// The sender the stream is bound to (when the receive said where packets came from).
    pub(crate) sender: OnceLock<SocketAddr>,
    /// Why the shard serving the subscription stopped receiving for it, if it did.
    pub(crate) failure: OnceLock<String>,
    /// With kernel stamps: what the interface said about hardware stamps.
    pub(crate) hardware: OnceLock<String>,
}

/// The one session and sender a stream is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bound {
    session: [u8; 10],
    source: Option<SocketAddr>,
}

/// The packet held as suspect: one that pointed too far ahead (see the module docs).
#[derive(Debug)]
struct Suspect {
    buf: Box<[u8]>,
    /// Its length; 0: none is held.
    len: usize,
    /// When it arrived.
    at: u64,
    /// Where it came from ([`ReceiveState::origin`]).
    origin: u8,
}

/// Room for the largest UDP payload.
const SUSPECT_BYTES: usize = 1 << 16;

/// One subscription's receive state. See the module docs.
#[derive(Debug)]
pub struct ReceiveState {
    tracker: SequenceTracker,
    counters: Arc<SubscriptionCounters>,
    published: Arc<Published>,
    /// The session and sender the stream follows, once locked.
    bound: Option<Bound>,
    /// What the configuration names (the sender's address canonical, port 0: any).
    want_session: Option<[u8; 10]>,
    want_sender: Option<SocketAddr>,
    /// The senders before the lock (present until then when the lock waits for several
    /// packets).
    lock: Option<Box<Lock>>,
    start: StartAt,
    /// The sequence window (see [`ReceiveConfig::sequence_window`]).
    window: u64,
    suspect: Suspect,
    latency: Box<LatencyHistogram>,
    timestamps: bool,
    /// Wire→application, with kernel stamps.
    kernel: Option<Box<RxStamps>>,
    /// The wire→application latency of the datagram being handled, which every message
    /// it delivers gets (`None` outside `handle_line_datagram`, and while held packets
    /// go: they came with another datagram).
    wire: Option<u64>,
    /// The reorder window in nanoseconds (0: none).
    reorder_ns: u64,
    /// The packets held in the reorder window (present when there is one, and when
    /// recovery delivers in order: then packets behind a gap wait in it).
    reorder: Option<Box<Reorder>>,
    /// The book of missing ranges (present with recovery).
    recovery: Option<Box<Recovery>>,
    /// Recovery delivers in order.
    in_order: bool,
    /// In order: one past the highest number any packet of the stream reached.
    highest: Option<u64>,
    /// As they come: an end of session waits in the suspect place for recovery to finish
    /// with the gap it revealed.
    end_waits: bool,
    /// The end of session came, and the handler hears it once recovery is done.
    end_deferred: bool,
    /// Where the packet being taken in (or let go from a hold) came from: a line
    /// ([`ORIGIN_A`], [`ORIGIN_B`]) or a reply ([`ORIGIN_REPLY`]).
    origin: u8,
    /// With two lines: their books.
    lines: Option<Box<Lines>>,
    /// With two lines: packets one line brought ahead of a missing one, waiting for the
    /// other line (see [`LinesConfig::wait`]).
    line_wait: Option<Box<Reorder>>,
    /// With two lines: one past the highest number any packet that passed the line wait
    /// reached.
    frontier: u64,
}

/// [`ReceiveState::origin`]: line A (the only line without [`ReceiveConfig::lines`]).
const ORIGIN_A: u8 = 0;
/// [`ReceiveState::origin`]: line B.
const ORIGIN_B: u8 = 1;
/// [`ReceiveState::origin`]: a reply of the re-request server.
const ORIGIN_REPLY: u8 = 2;

/// Which hold [`ReceiveState::release_held`] lets packets go from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The line wait: packets go on into the stream ([`ReceiveState::take_in`]).
    Lines,
    /// The reorder window (or in-order recovery's hold): packets are applied.
    Hold,
}

/// Packets the hold of an in-order recovery has room for, per byte of it.
const HOLD_BYTES_PER_PACKET: usize = 512;

impl ReceiveState {
    /// A receive state for `config`, with its counters and an empty latency histogram.
    pub fn new(config: &ReceiveConfig) -> ReceiveState {
        let want_session = config.session.map(|s| *s.as_bytes());
        let want_sender = config.sender.map(canonical);
        let published = Arc::new(Published::default());
        let lock_after = match config.lock_after {
            0 if want_session.is_none() => DEFAULT_LOCK_AFTER,
            0 => 1,
            n => n,
        };
        let mut bound = None;
        let mut lock = None;
        match (want_session, want_sender) {
            (Some(session), Some(sender)) if sender.port() != 0 => {
                bound = Some(Bound {
                    session,
                    source: Some(sender),
                });
                let _ = published.sender.set(sender);
            }
            (_, Some(sender)) if sender.port() != 0 => {}
            _ if lock_after > 1 => lock = Some(Box::new(Lock::new(lock_after))),
            _ => {}
        }
        if let Some(s) = config.session {
            let _ = published.session.set(s);
        }
        let tracker = match bound {
            Some(b) => SequenceTracker::with_session(b.session, config.start),
            None => SequenceTracker::new(config.start),
        };
        let window_ns = u64::try_from(config.reorder_window.as_nanos()).unwrap_or(u64::MAX);
        let in_order = config.recovery.is_some_and(|r| r.in_order);
        // In order, packets behind a gap wait in the reorder window for as long as the
        // gap may be recovered.
        let (reorder_ns, reorder) = match config.recovery.filter(|r| r.in_order) {
            Some(r) => {
                let deadline = u64::try_from(r.deadline.as_nanos()).unwrap_or(u64::MAX);
                let bytes = r.hold_bytes.max(1 << 16);
                let packets = (bytes / HOLD_BYTES_PER_PACKET).max(REORDER_PACKETS);
                (
                    window_ns.max(deadline),
                    Some(Box::new(Reorder::new(packets, bytes))),
                )
            }
            None if window_ns > 0 => (
                window_ns,
                Some(Box::new(Reorder::new(REORDER_PACKETS, REORDER_BYTES))),
            ),
            None => (0, None),
        };
        ReceiveState {
            tracker,
            counters: Arc::new(SubscriptionCounters::default()),
            published,
            bound,
            want_session,
            want_sender,
            lock,
            start: config.start,
            window: config.sequence_window.max(1),
            suspect: Suspect {
                buf: vec![0; SUSPECT_BYTES].into_boxed_slice(),
                len: 0,
                at: 0,
                origin: ORIGIN_A,
            },
            latency: Box::new(LatencyHistogram::new()),
            timestamps: config.timestamps,
            kernel: config.kernel_stamps.then(Box::<RxStamps>::default),
            wire: None,
            reorder_ns,
            reorder,
            recovery: config.recovery.map(|r| Box::new(Recovery::new(&r))),
            in_order,
            highest: None,
            end_waits: false,
            end_deferred: false,
            origin: ORIGIN_A,
            lines: config
                .lines
                .map(|l| Box::new(Lines::new(&l, config.sender.map(canonical)))),
            line_wait: config
                .lines
                .map(|_| Box::new(Reorder::new(REORDER_PACKETS, REORDER_BYTES))),
            frontier: 0,
        }
    }

    /// The counters and what the state publishes, as other threads read them while the
    /// state runs.
    pub(crate) fn shared(&self) -> (Arc<SubscriptionCounters>, Arc<Published>) {
        (Arc::clone(&self.counters), Arc::clone(&self.published))
    }

    /// With two lines, their counters as other threads read them.
    pub(crate) fn shared_lines(&self) -> Option<SharedLines> {
        self.lines.as_ref().map(|l| l.shared())
    }

    /// With two lines, each line's counters now (A, then B).
    pub fn line_stats(&self) -> Option<[LineStats; 2]> {
        self.lines.as_ref().map(|l| l.stats())
    }

    /// With two lines, how far behind the other line `line` ran: for each data packet
    /// both brought, the time from the other line's copy to this line's (0 when this
    /// line's came first), in nanoseconds.
    pub fn line_behind(&self, line: Line) -> Option<LatencyHistogram> {
        self.lines.as_ref().map(|l| l.behind(line))
    }

    /// The counters now.
    pub fn stats(&self) -> SubscriptionStats {
        self.counters.snapshot()
    }

    /// The session followed: the one configured, or else the one of the sender the stream
    /// locked onto; `None` before the lock.
    pub fn session(&self) -> Option<Session> {
        self.published.session.get().copied()
    }

    /// The sender the stream is bound to: the one configured with its port, or the one it
    /// locked onto (when the receive said where packets came from); `None` before.
    pub fn sender(&self) -> Option<SocketAddr> {
        self.published.sender.get().copied()
    }

    /// Whether the stream is bound to its session and sender yet.
    pub fn locked(&self) -> bool {
        self.bound.is_some()
    }

    /// The next sequence number to deliver (`None` for a late joiner that has seen
    /// nothing yet).
    pub fn next_expected(&self) -> Option<u64> {
        self.tracker.next_expected()
    }

    /// Whether [`handle_datagram`](Self::handle_datagram) needs the time (latency is
    /// recorded, or there is a reorder window); otherwise pass 0.
    pub fn wants_clock(&self) -> bool {
        self.timestamps || self.has_timers()
    }

    /// Whether [`handle_datagram`](Self::handle_datagram) needs
    /// [`DatagramInfo::kernel_stamp`] filled in: the kernel's stamp, and `CLOCK_REALTIME`
    /// read just before (and before the latency clock, so that wire→application never
    /// exceeds the end-to-end latency of the same message).
    pub fn wants_realtime(&self) -> bool {
        self.kernel.is_some()
    }

    /// The wire→application latency recorded so far (`None` without
    /// [`ReceiveConfig::kernel_stamps`]).
    pub fn kernel_latency(&self) -> Option<&KernelLatency> {
        self.kernel.as_ref().map(|k| &*k.latency)
    }

    /// Swaps the wire→application figures for `fresh` (emptied first, so that nothing
    /// is allocated here) and returns them; `None` (and `fresh` dropped) without kernel
    /// stamps. Their `hardware` is left empty (see
    /// [`hardware_report`](Self::hardware_report)).
    pub fn swap_kernel_latency(
        &mut self,
        mut fresh: Box<KernelLatency>,
    ) -> Option<Box<KernelLatency>> {
        let k = self.kernel.as_mut()?;
        fresh.wire_to_app.reset();
        fresh.stats = Default::default();
        fresh.hardware.clear();
        if let Some(mirror) = k.latency.wire_to_app.take_mirror() {
            fresh.wire_to_app.mirror_to(mirror);
        }
        std::mem::swap(&mut k.latency, &mut fresh);
        Some(fresh)
    }

    /// Counts every wire→application latency recorded from now on in `mirror` too, a
    /// histogram of the counters file ([`crate::stat`]); nothing without kernel stamps.
    /// It moves along when the figures are swapped.
    pub fn mirror_kernel_latency(&mut self, mirror: crate::stat::Histogram) {
        if let Some(k) = self.kernel.as_mut() {
            k.latency.wire_to_app.mirror_to(mirror);
        }
    }

    /// What the query of the interface's hardware timestamping said, once the
    /// subscription set it up (the state's own [`KernelLatency::hardware`] stays empty, so
    /// that the shard never copies the text).
    pub fn hardware_report(&self) -> Option<&str> {
        self.published.hardware.get().map(String::as_str)
    }

    /// Sets what the hardware query said, for the report.
    pub(crate) fn set_hardware_report(&mut self, report: String) {
        let _ = self.published.hardware.set(report);
    }

    /// Whether the state has timers (a reorder window, or recovery: see
    /// [`poll_timeout`](Self::poll_timeout)).
    pub fn has_timers(&self) -> bool {
        self.reorder.is_some() || self.recovery.is_some() || self.lines.is_some()
    }

    /// Whether the state recovers lost messages by re-request (and so has requests to
    /// send: see [`poll_transmit`](Self::poll_transmit)).
    pub fn recovers(&self) -> bool {
        self.recovery.is_some()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is to be called next (latency clock,
    /// nanoseconds): the earliest time a held packet stops waiting, a request is due or
    /// a missing range is given up; `None` when nothing waits.
    pub fn poll_timeout(&self) -> Option<u64> {
        let held = self.reorder.as_ref().and_then(|r| r.deadline());
        let asked = self.recovery.as_ref().and_then(|r| r.poll_timeout());
        let waiting = self.line_wait.as_ref().and_then(|r| r.deadline());
        [held, asked, waiting].into_iter().flatten().min()
    }

    /// The time is `now`: held packets whose time ran out go on (the gaps before them are
    /// declared), with every held packet their turn lets go after them; missing ranges
    /// whose deadline passed are given up. Requests that fell due are for
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn handle_timeout<H: Handler + ?Sized>(&mut self, now: u64, handler: &mut H) {
        self.release_held(Stage::Lines, now, Upto::Expired, handler);
        self.release_held(Stage::Hold, now, Upto::Expired, handler);
        if let Some(rec) = self.recovery.as_mut() {
            let c = &self.counters;
            if self.in_order {
                // In order, a gap is given up when the packets held behind it stop
                // waiting (just done, at the same deadline): the tracker then declares
                // it. What is left has nothing behind it: stop asking.
                rec.expire(now, &mut |_, _| {});
            } else {
                rec.expire(now, &mut |first, end| lost(c, handler, first, end));
            }
        }
        self.recovery_moved(handler);
    }

    /// The next request to send, if one is due at `now`: written into `buf` (at least
    /// 20 bytes), its length and where it goes (the server; send it from the socket the
    /// replies are read from, and hand them to [`handle_reply`](Self::handle_reply)).
    /// Call it after every `handle_*` until it says `None`.
    pub fn poll_transmit(&mut self, now: u64, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let rec = self.recovery.as_mut()?;
        let session = Session::from_bytes(self.bound?.session);
        let sent = rec.poll_request(session, now, buf);
        if sent.is_some() {
            let counts = rec.counts();
            self.counters.requests.set(counts.requests);
            self.counters.retries.set(counts.retries);
        }
        sent
    }

    /// Recovery times so far (gap seen → gap filled, per missing range as it was asked
    /// for), with recovery.
    pub fn recovery_times(&self) -> Option<&LatencyHistogram> {
        self.recovery.as_ref().map(|r| r.times())
    }

    /// The retransmission timeout recovery uses now (adapted to the reply times
    /// measured), with recovery.
    pub fn recovery_timeout(&self) -> Option<Duration> {
        self.recovery.as_ref().map(|r| r.timeout())
    }

    /// A datagram arrived on the socket requests are sent from: a reply of the server,
    /// or anything else. It counts only when it comes from the server
    /// ([`RecoveryConfig::server`]), is a data packet of the stream's session and
    /// answers a request still out; anything else is counted (`reply_foreign_source`,
    /// `reply_unasked`, `malformed`) and dropped. Its missing messages are delivered as
    /// recovered (as they come), or take their place in the stream (in order).
    pub fn handle_reply<H: Handler + ?Sized>(
        &mut self,
        payload: &[u8],
        info: DatagramInfo,
        now: u64,
        handler: &mut H,
    ) {
        let c = &self.counters;
        let Some(rec) = self.recovery.as_ref() else {
            c.reply_unasked.add(1);
            return;
        };
        if info.source.map(canonical) != Some(canonical(rec.config().server)) {
            c.reply_foreign_source.add(1);
            return;
        }
        if info.truncated {
            c.truncated.add(1);
            return;
        }
        for bytes in segments(payload, info.gro_segment) {
            self.take_reply(bytes, now, handler);
        }
        self.recovery_moved(handler);
    }

    /// One packet of a reply from the server (see [`handle_reply`](Self::handle_reply)).
    fn take_reply<H: Handler + ?Sized>(&mut self, bytes: &[u8], now: u64, handler: &mut H) {
        let c = &self.counters;
        let Ok(packet) = Packet::new_checked(bytes) else {
            c.malformed.add(1);
            return;
        };
        let count = packet.count();
        let session = self.bound.map(|b| b.session);
        let asked = packet.sequence() != 0
            && count != HEARTBEAT_COUNT
            && count != END_OF_SESSION_COUNT
            && session == Some(*packet.session().as_bytes())
            && self
                .recovery
                .as_mut()
                .is_some_and(|r| r.handle_reply(packet.sequence(), count, now));
        if !asked {
            c.reply_unasked.add(1);
            return;
        }
        c.replies.add(1);
        let end = packet.sequence() + u64::from(count);
        if self.in_order {
            // Counted as recovered when delivered (it may wait in the hold first).
            self.origin = ORIGIN_REPLY;
            self.take_in(bytes, &packet, now, handler);
            self.origin = ORIGIN_A;
        } else {
            let delivered = self.deliver_missing(&packet, end, now, handler);
            self.counters
                .duplicates
                .add(u64::from(count).saturating_sub(delivered));
        }
    }

    /// As they come: delivers the messages of `packet` before `upto` that recovery still
    /// misses, as recovered, and fills them in. Returns how many.
    fn deliver_missing<H: Handler + ?Sized>(
        &mut self,
        packet: &Packet<&[u8]>,
        upto: u64,
        now: u64,
        handler: &mut H,
    ) -> u64 {
        let Some(rec) = self.recovery.as_mut() else {
            return 0;
        };
        let first = packet.sequence();
        // Checked packet: first + count does not overflow.
        let end = (first + u64::from(packet.message_count())).min(upto);
        if first >= end || !rec.overlaps(first, end) {
            return 0;
        }
        let c = &self.counters;
        let (mut messages, mut bytes) = (0u64, 0u64);
        for (i, msg) in packet.messages().enumerate() {
            let sequence = first + i as u64;
            if sequence >= end {
                break;
            }
            if rec.contains(sequence) {
                if self.timestamps {
                    if let Some(stamp) = read_stamp(msg) {
                        self.latency.record_since(stamp, now);
                    }
                }
                handler.on_recovered(sequence, msg);
                messages += 1;
                bytes += msg.len() as u64;
            }
        }
        rec.fill(first, end, now, &mut |a, b| lost(c, handler, a, b));
        c.messages.add(messages);
        c.bytes.add(bytes);
        c.recovered.add(messages);
        messages
    }

    /// After recovery moved on: an end of session that waited for it goes on once
    /// nothing is missing any more, and the handler hears of an end that came meanwhile.
    fn recovery_moved<H: Handler + ?Sized>(&mut self, handler: &mut H) {
        if !self.recovery.as_ref().is_some_and(|r| r.is_empty()) {
            return;
        }
        if std::mem::take(&mut self.end_waits) {
            self.follow_suspect(handler);
        }
        if std::mem::take(&mut self.end_deferred) {
            self.counters.ended.set(1);
            handler.on_end_of_session();
        }
    }

    /// The end of a subscription: a stream not yet locked locks onto the sender with the
    /// most packets that followed on from each other (so that a short stream is still
    /// delivered), every packet held in the reorder window goes on in order (the gaps
    /// before them are declared), and a suspect packet nobody confirmed is dropped and
    /// counted.
    pub fn finish<H: Handler + ?Sized>(&mut self, now: u64, handler: &mut H) {
        if self.bound.is_none() {
            if let Some(best) = self.lock.as_ref().and_then(|l| l.best()) {
                self.lock_onto(best, handler);
            }
        }
        self.release_held(Stage::Lines, now, Upto::All, handler);
        self.release_held(Stage::Hold, now, Upto::All, handler);
        if let Some(rec) = self.recovery.as_mut() {
            let c = &self.counters;
            rec.give_up_all(&mut |first, end| lost(c, handler, first, end));
        }
        self.recovery_moved(handler);
        self.drop_suspect();
    }

    /// The latency recorded so far.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// Swaps the latency histogram for `fresh` (reset first, so no allocation happens
    /// here) and returns the old one.
    pub fn swap_latency(&mut self, mut fresh: Box<LatencyHistogram>) -> Box<LatencyHistogram> {
        fresh.reset();
        if let Some(mirror) = self.latency.take_mirror() {
            fresh.mirror_to(mirror);
        }
        std::mem::swap(&mut self.latency, &mut fresh);
        fresh
    }

    /// The latency histogram, for the final report (without its mirror in the counters
    /// file, which ends with the subscription).
    pub fn into_latency(self) -> LatencyHistogram {
        let mut latency = *self.latency;
        latency.take_mirror();
        latency
    }

    /// Counts every latency recorded from now on in `mirror` too, a histogram of the
    /// counters file ([`crate::stat`]); it moves along when the histogram is swapped.
    pub fn mirror_latency(&mut self, mirror: crate::stat::Histogram) {
        self.latency.mirror_to(mirror);
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
        self.handle_line_datagram(Line::A, payload, info, now_ns, handler);
    }

    /// [`handle_datagram`](Self::handle_datagram) for a datagram that came on `line`.
    /// Without [`ReceiveConfig::lines`], line B's datagrams are counted as
    /// `foreign_source` and dropped.
    pub fn handle_line_datagram<H: Handler + ?Sized>(
        &mut self,
        line: Line,
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
        if let Some(k) = self.kernel.as_mut() {
            self.wire = k.handle_datagram(&info.kernel_stamp);
        }
        if info.truncated {
            c.truncated.add(1);
            self.wire = None;
            return;
        }
        if payload.is_empty() {
            // No header at all; the splitter below would yield no packet to count.
            c.malformed.add(1);
            self.wire = None;
            return;
        }
        if info
            .gro_segment
            .is_some_and(|s| s > 0 && usize::from(s) < payload.len())
        {
            c.gro_batches.add(1);
        }
        // With GRO, the one stamp of the coalesced datagram goes to every segment's
        // messages.
        for packet in segments(payload, info.gro_segment) {
            self.handle_packet(packet, info.source, line, now_ns, handler);
        }
        self.wire = None;
    }

    /// A receive completion whose buffer could not be read.
    pub fn handle_unreadable(&mut self) {
        self.counters.malformed.add(1);
    }

    /// The receive had to be re-armed (a multishot receive ended).
    pub fn handle_rearm(&mut self) {
        self.counters.rearms.add(1);
    }

    /// The shard serving this state failed for `reason` and receives nothing more for
    /// it: the failure is published (once) and counted, and `handler` hears it.
    pub fn handle_failure<H: Handler + ?Sized>(&mut self, reason: &str, handler: &mut H) {
        if self.published.failure.set(reason.to_owned()).is_ok() {
            self.counters.shard_failures.add(1);
            handler.on_failure(reason);
        }
    }

    /// A receive failed with `errno`.
    pub fn handle_receive_error(&mut self, errno: i32) {
        self.counters.receive_errors.add(1);
        tracing::debug!(errno, "receive error");
    }

    fn handle_packet<H: Handler + ?Sized>(
        &mut self,
        bytes: &[u8],
        source: Option<SocketAddr>,
        line: Line,
        now: u64,
        handler: &mut H,
    ) {
        if self.lines.is_some() && self.copy_of_taken(line, bytes, source, now, handler) {
            return;
        }
        let Ok(packet) = Packet::new_checked(bytes) else {
            self.counters.malformed.add(1);
            return;
        };
        if packet.sequence() == 0 {
            // MoldUDP64 numbers messages from 1: no sender writes 0.
            self.counters.malformed.add(1);
            return;
        }
        self.counters.packets.add(1);
        if line == Line::B && self.lines.is_none() {
            self.counters.foreign_source.add(1);
            return;
        }
        self.origin = origin_of(line);
        match self.bound {
            Some(bound) => {
                let sender = match self.lines.as_mut() {
                    Some(lines) => lines.accepts(line, source),
                    None => source == bound.source,
                };
                if *packet.session().as_bytes() != bound.session {
                    self.counters.other_session.add(1);
                } else if !sender {
                    self.counters.foreign_source.add(1);
                } else if self.lines.is_some() {
                    self.arrive(line, bytes, &packet, now, handler);
                } else {
                    self.take_in(bytes, &packet, now, handler);
                }
            }
            None => self.before_lock(bytes, &packet, source, now, handler),
        }
        self.origin = ORIGIN_A;
    }

    /// With two lines: whether `bytes` is, by its header alone, a data packet of the bound
    /// session from `line`'s sender that ends at or before the next number to deliver
    /// (with nothing in it missing): a copy of what the stream has already taken. Such a
    /// copy (the slower line's, most of the time) is counted as its line's duplicate and
    /// dropped without its messages being read, which halves what the slower line
    /// costs; anything else goes on to be checked whole.
    fn copy_of_taken<H: Handler + ?Sized>(
        &mut self,
        line: Line,
        bytes: &[u8],
        source: Option<SocketAddr>,
        now: u64,
        handler: &mut H,
    ) -> bool {
        if bytes.len() < crate::wire::HEADER_LEN {
            return false;
        }
        let (Some(bound), Some(next)) = (self.bound, self.tracker.next_expected()) else {
            return false;
        };
        let header = Packet::new_unchecked(bytes);
        let (first, count) = (header.sequence(), header.count());
        let end = match first.checked_add(u64::from(count)) {
            Some(end) if first != 0 && count != 0 && count != END_OF_SESSION_COUNT => end,
            _ => return false,
        };
        let copy = end <= next
            && *header.session().as_bytes() == bound.session
            && self
                .recovery
                .as_ref()
                .is_none_or(|r| !r.overlaps(first, end));
        let Some(lines) = self.lines.as_mut().filter(|_| copy) else {
            return false;
        };
        if !lines.accepts(line, source) {
            return false;
        }
        self.counters.packets.add(1);
        // The line's book reads only numbers the stream has already passed.
        let changes = lines.arrival(line, first, end, true, now, self.window);
        lines.second(line);
        tell(changes, handler);
        true
    }

    /// With two lines: a packet of the stream from `line`'s sender. Its line's book
    /// hears of it; one ahead of a missing one waits for the other line (see
    /// [`LinesConfig::wait`]); the rest goes on into the stream, with what its turn lets
    /// go from the wait.
    fn arrive<H: Handler + ?Sized>(
        &mut self,
        line: Line,
        bytes: &[u8],
        packet: &Packet<&[u8]>,
        now: u64,
        handler: &mut H,
    ) {
        let Some(lines) = self.lines.as_mut() else {
            return;
        };
        let (first, end, data) = span(packet);
        let wait_ns = lines.wait_ns();
        tell(
            lines.arrival(line, first, end, data, now, self.window),
            handler,
        );
        if self.line_waits(packet) {
            let until = now.saturating_add(wait_ns);
            let held = self
                .line_wait
                .as_mut()
                .is_some_and(|r| r.hold(bytes, first, until, self.origin));
            if held {
                return;
            }
            // No room: the oldest wait ends now, and this packet goes on behind it.
            self.release_held(Stage::Lines, now, Upto::Oldest, handler);
            self.origin = origin_of(line);
        }
        self.pass(bytes, packet, now, handler);
        if self.line_wait.as_ref().is_some_and(|r| !r.is_empty()) {
            self.release_held(Stage::Lines, now, Upto::Turn, handler);
        }
    }

    /// With two lines: `packet` passed the line wait; it goes on into the stream (and
    /// moves the frontier). In order with recovery, a copy of what the stream has
    /// already taken in (held or delivered) and does not miss is the other line's
    /// duplicate, dropped here rather than held twice.
    fn pass<H: Handler + ?Sized>(
        &mut self,
        bytes: &[u8],
        packet: &Packet<&[u8]>,
        now: u64,
        handler: &mut H,
    ) {
        let (first, end, data) = span(packet);
        let taken = self.in_order
            && data
            && self.highest.is_some_and(|h| end <= h)
            && self
                .recovery
                .as_ref()
                .is_some_and(|r| !r.overlaps(first, end));
        if taken && self.origin != ORIGIN_REPLY {
            if let Some(lines) = self.lines.as_ref() {
                lines.second(line_of(self.origin));
            }
        } else {
            self.take_in(bytes, packet, now, handler);
        }
        let next = self.tracker.next_expected().unwrap_or(0);
        let plausible = first <= self.frontier || first - self.frontier <= self.window;
        if plausible {
            self.frontier = self.frontier.max(end);
        }
        self.frontier = self.frontier.max(next);
    }

    /// With two lines: the first number no line has brought yet (as far as what passed
    /// the line wait, and the stream, say).
    fn line_frontier(&self) -> u64 {
        self.frontier.max(self.tracker.next_expected().unwrap_or(0))
    }

    /// With two lines: whether `packet` (of the session followed) is ahead of a number
    /// no line has brought yet, and so waits for the other line.
    fn line_waits(&self, packet: &Packet<&[u8]>) -> bool {
        let frontier = self.line_frontier();
        self.tracker.next_expected().is_some()
            && !self.tracker.ended()
            && packet.sequence() > frontier
            && packet.sequence() - frontier <= self.window
    }

    /// A packet before the stream is bound: of the session and sender named (if any), it
    /// goes to the lock, which says when a sender has proved itself.
    fn before_lock<H: Handler + ?Sized>(
        &mut self,
        bytes: &[u8],
        packet: &Packet<&[u8]>,
        source: Option<SocketAddr>,
        now: u64,
        handler: &mut H,
    ) {
        let session = *packet.session().as_bytes();
        if self.want_session.is_some_and(|w| w != session) {
            self.counters.other_session.add(1);
            return;
        }
        let want = match self.lines.as_ref() {
            Some(lines) => lines.want(line_of(self.origin)),
            None => self.want_sender,
        };
        let named = want.is_none_or(|w| {
            source.is_some_and(|s| s.ip() == w.ip() && (w.port() == 0 || s.port() == w.port()))
        });
        if !named {
            self.counters.foreign_source.add(1);
            return;
        }
        let Some(lock) = self.lock.as_mut() else {
            // Locked onto at the first packet: the sender was named with its port (or the
            // lock takes a single packet).
            self.bind(session, source);
            self.take_in_line(bytes, packet, now, handler);
            return;
        };
        let header = (session, packet.sequence(), packet.count());
        let offered = lock.offer(bytes, header, source, self.window, now, self.origin);
        self.counters.foreign_source.add(offered.evicted);
        if let Some(winner) = offered.lock {
            self.lock_onto(winner, handler);
        }
    }

    /// Binds the stream to the sender in the lock's place `winner` and replays its held
    /// packets, in arrival order; the other senders' packets are counted.
    fn lock_onto<H: Handler + ?Sized>(&mut self, winner: usize, handler: &mut H) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        let Some(chosen) = lock.candidate(winner).copied() else {
            return;
        };
        self.bind(chosen.session, chosen.source);
        tracing::debug!(
            session = %Session::from_bytes(chosen.session),
            sender = ?chosen.source,
            "subscription locked onto its sender"
        );
        let c = &self.counters;
        for other in lock.candidates() {
            if other.session != chosen.session {
                c.other_session.add(other.unheld);
            } else if other.source != chosen.source {
                c.foreign_source.add(other.unheld);
            }
        }
        // The winner's packets go on in arrival order; for a late joiner (which starts
        // wherever its first packet says), those of the run that locked go first, so that
        // a stray before them cannot set the start. Its packets that did not fit are
        // gone: the gaps they leave are declared as the stream goes on.
        let run_first = self.start == StartAt::FirstSeen;
        let before = self.origin;
        // Held packets came with other datagrams: no wire→application sample.
        let wire = self.wire.take();
        if run_first {
            for (place, bytes, at, last_run, tag) in lock.held() {
                if place == winner && last_run {
                    self.origin = tag;
                    self.take_in_line(bytes, &Packet::new_unchecked(bytes), at, handler);
                }
            }
        }
        for (place, bytes, at, last_run, tag) in lock.held() {
            if place == winner {
                if !(run_first && last_run) {
                    self.origin = tag;
                    self.take_in_line(bytes, &Packet::new_unchecked(bytes), at, handler);
                }
            } else if lock
                .candidate(place)
                .is_some_and(|o| o.session != chosen.session)
            {
                self.counters.other_session.add(1);
            } else {
                self.counters.foreign_source.add(1);
            }
        }
        self.origin = before;
        self.wire = wire;
    }

    /// The tracker declared `gap`. Without recovery it is lost at once. As they come, it
    /// is asked for (and lost at once only if there is no room to track it). In order,
    /// it was tracked when the packet behind it arrived, and the tracker declares it only
    /// when what was held behind it stopped waiting: it is lost now.
    fn gap_seen<H: Handler + ?Sized>(&mut self, gap: Gap, now: u64, handler: &mut H) {
        let c = &self.counters;
        let (first, end) = (gap.first_missing, gap.end());
        match self.recovery.as_mut() {
            None => {
                c.gaps.add(1);
                c.missing.add(gap.count);
                handler.on_gap(gap);
            }
            Some(rec) if self.in_order => {
                if !rec.overlaps(first, end) && self.highest.is_none_or(|h| h <= first) {
                    // Never seen missing before (it was not behind a held packet).
                    c.gaps.add(1);
                }
                rec.forget(first, end);
                lost(c, handler, first, end);
            }
            Some(rec) => {
                c.gaps.add(1);
                if !rec.add(first, end, now) {
                    lost(c, handler, first, end);
                }
            }
        }
    }

    /// In order, with recovery: a packet of the bound stream arrived (before it is held
    /// or applied). One that starts beyond every number seen so far reveals a gap, which
    /// is asked for; one that brings missing messages fills them in.
    fn note_span(&mut self, packet: &Packet<&[u8]>, now: u64) {
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        let Some(next) = self.tracker.next_expected() else {
            return;
        };
        let (first, end, _) = span(packet);
        if self.tracker.ended() || (first > next && first - next > self.window) {
            // After the end, or too far ahead: what it says is for the suspect rules.
            return;
        }
        let highest = self.highest.map_or(next, |h| h.max(next));
        if first > highest {
            self.counters.gaps.add(1);
            // No room: it is given up when the tracker reaches it.
            let _ = rec.add(highest, first, now);
        }
        if end > first {
            // A range that cannot be split for want of room is no longer asked for; the
            // tracker declares it when its wait ends.
            rec.fill(first, end, now, &mut |_, _| {});
        }
        self.highest = Some(highest.max(end));
    }

    /// Binds the stream to `session` from `source` (each line learns its own sender as
    /// the stream's packets are taken in on it: [`Self::take_in_line`]).
    fn bind(&mut self, session: [u8; 10], source: Option<SocketAddr>) {
        self.bound = Some(Bound { session, source });
        self.tracker = SequenceTracker::with_session(session, self.start);
        let _ = self.published.session.set(Session::from_bytes(session));
        if let Some(source) = source {
            let _ = self.published.sender.set(source);
        }
        self.lock = None;
    }

    /// A packet of the bound stream from the line it came on ([`Self::origin`]), at the
    /// lock: with two lines through the line wait ([`Self::arrive`]), else straight in.
    fn take_in_line<H: Handler + ?Sized>(
        &mut self,
        bytes: &[u8],
        packet: &Packet<&[u8]>,
        now: u64,
        handler: &mut H,
    ) {
        if let Some(lines) = self.lines.as_mut() {
            // The packets the lock takes in are its sender's: the line they came on has
            // that sender (unless it was bound to another, which the lock never offers).
            let line = line_of(self.origin);
            let source = self.bound.and_then(|b| b.source);
            if lines.accepts(line, source) || source.is_none() {
                self.arrive(line, bytes, packet, now, handler);
            } else {
                self.counters.foreign_source.add(1);
            }
        } else {
            self.take_in(bytes, packet, now, handler);
        }
    }

    /// A packet of the bound stream: it may wait in the reorder window; then its
    /// sequence is checked against the window and it is applied.
    fn take_in<H: Handler + ?Sized>(
        &mut self,
        bytes: &[u8],
        packet: &Packet<&[u8]>,
        now: u64,
        handler: &mut H,
    ) {
        if self.in_order {
            self.note_span(packet, now);
        }
        if self.reorder.is_some() && self.waits(packet) {
            if self.hold(bytes, packet, now) {
                return;
            }
            // The window is full: the oldest wait ends now (the gap before the lowest
            // held packet is declared, and it and what it lets come go on), and this
            // packet may wait in turn; again while there is no room.
            while self.reorder.as_ref().is_some_and(|r| !r.is_empty()) {
                self.release_held(Stage::Hold, now, Upto::Oldest, handler);
                if !self.waits(packet) {
                    break;
                }
                if self.hold(bytes, packet, now) {
                    return;
                }
            }
        }
        self.admit(bytes, packet, now, handler);
        if self.reorder.as_ref().is_some_and(|r| !r.is_empty()) {
            // Only turns here, no time: a long batch takes time to hand over, and the
            // straggler a held packet waits for may be later in that same batch. Waits
            // run out in handle_timeout, which the driver calls once it has handed over
            // everything that had arrived.
            self.release_held(Stage::Hold, now, Upto::Turn, handler);
        }
    }

    /// Whether a packet pointing to `sequence` (with message count `count`) is too far
    /// from `next` to be followed unconfirmed: a data packet or heartbeat more than the
    /// window ahead, an end of session anywhere but at `next`.
    fn far(&self, sequence: u64, count: u16, next: u64) -> bool {
        match count {
            END_OF_SESSION_COUNT => sequence != next,
            _ => sequence > next && sequence - next > self.window,
        }
    }

    /// The held suspect's first number and message count, if one is held.
    fn suspect_header(&self) -> Option<(u64, u16)> {
        let s = &self.suspect;
        if s.len == 0 {
            return None;
        }
        let packet = Packet::new_unchecked(&s.buf[..s.len]);
        Some((packet.sequence(), packet.count()))
    }

    /// Whether `packet` confirms the held suspect: it continues from where the suspect
    /// ends (within the window), or, for an end of session, repeats it.
    fn confirms(&self, packet: &Packet<&[u8]>) -> bool {
        let Some((first, count)) = self.suspect_header() else {
            return false;
        };
        let sequence = packet.sequence();
        match count {
            END_OF_SESSION_COUNT => packet.count() == END_OF_SESSION_COUNT && sequence == first,
            HEARTBEAT_COUNT => sequence >= first && sequence - first <= self.window,
            // The suspect was checked: first + count does not overflow.
            n => {
                let end = first + u64::from(n);
                sequence >= end && sequence - end <= self.window
            }
        }
    }

    /// Applies the held suspect (now confirmed or plausible) and empties its place.
    fn follow_suspect<H: Handler + ?Sized>(&mut self, handler: &mut H) {
        self.end_waits = false;
        let len = std::mem::take(&mut self.suspect.len);
        if len > 0 {
            // It came with another datagram: no wire→application sample.
            let wire = self.wire.take();
            // Out of `self` while it is applied (which needs all of `self`), as from
            // where it came.
            let buf = std::mem::take(&mut self.suspect.buf);
            let before = std::mem::replace(&mut self.origin, self.suspect.origin);
            self.apply(
                &Packet::new_unchecked(&buf[..len]),
                self.suspect.at,
                handler,
            );
            self.origin = before;
            self.suspect.buf = buf;
            self.wire = wire;
        }
    }

    /// Drops the held suspect, counting it.
    fn drop_suspect(&mut self) {
        self.end_waits = false;
        if std::mem::take(&mut self.suspect.len) > 0 {
            self.counters.suspect.add(1);
        }
    }

    /// Follows `packet` if its sequence is plausible, else holds it as suspect (see the
    /// module docs).
    fn admit<H: Handler + ?Sized>(
        &mut self,
        bytes: &[u8],
        packet: &Packet<&[u8]>,
        now: u64,
        handler: &mut H,
    ) {
        if self.confirms(packet) {
            self.follow_suspect(handler);
        }
        if let Some(next) = self
            .tracker
            .next_expected()
            .filter(|_| !self.tracker.ended())
        {
            if self.far(packet.sequence(), packet.count(), next) {
                if packet.count() == END_OF_SESSION_COUNT && packet.sequence() < next {
                    // An end before what was already delivered: never honoured.
                    self.counters.suspect.add(1);
                    return;
                }
                let ahead = packet.count() == END_OF_SESSION_COUNT
                    && self.recovery.is_some()
                    && packet.sequence() - next <= self.window;
                if ahead {
                    // With recovery, the loss the end reveals is the stream's as a
                    // heartbeat there would reveal it: the tracker moves to the end.
                    let verdict = self.tracker.handle_packet(
                        *packet.session().as_bytes(),
                        packet.sequence(),
                        HEARTBEAT_COUNT,
                    );
                    if let Some(gap) = verdict.gap() {
                        self.gap_seen(gap, now, handler);
                    }
                    if self.in_order {
                        // In order, the end waited in the hold while that loss was
                        // asked for, and its wait ran out (or there was no room): the
                        // loss was just given up, and the end is honoured.
                        self.apply(packet, now, handler);
                    } else {
                        // As they come, the loss is asked for now, and the end waits for
                        // recovery to be done with it, or for its repeat.
                        self.hold_suspect(bytes, now);
                        self.end_waits = self.suspect.len > 0;
                        self.recovery_moved(handler);
                    }
                    return;
                }
                self.hold_suspect(bytes, now);
                return;
            }
        }
        self.apply(packet, now, handler);
        let Some((first, count)) = self.suspect_header() else {
            return;
        };
        // The stream went on: the suspect may be plausible now, or contradicted.
        match self.tracker.next_expected() {
            // An end that waits for recovery stays while the stream has not passed it.
            Some(next) if self.end_waits && !self.tracker.ended() && next == first => {}
            Some(next) if !self.tracker.ended() && !self.far(first, count, next) => {
                self.follow_suspect(handler)
            }
            // An end of session ahead waits for its repeat, or for what it overtook.
            Some(next)
                if !self.tracker.ended() && count == END_OF_SESSION_COUNT && first > next => {}
            _ => self.drop_suspect(),
        }
    }

    /// Holds `bytes` as the suspect (dropping, and counting, the one held before).
    fn hold_suspect(&mut self, bytes: &[u8], now: u64) {
        self.drop_suspect();
        let s = &mut self.suspect;
        if bytes.len() <= s.buf.len() {
            s.buf[..bytes.len()].copy_from_slice(bytes);
            s.len = bytes.len();
            s.at = now;
            s.origin = self.origin;
        } else {
            self.counters.suspect.add(1);
        }
    }

    /// Holds `packet` (whose bytes are `bytes`) in the reorder window until the window
    /// has passed; returns whether there was room.
    fn hold(&mut self, bytes: &[u8], packet: &Packet<&[u8]>, now: u64) -> bool {
        let until = now.saturating_add(self.reorder_ns);
        let first = packet.sequence();
        let origin = self.origin;
        let held = self
            .reorder
            .as_mut()
            .is_some_and(|r| r.hold(bytes, first, until, origin));
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
            && self.tracker.next_expected().is_some_and(|next| {
                packet.sequence() > next && packet.sequence() - next <= self.window
            })
    }

    /// Lets packets held in `stage` go, in order, as far as `upto` says.
    fn release_held<H: Handler + ?Sized>(
        &mut self,
        stage: Stage,
        now: u64,
        upto: Upto,
        handler: &mut H,
    ) {
        // Out of `self` while its packets go on (which needs all of `self`).
        let taken = match stage {
            Stage::Lines => self.line_wait.take(),
            Stage::Hold => self.reorder.take(),
        };
        let Some(mut reorder) = taken else {
            return;
        };
        // Held packets came with other datagrams: no wire→application sample.
        let wire = self.wire.take();
        let mut upto = upto;
        loop {
            let next = match stage {
                Stage::Lines => self.line_frontier(),
                Stage::Hold => self.tracker.next_expected().unwrap_or(0),
            };
            let due = match upto {
                Upto::All => reorder.first(),
                Upto::Oldest => {
                    upto = Upto::Turn;
                    reorder.first()
                }
                // A wait cannot run out at a time before every hold began.
                Upto::Turn => reorder.next_turn(next),
                Upto::Expired => reorder.next_due(next, now),
            };
            let Some(held) = due else {
                break;
            };
            let bytes = reorder.bytes(&held);
            let before = std::mem::replace(&mut self.origin, held.tag);
            let packet = Packet::new_unchecked(bytes);
            match stage {
                Stage::Lines => self.pass(bytes, &packet, now, handler),
                Stage::Hold => self.admit(bytes, &packet, now, handler),
            }
            self.origin = before;
            reorder.release(&held);
        }
        match stage {
            Stage::Lines => self.line_wait = Some(reorder),
            Stage::Hold => self.reorder = Some(reorder),
        }
        self.wire = wire;
    }

    /// Sequences one checked packet and tells `handler` what it brings.
    fn apply<H: Handler + ?Sized>(&mut self, packet: &Packet<&[u8]>, now: u64, handler: &mut H) {
        let count = packet.count();
        let next_before = self.tracker.next_expected();
        let verdict =
            self.tracker
                .handle_packet(*packet.session().as_bytes(), packet.sequence(), count);
        if let Some(gap) = verdict.gap() {
            self.gap_seen(gap, now, handler);
        }
        // As they come: messages before the next expected number that recovery still
        // misses came late; they are delivered as recovered.
        let mut late = 0;
        if let Some(rec) = self.recovery.as_mut() {
            if count != HEARTBEAT_COUNT && count != END_OF_SESSION_COUNT {
                rec.note_packet(count);
                if let Some(before) = next_before.filter(|_| !self.in_order) {
                    late = self.deliver_missing(packet, before, now, handler);
                }
            }
        }
        let c = &self.counters;
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
                if let (Some(ns), Some(k)) = (self.wire, self.kernel.as_mut()) {
                    // One record per packet, for all its delivered messages.
                    k.record(ns, messages);
                }
                c.duplicates.add(u64::from(skip).saturating_sub(late));
                if self.origin == ORIGIN_REPLY {
                    c.recovered.add(messages);
                } else if let Some(lines) = self.lines.as_ref().filter(|_| messages > 0) {
                    lines.won(line_of(self.origin));
                }
            }
            Verdict::Duplicate | Verdict::AfterEnd => match self.lines.as_ref() {
                Some(lines) if self.origin != ORIGIN_REPLY && late > 0 => {
                    lines.won(line_of(self.origin));
                    c.duplicates
                        .add(u64::from(packet.message_count()).saturating_sub(late));
                }
                Some(lines) if self.origin != ORIGIN_REPLY => lines.second(line_of(self.origin)),
                _ => c
                    .duplicates
                    .add(u64::from(packet.message_count()).saturating_sub(late)),
            },
            Verdict::Heartbeat { .. } => c.heartbeats.add(1),
            Verdict::EndOfSession { .. } => {
                c.end_of_session.add(1);
                if let Some(rec) = self.recovery.as_mut() {
                    // Nothing past the end was ever sent: what packets beyond it seemed to
                    // reveal (in order, before the end was known) is not missing.
                    rec.forget(packet.sequence(), u64::MAX);
                }
                if c.end_of_session.get() == 1 {
                    if self.recovery.as_ref().is_some_and(|r| !r.is_empty()) {
                        // As they come, recovered messages may still arrive: the end is
                        // heard once recovery is done with them.
                        self.end_deferred = true;
                    } else {
                        c.ended.set(1);
                        handler.on_end_of_session();
                    }
                }
            }
            Verdict::OtherSession => c.other_session.add(1),
            Verdict::OutOfRange => c.malformed.add(1),
        }
    }
}

/// The numbers a checked packet covers, `first..end` (`end == first` for a heartbeat or
/// an end of session), and whether it is a data packet.
fn span(packet: &Packet<&[u8]>) -> (u64, u64, bool) {
    let (first, count) = (packet.sequence(), packet.count());
    match count {
        HEARTBEAT_COUNT | END_OF_SESSION_COUNT => (first, first, false),
        // Checked packet: no overflow.
        n => (first, first + u64::from(n), true),
    }
}

/// Tells `handler` (and the log) of the lines that came up or went down.
fn tell<H: Handler + ?Sized>(changes: [Option<Change>; 2], handler: &mut H) {
    for change in changes.into_iter().flatten() {
        if change.up {
            tracing::info!(line = ?change.line, "line up again");
        } else {
            tracing::warn!(
                line = ?change.line,
                "line down: silent while the other line brings packets"
            );
        }
        handler.on_line(change.line, change.up);
    }
}

/// The origin tag of a packet that came on `line`.
fn origin_of(line: Line) -> u8 {
    match line {
        Line::A => ORIGIN_A,
        Line::B => ORIGIN_B,
    }
}

/// The line of an origin tag (a reply's: A, for what needs a line).
fn line_of(origin: u8) -> Line {
    if origin == ORIGIN_B {
        Line::B
    } else {
        Line::A
    }
}

/// Messages `first..end` are lost for good (recovery gave them up): counted, and the
/// handler hears it.
fn lost<H: Handler + ?Sized>(c: &SubscriptionCounters, handler: &mut H, first: u64, end: u64) {
    let count = end.saturating_sub(first);
    if count == 0 {
        return;
    }
    c.missing.add(count);
    c.gaps_given_up.add(1);
    handler.on_gap(Gap {
        first_missing: first,
        count,
    });
}

/// A [`ReceiveState`] with the default [`ReceiveConfig`]: from sequence 1, the session
/// and sender it locks onto.
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
            session: Some(Session::from_bytes(*b"REORDER   ")),
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

        let mut plain = ReceiveState::new(&ReceiveConfig {
            session: Some(Session::from_bytes(*b"REORDER   ")),
            ..ReceiveConfig::default()
        });
        let mut seen = Seen::default();
        assert!(!plain.wants_clock() && !plain.has_timers());
        feed(&mut plain, &p[0], 0, &mut seen);
        feed(&mut plain, &p[2], 0, &mut seen);
        feed(&mut plain, &p[1], 0, &mut seen);
        assert_eq!(seen.messages, [1, 3]);
        assert_eq!(seen.gaps, [(2, 1)]);
        assert_eq!(plain.stats().duplicates, 1);
    }

    fn from(port: u16) -> DatagramInfo {
        DatagramInfo {
            source: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            ..DatagramInfo::default()
        }
    }

    fn end_at(next: u64) -> Vec<u8> {
        let mut buf = [0u8; 20];
        let session = Session::from_bytes(*b"REORDER   ");
        let len = crate::wire::write_end_of_session(&mut buf, &session, next)
            .unwrap_or_else(|e| panic!("{e}"));
        buf[..len].to_vec()
    }

    #[test]
    fn an_end_of_session_ahead_of_a_loss_is_honoured_when_repeated_not_before() {
        let p = five();
        let mut state = ReceiveState::new(&ReceiveConfig::default());
        let mut seen = Seen::default();
        for packet in &p[..4] {
            state.handle_datagram(packet, from(9), 0, &mut seen);
        }
        // 5 is lost; the end says 6 is next.
        state.handle_datagram(&end_at(6), from(9), 0, &mut seen);
        assert!(
            !state.tracker.ended(),
            "one end ahead of a loss is not trusted"
        );
        state.handle_datagram(&end_at(6), from(9), 0, &mut seen);
        assert!(state.tracker.ended());
        assert_eq!(seen.gaps, [(5, 1)]);
        assert_eq!(
            (state.stats().end_of_session, state.stats().suspect),
            (2, 0)
        );
    }

    #[test]
    fn a_jump_beyond_the_window_is_followed_once_the_sender_goes_on_from_it() {
        let p = five();
        let mut state = ReceiveState::new(&ReceiveConfig {
            sequence_window: 10,
            ..ReceiveConfig::default()
        });
        let mut seen = Seen::default();
        for packet in &p[..3] {
            state.handle_datagram(packet, from(9), 0, &mut seen);
        }
        let session = Session::from_bytes(*b"REORDER   ");
        let far =
            pack_all(&session, 100, 27, [&b"far"[..], b"on!"]).unwrap_or_else(|e| panic!("{e}"));
        state.handle_datagram(&far[0], from(9), 0, &mut seen);
        assert_eq!(seen.messages, [1, 2, 3], "100 is held as suspect");
        state.handle_datagram(&far[1], from(9), 0, &mut seen);
        assert_eq!(seen.messages, [1, 2, 3, 100, 101], "101 confirmed it");
        assert_eq!(seen.gaps, [(4, 96)]);
        assert_eq!(state.stats().suspect, 0);
    }

    #[test]
    fn a_sender_named_with_its_port_is_followed_from_its_first_packet_and_no_other() {
        let p = five();
        let named = SocketAddr::from(([127, 0, 0, 1], 9));
        let mut state = ReceiveState::new(&ReceiveConfig {
            sender: Some(named),
            ..ReceiveConfig::default()
        });
        let mut seen = Seen::default();
        state.handle_datagram(&p[0], from(8), 0, &mut seen);
        state.handle_datagram(&p[0], DatagramInfo::default(), 0, &mut seen);
        state.handle_datagram(&p[0], from(9), 0, &mut seen);
        assert_eq!(seen.messages, [1]);
        assert_eq!(state.stats().foreign_source, 2);
        assert_eq!(state.sender(), Some(named));
    }

    #[test]
    fn a_source_address_without_a_port_locks_onto_the_port_that_proves_itself() {
        let p = five();
        let mut state = ReceiveState::new(&ReceiveConfig {
            sender: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..ReceiveConfig::default()
        });
        let mut seen = Seen::default();
        let elsewhere = DatagramInfo {
            source: Some(SocketAddr::from(([10, 0, 0, 1], 9))),
            ..DatagramInfo::default()
        };
        state.handle_datagram(&p[0], elsewhere, 0, &mut seen);
        state.handle_datagram(&p[0], from(7), 0, &mut seen);
        for packet in &p {
            state.handle_datagram(packet, from(9), 0, &mut seen);
        }
        assert_eq!(seen.messages, [1, 2, 3, 4, 5]);
        assert_eq!(
            state.stats().foreign_source,
            2,
            "another address, another port"
        );
        assert_eq!(state.sender(), Some(SocketAddr::from(([127, 0, 0, 1], 9))));
    }

    #[test]
    fn a_stream_too_short_to_lock_is_still_delivered_at_the_finish() {
        let p = five();
        let mut state = ReceiveState::new(&ReceiveConfig::default());
        let mut seen = Seen::default();
        state.handle_datagram(&p[0], from(9), 0, &mut seen);
        state.handle_datagram(&p[1], from(9), 0, &mut seen);
        assert!(seen.messages.is_empty() && !state.locked());
        state.finish(0, &mut seen);
        assert_eq!(seen.messages, [1, 2]);
        assert!(state.locked());
    }

    #[test]
    fn a_forgery_as_the_sender_before_the_lock_neither_blocks_it_nor_sets_a_late_start() {
        let p = five();
        let session = Session::from_bytes(*b"REORDER   ");
        let far = pack_all(&session, 1 << 62, 27, [&b"far"[..]]).unwrap_or_else(|e| panic!("{e}"));
        let mut state = ReceiveState::new(&ReceiveConfig {
            start: StartAt::FirstSeen,
            ..ReceiveConfig::default()
        });
        let mut seen = Seen::default();
        state.handle_datagram(&far[0], from(9), 0, &mut seen);
        for packet in &p[2..] {
            state.handle_datagram(packet, from(9), 0, &mut seen);
        }
        assert!(state.locked());
        assert_eq!(
            seen.messages,
            [3, 4, 5],
            "the late joiner starts where the run did"
        );
        assert!(seen.gaps.is_empty());
        state.finish(0, &mut seen);
        assert_eq!(state.stats().suspect, 1, "the forgery, never confirmed");
        assert_eq!(seen.messages, [3, 4, 5]);
    }

    #[test]
    fn a_gro_segment_size_of_zero_is_no_coalescing_not_a_panic() {
        let p = five();
        let mut state = windowed(0);
        let mut seen = Seen::default();
        let info = DatagramInfo {
            gro_segment: Some(0),
            ..from(9)
        };
        state.handle_datagram(&p[0], info, 0, &mut seen);
        assert_eq!(seen.messages, [1]);
        assert_eq!(state.stats().gro_batches, 0);
    }
}
