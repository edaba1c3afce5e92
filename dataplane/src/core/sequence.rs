//! Sequencing and gap detection for one MoldUDP64 subscription (sans-IO).
//!
//! A [`SequenceTracker`] is fed the header of every packet received on one subscription
//! ([`SequenceTracker::handle_packet`]) and answers with a [`Verdict`]: which messages of
//! the packet to deliver, whether the packet reveals a [`Gap`], or why it is ignored. It
//! owns no socket, reads no clock, never allocates and never panics, whatever the input.
//!
//! # Contract
//!
//! - **Order.** Messages are delivered in strictly increasing sequence order, each at most
//!   once. The tracker keeps one number, the *next expected* sequence number; a message is
//!   delivered if and only if it is at or beyond that number when its packet arrives.
//! - **Gaps.** When a data packet, a heartbeat or an end-of-session packet points beyond the
//!   next expected number, the numbers in between are reported once as a [`Gap`] and the
//!   tracker moves past them. Reported gaps and delivered messages are disjoint and together
//!   cover every number from the start up to the next expected one.
//! - **Reordering.** The tracker does not wait for stragglers. A message that arrives after
//!   a later one has moved the tracker past it was already reported missing; it is then old
//!   and reported as [`Verdict::Duplicate`] (or, for part of a packet, skipped). Recovering
//!   the messages of a gap is the job of MoldUDP64 re-requests, handled elsewhere, which
//!   deliver them out of band.
//! - **Session lock.** The tracker adopts the first session it sees (or the one it was
//!   built with). Packets of any other session are [`Verdict::OtherSession`] and change
//!   nothing; following a new session takes a new tracker.
//! - **Trust.** The tracker believes every number it is given: it is the receive state
//!   ([`crate::core::receive`]) that binds a stream to one sender and holds implausible
//!   jumps and ends back before they reach it.
//! - **End of session.** After an end-of-session packet nothing more is delivered: anything
//!   that would move the tracker beyond the end is [`Verdict::AfterEnd`].
//! - **Arithmetic.** All arithmetic is checked. A data packet whose messages would run past
//!   sequence number `u64::MAX` cannot be genuine and is [`Verdict::OutOfRange`].
//!
//! # Example
//!
//! ```
//! use multipoint_dataplane::core::sequence::{Gap, SequenceCounters, SequenceTracker, StartAt, Verdict};
//!
//! let session = *b"SESSION001";
//! let mut tracker = SequenceTracker::new(StartAt::One);
//! let mut counters = SequenceCounters::default();
//!
//! // Messages 1..=3 arrive, then 6..=7: 4 and 5 were lost.
//! for (first, count) in [(1, 3), (6, 2)] {
//!     let verdict = tracker.handle_packet(session, first, count);
//!     counters.apply(&verdict, count);
//! }
//! assert_eq!(tracker.next_expected(), Some(8));
//! assert_eq!(counters.missing, 2);
//!
//! // A retransmission of 5..=9 delivers only 8 and 9: skip the first three messages.
//! let verdict = tracker.handle_packet(session, 5, 5);
//! assert_eq!(verdict, Verdict::Deliver { skip: 3, gap: None });
//!
//! // A heartbeat announcing 12 as the next number reveals that 10 and 11 were lost.
//! let verdict = tracker.handle_packet(session, 12, 0);
//! assert_eq!(
//!     verdict,
//!     Verdict::Heartbeat { gap: Some(Gap { first_missing: 10, count: 2 }) }
//! );
//! ```

use crate::wire::{END_OF_SESSION_COUNT, HEARTBEAT_COUNT};

/// Where a tracker considers the stream to begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartAt {
    /// The stream begins at sequence number 1: if the first packet seen starts later, the
    /// messages before it are reported as a gap, since nothing may be lost silently.
    #[default]
    One,
    /// The stream begins wherever the first packet seen says (a late joiner): the first data
    /// packet, heartbeat or end-of-session packet sets the next expected number without a gap.
    FirstSeen,
    /// The stream begins at this sequence number (a rooted leaf told where its membership
    /// starts): anything wholly before it is a duplicate, and a first packet starting after
    /// it is a gap.
    At(u64),
}

