//! The transport seam and the backends behind it.
//!
//! Everything that touches a socket lives here; nothing here decides anything about
//! sequences, sessions or leaves (that is [`crate::core`]). The seam is a pair of traits:
//!
//! - `BatchSend`: batches of send operations, each one datagram or one UDP GSO run of
//!   up to 64 packets to one destination, handed to the kernel together and completed
//!   one by one (`Completion`);
//! - `BatchRecv`: receiving from a set of sockets, each datagram (or GRO batch of
//!   datagrams) handed to a sink in place as an `Event`.
//!
//! Every backend implements both, in a folder or file of its own:
//!
//! | backend | send | receive |
//! |---|---|---|
//! | io_uring (`uring`) | `SENDMSG`/`SENDMSG_ZC` on a registered file | multishot `RECVMSG` from a provided buffer ring (`uring::buf_ring`) |
//! | mmsg (`mmsg`), the fallback | `sendmmsg` | `recvmmsg` after `poll(2)` |
//! | AF_XDP ([`xdp`]), by choice only | raw frames on the TX ring of an AF_XDP socket | raw frames from its RX ring, steered there by an XDP program; the subscriptions' own sockets with `recvmmsg` beside it |
//! | sim ([`sim`]), for tests | into a simulated network that loses, duplicates, reorders, delays and corrupts on purpose | from it |
//!
//! Shards, publishers and fan-out shards are generic over the traits and are
//! instantiated once per backend (static dispatch on the hot path); which backend runs is
//! decided once, by `choose` (or by the socket: a [`DataSocket::Sim`] runs on `sim`).
//! What the backends share sits beside them: the send operations' memory (`op`),
//! page-aligned buffer regions (`region`), GSO run grouping, control-message parsing
//! and the socket options the data plane needs (`sockopt`). Beside the data path,
//! `datagram` is the plain unicast socket of request/reply traffic (the re-request
//! server's): batched non-blocking receives with each source, one `sendto` per reply.

pub(crate) mod datagram;
pub(crate) mod mmsg;
pub(crate) mod op;
pub(crate) mod pollset;
pub(crate) mod region;
pub mod sim;
pub(crate) mod sockopt;
pub mod stamps;
pub(crate) mod uring;
pub mod xdp;

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use multipoint_control::{Membership, MultipointSocket};

use self::op::OpTable;
use crate::config::{BackendChoice, BackendInfo, BackendKind};
use crate::error::{Error, Result};

/// A socket the data plane sends or receives on: a kernel socket (made and configured by
/// the control layer, or by the caller), or a socket of a simulated network
/// ([`sim::SimNet`]).
#[derive(Debug)]
pub enum DataSocket {
    /// A UDP socket of this host.
    Host(socket2::Socket),
    /// A socket of a simulated network.
    Sim(sim::SimSocket),
}

impl From<socket2::Socket> for DataSocket {
    fn from(socket: socket2::Socket) -> DataSocket {
        DataSocket::Host(socket)
    }
}

impl From<sim::SimSocket> for DataSocket {
    fn from(socket: sim::SimSocket) -> DataSocket {
        DataSocket::Sim(socket)
    }
}

/// A socket a publisher or a subscription owns and sends or receives on.
pub(crate) enum OwnedSocket {
    /// Made and joined through the control crate. The membership is declared first so
    /// that it drops (leaving the group) while its socket is still open.
    Joined {
        _membership: Membership,
        socket: MultipointSocket,
    },
    /// The caller's kernel socket.
    Given(socket2::Socket),
    /// A socket of a simulated network.
    Sim(sim::SimSocket),
}

impl OwnedSocket {
    /// The kernel socket, if it is one.
    pub(crate) fn host(&self) -> Option<&socket2::Socket> {
        match self {
            OwnedSocket::Joined { socket, .. } => Some(socket.socket()),
            OwnedSocket::Given(socket) => Some(socket),
            OwnedSocket::Sim(_) => None,
        }
    }

