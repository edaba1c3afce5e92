//! The kernel's share of latency on loopback, on io_uring and on the mmsg fallback:
//! kernel receive stamps give every message delivered as its datagram arrives one
//! wire→application sample, never above the end-to-end latency of the same messages; a
//! publisher sampling one send in N gets its send→wire samples from the error queue, no
//! more than the rule allows; without the settings nothing is recorded; and loopback
//! reports no hardware stamps.
//!
//! The kernel stamps received packets only while some socket asks for it, and turns
//! that on from a work queue a moment after the first socket asked (a static key): until
//! then datagrams come unstamped (counted as such). Each test therefore first holds a
//! stamping socket of its own and waits until a datagram to it comes stamped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use common::{
    group, loopback_publisher, named, offer, start_or_skip, started_or_skip, wait_for, Net,
};
use multipoint_dataplane::latency::{now_ns, write_stamp};
use multipoint_dataplane::{
    BackendChoice, KernelStamps, Publisher, PublisherConfig, ShardConfig, Shards, Subscription,
    SubscriptionConfig,
};

const MESSAGES: u64 = 3_000;
const WAIT: Duration = Duration::from_secs(20);

/// Counts messages.
#[derive(Default)]
struct Count(u64);

impl multipoint_dataplane::Handler for Count {
    fn on_message(&mut self, _sequence: u64, _message: &[u8]) {
        self.0 += 1;
    }
}

/// A unicast subscription with kernel stamps on, once a datagram to it came stamped: the
/// kernel's receive stamping is on for as long as it is held.
fn receive_stamping_on(test: &str) -> Option<(Shards, Subscription<Count>)> {
    let mut shards = start_or_skip(
        test,
        Net::Host(BackendChoice::Mmsg).shards(ShardConfig::default()),
    )?;
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let to = socket.local_addr().unwrap();
    let sub = shards
        .subscribe_socket(
            socket2::Socket::from(socket),
            SubscriptionConfig {
                kernel_stamps: KernelStamps::Software,
                ..SubscriptionConfig::new(to)
            },
            Count::default(),
        )
        .unwrap();
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut stamped = 0;
    let on = wait_for(WAIT, || {
        sender.send_to(&[0u8; 20], to).unwrap();
        stamped += sub.take_kernel_latency().unwrap().stats.stamped;
        stamped > 0
    });
    assert!(on, "{test}: no received datagram was ever stamped");
    Some((shards, sub))
}

/// Publishes `MESSAGES` stamped 32-byte messages, flushing every 10 so that many
/// datagrams (and sends) carry them.
fn publish(publisher: &mut Publisher) {
    let mut msg = [0u8; 32];
    for i in 0..MESSAGES {
        write_stamp(&mut msg, now_ns());
        offer(publisher, &msg);
        if i % 10 == 9 {
            publisher.flush();
        }
    }
    publisher.flush();
}

