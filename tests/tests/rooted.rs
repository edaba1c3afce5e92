//! Rooted sessions end to end, on loopback: the control crate's roots and leaves with the
//! data plane's fan-out, subscriptions and publishers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use multipoint_control::rooted::{
    proto::Frame, Decision, Key, Leaf, LeafConfig, RootEvent, SessionEvent, AUTH_FAILED,
};
use multipoint_control::{Direction, Roles, Transport};
use multipoint_dataplane::core::sequence::Gap;
use multipoint_dataplane::core::server::ServerConfig;
use multipoint_dataplane::rooted_transport::{
    AdmittedRoot, DataLeaf, DataLeafConfig, Joined, UnicastRoot, UnicastRootConfig,
};
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    BackendChoice, Handler, IdleStrategy, PublisherConfig, RecoveryConfig, RerequestConfig,
    ShardConfig, Shards,
};

/// The message with sequence number `seq`: its length and every byte follow from `seq`,
/// so a receiver checks content exactly, not just a count.
fn payload(seq: u64, buf: &mut Vec<u8>) {
    buf.clear();
    let len = (seq * 7 % 200) as usize;
    buf.extend((0..len).map(|i| (seq as usize + i) as u8));
}

#[derive(Debug, Default)]
struct Tally {
    last: AtomicU64,
    messages: AtomicU64,
    errors: AtomicU64,
    ended: AtomicBool,
}

impl Tally {
    /// The last sequence number handled.
    fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }
    fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
    fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Check {
    tally: Arc<Tally>,
    next: Option<u64>,
    buf: Vec<u8>,
}

impl Check {
    fn new() -> (Check, Arc<Tally>) {
        let tally = Arc::new(Tally::default());
        (
            Check {
                tally: Arc::clone(&tally),
                next: None,
                buf: Vec::with_capacity(256),
            },
            tally,
        )
    }
}

impl Handler for Check {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        payload(sequence, &mut self.buf);
        let in_order = self.next.is_none_or(|n| n == sequence);
        if message != self.buf.as_slice() || !in_order {
            self.tally.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.next = Some(sequence + 1);
        self.tally.messages.fetch_add(1, Ordering::Relaxed);
        self.tally.last.store(sequence, Ordering::Release);
    }
    fn on_gap(&mut self, _gap: Gap) {
        self.tally.errors.fetch_add(1, Ordering::Relaxed);
    }
    fn on_end_of_session(&mut self) {
        self.tally.ended.store(true, Ordering::Release);
    }
}

fn shards(subscriptions: u32) -> Shards {
    Shards::start(ShardConfig {
        shards: 2,
        backend: BackendChoice::Auto,
        idle: IdleStrategy::Block,
        buffers: 512,
        max_subscriptions: subscriptions,
        pin: false,
        ..ShardConfig::default()
    })
    .unwrap()
}

fn root_config(name: &str, timeout: Duration) -> UnicastRootConfig {
    let mut config = UnicastRootConfig::new(Session::new(name).unwrap());
    config.timeout = timeout;
    config.fanout.shards = 2;
    config.fanout.pin = false;
    config.fanout.idle = IdleStrategy::Block;
    config
}

/// Shards for `subscriptions` leaves, then a unicast root named `name` with `timeout`,
/// and the root's control address.
fn start(name: &str, timeout: Duration, subscriptions: u32) -> (Shards, UnicastRoot, SocketAddr) {
    let shards = shards(subscriptions);
    let root = UnicastRoot::start(root_config(name, timeout)).unwrap();
    let at = root.control_addr().unwrap();
    (shards, root, at)
}

/// Closes `root`, then stops `shards`.
fn stop(root: UnicastRoot, shards: Shards) {
    root.close();
    shards.shutdown();
}

fn leaf(name: &str) -> DataLeaf {
    DataLeaf::new(DataLeafConfig::new(Transport::RootedUnicast, name)).unwrap()
}

fn multicast_leaf(name: &str) -> DataLeaf {
    DataLeaf::new(DataLeafConfig::new(Transport::AdmittedMulticast, name)).unwrap()
}

