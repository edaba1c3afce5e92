//! What the data plane's integration tests share: loopback groups and free ports;
//! shards, subscriptions, publishers, fan-out roots and leaves set up for loopback (or a
//! simulated network), skipping with a printed reason where io_uring cannot run; a
//! deterministic stream of mixed-size messages that a subscriber can check one by one, a
//! running checksum, a checking handler and the assertion that a subscription received
//! the stream cleanly; and a paced publishing loop, for a publisher or a fan-out root,
//! that never lets it run further ahead of its receivers than their socket buffers hold.
//!
//! Writing, checking and checksumming messages, offering, paced publishing, flushing and
//! waiting allocate nothing, so the allocation-counting tests can use them inside the
//! section they measure.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use multipoint_control::{Direction, Interface, Membership, MultipointSocket, Roles, Transport};
use multipoint_dataplane::core::sequence::Gap;
use multipoint_dataplane::io::sim::{SimNet, SimSocket};
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    BackendChoice, BackendKind, Closed, Error, Fanout, FanoutConfig, Handler, IdleStrategy,
    Network, OfferError, Publisher, PublisherConfig, PublisherStats, ShardConfig, Shards,
    Subscription, SubscriptionConfig,
};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// The longest message of the stream.
pub(crate) const MAX_LEN: usize = 1024;

/// Messages offered between two looks at the subscribers (inside one begin/end batch).
pub(crate) const BATCH: u64 = 256;

/// Longest any single wait in these tests may take before it counts as a hang.
pub(crate) const STALL: Duration = Duration::from_secs(30);

const POOL_LEN: usize = 1 << 16;

/// A port nobody on this host uses for UDP right now: bind a throwaway socket to port 0
/// and keep the kernel's pick. Parallel tests then never share a port.
pub(crate) fn free_port() -> u16 {
    let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a throwaway socket");
    probe.local_addr().expect("reading its port").port()
}

/// Administratively scoped group `239.255.a.b` on a free port.
pub(crate) fn group(a: u8, b: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(239, 255, a, b), free_port()))
}

/// Starts shards, or returns `None` (printing why) when the backend asked for cannot run
/// on this host. Under CI (`CI` set) a missing io_uring fails the test instead.
pub(crate) fn start_or_skip(test: &str, config: ShardConfig) -> Option<Shards> {
    started_or_skip(test, "the shards", Shards::start(config))
}

/// What `started` holds, or `None` (printing why) when starting `what` failed only because
/// io_uring cannot run on this host. Under CI (`CI` set) a missing io_uring fails the test
/// instead, as does any other error.
pub(crate) fn started_or_skip<T>(test: &str, what: &str, started: Result<T, Error>) -> Option<T> {
    match started {
        Ok(started) => Some(started),
        Err(Error::UringUnavailable { reason }) if std::env::var_os("CI").is_none() => {
            // Past the harness's capture, so the reason shows in every run.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "{test}: skipped: io_uring is not available here: {reason}"
            );
            None
        }
        Err(e) => panic!("{test}: starting {what} failed: {e}"),
    }
}

/// Shards on `backend`, otherwise the defaults.
pub(crate) fn shards_on(backend: BackendChoice) -> ShardConfig {
    ShardConfig {
        backend,
        ..ShardConfig::default()
    }
}

/// A subscription to `group` on the loopback interface, otherwise the defaults.
pub(crate) fn loopback_subscription(group: SocketAddr) -> SubscriptionConfig {
    SubscriptionConfig {
        interface: Interface::LOOPBACK_V4,
        ..SubscriptionConfig::new(group)
    }
}

/// Shards on `net` and a subscription to `group` that names neither session nor sender,
/// checking every message against a fresh [`Stream`]; `None` when the backend cannot run
/// here.
pub(crate) fn checked_subscription(
    test: &str,
    net: &Net,
    group: SocketAddr,
) -> Option<(Shards, Subscription<Checker>, Stream)> {
    let mut shards = start_or_skip(test, net.shards(ShardConfig::default()))?;
    let stream = Stream::new();
    let sub = shards
        .subscribe(loopback_subscription(group), Checker::new(&stream))
        .unwrap();
    Some((shards, sub, stream))
}

/// [`loopback_subscription`] to session `name` only: the stream locks at the first
/// packet of it (one that names no session waits for three).
pub(crate) fn named(name: &str, group: SocketAddr) -> SubscriptionConfig {
    SubscriptionConfig {
        session: Some(Session::new(name).unwrap()),
        ..loopback_subscription(group)
    }
}

