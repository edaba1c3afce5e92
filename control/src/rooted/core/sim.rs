//! A root core and leaf cores wired together through an in-memory pipe, on a fake clock,
//! and the tests that run sessions on it (their names start with `sim_`).
//!
//! Every frame a core sends is encoded with [`proto`](crate::rooted::proto), carried as
//! bytes and decoded at the other end, so the real codec sits between the state
//! machines. Time moves only when a test says so ([`Sim::advance`]), and then from
//! deadline to deadline as the cores ask ([`Machine::poll_timeout`]), so what happens at
//! an instant is exact to the nanosecond. A node can be frozen, like a hung process: its
//! timers stop, and what it is sent is lost (a connection to it still comes up: the
//! kernel answers for it).
//!
//! Also the fixtures the cores' unit tests share.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::leaf::{LeafCore, LeafNote};
use super::root::{Event, RootCore, RootNote};
use super::{ConnError, ConnId, Machine, Output, Transmit};
use crate::error::Error;
use crate::rooted::auth::{Nonces, AUTH_FAILED};
use crate::rooted::proto::{decode, DataPlan, Frame};
use crate::rooted::{
    Decision, JoinRequest, Key, LeafConfig, LeafId, RootConfig, RootHooks, SessionEvent,
};
use crate::socket::Direction;
use crate::transport::Transport;

// ---- fixtures ------------------------------------------------------------------------

/// Where the root listens.
pub(super) const ROOT_AT: SocketAddr = addr([10, 0, 0, 1], 7000);
/// The MoldUDP64 session name of the tests' root.
pub(super) const SESSION: [u8; 10] = *b"SIMULATED1";

const fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
        port,
    ))
}

/// Where leaf `i` listens for invitations.
pub(super) fn leaf_at(i: usize) -> SocketAddr {
    addr([10, 0, 1, u8::try_from(i).unwrap()], 7100)
}

/// Where leaf `i` receives data.
pub(super) fn leaf_data(i: usize) -> SocketAddr {
    addr([10, 0, 1, u8::try_from(i).unwrap()], 7200)
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn unicast_plan() -> DataPlan {
    DataPlan::Unicast {
        root: addr([10, 0, 0, 1], 7300),
        uplink: None,
    }
}

/// A rooted-unicast root's settings with `timeout`, offering [`unicast_plan`].
pub(super) fn root_config(timeout: Duration) -> RootConfig {
    let mut config = RootConfig::new(SESSION);
    config.timeout = timeout;
    config.plan = Some(unicast_plan());
    config.connect_timeout = ms(500);
    config
}

/// Leaf `i`'s settings: named `leaf-i`, with a data address, 1 s to connect and to be
/// answered.
pub(super) fn leaf_config(i: usize) -> LeafConfig {
    let mut config = LeafConfig::new(format!("leaf-{i}"));
    config.data = Some(leaf_data(i));
    config.connect_timeout = ms(1000);
    config.join_timeout = ms(1000);
    config
}

/// A pre-shared key of 32 bytes `byte`.
pub(super) fn key(byte: u8) -> Key {
    Key::new([byte; 32]).unwrap()
}

/// The nonces of the tests' root: a counter, seeded apart from every leaf's.
pub(super) fn root_nonces() -> Nonces {
    Nonces::counter(0xee)
}

/// The nonces of leaf `i`: a counter, seeded apart from the root's and the other leaves'.
pub(super) fn leaf_nonces(i: usize) -> Nonces {
    Nonces::counter(u8::try_from(i).unwrap())
}

/// Hooks that refuse leaves whose name starts with "bad", tell every leaf
/// `next_sequence`, and record who is gone.
#[derive(Debug, Default)]
pub(super) struct Script {
    pub(super) next_sequence: u64,
    pub(super) gone: Arc<Mutex<Vec<LeafId>>>,
}

impl RootHooks for Script {
    fn admit(&mut self, request: &JoinRequest) -> Decision {
        if request.name.starts_with("bad") {
            Decision::Refuse(format!("{} is not on the list", request.name))
        } else {
            Decision::Admit
        }
    }

    fn next_sequence(&mut self, _leaf: LeafId) -> u64 {
        self.next_sequence
    }

    fn on_gone(&mut self, leaf: LeafId) {
        self.gone.lock().unwrap().push(leaf);
    }
}

/// A rooted-unicast Invite for `direction`.
pub(super) fn invite(direction: Direction) -> Frame {
    Frame::Invite {
        transport: Transport::RootedUnicast,
        direction,
    }
}

/// Takes every output `machine` has queued.
pub(super) fn drain<M: Machine>(machine: &mut M) -> Vec<Output<M::Note>> {
    std::iter::from_fn(|| machine.poll_output()).collect()
}

/// Brings up, at `now`, the connection to `to` that `machine` asked for (its one output
/// so far): the connection, and what the machine does once it is up.
pub(super) fn bring_up<M: Machine<Note: std::fmt::Debug>>(
    machine: &mut M,
    to: SocketAddr,
    now: Instant,
) -> (ConnId, Vec<Output<M::Note>>) {
    let conn = match drain(machine).as_slice() {
        [Output::Conn(conn, Transmit::Connect(at))] if *at == to => *conn,
        other => panic!("expected a connection to {to}: {other:?}"),
    };
    machine.handle_connected(conn, now);
    (conn, drain(machine))
}

/// The frames of `outputs` sent (or sent last) on `conn`.
pub(super) fn frames_on<N>(outputs: &[Output<N>], conn: ConnId) -> Vec<&Frame> {
    outputs
        .iter()
        .filter_map(|out| match out {
            Output::Conn(id, Transmit::Send(frame) | Transmit::Close(Some(frame)))
                if *id == conn =>
            {
                Some(frame)
            }
            _ => None,
        })
        .collect()
}

/// Whether `outputs` close `conn`.
pub(super) fn closes<N>(outputs: &[Output<N>], conn: ConnId) -> bool {
    outputs
        .iter()
        .any(|out| matches!(out, Output::Conn(id, Transmit::Close(_)) if *id == conn))
}

/// The notes of `outputs`, in order.
pub(super) fn notes<N>(outputs: Vec<Output<N>>) -> Vec<N> {
    outputs
        .into_iter()
        .filter_map(|out| match out {
            Output::Note(note) => Some(note),
            Output::Conn(..) => None,
        })
        .collect()
}

// ---- the simulation ------------------------------------------------------------------

/// A process in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Node {
    Root,
    Leaf(usize),
}

