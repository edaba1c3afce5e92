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
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(BackendChoice::Uring),
            "mmsg" => Ok(BackendChoice::Mmsg),
            _ => Err(format!("unknown backend {s:?}: use auto, uring or mmsg")),
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
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            BackendKind::Uring => "io_uring",
            BackendKind::Mmsg => "mmsg",
            BackendKind::Sim => "sim",
            BackendKind::Ipc => "ipc",
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
