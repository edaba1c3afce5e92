//! Sending packets from a [`Region`] of packet buffers to one destination, as batches of
//! send operations: one operation per packet, or one per GSO run of equal-length packets.
//!
//! The sender owns every buffer it was given until that buffer's send completed: the
//! `done` callbacks of [`Sender::send`] and [`Sender::reap`] hand each slot back exactly
//! once. With io_uring completions arrive later; with mmsg they arrive before `send`
//! returns.

use std::io;
use std::mem;
use std::os::fd::RawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use socket2::SockAddr;

use super::region::Region;
use super::{gso_run, GsoCmsg, MAX_GSO_SEGMENTS};

/// One send operation and the memory the kernel reads while it is in flight.
struct Op {
    msg: libc::msghdr,
    iov: [libc::iovec; MAX_GSO_SEGMENTS],
    cmsg: GsoCmsg,
    slots: [u16; MAX_GSO_SEGMENTS],
    nslots: usize,
    /// Zero-copy: the send's result, kept until its notification says the buffers are
    /// free again.
    zc_result: Option<i32>,
}

// SAFETY: the raw pointers in an Op point into the Op itself, the sender's destination
// address and the sender's region, all owned by the same Sender and moved with it.
unsafe impl Send for Op {}

enum Engine {
    Uring(Box<IoUring>),
    Mmsg(Box<[libc::mmsghdr]>),
}

/// Sends packets to one destination. See the module docs.
pub(crate) struct Sender {
    engine: Engine,
    fd: RawFd,
    ops: Box<[Op]>,
    free_ops: Vec<u16>,
    dest: Box<SockAddr>,
    gso: bool,
    max_segments: usize,
    /// Operations queued in the SQ but not yet submitted.
    unsubmitted: usize,
    /// mmsg: filled operations in submission order (capacity reserved up front).
    pending: Vec<u16>,
    /// io_uring zero-copy sends (SENDMSG_ZC).
    zero_copy: bool,
    /// Zero-copy sends name the registered region (fixed buffer 0): Linux 6.15+.
    fixed_buffer: bool,
}

// SAFETY: see `Op`; the mmsghdr array points into `ops`, also owned here.
unsafe impl Send for Sender {}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("uring", &matches!(self.engine, Engine::Uring(_)))
            .field("in_flight", &self.in_flight())
            .field("gso", &self.gso)
            .finish()
    }
}

/// Outcome of one send operation, per packet slot.
pub(crate) type Done<'a> = &'a mut dyn FnMut(u16, io::Result<()>);

