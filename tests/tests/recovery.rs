//! Recovery across real loss between two hosts: a publisher with a re-request server in
//! one network namespace, a subscriber that recovers in order in another, joined by a
//! veth pair; nftables on the subscriber's input drops a share of the stream's packets
//! at random (`numgen random mod 100 < N drop`). Every message must arrive, in order,
//! byte for byte, with nothing missing.
//!
//! Needs root (namespaces) and `nft` (nftables); without them the tests print why and
//! skip, except under CI, which installs both and must run them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{PublisherConfig, SubscriptionConfig};
use multipoint_tests::stream::{
    drop_on_input, end_and_linger, lossy_subscriber_server, nft_or_skip, patient_recovery,
    publish_paced, publisher_on_eth0, subscribe_on_eth0, Check,
};
use multipoint_tests::{lab_or_skip, Lab};

const MESSAGES: u64 = 1_000_000;
const RATE: u64 = 200_000;
const GROUP: &str = "239.255.77.1:31077";
const SERVER: &str = "10.77.0.1:31078";

/// The two runs take turns: each keeps a publisher, a shard and the kernel's veth busy,
/// and on a two-core machine two at once starve each other's shard.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn recovers_everything_through(loss_percent: u32, test: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab: Lab = lab_or_skip!(test);
    if !nft_or_skip(test) {
        return;
    }
    let (a, b) = (lab.host("pub"), lab.host("sub"));
    lab.link(&a, "eth0", &["10.77.0.1/24"], &b, "eth0", &["10.77.0.2/24"]);
    let group: SocketAddr = GROUP.parse().unwrap();
    let server: SocketAddr = SERVER.parse().unwrap();
    let rule = format!(
        "udp dport {} numgen random mod 100 < {loss_percent} counter drop",
        group.port()
    );
    drop_on_input(&b, &[rule]);

    let session = Session::new("LOSS").unwrap();
    let (shards, sub) = subscribe_on_eth0(
        &b,
        SubscriptionConfig {
            session: Some(session),
            recovery: Some(patient_recovery(server)),
            ..SubscriptionConfig::new(group)
        },
        Check::default(),
    );
    let mut publisher = publisher_on_eth0(
        &a,
        PublisherConfig {
            rerequest: Some(lossy_subscriber_server(server)),
            ..PublisherConfig::new(session, group)
        },
    );

    // Give the membership report a moment, then publish at RATE.
    std::thread::sleep(Duration::from_millis(200));
    publish_paced(&mut publisher, MESSAGES, RATE, |_| {});
    // Linger: serve the last re-requests (and repeat the end) until the subscriber has
    // everything.
    end_and_linger(&mut publisher, &sub, MESSAGES);
    let served = publisher.rerequest_stats().unwrap();
    let closed = sub.close().unwrap();
    shards.shutdown();
    drop(publisher);
    let st = closed.stats;
    let check = closed.handler;
    eprintln!(
        "{test}: {loss_percent}% loss: delivered {}, recovered {}, requests {}, retries {}, \
         given up {}, server {served:?}, recovery p50 {} µs p99 {} µs max {} µs",
        st.messages,
        st.recovered,
        st.requests,
        st.retries,
        st.gaps_given_up,
        closed.recovery.as_hdr().value_at_quantile(0.5) / 1_000,
        closed.recovery.as_hdr().value_at_quantile(0.99) / 1_000,
        closed.recovery.as_hdr().max() / 1_000,
    );
    assert_eq!(st.messages, MESSAGES, "every message delivered");
    assert_eq!(
        (st.missing, st.gaps_given_up),
        (0, 0),
        "gaps: {:?}",
        check.gaps
    );
    assert!(check.gaps.is_empty());
    assert_eq!(check.next, MESSAGES + 1);
    assert_eq!((check.out_of_order, check.wrong_bytes), (0, 0));
    assert_eq!(check.recovered_out_of_place, 0);
    assert!(check.ended, "the end of session arrived");
    // The drops were real: about loss_percent of the stream's packets were recovered.
    assert!(
        st.recovered > MESSAGES * u64::from(loss_percent) / 200,
        "{st:?}"
    );
    assert!(st.requests > 0 && served.replies > 0);
}

#[test]
fn five_percent_loss_between_namespaces_is_recovered_in_order_byte_for_byte() {
    recovers_everything_through(5, "five_percent_loss_between_namespaces");
}

#[test]
fn twenty_percent_loss_between_namespaces_is_recovered_in_order_byte_for_byte() {
    recovers_everything_through(20, "twenty_percent_loss_between_namespaces");
}
