//! `multipoint pub`: publishes timestamped messages at a rate, and the paced send loop
//! that `demo` and `throughput` share.
//!
//! Every message starts with an 8-byte `CLOCK_MONOTONIC` send timestamp
//! ([`latency::write_stamp`]; the clock is read once per 16 messages of a batch), so that a
//! subscriber on this host measures one-way latency;
//! the rest is a recognisable pattern (0x08, 0x09, ... wrapping). The loop works in small
//! time slices on the calling thread: it offers the messages due so far (at most `--batch`)
//! between `begin_batch` and `end_batch`, flushes when paced, and sleeps briefly when
//! ahead of schedule; it never spins. It stops after `--secs` or `--count` messages,
//! whichever comes first, and flushes. `pub` then closes the publisher, which sends the
//! end of session.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use multipoint_dataplane::latency;
use multipoint_dataplane::rooted_transport::UnicastRoot;
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{HostNeeds, LineB, OfferError, Pacer, Publisher, PublisherConfig};

use crate::cli::{LoadArgs, PubArgs};
use crate::error::{Error, Result};
use crate::interrupt;
use crate::progress::{Progress, Ticker};
use crate::report::{
    per_second, Grouped, LineBReport, PubReport, PublisherReport, SendToWireReport,
};

/// The shortest and longest sleep when the publisher is ahead of schedule. The kernel adds
/// its timer slack (about 50 µs) to either.
const MIN_SLEEP: Duration = Duration::from_micros(50);
const MAX_SLEEP: Duration = Duration::from_micros(200);
/// The pause after the publisher refused a message because every buffer was in flight.
const BACKPRESSURE_PAUSE: Duration = Duration::from_micros(50);

/// What to publish and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Load {
    /// Message size in bytes (at least the stamp's 8).
    pub(crate) size: usize,
    /// Messages per second; 0 = as fast as possible.
    pub(crate) rate: u64,
    /// Most messages per batch.
    pub(crate) batch: u64,
    /// Stop after this long (`None`: no time limit).
    pub(crate) secs: Option<Duration>,
    /// Stop after this many messages (`None`: no limit).
    pub(crate) count: Option<u64>,
}

impl Load {
    /// What `--size`, `--rate`, `--batch`, `--secs` and `--count` ask for.
    pub(crate) fn new(load: &LoadArgs) -> Load {
        Load {
            size: load.size,
            rate: load.rate,
            batch: load.batch,
            secs: load.stop.secs,
            count: load.stop.count,
        }
    }
}

/// What the send loop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Published {
    /// Messages offered.
    pub(crate) sent: u64,
    /// When the loop started.
    pub(crate) start: Instant,
    /// How long it published, until the last flush.
    pub(crate) elapsed: Duration,
    /// When the last once-a-second interval began (time since the start).
    pub(crate) last_tick: Duration,
}

/// What the paced send loop sends through: a [`Publisher`] (pub, demo, throughput, the
/// admitted-multicast root, a sending leaf) or a [`UnicastRoot`] (the rooted-unicast
/// root). Batching is optional: a sink without it sends full packets as they fill.
/// Either may run a re-request server, which [`linger`] keeps serving after the end.
pub(crate) trait Sink {
    /// Holds full packets until [`end_batch`](Sink::end_batch).
    fn begin_batch(&mut self) {}
    /// Sends the packets held since [`begin_batch`](Sink::begin_batch).
    fn end_batch(&mut self) {}
    /// Packs one message; hands it back refused when every buffer is in flight.
    fn offer(&mut self, msg: &[u8]) -> std::result::Result<u64, OfferError>;
    /// Timers and completions.
    fn poll(&mut self);
    /// Sends what is packed now.
    fn flush(&mut self);
    /// Sends the end of session now; a re-request server goes on answering from
    /// [`poll`](Sink::poll).
    fn end_session(&mut self);
    /// Where its re-request server listens; `None` without one.
    fn rerequest_address(&self) -> Option<SocketAddr>;
}

/// Implements [`Sink`] for types whose inherent methods of the same names do the work.
macro_rules! sink_by_inherent_methods {
    ($($sink:ty),*) => {$(
        impl Sink for $sink {
            fn begin_batch(&mut self) {
                <$sink>::begin_batch(self)
            }
            fn end_batch(&mut self) {
                <$sink>::end_batch(self)
            }
            fn offer(&mut self, msg: &[u8]) -> std::result::Result<u64, OfferError> {
                <$sink>::offer(self, msg)
            }
            fn poll(&mut self) {
                <$sink>::poll(self)
            }
            fn flush(&mut self) {
                <$sink>::flush(self)
            }
            fn end_session(&mut self) {
                <$sink>::end_session(self)
            }
            fn rerequest_address(&self) -> Option<SocketAddr> {
                <$sink>::rerequest_address(self)
            }
        }
    )*};
}

