//! Per-core shards: threads that each own a receive engine (an io_uring, or the mmsg
//! fallback), their subscriptions' sockets, sequence trackers, handlers, counters and
//! latency histograms. Shards share nothing on the hot path; the owner talks to them over
//! a bounded command channel.
//!
//! # Contract
//!
//! - [`Shards::start`] spawns N threads, each pinned to a core (when `pin` is set) and idling
//!   as configured: [`IdleStrategy::Block`] sleeps in the kernel, the others poll.
//! - [`Shards::subscribe`] creates and joins the socket through the control crate on the
//!   caller's thread, then hands it to a shard (round robin unless one is named).
//!   [`Shards::subscribe_socket`] does the same with a socket the caller already bound (a
//!   unicast socket the control layer made, perhaps connected to the one peer it accepts).
//!   The handler runs on that shard's thread and sees each message as a slice of the
//!   buffer the kernel filled, valid only during the call.
//! - [`Subscription::close`] gives the handler back with the final counters and latency
//!   histogram; the shard leaves the group (if it joined one) and closes the socket.
//!   [`Shards::shutdown`] (or dropping [`Shards`]) stops and joins every thread and frees
//!   every buffer.
//! - After warm-up the receive path allocates nothing (unless the handler does).

use std::any::Any;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver as Rx, Sender as Tx};
use multipoint_control::{Direction, Interface, Membership, MultipointSocket, Roles, Transport};
use socket2::{Socket, Type};

use crate::config::{BackendChoice, BackendInfo, IdleStrategy, BACKOFF_SPIN};
use crate::error::{Error, Result};
use crate::fanout::wake::Wake;
use crate::host::{HostNeeds, RingSize};
use crate::io::sockopt::{set_rxq_ovfl, set_udp_gro};
use crate::io::uring::{RECV_HEADER_LEN, RECV_NAME_LEN, SHARD_RING};
use crate::io::{choose, segments, Event, Receiver, RECV_CONTROL_LEN};
use crate::latency::{now_ns, read_stamp, LatencyHistogram};
use crate::sequence::{Gap, SequenceTracker, StartAt, Verdict};
use crate::stats::{SubscriptionCounters, SubscriptionStats};
use crate::wire::{Packet, Session, DEFAULT_MAX_DATAGRAM};

/// What a subscription calls for each message and event. Runs on the shard's thread.
pub trait Handler: Send + 'static {
    /// A message with its sequence number. `message` borrows the receive buffer.
    fn on_message(&mut self, sequence: u64, message: &[u8]);
    /// Messages `gap.first_missing..gap.end()` were lost (they will not be delivered).
    fn on_gap(&mut self, gap: Gap) {
        let _ = gap;
    }
    /// The publisher ended the session.
    fn on_end_of_session(&mut self) {}
}

impl<F: FnMut(u64, &[u8]) + Send + 'static> Handler for F {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        self(sequence, message)
    }
}

/// A handler whose concrete type is forgotten on the shard and recovered on close.
trait ErasedHandler: Send {
    fn on_message(&mut self, sequence: u64, message: &[u8]);
    fn on_gap(&mut self, gap: Gap);
    fn on_end_of_session(&mut self);
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<H: Handler> ErasedHandler for H {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        Handler::on_message(self, sequence, message)
    }
    fn on_gap(&mut self, gap: Gap) {
        Handler::on_gap(self, gap)
    }
    fn on_end_of_session(&mut self) {
        Handler::on_end_of_session(self)
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// How the shards are set up.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Number of shard threads.
    pub shards: usize,
    /// Which I/O backend.
    pub backend: BackendChoice,
    /// What a shard does when idle.
    pub idle: IdleStrategy,
    /// Whether sockets ask for UDP GRO (several datagrams per receive).
    pub gro: bool,
    /// Receive buffers per shard (a power of two).
    pub buffers: u16,
    /// Largest datagram expected without GRO (larger ones are counted as truncated).
    pub max_datagram: usize,
    /// Most subscriptions per shard.
    pub max_subscriptions: u32,
    /// Whether to pin each shard thread to a core (see `first_core`).
    pub pin: bool,
    /// With `pin`, shard `i` runs on core `(first_core + i) mod cores`, where `cores` is
    /// the number of cores this process may use. Give two [`Shards`] in one process
    /// different first cores so that they do not share cores.
    pub first_core: usize,
}

impl Default for ShardConfig {
    /// One shard, backend auto, blocking idle, GRO on, 64 buffers, 1472-byte datagrams,
    /// 64 subscriptions per shard, pinned from core 0.
    fn default() -> Self {
        ShardConfig {
            shards: 1,
            backend: BackendChoice::Auto,
            idle: IdleStrategy::Block,
            gro: true,
            buffers: 64,
            max_datagram: DEFAULT_MAX_DATAGRAM,
            max_subscriptions: 64,
            pin: true,
            first_core: 0,
        }
    }
}

impl ShardConfig {
    /// The largest payload one receive buffer must hold: a whole GRO batch (65,535
    /// bytes) with `gro`, else one datagram.
    fn receive_payload(&self) -> usize {
        if self.gro {
            65_535
        } else {
            self.max_datagram.max(DEFAULT_MAX_DATAGRAM)
        }
    }

