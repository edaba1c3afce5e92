//! The four AF_XDP rings as two types: a [`ProducerRing`] that we fill and the kernel
//! drains (the fill ring of UMEM addresses, the TX ring of descriptors) and a
//! [`ConsumerRing`] that the kernel fills and we drain (the RX ring of descriptors, the
//! completion ring of addresses).
//!
//! Each ring is a power-of-two array of entries plus three shared 32-bit words, all in
//! one mapping of the socket (at the offsets `XDP_MMAP_OFFSETS` reports): the producer
//! index, the consumer index and a flags word. Indices run freely and wrap at 2^32; an
//! entry's slot is `index & (size - 1)`, so `producer - consumer` (wrapping) is the number
//! of entries in the ring.
//!
//! # Memory ordering with the kernel
//!
//! The kernel side (net/xdp/xsk_queue.h) pairs its barriers with ours as follows:
//!
//! - **Producer side** (fill, TX; our side): before writing entries we load the
//!   kernel's consumer index with `Acquire`, so that the kernel's reads of the slots it
//!   gave back happen before our writes over them; after writing entries we store the
//!   producer index with `Release`, so that the entries are visible before the kernel
//!   sees the new index.
//! - **Consumer side** (RX, completion; our side): we load the kernel's producer index
//!   with `Acquire` before reading entries (the kernel's writes of those entries happen
//!   before), and store our consumer index with `Release` after reading them (our reads
//!   happen before the kernel may overwrite the slots).
//!
//! Each side keeps a cached copy of the other side's index and reloads it only when the
//! cache says the ring is full (producer) or empty (consumer), and publishes its own
//! index once per batch (`submit`, `release`), so the shared words are touched once per
//! batch, not per entry.
//!
//! The flags word carries `XDP_RING_NEED_WAKEUP` (with `XDP_USE_NEED_WAKEUP` bound): the
//! kernel sets it when it stopped polling the ring and must be kicked by a system call
//! (see `socket`). Reading it right after publishing needs a full fence (store, then
//! load of another word), which [`ProducerRing::needs_wakeup`] issues.
//!
//! # Contract
//!
//! A ring is used by one thread at a time (it is `Send`, not `Sync`). Indices passed to
//! `write`/`read` beyond what `reserve`/`peek` granted are refused (no write, `None`),
//! and counts beyond it are clamped: nothing here panics.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// One mmapped ring area, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping `Raw::map` made, unmapped once; the ring types
        // holding pointers into it drop it last (it is their last field) and hand out no
        // references that outlive them.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The shared parts of one ring: where its words and entries are.
#[derive(Debug)]
pub(crate) struct Raw<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    mask: u32,
    /// Keeps the memory alive (`None` when a test owns it).
    _map: Option<Mapping>,
}

impl<T: Copy> Raw<T> {
    /// # Safety
    ///
    /// The three words must be valid, aligned `u32`s and `entries` an aligned array of
    /// `size` (a power of two) `T`s, all alive for as long as the ring (or owned by
    /// `map`), and written by no one else except through the ring protocol.
    unsafe fn new(
        producer: NonNull<AtomicU32>,
        consumer: NonNull<AtomicU32>,
        flags: NonNull<AtomicU32>,
        entries: NonNull<T>,
        size: u32,
        map: Option<Mapping>,
    ) -> Raw<T> {
        Raw {
            producer,
            consumer,
            flags,
            entries,
            mask: size.wrapping_sub(1),
            _map: map,
        }
    }

    fn size(&self) -> u32 {
        self.mask.wrapping_add(1)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: valid and alive for our lifetime (contract of `new`); only accessed
        // atomically.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: `index & mask < size`, inside the entry array (contract of `new`).
        unsafe { self.entries.as_ptr().add((index & self.mask) as usize) }
    }

