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
//!
//! `multipoint leaf` receives as `sub` does and shares its pieces: the handler ([`Watch`]),
//! the bookkeeping beside the counters (`Receiving`: latency, interval log, last activity)
//! and the first line's and the progress line's wording.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use multipoint_dataplane::core::sequence::StartAt;
use multipoint_dataplane::latency::{now_ns, LatencyHistogram, Percentiles};
use multipoint_dataplane::{
    BackendInfo, Closed, Handler, HostNeeds, KernelStamps, LineBConfig, LinesConfig, ShardConfig,
    Shards, Subscription, SubscriptionConfig, SubscriptionStats,
};

use crate::cli::{RecoveryArgs, StopArgs, SubArgs};
use crate::error::Result;
use crate::hlog::Hlog;
use crate::interrupt;
use crate::ipc::Feed;
use crate::outputs::Outputs;
use crate::plot::{PlotFile, Series};
use crate::progress::{Progress, Ticker};
use crate::report::{
    per_second, Grouped, IpcPublished, LineReport, Received, Stamps, SubReport, WireToAppReport,
};

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

/// Where a stream starts for a subscriber: from sequence number 1, or (`--late-join`)
/// wherever it is when the subscriber joins.
pub(crate) fn start_at(late_join: bool) -> StartAt {
    if late_join {
        StartAt::FirstSeen
    } else {
        StartAt::One
    }
}

/// What a receiving tool (`sub`, `leaf`) keeps over its run, beside the subscription's
/// own counters: the one-way latency, the interval log (`--hlog`), and when messages last
/// arrived.
#[derive(Debug)]
pub(crate) struct Receiving {
    tag: &'static str,
    log: Option<Hlog>,
    plot: Option<PlotFile>,
    total: LatencyHistogram,
    ticker: Ticker,
    seen: u64,
    last_active_ns: Option<u64>,
}

impl Receiving {
    /// Keeps the series `tag` in the output files `outputs` (created before the run).
    pub(crate) fn new(tag: &'static str, outputs: Outputs) -> Receiving {
        Receiving {
            tag,
            log: outputs.log,
            plot: outputs.plot,
            total: LatencyHistogram::new(),
            ticker: Ticker::default(),
            seen: 0,
            last_active_ns: None,
        }
    }

    /// Notes the subscription's counters as they are now.
    pub(crate) fn look(&mut self, st: &SubscriptionStats) {
        if st.messages != self.seen {
            self.seen = st.messages;
            self.last_active_ns = Some(now_ns());
        }
    }

    /// Once a second (`elapsed` since the start): logs the interval that closed, taken from
    /// `sub`, and returns `true` (time for the progress line).
    ///
    /// # Errors
    ///
    /// As [`Hlog::take`].
    pub(crate) fn tick<H: Handler>(
        &mut self,
        elapsed: Duration,
        sub: Option<&Subscription<H>>,
    ) -> Result<bool> {
        let Some(interval) = self.ticker.tick(elapsed) else {
            return Ok(false);
        };
        if let (Some(log), Some(sub)) = (&mut self.log, sub) {
            log.take(self.tag, interval, sub, &mut self.total)?;
        }
        Ok(true)
    }

    /// The end of the run, `end` after its start, once the subscription on `backend` is
    /// `closed`: the log's last interval, the latency judged, the plot (titled `title`)
    /// written. Returns what was received (with two lines, on `line_groups`),
    /// and for how long: from the first message to the end of session or the last
    /// message (`end` when there were not two such moments).
    ///
    /// # Errors
    ///
    /// [`crate::Error::WriteLog`], [`crate::Error::WritePlot`].
    pub(crate) fn finish(
        mut self,
        closed: Closed<Watch>,
        backend: BackendInfo,
        end: Duration,
        title: &str,
        line_groups: [String; 2],
    ) -> Result<(Received, Duration)> {
        if closed.stats.messages != self.seen {
            self.last_active_ns = Some(now_ns());
        }
        if let Some(mut log) = self.log {
            let from = self.ticker.last();
            log.append(self.tag, from, end.saturating_sub(from), &closed.latency)?;
            log.finish()?;
        }
        self.total.merge(&closed.latency);
        let (latency, stamps) = judge_stamps(&self.total);
        if let Some(plot) = self.plot {
            let series = match latency {
                Some(_) => vec![Series::new("one-way", &self.total)],
                None => Vec::new(),
            };
            plot.write(title, &series)?;
        }
        let active = match (
            closed.handler.first_ns,
            closed.handler.ended_ns.or(self.last_active_ns),
        ) {
            (Some(first), Some(last)) if last > first => Duration::from_nanos(last - first),
            _ => end,
        };
        let recovery = (!closed.recovery.is_empty()).then(|| closed.recovery.percentiles());
        let lines = line_groups
            .into_iter()
            .zip(&closed.lines)
            .map(|(group, (stats, behind))| LineReport {
                group,
                stats: *stats,
                behind: (!behind.is_empty()).then(|| behind.percentiles()),
            })
            .collect();
        let received = Received {
            backend,
            stats: closed.stats,
            latency,
            stamps,
            recovery,
            lines,
            xdp: None,
        };
        Ok((received, active))
    }
}

