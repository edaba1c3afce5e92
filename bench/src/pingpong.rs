//! `multipoint pingpong`: round-trip latency, one message in flight at a time.
//!
//! - **Ping** publishes ping k (its first 8 bytes a `now_ns` stamp) to group A and waits for
//!   its echo on group B. The ping loop runs inside the ping side's subscription handler:
//!   on the echo of the ping in flight it offers and flushes the next one at once, so the
//!   loop never leaves the shard thread and `max_delay` plays no part. The shard records
//!   the round trip of every echo from its stamp (`timestamps: true`).
//! - **Pong** subscribes to group A and republishes each message unchanged to group B
//!   (offer, then flush), from its own subscription handler.
//!
//! Each side has its own [`Shards`] of one thread, so the two roles never share a thread;
//! the shards are not pinned, since two sets of shards would both pin their first thread
//! to core 0. The calling thread sends the first ping, then sleeps in short steps until
//! `--count` round trips or `--secs` passed. A ping whose echo has not come back within
//! [`ECHO_TIMEOUT`] is given up on (a timeout) and the next one goes out, so that a lost
//! packet cannot stall the loop; that is why the ping publisher sits behind a mutex that
//! the handler and the calling thread share (uncontended except at a timeout). An echo of a
//! ping given up on is recorded but starts nothing (a late echo).
//!
//! With `--role ping` or `--role pong` the other side is another process: the pong
//! follows the first session it sees on A (or `--session`) and stops at its end of
//! session, which the ping sends when it is done.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use multipoint_dataplane::core::sequence::StartAt;
use multipoint_dataplane::latency::{self, LatencyHistogram};
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    BackendInfo, Handler, HostNeeds, OfferError, Publisher, PublisherConfig, ShardConfig, Shards,
    Subscription, SubscriptionConfig,
};

use crate::cli::{Idle, PingPongArgs, Role};
use crate::error::{Error, Result};
use crate::hlog::Hlog;
use crate::host;
use crate::interrupt;
use crate::outputs::Outputs;
use crate::plot::Series;
use crate::progress::{Progress, Ticker};
use crate::publish::{check_size, session_or_default};
use crate::report::{per_second, Grouped, PingPongReport, PingReport, PongReport};

/// How long a ping waits for its echo before the next one goes out.
pub const ECHO_TIMEOUT: Duration = Duration::from_millis(100);
/// `--secs` when not given, with a ping side here.
pub const PING_SECS: Duration = Duration::from_secs(3);
/// `--secs` when not given, for a pong alone (it also stops at the ping's end of session).
pub const PONG_SECS: Duration = Duration::from_secs(60);
/// How often the calling thread looks at the progress.
const POLL: Duration = Duration::from_millis(5);
/// The interval log's tag.
const TAG: &str = "rtt";

/// The ping loop: shared by the ping side's handler, which drives it, and the calling
/// thread, which starts it, re-sends after a timeout and stops it.
#[derive(Debug)]
struct PingLoop {
    publisher: Publisher,
    msg: Vec<u8>,
    /// The stamp of the ping in flight, if any.
    in_flight: Option<u64>,
    /// Round trips to make.
    limit: u64,
    stopped: bool,
    round_trips: u64,
    timeouts: u64,
    late: u64,
    refused: u64,
    /// `now_ns` when the first ping left and when the last echo came back.
    first_ns: Option<u64>,
    last_ns: Option<u64>,
}

impl PingLoop {
    fn new(publisher: Publisher, size: usize, limit: u64) -> PingLoop {
        let mut msg = vec![0u8; size];
        for (i, b) in msg.iter_mut().enumerate() {
            *b = i as u8;
        }
        PingLoop {
            publisher,
            msg,
            in_flight: None,
            limit,
            stopped: false,
            round_trips: 0,
            timeouts: 0,
            late: 0,
            refused: 0,
            first_ns: None,
            last_ns: None,
        }
    }

