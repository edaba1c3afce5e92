//! The sans-IO core on a simulated network, with a fake clock and no sockets: a
//! packetizer's packets cross a `SimNet` that loses, duplicates, reorders, delays and
//! corrupts them on purpose, and a subscription's receive state must account for every
//! message exactly — delivered once and in order, or reported missing — whatever the
//! network did.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use multipoint_dataplane::core::packetizer::{HeapSlots, Packetizer, PacketizerConfig, Slots};
use multipoint_dataplane::core::receive::{DatagramInfo, Handler, ReceiveConfig, ReceiveState};
use multipoint_dataplane::core::sequence::{Gap, StartAt};
use multipoint_dataplane::core::{Clock, FakeClock};
use multipoint_dataplane::io::sim::{
    Corruption, DropPattern, Impairments, SimNet, SimSocket, SimStats,
};
use multipoint_dataplane::wire::Session;

const DATAGRAM: usize = 256;
const BUFFERS: u16 = 64;

/// A publisher made of the core alone: a packetizer, its buffers, and a simulated socket
/// the packets go out on.
struct Feed {
    packetizer: Packetizer,
    buffers: HeapSlots,
    socket: SimSocket,
    to: SocketAddr,
}

impl Feed {
    fn new(net: &SimNet, session: &str, to: SocketAddr, clock: &FakeClock) -> Feed {
        let config = PacketizerConfig {
            max_datagram: DATAGRAM,
            ..PacketizerConfig::new(Session::new(session).unwrap())
        };
        Feed {
            packetizer: Packetizer::new(config, usize::from(BUFFERS), clock.now()).unwrap(),
            buffers: HeapSlots::new(BUFFERS, DATAGRAM),
            socket: net.bind("10.0.0.1:0".parse().unwrap()).unwrap(),
            to,
        }
    }

    /// Offers messages `seqs` (each 40 bytes, the first 8 its number): five to a packet.
    fn offer(&mut self, seqs: RangeInclusive<u64>, clock: &FakeClock) {
        for seq in seqs {
            let mut msg = [0u8; 40];
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            let got = self
                .packetizer
                .offer(&msg, &mut self.buffers, clock)
                .unwrap();
            assert_eq!(got, seq);
            self.transmit(clock);
        }
    }

    fn flush(&mut self, clock: &FakeClock) {
        self.packetizer.flush(&mut self.buffers);
        self.transmit(clock);
    }

    fn tick(&mut self, clock: &FakeClock) {
        self.packetizer
            .handle_timeout(clock.now(), &mut self.buffers);
        self.transmit(clock);
    }

    fn end(&mut self, clock: &FakeClock) {
        assert!(self.packetizer.end_session(&mut self.buffers));
        self.transmit(clock);
    }

    /// Sends what the packetizer says is due, at the fake clock's time.
    fn transmit(&mut self, clock: &FakeClock) {
        let Some(ready) = self.packetizer.poll_transmit() else {
            return;
        };
        let now = clock.now();
        for &(slot, len) in ready {
            self.socket
                .send_to(self.buffers.packet(slot, len), self.to, now)
                .unwrap();
            self.buffers.give_back(slot);
        }
        let n = ready.len();
        self.packetizer.handle_transmitted(n, now);
    }
}

/// What a subscription's handler saw.
#[derive(Default)]
struct Seen {
    messages: Vec<u64>,
    gaps: Vec<Gap>,
    ends: u32,
    /// Messages whose first 8 bytes did not carry their number.
    corrupt: u64,
}

impl Handler for Seen {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        if message.get(..8) != Some(&sequence.to_le_bytes()[..]) {
            self.corrupt += 1;
        }
        self.messages.push(sequence);
    }
    fn on_gap(&mut self, gap: Gap) {
        self.gaps.push(gap);
    }
    fn on_end_of_session(&mut self) {
        self.ends += 1;
    }
}

/// A subscription made of the core alone: a receive state on a simulated socket.
struct Sub {
    socket: SimSocket,
    state: ReceiveState,
    seen: Seen,
}

