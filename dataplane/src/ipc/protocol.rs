//! The index protocol of the broadcast ring, on its own so that loom can check it with a
//! tiny ring (`cfg(loom)`, see `tests` below): the writer's claim of room, its record
//! stores and its publication, and the reader's read and validation of a record.
//!
//! # The protocol
//!
//! Positions are byte counts since the ring was made (they never wrap; the offset in the
//! ring is `position % capacity`). Three kinds of shared words: `tail` (everything below
//! it is published), `intent` (the writer may be writing anything below it), and a small
//! table of block starts (positions where a record begins, one per block of the ring).
//!
//! - Writer, for each record: if the record ends past the intent last stored,
//!   `intent = end of the record + a sixteenth of the ring` (relaxed) and a release
//!   fence; then the record's words (relaxed); once per batch a release store of `tail`.
//!   The intent is claimed ahead so that it changes once per sixteenth of a lap, not
//!   once per record: every reader loads it for every record, and a word the writer
//!   stored on every record would bounce between the writer's core and each reader's
//!   (a reader within a sixteenth of a lap of being overwritten counts as lapped: the
//!   price). The writer reads nothing the readers write: it never waits.
//! - Reader: an acquire load of `tail`; the record's words (relaxed); an acquire fence;
//!   a relaxed load of `intent`. If `intent <= position + capacity`, no byte at or after
//!   `position` had been overwritten when the words were read: had one read seen a word
//!   of the next lap, the acquire fence would synchronise with the writer's release
//!   fence before it, and the load would see that lap's intent. Otherwise the record is
//!   dropped and the reader is lapped. The same check after the reader is done with a
//!   record tells whether its bytes changed while they were used.
//! - A lapped reader resumes at the oldest block start that is at least half a ring
//!   behind the writer's intent and already published, else at the published tail; the
//!   record there says its index, so the loss is the difference of two indices, exact.

use super::layout::{self, RECORD_HEADER};
use super::sync::{fence, AtomicU64, Ordering};

/// No position a writer reaches (4 EiB written); anything beyond is garbage.
pub(crate) const MAX_POSITION: u64 = 1 << 62;

/// The memory holding the records: 8-byte words at byte offsets (multiples of 8) below
/// the ring's capacity, loaded and stored relaxed.
pub(crate) trait Words {
    /// The word at byte offset `at`.
    fn load(&self, at: usize) -> u64;
    /// Stores the word at byte offset `at`.
    fn store(&self, at: usize, value: u64);
}

/// The shared indices.
#[derive(Clone, Copy)]
pub(crate) struct Indices<'a> {
    /// One past the last published byte.
    pub(crate) tail: &'a AtomicU64,
    /// One past the last byte the writer may be writing.
    pub(crate) intent: &'a AtomicU64,
    /// Block starts: entry `b % len` is the position of the first record that starts in
    /// block `b` (of `capacity / len` bytes).
    pub(crate) blocks: &'a [AtomicU64],
}

/// The writer's side: where the next record goes.
#[derive(Debug)]
pub(crate) struct WriterIndex {
    capacity: u64,
    /// log2 of a block's length (capacity and block count are powers of two: no
    /// division on the hot path).
    block_shift: u32,
    /// Where the next record goes.
    pub(crate) tail: u64,
    /// The tail as last published.
    pub(crate) published: u64,
    /// The next record's index (records counted from 0, padding not counted).
    pub(crate) index: u64,
    /// The block of the last record written.
    block: u64,
    /// The intent as last stored: the writer may write anything below it.
    claimed: u64,
    /// How far past a record's end the intent is claimed.
    ahead: u64,
}

impl WriterIndex {
    /// A writer at the start of a ring of `capacity` bytes (a power of two) with
    /// `blocks` entries in its table (a power of two below it).
    pub(crate) fn new(capacity: u64, blocks: usize) -> WriterIndex {
        WriterIndex {
            capacity,
            block_shift: (capacity / blocks.max(1) as u64).max(1).trailing_zeros(),
            tail: 0,
            published: 0,
            index: 0,
            block: u64::MAX,
            claimed: 0,
            ahead: capacity / 16,
        }
    }

    /// Makes `end` (and a sixteenth of a ring past it) the intent, unless it is already
    /// below it; a release fence orders the store before the record stores that follow.
    #[inline]
    fn claim(&mut self, ix: Indices<'_>, end: u64) {
        if end > self.claimed {
            self.claimed = end + self.ahead;
            ix.intent.store(self.claimed, Ordering::Relaxed);
            fence(Ordering::Release);
        }
    }

