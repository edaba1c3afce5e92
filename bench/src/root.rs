//! `multipoint root`: the root of a rooted session. It admits leaves, prints each leaf
//! event as it happens, publishes timestamped messages to the session and ends it.
//!
//! - **rooted-unicast**: a [`UnicastRoot`] fans every packet out to every receiving leaf by
//!   UDP unicast, from its data socket (`--data`); with `--uplink` it also receives what
//!   sending leaves send, each on an uplink of its own, and counts it.
//! - **admitted-multicast**: an [`AdmittedRoot`] admits leaves and publishes to the group
//!   from the source address `--data`; admitted leaves join source-specifically.
//!
//! The run: start the root and print one line saying where leaves ask to join (scripts
//! read the address from it); wait until `--wait-leaves` leaves are in the session (and a
//! moment more, [`ATTACH_GRACE`], for them to attach their data plane); publish what
//! `multipoint pub` publishes (8-byte send timestamp first) until `--count` or `--secs`;
//! then close the root, which ends the session at every leaf. Leaf events are printed by
//! a thread of their own, on stdout, one line each ([`event_line`]); the report counts
//! them. `--admit` admits only the leaves named, refusing the others with a reason they
//! are told; `--key-file` admits only leaves that prove the pre-shared key in it (see
//! [`multipoint_control::rooted::auth`]), refusing the others with `authentication
//! failed`, which the report counts apart.
//!
//! With `--rerequest-server ADDR:PORT` the root serves MoldUDP64 re-requests there (the
//! fan-out's server on rooted-unicast, the publisher's on admitted-multicast), keeping the
//! last `--store` messages: leaves started with `--rerequest ADDR:PORT` get what they
//! lost, unicast. The first line names the address (the control protocol does not tell
//! leaves). After publishing the root ends the session on the data plane and keeps
//! serving for `--linger` seconds (repeating the end of session), so that leaves that
//! lost packets near the end get them too, and only then closes the session; the report
//! has the server's counters.
//!
//! The fan-out's and uplink's shards are not pinned: a root usually shares its host with
//! other processes (leaves, on loopback).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use multipoint_control::rooted::{Decision, Key, LeafId, Root, RootEvent, AUTH_FAILED};
use multipoint_control::Direction;
use multipoint_dataplane::core::sequence::Gap;
use multipoint_dataplane::core::server::ServerStats;
use multipoint_dataplane::core::store::StoreStats;
use multipoint_dataplane::rooted_transport::{
    Admission, AdmittedRoot, UnicastRoot, UnicastRootConfig, UplinkHandlers,
};
use multipoint_dataplane::wire::{Session, BLOCK_HEADER_LEN, HEADER_LEN};
use multipoint_dataplane::{BackendInfo, Handler, HostNeeds, PublisherConfig, ShardConfig, Shards};

use crate::cli::{RootArgs, RootedTransport};
use crate::error::{Error, Result};
use crate::interrupt;
use crate::progress::Progress;
use crate::publish::{check_size, linger, publish, session_or_default, show_sent, Load, Sink};
use crate::report::{LeafCounts, RootReport, RootSent, UplinkReport};

/// How often the root looks whether enough leaves joined.
const POLL: Duration = Duration::from_millis(5);

/// How long the root waits, once `--wait-leaves` leaves are in, before it publishes. An
/// admitted-multicast leaf joins the group only after it heard it was admitted, and what
/// the group carried before its join never reaches it. (A rooted-unicast leaf needs no
/// wait: what arrives before it attached waits in its socket, and the Admit told it the
/// sequence number its stream starts at.)
pub const ATTACH_GRACE: Duration = Duration::from_millis(250);

/// A leaf's direction as the tool names it.
pub fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::ReceiverOnly => "receive",
        Direction::SenderOnly => "send",
        Direction::Both => "both",
    }
}

