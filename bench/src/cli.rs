//! The command line: `multipoint <COMMAND> [OPTIONS]`.
//!
//! Each tool is one variant of [`Command`] with its own argument struct. The options the
//! tools share come in small groups that the structs flatten in ([`GroupArgs`],
//! [`PublishArgs`], [`LoadArgs`], [`StopArgs`], [`IoArgs`], [`EngineArgs`],
//! [`ReportArgs`]), so that an option means the same everywhere; a tool that wants another
//! default or help says so with `mut_arg` on its struct or variant. The groups also build
//! the data plane's settings ([`EngineArgs::shard_config`],
//! [`PublishArgs::publisher_config`]). Every value is validated by clap, so a bad one is a
//! usage message and exit code 2, never a panic.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use multipoint_control::rooted::RootLimits;
use multipoint_control::{Direction, Interface, Transport};
use multipoint_dataplane::latency::STAMP_LEN;
use multipoint_dataplane::wire::{Session, BLOCK_HEADER_LEN, HEADER_LEN, MAX_MESSAGE_LEN};
use multipoint_dataplane::{
    BackendChoice, IdleStrategy, PublisherConfig, ShardConfig, XdpConfig, XdpMode, XdpZeroCopy,
};

const EXAMPLES: &str = "\
Examples:
  multipoint demo                          3 s at 1 M msgs/s, 64-byte messages, on lo
  multipoint throughput --secs 5           one publisher, one subscriber, as fast as possible
  multipoint pingpong                      round-trip latency, ping and pong in this process
  multipoint sub                           in one terminal: report until the end of session
  multipoint pub --count 1000000           in another: publish a million messages
  multipoint root --wait-leaves 2          a rooted session: prints the address leaves use
  multipoint leaf --root 127.0.0.1:PORT    in two more terminals: join it and report
  multipoint demo --json | tail -n 1       the results as one JSON object
  RUST_LOG=debug multipoint demo           with the data plane's log on stderr
  multipoint -v demo                       each host setting the audit finds not ok, in full

Everything runs on loopback (multicast via 127.0.0.1, rooted sessions on 127.0.0.1) with
no host configuration. The default groups are your own: 239.255.U.V, where U.V are the two
low bytes of your user id (ports 31001, 31011 for pingpong, 31021 for root), so that two
users of one host do not share a stream; each run publishes its own session (MP and the
process id), and a subscriber says when packets of another session or sender reach its
group. Ctrl-C (SIGINT) or SIGTERM ends a run early with its full report (`interrupted` in
the JSON) and exit status 130 or 143; a second one exits at once. `--plot` and `--hlog`
files are created before the run starts. See `multipoint <COMMAND> --help` for each tool's
options.";

const DEMO_EXAMPLES: &str = "\
Examples:
  multipoint demo                          3 s at 1 M msgs/s, 64-byte messages, on lo
  multipoint demo --rate 0 --secs 5        as fast as the publisher can go
  multipoint demo --backend mmsg --gso off recvmmsg/sendmmsg, one datagram per send
  multipoint demo --size 256 --rate 200000 --hlog /tmp/demo.hlog --plot /tmp/demo.svg
  multipoint demo --json | tail -n 1       the results as one JSON object";

const THROUGHPUT_EXAMPLES: &str = "\
Examples:
  multipoint throughput                    3 s as fast as possible, 64-byte messages
  multipoint throughput --size 1024 --secs 5
  multipoint throughput --rate 500000 --plot /tmp/latency.svg
  multipoint throughput --gso off --batch 1
  multipoint throughput --json | tail -n 1 msgs_per_sec is what the subscriber got";

const PUB_EXAMPLES: &str = "\
Examples:
  multipoint pub                           10 s at 1 M msgs/s to 239.255.U.V:31001 on lo
  multipoint pub --count 50000 --rate 100000
  multipoint pub --rate 0 --size 32 --secs 5
  multipoint pub --session FEED1 --group 239.255.7.7:40000 --iface eth0 --ttl 8

With --json the receive-side fields (gaps, missing, duplicates, malformed, kernel_drops)
and latency_ns are null: a publisher does not measure them. Start `multipoint sub` first.";

const SUB_EXAMPLES: &str = "\
Examples:
  multipoint sub                           until the end of session, at most 60 s
  multipoint sub --secs 5 --json           then `multipoint pub` in another terminal
  multipoint sub --session FEED1 --late-join --group 239.255.7.7:40000 --iface eth0
  multipoint sub --source 10.0.0.5 --group 232.1.1.1:40000 --iface eth0
  multipoint sub --plot /tmp/one-way.svg --hlog /tmp/one-way.hlog

Any MoldUDP64 stream is accepted. One-way latency needs the 8-byte send timestamp that
`multipoint pub` puts first in each message (CLOCK_MONOTONIC, so the same host); other
payloads give no latency figures (latency_ns is null in JSON).";

const FANOUT_EXAMPLES: &str = "\
Examples:
  multipoint fanout                        256 leaves, 1 shard, 3 s, 64-byte messages
  multipoint fanout --leaves 256 --baseline
                                           the same leaves also fed by a plain send_to loop
  multipoint fanout --leaves 1024 --shards 2 --backend mmsg --gso off
  multipoint fanout --leaf-gro on          leaves coalesce GSO trains (UDP_GRO) as they arrive
  multipoint fanout --baseline --json | tail -n 1

Leaves are sockets in this process on 127.0.0.1, each connected to the root's socket,
drained by --receivers threads (epoll + recvmmsg). A delivery is one packet received by
one leaf; what the kernel took but no leaf received is reported as drops.";

const PINGPONG_EXAMPLES: &str = "\
Examples:
  multipoint pingpong                      ping and pong in this process, 3 s
  multipoint pingpong --count 100000 --size 64 --plot /tmp/rtt.svg
  multipoint pingpong --idle spin          lowest latency; needs two spare cores
  multipoint pingpong --idle block         the shards sleep between messages (slower)
  multipoint pingpong --role pong          in one terminal (until the ping's end of session)
  multipoint pingpong --role ping          in another

Ping sends one message to --group and waits for its echo on --reply-group before sending
the next; an echo that has not come back within 100 ms counts as a timeout and the next
ping goes out. latency_ns is the round trip; for --role pong it is null.";

const ROOT_EXAMPLES: &str = "\
Examples, a root and two leaves in three terminals:
  multipoint root --wait-leaves 2 --count 100000
      prints `listening on 127.0.0.1:PORT`; publishes once two leaves are in
  multipoint leaf --root 127.0.0.1:PORT --name alice
  multipoint leaf --root 127.0.0.1:PORT --name bob

More:
  multipoint root --listen 127.0.0.1:7000 --admit alice,bob --timeout 1
      only leaves named alice or bob are admitted; a silent leaf is out after 1 s
  multipoint root --uplink                 also receive what sending leaves send
  multipoint root --transport admitted-multicast --group 239.255.9.9:40000 --ttl 0
      admit leaves, then publish by IP multicast (leaves join source-specifically)
  multipoint root --wait-leaves 1 --json | tail -n 1
  openssl rand -hex 32 > key && chmod 600 key && multipoint root --key-file key
      only leaves that prove they hold the same key (multipoint leaf --key-file key)
      are admitted; the others are refused with `authentication failed`
  multipoint root --rerequest-server 127.0.0.1:7100 --linger 2
      serve re-requests (leaves: multipoint leaf --rerequest 127.0.0.1:7100), and keep
      serving them for 2 s after the end of session

Leaf events (joined, refused, left, timed out, removed) are printed as they happen, one
line each. The report counts messages and packets offered; deliveries are packets the
kernel took for a leaf (rooted-unicast only: on admitted-multicast the network copies
packets, and deliveries is null in JSON). `leaves` is every leaf that joined.";

const LEAF_EXAMPLES: &str = "\
Examples (start `multipoint root` first; it prints the address to give --root):
  multipoint leaf --root 127.0.0.1:7000    receive until the root ends the session
  multipoint leaf --root 127.0.0.1:7000 --name alice --count 100000 --json
  multipoint leaf --root 127.0.0.1:7000 --late-join
      the root was publishing already: count from the first message that arrives
  multipoint leaf --root 127.0.0.1:7000 --direction both --rate 10000
      also send timestamped messages to the root (the root needs --uplink)
  multipoint leaf --root 127.0.0.1:7000 --transport admitted-multicast
  multipoint leaf --root 127.0.0.1:7000 --key-file key
      prove the root's pre-shared key, and take data only from a root that proves it
  multipoint leaf --root 127.0.0.1:7000 --rerequest 127.0.0.1:7100 --in-order
      recover lost messages from the root's re-request server (multipoint root
      --rerequest-server 127.0.0.1:7100), delivering in order

