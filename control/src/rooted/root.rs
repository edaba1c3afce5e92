//! The root of a rooted session (`C_ROOT`): its API, and what its notes mean to the
//! API. The session logic is [`RootCore`]'s; the thread is [`driver`]'s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::core::root::{AdmittedLeaf, Event, RootCore, RootNote};
use super::core::{MAX_TIMEOUT, MIN_TIMEOUT};
use super::driver::{self, lock, names, Ask, Cmd, Names, Reply, Running, Side, Waiting};
use super::proto::DataPlan;
use super::{Decision, JoinRequest, Key, LeafId};
use crate::error::{Error, Result};
use crate::role::{ControlRole, DataRole, Roles};
use crate::socket::Direction;
use crate::transport::{Plane, Transport};

/// How a root runs its session.
#[derive(Debug, Clone)]
pub struct RootConfig {
    /// The MoldUDP64 session name the leaves are told (10 bytes, space-padded ASCII).
    pub session: [u8; 10],
    /// A leaf not heard from for this long is removed; leaves use the same timeout for the
    /// root. Heartbeats go out every third of it.
    pub timeout: Duration,
    /// What admitted leaves are told about the data plane, when the hooks do not decide
    /// it per leaf ([`RootHooks::on_join`]).
    pub plan: Option<DataPlan>,
    /// Most leaves in the session; joins beyond it are refused ("the session is full").
    ///
    /// The default, 384, is three quarters of [`RootLimits::max_connections`]: every
    /// leaf holds a connection, and the last quarter stays for handshakes on their way,
    /// so that a full session still tells a newcomer why it is refused and a leaf coming
    /// back after a lost connection gets a hearing. Each receiving leaf also costs the
    /// data plane a send per packet. Raise both together (and the process's descriptor
    /// limit).
    pub max_leaves: usize,
    /// How long [`Root::join_leaf`] waits to connect to a leaf.
    pub connect_timeout: Duration,
    /// Events held for [`Root::events`] before further ones are dropped (and counted).
    pub event_capacity: usize,
    /// What the root lets peers hold of it before they are leaves.
    pub limits: RootLimits,
    /// The pre-shared key every leaf must prove it holds before it is admitted (and the
    /// root proves to it in turn); `None`, the default, admits without. See
    /// [`auth`](super::auth).
    pub key: Option<Key>,
}

impl RootConfig {
    /// Defaults for `session`: 3 s timeout, no data plan, 384 leaves, 3 s connect
    /// timeout, 4,096 events, the [default limits](RootLimits::default), no key.
    pub fn new(session: [u8; 10]) -> RootConfig {
        RootConfig {
            session,
            timeout: Duration::from_secs(3),
            plan: None,
            max_leaves: 384,
            connect_timeout: Duration::from_secs(3),
            event_capacity: 4096,
            limits: RootLimits::default(),
            key: None,
        }
    }
}

