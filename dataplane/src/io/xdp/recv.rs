//! Receiving from an AF_XDP socket: a batch of RX descriptors at a time, each frame's
//! headers checked before its UDP payload goes to the sink in place, the frames lent
//! back to the kernel (fill ring) once the sink returned. See the [module
//! docs](super).
//!
//! Which subscription a frame is for is told by its destination address and port (what
//! the XDP program steered it by) and, for a source-specific join, its source. Every
//! socket of a subscription is also read with `recvmmsg` beside the AF_XDP socket, by an
//! [`MmsgRecv`] that hands out the slots, and one `ppoll` waits for both: its re-request
//! socket (never steered), a caller's own socket, and the joined socket itself, which
//! gets what the program passed to the kernel (a queue with no AF_XDP socket, on a NIC
//! that spreads the group over several queues). A datagram takes one way or the other,
//! never both. Those sockets are read after every wait, and every
//! [`KERNEL_EVERY`]th poll of a shard that does not wait.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::program::SteerProgram;
use super::socket::{XdpSocket, XskStats};
use super::XdpStats;
use crate::io::mmsg::MmsgRecv;
use crate::io::{canonical, BatchRecv, Endpoint, Event, RecvMeta};
use crate::stats::Counter;
use crate::wire::frame::{self, Discard, FrameDiscards};

/// RX descriptors read per batch (and frames lent back per fill-ring submission).
const BATCH: usize = 64;

/// Batches between two readings of the kernel's `XDP_STATISTICS` while busy.
const STATS_EVERY: u32 = 1024;

/// Polls between two reads of the kernel sockets while the shard does not wait (a
/// `recvmmsg` that finds nothing costs a system call: amortised over this many polls).
const KERNEL_EVERY: u32 = 16;

/// Least time between two readings of them before a wait (a system call each: before
/// every wait, they would cost a quiet feed a microsecond per datagram).
const STATS_IDLE: Duration = Duration::from_millis(100);

/// The counters one shard's receiver keeps for its [`Shards`](crate::Shards), read from
/// other threads ([`XdpCounters::snapshot`]).
#[derive(Debug, Default)]
pub(crate) struct XdpCounters {
    frames: Counter,
    delivered: Counter,
    not_subscribed: Counter,
    invalid_descriptors: Counter,
    discards: [Counter; Discard::ALL.len()],
    kernel_rx_dropped: Counter,
    kernel_rx_ring_full: Counter,
    kernel_fill_ring_empty: Counter,
    kernel_rx_invalid: Counter,
}

impl XdpCounters {
    /// What the counters say now.
    pub(crate) fn snapshot(&self) -> XdpStats {
        XdpStats {
            setup: super::XdpSetup::default(),
            frames: self.frames.get(),
            delivered: self.delivered.get(),
            not_subscribed: self.not_subscribed.get(),
            invalid_descriptors: self.invalid_descriptors.get(),
            discards: Discard::ALL
                .iter()
                .zip(&self.discards)
                .map(|(d, n)| (d.name(), n.get()))
                .collect(),
            kernel_rx_dropped: self.kernel_rx_dropped.get(),
            kernel_rx_ring_full: self.kernel_rx_ring_full.get(),
            kernel_fill_ring_empty: self.kernel_fill_ring_empty.get(),
            kernel_rx_invalid: self.kernel_rx_invalid.get(),
            ..XdpStats::default()
        }
    }
}

/// The running totals, kept by the shard thread and published to [`XdpCounters`] once
/// per batch.
#[derive(Debug, Default)]
struct Totals {
    frames: u64,
    delivered: u64,
    not_subscribed: u64,
    invalid_descriptors: u64,
    discards: FrameDiscards,
}

/// A steered group and the slot of its subscription.
#[derive(Debug, Clone, Copy)]
struct Steered {
    /// As frames name it: IPv4-mapped as IPv4, no scope or flow label.
    group: SocketAddr,
    /// The one source of a source-specific join.
    source: Option<IpAddr>,
    slot: u32,
}

/// `addr` as a parsed frame names it.
fn as_on_the_wire(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(addr).ip(), addr.port())
}

/// The AF_XDP receiver of one shard. See the module docs.
pub(crate) struct XdpRecv {
    socket: XdpSocket,
    queue: u32,
    program: Arc<Mutex<SteerProgram>>,
    /// The slots, and the sockets that are not steered.
    kernel: MmsgRecv,
    /// The groups steered to this socket (few: a linear search beats a hash here).
    steered: Vec<Steered>,
    totals: Totals,
    counters: Arc<XdpCounters>,
    batches: u32,
    /// When the kernel's statistics were last read.
    stats_read: Instant,
    /// Polls since the kernel sockets were last read.
    since_kernel: u32,
    /// Whether the socket asked for busy polling: an empty ring then makes a system call
    /// that runs the driver's receive.
    busy_poll: bool,
}

impl XdpRecv {
    /// The receiver of `socket` (bound to `queue`), registered in `program`'s socket map
    /// so that the queue's steered frames come to it, with `kernel` reading the
    /// subscriptions' sockets (and handing out the slots). With `busy_poll` (the socket
    /// asked for it), an empty RX ring makes a non-blocking receive call, which runs the
    /// driver's receive from this thread.
    ///
    /// # Errors
    ///
    /// The socket map refused the socket, or the `recvmmsg` side could not be set up.
    pub(crate) fn new(
        socket: XdpSocket,
        queue: u32,
        program: Arc<Mutex<SteerProgram>>,
        counters: Arc<XdpCounters>,
        mut kernel: MmsgRecv,
        busy_poll: bool,
    ) -> io::Result<XdpRecv> {
        kernel.watch_extra(socket.fd());
        lock(&program).set_socket(queue, socket.fd())?;
        Ok(XdpRecv {
            socket,
            queue,
            program,
            kernel,
            steered: Vec::new(),
            totals: Totals::default(),
            counters,
            batches: 0,
            stats_read: Instant::now(),
            since_kernel: 0,
            busy_poll,
        })
    }

