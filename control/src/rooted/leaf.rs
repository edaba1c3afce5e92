//! A leaf of a rooted session (`C_LEAF`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use mio::{Poll, Token};

use super::conn::{self, earliest, ConnError, Serve, Table};
use super::proto::{DataPlan, Frame};
use super::Decision;
use crate::error::{Error, Result};
use crate::role::{ControlRole, DataRole, Roles};
use crate::socket::Direction;
use crate::transport::{Plane, Transport};

/// No session and no join pending.
const IDLE: u8 = 0;
/// A join (asked or invited) is on its way.
const PENDING: u8 = 1;
/// In a session.
const JOINED: u8 = 2;

/// An invitation from a root, as the leaf's policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The root's control (TCP) address.
    pub root: SocketAddr,
    /// The transport the root runs.
    pub transport: Transport,
    /// How data is to flow for this leaf.
    pub direction: Direction,
}

/// The function a leaf decides invitations with.
pub type InvitePolicy = Arc<dyn Fn(&Invitation) -> Decision + Send + Sync>;

/// How a leaf joins.
#[derive(Clone)]
pub struct LeafConfig {
    /// A name the root sees (free text, for its logs and policies).
    pub name: String,
    /// The UDP address this leaf receives data on and sends from (`rooted-unicast` needs
    /// it; `admitted-multicast` ignores it).
    pub data: Option<SocketAddr>,
    /// How long to wait to connect to a root.
    pub connect_timeout: Duration,
    /// How long to wait for the root's answer to a join.
    pub join_timeout: Duration,
    /// Decides invitations; `None` accepts every invitation (while the leaf is in no
    /// session).
    pub on_invite: Option<InvitePolicy>,
}

impl std::fmt::Debug for LeafConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafConfig")
            .field("name", &self.name)
            .field("data", &self.data)
            .field("connect_timeout", &self.connect_timeout)
            .field("join_timeout", &self.join_timeout)
            .field("on_invite", &self.on_invite.as_ref().map(|_| "<policy>"))
            .finish()
    }
}

impl LeafConfig {
    /// Defaults for a leaf named `name`: no data address, 3 s to connect, 3 s for the
    /// root's answer, every invitation accepted.
    pub fn new(name: impl Into<String>) -> LeafConfig {
        LeafConfig {
            name: name.into(),
            data: None,
            connect_timeout: Duration::from_secs(3),
            join_timeout: Duration::from_secs(3),
            on_invite: None,
        }
    }
}

/// What happens to a leaf's session, through [`LeafSession::events`]. Each ends the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The root closed the session.
    Ended {
        /// What the root said.
        reason: String,
    },
    /// The root removed this leaf.
    Removed {
        /// What the root said.
        reason: String,
    },
    /// The root went silent for longer than the timeout, or its connection broke.
    RootGone {
        /// What was seen.
        reason: String,
    },
}

/// The way into the leaf's driver thread.
type Ctl = conn::Ctl<Cmd>;

enum Cmd {
    Listen(mio::net::TcpListener),
    Join {
        stream: mio::net::TcpStream,
        peer: SocketAddr,
        direction: Direction,
        reply: Sender<Result<LeafSession>>,
    },
    Leave(Token, Option<Sender<()>>),
    Close,
}

/// A leaf's membership in a rooted session: what it was told, its events, and
/// [`leave`](Self::leave). Dropping it leaves too.
#[derive(Debug)]
pub struct LeafSession {
    root: SocketAddr,
    session: [u8; 10],
    next_sequence: Option<u64>,
    plan: DataPlan,
    direction: Direction,
    timeout: Duration,
    invited: bool,
    events: Receiver<SessionEvent>,
    alive: Arc<AtomicBool>,
    token: Token,
    ctl: Arc<Ctl>,
    left: bool,
}

