//! Naming the interface a socket sends and joins on, and listing interfaces.
//!
//! An [`Interface`] is resolved when it is applied to a socket, in the network namespace
//! of the calling thread: names and addresses are looked up then, not when the value is
//! made.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::{if_nametoindex, InterfaceFlags};

use crate::error::{Error, Result};

/// The interface multicast is sent and joined on.
///
/// Linux picks an interface by route when none is named, which on a host without a
/// multicast route fails (`ENETUNREACH`) or sends out of the default route's interface:
/// name one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Interface {
    /// Let the kernel choose by routing table.
    #[default]
    Default,
    /// The interface with this index (`ip link` shows indices).
    Index(u32),
    /// The interface that holds this address (IPv4 sockets need an IPv4 address, IPv6
    /// sockets an IPv6 one).
    Addr(IpAddr),
    /// The interface with this name, e.g. `lo` or `eth0`.
    Name(String),
}

impl Interface {
    /// The loopback interface by its IPv4 address, 127.0.0.1.
    pub const LOOPBACK_V4: Interface = Interface::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST));

    /// Looks the interface up (in the calling thread's network namespace) and returns
    /// its description: name, index, flags and addresses. An address names the
    /// interface that holds it, whatever its family.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownInterface`] for [`Interface::Default`] (which names no interface
    /// until a route chooses one) and for an interface this host does not have;
    /// [`Error::Os`] when the kernel cannot list interfaces.
    pub fn lookup(&self) -> Result<InterfaceInfo> {
        let found = match self {
            Interface::Default => {
                return Err(unknown(
                    self,
                    "name the interface: no route chooses one here",
                ))
            }
            Interface::Index(i) => list()?.into_iter().find(|info| info.index == *i),
            Interface::Name(n) => list()?.into_iter().find(|info| &info.name == n),
            Interface::Addr(a) => list()?.into_iter().find(|info| info.addrs.contains(a)),
        };
        found.ok_or_else(|| unknown(self, "no interface of this host matches"))
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interface::Default => f.write_str("(chosen by route)"),
            Interface::Index(i) => write!(f, "#{i}"),
            Interface::Addr(a) => write!(f, "{a}"),
            Interface::Name(n) => f.write_str(n),
        }
    }
}

impl std::str::FromStr for Interface {
    type Err = std::convert::Infallible;

    /// Reads an interface as a command line names it: an IP address (`127.0.0.1`,
    /// `fd00::1`), an index (`3`), or otherwise a name (`eth0`). An empty string or
    /// `default` leaves the choice to the kernel. Nothing is looked up yet.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s.is_empty() || s == "default" {
            Interface::Default
        } else if let Ok(addr) = s.parse::<IpAddr>() {
            Interface::Addr(addr)
        } else if let Ok(index) = s.parse::<u32>() {
            Interface::Index(index)
        } else {
            Interface::Name(s.to_owned())
        })
    }
}

impl From<Ipv4Addr> for Interface {
    fn from(a: Ipv4Addr) -> Self {
        Interface::Addr(IpAddr::V4(a))
    }
}

impl From<Ipv6Addr> for Interface {
    fn from(a: Ipv6Addr) -> Self {
        Interface::Addr(IpAddr::V6(a))
    }
}

/// An interface resolved for one address family: its index, and for IPv4 the address
/// that `IP_MULTICAST_IF` reports back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Interface index; 0 lets the kernel choose.
    pub(crate) index: u32,
    /// IPv4 address on the interface (unspecified for IPv6 sockets or when unknown).
    pub(crate) v4: Ipv4Addr,
}

impl Resolved {
    pub(crate) const DEFAULT: Resolved = Resolved {
        index: 0,
        v4: Ipv4Addr::UNSPECIFIED,
    };
}

fn unknown(iface: &Interface, reason: &'static str) -> Error {
    Error::UnknownInterface {
        interface: iface.to_string(),
        reason,
    }
}

/// Resolves `iface` for a socket of the given family (`v6` true for IPv6).
pub(crate) fn resolve(iface: &Interface, v6: bool) -> Result<Resolved> {
    let index = match iface {
        Interface::Default => return Ok(Resolved::DEFAULT),
        Interface::Index(0) => return Err(unknown(iface, "index 0 names no interface")),
        Interface::Index(i) => {
            // Looked up in the list rather than with if_indextoname, whose nix wrapper
            // takes glibc's NULL (no such index) for success.
            if !list()?.iter().any(|info| info.index == *i) {
                return Err(unknown(iface, "no interface has this index"));
            }
            *i
        }
        Interface::Name(n) => {
            if_nametoindex(n.as_str()).map_err(|_| unknown(iface, "no interface has this name"))?
        }
        Interface::Addr(addr) => {
            let found = list()?
                .into_iter()
                .find(|i| i.addrs.contains(addr))
                .ok_or_else(|| unknown(iface, "no interface holds this address"))?;
            if addr.is_ipv6() != v6 {
                return Err(unknown(
                    iface,
                    "the address is of the other family than the socket",
                ));
            }
            found.index
        }
    };
    if v6 {
        return Ok(Resolved {
            index,
            v4: Ipv4Addr::UNSPECIFIED,
        });
    }
    let v4 = match iface {
        Interface::Addr(IpAddr::V4(a)) => *a,
        _ => list()?
            .into_iter()
            .find(|i| i.index == index)
            .and_then(|i| {
                i.addrs.iter().find_map(|a| match a {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                })
            })
            .unwrap_or(Ipv4Addr::UNSPECIFIED),
    };
    Ok(Resolved { index, v4 })
}

