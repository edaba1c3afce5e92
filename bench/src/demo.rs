//! `multipoint demo`: a publisher and two subscribers on loopback multicast, in one
//! process.
//!
//! The subscribers run on shards (threads) of their own; the publisher runs on the
//! calling thread. Every message starts with an 8-byte `CLOCK_MONOTONIC` send timestamp,
//! so each subscriber records one-way latency. The publisher works in small time slices:
//! it offers the messages due so far as one batch, flushes, and sleeps briefly when ahead
//! of schedule (it never spins). At the end it sends the end of session, waits up to a
//! second for both subscribers to see it, closes everything and returns the
//! [`DemoReport`].
//!
//! The run uses its own MoldUDP64 session name (from the process id) and the subscribers
//! follow only that session, so another demo on the same group and port does not mix in
//! (its packets are counted as another session's).

use std::fs::File;
use std::io::{BufWriter, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use multipoint_dataplane::latency::{self, IntervalLog, LatencyHistogram};
use multipoint_dataplane::sequence::Gap;
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    Handler, OfferError, Publisher, PublisherConfig, ShardConfig, Shards, Subscription,
    SubscriptionConfig,
};

use crate::cli::{DemoArgs, Idle};
use crate::error::{Error, Result};
use crate::pacing::Pacer;
use crate::report::{DemoReport, Grouped, PublisherReport, Settings, SubscriberReport};

/// How many subscribers the demo runs.
pub const SUBSCRIBERS: usize = 2;

/// The shortest and longest sleep when the publisher is ahead of schedule. The kernel adds
/// its timer slack (about 50 µs) to either.
const MIN_SLEEP: Duration = Duration::from_micros(50);
const MAX_SLEEP: Duration = Duration::from_micros(200);
/// The pause after the publisher refused a message because every buffer was in flight.
const BACKPRESSURE_PAUSE: Duration = Duration::from_micros(50);
/// Most messages offered in one batch before the clock, `poll` and the once-a-second
/// work get their turn.
const MAX_BATCH: u64 = 1024;
/// How long to wait for the subscribers to see the end of session.
const END_WAIT: Duration = Duration::from_secs(1);
/// How often to look whether they have.
const END_POLL: Duration = Duration::from_millis(5);
/// Interval of the latency log and of the progress line.
const TICK: Duration = Duration::from_secs(1);

/// A subscriber's handler: counts what it was handed (the shard's counters say the same;
/// a mismatch is logged).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Messages handed over.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Whether the end of session was reported.
    pub ended: bool,
}

impl Handler for Tally {
    fn on_message(&mut self, _sequence: u64, message: &[u8]) {
        self.messages += 1;
        self.bytes += message.len() as u64;
    }
    fn on_gap(&mut self, _gap: Gap) {
        self.gaps += 1;
    }
    fn on_end_of_session(&mut self) {
        self.ended = true;
    }
}

/// Whether `multipoint demo` should show a progress line: only on a terminal, and only
/// for runs longer than two seconds.
pub fn wants_progress(args: &DemoArgs) -> bool {
    args.secs > Duration::from_secs(2) && std::io::stdout().is_terminal()
}

