//! What a leaf decides: its one join at a time, answering invitations, its session's
//! liveness and its end, as a state machine without I/O (see [the contract](super)).
//!
//! Besides the calls of [`Machine`](super::Machine), a [`LeafCore`] takes the leaf's commands:
//! [`handle_join`](LeafCore::handle_join), [`handle_leave`](LeafCore::handle_leave),
//! [`handle_unclaimed`](LeafCore::handle_unclaimed) and
//! [`handle_close`](super::Machine::handle_close). Its [`LeafNote`]s hand out admissions,
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
//!
//! # Authentication
//!
//! A leaf with a [key](crate::rooted::LeafConfig::key) answers the root's Challenge with
//! its Proof ([`State::Proving`]) and takes an Admit only after a RootProof that matches
//! it; an Admit without one fails the join with [`Error::AuthenticationFailed`] and the
//! leaf leaves. A leaf without a key declines a Challenge with a Refuse and waits for the
//! root's refusal (`authentication failed`), so that the join fails with the root's
//! word. Its nonce comes from the core's [`Nonces`], as the root's does. The exchange is
//! in [`auth`](crate::rooted::auth).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{
    connect_error, guarded, plan_fits, ConnError, ConnId, Conns, Rules, Watch, MAX_TIMEOUT,
    MIN_TIMEOUT,
};
use crate::error::{Error, Result};
use crate::rooted::auth::{Nonce, Nonces, Tag, Transcript};
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
    /// Where the proofs' nonces come from.
    nonces: Nonces,
}

/// Where a connection stands.
#[derive(Debug)]
pub(crate) enum State {
    /// This leaf asked to join and waits for the connection to the root.
    Connecting { direction: Direction },
    /// This leaf asked to join; waiting for Admit or Refuse.
    Joining { direction: Direction },
    /// Accepted on the listener; waiting for the root's Invite.
    AwaitInvite,
    /// Accepted an invitation; waiting for Admit.
    Accepting { direction: Direction },
    /// Answered the root's Challenge (asked, or an invitation accepted: `invited`);
    /// waiting for its RootProof (`root_proof`, once it came) and Admit, or a Refuse.
    Proving {
        direction: Direction,
        invited: bool,
        transcript: Box<Transcript>,
        root_proof: Option<Tag>,
    },
    /// In a session whose liveness timeout the root gave.
    InSession { timeout: Duration },
}

