//! Property tests of the sequence tracker: whatever the network does to a stream (drops,
//! duplicates, overlapping retransmissions, reordering), every message is delivered at
//! most once and in increasing order, and every number up to the tracker's position is
//! accounted for exactly once, as delivered or as reported missing.
//!
//! With reordering, "missing" means *not delivered in order*: a message that arrives after
//! a later one has moved the tracker past it was already reported in a gap and is old
//! (recovered, if at all, by MoldUDP64 re-requests elsewhere). Without reordering,
//! "missing" is exactly the numbers that never arrived below the highest one seen (or
//! below the end of session, once it is seen).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use multipoint_dataplane::core::sequence::{SequenceCounters, SequenceTracker, StartAt, Verdict};
use multipoint_dataplane::wire::{END_OF_SESSION_COUNT, HEARTBEAT_COUNT};
use proptest::prelude::*;

const SESSION: [u8; 10] = *b"PROPTEST01";
const OTHER: [u8; 10] = *b"SOMEBODY02";

/// One packet header as received.
#[derive(Debug, Clone, Copy)]
struct Packet {
    session: [u8; 10],
    first: u64,
    count: u16,
}

impl Packet {
    fn data(first: u64, count: u16) -> Self {
        Self {
            session: SESSION,
            first,
            count,
        }
    }

    fn is_data(&self) -> bool {
        self.count != HEARTBEAT_COUNT && self.count != END_OF_SESSION_COUNT
    }

    /// The sequence numbers of the messages of a data packet.
    fn messages(&self) -> std::ops::Range<u64> {
        if self.is_data() {
            self.first..self.first + u64::from(self.count)
        } else {
            0..0
        }
    }
}

/// What a subscriber saw: the numbers delivered, in delivery order, and the numbers
/// reported missing, in reporting order.
#[derive(Debug, Default)]
struct Outcome {
    delivered: Vec<u64>,
    missing: Vec<u64>,
    counters: SequenceCounters,
}

fn run(tracker: &mut SequenceTracker, packets: &[Packet]) -> Outcome {
    let mut outcome = Outcome::default();
    for packet in packets {
        let before = tracker.next_expected();
        let verdict = tracker.handle_packet(packet.session, packet.first, packet.count);
        outcome.counters.apply(&verdict, packet.count);
        if let Some(gap) = verdict.gap() {
            assert!(gap.count > 0);
            if let Some(before) = before {
                assert_eq!(
                    gap.first_missing, before,
                    "a gap starts where the tracker was"
                );
            }
            outcome.missing.extend(gap.first_missing..gap.end());
        }
        if let Verdict::Deliver { skip, .. } = verdict {
            assert!(
                packet.is_data() && skip < packet.count,
                "{packet:?} {verdict:?}"
            );
            outcome
                .delivered
                .extend(packet.first + u64::from(skip)..packet.first + u64::from(packet.count));
        }
        if let (Some(before), Some(after)) = (before, tracker.next_expected()) {
            assert!(after >= before, "the tracker never moves backwards");
        }
    }
    outcome
}

fn strictly_increasing(numbers: &[u64]) -> bool {
    numbers.windows(2).all(|pair| pair[0] < pair[1])
}

/// A stream of `1..=total` cut into data packets of 1 to 6 messages.
fn stream() -> impl Strategy<Value = Vec<Packet>> {
    prop::collection::vec(1_u16..=6, 1..60).prop_map(|sizes| {
        let mut first = 1;
        sizes
            .into_iter()
            .map(|count| {
                let packet = Packet::data(first, count);
                first += u64::from(count);
                packet
            })
            .collect()
    })
}

/// What the network does to each packet of a stream: how many copies arrive (0 = dropped,
/// 2 = duplicated), and where to add an overlapping retransmission of arbitrary bounds.
fn mangled() -> impl Strategy<Value = (Vec<Packet>, u64)> {
    (
        stream(),
        prop::collection::vec(
            prop_oneof![3 => Just(1_usize), 1 => Just(0), 1 => Just(2)],
            60,
        ),
        prop::collection::vec((any::<prop::sample::Index>(), 0_u64..8, 1_u16..10), 0..8),
    )
        .prop_map(|(stream, copies, retransmissions)| {
            let total = stream
                .last()
                .map_or(0, |p| p.first + u64::from(p.count) - 1);
            let mut packets = Vec::new();
            for (packet, &copies) in stream.iter().zip(copies.iter().cycle()) {
                packets.extend(std::iter::repeat_n(*packet, copies));
            }
            for (at, back, count) in retransmissions {
                if packets.is_empty() {
                    break;
                }
                // A retransmission of other bounds, starting a little before some packet.
                let base = packets[at.index(packets.len())];
                let first = base.first.saturating_sub(back).max(1);
                let count = count.min(u16::try_from(total + 1 - first).unwrap_or(u16::MAX));
                packets.insert(at.index(packets.len()), Packet::data(first, count));
            }
            (packets, total)
        })
}