The report is `multipoint sub`'s: messages, gaps, missing, duplicates, malformed, kernel
drops and, for `multipoint root` payloads, one-way latency. A refused leaf exits with
status 1 and the root's reason; a leaf whose session ends (root closed, removed, root
gone) says why and reports what it got.";

/// The multipoint tool: runs the multipoint data plane and measures it.
#[derive(Debug, Parser)]
#[command(name = "multipoint", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Print the full text of each host setting the audit finds not ok (value, wanted,
    /// why, fix) rather than one line counting them.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// After the report, keep this process's counters file, with each stream's final
    /// counters (closed), until stdin closes or SIGINT/SIGTERM comes: so that `multipoint
    /// stat` can read what the run ended with.
    #[arg(long, global = true)]
    pub hold_stat: bool,

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
    #[command(after_help = DEMO_EXAMPLES)]
    Demo(DemoArgs),

    /// Publishes timestamped messages at a rate, for `multipoint sub` or any MoldUDP64
    /// subscriber.
    ///
    /// Each message starts with an 8-byte CLOCK_MONOTONIC send timestamp. Prints the
    /// publisher's counters; ends the session (end-of-session packet) when done.
    #[command(name = "pub", after_help = PUB_EXAMPLES)]
    Pub(PubArgs),

    /// Subscribes to a MoldUDP64 stream and reports what arrived: rate, gaps, drops and,
    /// for `multipoint pub` payloads, one-way latency.
    ///
    /// Stops at the end of session, after --count messages or after --secs.
    #[command(after_help = SUB_EXAMPLES)]
    Sub(SubArgs),

    /// Round-trip latency: ping sends, pong echoes, one message in flight at a time.
    ///
    /// With --role both (the default) both sides run in this process, each on a shard
    /// thread of its own; with --role ping or --role pong the other side is another
    /// process.
    #[command(name = "pingpong", after_help = PINGPONG_EXAMPLES)]
    PingPong(PingPongArgs),

    /// Delivered messages per second: a publisher and one subscriber in this process, as
    /// fast as possible by default.
    ///
    /// Like `demo` with one subscriber and --rate 0; msgs_per_sec is what the subscriber
    /// was handed, per second of publishing.
    #[command(
        after_help = THROUGHPUT_EXAMPLES,
        mut_arg("rate", |a| a.default_value("0")),
        mut_arg("shards", |a| a.default_value("1")),
    )]
    Throughput(DemoArgs),

    /// Unicast fan-out: one root sends every packet to N leaves (rooted-unicast), as
    /// fast as possible; deliveries per second, optionally beside a plain send_to loop.
    ///
    /// The leaves are sockets in this process on 127.0.0.1; the report counts what they
    /// received, and drops.
    #[command(after_help = FANOUT_EXAMPLES)]
    Fanout(FanoutArgs),

    /// The root of a rooted session: admits leaves (prints each event), then publishes
    /// timestamped messages to them.
    ///
    /// rooted-unicast fans every packet out to every receiving leaf by UDP unicast (for
    /// networks without multicast); admitted-multicast admits leaves and publishes by IP
    /// multicast. Ends the session (every leaf is told) after --count or --secs.
    #[command(after_help = ROOT_EXAMPLES)]
    Root(RootArgs),

    /// A leaf of a rooted session: joins `multipoint root`, receives, and reports like
    /// `multipoint sub`.
    ///
    /// Stops at the end of the session (saying why), after --count messages or after
    /// --secs. Exits non-zero with the root's reason if refused.
    #[command(after_help = LEAF_EXAMPLES)]
    Leaf(LeafArgs),

    /// Every live stream of this host with its counters, refreshed each second (like
    /// AeronStat), from the counters files of the processes running the data plane.
    ///
    /// A table on a terminal, one JSON line per refresh otherwise (or with --json).
    /// Files of processes that died are shown as stale (--clean removes them).
    #[command(after_help = STAT_EXAMPLES)]
    Stat(StatArgs),
}

impl Command {
    /// When the tool stops: `--secs` and `--count`.
    pub fn stop(&self) -> &StopArgs {
        match self {
            Command::Demo(args) | Command::Throughput(args) => &args.load.stop,
            Command::Pub(args) => &args.load.stop,
            Command::Sub(args) => &args.stop,
            Command::PingPong(args) => &args.stop,
            Command::Fanout(args) => &args.stop,
            Command::Root(args) => &args.load.stop,
            Command::Leaf(args) => &args.load.stop,
            Command::Stat(_) => &NO_STOP,
        }
    }
}

/// The stop of a tool that has none of its own (`stat`).
static NO_STOP: StopArgs = StopArgs {
    secs: None,
    count: None,
};

const STAT_EXAMPLES: &str = "\
Examples:
  multipoint stat                          every stream of this host, each second
  multipoint stat --watch MP1234 --hist    one session, with its latency percentiles
  multipoint stat --once --json            one JSON line and exit
  multipoint stat --until-gone             until every process has gone (exit 0)
  multipoint stat --clean --once           remove the files of processes that died

Each process running the data plane keeps its counters in /dev/shm/multipoint-stat-PID
(MULTIPOINT_STAT_DIR elsewhere; MULTIPOINT_STAT=0 turns it off). --watch NAME matches an
entry's name (the session) or any part of its detail (group:port, address); it ends, with
status 0, once the entries it showed are all gone.";

/// `multipoint stat`: what to show and for how long.
#[derive(Debug, Clone, Args)]
pub struct StatArgs {
    /// Only the entries whose name (session) is NAME or whose detail (group:port,
    /// address) contains it; ends once they are all gone.
    #[arg(long, value_name = "NAME")]
    pub watch: Option<String>,

    /// Also each entry's latency histograms: p50, p90, p99, p99.9 and max.
    #[arg(long)]
    pub hist: bool,

    /// One JSON line per refresh, even on a terminal.
    #[arg(long)]
    pub json: bool,

    /// Stop after N refreshes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// One refresh, then exit (--count 1).
    #[arg(long, conflicts_with = "count")]
    pub once: bool,

    /// Milliseconds between refreshes.
    #[arg(long, value_name = "MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub interval_ms: u64,

    /// Exit (status 0) once no live process is left (with --watch: no live matching
    /// entry), after one was seen.
    #[arg(long)]
    pub until_gone: bool,

    /// Remove the counters files of processes that died (stale).
    #[arg(long)]
    pub clean: bool,

