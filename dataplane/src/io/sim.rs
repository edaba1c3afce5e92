//! A simulated network: an in-memory transport with a seeded random source that loses,
//! duplicates, reorders, delays and corrupts datagrams on purpose, by share and by pattern
//! (drop this range, drop every n-th, drop a burst), like Aeron's loss generators.
//!
//! A [`SimNet`] holds sockets ([`SimNet::bind`]); a [`SimSocket`] sends to a unicast
//! address (the first socket bound there gets it) or to a group (every socket that joined
//! it on that port gets a copy, source-specific joins only from their source), and
//! receives what is due. Every delivery to a socket goes through the [`Impairments`] in
//! force for that socket's address (those set with [`SimNet::impair_to`], else the
//! network's, [`SimNet::impair`]): each delivery is numbered per socket from 0, and the
//! patterns and shares decide, in that order, whether it is dropped, corrupted, delayed,
//! held back behind later ones and duplicated. The same seed, the same sends in the same
//! order and the same clock give the same outcome.
//!
//! The send backend of a simulated network completes every send within the flush that
//! hands it over, as sendmmsg does, unless sends to an address are deferred
//! ([`SimNet::defer_sends_to`]): those are read, delivered and completed only by a reap
//! at least the given time later, as io_uring completes a send that met a full socket
//! buffer, so that tests can check who keeps a send's buffer until its completion.
//!
//! Time is passed in, never read: [`SimSocket::send_to`] and [`SimSocket::recv`] take a
//! `now` (a fake clock in sans-IO tests, [`Instant::now`] when shards run on the network).
//! Shards, publishers and fan-outs run on a simulated network like on the host's: give
//! them a [`SimSocket`] (as a [`DataSocket`](super::DataSocket)), or the network itself
//! ([`Network::Sim`](crate::Network::Sim)) where they make their own sockets.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use multipoint_dataplane::io::sim::{DropPattern, Impairments, SimNet};
//!
//! let net = SimNet::new(7);
//! let rx = net.bind("10.0.0.2:9000".parse()?)?;
//! let tx = net.bind("10.0.0.1:0".parse()?)?;
//! // Every third datagram is lost; the rest take 1 ms.
//! net.impair(Impairments {
//!     drops: vec![DropPattern::EveryNth { n: 3, phase: 2 }],
//!     delay: Duration::from_millis(1),
//!     ..Impairments::none()
//! });
//! let now = Instant::now();
//! for i in 0..6u8 {
//!     tx.send_to(&[i], rx.local_addr(), now)?;
//! }
//! let mut buf = [0u8; 16];
//! assert!(rx.recv(now, &mut buf).is_none(), "not due yet");
//! let later = now + Duration::from_millis(1);
//! let got: Vec<u8> = std::iter::from_fn(|| rx.recv(later, &mut buf).map(|_| buf[0])).collect();
//! assert_eq!(got, [0, 1, 3, 4]);
//! assert_eq!(net.stats().lost, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::op::OpTable;
use super::pollset::PollSet;
use super::{canonical, sleep_on, RecvMeta, MAX_GSO_SEGMENTS};
use super::{
    drain_eventfd, wrong_endpoint, BatchRecv, BatchSend, Completion, Done, Endpoint, Event, Sending,
};
use crate::runtime::wake::Wake;
use crate::wire::{Packet, PacketKind};

/// Which deliveries a pattern drops, by their number at the receiving socket (the first
/// delivery to a socket is number 0) or by what they carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropPattern {
    /// The deliveries numbered in this range: `Datagrams(10..14)` drops a burst of four.
    Datagrams(Range<u64>),
    /// Every n-th delivery: those whose number `k` has `k % n == phase`.
    EveryNth {
        /// The period (0 drops nothing).
        n: u64,
        /// Which of each `n` is dropped (taken modulo `n`).
        phase: u64,
    },
    /// MoldUDP64 data packets that carry at least one message numbered in this range.
    Sequences(Range<u64>),
}

impl DropPattern {
    /// A burst: `len` deliveries from number `start` on.
    #[must_use]
    pub fn burst(start: u64, len: u64) -> DropPattern {
        DropPattern::Datagrams(start..start.saturating_add(len))
    }

