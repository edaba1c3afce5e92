//! Locking a subscription onto its sender (sans-IO): until a stream is bound to one
//! session from one sender, the packets of every sender that could be it are held here,
//! and the first sender whose packets follow on from each other a few times wins.
//!
//! Anyone who can reach the port can send a datagram that names the session, so the first
//! packet seen proves nothing. A real sender's packets continue from each other (each one
//! starts where the one before ended, or a little further after a loss); a stranger's
//! single forgery does not. [`Lock::offer`] takes a packet of some sender (its session and
//! source address), holds a copy and says when that sender has sent `lock_after`
//! consistent packets; the receive state then binds the stream to it and replays what was
//! held, in arrival order, so that nothing the real sender sent before the lock is lost.
//! The other senders' held packets are counted, never delivered.
//!
//! Room is allocated up front: [`CANDIDATES`] senders at a time, each with up to
//! [`HOLD_PACKETS`] packets and [`HOLD_BYTES`] bytes. A new sender when every place is
//! taken replaces the one with the fewest consistent packets (the oldest of those). A
//! packet that does not fit is not held; if its sender wins, the receive state sees the
//! hole as a gap (counted, never silent). Nothing here allocates after construction or
//! panics, whatever the input.

use std::net::SocketAddr;

use crate::wire::{END_OF_SESSION_COUNT, HEARTBEAT_COUNT};

/// Senders considered at once before the lock.
pub(crate) const CANDIDATES: usize = 4;
/// Packets held per sender before the lock.
pub(crate) const HOLD_PACKETS: usize = 16;
/// Bytes held per sender before the lock (two of the largest UDP datagrams).
pub(crate) const HOLD_BYTES: usize = 2 << 16;

/// One sender that may become the stream's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    /// Its session.
    pub(crate) session: [u8; 10],
    /// Its source address (`None`: the receive did not say).
    pub(crate) source: Option<SocketAddr>,
    /// Where its next packet should start: one past its last message, or the number its
    /// last heartbeat announced; 0 before its first packet.
    next: u64,
    /// Its packets that followed on from the one before (the first one counts).
    pub(crate) consistent: u8,
    /// Which run of packets following on from each other it is in: a packet that does
    /// not follow on from a lone first one starts a new run from itself.
    pub(crate) run: u32,
    /// Its packets held (and their bytes), and those that did not fit.
    packets: usize,
    bytes: usize,
    pub(crate) unheld: u64,
    /// When its first packet came, in offers (for ties).
    first_offer: u64,
}

/// A held packet: whose, where its bytes are, and when it arrived.
#[derive(Debug, Clone, Copy)]
struct Held {
    candidate: u8,
    run: u32,
    offset: usize,
    len: usize,
    at: u64,
    /// Where it came from, as the caller tags it (the receive state: its line).
    tag: u8,
}

/// What [`Lock::offer`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offered {
    /// The sender's place: it now has enough consistent packets to be locked onto.
    pub(crate) lock: Option<usize>,
    /// Packets of a sender that lost its place to this one (never to be delivered).
    pub(crate) evicted: u64,
}

/// The senders before the lock, with their packets. See the module docs.
#[derive(Debug)]
pub(crate) struct Lock {
    candidates: [Option<Candidate>; CANDIDATES],
    held: Vec<Held>,
    arena: Box<[u8]>,
    lock_after: u8,
    offers: u64,
}

impl Lock {
    /// Room for [`CANDIDATES`] senders; one locks after `lock_after` consistent packets
    /// (at least 1, at most [`HOLD_PACKETS`]).
    pub(crate) fn new(lock_after: u8) -> Lock {
        Lock {
            candidates: [None; CANDIDATES],
            held: Vec::with_capacity(CANDIDATES * HOLD_PACKETS),
            arena: vec![0; CANDIDATES * HOLD_BYTES].into_boxed_slice(),
            lock_after: lock_after.clamp(1, HOLD_PACKETS as u8),
            offers: 0,
        }
    }

