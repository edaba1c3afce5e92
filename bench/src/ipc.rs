//! The tool's shared-memory rings: `multipoint pub --ipc NAME` writes a stream into a
//! ring with no network, `multipoint sub --ipc NAME` reads one instead of the network,
//! and `multipoint sub ... --publish-ipc NAME` feeds one from a network subscription
//! (its handler, [`Feed`]).
//!
//! `sub --ipc` reports as a network `sub` does (messages, gaps and missing from the
//! sequence numbers, one-way latency from the stamps of `multipoint pub`), plus what was
//! lost to lapping and what became of the writer. Its latency is sampled: one message in
//! 16 is stamped against the clock, so that reading the clock does not halve the rate.

use std::fmt;
use std::time::{Duration, Instant};

use multipoint_dataplane::core::packetizer::OfferError;
use multipoint_dataplane::ipc::{
    IpcAttachConfig, IpcConfig, IpcStart, IpcSubscription, IpcWriter, IpcWriterStats, WriterState,
};
use multipoint_dataplane::latency::{now_ns, read_stamp, LatencyHistogram};
use multipoint_dataplane::{BackendInfo, BackendKind, Error as DataError, Event, Handler};
use multipoint_dataplane::{Gap, Line, SubscriptionStats};

use crate::cli::{PubArgs, SubArgs};
use crate::error::Result;
use crate::interrupt;
use crate::outputs::Outputs;
use crate::plot::Series;
use crate::progress::{Progress, Ticker};
use crate::publish::{publish, session_or_default, show_sent, Load, Sink};
use crate::report::{per_second, Grouped, IpcReceived, Json, Received, Report, SubReport};
use crate::subscribe::{judge_stamps, until, Watch};

/// How long `sub --ipc` waits for the ring to appear without `--secs`.
const APPEAR: Duration = Duration::from_secs(10);
/// One message in this many is stamped against the clock.
const SAMPLE: u64 = 16;

/// A ring as the send loop's sink: each offer is the next sequence number, each batch
/// is published at its end.
struct RingSink {
    writer: IpcWriter,
    next: u64,
}

impl Sink for RingSink {
    fn end_batch(&mut self) {
        self.writer.flush();
    }
    fn offer(&mut self, msg: &[u8]) -> std::result::Result<u64, OfferError> {
        match self.writer.offer(self.next, msg) {
            Ok(()) => {
                self.next += 1;
                Ok(self.next - 1)
            }
            Err(_) => Err(OfferError::TooLarge {
                len: msg.len(),
                limit: self.writer.stats().capacity / 4,
            }),
        }
    }
    fn poll(&mut self) {
        self.writer.heartbeat();
    }
    fn flush(&mut self) {
        self.writer.flush();
    }
    fn end_session(&mut self) {
        self.writer.end_of_session();
    }
    fn rerequest_address(&self) -> Option<std::net::SocketAddr> {
        None
    }
}

/// What `multipoint pub --ipc` did.
#[derive(Debug, Clone, PartialEq)]
pub struct IpcPubReport {
    /// The ring's file.
    pub path: String,
    /// Message size.
    pub size: usize,
    /// The rate asked for (0: as fast as possible).
    pub rate: u64,
    /// How long it wrote.
    pub elapsed: Duration,
    /// The writer's counters.
    pub stats: IpcWriterStats,
}

impl fmt::Display for IpcPubReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "multipoint pub: ipc ring {}, {}-byte messages, {:.2} s",
            self.path,
            self.size,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "writer    {} msgs/s   messages {}   bytes {}   laps {}   ring {} bytes",
            Grouped(per_second(self.stats.messages, self.elapsed).round() as u64),
            Grouped(self.stats.messages),
            Grouped(self.stats.bytes),
            Grouped(self.stats.laps),
            Grouped(self.stats.capacity as u64),
        )
    }
}

impl Report for IpcPubReport {
    fn to_json(&self) -> String {
        let mut json = Json::object();
        json.str("command", "pub")
            .str("transport", "ipc")
            .str("ipc_ring", &self.path)
            .f64(
                "msgs_per_sec",
                per_second(self.stats.messages, self.elapsed),
                1,
            )
            .u64("messages", self.stats.messages)
            .u64("bytes", self.stats.bytes)
            .u64("size", self.size as u64)
            .u64("rate", self.rate)
            .f64("elapsed_secs", self.elapsed.as_secs_f64(), 3)
            .u64("laps", self.stats.laps)
            .u64("capacity", self.stats.capacity as u64);
        json.finish()
    }
}

