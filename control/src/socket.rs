//! Multipoint sockets for the non-rooted IP multicast transports: creation with roles,
//! `join_leaf`, scope, loopback and the sending interface.
//!
//! # Contract
//!
//! - A [`MultipointSocket`] is `Send + Sync`; every method takes `&self`. Joins and leaves
//!   of one socket are serialised by an internal lock (control path only: nothing here is
//!   meant for a per-message hot path).
//! - Creation turns `IP_MULTICAST_ALL` (`IPV6_MULTICAST_ALL`) off, so a socket receives
//!   only the groups *it* joined, and sets `SO_REUSEADDR`, so several sockets can receive on
//!   one port.
//! - A [`Membership`] leaves its group when dropped or when [`Membership::leave`] is
//!   called. Closing the socket (dropping the [`MultipointSocket`]) leaves every group it
//!   joined; memberships that outlive it then have nothing left to do.
//! - Nothing here panics on any input.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Error, Result};
use crate::interface::{resolve, Interface, Resolved};
use crate::role::Roles;
use crate::sys;
use crate::transport::Transport;

/// Which way data flows for a leaf that joins (Winsock's `JL_SENDER_ONLY`,
/// `JL_RECEIVER_ONLY`, `JL_BOTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Send to the group only. On IP multicast this joins nothing in the kernel and sends
    /// no membership report: sending to a group needs no membership.
    SenderOnly,
    /// Receive from the group only.
    ReceiverOnly,
    /// Send to and receive from the group.
    Both,
}

impl Direction {
    /// Whether this direction receives (and so needs a group membership).
    pub fn receives(self) -> bool {
        matches!(self, Direction::ReceiverOnly | Direction::Both)
    }

    /// Whether this direction sends.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SenderOnly | Direction::Both)
    }
}

/// One datagram taken from a socket by [`MultipointSocket::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// How many bytes were written into the caller's buffer.
    pub len: usize,
    /// Whether the datagram was longer than the buffer and its tail was cut off.
    pub truncated: bool,
    /// The sender's address and port.
    pub source: SocketAddr,
    /// The IPv4 TTL or IPv6 hop limit the datagram arrived with, when reporting is on
    /// ([`MultipointSocket::set_recv_hop_limit`]).
    pub hop_limit: Option<u8>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    group: IpAddr,
    source: Option<IpAddr>,
    direction: Direction,
    /// Interface index the kernel membership was made on (for the matching leave).
    index: u32,
}

#[derive(Debug)]
struct State {
    entries: Vec<Entry>,
    next_id: u64,
    /// The interface as the caller named it, for messages.
    named: Interface,
    /// The same, resolved.
    iface: Resolved,
}

#[derive(Debug)]
struct Inner {
    socket: Socket,
    transport: Transport,
    roles: Roles,
    v6: bool,
    state: Mutex<State>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the table half-written (every
        // update is a single push or remove), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes entry `id` and drops its kernel membership. `None` if no such entry.
    fn leave_entry(&self, id: u64) -> Option<Result<()>> {
        let mut state = self.state();
        let pos = state.entries.iter().position(|e| e.id == id)?;
        let entry = state.entries.swap_remove(pos);
        Some(self.kernel_leave(&entry))
    }

    fn kernel_leave(&self, entry: &Entry) -> Result<()> {
        if !entry.direction.receives() {
            return Ok(());
        }
        sys::group_membership(
            self.socket.as_fd(),
            false,
            entry.group,
            entry.source,
            entry.index,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EADDRNOTAVAIL) => Error::NotMember {
                group: entry.group,
                src: entry.source,
            },
            _ => Error::Os {
                op: "leaving the group",
                source: e,
            },
        })
    }
}

/// A socket on a multipoint transport, created with a control role and a data role.
///
/// See the [crate documentation](crate) for an example.
#[derive(Debug)]
pub struct MultipointSocket {
    inner: Arc<Inner>,
}

