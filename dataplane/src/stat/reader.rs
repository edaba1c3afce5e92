//! The reader's side, what `multipoint stat` uses: finds the counters files in a
//! directory ([`scan`]), reads one ([`read`]) into an owned [`FileSnapshot`], and says
//! whether its process is still there ([`Liveness`]).
//!
//! The file is untrusted input: another process writes it while it is read, may have
//! died in the middle of a write, and could write anything. Every length and offset read
//! from it is checked against the file's size; a file that does not hold together is a
//! [`ReadError`], an entry that does not is counted ([`FileSnapshot::bad_entries`]) and
//! skipped; nothing panics. The file is mapped read-only and read only through atomic
//! loads. (A process of the same user could still truncate the file while it is mapped,
//! which the kernel answers with SIGBUS: the writers never do.)

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::layout::{
    bucket_range, header, slot, unpack_str, Geometry, BUCKETS, CLOSED, HEADER_WORDS, KIND_WORDS,
    LABEL_WORDS, LIVE, MAGIC, MAX_COUNTERS, MAX_HISTOGRAMS, NAME_WORDS, SUB_BUCKET_BITS, VERSION,
};
use super::FILE_PREFIX;

/// Why a counters file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file cannot be opened, inspected or mapped.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is shorter than its header says it is.
    #[error("truncated: {len} bytes, the layout needs {need}")]
    Truncated {
        /// Its length in bytes.
        len: u64,
        /// The length its header implies.
        need: u64,
    },
    /// The file does not start with the magic word: not a counters file, or one still
    /// being made (read it again in a moment).
    #[error("not a multipoint counters file (magic {0:#018x})")]
    BadMagic(u64),
    /// A layout version this reader does not know: read it with a `multipoint stat` of
    /// the same version as the process.
    #[error("layout version {0}, this reader knows version {VERSION}")]
    Version(u64),
    /// The header's geometry does not hold together.
    #[error("bad layout in the header: {0}")]
    Geometry(&'static str),
}

/// Whether the process that wrote a counters file is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its pid is alive with the start time the file gives.
    Live,
    /// No process has its pid: it died without removing the file (stale).
    Gone,
    /// Another process has its pid now (the start time differs): stale.
    Restarted,
}

impl Liveness {
    /// Of the process `pid` started at `start_time`.
    pub fn of(pid: u32, start_time: u64) -> Liveness {
        match super::start_time(pid) {
            None => Liveness::Gone,
            Some(t) if t == start_time => Liveness::Live,
            Some(_) => Liveness::Restarted,
        }
    }

    /// Whether the file is stale (its process is gone).
    pub fn is_stale(self) -> bool {
        self != Liveness::Live
    }

    /// `live`, `gone` or `restarted`.
    pub fn name(self) -> &'static str {
        match self {
            Liveness::Live => "live",
            Liveness::Gone => "gone",
            Liveness::Restarted => "restarted",
        }
    }
}

/// What a counters file held when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSnapshot {
    /// The writer's pid.
    pub pid: u32,
    /// The writer's start time (clock ticks after boot).
    pub start_time: u64,
    /// `CLOCK_MONOTONIC_COARSE` (ns) of the last update of any entry.
    pub heartbeat_ns: u64,
    /// Registrations refused because the table was full.
    pub refused: u64,
    /// Registrations made over the file's life.
    pub registered: u64,
    /// The live (and closed) entries, in slot order.
    pub entries: Vec<EntrySnapshot>,
    /// Entries skipped because their numbers did not hold together (counters or
    /// histograms beyond the layout's).
    pub bad_entries: u64,
    /// Entries skipped because they changed while being read (freed or replaced).
    pub changed: u64,
}

/// One entry of a counters file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySnapshot {
    /// Its slot.
    pub slot: usize,
    /// What it is: `publisher`, `subscription`, `line`, `fanout`, `leaf`,
    /// `rerequest_server`, ...
    pub kind: String,
    /// Its name: the session.
    pub name: String,
    /// Group and port, address, line.
    pub detail: String,
    /// Its object closed: the values are final.
    pub closed: bool,
    /// Whether the values are one consistent snapshot (false: the writer was in the
    /// middle of a write each time it was read, e.g. it died there).
    pub consistent: bool,
    /// `CLOCK_MONOTONIC_COARSE` (ns) of the last write of its values.
    pub updated_ns: u64,
    /// Counter names and values, in the order registered.
    pub counters: Vec<(String, u64)>,
    /// Its histograms.
    pub histograms: Vec<HistogramSnapshot>,
}

impl EntrySnapshot {
    /// The value of counter `name`.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
    }
}

