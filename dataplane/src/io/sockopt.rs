//! Socket options the data plane sets on sockets the control crate made.

use std::io;
use std::os::fd::BorrowedFd;

use nix::sys::socket::{setsockopt, sockopt};

/// Turns UDP generic receive offload on or off: the kernel may hand over several
/// datagrams of one flow in one receive, with their segment size in a `UDP_GRO`
/// control message.
pub(crate) fn set_udp_gro(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    setsockopt(&fd, sockopt::UdpGroSegment, &on).map_err(io::Error::from)
}

/// Asks for the socket's drop counter (`SO_RXQ_OVFL`) with every receive.
pub(crate) fn set_rxq_ovfl(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    setsockopt(&fd, sockopt::RxqOvfl, &i32::from(on)).map_err(io::Error::from)
}