    /// The directory of the counters files; default: MULTIPOINT_STAT_DIR, else /dev/shm.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The port of the default group of `demo`, `throughput`, `pub` and `sub`.
pub const DATA_PORT: u16 = 31001;
/// The port of `pingpong`'s default group (the echoes take the next one).
pub const PINGPONG_PORT: u16 = 31011;
/// The port of `root`'s default group (admitted-multicast).
pub const ROOT_PORT: u16 = 31021;

/// The tool's default group on `port` for the user running it: 239.255.U.V, where U.V
/// are the two low bytes of the user id (uid 1000: 239.255.3.232), so that two users of
/// one host do not share a group without saying so. Within the IPv4 local scope
/// (239.255.0.0/16, RFC 2365); users whose ids differ by a multiple of 65,536 share one.
pub fn user_group(port: u16) -> SocketAddr {
    let [_, _, high, low] = nix::unistd::getuid().as_raw().to_be_bytes();
    SocketAddr::from(([239, 255, high, low], port))
}

/// [`user_group`] as a default value's text (clap wants it for the whole run).
fn user_group_text(port: u16) -> &'static str {
    static TEXTS: OnceLock<[String; 3]> = OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        [DATA_PORT, PINGPONG_PORT, ROOT_PORT].map(|port| user_group(port).to_string())
    });
    match port {
        PINGPONG_PORT => &texts[1],
        ROOT_PORT => &texts[2],
        _ => &texts[0],
    }
}

/// Where: the group and the interface (every tool).
#[derive(Debug, Clone, Args)]
pub struct GroupArgs {
    /// Multicast group and port. Default: this user's group, 239.255.U.V with U.V the two
    /// low bytes of the user id, so that two users of one host do not share it.
    #[arg(long, value_name = "ADDR:PORT", default_value = user_group_text(DATA_PORT))]
    pub group: SocketAddr,

    /// Interface to send and join on: an address, a name (lo) or an index.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1", value_parser = parse_interface)]
    pub iface: Interface,
}

/// What a publisher sends and how its packets leave the host: the group and interface,
/// the session name, TTL and loopback (demo, throughput, pub, root, pingpong).
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Group and interface.
    #[command(flatten)]
    pub group: GroupArgs,

    /// MoldUDP64 session name (1 to 10 printable ASCII characters); default: MP and the
    /// process id.
    #[arg(long, value_name = "NAME")]
    pub session: Option<Session>,

    /// Multicast TTL (scope): 0 stays on this host, 1 on the local network.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub ttl: u8,

    /// Whether this host's own subscribers get what is published (off: the in-process
    /// tools receive nothing).
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub loopback: Toggle,
}

/// What to publish and for how long: message size, rate, batch, and when to stop (demo,
/// throughput, pub, root, leaf).
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Message size in bytes; each message starts with an 8-byte send timestamp.
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = parse_size)]
    pub size: usize,

    /// Target rate in messages per second; 0 = as fast as possible.
    #[arg(long, value_name = "MSGS_PER_S", default_value_t = 1_000_000)]
    pub rate: u64,

    /// Most messages offered between begin_batch and end_batch (full packets of a batch
    /// leave together, as GSO sends).
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,

    /// When to stop publishing.
    #[command(flatten)]
    pub stop: StopArgs,
}

/// When to stop: whichever of --secs and --count comes first (every tool; the default
/// of each depends on the tool).
#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// Stop after S seconds (fractions allowed).
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    pub secs: Option<Duration>,

    /// Stop after N messages (pingpong: round trips; sub: once N have arrived, within a
    /// few milliseconds, counting all that did).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// How the data plane does I/O (every tool).
#[derive(Debug, Clone, Args)]
pub struct IoArgs {
    /// I/O backend of the publishers and the shards.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// UDP GSO on the publishers and UDP GRO on the shards.
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub gso: Toggle,

    /// Largest datagram payload: packets are filled up to this size.
    #[arg(long, value_name = "BYTES", default_value_t = 1472, value_parser = parse_max_datagram)]
    pub max_datagram: usize,

    /// With --backend xdp: the AF_XDP settings (the interface is --iface).
    #[command(flatten)]
    pub xdp: XdpArgs,
}

/// `--backend xdp`'s settings.
#[derive(Debug, Clone, Args)]
pub struct XdpArgs {
    /// With --backend xdp: the receive queue of the (first) AF_XDP socket; shard i takes
    /// queue Q + i.
    #[arg(long, value_name = "Q", default_value_t = 0)]
    pub xdp_queue: u32,

    /// With --backend xdp: native (driver) or generic (skb) XDP; auto tries native
    /// first.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_xdp_mode)]
    pub xdp_mode: XdpMode,

    /// With --backend xdp: zero-copy (auto: where the driver allows it; require; off).
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = parse_zero_copy)]
    pub xdp_zero_copy: XdpZeroCopy,

    /// With --backend xdp: UMEM frames of 2 KiB per socket (a power of two, at least 64).
    #[arg(long, value_name = "N", default_value_t = 8192)]
    pub xdp_frames: u32,
}

impl XdpArgs {
    /// The data plane's settings, on `interface`.
    pub fn config(&self, interface: &Interface) -> XdpConfig {
        XdpConfig {
            interface: interface.clone(),
            queue: self.xdp_queue,
            mode: self.xdp_mode,
            zero_copy: self.xdp_zero_copy,
            frames: self.xdp_frames,
            ..XdpConfig::default()
        }
    }
}

fn parse_xdp_mode(s: &str) -> Result<XdpMode, String> {
    s.parse()
}

fn parse_zero_copy(s: &str) -> Result<XdpZeroCopy, String> {
    s.parse()
}

/// How the data plane runs: what its idle shards do, and its I/O (every tool with
/// shards: all but pub).
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// What an idle shard does (spin burns a core per shard).
    #[arg(long, value_enum, default_value_t = Idle::Block)]
    pub idle: Idle,

    /// Backend, GSO and datagram size.
    #[command(flatten)]
    pub io: IoArgs,
}

/// What to write besides the text report (tools that measure latency).
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Write an HdrHistogram interval log of the latency (one interval per second) to
    /// FILE.
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,

    /// Write the latency percentile distribution as an SVG plot to FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Also print the results as one JSON object, on the last line.
    #[arg(long)]
    pub json: bool,
}

/// Options of `multipoint demo` and `multipoint throughput` (which differ only in their
/// defaults and number of subscribers).
#[derive(Debug, Clone, Args)]
#[command(mut_arg("secs", |a| a.default_value("3")))]
pub struct DemoArgs {
    /// Group, interface, session, TTL and loopback.
    #[command(flatten)]
    pub publish: PublishArgs,

    /// Message size, rate, batch and when to stop publishing.
    #[command(flatten)]
    pub load: LoadArgs,

    /// Number of shard threads receiving.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: u16,

    /// Idle strategy, backend, GSO and datagram size.
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Interval log, plot and JSON.
    #[command(flatten)]
    pub report: ReportArgs,

    /// The publisher serves re-requests (on 127.0.0.1, a free port) and the subscribers
    /// recover what they lost (as they come, 100 ms deadline).
    #[arg(long)]
    pub recover: bool,

    /// throughput: search the highest rate at which every message arrives (0 missing),
    /// by bisection between 0 and the rate delivered as fast as possible; each trial runs
    /// for --secs or --count.
    #[arg(long)]
    pub lossless: bool,

    /// With --lossless: most trials after the first (as fast as possible).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=30))]
    pub trials: u32,
}

/// Options of `multipoint pub`.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("secs", |a| a.default_value("10")))]
pub struct PubArgs {
    /// Group, interface, session, TTL and loopback.
    #[command(flatten)]
    pub publish: PublishArgs,

    /// Also send every packet to this second multicast group and port (line B): the same
    /// packets, session and sequence numbers as --group's, from a second socket, so that
    /// subscribers can take whichever copy comes first.
    #[arg(long, value_name = "ADDR:PORT")]
    pub line_b: Option<SocketAddr>,

