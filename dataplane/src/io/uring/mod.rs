//! The io_uring backend: batched sends on a registered file ([`send`]), multishot receive
//! from a provided buffer ring ([`recv`], [`buf_ring`]), and the probe that decides
//! whether io_uring works here at all.

pub(crate) mod buf_ring;
pub(crate) mod recv;
pub(crate) mod send;

use std::io;
use std::mem;

use io_uring::{opcode, IoUring};

use self::buf_ring::BufRing;
use crate::host::RingSize;

pub(crate) use self::recv::UringRecv;
pub(crate) use self::send::UringSend;

/// A receive shard's io_uring: few submissions (one multishot receive per socket), and a
/// completion queue of at least this size (four completions per buffer when larger).
pub(crate) const SHARD_RING: RingSize = RingSize { sq: 64, cq: 1024 };
/// The `io_uring_recvmsg_out` header at the start of each received buffer.
pub(crate) const RECV_HEADER_LEN: usize = 16;
/// Room for the source address in each received buffer.
pub(crate) const RECV_NAME_LEN: usize = mem::size_of::<libc::sockaddr_in6>();

/// user_data of requests whose completions are ignored (cancellations).
pub(crate) const IGNORED: u64 = u64::MAX;
/// user_data of the request that watches a wake-up eventfd.
pub(crate) const WAKE: u64 = u64::MAX - 1;

/// Checks that an io_uring with multishot receive and provided buffer rings can be set
/// up here. Returns the reason when it cannot.
pub(crate) fn probe() -> Result<(), String> {
    // Multishot RECVMSG, which receive is built on, arrived in Linux 6.0 (an opcode probe
    // cannot tell: plain RECVMSG is older).
    if !super::kernel_at_least(6, 0) {
        return Err("multishot RECVMSG needs Linux 6.0 or later".into());
    }
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let ring = build_ring(8, 16, true).map_err(|e| {
        let mut r = super::reason("io_uring_setup", &e);
        if disabled != 0 {
            r.push_str(&format!(" (kernel.io_uring_disabled = {disabled})"));
        }
        r
    })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| super::reason("registering an opcode probe", &e))?;
    for (code, name) in [
        (opcode::RecvMsgMulti::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("this kernel's io_uring lacks {name}"));
        }
    }
    // A provided buffer ring (kernel 5.19+) is what multishot receive draws from.
    let mut test = BufRing::new(&ring, 8, 64, 0)
        .map_err(|e| super::reason("registering a buffer ring", &e))?;
    test.unregister(&ring);
    Ok(())
}

/// Sets up an io_uring with a completion queue of `cq_entries` for bursts.
///
/// `single_issuer`: the ring is only ever used by the thread that creates it (a shard's),
/// so it gets `SINGLE_ISSUER` and `DEFER_TASKRUN` (completion work runs when that thread
/// asks for it, not by interrupting it). A ring that may move between threads with its
/// owner (a publisher's: `Publisher` is `Send`) must not have them — submitting from
/// another task would fail with `EEXIST` — and gets `COOP_TASKRUN` instead. Kernels that
/// know none of these flags get a plain ring.
pub(crate) fn build_ring(
    sq_entries: u32,
    cq_entries: u32,
    single_issuer: bool,
) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    builder.setup_cqsize(cq_entries).setup_taskrun_flag();
    if single_issuer {
        builder.setup_single_issuer().setup_defer_taskrun();
    } else {
        builder.setup_coop_taskrun();
    }
    match builder.build(sq_entries) {
        Ok(ring) => Ok(ring),
        // Older kernels lack the flags (EINVAL): a plain ring still works.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(cq_entries)
            .build(sq_entries),
        Err(e) => Err(e),
    }
}

/// Whether an enter's error only means it stopped early (timed out, interrupted, or the
/// completion queue is busy): nothing to report.
pub(crate) fn benign(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
    )
}
