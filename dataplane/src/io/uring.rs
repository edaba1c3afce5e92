//! The io_uring backend's receive side, and the probe that decides whether io_uring
//! works here at all. (The send side is in `send.rs`, shared with the mmsg fallback.)
//!
//! Receive is one multishot `RECVMSG` per socket drawing from a provided buffer ring
//! shared by all sockets of the ring: each completion names a buffer the kernel filled
//! (header, source address, control messages, payload); the handler reads the payload in
//! place and the buffer goes back to the ring afterwards. A multishot receive ends when
//! the ring runs out of buffers (`ENOBUFS`) or for other reasons; it is re-armed and
//! counted.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fixed, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, IoUring};
use memmap2::MmapMut;

use super::region::Region;
use crate::host::RingSize;
use super::{parse_cmsgs, Event, RECV_CONTROL_LEN};

/// A receive shard's io_uring: few submissions (one multishot receive per socket), and a
/// completion queue of at least this size (four completions per buffer when larger).
pub(crate) const SHARD_RING: RingSize = RingSize { sq: 64, cq: 1024 };
/// The `io_uring_recvmsg_out` header at the start of each received buffer.
pub(crate) const RECV_HEADER_LEN: usize = 16;
/// Room for the source address in each received buffer.
pub(crate) const RECV_NAME_LEN: usize = mem::size_of::<libc::sockaddr_in6>();

/// Checks that an io_uring with multishot receive and provided buffer rings can be set
/// up here. Returns the reason when it cannot.
pub(crate) fn probe() -> Result<(), String> {
    // Multishot RECVMSG, which receive is built on, arrived in Linux 6.0 (an opcode probe
    // cannot tell: plain RECVMSG is older).
    if !super::kernel_at_least(6, 0) {
        return Err("multishot RECVMSG needs Linux 6.0 or later".into());
    }
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let ring = super::send::build_ring(8, 16, true).map_err(|e| {
        let mut r = super::reason("io_uring_setup", &e);
        if disabled != 0 {
            r.push_str(&format!(" (kernel.io_uring_disabled = {disabled})"));
        }
        r
    })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| super::reason("registering an opcode probe", &e))?;
    for (code, name) in [
        (opcode::RecvMsgMulti::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("this kernel's io_uring lacks {name}"));
        }
    }
    // A provided buffer ring (kernel 5.19+) is what multishot receive draws from.
    let mut test = BufRing::new(&ring, 8, 64, 0)
        .map_err(|e| super::reason("registering a buffer ring", &e))?;
    test.unregister(&ring);
    Ok(())
}

/// A provided buffer ring: `entries` buffers of `size` bytes the kernel picks from.
struct BufRing {
    ring: MmapMut,
    bufs: Region,
    mask: u16,
    /// Our copy of the tail; published to the kernel by [`publish`](Self::publish).
    tail: u16,
    bgid: u16,
    registered: bool,
}