    /// What these shards will ask of the host (see [`crate::host`]).
    pub fn host_needs(&self) -> HostNeeds {
        let receive_buffer = RECV_HEADER_LEN + RECV_NAME_LEN + RECV_CONTROL_LEN;
        HostNeeds {
            shards: u32::try_from(self.shards).unwrap_or(u32::MAX),
            shard_ring: SHARD_RING.max(RingSize {
                sq: 0,
                cq: u32::from(self.buffers) * 4,
            }),
            shard_buffers: self.buffers,
            shard_buffer_bytes: (receive_buffer + self.receive_payload()) as u64,
            probes: 1,
            threads: u32::try_from(self.shards).unwrap_or(u32::MAX),
            ..HostNeeds::default()
        }
    }
}

/// What to subscribe to.
///
/// [`Shards::subscribe_socket`] ignores `group`, `source` and `interface` (the caller made
/// the socket); the other fields apply to both kinds of subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    /// Group and port.
    pub group: SocketAddr,
    /// Source for a source-specific join; `None`: any source.
    pub source: Option<IpAddr>,
    /// Interface to join on.
    pub interface: Interface,
    /// Follow only this session; `None`: the first session seen.
    pub session: Option<Session>,
    /// Where the stream starts (see [`StartAt`]).
    pub start: StartAt,
    /// Record one-way latency from a timestamp in each message's first 8 bytes
    /// ([`crate::latency::write_stamp`]).
    pub timestamps: bool,
    /// Socket receive buffer to ask for (capped by `net.core.rmem_max`).
    pub recv_buffer: usize,
    /// Put the subscription on this shard; `None`: round robin.
    pub shard: Option<usize>,
}

impl SubscriptionConfig {
    /// What this subscription will ask of the host: its socket's receive buffer.
    pub fn host_needs(&self) -> HostNeeds {
        HostNeeds {
            recv_buffer: self.recv_buffer as u64,
            ..HostNeeds::default()
        }
    }

    /// Defaults for `group`: any source, interface by route, first session seen, stream
    /// from sequence 1, no timestamps, 8 MiB receive buffer, round robin.
    pub fn new(group: SocketAddr) -> SubscriptionConfig {
        SubscriptionConfig {
            group,
            source: None,
            interface: Interface::Default,
            session: None,
            start: StartAt::One,
            timestamps: false,
            recv_buffer: 8 << 20,
            shard: None,
        }
    }
}

/// The socket a subscription receives on.
enum SubSocket {
    /// Made and joined by [`Shards::subscribe`]. The membership is declared first so that
    /// it drops (leaving the group) while its socket is still open.
    Joined {
        _membership: Membership,
        socket: MultipointSocket,
    },
    /// The caller's socket, from [`Shards::subscribe_socket`].
    Given(Socket),
}

impl AsFd for SubSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            SubSocket::Joined { socket, .. } => socket.as_fd(),
            SubSocket::Given(socket) => socket.as_fd(),
        }
    }
}

struct SubState {
    id: u64,
    slot: u32,
    socket: SubSocket,
    tracker: SequenceTracker<[u8; 10]>,
    counters: Arc<SubscriptionCounters>,
    /// The session the tracker follows, published once it is known.
    session: Arc<OnceLock<Session>>,
    /// Whether `session` is set (a plain flag, so the hot path reads no shared memory).
    session_known: bool,
    handler: Box<dyn ErasedHandler>,
    latency: Box<LatencyHistogram>,
    timestamps: bool,
}

