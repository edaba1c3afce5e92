//! `multipoint leaf`: a leaf of a rooted session. It joins `multipoint root` (or any
//! multipoint root), receives what the root publishes and reports it as `multipoint sub`
//! does; with `--direction send` or `both` (rooted-unicast) it also publishes timestamped
//! messages to the root's uplink.
//!
//! The leaf is a [`DataLeaf`] on one shard thread. Once admitted it prints one line saying
//! what it joined; a refused join is an [`Error::Join`] carrying the root's reason (the
//! tool exits with status 1). The calling thread then sends in paced slices (when it
//! sends) and looks at the counters every few milliseconds, sleeping in between. It stops
//! when:
//!
//! - `--count` messages arrived (and, when sending, were sent);
//! - `--secs` passed;
//! - the session ended: the root closed it (end of session on the data plane, and the
//!   control plane's word with the root's reason; whichever comes first, the leaf waits up
//!   to [`END_GRACE`] for the other, so that data still in flight is counted and the
//!   reason is known), the root removed this leaf, or the root went silent. The data
//!   plane's end counts once the handler heard it ([`SubscriptionStats::ended`]): with
//!   recovery, once what the end found missing was recovered or given up.
//!
//! With `--rerequest ADDR:PORT` the leaf recovers lost messages from the root's
//! re-request server there (`multipoint root --rerequest-server`, whose first line names
//! it: the control protocol does not), as `sub` does from a publisher's; the report has
//! the recovery counters.
//!
//! Why it stopped is part of the report ([`LeafEnd`]). One-way latency comes from the
//! send timestamp `multipoint root` (like `multipoint pub`) puts first in each message,
//! judged as `sub` judges it ([`judge_stamps`](crate::subscribe::judge_stamps)).
//!
//! The shard is not pinned: several leaves often share a host.

use std::time::{Duration, Instant};

use multipoint_control::rooted::{DataPlan, SessionEvent};
use multipoint_control::Direction;
use multipoint_dataplane::rooted_transport::{DataLeaf, DataLeafConfig, Joined};
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{HostNeeds, ShardConfig, Shards, SubscriptionStats};

use crate::cli::{LeafArgs, RootedTransport};
use crate::error::{Error, Result};
use crate::interrupt;
use crate::outputs::Outputs;
use crate::progress::Progress;
use crate::publish::{check_size, Load, Paced};
use crate::report::{Grouped, LeafEnd, LeafFlow, LeafReport, PublisherReport};
use crate::root::{direction_name, load_key, transport_name};
use crate::subscribe::{receive_progress, recovering, start_at, until, Receiving, Watch};

/// How often the counters are looked at when nothing is being sent.
const POLL: Duration = Duration::from_millis(5);
/// Once the session ended on one plane (data or control), how long to wait for the
/// other.
pub const END_GRACE: Duration = Duration::from_millis(500);
/// The interval log's tag.
const TAG: &str = "leaf";

/// What the leaf has seen of the session's end so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    /// The control plane's event, and how long ago it came.
    pub control: Option<(SessionEvent, Duration)>,
    /// How long ago the data plane's end of session came.
    pub data: Option<Duration>,
}

/// Whether the session is over for a leaf that `receives` (sans-IO: the caller says what
/// it saw and how long ago). The root closing the session shows on both planes: a leaf
/// that receives waits up to [`END_GRACE`] for the second. Being removed or losing the
/// root shows on the control plane only, and ends at once.
pub fn session_end(ending: &Ending, receives: bool) -> Option<LeafEnd> {
    match (&ending.control, ending.data) {
        (Some((SessionEvent::Removed { reason }, _)), _) => Some(LeafEnd::Removed(reason.clone())),
        (Some((SessionEvent::RootGone { reason }, _)), _) => {
            Some(LeafEnd::RootGone(reason.clone()))
        }
        (Some((SessionEvent::Ended { reason }, _)), Some(_)) => {
            Some(LeafEnd::RootClosed(Some(reason.clone())))
        }
        (Some((SessionEvent::Ended { reason }, ago)), None) => {
            (!receives || *ago >= END_GRACE).then(|| LeafEnd::RootClosed(Some(reason.clone())))
        }
        (None, Some(ago)) => (ago >= END_GRACE).then_some(LeafEnd::RootClosed(None)),
        (None, None) => None,
    }
}

/// The leaf's settings for the data plane.
fn leaf_config(args: &LeafArgs, name: &str) -> DataLeafConfig {
    let mut config = DataLeafConfig::new(args.transport.into(), name);
    config.data = args.data;
    config.interface = args.iface.clone();
    config.subscription.interface = args.iface.clone();
    config.subscription.timestamps = true;
    config.subscription.start = start_at(args.late_join);
    config.subscription.recovery = args.recovery.config();
    let io = &args.engine.io;
    config.publisher.backend = io.backend.into();
    config.publisher.gso = io.gso.is_on();
    config.publisher.max_datagram = io.max_datagram;
    config
}

/// The leaf's shard (unpinned: several leaves often share a host).
fn shard_config(args: &LeafArgs) -> ShardConfig {
    ShardConfig {
        pin: false,
        ..args.engine.shard_config(1)
    }
}