sink_by_inherent_methods!(Publisher, UnicastRoot);

/// The paced send loop, one time slice at a time, for callers that do other work between
/// slices (a leaf that sends and receives); [`publish`] runs it to the end.
#[derive(Debug)]
pub(crate) struct Paced {
    pacer: Option<Pacer>,
    limit: u64,
    secs: Option<Duration>,
    batch: u64,
    msg: Vec<u8>,
    sent: u64,
}

impl Paced {
    /// A loop that will send `load`.
    pub(crate) fn new(load: &Load) -> Paced {
        let mut msg = vec![0u8; load.size];
        for (i, b) in msg.iter_mut().enumerate() {
            // A recognisable payload after the stamp: 0x08, 0x09, ... wrapping.
            *b = i as u8;
        }
        Paced {
            // No bound on catching up: a run's rate is its average over the run.
            pacer: Pacer::new(load.rate, u64::MAX),
            limit: load.count.unwrap_or(u64::MAX),
            secs: load.secs,
            batch: load.batch,
            msg,
            sent: 0,
        }
    }

    /// Messages offered so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether the count is reached or the time is up, `elapsed` after the start, or a
    /// signal asked the run to end ([`interrupt::requested`]).
    pub(crate) fn done(&self, elapsed: Duration) -> bool {
        self.sent >= self.limit || self.secs.is_some_and(|s| elapsed >= s) || interrupt::requested()
    }

    /// One slice: offers the messages due `start.elapsed()` after `start` (at most a
    /// batch), then returns how long the caller should sleep before the next slice (zero:
    /// carry on at once).
    ///
    /// # Errors
    ///
    /// [`Error::Offer`] when the sink refuses a message for a reason other than
    /// backpressure.
    pub(crate) fn step<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        start: Instant,
    ) -> Result<Duration> {
        let due = match self.pacer {
            Some(p) => p.due(start.elapsed()),
            None => u64::MAX,
        };
        let target = due
            .min(self.sent.saturating_add(self.batch))
            .min(self.limit);
        let refused = offer_batch(sink, &mut self.msg, &mut self.sent, target)?;
        sink.poll();
        if refused {
            return Ok(BACKPRESSURE_PAUSE);
        }
        if let Some(p) = self.pacer {
            // Paced: what was due leaves now rather than waiting for a fuller packet.
            sink.flush();
            if self.sent >= due {
                let wait = p.until_next(self.sent, start.elapsed());
                return Ok(wait.clamp(MIN_SLEEP, MAX_SLEEP));
            }
        }
        Ok(Duration::ZERO)
    }
}

