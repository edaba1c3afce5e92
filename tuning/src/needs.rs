//! What the caller will ask of the host, so that limits are judged against real needs:
//! the io_uring rings, buffer rings and registered buffers it sets up (charged to
//! `RLIMIT_MEMLOCK`), its socket buffer requests, its threads and its group memberships.
//!
//! # What the kernel charges to `RLIMIT_MEMLOCK`
//!
//! For a process without `CAP_IPC_LOCK`, Linux 6.18 charges (measured on this kernel
//! with `prlimit --memlock` and an unprivileged user; each rounded up to whole pages):
//!
//! - each io_uring: its ring area (a 64-byte header, 16 bytes per CQ entry, aligned to 64
//!   bytes, then 4 bytes per SQ entry) plus its SQE array (64 bytes per SQ entry). 64 SQ /
//!   1024 CQ entries: 5 + 1 pages; 256 / 1024: 5 + 4 pages. Entry counts are rounded up
//!   to powers of two first.
//! - each provided buffer ring: 16 bytes per entry. The receive buffers it names are
//!   *not* pinned: the kernel copies into them like any user memory.
//! - each registered (fixed) buffer: its whole length.
//!
//! The charge is per user (every process of the user counts), and a closed ring's charge
//! is returned asynchronously, a little after the close.

use std::fmt;

/// Entries of an io_uring's submission and completion queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSize {
    /// Submission queue entries.
    pub sq: u32,
    /// Completion queue entries.
    pub cq: u32,
}

/// What the caller will register and request. [`Needs::default`] is the data plane's
/// defaults: one shard (`ShardConfig::default()`), one publisher
/// (`PublisherConfig::default()`, zero-copy off), one group per socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// Shard threads (each with its own io_uring and provided buffer ring).
    pub shards: u32,
    /// A shard's io_uring: 64 SQ entries, `max(1024, 4 × buffers)` CQ entries.
    pub shard_ring: RingSize,
    /// Entries of each shard's provided buffer ring (`ShardConfig::buffers`, 64).
    pub shard_buffers: u16,
    /// Bytes of each receive buffer (65,535-byte GRO payload + 16-byte
    /// `io_uring_recvmsg_out` + 28-byte address + 64 bytes of control = 65,643). Not
    /// pinned; reported so the arithmetic is complete.
    pub shard_buffer_bytes: u64,
    /// Publishers (each with its own io_uring).
    pub publishers: u32,
    /// A publisher's io_uring: 256 SQ / 1024 CQ entries.
    pub publisher_ring: RingSize,
    /// Bytes each publisher registers as a fixed buffer: `buffers × max_datagram`
    /// (256 × 1472 = 376,832) when `zero_copy` is on (Linux 6.15+), else 0.
    pub publisher_registered_bytes: u64,
    /// io_uring probes run at start-up (one by `Shards::start`, one per publisher): 8 SQ /
    /// 16 CQ entries and an 8-entry buffer ring each. Counted because the kernel returns
    /// a closed ring's charge only after the close.
    pub probes: u32,
    /// Receive buffer each subscription socket asks for (`SO_RCVBUF`, 8 MiB).
    pub recv_buffer: u64,
    /// Send buffer each publisher socket asks for (`SO_SNDBUF`, 4 MiB).
    pub send_buffer: u64,
    /// Most IPv4 groups joined on one socket (the data plane joins one per socket).
    pub memberships_per_socket: u32,
    /// Most sources filtered for one group on one socket (source-specific joins; 0 for
    /// any-source joins).
    pub sources_per_socket: u32,
}

impl Default for Needs {
    fn default() -> Needs {
        Needs {
            shards: 1,
            shard_ring: RingSize { sq: 64, cq: 1024 },
            shard_buffers: 64,
            shard_buffer_bytes: 65_535 + 16 + 28 + 128,
            publishers: 1,
            publisher_ring: RingSize { sq: 256, cq: 1024 },
            publisher_registered_bytes: 0,
            probes: 2,
            recv_buffer: 8 << 20,
            send_buffer: 4 << 20,
            memberships_per_socket: 1,
            sources_per_socket: 0,
        }
    }
}

/// Bytes rounded up to whole pages.
fn pages(bytes: u64, page: u64) -> u64 {
    bytes.div_ceil(page.max(1)) * page.max(1)
}

/// Bytes an io_uring of `size` charges to `RLIMIT_MEMLOCK` (see the module docs).
pub fn ring_locked_bytes(size: RingSize, page: u64) -> u64 {
    let sq = u64::from(size.sq.max(1).next_power_of_two());
    let cq = u64::from(size.cq.max(1).next_power_of_two()).max(sq);
    let rings = (64 + 16 * cq).next_multiple_of(64) + 4 * sq;
    pages(rings, page) + pages(64 * sq, page)
}

/// Bytes a provided buffer ring of `entries` charges to `RLIMIT_MEMLOCK`.
pub fn buffer_ring_locked_bytes(entries: u16, page: u64) -> u64 {
    pages(16 * u64::from(entries.max(1).next_power_of_two()), page)
}