/// A publisher of session `name` to `group` on `backend` and the loopback interface,
/// otherwise the defaults.
pub(crate) fn loopback_publisher(
    backend: BackendChoice,
    name: &str,
    group: SocketAddr,
) -> PublisherConfig {
    let session = Session::new(name).expect("a valid session name");
    Net::Host(backend).publisher(session, group)
}

/// A running [`loopback_publisher`].
pub(crate) fn new_publisher(backend: BackendChoice, name: &str, group: SocketAddr) -> Publisher {
    Publisher::new(loopback_publisher(backend, name, group)).expect("starting the publisher")
}

/// A UDP socket bound to 127.0.0.1 on a port the kernel picks, and its address.
pub(crate) fn loopback_udp() -> (Socket, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("a socket");
    socket
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .expect("binding to loopback");
    let addr = socket
        .local_addr()
        .expect("its address")
        .as_socket()
        .expect("an IP address");
    (socket, addr)
}

/// A fan-out leaf's kernel socket: bound to loopback and connected to the root at `root`,
/// with a large receive buffer (the kernel caps it at net.core.rmem_max; the tests pace to
/// stay inside) and reads that give up after 20 ms.
pub(crate) fn leaf_socket(root: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a leaf");
    socket
        .connect(root)
        .expect("connecting the leaf to the root");
    let _ = SockRef::from(&socket).set_recv_buffer_size(4 << 20);
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("a read timeout");
    socket
}

/// A fan-out of `session` over `shards` shards on `backend`, GSO as given, unpinned (its
/// shards share a small machine with the test's own threads), blocking when idle, and
/// with heartbeats too rare to show up in a test.
pub(crate) fn fanout_config(
    backend: BackendChoice,
    gso: bool,
    shards: usize,
    session: &str,
) -> FanoutConfig {
    FanoutConfig {
        shards,
        backend,
        gso,
        pin: false,
        idle: IdleStrategy::Block,
        heartbeat: Duration::from_secs(3600),
        ..FanoutConfig::new(Session::new(session).expect("a valid session name"))
    }
}

/// The backends the tests run on, each with segmentation offload on and off.
pub(crate) const BACKENDS: [BackendChoice; 2] = [BackendChoice::Uring, BackendChoice::Mmsg];

/// Where a test runs: the host's network on a kernel backend, or a simulated network.
#[derive(Clone, Debug)]
pub(crate) enum Net {
    Host(BackendChoice),
    Sim(SimNet),
}

impl Net {
    /// Shards on this network (the rest of `config` as given).
    pub(crate) fn shards(&self, mut config: ShardConfig) -> ShardConfig {
        self.place(&mut config.backend, &mut config.network);
        config
    }

    /// A publisher of `session` to `group` on this network, on the loopback interface.
    pub(crate) fn publisher(&self, session: Session, group: SocketAddr) -> PublisherConfig {
        let mut config = PublisherConfig {
            interface: Interface::LOOPBACK_V4,
            ..PublisherConfig::new(session, group)
        };
        self.place(&mut config.backend, &mut config.network);
        config
    }

    /// Puts a configuration on this network: the host's sets only the backend, a
    /// simulated one only the network.
    fn place(&self, backend: &mut BackendChoice, network: &mut Network) {
        match self {
            Net::Host(choice) => *backend = *choice,
            Net::Sim(net) => *network = Network::Sim(net.clone()),
        }
    }

    /// The backend that must run.
    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            Net::Host(BackendChoice::Mmsg) => BackendKind::Mmsg,
            Net::Host(_) => BackendKind::Uring,
            Net::Sim(_) => BackendKind::Sim,
        }
    }

    /// A socket that sends datagrams of the test's own making to `group`.
    pub(crate) fn raw_sender(&self, group: SocketAddr) -> RawSender {
        match self {
            Net::Host(_) => {
                let socket = MultipointSocket::new(Transport::Udp4Multicast, Roles::LEAF)
                    .expect("a raw sender");
                socket
                    .set_interface(Interface::LOOPBACK_V4)
                    .expect("the loopback interface");
                socket.set_loopback(true).expect("loopback on");
                let membership = socket
                    .join_leaf(group, Direction::SenderOnly, None)
                    .expect("a sender-only join");
                RawSender::Host(socket, membership)
            }
            Net::Sim(net) => {
                let socket = net
                    .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                    .expect("a simulated socket");
                RawSender::Sim(socket, group)
            }
        }
    }
}

