//! Loopback multicast end to end, in messages delivered per second.
//!
//! One group per message size (`loopback_32B`, `loopback_256B`, `loopback_1024B`), each
//! with:
//!
//! - `io_uring`, `mmsg`: a [`Publisher`] on this thread packing messages into 1472-byte
//!   MoldUDP64 packets, sent with UDP GSO, to one subscription on one shard (its own thread)
//!   receiving with UDP GRO and counting messages in its handler;
//! - `io_uring_no_gso`: the same without GSO and GRO;
//! - `std_udp_baseline`: one `std::net::UdpSocket::send_to` per message, one datagram per
//!   message, and a receiver thread doing one `recv_from` per message.
//!
//! An iteration is [`batch`] messages (32 packets' worth, one full GSO send); the clock
//! runs from the first offer until the subscriber has counted the last message. The sender
//! never gets more than [`WINDOW_DATAGRAMS`] datagrams ahead of what was delivered, so the
//! receiving socket's buffer cannot overflow; should anything be lost anyway (gap, kernel
//! drop, a stalled count) the bench panics rather than report a figure for messages that
//! never arrived.
//!
//! Group `adaptive_32B` puts a plain `offer` loop (adaptive batching) beside the same loop
//! between `begin_batch` and `end_batch`, 32-byte messages, on io_uring and mmsg.
//!
//! Everything stays on this host: groups 239.255.77.x, sent and joined on 127.0.0.1, each
//! on a port the kernel just handed out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use multipoint_control::socket2::SockRef;
use multipoint_control::Interface;
use multipoint_dataplane::wire::{Session, BLOCK_HEADER_LEN, DEFAULT_MAX_DATAGRAM, HEADER_LEN};
use multipoint_dataplane::{
    BackendChoice, Handler, IdleStrategy, OfferError, Publisher, PublisherConfig, ShardConfig,
    Shards, Subscription, SubscriptionConfig,
};

const SIZES: [usize; 3] = [32, 256, 1024];
/// Packets per iteration: the publisher's `max_batch`, so one batch is one full GSO send.
const BATCH_PACKETS: u64 = 32;
/// Most datagrams sent and not yet delivered. 512 full datagrams are about 0.75 MB of
/// payload (under 2 MB of kernel memory), far below the receive buffer (8 MB asked for,
/// `net.core.rmem_max` is 4 MiB here, which the kernel doubles).
const WINDOW_DATAGRAMS: u64 = 512;
/// How the shard idles. Blocking is the like-for-like comparison with the baseline's
/// blocking `recv_from`, and on this 2-core machine (shared) it measured steadier and no
/// slower than `Yield`, whose polling competes with the publisher for a core.
const IDLE: IdleStrategy = IdleStrategy::Block;
/// No delivery progress for this long means messages were lost.
const STALL: Duration = Duration::from_secs(3);
const RECV_BUFFER: usize = 8 << 20;

/// Messages of `size` bytes in one full 1472-byte packet.
fn per_packet(size: usize) -> u64 {
    ((DEFAULT_MAX_DATAGRAM - HEADER_LEN) / (BLOCK_HEADER_LEN + size)) as u64
}

/// Messages per iteration.
fn batch(size: usize) -> u64 {
    BATCH_PACKETS * per_packet(size)
}

/// A group on a port nobody uses: the kernel picks one for a throwaway socket.
fn group(n: u8) -> SocketAddrV4 {
    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .unwrap()
        .port();
    SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, n), port)
}

/// Follows the receiver's count, and panics when it stops moving.
struct Progress {
    last: u64,
    since: Instant,
}

impl Progress {
    fn new(received: u64) -> Progress {
        Progress {
            last: received,
            since: Instant::now(),
        }
    }

    fn check(&mut self, received: u64, what: impl FnOnce() -> String) {
        if received != self.last {
            self.last = received;
            self.since = Instant::now();
        } else if self.since.elapsed() > STALL {
            panic!(
                "nothing delivered for {STALL:?}: messages were lost ({})",
                what()
            );
        }
    }
}

/// Counts messages; the bench thread reads the count.
struct Count(Arc<AtomicU64>);

impl Handler for Count {
    fn on_message(&mut self, _sequence: u64, _message: &[u8]) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Publisher, shard and subscription, set up once per benchmark function.
struct Ours {
    // Dropped in this order: the publisher ends its session, then the shards stop.
    publisher: Publisher,
    sub: Subscription<Count>,
    shards: Shards,
    received: Arc<AtomicU64>,
    published: u64,
    msg: Vec<u8>,
    batch: u64,
    window: u64,
    /// Whether each iteration's messages go between `begin_batch` and `end_batch`, or in
    /// a plain `offer` loop (adaptive batching).
    batched: bool,
}

impl Ours {
    fn new(
        size: usize,
        group: SocketAddr,
        backend: BackendChoice,
        gso: bool,
    ) -> multipoint_dataplane::Result<Ours> {
        let session = Session::new("BENCH").unwrap();
        let mut shards = Shards::start(ShardConfig {
            backend,
            idle: IDLE,
            // Unpinned, like the baseline's receiver thread.
            pin: false,
            gro: gso,
            ..ShardConfig::default()
        })?;
        let received = Arc::new(AtomicU64::new(0));
        let sub = shards.subscribe(
            SubscriptionConfig {
                interface: Interface::LOOPBACK_V4,
                session: Some(session),
                recv_buffer: RECV_BUFFER,
                ..SubscriptionConfig::new(group)
            },
            Count(Arc::clone(&received)),
        )?;
        let publisher = Publisher::new(PublisherConfig {
            interface: Interface::LOOPBACK_V4,
            backend,
            gso,
            max_batch: BATCH_PACKETS as usize,
            ..PublisherConfig::new(session, group)
        })?;
        Ok(Ours {
            publisher,
            sub,
            shards,
            received,
            published: 0,
            msg: (0..size).map(|i| i as u8).collect(),
            batch: batch(size),
            window: WINDOW_DATAGRAMS * per_packet(size),
            batched: true,
        })
    }

