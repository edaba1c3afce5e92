//! The few socket options that neither socket2 nor nix wraps: the protocol-independent
//! group API of RFC 3678 (`MCAST_JOIN_GROUP`, `MCAST_JOIN_SOURCE_GROUP` and their leaves)
//! and `IP_MULTICAST_IF` by interface index (`struct ip_mreqn`).

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Writes `addr` (port 0) into a `sockaddr_storage`.
fn storage(addr: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid (AF_UNSPEC) value.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    match addr {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type;
            // we write one sockaddr_in at its start.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in>(), sin) };
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for a sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in6>(), sin6) };
        }
    }
    ss
}

fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` points to a live, initialised T of the size we pass; the kernel only
    // reads it during the call; `fd` is a valid open descriptor for the borrow.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast::<libc::c_void>(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn level_of(group: IpAddr) -> libc::c_int {
    if group.is_ipv4() {
        libc::IPPROTO_IP
    } else {
        libc::IPPROTO_IPV6
    }
}

/// Joins (`join` true) or leaves `group` on interface `index`, for any source or for
/// `source` only.
pub(crate) fn group_membership(
    fd: BorrowedFd<'_>,
    join: bool,
    group: IpAddr,
    source: Option<IpAddr>,
    index: u32,
) -> io::Result<()> {
    let level = level_of(group);
    // Any source or one, joining or leaving: one option each.
    let name = match (source.is_some(), join) {
        (false, true) => libc::MCAST_JOIN_GROUP,
        (false, false) => libc::MCAST_LEAVE_GROUP,
        (true, true) => libc::MCAST_JOIN_SOURCE_GROUP,
        (true, false) => libc::MCAST_LEAVE_SOURCE_GROUP,
    };
    match source {
        None => {
            let req = libc::group_req {
                gr_interface: index,
                gr_group: storage(group),
            };
            setsockopt(fd, level, name, &req)
        }
        Some(source) => {
            let req = libc::group_source_req {
                gsr_interface: index,
                gsr_group: storage(group),
                gsr_source: storage(source),
            };
            setsockopt(fd, level, name, &req)
        }
    }
}

/// Sets `IP_MULTICAST_IF` by index and address (`struct ip_mreqn`).
pub(crate) fn set_multicast_if_v4(
    fd: BorrowedFd<'_>,
    index: u32,
    addr: Ipv4Addr,
) -> io::Result<()> {
    let req = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        imr_ifindex: index as libc::c_int,
    };
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &req)
}

/// Turns `IP_RECVTTL` (IPv4) or `IPV6_RECVHOPLIMIT` (IPv6) on or off.
pub(crate) fn set_recv_hop_limit(fd: BorrowedFd<'_>, v6: bool, on: bool) -> io::Result<()> {
    let val = libc::c_int::from(on);
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &val)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, &val)
    }
}