proptest! {
    /// Without reordering (packets arrive by increasing first number, whatever was dropped
    /// or repeated), every distinct message that arrived is delivered exactly once, in
    /// order, and the missing ones are exactly those that never arrived below the highest.
    #[test]
    fn in_order_streams_deliver_every_arrival_once_and_report_every_loss(
        (mut packets, total) in mangled(),
        end_of_session in any::<bool>(),
    ) {
        packets.sort_by_key(|p| p.first);
        let arrived: BTreeSet<u64> = packets.iter().flat_map(Packet::messages).collect();
        let highest = arrived.last().copied().unwrap_or(0);
        let end = if end_of_session { total } else { highest };
        if end_of_session {
            packets.push(Packet { session: SESSION, first: total + 1, count: END_OF_SESSION_COUNT });
        }

        let mut tracker = SequenceTracker::new(StartAt::One);
        let outcome = run(&mut tracker, &packets);

        prop_assert!(strictly_increasing(&outcome.delivered));
        prop_assert_eq!(&outcome.delivered, &arrived.iter().copied().collect::<Vec<_>>());
        let never_arrived: Vec<u64> = (1..=end).filter(|n| !arrived.contains(n)).collect();
        prop_assert_eq!(&outcome.missing, &never_arrived);
        prop_assert_eq!(outcome.counters.missing, never_arrived.len() as u64);
        prop_assert_eq!(outcome.counters.messages, arrived.len() as u64);
        let received: u64 = packets.iter().map(|p| p.messages().count() as u64).sum();
        prop_assert_eq!(outcome.counters.duplicate_messages, received - arrived.len() as u64);
        prop_assert_eq!(tracker.next_expected(), Some(end + 1));
        prop_assert_eq!(tracker.ended(), end_of_session);
    }

    /// With reordering, a message is delivered if and only if it is beyond every number
    /// that arrived before it; the rest is old. Delivered and missing numbers never
    /// overlap, and together cover `1..next_expected` exactly.
    #[test]
    fn reordered_streams_deliver_in_order_and_account_for_every_number(
        (packets, _total) in mangled(),
        seed in any::<u64>(),
        heartbeats in prop::collection::vec((any::<prop::sample::Index>(), 1_u64..80), 0..4),
    ) {
        let mut packets = packets;
        shuffle_locally(&mut packets, seed);
        for (at, next) in heartbeats {
            let at = at.index(packets.len() + 1);
            packets.insert(at, Packet { session: SESSION, first: next, count: HEARTBEAT_COUNT });
        }

        let mut tracker = SequenceTracker::new(StartAt::One);
        let outcome = run(&mut tracker, &packets);

        // The model: the highest number accounted for so far, by messages or heartbeats.
        let mut expected = Vec::new();
        let mut accounted = 0_u64;
        for packet in &packets {
            if packet.is_data() {
                expected.extend(packet.messages().filter(|&n| n > accounted));
                accounted = accounted.max(packet.messages().end - 1);
            } else {
                accounted = accounted.max(packet.first - 1);
            }
        }
        prop_assert!(strictly_increasing(&outcome.delivered));
        prop_assert_eq!(&outcome.delivered, &expected);
        prop_assert!(strictly_increasing(&outcome.missing));
        let next = tracker.next_expected().unwrap();
        prop_assert_eq!(next, accounted + 1);
        let mut all: Vec<u64> = outcome.delivered.iter().chain(&outcome.missing).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (1..next).collect::<Vec<_>>());
        prop_assert_eq!(outcome.counters.missing + outcome.counters.messages, next - 1);
        let received: u64 = packets.iter().map(|p| p.messages().count() as u64).sum();
        prop_assert_eq!(outcome.counters.messages + outcome.counters.duplicate_messages, received);
    }

    /// A late joiner accounts for everything from the first number it saw, and nothing
    /// before.
    #[test]
    fn a_late_joiner_accounts_for_everything_from_where_it_joined(
        (packets, _total) in mangled(),
        seed in any::<u64>(),
    ) {
        let mut packets = packets;
        shuffle_locally(&mut packets, seed);
        prop_assume!(!packets.is_empty());
        let joined = packets[0].first;

        let mut tracker = SequenceTracker::new(StartAt::FirstSeen);
        let outcome = run(&mut tracker, &packets);

        prop_assert!(strictly_increasing(&outcome.delivered));
        let next = tracker.next_expected().unwrap();
        let mut all: Vec<u64> = outcome.delivered.iter().chain(&outcome.missing).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (joined..next).collect::<Vec<_>>());
    }

    /// Packets of another session, interleaved anywhere, change nothing.
    #[test]
    fn other_sessions_change_nothing(
        (packets, _total) in mangled(),
        intruders in prop::collection::vec((any::<prop::sample::Index>(), any::<u64>(), any::<u16>()), 0..10),
    ) {
        let mut tracker = SequenceTracker::with_session(SESSION, StartAt::One);
        let clean = run(&mut tracker, &packets);

        let mut mixed = packets.clone();
        for (at, first, count) in &intruders {
            let at = at.index(mixed.len() + 1);
            mixed.insert(at, Packet { session: OTHER, first: *first, count: *count });
        }
        let mut tracker = SequenceTracker::with_session(SESSION, StartAt::One);
        let outcome = run(&mut tracker, &mixed);

        prop_assert_eq!(&outcome.delivered, &clean.delivered);
        prop_assert_eq!(&outcome.missing, &clean.missing);
        prop_assert_eq!(outcome.counters.other_session, intruders.len() as u64);
    }

    /// After the end of session nothing is delivered and the tracker stays where it ended.
    #[test]
    fn nothing_is_delivered_after_the_end_of_session(
        (packets, total) in mangled(),
        after in prop::collection::vec((0_u64..100, any::<u16>()), 0..20),
    ) {
        let mut stream = packets;
        stream.push(Packet { session: SESSION, first: total + 1, count: END_OF_SESSION_COUNT });
        let mut tracker = SequenceTracker::new(StartAt::One);
        let before = run(&mut tracker, &stream);
        let end = tracker.next_expected();

        let later: Vec<Packet> = after.iter().map(|&(first, count)| Packet::data(first, count)).collect();
        let outcome = run(&mut tracker, &later);
        prop_assert!(outcome.delivered.is_empty());
        prop_assert!(outcome.missing.is_empty());
        prop_assert_eq!(tracker.next_expected(), end);
        prop_assert!(tracker.ended());
        prop_assert!(before.delivered.iter().all(|&n| n <= total));
    }

    /// Arbitrary headers, including sequence numbers near `u64::MAX` and every count,
    /// never panic and keep the delivery invariants.
    #[test]
    fn arbitrary_headers_never_break_the_invariants(
        headers in prop::collection::vec(
            (
                any::<bool>(),
                prop_oneof![any::<u64>(), (0_u64..0x2_0000).prop_map(|d| u64::MAX - d), 0_u64..100],
                prop_oneof![any::<u16>(), Just(0), Just(0xFFFE), Just(0xFFFF), 1_u16..4],
            ),
            0..40,
        ),
        start_at_one in any::<bool>(),
    ) {
        let start = if start_at_one { StartAt::One } else { StartAt::FirstSeen };
        let mut tracker = SequenceTracker::new(start);
        // Gaps may be astronomically large here: check ranges, don't list numbers.
        let mut last_delivered: Option<u64> = None;
        for (ours, first, count) in headers {
            let session = if ours { SESSION } else { OTHER };
            let before = (tracker.next_expected(), tracker.session(), tracker.ended());
            let verdict = tracker.handle_packet(session, first, count);
            let after = (tracker.next_expected(), tracker.session(), tracker.ended());
            if let (Some(before), Some(after)) = (before.0, after.0) {
                prop_assert!(after >= before);
            }
            if let (Some(gap), Some(next)) = (verdict.gap(), before.0) {
                prop_assert_eq!(gap.first_missing, next);
                if verdict.deliver_from().is_some() {
                    prop_assert_eq!(gap.end(), first, "a gap ends where the packet starts");
                } else {
                    prop_assert_eq!(after.0, Some(gap.end()), "a heartbeat moves past the gap");
                }
            }
            match verdict {
                Verdict::Deliver { skip, .. } => {
                    prop_assert!(skip < count && count != END_OF_SESSION_COUNT);
                    let from = first + u64::from(skip);
                    prop_assert!(last_delivered.is_none_or(|last| from > last));
                    last_delivered = Some(first + u64::from(count) - 1);
                    prop_assert_eq!(after.0, Some(first + u64::from(count)));
                }
                Verdict::OtherSession | Verdict::AfterEnd | Verdict::OutOfRange => {
                    prop_assert_eq!(before, after, "{:?} changes nothing", verdict);
                }
                Verdict::Duplicate | Verdict::Heartbeat { .. } | Verdict::EndOfSession { .. } => {}
            }
        }
    }
}

/// Moves each packet up to a few places, as a network that reorders would.
fn shuffle_locally(packets: &mut [Packet], mut seed: u64) {
    for i in 0..packets.len() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let reach = usize::try_from(seed >> 62).unwrap_or(0);
        let j = (i + reach).min(packets.len() - 1);
        packets.swap(i, j);
    }
}
