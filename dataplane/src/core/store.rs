//! The retransmission store (sans-IO): the last messages a publisher sent, kept so that a
//! re-request server can send them again.
//!
//! # What it keeps
//!
//! The message *blocks* (each the 2-byte big-endian length and the message, exactly as
//! they follow the 20-byte header of a MoldUDP64 packet) of the newest messages, at most
//! [`StoreConfig::messages`] of them and at most [`StoreConfig::bytes`] bytes of blocks.
//! Appending past either bound evicts the oldest messages first, so the stored
//! sequence numbers are always one unbroken range [`first`](RetransmitStore::first)
//! ..[`next`](RetransmitStore::next).
//!
//! # Layout
//!
//! - A byte arena of `bytes` bytes, used as a ring: the blocks lie one after the other in
//!   sequence order, a block may run over the end of the arena and go on at its start.
//! - An index of one `u64` per sequence slot (`messages` slots, sequence `s` in slot
//!   `s % messages`): the absolute offset of the block of `s`, counted in bytes ever
//!   stored (the arena position is the offset modulo `bytes`). The block of `s` ends where
//!   the block of `s + 1` starts, so lengths need no room of their own.
//!
//! Both are allocated once, in [`RetransmitStore::new`], zeroed by the allocator (the
//! kernel backs such memory lazily, so an idle 128 MiB store costs address space, not
//! memory). Nothing allocates after that.
//!
//! # Costs
//!
//! [`append_packet`](RetransmitStore::append_packet) checks the packet in one walk over
//! its blocks (noting their offsets), writes one index entry per message from those, and
//! copies all its blocks in one or two `memcpy`s; evicting by count is one step per
//! packet, by bytes one index read per message, so appending is amortised O(1) per
//! message.
//! [`answer`](RetransmitStore::answer) reads one index entry per message it answers with
//! and copies their blocks, consecutive in the arena, in one or two `memcpy`s.
//!
//! # Contract
//!
//! - Nothing here panics, whatever the bytes appended or the request answered; what is
//!   ignored is counted ([`StoreStats`]).
//! - Packets must continue the numbering: the first data packet appended sets where the
//!   store starts, every later one must begin at [`next`](RetransmitStore::next). One
//!   that does not is ignored and counted (`discontinuous`).
//! - Absolute offsets are `u64` byte counts: they would wrap after 2^64 bytes stored
//!   (over fifty years at 10 GB/s); the arithmetic wraps rather than panics.
//!
//! ```
//! use multipoint_dataplane::core::store::{Answer, RetransmitStore, StoreConfig};
//! use multipoint_dataplane::wire::{pack_all, Packet, Session};
//!
//! let session = Session::new("FEED1")?;
//! let mut store = RetransmitStore::new(&StoreConfig { messages: 2, bytes: 1024 })?;
//! let msgs: [&[u8]; 3] = [b"one", b"two", b"three"];
//! for packet in pack_all(&session, 1, 1472, msgs)? {
//!     store.append_packet(&packet);
//! }
//! assert_eq!((store.first(), store.next()), (2, 4), "two messages are kept");
//! let mut reply = [0u8; 1472];
//! let Answer::Written { len, messages } = store.answer(&session, 2, 10, &mut reply) else {
//!     unreachable!()
//! };
//! let packet = Packet::new_checked(&reply[..len])?;
//! assert_eq!((packet.sequence(), messages), (2, 2));
//! assert_eq!(packet.messages().collect::<Vec<_>>(), [b"two" as &[u8], b"three"]);
//! assert_eq!(store.answer(&session, 1, 1, &mut reply), Answer::NoLongerStored);
//! assert_eq!(store.answer(&session, 4, 1, &mut reply), Answer::NotYetSent);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::packetizer::{ConfigError, MAX_DATAGRAM};
use crate::wire::{
    Packet, PacketKind, Session, BLOCK_HEADER_LEN, HEADER_LEN, MAX_MESSAGE_COUNT, SESSION_LEN,
};

