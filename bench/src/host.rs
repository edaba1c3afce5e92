//! The host audit before a run: what the run's data plane will ask of the host, judged by
//! the `multipoint-tuning` audit, and said in one line on stderr when anything is not ok:
//!
//! ```text
//! host: 1 critical, 4 warnings (multipoint-tune check explains them)
//! ```
//!
//! With `--verbose` the full text of each item that is not ok is printed instead; when
//! every item is ok nothing is printed. Stdout, where the reports go, is never touched.
//!
//! What a run needs is added up from the data plane's own figures for the configurations
//! it will start (each tool's `host_needs`, collected by [`needs_of`]); [`needs`] turns the
//! total into the audit's [`Needs`]; the wording is the audit's own
//! ([`multipoint_tuning::Summary`], [`multipoint_tuning::findings`]). Only [`check`]
//! audits the live host and writes.

use multipoint_dataplane::HostNeeds;
use multipoint_tuning::{findings, Host, Needs, RingSize, Summary};

use crate::cli::Command;
use crate::error::Result;
use crate::{demo, fanout, leaf, pingpong, publish, root, subscribe, throughput};

/// The audit's [`Needs`] for what the data plane says it needs: each figure as it is
/// (senders are the audit's publishers), the audit's defaults for what the data plane does
/// not report (memberships and sources per socket).
pub fn needs(host: HostNeeds) -> Needs {
    let ring = |r: multipoint_dataplane::RingSize| RingSize { sq: r.sq, cq: r.cq };
    Needs {
        shards: host.shards,
        shard_ring: ring(host.shard_ring),
        shard_buffers: host.shard_buffers,
        shard_buffer_bytes: host.shard_buffer_bytes,
        publishers: host.senders,
        publisher_ring: ring(host.sender_ring),
        publisher_registered_bytes: host.sender_registered_bytes,
        probes: host.probes,
        recv_buffer: host.recv_buffer,
        send_buffer: host.send_buffer,
        ..Needs::default()
    }
}

/// What all of `parts` need together ([`HostNeeds::and`]; nothing for none).
pub fn total(parts: impl IntoIterator<Item = HostNeeds>) -> HostNeeds {
    parts.into_iter().fold(HostNeeds::default(), HostNeeds::and)
}

/// What the run of `command` will ask of the host: the shards, subscriptions, publishers
/// and fan-outs it starts.
///
/// # Errors
///
/// As the tool's own setup, for settings the run would refuse too.
pub fn needs_of(command: &Command) -> Result<HostNeeds> {
    match command {
        Command::Demo(args) => demo::host_needs(args),
        Command::Throughput(args) => throughput::host_needs(args),
        Command::Pub(args) => publish::host_needs(args),
        Command::Sub(args) => Ok(subscribe::host_needs(args)),
        Command::PingPong(args) => pingpong::host_needs(args),
        Command::Fanout(args) => fanout::host_needs(args),
        Command::Root(args) => root::host_needs(args),
        Command::Leaf(args) => Ok(leaf::host_needs(args)),
        Command::Stat(_) => Ok(HostNeeds::default()),
    }
}

