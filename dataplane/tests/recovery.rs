//! Recovery by re-request on the sans-IO receive state, with exact counters: a stream of
//! packets loses what each test says, the state's requests go to a server written here
//! (which answers from everything that was sent, as many whole messages as fit one
//! datagram), and requests and replies can be lost, delayed and reordered on the way.
//! Time is virtual (nanoseconds) and every random choice seeded, so each run is the same.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use multipoint_dataplane::core::receive::{DatagramInfo, Handler, ReceiveConfig, ReceiveState};
use multipoint_dataplane::core::recovery::RecoveryConfig;
use multipoint_dataplane::core::sequence::Gap;
use multipoint_dataplane::stats::SubscriptionStats;
use multipoint_dataplane::wire::{
    pack_all, write_end_of_session, write_heartbeat, ReRequest, Session,
};

const SESSION: Session = Session::from_bytes(*b"RECOVERY  ");
const DATAGRAM: usize = 1472;
/// 64-byte messages (22 to a 1472-byte packet).
const MESSAGE: usize = 64;
/// A packet every 10 µs.
const SPACING: u64 = 10_000;
/// One way between subscriber and server.
const ONE_WAY: u64 = 20_000;

fn server() -> SocketAddr {
    "10.0.0.1:7000".parse().unwrap()
}
fn publisher() -> SocketAddr {
    "10.0.0.1:5000".parse().unwrap()
}

/// The message numbered `seq`: its number, then a pattern of it.
fn message(seq: u64) -> Vec<u8> {
    let mut m = vec![0u8; MESSAGE];
    m[..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in m[8..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    m
}

/// What the handler saw.
#[derive(Default)]
struct Seen {
    /// Every message in delivery order: number, recovered?, content right?
    messages: Vec<(u64, bool)>,
    gaps: Vec<(u64, u64)>,
    ends: u32,
    /// Whether any message came after the end of session was heard.
    after_end: bool,
}

impl Seen {
    fn take(&mut self, sequence: u64, message: &[u8], recovered: bool) {
        assert_eq!(
            message,
            &self::message(sequence)[..],
            "content of {sequence}"
        );
        self.after_end |= self.ends > 0;
        self.messages.push((sequence, recovered));
    }

    fn numbers(&self) -> Vec<u64> {
        self.messages.iter().map(|m| m.0).collect()
    }

    fn recovered(&self) -> usize {
        self.messages.iter().filter(|m| m.1).count()
    }
}

impl Handler for Seen {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        self.take(sequence, message, false);
    }
    fn on_recovered(&mut self, sequence: u64, message: &[u8]) {
        self.take(sequence, message, true);
    }
    fn on_gap(&mut self, gap: Gap) {
        self.gaps.push((gap.first_missing, gap.count));
    }
    fn on_end_of_session(&mut self) {
        self.ends += 1;
    }
}

/// Something on its way, due at a time.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Arrival {
    /// A packet of the stream (its index).
    Stream(usize),
    /// A request reaching the server.
    Request(Vec<u8>),
    /// A reply (or a stranger's datagram) reaching the request socket, from `from`.
    Reply(Vec<u8>, SocketAddr),
}

/// The network, the server and the subscriber's state.
struct Run {
    state: ReceiveState,
    seen: Seen,
    stream: Vec<Vec<u8>>,
    queue: BinaryHeap<Reverse<(u64, u64, Arrival)>>,
    order: u64,
    now: u64,
    /// The server has only these numbers (None: everything sent).
    stored: Option<std::ops::Range<u64>>,
    /// Requests that reached the server, and replies it sent, in order.
    requests_seen: u64,
    replies_sent: u64,
    /// Which requests (by arrival number at the server, from 0) and replies (by number
    /// sent) are lost.
    lose_request: Box<dyn FnMut(u64) -> bool>,
    lose_reply: Box<dyn FnMut(u64) -> bool>,
    /// Extra delay of the n-th reply.
    reply_delay: Box<dyn FnMut(u64) -> u64>,
}

