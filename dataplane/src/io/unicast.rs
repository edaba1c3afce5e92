//! Sending packets from shared packet buffers to many unicast destinations over one
//! socket: one send operation per destination and run of packets (a UDP GSO send when
//! the run holds several), batched into one submission (io_uring) or one `sendmmsg`.
//!
//! The fan-out shards drive it ([`crate::fanout`]). Unlike [`super::send::Sender`], which
//! owns its destination and its buffers' lifetime, this engine only carries operations:
//! the caller says which bytes go where and hears back, per operation, how the send
//! ended; what the bytes belong to is the caller's business.
//!
//! # Contract
//!
//! - [`take_op`](UnicastSender::take_op), [`fill`](UnicastSender::fill) and
//!   [`queue`](UnicastSender::queue) prepare an operation; [`flush`](UnicastSender::flush)
//!   hands everything queued to the kernel. Every queued operation completes exactly once
//!   through a `done` callback: from `flush` itself with sendmmsg, from a later
//!   [`reap`](UnicastSender::reap) or [`wait`](UnicastSender::wait) with io_uring.
//! - Operations are independent (not linked): one failing does not cancel the others.
//!   Operations to one destination may complete out of order; a caller that needs order
//!   keeps at most one in flight per destination.
//! - [`wait`](UnicastSender::wait) sleeps until a completion arrives or the wake-up
//!   eventfd is written, at most the given time.
//! - Nothing here allocates after [`new`](UnicastSender::new).

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use io_uring::types::{Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{opcode, IoUring};
use socket2::SockAddr;

use super::{GsoCmsg, MAX_GSO_SEGMENTS};

/// user_data of the wake-up read.
const WAKE: u64 = u64::MAX;

/// How long sendmmsg keeps retrying a send the socket refuses for lack of buffer space
/// (EAGAIN on a non-blocking socket) before counting it as failed.
const FULL_TIMEOUT: Duration = Duration::from_secs(1);

/// One send operation and the memory the kernel reads while it is in flight.
struct Op {
    msg: libc::msghdr,
    iov: [libc::iovec; MAX_GSO_SEGMENTS],
    cmsg: GsoCmsg,
    /// The destination, copied in so that it lives as long as the operation.
    dest: SockAddr,
    /// Packets in this operation.
    segments: usize,
}

// SAFETY: the raw pointers in an Op point into the Op itself and into packet buffers the
// caller keeps alive until the operation completes (see `fill`); the Op moves with its
// owning UnicastSender.
unsafe impl Send for Op {}

enum Engine {
    Uring(Box<IoUring>),
    Mmsg(Box<[libc::mmsghdr]>),
}

/// What a finished operation reports: its index, how many packets it carried, and the
/// kernel's result (bytes sent, or a negated errno).
pub(crate) type Done<'a> = &'a mut dyn FnMut(u16, usize, i32);

/// Sends operations to many destinations over one socket. See the module docs.
pub(crate) struct UnicastSender {
    engine: Engine,
    fd: RawFd,
    ops: Box<[Op]>,
    free_ops: Vec<u16>,
    /// mmsg: queued operations in order (capacity reserved up front).
    pending: Vec<u16>,
    /// io_uring: operations in the submission queue not yet submitted.
    unsubmitted: usize,
    gso: bool,
    /// The eventfd that wakes [`wait`](Self::wait).
    wake_fd: RawFd,
    /// io_uring: where the wake-up read puts the eventfd's counter.
    wake_buf: Box<u64>,
    /// io_uring: a read of the eventfd is in flight.
    wake_armed: bool,
}

// SAFETY: see `Op`; the mmsghdr array and the wake-up buffer are owned here too.
unsafe impl Send for UnicastSender {}

impl std::fmt::Debug for UnicastSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnicastSender")
            .field("uring", &matches!(self.engine, Engine::Uring(_)))
            .field("in_flight", &self.in_flight())
            .field("gso", &self.gso)
            .finish()
    }
}

