//! The data plane's one error type.

use std::io;

/// Everything that can go wrong in the data plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Creating or configuring a socket through the control crate failed.
    #[error(transparent)]
    Control(#[from] multipoint_control::Error),

    /// A MoldUDP64 value was refused (e.g. a session name that is not 1 to 10 printable
    /// ASCII characters).
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),

    /// Writing a latency interval log failed.
    #[error(transparent)]
    IntervalLog(#[from] crate::latency::IntervalLogError),

    /// io_uring was required (`BackendChoice::Uring`) but cannot be set up here.
    #[error(
        "io_uring is not available: {reason}; check kernel.io_uring_disabled and the \
         container's seccomp profile, or use the mmsg backend"
    )]
    UringUnavailable {
        /// Why setting up a ring failed.
        reason: String,
    },

    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A message longer than a packet can ever carry.
    #[error(
        "a {len}-byte message cannot fit in a {max_datagram}-byte datagram (at most {limit} \
         bytes): raise max_datagram or split the message"
    )]
    MessageTooLarge {
        /// The message's length.
        len: usize,
        /// The configured maximum datagram size.
        max_datagram: usize,
        /// The largest message that fits.
        limit: usize,
    },

    /// The subscription's handler panicked; the shard closed the subscription and went on
    /// with the others.
    #[error("the subscription's handler panicked on shard {shard}; the subscription was closed")]
    HandlerPanicked {
        /// The shard it ran on.
        shard: usize,
    },

    /// A shard failed (its receive backend kept failing, or its thread panicked) and
    /// takes no new subscriptions; those it served were told.
    #[error("shard {shard} failed and receives nothing more: {reason}")]
    ShardFailed {
        /// The shard.
        shard: usize,
        /// What failed.
        reason: String,
    },

    /// A shard thread is gone (it panicked or was shut down).
    #[error("shard {0} is not running")]
    ShardGone(usize),

    /// The fan-out was closed (or dropped): its leaves can no longer change.
    #[error("the fan-out is closed: its leaves can no longer change")]
    FanoutClosed,

    /// A fan-out leaf that is not (or no longer) there.
    #[error("leaf {0} is not a leaf of this fan-out (removed already?)")]
    NoSuchLeaf(u64),

    /// Every fan-out shard has as many leaves as it may.
    #[error("the fan-out already has its {max} leaves: raise shards or max_leaves_per_shard")]
    TooManyLeaves {
        /// Shards times leaves per shard.
        max: usize,
    },

    /// A leaf address the root's data socket cannot send to.
    #[error("cannot send to leaf {addr}: {reason}")]
    LeafAddress {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: &'static str,
    },

    /// The re-request server's socket could not be made or bound at its address.
    #[error(
        "cannot serve re-requests at {addr}: {source}; give an address of this host that \
         no other socket is bound to (another publisher serving there?)"
    )]
    RerequestBind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },

    /// A system call on a local address failed: binding a socket to it (`EADDRINUSE`:
    /// another socket holds it; `EADDRNOTAVAIL`: not an address of this host).
    #[error("{op} {addr}: {source}")]
    IoAt {
        /// What was being done: `binding a UDP data socket to`.
        op: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },

    /// A system call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }

    pub(crate) fn io_at(
        op: &'static str,
        addr: std::net::SocketAddr,
    ) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::IoAt { op, addr, source }
    }
}

/// The data plane's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
