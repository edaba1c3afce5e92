//! What a leaf decides: its one join at a time, answering invitations, its session's
//! liveness and its end, as a state machine without I/O (see [the contract](super)).
//!
//! Besides the calls of [`Machine`], a [`LeafCore`] takes the leaf's commands:
//! [`handle_join`](LeafCore::handle_join), [`handle_leave`](LeafCore::handle_leave),
//! [`handle_unclaimed`](LeafCore::handle_unclaimed) and
//! [`handle_close`](LeafCore::handle_close). Its [`LeafNote`]s hand out admissions,
//! answer a failed join and end sessions.
//!
//! The leaf holds one place: a join on its way (asked, or an invitation accepted) or a
//! session. While it is taken, a join is refused at once ([`Error::JoinPending`],
//! [`Error::AlreadyJoined`]) and an invitation is declined with the reason.
//!
//! # The invitation policy is a call, not an output
//!
//! [`LeafConfig::on_invite`] is called from inside the `handle_frame` that brought the
//! Invite, like the root's hooks (see [`root`](super::root) for the reasons): the policy
//! answers at once, and a "waiting for the policy" state would only add a deadline and
//! races of its own. A panicking policy declines the invitation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{
    connect_error, frame_name, guarded, plan_fits, ConnError, ConnId, Conns, Machine, Output,
    Watch, MAX_TIMEOUT, MIN_TIMEOUT,
};
use crate::error::{Error, Result};
use crate::rooted::proto::{DataPlan, Frame};
use crate::rooted::{Decision, Invitation, LeafConfig, SessionEvent};
use crate::socket::Direction;
use crate::transport::Transport;

/// The session logic of one leaf.
#[derive(Debug)]
pub(crate) struct LeafCore {
    transport: Transport,
    config: LeafConfig,
    conns: Conns<State, LeafNote>,
    /// The connection that holds the leaf's one place: its join on the way, or its
    /// session.
    member: Option<ConnId>,
}

/// Where a connection stands.
#[derive(Debug)]
enum State {
    /// This leaf asked to join and waits for the connection to the root.
    Connecting { direction: Direction },
    /// This leaf asked to join; waiting for Admit or Refuse.
    Joining { direction: Direction },
    /// Accepted on the listener; waiting for the root's Invite.
    AwaitInvite,
    /// Accepted an invitation; waiting for Admit.
    Accepting { direction: Direction },
    /// In a session whose liveness timeout the root gave.
    InSession { timeout: Duration },
}

/// What a leaf's embedder is told, besides connection work.
#[derive(Debug)]
pub(crate) enum LeafNote {
    /// The root admitted this leaf on `conn`: hand the session to whoever waits for it
    /// (the join's caller, or whoever accepts invited sessions), and call
    /// [`LeafCore::handle_unclaimed`] if nobody takes it.
    Admitted { conn: ConnId, session: Admission },
    /// The join of [`LeafCore::handle_join`] failed.
    JoinFailed(Error),
    /// The session on `conn` ended: with the event that ended it, or `None` when this
    /// leaf left or closed.
    Ended {
        conn: ConnId,
        event: Option<SessionEvent>,
    },
}

/// What the root told an admitted leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admission {
    pub(crate) root: SocketAddr,
    pub(crate) session: [u8; 10],
    pub(crate) next_sequence: Option<u64>,
    pub(crate) plan: DataPlan,
    pub(crate) direction: Direction,
    pub(crate) timeout: Duration,
    pub(crate) invited: bool,
}

impl LeafCore {
    /// The logic of a leaf on `transport` (a rooted one).
    pub(crate) fn new(transport: Transport, config: LeafConfig) -> LeafCore {
        LeafCore {
            transport,
            config,
            conns: Conns::new(),
            member: None,
        }
    }

    /// Whether the leaf is in a session.
    pub(crate) fn in_session(&self) -> bool {
        self.member
            .and_then(|conn| self.conns.get(conn))
            .is_some_and(|c| matches!(c.state, State::InSession { .. }))
    }

