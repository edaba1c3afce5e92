//! `multipoint stat`: every live stream of this host, from the counters files the data
//! plane's processes keep (`/dev/shm/multipoint-stat-<pid>`), refreshed each second like
//! AeronStat.
//!
//! - On a terminal (without `--json`): the screen is redrawn each refresh with one block
//!   per process (pid, live or stale, heartbeat age) and a line per entry (kind, name,
//!   detail, and its non-zero counters), with `--hist` a line per histogram (p50, p90,
//!   p99, p99.9, max).
//! - Otherwise, or with `--json`: one JSON object per refresh, one line each.
//! - `--watch NAME` shows only the entries whose name (the session) is NAME or whose
//!   detail (group and port, address) contains it, and ends (status 0) once such an
//!   entry was seen (live or closed) and none is live any more (its process closed it or
//!   exited).
//!   `--until-gone` ends the same way when no live process is left (with `--watch`: no
//!   live matching entry). `--count N` ends after N refreshes (`--once`: one).
//! - A file whose process died (its pid gone, or taken by another process: the start
//!   time differs) is shown as stale; `--clean` removes such files. A file that cannot be
//!   read is shown with why (it is untrusted input: nothing in it can crash the tool).

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use multipoint_dataplane::latency::format_ns;
use multipoint_dataplane::stat::reader::{self, EntrySnapshot, FileSnapshot, Liveness};
use multipoint_dataplane::stat::{self, coarse_now_ns};

use crate::cli::StatArgs;
use crate::interrupt;
use crate::report::{Grouped, Json};
use crate::{Error, Result};

/// `s` with its control characters shown as `?`: names come from files anyone may
/// write, and an escape sequence must not reach the operator's terminal.
fn shown(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// One counters file as one refresh saw it.
#[derive(Debug)]
pub struct Seen {
    /// The file.
    pub path: PathBuf,
    /// What it held, or why it could not be read.
    pub read: std::result::Result<(FileSnapshot, Liveness), String>,
    /// Whether `--clean` removed it (stale).
    pub removed: bool,
}

impl Seen {
    /// Whether its process is alive.
    fn live(&self) -> bool {
        matches!(self.read, Ok((_, Liveness::Live)))
    }
}

/// Whether `entry` is one `--watch NAME` asks for.
pub fn watched(entry: &EntrySnapshot, name: &str) -> bool {
    entry.name == name || entry.detail.contains(name)
}

/// Reads every counters file in `dir` (removing stale ones with `clean`), keeping with
/// `watch` only the entries it names.
///
/// # Errors
///
/// [`Error::StatDir`] if the directory cannot be listed.
pub fn look(dir: &Path, watch: Option<&str>, clean: bool) -> Result<Vec<Seen>> {
    let found = reader::scan(dir).map_err(|source| Error::StatDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut seen = Vec::with_capacity(found.len());
    for (path, read) in found {
        let read = read.map_err(|e| e.to_string()).map(|mut file| {
            let liveness = Liveness::of(file.pid, file.start_time);
            if let Some(name) = watch {
                file.entries.retain(|e| watched(e, name));
            }
            (file, liveness)
        });
        let stale = matches!(&read, Ok((_, l)) if l.is_stale());
        let removed = clean && stale && std::fs::remove_file(&path).is_ok();
        if let (Some(_), Ok((file, _))) = (watch, &read) {
            if file.entries.is_empty() {
                continue;
            }
        }
        seen.push(Seen {
            path,
            read,
            removed,
        });
    }
    Ok(seen)
}

/// Runs `multipoint stat`. See the module docs.
///
/// # Errors
///
/// [`Error::StatDir`] if the directory cannot be listed.
pub fn run(args: &StatArgs) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(stat::dir);
    let json = args.json || !std::io::stdout().is_terminal();
    let count = if args.once { Some(1) } else { args.count };
    let interval = Duration::from_millis(args.interval_ms);
    let mut refresh = 0u64;
    let mut seen_any = false;
    let mut out = std::io::stdout().lock();
    loop {
        let started = Instant::now();
        let seen = look(&dir, args.watch.as_deref(), args.clean)?;
        refresh += 1;
        let text = if json {
            to_json(&seen, refresh, args.hist)
        } else {
            format!("\x1b[H\x1b[2J{}", table(&seen, &dir, refresh, args.hist))
        };
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            // The reader went away (a closed pipe): nothing more to show.
            return Ok(());
        }
        // With --watch: its entries were seen (live or closed), and none is live now.
        let (present, alive) = match &args.watch {
            Some(_) => (
                seen.iter().any(|s| s.read.is_ok()),
                seen.iter().any(|s| {
                    matches!(&s.read, Ok((f, Liveness::Live)) if f.entries.iter().any(|e| !e.closed))
                }),
            ),
            None => (seen.iter().any(Seen::live), seen.iter().any(Seen::live)),
        };
        seen_any |= present;
        let gone = seen_any && !alive && (args.until_gone || args.watch.is_some());
        if gone || count.is_some_and(|n| refresh >= n) || interrupt::requested() {
            return Ok(());
        }
        while started.elapsed() < interval {
            if interrupt::requested() {
                return Ok(());
            }
            std::thread::sleep(
                interval
                    .saturating_sub(started.elapsed())
                    .min(Duration::from_millis(50)),
            );
        }
    }
}

