//! `multipoint sub --kernel-stamps` and `multipoint pub --tx-stamps` on loopback: the
//! JSON of each carries the kernel's share of latency (`wire_to_app_ns` with its
//! counters and what loopback said about hardware stamps; `send_to_wire_ns` with the
//! sampler's counters), and the same fields are `null` without the options.
//!
//! The kernel turns its receive stamping on from a work queue a moment after the first
//! socket of the host asked for it: until then datagrams come unstamped. The test holds a
//! stamping socket of its own, and waits until a datagram to it comes stamped, before
//! `pub` starts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use common::{last_json, pub_to_sub, turn, u64_of};
use multipoint_control::socket2::Socket;
use multipoint_dataplane::{
    BackendChoice, KernelStamps, ShardConfig, Shards, Subscription, SubscriptionConfig,
};
use serde_json::Value;

/// Counts nothing: the keep-alive subscription's handler.
struct Ignore;

impl multipoint_dataplane::Handler for Ignore {
    fn on_message(&mut self, _sequence: u64, _message: &[u8]) {}
}

/// A unicast subscription with kernel stamps on, once a datagram to it came stamped.
fn receive_stamping_on() -> (Shards, Subscription<Ignore>) {
    let mut shards = Shards::start(ShardConfig {
        backend: BackendChoice::Mmsg,
        ..ShardConfig::default()
    })
    .unwrap();
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let to = socket.local_addr().unwrap();
    let sub = shards
        .subscribe_socket(
            Socket::from(socket),
            SubscriptionConfig {
                kernel_stamps: KernelStamps::Software,
                ..SubscriptionConfig::new(to)
            },
            Ignore,
        )
        .unwrap();
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        sender.send_to(&[0u8; 20], to).unwrap();
        std::thread::sleep(Duration::from_millis(1));
        if sub.take_kernel_latency().unwrap().stats.stamped > 0 {
            return (shards, sub);
        }
        assert!(Instant::now() < deadline, "no datagram was ever stamped");
    }
}

/// Percentiles present and in order; returns the count.
fn percentiles(report: &Value, key: &str) -> u64 {
    let l = &report[key];
    let (p50, p99, max) = (
        l["p50"]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}.p50: {report}")),
        l["p99"].as_u64().unwrap(),
        l["max"].as_u64().unwrap(),
    );
    assert!(p50 <= p99 && p99 <= max, "{key}: {report}");
    l["count"].as_u64().unwrap()
}

/// The JSON reports of pub and of sub from [`pub_to_sub`], pub's read first.
fn reports_of_pub_to_sub(sub_args: &str, pub_args: &str) -> (Value, Value) {
    let (published, sub) = pub_to_sub(sub_args, pub_args);
    let published = last_json(&published);
    (published, last_json(&sub.finish()))
}

#[test]
fn pub_and_sub_report_the_kernels_share_of_latency_in_json() {
    let _turn = turn();
    let _stamping = receive_stamping_on();
    let (published, received) = reports_of_pub_to_sub(
        "--secs 10 --json --kernel-stamps --session KSTAMP",
        "--count 20000 --rate 50000 --json --session KSTAMP --tx-stamps --tx-stamp-every 10",
    );

    let sends = u64_of(&published, "sends");
    let tx = &published["tx_stamps"];
    assert_eq!(tx["every"], 10, "{published}");
    assert_eq!(u64_of(tx, "sends"), sends, "{published}");
    assert_eq!(
        u64_of(tx, "sampled") + u64_of(tx, "skipped"),
        sends.div_ceil(10),
        "{published}"
    );
    assert!(u64_of(tx, "recorded") > 0, "{published}");
    assert_eq!(
        percentiles(&published, "send_to_wire_ns"),
        u64_of(tx, "recorded"),
        "{published}"
    );

    let messages = u64_of(&received, "messages");
    assert_eq!(messages, 20_000, "{received}");
    // A named session locks at its first packet: every message gets its sample.
    assert_eq!(
        percentiles(&received, "wire_to_app_ns"),
        messages,
        "{received}"
    );
    let k = &received["kernel_stamps"];
    assert!(u64_of(k, "stamped") > 0, "{received}");
    assert_eq!(u64_of(k, "malformed"), 0, "{received}");
    assert_eq!(u64_of(k, "control_truncated"), 0, "{received}");
    let hardware = k["hardware"].as_str().unwrap();
    assert!(
        hardware.starts_with("hardware stamps: unavailable on lo ("),
        "{received}"
    );
}

#[test]
fn without_the_options_the_kernel_fields_are_null() {
    let _turn = turn();
    let (published, received) = reports_of_pub_to_sub(
        "--secs 10 --json --session KNONE",
        "--count 1000 --json --session KNONE",
    );
    assert!(published["send_to_wire_ns"].is_null(), "{published}");
    assert!(published["tx_stamps"].is_null(), "{published}");
    assert!(received["wire_to_app_ns"].is_null(), "{received}");
    assert!(received["kernel_stamps"].is_null(), "{received}");
}
