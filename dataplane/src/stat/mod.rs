//! Live counters for other processes: one file per process,
//! `/dev/shm/multipoint-stat-<pid>`, that `multipoint stat` reads (like AeronStat).
//!
//! # Contract
//!
//! - Every publisher, subscription, line of an A/B subscription (and line B of a
//!   publisher), fan-out root and leaf, and re-request server [`register`]s an
//!   [`Entry`] when it is made: its kind, its name (the session), a detail (group and
//!   port, address) and the names of its counters, so that a reader needs no compiled
//!   knowledge of any kind. An entry may hold several named latency histograms
//!   ([`Entry::add_histogram`]); a subscription's has `end_to_end`.
//! - The thread that owns an object writes its counters into its entry
//!   ([`Entry::publish`], a seqlock: readers get a consistent snapshot) at most every
//!   clock tick of `CLOCK_MONOTONIC_COARSE` (1 to 4 ms, [`Cadence`]) and when it closes;
//!   histogram buckets are incremented in place as values are recorded. No lock, no
//!   allocation, no system call on the hot path.
//! - The file is made at the first registration, with a fixed table of slots (1,024, or
//!   `MULTIPOINT_STAT_SLOTS`); a registration that finds the table full is counted in the
//!   file and the object runs without an entry. An entry is released when its object
//!   closes (or marked closed with its final values while a [`Hold`] lives); the file is
//!   removed when the last entry goes ([`remove_file`] removes it at once, for exit
//!   paths).
//! - It never makes the data plane fail: with `MULTIPOINT_STAT=0` (or
//!   [`set_enabled`]`(false)`) nothing is registered; if the file cannot be made (no
//!   `/dev/shm`), that is logged once and objects run without entries. The directory is
//!   `/dev/shm`, or `MULTIPOINT_STAT_DIR`.
//! - A reader ([`reader`]) treats the file as untrusted: every length and offset is
//!   checked, nothing panics, and a file whose process died (its pid is gone, or another
//!   process has it now: the start time differs) is reported stale.
//!
//! The format is [`layout`]'s; the writer is [`registry`]'s.
//!
//! ```
//! use multipoint_dataplane::stat::reader;
//!
//! let dir = std::env::temp_dir().join(format!("stat-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("multipoint-stat-1");
//! let registry = multipoint_dataplane::stat::Registry::create_at(&path, 4)?;
//! let entry = registry.register("publisher", "FEED1", "239.255.0.1:31001", &["messages"]).unwrap();
//! let latency = entry.add_histogram("end_to_end").unwrap();
//! entry.publish(&[42]);
//! latency.record(10_000);
//! let file = reader::read(&path)?;
//! assert_eq!(file.entries[0].counter("messages"), Some(42));
//! assert_eq!(file.entries[0].histograms[0].percentiles().count, 1);
//! drop((entry, latency, registry));
//! assert!(!path.exists());
//! # std::fs::remove_dir(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod kinds;
pub mod layout;
pub mod reader;
pub mod registry;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

pub use self::registry::{Entry, Histogram, Registry};

/// The prefix of every counters file's name; the pid follows.
pub const FILE_PREFIX: &str = "multipoint-stat-";
/// Where counters files are made unless `MULTIPOINT_STAT_DIR` says otherwise.
pub const DEFAULT_DIR: &str = "/dev/shm";
/// Slots of a counters file unless `MULTIPOINT_STAT_SLOTS` says otherwise.
pub const DEFAULT_SLOTS: usize = 1024;

/// 0: not decided yet; 1: on; 2: off.
static ENABLED: AtomicU8 = AtomicU8::new(0);
/// The registry of this process, while it has entries.
static GLOBAL: Mutex<Weak<registry::Inner>> = Mutex::new(Weak::new());
/// Whether a failure to make the file was logged.
static WARNED: AtomicBool = AtomicBool::new(false);
/// Whether a full table was logged.
static WARNED_FULL: AtomicBool = AtomicBool::new(false);
/// A slot kept as closed while a hold lives: its file and its index.
type Retired = (Arc<registry::Inner>, usize);
/// Holds alive, and the entries closed meanwhile.
static HOLDS: Mutex<(usize, Vec<Retired>)> = Mutex::new((0, Vec::new()));

/// The directory counters files are made in (and `multipoint stat` reads): `/dev/shm`,
/// or `MULTIPOINT_STAT_DIR`.
pub fn dir() -> PathBuf {
    std::env::var_os("MULTIPOINT_STAT_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

/// The counters file of process `pid` in `dir`.
pub fn file_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{pid}"))
}

/// Turns the counters file on or off for the objects made from now on (those made
/// before keep their entries). Default: on, unless `MULTIPOINT_STAT` is `0`, `off`,
/// `false` or `no`.
pub fn set_enabled(on: bool) {
    ENABLED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether objects made now register entries (see [`set_enabled`]).
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let off = std::env::var("MULTIPOINT_STAT").is_ok_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "0" | "off" | "false" | "no"
                )
            });
            let _ = ENABLED.compare_exchange(
                0,
                if off { 2 } else { 1 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            !off
        }
    }
}