    /// What a receive backend watches.
    pub(crate) fn endpoint(&self) -> Endpoint<'_> {
        match self {
            OwnedSocket::Sim(socket) => Endpoint::Sim(socket),
            OwnedSocket::Joined {
                _membership: membership,
                socket,
            } => Endpoint::Fd {
                fd: socket.socket().as_raw_fd(),
                group: Some(membership.group()),
                source: membership.source(),
            },
            OwnedSocket::Given(socket) => Endpoint::Fd {
                fd: socket.as_raw_fd(),
                group: None,
                source: None,
            },
        }
    }

    /// The address it is bound at (`None` if the kernel cannot say).
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            OwnedSocket::Sim(socket) => Some(socket.local_addr()),
            _ => self.host()?.local_addr().ok()?.as_socket(),
        }
    }
}

/// What a receive backend is asked to watch: a kernel socket's descriptor or a simulated
/// socket.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint<'a> {
    /// A kernel socket (which must stay open until it is removed).
    Fd {
        /// Its descriptor.
        fd: RawFd,
        /// The group (address and port) it joined, when it joined one through the
        /// control crate: what the AF_XDP backend steers to its socket instead.
        group: Option<SocketAddr>,
        /// The source of a source-specific join (the AF_XDP backend filters by it, as
        /// the kernel does for the socket).
        source: Option<IpAddr>,
    },
    /// A socket of a simulated network.
    Sim(&'a sim::SimSocket),
}

/// The error a backend gives for an endpoint of the other kind.
pub(crate) fn wrong_endpoint(backend: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("the {backend} backend cannot take this kind of socket"),
    )
}

/// How one send operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completion {
    /// The operation (as [`BatchSend::take_op`] gave it out).
    pub(crate) op: u16,
    /// Packets it carried.
    pub(crate) packets: usize,
    /// Bytes sent, or a negated errno.
    pub(crate) result: i32,
}

/// Where a send backend reports finished operations: any `FnMut(Completion)`.
pub(crate) trait Done: FnMut(Completion) {}

impl<F: FnMut(Completion)> Done for F {}

/// What a send backend does with the kernel (or the simulated network): queue filled
/// operations, hand them over, collect their completions, and sleep. Everything else
/// about sending — the operations' memory, the free list, the GSO switch, the wake-up — is
/// the same for every backend ([`OpTable`]), and [`Sending`] puts the two together.
///
/// # Contract
///
/// - Every queued operation completes exactly once through a `done` callback: from
///   [`flush`](Self::flush) itself for backends that send synchronously (mmsg, sim), from
///   a later [`reap`](Self::reap) or [`wait`](Self::wait) otherwise (io_uring). The
///   backend gives the operation back to the table when it reports it.
/// - Operations queued with `linked` start only after the one queued before them
///   finished (io_uring `IO_LINK`; the synchronous backends send in queue order anyway),
///   so that packets to one destination leave in order. Unlinked operations to one
///   destination may complete out of order.
/// - A GSO send the kernel refuses (`EINVAL`: segments larger than the path MTU) turns
///   GSO off for the rest of the table's life ([`OpTable::stop_gso`]).
/// - Nothing here allocates after construction.
pub(crate) trait BatchSend: Send {
    /// Queues filled operation `op`, after the one queued before it when `linked`. The
    /// synchronous backends keep it for the next flush.
    ///
    /// # Errors
    ///
    /// The operation could not be queued (io_uring: the submission queue was full and
    /// submitting it failed); it is free again and nothing of it reached the kernel.
    fn queue(&mut self, ops: &mut OpTable, op: u16, linked: bool) -> io::Result<()> {
        let _ = linked;
        ops.queue(op);
        Ok(())
    }

    /// Hands everything queued to the kernel.
    ///
    /// # Errors
    ///
    /// Submitting failed (io_uring); the operations stay queued and the next `flush`,
    /// `reap` or `wait` submits them again.
    fn flush(&mut self, ops: &mut OpTable, done: &mut impl Done) -> io::Result<()>;

    /// Collects finished operations, handing each to `done`; with `wait`, blocks until at
    /// least one finished if any is in flight. Returns how many finished. (Nothing is
    /// ever in flight with the synchronous backends.)
    ///
    /// # Errors
    ///
    /// Entering the kernel failed.
    fn reap(&mut self, ops: &mut OpTable, wait: bool, done: &mut impl Done) -> io::Result<usize> {
        let _ = (ops, wait, done);
        Ok(0)
    }

    /// Sleeps until an operation completes or the table's wake-up eventfd is written, at
    /// most `timeout`, then reaps like [`reap`](Self::reap). Returns how many finished.
    fn wait(&mut self, ops: &mut OpTable, timeout: Duration, done: &mut impl Done) -> usize {
        let _ = done;
        sleep_on(ops.wake(), timeout);
        0
    }
}