impl BufRing {
    fn new(uring: &IoUring, entries: u16, size: usize, bgid: u16) -> io::Result<BufRing> {
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
        // entries, and lives in `this` until `unregister` or drop; we unregister before
        // the memory goes away (see `unregister` and the shard's teardown order).
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

    fn entries(&mut self) -> &mut [BufRingEntry] {
        let n = usize::from(self.mask) + 1;
        // SAFETY: the mapping holds exactly n entries, is aligned for BufRingEntry (page
        // aligned), and BufRingEntry is plain data valid for any bit pattern.
        unsafe { std::slice::from_raw_parts_mut(self.ring.as_mut_ptr().cast::<BufRingEntry>(), n) }
    }

    /// Queues buffer `bid` for the kernel (visible after [`publish`](Self::publish)).
    fn push(&mut self, bid: u16) {
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
    fn publish(&mut self) {
        let base = self.ring.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `base` is the first entry of the registered ring, so the tail field
        // sits in its reserved word; it is a naturally aligned u16 the kernel reads
        // concurrently, hence the atomic store with Release ordering (entries first).
        unsafe {
            let tail = BufRingEntry::tail(base).cast_mut();
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }

    fn unregister(&mut self, uring: &IoUring) {
        if self.registered {
            let _ = uring.submitter().unregister_buf_ring(self.bgid);
            self.registered = false;
        }
    }
}

/// user_data of cancel requests (their completions are ignored).
const CANCEL: u64 = u64::MAX;
/// user_data of the multishot poll on the wake-up eventfd.
const WAKE: u64 = u64::MAX - 1;

fn user_data(slot: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(slot)
}

#[derive(Debug, Clone, Copy)]
struct Socket {
    generation: u32,
    live: bool,
    /// A multishot receive is armed (its last completion had MORE).
    armed: bool,
}

/// Multishot receive for a set of sockets on one ring.
pub(crate) struct UringReceiver {
    ring: IoUring,
    bufs: BufRing,
    /// The msghdr template every multishot RECVMSG uses (name and control lengths).
    msg: Box<libc::msghdr>,
    sockets: Vec<Option<Socket>>,
    /// Slots whose receive must be re-armed (capacity reserved up front).
    rearm: Vec<u32>,
    next_generation: u32,
    /// Multishot requests whose final completion has not arrived yet.
    outstanding: usize,
    /// The eventfd that wakes a waiting [`poll`](Self::poll), if one is watched.
    wake: Option<RawFd>,
}

impl std::fmt::Debug for UringReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringReceiver")
            .field("sockets", &self.sockets.iter().flatten().count())
            .finish()
    }
}

// SAFETY: the msghdr's pointers are null (it only carries lengths); the ring and the
// buffer memory are owned here and used from one thread at a time.
unsafe impl Send for UringReceiver {}

impl UringReceiver {
    /// A receiver for up to `max_sockets` sockets with `buffers` receive buffers of
    /// `payload` bytes each (plus room for headers).
    pub(crate) fn new(max_sockets: u32, buffers: u16, payload: usize) -> io::Result<UringReceiver> {
        let cq = u32::from(buffers).saturating_mul(4).max(SHARD_RING.cq);
        let ring = super::send::build_ring(SHARD_RING.sq, cq, true)?;
        ring.submitter().register_files_sparse(max_sockets)?;
        // struct io_uring_recvmsg_out: namelen, controllen, payloadlen, flags (4 x u32).
        let size = RECV_HEADER_LEN + RECV_NAME_LEN + RECV_CONTROL_LEN + payload;
        let bufs = BufRing::new(&ring, buffers, size, 0)?;
        // SAFETY: msghdr is a plain C struct; all-zero is valid.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
        msg.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_controllen = RECV_CONTROL_LEN;
        Ok(UringReceiver {
            ring,
            bufs,
            msg,
            sockets: vec![None; max_sockets as usize],
            rearm: Vec::with_capacity(max_sockets as usize),
            next_generation: 1,
            outstanding: 0,
            wake: None,
        })
    }

    /// Makes `fd` (an eventfd, which must outlive the receiver) end a waiting
    /// [`poll`](Self::poll) when written: a multishot poll on it, re-armed as needed.
    pub(crate) fn watch_wake(&mut self, fd: RawFd) -> io::Result<()> {
        self.wake = Some(fd);
        self.arm_wake()?;
        self.ring.submit().map(drop)
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let Some(fd) = self.wake else {
            return Ok(());
        };
        let sqe = opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(WAKE);
        // SAFETY: a poll request carries no pointers.
        while unsafe { self.ring.submission().push(&sqe) }.is_err() {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Starts receiving on `fd` (which must stay open until [`remove`](Self::remove));
    /// returns its slot.
    pub(crate) fn add(&mut self, fd: RawFd) -> io::Result<u32> {
        let slot = self
            .sockets
            .iter()
            .position(Option::is_none)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "no free socket slot in this shard",
                )
            })?;
        let slot = slot as u32;
        self.ring.submitter().register_files_update(slot, &[fd])?;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        self.sockets[slot as usize] = Some(Socket {
            generation,
            live: true,
            armed: false,
        });
        if let Err(e) = self.arm(slot).and_then(|()| self.ring.submit().map(drop)) {
            // Undo: forget the socket (cancelling the receive if it was queued) and
            // release its file slot.
            let _ = self.remove(slot);
            return Err(e);
        }
        Ok(slot)
    }

