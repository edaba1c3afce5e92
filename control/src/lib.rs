//! The multipoint control plane: transports and their multipoint attributes, socket
//! roles, `join_leaf`, scope, loopback and interfaces, after the Windows Sockets 2 model of
//! protocol-independent multicast and multipoint, on Linux.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use multipoint_control::{Direction, Interface, MultipointSocket, Roles, Transport};
//!
//! # fn main() -> Result<(), multipoint_control::Error> {
//! // IP multicast is non-rooted on both planes: every socket is C_LEAF|D_LEAF.
//! let socket = MultipointSocket::new(Transport::Udp4Multicast, Roles::LEAF)?;
//! socket.set_interface(Interface::LOOPBACK_V4)?; // send and join on lo
//! socket.set_scope(0)?;                          // TTL 0: stay on this host
//! socket.set_loopback(true)?;                    // our own sends come back to us
//!
//! // Join as a leaf that sends and receives; the join binds the group's port.
//! let group: SocketAddr = "239.255.0.1:40000".parse().unwrap();
//! let membership = socket.join_leaf(group, Direction::Both, None)?;
//! membership.send(b"hello, group")?;
//!
//! let mut buf = [0u8; 1500];
//! let d = socket.recv_timeout(&mut buf, Duration::from_secs(2))?.expect("looped back");
//! assert_eq!(&buf[..d.len], b"hello, group");
//! membership.leave()?; // dropping the handle leaves too
//! # Ok(())
//! # }
//! ```
//!
//! # The model
//!
//! Every [`Transport`] declares whether its control plane and its data plane are
//! [rooted](Plane::Rooted) ([`transports`] lists them, like `WSAEnumProtocols`). A
//! [`MultipointSocket`] takes exactly one control role and one data role ([`Roles`]); a
//! root role needs a rooted plane, so IP multicast takes only [`Roles::LEAF`]. Roles are
//! checked when the socket is created, never at first send.
//!
//! [`MultipointSocket::join_leaf`] adds the socket to a session as a leaf, in a
//! [`Direction`]. On IP multicast a receiving join is a group membership (any-source, or
//! source-specific when a source is named); a sender-only join makes no membership and
//! sends no report. Loopback ([`MultipointSocket::set_loopback`], on by default) and scope
//! ([`MultipointSocket::set_scope`], 1 by default) are set per socket.
//!
//! # Linux defaults this crate changes
//!
//! - `IP_MULTICAST_ALL` is on by default in Linux: a socket bound to a port receives every
//!   group joined by *any* socket of the host on that port. Sockets made here turn it off.
//! - Without a multicast route or an interface set, sending fails with `ENETUNREACH` or
//!   leaves through the default route's interface: name one with
//!   [`MultipointSocket::set_interface`].
//!
//! # Errors and panics
//!
//! Every fallible call returns [`Error`], whose messages say what to do. Nothing in this
//! crate panics on any input.
//!
//! # Rooted transports
//!
//! `rooted-unicast` and `admitted-multicast` have a rooted control plane: a root admits
//! and invites leaves over TCP. Their sockets are [`rooted::Root`] (`C_ROOT`) and
//! [`rooted::Leaf`] (`C_LEAF|D_LEAF`), on the same [`Transport`] and [`Roles`]; see
//! [`rooted`]. Moving their data is the data plane's job.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

mod error;
mod interface;
mod role;
pub mod rooted;
mod socket;
mod sys;
mod transport;

pub use error::{Error, Result};
pub use interface::{list as interfaces, Interface, InterfaceInfo};
pub use role::{ControlRole, DataRole, Roles};
pub use socket::{Datagram, Direction, Membership, MultipointSocket};
pub use transport::{transports, Plane, Transport, TransportInfo};

/// The socket2 crate, whose `Socket` [`MultipointSocket::socket`] hands out.
pub use socket2;
