//! The sockets a `poll(2)`-based receive backend watches (the mmsg fallback's and the
//! simulated network's): numbered slots, the shard's wake-up eventfd, and the `pollfd`
//! array built from them (the sockets' descriptors first, the wake-up last).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::drain_eventfd;

/// The error for a shard whose socket slots are all taken.
pub(crate) fn no_free_slot() -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        "no free socket slot in this shard",
    )
}

/// The first free slot of `slots`.
///
/// # Errors
///
/// [`no_free_slot`] when every one is taken.
pub(crate) fn first_free<T>(slots: &[Option<T>]) -> io::Result<usize> {
    slots
        .iter()
        .position(Option::is_none)
        .ok_or_else(no_free_slot)
}

/// Watched sockets of type `T`, each with the descriptor to poll for it.
pub(crate) struct PollSet<T> {
    slots: Vec<Option<(T, RawFd)>>,
    /// The eventfd that ends a wait, if one is watched (last in `pollfds`).
    wake: Option<RawFd>,
    /// A descriptor that ends a wait without being a slot's (the AF_XDP socket whose
    /// ring another path reads), just before the wake-up in `pollfds`.
    extra: Option<RawFd>,
    pollfds: Vec<libc::pollfd>,
}

impl<T> PollSet<T> {
    /// Room for `max` sockets (capacity reserved up front).
    pub(crate) fn new(max: u32) -> PollSet<T> {
        PollSet {
            slots: (0..max).map(|_| None).collect(),
            wake: None,
            extra: None,
            pollfds: Vec::with_capacity(max as usize + 1),
        }
    }

    /// The number of slots, taken or not.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The socket in `slot`, if one is there.
    pub(crate) fn get(&self, slot: usize) -> Option<&T> {
        self.slots.get(slot)?.as_ref().map(|(t, _)| t)
    }

    /// Watches `socket`, polled through `fd`; returns its slot.
    ///
    /// # Errors
    ///
    /// [`no_free_slot`].
    pub(crate) fn add(&mut self, socket: T, fd: RawFd) -> io::Result<u32> {
        let slot = first_free(&self.slots)?;
        self.slots[slot] = Some((socket, fd));
        self.rebuild();
        Ok(slot as u32)
    }

    /// Stops watching `slot`.
    pub(crate) fn remove(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = None;
        }
        self.rebuild();
    }

    /// Makes `fd` becoming readable end a [`wait`](Self::wait), without a slot (it is
    /// neither read nor drained here).
    pub(crate) fn watch_extra(&mut self, fd: RawFd) {
        self.extra = Some(fd);
        self.rebuild();
    }

    /// Makes writing eventfd `fd` end a [`wait`](Self::wait).
    pub(crate) fn watch_wake(&mut self, fd: RawFd) {
        self.wake = Some(fd);
        self.rebuild();
    }

    fn rebuild(&mut self) {
        self.pollfds.clear();
        let fds = self.slots.iter().flatten().map(|&(_, fd)| fd);
        for fd in fds
            .chain(self.extra.iter().copied())
            .chain(self.wake.iter().copied())
        {
            self.pollfds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
    }

    /// Waits at most `timeout` for a socket (or the wake-up) to become readable, then
    /// empties the wake-up eventfd and, with `drain_sockets` (the sockets' descriptors are
    /// eventfds too), theirs. Returns whether anything was readable.
    ///
    /// # Errors
    ///
    /// `ppoll(2)` failed (other than by a signal).
    pub(crate) fn wait(&mut self, timeout: Duration, drain_sockets: bool) -> io::Result<bool> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: `pollfds` is a valid array of its length and `ts` a valid timespec for
        // the call; no signal mask is passed.
        let rc = unsafe {
            libc::ppoll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                &raw const ts,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            return Ok(false);
        }
        let sockets = self.pollfds.len()
            - usize::from(self.wake.is_some())
            - usize::from(self.extra.is_some());
        let wake_at = self.pollfds.len() - usize::from(self.wake.is_some());
        for (i, pfd) in self.pollfds.iter().enumerate() {
            if pfd.revents & libc::POLLIN != 0 && ((drain_sockets && i < sockets) || i >= wake_at) {
                drain_eventfd(pfd.fd);
            }
        }
        Ok(rc > 0)
    }
}
