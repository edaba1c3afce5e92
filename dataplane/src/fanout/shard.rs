//! One fan-out shard: a [`Worker`] of the shard runtime that owns a send backend (on a
//! dup of the root's socket, or on a simulated network), a share of the leaves, and their
//! cursors into the packets the root handed it ([`crate::core::fanout`]). It sends every
//! packet to each of its leaves, from the shared buffer.
//!
//! - The root pushes `(slot, len)` of each packet on the shard's queue; the shard moves
//!   them into the cursors' log, in order.
//! - Each pass, every leaf with packets waiting and no send in flight gets one operation
//!   (up to 64 packets, one GSO send when it holds several); all operations built in one
//!   pass leave in one submission. Completions return the slots no leaf needs any more.
//! - Commands (add, remove, shut down) are applied between passes, never in the middle of
//!   building a send: a leaf added gets whole packets from the next one the shard takes
//!   from its queue; a leaf removed gets no new operation after the reply.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender as Tx;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use socket2::{SockAddr, Socket};

use super::pool::Pool;
use super::FanoutLeafId;
use crate::core::fanout::Cursors;
use crate::error::{Error, Result};
use crate::host::RingSize;
use crate::io::op::OpTable;
use crate::io::{BatchSend, Completion, Sending};
use crate::runtime::wake::Wake;
use crate::runtime::{self, Worker};
use crate::stat::Entry;
use crate::stats::Counter;

/// How long a shard that was told to stop keeps sending what it still has.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A shard's counters (written by its thread only).
#[derive(Debug, Default)]
pub(crate) struct ShardCounters {
    pub(crate) deliveries: Counter,
    pub(crate) send_ops: Counter,
    pub(crate) gso_ops: Counter,
    pub(crate) send_errors: Counter,
}

/// One leaf's counters (written by its shard's thread only).
#[derive(Debug, Default)]
pub(crate) struct LeafCounters {
    pub(crate) deliveries: Counter,
    pub(crate) send_errors: Counter,
    /// Its entry in the counters file (`multipoint stat`), written at each completion.
    pub(crate) stat: Option<Entry>,
}

impl LeafCounters {
    /// Writes the counters into the counters file.
    #[inline]
    fn publish(&self) {
        if let Some(entry) = &self.stat {
            entry.publish(&[self.deliveries.get(), self.send_errors.get()]);
        }
    }
}

/// What the owner asks of a shard.
pub(crate) enum Command {
    /// Start sending to `addr`; the reply is the leaf's slot in the shard.
    Add {
        id: FanoutLeafId,
        addr: SockAddr,
        counters: Arc<LeafCounters>,
        reply: Tx<Result<u32>>,
    },
    /// Stop sending to the leaf `id` in `slot`.
    Remove {
        id: FanoutLeafId,
        slot: u32,
        reply: Tx<()>,
    },
    /// Send what is queued, then stop.
    Shutdown,
}

/// What the root and the control side share with one shard.
#[derive(Debug)]
pub(crate) struct Link {
    /// Commands, and the shard's wake-up.
    pub(crate) commands: runtime::Link<Command>,
    /// Packets `(slot, len)`; room for every slot of the pool, so a push never fails.
    pub(crate) queue: Arc<ArrayQueue<(u16, u16)>>,
    /// The shard's number of leaves (written by the shard).
    pub(crate) leaves: Arc<CachePadded<AtomicUsize>>,
    pub(crate) counters: Arc<ShardCounters>,
}

/// One operation per leaf in flight, plus room for those of leaves removed while their
/// last send was still out.
pub(crate) fn max_ops(max_leaves: usize) -> usize {
    (max_leaves + 64).min(usize::from(u16::MAX))
}

/// The io_uring of a shard with room for `max_leaves`: a completion for every operation.
pub(crate) fn ring_size(max_leaves: usize) -> RingSize {
    RingSize {
        sq: 256,
        cq: (max_ops(max_leaves) as u32 + 8)
            .next_power_of_two()
            .max(256),
    }
}

/// What a shard sends to about one leaf.
struct LeafLink {
    addr: SockAddr,
    counters: Arc<LeafCounters>,
}

/// What a shard shares with its link, and how it is set up.
pub(crate) struct Setup {
    pub(crate) index: usize,
    pub(crate) pool: Arc<Pool>,
    pub(crate) max_leaves: usize,
    pub(crate) spawn: runtime::Spawn,
}

