//! Receive shards: threads (of the shard runtime, [`crate::runtime`]) that each own a
//! receive backend (io_uring, the mmsg fallback, or a simulated network), their
//! subscriptions' sockets, receive states (sans-IO, [`crate::core::receive`]), handlers,
//! counters and latency histograms. Shards share nothing on the hot path; the owner talks
//! to them over a bounded command channel.
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

pub mod ring;
mod shard;

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::bounded;
use multipoint_control::{Direction, Interface, MultipointSocket, Roles, Transport};
use socket2::{Socket, Type};

pub use self::ring::{poll_ring, PollConfig, RingReader, RingStats, RingWriter};
use self::shard::{Command, Shard, SubState};
use crate::config::{BackendChoice, BackendInfo, BackendKind, IdleStrategy, Network, XdpConfig};
use crate::core::event::Event;
use crate::core::lines::{Line, LineStats, LinesConfig, SharedLines};
use crate::core::receive::{
    Handler, Published, ReceiveConfig, ReceiveState, DEFAULT_SEQUENCE_WINDOW,
};
use crate::core::recovery::RecoveryConfig;
use crate::core::sequence::StartAt;
use crate::core::stamps::{KernelLatency, KernelStamps};
use crate::error::{Error, Result};
use crate::host::{HostNeeds, RingSize};
use crate::io::mmsg::MmsgRecv;
use crate::io::sim::{self, SimRecv};
use crate::io::sockopt::{set_rxq_ovfl, set_udp_gro};
use crate::io::stamps::{enable_hardware_rx, hardware_stamps, set_rx_stamping, HardwareStamps};
use crate::io::uring::{UringRecv, RECV_HEADER_LEN, RECV_NAME_LEN, SHARD_RING};
use crate::io::xdp::{recv::XdpRecv, XdpShared, XdpStats};
use crate::io::{choose, sim_backend, BatchRecv, DataSocket, OwnedSocket, RECV_CONTROL_LEN};
use crate::latency::LatencyHistogram;
use crate::runtime::{self, Link, Spawn, Started, Starting};
use crate::stat::kinds::SubscriptionEntries;
use crate::stats::{SubscriptionCounters, SubscriptionStats};
use crate::wire::{Session, DEFAULT_MAX_DATAGRAM};

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
    /// The network the shards receive on: the host's (with `backend`), or a simulated
    /// one (the sim backend, whatever `backend` says).
    pub network: Network,
    /// Where the AF_XDP backend runs (with [`BackendChoice::Xdp`]; ignored otherwise).
    pub xdp: XdpConfig,
}

