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

    /// The AF_XDP backend was asked for (`BackendChoice::Xdp`) but cannot be set up on
    /// this interface; `reason` names the cause and the fix (a missing capability, a
    /// driver that refuses, the locked-memory limit, another XDP program in the way).
    #[error("the XDP backend cannot run on {interface}: {reason}")]
    XdpUnavailable {
        /// The interface, as it was named.
        interface: String,
        /// What failed and how to fix it.
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

    /// An IPC ring name that cannot name a file in `/dev/shm`.
    #[error("invalid IPC ring name {name:?}: {reason}")]
    IpcName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// No IPC ring of that name.
    #[error(
        "no IPC ring at {path}: is its writer running (`multipoint sub --publish-ipc NAME`, \
         `multipoint pub --ipc NAME`, or an `IpcWriter`), and under this name?"
    )]
    IpcNotFound {
        /// The file looked for.
        path: std::path::PathBuf,
    },

    /// The file is not readable by this user.
    #[error(
        "no permission to read the IPC ring {path}: run as its writer's user, or have the \
         writer create it readable by others (`IpcConfig::mode`)"
    )]
    IpcPermission {
        /// The file.
        path: std::path::PathBuf,
    },

    /// The file is not a multipoint IPC ring (its first bytes are not the ring's magic).
    #[error("{path} is not a multipoint IPC ring (bad magic): another program's file?")]
    IpcNotARing {
        /// The file.
        path: std::path::PathBuf,
    },

    /// The ring was written by another version of multipoint.
    #[error(
        "the IPC ring {path} has layout version {found}, this build reads version \
         {expected}: run reader and writer from the same multipoint version"
    )]
    IpcVersion {
        /// The file.
        path: std::path::PathBuf,
        /// Its version.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },

    /// The ring's header describes a layout this version never writes.
    #[error("the IPC ring {path} has a layout this build does not read: {reason}")]
    IpcLayout {
        /// The file.
        path: std::path::PathBuf,
        /// What differs.
        reason: String,
    },

    /// Another live process writes the ring of that name.
    #[error(
        "the IPC ring {path} is written by process {pid}, which is alive: one writer per \
         name; choose another name or stop that process"
    )]
    IpcInUse {
        /// The file.
        path: std::path::PathBuf,
        /// The writer's process id.
        pid: u32,
    },

    /// A message larger than the ring takes.
    #[error(
        "a {len}-byte message does not fit an IPC ring of {capacity} bytes (at most \
         {limit}): raise IpcConfig::capacity"
    )]
    IpcMessageTooLarge {
        /// The message's length.
        len: usize,
        /// The ring's capacity.
        capacity: usize,
        /// The largest message it takes.
        limit: usize,
    },

    /// A system call on an IPC ring's file failed.
    #[error("{op} {path}: {source}")]
    IpcIo {
        /// What was being done: `creating`, `mapping`...
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
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