fn wire_to_app_is_recorded_per_message_and_never_above_end_to_end(
    test: &str,
    backend: BackendChoice,
    gro: bool,
) {
    let Some(_stamping) = receive_stamping_on(test) else {
        return;
    };
    let Some(mut shards) = start_or_skip(
        test,
        Net::Host(backend).shards(ShardConfig {
            gro,
            ..ShardConfig::default()
        }),
    ) else {
        return;
    };
    let group = group(15, 1);
    let sub = shards
        .subscribe(
            SubscriptionConfig {
                timestamps: true,
                kernel_stamps: KernelStamps::Software,
                // A named session locks at its first packet: no message waits in the lock.
                ..named("STAMPS", group)
            },
            Count::default(),
        )
        .unwrap();
    let Some(mut publisher) = started_or_skip(
        test,
        "the publisher",
        Publisher::new(loopback_publisher(backend, "STAMPS", group)),
    ) else {
        return;
    };
    publish(&mut publisher);
    assert!(
        wait_for(WAIT, || {
            publisher.poll();
            sub.stats().messages >= MESSAGES
        }),
        "{test}: {:?}",
        sub.stats()
    );
    let closed = sub.close().unwrap();
    let stats = closed.stats;
    let kernel = &closed.kernel;
    assert_eq!(stats.messages, MESSAGES, "{test}: {stats:?}");
    // The rule: one sample per message delivered as its datagram arrived (here, all).
    assert_eq!(
        kernel.wire_to_app.len(),
        stats.messages,
        "{test}: {kernel:?}"
    );
    assert_eq!(closed.latency.len(), stats.messages, "{test}");
    // Every datagram the kernel handed over carried its stamp.
    assert_eq!(kernel.stats.stamped, stats.datagrams, "{test}: {kernel:?}");
    assert_eq!(kernel.stats.unstamped, 0, "{test}: {kernel:?}");
    assert_eq!(kernel.stats.malformed, 0, "{test}: {kernel:?}");
    assert_eq!(kernel.stats.control_truncated, 0, "{test}: {kernel:?}");
    assert_eq!(stats.truncated, 0, "{test}: {stats:?}");
    assert_eq!(
        kernel.stats.negative, 0,
        "{test}: a stamp after the handler's clock (was the realtime clock stepped?)"
    );
    // Each message was stamped by the kernel after the publisher wrote its payload stamp,
    // and the realtime clock is read before the latency clock: per message, wire→app ≤
    // end to end, so every quantile of the one is at most the same of the other.
    let wire = kernel.wire_to_app.percentiles();
    let e2e = closed.latency.percentiles();
    eprintln!(
        "{test}: wire→app {wire}\n{test}: end to end {e2e}\n{test}: {kernel:?}",
        kernel = kernel.stats
    );
    assert!(wire.p50 <= e2e.p50, "{test}: p50 {wire} against {e2e}");
    assert!(wire.p99 <= e2e.p99, "{test}: p99 {wire} against {e2e}");
    assert!(wire.max <= e2e.max, "{test}: max {wire} against {e2e}");
    assert!(kernel
        .hardware
        .starts_with("hardware stamps: unavailable on lo ("));
    let _ = publisher.close();
    shards.shutdown();
}

#[test]
fn uring_kernel_stamps_give_each_message_a_wire_to_app_sample_within_end_to_end() {
    wire_to_app_is_recorded_per_message_and_never_above_end_to_end(
        "uring_kernel_stamps",
        BackendChoice::Uring,
        false,
    );
}

#[test]
fn uring_with_gro_every_message_of_a_coalesced_datagram_gets_its_stamp() {
    wire_to_app_is_recorded_per_message_and_never_above_end_to_end(
        "uring_kernel_stamps_gro",
        BackendChoice::Uring,
        true,
    );
}

#[test]
fn mmsg_kernel_stamps_give_each_message_a_wire_to_app_sample_within_end_to_end() {
    wire_to_app_is_recorded_per_message_and_never_above_end_to_end(
        "mmsg_kernel_stamps",
        BackendChoice::Mmsg,
        true,
    );
}

fn one_send_in_n_gets_a_send_to_wire_sample(test: &str, backend: BackendChoice, gso: bool) {
    const EVERY: u32 = 4;
    let group = group(15, 2);
    let Some(mut publisher) = started_or_skip(
        test,
        "the publisher",
        Publisher::new(PublisherConfig {
            tx_stamp_every: EVERY,
            gso,
            ..loopback_publisher(backend, "TXSTAMP", group)
        }),
    ) else {
        return;
    };
    publish(&mut publisher);
    let latency = publisher.send_latency(WAIT).unwrap();
    let sends = publisher.stats().sends;
    let s = latency.stats;
    eprintln!(
        "{test}: send→wire {}\n{test}: {s:?}",
        latency.send_to_wire.percentiles()
    );
    assert_eq!(
        s.sends, sends,
        "{test}: every send went past the sampler: {s:?}"
    );
    // The rule: the first send and every EVERY-th after it is due; a due send is sampled
    // unless every place for a waiting sample is taken.
    assert_eq!(
        s.sampled + s.skipped,
        sends.div_ceil(u64::from(EVERY)),
        "{test}: {s:?}"
    );
    assert!(s.recorded + s.expired <= s.sampled, "{test}: {s:?}");
    assert_eq!(latency.send_to_wire.len(), s.recorded, "{test}: {s:?}");
    assert!(s.recorded > 0, "{test}: no stamp came back: {s:?}");
    assert_eq!(
        s.unmatched, 0,
        "{test}: a stamp under a key never sampled: {s:?}"
    );
    let _ = publisher.close();
}