impl MultipointSocket {
    /// Creates a socket on `transport` with `roles`.
    ///
    /// The socket starts with loopback on, scope 1, the interface chosen by route (name
    /// one with [`set_interface`](Self::set_interface)), `IP_MULTICAST_ALL` off and
    /// `SO_REUSEADDR` on. It is unbound; the first receiving join binds it to the group's
    /// port on the wildcard address, or [`bind`](Self::bind) it yourself.
    ///
    /// # Errors
    ///
    /// - [`Error::RoleNotAllowed`] if the transport's planes cannot take the roles
    ///   (IP multicast takes only [`Roles::LEAF`]);
    /// - [`Error::WrongSocketKind`] for the rooted transports, whose sockets are
    ///   [`rooted::Root`](crate::rooted::Root) and [`rooted::Leaf`](crate::rooted::Leaf);
    /// - [`Error::Os`] or [`Error::NotApplied`] if the kernel refuses the socket or one of
    ///   the settings above.
    pub fn new(transport: Transport, roles: Roles) -> Result<Self> {
        roles.check(transport)?;
        let v6 = match transport {
            Transport::Udp4Multicast => false,
            Transport::Udp6Multicast => true,
            Transport::RootedUnicast | Transport::AdmittedMulticast => {
                return Err(Error::WrongSocketKind {
                    transport,
                    roles,
                    wanted: "MultipointSocket takes the IP multicast transports",
                })
            }
        };
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
            .map_err(Error::os("creating a UDP socket"))?;
        socket
            .set_reuse_address(true)
            .map_err(Error::os("setting SO_REUSEADDR"))?;
        if v6 {
            socket
                .set_only_v6(true)
                .map_err(Error::os("setting IPV6_V6ONLY"))?;
        }
        let this = MultipointSocket {
            inner: Arc::new(Inner {
                socket,
                transport,
                roles,
                v6,
                state: Mutex::new(State {
                    entries: Vec::new(),
                    next_id: 0,
                    named: Interface::Default,
                    iface: Resolved::DEFAULT,
                }),
            }),
        };
        this.set_multicast_all(false)?;
        this.set_loopback(true)?;
        this.set_scope(1)?;
        Ok(this)
    }

    /// The socket's transport.
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// The socket's roles.
    pub fn roles(&self) -> Roles {
        self.inner.roles
    }

    /// The underlying socket, for options this crate does not cover and for handing the
    /// descriptor to a data plane. Changing the multicast options set here behind this
    /// crate's back makes its read-back checks report the change.
    pub fn socket(&self) -> &Socket {
        &self.inner.socket
    }

    fn check_family(&self, addr: IpAddr) -> Result<()> {
        if addr.is_ipv6() == self.inner.v6 {
            Ok(())
        } else {
            Err(Error::WrongFamily {
                addr,
                transport: self.inner.transport,
            })
        }
    }

    /// Binds the socket to a local address and port.
    ///
    /// To receive several groups on one port, bind the wildcard address (`0.0.0.0` or
    /// `::`): the socket then receives exactly the groups it joined.
    ///
    /// # Errors
    ///
    /// [`Error::WrongFamily`] for an address of the other family; [`Error::OsAt`], naming
    /// the address, if the kernel refuses (e.g. `EADDRNOTAVAIL` for an address not on
    /// this host, `EADDRINUSE` for a port another socket holds).
    pub fn bind(&self, addr: SocketAddr) -> Result<()> {
        self.check_family(addr.ip())?;
        self.inner
            .socket
            .bind(&SockAddr::from(addr))
            .map_err(Error::os_at("binding", addr))
    }

