//! Sending with `sendmmsg`: the operations queued since the last flush leave in one call
//! (or a few, when the kernel takes part of them), in order, and each completes before
//! [`flush`](BatchSend::flush) returns. A send the socket refuses for lack of buffer space
//! (`EAGAIN`/`ENOBUFS` on a non-blocking socket) is retried once the socket is writable,
//! for up to a second, rather than lost; any other failure completes that operation with
//! the error and the rest go on.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::io::op::{gso_refused, stop_gso, OpTable};
use crate::io::{sleep_on, wait_fd, BatchSend, Completion};

/// How long a send the socket refuses for lack of buffer space is retried before it
/// counts as failed.
const FULL_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends batches of operations on one socket with `sendmmsg`. See the module docs.
pub(crate) struct MmsgSend {
    fd: RawFd,
    ops: OpTable,
    /// One `mmsghdr` per operation, filled from the queued operations at flush.
    mmsgs: Box<[libc::mmsghdr]>,
    /// Queued operations in order (capacity reserved up front).
    pending: Vec<u16>,
    gso: bool,
    /// The eventfd that ends a [`wait`](BatchSend::wait), if the owner sleeps in it.
    wake_fd: Option<RawFd>,
}

// SAFETY: the mmsghdrs' pointers point into the op table, owned here and moved with it.
unsafe impl Send for MmsgSend {}

impl MmsgSend {
    /// A sender on `fd` (which must outlive it) with room for `max_ops` operations per
    /// flush; `wake` (which must stay open as long as the sender) ends a `wait`.
    pub(crate) fn new(fd: RawFd, max_ops: usize, gso: bool, wake: Option<RawFd>) -> MmsgSend {
        let ops = OpTable::new(max_ops);
        let n = ops.len();
        MmsgSend {
            fd,
            // SAFETY: mmsghdr is a plain C struct; all-zero is valid.
            mmsgs: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
            pending: Vec::with_capacity(n),
            ops,
            gso,
            wake_fd: wake,
        }
    }
}

impl BatchSend for MmsgSend {
    fn ops(&self) -> &OpTable {
        &self.ops
    }

    fn ops_mut(&mut self) -> &mut OpTable {
        &mut self.ops
    }

    fn gso(&self) -> bool {
        self.gso
    }

    fn queue(&mut self, op: u16, _linked: bool) -> io::Result<()> {
        // Sent in queue order by one call: linked or not, they leave in order.
        self.pending.push(op);
        Ok(())
    }

    fn flush(&mut self, done: &mut impl FnMut(Completion)) -> io::Result<()> {
        let k = self.pending.len();
        for (entry, &op) in self.mmsgs.iter_mut().zip(&self.pending) {
            if let Some(op) = self.ops.get(op) {
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
                    0,
                )
            };
            if rc >= 0 {
                let upto = sent + rc as usize;
                for i in sent..upto {
                    let op = self.pending[i];
                    let packets = self.ops.get(op).map_or(0, |o| o.segments);
                    let result = i32::try_from(self.mmsgs[i].msg_len).unwrap_or(i32::MAX);
                    done(Completion {
                        op,
                        packets,
                        result,
                    });
                    self.ops.give_back(op);
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
            let op = self.pending[sent];
            let packets = self.ops.get(op).map_or(0, |o| o.segments);
            refused |= gso_refused(errno, packets);
            done(Completion {
                op,
                packets,
                result: -errno,
            });
            self.ops.give_back(op);
            sent += 1;
            full_since = None;
        }
        self.pending.clear();
        if refused {
            stop_gso(&mut self.gso);
        }
        Ok(())
    }

    fn reap(&mut self, _wait: bool, _done: &mut impl FnMut(Completion)) -> io::Result<usize> {
        // Every send completed in its flush: nothing is ever in flight.
        Ok(0)
    }

    fn wait(&mut self, timeout: Duration, _done: &mut impl FnMut(Completion)) -> usize {
        sleep_on(self.wake_fd, timeout);
        0
    }
}
