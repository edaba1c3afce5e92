//! Unicast fan-out to N leaves on loopback, in deliveries (packets received by leaves)
//! per second.
//!
//! One group per leaf count (`fanout_1_leaves`, `fanout_16_leaves`, `fanout_256_leaves`,
//! `fanout_1024_leaves`), each with:
//!
//! - `fanout_io_uring`: a [`Fanout`] with one shard (pinned to the first core) on
//!   io_uring with GSO, offered 64-byte messages on this thread, packed into 1472-byte
//!   packets, each packet written once and sent to every leaf;
//! - `std_send_to_baseline`: each packet built once, then one `UdpSocket::send_to` per
//!   leaf, on this thread, from the same root socket.
//!
//! The leaves are the `multipoint fanout` tool's ([`Rig`]): sockets on 127.0.0.1
//! connected to the root, drained by one receiver thread (pinned to the last core) with
//! epoll and `recvmmsg`. An iteration is one packet to every leaf (`Throughput` counts N
//! deliveries); the clock runs from the first message offered until the leaves have
//! received the last delivery. Both never run more than [`WINDOW_PER_LEAF`] packets per
//! leaf ahead of what the leaves received; should a delivery be lost anyway, the bench
//! panics rather than report a figure for packets that never arrived.
//!
//! One shard because on this two-core machine the leaves' receiving needs the other
//! core: the tool measures other shapes (`multipoint fanout --shards 2`, `--leaf-gro on`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use multipoint_bench::fanout::{drive_fanout, round_of, Baseline, Rig, Until, WINDOW_PER_LEAF};
use multipoint_dataplane::wire::{Session, BLOCK_HEADER_LEN, DEFAULT_MAX_DATAGRAM, HEADER_LEN};
use multipoint_dataplane::{BackendChoice, Fanout, FanoutConfig};

const LEAVES: [usize; 4] = [1, 16, 256, 1024];
const SIZE: usize = 64;
/// The tool's default receive buffer per leaf.
const RCVBUF: usize = 4 << 20;
/// No delivery progress for this long means packets were lost.
const STALL: Duration = Duration::from_secs(3);

/// Messages of `SIZE` bytes in one full packet.
fn per_packet() -> u64 {
    ((DEFAULT_MAX_DATAGRAM - HEADER_LEN) / (BLOCK_HEADER_LEN + SIZE)) as u64
}

/// Waits until the leaves have `target` datagrams; panics if they stop getting closer.
fn wait_for(rig: &Rig, target: u64, what: &str) {
    let mut last = rig.received();
    let mut since = Instant::now();
    while last < target {
        std::thread::sleep(Duration::from_micros(50));
        let now = rig.received();
        if now != last {
            last = now;
            since = Instant::now();
        } else {
            assert!(
                since.elapsed() < STALL,
                "{what}: deliveries lost: {} of {target} arrived",
                last
            );
        }
    }
}

struct Fan {
    fanout: Fanout,
    window: u64,
    leaves: u64,
}

impl Fan {
    fn new(rig: &Rig) -> Result<Fan, multipoint_dataplane::Error> {
        let config = FanoutConfig {
            shards: 1,
            backend: BackendChoice::Uring,
            gso: true,
            heartbeat: Duration::from_secs(3600),
            max_leaves_per_shard: rig.leaves().len(),
            ..FanoutConfig::new(Session::new("BENCH").unwrap())
        };
        let fanout = Fanout::start(rig.root().unwrap(), config)?;
        let handle = fanout.leaves();
        for &leaf in rig.leaves() {
            handle.add(leaf)?;
        }
        let leaves = rig.leaves().len() as u64;
        Ok(Fan {
            fanout,
            window: WINDOW_PER_LEAF * leaves,
            leaves,
        })
    }

    /// Sends `packets` full packets to every leaf; returns the time until all arrived.
    fn run(&mut self, rig: &Rig, packets: u64) -> Duration {
        let start = rig.received();
        let started = Instant::now();
        let until = Until {
            secs: None,
            count: Some(packets * per_packet()),
        };
        drive_fanout(&mut self.fanout, rig, self.window, SIZE, until, |_| {}).unwrap();
        wait_for(rig, start + packets * self.leaves, "fan-out");
        started.elapsed()
    }
}

fn base_run(base: &mut Baseline, rig: &Rig, packets: u64) -> Duration {
    let leaves = rig.leaves().len() as u64;
    let window = WINDOW_PER_LEAF * leaves;
    let start = rig.received();
    let started = Instant::now();
    let mut sent = 0;
    for _ in 0..packets {
        if sent > rig.received() - start + window {
            wait_for(rig, start + sent - window, "baseline");
        }
        let (ok, failed) = base.send_packet();
        assert_eq!(failed, 0, "baseline: send_to failed");
        sent += ok;
    }
    wait_for(rig, start + sent, "baseline");
    started.elapsed()
}

fn fanout(c: &mut Criterion) {
    // The tool's rounds and this bench's iterations agree on what a packet holds.
    assert_eq!(round_of(DEFAULT_MAX_DATAGRAM, SIZE) % per_packet(), 0);
    for n in LEAVES {
        let rig = Rig::new(n, 1, RCVBUF, false, true).unwrap();
        let mut g = c.benchmark_group(format!("fanout_{n}_leaves"));
        g.throughput(Throughput::Elements(n as u64))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        match Fan::new(&rig) {
            Ok(mut fan) => {
                g.bench_function("fanout_io_uring", |b| {
                    b.iter_custom(|iters| fan.run(&rig, iters))
                });
                let s = fan.fanout.close();
                eprintln!(
                    "  fanout_io_uring: {} packets, {} deliveries in {} sends ({} GSO), \
                     {} backpressure, {} send errors",
                    s.packets, s.deliveries, s.send_ops, s.gso_ops, s.backpressure, s.send_errors
                );
                // Let its end of session arrive before the baseline counts.
                let _ = rig.settle(rig.received() + n as u64);
            }
            Err(e) => eprintln!("skipping fanout_{n}_leaves/fanout_io_uring: {e}"),
        }
        let mut base = Baseline::new(&rig, SIZE, DEFAULT_MAX_DATAGRAM).unwrap();
        g.bench_function("std_send_to_baseline", |b| {
            b.iter_custom(|iters| base_run(&mut base, &rig, iters))
        });
        g.finish();
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
