//! Shards: subscriptions are spread over them round robin and each gets only its own
//! group; a subscription can name its shard but not one that does not exist; shutting
//! down joins every thread even with subscriptions open; and a subscription with
//! timestamps on records one latency sample per message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::Duration;

use common::{
    await_end_of_session, flush_and_wait, free_port, group, loopback_subscription as subscription,
    new_publisher, publish_with, shards_on, start_or_skip, wait_until, BACKENDS, STALL,
};
use multipoint_dataplane::latency::{self, STAMP_LEN};
use multipoint_dataplane::{
    BackendChoice, Error, Handler, ShardConfig, Shards, Subscription, SubscriptionConfig,
};

const WINDOW: u64 = 3_000;

/// Two shards on the default backend, otherwise the defaults.
fn two_shards() -> ShardConfig {
    ShardConfig {
        shards: 2,
        ..ShardConfig::default()
    }
}

/// `count` subscriptions to `group` that do nothing with their messages.
fn idle_subscriptions(
    shards: &mut Shards,
    group: SocketAddr,
    count: usize,
) -> Vec<Subscription<impl Handler>> {
    (0..count)
        .map(|_| {
            shards
                .subscribe(subscription(group), |_: u64, _: &[u8]| {})
                .unwrap()
        })
        .collect()
}

/// Counts messages by the tag in their first byte.
struct Tally {
    tag: u8,
    mine: u64,
    others: u64,
}

impl Handler for Tally {
    fn on_message(&mut self, _sequence: u64, message: &[u8]) {
        if message.first() == Some(&self.tag) {
            self.mine += 1;
        } else {
            self.others += 1;
        }
    }
}

/// Writes a message of 16 bytes tagged `tag`.
fn tagged(tag: u8) -> impl FnMut(u64, &mut [u8; common::MAX_LEN]) -> usize {
    move |seq, buf| {
        buf[0] = tag;
        buf[1..9].copy_from_slice(&seq.to_le_bytes());
        16
    }
}

#[test]
fn subscriptions_are_spread_over_shards_and_each_receives_only_its_own_group() {
    let Some(mut shards) = start_or_skip("spread", two_shards()) else {
        return;
    };
    assert_eq!(shards.len(), 2);
    // Four groups on one port: only the group tells their traffic apart.
    let port = free_port();
    let groups: Vec<SocketAddr> = (1..=4u8)
        .map(|i| SocketAddr::from((Ipv4Addr::new(239, 255, 104, i), port)))
        .collect();
    let subs: Vec<_> = groups
        .iter()
        .zip(1u8..)
        .map(|(&g, tag)| {
            let tally = Tally {
                tag,
                mine: 0,
                others: 0,
            };
            shards.subscribe(subscription(g), tally).unwrap()
        })
        .collect();
    assert_eq!(
        subs.iter().map(|s| s.shard()).collect::<Vec<_>>(),
        [0, 1, 0, 1]
    );

    // Group i gets 1000 * i messages, so that any mix-up shows in the counts.
    let expected = |tag: u8| 1_000 * u64::from(tag);
    for (&g, tag) in groups.iter().zip(1u8..) {
        let mut p = new_publisher(BackendChoice::Auto, &format!("GROUP{tag}"), g);
        let sub = &subs[usize::from(tag - 1)];
        let received = || sub.stats().messages;
        publish_with(&mut p, 1..=expected(tag), WINDOW, received, tagged(tag));
        flush_and_wait(&mut p, "a group's messages", || received() >= expected(tag));
        p.close();
    }
    wait_until("every end of session", STALL, || {
        subs.iter().all(|s| s.stats().end_of_session >= 1)
    });
    for (sub, tag) in subs.into_iter().zip(1u8..) {
        let closed = sub.close().unwrap();
        let stats = closed.stats;
        assert_eq!(closed.handler.mine, expected(tag), "group {tag}: {stats:?}");
        assert_eq!(closed.handler.others, 0, "group {tag}: {stats:?}");
        assert_eq!(stats.messages, expected(tag), "group {tag}: {stats:?}");
        assert_eq!(
            (stats.other_session, stats.end_of_session, stats.gaps),
            (0, 1, 0),
            "group {tag}: {stats:?}"
        );
    }
    shards.shutdown();
}

#[test]
fn a_subscription_goes_to_the_shard_it_names_and_a_missing_shard_is_an_error() {
    let Some(mut shards) = start_or_skip("named shard", two_shards()) else {
        return;
    };
    let g = group(104, 5);
    for shard in [1, 1, 0] {
        let config = SubscriptionConfig {
            shard: Some(shard),
            ..subscription(g)
        };
        // Each subscription has its own socket and membership; one group is fine.
        let sub = shards.subscribe(config, |_: u64, _: &[u8]| {}).unwrap();
        assert_eq!(sub.shard(), shard);
        sub.close().unwrap();
    }
    for shard in [2, 3, usize::MAX] {
        let config = SubscriptionConfig {
            shard: Some(shard),
            ..subscription(g)
        };
        match shards.subscribe(config, |_: u64, _: &[u8]| {}) {
            Err(Error::Config(msg)) => {
                assert!(msg.contains(&format!("shard {shard}")), "{msg}");
            }
            other => panic!("shard {shard} of 2: expected a configuration error, got {other:?}"),
        }
    }
    shards.shutdown();
}

