//! A publisher that waits rather than sends one packet at a time or refuses at once:
//! adaptive batching (a plain `offer` loop sends runs of packets while sends are in
//! flight), `offer_wait` (waiting for room with the configured idle strategy, within a
//! timeout) and, with the `tokio` feature, `offer_async` and `close_async` on a tokio
//! runtime; on the simulated network and on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    loopback_publisher, loopback_subscription, shards_on, sim_member, start_or_skip, BACKENDS,
};
use multipoint_dataplane::io::sim::{SimNet, SimSocket};
use multipoint_dataplane::wire::{Packet, PacketKind, Session};
use multipoint_dataplane::{
    BackendChoice, Handler, IdleStrategy, Network, OfferError, Publisher, PublisherConfig,
    PublisherStats, Shards, Subscription,
};

/// Every message is this long (the size of the measurements).
const MSG: usize = 32;
const MESSAGES: u64 = 100_000;
const SESSION: &str = "WAITS";

/// Message `seq`: its number little-endian, then bytes that depend on it.
fn message(seq: u64) -> [u8; MSG] {
    let mut msg = [0u8; MSG];
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in msg[8..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(7).wrapping_add(i as u8);
    }
    msg
}

/// A simulated network (seeded `seed`), a member of `group` on it, and a publisher of
/// the session to `group` (tuned by `tune`) whose sends stay in flight for `defer` (as on
/// io_uring, a send that met a full socket buffer; zero: none does).
fn on_the_sim(
    seed: u64,
    group: SocketAddr,
    defer: Duration,
    tune: impl FnOnce(&mut PublisherConfig),
) -> (SimNet, SimSocket, Publisher) {
    let net = SimNet::new(seed);
    let member = sim_member(&net, group);
    net.defer_sends_to(group, defer);
    let mut config = PublisherConfig {
        network: Network::Sim(net.clone()),
        ..PublisherConfig::new(Session::new(SESSION).unwrap(), group)
    };
    tune(&mut config);
    (net, member, Publisher::new(config).unwrap())
}

/// Shards on `backend`, a subscription to group `239.255.130.last` that only counts, and
/// a publisher to it with four buffers; `None` when the backend cannot run here.
fn on_loopback(
    test: &str,
    backend: BackendChoice,
    last: u8,
) -> Option<(Shards, Subscription<impl Handler>, Publisher)> {
    let mut shards = start_or_skip(test, shards_on(backend))?;
    let group = common::group(130, last);
    let sub = shards
        .subscribe(loopback_subscription(group), |_: u64, _: &[u8]| {})
        .unwrap();
    let publisher = Publisher::new(PublisherConfig {
        buffers: 4,
        ..loopback_publisher(backend, SESSION, group)
    })
    .unwrap();
    Some((shards, sub, publisher))
}

/// Whether the publisher, at message `seq`, is to wait for the subscriber (which counted
/// `received`): never more than this far ahead, so that its socket never overflows.
fn too_far_ahead(seq: u64, received: u64) -> bool {
    seq % 4_096 == 0 && received + 8_192 < seq
}

/// Checks that what `member` received holds messages 1..=`count`, each once, in order and
/// byte for byte, and ends with the end of session.
fn assert_whole_stream(member: &SimSocket, count: u64) {
    let mut buf = vec![0u8; 65_536];
    let now = Instant::now();
    let mut next = 1u64;
    let mut ended = false;
    while let Some(d) = member.recv(now, &mut buf) {
        let packet = Packet::new_checked(&buf[..d.len]).unwrap();
        match packet.kind() {
            PacketKind::Data => {
                assert_eq!(packet.sequence(), next, "in order, none lost");
                for (seq, msg) in (next..).zip(packet.messages()) {
                    assert_eq!(msg, message(seq), "message {seq}");
                    next = seq + 1;
                }
            }
            PacketKind::EndOfSession => ended = true,
            _ => {}
        }
    }
    assert_eq!(next, count + 1, "every message arrived");
    assert!(ended, "the end of session arrived");
}