/// The line printed for a leaf event; `names` remembers the names of joined leaves (the
/// later events carry only the leaf's id).
pub fn event_line(event: &RootEvent, names: &mut HashMap<LeafId, String>) -> String {
    let name = |names: &HashMap<LeafId, String>, id: &LeafId| match names.get(id) {
        Some(n) => format!("{n:?} ({id})"),
        None => id.to_string(),
    };
    match event {
        RootEvent::Joined(h) => {
            names.insert(h.id(), h.name().to_owned());
            let mut line = format!(
                "leaf {:?} joined ({}): control {}",
                h.name(),
                h.id(),
                h.peer()
            );
            if let Some(data) = h.data() {
                line.push_str(&format!(", data {data}"));
            }
            line.push_str(&format!(", {}", direction_name(h.direction())));
            line
        }
        RootEvent::Refused { peer, reason } => format!("leaf at {peer} refused: {reason}"),
        RootEvent::Left { leaf, reason } => {
            let who = name(names, leaf);
            names.remove(leaf);
            format!("leaf {who} left: {reason}")
        }
        RootEvent::TimedOut { leaf } => {
            let who = name(names, leaf);
            names.remove(leaf);
            format!("leaf {who} timed out: silent for longer than --timeout; removed")
        }
        RootEvent::Removed { leaf } => {
            let who = name(names, leaf);
            names.remove(leaf);
            format!("leaf {who} removed")
        }
    }
}

/// What the event printer saw: every event counted, and which leaves left (by id).
#[derive(Debug, Default)]
struct Seen {
    counts: LeafCounts,
    left: Vec<LeafId>,
}

impl Seen {
    fn add(&mut self, event: &RootEvent) {
        match event {
            RootEvent::Joined(_) => self.counts.joined += 1,
            RootEvent::Refused { reason, .. } => {
                self.counts.refused += 1;
                if reason == AUTH_FAILED {
                    self.counts.auth_failed += 1;
                }
            }
            RootEvent::Left { leaf, .. } => self.left.push(*leaf),
            RootEvent::TimedOut { .. } => self.counts.timed_out += 1,
            RootEvent::Removed { .. } => self.counts.removed += 1,
        }
    }

    /// The counts, given the leaves in the session when the root closed: those went
    /// because the root ended the session, not because they left.
    fn counts(&self, at_end: &[LeafId]) -> LeafCounts {
        LeafCounts {
            left: self.left.iter().filter(|id| !at_end.contains(id)).count() as u64,
            at_end: at_end.len() as u64,
            ..self.counts
        }
    }
}

/// Prints the root's leaf events until the root closes (its event channel disconnects),
/// and returns what it saw. On a terminal with a progress line, each event line first
/// erases it (the line comes back at its next refresh).
fn print_events(root: &Root, progress: bool) -> Result<JoinHandle<Seen>> {
    let events = root.events().clone();
    std::thread::Builder::new()
        .name("root-events".into())
        .spawn(move || {
            let mut names = HashMap::new();
            let mut seen = Seen::default();
            for event in events.iter() {
                seen.add(&event);
                let line = event_line(&event, &mut names);
                if progress {
                    println!("\r\x1b[2K{line}");
                } else {
                    println!("{line}");
                }
            }
            seen
        })
        .map_err(|e| Error::Setup {
            what: "the thread printing leaf events",
            source: e,
        })
}

/// The `--admit` policy: only the names listed; `None` when the list is empty (admit all).
fn admission(names: &[String]) -> Option<Admission> {
    if names.is_empty() {
        return None;
    }
    let names = names.to_vec();
    Some(Box::new(move |request| {
        if names.contains(&request.name) {
            Decision::Admit
        } else {
            Decision::Refuse(format!(
                "leaf {:?} is not admitted by this root (not on its --admit list)",
                request.name
            ))
        }
    }))
}

/// What the uplink handlers count, shared by every sending leaf's stream.
#[derive(Debug, Default)]
struct UplinkCounters {
    senders: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    gaps: AtomicU64,
    missing: AtomicU64,
}

impl UplinkCounters {
    fn report(&self) -> UplinkReport {
        UplinkReport {
            senders: self.senders.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
            missing: self.missing.load(Ordering::Relaxed),
        }
    }
}

/// One sending leaf's uplink stream, counted (on the uplink shard's thread).
struct UplinkCount(Arc<UplinkCounters>);

impl Handler for UplinkCount {
    fn on_message(&mut self, _sequence: u64, message: &[u8]) {
        self.0.messages.fetch_add(1, Ordering::Relaxed);
        self.0
            .bytes
            .fetch_add(message.len() as u64, Ordering::Relaxed);
    }
    fn on_gap(&mut self, gap: Gap) {
        self.0.gaps.fetch_add(1, Ordering::Relaxed);
        self.0.missing.fetch_add(gap.count, Ordering::Relaxed);
    }
}

/// The root, by transport (one lives per run: the size difference does not matter).
#[allow(clippy::large_enum_variant)]
enum Running {
    Unicast(UnicastRoot),
    Admitted(AdmittedRoot),
}