/// What a root lets peers hold of it: connections in total and per address, joins per
/// second per address, and the time a connection has to say Join. Every refusal is
/// counted in [`RootStats`].
///
/// Connections are refused (told why, then closed) as they are accepted: beyond
/// `max_connections_per_peer` from one IP address, and beyond `max_connections` in all
/// unless a connection still in its handshake can be shed to make room (the oldest is:
/// a real leaf says Join within a round trip of connecting, an idle one holds a place it
/// does not use). The same shedding makes room when the process runs out of file
/// descriptors. A connection that has not said Join within `handshake_timeout` is
/// closed. A join beyond the peer's rate is refused with a reason the leaf is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootLimits {
    /// Most control connections at once, in all (leaves and handshakes).
    ///
    /// Default 512: half of the soft `RLIMIT_NOFILE` most Linux processes start with
    /// (1,024), as each connection is a descriptor and the rest of the process (the data
    /// plane's sockets, one uplink socket per sending leaf, io_uring, logs) needs the
    /// other half. Raise it together with the descriptor limit.
    pub max_connections: usize,
    /// Most control connections at once from one IP address.
    ///
    /// Default 256, half of `max_connections`: one host may run many leaves (the
    /// project's own test runs 256 leaves from 127.0.0.1), but no single address can
    /// fill the root alone.
    pub max_connections_per_peer: usize,
    /// Leaf-initiated joins one IP address may ask per second, sustained (a token
    /// bucket; invited leaves are not counted).
    ///
    /// Default 64: a leaf asks once per session, and again only after losing it; a
    /// steady stream beyond that from one host is churn or an attack, and every join
    /// costs the root its admission hooks and a fan-out destination.
    pub joins_per_second_per_peer: u32,
    /// Joins one IP address may ask at once before the rate applies (the bucket's size).
    ///
    /// Default 256, `max_connections_per_peer`: a host may start (or restart) all the
    /// leaves it is allowed at once.
    pub join_burst: u32,
    /// How long an accepted connection has to say Join before it is closed.
    ///
    /// Default 2 s: a leaf sends its Join as soon as it is connected, so a real one takes
    /// a round trip; 2 s covers a long one plus a lost segment's first retransmission
    /// (1 s), while an idle connection holds its place for no longer.
    pub handshake_timeout: Duration,
}

impl Default for RootLimits {
    fn default() -> RootLimits {
        RootLimits {
            max_connections: 512,
            max_connections_per_peer: 256,
            joins_per_second_per_peer: 64,
            join_burst: 256,
            handshake_timeout: Duration::from_secs(2),
        }
    }
}

impl RootLimits {
    /// Checks that every limit lets something through.
    fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::BadSetting { what });
        if self.max_connections == 0 || self.max_connections_per_peer == 0 {
            return bad(format!(
                "RootLimits: max_connections {} and max_connections_per_peer {} must be at \
                 least 1",
                self.max_connections, self.max_connections_per_peer
            ));
        }
        if self.joins_per_second_per_peer == 0 || self.join_burst == 0 {
            return bad(format!(
                "RootLimits: joins_per_second_per_peer {} and join_burst {} must be at least 1",
                self.joins_per_second_per_peer, self.join_burst
            ));
        }
        if self.handshake_timeout < MIN_TIMEOUT || self.handshake_timeout > MAX_TIMEOUT {
            return bad(format!(
                "RootLimits::handshake_timeout {:?} is outside {MIN_TIMEOUT:?}..={MAX_TIMEOUT:?}",
                self.handshake_timeout
            ));
        }
        Ok(())
    }
}

/// What a root refused, shed and closed, by reason ([`Root::stats`]). Refusals of a Join
/// are also [`RootEvent::Refused`] events; refusals of a bare connection (before any
/// Join) are only counted, so that a flood of them cannot flood the events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RootStats {
    /// Connections accepted on the listener, refused ones included.
    pub accepted: u64,
    /// Connections refused at once: [`RootLimits::max_connections`] were open and none
    /// was in its handshake to shed.
    pub refused_max_connections: u64,
    /// Connections refused at once: their address had
    /// [`RootLimits::max_connections_per_peer`] open.
    pub refused_per_peer: u64,
    /// Connections still in their handshake closed to make room for a newer one (at
    /// `max_connections`, or out of file descriptors).
    pub shed: u64,
    /// Connections closed for not saying Join within [`RootLimits::handshake_timeout`].
    pub handshake_timeouts: u64,
    /// Joins refused: their address asked faster than
    /// [`RootLimits::joins_per_second_per_peer`] allows.
    pub refused_join_rate: u64,
    /// Joins refused: another leaf in the session already receives at the data address
    /// they gave.
    pub refused_data_taken: u64,
    /// Joins refused because the leaf did not prove the root's key (no proof, a wrong
    /// one, or none in time: [`AUTH_FAILED`](super::AUTH_FAILED)).
    pub refused_auth: u64,
    /// Joins refused: the session had [`RootConfig::max_leaves`].
    pub refused_full: u64,
    /// Joins refused for anything else: the admission hook, the data plan, a request
    /// that does not fit the root.
    pub refused_other: u64,
    /// Times `accept` failed for want of file descriptors or kernel memory (`EMFILE`,
    /// `ENFILE`, `ENOBUFS`, `ENOMEM`) with nothing to shed; the root tries again on a
    /// timer, and the connections wait in the listen queue meanwhile.
    pub accept_stalls: u64,
}