    /// The local address and port the socket is bound to (port 0 when unbound).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `getsockname` fails.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        let addr = self
            .inner
            .socket
            .local_addr()
            .map_err(Error::os("reading the local address (getsockname)"))?;
        addr.as_socket().ok_or_else(|| Error::Os {
            op: "reading the local address (getsockname)",
            source: io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address"),
        })
    }

    fn set_multicast_all(&self, on: bool) -> Result<()> {
        let s = &self.inner.socket;
        let (option, read) = if self.inner.v6 {
            s.set_multicast_all_v6(on)
                .map_err(Error::os("setting IPV6_MULTICAST_ALL"))?;
            ("IPV6_MULTICAST_ALL", s.multicast_all_v6())
        } else {
            s.set_multicast_all_v4(on)
                .map_err(Error::os("setting IP_MULTICAST_ALL"))?;
            ("IP_MULTICAST_ALL", s.multicast_all_v4())
        };
        let actual = read.map_err(Error::os("reading IP_MULTICAST_ALL back"))?;
        verify(option, on, actual)
    }

    /// Sets multipoint loopback (`SIO_MULTIPOINT_LOOPBACK`; `IP_MULTICAST_LOOP` or
    /// `IPV6_MULTICAST_LOOP`): whether data this socket sends comes back to receivers on
    /// this host. On by default.
    ///
    /// Linux applies it on the send path, and traffic sent over `lo` comes back in
    /// whatever the setting: turning it off is visible only on a real interface.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the kernel refuses; [`Error::NotApplied`] if reading back gives
    /// another value.
    pub fn set_loopback(&self, on: bool) -> Result<()> {
        let s = &self.inner.socket;
        if self.inner.v6 {
            s.set_multicast_loop_v6(on)
                .map_err(Error::os("setting IPV6_MULTICAST_LOOP"))?;
        } else {
            s.set_multicast_loop_v4(on)
                .map_err(Error::os("setting IP_MULTICAST_LOOP"))?;
        }
        verify("multicast loopback", on, self.loopback()?)
    }

    /// Whether multipoint loopback is on, as the kernel reports it.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the option cannot be read.
    pub fn loopback(&self) -> Result<bool> {
        let s = &self.inner.socket;
        if self.inner.v6 {
            s.multicast_loop_v6()
        } else {
            s.multicast_loop_v4()
        }
        .map_err(Error::os("reading the multicast loopback option"))
    }

    /// Sets the multicast scope (`SIO_MULTICAST_SCOPE`): the IPv4 TTL or IPv6 hop limit of
    /// multicast this socket sends. 0 keeps it on this host, 1 (the default) on the local
    /// link, and `n` lets it cross `n - 1` multicast routers.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the kernel refuses; [`Error::NotApplied`] if reading back gives
    /// another value.
    pub fn set_scope(&self, scope: u8) -> Result<()> {
        let s = &self.inner.socket;
        if self.inner.v6 {
            s.set_multicast_hops_v6(u32::from(scope))
                .map_err(Error::os("setting IPV6_MULTICAST_HOPS"))?;
        } else {
            s.set_multicast_ttl_v4(u32::from(scope))
                .map_err(Error::os("setting IP_MULTICAST_TTL"))?;
        }
        verify("multicast scope", scope, self.scope()?)
    }

    /// The multicast scope (TTL or hop limit), as the kernel reports it.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the option cannot be read, or reads outside 0..=255.
    pub fn scope(&self) -> Result<u8> {
        let s = &self.inner.socket;
        let raw = if self.inner.v6 {
            s.multicast_hops_v6()
        } else {
            s.multicast_ttl_v4()
        }
        .map_err(Error::os("reading the multicast scope"))?;
        u8::try_from(raw).map_err(|_| Error::Os {
            op: "reading the multicast scope",
            source: io::Error::new(io::ErrorKind::InvalidData, format!("scope {raw} > 255")),
        })
    }

    /// Sets the interface multicast is sent on (`IP_MULTICAST_IF`, `IPV6_MULTICAST_IF`)
    /// and that later joins are made on. Names and addresses are resolved now, in the
    /// calling thread's network namespace.
    ///
    /// # Errors
    ///
    /// [`Error::WrongFamily`] for an address of the other family;
    /// [`Error::UnknownInterface`] if no such interface exists; [`Error::Os`] or
    /// [`Error::NotApplied`] if the kernel refuses or reads back another interface.
    pub fn set_interface(&self, iface: impl Into<Interface>) -> Result<()> {
        let iface = iface.into();
        if let Interface::Addr(a) = iface {
            self.check_family(a)?;
        }
        let resolved = resolve(&iface, self.inner.v6)?;
        let s = &self.inner.socket;
        let map_set = |e: io::Error| match e.raw_os_error() {
            Some(libc::ENODEV) | Some(libc::EADDRNOTAVAIL) => Error::UnknownInterface {
                interface: iface.to_string(),
                reason: "the kernel refused it for multicast",
            },
            _ => Error::Os {
                op: "setting the multicast interface",
                source: e,
            },
        };
        if self.inner.v6 {
            s.set_multicast_if_v6(resolved.index).map_err(map_set)?;
            let back = s
                .multicast_if_v6()
                .map_err(Error::os("reading IPV6_MULTICAST_IF back"))?;
            verify("IPV6_MULTICAST_IF", resolved.index, back)?;
        } else {
            sys::set_multicast_if_v4(s.as_fd(), resolved.index, resolved.v4).map_err(map_set)?;
            let back = s
                .multicast_if_v4()
                .map_err(Error::os("reading IP_MULTICAST_IF back"))?;
            verify("IP_MULTICAST_IF", resolved.v4, back)?;
        }
        let mut state = self.inner.state();
        state.named = iface;
        state.iface = resolved;
        Ok(())
    }

    /// The interface multicast is sent on, as the kernel reports it: for IPv4 the
    /// interface's address (or its index when it has none), for IPv6 its index;
    /// [`Interface::Default`] when none was set.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the option cannot be read.
    pub fn interface(&self) -> Result<Interface> {
        let s = &self.inner.socket;
        if self.inner.v6 {
            let index = s
                .multicast_if_v6()
                .map_err(Error::os("reading IPV6_MULTICAST_IF"))?;
            Ok(if index == 0 {
                Interface::Default
            } else {
                Interface::Index(index)
            })
        } else {
            let addr = s
                .multicast_if_v4()
                .map_err(Error::os("reading IP_MULTICAST_IF"))?;
            let index = self.inner.state().iface.index;
            Ok(match (addr.is_unspecified(), index) {
                (false, _) => Interface::Addr(IpAddr::V4(addr)),
                (true, 0) => Interface::Default,
                (true, i) => Interface::Index(i),
            })
        }
    }

    /// Turns on or off reporting of the TTL (hop limit) each datagram arrives with
    /// ([`Datagram::hop_limit`]; `IP_RECVTTL`, `IPV6_RECVHOPLIMIT`). Off by default.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the kernel refuses.
    pub fn set_recv_hop_limit(&self, on: bool) -> Result<()> {
        sys::set_recv_hop_limit(self.inner.socket.as_fd(), self.inner.v6, on)
            .map_err(Error::os("setting IP_RECVTTL / IPV6_RECVHOPLIMIT"))
    }

    /// Adds this socket as a leaf of the multipoint session at `group` (Winsock's
    /// `WSAJoinLeaf`), on the interface set by [`set_interface`](Self::set_interface).
    ///
    /// - `group` is the group address and port. A receiving join binds an unbound socket
    ///   to that port on the wildcard address.
    /// - `direction` [`Direction::SenderOnly`] joins nothing in the kernel (no membership
    ///   report is sent); the others make a group membership.
    /// - `source` makes the join source-specific (`MCAST_JOIN_SOURCE_GROUP`): only
    ///   datagrams from that source are received. `None` receives from any source.
    ///
    /// # Errors
    ///
    /// - [`Error::WrongFamily`], [`Error::NotMulticast`] for bad addresses;
    /// - [`Error::AlreadyMember`] if a membership of this socket already covers the join
    ///   (the same group for any source, or the same source);
    /// - [`Error::PortMismatch`] if the socket is bound to another port, or the group's
    ///   port is 0, for a receiving join;
    /// - [`Error::UnknownInterface`] if the kernel finds no interface for the group (name
    ///   one with [`set_interface`](Self::set_interface));
    /// - [`Error::MembershipLimit`] if a per-socket limit was reached;
    /// - [`Error::Os`] otherwise.
    pub fn join_leaf(
        &self,
        group: SocketAddr,
        direction: Direction,
        source: Option<IpAddr>,
    ) -> Result<Membership> {
        let g = group.ip();
        self.check_family(g)?;
        if let Some(s) = source {
            self.check_family(s)?;
        }
        if !g.is_multicast() {
            return Err(Error::NotMulticast { addr: g });
        }
        let inner = &self.inner;
        let mut state = inner.state();
        let covered = state.entries.iter().any(|e| {
            e.group == g && (e.source.is_none() || source.is_none() || e.source == source)
        });
        if covered {
            return Err(Error::AlreadyMember {
                group: g,
                src: source,
            });
        }
        let index = state.iface.index;
        if direction.receives() {
            let bound = self.local_addr()?.port();
            if group.port() == 0 || (bound != 0 && bound != group.port()) {
                return Err(Error::PortMismatch {
                    bound,
                    group: group.port(),
                });
            }
            if bound == 0 {
                let any: IpAddr = if inner.v6 {
                    Ipv6Addr::UNSPECIFIED.into()
                } else {
                    Ipv4Addr::UNSPECIFIED.into()
                };
                let at = SocketAddr::new(any, group.port());
                self.bind(at).map_err(|e| match e {
                    Error::OsAt { source, .. } if source.kind() == io::ErrorKind::AddrInUse => {
                        Error::GroupPortTaken {
                            group,
                            addr: at,
                            source,
                        }
                    }
                    other => other,
                })?;
            }
            sys::group_membership(inner.socket.as_fd(), true, g, source, index)
                .map_err(|e| self.join_error(e, &state, g, source))?;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.entries.push(Entry {
            id,
            group: g,
            source,
            direction,
            index,
        });
        Ok(Membership {
            inner: Arc::downgrade(inner),
            id,
            group,
            source,
            direction,
            left: false,
        })
    }

    fn join_error(
        &self,
        e: io::Error,
        state: &State,
        group: IpAddr,
        source: Option<IpAddr>,
    ) -> Error {
        match e.raw_os_error() {
            Some(libc::EADDRINUSE) => Error::AlreadyMember { group, src: source },
            Some(libc::ENODEV) => Error::UnknownInterface {
                interface: state.named.to_string(),
                reason: "the kernel found no interface for the group; name one with set_interface",
            },
            Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
                let same_group = state.entries.iter().any(|e| e.group == group);
                let sysctl = match (self.inner.v6, source.is_some() && same_group) {
                    (false, false) => "net.ipv4.igmp_max_memberships",
                    (false, true) => "net.ipv4.igmp_max_msf",
                    (true, false) => "net.core.optmem_max",
                    (true, true) => "net.ipv6.mld_max_msf",
                };
                Error::MembershipLimit {
                    group,
                    sysctl,
                    limit: read_sysctl(sysctl),
                }
            }
            _ => Error::Os {
                op: "joining the group",
                source: e,
            },
        }
    }

    /// Leaves the membership of `group` (and `source`, for a source-specific join)
    /// without its [`Membership`] handle; the handle then has nothing left to do.
    ///
    /// # Errors
    ///
    /// [`Error::NotMember`] if the socket holds no such membership; [`Error::Os`] if the
    /// kernel refuses.
    pub fn leave(&self, group: IpAddr, source: Option<IpAddr>) -> Result<()> {
        let id = self
            .inner
            .state()
            .entries
            .iter()
            .find(|e| e.group == group && e.source == source)
            .map(|e| e.id);
        match id.and_then(|id| self.inner.leave_entry(id)) {
            Some(result) => result,
            None => Err(Error::NotMember { group, src: source }),
        }
    }

    /// Sends one datagram to `dest` (a group, or any address of the socket's family).
    ///
    /// # Errors
    ///
    /// [`Error::WrongFamily`] for a destination of the other family; [`Error::Os`] if the
    /// kernel refuses (e.g. `ENETUNREACH` when no interface is set and no route covers the
    /// group).
    pub fn send_to(&self, buf: &[u8], dest: SocketAddr) -> Result<usize> {
        self.check_family(dest.ip())?;
        self.inner
            .socket
            .send_to(buf, &SockAddr::from(dest))
            .map_err(Error::os("sending a datagram"))
    }

    /// Receives one datagram into `buf`, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the kernel reports an error.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Datagram> {
        loop {
            match self.recv_flags(buf, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                other => return other.map_err(|e| Error::os("receiving a datagram")(e.into())),
            }
        }
    }

    /// Receives one datagram into `buf`, waiting at most `timeout`; `Ok(None)` if none
    /// arrived in time.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the kernel reports an error.
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<Datagram>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv_flags(buf, MsgFlags::MSG_DONTWAIT) {
                Ok(d) => return Ok(Some(d)),
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::os("receiving a datagram")(e.into())),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // Round up so that a short remainder still waits instead of spinning.
            let ms = u16::try_from(left.as_millis() + 1).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.inner.socket.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::os("waiting for a datagram (poll)")(e.into())),
            }
        }
    }

    fn recv_flags(&self, buf: &mut [u8], flags: MsgFlags) -> std::result::Result<Datagram, Errno> {
        let mut iov = [IoSliceMut::new(buf)];
        let mut cmsg = nix::cmsg_space!(libc::c_int);
        let msg = recvmsg::<SockaddrStorage>(
            self.inner.socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            flags,
        )?;
        let mut hop_limit = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                        hop_limit = u8::try_from(t).ok();
                    }
                    _ => {}
                }
            }
        }
        let source = msg
            .address
            .as_ref()
            .and_then(to_socket_addr)
            .unwrap_or_else(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        Ok(Datagram {
            len: msg.bytes,
            truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
            source,
            hop_limit,
        })
    }
}

