//! Publishing on two lines: the second line's settings ([`LineB`]) and counters
//! ([`LineSendStats`]), and the book of sends each packet buffer still waits for
//! ([`SlotBook`]).
//!
//! # Contract
//!
//! - One packetizer, two sends: every packet the packetizer closes (data, heartbeats, the
//!   end of session and its repeats) goes to line A (the publisher's group) and then, as a
//!   batch of its own with GSO runs of its own, to line B. Both carry the same bytes: the
//!   same session and sequence numbers.
//! - A packet buffer goes back to the free list only once every line's send of it
//!   completed ([`SlotBook`]). With mmsg and sim both complete before the sends return;
//!   with io_uring either may complete later, in either order.
//! - Line B never sets line A's pace: its sends hold at most half the buffers until they
//!   finish, and what would go over that share, or what its backend cannot take
//!   (submitting failed, or its operations stay busy with nothing finishing), is counted
//!   in [`LineSendStats::send_errors`] and let go on line B only; line A sends it as it
//!   would without line B. (On the mmsg backend a send completes within the call, but a
//!   full socket buffer blocks the call, and the thread with it.) The other way round,
//!   line B sends what line A took: while line A's submitting fails, line B waits with
//!   it.
//! - Collecting finished sends goes on for one line while the other's fails, so closing
//!   waits for every send the kernel may still read.

use std::net::SocketAddr;

use multipoint_control::Interface;

/// A second line the publisher sends every packet on as well (issue 13, "publishing on
/// two lines"): the same packets, byte for byte, to another group, optionally through
/// another interface, so that a subscriber can take whichever copy arrives first. See
/// [`PublisherConfig::line_b`](super::PublisherConfig::line_b).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineB {
    /// The group and port line B goes to.
    pub group: SocketAddr,
    /// The interface line B leaves on (often another one than line A's, so that the two
    /// copies cross separate networks).
    pub interface: Interface,
}

impl LineB {
    /// Line B to `group` through `interface`.
    pub fn new(group: SocketAddr, interface: Interface) -> LineB {
        LineB { group, interface }
    }
}

/// What one line sent: line B's counters
/// ([`Publisher::line_b_stats`](super::Publisher::line_b_stats)); line A's are the
/// same-named fields of [`PublisherStats`](crate::PublisherStats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineSendStats {
    /// Packets handed to the kernel on this line (data, heartbeats and end of session).
    pub packets: u64,
    /// Send operations (system calls or SQEs) on this line: one per packet, or one per
    /// GSO run.
    pub sends: u64,
    /// Send operations that carried several packets as one GSO send.
    pub gso_sends: u64,
    /// Packets this line did not deliver to the kernel: their send failed, or the line's
    /// backend could not take them (subscribers of this line alone see the gap).
    pub send_errors: u64,
}

/// The free packet buffers, and for each buffer handed to the sends how many of them it
/// still waits for: a buffer is free again only when the last one completed.
#[derive(Debug)]
pub(crate) struct SlotBook {
    /// Buffers free to fill.
    pub(crate) free: Vec<u16>,
    /// Per buffer: sends handed it and not completed yet (0: not in flight).
    outstanding: Box<[u8]>,
    /// Sends each packet gets: one per line.
    lines: u8,
}

impl SlotBook {
    /// `buffers` free buffers, each sent on `lines` lines.
    pub(crate) fn new(buffers: usize, lines: u8) -> SlotBook {
        let count = buffers.min(usize::from(u16::MAX) + 1);
        SlotBook {
            // Taken from the end: slot 0 first.
            free: (0..count).rev().map(|s| s as u16).collect(),
            outstanding: vec![0; count].into_boxed_slice(),
            lines: lines.max(1),
        }
    }

    /// The packets `(slot, len)` are about to be sent: each waits for one send per line.
    /// Call it before handing any of them to a line (a synchronous backend completes them
    /// within the send); calling it again for packets not sent yet changes nothing.
    pub(crate) fn hand_out(&mut self, packets: &[(u16, u16)]) {
        for &(slot, _) in packets {
            if let Some(count) = self.outstanding.get_mut(usize::from(slot)) {
                // A packet is handed out once, or again whole (line A's submitting
                // failed before any line sent it): never while one line has sent it.
                debug_assert!(
                    *count == 0 || *count == self.lines,
                    "buffer {slot} handed out again after a line sent it"
                );
                *count = self.lines;
            }
        }
    }

    /// One line's send of `slot` completed (or will never be made): once every line's has,
    /// the buffer is free again. Returns whether it is. A slot not waiting for any send is
    /// left alone, so that nothing is freed twice.
    pub(crate) fn sent(&mut self, slot: u16) -> bool {
        let Some(count) = self.outstanding.get_mut(usize::from(slot)) else {
            return false;
        };
        match *count {
            0 => {
                tracing::debug!(slot, "a send completed for a buffer that waited for none");
                false
            }
            1 => {
                *count = 0;
                self.free.push(slot);
                true
            }
            _ => {
                *count -= 1;
                false
            }
        }
    }

    /// A buffer taken and never handed out is free again.
    pub(crate) fn give_back(&mut self, slot: u16) {
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_free_only_after_the_send_of_every_line_completed() {
        let mut book = SlotBook::new(4, 2);
        let slot = book.free.pop().unwrap();
        assert_eq!(slot, 0, "slot 0 is taken first");
        book.hand_out(&[(slot, 100)]);
        assert!(!book.sent(slot), "line A's send alone does not free it");
        assert!(!book.free.contains(&slot));
        assert!(book.sent(slot), "line B's completes it");
        assert_eq!(book.free.iter().filter(|&&s| s == slot).count(), 1);
    }

    #[test]
    fn a_stray_completion_frees_nothing_twice() {
        let mut book = SlotBook::new(2, 1);
        let slot = book.free.pop().unwrap();
        book.hand_out(&[(slot, 10)]);
        assert!(book.sent(slot));
        assert!(!book.sent(slot), "no send was waiting any more");
        assert!(!book.sent(99), "a slot that does not exist");
        assert_eq!(book.free.len(), 2);
    }

    #[test]
    fn handing_out_again_before_sending_counts_each_line_once() {
        let mut book = SlotBook::new(2, 2);
        let slot = book.free.pop().unwrap();
        book.hand_out(&[(slot, 10)]);
        book.hand_out(&[(slot, 10)]);
        assert!(!book.sent(slot));
        assert!(book.sent(slot));
    }
}