    /// Asks the root listening at `root` to admit this leaf in `direction`. A
    /// [`Transmit::Connect`](super::Transmit::Connect) follows, and in time exactly one
    /// [`LeafNote::Admitted`] (not invited) or [`LeafNote::JoinFailed`].
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyJoined`] in a session, [`Error::JoinPending`] while a join is on
    /// its way; nothing is queued then.
    pub(crate) fn handle_join(
        &mut self,
        root: SocketAddr,
        direction: Direction,
        now: Instant,
    ) -> Result<()> {
        if self.member.is_some() {
            return Err(if self.in_session() {
                Error::AlreadyJoined
            } else {
                Error::JoinPending
            });
        }
        let conn = self.conns.open(root, State::Connecting { direction }, now);
        self.member = Some(conn);
        self.conns.connect(conn);
        Ok(())
    }

    /// Leaves the session on `conn`: the root is told and the connection closed. Nothing
    /// for a connection that is not in a session.
    pub(crate) fn handle_leave(&mut self, conn: ConnId) {
        if self.is_session(conn) {
            let leave = Frame::Leave {
                reason: "the leaf left".into(),
            };
            self.end(conn, Some(leave), None, None);
        }
    }

    /// Nobody took the session admitted on `conn` (the caller gave up waiting, or nobody
    /// accepted the invited session in time): leaves it at once.
    pub(crate) fn handle_unclaimed(&mut self, conn: ConnId) {
        if self.is_session(conn) {
            tracing::warn!("leaf: a session nobody took is left at once");
            let leave = Frame::Leave {
                reason: "the leaf did not take the session".into(),
            };
            let gone = SessionEvent::RootGone {
                reason: "nobody took the session".into(),
            };
            self.end(conn, Some(leave), None, Some(gone));
        }
    }

    fn is_session(&self, conn: ConnId) -> bool {
        self.conns
            .get(conn)
            .is_some_and(|c| matches!(c.state, State::InSession { .. }))
    }

    fn watch(&self) -> impl Fn(&State) -> Watch {
        let (join, connect) = (self.config.join_timeout, self.config.connect_timeout);
        move |state| match state {
            State::InSession { timeout } => Watch::Session(*timeout),
            State::Connecting { .. } => Watch::Pending(connect),
            State::Joining { .. } | State::AwaitInvite | State::Accepting { .. } => {
                Watch::Pending(join)
            }
        }
    }

    fn join_frame(&self, transport: Transport, direction: Direction) -> Frame {
        Frame::Join {
            transport,
            direction,
            data: self.config.data,
            name: self.config.name.clone(),
        }
    }

    fn invited(&mut self, conn: ConnId, transport: Transport, direction: Direction, now: Instant) {
        let Some(entry) = self.conns.get(conn) else {
            return;
        };
        let invitation = Invitation {
            root: entry.peer,
            transport,
            direction,
        };
        let decision = if transport != self.transport {
            Decision::Refuse(format!(
                "this leaf runs {}, the root invited it to {transport}",
                self.transport
            ))
        } else if transport == Transport::RootedUnicast && self.config.data.is_none() {
            Decision::Refuse("this leaf has no data address for rooted-unicast".into())
        } else if self.in_session() {
            Decision::Refuse("already a member of a session".into())
        } else if self.member.is_some() {
            Decision::Refuse("another join of this leaf is pending".into())
        } else {
            match &self.config.on_invite {
                Some(policy) => guarded(
                    || policy(&invitation),
                    Decision::Refuse("the leaf's invitation policy failed".into()),
                    "leaf: the invitation policy panicked; declining",
                ),
                None => Decision::Admit,
            }
        };
        match decision {
            Decision::Admit => {
                let join = self.join_frame(transport, direction);
                let Some(entry) = self.conns.get_mut(conn) else {
                    return;
                };
                entry.change(State::Accepting { direction }, now);
                self.member = Some(conn);
                self.conns.send(conn, join, now);
            }
            Decision::Refuse(reason) => self.end(conn, Some(Frame::Refuse { reason }), None, None),
        }
    }

    fn admitted(
        &mut self,
        conn: ConnId,
        session: [u8; 10],
        timeout_ms: u32,
        next_sequence: u64,
        plan: DataPlan,
        now: Instant,
    ) {
        if !plan_fits(&plan, self.transport) {
            let why = ConnError::Unexpected("a data plan for another transport");
            return self.handle_lost(conn, why);
        }
        // A timeout too short to keep up with, or absurdly long, is clamped.
        let timeout = Duration::from_millis(u64::from(timeout_ms)).clamp(MIN_TIMEOUT, MAX_TIMEOUT);
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        let (direction, invited) = match entry.state {
            State::Joining { direction } => (direction, false),
            State::Accepting { direction } => (direction, true),
            _ => return,
        };
        entry.change(State::InSession { timeout }, now);
        let session = Admission {
            root: entry.peer,
            session,
            next_sequence: (next_sequence != 0).then_some(next_sequence),
            plan,
            direction,
            timeout,
            invited,
        };
        self.conns.note(LeafNote::Admitted { conn, session });
    }

    /// Closes `conn` (sending `last` first, if given) and frees the leaf's place if it
    /// held it. A join on its way fails with `answer` (by default: the connection ended
    /// before an answer); a session ends with `event`.
    fn end(
        &mut self,
        conn: ConnId,
        last: Option<Frame>,
        answer: Option<Error>,
        event: Option<SessionEvent>,
    ) {
        let Some(closed) = self.conns.close(conn, last) else {
            return;
        };
        if self.member == Some(conn) {
            self.member = None;
        }
        match closed.state {
            State::Connecting { .. } | State::Joining { .. } => {
                let answer = answer.unwrap_or_else(|| Error::SessionGone {
                    peer: closed.peer,
                    reason: "the connection ended before an answer".into(),
                });
                self.conns.note(LeafNote::JoinFailed(answer));
            }
            State::InSession { .. } => self.conns.note(LeafNote::Ended { conn, event }),
            State::AwaitInvite | State::Accepting { .. } => {}
        }
    }
}

impl Machine for LeafCore {
    type Note = LeafNote;

    fn handle_accepted(&mut self, peer: SocketAddr, now: Instant) -> ConnId {
        self.conns.open(peer, State::AwaitInvite, now)
    }

    fn handle_connected(&mut self, conn: ConnId, now: Instant) {
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        let State::Connecting { direction } = entry.state else {
            return;
        };
        entry.change(State::Joining { direction }, now);
        let join = self.join_frame(self.transport, direction);
        self.conns.send(conn, join, now);
    }

    fn handle_frame(&mut self, conn: ConnId, frame: Frame, now: Instant) {
        let Some(entry) = self.conns.heard(conn, now) else {
            return;
        };
        let peer = entry.peer;
        match (&entry.state, frame) {
            (
                State::Joining { .. } | State::Accepting { .. },
                Frame::Admit {
                    session,
                    timeout_ms,
                    next_sequence,
                    plan,
                },
            ) => self.admitted(conn, session, timeout_ms, next_sequence, plan, now),
            (State::Joining { .. }, Frame::Refuse { reason }) => {
                self.end(conn, None, Some(Error::Refused { peer, reason }), None);
            }
            (State::Accepting { .. }, Frame::Refuse { reason }) => {
                tracing::info!(
                    "leaf: the root at {peer} refused the accepted invitation: {reason}"
                );
                self.end(conn, None, None, None);
            }
            (
                State::AwaitInvite,
                Frame::Invite {
                    transport,
                    direction,
                },
            ) => self.invited(conn, transport, direction, now),
            (State::InSession { .. }, Frame::End { reason }) => {
                self.end(conn, None, None, Some(SessionEvent::Ended { reason }));
            }
            (State::InSession { .. }, Frame::Leave { reason }) => {
                self.end(conn, None, None, Some(SessionEvent::Removed { reason }));
            }
            (_, Frame::Heartbeat) => {}
            (_, other) => self.handle_lost(conn, ConnError::Unexpected(frame_name(&other))),
        }
    }

    fn handle_lost(&mut self, conn: ConnId, why: ConnError) {
        let Some(entry) = self.conns.get(conn) else {
            return;
        };
        let peer = entry.peer;
        match entry.state {
            State::InSession { .. } => {
                let gone = SessionEvent::RootGone {
                    reason: why.to_string(),
                };
                self.end(conn, None, None, Some(gone));
            }
            State::Joining { .. } => {
                let answer = Error::SessionGone {
                    peer,
                    reason: why.to_string(),
                };
                self.end(conn, None, Some(answer), None);
            }
            State::Connecting { .. } => {
                let answer = connect_error("connecting to the root", peer, why);
                self.end(conn, None, Some(answer), None);
            }
            State::AwaitInvite | State::Accepting { .. } => self.end(conn, None, None, None),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let watch = self.watch();
        for conn in self.conns.tick(now, watch) {
            let Some(entry) = self.conns.get(conn) else {
                continue;
            };
            let peer = entry.peer;
            let (answer, event) = match entry.state {
                State::InSession { .. } => {
                    let gone = SessionEvent::RootGone {
                        reason: "nothing heard from the root within the timeout".into(),
                    };
                    (None, Some(gone))
                }
                State::Connecting { .. } => {
                    let what = "connecting to the root";
                    (Some(Error::TimedOut { what, peer }), None)
                }
                State::Joining { .. } | State::AwaitInvite | State::Accepting { .. } => {
                    let what = "waiting for the root's answer";
                    (Some(Error::TimedOut { what, peer }), None)
                }
            };
            self.end(conn, None, answer, event);
        }
    }

    /// Closes the leaf: every connection is told the leaf closed (a join still connecting
    /// fails with [`Error::SessionClosed`]). No connection is left after.
    fn handle_close(&mut self) {
        for conn in self.conns.ids() {
            if let Some(State::Connecting { .. }) = self.conns.get(conn).map(|c| &c.state) {
                self.end(conn, None, Some(Error::SessionClosed), None);
            } else {
                let leave = Frame::Leave {
                    reason: "the leaf closed".into(),
                };
                self.end(conn, Some(leave), None, None);
            }
        }
    }

    fn poll_output(&mut self) -> Option<Output<LeafNote>> {
        self.conns.poll()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.conns.deadline(self.watch())
    }
}
