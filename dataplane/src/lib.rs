//! The multipoint data plane: moving MoldUDP64 packets between publishers and
//! subscribers with batched io_uring I/O, per-core shards and latency histograms.
//!
//! Nothing is here yet: the engine, framing and shards arrive with the data-plane work.
//! Sockets it will use are made and configured by `multipoint-control`.
