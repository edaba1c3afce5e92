//! **multipoint**: a multicast and multipoint data plane for Linux, in one crate.
//!
//! Publish a MoldUDP64 stream to many receivers and receive it, over IP multicast (v4
//! and v6, any-source or source-specific), over unicast fan-out from a root to the leaves
//! it admitted (for networks without multicast), or over multicast that a root admits
//! leaves to. Sending and receiving run on batched io_uring (with a recvmmsg/sendmmsg
//! fallback) on per-core shards; lost messages can be recovered by re-request, a stream
//! can come on two lines (A/B), and latency is measured in histograms.
//!
//! This crate is what an application depends on: it re-exports the control plane
//! ([`control`], membership, scope, loopback, rooted sessions) and the data plane
//! ([`dataplane`]) with everything a user of each transport needs at its root. It pulls
//! in neither the command-line tool nor the host audit. [`Error`] is the data plane's;
//! the control plane's own ([`control::Error`], from calls made on [`MultipointSocket`]
//! or [`Root`] directly) converts into it with `?`.
//!
//! ```
//! use std::time::Duration;
//! use multipoint::{
//!     Event, Interface, PollConfig, Publisher, PublisherConfig, Session, ShardConfig, Shards,
//!     SubscriptionConfig,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let port = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
//! # let group = std::net::SocketAddr::from(([239, 255, 42, 1], port));
//! // let group = "239.255.42.1:31001".parse()?;
//! // Receive on a shard thread, into a ring this thread reads.
//! let mut shards = Shards::start(ShardConfig::default())?;
//! let mut sub = shards.subscribe_poll(
//!     SubscriptionConfig { interface: Interface::LOOPBACK_V4, ..SubscriptionConfig::new(group) },
//!     PollConfig::default(),
//! )?;
//!
//! // Publish on this thread (loopback: the host's own receivers get it).
//! let mut publisher = Publisher::new(PublisherConfig {
//!     interface: Interface::LOOPBACK_V4,
//!     scope: 0,
//!     ..PublisherConfig::new(Session::new("FEED1")?, group)
//! })?;
//! for i in 0..1000u32 {
//!     publisher.offer(&i.to_be_bytes())?;
//! }
//! publisher.close(); // flushes, then ends the session
//!
//! let (mut messages, mut ended) = (0, false);
//! while !ended {
//!     let polled = sub.poll_wait(
//!         |event| match event {
//!             Event::Message { .. } => messages += 1,
//!             Event::EndOfSession => ended = true,
//!             _ => {}
//!         },
//!         256,
//!         Duration::from_secs(5),
//!     );
//!     assert!(polled > 0, "the stream stopped");
//! }
//! assert_eq!(messages, 1000);
//! # Ok(())
//! # }
//! ```
//!
//! # Where to start
//!
//! | to | use |
//! |---|---|
//! | publish to a multicast group | [`Publisher`] ([`PublisherConfig`]) |
//! | receive, on a shard thread | [`Shards::subscribe`] with a [`Handler`] (a closure of `(u64, &[u8])`, or of every [`Event`] through [`on_event`]) |
//! | receive, on your own thread | [`Shards::subscribe_poll`], then [`PollSubscription::poll`] |
//! | receive in async code | [`PollSubscription::recv`], or (feature `tokio`) the subscription as a `Stream` |
//! | fan a stream out over unicast to admitted leaves | [`UnicastRoot`] (root), [`DataLeaf`] (leaf) |
//! | admit leaves, send by multicast | [`AdmittedRoot`], [`DataLeaf`] |
//! | recover lost messages | [`RerequestConfig`] on the sender, [`RecoveryConfig`] on the subscription |
//! | two lines (A/B) | [`LineB`] on the publisher, [`LineBConfig`] on the subscription |
//! | test on a lossy network without one | [`Network::Sim`] with a [`SimNet`] |
//!
//! # Threads and blocking
//!
//! Shards are threads of their own; they do not pin to cores unless
//! [`ShardConfig::pin`] says so. A [`Publisher`] is driven by the thread that calls it.
//! What waits has an async twin that does not block the caller's thread:
//! [`Shards::start_async`] and [`Shards::shutdown_async`], [`Shards::subscribe_async`] (and `subscribe_poll_async`,
//! `subscribe_socket_async`), [`Subscription::close_async`], [`DataLeaf::join_async`],
//! [`Joined::leave_async`], and with the `tokio` feature `Publisher::offer_async` (waits
//! for room) and `Publisher::close_async`. A [`Publisher`] on its own thread can wait
//! for room with [`Publisher::offer_wait`] (its [`PublisherConfig::idle`] strategy) and
//! keep a rate with a [`Pacer`].
//!
//! # Features
//!
//! - `tokio`: subscriptions (their poll rings) as `futures_core::Stream`s of
//!   [`OwnedEvent`]s, and the publisher's `offer_async` and `close_async` (which wait on
//!   tokio's reactor: run them on a runtime with I/O and timers enabled).

