//! What a root decides: admissions and refusals, invitations, removals, leaf liveness
//! and the end of the session, as a state machine without I/O (see [the contract](super)).
//!
//! Besides the calls of [`Machine`](super::Machine), a [`RootCore`] takes the root's commands:
//! [`handle_invite`](RootCore::handle_invite), [`handle_remove`](RootCore::handle_remove),
//! [`handle_unclaimed`](RootCore::handle_unclaimed) and
//! [`handle_close`](super::Machine::handle_close). Its [`RootNote`]s list admitted leaves,
//! report what happened to them ([`Event`]) and answer the pending invitation.
//!
//! # Hooks are calls, not outputs
//!
//! The [`RootHooks`] are called from inside the `handle_*` call that needs them, not
//! returned as "decide this" outputs. Admission, the data plan and the first sequence
//! number are answered at once, on the thread that runs the core, exactly once per join,
//! and nothing else can happen on that connection until they are: as calls, a join is
//! decided within the `handle_frame` that brought it and the states stay those of the
//! protocol. As outputs, every join would need a "waiting for the embedder" state with a
//! deadline of its own and races against a Leave or a close in the meantime, for no
//! behaviour anyone could ask for. The core stays deterministic for deterministic hooks,
//! and a test passes hooks as plain values. A panicking hook is caught: in `admit` or
//! `on_join` it refuses the leaf, in `next_sequence` it gives 0, in `on_gone` it is logged.
//!
//! # Authentication comes first
//!
//! A root with a [key](crate::rooted::RootConfig::key) challenges every Join before
//! anything else is checked or asked ([`State::AwaitProof`]): a leaf that does not prove
//! the key learns only [`AUTH_FAILED`], and the hooks never hear of it. The nonce comes
//! from the core's [`Nonces`] (the OS's generator; a counter in tests), the one input
//! besides frames, commands and the time. The exchange is in
//! [`auth`](crate::rooted::auth).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::{connect_error, guarded, plan_fits, ConnError, ConnId, Conns, Rules, Watch};
use crate::error::{Error, Result};
use crate::rooted::auth::{Nonce, Nonces, Tag, Transcript, AUTH_FAILED};
use crate::rooted::proto::{DataPlan, Frame};
use crate::rooted::{Decision, JoinRequest, LeafId, RootConfig, RootHooks};
use crate::socket::Direction;
use crate::transport::Transport;

/// The session logic of one root.
pub(crate) struct RootCore {
    transport: Transport,
    config: RootConfig,
    hooks: Box<dyn RootHooks>,
    conns: Conns<State, RootNote>,
    next_leaf: u64,
    /// The admitted leaves and their connections.
    leaves: BTreeMap<LeafId, ConnId>,
    /// The connection of the one invitation waiting for its answer.
    inviting: Option<ConnId>,
    /// Where the challenges' nonces come from.
    nonces: Nonces,
}

/// Where a connection stands.
#[derive(Debug)]
pub(crate) enum State {
    /// The root invites a leaf and waits for the connection to it.
    Connecting { direction: Direction },
    /// Accepted on the listener; waiting for the leaf's Join.
    AwaitJoin,
    /// The root invited the leaf; waiting for its Join (accept) or Refuse (decline).
    Invited { direction: Direction },
    /// The root has a key and challenged the leaf's Join; waiting for its Proof.
    AwaitProof(Box<Challenged>),
    /// The leaf proved the key and its Join is being decided (only within the
    /// `handle_frame` that brought the proof).
    Proved {
        transcript: Box<Transcript>,
        invited: Option<Direction>,
    },
    /// An admitted leaf.
    Joined(LeafId),
}

/// A Join the root challenged, kept until the leaf's proof.
#[derive(Debug)]
pub(crate) struct Challenged {
    /// The root's nonce in the Challenge.
    nonce: Nonce,
    transport: Transport,
    request: JoinRequest,
    /// The direction the leaf was invited in, if the root invited it.
    invited: Option<Direction>,
}

/// The direction the leaf on a connection in `state` was invited in, if the root invited
/// it and waits for the answer.
fn invitation(state: &State) -> Option<Direction> {
    match state {
        State::Invited { direction } => Some(*direction),
        State::AwaitProof(challenged) => challenged.invited,
        State::Proved { invited, .. } => *invited,
        State::Connecting { .. } | State::AwaitJoin | State::Joined(_) => None,
    }
}

