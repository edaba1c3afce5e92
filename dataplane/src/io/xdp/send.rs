//! Sending through an AF_XDP socket's TX ring: each packet of the queued operations is
//! copied into a free TX frame behind Ethernet, IP and UDP headers (a
//! [`FrameTemplate`] made once per destination), the batch goes to the kernel with one
//! kick at the flush, and completions give the frames back. Operations complete at the
//! flush, as with `sendmmsg`: their packet buffers are free once copied.
//!
//! Only multicast destinations: a group's MAC follows from its address, while a unicast
//! destination's would need the neighbour table (an operation to one fails with
//! `EDESTADDRREQ`, counted as the publisher counts any failed send).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::socket::XdpSocket;
use super::Iface;
use crate::io::op::OpTable;
use crate::io::{sleep_on, BatchSend, Completion, Done, Sending};
use crate::stats::Counter;
use crate::wire::frame::FrameTemplate;

/// How long a flush waits for a free TX frame before it gives a packet up, and how long
/// the close waits for the kernel to send what is still on the ring.
const FULL_TIMEOUT: Duration = Duration::from_secs(1);

/// The counters of one publisher's AF_XDP sender, read from other threads.
#[derive(Debug, Default)]
pub(crate) struct XdpSendCounters {
    pub(crate) frames: Counter,
    pub(crate) completed: Counter,
    pub(crate) waits: Counter,
    pub(crate) dropped: Counter,
    pub(crate) kick_errors: Counter,
    pub(crate) kernel_tx_invalid: Counter,
}

/// The AF_XDP sender of one socket. See the module docs.
pub(crate) struct XdpSend {
    socket: XdpSocket,
    src_mac: [u8; 6],
    /// The interface, for the frames' source address (chosen per group).
    iface: Iface,
    /// The frames' source port.
    port: u16,
    hop_limit: u8,
    /// The headers of the last destination.
    template: Option<FrameTemplate>,
    counters: Arc<XdpSendCounters>,
    frames: u64,
    completed: u64,
    waits: u64,
    dropped: u64,
    kick_errors: u64,
    flushes: u32,
}

