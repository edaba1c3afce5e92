//! One fan-out shard: a thread that owns a dup of the root's socket, a send engine (an
//! io_uring or sendmmsg), a share of the leaves, and a log of the packets the root handed
//! it. It sends every packet of its log to each of its leaves, from the shared buffer.
//!
//! # How a shard works
//!
//! - The root pushes `(slot, len)` of each packet on the shard's queue. The shard moves
//!   them into its log, in order; a log entry counts the leaves that still have to send
//!   it (all of the shard's leaves at the time).
//! - Each leaf has a cursor into the log and at most one send operation in flight, so its
//!   packets leave in order whatever the kernel does. When it has none in flight and the
//!   log holds packets past its cursor, the next run of them (up to 64, as one GSO send
//!   when it holds several) becomes one operation; all operations built in one pass leave
//!   in one submission.
//! - When an operation completes, its entries' counts drop; an entry no leaf needs any
//!   more releases its slot to the pool (the last shard to release it frees it). A leaf
//!   finishes its entries in order, so finished entries form a prefix of the log and the
//!   log never holds more entries than there are slots.
//! - Commands (add, remove, shut down) are applied between passes, never in the middle
//!   of building a send: a leaf added gets whole packets from the next one the shard takes
//!   from its queue; a leaf removed gets no new operation after the reply.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver as Rx, Sender as Tx, TryRecvError};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use socket2::{SockAddr, Socket};

use super::pool::Pool;
use super::wake::Wake;
use super::LeafId;
use crate::config::{BackendKind, IdleStrategy, BACKOFF_SPIN};
use crate::error::{Error, Result};
use crate::host::RingSize;
use crate::io::send::build_ring;
use crate::io::unicast::{Done, UnicastSender};
use crate::io::{gso_run, MAX_GSO_SEGMENTS};
use crate::stats::Counter;

/// How long a shard that was told to stop keeps sending what it still has.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a blocked shard sleeps before looking around anyway.
const BLOCK_WAIT: Duration = Duration::from_millis(10);

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
}

/// What the owner asks of a shard.
pub(crate) enum Command {
    /// Start sending to `addr`; the reply is the leaf's slot in the shard.
    Add {
        id: LeafId,
        addr: SockAddr,
        counters: Arc<LeafCounters>,
        reply: Tx<Result<u32>>,
    },
    /// Stop sending to the leaf `id` in `slot`.
    Remove {
        id: LeafId,
        slot: u32,
        reply: Tx<()>,
    },
    /// Send what is queued, then stop.
    Shutdown,
}

/// What the root and the control side share with one shard.
#[derive(Debug)]
pub(crate) struct Link {
    /// Commands.
    pub(crate) tx: Tx<Command>,
    /// Packets `(slot, len)`; room for every slot of the pool, so a push never fails.
    pub(crate) queue: Arc<ArrayQueue<(u16, u16)>>,
    pub(crate) wake: Arc<Wake>,
    /// The shard's number of leaves (written by the shard).
    pub(crate) leaves: Arc<CachePadded<AtomicUsize>>,
    pub(crate) counters: Arc<ShardCounters>,
}

/// How to set up a shard.
pub(crate) struct Setup {
    pub(crate) index: usize,
    pub(crate) kind: BackendKind,
    pub(crate) socket: Socket,
    pub(crate) pool: Arc<Pool>,
    pub(crate) idle: IdleStrategy,
    pub(crate) gso: bool,
    pub(crate) max_leaves: usize,
    pub(crate) pin: Option<usize>,
}

/// One operation per leaf in flight, plus room for those of leaves removed while their
/// last send was still out.
fn max_ops(max_leaves: usize) -> usize {
    (max_leaves + 64).min(usize::from(u16::MAX))
}

/// The io_uring of a shard with room for `max_leaves`: a completion for every operation.
pub(crate) fn ring_size(max_leaves: usize) -> RingSize {
    RingSize {
        sq: 256,
        cq: (max_ops(max_leaves) as u32 + 8).next_power_of_two().max(256),
    }
}

