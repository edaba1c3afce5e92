//! The reorder window of a receive state (sans-IO): packets that arrive ahead of a missing
//! one are held, for at most the window, so that the missing one can still come first.
//!
//! The receive state decides what to hold ([`Reorder::hold`]) and when to let go
//! ([`Reorder::next_due`]); this module only keeps the packets: copies in one arena
//! allocated up front, listed by sequence number, each with the time it is held until.
//! The arena is a ring, reused as held packets are let go; a packet that does not fit
//! is not held (the receive state then declares the gap at once).

use std::collections::VecDeque;

/// A held packet: where its bytes are, the sequence numbers it carries, and until when it
/// waits (on the latency clock, nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// The sequence number of its first message.
    pub(crate) first: u64,
    /// When it stops waiting for what is missing before it.
    pub(crate) until: u64,
    /// Where it came from, as the receive state tags it (a line, or a reply).
    pub(crate) tag: u8,
    /// Its allocation's number (see [`Reorder`]).
    alloc: u64,
    offset: usize,
    len: usize,
}

/// One allocation in the arena, in the order they were made: where it ends (absolute,
/// counting any bytes skipped at the arena's end to keep it contiguous), the packet's
/// first number and wait, and whether it was let go.
#[derive(Debug, Clone, Copy)]
struct Alloc {
    end: u64,
    first: u64,
    until: u64,
    freed: bool,
}

/// The held packets. See the module docs.
///
/// The arena is a ring: packets are copied in at its tail and its head moves on over
/// every allocation let go, in the order they were made. Packets are mostly let go in
/// the order they came, so little room stays taken by one let go early behind one still
/// held. Waits end in the order packets were held (a packet waits at least as long as
/// the one held before it), so the earliest deadline is the oldest allocation's: no
/// search.
#[derive(Debug)]
pub(crate) struct Reorder {
    arena: Box<[u8]>,
    /// Absolute positions in the ring: where the oldest allocation still taken starts,
    /// and where the next one goes.
    head: u64,
    tail: u64,
    /// Allocations from the oldest still taken on (capacity reserved up front); the
    /// first is number `base`, and is never one let go.
    allocs: VecDeque<Alloc>,
    base: u64,
    /// Held packets, by increasing first sequence number (capacity reserved up front).
    held: VecDeque<Held>,
}

