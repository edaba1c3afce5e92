//! The counters file's format: a header, then a fixed table of slots, every field a
//! native-endian 64-bit word, every access atomic.
//!
//! Both sides see the file as `&[AtomicU64]`: the writer (this process, through the
//! [`registry`](super::registry)) stores into it, readers in other processes
//! ([`reader`](super::reader)) load from it. No byte of it is ever read or written
//! non-atomically, so a writer in the middle of an update, or a hostile one, is a torn
//! value at worst, never undefined behaviour. Strings (kinds, names, counter names) are
//! UTF-8 bytes packed into words, little-endian, zero-padded.
//!
//! # Header ([`HEADER_WORDS`] words)
//!
//! | word | field |
//! |---|---|
//! | 0 | [`MAGIC`], stored last when the file is created |
//! | 1 | [`VERSION`] |
//! | 2..=8 | the [`Geometry`]: header words, slots, words per slot, counters and histograms per slot, buckets per histogram, sub-bucket bits |
//! | 9 | the writer's pid |
//! | 10 | the writer's start time (`/proc/<pid>/stat` field 22, clock ticks after boot), so that a reused pid is not taken for the writer |
//! | 11 | heartbeat: `CLOCK_MONOTONIC_COARSE` in ns at the last update of any entry |
//! | 12 | registrations refused because every slot was taken |
//! | 13 | registrations made |
//! | 14 | high water: one past the highest slot ever used (readers look no further) |
//!
//! # Slot ([`Geometry::slot_words`] words)
//!
//! | word | field |
//! |---|---|
//! | 0 | state: generation << 8 \| [`FREE`], [`LIVE`] or [`CLOSED`] |
//! | 1 | sequence of the seqlock over the name and the counter values (odd: being written) |
//! | 2 | number of counters |
//! | 3 | number of histograms |
//! | 4 | when the values were last written (`CLOCK_MONOTONIC_COARSE`, ns) |
//! | 5..7 | kind (16 bytes) |
//! | 7..15 | name (64 bytes) |
//! | 15..23 | detail (64 bytes) |
//! | then | counter names, [`NAME_WORDS`] each, `max_counters` of them |
//! | then | counter values, `max_counters` words |
//! | then | `max_histograms` histograms, each [`NAME_WORDS`] words of name, one of the exact maximum, then `buckets` counts |
//!
//! Histogram buckets are log-linear: values below 2^`sub_bucket_bits` have a bucket
//! each; above, every power of two is split into 2^`sub_bucket_bits` equal buckets (a
//! relative width of at most 1/16 with 4 bits). Values past the last bucket are counted
//! in it ([`bucket_of`], [`bucket_range`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// The first word of every counters file: `MPSTAT` and two zero bytes, little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MPSTAT\0\0");
/// The version of the layout described here.
pub const VERSION: u64 = 1;
/// Words in the header.
pub const HEADER_WORDS: usize = 16;
/// Words of a counter or histogram name (24 bytes).
pub const NAME_WORDS: usize = 3;
/// Words of an entry's kind (16 bytes).
pub const KIND_WORDS: usize = 2;
/// Words of an entry's name and of its detail (64 bytes each).
pub const LABEL_WORDS: usize = 8;
/// Counters an entry may have.
pub const MAX_COUNTERS: usize = 40;
/// Histograms an entry may have.
pub const MAX_HISTOGRAMS: usize = 4;
/// Sub-bucket bits of the histograms this version writes.
pub const SUB_BUCKET_BITS: u32 = 4;
/// Buckets per histogram this version writes: exact below 16 ns, 1/16 relative width up
/// to 2^36 ns (68.7 s); longer latencies count in the last bucket.
pub const BUCKETS: usize = 33 << SUB_BUCKET_BITS;

/// Slot state: free.
pub const FREE: u64 = 0;
/// Slot state: being filled in by the writer (readers skip it).
pub const SETUP: u64 = 1;
/// Slot state: a live entry.
pub const LIVE: u64 = 2;
/// Slot state: its object closed; the values are final (kept while the process holds
/// closed entries, see [`hold`](super::hold)).
pub const CLOSED: u64 = 3;