impl LeafSession {
    /// The root's control (TCP) address.
    pub fn root(&self) -> SocketAddr {
        self.root
    }
    /// The MoldUDP64 session name of the root's data.
    pub fn session(&self) -> [u8; 10] {
        self.session
    }
    /// The sequence number from which the root promised every message, if it said:
    /// anything older that arrives is not this membership's.
    pub fn next_sequence(&self) -> Option<u64> {
        self.next_sequence
    }
    /// Where data flows: for `rooted-unicast` the root's data address and the uplink; for
    /// `admitted-multicast` the group and source to join.
    pub fn plan(&self) -> &DataPlan {
        &self.plan
    }
    /// How data flows for this leaf.
    pub fn direction(&self) -> Direction {
        self.direction
    }
    /// The session's liveness timeout (the root's).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Whether the root invited this leaf.
    pub fn invited(&self) -> bool {
        self.invited
    }
    /// Session events: at most one arrives, and it ends the session.
    pub fn events(&self) -> &Receiver<SessionEvent> {
        &self.events
    }
    /// Whether the session still runs (no event has ended it and it was not left).
    pub fn is_active(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Leaves the session: the root is told, and the connection is closed before this
    /// returns. Leaving a session that already ended does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::SessionClosed`] if the leaf socket itself was closed.
    pub fn leave(mut self) -> Result<()> {
        self.left = true;
        let (tx, rx) = bounded(1);
        self.ctl.command(Cmd::Leave(self.token, Some(tx)))?;
        rx.recv().map_err(|_| Error::SessionClosed)
    }
}

impl Drop for LeafSession {
    fn drop(&mut self) {
        if !self.left {
            let _ = self.ctl.command(Cmd::Leave(self.token, None));
        }
    }
}

/// A leaf socket of a rooted session (`C_LEAF` on `rooted-unicast` or
/// `admitted-multicast`). See the [module docs](super).
///
/// It joins at most one session at a time. Dropping it leaves its session.
#[derive(Debug)]
pub struct Leaf {
    transport: Transport,
    roles: Roles,
    config: LeafConfig,
    status: Arc<AtomicU8>,
    ctl: Arc<Ctl>,
    sessions: Receiver<LeafSession>,
    local: Mutex<Option<SocketAddr>>,
    thread: Option<JoinHandle<()>>,
}

impl Leaf {
    /// A leaf socket on `transport` with `roles` (`C_LEAF | D_LEAF`).
    ///
    /// # Errors
    ///
    /// - [`Error::RoleNotAllowed`] if the transport cannot take the roles;
    /// - [`Error::WrongSocketKind`] unless the roles are `C_LEAF | D_LEAF` on a transport
    ///   with a rooted control plane;
    /// - [`Error::Os`] if the driver thread cannot be set up.
    pub fn new(transport: Transport, roles: Roles, config: LeafConfig) -> Result<Leaf> {
        roles.check(transport)?;
        if transport.info().control_plane != Plane::Rooted
            || roles.control != ControlRole::Leaf
            || roles.data != DataRole::Leaf
        {
            return Err(Error::WrongSocketKind {
                transport,
                roles,
                wanted: "rooted::Leaf takes C_LEAF|D_LEAF on a transport with a rooted \
                         control plane",
            });
        }
        let poll = Poll::new().map_err(Error::os("creating the leaf's poller"))?;
        let (ctl, rx) = Ctl::new(&poll, "waking the leaf's driver thread")
            .map_err(Error::os("creating the leaf's waker"))?;
        let ctl = Arc::new(ctl);
        let status = Arc::new(AtomicU8::new(IDLE));
        let (sessions_tx, sessions) = bounded(1);
        let mut driver = Driver {
            table: Table::new(poll),
            commands: rx,
            ctl: Arc::clone(&ctl),
            transport,
            config: config.clone(),
            status: Arc::clone(&status),
            sessions: sessions_tx,
        };
        let thread = std::thread::Builder::new()
            .name("mp-leaf".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| {
                    driver.run();
                    driver.shutdown();
                });
                if std::panic::catch_unwind(run).is_err() {
                    // A bug of ours (the policy is caught on its own): leave nothing that
                    // claims to be alive; the connections close when the driver drops.
                    tracing::error!("leaf: the driver thread panicked; its session ends");
                    for entry in driver.table.conns.values() {
                        if let State::InSession { alive, .. } = &entry.state {
                            alive.store(false, Ordering::Release);
                        }
                    }
                    driver.status.store(IDLE, Ordering::Release);
                }
            })
            .map_err(Error::os("starting the leaf's driver thread"))?;
        Ok(Leaf {
            transport,
            roles,
            config,
            status,
            ctl,
            sessions,
            local: Mutex::new(None),
            thread: Some(thread),
        })
    }

    /// The leaf's transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The leaf's roles.
    pub fn roles(&self) -> Roles {
        self.roles
    }

    /// The leaf's settings.
    pub fn config(&self) -> &LeafConfig {
        &self.config
    }

    /// Whether the leaf is in a session now.
    pub fn in_session(&self) -> bool {
        self.status.load(Ordering::Acquire) == JOINED
    }

    /// Asks the root listening at `root` to admit this leaf in `direction`
    /// (leaf-initiated join), and waits for the answer.
    ///
    /// # Errors
    ///
    /// - [`Error::AlreadyJoined`] if this leaf is in a session;
    /// - [`Error::JoinPending`] if another join of this leaf is on its way;
    /// - [`Error::Refused`] with the root's reason;
    /// - [`Error::TimedOut`] if the root does not connect or answer in time;
    /// - [`Error::Os`] if the connection fails (no root listening there, say).
    pub fn join_leaf(&self, root: SocketAddr, direction: Direction) -> Result<LeafSession> {
        if let Err(now) =
            self.status
                .compare_exchange(IDLE, PENDING, Ordering::AcqRel, Ordering::Acquire)
        {
            return Err(if now == JOINED {
                Error::AlreadyJoined
            } else {
                Error::JoinPending
            });
        }
        // The driver owns the slot once it has the join (it answers, and frees the slot,
        // within join_timeout); before that, a failure here frees it.
        let (result, reached_driver) = self.ask(root, direction);
        if result.is_err() && !reached_driver {
            let _ =
                self.status
                    .compare_exchange(PENDING, IDLE, Ordering::AcqRel, Ordering::Acquire);
        }
        result
    }

    /// Returns the answer, and whether the join reached the driver.
    fn ask(&self, root: SocketAddr, direction: Direction) -> (Result<LeafSession>, bool) {
        let stream = match conn::connect(root, self.config.connect_timeout) {
            Ok(stream) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                let err = Error::TimedOut {
                    what: "connecting to the root",
                    peer: root,
                };
                return (Err(err), false);
            }
            Err(e) => {
                let err = Error::Os {
                    op: "connecting to the root",
                    source: e,
                };
                return (Err(err), false);
            }
        };
        let (tx, rx) = bounded(1);
        if let Err(e) = self.ctl.command(Cmd::Join {
            stream,
            peer: root,
            direction,
            reply: tx,
        }) {
            return (Err(e), false);
        }
        // The driver answers within join_timeout (its own deadline); the margin covers
        // scheduling. Should it still be late, a session it admits afterwards finds
        // nobody waiting and is left at once.
        let answer = match rx.recv_timeout(self.config.join_timeout + Duration::from_secs(2)) {
            Ok(answer) => answer,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(Error::TimedOut {
                what: "waiting for the root's answer",
                peer: root,
            }),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(Error::SessionClosed),
        };
        (answer, true)
    }

    /// Starts accepting invitations on `addr` (port 0: any free port) and returns the
    /// address roots should invite.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the address cannot be bound; [`Error::AlreadyListening`] if the
    /// leaf listens already.
    pub fn listen(&self, addr: SocketAddr) -> Result<SocketAddr> {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = *local {
            return Err(Error::AlreadyListening { addr: at });
        }
        let listener = conn::listen(addr).map_err(Error::os("listening for invitations"))?;
        let at = listener
            .local_addr()
            .map_err(Error::os("reading the listening address"))?;
        self.ctl.command(Cmd::Listen(listener))?;
        *local = Some(at);
        Ok(at)
    }

    /// Waits up to `timeout` for the session of an accepted invitation.
    ///
    /// # Errors
    ///
    /// [`Error::SessionClosed`] if the leaf's driver stopped.
    pub fn accept(&self, timeout: Duration) -> Result<Option<LeafSession>> {
        match self.sessions.recv_timeout(timeout) {
            Ok(session) => Ok(Some(session)),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Ok(None),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(Error::SessionClosed),
        }
    }

    /// Closes the leaf: its session is left and its driver thread joined.
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