/// The most message blocks a packet of at most [`MAX_DATAGRAM`] bytes holds.
const MAX_BLOCKS: usize = (MAX_DATAGRAM - HEADER_LEN) / BLOCK_HEADER_LEN;

/// How much a [`RetransmitStore`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most messages kept (each costs an 8-byte index entry, allocated up front).
    pub messages: usize,
    /// Most bytes of message blocks kept (each message costs its length plus 2).
    pub bytes: usize,
}

impl StoreConfig {
    /// The default number of messages kept: one second of a busy feed at 1 M msgs/s.
    pub const DEFAULT_MESSAGES: usize = 1_000_000;
    /// The default arena: 128 MiB, a million messages of up to 132 bytes.
    pub const DEFAULT_BYTES: usize = 128 << 20;
}

impl Default for StoreConfig {
    /// [`DEFAULT_MESSAGES`](Self::DEFAULT_MESSAGES) messages in
    /// [`DEFAULT_BYTES`](Self::DEFAULT_BYTES) bytes.
    fn default() -> StoreConfig {
        StoreConfig {
            messages: StoreConfig::DEFAULT_MESSAGES,
            bytes: StoreConfig::DEFAULT_BYTES,
        }
    }
}

/// What a store holds and counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// The oldest sequence number stored (equal to `next` when none is).
    pub first: u64,
    /// One past the newest sequence number stored.
    pub next: u64,
    /// Bytes of message blocks stored now.
    pub stored_bytes: u64,
    /// Data packets appended.
    pub packets: u64,
    /// Messages in them.
    pub messages: u64,
    /// Messages evicted: pushed out by newer ones (by count or by bytes), or never kept
    /// because a packet held more messages, or more bytes of them, than the store does.
    pub evicted: u64,
    /// Data packets ignored because they did not begin at [`RetransmitStore::next`].
    pub discontinuous: u64,
    /// Packets ignored because they are not well-formed MoldUDP64 packets (or carry
    /// sequence number 0).
    pub malformed: u64,
}

/// What [`RetransmitStore::answer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A data packet of `messages` whole messages (at least one), from the requested
    /// sequence number on, fills the first `len` bytes of the buffer.
    Written {
        /// Length of the packet.
        len: usize,
        /// Messages in it.
        messages: u16,
    },
    /// The requested sequence number was not stored yet (it is at or past
    /// [`RetransmitStore::next`]).
    NotYetSent,
    /// The requested sequence number fell out of the store (or was never in it): it is
    /// below [`RetransmitStore::first`].
    NoLongerStored,
    /// The message at the requested sequence number does not fit the buffer: a packet of
    /// it alone needs `needed` bytes.
    TooLarge {
        /// Length of a packet of that one message.
        needed: usize,
    },
}

/// The last messages sent, by sequence number. See the module docs.
pub struct RetransmitStore {
    arena: Box<[u8]>,
    /// Absolute offset of the block of sequence `s` at `s % index.len()`, for `s` in
    /// `first..next`.
    index: Box<[u64]>,
    /// Whether a data packet was appended yet (the first one sets where the store starts).
    started: bool,
    first: u64,
    next: u64,
    /// Absolute offset of the block of `first` (equal to `tail` when nothing is stored).
    head: u64,
    /// Absolute offset one past the block of `next - 1`.
    tail: u64,
    /// The index slots of `first` and `next`, kept as they move (a 64-bit division per
    /// message would cost more than the rest of storing it).
    first_slot: usize,
    next_slot: usize,
    /// The offset of each block of the packet being appended, from the walk that checks
    /// it (room for the most blocks a datagram holds).
    offsets: Box<[u16]>,
    stats: StoreStats,
}

impl std::fmt::Debug for RetransmitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetransmitStore")
            .field("messages", &self.index.len())
            .field("bytes", &self.arena.len())
            .field("first", &self.first)
            .field("next", &self.next)
            .field("stored_bytes", &self.stored_bytes())
            .finish()
    }
}

