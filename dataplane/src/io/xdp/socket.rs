//! One AF_XDP socket bound to one queue of one interface, with its own UMEM and its four
//! rings, written directly on the kernel's uapi (linux/if_xdp.h) through `libc`.
//!
//! # Life of a frame
//!
//! The UMEM's frames are split once, at construction: the first `frames - tx_frames` are
//! receive frames, the rest send frames.
//!
//! - **Receive.** Every receive frame starts on the fill ring. The kernel writes a
//!   packet into one and names it on the RX ring; [`XdpSocket::rx_batch`] hands each
//!   packet to the caller's handler in place and, once the handler returned, gives the
//!   frame back to the fill ring (one publish and at most one wake-up per batch). A
//!   descriptor the kernel should never have written (outside the receive frames, or
//!   longer than its frame) is counted and not handed on; its frame goes back to the fill
//!   ring if its address names a receive frame, and is counted as lost otherwise.
//! - **Send.** Send frames sit on a free list (no allocation after construction).
//!   [`XdpSocket::tx_frame`] rents one for writing, [`XdpSocket::tx_push`] queues it on the
//!   TX ring, [`XdpSocket::tx_flush`] publishes the queued frames and wakes the kernel
//!   when it must, and [`XdpSocket::reclaim`] takes completed frames off the completion
//!   ring back to the free list. A frame the caller rented and does not send goes back
//!   with [`XdpSocket::tx_discard`].
//!
//! # Wake-ups
//!
//! With `need_wakeup` (`XDP_USE_NEED_WAKEUP`), the kernel sets `XDP_RING_NEED_WAKEUP` on
//! the fill ring when the driver stopped looking for fill entries, and on the TX ring
//! when it stopped transmitting; only then is a system call needed: `recvfrom` with
//! `MSG_DONTWAIT` for the fill ring, `sendto` with `MSG_DONTWAIT` for TX. In copy mode
//! the kernel transmits only inside `sendto` (a bounded batch per call), so TX is kicked
//! on every flush that has frames outstanding. `poll(2)` on the socket
//! ([`XdpSocket::wait_readable`]) also wakes the driver for receive.
//!
//! # What the kernel does (seen on Linux 6.18 with veth, in this module's tests)
//!
//! - Binding needs no XDP program; one must be attached (native or generic mode, both
//!   work on veth) for anything to reach the RX ring.
//! - veth has no zero-copy: `XDP_ZEROCOPY` is refused with `EOPNOTSUPP`, and the same
//!   socket then binds in copy mode (no second UMEM registration).
//! - In copy mode the TX ring's need-wakeup flag is set from the bind on and stays set,
//!   the fill ring's is never set, and each `sendto` sends at most 32 frames, answering
//!   `EAGAIN` when more are left.
//! - A closed socket's queue stays taken (`EBUSY`) for 25-40 ms; bind retries.
//! - Flushing on a downed interface gives `ENETDOWN`, on a deleted one `ENXIO`.
//! - Creating the socket needs CAP_NET_RAW (`EPERM`); the UMEM is charged to
//!   RLIMIT_MEMLOCK unless CAP_IPC_LOCK, and `ENOBUFS` says it does not fit.
//!
//! # Contract
//!
//! One thread at a time (the socket is `Send`, not `Sync`). Everything the kernel writes
//! (descriptors, addresses, indices) is checked before use; nothing here panics. Errors
//! name their cause and the fix.

use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::ring::{ConsumerRing, ProducerRing, Ring};
use super::umem::{check_range, Umem};

/// What to do about zero-copy (the driver DMAs straight into the UMEM) vs copy mode (the
/// kernel copies each packet between its own buffers and the UMEM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ZeroCopy {
    /// Zero-copy if the driver allows it, else copy mode (the reason is kept:
    /// [`XdpSocket::zero_copy_refused`]).
    #[default]
    Auto,
    /// Zero-copy or fail ([`XskError::ZeroCopyUnsupported`]).
    Require,
    /// Copy mode always.
    Copy,
}

/// How to build an [`XdpSocket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XskConfig {
    /// UMEM frames (a power of two).
    pub(crate) frames: u32,
    /// Bytes per frame: 2048 or 4096.
    pub(crate) frame_size: u32,
    /// RX ring entries (a power of two).
    pub(crate) rx_size: u32,
    /// TX ring entries (a power of two).
    pub(crate) tx_size: u32,
    /// Fill ring entries (a power of two, at least `frames - tx_frames`, so that every
    /// receive frame fits on it at once).
    pub(crate) fill_size: u32,
    /// Completion ring entries (a power of two, at least `tx_frames`, so that every send
    /// frame can complete at once).
    pub(crate) comp_size: u32,
    /// Zero-copy or copy mode.
    pub(crate) zero_copy: ZeroCopy,
    /// Bind with `XDP_USE_NEED_WAKEUP`: system calls only when the kernel asks for them.
    pub(crate) need_wakeup: bool,
    /// UMEM frames kept for sending; the rest receive.
    pub(crate) tx_frames: u32,
}

impl Default for XskConfig {
    /// 4096 frames of 2048 bytes (8 MiB), half for sending; rings of 2048 entries;
    /// zero-copy where the driver has it; wake-ups only on request.
    fn default() -> XskConfig {
        XskConfig {
            frames: 4096,
            frame_size: 2048,
            rx_size: 2048,
            tx_size: 2048,
            fill_size: 2048,
            comp_size: 2048,
            zero_copy: ZeroCopy::Auto,
            need_wakeup: true,
            tx_frames: 2048,
        }
    }
}

impl XskConfig {
    /// Checks the sizes against each other.
    ///
    /// # Errors
    ///
    /// [`XskError::Config`] naming the setting at fault.
    pub(crate) fn validate(&self) -> Result<(), XskError> {
        let bad = |msg: String| Err(XskError::Config(msg));
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return bad(format!(
                "frame_size {} must be 2048 or 4096",
                self.frame_size
            ));
        }
        if self.frames == 0 || !self.frames.is_power_of_two() {
            return bad(format!("frames {} must be a power of two", self.frames));
        }
        for (name, size) in [
            ("rx_size", self.rx_size),
            ("tx_size", self.tx_size),
            ("fill_size", self.fill_size),
            ("comp_size", self.comp_size),
        ] {
            if size == 0 || !size.is_power_of_two() {
                return bad(format!("{name} {size} must be a power of two"));
            }
        }
        if self.tx_frames > self.frames {
            return bad(format!(
                "tx_frames {} is more than the {} frames of the UMEM",
                self.tx_frames, self.frames
            ));
        }
        let rx_frames = self.frames - self.tx_frames;
        if self.fill_size < rx_frames {
            return bad(format!(
                "fill_size {} cannot hold the {rx_frames} receive frames: raise fill_size or \
                 tx_frames",
                self.fill_size
            ));
        }
        if self.comp_size < self.tx_frames {
            return bad(format!(
                "comp_size {} cannot hold the {} send frames: raise comp_size or lower \
                 tx_frames",
                self.comp_size, self.tx_frames
            ));
        }
        Ok(())
    }
}

/// The kernel's drop counters for one socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct XskStats {
    /// Received packets dropped for other reasons (e.g. longer than a frame).
    pub(crate) rx_dropped: u64,
    /// Fill descriptors the kernel refused.
    pub(crate) rx_invalid_descs: u64,
    /// TX descriptors the kernel refused (address or length out of the UMEM).
    pub(crate) tx_invalid_descs: u64,
    /// Received packets dropped because the RX ring was full (we read too slowly).
    pub(crate) rx_ring_full: u64,
    /// Times the kernel found the fill ring empty (we gave frames back too slowly).
    pub(crate) rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty when woken.
    pub(crate) tx_ring_empty_descs: u64,
}

/// What this side counted (everything it discarded, and the wake-ups it made).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct XskCounters {
    /// Packets handed to a handler.
    pub(crate) received: u64,
    /// RX descriptors refused (address outside the receive frames, length 0 or past its
    /// frame).
    pub(crate) invalid_descriptors: u64,
    /// Frames lost: named by a descriptor whose address is no receive frame, or that found
    /// no room on the fill ring (a kernel handing a frame out twice).
    pub(crate) lost_frames: u64,
    /// Frames queued on the TX ring.
    pub(crate) sent: u64,
    /// Send frames the completion ring gave back.
    pub(crate) completions: u64,
    /// Completion entries naming no frame in flight (ignored).
    pub(crate) invalid_completions: u64,
    /// `sendto` kicks made for TX.
    pub(crate) tx_kicks: u64,
    /// Kicks the kernel answered with `EAGAIN`, `EBUSY` or `ENOBUFS` (retried later).
    pub(crate) tx_kick_busy: u64,
    /// `recvfrom` kicks made for the fill ring.
    pub(crate) fill_kicks: u64,
}

/// Why a frame could not be queued for sending; the caller still owns it (send it again
/// after [`XdpSocket::tx_flush`] and [`XdpSocket::reclaim`], or give it back with
/// [`XdpSocket::tx_discard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxRefused {
    /// The TX ring is full.
    Full,
    /// The address is not a send frame the caller rented, or the length runs past it.
    NotRented,
}