/// Offers message `seq` until it is taken, polling through back-pressure (the loop a
/// caller writes without `offer_wait`).
fn offer_polling(publisher: &mut Publisher, seq: u64) {
    loop {
        match publisher.offer(&message(seq)) {
            Ok(got) => {
                assert_eq!(got, seq);
                return;
            }
            Err(OfferError::Backpressure) => {
                publisher.poll();
                std::thread::yield_now();
            }
            Err(e) => panic!("offer: {e}"),
        }
    }
}

#[test]
fn a_plain_offer_loop_sends_runs_of_packets_while_sends_are_in_flight_on_the_sim() {
    // Each send stays in flight for 5 ms: the packets filled meanwhile wait for it, up to
    // a batch (32) of them (the maximum delay is long enough not to cut the wait short,
    // even in a debug build).
    let group = "239.255.3.1:7301".parse().unwrap();
    let (_net, member, mut publisher) = on_the_sim(31, group, Duration::from_millis(5), |c| {
        c.max_delay = Duration::from_millis(20);
    });
    for seq in 1..=MESSAGES {
        offer_polling(&mut publisher, seq);
    }
    let stats = publisher.close();
    assert_whole_stream(&member, MESSAGES);
    assert!(
        stats.sends * 4 <= stats.packets,
        "far fewer sends than packets: {stats:?}"
    );
    assert!(stats.gso_sends > 0, "runs went as GSO sends: {stats:?}");
}

#[test]
fn an_idle_publishers_full_packet_leaves_at_once_on_the_sim() {
    let group = "239.255.3.2:7302".parse().unwrap();
    let (_net, member, mut publisher) = on_the_sim(32, group, Duration::ZERO, |c| {
        c.max_delay = Duration::from_secs(5);
    });
    let big = vec![5u8; publisher.max_message()];
    let mut buf = vec![0u8; 65_536];
    for seq in 1..=3u64 {
        // Idle for a while: the last send is long done.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(publisher.offer(&big), Ok(seq));
        if seq > 1 {
            // The offer that did not fit closed the packet before it: sent at once.
            let got = member.recv(Instant::now(), &mut buf).expect("a packet");
            let packet = Packet::new_checked(&buf[..got.len]).unwrap();
            assert_eq!(packet.sequence(), seq - 1);
        }
    }
    drop(publisher);
}

/// Publishes the whole stream with `offer_wait` through four buffers whose sends stay in
/// flight for a while, idling as `idle` says; returns the counters.
fn through_four_buffers(seed: u64, port: u16, idle: IdleStrategy) -> PublisherStats {
    let group = SocketAddr::from(([239, 255, 3, 3], port));
    let (_net, member, mut publisher) = on_the_sim(seed, group, Duration::from_millis(1), |c| {
        c.buffers = 4;
        c.idle = idle;
    });
    for seq in 1..=MESSAGES {
        assert_eq!(
            publisher.offer_wait(&message(seq), Duration::from_secs(30)),
            Ok(seq),
            "{idle:?}: message {seq}"
        );
    }
    let stats = publisher.close();
    assert_whole_stream(&member, MESSAGES);
    stats
}

#[test]
fn offer_wait_through_four_buffers_never_gives_up_and_every_message_arrives_on_the_sim() {
    for (i, idle) in [IdleStrategy::Block, IdleStrategy::Yield]
        .into_iter()
        .enumerate()
    {
        let stats = through_four_buffers(33 + i as u64, 7303 + i as u16, idle);
        assert!(
            stats.backpressure > 0,
            "{idle:?}: every buffer was in flight at times, so it waited: {stats:?}"
        );
        assert_eq!(stats.send_errors, 0, "{idle:?}: {stats:?}");
    }
}