/// A sender of raw datagrams (see [`Net::raw_sender`]).
pub(crate) enum RawSender {
    Host(MultipointSocket, Membership),
    Sim(SimSocket, SocketAddr),
}

impl RawSender {
    /// Sends `datagram`; returns its length.
    pub(crate) fn send(&self, datagram: &[u8]) -> usize {
        match self {
            RawSender::Host(_, membership) => membership.send(datagram).expect("sending"),
            RawSender::Sim(socket, group) => socket
                .send_to(datagram, *group, Instant::now())
                .expect("sending"),
        }
    }
}

/// SplitMix64's finaliser: a good 64-bit mix, used to derive each message from its number.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The message stream: message `seq` has a length in `0..=MAX_LEN` and contents that are a
/// function of `seq` alone: its first (up to) 8 bytes are `seq` little-endian, the rest a
/// window into a fixed pseudo-random pool. Writing and checking a message are a couple of
/// `memcpy`/`memcmp`s, cheap even in debug builds.
#[derive(Clone)]
pub(crate) struct Stream {
    pool: Arc<[u8]>,
}

impl Stream {
    pub(crate) fn new() -> Stream {
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut pool = Vec::with_capacity(POOL_LEN + MAX_LEN);
        while pool.len() < POOL_LEN + MAX_LEN {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            pool.extend_from_slice(&state.to_le_bytes());
        }
        Stream { pool: pool.into() }
    }

    /// Length and pool offset of message `seq`.
    fn shape(seq: u64) -> (usize, usize) {
        let h = mix(seq);
        let len = (h % (MAX_LEN as u64 + 1)) as usize;
        let off = (h >> 32) as usize & (POOL_LEN - 1);
        (len, off)
    }

    /// Writes message `seq` into `out`; returns its length.
    pub(crate) fn write(&self, seq: u64, out: &mut [u8; MAX_LEN]) -> usize {
        let (len, off) = Self::shape(seq);
        out[..len].copy_from_slice(&self.pool[off..off + len]);
        let k = len.min(8);
        out[..k].copy_from_slice(&seq.to_le_bytes()[..k]);
        len
    }

    /// Whether `msg` is exactly message `seq`.
    pub(crate) fn matches(&self, seq: u64, msg: &[u8]) -> bool {
        let (len, off) = Self::shape(seq);
        let k = len.min(8);
        msg.len() == len
            && msg[..k] == seq.to_le_bytes()[..k]
            && msg[k..] == self.pool[off + k..off + len]
    }
}

/// A running checksum over (sequence number, message) pairs, in order: FNV-1a over
/// 64-bit little-endian words (the last one zero-padded), with a rotation after each
/// multiply so that every bit reaches every other. Word-wise, because byte-wise hashing
/// is slow in debug builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xCBF2_9CE4_8422_2325)
    }
}

impl Checksum {
    fn step(h: u64, word: u64) -> u64 {
        (h ^ word)
            .wrapping_mul(0x0000_0100_0000_01B3)
            .rotate_left(29)
    }

    pub(crate) fn add(&mut self, seq: u64, msg: &[u8]) {
        let mut h = Self::step(self.0, seq);
        h = Self::step(h, msg.len() as u64);
        // Plain indexing: iterator adaptors cost several calls per word in debug builds.
        let mut i = 0;
        while i + 8 <= msg.len() {
            let m = msg;
            let word = [
                m[i],
                m[i + 1],
                m[i + 2],
                m[i + 3],
                m[i + 4],
                m[i + 5],
                m[i + 6],
                m[i + 7],
            ];
            h = Self::step(h, u64::from_le_bytes(word));
            i += 8;
        }
        let mut tail = [0u8; 8];
        tail[..msg.len() - i].copy_from_slice(&msg[i..]);
        self.0 = Self::step(h, u64::from_le_bytes(tail));
    }

    pub(crate) fn value(&self) -> u64 {
        self.0
    }
}

