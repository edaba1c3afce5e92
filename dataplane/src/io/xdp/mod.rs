//! AF_XDP: kernel bypass behind the transport seam.
//!
//! An XDP program (`program`, built from `dataplane/bpf/steer.c`) runs at the
//! interface's driver (native mode) or right after the kernel made an skb (generic
//! mode). It looks up each UDP packet's destination address and port in a map of the
//! subscribed groups and redirects those to the AF_XDP socket of the packet's receive
//! queue; everything else (ARP, ping, TCP, other groups, other ports) passes to the
//! kernel untouched. One program serves an interface for one [`Shards`](crate::Shards):
//! shard `i` owns the socket of queue `XdpConfig::queue + i`.
//!
//! Each socket (`socket`) owns a UMEM (`umem`): frames allocated up front (on huge pages
//! when the host has them), all lent to the kernel through the fill ring for receiving
//! (a shard's) or all kept for sending (a publisher's). The four rings (`ring`) are
//! single-producer, single-consumer queues shared with the kernel.
//!
//! - **Receive** (`recv`): a batch of RX descriptors is read at once; each frame's
//!   Ethernet, IP and UDP headers are checked ([`crate::wire::frame`]) before its
//!   MoldUDP64 payload goes to the sink in place, and the frame goes back to the fill
//!   ring once the sink returned (the buffer ring's zero-copy contract). A frame that
//!   fails a check is counted by reason and dropped. A subscription's other sockets
//!   (its re-request socket) are not steered: they are read with `recvmmsg` beside the
//!   AF_XDP socket.
//! - **Send** (`send`): the publisher's packets are copied into free TX frames behind
//!   Ethernet, IP and UDP headers built once per destination; a flush hands the batch
//!   to the kernel with one `sendto` kick, and completions give the frames back.
//! - **Lifetime**: the program is attached through a BPF link, which the kernel owns
//!   through a file descriptor of this process: closing it (on drop, or when the process
//!   dies in any way) detaches the program, so that the interface is left as it was.

pub(crate) mod program;
pub(crate) mod recv;
pub(crate) mod ring;
pub(crate) mod send;
pub(crate) mod socket;
pub(crate) mod umem;

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use multipoint_control::{Interface, InterfaceInfo};

use crate::error::{Error, Result};

/// The interface an XDP backend runs on, looked up in the calling thread's network
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Iface {
    /// Its name (what `ip link` shows).
    pub(crate) name: String,
    /// Its index.
    pub(crate) index: u32,
    /// Its MAC address (the source of the frames sent).
    pub(crate) mac: Option<[u8; 6]>,
    /// Its addresses (a frame's source address is the first of the group's family).
    pub(crate) addrs: Vec<IpAddr>,
}

impl Iface {
    /// Looks `interface` up.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the interface when it is not given or not there.
    pub(crate) fn lookup(interface: &Interface) -> Result<Iface> {
        let info: InterfaceInfo = interface.lookup().map_err(|e| {
            Error::Config(format!(
                "the XDP backend needs an interface (--iface NAME): {e}"
            ))
        })?;
        Ok(Iface {
            name: info.name,
            index: info.index,
            mac: info.hw_addr,
            addrs: info.addrs,
        })
    }

    /// The interface's first address of `ip`'s family, for frames to `ip`; IPv6 prefers
    /// a link-local address for a link-scoped group and a global one otherwise.
    pub(crate) fn source_for(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(_) => self.addrs.iter().copied().find(IpAddr::is_ipv4),
            IpAddr::V6(group) => {
                let link_scoped = group.segments()[0] & 0xff0f == 0xff02;
                let v6 = || {
                    self.addrs.iter().filter_map(|a| match a {
                        IpAddr::V6(v6) => Some(*v6),
                        IpAddr::V4(_) => None,
                    })
                };
                let is_link_local = |a: &std::net::Ipv6Addr| a.segments()[0] & 0xffc0 == 0xfe80;
                v6().find(|a| is_link_local(a) == link_scoped)
                    .or_else(|| v6().next())
                    .map(IpAddr::V6)
            }
        }
    }
}

