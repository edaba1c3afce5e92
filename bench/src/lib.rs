//! The `multipoint` command-line tool: runs the data plane and reports what it measured
//! (messages and bytes per second, gaps, drops, one-way and round-trip latency
//! percentiles).
//!
//! The binary (`src/main.rs`) only parses the command line, sets up logging
//! (`RUST_LOG`), runs the host audit, prints reports and errors; the work lives in this
//! library so that it can be tested and reused. One module per tool:
//!
//! - [`demo`]: a publisher and two subscribers on loopback multicast, in one process;
//! - [`throughput`]: the same with one subscriber, as fast as possible;
//! - [`publish`]: `multipoint pub`, and the paced send loop the in-process tools share;
//! - [`subscribe`]: `multipoint sub`, for any MoldUDP64 stream;
//! - [`pingpong`]: round-trip latency, ping and pong in one process or two;
//! - [`fanout`]: unicast fan-out from one root to N leaves, beside a plain `send_to` loop;
//! - [`root`]: `multipoint root`, the root of a rooted session (rooted-unicast or
//!   admitted-multicast) that admits leaves and publishes to them;
//! - [`leaf`]: `multipoint leaf`, a leaf that joins such a root and reports like `sub`;
//! - [`stat`]: `multipoint stat`, every live stream of the host from the counters files;
//!
//! and what they share:
//!
//! - [`cli`]: the command line (clap): one subcommand per tool, shared option groups;
//! - [`host`]: the host audit before a run, against what the run will start;
//! - [`interrupt`]: SIGINT and SIGTERM end a run early, with its report;
//! - [`progress`]: the once-a-second progress line on a terminal;
//! - [`report`]: the human-readable reports and their one-line JSON form;
//! - [`outputs`]: the output files, created before the run starts;
//! - [`plot`]: the latency percentile distribution as an SVG;
//! - [`hlog`]: the HdrHistogram interval log (`--hlog`);
//! - [`error`]: the tool's errors.
//!
//! Nothing here panics on bad input: clap validates values, and everything else is an
//! [`Error`] whose chain says what went wrong.

#![deny(unsafe_code)]

pub mod cli;
pub mod demo;
pub mod error;
pub mod fanout;
pub mod hlog;
pub mod host;
pub mod interrupt;
pub mod ipc;
pub mod leaf;
pub mod outputs;
pub mod pingpong;
pub mod plot;
pub mod progress;
pub mod publish;
pub mod report;
pub mod root;
pub mod stat;
pub mod subscribe;
pub mod throughput;

pub use error::{Error, Result};