    /// Maps the ring of `fd` at page offset `pgoff`, laid out as `off` says, holding
    /// `size` entries.
    fn map(
        fd: BorrowedFd<'_>,
        pgoff: u64,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> io::Result<Raw<T>> {
        if size == 0 || !size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring size {size} must be a power of two"),
            ));
        }
        let entry = std::mem::size_of::<T>() as u64;
        let len = off
            .desc
            .checked_add(u64::from(size) * entry)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| io::Error::other("ring offsets out of range"))?;
        // The kernel's offsets are checked against the mapping before any pointer is made.
        let word_ok = |o: u64| o % 4 == 0 && o.checked_add(4).is_some_and(|e| e <= off.desc);
        if !word_ok(off.producer)
            || !word_ok(off.consumer)
            || !word_ok(off.flags)
            || off.desc % std::mem::align_of::<T>() as u64 != 0
        {
            return Err(io::Error::other(format!(
                "the kernel reported unusable ring offsets (producer {}, consumer {}, flags \
                 {}, entries {})",
                off.producer, off.consumer, off.flags, off.desc
            )));
        }
        let pgoff = libc::off_t::try_from(pgoff)
            .map_err(|_| io::Error::other("ring page offset out of range"))?;
        // SAFETY: a fresh shared mapping of the socket's ring at an address of the
        // kernel's choosing; it overlaps nothing we hold.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let map = Mapping { ptr: base, len };
        let at = |o: u64| {
            // SAFETY: every offset was checked above to lie inside the `len`-byte mapping.
            unsafe { base.add(o as usize) }
        };
        // SAFETY: the words are 4-byte aligned and inside the mapping (checked above),
        // the entries are aligned and `size` of them end at `len`; the mapping lives in
        // the ring (`map`), and the kernel writes it only through the ring protocol.
        Ok(unsafe {
            Raw::new(
                at(off.producer).cast(),
                at(off.consumer).cast(),
                at(off.flags).cast(),
                at(off.desc).cast(),
                size,
                Some(map),
            )
        })
    }
}

/// What the two sides of a ring share: they are made over a mapping (or test memory) the
/// same way.
pub(crate) trait Ring<T: Copy>: Sized {
    /// Takes over the ring's memory, loading both indices.
    fn from_raw(raw: Raw<T>) -> Self;

    /// Maps the ring of `fd` at page offset `pgoff` (`XDP_UMEM_PGOFF_FILL_RING` or
    /// `XDP_PGOFF_TX_RING` for a producer ring, `XDP_PGOFF_RX_RING` or
    /// `XDP_UMEM_PGOFF_COMPLETION_RING` for a consumer ring), laid out as `off` says,
    /// holding `size` entries.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a size that is not a power of two; the `mmap` error.
    fn map(
        fd: BorrowedFd<'_>,
        pgoff: u64,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> io::Result<Self> {
        Ok(Self::from_raw(Raw::map(fd, pgoff, off, size)?))
    }

    /// A ring over memory the caller owns (tests simulate the kernel side on it).
    ///
    /// # Safety
    ///
    /// As for the words and entries of a mapped ring: `producer`, `consumer` and `flags`
    /// point to aligned `AtomicU32`s and `entries` to `size` (a power of two) aligned
    /// `T`s, alive and not moved for as long as the ring, touched by others only through
    /// the ring protocol.
    #[cfg(test)]
    unsafe fn over(
        producer: NonNull<AtomicU32>,
        consumer: NonNull<AtomicU32>,
        flags: NonNull<AtomicU32>,
        entries: NonNull<T>,
        size: u32,
    ) -> Self {
        // SAFETY: the caller's contract is `Raw::new`'s.
        Self::from_raw(unsafe { Raw::new(producer, consumer, flags, entries, size, None) })
    }
}

/// A ring we produce into and the kernel consumes from: fill (`u64` addresses) or TX
/// (`libc::xdp_desc`). See the module docs.
#[derive(Debug)]
pub(crate) struct ProducerRing<T> {
    raw: Raw<T>,
    /// Our producer index: entries before it are written (published or not).
    prod: u32,
    /// Our producer index as last stored in the shared word.
    published: u32,
    /// The kernel's consumer index, as last loaded, plus the ring size: entries from
    /// `prod` up to it are free.
    limit: u32,
    /// Entries granted by the last `reserve`, from `prod` on.
    reserved: u32,
    _entries: PhantomData<T>,
}

// SAFETY: the ring's memory is owned by the ring (or by the test that made it) and shared
// only with the kernel through atomics; no other thread of this process holds pointers
// into it, so moving the ring to another thread is sound.
unsafe impl<T: Send> Send for ProducerRing<T> {}

impl<T: Copy> Ring<T> for ProducerRing<T> {
    fn from_raw(raw: Raw<T>) -> Self {
        let prod = raw.producer().load(Ordering::Relaxed);
        let cons = raw.consumer().load(Ordering::Acquire);
        let limit = cons.wrapping_add(raw.size());
        ProducerRing {
            raw,
            prod,
            published: prod,
            limit,
            reserved: 0,
            _entries: PhantomData,
        }
    }
}

impl<T: Copy> ProducerRing<T> {
    /// Grants up to `n` free entries from the next unwritten one on, reloading the
    /// kernel's consumer index only if the cached one leaves fewer than `n`; returns how
    /// many (0 when the ring is full). A new `reserve` replaces the previous grant.
    pub(crate) fn reserve(&mut self, n: usize) -> usize {
        let want = u32::try_from(n).unwrap_or(u32::MAX);
        let size = self.raw.size();
        let mut free = self.limit.wrapping_sub(self.prod);
        if free < want || free > size {
            let cons = self.raw.consumer().load(Ordering::Acquire);
            self.limit = cons.wrapping_add(size);
            free = self.limit.wrapping_sub(self.prod);
        }
        // A kernel that moved its consumer past our producer is broken: grant nothing
        // (now and on every later call until it is back in range).
        if free > size {
            free = 0;
        }
        self.reserved = free.min(want);
        self.reserved as usize
    }