/// One socket's sending: the operations ([`OpTable`]) and the backend that hands them to
/// the kernel ([`BatchSend`]).
///
/// [`take_op`](Self::take_op), filling it ([`ops_mut`](Self::ops_mut)) and
/// [`queue`](Self::queue) prepare an operation; [`flush`](Self::flush) hands everything queued over; completions come back
/// through `done` as [`BatchSend`] says.
pub(crate) struct Sending<B> {
    ops: OpTable,
    backend: B,
}

impl<B: BatchSend> Sending<B> {
    /// `backend` sending with the operations of `ops`.
    pub(crate) fn new(ops: OpTable, backend: B) -> Sending<B> {
        Sending { ops, backend }
    }

    /// A free operation, if any.
    pub(crate) fn take_op(&mut self) -> Option<u16> {
        self.ops.take()
    }

    /// Operations queued or in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.in_flight()
    }

    /// Whether [`take_op`](Self::take_op) would give an operation now.
    pub(crate) fn has_free_op(&self) -> bool {
        self.ops.in_flight() < self.ops.len()
    }

    /// Whether runs of packets may still leave as one GSO send.
    pub(crate) fn gso(&self) -> bool {
        self.ops.gso()
    }

    /// The operations, to fill one taken with [`take_op`](Self::take_op)
    /// ([`OpTable::fill`]).
    pub(crate) fn ops_mut(&mut self) -> &mut OpTable {
        &mut self.ops
    }

    /// The backend itself.
    #[cfg(feature = "tokio")]
    pub(crate) fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// See [`BatchSend::queue`].
    pub(crate) fn queue(&mut self, op: u16, linked: bool) -> io::Result<()> {
        self.backend.queue(&mut self.ops, op, linked)
    }

    /// See [`BatchSend::flush`].
    pub(crate) fn flush(&mut self, done: &mut impl Done) -> io::Result<()> {
        self.backend.flush(&mut self.ops, done)
    }

    /// See [`BatchSend::reap`].
    pub(crate) fn reap(&mut self, wait: bool, done: &mut impl Done) -> io::Result<usize> {
        self.backend.reap(&mut self.ops, wait, done)
    }

    /// See [`BatchSend::wait`].
    pub(crate) fn wait(&mut self, timeout: Duration, done: &mut impl Done) -> usize {
        self.backend.wait(&mut self.ops, timeout, done)
    }
}

/// Receives from a set of sockets. See the module docs.
///
/// # Contract
///
/// - [`add`](Self::add) starts receiving on a socket and names its slot; every event
///   carries the slot of its socket. [`remove`](Self::remove) stops it; events already
///   queued for a removed slot are dropped.
/// - [`poll`](Self::poll) hands what arrived to the sink, waiting at most `wait` for
///   something (`None`: not at all); a payload borrows the backend's buffer until the
///   sink returns.
/// - [`watch_wake`](Self::watch_wake) makes writing an eventfd end a waiting poll.
pub(crate) trait BatchRecv: Send {
    /// Starts receiving on `endpoint`; returns its slot.
    ///
    /// # Errors
    ///
    /// No free slot, an endpoint of another backend, or the kernel refused.
    fn add(&mut self, endpoint: Endpoint<'_>) -> io::Result<u32>;

    /// Stops receiving on `slot`.
    ///
    /// # Errors
    ///
    /// The kernel refused to cancel the receive or release the socket.
    fn remove(&mut self, slot: u32) -> io::Result<()>;

    /// Makes writing eventfd `fd` (which must outlive the receiver) end a waiting poll.
    ///
    /// # Errors
    ///
    /// Arming the wake-up failed.
    fn watch_wake(&mut self, fd: RawFd) -> io::Result<()>;

    /// Hands what arrived to `sink`, waiting at most `wait` (`None`: not at all); returns
    /// how many completions were handled.
    ///
    /// # Errors
    ///
    /// Waiting or entering the kernel failed.
    fn poll(
        &mut self,
        wait: Option<Duration>,
        sink: &mut impl FnMut(Event<'_>),
    ) -> io::Result<usize>;
}

/// The kernel's limit on segments in one UDP GSO send (`UDP_MAX_SEGMENTS`).
pub(crate) const MAX_GSO_SEGMENTS: usize = 64;
/// The most payload one UDP GSO send may carry: an IPv4 datagram's 65535 bytes less the
/// IP and UDP headers.
pub(crate) const MAX_GSO_BYTES: usize = 65_535 - 20 - 8;

/// A transmit stamp request for one send: the key it is to be reported under, and
/// whether the send names that key itself (`SCM_TS_OPT_ID`) or the kernel's counter of
/// stamped sends gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StampRequest {
    /// The key.
    pub(crate) key: u32,
    /// Name it in an `SCM_TS_OPT_ID` control message (Linux 6.13+).
    pub(crate) explicit: bool,
}

/// `CMSG_SPACE` of a 4-byte (or 2-byte) value: header plus value, padded.
const SEND_CMSG_SPACE: usize = 24;

/// The control messages of one send: a `UDP_SEGMENT` (one GSO send) and, for a sampled
/// send, an `SO_TIMESTAMPING` asking for a software transmit stamp and an `SCM_TS_OPT_ID`
/// naming its key; each a header plus its value, padded to the control-message alignment.
/// Lives next to the `msghdr` that points at it, for as long as the send is in flight.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct SendCmsgs {
    bytes: [u8; 3 * SEND_CMSG_SPACE],
}