/// A frame that reached its peer.
#[derive(Debug)]
pub(super) struct Delivered {
    /// Fake time since the start of the simulation.
    pub(super) at: Duration,
    pub(super) from: Node,
    pub(super) to: Node,
    pub(super) frame: Frame,
}

/// What the simulation needs of a core, whatever its notes.
trait Peer {
    fn accepted(&mut self, peer: SocketAddr, now: Instant) -> ConnId;
    fn connected(&mut self, conn: ConnId, now: Instant);
    fn frame(&mut self, conn: ConnId, frame: Frame, now: Instant);
    fn lost(&mut self, conn: ConnId, why: ConnError);
    fn timeout(&mut self, now: Instant);
    fn deadline(&self) -> Option<Instant>;
}

impl<M: Machine> Peer for M {
    fn accepted(&mut self, peer: SocketAddr, now: Instant) -> ConnId {
        self.handle_accepted(peer, now)
    }
    fn connected(&mut self, conn: ConnId, now: Instant) {
        self.handle_connected(conn, now);
    }
    fn frame(&mut self, conn: ConnId, frame: Frame, now: Instant) {
        self.handle_frame(conn, frame, now);
    }
    fn lost(&mut self, conn: ConnId, why: ConnError) {
        self.handle_lost(conn, why);
    }
    fn timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
    fn deadline(&self) -> Option<Instant> {
        self.poll_timeout()
    }
}

/// One root and its leaves, their connections, and a fake clock.
pub(super) struct Sim {
    epoch: Instant,
    now: Instant,
    pub(super) root: RootCore,
    pub(super) leaves: Vec<LeafCore>,
    frozen: HashSet<Node>,
    /// Each end of a connection, to the other end.
    pipes: HashMap<(Node, ConnId), (Node, ConnId)>,
    /// Bytes that arrived at an end and wait for the rest of their frame.
    inbufs: HashMap<(Node, ConnId), Vec<u8>>,
    /// Every frame that reached its peer, in order.
    pub(super) wire: Vec<Delivered>,
    root_notes: Vec<RootNote>,
    leaf_notes: Vec<Vec<LeafNote>>,
}

impl Sim {
    /// A rooted-unicast root with `config` and `hooks`, listening at [`ROOT_AT`], and
    /// `leaves` leaves with [`leaf_config`], each listening at [`leaf_at`].
    pub(super) fn new(config: RootConfig, hooks: impl RootHooks, leaves: usize) -> Sim {
        Sim::with_leaves(config, hooks, (0..leaves).map(leaf_config))
    }

    /// As [`Sim::new`], with the leaves' settings given.
    pub(super) fn with_leaves(
        config: RootConfig,
        hooks: impl RootHooks,
        leaves: impl IntoIterator<Item = LeafConfig>,
    ) -> Sim {
        let epoch = Instant::now();
        let leaves: Vec<LeafCore> = leaves
            .into_iter()
            .enumerate()
            .map(|(i, config)| {
                LeafCore::new(Transport::RootedUnicast, config).with_nonces(leaf_nonces(i))
            })
            .collect();
        let root = RootCore::new(Transport::RootedUnicast, config, Box::new(hooks))
            .with_nonces(root_nonces());
        Sim {
            epoch,
            now: epoch,
            root,
            leaf_notes: leaves.iter().map(|_| Vec::new()).collect(),
            leaves,
            frozen: HashSet::new(),
            pipes: HashMap::new(),
            inbufs: HashMap::new(),
            wire: Vec::new(),
            root_notes: Vec::new(),
        }
    }

    /// Fake time since the start.
    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Leaf `i` asks the root to admit it.
    pub(super) fn join(&mut self, i: usize, direction: Direction) -> crate::Result<()> {
        let result = self.leaves[i].handle_join(ROOT_AT, direction, self.now);
        self.settle();
        result
    }

    /// The root invites leaf `i`.
    pub(super) fn invite(&mut self, i: usize, direction: Direction) -> crate::Result<()> {
        let result = self.root.handle_invite(leaf_at(i), direction, self.now);
        self.settle();
        result
    }

    /// Runs `input` on the root and carries out what follows.
    pub(super) fn at_root<T>(&mut self, input: impl FnOnce(&mut RootCore) -> T) -> T {
        let result = input(&mut self.root);
        self.settle();
        result
    }