enum Command {
    Subscribe(Box<SubState>, Tx<Result<()>>),
    Close(u64, Tx<Result<Box<SubState>>>),
    /// Swap the subscription's histogram for the one given (so the shard allocates
    /// nothing) and send the old one back.
    TakeLatency(
        u64,
        Box<LatencyHistogram>,
        Tx<Option<Box<LatencyHistogram>>>,
    ),
    Shutdown,
}

/// The way into a shard: its command queue, and the eventfd that wakes it when it blocks
/// (so a command is taken at once, not after the shard's wait runs out).
#[derive(Clone)]
struct Link {
    tx: Tx<Command>,
    wake: Arc<Wake>,
}

impl Link {
    fn send(&self, cmd: Command) -> std::result::Result<(), crossbeam_channel::SendError<Command>> {
        self.tx.send(cmd)?;
        self.wake.notify();
        Ok(())
    }
}

struct ShardHandle {
    link: Link,
    thread: Option<JoinHandle<()>>,
}

/// The running shards. See the module docs.
pub struct Shards {
    shards: Vec<ShardHandle>,
    backend: BackendInfo,
    config: ShardConfig,
    next: usize,
    next_id: u64,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("shards", &self.shards.len())
            .field("backend", &self.backend)
            .finish()
    }
}