    /// Writes entry `i` (< the last grant) of the reserved span; `false` (and nothing
    /// written) outside it.
    pub(crate) fn write(&mut self, i: usize, value: T) -> bool {
        let Ok(i) = u32::try_from(i) else {
            return false;
        };
        if i >= self.reserved {
            return false;
        }
        let slot = self.raw.slot(self.prod.wrapping_add(i));
        // SAFETY: the slot is inside the entry array and free (reserved from the
        // kernel's last consumer index, loaded with Acquire): the kernel does not read it
        // until the producer index passes it.
        unsafe { slot.write_volatile(value) };
        true
    }

    /// Counts the first `n` reserved entries (clamped to the grant) as written, without
    /// telling the kernel yet ([`publish`](Self::publish) does).
    pub(crate) fn commit(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(self.reserved);
        self.prod = self.prod.wrapping_add(n);
        self.reserved = 0;
    }

    /// Makes every committed entry visible to the kernel (one `Release` store, only if
    /// something changed).
    pub(crate) fn publish(&mut self) {
        if self.published != self.prod {
            self.raw.producer().store(self.prod, Ordering::Release);
            self.published = self.prod;
        }
    }

    /// Commits the first `n` reserved entries and publishes them.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn submit(&mut self, n: usize) {
        self.commit(n);
        self.publish();
    }

    /// Committed entries not yet published.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn unpublished(&self) -> u32 {
        self.prod.wrapping_sub(self.published)
    }

    /// Published entries the kernel has not consumed yet (loads its consumer index).
    pub(crate) fn outstanding(&mut self) -> u32 {
        let cons = self.raw.consumer().load(Ordering::Acquire);
        self.limit = cons.wrapping_add(self.raw.size());
        self.published.wrapping_sub(cons).min(self.raw.size())
    }

    /// Whether the kernel asked to be woken up for this ring (`XDP_RING_NEED_WAKEUP`).
    /// Issues a full fence first, so that a producer index published just before is
    /// ordered before the flag's load (the kernel sets the flag, then rechecks the ring).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn needs_wakeup(&self) -> bool {
        fence(Ordering::SeqCst);
        self.raw.flags().load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

/// A ring the kernel produces into and we consume from: RX (`libc::xdp_desc`) or
/// completion (`u64` addresses). See the module docs.
#[derive(Debug)]
pub(crate) struct ConsumerRing<T> {
    raw: Raw<T>,
    /// Our consumer index (entries before it are released, or about to be).
    cons: u32,
    /// The kernel's producer index as last loaded.
    cached_prod: u32,
    /// Entries granted by the last `peek`, from `cons` on.
    peeked: u32,
    _entries: PhantomData<T>,
}

// SAFETY: as for `ProducerRing`.
unsafe impl<T: Send> Send for ConsumerRing<T> {}

