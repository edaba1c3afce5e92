//! Adding and removing leaves from any thread: [`FanoutLeaves`], a cheap handle on the
//! fan-out's shards.
//!
//! Changes are synchronous: [`add`](FanoutLeaves::add) returns once the chosen shard sends
//! to the leaf (every packet offered after it returns reaches the leaf), and
//! [`remove`](FanoutLeaves::remove) once the shard submits nothing more to it. Each shard
//! applies a change between two passes over its packets, so a leaf never gets part of a
//! packet or a packet from the middle of a GSO run it was not in. Changes take a lock and
//! a round trip to the shard thread: they are for the control path, not the data path.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::shard::{leaf_address, Command, LeafCounters, Link};
use crate::error::{Error, Result};
use crate::stat;
use crate::stat::kinds::{LEAF_KIND, LEAF_NAMES};

/// How long a change waits for its shard to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A leaf of a fan-out (a destination it sends to), as [`FanoutLeaves::add`] named it.
/// Ids are never reused within one fan-out. (A rooted session's leaf is a
/// [`multipoint_control::rooted::LeafId`]; the rooted-unicast root maps one to the other.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FanoutLeafId(u64);

impl FanoutLeafId {
    /// The id as a number (1 for the first leaf added, then 2, ...).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FanoutLeafId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "leaf {}", self.0)
    }
}

/// One leaf's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafStats {
    /// The shard it is on.
    pub shard: usize,
    /// Its address.
    pub addr: SocketAddr,
    /// Packets the kernel took for it.
    pub deliveries: u64,
    /// Packets whose send to it failed.
    pub send_errors: u64,
}

struct LeafEntry {
    shard: usize,
    slot: u32,
    addr: SocketAddr,
    counters: Arc<LeafCounters>,
}

struct Registry {
    leaves: HashMap<FanoutLeafId, LeafEntry>,
    per_shard: Vec<usize>,
    next_id: u64,
    closed: bool,
}

/// What [`FanoutLeaves`] handles share with the fan-out.
pub(crate) struct Control {
    pub(crate) links: Vec<Link>,
    registry: Mutex<Registry>,
    /// The registry's number of leaves, readable without the lock.
    count: AtomicUsize,
    /// The first sequence number not yet handed to the shards: every message from it on
    /// reaches every leaf added before it is handed over.
    pub(crate) handed_next: AtomicU64,
    max_per_shard: usize,
    socket_is_v6: bool,
    /// The session, the name of the leaves' entries in the counters file.
    name: String,
}

impl Control {
    pub(crate) fn new(
        links: Vec<Link>,
        max_per_shard: usize,
        socket_is_v6: bool,
        name: String,
    ) -> Control {
        Control {
            name,
            registry: Mutex::new(Registry {
                leaves: HashMap::new(),
                per_shard: vec![0; links.len()],
                next_id: 1,
                closed: false,
            }),
            links,
            count: AtomicUsize::new(0),
            handed_next: AtomicU64::new(1),
            max_per_shard,
            socket_is_v6,
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock left the registry consistent: every change is
        // made after the shard answered.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses changes from now on (the fan-out is closing).
    pub(crate) fn close(&self) {
        self.registry().closed = true;
    }

    /// The number of leaves (without taking the lock).
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// A handle to add and remove a fan-out's leaves, from any thread. See the module docs.
///
/// Cloning it is cheap; every clone controls the same fan-out. Once the fan-out is closed
/// (or dropped), changes fail with [`Error::FanoutClosed`].
#[derive(Clone)]
pub struct FanoutLeaves {
    control: Arc<Control>,
}

impl fmt::Debug for FanoutLeaves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanoutLeaves")
            .field("leaves", &self.len())
            .field("shards", &self.control.links.len())
            .finish()
    }
}

impl FanoutLeaves {
    pub(crate) fn new(control: Arc<Control>) -> FanoutLeaves {
        FanoutLeaves { control }
    }