impl RetransmitStore {
    /// An empty store of `config`'s size, its arena and index allocated now.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `messages` or `bytes` is 0, or too large to allocate.
    pub fn new(config: &StoreConfig) -> Result<RetransmitStore, ConfigError> {
        let max_bytes = isize::MAX as usize;
        if config.messages == 0 || config.bytes == 0 {
            return Err(ConfigError(format!(
                "a retransmission store of {} messages and {} bytes keeps nothing: give both \
                 at least 1",
                config.messages, config.bytes
            )));
        }
        if config.bytes > max_bytes || config.messages > max_bytes / 8 {
            return Err(ConfigError(format!(
                "a retransmission store of {} messages and {} bytes is too large to allocate",
                config.messages, config.bytes
            )));
        }
        Ok(RetransmitStore {
            arena: vec![0; config.bytes].into_boxed_slice(),
            index: vec![0; config.messages].into_boxed_slice(),
            started: false,
            first: 1,
            next: 1,
            head: 0,
            tail: 0,
            first_slot: 1 % config.messages,
            next_slot: 1 % config.messages,
            offsets: vec![0; MAX_BLOCKS].into_boxed_slice(),
            stats: StoreStats::default(),
        })
    }

    /// The oldest sequence number stored; equal to [`next`](Self::next) when nothing is.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// One past the newest sequence number stored: the number the next appended packet
    /// must begin with (1 before the first packet, which may begin anywhere).
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Messages stored now.
    pub fn len(&self) -> u64 {
        self.next - self.first
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.first == self.next
    }

    /// Bytes of message blocks stored now.
    pub fn stored_bytes(&self) -> u64 {
        self.tail.wrapping_sub(self.head)
    }

    /// The most messages and bytes it keeps.
    pub fn config(&self) -> StoreConfig {
        StoreConfig {
            messages: self.index.len(),
            bytes: self.arena.len(),
        }
    }