impl<T: Copy> Ring<T> for ConsumerRing<T> {
    fn from_raw(raw: Raw<T>) -> Self {
        let cons = raw.consumer().load(Ordering::Relaxed);
        let cached_prod = raw.producer().load(Ordering::Acquire);
        ConsumerRing {
            raw,
            cons,
            cached_prod,
            peeked: 0,
            _entries: PhantomData,
        }
    }
}

impl<T: Copy> ConsumerRing<T> {
    /// Grants up to `max` filled entries from the next unread one on, reloading the
    /// kernel's producer index only if the cached one shows fewer than `max`; returns
    /// how many (0 when the ring is empty). A new `peek` replaces the previous grant.
    pub(crate) fn peek(&mut self, max: usize) -> usize {
        let want = u32::try_from(max).unwrap_or(u32::MAX);
        let size = self.raw.size();
        let mut ready = self.cached_prod.wrapping_sub(self.cons);
        if ready < want || ready > size {
            self.cached_prod = self.raw.producer().load(Ordering::Acquire);
            ready = self.cached_prod.wrapping_sub(self.cons);
        }
        // A kernel whose producer ran more than a ring ahead is broken: take nothing (now
        // and on every later call until it is back in range).
        if ready > size {
            ready = 0;
        }
        self.peeked = ready.min(want);
        self.peeked as usize
    }

    /// Entry `i` (< the last grant) of the peeked span; `None` outside it.
    pub(crate) fn read(&self, i: usize) -> Option<T> {
        let i = u32::try_from(i).ok().filter(|&i| i < self.peeked)?;
        let slot = self.raw.slot(self.cons.wrapping_add(i));
        // SAFETY: the slot is inside the entry array and filled: the kernel's producer
        // index (loaded with Acquire) has passed it, and it stays ours until our
        // consumer index passes it.
        Some(unsafe { slot.read_volatile() })
    }

    /// Gives the first `n` peeked entries (clamped to the grant) back to the kernel (one
    /// `Release` store).
    pub(crate) fn release(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(self.peeked);
        self.peeked = 0;
        if n > 0 {
            self.cons = self.cons.wrapping_add(n);
            self.raw.consumer().store(self.cons, Ordering::Release);
        }
    }

    /// Whether the kernel set `XDP_RING_NEED_WAKEUP` on this ring.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.raw.flags().load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::UnsafeCell;

    use super::*;

    /// An in-memory ring: the shared words and entries a kernel would map, for the
    /// tests to play the kernel's side on (through `&self` and raw pointers only, as the
    /// kernel shares the memory with the ring).
    pub(crate) struct FakeRing<T> {
        /// Producer, consumer, flags.
        pub(crate) words: Box<[AtomicU32; 3]>,
        /// The entries.
        entries: Box<[UnsafeCell<T>]>,
    }

    // SAFETY: the entries are shared between a ring and a test thread playing the kernel
    // only through the ring protocol (a slot is written by one side and read by the other
    // after the index that hands it over), as with the kernel's own mapping.
    unsafe impl<T: Send> Sync for FakeRing<T> {}

    impl<T: Copy> FakeRing<T> {
        /// `size` entries (each `init`), both indices at `start`.
        pub(crate) fn new(size: u32, start: u32, init: T) -> FakeRing<T> {
            FakeRing {
                words: Box::new([
                    AtomicU32::new(start),
                    AtomicU32::new(start),
                    AtomicU32::new(0),
                ]),
                entries: (0..size).map(|_| UnsafeCell::new(init)).collect(),
            }
        }

        fn parts(&self) -> ([NonNull<AtomicU32>; 3], NonNull<T>, u32) {
            let [p, c, f] = &*self.words;
            let e = NonNull::new(self.entries.as_ptr().cast_mut().cast::<T>())
                .unwrap_or(NonNull::dangling());
            (
                [NonNull::from(p), NonNull::from(c), NonNull::from(f)],
                e,
                self.entries.len() as u32,
            )
        }

        /// Our producer side of it (the ring must not outlive `self`).
        pub(crate) fn producer(&self) -> ProducerRing<T> {
            let ([p, c, f], e, size) = self.parts();
            // SAFETY: the words and entries are boxed, neither moved nor dropped while the
            // tests use the ring; `size` is the entries' length; the entries are
            // `UnsafeCell`s, shared with the ring only through raw pointers.
            unsafe { ProducerRing::over(p, c, f, e, size) }
        }

