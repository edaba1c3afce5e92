//! Sending on io_uring: each operation is one `SENDMSG` (or `SENDMSG_ZC`) SQE on the
//! socket, registered as fixed file 0; all operations queued between two flushes leave in
//! one submission. Linked operations carry `IO_LINK`, so that each starts only after the
//! one before it finished: independent SQEs to one socket may complete out of order (one
//! that meets a full send buffer waits for room while a later one goes out), and a
//! subscriber counts a late packet as lost.
//!
//! Zero-copy sends (`SENDMSG_ZC`, optionally naming a registered buffer region) complete
//! twice: once sent, once the kernel let go of the buffers; the operation is reported
//! finished at the second.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::{benign, IGNORED, WAKE};
use crate::io::op::{gso_refused, OpTable};
use crate::io::region::Region;
use crate::io::{BatchSend, Completion, Done, Sending};
use io_uring::types::{Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

/// The io_uring backend of one socket. See the module docs.
pub(crate) struct UringSend {
    ring: IoUring,
    /// Operations pushed to the submission queue and not yet submitted.
    unsubmitted: usize,
    zero_copy: bool,
    /// Zero-copy sends name the registered region (fixed buffer 0).
    fixed_buffer: bool,
    /// Where the wake-up read puts the eventfd's counter.
    wake_buf: Box<u64>,
    wake_armed: bool,
}

impl UringSend {
    /// Sending on `fd` (which must outlive it) through `ring`, with `ops`' operations;
    /// with `zero_copy`, with `SENDMSG_ZC` from that region (registered as fixed buffer 0
    /// on Linux 6.15+).
    ///
    /// # Safety
    ///
    /// With `zero_copy`, the region must outlive the sender (the kernel keeps its pages
    /// registered until the ring is dropped).
    pub(crate) unsafe fn new(
        fd: RawFd,
        ring: IoUring,
        ops: OpTable,
        zero_copy: Option<&Region>,
    ) -> io::Result<Sending<UringSend>> {
        // SENDMSG_ZC itself is Linux 6.1+; naming a registered buffer in it, 6.15+.
        let region = zero_copy;
        let zero_copy = region.is_some();
        if zero_copy && !crate::io::kernel_at_least(6, 1) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "zero-copy sends (SENDMSG_ZC) need Linux 6.1 or later",
            ));
        }
        // Registered file: the kernel skips the fd table lookup per operation.
        ring.submitter().register_files(&[fd])?;
        let mut fixed_buffer = false;
        if let Some(region) = region {
            if crate::io::kernel_at_least(6, 15) {
                let whole = libc::iovec {
                    iov_base: region.as_ptr().cast_mut().cast(),
                    iov_len: region.len(),
                };
                // SAFETY: the caller guarantees the region outlives the sender and so the
                // ring that holds the registration.
                unsafe { ring.submitter().register_buffers(&[whole])? };
                fixed_buffer = true;
            }
        }
        let backend = UringSend {
            ring,
            unsubmitted: 0,
            zero_copy,
            fixed_buffer,
            wake_buf: Box::new(0),
            wake_armed: false,
        };
        Ok(Sending::new(ops, backend))
    }

    /// Makes the kernel write eventfd `fd` whenever a send completes later than its
    /// submission (not for one that completed inside it), so that an async task can
    /// sleep until then. The kernel holds its own reference to the eventfd.
    #[cfg(feature = "tokio")]
    pub(crate) fn notify_completions(&self, fd: RawFd) -> io::Result<()> {
        self.ring.submitter().register_eventfd_async(fd)
    }

    fn submit(&mut self) -> io::Result<()> {
        self.ring.submit()?;
        self.unsubmitted = 0;
        Ok(())
    }

    /// Hands every completion in the queue to `done`; returns how many operations
    /// finished.
    fn collect(&mut self, ops: &mut OpTable, done: &mut impl Done) -> usize {
        let mut n = 0;
        let mut refused = false;
        for cqe in self.ring.completion() {
            let ud = cqe.user_data();
            if ud == WAKE {
                self.wake_armed = false;
                continue;
            }
            let Ok(index) = u16::try_from(ud) else {
                continue;
            };
            let Some(op) = ops.get_mut(index) else {
                continue;
            };
            let flags = cqe.flags();
            let result = if cqueue::notif(flags) {
                // Zero-copy: the kernel let go of the buffers; report the send's result.
                op.zc_result.take().unwrap_or(0)
            } else if cqueue::more(flags) {
                // Zero-copy: sent, but the buffers stay the kernel's until the notification.
                op.zc_result = Some(cqe.result());
                continue;
            } else {
                cqe.result()
            };
            let packets = op.segments;
            refused |= result < 0 && gso_refused(-result, packets);
            done(Completion {
                op: index,
                packets,
                result,
            });
            ops.give_back(index);
            n += 1;
        }
        if refused {
            ops.stop_gso();
        }
        n
    }
}

