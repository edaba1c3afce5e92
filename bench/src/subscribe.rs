//! `multipoint sub`: subscribes to a MoldUDP64 stream and reports what arrived.
//!
//! The subscription runs on one shard thread; the calling thread only looks at its
//! counters every few milliseconds (sleeping in between) and stops at the end of session,
//! after `--count` messages or after `--secs`, whichever comes first. It first prints one
//! line saying what it listens to, so that a script can start the publisher after it.
//!
//! Any MoldUDP64 stream is accepted: the session named by `--session`, or the first one
//! seen. One-way latency is read from the 8-byte send timestamp `multipoint pub` puts first
//! in each message. A stream of other payloads gives no figures: its first 8 bytes read as
//! a time in the future or long past, and when more than 1 % of the stamps are such
//! ([`Stamps::implausible`]), the report has no latency rather than a made-up one.

use std::time::{Duration, Instant};

use multipoint_dataplane::latency::{now_ns, LatencyHistogram, Percentiles};
use multipoint_dataplane::core::sequence::StartAt;
use multipoint_dataplane::{Handler, Shards, SubscriptionConfig};

use crate::cli::SubArgs;
use crate::error::Result;
use crate::hlog::Hlog;
use crate::plot::{self, Series};
use crate::progress::{Progress, Ticker};
use crate::report::{per_second, Grouped, Stamps, SubReport};

/// How often the counters are looked at.
const POLL: Duration = Duration::from_millis(5);
/// The interval log's tag.
const TAG: &str = "sub";

/// The handler: notes when the first message and the end of session arrived (counting is
/// left to the shard's counters).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    /// `now_ns` at the first message.
    pub first_ns: Option<u64>,
    /// `now_ns` at the end of session.
    pub ended_ns: Option<u64>,
}

impl Handler for Watch {
    fn on_message(&mut self, _sequence: u64, _message: &[u8]) {
        if self.first_ns.is_none() {
            self.first_ns = Some(now_ns());
        }
    }
    fn on_end_of_session(&mut self) {
        self.ended_ns = Some(now_ns());
    }
}

/// The latency figures of `histogram`, if its stamps look like send times on this host
/// (at most 1 % from the future or beyond the histogram's range), and what the stamps
/// were like.
pub fn judge_stamps(histogram: &LatencyHistogram) -> (Option<Percentiles>, Stamps) {
    let stamps = Stamps {
        stamped: histogram.len() + histogram.skewed(),
        implausible: histogram.skewed() + histogram.clamped(),
    };
    let plausible = stamps.stamped > 0 && stamps.implausible.saturating_mul(100) <= stamps.stamped;
    (plausible.then(|| histogram.percentiles()), stamps)
}