/// Audits this host for `needs` and writes to stderr what is not ok: one line, or with
/// `verbose` every such item in full. Writes nothing when all is ok.
pub fn check(needs: HostNeeds, verbose: bool) {
    let items = multipoint_tuning::audit(&Host::system(), &self::needs(needs));
    if verbose {
        let findings = findings(&items);
        if !findings.is_empty() {
            eprintln!("{findings}");
        }
    } else if let Some(line) = Summary::of(&items).line() {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_of_the_data_plane_reaches_the_audit() {
        let host = HostNeeds {
            shards: 3,
            shard_ring: multipoint_dataplane::RingSize { sq: 64, cq: 2048 },
            shard_buffers: 512,
            shard_buffer_bytes: 9000,
            senders: 2,
            sender_ring: multipoint_dataplane::RingSize { sq: 128, cq: 512 },
            sender_registered_bytes: 4096,
            probes: 4,
            recv_buffer: 16 << 20,
            send_buffer: 2 << 20,
            threads: 5,
        };
        let needs = needs(host);
        assert_eq!(
            (needs.shards, needs.shard_ring, needs.shard_buffers),
            (3, RingSize { sq: 64, cq: 2048 }, 512)
        );
        assert_eq!(needs.shard_buffer_bytes, 9000);
        assert_eq!(
            (needs.publishers, needs.publisher_ring),
            (2, RingSize { sq: 128, cq: 512 })
        );
        assert_eq!((needs.publisher_registered_bytes, needs.probes), (4096, 4));
        assert_eq!((needs.recv_buffer, needs.send_buffer), (16 << 20, 2 << 20));
        let defaults = Needs::default();
        assert_eq!(
            (needs.memberships_per_socket, needs.sources_per_socket),
            (defaults.memberships_per_socket, defaults.sources_per_socket)
        );
    }

    #[test]
    fn the_data_plane_defaults_are_what_the_audit_assumes() {
        let shards = multipoint_dataplane::ShardConfig::default().host_needs();
        let group = std::net::SocketAddr::from(([239, 255, 0, 1], 31001));
        let session = multipoint_dataplane::wire::Session::new("T").unwrap();
        let publisher = multipoint_dataplane::PublisherConfig::new(session, group).host_needs();
        let subscription = multipoint_dataplane::SubscriptionConfig::new(group).host_needs();
        assert_eq!(
            needs(total([shards, publisher, subscription])),
            Needs::default()
        );
        assert_eq!(total([]), HostNeeds::default());
    }

    fn needs_of_command(args: &[&str]) -> Needs {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from(
            std::iter::once("multipoint").chain(args.iter().copied()),
        )
        .unwrap();
        needs(needs_of(&cli.command).unwrap())
    }

    #[test]
    fn each_tool_asks_for_what_it_starts() {
        let counts = |n: &Needs| (n.shards, n.publishers, n.probes);
        // Two shards and a publisher, each probed once; one subscription's buffer.
        let demo = needs_of_command(&["demo"]);
        assert_eq!(counts(&demo), (2, 1, 2));
        assert_eq!(demo.recv_buffer, 8 << 20);
        assert_eq!(
            counts(&needs_of_command(&["throughput", "--shards", "3"])),
            (3, 1, 2)
        );
        // A publisher alone asks for no receive buffer.
        let publisher = needs_of_command(&["pub"]);
        assert_eq!(counts(&publisher), (0, 1, 1));
        assert_eq!((publisher.recv_buffer, publisher.send_buffer), (0, 4 << 20));
        assert_eq!(counts(&needs_of_command(&["sub"])), (1, 0, 1));
        // Both sides in one process, or one.
        assert_eq!(counts(&needs_of_command(&["pingpong"])), (2, 2, 4));
        assert_eq!(
            counts(&needs_of_command(&["pingpong", "--role", "pong"])),
            (1, 1, 2)
        );
        // A fan-out shard sends; the in-process leaves are plain sockets.
        assert_eq!(
            counts(&needs_of_command(&["fanout", "--shards", "2"])),
            (0, 2, 1)
        );
        assert_eq!(counts(&needs_of_command(&["root"])), (0, 1, 1));
        assert_eq!(counts(&needs_of_command(&["root", "--uplink"])), (1, 1, 2));
        let admitted = ["root", "--transport", "admitted-multicast"];
        assert_eq!(counts(&needs_of_command(&admitted)), (0, 1, 1));
        let leaf = ["leaf", "--root", "127.0.0.1:1"];
        assert_eq!(counts(&needs_of_command(&leaf)), (1, 0, 1));
        let sender = ["leaf", "--root", "127.0.0.1:1", "--direction", "both"];
        assert_eq!(counts(&needs_of_command(&sender)), (1, 1, 2));
    }
}
