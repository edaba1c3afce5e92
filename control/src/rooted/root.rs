//! The root of a rooted session (`C_ROOT`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use mio::{Poll, Token};

use super::conn::{self, earliest, ConnError, Serve, Table};
use super::proto::{DataPlan, Frame};
use super::{Decision, JoinRequest, LeafId};
use crate::error::{Error, Result};
use crate::role::{ControlRole, DataRole, Roles};
use crate::socket::Direction;
use crate::transport::{Plane, Transport};

/// Shortest session timeout: heartbeats go out every third of it.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest session timeout.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

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
    /// Most leaves in the session; joins beyond it are refused.
    pub max_leaves: usize,
    /// How long [`Root::join_leaf`] waits to connect to a leaf.
    pub connect_timeout: Duration,
    /// Events held for [`Root::events`] before further ones are dropped (and counted).
    pub event_capacity: usize,
}

impl RootConfig {
    /// Defaults for `session`: 3 s timeout, no data plan, 65,536 leaves, 3 s connect
    /// timeout, 4,096 events.
    pub fn new(session: [u8; 10]) -> RootConfig {
        RootConfig {
            session,
            timeout: Duration::from_secs(3),
            plan: None,
            max_leaves: 65_536,
            connect_timeout: Duration::from_secs(3),
            event_capacity: 4096,
        }
    }
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
    /// A join was refused (by the admission hook, the leaf limit or a bad request).
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
        self.ctl.command(Cmd::Remove(self.info.id, tx))?;
        rx.recv().map_err(|_| Error::SessionClosed)?
    }
}

enum Cmd {
    Listen(mio::net::TcpListener),
    Invite {
        stream: mio::net::TcpStream,
        peer: SocketAddr,
        direction: Direction,
        reply: Sender<Result<LeafHandle>>,
    },
    Remove(LeafId, Sender<Result<()>>),
    Close,
}

/// The way into the root's driver thread.
type Ctl = conn::Ctl<Cmd>;

/// The root of a rooted session (a `C_ROOT` socket of `rooted-unicast` or
/// `admitted-multicast`). See the [module docs](super).
///
/// Dropping the root closes it like [`close`](Self::close).
#[derive(Debug)]
pub struct Root {
    transport: Transport,
    roles: Roles,
    config: RootConfig,
    ctl: Arc<Ctl>,
    events: Receiver<RootEvent>,
    leaves: Arc<Mutex<BTreeMap<LeafId, LeafHandle>>>,
    dropped_events: Arc<AtomicU64>,
    inviting: AtomicBool,
    local: Mutex<Option<SocketAddr>>,
    thread: Option<JoinHandle<()>>,
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
        let poll = Poll::new().map_err(Error::os("creating the root's poller"))?;
        let (ctl, rx) = Ctl::new(&poll, "waking the root's driver thread")
            .map_err(Error::os("creating the root's waker"))?;
        let ctl = Arc::new(ctl);
        let (events_tx, events) = bounded(config.event_capacity.max(1));
        let leaves = Arc::new(Mutex::new(BTreeMap::new()));
        let dropped_events = Arc::new(AtomicU64::new(0));
        let mut driver = Driver {
            table: Table::new(poll),
            commands: rx,
            ctl: Arc::clone(&ctl),
            hooks: Box::new(hooks),
            transport,
            config: config.clone(),
            next_leaf: 0,
            events: events_tx,
            leaves: Arc::clone(&leaves),
            dropped_events: Arc::clone(&dropped_events),
        };
        let thread = std::thread::Builder::new()
            .name("mp-root".into())
            .spawn(move || {
                let _ = driver.ctl.driver.set(std::thread::current().id());
                let run = AssertUnwindSafe(|| {
                    driver.run();
                    driver.shutdown();
                });
                if std::panic::catch_unwind(run).is_err() {
                    // Hooks are caught one by one; this is a bug of ours. Leave nothing
                    // that claims to be alive: the connections close when the driver drops.
                    tracing::error!("root: the driver thread panicked; every leaf is dropped");
                    for (_, leaf) in std::mem::take(&mut *lock(&driver.leaves)) {
                        leaf.info.present.store(false, Ordering::Release);
                    }
                }
            })
            .map_err(Error::os("starting the root's driver thread"))?;
        Ok(Root {
            transport,
            roles,
            config,
            ctl,
            events,
            leaves,
            dropped_events,
            inviting: AtomicBool::new(false),
            local: Mutex::new(None),
            thread: Some(thread),
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
        let mut local = lock(&self.local);
        if let Some(at) = *local {
            return Err(Error::AlreadyListening { addr: at });
        }
        let listener = conn::listen(addr).map_err(Error::os("listening for leaves"))?;
        let at = listener
            .local_addr()
            .map_err(Error::os("reading the listening address"))?;
        self.ctl.command(Cmd::Listen(listener))?;
        *local = Some(at);
        Ok(at)
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
        self.ctl.not_from_hook("Root::join_leaf")?;
        if self
            .inviting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::JoinPending);
        }
        let result = self.invite(leaf, direction);
        self.inviting.store(false, Ordering::Release);
        result
    }

    fn invite(&self, peer: SocketAddr, direction: Direction) -> Result<LeafHandle> {
        let stream = conn::connect(peer, self.config.connect_timeout).map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                Error::TimedOut {
                    what: "connecting to the leaf",
                    peer,
                }
            } else {
                Error::Os {
                    op: "connecting to the leaf",
                    source: e,
                }
            }
        })?;
        let (tx, rx) = bounded(1);
        self.ctl.command(Cmd::Invite {
            stream,
            peer,
            direction,
            reply: tx,
        })?;
        // The driver answers within the timeout (its own deadline); the margin covers
        // scheduling.
        match rx.recv_timeout(self.config.timeout + Duration::from_secs(2)) {
            Ok(result) => result,
            Err(_) => Err(Error::TimedOut {
                what: "waiting for the leaf to answer the invitation",
                peer,
            }),
        }
    }

    /// Leaf events, in order: joined, refused, left, timed out, removed.
    pub fn events(&self) -> &Receiver<RootEvent> {
        &self.events
    }

    /// Events dropped because nobody took them from [`events`](Self::events) in time.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
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
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.ctl.command(Cmd::Close);
            let _ = thread.join();
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single insert, remove or store.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a connection stands.
enum State {
    /// Accepted on the listener; waiting for the leaf's Join.
    AwaitJoin,
    /// The root invited the leaf; waiting for its Join (accept) or Refuse (decline).
    Invited {
        direction: Direction,
        reply: Sender<Result<LeafHandle>>,
    },
    /// An admitted leaf.
    Joined(LeafHandle),
}

