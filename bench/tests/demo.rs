//! Runs the built `multipoint` binary: `multipoint demo --json` on loopback multicast.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{last_json, run, words};

#[test]
fn the_demo_delivers_every_message_to_both_subscribers_and_reports_json() {
    // A port of this test's own, so that a demo running elsewhere on the host does not
    // share the group with it.
    let group = format!("239.255.0.1:{}", 40_000 + std::process::id() % 20_000);
    let line = format!("demo --secs 1 --rate 200000 --json --group {group}");
    let report = last_json(&run(&words(&line)));
    assert_eq!(report["command"], "demo");
    assert!(
        report["publisher"]["messages"].as_u64().unwrap() > 0,
        "{report}"
    );

    let subscribers = report["subscribers"]
        .as_array()
        .expect("a subscribers array");
    assert_eq!(subscribers.len(), 2, "{report}");
    for sub in subscribers {
        let backend = sub["backend"].as_str().expect("a backend name");
        assert!(["io_uring", "mmsg"].contains(&backend), "{sub}");
        assert!(sub["messages"].as_u64().unwrap() > 0, "{sub}");
        assert_eq!(sub["gaps"].as_u64(), Some(0), "{sub}");
        assert!(sub["msgs_per_sec"].as_f64().unwrap() > 0.0, "{sub}");
        let latency = &sub["latency_ns"];
        for key in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            assert!(latency[key].is_u64(), "latency_ns.{key} missing: {sub}");
        }
        assert!(latency["p50"].as_u64() <= latency["max"].as_u64(), "{sub}");
    }
}