/// What a root's embedder is told, besides connection work.
#[derive(Debug)]
pub(crate) enum RootNote {
    /// A leaf is admitted: list it now, for the next output tells the leaf it is in.
    Listed(AdmittedLeaf),
    /// Something happened to a leaf (the embedder's [`RootEvent`](crate::rooted::RootEvent)).
    Event(Event),
    /// The answer to the invitation of [`RootCore::handle_invite`]: the leaf admitted, or
    /// why not.
    Invited(Result<LeafId>),
}

/// A leaf the root admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdmittedLeaf {
    pub(crate) id: LeafId,
    pub(crate) request: JoinRequest,
    /// The plan it was told.
    pub(crate) plan: DataPlan,
}

/// What happened to a leaf, as [`RootEvent`](crate::rooted::RootEvent) says it, with the
/// leaf named by its id. A leaf the root listed is no longer in the session after any
/// event but `Joined`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Joined(LeafId),
    Refused { peer: SocketAddr, reason: String },
    Left { leaf: LeafId, reason: String },
    TimedOut { leaf: LeafId },
    Removed { leaf: LeafId },
}

impl RootCore {
    /// The logic of a root on `transport` (a rooted one), deciding with `hooks`.
    pub(crate) fn new(
        transport: Transport,
        config: RootConfig,
        hooks: Box<dyn RootHooks>,
    ) -> RootCore {
        RootCore {
            transport,
            config,
            hooks,
            conns: Conns::new(),
            next_leaf: 0,
            leaves: BTreeMap::new(),
            inviting: None,
            nonces: Nonces::os(),
        }
    }

    /// The same root, drawing its nonces from `nonces` (tests: a counter).
    #[cfg(test)]
    pub(crate) fn with_nonces(mut self, nonces: Nonces) -> RootCore {
        self.nonces = nonces;
        self
    }

    /// Invites the leaf listening at `peer` to join in `direction`. A
    /// [`Transmit::Connect`](super::Transmit::Connect) follows, and in time exactly one
    /// [`RootNote::Invited`].
    ///
    /// # Errors
    ///
    /// [`Error::JoinPending`] while another invitation waits for its answer; nothing is
    /// queued then.
    pub(crate) fn handle_invite(
        &mut self,
        peer: SocketAddr,
        direction: Direction,
        now: Instant,
    ) -> Result<()> {
        if self.inviting.is_some() {
            return Err(Error::JoinPending);
        }
        self.inviting = Some(self.conns.dial(peer, State::Connecting { direction }, now));
        Ok(())
    }

    /// Removes `leaf`: it is told, its connection closed, [`RootHooks::on_gone`] called,
    /// and [`Event::Removed`] queued.
    ///
    /// # Errors
    ///
    /// [`Error::LeafGone`] if the leaf is not in the session.
    pub(crate) fn handle_remove(&mut self, leaf: LeafId) -> Result<()> {
        let Some(&conn) = self.leaves.get(&leaf) else {
            return Err(Error::LeafGone { leaf: leaf.0 });
        };
        let leave = Frame::Leave {
            reason: "removed by the root".into(),
        };
        self.close_leaf(conn, Some(leave), |leaf| Event::Removed { leaf });
        Ok(())
    }

    /// Nobody took the answer that admitted the invited `leaf` (the inviter stopped
    /// waiting and was told it timed out): takes the leaf out again, as a removal.
    pub(crate) fn handle_unclaimed(&mut self, leaf: LeafId) {
        if let Some(&conn) = self.leaves.get(&leaf) {
            let leave = Frame::Leave {
                reason: "the root gave up waiting for the invitation's answer".into(),
            };
            self.close_leaf(conn, Some(leave), |leaf| Event::Removed { leaf });
        }
    }

    /// How many leaves are in the session.
    #[cfg(test)]
    pub(crate) fn leaf_count(&self) -> usize {
        self.leaves.len()
    }

    /// A Join on `conn`, in answer to an invitation in `invited` direction or, with
    /// `None`, asked by the leaf.
    fn join(
        &mut self,
        conn: ConnId,
        transport: Transport,
        request: JoinRequest,
        invited: Option<Direction>,
        now: Instant,
    ) {
        let peer = request.peer;
        if let Err(reason) = self.check_request(transport, &request) {
            return self.refuse(conn, peer, reason);
        }
        let decision = match invited {
            Some(asked) if asked != request.direction => Decision::Refuse(format!(
                "the leaf accepted as {:?} but was invited as {asked:?}",
                request.direction
            )),
            // The root asked the leaf itself: no admission to decide.
            Some(_) => Decision::Admit,
            None => {
                let hooks = &mut self.hooks;
                guarded(
                    || hooks.admit(&request),
                    Decision::Refuse("the root's admission hook failed".into()),
                    "root: the admission hook panicked; the leaf is refused",
                )
            }
        };
        match decision {
            Decision::Admit => self.admit(conn, request, now),
            Decision::Refuse(reason) => self.refuse(conn, peer, reason),
        }
    }

