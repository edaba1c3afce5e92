//! The tool as users meet it, on the built `multipoint` binary on loopback multicast: a
//! signal ends a run with its full report; an output file that cannot be written stops
//! the run before it starts; the subscriber names the session it followed and `--session`
//! keeps another one out; an address in use is named in the error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{TcpListener, UdpSocket};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{
    groups, last_json, last_json_with, pub_to_sub, run, run_on_own_group, spawn_sub, turn, u64_of,
    words, Proc,
};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The stdout and stderr of `output`, for messages.
fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn sigint_during_sub_ends_it_with_the_full_report_saying_interrupted() {
    let _turn = turn();
    let [group] = groups();
    let mut sub = spawn_sub(&format!("--secs 30 --json --group {group}"));
    // A publisher that would go on for far longer than the test waits.
    let _publisher = Proc::spawn(&words(&format!(
        "pub --secs 30 --rate 20000 --size 64 --session SIGFEED --group {group}"
    )));
    sub.line_with("following session SIGFEED");
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    sub.signal(Signal::SIGINT);
    let output = sub.finish();
    assert!(signalled.elapsed() < Duration::from_secs(5));
    let report = last_json_with(&output, 130);
    let (stdout, _) = text(&output);

    assert_eq!(report["interrupted"], "SIGINT", "{report}");
    assert!(
        stdout.contains("interrupted by SIGINT"),
        "the text says so too: {stdout}"
    );
    assert!(
        stdout.contains("multipoint sub: "),
        "the full report: {stdout}"
    );
    assert_eq!(report["command"], "sub");
    assert_eq!(report["session"], "SIGFEED", "{report}");
    assert_eq!(report["ended"], false, "{report}");
    // Whatever arrived before the signal is in the report, and adds up.
    let messages = u64_of(&report, "messages");
    assert!(messages > 0, "{report}");
    assert_eq!(u64_of(&report, "bytes"), 64 * messages, "{report}");
    assert_eq!(u64_of(&report["latency_ns"], "count"), messages, "{report}");
    assert_eq!(
        (u64_of(&report, "gaps"), u64_of(&report, "missing")),
        (0, 0),
        "{report}"
    );
    let secs = report["secs"].as_f64().unwrap();
    assert!(secs > 0.0 && secs < 10.0, "{report}");
    // At 20,000 messages a second, give or take a slow start.
    assert!(
        messages as f64 <= secs * 20_000.0 * 1.2 + 1_000.0,
        "{messages} in {secs} s: {report}"
    );
}

#[test]
fn sigterm_during_pub_reports_what_was_sent_until_then() {
    let _turn = turn();
    let [group] = groups();
    let publisher = Proc::spawn(&words(&format!(
        "pub --secs 30 --rate 20000 --json --group {group}"
    )));
    std::thread::sleep(Duration::from_millis(500));
    publisher.signal(Signal::SIGTERM);
    let output = publisher.finish();
    let report = last_json_with(&output, 143);
    assert_eq!(report["interrupted"], "SIGTERM", "{report}");
    let sent = u64_of(&report, "messages");
    assert!(sent > 0 && sent < 30 * 20_000, "{report}");
    assert!(report["secs"].as_f64().unwrap() < 10.0, "{report}");
}

#[test]
fn a_signal_delivered_twice_at_once_still_gives_the_report() {
    // `timeout -s INT` sends the signal to the process, then to its process group: one
    // request, twice.
    let _turn = turn();
    let [group] = groups();
    let sub = spawn_sub(&format!("--secs 30 --json --group {group}"));
    sub.signal(Signal::SIGINT);
    sub.signal(Signal::SIGINT);
    let report = last_json_with(&sub.finish(), 130);
    assert_eq!(report["interrupted"], "SIGINT", "{report}");
    assert_eq!(u64_of(&report, "messages"), 0, "{report}");
}

#[test]
fn a_run_that_ends_by_itself_is_not_interrupted() {
    let _turn = turn();
    let report = last_json(&run_on_own_group("pub --count 100 --rate 10000 --json"));
    assert!(report["interrupted"].is_null(), "{report}");
}

/// Runs `multipoint ARGS`, which must fail at once with an error naming `path`, before it
/// joined, published or reported anything.
fn assert_fails_before_running(args: &str, path: &str) {
    let started = Instant::now();
    let output = run(&words(args));
    let took = started.elapsed();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{args}: {stdout}\n{stderr}");
    assert!(
        stderr.contains(path),
        "{args}: the error names {path}: {stderr}"
    );
    // No socket was opened (sub says `listening on` once it joined; the demo's first words
    // are its report), and the run did not last its --secs.
    assert!(stdout.trim().is_empty(), "{args}: printed {stdout}");
    assert!(took < Duration::from_secs(2), "{args}: took {took:?}");
}

