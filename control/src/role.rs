//! Control and data roles of a multipoint socket (Winsock's `C_ROOT`/`C_LEAF` and
//! `D_ROOT`/`D_LEAF` socket flags) and their validation against a transport.

use std::fmt;

use crate::error::Error;
use crate::transport::{Plane, Transport};

/// The role a socket takes on the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlRole {
    /// `C_ROOT`: the socket is the root of a rooted control plane and adds leaves.
    Root,
    /// `C_LEAF`: the socket is a leaf (on a non-rooted plane every socket is a leaf).
    Leaf,
}

/// The role a socket takes on the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataRole {
    /// `D_ROOT`: the socket is the root of a rooted data plane; data flows between it
    /// and each leaf.
    Root,
    /// `D_LEAF`: the socket is a leaf (on a non-rooted plane every socket is a leaf).
    Leaf,
}

/// The pair of roles a multipoint socket is created with: exactly one control role and
/// exactly one data role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Roles {
    /// The control-plane role.
    pub control: ControlRole,
    /// The data-plane role.
    pub data: DataRole,
}

impl Roles {
    /// `C_LEAF | D_LEAF`: the only roles IP multicast allows.
    pub const LEAF: Roles = Roles::new(ControlRole::Leaf, DataRole::Leaf);
    /// `C_ROOT | D_ROOT`: the root of a transport whose planes are both rooted.
    pub const ROOT: Roles = Roles::new(ControlRole::Root, DataRole::Root);

    /// Combines a control role and a data role.
    pub const fn new(control: ControlRole, data: DataRole) -> Roles {
        Roles { control, data }
    }

    /// Checks the roles against the transport's planes: `C_ROOT` needs a rooted control
    /// plane and `D_ROOT` a rooted data plane.
    ///
    /// # Errors
    ///
    /// [`Error::RoleNotAllowed`] naming the first role the transport cannot take.
    pub fn check(self, transport: Transport) -> Result<(), Error> {
        let info = transport.info();
        if self.control == ControlRole::Root && info.control_plane != Plane::Rooted {
            return Err(Error::RoleNotAllowed {
                transport,
                role: "C_ROOT",
                plane: "control",
            });
        }
        if self.data == DataRole::Root && info.data_plane != Plane::Rooted {
            return Err(Error::RoleNotAllowed {
                transport,
                role: "D_ROOT",
                plane: "data",
            });
        }
        Ok(())
    }
}

impl Default for Roles {
    /// [`Roles::LEAF`], valid on every transport.
    fn default() -> Self {
        Roles::LEAF
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = match self.control {
            ControlRole::Root => "C_ROOT",
            ControlRole::Leaf => "C_LEAF",
        };
        let d = match self.data {
            DataRole::Root => "D_ROOT",
            DataRole::Leaf => "D_LEAF",
        };
        write!(f, "{c}|{d}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_roles() -> impl Iterator<Item = Roles> {
        [ControlRole::Root, ControlRole::Leaf]
            .into_iter()
            .flat_map(|c| [DataRole::Root, DataRole::Leaf].map(|d| Roles::new(c, d)))
    }

    #[test]
    fn ip_multicast_allows_only_leaf_leaf() {
        for t in [Transport::Udp4Multicast, Transport::Udp6Multicast] {
            for roles in all_roles() {
                assert_eq!(roles.check(t).is_ok(), roles == Roles::LEAF, "{t} {roles}");
            }
        }
    }

    #[test]
    fn rooted_unicast_allows_every_combination() {
        assert!(all_roles().all(|r| r.check(Transport::RootedUnicast).is_ok()));
    }

    #[test]
    fn admitted_multicast_refuses_a_data_root() {
        let t = Transport::AdmittedMulticast;
        assert!(Roles::new(ControlRole::Root, DataRole::Leaf)
            .check(t)
            .is_ok());
        assert!(Roles::LEAF.check(t).is_ok());
        let err = Roles::ROOT.check(t).unwrap_err();
        assert!(
            matches!(
                err,
                Error::RoleNotAllowed {
                    role: "D_ROOT",
                    plane: "data",
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("D_ROOT") && msg.contains("admitted-multicast"),
            "{msg}"
        );
    }

    #[test]
    fn the_control_role_is_reported_first() {
        let err = Roles::ROOT.check(Transport::Udp4Multicast).unwrap_err();
        assert!(
            matches!(err, Error::RoleNotAllowed { role: "C_ROOT", .. }),
            "{err}"
        );
    }
}