impl Run {
    /// `count` messages in packets of 22, stream packets `lost` dropped, with recovery
    /// configured by `recovery`.
    fn new(count: u64, lost: impl Fn(usize) -> bool, recovery: RecoveryConfig) -> Run {
        let messages: Vec<Vec<u8>> = (1..=count).map(message).collect();
        let mut stream = pack_all(&SESSION, 1, DATAGRAM, messages.iter().map(|m| &m[..])).unwrap();
        let mut end = [0u8; 20];
        let len = write_end_of_session(&mut end, &SESSION, count + 1).unwrap();
        stream.push(end[..len].to_vec());
        let mut run = Run {
            state: ReceiveState::new(&ReceiveConfig {
                session: Some(SESSION),
                sender: Some(publisher()),
                recovery: Some(recovery),
                ..ReceiveConfig::default()
            }),
            seen: Seen::default(),
            stream,
            queue: BinaryHeap::new(),
            order: 0,
            now: 1_000_000,
            stored: None,
            requests_seen: 0,
            replies_sent: 0,
            lose_request: Box::new(|_| false),
            lose_reply: Box::new(|_| false),
            reply_delay: Box::new(|_| 0),
        };
        for i in 0..run.stream.len() {
            if !lost(i) {
                let at = run.now + i as u64 * SPACING;
                run.push(at, Arrival::Stream(i));
            }
        }
        run
    }

    fn push(&mut self, at: u64, what: Arrival) {
        self.order += 1;
        self.queue.push(Reverse((at, self.order, what)));
    }

    /// Sends what the state has due.
    fn transmit(&mut self) {
        let mut buf = [0u8; 20];
        while let Some((len, to)) = self.state.poll_transmit(self.now, &mut buf) {
            assert_eq!(to, server());
            let at = self.now + ONE_WAY;
            self.push(at, Arrival::Request(buf[..len].to_vec()));
        }
    }

    /// The server: answers from the start asked, as many whole messages as fit.
    fn serve(&mut self, request: &[u8]) {
        let n = self.requests_seen;
        self.requests_seen += 1;
        if (self.lose_request)(n) {
            return;
        }
        let r = ReRequest::new_checked(request).unwrap();
        assert_eq!(r.session(), SESSION);
        let (first, count) = (r.sequence(), u64::from(r.count()));
        assert!(first >= 1 && count >= 1, "request {first} +{count}");
        if self.stored.as_ref().is_some_and(|s| !s.contains(&first)) {
            return;
        }
        let messages: Vec<Vec<u8>> = (first..first + count).map(message).collect();
        let reply = pack_all(&SESSION, first, DATAGRAM, messages.iter().map(|m| &m[..]))
            .unwrap()
            .swap_remove(0);
        let sent = self.replies_sent;
        self.replies_sent += 1;
        if (self.lose_reply)(sent) {
            return;
        }
        let at = self.now + ONE_WAY + (self.reply_delay)(sent);
        self.push(at, Arrival::Reply(reply, server()));
    }

    /// Runs until nothing is on its way and nothing waits, at most until `limit`.
    fn run(&mut self, limit: u64) {
        loop {
            let next_arrival = self.queue.peek().map(|Reverse((at, _, _))| *at);
            let timer = self.state.poll_timeout();
            let at = match (next_arrival, timer) {
                (Some(a), Some(t)) => a.min(t),
                (a, t) => match a.or(t) {
                    Some(at) => at,
                    None => break,
                },
            };
            assert!(at < limit, "still running at {at} ns");
            self.now = self.now.max(at);
            if timer.is_some_and(|t| t <= self.now) {
                self.state.handle_timeout(self.now, &mut self.seen);
            }
            while self
                .queue
                .peek()
                .is_some_and(|Reverse((at, _, _))| *at <= self.now)
            {
                let Reverse((_, _, what)) = self.queue.pop().unwrap();
                match what {
                    Arrival::Stream(i) => {
                        let info = DatagramInfo {
                            source: Some(publisher()),
                            ..DatagramInfo::default()
                        };
                        let packet = self.stream[i].clone();
                        self.state
                            .handle_datagram(&packet, info, self.now, &mut self.seen);
                    }
                    Arrival::Request(bytes) => self.serve(&bytes),
                    Arrival::Reply(bytes, from) => {
                        let info = DatagramInfo {
                            source: Some(from),
                            ..DatagramInfo::default()
                        };
                        self.state
                            .handle_reply(&bytes, info, self.now, &mut self.seen);
                    }
                }
            }
            self.transmit();
        }
    }

    fn stats(&self) -> SubscriptionStats {
        self.state.stats()
    }
}

fn recovery() -> RecoveryConfig {
    RecoveryConfig {
        seed: 42,
        ..RecoveryConfig::new(server())
    }
}

fn in_order() -> RecoveryConfig {
    RecoveryConfig {
        in_order: true,
        ..recovery()
    }
}

const SECOND: u64 = 1_000_000_000;