    /// Sends the next ping, stamped now, unless the loop is done.
    fn send(&mut self) {
        if self.stopped || self.round_trips >= self.limit {
            return;
        }
        let stamp = latency::now_ns();
        // The size is at least the stamp's 8 bytes (checked by the command line).
        let _ = latency::write_stamp(&mut self.msg, stamp);
        if offer_and_flush(&mut self.publisher, &self.msg) {
            self.in_flight = Some(stamp);
            self.first_ns.get_or_insert(stamp);
        } else {
            // The calling thread's timeout sends the next one.
            self.in_flight = None;
            self.refused += 1;
        }
    }

    /// An echo arrived at `now`: if it is the ping in flight, the round trip is done and
    /// the next ping leaves. Returns whether it was.
    fn on_echo(&mut self, echo: &[u8], now: u64) -> bool {
        let stamp = latency::read_stamp(echo);
        if stamp.is_none() || stamp != self.in_flight {
            self.late += 1;
            return false;
        }
        self.in_flight = None;
        self.round_trips += 1;
        self.last_ns = Some(now);
        self.send();
        true
    }

    /// Gives up on the ping in flight (if nothing came back since `seen` round trips) and
    /// sends the next one.
    fn time_out(&mut self, seen: u64) {
        if self.round_trips == seen && !self.stopped {
            self.timeouts += 1;
            self.send();
        }
    }
}

/// Offers `msg` and flushes at once; on backpressure, collects finished sends and tries
/// once more. Returns whether the message was taken.
fn offer_and_flush(publisher: &mut Publisher, msg: &[u8]) -> bool {
    let mut offered = publisher.offer(msg);
    if offered == Err(OfferError::Backpressure) {
        publisher.poll();
        offered = publisher.offer(msg);
    }
    publisher.flush();
    offered.is_ok()
}

/// What the ping handler and the calling thread share.
#[derive(Debug)]
struct Shared {
    state: Mutex<PingLoop>,
    /// Round trips so far, for the calling thread to watch without taking the lock.
    round_trips: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PingLoop> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The ping side's handler: echoes on group B.
#[derive(Debug)]
struct Pinger {
    shared: Arc<Shared>,
}

impl Handler for Pinger {
    fn on_message(&mut self, _sequence: u64, message: &[u8]) {
        let now = latency::now_ns();
        let mut state = self.shared.lock();
        if state.on_echo(message, now) {
            self.shared
                .round_trips
                .store(state.round_trips, Ordering::Relaxed);
        }
    }
}

/// The pong side's handler: pings on group A, echoed to group B.
#[derive(Debug)]
struct Echo {
    publisher: Publisher,
    echoed: u64,
    refused: u64,
    /// `now_ns` at the first ping and at the ping's end of session.
    first_ns: Option<u64>,
    ended_ns: Option<u64>,
}

impl Handler for Echo {
    fn on_message(&mut self, _sequence: u64, message: &[u8]) {
        if offer_and_flush(&mut self.publisher, message) {
            self.echoed += 1;
        } else {
            self.refused += 1;
        }
        if self.first_ns.is_none() {
            self.first_ns = Some(latency::now_ns());
        }
    }
    fn on_end_of_session(&mut self) {
        self.ended_ns = Some(latency::now_ns());
    }
}

/// What both sides need to know, resolved from the command line.
#[derive(Debug, Clone)]
struct Plan {
    /// Group A, the pings.
    a: SocketAddr,
    /// Group B, the echoes.
    b: SocketAddr,
    /// The session this process publishes.
    session: Session,
    secs: Duration,
    limit: u64,
    shards: ShardConfig,
}

impl Plan {
    /// What `args` ask for.
    ///
    /// # Errors
    ///
    /// [`Error::NoReplyPort`] when group B cannot be derived from group A; as
    /// [`session_or_default`].
    fn new(args: &PingPongArgs) -> Result<Plan> {
        Ok(Plan {
            a: args.publish.group.group,
            b: reply_group(args)?,
            session: session_or_default(args.publish.session)?,
            secs: args.stop.secs.unwrap_or(match args.role {
                Role::Pong => PONG_SECS,
                Role::Ping | Role::Both => PING_SECS,
            }),
            limit: args.stop.count.unwrap_or(u64::MAX),
            shards: ShardConfig {
                pin: false,
                ..args.engine.shard_config(1)
            },
        })
    }

