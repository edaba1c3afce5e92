//! What the data plane will ask of the host: the io_uring rings, provided buffer rings and
//! registered buffers it sets up (which the kernel charges to `RLIMIT_MEMLOCK`), the
//! socket buffers it requests and the threads it starts.
//!
//! The data plane does not audit the host itself. Each configuration says what it needs
//! ([`ShardConfig::host_needs`](crate::ShardConfig::host_needs),
//! [`PublisherConfig::host_needs`](crate::PublisherConfig::host_needs),
//! [`FanoutConfig::host_needs`](crate::FanoutConfig::host_needs)); [`HostNeeds::and`]
//! adds them up; a tool (the `multipoint` command runs the `multipoint-tune` audit) judges
//! the host's limits against the total.

/// Entries of an io_uring's submission and completion queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingSize {
    /// Submission queue entries.
    pub sq: u32,
    /// Completion queue entries.
    pub cq: u32,
}

impl RingSize {
    /// The larger of each queue of the two.
    #[must_use]
    pub fn max(self, other: RingSize) -> RingSize {
        RingSize {
            sq: self.sq.max(other.sq),
            cq: self.cq.max(other.cq),
        }
    }
}

/// What one or more parts of the data plane ask of the host. See the module docs.
///
/// Rings of one kind that differ in size are reported at the size of the largest, so a
/// total errs on the side of asking too much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostNeeds {
    /// Receive shard threads, each with its own io_uring and provided buffer ring.
    pub shards: u32,
    /// A receive shard's io_uring.
    pub shard_ring: RingSize,
    /// Entries of each receive shard's provided buffer ring.
    pub shard_buffers: u16,
    /// Bytes of each receive buffer (payload, `io_uring_recvmsg_out` header, source
    /// address and control messages). Not pinned by the kernel; reported so that the
    /// arithmetic is complete.
    pub shard_buffer_bytes: u64,
    /// Sending threads or objects with an io_uring of their own: publishers and fan-out
    /// shards.
    pub senders: u32,
    /// A sender's io_uring.
    pub sender_ring: RingSize,
    /// Bytes each sender registers as a fixed buffer (zero-copy sends), else 0.
    pub sender_registered_bytes: u64,
    /// io_uring probes run at start-up (one per `Shards::start`, `Publisher::new` and
    /// `Fanout::start`).
    pub probes: u32,
    /// Largest receive buffer a socket asks for (`SO_RCVBUF`).
    pub recv_buffer: u64,
    /// Largest send buffer a socket asks for (`SO_SNDBUF`).
    pub send_buffer: u64,
    /// Threads started.
    pub threads: u32,
}

impl HostNeeds {
    /// What `self` and `other` need together: counts add up, sizes take the larger.
    #[must_use]
    pub fn and(self, other: HostNeeds) -> HostNeeds {
        HostNeeds {
            shards: self.shards + other.shards,
            shard_ring: self.shard_ring.max(other.shard_ring),
            shard_buffers: self.shard_buffers.max(other.shard_buffers),
            shard_buffer_bytes: self.shard_buffer_bytes.max(other.shard_buffer_bytes),
            senders: self.senders + other.senders,
            sender_ring: self.sender_ring.max(other.sender_ring),
            sender_registered_bytes: self
                .sender_registered_bytes
                .max(other.sender_registered_bytes),
            probes: self.probes + other.probes,
            recv_buffer: self.recv_buffer.max(other.recv_buffer),
            send_buffer: self.send_buffer.max(other.send_buffer),
            threads: self.threads + other.threads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_add_counts_and_keep_the_larger_sizes() {
        let shards = |shards, cq, recv_buffer| HostNeeds {
            shards,
            shard_ring: RingSize { sq: 64, cq },
            recv_buffer,
            probes: 1,
            ..HostNeeds::default()
        };
        let (a, b) = (shards(1, 1024, 8 << 20), shards(2, 4096, 4 << 20));
        let both = a.and(b);
        assert_eq!(both.shards, 3);
        assert_eq!(both.probes, 2);
        assert_eq!(both.shard_ring, RingSize { sq: 64, cq: 4096 });
        assert_eq!(both.recv_buffer, 8 << 20);
    }

    #[test]
    fn the_default_shard_and_publisher_need_what_the_host_audit_assumes() {
        let shards = crate::ShardConfig::default().host_needs();
        assert_eq!(shards.shard_ring, RingSize { sq: 64, cq: 1024 });
        assert_eq!(shards.shard_buffers, 64);
        // A GRO batch, the recvmsg_out header, a sockaddr_in6 and the control messages
        // (GRO, drops and a receive stamp).
        assert_eq!(shards.shard_buffer_bytes, 65_535 + 16 + 28 + 128);
        let session = crate::wire::Session::new("NEEDS").unwrap_or_else(|_| unreachable!());
        let group = std::net::SocketAddr::from(([239, 255, 0, 1], 31001));
        let mut config = crate::PublisherConfig::new(session, group);
        let publisher = config.host_needs();
        assert_eq!(publisher.sender_ring, RingSize { sq: 256, cq: 1024 });
        assert_eq!(publisher.sender_registered_bytes, 0);
        config.zero_copy = true;
        assert_eq!(config.host_needs().sender_registered_bytes, 256 * 1472);
        let both = shards.and(publisher);
        assert_eq!((both.shards, both.senders, both.probes), (1, 1, 2));
    }
}