/// Starts a shard on the send backend `make` builds on the shard's thread (given the
/// operations, which the shard's wake-up eventfd wakes); `socket` is the dup of the
/// root's socket the backend sends on, kept open as long as the backend (none on a
/// simulated network). Runs may leave as GSO sends while `gso`.
pub(crate) fn start<S, F>(
    setup: Setup,
    socket: Option<Socket>,
    gso: bool,
    make: F,
) -> Result<(Link, std::thread::JoinHandle<()>)>
where
    S: BatchSend + 'static,
    F: FnOnce(OpTable) -> std::io::Result<Sending<S>> + Send + 'static,
{
    let Setup {
        index,
        pool,
        max_leaves,
        spawn,
    } = setup;
    let queue = Arc::new(ArrayQueue::new(pool.count()));
    let leaves = Arc::new(CachePadded::new(AtomicUsize::new(0)));
    let counters = Arc::new(ShardCounters::default());
    let (shard_queue, shard_leaves, shard_counters) = (
        Arc::clone(&queue),
        Arc::clone(&leaves),
        Arc::clone(&counters),
    );
    let (commands, thread) = runtime::spawn(spawn, move |wake: &Arc<Wake>| {
        let ops = max_ops(max_leaves);
        let table = OpTable::new(ops, gso, Some(wake.fd()));
        let sender = make(table).map_err(Error::io("setting up a fan-out shard's sender"))?;
        Ok(Shard {
            sender,
            _socket: socket,
            index,
            cursors: Cursors::new(pool.count(), max_leaves, ops),
            pool,
            queue: shard_queue,
            wake: Arc::clone(wake),
            leaf_count: shard_leaves,
            counters: shard_counters,
            stopping: None,
        })
    })?;
    let link = Link {
        commands,
        queue,
        leaves,
        counters,
    };
    Ok((link, thread))
}

/// A fan-out shard on send backend `S`. See the module docs.
struct Shard<S> {
    // `sender` must stay declared before `_socket`: it sends on the socket's descriptor.
    sender: Sending<S>,
    _socket: Option<Socket>,
    index: usize,
    pool: Arc<Pool>,
    queue: Arc<ArrayQueue<(u16, u16)>>,
    wake: Arc<Wake>,
    leaf_count: Arc<CachePadded<AtomicUsize>>,
    counters: Arc<ShardCounters>,
    cursors: Cursors<LeafLink>,
    /// Set when told to stop: the deadline for what is left.
    stopping: Option<Instant>,
}

impl<S: BatchSend> Shard<S> {
    fn add(
        &mut self,
        id: FanoutLeafId,
        addr: SockAddr,
        counters: Arc<LeafCounters>,
    ) -> Result<u32> {
        let Some(slot) = self.cursors.add(id.get(), LeafLink { addr, counters }) else {
            return Err(Error::Config(format!(
                "fan-out shard {} already has its {} leaves",
                self.index,
                self.cursors.capacity()
            )));
        };
        // SeqCst: pairs with the root's promise store and count load in `send_ready`.
        self.leaf_count.store(self.cursors.len(), Ordering::SeqCst);
        Ok(slot)
    }

    fn remove(&mut self, id: FanoutLeafId, slot: u32) {
        if self.cursors.remove(id.get(), slot, &*self.pool) {
            self.leaf_count.store(self.cursors.len(), Ordering::Release);
        }
    }

    /// Moves packets from the queue into the log; returns whether there were any.
    fn take_packets(&mut self) -> bool {
        let mut any = false;
        while !self.cursors.is_full() {
            let Some((slot, len)) = self.queue.pop() else {
                break;
            };
            any = true;
            self.cursors.handle_packet(slot, len, &*self.pool);
        }
        any
    }

    /// Runs `step` on the sender, with every completion it reports accounted for.
    fn with_sender<R>(
        &mut self,
        step: impl FnOnce(&mut Sending<S>, &mut dyn FnMut(Completion)) -> R,
    ) -> R {
        let Shard {
            sender,
            cursors,
            pool,
            counters,
            ..
        } = self;
        step(sender, &mut |c| complete(cursors, pool, counters, c))
    }