impl Running {
    fn control(&self) -> &Root {
        match self {
            Running::Unicast(r) => r.control(),
            Running::Admitted(r) => r.control(),
        }
    }

    fn close(self) -> RootSent {
        match self {
            Running::Unicast(r) => RootSent::Fanout(r.close()),
            Running::Admitted(r) => RootSent::Multicast(r.close()),
        }
    }

    /// What publishing goes through: the fan-out, or the multicast publisher.
    fn sink(&mut self) -> &mut dyn Sink {
        match self {
            Running::Unicast(r) => r,
            Running::Admitted(r) => r.publisher(),
        }
    }

    /// The re-request server's counters and what its store holds; `None` without one.
    fn rerequest(&mut self) -> (Option<ServerStats>, Option<StoreStats>) {
        match self {
            Running::Unicast(r) => (r.rerequest_stats(), r.store_stats()),
            Running::Admitted(r) => {
                let publisher = r.publisher();
                (
                    publisher.rerequest_stats(),
                    publisher.store().map(|s| s.stats()),
                )
            }
        }
    }
}

/// A started root and what the report needs to know about it.
struct Started {
    root: Running,
    backend: BackendInfo,
    listen: SocketAddr,
    data: SocketAddr,
    uplink: Option<Arc<UplinkCounters>>,
    /// Where the re-request server listens, with `--rerequest-server`.
    rerequest: Option<SocketAddr>,
}

/// The rooted-unicast root's settings for `session`.
fn unicast_config(args: &RootArgs, session: Session) -> UnicastRootConfig {
    let mut config = UnicastRootConfig::new(session);
    config.listen = Some(args.listen);
    config.data = args.data;
    config.timeout = args.timeout;
    config.limits = args.limits.limits();
    let io = &args.engine.io;
    config.fanout.shards = usize::from(args.shards);
    config.fanout.idle = args.engine.idle.into();
    config.fanout.gso = io.gso.is_on();
    config.fanout.max_datagram = io.max_datagram;
    config.fanout.pin = false;
    config.fanout.backend = io.backend.into();
    config.fanout.rerequest = args.rerequest.config();
    config
}

/// The shard that receives the uplinks (with `--uplink`).
fn uplink_shard(args: &RootArgs) -> Option<ShardConfig> {
    args.uplink.then(|| ShardConfig {
        pin: false,
        max_subscriptions: 1024,
        ..args.engine.shard_config(1)
    })
}

/// The admitted-multicast root's publisher for `session`, sending from `--data`.
fn admitted_config(args: &RootArgs, session: Session) -> PublisherConfig {
    PublisherConfig {
        bind: Some(args.data),
        rerequest: args.rerequest.config(),
        ..args.publish.publisher_config(session, &args.engine.io)
    }
}

/// What `multipoint root` will ask of the host: rooted-unicast, the fan-out and (with
/// `--uplink`) the uplink shard and its subscriptions; admitted-multicast, a publisher.
///
/// # Errors
///
/// [`Error::Dataplane`] if the session name is refused (a
/// default one never is).
pub fn host_needs(args: &RootArgs) -> Result<HostNeeds> {
    let session = session_or_default(args.publish.session)?;
    Ok(match args.transport {
        RootedTransport::RootedUnicast => {
            let config = unicast_config(args, session);
            let uplink =
                uplink_shard(args).map(|shard| shard.host_needs().and(config.uplink.host_needs()));
            config.fanout.host_needs().and(uplink.unwrap_or_default())
        }
        RootedTransport::AdmittedMulticast => admitted_config(args, session).host_needs(),
    })
}

fn start_unicast(args: &RootArgs, session: Session, key: Option<Key>) -> Result<Started> {
    let max_datagram = args.engine.io.max_datagram;
    let limit = max_datagram.saturating_sub(HEADER_LEN + BLOCK_HEADER_LEN);
    if args.load.size > limit {
        return Err(Error::SizeTooLarge {
            size: args.load.size,
            limit,
            max_datagram,
        });
    }
    let uplink = match uplink_shard(args) {
        Some(shard) => Some(Shards::start(shard)?),
        None => None,
    };
    let (uplink, counters) = match uplink {
        Some(shards) => {
            let counters = Arc::new(UplinkCounters::default());
            let shared = Arc::clone(&counters);
            let handlers: UplinkHandlers = Box::new(move |_leaf| {
                shared.senders.fetch_add(1, Ordering::Relaxed);
                Box::new(UplinkCount(Arc::clone(&shared)))
            });
            (Some((shards, handlers)), Some(counters))
        }
        None => (None, None),
    };
    let mut config = unicast_config(args, session);
    config.key = key;
    let root = UnicastRoot::start_with(config, admission(&args.admit), uplink)?;
    // What the fan-out chose (and why), for the report.
    let backend = root
        .backend()
        .cloned()
        .ok_or(Error::Dataplane(multipoint_dataplane::Error::FanoutClosed))?;
    let listen = root.control_addr().unwrap_or(args.listen);
    let data = root.data_addr();
    let rerequest = root.rerequest_address();
    Ok(Started {
        root: Running::Unicast(root),
        backend,
        listen,
        data,
        uplink: counters,
        rerequest,
    })
}