impl UnicastSender {
    /// A sender on `fd` (which must stay open as long as the sender) with room for
    /// `max_ops` operations in flight, woken from [`wait`](Self::wait) by `wake_fd` (a
    /// non-blocking eventfd that must stay open as long as the sender too). `ring` is an
    /// io_uring to use, or `None` for sendmmsg.
    pub(crate) fn new(
        fd: RawFd,
        wake_fd: RawFd,
        ring: Option<IoUring>,
        max_ops: usize,
        gso: bool,
    ) -> io::Result<UnicastSender> {
        let max_ops = max_ops.clamp(1, usize::from(u16::MAX));
        let unspecified = SockAddr::from(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let ops: Box<[Op]> = (0..max_ops)
            .map(|_| Op {
                // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
                msg: unsafe { mem::zeroed() },
                iov: [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; MAX_GSO_SEGMENTS],
                cmsg: GsoCmsg::zeroed(),
                dest: unspecified.clone(),
                segments: 0,
            })
            .collect();
        let engine = match ring {
            Some(ring) => {
                // Registered file: the kernel skips the fd table lookup per operation.
                ring.submitter().register_files(&[fd])?;
                Engine::Uring(Box::new(ring))
            }
            // SAFETY: mmsghdr is a plain C struct; all-zero is valid.
            None => Engine::Mmsg((0..max_ops).map(|_| unsafe { mem::zeroed() }).collect()),
        };
        Ok(UnicastSender {
            engine,
            fd,
            free_ops: (0..max_ops as u16).rev().collect(),
            ops,
            pending: Vec::with_capacity(max_ops),
            unsubmitted: 0,
            gso,
            wake_fd,
            wake_buf: Box::new(0),
            wake_armed: false,
        })
    }

    /// Operations queued or in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len() - self.free_ops.len()
    }

    /// Whether runs may still leave as GSO sends (off from the start, or after the kernel
    /// refused one).
    pub(crate) fn gso(&self) -> bool {
        self.gso
    }

    /// A free operation, if any.
    pub(crate) fn take_op(&mut self) -> Option<u16> {
        self.free_ops.pop()
    }

    /// Points operation `op` (from [`take_op`](Self::take_op)) at `dest` and the packets
    /// `segment(0..n)` (address and length each), as one GSO send of `segment(0)`'s
    /// length when `n > 1`. `n` is at most 64.
    ///
    /// # Safety
    ///
    /// Each `segment(i)` must be readable memory of its length that stays valid and
    /// unwritten until the operation's completion has been reported through `done`.
    pub(crate) unsafe fn fill(
        &mut self,
        op: u16,
        dest: &SockAddr,
        n: usize,
        segment: impl Fn(usize) -> (*const u8, usize),
    ) {
        let n = n.clamp(1, MAX_GSO_SEGMENTS);
        let op = &mut self.ops[usize::from(op)];
        let mut first_len = 0;
        for (i, iov) in op.iov[..n].iter_mut().enumerate() {
            let (ptr, len) = segment(i);
            if i == 0 {
                first_len = len;
            }
            *iov = libc::iovec {
                iov_base: ptr.cast_mut().cast(),
                iov_len: len,
            };
        }
        op.segments = n;
        op.dest = dest.clone();
        op.msg.msg_name = op.dest.as_ptr().cast_mut().cast();
        op.msg.msg_namelen = op.dest.len();
        op.msg.msg_iov = op.iov.as_mut_ptr();
        op.msg.msg_iovlen = n;
        op.cmsg.attach(
            &mut op.msg,
            (n > 1).then(|| u16::try_from(first_len).unwrap_or(u16::MAX)),
        );
    }

    /// Queues a filled operation. With io_uring a full submission queue is submitted first;
    /// if that fails the operation is not queued and comes back as failed through `done`
    /// on the next [`flush`](Self::flush).
    pub(crate) fn queue(&mut self, op: u16) {
        match &mut self.engine {
            Engine::Uring(ring) => {
                let sqe = opcode::SendMsg::new(Fixed(0), &raw const self.ops[usize::from(op)].msg)
                    .build()
                    .user_data(u64::from(op));
                if ring.submission().is_full() && ring.submit().is_ok() {
                    self.unsubmitted = 0;
                }
                // SAFETY: the msghdr, its iovecs, control message and destination live in
                // `ops`, untouched until this operation's completion is reaped (the op is
                // not returned to `free_ops` before then); the packet bytes are the
                // caller's to keep valid (`fill`).
                if unsafe { ring.submission().push(&sqe) }.is_ok() {
                    self.unsubmitted += 1;
                } else {
                    // The queue is still full: report it as failed on the next flush.
                    self.pending.push(op);
                }
            }
            Engine::Mmsg(_) => self.pending.push(op),
        }
    }

