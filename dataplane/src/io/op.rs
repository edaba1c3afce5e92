//! What every send backend keeps the same way: the memory of its operations (each owns a
//! `msghdr`, up to 64 iovecs, its control messages (`UDP_SEGMENT`, a transmit stamp
//! request) and a copy of its destination, all of which the kernel may read until the
//! operation completes), the free
//! list, the operations queued for the next flush, whether GSO may still be used, and the
//! eventfd that ends a wait. The table is allocated once; nothing here allocates after.

use std::mem;
use std::os::fd::RawFd;

use socket2::SockAddr;

use super::{SendCmsgs, StampRequest, MAX_GSO_SEGMENTS};

/// One send operation and the memory the kernel reads while it is in flight.
pub(crate) struct SendOp {
    pub(crate) msg: libc::msghdr,
    pub(crate) iov: [libc::iovec; MAX_GSO_SEGMENTS],
    cmsg: SendCmsgs,
    /// The destination, copied in so that it lives as long as the operation.
    dest: SockAddr,
    /// Packets in this operation.
    pub(crate) segments: usize,
    /// Zero-copy sends: the send's result, kept until its notification says the buffers
    /// are free again.
    pub(crate) zc_result: Option<i32>,
}

impl SendOp {
    /// The bytes of segment `i`.
    ///
    /// # Safety
    ///
    /// The operation was filled and has not completed, so its iovecs point at memory the
    /// filler guaranteed valid (see [`OpTable::fill`]), and `i < self.segments`.
    pub(crate) unsafe fn segment(&self, i: usize) -> &[u8] {
        let iov = &self.iov[i.min(MAX_GSO_SEGMENTS - 1)];
        // SAFETY: the caller's contract: the iovec points at `iov_len` readable bytes that
        // stay valid and unwritten until the operation completes.
        unsafe { std::slice::from_raw_parts(iov.iov_base.cast::<u8>(), iov.iov_len) }
    }

    /// Where the operation sends to.
    pub(crate) fn dest(&self) -> &SockAddr {
        &self.dest
    }
}

// SAFETY: the raw pointers in a SendOp point into the SendOp itself (its iovecs, control
// message and destination) and into packet buffers the filler keeps alive until the
// operation completes (see `OpTable::fill`); the SendOp moves with its table.
unsafe impl Send for SendOp {}

/// `max_ops` operations and what goes with them. See the module docs.
pub(crate) struct OpTable {
    ops: Box<[SendOp]>,
    free: Vec<u16>,
    /// Filled operations waiting for the next flush, in order (backends that send at the
    /// flush; capacity reserved up front).
    queued: Vec<u16>,
    gso: bool,
    wake: Option<RawFd>,
}

impl OpTable {
    /// Room for `max_ops` (1 to 65535) operations in flight; runs may leave as GSO sends
    /// while `gso`; `wake` (which must stay open as long as the table) ends a wait.
    pub(crate) fn new(max_ops: usize, gso: bool, wake: Option<RawFd>) -> OpTable {
        let max_ops = max_ops.clamp(1, usize::from(u16::MAX));
        let unspecified = SockAddr::from(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let ops: Box<[SendOp]> = (0..max_ops)
            .map(|_| SendOp {
                // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
                msg: unsafe { mem::zeroed() },
                iov: [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; MAX_GSO_SEGMENTS],
                cmsg: SendCmsgs::zeroed(),
                dest: unspecified.clone(),
                segments: 0,
                zc_result: None,
            })
            .collect();
        OpTable {
            free: (0..max_ops as u16).rev().collect(),
            queued: Vec::with_capacity(max_ops),
            ops,
            gso,
            wake,
        }
    }

    /// Whether runs may still leave as one GSO send.
    pub(crate) fn gso(&self) -> bool {
        self.gso
    }

    /// The eventfd that ends a wait, if the owner sleeps in the backend.
    pub(crate) fn wake(&self) -> Option<RawFd> {
        self.wake
    }

    /// Queues filled operation `op` for the next flush.
    pub(crate) fn queue(&mut self, op: u16) {
        self.queued.push(op);
    }

    /// The operations queued for the next flush, taken out (the caller gives the list
    /// back with [`restore_queue`](Self::restore_queue) once done, keeping its capacity).
    pub(crate) fn take_queue(&mut self) -> Vec<u16> {
        mem::take(&mut self.queued)
    }

    /// Gives back the list [`take_queue`](Self::take_queue) gave, with its operations
    /// from `from` on still queued (they go at the next flush); allocates nothing.
    pub(crate) fn requeue_from(&mut self, mut queue: Vec<u16>, from: usize) {
        queue.drain(..from.min(queue.len()));
        self.queued = queue;
    }

    /// Whether operations wait for the next flush.
    pub(crate) fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Hands the (emptied) list [`take_queue`](Self::take_queue) gave back.
    pub(crate) fn restore_queue(&mut self, mut queue: Vec<u16>) {
        queue.clear();
        self.queued = queue;
    }

    /// The number of operations.
    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }

