//! Placeholder
#![deny(unsafe_op_in_unsafe_fn)]
mod error;
mod interface;
mod role;
mod socket;
mod sys;
mod transport;

pub use error::{Error, Result};
pub use interface::{list as interfaces, Interface, InterfaceInfo};
pub use role::{ControlRole, DataRole, Roles};
pub use socket::{Datagram, Direction, Membership, MultipointSocket};
pub use socket2;
pub use transport::{transports, Plane, Transport, TransportInfo};