        /// Our consumer side of it (the ring must not outlive `self`).
        pub(crate) fn consumer(&self) -> ConsumerRing<T> {
            let ([p, c, f], e, size) = self.parts();
            // SAFETY: as in `producer`.
            unsafe { ConsumerRing::over(p, c, f, e, size) }
        }

        fn entry(&self, index: u32) -> *mut T {
            let mask = self.entries.len() as u32 - 1;
            self.entries[(index & mask) as usize].get()
        }

        /// The kernel consumes up to `n` entries of a producer ring, returning them.
        pub(crate) fn kernel_consume(&self, n: u32) -> Vec<T> {
            let prod = self.words[0].load(Ordering::Acquire);
            let cons = self.words[1].load(Ordering::Relaxed);
            let n = n.min(prod.wrapping_sub(cons));
            let out = (0..n)
                // SAFETY: published by the producer (Acquire above), not written again
                // until the consumer index passes it.
                .map(|i| unsafe { self.entry(cons.wrapping_add(i)).read() })
                .collect();
            self.words[1].store(cons.wrapping_add(n), Ordering::Release);
            out
        }

        /// The kernel produces `values` into a consumer ring (as many as fit); returns
        /// how many.
        pub(crate) fn kernel_produce(&self, values: &[T]) -> usize {
            let prod = self.words[0].load(Ordering::Relaxed);
            let cons = self.words[1].load(Ordering::Acquire);
            let size = self.entries.len() as u32;
            let free = size - prod.wrapping_sub(cons);
            let n = (values.len() as u32).min(free);
            for (i, v) in values.iter().take(n as usize).enumerate() {
                // SAFETY: a free slot (released by the consumer, Acquire above), not read
                // until the producer index passes it.
                unsafe { self.entry(prod.wrapping_add(i as u32)).write(*v) };
            }
            self.words[0].store(prod.wrapping_add(n), Ordering::Release);
            n as usize
        }
    }

    #[test]
    fn a_producer_ring_fills_to_its_size_and_wraps_its_indices() {
        // Start just below 2^32 so the indices wrap during the test.
        let fake = FakeRing::<u64>::new(8, u32::MAX - 3, 0);
        let mut ring = fake.producer();
        assert_eq!(ring.reserve(20), 8, "never more than the ring holds");
        for i in 0..8 {
            assert!(ring.write(i, 100 + i as u64));
        }
        assert!(!ring.write(8, 0), "past the grant is refused");
        ring.submit(8);
        assert_eq!(ring.reserve(1), 0, "full until the kernel consumes");
        assert_eq!(
            fake.kernel_consume(3),
            vec![100, 101, 102],
            "entries in order"
        );
        assert_eq!(ring.reserve(5), 3, "the consumer index is reloaded");
        for i in 0..3 {
            assert!(ring.write(i, 200 + i as u64));
        }
        ring.submit(3);
        assert_eq!(
            fake.kernel_consume(8),
            vec![103, 104, 105, 106, 107, 200, 201, 202]
        );
        assert_eq!(
            fake.words[0].load(Ordering::Relaxed),
            (u32::MAX - 3).wrapping_add(11)
        );
    }

    #[test]
    fn a_producer_ring_publishes_only_committed_entries() {
        let fake = FakeRing::<u64>::new(4, 0, 0);
        let mut ring = fake.producer();
        assert_eq!(ring.reserve(2), 2);
        ring.write(0, 7);
        ring.write(1, 8);
        ring.commit(5);
        assert_eq!(ring.unpublished(), 2, "commit clamps to the grant");
        assert!(
            fake.kernel_consume(4).is_empty(),
            "nothing visible before publish"
        );
        let mut ring2 = ring;
        ring2.publish();
        assert_eq!(ring2.unpublished(), 0);
        assert_eq!(ring2.outstanding(), 2);
    }