impl BatchSend for UringSend {
    fn queue(&mut self, ops: &mut OpTable, op: u16, linked: bool) -> io::Result<()> {
        let Some(entry) = ops.get(op) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no such operation",
            ));
        };
        let msg = &raw const entry.msg;
        let sqe = if self.zero_copy {
            let zc = opcode::SendMsgZc::new(Fixed(0), msg);
            if self.fixed_buffer {
                zc.buf_index(Some(0)).build()
            } else {
                zc.build()
            }
        } else {
            opcode::SendMsg::new(Fixed(0), msg).build()
        }
        .user_data(u64::from(op));
        let sqe = if linked {
            sqe.flags(squeue::Flags::IO_LINK)
        } else {
            sqe
        };
        // Make room in the submission queue before committing the operation.
        if self.ring.submission().is_full() {
            if let Err(e) = self.submit() {
                ops.give_back(op);
                return Err(e);
            }
        }
        // SAFETY: the msghdr, its iovecs, control message and destination live in the op
        // table, untouched until this operation's completion is collected (the op is not
        // given back before then); the packet bytes are the filler's to keep valid.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            ops.give_back(op);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the io_uring submission queue is full",
            ));
        }
        self.unsubmitted += 1;
        Ok(())
    }

    fn flush(&mut self, _ops: &mut OpTable, _done: &mut impl Done) -> io::Result<()> {
        if self.unsubmitted > 0 {
            // On failure the operations stay in the submission queue; the next submit
            // retries.
            self.submit()?;
        }
        Ok(())
    }

    fn reap(&mut self, ops: &mut OpTable, wait: bool, done: &mut impl Done) -> io::Result<usize> {
        if wait && ops.in_flight() > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => self.unsubmitted = 0,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        } else if self.unsubmitted > 0
            || self.ring.submission().taskrun()
            || self.ring.submission().cq_overflow()
        {
            // Sends that had to wait for room finish in deferred task work, which only an
            // enter runs: the kernel flags it.
            match self.submit() {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.collect(ops, done))
    }

    fn wait(&mut self, ops: &mut OpTable, timeout: Duration, done: &mut impl Done) -> usize {
        if let (Some(fd), false) = (ops.wake(), self.wake_armed) {
            let read = opcode::Read::new(Fd(fd), (&raw mut *self.wake_buf).cast::<u8>(), 8)
                .build()
                .user_data(WAKE);
            // SAFETY: the 8-byte buffer is boxed and owned by self for the ring's whole
            // life; the eventfd stays open as long as the table (`OpTable::new`).
            if unsafe { self.ring.submission().push(&read) }.is_ok() {
                self.wake_armed = true;
                self.unsubmitted += 1;
            }
        }
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => self.unsubmitted = 0,
            Err(e) if benign(&e) => self.unsubmitted = 0,
            Err(e) => tracing::debug!(error = %e, "waiting on the send ring failed"),
        }
        self.collect(ops, done)
    }
}

impl Drop for UringSend {
    fn drop(&mut self) {
        // The kernel writes the wake-up read's result into `wake_buf`: cancel that read and
        // see it finish before the buffer goes away. (Sends still in flight read only
        // their packets and the copies the kernel took of their headers at submission.)
        if !self.wake_armed {
            return;
        }
        let cancel = opcode::AsyncCancel::new(WAKE).build().user_data(IGNORED);
        // SAFETY: a cancel request carries no pointers.
        if unsafe { self.ring.submission().push(&cancel) }.is_err() {
            let _ = self.ring.submit();
            // SAFETY: as above.
            let _ = unsafe { self.ring.submission().push(&cancel) };
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.wake_armed && Instant::now() < deadline {
            let ts = Timespec::from(Duration::from_millis(10));
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            for cqe in self.ring.completion() {
                if cqe.user_data() == WAKE {
                    self.wake_armed = false;
                }
            }
        }
    }
}