    /// With --line-b: the interface line B leaves on (an address, a name or an index);
    /// default: --iface's.
    #[arg(long, value_name = "ADDR", value_parser = parse_interface, requires = "line_b")]
    pub iface_b: Option<Interface>,

    /// Message size, rate, batch and when to stop publishing.
    #[command(flatten)]
    pub load: LoadArgs,

    /// Backend, GSO and datagram size.
    #[command(flatten)]
    pub io: IoArgs,

    /// The re-request server.
    #[command(flatten)]
    pub rerequest: RerequestArgs,

    /// Measure send→wire latency: sampled sends ask the kernel for a software transmit
    /// stamp (SO_TIMESTAMPING, read back from the socket's error queue), reported as
    /// `send_to_wire_ns`. One GSO send is one send with one stamp.
    #[arg(long)]
    pub tx_stamps: bool,

    /// With --tx-stamps: sample one send in N (1: every send).
    #[arg(long, value_name = "N", default_value_t = 100, requires = "tx_stamps",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tx_stamp_every: u32,

    /// Also print the results as one JSON object, on the last line (receive-side fields
    /// and latency_ns are null).
    #[arg(long)]
    pub json: bool,

    /// Write the messages into the shared-memory ring NAME (`/dev/shm/multipoint-ipc-NAME`)
    /// instead of the network: no socket; --size, --rate, --batch, --count and --secs
    /// apply, each batch is published at once, and each message carries the send stamp.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["line_b", "rerequest_server"])]
    pub ipc: Option<String>,

    /// With --ipc: the ring's size in bytes (a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub ipc_capacity: usize,
}

/// A re-request server: the publisher's (`pub`, the admitted-multicast `root`) or the
/// fan-out's (the rooted-unicast `root`).
#[derive(Debug, Clone, Args)]
pub struct RerequestArgs {
    /// Serve MoldUDP64 re-requests on this unicast address (a specific address of this
    /// host; subscribers and leaves give it to --rerequest): lost messages are sent
    /// again, unicast, from the last --store messages.
    #[arg(long, value_name = "ADDR:PORT")]
    pub rerequest_server: Option<SocketAddr>,

    /// With --rerequest-server: how many of the last messages are kept to be sent again.
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000).map(|n| n as usize))]
    pub store: usize,

    /// With --rerequest-server: keep serving re-requests (and repeating the end of
    /// session) for S seconds after the end of session.
    #[arg(long, value_name = "S", value_parser = parse_secs, default_value = "1")]
    pub linger: Duration,

    /// With --rerequest-server: replies a second each requesting address may get (the
    /// burst is a tenth of it, and bytes a second 1,500 times it); the default 1,000 is
    /// sized against amplification; one subscriber losing 20 % of a fast stream needs
    /// more.
    #[arg(long, value_name = "N", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub rerequest_rate: u64,
}

impl RerequestArgs {
    /// The server these options ask for, if any.
    pub fn config(&self) -> Option<multipoint_dataplane::RerequestConfig> {
        use multipoint_dataplane::core::server::ServerConfig;
        use multipoint_dataplane::core::store::StoreConfig;
        let address = self.rerequest_server?;
        let defaults = multipoint_dataplane::RerequestConfig::new(address);
        // Room for the messages kept at the default 132 bytes each, at least.
        let bytes = StoreConfig::DEFAULT_BYTES.max(self.store.saturating_mul(132));
        Some(multipoint_dataplane::RerequestConfig {
            store: StoreConfig {
                messages: self.store,
                bytes,
            },
            server: ServerConfig {
                replies_per_second: self.rerequest_rate,
                reply_burst: (self.rerequest_rate / 10).max(1),
                bytes_per_second: self.rerequest_rate.saturating_mul(1_500),
                byte_burst: (self.rerequest_rate / 10).max(1).saturating_mul(1_500),
                ..defaults.server
            },
            ..defaults
        })
    }
}

/// Options of `multipoint sub`.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("secs", |a| a.default_value("60")))]
pub struct SubArgs {
    /// Group and interface.
    #[command(flatten)]
    pub group: GroupArgs,

    /// Join source-specific: only packets from this source address.
    #[arg(long, value_name = "ADDR")]
    pub source: Option<IpAddr>,

    /// A second line of the same stream (A/B): its group and port (`multipoint pub
    /// --line-b`). Each packet is taken from whichever line brings it first; a gap is
    /// one only when both lines lost it.
    #[arg(long, value_name = "ADDR:PORT")]
    pub line_b: Option<SocketAddr>,

    /// With --line-b: the interface to join line B on; default: --iface.
    #[arg(long, value_name = "ADDR", value_parser = parse_interface, requires = "line_b")]
    pub iface_b: Option<Interface>,

    /// With --line-b: join line B source-specific, from this source address.
    #[arg(long, value_name = "ADDR", requires = "line_b")]
    pub source_b: Option<IpAddr>,

    /// With --line-b: how long a packet one line brings ahead of a missing one waits for
    /// the other line before the gap is declared (or asked for), in microseconds.
    #[arg(long, value_name = "US", default_value_t = 1_000, requires = "line_b",
          value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub line_wait_us: u64,

    /// With --line-b: a line silent this long (milliseconds) while the other brings
    /// packets is reported down.
    #[arg(long, value_name = "MS", default_value_t = 50, requires = "line_b",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub line_silence_ms: u64,

    /// Follow only this MoldUDP64 session (`multipoint pub --session`, or the `MP...` name
    /// a publisher's report gives); default: the first session whose sender's packets
    /// follow on. Packets of other sessions are ignored, counted (`other_session`) and
    /// reported.
    #[arg(long, value_name = "NAME")]
    pub session: Option<Session>,

    /// Start wherever the stream is when joining, rather than counting the messages
    /// before the first one seen (from sequence number 1) as missing.
    #[arg(long)]
    pub late_join: bool,

    /// Measure wire→application latency: the kernel stamps each datagram as it takes it
    /// in (SO_TIMESTAMPING, software), and the time from that stamp to the handler is
    /// reported beside the one-way latency (`wire_to_app_ns`), with what the interface
    /// said about hardware stamps.
    #[arg(long)]
    pub kernel_stamps: bool,

    /// With --kernel-stamps: use the NIC's hardware receive stamps where it has them
    /// (turns hardware stamping on for the whole interface; needs CAP_NET_ADMIN, and a
    /// NIC clock synchronised to CLOCK_REALTIME for meaningful figures).
    #[arg(long, requires = "kernel_stamps")]
    pub hw_stamps: bool,

    /// When to stop (the end of session stops it too).
    #[command(flatten)]
    pub stop: StopArgs,

    /// Recovery of lost messages by re-request.
    #[command(flatten)]
    pub recovery: RecoveryArgs,

    /// Idle strategy, backend, GRO and datagram size.
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Interval log, plot and JSON.
    #[command(flatten)]
    pub report: ReportArgs,

    /// Read the shared-memory ring NAME (`/dev/shm/multipoint-ipc-NAME`, written by
    /// `multipoint pub --ipc NAME` or `sub --publish-ipc NAME`) instead of the network:
    /// waits for it to appear (up to --secs, else 10 s), reads from its oldest message,
    /// and reports as a network sub does, plus what was lost to lapping.
    /// With --rerequest, what a lap loses is asked again of that server (the ring's
    /// writer must know the session: `sub --session S --publish-ipc`).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["publish_ipc", "line_b", "in_order"])]
    pub ipc: Option<String>,

    /// Also write every event of the subscription into the shared-memory ring NAME, for
    /// `multipoint sub --ipc NAME` (or an `IpcSubscription`) in other processes.
    #[arg(long, value_name = "NAME")]
    pub publish_ipc: Option<String>,

    /// With --publish-ipc: the ring's size in bytes (a power of two; 24 bytes per record
    /// plus the message rounded up to 8).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub ipc_capacity: usize,
}

