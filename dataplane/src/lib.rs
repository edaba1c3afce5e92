//! The multipoint data plane: moving MoldUDP64 packets between publishers and
//! subscribers with batched io_uring I/O, per-core shards, unicast fan-out to many leaves
//! ([`fanout`]) and latency histograms.
//!
//! # The shape
//!
//! Modelled on quinn (a deterministic protocol core; one crate of socket tricks) and
//! smoltcp (typed views over bytes):
//!
//! | layer | folder | holds |
//! |---|---|---|
//! | framing | [`wire`] | MoldUDP64 packets as typed views over bytes (`Packet::new_checked`) and owned `Repr`s; [`wire::frame`], raw Ethernet/IP/UDP frames for AF_XDP |
//! | sans-IO core | [`core`] | the packetizer, each subscription's receive state (parse, session, sequencing, gaps), the fan-out's per-leaf cursors; no socket, thread or clock |
//! | seam | [`io`] | `BatchSend` and `BatchRecv`, the two traits every backend implements |
//! | backends | `io/uring/` (`send`, `recv`, `buf_ring`), `io/mmsg/` (`send`, `recv`), [`io::xdp`] (`program`, `umem`, `ring`, `socket`, `recv`, `send`), [`io::sim`] | io_uring, the recvmmsg/sendmmsg fallback, AF_XDP (kernel bypass, with its XDP program in `bpf/steer.c`), a simulated network that loses, reorders and corrupts on purpose |
//! | runtime | [`runtime`] | one shard runtime: thread, pinning, idle strategy, command link, wake-up |
//! | drivers | [`publisher`], [`subscribe`], [`fanout`], [`rooted_transport`] | the public objects: they give the core buffers and time, and carry out what it says through a backend |
//! | pacing | [`pacing`] | a sans-IO rate schedule with bounded bursts ([`Pacer`]) |
//! | measurement | [`latency`], [`stats`], [`stat`], [`host`] | histograms and interval logs, counters, the counters file other processes read (`multipoint stat`), what the data plane asks of the host |
//!
//! The decisions live in the core once; the publisher and the fan-out share one
//! packetizer, the receive shards one receive state, and every backend (including the
//! simulated network the core's tests run on) sits behind the same seam.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

pub mod config;
pub mod core;
pub mod error;
pub mod fanout;
pub mod host;
pub mod io;
pub mod ipc;
pub mod latency;
pub mod pacing;
pub mod publisher;
pub mod rooted_transport;
pub mod runtime;
pub mod stat;
pub mod stats;
pub mod subscribe;
pub mod wire;

pub use crate::config::{
    BackendChoice, BackendInfo, BackendKind, IdleStrategy, Network, XdpConfig, XdpMode, XdpZeroCopy,
};
pub use crate::core::event::{on_event, Event, OnEvent, OwnedEvent};
pub use crate::core::lines::{Line, LineStats, LinesConfig};
pub use crate::core::packetizer::OfferError;
pub use crate::core::receive::Handler;
pub use crate::core::recovery::RecoveryConfig;
pub use crate::core::sequence::{Gap, StartAt};
pub use crate::core::stamps::{KernelLatency, KernelStamps, SendLatency};
pub use crate::error::{Error, Result};
pub use crate::fanout::{Fanout, FanoutConfig, FanoutLeafId, FanoutLeaves, FanoutStats, LeafStats};
pub use crate::host::{HostNeeds, RingSize};
pub use crate::io::stamps::{hardware_stamps, HardwareStamps};
pub use crate::io::xdp::{XdpSendStats, XdpSetup, XdpStats};
pub use crate::io::DataSocket;
#[cfg(not(loom))]
pub use crate::ipc::{
    IpcAttachConfig, IpcConfig, IpcReaderStats, IpcStart, IpcSubscription, IpcWriter,
    IpcWriterStats, WriterState,
};
pub use crate::pacing::Pacer;
pub use crate::publisher::RerequestConfig;
pub use crate::publisher::{LineB, LineSendStats, Publisher, PublisherConfig};
pub use crate::stats::{PublisherStats, SubscriptionStats};
pub use crate::subscribe::{
    poll_ring, Closed, LineBConfig, PollConfig, PollSubscription, RingReader, RingStats,
    RingWriter, ShardConfig, Shards, Subscription, SubscriptionConfig,
};