fn to_socket_addr(ss: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = ss.as_sockaddr_in() {
        return Some(SocketAddr::new(v4.ip().into(), v4.port()));
    }
    let v6 = ss.as_sockaddr_in6()?;
    debug_assert!(v6.family().is_some());
    Some(SocketAddr::new(v6.ip().into(), v6.port()))
}

impl AsFd for MultipointSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.socket.as_fd()
    }
}

impl AsRawFd for MultipointSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.socket.as_raw_fd()
    }
}

fn verify<T: PartialEq + std::fmt::Display>(
    option: &'static str,
    wanted: T,
    actual: T,
) -> Result<()> {
    if wanted == actual {
        Ok(())
    } else {
        Err(Error::NotApplied {
            option,
            wanted: wanted.to_string(),
            actual: actual.to_string(),
        })
    }
}

fn read_sysctl(name: &str) -> Option<u64> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A leaf's place in a multipoint session: the result of [`MultipointSocket::join_leaf`].
///
/// Dropping it leaves the group (errors are logged at debug level, since a drop cannot
/// report them); [`leave`](Self::leave) does the same and reports errors.
#[derive(Debug)]
pub struct Membership {
    inner: Weak<Inner>,
    id: u64,
    group: SocketAddr,
    source: Option<IpAddr>,
    direction: Direction,
    left: bool,
}

