//! The fan-out engine of the `rooted-unicast` transport: a root sends its MoldUDP64
//! stream by UDP unicast to every leaf, for networks without multicast.
//!
//! # Contract
//!
//! - [`Fanout::start`] takes the root's bound UDP data socket (made by the control layer)
//!   and starts `shards` threads, each pinned to a core (with `pin`) and idling as
//!   configured ([`IdleStrategy::Block`] sleeps in the kernel until there is work). Each
//!   shard sends on a dup of that socket with its own io_uring, or with sendmmsg where
//!   io_uring is unavailable or not wanted ([`Fanout::backend`] says which and why). Every
//!   packet leaves from the socket's address; the fan-out never reads from the socket.
//! - Leaves are partitioned over the shards; [`FanoutLeaves`] (from [`Fanout::leaves`],
//!   `Clone + Send + Sync`) adds and removes them from any thread, synchronously: a leaf
//!   added gets every packet offered after `add` returned, whole and in order, and one
//!   removed gets no new send after `remove` returned. A leaf never sees a torn packet.
//! - A [`Fanout`] belongs to one thread (`Send`, not `Sync`), like a
//!   [`Publisher`](crate::Publisher): [`offer`](Fanout::offer) packs each message into the
//!   open packet (sequence numbers start at 1). The packet is written once into a slot of
//!   a shared, pre-allocated region, and every leaf's send reads that same slot: nothing is
//!   copied per leaf. The slot is reused only once every send of it, on every shard, has
//!   completed (a holder count per slot; the last shard to finish puts it back on a
//!   lock-free free list).
//! - A packet leaves when the next message does not fit, on [`flush`](Fanout::flush),
//!   [`end_batch`](Fanout::end_batch), or once it has been open for `max_delay` (checked
//!   by [`poll`](Fanout::poll) and by every 16th `offer` outside a batch). Between
//!   [`begin_batch`](Fanout::begin_batch) and `end_batch` full packets are held (up to
//!   `max_batch`) and handed to the shards together. Nothing waits to make a batch bigger.
//! - Shards send to each leaf everything it has waiting in one operation: several packets
//!   as one UDP GSO send (one iovec per packet, `UDP_SEGMENT` = the run's packet length;
//!   runs of equal-length packets, the last may be shorter, at most 64), and all leaves'
//!   operations in one submission. A leaf has at most one send in flight, so its packets
//!   arrive in order.
//! - When every slot is in use, `offer` refuses the message with
//!   [`OfferError::Backpressure`](crate::OfferError::Backpressure): it was not taken,
//!   nothing is lost; `poll` and retry.
//!   A send the kernel refuses is counted (per leaf and in total); the leaf sees a gap.
//! - Call `poll` from the idle loop: it sends packets whose delay expired and heartbeats
//!   when nothing was sent for `heartbeat`.
//! - With [`FanoutConfig::rerequest`] the root also runs a MoldUDP64 re-request server at
//!   a unicast address, as a [`Publisher`](crate::Publisher) does (the same code): the
//!   packetizer keeps every data packet in a retransmission store as it closes it, and
//!   requests are answered on the fan-out's own thread (the shards never see them)
//!   whenever it is driven — each `poll`, and from the send path at most every 100 µs —
//!   one batch of at most 64 requests at a time. A reply is one packet unicast from the
//!   server's socket to the requester's address, so a leaf that lost packets gets them
//!   from the root ([`DataLeaf`](crate::rooted_transport::DataLeaf) with
//!   [`SubscriptionConfig::recovery`](crate::SubscriptionConfig::recovery)).
//! - [`end_session`](Fanout::end_session) sends what is pending and an end-of-session
//!   packet to every leaf (once; later calls do nothing); offers are refused from then
//!   on. After it, keep calling `poll` for as long as re-requests should be served (the
//!   linger): it answers them and sends the end of session again every heartbeat
//!   interval, so that a lost end is not final.
//! - [`close`](Fanout::close) (or dropping the fan-out) ends the session if that was not
//!   done yet, waits for the shards to finish their sends (at most 2 s), joins every
//!   thread and frees every buffer.
//! - After warm-up, offering, sending and completing allocate nothing and take no lock
//!   (adding and removing leaves do: they are the control path).
//!
//! ```no_run
//! use multipoint_dataplane::{Fanout, FanoutConfig};
//! use multipoint_dataplane::wire::Session;
//!
//! let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
//! socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>()?.into())?;
//! let mut fanout = Fanout::start(socket, FanoutConfig::new(Session::new("FEED1")?))?;
//! let leaves = fanout.leaves();
//! let leaf = leaves.add("127.0.0.1:40000".parse()?)?;
//! fanout.offer(b"hello")?;
//! fanout.flush();
//! leaves.remove(leaf)?;
//! let stats = fanout.close();
//! println!("{} packets to {} leaves", stats.packets, stats.leaves);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod leaves;
mod pool;
mod shard;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use leaves::{FanoutLeafId, FanoutLeaves, LeafStats};