#[test]
fn uring_publisher_samples_one_send_in_n_for_send_to_wire() {
    one_send_in_n_gets_a_send_to_wire_sample("uring_tx_stamps", BackendChoice::Uring, false);
}

#[test]
fn uring_publisher_samples_gso_sends_for_send_to_wire() {
    one_send_in_n_gets_a_send_to_wire_sample("uring_tx_stamps_gso", BackendChoice::Uring, true);
}

#[test]
fn mmsg_publisher_samples_one_send_in_n_for_send_to_wire() {
    one_send_in_n_gets_a_send_to_wire_sample("mmsg_tx_stamps", BackendChoice::Mmsg, true);
}

#[test]
fn without_the_settings_nothing_is_stamped_or_recorded() {
    let test = "stamps_off";
    let backend = BackendChoice::Mmsg;
    let Some(mut shards) = start_or_skip(test, Net::Host(backend).shards(ShardConfig::default()))
    else {
        return;
    };
    let group = group(15, 3);
    let sub = shards
        .subscribe(named("NOSTAMP", group), Count::default())
        .unwrap();
    let mut publisher = Publisher::new(loopback_publisher(backend, "NOSTAMP", group)).unwrap();
    publish(&mut publisher);
    assert!(wait_for(WAIT, || {
        publisher.poll();
        sub.stats().messages >= MESSAGES
    }));
    assert!(publisher.send_latency(Duration::ZERO).is_none());
    let taken = sub.take_kernel_latency().unwrap();
    assert!(taken.wire_to_app.is_empty());
    let closed = sub.close().unwrap();
    assert!(closed.kernel.wire_to_app.is_empty());
    assert_eq!(closed.kernel.stats.stamped, 0);
    assert!(closed.kernel.hardware.is_empty());
    let _ = publisher.close();
    shards.shutdown();
}

mod receive_state {
    //! The rule, on the sans-IO receive state with made-up stamps and clocks: one sample
    //! per message delivered as its datagram is handled, none for what a hold delivers
    //! later, nothing without kernel stamps; stamps that cannot be read are counted.

    use std::net::SocketAddr;
    use std::time::Duration;

    use multipoint_dataplane::core::receive::{DatagramInfo, ReceiveConfig, ReceiveState};
    use multipoint_dataplane::core::stamps::RxStamp;
    use multipoint_dataplane::wire::{pack_all, Session};

    use super::Count;

    fn session() -> Session {
        Session::new("RULE").unwrap()
    }

    /// Packets 1..=`n`, three 8-byte messages each.
    fn packets(n: u8) -> Vec<Vec<u8>> {
        let msgs: Vec<[u8; 8]> = (0..n * 3).map(|i| [i; 8]).collect();
        // 20-byte header + 3 × (2 + 8) bytes.
        pack_all(&session(), 1, 50, msgs.iter().map(|m| &m[..])).unwrap()
    }

    fn stamped(wire_ns: u64, app_ns: u64) -> DatagramInfo {
        DatagramInfo {
            source: Some(SocketAddr::from(([127, 0, 0, 1], 4000))),
            kernel_stamp: RxStamp {
                wire_ns: Some(wire_ns),
                app_ns,
                ..RxStamp::default()
            },
            ..DatagramInfo::default()
        }
    }

    #[test]
    fn each_message_delivered_on_arrival_gets_its_datagrams_latency() {
        let mut state = ReceiveState::new(&ReceiveConfig {
            session: Some(session()),
            kernel_stamps: true,
            ..ReceiveConfig::default()
        });
        assert!(state.wants_realtime());
        let mut seen = Count::default();
        for (i, p) in packets(4).iter().enumerate() {
            let i = i as u64;
            state.handle_datagram(p, stamped(1_000 * i, 1_000 * i + 700 + i), 0, &mut seen);
        }
        let k = state.kernel_latency().unwrap();
        assert_eq!(seen.0, 12);
        assert_eq!(k.wire_to_app.len(), 12, "one per message");
        assert_eq!(k.wire_to_app.percentiles().min, 700);
        assert_eq!(k.wire_to_app.percentiles().max, 703);
        assert_eq!(k.stats.stamped, 4);
    }