impl Drop for Leaf {
    fn drop(&mut self) {
        self.stop();
    }
}

enum State {
    /// This leaf asked to join; waiting for Admit or Refuse.
    Joining {
        direction: Direction,
        reply: Sender<Result<LeafSession>>,
    },
    /// Accepted on the listener; waiting for the root's Invite.
    AwaitInvite,
    /// Accepted an invitation; waiting for Admit.
    Accepting { direction: Direction },
    /// In a session.
    InSession {
        events: Sender<SessionEvent>,
        alive: Arc<AtomicBool>,
        timeout: Duration,
    },
}

type Entry = conn::Entry<State>;

struct Driver {
    table: Table<State>,
    commands: Receiver<Cmd>,
    ctl: Arc<Ctl>,
    transport: Transport,
    config: LeafConfig,
    status: Arc<AtomicU8>,
    sessions: Sender<LeafSession>,
}

impl Serve for Driver {
    type State = State;
    const WHO: &'static str = "leaf";

    fn table(&mut self) -> &mut Table<State> {
        &mut self.table
    }

    fn accepted() -> State {
        State::AwaitInvite
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
    /// Leaves every session and closes every connection.
    fn shutdown(&mut self) {
        let tokens: Vec<Token> = self.table.conns.keys().copied().collect();
        for token in tokens {
            self.end(
                token,
                Some(Frame::Leave {
                    reason: "the leaf closed".into(),
                }),
                None,
            );
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next = None;
        for entry in self.table.conns.values() {
            match &entry.state {
                State::InSession { timeout, .. } => {
                    next = earliest(next, entry.conn.last_rx + *timeout);
                    next = earliest(next, entry.conn.last_tx + *timeout / 3);
                }
                _ => next = earliest(next, entry.since + self.config.join_timeout),
            }
        }
        next
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
                tracing::warn!("leaf: registering the connection of {peer} failed: {e}");
                if let State::Joining { reply, .. } = state {
                    self.status.store(IDLE, Ordering::Release);
                    let _ = reply.send(Err(Error::Os {
                        op: "registering the root's connection",
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
                State::Joining { .. } | State::Accepting { .. },
                Frame::Admit {
                    session,
                    timeout_ms,
                    next_sequence,
                    plan,
                },
            ) => self.admitted(token, session, timeout_ms, next_sequence, plan),
            (State::Joining { .. }, Frame::Refuse { reason }) => {
                let peer = entry.conn.peer;
                self.end(token, None, Some(Err(Error::Refused { peer, reason })));
            }
            (State::Accepting { .. }, Frame::Refuse { reason }) => {
                tracing::info!(
                    "leaf: the root at {} refused the accepted invitation: {reason}",
                    entry.conn.peer
                );
                self.end(token, None, None);
            }
            (
                State::AwaitInvite,
                Frame::Invite {
                    transport,
                    direction,
                },
            ) => self.invited(token, transport, direction),
            (State::InSession { .. }, Frame::Heartbeat) => {}
            (State::InSession { .. }, Frame::End { reason }) => {
                self.end_session(token, SessionEvent::Ended { reason }, None);
            }
            (State::InSession { .. }, Frame::Leave { reason }) => {
                self.end_session(token, SessionEvent::Removed { reason }, None);
            }
            (_, Frame::Heartbeat) => {}
            (_, other) => self.lost(token, ConnError::Unexpected(frame_name(&other))),
        }
    }

    fn invited(&mut self, token: Token, transport: Transport, direction: Direction) {
        let Some(entry) = self.table.conns.get(&token) else {
            return;
        };
        let invitation = Invitation {
            root: entry.conn.peer,
            transport,
            direction,
        };
        // Whether this invitation took the leaf's one pending-join slot.
        let mut took_slot = false;
        let decision = if transport != self.transport {
            Decision::Refuse(format!(
                "this leaf runs {}, the root invited it to {transport}",
                self.transport
            ))
        } else if transport == Transport::RootedUnicast && self.config.data.is_none() {
            Decision::Refuse("this leaf has no data address for rooted-unicast".into())
        } else {
            match self
                .status
                .compare_exchange(IDLE, PENDING, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    took_slot = true;
                    match &self.config.on_invite {
                        Some(policy) => {
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                policy(&invitation)
                            }))
                            .unwrap_or_else(|_| {
                                tracing::error!("leaf: the invitation policy panicked; declining");
                                Decision::Refuse("the leaf's invitation policy failed".into())
                            })
                        }
                        None => Decision::Admit,
                    }
                }
                Err(JOINED) => Decision::Refuse("already a member of a session".into()),
                Err(_) => Decision::Refuse("another join of this leaf is pending".into()),
            }
        };
        match decision {
            Decision::Admit => {
                let join = Frame::Join {
                    transport,
                    direction,
                    data: self.config.data,
                    name: self.config.name.clone(),
                };
                let Some(entry) = self.table.conns.get_mut(&token) else {
                    return;
                };
                entry.state = State::Accepting { direction };
                entry.since = Instant::now();
                if let Err(e) = entry.conn.send(&join) {
                    self.lost(token, e);
                }
            }
            Decision::Refuse(reason) => {
                if took_slot {
                    self.status.store(IDLE, Ordering::Release);
                }
                self.end(token, Some(Frame::Refuse { reason }), None);
            }
        }
    }