/// Setting up an AF_XDP socket failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum XskError {
    /// A size in [`XskConfig`] is out of range.
    #[error("invalid AF_XDP configuration: {0}")]
    Config(String),

    /// The UMEM could not be mapped.
    #[error("cannot allocate the {bytes}-byte UMEM: {source}")]
    Umem {
        /// Its size.
        bytes: u64,
        /// The mapping's error.
        #[source]
        source: io::Error,
    },

    /// The kernel has no AF_XDP (`EAFNOSUPPORT`).
    #[error("this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS): use another backend")]
    NoAfXdp,

    /// Not allowed (`EPERM`/`EACCES`) to create or bind the socket (creating one takes
    /// CAP_NET_RAW).
    #[error(
        "{op}: {source}: AF_XDP needs CAP_NET_RAW and CAP_NET_ADMIN (and CAP_BPF or \
         CAP_SYS_ADMIN for the XDP program): run as root or grant them"
    )]
    Permission {
        /// What was being done.
        op: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },

    /// Registering the UMEM hit the locked memory limit: the kernel charges the UMEM's
    /// pages to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK, and says `ENOBUFS`
    /// when they do not fit (`ENOMEM`, `EPERM` from older kernels).
    #[error(
        "registering the {bytes}-byte UMEM: {source}: locked memory limit \
         (RLIMIT_MEMLOCK is {memlock}): raise `ulimit -l` or LimitMEMLOCK= of the service"
    )]
    Memlock {
        /// The UMEM's size.
        bytes: u64,
        /// The current soft limit, in words ("64 KiB", "unlimited").
        memlock: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },

    /// No interface with that index in this network namespace (`ENODEV`).
    #[error(
        "binding an AF_XDP socket to interface index {ifindex}: no such interface in this \
         network namespace: {source}"
    )]
    NoSuchInterface {
        /// The index given.
        ifindex: u32,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },

    /// The interface has no such queue (`EINVAL`).
    #[error(
        "binding an AF_XDP socket to queue {queue} of {ifname} (index {ifindex}): {source}: \
         no such queue ({channels}); pick a queue below the channel count (`ethtool -l \
         {ifname}`)"
    )]
    NoSuchQueue {
        /// The interface's name (or `?`).
        ifname: String,
        /// Its index.
        ifindex: u32,
        /// The queue asked for.
        queue: u32,
        /// The channel counts `ETHTOOL_GCHANNELS` reports, in words, or why unknown.
        channels: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },

    /// Another AF_XDP socket (or a zero-copy user) holds the queue (`EBUSY`, still after
    /// a second of retrying: a socket closed just before frees its queue within tens of
    /// milliseconds).
    #[error(
        "queue {queue} of {ifname} (index {ifindex}) already has an AF_XDP socket: {source}: \
         close the other user (another multipoint process?) or pick another queue"
    )]
    QueueBusy {
        /// The interface's name (or `?`).
        ifname: String,
        /// Its index.
        ifindex: u32,
        /// The queue.
        queue: u32,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },

    /// Zero-copy was required and the driver refused it.
    #[error(
        "zero-copy AF_XDP on queue {queue} of {ifname} refused: {source}: the driver has no \
         zero-copy support; allow copy mode (ZeroCopy::Auto)"
    )]
    ZeroCopyUnsupported {
        /// The interface's name (or `?`).
        ifname: String,
        /// The queue.
        queue: u32,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },

    /// Any other system call failure while setting up.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

/// An RX descriptor's verdict (see [`check_rx`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxCheck {
    /// A packet at `addr` of `len` bytes, in the receive frame starting at `frame`.
    Packet {
        /// The packet's first byte.
        addr: u64,
        /// Its length.
        len: usize,
        /// The frame's first byte (what goes back to the fill ring).
        frame: u64,
    },
    /// A bad descriptor whose address names the receive frame `frame` (it goes back).
    Bad {
        /// The frame's first byte.
        frame: u64,
    },
    /// A bad descriptor naming no receive frame (its frame cannot be returned).
    Lost,
}

/// Checks an RX descriptor against the receive frames (`0..rx_bytes` of the UMEM, in
/// `frame_size` frames): the packet must lie inside one receive frame, and not be empty.
pub(crate) fn check_rx(addr: u64, len: u32, rx_bytes: u64, frame_size: u32) -> RxCheck {
    if addr >= rx_bytes {
        return RxCheck::Lost;
    }
    let frame = addr & !(u64::from(frame_size) - 1);
    let rx_len = usize::try_from(rx_bytes).unwrap_or(usize::MAX);
    match check_range(addr, len as usize, rx_len, frame_size) {
        Some(_) if len > 0 => RxCheck::Packet {
            addr,
            len: len as usize,
            frame,
        },
        _ => RxCheck::Bad { frame },
    }
}

/// The receive half: RX ring in, fill ring out.
struct RxPath {
    rx: ConsumerRing<libc::xdp_desc>,
    fill: ProducerRing<u64>,
    /// Bytes of receive frames at the start of the UMEM.
    rx_bytes: u64,
    frame_size: u32,
}

impl RxPath {
    /// Puts every receive frame on the fill ring (unpublished).
    fn fill_all(&mut self) {
        let frames = (self.rx_bytes / u64::from(self.frame_size)) as usize;
        let n = self.fill.reserve(frames);
        for i in 0..n {
            self.fill.write(i, i as u64 * u64::from(self.frame_size));
        }
        self.fill.commit(n);
    }

    /// See [`XdpSocket::rx_batch`]; publishes the fill ring but leaves the wake-up to the
    /// caller.
    fn batch(
        &mut self,
        umem: &Umem,
        counters: &mut XskCounters,
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> usize {
        let n = self.rx.peek(max);
        if n == 0 {
            return 0;
        }
        let room = self.fill.reserve(n);
        let mut given = 0;
        let mut give = |fill: &mut ProducerRing<u64>, frame: u64, counters: &mut XskCounters| {
            if given < room && fill.write(given, frame) {
                given += 1;
            } else {
                counters.lost_frames += 1;
            }
        };
        let mut delivered = 0;
        for i in 0..n {
            let Some(desc) = self.rx.read(i) else {
                continue;
            };
            match check_rx(desc.addr, desc.len, self.rx_bytes, self.frame_size) {
                RxCheck::Packet { addr, len, frame } => {
                    match umem.frame(addr, len) {
                        Some(bytes) => {
                            f(bytes);
                            delivered += 1;
                        }
                        None => counters.invalid_descriptors += 1,
                    }
                    give(&mut self.fill, frame, counters);
                }
                RxCheck::Bad { frame } => {
                    counters.invalid_descriptors += 1;
                    give(&mut self.fill, frame, counters);
                }
                RxCheck::Lost => {
                    counters.invalid_descriptors += 1;
                    counters.lost_frames += 1;
                }
            }
        }
        counters.received += delivered;
        self.rx.release(n);
        self.fill.commit(given);
        self.fill.publish();
        n
    }
}

/// Where a send frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxState {
    /// On the free list.
    Free,
    /// Rented to the caller.
    Rented,
    /// On the TX ring or in the kernel, until it completes; the address queued (which
    /// the completion must name exactly).
    InFlight(u64),
}

/// The send half: TX ring out, completion ring in, and the free list.
struct TxPath {
    tx: ProducerRing<libc::xdp_desc>,
    comp: ConsumerRing<u64>,
    /// Free send frames (addresses of their first byte); capacity `state.len()`.
    free: Vec<u64>,
    /// Each send frame's state, by index from `start`.
    state: Vec<TxState>,
    /// First byte of the first send frame.
    start: u64,
    frame_size: u32,
}

impl TxPath {
    fn new(
        tx: ProducerRing<libc::xdp_desc>,
        comp: ConsumerRing<u64>,
        start: u64,
        frames: u32,
        frame_size: u32,
    ) -> TxPath {
        let free = (0..u64::from(frames))
            .rev()
            .map(|i| start + i * u64::from(frame_size))
            .collect();
        TxPath {
            tx,
            comp,
            free,
            state: vec![TxState::Free; frames as usize],
            start,
            frame_size,
        }
    }

    /// The index of the send frame holding `addr`, if any.
    fn index(&self, addr: u64) -> Option<usize> {
        let i = addr.checked_sub(self.start)? / u64::from(self.frame_size);
        usize::try_from(i).ok().filter(|&i| i < self.state.len())
    }

    fn take(&mut self) -> Option<u64> {
        let addr = self.free.pop()?;
        if let Some(i) = self.index(addr) {
            self.state[i] = TxState::Rented;
        }
        Some(addr)
    }

    fn discard(&mut self, addr: u64) -> bool {
        let frame = addr & !(u64::from(self.frame_size) - 1);
        match self.index(addr) {
            Some(i) if self.state[i] == TxState::Rented => {
                self.state[i] = TxState::Free;
                self.free.push(frame);
                true
            }
            _ => false,
        }
    }