    fn describe(&self) -> String {
        format!(
            "published {}, delivered {}, publisher {:?}, subscription {:?}",
            self.published,
            self.received.load(Ordering::Relaxed),
            self.publisher.stats(),
            self.sub.stats()
        )
    }

    /// Publishes `n` messages and returns how long it took until all were delivered.
    fn run(&mut self, n: u64) -> Duration {
        let start = Instant::now();
        let target = self.published + n;
        let mut progress = Progress::new(self.received.load(Ordering::Relaxed));
        while self.published < target {
            let want = self.batch.min(target - self.published);
            // Pacing: room in the window for the whole batch.
            loop {
                let received = self.received.load(Ordering::Relaxed);
                if self.published + want - received <= self.window {
                    break;
                }
                self.publisher.poll();
                self.wait_step(&mut progress, received);
            }
            if self.batched {
                self.publisher.begin_batch();
            }
            let mut offered = 0;
            while offered < want {
                match self.publisher.offer(&self.msg) {
                    Ok(_) => offered += 1,
                    Err(OfferError::Backpressure) => {
                        self.publisher.poll();
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("offer: {e}"),
                }
            }
            if self.batched {
                self.publisher.end_batch();
            }
            self.published += offered;
        }
        self.publisher.flush();
        loop {
            let received = self.received.load(Ordering::Relaxed);
            if received >= target {
                break;
            }
            self.publisher.poll();
            self.wait_step(&mut progress, received);
        }
        let elapsed = start.elapsed();
        self.check(target);
        elapsed
    }

    /// One turn of a wait for the subscriber: panics as soon as a loss shows.
    fn wait_step(&self, progress: &mut Progress, received: u64) {
        if self.lost() {
            panic!("messages were lost: {}", self.describe());
        }
        progress.check(received, || self.describe());
        std::thread::yield_now();
    }

    /// Whether anything was lost or mangled on the way.
    fn lost(&self) -> bool {
        let s = self.sub.stats();
        s.gaps != 0
            || s.missing != 0
            || s.kernel_drops != 0
            || s.truncated != 0
            || s.malformed != 0
            || s.receive_errors != 0
            || self.publisher.stats().send_errors != 0
    }

    /// Panics unless exactly `target` messages arrived, none lost on the way.
    fn check(&self, target: u64) {
        if self.received.load(Ordering::Relaxed) != target || self.lost() {
            panic!(
                "loss or corruption: expected {target} messages; {}",
                self.describe()
            );
        }
    }
}

impl Ours {
    /// Prints what the publisher and the subscription counted, under `name`.
    fn report(&self, name: &str) {
        let p = self.publisher.stats();
        let s = self.sub.stats();
        eprintln!(
            "  {name}: backend {}/{}; {} messages, {} packets in {} sends ({} GSO), {} \
             backpressure; {} datagrams received ({} GRO batches), {} re-arms",
            self.publisher.backend(),
            self.shards.backend().kind,
            p.messages,
            p.packets,
            p.sends,
            p.gso_sends,
            p.backpressure,
            s.datagrams,
            s.gro_batches,
            s.rearms
        );
    }
}

/// The baseline: std sockets, one datagram and one system call per message each way.
struct Baseline {
    tx: UdpSocket,
    group: SocketAddrV4,
    received: Arc<AtomicU64>,
    disorder: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    published: u64,
    msg: Vec<u8>,
}

impl Baseline {
    fn new(size: usize, group: SocketAddrV4) -> std::io::Result<Baseline> {
        let rx = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, group.port()))?;
        SockRef::from(&rx).set_recv_buffer_size(RECV_BUFFER)?;
        rx.join_multicast_v4(group.ip(), &Ipv4Addr::LOCALHOST)?;
        rx.set_read_timeout(Some(Duration::from_millis(50)))?;

        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let sock = SockRef::from(&tx);
        sock.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
        sock.set_multicast_loop_v4(true)?;
        sock.set_multicast_ttl_v4(1)?;
        // As deep as the publisher's (capped by net.core.wmem_max).
        sock.set_send_buffer_size(4 << 20)?;

