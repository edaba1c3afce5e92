//! Receiving on io_uring: one multishot `RECVMSG` per socket, drawing from a provided
//! buffer ring shared by all sockets of the ring. Each completion names a buffer the
//! kernel filled (header, source address, control messages, payload); the sink reads the
//! payload in place and the buffer goes back to the ring afterwards. A multishot receive
//! ends when the ring runs out of buffers (`ENOBUFS`) or for other reasons; it is re-armed
//! and reported ([`Event::Rearm`]).
//!
//! Every length the kernel reports is checked against the buffer it names before the
//! buffer is read: a completion that does not fit is reported as [`Event::Malformed`].

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::types::{Fixed, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, IoUring};

use super::buf_ring::BufRing;
use super::{benign, build_ring, IGNORED, RECV_HEADER_LEN, RECV_NAME_LEN, SHARD_RING, WAKE};
use crate::io::pollset::first_free;
use crate::io::{
    drain_eventfd, parse_cmsgs, parse_sockaddr, wrong_endpoint, BatchRecv, Endpoint, Event,
    RECV_CONTROL_LEN,
};

fn user_data(slot: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(slot)
}

#[derive(Debug, Clone, Copy)]
struct Socket {
    generation: u32,
    /// A multishot receive is armed (its last completion had MORE).
    armed: bool,
}

/// Multishot receive for a set of sockets on one ring. See the module docs.
pub(crate) struct UringRecv {
    ring: IoUring,
    state: State,
}

/// Everything but the ring, so that completions can be handled while the ring's
/// completion queue is borrowed.
struct State {
    bufs: BufRing,
    /// The msghdr template every multishot RECVMSG uses (name and control lengths).
    msg: Box<libc::msghdr>,
    sockets: Vec<Option<Socket>>,
    /// Slots whose receive must be re-armed (capacity reserved up front).
    rearm: Vec<u32>,
    next_generation: u32,
    /// Multishot requests whose final completion has not arrived yet.
    outstanding: usize,
    /// The eventfd that wakes a waiting [`poll`](BatchRecv::poll), if one is watched.
    wake: Option<RawFd>,
}

// SAFETY: the msghdr's pointers are null (it only carries lengths); the ring and the
// buffer memory are owned here and used from one thread at a time.
unsafe impl Send for UringRecv {}

