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
//! whichever comes first. `pub` then closes the publisher, which sends the end of session.

use std::time::{Duration, Instant};

use multipoint_dataplane::latency;
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{OfferError, Publisher};

use crate::cli::{publisher_config, PubArgs};
use crate::error::{Error, Result};
use crate::pacing::Pacer;
use crate::progress::{Progress, Ticker};
use crate::report::{per_second, Grouped, PubReport, PublisherReport};

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

/// What the send loop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Published {
    /// Messages offered.
    pub(crate) sent: u64,
    /// When the last once-a-second interval began (time since the start).
    pub(crate) last_tick: Duration,
}

/// Publishes `load` from `start` on, calling `on_tick` once a second with the interval
/// that just closed (its start and length, since `start`) and the messages sent so far.
///
/// # Errors
///
/// [`Error::Offer`] when the publisher refuses a message for a reason other than
/// backpressure; whatever `on_tick` returns.
pub(crate) fn publish(
    publisher: &mut Publisher,
    load: &Load,
    start: Instant,
    mut on_tick: impl FnMut((Duration, Duration), u64) -> Result<()>,
) -> Result<Published> {
    let pacer = Pacer::new(load.rate);
    let limit = load.count.unwrap_or(u64::MAX);
    let mut msg = vec![0u8; load.size];
    for (i, b) in msg.iter_mut().enumerate() {
        // A recognisable payload after the stamp: 0x08, 0x09, ... wrapping.
        *b = i as u8;
    }
    let mut sent = 0u64;
    let mut ticker = Ticker::default();
    loop {
        let elapsed = start.elapsed();
        if sent >= limit || load.secs.is_some_and(|s| elapsed >= s) {
            return Ok(Published {
                sent,
                last_tick: ticker.last(),
            });
        }
        if let Some(interval) = ticker.tick(elapsed) {
            on_tick(interval, sent)?;
        }
        let due = match pacer {
            Some(p) => p.due(elapsed),
            None => u64::MAX,
        };
        let target = due.min(sent.saturating_add(load.batch)).min(limit);
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

/// Messages stamped with one clock reading (see [`offer_batch`]).
const STAMP_EVERY: u32 = 16;

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

/// Runs `multipoint pub` and returns what it sent. With `progress`, a line on stdout is
/// rewritten once a second.
///
/// # Errors
///
/// [`Error::SizeTooLarge`] when `--size` exceeds what a packet carries; the data plane's
/// errors when the socket or ring cannot be set up; [`Error::Offer`].
pub fn run(args: &PubArgs, progress: bool) -> Result<PubReport> {
    let session = session_or_default(args.session)?;
    let config = publisher_config(
        session,
        args.group.group,
        &args.group.iface,
        &args.io,
        &args.publish,
    );
    let mut publisher = Publisher::new(config)?;
    check_size(&publisher, args.load.size, args.io.max_datagram)?;
    let load = Load {
        size: args.load.size,
        rate: args.load.rate,
        batch: args.load.batch,
        secs: args.stop.secs,
        count: args.stop.count,
    };
    let mut line = Progress::new(progress);
    let start = Instant::now();
    let published = publish(&mut publisher, &load, start, |(from, len), sent| {
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
    })?;
    publisher.flush();
    let elapsed = start.elapsed();
    line.clear();
    tracing::debug!(sent = published.sent, ?elapsed, "publishing done");
    let backend = publisher.backend().clone();
    let stats = publisher.close();
    Ok(PubReport {
        group: args.group.group.to_string(),
        interface: args.group.iface.to_string(),
        session: session.to_string(),
        size: args.load.size,
        rate: args.load.rate,
        elapsed,
        publisher: PublisherReport { backend, stats },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