/// Runs `multipoint sub` and returns what arrived. With `progress`, a line on stdout is
/// rewritten once a second.
///
/// # Errors
///
/// The data plane's errors when the shard or the subscription cannot be set up (e.g. a
/// join refused, with the control crate's explanation); [`crate::Error::CreateLog`],
/// [`crate::Error::WriteLog`] and [`crate::Error::WritePlot`] for the output files.
pub fn run(args: &SubArgs, progress: bool) -> Result<SubReport> {
    let group = args.group.group;
    let mut shards = Shards::start(args.io.shard_config(1, args.idle))?;
    let config = SubscriptionConfig {
        source: args.source,
        interface: args.group.iface.clone(),
        session: args.session,
        start: if args.late_join {
            StartAt::FirstSeen
        } else {
            StartAt::One
        },
        timestamps: true,
        ..SubscriptionConfig::new(group)
    };
    let sub = shards.subscribe(config, Watch::default())?;
    println!("{}", listening_line(args));

    let mut log = Hlog::create_if(args.report.hlog.as_deref())?;
    let mut total = LatencyHistogram::new();
    let limit = args.stop.count.unwrap_or(u64::MAX);
    let mut line = Progress::new(progress);
    let mut ticker = Ticker::default();
    let mut seen = 0u64;
    let mut last_active_ns = None;
    let start = Instant::now();
    loop {
        std::thread::sleep(POLL);
        let st = sub.stats();
        let elapsed = start.elapsed();
        if st.messages != seen {
            seen = st.messages;
            last_active_ns = Some(now_ns());
        }
        if st.end_of_session > 0
            || st.messages >= limit
            || args.stop.secs.is_some_and(|s| elapsed >= s)
        {
            break;
        }
        if let Some((from, len)) = ticker.tick(elapsed) {
            if let Some(log) = &mut log {
                let interval = sub.take_latency()?;
                log.append(TAG, from, len, &interval)?;
                total.merge(&interval);
            }
            line.show(|| {
                format!(
                    "{:>4.0} s  messages {:>13}  ({} msgs/s)  gaps {}  kernel drops {}",
                    elapsed.as_secs_f64(),
                    Grouped(st.messages),
                    Grouped(per_second(st.messages, elapsed).round() as u64),
                    Grouped(st.gaps),
                    Grouped(st.kernel_drops),
                )
            });
        }
    }
    line.clear();
    let end = start.elapsed();
    let backend = shards.backend().clone();
    let closed = sub.close()?;
    shards.shutdown();
    if closed.stats.messages != seen {
        last_active_ns = Some(now_ns());
    }
    if let Some(mut log) = log {
        let from = ticker.last();
        log.append(TAG, from, end.saturating_sub(from), &closed.latency)?;
        log.finish()?;
    }
    total.merge(&closed.latency);
    let (latency, stamps) = judge_stamps(&total);
    if let Some(path) = &args.report.plot {
        let series = match latency {
            Some(_) => vec![Series::new("one-way", &total)],
            None => Vec::new(),
        };
        let title = format!("multipoint sub: one-way latency, {group}");
        plot::write(path, &title, &series)?;
    }
    let active = match (
        closed.handler.first_ns,
        closed.handler.ended_ns.or(last_active_ns),
    ) {
        (Some(first), Some(last)) if last > first => Duration::from_nanos(last - first),
        _ => end,
    };
    Ok(SubReport {
        group: group.to_string(),
        interface: args.group.iface.to_string(),
        source: args.source.map(|s| s.to_string()),
        session: args.session.map(|s| s.to_string()),
        backend,
        elapsed: active,
        stats: closed.stats,
        latency,
        stamps,
    })
}

/// The first line `sub` prints, once it has joined.
fn listening_line(args: &SubArgs) -> String {
    let mut line = format!(
        "multipoint sub: listening on {} via {}",
        args.group.group, args.group.iface
    );
    if let Some(source) = args.source {
        line.push_str(&format!(" from {source}"));
    }
    match args.session {
        Some(s) => line.push_str(&format!(", session {s}")),
        None => line.push_str(", first session seen"),
    }
    line.push_str("; until the end of session");
    if let Some(count) = args.stop.count {
        line.push_str(&format!(", {} messages", Grouped(count)));
    }
    if let Some(secs) = args.stop.secs {
        line.push_str(&format!(" or {} s", secs.as_secs_f64()));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_times_from_this_host_give_latency() {
        let mut h = LatencyHistogram::new();
        let now = now_ns();
        for i in 0..1_000 {
            h.record_since(now - 10_000 - i, now);
        }
        let (latency, stamps) = judge_stamps(&h);
        assert_eq!(latency.map(|l| l.count), Some(1_000));
        assert_eq!((stamps.stamped, stamps.implausible), (1_000, 0));
    }

    #[test]
    fn payloads_without_a_timestamp_give_no_latency() {
        let mut h = LatencyHistogram::new();
        let now = now_ns();
        for i in 0..100u64 {
            // ASCII text read as a little-endian u64 is far in the future; small binary
            // numbers are far in the past.
            h.record_since(u64::from_le_bytes(*b"ORDER 42") + i, now);
            h.record_since(i, now.max(120_000_000_000));
        }
        let (latency, stamps) = judge_stamps(&h);
        assert_eq!(latency, None);
        assert_eq!((stamps.stamped, stamps.implausible), (200, 200));
        assert_eq!(judge_stamps(&LatencyHistogram::new()).0, None);
    }

    #[test]
    fn the_watch_notes_the_first_message_and_the_end() {
        let mut watch = Watch::default();
        Handler::on_message(&mut watch, 1, b"x");
        let first = watch.first_ns;
        Handler::on_message(&mut watch, 2, b"y");
        assert!(first.is_some());
        assert_eq!(watch.first_ns, first);
        watch.on_end_of_session();
        assert!(watch.ended_ns >= first);
    }
}