    /// Operations taken and not yet given back.
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len() - self.free.len()
    }

    /// A free operation, if any.
    pub(crate) fn take(&mut self) -> Option<u16> {
        self.free.pop()
    }

    /// Puts operation `op` back on the free list (its send finished, or never started).
    pub(crate) fn give_back(&mut self, op: u16) {
        if let Some(o) = self.ops.get_mut(usize::from(op)) {
            o.segments = 0;
            o.zc_result = None;
            self.free.push(op);
        }
    }

    /// The operation `op`, if it exists.
    pub(crate) fn get(&self, op: u16) -> Option<&SendOp> {
        self.ops.get(usize::from(op))
    }

    /// The operation `op`, if it exists.
    pub(crate) fn get_mut(&mut self, op: u16) -> Option<&mut SendOp> {
        self.ops.get_mut(usize::from(op))
    }

    /// Points operation `op` at `dest` and the packets `segment(0..n)`, as one GSO send of
    /// `segment(0)`'s length when `n > 1`. `n` is clamped to 1..=64. With `stamp`, the
    /// send asks for a software transmit stamp under its key.
    ///
    /// # Safety
    ///
    /// Each `segment(i)` must be readable memory of its length that stays valid and
    /// unwritten until the operation has completed and been given back.
    pub(crate) unsafe fn fill(
        &mut self,
        op: u16,
        dest: &SockAddr,
        n: usize,
        stamp: Option<StampRequest>,
        segment: impl Fn(usize) -> (*const u8, usize),
    ) {
        let n = n.clamp(1, MAX_GSO_SEGMENTS);
        let Some(op) = self.ops.get_mut(usize::from(op)) else {
            return;
        };
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
        op.zc_result = None;
        op.dest = dest.clone();
        op.msg.msg_name = op.dest.as_ptr().cast_mut().cast();
        op.msg.msg_namelen = op.dest.len();
        op.msg.msg_iov = op.iov.as_mut_ptr();
        op.msg.msg_iovlen = n;
        op.cmsg.attach(
            &mut op.msg,
            (n > 1).then(|| u16::try_from(first_len).unwrap_or(u16::MAX)),
            stamp,
        );
    }
}

/// Whether a send that failed with `errno` and carried `segments` packets is the kernel
/// refusing GSO (segments larger than the path MTU: `EINVAL`); sent one by one, the same
/// packets would be fragmented instead.
pub(crate) fn gso_refused(errno: i32, segments: usize) -> bool {
    segments > 1 && errno == libc::EINVAL
}

impl OpTable {
    /// Turns GSO off after the kernel refused a GSO send (see [`gso_refused`]), saying so
    /// once.
    pub(crate) fn stop_gso(&mut self) {
        if self.gso {
            self.gso = false;
            tracing::warn!(
                "a GSO send was refused (EINVAL: segments larger than the path MTU?); \
                 sending one datagram per send from now on"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_full_socket_left_stays_queued_in_order_and_in_flight() {
        let mut ops = OpTable::new(8, true, None);
        let taken: Vec<u16> = (0..5).filter_map(|_| ops.take()).collect();
        for &op in &taken {
            ops.queue(op);
        }
        let queue = ops.take_queue();
        assert!(!ops.has_queued());
        // The kernel took the first two; the other three go at the next flush.
        ops.requeue_from(queue, 2);
        assert!(ops.has_queued());
        assert_eq!(ops.take_queue(), taken[2..]);
        assert_eq!(ops.in_flight(), 5, "none was given back");
    }
}