fn start_admitted(args: &RootArgs, session: Session, key: Option<Key>) -> Result<Started> {
    let config = admitted_config(args, session);
    let mut root = AdmittedRoot::start_limited(
        config,
        args.listen,
        args.timeout,
        admission(&args.admit),
        args.limits.limits(),
        key,
    )?;
    check_size(
        root.publisher(),
        args.load.size,
        args.engine.io.max_datagram,
    )?;
    let backend = root.publisher().backend().clone();
    let listen = root.control().local_addr().unwrap_or(args.listen);
    let data = root.publisher().local_addr().unwrap_or(args.data);
    let rerequest = root.publisher().rerequest_address();
    Ok(Started {
        root: Running::Admitted(root),
        backend,
        listen,
        data,
        uplink: None,
        rerequest,
    })
}

/// The key in `--key-file`, if one is given.
///
/// # Errors
///
/// [`Error::Key`] when the file is not private to its owner, cannot be read, or holds no
/// key of the allowed length.
pub fn load_key(path: Option<&std::path::Path>) -> Result<Option<Key>> {
    path.map(Key::from_file).transpose().map_err(Error::Key)
}

/// The first line `root` prints, once it listens: where leaves ask to join.
fn listening_line(args: &RootArgs, started: &Started, session: Session) -> String {
    let transport = transport_name(args.transport);
    let mut line = format!(
        "multipoint root: listening on {} ({transport}, session {session}",
        started.listen
    );
    match args.transport {
        RootedTransport::RootedUnicast => line.push_str(&format!(", data from {}", started.data)),
        RootedTransport::AdmittedMulticast => line.push_str(&format!(
            ", data to {} on {} from {}",
            args.publish.group.group, args.publish.group.iface, started.data
        )),
    }
    if let Some(server) = started.rerequest {
        line.push_str(&format!(", re-requests served on {server}"));
    }
    line.push_str("); leaves join with: multipoint leaf --root ");
    line.push_str(&reachable(started.listen));
    if let Some(server) = started.rerequest {
        line.push_str(" --rerequest ");
        line.push_str(&reachable(server));
    }
    if args.transport == RootedTransport::AdmittedMulticast {
        line.push_str(" --transport admitted-multicast");
    }
    if let Some(key) = &args.key_file {
        line.push_str(&format!(" --key-file {}", key.display()));
    }
    line
}

