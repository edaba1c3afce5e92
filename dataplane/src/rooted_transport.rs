//! The rooted transports on the data plane: the control crate's rooted sessions
//! ([`multipoint_control::rooted`]) decide who is in the session; this module moves the
//! data.
//!
//! - **`rooted-unicast`** ([`UnicastRoot`]): the root fans its MoldUDP64 stream out over
//!   UDP unicast to every receiving leaf, on the per-core shards of a [`Fanout`]. A leaf
//!   that sends gets its own *uplink* socket at the root, connected to the leaf's data
//!   address, so its stream is tracked on its own and nothing but that leaf can write to
//!   it. A leaf's data socket is connected to the root's data address, so the kernel
//!   drops datagrams from anyone else: leaves cannot reach each other.
//! - **`admitted-multicast`** ([`AdmittedRoot`]): the root admits leaves over the control
//!   protocol and tells each admitted leaf the group, source and session; data flows by
//!   IP multicast from a [`Publisher`], and the leaf joins source-specifically. A refused
//!   leaf is told only the reason.
//!
//! Either root can require a pre-shared key ([`UnicastRootConfig::key`], the `key` of
//! [`AdmittedRoot::start`]) and a leaf can hold one ([`DataLeafConfig::key`]); see
//! [`multipoint_control::rooted::auth`]. A leaf that does not prove the root's key is
//! refused (`authentication failed`) before the root's hooks run, so no fan-out entry,
//! uplink or plan is made for it, and a [`DataLeaf`] attaches its data plane only once
//! admitted: a refused leaf never receives data.
//!
//! A [`DataLeaf`] is the leaf side of both: it joins (or accepts an invitation), then
//! receives through a [`Subscription`] on the caller's [`Shards`] and, when it sends,
//! publishes through its own [`Publisher`].
//!
//! # Recovery
//!
//! Either root can serve MoldUDP64 re-requests: a [`UnicastRoot`] with
//! [`FanoutConfig::rerequest`] (in [`UnicastRootConfig::fanout`]), an [`AdmittedRoot`]
//! with [`PublisherConfig::rerequest`]. The server listens at its own unicast address and
//! unicasts each reply to the requester's address. A leaf recovers what it lost with
//! [`SubscriptionConfig::recovery`] in [`DataLeafConfig::subscription`]: its
//! subscription asks the server from a second socket of its own and takes replies from
//! that address only. The leaf is told the server's address by whoever configures it
//! ([`RecoveryConfig::server`](crate::RecoveryConfig::server), e.g. `multipoint leaf
//! --rerequest`): the control protocol does not carry it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use multipoint_control::rooted::{
    DataPlan, Decision, JoinRequest, Key, Leaf, LeafConfig, LeafId, LeafSession, Root, RootConfig,
    RootHooks, RootLimits,
};
use multipoint_control::{ControlRole, DataRole, Direction, Interface, Roles, Transport};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::BackendInfo;
use crate::core::packetizer::OfferError;
use crate::core::receive::Handler;
use crate::core::sequence::StartAt;
use crate::core::server::ServerStats;
use crate::core::store::{RetransmitStore, StoreStats};
use crate::error::{Error, Result};
use crate::fanout::{Fanout, FanoutConfig, FanoutLeafId, FanoutLeaves, FanoutStats};
use crate::publisher::{Publisher, PublisherConfig};
use crate::stats::{PublisherStats, SubscriptionStats};
use crate::subscribe::{Closed, Pending, Shards, Subscription, SubscriptionConfig};
use crate::wire::Session;

/// Decides leaf-initiated joins (see [`RootHooks::admit`]); runs on the root's control
/// thread.
pub type Admission = Box<dyn FnMut(&JoinRequest) -> Decision + Send>;

/// Makes the handler for a sending leaf's uplink stream at the root.
pub type UplinkHandlers = Box<dyn FnMut(LeafId) -> Box<dyn Handler> + Send>;

