//! Runs the built `multipoint` binary's tools on loopback multicast, each for a short
//! while, and checks the JSON object each prints last: `throughput`, `pingpong` with both
//! roles in one process, `pub` and `sub` as two processes, `sub` on a stream it did not
//! create, and `--plot`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use common::{
    groups, last_json, pub_to_sub, run, run_on_own_group, spawn_sub, turn, u64_of, words,
};
use multipoint_bench::report::SUMMARY;
use multipoint_control::socket2::SockRef;
use multipoint_dataplane::wire::{pack_all, write_end_of_session, Session, HEADER_LEN};
use serde_json::Value;

/// Checks that the run succeeded and that its last line is a JSON object with the
/// summary every tool's has, and returns it.
fn report_of(output: &Output) -> Value {
    let report = last_json(output);
    for key in SUMMARY {
        assert!(report.get(key).is_some(), "no {key}: {report}");
    }
    assert!(
        ["io_uring", "mmsg"].contains(&report["backend"].as_str().unwrap()),
        "{report}"
    );
    report
}

/// Checks `latency_ns` has every percentile, in order, and returns the count.
fn latency_count(report: &Value) -> u64 {
    let latency = &report["latency_ns"];
    let mut previous = 0;
    for key in ["p50", "p90", "p99", "p999", "p9999", "max"] {
        let value = latency[key]
            .as_u64()
            .unwrap_or_else(|| panic!("latency_ns.{key} missing: {report}"));
        assert!(
            value >= previous,
            "latency_ns.{key} below the one before: {report}"
        );
        previous = value;
    }
    latency["count"].as_u64().unwrap()
}