    /// Runs `input` on leaf `i` and carries out what follows.
    pub(super) fn at_leaf<T>(&mut self, i: usize, input: impl FnOnce(&mut LeafCore) -> T) -> T {
        let result = input(&mut self.leaves[i]);
        self.settle();
        result
    }

    /// Stops `node`, like a hung process.
    pub(super) fn freeze(&mut self, node: Node) {
        self.frozen.insert(node);
    }

    /// Starts `node` again.
    pub(super) fn thaw(&mut self, node: Node) {
        self.frozen.remove(&node);
    }

    /// Moves the clock on by `by`, running every timer that falls due on the way at its
    /// instant.
    pub(super) fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        // A core whose deadline does not move past what handle_timeout did would spin a
        // driver; here it fails the test.
        for _ in 0..100_000 {
            match self.next_deadline() {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.tick();
                }
                _ => {
                    self.now = until;
                    return self.tick();
                }
            }
        }
        panic!("the cores' deadlines do not move on");
    }

    /// The root's notes since the last call.
    pub(super) fn root_notes(&mut self) -> Vec<RootNote> {
        std::mem::take(&mut self.root_notes)
    }

    /// The root's events since the last call (other notes are dropped).
    pub(super) fn root_events(&mut self) -> Vec<Event> {
        self.root_notes()
            .into_iter()
            .filter_map(|note| match note {
                RootNote::Event(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    /// Leaf `i`'s notes since the last call.
    pub(super) fn leaf_notes(&mut self, i: usize) -> Vec<LeafNote> {
        std::mem::take(&mut self.leaf_notes[i])
    }

    /// Moves the clock on to `at` (fake time since the start), as [`advance`](Self::advance).
    pub(super) fn advance_to(&mut self, at: Duration) {
        self.advance(at.saturating_sub(self.elapsed()));
    }

    /// When the last frame from `from` reached `to`.
    pub(super) fn last_sent(&self, from: Node, to: Node) -> Duration {
        let sent = self.sent(from, to, |_| true);
        *sent.last().expect("a frame was sent")
    }

    /// When `frame`s like the one given went from `from` to `to` (fake time since the
    /// start).
    pub(super) fn sent(
        &self,
        from: Node,
        to: Node,
        like: impl Fn(&Frame) -> bool,
    ) -> Vec<Duration> {
        self.wire
            .iter()
            .filter(|d| d.from == from && d.to == to && like(&d.frame))
            .map(|d| d.at)
            .collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut nodes = vec![Node::Root];
        nodes.extend((0..self.leaves.len()).map(Node::Leaf));
        nodes
            .into_iter()
            .filter(|node| !self.frozen.contains(node))
            .filter_map(|node| self.peer(node).deadline())
            .min()
    }

    fn tick(&mut self) {
        let now = self.now;
        let mut nodes = vec![Node::Root];
        nodes.extend((0..self.leaves.len()).map(Node::Leaf));
        for node in nodes {
            if !self.frozen.contains(&node) {
                self.peer_mut(node).timeout(now);
            }
        }
        self.settle();
    }

    fn peer(&self, node: Node) -> &dyn Peer {
        match node {
            Node::Root => &self.root,
            Node::Leaf(i) => &self.leaves[i],
        }
    }

    fn peer_mut(&mut self, node: Node) -> &mut dyn Peer {
        match node {
            Node::Root => &mut self.root,
            Node::Leaf(i) => &mut self.leaves[i],
        }
    }

    /// Carries out every core's outputs until none has any.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            while let Some(out) = self.root.poll_output() {
                busy = true;
                if let Some(note) = self.carry_out(Node::Root, out) {
                    self.root_notes.push(note);
                }
            }
            for i in 0..self.leaves.len() {
                while let Some(out) = self.leaves[i].poll_output() {
                    busy = true;
                    if let Some(note) = self.carry_out(Node::Leaf(i), out) {
                        self.leaf_notes[i].push(note);
                    }
                }
            }
            if !busy {
                return;
            }
        }
    }

    /// Does what `out` asks of `from`'s connection; gives a note back.
    fn carry_out<N>(&mut self, from: Node, out: Output<N>) -> Option<N> {
        match out {
            Output::Note(note) => return Some(note),
            Output::Conn(conn, Transmit::Connect(to)) => self.connect((from, conn), to),
            Output::Conn(conn, Transmit::Send(frame)) => self.send((from, conn), &frame),
            Output::Conn(conn, Transmit::Close(last)) => {
                if let Some(frame) = last {
                    self.send((from, conn), &frame);
                }
                if let Some(other) = self.pipes.remove(&(from, conn)) {
                    self.pipes.remove(&other);
                    if !self.frozen.contains(&other.0) {
                        self.peer_mut(other.0).lost(other.1, ConnError::Closed);
                    }
                }
            }
        }
        None
    }

    fn connect(&mut self, (from, conn): (Node, ConnId), to: SocketAddr) {
        let target = if to == ROOT_AT {
            Some(Node::Root)
        } else {
            (0..self.leaves.len())
                .find(|i| leaf_at(*i) == to)
                .map(Node::Leaf)
        };
        let now = self.now;
        let Some(target) = target else {
            let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
            return self.peer_mut(from).lost(conn, ConnError::Io(refused));
        };
        if !self.frozen.contains(&target) {
            // The connection comes from the node's address, on a port of its own.
            let port = 40_000 + u16::try_from(conn.0).unwrap();
            let source = match from {
                Node::Root => SocketAddr::new(ROOT_AT.ip(), port),
                Node::Leaf(i) => SocketAddr::new(leaf_at(i).ip(), port),
            };
            let accepted = self.peer_mut(target).accepted(source, now);
            self.pipes.insert((from, conn), (target, accepted));
            self.pipes.insert((target, accepted), (from, conn));
        }
        self.peer_mut(from).connected(conn, now);
    }

    /// Encodes `frame`, carries the bytes to the other end and feeds it what decodes.
    fn send(&mut self, from: (Node, ConnId), frame: &Frame) {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes).unwrap();
        let Some(&to) = self.pipes.get(&from) else {
            return;
        };
        if self.frozen.contains(&to.0) {
            return;
        }
        let now = self.now;
        let mut inbuf = self.inbufs.remove(&to).unwrap_or_default();
        // In two pieces, as TCP may hand them over.
        let (head, tail) = bytes.split_at(bytes.len() / 2);
        for piece in [head, tail] {
            inbuf.extend_from_slice(piece);
            loop {
                match decode(&inbuf) {
                    Ok(Some((frame, used))) => {
                        inbuf.drain(..used);
                        self.wire.push(Delivered {
                            at: self.elapsed(),
                            from: from.0,
                            to: to.0,
                            frame: frame.clone(),
                        });
                        self.peer_mut(to.0).frame(to.1, frame, now);
                    }
                    Ok(None) => break,
                    Err(e) => return self.peer_mut(to.0).lost(to.1, ConnError::Protocol(e)),
                }
            }
        }
        self.inbufs.insert(to, inbuf);
    }
}