#[test]
fn a_burst_loss_is_recovered_in_packet_sized_requests_with_exact_counters() {
    // 100 packets of 22; packets 10..20 (messages 221..=440) lost.
    let mut run = Run::new(2200, |i| (10..20).contains(&i), recovery());
    run.run(SECOND);
    let s = run.stats();
    assert_eq!(run.seen.messages.len(), 2200);
    let mut numbers = run.seen.numbers();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=2200).collect::<Vec<_>>());
    assert_eq!(run.seen.recovered(), 220);
    assert!(run.seen.gaps.is_empty());
    assert_eq!(run.seen.ends, 1);
    assert!(
        !run.seen.after_end,
        "the end is heard after the last recovered message"
    );
    assert_eq!((s.gaps, s.missing, s.gaps_given_up), (1, 0, 0));
    assert_eq!(
        (s.requests, s.retries, s.replies, s.recovered),
        (10, 0, 10, 220)
    );
    assert_eq!((s.messages, s.duplicates), (2200, 0));
    let times = run.state.recovery_times().unwrap();
    assert_eq!(times.len(), 10, "one recovery time per range asked");
    // Asked within 250 µs of the gap, answered 40 µs later.
    assert!(times.as_hdr().max() <= 250_000 + 2 * ONE_WAY + 1_000);
}

#[test]
fn every_seventh_packet_lost_is_recovered_in_order_and_content_checked() {
    let mut run = Run::new(22 * 700, |i| i % 7 == 3, in_order());
    run.run(SECOND);
    let s = run.stats();
    assert_eq!(run.seen.numbers(), (1..=22 * 700).collect::<Vec<_>>());
    assert_eq!(
        run.seen.recovered(),
        0,
        "in order: recovered ones come in their place"
    );
    assert_eq!((s.gaps, s.missing, s.gaps_given_up), (100, 0, 0));
    assert_eq!((s.requests, s.replies, s.recovered), (100, 100, 2200));
    assert_eq!(s.retries, 0);
    assert_eq!(run.seen.ends, 1);
}

#[test]
fn lost_replies_and_lost_requests_are_asked_again_after_the_timeout() {
    for lose_replies in [true, false] {
        let mut run = Run::new(22 * 50, |i| i == 10 || i == 30, recovery());
        // The first answer to each of the two requests is lost (the reply, or the
        // request before it).
        let lose = Box::new(|n: u64| n < 2);
        if lose_replies {
            run.lose_reply = lose;
        } else {
            run.lose_request = lose;
        }
        run.run(SECOND);
        let s = run.stats();
        assert_eq!(
            run.seen.messages.len(),
            22 * 50,
            "lose replies: {lose_replies}"
        );
        assert_eq!(run.seen.recovered(), 44);
        assert_eq!((s.requests, s.retries, s.replies), (2, 2, 2));
        assert_eq!((s.missing, s.gaps_given_up, s.reply_unasked), (0, 0, 0));
    }
}

#[test]
fn replies_that_overtake_each_other_still_make_an_in_order_stream() {
    let mut run = Run::new(22 * 100, |i| (40..50).contains(&i), in_order());
    // The earlier a reply was sent, the later it comes.
    run.reply_delay = Box::new(|n| (10 - n.min(10)) * 30_000);
    run.run(SECOND);
    let s = run.stats();
    assert_eq!(run.seen.numbers(), (1..=2200).collect::<Vec<_>>());
    assert_eq!(
        (s.requests, s.replies, s.recovered, s.missing),
        (10, 10, 220, 0)
    );
    assert!(
        s.reordered > 0,
        "replies and the stream waited for the first reply"
    );
}

#[test]
fn a_range_the_server_no_longer_has_is_retried_until_its_deadline_then_given_up() {
    for order in [false, true] {
        let config = if order { in_order() } else { recovery() };
        let mut run = Run::new(22 * 20, |i| i == 5, config);
        // Messages 111..=132 are gone from the server's store.
        run.stored = Some(133..u64::MAX);
        run.run(SECOND);
        let s = run.stats();
        let expected: Vec<u64> = (1..=440).filter(|n| !(111..=132).contains(n)).collect();
        let mut numbers = run.seen.numbers();
        if !order {
            numbers.sort_unstable();
        }
        assert_eq!(numbers, expected, "in order: {order}");
        assert_eq!(run.seen.gaps, [(111, 22)], "lost for good, once");
        assert_eq!((s.gaps, s.gaps_given_up, s.missing), (1, 1, 22));
        assert_eq!((s.requests, s.replies), (1, 0));
        assert!(s.retries >= 3, "asked again and again: {}", s.retries);
        assert_eq!(run.seen.ends, 1);
    }
}

