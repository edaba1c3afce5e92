//! `multipoint pub --line-b` on loopback: two `multipoint sub`s, one on each line's group,
//! each get every message and the end of session, and pub's JSON reports line B apart;
//! and one `multipoint sub --line-b` on both lines gets every message once, with each
//! line in its JSON.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::UdpSocket;

use common::{last_json, run, turn, u64_of, words, Proc};
use serde_json::Value;

/// Two groups on ports no one else on this host is using right now (those of throwaway
/// UDP sockets, both open at once so that they differ).
fn two_groups() -> (String, String) {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    (
        format!("239.255.0.1:{}", port(&a)),
        format!("239.255.0.2:{}", port(&b)),
    )
}

/// Starts `multipoint sub` on `group` (with `more` options) and waits until it has
/// joined; returns it and the line it said so with.
fn spawn_sub_with(group: &str, more: &str) -> (Proc, String) {
    common::spawn_sub_saying(&format!("--secs 8 --json --group {group} {more}"))
}

/// Starts `multipoint sub` on `group` and waits until it has joined.
fn spawn_sub(group: &str) -> Proc {
    spawn_sub_with(group, "").0
}

/// Asserts that a sub's report has every one of `count` messages, no gap and the end.
fn assert_got_everything(line: &str, received: &Value, count: u64) {
    assert_eq!(u64_of(received, "messages"), count, "{line}: {received}");
    assert_eq!(u64_of(received, "gaps"), 0, "{line}: {received}");
    assert_eq!(u64_of(received, "missing"), 0, "{line}: {received}");
    assert_eq!(received["ended"], true, "{line}: {received}");
}

#[test]
fn pub_with_line_b_reaches_a_sub_on_each_group_with_every_message() {
    let _turn = turn();
    let (a, b) = two_groups();
    let (sub_a, sub_b) = (spawn_sub(&a), spawn_sub(&b));
    let published = last_json(&run(&words(&format!(
        "pub --count 50000 --rate 100000 --json --group {a} --line-b {b}"
    ))));
    let (received_a, received_b) = (last_json(&sub_a.finish()), last_json(&sub_b.finish()));

    assert_eq!(u64_of(&published, "messages"), 50_000, "{published}");
    let line_b = &published["line_b"];
    assert_eq!(line_b["group"], b.as_str(), "{published}");
    assert_eq!(line_b["interface"], "127.0.0.1", "--iface's: {published}");
    assert_eq!(
        u64_of(line_b, "packets"),
        u64_of(&published, "packets"),
        "line B sent every packet line A did: {published}"
    );
    assert_eq!(u64_of(line_b, "send_errors"), 0, "{published}");
    assert!(u64_of(line_b, "sends") > 0, "{published}");

    assert_got_everything("line A", &received_a, 50_000);
    assert_got_everything("line B", &received_b, 50_000);
    assert_eq!(
        received_a["session"], received_b["session"],
        "one session on both lines"
    );
}

#[test]
fn pub_without_line_b_has_no_line_b_in_its_json() {
    let _turn = turn();
    let (a, _) = two_groups();
    let published = last_json(&run(&words(&format!(
        "pub --count 100 --rate 0 --json --group {a}"
    ))));
    assert_eq!(u64_of(&published, "messages"), 100, "{published}");
    assert!(published.get("line_b").is_none(), "{published}");
}

#[test]
fn sub_on_both_lines_gets_every_message_once_and_reports_each_line() {
    let _turn = turn();
    let (a, b) = two_groups();
    let (sub, first) = spawn_sub_with(&a, &format!("--line-b {b} --line-wait-us 2000"));
    assert!(
        first.contains(&format!("and line B {b}")),
        "the first line names line B: {first}"
    );
    let published = last_json(&run(&words(&format!(
        "pub --count 50000 --rate 100000 --json --group {a} --line-b {b}"
    ))));
    let received = last_json(&sub.finish());
    assert_eq!(u64_of(&published, "messages"), 50_000, "{published}");
    assert_got_everything("both lines", &received, 50_000);
    assert_eq!(u64_of(&received, "duplicates"), 0, "{received}");
    let lines = received["lines"].as_array().expect("a list of lines");
    assert_eq!(lines.len(), 2, "{received}");
    assert_eq!(lines[0]["group"], a.as_str());
    assert_eq!(lines[1]["group"], b.as_str());
    let packets = u64_of(&published, "packets");
    let wins = u64_of(&lines[0], "wins") + u64_of(&lines[1], "wins");
    for line in lines {
        // Loopback loses nothing: each line brought every packet (but perhaps the last
        // few, the end of session's repeats once the sub had heard it), and each data
        // packet was won by one line and a duplicate on the other.
        let got = u64_of(line, "packets");
        assert!(
            got <= packets && got + 10 >= packets,
            "{line}: of {packets}"
        );
        assert_eq!(u64_of(line, "gaps"), 0, "{line}");
        assert_eq!(u64_of(line, "down_events"), 0, "{line}");
        let seen = u64_of(line, "wins") + u64_of(line, "duplicates");
        assert!(seen <= wins && seen + 10 >= wins, "{line}: of {wins}");
        assert!(line["behind_us"]["p50"].is_number(), "{line}");
    }
    assert!(wins > 0 && wins <= packets, "{received}");
}