/// A handler that checks every message against the stream: numbers must come 1, 2, 3...
/// and contents must be exactly what the publisher wrote. It records what went wrong
/// rather than panicking on the shard thread.
pub(crate) struct Checker {
    stream: Stream,
    /// The sequence number the next message must carry.
    pub(crate) next: u64,
    /// Messages seen.
    pub(crate) received: u64,
    /// Messages whose number was not the next one.
    pub(crate) out_of_order: u64,
    /// Messages whose bytes differ from what message `seq` must be.
    pub(crate) corrupt: u64,
    /// The first message that was out of order or corrupt.
    pub(crate) first_bad: Option<u64>,
    /// Checksum over everything received.
    pub(crate) checksum: Checksum,
    /// Gaps reported to the handler.
    pub(crate) gaps: u64,
    /// End-of-session calls.
    pub(crate) ends: u64,
}

impl Checker {
    pub(crate) fn new(stream: &Stream) -> Checker {
        Checker {
            stream: stream.clone(),
            next: 1,
            received: 0,
            out_of_order: 0,
            corrupt: 0,
            first_bad: None,
            checksum: Checksum::default(),
            gaps: 0,
            ends: 0,
        }
    }

    /// Asserts that exactly messages `1..=count` arrived, in order and intact, with the
    /// publisher's checksum.
    pub(crate) fn assert_complete(&self, who: &str, count: u64, checksum: u64) {
        assert_eq!(
            (self.out_of_order, self.corrupt, self.first_bad),
            (0, 0, None),
            "{who}: messages out of order or corrupt"
        );
        assert_eq!(self.received, count, "{who}: messages received");
        assert_eq!(self.next, count + 1, "{who}: next expected sequence number");
        assert_eq!(self.gaps, 0, "{who}: gaps reported to the handler");
        assert_eq!(self.checksum.value(), checksum, "{who}: checksum");
    }
}

impl Handler for Checker {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        if sequence != self.next {
            self.out_of_order += 1;
            self.first_bad.get_or_insert(sequence);
        }
        if !self.stream.matches(sequence, message) {
            self.corrupt += 1;
            self.first_bad.get_or_insert(sequence);
        }
        self.next = sequence + 1;
        self.received += 1;
        self.checksum.add(sequence, message);
    }

    fn on_gap(&mut self, _gap: Gap) {
        self.gaps += 1;
    }

    fn on_end_of_session(&mut self) {
        self.ends += 1;
    }
}

/// What a subscription should have received: the stream's messages `1..=messages` with
/// checksum `sent`, and beside them the `malformed` datagrams and `other_session` packets
/// it was to skip.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expected {
    pub(crate) messages: u64,
    pub(crate) sent: Checksum,
    pub(crate) malformed: u64,
    pub(crate) other_session: u64,
}

impl Expected {
    /// Messages `1..=messages` with checksum `sent`, and nothing else.
    pub(crate) fn stream(messages: u64, sent: Checksum) -> Expected {
        Expected {
            messages,
            sent,
            malformed: 0,
            other_session: 0,
        }
    }
}

/// Asserts that the subscription `closed` received exactly what `expected` says, in order
/// and intact, and its end of session once; that it counted the bytes `published` sent;
/// and that it counted nothing amiss: no gap, loss, duplicate, drop or error, and no
/// skipped datagram but those expected.
pub(crate) fn assert_received_stream(
    who: &str,
    closed: &Closed<Checker>,
    published: &PublisherStats,
    expected: Expected,
) {
    let count = expected.messages;
    let stats = &closed.stats;
    closed
        .handler
        .assert_complete(who, count, expected.sent.value());
    assert_eq!(
        closed.handler.ends, 1,
        "{who}: end of session handed over once (and only the stream's own)"
    );
    assert_eq!(stats.messages, count, "{who}: {stats:?}");
    assert_eq!(stats.bytes, published.bytes, "{who}: {stats:?}");
    assert_eq!(
        (stats.gaps, stats.missing, stats.duplicates),
        (0, 0, 0),
        "{who}: {stats:?}"
    );
    assert_eq!(
        (stats.kernel_drops, stats.receive_errors),
        (0, 0),
        "{who}: {stats:?}"
    );
    assert_eq!(
        (stats.malformed, stats.truncated, stats.other_session),
        (expected.malformed, 0, expected.other_session),
        "{who}: {stats:?}"
    );
}

/// Calls `cond` until it returns true, sleeping a little between calls; returns whether
/// it did before `timeout` passed. Allocates nothing.
pub(crate) fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    cond()
}

/// Calls `step` (which may poll a publisher) until it returns true, sleeping a little
/// between calls; panics naming `what` if that takes longer than `timeout`.
pub(crate) fn wait_until(what: &str, timeout: Duration, step: impl FnMut() -> bool) {
    assert!(wait_for(timeout, step), "timed out waiting for {what}");
}