/// The uplink subscriptions of sending leaves, shared by the root and its control hooks.
type Uplinks = Arc<Mutex<HashMap<LeafId, Subscription<Box<dyn Handler>>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Control path only; every update under these locks is one insert or remove.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn udp_socket(bind: SocketAddr) -> Result<Socket> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
        .map_err(Error::io("creating a UDP socket"))?;
    if bind.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(Error::io("setting IPV6_V6ONLY"))?;
    }
    socket
        .bind(&bind.into())
        .map_err(Error::io_at("binding a UDP data socket to", bind))?;
    Ok(socket)
}

fn local_addr(socket: &Socket) -> Result<SocketAddr> {
    socket
        .local_addr()
        .map_err(Error::io("reading a socket's address"))?
        .as_socket()
        .ok_or_else(|| Error::Config("the data socket has no IP address".into()))
}

/// How a [`UnicastRoot`] runs.
#[derive(Debug, Clone)]
pub struct UnicastRootConfig {
    /// Where to listen for leaves (port 0: any); `None`: only invite
    /// ([`Root::join_leaf`] through [`UnicastRoot::control`]).
    pub listen: Option<SocketAddr>,
    /// The UDP address the fan-out sends from (leaves connect to it). Port 0: any.
    pub data: SocketAddr,
    /// Leaf liveness timeout (heartbeats every third of it).
    pub timeout: Duration,
    /// Most leaves in the session (default 384, as [`RootConfig::max_leaves`]; at most
    /// the fan-out's room).
    pub max_leaves: usize,
    /// What peers may hold of the control plane: connections in all and per address,
    /// joins per second per address, the handshake timeout (see [`RootLimits`]).
    pub limits: RootLimits,
    /// The fan-out engine; its session is the session leaves are told. With
    /// [`FanoutConfig::rerequest`] the root serves re-requests
    /// ([`UnicastRoot::rerequest_address`]).
    pub fanout: FanoutConfig,
    /// How uplink streams from sending leaves are received.
    pub uplink: SubscriptionConfig,
    /// Whether a leaf may name a data address on another host than the one it joins
    /// from. Off by default: otherwise anyone could aim the stream at a third host.
    pub allow_foreign_data: bool,
    /// The pre-shared key leaves must prove they hold; `None` (the default): none.
    pub key: Option<Key>,
}

impl UnicastRootConfig {
    /// Defaults for `session` on loopback: listen on 127.0.0.1 (any port), send from
    /// 127.0.0.1 (any port), 3 s timeout, the fan-out's defaults.
    pub fn new(session: Session) -> UnicastRootConfig {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut uplink = SubscriptionConfig::new(loopback);
        uplink.session = None;
        uplink.start = StartAt::One;
        UnicastRootConfig {
            listen: Some(loopback),
            data: loopback,
            timeout: Duration::from_secs(3),
            max_leaves: RootConfig::new(*session.as_bytes()).max_leaves,
            limits: RootLimits::default(),
            fanout: FanoutConfig::new(session),
            uplink,
            allow_foreign_data: false,
            key: None,
        }
    }
}

struct UnicastHooks {
    admission: Option<Admission>,
    foreign_data: bool,
    leaves: FanoutLeaves,
    data: SocketAddr,
    members: HashMap<LeafId, FanoutLeafId>,
    uplink: Option<UplinkSide>,
}

struct UplinkSide {
    shards: Arc<Mutex<Shards>>,
    handlers: UplinkHandlers,
    config: SubscriptionConfig,
    subscriptions: Uplinks,
}

impl RootHooks for UnicastHooks {
    fn admit(&mut self, request: &JoinRequest) -> Decision {
        match &mut self.admission {
            Some(admit) => admit(request),
            None => Decision::Admit,
        }
    }