/// How the AF_XDP socket of one shard (or a publisher) was set up: what the driver and
/// the host allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XdpSetup {
    /// The interface's name.
    pub interface: String,
    /// The first queue (shard `i` is on `queue + i`).
    pub queue: u32,
    /// "native" or "generic (skb)".
    pub mode: String,
    /// Why native mode was not used, when it was asked for by `auto` and refused.
    pub native_refused: Option<String>,
    /// Whether the sockets bound in zero-copy mode.
    pub zero_copy: bool,
    /// Why zero-copy was not used, when it was not.
    pub copy_reason: Option<String>,
    /// Whether the UMEM is on huge pages.
    pub huge_pages: bool,
    /// Why not, when not.
    pub huge_pages_reason: Option<String>,
    /// The XDP program's id (what `ip link` and `bpftool prog` show), 0 when sending only.
    pub program_id: u32,
    /// Whether the sockets busy-poll (a spinning shard drives the driver's receive).
    pub busy_poll: bool,
}

/// How long a busy-polling socket's calls poll the driver (`SO_BUSY_POLL`), in µs.
const BUSY_POLL_USECS: u32 = 20;
/// Packets one busy poll may take (`SO_BUSY_POLL_BUDGET`).
const BUSY_POLL_BUDGET: u32 = 64;

impl fmt::Display for XdpSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} queue {}, {} mode",
            self.interface, self.queue, self.mode
        )?;
        if let Some(why) = &self.native_refused {
            write!(f, " (native refused: {why})")?;
        }
        if self.zero_copy {
            f.write_str(", zero-copy")?;
        } else {
            f.write_str(", copy mode")?;
            if let Some(why) = &self.copy_reason {
                write!(f, " ({why})")?;
            }
        }
        if self.busy_poll {
            f.write_str(", busy polling")?;
        }
        if self.huge_pages {
            f.write_str(", UMEM on huge pages")
        } else {
            f.write_str(", UMEM on normal pages")?;
            match &self.huge_pages_reason {
                Some(why) => write!(f, " ({why})"),
                None => Ok(()),
            }
        }
    }
}

/// What the AF_XDP receive path of a [`Shards`](crate::Shards) did, summed over its
/// shards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XdpStats {
    /// How it was set up.
    pub setup: XdpSetup,
    /// RX descriptors read (frames the program redirected to the sockets).
    pub frames: u64,
    /// Frames whose UDP payload went to a subscription.
    pub delivered: u64,
    /// Frames that passed every check but are for no subscription of the shard (a group
    /// just left, or subscribed on another shard's queue), dropped.
    pub not_subscribed: u64,
    /// RX descriptors whose address or length lay outside the UMEM, dropped.
    pub invalid_descriptors: u64,
    /// Frames dropped by the header checks, by reason (each reason's name and count;
    /// every reason is listed, zero or not).
    pub discards: Vec<(&'static str, u64)>,
    /// The kernel's count of frames it dropped for the sockets (`XDP_STATISTICS`
    /// `rx_dropped`: no room, or a bad frame).
    pub kernel_rx_dropped: u64,
    /// Frames the kernel could not put on a full RX ring.
    pub kernel_rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub kernel_fill_ring_empty: u64,
    /// RX descriptors the kernel found invalid.
    pub kernel_rx_invalid: u64,
    /// What the XDP program did with the interface's packets (summed over CPUs): handed
    /// to a socket, ...
    pub program_redirected: u64,
    /// ... subscribed but with no socket on their queue (passed to the kernel), ...
    pub program_no_socket: u64,
    /// ... not for a subscribed group (passed), ...
    pub program_not_ours: u64,
    /// ... cut short before the UDP port and not to a subscribed address (passed), ...
    pub program_short: u64,
    /// ... and non-first fragments not to a subscribed address (passed).
    pub program_fragment: u64,
}

impl XdpStats {
    /// Frames dropped by the header checks, all reasons together.
    pub fn discarded(&self) -> u64 {
        self.discards.iter().map(|&(_, n)| n).sum()
    }

