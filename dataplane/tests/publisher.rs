//! The publisher's contract: when packets leave (full, flush, maximum delay), heartbeats
//! while idle, end of session on drop, sequence numbers from 1, refusals that lose
//! nothing, and a publisher that moves between threads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    loopback_publisher, loopback_subscription, shards_on, start_or_skip, wait_for, BACKENDS,
};
use multipoint_dataplane::{
    wire::Session, BackendChoice, Handler, OfferError, Publisher, PublisherConfig, Shards,
    Subscription, SubscriptionConfig,
};

/// Shards on `backend`, a subscription to group `239.255.110.last` that does nothing with
/// its messages, and a publisher to it (its configuration tuned by `tune`); `None` when the
/// backend cannot run here.
fn setup(
    test: &str,
    backend: BackendChoice,
    last: u8,
    tune: impl FnOnce(&mut PublisherConfig),
) -> Option<(Shards, Subscription<impl Handler>, Publisher)> {
    let group = common::group(110, last);
    let mut shards = start_or_skip(test, shards_on(backend))?;
    // The session is named: the stream locks at its first packet (an unnamed one waits
    // for three, and some of these tests send fewer).
    let named = SubscriptionConfig {
        session: Some(Session::new("PUBTEST").unwrap()),
        ..loopback_subscription(group)
    };
    let sub = shards.subscribe(named, |_: u64, _: &[u8]| {}).unwrap();
    let mut config = loopback_publisher(backend, "PUBTEST", group);
    tune(&mut config);
    Some((shards, sub, Publisher::new(config).unwrap()))
}

/// Polls the publisher until `cond` holds or `timeout` passes; returns whether it held.
fn poll_until(p: &mut Publisher, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || {
        p.poll();
        cond()
    })
}

#[test]
fn sequence_numbers_start_at_one_and_an_oversized_message_is_refused_without_loss() {
    for backend in BACKENDS {
        let Some((_shards, sub, mut p)) = setup("sequence", backend, 1, |_| {}) else {
            return;
        };
        let too_big = vec![7u8; p.max_message() + 1];
        assert_eq!(
            p.offer(&too_big),
            Err(OfferError::TooLarge {
                len: too_big.len(),
                limit: p.max_message()
            })
        );
        assert_eq!(
            p.next_sequence(),
            1,
            "a refused message takes no sequence number"
        );
        assert_eq!(
            p.offer(&vec![1u8; p.max_message()]).unwrap(),
            1,
            "the largest that fits"
        );
        assert_eq!(p.offer(b"second").unwrap(), 2);
        p.flush();
        assert!(poll_until(&mut p, Duration::from_secs(5), || {
            sub.stats().messages == 2
        }));
        assert_eq!(sub.stats().gaps, 0);
    }
}

#[test]
fn an_open_packet_waits_for_flush_or_the_maximum_delay_but_a_full_one_leaves() {
    for backend in BACKENDS {
        // A delay no test outlasts: only flush or a full packet sends.
        let Some((_shards, sub, mut p)) = setup("delay", backend, 2, |c| {
            c.max_delay = Duration::from_secs(3600)
        }) else {
            return;
        };
        p.offer(b"waits").unwrap();
        assert!(!poll_until(&mut p, Duration::from_millis(200), || {
            sub.stats().messages > 0
        }));
        p.flush();
        assert!(poll_until(&mut p, Duration::from_secs(5), || {
            sub.stats().messages == 1
        }));

        // Enough 100-byte messages for more than one packet: the first leaves full,
        // without a flush, and the rest waits.
        let per_packet = (1472 - 20) / 102;
        for _ in 0..per_packet + 1 {
            p.offer(&[5u8; 100]).unwrap();
        }
        assert!(poll_until(&mut p, Duration::from_secs(5), || {
            sub.stats().messages == 1 + per_packet as u64
        }));
        assert!(!poll_until(&mut p, Duration::from_millis(200), || {
            sub.stats().messages > 1 + per_packet as u64
        }));

        // With a short delay, poll sends the open packet by itself.
        let Some((_shards, sub, mut p)) = setup("delay", backend, 3, |c| {
            c.max_delay = Duration::from_millis(5)
        }) else {
            return;
        };
        p.offer(b"leaves on its own").unwrap();
        assert!(poll_until(&mut p, Duration::from_secs(5), || {
            sub.stats().messages == 1
        }));
    }
}

#[test]
fn an_idle_publisher_sends_heartbeats_with_the_next_sequence_number() {
    for backend in BACKENDS {
        let Some((_shards, sub, mut p)) = setup("heartbeat", backend, 4, |c| {
            c.heartbeat = Duration::from_millis(20)
        }) else {
            return;
        };
        for i in 0..5u8 {
            p.offer(&[i]).unwrap();
        }
        p.flush();
        assert!(poll_until(&mut p, Duration::from_secs(5), || {
            sub.stats().heartbeats >= 3
        }));
        let stats = sub.stats();
        assert_eq!(stats.messages, 5);
        assert_eq!(
            (stats.gaps, stats.missing),
            (0, 0),
            "heartbeats carry the next number"
        );
        assert!(p.stats().heartbeats >= 3);
    }
}

#[test]
fn dropping_a_publisher_ends_the_session() {
    for backend in BACKENDS {
        let Some((_shards, sub, mut p)) = setup("drop", backend, 5, |_| {}) else {
            return;
        };
        p.offer(b"last words").unwrap();
        drop(p); // no flush: dropping sends what is pending, then end of session
        wait_for(Duration::from_secs(5), || sub.stats().end_of_session > 0);
        let stats = sub.stats();
        assert_eq!((stats.messages, stats.end_of_session), (1, 1), "{stats:?}");
    }
}

#[test]
fn a_publisher_made_on_one_thread_publishes_from_another() {
    for backend in BACKENDS {
        let Some((_shards, sub, p)) = setup("threads", backend, 6, |_| {}) else {
            return;
        };
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        let stats = std::thread::spawn(move || {
            let mut p = p;
            for i in 0..10_000u32 {
                common::offer(&mut p, &i.to_be_bytes());
                counter.fetch_add(1, Ordering::Relaxed);
            }
            p.close()
        })
        .join()
        .unwrap();
        assert_eq!(stats.send_errors, 0, "{stats:?}");
        wait_for(Duration::from_secs(5), || sub.stats().end_of_session > 0);
        assert_eq!(sub.stats().messages, sent.load(Ordering::Relaxed));
        assert_eq!(sub.stats().gaps, 0);
    }
}
