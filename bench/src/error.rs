//! The tool's one error type.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use multipoint_dataplane::latency::IntervalLogError;
use multipoint_dataplane::OfferError;

/// Everything that can make a run of the tool fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The data plane refused a setting or failed to set up or run.
    #[error(transparent)]
    Dataplane(#[from] multipoint_dataplane::Error),

    /// `--size` is larger than a packet can carry.
    #[error(
        "--size {size} is too large: a {max_datagram}-byte datagram carries messages of at \
         most {limit} bytes"
    )]
    SizeTooLarge {
        /// The requested message size.
        size: usize,
        /// The largest message the publisher takes.
        limit: usize,
        /// The publisher's datagram size.
        max_datagram: usize,
    },

    /// The publisher refused a message for a reason other than backpressure.
    #[error("the publisher refused a message")]
    Offer(#[source] OfferError),

    /// `multipoint stat` cannot list the directory of counters files.
    #[error(
        "cannot list the counters files in {} (give the directory with --dir, or \
         MULTIPOINT_STAT_DIR)",
        path.display()
    )]
    StatDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// The latency interval log could not be created.
    #[error("cannot create the latency interval log {}", path.display())]
    CreateLog {
        /// The file asked for with `--hlog`.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// Writing the latency interval log failed.
    #[error("cannot write the latency interval log {}", path.display())]
    WriteLog {
        /// The file asked for with `--hlog`.
        path: PathBuf,
        /// Why.
        #[source]
        source: IntervalLogError,
    },

    /// The latency plot's file could not be created (before the run).
    #[error("cannot create the latency plot {}", path.display())]
    CreatePlot {
        /// The file asked for with `--plot`.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// The latency plot could not be written.
    #[error("cannot write the latency plot {}", path.display())]
    WritePlot {
        /// The file asked for with `--plot`.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// Setting up the in-process leaves or their receiver threads failed.
    #[error("cannot set up {what}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// `leaf` could not join the root: refused (the root's reason follows), nobody
    /// listening, or no answer in time.
    #[error("cannot join the root at {root}")]
    Join {
        /// The root's address (`--root`).
        root: SocketAddr,
        /// Why, with the root's reason when it refused.
        #[source]
        source: multipoint_dataplane::Error,
    },

    /// The pre-shared key file (`--key-file`) cannot be used: not private to its owner,
    /// unreadable, or no key of the allowed length in it.
    #[error("cannot use --key-file")]
    Key(#[source] multipoint_control::Error),

    /// `leaf --direction send|both` on admitted-multicast, where leaves only receive.
    #[error(
        "--direction {direction} needs --transport rooted-unicast: on admitted-multicast \
         leaves only receive the root's data (use --direction receive)"
    )]
    LeafCannotSend {
        /// The direction asked for.
        direction: &'static str,
    },

    /// `pingpong` cannot put the echoes on the port after the pings'.
    #[error("group {group} has the last port: give the echoes' group with --reply-group")]
    NoReplyPort {
        /// The pings' group.
        group: SocketAddr,
    },

    /// An option that the command does not take.
    #[error("{0}")]
    Usage(&'static str),
}

/// The tool's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