/// Registers an entry in this process's counters file (made now if it has none), see
/// [`Registry::register`]. `None` when the file is off, cannot be made (logged once) or
/// is full (counted in it, logged once): the object then runs without an entry.
pub fn register(kind: &str, name: &str, detail: &str, counters: &[&str]) -> Option<Entry> {
    if !enabled() {
        return None;
    }
    let registry = {
        let mut global = GLOBAL.lock().unwrap_or_else(PoisonError::into_inner);
        match global.upgrade() {
            Some(inner) => Registry { inner },
            None => {
                let path = file_path(&dir(), std::process::id());
                match Registry::create_at(&path, slots()) {
                    Ok(registry) => {
                        *global = Arc::downgrade(&registry.inner);
                        registry
                    }
                    Err(e) => {
                        if !WARNED.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                path = %path.display(),
                                error = %e,
                                "cannot make the counters file: `multipoint stat` will not \
                                 see this process (set MULTIPOINT_STAT_DIR to a writable \
                                 directory, or MULTIPOINT_STAT=0 to silence this)"
                            );
                        }
                        return None;
                    }
                }
            }
        }
    };
    let entry = registry.register(kind, name, detail, counters);
    if entry.is_none() && !WARNED_FULL.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            path = %registry.path().display(),
            "the counters file is full: further objects are not shown by `multipoint stat` \
             (raise MULTIPOINT_STAT_SLOTS)"
        );
    }
    entry
}

/// The slots of a new file: `MULTIPOINT_STAT_SLOTS` (1 to 65,536) or [`DEFAULT_SLOTS`].
fn slots() -> usize {
    std::env::var("MULTIPOINT_STAT_SLOTS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=65_536).contains(n))
        .unwrap_or(DEFAULT_SLOTS)
}

/// This process's counters file, if it has one now.
pub fn path() -> Option<PathBuf> {
    let global = GLOBAL.lock().unwrap_or_else(PoisonError::into_inner);
    global
        .upgrade()
        .map(|inner| Registry { inner }.path().to_owned())
}

/// Removes this process's counters file now (for exit paths: a signal's, or before
/// `std::process::exit`); entries still alive go on writing into the unlinked memory.
pub fn remove_file() {
    if let Some(path) = path() {
        let _ = std::fs::remove_file(path);
    }
}

/// While a `Hold` lives, an entry whose object closes stays in the file, marked closed
/// with its final counters, instead of being freed: so that `multipoint stat` can read
/// what a process reported at its end (`multipoint ... --hold-stat`). Dropping the last
/// hold frees them (and removes the file if nothing else is registered).
#[derive(Debug)]
pub struct Hold {
    _private: (),
}

/// Starts holding closed entries (see [`Hold`]).
pub fn hold() -> Hold {
    HOLDS.lock().unwrap_or_else(PoisonError::into_inner).0 += 1;
    Hold { _private: () }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let retired = {
            let mut holds = HOLDS.lock().unwrap_or_else(PoisonError::into_inner);
            holds.0 = holds.0.saturating_sub(1);
            if holds.0 > 0 {
                return;
            }
            std::mem::take(&mut holds.1)
        };
        // Outside the lock: the last of them may remove the file.
        for (inner, index) in retired {
            registry::free_retired(&inner, index);
        }
    }
}

/// Whether slot `index` of `inner`, whose entry is going, is kept as closed (a hold
/// lives: it is marked closed here, under the lock, and kept until the last hold goes).
fn retire(inner: &Arc<registry::Inner>, index: usize) -> bool {
    let mut holds = HOLDS.lock().unwrap_or_else(PoisonError::into_inner);
    if holds.0 == 0 {
        return false;
    }
    inner.release(index, true);
    holds.1.push((Arc::clone(inner), index));
    true
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the last clock tick, read without a system
/// call and cheaper than the precise clock; 0 if it cannot be read.
#[inline]
pub fn coarse_now_ns() -> u64 {
    crate::latency::clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// When an owner writes its counters into its entry: at most once per tick of
/// `CLOCK_MONOTONIC_COARSE` (1 to 4 ms, by the kernel's HZ).
#[derive(Debug, Default, Clone, Copy)]
pub struct Cadence {
    last: u64,
}

impl Cadence {
    /// Whether the clock ticked since the last time this said yes.
    #[inline]
    pub fn due(&mut self) -> bool {
        let now = coarse_now_ns();
        if now == self.last {
            return false;
        }
        self.last = now;
        true
    }
}

/// The start time of process `pid` (`/proc/<pid>/stat` field 22: clock ticks after
/// boot); `None` if there is no such process (or it cannot be read), or it has died and
/// waits to be reaped (a zombie).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything, spaces and
    // parentheses too: the fields after the last `)` are plain.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    // Field 3, the state: Z (zombie) and X (dead) are gone.
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    // Field 22 is the 19th after it.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests;
