//! Rooted sessions: the control plane of the `rooted-unicast` and `admitted-multicast`
//! transports, where one root decides who belongs to the session.
//!
//! A [`Root`] (a `C_ROOT` socket) holds the session. Leaves join it in either of the two
//! ways of the Winsock model:
//!
//! - **leaf-initiated**: the root [listens](Root::listen); a [`Leaf`] asks with
//!   [`Leaf::join_leaf`]; the root's [`RootHooks::admit`] admits or refuses it with a
//!   reason (by default every leaf is admitted);
//! - **root-initiated**: a leaf [listens](Leaf::listen); the root's [`Root::join_leaf`]
//!   invites it; the leaf's invitation policy ([`LeafConfig::on_invite`]) accepts or
//!   declines (by default it accepts), and [`Leaf::accept`] hands out the session.
//!
//! A root that listens can also invite. Each socket has at most one join pending at a
//! time ([`Error::JoinPending`](crate::Error::JoinPending)); a leaf already in a session
//! that joins again gets [`Error::AlreadyJoined`](crate::Error::AlreadyJoined).
//!
//! An admitted leaf learns the session's [`DataPlan`]: on `rooted-unicast` where the
//! root's data comes from and where to send its own; on `admitted-multicast` the group and
//! source to join source-specifically. A refused leaf learns only the reason. Moving the
//! data is the data plane's job (`multipoint-dataplane`'s `rooted` module); this module
//! only decides who is in the session.
//!
//! A root can require its leaves to prove a pre-shared [`Key`] ([`RootConfig::key`]),
//! and a leaf with one ([`LeafConfig::key`]) takes an admission only from a root that
//! proves the same key: a challenge and response with fresh nonces from both sides, for
//! leaf-initiated joins and invitations alike (see [`auth`]). A leaf that cannot prove
//! the key is refused with the reason [`AUTH_FAILED`] before the admission hooks are
//! asked, so nothing of the data plane is set up for it.
//!
//! Both sides send heartbeats every third of the session's timeout (3 s by default). A
//! root removes a leaf it has not heard from within the timeout ([`RootEvent::TimedOut`]);
//! a leaf that has not heard from its root within the timeout is told
//! ([`SessionEvent::RootGone`]). Closing the root sends end of session to every leaf.
//!
//! # Inside
//!
//! The wire format is in [`proto`]. The session logic (who is admitted, invitations, one
//! join at a time, heartbeats, timeouts, the end of the session) is a state machine
//! without I/O for each side (`core/root.rs`, `core/leaf.rs`), fed frames, connection
//! events, commands and the time, and tested on a fake clock through an in-memory pipe
//! with the real codec in between, where a node can freeze like a hung process
//! (`core/sim.rs`). Each
//! [`Root`] and each [`Leaf`] runs one driver thread (`driver/`: epoll through `mio`)
//! for all of its connections, which only moves bytes between the sockets and its state
//! machine and keeps its timer; `root.rs` and `leaf.rs` are the public handles that send
//! it commands. Nothing here runs on a data path.

pub mod auth;
mod core;
mod driver;
#[doc(hidden)]
pub mod fuzzing;
mod leaf;
pub mod proto;
mod root;

use std::net::SocketAddr;

pub use auth::{Key, AUTH_FAILED};
pub use leaf::{Invitation, InvitePolicy, Leaf, LeafConfig, LeafSession, SessionEvent};
pub use proto::DataPlan;
pub use root::{LeafHandle, Root, RootConfig, RootEvent, RootHooks, RootLimits, RootStats};

use crate::socket::Direction;

/// Identifies a leaf within one root, for as long as the root runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeafId(pub u64);

impl std::fmt::Display for LeafId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "leaf#{}", self.0)
    }
}

/// A leaf's request to join, as the root's admission hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The leaf's control connection (its TCP address).
    pub peer: SocketAddr,
    /// How data is to flow for the leaf.
    pub direction: Direction,
    /// The UDP address the leaf receives data on (and sends from), if it gave one.
    pub data: Option<SocketAddr>,
    /// The name the leaf gave (free text, for logs and policies).
    pub name: String,
    /// Whether the root invited the leaf (root-initiated) rather than the leaf asking.
    pub invited: bool,
}

/// An admission or invitation decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the leaf in (or accept the invitation).
    Admit,
    /// Keep it out, with a reason the other side is told.
    Refuse(String),
}