    /// Hands everything queued to the kernel. With sendmmsg every operation completes
    /// (through `done`) before this returns.
    pub(crate) fn flush(&mut self, done: Done<'_>) {
        match &mut self.engine {
            Engine::Uring(ring) => {
                if self.unsubmitted > 0 {
                    match ring.submit() {
                        Ok(_) => self.unsubmitted = 0,
                        Err(e) => {
                            // They stay in the submission queue; the next submit retries.
                            tracing::debug!(error = %e, "submitting fan-out sends failed");
                        }
                    }
                }
                // Operations that found no room in the submission queue.
                for i in 0..self.pending.len() {
                    let op = self.pending[i];
                    let segments = self.ops[usize::from(op)].segments;
                    done(op, segments, -libc::EBUSY);
                    self.free_ops.push(op);
                }
                self.pending.clear();
            }
            Engine::Mmsg(_) => self.flush_mmsg(done),
        }
    }

    /// Sends the queued operations with sendmmsg, in order, and completes them.
    fn flush_mmsg(&mut self, done: Done<'_>) {
        let Engine::Mmsg(mmsgs) = &mut self.engine else {
            return;
        };
        let k = self.pending.len();
        for (entry, &op) in mmsgs.iter_mut().zip(&self.pending) {
            entry.msg_hdr = self.ops[usize::from(op)].msg;
            entry.msg_len = 0;
        }
        let mut sent = 0;
        let mut full_since: Option<Instant> = None;
        let mut gso_einval = false;
        while sent < k {
            // SAFETY: entries sent..k are initialised msghdrs whose pointers are valid (see
            // `fill`); the kernel reads them during the call only.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd,
                    mmsgs[sent..k].as_mut_ptr(),
                    (k - sent) as libc::c_uint,
                    0,
                )
            };
            if rc >= 0 {
                let upto = sent + rc as usize;
                for i in sent..upto {
                    let op = self.pending[i];
                    let result = mmsgs[i].msg_len as i32;
                    done(op, self.ops[usize::from(op)].segments, result);
                    self.free_ops.push(op);
                }
                sent = upto;
                full_since = None;
                continue;
            }
            let e = io::Error::last_os_error();
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            if errno == libc::EINTR {
                continue;
            }
            if errno == libc::EAGAIN || errno == libc::ENOBUFS {
                // The socket's send buffer is full (a non-blocking socket): wait for room
                // rather than lose the packets, within reason.
                let since = *full_since.get_or_insert_with(Instant::now);
                if since.elapsed() < FULL_TIMEOUT {
                    wait_writable(self.fd, Duration::from_millis(10));
                    continue;
                }
            }
            // The first remaining message failed: report it and go on past it.
            let op = self.pending[sent];
            let segments = self.ops[usize::from(op)].segments;
            done(op, segments, -errno);
            self.free_ops.push(op);
            sent += 1;
            full_since = None;
            gso_einval |= segments > 1 && errno == libc::EINVAL;
        }
        self.pending.clear();
        if gso_einval {
            self.gso_refused();
        }
    }

    /// GSO sends larger than the path MTU fail with EINVAL (the same packets sent one by
    /// one would be fragmented instead): stop using GSO after the first such failure.
    fn gso_refused(&mut self) {
        if self.gso {
            self.gso = false;
            tracing::warn!(
                "a fan-out GSO send was refused (EINVAL: segments larger than the path MTU?); \
                 sending one datagram per send from now on"
            );
        }
    }

    /// Collects finished io_uring operations, handing each to `done`; returns how many.
    /// Also notices a wake-up. A no-op for sendmmsg.
    pub(crate) fn reap(&mut self, done: Done<'_>) -> usize {
        let Engine::Uring(ring) = &mut self.engine else {
            return 0;
        };
        // Sends that had to wait for room finish in deferred task work, which only an
        // enter runs: the kernel flags it.
        if ring.submission().taskrun() || ring.submission().cq_overflow() {
            if let Err(e) = ring.submit() {
                tracing::debug!(error = %e, "running fan-out completions failed");
            } else {
                self.unsubmitted = 0;
            }
        }
        let mut n = 0;
        let mut gso_einval = false;
        for cqe in ring.completion() {
            let ud = cqe.user_data();
            if ud == WAKE {
                self.wake_armed = false;
                continue;
            }
            let Some(op) = self.ops.get_mut(ud as usize) else {
                continue;
            };
            let res = cqe.result();
            if res == -libc::EINVAL && op.segments > 1 {
                gso_einval = true;
            }
            done(ud as u16, op.segments, res);
            op.segments = 0;
            self.free_ops.push(ud as u16);
            n += 1;
        }
        if gso_einval {
            self.gso_refused();
        }
        n
    }

    /// Sleeps until an io_uring operation completes or the wake-up eventfd is written, at
    /// most `timeout`, then reaps like [`reap`](Self::reap). With sendmmsg (nothing is ever
    /// in flight) it waits for the eventfd alone.
    pub(crate) fn wait(&mut self, timeout: Duration, done: Done<'_>) -> usize {
        match &mut self.engine {
            Engine::Uring(ring) => {
                if !self.wake_armed {
                    let read = opcode::Read::new(
                        Fd(self.wake_fd),
                        (&raw mut *self.wake_buf).cast::<u8>(),
                        8,
                    )
                    .build()
                    .user_data(WAKE);
                    // SAFETY: the 8-byte buffer is boxed and owned by self for the ring's
                    // whole life; the eventfd stays open as long as the sender (`new`).
                    if unsafe { ring.submission().push(&read) }.is_ok() {
                        self.wake_armed = true;
                        self.unsubmitted += 1;
                    }
                }
                let ts = Timespec::from(timeout);
                let args = SubmitArgs::new().timespec(&ts);
                match ring.submitter().submit_with_args(1, &args) {
                    Ok(_) => self.unsubmitted = 0,
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                        ) =>
                    {
                        self.unsubmitted = 0;
                    }
                    Err(e) => tracing::debug!(error = %e, "waiting on the fan-out ring failed"),
                }
                self.reap(done)
            }
            Engine::Mmsg(_) => {
                let mut pfd = libc::pollfd {
                    fd: self.wake_fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
                // SAFETY: one valid pollfd, read and written by the kernel during the call.
                let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
                if rc > 0 {
                    let mut counter = 0u64;
                    // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd.
                    let _ = unsafe {
                        libc::read(self.wake_fd, (&raw mut counter).cast::<libc::c_void>(), 8)
                    };
                }
                0
            }
        }
    }
}

