//! Forged datagrams beside a real 200,000-message stream on loopback, through the real
//! kernel paths (io_uring and mmsg): a stranger's packets of the session first, then
//! far-future data, a far-future heartbeat, an end of session at sequence 1 and a packet
//! numbered from 0 — from a stranger's socket, and (as root, with a raw socket) with the
//! real sender's own address and port forged. The stream must arrive whole, with every
//! forgery counted exactly where it belongs. The simulated-network variants of each
//! forgery, one at a time, are in `sim.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use common::{
    assert_received_stream, await_end_of_session, checked_subscription, flush_and_wait, group,
    wait_until, Expected, Net, Paced, STALL,
};
use multipoint_dataplane::wire::{
    pack_all, write_end_of_session, write_heartbeat, Session, DEFAULT_MAX_DATAGRAM,
};
use multipoint_dataplane::{BackendChoice, Publisher};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const MESSAGES: u64 = 200_000;
const WINDOW: u64 = 3_000;

/// The forgeries sent in the middle of the stream, each naming the real session: far-future
/// data, a far-future heartbeat, an end of session at 1, and a packet numbered from 0.
fn forgeries(session: &Session) -> [Vec<u8>; 4] {
    let far = pack_all(session, 1 << 63, DEFAULT_MAX_DATAGRAM, [&b"evil"[..]])
        .unwrap()
        .remove(0);
    let mut buf = [0u8; 20];
    let len = write_heartbeat(&mut buf, session, 1 << 63).unwrap();
    let heartbeat = buf[..len].to_vec();
    let len = write_end_of_session(&mut buf, session, 1).unwrap();
    let end = buf[..len].to_vec();
    let mut zero = pack_all(session, 1, DEFAULT_MAX_DATAGRAM, [&b"a"[..], b"b"])
        .unwrap()
        .remove(0);
    zero[10..18].copy_from_slice(&0u64.to_be_bytes());
    [far, heartbeat, end, zero]
}

/// A raw UDP socket that can send datagrams with any source port from 127.0.0.1 (needs
/// CAP_NET_RAW); `None`, saying why, without it.
fn spoofer(test: &str) -> Option<Socket> {
    match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)) {
        Ok(socket) => {
            socket
                .bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())
                .unwrap();
            socket.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
            socket.set_multicast_loop_v4(true).unwrap();
            Some(socket)
        }
        Err(e) => {
            eprintln!(
                "{test}: skipping the forged-source part: a raw socket needs CAP_NET_RAW ({e})"
            );
            None
        }
    }
}

/// Sends `payload` to `to` in a UDP datagram whose source port is `from`'s (the kernel
/// writes the IP header, from 127.0.0.1; checksum 0: none, as IPv4 allows).
fn spoof(socket: &Socket, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
    let mut datagram = Vec::with_capacity(8 + payload.len());
    datagram.extend_from_slice(&from.port().to_be_bytes());
    datagram.extend_from_slice(&to.port().to_be_bytes());
    datagram.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    let to = SockAddr::from(SocketAddr::new(to.ip(), 0));
    assert_eq!(socket.send_to(&datagram, &to).unwrap(), datagram.len());
}

fn forgeries_beside_a_real_stream(test: &str, backend: BackendChoice, group: SocketAddr) {
    let net = Net::Host(backend);
    // Neither session nor sender named: the stream locks onto whoever proves itself.
    let Some((shards, sub, stream)) = checked_subscription(test, &net, group) else {
        return;
    };
    let session = Session::new("REAL").unwrap();
    let stranger = net.raw_sender(group);

    // A stranger first: two packets of the session that follow on from each other.
    for packet in pack_all(&session, 1, 40, [&[0xEE; 16][..], &[0xEE; 16]]).unwrap() {
        stranger.send(&packet);
    }
    wait_until("the stranger's packets", STALL, || sub.stats().packets == 2);

    let mut publisher = Publisher::new(net.publisher(session, group)).unwrap();
    let mut paced = Paced::new(&stream, WINDOW, || sub.stats().messages);
    paced.publish(&mut publisher, 1..=MESSAGES / 2);
    flush_and_wait(&mut publisher, "the first half", || {
        paced.received() == MESSAGES / 2
    });
    let sender = sub.sender().expect("locked onto the real sender");
    assert_eq!(sub.session(), Some(session));

    let forged = forgeries(&session);
    for datagram in &forged {
        stranger.send(datagram);
    }
    let spoofer = spoofer(test);
    let mut next = MESSAGES / 2 + 1;
    if let Some(raw) = &spoofer {
        for datagram in &forged {
            spoof(raw, sender, group, datagram);
            // Each lands between real packets.
            paced.publish(&mut publisher, next..=next);
            publisher.flush();
            next += 1;
        }
    }
    paced.publish(&mut publisher, next..=MESSAGES);
    flush_and_wait(&mut publisher, "the whole stream", || {
        paced.received() == MESSAGES
    });
    let published = publisher.close();
    // Ends the pacing (and its borrow of the subscription).
    let Paced { sent, .. } = paced;
    await_end_of_session(std::slice::from_ref(&sub));
    let closed = sub.close().unwrap();
    let spoofed = u64::from(spoofer.is_some());
    let expected = Expected {
        malformed: 1 + spoofed,
        ..Expected::stream(MESSAGES, sent)
    };
    assert_received_stream(test, &closed, &published, expected);
    let stats = closed.stats;
    assert_eq!(
        (stats.foreign_source, stats.suspect),
        (2 + 3, 3 * spoofed),
        "{test}: the stranger's 2 first and 3 forgeries are foreign, those forged as the \
         sender suspect: {stats:?}"
    );
    assert_eq!(
        stats.end_of_session, 1,
        "{test}: only the real end: {stats:?}"
    );
    shards.shutdown();
}

#[test]
fn forgeries_leave_a_real_stream_whole_with_exact_counters_on_io_uring() {
    forgeries_beside_a_real_stream("io_uring", BackendChoice::Uring, group(104, 1));
}

#[test]
fn forgeries_leave_a_real_stream_whole_with_exact_counters_on_mmsg() {
    forgeries_beside_a_real_stream("mmsg", BackendChoice::Mmsg, group(104, 2));
}