    /// Adds `other`'s counters to these (the setup stays this one's).
    pub fn merge(&mut self, other: &XdpStats) {
        self.frames += other.frames;
        self.delivered += other.delivered;
        self.not_subscribed += other.not_subscribed;
        self.invalid_descriptors += other.invalid_descriptors;
        for &(name, n) in &other.discards {
            match self.discards.iter_mut().find(|(k, _)| *k == name) {
                Some((_, m)) => *m += n,
                None => self.discards.push((name, n)),
            }
        }
        self.kernel_rx_dropped += other.kernel_rx_dropped;
        self.kernel_rx_ring_full += other.kernel_rx_ring_full;
        self.kernel_fill_ring_empty += other.kernel_fill_ring_empty;
        self.kernel_rx_invalid += other.kernel_rx_invalid;
        self.program_redirected += other.program_redirected;
        self.program_no_socket += other.program_no_socket;
        self.program_not_ours += other.program_not_ours;
        self.program_short += other.program_short;
        self.program_fragment += other.program_fragment;
    }
}

/// What a publisher's AF_XDP send path did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XdpSendStats {
    /// How it was set up.
    pub setup: XdpSetup,
    /// Frames put on the TX ring.
    pub frames: u64,
    /// Frames the kernel reported sent (completion ring).
    pub completed: u64,
    /// Times a flush found no free TX frame and waited for completions.
    pub waits: u64,
    /// Packets given up after waiting a second for a free frame.
    pub dropped: u64,
    /// Kicks (`sendto`) the kernel refused with an error (the interface down or gone);
    /// the frames stay on the ring for the next kick.
    pub kick_errors: u64,
    /// TX descriptors the kernel found invalid (`XDP_STATISTICS`).
    pub kernel_tx_invalid: u64,
}

/// The settings of one AF_XDP socket: a shard's (`receiving`) or a publisher's. A shard
/// only receives and a publisher only sends, so every frame of the UMEM goes to the one
/// direction (the other direction's rings stay, small and unused).
fn xsk_config(c: &crate::config::XdpConfig, receiving: bool) -> socket::XskConfig {
    const UNUSED_RING: u32 = 64;
    let (rx_frames, tx_frames) = if receiving {
        (c.frames, 0)
    } else {
        (0, c.frames)
    };
    socket::XskConfig {
        frames: c.frames,
        frame_size: c.frame_size,
        rx_size: if receiving { c.ring_size } else { UNUSED_RING },
        // A sender's TX ring holds every frame, so that a free frame always has a place
        // on it.
        tx_size: if receiving { UNUSED_RING } else { c.frames },
        fill_size: rx_frames.max(UNUSED_RING),
        comp_size: tx_frames.max(UNUSED_RING),
        zero_copy: match c.zero_copy {
            crate::config::XdpZeroCopy::Auto => socket::ZeroCopy::Auto,
            crate::config::XdpZeroCopy::Require => socket::ZeroCopy::Require,
            crate::config::XdpZeroCopy::Off => socket::ZeroCopy::Copy,
        },
        need_wakeup: true,
        tx_frames,
    }
}

/// What the shards of one [`Shards`](crate::Shards) (or one publisher) on AF_XDP share:
/// the interface, the settings, the XDP program (receiving only), how the sockets were
/// set up, and each shard's counters.
pub(crate) struct XdpShared {
    pub(crate) iface: Iface,
    pub(crate) config: crate::config::XdpConfig,
    pub(crate) program: Option<std::sync::Arc<std::sync::Mutex<program::SteerProgram>>>,
    setup: std::sync::Mutex<XdpSetup>,
    /// Sockets bound so far.
    sockets: AtomicU64,
    pub(crate) counters: Vec<std::sync::Arc<recv::XdpCounters>>,
}