/// The milliseconds since `ns` (a `CLOCK_MONOTONIC_COARSE` reading of this host).
fn age_ms(ns: u64) -> u64 {
    coarse_now_ns().saturating_sub(ns) / 1_000_000
}

/// The terminal view of one refresh.
pub fn table(seen: &[Seen], dir: &Path, refresh: u64, hist: bool) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "multipoint stat: {} counters file(s) in {}, refresh {refresh}",
        seen.len(),
        dir.display()
    );
    for s in seen {
        let _ = writeln!(t);
        let (file, liveness) = match &s.read {
            Ok(read) => read,
            Err(why) => {
                let _ = writeln!(t, "{}  unreadable: {why}", s.path.display());
                continue;
            }
        };
        let state = match liveness {
            Liveness::Live => format!("live, heartbeat {} ms ago", age_ms(file.heartbeat_ns)),
            Liveness::Gone => "STALE: the process is gone".to_owned(),
            Liveness::Restarted => "STALE: another process has its pid now".to_owned(),
        };
        let _ = write!(t, "pid {}  {state}  {}", file.pid, s.path.display());
        if s.removed {
            let _ = write!(t, "  (removed)");
        }
        let _ = writeln!(t);
        if file.refused > 0 || file.bad_entries > 0 {
            let _ = writeln!(
                t,
                "  {} registrations refused (table full), {} entries unreadable",
                file.refused, file.bad_entries
            );
        }
        for e in &file.entries {
            let (kind, name, detail) = (shown(&e.kind), shown(&e.name), shown(&e.detail));
            let _ = write!(t, "  {kind:<16} {name:<10} {detail:<24}");
            if !e.consistent {
                let _ = write!(t, " (torn: changing while read)");
            }
            if e.closed {
                let _ = write!(t, " (closed)");
            }
            for (i, (name, value)) in e.counters.iter().enumerate() {
                if i == 0 || *value != 0 {
                    let _ = write!(t, "  {} {}", shown(name), Grouped(*value));
                }
            }
            let _ = writeln!(t);
            if hist {
                for h in &e.histograms {
                    let p = h.percentiles();
                    if p.count == 0 {
                        let _ = writeln!(t, "    {:<14} no samples", shown(&h.name));
                        continue;
                    }
                    let _ = writeln!(
                        t,
                        "    {:<14} p50 {}   p90 {}   p99 {}   p99.9 {}   max {}   (n={})",
                        shown(&h.name),
                        format_ns(p.p50),
                        format_ns(p.p90),
                        format_ns(p.p99),
                        format_ns(p.p999),
                        format_ns(p.max),
                        Grouped(p.count)
                    );
                }
            }
        }
    }
    t
}