/// Decisions and notifications a root's embedder supplies. They run on the root's driver
/// thread, one at a time: keep them short.
pub trait RootHooks: Send + 'static {
    /// Admits or refuses a leaf that asked to join (not called for leaves the root
    /// invited). The default admits every leaf.
    fn admit(&mut self, request: &JoinRequest) -> Decision {
        let _ = request;
        Decision::Admit
    }

    /// The leaf `leaf` is being admitted: return the data plan it is told, or refuse it
    /// with a reason. `default` is [`RootConfig::plan`]. The default returns `default`,
    /// and refuses when there is none.
    ///
    /// # Errors
    ///
    /// A reason to refuse the leaf with.
    fn on_join(
        &mut self,
        leaf: LeafId,
        request: &JoinRequest,
        default: Option<&DataPlan>,
    ) -> std::result::Result<DataPlan, String> {
        let _ = (leaf, request);
        default
            .cloned()
            .ok_or_else(|| "the root has no data plan to offer".to_owned())
    }

    /// The sequence number from which the admitted leaf `leaf` will get every message,
    /// told to it in the Admit (called right after [`on_join`](Self::on_join) succeeded).
    /// 0, the default, says the root cannot tell; the leaf then starts with the first
    /// packet it sees.
    fn next_sequence(&mut self, leaf: LeafId) -> u64 {
        let _ = leaf;
        0
    }

    /// The leaf `leaf`, for which [`on_join`](Self::on_join) succeeded, is no longer in
    /// the session (it left, timed out, was removed, or the root closed).
    fn on_gone(&mut self, leaf: LeafId) {
        let _ = leaf;
    }
}

/// Hooks that admit everyone and offer [`RootConfig::plan`].
#[derive(Debug, Default)]
struct DefaultHooks;
impl RootHooks for DefaultHooks {}

/// What a root is told about its leaves, through [`Root::events`].
#[derive(Debug, Clone)]
pub enum RootEvent {
    /// A leaf was admitted (it asked, or accepted an invitation).
    Joined(LeafHandle),
    /// A join was refused (by the admission hook, a limit, a bad request, or, with the
    /// reason [`AUTH_FAILED`](super::AUTH_FAILED), a leaf that did not prove the root's
    /// key); each reason is also counted in [`Root::stats`].
    Refused {
        /// The control address of the refused leaf.
        peer: SocketAddr,
        /// The reason the leaf was told.
        reason: String,
    },
    /// A leaf left: it said so, or its connection closed.
    Left {
        /// The leaf.
        leaf: LeafId,
        /// What it said, or why the connection ended.
        reason: String,
    },
    /// A leaf was silent for longer than the timeout and was removed.
    TimedOut {
        /// The leaf.
        leaf: LeafId,
    },
    /// The root removed a leaf ([`LeafHandle::remove`]).
    Removed {
        /// The leaf.
        leaf: LeafId,
    },
}

/// What the root knows of an admitted leaf.
#[derive(Debug)]
struct LeafInfo {
    id: LeafId,
    peer: SocketAddr,
    name: String,
    direction: Direction,
    data: Option<SocketAddr>,
    plan: DataPlan,
    invited: bool,
    present: AtomicBool,
}

/// A root's handle on one admitted leaf: who it is, and [`remove`](Self::remove).
/// Cloning is cheap.
#[derive(Debug, Clone)]
pub struct LeafHandle {
    info: Arc<LeafInfo>,
    ctl: Arc<Ctl>,
}