    /// What one side asks of the host: its shard, its publisher to `to` and its
    /// subscription to `from`.
    fn side_needs(&self, args: &PingPongArgs, to: SocketAddr, from: SocketAddr) -> HostNeeds {
        host::total([
            self.shards.host_needs(),
            publisher_config(args, self, to).host_needs(),
            subscription(args, from, None, false).host_needs(),
        ])
    }
}

/// What `multipoint pingpong` will ask of the host: a shard, a publisher and a
/// subscription for each side that runs in this process.
///
/// # Errors
///
/// [`Error::NoReplyPort`] when group B cannot be derived from group A.
pub fn host_needs(args: &PingPongArgs) -> Result<HostNeeds> {
    let plan = Plan::new(args)?;
    let ping = plan.side_needs(args, plan.a, plan.b);
    let pong = plan.side_needs(args, plan.b, plan.a);
    Ok(match args.role {
        Role::Ping => ping,
        Role::Pong => pong,
        Role::Both => ping.and(pong),
    })
}

/// Runs `multipoint pingpong` and returns what it measured. With `progress`, a line on
/// stdout is rewritten once a second.
///
/// # Errors
///
/// [`Error::NoReplyPort`] when group B cannot be derived from group A;
/// [`Error::SizeTooLarge`]; the data plane's errors when a socket, ring or shard cannot
/// be set up; [`Error::CreateLog`], [`Error::WriteLog`] and [`Error::WritePlot`] for the
/// output files.
pub fn run(args: &PingPongArgs, progress: bool) -> Result<PingPongReport> {
    let plan = Plan::new(args)?;
    let sides = if args.role == Role::Both { 2 } else { 1 };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.engine.idle == Idle::Spin && sides > cores {
        tracing::warn!(
            cores,
            "--idle spin with {sides} spinning shard threads on {cores} core(s): they will \
             starve each other"
        );
    }
    // Before any socket: an output file that cannot be written stops the run at once.
    let outputs = Outputs::create(&args.report)?;
    let progress = Progress::new(progress);
    match args.role {
        Role::Ping => run_ping(args, &plan, None, outputs, progress),
        Role::Pong => run_pong(args, &plan, outputs, progress),
        Role::Both => {
            // The pong first, so that it listens before the first ping leaves.
            let pong = PongSide::start(args, &plan, Some(plan.session))?;
            run_ping(args, &plan, Some(pong), outputs, progress)
        }
    }
}

/// Group B: `--reply-group`, or group A's address with the next port.
///
/// # Errors
///
/// [`Error::NoReplyPort`] when A's port is the last one.
pub fn reply_group(args: &PingPongArgs) -> Result<SocketAddr> {
    if let Some(b) = args.reply_group {
        return Ok(b);
    }
    let a = args.publish.group.group;
    let port = a
        .port()
        .checked_add(1)
        .ok_or(Error::NoReplyPort { group: a })?;
    Ok(SocketAddr::new(a.ip(), port))
}

fn report(
    args: &PingPongArgs,
    plan: &Plan,
    backend: BackendInfo,
    elapsed: Duration,
    ping: Option<PingReport>,
    pong: Option<PongReport>,
) -> PingPongReport {
    PingPongReport {
        role: match args.role {
            Role::Ping => "ping",
            Role::Pong => "pong",
            Role::Both => "both",
        },
        group: plan.a.to_string(),
        reply_group: plan.b.to_string(),
        interface: args.publish.group.iface.to_string(),
        size: args.size,
        idle: args.engine.idle.name(),
        backend,
        elapsed,
        ping,
        pong,
    }
}

/// The ping side here, and the pong too if given.
fn run_ping(
    args: &PingPongArgs,
    plan: &Plan,
    pong: Option<PongSide>,
    Outputs { mut log, plot }: Outputs,
    mut line: Progress,
) -> Result<PingPongReport> {
    // With the pong here, its session is known; from another process, the first seen.
    let follow = pong.is_some().then_some(plan.session);
    let ping = PingSide::start(args, plan, follow)?;
    let backend = ping.shards.backend().clone();
    let start = Instant::now();
    let ticks = ping.drive(plan, start, &mut line, log.as_mut())?;
    line.clear();
    let end = start.elapsed();
    let (ping_report, rtt, elapsed, last_interval) = ping.finish(ticks.taken, end)?;
    let pong_report = match pong {
        Some(pong) => Some(pong.finish()?.0),
        None => None,
    };
    if let Some(mut log) = log {
        log.append(
            TAG,
            ticks.last,
            end.saturating_sub(ticks.last),
            &last_interval,
        )?;
        log.finish()?;
    }
    if let Some(plot) = plot {
        let title = format!(
            "multipoint pingpong: round trip, {}-byte messages, idle {}",
            args.size,
            args.engine.idle.name()
        );
        plot.write(&title, &[Series::new("round trip", &rtt)])?;
    }
    Ok(report(
        args,
        plan,
        backend,
        elapsed,
        Some(ping_report),
        pong_report,
    ))
}

/// The pong side alone: until the ping's end of session, `--count` echoes or `--secs`.
fn run_pong(
    args: &PingPongArgs,
    plan: &Plan,
    outputs: Outputs,
    mut line: Progress,
) -> Result<PingPongReport> {
    let pong = PongSide::start(args, plan, args.publish.session)?;
    let backend = pong.shards.backend().clone();
    println!(
        "multipoint pingpong: pong echoing {} to {} via {}; until the ping's end of session \
         or {} s",
        plan.a,
        plan.b,
        args.publish.group.iface,
        plan.secs.as_secs_f64()
    );
    let start = Instant::now();
    pong.wait(plan, start, &mut line);
    line.clear();
    let wall = start.elapsed();
    let (pong_report, active) = pong.finish()?;
    let elapsed = active.unwrap_or(wall);
    if let Some(plot) = outputs.plot {
        plot.write(
            "multipoint pingpong: pong (round trips are measured by the ping)",
            &[],
        )?;
    }
    if let Some(log) = outputs.log {
        // An empty log, as asked: the round trips are the ping's.
        log.finish()?;
    }
    Ok(report(
        args,
        plan,
        backend,
        elapsed,
        None,
        Some(pong_report),
    ))
}

/// A subscription to `group` of `session` (or the first one seen), from wherever the
/// stream is when it joins.
fn subscription(
    args: &PingPongArgs,
    group: SocketAddr,
    session: Option<Session>,
    timestamps: bool,
) -> SubscriptionConfig {
    SubscriptionConfig {
        interface: args.publish.group.iface.clone(),
        session,
        start: StartAt::FirstSeen,
        timestamps,
        // One message in flight at a time: a stream that waited for three packets to lock
        // onto its sender would wait for heartbeats before the first round trip. The
        // stream locks onto the first sender of its group instead.
        lock_after: 1,
        ..SubscriptionConfig::new(group)
    }
}

/// The publisher of a side that publishes to `to`.
fn publisher_config(args: &PingPongArgs, plan: &Plan, to: SocketAddr) -> PublisherConfig {
    PublisherConfig {
        group: to,
        ..args.publish.publisher_config(plan.session, &args.engine.io)
    }
}

/// Starts a side's publisher to `to`, its message size checked, and its shards.
fn start_side(args: &PingPongArgs, plan: &Plan, to: SocketAddr) -> Result<(Publisher, Shards)> {
    let publisher = Publisher::new(publisher_config(args, plan, to))?;
    check_size(&publisher, args.size, args.engine.io.max_datagram)?;
    Ok((publisher, Shards::start(plan.shards.clone())?))
}

/// What [`PingSide::drive`] leaves for the end of the run.
#[derive(Debug)]
struct Ticks {
    /// When the last once-a-second interval began.
    last: Duration,
    /// Round trips taken from the subscription for the interval log.
    taken: LatencyHistogram,
}

/// The ping side: its shard, its subscription to the echoes, and the loop they share.
struct PingSide {
    shards: Shards,
    sub: Subscription<Pinger>,
    shared: Arc<Shared>,
}

impl PingSide {
    fn start(args: &PingPongArgs, plan: &Plan, follow: Option<Session>) -> Result<PingSide> {
        let (publisher, mut shards) = start_side(args, plan, plan.a)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(PingLoop::new(publisher, args.size, plan.limit)),
            round_trips: AtomicU64::new(0),
        });
        let pinger = Pinger {
            shared: Arc::clone(&shared),
        };
        let sub = shards.subscribe(subscription(args, plan.b, follow, true), pinger)?;
        Ok(PingSide {
            shards,
            sub,
            shared,
        })
    }

    /// Sends the first ping and waits until `plan.limit` round trips or `plan.secs`,
    /// giving up on a ping after [`ECHO_TIMEOUT`]. Once a second, with a `log`, the round
    /// trips of the interval that closed go to the log (and are kept).
    fn drive(
        &self,
        plan: &Plan,
        start: Instant,
        line: &mut Progress,
        mut log: Option<&mut Hlog>,
    ) -> Result<Ticks> {
        self.shared.lock().send();
        let mut ticker = Ticker::default();
        let mut taken = LatencyHistogram::new();
        let mut seen = 0;
        let mut progress_at = Instant::now();
        loop {
            std::thread::sleep(POLL);
            let done = self.shared.round_trips.load(Ordering::Relaxed);
            let elapsed = start.elapsed();
            if done >= plan.limit || elapsed >= plan.secs || interrupt::requested() {
                break;
            }
            if done != seen {
                seen = done;
                progress_at = Instant::now();
            } else if progress_at.elapsed() >= ECHO_TIMEOUT {
                self.shared.lock().time_out(seen);
                progress_at = Instant::now();
            }
            if let Some(interval) = ticker.tick(elapsed) {
                if let Some(log) = &mut log {
                    log.take(TAG, interval, &self.sub, &mut taken)?;
                }
                let timeouts = self.shared.lock().timeouts;
                line.show(|| {
                    format!(
                        "{:>4.0} s  round trips {:>11}  ({}/s)  timeouts {}",
                        elapsed.as_secs_f64(),
                        Grouped(done),
                        Grouped(per_second(done, elapsed).round() as u64),
                        Grouped(timeouts),
                    )
                });
            }
        }
        self.shared.lock().stopped = true;
        Ok(Ticks {
            last: ticker.last(),
            taken,
        })
    }

    /// Closes the echo subscription and the ping publisher (which ends the session, so
    /// that a pong in another process stops). `taken` is the round trips already taken
    /// for the interval log, `end` the time since the start. Returns the report, the
    /// whole round-trip histogram, the time from the first ping to the last echo (`end`
    /// if there was none) and the round trips not taken before (the log's last interval).
    fn finish(
        self,
        taken: LatencyHistogram,
        end: Duration,
    ) -> Result<(PingReport, LatencyHistogram, Duration, LatencyHistogram)> {
        let closed = self.sub.close()?;
        self.shards.shutdown();
        // Now this is the only share of the loop.
        drop(closed.handler);
        let mut rtt = taken;
        rtt.merge(&closed.latency);
        let (mut report, first_ns, last_ns) = {
            let state = self.shared.lock();
            let report = PingReport {
                round_trips: state.round_trips,
                timeouts: state.timeouts,
                late: state.late,
                refused: state.refused,
                rtt: rtt.percentiles(),
                stats: closed.stats,
                publisher: state.publisher.stats(),
            };
            (report, state.first_ns, state.last_ns)
        };
        if let Ok(shared) = Arc::try_unwrap(self.shared) {
            let state = shared
                .state
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner);
            report.publisher = state.publisher.close();
        }
        let elapsed = match (first_ns, last_ns) {
            (Some(first), Some(last)) if last > first => Duration::from_nanos(last - first),
            _ => end,
        };
        Ok((report, rtt, elapsed, closed.latency))
    }
}

