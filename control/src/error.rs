//! The crate's one error type.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::transport::Transport;

/// Everything that can go wrong in the control crate.
///
/// Each message says what happened and, where it can, what to do about it. Failures the
/// kernel reports for a known reason get their own variant; any other OS error arrives
/// as [`Error::Os`] with the operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The group given to a join, or the destination of a group send, is not a
    /// multicast address.
    #[error(
        "{addr} is not a multicast address: use a group in 224.0.0.0/4 (IPv4) or ff00::/8 \
         (IPv6); 239.0.0.0/8 and ff15::/16 are for use inside an organisation"
    )]
    NotMulticast {
        /// The address that was given.
        addr: IpAddr,
    },

    /// An address of one family was given to a socket of the other.
    #[error(
        "{addr} is an {} address but this socket's transport is {transport}: use a \
         {} socket for it",
        family(addr),
        if addr.is_ipv4() { "udp4-multicast" } else { "udp6-multicast" }
    )]
    WrongFamily {
        /// The address that was given.
        addr: IpAddr,
        /// The socket's transport.
        transport: Transport,
    },

    /// The socket already holds a membership that covers this join.
    #[error(
        "this socket is already a member of group {group}{}: keep the membership you have, \
         or leave it before joining again",
        SourceSuffix(*src)
    )]
    AlreadyMember {
        /// The group of the join.
        group: IpAddr,
        /// The source of a source-specific join, if any.
        src: Option<IpAddr>,
    },

    /// A leave named a membership the socket does not hold (never joined, already left,
    /// or the socket was closed, which leaves every group).
    #[error(
        "this socket is not a member of group {group}{}: nothing to leave (it was never \
         joined, was already left, or the socket is closed)",
        SourceSuffix(*src)
    )]
    NotMember {
        /// The group that was named.
        group: IpAddr,
        /// The source that was named, if any.
        src: Option<IpAddr>,
    },

    /// The interface named for sending or joining does not exist here (or has no
    /// address of the socket's family).
    #[error(
        "no interface {interface} on this host{}: list the interfaces with `ip -br addr` \
         and name one that exists and is up",
        if reason.is_empty() { String::new() } else { format!(" ({reason})") }
    )]
    UnknownInterface {
        /// The interface as it was named (address, index or name).
        interface: String,
        /// More detail, or empty.
        reason: &'static str,
    },

    /// The kernel refused another membership or source filter: a per-socket limit set by
    /// a sysctl was reached.
    #[error(
        "cannot join group {group}: this socket reached the kernel's limit of {} set by \
         {sysctl}; raise it (`sysctl -w {sysctl}=N`, as root) or spread the groups over more \
         sockets",
        limit.map_or_else(|| "memberships".to_owned(), |l| l.to_string())
    )]
    MembershipLimit {
        /// The group whose join was refused.
        group: IpAddr,
        /// The sysctl that sets the limit.
        sysctl: &'static str,
        /// The limit in force, when it could be read.
        limit: Option<u64>,
    },

    /// The socket was created with a role its transport's plane does not have.
    #[error(
        "{role} is not allowed on {transport}: its {plane} plane is {}; IP multicast takes \
         only C_LEAF|D_LEAF, and a root needs a transport whose {plane} plane is rooted \
         (see `transports()`)",
        if *plane == "control" { transport.info().control_plane } else { transport.info().data_plane }
    )]
    RoleNotAllowed {
        /// The transport the socket was to be created on.
        transport: Transport,
        /// The offending role, `C_ROOT` or `D_ROOT`.
        role: &'static str,
        /// The plane the role belongs to, `control` or `data`.
        plane: &'static str,
    },

    /// The socket type does not fit the transport and roles: IP multicast sockets are
    /// [`MultipointSocket`](crate::MultipointSocket)s (`C_LEAF|D_LEAF`); the rooted
    /// transports take a [`rooted::Root`](crate::rooted::Root) (`C_ROOT`) or a
    /// [`rooted::Leaf`](crate::rooted::Leaf) (`C_LEAF|D_LEAF`).
    #[error(
        "{transport} with {roles} does not fit here: {wanted}; IP multicast sockets are \
         MultipointSocket (C_LEAF|D_LEAF), rooted transports take rooted::Root (C_ROOT) or \
         rooted::Leaf (C_LEAF|D_LEAF)"
    )]
    WrongSocketKind {
        /// The transport that was asked for.
        transport: Transport,
        /// The roles that were asked for.
        roles: crate::Roles,
        /// What the socket type takes.
        wanted: &'static str,
    },

    /// The other side of a rooted join said no.
    #[error("{peer} refused the join: {reason}")]
    Refused {
        /// The root (for a leaf's join) or the leaf (for a root's invitation).
        peer: SocketAddr,
        /// The reason it gave.
        reason: String,
    },

    /// A join of this socket is already on its way; rooted sockets take one at a time.
    #[error("another join_leaf of this socket is still pending: wait for its answer first")]
    JoinPending,

    /// A rooted leaf that is in a session was asked to join again.
    #[error(
        "this leaf is already a member of a session: leave it (LeafSession::leave) before \
         joining again"
    )]
    AlreadyJoined,

    /// A rooted root or leaf was asked to listen a second time.
    #[error("this socket already listens at {addr}")]
    AlreadyListening {
        /// Where it listens.
        addr: SocketAddr,
    },

    /// The other side of a rooted session did not connect or answer in time.
    #[error("timed out {what} at {peer}: is it running and reachable?")]
    TimedOut {
        /// What was being waited for.
        what: &'static str,
        /// The other side.
        peer: SocketAddr,
    },

    /// The connection to the other side ended while a join waited for its answer.
    #[error("the session with {peer} ended before the join was answered: {reason}")]
    SessionGone {
        /// The other side.
        peer: SocketAddr,
        /// What ended it.
        reason: String,
    },

    /// The rooted socket was closed (its driver thread stopped).
    #[error("the rooted socket is closed")]
    SessionClosed,

    /// A call that waits for the rooted socket's driver thread was made from a hook,
    /// which runs on that thread.
    #[error(
        "{op} cannot be called from a root hook (hooks run on the root's driver thread, \
         which the call would wait for): call it from another thread"
    )]
    InsideHook {
        /// The call.
        op: &'static str,
    },

    /// A setting is out of its range.
    #[error("{what}")]
    BadSetting {
        /// What is wrong, with the range.
        what: String,
    },

    /// A root's leaf handle names a leaf that is no longer in the session.
    #[error("leaf#{leaf} is no longer in the session: it left, timed out or was removed")]
    LeafGone {
        /// The leaf's identifier.
        leaf: u64,
    },

    /// A transport name that is not in the catalog.
    #[error(
        "unknown transport {name:?}: the known transports are udp4-multicast, udp6-multicast, \
         rooted-unicast and admitted-multicast"
    )]
    UnknownTransport {
        /// The name that was given.
        name: String,
    },

    /// A receiving join names a port the socket cannot receive on.
    #[error(
        "this socket receives on port {bound} but the group is on port {group}: a socket \
         receives on one port; create another socket for the other port{}",
        if *group == 0 { " (port 0 is no port to receive on: name the group's port)" } else { "" }
    )]
    PortMismatch {
        /// The port the socket is bound to (0 if unbound).
        bound: u16,
        /// The port of the group.
        group: u16,
    },

    /// A send through a membership that was joined receive-only.
    #[error(
        "the membership of group {group} was joined receive-only: join with \
         Direction::SenderOnly or Direction::Both to send to it"
    )]
    ReceiveOnly {
        /// The group of the membership.
        group: IpAddr,
    },

    /// A socket option was set but reading it back gave another value.
    #[error(
        "setting {option} to {wanted} did not take: the kernel reports {actual}; this kernel \
         may not support the option"
    )]
    NotApplied {
        /// The option, as the kernel names it.
        option: &'static str,
        /// The value that was set.
        wanted: String,
        /// The value read back.
        actual: String,
    },

    /// A pre-shared key for authenticated admission cannot be used: its file is not
    /// private to its owner, cannot be read, or holds no key of the allowed length.
    #[error(
        "{}{why}",
        path.as_ref().map_or_else(String::new, |p| format!("key file {}: ", p.display()))
    )]
    BadKey {
        /// The key file, if the key came from one.
        path: Option<PathBuf>,
        /// What is wrong, and what to do.
        why: String,
    },

    /// A leaf with a pre-shared key did not take an admission: the root did not prove it
    /// holds the same key. The leaf left at once.
    #[error("authentication failed: the root at {peer} {why}")]
    AuthenticationFailed {
        /// The root.
        peer: SocketAddr,
        /// What the root did wrong.
        why: &'static str,
    },

    /// A system call on an address failed: binding a socket to it or listening on it
    /// (`EADDRINUSE`: another socket holds it; `EADDRNOTAVAIL`: not an address of this
    /// host), connecting to a root or leaf there (`ECONNREFUSED`: nobody listens).
    #[error("{op} {addr}: {source}")]
    OsAt {
        /// What was being done: `binding`, `listening for leaves on`, `connecting to the
        /// root`.
        op: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },

    /// Receiving a group needs its port, and another socket of this host holds that port
    /// without `SO_REUSEADDR` (a unicast socket, or a program that does not share it).
    #[error(
        "binding {addr} to receive {group}: {source}; another socket of this host holds port \
         {} without sharing it (`ss -uanp 'sport = :{}'` shows which): stop it or choose \
         another port", addr.port(), addr.port()
    )]
    GroupPortTaken {
        /// The group and port joined.
        group: SocketAddr,
        /// The address bound to receive it (the wildcard address and the group's port).
        addr: SocketAddr,
        /// The kernel's `EADDRINUSE`.
        #[source]
        source: io::Error,
    },

    /// Any other failure of a system call.
    #[error("{op} failed: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an OS error with the operation that failed.
    pub(crate) fn os(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Os { op, source }
    }

    /// Wraps an OS error with the operation that failed and the address it was on.
    pub(crate) fn os_at(op: &'static str, addr: SocketAddr) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::OsAt { op, addr, source }
    }

    /// The OS error behind this error, if it came from the kernel as such.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. }
            | Error::OsAt { source, .. }
            | Error::GroupPortTaken { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn family(addr: &IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Formats an optional source as ` from source S`.
struct SourceSuffix(Option<IpAddr>);

impl fmt::Display for SourceSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, " from source {s}"),
            None => Ok(()),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
