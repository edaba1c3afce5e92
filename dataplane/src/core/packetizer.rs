//! Packing messages into MoldUDP64 packets (sans-IO): numbering, batches, flushes, the
//! maximum-delay deadline, heartbeats and the end of session. The packets are written into
//! buffers the caller owns ([`Slots`]); the packetizer says which of them are ready to go
//! and when it needs to be woken.
//!
//! # How to drive it
//!
//! - Feed messages in with [`offer`](Packetizer::offer). A message goes into the open
//!   packet; a packet is closed when the next message does not fit, on
//!   [`flush`](Packetizer::flush), or once it has been open for `max_delay` (checked by
//!   [`handle_timeout`](Packetizer::handle_timeout), and by every 16th `offer` outside a
//!   batch, which reads the [`Clock`] only then).
//! - After every call, take out what is ready: [`poll_transmit`](Packetizer::poll_transmit)
//!   gives the closed packets `(slot, length)` in order once they are due, and
//!   [`handle_transmitted`](Packetizer::handle_transmitted) says how many of them were
//!   handed to the network. Closed packets are due at once, except between
//!   [`begin_batch`](Packetizer::begin_batch) and [`end_batch`](Packetizer::end_batch),
//!   where they are held (up to `max_batch`) so that they leave together.
//! - **Adaptive batching.** A driver that reports its sends
//!   ([`handle_send`](Packetizer::handle_send) after each hand-over,
//!   [`handle_completions`](Packetizer::handle_completions) after collecting finished
//!   sends) gets closed packets held while its sender is busy, so that a tight `offer` loop
//!   sends runs of packets (GSO sends) rather than one send per packet, without
//!   `begin_batch`. The sender is busy while a send it reported is in flight (its
//!   completion not yet collected), and, after it completed, for [`BUSY_FACTOR`] times as
//!   long as the hand-over took (a packet closed that soon was filled faster than packets
//!   can be sent one by one: it waits for company). A packet closed while the sender is idle is due at
//!   once: an idle publisher adds no latency. Held packets become due together when the
//!   sender is idle again (seen at the next packet closed, every 16th `offer`, or
//!   `handle_completions`), when `max_batch` of them wait, once the first has waited
//!   `max_delay`, and always on [`flush`](Packetizer::flush),
//!   [`handle_timeout`](Packetizer::handle_timeout) and
//!   [`end_session`](Packetizer::end_session). When the sender was busy with sends in
//!   flight at the last report and its busy time is over,
//!   [`wants_completions`](Packetizer::wants_completions) asks the driver to collect
//!   completions (and report them) before deciding. A driver that never reports a send
//!   (the fan-out) gets every closed packet due at once, as before.
//! - When [`offer`](Packetizer::offer) finds no free slot it refuses the message with
//!   [`OfferError::Backpressure`] (nothing was taken or numbered). The driver may make
//!   room — transmit what is due, collect finished sends, or
//!   [`release_held`](Packetizer::release_held) packets held in a batch — and offer again.
//! - Call [`handle_timeout`](Packetizer::handle_timeout) at
//!   [`poll_timeout`](Packetizer::poll_timeout) (or from an idle loop): it closes an open
//!   packet whose delay expired and writes a heartbeat when nothing was sent for the
//!   heartbeat interval. [`end_session`](Packetizer::end_session) writes the
//!   end-of-session packet; from then on every offer is refused
//!   ([`OfferError::SessionEnded`]) and the idle timer writes the end-of-session packet
//!   again where it would have written a heartbeat, so that a lost end is not final.
//! - Given a [`RetransmitStore`] ([`set_store`](Packetizer::set_store)), the packetizer
//!   appends every data packet to it as it closes the packet, before anyone sees it in
//!   [`poll_transmit`](Packetizer::poll_transmit): a message can be asked for again as
//!   soon as it may have been sent. Without one this costs one branch per packet.
//!
//! Nothing here allocates after [`Packetizer::new`] (and the store's own
//! [`RetransmitStore::new`]) and nothing panics.
//!
//! ```
//! use std::time::Duration;
//! use multipoint_dataplane::core::packetizer::{HeapSlots, Packetizer, PacketizerConfig, Slots};
//! use multipoint_dataplane::core::{Clock, FakeClock};
//! use multipoint_dataplane::wire::{Packet, Session};
//!
//! let clock = FakeClock::new();
//! let config = PacketizerConfig {
//!     max_datagram: 64,
//!     ..PacketizerConfig::new(Session::new("FEED1")?)
//! };
//! let mut packetizer = Packetizer::new(config, 4, clock.now())?;
//! let mut buffers = HeapSlots::new(4, 64);
//! assert_eq!(packetizer.offer(b"hello", &mut buffers, &clock), Ok(1));
//! assert!(packetizer.poll_transmit().is_none(), "the packet stays open");
//! clock.advance(Duration::from_micros(100));
//! packetizer.handle_timeout(clock.now(), &mut buffers);
//! let &[(slot, len)] = packetizer.poll_transmit().unwrap() else { unreachable!() };
//! let packet = Packet::new_checked(buffers.packet(slot, len))?;
//! assert_eq!((packet.sequence(), packet.message_count()), (1, 1));
//! packetizer.handle_transmitted(1, clock.now());
//! buffers.give_back(slot);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{Duration, Instant};

use super::store::RetransmitStore;
use super::Clock;
use crate::wire::{
    write_end_of_session, write_heartbeat, PacketBuilder, PushError, Session, BLOCK_HEADER_LEN,
    DEFAULT_MAX_DATAGRAM, HEADER_LEN,
};

/// Packet buffers a [`Packetizer`] writes into, owned by its driver.
pub trait Slots {
    /// A free buffer, now the packetizer's; `None` when every buffer is in use.
    fn take(&mut self) -> Option<u16>;

    /// The bytes of buffer `slot` (at least `max_datagram` of them).
    ///
    /// # Safety
    ///
    /// `slot` came from [`take`](Self::take) and has been neither given back nor handed
    /// out by [`Packetizer::poll_transmit`] since, so nothing else reads or writes it.
    unsafe fn buffer(&mut self, slot: u16) -> &mut [u8];

    /// Buffer `slot`, taken and not handed out, is free again.
    fn give_back(&mut self, slot: u16);
}

