//! Settings shared by publishers, shards and fan-outs: which network and I/O backend,
//! and how a shard idles.

use std::fmt;
use std::str::FromStr;

/// Which I/O engine to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring when it can be set up here, else the recvmmsg/sendmmsg fallback (the
    /// reason is logged and reported in the stats).
    #[default]
    Auto,
    /// io_uring or an error.
    Uring,
    /// The recvmmsg/sendmmsg fallback, even where io_uring works.
    Mmsg,
    /// AF_XDP (kernel bypass) on the interface and queues [`XdpConfig`] names, or an
    /// error naming what could not be set up. Never chosen by `Auto`: it takes over the
    /// interface's receive path for the subscribed groups, which only the operator may
    /// decide.
    Xdp,
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(BackendChoice::Uring),
            "mmsg" => Ok(BackendChoice::Mmsg),
            "xdp" | "af_xdp" | "af-xdp" => Ok(BackendChoice::Xdp),
            _ => Err(format!(
                "unknown backend {s:?}: use auto, uring, mmsg or xdp"
            )),
        }
    }
}

/// The I/O engine that actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// io_uring: batched submissions, multishot receive from a provided buffer ring.
    Uring,
    /// recvmmsg/sendmmsg.
    Mmsg,
    /// A simulated network ([`crate::io::sim`]), for tests.
    Sim,
    /// No network: a shared-memory ring ([`crate::ipc`]). Only reports say it; no shard
    /// or publisher runs on it (asked to, they take the mmsg path).
    Ipc,
    /// AF_XDP: raw frames from a UMEM shared with the kernel, steered there by an XDP
    /// program ([`crate::io::xdp`]).
    Xdp,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            BackendKind::Uring => "io_uring",
            BackendKind::Mmsg => "mmsg",
            BackendKind::Sim => "sim",
            BackendKind::Ipc => "ipc",
            BackendKind::Xdp => "af_xdp",
        })
    }
}

/// The network a publisher or shards make their sockets on.
#[derive(Debug, Clone, Default)]
pub enum Network {
    /// The host's: kernel sockets made through the control crate, on io_uring or the
    /// mmsg fallback as [`BackendChoice`] says.
    #[default]
    Host,
    /// A simulated network, which loses, reorders and corrupts as it was told to; the
    /// sim backend runs, whatever [`BackendChoice`] says.
    Sim(crate::io::sim::SimNet),
}

/// The backend in use and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// The engine.
    pub kind: BackendKind,
    /// Why: "forced by configuration", "io_uring available", or the reason io_uring could
    /// not be set up.
    pub reason: String,
}

impl fmt::Display for BackendInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind, self.reason)
    }
}

/// Where and how the AF_XDP backend ([`BackendChoice::Xdp`]) runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpConfig {
    /// The interface: its XDP program steers the subscribed groups to the shards'
    /// sockets, and the publisher's frames leave through it. Required (`Default` is an
    /// error: there is no route to choose by for raw frames).
    pub interface: multipoint_control::Interface,
    /// Receive queue of the first shard; shard `i` takes queue `queue + i`.
    pub queue: u32,
    /// Native (in the driver) or generic (after the kernel made an skb) XDP.
    pub mode: XdpMode,
    /// Zero-copy (the driver writes into the UMEM) or copy mode.
    pub zero_copy: XdpZeroCopy,
    /// UMEM frames per socket (a power of two, at least 64): a shard's socket lends them
    /// all to the kernel to receive into, a publisher's sends from them all.
    pub frames: u32,
    /// Bytes per UMEM frame: 2048 or 4096 (a frame holds one Ethernet frame).
    pub frame_size: u32,
    /// Descriptors of the RX ring (a shard's) or the TX ring (a publisher's), a power of
    /// two; the fill or completion ring holds every frame.
    pub ring_size: u32,
}

impl Default for XdpConfig {
    /// No interface (set one), queue 0, mode and zero-copy chosen by the driver, 8192
    /// frames of 2048 bytes (16 MiB, eight huge pages: 8 ms of a feed at a million
    /// datagrams a second), RX and TX rings of 4096.
    fn default() -> Self {
        XdpConfig {
            interface: multipoint_control::Interface::Default,
            queue: 0,
            mode: XdpMode::Auto,
            zero_copy: XdpZeroCopy::Auto,
            frames: 8192,
            frame_size: 2048,
            ring_size: 4096,
        }
    }
}

/// Which XDP attach mode to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native where the driver has it, else generic (the reason is reported).
    #[default]
    Auto,
    /// Native (driver) mode or an error.
    Native,
    /// Generic (SKB) mode, which every driver has.
    Generic,
}

impl FromStr for XdpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(XdpMode::Auto),
            "native" | "drv" => Ok(XdpMode::Native),
            "generic" | "skb" => Ok(XdpMode::Generic),
            _ => Err(format!(
                "unknown XDP mode {s:?}: use auto, native or generic"
            )),
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// Whether an AF_XDP socket binds in zero-copy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpZeroCopy {
    /// Zero-copy where the driver allows it, else copy mode (the reason is reported).
    #[default]
    Auto,
    /// Zero-copy or an error.
    Require,
    /// Copy mode, even where zero-copy works.
    Off,
}

impl FromStr for XdpZeroCopy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(XdpZeroCopy::Auto),
            "require" | "on" => Ok(XdpZeroCopy::Require),
            "off" | "copy" => Ok(XdpZeroCopy::Off),
            _ => Err(format!(
                "unknown zero-copy setting {s:?}: use auto, require or off"
            )),
        }
    }
}

/// What a thread does when it finds no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleStrategy {
    /// Busy-poll: lowest latency, burns a whole core. Never on a machine with fewer cores
    /// than busy threads.
    Spin,
    /// Poll, yielding the core to other threads between polls.
    Yield,
    /// Sleep in the kernel until work arrives (or a short timeout passes).
    #[default]
    Block,
    /// Poll without sleeping for [`BACKOFF_SPIN`] after the last work, then sleep like
    /// `Block`. A reply that comes back within the window (a request/response exchange,
    /// the next burst of a feed) finds the thread awake, so it skips the kernel wake-up
    /// (tens of microseconds in a VM); a quiet thread costs no CPU.
    Backoff,
}

/// How long [`IdleStrategy::Backoff`] keeps polling after the last work: about one
/// loopback round trip with a wake-up on each side in a VM.
pub const BACKOFF_SPIN: std::time::Duration = std::time::Duration::from_micros(100);

impl FromStr for IdleStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spin" => Ok(IdleStrategy::Spin),
            "yield" => Ok(IdleStrategy::Yield),
            "block" => Ok(IdleStrategy::Block),
            "backoff" => Ok(IdleStrategy::Backoff),
            _ => Err(format!(
                "unknown idle strategy {s:?}: use spin, yield, block or backoff"
            )),
        }
    }
}
