//! The AF_XDP backend: an XDP program steers the subscribed groups' packets into AF_XDP
//! sockets (`program`); each socket shares raw Ethernet frames with the kernel through a
//! UMEM and four rings.
//!
//! - `program`: the XDP program, its maps, and its attachment through a BPF link;
//! - `umem`: the frame memory, allocated once (huge pages where the host has them);
//! - `ring`: the fill, RX, completion and TX rings over the kernel's shared words;
//! - `socket`: one AF_XDP socket bound to an interface queue, with its UMEM and rings.

// Until the integrator wires the socket into the transport seam (issue 16), only the
// tests use it.
#![allow(dead_code)]

pub(crate) mod program;
pub(crate) mod ring;
pub(crate) mod socket;
pub(crate) mod umem;