// ---- sessions on the simulation ------------------------------------------------------

fn is_heartbeat(frame: &Frame) -> bool {
    matches!(frame, Frame::Heartbeat)
}

/// Leaf `i` joins and is admitted; the root's and the leaf's notes are taken.
fn joined(sim: &mut Sim, i: usize) {
    sim.join(i, Direction::ReceiverOnly).unwrap();
    assert!(matches!(
        sim.leaf_notes(i).as_slice(),
        [LeafNote::Admitted { .. }]
    ));
    assert!(sim.leaves[i].in_session());
    sim.root_notes();
}

/// A root with `timeout` and the default [`Script`], and its one leaf joined.
fn one_leaf_joined(timeout: Duration) -> Sim {
    let mut sim = Sim::new(root_config(timeout), Script::default(), 1);
    joined(&mut sim, 0);
    sim
}

#[test]
fn sim_a_leaf_that_asks_is_admitted_with_the_plan_and_the_next_sequence() {
    let hooks = Script {
        next_sequence: 4242,
        ..Script::default()
    };
    let mut sim = Sim::new(root_config(ms(3000)), hooks, 1);
    sim.join(0, Direction::Both).unwrap();

    match sim.leaf_notes(0).as_slice() {
        [LeafNote::Admitted { session, .. }] => {
            assert_eq!(session.root, ROOT_AT);
            assert_eq!(session.session, SESSION);
            assert_eq!(session.plan, unicast_plan());
            assert_eq!(session.next_sequence, Some(4242));
            assert_eq!(session.direction, Direction::Both);
            assert_eq!(session.timeout, ms(3000));
            assert!(!session.invited);
        }
        other => panic!("expected one admission, got {other:?}"),
    }
    assert!(sim.leaves[0].in_session());
    match sim.root_notes().as_slice() {
        [RootNote::Listed(leaf), RootNote::Event(Event::Joined(id))] => {
            assert_eq!(leaf.id, *id);
            assert_eq!(leaf.request.name, "leaf-0");
            assert_eq!(leaf.request.data, Some(leaf_data(0)));
            assert!(!leaf.request.invited);
        }
        other => panic!("expected the leaf listed, then joined: {other:?}"),
    }
}