/// The receive side of a progress line, `elapsed` after the start: messages, their rate,
/// gaps and kernel drops.
pub(crate) fn receive_progress(st: &SubscriptionStats, elapsed: Duration) -> String {
    format!(
        "  messages {:>13}  ({} msgs/s)  gaps {}  kernel drops {}",
        Grouped(st.messages),
        Grouped(per_second(st.messages, elapsed).round() as u64),
        Grouped(st.gaps),
        Grouped(st.kernel_drops),
    )
}

/// The shard `sub` starts.
fn shard_config(args: &SubArgs) -> ShardConfig {
    ShardConfig {
        xdp: args.engine.io.xdp.config(&args.group.iface),
        ..args.engine.shard_config(1)
    }
}

/// The subscription `sub` makes.
fn subscription_config(args: &SubArgs) -> SubscriptionConfig {
    SubscriptionConfig {
        source: args.source,
        interface: args.group.iface.clone(),
        session: args.session,
        start: start_at(args.late_join),
        timestamps: true,
        kernel_stamps: match (args.kernel_stamps, args.hw_stamps) {
            (false, _) => KernelStamps::Off,
            (true, false) => KernelStamps::Software,
            (true, true) => KernelStamps::Hardware,
        },
        recovery: args.recovery.config(),
        line_b: args.line_b.map(|group| LineBConfig {
            group,
            source: args.source_b,
            interface: args
                .iface_b
                .clone()
                .unwrap_or_else(|| args.group.iface.clone()),
            arbitration: LinesConfig {
                wait: Duration::from_micros(args.line_wait_us),
                silence: Duration::from_millis(args.line_silence_ms),
                sender_b: None,
            },
        }),
        ..SubscriptionConfig::new(args.group.group)
    }
}

