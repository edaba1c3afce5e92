//! The live probes behind [`crate::Host`]: setting up an io_uring, reading
//! `RLIMIT_MEMLOCK`, the page size and the effective user id. Each is a few system calls
//! and changes nothing on the host.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;

use io_uring::{opcode, IoUring};

use crate::host::Rlimit;

/// The probe ring's sizes, as the data plane's own probe: 8 SQ / 16 CQ entries and an
/// 8-entry provided buffer ring.
pub(crate) const PROBE_SQ: u32 = 8;
pub(crate) const PROBE_CQ: u32 = 16;
pub(crate) const PROBE_BUFFERS: u16 = 8;

/// Sets up an io_uring as the data plane does and tears it down again.
pub(crate) fn io_uring() -> Result<(), String> {
    // The buffer ring's memory is allocated before the ring so that it is freed after it
    // (locals drop in reverse order): the kernel may use it until the ring is gone.
    let page = PageBuf::new(page_size()).map_err(|e| reason("allocating a page", &e))?;
    let ring = build_ring().map_err(|e| reason("io_uring_setup", &e))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| reason("registering an opcode probe", &e))?;
    for (code, name) in [
        (opcode::RecvMsgMulti::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("this kernel's io_uring lacks {name}"));
        }
    }
    // SAFETY: `page` is page aligned, at least one page long (8 entries × 16 bytes fit),
    // and outlives `ring` (declared before it, so dropped after it); the buffer group is
    // unregistered below before either goes away.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(page.addr(), PROBE_BUFFERS, 0, 0)
            .map_err(|e| reason("registering a provided buffer ring", &e))?;
    }
    let _ = ring.submitter().unregister_buf_ring(0);
    drop(ring);
    drop(page);
    Ok(())
}

/// The ring flags the data plane's shards use (single issuer, deferred task work), and
/// a plain ring on kernels that refuse them, as the data plane does.
fn build_ring() -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    builder
        .setup_cqsize(PROBE_CQ)
        .setup_taskrun_flag()
        .setup_single_issuer()
        .setup_defer_taskrun();
    match builder.build(PROBE_SQ) {
        Ok(ring) => Ok(ring),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            IoUring::builder().setup_cqsize(PROBE_CQ).build(PROBE_SQ)
        }
        Err(e) => Err(e),
    }
}

/// What failed and, for the usual errors, why.
fn reason(op: &str, e: &io::Error) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            ": blocked by kernel.io_uring_disabled, or by a seccomp filter (the default \
             profiles of Docker and containerd block io_uring)"
        }
        Some(libc::ENOSYS) => {
            ": this kernel has no io_uring (CONFIG_IO_URING off, or older than 5.1)"
        }
        Some(libc::ENOMEM) => ": RLIMIT_MEMLOCK is too low for the ring (see rlimit.memlock)",
        Some(libc::EINVAL) => ": this kernel does not know the request (too old)",
        _ => "",
    };
    format!("{op} failed: {e}{hint}")
}

/// Page-aligned, zeroed memory of one page, freed on drop.
struct PageBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl PageBuf {
    fn new(size: u64) -> io::Result<PageBuf> {
        let size = usize::try_from(size).unwrap_or(4096).max(4096);
        let layout = Layout::from_size_align(size, size)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(PageBuf { ptr, layout })
    }

    fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this very layout and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// `RLIMIT_MEMLOCK` of this process.
pub(crate) fn memlock() -> Option<Rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 {
        return None;
    }
    let bytes = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            Rlimit::UNLIMITED
        } else {
            v
        }
    };
    Some(Rlimit::new(bytes(limit.rlim_cur), bytes(limit.rlim_max)))
}

/// The page size (4096 when it cannot be read).
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}
