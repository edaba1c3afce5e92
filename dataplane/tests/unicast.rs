//! The data plane on sockets the caller made (as a rooted transport's control layer does):
//! a publisher on its own bound socket streams to a subscription whose socket is bound and
//! connected to the publisher, complete, in order and unchanged, on each backend with
//! segmentation offload on and off; a datagram from any other peer never reaches the
//! subscription; a publisher whose socket is connected elsewhere still sends to the
//! destination it was given; sockets that cannot work are refused with a clear error; and
//! shards pin from the first core they are given.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use common::{
    assert_received_stream, await_end_of_session, loopback_udp as bound_udp, shards_on,
    start_or_skip, wait_until, Checker, Expected, Paced, Stream, BACKENDS, STALL,
};
use multipoint_dataplane::wire::{write_heartbeat, Session};
use multipoint_dataplane::{
    BackendChoice, BackendKind, Error, Publisher, PublisherConfig, Result, ShardConfig, Shards,
    SubscriptionConfig,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const MESSAGES: u64 = 100_000;

/// How far the publisher may run ahead of the subscriber, in messages (see delivery.rs).
const WINDOW: u64 = 3_000;

/// A subscription socket that accepts datagrams from `peer` only.
fn connected_to(peer: SocketAddr) -> (Socket, SocketAddr) {
    let (socket, addr) = bound_udp();
    socket.connect(&SockAddr::from(peer)).unwrap();
    (socket, addr)
}

fn kind_of(backend: BackendChoice) -> BackendKind {
    match backend {
        BackendChoice::Mmsg => BackendKind::Mmsg,
        _ => BackendKind::Uring,
    }
}

fn a_unicast_stream_reaches_a_connected_subscription_and_nobody_else_does(
    test: &str,
    backend: BackendChoice,
    offload: bool,
) {
    let Some(mut shards) = start_or_skip(
        test,
        ShardConfig {
            gro: offload,
            ..shards_on(backend)
        },
    ) else {
        return;
    };
    assert_eq!(shards.backend().kind, kind_of(backend));
    let session = Session::new("UNICAST").unwrap();

    let (pub_socket, pub_addr) = bound_udp();
    let (sub_socket, sub_addr) = connected_to(pub_addr);
    let stream = Stream::new();
    let sub = shards
        .subscribe_socket(
            sub_socket,
            SubscriptionConfig {
                recv_buffer: 16 << 20,
                // Ignored by subscribe_socket.
                ..SubscriptionConfig::new(sub_addr)
            },
            Checker::new(&stream),
        )
        .unwrap();
    assert_eq!(sub.session(), None, "no session before the first packet");

    let mut publisher = Publisher::with_socket(
        pub_socket,
        sub_addr,
        PublisherConfig {
            backend,
            gso: offload,
            // Ignored by with_socket: the destination is sub_addr.
            ..PublisherConfig::new(session, SocketAddr::from(([239, 255, 9, 9], 9)))
        },
    )
    .unwrap();
    assert_eq!(publisher.backend().kind, kind_of(backend));
    assert_eq!(publisher.destination(), sub_addr);
    assert_eq!(
        publisher.local_addr(),
        Some(pub_addr),
        "the publisher sends from the socket it was given"
    );

    let mut paced = Paced::new(&stream, WINDOW, || sub.stats().messages);
    let half = MESSAGES / 2;
    paced.publish_all(&mut publisher, 1..=half, "the first half to arrive");
    // No polling from here on, so the publisher sends nothing more (not even a heartbeat)
    // until the stream resumes; wait for whatever it already sent.
    wait_until("every packet sent so far to arrive", STALL, || {
        sub.stats().packets == publisher.stats().packets
    });
    assert_eq!(sub.session(), Some(session), "the session locked onto");

    // A third socket, not the subscription's peer, sends it a heartbeat far ahead of the
    // stream: delivered, it would report a gap of a billion messages.
    let before = sub.stats();
    let intruder = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    intruder.connect(sub_addr).unwrap();
    let mut heartbeat = [0u8; 64];
    let len = write_heartbeat(&mut heartbeat, &session, 1_000_000_000).unwrap();
    // No socket takes it: the kernel answers with port unreachable, which the connected
    // intruder sees as ECONNREFUSED; once it has, the datagram is gone for good. Port
    // unreachable is rate limited host-wide, so send again now and then until one comes
    // back (every copy must be dropped all the same).
    intruder.set_nonblocking(true).unwrap();
    let mut tries = 0u32;
    wait_until(
        "the kernel to refuse the intruder's datagram",
        STALL,
        || {
            if tries % 50 == 0 {
                intruder.send(&heartbeat[..len]).unwrap();
            }
            tries += 1;
            assert_eq!(
                sub.stats(),
                before,
                "{test}: a datagram from another peer reached the subscription"
            );
            match intruder.recv(&mut [0u8; 64]) {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                other => panic!("{test}: the intruder got {other:?}"),
            }
        },
    );
    assert_eq!(
        sub.stats(),
        before,
        "{test}: a datagram from another peer changed nothing"
    );

    // The real stream goes on.
    paced.publish_all(
        &mut publisher,
        half + 1..=MESSAGES,
        "every message to arrive",
    );
    let sent = paced.sent;
    let published = publisher.close();
    assert_eq!(published.messages, MESSAGES);
    assert_eq!(published.send_errors, 0, "{published:?}");
    await_end_of_session(std::slice::from_ref(&sub));

    let closed = sub.close().unwrap();
    assert_received_stream(test, &closed, &published, Expected::stream(MESSAGES, sent));
    let stats = closed.stats;
    // Every packet the publisher sent came in, and nothing else did.
    assert_eq!(
        stats.packets, published.packets,
        "{test}: {stats:?} against {published:?}"
    );
    assert_eq!(stats.heartbeats, published.heartbeats, "{test}: {stats:?}");
    if offload {
        assert!(stats.gro_batches > 0, "{test}: GRO unused: {stats:?}");
        assert!(published.gso_sends > 0, "{test}: GSO unused: {published:?}");
    } else {
        assert_eq!(stats.gro_batches, 0, "{test}: {stats:?}");
        assert_eq!(stats.datagrams, stats.packets, "{test}: {stats:?}");
        assert_eq!(published.gso_sends, 0, "{test}: {published:?}");
    }
    shards.shutdown();
}

#[test]
fn a_unicast_stream_arrives_complete_in_order_and_unchanged_on_io_uring_with_gso_and_gro() {
    a_unicast_stream_reaches_a_connected_subscription_and_nobody_else_does(
        "unicast, io_uring, offload on",
        BackendChoice::Uring,
        true,
    );
}

#[test]
fn a_unicast_stream_arrives_complete_in_order_and_unchanged_on_io_uring_without_offload() {
    a_unicast_stream_reaches_a_connected_subscription_and_nobody_else_does(
        "unicast, io_uring, offload off",
        BackendChoice::Uring,
        false,
    );
}

#[test]
fn a_unicast_stream_arrives_complete_in_order_and_unchanged_on_mmsg_with_gso_and_gro() {
    a_unicast_stream_reaches_a_connected_subscription_and_nobody_else_does(
        "unicast, mmsg, offload on",
        BackendChoice::Mmsg,
        true,
    );
}

#[test]
fn a_unicast_stream_arrives_complete_in_order_and_unchanged_on_mmsg_without_offload() {
    a_unicast_stream_reaches_a_connected_subscription_and_nobody_else_does(
        "unicast, mmsg, offload off",
        BackendChoice::Mmsg,
        false,
    );
}

#[test]
fn a_publisher_whose_socket_is_connected_elsewhere_sends_to_its_destination() {
    for backend in BACKENDS {
        let test = format!("connected elsewhere, {backend:?}");
        let Some(mut shards) = start_or_skip(&test, shards_on(backend)) else {
            continue;
        };
        let (decoy, decoy_addr) = bound_udp();
        let (pub_socket, pub_addr) = bound_udp();
        pub_socket.connect(&SockAddr::from(decoy_addr)).unwrap();
        let (sub_socket, sub_addr) = connected_to(pub_addr);
        let stream = Stream::new();
        let sub = shards
            .subscribe_socket(
                sub_socket,
                SubscriptionConfig::new(sub_addr),
                Checker::new(&stream),
            )
            .unwrap();
        let session = Session::new("ELSEWHERE").unwrap();
        let mut publisher = Publisher::with_socket(
            pub_socket,
            sub_addr,
            PublisherConfig {
                backend,
                ..PublisherConfig::new(session, sub_addr)
            },
        )
        .unwrap();
        let count = 2_000;
        let mut paced = Paced::new(&stream, WINDOW, || sub.stats().messages);
        paced.publish(&mut publisher, 1..=count);
        let sent = paced.sent;
        let published = publisher.close();
        await_end_of_session(std::slice::from_ref(&sub));
        let closed = sub.close().unwrap();
        closed.handler.assert_complete(&test, count, sent.value());
        assert_eq!(closed.stats.packets, published.packets, "{test}");
        // Everything went to the destination; the connected peer got nothing.
        decoy.set_nonblocking(true).unwrap();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
        let nothing = decoy.recv(&mut buf).unwrap_err();
        assert_eq!(nothing.kind(), ErrorKind::WouldBlock, "{test}: {nothing}");
        shards.shutdown();
    }
}

/// Asserts that `refused` is a configuration error whose text contains `reason`.
fn assert_refused<T>(refused: Result<T>, reason: &str) {
    match refused {
        Err(Error::Config(m)) if m.contains(reason) => {}
        Err(err) => panic!("expected a configuration error saying {reason:?}, got: {err}"),
        Ok(_) => panic!("expected a configuration error saying {reason:?}, got a success"),
    }
}

#[test]
fn sockets_that_cannot_work_are_refused_with_a_reason() {
    let Some(mut shards) = start_or_skip("refusals", shards_on(BackendChoice::Mmsg)) else {
        return;
    };
    let anywhere = SocketAddr::from(([127, 0, 0, 1], 9));
    let config = || SubscriptionConfig::new(anywhere);
    let noop = |_: u64, _: &[u8]| {};

    let unbound = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    assert_refused(
        shards.subscribe_socket(unbound, config(), noop),
        "not bound",
    );
    let tcp = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    assert_refused(shards.subscribe_socket(tcp, config(), noop), "datagram");

    let session = Session::new("REFUSED").unwrap();
    let publisher_config = || PublisherConfig {
        backend: BackendChoice::Mmsg,
        ..PublisherConfig::new(session, anywhere)
    };
    let (v4, _) = bound_udp();
    let v6 = "[::1]:9".parse().unwrap();
    assert_refused(
        Publisher::with_socket(v4, v6, publisher_config()),
        "address family",
    );
    let tcp = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    assert_refused(
        Publisher::with_socket(tcp, anywhere, publisher_config()),
        "datagram",
    );
    let (v4, _) = bound_udp();
    let no_buffers = PublisherConfig {
        buffers: 0,
        ..publisher_config()
    };
    assert_refused(Publisher::with_socket(v4, anywhere, no_buffers), "");
    shards.shutdown();
}

/// The thread ids of this process's threads named `name`.
fn threads_named(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let tid = entry.file_name().to_str()?.parse().ok()?;
            (comm.trim_end() == name).then_some(tid)
        })
        .collect()
}

#[test]
fn shards_pin_from_the_first_core_they_are_given() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ours = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    if (0..cores).any(|cpu| !ours.is_set(cpu).unwrap_or(false)) {
        eprintln!("first core: skipped: this process may not run on cores 0..{cores}");
        return;
    }
    let first_core = 1;
    let shards = Shards::start(ShardConfig {
        backend: BackendChoice::Mmsg,
        shards: 2,
        pin: true,
        first_core,
        ..ShardConfig::default()
    })
    .unwrap();
    // Other tests of this binary run shards too, pinned from core 0: look for ours.
    for index in 0..2 {
        let core = (first_core + index) % cores;
        let pinned_there = threads_named(&format!("mp-shard-{index}"))
            .into_iter()
            .filter_map(|tid| nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(tid)).ok())
            .any(|set| {
                (0..nix::sched::CpuSet::count())
                    .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                    .eq([core])
            });
        assert!(pinned_there, "shard {index} runs on core {core} alone");
    }
    shards.shutdown();
}
