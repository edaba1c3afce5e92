//! Sending with `sendmmsg`: the operations queued since the last flush leave in one call
//! (or a few, when the kernel takes part of them), in order, and each completes before
//! [`flush`](BatchSend::flush) returns. A send the socket refuses for lack of buffer space
//! (`EAGAIN`/`ENOBUFS` on a non-blocking socket) is retried once the socket is writable,
//! for up to a second, rather than lost; any other failure completes that operation with
//! the error and the rest go on.
//!
//! With [`MmsgSend::set_defer_when_full`] (the publisher's async path, which must not
//! block its thread) sends go with `MSG_DONTWAIT` and a refused one is not waited for:
//! it and those after it stay queued, in flight, and go at the next flush or reap, once
//! the socket has room.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::io::op::{gso_refused, OpTable};
use crate::io::{wait_fd, BatchSend, Completion, Done, Sending};

/// How long a send the socket refuses for lack of buffer space is retried before it
/// counts as failed.
const FULL_TIMEOUT: Duration = Duration::from_secs(1);

/// The `sendmmsg` backend of one socket. See the module docs.
pub(crate) struct MmsgSend {
    fd: RawFd,
    /// One `mmsghdr` per operation, filled from the queued operations at flush.
    mmsgs: Box<[libc::mmsghdr]>,
    /// Leave what the full socket refuses queued rather than wait for room.
    defer_when_full: bool,
}

// SAFETY: the mmsghdrs' pointers point into the op table the backend is flushed with,
// which the owning `Sending` keeps beside it; they are rewritten before every call.
unsafe impl Send for MmsgSend {}

impl MmsgSend {
    /// Sending on `fd` (which must outlive it) with `ops`' operations (an `mmsghdr`
    /// apiece).
    pub(crate) fn new(fd: RawFd, ops: OpTable) -> Sending<MmsgSend> {
        let n = ops.len();
        let backend = MmsgSend {
            fd,
            // SAFETY: mmsghdr is a plain C struct; all-zero is valid.
            mmsgs: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
            defer_when_full: false,
        };
        Sending::new(ops, backend)
    }

    /// Whether a send the full socket refuses stays queued (and in flight) for the next
    /// flush or reap instead of being waited for (see the module docs); the sends then go
    /// with `MSG_DONTWAIT`, so that a blocking socket does not wait in the kernel either.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn set_defer_when_full(&mut self, defer: bool) {
        self.defer_when_full = defer;
    }
}

impl BatchSend for MmsgSend {
    fn flush(&mut self, ops: &mut OpTable, done: &mut impl Done) -> io::Result<()> {
        let pending = ops.take_queue();
        let k = pending.len().min(self.mmsgs.len());
        for (entry, &op) in self.mmsgs.iter_mut().zip(&pending) {
            if let Some(op) = ops.get(op) {
                entry.msg_hdr = op.msg;
            }
            entry.msg_len = 0;
        }
        let mut sent = 0;
        let mut full_since: Option<Instant> = None;
        let mut refused = false;
        while sent < k {
            // SAFETY: entries sent..k are initialised msghdrs whose pointers are valid (see
            // `OpTable::fill`); the kernel reads them during the call only.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd,
                    self.mmsgs[sent..k].as_mut_ptr(),
                    (k - sent) as libc::c_uint,
                    // Deferring: never wait in the kernel for room, even on a blocking
                    // socket.
                    if self.defer_when_full {
                        libc::MSG_DONTWAIT
                    } else {
                        0
                    },
                )
            };
            if rc >= 0 {
                let upto = sent + rc as usize;
                for (&op, entry) in pending[sent..upto].iter().zip(&self.mmsgs[sent..upto]) {
                    let packets = ops.get(op).map_or(0, |o| o.segments);
                    let result = i32::try_from(entry.msg_len).unwrap_or(i32::MAX);
                    done(Completion {
                        op,
                        packets,
                        result,
                    });
                    ops.give_back(op);
                }
                sent = upto;
                full_since = None;
                continue;
            }
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if errno == libc::EINTR {
                continue;
            }
            if (errno == libc::EAGAIN || errno == libc::ENOBUFS) && self.defer_when_full {
                // Full: what is left goes at the next flush or reap.
                ops.requeue_from(pending, sent);
                if refused {
                    ops.stop_gso();
                }
                return Ok(());
            }
            if errno == libc::EAGAIN || errno == libc::ENOBUFS {
                // The socket's send buffer is full (a non-blocking socket): wait for room
                // rather than lose the packets, within reason.
                let since = *full_since.get_or_insert_with(Instant::now);
                if since.elapsed() < FULL_TIMEOUT {
                    wait_fd(self.fd, libc::POLLOUT, Duration::from_millis(10));
                    continue;
                }
            }
            // The first remaining message failed: report it and go on past it.
            let op = pending[sent];
            let packets = ops.get(op).map_or(0, |o| o.segments);
            refused |= gso_refused(errno, packets);
            done(Completion {
                op,
                packets,
                result: -errno,
            });
            ops.give_back(op);
            sent += 1;
            full_since = None;
        }
        ops.restore_queue(pending);
        if refused {
            ops.stop_gso();
        }
        Ok(())
    }

    /// Sends what a full socket left queued (see the module docs); with `wait`, waits
    /// for room as a flush without deferring does. Returns how many completed.
    fn reap(&mut self, ops: &mut OpTable, wait: bool, done: &mut impl Done) -> io::Result<usize> {
        if !ops.has_queued() {
            return Ok(0);
        }
        let defer = self.defer_when_full;
        self.defer_when_full = defer && !wait;
        let mut n = 0;
        let flushed = self.flush(ops, &mut |c| {
            n += 1;
            done(c)
        });
        self.defer_when_full = defer;
        flushed.map(|()| n)
    }
}
