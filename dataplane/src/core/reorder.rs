//! The reorder window of a receive state (sans-IO): packets that arrive ahead of a missing
//! one are held, for at most the window, so that the missing one can still come first.
//!
//! The receive state decides what to hold ([`Reorder::hold`]) and when to let go
//! ([`Reorder::next_due`]); this module only keeps the packets: copies in one arena
//! allocated up front, listed by sequence number, each with the time it is held until.
//! The arena is reused from the start once every held packet is let go; a packet that
//! does not fit is not held (the receive state then declares the gap at once).

/// A held packet: where its bytes are, the sequence numbers it carries, and until when it
/// waits (on the latency clock, nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// The sequence number of its first message.
    pub(crate) first: u64,
    /// When it stops waiting for what is missing before it.
    pub(crate) until: u64,
    offset: usize,
    len: usize,
}

/// The held packets. See the module docs.
#[derive(Debug)]
pub(crate) struct Reorder {
    arena: Box<[u8]>,
    /// Bytes of the arena in use (from the start).
    used: usize,
    /// Held packets, by increasing first sequence number (capacity reserved up front).
    held: Vec<Held>,
}

impl Reorder {
    /// Room for `packets` packets and `bytes` bytes of them.
    pub(crate) fn new(packets: usize, bytes: usize) -> Reorder {
        Reorder {
            arena: vec![0; bytes].into_boxed_slice(),
            used: 0,
            held: Vec::with_capacity(packets),
        }
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The earliest time a held packet stops waiting.
    pub(crate) fn deadline(&self) -> Option<u64> {
        self.held.iter().map(|h| h.until).min()
    }

    /// Holds a copy of `packet`, whose first message is `first`, until `until`; returns
    /// whether there was room.
    pub(crate) fn hold(&mut self, packet: &[u8], first: u64, until: u64) -> bool {
        let end = self.used + packet.len();
        if self.held.len() == self.held.capacity() || end > self.arena.len() {
            return false;
        }
        self.arena[self.used..end].copy_from_slice(packet);
        let at = self.held.partition_point(|h| h.first <= first);
        self.held.insert(
            at,
            Held {
                first,
                until,
                offset: self.used,
                len: packet.len(),
            },
        );
        self.used = end;
        true
    }

    /// The held packet to let go next, if any is due: the lowest-numbered one that
    /// `next` reaches (its turn has come), or, once any held packet's time ran out at
    /// `now`, every one up to and including the highest-numbered expired one, in order.
    pub(crate) fn next_due(&self, next: u64, now: u64) -> Option<Held> {
        let first = *self.held.first()?;
        let expired = self
            .held
            .iter()
            .filter(|h| h.until <= now)
            .map(|h| h.first)
            .max();
        (first.first <= next || expired.is_some_and(|upto| first.first <= upto)).then_some(first)
    }

    /// The lowest-numbered held packet, whatever its time (to let everything go).
    pub(crate) fn first(&self) -> Option<Held> {
        self.held.first().copied()
    }

    /// The bytes of `held`, which is still held.
    pub(crate) fn bytes(&self, held: &Held) -> &[u8] {
        self.arena
            .get(held.offset..held.offset + held.len)
            .unwrap_or(&[])
    }

    /// Lets `held` go (it must be the first); the arena is reused once nothing is held.
    pub(crate) fn release(&mut self, held: &Held) {
        if let Some(i) = self.held.iter().position(|h| h == held) {
            self.held.remove(i);
        }
        if self.held.is_empty() {
            self.used = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_packets_come_out_in_sequence_order_when_their_turn_comes() {
        let mut r = Reorder::new(4, 64);
        assert!(r.hold(b"seven", 7, 100));
        assert!(r.hold(b"five", 5, 110));
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
        r.hold(b"nine", 9, 200);
        r.hold(b"six", 6, 300);
        // 9 expired at 200: 6 (held later, until 300) goes first, then 9.
        assert_eq!(r.next_due(4, 200).map(|h| h.first), Some(6));
        assert_eq!(r.next_due(4, 199), None);
    }

    #[test]
    fn a_full_window_holds_nothing_more_and_is_reused_once_empty() {
        let mut r = Reorder::new(2, 8);
        assert!(r.hold(b"abcd", 2, 10));
        assert!(!r.hold(b"efghi", 3, 10), "no room for 5 more bytes");
        assert!(r.hold(b"efgh", 3, 10));
        assert!(!r.hold(b"i", 4, 10), "two packets at most");
        while let Some(h) = r.first() {
            r.release(&h);
        }
        assert!(r.is_empty());
        assert!(r.hold(b"abcdefgh", 9, 10), "the whole arena again");
    }
}