    fn drops(&self, number: u64, bytes: &[u8]) -> bool {
        match self {
            DropPattern::Datagrams(range) => range.contains(&number),
            DropPattern::EveryNth { n, phase } => *n > 0 && number % n == phase % n,
            DropPattern::Sequences(range) => match Packet::new_checked(bytes) {
                Ok(p) if p.kind() == PacketKind::Data => {
                    p.sequence() < range.end && p.next_sequence() > range.start
                }
                _ => false,
            },
        }
    }
}

/// How a corrupted delivery is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Corruption {
    /// One random bit of one random byte is flipped.
    #[default]
    FlipBit,
    /// The datagram is cut to a random shorter length (possibly empty).
    Truncate,
}

/// What happens to deliveries on their way. See the module docs for the order in which
/// they apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairments {
    /// Deliveries dropped by pattern.
    pub drops: Vec<DropPattern>,
    /// Share of deliveries lost at random (0 to 1).
    pub loss: f64,
    /// Share of deliveries damaged at random, as `corruption` says.
    pub corrupt: f64,
    /// How a corrupted delivery is damaged.
    pub corruption: Corruption,
    /// Every delivery's delay.
    pub delay: Duration,
    /// Up to this much more delay, at random.
    pub jitter: Duration,
    /// Share of deliveries held back by `reorder_by`, so that later ones overtake them.
    pub reorder: f64,
    /// How long a reordered delivery is held back.
    pub reorder_by: Duration,
    /// Share of deliveries that arrive twice.
    pub duplicate: f64,
}

impl Impairments {
    /// A perfect network: nothing lost, damaged, delayed, reordered or duplicated.
    #[must_use]
    pub fn none() -> Impairments {
        Impairments {
            drops: Vec::new(),
            loss: 0.0,
            corrupt: 0.0,
            corruption: Corruption::FlipBit,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_by: Duration::from_millis(1),
            duplicate: 0.0,
        }
    }
}

impl Default for Impairments {
    fn default() -> Impairments {
        Impairments::none()
    }
}

/// What a simulated network did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams taken by receivers.
    pub delivered: u64,
    /// Deliveries dropped (by pattern or at random).
    pub lost: u64,
    /// Deliveries damaged.
    pub corrupted: u64,
    /// Deliveries held back behind later ones.
    pub reordered: u64,
    /// Deliveries made twice.
    pub duplicated: u64,
    /// Datagrams no socket took (nobody bound or joined there, or a connected socket
    /// refused a stranger).
    pub unreachable: u64,
}

/// What [`SimSocket::recv`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimDatagram {
    /// Bytes written into the buffer.
    pub len: usize,
    /// Who sent it.
    pub from: SocketAddr,
    /// The datagram was longer than the buffer and was cut.
    pub truncated: bool,
}

/// A delivery waiting in a socket's queue.
struct Queued {
    due: Instant,
    order: u64,
    from: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Reversed, so that the heap's top is the earliest due (first sent among equals).
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

struct Port {
    addr: SocketAddr,
    peer: Option<SocketAddr>,
    groups: Vec<(IpAddr, Option<IpAddr>)>,
    queue: BinaryHeap<Queued>,
    /// Deliveries offered so far (dropped ones included): the next one's number.
    arrivals: u64,
    wake: Arc<Wake>,
}

struct Net {
    rng: fastrand::Rng,
    /// Sockets by id; ids are never reused, and the map keeps delivery order stable.
    ports: BTreeMap<u64, Port>,
    next_id: u64,
    next_ephemeral: u16,
    order: u64,
    default: Impairments,
    by_addr: HashMap<SocketAddr, Impairments>,
    stats: SimStats,
    /// Buffers of taken deliveries, reused for new ones.
    spare: Vec<Vec<u8>>,
    /// What every receive backend watching a socket of this network does instead of
    /// receiving, once set ([`SimNet::break_receives`]).
    fault: Option<ReceiveFault>,
    /// How long sends to each address wait for their completion
    /// ([`SimNet::defer_sends_to`]).
    deferred: HashMap<SocketAddr, Duration>,
}

/// A way for the receive backends of a simulated network to fail, for testing what a
/// shard does when its backend does ([`SimNet::break_receives`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveFault {
    /// Every receive fails with this error number (as a broken ring or socket would).
    Errno(i32),
    /// Every receive panics (as a bug in a backend would).
    Panic,
}

/// The first ephemeral port handed out for port 0.
const EPHEMERAL: u16 = 40_000;