impl Membership {
    /// The group address and port that was joined.
    pub fn group(&self) -> SocketAddr {
        self.group
    }

    /// The source of a source-specific join.
    pub fn source(&self) -> Option<IpAddr> {
        self.source
    }

    /// The direction of the join.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Sends one datagram to the group through the socket that joined.
    ///
    /// # Errors
    ///
    /// [`Error::ReceiveOnly`] for a receive-only membership; [`Error::NotMember`] once the
    /// membership was left or its socket closed; [`Error::Os`] if the kernel refuses.
    pub fn send(&self, buf: &[u8]) -> Result<usize> {
        if !self.direction.sends() {
            return Err(Error::ReceiveOnly {
                group: self.group.ip(),
            });
        }
        let inner = self.alive()?;
        inner
            .socket
            .send_to(buf, &SockAddr::from(self.group))
            .map_err(Error::os("sending to the group"))
    }

    /// The socket, if it is open and this membership has not been left.
    fn alive(&self) -> Result<Arc<Inner>> {
        self.inner
            .upgrade()
            .filter(|inner| inner.state().entries.iter().any(|e| e.id == self.id))
            .ok_or(Error::NotMember {
                group: self.group.ip(),
                src: self.source,
            })
    }

    /// Leaves the group now, reporting any error.
    ///
    /// # Errors
    ///
    /// [`Error::NotMember`] if the membership was already left through
    /// [`MultipointSocket::leave`] or the socket was closed; [`Error::Os`] if the kernel
    /// refuses.
    pub fn leave(mut self) -> Result<()> {
        self.leave_now()
    }

    fn leave_now(&mut self) -> Result<()> {
        self.left = true;
        let not_member = || Error::NotMember {
            group: self.group.ip(),
            src: self.source,
        };
        let inner = self.inner.upgrade().ok_or_else(not_member)?;
        inner
            .leave_entry(self.id)
            .unwrap_or_else(|| Err(not_member()))
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.left {
            return;
        }
        if let Err(e) = self.leave_now() {
            if !matches!(e, Error::NotMember { .. }) {
                tracing::debug!(group = %self.group, error = %e, "leaving on drop failed");
            }
        }
    }
}