    /// Claims room for a record of `len` payload bytes and writes its header: pads to the
    /// end of the ring first if it does not fit before it. Returns the offset of its
    /// payload; the caller writes the payload there, then calls nothing else (the record
    /// is published with the next [`publish`](Self::publish)). `len` must be at most
    /// [`layout::max_payload`] of the capacity.
    #[inline]
    pub(crate) fn write<W: Words>(
        &mut self,
        words: &W,
        ix: Indices<'_>,
        kind: u32,
        len: usize,
        value: u64,
    ) -> usize {
        let need = layout::record_len(len) as u64;
        let mut at = self.tail & (self.capacity - 1);
        let to_end = self.capacity - at;
        if need > to_end {
            self.claim(ix, self.tail + to_end + need);
            words.store(at as usize, layout::pad_word());
            self.tail += to_end;
            at = 0;
        }
        self.claim(ix, self.tail + need);
        let block = self.tail >> self.block_shift;
        if block != self.block {
            self.block = block;
            let slot = (block as usize) & (ix.blocks.len().wrapping_sub(1));
            if let Some(entry) = ix.blocks.get(slot) {
                entry.store(self.tail, Ordering::Relaxed);
            }
        }
        let at = at as usize;
        words.store(at, layout::first_word(kind, len));
        words.store(at + 8, self.index);
        words.store(at + 16, value);
        self.index += 1;
        self.tail += need;
        at + RECORD_HEADER
    }

    /// Publishes everything written so far (one release store), if anything.
    #[inline]
    pub(crate) fn publish(&mut self, ix: Indices<'_>) -> bool {
        if self.tail == self.published {
            return false;
        }
        self.published = self.tail;
        ix.tail.store(self.tail, Ordering::Release);
        true
    }

    /// Bytes written and not yet published.
    #[inline]
    pub(crate) fn unpublished(&self) -> u64 {
        self.tail - self.published
    }
}

/// A record as a reader found it (not yet known to be intact: see
/// [`ReaderIndex::intact`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// Its position.
    pub(crate) position: u64,
    /// Offset of its payload in the ring.
    pub(crate) payload: usize,
    /// Its kind.
    pub(crate) kind: u32,
    /// Its payload's length.
    pub(crate) len: usize,
    /// The writer's index of it.
    pub(crate) index: u64,
    /// Its value (a message's sequence number...).
    pub(crate) value: u64,
}

/// What a reader's next step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing published beyond the reader.
    Empty,
    /// A record, validated: it was not overwritten while its header was read, and its
    /// length lies inside the ring and the published range.
    Record(Found),
    /// The writer overwrote the reader's position: [`ReaderIndex::resync`].
    Lapped,
    /// The shared memory says something this writer never writes (a bug, or garbage).
    Corrupt(&'static str),
}

/// A reader's side: its position.
#[derive(Debug)]
pub(crate) struct ReaderIndex {
    capacity: u64,
    /// The next position to read.
    pub(crate) cursor: u64,
    /// The tail as last loaded.
    tail: u64,
}

impl ReaderIndex {
    /// A reader at `cursor` of a ring of `capacity` bytes.
    pub(crate) fn new(capacity: u64, cursor: u64) -> ReaderIndex {
        ReaderIndex {
            capacity,
            cursor,
            tail: cursor,
        }
    }

    /// Whether nothing at or after `position` had been overwritten when the words read
    /// before this call were read.
    #[inline]
    pub(crate) fn intact(&self, ix: Indices<'_>, position: u64) -> bool {
        fence(Ordering::Acquire);
        ix.intent.load(Ordering::Relaxed) <= position.saturating_add(self.capacity)
    }

