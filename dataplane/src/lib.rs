//! The multipoint data plane: moving MoldUDP64 packets between publishers and
//! subscribers with batched io_uring I/O, per-core shards and latency histograms.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

pub mod latency;
pub mod sequence;
pub mod wire;