/// `leaf` joins the root at `at` in `direction`, checking what it gets with a fresh
/// [`Check`]: the membership and the check's tally.
fn join(
    leaf: &DataLeaf,
    shards: &mut Shards,
    at: SocketAddr,
    direction: Direction,
) -> multipoint_dataplane::Result<(Joined<Check>, Arc<Tally>)> {
    let (check, tally) = Check::new();
    let joined = leaf.join(shards, at, direction, check)?;
    Ok((joined, tally))
}

/// Waits for the event that ends `joined`'s session, which must be `Ended`; `who` names
/// the leaf if it is not.
fn assert_ended(joined: &Joined<Check>, within: Duration, who: &str) {
    match joined.session().events().recv_timeout(within) {
        Ok(SessionEvent::Ended { .. }) => {}
        other => panic!("{who}: expected Ended, got {other:?}"),
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Publishes `count` messages from sequence `first`, never more than `window` ahead of
/// the slowest leaf, so that no leaf's socket buffer overflows whatever the host's
/// rmem_max (a kernel drop would be reported as a gap, and fail the test).
fn publish(root: &mut UnicastRoot, first: u64, count: u64, tallies: &[Arc<Tally>], window: u64) {
    let mut buf = Vec::with_capacity(256);
    let mut seq = first;
    // A leaf that stops receiving (removed, say) must fail the test, not hang it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seq < first + count {
        assert!(
            Instant::now() < deadline,
            "publishing stalled at {seq}: slowest leaf at {:?}, {} leaves in the session",
            tallies.iter().map(|t| t.last()).min(),
            root.control().leaves().len()
        );
        let slowest = tallies.iter().map(|t| t.last()).min().unwrap_or(u64::MAX);
        if seq > slowest.saturating_add(window) && slowest != u64::MAX {
            root.flush();
            root.poll();
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        payload(seq, &mut buf);
        match root.offer(&buf) {
            Ok(s) => {
                assert_eq!(s, seq);
                seq += 1;
            }
            Err(_) => {
                root.poll();
                std::thread::yield_now();
            }
        }
    }
    root.flush();
}

#[test]
fn one_root_and_256_leaves_every_leaf_gets_every_message() {
    const LEAVES: usize = 256;
    const MESSAGES: u64 = 20_000;
    let mut shards = shards(LEAVES as u32);
    // A long timeout: this test is about delivery, and a loaded machine must not time a
    // leaf out in the middle of it.
    let mut root = UnicastRoot::start(root_config("FAN256", Duration::from_secs(10))).unwrap();
    let at = root.control_addr().unwrap();
    let mut tallies = Vec::new();
    let mut joined: Vec<(DataLeaf, Joined<Check>)> = Vec::new();
    for i in 0..LEAVES {
        let leaf = leaf(&format!("leaf-{i}"));
        let (j, tally) = join(&leaf, &mut shards, at, Direction::ReceiverOnly).unwrap();
        tallies.push(tally);
        joined.push((leaf, j));
    }
    assert_eq!(root.control().leaves().len(), LEAVES);

    publish(&mut root, 1, MESSAGES, &tallies, 2_000);
    wait_until(
        "every leaf has every message",
        Duration::from_secs(30),
        || tallies.iter().all(|t| t.messages() >= MESSAGES),
    );
    for (i, t) in tallies.iter().enumerate() {
        assert_eq!(t.messages(), MESSAGES, "leaf {i}");
        assert_eq!(t.errors(), 0, "leaf {i}");
        assert_eq!(t.last(), MESSAGES, "leaf {i}");
    }
    for (_, j) in &joined {
        let stats = j.subscription().unwrap().stats();
        assert_eq!(stats.gaps, 0);
        assert_eq!(stats.kernel_drops, 0);
    }
    let stats = root.stats();
    assert!(
        stats.deliveries >= stats.packets * LEAVES as u64,
        "{stats:?}"
    );

    // Closing the root ends the session at every leaf: end of session on the data plane
    // and on the control plane.
    root.close();
    for (i, (_, j)) in joined.iter().enumerate() {
        assert_ended(j, Duration::from_secs(10), &format!("leaf {i}"));
    }
    wait_until(
        "every leaf saw end of session",
        Duration::from_secs(5),
        || tallies.iter().all(|t| t.ended.load(Ordering::Acquire)),
    );
    drop(joined);
    shards.shutdown();
}

#[test]
fn a_leaf_that_dies_is_removed_within_the_timeout_and_the_rest_keep_receiving() {
    let timeout = Duration::from_secs(2);
    let (mut shards, mut root, at) = start("DIES", timeout, 16);
    let mut tallies = Vec::new();
    let mut alive = Vec::new();
    for i in 0..4 {
        let leaf = leaf(&format!("alive-{i}"));
        let (j, tally) = join(&leaf, &mut shards, at, Direction::ReceiverOnly).unwrap();
        tallies.push(tally);
        alive.push((leaf, j));
    }
    // A leaf whose process hangs: joined by hand, it never speaks again.
    let dead_data = UdpSocket::bind("127.0.0.1:0").unwrap();
    dead_data
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut dead_ctl = std::net::TcpStream::connect(at).unwrap();
    let mut out = Vec::new();
    Frame::Join {
        transport: Transport::RootedUnicast,
        direction: Direction::ReceiverOnly,
        data: Some(dead_data.local_addr().unwrap()),
        name: "hung".into(),
    }
    .encode(&mut out)
    .unwrap();
    std::io::Write::write_all(&mut dead_ctl, &out).unwrap();
    let silent_since = Instant::now();
    let dead_id = loop {
        match root
            .control()
            .events()
            .recv_timeout(Duration::from_secs(3))
            .unwrap()
        {
            RootEvent::Joined(h) if h.name() == "hung" => break h.id(),
            _ => {}
        }
    };
    publish(&mut root, 1, 1_000, &tallies, 500);
    let mut buf = [0u8; 2048];
    assert!(
        dead_data.recv(&mut buf).is_ok(),
        "the hung leaf got data while in the session"
    );

    // Data keeps flowing while the root waits out the timeout.
    let mut next = 1_001;
    let removed = loop {
        publish(&mut root, next, 100, &tallies, 500);
        next += 100;
        if let Ok(event) = root.control().events().try_recv() {
            break event;
        }
        assert!(silent_since.elapsed() < timeout * 4 + Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        matches!(removed, RootEvent::TimedOut { leaf } if leaf == dead_id),
        "{removed:?}"
    );
    assert!(silent_since.elapsed() >= timeout);
    // Nothing more reaches the dead leaf once it is out.
    while dead_data.recv(&mut buf).is_ok() {}
    publish(&mut root, next, 2_000, &tallies, 500);
    let total = next + 2_000 - 1;
    assert!(dead_data.recv(&mut buf).is_err(), "sent to a removed leaf");
    wait_until(
        "the live leaves have everything",
        Duration::from_secs(10),
        || tallies.iter().all(|t| t.last() >= total),
    );
    for t in &tallies {
        assert_eq!(t.errors(), 0);
        assert_eq!(t.messages(), total);
    }
    drop(alive);
    stop(root, shards);
}

#[test]
fn a_refused_join_gets_its_reason() {
    let mut shards = shards(4);
    let admission: multipoint_dataplane::rooted_transport::Admission = Box::new(|req| {
        if req.name == "vip" {
            Decision::Admit
        } else {
            Decision::Refuse(format!("{} is not subscribed to this feed", req.name))
        }
    });
    let root = UnicastRoot::start_with(
        root_config("GATE", Duration::from_secs(3)),
        Some(admission),
        None,
    )
    .unwrap();
    let at = root.control_addr().unwrap();
    let err = join(&leaf("stranger"), &mut shards, at, Direction::ReceiverOnly).unwrap_err();
    assert!(
        err.to_string()
            .contains("stranger is not subscribed to this feed"),
        "{err}"
    );
    let vip = leaf("vip");
    let (joined, _) = join(&vip, &mut shards, at, Direction::ReceiverOnly).unwrap();
    assert_eq!(root.control().leaves().len(), 1);
    drop((joined, vip));
    shards.shutdown();
}

#[test]
fn a_leaf_reaches_the_root_but_never_another_leaf() {
    let mut shards = shards(8);
    let uplink_msgs = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&uplink_msgs);
    let uplink_handlers: multipoint_dataplane::rooted_transport::UplinkHandlers =
        Box::new(move |_leaf| {
            let counter = Arc::clone(&counter);
            Box::new(move |_seq: u64, msg: &[u8]| {
                if msg == b"to the root" {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        });
    let mut root = UnicastRoot::start_with(
        root_config("UPLINK", Duration::from_secs(3)),
        None,
        Some((self::shards(8), uplink_handlers)),
    )
    .unwrap();
    let at = root.control_addr().unwrap();
    let a = leaf("a");
    let b = leaf("b");
    let (mut ja, _) = join(&a, &mut shards, at, Direction::Both).unwrap();
    let (jb, tally_b) = join(&b, &mut shards, at, Direction::ReceiverOnly).unwrap();

    // A's stream goes to the root.
    let publisher = ja.publisher().expect("a sending leaf has a publisher");
    for _ in 0..10 {
        publisher.offer(b"to the root").unwrap();
    }
    publisher.flush();
    wait_until("the root got A's messages", Duration::from_secs(5), || {
        uplink_msgs.load(Ordering::Relaxed) == 10
    });

    // Straight at B's data address, from A's own data socket address and from anywhere
    // else: the kernel drops it, B's socket takes only the root's address.
    let b_data = b.data_addr().unwrap();
    let stray = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..10 {
        stray.send_to(b"not from the root", b_data).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let stats = jb.subscription().unwrap().stats();
    assert_eq!(stats.packets, 0, "{stats:?}");
    assert_eq!(stats.malformed, 0, "{stats:?}");
    assert_eq!(tally_b.messages(), 0);

    // What the root sends does reach B (the socket works).
    let mut buf = Vec::new();
    payload(1, &mut buf);
    root.offer(&buf).unwrap();
    root.flush();
    wait_until("B got the root's message", Duration::from_secs(5), || {
        tally_b.messages() == 1
    });
    assert_eq!(tally_b.errors(), 0);
    drop((ja, jb));
    stop(root, shards);
}

#[test]
fn a_root_invites_a_data_leaf() {
    let mut shards = shards(4);
    let mut root = UnicastRoot::start(root_config("INVITE", Duration::from_secs(3))).unwrap();
    let l = leaf("invitee");
    let leaf_at = l.control().listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let handle = root
        .control()
        .join_leaf(leaf_at, Direction::ReceiverOnly)
        .unwrap();
    assert!(handle.invited());
    let (check, tally) = Check::new();
    let joined = l
        .accept(&mut shards, Duration::from_secs(3), check)
        .unwrap()
        .expect("the invitation's session");
    publish(&mut root, 1, 500, &[Arc::clone(&tally)], 200);
    wait_until(
        "the invited leaf got everything",
        Duration::from_secs(5),
        || tally.messages() == 500,
    );
    assert_eq!(tally.errors(), 0);
    let closed = joined.leave().unwrap().unwrap();
    assert_eq!(closed.stats.messages, 500);
    stop(root, shards);
}

#[test]
fn admitted_multicast_admits_then_data_flows_by_multicast() {
    let mut shards = shards(4);
    let group: SocketAddr = "239.254.77.7:47007".parse().unwrap();
    let mut publisher = PublisherConfig::new(Session::new("ADMIT").unwrap(), group);
    publisher.interface = multipoint_control::Interface::LOOPBACK_V4;
    publisher.bind = Some("127.0.0.1:0".parse().unwrap());
    publisher.scope = 0;
    let admission: multipoint_dataplane::rooted_transport::Admission = Box::new(|req| {
        if req.name.starts_with("member") {
            Decision::Admit
        } else {
            Decision::Refuse("members only".into())
        }
    });
    let mut root = AdmittedRoot::start(
        publisher,
        "127.0.0.1:0".parse().unwrap(),
        Duration::from_secs(3),
        Some(admission),
        None,
    )
    .unwrap();
    let at = root.control().local_addr().unwrap();

    let outsider = multicast_leaf("outsider");
    let err = join(&outsider, &mut shards, at, Direction::ReceiverOnly).unwrap_err();
    assert!(err.to_string().contains("members only"), "{err}");
    assert!(!err.to_string().contains("239.254.77.7"), "{err}");

    // Leaves receive the root's source only: a leaf that wants to send is told so.
    let sender = multicast_leaf("member-0");
    let err = join(&sender, &mut shards, at, Direction::Both).unwrap_err();
    assert!(err.to_string().contains("receive-only"), "{err}");

    let member = multicast_leaf("member-1");
    let (joined, tally) = join(&member, &mut shards, at, Direction::ReceiverOnly).unwrap();
    match joined.session().plan() {
        multipoint_control::rooted::DataPlan::Multicast { group: g, source } => {
            assert_eq!(*g, group);
            assert_eq!(source.to_string(), "127.0.0.1");
        }
        other => panic!("expected a multicast plan, got {other:?}"),
    }
    let mut buf = Vec::new();
    for seq in 1..=2_000 {
        payload(seq, &mut buf);
        loop {
            match root.publisher().offer(&buf) {
                Ok(_) => break,
                Err(_) => root.publisher().poll(),
            }
        }
        if seq % 100 == 0 {
            root.publisher().flush();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    root.publisher().flush();
    wait_until(
        "the member got everything by multicast",
        Duration::from_secs(5),
        || tally.messages() == 2_000,
    );
    assert_eq!(tally.errors(), 0);
    root.close();
    assert_ended(&joined, Duration::from_secs(3), "the member");
    drop(joined);
    shards.shutdown();
}

#[test]
fn a_leaf_gets_nothing_queued_before_its_session_not_even_on_rejoin() {
    let (mut shards, mut root, at) = start("REJOIN", Duration::from_secs(10), 8);
    let l = leaf("rejoiner");
    // Before it joins, the leaf's socket takes datagrams from anyone: a well-formed packet
    // of this very session, with wrong content, queues there. None of it may reach the
    // session's handler.
    let mut forged = Vec::new();
    forged.extend_from_slice(b"REJOIN    ");
    forged.extend_from_slice(&1u64.to_be_bytes());
    forged.extend_from_slice(&1u16.to_be_bytes());
    forged.extend_from_slice(&6u16.to_be_bytes());
    forged.extend_from_slice(b"forged");
    let stray = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        stray.send_to(&forged, l.data_addr().unwrap()).unwrap();
    }
    let (first, tally) = join(&l, &mut shards, at, Direction::ReceiverOnly).unwrap();
    let mut first = Some(first);
    publish(&mut root, 1, 2_000, &[Arc::clone(&tally)], 500);
    wait_until(
        "the first session's messages arrived",
        Duration::from_secs(5),
        || tally.last() >= 2_000,
    );
    assert_eq!(tally.messages(), 2_000);
    assert_eq!(tally.errors(), 0, "a forged datagram got through");
    // Leave in the middle of a burst: packets keep arriving until the root has taken the
    // leaf out, and queue on the leaf's socket.
    let mut buf = Vec::new();
    for seq in 2_001..=4_000 {
        payload(seq, &mut buf);
        while root.offer(&buf).is_err() {
            root.poll();
        }
        if seq == 2_100 {
            root.flush();
            first.take().unwrap().leave().unwrap();
        }
    }
    root.flush();
    wait_until("the root took the leaf out", Duration::from_secs(5), || {
        root.control().leaves().is_empty()
    });
    let (second, tally) = join(&l, &mut shards, at, Direction::ReceiverOnly).unwrap();
    let resume = 4_001;
    // The new subscription counts from 4,001: no pacing window (1,000 messages fit any
    // socket buffer).
    publish(
        &mut root,
        resume,
        1_000,
        &[Arc::clone(&tally)],
        u64::MAX / 2,
    );
    wait_until(
        "the new session's messages arrived",
        Duration::from_secs(5),
        || tally.last() >= resume + 999,
    );
    assert_eq!(tally.messages(), 1_000, "only the new session's");
    assert_eq!(tally.errors(), 0);
    drop(second);
    stop(root, shards);
}

#[test]
fn datagrams_from_anyone_but_the_root_are_dropped_and_counted_before_and_after_the_connect() {
    let (mut shards, mut root, at) = start("INJECT", Duration::from_secs(10), 8);
    let l = leaf("injected");
    let target = l.data_addr().unwrap();
    // A far-future packet of the session: believed, it would wreck the stream.
    let mut forged = Vec::new();
    forged.extend_from_slice(b"INJECT    ");
    forged.extend_from_slice(&(1u64 << 63).to_be_bytes());
    forged.extend_from_slice(&1u16.to_be_bytes());
    forged.extend_from_slice(&6u16.to_be_bytes());
    forged.extend_from_slice(b"forged");
    let stray = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Three queue before the join; more keep coming while it runs (across the window
    // between the admission and the connect), until the data flows.
    const BEFORE: u64 = 3;
    for _ in 0..BEFORE {
        stray.send_to(&forged, target).unwrap();
    }
    let quiet = Arc::new(AtomicBool::new(false));
    let flood = {
        let (quiet, forged) = (Arc::clone(&quiet), forged.clone());
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !quiet.load(Ordering::Acquire) {
                if stray.send_to(&forged, target).is_ok() {
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            sent
        })
    };
    let (joined, tally) = join(&l, &mut shards, at, Direction::ReceiverOnly).unwrap();
    quiet.store(true, Ordering::Release);
    let during = flood.join().unwrap();
    const MESSAGES: u64 = 200_000;
    publish(&mut root, 1, MESSAGES, &[Arc::clone(&tally)], 2_000);
    wait_until("every message", Duration::from_secs(60), || {
        tally.last() >= MESSAGES
    });
    let stats = joined.subscription().unwrap().stats();
    assert_eq!(tally.messages(), MESSAGES, "{stats:?}");
    assert_eq!(
        tally.errors(),
        0,
        "a forged datagram or a gap got through: {stats:?}"
    );
    assert_eq!(
        (
            stats.messages,
            stats.gaps,
            stats.missing,
            stats.suspect,
            stats.duplicates
        ),
        (MESSAGES, 0, 0, 0, 0),
        "{stats:?}"
    );
    // Every stray datagram that reached the socket (all those before the connect; the
    // kernel drops the later ones for a connected socket) was counted.
    assert!(
        (BEFORE..=BEFORE + during).contains(&stats.foreign_source),
        "{} foreign of {BEFORE} + {during} sent: {stats:?}",
        stats.foreign_source
    );
    drop(joined);
    stop(root, shards);
}

#[test]
fn a_leaf_still_holding_an_ended_session_cannot_join_again() {
    let (mut shards, root, at) = start("HOLD", Duration::from_secs(10), 8);
    let l = leaf("holder");
    let (held, _) = join(&l, &mut shards, at, Direction::ReceiverOnly).unwrap();
    root.control().leaves()[0].remove().unwrap();
    assert!(matches!(
        held.session().events().recv_timeout(Duration::from_secs(3)),
        Ok(SessionEvent::Removed { .. })
    ));
    let err = join(&l, &mut shards, at, Direction::ReceiverOnly).unwrap_err();
    assert!(err.to_string().contains("already a member"), "{err}");
    // Once the old membership is dropped, joining works.
    drop(held);
    let (again, _) = join(&l, &mut shards, at, Direction::ReceiverOnly).unwrap();
    drop(again);
    drop(root);
    shards.shutdown();
}

#[test]
fn a_root_sends_only_to_the_host_a_leaf_joins_from() {
    let (mut shards, root, at) = start("REFLECT", Duration::from_secs(3), 4);
    // The control connection comes from 127.0.0.1; the data address names 127.0.0.2.
    let mut config = DataLeafConfig::new(Transport::RootedUnicast, "aimer");
    config.data = "127.0.0.2:0".parse().unwrap();
    let aimer = DataLeaf::new(config).unwrap();
    let err = join(&aimer, &mut shards, at, Direction::ReceiverOnly).unwrap_err();
    assert!(
        err.to_string().contains("not on the host it joins from"),
        "{err}"
    );
    assert!(root.control().leaves().is_empty());
    shards.shutdown();
}

#[test]
fn a_root_that_publishes_the_moment_a_leaf_joins_loses_nothing_to_it() {
    // The root sees Joined before the leaf has attached its subscription; what it sends
    // meanwhile waits in the leaf's socket and must be delivered, from the sequence number
    // the Admit promised.
    let (mut shards, mut root, at) = start("EAGER", Duration::from_secs(10), 4);
    let (check, tally) = Check::new();
    let joiner = std::thread::spawn(move || {
        let l = leaf("eager");
        let joined = l
            .join(&mut shards, at, Direction::ReceiverOnly, check)
            .unwrap();
        (l, joined, shards)
    });
    loop {
        if let RootEvent::Joined(_) = root
            .control()
            .events()
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
        {
            break;
        }
    }
    let mut buf = Vec::new();
    for seq in 1..=500 {
        payload(seq, &mut buf);
        assert_eq!(root.offer(&buf).unwrap(), seq);
        if seq % 50 == 0 {
            root.flush();
        }
    }
    root.flush();
    let (l, joined, shards) = joiner.join().unwrap();
    assert_eq!(joined.session().next_sequence(), Some(1));
    wait_until(
        "the eager root's messages arrived",
        Duration::from_secs(5),
        || tally.last() >= 500,
    );
    assert_eq!(tally.messages(), 500);
    assert_eq!(tally.errors(), 0);
    drop((joined, l));
    stop(root, shards);
}

#[test]
fn leaves_joining_while_data_flows_get_everything_from_their_promise() {
    // Leaves land on fan-out shards that had none (and on ones that had) while the root
    // publishes without pause: each leaf's stream must be gap-free from the sequence
    // number its Admit promised.
    let mut config = root_config("FLOWING", Duration::from_secs(10));
    config.fanout.shards = 2;
    let mut root = UnicastRoot::start(config).unwrap();
    let at = root.control_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let joiner = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut shards = shards(32);
            let mut joined = Vec::new();
            for i in 0..16 {
                let l = leaf(&format!("flowing-{i}"));
                let (j, tally) = join(&l, &mut shards, at, Direction::ReceiverOnly).unwrap();
                let promise = j.session().next_sequence().expect("a promise");
                joined.push((l, j, tally, promise));
                std::thread::sleep(Duration::from_millis(2));
            }
            done.store(true, Ordering::Release);
            (joined, shards)
        })
    };
    let mut buf = Vec::new();
    let mut seq = 1;
    while !done.load(Ordering::Acquire) || seq < 5_000 {
        payload(seq, &mut buf);
        match root.offer(&buf) {
            Ok(s) => {
                assert_eq!(s, seq);
                seq += 1;
            }
            Err(_) => root.poll(),
        }
        if seq % 32 == 0 {
            root.flush();
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    root.flush();
    let last = seq - 1;
    let (joined, shards) = joiner.join().unwrap();
    for (_, j, tally, promise) in &joined {
        wait_until("a late leaf caught up", Duration::from_secs(10), || {
            tally.last() >= last
        });
        assert_eq!(tally.errors(), 0, "promise {promise}");
        assert_eq!(
            tally.messages(),
            last - promise + 1,
            "every message from the promise on, promise {promise}"
        );
        assert_eq!(j.subscription().unwrap().stats().gaps, 0);
    }
    drop(joined);
    stop(root, shards);
}

#[test]
fn a_leaf_without_the_roots_key_is_refused_and_never_receives_data() {
    let key = Key::new(*b"the root's key, 32 bytes of it..").unwrap();
    let wrong = Key::new([7; 32]).unwrap();
    let mut shards = shards(4);
    let mut config = root_config("KEYED", Duration::from_secs(3));
    config.key = Some(key.clone());
    let mut root = UnicastRoot::start(config).unwrap();
    let at = root.control_addr().unwrap();

    // A data leaf with the wrong key, and one with none: refused, with the reason.
    for (name, key) in [("wrong", Some(wrong.clone())), ("keyless", None)] {
        let mut config = DataLeafConfig::new(Transport::RootedUnicast, name);
        config.key = key;
        let leaf = DataLeaf::new(config).unwrap();
        let err = join(&leaf, &mut shards, at, Direction::ReceiverOnly).unwrap_err();
        assert!(err.to_string().contains(AUTH_FAILED), "{name}: {err}");
        assert!(!leaf.control().in_session());
    }
    // A wrong-key leaf whose data socket the test holds, to watch what reaches it.
    let spy_data = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut spy_config = LeafConfig::new("spy");
    spy_config.data = Some(spy_data.local_addr().unwrap());
    spy_config.key = Some(wrong);
    let spy = Leaf::new(Transport::RootedUnicast, Roles::LEAF, spy_config).unwrap();
    match spy.join_leaf(at, Direction::ReceiverOnly) {
        Err(multipoint_control::Error::Refused { reason, .. }) => assert_eq!(reason, AUTH_FAILED),
        other => panic!("expected the spy refused, got {other:?}"),
    }

    // The leaf with the key gets in, and everything published.
    let mut config = DataLeafConfig::new(Transport::RootedUnicast, "member");
    config.key = Some(key);
    let member = DataLeaf::new(config).unwrap();
    let (joined, tally) = join(&member, &mut shards, at, Direction::ReceiverOnly).unwrap();
    let events: Vec<RootEvent> = (0..4)
        .map(|_| {
            root.control()
                .events()
                .recv_timeout(Duration::from_secs(2))
                .unwrap()
        })
        .collect();
    let refused = events
        .iter()
        .filter(|e| matches!(e, RootEvent::Refused { reason, .. } if reason == AUTH_FAILED))
        .count();
    assert_eq!(refused, 3, "{events:?}");
    assert!(matches!(events[3], RootEvent::Joined(ref h) if h.name() == "member"));
    assert_eq!(root.control().leaves().len(), 1);
    assert_eq!(root.stats().leaves, 1, "the fan-out has the member alone");

    publish(&mut root, 1, 1_000, &[Arc::clone(&tally)], 500);
    wait_until("the member has everything", Duration::from_secs(10), || {
        tally.messages() >= 1_000
    });
    assert_eq!(tally.errors(), 0);
    // Sent to the member, which has it all: nothing was sent to the refused leaf.
    spy_data.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert_eq!(
        spy_data.recv(&mut buf).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "a refused leaf received data"
    );
    drop(joined);
    stop(root, shards);
}

#[test]
fn a_leaf_whose_socket_overflows_recovers_everything_from_the_roots_server() {
    const COUNT: u64 = 20_000;
    let mut shards = shards(4);
    let mut config = root_config("RECOVER", Duration::from_secs(3));
    config.fanout.heartbeat = Duration::from_millis(20);
    // Limits for one requester that loses much of a fast stream, not for a crowd.
    config.fanout.rerequest = Some(RerequestConfig {
        server: ServerConfig {
            replies_per_second: 100_000,
            reply_burst: 10_000,
            bytes_per_second: 1 << 30,
            byte_burst: 64 << 20,
            ..ServerConfig::default()
        },
        ..RerequestConfig::new("127.0.0.1:0".parse().unwrap())
    });
    let mut root = UnicastRoot::start(config).unwrap();
    let server = root.rerequest_address().unwrap();
    assert_ne!(server.port(), 0);
    let at = root.control_addr().unwrap();
    let mut leaf_config = DataLeafConfig::new(Transport::RootedUnicast, "overflowing");
    // A receive buffer of a few packets: a burst overflows it, and the kernel drops
    // what does not fit. (How much depends on the machine; every message must arrive
    // whatever it was.)
    leaf_config.subscription.recv_buffer = 4096;
    leaf_config.subscription.recovery = Some(RecoveryConfig {
        in_order: true,
        deadline: Duration::from_secs(20),
        ..RecoveryConfig::new(server)
    });
    let leaf = DataLeaf::new(leaf_config).unwrap();
    let (joined, tally) = join(&leaf, &mut shards, at, Direction::ReceiverOnly).unwrap();

    // As fast as the root goes: no window.
    let mut buf = Vec::with_capacity(256);
    let mut seq = 1;
    while seq <= COUNT {
        payload(seq, &mut buf);
        match root.offer(&buf) {
            Ok(_) => seq += 1,
            Err(_) => root.poll(),
        }
    }
    root.end_session();
    // Serve re-requests (the linger) until the leaf heard the end after recovering.
    let sub = joined.subscription().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sub.stats().ended == 0 {
        assert!(Instant::now() < deadline, "stuck: {:?}", sub.stats());
        root.poll();
        std::thread::sleep(Duration::from_micros(200));
    }
    let st = sub.stats();
    let served = root.rerequest_stats().unwrap();
    assert_eq!(tally.errors(), 0, "in order, byte for byte, no gap: {st:?}");
    assert_eq!(tally.messages(), COUNT);
    assert_eq!(
        (st.messages, st.missing, st.gaps_given_up),
        (COUNT, 0, 0),
        "{st:?}"
    );
    assert!(served.replies >= st.replies, "{served:?} {st:?}");
    if st.kernel_drops > 0 {
        assert!(st.recovered > 0 && st.replies > 0, "{st:?}");
    }
    eprintln!(
        "kernel drops {}, recovered {} in {} replies",
        st.kernel_drops, st.recovered, st.replies
    );
    joined.leave().unwrap();
    stop(root, shards);
}