impl Needs {
    /// Bytes charged for one shard: its ring and its buffer ring.
    pub fn shard_locked_bytes(&self, page: u64) -> u64 {
        ring_locked_bytes(self.shard_ring, page)
            + buffer_ring_locked_bytes(self.shard_buffers, page)
    }

    /// Bytes charged for one publisher: its ring and its registered buffer.
    pub fn publisher_locked_bytes(&self, page: u64) -> u64 {
        let registered = if self.publisher_registered_bytes == 0 {
            0
        } else {
            pages(self.publisher_registered_bytes, page)
        };
        ring_locked_bytes(self.publisher_ring, page) + registered
    }

    /// Bytes charged for one start-up probe.
    pub fn probe_locked_bytes(page: u64) -> u64 {
        use crate::probe::{PROBE_BUFFERS, PROBE_CQ, PROBE_SQ};
        ring_locked_bytes(
            RingSize {
                sq: PROBE_SQ,
                cq: PROBE_CQ,
            },
            page,
        ) + buffer_ring_locked_bytes(PROBE_BUFFERS, page)
    }

    /// Everything the caller will have charged to `RLIMIT_MEMLOCK` at once.
    pub fn locked_bytes(&self, page: u64) -> u64 {
        u64::from(self.shards) * self.shard_locked_bytes(page)
            + u64::from(self.publishers) * self.publisher_locked_bytes(page)
            + u64::from(self.probes) * Needs::probe_locked_bytes(page)
    }

    /// The arithmetic behind [`locked_bytes`](Self::locked_bytes), in words.
    pub fn explain_locked(&self, page: u64) -> String {
        let shard_ring = ring_locked_bytes(self.shard_ring, page);
        let buf_ring = buffer_ring_locked_bytes(self.shard_buffers, page);
        let pub_ring = ring_locked_bytes(self.publisher_ring, page);
        let registered = self.publisher_locked_bytes(page) - pub_ring;
        format!(
            "{shards} shard(s) × (ring {ssq} SQ/{scq} CQ: {sr} + buffer ring {sb} entries × 16 B: \
             {br}) + {pubs} publisher(s) × (ring {psq} SQ/{pcq} CQ: {pr} + registered buffer: {rb}) \
             + {probes} start-up probe(s) × {pp} = {total} ({bytes} bytes, in {page}-byte pages). \
             The {sb} receive buffers of {bb} bytes per shard ({all}) are not charged: a provided \
             buffer ring only names them",
            shards = self.shards,
            ssq = self.shard_ring.sq,
            scq = self.shard_ring.cq,
            sr = Bytes(shard_ring),
            sb = self.shard_buffers,
            br = Bytes(buf_ring),
            pubs = self.publishers,
            psq = self.publisher_ring.sq,
            pcq = self.publisher_ring.cq,
            pr = Bytes(pub_ring),
            rb = Bytes(registered),
            probes = self.probes,
            pp = Bytes(Needs::probe_locked_bytes(page)),
            total = Bytes(self.locked_bytes(page)),
            bytes = self.locked_bytes(page),
            bb = self.shard_buffer_bytes,
            all = Bytes(u64::from(self.shard_buffers) * self.shard_buffer_bytes),
        )
    }
}

/// A byte count for people: `88 KiB`, `4.0 MiB`, `512 B`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bytes(pub(crate) u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b == u64::MAX {
            f.write_str("unlimited")
        } else if b >= 1 << 30 && b % (1 << 30) == 0 {
            write!(f, "{} GiB", b >> 30)
        } else if b >= 1 << 20 && b % (1 << 20) == 0 {
            write!(f, "{} MiB", b >> 20)
        } else if b >= 1 << 20 {
            write!(f, "{:.1} MiB", b as f64 / f64::from(1 << 20))
        } else if b >= 1 << 10 && b % (1 << 10) == 0 {
            write!(f, "{} KiB", b >> 10)
        } else if b >= 1 << 10 {
            write!(f, "{:.1} KiB", b as f64 / 1024.0)
        } else {
            write!(f, "{b} B")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_charges_match_what_this_kernel_refused_and_accepted() {
        // Measured on 6.18 with prlimit: 64/1024 needs 24 KiB, 256/1024 36 KiB, 8/16 8 KiB.
        assert_eq!(
            ring_locked_bytes(RingSize { sq: 64, cq: 1024 }, 4096),
            24 << 10
        );
        assert_eq!(
            ring_locked_bytes(RingSize { sq: 256, cq: 1024 }, 4096),
            36 << 10
        );
        assert_eq!(ring_locked_bytes(RingSize { sq: 8, cq: 16 }, 4096), 8 << 10);
        assert_eq!(buffer_ring_locked_bytes(1024, 4096), 16 << 10);
        assert_eq!(buffer_ring_locked_bytes(64, 4096), 4 << 10);
    }

    #[test]
    fn data_plane_defaults_lock_88_kib_and_456_kib_with_zero_copy() {
        let needs = Needs::default();
        assert_eq!(needs.locked_bytes(4096), 88 << 10);
        let zc = Needs {
            publisher_registered_bytes: 256 * 1472,
            ..Needs::default()
        };
        assert_eq!(zc.locked_bytes(4096), 456 << 10);
    }
}