#![deny(missing_docs)]

/// The control plane: transports, roles, `join_leaf`, scope, loopback, interfaces, and
/// the rooted session protocol ([`control::rooted`]).
pub use multipoint_control as control;
/// The data plane, module by module (the sans-IO core, the backends, the wire format).
pub use multipoint_dataplane as dataplane;

// The control plane's vocabulary.
pub use multipoint_control::rooted::{
    DataPlan, Decision, Invitation, InvitePolicy, JoinRequest, Key, Leaf, LeafConfig, LeafHandle,
    LeafId, LeafSession, Root, RootConfig, RootEvent, RootHooks, RootLimits, RootStats,
    SessionEvent,
};
pub use multipoint_control::{
    interfaces, transports, ControlRole, DataRole, Datagram, Direction, Interface, InterfaceInfo,
    Membership, MultipointSocket, Plane, Roles, Transport, TransportInfo,
};

// The data plane's.
pub use multipoint_dataplane::core::server::ServerStats;
pub use multipoint_dataplane::core::store::StoreStats;
pub use multipoint_dataplane::io::sim::{Impairments, SimNet};
pub use multipoint_dataplane::ipc::{
    IpcAttachConfig, IpcConfig, IpcReaderStats, IpcStart, IpcSubscription, IpcWriter,
    IpcWriterStats, WriterState,
};
pub use multipoint_dataplane::latency::LatencyHistogram;
pub use multipoint_dataplane::rooted_transport::{
    Admission, AdmittedRoot, DataLeafConfig, Joined, UnicastRootConfig, UplinkHandlers,
};
pub use multipoint_dataplane::wire::Session;
pub use multipoint_dataplane::{
    hardware_stamps, HardwareStamps, KernelLatency, KernelStamps, SendLatency,
};
pub use multipoint_dataplane::{
    on_event, poll_ring, BackendChoice, BackendInfo, BackendKind, Closed, DataSocket, Error, Event,
    Fanout, FanoutConfig, FanoutLeafId, FanoutLeaves, FanoutStats, Gap, Handler, IdleStrategy,
    LeafStats, Line, LineB, LineBConfig, LineSendStats, LineStats, LinesConfig, Network,
    OfferError, OnEvent, OwnedEvent, Pacer, PollConfig, PollSubscription, PublisherConfig,
    PublisherStats, RecoveryConfig, RerequestConfig, Result, RingReader, RingStats, RingWriter,
    ShardConfig, StartAt, SubscriptionConfig, SubscriptionStats,
};
pub use multipoint_dataplane::{XdpConfig, XdpMode, XdpSendStats, XdpSetup, XdpStats, XdpZeroCopy};

/// Receive shards: threads that each own a receive backend and the subscriptions given
/// to them.
///
/// ```
/// use multipoint::{IdleStrategy, Interface, ShardConfig, Shards, SubscriptionConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut shards = Shards::start(ShardConfig {
///     shards: 2,
///     idle: IdleStrategy::Backoff, // poll 100 µs after work, then sleep
///     ..ShardConfig::default()
/// })?;
/// let sub = shards.subscribe(
///     SubscriptionConfig {
///         interface: Interface::LOOPBACK_V4,
///         ..SubscriptionConfig::new("239.255.42.2:31002".parse()?)
///     },
///     |sequence: u64, message: &[u8]| { let _ = (sequence, message); }, // on the shard
/// )?;
/// assert_eq!(sub.stats().messages, 0);
/// let closed = sub.close()?;
/// assert_eq!(closed.stats.gaps, 0);
/// shards.shutdown();
/// # Ok(())
/// # }
/// ```
#[doc(inline)]
pub use multipoint_dataplane::Shards;