/// The pong side: its shard and its subscription to the pings, whose handler owns the
/// pong publisher.
struct PongSide {
    shards: Shards,
    sub: Subscription<Echo>,
}

impl PongSide {
    fn start(args: &PingPongArgs, plan: &Plan, follow: Option<Session>) -> Result<PongSide> {
        let (publisher, mut shards) = start_side(args, plan, plan.b)?;
        let echo = Echo {
            publisher,
            echoed: 0,
            refused: 0,
            first_ns: None,
            ended_ns: None,
        };
        let sub = shards.subscribe(subscription(args, plan.a, follow, false), echo)?;
        Ok(PongSide { shards, sub })
    }

    /// Waits (sleeping) until the ping's end of session, `plan.limit` echoes or
    /// `plan.secs`.
    fn wait(&self, plan: &Plan, start: Instant, line: &mut Progress) {
        let mut ticker = Ticker::default();
        loop {
            std::thread::sleep(POLL);
            let st = self.sub.stats();
            let elapsed = start.elapsed();
            if st.end_of_session > 0
                || st.messages >= plan.limit
                || elapsed >= plan.secs
                || interrupt::requested()
            {
                return;
            }
            if ticker.tick(elapsed).is_some() {
                line.show(|| {
                    format!(
                        "{:>4.0} s  echoed {:>11}  gaps {}",
                        elapsed.as_secs_f64(),
                        Grouped(st.messages),
                        Grouped(st.gaps),
                    )
                });
            }
        }
    }