        let received = Arc::new(AtomicU64::new(0));
        let disorder = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("baseline-rx".into())
            .spawn({
                let (received, disorder, stop) = (
                    Arc::clone(&received),
                    Arc::clone(&disorder),
                    Arc::clone(&stop),
                );
                move || {
                    let mut buf = vec![0u8; 65_536];
                    let mut expected = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        match rx.recv_from(&mut buf) {
                            Ok((len, _)) => {
                                let seq = buf[..8].try_into().map_or(0, u64::from_be_bytes);
                                if len != size || seq != expected {
                                    disorder.fetch_add(1, Ordering::Relaxed);
                                }
                                expected = seq + 1;
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock | ErrorKind::TimedOut
                                ) => {}
                            Err(e) => panic!("baseline recv_from: {e}"),
                        }
                    }
                }
            })?;
        Ok(Baseline {
            tx,
            group,
            received,
            disorder,
            stop,
            thread: Some(thread),
            published: 0,
            msg: (0..size).map(|i| i as u8).collect(),
        })
    }

    fn describe(&self) -> String {
        format!(
            "baseline: sent {}, delivered {}, out of order or wrong length {}",
            self.published,
            self.received.load(Ordering::Relaxed),
            self.disorder.load(Ordering::Relaxed)
        )
    }

    /// One turn of a wait for the receiver: panics as soon as a loss shows.
    fn wait_step(&self, progress: &mut Progress, received: u64) {
        if self.disorder.load(Ordering::Relaxed) != 0 {
            panic!("datagrams were lost: {}", self.describe());
        }
        progress.check(received, || self.describe());
        std::thread::yield_now();
    }

    /// Sends `n` messages and returns how long it took until all were received.
    fn run(&mut self, n: u64) -> Duration {
        let start = Instant::now();
        let target = self.published + n;
        let mut progress = Progress::new(self.received.load(Ordering::Relaxed));
        while self.published < target {
            loop {
                let received = self.received.load(Ordering::Relaxed);
                if self.published + 1 - received <= WINDOW_DATAGRAMS {
                    break;
                }
                self.wait_step(&mut progress, received);
            }
            self.published += 1;
            self.msg[..8].copy_from_slice(&self.published.to_be_bytes());
            let sent = self.tx.send_to(&self.msg, self.group).unwrap();
            assert_eq!(sent, self.msg.len());
        }
        loop {
            let received = self.received.load(Ordering::Relaxed);
            if received >= target {
                break;
            }
            self.wait_step(&mut progress, received);
        }
        let elapsed = start.elapsed();
        if self.received.load(Ordering::Relaxed) != target
            || self.disorder.load(Ordering::Relaxed) != 0
        {
            panic!("loss or disorder: expected {target}; {}", self.describe());
        }
        elapsed
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn loopback(c: &mut Criterion) {
    let backends = [
        ("io_uring", BackendChoice::Uring, true),
        ("io_uring_no_gso", BackendChoice::Uring, false),
        ("mmsg", BackendChoice::Mmsg, true),
    ];
    let mut next_group = 1u8;
    for size in SIZES {
        let k = batch(size);
        let mut g = c.benchmark_group(format!("loopback_{size}B"));
        g.throughput(Throughput::Elements(k))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(6));
        for (name, backend, gso) in backends {
            let addr = group(next_group);
            next_group += 1;
            let mut ours = match Ours::new(size, addr.into(), backend, gso) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("skipping loopback_{size}B/{name}: {e}");
                    continue;
                }
            };
            g.bench_function(name, |b| b.iter_custom(|iters| ours.run(iters * k)));
            ours.report(name);
        }
        let addr = group(next_group);
        next_group += 1;
        let mut base = Baseline::new(size, addr).unwrap();
        g.bench_function("std_udp_baseline", |b| {
            b.iter_custom(|iters| base.run(iters * k))
        });
        drop(base);
        g.finish();
    }
}

/// Adaptive batching (issue 14), side by side: a plain `offer` loop against the same
/// messages between `begin_batch` and `end_batch`, 32-byte messages, on io_uring and mmsg
/// (GSO and GRO on), each iteration [`batch`] messages as in `loopback_32B`.
fn adaptive(c: &mut Criterion) {
    const SIZE: usize = 32;
    let k = batch(SIZE);
    let mut g = c.benchmark_group("adaptive_32B");
    g.throughput(Throughput::Elements(k))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    let runs = [
        ("io_uring_plain_offer", BackendChoice::Uring, false),
        ("io_uring_begin_end_batch", BackendChoice::Uring, true),
        ("mmsg_plain_offer", BackendChoice::Mmsg, false),
        ("mmsg_begin_end_batch", BackendChoice::Mmsg, true),
    ];
    for (n, (name, backend, batched)) in runs.into_iter().enumerate() {
        let addr = group(200 + n as u8);
        let mut ours = match Ours::new(SIZE, addr.into(), backend, true) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("skipping adaptive_32B/{name}: {e}");
                continue;
            }
        };
        ours.batched = batched;
        g.bench_function(name, |b| b.iter_custom(|iters| ours.run(iters * k)));
        ours.report(name);
    }
    g.finish();
}

criterion_group!(benches, loopback, adaptive);
criterion_main!(benches);