type Entry = conn::Entry<State>;

struct Driver {
    table: Table<State>,
    commands: Receiver<Cmd>,
    ctl: Arc<Ctl>,
    hooks: Box<dyn RootHooks>,
    transport: Transport,
    config: RootConfig,
    next_leaf: u64,
    events: Sender<RootEvent>,
    leaves: Arc<Mutex<BTreeMap<LeafId, LeafHandle>>>,
    dropped_events: Arc<AtomicU64>,
}

impl Serve for Driver {
    type State = State;
    const WHO: &'static str = "root";

    fn table(&mut self) -> &mut Table<State> {
        &mut self.table
    }

    fn accepted() -> State {
        State::AwaitJoin
    }

    fn frame(&mut self, token: Token, frame: Frame) {
        Driver::frame(self, token, frame)
    }

    fn lost(&mut self, token: Token, why: ConnError) {
        Driver::lost(self, token, why)
    }

    fn next_deadline(&self) -> Option<Instant> {
        Driver::next_deadline(self)
    }

    fn commands(&mut self) -> bool {
        Driver::commands(self)
    }

    fn timers(&mut self) {
        Driver::timers(self)
    }
}

impl Driver {
    fn next_deadline(&self) -> Option<Instant> {
        let heartbeat = self.config.timeout / 3;
        let mut next = None;
        for entry in self.table.conns.values() {
            next = earliest(next, entry.conn.last_rx + self.config.timeout);
            match entry.state {
                State::Joined(_) => next = earliest(next, entry.conn.last_tx + heartbeat),
                _ => next = earliest(next, entry.since + self.config.timeout),
            }
        }
        next
    }

    fn emit(&self, event: RootEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(e)) => {
                let n = self.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    "root: event queue full ({} events): dropped {e:?} ({n} dropped so far); \
                     take events from Root::events or raise RootConfig::event_capacity",
                    self.config.event_capacity
                );
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn add_conn(
        &mut self,
        stream: mio::net::TcpStream,
        peer: SocketAddr,
        state: State,
    ) -> Option<Token> {
        match self.table.add(stream, peer, state) {
            Ok(token) => Some(token),
            Err((state, e)) => {
                tracing::warn!("root: registering the connection of {peer} failed: {e}");
                if let State::Invited { reply, .. } = state {
                    let _ = reply.send(Err(Error::Os {
                        op: "registering the leaf's connection",
                        source: e,
                    }));
                }
                None
            }
        }
    }