use self::leaves::Control;
use self::pool::Pool;
use self::shard::{Command, Link, Setup};
use crate::config::{BackendChoice, BackendInfo, BackendKind, IdleStrategy};
use crate::core::packetizer::{Packetizer, PacketizerConfig};
use crate::error::{Error, Result};
use crate::host::HostNeeds;
use crate::io::mmsg::MmsgSend;
use crate::io::sim::{SimSend, SimSocket};
use crate::io::uring::{build_ring, UringSend};
use crate::io::{choose, sim_backend, DataSocket, MAX_GSO_BYTES, MAX_GSO_SEGMENTS};
use crate::publisher::packing::{packing_methods, Packing};
use crate::publisher::rerequest::{self, RerequestConfig, Rerequests};
use crate::runtime::{self, Spawn};
use crate::stat::kinds::SenderEntries;
use crate::wire::{Session, DEFAULT_MAX_DATAGRAM};

/// Longest `close` waits for a free buffer for the end of session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The send buffer the fan-out asks for on the root's socket (capped by
/// `net.core.wmem_max`): bursts to many leaves need room.
const SEND_BUFFER: usize = 4 << 20;

/// How a fan-out is set up.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The MoldUDP64 session name carried in every packet.
    pub session: Session,
    /// Shard threads; leaves are spread over them.
    pub shards: usize,
    /// Which I/O backend the shards use.
    pub backend: BackendChoice,
    /// What an idle shard does.
    pub idle: IdleStrategy,
    /// Whether several packets waiting for one leaf leave as one UDP GSO send.
    pub gso: bool,
    /// Largest datagram payload: packets are filled up to this size.
    pub max_datagram: usize,
    /// Longest a non-empty packet waits for more messages before it leaves.
    pub max_delay: Duration,
    /// Heartbeat interval while idle.
    pub heartbeat: Duration,
    /// Packet buffers (each `max_datagram` bytes) shared by all shards: being filled,
    /// held in a batch, or in flight to some leaf. At most 65535.
    pub buffers: usize,
    /// Most full packets held between `begin_batch` and `end_batch` before they leave
    /// anyway: at most what one GSO send carries (64 packets, and 65,507 bytes: 44
    /// packets of 1472 bytes), so that each hand-over fills whole GSO sends.
    pub max_batch: usize,
    /// Most leaves on one shard (1 to 65000). Each shard reserves send state for this
    /// many leaves up front, about 1.3 KB per leaf.
    pub max_leaves_per_shard: usize,
    /// Whether to pin shard `i` to core `i mod cores`.
    pub pin: bool,
    /// A re-request server to run beside the stream, on the root's thread (`None`: a
    /// packet a leaf lost is lost for good). Its socket is made on the same network as
    /// the root's data socket (the host's, or the simulated one of a simulated socket).
    pub rerequest: Option<RerequestConfig>,
}