impl LeafHandle {
    /// The leaf's identifier within this root.
    pub fn id(&self) -> LeafId {
        self.info.id
    }
    /// The leaf's control (TCP) address.
    pub fn peer(&self) -> SocketAddr {
        self.info.peer
    }
    /// The name the leaf gave.
    pub fn name(&self) -> &str {
        &self.info.name
    }
    /// How data flows for the leaf.
    pub fn direction(&self) -> Direction {
        self.info.direction
    }
    /// The UDP address the leaf receives data on, if it gave one.
    pub fn data(&self) -> Option<SocketAddr> {
        self.info.data
    }
    /// The data plan the leaf was told.
    pub fn plan(&self) -> &DataPlan {
        &self.info.plan
    }
    /// Whether the root invited the leaf (rather than the leaf asking).
    pub fn invited(&self) -> bool {
        self.info.invited
    }
    /// Whether the leaf is still in the session.
    pub fn is_present(&self) -> bool {
        self.info.present.load(Ordering::Acquire)
    }

    /// Removes the leaf: it is told it was removed, its connection closes and
    /// [`RootHooks::on_gone`] runs, all before this returns.
    ///
    /// # Errors
    ///
    /// [`Error::LeafGone`] if the leaf had already left; [`Error::SessionClosed`] if the
    /// root is closed.
    pub fn remove(&self) -> Result<()> {
        self.ctl.not_from_hook("LeafHandle::remove")?;
        let (tx, rx) = bounded(1);
        self.ctl
            .command(Cmd::Side(RootCmd::Remove(self.info.id, tx)))?;
        rx.recv().map_err(|_| Error::SessionClosed)?
    }
}

/// The root's own commands to its driver.
enum RootCmd {
    Invite(Ask<LeafHandle>),
    Remove(LeafId, Sender<Result<()>>),
}

/// The way into the root's driver thread.
type Ctl = driver::Ctl<RootCmd>;

/// The root of a rooted session (a `C_ROOT` socket of `rooted-unicast` or
/// `admitted-multicast`). See the [module docs](super).
///
/// Dropping the root closes it like [`close`](Self::close).
#[derive(Debug)]
pub struct Root {
    /// First, so that dropping the root closes the session before anything else goes.
    driver: Running<RootCmd>,
    transport: Transport,
    roles: Roles,
    config: RootConfig,
    events: Receiver<RootEvent>,
    leaves: Arc<Mutex<BTreeMap<LeafId, LeafHandle>>>,
    dropped_events: Arc<AtomicU64>,
    stats: Arc<Mutex<RootStats>>,
    local: Mutex<Option<SocketAddr>>,
}

impl Root {
    /// A root with the default hooks: every leaf that asks is admitted and told
    /// [`RootConfig::plan`].
    ///
    /// # Errors
    ///
    /// As [`Root::with_hooks`].
    pub fn new(transport: Transport, roles: Roles, config: RootConfig) -> Result<Root> {
        Root::with_hooks(transport, roles, config, DefaultHooks)
    }

