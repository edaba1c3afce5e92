//! The writer's side: the mapped file, its slot table, and the entries registered in it.
//!
//! - [`Registry::create_at`] makes and maps the file (all of it allocated up front: a
//!   fixed table of slots; tmpfs gives pages only where they are written).
//! - [`Registry::register`] takes a free slot (the lowest) under a mutex (registration is
//!   the control path) and fills in its kind, name, detail and counter names before
//!   publishing it as live; when every slot is taken it counts the refusal in the header
//!   and returns `None`.
//! - [`Entry::publish`] writes the counter values under the slot's seqlock: one relaxed
//!   store per value between two stores of the sequence, no lock, no allocation.
//!   [`Histogram::record`] increments one bucket in place.
//! - Dropping an [`Entry`] frees its slot, or, while a [`Hold`](super::Hold) lives, marks
//!   it closed with its final values; the file is removed when its last entry (and the
//!   [`Registry`] handle, if any) goes.
//!
//! Each entry and each histogram has one writer (the thread that owns the object); two
//! writers would lose updates, never break memory safety: every access is atomic.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use memmap2::MmapMut;

use super::layout::{
    self, header, pack_str, slot, Geometry, CLOSED, FREE, KIND_WORDS, LABEL_WORDS, LIVE, MAGIC,
    NAME_WORDS, SETUP, VERSION,
};
use super::{coarse_now_ns, start_time};

/// The mapped counters file of this process (or of a test).
pub(crate) struct Inner {
    path: PathBuf,
    file: File,
    geometry: Geometry,
    /// The mapping, seen only through `words`.
    _map: MmapMut,
    /// The first word of the mapping, and how many words it has.
    words: *const AtomicU64,
    len: usize,
    /// Which slots are taken.
    used: Mutex<Vec<bool>>,
}

// SAFETY: `words` points into `_map`, which lives as long as `Inner` and is never moved
// (a mapping's address is fixed); every access through it is atomic, so sharing it
// between threads is what `AtomicU64` is for.
unsafe impl Send for Inner {}
// SAFETY: as for `Send`: only `&[AtomicU64]` is handed out.
unsafe impl Sync for Inner {}

impl Inner {
    /// Every word of the file.
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: `words` is the start of the mapping of `len * 8` bytes made in
        // `create_at` (page-aligned, so aligned for u64), which lives as long as `self`;
        // nothing in this process accesses it other than through atomics, and atomics
        // are sound against other processes' accesses to shared memory.
        unsafe { std::slice::from_raw_parts(self.words, self.len) }
    }

    fn header(&self, word: usize) -> Option<&AtomicU64> {
        self.words().get(word)
    }

    fn slot(&self, index: usize) -> &[AtomicU64] {
        let start = self.geometry.slot_start(index);
        self.words()
            .get(start..start + self.geometry.slot_words)
            .unwrap_or(&[])
    }

    /// Frees slot `index` (a new generation), or marks it closed.
    pub(crate) fn release(&self, index: usize, closed: bool) {
        let words = self.slot(index);
        if let Some(state) = words.get(slot::STATE) {
            let generation = state.load(Ordering::Relaxed) >> 8;
            if closed {
                state.store(generation << 8 | CLOSED, Ordering::Release);
                return;
            }
            state.store((generation + 1) << 8 | FREE, Ordering::Release);
        }
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(u) = used.get_mut(index) {
            *u = false;
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Only our own file: a new registry of this process may have replaced it.
        let ours = match (std::fs::metadata(&self.path), self.file.metadata()) {
            (Ok(there), Ok(mine)) => there.dev() == mine.dev() && there.ino() == mine.ino(),
            _ => false,
        };
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::debug!(path = %self.path.display(), error = %e, "removing the counters file");
            }
        }
    }
}

/// A counters file and its slot table. Cloning is cheap; the file is removed when the
/// last clone and the last [`Entry`] are gone.
#[derive(Clone)]
pub struct Registry {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.inner.path)
            .field("slots", &self.inner.geometry.slots)
            .finish()
    }
}

