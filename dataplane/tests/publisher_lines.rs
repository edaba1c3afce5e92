//! Publishing on two lines (`PublisherConfig::line_b`): both groups get the same packets,
//! byte for byte and in order (data, heartbeats, the end of session and its repeats), each
//! line in GSO runs of its own; a packet buffer is not reused before both lines sent it;
//! and a line B that loses or fails everything leaves line A whole. On the simulated
//! network and on loopback, on io_uring (also zero-copy) and the mmsg fallback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{group, offer, sim_member, started_or_skip, wait_until, BACKENDS, STALL};
use multipoint_control::{Direction, Interface, MultipointSocket, Roles, Transport};
use multipoint_dataplane::io::sim::{Impairments, SimNet, SimSocket};
use multipoint_dataplane::wire::{Packet, PacketKind, Session};
use multipoint_dataplane::{
    BackendChoice, Error, LineB, LineSendStats, Network, Publisher, PublisherConfig, PublisherStats,
};

/// Every message is this long, so that packets come out equally long and leave in GSO
/// runs.
const MSG: usize = 100;

/// Messages offered between `begin_batch` and `end_batch`.
const BATCH: u64 = 64;

/// How far the publisher may run ahead of the slower line's receiver on loopback, in
/// messages: about 150 packets, well inside a receive buffer.
const WINDOW: u64 = 2_000;

const SESSION: &str = "TWOLINES";

fn session() -> Session {
    Session::new(SESSION).unwrap()
}

/// Message `seq`: its number little-endian, then bytes that depend on it.
fn message(seq: u64) -> [u8; MSG] {
    let mut msg = [0u8; MSG];
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in msg[8..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    msg
}

/// What a line's packets held.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    messages: u64,
    heartbeats: u64,
    ends: u64,
}

/// Checks that `packets` are one clean stream of the session: data packets numbered
/// 1, 2, 3... without a gap or a repeat, each message exactly [`message`] of its number,
/// heartbeats carrying the next number, and after the first end of session nothing but
/// repeats of it. Returns what they held.
fn check_stream(line: &str, packets: &[Vec<u8>]) -> Seen {
    let mut seen = Seen::default();
    let mut next = 1u64;
    for (i, bytes) in packets.iter().enumerate() {
        let packet = Packet::new_checked(&bytes[..])
            .unwrap_or_else(|e| panic!("{line}: packet {i} is not MoldUDP64: {e}"));
        assert_eq!(packet.session(), session(), "{line}: packet {i}'s session");
        assert_eq!(
            packet.sequence(),
            next,
            "{line}: packet {i}'s sequence number"
        );
        assert!(
            seen.ends == 0 || packet.kind() == PacketKind::EndOfSession,
            "{line}: packet {i} came after the end of session"
        );
        match packet.kind() {
            PacketKind::Data => {
                for (seq, msg) in (packet.sequence()..).zip(packet.messages()) {
                    assert_eq!(msg, message(seq), "{line}: message {seq} in packet {i}");
                }
                seen.messages += u64::from(packet.message_count());
                next = packet.next_sequence();
            }
            PacketKind::Heartbeat => seen.heartbeats += 1,
            PacketKind::EndOfSession => seen.ends += 1,
        }
    }
    seen
}

/// Asserts that both lines got the same packets, byte for byte and in the same order,
/// and that they are one clean stream of `messages` messages with at least `heartbeats`
/// heartbeats and `ends` ends of session. Returns what line A's held.
fn assert_same_stream(
    a: &[Vec<u8>],
    b: &[Vec<u8>],
    messages: u64,
    heartbeats: u64,
    ends: u64,
) -> Seen {
    let seen = check_stream("line A", a);
    assert_eq!(seen.messages, messages, "line A: messages");
    assert!(seen.heartbeats >= heartbeats, "line A: {seen:?}");
    assert!(seen.ends >= ends, "line A: {seen:?}");
    if let Some(i) = a.iter().zip(b).position(|(a, b)| a != b) {
        panic!("packet {i} differs between the lines");
    }
    assert_eq!(a.len(), b.len(), "packets on line A and line B");
    seen
}