    /// A Join on `conn` to a root with a key: challenges the leaf, keeping the Join until
    /// its proof.
    fn challenge(
        &mut self,
        conn: ConnId,
        transport: Transport,
        request: JoinRequest,
        invited: Option<Direction>,
        now: Instant,
    ) {
        let Some(nonce) = self.nonces.draw() else {
            let reason = "the root could not draw a random nonce to challenge the leaf with";
            return self.refuse(conn, request.peer, reason.into());
        };
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        let challenged = Challenged {
            nonce,
            transport,
            request,
            invited,
        };
        entry.change(State::AwaitProof(Box::new(challenged)), now);
        self.conns.send(conn, Frame::Challenge { nonce }, now);
    }

    /// The leaf's Proof on `conn`, challenged: admission goes on if it proves the key,
    /// otherwise the leaf is refused with [`AUTH_FAILED`].
    fn proof(&mut self, conn: ConnId, leaf_nonce: Nonce, mac: Tag, now: Instant) {
        let Some(State::AwaitProof(challenged)) = self.conns.get(conn).map(|c| &c.state) else {
            return;
        };
        let join = Frame::Join {
            transport: challenged.transport,
            direction: challenged.request.direction,
            data: challenged.request.data,
            name: challenged.request.name.clone(),
        };
        let (peer, invited) = (challenged.request.peer, challenged.invited);
        let transcript = Transcript::new(challenged.nonce, leaf_nonce, &join);
        let proved = match (&self.config.key, transcript) {
            (Some(key), Some(t)) if t.leaf_proves(key, &mac) => t,
            _ => return self.refuse(conn, peer, AUTH_FAILED.into()),
        };
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        let proved = State::Proved {
            transcript: Box::new(proved),
            invited,
        };
        if let State::AwaitProof(challenged) = entry.change(proved, now) {
            let Challenged {
                transport, request, ..
            } = *challenged;
            self.join(conn, transport, request, invited, now);
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
        if self.leaves.len() >= self.config.max_leaves {
            return Err(format!(
                "the session is full ({} leaves)",
                self.config.max_leaves
            ));
        }
        Ok(())
    }

    fn refuse(&mut self, conn: ConnId, peer: SocketAddr, reason: String) {
        let last = Frame::Refuse {
            reason: reason.clone(),
        };
        if let Some(closed) = self.conns.close(conn, Some(last)) {
            if invitation(&closed.state).is_some() {
                self.answer_invite(Err(Error::Refused {
                    peer,
                    reason: reason.clone(),
                }));
            }
        }
        self.conns
            .note(RootNote::Event(Event::Refused { peer, reason }));
    }

    fn admit(&mut self, conn: ConnId, request: JoinRequest, now: Instant) {
        let id = LeafId(self.next_leaf);
        self.next_leaf += 1;
        let hooks = &mut self.hooks;
        let default = self.config.plan.as_ref();
        let plan = guarded(
            || hooks.on_join(id, &request, default),
            Err("the root failed to set up the leaf's data plane".into()),
            "root: the on_join hook panicked; the leaf is refused",
        );
        let plan = match plan {
            Ok(plan) if plan_fits(&plan, self.transport) => plan,
            Ok(_) => {
                self.call_on_gone(id);
                let reason = format!("the root's data plan does not fit {}", self.transport);
                return self.refuse(conn, request.peer, reason);
            }
            Err(reason) => return self.refuse(conn, request.peer, reason),
        };
        let hooks = &mut self.hooks;
        let next_sequence = guarded(
            || hooks.next_sequence(id),
            0,
            "root: the next_sequence hook panicked; the leaf is told 0",
        );
        let admit = Frame::Admit {
            session: self.config.session,
            timeout_ms: u32::try_from(self.config.timeout.as_millis()).unwrap_or(u32::MAX),
            next_sequence,
            plan: plan.clone(),
        };
        let Some(entry) = self.conns.get_mut(conn) else {
            return self.call_on_gone(id);
        };
        let previous = entry.change(State::Joined(id), now);
        self.leaves.insert(id, conn);
        // Listed before the leaf hears it is in, so whoever learns of the join (the leaf,
        // the inviter) finds it in the embedder's list.
        self.conns
            .note(RootNote::Listed(AdmittedLeaf { id, request, plan }));
        if let (State::Proved { transcript, .. }, Some(key)) = (&previous, &self.config.key) {
            // Proof that this root holds the key too, over this very Admit. (It cannot
            // fail to encode: the Admit encodes below.)
            if let Some(mac) = transcript.root_proof(key, &admit) {
                self.conns.send(conn, Frame::RootProof { mac }, now);
            }
        }
        self.conns.send(conn, admit, now);
        if invitation(&previous).is_some() {
            self.answer_invite(Ok(id));
        }
        self.conns.note(RootNote::Event(Event::Joined(id)));
    }

    /// Closes `conn` (sending `last` first, if given); for an admitted leaf calls the
    /// hook and queues `event`; answers an invitation on its way with
    /// [`Error::SessionClosed`].
    fn close_leaf(
        &mut self,
        conn: ConnId,
        last: Option<Frame>,
        event: impl FnOnce(LeafId) -> Event,
    ) {
        let Some(closed) = self.conns.close(conn, last) else {
            return;
        };
        match closed.state {
            State::Joined(id) => {
                self.leaves.remove(&id);
                self.call_on_gone(id);
                self.conns.note(RootNote::Event(event(id)));
            }
            State::Connecting { .. } => self.answer_invite(Err(Error::SessionClosed)),
            other if invitation(&other).is_some() => {
                self.answer_invite(Err(Error::SessionClosed));
            }
            State::Invited { .. }
            | State::AwaitJoin
            | State::AwaitProof(_)
            | State::Proved { .. } => {}
        }
    }

    fn call_on_gone(&mut self, id: LeafId) {
        let hooks = &mut self.hooks;
        let complaint = format_args!("root: the on_gone hook panicked for {id}");
        guarded(|| hooks.on_gone(id), (), complaint);
    }

    fn answer_invite(&mut self, answer: Result<LeafId>) {
        if self.inviting.take().is_some() {
            self.conns.note(RootNote::Invited(answer));
        }
    }
}

impl Rules for RootCore {
    type State = State;
    type Note = RootNote;
    const ACCEPTED: State = State::AwaitJoin;

