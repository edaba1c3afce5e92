//! The backoff idle strategy: a shard delivers while traffic flows and sleeps once it
//! is quiet. Its own binary: it reads the CPU time of the threads named `mp-shard-0`,
//! which no other test may be running meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{group, named, new_publisher, shards_on, start_or_skip, BACKENDS};
use multipoint_dataplane::{BackendChoice, IdleStrategy, ShardConfig};

/// CPU time (user + system) the threads named `name` have used, in clock ticks.
fn thread_cpu_ticks(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the parenthesised command: state is 3rd, utime 14th, stime 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += ticks(11) + ticks(12);
    }
    total
}

#[test]
fn a_backoff_shard_delivers_and_then_sleeps() {
    for backend in BACKENDS {
        let config = ShardConfig {
            idle: IdleStrategy::Backoff,
            pin: false,
            ..shards_on(backend)
        };
        let Some(mut shards) = start_or_skip("a_backoff_shard_delivers_and_then_sleeps", config)
        else {
            continue;
        };
        let g = group(61, backend as u8);
        let (tx, rx) = mpsc::channel();
        let sub = shards
            .subscribe(named("BACKOFF", g), move |seq: u64, _msg: &[u8]| {
                let _ = tx.send(seq);
            })
            .unwrap();
        let mut publisher = new_publisher(BackendChoice::Auto, "BACKOFF", g);
        for round in 1..=50u64 {
            publisher.offer(b"ping").unwrap();
            publisher.flush();
            assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), round);
        }
        // Quiet now: after its short spin the shard must sleep, not burn the core.
        std::thread::sleep(Duration::from_millis(50));
        let before = thread_cpu_ticks("mp-shard-0");
        std::thread::sleep(Duration::from_millis(1000));
        let used = thread_cpu_ticks("mp-shard-0") - before;
        // A spinning shard would use about 100 ticks (1 s); a sleeping one about none.
        assert!(
            used < 20,
            "{backend:?}: an idle backoff shard used {used} ticks in 1 s"
        );
        drop(sub);
        shards.shutdown();
    }
}
