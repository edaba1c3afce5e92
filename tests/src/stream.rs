//! A checked stream for the multi-host data-plane tests: messages whose bytes say their
//! number, a handler that checks order and content as they come, a subscriber on a host
//! of the lab, publishing at a steady rate, and nftables rules that drop a share of a
//! stream's packets.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use multipoint_control::Interface;
use multipoint_dataplane::core::server::ServerConfig;
use multipoint_dataplane::publisher::RerequestConfig;
use multipoint_dataplane::{
    Gap, Handler, IdleStrategy, OfferError, Publisher, PublisherConfig, RecoveryConfig,
    ShardConfig, Shards, Subscription, SubscriptionConfig,
};

use crate::Host;

/// The size of every message of a checked stream.
pub const SIZE: usize = 64;

/// Message `seq` of a checked stream: its number, then a pattern of it.
pub fn fill(seq: u64, msg: &mut [u8; SIZE]) {
    msg[..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in msg[8..].iter_mut().enumerate() {
        *b = (seq as u8) ^ (i as u8).wrapping_mul(7);
    }
}

/// Checks a stream as it comes: each message in order from 1 (a gap reported before the
/// messages after it counts as passed), each message's bytes right.
#[derive(Debug, Default)]
pub struct Check {
    /// The next number expected (0 before the first message).
    pub next: u64,
    /// Messages that were not the next expected.
    pub out_of_order: u64,
    /// Messages whose bytes were wrong.
    pub wrong_bytes: u64,
    /// Messages delivered through `on_recovered` (never, in order).
    pub recovered_out_of_place: u64,
    /// The gaps reported.
    pub gaps: Vec<Gap>,
    /// Whether the end of session arrived.
    pub ended: bool,
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
        self.recovered_out_of_place += 1;
    }
    fn on_gap(&mut self, gap: Gap) {
        if gap.first_missing == self.next.max(1) {
            self.next = gap.end();
        }
        self.gaps.push(gap);
    }
    fn on_end_of_session(&mut self) {
        self.ended = true;
    }
}

/// Starts shards inside `host` (blocking when idle, not pinned) and subscribes `handler`
/// there on the host's `eth0`, as `config` says otherwise. Made inside the host, the
/// subscription's sockets and the interfaces it names are the host's.
pub fn subscribe_on_eth0<H: Handler>(
    host: &Host,
    config: SubscriptionConfig,
    handler: H,
) -> (Shards, Subscription<H>) {
    host.run(|| {
        let mut shards = Shards::start(ShardConfig {
            idle: IdleStrategy::Block,
            pin: false,
            ..ShardConfig::default()
        })
        .expect("starting the shards");
        let config = SubscriptionConfig {
            interface: Interface::Name("eth0".into()),
            ..config
        };
        let sub = shards.subscribe(config, handler).expect("subscribing");
        (shards, sub)
    })
}

/// A publisher made inside `host` (so its sockets are the host's), sending on the host's
/// `eth0`, as `config` says otherwise.
pub fn publisher_on_eth0(host: &Host, config: PublisherConfig) -> Publisher {
    host.run(|| {
        Publisher::new(PublisherConfig {
            interface: Interface::Name("eth0".into()),
            ..config
        })
        .expect("making the publisher")
    })
}

/// Recovery in order from `server`, with a deadline (2 s) generous against the stalls of
/// a shared machine (a debug build, the rest of the suite), so that a stall is not taken
/// for a loss; the recovery times a test prints say how long it really took.
pub fn patient_recovery(server: SocketAddr) -> RecoveryConfig {
    RecoveryConfig {
        in_order: true,
        deadline: Duration::from_secs(2),
        ..RecoveryConfig::new(server)
    }
}

/// Publishes messages 1..=`messages` of a checked stream at `rate` a second, a
/// millisecond's worth at a time; `meanwhile` runs between batches with the number of
/// the next message (to change the network mid-stream).
pub fn publish_paced(
    publisher: &mut Publisher,
    messages: u64,
    rate: u64,
    mut meanwhile: impl FnMut(u64),
) {
    let start = Instant::now();
    let mut msg = [0u8; SIZE];
    let mut seq = 1;
    while seq <= messages {
        let due = (start.elapsed().as_micros() as u64 * rate / 1_000_000).min(messages);
        publisher.begin_batch();
        while seq <= due {
            fill(seq, &mut msg);
            match publisher.offer(&msg) {
                Ok(got) => {
                    assert_eq!(got, seq);
                    seq += 1;
                }
                Err(OfferError::Backpressure) => break,
                Err(e) => panic!("{e}"),
            }
        }
        publisher.end_batch();
        publisher.flush();
        publisher.poll();
        meanwhile(seq);
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// A re-request server at `server` for one lossy subscriber: 20,000 replies a second
/// (burst 2,000) and 40 MB/s. At 20% loss of 200,000 msgs/s one subscriber asks for
/// about 2,000 packets a second, more than a requester's default allowance (1,000
/// replies a second), which is sized against amplification, not for one lossy receiver.
pub fn lossy_subscriber_server(server: SocketAddr) -> RerequestConfig {
    RerequestConfig {
        server: ServerConfig {
            replies_per_second: 20_000,
            reply_burst: 2_000,
            bytes_per_second: 40_000_000,
            byte_burst: 4_000_000,
            ..ServerConfig::default()
        },
        ..RerequestConfig::new(server)
    }
}

/// Ends the session and keeps the publisher serving re-requests (and repeating the end)
/// until `sub` has everything, or 10 s: it heard the end, and each of the `messages` was
/// delivered or declared missing.
pub fn end_and_linger<H: Handler>(publisher: &mut Publisher, sub: &Subscription<H>, messages: u64) {
    publisher.end_session();
    let done = || {
        let st = sub.stats();
        st.end_of_session > 0 && st.messages + st.missing >= messages
    };
    let linger = Instant::now();
    while linger.elapsed() < Duration::from_secs(10) && !done() {
        publisher.poll();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `nft` inside `host`.
pub fn nft(host: &Host, args: &[&str]) {
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
pub fn have_nft() -> bool {
    Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether `nft` is there; if not, says why the test `test` skips (and under CI, where
/// it must run, fails it).
pub fn nft_or_skip(test: &str) -> bool {
    if have_nft() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs nft (nftables); CI installs it");
    }
    crate::print_skip(test, &"needs nft (nftables)");
    false
}

/// Adds an input chain to `host` whose `rules` (nft rule text, e.g. `udp dport 9 numgen
/// random mod 100 < 5 counter drop`) run on every packet it receives.
pub fn drop_on_input(host: &Host, rules: &[String]) {
    nft(host, &["add", "table", "inet", "loss"]);
    nft(
        host,
        &[
            "add",
            "chain",
            "inet",
            "loss",
            "input",
            "{ type filter hook input priority 0 ; policy accept ; }",
        ],
    );
    for rule in rules {
        nft(host, &["add", "rule", "inet", "loss", "input", rule]);
    }
}