#[test]
fn offer_wait_gives_up_after_its_timeout_when_no_room_comes() {
    // Sends complete only after 2 s: once the four buffers are out, no room comes within
    // the timeout.
    let group = "239.255.3.5:7305".parse().unwrap();
    let (_net, _member, mut publisher) =
        on_the_sim(35, group, Duration::from_secs(2), |c| c.buffers = 4);
    let mut seq = 1;
    while publisher.offer(&message(seq)).is_ok() {
        publisher.flush();
        seq += 1;
        assert!(seq < 100, "four buffers ran out long ago");
    }
    let timeout = Duration::from_millis(200);
    let start = Instant::now();
    assert_eq!(
        publisher.offer_wait(&message(seq), timeout),
        Err(OfferError::Backpressure)
    );
    let waited = start.elapsed();
    assert!(
        waited >= timeout,
        "gave up after {waited:?}, before the timeout"
    );
    assert!(
        waited < Duration::from_secs(2),
        "gave up only after {waited:?}, when room had come"
    );
    assert_eq!(
        publisher.next_sequence(),
        seq,
        "the refused message took no number"
    );
    // Closing waits for the sends in flight (2 s at most).
    drop(publisher);
}

#[test]
fn offer_wait_with_four_buffers_delivers_every_message_on_loopback() {
    for (i, backend) in BACKENDS.into_iter().enumerate() {
        let test = format!("offer_wait on loopback, {backend:?}");
        let Some((_shards, sub, mut publisher)) = on_loopback(&test, backend, 1 + i as u8) else {
            continue;
        };
        for seq in 1..=MESSAGES {
            assert_eq!(
                publisher.offer_wait(&message(seq), Duration::from_secs(30)),
                Ok(seq),
                "{test}: message {seq}"
            );
            if too_far_ahead(seq, sub.stats().messages) {
                publisher.flush();
                common::wait_until("the subscriber to catch up", common::STALL, || {
                    publisher.poll();
                    !too_far_ahead(seq, sub.stats().messages)
                });
            }
        }
        let stats = publisher.close();
        common::wait_until("every message", common::STALL, || {
            sub.stats().messages == MESSAGES
        });
        assert_eq!(sub.stats().gaps, 0, "{test}");
        assert_eq!(stats.send_errors, 0, "{test}: {stats:?}");
    }
}

/// `offer_async` and `close_async` on a current-thread tokio runtime.
#[cfg(feature = "tokio")]
mod on_tokio {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn offer_async_through_four_buffers_delivers_every_message_and_close_async_returns_the_stats() {
        // Sends stay in flight for a millisecond: four buffers run out, and the task waits.
        let group = "239.255.4.1:7401".parse().unwrap();
        let (_net, member, publisher) =
            on_the_sim(41, group, Duration::from_millis(1), |c| c.buffers = 4);
        let stats = runtime().block_on(async move {
            let mut publisher = publisher;
            for seq in 1..=MESSAGES {
                assert_eq!(publisher.offer_async(&message(seq)).await, Ok(seq));
            }
            publisher.close_async().await
        });
        assert_eq!(stats.messages, MESSAGES, "{stats:?}");
        assert!(stats.backpressure > 0, "the task had to wait: {stats:?}");
        assert_whole_stream(&member, MESSAGES);
    }

    #[test]
    fn offer_async_on_loopback_delivers_every_message() {
        for (i, backend) in BACKENDS.into_iter().enumerate() {
            let test = format!("offer_async on loopback, {backend:?}");
            let Some((_shards, sub, publisher)) = on_loopback(&test, backend, 11 + i as u8) else {
                continue;
            };
            let stats = runtime().block_on(async {
                let mut publisher = publisher;
                for seq in 1..=MESSAGES {
                    assert_eq!(publisher.offer_async(&message(seq)).await, Ok(seq));
                    let deadline = Instant::now() + common::STALL;
                    while too_far_ahead(seq, sub.stats().messages) {
                        assert!(Instant::now() < deadline, "{test}: the subscriber stalled");
                        publisher.flush();
                        publisher.poll();
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                publisher.close_async().await
            });
            common::wait_until("every message", common::STALL, || {
                sub.stats().messages == MESSAGES
            });
            assert_eq!(stats.messages, MESSAGES, "{test}: {stats:?}");
            assert_eq!(stats.send_errors, 0, "{test}: {stats:?}");
            assert_eq!(sub.stats().gaps, 0, "{test}");
        }
    }
}