/// The simplest [`Slots`]: `count` buffers of `size` bytes on the heap and a free list,
/// for tests and for drivers that copy packets out before giving their slots back.
#[derive(Debug, Clone)]
pub struct HeapSlots {
    bytes: Vec<u8>,
    size: usize,
    free: Vec<u16>,
}

impl HeapSlots {
    /// `count` free buffers of `size` bytes each.
    pub fn new(count: u16, size: usize) -> HeapSlots {
        HeapSlots {
            bytes: vec![0; usize::from(count) * size],
            size,
            free: (0..count).rev().collect(),
        }
    }

    /// The first `len` bytes of buffer `slot` (what a packet handed out by
    /// [`Packetizer::poll_transmit`] holds); empty for a slot that does not exist.
    pub fn packet(&self, slot: u16, len: u16) -> &[u8] {
        let start = usize::from(slot) * self.size;
        let len = usize::from(len).min(self.size);
        self.bytes.get(start..start + len).unwrap_or(&[])
    }

    /// Buffers free now.
    pub fn free(&self) -> usize {
        self.free.len()
    }
}

impl Slots for HeapSlots {
    fn take(&mut self) -> Option<u16> {
        self.free.pop()
    }

    unsafe fn buffer(&mut self, slot: u16) -> &mut [u8] {
        let start = usize::from(slot) * self.size;
        let end = (start + self.size).min(self.bytes.len());
        &mut self.bytes[start.min(end)..end]
    }

    fn give_back(&mut self, slot: u16) {
        self.free.push(slot);
    }
}

/// Why [`Packetizer::offer`] (or a publisher's or fan-out's `offer`) did not take a
/// message. The message was not consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// Every packet buffer is in use: make room (poll) and offer again.
    #[error("every packet buffer is in flight: poll and offer again")]
    Backpressure,
    /// The message can never fit in a packet of the configured datagram size.
    #[error("a {len}-byte message exceeds the {limit}-byte limit of a packet")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The longest message a packet carries.
        limit: usize,
    },
    /// The sequence numbers are used up (2^64 - 1 messages).
    #[error("the session's sequence numbers are exhausted")]
    SequenceExhausted,
    /// The session was ended: nothing more can be sent in it.
    #[error("the session has ended: start a new one to send more")]
    SessionEnded,
}

/// How a [`Packetizer`] packs.
#[derive(Debug, Clone)]
pub struct PacketizerConfig {
    /// The MoldUDP64 session name carried in every packet.
    pub session: Session,
    /// Largest datagram payload: packets are filled up to this size.
    pub max_datagram: usize,
    /// Longest a non-empty packet waits for more messages before it is closed.
    pub max_delay: Duration,
    /// Heartbeat interval while idle.
    pub heartbeat: Duration,
    /// Most closed packets held in a batch before they are due anyway.
    pub max_batch: usize,
}

impl PacketizerConfig {
    /// Defaults for `session`: 1472-byte datagrams, 100 µs maximum delay, heartbeats
    /// every second, batches of 32.
    pub fn new(session: Session) -> PacketizerConfig {
        PacketizerConfig {
            session,
            max_datagram: DEFAULT_MAX_DATAGRAM,
            max_delay: Duration::from_micros(100),
            heartbeat: Duration::from_secs(1),
            max_batch: 32,
        }
    }
}

/// What a packetizer counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketizerStats {
    /// Messages accepted by `offer`.
    pub messages: u64,
    /// Message bytes accepted.
    pub bytes: u64,
    /// Heartbeats written.
    pub heartbeats: u64,
}

/// How soon after the end of session it is first sent again (see
/// [`Packetizer::end_session`]).
const FIRST_END_REPEAT: Duration = Duration::from_millis(1);

/// How many times as long as its last hand-over took a sender counts as busy after it
/// (adaptive batching, see the module docs). With 1 (busy for as long again), a plain
/// offer loop of 32-byte messages on loopback sent about 14 packets per send, at
/// 0.72–0.85× (io_uring) and 0.68–0.81× (mmsg) the rate of the same loop between
/// `begin_batch` and `end_batch`; with 2 about 30 packets per send, at 0.88–1.16× and
/// 0.73–1.13× (`bench/README.md`, "Adaptive batching"). A packet that does wait waits at
/// most twice a send's time (and never more than `max_delay`).
pub const BUSY_FACTOR: u32 = 2;

/// The largest datagram a MoldUDP64 packet may be: a UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// The open packet.
#[derive(Debug)]
struct Open {
    slot: u16,
    builder: PacketBuilder,
    /// The sequence number of its first message.
    first: u64,
    since: Instant,
}

/// Packs messages into packets. See the module docs.
#[derive(Debug)]
pub struct Packetizer {
    session: Session,
    max_datagram: usize,
    max_message: usize,
    max_delay: Duration,
    heartbeat: Duration,
    max_batch: usize,
    open: Option<Open>,
    /// Closed packets `(slot, length)` not yet handed out (capacity reserved up front).
    ready: Vec<(u16, u16)>,
    batching: bool,
    /// Whether the closed packets are to go now. Never true with none closed (see
    /// [`Packetizer::mark_due`]): a stale mark would send the next packet to close alone.
    due: bool,
    next_sequence: u64,
    last_send: Instant,
    stats: PacketizerStats,
    /// Whether the end of session was written.
    ended: bool,
    /// After the end: how long until the end of session is sent again (1 ms, doubling
    /// up to the heartbeat interval), so that an end lost on the way is soon replaced.
    end_repeat: Duration,
    /// Where closed data packets are kept for retransmission, if anywhere.
    store: Option<RetransmitStore>,
    /// The driver's sender as it reported it (adaptive batching).
    sender: SenderState,
}

/// What a [`Packetizer`] knows of its driver's sender (see the module docs, "Adaptive
/// batching").
#[derive(Debug, Clone, Copy)]
struct SenderState {
    /// Whether the driver reports its sends at all; until it does, nothing is held.
    reported: bool,
    /// Whether a send was in flight at the last report.
    in_flight: bool,
    /// Until when the last hand-over keeps the sender busy once its sends completed.
    busy_until: Instant,
    /// When the first packet held for a busy sender was closed.
    held_since: Option<Instant>,
    /// The sender's busy time is over with sends in flight at the last report: the driver
    /// is to collect completions.
    wants_completions: bool,
}