/// Publishes messages `1..=count` in batches (polling through backpressure), never more
/// than [`WINDOW`] messages ahead of `received()`, and flushes.
fn publish(publisher: &mut Publisher, count: u64, received: impl Fn() -> u64) {
    let mut seq = 1;
    while seq <= count {
        publisher.begin_batch();
        let last = count.min(seq + BATCH - 1);
        while seq <= last {
            assert_eq!(offer(publisher, &message(seq)), seq);
            seq += 1;
        }
        publisher.end_batch();
        if received() + WINDOW < last {
            publisher.flush();
            wait_until("the receivers to catch up", STALL, || {
                publisher.poll();
                received() + WINDOW >= last
            });
        }
    }
    publisher.flush();
}

/// Polls `publisher` for `time`.
fn poll_for(publisher: &mut Publisher, time: Duration) {
    let until = Instant::now() + time;
    while Instant::now() < until {
        publisher.poll();
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Lets the publisher go idle until it sent `heartbeats` heartbeats, ends the session,
/// polls for long enough that the end is repeated, and closes it: its counters and line
/// B's.
fn idle_end_and_close(
    mut publisher: Publisher,
    heartbeats: u64,
) -> (PublisherStats, Option<LineSendStats>) {
    wait_until("heartbeats", STALL, || {
        publisher.poll();
        publisher.stats().heartbeats >= heartbeats
    });
    publisher.end_session();
    // Heartbeats every 5 ms: the end goes again after 5 ms of idling at the latest.
    poll_for(&mut publisher, Duration::from_millis(40));
    publisher.close_lines()
}

/// A publisher of [`SESSION`] to `a`, with line B to `b`, 5 ms heartbeats and `buffers`
/// packet buffers.
fn two_lines(a: SocketAddr, b: SocketAddr, buffers: usize) -> PublisherConfig {
    PublisherConfig {
        interface: Interface::LOOPBACK_V4,
        heartbeat: Duration::from_millis(5),
        buffers,
        line_b: Some(LineB::new(b, Interface::LOOPBACK_V4)),
        ..PublisherConfig::new(session(), a)
    }
}

// ---- On the simulated network ----------------------------------------------------

/// Every datagram queued for `member`, in order.
fn sim_received(member: &SimSocket) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    let now = Instant::now();
    std::iter::from_fn(|| member.recv(now, &mut buf).map(|d| buf[..d.len].to_vec())).collect()
}

fn sim_groups() -> (SocketAddr, SocketAddr) {
    (
        "239.255.1.1:7001".parse().unwrap(),
        "239.255.2.2:7002".parse().unwrap(),
    )
}

#[test]
fn both_lines_carry_the_same_packets_heartbeats_and_ends_of_session_on_the_sim() {
    let net = SimNet::new(13);
    let (a, b) = sim_groups();
    let (member_a, member_b) = (sim_member(&net, a), sim_member(&net, b));
    let mut publisher = Publisher::new(PublisherConfig {
        network: Network::Sim(net.clone()),
        ..two_lines(a, b, 8)
    })
    .unwrap();
    assert_eq!(publisher.line_b_destination(), Some(b));
    assert_eq!(publisher.destination(), a);

    // 20,000 messages through 8 buffers: every buffer is reused hundreds of times.
    publish(&mut publisher, 20_000, || u64::MAX / 2);
    let (stats, line_b) = idle_end_and_close(publisher, 2);
    let line_b = line_b.expect("line B's counters");

    let (got_a, got_b) = (sim_received(&member_a), sim_received(&member_b));
    let seen = assert_same_stream(&got_a, &got_b, 20_000, 2, 2);
    assert_eq!(stats.packets, got_a.len() as u64, "{stats:?}");
    assert_eq!(line_b.packets, got_b.len() as u64, "{line_b:?}");
    assert!(
        stats.gso_sends > 0 && line_b.gso_sends > 0,
        "each line sent GSO runs: {stats:?} {line_b:?}"
    );
    // Line B sends the same batches in runs of its own, a batch larger than its share
    // of the buffers (half of these 8) as several sends.
    assert!(
        line_b.sends >= stats.sends && line_b.gso_sends > 0,
        "{stats:?} {line_b:?}"
    );
    assert!(
        stats.sends < stats.packets,
        "runs of several packets per send: {stats:?}"
    );
    assert_eq!((stats.send_errors, line_b.send_errors), (0, 0));
    assert_eq!(seen.messages, stats.messages);
}

#[test]
fn a_buffer_is_reused_on_the_sim_only_after_both_lines_sent_it_whichever_completes_last() {
    let (a, b) = sim_groups();
    for late in [a, b] {
        let net = SimNet::new(16);
        let (member_a, member_b) = (sim_member(&net, a), sim_member(&net, b));
        // One line's sends complete (and read their buffers) half a millisecond later
        // than the other's: a buffer let go after the first completion would be refilled
        // before the late line read it.
        net.defer_sends_to(late, Duration::from_micros(500));
        let mut publisher = Publisher::new(PublisherConfig {
            network: Network::Sim(net.clone()),
            ..two_lines(a, b, 4)
        })
        .unwrap();
        publish(&mut publisher, 10_000, || u64::MAX / 2);
        let (stats, line_b) = idle_end_and_close(publisher, 1);
        let line_b = line_b.unwrap();
        let (got_a, got_b) = (sim_received(&member_a), sim_received(&member_b));
        if late == a {
            assert_same_stream(&got_a, &got_b, 10_000, 1, 2);
            assert!(
                stats.backpressure > 0,
                "the buffers ran out, so they were reused as soon as they could be: {stats:?}"
            );
            assert_eq!(line_b.packets, stats.packets);
        } else {
            // A late line B holds at most half the buffers: beyond that its packets are
            // its own loss (counted), and line A's stream is whole. What line B did send
            // is byte for byte right: no buffer was refilled before it read it.
            let seen = check_stream("line A", &got_a);
            assert_eq!(seen.messages, 10_000);
            assert_eq!(
                line_b.packets + line_b.send_errors,
                stats.packets,
                "{line_b:?}"
            );
            assert!(
                line_b.send_errors > 0,
                "line B went over its share: {line_b:?}"
            );
            assert_eq!(line_b.packets, got_b.len() as u64);
            check_content("line B", &got_b);
        }
    }
}

#[test]
fn a_line_b_whose_sends_finish_late_loses_packets_of_its_own_not_line_as_pace() {
    let (a, b) = sim_groups();
    let net = SimNet::new(17);
    let (member_a, member_b) = (sim_member(&net, a), sim_member(&net, b));
    // Line B's sends take 300 ms to finish (a shaped or congested network). Were line
    // A to wait for its buffers, 10,000 messages through 128 buffers (line B's share
    // 64, a batch at most 32) would take seconds.
    net.defer_sends_to(b, Duration::from_millis(300));
    let mut publisher = Publisher::new(PublisherConfig {
        network: Network::Sim(net.clone()),
        ..two_lines(a, b, 128)
    })
    .unwrap();
    publish(&mut publisher, 10_000, || u64::MAX / 2);
    let (stats, line_b) = idle_end_and_close(publisher, 1);
    let line_b = line_b.unwrap();
    let seen = check_stream("line A", &sim_received(&member_a));
    assert_eq!(seen.messages, 10_000, "line A whole");
    assert_eq!(stats.send_errors, 0, "{stats:?}");
    // Line B held at most half the buffers; the rest of its packets are its own loss.
    assert!(line_b.send_errors > line_b.packets, "{line_b:?}");
    assert_eq!(
        line_b.packets + line_b.send_errors,
        stats.packets,
        "{line_b:?}"
    );
    check_content("line B", &sim_received(&member_b));
}

/// Checks that every message of `packets` is the one its number says, and that the
/// numbers only go up (some packets may be missing).
fn check_content(line: &str, packets: &[Vec<u8>]) {
    let mut next = 1u64;
    for (i, bytes) in packets.iter().enumerate() {
        let packet = Packet::new_checked(&bytes[..])
            .unwrap_or_else(|e| panic!("{line}: packet {i} is not MoldUDP64: {e}"));
        assert!(packet.sequence() >= next, "{line}: packet {i} went back");
        if packet.kind() == PacketKind::Data {
            for (seq, msg) in (packet.sequence()..).zip(packet.messages()) {
                assert_eq!(msg, message(seq), "{line}: message {seq} in packet {i}");
            }
            next = packet.next_sequence();
        }
    }
}

#[test]
fn a_line_b_that_loses_everything_on_the_sim_leaves_line_a_whole() {
    let net = SimNet::new(14);
    let (a, b) = sim_groups();
    let (member_a, member_b) = (sim_member(&net, a), sim_member(&net, b));
    net.impair_to(
        member_b.local_addr(),
        Impairments {
            loss: 1.0,
            ..Impairments::none()
        },
    );
    let mut publisher = Publisher::new(PublisherConfig {
        network: Network::Sim(net.clone()),
        ..two_lines(a, b, 8)
    })
    .unwrap();
    publish(&mut publisher, 5_000, || u64::MAX / 2);
    let (stats, line_b) = idle_end_and_close(publisher, 1);
    let line_b = line_b.unwrap();

    assert!(sim_received(&member_b).is_empty(), "line B lost everything");
    let got_a = sim_received(&member_a);
    let seen = check_stream("line A", &got_a);
    assert_eq!(seen.messages, 5_000, "{seen:?}");
    assert!(seen.heartbeats >= 1 && seen.ends >= 2, "{seen:?}");
    assert_eq!(
        line_b.packets, stats.packets,
        "the publisher sent line B everything"
    );
    assert_eq!(net.stats().lost, line_b.packets);
}

#[test]
fn a_publisher_on_a_given_socket_refuses_a_line_b() {
    let net = SimNet::new(15);
    let (a, b) = sim_groups();
    let socket = net.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let refused = Publisher::with_socket(socket, a, two_lines(a, b, 8));
    match refused {
        Err(Error::Config(reason)) => assert!(reason.contains("line B"), "{reason}"),
        other => panic!("not refused as configuration: {other:?}"),
    }
}

#[test]
fn the_host_needs_a_sender_per_line() {
    let (a, b) = sim_groups();
    let one = PublisherConfig::new(session(), a).host_needs();
    let two = two_lines(a, b, 8).host_needs();
    assert_eq!((one.senders, two.senders), (1, 2));
}

// ---- On loopback -------------------------------------------------------------------

/// A receiver of one group on loopback, on a thread of its own: it keeps every datagram,
/// in order, and counts the messages of the data packets.
struct Tap {
    /// One past the last message number seen.
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Vec<u8>>>,
}

impl Tap {
    fn join(group: SocketAddr) -> Tap {
        let socket = MultipointSocket::new(Transport::Udp4Multicast, Roles::LEAF).unwrap();
        socket.set_interface(Interface::LOOPBACK_V4).unwrap();
        // The kernel caps it at net.core.rmem_max; the publisher paces to stay inside.
        let _ = socket.socket().set_recv_buffer_size(4 << 20);
        let membership = socket
            .join_leaf(group, Direction::ReceiverOnly, None)
            .unwrap();
        let next = Arc::new(AtomicU64::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let (counted, stopped) = (Arc::clone(&next), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let _membership = membership;
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                match socket.recv_timeout(&mut buf, Duration::from_millis(20)) {
                    Ok(Some(d)) => {
                        let bytes = buf[..d.len].to_vec();
                        if let Ok(p) = Packet::new_checked(&bytes[..]) {
                            counted.fetch_max(p.next_sequence(), Ordering::Relaxed);
                        }
                        got.push(bytes);
                    }
                    Ok(None) if stopped.load(Ordering::Relaxed) => return got,
                    Ok(None) => {}
                    Err(e) => panic!("receiving on {group}: {e}"),
                }
            }
        });
        Tap { next, stop, thread }
    }

    /// Messages received so far.
    fn received(&self) -> u64 {
        self.next.load(Ordering::Relaxed) - 1
    }

    /// Stops once nothing more arrives; everything received, in order.
    fn finish(self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Starts a two-line publisher on loopback, or `None` (printing why) when `backend` cannot
/// run here.
fn loopback_publisher(test: &str, config: PublisherConfig) -> Option<Publisher> {
    match Publisher::new(config) {
        Err(Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::Unsupported
                && std::env::var_os("CI").is_none() =>
        {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "{test}: skipped: this kernel cannot do it: {source}"
            );
            None
        }
        started => started_or_skip(test, "the publisher", started),
    }
}

/// Publishes `count` messages on two lines on loopback (to groups of `last`) with the
/// configuration `tune` makes, and checks that both lines got the same clean stream.
/// Returns the counters of both lines; `None` when the backend cannot run here.
fn two_lines_on_loopback(
    test: &str,
    backend: BackendChoice,
    last: u8,
    count: u64,
    tune: impl FnOnce(&mut PublisherConfig),
) -> Option<(PublisherStats, LineSendStats)> {
    let (a, b) = (group(120, last), group(121, last));
    let (tap_a, tap_b) = (Tap::join(a), Tap::join(b));
    let mut config = PublisherConfig {
        backend,
        ..two_lines(a, b, 4)
    };
    tune(&mut config);
    let mut publisher = loopback_publisher(test, config)?;
    publish(&mut publisher, count, || {
        tap_a.received().min(tap_b.received())
    });
    let (stats, line_b) = idle_end_and_close(publisher, 2);
    let (got_a, got_b) = (tap_a.finish(), tap_b.finish());
    assert_same_stream(&got_a, &got_b, count, 2, 2);
    let line_b = line_b.unwrap();
    assert_eq!(
        (stats.packets, line_b.packets),
        (got_a.len() as u64, got_b.len() as u64),
        "{test} on {backend:?}: every packet sent arrived, on each line"
    );
    assert_eq!(
        (stats.send_errors, line_b.send_errors),
        (0, 0),
        "{test} on {backend:?}"
    );
    Some((stats, line_b))
}

#[test]
fn both_lines_carry_the_same_packets_on_loopback_in_gso_runs_of_their_own() {
    for (i, backend) in BACKENDS.into_iter().enumerate() {
        let Some((stats, line_b)) =
            two_lines_on_loopback("same packets", backend, 1 + i as u8, 10_000, |c| {
                c.buffers = 32;
            })
        else {
            continue;
        };
        assert!(
            stats.gso_sends > 0 && line_b.gso_sends > 0,
            "{backend:?}: each line sent GSO runs: {stats:?} {line_b:?}"
        );
        assert!(
            stats.sends < stats.packets && line_b.sends < line_b.packets,
            "{backend:?}: several packets per send: {stats:?} {line_b:?}"
        );
    }
}

#[test]
fn a_buffer_is_reused_only_after_both_lines_sent_it() {
    // Two buffers and 30,000 messages: each buffer carries over a thousand packets, and
    // a packet refilled before line B's send of it completed would show on line B as
    // another packet's bytes (or, once the kernel read it, as a repeat or a gap).
    for (i, backend) in BACKENDS.into_iter().enumerate() {
        two_lines_on_loopback("reuse", backend, 10 + i as u8, 30_000, |c| {
            c.buffers = 2;
        });
    }
}

#[test]
fn zero_copy_sends_on_both_lines_reuse_a_buffer_only_after_both_released_it() {
    two_lines_on_loopback("zero copy", BackendChoice::Uring, 20, 20_000, |c| {
        c.buffers = 4;
        c.zero_copy = true;
    });
}

#[test]
fn a_line_b_whose_every_send_fails_leaves_line_a_whole() {
    // Port 0: the kernel refuses every send to it (EINVAL), on either backend.
    for (i, backend) in BACKENDS.into_iter().enumerate() {
        let a = group(122, 1 + i as u8);
        let b = SocketAddr::new(group(122, 101 + i as u8).ip(), 0);
        let tap_a = Tap::join(a);
        let config = PublisherConfig {
            backend,
            ..two_lines(a, b, 4)
        };
        let Some(mut publisher) = loopback_publisher("line B fails", config) else {
            continue;
        };
        publish(&mut publisher, 10_000, || tap_a.received());
        let (stats, line_b) = idle_end_and_close(publisher, 1);
        let line_b = line_b.unwrap();
        let seen = check_stream("line A", &tap_a.finish());
        assert_eq!(seen.messages, 10_000, "{backend:?}: {seen:?}");
        assert!(
            seen.heartbeats >= 1 && seen.ends >= 2,
            "{backend:?}: {seen:?}"
        );
        assert_eq!(stats.send_errors, 0, "{backend:?}: {stats:?}");
        assert_eq!(
            line_b.packets, stats.packets,
            "{backend:?}: line B was given every packet: {line_b:?}"
        );
        assert_eq!(
            line_b.send_errors, line_b.packets,
            "{backend:?}: and every one failed, counted: {line_b:?}"
        );
    }
}
