//! The unicast fan-out on loopback: leaves are plain `std::net::UdpSocket`s connected to
//! the root's data socket, each read on a helper thread that parses every datagram with
//! the wire module and checks every message (number, bytes, running checksum).
//!
//! Covered: every leaf of many (over two shards) gets every message, whole and in order,
//! on both backends with GSO on and off; a leaf added mid-stream gets whole packets from
//! some sequence number on, with nothing missing after it; a removed leaf gets nothing
//! offered after `remove` returned; heartbeats and the end of session reach every leaf;
//! backpressure hands the message back and nothing is lost; bad leaves and settings are
//! refused with a clear error. The same behaviour on a simulated network (the tests
//! with `sim` in their names), where the leaves are sockets of that network.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    fanout_config, leaf_socket, loopback_udp, offer, publish_with, started_or_skip, wait_until,
    Checksum, Net, Stream, BACKENDS, MAX_LEN, STALL,
};
use multipoint_dataplane::io::sim::{SimNet, SimSocket};
use multipoint_dataplane::wire::{Packet, PacketKind, Session};
use multipoint_dataplane::{
    BackendChoice, DataSocket, Error, Fanout, FanoutConfig, FanoutLeafId, FanoutLeaves, OfferError,
};
use socket2::{Domain, Socket, Type};

const SESSION: &str = "FANOUT";

/// Most messages the root may be ahead of its slowest leaf (well within a leaf's
/// receive buffer).
const WINDOW: u64 = 2_000;

/// The root's data socket: UDP, bound to a free loopback port (of the simulated network
/// on `sim`).
fn root_socket(net: &Net) -> (DataSocket, SocketAddr) {
    match net {
        Net::Host(_) => {
            let (socket, addr) = loopback_udp();
            (socket.into(), addr)
        }
        Net::Sim(net) => {
            let socket = net
                .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .unwrap();
            let addr = socket.local_addr();
            (socket.into(), addr)
        }
    }
}

/// The networks the tests run on: the host's on each backend, then a simulated one.
fn host_nets() -> impl Iterator<Item = Net> {
    BACKENDS.into_iter().map(Net::Host)
}

/// Starts a fan-out on a root socket of `net` with `config`; returns it and the root's
/// address, or `None` (printing why) when io_uring was asked for and cannot run here.
/// Under CI (`CI` set) a missing io_uring fails the test instead.
fn start_or_skip(test: &str, net: &Net, config: FanoutConfig) -> Option<(Fanout, SocketAddr)> {
    let (socket, root) = root_socket(net);
    let fanout = started_or_skip(test, "the fan-out", Fanout::start(socket, config))?;
    Some((fanout, root))
}

fn config(net: &Net, gso: bool, shards: usize) -> FanoutConfig {
    let backend = match net {
        Net::Host(backend) => *backend,
        Net::Sim(_) => BackendChoice::Auto,
    };
    fanout_config(backend, gso, shards, SESSION)
}

/// What the messages look like: the shared mixed-size stream, or messages of one size
/// (so that every full packet has the same length and runs leave as GSO sends).
#[derive(Clone)]
enum Messages {
    Mixed(Stream),
    Fixed(usize),
}

impl Messages {
    fn write(&self, seq: u64, out: &mut [u8; MAX_LEN]) -> usize {
        match self {
            Messages::Mixed(stream) => stream.write(seq, out),
            Messages::Fixed(len) => {
                for (i, b) in out[..*len].iter_mut().enumerate() {
                    *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
                }
                let k = (*len).min(8);
                out[..k].copy_from_slice(&seq.to_le_bytes()[..k]);
                *len
            }
        }
    }

    fn matches(&self, seq: u64, msg: &[u8]) -> bool {
        match self {
            Messages::Mixed(stream) => stream.matches(seq, msg),
            Messages::Fixed(_) => {
                let mut want = [0u8; MAX_LEN];
                let len = self.write(seq, &mut want);
                msg == &want[..len]
            }
        }
    }
}

