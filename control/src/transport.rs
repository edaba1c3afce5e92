//! The catalog of transports and their multipoint attributes.
//!
//! Winsock describes every protocol with a `WSAPROTOCOL_INFO` whose flags say whether it
//! supports multipoint (`XP1_SUPPORT_MULTIPOINT`) and whether its control and data planes
//! are rooted (`XP1_MULTIPOINT_CONTROL_PLANE`, `XP1_MULTIPOINT_DATA_PLANE`).
//! [`transports`] is the Linux analogue of `WSAEnumProtocols`: it lists every transport
//! this crate knows, with those attributes and whether sockets can be created for it yet.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// How a plane (control or data) is organised.
///
/// In a *rooted* plane one participant, the root, is special: on the control plane only
/// the root adds leaves; on the data plane data flows between the root and each leaf, never
/// from leaf to leaf. In a *non-rooted* plane every participant is a peer: anyone may join,
/// and what anyone sends reaches everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plane {
    /// A root exists and is in charge (Winsock `c_root`/`d_root` plane).
    Rooted,
    /// All participants are peers (Winsock `c_nonroot`/`d_nonroot` plane).
    NonRooted,
}

impl fmt::Display for Plane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Plane::Rooted => "rooted",
            Plane::NonRooted => "non-rooted",
        })
    }
}

/// A transport that multipoint sockets can be created on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// IPv4 UDP multicast, any-source or source-specific (non-rooted control and data).
    Udp4Multicast,
    /// IPv6 UDP multicast, any-source or source-specific (non-rooted control and data).
    Udp6Multicast,
    /// A root fans out to every leaf over UDP unicast, for networks without multicast
    /// (rooted control, rooted data). Listed; sockets come with the rooted-sessions work.
    RootedUnicast,
    /// A root admits leaves, data flows by IP multicast (rooted control, non-rooted data).
    /// Listed; sockets come with the rooted-sessions work.
    AdmittedMulticast,
}

/// The multipoint attributes of one transport, as `WSAEnumProtocols` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportInfo {
    /// Which transport this describes.
    pub transport: Transport,
    /// The name used on command lines and in messages, e.g. `udp4-multicast`.
    pub name: &'static str,
    /// Whether the transport supports multipoint at all (`XP1_SUPPORT_MULTIPOINT`).
    pub supports_multipoint: bool,
    /// How the control plane is organised (`XP1_MULTIPOINT_CONTROL_PLANE` when rooted).
    pub control_plane: Plane,
    /// How the data plane is organised (`XP1_MULTIPOINT_DATA_PLANE` when rooted).
    pub data_plane: Plane,
    /// Whether sockets can be created for it in this version:
    /// [`MultipointSocket`](crate::MultipointSocket) for IP multicast,
    /// [`rooted::Root`](crate::rooted::Root) and [`rooted::Leaf`](crate::rooted::Leaf) for the
    /// rooted transports.
    pub available: bool,
    /// One line on what the transport is for.
    pub summary: &'static str,
}

const CATALOG: [TransportInfo; 4] = [
    TransportInfo {
        transport: Transport::Udp4Multicast,
        name: "udp4-multicast",
        supports_multipoint: true,
        control_plane: Plane::NonRooted,
        data_plane: Plane::NonRooted,
        available: true,
        summary: "IPv4 UDP multicast, any-source or source-specific",
    },
    TransportInfo {
        transport: Transport::Udp6Multicast,
        name: "udp6-multicast",
        supports_multipoint: true,
        control_plane: Plane::NonRooted,
        data_plane: Plane::NonRooted,
        available: true,
        summary: "IPv6 UDP multicast, any-source or source-specific",
    },
    TransportInfo {
        transport: Transport::RootedUnicast,
        name: "rooted-unicast",
        supports_multipoint: true,
        control_plane: Plane::Rooted,
        data_plane: Plane::Rooted,
        available: true,
        summary: "a root fans out to each leaf over UDP unicast (networks without multicast)",
    },
    TransportInfo {
        transport: Transport::AdmittedMulticast,
        name: "admitted-multicast",
        supports_multipoint: true,
        control_plane: Plane::Rooted,
        data_plane: Plane::NonRooted,
        available: true,
        summary: "a root admits leaves; data flows by IP multicast",
    },
];

/// Every transport this crate knows, with its multipoint attributes: the analogue of
/// `WSAEnumProtocols`.
///
/// ```
/// use multipoint_control::{transports, Plane};
///
/// for info in transports() {
///     println!("{:20} control {:10} data {:10} {}", info.name, info.control_plane,
///              info.data_plane, if info.available { "available" } else { "not yet" });
/// }
/// let rooted = transports().iter().filter(|t| t.control_plane == Plane::Rooted).count();
/// assert_eq!(rooted, 2);
/// ```
pub fn transports() -> &'static [TransportInfo] {
    &CATALOG
}

impl Transport {
    /// Every transport, in catalog order.
    pub const ALL: [Transport; 4] = [
        Transport::Udp4Multicast,
        Transport::Udp6Multicast,
        Transport::RootedUnicast,
        Transport::AdmittedMulticast,
    ];

    /// The catalog entry of this transport.
    pub fn info(self) -> &'static TransportInfo {
        // The catalog is in the order of `ALL`, one entry per variant.
        &CATALOG[self as usize]
    }

    /// The name used on command lines and in messages, e.g. `udp4-multicast`.
    pub fn name(self) -> &'static str {
        self.info().name
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Transport {
    type Err = Error;

    /// Parses a transport name as listed by [`transports`].
    fn from_str(s: &str) -> Result<Self, Error> {
        CATALOG
            .iter()
            .find(|info| info.name == s)
            .map(|info| info.transport)
            .ok_or_else(|| Error::UnknownTransport { name: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_order_matches_the_enum() {
        for t in Transport::ALL {
            assert_eq!(t.info().transport, t);
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for t in Transport::ALL {
            assert_eq!(t.name().parse::<Transport>().unwrap(), t);
        }
        let err = "udp5-multicast".parse::<Transport>().unwrap_err();
        assert!(matches!(err, Error::UnknownTransport { .. }));
        assert!(err.to_string().contains("udp4-multicast"), "{err}");
    }

    #[test]
    fn attributes_follow_the_seed_taxonomy() {
        use Plane::*;
        let attrs: Vec<_> = transports()
            .iter()
            .map(|i| (i.name, i.control_plane, i.data_plane, i.available))
            .collect();
        assert_eq!(
            attrs,
            [
                ("udp4-multicast", NonRooted, NonRooted, true),
                ("udp6-multicast", NonRooted, NonRooted, true),
                ("rooted-unicast", Rooted, Rooted, true),
                ("admitted-multicast", Rooted, NonRooted, true),
            ]
        );
        // The seed knows no transport with a non-rooted control plane and a rooted data plane.
        assert!(!transports()
            .iter()
            .any(|i| i.control_plane == NonRooted && i.data_plane == Rooted));
        assert!(transports().iter().all(|i| i.supports_multipoint));
    }
}