/// What `multipoint sub` will ask of the host: one shard and one subscription.
pub fn host_needs(args: &SubArgs) -> HostNeeds {
    shard_config(args)
        .host_needs()
        .and(subscription_config(args).host_needs())
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
    // Before any socket: an output file that cannot be written stops the run at once.
    let mut receiving = Receiving::new(TAG, Outputs::create(&args.report)?);
    let ring = match &args.publish_ipc {
        Some(name) => {
            let config = multipoint_dataplane::IpcConfig {
                session: args.session,
                rerequest: args.recovery.rerequest,
                ..multipoint_dataplane::IpcConfig::new(args.ipc_capacity)
            };
            let writer = multipoint_dataplane::IpcWriter::create(name, config)?;
            interrupt::remove_on_exit(writer.path());
            Some(writer)
        }
        None => None,
    };
    let feed = Feed {
        watch: Watch::default(),
        ring,
    };
    let ring_path = feed.ring.as_ref().map(|r| r.path().display().to_string());
    let mut shards = Shards::start(shard_config(args))?;
    let sub = shards.subscribe(subscription_config(args), feed)?;
    println!("{}", listening_line(args));
    if let Some(path) = ring_path {
        println!("multipoint sub: publishing to the ipc ring {path}");
    }

    let limit = args.stop.count.unwrap_or(u64::MAX);
    let mut line = Progress::new(progress);
    let start = Instant::now();
    let mut told_lock = false;
    loop {
        std::thread::sleep(POLL);
        let st = sub.stats();
        let elapsed = start.elapsed();
        receiving.look(&st);
        if !told_lock {
            // The sender is published when the stream locks (the session may be known
            // before, from --session).
            if let (Some(session), Some(sender)) = (sub.session(), sub.sender()) {
                told_lock = true;
                println!("{}", locked_line(session, sender, &st));
            }
        }
        if sub.failure().is_some() {
            break;
        }
        if st.ended > 0
            || st.messages >= limit
            || args.stop.secs.is_some_and(|s| elapsed >= s)
            || interrupt::requested()
        {
            break;
        }
        if receiving.tick(elapsed, Some(&sub))? {
            line.show(|| {
                let secs = elapsed.as_secs_f64();
                format!("{secs:>4.0} s{}", receive_progress(&st, elapsed))
            });
        }
    }
    line.clear();
    let end = start.elapsed();
    let backend = shards.backend().clone();
    let (followed, sender, failure) = (sub.session(), sub.sender(), sub.failure());
    let closed = sub.close()?;
    let xdp = shards.xdp_stats();
    shards.shutdown();
    let kernel = args.kernel_stamps.then(|| WireToAppReport {
        latency: closed.kernel.wire_to_app.percentiles(),
        stats: closed.kernel.stats,
        hardware: closed.kernel.hardware.clone(),
    });
    let Closed {
        handler: feed,
        stats,
        latency,
        recovery,
        lines,
        kernel: kernel_latency,
    } = closed;
    let published_ipc = feed.ring.map(|ring| {
        let st = ring.stats();
        let path = ring.path().display().to_string();
        ring.close();
        IpcPublished {
            path,
            records: st.records,
            messages: st.messages,
            laps: st.laps,
        }
    });
    let closed = Closed {
        handler: feed.watch,
        stats,
        latency,
        recovery,
        lines,
        kernel: kernel_latency,
    };
    let title = format!("multipoint sub: one-way latency, {group}");
    let line_groups = [
        group.to_string(),
        args.line_b.map(|b| b.to_string()).unwrap_or_default(),
    ];
    let (mut received, active) = receiving.finish(closed, backend, end, &title, line_groups)?;
    received.xdp = xdp;
    Ok(SubReport {
        group: group.to_string(),
        interface: args.group.iface.to_string(),
        source: args.source.map(|s| s.to_string()),
        session: args.session.or(followed).map(|s| s.to_string()),
        sender: sender.map(|s| s.to_string()),
        failure,
        elapsed: active,
        received,
        kernel,
        ipc: None,
        published_ipc,
    })
}

/// What `sub` prints once the stream is bound to its session and sender.
fn locked_line(
    session: multipoint_dataplane::wire::Session,
    sender: SocketAddr,
    st: &SubscriptionStats,
) -> String {
    let mut line = format!("multipoint sub: following session {session} from {sender}");
    if st.foreign_source > 0 {
        line.push_str(&format!(
            " ({} packets of other senders ignored)",
            st.foreign_source
        ));
    }
    line
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
    if let Some(b) = args.line_b {
        let iface = args.iface_b.as_ref().unwrap_or(&args.group.iface);
        line.push_str(&format!(" and line B {b} via {iface}"));
        if let Some(source) = args.source_b {
            line.push_str(&format!(" from {source}"));
        }
    }
    line.push_str(&recovering(&args.recovery));
    match args.session {
        Some(s) => line.push_str(&format!(", session {s}")),
        None => line.push_str(", the first sender whose packets follow on"),
    }
    line.push_str(&until(&args.stop));
    line
}

/// What a receiving tool's first line says of recovery: `, recovering from ADDR (in
/// order, 100 ms deadline)`, or nothing without `--rerequest`.
pub(crate) fn recovering(recovery: &RecoveryArgs) -> String {
    match recovery.rerequest {
        Some(server) => format!(
            ", recovering from {server} ({}, {} ms deadline)",
            if recovery.in_order {
                "in order"
            } else {
                "as they come"
            },
            recovery.recovery_deadline
        ),
        None => String::new(),
    }
}

/// How a receiving tool's first line ends: `; until the end of session`, and the
/// `--count` and `--secs` that stop it sooner.
pub(crate) fn until(stop: &StopArgs) -> String {
    let mut words = "; until the end of session".to_owned();
    if let Some(count) = stop.count {
        words.push_str(&format!(", {} messages", Grouped(count)));
    }
    if let Some(secs) = stop.secs {
        words.push_str(&format!(" or {} s", secs.as_secs_f64()));
    }
    words
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