impl Shards {
    /// Starts the shard threads.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for zero shards or a buffer count that is not a power of two;
    /// [`Error::UringUnavailable`] when io_uring was required and is missing;
    /// [`Error::Io`] when a shard cannot set up its engine.
    pub fn start(config: ShardConfig) -> Result<Shards> {
        if config.shards == 0 {
            return Err(Error::Config("shards must be at least 1".into()));
        }
        if !config.buffers.is_power_of_two() {
            return Err(Error::Config(format!(
                "buffers {} is not a power of two",
                config.buffers
            )));
        }
        let backend = choose(config.backend)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let payload = config.receive_payload();
        let mut shards = Vec::with_capacity(config.shards);
        for index in 0..config.shards {
            let (tx, rx) = bounded::<Command>(64);
            let wake = Arc::new(Wake::new().map_err(Error::io("creating a shard's eventfd"))?);
            let shard_wake = Arc::clone(&wake);
            let (ready_tx, ready_rx) = bounded::<Result<()>>(1);
            let kind = backend.kind;
            let cfg = config.clone();
            let thread = std::thread::Builder::new()
                .name(format!("mp-shard-{index}"))
                .spawn(move || {
                    if cfg.pin {
                        // Reduced first so that the sum cannot overflow.
                        pin_to((cfg.first_core % cores + index % cores) % cores);
                    }
                    let receiver =
                        match Receiver::new(kind, cfg.max_subscriptions, cfg.buffers, payload)
                            .and_then(|mut r| r.watch_wake(shard_wake.fd()).map(|()| r))
                        {
                            Ok(r) => {
                                let _ = ready_tx.send(Ok(()));
                                r
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(Error::Io {
                                    op: "setting up a shard's receive engine",
                                    source: e,
                                }));
                                return;
                            }
                        };
                    Shard {
                        index,
                        receiver,
                        subs: (0..cfg.max_subscriptions).map(|_| None).collect(),
                        idle: cfg.idle,
                        panicked: Vec::with_capacity(cfg.max_subscriptions as usize),
                        dead: Vec::new(),
                    }
                    .run(&rx);
                    // The eventfd outlives the receiver that watched it.
                    drop(shard_wake);
                })
                .map_err(Error::io("spawning a shard thread"))?;
            let handle = ShardHandle {
                link: Link { tx, wake },
                thread: Some(thread),
            };
            match ready_rx.recv() {
                Ok(Ok(())) => shards.push(handle),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::ShardGone(index)),
            }
        }
        Ok(Shards {
            shards,
            backend,
            config,
            next: 0,
            next_id: 1,
        })
    }

    /// The backend the shards run and why.
    pub fn backend(&self) -> &BackendInfo {
        &self.backend
    }

    /// The number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Joins `config.group` through the control crate and starts delivering its messages
    /// to `handler` on a shard.
    ///
    /// # Errors
    ///
    /// [`Error::Control`] when the socket cannot be made or joined (with the control
    /// crate's explanation); [`Error::Io`] for socket options; [`Error::Config`] for an
    /// unknown shard; [`Error::ShardGone`] if the shard stopped.
    pub fn subscribe<H: Handler>(
        &mut self,
        config: SubscriptionConfig,
        handler: H,
    ) -> Result<Subscription<H>> {
        let index = self.pick_shard(config.shard)?;
        let transport = match config.group.ip() {
            IpAddr::V4(_) => Transport::Udp4Multicast,
            IpAddr::V6(_) => Transport::Udp6Multicast,
        };
        let socket = MultipointSocket::new(transport, Roles::LEAF)?;
        socket.set_interface(config.interface.clone())?;
        self.receive_options(socket.socket(), &config)?;
        let membership = socket.join_leaf(config.group, Direction::ReceiverOnly, config.source)?;
        let socket = SubSocket::Joined {
            _membership: membership,
            socket,
        };
        self.hand_over(index, socket, &config, handler)
    }

    /// Starts delivering the messages that arrive on `socket`, a UDP socket the caller
    /// already bound (and possibly `connect()`ed, so that the kernel accepts datagrams from
    /// that one peer only), to `handler` on a shard. This is how a data plane runs on a
    /// unicast socket made by the control layer, e.g. a rooted transport's leaf.
    ///
    /// `config.group`, `config.source` and `config.interface` are ignored: the socket is
    /// used as it is, and no group is joined. The session, start, timestamps, receive
    /// buffer and shard settings apply as for [`subscribe`](Self::subscribe), and so do
    /// UDP GRO (when the shards use it) and `SO_RXQ_OVFL`. The subscription owns the socket
    /// from now on; closing the subscription closes it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a socket that is not a bound datagram socket, or an unknown
    /// shard; [`Error::Io`] if the socket cannot be inspected or configured;
    /// [`Error::ShardGone`] if the shard stopped.
    pub fn subscribe_socket<H: Handler>(
        &mut self,
        socket: Socket,
        config: SubscriptionConfig,
        handler: H,
    ) -> Result<Subscription<H>> {
        let index = self.pick_shard(config.shard)?;
        let kind = socket
            .r#type()
            .map_err(Error::io("reading the socket's type (SO_TYPE)"))?;
        if kind != Type::DGRAM {
            return Err(Error::Config(format!(
                "subscribe_socket needs a UDP (datagram) socket, and this one is of type {kind:?}"
            )));
        }
        let local = socket
            .local_addr()
            .map_err(Error::io("reading the socket's local address"))?;
        match local.as_socket() {
            Some(addr) if addr.port() != 0 => {}
            Some(_) => {
                return Err(Error::Config(
                    "the socket given to subscribe_socket is not bound: bind it to the \
                     address and port to receive on first"
                        .into(),
                ))
            }
            None => {
                return Err(Error::Config(
                    "subscribe_socket needs an IPv4 or IPv6 UDP socket".into(),
                ))
            }
        }
        self.receive_options(&socket, &config)?;
        self.hand_over(index, SubSocket::Given(socket), &config, handler)
    }

    /// The shard a new subscription goes to: the one named, or the next in turn.
    fn pick_shard(&mut self, named: Option<usize>) -> Result<usize> {
        match named {
            Some(i) if i < self.shards.len() => Ok(i),
            Some(i) => Err(Error::Config(format!(
                "shard {i} does not exist ({} shards)",
                self.shards.len()
            ))),
            None => {
                let i = self.next % self.shards.len();
                self.next += 1;
                Ok(i)
            }
        }
    }

    /// Sets the receive options every subscription's socket gets.
    fn receive_options(&self, socket: &Socket, config: &SubscriptionConfig) -> Result<()> {
        // The kernel caps the size at net.core.rmem_max; the host audit warns about that.
        let _ = socket.set_recv_buffer_size(config.recv_buffer);
        set_rxq_ovfl(socket.as_fd(), true).map_err(Error::io("setting SO_RXQ_OVFL"))?;
        if self.config.gro {
            set_udp_gro(socket.as_fd(), true).map_err(Error::io("setting UDP_GRO"))?;
        }
        Ok(())
    }

    /// Hands a configured socket and its handler to shard `index`.
    fn hand_over<H: Handler>(
        &mut self,
        index: usize,
        socket: SubSocket,
        config: &SubscriptionConfig,
        handler: H,
    ) -> Result<Subscription<H>> {
        let tracker = match config.session {
            Some(s) => SequenceTracker::with_session(*s.as_bytes(), config.start),
            None => SequenceTracker::new(config.start),
        };
        let session = Arc::new(OnceLock::new());
        if let Some(s) = config.session {
            let _ = session.set(s);
        }
        let counters = Arc::new(SubscriptionCounters::default());
        let id = self.next_id;
        self.next_id += 1;
        let state = Box::new(SubState {
            id,
            slot: 0,
            socket,
            tracker,
            counters: Arc::clone(&counters),
            session: Arc::clone(&session),
            session_known: config.session.is_some(),
            handler: Box::new(handler),
            latency: Box::new(LatencyHistogram::new()),
            timestamps: config.timestamps,
        });
        let shard = &self.shards[index];
        let (reply_tx, reply_rx) = bounded(1);
        shard
            .link
            .send(Command::Subscribe(state, reply_tx))
            .map_err(|_| Error::ShardGone(index))?;
        reply_rx.recv().map_err(|_| Error::ShardGone(index))??;
        Ok(Subscription {
            shard: index,
            id,
            counters,
            session,
            tx: Some(shard.link.clone()),
            _handler: PhantomData,
        })
    }

    /// Stops every shard and joins its thread; buffers and rings are freed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for shard in &self.shards {
            let _ = shard.link.send(Command::Shutdown);
        }
        for shard in &mut self.shards {
            if let Some(t) = shard.thread.take() {
                if t.join().is_err() {
                    tracing::error!("a shard thread panicked");
                }
            }
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A live subscription; its handler runs on a shard.
///
/// Dropping it closes it on its shard (without waiting); [`close`](Self::close) does the
/// same and gives back the handler and the final figures.
pub struct Subscription<H> {
    shard: usize,
    id: u64,
    counters: Arc<SubscriptionCounters>,
    session: Arc<OnceLock<Session>>,
    /// `None` once closed.
    tx: Option<Link>,
    _handler: PhantomData<fn() -> H>,
}

impl<H> Drop for Subscription<H> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // The reply goes nowhere: the shard drops the state, closing its socket.
            let (reply, _) = bounded(1);
            let _ = tx.send(Command::Close(self.id, reply));
        }
    }
}

