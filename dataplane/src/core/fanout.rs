//! The fan-out's per-leaf cursors and slot accounting (sans-IO): which packets each leaf
//! of a shard still has to get, which run of them goes in its next send, and when a
//! packet's slot is no longer needed by any leaf.
//!
//! # How it works
//!
//! - Packets handed to the shard go into a log, in order
//!   ([`handle_packet`](Cursors::handle_packet)); an entry counts the leaves that still
//!   have to send it (all of the shard's leaves at the time).
//! - Each leaf has a cursor into the log and at most one send in flight, so its packets
//!   leave in order whatever the network does. [`next_run`](Cursors::next_run) says,
//!   for a leaf with none in flight, which packets its next send carries (up to 64, as one
//!   GSO run of equal lengths when GSO is on); [`start_send`](Cursors::start_send) records
//!   the send under its operation number.
//! - When the send completes ([`complete`](Cursors::complete)) its entries' counts drop;
//!   an entry no leaf needs any more has its slot released. A leaf finishes its entries
//!   in order, so finished entries form a prefix of the log ([`trim`](Cursors::trim)
//!   forgets it), and the log never holds more entries than there are slots.
//! - A leaf added starts at the log's head: it gets whole packets from the next one
//!   handed over. A leaf removed gets no new send; what it would still have sent is
//!   released at once, and its send in flight finishes its own entries.

use crate::io::{gso_run, MAX_GSO_SEGMENTS};

/// Gives a slot back once no leaf needs it (the fan-out's packet pool).
pub(crate) trait Release {
    /// One holder is done with `slot`.
    fn release(&self, slot: u16);
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    slot: u16,
    len: u16,
    /// Leaves of this shard that have not finished sending it.
    pending: u32,
}

/// The packets handed to the shard, in order, until every leaf is done with them.
#[derive(Debug)]
struct Log {
    entries: Box<[Entry]>,
    mask: u64,
    /// Position of the next packet to arrive.
    head: u64,
    /// Oldest packet some leaf still needs.
    tail: u64,
}

impl Log {
    fn new(capacity: usize) -> Log {
        let capacity = capacity.max(1).next_power_of_two();
        Log {
            entries: vec![Entry::default(); capacity].into_boxed_slice(),
            mask: capacity as u64 - 1,
            head: 0,
            tail: 0,
        }
    }

    fn at(&self, position: u64) -> Entry {
        self.entries[(position & self.mask) as usize]
    }

    fn at_mut(&mut self, position: u64) -> &mut Entry {
        &mut self.entries[(position & self.mask) as usize]
    }

    /// One leaf is done with the entry at `position`: the last one releases its slot.
    fn finish(&mut self, position: u64, release: &impl Release) {
        let entry = self.at_mut(position);
        entry.pending = entry.pending.saturating_sub(1);
        if entry.pending == 0 {
            release.release(entry.slot);
        }
    }
}

/// A leaf's place in the log, with the shard's own data about it (`L`: its address and
/// counters).
#[derive(Debug)]
struct Leaf<L> {
    id: u64,
    generation: u32,
    /// Position in the log of the next packet to send it.
    cursor: u64,
    in_flight: bool,
    data: L,
}

/// What an operation in flight was for.
#[derive(Debug, Clone, Copy, Default)]
struct OpMeta {
    leaf: u32,
    generation: u32,
    first: u64,
    count: u16,
}

/// The next send of one leaf, as [`Cursors::next_run`] planned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// The leaf's slot.
    pub(crate) leaf: u32,
    /// Log position of the first packet.
    pub(crate) first: u64,
    /// Packets in the run (1 to 64).
    pub(crate) count: usize,
}

/// One shard's leaves and log. See the module docs.
#[derive(Debug)]
pub(crate) struct Cursors<L> {
    log: Log,
    leaves: Vec<Option<Leaf<L>>>,
    /// Slots of `leaves` in use (capacity reserved up front).
    active: Vec<u32>,
    ops: Box<[OpMeta]>,
    next_generation: u32,
}

impl<L> Cursors<L> {
    /// Room for `packets` packets in the log (the pool's slots), `max_leaves` leaves and
    /// `max_ops` operations in flight.
    pub(crate) fn new(packets: usize, max_leaves: usize, max_ops: usize) -> Cursors<L> {
        Cursors {
            log: Log::new(packets),
            leaves: (0..max_leaves).map(|_| None).collect(),
            active: Vec::with_capacity(max_leaves),
            ops: vec![OpMeta::default(); max_ops].into_boxed_slice(),
            next_generation: 1,
        }
    }

    /// The number of leaves.
    pub(crate) fn len(&self) -> usize {
        self.active.len()
    }