/// Runs `multipoint pub --ipc NAME`.
///
/// # Errors
///
/// The data plane's IPC errors (a bad name, a name a live writer holds, `/dev/shm`
/// full); a message size over a quarter of the ring.
pub fn run_pub(args: &PubArgs, name: &str, progress: bool) -> Result<IpcPubReport> {
    let config = IpcConfig {
        session: Some(session_or_default(args.publish.session)?),
        ..IpcConfig::new(args.ipc_capacity)
    };
    let writer = IpcWriter::create(name, config)?;
    interrupt::remove_on_exit(writer.path());
    let path = writer.path().display().to_string();
    println!("multipoint pub: writing the ipc ring {path}");
    let mut sink = RingSink { writer, next: 1 };
    let load = Load::new(&args.load);
    let mut line = Progress::new(progress);
    let published = publish(&mut sink, &load, &mut line, show_sent)?;
    sink.end_session();
    let stats = sink.writer.stats();
    sink.writer.close();
    Ok(IpcPubReport {
        path,
        size: args.load.size,
        rate: args.load.rate,
        elapsed: published.elapsed,
        stats,
    })
}

/// The handler of `sub --publish-ipc`: the tool's [`Watch`], and the ring.
#[derive(Debug)]
pub struct Feed {
    /// What `sub` notes.
    pub watch: Watch,
    /// The ring every event goes into.
    pub ring: Option<IpcWriter>,
}

impl Handler for Feed {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        self.watch.on_message(sequence, message);
        if let Some(ring) = &mut self.ring {
            ring.on_message(sequence, message);
        }
    }
    fn on_recovered(&mut self, sequence: u64, message: &[u8]) {
        self.watch.on_recovered(sequence, message);
        if let Some(ring) = &mut self.ring {
            ring.on_recovered(sequence, message);
        }
    }
    fn on_gap(&mut self, gap: Gap) {
        if let Some(ring) = &mut self.ring {
            ring.on_gap(gap);
        }
    }
    fn on_end_of_session(&mut self) {
        self.watch.on_end_of_session();
        if let Some(ring) = &mut self.ring {
            ring.on_end_of_session();
        }
    }
    fn on_line(&mut self, line: Line, up: bool) {
        if let Some(ring) = &mut self.ring {
            ring.on_line(line, up);
        }
    }
    fn on_failure(&mut self, reason: &str) {
        if let Some(ring) = &mut self.ring {
            ring.on_failure(reason);
        }
    }
    fn flush(&mut self) {
        if let Some(ring) = &mut self.ring {
            Handler::flush(ring);
        }
    }
}

/// What `sub --ipc` counts from the events.
#[derive(Debug, Default)]
struct Tally {
    stats: SubscriptionStats,
    /// The sequence number expected next (0: none seen).
    next: u64,
    late_join: bool,
    first_ns: Option<u64>,
    ended_ns: Option<u64>,
    last_ns: Option<u64>,
    failure: Option<String>,
    latency: LatencyHistogram,
}

impl Tally {
    fn take(&mut self, event: Event<'_>) {
        match event {
            Event::Recovered { message, .. } => {
                // Lost to a lap and re-requested: counted apart, not against the order.
                self.stats.messages += 1;
                self.stats.recovered += 1;
                self.stats.bytes += message.len() as u64;
            }
            Event::Message { sequence, message } => {
                let st = &mut self.stats;
                st.messages += 1;
                st.bytes += message.len() as u64;
                if st.messages % SAMPLE == 1 {
                    let now = now_ns();
                    if self.first_ns.is_none() {
                        self.first_ns = Some(now);
                    }
                    self.last_ns = Some(now);
                    if let Some(stamp) = read_stamp(message) {
                        self.latency.record_since(stamp, now);
                    }
                }
                if self.next == 0 && !self.late_join && sequence > 1 {
                    self.next = 1;
                }
                if self.next != 0 && sequence > self.next {
                    st.gaps += 1;
                    st.missing += sequence - self.next;
                } else if self.next != 0 && sequence < self.next {
                    st.duplicates += 1;
                }
                self.next = self.next.max(sequence + 1);
            }
            Event::Gap(gap) => {
                self.stats.gaps += 1;
                self.stats.missing += gap.count;
                self.next = self.next.max(gap.end());
            }
            Event::Lapped {
                resume_sequence, ..
            } => {
                // Counted apart (lost to lapping), not as missing from the stream.
                self.next = self.next.max(resume_sequence);
            }
            Event::EndOfSession => {
                self.stats.end_of_session += 1;
                self.stats.ended = 1;
                self.ended_ns = Some(now_ns());
            }
            Event::Failure(why) => self.failure = Some(why.to_owned()),
            _ => {}
        }
    }
}