impl FanoutConfig {
    /// Defaults for `session`: one shard, backend auto, blocking idle, GSO on,
    /// 1472-byte datagrams, 100 µs maximum delay, heartbeats every second, 1024 buffers,
    /// batches of one full GSO send (64, cut to 44 for 1472-byte datagrams), 1024 leaves
    /// per shard, not pinned (set `pin` to pin), no re-request server.
    pub fn new(session: Session) -> FanoutConfig {
        FanoutConfig {
            session,
            shards: 1,
            backend: BackendChoice::Auto,
            idle: IdleStrategy::Block,
            gso: true,
            max_datagram: DEFAULT_MAX_DATAGRAM,
            max_delay: Duration::from_micros(100),
            heartbeat: Duration::from_secs(1),
            buffers: 1024,
            max_batch: MAX_GSO_SEGMENTS,
            max_leaves_per_shard: 1024,
            pin: false,
            rerequest: None,
        }
    }
}

impl FanoutConfig {
    /// What this fan-out will ask of the host (see [`crate::host`]).
    pub fn host_needs(&self) -> HostNeeds {
        let shards = u32::try_from(self.shards).unwrap_or(u32::MAX);
        HostNeeds {
            senders: shards,
            sender_ring: shard::ring_size(self.max_leaves_per_shard),
            probes: 1,
            send_buffer: SEND_BUFFER as u64,
            threads: shards,
            ..HostNeeds::default()
        }
    }
}

/// A snapshot of a fan-out's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanoutStats {
    /// Messages accepted by `offer`.
    pub messages: u64,
    /// Message bytes accepted.
    pub bytes: u64,
    /// Packets handed to the shards (data, heartbeats and end of session), each counted
    /// once however many leaves it went to.
    pub packets: u64,
    /// Of those, packets that found no leaf at all (sent to nobody).
    pub unrouted: u64,
    /// Packet sends to leaves the kernel took: one per packet and leaf.
    pub deliveries: u64,
    /// Send operations (SQEs or sendmmsg entries): one per leaf and run of packets.
    pub send_ops: u64,
    /// Of those, operations that carried several packets as one GSO send.
    pub gso_ops: u64,
    /// Packet sends to leaves that failed (those leaves will see the gap).
    pub send_errors: u64,
    /// Leaves now.
    pub leaves: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Offers refused because every packet buffer was in use (and an end of session
    /// that found none within 2 s, not sent).
    pub backpressure: u64,
    /// Packet buffers in use now (being filled, held, or not yet sent to every leaf);
    /// 0 after `close` once every send finished.
    pub buffers_in_use: u64,
}

/// The root's own counters (its thread only).
#[derive(Debug, Clone, Copy, Default)]
struct RootCounters {
    packets: u64,
    unrouted: u64,
    backpressure: u64,
}

/// The root's sender. See the module docs.
pub struct Fanout {
    backend: BackendInfo,
    control: Arc<Control>,
    threads: Vec<JoinHandle<()>>,
    pool: Arc<Pool>,
    /// What goes in which packet and when it leaves (sans-IO).
    core: Packetizer,
    /// Which shards the packets being handed over go to (one flag per shard, reused).
    targets: Vec<bool>,
    counters: RootCounters,
    /// The re-request server, if one was configured.
    rerequest: Option<Rerequests>,
    /// A simulated root socket, kept bound while the shards send from its address.
    _sim_socket: Option<SimSocket>,
    closed: bool,
    /// Its entry in the counters file (`multipoint stat`).
    stat: SenderEntries,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("shards", &self.control.links.len())
            .field("backend", &self.backend)
            .field("leaves", &self.control.len())
            .field("next_sequence", &self.core.next_sequence())
            .finish()
    }
}