#[test]
fn sim_a_refused_join_carries_the_reason_and_no_plan() {
    let mut bad = leaf_config(0);
    bad.name = "bad-leaf".into();
    let mut sim = Sim::with_leaves(root_config(ms(3000)), Script::default(), [bad]);
    sim.join(0, Direction::ReceiverOnly).unwrap();

    match sim.leaf_notes(0).as_slice() {
        [LeafNote::JoinFailed(Error::Refused { peer, reason })] => {
            assert_eq!(*peer, ROOT_AT);
            assert_eq!(reason, "bad-leaf is not on the list");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!sim.leaves[0].in_session());
    assert!(matches!(
        sim.root_events().as_slice(),
        [Event::Refused { reason, .. }] if reason.contains("bad-leaf")
    ));
    let admits = sim.sent(Node::Root, Node::Leaf(0), |f| {
        matches!(f, Frame::Admit { .. })
    });
    assert!(admits.is_empty(), "no plan reaches a refused leaf");
    // The refused leaf may ask again: its place is free.
    assert!(sim.join(0, Direction::ReceiverOnly).is_ok());
}

#[test]
fn sim_an_invitation_is_accepted_and_one_is_declined_by_the_leafs_policy() {
    let mut picky = leaf_config(0);
    picky.on_invite = Some(Arc::new(|invitation: &crate::rooted::Invitation| {
        if invitation.direction == Direction::SenderOnly {
            Decision::Refuse("I only listen".into())
        } else {
            Decision::Admit
        }
    }));
    let mut sim = Sim::with_leaves(root_config(ms(3000)), Script::default(), [picky]);

    sim.invite(0, Direction::SenderOnly).unwrap();
    match sim.root_notes().as_slice() {
        [RootNote::Invited(Err(Error::Refused { peer, reason }))] => {
            assert_eq!(*peer, leaf_at(0));
            assert_eq!(reason, "I only listen");
        }
        other => panic!("expected the invitation declined, got {other:?}"),
    }
    assert!(sim.leaf_notes(0).is_empty());
    assert!(!sim.leaves[0].in_session());

    sim.invite(0, Direction::ReceiverOnly).unwrap();
    match sim.root_notes().as_slice() {
        [RootNote::Listed(leaf), RootNote::Invited(Ok(id)), RootNote::Event(Event::Joined(joined))] =>
        {
            assert!(leaf.request.invited);
            assert_eq!((leaf.id, *id), (*joined, *joined));
        }
        other => panic!("expected the leaf listed, the answer, then joined: {other:?}"),
    }
    assert!(matches!(
        sim.leaf_notes(0).as_slice(),
        [LeafNote::Admitted { session, .. }] if session.invited && session.plan == unicast_plan()
    ));
    assert!(sim.leaves[0].in_session());
}

#[test]
fn sim_a_silent_leaf_is_timed_out_at_the_deadline_not_before() {
    let timeout = ms(900);
    let hooks = Script::default();
    let gone = Arc::clone(&hooks.gone);
    let mut sim = Sim::new(root_config(timeout), hooks, 2);
    joined(&mut sim, 0);
    joined(&mut sim, 1);
    // Heartbeats flow for a while, then leaf 0 hangs (its connection stays open).
    sim.advance(ms(2000));
    sim.freeze(Node::Leaf(0));
    let deadline = sim.last_sent(Node::Leaf(0), Node::Root) + timeout;

    sim.advance_to(deadline - ms(1));
    assert_eq!(sim.elapsed(), deadline - ms(1));
    assert!(sim.root_events().is_empty(), "nothing before the deadline");

    sim.advance(ms(1));
    let events = sim.root_events();
    assert!(
        matches!(events.as_slice(), [Event::TimedOut { leaf }] if gone.lock().unwrap().as_slice() == [*leaf]),
        "{events:?}"
    );
    // The healthy leaf is untouched, and stays so.
    sim.advance(ms(5000));
    assert!(sim.root_events().is_empty());
    assert!(sim.leaves[1].in_session());
    assert_eq!(sim.root.leaf_count(), 1);
}

#[test]
fn sim_a_leaf_notices_a_silent_root_at_its_deadline() {
    let timeout = ms(600);
    let mut sim = one_leaf_joined(timeout);
    sim.advance(ms(1000));
    sim.freeze(Node::Root);
    let deadline = sim.last_sent(Node::Root, Node::Leaf(0)) + timeout;

    sim.advance_to(deadline - ms(1));
    assert!(sim.leaf_notes(0).is_empty(), "nothing before the deadline");
    assert!(sim.leaves[0].in_session());

    sim.advance(ms(1));
    match sim.leaf_notes(0).as_slice() {
        [LeafNote::Ended {
            event: Some(SessionEvent::RootGone { reason }),
            ..
        }] => assert!(reason.contains("within the timeout"), "{reason}"),
        other => panic!("expected RootGone, got {other:?}"),
    }
    assert!(!sim.leaves[0].in_session());
}

#[test]
fn sim_heartbeats_go_out_every_third_of_the_timeout_while_idle() {
    let timeout = ms(300);
    let mut sim = one_leaf_joined(timeout);
    sim.advance(ms(3000));

    for (from, to) in [(Node::Root, Node::Leaf(0)), (Node::Leaf(0), Node::Root)] {
        let beats = sim.sent(from, to, is_heartbeat);
        assert_eq!(beats.len(), 30, "{from:?} -> {to:?}: {beats:?}");
        assert_eq!(beats[0], timeout / 3);
        for pair in beats.windows(2) {
            assert_eq!(pair[1] - pair[0], timeout / 3, "{from:?} -> {to:?}");
        }
    }
    assert!(sim.root_events().is_empty());
    assert!(sim.leaf_notes(0).is_empty());
    assert!(sim.leaves[0].in_session());
}

#[test]
fn sim_closing_the_root_sends_end_to_every_leaf() {
    let hooks = Script::default();
    let gone = Arc::clone(&hooks.gone);
    let mut sim = Sim::new(root_config(ms(3000)), hooks, 3);
    for i in 0..3 {
        joined(&mut sim, i);
    }
    sim.at_root(|root| root.handle_close());

    for i in 0..3 {
        let ends = sim.sent(
            Node::Root,
            Node::Leaf(i),
            |f| matches!(f, Frame::End { reason } if reason == "the root closed the session"),
        );
        assert_eq!(ends.len(), 1, "leaf {i}");
        assert!(matches!(
            sim.leaf_notes(i).as_slice(),
            [LeafNote::Ended { event: Some(SessionEvent::Ended { reason }), .. }] if reason.contains("closed")
        ));
        assert!(!sim.leaves[i].in_session());
    }
    let events = sim.root_events();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| matches!(e, Event::Left { .. })));
    assert_eq!(gone.lock().unwrap().len(), 3);
    assert_eq!(sim.root.poll_timeout(), None, "no connection is left");
}