    /// Collects finished sends; returns how many.
    fn reap(&mut self) -> usize {
        self.with_sender(|sender, mut done| sender.reap(false, &mut done))
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "collecting fan-out completions failed");
                0
            })
    }

    /// Builds one operation for every leaf that has packets to send and none in flight,
    /// and hands them to the kernel together; returns how many.
    fn send(&mut self) -> usize {
        let gso = self.sender.gso();
        let mut built = 0;
        for i in 0..self.cursors.len() {
            let Some(run) = self.cursors.next_run(i, gso) else {
                continue;
            };
            let Some(leaf) = self.cursors.leaf(run.leaf) else {
                continue;
            };
            let Some(op) = self.sender.take_op() else {
                break;
            };
            let (cursors, pool) = (&self.cursors, &self.pool);
            // SAFETY: the slots of these entries stay shared with this shard (their
            // pending counts include this leaf) until this operation's completion
            // finishes them, so nobody writes or unmaps them before the kernel is done
            // reading.
            unsafe {
                self.sender
                    .ops_mut()
                    .fill(op, &leaf.addr, run.count, None, |k| {
                        let (slot, len) = cursors.packet(run.first + k as u64);
                        (pool.slot_ptr(slot), usize::from(len))
                    });
            }
            self.cursors.start_send(run, op);
            self.counters.send_ops.add(1);
            if run.count > 1 {
                self.counters.gso_ops.add(1);
            }
            built += 1;
            if let Err(e) = self.sender.queue(op, false) {
                // It never reached the kernel: the leaf sees a gap, as for a failed send.
                tracing::debug!(error = %e, "a fan-out send could not be queued");
                let failed = Completion {
                    op,
                    packets: run.count,
                    result: -libc::EBUSY,
                };
                complete(&mut self.cursors, &self.pool, &self.counters, failed);
            }
        }
        if built > 0 {
            if let Err(e) = self.with_sender(|sender, mut done| sender.flush(&mut done)) {
                // They stay queued; the next submit retries.
                tracing::debug!(error = %e, "submitting fan-out sends failed");
            }
        }
        built
    }
}

impl<S: BatchSend> Worker for Shard<S> {
    type Command = Command;

    fn command(&mut self, command: Command) {
        match command {
            Command::Add {
                id,
                addr,
                counters,
                reply,
            } => {
                let _ = reply.send(self.add(id, addr, counters));
            }
            Command::Remove { id, slot, reply } => {
                self.remove(id, slot);
                let _ = reply.send(());
            }
            Command::Shutdown => self.orphaned(),
        }
    }

    fn orphaned(&mut self) {
        if self.stopping.is_none() {
            self.stopping = Some(Instant::now() + STOP_TIMEOUT);
        }
    }

    fn done(&mut self) -> bool {
        let Some(deadline) = self.stopping else {
            return false;
        };
        let idle =
            self.queue.is_empty() && self.cursors.unfinished() == 0 && self.sender.in_flight() == 0;
        if idle {
            return true;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                shard = self.index,
                in_flight = self.sender.in_flight(),
                unsent = self.cursors.unfinished(),
                "fan-out shard stopping with sends unfinished"
            );
            return true;
        }
        false
    }

    fn turn(&mut self, wait: Option<Duration>, commands_waiting: &dyn Fn() -> bool) -> bool {
        let mut progress = self.take_packets();
        progress |= self.reap() > 0;
        progress |= self.send() > 0;
        self.cursors.trim();
        if let (false, Some(timeout)) = (progress, wait) {
            self.wake.sleeping();
            if self.queue.is_empty() && !commands_waiting() {
                self.with_sender(|sender, mut done| sender.wait(timeout, &mut done));
            }
            self.wake.awake();
        }
        progress
    }
}

impl<S> Drop for Shard<S> {
    fn drop(&mut self) {
        // Nothing reads the count once the threads are joined, but a late reader must not
        // hand packets to a shard that is gone.
        self.leaf_count.store(0, Ordering::Release);
    }
}

/// Accounts for one finished operation: its entries, its leaf, the shard's counters.
fn complete(cursors: &mut Cursors<LeafLink>, pool: &Pool, counters: &ShardCounters, c: Completion) {
    let packets = c.packets as u64;
    let ok = c.result >= 0;
    if ok {
        counters.deliveries.add(packets);
    } else {
        counters.send_errors.add(packets);
        tracing::debug!(errno = -c.result, "a fan-out send failed");
    }
    if let Some(leaf) = cursors.complete(c.op, pool) {
        if ok {
            leaf.counters.deliveries.add(packets);
        } else {
            leaf.counters.send_errors.add(packets);
        }
        leaf.counters.publish();
    }
}

/// The leaf's address as the root's socket wants it: IPv4 leaves of an IPv6 socket as
/// IPv4-mapped IPv6 addresses.
pub(crate) fn leaf_address(addr: SocketAddr, socket_is_v6: bool) -> Option<SockAddr> {
    match (addr, socket_is_v6) {
        (SocketAddr::V4(v4), true) => Some(SockAddr::from(SocketAddr::from((
            v4.ip().to_ipv6_mapped(),
            v4.port(),
        )))),
        (SocketAddr::V6(_), false) => None,
        (addr, _) => Some(SockAddr::from(addr)),
    }
}
