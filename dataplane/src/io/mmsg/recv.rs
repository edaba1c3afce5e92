//! Receiving with `recvmmsg`: non-blocking batches over every socket of a shard, `poll(2)`
//! to block. Same events as the io_uring backend; lengths the kernel reports are clamped
//! to the buffers they describe.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::io::pollset::PollSet;
use crate::io::region::Region;
use crate::io::{
    parse_cmsgs, parse_sockaddr, wrong_endpoint, BatchRecv, Endpoint, Event, RECV_CONTROL_LEN,
};

/// Control-message buffer of one receive, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; RECV_CONTROL_LEN]);

/// recvmmsg-based receiver for a set of sockets.
pub(crate) struct MmsgRecv {
    sockets: PollSet<RawFd>,
    /// How many slots hold a socket.
    reading: usize,
    bufs: Region,
    msgs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_in6]>,
    controls: Box<[Control]>,
    /// How many leading mmsghdrs the kernel may have written since they were last made
    /// ready; only those are re-armed before the next receive.
    used: usize,
}

// SAFETY: the raw pointers in `msgs`/`iovs` point into memory owned by this struct.
unsafe impl Send for MmsgRecv {}

impl MmsgRecv {
    /// Room for `max_sockets` sockets and batches of `batch` datagrams of up to
    /// `payload` bytes.
    pub(crate) fn new(max_sockets: u32, batch: u16, payload: usize) -> io::Result<MmsgRecv> {
        let batch = usize::from(batch.max(1));
        let bufs = Region::new(batch, payload.max(1))?;
        // SAFETY: plain C structs; all-zero is valid for each.
        let msgs = (0..batch)
            .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
            .collect();
        let iovs = (0..batch)
            .map(|_| libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            })
            .collect();
        // SAFETY: as above.
        let names = (0..batch)
            .map(|_| unsafe { mem::zeroed::<libc::sockaddr_in6>() })
            .collect();
        let controls = (0..batch).map(|_| Control([0; RECV_CONTROL_LEN])).collect();
        let mut recv = MmsgRecv {
            sockets: PollSet::new(max_sockets),
            reading: 0,
            bufs,
            msgs,
            iovs,
            names,
            controls,
            used: 0,
        };
        recv.point_all();
        Ok(recv)
    }

    /// Points every mmsghdr at its buffer, name and control space, once: the boxed slices
    /// do not move when the receiver does, and the kernel never writes the pointers.
    fn point_all(&mut self) {
        let size = self.bufs.slot_size();
        for i in 0..self.msgs.len() {
            let buf = self.bufs.slot_mut(i).as_mut_ptr();
            self.iovs[i] = libc::iovec {
                iov_base: buf.cast(),
                iov_len: size,
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&raw mut self.names[i]).cast();
            hdr.msg_iov = &raw mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = (&raw mut self.controls[i]).cast();
        }
        self.used = self.msgs.len();
        self.rearm();
    }

    /// Restores the lengths and flags the kernel overwrote in the mmsghdrs of the last
    /// receive (only those it filled: a batch that brought one datagram costs one).
    fn rearm(&mut self) {
        for m in self.msgs.iter_mut().take(self.used) {
            m.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            m.msg_hdr.msg_controllen = RECV_CONTROL_LEN;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        self.used = 0;
    }

    /// Makes `fd` becoming readable end a [`wait`](Self::wait) (the AF_XDP socket); it
    /// takes no slot and is never read here.
    pub(crate) fn watch_extra(&mut self, fd: RawFd) {
        self.sockets.watch_extra(fd);
    }

    /// Whether any slot holds a socket (else [`poll`](BatchRecv::poll) makes no system
    /// call).
    pub(crate) fn reads_any(&self) -> bool {
        self.reading > 0
    }

    /// Waits at most `timeout` for a watched descriptor or the wake-up to become
    /// readable; returns whether one did.
    ///
    /// # Errors
    ///
    /// `ppoll(2)` failed.
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        self.sockets.wait(timeout, false)
    }
}

impl BatchRecv for MmsgRecv {
    fn add(&mut self, endpoint: Endpoint<'_>) -> io::Result<u32> {
        let Endpoint::Fd { fd, .. } = endpoint else {
            return Err(wrong_endpoint("mmsg"));
        };
        let slot = self.sockets.add(fd, fd)?;
        self.reading += 1;
        Ok(slot)
    }

    fn remove(&mut self, slot: u32) -> io::Result<()> {
        if self.sockets.get(slot as usize).is_some() {
            self.reading -= 1;
        }
        self.sockets.remove(slot);
        Ok(())
    }

    fn watch_wake(&mut self, fd: RawFd) -> io::Result<()> {
        self.sockets.watch_wake(fd);
        Ok(())
    }

    fn poll(
        &mut self,
        wait: Option<Duration>,
        sink: &mut impl FnMut(Event<'_>),
    ) -> io::Result<usize> {
        if let Some(d) = wait {
            if !self.sockets.wait(d, false)? {
                return Ok(0);
            }
        }
        let mut total = 0;
        for slot in 0..self.sockets.len() {
            let Some(&fd) = self.sockets.get(slot) else {
                continue;
            };
            loop {
                self.rearm();
                // SAFETY: every mmsghdr points at buffers owned by self (set by
                // `point_all`), valid for the call.
                let rc = unsafe {
                    libc::recvmmsg(
                        fd,
                        self.msgs.as_mut_ptr(),
                        self.msgs.len() as libc::c_uint,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                // What the kernel may have written: the headers it filled and the one after
                // (a receive that failed there, reported now or on the next call, need not
                // have left it intact). They are re-armed before the next call.
                let n = usize::try_from(rc).unwrap_or(0).min(self.msgs.len());
                self.used = (n + 1).min(self.msgs.len());
                if rc < 0 {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) | Some(libc::EINTR) | None => break,
                        Some(errno) => {
                            sink(Event::Error {
                                slot: slot as u32,
                                errno,
                            });
                            break;
                        }
                    }
                }
                for i in 0..n {
                    let hdr = &self.msgs[i].msg_hdr;
                    let len = (self.msgs[i].msg_len as usize).min(self.bufs.slot_size());
                    let controllen = hdr.msg_controllen.min(RECV_CONTROL_LEN);
                    let truncated = hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
                    let namelen =
                        (hdr.msg_namelen as usize).min(mem::size_of::<libc::sockaddr_in6>());
                    // SAFETY: reads the bytes of a sockaddr_in6 owned by self.
                    let name = unsafe {
                        std::slice::from_raw_parts((&raw const self.names[i]).cast::<u8>(), namelen)
                    };
                    let mut meta = parse_cmsgs(&self.controls[i].0[..controllen]);
                    meta.source = parse_sockaddr(name);
                    meta.control_truncated = hdr.msg_flags & libc::MSG_CTRUNC != 0;
                    sink(Event::Datagram {
                        slot: slot as u32,
                        payload: &self.bufs.slot(i)[..len],
                        truncated,
                        meta,
                    });
                }
                total += n;
                if n < self.msgs.len() {
                    break;
                }
            }
        }
        Ok(total)
    }
}