#[test]
fn sim_a_second_join_while_one_is_pending_is_refused() {
    let mut sim = Sim::new(root_config(ms(3000)), Script::default(), 1);
    // A root that takes the connection and never answers keeps the join pending.
    sim.freeze(Node::Root);
    sim.join(0, Direction::ReceiverOnly).unwrap();
    assert!(matches!(
        sim.join(0, Direction::ReceiverOnly),
        Err(Error::JoinPending)
    ));
    // An invitation meanwhile is declined with the reason.
    sim.thaw(Node::Root);
    sim.invite(0, Direction::ReceiverOnly).unwrap();
    assert!(matches!(
        sim.root_notes().as_slice(),
        [RootNote::Invited(Err(Error::Refused { reason, .. }))] if reason.contains("pending")
    ));

    // The first join times out at the join timeout, and frees the place.
    sim.freeze(Node::Root);
    sim.advance(ms(999));
    assert!(sim.leaf_notes(0).is_empty());
    sim.advance(ms(1));
    assert!(matches!(
        sim.leaf_notes(0).as_slice(),
        [LeafNote::JoinFailed(Error::TimedOut {
            what: "waiting for the root's answer",
            ..
        })]
    ));
    sim.thaw(Node::Root);
    joined(&mut sim, 0);
}

#[test]
fn sim_a_member_is_already_joined_and_declines_invitations() {
    let mut sim = one_leaf_joined(ms(3000));
    assert!(matches!(
        sim.join(0, Direction::ReceiverOnly),
        Err(Error::AlreadyJoined)
    ));
    sim.invite(0, Direction::Both).unwrap();
    assert!(matches!(
        sim.root_notes().as_slice(),
        [RootNote::Invited(Err(Error::Refused { reason, .. }))] if reason.contains("already a member")
    ));
    assert!(sim.leaves[0].in_session());
    assert_eq!(sim.root.leaf_count(), 1);
}

#[test]
fn sim_a_leaf_that_leaves_is_gone_at_the_root_and_may_join_again() {
    let mut sim = one_leaf_joined(ms(3000));
    let conn = sim.leaves[0].member_conn().unwrap();
    sim.at_leaf(0, |leaf| leaf.handle_leave(conn));

    assert!(matches!(
        sim.leaf_notes(0).as_slice(),
        [LeafNote::Ended { event: None, .. }]
    ));
    assert!(matches!(
        sim.root_events().as_slice(),
        [Event::Left { reason, .. }] if reason == "the leaf left"
    ));
    assert_eq!(sim.root.leaf_count(), 0);
    joined(&mut sim, 0);
}

#[test]
fn sim_a_removed_leaf_is_told_and_its_hook_runs() {
    let hooks = Script::default();
    let gone = Arc::clone(&hooks.gone);
    let mut sim = Sim::new(root_config(ms(3000)), hooks, 1);
    joined(&mut sim, 0);
    let leaf = LeafId(0);
    sim.at_root(|root| root.handle_remove(leaf)).unwrap();

    assert!(matches!(
        sim.leaf_notes(0).as_slice(),
        [LeafNote::Ended { event: Some(SessionEvent::Removed { reason }), .. }] if reason == "removed by the root"
    ));
    assert_eq!(sim.root_events(), [Event::Removed { leaf }]);
    assert_eq!(gone.lock().unwrap().as_slice(), [leaf]);
    assert!(matches!(
        sim.at_root(|root| root.handle_remove(leaf)),
        Err(Error::LeafGone { leaf: 0 })
    ));
}

#[test]
fn sim_an_invitation_nobody_claims_is_taken_back() {
    let mut sim = Sim::new(root_config(ms(3000)), Script::default(), 1);
    sim.invite(0, Direction::ReceiverOnly).unwrap();
    let leaf = match sim.root_notes().as_slice() {
        [_, RootNote::Invited(Ok(leaf)), _] => *leaf,
        other => panic!("expected the leaf admitted: {other:?}"),
    };
    sim.leaf_notes(0);
    // The inviter stopped waiting.
    sim.at_root(|root| root.handle_unclaimed(leaf));
    assert_eq!(sim.root_events(), [Event::Removed { leaf }]);
    assert!(matches!(
        sim.leaf_notes(0).as_slice(),
        [LeafNote::Ended { event: Some(SessionEvent::Removed { reason }), .. }] if reason.contains("gave up")
    ));
}

// ---- authenticated admission ---------------------------------------------------------

/// A root with `root_key` and the default [`Script`], and leaves with the keys given.
fn keyed(root_key: Option<Key>, leaf_keys: impl IntoIterator<Item = Option<Key>>) -> Sim {
    let mut config = root_config(ms(3000));
    config.key = root_key;
    let leaves = leaf_keys.into_iter().enumerate().map(|(i, key)| {
        let mut leaf = leaf_config(i);
        key.clone_into(&mut leaf.key);
        leaf
    });
    Sim::with_leaves(config, Script::default(), leaves)
}