    /// Publishes the running totals.
    fn publish(&self) {
        let (t, c) = (&self.totals, &self.counters);
        c.frames.set(t.frames);
        c.delivered.set(t.delivered);
        c.not_subscribed.set(t.not_subscribed);
        c.invalid_descriptors.set(t.invalid_descriptors);
        for (d, shared) in Discard::ALL.iter().zip(&c.discards) {
            shared.set(t.discards.get(*d));
        }
    }

    /// Reads the kernel's statistics of the socket into the counters.
    fn publish_kernel(&mut self) {
        self.stats_read = Instant::now();
        if let Ok(XskStats {
            rx_dropped,
            rx_ring_full,
            rx_fill_ring_empty_descs,
            rx_invalid_descs,
            ..
        }) = self.socket.statistics()
        {
            let c = &self.counters;
            c.kernel_rx_dropped.set(rx_dropped);
            c.kernel_rx_ring_full.set(rx_ring_full);
            c.kernel_fill_ring_empty.set(rx_fill_ring_empty_descs);
            c.kernel_rx_invalid.set(rx_invalid_descs);
        }
    }

    /// Hands one batch of RX descriptors to `sink`; returns how many were read.
    fn drain_batch(&mut self, sink: &mut impl FnMut(Event<'_>)) -> usize {
        let XdpRecv {
            socket,
            steered,
            totals,
            ..
        } = self;
        // The socket gives every frame back to the fill ring once this returns.
        let n = socket.rx_batch(BATCH, |bytes| {
            totals.frames += 1;
            match frame::parse(bytes) {
                Ok(f) => match steered
                    .iter()
                    .find(|s| s.group == f.dst && s.source.is_none_or(|src| src == f.src.ip()))
                {
                    Some(s) => {
                        totals.delivered += 1;
                        sink(Event::Datagram {
                            slot: s.slot,
                            payload: f.payload,
                            truncated: false,
                            meta: RecvMeta {
                                source: Some(f.src),
                                ..RecvMeta::default()
                            },
                        });
                    }
                    None => totals.not_subscribed += 1,
                },
                Err(reason) => totals.discards.count(reason),
            }
        });
        if n == 0 {
            return 0;
        }
        self.totals.invalid_descriptors = self.socket.counters().invalid_descriptors;
        self.batches = self.batches.wrapping_add(1);
        if self.batches % STATS_EVERY == 0 {
            self.publish_kernel();
        }
        self.publish();
        n
    }
}

/// The program, even if a thread panicked while holding it (its maps are the kernel's
/// and stay consistent).
fn lock(program: &Mutex<SteerProgram>) -> std::sync::MutexGuard<'_, SteerProgram> {
    program
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BatchRecv for XdpRecv {
    fn add(&mut self, endpoint: Endpoint<'_>) -> io::Result<u32> {
        match endpoint {
            Endpoint::Fd {
                group: Some(joined),
                source,
                ..
            } => {
                let group = as_on_the_wire(joined);
                if self.steered.iter().any(|s| s.group == group) {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{group} is already subscribed on this shard: with the XDP \
                             backend a group and port has one subscription per shard"
                        ),
                    ));
                }
                // The joined socket is read too: it gets what the program passes.
                let slot = self.kernel.add(endpoint)?;
                if let Err(e) = lock(&self.program).add_group(group) {
                    let _ = self.kernel.remove(slot);
                    return Err(e);
                }
                self.steered.push(Steered {
                    group,
                    source: source.map(|s| canonical(SocketAddr::new(s, 0)).ip()),
                    slot,
                });
                Ok(slot)
            }
            other => self.kernel.add(other),
        }
    }

    fn remove(&mut self, slot: u32) -> io::Result<()> {
        let mut result = Ok(());
        if let Some(at) = self.steered.iter().position(|s| s.slot == slot) {
            let gone = self.steered.swap_remove(at);
            result = lock(&self.program).remove_group(gone.group);
        }
        self.kernel.remove(slot)?;
        result
    }

    fn watch_wake(&mut self, fd: RawFd) -> io::Result<()> {
        self.kernel.watch_wake(fd)
    }

    fn poll(
        &mut self,
        wait: Option<Duration>,
        sink: &mut impl FnMut(Event<'_>),
    ) -> io::Result<usize> {
        let mut total = self.drain_batch(sink);
        let mut woke = false;
        if total == 0 {
            if self.stats_read.elapsed() >= STATS_IDLE {
                self.publish_kernel();
            }
            match wait {
                Some(d) => {
                    if !self.kernel.wait(d)? {
                        return Ok(0);
                    }
                    woke = true;
                }
                None if self.busy_poll => self.socket.busy_poll_once(),
                None => {}
            }
        }
        // Up to a few batches per poll, so that the shard's other work (timers, commands)
        // still comes round under a flood.
        for _ in 0..4 {
            let n = self.drain_batch(sink);
            total += n;
            if n < BATCH {
                break;
            }
        }
        self.since_kernel += 1;
        if self.kernel.reads_any() && (woke || self.since_kernel >= KERNEL_EVERY) {
            self.since_kernel = 0;
            total += self.kernel.poll(None, sink)?;
        }
        Ok(total)
    }
}

impl Drop for XdpRecv {
    fn drop(&mut self) {
        // The last word of the kernel's counters, for the report after the close.
        self.publish_kernel();
        let mut program = lock(&self.program);
        for s in self.steered.drain(..) {
            let _ = program.remove_group(s.group);
        }
        let _ = program.clear_socket(self.queue);
    }
}