    fn admitted(
        &mut self,
        token: Token,
        session: [u8; 10],
        timeout_ms: u32,
        next_sequence: u64,
        plan: DataPlan,
    ) {
        let Some(entry) = self.table.conns.get_mut(&token) else {
            return;
        };
        let fits = matches!(
            (&plan, self.transport),
            (DataPlan::Unicast { .. }, Transport::RootedUnicast)
                | (DataPlan::Multicast { .. }, Transport::AdmittedMulticast)
        );
        if !fits {
            return self.lost(
                token,
                ConnError::Unexpected("a data plan for another transport"),
            );
        }
        // A timeout too short to keep up with, or absurdly long, is clamped.
        let timeout = Duration::from_millis(u64::from(timeout_ms))
            .clamp(Duration::from_millis(100), Duration::from_secs(3600));
        let (events_tx, events) = bounded(1);
        let alive = Arc::new(AtomicBool::new(true));
        let (direction, invited) = match &entry.state {
            State::Joining { direction, .. } => (*direction, false),
            State::Accepting { direction } => (*direction, true),
            _ => return,
        };
        let handle = LeafSession {
            root: entry.conn.peer,
            session,
            next_sequence: (next_sequence != 0).then_some(next_sequence),
            plan,
            direction,
            timeout,
            invited,
            events,
            alive: Arc::clone(&alive),
            token,
            ctl: Arc::clone(&self.ctl),
            left: false,
        };
        let previous = std::mem::replace(
            &mut entry.state,
            State::InSession {
                events: events_tx,
                alive,
                timeout,
            },
        );
        self.status.store(JOINED, Ordering::Release);
        let undelivered: Option<LeafSession> = match previous {
            State::Joining { reply, .. } => reply
                .send(Ok(handle))
                .err()
                .and_then(|e| e.into_inner().ok()),
            _ => self.sessions.try_send(handle).err().map(|e| e.into_inner()),
        };
        if let Some(mut session) = undelivered {
            // Nobody will hold the session (the caller gave up waiting, or nobody called
            // Leaf::accept in time): leave it here, and keep its drop from doing it again.
            tracing::warn!("leaf: a session nobody took is left at once");
            session.left = true;
            drop(session);
            self.end_session(
                token,
                SessionEvent::RootGone {
                    reason: "nobody took the session".into(),
                },
                Some(Frame::Leave {
                    reason: "the leaf did not take the session".into(),
                }),
            );
        }
    }