/// Header word indexes.
pub(crate) mod header {
    pub(crate) const MAGIC: usize = 0;
    pub(crate) const VERSION: usize = 1;
    pub(crate) const GEOMETRY: usize = 2;
    pub(crate) const PID: usize = 9;
    pub(crate) const START_TIME: usize = 10;
    pub(crate) const HEARTBEAT: usize = 11;
    pub(crate) const REFUSED: usize = 12;
    pub(crate) const REGISTERED: usize = 13;
    pub(crate) const HIGH_WATER: usize = 14;
}

/// Slot word offsets (before the variable part).
pub(crate) mod slot {
    pub(crate) const STATE: usize = 0;
    pub(crate) const SEQUENCE: usize = 1;
    pub(crate) const COUNTERS: usize = 2;
    pub(crate) const HISTOGRAMS: usize = 3;
    pub(crate) const UPDATED: usize = 4;
    pub(crate) const KIND: usize = 5;
    pub(crate) const NAME: usize = KIND + super::KIND_WORDS;
    pub(crate) const DETAIL: usize = NAME + super::LABEL_WORDS;
    pub(crate) const NAMES: usize = DETAIL + super::LABEL_WORDS;
}

/// The shape of a counters file, as its header states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Words in the header.
    pub header_words: usize,
    /// Slots in the table.
    pub slots: usize,
    /// Words per slot.
    pub slot_words: usize,
    /// Counters per slot.
    pub max_counters: usize,
    /// Histograms per slot.
    pub max_histograms: usize,
    /// Buckets per histogram.
    pub buckets: usize,
    /// Sub-bucket bits of the histograms.
    pub sub_bucket_bits: u32,
}

impl Geometry {
    /// The geometry this version writes, with `slots` slots.
    pub fn new(slots: usize) -> Geometry {
        let mut g = Geometry {
            header_words: HEADER_WORDS,
            slots,
            slot_words: 0,
            max_counters: MAX_COUNTERS,
            max_histograms: MAX_HISTOGRAMS,
            buckets: BUCKETS,
            sub_bucket_bits: SUB_BUCKET_BITS,
        };
        g.slot_words = g.min_slot_words().unwrap_or(0);
        g
    }

    /// Words of one histogram: name, maximum, buckets.
    pub fn histogram_words(&self) -> Option<usize> {
        NAME_WORDS.checked_add(1)?.checked_add(self.buckets)
    }

    /// The fewest words a slot of this geometry needs.
    pub fn min_slot_words(&self) -> Option<usize> {
        let counters = self.max_counters.checked_mul(NAME_WORDS + 1)?;
        let histograms = self.max_histograms.checked_mul(self.histogram_words()?)?;
        slot::NAMES.checked_add(counters)?.checked_add(histograms)
    }

    /// Words of the whole file.
    pub fn file_words(&self) -> Option<usize> {
        self.slots
            .checked_mul(self.slot_words)?
            .checked_add(self.header_words)
    }

    /// Where slot `i` starts.
    pub(crate) fn slot_start(&self, i: usize) -> usize {
        self.header_words + i * self.slot_words
    }

    /// Offset in a slot of counter `i`'s name.
    pub(crate) fn counter_name(&self, i: usize) -> usize {
        slot::NAMES + i * NAME_WORDS
    }

    /// Offset in a slot of counter `i`'s value.
    pub(crate) fn counter_value(&self, i: usize) -> usize {
        slot::NAMES + self.max_counters * NAME_WORDS + i
    }

    /// Offset in a slot of histogram `i` (its name; the maximum and buckets follow).
    pub(crate) fn histogram(&self, i: usize) -> usize {
        slot::NAMES + self.max_counters * (NAME_WORDS + 1) + i * (NAME_WORDS + 1 + self.buckets)
    }

    /// The header words 2..=8 that state this geometry.
    pub(crate) fn words(&self) -> [u64; 7] {
        [
            self.header_words as u64,
            self.slots as u64,
            self.slot_words as u64,
            self.max_counters as u64,
            self.max_histograms as u64,
            self.buckets as u64,
            u64::from(self.sub_bucket_bits),
        ]
    }
}

/// The bucket of `value` in a histogram of `buckets` buckets with `bits` sub-bucket bits
/// (`bits` at most 8, `buckets` at least 1); values past the last bucket go in it.
#[inline]
pub fn bucket_of(value: u64, bits: u32, buckets: usize) -> usize {
    let sub = 1u64 << bits;
    let index = if value < sub {
        value as usize
    } else {
        // value >= 2^bits, so its highest bit e is at least `bits`.
        let e = 63 - value.leading_zeros();
        let group = (e - bits + 1) as usize;
        let mantissa = ((value >> (e - bits)) - sub) as usize;
        (group << bits) + mantissa
    };
    index.min(buckets.saturating_sub(1))
}

