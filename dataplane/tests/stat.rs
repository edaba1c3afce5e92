//! The counters file of an embedding program: a publisher and an A/B-less subscription
//! on loopback register entries, write their counters and the end-to-end histogram into
//! them, and the file holds, at their close, exactly what they report; it is gone once
//! they are. One test in this binary, so that the directory set in the environment is the
//! only one any registration of this process sees.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{await_end_of_session, group, loopback_subscription, new_publisher, start_or_skip};
use multipoint_dataplane::latency;
use multipoint_dataplane::stat::{self, reader};
use multipoint_dataplane::{BackendChoice, Handler, ShardConfig};

struct Count(u64);

impl Handler for Count {
    fn on_message(&mut self, _sequence: u64, _message: &[u8]) {
        self.0 += 1;
    }
}

#[test]
fn an_embedding_programs_streams_show_in_its_counters_file_with_their_final_counters() {
    let dir = std::env::temp_dir().join(format!("mp-stat-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Before anything registers: this binary has no other test.
    std::env::set_var("MULTIPOINT_STAT_DIR", &dir);
    let Some(mut shards) = start_or_skip("stat", ShardConfig::default()) else {
        return;
    };
    let g = group(15, 3);
    let held = stat::hold();
    let sub = shards
        .subscribe(
            multipoint_dataplane::SubscriptionConfig {
                timestamps: true,
                ..loopback_subscription(g)
            },
            Count(0),
        )
        .unwrap();
    let mut publisher = new_publisher(BackendChoice::Auto, "STATLIB", g);
    let path = stat::path().expect("the file exists while entries do");
    assert_eq!(path, stat::file_path(&dir, std::process::id()));
    let mut msg = [0u8; 64];
    for _ in 0..5_000 {
        latency::write_stamp(&mut msg, latency::now_ns());
        publisher
            .offer_wait(&msg, std::time::Duration::MAX)
            .unwrap();
    }
    let sent = publisher.close();
    await_end_of_session(std::slice::from_ref(&sub));
    let closed = sub.close().unwrap();

    let file = reader::read(&path).unwrap();
    assert_eq!(file.pid, std::process::id());
    let of = |kind: &str| {
        let found: Vec<_> = file.entries.iter().filter(|e| e.kind == kind).collect();
        assert_eq!(found.len(), 1, "one {kind}: {:?}", file.entries);
        found[0].clone()
    };
    let p = of("publisher");
    assert!(p.closed && p.consistent);
    assert_eq!(
        (p.name.as_str(), p.detail.clone()),
        ("STATLIB", g.to_string())
    );
    assert_eq!(p.counter("messages"), Some(sent.messages));
    assert_eq!(p.counter("packets"), Some(sent.packets));
    assert_eq!(p.counter("sends"), Some(sent.sends));
    assert_eq!(p.counter("backpressure"), Some(sent.backpressure));
    let s = of("subscription");
    assert!(s.closed && s.consistent);
    // The session it locked onto names it.
    assert_eq!(s.name, "STATLIB");
    for (name, value) in [
        ("messages", closed.stats.messages),
        ("packets", closed.stats.packets),
        ("gaps", closed.stats.gaps),
        ("missing", closed.stats.missing),
        ("end_of_session", closed.stats.end_of_session),
    ] {
        assert_eq!(s.counter(name), Some(value), "{name}");
    }
    let e2e = &s.histograms[0];
    assert_eq!(e2e.name, "end_to_end");
    assert_eq!(e2e.percentiles().count, closed.latency.len());

    drop((held, closed, shards));
    assert!(!path.exists(), "the file goes with the last entry");
    assert!(stat::path().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
