//! The counters file end to end within one process: registry, layout and reader,
//! including files that do not hold together.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::{header, slot, Geometry, MAX_COUNTERS, MAX_HISTOGRAMS};
use super::reader::{self, Liveness, ReadError};
use super::*;

/// A directory of its own for one test, removed (with what is in it) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("mp-stat-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, pid: u32) -> PathBuf {
        file_path(&self.0, pid)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The words of the file at `path`, as a reader would see them (owned, to be corrupted).
fn words_of(path: &std::path::Path) -> Vec<AtomicU64> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(8)
        .map(|c| AtomicU64::new(u64::from_le_bytes(c.try_into().unwrap())))
        .collect()
}

/// A publisher entry named after each of `names`.
fn publishers<const N: usize>(registry: &Registry, names: [&str; N]) -> [Entry; N] {
    names.map(|name| {
        registry
            .register("publisher", name, "", &["messages"])
            .unwrap()
    })
}

#[test]
fn an_entry_is_read_back_with_its_names_counters_and_histograms() {
    let dir = TempDir::new("entry");
    let path = dir.file(std::process::id());
    let registry = Registry::create_at(&path, 8).unwrap();
    let entry = registry
        .register(
            "subscription",
            "FEED1",
            "239.255.0.1:31001",
            &["messages", "gaps"],
        )
        .unwrap();
    let e2e = entry.add_histogram("end_to_end").unwrap();
    let wire = entry.add_histogram("wire_to_app").unwrap();
    entry.publish(&[1_000, 3]);
    for ns in 1..=1_000 {
        e2e.record(ns * 1_000);
    }
    wire.record_n(500, 10);

    let file = reader::read(&path).unwrap();
    assert_eq!(file.pid, std::process::id());
    assert_eq!(Liveness::of(file.pid, file.start_time), Liveness::Live);
    assert_eq!((file.registered, file.refused, file.bad_entries), (1, 0, 0));
    let [e] = &file.entries[..] else {
        panic!("one entry: {:?}", file.entries)
    };
    assert_eq!(
        (e.kind.as_str(), e.name.as_str()),
        ("subscription", "FEED1")
    );
    assert_eq!(e.detail, "239.255.0.1:31001");
    assert!(e.consistent && !e.closed);
    assert_eq!(
        e.counters,
        [("messages".to_owned(), 1_000), ("gaps".to_owned(), 3)]
    );
    assert_eq!(e.histograms.len(), 2);
    let p = e.histograms[0].percentiles();
    assert_eq!(e.histograms[0].name, "end_to_end");
    assert_eq!((p.count, p.max), (1_000, 1_000_000));
    // Within the buckets' 1/16 above the true value.
    for (got, want) in [(p.p50, 500_000), (p.p90, 900_000), (p.p99, 990_000)] {
        assert!(got >= want && got <= want + want / 16, "{got} for {want}");
    }
    let w = e.histograms[1].percentiles();
    assert_eq!(e.histograms[1].name, "wire_to_app");
    assert_eq!((w.count, w.p50, w.max), (10, 500, 500));

    entry.rename("FEED2");
    assert_eq!(reader::read(&path).unwrap().entries[0].name, "FEED2");
}

#[test]
fn a_slot_is_freed_when_its_entry_goes_and_the_file_when_the_last_one_does() {
    let dir = TempDir::new("free");
    let path = dir.file(1);
    let registry = Registry::create_at(&path, 2).unwrap();
    let [a, b] = publishers(&registry, ["A", "B"]);
    // The table is full: refused and counted, nothing breaks.
    assert!(registry
        .register("publisher", "C", "", &["messages"])
        .is_none());
    drop(a);
    let c = registry.register("leaf", "C", "", &["deliveries"]).unwrap();
    let file = reader::read(&path).unwrap();
    let names: Vec<&str> = file.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["C", "B"]);
    assert_eq!(file.entries[0].counters, [("deliveries".to_owned(), 0)]);
    assert_eq!((file.registered, file.refused), (3, 1));
    drop(registry);
    assert!(path.exists(), "entries still live");
    drop((b, c));
    assert!(!path.exists(), "the last entry removes the file");
}