/// A simulated network. Cloning it is cheap; every clone is the same network.
#[derive(Clone)]
pub struct SimNet {
    net: Arc<Mutex<Net>>,
}

impl std::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net = self.lock();
        f.debug_struct("SimNet")
            .field("sockets", &net.ports.len())
            .field("stats", &net.stats)
            .finish()
    }
}

impl SimNet {
    /// An empty network without impairments, whose random decisions follow `seed`.
    pub fn new(seed: u64) -> SimNet {
        SimNet {
            net: Arc::new(Mutex::new(Net {
                rng: fastrand::Rng::with_seed(seed),
                ports: BTreeMap::new(),
                next_id: 1,
                next_ephemeral: EPHEMERAL,
                order: 0,
                default: Impairments::none(),
                by_addr: HashMap::new(),
                stats: SimStats::default(),
                spare: Vec::new(),
                fault: None,
                deferred: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        // Every change under the lock is complete before anything can panic.
        self.net.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A socket at `addr`; port 0 takes a free port. Several sockets may share an
    /// address (as with `SO_REUSEADDR`): a unicast datagram goes to the first of them,
    /// a group's to every one that joined.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrNotAvailable`] for a multicast address (bind a wildcard and
    /// [join](SimSocket::join)) or when no port is free; an eventfd that cannot be made.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<SimSocket> {
        let addr = canonical(addr);
        if addr.ip().is_multicast() {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("cannot bind {addr}: bind a wildcard address and join the group"),
            ));
        }
        let wake = Arc::new(Wake::new()?);
        let mut net = self.lock();
        let addr = if addr.port() == 0 {
            SocketAddr::new(addr.ip(), net.free_port(addr.ip())?)
        } else {
            addr
        };
        let id = net.next_id;
        net.next_id += 1;
        net.ports.insert(
            id,
            Port {
                addr,
                peer: None,
                groups: Vec::new(),
                queue: BinaryHeap::new(),
                arrivals: 0,
                wake: Arc::clone(&wake),
            },
        );
        drop(net);
        Ok(SimSocket {
            net: self.clone(),
            id,
            addr,
            wake,
        })
    }

    /// Impairments for every delivery to a socket without impairments of its own.
    pub fn impair(&self, impairments: Impairments) {
        self.lock().default = impairments;
    }

    /// Impairments for deliveries to sockets bound at `addr` (now or later), instead of
    /// the network's.
    pub fn impair_to(&self, addr: SocketAddr, impairments: Impairments) {
        self.lock().by_addr.insert(canonical(addr), impairments);
    }

    /// What the network did so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }

    /// Sends `bytes` to `to` at `now` as if from `from`, whoever has that address: a
    /// forged source, as anyone with a raw socket can send on a real network.
    pub fn forge(&self, from: SocketAddr, bytes: &[u8], to: SocketAddr, now: Instant) {
        self.lock().send(from, bytes, to, now);
    }

    /// From now on every receive backend watching a socket of this network fails as
    /// `fault` says, instead of receiving.
    pub fn break_receives(&self, fault: ReceiveFault) {
        self.lock().fault = Some(fault);
    }

    /// From now on a send backend's sends to `to` (a group or a socket's address) complete
    /// `delay` after they were handed over, not within the flush: their bytes are read and
    /// delivered only then, by the first reap at or after that time, in the order they
    /// were handed over (a zero `delay` ends the deferral). This is what io_uring does with
    /// a send that meets a full socket buffer; a sender that lets go of a buffer before
    /// its send completed sends whatever the buffer holds by then.
    pub fn defer_sends_to(&self, to: SocketAddr, delay: Duration) {
        let to = canonical(to);
        let mut net = self.lock();
        if delay.is_zero() {
            net.deferred.remove(&to);
        } else {
            net.deferred.insert(to, delay);
        }
    }
}

impl Net {
    fn free_port(&mut self, ip: IpAddr) -> io::Result<u16> {
        for _ in 0..=(u16::MAX - EPHEMERAL) {
            let port = self.next_ephemeral;
            self.next_ephemeral = if port == u16::MAX {
                EPHEMERAL
            } else {
                port + 1
            };
            let taken = self.ports.values().any(|p| {
                p.addr.port() == port && (p.addr.ip() == ip || p.addr.ip().is_unspecified())
            });
            if !taken {
                return Ok(port);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no free port left on the simulated network",
        ))
    }

    /// Sends `bytes` from `from` to `to` at `now`: every socket it reaches gets a
    /// delivery, through its impairments.
    fn send(&mut self, from: SocketAddr, bytes: &[u8], to: SocketAddr, now: Instant) {
        let from = canonical(from);
        let to = canonical(to);
        self.stats.sent += 1;
        let Net {
            rng,
            ports,
            order,
            default,
            by_addr,
            stats,
            spare,
            ..
        } = self;
        let multicast = to.ip().is_multicast();
        let mut reached = false;
        for port in ports.values_mut() {
            let wanted = port.addr.port() == to.port()
                && if multicast {
                    port.groups
                        .iter()
                        .any(|&(g, source)| g == to.ip() && source.is_none_or(|s| s == from.ip()))
                } else {
                    port.addr.ip() == to.ip() || port.addr.ip().is_unspecified()
                };
            if !wanted {
                continue;
            }
            if port.peer.is_some_and(|peer| peer != from) {
                // A connected socket takes datagrams from its peer only.
                continue;
            }
            reached = true;
            let impairments = by_addr.get(&port.addr).unwrap_or(default);
            offer(
                port,
                impairments,
                rng,
                stats,
                spare,
                order,
                from,
                bytes,
                now,
            );
            if !multicast {
                break;
            }
        }
        if !reached {
            stats.unreachable += 1;
        }
    }

    /// Takes the first delivery due at `now` from socket `id`.
    fn take(&mut self, id: u64, now: Instant) -> Option<Queued> {
        let port = self.ports.get_mut(&id)?;
        if port.queue.peek().is_none_or(|q| q.due > now) {
            return None;
        }
        let queued = port.queue.pop()?;
        self.stats.delivered += 1;
        Some(queued)
    }
}

/// Puts one delivery on `port`'s queue, or not, as `impairments` decide.
#[allow(clippy::too_many_arguments)]
fn offer(
    port: &mut Port,
    impairments: &Impairments,
    rng: &mut fastrand::Rng,
    stats: &mut SimStats,
    spare: &mut Vec<Vec<u8>>,
    order: &mut u64,
    from: SocketAddr,
    bytes: &[u8],
    now: Instant,
) {
    let number = port.arrivals;
    port.arrivals += 1;
    let chance = |rng: &mut fastrand::Rng, share: f64| share > 0.0 && rng.f64() < share;
    if impairments.drops.iter().any(|p| p.drops(number, bytes)) || chance(rng, impairments.loss) {
        stats.lost += 1;
        return;
    }
    let mut copy = spare.pop().unwrap_or_default();
    copy.clear();
    copy.extend_from_slice(bytes);
    if chance(rng, impairments.corrupt) && !copy.is_empty() {
        match impairments.corruption {
            Corruption::FlipBit => {
                let at = rng.usize(..copy.len());
                copy[at] ^= 1 << rng.u8(0..8);
            }
            Corruption::Truncate => {
                let len = rng.usize(..copy.len());
                copy.truncate(len);
            }
        }
        stats.corrupted += 1;
    }
    let mut due = now + impairments.delay;
    if !impairments.jitter.is_zero() {
        due += impairments.jitter.mul_f64(rng.f64());
    }
    if chance(rng, impairments.reorder) {
        due += impairments.reorder_by;
        stats.reordered += 1;
    }
    if chance(rng, impairments.duplicate) {
        let mut twin = spare.pop().unwrap_or_default();
        twin.clear();
        twin.extend_from_slice(&copy);
        *order += 1;
        port.queue.push(Queued {
            due,
            order: *order,
            from,
            bytes: twin,
        });
        stats.duplicated += 1;
    }
    *order += 1;
    port.queue.push(Queued {
        due,
        order: *order,
        from,
        bytes: copy,
    });
    port.wake.notify();
}

/// A socket of a [`SimNet`]. Dropping it unbinds it; what was queued for it is lost.
pub struct SimSocket {
    net: SimNet,
    id: u64,
    addr: SocketAddr,
    wake: Arc<Wake>,
}

impl std::fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSocket")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        let mut net = self.net.lock();
        if let Some(port) = net.ports.remove(&self.id) {
            net.spare.extend(port.queue.into_iter().map(|q| q.bytes));
        }
    }
}