#[test]
fn shutdown_joins_every_shard_while_subscriptions_are_still_open() {
    for backend in BACKENDS {
        let test = format!("shutdown, {backend:?}");
        let config = ShardConfig {
            shards: 2,
            ..shards_on(backend)
        };
        let Some(mut shards) = start_or_skip(&test, config) else {
            continue;
        };
        let g = group(104, 6);
        let subs = idle_subscriptions(&mut shards, g, 4);
        let mut p = new_publisher(BackendChoice::Auto, "SHUTDOWN", g);
        let slowest = || subs.iter().map(|s| s.stats().messages).min().unwrap_or(0);
        publish_with(&mut p, 1..=2_000, WINDOW, slowest, tagged(1));
        flush_and_wait(&mut p, "the messages", || slowest() == 2_000);

        // Shut down on another thread, so that a hang fails the test instead of
        // stalling it.
        let (done_tx, done_rx) = mpsc::channel();
        let stopper = std::thread::spawn(move || {
            shards.shutdown();
            done_tx.send(()).unwrap();
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{test}: shutdown did not return: {e}"));
        stopper.join().unwrap();

        // The shards are gone: the subscriptions say so, and nothing is received any more.
        p.offer(b"after shutdown").unwrap();
        p.flush();
        drop(p);
        std::thread::sleep(Duration::from_millis(50));
        for sub in subs {
            let stats = sub.stats();
            assert_eq!(stats.messages, 2_000, "{test}: {stats:?}");
            assert_eq!(stats.end_of_session, 0, "{test}: {stats:?}");
            let shard = sub.shard();
            assert!(
                matches!(sub.take_latency(), Err(Error::ShardGone(s)) if s == shard),
                "{test}: take_latency after shutdown"
            );
            match sub.close() {
                Err(Error::ShardGone(s)) => assert_eq!(s, shard),
                Err(e) => panic!("{test}: close after shutdown failed with {e}"),
                Ok(closed) => panic!("{test}: closed after shutdown: {:?}", closed.stats),
            }
        }
    }
}

#[test]
fn dropping_the_shards_joins_every_thread_while_subscriptions_are_still_open() {
    let Some(mut shards) = start_or_skip("drop", two_shards()) else {
        return;
    };
    let subs = idle_subscriptions(&mut shards, group(104, 7), 2);
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(shards);
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("dropping the shards did not return");
    for sub in subs {
        assert!(matches!(sub.close(), Err(Error::ShardGone(_))));
    }
}

#[test]
fn a_timestamped_subscription_records_one_latency_per_message() {
    const MESSAGES: u64 = 5_000;
    for (backend, last) in BACKENDS.into_iter().zip([8, 9]) {
        let test = format!("latency, {backend:?}");
        let Some(mut shards) = start_or_skip(&test, shards_on(backend)) else {
            continue;
        };
        let g = group(104, last);
        let sub = shards
            .subscribe(
                SubscriptionConfig {
                    timestamps: true,
                    ..subscription(g)
                },
                |_: u64, _: &[u8]| {},
            )
            .unwrap();
        let mut p = new_publisher(backend, "LATENCY", g);
        let received = || sub.stats().messages;
        publish_with(&mut p, 1..=MESSAGES, WINDOW, received, |_, buf| {
            assert!(latency::write_stamp(&mut buf[..32], latency::now_ns()));
            32
        });
        flush_and_wait(&mut p, "the messages", || received() == MESSAGES);

        let histogram = sub.take_latency().unwrap();
        let pct = histogram.percentiles();
        assert_eq!(histogram.len(), MESSAGES, "{test}: {pct}");
        assert_eq!(pct.count, MESSAGES, "{test}: {pct}");
        assert_eq!(
            (histogram.skewed(), histogram.clamped()),
            (0, 0),
            "{test}: {pct}"
        );
        assert!(pct.min > 0 && pct.p50 > 0, "{test}: {pct}");
        assert!(
            pct.min <= pct.p50 && pct.p50 <= pct.p99 && pct.p99 <= pct.max,
            "{test}: {pct}"
        );
        assert!(pct.max < 10_000_000_000, "{test}: {pct}");

        // Taking leaves an empty histogram behind; messages shorter than a stamp are not
        // measured.
        assert!(sub.take_latency().unwrap().is_empty(), "{test}");
        publish_with(
            &mut p,
            MESSAGES + 1..=MESSAGES + 10,
            WINDOW,
            received,
            |_, _| STAMP_LEN - 1,
        );
        let published = p.close();
        await_end_of_session(std::slice::from_ref(&sub));
        let closed = sub.close().unwrap();
        assert_eq!(closed.stats.messages, published.messages, "{test}");
        assert!(
            closed.latency.is_empty(),
            "{test}: {}",
            closed.latency.percentiles()
        );
        shards.shutdown();
    }
}
