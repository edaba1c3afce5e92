//! The fan-out's packet buffers: one pre-allocated region of equal slots shared by the
//! root's thread (which writes packets) and every shard (whose sends read them), with a
//! holder count per slot and a lock-free free list.
//!
//! # Ownership of a slot
//!
//! A slot on the free list belongs to nobody. The root [`take`](Pool::take)s it and is
//! then its only user: it writes the packet through [`slot_mut`](Pool::slot_mut). To send
//! it, the root sets its holder count to the number of shards it hands the slot to
//! ([`share`](Pool::share)) and pushes it on their queues; from then on nobody writes it.
//! Each shard calls [`release`](Pool::release) once every send of it (to all of that
//! shard's leaves) has completed; the last release puts the slot back on the free list.
//! The holder count's acquire/release ordering and the queues' make every write of the
//! packet visible to the shards before their sends, and every send finished before the
//! root writes the slot again.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use memmap2::MmapMut;

use crate::core::fanout::Release;
use crate::core::packetizer::Slots;

/// `count` packet buffers of `size` bytes, their holder counts and the free list.
pub(crate) struct Pool {
    /// Start of the mapping, taken once from the `&mut` at creation: slots are reached
    /// only through it, never through a reference to the whole mapping.
    base: NonNull<u8>,
    size: usize,
    count: usize,
    holders: Box<[AtomicU32]>,
    free: ArrayQueue<u16>,
    /// Keeps the memory mapped; dropped last.
    _map: MmapMut,
}

// SAFETY: the mapping is plain memory. Slots are written only by the one thread that took
// them from the free list, and read (by the kernel, through shards' sends) only after
// they were shared, as the module docs lay out; the counts and the queue are atomic.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl Pool {
    /// `count` (1 to 65535) slots of `size` bytes, all free.
    pub(crate) fn new(count: usize, size: usize) -> io::Result<Pool> {
        if count == 0 || count > usize::from(u16::MAX) || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a packet pool needs 1 to 65535 slots of at least one byte",
            ));
        }
        let len = count
            .checked_mul(size)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "packet pool too large"))?;
        let mut map = MmapMut::map_anon(len)?;
        let base = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| io::Error::other("the packet pool's mapping is at address 0"))?;
        let free = ArrayQueue::new(count);
        for slot in 0..count as u16 {
            let _ = free.push(slot);
        }
        Ok(Pool {
            base,
            size,
            count,
            holders: (0..count).map(|_| AtomicU32::new(0)).collect(),
            free,
            _map: map,
        })
    }

    /// The number of slots.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Slots on the free list right now.
    pub(crate) fn free_len(&self) -> usize {
        self.free.len()
    }

    /// A free slot, now the caller's; `None` when every slot is in use.
    pub(crate) fn take(&self) -> Option<u16> {
        self.free.pop()
    }

    /// The bytes of `slot`, to write a packet into.
    ///
    /// # Safety
    ///
    /// The caller took `slot` with [`take`](Self::take) and has not shared or given it
    /// back since, and holds no other reference to its bytes.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slot_mut(&self, slot: u16) -> &mut [u8] {
        let slot = usize::from(slot).min(self.count - 1);
        // SAFETY: the slot lies inside the mapping (index clamped above); the caller owns
        // it exclusively, so no other reference to these bytes exists.
        unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(slot * self.size), self.size)
        }
    }

    /// Where `slot` starts, for a send to read from (the first `len` bytes).
    pub(crate) fn slot_ptr(&self, slot: u16) -> *const u8 {
        let slot = usize::from(slot).min(self.count - 1);
        // SAFETY: the offset stays inside the mapping (index clamped above).
        unsafe { self.base.as_ptr().add(slot * self.size) }
    }

    /// Hands a written slot to `holders` shards (at least 1): it comes back to the free
    /// list after as many [`release`](Self::release)s. Call before the slot is queued to
    /// any of them.
    pub(crate) fn share(&self, slot: u16, holders: u32) {
        if let Some(count) = self.holders.get(usize::from(slot)) {
            count.store(holders, Ordering::Relaxed);
        }
    }

    /// One holder is done with `slot`; the last one puts it back on the free list.
    pub(crate) fn release(&self, slot: u16) {
        let Some(count) = self.holders.get(usize::from(slot)) else {
            return;
        };
        // AcqRel: this holder's sends happen before the slot is reused, and the last
        // holder sees every other holder's.
        if count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.give_back(slot);
        }
    }

    /// Puts a slot that was taken but not shared back on the free list.
    pub(crate) fn give_back(&self, slot: u16) {
        // Cannot fail: the queue holds every slot at most once and has room for all.
        let _ = self.free.push(slot);
    }
}

impl Release for Pool {
    fn release(&self, slot: u16) {
        Pool::release(self, slot);
    }
}

/// The root's thread packs into the pool: a slot it takes is its own until it shares it.
impl Slots for Arc<Pool> {
    fn take(&mut self) -> Option<u16> {
        Pool::take(self)
    }

    unsafe fn buffer(&mut self, slot: u16) -> &mut [u8] {
        // SAFETY: the caller took `slot` and has neither given it back nor shared it (the
        // contract of `Slots::buffer`), which is `slot_mut`'s contract.
        unsafe { self.slot_mut(slot) }
    }

    fn give_back(&mut self, slot: u16) {
        Pool::give_back(self, slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_slot_comes_back_after_its_last_release() {
        let pool = Pool::new(2, 64).unwrap();
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert_ne!(a, b);
        assert!(pool.take().is_none(), "both slots are out");
        // SAFETY: `a` was just taken and is not shared.
        unsafe { pool.slot_mut(a)[..3].copy_from_slice(b"abc") };
        pool.share(a, 3);
        pool.release(a);
        pool.release(a);
        assert!(pool.take().is_none(), "one holder still has it");
        pool.release(a);
        assert_eq!(pool.take(), Some(a));
        pool.give_back(b);
        assert_eq!(pool.free_len(), 1);
    }

    #[test]
    fn pools_out_of_range_are_refused() {
        assert!(Pool::new(0, 64).is_err());
        assert!(Pool::new(65_536, 64).is_err());
        assert!(Pool::new(4, 0).is_err());
    }
}
