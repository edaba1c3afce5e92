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
use std::process::Command;
use std::time::{Duration, Instant};

use multipoint_control::Interface;
use multipoint_dataplane::core::server::ServerConfig;
use multipoint_dataplane::publisher::RerequestConfig;
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    Gap, Handler, IdleStrategy, Publisher, PublisherConfig, RecoveryConfig, ShardConfig, Shards,
    SubscriptionConfig,
};
use multipoint_tests::{lab_or_skip, print_skip, Host, Lab};

const MESSAGES: u64 = 1_000_000;
const RATE: u64 = 200_000;
const SIZE: usize = 64;
const GROUP: &str = "239.255.77.1:31077";
const SERVER: &str = "10.77.0.1:31078";

/// Message `seq`: its number, then a pattern of it.
fn fill(seq: u64, msg: &mut [u8; SIZE]) {
    msg[..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in msg[8..].iter_mut().enumerate() {
        *b = (seq as u8) ^ (i as u8).wrapping_mul(7);
    }
}

/// Checks the stream as it comes: in order, from 1, each message's bytes right.
#[derive(Debug, Default)]
struct Check {
    next: u64,
    out_of_order: u64,
    wrong_bytes: u64,
    recovered_out_of_place: u64,
    gaps: Vec<Gap>,
    ended: bool,
}

impl Handler for Check {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        if self.next == 0 {
            self.next = 1;
        }
        if sequence != self.next {
            self.out_of_order += 1;
        }
        self.next = sequence + 1;
        let mut want = [0u8; SIZE];
        fill(sequence, &mut want);
        if message != want {
            self.wrong_bytes += 1;
        }
    }
    fn on_recovered(&mut self, _sequence: u64, _message: &[u8]) {
        // In order, recovered messages come through on_message in their place.
        self.recovered_out_of_place += 1;
    }
    fn on_gap(&mut self, gap: Gap) {
        self.gaps.push(gap);
    }
    fn on_end_of_session(&mut self) {
        self.ended = true;
    }
}

/// Runs `nft` inside `host`.
fn nft(host: &Host, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", host.namespace(), "nft"])
        .args(args)
        .output()
        .expect("running nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `nft` is there to run.
fn have_nft() -> bool {
    Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The two runs take turns: each keeps a publisher, a shard and the kernel's veth busy,
/// and on a two-core machine two at once starve each other's shard.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn recovers_everything_through(loss_percent: u32, test: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab: Lab = lab_or_skip!(test);
    if !have_nft() {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: needs nft (nftables); CI installs it");
        }
        print_skip(test, &"needs nft (nftables)");
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
    nft(&b, &["add", "table", "inet", "loss"]);
    nft(
        &b,
        &[
            "add",
            "chain",
            "inet",
            "loss",
            "input",
            "{ type filter hook input priority 0 ; policy accept ; }",
        ],
    );
    nft(&b, &["add", "rule", "inet", "loss", "input", &rule]);

    let session = Session::new("LOSS").unwrap();
    let (shards, sub) = b.run(|| {
        let mut shards = Shards::start(ShardConfig {
            idle: IdleStrategy::Block,
            pin: false,
            ..ShardConfig::default()
        })
        .unwrap();
        let sub = shards
            .subscribe(
                SubscriptionConfig {
                    interface: Interface::Name("eth0".into()),
                    session: Some(session),
                    recovery: Some(RecoveryConfig {
                        in_order: true,
                        // Generous, so that a stall of a shared machine (a debug build,
                        // the rest of the suite) is not taken for a loss; the recovery
                        // times printed say how long it really took.
                        deadline: Duration::from_secs(2),
                        ..RecoveryConfig::new(server)
                    }),
                    ..SubscriptionConfig::new(group)
                },
                Check::default(),
            )
            .unwrap();
        (shards, sub)
    });
    // At 20 % loss the one subscriber asks for about 2,000 packets a second: more than
    // a requester's default allowance (1,000 replies a second), which is sized against
    // amplification, not for one lossy receiver.
    let mut publisher = a.run(|| {
        Publisher::new(PublisherConfig {
            interface: Interface::Name("eth0".into()),
            rerequest: Some(RerequestConfig {
                server: ServerConfig {
                    replies_per_second: 20_000,
                    reply_burst: 2_000,
                    bytes_per_second: 40_000_000,
                    byte_burst: 4_000_000,
                    ..ServerConfig::default()
                },
                ..RerequestConfig::new(server)
            }),
            ..PublisherConfig::new(session, group)
        })
        .unwrap()
    });

    // Give the membership report a moment, then publish at RATE, a millisecond's worth
    // at a time.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let mut msg = [0u8; SIZE];
    let mut seq = 1;
    while seq <= MESSAGES {
        let due = (start.elapsed().as_micros() as u64 * RATE / 1_000_000).min(MESSAGES);
        publisher.begin_batch();
        while seq <= due {
            fill(seq, &mut msg);
            match publisher.offer(&msg) {
                Ok(got) => {
                    assert_eq!(got, seq);
                    seq += 1;
                }
                Err(multipoint_dataplane::OfferError::Backpressure) => break,
                Err(e) => panic!("{e}"),
            }
        }
        publisher.end_batch();
        publisher.flush();
        publisher.poll();
        std::thread::sleep(Duration::from_micros(500));
    }
    publisher.end_session();
    // Linger: serve the last re-requests (and repeat the end) until the subscriber has
    // everything, or 10 s.
    let linger = Instant::now();
    while linger.elapsed() < Duration::from_secs(10) {
        publisher.poll();
        let st = sub.stats();
        if st.end_of_session > 0 && st.messages + st.missing >= MESSAGES {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
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