impl SimSocket {
    /// The address it is bound at.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The network it belongs to.
    pub fn net(&self) -> &SimNet {
        &self.net
    }

    fn with_port<R>(&self, f: impl FnOnce(&mut Port) -> R) -> Option<R> {
        self.net.lock().ports.get_mut(&self.id).map(f)
    }

    /// Joins `group` on this socket's port: datagrams sent to it (from `source` only,
    /// when one is given) reach this socket.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if `group` is not a multicast address;
    /// [`io::ErrorKind::AddrInUse`] if this socket joined it already.
    pub fn join(&self, group: IpAddr, source: Option<IpAddr>) -> io::Result<()> {
        if !group.is_multicast() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{group} is not a multicast address"),
            ));
        }
        let source = source.map(|s| canonical(SocketAddr::new(s, 0)).ip());
        let joined = self.with_port(|port| {
            if port.groups.iter().any(|&(g, _)| g == group) {
                return false;
            }
            port.groups.push((group, source));
            true
        });
        match joined {
            Some(true) | None => Ok(()),
            Some(false) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("this socket already joined {group}"),
            )),
        }
    }

    /// Leaves `group`; datagrams sent to it no longer reach this socket.
    pub fn leave(&self, group: IpAddr) {
        self.with_port(|port| port.groups.retain(|&(g, _)| g != group));
    }

    /// Takes datagrams from `peer` only from now on (what a connected UDP socket does).
    pub fn connect(&self, peer: SocketAddr) {
        self.with_port(|port| port.peer = Some(canonical(peer)));
    }

    /// The peer this socket was connected to, if any.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.with_port(|port| port.peer).flatten()
    }

    /// Sends `bytes` to `to` (a socket's address or a group) at `now`; returns the length.
    ///
    /// # Errors
    ///
    /// None today: a datagram nobody takes is counted as unreachable, as the kernel
    /// would drop it silently. The `Result` is for the socket API's shape.
    pub fn send_to(&self, bytes: &[u8], to: SocketAddr, now: Instant) -> io::Result<usize> {
        self.net.lock().send(self.addr, bytes, to, now);
        Ok(bytes.len())
    }

    /// Takes the next datagram due at `now` into `buf`, if any.
    pub fn recv(&self, now: Instant, buf: &mut [u8]) -> Option<SimDatagram> {
        let mut net = self.net.lock();
        let queued = net.take(self.id, now)?;
        let len = queued.bytes.len().min(buf.len());
        buf[..len].copy_from_slice(&queued.bytes[..len]);
        let datagram = SimDatagram {
            len,
            from: queued.from,
            truncated: queued.bytes.len() > buf.len(),
        };
        net.spare.push(queued.bytes);
        Some(datagram)
    }

    /// Waits, on the real clock, up to `timeout` for a datagram to be due, and takes it
    /// into `buf` (for tests that read a simulated socket on a thread of their own).
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Option<SimDatagram> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if let Some(datagram) = self.recv(now, buf) {
                return Some(datagram);
            }
            if now >= deadline {
                return None;
            }
            let until = self.next_due().map_or(deadline, |due| due.min(deadline));
            let fd = self.wake.fd();
            if super::wait_fd(fd, libc::POLLIN, until.saturating_duration_since(now)) {
                drain_eventfd(fd);
            }
        }
    }

    /// When the next queued datagram is due, if any is queued.
    pub fn next_due(&self) -> Option<Instant> {
        self.with_port(|port| port.queue.peek().map(|q| q.due))
            .flatten()
    }

    /// Datagrams queued for this socket (due or not).
    pub fn queued(&self) -> usize {
        self.with_port(|port| port.queue.len()).unwrap_or(0)
    }
}