    /// Closes the subscription and the pong publisher (ending the echo session). Returns
    /// the report and the time from the first ping to the ping's end of session, if both
    /// came.
    fn finish(self) -> Result<(PongReport, Option<Duration>)> {
        let closed = self.sub.close()?;
        self.shards.shutdown();
        let Echo {
            publisher,
            echoed,
            refused,
            first_ns,
            ended_ns,
        } = closed.handler;
        let active = match (first_ns, ended_ns) {
            (Some(first), Some(end)) if end > first => Some(Duration::from_nanos(end - first)),
            _ => None,
        };
        let report = PongReport {
            echoed,
            refused,
            stats: closed.stats,
            publisher: publisher.close(),
        };
        Ok((report, active))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> PingPongArgs {
        let cli = Cli::try_parse_from(["multipoint", "pingpong"].iter().chain(extra)).unwrap();
        match cli.command {
            Command::PingPong(args) => args,
            other => panic!("not pingpong: {other:?}"),
        }
    }

    #[test]
    fn the_echoes_go_to_the_next_port_unless_named() {
        let b = reply_group(&args(&["--group", "239.255.3.3:4000"])).unwrap();
        assert_eq!(b, "239.255.3.3:4001".parse().unwrap());
        let b = reply_group(&args(&["--reply-group", "239.255.9.9:7"])).unwrap();
        assert_eq!(b, "239.255.9.9:7".parse().unwrap());
        let error = reply_group(&args(&["--group", "239.255.3.3:65535"])).unwrap_err();
        assert!(error.to_string().contains("--reply-group"), "{error}");
    }
}