/// A run of consecutive sequence numbers that will not be delivered in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gap {
    /// The first missing sequence number.
    pub first_missing: u64,
    /// How many consecutive numbers are missing, at least 1.
    pub count: u64,
}

impl Gap {
    /// One past the last missing sequence number: the gap is `first_missing..end()`.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.first_missing.saturating_add(self.count)
    }

    /// Whether `sequence` is one of the missing numbers.
    #[must_use]
    pub fn contains(&self, sequence: u64) -> bool {
        sequence >= self.first_missing && sequence - self.first_missing < self.count
    }
}

/// What to do with one packet, as decided by [`SequenceTracker::handle_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a verdict says which messages to deliver and which are missing"]
pub enum Verdict {
    /// A data packet with new messages: deliver its messages from index `skip` (0-based,
    /// always below the packet's count) to its end. `skip` is non-zero when the packet's
    /// first messages were already delivered (an overlapping retransmission).
    Deliver {
        /// How many leading messages of the packet are old and must not be delivered.
        skip: u16,
        /// The messages missing between the previous next-expected number and this packet.
        gap: Option<Gap>,
    },
    /// A data packet whose messages are all older than the next expected number: they were
    /// delivered already, or reported missing. Deliver nothing.
    Duplicate,
    /// A heartbeat (message count 0). `gap` is set when its next-expected number is beyond
    /// the tracker's.
    Heartbeat {
        /// The messages the heartbeat shows to be missing.
        gap: Option<Gap>,
    },
    /// An end-of-session packet (message count `0xFFFF`); reported for every such packet,
    /// repeats included (see [`SequenceTracker::ended`]). `gap` is set when its
    /// next-expected number is beyond the tracker's.
    EndOfSession {
        /// The messages the end of session shows to be missing.
        gap: Option<Gap>,
    },
    /// A packet of another session than the one the tracker follows. Nothing changed.
    OtherSession,
    /// After the end of the session, a packet that would move the tracker beyond the end:
    /// data with new messages, or a heartbeat or end-of-session packet pointing further.
    /// Deliver nothing; nothing changed.
    AfterEnd,
    /// A data packet whose messages would run past sequence number `u64::MAX`: a corrupt
    /// header. Deliver nothing; nothing changed (not even the session lock).
    OutOfRange,
}

impl Verdict {
    /// The gap this verdict reports, if any.
    #[must_use]
    pub fn gap(&self) -> Option<Gap> {
        match *self {
            Verdict::Deliver { gap, .. }
            | Verdict::Heartbeat { gap }
            | Verdict::EndOfSession { gap } => gap,
            Verdict::Duplicate
            | Verdict::OtherSession
            | Verdict::AfterEnd
            | Verdict::OutOfRange => None,
        }
    }

    /// How many leading messages to skip if the packet is to be delivered; `None` if none
    /// of its messages are.
    #[must_use]
    pub fn deliver_from(&self) -> Option<u16> {
        match *self {
            Verdict::Deliver { skip, .. } => Some(skip),
            _ => None,
        }
    }
}

/// Gap detection for one subscription; see the [module documentation](self).
///
/// `S` is the session identifier: the raw 10 session bytes by default, or any `Copy + Eq`
/// type standing for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceTracker<S = [u8; 10]> {
    start: StartAt,
    session: Option<S>,
    /// `None` only with [`StartAt::FirstSeen`] before the first packet of the session.
    next: Option<u64>,
    ended: bool,
}

/// How a packet's message count field is to be read.
#[derive(Clone, Copy)]
enum Kind {
    Data { end: u64 },
    Heartbeat,
    EndOfSession,
}

impl<S: Copy + Eq> SequenceTracker<S> {
    /// A tracker that adopts the session of the first packet it is given.
    #[must_use]
    pub fn new(start: StartAt) -> Self {
        Self {
            start,
            session: None,
            next: match start {
                StartAt::One => Some(1),
                StartAt::FirstSeen => None,
                StartAt::At(n) => Some(n.max(1)),
            },
            ended: false,
        }
    }

    /// A tracker that follows `session` only, from the start of the stream.
    #[must_use]
    pub fn with_session(session: S, start: StartAt) -> Self {
        Self {
            session: Some(session),
            ..Self::new(start)
        }
    }