impl XdpSend {
    /// Sending through `socket`, bound on `iface`, from port `port` with IP TTL / hop
    /// limit `hop_limit`, with `ops`' operations.
    ///
    /// # Errors
    ///
    /// The interface has no MAC address (AF_XDP needs an Ethernet-like link).
    pub(crate) fn new(
        socket: XdpSocket,
        iface: &Iface,
        port: u16,
        hop_limit: u8,
        counters: Arc<XdpSendCounters>,
        ops: OpTable,
    ) -> io::Result<Sending<XdpSend>> {
        let Some(src_mac) = iface.mac else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{} has no Ethernet address: the XDP backend sends Ethernet frames",
                    iface.name
                ),
            ));
        };
        let backend = XdpSend {
            socket,
            src_mac,
            iface: iface.clone(),
            port,
            hop_limit,
            template: None,
            counters,
            frames: 0,
            completed: 0,
            waits: 0,
            dropped: 0,
            kick_errors: 0,
            flushes: 0,
        };
        Ok(Sending::new(ops, backend))
    }

    /// The headers to `dest`, made when the destination changed.
    fn template(&mut self, dest: SocketAddr) -> Result<FrameTemplate, i32> {
        if let Some(t) = self.template.filter(|t| t.dst() == dest) {
            return Ok(t);
        }
        let src = self
            .iface
            .source_for(dest.ip())
            .map(|ip| SocketAddr::new(ip, self.port))
            .ok_or(libc::EADDRNOTAVAIL)?;
        let t = FrameTemplate::new(self.src_mac, src, dest, self.hop_limit, 0)
            .map_err(|_| libc::EDESTADDRREQ)?;
        self.template = Some(t);
        Ok(t)
    }

    /// Takes back the frames the kernel is done with.
    fn reclaim(&mut self) {
        self.completed += self.socket.reclaim() as u64;
    }

    /// Puts `payload` in a free TX frame behind `template`'s headers; waits (kicking the
    /// kernel) for a frame while none is free, up to [`FULL_TIMEOUT`]. Returns the errno
    /// of a packet that could not go.
    fn put(&mut self, template: &FrameTemplate, payload: &[u8]) -> Result<(), i32> {
        let mut since: Option<Instant> = None;
        loop {
            if let Some((addr, frame)) = self.socket.tx_frame() {
                let len = template
                    .write_with_payload(frame, payload)
                    .map_err(|_| libc::EMSGSIZE);
                let pushed =
                    len.and_then(|len| self.socket.tx_push(addr, len).map_err(|_| libc::ENOBUFS));
                if pushed.is_err() {
                    self.socket.tx_discard(addr);
                } else {
                    self.frames += 1;
                }
                return pushed;
            }
            // No free frame: hand the kernel what is queued and take back what it sent.
            self.waits += 1;
            self.kick();
            self.reclaim();
            if self.socket.tx_free() > 0 {
                continue;
            }
            let at = *since.get_or_insert_with(Instant::now);
            if at.elapsed() >= FULL_TIMEOUT {
                self.dropped += 1;
                return Err(libc::ENOBUFS);
            }
            // Copy mode sends inside the kick; a zero-copy driver sends on its own and
            // completes soon.
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn publish(&self) {
        let c = &self.counters;
        c.frames.set(self.frames);
        c.completed.set(self.completed);
        c.waits.set(self.waits);
        c.dropped.set(self.dropped);
        c.kick_errors.set(self.kick_errors);
    }

    /// Kicks the kernel to send what is on the TX ring (every packet there was reported
    /// sent already: a failed kick is counted and logged, and the next flush, reap or
    /// wait kicks again). Returns the frames the kernel has not taken yet.
    fn kick(&mut self) -> u32 {
        match self.socket.tx_flush() {
            Ok(left) => left,
            Err(e) => {
                if self.kick_errors == 0 {
                    tracing::warn!(error = %e, "AF_XDP send kick failed; retrying at the next flush");
                }
                self.kick_errors += 1;
                u32::MAX
            }
        }
    }

    /// Whether frames are still out (on the ring, or sent and not yet completed).
    fn frames_out(&self) -> bool {
        self.frames > self.completed
    }
}

impl BatchSend for XdpSend {
    fn flush(&mut self, ops: &mut OpTable, done: &mut impl Done) -> io::Result<()> {
        self.reclaim();
        let pending = ops.take_queue();
        for &op in &pending {
            let Some(o) = ops.get(op) else { continue };
            let packets = o.segments;
            let mut result = 0i32;
            match o.dest().as_socket().map(|d| self.template(d)) {
                Some(Ok(template)) => {
                    for i in 0..packets {
                        // SAFETY: the operation was filled and has not completed (it
                        // completes below), and `i < segments`.
                        let payload = unsafe { o.segment(i) };
                        match self.put(&template, payload) {
                            Ok(()) => {
                                result =
                                    result.saturating_add(i32::try_from(payload.len()).unwrap_or(0))
                            }
                            Err(errno) => {
                                result = -errno;
                                break;
                            }
                        }
                    }
                }
                Some(Err(errno)) => result = -errno,
                None => result = -libc::EAFNOSUPPORT,
            }
            done(Completion {
                op,
                packets,
                result,
            });
            ops.give_back(op);
        }
        ops.restore_queue(pending);
        self.kick();
        self.reclaim();
        self.flushes = self.flushes.wrapping_add(1);
        if self.flushes % 1024 == 0 {
            if let Ok(st) = self.socket.statistics() {
                self.counters.kernel_tx_invalid.set(st.tx_invalid_descs);
            }
        }
        self.publish();
        Ok(())
    }

    fn reap(
        &mut self,
        _ops: &mut OpTable,
        _wait: bool,
        _done: &mut impl Done,
    ) -> io::Result<usize> {
        // Operations complete at the flush; only frames may still be out, on the ring
        // (a kick the kernel answered "later") or sent and not yet completed.
        if self.frames_out() {
            self.kick();
        }
        self.reclaim();
        self.publish();
        Ok(0)
    }

    fn wait(&mut self, ops: &mut OpTable, timeout: Duration, _done: &mut impl Done) -> usize {
        sleep_on(ops.wake(), timeout);
        if self.frames_out() {
            self.kick();
        }
        self.reclaim();
        0
    }
}

impl Drop for XdpSend {
    /// Gives the kernel up to [`FULL_TIMEOUT`] to send what is still on the ring (the end
    /// of session among it), so that closing loses nothing that was reported sent.
    fn drop(&mut self) {
        let start = Instant::now();
        self.reclaim();
        while self.frames_out() && start.elapsed() < FULL_TIMEOUT {
            self.kick();
            std::thread::sleep(Duration::from_micros(50));
            self.reclaim();
        }
        if self.frames_out() {
            tracing::warn!(
                left = self.frames - self.completed,
                "closing an AF_XDP sender with frames the kernel did not send"
            );
        }
        self.publish();
    }
}