/// A handle on a socket that a receive backend watches; it does not own the socket.
struct Watched {
    net: SimNet,
    id: u64,
    wake: Arc<Wake>,
}

/// The receive backend of a simulated network: takes what is due from each socket it
/// watches, blocking in `ppoll(2)` on the sockets' eventfds until the next delivery is
/// due, one arrives, or the shard is woken.
pub(crate) struct SimRecv {
    sockets: PollSet<Watched>,
    /// Deliveries taken from one socket, handed to the sink after the network's lock is
    /// released (a handler may send on the network); capacity reserved up front.
    staged: Vec<Queued>,
    batch: usize,
    payload: usize,
}

impl SimRecv {
    /// Room for `max_sockets` sockets, batches of `batch` datagrams of up to `payload`
    /// bytes (longer ones are cut and reported truncated).
    pub(crate) fn new(max_sockets: u32, batch: u16, payload: usize) -> SimRecv {
        let batch = usize::from(batch.max(1));
        SimRecv {
            sockets: PollSet::new(max_sockets),
            staged: Vec::with_capacity(batch),
            batch,
            payload: payload.max(1),
        }
    }

    /// Hands everything due at `now` to `sink`; returns how many.
    fn receive(&mut self, now: Instant, sink: &mut impl FnMut(Event<'_>)) -> usize {
        let mut n = 0;
        for slot in 0..self.sockets.len() {
            // Everything due, a batch at a time (as recvmmsg drains a socket).
            loop {
                let taken = self.take_batch(slot, now);
                if taken == 0 {
                    break;
                }
                for queued in &self.staged {
                    let len = queued.bytes.len().min(self.payload);
                    sink(Event::Datagram {
                        slot: slot as u32,
                        payload: &queued.bytes[..len],
                        truncated: queued.bytes.len() > self.payload,
                        meta: RecvMeta {
                            source: Some(queued.from),
                            ..RecvMeta::default()
                        },
                    });
                }
                n += taken;
                if let Some(watched) = self.sockets.get(slot) {
                    let mut net = watched.net.lock();
                    net.spare.extend(self.staged.drain(..).map(|q| q.bytes));
                }
                if taken < self.batch {
                    break;
                }
            }
        }
        n
    }

    /// Moves up to a batch of what is due at `now` on socket `slot` into `staged`;
    /// returns how many.
    fn take_batch(&mut self, slot: usize, now: Instant) -> usize {
        let Some(watched) = self.sockets.get(slot) else {
            return 0;
        };
        let mut net = watched.net.lock();
        while self.staged.len() < self.batch {
            match net.take(watched.id, now) {
                Some(q) => self.staged.push(q),
                None => break,
            }
        }
        self.staged.len()
    }

    /// Waits until a delivery is due or queued, the shard is woken, or `wait` passes.
    fn block(&mut self, now: Instant, wait: Duration) -> io::Result<()> {
        let next_due = (0..self.sockets.len())
            .filter_map(|slot| self.sockets.get(slot))
            .filter_map(|w| {
                w.net
                    .lock()
                    .ports
                    .get(&w.id)
                    .and_then(|p| p.queue.peek().map(|q| q.due))
            })
            .min();
        let timeout = next_due.map_or(wait, |due| wait.min(due.saturating_duration_since(now)));
        // The sockets' descriptors are their eventfds: empty them too.
        self.sockets.wait(timeout, true).map(drop)
    }
}

impl BatchRecv for SimRecv {
    fn add(&mut self, endpoint: Endpoint<'_>) -> io::Result<u32> {
        let Endpoint::Sim(socket) = endpoint else {
            return Err(wrong_endpoint("simulated network"));
        };
        let watched = Watched {
            net: socket.net.clone(),
            id: socket.id,
            wake: Arc::clone(&socket.wake),
        };
        let fd = watched.wake.fd();
        self.sockets.add(watched, fd)
    }