    /// Ends a session connection with `event`, sending `last` first if given.
    fn end_session(&mut self, token: Token, event: SessionEvent, last: Option<Frame>) {
        let events = match self.table.conns.get(&token) {
            Some(Entry {
                state: State::InSession { events, .. },
                ..
            }) => Some(events.clone()),
            _ => None,
        };
        // The state changes first, so whoever sees the event sees the session ended.
        self.end(token, last, None);
        if let Some(events) = events {
            let _ = events.try_send(event);
        }
    }

    /// Closes connection `token` (sending `last` first), answers a pending join with
    /// `answer` (or a generic error) and updates the status.
    fn end(&mut self, token: Token, last: Option<Frame>, answer: Option<Result<LeafSession>>) {
        let Some(mut entry) = self.table.conns.remove(&token) else {
            return;
        };
        if let Some(frame) = last {
            let _ = entry.conn.send(&frame);
        }
        let peer = entry.conn.peer;
        entry
            .conn
            .finish(self.table.poll.registry(), Duration::from_millis(100));
        match entry.state {
            State::Joining { reply, .. } => {
                self.status.store(IDLE, Ordering::Release);
                let answer = answer.unwrap_or_else(|| {
                    Err(Error::SessionGone {
                        peer,
                        reason: "the connection ended before an answer".into(),
                    })
                });
                let _ = reply.send(answer);
            }
            State::Accepting { .. } => self.status.store(IDLE, Ordering::Release),
            State::InSession { alive, .. } => {
                alive.store(false, Ordering::Release);
                self.status.store(IDLE, Ordering::Release);
            }
            State::AwaitInvite => {}
        }
    }