impl Registry {
    /// Creates the counters file at `path` with `slots` slots (at least 1), mapped
    /// read-write. A file already there is replaced: it can only be a dead process's
    /// that had this pid, or a test's.
    ///
    /// # Errors
    ///
    /// The OS error of creating, sizing or mapping the file.
    pub fn create_at(path: &Path, slots: usize) -> std::io::Result<Registry> {
        let geometry = Geometry::new(slots.max(1));
        let too_big = || std::io::Error::other("the counters file would be too large");
        let words = geometry.file_words().ok_or_else(too_big)?;
        let bytes =
            u64::try_from(words.checked_mul(8).ok_or_else(too_big)?).map_err(|_| too_big())?;
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(path)
        };
        let file = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(path)?;
                open()?
            }
            other => other?,
        };
        let made = (|| {
            file.set_len(bytes)?;
            // SAFETY: the file was created just now by this process, at the size
            // mapped; this process never truncates it, and the mapping is only ever
            // accessed through atomics (see `Inner::words`).
            unsafe { MmapMut::map_mut(&file) }
        })();
        let mut map = match made {
            Ok(map) => map,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        let ptr = map.as_mut_ptr().cast::<AtomicU64>();
        let inner = Inner {
            path: path.to_owned(),
            file,
            geometry,
            words: ptr,
            len: map.len() / 8,
            _map: map,
            used: Mutex::new(vec![false; geometry.slots]),
        };
        let w = inner.words();
        let pid = u64::from(std::process::id());
        let set = |i: usize, v: u64| {
            if let Some(word) = w.get(i) {
                word.store(v, Ordering::Relaxed);
            }
        };
        set(header::VERSION, VERSION);
        for (i, v) in geometry.words().into_iter().enumerate() {
            set(header::GEOMETRY + i, v);
        }
        set(header::PID, pid);
        set(
            header::START_TIME,
            start_time(std::process::id()).unwrap_or(0),
        );
        set(header::HEARTBEAT, coarse_now_ns());
        if let Some(magic) = w.get(header::MAGIC) {
            magic.store(MAGIC, Ordering::Release);
        }
        Ok(Registry {
            inner: Arc::new(inner),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Registers an entry: its `kind` (e.g. `subscription`), `name` (the session),
    /// `detail` (group and port, ...) and the names of its counters (at most
    /// [`MAX_COUNTERS`](layout::MAX_COUNTERS); more are not shown). `None` when every
    /// slot is taken: counted in the file's header (`refused`).
    pub fn register(
        &self,
        kind: &str,
        name: &str,
        detail: &str,
        counters: &[&str],
    ) -> Option<Entry> {
        let inner = &self.inner;
        let g = inner.geometry;
        let index = {
            let mut used = inner.used.lock().unwrap_or_else(PoisonError::into_inner);
            match used.iter().position(|u| !u) {
                Some(i) => {
                    used[i] = true;
                    i
                }
                None => {
                    if let Some(refused) = inner.header(header::REFUSED) {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    return None;
                }
            }
        };
        let start = g.slot_start(index);
        let words = inner.slot(index);
        let state = words.get(slot::STATE)?;
        let generation = state.load(Ordering::Relaxed) >> 8;
        state.store(generation << 8 | SETUP, Ordering::Relaxed);
        fence(Ordering::Release);
        let n = counters.len().min(g.max_counters);
        if n < counters.len() {
            tracing::debug!(kind, name, "an entry has more counters than the file holds");
        }
        let put = |at: usize, len: usize, s: &str| {
            if let Some(ws) = words.get(at..at + len) {
                pack_str(s, ws);
            }
        };
        put(slot::KIND, KIND_WORDS, kind);
        put(slot::NAME, LABEL_WORDS, name);
        put(slot::DETAIL, LABEL_WORDS, detail);
        for (i, counter) in counters.iter().take(n).enumerate() {
            put(g.counter_name(i), NAME_WORDS, counter);
        }
        for i in 0..g.max_counters {
            if let Some(v) = words.get(g.counter_value(i)) {
                v.store(0, Ordering::Relaxed);
            }
        }
        let set = |at: usize, v: u64| {
            if let Some(w) = words.get(at) {
                w.store(v, Ordering::Relaxed);
            }
        };
        set(slot::COUNTERS, n as u64);
        set(slot::HISTOGRAMS, 0);
        set(slot::UPDATED, coarse_now_ns());
        state.store(generation << 8 | LIVE, Ordering::Release);
        if let Some(high) = inner.header(header::HIGH_WATER) {
            high.fetch_max(index as u64 + 1, Ordering::Release);
        }
        if let Some(registered) = inner.header(header::REGISTERED) {
            registered.fetch_add(1, Ordering::Relaxed);
        }
        Some(Entry {
            inner: Arc::clone(inner),
            index,
            start,
            counters: n,
        })
    }
}

/// One registered object's slot: its counters and histograms, updated in place by the
/// object's owner. See the module docs.
pub struct Entry {
    inner: Arc<Inner>,
    index: usize,
    start: usize,
    counters: usize,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("slot", &self.index)
            .field("counters", &self.counters)
            .finish()
    }
}

impl Entry {
    fn words(&self) -> &[AtomicU64] {
        self.inner
            .words()
            .get(self.start..self.start + self.inner.geometry.slot_words)
            .unwrap_or(&[])
    }

    /// Runs `write` between the two stores of the seqlock's sequence, so that a reader
    /// sees all of it or retries.
    #[inline]
    fn locked(&self, write: impl FnOnce(&[AtomicU64])) {
        let words = self.words();
        let (Some(sequence), Some(updated)) = (words.get(slot::SEQUENCE), words.get(slot::UPDATED))
        else {
            return;
        };
        let s = sequence.load(Ordering::Relaxed);
        // Odd: a write is in progress. The fence orders it before the values' stores.
        sequence.store(s.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        write(words);
        let now = coarse_now_ns();
        updated.store(now, Ordering::Relaxed);
        sequence.store((s | 1).wrapping_add(1), Ordering::Release);
        if let Some(heartbeat) = self.inner.header(header::HEARTBEAT) {
            // A load of a line that rarely changes, and a store once per clock tick.
            if heartbeat.load(Ordering::Relaxed) != now {
                heartbeat.store(now, Ordering::Relaxed);
            }
        }
    }

    /// Writes the counter values, in the order of the names registered (extra values
    /// are ignored, missing ones left as they were). No lock, no allocation.
    #[inline]
    pub fn publish(&self, values: &[u64]) {
        let g = self.inner.geometry;
        let n = self.counters.min(values.len());
        self.locked(|words| {
            for (i, &v) in values.iter().take(n).enumerate() {
                if let Some(w) = words.get(g.counter_value(i)) {
                    w.store(v, Ordering::Relaxed);
                }
            }
        });
    }

    /// Changes the entry's name (e.g. once a subscription learned the session it
    /// follows), under the same seqlock as the values.
    pub fn rename(&self, name: &str) {
        self.locked(|words| {
            if let Some(ws) = words.get(slot::NAME..slot::NAME + LABEL_WORDS) {
                pack_str(name, ws);
            }
        });
    }

    /// Adds a histogram named `name` to the entry and returns its writer; `None` once the
    /// entry has [`MAX_HISTOGRAMS`](layout::MAX_HISTOGRAMS). Readers see it from now on;
    /// its buckets start at zero.
    pub fn add_histogram(&self, name: &str) -> Option<Histogram> {
        let g = self.inner.geometry;
        // The registry's lock: two threads adding histograms to one entry take turns.
        let _turn = self
            .inner
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let words = self.words();
        let count = words.get(slot::HISTOGRAMS)?;
        let i = count.load(Ordering::Relaxed) as usize;
        if i >= g.max_histograms {
            return None;
        }
        let at = g.histogram(i);
        let hist = words.get(at..at + g.histogram_words()?)?;
        // The maximum and the buckets, in the mapping. The writer counts in this
        // version's geometry (constants, so that finding a bucket is a few shifts); a file
        // is only ever made with it.
        let (label, live) = hist.split_at_checked(NAME_WORDS)?;
        if g.sub_bucket_bits != layout::SUB_BUCKET_BITS || live.len() != 1 + layout::BUCKETS {
            return None;
        }
        pack_str(name, label);
        for w in live {
            w.store(0, Ordering::Relaxed);
        }
        count.store(i as u64 + 1, Ordering::Release);
        Some(Histogram {
            _inner: Arc::clone(&self.inner),
            words: live.as_ptr(),
        })
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // A retired slot is marked closed by `retire`, under the lock the last hold
        // frees it under, so that it is never marked after it was freed.
        if !super::retire(&self.inner, self.index) {
            self.inner.release(self.index, false);
        }
    }
}

/// Frees slot `index` of `inner`, retired while a hold lived.
pub(crate) fn free_retired(inner: &Arc<Inner>, index: usize) {
    inner.release(index, false);
}

/// The writer of one histogram of an [`Entry`]: log-linear buckets of nanoseconds (see
/// [`layout`]), incremented in place, and the exact maximum. One writer (its owner's
/// thread); never allocates, never panics.
///
/// It holds a pointer to its own words rather than finding them in the file at each
/// value: a subscription with timestamps records every message here and in its own
/// [`LatencyHistogram`](crate::latency::LatencyHistogram), and finding the words (the
/// file's slice, then the histogram's within it, each bounds-checked) and finding the
/// bucket with the geometry read at run time were about half of what a mirrored message
/// cost (callgrind of `multipoint throughput --size 32`: the mirror 49 instructions a
/// message before, about 25 with the pointer and the constant geometry).
pub struct Histogram {
    /// Keeps the mapping `words` points into alive.
    _inner: Arc<Inner>,
    /// The word of the maximum; the [`layout::BUCKETS`] buckets follow.
    words: *const AtomicU64,
}

// SAFETY: `words` points into the mapping `_inner` keeps alive (a mapping never moves);
// every access through it is atomic, as for `Inner`.
unsafe impl Send for Histogram {}
// SAFETY: as for `Send`.
unsafe impl Sync for Histogram {}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("buckets", &layout::BUCKETS)
            .finish()
    }
}

impl Histogram {
    /// Counts one value (nanoseconds).
    #[inline]
    pub fn record(&self, ns: u64) {
        self.record_n(ns, 1);
    }

    /// Counts `n` values of `ns` nanoseconds.
    #[inline]
    pub fn record_n(&self, ns: u64, n: u64) {
        // SAFETY: `words` is the first of `1 + BUCKETS` words of the mapping, checked in
        // `add_histogram` (aligned: the mapping is page-aligned), and `_inner` keeps the
        // mapping alive; only atomics touch it.
        let words = unsafe { std::slice::from_raw_parts(self.words, 1 + layout::BUCKETS) };
        let Some((max, buckets)) = words.split_first() else {
            return;
        };
        if ns > max.load(Ordering::Relaxed) {
            max.store(ns, Ordering::Relaxed);
        }
        let bucket = layout::bucket_of(ns, layout::SUB_BUCKET_BITS, layout::BUCKETS);
        if let Some(b) = buckets.get(bucket) {
            // One writer: a load and a store lose nothing (no locked instruction).
            b.store(b.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    }
}