/// The names of the frames that went between the root and leaf `i`, in order, both
/// ways, heartbeats left out.
fn conversation(sim: &Sim, i: usize) -> Vec<String> {
    sim.wire
        .iter()
        .filter(|d| !is_heartbeat(&d.frame))
        .filter(|d| [d.from, d.to].contains(&Node::Leaf(i)))
        .map(|d| {
            let arrow = if d.from == Node::Root { "<-" } else { "->" };
            format!("{arrow} {}", super::frame_name(&d.frame))
        })
        .collect()
}

/// Asserts that leaf `i`'s join failed with the root's refusal `authentication failed`,
/// that the root counted the refusal, and that nothing of a session reached the leaf.
fn refused_for_authentication(sim: &mut Sim, i: usize) {
    match sim.leaf_notes(i).as_slice() {
        [LeafNote::JoinFailed(Error::Refused { peer, reason })] => {
            assert_eq!(*peer, ROOT_AT);
            assert_eq!(reason, AUTH_FAILED);
        }
        other => panic!("expected the join refused: {other:?}"),
    }
    assert!(!sim.leaves[i].in_session());
    assert!(matches!(
        sim.root_events().as_slice(),
        [Event::Refused { reason, .. }] if reason == AUTH_FAILED
    ));
    assert_eq!(sim.root.leaf_count(), 0);
    let admitted = sim.sent(Node::Root, Node::Leaf(i), |f| {
        matches!(f, Frame::Admit { .. } | Frame::RootProof { .. })
    });
    assert!(admitted.is_empty(), "no plan and no proof reach the leaf");
}

#[test]
fn sim_a_leaf_with_the_roots_key_is_admitted_after_both_prove_it() {
    let mut sim = keyed(Some(key(7)), [Some(key(7))]);
    sim.join(0, Direction::ReceiverOnly).unwrap();

    assert!(matches!(
        sim.leaf_notes(0).as_slice(),
        [LeafNote::Admitted { session, .. }] if session.plan == unicast_plan()
    ));
    assert!(sim.leaves[0].in_session());
    assert!(matches!(
        sim.root_notes().as_slice(),
        [RootNote::Listed(leaf), RootNote::Event(Event::Joined(_))] if leaf.request.name == "leaf-0"
    ));
    assert_eq!(
        conversation(&sim, 0),
        [
            "-> Join",
            "<- Challenge",
            "-> Proof",
            "<- RootProof",
            "<- Admit"
        ]
    );
    // The session runs as any other.
    sim.advance(ms(10_000));
    assert!(sim.leaves[0].in_session());
    assert!(sim.root_events().is_empty());
}

#[test]
fn sim_a_leaf_without_a_key_is_refused_before_the_hooks_are_asked() {
    // Named so that the hooks would refuse it for another reason: they are not asked.
    let mut no_key = leaf_config(0);
    no_key.name = "bad-and-keyless".into();
    let mut config = root_config(ms(3000));
    config.key = Some(key(7));
    let mut sim = Sim::with_leaves(config, Script::default(), [no_key]);
    sim.join(0, Direction::ReceiverOnly).unwrap();

    refused_for_authentication(&mut sim, 0);
    assert_eq!(
        conversation(&sim, 0),
        ["-> Join", "<- Challenge", "-> Refuse", "<- Refuse"]
    );
}

#[test]
fn sim_a_leaf_with_a_wrong_key_is_refused_with_authentication_failed() {
    let mut sim = keyed(Some(key(7)), [Some(key(8))]);
    sim.join(0, Direction::Both).unwrap();

    refused_for_authentication(&mut sim, 0);
    assert_eq!(
        conversation(&sim, 0),
        ["-> Join", "<- Challenge", "-> Proof", "<- Refuse"]
    );
    // The place is free, and a second try fails the same way.
    sim.join(0, Direction::Both).unwrap();
    refused_for_authentication(&mut sim, 0);
}

#[test]
fn sim_a_replayed_exchange_is_refused() {
    let mut sim = keyed(Some(key(7)), [Some(key(7))]);
    joined(&mut sim, 0);
    // What someone on the path recorded of the leaf's side of that exchange.
    let recorded: Vec<Frame> = sim
        .wire
        .iter()
        .filter(|d| d.from == Node::Leaf(0))
        .filter(|d| matches!(d.frame, Frame::Join { .. } | Frame::Proof { .. }))
        .map(|d| d.frame.clone())
        .collect();
    assert_eq!(recorded.len(), 2);

    // Played back to the root on a connection of its own.
    let (replay, challenge) = sim.at_root(|root| {
        let now = Instant::now();
        let conn = root.handle_accepted(addr([10, 0, 9, 9], 40_999), now);
        root.handle_frame(conn, recorded[0].clone(), now);
        let challenge = frames_on(&drain(root), conn)
            .into_iter()
            .cloned()
            .collect::<Vec<_>>();
        root.handle_frame(conn, recorded[1].clone(), now);
        (drain(root), challenge)
    });
    assert!(
        matches!(challenge.as_slice(), [Frame::Challenge { nonce }]
            if !sim.wire.iter().any(|d| d.frame == Frame::Challenge { nonce: *nonce })),
        "a fresh nonce: {challenge:?}"
    );
    assert!(
        matches!(frames_on(&replay, ConnId(1)).as_slice(), [Frame::Refuse { reason }] if reason == AUTH_FAILED),
        "{replay:?}"
    );
    assert!(matches!(
        notes(replay).as_slice(),
        [RootNote::Event(Event::Refused { reason, .. })] if reason == AUTH_FAILED
    ));
    assert_eq!(sim.root.leaf_count(), 1, "only the real leaf is in");
}