    fn lost(&mut self, token: Token, why: ConnError) {
        let reason = why.to_string();
        match self.table.conns.get(&token).map(|e| &e.state) {
            Some(State::InSession { .. }) => {
                self.end_session(token, SessionEvent::RootGone { reason }, None)
            }
            Some(State::Joining { .. }) => {
                let peer = self.table.conns.get(&token).map(|e| e.conn.peer);
                if let Some(peer) = peer {
                    self.end(token, None, Some(Err(Error::SessionGone { peer, reason })));
                }
            }
            _ => self.end(token, None, None),
        }
    }

    /// Handles API commands; true when the leaf is to close.
    fn commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Cmd::Listen(listener) => match self.table.listen(listener) {
                    // Roots may have connected before the registration.
                    Ok(()) => self.table.accept("leaf", <Driver as Serve>::accepted),
                    Err(e) => tracing::error!("leaf: cannot watch the listener: {e}"),
                },
                Cmd::Join {
                    stream,
                    peer,
                    direction,
                    reply,
                } => {
                    let join = Frame::Join {
                        transport: self.transport,
                        direction,
                        data: self.config.data,
                        name: self.config.name.clone(),
                    };
                    if let Some(token) =
                        self.add_conn(stream, peer, State::Joining { direction, reply })
                    {
                        if let Some(entry) = self.table.conns.get_mut(&token) {
                            if let Err(e) = entry.conn.send(&join) {
                                self.lost(token, e);
                            }
                        }
                    }
                }
                Cmd::Leave(token, reply) => {
                    if matches!(
                        self.table.conns.get(&token).map(|e| &e.state),
                        Some(State::InSession { .. })
                    ) {
                        self.end(
                            token,
                            Some(Frame::Leave {
                                reason: "the leaf left".into(),
                            }),
                            None,
                        );
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(());
                    }
                }
                Cmd::Close => return true,
            }
        }
        false
    }

    fn timers(&mut self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut expired = Vec::new();
        let mut failed = Vec::new();
        for (token, entry) in &mut self.table.conns {
            match &entry.state {
                State::InSession { timeout, .. } => {
                    if now.saturating_duration_since(entry.conn.last_rx) >= *timeout {
                        gone.push(*token);
                    } else if now.saturating_duration_since(entry.conn.last_tx) >= *timeout / 3 {
                        if let Err(e) = entry.conn.send(&Frame::Heartbeat) {
                            failed.push((*token, e));
                        }
                    }
                }
                _ => {
                    if now.saturating_duration_since(entry.since) >= self.config.join_timeout {
                        expired.push(*token);
                    }
                }
            }
        }
        for (token, e) in failed {
            self.lost(token, e);
        }
        for token in gone {
            self.end_session(
                token,
                SessionEvent::RootGone {
                    reason: "nothing heard from the root within the timeout".into(),
                },
                None,
            );
        }
        for token in expired {
            let peer = self.table.conns.get(&token).map(|e| e.conn.peer);
            if let Some(peer) = peer {
                self.end(
                    token,
                    None,
                    Some(Err(Error::TimedOut {
                        what: "waiting for the root's answer",
                        peer,
                    })),
                );
            }
        }
    }
}

fn frame_name(frame: &Frame) -> &'static str {
    super::root::frame_name(frame)
}
