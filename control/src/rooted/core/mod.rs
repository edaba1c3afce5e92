//! The rooted session logic as state machines without I/O: [`RootCore`](root::RootCore)
//! decides for a [`Root`](super::Root), [`LeafCore`](leaf::LeafCore) for a
//! [`Leaf`](super::Leaf).
//!
//! A core is fed decoded [`Frame`]s, connection events and the API's commands (those
//! that start or time something with the time they happened, `now`), and says what to do
//! in return. It owns no socket, no thread and no clock: it never reads `Instant::now()`,
//! so the same inputs always give the same outputs, and its tests run on a fake clock
//! without a network (`sim`).
//!
//! # Driving a core
//!
//! Every core offers the calls of [`Machine`]; each adds its own commands
//! (`handle_invite`, `handle_join`, …). The embedder (the driver thread in
//! [`driver`](super::driver), or a test):
//!
//! 1. feeds one input with a `handle_*` call: a connection accepted
//!    ([`handle_accepted`](Machine::handle_accepted), which names the new connection),
//!    connected, a frame, a connection lost with its reason, a command;
//! 2. takes every [`Output`] with [`poll_output`](Machine::poll_output) and carries them
//!    out **in the order given**, until it returns `None`: the order is part of the
//!    contract (a root lists a leaf before the frame that tells the leaf it is in; a
//!    removal closes the connection before its answer). Carrying out an output may feed
//!    another input (a send failed: [`handle_lost`](Machine::handle_lost)); its outputs
//!    join the end of the same queue;
//! 3. waits for I/O until [`poll_timeout`](Machine::poll_timeout), and then calls
//!    [`handle_timeout`](Machine::handle_timeout) (calling it early does nothing).
//!
//! Connections are [`ConnId`]s the core hands out: for a connection the embedder
//! accepted, from `handle_accepted`; for one the core wants opened, in
//! [`Transmit::Connect`]. A core forgets a connection only with a [`Transmit::Close`]
//! for it, and ignores inputs for connections it does not know.
//!
//! Nothing here panics on any input. The embedder's decisions (a root's
//! [`RootHooks`](super::RootHooks), a leaf's [`InvitePolicy`](super::InvitePolicy)) are
//! called from inside the `handle_*` call that needs them, with a panic caught and turned
//! into a refusal: see [`root`] and [`leaf`] for why they are calls and not outputs.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::proto::{DataPlan, Frame, ProtoError};
use crate::error::Error;
use crate::transport::Transport;

pub(crate) mod leaf;
pub(crate) mod root;
#[cfg(test)]
mod sim;

/// Shortest session timeout: heartbeats go out every third of it.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest session timeout.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// One control connection of a core, as long as the core knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(pub(crate) u64);

/// Why a connection can no longer be used.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The peer closed its end.
    Closed,
    /// The peer sent bytes that are not a frame of this protocol (or a frame could not
    /// be encoded).
    Protocol(ProtoError),
    /// The socket failed, or could not be connected.
    Io(io::Error),
    /// The peer sent a well-formed frame that makes no sense where the session stands.
    Unexpected(&'static str),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Closed => f.write_str("the connection was closed without a leave"),
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
            ConnError::Io(e) => write!(f, "connection failed: {e}"),
            ConnError::Unexpected(what) => write!(f, "protocol error: unexpected {what}"),
        }
    }
}

/// What a core asks done to one of its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transmit {
    /// Open a connection to this address, then report
    /// [`handle_connected`](Machine::handle_connected) or
    /// [`handle_lost`](Machine::handle_lost).
    Connect(SocketAddr),
    /// Send the frame.
    Send(Frame),
    /// Send the frame, if any, then close the connection; the core has forgotten it.
    Close(Option<Frame>),
}

/// One thing a core asks of its embedder; `N` is what only that side's embedder is told
/// (events, answers to pending calls).
#[derive(Debug)]
pub(crate) enum Output<N> {
    /// Do something to a connection.
    Conn(ConnId, Transmit),
    /// Tell the embedder.
    Note(N),
}

