//! `multipoint throughput`: delivered messages per second, with a publisher and one
//! subscriber in this process.
//!
//! The same run as [`crate::demo`] with one subscriber; the command line makes it
//! publish as fast as possible (`--rate 0`) on one shard by default. The report's
//! summary (`msgs_per_sec` in JSON) is what the subscriber was handed per second of
//! publishing, so that messages the kernel dropped on the way do not count.

use multipoint_dataplane::HostNeeds;

use crate::cli::DemoArgs;
use crate::demo::{local_needs, run_local};
use crate::error::Result;
use crate::report::DemoReport;

/// The one subscriber.
pub const SUBSCRIBERS: usize = 1;

/// What `multipoint throughput` will ask of the host: one publisher, the shards and one
/// subscription.
///
/// # Errors
///
/// As [`crate::demo::host_needs`].
pub fn host_needs(args: &DemoArgs) -> Result<HostNeeds> {
    local_needs(args, SUBSCRIBERS)
}

/// Runs `multipoint throughput` and returns what it measured. With `progress`, a line on
/// stdout is rewritten once a second.
///
/// # Errors
///
/// As [`crate::demo::run`].
pub fn run(args: &DemoArgs, progress: bool) -> Result<DemoReport> {
    run_local(args, "throughput", SUBSCRIBERS, progress)
}