/// How a receiving tool recovers lost messages (`sub`, `leaf`).
#[derive(Debug, Clone, Args)]
pub struct RecoveryArgs {
    /// Recover lost messages by MoldUDP64 re-request from the re-request server at
    /// ADDR:PORT (`multipoint pub --rerequest-server`, `multipoint root
    /// --rerequest-server`: the root does not tell its leaves); replies count only from
    /// there.
    #[arg(long, value_name = "ADDR:PORT")]
    pub rerequest: Option<SocketAddr>,

    /// With --rerequest: give a missing range up (and report it lost) after MS
    /// milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub recovery_deadline: u64,

    /// With --rerequest: deliver in order (messages after a gap wait until it is filled
    /// or given up); default: as they come, recovered ones when they arrive.
    #[arg(long, requires = "rerequest")]
    pub in_order: bool,

    /// With --rerequest: the most requests out at once, over all gaps. Match it to
    /// what the server allows one address (its burst): requests beyond that are
    /// refused, and a refused request waits its retransmission timeout. Default: the
    /// library's (`RecoveryConfig::max_in_flight`, 64).
    #[arg(long, value_name = "N", requires = "rerequest",
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub recovery_in_flight: Option<u64>,
}

impl RecoveryArgs {
    /// The recovery these options ask for, if any.
    pub fn config(&self) -> Option<multipoint_dataplane::RecoveryConfig> {
        self.rerequest.map(|server| {
            let defaults = multipoint_dataplane::RecoveryConfig::new(server);
            multipoint_dataplane::RecoveryConfig {
                deadline: Duration::from_millis(self.recovery_deadline),
                in_order: self.in_order,
                max_in_flight: self
                    .recovery_in_flight
                    .map_or(defaults.max_in_flight, |n| n as usize),
                ..defaults
            }
        })
    }
}

/// Options of `multipoint fanout`.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("secs", |a| a.default_value("3")))]
pub struct FanoutArgs {
    /// Number of leaves (sockets in this process, on 127.0.0.1).
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=65_000).map(|n| n as usize))]
    pub leaves: usize,

    /// Number of fan-out shard threads the leaves are spread over. One by default: on a
    /// two-core machine the in-process leaves' receiving needs the other core.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: u16,

    /// Message size in bytes (messages are packed into packets of --max-datagram bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = parse_message_size)]
    pub size: usize,

    /// When to stop publishing (each phase: the fan-out, then the baseline).
    #[command(flatten)]
    pub stop: StopArgs,

    /// Idle strategy, backend, GSO and datagram size of the fan-out.
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Pin fan-out shard i to core i mod cores, and receiver thread i to the i-th core
    /// from the last.
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub pin: Toggle,

    /// Also feed the same leaves from a plain loop: each packet built once, then
    /// `UdpSocket::send_to` to every leaf, on one thread.
    #[arg(long)]
    pub baseline: bool,

    /// Threads draining the leaves (epoll + recvmmsg).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub receivers: u16,

    /// Packet buffers of the fan-out (shared by its shards).
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    pub buffers: usize,

    /// UDP GRO on the leaves' sockets: a GSO train arrives as one receive.
    #[arg(long, value_enum, default_value_t = Toggle::Off)]
    pub leaf_gro: Toggle,

    /// Most deliveries the root may be ahead of what the leaves received (both phases);
    /// default 256 per leaf. Past it the root waits, so that slow leaves do not make the
    /// kernel drop.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub window: Option<u64>,

    /// Receive buffer each leaf asks for (capped by net.core.rmem_max).
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub leaf_rcvbuf: usize,

    /// Also print the results as one JSON object, on the last line.
    #[arg(long)]
    pub json: bool,
}

/// Options of `multipoint root`.
#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("secs", |a| a
        .default_value("10")
        .help("Stop publishing after S seconds (fractions allowed), counted from the first \
               message (after --wait-leaves)")),
    mut_arg("count", |a| a.help("Stop after publishing N messages")),
    mut_arg("group", |a| a
        .default_value(user_group_text(ROOT_PORT))
        .help("admitted-multicast: the multicast group and port the data goes to")),
    mut_arg("iface", |a| a.help(
        "admitted-multicast: interface to send on (an address, a name or an index)"
    )),
    mut_arg("session", |a| a.help(
        "MoldUDP64 session name (1 to 10 printable ASCII characters) leaves are told; \
         default: MP and the process id"
    )),
    mut_arg("ttl", |a| a.help(
        "admitted-multicast: multicast TTL (scope): 0 stays on this host, 1 on the local \
         network"
    )),
    mut_arg("loopback", |a| a.help(
        "admitted-multicast: whether this host's leaves get what is published"
    )),
)]
pub struct RootArgs {
    /// The rooted transport: unicast fan-out, or admission with IP multicast data.
    #[arg(long, value_enum, default_value_t = RootedTransport::RootedUnicast)]
    pub transport: RootedTransport,

    /// Where leaves ask to join (TCP); port 0: any free port. The address leaves should
    /// give to --root is printed first.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// The address the data leaves from (port 0 or none: any). rooted-unicast: the fan-out's
    /// socket, which leaves accept data from; admitted-multicast: the source address
    /// leaves join for (it must be on --iface).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = parse_data_addr)]
    pub data: SocketAddr,

    /// Group, interface, TTL and loopback (admitted-multicast) and the session.
    #[command(flatten)]
    pub publish: PublishArgs,

    /// Message size, rate, batch, and when to stop publishing and end the session
    /// (counted from the start of publishing).
    #[command(flatten)]
    pub load: LoadArgs,

    /// Leaf liveness: a leaf not heard from for this long is removed (and leaves give up
    /// on a root as silent). Heartbeats go out every third of it.
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Admit only leaves with these names (comma-separated); others are refused, with a
    /// reason. Default: every leaf.
    #[arg(long, value_name = "NAME[,NAME..]", value_delimiter = ',',
          value_parser = parse_leaf_name)]
    pub admit: Vec<String>,

    /// A file holding the pre-shared key leaves must prove they hold (hex digits, or raw
    /// bytes; 16 bytes at least; readable by its owner only: chmod 600). Leaves without
    /// it are refused with `authentication failed`. Default: no key.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Start publishing once this many leaves are in the session (0: at once). Waits as
    /// long as it takes.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub wait_leaves: usize,

    /// What peers may hold of the root's control plane.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// rooted-unicast: also take data from leaves that send (--direction send or both),
    /// each on an uplink of its own, received on one shard thread and counted.
    #[arg(long)]
    pub uplink: bool,

    /// rooted-unicast: fan-out shard threads the leaves are spread over.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: u16,

    /// The re-request server (the fan-out's, or the admitted-multicast publisher's).
    #[command(flatten)]
    pub rerequest: RerequestArgs,

    /// Idle strategy, backend, GSO and datagram size.
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Also print the results as one JSON object, on the last line.
    #[arg(long)]
    pub json: bool,
}

/// What peers may hold of a root's control plane (`multipoint root`); the defaults are
/// the control crate's, justified on its `RootLimits`. What was refused is counted in the
/// report's `control` line.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Most control connections at once, leaves and handshakes together; beyond it the
    /// oldest handshake is shed, or the newcomer refused.
    #[arg(long, value_name = "N", default_value_t = RootLimits::default().max_connections,
          value_parser = parse_at_least_one)]
    pub max_connections: usize,

    /// Most control connections at once from one IP address.
    #[arg(long, value_name = "N",
          default_value_t = RootLimits::default().max_connections_per_peer,
          value_parser = parse_at_least_one)]
    pub max_connections_per_peer: usize,

    /// Joins one IP address may ask per second, sustained.
    #[arg(long, value_name = "N",
          default_value_t = RootLimits::default().joins_per_second_per_peer,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub joins_per_sec: u32,

    /// Joins one IP address may ask at once before --joins-per-sec applies.
    #[arg(long, value_name = "N", default_value_t = RootLimits::default().join_burst,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub join_burst: u32,

    /// How long a connection has to ask to join before it is closed.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_timeout)]
    pub handshake_timeout: Duration,
}