/// Runs the demo and returns what it measured. With `progress`, a line on stdout is
/// rewritten once a second (and cleared at the end).
///
/// # Errors
///
/// [`Error::SizeTooLarge`] when `--size` exceeds what a packet carries; the data plane's
/// errors when a socket, ring or shard cannot be set up; [`Error::CreateLog`] and
/// [`Error::WriteLog`] for `--hlog`.
pub fn run(args: &DemoArgs, progress: bool) -> Result<DemoReport> {
    let session = run_session()?;
    let mut config = PublisherConfig::new(session, args.group);
    config.interface = args.iface.clone();
    config.backend = args.backend.into();
    config.gso = args.gso.is_on();
    let max_datagram = config.max_datagram;
    let mut publisher = Publisher::new(config)?;
    if args.size > publisher.max_message() {
        return Err(Error::SizeTooLarge {
            size: args.size,
            limit: publisher.max_message(),
            max_datagram,
        });
    }

    let shard_count = usize::from(args.shards);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.idle == Idle::Spin && shard_count + 1 > cores {
        tracing::warn!(
            shards = shard_count,
            cores,
            "--idle spin with more busy threads (shards and the publisher) than cores: \
             they will starve each other"
        );
    }
    let mut shards = Shards::start(ShardConfig {
        shards: shard_count,
        backend: args.backend.into(),
        idle: args.idle.into(),
        gro: args.gso.is_on(),
        ..ShardConfig::default()
    })?;
    let mut subs = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let config = SubscriptionConfig {
            timestamps: true,
            interface: args.iface.clone(),
            session: Some(session),
            ..SubscriptionConfig::new(args.group)
        };
        subs.push(shards.subscribe(config, Tally::default())?);
    }

    let mut log = match &args.hlog {
        Some(path) => Some(Hlog::create(path, SystemTime::now())?),
        None => None,
    };
    let mut totals: Vec<LatencyHistogram> =
        (0..SUBSCRIBERS).map(|_| LatencyHistogram::new()).collect();

    let start = Instant::now();
    let mut ticks = Ticks {
        last: Duration::ZERO,
        shown: false,
    };
    let sent = publish(&mut publisher, args, start, |elapsed, sent| {
        if let Some(log) = &mut log {
            for (i, (sub, total)) in subs.iter().zip(&mut totals).enumerate() {
                let interval = sub.take_latency()?;
                log.append(i, ticks.last, elapsed.saturating_sub(ticks.last), &interval)?;
                total.merge(&interval);
            }
        }
        if progress {
            show_progress(elapsed, sent, &subs);
            ticks.shown = true;
        }
        ticks.last = elapsed;
        Ok(())
    })?;
    publisher.flush();
    let elapsed = start.elapsed();
    if ticks.shown {
        print!("\r\x1b[2K");
        let _ = std::io::stdout().flush();
    }
    tracing::debug!(sent, ?elapsed, "publishing done");

    let publisher_backend = publisher.backend().clone();
    let publisher_stats = publisher.close();
    wait_for_end(&subs);

    let backend = shards.backend().clone();
    // The last interval of the log ends here, for every subscriber alike.
    let end = start.elapsed();
    let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
    for (i, (sub, mut total)) in subs.into_iter().zip(totals).enumerate() {
        let shard = sub.shard();
        let closed = sub.close()?;
        if let Some(log) = &mut log {
            log.append(
                i,
                ticks.last,
                end.saturating_sub(ticks.last),
                &closed.latency,
            )?;
        }
        total.merge(&closed.latency);
        if closed.handler.messages != closed.stats.messages {
            tracing::warn!(
                subscriber = i + 1,
                handler = closed.handler.messages,
                counters = closed.stats.messages,
                "the handler and the counters disagree"
            );
        }
        subscribers.push(SubscriberReport {
            shard,
            backend: backend.clone(),
            stats: closed.stats,
            latency: total.percentiles(),
        });
    }
    shards.shutdown();
    if let Some(log) = log {
        log.finish()?;
    }

    Ok(DemoReport {
        settings: Settings {
            group: args.group.to_string(),
            interface: args.iface.to_string(),
            size: args.size,
            rate: args.rate,
            shards: shard_count,
            gso: args.gso.is_on(),
            idle: format!("{:?}", args.idle).to_lowercase(),
        },
        elapsed,
        publisher: PublisherReport {
            backend: publisher_backend,
            stats: publisher_stats,
        },
        subscribers,
    })
}

/// The once-a-second bookkeeping of a run.
struct Ticks {
    /// When the current interval started (time since the start of the run).
    last: Duration,
    /// Whether a progress line is on the screen.
    shown: bool,
}

/// Publishes for `args.secs` at `args.rate` (or as fast as possible), calling `on_tick`
/// with the elapsed time and the messages sent so far once a second. Returns how many
/// messages were offered.
fn publish(
    publisher: &mut Publisher,
    args: &DemoArgs,
    start: Instant,
    mut on_tick: impl FnMut(Duration, u64) -> Result<()>,
) -> Result<u64> {
    let pacer = Pacer::new(args.rate);
    let mut msg = vec![0u8; args.size];
    for (i, b) in msg.iter_mut().enumerate() {
        // A recognisable payload after the stamp: 0x00, 0x01, ... wrapping.
        *b = i as u8;
    }
    let mut sent = 0u64;
    let mut next_tick = TICK;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= args.secs {
            return Ok(sent);
        }
        if elapsed >= next_tick {
            on_tick(elapsed, sent)?;
            next_tick += TICK;
            if next_tick <= elapsed {
                // Fell behind by more than a tick: count the next second from now.
                next_tick = elapsed + TICK;
            }
        }
        let due = match pacer {
            Some(p) => p.due(elapsed),
            None => sent + MAX_BATCH,
        };
        let target = due.min(sent + MAX_BATCH);
        let refused = offer_batch(publisher, &mut msg, &mut sent, target)?;
        publisher.poll();
        if refused {
            std::thread::sleep(BACKPRESSURE_PAUSE);
            continue;
        }
        if let Some(p) = pacer {
            // Paced: what was due leaves now rather than waiting for a fuller packet.
            publisher.flush();
            if sent >= due {
                let wait = p.until_next(sent, start.elapsed());
                std::thread::sleep(wait.clamp(MIN_SLEEP, MAX_SLEEP));
            }
        }
    }
}