    /// A root whose admissions, data plans and leaf departures go through `hooks`.
    ///
    /// # Errors
    ///
    /// - [`Error::RoleNotAllowed`] if the transport cannot take the roles;
    /// - [`Error::WrongSocketKind`] if the roles are not `C_ROOT` (a leaf is a
    ///   [`Leaf`](super::Leaf)) or the transport's control plane is not rooted (IP
    ///   multicast sockets are [`MultipointSocket`](crate::MultipointSocket)s);
    /// - [`Error::Os`] if the driver thread cannot be set up.
    pub fn with_hooks(
        transport: Transport,
        roles: Roles,
        config: RootConfig,
        hooks: impl RootHooks,
    ) -> Result<Root> {
        roles.check(transport)?;
        if config.timeout < MIN_TIMEOUT || config.timeout > MAX_TIMEOUT {
            return Err(Error::BadSetting {
                what: format!(
                    "RootConfig::timeout {:?} is outside {MIN_TIMEOUT:?}..={MAX_TIMEOUT:?}",
                    config.timeout
                ),
            });
        }
        config.limits.check()?;
        let info = transport.info();
        // The root of a rooted data plane is its D_ROOT; on a non-rooted data plane (admitted
        // multicast) the root is a D_LEAF like everyone else.
        let data_role = if info.data_plane == Plane::Rooted {
            DataRole::Root
        } else {
            DataRole::Leaf
        };
        if info.control_plane != Plane::Rooted
            || roles.control != ControlRole::Root
            || roles.data != data_role
        {
            return Err(Error::WrongSocketKind {
                transport,
                roles,
                wanted: "rooted::Root takes C_ROOT|D_ROOT on rooted-unicast and C_ROOT|D_LEAF \
                         on admitted-multicast",
            });
        }
        let (events_tx, events) = bounded(config.event_capacity.max(1));
        let leaves = Arc::new(Mutex::new(BTreeMap::new()));
        let dropped_events = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(Mutex::new(RootStats::default()));
        let core = RootCore::new(transport, config.clone(), Box::new(hooks));
        let driver = driver::start(core, |ctl| RootSide {
            ctl: Arc::clone(ctl),
            events: events_tx,
            event_capacity: config.event_capacity,
            leaves: Arc::clone(&leaves),
            dropped_events: Arc::clone(&dropped_events),
            stats: Arc::clone(&stats),
            inviter: Waiting::new(),
        })?;
        Ok(Root {
            driver,
            transport,
            roles,
            config,
            events,
            leaves,
            dropped_events,
            stats,
            local: Mutex::new(None),
        })
    }

    /// The root's transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The root's roles.
    pub fn roles(&self) -> Roles {
        self.roles
    }

    /// The session's settings.
    pub fn config(&self) -> &RootConfig {
        &self.config
    }

    /// Starts accepting leaf-initiated joins on `addr` (port 0: any free port) and returns
    /// the address leaves should ask at.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the address cannot be bound; [`Error::AlreadyListening`] if the
    /// root listens already.
    pub fn listen(&self, addr: SocketAddr) -> Result<SocketAddr> {
        self.driver
            .listen(&self.local, addr, "listening for leaves on")
    }

    /// The address the root listens at, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *lock(&self.local)
    }

    /// Invites the leaf listening at `leaf` (root-initiated join) to join in `direction`,
    /// and waits for its answer.
    ///
    /// # Errors
    ///
    /// - [`Error::JoinPending`] if another `join_leaf` of this root is still waiting;
    /// - [`Error::Refused`] with the leaf's reason if it declines (a leaf already in a
    ///   session declines with "already a member");
    /// - [`Error::TimedOut`] if it does not connect or answer within the timeouts;
    /// - [`Error::Os`] if the connection fails (nobody listening, say).
    pub fn join_leaf(&self, leaf: SocketAddr, direction: Direction) -> Result<LeafHandle> {
        self.driver.not_from_hook("Root::join_leaf")?;
        // The core answers by its deadlines: connected, then answered.
        self.driver.ask(
            leaf,
            direction,
            RootCmd::Invite,
            self.config
                .connect_timeout
                .saturating_add(self.config.timeout),
            "waiting for the leaf to answer the invitation",
        )
    }

    /// Leaf events, in order: joined, refused, left, timed out, removed.
    pub fn events(&self) -> &Receiver<RootEvent> {
        &self.events
    }

    /// Events dropped because nobody took them from [`events`](Self::events) in time.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// What the root refused, shed and closed so far, by reason.
    pub fn stats(&self) -> RootStats {
        *lock(&self.stats)
    }

    /// The leaves now in the session.
    pub fn leaves(&self) -> Vec<LeafHandle> {
        lock(&self.leaves).values().cloned().collect()
    }

    /// The leaf `id`, if it is in the session.
    pub fn leaf(&self, id: LeafId) -> Option<LeafHandle> {
        lock(&self.leaves).get(&id).cloned()
    }

    /// Ends the session: every leaf is told, every connection closed, and the driver
    /// thread joined.
    pub fn close(self) {
        drop(self);
    }
}