/// One network interface of this host (of the calling thread's network namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Its name, e.g. `lo`.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Whether it is up (`IFF_UP`).
    pub up: bool,
    /// Whether it is the loopback interface (`IFF_LOOPBACK`).
    pub loopback: bool,
    /// Whether it can do multicast (`IFF_MULTICAST`).
    pub multicast: bool,
    /// Its IPv4 and IPv6 addresses.
    pub addrs: Vec<IpAddr>,
    /// Its hardware (MAC) address, for an interface with a 6-byte one (Ethernet, veth).
    pub hw_addr: Option<[u8; 6]>,
}

/// Lists the interfaces of the calling thread's network namespace, ordered by index.
///
/// # Errors
///
/// [`Error::Os`] when the kernel cannot list them (`getifaddrs`).
pub fn list() -> Result<Vec<InterfaceInfo>> {
    let mut by_name: BTreeMap<String, InterfaceInfo> = BTreeMap::new();
    let addrs = getifaddrs().map_err(|e| Error::Os {
        op: "listing interfaces (getifaddrs)",
        source: e.into(),
    })?;
    for ifa in addrs {
        let entry = match by_name.get_mut(&ifa.interface_name) {
            Some(e) => e,
            None => {
                let Ok(index) = if_nametoindex(ifa.interface_name.as_str()) else {
                    // The interface went away while we listed: leave it out.
                    continue;
                };
                let flags = ifa.flags;
                by_name
                    .entry(ifa.interface_name.clone())
                    .or_insert(InterfaceInfo {
                        name: ifa.interface_name.clone(),
                        index,
                        up: flags.contains(InterfaceFlags::IFF_UP),
                        loopback: flags.contains(InterfaceFlags::IFF_LOOPBACK),
                        multicast: flags.contains(InterfaceFlags::IFF_MULTICAST),
                        addrs: Vec::new(),
                        hw_addr: None,
                    })
            }
        };
        if let Some(addr) = ifa.address {
            if let Some(v4) = addr.as_sockaddr_in() {
                entry.addrs.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                entry.addrs.push(IpAddr::V6(v6.ip()));
            } else if let Some(link) = addr.as_link_addr() {
                // The AF_PACKET entry: an Ethernet-like interface's MAC (loopback has
                // an all-zero one, tunnels none).
                if let Some(mac) = link.addr().filter(|_| link.halen() == 6) {
                    entry.hw_addr = Some(mac);
                }
            }
        }
    }
    let mut out: Vec<_> = by_name.into_values().collect();
    out.sort_by_key(|i| i.index);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_parse_as_address_index_or_name() {
        let parse = |s: &str| s.parse::<Interface>().unwrap();
        assert_eq!(parse("127.0.0.1"), Interface::LOOPBACK_V4);
        assert_eq!(parse("::1"), Interface::Addr(Ipv6Addr::LOCALHOST.into()));
        assert_eq!(parse("3"), Interface::Index(3));
        assert_eq!(parse("eth0"), Interface::Name("eth0".into()));
        assert_eq!(parse("default"), Interface::Default);
        assert_eq!(parse(""), Interface::Default);
    }

    #[test]
    fn loopback_is_listed_with_its_address() {
        let lo = list()
            .unwrap()
            .into_iter()
            .find(|i| i.loopback)
            .expect("a loopback interface");
        assert!(
            lo.addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{lo:?}"
        );
        assert!(lo.up);
    }

    #[test]
    fn loopback_resolves_by_name_address_and_index_alike() {
        let by_name = resolve(&Interface::Name("lo".into()), false).unwrap();
        let by_addr = resolve(&Interface::LOOPBACK_V4, false).unwrap();
        let by_index = resolve(&Interface::Index(by_name.index), false).unwrap();
        assert_eq!(by_name, by_addr);
        assert_eq!(by_name, by_index);
        assert_eq!(by_name.v4, Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn unknown_interfaces_are_refused_with_their_name() {
        for iface in [
            Interface::Name("no-such-if0".into()),
            Interface::Index(0),
            Interface::Index(u32::MAX),
            Interface::Addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77))),
        ] {
            let err = resolve(&iface, false).unwrap_err();
            assert!(matches!(err, Error::UnknownInterface { .. }), "{err}");
            assert!(err.to_string().contains(&iface.to_string()), "{err}");
        }
    }
}