impl Default for ShardConfig {
    /// One shard, backend auto, blocking idle, GRO on, 64 buffers, 1472-byte datagrams,
    /// 64 subscriptions per shard, not pinned (inside someone else's process the cores
    /// are theirs to give: set `pin` to pin from `first_core`), the host's network.
    fn default() -> Self {
        ShardConfig {
            shards: 1,
            backend: BackendChoice::Auto,
            idle: IdleStrategy::Block,
            gro: true,
            buffers: 64,
            max_datagram: DEFAULT_MAX_DATAGRAM,
            max_subscriptions: 64,
            pin: false,
            first_core: 0,
            network: Network::Host,
            xdp: XdpConfig::default(),
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
    /// Follow only this session; `None`: the session of the sender the stream locks onto.
    pub session: Option<Session>,
    /// Follow only this sender (address and port; port 0: any port of the address, learned
    /// at the lock). `None`: the `source` of a source-specific join with any port, the
    /// peer of a connected socket given to [`Shards::subscribe_socket`], or else the
    /// sender the stream locks onto (see [`crate::core::receive`]). Packets of the session
    /// from any other sender are counted as `foreign_source` and never reach the stream.
    pub sender: Option<SocketAddr>,
    /// Where the stream starts (see [`StartAt`]).
    pub start: StartAt,
    /// Record one-way latency from a timestamp in each message's first 8 bytes
    /// ([`crate::latency::write_stamp`]).
    pub timestamps: bool,
    /// Record a wire→application latency histogram from the kernel's receive stamp of
    /// each datagram to the moment its messages go to the handler, beside the end-to-end
    /// one ([`Subscription::take_kernel_latency`], [`crate::core::stamps`]). Each message
    /// delivered as its datagram arrives gets one sample (every message of a GRO-coalesced
    /// datagram that datagram's one stamp); messages delivered later from a hold (the
    /// packets before the lock onto a sender, a reorder window, in-order recovery,
    /// replies) get none. Costs, when on: the kernel stamps every datagram of the socket
    /// and adds a 64-byte control message to each receive, and the shard reads
    /// `CLOCK_REALTIME` once per datagram. [`KernelStamps::Off`], the default: none of it.
    pub kernel_stamps: KernelStamps,
    /// Socket receive buffer to ask for (capped by `net.core.rmem_max`).
    pub recv_buffer: usize,
    /// Put the subscription on this shard; `None`: round robin.
    pub shard: Option<usize>,
    /// How long a packet that arrives ahead of a missing one waits for it, so that a
    /// packet reordered on the way is delivered in order rather than reported missing
    /// (see [`crate::core::receive`]); zero, the default: not at all.
    pub reorder_window: Duration,
    /// How far ahead a packet may point and still be followed unconfirmed (see
    /// [`ReceiveConfig::sequence_window`]).
    pub sequence_window: u64,
    /// Packets that follow on from each other before an unnamed sender is locked onto
    /// (see [`ReceiveConfig::lock_after`]).
    pub lock_after: u8,
    /// Recover lost messages by re-request from the publisher's re-request server (see
    /// [`crate::core::recovery`]): the subscription gets a second, unicast socket that
    /// requests leave from and replies arrive on (on the same shard; it takes a second
    /// of the shard's `max_subscriptions` places). `None`, the default: a lost message
    /// is lost.
    pub recovery: Option<RecoveryConfig>,
    /// A second line of the same stream (A/B): joined on its own socket (and interface)
    /// on the same shard, and arbitrated with this one in the receive state (see
    /// [`crate::core::lines`]); it takes another of the shard's `max_subscriptions`
    /// places. Only for [`Shards::subscribe`]. `None`, the default: one line.
    pub line_b: Option<LineBConfig>,
}

/// The second line of a subscription (see [`SubscriptionConfig::line_b`]).
#[derive(Debug, Clone)]
pub struct LineBConfig {
    /// Its group and port.
    pub group: SocketAddr,
    /// Source for a source-specific join; `None`: any source. Also line B's sender
    /// (any port) unless [`LinesConfig::sender_b`] names one.
    pub source: Option<IpAddr>,
    /// Interface to join it on (often another NIC than line A's).
    pub interface: Interface,
    /// How the two lines are arbitrated: the wait for the slower line, the silence after
    /// which a line is down, line B's sender.
    pub arbitration: LinesConfig,
}

impl LineBConfig {
    /// Line B on `group`: any source, interface by route, the default arbitration (1 ms
    /// wait, 50 ms silence).
    pub fn new(group: SocketAddr) -> LineBConfig {
        LineBConfig {
            group,
            source: None,
            interface: Interface::Default,
            arbitration: LinesConfig::default(),
        }
    }
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
    /// from sequence 1, no timestamps, 8 MiB receive buffer, round robin, no reorder
    /// window.
    pub fn new(group: SocketAddr) -> SubscriptionConfig {
        SubscriptionConfig {
            group,
            source: None,
            interface: Interface::Default,
            session: None,
            start: StartAt::One,
            timestamps: false,
            kernel_stamps: KernelStamps::Off,
            recv_buffer: 8 << 20,
            shard: None,
            reorder_window: Duration::ZERO,
            sender: None,
            sequence_window: DEFAULT_SEQUENCE_WINDOW,
            lock_after: 0,
            recovery: None,
            line_b: None,
        }
    }
}

struct ShardHandle {
    link: Link<Command>,
    thread: Option<JoinHandle<()>>,
    /// Ends when the thread is about to exit (see [`Shards::shutdown_async`]).
    exited: Option<oneshot::Receiver<()>>,
}

/// The running shards. See the module docs.
pub struct Shards {
    shards: Vec<ShardHandle>,
    backend: BackendInfo,
    /// With the AF_XDP backend: the program, the sockets' set-up and counters.
    xdp: Option<Arc<XdpShared>>,
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
        let (starting, backend, xdp) = launch(&config)?;
        let mut shards = Vec::with_capacity(starting.len());
        let mut failed = None;
        for shard in starting {
            match shard.wait() {
                Ok(started) => shards.push(started.into()),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        Shards::started(shards, failed, backend, xdp, config)
    }

    /// [`start`](Self::start) without blocking the caller's thread: the shard threads
    /// are spawned at once and their set-up is awaited (for async code).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_async(config: ShardConfig) -> Result<Shards> {
        let (starting, backend, xdp) = launch(&config)?;
        let mut shards = Vec::with_capacity(starting.len());
        let mut failed = None;
        for shard in starting {
            match shard.wait_async().await {
                Ok(started) => shards.push(started.into()),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        Shards::started(shards, failed, backend, xdp, config)
    }

    /// The shards once every thread said how its set-up went: stopped again if one failed.
    fn started(
        mut shards: Vec<ShardHandle>,
        failed: Option<Error>,
        mut backend: BackendInfo,
        xdp: Option<Arc<XdpShared>>,
        config: ShardConfig,
    ) -> Result<Shards> {
        if let Some(e) = failed {
            stop(&mut shards);
            return Err(e);
        }
        if let Some(xdp) = &xdp {
            backend.reason = format!("{}: {}", backend.reason, xdp.setup());
        }
        Ok(Shards {
            shards,
            backend,
            xdp,
            config,
            next: 0,
            next_id: 1,
        })
    }

    /// The backend the shards run and why.
    pub fn backend(&self) -> &BackendInfo {
        &self.backend
    }

    /// With the AF_XDP backend, what its receive path did so far (summed over the
    /// shards): frames, deliveries, discards by reason, the kernel's drops, and how it
    /// was set up. `None` on the other backends.
    pub fn xdp_stats(&self) -> Option<XdpStats> {
        self.xdp.as_ref().map(|x| x.stats())
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
        self.subscribing(config, handler)?.wait()
    }

    /// [`subscribe`](Self::subscribe) without blocking the caller's thread on the
    /// shard's answer (for async code; the join itself is a few socket calls).
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    pub async fn subscribe_async<H: Handler>(
        &mut self,
        config: SubscriptionConfig,
        handler: H,
    ) -> Result<Subscription<H>> {
        self.subscribing(config, handler)?.wait_async().await
    }

    /// Subscribes with a [poll ring](crate::subscribe::ring) as the handler: the shard
    /// writes every event into the ring, and the application reads them on its own
    /// thread with [`PollSubscription::poll`].
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe), and [`poll_ring`]'s.
    pub fn subscribe_poll(
        &mut self,
        config: SubscriptionConfig,
        ring: PollConfig,
    ) -> Result<PollSubscription> {
        let (writer, reader) = poll_ring(ring)?;
        Ok(PollSubscription {
            subscription: self.subscribe(config, writer)?,
            reader,
        })
    }

    /// [`subscribe_poll`](Self::subscribe_poll) without blocking the caller's thread.
    ///
    /// # Errors
    ///
    /// As [`subscribe_poll`](Self::subscribe_poll).
    pub async fn subscribe_poll_async(
        &mut self,
        config: SubscriptionConfig,
        ring: PollConfig,
    ) -> Result<PollSubscription> {
        let (writer, reader) = poll_ring(ring)?;
        Ok(PollSubscription {
            subscription: self.subscribe_async(config, writer).await?,
            reader,
        })
    }

    /// Joins the groups and hands the subscription to its shard.
    pub(crate) fn subscribing<H: Handler>(
        &mut self,
        config: SubscriptionConfig,
        handler: H,
    ) -> Result<Pending<H>> {
        let index = self.pick_shard(config.shard)?;
        let socket = self.joined(config.group, config.source, &config.interface, &config)?;
        let line_b = match &config.line_b {
            Some(b) => Some(self.joined(b.group, b.source, &b.interface, &config)?),
            None => None,
        };
        self.hand_over(index, socket, line_b, &config, handler)
    }

    /// A socket joined to `group` (from `source`, if given) on `interface`, with the
    /// receive options of `config`.
    fn joined(
        &self,
        group: SocketAddr,
        source: Option<IpAddr>,
        interface: &Interface,
        config: &SubscriptionConfig,
    ) -> Result<OwnedSocket> {
        if let Network::Sim(net) = &self.config.network {
            let socket = net
                .bind(sim::wildcard(group))
                .map_err(Error::io("binding a simulated socket"))?;
            socket
                .join(group.ip(), source)
                .map_err(Error::io("joining a group on the simulated network"))?;
            return Ok(OwnedSocket::Sim(socket));
        }
        let transport = match group.ip() {
            IpAddr::V4(_) => Transport::Udp4Multicast,
            IpAddr::V6(_) => Transport::Udp6Multicast,
        };
        let socket = MultipointSocket::new(transport, Roles::LEAF)?;
        socket.set_interface(interface.clone())?;
        self.receive_options(socket.socket(), config)?;
        let membership = socket.join_leaf(group, Direction::ReceiverOnly, source)?;
        Ok(OwnedSocket::Joined {
            _membership: membership,
            socket,
        })
    }

    /// Starts delivering the messages that arrive on `socket`, a UDP socket the caller
    /// already bound (and possibly `connect()`ed, so that the kernel accepts datagrams from
    /// that one peer only), to `handler` on a shard. This is how a data plane runs on a
    /// unicast socket made by the control layer, e.g. a rooted transport's leaf. Shards on
    /// a simulated network take a socket of that network instead.
    ///
    /// `config.group`, `config.source` and `config.interface` are ignored: the socket is
    /// used as it is, and no group is joined. The session, start, timestamps, receive
    /// buffer and shard settings apply as for [`subscribe`](Self::subscribe), and so do
    /// UDP GRO (when the shards use it) and `SO_RXQ_OVFL`. The subscription owns the socket
    /// from now on; closing the subscription closes it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a socket that is not a bound datagram socket, a socket of
    /// the other kind of network than the shards', or an unknown shard; [`Error::Io`] if
    /// the socket cannot be inspected or configured; [`Error::ShardGone`] if the shard
    /// stopped.
    pub fn subscribe_socket<H: Handler>(
        &mut self,
        socket: impl Into<DataSocket>,
        config: SubscriptionConfig,
        handler: H,
    ) -> Result<Subscription<H>> {
        self.subscribing_socket(socket.into(), config, handler)?
            .wait()
    }

    /// [`subscribe_socket`](Self::subscribe_socket) without blocking the caller's thread
    /// on the shard's answer.
    ///
    /// # Errors
    ///
    /// As [`subscribe_socket`](Self::subscribe_socket).
    pub async fn subscribe_socket_async<H: Handler>(
        &mut self,
        socket: impl Into<DataSocket>,
        config: SubscriptionConfig,
        handler: H,
    ) -> Result<Subscription<H>> {
        self.subscribing_socket(socket.into(), config, handler)?
            .wait_async()
            .await
    }

    pub(crate) fn subscribing_socket<H: Handler>(
        &mut self,
        socket: DataSocket,
        config: SubscriptionConfig,
        handler: H,
    ) -> Result<Pending<H>> {
        if config.line_b.is_some() {
            return Err(Error::Config(
                "a second line (line_b) needs Shards::subscribe, which joins both groups; \
                 subscribe_socket takes one socket"
                    .into(),
            ));
        }
        let index = self.pick_shard(config.shard)?;
        let socket = match (socket, &self.config.network) {
            (DataSocket::Host(socket), Network::Host) => socket,
            (DataSocket::Sim(socket), Network::Sim(_)) => {
                return self.hand_over(index, OwnedSocket::Sim(socket), None, &config, handler)
            }
            (DataSocket::Host(_), Network::Sim(_)) => {
                return Err(Error::Config(
                    "these shards run on a simulated network: give them a socket of it".into(),
                ))
            }
            (DataSocket::Sim(_), Network::Host) => {
                return Err(Error::Config(
                    "these shards receive on the host's network: a simulated socket needs \
                     shards on its network (ShardConfig::network)"
                        .into(),
                ))
            }
        };
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
        self.hand_over(index, OwnedSocket::Given(socket), None, &config, handler)
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
        if config.kernel_stamps != KernelStamps::Off {
            let hardware = config.kernel_stamps == KernelStamps::Hardware
                && match hardware_stamps(&config.interface) {
                    HardwareStamps::Available { interface, .. } => {
                        match enable_hardware_rx(&interface) {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(%interface, error = %e,
                                    "hardware receive stamps could not be enabled \
                                     (SIOCSHWTSTAMP); software stamps instead");
                                false
                            }
                        }
                    }
                    HardwareStamps::Unavailable { .. } => false,
                };
            set_rx_stamping(socket.as_raw_fd(), hardware).map_err(Error::io(
                "turning on receive stamps (SO_TIMESTAMPING) on the subscription's socket",
            ))?;
        }
        Ok(())
    }

    /// Hands a configured socket (and line B's, if there is one) and its handler to
    /// shard `index`.
    fn hand_over<H: Handler>(
        &mut self,
        index: usize,
        socket: OwnedSocket,
        line_b: Option<OwnedSocket>,
        config: &SubscriptionConfig,
        handler: H,
    ) -> Result<Pending<H>> {
        // Unnamed: a connected socket's peer, else the source of a source-specific join
        // (any port).
        let peer = match &socket {
            OwnedSocket::Given(s) => s.peer_addr().ok().and_then(|a| a.as_socket()),
            OwnedSocket::Sim(s) => s.peer(),
            OwnedSocket::Joined { .. } => None,
        };
        let sender = config
            .sender
            .or(peer)
            .or_else(|| config.source.map(|ip| SocketAddr::new(ip, 0)));
        let mut state = ReceiveState::new(&ReceiveConfig {
            session: config.session,
            sender,
            start: config.start,
            timestamps: config.timestamps,
            kernel_stamps: config.kernel_stamps != KernelStamps::Off,
            reorder_window: config.reorder_window,
            sequence_window: config.sequence_window,
            lock_after: config.lock_after,
            recovery: config.recovery,
            lines: config.line_b.as_ref().map(|b| LinesConfig {
                sender_b: b
                    .arbitration
                    .sender_b
                    .or_else(|| b.source.map(|ip| SocketAddr::new(ip, 0))),
                ..b.arbitration
            }),
        });
        if config.kernel_stamps != KernelStamps::Off {
            state.set_hardware_report(match &socket {
                OwnedSocket::Sim(_) => "hardware stamps: unavailable (simulated network)".into(),
                _ => hardware_stamps(&config.interface).to_string(),
            });
        }
        let requests = match &config.recovery {
            Some(recovery) => Some(self.request_socket(recovery.server)?),
            None => None,
        };
        let group = match &socket {
            OwnedSocket::Joined { .. } => config.group.to_string(),
            _ => socket
                .local_addr()
                .map_or_else(|| config.group.to_string(), |a| a.to_string()),
        };
        let line_b_group = config.line_b.as_ref().map(|b| b.group.to_string());
        let session = config.session.map(|s| s.to_string());
        let stat = SubscriptionEntries::register(
            &mut state,
            session.as_deref(),
            &group,
            line_b_group.as_deref(),
        );
        let (counters, published) = state.shared();
        let lines = state.shared_lines();
        let id = self.next_id;
        self.next_id += 1;
        let state = Box::new(SubState {
            id,
            slot: 0,
            socket,
            state,
            handler: Box::new(handler),
            requests,
            request_slot: 0,
            line_b,
            line_b_slot: 0,
            stat,
        });
        let shard = &self.shards[index];
        let (reply_tx, reply) = oneshot::channel();
        shard
            .link
            .send(Command::Subscribe(state, reply_tx))
            .map_err(|_| Error::ShardGone(index))?;
        Ok(Pending {
            subscription: Subscription {
                shard: index,
                id,
                counters,
                published,
                lines,
                tx: Some(shard.link.clone()),
                _handler: PhantomData,
            },
            reply,
        })
    }

    /// The socket a subscription with recovery sends its requests to `server` from and
    /// reads the replies on: unicast, any port, of the server's address family.
    fn request_socket(&self, server: SocketAddr) -> Result<OwnedSocket> {
        let any = match server {
            SocketAddr::V4(_) => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        };
        if let Network::Sim(net) = &self.config.network {
            let socket = net
                .bind(sim::default_source(server))
                .map_err(Error::io("binding a simulated request socket"))?;
            return Ok(OwnedSocket::Sim(socket));
        }
        let socket = Socket::new(
            socket2::Domain::for_address(server),
            Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(Error::io("making the re-request socket"))?;
        socket
            .set_nonblocking(true)
            .map_err(Error::io("making the re-request socket non-blocking"))?;
        socket
            .bind(&any.into())
            .map_err(Error::io("binding the re-request socket"))?;
        // Replies come in bursts after a loss: room for a few hundred of them.
        let _ = socket.set_recv_buffer_size(1 << 20);
        Ok(OwnedSocket::Given(socket))
    }

    /// Stops every shard and joins its thread; buffers and rings are freed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// [`shutdown`](Self::shutdown) without blocking the caller's thread: every shard
    /// is told to stop, and its thread's exit is awaited before it is joined.
    pub async fn shutdown_async(mut self) {
        for shard in &self.shards {
            let _ = shard.link.send(Command::Shutdown);
        }
        for shard in &mut self.shards {
            if let Some(exited) = shard.exited.take() {
                // Disconnected: the thread panicked on its way out; it is gone either way.
                let _ = exited.await;
            }
        }
        // Every thread is past its last statement: joining returns at once.
        self.stop();
    }

    fn stop(&mut self) {
        stop(&mut self.shards);
    }
}

impl From<Started<Command>> for ShardHandle {
    fn from(started: Started<Command>) -> ShardHandle {
        ShardHandle {
            link: started.link,
            thread: Some(started.thread),
            exited: Some(started.exited),
        }
    }
}

/// Checks `config` and spawns its shard threads, which set themselves up; stops those
/// already spawned if one cannot be.
#[allow(clippy::type_complexity)]
fn launch(
    config: &ShardConfig,
) -> Result<(Vec<Starting<Command>>, BackendInfo, Option<Arc<XdpShared>>)> {
    if config.shards == 0 {
        return Err(Error::Config("shards must be at least 1".into()));
    }
    if !config.buffers.is_power_of_two() {
        return Err(Error::Config(format!(
            "buffers {} is not a power of two",
            config.buffers
        )));
    }
    let backend = match &config.network {
        Network::Host => choose(config.backend)?,
        Network::Sim(_) => sim_backend(),
    };
    let xdp = match backend.kind {
        BackendKind::Xdp => Some(Arc::new(XdpShared::open(&config.xdp, config.shards)?)),
        _ => None,
    };
    let cores = runtime::cores();
    let payload = config.receive_payload();
    let (max, buffers) = (config.max_subscriptions, config.buffers);
    let mut starting: Vec<Starting<Command>> = Vec::with_capacity(config.shards);
    for index in 0..config.shards {
        let spec = Spawn {
            name: format!("mp-shard-{index}"),
            index,
            // Reduced first so that the sum cannot overflow.
            pin: config
                .pin
                .then_some((config.first_core % cores + index % cores) % cores),
            idle: config.idle,
        };
        let started = match backend.kind {
            BackendKind::Uring => {
                start_shard(spec, max, move || UringRecv::new(max, buffers, payload))
            }
            BackendKind::Mmsg | BackendKind::Ipc => {
                start_shard(spec, max, move || MmsgRecv::new(max, buffers, payload))
            }
            BackendKind::Sim => {
                start_shard(spec, max, move || Ok(SimRecv::new(max, buffers, payload)))
            }
            BackendKind::Xdp => {
                let spin = config.idle == IdleStrategy::Spin;
                let Some(xdp) = xdp.clone() else {
                    return Err(Error::Config("the XDP backend was not set up".into()));
                };
                start_shard(spec, max, move || {
                    let queue = xdp.config.queue.saturating_add(index as u32);
                    let Some(program) = xdp.program.clone() else {
                        return Err(std::io::Error::other("no XDP program to steer frames"));
                    };
                    let counters = xdp.counters.get(index).cloned().unwrap_or_default();
                    let socket = xdp.socket(queue, spin)?;
                    let kernel = MmsgRecv::new(max, buffers, payload)?;
                    XdpRecv::new(socket, queue, program, counters, kernel, spin)
                })
            }
        };
        match started {
            Ok(shard) => starting.push(shard),
            Err(e) => {
                // Stop and join those already spawned.
                for shard in starting {
                    if let Ok(started) = shard.wait() {
                        stop(&mut [ShardHandle::from(started)]);
                    }
                }
                return Err(e);
            }
        }
    }
    Ok((starting, backend, xdp))
}

/// Starts one receive shard on the backend `make` builds (on the shard's thread).
fn start_shard<R: BatchRecv + 'static>(
    spec: Spawn,
    max_subscriptions: u32,
    make: impl FnOnce() -> std::io::Result<R> + Send + 'static,
) -> Result<Starting<Command>> {
    let index = spec.index;
    runtime::start(spec, move |wake| {
        let setup = |e| Error::Io {
            op: "setting up a shard's receive backend",
            source: e,
        };
        let mut receiver = make().map_err(setup)?;
        receiver.watch_wake(wake.fd()).map_err(setup)?;
        Ok(Shard::new(index, receiver, max_subscriptions))
    })
}

/// Tells every shard to stop and joins its thread.
fn stop(shards: &mut [ShardHandle]) {
    for shard in shards.iter() {
        let _ = shard.link.send(Command::Shutdown);
    }
    for shard in shards.iter_mut() {
        if let Some(t) = shard.thread.take() {
            if t.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A subscription handed to its shard, whose answer is still to come.
pub(crate) struct Pending<H> {
    subscription: Subscription<H>,
    reply: oneshot::Receiver<Result<()>>,
}

impl<H> Pending<H> {
    pub(crate) fn wait(self) -> Result<Subscription<H>> {
        let shard = self.subscription.shard;
        self.reply.recv().map_err(|_| Error::ShardGone(shard))??;
        Ok(self.subscription)
    }

    pub(crate) async fn wait_async(self) -> Result<Subscription<H>> {
        let shard = self.subscription.shard;
        self.reply.await.map_err(|_| Error::ShardGone(shard))??;
        Ok(self.subscription)
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
    published: Arc<Published>,
    /// With two lines, their counters.
    lines: Option<SharedLines>,
    /// `None` once closed.
    tx: Option<Link<Command>>,
    _handler: PhantomData<fn() -> H>,
}

impl<H> Drop for Subscription<H> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // The reply goes nowhere: the shard drops the state, closing its socket.
            let (reply, _) = oneshot::channel();
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
    /// Wire→application latency and its counters since the last
    /// [`Subscription::take_kernel_latency`] (empty unless
    /// [`SubscriptionConfig::kernel_stamps`] was on).
    pub kernel: KernelLatency,
    /// With recovery: recovery times, gap seen → gap filled, per missing range as it was
    /// asked for (empty without recovery).
    pub recovery: LatencyHistogram,
    /// With two lines ([`SubscriptionConfig::line_b`]): each line's final counters and
    /// how far behind the other it ran (see
    /// [`ReceiveState::line_behind`](crate::core::receive::ReceiveState::line_behind)),
    /// line A first; empty with one line.
    pub lines: Vec<(LineStats, LatencyHistogram)>,
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

    /// With two lines, each line's counters now (line A, then B).
    pub fn line_stats(&self) -> Option<[LineStats; 2]> {
        self.lines
            .as_ref()
            .map(|l| [l[0].snapshot(), l[1].snapshot()])
    }

    /// The session and the sender the subscription follows, as its receive state says
    /// ([`ReceiveState::session`], [`ReceiveState::sender`]): `None` until it locked.
    pub fn session(&self) -> Option<Session> {
        self.published.session.get().copied()
    }

    /// See [`session`](Self::session).
    pub fn sender(&self) -> Option<SocketAddr> {
        self.published.sender.get().copied()
    }

    /// Why the shard serving this subscription stopped receiving for it (its receive
    /// backend failed, or the shard's thread panicked), if it did; the handler heard it
    /// too ([`Handler::on_failure`]). Nothing more arrives after that.
    pub fn failure(&self) -> Option<String> {
        self.published.failure.get().cloned()
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

    /// The wire→application latency (kernel receive stamp → handler) and its counters
    /// recorded since the last call, leaving empty ones in their place; empty unless
    /// [`SubscriptionConfig::kernel_stamps`] is on. See [`crate::core::stamps`].
    ///
    /// # Errors
    ///
    /// [`Error::ShardGone`] if the shard stopped.
    pub fn take_kernel_latency(&self) -> Result<KernelLatency> {
        let (tx, rx) = bounded(1);
        // The fresh histogram is allocated here, not on the shard.
        let fresh = Box::<KernelLatency>::default();
        self.tx
            .as_ref()
            .ok_or(Error::ShardGone(self.shard))?
            .send(Command::TakeKernelLatency(self.id, fresh, tx))
            .map_err(|_| Error::ShardGone(self.shard))?;
        match rx.recv() {
            Ok(Some(taken)) => {
                let mut kernel = taken.map(|k| *k).unwrap_or_default();
                if let Some(report) = self.published.hardware.get() {
                    kernel.hardware.clone_from(report);
                }
                Ok(kernel)
            }
            _ => Err(Error::ShardGone(self.shard)),
        }
    }

    /// Leaves the group (if the subscription joined one), closes the socket and returns
    /// the handler with the final counters.
    ///
    /// # Errors
    ///
    /// [`Error::ShardGone`] if the shard stopped before the subscription was closed.
    pub fn close(self) -> Result<Closed<H>> {
        let shard = self.shard;
        let (this, reply) = self.closing()?;
        let state = reply.recv().map_err(|_| Error::ShardGone(shard))??;
        this.closed(state)
    }

    /// [`close`](Self::close) without blocking the caller's thread on the shard's answer.
    ///
    /// # Errors
    ///
    /// As [`close`](Self::close).
    pub async fn close_async(self) -> Result<Closed<H>> {
        let shard = self.shard;
        let (this, reply) = self.closing()?;
        let state = reply.await.map_err(|_| Error::ShardGone(shard))??;
        this.closed(state)
    }

    /// Asks the shard to close the subscription; its state comes on the receiver.
    #[allow(clippy::type_complexity)]
    fn closing(mut self) -> Result<(Self, oneshot::Receiver<Result<Box<SubState>>>)> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .take()
            .ok_or(Error::ShardGone(self.shard))?
            .send(Command::Close(self.id, tx))
            .map_err(|_| Error::ShardGone(self.shard))?;
        Ok((self, rx))
    }

    /// The final figures from the state the shard gave back.
    fn closed(self, state: Box<SubState>) -> Result<Closed<H>> {
        let SubState { handler, state, .. } = *state;
        let handler = handler
            .into_any()
            .downcast::<H>()
            .map_err(|_| Error::Config("subscription handler type mismatch".into()))?;
        let recovery = state
            .recovery_times()
            .cloned()
            .unwrap_or_else(LatencyHistogram::new);
        let lines = match state.line_stats() {
            Some(stats) => [Line::A, Line::B]
                .into_iter()
                .zip(stats)
                .map(|(line, s)| (s, state.line_behind(line).unwrap_or_default()))
                .collect(),
            None => Vec::new(),
        };
        let mut kernel = state.kernel_latency().cloned().unwrap_or_default();
        if let Some(report) = state.hardware_report() {
            kernel.hardware = report.to_owned();
        }
        Ok(Closed {
            handler: *handler,
            stats: self.counters.snapshot(),
            kernel,
            latency: state.into_latency(),
            recovery,
            lines,
        })
    }
}

/// A subscription whose events the application reads on its own thread, from a
/// [poll ring](crate::subscribe::ring) the shard writes them into
/// ([`Shards::subscribe_poll`]).
///
/// ```no_run
/// use multipoint_dataplane::{Event, PollConfig, ShardConfig, Shards, SubscriptionConfig};
/// use std::time::Duration;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut shards = Shards::start(ShardConfig::default())?;
/// let config = SubscriptionConfig::new("239.255.0.1:31001".parse()?);
/// let mut sub = shards.subscribe_poll(config, PollConfig::default())?;
/// let mut done = false;
/// while !done && !sub.is_closed() {
///     sub.poll_wait(
///         |event| match event {
///             Event::Message { sequence, message } => println!("{sequence}: {message:?}"),
///             Event::Gap(gap) => println!("lost {gap:?}"),
///             Event::Lost { count } => println!("fell behind: {count} dropped"),
///             Event::Failure(why) => { eprintln!("the shard failed: {why}"); done = true }
///             Event::EndOfSession => done = true,
///             _ => {}
///         },
///         1024,
///         Duration::from_millis(100),
///     );
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PollSubscription {
    subscription: Subscription<RingWriter>,
    reader: RingReader,
}

impl PollSubscription {
    /// Hands up to `limit` events to `f`, in order, and returns how many; never waits
    /// (see [`RingReader::poll`]).
    pub fn poll<F: FnMut(Event<'_>)>(&mut self, f: F, limit: usize) -> usize {
        self.reader.poll(f, limit)
    }

    /// Polls, first waiting up to `timeout` when there is nothing (see
    /// [`RingReader::poll_wait`]).
    pub fn poll_wait<F: FnMut(Event<'_>)>(
        &mut self,
        f: F,
        limit: usize,
        timeout: Duration,
    ) -> usize {
        self.reader.poll_wait(f, limit, timeout)
    }

    /// Awaits events, then polls up to `limit` of them (see [`RingReader::recv`]).
    pub async fn recv<F: FnMut(Event<'_>)>(&mut self, f: F, limit: usize) -> usize {
        self.reader.recv(f, limit).await
    }

    /// Whether nothing more will come: the subscription's writer is gone (the shard
    /// dropped it) and everything was read.
    pub fn is_closed(&self) -> bool {
        self.reader.is_closed()
    }

    /// The ring's reader (for [`RingReader::wait`], its counters, or as a stream).
    pub fn reader(&mut self) -> &mut RingReader {
        &mut self.reader
    }

    /// The subscription (its counters, session, sender, failure).
    pub fn subscription(&self) -> &Subscription<RingWriter> {
        &self.subscription
    }

    /// The subscription's counters now (see [`Subscription::stats`]).
    pub fn stats(&self) -> SubscriptionStats {
        self.subscription.stats()
    }

    /// The ring's counters now.
    pub fn ring_stats(&self) -> RingStats {
        self.reader.stats()
    }

    /// Closes the subscription (see [`Subscription::close`]) and gives back its final
    /// figures, the ring's, and the reader, which can still read what the ring holds.
    ///
    /// # Errors
    ///
    /// As [`Subscription::close`].
    pub fn close(self) -> Result<(Closed<RingStats>, RingReader)> {
        let closed = self.subscription.close()?;
        Ok((ring_closed(closed), self.reader))
    }

    /// [`close`](Self::close) without blocking the caller's thread.
    ///
    /// # Errors
    ///
    /// As [`Subscription::close`].
    pub async fn close_async(self) -> Result<(Closed<RingStats>, RingReader)> {
        let closed = self.subscription.close_async().await?;
        Ok((ring_closed(closed), self.reader))
    }
}

/// With the `tokio` feature: the subscription's events as a stream (see the
/// [`RingReader`]'s).
#[cfg(feature = "tokio")]
impl futures_core::Stream for PollSubscription {
    type Item = crate::core::event::OwnedEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.reader).poll_next(cx)
    }
}

/// A poll subscription's final figures: the ring's counters in place of its writer
/// (dropped here, so that the reader sees the ring closed).
fn ring_closed(closed: Closed<RingWriter>) -> Closed<RingStats> {
    let Closed {
        handler,
        stats,
        kernel,
        latency,
        recovery,
        lines,
    } = closed;
    let ring = handler.stats();
    drop(handler);
    Closed {
        handler: ring,
        stats,
        kernel,
        latency,
        recovery,
        lines,
    }
}