#[test]
fn while_a_hold_lives_a_closed_entry_keeps_its_final_values() {
    let dir = TempDir::new("hold");
    let path = dir.file(2);
    let registry = Registry::create_at(&path, 4).unwrap();
    let held = hold();
    let entry = registry
        .register("publisher", "FEED1", "", &["messages"])
        .unwrap();
    entry.publish(&[77]);
    drop(entry);
    let file = reader::read(&path).unwrap();
    assert_eq!(file.entries.len(), 1);
    assert!(file.entries[0].closed);
    assert_eq!(file.entries[0].counter("messages"), Some(77));
    drop(registry);
    assert!(path.exists(), "the closed entry keeps the file");
    drop(held);
    assert!(!path.exists());
}

#[test]
fn a_file_too_short_for_its_header_or_its_table_is_truncated() {
    let dir = TempDir::new("short");
    let path = dir.file(3);
    std::fs::write(&path, b"MPSTAT").unwrap();
    assert!(matches!(
        reader::read(&path),
        Err(ReadError::Truncated { len: 6, .. })
    ));
    std::fs::write(&path, []).unwrap();
    assert!(matches!(
        reader::read(&path),
        Err(ReadError::Truncated { len: 0, .. })
    ));

    let live = dir.file(4);
    let registry = Registry::create_at(&live, 4).unwrap();
    let words = words_of(&live);
    assert!(matches!(
        reader::parse(&words[..words.len() - 1]),
        Err(ReadError::Truncated { .. })
    ));
    drop(registry);
}

#[test]
fn a_bad_magic_version_or_geometry_is_an_error_not_a_panic() {
    let dir = TempDir::new("magic");
    let path = dir.file(5);
    let registry = Registry::create_at(&path, 4).unwrap();
    let words = words_of(&path);
    drop(registry);
    let with = |word: usize, value: u64| {
        let w: Vec<AtomicU64> = words
            .iter()
            .map(|x| AtomicU64::new(x.load(Ordering::Relaxed)))
            .collect();
        w[word].store(value, Ordering::Relaxed);
        reader::parse(&w)
    };
    assert!(matches!(
        with(header::MAGIC, 0),
        Err(ReadError::BadMagic(0))
    ));
    assert!(matches!(
        with(header::VERSION, 99),
        Err(ReadError::Version(99))
    ));
    let g = header::GEOMETRY;
    assert!(matches!(with(g, 3), Err(ReadError::Geometry(_))));
    assert!(matches!(with(g + 1, u64::MAX), Err(ReadError::Geometry(_))));
    assert!(matches!(
        with(g + 1, 1_000),
        Err(ReadError::Truncated { .. })
    ));
    assert!(matches!(with(g + 2, 10), Err(ReadError::Geometry(_))));
    assert!(matches!(with(g + 3, 1 << 40), Err(ReadError::Geometry(_))));
    assert!(matches!(with(g + 5, 0), Err(ReadError::Geometry(_))));
    assert!(matches!(with(g + 6, 0), Err(ReadError::Geometry(_))));
    assert!(matches!(with(g + 6, 64), Err(ReadError::Geometry(_))));
    // A file may not make a reader allocate more than this version's writers would:
    // more slots, counters, histograms or buckets than theirs are refused.
    assert!(matches!(with(g + 1, 1 << 20), Err(ReadError::Geometry(_))));
    assert!(matches!(with(g + 3, 1_024), Err(ReadError::Geometry(_))));
    assert!(matches!(with(g + 4, 64), Err(ReadError::Geometry(_))));
    assert!(matches!(with(g + 5, 14_592), Err(ReadError::Geometry(_))));
    // A slot too large for the file to hold.
    assert!(matches!(
        with(g + 2, u64::MAX),
        Err(ReadError::Geometry(_) | ReadError::Truncated { .. })
    ));
    assert!(with(header::HIGH_WATER, u64::MAX).is_ok());
}

#[test]
fn an_entry_whose_lengths_do_not_fit_is_counted_and_skipped() {
    let dir = TempDir::new("lengths");
    let path = dir.file(6);
    let registry = Registry::create_at(&path, 4).unwrap();
    let [a, b] = publishers(&registry, ["A", "B"]);
    let words = words_of(&path);
    let g = Geometry::new(4);
    let first = g.slot_start(0);
    words[first + slot::COUNTERS].store(MAX_COUNTERS as u64 + 1, Ordering::Relaxed);
    let second = g.slot_start(1);
    words[second + slot::HISTOGRAMS].store(MAX_HISTOGRAMS as u64 + 1, Ordering::Relaxed);
    let file = reader::parse(&words).unwrap();
    assert_eq!((file.entries.len(), file.bad_entries), (0, 2));
    // A write that never finished (odd sequence): the values, marked inconsistent.
    let words = words_of(&path);
    words[first + slot::SEQUENCE].store(7, Ordering::Relaxed);
    let file = reader::parse(&words).unwrap();
    assert_eq!(file.entries.len(), 2);
    assert!(!file.entries[0].consistent && file.entries[1].consistent);
    drop((a, b, registry));
}

