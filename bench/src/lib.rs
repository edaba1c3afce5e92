//! The `multipoint` command-line tool: runs the data plane and reports what it measured
//! (messages and bytes per second, gaps, drops, one-way latency percentiles).
//!
//! The binary (`src/main.rs`) only parses the command line, sets up logging
//! (`RUST_LOG`) and prints errors; the work lives in this library so that it can be
//! tested and reused:
//!
//! - [`cli`]: the command line (clap), one subcommand per tool (`demo` for now);
//! - [`demo`]: a publisher and subscribers on loopback multicast, in one process;
//! - [`pacing`]: the send schedule for a target message rate (sans-IO, no clock);
//! - [`report`]: the human-readable report and its one-line JSON form;
//! - [`error`]: the tool's errors.
//!
//! Nothing here panics on bad input: clap validates values, and everything else is an
//! [`Error`] whose chain says what went wrong.

#![deny(unsafe_code)]

pub mod cli;
pub mod demo;
pub mod error;
pub mod pacing;
pub mod report;

pub use error::{Error, Result};