    /// The most leaves there is room for.
    pub(crate) fn capacity(&self) -> usize {
        self.leaves.len()
    }

    /// Whether the log has no room for another packet.
    pub(crate) fn is_full(&self) -> bool {
        self.log.head - self.log.tail >= self.log.entries.len() as u64
    }

    /// Packets some leaf still needs (sent or not).
    pub(crate) fn unfinished(&self) -> u64 {
        self.log.head - self.log.tail
    }

    /// Adds leaf `id`; it gets every packet from the next one handed over. Returns its
    /// slot, or `None` when there is no room.
    pub(crate) fn add(&mut self, id: u64, data: L) -> Option<u32> {
        let slot = self.leaves.iter().position(Option::is_none)?;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        self.leaves[slot] = Some(Leaf {
            id,
            generation,
            cursor: self.log.head,
            in_flight: false,
            data,
        });
        self.active.push(slot as u32);
        Some(slot as u32)
    }

    /// Removes leaf `id` from `slot` (nothing if another leaf is there now); what it
    /// would still have sent is released. Returns whether it was there.
    pub(crate) fn remove(&mut self, id: u64, slot: u32, release: &impl Release) -> bool {
        let Some(place) = self.leaves.get_mut(slot as usize) else {
            return false;
        };
        if place.as_ref().is_none_or(|l| l.id != id) {
            return false;
        }
        let Some(leaf) = place.take() else {
            return false;
        };
        // Its operation in flight, if any, finishes its own entries when it completes.
        for position in leaf.cursor..self.log.head {
            self.log.finish(position, release);
        }
        if let Some(i) = self.active.iter().position(|&s| s == slot) {
            self.active.swap_remove(i);
        }
        true
    }

    /// A packet `(slot, len)` handed to the shard: every leaf has to send it. Its slot is
    /// released at once when there are no leaves. Returns `false` (and takes nothing)
    /// when the log is full.
    pub(crate) fn handle_packet(&mut self, slot: u16, len: u16, release: &impl Release) -> bool {
        if self.is_full() {
            return false;
        }
        let pending = self.active.len() as u32;
        let head = self.log.head;
        *self.log.at_mut(head) = Entry { slot, len, pending };
        self.log.head += 1;
        if pending == 0 {
            // Every leaf left since the packet was handed over.
            release.release(slot);
        }
        true
    }

    /// The next send of the `i`-th leaf (in the order leaves are kept), if it has packets
    /// waiting and no send in flight: up to 64 of them, a GSO run of equal lengths (the
    /// last may be shorter) when `gso`, else one.
    pub(crate) fn next_run(&self, i: usize, gso: bool) -> Option<Run> {
        let slot = *self.active.get(i)?;
        let leaf = self.leaves.get(slot as usize)?.as_ref()?;
        if leaf.in_flight || leaf.cursor >= self.log.head {
            return None;
        }
        let available = (self.log.head - leaf.cursor).min(MAX_GSO_SEGMENTS as u64) as usize;
        let count = if gso {
            gso_run(
                (0..available).map(|k| usize::from(self.log.at(leaf.cursor + k as u64).len)),
                MAX_GSO_SEGMENTS,
            )
        } else {
            1
        };
        Some(Run {
            leaf: slot,
            first: leaf.cursor,
            count,
        })
    }

    /// The packet `(slot, len)` at log position `position`.
    pub(crate) fn packet(&self, position: u64) -> (u16, u16) {
        let e = self.log.at(position);
        (e.slot, e.len)
    }

    /// The shard's data about the leaf in `slot`.
    pub(crate) fn leaf(&self, slot: u32) -> Option<&L> {
        self.leaves.get(slot as usize)?.as_ref().map(|l| &l.data)
    }