    fn on_join(
        &mut self,
        leaf: LeafId,
        request: &JoinRequest,
        _default: Option<&DataPlan>,
    ) -> std::result::Result<DataPlan, String> {
        let Some(data) = request.data else {
            return Err("a rooted-unicast leaf must give its data address".into());
        };
        if !self.foreign_data && data.ip() != request.peer.ip() {
            // Otherwise anyone could aim the root's stream at a third host.
            return Err(format!(
                "the leaf's data address {data} is not on the host it joins from ({}); \
                 this root sends only to the joining host",
                request.peer.ip()
            ));
        }
        if data.is_ipv4() != self.data.is_ipv4() {
            return Err(format!(
                "the root sends from {}, the leaf's data address {data} is of the other family",
                self.data
            ));
        }
        let uplink = if request.direction.sends() {
            let Some(side) = &mut self.uplink else {
                return Err("this root takes no data from leaves: join receive-only".into());
            };
            let socket = udp_socket(SocketAddr::new(self.data.ip(), 0))
                .and_then(|s| {
                    s.connect(&data.into())
                        .map_err(Error::io("connecting the uplink socket"))?;
                    Ok(s)
                })
                .map_err(|e| format!("the root could not open an uplink: {e}"))?;
            let at = local_addr(&socket).map_err(|e| e.to_string())?;
            let handler = (side.handlers)(leaf);
            let subscription = lock(&side.shards)
                .subscribe_socket(socket, side.config.clone(), handler)
                .map_err(|e| format!("the root could not receive the uplink: {e}"))?;
            lock(&side.subscriptions).insert(leaf, subscription);
            Some(at)
        } else {
            None
        };
        if request.direction.receives() {
            match self.leaves.add(data) {
                Ok(id) => {
                    self.members.insert(leaf, id);
                }
                Err(e) => {
                    self.on_gone(leaf);
                    return Err(format!(
                        "the root could not add the leaf to its fan-out: {e}"
                    ));
                }
            }
        }
        Ok(DataPlan::Unicast {
            root: self.data,
            uplink,
        })
    }

    fn next_sequence(&mut self, leaf: LeafId) -> u64 {
        // Read after the leaf was added (on_join): everything from here on reaches it.
        if self.members.contains_key(&leaf) {
            self.leaves.next_sequence()
        } else {
            0
        }
    }

    fn on_gone(&mut self, leaf: LeafId) {
        if let Some(id) = self.members.remove(&leaf) {
            if let Err(e) = self.leaves.remove(id) {
                // After the fan-out closed there is nothing left to remove from; anything
                // else means data may still go to a leaf that left.
                tracing::warn!("rooted-unicast: removing {leaf} from the fan-out failed: {e}");
            }
        }
        if let Some(side) = &self.uplink {
            let subscription = lock(&side.subscriptions).remove(&leaf);
            drop(subscription);
        }
    }
}

/// The root of a `rooted-unicast` session: control (admission, invitations, liveness)
/// and the fan-out of its stream to every receiving leaf. See the module docs.
#[derive(Debug)]
pub struct UnicastRoot {
    fanout: Option<Fanout>,
    control: Option<Root>,
    data: SocketAddr,
    shards: Option<Arc<Mutex<Shards>>>,
    uplinks: Uplinks,
}

impl UnicastRoot {
    /// Starts a root that admits every leaf and takes no data from leaves.
    ///
    /// # Errors
    ///
    /// As [`UnicastRoot::start_with`].
    pub fn start(config: UnicastRootConfig) -> Result<UnicastRoot> {
        UnicastRoot::start_with(config, None, None)
    }