impl SendCmsgs {
    /// An empty one.
    pub(crate) fn zeroed() -> SendCmsgs {
        SendCmsgs {
            bytes: [0; 3 * SEND_CMSG_SPACE],
        }
    }

    /// Writes one control message at `at`: header (length, level, type) and `value`.
    fn put(&mut self, at: usize, level: i32, kind: i32, value: &[u8]) -> usize {
        let len = CMSG_HDR + value.len();
        let b = &mut self.bytes[at..at + SEND_CMSG_SPACE];
        b.fill(0);
        b[..8].copy_from_slice(&len.to_ne_bytes());
        b[8..12].copy_from_slice(&level.to_ne_bytes());
        b[12..16].copy_from_slice(&kind.to_ne_bytes());
        b[16..16 + value.len()].copy_from_slice(value);
        at + SEND_CMSG_SPACE
    }

    /// Points `msg`'s control data at these messages asking for segments of `segment`
    /// bytes (one GSO send) and, with `stamp`, a transmit stamp; with neither, gives
    /// `msg` no control data (the path of every unsampled single datagram).
    pub(crate) fn attach(
        &mut self,
        msg: &mut libc::msghdr,
        segment: Option<u16>,
        stamp: Option<StampRequest>,
    ) {
        if segment.is_none() && stamp.is_none() {
            msg.msg_control = std::ptr::null_mut();
            msg.msg_controllen = 0;
            return;
        }
        let mut at = 0;
        if let Some(segment) = segment {
            at = self.put(at, libc::SOL_UDP, libc::UDP_SEGMENT, &segment.to_ne_bytes());
        }
        if let Some(stamp) = stamp {
            let record = libc::SOF_TIMESTAMPING_TX_SOFTWARE;
            at = self.put(
                at,
                libc::SOL_SOCKET,
                stamps::SO_TIMESTAMPING,
                &record.to_ne_bytes(),
            );
            if stamp.explicit {
                at = self.put(
                    at,
                    libc::SOL_SOCKET,
                    stamps::SCM_TS_OPT_ID,
                    &stamp.key.to_ne_bytes(),
                );
            }
        }
        msg.msg_control = self.bytes.as_mut_ptr().cast();
        msg.msg_controllen = at;
    }
}

/// Decides which kernel backend runs, probing io_uring when the choice allows it.
///
/// # Errors
///
/// [`Error::UringUnavailable`] when io_uring was required but cannot be set up.
pub(crate) fn choose(choice: BackendChoice) -> Result<BackendInfo> {
    match choice {
        BackendChoice::Xdp => Ok(BackendInfo {
            kind: BackendKind::Xdp,
            reason: "forced by configuration".into(),
        }),
        BackendChoice::Mmsg => Ok(BackendInfo {
            kind: BackendKind::Mmsg,
            reason: "forced by configuration".into(),
        }),
        BackendChoice::Uring => match uring::probe() {
            Ok(()) => Ok(BackendInfo {
                kind: BackendKind::Uring,
                reason: "forced by configuration".into(),
            }),
            Err(reason) => Err(Error::UringUnavailable { reason }),
        },
        BackendChoice::Auto => match uring::probe() {
            Ok(()) => Ok(BackendInfo {
                kind: BackendKind::Uring,
                reason: "io_uring available".into(),
            }),
            Err(reason) => {
                tracing::warn!(%reason, "io_uring unavailable, falling back to recvmmsg/sendmmsg");
                Ok(BackendInfo {
                    kind: BackendKind::Mmsg,
                    reason: format!("io_uring unavailable: {reason}"),
                })
            }
        },
    }
}