    fn conns(&self) -> &Conns<State, RootNote> {
        &self.conns
    }

    fn conns_mut(&mut self) -> &mut Conns<State, RootNote> {
        &mut self.conns
    }

    fn watch(&self) -> impl Fn(&State) -> Watch + 'static {
        let (timeout, connect) = (self.config.timeout, self.config.connect_timeout);
        move |state| match state {
            State::Joined(_) => Watch::Session(timeout),
            State::Connecting { .. } => Watch::Pending(connect),
            State::AwaitJoin
            | State::Invited { .. }
            | State::AwaitProof(_)
            | State::Proved { .. } => Watch::Pending(timeout),
        }
    }

    fn opened(&self, state: &State) -> Option<(State, Frame)> {
        let State::Connecting { direction } = *state else {
            return None;
        };
        let invite = Frame::Invite {
            transport: self.transport,
            direction,
        };
        Some((State::Invited { direction }, invite))
    }

    fn frame(&mut self, conn: ConnId, peer: SocketAddr, frame: Frame, now: Instant) -> bool {
        let Some(entry) = self.conns.get(conn) else {
            return true;
        };
        let invited = match entry.state {
            State::Invited { direction } => Some(direction),
            _ => None,
        };
        match (&entry.state, frame) {
            (
                State::AwaitJoin | State::Invited { .. },
                Frame::Join {
                    transport,
                    direction,
                    data,
                    name,
                },
            ) => {
                let request = JoinRequest {
                    peer,
                    direction,
                    data,
                    name,
                    invited: invited.is_some(),
                };
                if self.config.key.is_some() {
                    self.challenge(conn, transport, request, invited, now);
                } else {
                    self.join(conn, transport, request, invited, now);
                }
            }
            (State::AwaitProof(_), Frame::Proof { nonce, mac }) => {
                self.proof(conn, nonce, mac, now);
            }
            // Anything but a proof (a leaf without the key declines with a Refuse) is
            // no proof.
            (State::AwaitProof(_), _) => self.refuse(conn, peer, AUTH_FAILED.into()),
            (State::Invited { .. }, Frame::Refuse { reason }) => {
                self.conns.close(conn, None);
                self.answer_invite(Err(Error::Refused { peer, reason }));
            }
            (State::Joined(_), Frame::Leave { reason }) => {
                self.close_leaf(conn, None, |leaf| Event::Left { leaf, reason });
            }
            _ => return false,
        }
        true
    }