impl Fanout {
    /// Starts the shards. `socket` is the root's bound UDP data socket (made by the control
    /// layer). Each shard sends on a dup of it (`try_clone`), so every packet leaves from
    /// the socket's address (leaves `connect()` their receive sockets to that address).
    /// The fan-out never reads from it; it raises its send buffer to 4 MiB (capped by
    /// `net.core.wmem_max`) if it was smaller. With [`FanoutConfig::rerequest`], also
    /// binds the re-request server's socket (on the socket's network) and allocates the
    /// retransmission store.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for settings out of range or an unbound socket;
    /// [`Error::UringUnavailable`] when io_uring was required and is not there;
    /// [`Error::Io`] if duplicating the socket or setting up a shard fails;
    /// [`Error::RerequestBind`] if the re-request server's address cannot be bound.
    pub fn start(socket: impl Into<DataSocket>, mut config: FanoutConfig) -> Result<Fanout> {
        check(&config)?;
        let core = packetizer(&config)?;
        let full_gso = MAX_GSO_SEGMENTS
            .min(MAX_GSO_BYTES / config.max_datagram)
            .max(1);
        config.max_batch = config.max_batch.clamp(1, full_gso);
        let socket = socket.into();
        let local = match &socket {
            DataSocket::Sim(socket) => socket.local_addr(),
            DataSocket::Host(socket) => {
                let local = socket
                    .local_addr()
                    .map_err(Error::io("reading the root socket's address"))?;
                let Some(local) = local.as_socket() else {
                    return Err(Error::Config(
                        "the root's data socket is not an IP socket".into(),
                    ));
                };
                if socket.send_buffer_size().unwrap_or(0) < SEND_BUFFER {
                    let _ = socket.set_send_buffer_size(SEND_BUFFER);
                }
                local
            }
        };
        if local.port() == 0 {
            return Err(Error::Config(
                "the root's data socket is not bound: bind it first (leaves connect to its \
                 address)"
                    .into(),
            ));
        }
        let backend = match &socket {
            DataSocket::Sim(_) => sim_backend(),
            DataSocket::Host(_) if config.backend == BackendChoice::Xdp => {
                return Err(Error::Config(
                    "the XDP backend sends to multicast groups only, and a fan-out sends \
                     unicast to each leaf: use io_uring or mmsg"
                        .into(),
                ))
            }
            DataSocket::Host(_) => choose(config.backend)?,
        };
        // Before any shard starts: a server that cannot bind leaves nothing to stop.
        let rerequest = match &config.rerequest {
            Some(rerequest) => {
                let sim = match &socket {
                    DataSocket::Sim(socket) => Some(socket.net()),
                    DataSocket::Host(_) => None,
                };
                Some(Rerequests::bind(
                    rerequest,
                    config.session,
                    config.max_datagram,
                    sim,
                )?)
            }
            None => None,
        };
        let pool = Arc::new(
            Pool::new(config.buffers, config.max_datagram)
                .map_err(Error::io("allocating the fan-out's packet buffers"))?,
        );
        let cores = runtime::cores();
        let mut links: Vec<Link> = Vec::with_capacity(config.shards);
        let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(config.shards);
        for index in 0..config.shards {
            let setup = Setup {
                index,
                pool: Arc::clone(&pool),
                max_leaves: config.max_leaves_per_shard,
                spawn: Spawn {
                    name: format!("mp-fanout-{index}"),
                    index,
                    pin: config.pin.then_some(index % cores),
                    idle: config.idle,
                },
            };
            let started = start_shard(setup, &socket, backend.kind, config.gso);
            match started {
                Ok((link, thread)) => {
                    links.push(link);
                    threads.push(thread);
                }
                Err(e) => {
                    stop(&links, threads);
                    return Err(e);
                }
            }
        }
        let sim_socket = match socket {
            DataSocket::Sim(socket) => Some(socket),
            DataSocket::Host(_) => None,
        };
        let name = config.session.to_string();
        let stat = SenderEntries::register::<FanoutStats>(&name, &local.to_string(), None);
        let control = Arc::new(Control::new(
            links,
            config.max_leaves_per_shard,
            local.is_ipv6(),
            name,
        ));
        Ok(Fanout {
            targets: vec![false; config.shards],
            backend,
            control,
            threads,
            pool,
            core,
            counters: RootCounters::default(),
            rerequest,
            _sim_socket: sim_socket,
            closed: false,
            stat,
        })
    }

    /// A handle to add and remove leaves, from any thread.
    pub fn leaves(&self) -> FanoutLeaves {
        FanoutLeaves::new(Arc::clone(&self.control))
    }

    /// The backend the shards run and why.
    pub fn backend(&self) -> &BackendInfo {
        &self.backend
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.control.links.len()
    }