/// The calls every core offers its driver. The order to call them in is in the
/// [module docs](self).
pub(crate) trait Machine {
    /// What the embedder is told besides connection work.
    type Note;
    /// A connection came in from `peer`; returns the id the core gives it. The core may
    /// close it at once (a [`Transmit::Close`] follows) when it is over a limit.
    fn handle_accepted(&mut self, peer: SocketAddr, now: Instant) -> ConnId;
    /// The embedder cannot take another connection (accept failed for want of
    /// descriptors or memory): the core closes one it can spare to make room, if it has
    /// one, and says whether it did. If not, the embedder tries again later.
    fn handle_pressure(&mut self, now: Instant) -> bool;
    /// The connection the core asked for with [`Transmit::Connect`] is up.
    fn handle_connected(&mut self, conn: ConnId, now: Instant);
    /// A frame arrived on `conn`.
    fn handle_frame(&mut self, conn: ConnId, frame: Frame, now: Instant);
    /// `conn` failed or closed (or could not be opened); frames that came before the
    /// failure are to be fed first.
    fn handle_lost(&mut self, conn: ConnId, why: ConnError);
    /// Time passed: sends heartbeats and ends what ran out of time. Does nothing before
    /// [`poll_timeout`](Self::poll_timeout).
    fn handle_timeout(&mut self, now: Instant);
    /// Closes every connection, each as the side says, and answers what waits; the core
    /// has no connection left after.
    fn handle_close(&mut self);
    /// The next thing to do, in order.
    fn poll_output(&mut self) -> Option<Output<Self::Note>>;
    /// When [`handle_timeout`](Self::handle_timeout) has something to do next, if ever.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// The rules of one side, root or leaf, over its [`Conns`]: what it decides.
/// [`Machine`] is implemented once for every `Rules`, with what both sides share:
/// connections it does not know are ignored, frames heard and sent keep the clocks, a
/// heartbeat is taken wherever a connection stands, a frame the side does not expect
/// ends its connection with a protocol error, heartbeats and deadlines follow
/// [`watch`](Rules::watch), and outputs queue in order.
pub(crate) trait Rules {
    /// Where a connection stands.
    type State;
    /// What the embedder is told besides connection work.
    type Note;
    /// The state of a connection accepted on the listener.
    const ACCEPTED: Self::State;
    /// The side's connections and queued outputs.
    fn conns(&self) -> &Conns<Self::State, Self::Note>;
    /// The same, to change.
    fn conns_mut(&mut self) -> &mut Conns<Self::State, Self::Note>;
    /// How the time of a connection is kept, by its state.
    fn watch(&self) -> impl Fn(&Self::State) -> Watch + 'static;
    /// A connection this side opened came up in `state`: the state it moves to and the
    /// first frame to send, or `None` if it was not being opened.
    fn opened(&self, state: &Self::State) -> Option<(Self::State, Frame)>;
    /// A frame other than a heartbeat arrived on `conn`, a connection with `peer`; false
    /// if it makes no sense where the connection stands.
    fn frame(&mut self, conn: ConnId, peer: SocketAddr, frame: Frame, now: Instant) -> bool;
    /// `conn`, a connection with `peer`, failed or closed.
    fn lost(&mut self, conn: ConnId, peer: SocketAddr, why: ConnError);
    /// `conn`, a connection with `peer`, ran out of time.
    fn expired(&mut self, conn: ConnId, peer: SocketAddr);
    /// `conn` was just accepted from `peer`: the side may close it at once. The default
    /// keeps it.
    fn accepted(&mut self, conn: ConnId, peer: SocketAddr, now: Instant) {
        let _ = (conn, peer, now);
    }
    /// See [`Machine::handle_pressure`]. The default has nothing to spare.
    fn shed(&mut self, now: Instant) -> bool {
        let _ = now;
        false
    }
    /// Closes every connection; see [`Machine::handle_close`].
    fn close(&mut self);
}

impl<R: Rules> Machine for R {
    type Note = R::Note;

    fn handle_accepted(&mut self, peer: SocketAddr, now: Instant) -> ConnId {
        let conn = self.conns_mut().open(peer, R::ACCEPTED, now);
        self.accepted(conn, peer, now);
        conn
    }

    fn handle_pressure(&mut self, now: Instant) -> bool {
        self.shed(now)
    }

    fn handle_connected(&mut self, conn: ConnId, now: Instant) {
        let opened = self.conns().get(conn).and_then(|c| self.opened(&c.state));
        if let Some((state, first)) = opened {
            let conns = self.conns_mut();
            if let Some(entry) = conns.get_mut(conn) {
                entry.change(state, now);
            }
            conns.send(conn, first, now);
        }
    }