/// The leaf's name: `--name`, or `leaf-` and the process id.
fn leaf_name(args: &LeafArgs) -> String {
    args.name
        .clone()
        .unwrap_or_else(|| format!("leaf-{}", std::process::id()))
}

/// What `multipoint leaf` will ask of the host: one shard, the data socket's receive
/// buffer (a rooted-unicast leaf asks for it whatever its direction) and, when it sends, a
/// publisher.
pub fn host_needs(args: &LeafArgs) -> HostNeeds {
    let config = leaf_config(args, &leaf_name(args));
    let needs = shard_config(args)
        .host_needs()
        .and(config.subscription.host_needs());
    if Direction::from(args.direction).sends() {
        needs.and(config.publisher.host_needs())
    } else {
        needs
    }
}

/// Where the data comes from: the root's data address, or the group and the source.
fn data_of(plan: &DataPlan) -> (String, Option<String>) {
    match plan {
        DataPlan::Unicast { root, .. } => (root.to_string(), None),
        DataPlan::Multicast { group, source } => (group.to_string(), Some(source.to_string())),
    }
}

/// [`data_of`] in words.
fn data_words(plan: &DataPlan) -> String {
    match data_of(plan) {
        (data, Some(source)) => format!("{data} from {source}"),
        (data, None) => format!("from {data}"),
    }
}

/// The first line `leaf` prints, once admitted.
fn joined_line(args: &LeafArgs, name: &str, joined: &Joined<Watch>) -> String {
    let session = joined.session();
    let mut line = format!(
        "multipoint leaf {name}: joined {} ({}, session {}, {}), data {}",
        args.root,
        transport_name(args.transport),
        Session::from_bytes(session.session()),
        direction_name(session.direction()),
        data_words(session.plan()),
    );
    line.push_str(&recovering(&args.recovery));
    line.push_str(&until(&args.load.stop));
    line
}

