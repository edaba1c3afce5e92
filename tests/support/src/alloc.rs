//! A counting global allocator: it forwards every call to the system allocator and counts
//! allocations (by every thread, and by threads that marked themselves) and live bytes.
//!
//! A test binary installs it and reads [`allocations`], [`marked_allocations`] and
//! [`live_bytes`] around the code it watches:
//!
//! ```
//! use multipoint_test_support::alloc::{self, Counting};
//!
//! #[global_allocator]
//! static GLOBAL: Counting = Counting;
//!
//! fn main() {
//!     alloc::mark_thread();
//!     let (all, marked) = (alloc::allocations(), alloc::marked_allocations());
//!     let v = vec![7u8; 1000];
//!     assert!(alloc::allocations() > all);
//!     assert!(alloc::marked_allocations() > marked);
//!     assert!(alloc::live_bytes() >= 1000);
//!     drop(v);
//! }
//! ```
//! Counting touches only atomics and a const thread-local, so it never
//! allocates itself. Put a test that watches the counters in a binary of its own: other
//! tests of the binary allocate while it watches.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

/// Allocations (alloc, alloc_zeroed, realloc) by any thread.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Allocations by threads that called [`mark_thread`].
static MARKED: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed.
static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates.
    static THIS_THREAD_MARKED: Cell<bool> = const { Cell::new(false) };
}

/// The system allocator, counting. See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

impl Counting {
    fn count(grow: isize) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(grow, Ordering::Relaxed);
        if THIS_THREAD_MARKED.try_with(Cell::get).unwrap_or(false) {
            MARKED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; counting touches only atomics and a const thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size() as isize);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size() as isize);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size as isize - layout.size() as isize);
        // SAFETY: `ptr` came from this allocator, i.e. from `System`; the rest of the
        // caller's contract is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations by every thread so far (0 unless [`Counting`] is the global allocator).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// Allocations so far by threads that called [`mark_thread`].
pub fn marked_allocations() -> u64 {
    MARKED.load(Ordering::SeqCst)
}

/// Bytes allocated and not yet freed, by every thread.
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::SeqCst)
}

/// Counts this thread's allocations in [`marked_allocations`] from now on.
pub fn mark_thread() {
    THIS_THREAD_MARKED.with(|m| m.set(true));
}