    fn lost(&mut self, conn: ConnId, peer: SocketAddr, why: ConnError) {
        let answer = match self.conns.get(conn).map(|c| &c.state) {
            Some(State::Connecting { .. }) => connect_error("connecting to the leaf", peer, why),
            Some(state) if invitation(state).is_some() => Error::SessionGone {
                peer,
                reason: why.to_string(),
            },
            Some(
                State::AwaitJoin
                | State::Joined(_)
                | State::Invited { .. }
                | State::AwaitProof(_)
                | State::Proved { .. },
            )
            | None => {
                let reason = why.to_string();
                return self.close_leaf(conn, None, |leaf| Event::Left { leaf, reason });
            }
        };
        self.conns.close(conn, None);
        self.answer_invite(Err(answer));
    }

    fn expired(&mut self, conn: ConnId, peer: SocketAddr) {
        let what = match self.conns.get(conn).map(|c| &c.state) {
            Some(State::Joined(_)) => {
                let leave = Frame::Leave {
                    reason: "timed out: the root heard nothing within the timeout".into(),
                };
                return self.close_leaf(conn, Some(leave), |leaf| Event::TimedOut { leaf });
            }
            // The leaf gave no proof in time.
            Some(State::AwaitProof(_)) => return self.refuse(conn, peer, AUTH_FAILED.into()),
            Some(State::AwaitJoin | State::Proved { .. }) | None => {
                self.conns.close(conn, None);
                return;
            }
            Some(State::Connecting { .. }) => "connecting to the leaf",
            Some(State::Invited { .. }) => "waiting for the leaf to answer the invitation",
        };
        self.conns.close(conn, None);
        self.answer_invite(Err(Error::TimedOut { what, peer }));
    }