/// Publishes `load` from now on, calling `on_tick` once a second with the interval that
/// just closed (its start and length, since the start), the messages sent so far and the
/// progress `line`; then flushes the sink and clears the line.
///
/// # Errors
///
/// [`Error::Offer`] when the sink refuses a message for a reason other than
/// backpressure; whatever `on_tick` returns.
pub(crate) fn publish<S: Sink + ?Sized>(
    sink: &mut S,
    load: &Load,
    line: &mut Progress,
    mut on_tick: impl FnMut((Duration, Duration), u64, &mut Progress) -> Result<()>,
) -> Result<Published> {
    let mut paced = Paced::new(load);
    let mut ticker = Ticker::default();
    let start = Instant::now();
    loop {
        let elapsed = start.elapsed();
        if paced.done(elapsed) {
            break;
        }
        if let Some(interval) = ticker.tick(elapsed) {
            on_tick(interval, paced.sent, line)?;
        }
        let wait = paced.step(sink, start)?;
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
    sink.flush();
    let elapsed = start.elapsed();
    line.clear();
    tracing::debug!(sent = paced.sent, ?elapsed, "publishing done");
    Ok(Published {
        sent: paced.sent,
        start,
        elapsed,
        last_tick: ticker.last(),
    })
}

/// The progress line of a tool that only publishes (`pub`, `root`): seconds, messages
/// sent and their rate. An `on_tick` for [`publish`].
///
/// # Errors
///
/// None: the signature is `on_tick`'s.
pub(crate) fn show_sent(
    (from, len): (Duration, Duration),
    sent: u64,
    line: &mut Progress,
) -> Result<()> {
    let elapsed = from + len;
    line.show(|| {
        format!(
            "{:>4.0} s  sent {:>13}  ({} msgs/s)",
            elapsed.as_secs_f64(),
            Grouped(sent),
            Grouped(per_second(sent, elapsed).round() as u64)
        )
    });
    Ok(())
}

/// Messages stamped with one clock reading (see [`offer_batch`]).
const STAMP_EVERY: u32 = 16;

/// Offers stamped messages until `*sent` reaches `target`, as one batch. Returns whether
/// the sink refused one for backpressure (the caller polls, pauses and retries).
fn offer_batch<S: Sink + ?Sized>(
    sink: &mut S,
    msg: &mut [u8],
    sent: &mut u64,
    target: u64,
) -> Result<bool> {
    if *sent >= target {
        return Ok(false);
    }
    sink.begin_batch();
    let mut refused = false;
    let mut stamp = 0;
    let mut since_read = STAMP_EVERY;
    while *sent < target {
        // Reading the clock costs about as much as offering a 32-byte message (24 ns in
        // this VM), so it is read once per STAMP_EVERY messages: a stamp is then early by
        // at most that many offers (well under a microsecond), which overstates latency
        // by as much, never understates it.
        if since_read == STAMP_EVERY {
            stamp = latency::now_ns();
            since_read = 0;
        }
        since_read += 1;
        // The size is at least the stamp's 8 bytes (checked by the command line).
        let _ = latency::write_stamp(msg, stamp);
        match sink.offer(msg) {
            Ok(_) => *sent += 1,
            Err(OfferError::Backpressure) => {
                refused = true;
                break;
            }
            Err(e) => {
                sink.end_batch();
                return Err(Error::Offer(e));
            }
        }
    }
    sink.end_batch();
    Ok(refused)
}

/// The session `--session` named, or one for this run: `MP` and the process id, so that
/// concurrent runs on one group keep apart.
///
/// # Errors
///
/// The data plane's [`Error::Wire`](multipoint_dataplane::Error::Wire) (not for the
/// default name, which is always valid).
pub(crate) fn session_or_default(session: Option<Session>) -> Result<Session> {
    match session {
        Some(s) => Ok(s),
        None => {
            let name = format!("MP{}", std::process::id() % 100_000_000);
            Ok(Session::new(&name).map_err(multipoint_dataplane::Error::from)?)
        }
    }
}

/// Fails with [`Error::SizeTooLarge`] if `size` exceeds what the publisher's packets carry.
pub(crate) fn check_size(publisher: &Publisher, size: usize, max_datagram: usize) -> Result<()> {
    if size > publisher.max_message() {
        return Err(Error::SizeTooLarge {
            size,
            limit: publisher.max_message(),
            max_datagram,
        });
    }
    Ok(())
}

/// The publisher `pub` starts.
fn publisher_config(args: &PubArgs, session: Session) -> PublisherConfig {
    PublisherConfig {
        rerequest: args.rerequest.config(),
        line_b: line_b(args),
        tx_stamp_every: if args.tx_stamps {
            args.tx_stamp_every
        } else {
            0
        },
        ..args.publish.publisher_config(session, &args.io)
    }
}

/// Line B, with `--line-b`: on `--iface-b`, else on `--iface`.
fn line_b(args: &PubArgs) -> Option<LineB> {
    let group = args.line_b?;
    let interface = args
        .iface_b
        .clone()
        .unwrap_or_else(|| args.publish.group.iface.clone());
    Some(LineB::new(group, interface))
}

/// How often a lingering publisher or root looks for re-requests.
const LINGER_POLL: Duration = Duration::from_micros(200);

/// After the end of session, keeps `sink` (a publisher, or a root) serving re-requests
/// (and repeating the end of session every heartbeat interval) for `linger`. Without a
/// re-request server it does nothing: closing the sink ends the session.
pub(crate) fn linger<S: Sink + ?Sized>(sink: &mut S, linger: Duration) {
    if sink.rerequest_address().is_none() {
        return;
    }
    sink.end_session();
    let until = Instant::now() + linger;
    while Instant::now() < until && !interrupt::requested() {
        sink.poll();
        std::thread::sleep(LINGER_POLL);
    }
}

/// What `multipoint pub` will ask of the host: one publisher (with a sender per line).
///
/// # Errors
///
/// [`Error::Dataplane`] if the session name is refused (a
/// default one never is).
pub fn host_needs(args: &PubArgs) -> Result<HostNeeds> {
    Ok(publisher_config(args, session_or_default(args.publish.session)?).host_needs())
}

/// Runs `multipoint pub` and returns what it sent. With `progress`, a line on stdout is
/// rewritten once a second.
///
/// # Errors
///
/// [`Error::SizeTooLarge`] when `--size` exceeds what a packet carries; the data plane's
/// errors when the socket or ring cannot be set up; [`Error::Offer`].
pub fn run(args: &PubArgs, progress: bool) -> Result<PubReport> {
    let session = session_or_default(args.publish.session)?;
    let config = publisher_config(args, session);
    let line_b = config.line_b.clone();
    let mut publisher = Publisher::new(config)?;
    check_size(&publisher, args.load.size, args.io.max_datagram)?;
    if let Some(server) = publisher.rerequest_address() {
        println!("multipoint pub: serving re-requests on {server}");
    }
    let load = Load::new(&args.load);
    let mut line = Progress::new(progress);
    let published = publish(&mut publisher, &load, &mut line, show_sent)?;
    linger(&mut publisher, args.rerequest.linger);
    let backend = publisher.backend().clone();
    let rerequest = publisher.rerequest_stats();
    let stored = publisher.store().map(|s| s.stats());
    // The end of session first (closing would send it after the stamps are read), then
    // the stamps of the last sends, which come a few microseconds after them.
    publisher.end_session();
    let tx_stamps = publisher
        .send_latency(Duration::from_millis(100))
        .map(|l| SendToWireReport {
            every: args.tx_stamp_every,
            latency: l.send_to_wire.percentiles(),
            stats: l.stats,
        });
    let xdp = publisher.xdp_stats();
    let (stats, line_b_stats) = publisher.close_lines();
    let line_b = line_b.zip(line_b_stats).map(|(line, stats)| LineBReport {
        group: line.group.to_string(),
        interface: line.interface.to_string(),
        stats,
    });
    Ok(PubReport {
        group: args.publish.group.group.to_string(),
        interface: args.publish.group.iface.to_string(),
        session: session.to_string(),
        size: args.load.size,
        rate: args.load.rate,
        elapsed: published.elapsed,
        publisher: PublisherReport { backend, stats },
        rerequest,
        stored,
        line_b,
        tx_stamps,
        xdp,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn pub_args(line: &str) -> Result<PubArgs, clap::Error> {
        let cli = Cli::try_parse_from(
            ["multipoint", "pub"]
                .into_iter()
                .chain(line.split_whitespace()),
        )?;
        match cli.command {
            Command::Pub(args) => Ok(args),
            other => panic!("not pub: {other:?}"),
        }
    }

    #[test]
    fn line_b_leaves_on_the_iface_of_line_a_unless_iface_b_names_another() {
        let args = pub_args("--iface lo --line-b 239.255.0.2:31002").unwrap();
        let config = publisher_config(&args, Session::new("FEED1").unwrap());
        assert_eq!(
            config.line_b,
            Some(LineB::new(
                "239.255.0.2:31002".parse().unwrap(),
                "lo".parse().unwrap()
            ))
        );
        let args = pub_args("--iface lo --line-b 239.255.0.2:31002 --iface-b 7").unwrap();
        let line = line_b(&args).unwrap();
        assert_eq!(line.interface, multipoint_control::Interface::Index(7));
        assert_eq!(line_b(&pub_args("").unwrap()), None, "one line by default");
        assert_eq!(
            host_needs(&pub_args("--line-b 239.255.0.2:1").unwrap())
                .unwrap()
                .senders,
            2
        );
    }

    #[test]
    fn iface_b_without_line_b_is_a_usage_error() {
        assert!(pub_args("--iface-b lo").is_err());
        assert!(
            pub_args("--line-b 239.255.0.2").is_err(),
            "a port is needed"
        );
    }

    #[test]
    fn the_default_session_name_is_ten_ascii_bytes_from_the_process_id() {
        let session = session_or_default(None).unwrap();
        assert_eq!(&session.as_bytes()[..2], b"MP");
        let id = (std::process::id() % 100_000_000).to_string();
        assert!(session.to_string().contains(&id), "{session}");
        let named = Session::new("FEED1").unwrap();
        assert_eq!(session_or_default(Some(named)).unwrap(), named);
    }
}