    #[test]
    fn what_a_reorder_window_held_is_delivered_without_a_sample() {
        let mut state = ReceiveState::new(&ReceiveConfig {
            session: Some(session()),
            kernel_stamps: true,
            reorder_window: Duration::from_millis(1),
            ..ReceiveConfig::default()
        });
        let p = packets(3);
        let mut seen = Count::default();
        // 1, then 3 (held: 2 is missing), then 2, which lets 3 go.
        state.handle_datagram(&p[0], stamped(0, 10), 0, &mut seen);
        state.handle_datagram(&p[2], stamped(0, 30), 0, &mut seen);
        state.handle_datagram(&p[1], stamped(0, 20), 0, &mut seen);
        assert_eq!(seen.0, 9, "all delivered");
        let k = state.kernel_latency().unwrap();
        assert_eq!(
            k.wire_to_app.len(),
            6,
            "packet 3's three messages came from the hold"
        );
        assert_eq!(
            k.wire_to_app.percentiles().max,
            20,
            "none got packet 2's stamp twice"
        );
    }

    #[test]
    fn the_packets_held_until_the_lock_get_no_sample_and_the_rest_do() {
        // No session named: the stream locks at the third packet, replaying the first two
        // from the lock's hold (and the third, which came in with the lock).
        let mut state = ReceiveState::new(&ReceiveConfig {
            kernel_stamps: true,
            ..ReceiveConfig::default()
        });
        let mut seen = Count::default();
        for p in &packets(5) {
            state.handle_datagram(p, stamped(5, 9), 0, &mut seen);
        }
        assert_eq!(seen.0, 15);
        let k = state.kernel_latency().unwrap();
        assert_eq!(k.wire_to_app.len(), 6, "packets 4 and 5 only");
        assert_eq!(k.stats.stamped, 5);
    }

    #[test]
    fn unreadable_and_cut_stamps_are_counted_and_give_no_sample() {
        let mut state = ReceiveState::new(&ReceiveConfig {
            session: Some(session()),
            kernel_stamps: true,
            ..ReceiveConfig::default()
        });
        let p = packets(3);
        let mut seen = Count::default();
        let mut forged = stamped(0, 0);
        forged.kernel_stamp = RxStamp {
            malformed: true,
            app_ns: 50,
            ..RxStamp::default()
        };
        state.handle_datagram(&p[0], forged, 0, &mut seen);
        let mut cut = stamped(0, 0);
        cut.truncated = true;
        cut.kernel_stamp = RxStamp {
            control_truncated: true,
            app_ns: 60,
            ..RxStamp::default()
        };
        state.handle_datagram(&p[1], cut, 0, &mut seen);
        // A stamp after the handler's clock: recorded as 0, and counted.
        state.handle_datagram(&p[2], stamped(100, 40), 0, &mut seen);
        let k = state.kernel_latency().unwrap();
        let s = k.stats;
        assert_eq!((s.malformed, s.control_truncated, s.negative), (1, 1, 1));
        assert_eq!((s.stamped, s.unstamped), (1, 2));
        assert_eq!(
            state.stats().truncated,
            1,
            "a cut receive is dropped as before"
        );
        assert_eq!(k.wire_to_app.len(), 3);
        assert_eq!(k.wire_to_app.percentiles().max, 0);
    }

    #[test]
    fn without_kernel_stamps_nothing_is_read_or_recorded() {
        let mut state = ReceiveState::new(&ReceiveConfig {
            session: Some(session()),
            ..ReceiveConfig::default()
        });
        assert!(!state.wants_realtime());
        let mut seen = Count::default();
        state.handle_datagram(&packets(1)[0], stamped(1, 2), 0, &mut seen);
        assert_eq!(seen.0, 3);
        assert!(state.kernel_latency().is_none());
    }
}