/// What one leaf saw.
#[derive(Debug, Default)]
struct LeafReport {
    /// Sequence number of the first message received.
    first: Option<u64>,
    /// The number the next message must carry.
    next: u64,
    messages: u64,
    checksum: Checksum,
    heartbeats: u64,
    /// The next sequence number the end of session announced.
    end: Option<u64>,
    /// Datagrams after the end of session.
    after_end: u64,
    /// What went wrong (the first few).
    problems: Vec<String>,
}

impl LeafReport {
    fn problem(&mut self, what: String) {
        if self.problems.len() < 5 {
            self.problems.push(what);
        }
    }

    /// Exactly messages `1..=count`, with `checksum`, then the end of session.
    fn assert_complete(&self, who: &str, count: u64, checksum: Checksum) {
        assert!(self.problems.is_empty(), "{who}: {:?}", self.problems);
        assert_eq!(self.first.unwrap_or(1), 1, "{who}: first message");
        assert_eq!(self.messages, count, "{who}: messages");
        assert_eq!(self.checksum, checksum, "{who}: checksum");
        assert_eq!(self.end, Some(count + 1), "{who}: end of session");
        assert_eq!(
            self.after_end, 0,
            "{who}: datagrams after the end of session"
        );
    }
}

/// A leaf's socket: a kernel UDP socket, or one of a simulated network.
enum LeafSocket {
    Udp(UdpSocket),
    Sim(SimSocket),
}

impl LeafSocket {
    /// Waits up to 20 ms for a datagram; `WouldBlock` when none came.
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            LeafSocket::Udp(socket) => socket.recv(buf),
            LeafSocket::Sim(socket) => socket
                .recv_timeout(buf, Duration::from_millis(20))
                .map(|d| d.len)
                .ok_or_else(|| std::io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// A leaf: a UDP socket connected to the root, read on its own thread.
struct Leaf {
    addr: SocketAddr,
    /// The next sequence number it expects (what it has so far, plus one).
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<LeafReport>,
}

impl Leaf {
    /// Reads until the end of session (and a little after, to catch strays) or `stop`.
    fn spawn(net: &Net, root: SocketAddr, messages: &Messages) -> Leaf {
        let (socket, addr) = match net {
            Net::Host(_) => {
                let socket = leaf_socket(root);
                let addr = socket.local_addr().unwrap();
                (LeafSocket::Udp(socket), addr)
            }
            Net::Sim(net) => {
                let socket = net
                    .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                    .unwrap();
                socket.connect(root);
                let addr = socket.local_addr();
                (LeafSocket::Sim(socket), addr)
            }
        };
        let next = Arc::new(AtomicU64::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (next, stop, messages) = (Arc::clone(&next), Arc::clone(&stop), messages.clone());
            std::thread::spawn(move || read_leaf(&socket, &messages, &next, &stop))
        };
        Leaf {
            addr,
            next,
            stop,
            thread,
        }
    }

    fn finish(self) -> LeafReport {
        self.thread.join().unwrap()
    }
}

fn read_leaf(
    socket: &LeafSocket,
    messages: &Messages,
    progress: &AtomicU64,
    stop: &AtomicBool,
) -> LeafReport {
    let session = Session::new(SESSION).unwrap();
    let mut report = LeafReport {
        next: 1,
        ..LeafReport::default()
    };
    let mut buf = vec![0u8; 65_536];
    let mut ended_at: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Acquire) {
            break;
        }
        if ended_at.is_some_and(|t| t.elapsed() > Duration::from_millis(100)) {
            break;
        }
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                report.problem(format!("receive failed: {e}"));
                break;
            }
        };
        if report.end.is_some() {
            report.after_end += 1;
            continue;
        }
        let packet = match Packet::new_checked(&buf[..n]) {
            Ok(p) => p,
            Err(e) => {
                report.problem(format!("a {n}-byte datagram is not MoldUDP64: {e}"));
                continue;
            }
        };
        if packet.session() != session {
            report.problem(format!("session {}", packet.session()));
            continue;
        }
        match packet.kind() {
            PacketKind::Heartbeat => report.heartbeats += 1,
            PacketKind::EndOfSession => {
                report.end = Some(packet.sequence());
                ended_at = Some(Instant::now());
            }
            PacketKind::Data => {
                let first = packet.sequence();
                if report.first.is_none() {
                    report.first = Some(first);
                    report.next = first;
                }
                if first != report.next {
                    report.problem(format!("packet at {first}, expected {}", report.next));
                }
                for (i, msg) in packet.messages().enumerate() {
                    let seq = first + i as u64;
                    if !messages.matches(seq, msg) {
                        report.problem(format!("message {seq} corrupt"));
                    }
                    report.checksum.add(seq, msg);
                    report.messages += 1;
                }
                report.next = packet.next_sequence();
                progress.store(report.next, Ordering::Release);
            }
        }
    }
    report
}