    fn push(&mut self, umem_len: usize, addr: u64, len: usize) -> Result<(), TxRefused> {
        let Some(i) = self.index(addr) else {
            return Err(TxRefused::NotRented);
        };
        if self.state[i] != TxState::Rented
            || len == 0
            || check_range(addr, len, umem_len, self.frame_size).is_none()
        {
            return Err(TxRefused::NotRented);
        }
        if self.tx.reserve(1) == 0 {
            return Err(TxRefused::Full);
        }
        let desc = libc::xdp_desc {
            addr,
            len: len as u32,
            options: 0,
        };
        self.tx.write(0, desc);
        self.tx.commit(1);
        self.state[i] = TxState::InFlight(addr);
        Ok(())
    }

    /// Takes completed frames back to the free list; returns how many.
    fn reclaim(&mut self, counters: &mut XskCounters) -> usize {
        let n = self.comp.peek(self.state.len().max(1));
        let mut back = 0;
        for k in 0..n {
            let Some(addr) = self.comp.read(k) else {
                continue;
            };
            match self.index(addr) {
                Some(i) if self.state[i] == TxState::InFlight(addr) => {
                    self.state[i] = TxState::Free;
                    self.free
                        .push(self.start + i as u64 * u64::from(self.frame_size));
                    back += 1;
                }
                _ => counters.invalid_completions += 1,
            }
        }
        self.comp.release(n);
        counters.completions += back as u64;
        back
    }
}

/// An AF_XDP socket bound to one queue; see the module docs.
pub(crate) struct XdpSocket {
    rx: RxPath,
    tx: TxPath,
    fd: OwnedFd,
    /// Dropped after the socket (fields drop in order): the kernel unpins it then.
    umem: Umem,
    ifindex: u32,
    queue: u32,
    zero_copy: bool,
    zero_copy_refused: Option<String>,
    need_wakeup: bool,
    counters: XskCounters,
}

impl fmt::Debug for XdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpSocket")
            .field("fd", &self.fd)
            .field("ifindex", &self.ifindex)
            .field("queue", &self.queue)
            .field("zero_copy", &self.zero_copy)
            .field("need_wakeup", &self.need_wakeup)
            .field("umem", &self.umem)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl XdpSocket {
    /// Creates an AF_XDP socket on queue `queue` of interface `ifindex` (in the calling
    /// thread's network namespace), registers a fresh UMEM, maps the four rings, binds
    /// (zero-copy first under [`ZeroCopy::Auto`], copy mode if the driver refuses) and puts
    /// every receive frame on the fill ring. No XDP program is needed to bind; one is
    /// needed for anything to arrive on the RX ring.
    ///
    /// # Errors
    ///
    /// [`XskError`] naming the cause and the fix: bad sizes, no AF_XDP in the kernel,
    /// missing capabilities, the locked memory limit, no such interface or queue, a queue
    /// taken, zero-copy refused under [`ZeroCopy::Require`].
    pub(crate) fn new(ifindex: u32, queue: u32, config: &XskConfig) -> Result<XdpSocket, XskError> {
        config.validate()?;
        let bytes = u64::from(config.frames) * u64::from(config.frame_size);
        let umem = Umem::new(config.frames, config.frame_size)
            .map_err(|source| XskError::Umem { bytes, source })?;
        // SAFETY: plain system call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EAFNOSUPPORT) => XskError::NoAfXdp,
                Some(libc::EPERM | libc::EACCES) => XskError::Permission {
                    op: "creating an AF_XDP socket",
                    source: e,
                },
                _ => XskError::Io {
                    op: "creating an AF_XDP socket",
                    source: e,
                },
            });
        }
        // SAFETY: `raw` is a descriptor we just created and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let reg = libc::xdp_umem_reg {
            addr: umem.as_ptr() as u64,
            len: umem.len() as u64,
            chunk_size: config.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setopt(fd.as_raw_fd(), libc::XDP_UMEM_REG, &reg).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOMEM | libc::EPERM | libc::ENOBUFS) => XskError::Memlock {
                bytes,
                memlock: memlock_limit(),
                source: e,
            },
            _ => XskError::Io {
                op: "registering the UMEM (XDP_UMEM_REG)",
                source: e,
            },
        })?;
        let io = |op: &'static str| move |source: io::Error| XskError::Io { op, source };
        setopt(fd.as_raw_fd(), libc::XDP_UMEM_FILL_RING, &config.fill_size)
            .map_err(io("sizing the fill ring"))?;
        setopt(
            fd.as_raw_fd(),
            libc::XDP_UMEM_COMPLETION_RING,
            &config.comp_size,
        )
        .map_err(io("sizing the completion ring"))?;
        setopt(fd.as_raw_fd(), libc::XDP_RX_RING, &config.rx_size)
            .map_err(io("sizing the RX ring"))?;
        setopt(fd.as_raw_fd(), libc::XDP_TX_RING, &config.tx_size)
            .map_err(io("sizing the TX ring"))?;
        let (off, got) = getopt::<libc::xdp_mmap_offsets>(fd.as_raw_fd(), libc::XDP_MMAP_OFFSETS)
            .map_err(io("reading the ring offsets (XDP_MMAP_OFFSETS)"))?;
        if got != mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(XskError::Io {
                op: "reading the ring offsets (XDP_MMAP_OFFSETS)",
                source: io::Error::other(
                    "the kernel's rings have no flags word (before Linux 5.4): upgrade the kernel",
                ),
            });
        }
        let map = io("mapping an AF_XDP ring");
        let fill = ProducerRing::map(
            fd.as_fd(),
            libc::XDP_UMEM_PGOFF_FILL_RING,
            &off.fr,
            config.fill_size,
        )
        .map_err(map)?;
        let comp = ConsumerRing::map(
            fd.as_fd(),
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            &off.cr,
            config.comp_size,
        )
        .map_err(map)?;
        let rx = ConsumerRing::map(
            fd.as_fd(),
            libc::XDP_PGOFF_RX_RING as u64,
            &off.rx,
            config.rx_size,
        )
        .map_err(map)?;
        let tx = ProducerRing::map(
            fd.as_fd(),
            libc::XDP_PGOFF_TX_RING as u64,
            &off.tx,
            config.tx_size,
        )
        .map_err(map)?;

        let wake = if config.need_wakeup {
            libc::XDP_USE_NEED_WAKEUP
        } else {
            0
        };
        let mut zero_copy_refused = None;
        match config.zero_copy {
            ZeroCopy::Copy => bind(&fd, ifindex, queue, libc::XDP_COPY | wake)?,
            ZeroCopy::Require => {
                bind(&fd, ifindex, queue, libc::XDP_ZEROCOPY | wake).map_err(|e| match e {
                    XskError::Io { source, .. }
                        if source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                    {
                        XskError::ZeroCopyUnsupported {
                            ifname: ifname(ifindex),
                            queue,
                            source,
                        }
                    }
                    e => e,
                })?;
            }
            ZeroCopy::Auto => match bind(&fd, ifindex, queue, libc::XDP_ZEROCOPY | wake) {
                Ok(()) => {}
                // A refused bind leaves the socket unbound with its UMEM and rings (the
                // kernel frees only the buffer pool it tried), so the same socket binds
                // again in copy mode; no second UMEM registration is charged.
                Err(XskError::Io { source, .. } | XskError::NoSuchQueue { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) =>
                {
                    zero_copy_refused = Some(format!("the driver refused zero-copy: {source}"));
                    bind(&fd, ifindex, queue, libc::XDP_COPY | wake)?;
                }
                Err(e) => return Err(e),
            },
        }
        let (options, _) = getopt::<libc::xdp_options>(fd.as_raw_fd(), libc::XDP_OPTIONS)
            .map_err(io("reading the socket's options (XDP_OPTIONS)"))?;
        let zero_copy = options.flags & libc::XDP_OPTIONS_ZEROCOPY != 0;
        if !zero_copy && zero_copy_refused.is_none() && config.zero_copy != ZeroCopy::Copy {
            zero_copy_refused = Some("the kernel bound in copy mode".to_owned());
        }

        let rx_bytes = u64::from(config.frames - config.tx_frames) * u64::from(config.frame_size);
        let mut rx = RxPath {
            rx,
            fill,
            rx_bytes,
            frame_size: config.frame_size,
        };
        rx.fill_all();
        let tx = TxPath::new(tx, comp, rx_bytes, config.tx_frames, config.frame_size);
        let mut this = XdpSocket {
            rx,
            tx,
            fd,
            umem,
            ifindex,
            queue,
            zero_copy,
            zero_copy_refused,
            need_wakeup: config.need_wakeup,
            counters: XskCounters::default(),
        };
        this.fill_flush();
        Ok(this)
    }

    /// The socket's descriptor (to poll, or to put in the XDP program's XSKMAP).
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The interface index and queue it is bound to.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn bound_to(&self) -> (u32, u32) {
        (self.ifindex, self.queue)
    }

    /// Whether the kernel runs the socket in zero-copy mode (`XDP_OPTIONS`).
    pub(crate) fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Why the socket is in copy mode although zero-copy was allowed (`None` in zero-copy
    /// mode, or when copy mode was asked for).
    pub(crate) fn zero_copy_refused(&self) -> Option<&str> {
        self.zero_copy_refused.as_deref()
    }

    /// Whether the socket was bound with `XDP_USE_NEED_WAKEUP`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn need_wakeup(&self) -> bool {
        self.need_wakeup
    }

    /// The UMEM (its size, and whether it sits on huge pages: [`Umem::huge_pages`]).
    pub(crate) fn umem(&self) -> &Umem {
        &self.umem
    }

    /// What this side counted.
    pub(crate) fn counters(&self) -> XskCounters {
        self.counters
    }

    /// Hands up to `max` received packets to `f`, each in place in its UMEM frame, and
    /// gives each frame back to the fill ring after `f` returned (one publish for the
    /// batch, and a `recvfrom` kick if the kernel asked for one). Bad descriptors are
    /// counted ([`XskCounters::invalid_descriptors`]) and skipped. Returns the number of
    /// descriptors consumed (0: nothing was there; wait with
    /// [`wait_readable`](Self::wait_readable)). If `f` panics, nothing of the batch is
    /// released or given back: the next call sees the same descriptors again.
    pub(crate) fn rx_batch(&mut self, max: usize, f: impl FnMut(&[u8])) -> usize {
        let n = self.rx.batch(&self.umem, &mut self.counters, max, f);
        if n > 0 {
            self.fill_flush();
        }
        n
    }

    /// One non-blocking `recvfrom` on the socket: with busy polling on
    /// ([`set_busy_poll`](Self::set_busy_poll)), the kernel runs the driver's receive
    /// from this call (it copies nothing: the frames land in the RX ring). For a spinning
    /// thread that found the ring empty.
    pub(crate) fn busy_poll_once(&self) {
        // SAFETY: a zero-length receive on our socket with no buffer and no address; the
        // kernel writes nothing. EAGAIN (nothing to read) is the expected answer.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }

    /// Publishes the fill ring and kicks the kernel with `recvfrom(MSG_DONTWAIT)` if it
    /// set `XDP_RING_NEED_WAKEUP` there.
    fn fill_flush(&mut self) {
        self.rx.fill.publish();
        if self.need_wakeup && self.rx.fill.needs_wakeup() {
            self.counters.fill_kicks += 1;
            // SAFETY: a zero-length receive on our socket with no buffer and no address;
            // the kernel writes nothing. Its only effect is waking the driver; errors
            // (EAGAIN: nothing to read) are expected and ignored.
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            }
        }
    }

    /// Waits up to `timeout` (forever with `None`) for the RX ring to hold something;
    /// `poll(2)` also wakes the driver's receive. Returns whether it does.
    ///
    /// # Errors
    ///
    /// The `poll` error (`EINTR` is reported as not readable).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(r > 0 && pfd.revents & libc::POLLIN != 0)
    }

    /// Rents a free send frame: its address and all its bytes, for writing. `None` when
    /// every send frame is rented or in flight (flush and [`reclaim`](Self::reclaim)).
    pub(crate) fn tx_frame(&mut self) -> Option<(u64, &mut [u8])> {
        let addr = self.tx.take()?;
        let size = self.umem.frame_size() as usize;
        let bytes = self.umem.frame_mut(addr, size)?;
        Some((addr, bytes))
    }

    /// Frames free to rent now.
    pub(crate) fn tx_free(&self) -> usize {
        self.tx.free.len()
    }

    /// Gives a rented frame back unsent; `false` if `addr` is not a rented frame.
    pub(crate) fn tx_discard(&mut self, addr: u64) -> bool {
        self.tx.discard(addr)
    }

    /// Queues `len` bytes at `addr` (inside a frame rented from
    /// [`tx_frame`](Self::tx_frame)) on the TX ring; the kernel sees it after
    /// [`tx_flush`](Self::tx_flush).
    ///
    /// # Errors
    ///
    /// [`TxRefused`]; the caller still owns the frame then.
    pub(crate) fn tx_push(&mut self, addr: u64, len: usize) -> Result<(), TxRefused> {
        self.tx.push(self.umem.len(), addr, len)?;
        self.counters.sent += 1;
        Ok(())
    }

    /// Publishes the queued frames and wakes the kernel's transmit if it must: with
    /// `sendto(MSG_DONTWAIT)` when it set `XDP_RING_NEED_WAKEUP`, or always in copy mode
    /// (where the kernel sends only inside `sendto`, a bounded batch per call, so the kick
    /// repeats while frames are outstanding, up to a bound). `EAGAIN`, `EBUSY` and
    /// `ENOBUFS` mean "try again later" and are counted, not returned. Returns the frames
    /// the kernel has not taken yet.
    ///
    /// # Errors
    ///
    /// `ENETDOWN` (the interface is down), `ENXIO` (it is gone) and anything else
    /// unexpected from `sendto`.
    pub(crate) fn tx_flush(&mut self) -> io::Result<u32> {
        /// Kicks per flush at most (each sends a batch of up to 32 frames in copy mode).
        const MAX_KICKS: usize = 64;
        self.tx.tx.publish();
        let mut outstanding = self.tx.tx.outstanding();
        for _ in 0..MAX_KICKS {
            if outstanding == 0 {
                break;
            }
            let must = !self.zero_copy || !self.need_wakeup || self.tx.tx.needs_wakeup();
            if !must {
                break;
            }
            self.counters.tx_kicks += 1;
            // SAFETY: a zero-length send on our socket with no buffer and no address; the
            // kernel reads nothing from us and transmits what the TX ring holds.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            let before = outstanding;
            outstanding = self.tx.tx.outstanding();
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) => {
                        self.counters.tx_kick_busy += 1;
                        // The kernel stopped at its batch bound: go on while it makes
                        // progress; otherwise leave it for the next flush.
                        if outstanding >= before {
                            break;
                        }
                    }
                    Some(libc::EINTR) => {}
                    _ => return Err(e),
                }
            } else if self.zero_copy {
                // One kick starts the driver; it transmits on its own from there.
                break;
            }
        }
        Ok(outstanding)
    }

    /// Takes completed send frames off the completion ring back to the free list;
    /// returns how many.
    pub(crate) fn reclaim(&mut self) -> usize {
        self.tx.reclaim(&mut self.counters)
    }

    /// Turns on preferred busy polling (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL` of `usecs`,
    /// `SO_BUSY_POLL_BUDGET` of `budget` packets): the driver's NAPI then runs inside this
    /// socket's `poll`/`recvfrom`/`sendto` rather than in interrupts, so a spinning shard
    /// drives the NIC itself. Pair it with the interface's `napi_defer_hard_irqs` and
    /// `gro_flush_timeout` (see the kernel's af_xdp documentation).
    ///
    /// # Errors
    ///
    /// The `setsockopt` error (`EPERM` for values above `net.core.busy_poll` without
    /// CAP_NET_ADMIN).
    pub(crate) fn set_busy_poll(&self, usecs: u32, budget: u32) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        let one: libc::c_int = 1;
        let usecs = libc::c_int::try_from(usecs).unwrap_or(libc::c_int::MAX);
        let budget = libc::c_int::try_from(budget).unwrap_or(libc::c_int::MAX);
        for (name, value) in [
            (SO_PREFER_BUSY_POLL, &one),
            (SO_BUSY_POLL, &usecs),
            (SO_BUSY_POLL_BUDGET, &budget),
        ] {
            // SAFETY: an int option of the size passed, read during the call only.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    name,
                    (value as *const libc::c_int).cast(),
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The kernel's counters for this socket.
    ///
    /// # Errors
    ///
    /// The `getsockopt(XDP_STATISTICS)` error.
    pub(crate) fn statistics(&self) -> io::Result<XskStats> {
        let (s, _) = getopt::<libc::xdp_statistics>(self.fd.as_raw_fd(), libc::XDP_STATISTICS)?;
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }
}

