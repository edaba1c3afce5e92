//! The multipoint data plane: moving MoldUDP64 packets between publishers and
//! subscribers with batched io_uring I/O, per-core shards, unicast fan-out to many leaves
//! ([`fanout`]) and latency histograms.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod fanout;
pub mod host;
mod io;
pub mod latency;
pub mod publisher;
pub mod rooted;
pub mod sequence;
pub mod shard;
pub mod stats;
pub mod wire;

pub use config::{BackendChoice, BackendInfo, BackendKind, IdleStrategy};
pub use error::{Error, Result};
pub use host::{HostNeeds, RingSize};
pub use fanout::{Fanout, FanoutConfig, FanoutLeaves, FanoutStats, LeafId, LeafStats};
pub use publisher::{OfferError, Publisher, PublisherConfig};
pub use shard::{Closed, Handler, ShardConfig, Shards, Subscription, SubscriptionConfig};
pub use stats::{PublisherStats, SubscriptionStats};
