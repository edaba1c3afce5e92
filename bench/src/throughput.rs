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
use crate::interrupt;
use crate::report::{DemoReport, LosslessReport, Trial};

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

/// Runs `multipoint throughput --lossless`: a first trial as fast as possible, then a
/// bisection between 0 and the rate that trial delivered, for the highest rate at which
/// every message sent arrives (with `--recover`, after recovery). Each trial is a whole
/// run of [`run`] at one `--rate`; the search stops after `--trials` more trials, or when
/// the bounds are within 2 % of each other. With `progress`, each trial's result is
/// printed as it ends.
///
/// # Errors
///
/// As [`crate::demo::run`].
pub fn lossless(args: &DemoArgs, progress: bool) -> Result<LosslessReport> {
    let mut report = LosslessReport {
        size: args.load.size,
        recovery: args.recover,
        trials: Vec::new(),
    };
    let at = |rate: u64, report: &mut LosslessReport| -> Result<Trial> {
        let mut trial_args = args.clone();
        trial_args.load.rate = rate;
        trial_args.report.plot = None;
        trial_args.report.hlog = None;
        let run = run_local(&trial_args, "throughput", SUBSCRIBERS, false)?;
        let sent = run.publisher.stats.messages;
        let (mut delivered, mut missing, mut recovered) = (u64::MAX, 0, 0);
        for sub in &run.subscribers {
            delivered = delivered.min(sub.stats.messages);
            missing += sub.stats.missing;
            recovered += sub.stats.recovered;
        }
        let delivered = if run.subscribers.is_empty() {
            0
        } else {
            delivered
        };
        let trial = Trial {
            rate,
            sent,
            delivered,
            missing,
            recovered,
            msgs_per_sec: crate::report::per_second(delivered, run.elapsed),
            lossless: sent > 0 && delivered == sent && missing == 0,
        };
        if progress {
            println!(
                "trial at {}: delivered {} of {} ({:.0} msgs/s), {}",
                if rate == 0 {
                    "full speed".to_owned()
                } else {
                    format!("{rate} msgs/s")
                },
                delivered,
                sent,
                trial.msgs_per_sec,
                if trial.lossless {
                    "lossless"
                } else {
                    "lost some"
                }
            );
        }
        report.trials.push(trial);
        Ok(trial)
    };
    let first = at(0, &mut report)?;
    if first.lossless {
        return Ok(report);
    }
    let (mut lo, mut hi) = (0u64, first.msgs_per_sec.round() as u64);
    for _ in 0..args.trials {
        if interrupt::requested() {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        if mid == 0 || hi - lo <= hi / 50 {
            break;
        }
        if at(mid, &mut report)?.lossless {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(report)
}