    fn handle_frame(&mut self, conn: ConnId, frame: Frame, now: Instant) {
        let Some(peer) = self.conns_mut().heard(conn, now).map(|c| c.peer) else {
            return;
        };
        // A heartbeat only keeps the clocks, which heard() just did.
        if frame == Frame::Heartbeat {
            return;
        }
        let name = frame_name(&frame);
        if !self.frame(conn, peer, frame, now) {
            self.lost(conn, peer, ConnError::Unexpected(name));
        }
    }

    fn handle_lost(&mut self, conn: ConnId, why: ConnError) {
        if let Some(peer) = self.conns().peer(conn) {
            self.lost(conn, peer, why);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let watch = self.watch();
        for conn in self.conns_mut().tick(now, watch) {
            if let Some(peer) = self.conns().peer(conn) {
                self.expired(conn, peer);
            }
        }
    }

    fn handle_close(&mut self) {
        self.close();
    }

    fn poll_output(&mut self) -> Option<Output<R::Note>> {
        self.conns_mut().poll()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.conns().deadline(self.watch())
    }
}

/// The name of a frame's type, for errors.
fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Join { .. } => "Join",
        Frame::Admit { .. } => "Admit",
        Frame::Refuse { .. } => "Refuse",
        Frame::Invite { .. } => "Invite",
        Frame::Leave { .. } => "Leave",
        Frame::Heartbeat => "Heartbeat",
        Frame::End { .. } => "End",
        Frame::Challenge { .. } => "Challenge",
        Frame::Proof { .. } => "Proof",
        Frame::RootProof { .. } => "RootProof",
    }
}

/// How the time of a connection is kept, by where it stands.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Watch {
    /// In a session: a heartbeat goes out after a third of `timeout` without a frame
    /// sent, and the peer is gone after `timeout` without a frame heard.
    Session(Duration),
    /// On its way into a session: it must get there within this long of its last change
    /// of state.
    Pending(Duration),
}

/// One connection of a core: its peer, its clocks and where it stands (`S`).
#[derive(Debug)]
pub(crate) struct Conn<S> {
    pub(crate) peer: SocketAddr,
    pub(crate) state: S,
    /// When the connection was made or last changed state.
    since: Instant,
    last_rx: Instant,
    last_tx: Instant,
}

impl<S> Conn<S> {
    /// Moves the connection to `state`, restarting its pending clock.
    pub(crate) fn change(&mut self, state: S, now: Instant) -> S {
        self.since = now;
        std::mem::replace(&mut self.state, state)
    }

    /// When the connection's time runs out or its next heartbeat is due; `None` when that
    /// is too far to say (a limit of centuries: never).
    fn deadline(&self, watch: Watch) -> Option<Instant> {
        match watch {
            Watch::Session(timeout) => {
                let silent = self.last_rx.checked_add(timeout)?;
                let heartbeat = self.last_tx.checked_add(timeout / 3)?;
                Some(silent.min(heartbeat))
            }
            Watch::Pending(limit) => self.since.checked_add(limit),
        }
    }
}

/// A core's connections and the outputs it has queued: what the root's and the leaf's
/// cores share.
#[derive(Debug)]
pub(crate) struct Conns<S, N> {
    map: BTreeMap<ConnId, Conn<S>>,
    next: u64,
    out: VecDeque<Output<N>>,
}

impl<S, N> Conns<S, N> {
    pub(crate) fn new() -> Conns<S, N> {
        Conns {
            map: BTreeMap::new(),
            next: 0,
            out: VecDeque::new(),
        }
    }