#[test]
fn sim_a_replayed_root_is_refused_by_the_leaf() {
    let mut sim = keyed(Some(key(7)), [Some(key(7)), Some(key(7))]);
    joined(&mut sim, 0);
    // The root's side of leaf 0's exchange, played to leaf 1 as if it were a root.
    let recorded: Vec<Frame> = sim
        .wire
        .iter()
        .filter(|d| d.from == Node::Root && d.to == Node::Leaf(0))
        .filter(|d| !is_heartbeat(&d.frame))
        .map(|d| d.frame.clone())
        .collect();
    assert_eq!(
        recorded.len(),
        3,
        "Challenge, RootProof, Admit: {recorded:?}"
    );
    let leaf = &mut sim.leaves[1];
    let now = Instant::now();
    leaf.handle_join(ROOT_AT, Direction::ReceiverOnly, now)
        .unwrap();
    let (conn, _) = bring_up(leaf, ROOT_AT, now);
    for frame in recorded {
        leaf.handle_frame(conn, frame, now);
    }
    let out = drain(leaf);
    assert!(matches!(
        frames_on(&out, conn).as_slice(),
        [Frame::Proof { .. }, Frame::Leave { reason }] if reason == AUTH_FAILED
    ));
    assert!(matches!(
        notes(out).as_slice(),
        [LeafNote::JoinFailed(Error::AuthenticationFailed { peer: ROOT_AT, why })] if why.contains("does not match")
    ));
    assert!(!sim.leaves[1].in_session());
}

#[test]
fn sim_a_leaf_with_a_key_refuses_a_root_without_one() {
    let mut sim = keyed(None, [Some(key(7))]);
    sim.join(0, Direction::ReceiverOnly).unwrap();

    match sim.leaf_notes(0).as_slice() {
        [LeafNote::JoinFailed(err @ Error::AuthenticationFailed { peer, why })] => {
            assert_eq!(*peer, ROOT_AT);
            assert!(why.contains("asked no proof"), "{why}");
            assert!(
                err.to_string().starts_with("authentication failed"),
                "{err}"
            );
        }
        other => panic!("expected the root refused: {other:?}"),
    }
    assert!(!sim.leaves[0].in_session());
    // The root admitted it, and hears at once that it left, and why.
    let events = sim.root_events();
    assert!(
        matches!(events.as_slice(), [Event::Joined(_), Event::Left { reason, .. }] if reason == AUTH_FAILED),
        "{events:?}"
    );
    assert_eq!(sim.root.leaf_count(), 0);
}

#[test]
fn sim_an_invited_leaf_proves_the_key_and_a_wrong_one_refuses_the_invitation() {
    let mut sim = keyed(Some(key(7)), [Some(key(7)), Some(key(9))]);
    sim.invite(0, Direction::ReceiverOnly).unwrap();
    assert!(matches!(
        sim.root_notes().as_slice(),
        [RootNote::Listed(leaf), RootNote::Invited(Ok(_)), RootNote::Event(Event::Joined(_))] if leaf.request.invited
    ));
    assert!(matches!(
        sim.leaf_notes(0).as_slice(),
        [LeafNote::Admitted { session, .. }] if session.invited
    ));
    assert_eq!(
        conversation(&sim, 0),
        [
            "<- Invite",
            "-> Join",
            "<- Challenge",
            "-> Proof",
            "<- RootProof",
            "<- Admit"
        ]
    );

    sim.invite(1, Direction::ReceiverOnly).unwrap();
    assert!(matches!(
        sim.root_notes().as_slice(),
        [RootNote::Invited(Err(Error::Refused { reason, .. })), RootNote::Event(Event::Refused { .. })]
            if reason == AUTH_FAILED
    ));
    assert!(sim.leaf_notes(1).is_empty(), "nobody waited at the leaf");
    assert!(!sim.leaves[1].in_session());
    assert_eq!(sim.root.leaf_count(), 1);
}

#[test]
fn sim_leaves_naming_an_admitted_leafs_data_address_are_refused_and_it_keeps_one_stream() {
    let fakes = (1..=3).map(|i| LeafConfig {
        data: Some(leaf_data(0)),
        ..leaf_config(i)
    });
    let configs = std::iter::once(leaf_config(0)).chain(fakes);
    let mut sim = Sim::with_leaves(root_config(ms(3000)), Script::default(), configs);
    sim.join(0, Direction::ReceiverOnly).unwrap();
    for i in 1..=3 {
        sim.join(i, Direction::ReceiverOnly).unwrap();
        match sim.leaf_notes(i).as_slice() {
            [LeafNote::JoinFailed(Error::Refused { reason, .. })] => assert_eq!(
                reason,
                "the data address 10.0.1.0:7200 is taken by another leaf in the session (leaf#0)"
            ),
            other => panic!("expected leaf {i} refused, got {other:?}"),
        }
    }
    let listed = sim
        .root_notes()
        .into_iter()
        .filter(|n| matches!(n, RootNote::Listed(_)))
        .count();
    assert_eq!(listed, 1, "one leaf at that address, so one stream to it");
    assert_eq!(sim.root.leaf_count(), 1);
    assert_eq!(sim.root.stats().refused_data_taken, 3);
}