/// The JSON line of one refresh: `processes` (each file read, with its entries) and
/// `unreadable` (each file that could not be, with why).
pub fn to_json(seen: &[Seen], refresh: u64, hist: bool) -> String {
    let mut processes = Vec::new();
    let mut unreadable = Vec::new();
    for s in seen {
        let file_name = s.path.display().to_string();
        let (file, liveness) = match &s.read {
            Ok(read) => read,
            Err(why) => {
                let mut o = Json::object();
                o.str("file", &file_name).str("error", why);
                unreadable.push(o.finish());
                continue;
            }
        };
        let entries: Vec<String> = file.entries.iter().map(|e| entry_json(e, hist)).collect();
        let mut o = Json::object();
        o.u64("pid", u64::from(file.pid))
            .str("file", &file_name)
            .str("state", liveness.name())
            .bool("stale", liveness.is_stale())
            .bool("removed", s.removed)
            .u64("heartbeat_age_ms", age_ms(file.heartbeat_ns))
            .u64("refused", file.refused)
            .u64("bad_entries", file.bad_entries)
            .raw("entries", &Json::array(&entries));
        processes.push(o.finish());
    }
    let mut json = Json::object();
    json.str("command", "stat")
        .u64("refresh", refresh)
        .raw("processes", &Json::array(&processes))
        .raw("unreadable", &Json::array(&unreadable));
    json.finish()
}

fn entry_json(e: &EntrySnapshot, hist: bool) -> String {
    let mut counters = Json::object();
    for (name, value) in &e.counters {
        counters.u64(name, *value);
    }
    let mut o = Json::object();
    o.str("kind", &e.kind)
        .str("name", &e.name)
        .str("detail", &e.detail)
        .bool("closed", e.closed)
        .bool("consistent", e.consistent)
        .raw("counters", &counters.finish());
    if hist {
        let mut hs = Json::object();
        for h in &e.histograms {
            let p = h.percentiles();
            let mut one = Json::object();
            one.u64("count", p.count)
                .u64("p50", p.p50)
                .u64("p90", p.p90)
                .u64("p99", p.p99)
                .u64("p999", p.p999)
                .u64("max", p.max);
            hs.raw(&h.name, &one.finish());
        }
        o.raw("histograms_ns", &hs.finish());
    }
    o.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use multipoint_dataplane::stat::{file_path, Registry};

    /// A directory of its own, removed on drop.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(test: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("mp-stat-tool-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    #[test]
    fn watch_keeps_the_entries_named_and_clean_removes_only_stale_files() {
        let d = dir("watch");
        let path = file_path(&d.0, std::process::id());
        let registry = Registry::create_at(&path, 4).unwrap();
        let a = registry
            .register("subscription", "FEED1", "239.255.0.1:31001", &["messages"])
            .unwrap();
        let b = registry
            .register("publisher", "FEED2", "239.255.0.2:31002", &["messages"])
            .unwrap();
        a.publish(&[5]);
        let h = a.add_histogram("end_to_end").unwrap();
        h.record(2_000);
        // A copy of the file whose process is gone: pid word (9) past any pid.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[72..80].copy_from_slice(&4_000_000_000u64.to_le_bytes());
        let stale = file_path(&d.0, 4_000_000);
        std::fs::write(&stale, &bytes).unwrap();

        let seen = look(&d.0, Some("FEED1"), false).unwrap();
        assert_eq!(seen.len(), 2);
        for s in &seen {
            let (file, _) = s.read.as_ref().unwrap();
            assert_eq!(file.entries.len(), 1);
            assert_eq!(file.entries[0].name, "FEED1");
        }
        assert_eq!(look(&d.0, Some("31002"), false).unwrap().len(), 2);
        assert!(look(&d.0, Some("NOSUCH"), false).unwrap().is_empty());

        let text = table(&seen, &d.0, 1, true);
        assert!(text.contains("STALE: the process is gone"), "{text}");
        assert!(text.contains("messages 5"), "{text}");
        assert!(
            text.contains("end_to_end") && text.contains("(n=1)"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&to_json(&seen, 1, true)).unwrap();
        let processes = json["processes"].as_array().unwrap();
        assert_eq!(processes.len(), 2);
        let e = &processes[0]["entries"][0];
        assert_eq!(e["counters"]["messages"], 5);
        assert_eq!(e["histograms_ns"]["end_to_end"]["count"], 1);

        let cleaned = look(&d.0, None, true).unwrap();
        let removed: Vec<bool> = cleaned.iter().map(|s| s.removed).collect();
        assert_eq!(removed.iter().filter(|&&r| r).count(), 1);
        assert!(!stale.exists() && path.exists());
        drop((h, a, b, registry));
    }
}