impl Packetizer {
    /// A packetizer for `config` whose driver has `buffers` packet buffers (the most it
    /// can ever hold ready), started at `now` (the heartbeat interval counts from then).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `max_datagram` cannot hold a packet with one message
    /// header, exceeds [`MAX_DATAGRAM`], or `buffers` is 0 or above 65535.
    pub fn new(
        config: PacketizerConfig,
        buffers: usize,
        now: Instant,
    ) -> Result<Packetizer, ConfigError> {
        let min = HEADER_LEN + BLOCK_HEADER_LEN;
        if config.max_datagram < min || config.max_datagram > MAX_DATAGRAM {
            return Err(ConfigError(format!(
                "max_datagram {} is outside {min}..={MAX_DATAGRAM}",
                config.max_datagram
            )));
        }
        if buffers == 0 || buffers > usize::from(u16::MAX) {
            return Err(ConfigError(format!(
                "buffers {buffers} is outside 1..=65535"
            )));
        }
        Ok(Packetizer {
            session: config.session,
            max_datagram: config.max_datagram,
            max_message: config.max_datagram - min,
            max_delay: config.max_delay,
            heartbeat: config.heartbeat,
            max_batch: config.max_batch.max(1),
            open: None,
            ready: Vec::with_capacity(buffers),
            batching: false,
            due: false,
            next_sequence: 1,
            last_send: now,
            stats: PacketizerStats::default(),
            ended: false,
            end_repeat: FIRST_END_REPEAT,
            store: None,
            sender: SenderState {
                reported: false,
                in_flight: false,
                busy_until: now,
                held_since: None,
                wants_completions: false,
            },
        })
    }

    /// The session name in every packet.
    pub fn session(&self) -> Session {
        self.session
    }

    /// The longest message a packet can carry.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// The sequence number the next message will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The first sequence number not yet in a closed packet: every message from it on is
    /// in the open packet or still to come.
    pub fn unclosed_sequence(&self) -> u64 {
        self.open.as_ref().map_or(self.next_sequence, |o| o.first)
    }

    /// Counters so far.
    pub fn stats(&self) -> PacketizerStats {
        self.stats
    }

    /// Closed packets not yet handed out.
    pub fn held(&self) -> usize {
        self.ready.len()
    }

    /// Whether a packet is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Whether [`end_session`](Self::end_session) was called.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Keeps every data packet closed from now on in `store` (which starts at the first
    /// one it is given: give it before the first message to keep them all). Returns the
    /// store it replaces, if any.
    pub fn set_store(&mut self, store: RetransmitStore) -> Option<RetransmitStore> {
        self.store.replace(store)
    }

    /// The retransmission store, if one was given.
    pub fn store(&self) -> Option<&RetransmitStore> {
        self.store.as_ref()
    }

    /// The retransmission store, if one was given, to change.
    pub fn store_mut(&mut self) -> Option<&mut RetransmitStore> {
        self.store.as_mut()
    }

    /// Takes the retransmission store out; packets are no longer kept.
    pub fn take_store(&mut self) -> Option<RetransmitStore> {
        self.store.take()
    }

    /// Packs `msg` into the open packet (opening one in a free slot if needed) and returns
    /// its sequence number.
    ///
    /// # Errors
    ///
    /// [`OfferError`]; the message was not taken. `Backpressure` means no slot was free:
    /// make room and offer again.
    #[inline(always)]
    pub fn offer(
        &mut self,
        msg: &[u8],
        slots: &mut impl Slots,
        clock: &impl Clock,
    ) -> Result<u64, OfferError> {
        match self.offer_quiet(msg, slots) {
            Some(seq) => Ok(seq),
            None => self.offer_slow(msg, slots, clock),
        }
    }

    /// The common case of [`offer`](Self::offer), inline in the caller's loop: `msg` fits
    /// the open packet and taking it changes nothing else — inside a batch, or outside
    /// one with a maximum delay on any but every 16th message. Then
    /// [`poll_transmit`](Self::poll_transmit) and
    /// [`wants_completions`](Self::wants_completions) say what they said before, and a
    /// driver that acted on them then need not look again (callgrind counted 12
    /// instructions a message for looking after every offer). `None`: nothing was taken,
    /// offer it the slow way.
    #[inline(always)]
    pub(crate) fn offer_quiet(&mut self, msg: &[u8], slots: &mut impl Slots) -> Option<u64> {
        let quiet = self.batching || (self.next_sequence % 16 != 0 && !self.max_delay.is_zero());
        // No check against `max_message`: the open packet's builder has `max_datagram`
        // bytes, so a message it fits is never too large.
        if !quiet
            || !self
                .open
                .as_ref()
                .is_some_and(|o| o.builder.fits(msg.len()))
        {
            return None;
        }
        self.push_open(msg, slots).ok()
    }

    /// Every other case of [`offer`](Self::offer): closing the open packet and opening the
    /// next, the timers outside a batch, and the refusals. Out of line.
    #[inline(never)]
    pub(crate) fn offer_slow(
        &mut self,
        msg: &[u8],
        slots: &mut impl Slots,
        clock: &impl Clock,
    ) -> Result<u64, OfferError> {
        self.offer_slow_inline(msg, slots, clock)
    }

    /// [`offer_slow`](Self::offer_slow), inlined into a driver's own out-of-line path
    /// (one frame less for every message that closes a packet).
    #[inline(always)]
    pub(crate) fn offer_slow_inline(
        &mut self,
        msg: &[u8],
        slots: &mut impl Slots,
        clock: &impl Clock,
    ) -> Result<u64, OfferError> {
        if msg.len() > self.max_message {
            return Err(OfferError::TooLarge {
                len: msg.len(),
                limit: self.max_message,
            });
        }
        if !self
            .open
            .as_ref()
            .is_some_and(|o| o.builder.fits(msg.len()))
        {
            self.open_next(slots, clock)?;
        }
        let seq = self.push_open(msg, slots)?;
        if !self.batching {
            if self.max_delay.is_zero() {
                self.flush(slots);
            } else if seq % 16 == 0 {
                // A clock read every 16th message keeps a steady trickle from waiting for
                // a full packet without paying for one per message, and lets packets held
                // for a busy sender go once it is idle.
                let now = clock.now();
                self.flush_if_due(now, slots);
                if !self.due && !self.ready.is_empty() {
                    self.release_if_idle(now);
                }
            }
        }
        Ok(seq)
    }