/// Attaches to `name`, waiting up to `patience` for it to appear.
fn attach(name: &str, config: IpcAttachConfig, patience: Duration) -> Result<IpcSubscription> {
    let begun = Instant::now();
    loop {
        match IpcSubscription::attach_with(name, config) {
            Err(DataError::IpcNotFound { .. })
                if begun.elapsed() < patience && !interrupt::requested() =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return Ok(other?),
        }
    }
}

/// Runs `multipoint sub --ipc NAME`.
///
/// # Errors
///
/// The data plane's IPC errors at the attach (not found after waiting, not a ring,
/// another version, permission); the output files' errors.
pub fn run_sub(args: &SubArgs, name: &str, progress: bool) -> Result<SubReport> {
    let outputs = Outputs::create(&args.report)?;
    let config = IpcAttachConfig {
        start: IpcStart::Oldest,
        idle: args.engine.idle.into(),
    };
    let mut sub = attach(name, config, args.stop.secs.unwrap_or(APPEAR))?;
    if let Some(recovery) = args.recovery.config() {
        sub.recover(recovery)?;
    }
    let path = sub.path().display().to_string();
    let pid = sub.layout().pid;
    let session = sub.session().map(|s| s.to_string());
    println!(
        "multipoint sub: reading the ipc ring {path}, written by pid {pid}{}{}",
        session
            .as_deref()
            .map(|s| format!(", session {s}"))
            .unwrap_or_default(),
        until(&args.stop)
    );
    let mut tally = Tally {
        late_join: args.late_join,
        ..Tally::default()
    };
    let limit = args.stop.count.unwrap_or(u64::MAX);
    let mut line = Progress::new(progress);
    let mut ticker = Ticker::default();
    let start = Instant::now();
    loop {
        sub.poll_wait(|e| tally.take(e), 4096, Duration::from_millis(5));
        let elapsed = start.elapsed();
        if sub.is_closed()
            || (tally.stats.ended > 0 && !sub.recovering())
            || tally.stats.messages >= limit
            || args.stop.secs.is_some_and(|s| elapsed >= s)
            || interrupt::requested()
        {
            break;
        }
        if ticker.tick(elapsed).is_some() {
            let st = &tally.stats;
            let lost = sub.stats().lost;
            line.show(|| {
                format!(
                    "{:>4.0} s  messages {:>13}  ({} msgs/s)  gaps {}  lost to lapping {}",
                    elapsed.as_secs_f64(),
                    Grouped(st.messages),
                    Grouped(per_second(st.messages, elapsed).round() as u64),
                    Grouped(st.gaps),
                    Grouped(lost),
                )
            });
        }
    }
    line.clear();
    let end = start.elapsed();
    let (latency, stamps) = judge_stamps(&tally.latency);
    if let Some(mut log) = outputs.log {
        log.append("sub", Duration::ZERO, end, &tally.latency)?;
        log.finish()?;
    }
    if let Some(plot) = outputs.plot {
        let series = match latency {
            Some(_) => vec![Series::new("one-way", &tally.latency)],
            None => Vec::new(),
        };
        plot.write(&format!("multipoint sub: one-way latency, {path}"), &series)?;
    }
    let elapsed = match (tally.first_ns, tally.ended_ns.or(tally.last_ns)) {
        (Some(first), Some(last)) if last > first => Duration::from_nanos(last - first),
        _ => end,
    };
    let st = sub.stats();
    tally.stats.requests = st.requests;
    tally.stats.retries = st.retries;
    tally.stats.replies = st.replies;
    tally.stats.gaps_given_up = st.gaps_given_up;
    tally.stats.reply_foreign_source = st.reply_foreign;
    tally.stats.reply_unasked = st.reply_unasked;
    let writer = match sub.writer_state() {
        WriterState::Live => "live",
        WriterState::Closed => "closed",
        WriterState::Dead => "dead",
        WriterState::Replaced => "replaced",
    };
    Ok(SubReport {
        group: format!("ipc:{name}"),
        interface: path.clone(),
        source: None,
        session,
        sender: Some(format!("pid {pid}")),
        failure: tally.failure,
        elapsed,
        received: Received {
            backend: BackendInfo {
                kind: BackendKind::Ipc,
                reason: "a shared-memory ring, read in place".to_owned(),
            },
            stats: tally.stats,
            latency,
            stamps,
            recovery: None,
            lines: Vec::new(),
            xdp: None,
        },
        ipc: Some(IpcReceived {
            path,
            writer_pid: pid,
            writer: writer.to_owned(),
            lost: st.lost,
            lapped: st.lapped,
            torn_during_read: st.torn_during_read,
            discarded: st.discarded,
        }),
        published_ipc: None,
        kernel: None,
    })
}