/// What publishes a stream: a multicast [`Publisher`] or a unicast [`Fanout`] root. The
/// methods are theirs, under the same names.
pub(crate) trait Source {
    /// Packs `msg` into the open packet and returns its sequence number.
    fn offer(&mut self, msg: &[u8]) -> Result<u64, OfferError>;
    /// Runs the timers (and collects finished sends).
    fn poll(&mut self);
    /// Holds full packets until [`Source::end_batch`].
    fn begin_batch(&mut self);
    /// Sends the packets held since [`Source::begin_batch`]; the open packet stays open.
    fn end_batch(&mut self);
    /// Sends the open packet and everything held, now.
    fn flush(&mut self);
    /// Whether the session was ended.
    fn is_ended(&self) -> bool;
    /// Sends what is pending and an end of session.
    fn end_session(&mut self);
}

macro_rules! sources {
    ($($source:ty),*) => {$(
        impl Source for $source {
            fn offer(&mut self, msg: &[u8]) -> Result<u64, OfferError> {
                <$source>::offer(self, msg)
            }
            fn poll(&mut self) {
                <$source>::poll(self);
            }
            fn begin_batch(&mut self) {
                <$source>::begin_batch(self);
            }
            fn end_batch(&mut self) {
                <$source>::end_batch(self);
            }
            fn flush(&mut self) {
                <$source>::flush(self);
            }
            fn is_ended(&self) -> bool {
                <$source>::is_ended(self)
            }
            fn end_session(&mut self) {
                <$source>::end_session(self);
            }
        }
    )*};
}

sources!(Publisher, Fanout);

/// Offers `msg`, polling through backpressure; returns its sequence number.
pub(crate) fn offer(source: &mut impl Source, msg: &[u8]) -> u64 {
    let deadline = Instant::now() + STALL;
    loop {
        match source.offer(msg) {
            Ok(seq) => return seq,
            Err(OfferError::Backpressure) => {
                assert!(Instant::now() < deadline, "backpressure never eased");
                source.poll();
                std::thread::yield_now();
            }
            Err(e) => panic!("offer failed: {e}"),
        }
    }
}

/// One step of a loop that publishes messages `*next..=last` (`message` writes each)
/// and then ends the session: offers up to `batch` more in a batch (stopping at
/// backpressure) and flushes; once all are out, ends the session. Returns whether this
/// step ended it.
pub(crate) fn publish_step<M: AsRef<[u8]>>(
    source: &mut impl Source,
    next: &mut u64,
    last: u64,
    batch: usize,
    message: impl Fn(u64) -> M,
) -> bool {
    if *next <= last {
        source.begin_batch();
        for _ in 0..batch {
            if *next > last {
                break;
            }
            match source.offer(message(*next).as_ref()) {
                Ok(_) => *next += 1,
                Err(OfferError::Backpressure) => break,
                Err(e) => panic!("{e}"),
            }
        }
        source.end_batch();
        source.flush();
        false
    } else if !source.is_ended() {
        source.end_session();
        true
    } else {
        false
    }
}

/// Flushes `source`, then polls it until `done` holds; panics naming `what` after
/// [`STALL`].
pub(crate) fn flush_and_wait(source: &mut impl Source, what: &str, mut done: impl FnMut() -> bool) {
    source.flush();
    wait_until(what, STALL, || {
        source.poll();
        done()
    });
}

/// Offers messages `seqs` in batches of [`BATCH`], message `seq` written into the buffer
/// by `make` (which returns its length), and never more than `window` messages ahead of
/// `received()` (the slowest receiver's progress): when it is, flushes and polls until it
/// is not. Leaves the last packet open (flush or close to send it).
pub(crate) fn publish_with(
    source: &mut impl Source,
    seqs: RangeInclusive<u64>,
    window: u64,
    received: impl Fn() -> u64,
    mut make: impl FnMut(u64, &mut [u8; MAX_LEN]) -> usize,
) {
    let mut buf = [0u8; MAX_LEN];
    let (mut seq, last) = (*seqs.start(), *seqs.end());
    while seq <= last {
        let stop = last.min(seq + BATCH - 1);
        source.begin_batch();
        while seq <= stop {
            let len = make(seq, &mut buf);
            let got = offer(source, &buf[..len]);
            assert_eq!(got, seq, "the source numbered a message unexpectedly");
            seq += 1;
        }
        source.end_batch();
        if received() + window < stop {
            flush_and_wait(source, "the receivers to catch up", || {
                received() + window >= stop
            });
        }
    }
}