#[test]
fn any_corruption_of_a_file_reads_without_panicking() {
    let dir = TempDir::new("fuzz");
    let path = dir.file(7);
    let registry = Registry::create_at(&path, 3).unwrap();
    let entry = registry
        .register("subscription", "S", "d", &["a", "b"])
        .unwrap();
    let h = entry.add_histogram("end_to_end").unwrap();
    h.record(12_345);
    entry.publish(&[1, 2]);
    let clean = words_of(&path);
    drop((h, entry, registry));
    let mut rng = fastrand::Rng::with_seed(15);
    for _ in 0..2_000 {
        let words: Vec<AtomicU64> = clean
            .iter()
            .map(|w| AtomicU64::new(w.load(Ordering::Relaxed)))
            .collect();
        for _ in 0..rng.usize(1..8) {
            let i = rng.usize(..words.len().min(HEADER_AND_FIRST_SLOT));
            let v = match rng.u8(..4) {
                0 => rng.u64(..),
                1 => rng.u64(..64),
                2 => u64::MAX,
                _ => 0,
            };
            words[i].store(v, Ordering::Relaxed);
        }
        let cut = if rng.bool() {
            words.len()
        } else {
            rng.usize(..=words.len())
        };
        if let Ok(file) = reader::parse(&words[..cut]) {
            for e in &file.entries {
                for h in &e.histograms {
                    let _ = h.percentiles();
                }
            }
        }
    }
}

/// The words a corruption is aimed at: the header and the first slot's head and
/// histogram (where every length lives).
const HEADER_AND_FIRST_SLOT: usize = 16 + 300;

#[test]
fn a_file_whose_process_is_gone_or_replaced_is_stale() {
    let me = std::process::id();
    let mine = start_time(me).unwrap();
    assert_eq!(Liveness::of(me, mine), Liveness::Live);
    assert_eq!(Liveness::of(me, mine + 1), Liveness::Restarted);
    // Above the kernel's pid_max (at most 2^22).
    assert_eq!(Liveness::of(4_000_000_000, 0), Liveness::Gone);
    assert!(Liveness::Gone.is_stale() && !Liveness::Live.is_stale());
}

#[test]
fn a_process_that_died_but_is_not_reaped_yet_is_gone() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    // Wait for it to exit without reaping it: it stays a zombie until `wait` below.
    // SAFETY: `info` is a valid, writable siginfo_t for the call; P_PID with the child's
    // pid and WEXITED | WNOWAIT only waits, leaving the child to be reaped by `wait`.
    let rc = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT)
    };
    assert_eq!(rc, 0);
    assert!(std::path::Path::new(&format!("/proc/{pid}/stat")).exists());
    assert_eq!(start_time(pid), None);
    assert_eq!(Liveness::of(pid, 0), Liveness::Gone);
    child.wait().unwrap();
}

#[test]
fn a_scan_finds_the_counters_files_and_says_why_one_is_unreadable() {
    let dir = TempDir::new("scan");
    let good = Registry::create_at(&dir.file(20), 2).unwrap();
    let _e = good.register("publisher", "P", "", &["messages"]).unwrap();
    std::fs::write(
        dir.file(10),
        b"garbage garbage garbage garbage garbage garbage \
        garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage \
        garbage garbage garbage",
    )
    .unwrap();
    std::fs::write(dir.0.join("something-else"), b"x").unwrap();
    std::fs::write(dir.0.join("multipoint-stat-notapid"), b"x").unwrap();
    let found = reader::scan(&dir.0).unwrap();
    assert_eq!(found.len(), 2);
    assert!(matches!(found[0].1, Err(ReadError::BadMagic(_))));
    assert_eq!(found[1].1.as_ref().unwrap().entries[0].name, "P");
}

#[test]
fn a_cadence_says_yes_once_per_clock_tick() {
    let mut cadence = Cadence::default();
    assert!(cadence.due());
    // The coarse clock ticks every 1 to 4 ms: right after a yes, a no.
    let first = coarse_now_ns();
    let again = cadence.due();
    assert!(!again || coarse_now_ns() != first);
}