impl UringRecv {
    /// A receiver for up to `max_sockets` sockets with `buffers` receive buffers of
    /// `payload` bytes each (plus room for headers).
    pub(crate) fn new(max_sockets: u32, buffers: u16, payload: usize) -> io::Result<UringRecv> {
        let cq = u32::from(buffers).saturating_mul(4).max(SHARD_RING.cq);
        let ring = build_ring(SHARD_RING.sq, cq, true)?;
        ring.submitter().register_files_sparse(max_sockets)?;
        // struct io_uring_recvmsg_out: namelen, controllen, payloadlen, flags (4 x u32).
        let size = RECV_HEADER_LEN + RECV_NAME_LEN + RECV_CONTROL_LEN + payload;
        let bufs = BufRing::new(&ring, buffers, size, 0)?;
        // SAFETY: msghdr is a plain C struct; all-zero is valid.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
        msg.msg_namelen = RECV_NAME_LEN as libc::socklen_t;
        msg.msg_controllen = RECV_CONTROL_LEN;
        Ok(UringRecv {
            ring,
            state: State {
                bufs,
                msg,
                sockets: vec![None; max_sockets as usize],
                rearm: Vec::with_capacity(max_sockets as usize),
                next_generation: 1,
                outstanding: 0,
                wake: None,
            },
        })
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let Some(fd) = self.state.wake else {
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

    fn arm(&mut self, slot: u32) -> io::Result<()> {
        let st = &mut self.state;
        let Some(sock) = st.sockets.get_mut(slot as usize).and_then(Option::as_mut) else {
            return Ok(());
        };
        let sqe = opcode::RecvMsgMulti::new(Fixed(slot), &raw const *st.msg, st.bufs.bgid())
            .build()
            .user_data(user_data(slot, sock.generation));
        sock.armed = true;
        st.outstanding += 1;
        // SAFETY: the msghdr template lives in a Box owned by self for the ring's life;
        // the buffers come from the registered buffer ring.
        while unsafe { self.ring.submission().push(&sqe) }.is_err() {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Re-arms the receives that ended; a slot whose re-arm fails stays queued and is
    /// retried on the next poll.
    fn rearm(&mut self) -> io::Result<()> {
        let mut pending = mem::take(&mut self.state.rearm);
        let mut result = Ok(());
        let mut done = 0;
        for &slot in &pending {
            if let Err(e) = self.arm(slot) {
                result = Err(e);
                break;
            }
            done += 1;
        }
        pending.drain(..done);
        pending.append(&mut self.state.rearm);
        self.state.rearm = pending;
        result
    }
}

impl State {
    /// Hands one receive completion to `sink`; returns whether its buffer went back.
    fn complete(&mut self, cqe: &cqueue::Entry, sink: &mut impl FnMut(Event<'_>)) -> bool {
        let ud = cqe.user_data();
        let flags = cqe.flags();
        let buffer = cqueue::buffer_select(flags);
        let slot = (ud & 0xffff_ffff) as u32;
        let generation = (ud >> 32) as u32;
        let current = ud != IGNORED
            && self
                .sockets
                .get(slot as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.generation == generation);
        if current {
            let res = cqe.result();
            if res >= 0 {
                if let Some(bid) = buffer {
                    // The kernel's length is checked against the buffer it names.
                    let filled = self
                        .bufs
                        .buffer(bid)
                        .and_then(|b| b.get(..usize::try_from(res).ok()?));
                    match filled.map(|data| RecvMsgOut::parse(data, &self.msg)) {
                        Some(Ok(out)) => {
                            // The control area's length was checked by the parse
                            // against the buffer; MSG_CTRUNC is counted.
                            let mut meta = parse_cmsgs(out.control_data());
                            meta.source = parse_sockaddr(out.name_data());
                            meta.control_truncated = out.is_control_data_truncated();
                            sink(Event::Datagram {
                                slot,
                                payload: out.payload_data(),
                                truncated: out.is_payload_truncated()
                                    || out.is_control_data_truncated(),
                                meta,
                            })
                        }
                        _ => sink(Event::Malformed { slot }),
                    }
                }
            } else if res != -libc::ENOBUFS && res != -libc::ECANCELED {
                sink(Event::Error { slot, errno: -res });
            }
            if !cqueue::more(flags) {
                if let Some(Some(s)) = self.sockets.get_mut(slot as usize) {
                    s.armed = false;
                }
                self.rearm.push(slot);
                sink(Event::Rearm { slot });
            }
        }
        if ud != IGNORED && !cqueue::more(flags) {
            self.outstanding = self.outstanding.saturating_sub(1);
        }
        match buffer {
            Some(bid) => {
                self.bufs.push(bid);
                true
            }
            None => false,
        }
    }
}

impl BatchRecv for UringRecv {
    fn add(&mut self, endpoint: Endpoint<'_>) -> io::Result<u32> {
        let Endpoint::Fd { fd, .. } = endpoint else {
            return Err(wrong_endpoint("io_uring"));
        };
        let slot = first_free(&self.state.sockets)? as u32;
        self.ring.submitter().register_files_update(slot, &[fd])?;
        let generation = self.state.next_generation;
        self.state.next_generation = generation.wrapping_add(1).max(1);
        self.state.sockets[slot as usize] = Some(Socket {
            generation,
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

    fn remove(&mut self, slot: u32) -> io::Result<()> {
        let Some(sock) = self
            .state
            .sockets
            .get_mut(slot as usize)
            .and_then(Option::take)
        else {
            return Ok(());
        };
        if sock.armed {
            let cancel = opcode::AsyncCancel::new(user_data(slot, sock.generation))
                .build()
                .user_data(IGNORED);
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

    fn watch_wake(&mut self, fd: RawFd) -> io::Result<()> {
        self.state.wake = Some(fd);
        self.arm_wake()?;
        self.ring.submit().map(drop)
    }

    fn poll(
        &mut self,
        wait: Option<Duration>,
        sink: &mut impl FnMut(Event<'_>),
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
            Err(e) if benign(&e) => {}
            Err(e) => return Err(e),
        }
        let mut n = 0;
        let mut returned = false;
        let mut rearm_wake = false;
        let state = &mut self.state;
        for cqe in self.ring.completion() {
            if cqe.user_data() == WAKE {
                if let Some(fd) = state.wake {
                    drain_eventfd(fd);
                }
                rearm_wake |= !cqueue::more(cqe.flags());
                continue;
            }
            n += 1;
            returned |= state.complete(&cqe, sink);
        }
        if returned {
            state.bufs.publish();
        }
        if rearm_wake {
            self.arm_wake()?;
        }
        self.rearm().map(|()| n)
    }
}

impl Drop for UringRecv {
    fn drop(&mut self) {
        // The kernel must be done with every buffer before the memory is unmapped: cancel
        // every receive and wait (boundedly) for their final completions.
        for slot in 0..self.state.sockets.len() as u32 {
            let _ = self.remove(slot);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while self.state.outstanding > 0 && std::time::Instant::now() < deadline {
            if self
                .poll(Some(Duration::from_millis(10)), &mut |_| {})
                .is_err()
            {
                break;
            }
        }
        if self.state.outstanding > 0 {
            tracing::warn!(
                outstanding = self.state.outstanding,
                "receives still armed at teardown"
            );
        }
        self.state.bufs.unregister(&self.ring);
    }
}