/// `addr` as a leaf should give it: `THIS_HOST:PORT` when bound at a wildcard.
fn reachable(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("THIS_HOST:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The transport's command-line name.
pub fn transport_name(t: RootedTransport) -> &'static str {
    match t {
        RootedTransport::RootedUnicast => "rooted-unicast",
        RootedTransport::AdmittedMulticast => "admitted-multicast",
    }
}

/// Runs `multipoint root` and returns what it did. With `progress`, a line on stdout is
/// rewritten once a second while publishing.
///
/// # Errors
///
/// [`Error::Key`] when `--key-file` cannot be used; [`Error::SizeTooLarge`] when `--size`
/// exceeds what a packet carries; the data plane's
/// and control plane's errors when the root cannot start (the listening address taken,
/// say); [`Error::Setup`] for the event thread; [`Error::Offer`].
pub fn run(args: &RootArgs, progress: bool) -> Result<RootReport> {
    let session = session_or_default(args.publish.session)?;
    let key = load_key(args.key_file.as_deref())?;
    let mut started = match args.transport {
        RootedTransport::RootedUnicast => start_unicast(args, session, key)?,
        RootedTransport::AdmittedMulticast => start_admitted(args, session, key)?,
    };
    println!("{}", listening_line(args, &started, session));
    let printer = print_events(started.root.control(), progress)?;

    if args.wait_leaves > 0 {
        println!(
            "waiting for {} lea{} to join",
            args.wait_leaves,
            if args.wait_leaves == 1 { "f" } else { "ves" }
        );
        while started.root.control().leaves().len() < args.wait_leaves && !interrupt::requested() {
            started.root.sink().poll();
            std::thread::sleep(POLL);
        }
        let until = Instant::now() + ATTACH_GRACE;
        while Instant::now() < until && !interrupt::requested() {
            started.root.sink().poll();
            std::thread::sleep(POLL);
        }
    }

    let load = Load::new(&args.load);
    let mut line = Progress::new(progress);
    let published = publish(started.root.sink(), &load, &mut line, show_sent)?;
    let at_end: Vec<LeafId> = started
        .root
        .control()
        .leaves()
        .iter()
        .map(|l| l.id())
        .collect();

    // Leaves that lost packets near the end ask for them after it: keep serving (with a
    // re-request server; without one this does nothing and closing ends the session).
    linger(started.root.sink(), args.rerequest.linger);
    let control = started.root.control().stats();
    let (rerequest, stored) = started.root.rerequest();
    let Started {
        root,
        backend,
        listen,
        data,
        uplink,
        ..
    } = started;
    let sent = root.close();
    // The root is closed: its event channel disconnects and the printer ends.
    let leaves = printer.join().unwrap_or_default().counts(&at_end);
    Ok(RootReport {
        transport: transport_name(args.transport),
        listen: listen.to_string(),
        data: data.to_string(),
        group: match args.transport {
            RootedTransport::AdmittedMulticast => {
                let group = &args.publish.group;
                Some((group.group.to_string(), group.iface.to_string()))
            }
            RootedTransport::RootedUnicast => None,
        },
        session: session.to_string(),
        size: args.load.size,
        rate: args.load.rate,
        elapsed: published.elapsed,
        backend,
        sent,
        leaves,
        control,
        uplink: uplink.map(|u| u.report()),
        rerequest,
        stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_lets_in_only_the_names_listed_and_says_why_not() {
        assert!(admission(&[]).is_none());
        let mut admit = admission(&["alice".to_owned(), "bob".to_owned()]).unwrap();
        let request = |name: &str| multipoint_control::rooted::JoinRequest {
            peer: "127.0.0.1:1".parse().unwrap(),
            direction: Direction::ReceiverOnly,
            data: None,
            name: name.into(),
            invited: false,
        };
        assert_eq!(admit(&request("bob")), Decision::Admit);
        match admit(&request("carol")) {
            Decision::Refuse(reason) => {
                assert!(reason.contains("\"carol\" is not admitted"), "{reason}")
            }
            Decision::Admit => panic!("carol was admitted"),
        }
    }

    #[test]
    fn leaves_that_go_when_the_root_closes_did_not_leave() {
        let mut seen = Seen::default();
        for event in [
            RootEvent::Refused {
                peer: "127.0.0.1:1".parse().unwrap(),
                reason: "no".into(),
            },
            RootEvent::Left {
                leaf: LeafId(0),
                reason: "bye".into(),
            },
            RootEvent::TimedOut { leaf: LeafId(1) },
            RootEvent::Left {
                leaf: LeafId(2),
                reason: "the root closed the session".into(),
            },
        ] {
            seen.add(&event);
        }
        let counts = seen.counts(&[LeafId(2)]);
        assert_eq!(
            counts,
            LeafCounts {
                joined: 0,
                refused: 1,
                auth_failed: 0,
                left: 1,
                timed_out: 1,
                removed: 0,
                at_end: 1,
            }
        );
    }

    #[test]
    fn events_of_a_leaf_name_it_after_it_joined() {
        let mut names = HashMap::new();
        names.insert(LeafId(3), "alice".to_owned());
        let line = event_line(
            &RootEvent::Left {
                leaf: LeafId(3),
                reason: "it said bye".into(),
            },
            &mut names,
        );
        assert_eq!(line, "leaf \"alice\" (leaf#3) left: it said bye");
        assert!(names.is_empty());
        let line = event_line(&RootEvent::TimedOut { leaf: LeafId(4) }, &mut names);
        assert!(line.starts_with("leaf leaf#4 timed out"), "{line}");
        let line = event_line(
            &RootEvent::Refused {
                peer: "127.0.0.1:9".parse().unwrap(),
                reason: "members only".into(),
            },
            &mut names,
        );
        assert_eq!(line, "leaf at 127.0.0.1:9 refused: members only");
    }
}