    /// Appends `msg` to the open packet and gives it the next sequence number.
    #[inline(always)]
    fn push_open(&mut self, msg: &[u8], slots: &mut impl Slots) -> Result<u64, OfferError> {
        let Some(open) = self.open.as_mut() else {
            return Err(OfferError::Backpressure);
        };
        let size = self.max_datagram;
        // SAFETY: the open packet's slot is ours until it is handed out.
        let buf = unsafe { slots.buffer(open.slot) };
        let pushed = match buf.get_mut(..size) {
            Some(buf) => open.builder.push_inline(buf, msg),
            None => Err(PushError::Full),
        };
        match pushed {
            Ok(()) => {}
            Err(PushError::SequenceExhausted) => return Err(OfferError::SequenceExhausted),
            Err(_) => {
                return Err(OfferError::TooLarge {
                    len: msg.len(),
                    limit: self.max_message,
                })
            }
        }
        let seq = self.next_sequence;
        self.next_sequence += 1;
        self.stats.messages += 1;
        self.stats.bytes += msg.len() as u64;
        Ok(seq)
    }

    /// Holds closed packets until [`end_batch`](Self::end_batch) (or until `max_batch`
    /// of them wait), so that they leave together.
    pub fn begin_batch(&mut self) {
        self.batching = true;
    }

    /// The packets held since [`begin_batch`](Self::begin_batch) are due; the open
    /// packet stays open.
    pub fn end_batch(&mut self) {
        self.batching = false;
        self.mark_due();
    }

    /// The packets held in a batch (or for a busy sender) are due now (to make room), the
    /// batch goes on.
    pub fn release_held(&mut self) {
        self.mark_due();
    }

    /// The closed packets are due, if there are any. With none, nothing is marked: a
    /// batch that ended with nothing held (its packets went when it was full) must not
    /// make the next batch's first packet go alone (one extra send per two batches of
    /// one message per packet, `loopback_1024B`).
    fn mark_due(&mut self) {
        self.due = !self.ready.is_empty();
    }

    /// Whether a batch is open ([`begin_batch`](Self::begin_batch) without
    /// [`end_batch`](Self::end_batch) yet).
    pub fn is_batching(&self) -> bool {
        self.batching
    }

    /// Adaptive batching: the driver handed packets to its sender in one go, from
    /// `started` to `returned`, and `in_flight` says whether sends are still in flight
    /// after it (their completions not collected). Until they complete, and for
    /// [`BUSY_FACTOR`] times as long as the hand-over took, closed packets are held (at
    /// most `max_delay`). Call it after [`handle_transmitted`](Self::handle_transmitted).
    pub fn handle_send(&mut self, started: Instant, returned: Instant, in_flight: bool) {
        let took = returned
            .saturating_duration_since(started)
            .saturating_mul(BUSY_FACTOR)
            .min(self.max_delay);
        self.sender.reported = true;
        self.sender.in_flight = in_flight;
        self.sender.busy_until = returned + took;
        self.sender.wants_completions = false;
        if self.ready.is_empty() {
            self.sender.held_since = None;
        }
    }

    /// Adaptive batching: the driver collected finished sends at `now`; `in_flight` says
    /// whether any is still in flight. Once none is and the busy time is over, the held
    /// packets are due.
    pub fn handle_completions(&mut self, in_flight: bool, now: Instant) {
        if !self.sender.reported {
            return;
        }
        self.sender.in_flight = in_flight;
        self.sender.wants_completions = false;
        if !self.due && !self.ready.is_empty() {
            self.release_if_idle(now);
        }
    }

    /// Whether the driver is to collect finished sends and report them
    /// ([`handle_completions`](Self::handle_completions)) before packets held for its
    /// busy sender can go: they wait for a send that was in flight at the last report,
    /// and its busy time is over. Cheap: check it after every offer (a driver may skip the
    /// quiet ones: `offer_quiet`).
    pub fn wants_completions(&self) -> bool {
        self.sender.wants_completions
    }

    /// Whether the sender counts as busy at `now` (see the module docs).
    fn sender_busy(&self, now: Instant) -> bool {
        self.sender.reported && (self.sender.in_flight || now < self.sender.busy_until)
    }