impl LimitArgs {
    /// The control plane's limits these options give.
    pub fn limits(&self) -> RootLimits {
        RootLimits {
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            joins_per_second_per_peer: self.joins_per_sec,
            join_burst: self.join_burst,
            handshake_timeout: self.handshake_timeout,
        }
    }
}

/// Options of `multipoint leaf`.
#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("secs", |a| a.default_value("60")),
    mut_arg("count", |a| a.help(
        "Stop after N messages: once N have arrived (within a few milliseconds), and when \
         sending, once N have been sent"
    )),
    mut_arg("size", |a| a.help(
        "Sending: message size in bytes; each message starts with an 8-byte send timestamp"
    )),
    mut_arg("rate", |a| a
        .default_value("10000")
        .help("Sending: target rate in messages per second; 0 = as fast as possible")),
)]
pub struct LeafArgs {
    /// The root's address: what `multipoint root` printed (`listening on ADDR:PORT`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub root: SocketAddr,

    /// The root's transport.
    #[arg(long, value_enum, default_value_t = RootedTransport::RootedUnicast)]
    pub transport: RootedTransport,

    /// The name the root sees (and admits by, see `multipoint root --admit`); default:
    /// leaf- and the process id.
    #[arg(long, value_name = "NAME", value_parser = parse_leaf_name)]
    pub name: Option<String>,

    /// rooted-unicast: the UDP address to receive on and send from (port 0 or none: any).
    /// The root sends only to the host the leaf joins from.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = parse_data_addr)]
    pub data: SocketAddr,

    /// admitted-multicast: the interface to join the group on (an address, a name or an
    /// index).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1", value_parser = parse_interface)]
    pub iface: Interface,

    /// How data flows: receive the root's, send to the root (rooted-unicast, and the
    /// root needs --uplink), or both.
    #[arg(long, value_enum, default_value_t = LeafDirection::Receive)]
    pub direction: LeafDirection,

    /// A file holding the root's pre-shared key (as `multipoint root --key-file`): proved
    /// to the root, and asked of it in turn. Default: no key.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Count from the first message that arrives, rather than from sequence number 1 (the
    /// root was publishing before this leaf joined).
    #[arg(long)]
    pub late_join: bool,

    /// What to send (with --direction send or both), and when to stop (the end of the
    /// session stops it too).
    #[command(flatten)]
    pub load: LoadArgs,

    /// Recovery of lost messages by re-request from the root's server.
    #[command(flatten)]
    pub recovery: RecoveryArgs,

    /// Idle strategy, backend, GRO and datagram size.
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Interval log, plot and JSON.
    #[command(flatten)]
    pub report: ReportArgs,
}

/// `--transport` of `multipoint root` and `multipoint leaf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RootedTransport {
    /// The root sends every packet to every leaf by UDP unicast (no multicast needed).
    RootedUnicast,
    /// The root admits leaves; data flows by IP multicast from the root's source.
    AdmittedMulticast,
}

impl From<RootedTransport> for Transport {
    fn from(t: RootedTransport) -> Transport {
        match t {
            RootedTransport::RootedUnicast => Transport::RootedUnicast,
            RootedTransport::AdmittedMulticast => Transport::AdmittedMulticast,
        }
    }
}

/// `--direction` of `multipoint leaf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LeafDirection {
    /// Receive the root's data.
    Receive,
    /// Send to the root only (rooted-unicast).
    Send,
    /// Receive and send (rooted-unicast).
    Both,
}

impl From<LeafDirection> for Direction {
    fn from(d: LeafDirection) -> Direction {
        match d {
            LeafDirection::Receive => Direction::ReceiverOnly,
            LeafDirection::Send => Direction::SenderOnly,
            LeafDirection::Both => Direction::Both,
        }
    }
}

/// Options of `multipoint pingpong`.
#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("group", |a| a
        .default_value(user_group_text(PINGPONG_PORT))
        .help("Multicast group and port of the pings (group A)")),
    mut_arg("session", |a| a.help(
        "MoldUDP64 session name of what this process publishes (1 to 10 printable ASCII \
         characters); default: MP and the process id. A pong given --session follows only \
         that session; otherwise the first one seen"
    )),
    mut_arg("secs", |a| a.help(
        "Stop after S seconds (fractions allowed) [default: 3; with --role pong 60, and the \
         ping's end of session stops it too]"
    )),
    mut_arg("idle", |a| a
        .default_value("backoff")
        .help(
            "What the idle shards of both sides do. backoff (the default) polls for 100 µs \
             after each message, so that the echo finds the shard awake, then sleeps: the \
             lowest round trip short of spinning (p50 13-18 µs on a 2-core VM, against \
             64-77 µs with block); spin burns a core per side"
        )),
)]
pub struct PingPongArgs {
    /// Which side runs in this process.
    #[arg(long, value_enum, default_value_t = Role::Both)]
    pub role: Role,

    /// Group A (the pings), interface, session, TTL and loopback.
    #[command(flatten)]
    pub publish: PublishArgs,

    /// Multicast group and port of the echoes (group B); default: group A's address with
    /// the next port.
    #[arg(long, value_name = "ADDR:PORT")]
    pub reply_group: Option<SocketAddr>,

    /// Message size in bytes; each message starts with an 8-byte send timestamp.
    #[arg(long, value_name = "BYTES", default_value_t = 32, value_parser = parse_size)]
    pub size: usize,

    /// When to stop: --count round trips or --secs.
    #[command(flatten)]
    pub stop: StopArgs,

    /// Idle strategy of both sides, backend, GSO and datagram size.
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Interval log, plot and JSON.
    #[command(flatten)]
    pub report: ReportArgs,
}

/// `--role` of `multipoint pingpong`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Sends pings to group A and measures the round trip of their echoes on group B.
    Ping,
    /// Echoes what arrives on group A to group B, unchanged.
    Pong,
    /// Both, in this process.
    Both,
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
    /// AF_XDP on --iface (root: an XDP program steers the group's packets to the
    /// shard; never chosen by auto).
    #[value(alias = "af_xdp", alias = "af-xdp")]
    Xdp,
}

impl From<Backend> for BackendChoice {
    fn from(b: Backend) -> BackendChoice {
        match b {
            Backend::Auto => BackendChoice::Auto,
            Backend::Uring => BackendChoice::Uring,
            Backend::Mmsg => BackendChoice::Mmsg,
            Backend::Xdp => BackendChoice::Xdp,
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
    /// Poll for 100 µs after the last data, then sleep: a reply within the window finds
    /// the shard awake.
    Backoff,
}

impl Idle {
    /// The name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Idle::Spin => "spin",
            Idle::Yield => "yield",
            Idle::Block => "block",
            Idle::Backoff => "backoff",
        }
    }
}

impl From<Idle> for IdleStrategy {
    fn from(i: Idle) -> IdleStrategy {
        match i {
            Idle::Spin => IdleStrategy::Spin,
            Idle::Yield => IdleStrategy::Yield,
            Idle::Block => IdleStrategy::Block,
            Idle::Backoff => IdleStrategy::Backoff,
        }
    }
}

