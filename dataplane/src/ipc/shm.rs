//! What the writer and the readers share about the mapped file: the header's atomics
//! and the ring's words as views over the mapping, and the facts about processes and
//! files that liveness is judged by.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use super::layout::{BLOCKS, HEADER_LEN, OFF_INTENT, OFF_TABLE, OFF_TAIL};
use super::protocol::{Indices, Words};

/// A view over a mapped ring file: `base` is the start of the mapping, which is at least
/// `HEADER_LEN + capacity` bytes long, page-aligned, and outlives the view.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    base: *mut u8,
    capacity: usize,
}

impl View {
    /// # Safety
    ///
    /// `base` must point to a page-aligned mapping of at least `HEADER_LEN + capacity`
    /// bytes that stays mapped as long as the view (and every reference it hands out) is
    /// used; if the mapping is read-only, only loads may be made through the view.
    pub(crate) unsafe fn new(base: *mut u8, capacity: usize) -> View {
        View { base, capacity }
    }

    /// The 8-byte atomic at header offset `at` (a multiple of 8 below `HEADER_LEN`).
    #[inline]
    pub(crate) fn atomic(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at % 8 == 0 && at + 8 <= HEADER_LEN);
        // SAFETY: `at` is a multiple of 8 inside the header, so the address is inside the
        // mapping (View::new) and 8-aligned (the mapping is page-aligned); an AtomicU64
        // has the size and alignment of a u64, and every access to the shared words goes
        // through atomics, so there is no non-atomic access to race with in this
        // process. Other processes are outside Rust's model: what they write is only
        // ever read as a u64 and checked.
        unsafe { &*(self.base.add(at) as *const AtomicU64) }
    }

    /// The shared indices.
    #[inline]
    pub(crate) fn indices(&self) -> Indices<'_> {
        // SAFETY: the table is BLOCKS u64s at OFF_TABLE (8-aligned), inside the header
        // (OFF_TABLE + 8 * BLOCKS < HEADER_LEN), so inside the mapping; AtomicU64 has the
        // layout of u64 (as in `atomic`).
        let blocks = unsafe {
            std::slice::from_raw_parts(self.base.add(OFF_TABLE) as *const AtomicU64, BLOCKS)
        };
        Indices {
            tail: self.atomic(OFF_TAIL),
            intent: self.atomic(OFF_INTENT),
            blocks,
        }
    }

    /// The start of the ring (after the header).
    #[inline]
    pub(crate) fn ring(&self) -> *mut u8 {
        // SAFETY: HEADER_LEN is inside the mapping (View::new).
        unsafe { self.base.add(HEADER_LEN) }
    }

    /// `len` bytes of the ring at offset `at`, read in place.
    ///
    /// # Safety
    ///
    /// `at + len` must be at most the capacity. The bytes may be changed by the writer
    /// (another process) while the slice is used: the caller checks afterwards whether
    /// they were, and never relies on them being stable.
    pub(crate) unsafe fn bytes(&self, at: usize, len: usize) -> &[u8] {
        debug_assert!(at + len <= self.capacity);
        // SAFETY: inside the ring by the caller's promise; the mapping outlives `self`.
        unsafe { std::slice::from_raw_parts(self.ring().add(at), len) }
    }
}

impl Words for View {
    #[inline]
    fn load(&self, at: usize) -> u64 {
        if at + 8 > self.capacity {
            return 0;
        }
        // SAFETY: `at` is a multiple of 8 below the capacity (checked above; callers pass
        // multiples of 8), so the word lies inside the ring, 8-aligned; see `atomic`.
        let word = unsafe { &*(self.ring().add(at) as *const AtomicU64) };
        word.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[inline]
    fn store(&self, at: usize, value: u64) {
        if at + 8 > self.capacity {
            return;
        }
        // SAFETY: as in `load`; only the writer, whose mapping is writable, stores.
        let word = unsafe { &*(self.ring().add(at) as *const AtomicU64) };
        word.store(value, std::sync::atomic::Ordering::Relaxed)
    }
}

/// The start time (clock ticks after boot, field 22 of `/proc/PID/stat`) of process
/// `pid` (`None`: this process), if it exists and can be read.
pub(crate) fn start_time(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: count fields
    // after the last ')'. Field 3 is the first there, so field 22 is the 20th.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid`, started at `start`, still runs.
pub(crate) fn alive(pid: u32, start: u64) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let rc = unsafe { libc::kill(raw, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match start_time(Some(pid)) {
        Some(now) => now == start,
        // It exists but /proc does not say (hidepid): take it as alive.
        None => true,
    }
}

/// The device and inode `path` names now, if any.
pub(crate) fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The device and inode of an open file.
pub(crate) fn open_file_id(file: &std::fs::File) -> Option<(u64, u64)> {
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}