    fn remove(&mut self, slot: u32) -> io::Result<()> {
        self.sockets.remove(slot);
        Ok(())
    }

    fn watch_wake(&mut self, fd: RawFd) -> io::Result<()> {
        self.sockets.watch_wake(fd);
        Ok(())
    }

    fn poll(
        &mut self,
        wait: Option<Duration>,
        sink: &mut impl FnMut(Event<'_>),
    ) -> io::Result<usize> {
        let fault = (0..self.sockets.len())
            .find_map(|slot| self.sockets.get(slot))
            .and_then(|w| w.net.lock().fault);
        match fault {
            Some(ReceiveFault::Errno(errno)) => return Err(io::Error::from_raw_os_error(errno)),
            // The fault asked for: a panic is what is being tested.
            #[allow(clippy::panic)]
            Some(ReceiveFault::Panic) => panic!("the simulated receive was told to panic"),
            None => {}
        }
        let now = Instant::now();
        let n = self.receive(now, sink);
        match wait {
            Some(wait) if n == 0 => {
                self.block(now, wait)?;
                Ok(self.receive(Instant::now(), sink))
            }
            _ => Ok(n),
        }
    }
}

/// The send backend of a simulated network: every flush delivers its operations' packets
/// (a GSO operation as separate datagrams, as the kernel segments it) at
/// [`Instant::now`], and completes them; operations to an address whose sends are
/// deferred ([`SimNet::defer_sends_to`]) wait for a reap instead.
pub(crate) struct SimSend {
    net: SimNet,
    from: SocketAddr,
    /// Completions of one flush or reap, reported after the network's lock is released.
    finished: Vec<Completion>,
    /// Deferred operations and when each is due, in the order they were handed over.
    deferred: VecDeque<(Instant, u16)>,
}

impl SimSend {
    /// Sending on `net` from address `from` (a socket's, which the owner keeps bound)
    /// with `ops`' operations.
    pub(crate) fn new(net: SimNet, from: SocketAddr, ops: OpTable) -> Sending<SimSend> {
        let backend = SimSend {
            net,
            from,
            finished: Vec::with_capacity(ops.len()),
            deferred: VecDeque::with_capacity(ops.len()),
        };
        Sending::new(ops, backend)
    }

