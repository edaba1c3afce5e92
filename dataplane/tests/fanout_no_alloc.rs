//! After warm-up, the fan-out allocates nothing on the heap: a counting global allocator
//! sees no allocation while a root offers 50,000 messages to 8 leaves over 2 shards and
//! they arrive, on both backends, with GSO on and off. The root runs a re-request server,
//! so that keeping every packet in its store and looking for requests from the send path
//! are measured too.
//!
//! This file is its own test binary with a single test, so that nothing else allocates
//! while the counter is watched. The leaves' reader threads allocate nothing either.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{
    fanout_config, flush_and_wait, leaf_socket, loopback_udp, publish_with, started_or_skip,
    AllocWatch, Stream, BACKENDS,
};
use multipoint_dataplane::core::store::StoreConfig;
use multipoint_dataplane::wire::{Packet, PacketKind};
use multipoint_dataplane::{Fanout, RerequestConfig};
use multipoint_test_support::alloc;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

const LEAVES: usize = 8;
const WARM_UP: u64 = 10_000;
const MEASURED: u64 = 50_000;
const WINDOW: u64 = 2_000;

/// A leaf's reader: counts messages in order, without allocating. `next` is the number
/// the next message must carry; `bad` counts packets out of order or unreadable.
fn read(socket: &UdpSocket, next: &AtomicU64, bad: &AtomicU64, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Acquire) {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        match Packet::new_checked(&buf[..n]) {
            Ok(p) if p.kind() == PacketKind::Data => {
                if p.sequence() != next.load(Ordering::Relaxed) {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
                next.store(p.next_sequence(), Ordering::Release);
            }
            Ok(_) => {}
            Err(_) => {
                bad.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Offers messages `from..=to` of `stream` in batches, never more than [`WINDOW`] ahead of
/// `slowest()` (the next number the slowest leaf expects), then flushes and waits until
/// every leaf has them all.
fn publish(fanout: &mut Fanout, stream: &Stream, from: u64, to: u64, slowest: &dyn Fn() -> u64) {
    publish_with(fanout, from..=to, WINDOW, slowest, |seq, buf| {
        stream.write(seq, buf)
    });
    flush_and_wait(fanout, "every leaf to have everything", || {
        slowest() == to + 1
    });
}

#[test]
fn after_warm_up_the_fan_out_allocates_nothing() {
    let before = alloc::allocations();
    drop(std::hint::black_box(vec![0u8; 64]));
    assert!(alloc::allocations() > before, "the counter counts");

    let mut watch = AllocWatch::new();
    for backend in BACKENDS {
        for gso in [true, false] {
            let test = format!("{backend:?}, gso {gso}");
            let (socket, root) = loopback_udp();
            let config = multipoint_dataplane::FanoutConfig {
                rerequest: Some(RerequestConfig {
                    store: StoreConfig {
                        messages: 100_000,
                        bytes: 16 << 20,
                    },
                    ..RerequestConfig::new("127.0.0.1:0".parse().unwrap())
                }),
                ..fanout_config(backend, gso, 2, "NOALLOC")
            };
            let started = Fanout::start(socket, config);
            let Some(mut fanout) = started_or_skip(&test, "the fan-out", started) else {
                continue;
            };
            let stop = Arc::new(AtomicBool::new(false));
            let mut nexts = Vec::new();
            let mut bads = Vec::new();
            let mut threads = Vec::new();
            let handle = fanout.leaves();
            for _ in 0..LEAVES {
                let leaf = leaf_socket(root);
                handle.add(leaf.local_addr().unwrap()).unwrap();
                let next = Arc::new(AtomicU64::new(1));
                let bad = Arc::new(AtomicU64::new(0));
                let (n, b, s) = (Arc::clone(&next), Arc::clone(&bad), Arc::clone(&stop));
                threads.push(std::thread::spawn(move || read(&leaf, &n, &b, &s)));
                nexts.push(next);
                bads.push(bad);
            }
            let slowest = || {
                nexts
                    .iter()
                    .map(|n| n.load(Ordering::Acquire))
                    .min()
                    .unwrap_or(0)
            };
            let stream = Stream::new();

            publish(&mut fanout, &stream, 1, WARM_UP, &slowest);
            watch.start();
            publish(
                &mut fanout,
                &stream,
                WARM_UP + 1,
                WARM_UP + MEASURED,
                &slowest,
            );
            watch.stop(&test);

            let stored = fanout.store().map(|s| s.stats().next);
            assert_eq!(
                stored,
                Some(WARM_UP + MEASURED + 1),
                "{test}: every packet stored"
            );
            let stats = fanout.close();
            stop.store(true, Ordering::Release);
            for t in threads {
                t.join().unwrap();
            }
            let bad: u64 = bads.iter().map(|b| b.load(Ordering::Relaxed)).sum();
            assert_eq!(bad, 0, "{test}: packets out of order or unreadable");
            assert_eq!(stats.send_errors, 0, "{test}: {stats:?}");
        }
    }
    watch.assert_nothing_allocated(&format!(
        "{MEASURED} messages fanned out to {LEAVES} leaves"
    ));
}