    #[test]
    fn a_consumer_ring_reads_in_order_across_the_wrap() {
        let fake = FakeRing::<u64>::new(4, u32::MAX - 1, 0);
        let mut ring = fake.consumer();
        assert_eq!(ring.peek(4), 0, "empty");
        assert_eq!(
            fake.kernel_produce(&[1, 2, 3, 4, 5]),
            4,
            "the kernel fills it"
        );
        assert_eq!(ring.peek(3), 3);
        assert_eq!(
            (0..4).map(|i| ring.read(i)).collect::<Vec<_>>(),
            vec![Some(1), Some(2), Some(3), None]
        );
        ring.release(2);
        assert_eq!(
            fake.kernel_produce(&[5, 6, 7]),
            2,
            "two slots were released"
        );
        assert_eq!(ring.peek(10), 4);
        assert_eq!(
            (0..4).filter_map(|i| ring.read(i)).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        ring.release(100);
        assert_eq!(
            fake.words[1].load(Ordering::Relaxed),
            (u32::MAX - 1).wrapping_add(6)
        );
        assert_eq!(ring.peek(1), 0);
    }

    #[test]
    fn a_broken_kernel_index_grants_nothing() {
        let fake = FakeRing::<u64>::new(4, 0, 0);
        let mut ring = fake.consumer();
        // A producer index more than a ring ahead of our consumer.
        fake.words[0].store(100, Ordering::Release);
        assert_eq!(ring.peek(8), 0);
        assert_eq!(
            ring.peek(2),
            0,
            "also when the cached index would seem to allow it"
        );
        fake.words[0].store(3, Ordering::Release);
        assert_eq!(ring.peek(8), 3, "back in range");
        let fake = FakeRing::<u64>::new(4, 0, 0);
        let mut ring = fake.producer();
        // A consumer index past our producer.
        fake.words[1].store(50, Ordering::Release);
        assert_eq!(ring.reserve(8), 0);
        assert_eq!(
            ring.reserve(2),
            0,
            "also when the cached index would seem to allow it"
        );
        fake.words[1].store(0, Ordering::Release);
        assert_eq!(ring.reserve(8), 4, "back in range");
    }

    #[test]
    fn entries_cross_in_order_with_the_kernel_side_on_another_thread() {
        const N: u64 = 20_000;
        // We produce (a fill ring), a thread consumes; indices wrap during the run.
        let fake = FakeRing::<u64>::new(8, u32::MAX - 1000, 0);
        let taken = std::thread::scope(|s| {
            let kernel = s.spawn(|| {
                let mut seen = Vec::with_capacity(N as usize);
                while seen.len() < N as usize {
                    let left = N as usize - seen.len();
                    let got = fake.kernel_consume(left.min(3) as u32);
                    if got.is_empty() {
                        std::thread::yield_now();
                    }
                    seen.extend(got);
                }
                seen
            });
            let mut ring = fake.producer();
            let mut next = 0;
            while next < N {
                let n = ring.reserve((N - next).min(5) as usize);
                for i in 0..n {
                    ring.write(i, next + i as u64);
                }
                ring.submit(n);
                next += n as u64;
                if n == 0 {
                    std::thread::yield_now();
                }
            }
            kernel.join().unwrap_or_default()
        });
        assert!(taken.iter().copied().eq(0..N), "every entry once, in order");

        // The thread produces (an RX ring), we consume.
        let fake = FakeRing::<u64>::new(8, u32::MAX - 1000, 0);
        let read = std::thread::scope(|s| {
            s.spawn(|| {
                let mut next = 0;
                while next < N {
                    let batch: Vec<u64> = (next..(next + 3).min(N)).collect();
                    let n = fake.kernel_produce(&batch);
                    if n == 0 {
                        std::thread::yield_now();
                    }
                    next += n as u64;
                }
            });
            let mut ring = fake.consumer();
            let mut read = Vec::with_capacity(N as usize);
            while read.len() < N as usize {
                let n = ring.peek((N as usize - read.len()).min(5));
                read.extend((0..n).filter_map(|i| ring.read(i)));
                ring.release(n);
                if n == 0 {
                    std::thread::yield_now();
                }
            }
            read
        });
        assert!(read.iter().copied().eq(0..N), "every entry once, in order");
    }

    #[test]
    fn the_wakeup_flag_is_read_from_the_flags_word() {
        let fake = FakeRing::<u64>::new(4, 0, 0);
        let ring = fake.producer();
        assert!(!ring.needs_wakeup());
        fake.words[2].store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(ring.needs_wakeup());
        let consumer = fake.consumer();
        assert!(consumer.needs_wakeup());
    }
}