    fn frame(&mut self, token: Token, frame: Frame) {
        let Some(entry) = self.table.conns.get_mut(&token) else {
            return;
        };
        match (&entry.state, frame) {
            (
                State::AwaitJoin,
                Frame::Join {
                    transport,
                    direction,
                    data,
                    name,
                },
            ) => {
                let request = JoinRequest {
                    peer: entry.conn.peer,
                    direction,
                    data,
                    name,
                    invited: false,
                };
                if let Err(reason) = self.check_request(transport, &request) {
                    return self.refuse(token, request.peer, reason);
                }
                match self.call_admit(&request) {
                    Decision::Admit => self.admit(token, request),
                    Decision::Refuse(reason) => self.refuse(token, request.peer, reason),
                }
            }
            (
                State::Invited {
                    direction: asked, ..
                },
                Frame::Join {
                    transport,
                    direction,
                    data,
                    name,
                },
            ) => {
                let asked = *asked;
                let request = JoinRequest {
                    peer: entry.conn.peer,
                    direction,
                    data,
                    name,
                    invited: true,
                };
                let check = self.check_request(transport, &request).and_then(|()| {
                    if direction == asked {
                        Ok(())
                    } else {
                        Err(format!(
                            "the leaf accepted as {direction:?} but was invited as {asked:?}"
                        ))
                    }
                });
                match check {
                    Ok(()) => self.admit(token, request),
                    Err(reason) => self.refuse(token, request.peer, reason),
                }
            }
            (State::Invited { .. }, Frame::Refuse { reason }) => {
                let peer = entry.conn.peer;
                if let Some(Entry {
                    state: State::Invited { reply, .. },
                    conn,
                    ..
                }) = self.table.conns.remove(&token)
                {
                    conn.finish(self.table.poll.registry(), Duration::ZERO);
                    let _ = reply.send(Err(Error::Refused { peer, reason }));
                }
            }
            (State::Joined(_), Frame::Heartbeat) => {}
            (State::Joined(_), Frame::Leave { reason }) => {
                self.close_leaf(token, None, |leaf| RootEvent::Left { leaf, reason });
            }
            (_, Frame::Heartbeat) => {}
            (_, other) => self.lost(token, ConnError::Unexpected(frame_name(&other))),
        }
    }

    /// The admission hook; a panic in it refuses the leaf (and is logged) rather than
    /// taking the root down.
    fn call_admit(&mut self, request: &JoinRequest) -> Decision {
        let hooks = &mut self.hooks;
        std::panic::catch_unwind(AssertUnwindSafe(|| hooks.admit(request))).unwrap_or_else(|_| {
            tracing::error!("root: the admission hook panicked; the leaf is refused");
            Decision::Refuse("the root's admission hook failed".into())
        })
    }

    fn call_on_join(
        &mut self,
        id: LeafId,
        request: &JoinRequest,
    ) -> std::result::Result<DataPlan, String> {
        let hooks = &mut self.hooks;
        let default = self.config.plan.as_ref();
        std::panic::catch_unwind(AssertUnwindSafe(|| hooks.on_join(id, request, default)))
            .unwrap_or_else(|_| {
                tracing::error!("root: the on_join hook panicked; the leaf is refused");
                Err("the root failed to set up the leaf's data plane".into())
            })
    }

    fn call_on_gone(&mut self, id: LeafId) {
        let hooks = &mut self.hooks;
        if std::panic::catch_unwind(AssertUnwindSafe(|| hooks.on_gone(id))).is_err() {
            tracing::error!("root: the on_gone hook panicked for {id}");
        }
    }

    /// Checks what a root can check before asking the hooks.
    fn check_request(
        &self,
        transport: Transport,
        request: &JoinRequest,
    ) -> std::result::Result<(), String> {
        if transport != self.transport {
            return Err(format!(
                "this root runs {}, the leaf asked for {transport}",
                self.transport
            ));
        }
        if self.transport == Transport::RootedUnicast && request.data.is_none() {
            return Err(
                "a rooted-unicast leaf must give the UDP address it receives data on".into(),
            );
        }
        if lock(&self.leaves).len() >= self.config.max_leaves {
            return Err(format!(
                "the session is full ({} leaves)",
                self.config.max_leaves
            ));
        }
        Ok(())
    }

    fn refuse(&mut self, token: Token, peer: SocketAddr, reason: String) {
        if let Some(entry) = self.table.conns.remove(&token) {
            let mut conn = entry.conn;
            let _ = conn.send(&Frame::Refuse {
                reason: reason.clone(),
            });
            conn.finish(self.table.poll.registry(), Duration::from_millis(100));
            if let State::Invited { reply, .. } = entry.state {
                let _ = reply.send(Err(Error::Refused {
                    peer,
                    reason: reason.clone(),
                }));
            }
        }
        self.emit(RootEvent::Refused { peer, reason });
    }