/// What [`choose`] reports for a simulated network.
pub(crate) fn sim_backend() -> BackendInfo {
    BackendInfo {
        kind: BackendKind::Sim,
        reason: "simulated network".into(),
    }
}

/// How many of the packets at the front of `lens` can leave as one GSO send: a run of
/// equal lengths, of which only the last may be shorter, within the kernel's segment and
/// byte limits. Always at least 1 for a non-empty slice.
pub(crate) fn gso_run(lens: impl ExactSizeIterator<Item = usize>, max_segments: usize) -> usize {
    let mut lens = lens.peekable();
    let Some(first) = lens.next() else {
        return 0;
    };
    let limit = max_segments
        .min(MAX_GSO_SEGMENTS)
        .min(MAX_GSO_BYTES / first.max(1));
    let mut n = 1;
    while n < limit {
        match lens.next() {
            Some(len) if len == first => n += 1,
            Some(len) if len < first && len > 0 => return n + 1,
            _ => break,
        }
    }
    n
}

/// What the control messages of one received datagram say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecvMeta {
    /// Segment size when the kernel coalesced several datagrams (UDP GRO).
    pub(crate) gro_segment: Option<u16>,
    /// The socket's cumulative count of datagrams dropped for lack of buffer space
    /// (`SO_RXQ_OVFL`).
    pub(crate) drops: Option<u32>,
    /// Where the datagram came from (the receive's source address), when known.
    pub(crate) source: Option<SocketAddr>,
    /// The kernel's software receive stamp (`SCM_TIMESTAMPING`), ns of `CLOCK_REALTIME`.
    pub(crate) rx_stamp: Option<u64>,
    /// The raw hardware receive stamp, when hardware stamping is on.
    pub(crate) rx_hw_stamp: Option<u64>,
    /// An `SCM_TIMESTAMPING` message was there but unreadable (short, impossible time).
    pub(crate) stamp_malformed: bool,
    /// The control messages did not fit the control buffer (`MSG_CTRUNC`).
    pub(crate) control_truncated: bool,
}

/// Reads a source address the kernel wrote (a `sockaddr_in` or `sockaddr_in6`, as raw
/// bytes of the length it reported); an IPv4-mapped IPv6 address comes back as IPv4, and
/// the flow label is left out, so that one sender always reads the same. Anything else
/// (too short, another family) is `None`; this never panics.
pub(crate) fn parse_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*name.first()?, *name.get(1)?]);
    let port = u16::from_be_bytes([*name.get(2)?, *name.get(3)?]);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope: [u8; 4] = name.get(24..28)?.try_into().ok()?;
            let v6 = SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, u32::from_ne_bytes(scope));
            Some(canonical(SocketAddr::V6(v6)))
        }
        _ => None,
    }
}

/// `addr` as one sender always reads: an IPv4-mapped IPv6 address as IPv4, and no flow
/// label (which the kernel leaves out of received addresses anyway).
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, v6.scope_id())),
        },
        SocketAddr::V4(_) => addr,
    }
}

const CMSG_HDR: usize = std::mem::size_of::<libc::cmsghdr>();
const CMSG_ALIGN: usize = std::mem::size_of::<usize>();

/// Calls `f(level, type, data)` for each well-formed control message in raw
/// control-buffer bytes, in order; stops at the first whose length does not fit. Never
/// panics.
pub(crate) fn for_each_cmsg(mut control: &[u8], mut f: impl FnMut(i32, i32, &[u8])) {
    while control.len() >= CMSG_HDR {
        let word = |at: usize, n: usize| -> u64 {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&control[at..at + n]);
            u64::from_ne_bytes(b)
        };
        let len = word(0, std::mem::size_of::<usize>()) as usize;
        let level = word(8, 4) as u32 as i32;
        let kind = word(12, 4) as u32 as i32;
        if len < CMSG_HDR || len > control.len() {
            break;
        }
        f(level, kind, &control[CMSG_HDR..len]);
        let step = len.div_ceil(CMSG_ALIGN) * CMSG_ALIGN;
        if step >= control.len() {
            break;
        }
        control = &control[step..];
    }
}