impl<H> std::fmt::Debug for Subscription<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("shard", &self.shard)
            .field("stats", &self.counters.snapshot())
            .finish()
    }
}

/// What [`Subscription::close`] gives back.
#[derive(Debug)]
pub struct Closed<H> {
    /// The handler, with whatever state it gathered.
    pub handler: H,
    /// The final counters.
    pub stats: SubscriptionStats,
    /// One-way latency since the last [`Subscription::take_latency`] (empty unless
    /// timestamps were on).
    pub latency: LatencyHistogram,
}

impl<H: Handler> Subscription<H> {
    /// The shard the subscription runs on.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// The counters now.
    pub fn stats(&self) -> SubscriptionStats {
        self.counters.snapshot()
    }

    /// The session the subscription follows: the one configured, or else the first one
    /// seen, once a packet of it arrived. `None` until then.
    pub fn session(&self) -> Option<Session> {
        self.session.get().copied()
    }

    /// The latency histogram recorded since the last call, leaving an empty one in its
    /// place (for interval logs).
    ///
    /// # Errors
    ///
    /// [`Error::ShardGone`] if the shard stopped.
    pub fn take_latency(&self) -> Result<LatencyHistogram> {
        let (tx, rx) = bounded(1);
        // The fresh histogram is allocated here, not on the shard.
        let fresh = Box::new(LatencyHistogram::new());
        self.tx
            .as_ref()
            .ok_or(Error::ShardGone(self.shard))?
            .send(Command::TakeLatency(self.id, fresh, tx))
            .map_err(|_| Error::ShardGone(self.shard))?;
        rx.recv()
            .ok()
            .flatten()
            .map(|h| *h)
            .ok_or(Error::ShardGone(self.shard))
    }

