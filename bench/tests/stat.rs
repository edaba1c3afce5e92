//! `multipoint stat` against running `multipoint` processes: the counters it reads are
//! the ones the processes report, a process killed with SIGKILL leaves a stale file
//! (which `--clean` removes), and `--watch` ends when its stream is gone.
//!
//! Every process gets `MULTIPOINT_STAT_DIR` set to a directory of this test's own in
//! `/dev/shm`, removed with everything in it when the test ends, so that other
//! processes of the host are not seen and nothing is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{groups, multipoint, words, Proc};
use serde_json::Value;

/// A directory of counters files for one test, removed when dropped.
struct StatDir(PathBuf);

impl StatDir {
    fn new(test: &str) -> StatDir {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("mp-stat-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        StatDir(dir)
    }

    /// `multipoint ARGS` in the background with its counters file here, stdin piped.
    fn spawn(&self, args: &str) -> Proc {
        let mut command = multipoint();
        command
            .args(words(args))
            .env("MULTIPOINT_STAT_DIR", &self.0)
            .env_remove("MULTIPOINT_STAT")
            .stdin(Stdio::piped());
        Proc::spawn_command(command, &format!("multipoint {args}"))
    }

    /// One refresh of `multipoint stat --json ARGS` on this directory.
    fn stat(&self, args: &str) -> Value {
        let dir = self.0.display().to_string();
        let mut all = vec!["stat", "--once", "--json", "--dir", &dir];
        all.extend(words(args));
        let output = common::run(&all);
        common::last_json(&output)
    }
}

impl Drop for StatDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The process `pid` in a `stat --json` line.
fn process(stat: &Value, pid: u32) -> &Value {
    stat["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == u64::from(pid))
        .unwrap_or_else(|| panic!("no process {pid} in {stat}"))
}

/// The one entry of `kind` of a process in a `stat --json` line.
fn entry<'a>(process: &'a Value, kind: &str) -> &'a Value {
    let found: Vec<&Value> = process["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in {process}");
    found[0]
}

/// The JSON report a process printed (its last stdout line so far that is an object).
fn report_line(proc: &mut Proc) -> Value {
    let line = proc.line_with("{\"command\"");
    serde_json::from_str(&line).unwrap()
}

/// Checks that the counters `keys` of `entry` are those of `report`.
fn assert_same_counters(entry: &Value, report: &Value, keys: &[&str]) {
    for key in keys {
        let (value, reported) = (&entry["counters"][*key], &report[*key]);
        assert!(value.is_u64(), "{key} missing in {entry}");
        assert_eq!(value, reported, "{key}: stat {value}, report {reported}");
    }
}

#[test]
fn the_counters_stat_reads_are_those_the_processes_report_at_their_end() {
    let _turn = common::turn();
    let dir = StatDir::new("final");
    let [group] = groups::<1>();
    let mut sub = dir.spawn(&format!(
        "sub --group {group} --session STATF --count 20000 --json --hold-stat --kernel-stamps"
    ));
    sub.line_with("listening on");
    let mut publisher = dir.spawn(&format!(
        "pub --group {group} --session STATF --count 20000 --rate 200000 --json --hold-stat \
         --tx-stamps --tx-stamp-every 10"
    ));
    // Each prints its report once its stream closed, then holds its file.
    let pub_report = report_line(&mut publisher);
    let sub_report = report_line(&mut sub);

    let stat = dir.stat("--hist");
    let p = process(&stat, publisher.id());
    assert_eq!(p["state"], "live");
    let published = entry(p, "publisher");
    assert_eq!(published["name"], "STATF");
    assert_eq!(published["closed"], true);
    assert_eq!(published["consistent"], true);
    assert_same_counters(
        published,
        &pub_report,
        &[
            "messages",
            "bytes",
            "packets",
            "sends",
            "gso_sends",
            "send_errors",
            "heartbeats",
        ],
    );
    assert_eq!(published["counters"]["messages"], 20_000);

    let s = process(&stat, sub.id());
    let received = entry(s, "subscription");
    assert_eq!(received["name"], "STATF");
    assert_eq!(received["detail"], group.as_str());
    assert_eq!(received["closed"], true);
    assert_same_counters(
        received,
        &sub_report,
        &[
            "messages",
            "packets",
            "gaps",
            "missing",
            "duplicates",
            "malformed",
            "kernel_drops",
        ],
    );
    assert_eq!(received["counters"]["messages"], sub_report["messages"]);
    // The end-to-end histogram holds every latency the report's does.
    let e2e = &received["histograms_ns"]["end_to_end"];
    assert_eq!(e2e["count"], sub_report["latency_ns"]["count"], "{e2e}");
    // The file's maximum is exact; the report's is HdrHistogram's at three significant
    // digits, at most 0.1 % above it.
    let (exact, reported) = (
        e2e["max"].as_u64().unwrap(),
        sub_report["latency_ns"]["max"].as_u64().unwrap(),
    );
    assert!(
        reported >= exact && reported - exact <= exact / 1_000 + 1,
        "{e2e}"
    );

    // The kernel's share: the file's wire->app and send->wire histograms hold every
    // sample the reports' do.
    let wire = &received["histograms_ns"]["wire_to_app"];
    assert_eq!(
        wire["count"], sub_report["wire_to_app_ns"]["count"],
        "{wire}"
    );
    let sent = &published["histograms_ns"]["send_to_wire"];
    assert_eq!(
        sent["count"], pub_report["send_to_wire_ns"]["count"],
        "{sent}"
    );
    assert!(sent["count"].as_u64().unwrap() > 0, "{sent}");

    // Closing stdin ends the hold: both exit, and take their files with them.
    for mut proc in [publisher, sub] {
        proc.close_stdin();
        let output = proc.finish();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
    }
    let after = dir.stat("");
    assert_eq!(after["processes"], Value::Array(Vec::new()), "{after}");
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}