    /// Feeds in the header of one received packet: its session, the sequence number of its
    /// first message (for a heartbeat or end of session, the next expected number) and its
    /// message count (0 heartbeat, `0xFFFF` end of session, otherwise data).
    ///
    /// Call it once per packet, in arrival order; the verdict says what to deliver.
    pub fn handle_packet(&mut self, session: S, first_sequence: u64, count: u16) -> Verdict {
        if self.session.is_some_and(|locked| locked != session) {
            return Verdict::OtherSession;
        }
        let kind = match count {
            HEARTBEAT_COUNT => Kind::Heartbeat,
            END_OF_SESSION_COUNT => Kind::EndOfSession,
            n => match first_sequence.checked_add(u64::from(n)) {
                Some(end) => Kind::Data { end },
                None => return Verdict::OutOfRange,
            },
        };
        self.session = Some(session);
        // A late joiner starts wherever the first packet says.
        let next = *self.next.get_or_insert(first_sequence);

        match kind {
            Kind::Data { end } => {
                if end <= next {
                    Verdict::Duplicate
                } else if self.ended {
                    Verdict::AfterEnd
                } else {
                    self.next = Some(end);
                    match first_sequence.checked_sub(next) {
                        // At or beyond the next expected number.
                        Some(missing) => Verdict::Deliver {
                            skip: 0,
                            gap: gap(next, missing),
                        },
                        // Overlap: next - first < end - first = count, so it fits a u16.
                        None => Verdict::Deliver {
                            skip: u16::try_from(next - first_sequence).unwrap_or(count),
                            gap: None,
                        },
                    }
                }
            }
            Kind::Heartbeat | Kind::EndOfSession => {
                let missing = first_sequence.saturating_sub(next);
                if self.ended && missing > 0 {
                    return Verdict::AfterEnd;
                }
                let gap = gap(next, missing);
                if gap.is_some() {
                    self.next = Some(first_sequence);
                }
                if let Kind::Heartbeat = kind {
                    Verdict::Heartbeat { gap }
                } else {
                    self.ended = true;
                    Verdict::EndOfSession { gap }
                }
            }
        }
    }

    /// The next sequence number to be delivered; `None` only for a [`StartAt::FirstSeen`]
    /// tracker that has seen nothing of its session yet.
    #[must_use]
    pub fn next_expected(&self) -> Option<u64> {
        self.next
    }

    /// The session followed, once known.
    #[must_use]
    pub fn session(&self) -> Option<S> {
        self.session
    }

    /// Whether an end-of-session packet has been seen.
    #[must_use]
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The start policy the tracker was built with.
    #[must_use]
    pub fn start_at(&self) -> StartAt {
        self.start
    }
}

fn gap(first_missing: u64, count: u64) -> Option<Gap> {
    (count > 0).then_some(Gap {
        first_missing,
        count,
    })
}

/// Running totals over the verdicts of one tracker (or several, with [`merge`](Self::merge)).
///
/// Feed every verdict in with [`apply`](Self::apply). All counters saturate instead of
/// overflowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SequenceCounters {
    /// Packets seen, of every kind and verdict.
    pub packets: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Sequence numbers reported missing, summed over all gaps. Numbers that arrive after
    /// their gap was reported stay counted here (and also under `duplicate_messages`).
    pub missing: u64,
    /// Data packets that were wholly or partly old (duplicates or overlapping
    /// retransmissions).
    pub duplicates: u64,
    /// Old messages in those packets, not delivered.
    pub duplicate_messages: u64,
    /// Packets of another session.
    pub other_session: u64,
    /// Packets after the end of the session that would have moved beyond it.
    pub after_end: u64,
    /// Data packets whose sequence numbers would overflow.
    pub out_of_range: u64,
}