    /// Starts sending to `addr`, on the shard with the fewest leaves. Every packet offered
    /// after this returns reaches the leaf, whole; none offered before does, except those
    /// its shard had not taken up yet.
    ///
    /// The same address may be added twice: it then gets every packet twice. An IPv4 leaf
    /// of an IPv6 socket is sent to at its IPv4-mapped address (so the socket must not be
    /// IPv6-only, or those sends fail and are counted as errors).
    ///
    /// # Errors
    ///
    /// [`Error::LeafAddress`] for an IPv6 leaf of an IPv4 socket;
    /// [`Error::TooManyLeaves`] when every shard has `max_leaves_per_shard` leaves;
    /// [`Error::FanoutClosed`] once the fan-out is closed; [`Error::ShardGone`] if the
    /// shard stopped or did not answer.
    pub fn add(&self, addr: SocketAddr) -> Result<FanoutLeafId> {
        let c = &*self.control;
        let Some(sockaddr) = leaf_address(addr, c.socket_is_v6) else {
            return Err(Error::LeafAddress {
                addr,
                reason: "the root's data socket is IPv4",
            });
        };
        let mut registry = c.registry();
        if registry.closed {
            return Err(Error::FanoutClosed);
        }
        let Some((shard, _)) = registry
            .per_shard
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n < c.max_per_shard)
            .min_by_key(|&(i, &n)| (n, i))
        else {
            return Err(Error::TooManyLeaves {
                max: c.max_per_shard * c.links.len(),
            });
        };
        let id = FanoutLeafId(registry.next_id);
        registry.next_id += 1;
        let counters = Arc::new(LeafCounters {
            stat: stat::register(LEAF_KIND, &c.name, &addr.to_string(), LEAF_NAMES),
            ..LeafCounters::default()
        });
        let link = &c.links[shard];
        let (reply, answer) = crossbeam_channel::bounded(1);
        link.commands
            .send(Command::Add {
                id,
                addr: sockaddr,
                counters: Arc::clone(&counters),
                reply,
            })
            .map_err(|_| Error::FanoutClosed)?;
        let slot = answer
            .recv_timeout(REPLY_TIMEOUT)
            .map_err(|_| Error::ShardGone(shard))??;
        registry.per_shard[shard] += 1;
        registry.leaves.insert(
            id,
            LeafEntry {
                shard,
                slot,
                addr,
                counters,
            },
        );
        c.count.store(registry.leaves.len(), Ordering::Relaxed);
        Ok(id)
    }

    /// Stops sending to `id`: once this returns its shard submits nothing more to it (a
    /// send already in the kernel may still arrive).
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchLeaf`] if `id` is not a leaf (any more); [`Error::FanoutClosed`]
    /// once the fan-out is closed; [`Error::ShardGone`] if the shard stopped or did not
    /// answer.
    pub fn remove(&self, id: FanoutLeafId) -> Result<()> {
        let c = &*self.control;
        let mut registry = c.registry();
        if registry.closed {
            return Err(Error::FanoutClosed);
        }
        let Some(entry) = registry.leaves.get(&id) else {
            return Err(Error::NoSuchLeaf(id.0));
        };
        let (shard, slot) = (entry.shard, entry.slot);
        let link = &c.links[shard];
        let (reply, answer) = crossbeam_channel::bounded(1);
        link.commands
            .send(Command::Remove { id, slot, reply })
            .map_err(|_| Error::FanoutClosed)?;
        answer
            .recv_timeout(REPLY_TIMEOUT)
            .map_err(|_| Error::ShardGone(shard))?;
        registry.leaves.remove(&id);
        registry.per_shard[shard] = registry.per_shard[shard].saturating_sub(1);
        c.count.store(registry.leaves.len(), Ordering::Relaxed);
        Ok(())
    }

    /// The first sequence number not yet handed to the shards. Read after
    /// [`add`](Self::add) returned, it is where the new leaf's stream starts: every message
    /// from it on reaches the leaf (older ones may or may not).
    pub fn next_sequence(&self) -> u64 {
        self.control.handed_next.load(Ordering::SeqCst)
    }

    /// The number of leaves.
    pub fn len(&self) -> usize {
        self.control.len()
    }

    /// Whether there are no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leaves' ids, in the order they were added.
    pub fn ids(&self) -> Vec<FanoutLeafId> {
        let mut ids: Vec<FanoutLeafId> = self.control.registry().leaves.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// One leaf's counters; `None` if `id` is not a leaf (any more).
    pub fn stats(&self, id: FanoutLeafId) -> Option<LeafStats> {
        let registry = self.control.registry();
        let entry = registry.leaves.get(&id)?;
        Some(LeafStats {
            shard: entry.shard,
            addr: entry.addr,
            deliveries: entry.counters.deliveries.get(),
            send_errors: entry.counters.send_errors.get(),
        })
    }
}