    /// Reads the next record (skipping padding) without moving past it; call
    /// [`advance`](Self::advance) once done with it.
    #[inline]
    pub(crate) fn next<W: Words>(&mut self, words: &W, ix: Indices<'_>) -> Next {
        loop {
            if self.cursor == self.tail {
                self.tail = ix.tail.load(Ordering::Acquire);
                if self.cursor == self.tail {
                    return Next::Empty;
                }
            }
            if self.tail > MAX_POSITION || (self.tail | self.cursor) % 8 != 0 {
                // No writer gets there (4 EiB) or writes off a word: garbage, and arithmetic
                // on it could overflow, or load a word off its alignment.
                return Next::Corrupt("a published tail no writer writes");
            }
            if self.tail < self.cursor || self.tail - self.cursor > self.capacity {
                // The tail went back, or ran a whole ring ahead: lapped if the intent
                // says so, else nonsense.
                if !self.intact(ix, self.cursor) {
                    return Next::Lapped;
                }
                return Next::Corrupt("the published tail is behind the reader");
            }
            let at = (self.cursor & (self.capacity - 1)) as usize;
            let first = words.load(at);
            let to_end = self.capacity as usize - at;
            if layout::is_pad(first) {
                if !self.intact(ix, self.cursor) {
                    return Next::Lapped;
                }
                if self.cursor + to_end as u64 > self.tail {
                    return Next::Corrupt("padding past the published tail");
                }
                self.cursor += to_end as u64;
                continue;
            }
            if to_end < RECORD_HEADER {
                if !self.intact(ix, self.cursor) {
                    return Next::Lapped;
                }
                return Next::Corrupt("a record header across the end of the ring");
            }
            let index = words.load(at + 8);
            let value = words.load(at + 16);
            if !self.intact(ix, self.cursor) {
                return Next::Lapped;
            }
            let (kind, len) = layout::split_first_word(first);
            let room = to_end - RECORD_HEADER;
            if len > room || layout::record_len(len) as u64 > self.tail - self.cursor {
                return Next::Corrupt("a record longer than the published ring");
            }
            return Next::Record(Found {
                position: self.cursor,
                payload: at + RECORD_HEADER,
                kind,
                len,
                index,
                value,
            });
        }
    }

    /// Moves past `found`.
    #[inline]
    pub(crate) fn advance(&mut self, found: &Found) {
        self.cursor = found.position + layout::record_len(found.len) as u64;
    }

    /// After a lap: moves to the oldest published block start at least half a ring
    /// behind the writer's intent, else to the published tail. The record there is
    /// validated like any other when read.
    pub(crate) fn resync(&mut self, ix: Indices<'_>) {
        self.resync_behind(ix, self.capacity / 2);
    }

    /// For a reader that attaches to a ring the writer may have gone round: the oldest
    /// published block start at least an eighth of a ring clear of being overwritten
    /// (the writer claims a sixteenth ahead), else the tail.
    pub(crate) fn resync_oldest(&mut self, ix: Indices<'_>) {
        self.resync_behind(ix, self.capacity - self.capacity / 8);
    }

    /// Moves to the oldest published block start at most `behind` bytes behind the
    /// writer's intent, else to the published tail. Positions that no writer writes
    /// (off a word, beyond [`MAX_POSITION`]) are passed over.
    fn resync_behind(&mut self, ix: Indices<'_>, behind: u64) {
        let intent = ix.intent.load(Ordering::Acquire);
        let tail = ix.tail.load(Ordering::Acquire);
        let threshold = intent.saturating_sub(behind);
        let mut best = tail;
        for entry in ix.blocks {
            let position = entry.load(Ordering::Relaxed);
            if position >= threshold
                && position < best
                && position > self.cursor
                && position % 8 == 0
                && position <= MAX_POSITION
            {
                best = position;
            }
        }
        self.cursor = best.max(self.cursor);
        self.tail = tail.max(self.cursor);
    }
}

#[cfg(all(test, loom))]
mod tests {
    //! Run with `RUSTFLAGS="--cfg loom" cargo test -p multipoint-dataplane --lib ipc`
    //! (`dataplane/tests/loom.rs` does).
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use loom::sync::Arc;

    /// A ring of loom atomics.
    struct Ring {
        words: Vec<AtomicU64>,
        tail: AtomicU64,
        intent: AtomicU64,
        blocks: Vec<AtomicU64>,
        closed: loom::sync::atomic::AtomicBool,
        records: AtomicU64,
    }

    impl Words for Ring {
        fn load(&self, at: usize) -> u64 {
            self.words[at / 8].load(Ordering::Relaxed)
        }
        fn store(&self, at: usize, value: u64) {
            self.words[at / 8].store(value, Ordering::Relaxed)
        }
    }