/// One histogram of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Its name: `end_to_end`, ...
    pub name: String,
    /// The exact largest value recorded (ns).
    pub max: u64,
    /// Counts per bucket.
    pub buckets: Vec<u64>,
    /// Sub-bucket bits of the buckets (see [`layout`](super::layout)).
    pub sub_bucket_bits: u32,
}

/// Percentiles of a [`HistogramSnapshot`], in nanoseconds; all zero when empty. Each is
/// the highest value of its bucket (at most 1/16 above the true value), capped at the
/// maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// The exact maximum.
    pub max: u64,
}

impl HistogramSnapshot {
    /// Its percentiles.
    pub fn percentiles(&self) -> Summary {
        let count = self.buckets.iter().fold(0u64, |a, &b| a.saturating_add(b));
        if count == 0 {
            return Summary::default();
        }
        let at = |q: f64| -> u64 {
            // The rank of the value at quantile q: at least the first.
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0u64;
            for (i, &n) in self.buckets.iter().enumerate() {
                seen = seen.saturating_add(n);
                if seen >= rank {
                    let high = bucket_range(i, self.sub_bucket_bits).map_or(u64::MAX, |r| r.1);
                    return high.min(self.max);
                }
            }
            self.max
        };
        Summary {
            count,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: self.max,
        }
    }
}

/// The counters files in `dir` (named `multipoint-stat-<pid>`), each read or with why it
/// could not be, sorted by pid.
///
/// # Errors
///
/// The directory cannot be listed.
pub fn scan(dir: &Path) -> std::io::Result<Vec<(PathBuf, Result<FileSnapshot, ReadError>)>> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let Ok(item) = item else { continue };
        let name = item.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FILE_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        found.push((pid, item.path()));
    }
    found.sort();
    Ok(found
        .into_iter()
        .map(|(_, path)| {
            let read = read(&path);
            (path, read)
        })
        .collect())
}

/// Reads the counters file at `path`.
///
/// # Errors
///
/// [`ReadError`]: the file cannot be read, or does not hold together.
pub fn read(path: &Path) -> Result<FileSnapshot, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let need = (HEADER_WORDS * 8) as u64;
    if len < need {
        return Err(ReadError::Truncated { len, need });
    }
    // SAFETY: a read-only shared mapping of a regular file, read only through atomic
    // loads below (see `words`); another process may change the bytes at any time, which
    // atomics allow. Truncation under the mapping would raise SIGBUS (see the module
    // docs): the writers never truncate.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let words_len = map.len() / 8;
    // SAFETY: the mapping is page-aligned, so aligned for u64, `words_len * 8` bytes
    // long, and lives until the end of this function, longer than the slice; atomic
    // loads of 64-bit words are allowed on read-only memory on the 64-bit targets this
    // crate builds for (Linux x86_64 and aarch64), and nothing stores through it.
    let words = unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<AtomicU64>(), words_len) };
    parse(words)
}

/// Reads a counters file's words (see [`read`]).
///
/// # Errors
///
/// [`ReadError`] if the words do not hold together.
pub fn parse(words: &[AtomicU64]) -> Result<FileSnapshot, ReadError> {
    let word = |i: usize| words.get(i).map_or(0, |w| w.load(Ordering::Acquire));
    if words.len() < HEADER_WORDS {
        return Err(ReadError::Truncated {
            len: words.len() as u64 * 8,
            need: (HEADER_WORDS * 8) as u64,
        });
    }
    let magic = word(header::MAGIC);
    if magic != MAGIC {
        return Err(ReadError::BadMagic(magic));
    }
    let version = word(header::VERSION);
    if version != VERSION {
        return Err(ReadError::Version(version));
    }
    let g = geometry(&word)?;
    let need = g
        .file_words()
        .and_then(|w| w.checked_mul(8))
        .ok_or(ReadError::Geometry("the table's size overflows"))?;
    if need > words.len() * 8 {
        return Err(ReadError::Truncated {
            len: words.len() as u64 * 8,
            need: need as u64,
        });
    }
    let high = usize::try_from(word(header::HIGH_WATER))
        .unwrap_or(usize::MAX)
        .min(g.slots);
    let mut snapshot = FileSnapshot {
        pid: u32::try_from(word(header::PID))
            .map_err(|_| ReadError::Geometry("pid out of range"))?,
        start_time: word(header::START_TIME),
        heartbeat_ns: word(header::HEARTBEAT),
        refused: word(header::REFUSED),
        registered: word(header::REGISTERED),
        entries: Vec::new(),
        bad_entries: 0,
        changed: 0,
    };
    for index in 0..high {
        let start = g.slot_start(index);
        let Some(slot_words) = words.get(start..start + g.slot_words) else {
            snapshot.bad_entries += 1;
            continue;
        };
        match read_slot(&g, index, slot_words) {
            Slot::Empty => {}
            Slot::Entry(entry) => snapshot.entries.push(entry),
            Slot::Bad => snapshot.bad_entries += 1,
            Slot::Changed => snapshot.changed += 1,
        }
    }
    Ok(snapshot)
}

