//! Waking a sleeping thread: an eventfd it sleeps on, and a flag that says it is about to
//! sleep, so that whoever hands it work writes the eventfd (a system call) only then.
//!
//! The sleeper calls [`Wake::sleeping`], checks its queues once more, sleeps, and calls
//! [`Wake::awake`]; the producer pushes work and then calls
//! [`Wake::notify_if_sleeping`]. Both sides put a sequentially consistent fence between
//! their store and their load, so at least one of them sees the other: either the sleeper
//! finds the work, or the producer finds the flag and writes the eventfd. Rare work
//! (commands) just calls [`Wake::notify`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};

use crossbeam_utils::CachePadded;

/// A thread's wake-up eventfd and sleep flag.
#[derive(Debug)]
pub(crate) struct Wake {
    fd: OwnedFd,
    /// Read by the producer on every hand-off, written by the sleeper around sleeps: on
    /// its own cache line.
    sleeping: CachePadded<AtomicBool>,
}

impl Wake {
    /// A non-blocking eventfd.
    pub(crate) fn new() -> io::Result<Wake> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Wake {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            sleeping: CachePadded::new(AtomicBool::new(false)),
        })
    }

    /// The eventfd, for the sleeper to sleep on.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Wakes the sleeper whether or not it sleeps (commands: rare).
    pub(crate) fn notify(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN)
        // means a wake-up is pending anyway.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Wakes the sleeper if it is (about to be) asleep. Call after handing it work.
    pub(crate) fn notify_if_sleeping(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            self.notify();
        }
    }

    /// The sleeper is about to sleep: it must check for work once more after this, and
    /// sleep only if it found none.
    pub(crate) fn sleeping(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The sleeper is awake again.
    pub(crate) fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }
}