impl Drop for UnicastSender {
    fn drop(&mut self) {
        // The kernel writes the wake-up read's result into `wake_buf`: cancel that read and
        // see it finish before the buffer goes away. (Sends still in flight read only
        // their packets and the copies the kernel took of their headers at submission.)
        let Engine::Uring(ring) = &mut self.engine else {
            return;
        };
        if !self.wake_armed {
            return;
        }
        let cancel = opcode::AsyncCancel::new(WAKE).build().user_data(WAKE - 1);
        // SAFETY: a cancel request carries no pointers.
        if unsafe { ring.submission().push(&cancel) }.is_err() {
            let _ = ring.submit();
            // SAFETY: as above.
            let _ = unsafe { ring.submission().push(&cancel) };
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.wake_armed && Instant::now() < deadline {
            let ts = Timespec::from(Duration::from_millis(10));
            let args = SubmitArgs::new().timespec(&ts);
            let _ = ring.submitter().submit_with_args(1, &args);
            for cqe in ring.completion() {
                if cqe.user_data() == WAKE {
                    self.wake_armed = false;
                }
            }
        }
    }
}

/// Waits until `fd` may be written, at most `timeout`.
fn wait_writable(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, read and written by the kernel during the call.
    let _ = unsafe { libc::poll(&raw mut pfd, 1, ms) };
}