impl XdpShared {
    /// Looks up the interface and, for `shards` receiving shards, attaches the XDP
    /// program to it (`shards` 0: sending only, no program).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for settings that cannot work, [`Error::XdpUnavailable`] when
    /// the program cannot be attached.
    pub(crate) fn open(config: &crate::config::XdpConfig, shards: usize) -> Result<XdpShared> {
        // The sockets' settings, checked before anything is set up.
        xsk_config(config, shards > 0)
            .validate()
            .map_err(|e| Error::Config(format!("XDP settings: {e}")))?;
        if config.frames < 64 {
            return Err(Error::Config(format!(
                "XDP frames {} is fewer than 64",
                config.frames
            )));
        }
        let iface = Iface::lookup(&config.interface)?;
        let mut setup = XdpSetup {
            interface: iface.name.clone(),
            queue: config.queue,
            ..XdpSetup::default()
        };
        let program = if shards > 0 {
            let program = program::SteerProgram::attach(&iface.name, config.mode).map_err(|e| {
                Error::XdpUnavailable {
                    interface: iface.name.clone(),
                    reason: e.to_string(),
                }
            })?;
            setup.mode = program.mode().to_string();
            setup.native_refused = program.native_refused().map(str::to_owned);
            setup.program_id = program.program_id();
            Some(std::sync::Arc::new(std::sync::Mutex::new(program)))
        } else {
            setup.mode = "none (send only: no program)".into();
            None
        };
        Ok(XdpShared {
            iface,
            config: config.clone(),
            program,
            setup: std::sync::Mutex::new(setup),
            sockets: AtomicU64::new(0),
            counters: (0..shards).map(|_| std::sync::Arc::default()).collect(),
        })
    }

    /// Binds an AF_XDP socket on `queue` (from the calling thread, a shard's), noting how
    /// it was set up. With `busy_poll` (a spinning thread), the socket asks the kernel to
    /// run the driver's receive from the thread's own calls rather than from interrupts
    /// (`SO_PREFER_BUSY_POLL`).
    ///
    /// # Errors
    ///
    /// The socket could not be set up; the error names the cause and the fix.
    pub(crate) fn socket(&self, queue: u32, busy_poll: bool) -> std::io::Result<socket::XdpSocket> {
        let xsk = xsk_config(&self.config, self.program.is_some());
        let socket = socket::XdpSocket::new(self.iface.index, queue, &xsk)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", self.iface.name)))?;
        let mut setup = self
            .setup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if busy_poll {
            match socket.set_busy_poll(BUSY_POLL_USECS, BUSY_POLL_BUDGET) {
                Ok(()) => setup.busy_poll = true,
                Err(e) => tracing::warn!(error = %e, "AF_XDP busy polling refused"),
            }
        }
        // With several shards: zero-copy and huge pages only if every socket has them,
        // and the first reason why not.
        let first = self.sockets.fetch_add(1, Ordering::Relaxed) == 0;
        setup.zero_copy = socket.zero_copy() && (first || setup.zero_copy);
        if setup.copy_reason.is_none() {
            setup.copy_reason = socket.zero_copy_refused().map(str::to_owned);
        }
        match socket.umem().huge_pages() {
            Ok(()) => setup.huge_pages = first || setup.huge_pages,
            Err(why) => {
                if setup.huge_pages_reason.is_none() {
                    tracing::info!(reason = %why, "AF_XDP UMEM on normal pages");
                    setup.huge_pages_reason = Some(why.to_owned());
                }
                setup.huge_pages = false;
            }
        }
        Ok(socket)
    }

    /// How the sockets were set up.
    pub(crate) fn setup(&self) -> XdpSetup {
        self.setup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The receive counters of every shard, summed, with the setup.
    pub(crate) fn stats(&self) -> XdpStats {
        let mut total = XdpStats {
            setup: self.setup(),
            ..XdpStats::default()
        };
        for c in &self.counters {
            total.merge(&c.snapshot());
        }
        if let Some(program) = &self.program {
            let c = program
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .counters();
            total.program_redirected = c.redirected;
            total.program_no_socket = c.no_socket;
            total.program_not_ours = c.not_ours;
            total.program_short = c.short;
            total.program_fragment = c.fragment;
        }
        total
    }
}
