//! A provided buffer ring: `entries` buffers of one size that the kernel picks from for
//! multishot receives. A buffer named by a completion belongs to us until we push it back;
//! pushed buffers become the kernel's again when [`BufRing::publish`] moves the tail.

use std::io;
use std::mem;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use memmap2::MmapMut;

use crate::io::region::Region;

/// See the module docs.
pub(crate) struct BufRing {
    ring: MmapMut,
    bufs: Region,
    mask: u16,
    /// Our copy of the tail; published to the kernel by [`publish`](Self::publish).
    tail: u16,
    bgid: u16,
    registered: bool,
}

impl BufRing {
    /// Registers a ring of `entries` (a power of two) buffers of `size` bytes as buffer
    /// group `bgid` of `uring`, every buffer given to the kernel.
    pub(crate) fn new(
        uring: &IoUring,
        entries: u16,
        size: usize,
        bgid: u16,
    ) -> io::Result<BufRing> {
        if !entries.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring entries must be a power of two",
            ));
        }
        let ring = MmapMut::map_anon(usize::from(entries) * mem::size_of::<BufRingEntry>())?;
        let bufs = Region::new(usize::from(entries), size)?;
        let mut this = BufRing {
            ring,
            bufs,
            mask: entries - 1,
            tail: 0,
            bgid,
            registered: false,
        };
        // SAFETY: the ring memory is page aligned (anonymous mapping), holds `entries`
        // entries, and lives in `this` until `unregister` or drop; the receiver that owns
        // it unregisters before the memory goes away (its teardown waits for every
        // receive's final completion, then unregisters).
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                this.ring.as_ptr() as u64,
                entries,
                bgid,
                0,
            )?;
        }
        this.registered = true;
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The buffer group id receives name.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The bytes of buffer `bid`, if it exists.
    pub(crate) fn buffer(&self, bid: u16) -> Option<&[u8]> {
        (bid <= self.mask).then(|| self.bufs.slot(usize::from(bid)))
    }

    fn entries(&mut self) -> &mut [BufRingEntry] {
        let n = usize::from(self.mask) + 1;
        // SAFETY: the mapping holds exactly n entries, is aligned for BufRingEntry (page
        // aligned), and BufRingEntry is plain data valid for any bit pattern.
        unsafe { std::slice::from_raw_parts_mut(self.ring.as_mut_ptr().cast::<BufRingEntry>(), n) }
    }

    /// Queues buffer `bid` for the kernel (visible after [`publish`](Self::publish)).
    pub(crate) fn push(&mut self, bid: u16) {
        if bid > self.mask {
            return;
        }
        let size = self.bufs.slot_size();
        let addr = self.bufs.slot(usize::from(bid)).as_ptr() as u64;
        let at = usize::from(self.tail & self.mask);
        let entry = &mut self.entries()[at];
        entry.set_addr(addr);
        entry.set_len(size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the pushed buffers visible to the kernel.
    pub(crate) fn publish(&mut self) {
        let base = self.ring.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `base` is the first entry of the registered ring, so the tail field
        // sits in its reserved word; it is a naturally aligned u16 the kernel reads
        // concurrently, hence the atomic store with Release ordering (entries first).
        unsafe {
            let tail = BufRingEntry::tail(base).cast_mut();
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }

    /// Takes the ring back from the kernel (call once nothing can draw from it).
    pub(crate) fn unregister(&mut self, uring: &IoUring) {
        if self.registered {
            let _ = uring.submitter().unregister_buf_ring(self.bgid);
            self.registered = false;
        }
    }
}