    /// Starts a root whose leaf-initiated joins go through `admission` (`None`: admit
    /// all) and which, with `uplink`, receives what sending leaves send on those shards,
    /// each leaf's stream through the handler made for it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the data socket cannot be bound; the fan-out's errors;
    /// [`Error::Control`] if the control socket cannot be set up or listen.
    pub fn start_with(
        config: UnicastRootConfig,
        admission: Option<Admission>,
        uplink: Option<(Shards, UplinkHandlers)>,
    ) -> Result<UnicastRoot> {
        let socket = udp_socket(config.data)?;
        let data = local_addr(&socket)?;
        // A deep send buffer absorbs a fan-out burst; capped by net.core.wmem_max.
        let _ = socket.set_send_buffer_size(8 << 20);
        let session = config.fanout.session;
        let fanout = Fanout::start(socket, config.fanout.clone())?;
        let uplinks = Arc::new(Mutex::new(HashMap::new()));
        let shards = uplink.as_ref().map(|_| ());
        let (uplink_side, shards) = match (uplink, shards) {
            (Some((shards, handlers)), Some(())) => {
                let shards = Arc::new(Mutex::new(shards));
                (
                    Some(UplinkSide {
                        shards: Arc::clone(&shards),
                        handlers,
                        config: config.uplink.clone(),
                        subscriptions: Arc::clone(&uplinks),
                    }),
                    Some(shards),
                )
            }
            _ => (None, None),
        };
        let hooks = UnicastHooks {
            admission,
            foreign_data: config.allow_foreign_data,
            leaves: fanout.leaves(),
            data,
            members: HashMap::new(),
            uplink: uplink_side,
        };
        let mut control_config = RootConfig::new(*session.as_bytes());
        control_config.timeout = config.timeout;
        control_config.limits = config.limits;
        control_config.key = config.key.clone();
        // Receivers beyond the fan-out's room would be refused with a fan-out error;
        // refuse them as "session full" instead.
        control_config.max_leaves = config.max_leaves.min(
            config
                .fanout
                .shards
                .max(1)
                .saturating_mul(config.fanout.max_leaves_per_shard),
        );
        let control =
            Root::with_hooks(Transport::RootedUnicast, Roles::ROOT, control_config, hooks)?;
        if let Some(at) = config.listen {
            control.listen(at)?;
        }
        Ok(UnicastRoot {
            fanout: Some(fanout),
            control: Some(control),
            data,
            shards,
            uplinks,
        })
    }

    /// The control socket: where it listens, its events and leaves, and
    /// [`Root::join_leaf`] to invite.
    pub fn control(&self) -> &Root {
        // Present until close/drop, which consume or end the root.
        self.control
            .as_ref()
            .unwrap_or_else(|| unreachable!("root is open"))
    }

    /// Where leaves ask to join, if the root listens.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control().local_addr()
    }

    /// The UDP address the root's data comes from.
    pub fn data_addr(&self) -> SocketAddr {
        self.data
    }

    /// Where the fan-out's re-request server listens ([`Fanout::rerequest_address`]);
    /// `None` without one.
    pub fn rerequest_address(&self) -> Option<SocketAddr> {
        self.fanout.as_ref().and_then(Fanout::rerequest_address)
    }

    /// The re-request server's counters ([`Fanout::rerequest_stats`]); `None` without
    /// one.
    pub fn rerequest_stats(&self) -> Option<ServerStats> {
        self.fanout.as_ref().and_then(Fanout::rerequest_stats)
    }

    /// The retransmission store's counters and stored range ([`Fanout::store`]); `None`
    /// without a re-request server.
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.fanout
            .as_ref()
            .and_then(Fanout::store)
            .map(RetransmitStore::stats)
    }

    /// Sends the end of session to every leaf on the data plane, now (see
    /// [`Fanout::end_session`]); offers are refused from then on, and the control
    /// session goes on until [`close`](Self::close). Keep calling [`poll`](Self::poll)
    /// for as long as re-requests should be served (the linger): leaves that lost
    /// packets near the end ask for them after it.
    pub fn end_session(&mut self) {
        self.fanout().end_session()
    }

    fn fanout(&mut self) -> &mut Fanout {
        self.fanout
            .as_mut()
            .unwrap_or_else(|| unreachable!("root is open"))
    }

    /// Offers a message to every receiving leaf (see [`Fanout::offer`]).
    ///
    /// # Errors
    ///
    /// The message comes back when every buffer is in flight or it is too large.
    pub fn offer(&mut self, msg: &[u8]) -> std::result::Result<u64, OfferError> {
        self.fanout().offer(msg)
    }

    /// Sends what is packed now.
    pub fn flush(&mut self) {
        self.fanout().flush()
    }

    /// Holds full packets until [`end_batch`](Self::end_batch), so that runs leave as
    /// one GSO send per leaf (see [`Fanout::begin_batch`]).
    pub fn begin_batch(&mut self) {
        self.fanout().begin_batch()
    }

    /// Hands the held packets to the shards (see [`Fanout::end_batch`]).
    pub fn end_batch(&mut self) {
        self.fanout().end_batch()
    }

    /// The fan-out's I/O backend and why it was chosen.
    pub fn backend(&self) -> Option<&BackendInfo> {
        self.fanout.as_ref().map(Fanout::backend)
    }

    /// Heartbeats, maximum delay and re-requests (see [`Fanout::poll`]).
    pub fn poll(&mut self) {
        self.fanout().poll()
    }

    /// The fan-out's counters.
    pub fn stats(&self) -> FanoutStats {
        self.fanout.as_ref().map(Fanout::stats).unwrap_or_default()
    }

    /// The counters of a sending leaf's uplink stream, while it is in the session.
    pub fn uplink_stats(&self, leaf: LeafId) -> Option<SubscriptionStats> {
        lock(&self.uplinks).get(&leaf).map(Subscription::stats)
    }

    /// Ends the session: end of session on the data plane, then on the control plane, to
    /// every leaf; then stops every thread. Returns the fan-out's final counters.
    pub fn close(mut self) -> FanoutStats {
        self.stop()
    }

    fn stop(&mut self) -> FanoutStats {
        let stats = self.fanout.take().map(Fanout::close).unwrap_or_default();
        // Closing the control root runs on_gone for every leaf, closing the uplinks.
        drop(self.control.take());
        lock(&self.uplinks).clear();
        if let Some(shards) = self.shards.take() {
            if let Ok(shards) = Arc::try_unwrap(shards) {
                shards
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .shutdown();
            }
        }
        stats
    }
}

