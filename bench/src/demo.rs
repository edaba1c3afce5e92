//! `multipoint demo`: a publisher and two subscribers on loopback multicast, in one
//! process; and the engine of `multipoint throughput`, which runs the same with one.
//!
//! The subscribers run on shards (threads) of their own; the publisher runs on the
//! calling thread ([`crate::publish`]'s paced loop). Every message starts with an 8-byte
//! `CLOCK_MONOTONIC` send timestamp, so each subscriber records one-way latency. After
//! `--secs` or `--count` messages the publisher sends the end of session; the run waits
//! up to a second for every subscriber to see it, closes everything and returns the
//! [`DemoReport`].
//!
//! The run uses its own MoldUDP64 session name (from the process id, unless `--session`
//! names one) and the subscribers follow only that session, so another run on the same
//! group and port does not mix in (its packets are counted as another session's).

use std::time::{Duration, Instant};

use multipoint_dataplane::core::sequence::Gap;
use multipoint_dataplane::latency::LatencyHistogram;
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{
    Handler, HostNeeds, Publisher, PublisherConfig, RecoveryConfig, RerequestConfig, ShardConfig,
    Shards, Subscription, SubscriptionConfig,
};

use crate::cli::{DemoArgs, Idle};
use crate::error::Result;
use crate::host;
use crate::outputs::Outputs;
use crate::plot::Series;
use crate::progress::Progress;
use crate::publish::{check_size, publish, session_or_default, Load};
use crate::report::{DemoReport, Grouped, PublisherReport, Settings, SubscriberReport};

/// How many subscribers the demo runs.
pub const SUBSCRIBERS: usize = 2;

/// How long to wait for the subscribers to see the end of session.
const END_WAIT: Duration = Duration::from_secs(1);
/// How often to look whether they have.
const END_POLL: Duration = Duration::from_millis(5);

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

/// What `multipoint demo` will ask of the host: one publisher, the shards and two
/// subscriptions.
///
/// # Errors
///
/// [`Error::Dataplane`](crate::Error::Dataplane) if the session name is refused (a
/// default one never is).
pub fn host_needs(args: &DemoArgs) -> Result<HostNeeds> {
    local_needs(args, SUBSCRIBERS)
}

/// Runs the demo and returns what it measured. With `progress`, a line on stdout is
/// rewritten once a second (and cleared at the end).
///
/// # Errors
///
/// [`Error::SizeTooLarge`](crate::Error::SizeTooLarge) when `--size` exceeds what a
/// packet carries; the data plane's errors when a socket, ring or shard cannot be set up;
/// [`Error::CreateLog`](crate::Error::CreateLog), [`Error::WriteLog`](crate::Error::WriteLog)
/// and [`Error::WritePlot`](crate::Error::WritePlot) for the output files.
pub fn run(args: &DemoArgs, progress: bool) -> Result<DemoReport> {
    run_local(args, "demo", SUBSCRIBERS, progress)
}

/// The data plane of an in-process run: the publisher, the shards, and what each
/// subscriber subscribes to.
#[derive(Debug)]
struct Setup {
    publisher: PublisherConfig,
    shards: ShardConfig,
    subscription: SubscriptionConfig,
}

impl Setup {
    /// The settings of `args` for the session `session`.
    fn new(args: &DemoArgs, session: Session) -> Setup {
        let group = &args.publish.group;
        // --recover: a server on loopback, any free port (the subscribers learn it once
        // the publisher is made).
        let loopback = match group.group {
            std::net::SocketAddr::V4(_) => std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
            std::net::SocketAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        };
        Setup {
            publisher: PublisherConfig {
                rerequest: args.recover.then(|| local_server(loopback)),
                ..args.publish.publisher_config(session, &args.engine.io)
            },
            shards: args.engine.shard_config(usize::from(args.shards)),
            subscription: SubscriptionConfig {
                timestamps: true,
                interface: group.iface.clone(),
                session: Some(session),
                ..SubscriptionConfig::new(group.group)
            },
        }
    }
}

/// The re-request server of an in-process run (`--recover`): on loopback, any free port,
/// the default store, and allowances far above the defaults. Those are sized against
/// amplification towards strangers; here the one requester is this process, which may
/// lose a sixth of a stream of millions of messages a second to the kernel.
fn local_server(loopback: std::net::IpAddr) -> RerequestConfig {
    let mut config = RerequestConfig::new(std::net::SocketAddr::new(loopback, 0));
    config.server.replies_per_second = 1_000_000;
    config.server.reply_burst = 100_000;
    config.server.bytes_per_second = 2_000_000_000;
    config.server.byte_burst = 200_000_000;
    config
}

/// What a publisher and `subscribers` subscribers in this process ask of the host.
pub(crate) fn local_needs(args: &DemoArgs, subscribers: usize) -> Result<HostNeeds> {
    let setup = Setup::new(args, session_or_default(args.publish.session)?);
    let subscriptions = (0..subscribers).map(|_| setup.subscription.host_needs());
    Ok(host::total(
        [setup.publisher.host_needs(), setup.shards.host_needs()]
            .into_iter()
            .chain(subscriptions),
    ))
}