impl Sender {
    /// A sender on `fd` (which must outlive it) to `dest`, with room for `max_ops`
    /// operations in flight. `ring` is an io_uring to use, or `None` for sendmmsg.
    /// With `zero_copy` (io_uring only) `region` is registered as a fixed buffer and sends
    /// are `SENDMSG_ZC` from it.
    ///
    /// # Safety
    ///
    /// With `zero_copy` and a ring, `region` must outlive the sender (the kernel keeps
    /// its pages registered until the ring is dropped).
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn new(
        fd: RawFd,
        dest: SockAddr,
        ring: Option<IoUring>,
        region: &Region,
        zero_copy: bool,
        max_ops: usize,
        gso: bool,
        max_segments: usize,
    ) -> io::Result<Sender> {
        let max_ops = max_ops.clamp(1, usize::from(u16::MAX));
        let zero_op = || Op {
            // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
            msg: unsafe { mem::zeroed() },
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_GSO_SEGMENTS],
            cmsg: GsoCmsg::zeroed(),
            slots: [0; MAX_GSO_SEGMENTS],
            nslots: 0,
            zc_result: None,
        };
        let ops: Box<[Op]> = (0..max_ops).map(|_| zero_op()).collect();
        let ring_used = ring.is_some();
        // SENDMSG_ZC itself is Linux 6.1+; naming a registered buffer in it, 6.15+.
        let fixed_buffer = zero_copy && ring_used && super::kernel_at_least(6, 15);
        if zero_copy && ring_used && !super::kernel_at_least(6, 1) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "zero-copy sends (SENDMSG_ZC) need Linux 6.1 or later",
            ));
        }
        let engine = match ring {
            Some(ring) => {
                // Registered file: the kernel skips the fd table lookup per operation.
                ring.submitter().register_files(&[fd])?;
                if fixed_buffer {
                    let whole = libc::iovec {
                        iov_base: region.as_ptr().cast_mut().cast(),
                        iov_len: region.len(),
                    };
                    // SAFETY: the caller guarantees the region outlives the sender and so
                    // the ring that holds the registration.
                    unsafe { ring.submitter().register_buffers(&[whole])? };
                }
                Engine::Uring(Box::new(ring))
            }
            // SAFETY: mmsghdr is a plain C struct; all-zero is valid.
            None => Engine::Mmsg((0..max_ops).map(|_| unsafe { mem::zeroed() }).collect()),
        };
        Ok(Sender {
            engine,
            fd,
            free_ops: (0..max_ops as u16).rev().collect(),
            ops,
            dest: Box::new(dest),
            gso,
            max_segments: max_segments.clamp(1, MAX_GSO_SEGMENTS),
            unsubmitted: 0,
            pending: Vec::with_capacity(max_ops),
            zero_copy: zero_copy && ring_used,
            fixed_buffer,
        })
    }

    /// Send operations in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len() - self.free_ops.len()
    }

    /// Sends the packets `(slot, len)` from `region`, in order. Returns how many it took;
    /// the rest did not fit in the free operations (reap and call again). Each taken slot
    /// comes back through `done` exactly once, when its send finished: before this returns
    /// for mmsg, from a later [`reap`](Self::reap) for io_uring. Also returns the number of
    /// send operations used and how many carried several packets, and the error if
    /// submitting to the ring failed: the operations taken then stay queued in the ring's
    /// submission queue, and the next `reap` submits them again.
    pub(crate) fn send(
        &mut self,
        region: &Region,
        packets: &[(u16, u16)],
        done: Done<'_>,
    ) -> (SendCount, Option<io::Error>) {
        let mut count = SendCount::default();
        let mut error = None;
        let mut taken = 0;
        while taken < packets.len() {
            if let Engine::Uring(ring) = &mut self.engine {
                // Make room in the submission queue before committing an operation.
                if ring.submission().is_full() {
                    if let Err(e) = ring.submit() {
                        error = Some(e);
                        break;
                    }
                    self.unsubmitted = 0;
                }
            }
            let Some(op_index) = self.free_ops.pop() else {
                break;
            };
            let rest = &packets[taken..];
            let n = if self.gso {
                gso_run(
                    rest.iter().map(|&(_, len)| usize::from(len)),
                    self.max_segments,
                )
            } else {
                1
            };
            let run = &rest[..n];
            self.fill(op_index, region, run);
            match &mut self.engine {
                Engine::Uring(ring) => {
                    let op = &self.ops[usize::from(op_index)];
                    let sqe = if self.zero_copy {
                        let zc = opcode::SendMsgZc::new(types::Fixed(0), &raw const op.msg);
                        if self.fixed_buffer {
                            zc.buf_index(Some(0)).build()
                        } else {
                            zc.build()
                        }
                    } else {
                        opcode::SendMsg::new(types::Fixed(0), &raw const op.msg).build()
                    }
                    .user_data(u64::from(op_index));
                    // Independent SQEs to one socket may complete out of order (one that
                    // meets a full send buffer waits for room while a later one goes out),
                    // and a subscriber counts a late packet as lost: link the operations
                    // of a batch so that each starts only after the one before finished.
                    let more = taken + n < packets.len() && !self.free_ops.is_empty();
                    let sqe = if more {
                        sqe.flags(squeue::Flags::IO_LINK)
                    } else {
                        sqe
                    };
                    // SAFETY: the msghdr, its iovecs, control message and destination stay
                    // valid and untouched until this operation's completion is reaped: the
                    // op is not returned to `free_ops` before then, and the region and
                    // destination are owned by the caller / by us for our whole life.
                    if unsafe { ring.submission().push(&sqe) }.is_err() {
                        // Cannot happen (room was made above); give the op back.
                        self.ops[usize::from(op_index)].nslots = 0;
                        self.free_ops.push(op_index);
                        break;
                    }
                    self.unsubmitted += 1;
                }
                Engine::Mmsg(_) => self.pending.push(op_index),
            }
            taken += n;
            count.ops += 1;
            if n > 1 {
                count.gso_ops += 1;
            }
        }
        match &mut self.engine {
            Engine::Uring(ring) => {
                if self.unsubmitted > 0 {
                    match ring.submit() {
                        Ok(_) => self.unsubmitted = 0,
                        Err(e) => error = Some(e),
                    }
                }
            }
            Engine::Mmsg(_) => self.flush_mmsg(done),
        }
        count.packets = taken;
        (count, error)
    }

    /// GSO sends larger than the path MTU fail with EINVAL (the same packets sent one by
    /// one would be fragmented instead): stop using GSO after the first such failure.
    fn gso_refused(&mut self, errno: i32, nslots: usize) {
        if self.gso && nslots > 1 && errno == libc::EINVAL {
            self.gso = false;
            tracing::warn!(
                "a GSO send was refused (EINVAL: segments larger than the path MTU?); \
                 sending one datagram per send from now on"
            );
        }
    }

    /// Points operation `op_index` at the packets of `run`.
    fn fill(&mut self, op_index: u16, region: &Region, run: &[(u16, u16)]) {
        let dest_ptr = self.dest.as_ptr().cast::<libc::c_void>().cast_mut();
        let dest_len = self.dest.len();
        let gso = self.gso && run.len() > 1;
        let op = &mut self.ops[usize::from(op_index)];
        for (i, &(slot, len)) in run.iter().enumerate() {
            let bytes = &region.slot(usize::from(slot))[..usize::from(len)];
            op.iov[i] = libc::iovec {
                iov_base: bytes.as_ptr().cast_mut().cast(),
                iov_len: bytes.len(),
            };
            op.slots[i] = slot;
        }
        op.nslots = run.len();
        op.msg.msg_name = dest_ptr;
        op.msg.msg_namelen = dest_len;
        op.msg.msg_iov = op.iov.as_mut_ptr();
        op.msg.msg_iovlen = run.len();
        op.cmsg.attach(&mut op.msg, gso.then_some(run[0].1));
    }

    /// Sends the operations in `pending` with sendmmsg, in order, and completes them.
    fn flush_mmsg(&mut self, done: Done<'_>) {
        let Engine::Mmsg(mmsgs) = &mut self.engine else {
            return;
        };
        let k = self.pending.len();
        for (entry, &op_index) in mmsgs.iter_mut().zip(&self.pending) {
            entry.msg_hdr = self.ops[usize::from(op_index)].msg;
            entry.msg_len = 0;
        }
        let mut sent = 0;
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
                for &op_index in &self.pending[sent..upto] {
                    Self::complete(&mut self.ops[usize::from(op_index)], Ok(()), done);
                    self.free_ops.push(op_index);
                }
                sent = upto;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first remaining message failed: report it and go on past it.
            let op_index = self.pending[sent];
            let op = &mut self.ops[usize::from(op_index)];
            let nslots = op.nslots;
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            Self::complete(op, Err(e), done);
            self.free_ops.push(op_index);
            sent += 1;
            if self.gso && nslots > 1 && errno == libc::EINVAL {
                self.gso = false;
                tracing::warn!("a GSO send was refused (EINVAL); sending one datagram per send");
            }
        }
        self.pending.clear();
    }

    fn complete(op: &mut Op, result: io::Result<()>, done: Done<'_>) {
        let n = op.nslots;
        op.nslots = 0;
        match result {
            Ok(()) => {
                for &slot in &op.slots[..n] {
                    done(slot, Ok(()));
                }
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                for &slot in &op.slots[..n] {
                    done(slot, Err(io::Error::from_raw_os_error(errno)));
                }
            }
        }
    }

    /// Collects finished io_uring sends, handing their slots to `done`; with `wait`,
    /// blocks until at least one finished if any is in flight. Returns how many
    /// operations finished. A no-op for mmsg.
    pub(crate) fn reap(&mut self, wait: bool, done: Done<'_>) -> io::Result<usize> {
        let Engine::Uring(ring) = &mut self.engine else {
            return Ok(0);
        };
        let want = usize::from(wait && self.ops.len() > self.free_ops.len());
        match ring.submit_and_wait(want) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        let mut n = 0;
        let mut gso_einval = false;
        for cqe in ring.completion() {
            let op_index = cqe.user_data() as usize;
            let Some(op) = self.ops.get_mut(op_index) else {
                continue;
            };
            let flags = cqe.flags();
            let res = if cqueue::notif(flags) {
                // Zero-copy: the kernel let go of the buffers; report the send's result.
                op.zc_result.take().unwrap_or(0)
            } else if cqueue::more(flags) {
                // Zero-copy: sent, but the buffers stay the kernel's until the notification.
                op.zc_result = Some(cqe.result());
                continue;
            } else {
                cqe.result()
            };
            let nslots = op.nslots;
            let result = if res >= 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-res))
            };
            Self::complete(op, result, done);
            if res == -libc::EINVAL && nslots > 1 {
                gso_einval = true;
            }
            self.free_ops.push(op_index as u16);
            n += 1;
        }
        if gso_einval {
            self.gso_refused(libc::EINVAL, 2);
        }
        Ok(n)
    }
}