#[test]
fn the_deadline_gives_up_on_time_and_the_stream_goes_on() {
    let deadline = Duration::from_millis(3);
    let mut run = Run::new(
        22 * 10,
        |i| i == 2,
        RecoveryConfig {
            deadline,
            ..in_order()
        },
    );
    run.lose_request = Box::new(|_| true);
    run.run(SECOND);
    let s = run.stats();
    assert_eq!(run.seen.gaps, [(45, 22)]);
    assert_eq!((s.gaps_given_up, s.missing, s.messages), (1, 22, 198));
    // 3 ms: the timeout starts at 5 ms, capped at a quarter of the deadline (750 µs),
    // doubling from there: asked at most 4 times.
    assert!((1..=3).contains(&s.retries), "{}", s.retries);
}

#[test]
fn a_loss_at_the_tail_is_found_by_the_end_of_session_and_recovered() {
    for order in [false, true] {
        let config = if order { in_order() } else { recovery() };
        // 10 packets; the last two data packets are lost, the end of session arrives.
        let mut run = Run::new(220, |i| i == 8 || i == 9, config);
        run.run(SECOND);
        let s = run.stats();
        let mut numbers = run.seen.numbers();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=220).collect::<Vec<_>>(), "in order: {order}");
        assert_eq!((s.requests, s.recovered, s.missing), (2, 44, 0));
        assert_eq!(run.seen.ends, 1);
        assert!(!run.seen.after_end);
        assert_eq!(s.suspect, 0);
    }
}

#[test]
fn a_heartbeat_reveals_a_loss_at_the_tail_of_an_idle_stream() {
    let mut run = Run::new(44, |i| i == 1 || i == 2, recovery());
    // The end is lost too, but a heartbeat comes.
    let mut hb = [0u8; 20];
    let len = write_heartbeat(&mut hb, &SESSION, 45).unwrap();
    run.stream.push(hb[..len].to_vec());
    let at = run.now + 5 * SPACING;
    run.push(at, Arrival::Stream(3));
    run.run(SECOND);
    let s = run.stats();
    assert_eq!(run.seen.recovered(), 22);
    assert_eq!((s.requests, s.missing, s.heartbeats), (1, 0, 1));
}

#[test]
fn replies_from_anyone_but_the_server_or_for_nothing_asked_are_dropped_and_counted() {
    let mut run = Run::new(22 * 10, |i| i == 4, recovery());
    // A stranger's answer first, then the server's answer to something never asked.
    let forged = pack_all(&SESSION, 89, DATAGRAM, [&message(89)[..]])
        .unwrap()
        .swap_remove(0);
    let stranger: SocketAddr = "10.6.6.6:7000".parse().unwrap();
    let at = run.now + 4 * SPACING + 1;
    run.push(at, Arrival::Reply(forged.clone(), stranger));
    let unasked = pack_all(&SESSION, 150, DATAGRAM, [&message(150)[..]])
        .unwrap()
        .swap_remove(0);
    run.push(at, Arrival::Reply(unasked, server()));
    run.push(at, Arrival::Reply(b"not a packet".to_vec(), server()));
    run.run(SECOND);
    let s = run.stats();
    assert_eq!(run.seen.messages.len(), 220);
    assert_eq!(run.seen.recovered(), 22);
    assert_eq!(
        (s.reply_foreign_source, s.reply_unasked, s.malformed),
        (1, 1, 1),
        "a stranger's, one asked for by no one, one that is no packet at all"
    );
}

#[test]
fn without_recovery_nothing_is_asked_and_gaps_are_lost_at_once() {
    let mut state = ReceiveState::new(&ReceiveConfig {
        session: Some(SESSION),
        ..ReceiveConfig::default()
    });
    let messages: Vec<Vec<u8>> = (1..=66).map(message).collect();
    let packets = pack_all(&SESSION, 1, DATAGRAM, messages.iter().map(|m| &m[..])).unwrap();
    let mut seen = Seen::default();
    for p in [&packets[0], &packets[2]] {
        state.handle_datagram(p, DatagramInfo::default(), 0, &mut seen);
    }
    let mut buf = [0u8; 20];
    assert_eq!(state.poll_transmit(0, &mut buf), None);
    assert_eq!(seen.gaps, [(23, 22)]);
    let s = state.stats();
    assert_eq!(
        (s.gaps, s.missing, s.gaps_given_up, s.requests),
        (1, 22, 0, 0)
    );
}

