//! `multipoint pub --line-b` on loopback: two `multipoint sub`s, one on each line's group,
//! each get every message and the end of session, and pub's JSON reports line B apart.

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

/// Starts `multipoint sub` on `group` and waits until it has joined.
fn spawn_sub(group: &str) -> Proc {
    let mut sub = Proc::spawn(&words(&format!("sub --secs 8 --json --group {group}")));
    let first = sub.line();
    assert!(first.contains("listening on"), "sub said: {first:?}");
    sub
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