/// Paced publishing of the [`Stream`]: never more than `window` messages ahead of
/// `received()` (the slowest subscriber's count of messages), with a checksum over
/// everything published. Allocates nothing.
pub(crate) struct Paced<'a, R> {
    stream: &'a Stream,
    window: u64,
    received: R,
    /// Checksum over every message published so far, in order.
    pub(crate) sent: Checksum,
}

impl<'a, R: Fn() -> u64> Paced<'a, R> {
    pub(crate) fn new(stream: &'a Stream, window: u64, received: R) -> Self {
        Paced {
            stream,
            window,
            received,
            sent: Checksum::default(),
        }
    }

    /// Messages the slowest subscriber has received.
    pub(crate) fn received(&self) -> u64 {
        (self.received)()
    }

    /// Publishes messages `seqs` of the stream (see [`publish_with`]); leaves the last
    /// packet open.
    pub(crate) fn publish(&mut self, source: &mut impl Source, seqs: RangeInclusive<u64>) {
        let (stream, sent) = (self.stream, &mut self.sent);
        publish_with(source, seqs, self.window, &self.received, |seq, buf| {
            let len = stream.write(seq, buf);
            sent.add(seq, &buf[..len]);
            len
        });
    }

    /// Publishes messages `seqs`, flushes, and polls until the slowest subscriber has
    /// received every message up to the last of them; panics naming `what` after
    /// [`STALL`].
    pub(crate) fn publish_all(
        &mut self,
        source: &mut impl Source,
        seqs: RangeInclusive<u64>,
        what: &str,
    ) {
        let last = *seqs.end();
        self.publish(source, seqs);
        flush_and_wait(source, what, || self.received() == last);
    }
}

/// Waits until each of `subs` has seen one end of session; panics after [`STALL`].
pub(crate) fn await_end_of_session<H: Handler>(subs: &[Subscription<H>]) {
    wait_until("the end of session", STALL, || {
        subs.iter().all(|s| s.stats().end_of_session == 1)
    });
}

/// Watches the heap around the measured part of each run of a no-allocation test (its
/// binary installs `multipoint_test_support::alloc::Counting`), then asserts that at
/// least one run could run here and that none allocated.
#[derive(Debug, Default)]
pub(crate) struct AllocWatch {
    runs: usize,
    findings: Vec<String>,
    /// (all threads, this thread) when the measured part began.
    before: (u64, u64),
}

impl AllocWatch {
    /// A watch; the calling thread is the one that publishes (its allocations are told
    /// apart from the other threads').
    pub(crate) fn new() -> AllocWatch {
        multipoint_test_support::alloc::mark_thread();
        AllocWatch::default()
    }

    /// (all threads, threads that marked themselves) so far.
    pub(crate) fn snapshot() -> (u64, u64) {
        use multipoint_test_support::alloc;
        (alloc::allocations(), alloc::marked_allocations())
    }

    /// The measured part of a run begins.
    pub(crate) fn start(&mut self) {
        self.before = AllocWatch::snapshot();
    }

    /// The measured part of run `test` ended: what was allocated since
    /// [`start`](Self::start) is a finding.
    pub(crate) fn stop(&mut self, test: &str) {
        let after = AllocWatch::snapshot();
        let total = after.0 - self.before.0;
        let publishing = after.1 - self.before.1;
        if total > 0 {
            self.findings.push(format!(
                "{test}: {total} allocations, {publishing} on the publishing thread, \
                 {} on other threads",
                total - publishing
            ));
        }
        self.runs += 1;
    }

    /// Asserts that a run could run here and that none allocated `during` what.
    pub(crate) fn assert_nothing_allocated(&self, during: &str) {
        assert!(self.runs > 0, "no backend could run here");
        assert!(
            self.findings.is_empty(),
            "allocations after warm-up while {during}:\n{}",
            self.findings.join("\n")
        );
    }
}

/// A member of `group` on the simulated network `net`: a socket bound at the group's port
/// that joined it.
pub(crate) fn sim_member(
    net: &multipoint_dataplane::io::sim::SimNet,
    group: SocketAddr,
) -> multipoint_dataplane::io::sim::SimSocket {
    let member = net
        .bind(SocketAddr::from(([0, 0, 0, 0], group.port())))
        .expect("a port for the member");
    member.join(group.ip(), None).expect("joining the group");
    member
}