    /// Counters so far (the shards' are a moment old).
    pub fn stats(&self) -> FanoutStats {
        let core = self.core.stats();
        let mut stats = FanoutStats {
            messages: core.messages,
            bytes: core.bytes,
            packets: self.counters.packets,
            unrouted: self.counters.unrouted,
            heartbeats: core.heartbeats,
            backpressure: self.counters.backpressure,
            leaves: self.control.len() as u64,
            buffers_in_use: self.pool.count().saturating_sub(self.pool.free_len()) as u64,
            ..FanoutStats::default()
        };
        for link in &self.control.links {
            stats.deliveries += link.counters.deliveries.get();
            stats.send_ops += link.counters.send_ops.get();
            stats.gso_ops += link.counters.gso_ops.get();
            stats.send_errors += link.counters.send_errors.get();
        }
        stats
    }

    packing_methods!(together: "reach the shards", hands: "Hands to the shards");

    /// Timers and re-requests: sends the open packet once `max_delay` passed, a heartbeat
    /// when nothing was sent for the heartbeat interval (after the end of session, the
    /// end again), and answers one batch of re-requests. Call it from the idle loop, and
    /// after [`end_session`](Self::end_session) for as long as re-requests should be
    /// served.
    pub fn poll(&mut self) {
        self.run_timers();
        if let (Some(rerequest), Some(store)) = (self.rerequest.as_mut(), self.core.store()) {
            rerequest.serve(store, Instant::now());
        }
        if self.stat.due() {
            self.stat.publish(&self.stats(), None);
        }
    }

    /// Sends what is pending and an end-of-session packet to every leaf, now; offers are
    /// refused from then on. Only the first call does anything. The shards go on sending
    /// (the end again, from [`poll`](Self::poll)) and the re-request server goes on
    /// answering until the fan-out is closed or dropped.
    pub fn end_session(&mut self) {
        if self.core.is_ended() {
            return;
        }
        self.flush();
        // End of session needs a buffer: wait for the shards to free one if all are out.
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while self.pool.free_len() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
        if self.core.end_session(&mut self.pool) {
            self.hand_over();
        } else {
            self.counters.backpressure += 1;
            tracing::warn!("no packet buffer came free: no end of session sent");
        }
    }

    /// Ends the session (if not done yet), waits for the shards to finish (at most 2 s),
    /// joins their threads, and returns the final counters.
    pub fn close(mut self) -> FanoutStats {
        self.finish();
        let stats = self.stats();
        // The final counters, readable until the fan-out is gone.
        self.stat.publish(&stats, None);
        stats
    }

    fn finish(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.end_session();
        self.control.close();
        stop(&self.control.links, std::mem::take(&mut self.threads));
    }

    /// Hands the packets the packetizer says are due to every shard that has leaves.
    fn hand_over(&mut self) {
        let Some(ready) = self.core.poll_transmit() else {
            return;
        };
        // The promise to new leaves (FanoutLeaves::next_sequence) moves past these packets
        // before they are handed over, and before the shards' leaf counts are read: a leaf
        // added meanwhile either is counted here (and gets them) or reads the new promise
        // (and does not expect them). Sequentially consistent on both sides (the shard
        // stores its count SeqCst), as in the store-buffering pattern of
        // `runtime/wake.rs`.
        let next = self.core.unclosed_sequence();
        self.control.handed_next.store(next, Ordering::SeqCst);
        let links = &self.control.links;
        let mut holders = 0u32;
        for (target, link) in self.targets.iter_mut().zip(links) {
            *target = link.leaves.load(Ordering::SeqCst) > 0;
            holders += u32::from(*target);
        }
        let n = ready.len();
        if holders == 0 {
            for &(slot, _) in ready {
                self.pool.give_back(slot);
            }
            self.counters.unrouted += n as u64;
        } else {
            for &(slot, _) in ready {
                self.pool.share(slot, holders);
            }
            for (&target, link) in self.targets.iter().zip(links) {
                if !target {
                    continue;
                }
                for &packet in ready {
                    // Cannot fail: the queue has room for every slot of the pool.
                    if link.queue.push(packet).is_err() {
                        self.pool.release(packet.0);
                    }
                }
                link.commands.wake().notify_if_sleeping();
            }
        }
        self.counters.packets += n as u64;
        let now = Instant::now();
        self.core.handle_transmitted(n, now);
        if let (Some(rerequest), Some(store)) = (self.rerequest.as_mut(), self.core.store()) {
            rerequest.serve_if_due(store, now);
        }
        if self.stat.due() {
            self.stat.publish(&self.stats(), None);
        }
    }
}