/// Runs a publisher and `subscribers` subscribers in this process (`demo`, `throughput`).
pub(crate) fn run_local(
    args: &DemoArgs,
    command: &'static str,
    subscribers: usize,
    progress: bool,
) -> Result<DemoReport> {
    // Before any socket: an output file that cannot be written stops the run at once.
    let Outputs { mut log, plot } = Outputs::create(&args.report)?;
    let session = session_or_default(args.publish.session)?;
    let mut setup = Setup::new(args, session);
    let mut publisher = Publisher::new(setup.publisher)?;
    check_size(&publisher, args.load.size, args.engine.io.max_datagram)?;
    setup.subscription.recovery = publisher.rerequest_address().map(RecoveryConfig::new);

    let shard_count = setup.shards.shards;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.engine.idle == Idle::Spin && shard_count + 1 > cores {
        tracing::warn!(
            shards = shard_count,
            cores,
            "--idle spin with more busy threads (shards and the publisher) than cores: \
             they will starve each other"
        );
    }
    let mut shards = Shards::start(setup.shards)?;
    let mut subs = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        subs.push(shards.subscribe(setup.subscription.clone(), Tally::default())?);
    }

    let mut totals: Vec<LatencyHistogram> =
        (0..subscribers).map(|_| LatencyHistogram::new()).collect();
    let load = Load::new(&args.load);
    let mut line = Progress::new(progress);
    let published = publish(&mut publisher, &load, &mut line, |interval, sent, line| {
        if let Some(log) = &mut log {
            for (i, (sub, total)) in subs.iter().zip(&mut totals).enumerate() {
                log.take(&tag(i), interval, sub, total)?;
            }
        }
        line.show(|| progress_line(interval.0 + interval.1, sent, &subs));
        Ok(())
    })?;
    let start = published.start;

    let publisher_backend = publisher.backend().clone();
    if publisher.rerequest_address().is_some() {
        // The subscribers hear the end once they recovered what they lost: serve their
        // re-requests meanwhile.
        publisher.end_session();
        wait_for_end(&subs, || publisher.poll());
    }
    let publisher_stats = publisher.close();
    wait_for_end(&subs, || {});

    let backend = shards.backend().clone();
    // The last interval of the log ends here, for every subscriber alike.
    let end = start.elapsed();
    let mut reports = Vec::with_capacity(subscribers);
    let mut all = LatencyHistogram::new();
    let mut series = Vec::with_capacity(subscribers);
    for (i, (sub, mut total)) in subs.into_iter().zip(totals).enumerate() {
        let shard = sub.shard();
        let (session, sender) = (sub.session(), sub.sender());
        let closed = sub.close()?;
        if let Some(log) = &mut log {
            let from = published.last_tick;
            log.append(&tag(i), from, end.saturating_sub(from), &closed.latency)?;
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
        all.merge(&total);
        reports.push(SubscriberReport {
            shard,
            backend: backend.clone(),
            stats: closed.stats,
            latency: total.percentiles(),
            session: session.map(|s| s.to_string()),
            sender: sender.map(|s| s.to_string()),
        });
        series.push(Series::new(format!("subscriber {}", i + 1), &total));
    }
    shards.shutdown();
    if let Some(log) = log {
        log.finish()?;
    }
    if let Some(plot) = plot {
        let title = format!(
            "multipoint {command}: one-way latency, {}-byte messages, {}",
            args.load.size,
            if args.load.rate == 0 {
                "as fast as possible".to_owned()
            } else {
                format!("{} msgs/s", Grouped(args.load.rate))
            }
        );
        plot.write(&title, &series)?;
    }

    Ok(DemoReport {
        command,
        settings: Settings {
            group: args.publish.group.group.to_string(),
            interface: args.publish.group.iface.to_string(),
            size: args.load.size,
            rate: args.load.rate,
            shards: shard_count,
            gso: args.engine.io.gso.is_on(),
            idle: args.engine.idle.name().to_owned(),
        },
        elapsed: published.elapsed,
        publisher: PublisherReport {
            backend: publisher_backend,
            stats: publisher_stats,
        },
        subscribers: reports,
        latency: all.percentiles(),
    })
}

/// The interval log's tag of subscriber `index` (0-based): `sub1`, `sub2`, ...
fn tag(index: usize) -> String {
    format!("sub{}", index + 1)
}

/// Waits up to [`END_WAIT`] until every subscriber saw the end of session, logging those
/// that did not.
fn wait_for_end(subs: &[Subscription<Tally>], mut meanwhile: impl FnMut()) {
    let begun = Instant::now();
    while !subs.iter().all(ended) && begun.elapsed() < END_WAIT {
        meanwhile();
        std::thread::sleep(END_POLL);
    }
    for (i, sub) in subs.iter().enumerate() {
        if !ended(sub) {
            tracing::warn!(
                subscriber = i + 1,
                "no end of session within {END_WAIT:?}: it was lost, or the subscriber is \
                 still behind"
            );
        }
    }
}

/// Whether `sub`'s handler heard the end of session (with recovery, that is once it was
/// done recovering).
fn ended(sub: &Subscription<Tally>) -> bool {
    sub.stats().ended > 0
}

fn progress_line(elapsed: Duration, sent: u64, subs: &[Subscription<Tally>]) -> String {
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
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_counts_messages_gaps_and_the_end() {
        let mut tally = Tally::default();
        Handler::on_message(&mut tally, 1, b"12345678");
        Handler::on_message(&mut tally, 2, b"123456789");
        tally.on_end_of_session();
        assert_eq!((tally.messages, tally.bytes, tally.ended), (2, 17, true));
    }

    #[test]
    fn interval_log_tags_count_from_one() {
        assert_eq!(tag(0), "sub1");
        assert_eq!(tag(1), "sub2");
    }
}