#[test]
fn an_output_file_that_cannot_be_written_fails_before_anything_runs() {
    let _turn = turn();
    let [group] = groups();
    let plot = "/proc/nonexistent/multipoint.svg";
    let hlog = "/proc/nonexistent/multipoint.hlog";
    assert_fails_before_running(&format!("sub --secs 5 --plot {plot} --group {group}"), plot);
    assert_fails_before_running(&format!("sub --secs 5 --hlog {hlog} --group {group}"), hlog);
    assert_fails_before_running(
        &format!("demo --secs 5 --plot {plot} --group {group}"),
        plot,
    );
    assert_fails_before_running(
        &format!("pingpong --secs 5 --plot {plot} --group {group}"),
        plot,
    );
}

#[test]
fn the_subscriber_names_the_session_of_the_publisher_it_followed() {
    let _turn = turn();
    // The publisher's own default session (MP and its process id).
    let (published, sub) = pub_to_sub("--secs 5 --json", "--count 5000 --rate 50000 --json");
    let published = last_json(&published);
    let output = sub.finish();
    let received = last_json(&output);
    let session = published["session"].as_str().unwrap();
    assert!(session.starts_with("MP"), "{published}");
    assert_eq!(received["session"], session, "{received}");
    assert!(received["sender"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(u64_of(&received, "messages"), 5_000, "{received}");
    let (stdout, _) = text(&output);
    assert!(
        stdout.contains(&format!("following session {session} from")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("session {session} from")),
        "{stdout}"
    );
}

#[test]
fn session_follows_only_the_named_one_of_two_publishers_on_one_group() {
    let _turn = turn();
    let [group] = groups();
    let sub = spawn_sub(&format!("--secs 8 --json --session FEEDB --group {group}"));
    let other = Proc::spawn(&words(&format!(
        "pub --count 20000 --rate 20000 --json --session FEEDA --group {group}"
    )));
    let wanted = last_json(&run(&words(&format!(
        "pub --count 10000 --rate 20000 --json --session FEEDB --group {group}"
    ))));
    let (_, other) = other.json();
    let output = sub.finish();
    let received = last_json(&output);

    assert_eq!(u64_of(&wanted, "messages"), 10_000, "{wanted}");
    assert_eq!(u64_of(&other, "messages"), 20_000, "{other}");
    assert_eq!(received["session"], "FEEDB", "{received}");
    assert_eq!(u64_of(&received, "messages"), 10_000, "{received}");
    assert_eq!(
        (u64_of(&received, "gaps"), u64_of(&received, "missing")),
        (0, 0),
        "{received}"
    );
    assert_eq!(received["ended"], true, "{received}");
    // FEEDA's packets reached the group too: counted, and said.
    assert!(u64_of(&received, "other_session") > 0, "{received}");
    let (stdout, _) = text(&output);
    assert!(
        stdout.contains("another publisher shares this group and port"),
        "{stdout}"
    );
}

#[test]
fn an_address_in_use_is_named_in_the_error() {
    let _turn = turn();
    // A plain socket holding a port without sharing it: a subscriber on that port cannot
    // bind it.
    let holder = UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let group = format!("239.255.0.1:{port}");
    let output = run(&words(&format!("sub --secs 1 --group {group}")));
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for words in [
        format!("binding 0.0.0.0:{port}"),
        format!("to receive {group}"),
        "Address already in use".to_owned(),
    ] {
        assert!(stderr.contains(&words), "no {words:?}: {stderr}");
    }

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let output = run(&words(&format!("root --count 1 --listen {at}")));
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "listening for leaves on {at}: Address already in use"
        )),
        "{stderr}"
    );
}

/// The JSON object of `demo --json` on `group` for one second.
fn demo(group: &str) -> Value {
    last_json(&run(&words(&format!(
        "demo --secs 1 --rate 100000 --json --group {group}"
    ))))
}

#[test]
fn demo_json_has_the_publisher_rate_and_each_subscriber_its_own() {
    let _turn = turn();
    let [group] = groups();
    let report = demo(&group);
    let publisher = &report["publisher"];
    assert_eq!(report["messages"], publisher["messages"], "{report}");
    assert_eq!(
        report["msgs_per_sec"], publisher["msgs_per_sec"],
        "{report}"
    );
    let subscribers = report["subscribers"].as_array().unwrap();
    assert_eq!(subscribers.len(), 2, "{report}");
    let sent = u64_of(publisher, "messages");
    for sub in subscribers {
        let rate = sub["msgs_per_sec"].as_f64().unwrap();
        assert!(rate > 0.0, "{sub}");
        // Each subscriber's rate is its own: at most what was published, not a sum.
        assert!(
            rate <= publisher["msgs_per_sec"].as_f64().unwrap() * 1.01,
            "{report}"
        );
        assert!(u64_of(sub, "messages") <= sent, "{sub}");
        assert!(sub["session"].as_str().unwrap().starts_with("MP"), "{sub}");
    }
}