impl Drop for UnicastRoot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The root of an `admitted-multicast` session: it admits leaves over the control
/// protocol and publishes to the group, whose address only admitted leaves learn.
#[derive(Debug)]
pub struct AdmittedRoot {
    publisher: Publisher,
    control: Root,
}

struct AdmittedHooks {
    admission: Option<Admission>,
}

impl RootHooks for AdmittedHooks {
    fn admit(&mut self, request: &JoinRequest) -> Decision {
        if request.direction.sends() {
            // Leaves join the root's source only: what a leaf sent to the group would
            // reach nobody. Say so rather than admit a sender that is never heard.
            return Decision::Refuse(
                "admitted-multicast carries the root's data only: join receive-only".into(),
            );
        }
        match &mut self.admission {
            Some(admit) => admit(request),
            None => Decision::Admit,
        }
    }
}

impl AdmittedRoot {
    /// Starts publishing per `publisher` (its `bind` address names the source leaves
    /// join for; unset, the source is the address the socket got) and admitting leaves at
    /// `listen` through `admission` (`None`: admit all), with liveness `timeout`; with a
    /// `key`, only leaves that prove it (and are then asked `admission`).
    ///
    /// # Errors
    ///
    /// The publisher's errors; [`Error::Control`] from the control socket.
    pub fn start(
        publisher: PublisherConfig,
        listen: SocketAddr,
        timeout: Duration,
        admission: Option<Admission>,
        key: Option<Key>,
    ) -> Result<AdmittedRoot> {
        AdmittedRoot::start_limited(
            publisher,
            listen,
            timeout,
            admission,
            RootLimits::default(),
            key,
        )
    }

    /// As [`start`](Self::start), with the control plane's `limits` (connections, join
    /// rate, handshake timeout) instead of the defaults, and the key leaves must prove.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn start_limited(
        publisher: PublisherConfig,
        listen: SocketAddr,
        timeout: Duration,
        admission: Option<Admission>,
        limits: RootLimits,
        key: Option<Key>,
    ) -> Result<AdmittedRoot> {
        let group = publisher.group;
        let session = publisher.session;
        let publisher = Publisher::new(publisher)?;
        let source: IpAddr = match publisher.local_addr() {
            Some(a) if !a.ip().is_unspecified() => a.ip(),
            _ => {
                return Err(Error::Config(
                    "admitted-multicast needs the publisher bound to its source address \
                     (PublisherConfig::bind): leaves join source-specifically"
                        .into(),
                ))
            }
        };
        let mut config = RootConfig::new(*session.as_bytes());
        config.timeout = timeout;
        config.plan = Some(DataPlan::Multicast { group, source });
        config.limits = limits;
        config.key = key;
        let control = Root::with_hooks(
            Transport::AdmittedMulticast,
            Roles::new(ControlRole::Root, DataRole::Leaf),
            config,
            AdmittedHooks { admission },
        )?;
        control.listen(listen)?;
        Ok(AdmittedRoot { publisher, control })
    }

    /// The control socket (events, leaves, invitations).
    pub fn control(&self) -> &Root {
        &self.control
    }

    /// The publisher to the group.
    pub fn publisher(&mut self) -> &mut Publisher {
        &mut self.publisher
    }

    /// Ends the session on the data plane (end of session) and then at every leaf.
    pub fn close(self) -> PublisherStats {
        let stats = self.publisher.close();
        self.control.close();
        stats
    }
}