impl IoArgs {
    /// Shard settings: `shards` threads idling as `idle`, with this backend, GRO and
    /// datagram size; pinned to cores (the tool owns the host's cores for its run; the
    /// library pins only when asked).
    pub fn shard_config(&self, shards: usize, idle: Idle) -> ShardConfig {
        ShardConfig {
            shards,
            pin: true,
            backend: self.backend.into(),
            idle: idle.into(),
            gro: self.gso.is_on(),
            max_datagram: self.max_datagram,
            ..ShardConfig::default()
        }
    }
}

impl EngineArgs {
    /// Shard settings: `shards` threads idling as `--idle` says, with this I/O (see
    /// [`IoArgs::shard_config`]).
    pub fn shard_config(&self, shards: usize) -> ShardConfig {
        self.io.shard_config(shards, self.idle)
    }
}

impl PublishArgs {
    /// Publisher settings for `session` to `--group`, on this interface with this TTL and
    /// loopback, with the I/O of `io`.
    pub fn publisher_config(&self, session: Session, io: &IoArgs) -> PublisherConfig {
        let mut config = PublisherConfig::new(session, self.group.group);
        config.interface = self.group.iface.clone();
        config.backend = io.backend.into();
        config.gso = io.gso.is_on();
        config.max_datagram = io.max_datagram;
        config.xdp = io.xdp.config(&self.group.iface);
        config.scope = self.ttl;
        config.loopback = self.loopback.is_on();
        config
    }
}

/// Parses `--iface`: an IP address, an interface index (all digits) or a name.
fn parse_interface(s: &str) -> Result<Interface, String> {
    if s.is_empty() {
        return Err("an interface needs an address, a name or an index".into());
    }
    s.parse().map_err(|e: std::convert::Infallible| match e {})
}

/// Parses `--timeout`: seconds, from 0.1 to 3600 (what the control protocol takes).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err(format!("{s} s is outside 0.1 <= timeout <= 3600"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s} s: {e}"))
}

/// Parses a count that must be at least 1.
fn parse_at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// Parses `--data`: an address with a port, or an address alone (any port).
fn parse_data_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| format!("{s:?} is neither ADDR nor ADDR:PORT"))
}

/// The longest leaf name taken: enough for any host and process naming scheme, well
/// within the control protocol's limit.
const MAX_LEAF_NAME: usize = 64;

/// Parses a leaf name (`leaf --name`, `root --admit`): 1 to 64 characters, no control
/// characters, no commas (they separate names in --admit).
fn parse_leaf_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().count() > MAX_LEAF_NAME {
        return Err(format!("a leaf name is 1 to {MAX_LEAF_NAME} characters"));
    }
    if s.chars().any(|c| c.is_control() || c == ',') {
        return Err("a leaf name has no control characters and no commas".into());
    }
    Ok(s.to_owned())
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

/// Parses `--size` of `fanout`: 1 byte to a MoldUDP64 block (the fan-out's own, smaller
/// limit is checked once it exists).
fn parse_message_size(s: &str) -> Result<usize, String> {
    let size: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if !(1..=MAX_MESSAGE_LEN).contains(&size) {
        return Err(format!("messages are 1 to {MAX_MESSAGE_LEN} bytes"));
    }
    Ok(size)
}