/// The geometry the header states, checked.
fn geometry(word: &impl Fn(usize) -> u64) -> Result<Geometry, ReadError> {
    let at = |i: usize| usize::try_from(word(header::GEOMETRY + i)).unwrap_or(usize::MAX);
    let bits = word(header::GEOMETRY + 6);
    let g = Geometry {
        header_words: at(0),
        slots: at(1),
        slot_words: at(2),
        max_counters: at(3),
        max_histograms: at(4),
        buckets: at(5),
        sub_bucket_bits: u32::try_from(bits).unwrap_or(u32::MAX),
    };
    if g.header_words != HEADER_WORDS {
        return Err(ReadError::Geometry("header length"));
    }
    // What a reader allocates per entry follows from these, so a file (anyone may write
    // one in /dev/shm) gets no say beyond what this version's writers make: at most
    // 65,536 slots (the registry's own cap), and exactly this version's counters,
    // histograms and buckets per slot.
    if g.slots > 65_536 {
        return Err(ReadError::Geometry("more than 65,536 slots"));
    }
    if g.max_counters != MAX_COUNTERS || g.max_histograms != MAX_HISTOGRAMS {
        return Err(ReadError::Geometry(
            "counters or histograms per slot not this version's",
        ));
    }
    if g.sub_bucket_bits != SUB_BUCKET_BITS || g.buckets != BUCKETS {
        return Err(ReadError::Geometry("histogram buckets not this version's"));
    }
    match g.min_slot_words() {
        Some(min) if g.slot_words >= min => Ok(g),
        _ => Err(ReadError::Geometry("slot too small for its contents")),
    }
}

/// What one slot holds.
enum Slot {
    Empty,
    Entry(EntrySnapshot),
    Bad,
    Changed,
}

/// Tries at reading a slot's values consistently before taking them as they are.
const TRIES: usize = 16;

fn read_slot(g: &Geometry, index: usize, words: &[AtomicU64]) -> Slot {
    let load = |i: usize, order: Ordering| words.get(i).map_or(0, |w| w.load(order));
    let text = |at: usize, len: usize| words.get(at..at + len).map(unpack_str).unwrap_or_default();
    let state = load(slot::STATE, Ordering::Acquire);
    let status = state & 0xff;
    if status != LIVE && status != CLOSED {
        return Slot::Empty;
    }
    let n = load(slot::COUNTERS, Ordering::Relaxed);
    let m = load(slot::HISTOGRAMS, Ordering::Acquire);
    let (Ok(n), Ok(m)) = (usize::try_from(n), usize::try_from(m)) else {
        return Slot::Bad;
    };
    if n > g.max_counters || m > g.max_histograms {
        return Slot::Bad;
    }
    let mut values = vec![0u64; n];
    let mut name = String::new();
    let mut updated = 0;
    let mut consistent = false;
    for _ in 0..TRIES {
        let before = load(slot::SEQUENCE, Ordering::Acquire);
        name = text(slot::NAME, LABEL_WORDS);
        for (i, v) in values.iter_mut().enumerate() {
            *v = load(g.counter_value(i), Ordering::Relaxed);
        }
        updated = load(slot::UPDATED, Ordering::Relaxed);
        fence(Ordering::Acquire);
        let after = load(slot::SEQUENCE, Ordering::Relaxed);
        if before == after && before & 1 == 0 {
            consistent = true;
            break;
        }
        std::hint::spin_loop();
    }
    let counters = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| (text(g.counter_name(i), NAME_WORDS), v))
        .collect();
    let histograms = (0..m)
        .map(|i| {
            let at = g.histogram(i);
            HistogramSnapshot {
                name: text(at, NAME_WORDS),
                max: load(at + NAME_WORDS, Ordering::Relaxed),
                buckets: (0..g.buckets)
                    .map(|b| load(at + NAME_WORDS + 1 + b, Ordering::Relaxed))
                    .collect(),
                sub_bucket_bits: g.sub_bucket_bits,
            }
        })
        .collect();
    let entry = EntrySnapshot {
        slot: index,
        kind: text(slot::KIND, KIND_WORDS),
        name,
        detail: text(slot::DETAIL, LABEL_WORDS),
        closed: status == CLOSED,
        consistent,
        updated_ns: updated,
        counters,
        histograms,
    };
    fence(Ordering::Acquire);
    if load(slot::STATE, Ordering::Relaxed) != state {
        return Slot::Changed;
    }
    Slot::Entry(entry)
}