    /// Leaves the group (if the subscription joined one), closes the socket and returns
    /// the handler with the final counters.
    ///
    /// # Errors
    ///
    /// [`Error::ShardGone`] if the shard stopped before the subscription was closed.
    pub fn close(mut self) -> Result<Closed<H>> {
        let (tx, rx) = bounded(1);
        self.tx
            .take()
            .ok_or(Error::ShardGone(self.shard))?
            .send(Command::Close(self.id, tx))
            .map_err(|_| Error::ShardGone(self.shard))?;
        let state = rx.recv().map_err(|_| Error::ShardGone(self.shard))??;
        let SubState {
            handler, latency, ..
        } = *state;
        let handler = handler
            .into_any()
            .downcast::<H>()
            .map_err(|_| Error::Config("subscription handler type mismatch".into()))?;
        Ok(Closed {
            handler: *handler,
            stats: self.counters.snapshot(),
            latency: *latency,
        })
    }
}

fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
            tracing::warn!(cpu, error = %e, "could not pin shard thread");
        }
    }
}

struct Shard {
    index: usize,
    receiver: Receiver,
    subs: Vec<Option<Box<SubState>>>,
    idle: IdleStrategy,
    /// Slots whose handler panicked during the last poll (capacity reserved).
    panicked: Vec<u32>,
    /// Ids of subscriptions closed because their handler panicked.
    dead: Vec<u64>,
}