impl SequenceCounters {
    /// Accounts for one packet: its verdict and the message count from its header.
    pub fn apply(&mut self, verdict: &Verdict, count: u16) {
        bump(&mut self.packets, 1);
        if let Some(gap) = verdict.gap() {
            bump(&mut self.gaps, 1);
            bump(&mut self.missing, gap.count);
        }
        match *verdict {
            Verdict::Deliver { skip, .. } => {
                bump(&mut self.messages, u64::from(count.saturating_sub(skip)));
                if skip > 0 {
                    bump(&mut self.duplicates, 1);
                    bump(&mut self.duplicate_messages, u64::from(skip));
                }
            }
            Verdict::Duplicate => {
                bump(&mut self.duplicates, 1);
                bump(&mut self.duplicate_messages, u64::from(count));
            }
            Verdict::OtherSession => bump(&mut self.other_session, 1),
            Verdict::AfterEnd => bump(&mut self.after_end, 1),
            Verdict::OutOfRange => bump(&mut self.out_of_range, 1),
            Verdict::Heartbeat { .. } | Verdict::EndOfSession { .. } => {}
        }
    }

    /// Adds another set of counters to these (e.g. to total several subscriptions).
    pub fn merge(&mut self, other: &SequenceCounters) {
        bump(&mut self.packets, other.packets);
        bump(&mut self.messages, other.messages);
        bump(&mut self.gaps, other.gaps);
        bump(&mut self.missing, other.missing);
        bump(&mut self.duplicates, other.duplicates);
        bump(&mut self.duplicate_messages, other.duplicate_messages);
        bump(&mut self.other_session, other.other_session);
        bump(&mut self.after_end, other.after_end);
        bump(&mut self.out_of_range, other.out_of_range);
    }
}