    /// Ends the session: admitted leaves are told it ended ([`Frame::End`], then
    /// [`Event::Left`]), connections still on their way in are refused, and the pending
    /// invitation is answered [`Error::SessionClosed`]. No connection is left after.
    fn close(&mut self) {
        for conn in self.conns.ids() {
            let last = match self.conns.get(conn).map(|c| &c.state) {
                Some(State::Joined(_)) => Some(Frame::End {
                    reason: "the root closed the session".into(),
                }),
                Some(State::Connecting { .. }) | None => None,
                Some(_) => Some(Frame::Refuse {
                    reason: "the root is closing".into(),
                }),
            };
            self.close_leaf(conn, last, |leaf| Event::Left {
                leaf,
                reason: "the root closed the session".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::super::sim::{
        bring_up, closes, drain, frames_on, invite, key, leaf_data, ms, notes, root_config,
        root_nonces, Script,
    };
    use std::sync::Arc;

    use super::super::{Machine, Output, Transmit};
    use super::*;

    const PEER: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 9)),
        41_000,
    );

    fn root(config: RootConfig) -> RootCore {
        RootCore::new(
            Transport::RootedUnicast,
            config,
            Box::new(Script::default()),
        )
    }

    fn join(name: &str, direction: Direction) -> Frame {
        Frame::Join {
            transport: Transport::RootedUnicast,
            direction,
            data: Some(leaf_data(9)),
            name: name.into(),
        }
    }

    /// A leaf named `name` connects to `root` and asks to join at `t0`: its connection,
    /// and what the root does about it.
    fn asks(root: &mut RootCore, name: &str, t0: Instant) -> (ConnId, Vec<Output<RootNote>>) {
        let conn = root.handle_accepted(PEER, t0);
        root.handle_frame(conn, join(name, Direction::Both), t0);
        (conn, drain(root))
    }

    /// A root with one leaf admitted at `t0`; the outputs are taken.
    fn with_leaf(config: RootConfig, t0: Instant) -> (RootCore, ConnId) {
        let mut root = root(config);
        let (conn, _) = asks(&mut root, "leaf", t0);
        (root, conn)
    }

    /// The root's invitation of PEER, connected at `t0`; the outputs are taken.
    fn inviting(direction: Direction, t0: Instant) -> (RootCore, ConnId) {
        let mut root = root(root_config(ms(3000)));
        root.handle_invite(PEER, direction, t0).unwrap();
        let (conn, _) = bring_up(&mut root, PEER, t0);
        (root, conn)
    }

    #[test]
    fn an_admitted_leaf_is_listed_before_its_admit_and_announced_after() {
        let t0 = Instant::now();
        let mut root = root(root_config(ms(3000)));
        let conn = root.handle_accepted(PEER, t0);
        assert!(
            drain(&mut root).is_empty(),
            "a connection alone asks nothing"
        );
        root.handle_frame(conn, join("leaf", Direction::Both), t0);
        let out = drain(&mut root);
        match out.as_slice() {
            [Output::Note(RootNote::Listed(leaf)), Output::Conn(
                c,
                Transmit::Send(Frame::Admit {
                    session,
                    timeout_ms,
                    plan,
                    ..
                }),
            ), Output::Note(RootNote::Event(Event::Joined(id)))] => {
                assert_eq!((*c, leaf.id), (conn, *id));
                assert_eq!(leaf.request.peer, PEER);
                assert_eq!(leaf.request.direction, Direction::Both);
                assert_eq!((*session, *timeout_ms), (*b"SIMULATED1", 3000));
                assert_eq!(plan, &leaf.plan);
            }
            other => panic!("expected listed, Admit, joined: {other:?}"),
        }
    }

    #[test]
    fn an_invitation_connects_invites_and_answers_with_the_admitted_leaf() {
        let t0 = Instant::now();
        let mut root = root(root_config(ms(3000)));
        root.handle_invite(PEER, Direction::SenderOnly, t0).unwrap();
        let (conn, out) = bring_up(&mut root, PEER, t0);
        assert_eq!(frames_on(&out, conn), [&invite(Direction::SenderOnly)]);
        root.handle_frame(conn, join("invitee", Direction::SenderOnly), t0);
        let notes = notes(drain(&mut root));
        assert!(
            matches!(
                notes.as_slice(),
                [RootNote::Listed(l), RootNote::Invited(Ok(id)), RootNote::Event(Event::Joined(_))]
                    if l.request.invited && l.id == *id
            ),
            "{notes:?}"
        );
    }

    #[test]
    fn one_invitation_waits_for_its_answer_at_a_time() {
        let t0 = Instant::now();
        let (mut root, conn) = inviting(Direction::Both, t0);
        let other: SocketAddr = "10.0.1.10:7100".parse().unwrap();
        assert!(matches!(
            root.handle_invite(other, Direction::Both, t0),
            Err(Error::JoinPending)
        ));
        assert!(drain(&mut root).is_empty());
        // Declined: the next may go.
        let decline = Frame::Refuse {
            reason: "no".into(),
        };
        root.handle_frame(conn, decline, t0);
        assert!(matches!(
            notes(drain(&mut root)).as_slice(),
            [RootNote::Invited(Err(Error::Refused { peer: PEER, .. }))]
        ));
        assert!(root.handle_invite(other, Direction::Both, t0).is_ok());
    }

    #[test]
    fn a_leaf_accepting_in_another_direction_is_refused() {
        let t0 = Instant::now();
        let (mut root, conn) = inviting(Direction::ReceiverOnly, t0);
        root.handle_frame(conn, join("contrary", Direction::Both), t0);
        let out = drain(&mut root);
        assert!(closes(&out, conn));
        let notes = notes(out);
        assert!(
            matches!(
                notes.as_slice(),
                [RootNote::Invited(Err(Error::Refused { reason, .. })), RootNote::Event(Event::Refused { .. })]
                    if reason.contains("invited as ReceiverOnly")
            ),
            "{notes:?}"
        );
    }

    #[test]
    fn an_invitation_fails_as_its_connection_fails() {
        let t0 = Instant::now();
        let mut root = root(root_config(ms(3000)));
        root.handle_invite(PEER, Direction::Both, t0).unwrap();
        let conn = ConnId(0);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        root.handle_lost(conn, ConnError::Io(refused));
        assert!(matches!(
            notes(drain(&mut root)).as_slice(),
            [RootNote::Invited(Err(Error::Os {
                op: "connecting to the leaf",
                ..
            }))]
        ));
    }

    #[test]
    fn an_invitation_times_out_connecting_and_then_answering() {
        let t0 = Instant::now();
        let mut root = root(root_config(ms(3000)));
        root.handle_invite(PEER, Direction::Both, t0).unwrap();
        drain(&mut root);
        // root_config connects within 500 ms.
        assert_eq!(root.poll_timeout(), Some(t0 + ms(500)));
        root.handle_timeout(t0 + ms(499));
        assert!(drain(&mut root).is_empty());
        root.handle_timeout(t0 + ms(500));
        assert!(matches!(
            notes(drain(&mut root)).as_slice(),
            [RootNote::Invited(Err(Error::TimedOut {
                what: "connecting to the leaf",
                ..
            }))]
        ));

        let (mut root, _) = inviting(Direction::Both, t0);
        assert_eq!(root.poll_timeout(), Some(t0 + ms(3000)));
        root.handle_timeout(t0 + ms(3000));
        assert!(matches!(
            notes(drain(&mut root)).as_slice(),
            [RootNote::Invited(Err(Error::TimedOut {
                what: "waiting for the leaf to answer the invitation",
                ..
            }))]
        ));
        assert_eq!(root.poll_timeout(), None);
    }

    #[test]
    fn a_connection_that_never_asks_is_dropped_at_the_timeout() {
        let t0 = Instant::now();
        let mut root = root(root_config(ms(3000)));
        let conn = root.handle_accepted(PEER, t0);
        assert_eq!(root.poll_timeout(), Some(t0 + ms(3000)));
        root.handle_timeout(t0 + ms(3000));
        let out = drain(&mut root);
        assert!(closes(&out, conn));
        assert!(notes(out).is_empty(), "it was never a leaf");
    }

    #[test]
    fn an_admitted_leaf_is_timed_out_with_a_leave() {
        let t0 = Instant::now();
        let (mut root, conn) = with_leaf(root_config(ms(300)), t0);
        assert_eq!(root.poll_timeout(), Some(t0 + ms(100)), "first a heartbeat");
        root.handle_frame(conn, Frame::Heartbeat, t0 + ms(250));
        root.handle_timeout(t0 + ms(549));
        assert!(notes(drain(&mut root)).is_empty(), "heard at 250 ms");
        root.handle_timeout(t0 + ms(550));
        let out = drain(&mut root);
        assert!(matches!(
            frames_on(&out, conn).as_slice(),
            [Frame::Leave { reason }] if reason.starts_with("timed out")
        ));
        assert!(matches!(
            notes(out).as_slice(),
            [RootNote::Event(Event::TimedOut { leaf: LeafId(0) })]
        ));
    }

    #[test]
    fn a_frame_out_of_place_ends_the_leaf_with_a_protocol_error() {
        let t0 = Instant::now();
        let (mut root, conn) = with_leaf(root_config(ms(3000)), t0);
        root.handle_frame(conn, join("again", Direction::Both), t0);
        let out = drain(&mut root);
        assert!(closes(&out, conn));
        assert!(matches!(
            notes(out).as_slice(),
            [RootNote::Event(Event::Left { reason, .. })] if reason == "protocol error: unexpected Join"
        ));
    }

    #[test]
    fn a_full_session_refuses_the_next_leaf() {
        let t0 = Instant::now();
        let mut config = root_config(ms(3000));
        config.max_leaves = 1;
        let (mut root, _) = with_leaf(config, t0);
        let (conn, out) = asks(&mut root, "second", t0);
        assert!(matches!(
            frames_on(&out, conn).as_slice(),
            [Frame::Refuse { reason }] if reason == "the session is full (1 leaves)"
        ));
        assert_eq!(root.leaf_count(), 1);
    }

    #[test]
    fn a_plan_for_another_transport_refuses_the_leaf_and_runs_on_gone() {
        let t0 = Instant::now();
        let mut config = root_config(ms(3000));
        config.plan = Some(DataPlan::Multicast {
            group: "232.1.1.1:5000".parse().unwrap(),
            source: "10.0.0.1".parse().unwrap(),
        });
        let hooks = Script::default();
        let gone = Arc::clone(&hooks.gone);
        let mut root = RootCore::new(Transport::RootedUnicast, config, Box::new(hooks));
        let (conn, out) = asks(&mut root, "leaf", t0);
        assert!(matches!(
            frames_on(&out, conn).as_slice(),
            [Frame::Refuse { reason }] if reason == "the root's data plan does not fit rooted-unicast"
        ));
        assert_eq!(gone.lock().unwrap().as_slice(), [LeafId(0)]);
    }

    #[test]
    fn panicking_hooks_refuse_the_leaf_and_the_root_carries_on() {
        struct Broken;
        impl RootHooks for Broken {
            fn admit(&mut self, request: &JoinRequest) -> Decision {
                assert!(request.name != "boom", "the admission hook panicked");
                Decision::Admit
            }
            fn next_sequence(&mut self, _leaf: LeafId) -> u64 {
                panic!("the next_sequence hook panicked")
            }
        }
        let t0 = Instant::now();
        let mut root = RootCore::new(
            Transport::RootedUnicast,
            root_config(ms(3000)),
            Box::new(Broken),
        );
        let (boom, out) = asks(&mut root, "boom", t0);
        assert!(matches!(
            frames_on(&out, boom).as_slice(),
            [Frame::Refuse { reason }] if reason == "the root's admission hook failed"
        ));
        let (fine, out) = asks(&mut root, "fine", t0);
        assert!(matches!(
            frames_on(&out, fine).as_slice(),
            [Frame::Admit {
                next_sequence: 0,
                ..
            }]
        ));
    }

    #[test]
    fn closing_ends_leaves_refuses_arrivals_and_answers_the_inviter() {
        let t0 = Instant::now();
        let (mut root, leaf) = with_leaf(root_config(ms(3000)), t0);
        let arriving = root.handle_accepted(PEER, t0);
        root.handle_invite(PEER, Direction::Both, t0).unwrap();
        drain(&mut root);
        root.handle_close();
        let out = drain(&mut root);
        assert!(matches!(
            frames_on(&out, leaf).as_slice(),
            [Frame::End { .. }]
        ));
        assert!(matches!(
            frames_on(&out, arriving).as_slice(),
            [Frame::Refuse { reason }] if reason == "the root is closing"
        ));
        let notes = notes(out);
        assert!(notes
            .iter()
            .any(|n| matches!(n, RootNote::Invited(Err(Error::SessionClosed)))));
        assert!(notes.iter().any(|n| matches!(
            n,
            RootNote::Event(Event::Left { reason, .. }) if reason == "the root closed the session"
        )));
        assert_eq!(root.poll_timeout(), None);
    }

    #[test]
    fn a_challenged_leaf_that_never_proves_is_refused_at_the_timeout() {
        let t0 = Instant::now();
        let mut config = root_config(ms(3000));
        config.key = Some(key(7));
        let mut root = root(config).with_nonces(root_nonces());
        let (conn, out) = asks(&mut root, "silent", t0);
        assert!(matches!(
            frames_on(&out, conn).as_slice(),
            [Frame::Challenge { .. }]
        ));
        assert_eq!(root.poll_timeout(), Some(t0 + ms(3000)));
        root.handle_timeout(t0 + ms(2999));
        assert!(drain(&mut root).is_empty());
        root.handle_timeout(t0 + ms(3000));
        let out = drain(&mut root);
        assert!(matches!(
            frames_on(&out, conn).as_slice(),
            [Frame::Refuse { reason }] if reason == AUTH_FAILED
        ));
        assert!(closes(&out, conn));
        assert!(matches!(
            notes(out).as_slice(),
            [RootNote::Event(Event::Refused { reason, .. })] if reason == AUTH_FAILED
        ));
    }

    #[test]
    fn a_proof_to_a_root_without_a_key_is_a_protocol_error() {
        let t0 = Instant::now();
        let mut root = root(root_config(ms(3000)));
        let conn = root.handle_accepted(PEER, t0);
        let proof = Frame::Proof {
            nonce: [1; 32],
            mac: [2; 32],
        };
        root.handle_frame(conn, proof, t0);
        let out = drain(&mut root);
        assert!(closes(&out, conn));
        assert_eq!(root.leaf_count(), 0);
    }

    #[test]
    fn inputs_for_unknown_connections_do_nothing() {
        let t0 = Instant::now();
        let mut root = root(root_config(ms(3000)));
        root.handle_frame(ConnId(7), Frame::Heartbeat, t0);
        root.handle_connected(ConnId(7), t0);
        root.handle_lost(ConnId(7), ConnError::Closed);
        root.handle_unclaimed(LeafId(3));
        root.handle_timeout(t0 + ms(10_000));
        assert!(drain(&mut root).is_empty());
        assert_eq!(root.poll_timeout(), None);
    }
}
