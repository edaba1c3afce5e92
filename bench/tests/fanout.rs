//! Runs the built `multipoint fanout` briefly, with and without the baseline, and checks
//! the JSON object it prints last: the keys scripts rely on, and that leaves received
//! something.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Output;

use common::words;
use serde_json::Value;

/// The keys of `multipoint fanout --json` that scripts rely on.
const KEYS: [&str; 12] = [
    "command",
    "backend",
    "backend_reason",
    "leaves",
    "shards",
    "deliveries",
    "secs",
    "deliveries_per_sec",
    "drops",
    "send_errors",
    "baseline_deliveries_per_sec",
    "ratio",
];

/// Runs `multipoint fanout ARGS` to the end.
fn run(args: &str) -> Output {
    common::run(&words(&format!("fanout {args}")))
}

/// Checks that the run succeeded and that its last line is the fan-out's JSON object,
/// and returns it.
fn last_json(output: &Output) -> Value {
    let report = common::last_json(output);
    for key in KEYS {
        assert!(report.get(key).is_some(), "no {key}: {report}");
    }
    assert_eq!(report["command"], "fanout");
    report
}

fn number(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {report}"))
}

#[test]
fn fanout_reports_deliveries_and_the_baseline_as_json() {
    let report = last_json(&run("--leaves 16 --shards 2 --secs 0.5 --baseline --json"));
    assert_eq!(report["leaves"], 16);
    assert_eq!(report["shards"], 2);
    assert!(number(&report, "deliveries") > 0.0, "{report}");
    assert!(number(&report, "deliveries_per_sec") > 0.0, "{report}");
    assert!(number(&report, "secs") > 0.0, "{report}");
    assert!(
        number(&report, "baseline_deliveries_per_sec") > 0.0,
        "{report}"
    );
    assert!(number(&report, "ratio") > 0.0, "{report}");
    assert_eq!(report["send_errors"], 0, "{report}");
    // Every delivery the kernel took either arrived or is counted as dropped.
    assert_eq!(
        number(&report, "sent"),
        number(&report, "deliveries") + number(&report, "drops"),
        "{report}"
    );
    let baseline = &report["baseline"];
    assert!(number(baseline, "deliveries") > 0.0, "{report}");
}

#[test]
fn fanout_without_the_baseline_says_so_in_json() {
    let report = last_json(&run(
        "--leaves 4 --shards 1 --count 20000 --backend mmsg --gso off --leaf-gro on --json",
    ));
    assert_eq!(report["backend"], "mmsg");
    assert_eq!(report["messages"], 20_000);
    assert!(number(&report, "deliveries") > 0.0, "{report}");
    assert_eq!(report["gso_ops"], 0, "{report}");
    assert!(report["baseline"].is_null(), "{report}");
    assert!(report["baseline_deliveries_per_sec"].is_null(), "{report}");
    assert!(report["ratio"].is_null(), "{report}");
}

#[test]
fn fanout_refuses_a_message_too_large_for_a_packet() {
    let output = run("--size 2000 --secs 0.1 --leaves 1");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--size 2000 is too large"), "{stderr}");
}