#[test]
fn a_process_killed_with_sigkill_leaves_a_stale_file_that_clean_removes() {
    let _turn = common::turn();
    let dir = StatDir::new("killed");
    let [group] = groups::<1>();
    let mut sub = dir.spawn(&format!("sub --group {group} --secs 30"));
    sub.line_with("listening on");
    let pid = sub.id();
    let live = dir.stat("");
    assert_eq!(process(&live, pid)["state"], "live");
    assert_eq!(entry(process(&live, pid), "subscription")["closed"], false);

    sub.signal(nix::sys::signal::Signal::SIGKILL);
    let output = sub.finish();
    assert_eq!(output.status.code(), None, "killed by a signal");
    let file = dir.0.join(format!("multipoint-stat-{pid}"));
    assert!(file.exists(), "SIGKILL leaves the file behind");

    let stale = dir.stat("");
    let p = process(&stale, pid);
    assert_eq!(p["stale"], true, "{p}");
    assert_ne!(p["state"], "live");
    assert_eq!(p["removed"], false);
    // Its last counters are still shown.
    assert_eq!(entry(p, "subscription")["detail"], group.as_str());

    let cleaned = dir.stat("--clean");
    assert_eq!(process(&cleaned, pid)["removed"], true);
    assert!(!file.exists());
    assert_eq!(dir.stat("")["processes"], Value::Array(Vec::new()));
}