    fn admit(&mut self, token: Token, request: JoinRequest) {
        let id = LeafId(self.next_leaf);
        self.next_leaf += 1;
        let plan = match self.call_on_join(id, &request) {
            Ok(plan) => plan,
            Err(reason) => return self.refuse(token, request.peer, reason),
        };
        let fits = matches!(
            (&plan, self.transport),
            (DataPlan::Unicast { .. }, Transport::RootedUnicast)
                | (DataPlan::Multicast { .. }, Transport::AdmittedMulticast)
        );
        if !fits {
            self.call_on_gone(id);
            return self.refuse(
                token,
                request.peer,
                format!("the root's data plan does not fit {}", self.transport),
            );
        }
        let hooks = &mut self.hooks;
        let next_sequence =
            std::panic::catch_unwind(AssertUnwindSafe(|| hooks.next_sequence(id))).unwrap_or(0);
        let admit = Frame::Admit {
            session: self.config.session,
            timeout_ms: u32::try_from(self.config.timeout.as_millis()).unwrap_or(u32::MAX),
            next_sequence,
            plan: plan.clone(),
        };
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
        let Some(entry) = self.table.conns.get_mut(&token) else {
            self.call_on_gone(id);
            return;
        };
        // The table lists the leaf before the leaf hears it is in, so whoever learns of
        // the join (the leaf, the inviter) finds it there.
        lock(&self.leaves).insert(id, handle.clone());
        let previous = std::mem::replace(&mut entry.state, State::Joined(handle.clone()));
        if let Err(e) = entry.conn.send(&admit) {
            // Never announced: take it back without an event.
            lock(&self.leaves).remove(&id);
            handle.info.present.store(false, Ordering::Release);
            let peer = request.peer;
            if let Some(entry) = self.table.conns.remove(&token) {
                entry
                    .conn
                    .finish(self.table.poll.registry(), Duration::ZERO);
            }
            self.call_on_gone(id);
            if let State::Invited { reply, .. } = previous {
                let _ = reply.send(Err(Error::SessionGone {
                    peer,
                    reason: e.to_string(),
                }));
            }
            return;
        }
        let abandoned = match previous {
            State::Invited { reply, .. } => reply.send(Ok(handle.clone())).is_err(),
            _ => false,
        };
        self.emit(RootEvent::Joined(handle));
        if abandoned {
            // The inviter stopped waiting (and was told it timed out): take the leaf out.
            self.close_leaf(
                token,
                Some(Frame::Leave {
                    reason: "the root gave up waiting for the invitation's answer".into(),
                }),
                |leaf| RootEvent::Removed { leaf },
            );
        }
    }

    /// Ends connection `token`: sends `last` if given, closes, and for a joined leaf runs
    /// the hook, updates the table and emits `event`.
    fn close_leaf(
        &mut self,
        token: Token,
        last: Option<Frame>,
        event: impl FnOnce(LeafId) -> RootEvent,
    ) {
        let Some(mut entry) = self.table.conns.remove(&token) else {
            return;
        };
        if let Some(frame) = last {
            let _ = entry.conn.send(&frame);
        }
        entry
            .conn
            .finish(self.table.poll.registry(), Duration::from_millis(100));
        match entry.state {
            State::Joined(handle) => {
                let id = handle.info.id;
                handle.info.present.store(false, Ordering::Release);
                lock(&self.leaves).remove(&id);
                self.call_on_gone(id);
                self.emit(event(id));
            }
            State::Invited { reply, .. } => {
                let _ = reply.send(Err(Error::SessionClosed));
            }
            State::AwaitJoin => {}
        }
    }

    /// A connection failed or closed.
    fn lost(&mut self, token: Token, why: ConnError) {
        let reason = why.to_string();
        if let Some(Entry {
            state: State::Invited { .. },
            conn,
            ..
        }) = self.table.conns.get(&token)
        {
            let peer = conn.peer;
            if let Some(Entry {
                state: State::Invited { reply, .. },
                conn,
                ..
            }) = self.table.conns.remove(&token)
            {
                conn.finish(self.table.poll.registry(), Duration::ZERO);
                let _ = reply.send(Err(Error::SessionGone { peer, reason }));
            }
            return;
        }
        self.close_leaf(token, None, |leaf| RootEvent::Left { leaf, reason });
    }