/// How long a bind retries a busy queue. A socket closed just before keeps its queue for a
/// few tens of milliseconds (measured: 25-40 ms on Linux 6.18), because the kernel frees
/// the queue's buffer pool from a work queue; a restart or re-setup would otherwise fail.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// Binds `fd` to `queue` of `ifindex` with `flags`, mapping the errors to their causes;
/// `EBUSY` is retried for [`BUSY_WAIT`] (a refused bind leaves the socket as it was).
fn bind(fd: &OwnedFd, ifindex: u32, queue: u32, flags: u16) -> Result<(), XskError> {
    let sa = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    let start = std::time::Instant::now();
    let source = loop {
        // SAFETY: `sa` is a valid sockaddr_xdp of the length passed, read during the call
        // only.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sa).cast::<libc::sockaddr>(),
                mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) || start.elapsed() >= BUSY_WAIT {
            break e;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Err(match source.raw_os_error() {
        Some(libc::ENODEV) => XskError::NoSuchInterface { ifindex, source },
        Some(libc::EINVAL) => XskError::NoSuchQueue {
            ifname: ifname(ifindex),
            ifindex,
            queue,
            channels: channels(ifindex),
            source,
        },
        Some(libc::EBUSY) => XskError::QueueBusy {
            ifname: ifname(ifindex),
            ifindex,
            queue,
            source,
        },
        Some(libc::EPERM | libc::EACCES) => XskError::Permission {
            op: "binding the AF_XDP socket",
            source,
        },
        _ => XskError::Io {
            op: "binding the AF_XDP socket",
            source,
        },
    })
}

/// `setsockopt(fd, SOL_XDP, name, value)`.
fn setopt<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid `T` of the size passed, read during the call only.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(fd, SOL_XDP, name)` into a zeroed `T` (plain data: any bytes are valid);
/// also returns the length the kernel wrote.
fn getopt<T: Copy>(fd: RawFd, name: libc::c_int) -> io::Result<(T, usize)> {
    // SAFETY: only used with libc's plain-data uapi structs, for which all-zero is valid.
    let mut value: T = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes, `len` is a valid in/out length.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_XDP, name, (&raw mut value).cast(), &mut len) };
    if r == 0 {
        Ok((value, len as usize))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The interface's name, or `?`.
fn ifname(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes the call may write.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return "?".to_owned();
    }
    // SAFETY: on success the kernel wrote a NUL-terminated name into `buf`.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// `SO_BUSY_POLL` (asm-generic/socket.h; not in libc for Linux).
const SO_BUSY_POLL: libc::c_int = 46;
/// `SO_PREFER_BUSY_POLL` (asm-generic/socket.h; not in libc).
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
/// `SO_BUSY_POLL_BUDGET` (asm-generic/socket.h; not in libc).
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// `SIOCETHTOOL` (linux/sockios.h; not in libc).
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `ETHTOOL_GCHANNELS` (linux/ethtool.h; not in libc).
const ETHTOOL_GCHANNELS: u32 = 0x0000_003c;

/// `struct ethtool_channels` (linux/ethtool.h; not in libc).
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// The interface's channel counts (`ETHTOOL_GCHANNELS`), in words, or why unknown.
fn channels(ifindex: u32) -> String {
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    // SAFETY: a plain all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes the call may write.
    if unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null() {
        return "channel count unknown: no interface of that index".to_owned();
    }
    req.ifr_name = name;
    req.ifr_ifru.ifru_data = (&raw mut ch).cast();
    // SAFETY: plain system call; checked before use.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return format!("channel count unknown: {}", io::Error::last_os_error());
    }
    // SAFETY: `sock` is ours; `req` names the interface and points at `ch`, both alive
    // for the call; the kernel writes only `ch`.
    let r = unsafe { libc::ioctl(sock, SIOCETHTOOL as _, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the descriptor made above, once.
    unsafe { libc::close(sock) };
    if r < 0 {
        return format!("channel count unknown: ETHTOOL_GCHANNELS: {err}");
    }
    format!(
        "the interface has {} combined, {} rx, {} tx channels",
        ch.combined_count, ch.rx_count, ch.tx_count
    )
}

/// The current RLIMIT_MEMLOCK soft limit, in words.
fn memlock_limit() -> String {
    // SAFETY: a plain all-zero rlimit is valid.
    let mut lim: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: `lim` is writable for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return "unknown".to_owned();
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".to_owned()
    } else {
        format!("{} KiB", lim.rlim_cur / 1024)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Instant;

    use multipoint_test_support::netns::Netns;
    use multipoint_test_support::print_skip;

    use super::*;
    use crate::io::xdp::ring::tests::FakeRing;

    const FS: u32 = 2048;

    fn desc(addr: u64, len: u32) -> libc::xdp_desc {
        libc::xdp_desc {
            addr,
            len,
            options: 0,
        }
    }

    #[test]
    fn rx_descriptors_outside_their_receive_frame_are_refused_not_trusted() {
        let rx = 4 * u64::from(FS);
        assert_eq!(
            check_rx(256, 100, rx, FS),
            RxCheck::Packet {
                addr: 256,
                len: 100,
                frame: 0
            }
        );
        assert_eq!(
            check_rx(2048 + 256, 1792, rx, FS),
            RxCheck::Packet {
                addr: 2048 + 256,
                len: 1792,
                frame: 2048
            },
            "a packet filling its frame to the end"
        );
        assert_eq!(
            check_rx(2048 + 256, 1793, rx, FS),
            RxCheck::Bad { frame: 2048 },
            "one byte past its frame"
        );
        assert_eq!(check_rx(300, 0, rx, FS), RxCheck::Bad { frame: 0 }, "empty");
        assert_eq!(
            check_rx(100, u32::MAX, rx, FS),
            RxCheck::Bad { frame: 0 },
            "a huge length"
        );
        assert_eq!(check_rx(rx, 10, rx, FS), RxCheck::Lost, "a send frame");
        assert_eq!(check_rx(u64::MAX, u32::MAX, rx, FS), RxCheck::Lost);
    }

    #[test]
    fn umem_views_stay_inside_one_frame_of_the_region() {
        let mut umem = match Umem::new(4, FS) {
            Ok(u) => u,
            Err(e) => panic!("mapping a small UMEM: {e}"),
        };
        assert_eq!(umem.len(), 4 * 2048);
        assert_eq!((umem.frames(), umem.frame_size()), (4, FS));
        assert_eq!(umem.frame(0, 2048).map(<[u8]>::len), Some(2048));
        assert_eq!(
            umem.frame(3 * 2048 + 100, 1948).map(<[u8]>::len),
            Some(1948)
        );
        assert!(umem.frame(2047, 2).is_none(), "across two frames");
        assert!(umem.frame(4 * 2048, 1).is_none(), "past the end");
        assert!(umem.frame(u64::MAX, 1).is_none());
        assert!(umem.frame(100, usize::MAX).is_none(), "no overflow");
        if let Some(b) = umem.frame_mut(2048, 4) {
            b.copy_from_slice(b"abcd");
        }
        assert_eq!(umem.frame(2048, 4), Some(&b"abcd"[..]));
        assert!(umem.frame_mut(6000, 4000).is_none());
        // Why huge pages were or were not used is always said.
        match umem.huge_pages() {
            Ok(()) => {}
            Err(why) => assert!(why.contains("huge pages"), "{why}"),
        }
        assert!(Umem::new(3, FS).is_err(), "not a power of two");
        assert!(Umem::new(4, 1000).is_err(), "odd frame size");
        assert!(Umem::new(0, FS).is_err());
    }

    #[test]
    fn the_config_refuses_sizes_that_cannot_work() {
        assert!(XskConfig::default().validate().is_ok());
        let refused = |c: XskConfig, what: &str| match c.validate() {
            Err(XskError::Config(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("{what}: expected a config error, got {other:?}"),
        };
        let d = XskConfig::default;
        refused(
            XskConfig {
                frame_size: 1000,
                ..d()
            },
            "frame_size",
        );
        refused(
            XskConfig {
                frames: 3000,
                ..d()
            },
            "frames",
        );
        refused(XskConfig { rx_size: 3, ..d() }, "rx_size");
        refused(
            XskConfig {
                tx_frames: 5000,
                ..d()
            },
            "tx_frames",
        );
        refused(
            XskConfig {
                fill_size: 16,
                ..d()
            },
            "fill_size",
        );
        refused(
            XskConfig {
                comp_size: 16,
                ..d()
            },
            "comp_size",
        );
    }

    #[test]
    fn received_frames_go_back_to_the_fill_ring_only_after_the_handler() {
        let mut umem = match Umem::new(8, FS) {
            Ok(u) => u,
            Err(e) => panic!("mapping a small UMEM: {e}"),
        };
        let rx_ring = FakeRing::new(8, 0, desc(0, 0));
        let fill_ring = FakeRing::<u64>::new(8, u32::MAX - 2, 0);
        // Four receive frames (0..8192), four send frames.
        let mut path = RxPath {
            rx: rx_ring.consumer(),
            fill: fill_ring.producer(),
            rx_bytes: 4 * 2048,
            frame_size: FS,
        };
        path.fill_all();
        path.fill.publish();
        assert_eq!(fill_ring.kernel_consume(8), vec![0, 2048, 4096, 6144]);

        // The kernel writes two packets at the copy-mode headroom (256), then two
        // descriptors it should not have written.
        for (addr, bytes) in [(2048 + 256, b"hello"), (4096 + 256, b"world")] {
            if let Some(b) = umem.frame_mut(addr, 5) {
                b.copy_from_slice(bytes);
            }
        }
        let produced = rx_ring.kernel_produce(&[
            desc(2048 + 256, 5),
            desc(4096 + 256, 5),
            desc(6144 + 256, 4000),
            desc(5 * 2048, 10),
        ]);
        assert_eq!(produced, 4);

        let mut counters = XskCounters::default();
        let mut seen = Vec::new();
        let n = path.batch(&umem, &mut counters, 16, |bytes| {
            assert!(
                fill_ring.kernel_consume(8).is_empty(),
                "no frame is back on the fill ring while a handler runs"
            );
            seen.push(bytes.to_vec());
        });
        assert_eq!(n, 4, "every descriptor is consumed");
        assert_eq!(seen, vec![b"hello".to_vec(), b"world".to_vec()]);
        assert_eq!(counters.received, 2);
        assert_eq!(counters.invalid_descriptors, 2);
        assert_eq!(
            counters.lost_frames, 1,
            "the send frame cannot go to the fill ring"
        );
        assert_eq!(
            fill_ring.kernel_consume(8),
            vec![2048, 4096, 6144],
            "frames go back as their first byte, the bad one too"
        );
        assert_eq!(
            rx_ring.words[1].load(std::sync::atomic::Ordering::Relaxed),
            4
        );
        assert_eq!(path.batch(&umem, &mut counters, 16, |_| {}), 0, "empty now");
    }

    #[test]
    fn send_frames_cycle_through_the_tx_and_completion_rings() {
        let tx_ring = FakeRing::new(2, 0, desc(0, 0));
        let comp_ring = FakeRing::<u64>::new(4, 0, 0);
        let umem_len = 8 * 2048;
        let start = 4 * 2048;
        let mut path = TxPath::new(tx_ring.producer(), comp_ring.consumer(), start, 4, FS);
        let frames: Vec<u64> = std::iter::from_fn(|| path.take()).collect();
        assert_eq!(
            frames,
            vec![8192, 10240, 12288, 14336],
            "each send frame once"
        );

        assert_eq!(
            path.push(umem_len, 100, 10),
            Err(TxRefused::NotRented),
            "a receive frame"
        );
        assert_eq!(
            path.push(umem_len, frames[0], 2049),
            Err(TxRefused::NotRented),
            "longer than its frame"
        );
        assert_eq!(path.push(umem_len, frames[0], 0), Err(TxRefused::NotRented));
        assert_eq!(path.push(umem_len, frames[0], 60), Ok(()));
        assert_eq!(
            path.push(umem_len, frames[0], 60),
            Err(TxRefused::NotRented),
            "twice"
        );
        assert_eq!(
            path.push(umem_len, frames[1] + 14, 70),
            Ok(()),
            "at an offset"
        );
        assert_eq!(path.push(umem_len, frames[2], 80), Err(TxRefused::Full));
        assert!(path.discard(frames[3]), "an unsent frame goes back");
        assert!(!path.discard(frames[3]), "but only once");
        assert!(!path.discard(frames[0]), "not a frame in flight");

        assert!(
            tx_ring.kernel_consume(2).is_empty(),
            "nothing before the publish"
        );
        path.tx.publish();
        let sent: Vec<(u64, u32)> = tx_ring
            .kernel_consume(2)
            .iter()
            .map(|d| (d.addr, d.len))
            .collect();
        assert_eq!(sent, vec![(frames[0], 60), (frames[1] + 14, 70)]);
        assert_eq!(path.push(umem_len, frames[2], 80), Ok(()), "room again");

        // The kernel completes both, plus an address it never got (inside a frame in
        // flight) and one twice.
        comp_ring.kernel_produce(&[frames[0], frames[1] + 14, 12345, frames[0]]);
        let mut counters = XskCounters::default();
        assert_eq!(path.reclaim(&mut counters), 2);
        assert_eq!(counters.completions, 2);
        assert_eq!(counters.invalid_completions, 2);
        let mut free = path.free.clone();
        free.sort_unstable();
        assert_eq!(
            free,
            vec![frames[0], frames[1], frames[3]],
            "frames back whole"
        );
        assert_eq!(path.reclaim(&mut counters), 0);
    }

    // ---- As root, on a veth pair inside a namespace of the test's own ----

    /// Prefix of this module's namespaces and links: `mpx<pid><tag>`.
    const PREFIX: &str = "mpx";

    /// A namespace holding a veth pair `mpx<pid><tag>a` / `...b`, both up; `None` (with the
    /// reason printed) when not root.
    fn veth_lab(test: &str, tag: char) -> Option<(Netns, String, String)> {
        // SAFETY: plain getter.
        if unsafe { libc::geteuid() } != 0 {
            print_skip(
                test,
                &"needs root to create a network namespace and AF_XDP sockets",
            );
            return None;
        }
        let pid = std::process::id();
        let ns = Netns::new(PREFIX).unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (
            format!("{PREFIX}{pid}{tag}a"),
            format!("{PREFIX}{pid}{tag}b"),
        );
        for args in [
            &["link", "add", &a, "type", "veth", "peer", "name", &b][..],
            &["link", "set", &a, "up"],
            &["link", "set", &b, "up"],
        ] {
            ns.ip(args);
        }
        Some((ns, a, b))
    }

    fn index_of(name: &str) -> u32 {
        nix::net::if_::if_nametoindex(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    const MAGIC: &[u8; 8] = b"MPXSKTST";
    const DST_PORT: u16 = 40001;

    /// Writes frame `seq` into `buf`: Ethernet to the MAC of 239.255.0.1, IPv4 (header
    /// checksum right), UDP (no checksum) to port 40001, a payload of the magic, `seq` and
    /// a pattern of a length varying with `seq`. Returns its length.
    fn udp_frame(seq: u32, buf: &mut [u8]) -> usize {
        let payload = 12 + (seq as usize * 7) % 1200;
        let udp_len = 8 + payload;
        let ip_len = 20 + udp_len;
        let len = 14 + ip_len;
        let f = &mut buf[..len];
        f[0..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0x7f, 0x00, 0x01]);
        f[6..12].copy_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
        ip[8] = 1;
        ip[9] = 17;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&[10, 99, 0, 1]);
        ip[16..20].copy_from_slice(&[239, 255, 0, 1]);
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = (sum & 0xffff) + (sum >> 16);
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let udp = &mut f[34..];
        udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&DST_PORT.to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
        udp[8..16].copy_from_slice(MAGIC);
        udp[16..20].copy_from_slice(&seq.to_be_bytes());
        for (i, b) in udp[20..].iter_mut().enumerate() {
            *b = (i as u32 ^ seq) as u8;
        }
        len
    }

    /// An AF_PACKET socket seeing every frame arriving on `ifindex`, non-blocking, with a
    /// large receive buffer.
    fn packet_socket(ifindex: u32) -> OwnedFd {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain system call; checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        assert!(raw >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: a descriptor we just created.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the length passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "binding AF_PACKET: {}", io::Error::last_os_error());
        let size: libc::c_int = 16 << 20;
        // SAFETY: an int option of the size passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", io::Error::last_os_error());
        fd
    }

    /// Reads every frame waiting on `fd`; ours (by destination port and magic) go into
    /// `got` when byte for byte what was sent, else count in `bad`.
    fn drain(fd: &OwnedFd, got: &mut BTreeSet<u32>, bad: &mut usize) {
        let mut buf = [0u8; 2048];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                return;
            };
            classify(&buf[..n], got, bad);
        }
    }

    /// Puts frame `f` into `got` if it is one of ours (by destination port and magic) and
    /// byte for byte what was sent; counts it in `bad` if it is ours but damaged or a
    /// duplicate; ignores anything else (neighbour discovery and the like).
    fn classify(f: &[u8], got: &mut BTreeSet<u32>, bad: &mut usize) {
        let ours = f.len() >= 54
            && f[12..14] == [0x08, 0x00]
            && f[23] == 17
            && f[36..38] == DST_PORT.to_be_bytes()
            && &f[42..50] == MAGIC;
        if !ours {
            return;
        }
        let seq = u32::from_be_bytes([f[50], f[51], f[52], f[53]]);
        let mut want = [0u8; 2048];
        let len = udp_frame(seq, &mut want);
        if f != &want[..len] || !got.insert(seq) {
            *bad += 1;
        }
    }

    /// Asserts that frames `0..count` each arrived once and whole (`got`, with `bad`
    /// damaged or repeated); returns `xsk`'s counters and the kernel's statistics, both
    /// printed. `what` starts the messages.
    fn every_frame_arrived(
        test: &str,
        what: &str,
        xsk: &XdpSocket,
        count: u32,
        got: &BTreeSet<u32>,
        bad: usize,
    ) -> (XskCounters, XskStats) {
        let counters = xsk.counters();
        let stats = xsk
            .statistics()
            .unwrap_or_else(|e| panic!("XDP_STATISTICS: {e}"));
        eprintln!("{test}: {what}counters {counters:?}, kernel {stats:?}");
        assert_eq!(bad, 0, "{what}frames that arrived damaged or twice");
        let missing: Vec<u32> = (0..count).filter(|s| !got.contains(s)).take(10).collect();
        assert!(
            missing.is_empty(),
            "{what}{} of {count} missing, first {missing:?}",
            count as usize - got.len()
        );
        (counters, stats)
    }

    /// Sends frames `0..count` (see [`udp_frame`]) from `xsk`, a batch of at most 64 a
    /// round (small enough for a veth peer's backlog), calling `round` after each round
    /// to receive; ends once `round` says all arrived and every send frame is back, or
    /// after 20 s.
    fn send_frames(xsk: &mut XdpSocket, count: u32, mut round: impl FnMut() -> bool) {
        let frames = xsk.tx_free();
        let mut next = 0;
        let mut all_in = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(all_in && xsk.tx_free() == frames) && Instant::now() < deadline {
            let mut pushed = 0;
            while next < count && pushed < 64 {
                let Some((addr, buf)) = xsk.tx_frame() else {
                    break;
                };
                let len = udp_frame(next, buf);
                match xsk.tx_push(addr, len) {
                    Ok(()) => {}
                    Err(TxRefused::Full) => {
                        assert!(xsk.tx_discard(addr));
                        break;
                    }
                    Err(e) => panic!("pushing frame {next}: {e:?}"),
                }
                next += 1;
                pushed += 1;
            }
            xsk.tx_flush().unwrap_or_else(|e| panic!("kicking TX: {e}"));
            xsk.reclaim();
            all_in = round();
            if pushed == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn a_thousand_frames_sent_through_the_tx_ring_arrive_intact_on_the_peer() {
        const TEST: &str = "a_thousand_frames_sent_through_the_tx_ring_arrive_intact_on_the_peer";
        const COUNT: u32 = 1000;
        let Some((ns, a, b)) = veth_lab(TEST, 't') else {
            return;
        };
        ns.run(|| {
            let (ia, ib) = (index_of(&a), index_of(&b));
            let peer = packet_socket(ib);
            let config = XskConfig {
                frames: 1024,
                tx_frames: 512,
                rx_size: 512,
                tx_size: 512,
                fill_size: 512,
                comp_size: 512,
                ..XskConfig::default()
            };
            let mut xsk = XdpSocket::new(ia, 0, &config)
                .unwrap_or_else(|e| panic!("binding queue 0 of {a} with no XDP program: {e}"));
            eprintln!(
                "{TEST}: veth bound with no XDP program: zero-copy {} ({}), need_wakeup {} \
                 (fill flag {}, tx flag {}), huge pages {:?}",
                xsk.zero_copy(),
                xsk.zero_copy_refused().unwrap_or("-"),
                xsk.need_wakeup(),
                xsk.rx.fill.needs_wakeup(),
                xsk.tx.tx.needs_wakeup(),
                xsk.umem().huge_pages(),
            );
            assert_eq!(xsk.bound_to(), (ia, 0));
            assert!(
                xsk.zero_copy() || xsk.zero_copy_refused().is_some(),
                "copy mode under Auto always says why"
            );
            assert_eq!(xsk.tx_free(), 512);

            let mut got = BTreeSet::new();
            let mut bad = 0;
            send_frames(&mut xsk, COUNT, || {
                drain(&peer, &mut got, &mut bad);
                got.len() == COUNT as usize
            });
            let (counters, stats) = every_frame_arrived(TEST, "", &xsk, COUNT, &got, bad);
            assert_eq!(counters.sent, u64::from(COUNT));
            assert_eq!(
                counters.completions,
                u64::from(COUNT),
                "every frame completed"
            );
            assert_eq!(counters.invalid_completions, 0);
            assert_eq!(xsk.tx_free(), 512, "every send frame is back");
            assert_eq!(stats.tx_invalid_descs, 0);
            // With no XDP program on the interface, nothing reaches the RX ring.
            let readable = xsk
                .wait_readable(Some(Duration::from_millis(20)))
                .unwrap_or_else(|e| panic!("poll: {e}"));
            assert!(!readable);
            assert_eq!(xsk.rx_batch(64, |_| {}), 0);
        });
    }

    /// `ip link show dev NAME` in `ns` (a failure of `ip` fails the test, so that a
    /// check of what it shows never passes on empty output).
    fn link_show(ns: &Netns, name: &str) -> String {
        ns.ip(&["link", "show", "dev", name])
    }

    /// `XDP_FLAGS_SKB_MODE` (linux/if_link.h): generic XDP.
    const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    /// `XDP_FLAGS_DRV_MODE` (linux/if_link.h): the driver's native XDP.
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

    /// A hand-assembled XDP program for this module's receive test only (the project's
    /// program and its loader live elsewhere): every packet goes to the XSKMAP entry of
    /// its RX queue, or on to the kernel if there is none. Attached through a BPF link;
    /// closing the link detaches it.
    struct RedirectAll {
        /// Declared first: detaches before the program and map close.
        _link: OwnedFd,
        _prog: OwnedFd,
        _map: OwnedFd,
    }

    /// `bpf(cmd, attr)` with a 128-byte attribute block; the call's result.
    fn bpf(cmd: i32, attr: &mut [u32; 32]) -> io::Result<i64> {
        // SAFETY: `attr` is 128 readable and writable bytes, the size passed; the
        // commands used here read it (and the buffers it points to, alive for the call).
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128u32) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r)
    }

    /// `bpf(cmd, attr)` for a command that returns a new descriptor.
    fn bpf_fd(cmd: i32, attr: &mut [u32; 32]) -> io::Result<OwnedFd> {
        let fd = bpf(cmd, attr)?;
        // SAFETY: a descriptor the kernel just gave us, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// Writes a `u64` attribute at byte offset `off` (8-aligned) of `attr`.
    fn put64(attr: &mut [u32; 32], off: usize, v: u64) {
        attr[off / 4] = v as u32;
        attr[off / 4 + 1] = (v >> 32) as u32;
    }

    /// One eBPF instruction: opcode, registers, offset, immediate.
    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        u64::from(code)
            | u64::from(dst | (src << 4)) << 8
            | u64::from(off as u16) << 16
            | u64::from(imm as u32) << 32
    }

    impl RedirectAll {
        /// Attaches to `ifindex` in the mode `flags` names (`XDP_FLAGS_*_MODE`), steering
        /// queue 0 to `xsk`.
        fn attach(ifindex: u32, xsk: RawFd, flags: u32) -> io::Result<RedirectAll> {
            const MAP_CREATE: i32 = 0;
            const MAP_UPDATE_ELEM: i32 = 2;
            const PROG_LOAD: i32 = 5;
            const LINK_CREATE: i32 = 28;
            const MAP_TYPE_XSKMAP: u32 = 17;
            const PROG_TYPE_XDP: u32 = 6;
            const ATTACH_XDP: u32 = 37;
            const HELPER_REDIRECT_MAP: i32 = 51;
            const XDP_PASS: i32 = 2;

            let mut attr = [0u32; 32];
            attr[..4].copy_from_slice(&[MAP_TYPE_XSKMAP, 4, 4, 1]);
            let map = bpf_fd(MAP_CREATE, &mut attr)?;
            let (key, value) = (0u32, xsk as u32);
            let mut attr = [0u32; 32];
            attr[0] = map.as_raw_fd() as u32;
            put64(&mut attr, 8, (&raw const key) as u64);
            put64(&mut attr, 16, (&raw const value) as u64);
            bpf(MAP_UPDATE_ELEM, &mut attr)?;

            let code = [
                // r2 = ctx->rx_queue_index (struct xdp_md, offset 16)
                insn(0x61, 2, 1, 16, 0),
                // r1 = the map (a 64-bit immediate naming a map descriptor)
                insn(0x18, 1, 1, 0, map.as_raw_fd()),
                insn(0, 0, 0, 0, 0),
                // r3 = XDP_PASS, the action when the queue has no socket
                insn(0xb7, 3, 0, 0, XDP_PASS),
                // r0 = bpf_redirect_map(r1, r2, r3); return r0
                insn(0x85, 0, 0, 0, HELPER_REDIRECT_MAP),
                insn(0x95, 0, 0, 0, 0),
            ];
            let license = b"Dual MIT/GPL\0";
            let mut log = vec![0u8; 1 << 16];
            let mut attr = [0u32; 32];
            attr[0] = PROG_TYPE_XDP;
            attr[1] = code.len() as u32;
            put64(&mut attr, 8, code.as_ptr() as u64);
            put64(&mut attr, 16, license.as_ptr() as u64);
            attr[6] = 1; // log level
            attr[7] = log.len() as u32;
            put64(&mut attr, 32, log.as_mut_ptr() as u64);
            attr[17] = ATTACH_XDP; // expected_attach_type, byte offset 68
            let prog = bpf_fd(PROG_LOAD, &mut attr).map_err(|e| {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                io::Error::other(format!(
                    "loading the test XDP program: {e}: {}",
                    String::from_utf8_lossy(&log[..end])
                ))
            })?;

            let mut attr = [0u32; 32];
            attr[..4].copy_from_slice(&[prog.as_raw_fd() as u32, ifindex, ATTACH_XDP, flags]);
            let link = bpf_fd(LINK_CREATE, &mut attr)?;
            Ok(RedirectAll {
                _link: link,
                _prog: prog,
                _map: map,
            })
        }
    }

    #[test]
    fn frames_an_xdp_program_redirects_reach_the_handler_and_their_frames_are_reused() {
        const TEST: &str =
            "frames_an_xdp_program_redirects_reach_the_handler_and_their_frames_are_reused";
        const COUNT: u32 = 1000;
        let Some((ns, a, b)) = veth_lab(TEST, 'r') else {
            return;
        };
        // Generic (SKB) mode, then the veth driver's native mode: both steer into a
        // copy-mode socket, with no XDP program on the sending end.
        for (mode, flags, shows) in [
            ("generic", XDP_FLAGS_SKB_MODE, "xdpgeneric"),
            ("native", XDP_FLAGS_DRV_MODE, " xdp "),
        ] {
            ns.run(|| {
                let (ia, ib) = (index_of(&a), index_of(&b));
                // 128 receive frames for 1,000 packets: each frame is used several times.
                let rx_config = XskConfig {
                    frames: 256,
                    tx_frames: 128,
                    rx_size: 256,
                    tx_size: 128,
                    fill_size: 128,
                    comp_size: 128,
                    ..XskConfig::default()
                };
                let mut rx =
                    XdpSocket::new(ib, 0, &rx_config).unwrap_or_else(|e| panic!("{mode}: {e}"));
                let program = RedirectAll::attach(ib, rx.fd(), flags)
                    .unwrap_or_else(|e| panic!("{mode}: {e}"));
                let shown = link_show(&ns, &b);
                assert!(shown.contains(shows), "attached in {mode} mode: {shown}");
                let mut tx = XdpSocket::new(ia, 0, &small_config())
                    .unwrap_or_else(|e| panic!("{mode}: {e}"));
                eprintln!(
                    "{TEST}: {mode}: receiving socket: zero-copy {}, fill ring needs a wake-up {}",
                    rx.zero_copy(),
                    rx.rx.fill.needs_wakeup()
                );

                let mut got = BTreeSet::new();
                let mut bad = 0;
                send_frames(&mut tx, COUNT, || {
                    while rx.rx_batch(64, |frame| classify(frame, &mut got, &mut bad)) > 0 {}
                    got.len() == COUNT as usize
                });
                let what = format!("{mode}: ");
                let (counters, stats) = every_frame_arrived(TEST, &what, &rx, COUNT, &got, bad);
                assert!(counters.received >= u64::from(COUNT));
                assert_eq!((counters.invalid_descriptors, counters.lost_frames), (0, 0));
                assert_eq!((stats.rx_dropped, stats.rx_ring_full), (0, 0));
                drop(program);
                let shown = link_show(&ns, &b);
                assert!(
                    !shown.contains("xdp"),
                    "{mode}: closing the link detaches: {shown}"
                );
            });
        }
    }

    #[test]
    fn a_flush_on_a_downed_or_deleted_interface_is_an_error_not_a_retry() {
        const TEST: &str = "a_flush_on_a_downed_or_deleted_interface_is_an_error_not_a_retry";
        let Some((ns, a, _b)) = veth_lab(TEST, 'd') else {
            return;
        };
        ns.run(|| {
            let mut xsk =
                XdpSocket::new(index_of(&a), 0, &small_config()).unwrap_or_else(|e| panic!("{e}"));
            let push = |xsk: &mut XdpSocket| {
                let (addr, buf) = xsk.tx_frame().unwrap_or_else(|| panic!("a free frame"));
                let len = udp_frame(0, buf);
                assert_eq!(xsk.tx_push(addr, len), Ok(()));
            };
            push(&mut xsk);
            ns.ip(&["link", "set", &a, "down"]);
            let down = xsk.tx_flush();
            eprintln!("{TEST}: flush with the link down: {down:?}");
            assert_eq!(
                down.map_err(|e| e.raw_os_error()),
                Err(Some(libc::ENETDOWN))
            );
            ns.ip(&["link", "del", &a]);
            push(&mut xsk);
            let gone = xsk.tx_flush();
            eprintln!("{TEST}: flush with the link deleted: {gone:?}");
            assert_eq!(gone.map_err(|e| e.raw_os_error()), Err(Some(libc::ENXIO)));
        });
    }

    /// A UMEM of 64 frames, rings to match.
    fn small_config() -> XskConfig {
        XskConfig {
            frames: 64,
            tx_frames: 32,
            rx_size: 64,
            tx_size: 64,
            fill_size: 64,
            comp_size: 64,
            ..XskConfig::default()
        }
    }

    /// Clears capability `cap` from the calling thread's effective set (capabilities are
    /// per thread: the rest of the process keeps it).
    fn drop_effective_capability(cap: u32) -> io::Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget writes one header and two data structs, both provided.
        if unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
        // SAFETY: capset reads the header and two data structs, both provided.
        if unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a fresh thread without capability `cap`.
    fn without_capability<T: Send>(cap: u32, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                drop_effective_capability(cap).unwrap_or_else(|e| panic!("capset: {e}"));
                f()
            });
            match handle.join() {
                Ok(v) => v,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    const CAP_NET_RAW: u32 = 13;
    const CAP_IPC_LOCK: u32 = 14;

    #[test]
    fn without_cap_net_raw_the_error_names_the_capabilities() {
        const TEST: &str = "without_cap_net_raw_the_error_names_the_capabilities";
        // SAFETY: plain getter.
        if unsafe { libc::geteuid() } != 0 {
            print_skip(TEST, &"needs root (to drop a capability it has)");
            return;
        }
        let result = without_capability(CAP_NET_RAW, || XdpSocket::new(1, 0, &small_config()));
        match result {
            Err(e @ XskError::Permission { .. }) => {
                let msg = e.to_string();
                eprintln!("{TEST}: {msg}");
                assert!(msg.contains("CAP_NET_RAW") && msg.contains("root"), "{msg}");
            }
            other => panic!("expected a permission error, got {other:?}"),
        }
    }

    #[test]
    fn a_umem_past_the_memlock_limit_names_the_limit_and_the_fix() {
        const TEST: &str = "a_umem_past_the_memlock_limit_names_the_limit_and_the_fix";
        // SAFETY: plain getter.
        if unsafe { libc::geteuid() } != 0 {
            print_skip(TEST, &"needs root (to drop CAP_IPC_LOCK it has)");
            return;
        }
        // SAFETY: a plain all-zero rlimit is valid; getrlimit fills it.
        let mut lim: libc::rlimit = unsafe { mem::zeroed() };
        // SAFETY: `lim` is writable for the call.
        let r = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
        assert_eq!(r, 0);
        if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur > 256 << 20 {
            print_skip(
                TEST,
                &format!(
                    "RLIMIT_MEMLOCK is {} bytes: no UMEM of a test's size passes it",
                    lim.rlim_cur
                ),
            );
            return;
        }
        // Twice the limit, in 4096-byte frames.
        let frames = ((lim.rlim_cur * 2 / 4096) as u32)
            .next_power_of_two()
            .max(64);
        let config = XskConfig {
            frames,
            frame_size: 4096,
            tx_frames: frames / 2,
            fill_size: frames / 2,
            comp_size: frames / 2,
            ..XskConfig::default()
        };
        let result = without_capability(CAP_IPC_LOCK, || XdpSocket::new(1, 0, &config));
        match result {
            Err(e @ XskError::Memlock { .. }) => {
                let msg = e.to_string();
                eprintln!("{TEST}: {msg}");
                let limit = format!("{} KiB", lim.rlim_cur / 1024);
                assert!(msg.contains("ulimit -l") && msg.contains(&limit), "{msg}");
            }
            other => panic!("a {frames}-frame UMEM: expected a memlock error, got {other:?}"),
        }
    }

    #[test]
    fn binding_a_missing_queue_or_interface_says_which_and_why() {
        const TEST: &str = "binding_a_missing_queue_or_interface_says_which_and_why";
        let Some((ns, a, _b)) = veth_lab(TEST, 'q') else {
            return;
        };
        ns.run(|| {
            let ia = index_of(&a);
            let config = small_config();
            match XdpSocket::new(ia, 7, &config) {
                Err(e @ XskError::NoSuchQueue { .. }) => {
                    let msg = e.to_string();
                    eprintln!("{TEST}: {msg}");
                    assert!(msg.contains("queue 7") && msg.contains(&a), "{msg}");
                    assert!(msg.contains("channels"), "{msg}");
                }
                other => panic!("queue 7 of a veth: expected NoSuchQueue, got {other:?}"),
            }
            match XdpSocket::new(999_999, 0, &config) {
                Err(e @ XskError::NoSuchInterface { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains("999999"), "{msg}");
                }
                other => panic!("ifindex 999999: expected NoSuchInterface, got {other:?}"),
            }
            // Zero-copy, when required, is granted or refused with the reason.
            let require = XskConfig {
                zero_copy: ZeroCopy::Require,
                ..config.clone()
            };
            match XdpSocket::new(ia, 0, &require) {
                Ok(xsk) => assert!(xsk.zero_copy(), "required zero-copy but bound in copy mode"),
                Err(e @ XskError::ZeroCopyUnsupported { .. }) => {
                    eprintln!("{TEST}: {e}");
                    assert!(e.to_string().contains(&a));
                }
                Err(e) => panic!("required zero-copy: unexpected {e:?}"),
            }
            // Busy polling can be asked for on any socket (as root: past net.core.busy_poll).
            {
                let xsk = XdpSocket::new(ia, 0, &config).unwrap_or_else(|e| panic!("{e}"));
                let busy = xsk.set_busy_poll(20, 64);
                assert!(busy.is_ok(), "busy polling: {busy:?}");
            }
            // A second socket on a taken queue.
            let first = XdpSocket::new(ia, 0, &config).unwrap_or_else(|e| panic!("{e}"));
            match XdpSocket::new(ia, 0, &config) {
                Err(e @ XskError::QueueBusy { .. }) => eprintln!("{TEST}: {e}"),
                other => panic!("a second socket on queue 0: expected QueueBusy, got {other:?}"),
            }
            drop(first);
            // The kernel frees a closed socket's queue a little later: the bind waits.
            let t0 = Instant::now();
            let again = XdpSocket::new(ia, 0, &config);
            eprintln!(
                "{TEST}: binding again right after close took {:?}",
                t0.elapsed()
            );
            assert!(again.is_ok(), "a queue closed just before: {again:?}");
        });
    }
}