    /// Takes one checked packet (`bytes`, whose header says `session`, `sequence` and
    /// `count`) from `source`, which arrived at `at` (`tag`: where it came from, given
    /// back with it by [`held`](Self::held)): holds a copy and says whether its
    /// sender is now to be locked onto. A packet follows on from its sender's previous one
    /// when it starts at or after where that one ended, by at most `window` numbers (for
    /// an end of session: exactly there).
    pub(crate) fn offer(
        &mut self,
        bytes: &[u8],
        (session, sequence, count): ([u8; 10], u64, u16),
        source: Option<SocketAddr>,
        window: u64,
        at: u64,
        tag: u8,
    ) -> Offered {
        self.offers += 1;
        let mut evicted = 0;
        let index = match self.find(session, source) {
            Some(i) => i,
            None => {
                let (i, lost) = self.place();
                evicted = lost;
                self.candidates[i] = Some(Candidate {
                    session,
                    source,
                    next: 0,
                    consistent: 0,
                    run: 0,
                    packets: 0,
                    bytes: 0,
                    unheld: 0,
                    first_offer: self.offers,
                });
                i
            }
        };
        let lock_after = self.lock_after;
        let Some(c) = self.candidates[index].as_mut() else {
            return Offered {
                lock: None,
                evicted,
            };
        };
        let follows = c.next == 0
            || match count {
                END_OF_SESSION_COUNT => sequence == c.next,
                _ => sequence >= c.next && sequence - c.next <= window,
            };
        // A lone first packet that the next one does not follow on from proves nothing
        // (a forgery that came first, say): the count starts again from the newer one.
        // Once two follow on from each other, a packet that does not (a duplicate, a
        // straggler) changes nothing.
        if follows || c.consistent <= 1 {
            if !follows {
                c.run += 1;
                c.consistent = 0;
            }
            c.next = match count {
                HEARTBEAT_COUNT | END_OF_SESSION_COUNT => sequence,
                // The packet was checked: its messages do not run past u64::MAX.
                n => sequence.saturating_add(u64::from(n)),
            };
            c.consistent = c.consistent.saturating_add(1);
        }
        let fits = c.packets < HOLD_PACKETS && c.bytes + bytes.len() <= HOLD_BYTES;
        if fits {
            let offset = index * HOLD_BYTES + c.bytes;
            self.arena[offset..offset + bytes.len()].copy_from_slice(bytes);
            c.packets += 1;
            c.bytes += bytes.len();
            self.held.push(Held {
                candidate: index as u8,
                run: c.run,
                offset,
                len: bytes.len(),
                at,
                tag,
            });
        } else {
            c.unheld += 1;
        }
        Offered {
            lock: (c.consistent >= lock_after).then_some(index),
            evicted,
        }
    }

    /// The sender to lock onto when the stream ends before any sender had enough
    /// consistent packets: the one with the most (the first to come of those).
    pub(crate) fn best(&self) -> Option<usize> {
        self.candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
            .max_by_key(|(_, c)| (c.consistent, std::cmp::Reverse(c.first_offer)))
            .map(|(i, _)| i)
    }

    /// The sender in place `index`.
    pub(crate) fn candidate(&self, index: usize) -> Option<&Candidate> {
        self.candidates.get(index)?.as_ref()
    }