    /// Handles API commands; true when the root is to close.
    fn commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Cmd::Listen(listener) => match self.table.listen(listener) {
                    // Leaves may have connected before the registration.
                    Ok(()) => self.table.accept("root", <Driver as Serve>::accepted),
                    Err(e) => tracing::error!("root: cannot watch the listener: {e}"),
                },
                Cmd::Invite {
                    stream,
                    peer,
                    direction,
                    reply,
                } => {
                    let invite = Frame::Invite {
                        transport: self.transport,
                        direction,
                    };
                    let Some(token) =
                        self.add_conn(stream, peer, State::Invited { direction, reply })
                    else {
                        continue;
                    };
                    if let Some(entry) = self.table.conns.get_mut(&token) {
                        if let Err(e) = entry.conn.send(&invite) {
                            self.lost(token, e);
                        }
                    }
                }
                Cmd::Remove(id, reply) => {
                    let token = self.table.conns.iter().find_map(|(t, e)| match &e.state {
                        State::Joined(h) if h.info.id == id => Some(*t),
                        _ => None,
                    });
                    match token {
                        Some(token) => {
                            self.close_leaf(
                                token,
                                Some(Frame::Leave {
                                    reason: "removed by the root".into(),
                                }),
                                |leaf| RootEvent::Removed { leaf },
                            );
                            let _ = reply.send(Ok(()));
                        }
                        None => {
                            let _ = reply.send(Err(Error::LeafGone { leaf: id.0 }));
                        }
                    }
                }
                Cmd::Close => return true,
            }
        }
        false
    }

    fn timers(&mut self) {
        let now = Instant::now();
        let heartbeat = self.config.timeout / 3;
        let mut expired = Vec::new();
        let mut failed = Vec::new();
        for (token, entry) in &mut self.table.conns {
            let silent = now.saturating_duration_since(entry.conn.last_rx);
            match entry.state {
                State::Joined(_) => {
                    if silent >= self.config.timeout {
                        expired.push(*token);
                    } else if now.saturating_duration_since(entry.conn.last_tx) >= heartbeat {
                        if let Err(e) = entry.conn.send(&Frame::Heartbeat) {
                            failed.push((*token, e));
                        }
                    }
                }
                _ => {
                    if now.saturating_duration_since(entry.since) >= self.config.timeout {
                        expired.push(*token);
                    }
                }
            }
        }
        for (token, e) in failed {
            self.lost(token, e);
        }
        for token in expired {
            let Some(entry) = self.table.conns.get(&token) else {
                continue;
            };
            let peer = entry.conn.peer;
            match &entry.state {
                State::Joined(_) => self.close_leaf(
                    token,
                    Some(Frame::Leave {
                        reason: "timed out: the root heard nothing within the timeout".into(),
                    }),
                    |leaf| RootEvent::TimedOut { leaf },
                ),
                State::Invited { .. } => {
                    if let Some(Entry {
                        state: State::Invited { reply, .. },
                        conn,
                        ..
                    }) = self.table.conns.remove(&token)
                    {
                        conn.finish(self.table.poll.registry(), Duration::ZERO);
                        let _ = reply.send(Err(Error::TimedOut {
                            what: "waiting for the leaf to answer the invitation",
                            peer,
                        }));
                    }
                }
                State::AwaitJoin => {
                    if let Some(entry) = self.table.conns.remove(&token) {
                        entry
                            .conn
                            .finish(self.table.poll.registry(), Duration::ZERO);
                    }
                }
            }
        }
    }

    fn shutdown(&mut self) {
        let tokens: Vec<Token> = self.table.conns.keys().copied().collect();
        for token in tokens {
            let joined = matches!(
                self.table.conns.get(&token).map(|e| &e.state),
                Some(State::Joined(_))
            );
            // Admitted leaves are told the session ended; those still on their way in are
            // refused.
            let last = if joined {
                Frame::End {
                    reason: "the root closed the session".into(),
                }
            } else {
                Frame::Refuse {
                    reason: "the root is closing".into(),
                }
            };
            self.close_leaf(token, Some(last), |leaf| RootEvent::Left {
                leaf,
                reason: "the root closed the session".into(),
            });
        }
        self.table.unlisten();
    }
}

pub(super) fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Join { .. } => "Join",
        Frame::Admit { .. } => "Admit",
        Frame::Refuse { .. } => "Refuse",
        Frame::Invite { .. } => "Invite",
        Frame::Leave { .. } => "Leave",
        Frame::Heartbeat => "Heartbeat",
        Frame::End { .. } => "End",
    }
}