/// The largest UDP payload of an IPv4 datagram.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// Parses `--max-datagram`: room for the MoldUDP64 header and one block header, at most
/// a UDP payload.
fn parse_max_datagram(s: &str) -> Result<usize, String> {
    let min = HEADER_LEN + BLOCK_HEADER_LEN;
    let bytes: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if !(min..=MAX_UDP_PAYLOAD).contains(&bytes) {
        return Err(format!(
            "a datagram is {min} to {MAX_UDP_PAYLOAD} bytes (the MoldUDP64 header and one \
             block length at least, a UDP payload at most)"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("multipoint").chain(args.iter().copied()))
    }

    fn command(args: &[&str]) -> Command {
        parse(args).unwrap().command
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn demo_defaults_are_loopback_at_a_million_per_second() {
        let Command::Demo(args) = command(&["demo"]) else {
            panic!("not demo")
        };
        assert_eq!(args.publish.group.group, user_group(DATA_PORT));
        assert_eq!(args.publish.group.iface, Interface::LOOPBACK_V4);
        assert_eq!(args.load.stop.secs, Some(Duration::from_secs(3)));
        assert_eq!(args.load.stop.count, None);
        assert_eq!(
            (args.load.size, args.load.rate, args.load.batch, args.shards),
            (64, 1_000_000, 1024, 2)
        );
        assert_eq!(
            (
                args.engine.io.backend,
                args.engine.io.gso,
                args.engine.idle,
                args.engine.io.max_datagram
            ),
            (Backend::Auto, Toggle::On, Idle::Block, 1472)
        );
        assert_eq!((args.publish.ttl, args.publish.loopback), (1, Toggle::On));
        assert!(args.report.hlog.is_none() && args.report.plot.is_none() && !args.report.json);
        assert!(args.publish.session.is_none());
    }

    #[test]
    fn the_default_groups_are_the_users_own() {
        let [_, _, high, low] = nix::unistd::getuid().as_raw().to_be_bytes();
        let own = std::net::Ipv4Addr::new(239, 255, high, low);
        for (args, port) in [
            (&["sub"][..], DATA_PORT),
            (&["pub"], DATA_PORT),
            (&["pingpong"], PINGPONG_PORT),
            (&["root"], ROOT_PORT),
        ] {
            let group = match command(args) {
                Command::Sub(a) => a.group.group,
                Command::Pub(a) => a.publish.group.group,
                Command::PingPong(a) => a.publish.group.group,
                Command::Root(a) => a.publish.group.group,
                other => panic!("{other:?}"),
            };
            assert_eq!(group, SocketAddr::from((own, port)), "{args:?}");
            assert!(group.ip().is_multicast());
        }
        use clap::CommandFactory;
        let help = Cli::command()
            .find_subcommand_mut("sub")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains(&format!("[default: {own}:{DATA_PORT}]")),
            "{help}"
        );
    }

    #[test]
    fn throughput_is_the_demo_as_fast_as_possible_on_one_shard() {
        let Command::Throughput(args) = command(&["throughput"]) else {
            panic!("not throughput")
        };
        assert_eq!((args.load.rate, args.shards), (0, 1));
        assert_eq!(args.load.stop.secs, Some(Duration::from_secs(3)));
        let Command::Throughput(args) = command(&["throughput", "--rate", "5", "--shards", "2"])
        else {
            panic!("not throughput")
        };
        assert_eq!((args.load.rate, args.shards), (5, 2));
    }

    #[test]
    fn each_tool_has_its_own_stop_default() {
        let Command::Pub(args) = command(&["pub"]) else {
            panic!("not pub")
        };
        assert_eq!(args.load.stop.secs, Some(Duration::from_secs(10)));
        let Command::Sub(args) = command(&["sub", "--count", "5"]) else {
            panic!("not sub")
        };
        assert_eq!(args.stop.secs, Some(Duration::from_secs(60)));
        assert_eq!(args.stop.count, Some(5));
        let Command::PingPong(args) = command(&["pingpong"]) else {
            panic!("not pingpong")
        };
        assert_eq!(args.stop.secs, None, "pingpong resolves it by role");
    }

    #[test]
    fn pingpong_defaults_to_both_roles_and_small_messages() {
        let Command::PingPong(args) = command(&["pingpong"]) else {
            panic!("not pingpong")
        };
        assert_eq!(args.role, Role::Both);
        assert_eq!(args.size, 32);
        assert_eq!(args.engine.idle, Idle::Backoff);
        assert_eq!(args.publish.group.group, user_group(PINGPONG_PORT));
        assert!(args.reply_group.is_none());
        let Command::PingPong(args) = command(&[
            "pingpong",
            "--role",
            "pong",
            "--reply-group",
            "239.255.0.9:5",
        ]) else {
            panic!("not pingpong")
        };
        assert_eq!(args.role, Role::Pong);
        assert_eq!(args.reply_group, Some("239.255.0.9:5".parse().unwrap()));
    }

    #[test]
    fn sub_takes_a_source_and_a_session() {
        let Command::Sub(args) = command(&[
            "sub",
            "--source",
            "10.0.0.5",
            "--session",
            "FEED1",
            "--late-join",
        ]) else {
            panic!("not sub")
        };
        assert_eq!(args.source, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(args.session, Some(Session::new("FEED1").unwrap()));
        assert!(args.late_join);
    }

    #[test]
    fn a_message_too_short_for_its_timestamp_is_refused() {
        let error = parse(&["demo", "--size", "7"]).unwrap_err();
        assert!(error.to_string().contains("at least 8 bytes"), "{error}");
        assert!(parse(&["demo", "--size", "8"]).is_ok());
        assert!(parse(&["demo", "--size", "65536"]).is_err());
        assert!(parse(&["pingpong", "--size", "7"]).is_err());
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
            &["demo", "--count", "0"],
            &["demo", "--batch", "0"],
            &["demo", "--max-datagram", "21"],
            &["demo", "--max-datagram", "65508"],
            &["demo", "--ttl", "256"],
            &["demo", "--loopback", "yes"],
            &["pub", "--session", "ELEVEN-CHAR"],
            &["pub", "--session", ""],
            &["pub", "--shards", "2"],
            &["pub", "--plot", "x.svg"],
            &["sub", "--source", "nowhere"],
            &["sub", "--rate", "5"],
            &["pingpong", "--role", "serve"],
            &["pingpong", "--rate", "5"],
            &["fanout", "--leaves", "0"],
            &["fanout", "--shards", "0"],
            &["fanout", "--size", "0"],
            &["fanout", "--receivers", "0"],
            &["fanout", "--buffers", "0"],
            &["fanout", "--leaf-gro", "maybe"],
            &["fanout", "--group", "239.255.0.1:1"],
            &["root", "--transport", "ip-multicast"],
            &["root", "--timeout", "0.05"],
            &["root", "--timeout", "3601"],
            &["root", "--admit", ""],
            &["root", "--admit", "a,,b"],
            &["root", "--data", "nowhere"],
            &["root", "--wait-leaves", "-1"],
            &["root", "--plot", "x.svg"],
            &["leaf"],
            &["leaf", "--root", "127.0.0.1"],
            &["leaf", "--root", "127.0.0.1:1", "--direction", "sideways"],
            &["leaf", "--root", "127.0.0.1:1", "--name", ""],
            &["leaf", "--root", "127.0.0.1:1", "--name", "a,b"],
            &["leaf", "--root", "127.0.0.1:1", "--size", "7"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn fanout_defaults_to_256_leaves_on_1_shard_without_the_baseline() {
        let Command::Fanout(args) = command(&["fanout"]) else {
            panic!("not fanout")
        };
        assert_eq!((args.leaves, args.shards, args.size), (256, 1, 64));
        assert_eq!(args.stop.secs, Some(Duration::from_secs(3)));
        assert_eq!((args.receivers, args.buffers), (1, 1024));
        assert!(!args.baseline && !args.json && args.window.is_none());
        assert_eq!(
            (args.leaf_gro, args.pin, args.engine.idle),
            (Toggle::Off, Toggle::On, Idle::Block)
        );
        let Command::Fanout(args) = command(&[
            "fanout",
            "--leaves",
            "1024",
            "--shards",
            "2",
            "--baseline",
            "--gso",
            "off",
        ]) else {
            panic!("not fanout")
        };
        assert_eq!((args.leaves, args.shards), (1024, 2));
        assert!(args.baseline && !args.engine.io.gso.is_on());
    }

    #[test]
    fn root_defaults_work_on_loopback_with_every_leaf_admitted() {
        let Command::Root(args) = command(&["root"]) else {
            panic!("not root")
        };
        assert_eq!(args.transport, RootedTransport::RootedUnicast);
        assert_eq!(args.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(args.data, "127.0.0.1:0".parse().unwrap());
        assert_eq!(args.timeout, Duration::from_secs(3));
        assert!(args.admit.is_empty() && !args.uplink && !args.json);
        assert_eq!((args.wait_leaves, args.shards), (0, 1));
        assert_eq!(args.load.stop.secs, Some(Duration::from_secs(10)));
        assert_eq!(args.publish.group.iface, Interface::LOOPBACK_V4);
        assert_eq!((args.load.size, args.load.rate), (64, 1_000_000));
        let Command::Root(args) = command(&[
            "root",
            "--transport",
            "admitted-multicast",
            "--admit",
            "alice,bob",
            "--admit",
            "carol",
            "--timeout",
            "0.5",
            "--data",
            "127.0.0.2",
            "--group",
            "239.254.1.2:5000",
            "--ttl",
            "0",
            "--wait-leaves",
            "2",
        ]) else {
            panic!("not root")
        };
        assert_eq!(args.transport, RootedTransport::AdmittedMulticast);
        assert_eq!(args.admit, ["alice", "bob", "carol"]);
        assert_eq!(args.timeout, Duration::from_millis(500));
        assert_eq!(args.data, "127.0.0.2:0".parse().unwrap());
        assert_eq!(
            args.publish.group.group,
            "239.254.1.2:5000".parse().unwrap()
        );
        assert_eq!((args.publish.ttl, args.wait_leaves), (0, 2));
        assert_eq!(
            Transport::from(args.transport),
            Transport::AdmittedMulticast
        );
    }

    #[test]
    fn a_leaf_needs_the_root_and_receives_by_default() {
        let Command::Leaf(args) = command(&["leaf", "--root", "127.0.0.1:7000"]) else {
            panic!("not leaf")
        };
        assert_eq!(args.root, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(args.transport, RootedTransport::RootedUnicast);
        assert_eq!(args.direction, LeafDirection::Receive);
        assert_eq!(Direction::from(args.direction), Direction::ReceiverOnly);
        assert_eq!(args.data, "127.0.0.1:0".parse().unwrap());
        assert_eq!(args.iface, Interface::LOOPBACK_V4);
        assert!(args.name.is_none() && !args.late_join && !args.report.json);
        assert_eq!(args.load.stop.secs, Some(Duration::from_secs(60)));
        assert_eq!((args.load.size, args.load.rate), (64, 10_000));
        let Command::Leaf(args) = command(&[
            "leaf",
            "--root",
            "127.0.0.1:7000",
            "--direction",
            "both",
            "--name",
            "alice",
            "--count",
            "10",
        ]) else {
            panic!("not leaf")
        };
        assert_eq!(Direction::from(args.direction), Direction::Both);
        assert_eq!(args.name.as_deref(), Some("alice"));
        assert_eq!(args.load.stop.count, Some(10));
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

    #[test]
    fn the_option_groups_become_data_plane_settings() {
        let Command::Demo(args) = command(&[
            "demo",
            "--max-datagram",
            "9000",
            "--ttl",
            "0",
            "--loopback",
            "off",
            "--gso",
            "off",
            "--backend",
            "mmsg",
        ]) else {
            panic!("not demo")
        };
        let shard = args.engine.io.shard_config(3, Idle::Yield);
        assert_eq!(
            (shard.shards, shard.max_datagram, shard.gro),
            (3, 9000, false)
        );
        assert_eq!(shard.idle, IdleStrategy::Yield);
        assert_eq!(shard.backend, BackendChoice::Mmsg);
        let session = Session::new("T").unwrap();
        let config = args.publish.publisher_config(session, &args.engine.io);
        assert_eq!((config.max_datagram, config.scope), (9000, 0));
        assert!(!config.loopback && !config.gso);
        assert_eq!(config.interface, Interface::LOOPBACK_V4);
    }
}