/// How a [`DataLeaf`] joins and receives.
#[derive(Debug, Clone)]
pub struct DataLeafConfig {
    /// `rooted-unicast` or `admitted-multicast`.
    pub transport: Transport,
    /// The name the root sees.
    pub name: String,
    /// `rooted-unicast`: the UDP address to receive on (port 0: any).
    pub data: SocketAddr,
    /// `admitted-multicast`: the interface to join the group on.
    pub interface: Interface,
    /// How to receive: `session`, `start`, `timestamps`, `recv_buffer`, `shard` and
    /// `recovery` apply (the session is set from the root's answer, and a leaf joining
    /// late starts where it joined). With `recovery`, the leaf asks the re-request server
    /// at [`RecoveryConfig::server`](crate::RecoveryConfig::server) for what it lost:
    /// give the root's server address there (the root's configuration, e.g. `multipoint
    /// root --rerequest-server`, says it; the control protocol does not).
    pub subscription: SubscriptionConfig,
    /// How to send, for leaves that send (`rooted-unicast`): the destination is the
    /// root's uplink.
    pub publisher: PublisherConfig,
    /// How long to wait for the root's answer.
    pub join_timeout: Duration,
    /// The pre-shared key to prove to the root (and to take admissions only from a root
    /// that proves it); `None` (the default): none.
    pub key: Option<Key>,
}

impl DataLeafConfig {
    /// Defaults for a leaf named `name` on `transport`, on loopback.
    pub fn new(transport: Transport, name: impl Into<String>) -> DataLeafConfig {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut subscription = SubscriptionConfig::new(loopback);
        subscription.start = StartAt::FirstSeen;
        subscription.interface = Interface::LOOPBACK_V4;
        DataLeafConfig {
            transport,
            name: name.into(),
            data: loopback,
            interface: Interface::LOOPBACK_V4,
            subscription,
            publisher: PublisherConfig::new(Session::from_bytes(*b"LEAF      "), loopback),
            join_timeout: Duration::from_secs(3),
            key: None,
        }
    }
}

/// A leaf of a rooted session on the data plane. See the module docs.
#[derive(Debug)]
pub struct DataLeaf {
    control: Leaf,
    socket: Option<Socket>,
    config: DataLeafConfig,
    /// Whether a [`Joined`] of this leaf is alive (its data plane attached).
    attached: Arc<AtomicBool>,
}

/// Marks a [`DataLeaf`] attached for as long as it lives.
#[derive(Debug)]
struct Attached(Arc<AtomicBool>);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A [`DataLeaf`]'s membership: the control session (its events say when it ends), the
/// subscription that receives the root's data, and the publisher for leaves that send.
#[derive(Debug)]
pub struct Joined<H> {
    session: LeafSession,
    subscription: Option<Subscription<H>>,
    publisher: Option<Publisher>,
    /// Dropped last: the data plane is detached by then.
    _attached: Attached,
}