/// Runs `multipoint leaf` and returns what it measured. With `progress`, a line on stdout
/// is rewritten once a second.
///
/// # Errors
///
/// [`Error::Key`] when `--key-file` cannot be used; [`Error::LeafCannotSend`] for a
/// sending leaf on admitted-multicast; [`Error::Join`]
/// when the root refuses (with its reason) or cannot be reached; [`Error::SizeTooLarge`]
/// for a message too large to send; the data plane's errors setting up the shard or the
/// data socket; [`Error::Offer`]; the output files' errors.
pub fn run(args: &LeafArgs, progress: bool) -> Result<LeafReport> {
    let direction = Direction::from(args.direction);
    if args.transport == RootedTransport::AdmittedMulticast && direction.sends() {
        return Err(Error::LeafCannotSend {
            direction: direction_name(direction),
        });
    }
    let name = leaf_name(args);
    // Before anything else: a key file that cannot be used stops the leaf at once.
    let key = load_key(args.key_file.as_deref())?;
    // So does an output file that cannot be written.
    let mut receiving = Receiving::new(TAG, Outputs::create(&args.report)?);
    let mut shards = Shards::start(shard_config(args))?;
    let mut config = leaf_config(args, &name);
    config.key = key;
    let leaf = DataLeaf::new(config)?;
    let mut joined = leaf
        .join(&mut shards, args.root, direction, Watch::default())
        .map_err(|source| Error::Join {
            root: args.root,
            source,
        })?;
    println!("{}", joined_line(args, &name, &joined));
    let receives = direction.receives();
    let sends = direction.sends();
    if let Some(publisher) = joined.publisher() {
        check_size(publisher, args.load.size, args.engine.io.max_datagram)?;
    }

    let limit = args.load.stop.count.unwrap_or(u64::MAX);
    let mut paced = sends.then(|| Paced::new(&Load::new(&args.load)));
    let mut line = Progress::new(progress);
    let mut control_end: Option<(SessionEvent, Instant)> = None;
    let mut data_end: Option<Instant> = None;
    let mut sent_by: Option<Duration> = None;
    let start = Instant::now();
    let end = loop {
        let elapsed = start.elapsed();
        let st = joined.subscription().map(|s| s.stats()).unwrap_or_default();
        receiving.look(&st);
        if control_end.is_none() {
            if let Ok(event) = joined.session().events().try_recv() {
                control_end = Some((event, Instant::now()));
            }
        }
        // The handler heard the end (with recovery: after recovering what it found
        // missing), not merely the end's packet.
        if data_end.is_none() && st.ended > 0 {
            data_end = Some(Instant::now());
        }
        let ending = Ending {
            control: control_end
                .as_ref()
                .map(|(e, at)| (e.clone(), at.elapsed())),
            data: data_end.map(|at| at.elapsed()),
        };
        if let Some(end) = session_end(&ending, receives) {
            break end;
        }
        let sent_all = paced.as_ref().is_none_or(|p| p.done(elapsed));
        if sends && sent_all && sent_by.is_none() {
            sent_by = Some(elapsed);
        }
        let received_all = !receives || st.messages >= limit;
        if args.load.stop.count.is_some() && sent_all && received_all {
            break LeafEnd::Count;
        }
        if args.load.stop.secs.is_some_and(|s| elapsed >= s) {
            break LeafEnd::Time;
        }
        if let Some(signal) = interrupt::signal() {
            break LeafEnd::Interrupted(signal);
        }
        if receiving.tick(elapsed, joined.subscription())? {
            let sent = paced.as_ref().map_or(0, Paced::sent);
            line.show(|| progress_line(elapsed, &st, receives, sent));
        }
        // Sending stops once the session is ending: nobody would take it.
        let wait = match (&mut paced, joined.publisher()) {
            (Some(p), Some(publisher)) if !p.done(elapsed) && control_end.is_none() => {
                p.step(publisher, start)?
            }
            _ => POLL,
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    };
    line.clear();
    let finished = start.elapsed();
    let send_elapsed = sent_by.unwrap_or(finished);
    let sent = match joined.publisher() {
        Some(publisher) => {
            publisher.flush();
            Some(PublisherReport {
                backend: publisher.backend().clone(),
                stats: publisher.stats(),
            })
        }
        None => None,
    };
    let session = Session::from_bytes(joined.session().session()).to_string();
    let (data, source) = data_of(joined.session().plan());
    let backend = shards.backend().clone();
    let closed = joined.leave()?;
    shards.shutdown();
    drop(leaf);

    let received = match closed {
        Some(closed) => {
            let title = format!("multipoint leaf {name}: one-way latency, {}", args.root);
            Some(receiving.finish(closed, backend, finished, &title, Default::default())?)
        }
        None => None,
    };
    let (flow, elapsed) = match (received, sent) {
        (Some((r, active)), Some(p)) => (LeafFlow::Both(r, p), active),
        (Some((r, active)), None) => (LeafFlow::Receive(r), active),
        (None, Some(p)) => (LeafFlow::Send(p), send_elapsed),
        (None, None) => {
            // A leaf's direction receives or sends; the data plane set up what it asked.
            return Err(Error::Dataplane(multipoint_dataplane::Error::Config(
                "the leaf neither received nor sent".into(),
            )));
        }
    };
    if let Some(reason) = end.reason() {
        tracing::debug!(%reason, "the session ended");
    }
    Ok(LeafReport {
        name,
        transport: transport_name(args.transport),
        root: args.root.to_string(),
        session,
        direction: direction_name(direction),
        data,
        source,
        elapsed,
        send_elapsed,
        flow,
        end,
    })
}

/// The progress line.
fn progress_line(elapsed: Duration, st: &SubscriptionStats, receives: bool, sent: u64) -> String {
    let mut line = format!("{:>4.0} s", elapsed.as_secs_f64());
    if receives {
        line.push_str(&receive_progress(st, elapsed));
    }
    if sent > 0 {
        line.push_str(&format!("  sent {}", Grouped(sent)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended() -> SessionEvent {
        SessionEvent::Ended {
            reason: "root closed".into(),
        }
    }

    /// What a leaf saw: the control plane's `event`, `ago`, and nothing on the data plane.
    fn control(event: SessionEvent, ago: Duration) -> Ending {
        Ending {
            control: Some((event, ago)),
            data: None,
        }
    }

    /// What a leaf saw: the data plane's end of session, `ago`, and nothing else.
    fn data(ago: Duration) -> Ending {
        Ending {
            control: None,
            data: Some(ago),
        }
    }

    /// The root closing the session, with its reason.
    fn root_closed() -> Option<LeafEnd> {
        Some(LeafEnd::RootClosed(Some("root closed".into())))
    }

    #[test]
    fn nothing_seen_is_no_end() {
        assert_eq!(session_end(&Ending::default(), true), None);
    }

    #[test]
    fn the_root_closing_waits_for_both_planes_when_receiving() {
        let control_only = control(ended(), Duration::from_millis(10));
        assert_eq!(session_end(&control_only, true), None);
        assert_eq!(session_end(&control_only, false), root_closed());
        let both = Ending {
            data: Some(Duration::ZERO),
            ..control_only.clone()
        };
        assert_eq!(session_end(&both, true), root_closed());
        assert_eq!(session_end(&data(Duration::from_millis(10)), true), None);
    }

    #[test]
    fn one_plane_is_enough_after_the_grace() {
        assert_eq!(
            session_end(&control(ended(), END_GRACE), true),
            root_closed()
        );
        assert_eq!(
            session_end(&data(END_GRACE), true),
            Some(LeafEnd::RootClosed(None))
        );
    }

    #[test]
    fn removal_and_a_lost_root_end_at_once() {
        let removed = SessionEvent::Removed {
            reason: "bye".into(),
        };
        assert_eq!(
            session_end(&control(removed, Duration::ZERO), true),
            Some(LeafEnd::Removed("bye".into()))
        );
        let gone = SessionEvent::RootGone {
            reason: "silent".into(),
        };
        assert_eq!(
            session_end(&control(gone, Duration::ZERO), true),
            Some(LeafEnd::RootGone("silent".into()))
        );
    }
}