    /// Every sender still in a place.
    pub(crate) fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.iter().flatten()
    }

    /// Every held packet in arrival order: its sender's place, its bytes, when it came,
    /// whether it is of its sender's last run (see [`Candidate::run`]), and its tag.
    pub(crate) fn held(&self) -> impl Iterator<Item = (usize, &[u8], u64, bool, u8)> {
        self.held.iter().map(|h| {
            let place = usize::from(h.candidate);
            let last_run = self
                .candidates
                .get(place)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.run == h.run);
            (
                place,
                &self.arena[h.offset..h.offset + h.len],
                h.at,
                last_run,
                h.tag,
            )
        })
    }

    fn find(&self, session: [u8; 10], source: Option<SocketAddr>) -> Option<usize> {
        self.candidates
            .iter()
            .position(|c| c.is_some_and(|c| c.session == session && c.source == source))
    }

    /// A free place, or the weakest sender's (whose packets are let go: returned as how
    /// many, held or not).
    fn place(&mut self) -> (usize, u64) {
        if let Some(free) = self.candidates.iter().position(Option::is_none) {
            return (free, 0);
        }
        let weakest = self
            .candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
            .min_by_key(|(_, c)| (c.consistent, c.first_offer))
            .map_or(0, |(i, _)| i);
        let lost = self.candidates[weakest]
            .take()
            .map_or(0, |c| c.packets as u64 + c.unheld);
        self.held.retain(|h| usize::from(h.candidate) != weakest);
        (weakest, lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: [u8; 10] = *b"FEED      ";

    fn from(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn a_sender_locks_after_enough_packets_that_follow_on_and_a_forgery_does_not() {
        let mut lock = Lock::new(3);
        // A stranger's far-future packet first, then the real stream (one lost packet).
        let stranger = lock.offer(b"x", (REAL, 1 << 63, 1), from(9), 1 << 30, 0, 0);
        assert_eq!(stranger.lock, None);
        assert_eq!(
            lock.offer(b"a", (REAL, 1, 1), from(5), 1 << 30, 1, 0).lock,
            None
        );
        assert_eq!(
            lock.offer(b"b", (REAL, 3, 1), from(5), 1 << 30, 2, 0).lock,
            None
        );
        let third = lock.offer(b"c", (REAL, 4, 2), from(5), 1 << 30, 3, 0);
        assert_eq!(third.lock, Some(1));
        let held: Vec<_> = lock
            .held()
            .map(|(c, b, at, _, _)| (c, b.to_vec(), at))
            .collect();
        assert_eq!(
            held,
            [
                (0, b"x".to_vec(), 0),
                (1, b"a".to_vec(), 1),
                (1, b"b".to_vec(), 2),
                (1, b"c".to_vec(), 3)
            ]
        );
    }

    #[test]
    fn packets_that_do_not_follow_on_are_held_but_do_not_count() {
        let mut lock = Lock::new(3);
        // Two that follow on, then an old one, one too far ahead, and an end of session
        // elsewhere than where 11 ended.
        for (msg, sequence, count) in [
            (b"a", 10, 1),
            (b"b", 11, 1),
            (b"c", 3, 1),
            (b"d", 500, 1),
            (b"e", 13, 0xFFFF),
        ] {
            let offered = lock.offer(msg, (REAL, sequence, count), from(5), 100, 0, 0);
            assert_eq!(offered.lock, None, "{sequence}");
        }
        assert_eq!(lock.held().count(), 5);
        assert_eq!(
            lock.offer(b"f", (REAL, 12, 0), from(5), 100, 0, 0).lock,
            Some(0)
        );
        assert!(lock.held().all(|(_, _, _, last_run, _)| last_run));
    }

    #[test]
    fn a_lone_first_packet_the_next_does_not_follow_starts_the_count_again() {
        let mut lock = Lock::new(3);
        // Forged as the sender, far ahead, before the real stream.
        lock.offer(b"x", (REAL, 1 << 62, 1), from(5), 100, 0, 0);
        lock.offer(b"a", (REAL, 1, 1), from(5), 100, 0, 0);
        lock.offer(b"b", (REAL, 2, 1), from(5), 100, 0, 0);
        assert_eq!(
            lock.offer(b"c", (REAL, 3, 1), from(5), 100, 0, 0).lock,
            Some(0)
        );
        let runs: Vec<bool> = lock.held().map(|(_, _, _, last_run, _)| last_run).collect();
        assert_eq!(
            runs,
            [false, true, true, true],
            "the forgery is not of the run"
        );
    }

    #[test]
    fn a_new_sender_when_every_place_is_taken_replaces_the_weakest() {
        let mut lock = Lock::new(3);
        lock.offer(b"a", (REAL, 1, 1), from(1), 100, 0, 0);
        lock.offer(b"a", (REAL, 2, 1), from(1), 100, 0, 0);
        for port in 2..=4 {
            lock.offer(b"b", (REAL, 1, 1), from(port), 100, 0, 0);
        }
        // Port 2 is the oldest of the weakest: it goes, with its one packet.
        let offered = lock.offer(b"c", (REAL, 1, 1), from(5), 100, 0, 0);
        assert_eq!(offered.evicted, 1);
        let ports: Vec<u16> = lock
            .candidates()
            .filter_map(|c| c.source.map(|s| s.port()))
            .collect();
        assert_eq!(ports, [1, 5, 3, 4]);
        assert_eq!(lock.held().filter(|&(c, _, _, _, _)| c == 1).count(), 1);
        assert_eq!(lock.best(), Some(0), "port 1 has two consistent packets");
    }

    #[test]
    fn what_does_not_fit_is_counted_not_held() {
        let mut lock = Lock::new(HOLD_PACKETS as u8);
        let big = vec![7u8; HOLD_BYTES / 2 + 1];
        lock.offer(&big, (REAL, 1, 1), from(1), 100, 0, 0);
        lock.offer(&big, (REAL, 2, 1), from(1), 100, 0, 0);
        assert_eq!(lock.held().count(), 1);
        assert_eq!(lock.candidate(0).map(|c| c.unheld), Some(1));
    }
}