impl DataLeaf {
    /// A leaf socket: for `rooted-unicast` its data socket is bound now, so roots can be
    /// told where to send.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the data socket cannot be bound; [`Error::Control`] if the control
    /// socket cannot be made.
    pub fn new(config: DataLeafConfig) -> Result<DataLeaf> {
        let (socket, data) = match config.transport {
            Transport::RootedUnicast => {
                let socket = udp_socket(config.data)?;
                let _ = socket.set_recv_buffer_size(config.subscription.recv_buffer);
                let at = local_addr(&socket)?;
                (Some(socket), Some(at))
            }
            _ => (None, None),
        };
        let mut control_config = LeafConfig::new(config.name.clone());
        control_config.data = data;
        control_config.join_timeout = config.join_timeout;
        control_config.key = config.key.clone();
        let control = Leaf::new(config.transport, Roles::LEAF, control_config)?;
        Ok(DataLeaf {
            control,
            socket,
            config,
            attached: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The control socket ([`Leaf::listen`] for invitations).
    pub fn control(&self) -> &Leaf {
        &self.control
    }

    /// The UDP address this leaf receives on (`rooted-unicast`).
    pub fn data_addr(&self) -> Option<SocketAddr> {
        self.control.config().data
    }

    /// Asks the root at `root` to join in `direction`; once admitted, receives through
    /// `handler` on `shards` (when the direction receives).
    ///
    /// # Errors
    ///
    /// [`Error::Control`] with the control crate's reason (refused, timed out, already a
    /// member...); the data plane's errors setting up the subscription or publisher.
    pub fn join<H: Handler>(
        &self,
        shards: &mut Shards,
        root: SocketAddr,
        direction: Direction,
        handler: H,
    ) -> Result<Joined<H>> {
        self.check_detached()?;
        // Whatever queued on the data socket so far (anyone's datagrams while it was not
        // yet connected, a previous membership's tail) is not this session's: the
        // subscription is bound to the root's data address, so a stranger's datagrams
        // are dropped and counted (foreign_source), however late they came before the
        // connect, and the root's own older ones are below the promised start.
        let session = self.control.join_leaf(root, direction)?;
        self.attach(shards, session, handler)?.wait()
    }

    /// [`join`](Self::join) without blocking the caller's thread, for async code: the
    /// root's answer (up to the join timeout) and the shard's are awaited.
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub async fn join_async<H: Handler>(
        &self,
        shards: &mut Shards,
        root: SocketAddr,
        direction: Direction,
        handler: H,
    ) -> Result<Joined<H>> {
        self.check_detached()?;
        let session = self.control.join_leaf_async(root, direction).await?;
        self.attach(shards, session, handler)?.wait_async().await
    }

    /// Waits up to `timeout` for an invitation this leaf accepts (see
    /// [`Leaf::listen`]), then attaches the data plane as [`join`](Self::join) does.
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub fn accept<H: Handler>(
        &self,
        shards: &mut Shards,
        timeout: Duration,
        handler: H,
    ) -> Result<Option<Joined<H>>> {
        self.check_detached()?;
        match self.control.accept(timeout)? {
            Some(session) => self.attach(shards, session, handler)?.wait().map(Some),
            None => Ok(None),
        }
    }

    /// A leaf whose earlier session ended (removed, root gone) while its [`Joined`] is
    /// still held must not join again: two subscriptions would split one socket's stream.
    fn check_detached(&self) -> Result<()> {
        if self.attached.load(Ordering::Acquire) {
            return Err(Error::Control(multipoint_control::Error::AlreadyJoined));
        }
        Ok(())
    }

    /// Sets up the data plane of an admitted `session`: the subscription is handed to its
    /// shard, whose answer the [`Attaching`] waits for.
    fn attach<H: Handler>(
        &self,
        shards: &mut Shards,
        session: LeafSession,
        handler: H,
    ) -> Result<Attaching<H>> {
        if self.attached.swap(true, Ordering::AcqRel) {
            return Err(Error::Control(multipoint_control::Error::AlreadyJoined));
        }
        let attached = Attached(Arc::clone(&self.attached));
        let mut sub = self.config.subscription.clone();
        sub.session = Some(Session::from_bytes(session.session()));
        let direction = session.direction();
        let (subscription, publisher) = match session.plan().clone() {
            DataPlan::Unicast { root, uplink } => {
                let socket = self
                    .socket
                    .as_ref()
                    .ok_or_else(|| Error::Config("this leaf has no data socket".into()))?;
                // Only the root's data address may write to this socket from now on.
                socket
                    .connect(&root.into())
                    .map_err(Error::io("connecting the leaf's data socket to the root"))?;
                // The root's data may already be queued (it adds a leaf before admitting
                // it): keep it. Older packets of this root (a previous membership's tail)
                // are below the promised start and count as duplicates.
                if let Some(first) = session.next_sequence() {
                    sub.start = StartAt::At(first);
                }
                sub.sender = Some(root);
                let subscription = if direction.receives() {
                    let dup = socket
                        .try_clone()
                        .map_err(Error::io("duplicating the data socket"))?;
                    Some(shards.subscribing_socket(dup.into(), sub, handler)?)
                } else {
                    None
                };
                let publisher = match (direction.sends(), uplink) {
                    (true, Some(uplink)) => {
                        let dup = socket
                            .try_clone()
                            .map_err(Error::io("duplicating the data socket"))?;
                        let mut config = self.config.publisher.clone();
                        config.session = Session::from_bytes(session.session());
                        Some(Publisher::with_socket(dup, uplink, config)?)
                    }
                    _ => None,
                };
                (subscription, publisher)
            }
            DataPlan::Multicast { group, source } => {
                let subscription = if direction.receives() {
                    sub.group = group;
                    sub.source = Some(source);
                    sub.interface = self.config.interface.clone();
                    Some(shards.subscribing(sub, handler)?)
                } else {
                    None
                };
                (subscription, None)
            }
        };
        Ok(Attaching {
            joined: Joined {
                session,
                subscription: None,
                publisher,
                _attached: attached,
            },
            pending: subscription,
        })
    }
}

/// A [`Joined`] whose subscription's shard is still to answer.
struct Attaching<H> {
    joined: Joined<H>,
    pending: Option<Pending<H>>,
}

impl<H> Attaching<H> {
    fn wait(mut self) -> Result<Joined<H>> {
        self.joined.subscription = self.pending.map(Pending::wait).transpose()?;
        Ok(self.joined)
    }

    async fn wait_async(mut self) -> Result<Joined<H>> {
        if let Some(pending) = self.pending {
            self.joined.subscription = Some(pending.wait_async().await?);
        }
        Ok(self.joined)
    }
}

impl<H: Handler> Joined<H> {
    /// The control session: what the root said and, through its events, when it ends.
    pub fn session(&self) -> &LeafSession {
        &self.session
    }

    /// The subscription receiving the root's data (for leaves that receive).
    pub fn subscription(&self) -> Option<&Subscription<H>> {
        self.subscription.as_ref()
    }

    /// The publisher to the root (for `rooted-unicast` leaves that send).
    pub fn publisher(&mut self) -> Option<&mut Publisher> {
        self.publisher.as_mut()
    }

    /// Leaves the session (the root is told), then stops receiving and sending; returns
    /// what the subscription had (its handler and counters).
    ///
    /// # Errors
    ///
    /// The control crate's or the shard's errors.
    pub fn leave(mut self) -> Result<Option<Closed<H>>> {
        if let Some(publisher) = self.publisher.take() {
            publisher.close();
        }
        let closed = self
            .subscription
            .take()
            .map(Subscription::close)
            .transpose()?;
        self.session.leave()?;
        Ok(closed)
    }

    /// [`leave`](Self::leave) without blocking the caller's thread: the shard's and the
    /// control driver's answers are awaited, and so (with the `tokio` feature) are the
    /// publisher's last sends. Without that feature a sending leaf's publisher is closed
    /// as [`Publisher::close`] does, which can wait up to 2 s for sends in flight.
    ///
    /// # Errors
    ///
    /// As [`leave`](Self::leave).
    pub async fn leave_async(mut self) -> Result<Option<Closed<H>>> {
        if let Some(publisher) = self.publisher.take() {
            #[cfg(feature = "tokio")]
            publisher.close_async().await;
            #[cfg(not(feature = "tokio"))]
            publisher.close();
        }
        let closed = match self.subscription.take() {
            Some(subscription) => Some(subscription.close_async().await?),
            None => None,
        };
        self.session.leave_async().await?;
        Ok(closed)
    }
}