    /// Makes the packets held for a busy sender due if it is idle at `now` or the first
    /// has waited `max_delay`; with sends in flight at the last report and the busy time
    /// over, asks for completions instead.
    fn release_if_idle(&mut self, now: Instant) {
        if self.batching {
            return;
        }
        let waited = self
            .sender
            .held_since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.max_delay);
        if waited || !self.sender_busy(now) {
            self.due = true;
        } else if self.sender.in_flight && now >= self.sender.busy_until {
            self.sender.wants_completions = true;
        }
    }

    /// Closes the open packet; it and everything held are due now.
    pub fn flush(&mut self, slots: &mut impl Slots) {
        self.close_open(slots);
        self.mark_due();
    }

    /// Timers: closes the open packet once it has waited `max_delay`, makes the packets
    /// held for a busy sender due (outside a batch), and writes a
    /// heartbeat (when a slot is free) if nothing was handed out for the heartbeat
    /// interval and nothing waits — after the end of session, the end-of-session packet
    /// again instead.
    pub fn handle_timeout(&mut self, now: Instant, slots: &mut impl Slots) {
        self.flush_if_due(now, slots);
        if !self.batching && !self.ready.is_empty() {
            // Held for a busy sender: the driver is idle now, so they go.
            self.due = true;
        }
        if self.open.is_none()
            && self.ready.is_empty()
            && now.saturating_duration_since(self.last_send) >= self.idle_interval()
            && self.write_control(slots, self.ended)
            && self.ended
        {
            self.end_repeat = (self.end_repeat * 2).min(self.heartbeat);
        }
    }

    /// How long nothing may be sent before a heartbeat goes (or, after the end, the end
    /// again).
    fn idle_interval(&self) -> Duration {
        if self.ended {
            self.end_repeat.min(self.heartbeat)
        } else {
            self.heartbeat
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) has something to do next: the open
    /// packet's deadline, or else the next heartbeat.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held = match self.sender.held_since {
            Some(since) if !self.due && !self.batching && !self.ready.is_empty() => {
                Some(since + self.max_delay)
            }
            _ => None,
        };
        let timer = match &self.open {
            Some(open) => Some(open.since + self.max_delay),
            None if self.ready.is_empty() => Some(self.last_send + self.idle_interval()),
            None => None,
        };
        match (held, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Closes the open packet and writes an end-of-session packet carrying the next
    /// sequence number; both are due now. From now on offers are refused, and the timers
    /// send the end again after 1 ms, 2 ms, 4 ms, ... up to every heartbeat interval (a
    /// subscriber that lost it learns of the end, and of any loss before it). Returns
    /// `false` (and writes no end) when no slot is free; called again, it writes the end
    /// again.
    pub fn end_session(&mut self, slots: &mut impl Slots) -> bool {
        self.flush(slots);
        self.ended = true;
        self.write_control(slots, true)
    }

    /// The closed packets `(slot, length)`, in order, once they are due; `None` when
    /// nothing is due. The slots are the caller's to send; report how many went with
    /// [`handle_transmitted`](Self::handle_transmitted).
    pub fn poll_transmit(&self) -> Option<&[(u16, u16)]> {
        (self.due && !self.ready.is_empty()).then_some(&self.ready[..])
    }

    /// The first `n` packets [`poll_transmit`](Self::poll_transmit) gave were handed to
    /// the network at `now` (their slots are no longer the packetizer's).
    pub fn handle_transmitted(&mut self, n: usize, now: Instant) {
        self.ready.drain(..n.min(self.ready.len()));
        if self.ready.is_empty() {
            self.due = false;
            self.sender.held_since = None;
        }
        self.last_send = now;
    }

    fn flush_if_due(&mut self, now: Instant, slots: &mut impl Slots) {
        if let Some(open) = &self.open {
            if now.saturating_duration_since(open.since) >= self.max_delay {
                self.flush(slots);
            }
        }
    }

    /// Closes the open packet (the message on offer does not fit it) and opens the next
    /// in a free slot.
    #[inline(never)]
    fn open_next(&mut self, slots: &mut impl Slots, clock: &impl Clock) -> Result<(), OfferError> {
        // After the end no packet is open, so every offer comes here: the check costs
        // nothing on the common path.
        if self.ended {
            return Err(OfferError::SessionEnded);
        }
        if self.open.is_some() {
            self.close_open(slots);
            if self.ready.len() >= self.max_batch {
                self.due = true;
            } else if !self.batching && !self.due {
                self.hold_or_release(clock);
            }
        }
        let slot = slots.take().ok_or(OfferError::Backpressure)?;
        let size = self.max_datagram;
        // SAFETY: the slot was just taken and is ours alone.
        let buf = unsafe { slots.buffer(slot) };
        let started = buf
            .get_mut(..size)
            .map(|buf| PacketBuilder::start(buf, &self.session, self.next_sequence));
        let Some(Ok(builder)) = started else {
            // Unreachable with max_datagram checked in `new` and slots at least that
            // large: give the slot back rather than panic.
            slots.give_back(slot);
            return Err(OfferError::Backpressure);
        };
        self.open = Some(Open {
            slot,
            builder,
            first: self.next_sequence,
            since: clock.now(),
        });
        Ok(())
    }

    /// A packet just closed outside a batch: due at once unless the sender is busy (see
    /// the module docs), else held, the clock read only for a driver that reports sends.
    fn hold_or_release(&mut self, clock: &impl Clock) {
        if !self.sender.reported {
            self.due = true;
            return;
        }
        let now = clock.now();
        self.release_if_idle(now);
        if !self.due && self.sender.held_since.is_none() {
            self.sender.held_since = Some(now);
        }
    }

    fn close_open(&mut self, slots: &mut impl Slots) {
        if let Some(mut open) = self.open.take() {
            // SAFETY: the open packet's slot is ours until it is handed out.
            let buf = unsafe { slots.buffer(open.slot) };
            let len = open.builder.finish(buf);
            if let Some(store) = self.store.as_mut() {
                store.append_packet(buf.get(..len).unwrap_or_default());
            }
            self.ready.push((open.slot, len as u16));
        }
    }

    /// Writes a heartbeat (or, `end`, an end-of-session packet) carrying the next
    /// sequence number into a free slot; returns whether it did. It is due at once.
    fn write_control(&mut self, slots: &mut impl Slots, end: bool) -> bool {
        let Some(slot) = slots.take() else {
            return false;
        };
        // SAFETY: the slot was just taken and is ours alone.
        let buf = unsafe { slots.buffer(slot) };
        let written = if end {
            write_end_of_session(buf, &self.session, self.next_sequence)
        } else {
            write_heartbeat(buf, &self.session, self.next_sequence)
        };
        match written {
            Ok(len) => {
                self.ready.push((slot, len as u16));
                self.stats.heartbeats += u64::from(!end);
                self.due = true;
                true
            }
            Err(_) => {
                slots.give_back(slot);
                false
            }
        }
    }
}