/// What one [`Sender::send`] call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendCount {
    /// Packets taken.
    pub(crate) packets: usize,
    /// Send operations used.
    pub(crate) ops: usize,
    /// Operations that carried more than one packet (GSO).
    pub(crate) gso_ops: usize,
}

/// Sets up an io_uring with a completion queue of `cq_entries` for bursts.
///
/// `single_issuer`: the ring is only ever used by the thread that creates it (a shard's),
/// so it gets `SINGLE_ISSUER` and `DEFER_TASKRUN` (completion work runs when that thread
/// asks for it, not by interrupting it). A ring that may move between threads with its
/// owner (a publisher's: `Publisher` is `Send`) must not have them — submitting from
/// another task would fail with `EEXIST` — and gets `COOP_TASKRUN` instead. Kernels that
/// know none of these flags get a plain ring.
pub(crate) fn build_ring(
    sq_entries: u32,
    cq_entries: u32,
    single_issuer: bool,
) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    builder.setup_cqsize(cq_entries).setup_taskrun_flag();
    if single_issuer {
        builder.setup_single_issuer().setup_defer_taskrun();
    } else {
        builder.setup_coop_taskrun();
    }
    match builder.build(sq_entries) {
        Ok(ring) => Ok(ring),
        // Older kernels lack the flags (EINVAL): a plain ring still works.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(cq_entries)
            .build(sq_entries),
        Err(e) => Err(e),
    }
}
