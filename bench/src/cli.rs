//! The command line: `multipoint <COMMAND> [OPTIONS]`.
//!
//! Each tool is one variant of [`Command`] with its own argument struct; options that
//! several tools share (backend, GSO, idle strategy) are small [`clap::ValueEnum`]s here
//! that convert into the data plane's settings. Every value is validated by clap, so a
//! bad one is a usage message and exit code 2, never a panic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use multipoint_control::Interface;
use multipoint_dataplane::latency::STAMP_LEN;
use multipoint_dataplane::wire::MAX_MESSAGE_LEN;
use multipoint_dataplane::{BackendChoice, IdleStrategy};

const EXAMPLES: &str = "\
Examples:
  multipoint demo                          3 s at 1 M msgs/s, 64-byte messages, on lo
  multipoint demo --rate 0 --secs 5        as fast as the publisher can go
  multipoint demo --backend mmsg --gso off recvmmsg/sendmmsg, one datagram per send
  multipoint demo --size 256 --rate 200000 --hlog /tmp/demo.hlog
  multipoint demo --json | tail -n 1       the results as one JSON object
  RUST_LOG=debug multipoint demo           with the data plane's log on stderr";

/// The multipoint tool: runs the multipoint data plane and measures it.
#[derive(Debug, Parser)]
#[command(name = "multipoint", version, after_help = EXAMPLES)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A publisher and two subscribers on loopback multicast, with throughput and latency.
    ///
    /// Runs all three in this process and prints, for each subscriber, messages and bytes
    /// per second, gaps, drops and one-way latency percentiles. Needs no root and no host
    /// configuration.
    #[command(after_help = EXAMPLES)]
    Demo(DemoArgs),
}

/// Options of `multipoint demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Multicast group and port to publish to and subscribe to.
    #[arg(long, value_name = "ADDR:PORT", default_value = "239.255.0.1:31001")]
    pub group: SocketAddr,

    /// Interface to send and join on: an address, a name (lo) or an index.
    #[arg(long, value_name = "IFACE", default_value = "127.0.0.1", value_parser = parse_interface)]
    pub iface: Interface,

    /// How long to publish, in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = parse_secs)]
    pub secs: Duration,

    /// Message size in bytes; each message starts with an 8-byte send timestamp.
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = parse_size)]
    pub size: usize,

    /// Target rate in messages per second; 0 = as fast as possible.
    #[arg(long, value_name = "MSGS_PER_S", default_value_t = 1_000_000)]
    pub rate: u64,

    /// I/O backend of the publisher and the shards.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// UDP GSO on the publisher and UDP GRO on the shards.
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub gso: Toggle,

    /// Number of shard threads receiving.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: u16,

    /// What an idle shard does (spin burns a core per shard).
    #[arg(long, value_enum, default_value_t = Idle::Block)]
    pub idle: Idle,

    /// Write an HdrHistogram interval log of one-way latency (one interval per second per
    /// subscriber) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,

    /// Also print the results as one JSON object, on the last line.
    #[arg(long)]
    pub json: bool,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// io_uring where it can be set up, else recvmmsg/sendmmsg.
    Auto,
    /// io_uring or an error.
    #[value(alias = "io_uring", alias = "io-uring")]
    Uring,
    /// recvmmsg/sendmmsg even where io_uring works.
    Mmsg,
}

impl From<Backend> for BackendChoice {
    fn from(b: Backend) -> BackendChoice {
        match b {
            Backend::Auto => BackendChoice::Auto,
            Backend::Uring => BackendChoice::Uring,
            Backend::Mmsg => BackendChoice::Mmsg,
        }
    }
}

/// An on/off switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl Toggle {
    /// Whether it is on.
    pub fn is_on(self) -> bool {
        self == Toggle::On
    }
}

/// `--idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Idle {
    /// Busy-poll: lowest latency, one whole core per shard.
    Spin,
    /// Poll, yielding the core between polls.
    Yield,
    /// Sleep in the kernel until data arrives.
    Block,
}

impl From<Idle> for IdleStrategy {
    fn from(i: Idle) -> IdleStrategy {
        match i {
            Idle::Spin => IdleStrategy::Spin,
            Idle::Yield => IdleStrategy::Yield,
            Idle::Block => IdleStrategy::Block,
        }
    }
}

/// Parses `--iface`: an IP address, an interface index (all digits) or a name.
fn parse_interface(s: &str) -> Result<Interface, String> {
    if s.is_empty() {
        return Err("an interface needs an address, a name or an index".into());
    }
    s.parse().map_err(|e: std::convert::Infallible| match e {})
}

/// Parses `--secs`: a positive number of seconds, at most a day.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{s} s is outside 0 < secs <= 86400"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s} s: {e}"))
}

/// Parses `--size`: at least the timestamp's 8 bytes, at most a MoldUDP64 block. The
/// publisher's own, smaller limit is checked once it exists.
fn parse_size(s: &str) -> Result<usize, String> {
    let size: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if size < STAMP_LEN {
        return Err(format!(
            "messages must be at least {STAMP_LEN} bytes: each starts with an {STAMP_LEN}-byte \
             send timestamp"
        ));
    }
    if size > MAX_MESSAGE_LEN {
        return Err(format!(
            "messages are at most {MAX_MESSAGE_LEN} bytes (a MoldUDP64 block length is 16 bits)"
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("multipoint").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn demo_defaults_are_loopback_at_a_million_per_second() {
        let Command::Demo(args) = parse(&["demo"]).unwrap().command;
        assert_eq!(args.group, "239.255.0.1:31001".parse().unwrap());
        assert_eq!(args.iface, Interface::LOOPBACK_V4);
        assert_eq!(args.secs, Duration::from_secs(3));
        assert_eq!((args.size, args.rate, args.shards), (64, 1_000_000, 2));
        assert_eq!(
            (args.backend, args.gso, args.idle),
            (Backend::Auto, Toggle::On, Idle::Block)
        );
        assert!(args.hlog.is_none() && !args.json);
    }

    #[test]
    fn a_message_too_short_for_its_timestamp_is_refused() {
        let error = parse(&["demo", "--size", "7"]).unwrap_err();
        assert!(error.to_string().contains("at least 8 bytes"), "{error}");
        assert!(parse(&["demo", "--size", "8"]).is_ok());
        assert!(parse(&["demo", "--size", "65536"]).is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["demo", "--secs", "0"][..],
            &["demo", "--secs", "-1"],
            &["demo", "--secs", "NaN"],
            &["demo", "--shards", "0"],
            &["demo", "--backend", "dpdk"],
            &["demo", "--gso", "maybe"],
            &["demo", "--group", "239.255.0.1"],
            &["demo", "--iface", ""],
            &["demo", "--rate", "-5"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn interfaces_are_addresses_indices_or_names() {
        assert_eq!(
            parse_interface("127.0.0.1").unwrap(),
            Interface::LOOPBACK_V4
        );
        assert_eq!(parse_interface("1").unwrap(), Interface::Index(1));
        assert_eq!(parse_interface("lo").unwrap(), Interface::Name("lo".into()));
    }
}