    /// What it holds and counted so far.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            first: self.first,
            next: self.next,
            stored_bytes: self.stored_bytes(),
            ..self.stats
        }
    }

    /// Stores the messages of `packet`, one closed MoldUDP64 packet, evicting the oldest
    /// messages as far as needed to stay within both bounds. Heartbeats and end-of-session
    /// packets carry nothing to store and are passed over; a packet that is not
    /// well-formed (as [`Packet::new_checked`] says, or longer than a UDP datagram can
    /// be), or (after the first) does not begin at [`next`](Self::next), is ignored and
    /// counted.
    pub fn append_packet(&mut self, packet: &[u8]) {
        let Some((sequence, count, blocks)) = self.check(packet) else {
            return;
        };
        if !self.started {
            self.started = true;
            self.first = sequence;
            self.next = sequence;
            self.first_slot = self.slot(sequence);
            self.next_slot = self.first_slot;
        }
        self.stats.packets += 1;
        self.stats.messages += count as u64;

        // The leading blocks that could never be kept (more messages, or more bytes, than
        // the store holds) push everything out and are counted as evicted at once.
        let skip = self.unstorable_prefix(blocks.len(), count);
        let skip_bytes = self.block_offset(skip, count, blocks.len());
        if skip > 0 {
            self.stats.evicted += self.len() + skip as u64;
            self.first = sequence + skip as u64;
            self.next = self.first;
            self.first_slot = self.slot(self.first);
            self.next_slot = self.first_slot;
            self.head = self.tail;
        }
        let kept = blocks.get(skip_bytes..).unwrap_or(&[]);
        let len = kept.len() as u64;
        let count = count - skip;

        // By count, in one step: exactly as many as the packet brings beyond the bound.
        let over = (self.len() + count as u64).saturating_sub(self.index.len() as u64);
        if over > 0 {
            self.first += over;
            self.first_slot = self.advance(self.first_slot, over as usize);
            self.head = self.offset_at(self.first, self.first_slot);
            self.stats.evicted += over;
        }
        // By bytes, one message at a time (each is one index read).
        while self.stored_bytes() + len > self.arena.len() as u64 && self.first < self.next {
            self.first += 1;
            self.first_slot = self.advance(self.first_slot, 1);
            self.head = self.offset_at(self.first, self.first_slot);
            self.stats.evicted += 1;
        }

        // The index entries, in at most two runs of consecutive slots (no dependency from
        // one to the next: the walk that found the offsets was done in `check`).
        let base = self.tail.wrapping_sub(skip_bytes as u64);
        let offsets = self.offsets.get(skip..skip + count).unwrap_or(&[]);
        let to_end = offsets.len().min(self.index.len() - self.next_slot);
        let (before_end, after_wrap) = offsets.split_at(to_end);
        let runs = [(self.next_slot, before_end), (0, after_wrap)];
        for (at, offsets) in runs {
            if let Some(entries) = self.index.get_mut(at..at + offsets.len()) {
                for (entry, &offset) in entries.iter_mut().zip(offsets) {
                    *entry = base.wrapping_add(u64::from(offset));
                }
            }
        }
        self.write_arena(self.tail, kept);
        self.tail = self.tail.wrapping_add(len);
        self.next += count as u64;
        self.next_slot = self.advance(self.next_slot, count);
    }

    /// Checks `packet` in one walk over its blocks, leaving the offset of each block in
    /// `offsets`: its first sequence number, message count and blocks if it is a data
    /// packet to store; else counts what is wrong with it (nothing, for a heartbeat or an
    /// end of session) and returns `None`.
    fn check<'p>(&mut self, packet: &'p [u8]) -> Option<(u64, usize, &'p [u8])> {
        let view = Packet::new_unchecked(packet);
        if packet.len() < HEADER_LEN || packet.len() > MAX_DATAGRAM {
            self.stats.malformed += 1;
            return None;
        }
        if view.kind() != PacketKind::Data {
            self.stats.malformed += u64::from(packet.len() != HEADER_LEN);
            return None;
        }
        let sequence = view.sequence();
        let count = view.count();
        if sequence == 0 || sequence.checked_add(u64::from(count)).is_none() {
            self.stats.malformed += 1;
            return None;
        }
        if self.started && sequence != self.next {
            self.stats.discontinuous += 1;
            return None;
        }
        let blocks = packet.get(HEADER_LEN..).unwrap_or(&[]);
        let count = usize::from(count);
        let mut at = 0usize;
        for i in 0..count {
            let (Some(&[hi, lo]), Some(offset)) = (
                blocks.get(at..at + BLOCK_HEADER_LEN),
                self.offsets.get_mut(i),
            ) else {
                self.stats.malformed += 1;
                return None;
            };
            // Below MAX_DATAGRAM, checked above.
            *offset = at as u16;
            at += BLOCK_HEADER_LEN + usize::from(u16::from_be_bytes([hi, lo]));
        }
        if at != blocks.len() {
            self.stats.malformed += 1;
            return None;
        }
        Some((sequence, count, blocks))
    }

    /// Writes a data packet of whole stored messages into `buf`: from `sequence` on, at
    /// most `count` of them (a `count` of 0 is taken as 1, and at most
    /// [`MAX_MESSAGE_COUNT`]), as many as fit `buf.len()` bytes, under `session`'s name.
    pub fn answer(&self, session: &Session, sequence: u64, count: u16, buf: &mut [u8]) -> Answer {
        if sequence >= self.next {
            return Answer::NotYetSent;
        }
        if sequence < self.first {
            return Answer::NoLongerStored;
        }
        let want = u64::from(count.clamp(1, MAX_MESSAGE_COUNT));
        let last = self.next.min(sequence.saturating_add(want));
        let room = buf.len().saturating_sub(HEADER_LEN) as u64;
        let mut slot = self.slot(sequence);
        let start = self.offset_at(sequence, slot);
        let mut end = start;
        let mut upto = sequence;
        while upto < last {
            slot = self.advance(slot, 1);
            let block_end = self.offset_at(upto + 1, slot);
            if block_end.wrapping_sub(start) > room {
                break;
            }
            end = block_end;
            upto += 1;
        }
        let messages = upto - sequence;
        if messages == 0 {
            let block = self.offset_at(sequence + 1, slot).wrapping_sub(start);
            return Answer::TooLarge {
                needed: HEADER_LEN.saturating_add(usize::try_from(block).unwrap_or(usize::MAX)),
            };
        }
        // Both fit: `end - start <= room < buf.len()`, and `messages <= MAX_MESSAGE_COUNT`.
        let len = end.wrapping_sub(start) as usize;
        let messages = messages as u16;
        let Some((header, body)) = buf.split_at_mut_checked(HEADER_LEN) else {
            return Answer::TooLarge {
                needed: HEADER_LEN + len,
            };
        };
        header[..SESSION_LEN].copy_from_slice(session.as_bytes());
        header[SESSION_LEN..HEADER_LEN - 2].copy_from_slice(&sequence.to_be_bytes());
        header[HEADER_LEN - 2..].copy_from_slice(&messages.to_be_bytes());
        if let Some(body) = body.get_mut(..len) {
            self.read_arena(start, body);
        }
        Answer::Written {
            len: HEADER_LEN + len,
            messages,
        }
    }

    /// How many leading blocks of the packet just checked (`count` blocks, `len` bytes of
    /// them) can never be kept: the fewest that leave at most `messages` blocks of at
    /// most `bytes` bytes.
    fn unstorable_prefix(&self, len: usize, count: usize) -> usize {
        let min_skip = count.saturating_sub(self.index.len());
        let min_bytes = len.saturating_sub(self.arena.len());
        let mut skip = min_skip;
        while skip < count && self.block_offset(skip, count, len) < min_bytes {
            skip += 1;
        }
        skip
    }

    /// The offset of block `i` of the packet just checked (`count` blocks of `len`
    /// bytes); `len` from `i = count` on.
    fn block_offset(&self, i: usize, count: usize, len: usize) -> usize {
        match self.offsets.get(i) {
            Some(&at) if i < count => usize::from(at).min(len),
            _ => len,
        }
    }

    /// The index slot of sequence number `s`.
    fn slot(&self, s: u64) -> usize {
        (s % self.index.len() as u64) as usize
    }

    /// The slot `by` (at most the number of slots) after `slot`.
    fn advance(&self, slot: usize, by: usize) -> usize {
        let next = slot + by;
        if next >= self.index.len() {
            next - self.index.len()
        } else {
            next
        }
    }

    /// The absolute offset of the block of `s`, whose index slot is `slot`, for
    /// `first <= s <= next` (at `next`, the end of the stored blocks).
    fn offset_at(&self, s: u64, slot: usize) -> u64 {
        if s >= self.next {
            return self.tail;
        }
        self.index.get(slot).copied().unwrap_or(self.tail)
    }

    /// The arena position of absolute offset `at`.
    fn position(&self, at: u64) -> usize {
        (at % self.arena.len() as u64) as usize
    }

    /// Copies `bytes` (at most the arena's length) into the ring at absolute offset `at`.
    fn write_arena(&mut self, at: u64, bytes: &[u8]) {
        let pos = self.position(at);
        let (to_end, from_start) = bytes.split_at(bytes.len().min(self.arena.len() - pos));
        if let Some(dst) = self.arena.get_mut(pos..pos + to_end.len()) {
            dst.copy_from_slice(to_end);
        }
        if let Some(dst) = self.arena.get_mut(..from_start.len()) {
            dst.copy_from_slice(from_start);
        }
    }

    /// Fills `buf` (at most the arena's length) from the ring at absolute offset `at`.
    fn read_arena(&self, at: u64, buf: &mut [u8]) {
        let pos = self.position(at);
        let split = buf.len().min(self.arena.len() - pos);
        let (to_end, from_start) = buf.split_at_mut(split);
        if let Some(src) = self.arena.get(pos..pos + to_end.len()) {
            to_end.copy_from_slice(src);
        }
        if let Some(src) = self.arena.get(..from_start.len()) {
            from_start.copy_from_slice(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{pack_all, PacketRepr};

    fn session() -> Session {
        Session::from_bytes(*b"STORE     ")
    }

    fn store(messages: usize, bytes: usize) -> RetransmitStore {
        RetransmitStore::new(&StoreConfig { messages, bytes }).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Message `s`: `len` bytes, each the low byte of `s`.
    fn message(s: u64, len: usize) -> Vec<u8> {
        vec![s as u8; len]
    }

    /// Appends messages `from..to` of `len` bytes each, `per_packet` to a packet.
    fn append(store: &mut RetransmitStore, from: u64, to: u64, len: usize, per_packet: usize) {
        let msgs: Vec<Vec<u8>> = (from..to).map(|s| message(s, len)).collect();
        let per_packet = per_packet.max(1);
        for (i, chunk) in msgs.chunks(per_packet).enumerate() {
            let repr = PacketRepr {
                session: session(),
                sequence: from + (i * per_packet) as u64,
                kind: PacketKind::Data,
                messages: chunk.to_vec(),
            };
            let mut buf = vec![0; repr.buffer_len()];
            let len = repr.emit(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            store.append_packet(&buf[..len]);
        }
    }

    /// The packet `answer` wrote, parsed.
    fn answered(store: &RetransmitStore, s: u64, count: u16, room: usize) -> PacketRepr {
        let mut buf = vec![0; room];
        match store.answer(&session(), s, count, &mut buf) {
            Answer::Written { len, messages } => {
                let packet = Packet::new_checked(&buf[..len]).unwrap_or_else(|e| panic!("{e}"));
                let repr = PacketRepr::parse(&packet).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(repr.messages.len(), usize::from(messages));
                repr
            }
            other => panic!("no packet for {s}: {other:?}"),
        }
    }

    #[test]
    fn stored_messages_come_back_byte_for_byte_from_the_requested_sequence() {
        let mut s = store(100, 4096);
        append(&mut s, 1, 21, 10, 4);
        assert_eq!((s.first(), s.next(), s.len()), (1, 21, 20));
        assert_eq!(s.stored_bytes(), 20 * 12);
        let repr = answered(&s, 7, 5, 1472);
        assert_eq!(repr.session, session());
        assert_eq!(repr.sequence, 7);
        assert_eq!(
            repr.messages,
            (7..12).map(|s| message(s, 10)).collect::<Vec<_>>()
        );
        let stats = s.stats();
        assert_eq!((stats.packets, stats.messages, stats.evicted), (5, 20, 0));
    }

    #[test]
    fn an_answer_holds_only_whole_messages_that_fit_and_never_past_the_newest() {
        let mut s = store(100, 4096);
        append(&mut s, 1, 11, 10, 10);
        // 20 + 3 blocks of 12 = 56 bytes: a 67-byte buffer takes three, not four.
        let repr = answered(&s, 2, 100, 67);
        assert_eq!(repr.messages.len(), 3);
        assert_eq!(answered(&s, 8, 100, 1472).messages.len(), 3, "8, 9 and 10");
        let mut tiny = [0u8; 31];
        assert_eq!(
            s.answer(&session(), 1, 1, &mut tiny),
            Answer::TooLarge { needed: 32 }
        );
        assert_eq!(
            s.answer(&session(), 1, 1, &mut [0u8; 5]),
            Answer::TooLarge { needed: 32 }
        );
    }

    #[test]
    fn a_count_of_zero_is_answered_as_one_message() {
        let mut s = store(100, 4096);
        append(&mut s, 1, 5, 3, 4);
        assert_eq!(answered(&s, 2, 0, 1472).messages, [message(2, 3)]);
    }

    #[test]
    fn sequences_outside_the_stored_range_are_not_yet_sent_or_no_longer_stored() {
        let mut s = store(4, 4096);
        let mut buf = [0u8; 1472];
        assert_eq!(s.answer(&session(), 1, 1, &mut buf), Answer::NotYetSent);
        append(&mut s, 1, 11, 5, 3);
        assert_eq!((s.first(), s.next()), (7, 11));
        assert_eq!(s.answer(&session(), 6, 1, &mut buf), Answer::NoLongerStored);
        assert_eq!(s.answer(&session(), 0, 1, &mut buf), Answer::NoLongerStored);
        assert_eq!(s.answer(&session(), 11, 1, &mut buf), Answer::NotYetSent);
        assert_eq!(
            s.answer(&session(), u64::MAX, 9, &mut buf),
            Answer::NotYetSent
        );
        assert_eq!(answered(&s, 7, 9, 1472).messages.len(), 4);
    }

    #[test]
    fn eviction_by_count_keeps_exactly_the_newest_messages() {
        let mut s = store(5, 1 << 20);
        append(&mut s, 1, 4, 8, 3);
        append(&mut s, 4, 9, 8, 5);
        assert_eq!((s.first(), s.next()), (4, 9));
        assert_eq!(s.stats().evicted, 3);
        assert_eq!(s.stored_bytes(), 5 * 10);
        assert_eq!(
            answered(&s, 4, 10, 1472).messages,
            (4..9).map(|q| message(q, 8)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn eviction_by_bytes_frees_just_enough_room_for_a_message_larger_than_what_is_left() {
        // 100 bytes: eight 12-byte blocks (96) fit; a 30-byte block needs three out.
        let mut s = store(1000, 100);
        append(&mut s, 1, 9, 10, 8);
        assert_eq!(s.stored_bytes(), 96);
        append(&mut s, 9, 10, 28, 1);
        // 96 - 24 + 30 = 102 > 100: three go, not two.
        assert_eq!((s.first(), s.next()), (4, 10));
        assert_eq!(s.stored_bytes(), 5 * 12 + 30);
        assert_eq!(s.stats().evicted, 3);
        let repr = answered(&s, 4, 100, 1472);
        let mut want: Vec<Vec<u8>> = (4..9).map(|q| message(q, 10)).collect();
        want.push(message(9, 28));
        assert_eq!(repr.messages, want);
    }

    #[test]
    fn blocks_that_wrap_around_the_arena_end_come_back_whole() {
        // 50-byte arena, 7-byte blocks: they straddle the end at different points.
        let mut s = store(1000, 50);
        for round in 0..20u64 {
            let from = 1 + round * 3;
            append(&mut s, from, from + 3, 5, 3);
            assert!(s.stored_bytes() <= 50);
            let first = s.first();
            let repr = answered(&s, first, 100, 1472);
            assert_eq!(repr.sequence, first);
            assert_eq!(
                repr.messages,
                (first..from + 3).map(|q| message(q, 5)).collect::<Vec<_>>(),
                "round {round}"
            );
        }
        assert_eq!(
            (s.first(), s.next()),
            (61 - 7, 61),
            "seven 7-byte blocks fit 50"
        );
        assert_eq!(s.stats().evicted, 60 - 7);
    }

    #[test]
    fn zero_length_messages_are_stored_and_answered() {
        let mut s = store(10, 100);
        append(&mut s, 1, 21, 0, 7);
        assert_eq!((s.first(), s.next()), (11, 21));
        assert_eq!(s.stored_bytes(), 20);
        let repr = answered(&s, 12, 3, 1472);
        assert_eq!(repr.messages, vec![Vec::<u8>::new(); 3]);
    }

    #[test]
    fn a_packet_larger_than_the_store_keeps_only_its_newest_messages() {
        // 40 bytes hold three 12-byte blocks; a packet of six pushes out all and keeps
        // its last three. A 2-message index keeps two of a 5-message packet.
        let mut s = store(100, 40);
        append(&mut s, 1, 3, 10, 2);
        append(&mut s, 3, 9, 10, 6);
        assert_eq!((s.first(), s.next()), (6, 9));
        assert_eq!(s.stats().evicted, 2 + 3);
        assert_eq!(
            answered(&s, 6, 9, 1472).messages,
            (6..9).map(|q| message(q, 10)).collect::<Vec<_>>()
        );
        let mut s = store(2, 1000);
        append(&mut s, 1, 6, 1, 5);
        assert_eq!((s.first(), s.next(), s.stats().evicted), (4, 6, 3));
        assert_eq!(
            answered(&s, 4, 9, 1472).messages,
            [message(4, 1), message(5, 1)]
        );
    }

    #[test]
    fn a_message_longer_than_the_whole_arena_is_never_kept_and_numbering_goes_on() {
        let mut s = store(100, 16);
        append(&mut s, 1, 2, 10, 1);
        append(&mut s, 2, 3, 20, 1);
        assert_eq!((s.first(), s.next(), s.stored_bytes()), (3, 3, 0));
        assert_eq!(s.stats().evicted, 2);
        let mut buf = [0u8; 1472];
        assert_eq!(s.answer(&session(), 2, 1, &mut buf), Answer::NoLongerStored);
        append(&mut s, 3, 4, 4, 1);
        assert_eq!(answered(&s, 3, 1, 1472).messages, [message(3, 4)]);
    }

    #[test]
    fn packets_that_do_not_continue_the_numbering_or_are_not_packets_are_counted_and_ignored() {
        let mut s = store(100, 1000);
        append(&mut s, 5, 8, 4, 3);
        assert_eq!(
            (s.first(), s.next()),
            (5, 8),
            "the first packet sets the start"
        );
        append(&mut s, 9, 10, 4, 1);
        append(&mut s, 7, 8, 4, 1);
        s.append_packet(b"not a packet");
        let mut heartbeat = [0u8; HEADER_LEN];
        crate::wire::write_heartbeat(&mut heartbeat, &session(), 8)
            .unwrap_or_else(|e| panic!("{e}"));
        s.append_packet(&heartbeat);
        let zero = pack_all(&session(), 0, 100, [&b"x"[..]]).unwrap_or_else(|e| panic!("{e}"));
        s.append_packet(&zero[0]);
        let stats = s.stats();
        assert_eq!((stats.discontinuous, stats.malformed), (2, 2));
        assert_eq!((stats.packets, stats.messages), (1, 3));
        assert_eq!((s.first(), s.next()), (5, 8));
    }

    #[test]
    fn a_malformed_packet_is_counted_and_changes_nothing() {
        // Two slots: a well-formed packet of three would push out both stored messages.
        let mut s = store(2, 1000);
        append(&mut s, 1, 3, 4, 2);
        let before = (s.first(), s.next(), s.stored_bytes());
        let good = pack_all(&session(), 3, 100, [&b"abc"[..], b"", b"xyz"])
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0);
        let mut trailing = good.clone();
        trailing.push(0);
        let mut more = good.clone();
        more[19] = 4;
        let mut heartbeat = [0u8; HEADER_LEN + 1];
        crate::wire::write_heartbeat(&mut heartbeat, &session(), 3)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut huge = vec![0u8; MAX_DATAGRAM + 1];
        huge[..HEADER_LEN].copy_from_slice(&good[..HEADER_LEN]);
        let bad: [&[u8]; 6] = [
            &good[..good.len() - 1],
            &trailing,
            &more,
            &heartbeat,
            &huge,
            &good[..HEADER_LEN - 1],
        ];
        for packet in bad {
            s.append_packet(packet);
            assert_eq!((s.first(), s.next(), s.stored_bytes()), before);
        }
        let stats = s.stats();
        assert_eq!((stats.malformed, stats.evicted, stats.packets), (6, 0, 1));
        assert_eq!(
            answered(&s, 1, 2, 1472).messages,
            [message(1, 4), message(2, 4)]
        );
        s.append_packet(&good);
        assert_eq!((s.first(), s.next()), (4, 6));
        assert_eq!(
            answered(&s, 4, 2, 1472).messages,
            [Vec::new(), b"xyz".to_vec()]
        );
    }

    #[test]
    fn bad_sizes_are_refused() {
        for (messages, bytes) in [(0, 10), (10, 0), (usize::MAX, 10), (10, usize::MAX)] {
            assert!(RetransmitStore::new(&StoreConfig { messages, bytes }).is_err());
        }
        assert_eq!(
            StoreConfig::default(),
            StoreConfig {
                messages: 1_000_000,
                bytes: 128 << 20
            }
        );
    }
}
