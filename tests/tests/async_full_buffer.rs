//! The publisher's async offer on the mmsg fallback never waits in the kernel: two hosts
//! (network namespaces) joined by a veth pair whose sending end is shaped by a token
//! bucket (`tc tbf`, 8 Mbit/s), so the publisher's socket buffer fills and a plain
//! `sendmmsg` would block its thread. `offer_async` instead leaves what the full socket
//! refuses queued and yields to the executor (its future is pending), and every message
//! still arrives, in order.
//!
//! Needs root (namespaces), `tc` (iproute2) and the kernel's tbf qdisc; without root it
//! prints why and skips (except under CI, which must run it), and so it does on a kernel
//! without tbf.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::process::Command;
use std::task::Poll;
use std::time::Duration;

use multipoint::{BackendChoice, PublisherConfig, Session, SubscriptionConfig};
use multipoint_tests::netns::wait_until;
use multipoint_tests::stream::{publisher_on_eth0, subscribe_on_eth0};
use multipoint_tests::{lab_or_skip, Lab};

const MESSAGES: u64 = 10_000;
const SIZE: usize = 100;

#[test]
fn offer_async_on_mmsg_yields_instead_of_waiting_in_the_kernel_for_a_full_socket() {
    let test = "offer_async_full_socket";
    let mut lab: Lab = lab_or_skip!(test);
    let (a, b) = (lab.host("pub"), lab.host("sub"));
    lab.link(&a, "eth0", &["10.79.0.1/24"], &b, "eth0", &["10.79.0.2/24"]);
    let shaped = Command::new("ip")
        .args([
            "netns",
            "exec",
            a.namespace(),
            "tc",
            "qdisc",
            "add",
            "dev",
            "eth0",
        ])
        .args([
            "root", "tbf", "rate", "8mbit", "burst", "32kb", "latency", "2s",
        ])
        .output()
        .expect("running tc (iproute2)");
    let why = String::from_utf8_lossy(&shaped.stderr);
    if !shaped.status.success() && why.contains("unknown") {
        // A kernel without the tbf qdisc (sch_tbf): a kernel feature this test needs.
        eprintln!("{test}: skipped: this kernel has no tbf qdisc: {why}");
        return;
    }
    assert!(shaped.status.success(), "tc tbf: {why}");
    let group: SocketAddr = "239.255.79.1:31079".parse().unwrap();
    let session = Session::new("FULLBUF").unwrap();
    let (shards, sub) = subscribe_on_eth0(
        &b,
        SubscriptionConfig {
            session: Some(session),
            recv_buffer: 8 << 20,
            ..SubscriptionConfig::new(group)
        },
        |_: u64, _: &[u8]| {},
    );
    let mut publisher = publisher_on_eth0(
        &a,
        PublisherConfig {
            backend: BackendChoice::Mmsg,
            ..PublisherConfig::new(session, group)
        },
    );
    // A small send buffer, so that it fills behind the shaper (the publisher asks for a
    // deep one).
    publisher
        .socket()
        .expect("a host socket")
        .set_send_buffer_size(64 << 10)
        .unwrap();
    // Give the membership report a moment.
    std::thread::sleep(Duration::from_millis(200));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let message = [7u8; SIZE];
    let (pending, stats) = runtime.block_on(async {
        let mut pending = 0u64;
        for sequence in 1..=MESSAGES {
            let mut offer = pin!(publisher.offer_async(&message));
            let taken = poll_fn(|cx| match offer.as_mut().poll(cx) {
                Poll::Pending => {
                    pending += 1;
                    Poll::Pending
                }
                ready => ready,
            })
            .await;
            assert_eq!(taken.unwrap(), sequence);
        }
        (pending, publisher.close_async().await)
    });
    // 1 MB through 8 Mbit/s behind a 64 KiB socket buffer: it filled, and the offers
    // yielded.
    assert!(pending > 0, "no offer ever waited: {stats:?}");
    assert_eq!(
        (stats.messages, stats.send_errors),
        (MESSAGES, 0),
        "{stats:?}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || sub.stats().end_of_session > 0),
        "{:?}",
        sub.stats()
    );
    let st = sub.close().unwrap().stats;
    shards.shutdown();
    eprintln!("{test}: {pending} pending polls; publisher {stats:?}");
    assert_eq!(
        (st.messages, st.missing, st.gaps),
        (MESSAGES, 0, 0),
        "{st:?}"
    );
}