impl Packing for Fanout {
    type Slots = Arc<Pool>;

    fn packing(&mut self) -> (&mut Packetizer, &mut Arc<Pool>) {
        (&mut self.core, &mut self.pool)
    }

    fn send_ready(&mut self) {
        self.hand_over();
    }

    /// Hands over what is held in a batch: its slots come back once sent.
    fn make_room(&mut self) {
        if self.core.held() > 0 {
            self.core.release_held();
            self.hand_over();
        }
    }

    fn refused(&mut self) {
        self.counters.backpressure += 1;
    }
}

/// Starts fan-out shard `setup.index` on the backend `kind`, sending from `socket`.
fn start_shard(
    setup: Setup,
    socket: &DataSocket,
    kind: BackendKind,
    gso: bool,
) -> Result<(Link, JoinHandle<()>)> {
    match socket {
        DataSocket::Sim(socket) => {
            let (net, from) = (socket.net().clone(), socket.local_addr());
            shard::start(setup, None, gso, move |ops| {
                Ok(SimSend::new(net, from, ops))
            })
        }
        DataSocket::Host(socket) => {
            let dup = socket
                .try_clone()
                .map_err(Error::io("duplicating the root's data socket"))?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&dup);
            let max_leaves = setup.max_leaves;
            match kind {
                BackendKind::Uring => shard::start(setup, Some(dup), gso, move |ops| {
                    let size = shard::ring_size(max_leaves);
                    let ring = build_ring(size.sq, size.cq, true)?;
                    // SAFETY: no region is registered; the socket dup is kept by the shard
                    // next to the sender, dropped after it.
                    unsafe { UringSend::new(fd, ring, ops, None) }
                }),
                BackendKind::Mmsg | BackendKind::Sim | BackendKind::Ipc | BackendKind::Xdp => {
                    shard::start(setup, Some(dup), gso, move |ops| Ok(MmsgSend::new(fd, ops)))
                }
            }
        }
    }
}