/// Parses the control messages the data plane asks for, from raw control-buffer bytes.
/// Unknown or malformed control messages are skipped (a malformed `SCM_TIMESTAMPING` is
/// flagged); this never panics.
pub(crate) fn parse_cmsgs(control: &[u8]) -> RecvMeta {
    let mut meta = RecvMeta::default();
    for_each_cmsg(control, |level, kind, data| match (level, kind) {
        (libc::SOL_UDP, libc::UDP_GRO) if data.len() >= 4 => {
            let seg = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
            meta.gro_segment = u16::try_from(seg).ok().filter(|&s| s > 0);
        }
        (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) if data.len() >= 4 => {
            meta.drops = Some(u32::from_ne_bytes([data[0], data[1], data[2], data[3]]));
        }
        _ if stamps::is_scm_timestamping(level, kind) => {
            match stamps::parse_scm_timestamping(data) {
                Ok((software, hardware)) => {
                    meta.rx_stamp = software;
                    meta.rx_hw_stamp = hardware;
                }
                Err(()) => meta.stamp_malformed = true,
            }
        }
        _ => {}
    });
    meta
}

/// Room for the control messages [`parse_cmsgs`] reads: UDP_GRO and SO_RXQ_OVFL (each an
/// aligned header plus a 4-byte value: 24 bytes) and SCM_TIMESTAMPING (a header plus
/// three timespecs: 64 bytes), with slack. A receive whose control messages do not fit
/// anyway is flagged `MSG_CTRUNC` and counted.
pub(crate) const RECV_CONTROL_LEN: usize = 128;

/// Splits a received payload into the datagrams it holds: one, or several of
/// `gro_segment` bytes each (the last may be shorter) when the kernel coalesced them.
pub(crate) fn segments(payload: &[u8], gro_segment: Option<u16>) -> std::slice::Chunks<'_, u8> {
    // A segment size of 0 means no coalescing (and a chunk size of 0 would panic).
    let size = match gro_segment {
        Some(s) if s > 0 && usize::from(s) < payload.len() => usize::from(s),
        _ => payload.len().max(1),
    };
    payload.chunks(size)
}

/// One thing a receive backend reports.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// A datagram (or a GRO batch of them) arrived on socket `slot`; `payload` borrows the
    /// backend's buffer until the sink returns.
    Datagram {
        /// The socket.
        slot: u32,
        /// The bytes received.
        payload: &'a [u8],
        /// The datagram was longer than the buffer (or its control messages did not fit).
        truncated: bool,
        /// What the control messages said.
        meta: RecvMeta,
    },
    /// A completion whose buffer layout could not be read.
    Malformed {
        /// The socket.
        slot: u32,
    },
    /// The receive on `slot` ended and was re-armed.
    Rearm {
        /// The socket.
        slot: u32,
    },
    /// A receive on `slot` failed.
    Error {
        /// The socket.
        slot: u32,
        /// The kernel's error number.
        errno: i32,
    },
}

impl Event<'_> {
    /// The socket the event is about.
    pub(crate) fn slot(&self) -> u32 {
        match self {
            Event::Datagram { slot, .. }
            | Event::Malformed { slot }
            | Event::Rearm { slot }
            | Event::Error { slot, .. } => *slot,
        }
    }
}

/// Whether the running kernel's release (`uname -r`) is at least `major.minor`. An
/// unreadable release counts as new enough (the feature's own failure then speaks).
pub(crate) fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return true;
    };
    release_at_least(release.trim(), major, minor)
}

fn release_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => true,
    }
}

/// Maps an `io::Error` from a failed setup step to a readable reason.
pub(crate) fn reason(op: &str, e: &io::Error) -> String {
    format!("{op}: {e}")
}

/// Waits until `fd` may be read (`POLLIN`) or written (`POLLOUT`), at most `timeout`;
/// returns whether it may.
pub(crate) fn wait_fd(fd: RawFd, events: libc::c_short, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, read and written by the kernel during the call.
    let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
    rc > 0 && pfd.revents & events != 0
}

