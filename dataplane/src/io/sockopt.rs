//! Socket options the data plane sets on sockets the control crate made.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd};

fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: we pass a pointer to a live c_int and its exact size; the kernel only reads
    // it during the call, and `fd` is open for the borrow.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const val).cast::<libc::c_void>(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns UDP generic receive offload on or off: the kernel may hand over several
/// datagrams of one flow in one receive, with their segment size in a `UDP_GRO`
/// control message.
pub(crate) fn set_udp_gro(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    set_int(fd, libc::SOL_UDP, libc::UDP_GRO, libc::c_int::from(on))
}

/// Asks for the socket's drop counter (`SO_RXQ_OVFL`) with every receive.
pub(crate) fn set_rxq_ovfl(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    set_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RXQ_OVFL,
        libc::c_int::from(on),
    )
}