/// The packetizer for `config` (with a retransmission store if it serves re-requests), or
/// why the settings cannot work.
fn packetizer(config: &FanoutConfig) -> Result<Packetizer> {
    let full_gso = MAX_GSO_SEGMENTS
        .min(MAX_GSO_BYTES / config.max_datagram.max(1))
        .max(1);
    let packetizer = PacketizerConfig {
        session: config.session,
        max_datagram: config.max_datagram,
        max_delay: config.max_delay,
        heartbeat: config.heartbeat,
        max_batch: config.max_batch.clamp(1, full_gso),
    };
    let mut core = Packetizer::new(packetizer, config.buffers, Instant::now())
        .map_err(|e| Error::Config(e.0))?;
    if let Some(rerequest) = &config.rerequest {
        core.set_store(rerequest::store(rerequest)?);
    }
    Ok(core)
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Checks the settings `start` cannot work with (the packetizer checks the datagram size
/// and the buffer count).
fn check(config: &FanoutConfig) -> Result<()> {
    if config.shards == 0 {
        return Err(Error::Config("shards must be at least 1".into()));
    }
    if config.max_leaves_per_shard == 0 || config.max_leaves_per_shard > 65_000 {
        return Err(Error::Config(format!(
            "max_leaves_per_shard {} is outside 1..=65000",
            config.max_leaves_per_shard
        )));
    }
    Ok(())
}

/// Tells every shard to stop once it has sent what it has, and joins their threads.
fn stop(links: &[Link], threads: Vec<JoinHandle<()>>) {
    for link in links {
        let _ = link.commands.send(Command::Shutdown);
    }
    for thread in threads {
        if thread.join().is_err() {
            tracing::error!("a fan-out shard thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use socket2::Socket;

    use super::*;
    use crate::wire::{BLOCK_HEADER_LEN, HEADER_LEN};
    use crate::OfferError;

    fn bound() -> Socket {
        let socket =
            Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("a socket");
        socket
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("binding to loopback");
        socket
    }

    fn fanout(buffers: usize) -> Fanout {
        let config = FanoutConfig {
            backend: BackendChoice::Mmsg,
            buffers,
            pin: false,
            ..FanoutConfig::new(Session::new("UNIT").expect("a session name"))
        };
        Fanout::start(bound(), config).expect("starting a fan-out")
    }

    #[test]
    fn with_every_buffer_in_flight_an_offer_is_handed_back_unnumbered() {
        let mut fanout = fanout(4);
        // Stand in for sends in flight: hold every buffer.
        let held: Vec<u16> = std::iter::from_fn(|| fanout.pool.take()).collect();
        assert_eq!(held.len(), 4);
        assert_eq!(fanout.offer(b"one"), Err(OfferError::Backpressure));
        assert_eq!(fanout.offer(b"one"), Err(OfferError::Backpressure));
        assert_eq!(fanout.next_sequence(), 1, "refused messages take no number");
        let stats = fanout.stats();
        assert_eq!((stats.backpressure, stats.messages), (2, 0));
        assert_eq!(stats.buffers_in_use, 4);
        for slot in held {
            fanout.pool.give_back(slot);
        }
        assert_eq!(fanout.offer(b"one"), Ok(1));
        assert_eq!(fanout.offer(b"two"), Ok(2));
        let stats = fanout.close();
        // No leaves: the packet and the end of session went to nobody, and said so.
        assert_eq!((stats.messages, stats.packets, stats.unrouted), (2, 2, 2));
        assert_eq!(stats.buffers_in_use, 0);
    }

    /// A fan-out of `buffers` buffers that began a batch and was offered `n` messages
    /// that each fill a packet.
    fn batched_full_packets(buffers: usize, n: usize) -> Fanout {
        let mut fanout = fanout(buffers);
        let big = vec![7u8; fanout.max_message()];
        fanout.begin_batch();
        for _ in 0..n {
            fanout.offer(&big).expect("room");
        }
        fanout
    }

    #[test]
    fn a_batch_holds_full_packets_until_it_ends() {
        let mut fanout = batched_full_packets(16, 3);
        // Two full packets held, the third open: nothing handed over yet.
        assert_eq!(fanout.stats().packets, 0);
        assert_eq!(fanout.stats().buffers_in_use, 3);
        fanout.end_batch();
        assert_eq!(fanout.stats().packets, 2);
        fanout.flush();
        assert_eq!(fanout.stats().packets, 3);
    }

    #[test]
    fn the_root_moves_between_threads_and_the_leaves_handle_is_shared() {
        fn send<T: Send>() {}
        fn shared<T: Send + Sync + Clone>() {}
        send::<Fanout>();
        shared::<FanoutLeaves>();
    }

    #[test]
    fn batches_hold_at_most_one_full_gso_send() {
        let mut fanout = batched_full_packets(256, 60);
        // 44 packets of 1472 bytes fill a GSO send: they went when the 45th was closed.
        assert_eq!(fanout.stats().packets, 44);
        fanout.end_batch();
        assert_eq!(fanout.stats().packets, 59);
    }

    #[test]
    fn a_message_longer_than_a_packet_is_refused() {
        let mut fanout = fanout(4);
        let limit = fanout.max_message();
        assert_eq!(limit, DEFAULT_MAX_DATAGRAM - HEADER_LEN - BLOCK_HEADER_LEN);
        let e = fanout.offer(&vec![0; limit + 1]);
        assert_eq!(
            e,
            Err(OfferError::TooLarge {
                len: limit + 1,
                limit
            })
        );
        assert_eq!(fanout.next_sequence(), 1);
    }
}