impl Reorder {
    /// Room for `packets` packets and `bytes` bytes of them.
    pub(crate) fn new(packets: usize, bytes: usize) -> Reorder {
        Reorder {
            arena: vec![0; bytes].into_boxed_slice(),
            head: 0,
            tail: 0,
            allocs: VecDeque::with_capacity(packets),
            base: 0,
            held: VecDeque::with_capacity(packets),
        }
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The earliest time a held packet stops waiting.
    pub(crate) fn deadline(&self) -> Option<u64> {
        self.allocs.front().map(|a| a.until)
    }

    /// Holds a copy of `packet`, whose first message is `first` (`tag`: where it came
    /// from, as the caller tags it), until `until` (or, if the packet held before waits
    /// longer, as long as that one); returns whether there was room.
    pub(crate) fn hold(&mut self, packet: &[u8], first: u64, until: u64, tag: u8) -> bool {
        let size = self.arena.len() as u64;
        let len = packet.len() as u64;
        if self.held.len() == self.held.capacity()
            || self.allocs.len() == self.allocs.capacity()
            || len > size
        {
            return false;
        }
        // Contiguous: a packet that would run past the arena's end starts at its
        // beginning, the bytes skipped counted as its own.
        let at = self.tail % size.max(1);
        let start = if at + len > size {
            self.tail + (size - at)
        } else {
            self.tail
        };
        let end = start + len;
        if end - self.head > size {
            return false;
        }
        let offset = (start % size.max(1)) as usize;
        self.arena[offset..offset + packet.len()].copy_from_slice(packet);
        let until = self.allocs.back().map_or(until, |a| a.until.max(until));
        let alloc = self.base + self.allocs.len() as u64;
        self.allocs.push_back(Alloc {
            end,
            first,
            until,
            freed: false,
        });
        self.tail = end;
        let held = Held {
            first,
            until,
            tag,
            alloc,
            offset,
            len: packet.len(),
        };
        // Most packets come in order: the end is the common place.
        if self.held.back().is_none_or(|h| h.first <= first) {
            self.held.push_back(held);
        } else {
            let at = self.held.partition_point(|h| h.first <= first);
            self.held.insert(at, held);
        }
        true
    }

    /// The held packet to let go next, if any is due: the lowest-numbered one that
    /// `next` reaches (its turn has come), or, once any held packet's time ran out at
    /// `now`, every one up to and including the highest-numbered expired one, in order.
    pub(crate) fn next_due(&self, next: u64, now: u64) -> Option<Held> {
        let first = *self.held.front()?;
        if first.first <= next {
            return Some(first);
        }
        // Those whose wait ran out are the oldest allocations.
        let expired = self
            .allocs
            .iter()
            .take_while(|a| a.until <= now)
            .filter(|a| !a.freed)
            .map(|a| a.first)
            .max();
        expired
            .is_some_and(|upto| first.first <= upto)
            .then_some(first)
    }

    /// The lowest-numbered held packet if `next` reaches it (its turn has come).
    pub(crate) fn next_turn(&self, next: u64) -> Option<Held> {
        self.held.front().filter(|h| h.first <= next).copied()
    }

    /// The lowest-numbered held packet, whatever its time (to let everything go).
    pub(crate) fn first(&self) -> Option<Held> {
        self.held.front().copied()
    }

    /// The bytes of `held`, which is still held.
    pub(crate) fn bytes(&self, held: &Held) -> &[u8] {
        self.arena
            .get(held.offset..held.offset + held.len)
            .unwrap_or(&[])
    }

    /// Lets `held` go; its room is reused once every allocation before it went too.
    pub(crate) fn release(&mut self, held: &Held) {
        if self.held.front() == Some(held) {
            self.held.pop_front();
        } else if let Some(i) = self.held.iter().position(|h| h == held) {
            self.held.remove(i);
        }
        let index = held.alloc.wrapping_sub(self.base);
        if let Some(a) = usize::try_from(index)
            .ok()
            .and_then(|i| self.allocs.get_mut(i))
        {
            a.freed = true;
        }
        while let Some(a) = self.allocs.front().copied().filter(|a| a.freed) {
            self.allocs.pop_front();
            self.base += 1;
            self.head = a.end;
        }
        if self.allocs.is_empty() {
            // Nothing taken: start again at the arena's beginning.
            let size = (self.arena.len() as u64).max(1);
            self.tail = self.tail.div_ceil(size) * size;
            self.head = self.tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_packets_come_out_in_sequence_order_when_their_turn_comes() {
        let mut r = Reorder::new(4, 64);
        assert!(r.hold(b"seven", 7, 100, 0));
        assert!(r.hold(b"five", 5, 110, 0));
        assert_eq!(r.next_due(4, 50), None, "4 still missing, nothing expired");
        let h = r.next_due(5, 50).unwrap_or_else(|| unreachable!());
        assert_eq!((h.first, r.bytes(&h)), (5, &b"five"[..]));
        r.release(&h);
        assert_eq!(r.next_due(6, 50), None);
        assert_eq!(r.deadline(), Some(100));
    }

    #[test]
    fn an_expired_packet_lets_every_lower_one_go_first() {
        let mut r = Reorder::new(4, 64);
        r.hold(b"nine", 9, 200, 0);
        r.hold(b"six", 6, 300, 0);
        // 9 expired at 200: 6 (held later, until 300) goes first, then 9.
        assert_eq!(r.next_due(4, 200).map(|h| h.first), Some(6));
        assert_eq!(r.next_due(4, 199), None);
    }

    #[test]
    fn a_full_window_holds_nothing_more_and_is_reused_once_empty() {
        let mut r = Reorder::new(2, 8);
        assert!(r.hold(b"abcd", 2, 10, 0));
        assert!(!r.hold(b"efghi", 3, 10, 0), "no room for 5 more bytes");
        assert!(r.hold(b"efgh", 3, 10, 0));
        assert!(!r.hold(b"i", 4, 10, 0), "two packets at most");
        while let Some(h) = r.first() {
            r.release(&h);
        }
        assert!(r.is_empty());
        assert!(r.hold(b"abcdefgh", 9, 10, 0), "the whole arena again");
    }

    #[test]
    fn the_arena_is_a_ring_reused_as_the_oldest_packets_go_even_while_others_stay() {
        let mut r = Reorder::new(8, 10);
        assert!(r.hold(b"aaaa", 10, 0, 0));
        assert!(r.hold(b"bbbb", 20, 0, 0));
        // 10 goes, 20 stays: its room comes back, and "cccccc" does not fit at the end
        // (2 bytes left), so it starts at the beginning.
        let h = r.next_turn(10).unwrap_or_else(|| unreachable!());
        r.release(&h);
        assert!(
            !r.hold(b"cccccc", 30, 0, 0),
            "4 free at the start + 2 at the end: not contiguous"
        );
        assert!(r.hold(b"cc", 30, 0, 0));
        assert!(r.hold(b"dddd", 40, 0, 0), "wraps to the start");
        let bytes: Vec<&[u8]> = r.held.iter().map(|h| r.bytes(h)).collect();
        assert_eq!(bytes, [&b"bbbb"[..], b"cc", b"dddd"]);
        // A packet let go out of order keeps its room until the older ones go.
        let d = r.held[2];
        r.release(&d);
        assert!(!r.hold(b"eeee", 50, 0, 0));
        while let Some(h) = r.first() {
            r.release(&h);
        }
        assert!(r.hold(b"0123456789", 60, 0, 0), "the whole ring again");
    }
}