    /// Hands the completions noted so far to `done`; returns how many.
    fn complete(&mut self, ops: &mut OpTable, done: &mut impl Done) -> usize {
        let n = self.finished.len();
        for completion in self.finished.drain(..) {
            ops.give_back(completion.op);
            done(completion);
        }
        n
    }
}

/// Delivers operation `index`'s packets from `from` at `now`; how it completed (`None`
/// for an operation that does not exist).
fn deliver(
    net: &mut Net,
    from: SocketAddr,
    ops: &OpTable,
    index: u16,
    now: Instant,
) -> Option<Completion> {
    let op = ops.get(index)?;
    let packets = op.segments.min(MAX_GSO_SEGMENTS);
    let result = match op.dest().as_socket() {
        Some(to) => {
            let mut bytes = 0usize;
            for i in 0..packets {
                // SAFETY: the op was filled for `packets` segments and has not
                // completed: its iovecs point at memory the filler keeps valid.
                let segment = unsafe { op.segment(i) };
                net.send(from, segment, to, now);
                bytes += segment.len();
            }
            i32::try_from(bytes).unwrap_or(i32::MAX)
        }
        None => -libc::EAFNOSUPPORT,
    };
    Some(Completion {
        op: index,
        packets,
        result,
    })
}

impl BatchSend for SimSend {
    fn flush(&mut self, ops: &mut OpTable, done: &mut impl Done) -> io::Result<()> {
        let now = Instant::now();
        let pending = ops.take_queue();
        {
            let mut net = self.net.lock();
            for &index in &pending {
                let delay = ops
                    .get(index)
                    .and_then(|op| op.dest().as_socket())
                    .and_then(|to| net.deferred.get(&canonical(to)).copied());
                match delay {
                    // Behind what waits already, so that sends stay in order.
                    Some(delay) => self.deferred.push_back((now + delay, index)),
                    None if !self.deferred.is_empty() => self.deferred.push_back((now, index)),
                    None => self
                        .finished
                        .extend(deliver(&mut net, self.from, ops, index, now)),
                }
            }
        }
        ops.restore_queue(pending);
        self.complete(ops, done);
        Ok(())
    }