/// Sleeps until the eventfd `wake` is written (emptying it) or `timeout` passes; without
/// an eventfd, for `timeout`. What the backends that send synchronously do to wait.
pub(crate) fn sleep_on(wake: Option<RawFd>, timeout: Duration) {
    match wake {
        Some(fd) => {
            if wait_fd(fd, libc::POLLIN, timeout) {
                drain_eventfd(fd);
            }
        }
        None => std::thread::sleep(timeout),
    }
}

/// Empties an eventfd's counter (it is non-blocking: nothing to read is fine).
pub(crate) fn drain_eventfd(fd: RawFd) {
    let mut value = 0u64;
    // SAFETY: reads 8 bytes into a live u64.
    let _ = unsafe { libc::read(fd, (&raw mut value).cast(), 8) };
}

/// Control messages as the kernel lays them out, for the parsers' tests.
#[cfg(test)]
pub(crate) mod test_support {
    /// One control message: header (length, level, type), `data`, padding.
    pub(crate) fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(super::CMSG_HDR + data.len()).to_ne_bytes());
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(data);
        v.resize(v.len().div_ceil(8) * 8, 0);
        v
    }

    /// The data of an `SCM_TIMESTAMPING`: three (seconds, nanoseconds).
    pub(crate) fn timespecs(ts: [(i64, i64); 3]) -> Vec<u8> {
        ts.iter()
            .flat_map(|&(s, n)| s.to_ne_bytes().into_iter().chain(n.to_ne_bytes()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lens: &[usize], max: usize) -> usize {
        gso_run(lens.iter().copied(), max)
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(release_at_least("6.18.44-fc-v669", 6, 15));
        assert!(release_at_least("6.15.0", 6, 15));
        assert!(!release_at_least("6.12.9-amd64", 6, 15));
        assert!(!release_at_least("5.19.0", 6, 0));
        assert!(release_at_least("garbage", 6, 0));
    }

    #[test]
    fn a_run_takes_equal_lengths_and_one_shorter_tail() {
        assert_eq!(run(&[], 64), 0);
        assert_eq!(run(&[1000], 64), 1);
        assert_eq!(run(&[1000, 1000, 1000], 64), 3);
        assert_eq!(run(&[1000, 1000, 400, 1000], 64), 3);
        assert_eq!(run(&[1000, 1200, 1000], 64), 1);
        assert_eq!(run(&[400, 1000], 64), 1);
    }

    #[test]
    fn a_run_stops_at_the_segment_and_byte_limits() {
        assert_eq!(run(&[100; 100], 64), 64);
        assert_eq!(run(&[100; 100], 8), 8);
        // 1472-byte packets: 44 fit in 65507 bytes.
        assert_eq!(run(&[1472; 100], 64), 44);
        assert_eq!(run(&[9000; 10], 64), 7);
    }

    #[test]
    fn coalesced_payloads_split_at_the_segment_size() {
        let payload: Vec<u8> = (0..10).collect();
        let parts: Vec<&[u8]> = segments(&payload, Some(4)).collect();
        assert_eq!(parts, [&[0, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9]]);
        assert_eq!(segments(&payload, None).count(), 1);
        assert_eq!(segments(&payload, Some(10)).count(), 1);
        assert_eq!(segments(&[], None).count(), 0);
    }

    fn cmsg(level: i32, kind: i32, value: u32) -> Vec<u8> {
        test_support::cmsg(level, kind, &value.to_ne_bytes())
    }

    #[test]
    fn control_messages_yield_gro_size_and_drops_and_garbage_is_skipped() {
        let mut buf = cmsg(libc::SOL_UDP, libc::UDP_GRO, 1448);
        buf.extend(cmsg(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 7));
        let meta = parse_cmsgs(&buf);
        assert_eq!(meta.gro_segment, Some(1448));
        assert_eq!(meta.drops, Some(7));
        for cut in 0..buf.len() {
            let _ = parse_cmsgs(&buf[..cut]);
        }
        assert_eq!(parse_cmsgs(&[0xff; 40]), RecvMeta::default());
    }

    #[test]
    fn a_receive_stamp_is_read_beside_gro_and_drops_and_fits_the_control_room() {
        let mut buf = cmsg(libc::SOL_UDP, libc::UDP_GRO, 1448);
        buf.extend(cmsg(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 7));
        buf.extend(test_support::cmsg(
            libc::SOL_SOCKET,
            stamps::SO_TIMESTAMPING,
            &test_support::timespecs([(1_700_000_000, 123), (0, 0), (0, 0)]),
        ));
        assert!(
            buf.len() <= RECV_CONTROL_LEN,
            "all three fit: {}",
            buf.len()
        );
        let meta = parse_cmsgs(&buf);
        assert_eq!(meta.gro_segment, Some(1448));
        assert_eq!(meta.drops, Some(7));
        assert_eq!(meta.rx_stamp, Some(1_700_000_000_000_000_123));
        assert_eq!(meta.rx_hw_stamp, None);
        assert!(!meta.stamp_malformed);
    }

    #[test]
    fn a_forged_short_or_cut_receive_stamp_is_flagged_or_skipped_never_a_panic() {
        // Short: the header claims 20 bytes of data where three timespecs take 48.
        let short = test_support::cmsg(libc::SOL_SOCKET, stamps::SO_TIMESTAMPING, &[1; 20]);
        let meta = parse_cmsgs(&short);
        assert!(meta.stamp_malformed && meta.rx_stamp.is_none());
        // Forged: nanoseconds out of range, and a negative time.
        for forged in [
            test_support::timespecs([(5, 1_000_000_000), (0, 0), (0, 0)]),
            test_support::timespecs([(-5, 0), (0, 0), (0, 0)]),
            test_support::timespecs([(1, 0), (0, 0), (i64::MIN, -1)]),
        ] {
            let meta = parse_cmsgs(&test_support::cmsg(
                libc::SOL_SOCKET,
                stamps::SO_TIMESTAMPING,
                &forged,
            ));
            assert!(meta.stamp_malformed, "{forged:?}");
            assert_eq!(meta.rx_stamp, None);
        }
        // Cut anywhere (a truncated control area): never a panic, never a wrong stamp.
        let whole = test_support::cmsg(
            libc::SOL_SOCKET,
            stamps::SO_TIMESTAMPING,
            &test_support::timespecs([(9, 9), (0, 0), (0, 0)]),
        );
        for cut in 0..whole.len() {
            let meta = parse_cmsgs(&whole[..cut]);
            assert!(meta.rx_stamp.is_none() || meta.rx_stamp == Some(9_000_000_009));
        }
        // A length beyond the buffer stops the walk.
        let mut lying = whole.clone();
        lying[..8].copy_from_slice(&4096usize.to_ne_bytes());
        assert_eq!(parse_cmsgs(&lying), RecvMeta::default());
    }

    /// The bytes of a plain C struct, as the kernel writes it.
    fn bytes_of<T>(value: &T) -> &[u8] {
        // SAFETY: reads the struct's own bytes (sockaddr structs: no padding).
        unsafe {
            std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
    }

    #[test]
    fn source_addresses_read_as_the_kernel_writes_them_and_garbage_is_none() {
        // SAFETY: plain C structs; all-zero is valid.
        let mut v4: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        v4.sin_family = libc::AF_INET as libc::sa_family_t;
        v4.sin_port = 4242u16.to_be();
        v4.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 9]);
        assert_eq!(parse_sockaddr(bytes_of(&v4)), "127.0.0.9:4242".parse().ok());
        // SAFETY: as above.
        let mut v6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        v6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        v6.sin6_port = 9u16.to_be();
        v6.sin6_flowinfo = 77;
        v6.sin6_addr.s6_addr = "::ffff:10.1.2.3".parse::<Ipv6Addr>().unwrap().octets();
        let mapped = parse_sockaddr(bytes_of(&v6));
        assert_eq!(mapped, "10.1.2.3:9".parse().ok(), "mapped reads as v4");
        v6.sin6_addr.s6_addr = Ipv6Addr::LOCALHOST.octets();
        let bytes = bytes_of(&v6);
        assert_eq!(
            parse_sockaddr(bytes),
            "[::1]:9".parse().ok(),
            "no flow label"
        );
        assert_eq!(parse_sockaddr(&bytes[..20]), None);
        assert_eq!(parse_sockaddr(&[]), None);
        assert_eq!(parse_sockaddr(&[0xff; 28]), None);
    }
}