/// Starts a shard thread; returns its link and its thread once its engine is set up.
pub(crate) fn spawn(setup: Setup) -> Result<(Link, JoinHandle<()>)> {
    let index = setup.index;
    let (tx, rx) = crossbeam_channel::bounded::<Command>(64);
    let queue = Arc::new(ArrayQueue::new(setup.pool.count()));
    let wake = Arc::new(Wake::new().map_err(Error::io("creating a fan-out shard's eventfd"))?);
    let leaves = Arc::new(CachePadded::new(AtomicUsize::new(0)));
    let counters = Arc::new(ShardCounters::default());
    let link = Link {
        tx,
        queue: Arc::clone(&queue),
        wake: Arc::clone(&wake),
        leaves: Arc::clone(&leaves),
        counters: Arc::clone(&counters),
    };
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<()>>(1);
    let thread = std::thread::Builder::new()
        .name(format!("mp-fanout-{index}"))
        .spawn(move || {
            if let Some(cpu) = setup.pin {
                pin_to(cpu);
            }
            let shard = match Shard::new(setup, rx, queue, wake, leaves, counters) {
                Ok(shard) => {
                    let _ = ready_tx.send(Ok(()));
                    shard
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            shard.run();
        })
        .map_err(Error::io("spawning a fan-out shard thread"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((link, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(Error::ShardGone(index))
        }
    }
}

fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
            tracing::warn!(cpu, error = %e, "could not pin a fan-out shard thread");
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    slot: u16,
    len: u16,
    /// Leaves of this shard that have not finished sending it.
    pending: u32,
}

/// The packets handed to the shard, in order, until every leaf is done with them.
struct Log {
    entries: Box<[Entry]>,
    mask: u64,
    /// Position of the next packet to arrive.
    head: u64,
    /// Oldest packet some leaf still needs.
    tail: u64,
}

impl Log {
    fn new(capacity: usize) -> Log {
        let capacity = capacity.next_power_of_two();
        Log {
            entries: vec![Entry::default(); capacity].into_boxed_slice(),
            mask: capacity as u64 - 1,
            head: 0,
            tail: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.head - self.tail >= self.entries.len() as u64
    }

    fn at(&mut self, position: u64) -> &mut Entry {
        &mut self.entries[(position & self.mask) as usize]
    }

    /// One leaf is done with the entry at `position`: the last one releases its slot.
    fn finish(&mut self, position: u64, pool: &Pool) {
        let entry = self.at(position);
        entry.pending = entry.pending.saturating_sub(1);
        if entry.pending == 0 {
            pool.release(entry.slot);
        }
    }

    /// Forgets the entries every leaf is done with.
    fn trim(&mut self) {
        while self.tail < self.head && self.entries[(self.tail & self.mask) as usize].pending == 0 {
            self.tail += 1;
        }
    }
}

struct Leaf {
    id: LeafId,
    generation: u32,
    addr: SockAddr,
    /// Position in the log of the next packet to send it.
    cursor: u64,
    in_flight: bool,
    counters: Arc<LeafCounters>,
}

/// What an operation in flight was for.
#[derive(Debug, Clone, Copy, Default)]
struct OpMeta {
    leaf: u32,
    generation: u32,
    first: u64,
    count: u16,
}

struct Shard {
    // `sender` must stay declared before `socket`: it sends on the socket's descriptor.
    sender: UnicastSender,
    _socket: Socket,
    index: usize,
    pool: Arc<Pool>,
    queue: Arc<ArrayQueue<(u16, u16)>>,
    rx: Rx<Command>,
    wake: Arc<Wake>,
    leaf_count: Arc<CachePadded<AtomicUsize>>,
    counters: Arc<ShardCounters>,
    log: Log,
    leaves: Vec<Option<Leaf>>,
    /// Slots of `leaves` in use (capacity reserved up front).
    active: Vec<u32>,
    ops: Box<[OpMeta]>,
    next_generation: u32,
    idle: IdleStrategy,
    /// When the shard last made progress (for `IdleStrategy::Backoff`).
    last_work: Instant,
    /// Set when told to stop: the deadline for what is left.
    stopping: Option<Instant>,
}

impl Shard {
    fn new(
        setup: Setup,
        rx: Rx<Command>,
        queue: Arc<ArrayQueue<(u16, u16)>>,
        wake: Arc<Wake>,
        leaf_count: Arc<CachePadded<AtomicUsize>>,
        counters: Arc<ShardCounters>,
    ) -> Result<Shard> {
        let max_ops = max_ops(setup.max_leaves);
        let ring = match setup.kind {
            BackendKind::Uring => {
                let size = ring_size(setup.max_leaves);
                Some(
                    build_ring(size.sq, size.cq, true)
                        .map_err(Error::io("setting up a fan-out shard's io_uring"))?,
                )
            }
            BackendKind::Mmsg => None,
        };
        let sender = UnicastSender::new(
            setup.socket.as_raw_fd(),
            wake.fd(),
            ring,
            max_ops,
            setup.gso,
        )
        .map_err(Error::io("setting up a fan-out shard's sender"))?;
        Ok(Shard {
            sender,
            _socket: setup.socket,
            index: setup.index,
            log: Log::new(setup.pool.count()),
            pool: setup.pool,
            queue,
            rx,
            wake,
            leaf_count,
            counters,
            leaves: (0..setup.max_leaves).map(|_| None).collect(),
            active: Vec::with_capacity(setup.max_leaves),
            ops: vec![OpMeta::default(); max_ops].into_boxed_slice(),
            next_generation: 1,
            idle: setup.idle,
            last_work: Instant::now(),
            stopping: None,
        })
    }

    fn run(mut self) {
        loop {
            let mut progress = self.commands();
            progress |= self.take_packets();
            progress |= self.reap() > 0;
            progress |= self.send() > 0;
            self.log.trim();
            if let Some(deadline) = self.stopping {
                let idle = self.queue.is_empty()
                    && self.log.tail == self.log.head
                    && self.sender.in_flight() == 0;
                if idle {
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        shard = self.index,
                        in_flight = self.sender.in_flight(),
                        unsent = self.log.head - self.log.tail,
                        "fan-out shard stopping with sends unfinished"
                    );
                    break;
                }
            }
            if progress {
                if self.idle == IdleStrategy::Backoff {
                    self.last_work = Instant::now();
                }
            } else {
                self.idle();
            }
        }
        // Release what is left so that the pool's count is right (nothing reads it any
        // more once the threads are joined, but a late leaf count must not leak slots).
        self.leaf_count.store(0, Ordering::Release);
    }

    /// Applies the commands waiting; returns whether there were any.
    fn commands(&mut self) -> bool {
        let mut any = false;
        loop {
            match self.rx.try_recv() {
                Ok(Command::Add {
                    id,
                    addr,
                    counters,
                    reply,
                }) => {
                    let _ = reply.send(self.add(id, addr, counters));
                }
                Ok(Command::Remove { id, slot, reply }) => {
                    self.remove(id, slot);
                    let _ = reply.send(());
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    if self.stopping.is_none() {
                        self.stopping = Some(Instant::now() + STOP_TIMEOUT);
                    }
                    // Once stopping, the channel stays closed or quiet: do not spin on it.
                    return any;
                }
                Err(TryRecvError::Empty) => return any,
            }
            any = true;
        }
    }

    fn add(&mut self, id: LeafId, addr: SockAddr, counters: Arc<LeafCounters>) -> Result<u32> {
        let Some(slot) = self.leaves.iter().position(Option::is_none) else {
            return Err(Error::Config(format!(
                "fan-out shard {} already has its {} leaves",
                self.index,
                self.leaves.len()
            )));
        };
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        self.leaves[slot] = Some(Leaf {
            id,
            generation,
            addr,
            cursor: self.log.head,
            in_flight: false,
            counters,
        });
        self.active.push(slot as u32);
        // SeqCst: pairs with the root's promise store and count load in `send_ready`.
        self.leaf_count.store(self.active.len(), Ordering::SeqCst);
        Ok(slot as u32)
    }

    fn remove(&mut self, id: LeafId, slot: u32) {
        let Some(leaf) = self.leaves.get_mut(slot as usize) else {
            return;
        };
        if leaf.as_ref().is_none_or(|l| l.id != id) {
            return;
        }
        let Some(leaf) = leaf.take() else {
            return;
        };
        // What it would still have sent: no longer needed by it. Its operation in flight,
        // if any, finishes its own entries when it completes.
        for position in leaf.cursor..self.log.head {
            self.log.finish(position, &self.pool);
        }
        if let Some(i) = self.active.iter().position(|&s| s == slot) {
            self.active.swap_remove(i);
        }
        self.leaf_count.store(self.active.len(), Ordering::Release);
    }

    /// Moves packets from the queue into the log; returns whether there were any.
    fn take_packets(&mut self) -> bool {
        let mut any = false;
        while !self.log.is_full() {
            let Some((slot, len)) = self.queue.pop() else {
                break;
            };
            any = true;
            let pending = self.active.len() as u32;
            let head = self.log.head;
            *self.log.at(head) = Entry { slot, len, pending };
            self.log.head += 1;
            if pending == 0 {
                // Every leaf left since the root handed it over.
                self.pool.release(slot);
            }
        }
        any
    }

    /// Runs `step` on the sender, with each finished operation accounted by [`complete`].
    fn with_sender<R>(&mut self, step: impl FnOnce(&mut UnicastSender, Done<'_>) -> R) -> R {
        let Shard {
            sender,
            ops,
            log,
            leaves,
            pool,
            counters,
            ..
        } = self;
        step(sender, &mut |op, segments, res| {
            complete(ops, log, leaves, pool, counters, op, segments, res)
        })
    }

    /// Collects finished sends; returns how many.
    fn reap(&mut self) -> usize {
        self.with_sender(|sender, done| sender.reap(done))
    }

    /// Builds one operation for every leaf that has packets to send and none in flight,
    /// and hands them to the kernel together; returns how many.
    fn send(&mut self) -> usize {
        let gso = self.sender.gso();
        let mut built = 0;
        for i in 0..self.active.len() {
            let slot = self.active[i] as usize;
            let Some(leaf) = self.leaves[slot].as_mut() else {
                continue;
            };
            if leaf.in_flight || leaf.cursor >= self.log.head {
                continue;
            }
            let Some(op) = self.sender.take_op() else {
                break;
            };
            let available = (self.log.head - leaf.cursor).min(MAX_GSO_SEGMENTS as u64) as usize;
            let log = &self.log;
            let entry = |k: usize| log.entries[((leaf.cursor + k as u64) & log.mask) as usize];
            let n = if gso {
                gso_run(
                    (0..available).map(|k| usize::from(entry(k).len)),
                    MAX_GSO_SEGMENTS,
                )
            } else {
                1
            };
            let pool = &self.pool;
            // SAFETY: the slots of these entries stay shared with this shard (their pending
            // counts include this leaf) until this operation's completion finishes them,
            // so nobody writes or unmaps them before the kernel is done reading.
            unsafe {
                self.sender.fill(op, &leaf.addr, n, |k| {
                    let e = entry(k);
                    (pool.slot_ptr(e.slot), usize::from(e.len))
                });
            }
            self.ops[usize::from(op)] = OpMeta {
                leaf: slot as u32,
                generation: leaf.generation,
                first: leaf.cursor,
                count: n as u16,
            };
            leaf.cursor += n as u64;
            leaf.in_flight = true;
            self.sender.queue(op);
            self.counters.send_ops.add(1);
            if n > 1 {
                self.counters.gso_ops.add(1);
            }
            built += 1;
        }
        if built > 0 {
            self.with_sender(|sender, done| sender.flush(done));
        }
        built
    }

    fn idle(&mut self) {
        let block = match self.idle {
            IdleStrategy::Spin | IdleStrategy::Yield => false,
            IdleStrategy::Block => true,
            IdleStrategy::Backoff => self.last_work.elapsed() >= BACKOFF_SPIN,
        };
        match block {
            false => self.idle.pause(),
            true => {
                self.wake.sleeping();
                if self.queue.is_empty() && self.rx.is_empty() {
                    self.with_sender(|sender, done| sender.wait(BLOCK_WAIT, done));
                }
                self.wake.awake();
            }
        }
    }
}

/// Accounts for one finished operation: its entries, its leaf, the shard's counters.
#[allow(clippy::too_many_arguments)]
fn complete(
    ops: &[OpMeta],
    log: &mut Log,
    leaves: &mut [Option<Leaf>],
    pool: &Pool,
    counters: &ShardCounters,
    op: u16,
    segments: usize,
    res: i32,
) {
    let Some(meta) = ops.get(usize::from(op)).copied() else {
        return;
    };
    for k in 0..u64::from(meta.count) {
        log.finish(meta.first + k, pool);
    }
    let packets = segments as u64;
    let leaf = leaves
        .get_mut(meta.leaf as usize)
        .and_then(Option::as_mut)
        .filter(|l| l.generation == meta.generation);
    if res >= 0 {
        counters.deliveries.add(packets);
    } else {
        counters.send_errors.add(packets);
        tracing::debug!(errno = -res, "a fan-out send failed");
    }
    if let Some(leaf) = leaf {
        leaf.in_flight = false;
        if res >= 0 {
            leaf.counters.deliveries.add(packets);
        } else {
            leaf.counters.send_errors.add(packets);
        }
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