fn bump(counter: &mut u64, by: u64) {
    *counter = counter.saturating_add(by);
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 10] = *b"SESSION-AA";
    const B: [u8; 10] = *b"SESSION-BB";

    fn tracker() -> SequenceTracker {
        SequenceTracker::new(StartAt::One)
    }

    fn deliver(skip: u16) -> Verdict {
        Verdict::Deliver { skip, gap: None }
    }

    /// The message counts of an end of session and a heartbeat.
    const END: u16 = crate::wire::END_OF_SESSION_COUNT;
    const HB: u16 = crate::wire::HEARTBEAT_COUNT;

    fn ended(gap: Option<Gap>) -> Verdict {
        Verdict::EndOfSession { gap }
    }

    fn heartbeat(gap: Option<Gap>) -> Verdict {
        Verdict::Heartbeat { gap }
    }

    /// A whole data packet delivered after the gap `first_missing..+count`.
    fn gapped(first_missing: u64, count: u64) -> Verdict {
        Verdict::Deliver {
            skip: 0,
            gap: gap_of(first_missing, count),
        }
    }

    fn gap_of(first_missing: u64, count: u64) -> Option<Gap> {
        Some(Gap {
            first_missing,
            count,
        })
    }

    #[test]
    fn consecutive_packets_are_delivered_whole_without_gaps() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 3), deliver(0));
        assert_eq!(t.handle_packet(A, 4, 1), deliver(0));
        assert_eq!(t.handle_packet(A, 5, 10), deliver(0));
        assert_eq!(t.next_expected(), Some(15));
    }

    #[test]
    fn a_packet_after_a_missing_one_reports_the_gap() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 2), deliver(0));
        assert_eq!(t.handle_packet(A, 6, 2), gapped(3, 3));
        assert_eq!(t.next_expected(), Some(8));
    }

    #[test]
    fn a_stream_not_starting_at_one_reports_the_beginning_as_missing() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 100, 1), gapped(1, 99));
    }

    #[test]
    fn a_late_joiner_starts_wherever_the_stream_is() {
        let mut t = SequenceTracker::new(StartAt::FirstSeen);
        assert_eq!(t.next_expected(), None);
        assert_eq!(t.handle_packet(A, 100, 2), deliver(0));
        assert_eq!(t.next_expected(), Some(102));
        assert_eq!(t.handle_packet(A, 99, 1), Verdict::Duplicate);
    }

    #[test]
    fn a_stream_promised_from_a_number_drops_what_is_older_and_reports_what_is_missing() {
        let mut t = SequenceTracker::new(StartAt::At(100));
        assert_eq!(t.next_expected(), Some(100));
        // A previous membership's tail: wholly older, not delivered.
        assert_eq!(t.handle_packet(A, 90, 5), Verdict::Duplicate);
        // A packet straddling the start delivers only its part from 100 on.
        assert_eq!(t.handle_packet(A, 98, 4), deliver(2));
        assert_eq!(t.next_expected(), Some(102));
        let mut t = SequenceTracker::new(StartAt::At(100));
        assert_eq!(t.handle_packet(A, 105, 1), gapped(100, 5));
    }

    #[test]
    fn a_late_joiner_may_start_from_a_heartbeat() {
        let mut t = SequenceTracker::new(StartAt::FirstSeen);
        assert_eq!(t.handle_packet(A, 50, HB), heartbeat(None));
        assert_eq!(t.next_expected(), Some(50));
        assert_eq!(t.handle_packet(A, 51, 1), gapped(50, 1));
    }

    #[test]
    fn a_repeated_packet_is_a_duplicate() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 3), deliver(0));
        assert_eq!(t.handle_packet(A, 1, 3), Verdict::Duplicate);
        assert_eq!(t.handle_packet(A, 2, 2), Verdict::Duplicate);
        assert_eq!(t.next_expected(), Some(4));
    }

    #[test]
    fn an_overlapping_retransmission_delivers_only_the_new_messages() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 5), deliver(0));
        assert_eq!(t.handle_packet(A, 3, 6), deliver(3));
        assert_eq!(t.next_expected(), Some(9));
    }

    #[test]
    fn a_late_arrival_after_its_gap_was_reported_is_old() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 1), deliver(0));
        assert_eq!(t.handle_packet(A, 3, 1), gapped(2, 1));
        assert_eq!(t.handle_packet(A, 2, 1), Verdict::Duplicate);
    }

    #[test]
    fn a_heartbeat_at_the_next_number_reports_nothing_missing() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 4), deliver(0));
        assert_eq!(t.handle_packet(A, 5, HB), heartbeat(None));
    }

    #[test]
    fn a_heartbeat_beyond_the_next_number_reports_the_gap() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 4), deliver(0));
        assert_eq!(t.handle_packet(A, 9, HB), heartbeat(gap_of(5, 4)));
        assert_eq!(t.next_expected(), Some(9));
    }

    #[test]
    fn a_stale_heartbeat_changes_nothing() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 4), deliver(0));
        assert_eq!(t.handle_packet(A, 2, HB), heartbeat(None));
        assert_eq!(t.next_expected(), Some(5));
    }

    #[test]
    fn the_end_of_session_reports_the_messages_lost_before_it() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 4), deliver(0));
        assert!(!t.ended());
        assert_eq!(t.handle_packet(A, 7, END), ended(gap_of(5, 2)));
        assert!(t.ended());
        assert_eq!(t.next_expected(), Some(7));
    }

    #[test]
    fn data_after_the_end_of_session_is_not_delivered() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 4), deliver(0));
        assert_eq!(t.handle_packet(A, 5, END), ended(None));
        assert_eq!(t.handle_packet(A, 5, 1), Verdict::AfterEnd);
        assert_eq!(t.handle_packet(A, 3, 4), Verdict::AfterEnd);
        assert_eq!(t.handle_packet(A, 9, HB), Verdict::AfterEnd);
        assert_eq!(t.handle_packet(A, 9, END), Verdict::AfterEnd);
        assert_eq!(t.next_expected(), Some(5));
    }

    #[test]
    fn old_data_and_repeated_ends_after_the_end_are_reported_as_usual() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 4), deliver(0));
        assert_eq!(t.handle_packet(A, 5, END), ended(None));
        assert_eq!(t.handle_packet(A, 2, 2), Verdict::Duplicate);
        assert_eq!(t.handle_packet(A, 5, END), ended(None));
        assert_eq!(t.handle_packet(A, 5, HB), heartbeat(None));
    }

    #[test]
    fn the_first_session_seen_is_adopted_and_others_are_ignored() {
        let mut t = tracker();
        assert_eq!(t.session(), None);
        assert_eq!(t.handle_packet(A, 1, 2), deliver(0));
        assert_eq!(t.session(), Some(A));
        assert_eq!(t.handle_packet(B, 10, 2), Verdict::OtherSession);
        assert_eq!(t.handle_packet(B, 10, END), Verdict::OtherSession);
        assert_eq!(t.next_expected(), Some(3));
        assert!(!t.ended());
        assert_eq!(t.handle_packet(A, 3, 1), deliver(0));
    }

    #[test]
    fn a_session_given_at_construction_is_the_only_one_followed() {
        let mut t = SequenceTracker::with_session(B, StartAt::One);
        assert_eq!(t.handle_packet(A, 1, 2), Verdict::OtherSession);
        assert_eq!(t.handle_packet(B, 1, 2), deliver(0));
    }

    #[test]
    fn sequence_numbers_near_the_top_of_the_range_never_overflow() {
        let mut t = SequenceTracker::new(StartAt::FirstSeen);
        let top = u64::MAX - 0xFFFE;
        assert_eq!(t.handle_packet(A, top, 0xFFFE), deliver(0));
        assert_eq!(t.next_expected(), Some(u64::MAX));
        assert_eq!(t.handle_packet(A, u64::MAX, 1), Verdict::OutOfRange);
        assert_eq!(
            t.handle_packet(A, u64::MAX - 1, 0xFFFE),
            Verdict::OutOfRange
        );
        assert_eq!(t.handle_packet(A, top, 0xFFFE), Verdict::Duplicate);
        assert_eq!(t.handle_packet(A, u64::MAX, HB), heartbeat(None));
        assert_eq!(t.next_expected(), Some(u64::MAX));
    }

    #[test]
    fn a_packet_from_the_beginning_of_time_to_the_top_reports_one_huge_gap() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, u64::MAX - 1, 1), gapped(1, u64::MAX - 2));
        let mut t = tracker();
        assert_eq!(
            t.handle_packet(A, u64::MAX, END),
            ended(gap_of(1, u64::MAX - 1))
        );
    }

    #[test]
    fn an_out_of_range_packet_does_not_lock_the_session() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, u64::MAX, 2), Verdict::OutOfRange);
        assert_eq!(t.session(), None);
        assert_eq!(t.handle_packet(B, 1, 1), deliver(0));
    }

    #[test]
    fn sequence_zero_is_older_than_the_start() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 0, 1), Verdict::Duplicate);
        assert_eq!(t.handle_packet(A, 0, 2), deliver(1));
    }

    #[test]
    fn a_maximal_overlap_skips_all_but_the_last_message() {
        let mut t = tracker();
        assert_eq!(t.handle_packet(A, 1, 0xFFFE), deliver(0));
        assert_eq!(t.handle_packet(A, 2, 0xFFFE), deliver(0xFFFD));
    }

    #[test]
    fn counters_add_up_messages_gaps_and_duplicates() {
        let mut t = tracker();
        let mut c = SequenceCounters::default();
        for (session, first, count) in [
            (A, 1, 3),        // 1..=3 delivered
            (A, 6, 2),        // gap 4..=5, 6..=7 delivered
            (A, 2, 2),        // duplicate of 2 messages
            (A, 7, 3),        // 1 old, 8..=9 delivered
            (B, 1, 1),        // other session
            (A, 12, HB),      // gap 10..=11
            (A, 12, END),     // end
            (A, 12, 1),       // after end
            (A, u64::MAX, 2), // out of range
        ] {
            let verdict = t.handle_packet(session, first, count);
            c.apply(&verdict, count);
        }
        assert_eq!(
            c,
            SequenceCounters {
                packets: 9,
                messages: 7,
                gaps: 2,
                missing: 4,
                duplicates: 2,
                duplicate_messages: 3,
                other_session: 1,
                after_end: 1,
                out_of_range: 1,
            }
        );
        let mut total = c;
        total.merge(&c);
        assert_eq!(total.messages, 14);
        assert_eq!(total.out_of_range, 2);
    }

    #[test]
    fn a_gap_knows_its_bounds() {
        let g = Gap {
            first_missing: 5,
            count: 3,
        };
        assert_eq!(g.end(), 8);
        assert!(!g.contains(4));
        assert!(g.contains(5));
        assert!(g.contains(7));
        assert!(!g.contains(8));
    }
}
