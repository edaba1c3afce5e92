//! What the rooted control plane's integration tests share: a rooted-unicast root and
//! leaves on loopback, hooks made of a closure, the events the tests wait for, and a leaf
//! spoken by hand on the wire.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use multipoint_control::rooted::proto::Frame;
use multipoint_control::rooted::{
    DataPlan, Decision, JoinRequest, Leaf, LeafConfig, LeafHandle, LeafSession, Root, RootConfig,
    RootEvent, RootHooks, SessionEvent,
};
use multipoint_control::{Direction, Error, Roles, Transport};

/// The session name of every test root.
pub(crate) const SESSION: [u8; 10] = *b"ROOTED0001";
/// Any free port on loopback.
pub(crate) const ANY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// The plan the test roots offer.
pub(crate) fn unicast_plan() -> DataPlan {
    DataPlan::Unicast {
        root: "127.0.0.1:40100".parse().unwrap(),
        uplink: None,
    }
}

/// A root's settings with `timeout`, offering [`unicast_plan`].
pub(crate) fn root_config(timeout: Duration) -> RootConfig {
    let mut config = RootConfig::new(SESSION);
    config.timeout = timeout;
    config.plan = Some(unicast_plan());
    config
}

/// A leaf's settings: named `name`, receiving data on 127.0.0.1:`port`.
pub(crate) fn leaf_config(name: &str, port: u16) -> LeafConfig {
    let mut config = LeafConfig::new(name);
    config.data = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    config
}

/// A rooted-unicast root with [`root_config`], listening on loopback, and where.
pub(crate) fn root(timeout: Duration) -> (Root, SocketAddr) {
    let root = Root::new(Transport::RootedUnicast, Roles::ROOT, root_config(timeout)).unwrap();
    let at = root.listen(ANY).unwrap();
    (root, at)
}

/// A rooted-unicast root deciding with `hooks` (3 s timeout), listening on loopback.
pub(crate) fn root_with(hooks: impl RootHooks) -> (Root, SocketAddr) {
    let root = Root::with_hooks(
        Transport::RootedUnicast,
        Roles::ROOT,
        root_config(Duration::from_secs(3)),
        hooks,
    )
    .unwrap();
    let at = root.listen(ANY).unwrap();
    (root, at)
}

/// A rooted-unicast leaf with [`leaf_config`].
pub(crate) fn leaf(name: &str, port: u16) -> Leaf {
    Leaf::new(
        Transport::RootedUnicast,
        Roles::LEAF,
        leaf_config(name, port),
    )
    .unwrap()
}

/// Root hooks that decide admissions with the closure and do the default for the rest.
pub(crate) struct Admit<F>(pub(crate) F);

impl<F> RootHooks for Admit<F>
where
    F: FnMut(&JoinRequest) -> Decision + Send + 'static,
{
    fn admit(&mut self, request: &JoinRequest) -> Decision {
        (self.0)(request)
    }
}

/// The root's next event, within `within`.
pub(crate) fn next_event(root: &Root, within: Duration) -> RootEvent {
    root.events()
        .recv_timeout(within)
        .unwrap_or_else(|_| panic!("no root event within {within:?}"))
}

/// The next root event, which must be a join: the leaf's handle.
pub(crate) fn joined(root: &Root) -> LeafHandle {
    match next_event(root, Duration::from_secs(2)) {
        RootEvent::Joined(handle) => handle,
        other => panic!("expected Joined, got {other:?}"),
    }
}

/// A root with `timeout` (see [`root`]) and a leaf named `name` (data on `port`) in a
/// session with it as a receiver: the root, where it listens, the leaf and its session.
/// The root's Joined event is taken.
pub(crate) fn root_and_receiver(
    timeout: Duration,
    name: &str,
    port: u16,
) -> (Root, SocketAddr, Leaf, LeafSession) {
    let (root, at) = root(timeout);
    let leaf = leaf(name, port);
    let session = leaf.join_leaf(at, Direction::ReceiverOnly).unwrap();
    joined(&root);
    (root, at, leaf, session)
}

/// Who refused a join, and why; fails the test unless `result` is a refusal.
pub(crate) fn refusal<T: std::fmt::Debug>(result: Result<T, Error>) -> (SocketAddr, String) {
    match result {
        Err(Error::Refused { peer, reason }) => (peer, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The one event of a session (it ends the session), within `within`.
pub(crate) fn session_event(session: &LeafSession, within: Duration) -> SessionEvent {
    session.events().recv_timeout(within).unwrap()
}

/// A leaf spoken by hand: connects to the root at `at` and asks to join as a receiver
/// named `name` whose data goes to 127.0.0.1:`port`.
pub(crate) fn join_by_hand(at: SocketAddr, name: &str, port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(at).unwrap();
    let mut out = Vec::new();
    Frame::Join {
        transport: Transport::RootedUnicast,
        direction: Direction::ReceiverOnly,
        data: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        name: name.into(),
    }
    .encode(&mut out)
    .unwrap();
    stream.write_all(&out).unwrap();
    stream
}

/// What the peer sends on `stream` until it closes (waiting 3 s at most for each read),
/// and how reading ended.
pub(crate) fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, std::io::Result<usize>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut bytes = Vec::new();
    let read = stream.read_to_end(&mut bytes);
    (bytes, read)
}