#[test]
fn a_corrupt_counters_file_is_reported_unreadable_beside_the_good_ones() {
    let dir = StatDir::new("corrupt");
    std::fs::write(dir.0.join("multipoint-stat-1"), [0xAB; 300]).unwrap();
    std::fs::write(dir.0.join("multipoint-stat-2"), b"MPSTAT").unwrap();
    let stat = dir.stat("--hist");
    let unreadable = stat["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 2, "{stat}");
    assert!(unreadable[0]["error"].as_str().unwrap().contains("magic"));
    assert!(unreadable[1]["error"]
        .as_str()
        .unwrap()
        .contains("truncated"));
}

#[test]
fn watching_a_stream_ends_once_it_is_gone() {
    let _turn = common::turn();
    let dir = StatDir::new("watch");
    let [group] = groups::<1>();
    let mut publisher = dir.spawn(&format!(
        "pub --group {group} --session STATW --count 2000 --rate 20000 --hold-stat"
    ));
    let mut watch = dir.spawn(&format!(
        "stat --watch STATW --json --interval-ms 20 --dir {}",
        dir.0.display()
    ));
    // Whether it saw the stream live or only closed, it ends (status 0) once nothing of
    // it is live; the publisher holds its file meanwhile, so the entry is there to see.
    let first = watch.line_with("STATW");
    let line: Value = serde_json::from_str(&first).unwrap();
    let p = process(&line, publisher.id());
    assert_eq!(entry(p, "publisher")["name"], "STATW");
    let output = watch.finish();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let last = String::from_utf8_lossy(&output.stdout);
    let last: Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    assert_eq!(
        entry(process(&last, publisher.id()), "publisher")["closed"],
        true
    );
    publisher.close_stdin();
    assert_eq!(publisher.finish().status.code(), Some(0));
}

#[test]
fn a_roots_fanout_leaves_and_server_are_seen_with_the_counters_it_reports() {
    let _turn = common::turn();
    let dir = StatDir::new("root");
    let mut root = dir.spawn(
        "root --listen 127.0.0.1:0 --wait-leaves 1 --count 5000 --rate 50000 --json \
         --hold-stat --rerequest-server 127.0.0.1:0",
    );
    let listening = root.line_with("listening on");
    let addr = listening
        .split_whitespace()
        .nth(4)
        .unwrap_or_else(|| panic!("no address in {listening:?}"));
    let leaf = dir.spawn(&format!("leaf --root {addr} --json"));
    let report = report_line(&mut root);
    let (_, leaf_report) = leaf.json();

    let stat = dir.stat("");
    let p = process(&stat, root.id());
    let fanout = entry(p, "fanout");
    assert_eq!(fanout["closed"], true);
    assert_eq!(fanout["name"], report["session"]);
    assert_same_counters(
        fanout,
        &report,
        &[
            "messages",
            "bytes",
            "packets",
            "unrouted",
            "deliveries",
            "send_ops",
            "gso_ops",
            "send_errors",
            "heartbeats",
            "backpressure",
        ],
    );
    let leaf_entry = entry(p, "leaf");
    assert_eq!(leaf_entry["counters"]["deliveries"], report["deliveries"]);
    assert_eq!(leaf_entry["counters"]["send_errors"], 0);
    assert!(leaf_report["packets"].as_u64().unwrap() > 0);
    let server = entry(p, "rerequest_server");
    assert_same_counters(
        server,
        &report["rerequest"],
        &[
            "requests",
            "replies",
            "messages_served",
            "bytes_served",
            "refused",
        ],
    );

    root.close_stdin();
    assert_eq!(root.finish().status.code(), Some(0));
    assert_eq!(dir.stat("")["processes"], Value::Array(Vec::new()));
}

#[test]
fn an_ipc_writer_and_its_reader_show_in_stat_and_a_writer_killed_with_sigkill_is_stale() {
    let _turn = common::turn();
    let dir = StatDir::new("ipc");
    let name = format!("stat-test-{}", std::process::id());
    let ring = RingFile(PathBuf::from(format!("/dev/shm/multipoint-ipc-{name}")));
    let mut writer = dir.spawn(&format!(
        "pub --ipc {name} --size 32 --secs 60 --rate 20000 --json"
    ));
    writer.line_with("writing the ipc ring");
    let mut reader = dir.spawn(&format!("sub --ipc {name} --secs 60 --json"));
    reader.line_with("reading the ipc ring");
    let (writer_pid, reader_pid) = (writer.id(), reader.id());

    let live = dir.stat("");
    let w = process(&live, writer_pid);
    assert_eq!(w["state"], "live", "{w}");
    let written = entry(w, "ipc_writer");
    assert_eq!(written["name"], name.as_str(), "{written}");
    assert!(written["detail"]
        .as_str()
        .is_some_and(|d| d.contains(&ring.0.display().to_string())));
    let r = process(&live, reader_pid);
    let read = entry(r, "ipc_reader");
    assert!(
        read["detail"].as_str().is_some_and(|d| d.contains(&name)),
        "{read}"
    );
    assert_eq!(read["counters"]["lost"], 0, "{read}");

    writer.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = writer.finish();
    // The reader sees its writer dead, reports and exits (its file goes with it).
    let (text, got) = reader.json();
    assert_eq!(got["ipc_writer"], "dead", "{text}");
    let stale = dir.stat("");
    let w = process(&stale, writer_pid);
    assert_eq!(w["stale"], true, "{w}");
    assert!(entry(w, "ipc_writer")["counters"]["messages"].is_u64());
    let cleaned = dir.stat("--clean");
    assert_eq!(process(&cleaned, writer_pid)["removed"], true);
    assert_eq!(dir.stat("")["processes"], Value::Array(Vec::new()));
}

/// A ring file a killed writer leaves, removed when dropped.
struct RingFile(PathBuf);

impl Drop for RingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