#[test]
fn throughput_delivers_what_it_publishes_and_reports_json() {
    let _turn = turn();
    let report = report_of(&run_on_own_group("throughput --secs 1 --json"));
    assert_eq!(report["command"], "throughput");
    let published = report["publisher"]["messages"].as_u64().unwrap();
    let delivered = u64_of(&report, "messages");
    assert!(delivered > 0, "{report}");
    assert!(report["msgs_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    // Whatever did not arrive was dropped by the kernel, and counted.
    assert!(
        delivered == published || u64_of(&report, "kernel_drops") > 0,
        "{report}"
    );
    assert_eq!(
        u64_of(&report, "duplicates") + u64_of(&report, "malformed"),
        0
    );
    assert_eq!(latency_count(&report), delivered, "{report}");
    assert_eq!(report["subscribers"].as_array().unwrap().len(), 1);
}

/// Runs `pingpong` with both roles for `count` round trips (20 s at most) on groups of
/// its own, with `more` arguments, and returns its report.
fn pingpong(count: u64, more: &[&str]) -> Value {
    let [ping, pong] = groups();
    let line =
        format!("pingpong --count {count} --secs 20 --json --group {ping} --reply-group {pong}");
    let mut args = words(&line);
    args.extend_from_slice(more);
    report_of(&run(&args))
}

#[test]
fn pingpong_in_one_process_makes_the_round_trips_asked_for() {
    let _turn = turn();
    let report = pingpong(2000, &[]);
    assert_eq!(
        (report["command"].as_str(), report["role"].as_str()),
        (Some("pingpong"), Some("both"))
    );
    assert_eq!(u64_of(&report, "round_trips"), 2000, "{report}");
    assert_eq!(u64_of(&report, "messages"), 2000, "{report}");
    // Every echo has a round trip, late ones too.
    let late = u64_of(&report, "late_echoes");
    assert_eq!(latency_count(&report), 2000 + late, "{report}");
    assert!(u64_of(&report["latency_ns"], "p50") > 0, "{report}");
    assert!(report["msgs_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    let echoed = report["pong"]["echoed"].as_u64().unwrap();
    assert!(echoed >= 2000, "{report}");
}

#[test]
fn sub_sees_every_message_of_pub_in_another_process_and_the_end_of_session() {
    let _turn = turn();
    let (published, sub) = pub_to_sub("--secs 3 --json", "--count 50000 --rate 100000 --json");
    let published = report_of(&published);
    let received = report_of(&sub.finish());

    assert_eq!(published["command"], "pub");
    assert_eq!(u64_of(&published, "messages"), 50_000, "{published}");
    assert!(published["gaps"].is_null() && published["latency_ns"].is_null());

    assert_eq!(received["command"], "sub");
    assert_eq!(u64_of(&received, "messages"), 50_000, "{received}");
    assert_eq!(u64_of(&received, "gaps"), 0, "{received}");
    assert_eq!(u64_of(&received, "missing"), 0, "{received}");
    assert_eq!(received["ended"], true, "{received}");
    assert_eq!(latency_count(&received), 50_000, "{received}");
    assert_eq!(u64_of(&received, "implausible_stamps"), 0, "{received}");
}

/// A UDP socket that sends to multicast groups through the loopback interface.
fn loopback_sender() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    SockRef::from(&socket)
        .set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
        .unwrap();
    socket.set_multicast_loop_v4(true).unwrap();
    socket
}

#[test]
fn sub_takes_any_moldudp64_stream_and_gives_no_latency_for_foreign_payloads() {
    let _turn = turn();
    let [group] = groups();
    let sub = spawn_sub(&format!("--secs 3 --json --session FEED1 --group {group}"));

    // A feed of our own making: text payloads, no timestamps; and another session, which
    // the subscriber ignores.
    let session = Session::new("FEED1").unwrap();
    let orders: Vec<Vec<u8>> = (1..=300)
        .map(|i| format!("ORDER {i:06} BUY 100 ACME").into_bytes())
        .collect();
    let mut packets = pack_all(&session, 1, 512, orders.iter().map(Vec::as_slice)).unwrap();
    let mut other = vec![0u8; HEADER_LEN];
    write_end_of_session(&mut other, &Session::new("OTHER").unwrap(), 1).unwrap();
    packets.push(other);
    let mut end = vec![0u8; HEADER_LEN];
    write_end_of_session(&mut end, &session, 301).unwrap();
    packets.push(end);

    let socket = loopback_sender();
    for packet in &packets {
        socket.send_to(packet, &group).unwrap();
        // Gently: this is about the payloads, not about the receive buffer.
        std::thread::sleep(Duration::from_micros(200));
    }
    let received = report_of(&sub.finish());

    assert_eq!(u64_of(&received, "messages"), 300, "{received}");
    assert_eq!(u64_of(&received, "gaps"), 0, "{received}");
    assert_eq!(received["ended"], true, "{received}");
    assert_eq!(u64_of(&received, "other_session"), 1, "{received}");
    assert!(received["latency_ns"].is_null(), "{received}");
    assert_eq!(u64_of(&received, "implausible_stamps"), 300, "{received}");
}

#[test]
fn sub_without_a_session_locks_onto_the_real_sender_not_a_stranger_first() {
    let _turn = turn();
    let [group] = groups();
    let sub = spawn_sub(&format!("--secs 4 --json --group {group}"));
    // A stranger sends first: two packets of the feed's session that follow on from each
    // other (numbered 1 and 2), from its own socket.
    let session = Session::new("FEED7").unwrap();
    let stranger = loopback_sender();
    for packet in pack_all(&session, 1, 40, [&b"stranger one"[..], b"stranger two"]).unwrap() {
        stranger.send_to(&packet, &group).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let published = report_of(&run(&words(&format!(
        "pub --count 20000 --rate 100000 --json --session FEED7 --group {group}"
    ))));
    let output = sub.finish();
    let received = report_of(&output);
    assert_eq!(u64_of(&published, "messages"), 20_000, "{published}");
    assert_eq!(u64_of(&received, "messages"), 20_000, "{received}");
    assert_eq!(
        (u64_of(&received, "gaps"), u64_of(&received, "missing")),
        (0, 0),
        "{received}"
    );
    assert_eq!(u64_of(&received, "foreign_source"), 2, "{received}");
    assert_eq!(received["session"], "FEED7", "{received}");
    let sender = received["sender"].as_str().unwrap();
    assert_ne!(
        sender,
        stranger.local_addr().unwrap().to_string(),
        "{received}"
    );
    assert!(sender.starts_with("127.0.0.1:"), "{received}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("following session FEED7 from {sender}")),
        "{text}"
    );
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn plot_writes_the_percentile_distribution_as_svg() {
    let _turn = turn();
    let file =
        TempFile(std::env::temp_dir().join(format!("multipoint-plot-{}.svg", std::process::id())));
    let report = pingpong(500, &["--plot", file.0.to_str().unwrap()]);
    assert_eq!(u64_of(&report, "round_trips"), 500, "{report}");
    let svg = std::fs::read_to_string(&file.0).expect("the plot was written");
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    for tick in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
        assert!(
            svg.contains(&format!(">{tick}</text>")),
            "no tick {tick}: {svg}"
        );
    }
    assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
    assert!(svg.contains("round trip"), "{svg}");
    // The latency axis is logarithmic: a tick per decade, at least two of them.
    assert!(svg.contains("latency (log scale)"), "{svg}");
    let decades = ["1 µs", "10 µs", "100 µs", "1 ms", "10 ms", "100 ms"]
        .iter()
        .filter(|tick| svg.contains(&format!(">{tick}</text>")))
        .count();
    assert!(decades >= 2, "{svg}");
    // p50, p99, p99.9 and max are marked with their values, and the samples counted.
    assert_eq!(svg.matches("class=\"mark\"").count(), 4, "{svg}");
    for mark in ["p50 ", "p99 ", "p99.9 ", "max "] {
        assert!(svg.contains(&format!(">{mark}")), "no {mark}: {svg}");
    }
    let samples = u64_of(&report["latency_ns"], "count");
    assert!(svg.contains(&format!("(n={samples})")), "{svg}");
}