impl Sub {
    fn new(net: &SimNet, config: ReceiveConfig) -> Sub {
        Sub {
            socket: net.bind("10.0.0.2:7000".parse().unwrap()).unwrap(),
            state: ReceiveState::new(&config),
            seen: Seen::default(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// Takes everything due at the fake clock's time, then runs the receive state's
    /// timers (its reorder window's, if it has one). The receive state's clock is the
    /// fake clock's time since it started, in nanoseconds.
    fn receive(&mut self, clock: &FakeClock) {
        let mut buf = [0u8; 2048];
        let now = u64::try_from(clock.elapsed().as_nanos()).unwrap();
        while let Some(d) = self.socket.recv(clock.now(), &mut buf) {
            let info = DatagramInfo {
                truncated: d.truncated,
                source: Some(d.from),
                ..DatagramInfo::default()
            };
            self.state
                .handle_datagram(&buf[..d.len], info, now, &mut self.seen);
        }
        self.state.handle_timeout(now, &mut self.seen);
    }

    /// Asserts that the handler was told of exactly these gaps, each as
    /// `(first_missing, count)`, in this order.
    fn assert_gaps(&self, expected: &[(u64, u64)]) {
        let expected: Vec<Gap> = expected
            .iter()
            .map(|&(first_missing, count)| Gap {
                first_missing,
                count,
            })
            .collect();
        assert_eq!(self.seen.gaps, expected, "the gaps reported");
    }

    /// Asserts the invariants that hold whatever the network did: messages strictly
    /// increasing, none corrupt, and delivered plus reported missing covering 1..next.
    fn assert_accounted(&self) {
        let seen = &self.seen;
        assert!(
            seen.messages.windows(2).all(|w| w[0] < w[1]),
            "in order, once each"
        );
        assert_eq!(seen.corrupt, 0, "no message reached the handler damaged");
        let missing: u64 = seen.gaps.iter().map(|g| g.count).sum();
        let next = self.state.next_expected().unwrap_or(1);
        assert_eq!(
            seen.messages.len() as u64 + missing,
            next - 1,
            "every number accounted"
        );
        let stats = self.state.stats();
        assert_eq!(stats.messages, seen.messages.len() as u64);
        assert_eq!(stats.missing, missing);
        assert_eq!(stats.gaps, seen.gaps.len() as u64);
    }
}

/// One feed, one subscription, the network impaired as given.
fn setup(seed: u64, impairments: Impairments) -> (SimNet, FakeClock, Feed, Sub) {
    setup_with(seed, impairments, ReceiveConfig::default())
}

/// [`setup`], with the subscription's receive state set up as `config` says.
fn setup_with(
    seed: u64,
    impairments: Impairments,
    config: ReceiveConfig,
) -> (SimNet, FakeClock, Feed, Sub) {
    let net = SimNet::new(seed);
    net.impair(impairments);
    let clock = FakeClock::new();
    // The feed's session is named, so the stream locks at its first packet (an unnamed
    // one waits for three: see sim_a_stranger_first_does_not_capture_an_unnamed_stream).
    let config = ReceiveConfig {
        session: config.session.or(Session::new("SIMFEED").ok()),
        ..config
    };
    let sub = Sub::new(&net, config);
    let feed = Feed::new(&net, "SIMFEED", sub.addr(), &clock);
    (net, clock, feed, sub)
}

/// A network that loses the datagrams `pattern` picks, and does nothing else.
fn dropping(pattern: DropPattern) -> Impairments {
    Impairments {
        drops: vec![pattern],
        ..Impairments::none()
    }
}

/// A network that damages datagrams in the way `corruption` says at `rate`, and does
/// nothing else.
fn corrupting(rate: f64, corruption: Corruption) -> Impairments {
    Impairments {
        corrupt: rate,
        corruption,
        ..Impairments::none()
    }
}

/// Offers messages `seqs`, flushes, and has `sub` take everything due now.
fn send_all(feed: &mut Feed, sub: &mut Sub, seqs: RangeInclusive<u64>, clock: &FakeClock) {
    feed.offer(seqs, clock);
    feed.flush(clock);
    sub.receive(clock);
}

/// Offers messages `1..=5 * packets` a packet of five at a time, the fake clock moving on
/// by `every` after each, and `sub` taking what is then due.
fn trickle(feed: &mut Feed, sub: &mut Sub, packets: u64, every: Duration, clock: &FakeClock) {
    for packet in 0..packets {
        feed.offer(packet * 5 + 1..=packet * 5 + 5, clock);
        clock.advance(every);
        sub.receive(clock);
    }
}

#[test]
fn sim_a_burst_loss_gives_one_gap_with_the_right_range() {
    // Five 40-byte messages to a 256-byte packet: packets 4..7 (0-based) carry 21..=40.
    let (net, clock, mut feed, mut sub) = setup(1, dropping(DropPattern::burst(4, 4)));
    send_all(&mut feed, &mut sub, 1..=100, &clock);
    sub.assert_gaps(&[(21, 20)]);
    assert_eq!(sub.seen.messages.len(), 80);
    assert_eq!(net.stats().lost, 4);
    sub.assert_accounted();
}

#[test]
fn sim_a_loss_by_sequence_range_drops_the_packets_that_carry_it() {
    let (_, clock, mut feed, mut sub) = setup(2, dropping(DropPattern::Sequences(33..34)));
    send_all(&mut feed, &mut sub, 1..=50, &clock);
    // Message 33 travels in the packet of 31..=35.
    sub.assert_gaps(&[(31, 5)]);
    sub.assert_accounted();
}

#[test]
fn sim_every_nth_packet_lost_gives_one_gap_per_lost_packet() {
    let (net, clock, mut feed, mut sub) =
        setup(3, dropping(DropPattern::EveryNth { n: 4, phase: 1 }));
    send_all(&mut feed, &mut sub, 1..=200, &clock);
    // 40 packets of five; packets 1, 5, 9, ... (0-based) are lost: ten of them.
    assert_eq!(net.stats().lost, 10);
    assert_eq!(sub.seen.gaps.len(), 10);
    assert!(sub.seen.gaps.iter().all(|g| g.count == 5));
    assert_eq!(sub.seen.gaps[0].first_missing, 6);
    sub.assert_accounted();
}

#[test]
fn sim_truncated_packets_are_counted_as_malformed_and_the_rest_delivered() {
    let (net, clock, mut feed, mut sub) = setup(4, corrupting(0.2, Corruption::Truncate));
    send_all(&mut feed, &mut sub, 1..=500, &clock);
    let corrupted = net.stats().corrupted;
    assert!(corrupted > 0);
    // A cut MoldUDP64 packet never parses: each is one malformed datagram, and its
    // messages are one of the gaps.
    assert_eq!(sub.state.stats().malformed, corrupted);
    assert_eq!(sub.state.stats().packets, 100 - corrupted);
    sub.assert_accounted();
}

#[test]
fn sim_flipped_bits_never_reach_the_handler_as_numbered_messages_out_of_order() {
    let (net, clock, mut feed, mut sub) = setup(5, corrupting(0.3, Corruption::FlipBit));
    send_all(&mut feed, &mut sub, 1..=500, &clock);
    assert!(net.stats().corrupted > 0);
    let stats = sub.state.stats();
    // A flipped bit lands in the header (malformed, another session, or a moved number)
    // or in a message body; whatever it did, numbers stay strictly increasing and every
    // packet is accounted for.
    assert!(sub.seen.messages.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(stats.packets + stats.malformed, 100);
}

#[test]
fn sim_duplicated_packets_are_counted_and_never_delivered_twice() {
    let (net, clock, mut feed, mut sub) = setup(
        6,
        Impairments {
            duplicate: 0.25,
            ..Impairments::none()
        },
    );
    send_all(&mut feed, &mut sub, 1..=500, &clock);
    let doubled = net.stats().duplicated;
    assert!(doubled > 0);
    assert_eq!(sub.seen.messages, (1..=500).collect::<Vec<_>>());
    assert_eq!(sub.state.stats().duplicates, doubled * 5);
    assert!(sub.seen.gaps.is_empty());
    sub.assert_accounted();
}

#[test]
fn sim_reordered_packets_are_reported_once_and_never_delivered_out_of_order() {
    let (net, clock, mut feed, mut sub) = setup(
        7,
        Impairments {
            reorder: 0.1,
            reorder_by: Duration::from_micros(50),
            delay: Duration::from_micros(10),
            ..Impairments::none()
        },
    );
    // A packet every 20 µs: a reordered one is overtaken by two or three.
    trickle(&mut feed, &mut sub, 100, Duration::from_micros(20), &clock);
    feed.flush(&clock);
    clock.advance(Duration::from_millis(1));
    sub.receive(&clock);
    assert!(net.stats().reordered > 0);
    // The receive state does not wait for stragglers: an overtaken packet's messages are
    // reported missing when a later one arrives, and are duplicates when they come.
    // Nothing was lost, so every number reported missing came later as a duplicate.
    let stats = sub.state.stats();
    assert!(stats.missing > 0);
    assert_eq!(stats.duplicates, stats.missing);
    assert_eq!(sub.state.next_expected(), Some(501));
    sub.assert_accounted();
}

#[test]
fn sim_nothing_arrives_before_its_delay_on_the_fake_clock() {
    let (_, clock, mut feed, mut sub) = setup(
        8,
        Impairments {
            delay: Duration::from_millis(2),
            ..Impairments::none()
        },
    );
    feed.offer(1..=5, &clock);
    feed.flush(&clock);
    clock.advance(Duration::from_micros(1999));
    sub.receive(&clock);
    assert!(sub.seen.messages.is_empty(), "due at 2 ms, not before");
    clock.advance(Duration::from_micros(1));
    sub.receive(&clock);
    assert_eq!(sub.seen.messages, [1, 2, 3, 4, 5]);
}

#[test]
fn sim_a_heartbeat_after_a_lost_tail_reveals_the_gap_at_the_next_second() {
    // The last packet (messages 6..=8) is lost; only the heartbeat a second later tells.
    let (_, clock, mut feed, mut sub) = setup(9, dropping(DropPattern::Datagrams(1..2)));
    feed.offer(1..=8, &clock);
    clock.advance(Duration::from_micros(100));
    feed.tick(&clock);
    sub.receive(&clock);
    assert_eq!(sub.seen.messages, [1, 2, 3, 4, 5]);
    assert!(sub.seen.gaps.is_empty(), "nothing shows the loss yet");
    clock.advance(Duration::from_millis(999));
    feed.tick(&clock);
    sub.receive(&clock);
    assert!(
        sub.seen.gaps.is_empty(),
        "no heartbeat before a second of silence"
    );
    clock.advance(Duration::from_millis(1));
    feed.tick(&clock);
    sub.receive(&clock);
    sub.assert_gaps(&[(6, 3)]);
    assert_eq!(sub.state.stats().heartbeats, 1);
    sub.assert_accounted();
}

#[test]
fn sim_the_end_of_session_reveals_a_lost_last_packet_and_comes_once() {
    let (_, clock, mut feed, mut sub) = setup(
        10,
        Impairments {
            drops: vec![DropPattern::Sequences(10..11)],
            duplicate: 1.0,
            ..Impairments::none()
        },
    );
    feed.offer(1..=10, &clock);
    feed.end(&clock);
    sub.receive(&clock);
    sub.assert_gaps(&[(6, 5)]);
    assert_eq!(
        sub.seen.ends, 1,
        "the end of session, sent twice, is reported once"
    );
    assert_eq!(sub.state.stats().end_of_session, 2);
    sub.assert_accounted();
}

#[test]
fn sim_a_stranger_session_on_the_same_port_is_counted_not_delivered() {
    let net = SimNet::new(11);
    let clock = FakeClock::new();
    let session = Session::new("SIMFEED").unwrap();
    let mut sub = Sub::new(
        &net,
        ReceiveConfig {
            session: Some(session),
            start: StartAt::One,
            ..ReceiveConfig::default()
        },
    );
    let mut stranger = Feed::new(&net, "STRANGER", sub.addr(), &clock);
    let mut feed = Feed::new(&net, "SIMFEED", sub.addr(), &clock);
    stranger.offer(1..=20, &clock);
    stranger.flush(&clock);
    send_all(&mut feed, &mut sub, 1..=20, &clock);
    assert_eq!(sub.seen.messages, (1..=20).collect::<Vec<_>>());
    assert_eq!(sub.state.stats().other_session, 4);
    sub.assert_accounted();
}

#[test]
fn sim_random_loss_reorder_and_duplication_together_keep_every_number_accounted() {
    for seed in 0..8 {
        let (net, clock, mut feed, mut sub) = setup(
            100 + seed,
            Impairments {
                loss: 0.05,
                duplicate: 0.05,
                reorder: 0.05,
                reorder_by: Duration::from_micros(30),
                jitter: Duration::from_micros(15),
                ..Impairments::none()
            },
        );
        trickle(&mut feed, &mut sub, 200, Duration::from_micros(10), &clock);
        feed.end(&clock);
        clock.advance(Duration::from_millis(1));
        sub.receive(&clock);
        let SimStats { lost, .. } = net.stats();
        assert!(lost > 0, "seed {seed}");
        // The end of session (unless lost itself) closes the account at 1001.
        if sub.seen.ends == 1 {
            assert_eq!(sub.state.next_expected(), Some(1001), "seed {seed}");
        }
        sub.assert_accounted();
    }
}

/// A receive state that waits up to `window` for packets overtaken on the way.
fn with_window(window: Duration) -> ReceiveConfig {
    ReceiveConfig {
        reorder_window: window,
        ..ReceiveConfig::default()
    }
}

/// 10% of the packets held back by `by` on the way (after a 10 µs delay), a packet every
/// 20 µs: 500 messages reach `sub`.
fn reordered_by(by: Duration, window: Duration) -> (SimNet, Sub) {
    let impairments = Impairments {
        reorder: 0.1,
        reorder_by: by,
        delay: Duration::from_micros(10),
        ..Impairments::none()
    };
    let (net, clock, mut feed, mut sub) = setup_with(17, impairments, with_window(window));
    for chunk in 0..100u64 {
        feed.offer(chunk * 5 + 1..=chunk * 5 + 5, &clock);
        clock.advance(Duration::from_micros(20));
        sub.receive(&clock);
    }
    feed.flush(&clock);
    for _ in 0..10 {
        clock.advance(Duration::from_millis(1));
        sub.receive(&clock);
    }
    (net, sub)
}

#[test]
fn sim_a_packet_reordered_inside_the_window_is_not_a_duplicate() {
    let (net, sub) = reordered_by(Duration::from_micros(50), Duration::from_micros(200));
    assert!(net.stats().reordered > 0);
    let stats = sub.state.stats();
    assert_eq!(sub.seen.messages, (1..=500).collect::<Vec<_>>());
    assert!(sub.seen.gaps.is_empty(), "{:?}", sub.seen.gaps);
    assert_eq!((stats.duplicates, stats.missing), (0, 0));
    assert!(stats.reordered > 0, "packets waited for the ones overtaken");
    sub.assert_accounted();
}

#[test]
fn sim_a_packet_reordered_beyond_the_window_is_a_gap_and_then_a_duplicate() {
    let (net, sub) = reordered_by(Duration::from_micros(500), Duration::from_micros(100));
    assert!(net.stats().reordered > 0);
    let stats = sub.state.stats();
    assert!(
        stats.missing > 0,
        "the window ran out before the stragglers came"
    );
    assert_eq!(stats.duplicates, stats.missing, "nothing was lost for good");
    sub.assert_accounted();
}

#[test]
fn sim_a_lost_packet_is_declared_missing_when_the_window_runs_out_not_before() {
    let window = Duration::from_millis(1);
    let (_, clock, mut feed, mut sub) =
        setup_with(18, dropping(DropPattern::burst(1, 1)), with_window(window));
    // Packets of 1..=5, 6..=10 (lost), 11..=15; then 16 waits open.
    feed.offer(1..=16, &clock);
    sub.receive(&clock);
    assert_eq!(
        sub.seen.messages,
        [1, 2, 3, 4, 5],
        "11..=15 wait for 6..=10"
    );
    clock.advance(window - Duration::from_nanos(1));
    sub.receive(&clock);
    assert!(sub.seen.gaps.is_empty(), "not before the window ran out");
    clock.advance(Duration::from_nanos(1));
    sub.receive(&clock);
    sub.assert_gaps(&[(6, 5)]);
    assert_eq!(sub.seen.messages.last(), Some(&15));
    sub.assert_accounted();
}

// ---- Forgeries beside a real stream (issue 11) ----

/// Messages in the real stream each forgery is tried beside.
const REAL_STREAM: u64 = 200_000;

/// The feed's session, which the forgeries name too (it is on the wire for anyone to read).
fn feed_session() -> Session {
    Session::new("SIMFEED").unwrap()
}

/// A data packet of the feed's session whose one message is numbered 2^63.
fn far_future_data() -> Vec<u8> {
    multipoint_dataplane::wire::pack_all(&feed_session(), 1 << 63, DATAGRAM, [&b"evil"[..]])
        .unwrap()
        .remove(0)
}

/// A heartbeat of the feed's session announcing 2^63 as the next number.
fn far_future_heartbeat() -> Vec<u8> {
    let mut buf = [0u8; 20];
    let len =
        multipoint_dataplane::wire::write_heartbeat(&mut buf, &feed_session(), 1 << 63).unwrap();
    buf[..len].to_vec()
}

/// An end of session of the feed's session at sequence 1.
fn forged_end() -> Vec<u8> {
    let mut buf = [0u8; 20];
    let len =
        multipoint_dataplane::wire::write_end_of_session(&mut buf, &feed_session(), 1).unwrap();
    buf[..len].to_vec()
}

/// A data packet of the feed's session numbered from 0, with two messages.
fn sequence_zero() -> Vec<u8> {
    let mut packet =
        multipoint_dataplane::wire::pack_all(&feed_session(), 1, DATAGRAM, [&b"a"[..], b"b"])
            .unwrap()
            .remove(0);
    packet[10..18].copy_from_slice(&0u64.to_be_bytes());
    packet
}

/// Where a forged datagram comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    /// A stranger's own socket.
    Stranger,
    /// The feed's address, forged.
    Feed,
}

/// What a subscription counted beside the real stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct Discards {
    foreign_source: u64,
    suspect: u64,
    malformed: u64,
}

/// A real stream of [`REAL_STREAM`] messages to a subscription that names neither session
/// nor sender; `first` is sent by a stranger before the stream starts, `middle` in the
/// middle of it. Asserts that the stream arrived whole, in order, ended once, with no
/// gap, loss or duplicate, and that the discards were exactly `expected`.
fn forged_beside_a_real_stream(
    seed: u64,
    first: &[Vec<u8>],
    middle: &[(Vec<u8>, From)],
    expected: Discards,
) -> Sub {
    let net = SimNet::new(seed);
    let clock = FakeClock::new();
    let mut sub = Sub::new(&net, ReceiveConfig::default());
    let mut feed = Feed::new(&net, "SIMFEED", sub.addr(), &clock);
    let stranger = net.bind("10.0.0.66:0".parse().unwrap()).unwrap();
    for datagram in first {
        stranger.send_to(datagram, sub.addr(), clock.now()).unwrap();
    }
    sub.receive(&clock);
    let half = REAL_STREAM / 2;
    for part in [1..=half, half + 1..=REAL_STREAM] {
        let last = *part.end();
        // In pieces, so that the network never holds too much at once.
        let mut seq = *part.start();
        while seq <= last {
            let stop = last.min(seq + 999);
            feed.offer(seq..=stop, &clock);
            sub.receive(&clock);
            seq = stop + 1;
        }
        if last == half {
            for (datagram, from) in middle {
                match from {
                    From::Stranger => {
                        stranger.send_to(datagram, sub.addr(), clock.now()).unwrap();
                    }
                    From::Feed => {
                        net.forge(feed.socket.local_addr(), datagram, sub.addr(), clock.now());
                    }
                }
                // Each forgery lands between two real packets.
                feed.offer(seq..=seq, &clock);
                sub.receive(&clock);
                seq += 1;
            }
            // The offers above took numbers of the second half.
            let rest = seq..=REAL_STREAM;
            if !rest.is_empty() {
                feed.offer(rest, &clock);
            }
            break;
        }
    }
    feed.flush(&clock);
    feed.end(&clock);
    sub.receive(&clock);
    sub.state.finish(0, &mut sub.seen);

    assert_eq!(
        sub.seen.messages.len() as u64,
        REAL_STREAM,
        "{:?}",
        sub.state.stats()
    );
    assert!(sub.seen.messages.iter().copied().eq(1..=REAL_STREAM));
    assert_eq!(sub.seen.corrupt, 0, "no forged message reached the handler");
    assert!(sub.seen.gaps.is_empty(), "{:?}", sub.seen.gaps);
    assert_eq!(sub.seen.ends, 1, "the real end of session, once");
    let stats = sub.state.stats();
    assert_eq!(
        (
            stats.gaps,
            stats.missing,
            stats.duplicates,
            stats.other_session
        ),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    let discards = Discards {
        foreign_source: stats.foreign_source,
        suspect: stats.suspect,
        malformed: stats.malformed,
    };
    assert_eq!(discards, expected, "{stats:?}");
    assert_eq!(sub.state.session(), Some(feed_session()));
    assert_eq!(sub.state.sender(), Some(feed.socket.local_addr()));
    sub.assert_accounted();
    sub
}

#[test]
fn sim_a_far_future_packet_forged_as_the_sender_is_suspect_and_the_stream_stays_whole() {
    forged_beside_a_real_stream(
        30,
        &[],
        &[(far_future_data(), From::Feed)],
        Discards {
            suspect: 1,
            ..Discards::default()
        },
    );
}

#[test]
fn sim_a_far_future_heartbeat_forged_as_the_sender_is_suspect_and_the_stream_stays_whole() {
    forged_beside_a_real_stream(
        31,
        &[],
        &[(far_future_heartbeat(), From::Feed)],
        Discards {
            suspect: 1,
            ..Discards::default()
        },
    );
}

#[test]
fn sim_a_forged_end_of_session_does_not_end_the_stream() {
    forged_beside_a_real_stream(
        32,
        &[],
        &[(forged_end(), From::Feed), (forged_end(), From::Stranger)],
        Discards {
            suspect: 1,
            foreign_source: 1,
            ..Discards::default()
        },
    );
}

#[test]
fn sim_a_packet_numbered_from_zero_is_malformed_and_delivers_nothing() {
    forged_beside_a_real_stream(
        33,
        &[],
        &[
            (sequence_zero(), From::Feed),
            (sequence_zero(), From::Stranger),
        ],
        Discards {
            malformed: 2,
            ..Discards::default()
        },
    );
}

#[test]
fn sim_a_stranger_first_does_not_capture_an_unnamed_stream() {
    // Two packets that follow on from each other, of the session, before the real sender.
    let session = feed_session();
    // 60-byte datagrams: one 30-byte message each.
    let first =
        multipoint_dataplane::wire::pack_all(&session, 1, 60, [&[0xEE; 30][..], &[0xEE; 30]])
            .unwrap();
    assert_eq!(first.len(), 2);
    forged_beside_a_real_stream(
        34,
        &first,
        &[],
        Discards {
            foreign_source: 2,
            ..Discards::default()
        },
    );
}

#[test]
fn sim_every_forgery_from_another_sender_is_foreign_and_never_touches_the_stream() {
    forged_beside_a_real_stream(
        35,
        &[],
        &[
            (far_future_data(), From::Stranger),
            (far_future_heartbeat(), From::Stranger),
            (forged_end(), From::Stranger),
            (sequence_zero(), From::Stranger),
        ],
        Discards {
            foreign_source: 3,
            malformed: 1,
            ..Discards::default()
        },
    );
}
