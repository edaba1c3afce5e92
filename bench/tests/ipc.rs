//! Shared-memory rings across processes, through the built `multipoint` binary: a
//! writer (`pub --ipc`) and readers (`sub --ipc`) in processes of their own.
//!
//! Each test uses ring names of its own (the test process's pid and a counter) and
//! removes every ring file it could leave (a killed writer cannot remove its own), and
//! every child is killed when its guard drops, also when the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{u64_of, Proc};
use nix::sys::signal::Signal;

/// A ring name for this test, and its file removed at the end whatever happened.
struct Ring {
    name: String,
}

impl Ring {
    fn new(what: &str) -> Ring {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Ring {
            name: format!("btest-{}-{n}-{what}", std::process::id()),
        }
    }
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/shm/multipoint-ipc-{}", self.name))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
        // A writer killed while making the ring leaves its temporary file.
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            let prefix = format!("multipoint-ipc-{}.", self.name);
            for entry in dir.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// Starts `multipoint sub --ipc NAME ARGS --json` (it waits for the ring to appear).
/// The line it prints once attached is read by the caller.
fn reader(ring: &Ring, args: &str) -> Proc {
    let line = format!("sub --ipc {} --secs 60 --json {args}", ring.name);
    Proc::spawn(&common::words(&line))
}

/// Starts `multipoint pub --ipc NAME ARGS --json` and waits until it writes.
fn writer(ring: &Ring, args: &str) -> Proc {
    let line = format!("pub --ipc {} --size 32 --json {args}", ring.name);
    let mut proc = Proc::spawn(&common::words(&line));
    proc.line_with("writing the ipc ring");
    proc
}

#[test]
fn a_reader_process_gets_every_message_of_a_million_message_stream_in_order() {
    let _turn = common::turn();
    let ring = Ring::new("million");
    let mut sub = reader(&ring, "");
    // A 16 MiB ring (about 300,000 messages): the stream goes round it three times.
    let publisher = writer(
        &ring,
        "--count 1000000 --rate 400000 --ipc-capacity 16777216",
    );
    sub.line_with("reading the ipc ring");
    let (_, wrote) = publisher.json();
    let (text, got) = sub.json();
    assert_eq!(u64_of(&wrote, "messages"), 1_000_000);
    assert!(u64_of(&wrote, "laps") >= 3, "{wrote}");
    // A million messages with no gap and no duplicate: 1, 2, ... 1,000,000 in order.
    assert_eq!(u64_of(&got, "messages"), 1_000_000, "{text}");
    for key in [
        "gaps",
        "missing",
        "duplicates",
        "lost_to_lapping",
        "ipc_discarded",
    ] {
        assert_eq!(u64_of(&got, key), 0, "{key}: {text}");
    }
    assert_eq!(got["ended"], true, "{text}");
    assert_eq!(got["backend"], "ipc");
    assert!(!ring.path().exists(), "the writer removed its ring");
}

#[test]
fn a_stopped_reader_is_lapped_and_told_its_exact_loss_while_the_writer_and_another_reader_lose_nothing(
) {
    let _turn = common::turn();
    let ring = Ring::new("sigstop");
    let stopped = reader(&ring, "");
    let mut other = reader(&ring, "");
    let total = 800_000u64;
    // 4 MiB: about 75,000 messages, under half a second of this 200,000 msgs/s stream.
    let publisher = writer(
        &ring,
        &format!("--count {total} --rate 200000 --ipc-capacity 4194304"),
    );
    let mut stopped = stopped;
    stopped.line_with("reading the ipc ring");
    other.line_with("reading the ipc ring");
    stopped.signal(Signal::SIGSTOP);
    // Stopped for 300,000 messages: four times round its ring.
    std::thread::sleep(Duration::from_millis(1500));
    stopped.signal(Signal::SIGCONT);
    let (_, wrote) = publisher.json();
    let (text, got) = stopped.json();
    let (other_text, other_got) = other.json();
    assert_eq!(u64_of(&wrote, "messages"), total, "the writer never waited");
    let lost = u64_of(&got, "lost_to_lapping");
    assert!(lost > 0 && u64_of(&got, "lapped") > 0, "{text}");
    // Exact: every message was either read or told lost, and none is missing besides.
    assert_eq!(u64_of(&got, "messages") + lost, total, "{text}");
    assert_eq!(u64_of(&got, "missing"), 0, "{text}");
    assert_eq!(u64_of(&got, "duplicates"), 0, "{text}");
    assert_eq!(u64_of(&other_got, "messages"), total, "{other_text}");
    assert_eq!(u64_of(&other_got, "lost_to_lapping"), 0, "{other_text}");
    assert_eq!(u64_of(&other_got, "missing"), 0, "{other_text}");
}

#[test]
fn a_writer_killed_with_sigkill_is_detected_by_its_readers() {
    let _turn = common::turn();
    let ring = Ring::new("sigkill");
    let mut sub = reader(&ring, "");
    let publisher = writer(&ring, "--secs 60 --rate 50000");
    sub.line_with("reading the ipc ring");
    std::thread::sleep(Duration::from_millis(300));
    publisher.signal(Signal::SIGKILL);
    let pid = publisher.id();
    let _ = publisher.finish();
    // Its counters file too stays behind (`stat` reporting it stale is tested in
    // bench/tests/stat.rs).
    common::remove_stat_file(pid);
    assert!(
        ring.path().exists(),
        "a killed writer cannot remove its ring"
    );
    let (text, got) = sub.json();
    assert_eq!(got["ipc_writer"], "dead", "{text}");
    assert!(
        got["failure"]
            .as_str()
            .is_some_and(|f| f.contains("gone without closing")),
        "{text}"
    );
    assert!(u64_of(&got, "messages") > 0, "{text}");
    assert_eq!(u64_of(&got, "missing"), 0, "{text}");
}

#[test]
fn a_network_subscription_feeds_a_ring_that_a_reader_in_another_process_reads_whole() {
    let _turn = common::turn();
    let ring = Ring::new("feed");
    let [group] = common::groups();
    let mut reader = reader(&ring, "");
    let feeder = common::spawn_sub(&format!(
        "--secs 5 --json --group {group} --session FEEDX --publish-ipc {}",
        ring.name
    ));
    reader.line_with("reading the ipc ring");
    let published = common::last_json(&common::run(&common::words(&format!(
        "pub --count 50000 --rate 100000 --json --session FEEDX --group {group}"
    ))));
    let (fed_text, fed) = feeder.json();
    let (text, got) = reader.json();
    assert_eq!(u64_of(&published, "messages"), 50_000);
    assert_eq!(u64_of(&fed, "messages"), 50_000, "{fed_text}");
    assert_eq!(u64_of(&fed, "published_ipc_messages"), 50_000, "{fed_text}");
    // What the network brought, the ring carried: every message, the end of session.
    assert_eq!(u64_of(&got, "messages"), 50_000, "{text}");
    assert_eq!(u64_of(&got, "missing"), 0, "{text}");
    assert_eq!(u64_of(&got, "lost_to_lapping"), 0, "{text}");
    assert_eq!(got["ended"], true, "{text}");
    // The ring's header names the session the feeder was told to follow.
    assert_eq!(got["session"], "FEEDX", "{text}");
}

#[test]
fn a_lapped_reader_fills_its_loss_by_rerequest_from_the_streams_server() {
    let _turn = common::turn();
    let ring = Ring::new("recover");
    let [group] = common::groups();
    // The publisher's re-request server, on a port free a moment ago.
    let server = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A small ring (about 2,300 records), fed from the network.
    let feeder = common::spawn_sub(&format!(
        "--secs 30 --json --group {group} --session RECOV --rerequest {server} \
         --publish-ipc {} --ipc-capacity 131072",
        ring.name
    ));
    let mut sub = reader(
        &ring,
        &format!("--rerequest {server} --recovery-deadline 10000"),
    );
    sub.line_with("reading the ipc ring");
    let mut publisher = Proc::spawn(&common::words(&format!(
        "pub --count 200000 --rate 50000 --json --session RECOV --group {group} \
         --rerequest-server {server} --rerequest-rate 1000000 --linger 20"
    )));
    // It publishes once it said where it serves; a lap can be filled only once the
    // reader has read something (before that, where the stream began is not known).
    publisher.line_with("serving re-requests on");
    // Let it read a little, then stop it for long enough to be lapped many times over.
    std::thread::sleep(Duration::from_millis(500));
    sub.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1500));
    sub.signal(Signal::SIGCONT);
    let (text, got) = sub.json();
    let (fed_text, fed) = feeder.json();
    drop(publisher);
    assert_eq!(u64_of(&fed, "messages"), 200_000, "{fed_text}");
    // It was lapped, told so, and asked the server for what it lost: every message
    // came, the lost ones as recovered, and nothing is missing.
    assert!(u64_of(&got, "lost_to_lapping") > 10_000, "{text}");
    assert!(u64_of(&got, "requests") > 0, "{text}");
    assert!(u64_of(&got, "recovered") > 10_000, "{text}");
    assert_eq!(u64_of(&got, "missing"), 0, "{text}");
    assert_eq!(u64_of(&got, "gaps_given_up"), 0, "{text}");
    assert_eq!(u64_of(&got, "messages"), 200_000, "{text}");
}