/// Offers stamped messages until `*sent` reaches `target`, as one batch. Returns whether
/// the publisher refused one for backpressure (the caller polls, pauses and retries).
fn offer_batch(
    publisher: &mut Publisher,
    msg: &mut [u8],
    sent: &mut u64,
    target: u64,
) -> Result<bool> {
    if *sent >= target {
        return Ok(false);
    }
    publisher.begin_batch();
    let mut refused = false;
    while *sent < target {
        // The size is at least the stamp's 8 bytes (checked by the command line).
        let _ = latency::write_stamp(msg, latency::now_ns());
        match publisher.offer(msg) {
            Ok(_) => *sent += 1,
            Err(OfferError::Backpressure) => {
                refused = true;
                break;
            }
            Err(e) => {
                publisher.end_batch();
                return Err(Error::Offer(e));
            }
        }
    }
    publisher.end_batch();
    Ok(refused)
}

/// Waits up to [`END_WAIT`] until every subscriber saw the end of session, logging those
/// that did not.
fn wait_for_end(subs: &[Subscription<Tally>]) {
    let begun = Instant::now();
    while subs.iter().any(|s| s.stats().end_of_session == 0) && begun.elapsed() < END_WAIT {
        std::thread::sleep(END_POLL);
    }
    for (i, sub) in subs.iter().enumerate() {
        if sub.stats().end_of_session == 0 {
            tracing::warn!(
                subscriber = i + 1,
                "no end of session within {END_WAIT:?}: it was lost, or the subscriber is \
                 still behind"
            );
        }
    }
}

fn show_progress(elapsed: Duration, sent: u64, subs: &[Subscription<Tally>]) {
    let mut line = format!(
        "{:>4.0} s  sent {:>13}",
        elapsed.as_secs_f64(),
        Grouped(sent)
    );
    for (i, sub) in subs.iter().enumerate() {
        let st = sub.stats();
        line.push_str(&format!(
            "  sub {} {:>13} (gaps {})",
            i + 1,
            Grouped(st.messages),
            Grouped(st.gaps)
        ));
    }
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "\r\x1b[2K{line}");
    let _ = out.flush();
}

/// A session name for this run: `MP` and the process id, so that concurrent demos on one
/// group keep apart.
fn run_session() -> Result<Session> {
    let name = format!("MP{}", std::process::id() % 100_000_000);
    Ok(Session::new(&name).map_err(multipoint_dataplane::Error::from)?)
}

/// The `--hlog` file.
struct Hlog {
    path: PathBuf,
    log: IntervalLog<BufWriter<File>>,
}

impl Hlog {
    fn create(path: &Path, start: SystemTime) -> Result<Hlog> {
        let file = File::create(path).map_err(|source| Error::CreateLog {
            path: path.to_owned(),
            source,
        })?;
        let log =
            IntervalLog::new(BufWriter::new(file), start).map_err(|source| Error::WriteLog {
                path: path.to_owned(),
                source,
            })?;
        Ok(Hlog {
            path: path.to_owned(),
            log,
        })
    }

    /// Appends one interval of subscriber `index` (0-based), tagged `sub1`, `sub2`, ...
    fn append(
        &mut self,
        index: usize,
        start: Duration,
        duration: Duration,
        histogram: &LatencyHistogram,
    ) -> Result<()> {
        let tag = format!("sub{}", index + 1);
        self.log
            .append_tagged(Some(&tag), start, duration, histogram)
            .map_err(|source| Error::WriteLog {
                path: self.path.clone(),
                source,
            })
    }

    fn finish(mut self) -> Result<()> {
        self.log.flush().map_err(|source| Error::WriteLog {
            path: self.path,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_name_is_ten_ascii_bytes_from_the_process_id() {
        let session = run_session().unwrap();
        assert_eq!(&session.as_bytes()[..2], b"MP");
        let id = (std::process::id() % 100_000_000).to_string();
        assert!(session.to_string().contains(&id), "{session}");
    }

    #[test]
    fn the_tally_counts_messages_gaps_and_the_end() {
        let mut tally = Tally::default();
        Handler::on_message(&mut tally, 1, b"12345678");
        Handler::on_message(&mut tally, 2, b"123456789");
        tally.on_end_of_session();
        assert_eq!((tally.messages, tally.bytes, tally.ended), (2, 17, true));
    }
}