    fn reap(&mut self, ops: &mut OpTable, wait: bool, done: &mut impl Done) -> io::Result<usize> {
        if wait {
            if let Some(&(due, _)) = self.deferred.front() {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        }
        let now = Instant::now();
        {
            let mut net = self.net.lock();
            while let Some(&(due, index)) = self.deferred.front() {
                if due > now {
                    break;
                }
                self.deferred.pop_front();
                self.finished
                    .extend(deliver(&mut net, self.from, ops, index, now));
            }
        }
        Ok(self.complete(ops, done))
    }

    fn wait(&mut self, ops: &mut OpTable, timeout: Duration, done: &mut impl Done) -> usize {
        let timeout = match self.deferred.front() {
            Some(&(due, _)) => timeout.min(due.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        sleep_on(ops.wake(), timeout);
        self.reap(ops, false, done).unwrap_or(0)
    }
}

/// The wildcard address of `group`'s family on `port`, where a receiver of the group
/// binds.
pub(crate) fn wildcard(group: SocketAddr) -> SocketAddr {
    match group {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), group.port()),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), group.port()),
    }
}

/// Where a sender with no address of its own sends from on a simulated network: the
/// loopback address of `dest`'s family, any port.
pub(crate) fn default_source(dest: SocketAddr) -> SocketAddr {
    match dest {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(net: &SimNet) -> (SimSocket, SimSocket) {
        let rx = net.bind("10.0.0.2:9000".parse().unwrap_or_else(|_| unreachable!()));
        let tx = net.bind("10.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()));
        match (rx, tx) {
            (Ok(rx), Ok(tx)) => (rx, tx),
            _ => unreachable!("binding on a fresh network"),
        }
    }

    fn drain(rx: &SimSocket, now: Instant) -> Vec<u8> {
        let mut buf = [0u8; 64];
        std::iter::from_fn(|| rx.recv(now, &mut buf).map(|_| buf[0])).collect()
    }

    #[test]
    fn sim_a_burst_pattern_drops_exactly_those_deliveries() {
        let net = SimNet::new(1);
        let (rx, tx) = pair(&net);
        net.impair(Impairments {
            drops: vec![DropPattern::burst(3, 4)],
            ..Impairments::none()
        });
        let now = Instant::now();
        for i in 0..10u8 {
            let _ = tx.send_to(&[i], rx.local_addr(), now);
        }
        assert_eq!(drain(&rx, now), [0, 1, 2, 7, 8, 9]);
        let stats = net.stats();
        assert_eq!((stats.sent, stats.lost, stats.delivered), (10, 4, 6));
    }

    #[test]
    fn sim_reordered_deliveries_are_overtaken_and_come_later() {
        let net = SimNet::new(2);
        let (rx, tx) = pair(&net);
        net.impair(Impairments {
            reorder: 0.5,
            reorder_by: Duration::from_millis(5),
            ..Impairments::none()
        });
        let now = Instant::now();
        for i in 0..40u8 {
            let _ = tx.send_to(&[i], rx.local_addr(), now);
        }
        let first = drain(&rx, now);
        let held = net.stats().reordered;
        assert!(held > 0 && held < 40, "a share is held back: {held}");
        assert_eq!(first.len() as u64, 40 - held);
        let rest = drain(&rx, now + Duration::from_millis(5));
        let mut all = [first, rest].concat();
        assert_ne!(all, (0..40).collect::<Vec<u8>>(), "order changed");
        all.sort_unstable();
        assert_eq!(all, (0..40).collect::<Vec<u8>>(), "nothing lost or doubled");
    }

    #[test]
    fn sim_the_same_seed_gives_the_same_losses() {
        let run = |seed| {
            let net = SimNet::new(seed);
            let (rx, tx) = pair(&net);
            net.impair(Impairments {
                loss: 0.3,
                duplicate: 0.1,
                ..Impairments::none()
            });
            let now = Instant::now();
            for i in 0..100u8 {
                let _ = tx.send_to(&[i], rx.local_addr(), now);
            }
            drain(&rx, now)
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn sim_groups_reach_joined_sockets_and_source_filters_hold() {
        let net = SimNet::new(3);
        let group: IpAddr = "239.1.2.3".parse().unwrap_or_else(|_| unreachable!());
        let any = net.bind(wildcard(SocketAddr::new(group, 5000)));
        let ssm = net.bind(wildcard(SocketAddr::new(group, 5000)));
        let (Ok(any), Ok(ssm)) = (any, ssm) else {
            unreachable!("binding on a fresh network")
        };
        let (_, tx) = pair(&net);
        assert!(any.join(group, None).is_ok());
        let elsewhere: IpAddr = "10.9.9.9".parse().unwrap_or_else(|_| unreachable!());
        assert!(ssm.join(group, Some(elsewhere)).is_ok());
        assert!(any.join(group, None).is_err(), "a second join is refused");
        let now = Instant::now();
        let _ = tx.send_to(b"g", SocketAddr::new(group, 5000), now);
        assert_eq!(drain(&any, now), b"g");
        assert!(drain(&ssm, now).is_empty(), "not from its source");
    }

    #[test]
    fn sim_a_connected_socket_refuses_strangers() {
        let net = SimNet::new(4);
        let (rx, tx) = pair(&net);
        let Ok(stranger) = net.bind("10.0.0.3:0".parse().unwrap_or_else(|_| unreachable!())) else {
            unreachable!()
        };
        rx.connect(tx.local_addr());
        let now = Instant::now();
        let _ = stranger.send_to(b"x", rx.local_addr(), now);
        let _ = tx.send_to(b"y", rx.local_addr(), now);
        assert_eq!(drain(&rx, now), b"y");
        assert_eq!(net.stats().unreachable, 1);
    }
}
