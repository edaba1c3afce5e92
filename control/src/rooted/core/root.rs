//! What a root decides: admissions and refusals, invitations, removals, leaf liveness
//! and the end of the session, as a state machine without I/O (see [the contract](super)).
//!
//! Besides the calls of [`Machine`](super::Machine), a [`RootCore`] takes the root's commands:
//! [`handle_invite`](RootCore::handle_invite), [`handle_remove`](RootCore::handle_remove),
//! [`handle_unclaimed`](RootCore::handle_unclaimed) and
//! [`handle_close`](super::Machine::handle_close). Its [`RootNote`]s list admitted leaves,
//! report what happened to them ([`Event`]) and answer the pending invitation.
//!
//! # Limits
//!
//! The [`RootLimits`] are decided here, on the `now` of each input: a connection over the
//! per-address or total limit is refused as it is accepted (told why, then closed;
//! counted, not an event), where the total limit first sheds the oldest connection
//! still in its handshake; so does [`handle_pressure`](super::Machine::handle_pressure)
//! when the process is out of descriptors. A leaf-initiated Join is rate limited per IP
//! address by a token bucket kept as its theoretical arrival time (GCRA: each join moves
//! it on by `1 s / rate`; a join is refused while it is more than `burst - 1` intervals
//! ahead of `now`), and refused when another admitted leaf receives at the data address
//! it gave. Each reason is counted in [`RootStats`].
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
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{connect_error, guarded, plan_fits, ConnError, ConnId, Conns, Rules, Watch};
use crate::error::{Error, Result};
use crate::rooted::auth::{Nonce, Nonces, Tag, Transcript, AUTH_FAILED};
use crate::rooted::proto::{DataPlan, Frame};
use crate::rooted::{Decision, JoinRequest, LeafId, RootConfig, RootHooks, RootLimits, RootStats};
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
    /// The data addresses of the admitted leaves.
    data: BTreeMap<SocketAddr, LeafId>,
    /// Each address's join bucket: the instant its joins so far would have been paid for.
    rates: BTreeMap<IpAddr, Instant>,
    stats: RootStats,
    /// Where the challenges' nonces come from.
    nonces: Nonces,
}

/// Most addresses whose join buckets are kept at once; beyond it, full buckets are
/// forgotten first (a full bucket is no different from none), then the fullest.
const MAX_RATES: usize = 4096;