impl State {
    /// Whether a join this leaf asked for waits in this state (a failure is the
    /// caller's answer; an invitation's failure is nobody's).
    fn asked(&self) -> bool {
        matches!(
            self,
            State::Connecting { .. }
                | State::Joining { .. }
                | State::Proving { invited: false, .. }
        )
    }
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
            nonces: Nonces::os(),
        }
    }

    /// The same leaf, drawing its nonces from `nonces` (tests: a counter).
    pub(crate) fn with_nonces(mut self, nonces: Nonces) -> LeafCore {
        self.nonces = nonces;
        self
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
        self.member = Some(self.conns.dial(root, State::Connecting { direction }, now));
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

    /// The connection that holds the leaf's place, if one does.
    #[cfg(test)]
    pub(crate) fn member_conn(&self) -> Option<ConnId> {
        self.member
    }

    fn is_session(&self, conn: ConnId) -> bool {
        self.conns
            .get(conn)
            .is_some_and(|c| matches!(c.state, State::InSession { .. }))
    }

    fn invited(&mut self, conn: ConnId, invitation: Invitation, now: Instant) {
        let Invitation {
            transport,
            direction,
            ..
        } = invitation;
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
                let join = join_frame(transport, direction, self.config.data, &self.config.name);
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

    /// The root's Challenge on `conn`, joining (or accepting) in `direction`: with a key,
    /// proves it; without, declines and waits for the root's refusal.
    fn challenged(
        &mut self,
        conn: ConnId,
        direction: Direction,
        invited: bool,
        root_nonce: Nonce,
        now: Instant,
    ) {
        let Some(key) = &self.config.key else {
            let decline = Frame::Refuse {
                reason: "this leaf has no pre-shared key to prove".into(),
            };
            return self.conns.send(conn, decline, now);
        };
        let join = join_frame(
            self.transport,
            direction,
            self.config.data,
            &self.config.name,
        );
        let proof = self.nonces.draw().and_then(|leaf_nonce| {
            let transcript = Transcript::new(root_nonce, leaf_nonce, &join)?;
            let mac = transcript.leaf_proof(key)?;
            Some((transcript, leaf_nonce, mac))
        });
        let Some((transcript, nonce, mac)) = proof else {
            let why = ConnError::Unexpected("Challenge: this leaf could not draw a random nonce");
            if let Some(peer) = self.conns.peer(conn) {
                self.lost(conn, peer, why);
            }
            return;
        };
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        let proving = State::Proving {
            direction,
            invited,
            transcript: Box::new(transcript),
            root_proof: None,
        };
        entry.change(proving, now);
        self.conns.send(conn, Frame::Proof { nonce, mac }, now);
    }

    /// An Admit on `conn` (a connection waiting for one): checks the root's proof if this
    /// leaf has a key, then takes the admission.
    fn admit_frame(&mut self, conn: ConnId, peer: SocketAddr, admit: Frame, now: Instant) {
        let Frame::Admit {
            session,
            timeout_ms,
            next_sequence,
            plan,
        } = &admit
        else {
            return;
        };
        if !plan_fits(plan, self.transport) {
            let why = ConnError::Unexpected("a data plan for another transport");
            return self.lost(conn, peer, why);
        }
        if let Some(key) = &self.config.key {
            let why = match self.conns.get(conn).map(|c| &c.state) {
                Some(State::Proving {
                    transcript,
                    root_proof: Some(mac),
                    ..
                }) if transcript.root_proves(key, &admit, mac) => None,
                Some(State::Proving {
                    root_proof: Some(_),
                    ..
                }) => Some(
                    "gave a proof that does not match this leaf's key and nonce: the keys differ, \
                     or the exchange was replayed or altered on the way",
                ),
                Some(State::Proving { .. }) => Some("admitted this leaf without proving the key"),
                _ => Some(
                    "asked no proof of the pre-shared key: it runs without one (--key-file), \
                     or is not the root meant",
                ),
            };
            if let Some(why) = why {
                tracing::warn!("leaf: authentication failed: the root at {peer} {why}");
                let leave = Frame::Leave {
                    reason: crate::rooted::AUTH_FAILED.into(),
                };
                let answer = Error::AuthenticationFailed { peer, why };
                return self.end(conn, Some(leave), Some(answer), None);
            }
        }
        let (session, timeout_ms, next_sequence) = (*session, *timeout_ms, *next_sequence);
        let Frame::Admit { plan, .. } = admit else {
            return;
        };
        self.admitted(conn, session, timeout_ms, next_sequence, plan, now);
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
        // A timeout too short to keep up with, or absurdly long, is clamped.
        let timeout = Duration::from_millis(u64::from(timeout_ms)).clamp(MIN_TIMEOUT, MAX_TIMEOUT);
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        let (direction, invited) = match entry.state {
            State::Joining { direction } => (direction, false),
            State::Accepting { direction } => (direction, true),
            State::Proving {
                direction, invited, ..
            } => (direction, invited),
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
            ref state if state.asked() => {
                let answer = answer.unwrap_or_else(|| Error::SessionGone {
                    peer: closed.peer,
                    reason: "the connection ended before an answer".into(),
                });
                self.conns.note(LeafNote::JoinFailed(answer));
            }
            State::InSession { .. } => self.conns.note(LeafNote::Ended { conn, event }),
            State::Connecting { .. }
            | State::Joining { .. }
            | State::Proving { .. }
            | State::AwaitInvite
            | State::Accepting { .. } => {}
        }
    }
}

/// The Join this leaf asks (or accepts) with.
fn join_frame(
    transport: Transport,
    direction: Direction,
    data: Option<SocketAddr>,
    name: &str,
) -> Frame {
    Frame::Join {
        transport,
        direction,
        data,
        name: name.to_owned(),
    }
}

impl Rules for LeafCore {
    type State = State;
    type Note = LeafNote;
    const ACCEPTED: State = State::AwaitInvite;

    fn conns(&self) -> &Conns<State, LeafNote> {
        &self.conns
    }

    fn conns_mut(&mut self) -> &mut Conns<State, LeafNote> {
        &mut self.conns
    }

    fn watch(&self) -> impl Fn(&State) -> Watch + 'static {
        let (join, connect) = (self.config.join_timeout, self.config.connect_timeout);
        move |state| match state {
            State::InSession { timeout } => Watch::Session(*timeout),
            State::Connecting { .. } => Watch::Pending(connect),
            State::Joining { .. }
            | State::AwaitInvite
            | State::Accepting { .. }
            | State::Proving { .. } => Watch::Pending(join),
        }
    }

    fn opened(&self, state: &State) -> Option<(State, Frame)> {
        let State::Connecting { direction } = *state else {
            return None;
        };
        let join = join_frame(
            self.transport,
            direction,
            self.config.data,
            &self.config.name,
        );
        Some((State::Joining { direction }, join))
    }

    fn frame(&mut self, conn: ConnId, peer: SocketAddr, frame: Frame, now: Instant) -> bool {
        let Some(entry) = self.conns.get(conn) else {
            return true;
        };
        match (&entry.state, frame) {
            (
                State::Joining { .. } | State::Accepting { .. } | State::Proving { .. },
                admit @ Frame::Admit { .. },
            ) => self.admit_frame(conn, peer, admit, now),
            (State::Joining { direction }, Frame::Challenge { nonce }) => {
                let direction = *direction;
                self.challenged(conn, direction, false, nonce, now);
            }
            (State::Accepting { direction }, Frame::Challenge { nonce }) => {
                let direction = *direction;
                self.challenged(conn, direction, true, nonce, now);
            }
            (
                State::Proving {
                    root_proof: None, ..
                },
                Frame::RootProof { mac },
            ) => {
                if let Some(State::Proving { root_proof, .. }) =
                    self.conns.get_mut(conn).map(|c| &mut c.state)
                {
                    *root_proof = Some(mac);
                }
            }
            (
                State::Joining { .. } | State::Proving { invited: false, .. },
                Frame::Refuse { reason },
            ) => {
                self.end(conn, None, Some(Error::Refused { peer, reason }), None);
            }
            (
                State::Accepting { .. } | State::Proving { invited: true, .. },
                Frame::Refuse { reason },
            ) => {
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
            ) => {
                let invitation = Invitation {
                    root: peer,
                    transport,
                    direction,
                };
                self.invited(conn, invitation, now);
            }
            (State::InSession { .. }, Frame::End { reason }) => {
                self.end(conn, None, None, Some(SessionEvent::Ended { reason }));
            }
            (State::InSession { .. }, Frame::Leave { reason }) => {
                self.end(conn, None, None, Some(SessionEvent::Removed { reason }));
            }
            _ => return false,
        }
        true
    }

    fn lost(&mut self, conn: ConnId, peer: SocketAddr, why: ConnError) {
        let (answer, event) = match self.conns.get(conn).map(|c| &c.state) {
            Some(State::InSession { .. }) => {
                let reason = why.to_string();
                (None, Some(SessionEvent::RootGone { reason }))
            }
            Some(State::Joining { .. } | State::Proving { .. }) => {
                let reason = why.to_string();
                (Some(Error::SessionGone { peer, reason }), None)
            }
            Some(State::Connecting { .. }) => (
                Some(connect_error("connecting to the root", peer, why)),
                None,
            ),
            Some(State::AwaitInvite | State::Accepting { .. }) | None => (None, None),
        };
        self.end(conn, None, answer, event);
    }

    fn expired(&mut self, conn: ConnId, peer: SocketAddr) {
        let (answer, event) = match self.conns.get(conn).map(|c| &c.state) {
            Some(State::InSession { .. }) => {
                let reason = "nothing heard from the root within the timeout".into();
                (None, Some(SessionEvent::RootGone { reason }))
            }
            Some(State::Connecting { .. }) => {
                let what = "connecting to the root";
                (Some(Error::TimedOut { what, peer }), None)
            }
            Some(_) | None => {
                let what = "waiting for the root's answer";
                (Some(Error::TimedOut { what, peer }), None)
            }
        };
        self.end(conn, None, answer, event);
    }

    /// Closes the leaf: every connection is told the leaf closed (a join still connecting
    /// fails with [`Error::SessionClosed`]). No connection is left after.
    fn close(&mut self) {
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Arc;

    use super::super::sim::{
        bring_up, closes, drain, frames_on, invite, leaf_config, ms, notes, unicast_plan, ROOT_AT,
    };
    use super::super::{Machine, Output};
    use super::*;

    fn leaf_core(config: LeafConfig) -> LeafCore {
        LeafCore::new(Transport::RootedUnicast, config)
    }

    fn admit(timeout_ms: u32, plan: DataPlan) -> Frame {
        Frame::Admit {
            session: *b"SIMULATED1",
            timeout_ms,
            next_sequence: 0,
            plan,
        }
    }

    /// A leaf whose join reached the root at `t0` (connected, Join sent); outputs taken.
    fn joining(t0: Instant) -> (LeafCore, ConnId) {
        let mut leaf = leaf_core(leaf_config(0));
        leaf.handle_join(ROOT_AT, Direction::ReceiverOnly, t0)
            .unwrap();
        let (conn, _) = bring_up(&mut leaf, ROOT_AT, t0);
        (leaf, conn)
    }

    /// A leaf in a session with `timeout_ms`, admitted at `t0`; outputs taken.
    fn in_session(timeout_ms: u32, t0: Instant) -> (LeafCore, ConnId) {
        let (mut leaf, conn) = joining(t0);
        leaf.handle_frame(conn, admit(timeout_ms, unicast_plan()), t0);
        drain(&mut leaf);
        (leaf, conn)
    }

    /// A leaf in a session that `leave` leaves: the leaf, its connection and its outputs.
    fn left_by(
        leave: impl FnOnce(&mut LeafCore, ConnId),
    ) -> (LeafCore, ConnId, Vec<Output<LeafNote>>) {
        let (mut leaf, conn) = in_session(3000, Instant::now());
        leave(&mut leaf, conn);
        let out = drain(&mut leaf);
        (leaf, conn, out)
    }

    /// The one note of `leaf`'s outputs.
    fn note(leaf: &mut LeafCore) -> LeafNote {
        let mut notes = notes(drain(leaf));
        assert_eq!(notes.len(), 1, "{notes:?}");
        notes.remove(0)
    }

    #[test]
    fn a_join_connects_then_asks_with_the_leafs_name_and_data_address() {
        let t0 = Instant::now();
        let mut leaf = leaf_core(leaf_config(0));
        leaf.handle_join(ROOT_AT, Direction::Both, t0).unwrap();
        let (conn, out) = bring_up(&mut leaf, ROOT_AT, t0);
        assert_eq!(
            frames_on(&out, conn),
            [&Frame::Join {
                transport: Transport::RootedUnicast,
                direction: Direction::Both,
                data: leaf_config(0).data,
                name: "leaf-0".into(),
            }]
        );
    }

    #[test]
    fn a_second_join_is_pending_and_a_member_is_already_joined() {
        let t0 = Instant::now();
        let (mut leaf, conn) = joining(t0);
        assert!(matches!(
            leaf.handle_join(ROOT_AT, Direction::Both, t0),
            Err(Error::JoinPending)
        ));
        leaf.handle_frame(conn, admit(3000, unicast_plan()), t0);
        assert!(leaf.in_session());
        assert!(matches!(
            leaf.handle_join(ROOT_AT, Direction::Both, t0),
            Err(Error::AlreadyJoined)
        ));
    }

    #[test]
    fn an_admit_hands_out_what_the_root_said() {
        let t0 = Instant::now();
        let (mut leaf, conn) = joining(t0);
        let frame = Frame::Admit {
            session: *b"SIMULATED1",
            timeout_ms: 1500,
            next_sequence: 77,
            plan: unicast_plan(),
        };
        leaf.handle_frame(conn, frame, t0);
        match note(&mut leaf) {
            LeafNote::Admitted { conn: c, session } => {
                assert_eq!(c, conn);
                assert_eq!(session.next_sequence, Some(77));
                assert_eq!(session.timeout, ms(1500));
                assert_eq!(session.direction, Direction::ReceiverOnly);
                assert!(!session.invited);
            }
            other => panic!("expected an admission: {other:?}"),
        }
    }

    #[test]
    fn a_timeout_too_short_or_too_long_is_clamped() {
        let t0 = Instant::now();
        for (given, kept) in [(1, MIN_TIMEOUT), (u32::MAX, MAX_TIMEOUT)] {
            let (mut leaf, conn) = joining(t0);
            leaf.handle_frame(conn, admit(given, unicast_plan()), t0);
            assert!(matches!(
                note(&mut leaf),
                LeafNote::Admitted { session, .. } if session.timeout == kept
            ));
        }
    }

    #[test]
    fn a_plan_for_another_transport_ends_the_join() {
        let t0 = Instant::now();
        let (mut leaf, conn) = joining(t0);
        let plan = DataPlan::Multicast {
            group: "232.1.1.1:5000".parse().unwrap(),
            source: "10.0.0.1".parse().unwrap(),
        };
        leaf.handle_frame(conn, admit(3000, plan), t0);
        let out = drain(&mut leaf);
        assert!(closes(&out, conn));
        assert!(matches!(
            notes(out).as_slice(),
            [LeafNote::JoinFailed(Error::SessionGone { reason, .. })] if reason.contains("another transport")
        ));
        assert!(!leaf.in_session());
    }

    #[test]
    fn a_join_fails_as_its_connection_fails_or_times_out() {
        let t0 = Instant::now();
        let mut leaf = leaf_core(leaf_config(0));
        leaf.handle_join(ROOT_AT, Direction::Both, t0).unwrap();
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        leaf.handle_lost(ConnId(0), ConnError::Io(refused));
        assert!(matches!(
            note(&mut leaf),
            LeafNote::JoinFailed(Error::OsAt {
                op: "connecting to the root",
                addr: ROOT_AT,
                ..
            })
        ));

        // leaf_config connects within 1 s.
        leaf.handle_join(ROOT_AT, Direction::Both, t0).unwrap();
        drain(&mut leaf);
        leaf.handle_timeout(t0 + ms(999));
        assert!(drain(&mut leaf).is_empty());
        leaf.handle_timeout(t0 + ms(1000));
        assert!(matches!(
            note(&mut leaf),
            LeafNote::JoinFailed(Error::TimedOut {
                what: "connecting to the root",
                ..
            })
        ));

        let (mut leaf, conn) = joining(t0);
        leaf.handle_lost(conn, ConnError::Closed);
        assert!(matches!(
            note(&mut leaf),
            LeafNote::JoinFailed(Error::SessionGone { reason, .. }) if reason.contains("closed")
        ));
    }

    #[test]
    fn invitations_the_leaf_cannot_take_are_declined_with_the_reason() {
        let t0 = Instant::now();
        let mut no_data = leaf_config(0);
        no_data.data = None;
        let mut broken = leaf_config(0);
        broken.on_invite = Some(Arc::new(|_: &Invitation| panic!("the policy panicked")));
        let admitted = LeafCore::new(Transport::AdmittedMulticast, leaf_config(0));
        let cases = [
            (admitted, "this leaf runs admitted-multicast"),
            (leaf_core(no_data), "no data address"),
            (leaf_core(broken), "invitation policy failed"),
        ];
        for (mut leaf, reason) in cases {
            let conn = leaf.handle_accepted(ROOT_AT, t0);
            leaf.handle_frame(conn, invite(Direction::Both), t0);
            let out = drain(&mut leaf);
            assert!(
                matches!(frames_on(&out, conn).as_slice(), [Frame::Refuse { reason: r }] if r.contains(reason)),
                "{reason}: {out:?}"
            );
            assert!(closes(&out, conn));
            assert!(
                leaf.handle_join(ROOT_AT, Direction::Both, t0).is_ok(),
                "the place is free"
            );
        }
    }

    #[test]
    fn an_accepted_invitation_holds_the_place_until_the_root_answers() {
        let t0 = Instant::now();
        let mut leaf = leaf_core(leaf_config(0));
        let conn = leaf.handle_accepted(ROOT_AT, t0);
        leaf.handle_frame(conn, invite(Direction::SenderOnly), t0);
        let out = drain(&mut leaf);
        assert!(matches!(
            frames_on(&out, conn).as_slice(),
            [Frame::Join {
                direction: Direction::SenderOnly,
                ..
            }]
        ));
        assert!(matches!(
            leaf.handle_join(ROOT_AT, Direction::Both, t0),
            Err(Error::JoinPending)
        ));
        // The root refuses after all: the place is free, and nobody waited.
        let refuse = Frame::Refuse {
            reason: "changed its mind".into(),
        };
        leaf.handle_frame(conn, refuse, t0);
        let out = drain(&mut leaf);
        assert!(closes(&out, conn));
        assert!(notes(out).is_empty());
        assert!(leaf.handle_join(ROOT_AT, Direction::Both, t0).is_ok());
    }

    #[test]
    fn the_roots_end_and_leave_end_the_session_with_their_reason() {
        let t0 = Instant::now();
        let cases = [
            (
                Frame::End {
                    reason: "over".into(),
                },
                SessionEvent::Ended {
                    reason: "over".into(),
                },
            ),
            (
                Frame::Leave {
                    reason: "out".into(),
                },
                SessionEvent::Removed {
                    reason: "out".into(),
                },
            ),
        ];
        for (frame, event) in cases {
            let (mut leaf, conn) = in_session(3000, t0);
            leaf.handle_frame(conn, frame, t0);
            assert!(matches!(
                note(&mut leaf),
                LeafNote::Ended { conn: c, event: Some(e) } if c == conn && e == event
            ));
            assert!(!leaf.in_session());
        }
    }

    #[test]
    fn leaving_tells_the_root_and_ends_without_an_event() {
        let (mut leaf, conn, out) = left_by(LeafCore::handle_leave);
        assert!(matches!(
            frames_on(&out, conn).as_slice(),
            [Frame::Leave { reason }] if reason == "the leaf left"
        ));
        assert!(matches!(
            notes(out).as_slice(),
            [LeafNote::Ended { event: None, .. }]
        ));
        assert!(!leaf.in_session());
        leaf.handle_leave(conn);
        assert!(drain(&mut leaf).is_empty(), "leaving twice does nothing");
    }

    #[test]
    fn a_session_heartbeats_and_notices_a_silent_root() {
        let t0 = Instant::now();
        let (mut leaf, conn) = in_session(300, t0);
        // The Join went out at t0: the first heartbeat is due a third of the timeout on.
        assert_eq!(leaf.poll_timeout(), Some(t0 + ms(100)));
        leaf.handle_timeout(t0 + ms(100));
        assert_eq!(frames_on(&drain(&mut leaf), conn), [&Frame::Heartbeat]);
        leaf.handle_timeout(t0 + ms(299));
        assert!(notes(drain(&mut leaf)).is_empty());
        leaf.handle_timeout(t0 + ms(300));
        assert!(matches!(
            note(&mut leaf),
            LeafNote::Ended {
                event: Some(SessionEvent::RootGone { .. }),
                ..
            }
        ));
    }

    #[test]
    fn an_unclaimed_session_is_left_at_once() {
        let (leaf, conn, out) = left_by(LeafCore::handle_unclaimed);
        assert!(matches!(
            frames_on(&out, conn).as_slice(),
            [Frame::Leave { reason }] if reason == "the leaf did not take the session"
        ));
        assert!(!leaf.in_session());
    }

    #[test]
    fn limits_too_long_to_reach_are_never_reached() {
        let t0 = Instant::now();
        let mut patient = leaf_config(0);
        patient.connect_timeout = Duration::MAX;
        patient.join_timeout = Duration::MAX;
        let mut leaf = leaf_core(patient);
        leaf.handle_join(ROOT_AT, Direction::Both, t0).unwrap();
        assert_eq!(leaf.poll_timeout(), None);
        leaf.handle_timeout(t0 + Duration::from_secs(1_000_000));
        assert!(notes(drain(&mut leaf)).is_empty(), "still waiting");
    }

    #[test]
    fn closing_leaves_the_session_and_fails_a_join_on_its_way() {
        let t0 = Instant::now();
        let (mut leaf, session) = in_session(3000, t0);
        let invited = leaf.handle_accepted(ROOT_AT, t0);
        leaf.handle_close();
        let out = drain(&mut leaf);
        for conn in [session, invited] {
            assert!(matches!(
                frames_on(&out, conn).as_slice(),
                [Frame::Leave { reason }] if reason == "the leaf closed"
            ));
        }
        assert_eq!(leaf.poll_timeout(), None);

        let mut connecting = leaf_core(leaf_config(0));
        connecting
            .handle_join(ROOT_AT, Direction::Both, t0)
            .unwrap();
        connecting.handle_close();
        assert!(matches!(
            notes(drain(&mut connecting)).as_slice(),
            [LeafNote::JoinFailed(Error::SessionClosed)]
        ));
    }
}
