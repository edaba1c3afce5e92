//! `multipoint throughput`: delivered messages per second, with a publisher and one
//! subscriber in this process.
//!
//! The same run as [`crate::demo`] with one subscriber; the command line makes it
//! publish as fast as possible (`--rate 0`) on one shard by default. The report's
//! summary (`msgs_per_sec` in JSON) is what the subscriber was handed per second of
//! publishing, so that messages the kernel dropped on the way do not count.

use crate::cli::DemoArgs;
use crate::demo::run_local;
use crate::error::Result;
use crate::report::DemoReport;

/// The one subscriber.
pub const SUBSCRIBERS: usize = 1;

/// Runs `multipoint throughput` and returns what it measured. With `progress`, a line on
/// stdout is rewritten once a second.
///
/// # Errors
///
/// As [`crate::demo::run`].
pub fn run(args: &DemoArgs, progress: bool) -> Result<DemoReport> {
    run_local(args, "throughput", SUBSCRIBERS, progress)
}