impl Shard {
    fn run(mut self, rx: &Rx<Command>) {
        let block = Some(Duration::from_millis(10));
        let mut last_work = std::time::Instant::now();
        loop {
            let wait = match self.idle {
                IdleStrategy::Block => block,
                IdleStrategy::Backoff if last_work.elapsed() >= BACKOFF_SPIN => block,
                IdleStrategy::Spin | IdleStrategy::Yield | IdleStrategy::Backoff => None,
            };
            loop {
                match rx.try_recv() {
                    Ok(Command::Shutdown) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        return
                    }
                    Ok(cmd) => self.command(cmd),
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                }
            }
            let subs = &mut self.subs;
            let panicked = &mut self.panicked;
            let polled = self.receiver.poll(wait, &mut |event| {
                let slot = event.slot();
                // A handler that panics loses its subscription, not the whole shard.
                let run = std::panic::AssertUnwindSafe(|| on_event(subs, event));
                if std::panic::catch_unwind(run).is_err() && !panicked.contains(&slot) {
                    panicked.push(slot);
                }
            });
            self.drop_panicked();
            match polled {
                Ok(0) => {
                    if wait.is_none() {
                        self.idle.pause();
                    }
                }
                Ok(_) => {
                    if self.idle == IdleStrategy::Backoff {
                        last_work = std::time::Instant::now();
                    }
                }
                Err(e) => {
                    tracing::error!(shard = self.index, error = %e, "receive engine failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Removes the subscriptions whose handler panicked, remembering their ids so that
    /// closing them reports why.
    fn drop_panicked(&mut self) {
        while let Some(slot) = self.panicked.pop() {
            let Some(state) = self.subs.get_mut(slot as usize).and_then(Option::take) else {
                continue;
            };
            tracing::error!(
                shard = self.index,
                subscription = state.id,
                "a subscription's handler panicked; the subscription is closed"
            );
            if let Err(e) = self.receiver.remove(slot) {
                tracing::warn!(error = %e, "removing a socket from the shard");
            }
            self.dead.push(state.id);
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe(mut state, reply) => {
                let result = self
                    .receiver
                    .add(state.socket.as_fd().as_raw_fd())
                    .map_err(Error::io("adding a socket to the shard"))
                    .and_then(|slot| {
                        state.slot = slot;
                        match self.subs.get_mut(slot as usize) {
                            Some(place) => {
                                *place = Some(state);
                                Ok(())
                            }
                            None => Err(Error::Config("shard slot out of range".into())),
                        }
                    });
                let _ = reply.send(result);
            }
            Command::Close(id, reply) => {
                let found = self
                    .subs
                    .iter_mut()
                    .find(|s| s.as_ref().is_some_and(|s| s.id == id));
                let result = match found.and_then(Option::take) {
                    Some(state) => {
                        if let Err(e) = self.receiver.remove(state.slot) {
                            tracing::warn!(error = %e, "removing a socket from the shard");
                        }
                        Ok(state)
                    }
                    None if self.dead.contains(&id) => {
                        self.dead.retain(|&d| d != id);
                        Err(Error::HandlerPanicked { shard: self.index })
                    }
                    None => Err(Error::ShardGone(self.index)),
                };
                let _ = reply.send(result);
            }
            Command::TakeLatency(id, mut fresh, reply) => {
                let taken = self
                    .subs
                    .iter_mut()
                    .flatten()
                    .find(|s| s.id == id)
                    .map(|s| {
                        fresh.reset();
                        std::mem::swap(&mut s.latency, &mut fresh);
                        fresh
                    });
                let _ = reply.send(taken);
            }
            Command::Shutdown => {}
        }
    }
}

fn on_event(subs: &mut [Option<Box<SubState>>], event: Event<'_>) {
    let slot = match &event {
        Event::Datagram { slot, .. }
        | Event::Malformed { slot }
        | Event::Rearm { slot }
        | Event::Error { slot, .. } => *slot,
    };
    let Some(Some(sub)) = subs.get_mut(slot as usize) else {
        return;
    };
    let c = &sub.counters;
    match event {
        Event::Datagram {
            payload,
            truncated,
            meta,
            ..
        } => {
            c.datagrams.add(1);
            if let Some(drops) = meta.drops {
                c.kernel_drops.set(u64::from(drops));
            }
            if truncated {
                c.truncated.add(1);
                return;
            }
            if payload.is_empty() {
                // No header at all; the splitter below would yield no packet to count.
                c.malformed.add(1);
                return;
            }
            if meta
                .gro_segment
                .is_some_and(|s| usize::from(s) < payload.len())
            {
                c.gro_batches.add(1);
            }
            let now = if sub.timestamps { now_ns() } else { 0 };
            for packet in segments(payload, meta.gro_segment) {
                on_packet(sub, packet, now);
            }
        }
        Event::Malformed { .. } => c.malformed.add(1),
        Event::Rearm { .. } => c.rearms.add(1),
        Event::Error { errno, .. } => {
            c.receive_errors.add(1);
            tracing::debug!(errno, "receive error");
        }
    }
}

fn on_packet(sub: &mut SubState, bytes: &[u8], now: u64) {
    let c = &sub.counters;
    let Ok(packet) = Packet::new_checked(bytes) else {
        c.malformed.add(1);
        return;
    };
    c.packets.add(1);
    let count = packet.count();
    let verdict = sub
        .tracker
        .handle_packet(*packet.session().as_bytes(), packet.sequence(), count);
    if !sub.session_known {
        if let Some(session) = sub.tracker.session() {
            // Once per subscription: the tracker just locked onto its first session.
            let _ = sub.session.set(Session::from_bytes(session));
            sub.session_known = true;
        }
    }
    if let Some(gap) = verdict.gap() {
        c.gaps.add(1);
        c.missing.add(gap.count);
        sub.handler.on_gap(gap);
    }
    match verdict {
        Verdict::Deliver { skip, .. } => {
            // new_checked guarantees sequence + count does not overflow, so neither does
            // first + i (a counting range would step past the last number and could).
            let first = packet.sequence() + u64::from(skip);
            let (mut messages, mut bytes) = (0u64, 0u64);
            for (i, msg) in packet.messages().skip(usize::from(skip)).enumerate() {
                let sequence = first + i as u64;
                if sub.timestamps {
                    if let Some(stamp) = read_stamp(msg) {
                        sub.latency.record_since(stamp, now);
                    }
                }
                sub.handler.on_message(sequence, msg);
                messages += 1;
                bytes += msg.len() as u64;
            }
            c.messages.add(messages);
            c.bytes.add(bytes);
            c.duplicates.add(u64::from(skip));
        }
        Verdict::Duplicate | Verdict::AfterEnd => {
            c.duplicates.add(u64::from(packet.message_count()))
        }
        Verdict::Heartbeat { .. } => c.heartbeats.add(1),
        Verdict::EndOfSession { .. } => {
            c.end_of_session.add(1);
            if c.end_of_session.get() == 1 {
                sub.handler.on_end_of_session();
            }
        }
        Verdict::OtherSession => c.other_session.add(1),
        Verdict::OutOfRange => c.malformed.add(1),
    }
}