/// Spawns `count` leaves of `root` on `net`, each checking `messages`.
fn spawn_leaves(count: usize, net: &Net, root: SocketAddr, messages: &Messages) -> Vec<Leaf> {
    (0..count)
        .map(|_| Leaf::spawn(net, root, messages))
        .collect()
}

/// Adds `leaves` to the fan-out of `handle`; returns their ids.
fn add_all(handle: &FanoutLeaves, leaves: &[Leaf]) -> Vec<FanoutLeafId> {
    leaves.iter().map(|l| handle.add(l.addr).unwrap()).collect()
}

/// Offers messages `seqs` one by one (no batches, no pacing, no flush), adding them to
/// `checksum`.
fn offer_each(
    fanout: &mut Fanout,
    messages: &Messages,
    seqs: RangeInclusive<u64>,
    checksum: &mut Checksum,
) {
    let mut buf = [0u8; MAX_LEN];
    for seq in seqs {
        let len = messages.write(seq, &mut buf);
        assert_eq!(offer(fanout, &buf[..len]), seq);
        checksum.add(seq, &buf[..len]);
    }
}

/// Offers messages `from..=to` in batches, never more than [`WINDOW`] ahead of the
/// slowest of `leaves`, adding them to `checksum`. Flushes at the end.
fn publish(
    fanout: &mut Fanout,
    messages: &Messages,
    from: u64,
    to: u64,
    leaves: &[&Leaf],
    checksum: &mut Checksum,
) {
    let slowest = || {
        leaves
            .iter()
            .map(|l| l.next.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    };
    publish_with(fanout, from..=to, WINDOW, slowest, |seq, buf| {
        let len = messages.write(seq, buf);
        checksum.add(seq, &buf[..len]);
        len
    });
    fanout.flush();
}

/// Every leaf of 64, over two shards, gets every message whole and in order: with the
/// mixed stream and with fixed-size messages, with GSO on and off. Returns how many of the
/// four runs could run here.
fn every_leaf_gets_every_message(net: &Net) -> usize {
    const LEAVES: usize = 64;
    const COUNT: u64 = 6_000;
    let mut runs = 0;
    for gso in [true, false] {
        for messages in [Messages::Mixed(Stream::new()), Messages::Fixed(100)] {
            let fixed = matches!(messages, Messages::Fixed(_));
            let test = format!("{net:?}, gso {gso}, fixed-size {fixed}");
            let Some((mut fanout, root)) = start_or_skip(&test, net, config(net, gso, 2)) else {
                continue;
            };
            let leaves = spawn_leaves(LEAVES, net, root, &messages);
            let handle = fanout.leaves();
            let ids = add_all(&handle, &leaves);
            assert_eq!(handle.len(), LEAVES);
            let shards: Vec<usize> = ids
                .iter()
                .map(|&id| handle.stats(id).unwrap().shard)
                .collect();
            assert_eq!(
                shards.iter().filter(|&&s| s == 0).count(),
                LEAVES / 2,
                "{test}: leaves go to the shard with fewest"
            );

            let mut sum = Checksum::default();
            let refs: Vec<&Leaf> = leaves.iter().collect();
            publish(&mut fanout, &messages, 1, COUNT, &refs, &mut sum);
            let stats = fanout.close();
            assert_eq!(stats.messages, COUNT, "{test}: {stats:?}");
            assert_eq!(stats.send_errors, 0, "{test}: {stats:?}");
            assert_eq!(stats.unrouted, 0, "{test}: {stats:?}");
            assert_eq!(
                stats.deliveries,
                stats.packets * LEAVES as u64,
                "{test}: every packet to every leaf: {stats:?}"
            );
            assert_eq!(stats.buffers_in_use, 0, "{test}: {stats:?}");
            if gso && fixed {
                assert!(stats.gso_ops > 0, "{test}: no GSO send: {stats:?}");
            }
            if !gso {
                assert_eq!(stats.gso_ops, 0, "{test}: {stats:?}");
                assert_eq!(stats.send_ops, stats.deliveries, "{test}: {stats:?}");
            }
            assert_complete(&test, leaves, COUNT, sum);
            assert!(
                matches!(handle.add(root), Err(Error::FanoutClosed)),
                "{test}: a closed fan-out takes no leaf"
            );
            runs += 1;
        }
    }
    runs
}

/// Asserts that each of `leaves` got exactly messages `1..=count`, with `checksum`, then
/// the end of session.
fn assert_complete(test: &str, leaves: Vec<Leaf>, count: u64, checksum: Checksum) {
    for (i, leaf) in leaves.into_iter().enumerate() {
        leaf.finish()
            .assert_complete(&format!("{test}, leaf {i}"), count, checksum);
    }
}

#[test]
fn every_leaf_gets_every_message_in_order_on_both_backends_with_and_without_gso() {
    let runs: usize = host_nets()
        .map(|net| every_leaf_gets_every_message(&net))
        .sum();
    assert!(runs > 0, "no backend could run here");
}

#[test]
fn every_leaf_gets_every_message_in_order_on_sim_with_and_without_gso() {
    let runs = every_leaf_gets_every_message(&Net::Sim(SimNet::new(201)));
    assert_eq!(runs, 4);
}

/// A leaf added mid-stream gets whole packets from some sequence number on, with nothing
/// missing after it.
fn a_leaf_added_mid_stream(net: &Net) {
    let test = format!("{net:?}");
    let Some((mut fanout, root)) = start_or_skip(&test, net, config(net, true, 2)) else {
        return;
    };
    let messages = Messages::Mixed(Stream::new());
    let handle = fanout.leaves();
    let early = spawn_leaves(3, net, root, &messages);
    add_all(&handle, &early);
    let mut sum = Checksum::default();
    let refs: Vec<&Leaf> = early.iter().collect();
    // Leave the last packet open: the late leaf may get it, but nothing before.
    publish(&mut fanout, &messages, 1, 4_000, &refs, &mut sum);
    offer_each(&mut fanout, &messages, 4_001..=4_010, &mut sum);

    let late = Leaf::spawn(net, root, &messages);
    handle.add(late.addr).unwrap();
    let joined_at = fanout.next_sequence();
    let mut refs = refs;
    refs.push(&late);
    publish(&mut fanout, &messages, joined_at, 8_000, &refs, &mut sum);
    let stats = fanout.close();
    assert_eq!(stats.send_errors, 0, "{test}: {stats:?}");

    let report = late.finish();
    assert!(report.problems.is_empty(), "{test}: {:?}", report.problems);
    let first = report.first.expect("the late leaf got messages");
    assert!(
        first > 1 && first <= joined_at,
        "{test}: the late leaf's first message is {first}, joined at {joined_at}"
    );
    assert_eq!(
        report.messages,
        8_000 - first + 1,
        "{test}: everything from {first} on"
    );
    assert_eq!(report.end, Some(8_001), "{test}");
    assert_complete(&test, early, 8_000, sum);
}

/// A removed leaf gets nothing offered after `remove` returned; the others everything.
fn a_removed_leaf_gets_nothing_new(net: &Net) {
    let test = format!("{net:?}");
    let Some((mut fanout, root)) = start_or_skip(&test, net, config(net, true, 2)) else {
        return;
    };
    let messages = Messages::Fixed(200);
    let handle = fanout.leaves();
    let stay = spawn_leaves(3, net, root, &messages);
    let leaving = Leaf::spawn(net, root, &messages);
    add_all(&handle, &stay);
    let id = handle.add(leaving.addr).unwrap();
    let mut sum = Checksum::default();
    let mut refs: Vec<&Leaf> = stay.iter().collect();
    refs.push(&leaving);
    publish(&mut fanout, &messages, 1, 3_000, &refs, &mut sum);
    wait_until("the leaving leaf to have 1..=3000", STALL, || {
        leaving.next.load(Ordering::Acquire) > 3_000
    });
    // Packets in flight during the removal, too.
    fanout.begin_batch();
    offer_each(&mut fanout, &messages, 3_001..=3_500, &mut sum);
    fanout.end_batch();
    handle.remove(id).unwrap();
    let removed_at = fanout.next_sequence();
    assert_eq!(handle.len(), 3);
    assert!(handle.stats(id).is_none());
    assert!(matches!(handle.remove(id), Err(Error::NoSuchLeaf(_))));

    refs.pop();
    publish(&mut fanout, &messages, removed_at, 6_000, &refs, &mut sum);
    let stats = fanout.close();
    assert_eq!(stats.send_errors, 0, "{test}: {stats:?}");
    assert_complete(&test, stay, 6_000, sum);
    // The stayers have their end of session; anything still due to the removed leaf
    // would have come by now. Stop it.
    std::thread::sleep(Duration::from_millis(100));
    leaving.stop.store(true, Ordering::Release);
    let report = leaving.finish();
    assert!(report.problems.is_empty(), "{test}: {:?}", report.problems);
    assert_eq!(report.first, Some(1), "{test}");
    assert!(
        report.next <= removed_at,
        "{test}: the removed leaf got messages up to {} but was removed at {removed_at}",
        report.next - 1
    );
    assert!(report.next > 3_000, "{test}: it had everything before");
    assert_eq!(report.end, None, "{test}: no end of session after removal");
}

/// Heartbeats and the end of session reach every one of 16 leaves.
fn heartbeats_and_the_end_reach_every_leaf(net: &Net) {
    let test = format!("{net:?}");
    let mut cfg = config(net, true, 2);
    cfg.heartbeat = Duration::from_millis(10);
    let Some((mut fanout, root)) = start_or_skip(&test, net, cfg) else {
        return;
    };
    let messages = Messages::Fixed(8);
    let handle = fanout.leaves();
    let leaves = spawn_leaves(16, net, root, &messages);
    add_all(&handle, &leaves);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(200) {
        fanout.poll();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(fanout.next_sequence(), 1);
    let stats = fanout.close();
    assert!(stats.heartbeats > 0, "{test}: {stats:?}");
    for (i, leaf) in leaves.into_iter().enumerate() {
        let report = leaf.finish();
        assert!(report.problems.is_empty(), "{test}: {:?}", report.problems);
        assert_eq!(report.messages, 0);
        assert!(report.heartbeats > 0, "{test}, leaf {i}: no heartbeat");
        assert_eq!(report.end, Some(1), "{test}, leaf {i}: end of session");
    }
}

/// For each `body` (a `fn(&Net)`), two tests: `host` runs it on the host's network on
/// each backend, `sim` on a simulated network seeded with `seed`.
macro_rules! on_host_and_sim {
    ($($body:ident: $host:ident, $sim:ident, seed $seed:expr;)*) => {$(
        #[test]
        fn $host() {
            host_nets().for_each(|net| $body(&net));
        }

        #[test]
        fn $sim() {
            $body(&Net::Sim(SimNet::new($seed)));
        }
    )*};
}

on_host_and_sim! {
    a_leaf_added_mid_stream:
        a_leaf_added_mid_stream_gets_whole_packets_from_then_on,
        a_leaf_added_mid_stream_gets_whole_packets_from_then_on_sim,
        seed 202;
    a_removed_leaf_gets_nothing_new:
        a_removed_leaf_gets_nothing_offered_after_remove_returned,
        a_removed_leaf_gets_nothing_offered_after_remove_returned_on_sim,
        seed 203;
    heartbeats_and_the_end_reach_every_leaf:
        heartbeats_and_the_end_of_session_reach_every_leaf,
        heartbeats_and_the_end_of_session_reach_every_leaf_on_sim,
        seed 204;
}

#[test]
fn backpressure_hands_the_message_back_and_nothing_is_lost() {
    for net in host_nets() {
        let test = format!("{net:?}");
        let mut cfg = config(&net, true, 2);
        cfg.buffers = 2;
        // One 1000-byte message fills a packet.
        cfg.max_datagram = 1022;
        let Some((mut fanout, root)) = start_or_skip(&test, &net, cfg) else {
            continue;
        };
        let messages = Messages::Fixed(fanout.max_message());
        let handle = fanout.leaves();
        let leaves = spawn_leaves(32, &net, root, &messages);
        add_all(&handle, &leaves);
        // Offer one-packet messages as fast as possible: two buffers, each going to 32
        // leaves, run out long before 100,000 messages.
        let mut buf = [0u8; MAX_LEN];
        let mut sum = Checksum::default();
        let mut seq = 1;
        let refused = loop {
            assert!(seq < 100_000, "{test}: never refused");
            let len = messages.write(seq, &mut buf);
            match fanout.offer(&buf[..len]) {
                Ok(got) => {
                    assert_eq!(got, seq);
                    sum.add(seq, &buf[..len]);
                    seq += 1;
                }
                Err(OfferError::Backpressure) => break seq,
                Err(e) => panic!("{test}: {e}"),
            }
        };
        assert_eq!(
            fanout.next_sequence(),
            refused,
            "{test}: the refused message was not numbered"
        );
        assert!(fanout.stats().backpressure >= 1, "{test}");
        let refs: Vec<&Leaf> = leaves.iter().collect();
        publish(&mut fanout, &messages, refused, 3_000, &refs, &mut sum);
        let stats = fanout.close();
        assert_eq!(stats.send_errors, 0, "{test}: {stats:?}");
        assert_complete(&test, leaves, 3_000, sum);
    }
}

#[test]
fn bad_leaves_and_settings_are_refused_with_a_reason() {
    let mmsg = Net::Host(BackendChoice::Mmsg);
    let (socket, _) = root_socket(&mmsg);
    let mut cfg = config(&mmsg, true, 1);
    cfg.max_leaves_per_shard = 2;
    let fanout = Fanout::start(socket, cfg).unwrap();
    let handle = fanout.leaves();
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    let e = handle.add(v6).unwrap_err();
    assert!(matches!(e, Error::LeafAddress { .. }), "{e}");
    assert!(e.to_string().contains("IPv4"), "{e}");
    handle.add("127.0.0.1:9".parse().unwrap()).unwrap();
    handle.add("127.0.0.1:9".parse().unwrap()).unwrap();
    let e = handle.add("127.0.0.1:9".parse().unwrap()).unwrap_err();
    assert!(matches!(e, Error::TooManyLeaves { max: 2 }), "{e}");
    assert!(e.to_string().contains("max_leaves_per_shard"), "{e}");
    drop(fanout);
    assert!(matches!(
        handle.add("127.0.0.1:9".parse().unwrap()),
        Err(Error::FanoutClosed)
    ));

    let unbound = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
    let e = Fanout::start(unbound, config(&mmsg, true, 1)).unwrap_err();
    assert!(e.to_string().contains("not bound"), "{e}");
    for bad in [
        FanoutConfig {
            shards: 0,
            ..config(&mmsg, true, 1)
        },
        FanoutConfig {
            buffers: 0,
            ..config(&mmsg, true, 1)
        },
        FanoutConfig {
            max_datagram: 10,
            ..config(&mmsg, true, 1)
        },
        FanoutConfig {
            max_leaves_per_shard: 0,
            ..config(&mmsg, true, 1)
        },
    ] {
        let (socket, _) = root_socket(&mmsg);
        let e = Fanout::start(socket, bad).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }
}