    /// A new connection with `peer`, in `state`.
    pub(crate) fn open(&mut self, peer: SocketAddr, state: S, now: Instant) -> ConnId {
        let id = ConnId(self.next);
        self.next += 1;
        let conn = Conn {
            peer,
            state,
            since: now,
            last_rx: now,
            last_tx: now,
        };
        self.map.insert(id, conn);
        id
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&Conn<S>> {
        self.map.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn<S>> {
        self.map.get_mut(&id)
    }

    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.map.keys().copied().collect()
    }

    /// How many connections there are.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// How many connections there are with a peer at `ip`.
    pub(crate) fn count_from(&self, ip: std::net::IpAddr) -> usize {
        self.map.values().filter(|c| c.peer.ip() == ip).count()
    }

    /// The connection that has stood longest where it is, of those `which` picks (the
    /// first made, on a tie).
    pub(crate) fn oldest(&self, which: impl Fn(&Conn<S>) -> bool) -> Option<ConnId> {
        self.map
            .iter()
            .filter(|(_, c)| which(c))
            .min_by_key(|(id, c)| (c.since, **id))
            .map(|(id, _)| *id)
    }

    /// Notes a frame heard on `id`; gives the connection back if known.
    pub(crate) fn heard(&mut self, id: ConnId, now: Instant) -> Option<&mut Conn<S>> {
        let conn = self.map.get_mut(&id)?;
        conn.last_rx = now;
        Some(conn)
    }

    /// Queues `frame` for `id`.
    pub(crate) fn send(&mut self, id: ConnId, frame: Frame, now: Instant) {
        if let Some(conn) = self.map.get_mut(&id) {
            conn.last_tx = now;
            self.out.push_back(Output::Conn(id, Transmit::Send(frame)));
        }
    }

    /// A new connection to `peer`, in `state`, asked for at once.
    pub(crate) fn dial(&mut self, peer: SocketAddr, state: S, now: Instant) -> ConnId {
        let id = self.open(peer, state, now);
        self.out
            .push_back(Output::Conn(id, Transmit::Connect(peer)));
        id
    }

    /// The peer of `id`, if the connection is known.
    pub(crate) fn peer(&self, id: ConnId) -> Option<SocketAddr> {
        self.map.get(&id).map(|conn| conn.peer)
    }

    /// Forgets `id`, queueing its close (after `last`, if given); gives it back.
    pub(crate) fn close(&mut self, id: ConnId, last: Option<Frame>) -> Option<Conn<S>> {
        let conn = self.map.remove(&id)?;
        self.out.push_back(Output::Conn(id, Transmit::Close(last)));
        Some(conn)
    }

    pub(crate) fn note(&mut self, note: N) {
        self.out.push_back(Output::Note(note));
    }

    pub(crate) fn poll(&mut self) -> Option<Output<N>> {
        self.out.pop_front()
    }

    /// Sends the heartbeats due at `now` and returns the connections whose time ran out,
    /// each kept as `watch` says.
    pub(crate) fn tick(&mut self, now: Instant, watch: impl Fn(&S) -> Watch) -> Vec<ConnId> {
        let mut expired = Vec::new();
        for (id, conn) in &mut self.map {
            match watch(&conn.state) {
                Watch::Session(timeout) => {
                    if now.saturating_duration_since(conn.last_rx) >= timeout {
                        expired.push(*id);
                    } else if now.saturating_duration_since(conn.last_tx) >= timeout / 3 {
                        conn.last_tx = now;
                        self.out
                            .push_back(Output::Conn(*id, Transmit::Send(Frame::Heartbeat)));
                    }
                }
                Watch::Pending(limit) => {
                    if now.saturating_duration_since(conn.since) >= limit {
                        expired.push(*id);
                    }
                }
            }
        }
        expired
    }

    /// The earliest instant [`tick`](Self::tick) has something to do.
    pub(crate) fn deadline(&self, watch: impl Fn(&S) -> Watch) -> Option<Instant> {
        self.map
            .values()
            .filter_map(|conn| conn.deadline(watch(&conn.state)))
            .min()
    }
}

/// Calls the embedder's `decide`; if it panics, logs `complaint` and gives `fallback`.
pub(crate) fn guarded<T>(
    decide: impl FnOnce() -> T,
    fallback: T,
    complaint: impl std::fmt::Display,
) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decide)).unwrap_or_else(|_| {
        tracing::error!("{complaint}");
        fallback
    })
}

/// Whether `plan` is a data plan of `transport`.
pub(crate) fn plan_fits(plan: &DataPlan, transport: Transport) -> bool {
    matches!(
        (plan, transport),
        (DataPlan::Unicast { .. }, Transport::RootedUnicast)
            | (DataPlan::Multicast { .. }, Transport::AdmittedMulticast)
    )
}

/// The answer to a join or invitation whose connection to `peer` could not be opened
/// (`what` says which).
pub(crate) fn connect_error(what: &'static str, peer: SocketAddr, why: ConnError) -> Error {
    match why {
        ConnError::Io(e) if e.kind() == io::ErrorKind::TimedOut => Error::TimedOut { what, peer },
        ConnError::Io(source) => Error::OsAt {
            op: what,
            addr: peer,
            source,
        },
        other => Error::SessionGone {
            peer,
            reason: other.to_string(),
        },
    }
}
