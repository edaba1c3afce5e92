//! A leaf of a rooted session (`C_LEAF`): its API, and what its notes mean to the API.
//! The session logic is [`LeafCore`]'s; the thread is [`driver`]'s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::core::leaf::{Admission, LeafCore, LeafNote};
use super::core::ConnId;
use super::driver::{self, names, Ask, Cmd, Names, Reply, Running, Side, Waiting};
use super::proto::DataPlan;
use super::{Decision, Key};
use crate::error::{Error, Result};
use crate::role::{ControlRole, DataRole, Roles};
use crate::socket::Direction;
use crate::transport::{Plane, Transport};

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
    /// The pre-shared key: with one, the leaf answers the root's challenge and takes an
    /// admission only from a root that proves the same key; without, it declines a root
    /// that asks for one. See [`auth`](super::auth).
    pub key: Option<Key>,
}

impl std::fmt::Debug for LeafConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafConfig")
            .field("name", &self.name)
            .field("data", &self.data)
            .field("connect_timeout", &self.connect_timeout)
            .field("join_timeout", &self.join_timeout)
            .field("on_invite", &self.on_invite.as_ref().map(|_| "<policy>"))
            .field("key", &self.key)
            .finish()
    }
}

impl LeafConfig {
    /// Defaults for a leaf named `name`: no data address, 3 s to connect, 3 s for the
    /// root's answer, every invitation accepted, no key.
    pub fn new(name: impl Into<String>) -> LeafConfig {
        LeafConfig {
            name: name.into(),
            data: None,
            connect_timeout: Duration::from_secs(3),
            join_timeout: Duration::from_secs(3),
            on_invite: None,
            key: None,
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
type Ctl = driver::Ctl<LeafCmd>;

/// The leaf's own commands to its driver.
enum LeafCmd {
    Join(Ask<LeafSession>),
    Leave(ConnId, Option<oneshot::Sender<()>>),
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
    conn: ConnId,
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
    pub fn leave(self) -> Result<()> {
        self.leaving()?.recv().map_err(|_| Error::SessionClosed)
    }

    /// [`leave`](Self::leave) without blocking the caller's thread: the driver's
    /// confirmation that the connection is closed is awaited.
    ///
    /// # Errors
    ///
    /// As [`leave`](Self::leave).
    pub async fn leave_async(self) -> Result<()> {
        self.leaving()?.await.map_err(|_| Error::SessionClosed)
    }

    /// Asks the driver to leave; it confirms on the receiver.
    fn leaving(mut self) -> Result<oneshot::Receiver<()>> {
        self.left = true;
        let (tx, rx) = oneshot::channel();
        self.ctl
            .command(Cmd::Side(LeafCmd::Leave(self.conn, Some(tx))))?;
        Ok(rx)
    }
}

impl Drop for LeafSession {
    fn drop(&mut self) {
        if !self.left {
            let _ = self.ctl.command(Cmd::Side(LeafCmd::Leave(self.conn, None)));
        }
    }
}

/// A leaf socket of a rooted session (`C_LEAF` on `rooted-unicast` or
/// `admitted-multicast`). See the [module docs](super).
///
/// It joins at most one session at a time. Dropping it leaves its session.
#[derive(Debug)]
pub struct Leaf {
    /// First, so that dropping the leaf leaves its session before anything else goes.
    driver: Running<LeafCmd>,
    transport: Transport,
    roles: Roles,
    config: LeafConfig,
    in_session: Arc<AtomicBool>,
    sessions: Receiver<LeafSession>,
    local: Mutex<Option<SocketAddr>>,
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
        let in_session = Arc::new(AtomicBool::new(false));
        let (sessions_tx, sessions) = bounded(1);
        let core = LeafCore::new(transport, config.clone());
        let driver = driver::start(core, |ctl| LeafSide {
            ctl: Arc::clone(ctl),
            in_session: Arc::clone(&in_session),
            accepted: sessions_tx,
            joiner: Waiting::new(),
            session: None,
        })?;
        Ok(Leaf {
            driver,
            transport,
            roles,
            config,
            in_session,
            sessions,
            local: Mutex::new(None),
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
        self.in_session.load(Ordering::Acquire)
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
        // The core answers by its deadlines: connected, then answered. Should the answer
        // still come late, the session it admits finds nobody waiting and is left at once.
        self.driver.ask(
            root,
            direction,
            LeafCmd::Join,
            self.config
                .connect_timeout
                .saturating_add(self.config.join_timeout),
            "waiting for the root's answer",
        )
    }

    /// [`join_leaf`](Self::join_leaf) without blocking the caller's thread, for async
    /// code: the root's answer is awaited. It comes within the leaf's connect and join
    /// timeouts, as for `join_leaf` (the driver answers a join it timed out).
    ///
    /// # Errors
    ///
    /// As [`join_leaf`](Self::join_leaf).
    pub async fn join_leaf_async(
        &self,
        root: SocketAddr,
        direction: Direction,
    ) -> Result<LeafSession> {
        self.driver.ask_async(root, direction, LeafCmd::Join).await
    }

    /// Starts accepting invitations on `addr` (port 0: any free port) and returns the
    /// address roots should invite.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the address cannot be bound; [`Error::AlreadyListening`] if the
    /// leaf listens already.
    pub fn listen(&self, addr: SocketAddr) -> Result<SocketAddr> {
        self.driver
            .listen(&self.local, addr, "listening for invitations on")
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
    pub fn close(self) {
        drop(self);
    }
}

/// What the leaf's core notes mean to the API: session handles handed out, their events,
/// the joiner's answer.
struct LeafSide {
    ctl: Arc<Ctl>,
    /// What [`Leaf::in_session`] reads.
    in_session: Arc<AtomicBool>,
    /// Sessions of accepted invitations, for [`Leaf::accept`].
    accepted: Sender<LeafSession>,
    /// The caller of [`Leaf::join_leaf`] waiting for the answer.
    joiner: Waiting<LeafSession>,
    /// The session handed out, by connection: how to tell it that it ended.
    session: Option<(ConnId, SessionLink)>,
}

/// The driver's end of a [`LeafSession`].
struct SessionLink {
    events: Sender<SessionEvent>,
    alive: Arc<AtomicBool>,
}

impl Side for LeafSide {
    type Machine = LeafCore;
    type Cmd = LeafCmd;
    const NAMES: Names = names!("leaf");

    fn command(&mut self, core: &mut LeafCore, cmd: LeafCmd, now: Instant) -> Option<Reply> {
        match cmd {
            LeafCmd::Join(ask) => {
                self.joiner.start(ask, |peer, direction| {
                    core.handle_join(peer, direction, now)
                });
                None
            }
            LeafCmd::Leave(conn, reply) => {
                core.handle_leave(conn);
                let reply = reply?;
                Some(Box::new(move || {
                    let _ = reply.send(());
                }))
            }
        }
    }

    fn note(&mut self, core: &mut LeafCore, note: LeafNote) {
        match note {
            LeafNote::Admitted { conn, session } => {
                if let Some(mut unclaimed) = self.hand_out(conn, session) {
                    // Nobody will hold the session (the caller gave up waiting, or nobody
                    // called Leaf::accept in time): its drop must not leave it again.
                    unclaimed.left = true;
                    drop(unclaimed);
                    core.handle_unclaimed(conn);
                }
            }
            LeafNote::JoinFailed(e) => {
                self.joiner.answer(Err(e));
            }
            LeafNote::Ended { conn, event } => {
                if let Some((_, link)) = self.session.take_if(|(id, _)| *id == conn) {
                    // The session reads as ended before its event arrives.
                    link.alive.store(false, Ordering::Release);
                    if let Some(event) = event {
                        let _ = link.events.try_send(event);
                    }
                }
            }
        }
    }

    fn publish(&self, core: &LeafCore) {
        self.in_session.store(core.in_session(), Ordering::Release);
    }

    fn abandon(&mut self) {
        if let Some((_, link)) = self.session.take() {
            link.alive.store(false, Ordering::Release);
        }
        self.in_session.store(false, Ordering::Release);
    }
}

impl LeafSide {
    /// Makes the session handle of `admission` and hands it to whoever waits for it;
    /// gives it back if nobody does.
    fn hand_out(&mut self, conn: ConnId, admission: Admission) -> Option<LeafSession> {
        let (events_tx, events) = bounded(1);
        let alive = Arc::new(AtomicBool::new(true));
        let invited = admission.invited;
        let session = LeafSession {
            root: admission.root,
            session: admission.session,
            next_sequence: admission.next_sequence,
            plan: admission.plan,
            direction: admission.direction,
            timeout: admission.timeout,
            invited,
            events,
            alive: Arc::clone(&alive),
            conn,
            ctl: Arc::clone(&self.ctl),
            left: false,
        };
        let link = SessionLink {
            events: events_tx,
            alive,
        };
        self.session = Some((conn, link));
        if invited {
            return self
                .accepted
                .try_send(session)
                .err()
                .map(|e| e.into_inner());
        }
        self.joiner.answer(Ok(session)).and_then(Result::ok)
    }
}