/// What the root's core notes mean to the API: handles in the shared list, events on the
/// channel, the inviter's answer.
struct RootSide {
    ctl: Arc<Ctl>,
    events: Sender<RootEvent>,
    event_capacity: usize,
    leaves: Arc<Mutex<BTreeMap<LeafId, LeafHandle>>>,
    dropped_events: Arc<AtomicU64>,
    /// The core's counters, as of its last input.
    stats: Arc<Mutex<RootStats>>,
    /// The caller of [`Root::join_leaf`] waiting for the answer.
    inviter: Waiting<LeafHandle>,
}

impl Side for RootSide {
    type Machine = RootCore;
    type Cmd = RootCmd;
    const NAMES: Names = names!("root");

    fn command(&mut self, core: &mut RootCore, cmd: RootCmd, now: Instant) -> Option<Reply> {
        match cmd {
            RootCmd::Invite(ask) => {
                self.inviter.start(ask, |peer, direction| {
                    core.handle_invite(peer, direction, now)
                });
                None
            }
            RootCmd::Remove(leaf, reply) => {
                let removed = core.handle_remove(leaf);
                Some(Box::new(move || {
                    let _ = reply.send(removed);
                }))
            }
        }
    }

    fn note(&mut self, core: &mut RootCore, note: RootNote) {
        match note {
            RootNote::Listed(leaf) => self.list(leaf),
            RootNote::Event(event) => {
                if let Some(event) = self.event(event) {
                    self.emit(event);
                }
            }
            RootNote::Invited(answer) => {
                let answer = answer.and_then(|id| self.handle(id));
                if let Some(Ok(handle)) = self.inviter.answer(answer) {
                    // The inviter stopped waiting (and was told it timed out).
                    core.handle_unclaimed(handle.id());
                }
            }
        }
    }

    fn publish(&self, core: &RootCore) {
        *lock(&self.stats) = core.stats();
    }

    fn abandon(&mut self) {
        for (_, leaf) in std::mem::take(&mut *lock(&self.leaves)) {
            leaf.info.present.store(false, Ordering::Release);
        }
    }
}

impl RootSide {
    fn list(&self, leaf: AdmittedLeaf) {
        let AdmittedLeaf { id, request, plan } = leaf;
        let handle = LeafHandle {
            info: Arc::new(LeafInfo {
                id,
                peer: request.peer,
                name: request.name,
                direction: request.direction,
                data: request.data,
                plan,
                invited: request.invited,
                present: AtomicBool::new(true),
            }),
            ctl: Arc::clone(&self.ctl),
        };
        lock(&self.leaves).insert(id, handle);
    }

    fn handle(&self, id: LeafId) -> Result<LeafHandle> {
        lock(&self.leaves)
            .get(&id)
            .cloned()
            .ok_or(Error::LeafGone { leaf: id.0 })
    }

    /// The embedder's event for `event`; a leaf that is gone is taken off the list first.
    fn event(&self, event: Event) -> Option<RootEvent> {
        let gone = |leaf: LeafId| {
            if let Some(handle) = lock(&self.leaves).remove(&leaf) {
                handle.info.present.store(false, Ordering::Release);
            }
            leaf
        };
        Some(match event {
            Event::Joined(id) => RootEvent::Joined(self.handle(id).ok()?),
            Event::Refused { peer, reason } => RootEvent::Refused { peer, reason },
            Event::Left { leaf, reason } => RootEvent::Left {
                leaf: gone(leaf),
                reason,
            },
            Event::TimedOut { leaf } => RootEvent::TimedOut { leaf: gone(leaf) },
            Event::Removed { leaf } => RootEvent::Removed { leaf: gone(leaf) },
        })
    }

    fn emit(&self, event: RootEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(e)) => {
                let n = self.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    "root: event queue full ({} events): dropped {e:?} ({n} dropped so far); \
                     take events from Root::events or raise RootConfig::event_capacity",
                    self.event_capacity
                );
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}