/// Why a join was refused, for [`RootStats`].
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Auth,
    Rate,
    DataTaken,
    Full,
    Other,
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
            data: BTreeMap::new(),
            rates: BTreeMap::new(),
            stats: RootStats::default(),
            nonces: Nonces::os(),
        }
    }

    /// The same root, drawing its nonces from `nonces` (tests and fuzzing: a counter).
    pub(crate) fn with_nonces(mut self, nonces: Nonces) -> RootCore {
        self.nonces = nonces;
        self
    }

    /// What the core refused, shed and closed so far.
    pub(crate) fn stats(&self) -> RootStats {
        self.stats
    }

    fn limits(&self) -> &RootLimits {
        &self.config.limits
    }

    /// Refuses a connection just accepted, before any Join: it is told why and closed;
    /// counted by the caller, not an event.
    fn turn_away(&mut self, conn: ConnId, reason: String) {
        tracing::debug!("root: connection turned away: {reason}");
        self.conns.close(conn, Some(Frame::Refuse { reason }));
    }

    /// Closes the oldest connection still in its handshake (other than `keep`) to make
    /// room; false if there is none.
    fn shed_one(&mut self, keep: Option<ConnId>) -> bool {
        let oldest = self.conns.oldest(|c| matches!(c.state, State::AwaitJoin));
        let Some(conn) = oldest.filter(|c| Some(*c) != keep) else {
            return false;
        };
        self.stats.shed += 1;
        self.turn_away(
            conn,
            "the root needed room for a newer connection and closed this one, which had \
             not asked to join yet"
                .into(),
        );
        true
    }

    /// Whether `ip` may ask to join at `now`; if so, its bucket pays for the join.
    fn take_join(&mut self, ip: IpAddr, now: Instant) -> bool {
        let limits = self.config.limits;
        let interval = Duration::from_secs(1) / limits.joins_per_second_per_peer.max(1);
        let tolerance = interval.saturating_mul(limits.join_burst.max(1) - 1);
        let paid = self.rates.get(&ip).map_or(now, |at| (*at).max(now));
        if paid.saturating_duration_since(now) > tolerance {
            return false;
        }
        if !self.rates.contains_key(&ip) && self.rates.len() >= MAX_RATES {
            self.rates.retain(|_, at| *at > now);
            if self.rates.len() >= MAX_RATES {
                let least = self
                    .rates
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(ip, _)| *ip);
                if let Some(least) = least {
                    self.rates.remove(&least);
                }
            }
        }
        self.rates.insert(ip, paid + interval);
        true
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
        if invited.is_none() && !self.take_join(peer.ip(), now) {
            let limits = self.limits();
            let reason = format!(
                "{} asks to join too often: the root takes {} joins a second from one \
                 address ({} at once)",
                peer.ip(),
                limits.joins_per_second_per_peer,
                limits.join_burst
            );
            return self.refuse(conn, peer, Refusal::Rate, reason);
        }
        if let Err((why, reason)) = self.check_request(transport, &request) {
            return self.refuse(conn, peer, why, reason);
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
            Decision::Refuse(reason) => self.refuse(conn, peer, Refusal::Other, reason),
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
            return self.refuse(conn, request.peer, Refusal::Other, reason.into());
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
            _ => return self.refuse(conn, peer, Refusal::Auth, AUTH_FAILED.into()),
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
    ) -> std::result::Result<(), (Refusal, String)> {
        if transport != self.transport {
            return Err((
                Refusal::Other,
                format!(
                    "this root runs {}, the leaf asked for {transport}",
                    self.transport
                ),
            ));
        }
        if self.transport == Transport::RootedUnicast && request.data.is_none() {
            return Err((
                Refusal::Other,
                "a rooted-unicast leaf must give the UDP address it receives data on".into(),
            ));
        }
        if self.leaves.len() >= self.config.max_leaves {
            return Err((
                Refusal::Full,
                format!("the session is full ({} leaves)", self.config.max_leaves),
            ));
        }
        if let Some(taken) = request.data.and_then(|d| self.data.get(&d)) {
            // Otherwise a second join naming it would double the stream to that leaf.
            return Err((
                Refusal::DataTaken,
                format!(
                    "the data address {} is taken by another leaf in the session ({taken})",
                    request.data.map_or_else(String::new, |d| d.to_string())
                ),
            ));
        }
        Ok(())
    }

    fn refuse(&mut self, conn: ConnId, peer: SocketAddr, why: Refusal, reason: String) {
        let count = match why {
            Refusal::Auth => &mut self.stats.refused_auth,
            Refusal::Rate => &mut self.stats.refused_join_rate,
            Refusal::DataTaken => &mut self.stats.refused_data_taken,
            Refusal::Full => &mut self.stats.refused_full,
            Refusal::Other => &mut self.stats.refused_other,
        };
        *count += 1;
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
                return self.refuse(conn, request.peer, Refusal::Other, reason);
            }
            Err(reason) => return self.refuse(conn, request.peer, Refusal::Other, reason),
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
        if let Some(data) = request.data {
            self.data.insert(data, id);
        }
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
                self.data.retain(|_, leaf| *leaf != id);
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
        let handshake = self.config.limits.handshake_timeout;
        move |state| match state {
            State::Joined(_) => Watch::Session(timeout),
            State::Connecting { .. } => Watch::Pending(connect),
            State::AwaitJoin | State::AwaitProof(_) | State::Proved { .. } => {
                Watch::Pending(handshake)
            }
            State::Invited { .. } => Watch::Pending(timeout),
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
            (State::AwaitProof(_), _) => self.refuse(conn, peer, Refusal::Auth, AUTH_FAILED.into()),
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
            Some(State::AwaitProof(_)) => {
                self.stats.handshake_timeouts += 1;
                return self.refuse(conn, peer, Refusal::Auth, AUTH_FAILED.into());
            }
            Some(State::AwaitJoin | State::Proved { .. }) => {
                self.stats.handshake_timeouts += 1;
                self.conns.close(conn, None);
                return;
            }
            None => return,
            Some(State::Connecting { .. }) => "connecting to the leaf",
            Some(State::Invited { .. }) => "waiting for the leaf to answer the invitation",
        };
        self.conns.close(conn, None);
        self.answer_invite(Err(Error::TimedOut { what, peer }));
    }

    /// Counts the connection and refuses it if its address has
    /// [`RootLimits::max_connections_per_peer`] open, or if the root has
    /// [`RootLimits::max_connections`] and no connection in its handshake to shed.
    fn accepted(&mut self, conn: ConnId, peer: SocketAddr, _now: Instant) {
        self.stats.accepted += 1;
        let limits = self.config.limits;
        if self.conns.count_from(peer.ip()) > limits.max_connections_per_peer {
            self.stats.refused_per_peer += 1;
            let reason = format!(
                "too many connections from {}: the root takes {} per address",
                peer.ip(),
                limits.max_connections_per_peer
            );
            return self.turn_away(conn, reason);
        }
        if self.conns.len() > limits.max_connections && !self.shed_one(Some(conn)) {
            self.stats.refused_max_connections += 1;
            let reason = format!(
                "the root has all the connections it takes ({})",
                limits.max_connections
            );
            self.turn_away(conn, reason);
        }
    }

    /// Sheds the oldest connection still in its handshake; counts a stall if there is
    /// none.
    fn shed(&mut self, _now: Instant) -> bool {
        let shed = self.shed_one(None);
        if !shed {
            self.stats.accept_stalls += 1;
        }
        shed
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
            [RootNote::Invited(Err(Error::OsAt {
                op: "connecting to the leaf",
                addr: PEER,
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
    fn a_connection_that_never_asks_is_dropped_at_the_handshake_timeout() {
        let t0 = Instant::now();
        let mut config = root_config(ms(3000));
        config.limits.handshake_timeout = ms(700);
        let mut root = root(config);
        let conn = root.handle_accepted(PEER, t0);
        assert_eq!(root.poll_timeout(), Some(t0 + ms(700)));
        root.handle_timeout(t0 + ms(699));
        assert!(drain(&mut root).is_empty());
        root.handle_timeout(t0 + ms(700));
        let out = drain(&mut root);
        assert!(closes(&out, conn));
        assert!(notes(out).is_empty(), "it was never a leaf");
        assert_eq!(root.stats().handshake_timeouts, 1);
        assert_eq!(root.poll_timeout(), None);
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

    /// A leaf at `peer` receiving at `data` connects and asks to join at `now`: its
    /// connection, and the frames the root sent on it.
    fn asks_as(
        root: &mut RootCore,
        peer: SocketAddr,
        data: SocketAddr,
        now: Instant,
    ) -> (ConnId, Vec<Frame>) {
        let conn = root.handle_accepted(peer, now);
        let ask = Frame::Join {
            transport: Transport::RootedUnicast,
            direction: Direction::ReceiverOnly,
            data: Some(data),
            name: "leaf".into(),
        };
        root.handle_frame(conn, ask, now);
        let out = drain(root);
        (conn, frames_on(&out, conn).into_iter().cloned().collect())
    }

    fn at(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    fn refused(frames: &[Frame]) -> Option<&str> {
        match frames {
            [Frame::Refuse { reason }] => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn joins_beyond_the_burst_are_refused_until_the_bucket_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut config = root_config(ms(3000));
        config.limits.joins_per_second_per_peer = 10;
        config.limits.join_burst = 3;
        let mut root = root(config);
        let host = [10, 0, 1, 9];
        for port in 0..3 {
            let (_, frames) = asks_as(&mut root, at(host, 41_000 + port), at(host, port), t0);
            assert!(
                matches!(frames.as_slice(), [Frame::Admit { .. }]),
                "{frames:?}"
            );
        }
        let (_, frames) = asks_as(&mut root, at(host, 41_010), at(host, 10), t0);
        assert!(
            refused(&frames).is_some_and(|r| r.contains("asks to join too often")),
            "{frames:?}"
        );
        // Another address has a bucket of its own.
        let other = [10, 0, 1, 10];
        let (_, frames) = asks_as(&mut root, at(other, 41_000), at(other, 1), t0);
        assert!(matches!(frames.as_slice(), [Frame::Admit { .. }]));
        // One join's worth (100 ms) later, one more; not two.
        let t1 = t0 + ms(99);
        let (_, frames) = asks_as(&mut root, at(host, 41_011), at(host, 11), t1);
        assert!(refused(&frames).is_some(), "not yet at 99 ms");
        let t1 = t0 + ms(100);
        let (_, frames) = asks_as(&mut root, at(host, 41_012), at(host, 12), t1);
        assert!(
            matches!(frames.as_slice(), [Frame::Admit { .. }]),
            "{frames:?}"
        );
        let (_, frames) = asks_as(&mut root, at(host, 41_013), at(host, 13), t1);
        assert!(refused(&frames).is_some());
        let stats = root.stats();
        assert_eq!((stats.refused_join_rate, stats.refused_other), (3, 0));
        assert_eq!(root.leaf_count(), 5);
    }

    #[test]
    fn invited_leaves_are_not_rate_limited() {
        let t0 = Instant::now();
        let mut config = root_config(ms(3000));
        config.limits.join_burst = 1;
        let mut root = root(config);
        let (_, frames) = asks_as(&mut root, PEER, at([10, 0, 1, 9], 1), t0);
        assert!(matches!(frames.as_slice(), [Frame::Admit { .. }]));
        root.handle_invite(PEER, Direction::Both, t0).unwrap();
        let (conn, _) = bring_up(&mut root, PEER, t0);
        root.handle_frame(conn, join("invitee", Direction::Both), t0);
        let out = drain(&mut root);
        assert!(matches!(
            frames_on(&out, conn).as_slice(),
            [Frame::Admit { .. }]
        ));
        assert_eq!(root.stats().refused_join_rate, 0);
    }

    #[test]
    fn a_data_address_an_admitted_leaf_has_is_refused_to_another_until_it_leaves() {
        let t0 = Instant::now();
        let mut root = root(root_config(ms(3000)));
        let host = [10, 0, 1, 9];
        let data = at(host, 7200);
        let (first, frames) = asks_as(&mut root, at(host, 41_000), data, t0);
        assert!(matches!(frames.as_slice(), [Frame::Admit { .. }]));
        for port in 1..=3 {
            let (_, frames) = asks_as(&mut root, at(host, 41_000 + port), data, t0);
            assert_eq!(
                refused(&frames),
                Some("the data address 10.0.1.9:7200 is taken by another leaf in the session (leaf#0)")
            );
        }
        // Another port of the same host is another leaf.
        let (_, frames) = asks_as(&mut root, at(host, 41_009), at(host, 7201), t0);
        assert!(matches!(frames.as_slice(), [Frame::Admit { .. }]));
        assert_eq!(root.stats().refused_data_taken, 3);
        assert_eq!(root.leaf_count(), 2);

        let leave = Frame::Leave {
            reason: "bye".into(),
        };
        root.handle_frame(first, leave, t0);
        drain(&mut root);
        let (_, frames) = asks_as(&mut root, at(host, 41_010), data, t0);
        assert!(
            matches!(frames.as_slice(), [Frame::Admit { .. }]),
            "free again"
        );
    }

    #[test]
    fn connections_beyond_the_per_address_limit_are_refused_as_they_arrive() {
        let t0 = Instant::now();
        let mut config = root_config(ms(3000));
        config.limits.max_connections_per_peer = 2;
        let mut root = root(config);
        let greedy = [10, 0, 1, 66];
        let kept: Vec<ConnId> = (0..2)
            .map(|port| root.handle_accepted(at(greedy, 50_000 + port), t0))
            .collect();
        assert!(drain(&mut root).is_empty());
        let third = root.handle_accepted(at(greedy, 50_002), t0);
        let out = drain(&mut root);
        assert!(closes(&out, third));
        assert!(matches!(
            frames_on(&out, third).as_slice(),
            [Frame::Refuse { reason }] if reason == "too many connections from 10.0.1.66: the root takes 2 per address"
        ));
        assert!(
            notes(out).is_empty(),
            "a bare connection is counted, not an event"
        );
        // Others are not held back; the greedy address gets room as its own close.
        let (_, frames) = asks_as(&mut root, PEER, at([10, 0, 1, 9], 1), t0);
        assert!(matches!(frames.as_slice(), [Frame::Admit { .. }]));
        root.handle_lost(kept[0], ConnError::Closed);
        drain(&mut root);
        root.handle_accepted(at(greedy, 50_003), t0);
        assert!(drain(&mut root).is_empty());
        assert_eq!(root.stats().refused_per_peer, 1);
        assert_eq!(root.stats().accepted, 5);
    }

    #[test]
    fn at_the_connection_limit_the_oldest_handshake_makes_room_and_then_newcomers_are_refused() {
        let t0 = Instant::now();
        let mut config = root_config(ms(3000));
        config.limits.max_connections = 3;
        let mut root = root(config);
        let idle = root.handle_accepted(at([10, 0, 1, 66], 50_000), t0);
        let idle2 = root.handle_accepted(at([10, 0, 1, 67], 50_000), t0 + ms(1));
        let (leaf, _) = asks_as(
            &mut root,
            at([10, 0, 1, 9], 41_000),
            leaf_data(9),
            t0 + ms(2),
        );
        // A fourth: the oldest idle one goes.
        let (newcomer, frames) = asks_as(
            &mut root,
            at([10, 0, 1, 10], 41_000),
            leaf_data(10),
            t0 + ms(3),
        );
        assert!(
            matches!(frames.as_slice(), [Frame::Admit { .. }]),
            "{frames:?}"
        );
        assert_eq!(root.stats().shed, 1);
        assert!(root.conns.get(idle).is_none());
        assert!(root.conns.get(idle2).is_some());
        // The second idle one makes room for the next.
        let (_, frames) = asks_as(
            &mut root,
            at([10, 0, 1, 11], 41_000),
            leaf_data(11),
            t0 + ms(4),
        );
        assert!(matches!(frames.as_slice(), [Frame::Admit { .. }]));
        // Three leaves, nothing to shed: the next is refused and the leaves stay.
        let late = root.handle_accepted(at([10, 0, 1, 12], 41_000), t0 + ms(5));
        let out = drain(&mut root);
        assert!(matches!(
            frames_on(&out, late).as_slice(),
            [Frame::Refuse { reason }] if reason == "the root has all the connections it takes (3)"
        ));
        assert!(root.conns.get(leaf).is_some() && root.conns.get(newcomer).is_some());
        let stats = root.stats();
        assert_eq!((stats.shed, stats.refused_max_connections), (2, 1));
        assert_eq!(root.leaf_count(), 3);
    }

    #[test]
    fn out_of_descriptors_the_oldest_handshake_is_shed_and_with_none_a_stall_is_counted() {
        let t0 = Instant::now();
        let mut root = root(root_config(ms(3000)));
        let (leaf, _) = asks_as(&mut root, PEER, leaf_data(9), t0);
        let old = root.handle_accepted(at([10, 0, 1, 66], 50_000), t0 + ms(1));
        let young = root.handle_accepted(at([10, 0, 1, 66], 50_001), t0 + ms(2));
        drain(&mut root);
        assert!(root.handle_pressure(t0 + ms(3)));
        let out = drain(&mut root);
        assert!(closes(&out, old) && !closes(&out, young));
        assert!(root.handle_pressure(t0 + ms(3)));
        assert!(closes(&drain(&mut root), young));
        assert!(!root.handle_pressure(t0 + ms(3)), "a leaf is never shed");
        assert!(drain(&mut root).is_empty());
        assert!(root.conns.get(leaf).is_some());
        let stats = root.stats();
        assert_eq!((stats.shed, stats.accept_stalls), (2, 1));
    }

    #[test]
    fn a_challenged_leaf_that_never_proves_is_refused_at_the_handshake_timeout() {
        let t0 = Instant::now();
        let mut config = root_config(ms(3000));
        config.key = Some(key(7));
        // The challenge is part of the handshake: it has the handshake's time, not the
        // session's.
        let handshake = config.limits.handshake_timeout;
        assert!(handshake < ms(3000));
        let mut root = root(config).with_nonces(root_nonces());
        let (conn, out) = asks(&mut root, "silent", t0);
        assert!(matches!(
            frames_on(&out, conn).as_slice(),
            [Frame::Challenge { .. }]
        ));
        assert_eq!(root.poll_timeout(), Some(t0 + handshake));
        root.handle_timeout(t0 + handshake - ms(1));
        assert!(drain(&mut root).is_empty());
        root.handle_timeout(t0 + handshake);
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