    /// `run` leaves as operation `op`: the leaf's cursor moves past it and the leaf has a
    /// send in flight until `op` completes.
    pub(crate) fn start_send(&mut self, run: Run, op: u16) {
        let Some(leaf) = self
            .leaves
            .get_mut(run.leaf as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        if let Some(meta) = self.ops.get_mut(usize::from(op)) {
            *meta = OpMeta {
                leaf: run.leaf,
                generation: leaf.generation,
                first: run.first,
                count: run.count as u16,
            };
        }
        leaf.cursor += run.count as u64;
        leaf.in_flight = true;
    }

    /// Operation `op` finished: its entries are done for its leaf (slots no leaf needs any
    /// more are released), and the leaf may send again. Returns the leaf's data if it is
    /// still there.
    pub(crate) fn complete(&mut self, op: u16, release: &impl Release) -> Option<&L> {
        let meta = self.ops.get(usize::from(op)).copied()?;
        for k in 0..u64::from(meta.count) {
            self.log.finish(meta.first + k, release);
        }
        let leaf = self
            .leaves
            .get_mut(meta.leaf as usize)
            .and_then(Option::as_mut)
            .filter(|l| l.generation == meta.generation)?;
        leaf.in_flight = false;
        Some(&leaf.data)
    }

    /// Forgets the entries every leaf is done with.
    pub(crate) fn trim(&mut self) {
        while self.log.tail < self.log.head && self.log.at(self.log.tail).pending == 0 {
            self.log.tail += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    struct Released(RefCell<Vec<u16>>);

    impl Release for Released {
        fn release(&self, slot: u16) {
            self.0.borrow_mut().push(slot);
        }
    }

    fn cursors() -> Cursors<&'static str> {
        Cursors::new(16, 4, 8)
    }

    /// Sends one run for every leaf that can, as operations 0, 1, ...; returns them.
    fn send_all(c: &mut Cursors<&'static str>, gso: bool) -> Vec<(u16, Run)> {
        let mut sent = Vec::new();
        for i in 0..c.len() {
            if let Some(run) = c.next_run(i, gso) {
                let op = sent.len() as u16;
                c.start_send(run, op);
                sent.push((op, run));
            }
        }
        sent
    }

    #[test]
    fn every_leaf_gets_every_packet_in_one_run_and_a_slot_is_freed_after_the_last() {
        let released = Released::default();
        let mut c = cursors();
        let a = c.add(1, "a").unwrap_or_else(|| unreachable!());
        let b = c.add(2, "b").unwrap_or_else(|| unreachable!());
        for slot in 0..3 {
            assert!(c.handle_packet(slot, 1000, &released));
        }
        let sent = send_all(&mut c, true);
        assert_eq!(
            sent.iter()
                .map(|(_, r)| (r.leaf, r.first, r.count))
                .collect::<Vec<_>>(),
            [(a, 0, 3), (b, 0, 3)],
            "one GSO run of the three packets per leaf"
        );
        assert!(
            send_all(&mut c, true).is_empty(),
            "one send in flight per leaf"
        );
        assert_eq!(c.complete(0, &released), Some(&"a"));
        assert!(released.0.borrow().is_empty(), "leaf b still sends them");
        assert_eq!(c.complete(1, &released), Some(&"b"));
        assert_eq!(*released.0.borrow(), [0, 1, 2]);
        c.trim();
        assert_eq!(c.unfinished(), 0);
    }

    #[test]
    fn without_gso_each_send_carries_one_packet_and_unequal_lengths_split_runs() {
        let released = Released::default();
        let mut c = cursors();
        c.add(1, "a");
        for (slot, len) in [(0, 1000), (1, 1000), (2, 1200)] {
            c.handle_packet(slot, len, &released);
        }
        assert_eq!(c.next_run(0, false).map(|r| r.count), Some(1));
        assert_eq!(c.next_run(0, true).map(|r| r.count), Some(2));
    }

    #[test]
    fn a_leaf_added_later_starts_with_the_next_packet() {
        let released = Released::default();
        let mut c = cursors();
        c.add(1, "a");
        c.handle_packet(0, 100, &released);
        let late = c.add(2, "late").unwrap_or_else(|| unreachable!());
        c.handle_packet(1, 100, &released);
        let runs = send_all(&mut c, true);
        let late_run = runs.iter().find(|(_, r)| r.leaf == late).map(|(_, r)| *r);
        assert_eq!(late_run.map(|r| (r.first, r.count)), Some((1, 1)));
    }

    #[test]
    fn a_removed_leaf_releases_what_it_had_not_sent_and_its_send_in_flight_finishes_its_own() {
        let released = Released::default();
        let mut c = cursors();
        let a = c.add(1, "a").unwrap_or_else(|| unreachable!());
        c.handle_packet(0, 100, &released);
        let sent = send_all(&mut c, true);
        c.handle_packet(1, 100, &released);
        assert!(c.remove(1, a, &released));
        assert_eq!(*released.0.borrow(), [1], "the unsent packet");
        assert_eq!(c.complete(sent[0].0, &released), None, "the leaf is gone");
        assert_eq!(*released.0.borrow(), [1, 0]);
        assert!(!c.remove(1, a, &released), "removing twice does nothing");
    }

    #[test]
    fn packets_with_no_leaf_are_released_at_once_and_a_full_log_takes_nothing() {
        let released = Released::default();
        let mut c: Cursors<&'static str> = Cursors::new(2, 1, 1);
        assert!(c.handle_packet(5, 10, &released));
        assert_eq!(*released.0.borrow(), [5]);
        c.add(1, "a");
        assert!(c.handle_packet(6, 10, &released));
        assert!(!c.handle_packet(7, 10, &released), "the log is full");
    }
}