/// Publishes a MoldUDP64 stream to a group (or, with [`Publisher::with_socket`], to any
/// destination).
///
/// ```
/// use multipoint::{Interface, OfferError, Publisher, PublisherConfig, Session};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut publisher = Publisher::new(PublisherConfig {
///     interface: Interface::LOOPBACK_V4,
///     scope: 0, // this host only
///     ..PublisherConfig::new(Session::new("FEED2")?, "239.255.42.3:31003".parse()?)
/// })?;
/// let mut sent = 0;
/// while sent < 10_000u64 {
///     match publisher.offer(&sent.to_be_bytes()) {
///         Ok(sequence) => { assert_eq!(sequence, sent + 1); sent += 1; }
///         // Every buffer is in flight: nothing was taken; collect finished sends.
///         Err(OfferError::Backpressure) => publisher.poll(),
///         Err(e) => return Err(e.into()),
///     }
/// }
/// let stats = publisher.close();
/// assert_eq!(stats.messages, 10_000);
/// # Ok(())
/// # }
/// ```
#[doc(inline)]
pub use multipoint_dataplane::Publisher;

/// A live subscription; its handler runs on a shard.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use multipoint::{on_event, Event, Interface, ShardConfig, Shards, SubscriptionConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut shards = Shards::start(ShardConfig::default())?;
/// let missing = Arc::new(AtomicU64::new(0));
/// let counted = Arc::clone(&missing);
/// // A closure that hears every event, not only messages.
/// let sub = shards.subscribe(
///     SubscriptionConfig {
///         interface: Interface::LOOPBACK_V4,
///         ..SubscriptionConfig::new("239.255.42.4:31004".parse()?)
///     },
///     on_event(move |event| match event {
///         Event::Gap(gap) => { counted.fetch_add(gap.count, Ordering::Relaxed); }
///         Event::EndOfSession => println!("the publisher ended its session"),
///         _ => {}
///     }),
/// )?;
/// println!("following {:?} from {:?}", sub.session(), sub.sender());
/// let closed = sub.close()?;
/// assert_eq!(closed.stats.missing, missing.load(Ordering::Relaxed));
/// # Ok(())
/// # }
/// ```
#[doc(inline)]
pub use multipoint_dataplane::Subscription;

/// The root of a `rooted-unicast` session: it admits leaves and fans its stream out to
/// each by unicast.
///
/// ```
/// use std::time::Duration;
/// use multipoint::{
///     DataLeaf, DataLeafConfig, Direction, Session, ShardConfig, Shards, Transport, UnicastRoot,
///     UnicastRootConfig,
/// };
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Listens on 127.0.0.1, any port, and admits every leaf.
/// let mut root = UnicastRoot::start(UnicastRootConfig::new(Session::new("FANOUT")?))?;
/// let at = root.control_addr().expect("it listens");
///
/// let mut shards = Shards::start(ShardConfig::default())?;
/// let leaf = DataLeaf::new(DataLeafConfig::new(Transport::RootedUnicast, "leaf-1"))?;
/// let joined = leaf.join(&mut shards, at, Direction::ReceiverOnly, |_: u64, _: &[u8]| {})?;
///
/// for i in 0..100u32 {
///     while root.offer(&i.to_be_bytes()).is_err() {
///         root.poll();
///     }
/// }
/// root.flush();
/// let sub = joined.subscription().expect("a receiving leaf");
/// let deadline = std::time::Instant::now() + Duration::from_secs(5);
/// while sub.stats().messages < 100 && std::time::Instant::now() < deadline {
///     root.poll();
///     std::thread::sleep(Duration::from_millis(1));
/// }
/// assert_eq!(sub.stats().messages, 100);
/// joined.leave()?;
/// root.close();
/// # Ok(())
/// # }
/// ```
#[doc(inline)]
pub use multipoint_dataplane::rooted_transport::UnicastRoot;

/// A leaf of a rooted session (`rooted-unicast` or `admitted-multicast`): it joins a
/// root, then receives (and, on unicast, may send) through the data plane.
///
/// ```
/// use multipoint::{
///     DataLeaf, DataLeafConfig, Direction, Session, ShardConfig, Shards, Transport, UnicastRoot,
///     UnicastRootConfig,
/// };
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let root = UnicastRoot::start(UnicastRootConfig::new(Session::new("LEAVES")?))?;
/// let at = root.control_addr().expect("it listens");
/// let mut shards = Shards::start(ShardConfig::default())?;
///
/// let leaf = DataLeaf::new(DataLeafConfig::new(Transport::RootedUnicast, "leaf-2"))?;
/// let joined = leaf.join(&mut shards, at, Direction::ReceiverOnly, |_: u64, _: &[u8]| {})?;
/// assert_eq!(joined.session().direction(), Direction::ReceiverOnly);
/// // Leaving tells the root; its fan-out stops sending to this leaf.
/// let closed = joined.leave()?.expect("it received");
/// assert_eq!(closed.stats.gaps, 0);
/// # drop(root);
/// # Ok(())
/// # }
/// ```
#[doc(inline)]
pub use multipoint_dataplane::rooted_transport::DataLeaf;

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