    impl Ring {
        fn new(capacity: usize, blocks: usize) -> Ring {
            Ring {
                words: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
                tail: AtomicU64::new(0),
                intent: AtomicU64::new(0),
                blocks: (0..blocks).map(|_| AtomicU64::new(0)).collect(),
                closed: loom::sync::atomic::AtomicBool::new(false),
                records: AtomicU64::new(0),
            }
        }
        fn ix(&self) -> Indices<'_> {
            Indices {
                tail: &self.tail,
                intent: &self.intent,
                blocks: &self.blocks,
            }
        }
    }

    /// Payload word `w` of record `index`.
    fn payload(index: u64, w: usize) -> u64 {
        (index + 1) * 1000 + w as u64
    }

    /// One writer writes `records` records of `words` payload words each (publishing
    /// after each), a reader reads concurrently; every record the reader accepts must be
    /// whole and in order, and what it accepted plus what it was told it lost must be
    /// every record.
    fn check(capacity: usize, blocks: usize, records: u64, words: usize, steps: usize) {
        loom::model(move || {
            let ring = Arc::new(Ring::new(capacity, blocks));
            let writer_ring = Arc::clone(&ring);
            let writer = loom::thread::spawn(move || {
                let mut w = WriterIndex::new(capacity as u64, blocks);
                for index in 0..records {
                    let at = w.write(&*writer_ring, writer_ring.ix(), 1, words * 8, index);
                    for k in 0..words {
                        writer_ring.store(at + 8 * k, payload(index, k));
                    }
                    w.publish(writer_ring.ix());
                }
                writer_ring.records.store(records, Ordering::Relaxed);
                writer_ring.closed.store(true, Ordering::Release);
            });
            let mut r = ReaderIndex::new(capacity as u64, 0);
            let mut seen = Seen::default();
            // A few steps while the writer runs, the rest once it is done.
            for _ in 0..steps {
                seen.step(&mut r, &ring, words);
            }
            writer.join().unwrap();
            while !seen.step(&mut r, &ring, words) {}
            // Every record is either accepted whole or counted lost.
            assert_eq!(seen.accepted + seen.lost, records);
        });
    }

    /// What the reader saw.
    #[derive(Default)]
    struct Seen {
        expected: u64,
        accepted: u64,
        lost: u64,
        resynced: bool,
    }

    impl Seen {
        /// One step of the reader; true once there is nothing more to read.
        fn step(&mut self, r: &mut ReaderIndex, ring: &Ring, words: usize) -> bool {
            // Closed first: seeing it, the next load of the tail sees the last one.
            let closed = ring.closed.load(Ordering::Acquire);
            match r.next(ring, ring.ix()) {
                Next::Empty => {
                    if closed {
                        // A lap at the very end loses the rest: the writer's count.
                        let total = ring.records.load(Ordering::Relaxed);
                        self.lost += total - self.expected;
                        self.expected = total;
                        return true;
                    }
                }
                Next::Lapped => {
                    r.resync(ring.ix());
                    self.resynced = true;
                }
                Next::Corrupt(why) => panic!("corrupt: {why}"),
                Next::Record(found) => {
                    let got: Vec<u64> = (0..words)
                        .map(|k| ring.load(found.payload + 8 * k))
                        .collect();
                    if !r.intact(ring.ix(), found.position) {
                        r.resync(ring.ix());
                        self.resynced = true;
                        return false;
                    }
                    assert_eq!(found.len, words * 8);
                    assert_eq!(found.value, found.index, "header torn");
                    if self.resynced {
                        assert!(found.index >= self.expected, "went back");
                        self.lost += found.index - self.expected;
                        self.resynced = false;
                    } else {
                        assert_eq!(found.index, self.expected, "skipped without a lap");
                    }
                    for (k, word) in got.iter().enumerate() {
                        assert_eq!(*word, payload(found.index, k), "torn payload");
                    }
                    self.expected = found.index + 1;
                    self.accepted += 1;
                    r.advance(&found);
                }
            }
            false
        }
    }

    #[test]
    fn loom_no_accepted_record_is_torn_and_every_loss_is_counted() {
        // 64 bytes: two 32-byte records; three records lap the first.
        check(64, 2, 3, 1, 3);
    }

    #[test]
    fn loom_padding_at_the_end_of_the_ring_is_skipped_or_lapped_exactly() {
        // 40-byte records in 64 bytes: the second pads to the end and wraps.
        check(64, 2, 2, 2, 3);
    }
}