/// The lowest and highest value (inclusive) that land in bucket `index` (with `bits`
/// sub-bucket bits); `None` for an index past any bucket of 64-bit values.
pub fn bucket_range(index: usize, bits: u32) -> Option<(u64, u64)> {
    let sub = 1usize << bits;
    if index < sub {
        return Some((index as u64, index as u64));
    }
    let group = index >> bits;
    let mantissa = (index & (sub - 1)) as u64;
    // Group g >= 1 holds [2^(g+bits-1), 2^(g+bits)), in buckets 2^(g-1) wide.
    let shift = u32::try_from(group - 1).ok()?;
    if shift.checked_add(bits)? >= 64 {
        return None;
    }
    let low = ((1u64 << bits) + mantissa) << shift;
    let high = low.checked_add((1u64 << shift) - 1)?;
    Some((low, high))
}

/// The words of `s`, cut to `words` words (at a character boundary) and zero-padded.
pub(crate) fn pack_str(s: &str, out: &[AtomicU64]) {
    let mut end = s.len().min(out.len() * 8);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &s.as_bytes()[..end];
    for (i, word) in out.iter().enumerate() {
        let mut b = [0u8; 8];
        if let Some(chunk) = bytes.get(i * 8..) {
            let n = chunk.len().min(8);
            b[..n].copy_from_slice(&chunk[..n]);
        }
        word.store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
}

/// The string packed in `words` (up to the first zero byte); invalid UTF-8 is replaced.
pub(crate) fn unpack_str(words: &[AtomicU64]) -> String {
    let mut bytes = Vec::with_capacity(words.len() * 8);
    for word in words {
        bytes.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_have_a_bucket_each_and_larger_ones_share_log_linear_buckets() {
        for v in 0..16 {
            assert_eq!(bucket_of(v, 4, BUCKETS), v as usize);
            assert_eq!(bucket_range(v as usize, 4), Some((v, v)));
        }
        // Every value lies in the range of its bucket, and ranges are contiguous.
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, high) = bucket_range(index, 4).unwrap();
            assert_eq!(low, expected_low, "bucket {index}");
            assert!(high >= low);
            assert_eq!(bucket_of(low, 4, BUCKETS), index);
            assert_eq!(bucket_of(high, 4, BUCKETS), index);
            // Width at most 1/16 of the low end above the exact range.
            if low >= 16 {
                assert!(
                    (high - low + 1) * 16 <= low,
                    "bucket {index}: {low}..={high}"
                );
            }
            expected_low = high + 1;
        }
        assert_eq!(expected_low, 1 << 36);
        assert_eq!(bucket_of(u64::MAX, 4, BUCKETS), BUCKETS - 1);
        assert_eq!(bucket_of(1 << 40, 4, BUCKETS), BUCKETS - 1);
    }

    #[test]
    fn bucket_ranges_cover_all_64_bit_values_and_no_more() {
        let last = (65 - 4) << 4;
        assert_eq!(bucket_range(last - 1, 4).map(|r| r.1), Some(u64::MAX));
        assert_eq!(bucket_range(last, 4), None);
        assert_eq!(bucket_range(usize::MAX, 4), None);
        assert_eq!(bucket_of(u64::MAX, 4, usize::MAX), last - 1);
    }

    #[test]
    fn strings_round_trip_cut_at_a_character_boundary() {
        let words: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(u64::MAX)).collect();
        pack_str("end_of_session", &words);
        assert_eq!(unpack_str(&words), "end_of_session");
        pack_str("ééééééééééééé", &words); // 26 bytes into 24
        assert_eq!(unpack_str(&words), "éééééééééééé");
        pack_str("", &words);
        assert_eq!(unpack_str(&words), "");
    }

    #[test]
    fn the_geometry_places_every_part_inside_its_slot() {
        let g = Geometry::new(8);
        assert_eq!(g.slot_words, g.min_slot_words().unwrap());
        let last_hist_end = g.histogram(g.max_histograms - 1) + g.histogram_words().unwrap();
        assert_eq!(last_hist_end, g.slot_words);
        assert!(g.counter_value(g.max_counters - 1) < g.histogram(0));
        assert_eq!(g.file_words(), Some(HEADER_WORDS + 8 * g.slot_words));
    }
}