/// A packetizer setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::FakeClock;
    use crate::wire::{Packet, PacketKind};

    const SIZE: usize = 100;

    /// A packetizer of 100-byte packets (batches of three), its buffers and a fake clock.
    struct Fixture {
        clock: FakeClock,
        p: Packetizer,
        b: HeapSlots,
    }

    impl Fixture {
        fn new(buffers: u16) -> Fixture {
            let clock = FakeClock::new();
            let config = PacketizerConfig {
                max_datagram: SIZE,
                max_batch: 3,
                ..PacketizerConfig::new(Session::from_bytes(*b"UNIT      "))
            };
            let p = Packetizer::new(config, usize::from(buffers), clock.now())
                .unwrap_or_else(|e| panic!("{e}"));
            let b = HeapSlots::new(buffers, SIZE);
            Fixture { clock, p, b }
        }

        fn offer(&mut self, msg: &[u8]) -> Result<u64, OfferError> {
            self.p.offer(msg, &mut self.b, &self.clock)
        }

        /// Offers a message that must be taken.
        fn take(&mut self, msg: &[u8]) {
            self.offer(msg).unwrap_or_else(|e| panic!("{e}"));
        }

        /// Moves the clock by `by` and runs the timers.
        fn tick(&mut self, by: Duration) {
            self.clock.advance(by);
            self.p.handle_timeout(self.clock.now(), &mut self.b);
        }

        fn packet(&self, (slot, len): (u16, u16)) -> Packet<&[u8]> {
            Packet::new_checked(self.b.packet(slot, len))
                .unwrap_or_else(|e| panic!("a bad packet: {e}"))
        }

        /// Hands out everything due, giving the slots back; returns the packets' (first
        /// sequence, count) pairs.
        fn transmit(&mut self) -> Vec<(u64, u16)> {
            let Some(ready) = self.p.poll_transmit().map(<[_]>::to_vec) else {
                return Vec::new();
            };
            let out = ready
                .iter()
                .map(|&r| (self.packet(r).sequence(), self.packet(r).count()))
                .collect();
            self.p.handle_transmitted(ready.len(), self.clock.now());
            ready
                .into_iter()
                .for_each(|(slot, _)| self.b.give_back(slot));
            out
        }
    }

    #[test]
    fn a_message_that_does_not_fit_closes_the_packet_and_it_is_due() {
        let mut f = Fixture::new(4);
        // 100-byte datagrams: 20 header + blocks of 2 + 30 bytes: two fit, the third not.
        f.take(&[7; 30]);
        f.take(&[7; 30]);
        assert!(f.p.poll_transmit().is_none());
        assert_eq!(f.offer(&[7; 30]), Ok(3));
        assert_eq!(f.transmit(), [(1, 2)]);
        assert_eq!(f.p.unclosed_sequence(), 3);
    }

    #[test]
    fn an_open_packet_is_closed_at_its_deadline_of_the_fake_clock_not_before() {
        let mut f = Fixture::new(4);
        f.take(b"one");
        let deadline = f.p.poll_timeout().unwrap_or_else(|| panic!("a deadline"));
        f.tick(Duration::from_micros(99));
        assert!(f.p.poll_transmit().is_none(), "before the deadline");
        f.tick(Duration::from_micros(1));
        assert_eq!(f.clock.now(), deadline);
        assert_eq!(f.transmit(), [(1, 1)]);
    }

    #[test]
    fn an_idle_packetizer_writes_heartbeats_with_the_next_sequence_number() {
        let mut f = Fixture::new(4);
        f.take(b"one");
        f.p.flush(&mut f.b);
        assert_eq!(f.transmit(), [(1, 1)]);
        f.tick(Duration::from_millis(999));
        assert!(f.p.poll_transmit().is_none(), "not yet a second of silence");
        f.tick(Duration::from_millis(1));
        let ready = f.p.poll_transmit().map(<[_]>::to_vec).unwrap_or_default();
        assert_eq!(ready.len(), 1);
        let heartbeat = f.packet(ready[0]);
        assert_eq!(heartbeat.kind(), PacketKind::Heartbeat);
        assert_eq!(heartbeat.sequence(), 2);
        assert_eq!(f.p.stats().heartbeats, 1);
    }

    #[test]
    fn a_batch_holds_closed_packets_until_it_ends_or_is_full() {
        let mut f = Fixture::new(8);
        f.p.begin_batch();
        // Each 78-byte message fills a packet: the fifth offer closes the fourth packet,
        // and four held packets exceed the batch of three.
        for _ in 0..3 {
            f.take(&[1; 78]);
        }
        assert!(f.p.poll_transmit().is_none(), "two closed packets are held");
        f.take(&[1; 78]);
        assert_eq!(f.transmit().len(), 3, "the batch is full");
        f.take(&[1; 78]);
        assert!(f.p.poll_transmit().is_none());
        f.p.end_batch();
        assert_eq!(f.transmit(), [(4, 1)]);
    }

    #[test]
    fn a_batch_that_ends_with_nothing_held_leaves_the_next_batch_whole() {
        let mut f = Fixture::new(8);
        // Packets of one 78-byte message: the fourth offer closes the third packet and
        // fills the batch, so it ends with nothing held and the fourth packet open.
        f.p.begin_batch();
        for _ in 0..4 {
            f.take(&[1; 78]);
        }
        assert_eq!(f.transmit().len(), 3, "the batch is full");
        f.p.end_batch();
        assert!(f.p.poll_transmit().is_none(), "nothing was held");
        // The next batch's first offer closes the packet left open: it is held with the
        // batch, not sent alone.
        f.p.begin_batch();
        f.take(&[2; 78]);
        assert!(f.p.poll_transmit().is_none(), "held with the next batch");
        f.take(&[2; 78]);
        f.take(&[2; 78]);
        assert_eq!(f.transmit(), [(4, 1), (5, 1), (6, 1)], "one batch of three");
    }

    #[test]
    fn without_a_free_slot_an_offer_is_refused_unnumbered_and_taken_after_room_is_made() {
        let mut f = Fixture::new(1);
        assert_eq!(f.offer(&[1; 78]), Ok(1));
        // The only slot holds the open packet: the next message closes it and finds none.
        assert_eq!(f.offer(&[2; 78]), Err(OfferError::Backpressure));
        assert_eq!(f.p.next_sequence(), 2, "refused messages take no number");
        assert_eq!(f.transmit(), [(1, 1)]);
        assert_eq!(f.offer(&[2; 78]), Ok(2));
    }

    #[test]
    fn the_end_of_session_follows_the_last_message() {
        let mut f = Fixture::new(4);
        f.take(b"last");
        assert!(f.p.end_session(&mut f.b));
        assert_eq!(
            f.transmit(),
            [(1, 1), (2, crate::wire::END_OF_SESSION_COUNT)]
        );
    }

    #[test]
    fn a_store_keeps_every_data_packet_as_it_is_closed_and_no_heartbeat() {
        use crate::core::store::{Answer, StoreConfig};
        let mut f = Fixture::new(4);
        let store = RetransmitStore::new(&StoreConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(f.p.set_store(store).is_none());
        f.take(&[1; 30]);
        f.take(&[2; 30]);
        assert_eq!(
            f.p.store().map(RetransmitStore::next),
            Some(1),
            "still open"
        );
        f.take(&[3; 30]);
        assert_eq!(
            f.p.store().map(RetransmitStore::next),
            Some(3),
            "closed: stored"
        );
        let sent = f.transmit();
        f.tick(Duration::from_millis(1));
        assert_eq!(
            sent.len() + f.transmit().len(),
            2,
            "the packet and the third message"
        );
        f.tick(Duration::from_secs(1));
        assert_eq!(f.transmit().len(), 1, "a heartbeat");
        let store = f.p.take_store().unwrap_or_else(|| panic!("a store"));
        assert_eq!((store.first(), store.next()), (1, 4));
        assert_eq!(store.stats().packets, 2);
        let mut buf = [0u8; SIZE];
        let Answer::Written { len, messages: 2 } = store.answer(&f.p.session(), 1, 9, &mut buf)
        else {
            panic!("no answer")
        };
        let sent = Packet::new_checked(&buf[..len]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            sent.messages().collect::<Vec<_>>(),
            [&[1u8; 30][..], &[2; 30]]
        );
    }

    #[test]
    fn after_the_end_offers_are_refused_and_the_idle_timer_sends_the_end_again() {
        let mut f = Fixture::new(4);
        f.take(b"last");
        assert!(f.p.end_session(&mut f.b));
        assert!(f.p.is_ended());
        assert_eq!(f.offer(b"more"), Err(OfferError::SessionEnded));
        assert_eq!(f.transmit().len(), 2);
        // Again after 1 ms, 2 ms, 4 ms ... and then every heartbeat interval (1 s here).
        let mut waits = Vec::new();
        for _ in 0..12 {
            let mut waited = 0;
            loop {
                f.tick(Duration::from_millis(1));
                waited += 1;
                let sent = f.transmit();
                if !sent.is_empty() {
                    assert_eq!(
                        sent,
                        [(2, crate::wire::END_OF_SESSION_COUNT)],
                        "the end again, not a heartbeat"
                    );
                    break;
                }
            }
            waits.push(waited);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000]);
        assert_eq!(f.p.stats().heartbeats, 0);
        assert_eq!(f.p.next_sequence(), 2);
    }

    /// A message that fills a 100-byte packet on its own.
    const FULL: [u8; 78] = [9; 78];

    impl Fixture {
        /// Hands out what is due as one send that took `took` and leaves `in_flight`, and
        /// reports it; returns the packets' (first sequence, count) pairs.
        fn send(&mut self, took: Duration, in_flight: bool) -> Vec<(u64, u16)> {
            let started = self.clock.now();
            self.clock.advance(took);
            let sent = self.transmit();
            if !sent.is_empty() {
                self.p.handle_send(started, self.clock.now(), in_flight);
            }
            sent
        }

        /// Eight buffers, and the first full packet sent at once by an idle sender whose
        /// send stays in flight; message 2 is in the open packet.
        fn with_a_send_in_flight() -> Fixture {
            let mut f = Fixture::new(8);
            f.take(&FULL);
            f.take(&FULL);
            assert_eq!(f.send(Duration::ZERO, true), [(1, 1)], "idle: at once");
            f
        }
    }

    #[test]
    fn an_idle_senders_first_full_packet_is_due_at_once() {
        let mut f = Fixture::new(8);
        // A send long ago: the sender is idle.
        f.take(&FULL);
        f.p.flush(&mut f.b);
        assert_eq!(f.send(Duration::from_micros(5), false), [(1, 1)]);
        f.clock.advance(Duration::from_millis(1));
        f.take(&FULL);
        f.take(&FULL);
        assert_eq!(
            f.p.poll_transmit().map(<[_]>::len),
            Some(1),
            "the packet closed by the second message goes now"
        );
    }

    #[test]
    fn packets_closed_while_a_send_is_in_flight_leave_together_when_it_completes() {
        let mut f = Fixture::with_a_send_in_flight();
        f.clock.advance(Duration::from_micros(10));
        f.take(&FULL);
        assert!(f.p.poll_transmit().is_none(), "the send is in flight");
        assert!(f.p.wants_completions(), "its busy time is over: collect");
        f.p.handle_completions(true, f.clock.now());
        assert!(f.p.poll_transmit().is_none(), "still in flight");
        f.take(&FULL);
        assert!(f.p.poll_transmit().is_none(), "two wait");
        f.clock.advance(Duration::from_micros(10));
        f.p.handle_completions(false, f.clock.now());
        assert_eq!(f.transmit(), [(2, 1), (3, 1)], "together, in order");
    }

    #[test]
    fn packets_filled_faster_than_a_send_takes_wait_for_company() {
        let mut f = Fixture::new(8);
        f.take(&FULL);
        f.take(&FULL);
        // The send took 10 µs and completed within the hand-over.
        assert_eq!(f.send(Duration::from_micros(10), false), [(1, 1)]);
        f.clock.advance(Duration::from_micros(4));
        f.take(&FULL);
        assert!(
            f.p.poll_transmit().is_none(),
            "4 µs after a 10 µs send: busy"
        );
        assert!(!f.p.wants_completions(), "nothing in flight to collect");
        f.clock.advance(Duration::from_micros(15));
        f.take(&FULL);
        assert!(
            f.p.poll_transmit().is_none(),
            "19 µs after: busy (twice the send's time)"
        );
        f.clock.advance(Duration::from_micros(1));
        f.take(&FULL);
        assert_eq!(
            f.transmit(),
            [(2, 1), (3, 1), (4, 1)],
            "busy no more: together"
        );
    }

    #[test]
    fn max_batch_bounds_the_packets_held_for_a_busy_sender() {
        let mut f = Fixture::with_a_send_in_flight();
        for _ in 0..2 {
            f.take(&FULL);
        }
        assert!(f.p.poll_transmit().is_none(), "two held");
        f.take(&FULL);
        assert_eq!(f.transmit().len(), 3, "the third makes a full batch");
    }

    #[test]
    fn max_delay_bounds_the_wait_for_a_send_that_never_completes() {
        let mut f = Fixture::with_a_send_in_flight();
        f.take(&FULL);
        assert_eq!(
            f.p.poll_timeout(),
            Some(f.clock.now() + Duration::from_micros(100)),
            "the held packet's deadline"
        );
        f.clock.advance(Duration::from_micros(99));
        // Small messages: the 16th offer reads the clock.
        for _ in 0..12 {
            f.take(b"x");
        }
        assert!(f.p.poll_transmit().is_none(), "not yet waited max_delay");
        f.clock.advance(Duration::from_micros(1));
        f.take(b"x");
        assert_eq!(f.p.next_sequence(), 17, "the 16th offer reads the clock");
        assert_eq!(f.transmit(), [(2, 1), (3, 1)], "waited max_delay: due");
    }

    #[test]
    fn flush_poll_and_end_session_release_held_packets() {
        for release in 0..3 {
            let mut f = Fixture::with_a_send_in_flight();
            f.take(&FULL);
            assert!(f.p.poll_transmit().is_none());
            match release {
                0 => f.p.flush(&mut f.b),
                1 => f.p.handle_timeout(f.clock.now(), &mut f.b),
                _ => assert!(f.p.end_session(&mut f.b)),
            }
            let sent: Vec<u64> = f.transmit().iter().map(|&(seq, _)| seq).collect();
            match release {
                0 => assert_eq!(sent, [2, 3], "flush: the held and the open packet"),
                1 => assert_eq!(sent, [2], "poll: the held packet"),
                _ => assert_eq!(sent, [2, 3, 4], "the end follows everything"),
            }
        }
    }

    #[test]
    fn a_driver_that_never_reports_sends_gets_every_packet_at_once() {
        let mut f = Fixture::new(8);
        f.take(&FULL);
        for seq in 2..6 {
            f.take(&FULL);
            assert_eq!(f.transmit(), [(seq - 1, 1)]);
        }
    }

    #[test]
    fn nothing_is_lost_or_reordered_while_packets_wait_for_a_busy_sender() {
        let mut f = Fixture::new(6);
        let mut rng = fastrand::Rng::with_seed(14);
        let mut in_flight = false;
        let mut next = 1u64;
        let mut check = |sent: &[(u64, u16)]| {
            for &(seq, count) in sent {
                assert_eq!(seq, next, "in order, none missing");
                next += u64::from(count);
            }
        };
        let mut seq = 1;
        while seq <= 5_000 {
            let len = rng.usize(1..=78);
            match f.offer(&vec![1; len]) {
                Ok(got) => {
                    assert_eq!(got, seq);
                    seq += 1;
                }
                Err(OfferError::Backpressure) => {
                    in_flight = false;
                    f.p.handle_completions(false, f.clock.now());
                    f.p.release_held();
                }
                Err(e) => panic!("{e}"),
            }
            f.clock.advance(Duration::from_micros(rng.u64(0..4)));
            if f.p.wants_completions() || rng.u8(..) < 20 {
                in_flight = rng.bool();
                f.p.handle_completions(in_flight, f.clock.now());
            }
            if rng.u8(..) < 3 {
                f.p.handle_timeout(f.clock.now(), &mut f.b);
            }
            let took = Duration::from_micros(rng.u64(0..8));
            let sent = f.send(took, in_flight || rng.bool());
            check(&sent);
        }
        f.p.flush(&mut f.b);
        check(&f.transmit());
        assert_eq!(next, 5_001, "every message was handed out");
    }

    /// What a driver looks at: what is due, whether completions are wanted, the next
    /// deadline (from the fake clock's start) and how many packets are held.
    type LookedAt = (Option<Vec<(u16, u16)>>, bool, Option<Duration>, usize);

    /// What a driver looks at after an offer.
    fn looked_at(f: &Fixture) -> LookedAt {
        let start = f.clock.now() - f.clock.elapsed();
        (
            f.p.poll_transmit().map(<[_]>::to_vec),
            f.p.wants_completions(),
            f.p.poll_timeout()
                .map(|t| t.saturating_duration_since(start)),
            f.p.held(),
        )
    }

    #[test]
    fn a_quiet_offer_changes_nothing_a_driver_looks_at_and_does_what_the_slow_way_does() {
        // `f` offers as drivers do (quiet, else slow), `g` always the slow way; both see
        // the same batches, timers, partial sends and completions.
        let (mut f, mut g) = (Fixture::new(6), Fixture::new(6));
        let mut rng = fastrand::Rng::with_seed(10);
        let (mut quiet, mut slow) = (0u32, 0u32);
        for _ in 0..20_000 {
            let op = rng.u8(..);
            let (n, in_flight) = (rng.usize(..8), rng.bool());
            let msg = vec![3; rng.usize(1..=80)];
            let step = Duration::from_micros(rng.u64(0..6));
            let mut sent = Vec::new();
            for (x, is_f) in [(&mut f, true), (&mut g, false)] {
                match op {
                    0..=9 => x.p.begin_batch(),
                    10..=14 => x.p.end_batch(),
                    15..=17 => x.p.handle_timeout(x.clock.now(), &mut x.b),
                    18..=29 => {
                        // A sender that takes only some of what is due leaves the rest.
                        let ready = x.p.poll_transmit().map(<[_]>::to_vec).unwrap_or_default();
                        let n = n.min(ready.len());
                        let bytes: Vec<Vec<u8>> = ready[..n]
                            .iter()
                            .map(|&(s, l)| x.b.packet(s, l).to_vec())
                            .collect();
                        let started = x.clock.now();
                        x.p.handle_transmitted(n, started);
                        ready[..n].iter().for_each(|&(slot, _)| x.b.give_back(slot));
                        x.p.handle_send(started, started + step, in_flight);
                        sent.push(bytes);
                    }
                    30..=39 => x.p.handle_completions(in_flight, x.clock.now()),
                    _ if is_f => {
                        let before = looked_at(x);
                        let next = x.p.next_sequence();
                        match x.p.offer_quiet(&msg, &mut x.b) {
                            Some(seq) => {
                                quiet += 1;
                                assert_eq!(seq, next);
                                assert_eq!(looked_at(x), before, "a quiet offer changed it");
                            }
                            None => {
                                slow += 1;
                                assert_eq!(x.p.next_sequence(), next, "None took nothing");
                                let _ = x.p.offer_slow(&msg, &mut x.b, &x.clock);
                            }
                        }
                    }
                    _ => {
                        let _ = x.p.offer_slow(&msg, &mut x.b, &x.clock);
                    }
                }
                x.clock.advance(step);
            }
            assert_eq!(looked_at(&f), looked_at(&g), "after op {op}");
            assert_eq!(f.p.next_sequence(), g.p.next_sequence());
            if let [a, b] = &sent[..] {
                assert_eq!(a, b, "the same packets, byte for byte");
            }
        }
        assert!(
            quiet > 1_000 && slow > 1_000,
            "both ways: {quiet} quiet, {slow} slow"
        );
    }

    #[test]
    fn oversized_messages_and_bad_settings_are_refused() {
        let mut f = Fixture::new(4);
        assert_eq!(
            f.offer(&[0; 79]),
            Err(OfferError::TooLarge { len: 79, limit: 78 })
        );
        let session = Session::from_bytes(*b"UNIT      ");
        let tiny = PacketizerConfig {
            max_datagram: 21,
            ..PacketizerConfig::new(session)
        };
        assert!(Packetizer::new(tiny, 4, f.clock.now()).is_err());
        assert!(Packetizer::new(PacketizerConfig::new(session), 0, f.clock.now()).is_err());
    }
}