#[test]
fn a_loss_before_the_end_that_the_server_cannot_fill_is_given_up_and_the_end_heard() {
    for order in [false, true] {
        let config = RecoveryConfig {
            deadline: Duration::from_millis(5),
            ..if order { in_order() } else { recovery() }
        };
        // 10 packets; the last two data packets are lost and the server has nothing.
        let mut run = Run::new(220, |i| i == 8 || i == 9, config);
        run.stored = Some(0..0);
        run.run(SECOND);
        let s = run.stats();
        assert_eq!(run.seen.messages.len(), 176, "in order: {order}");
        // Lost for good: 177..=220, told once each (as asked: in one or more pieces).
        let mut told: Vec<u64> = run
            .seen
            .gaps
            .iter()
            .flat_map(|&(first, count)| first..first + count)
            .collect();
        told.sort_unstable();
        assert_eq!(told, (177..=220).collect::<Vec<_>>(), "in order: {order}");
        assert_eq!(s.gaps_given_up, run.seen.gaps.len() as u64);
        assert_eq!((s.missing, s.ended), (44, 1));
        assert_eq!(run.seen.ends, 1);
    }
}

#[test]
fn a_full_hold_gives_up_only_the_oldest_gap_and_the_next_is_still_recovered() {
    let config = RecoveryConfig {
        hold_bytes: 1 << 16, // 44 packets of 1,472 bytes
        deadline: Duration::from_secs(5),
        ..in_order()
    };
    // Packet 1 (messages 23..=44) is gone from the server too; packet 30 is not.
    let mut run = Run::new(22 * 80, |i| i == 1 || i == 30, config);
    run.stored = Some(45..u64::MAX);
    run.run(10 * SECOND);
    let s = run.stats();
    let expected: Vec<u64> = (1..=22 * 80).filter(|n| !(23..=44).contains(n)).collect();
    assert_eq!(run.seen.numbers(), expected);
    assert_eq!(run.seen.gaps, [(23, 22)]);
    assert_eq!((s.gaps_given_up, s.missing, s.recovered), (1, 22, 22));
}

#[test]
fn a_range_whose_head_the_server_lost_is_still_recovered_past_the_head() {
    let config = RecoveryConfig {
        max_gaps: 1,
        deadline: Duration::from_millis(20),
        ..recovery()
    };
    // Packets 2..=7 (messages 45..=176) lost; the server no longer has 45..=66.
    let mut run = Run::new(22 * 20, |i| (2..8).contains(&i), config);
    run.stored = Some(67..u64::MAX);
    run.run(SECOND);
    let s = run.stats();
    assert_eq!(run.seen.gaps, [(45, 22)]);
    assert_eq!((s.recovered, s.missing, s.gaps_given_up), (110, 22, 1));
    assert_eq!(run.seen.messages.len(), 22 * 20 - 22);
}

#[test]
fn in_order_what_packets_past_the_end_seemed_to_reveal_is_not_lost_at_the_finish() {
    let mut state = ReceiveState::new(&ReceiveConfig {
        session: Some(SESSION),
        sender: Some(publisher()),
        recovery: Some(in_order()),
        ..ReceiveConfig::default()
    });
    let mut seen = Seen::default();
    let info = DatagramInfo {
        source: Some(publisher()),
        ..DatagramInfo::default()
    };
    let packet = |n: u64| {
        pack_all(&SESSION, n, DATAGRAM, [&message(n)[..]])
            .unwrap()
            .remove(0)
    };
    let mut end = [0u8; 20];
    let len = write_end_of_session(&mut end, &SESSION, 5).unwrap();
    // 1, then 10 (2..10 seem missing), then the end at 5: 2..5 were lost, and nothing
    // from 5 on was ever sent (10 was a stray past the end).
    state.handle_datagram(&packet(1), info, 0, &mut seen);
    state.handle_datagram(&packet(10), info, 10_000, &mut seen);
    state.handle_datagram(&end[..len], info, 20_000, &mut seen);
    state.finish(30_000, &mut seen);
    assert_eq!(state.next_expected(), Some(5));
    assert_eq!(seen.gaps, [(2, 3)], "only what came before the end");
    let st = state.stats();
    assert_eq!((st.missing, st.gaps_given_up), (3, 1), "{st:?}");
    assert_eq!(seen.ends, 1);
}