    fn arm(&mut self, slot: u32) -> io::Result<()> {
        let Some(sock) = self.sockets.get_mut(slot as usize).and_then(Option::as_mut) else {
            return Ok(());
        };
        let sqe = opcode::RecvMsgMulti::new(Fixed(slot), &raw const *self.msg, self.bufs.bgid)
            .build()
            .user_data(user_data(slot, sock.generation));
        sock.armed = true;
        self.outstanding += 1;
        // SAFETY: the msghdr template lives in a Box owned by self for the ring's life;
        // the buffers come from the registered buffer ring.
        while unsafe { self.ring.submission().push(&sqe) }.is_err() {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Stops receiving on `slot`. Completions already queued for it are dropped; its
    /// registered file is released.
    pub(crate) fn remove(&mut self, slot: u32) -> io::Result<()> {
        let Some(sock) = self.sockets.get_mut(slot as usize).and_then(Option::take) else {
            return Ok(());
        };
        if sock.armed {
            let cancel = opcode::AsyncCancel::new(user_data(slot, sock.generation))
                .build()
                .user_data(CANCEL);
            // SAFETY: a cancel request carries no pointers.
            while unsafe { self.ring.submission().push(&cancel) }.is_err() {
                self.ring.submit()?;
            }
        }
        self.ring.submit()?;
        // -1 releases the slot's file reference.
        self.ring.submitter().register_files_update(slot, &[-1])?;
        Ok(())
    }

    /// Waits (at most `wait`, or not at all for `None`) for receive completions and hands
    /// each to `sink`. Returns the number of completions processed.
    pub(crate) fn poll(
        &mut self,
        wait: Option<Duration>,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<usize> {
        let submitted = match wait {
            Some(d) => {
                let ts = Timespec::from(d);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(0),
        };
        match submitted {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        let mut n = 0;
        let mut returned = false;
        let UringReceiver {
            ring,
            bufs,
            msg,
            sockets,
            rearm,
            outstanding,
            wake,
            ..
        } = self;
        let mut rearm_wake = false;
        for cqe in ring.completion() {
            let ud = cqe.user_data();
            let flags = cqe.flags();
            if ud == WAKE {
                if let Some(fd) = *wake {
                    drain_eventfd(fd);
                }
                rearm_wake |= !cqueue::more(flags);
                continue;
            }
            n += 1;
            let buffer = cqueue::buffer_select(flags);
            let slot = (ud & 0xffff_ffff) as u32;
            let generation = (ud >> 32) as u32;
            let current = ud != CANCEL
                && sockets
                    .get(slot as usize)
                    .and_then(|s| s.as_ref())
                    .is_some_and(|s| s.live && s.generation == generation);
            if current {
                let res = cqe.result();
                if res >= 0 {
                    if let Some(bid) = buffer {
                        let data = &bufs.bufs.slot(usize::from(bid))[..res as usize];
                        match RecvMsgOut::parse(data, msg) {
                            Ok(out) => sink(Event::Datagram {
                                slot,
                                payload: out.payload_data(),
                                truncated: out.is_payload_truncated()
                                    || out.is_control_data_truncated(),
                                meta: parse_cmsgs(out.control_data()),
                            }),
                            Err(()) => sink(Event::Malformed { slot }),
                        }
                    }
                } else if res != -libc::ENOBUFS && res != -libc::ECANCELED {
                    sink(Event::Error { slot, errno: -res });
                }
                if !cqueue::more(flags) {
                    if let Some(Some(s)) = sockets.get_mut(slot as usize) {
                        s.armed = false;
                    }
                    rearm.push(slot);
                    sink(Event::Rearm { slot });
                }
            }
            if ud != CANCEL && !cqueue::more(flags) {
                *outstanding = outstanding.saturating_sub(1);
            }
            if let Some(bid) = buffer {
                bufs.push(bid);
                returned = true;
            }
        }
        if returned {
            bufs.publish();
        }
        if rearm_wake {
            self.arm_wake()?;
        }
        // Re-arm; a slot whose re-arm fails stays queued and is retried on the next poll.
        let mut pending = mem::take(&mut self.rearm);
        let mut result = Ok(n);
        let mut done = 0;
        for &slot in &pending {
            if let Err(e) = self.arm(slot) {
                result = Err(e);
                break;
            }
            done += 1;
        }
        pending.drain(..done);
        pending.append(&mut self.rearm);
        self.rearm = pending;
        result
    }
}

/// Empties an eventfd's counter (it is non-blocking: nothing to read is fine).
pub(crate) fn drain_eventfd(fd: RawFd) {
    let mut value = 0u64;
    // SAFETY: reads 8 bytes into a live u64.
    let _ = unsafe { libc::read(fd, (&raw mut value).cast(), 8) };
}

impl Drop for UringReceiver {
    fn drop(&mut self) {
        // The kernel must be done with every buffer before the memory is unmapped: cancel
        // every receive and wait (boundedly) for their final completions.
        for slot in 0..self.sockets.len() as u32 {
            let _ = self.remove(slot);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while self.outstanding > 0 && std::time::Instant::now() < deadline {
            if self
                .poll(Some(Duration::from_millis(10)), &mut |_| {})
                .is_err()
            {
                break;
            }
        }
        if self.outstanding > 0 {
            tracing::warn!(
                outstanding = self.outstanding,
                "receives still armed at teardown"
            );
        }
        self.bufs.unregister(&self.ring);
    }
}
