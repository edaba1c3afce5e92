//! The sans-IO core: the data plane's decisions, written once and tested without a
//! network.
//!
//! Nothing here owns a socket, a thread or a clock. Each piece takes bytes, events and the
//! time, and says what to send and when to wake:
//!
//! - [`packetizer`]: packing offered messages into MoldUDP64 packets in buffers the caller
//!   owns — numbering, batches, flushes, the maximum-delay deadline, heartbeats and the
//!   end of session. Both the [`Publisher`](crate::Publisher) and the
//!   [`Fanout`](crate::Fanout) drive one.
//! - [`receive`]: one subscription's receive state — the checked parse of every
//!   datagram, the session filter, sequencing, gap and duplicate accounting, and the
//!   events its [`Handler`](receive::Handler) sees. Shards drive one per subscription.
//! - [`lines`]: the per-line book of a receive state that arbitrates between two
//!   redundant lines of one stream (A/B): wins, duplicates, each line's gaps and those
//!   it had alone, how far behind the other it runs, and a line gone silent.
//! - [`sequence`]: the sequence tracker the receive state is built on; the receive
//!   state's reorder window keeps its held packets in a crate-internal arena.
//! - the fan-out's per-leaf cursors and slot accounting (crate-internal, driven by the
//!   fan-out shards).
//! - [`store`]: the retransmission store, the last messages sent, which a packetizer
//!   given one fills with every data packet it closes.
//! - [`server`]: the re-request server's decisions — which MoldUDP64 Requests are
//!   answered from the store, and the per-address buckets that keep replies from
//!   amplifying a flood.
//! - [`stamps`]: the kernel's share of latency — kernel receive stamps turned into a
//!   wire→application histogram, and the sampler that matches transmit stamps to their
//!   sends (send→wire).
//!
//! Time comes in as an [`Instant`] or through a [`Clock`]: [`SystemClock`] in
//! production, [`FakeClock`] in tests, so that deadlines are checked exactly.

pub mod event;
pub(crate) mod fanout;
pub mod lines;
pub(crate) mod lock;
pub mod packetizer;
pub mod receive;
pub mod recovery;
pub(crate) mod reorder;
pub mod sequence;
pub mod server;
pub mod stamps;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the core reads the time when it needs it (and only then: reading a clock costs
/// tens of nanoseconds, which matter per message).
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
}

/// The monotonic system clock ([`Instant::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, for tests: deadlines can be checked to the
/// nanosecond. Starts at the [`Instant`] it was made at; shareable between threads.
#[derive(Debug)]
pub struct FakeClock {
    start: Instant,
    offset_ns: AtomicU64,
}

impl FakeClock {
    /// A clock standing at the present moment.
    pub fn new() -> FakeClock {
        FakeClock {
            start: Instant::now(),
            offset_ns: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// How far the clock moved since it was made.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset_ns.load(Ordering::Relaxed))
    }
}

impl Default for FakeClock {
    fn default() -> FakeClock {
        FakeClock::new()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }
}
