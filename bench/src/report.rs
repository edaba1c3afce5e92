//! What a run measured, as a human-readable report ([`Display`](fmt::Display)) and as
//! one line of JSON ([`Report::to_json`]).
//!
//! Every tool's JSON object starts with the same summary, so that scripts read any tool
//! alike: `command`, `backend`, `backend_reason`, `messages`, `bytes`, `packets`, `secs`,
//! `msgs_per_sec`, `bytes_per_sec`, `gaps`, `missing`, `duplicates`, `malformed`,
//! `kernel_drops` and `latency_ns` (`count`, `p50`, `p90`, `p99`, `p999`, `p9999`, `max`,
//! `min`, `mean`; `null` when there is no sample), and, as printed by the tool
//! ([`Outcome`]), end with `interrupted`: `"SIGINT"` or `"SIGTERM"` when a signal ended
//! the run early (the figures are those until then), `null` otherwise. What they mean per
//! tool:
//!
//! - `demo`: `messages`, `bytes`, `packets`, `msgs_per_sec` and `bytes_per_sec` are what
//!   the publisher sent, per second of publishing; `gaps`, `missing`, `duplicates`,
//!   `malformed` and `kernel_drops` are totals over the subscribers (0: none lost
//!   anything); latency is one-way, all subscribers together. The publisher and each
//!   subscriber (its own `msgs_per_sec`, `session`, `sender`, counters and latency)
//!   follow under `publisher` and `subscribers`.
//! - `throughput`: as `demo`, but the summary is its one subscriber's: what it was
//!   handed, per second of publishing.
//! - `pub`: what the publisher sent; the receive-side fields and `latency_ns` are `null`.
//!   `rerequest`: with `--rerequest-server`, the server's `requests`, `replies`,
//!   `messages_served`, `bytes_served`, `refused` and the refusals by reason, and the
//!   store's `stored_first`, `stored_next` and `evicted`; `null` without a server.
//!   `packets`, `sends`, `gso_sends` and `send_errors` are line A's (`--group`'s); with
//!   `--line-b`, `line_b` has line B's `group`, `interface`, `packets`, `sends`,
//!   `gso_sends` and `send_errors` (absent without it).
//! - `sub`: what the subscription was handed, per second from its first message to its
//!   last (`messages` counts recovered ones too, `missing` those never delivered);
//!   `latency_ns` is one-way, or `null` when the payloads carry no plausible send
//!   timestamp. Recovery (`--rerequest`): `recovered`, `requests`, `retries`,
//!   `replies`, `gaps_given_up`, `reply_foreign_source`, `reply_unasked` (0 without it)
//!   and `recovery_ns` (gap seen → filled; `null` when nothing was recovered).
//!   `xdp` with `--backend xdp` (`null` otherwise): `setup` (`interface`, `queue`,
//!   `mode`, `native_refused`, `zero_copy`, `copy_reason`, `huge_pages`,
//!   `huge_pages_reason`, `program_id`, `busy_poll`), `frames`, `delivered`, `not_subscribed`,
//!   `invalid_descriptors`, `discarded` and `discards` by reason, and the kernel's
//!   `kernel_rx_dropped`, `kernel_rx_ring_full`, `kernel_fill_ring_empty`,
//!   `kernel_rx_invalid`, and what the XDP program did: `program_redirected`,
//!   `program_no_socket`, `program_not_ours`, `program_short`, `program_fragment`;
//!   `pub`'s `xdp` has `setup`, `frames`, `completed`, `waits`,
//!   `dropped`, `kick_errors` and `kernel_tx_invalid`.
//!   `wire_to_app_ns` (kernel receive stamp → handler, one sample per message delivered
//!   as its datagram arrived) and `kernel_stamps` (`stamped`, `unstamped`, `negative`,
//!   `malformed`, `control_truncated` and `hardware`, what the interface said about
//!   hardware stamps) with `--kernel-stamps`; both `null` without it. For `pub`,
//!   `send_to_wire_ns` (submission → the kernel's transmit stamp, sampled sends) and
//!   `tx_stamps` (`every`, `sends`, `sampled`, `recorded`, `expired`, `skipped`,
//!   `unmatched`, `negative`) with `--tx-stamps`; both `null` without it.
//! - `pingpong`: round trips (ping) or echoes (pong alone); `latency_ns` is the round trip
//!   (`null` for pong alone); receive-side counters are summed over both sides' subscriptions.
//! - `fanout`: what the root offered (messages, bytes, packets each counted once);
//!   `deliveries` (packets received by leaves), `deliveries_per_sec`, `drops` and, with
//!   `--baseline`, `baseline_deliveries_per_sec` and `ratio` follow. The receive-side
//!   fields of the summary and `latency_ns` are `null` (the leaves only count datagrams).
//! - `root`: what the root offered (messages, bytes, packets each counted once), per second
//!   of publishing; `leaves` (every leaf that joined), `refused`, `auth_failed` (of
//!   those, leaves that did not prove `--key-file`'s key), `left`, `timed_out`,
//!   `removed`, `leaves_at_end`, `deliveries` (packets the kernel took for a leaf;
//!   `null` on admitted-multicast, where the network copies packets), `control` (what the
//!   control plane accepted, refused by reason, shed and timed out: `accepted`,
//!   `refused_max_connections`, `refused_per_peer`, `refused_join_rate`,
//!   `refused_data_taken`, `refused_auth`, `refused_full`, `refused_other`, `shed`,
//!   `handshake_timeouts`,
//!   `accept_stalls`), with `--uplink`, `uplink`, and `rerequest` as `pub`'s (the
//!   fan-out's server on rooted-unicast, the publisher's on admitted-multicast). The
//!   receive-side fields and `latency_ns` are `null`.
//! - `leaf`: as `sub`, for what the leaf received (recovery from the root's server with
//!   `--rerequest`); `ended`, `ended_by` (`count`, `secs`,
//!   `root_closed`, `removed`, `root_gone`, `interrupted`), `end_reason`, and `sent` for a leaf that
//!   sends. A leaf that only sends has `pub`'s summary instead (receive-side fields
//!   `null`).
//!
//! Bytes are message bytes (MoldUDP64 framing not counted) and MB is 10^6 bytes.
//! Latencies are nanoseconds in JSON and carry units in the text. Formatting allocates and
//! reads no clock.

use std::fmt::{self, Write as _};
use std::time::Duration;

use multipoint_control::rooted::RootStats;
use multipoint_dataplane::core::server::ServerStats;
use multipoint_dataplane::core::stamps::{RxStampStats, TxStampStats};
use multipoint_dataplane::core::store::StoreStats;
use multipoint_dataplane::latency::{format_ns, Percentiles};
use multipoint_dataplane::{
    BackendInfo, FanoutStats, LineSendStats, LineStats, PublisherStats, SubscriptionStats,
    XdpSendStats, XdpSetup, XdpStats,
};

use crate::fanout::Phase;
use crate::interrupt::Signal;

/// The keys every tool's JSON object starts with, in this order (see the module docs).
pub const SUMMARY: [&str; 15] = [
    "command",
    "backend",
    "backend_reason",
    "messages",
    "bytes",
    "packets",
    "secs",
    "msgs_per_sec",
    "bytes_per_sec",
    "gaps",
    "missing",
    "duplicates",
    "malformed",
    "kernel_drops",
    "latency_ns",
];

/// A tool's results: the text report (`Display`) and its JSON form.
pub trait Report: fmt::Display {
    /// The results as one JSON object on one line (no trailing newline).
    fn to_json(&self) -> String;
}

/// A tool's report and the signal that ended its run early, if one did: the text says so
/// first, and the JSON object gets `interrupted` (`"SIGINT"`, `"SIGTERM"` or `null`) as
/// its last key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'a, R> {
    /// What the run measured (until the signal, if one came).
    pub report: &'a R,
    /// The signal that ended it early.
    pub interrupted: Option<Signal>,
}

impl<R: Report> fmt::Display for Outcome<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(signal) = self.interrupted {
            writeln!(
                f,
                "interrupted by {signal}: the run ended early; this is what it measured until \
                 then"
            )?;
        }
        write!(f, "{}", self.report)
    }
}

impl<R: Report> Report for Outcome<'_, R> {
    fn to_json(&self) -> String {
        let mut object = self.report.to_json();
        // Every report is one JSON object: the key goes in before its closing brace.
        if object.ends_with('}') {
            object.pop();
        }
        let mut json = Json { out: object };
        json.opt_str("interrupted", self.interrupted.map(Signal::name));
        json.finish()
    }
}

/// How the run was set up, as shown in the report's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Group and port.
    pub group: String,
    /// Interface sent and joined on.
    pub interface: String,
    /// Message size in bytes.
    pub size: usize,
    /// Target rate in messages per second; 0 = as fast as possible.
    pub rate: u64,
    /// Number of shards.
    pub shards: usize,
    /// GSO on the publisher and GRO on the shards.
    pub gso: bool,
    /// The shards' idle strategy.
    pub idle: String,
}

/// The publisher's side of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherReport {
    /// The backend it ran on and why.
    pub backend: BackendInfo,
    /// Its final counters.
    pub stats: PublisherStats,
}

/// One subscriber's side of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberReport {
    /// The shard it ran on.
    pub shard: usize,
    /// The backend the shards ran on and why.
    pub backend: BackendInfo,
    /// Its final counters.
    pub stats: SubscriptionStats,
    /// One-way latency over the whole run.
    pub latency: Percentiles,
    /// The session it followed.
    pub session: Option<String>,
    /// The sender its stream was bound to, once locked.
    pub sender: Option<String>,
}

/// Everything `multipoint demo` or `multipoint throughput` measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    /// `demo` or `throughput`.
    pub command: &'static str,
    /// The setup.
    pub settings: Settings,
    /// How long the publisher published.
    pub elapsed: Duration,
    /// The publisher.
    pub publisher: PublisherReport,
    /// The subscribers, in the order they were created.
    pub subscribers: Vec<SubscriberReport>,
    /// One-way latency of all subscribers together.
    pub latency: Percentiles,
}

/// One trial of `multipoint throughput --lossless`: a run at one rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial {
    /// The rate asked for (messages per second; 0: as fast as possible).
    pub rate: u64,
    /// Messages published.
    pub sent: u64,
    /// Messages the subscriber was handed (recovered ones included).
    pub delivered: u64,
    /// Messages it was told are lost for good.
    pub missing: u64,
    /// Messages it recovered.
    pub recovered: u64,
    /// Messages delivered per second of publishing.
    pub msgs_per_sec: f64,
    /// Every message sent was delivered.
    pub lossless: bool,
}

/// What `multipoint throughput --lossless` found.
#[derive(Debug, Clone, PartialEq)]
pub struct LosslessReport {
    /// Message size.
    pub size: usize,
    /// Whether the subscriber recovered by re-request.
    pub recovery: bool,
    /// The trials in the order they ran.
    pub trials: Vec<Trial>,
}

impl LosslessReport {
    /// The fastest lossless trial, if any.
    pub fn best(&self) -> Option<&Trial> {
        self.trials
            .iter()
            .filter(|t| t.lossless)
            .max_by(|a, b| a.msgs_per_sec.total_cmp(&b.msgs_per_sec))
    }
}

impl fmt::Display for LosslessReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "multipoint throughput --lossless: {}-byte messages, {}",
            self.size,
            if self.recovery {
                "with recovery by re-request"
            } else {
                "without recovery"
            }
        )?;
        for t in &self.trials {
            let rate = if t.rate == 0 {
                "as fast as possible".to_owned()
            } else {
                format!("{} msgs/s", Grouped(t.rate))
            };
            writeln!(
                f,
                "  {rate:>22}: delivered {:>12} of {:>12} ({:>11} msgs/s)  missing {}  recovered {}  {}",
                Grouped(t.delivered),
                Grouped(t.sent),
                Grouped(t.msgs_per_sec.round() as u64),
                Grouped(t.missing),
                Grouped(t.recovered),
                if t.lossless { "lossless" } else { "lost some" }
            )?;
        }
        match self.best() {
            Some(b) => writeln!(
                f,
                "highest lossless rate: {} msgs/s",
                Grouped(b.msgs_per_sec.round() as u64)
            ),
            None => writeln!(f, "no trial was lossless"),
        }
    }
}

impl Report for LosslessReport {
    fn to_json(&self) -> String {
        let mut json = Json::object();
        json.str("command", "throughput")
            .bool("lossless", true)
            .bool("recovery", self.recovery)
            .u64("size", self.size as u64);
        json.opt_f64(
            "lossless_msgs_per_sec",
            self.best().map(|b| b.msgs_per_sec),
            0,
        );
        let trials: Vec<String> = self
            .trials
            .iter()
            .map(|t| {
                let mut o = Json::object();
                o.u64("rate", t.rate)
                    .u64("sent", t.sent)
                    .u64("delivered", t.delivered)
                    .u64("missing", t.missing)
                    .u64("recovered", t.recovered)
                    .f64("msgs_per_sec", t.msgs_per_sec, 0)
                    .bool("lossless", t.lossless);
                o.finish()
            })
            .collect();
        json.raw("trials", &Json::array(&trials));
        json.finish()
    }
}

/// Everything `multipoint pub` measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubReport {
    /// Group and port.
    pub group: String,
    /// Interface sent on.
    pub interface: String,
    /// The session name.
    pub session: String,
    /// Message size in bytes.
    pub size: usize,
    /// Target rate; 0 = as fast as possible.
    pub rate: u64,
    /// How long it published.
    pub elapsed: Duration,
    /// The publisher.
    pub publisher: PublisherReport,
    /// What its re-request server did, if it ran one.
    pub rerequest: Option<ServerStats>,
    /// What its retransmission store held at the end, if it had one.
    pub stored: Option<StoreStats>,
    /// Line B, with `--line-b`.
    pub line_b: Option<LineBReport>,
    /// Send→wire latency, with `--tx-stamps`.
    pub tx_stamps: Option<SendToWireReport>,
    /// The AF_XDP send path, with `--backend xdp`.
    pub xdp: Option<XdpSendStats>,
}

/// Send→wire latency of `multipoint pub --tx-stamps`: submission to the kernel's software
/// transmit stamp, for one send in `every`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendToWireReport {
    /// One send in this many was sampled.
    pub every: u32,
    /// The samples' percentiles.
    pub latency: Percentiles,
    /// What happened to the samples.
    pub stats: TxStampStats,
}

/// Wire→application latency of `multipoint sub --kernel-stamps`: the kernel's receive
/// stamp to the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireToAppReport {
    /// The samples' percentiles.
    pub latency: Percentiles,
    /// What happened to the stamps.
    pub stats: RxStampStats,
    /// What the interface said about hardware stamps.
    pub hardware: String,
}

impl fmt::Display for SendToWireReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write_latency(f, "send→wire", &self.latency)?;
        writeln!(
            f,
            "  kernel TX stamps  1 send in {}: sends {}   sampled {}   recorded {}   expired {}   \
             skipped {}   unmatched {}   negative {}",
            self.every,
            Grouped(s.sends),
            Grouped(s.sampled),
            Grouped(s.recorded),
            Grouped(s.expired),
            Grouped(s.skipped),
            Grouped(s.unmatched),
            Grouped(s.negative),
        )
    }
}

impl fmt::Display for WireToAppReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write_latency(f, "wire→app", &self.latency)?;
        writeln!(
            f,
            "  kernel RX stamps  stamped {}   unstamped {}   negative {}   malformed {}   \
             control truncated {}",
            Grouped(s.stamped),
            Grouped(s.unstamped),
            Grouped(s.negative),
            Grouped(s.malformed),
            Grouped(s.control_truncated),
        )?;
        writeln!(f, "  {}", self.hardware)
    }
}

/// `send_to_wire_ns` and `tx_stamps` of `pub`'s JSON (`null` without `--tx-stamps`).
fn tx_stamps_json(json: &mut Json, report: Option<&SendToWireReport>) {
    let latency = report.map(|r| &r.latency);
    json.raw("send_to_wire_ns", &stamped_latency_json(latency))
        .opt_object("tx_stamps", report, |o, r| {
            let s = &r.stats;
            o.u64("every", u64::from(r.every))
                .u64("sends", s.sends)
                .u64("sampled", s.sampled)
                .u64("recorded", s.recorded)
                .u64("expired", s.expired)
                .u64("skipped", s.skipped)
                .u64("unmatched", s.unmatched)
                .u64("negative", s.negative);
        });
}

/// `wire_to_app_ns` and `kernel_stamps` of `sub`'s JSON (`null` without
/// `--kernel-stamps`).
fn kernel_stamps_json(json: &mut Json, report: Option<&WireToAppReport>) {
    let latency = report.map(|r| &r.latency);
    json.raw("wire_to_app_ns", &stamped_latency_json(latency))
        .opt_object("kernel_stamps", report, |o, r| {
            let s = &r.stats;
            o.u64("stamped", s.stamped)
                .u64("unstamped", s.unstamped)
                .u64("negative", s.negative)
                .u64("malformed", s.malformed)
                .u64("control_truncated", s.control_truncated)
                .str("hardware", &r.hardware);
        });
}

/// The latency of kernel stamps: the percentiles, `null` without a sample or without the
/// option.
fn stamped_latency_json(latency: Option<&Percentiles>) -> String {
    latency_json(latency.filter(|l| l.count > 0))
}

/// Line B of `multipoint pub --line-b`: where every packet went a second time, and what
/// that line sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineBReport {
    /// Group and port.
    pub group: String,
    /// Interface sent on.
    pub interface: String,
    /// Line B's counters.
    pub stats: LineSendStats,
}

/// What a subscriber made of the send timestamps in its payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamps {
    /// Messages long enough to carry a timestamp.
    pub stamped: u64,
    /// Of those, stamps that cannot be a send time on this host: from the future, or older
    /// than the histogram's range (60 s).
    pub implausible: u64,
}

/// Everything `multipoint sub` measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubReport {
    /// Group and port.
    pub group: String,
    /// Interface joined on.
    pub interface: String,
    /// The source of a source-specific join.
    pub source: Option<String>,
    /// The session followed: the one named, or the one the stream locked onto; `None`
    /// if nothing locked.
    pub session: Option<String>,
    /// The sender the stream was bound to (address and port), once locked.
    pub sender: Option<String>,
    /// Why the shard stopped receiving, if it failed.
    pub failure: Option<String>,
    /// From the first message to the last one (or to the end of session); the whole run
    /// if nothing arrived.
    pub elapsed: Duration,
    /// What arrived.
    pub received: Received,
    /// Wire→application latency, with `--kernel-stamps`.
    pub kernel: Option<WireToAppReport>,
    /// With `--ipc`: what reading the shared-memory ring lost and saw of its writer.
    pub ipc: Option<IpcReceived>,
    /// With `--publish-ipc`: what the subscription wrote into its ring.
    pub published_ipc: Option<IpcPublished>,
}

/// What `sub --ipc` saw of the ring beside the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcReceived {
    /// The ring's file.
    pub path: String,
    /// The writer's process id.
    pub writer_pid: u32,
    /// What became of the writer: `live`, `closed`, `dead`, `replaced`.
    pub writer: String,
    /// Records lost to the writer lapping the reader.
    pub lost: u64,
    /// Times it was lapped.
    pub lapped: u64,
    /// Messages overwritten while being read (in `lost` too).
    pub torn_during_read: u64,
    /// Records that made no sense and were skipped.
    pub discarded: u64,
}

/// What `sub --publish-ipc` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcPublished {
    /// The ring's file.
    pub path: String,
    /// Records written.
    pub records: u64,
    /// Messages written.
    pub messages: u64,
    /// Times round the ring.
    pub laps: u64,
}

/// The ping side of `multipoint pingpong`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingReport {
    /// Round trips completed: echoes of the ping in flight.
    pub round_trips: u64,
    /// Pings given up on after no echo came back in time (the next one went out).
    pub timeouts: u64,
    /// Echoes of pings already given up on.
    pub late: u64,
    /// Pings the publisher refused.
    pub refused: u64,
    /// Round-trip latency (late echoes included).
    pub rtt: Percentiles,
    /// The counters of the echo subscription.
    pub stats: SubscriptionStats,
    /// The ping publisher's counters.
    pub publisher: PublisherStats,
}

/// The pong side of `multipoint pingpong`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PongReport {
    /// Pings echoed.
    pub echoed: u64,
    /// Pings the publisher refused to echo.
    pub refused: u64,
    /// The counters of the ping subscription.
    pub stats: SubscriptionStats,
    /// The pong publisher's counters.
    pub publisher: PublisherStats,
}

/// Everything `multipoint pingpong` measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingPongReport {
    /// `ping`, `pong` or `both`.
    pub role: &'static str,
    /// Group A, the pings.
    pub group: String,
    /// Group B, the echoes.
    pub reply_group: String,
    /// Interface.
    pub interface: String,
    /// Message size in bytes.
    pub size: usize,
    /// The shards' idle strategy.
    pub idle: &'static str,
    /// The backend of the shards and why.
    pub backend: BackendInfo,
    /// From the first ping to the last echo; for a pong alone, from the first ping to the
    /// ping's end of session (the whole run if either did not come).
    pub elapsed: Duration,
    /// The ping side, if it ran here.
    pub ping: Option<PingReport>,
    /// The pong side, if it ran here.
    pub pong: Option<PongReport>,
}

/// `count` per second over `elapsed`; 0 for an empty interval.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Displays an integer with thousands separators: `1,234,567`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouped(pub u64);

impl fmt::Display for Grouped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        f.pad(&out)
    }
}

/// A rate per second as a grouped integer.
fn rate(count: u64, elapsed: Duration) -> Grouped {
    Grouped(per_second(count, elapsed).round() as u64)
}

/// `--rate` in words.
fn rate_setting(rate: u64) -> String {
    if rate == 0 {
        "as fast as possible".to_owned()
    } else {
        format!("{} msgs/s", Grouped(rate))
    }
}

/// Adds every counter of `more` to `total`.
pub fn add_stats(total: &mut SubscriptionStats, more: &SubscriptionStats) {
    total.merge(more);
}

/// The text lines of a subscription's counters, indented by two.
fn write_receive(
    f: &mut fmt::Formatter<'_>,
    stats: &SubscriptionStats,
    elapsed: Duration,
) -> fmt::Result {
    writeln!(
        f,
        "  {:>11} msgs/s   {:.1} MB/s",
        rate(stats.messages, elapsed),
        per_second(stats.bytes, elapsed) / 1e6,
    )?;
    write_counters(f, stats)
}

fn write_counters(f: &mut fmt::Formatter<'_>, st: &SubscriptionStats) -> fmt::Result {
    writeln!(
        f,
        "  messages {}   gaps {}   missing {}   duplicates {}   malformed {}   kernel drops {}",
        Grouped(st.messages),
        Grouped(st.gaps),
        Grouped(st.missing),
        Grouped(st.duplicates),
        Grouped(st.malformed),
        Grouped(st.kernel_drops),
    )?;
    if st.other_session + st.truncated + st.receive_errors > 0 {
        writeln!(
            f,
            "  other sessions {}   truncated {}   receive errors {}",
            Grouped(st.other_session),
            Grouped(st.truncated),
            Grouped(st.receive_errors),
        )?;
    }
    if st.requests + st.reply_foreign_source + st.reply_unasked > 0 {
        writeln!(
            f,
            "  recovered {}   requests {}   retries {}   replies {}   gaps given up {}",
            Grouped(st.recovered),
            Grouped(st.requests),
            Grouped(st.retries),
            Grouped(st.replies),
            Grouped(st.gaps_given_up),
        )?;
        if st.reply_foreign_source + st.reply_unasked > 0 {
            writeln!(
                f,
                "  replies dropped: from others {}   not asked for {}",
                Grouped(st.reply_foreign_source),
                Grouped(st.reply_unasked),
            )?;
        }
    }
    if st.foreign_source + st.suspect + st.shard_failures > 0 {
        writeln!(
            f,
            "  from other senders {}   suspect (too far ahead, unconfirmed) {}   shard failures {}",
            Grouped(st.foreign_source),
            Grouped(st.suspect),
            Grouped(st.shard_failures),
        )?;
    }
    write_shared_group(f, st)
}

/// The warning of a subscription whose group and port brought packets of another session
/// or sender: someone else publishes there too.
fn write_shared_group(f: &mut fmt::Formatter<'_>, st: &SubscriptionStats) -> fmt::Result {
    if st.other_session + st.foreign_source == 0 {
        return Ok(());
    }
    writeln!(
        f,
        "  note: another publisher shares this group and port: {} packets of other sessions \
         and {} of other senders were ignored (follow one with --session, or give each \
         stream its own --group)",
        Grouped(st.other_session),
        Grouped(st.foreign_source),
    )
}

/// The latency line, indented by two: `name  p50 ...` or `name  no samples`.
fn write_latency(f: &mut fmt::Formatter<'_>, name: &str, l: &Percentiles) -> fmt::Result {
    if l.count == 0 {
        return writeln!(f, "  {name}  no samples");
    }
    writeln!(
        f,
        "  {name}  p50 {}   p90 {}   p99 {}   p99.9 {}   p99.99 {}   max {}   (n={})",
        format_ns(l.p50),
        format_ns(l.p90),
        format_ns(l.p99),
        format_ns(l.p999),
        format_ns(l.p9999),
        format_ns(l.max),
        Grouped(l.count),
    )
}

fn write_publisher(
    f: &mut fmt::Formatter<'_>,
    p: &PublisherReport,
    elapsed: Duration,
) -> fmt::Result {
    writeln!(f, "publisher          backend {}", p.backend)?;
    writeln!(
        f,
        "  {:>11} msgs/s   messages {}   packets {}   sends {}   GSO sends {}   send errors \
         {}   backpressure {}",
        rate(p.stats.messages, elapsed),
        Grouped(p.stats.messages),
        Grouped(p.stats.packets),
        Grouped(p.stats.sends),
        Grouped(p.stats.gso_sends),
        Grouped(p.stats.send_errors),
        Grouped(p.stats.backpressure),
    )
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "multipoint {}: {} on {}, {}-byte messages, {}, {:.2} s, {} shard{}, GSO {}, idle {}",
            self.command,
            s.group,
            s.interface,
            s.size,
            rate_setting(s.rate),
            self.elapsed.as_secs_f64(),
            s.shards,
            if s.shards == 1 { "" } else { "s" },
            if s.gso { "on" } else { "off" },
            s.idle,
        )?;
        writeln!(f)?;
        write_publisher(f, &self.publisher, self.elapsed)?;
        for (i, sub) in self.subscribers.iter().enumerate() {
            writeln!(f)?;
            writeln!(
                f,
                "subscriber {} (shard {})  backend {}  session {} from {}",
                i + 1,
                sub.shard,
                sub.backend,
                sub.session.as_deref().unwrap_or("(none locked)"),
                sub.sender.as_deref().unwrap_or("(no sender locked)"),
            )?;
            write_receive(f, &sub.stats, self.elapsed)?;
            write_latency(f, "latency", &sub.latency)?;
        }
        Ok(())
    }
}

impl Report for DemoReport {
    fn to_json(&self) -> String {
        let s = &self.settings;
        let p = &self.publisher;
        let mut total = SubscriptionStats::default();
        for sub in &self.subscribers {
            add_stats(&mut total, &sub.stats);
        }
        let backend = self.subscribers.first().map_or(&p.backend, |s| &s.backend);
        // One subscriber (throughput): its figures are the run's. More (demo): what was
        // published, and each subscriber's own under `subscribers`; a sum of them would
        // pose as one subscriber's rate.
        let sent = match self.subscribers.as_slice() {
            [one] => (one.stats.messages, one.stats.bytes, one.stats.packets),
            _ => (p.stats.messages, p.stats.bytes, p.stats.packets),
        };
        let mut json = Json::object();
        json.str("command", self.command);
        summary(
            &mut json,
            backend,
            sent,
            self.elapsed,
            Some(&total),
            Some(&self.latency),
        );
        json.str("group", &s.group)
            .str("interface", &s.interface)
            .u64("size", s.size as u64)
            .u64("rate", s.rate)
            .u64("shards", s.shards as u64)
            .bool("gso", s.gso)
            .str("idle", &s.idle)
            .raw("publisher", &publisher_json(p, self.elapsed));
        let subscribers: Vec<String> = self
            .subscribers
            .iter()
            .map(|sub| {
                let mut o = Json::object();
                o.u64("shard", sub.shard as u64)
                    .str("backend", &sub.backend.kind.to_string())
                    .str("backend_reason", &sub.backend.reason)
                    .opt_str("session", sub.session.as_deref())
                    .opt_str("sender", sub.sender.as_deref());
                receive_json(&mut o, &sub.stats, self.elapsed);
                o.u64("other_session", sub.stats.other_session)
                    .u64("foreign_source", sub.stats.foreign_source);
                o.raw("latency_ns", &latency_json(Some(&sub.latency)));
                o.finish()
            })
            .collect();
        json.raw("subscribers", &Json::array(&subscribers));
        json.finish()
    }
}

impl fmt::Display for PubReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "multipoint pub: {} on {}, session {}, {}-byte messages, {}, {:.2} s",
            self.group,
            self.interface,
            self.session,
            self.size,
            rate_setting(self.rate),
            self.elapsed.as_secs_f64(),
        )?;
        writeln!(f)?;
        write_publisher(f, &self.publisher, self.elapsed)?;
        writeln!(
            f,
            "  {:.1} MB/s   heartbeats {}",
            per_second(self.publisher.stats.bytes, self.elapsed) / 1e6,
            Grouped(self.publisher.stats.heartbeats),
        )?;
        if let Some(line) = &self.line_b {
            writeln!(f, "line B             {} on {}", line.group, line.interface)?;
            writeln!(
                f,
                "  packets {}   sends {}   GSO sends {}   send errors {}",
                Grouped(line.stats.packets),
                Grouped(line.stats.sends),
                Grouped(line.stats.gso_sends),
                Grouped(line.stats.send_errors),
            )?;
        }
        write_rerequest(f, self.rerequest.as_ref(), self.stored.as_ref())?;
        if let Some(x) = &self.xdp {
            writeln!(
                f,
                "  af_xdp   frames {}   completed {}   waits for a frame {}   dropped {}   \
                 invalid (kernel) {}",
                Grouped(x.frames),
                Grouped(x.completed),
                Grouped(x.waits),
                Grouped(x.dropped),
                Grouped(x.kernel_tx_invalid),
            )?;
        }
        match &self.tx_stamps {
            Some(tx) => write!(f, "{tx}"),
            None => Ok(()),
        }
    }
}

/// The setup of an AF_XDP path as a JSON object.
fn xdp_setup_json(setup: &XdpSetup) -> String {
    let mut o = Json::object();
    o.str("interface", &setup.interface)
        .u64("queue", u64::from(setup.queue))
        .str("mode", &setup.mode)
        .opt_str("native_refused", setup.native_refused.as_deref())
        .bool("zero_copy", setup.zero_copy)
        .opt_str("copy_reason", setup.copy_reason.as_deref())
        .bool("huge_pages", setup.huge_pages)
        .opt_str("huge_pages_reason", setup.huge_pages_reason.as_deref())
        .u64("program_id", u64::from(setup.program_id))
        .bool("busy_poll", setup.busy_poll);
    o.finish()
}

/// The `xdp` object of `sub`'s JSON (`null` on the other backends).
fn xdp_recv_json(json: &mut Json, xdp: Option<&XdpStats>) {
    json.opt_object("xdp", xdp, |o, x| {
        let mut discards = Json::object();
        for &(name, n) in &x.discards {
            discards.u64(name, n);
        }
        o.raw("setup", &xdp_setup_json(&x.setup))
            .u64("frames", x.frames)
            .u64("delivered", x.delivered)
            .u64("not_subscribed", x.not_subscribed)
            .u64("invalid_descriptors", x.invalid_descriptors)
            .u64("discarded", x.discarded())
            .raw("discards", &discards.finish())
            .u64("kernel_rx_dropped", x.kernel_rx_dropped)
            .u64("kernel_rx_ring_full", x.kernel_rx_ring_full)
            .u64("kernel_fill_ring_empty", x.kernel_fill_ring_empty)
            .u64("kernel_rx_invalid", x.kernel_rx_invalid)
            .u64("program_redirected", x.program_redirected)
            .u64("program_no_socket", x.program_no_socket)
            .u64("program_not_ours", x.program_not_ours)
            .u64("program_short", x.program_short)
            .u64("program_fragment", x.program_fragment);
    });
}

/// The text of an AF_XDP receive path's counters.
fn write_xdp_recv(f: &mut fmt::Formatter<'_>, x: &XdpStats) -> fmt::Result {
    writeln!(
        f,
        "  af_xdp   frames {}   delivered {}   not subscribed {}   discarded {}   invalid \
         descriptors {}",
        Grouped(x.frames),
        Grouped(x.delivered),
        Grouped(x.not_subscribed),
        Grouped(x.discarded()),
        Grouped(x.invalid_descriptors),
    )?;
    if x.discarded() > 0 {
        f.write_str("    discarded:")?;
        for &(name, n) in x.discards.iter().filter(|&&(_, n)| n > 0) {
            write!(f, "  {name} {}", Grouped(n))?;
        }
        writeln!(f)?;
    }
    writeln!(
        f,
        "    kernel: rx dropped {}   rx ring full {}   fill ring empty {}   invalid {}",
        Grouped(x.kernel_rx_dropped),
        Grouped(x.kernel_rx_ring_full),
        Grouped(x.kernel_fill_ring_empty),
        Grouped(x.kernel_rx_invalid),
    )?;
    writeln!(
        f,
        "    program: redirected {}   no socket {}   passed: not ours {}   short {}   \
         fragment {}",
        Grouped(x.program_redirected),
        Grouped(x.program_no_socket),
        Grouped(x.program_not_ours),
        Grouped(x.program_short),
        Grouped(x.program_fragment),
    )
}

/// The text of a re-request server's counters (`pub`, `root`), and of what its store held
/// at the end; nothing without a server.
fn write_rerequest(
    f: &mut fmt::Formatter<'_>,
    rerequest: Option<&ServerStats>,
    stored: Option<&StoreStats>,
) -> fmt::Result {
    if let Some(r) = rerequest {
        writeln!(
            f,
            "re-request server  requests {}   replies {}   messages served {}   refused {}",
            Grouped(r.requests),
            Grouped(r.replies),
            Grouped(r.messages_served),
            Grouped(r.refused()),
        )?;
        if r.refused() > 0 {
            writeln!(
                f,
                "  refused: malformed {}   other session {}   sequence 0 {}   not yet sent {}   \
                 no longer stored {}   rate limited {}   bytes limited {}   requesters full {}",
                Grouped(r.malformed),
                Grouped(r.foreign_session),
                Grouped(r.sequence_zero),
                Grouped(r.not_yet_sent),
                Grouped(r.no_longer_stored),
                Grouped(r.rate_limited),
                Grouped(r.bytes_limited),
                Grouped(r.requesters_full),
            )?;
        }
    }
    if let Some(st) = stored {
        writeln!(
            f,
            "  store holds {}..{} ({} bytes), evicted {}",
            st.first,
            st.next,
            Grouped(st.stored_bytes),
            Grouped(st.evicted),
        )?;
    }
    Ok(())
}

/// The `rerequest` object of a tool's JSON (`pub`, `root`): the server's counters and
/// its store's range, or `null` without a server.
fn rerequest_json(json: &mut Json, rerequest: Option<&ServerStats>, stored: Option<&StoreStats>) {
    json.opt_object("rerequest", rerequest, |o, r| {
        o.u64("requests", r.requests)
            .u64("replies", r.replies)
            .u64("messages_served", r.messages_served)
            .u64("bytes_served", r.bytes_served)
            .u64("refused", r.refused())
            .u64("malformed", r.malformed)
            .u64("foreign_session", r.foreign_session)
            .u64("sequence_zero", r.sequence_zero)
            .u64("not_yet_sent", r.not_yet_sent)
            .u64("no_longer_stored", r.no_longer_stored)
            .u64("rate_limited", r.rate_limited)
            .u64("bytes_limited", r.bytes_limited)
            .u64("requesters_full", r.requesters_full);
        if let Some(st) = stored {
            o.u64("stored_first", st.first)
                .u64("stored_next", st.next)
                .u64("evicted", st.evicted);
        }
    });
}

impl Report for PubReport {
    fn to_json(&self) -> String {
        let mut json = Json::object();
        json.str("command", "pub");
        self.publisher.summary(&mut json, self.elapsed);
        json.str("group", &self.group)
            .str("interface", &self.interface)
            .str("session", &self.session)
            .u64("size", self.size as u64)
            .u64("rate", self.rate);
        publisher_fields(&mut json, &self.publisher.stats);
        rerequest_json(&mut json, self.rerequest.as_ref(), self.stored.as_ref());
        tx_stamps_json(&mut json, self.tx_stamps.as_ref());
        json.opt_object("xdp", self.xdp.as_ref(), |o, x| {
            o.raw("setup", &xdp_setup_json(&x.setup))
                .u64("frames", x.frames)
                .u64("completed", x.completed)
                .u64("waits", x.waits)
                .u64("dropped", x.dropped)
                .u64("kick_errors", x.kick_errors)
                .u64("kernel_tx_invalid", x.kernel_tx_invalid);
        });
        if let Some(line) = &self.line_b {
            let mut o = Json::object();
            o.str("group", &line.group)
                .str("interface", &line.interface)
                .u64("packets", line.stats.packets)
                .u64("sends", line.stats.sends)
                .u64("gso_sends", line.stats.gso_sends)
                .u64("send_errors", line.stats.send_errors);
            json.raw("line_b", &o.finish());
        }
        json.finish()
    }
}

impl fmt::Display for SubReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "multipoint sub: {} on {}", self.group, self.interface)?;
        if let Some(source) = &self.source {
            write!(f, " from {source}")?;
        }
        writeln!(
            f,
            ", session {} from {}, {:.2} s{}",
            self.session.as_deref().unwrap_or("(none locked)"),
            self.sender.as_deref().unwrap_or("(no sender locked)"),
            self.elapsed.as_secs_f64(),
            if self.received.stats.end_of_session > 0 {
                ", ended by the publisher"
            } else {
                ""
            },
        )?;
        if let Some(failure) = &self.failure {
            writeln!(f, "  the receive shard failed: {failure}")?;
        }
        writeln!(f)?;
        self.received.write(f, self.elapsed, "multipoint pub")?;
        if let Some(kernel) = &self.kernel {
            write!(f, "{kernel}")?;
        }
        if let Some(ipc) = &self.ipc {
            writeln!(
                f,
                "ipc ring           {}  writer pid {} {}\n                   lost to lapping {}  \
                 lapped {}  torn during read {}  discarded {}",
                ipc.path,
                ipc.writer_pid,
                ipc.writer,
                Grouped(ipc.lost),
                Grouped(ipc.lapped),
                Grouped(ipc.torn_during_read),
                Grouped(ipc.discarded),
            )?;
        }
        if let Some(out) = &self.published_ipc {
            writeln!(
                f,
                "published to ipc   {}  records {}  messages {}  laps {}",
                out.path,
                Grouped(out.records),
                Grouped(out.messages),
                Grouped(out.laps),
            )?;
        }
        Ok(())
    }
}

impl Report for SubReport {
    fn to_json(&self) -> String {
        let mut json = Json::object();
        json.str("command", "sub");
        self.received.summary(&mut json, self.elapsed);
        json.str("group", &self.group)
            .str("interface", &self.interface)
            .opt_str("source", self.source.as_deref())
            .opt_str("session", self.session.as_deref())
            .opt_str("sender", self.sender.as_deref())
            .opt_str("failure", self.failure.as_deref())
            .bool("ended", self.received.stats.end_of_session > 0);
        self.received.fields(&mut json);
        kernel_stamps_json(&mut json, self.kernel.as_ref());
        if let Some(ipc) = &self.ipc {
            json.str("ipc_ring", &ipc.path)
                .u64("ipc_writer_pid", ipc.writer_pid.into())
                .str("ipc_writer", &ipc.writer)
                .u64("lost_to_lapping", ipc.lost)
                .u64("lapped", ipc.lapped)
                .u64("torn_during_read", ipc.torn_during_read)
                .u64("ipc_discarded", ipc.discarded);
        }
        if let Some(out) = &self.published_ipc {
            json.str("published_ipc", &out.path)
                .u64("published_ipc_records", out.records)
                .u64("published_ipc_messages", out.messages)
                .u64("published_ipc_laps", out.laps);
        }
        json.finish()
    }
}

impl PingPongReport {
    /// Messages, bytes and packets of the summary: the echoes received by the ping side,
    /// or the pings echoed by a pong alone.
    fn totals(&self) -> (u64, u64, u64) {
        match (&self.ping, &self.pong) {
            (Some(ping), _) => (ping.round_trips, ping.stats.bytes, ping.stats.packets),
            (None, Some(pong)) => (pong.echoed, pong.stats.bytes, pong.stats.packets),
            (None, None) => (0, 0, 0),
        }
    }

    fn receive_totals(&self) -> SubscriptionStats {
        let mut total = SubscriptionStats::default();
        if let Some(ping) = &self.ping {
            add_stats(&mut total, &ping.stats);
        }
        if let Some(pong) = &self.pong {
            add_stats(&mut total, &pong.stats);
        }
        total
    }
}

impl fmt::Display for PingPongReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "multipoint pingpong ({}): pings {}, echoes {}, on {}, {}-byte messages, {:.2} s, \
             idle {}",
            self.role,
            self.group,
            self.reply_group,
            self.interface,
            self.size,
            self.elapsed.as_secs_f64(),
            self.idle,
        )?;
        writeln!(f, "backend {}", self.backend)?;
        if let Some(ping) = &self.ping {
            writeln!(f)?;
            writeln!(
                f,
                "ping   {} round trips/s   round trips {}   timeouts {}   late echoes {}   \
                 refused {}",
                rate(ping.round_trips, self.elapsed),
                Grouped(ping.round_trips),
                Grouped(ping.timeouts),
                Grouped(ping.late),
                Grouped(ping.refused),
            )?;
            write_latency(f, "round trip", &ping.rtt)?;
            write_counters(f, &ping.stats)?;
        }
        if let Some(pong) = &self.pong {
            writeln!(f)?;
            writeln!(
                f,
                "pong   echoed {}   refused {}",
                Grouped(pong.echoed),
                Grouped(pong.refused),
            )?;
            write_counters(f, &pong.stats)?;
        }
        Ok(())
    }
}

impl Report for PingPongReport {
    fn to_json(&self) -> String {
        let mut json = Json::object();
        json.str("command", "pingpong");
        let total = self.receive_totals();
        summary(
            &mut json,
            &self.backend,
            self.totals(),
            self.elapsed,
            Some(&total),
            self.ping.as_ref().map(|p| &p.rtt),
        );
        json.str("role", self.role)
            .str("group", &self.group)
            .str("reply_group", &self.reply_group)
            .str("interface", &self.interface)
            .u64("size", self.size as u64)
            .str("idle", self.idle);
        let ping = self.ping.as_ref();
        json.opt_u64("round_trips", ping.map(|p| p.round_trips))
            .opt_u64("timeouts", ping.map(|p| p.timeouts))
            .opt_u64("late_echoes", ping.map(|p| p.late))
            .opt_object("ping", ping, |o, ping| {
                o.u64("round_trips", ping.round_trips)
                    .u64("timeouts", ping.timeouts)
                    .u64("late_echoes", ping.late)
                    .u64("refused", ping.refused);
                receive_json(o, &ping.stats, self.elapsed);
                o.raw("publisher", &publisher_stats_json(&ping.publisher));
            });
        json.opt_object("pong", self.pong.as_ref(), |o, pong| {
            o.u64("echoed", pong.echoed).u64("refused", pong.refused);
            receive_json(o, &pong.stats, self.elapsed);
            o.raw("publisher", &publisher_stats_json(&pong.publisher));
        });
        json.finish()
    }
}

/// Everything `multipoint fanout` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct FanoutReport {
    /// Number of leaves.
    pub leaves: usize,
    /// Fan-out shards.
    pub shards: usize,
    /// Threads draining the leaves.
    pub receivers: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Datagram size packets are filled to.
    pub max_datagram: usize,
    /// GSO on the fan-out.
    pub gso: bool,
    /// UDP GRO on the leaves' sockets.
    pub leaf_gro: bool,
    /// The shards' idle strategy.
    pub idle: String,
    /// The backend the shards ran and why.
    pub backend: BackendInfo,
    /// The fan-out's counters when publishing stopped.
    pub stats: FanoutStats,
    /// The fan-out phase.
    pub fanout: Phase,
    /// The plain `send_to` loop, with `--baseline`.
    pub baseline: Option<Phase>,
}

impl FanoutReport {
    /// Fan-out deliveries per second over the baseline's; `None` without a baseline (or
    /// with a baseline that delivered nothing).
    pub fn ratio(&self) -> Option<f64> {
        let base = self.baseline.as_ref()?.deliveries_per_sec();
        (base > 0.0).then(|| self.fanout.deliveries_per_sec() / base)
    }
}

fn write_phase(f: &mut fmt::Formatter<'_>, name: &str, p: &Phase) -> fmt::Result {
    writeln!(
        f,
        "{name:<9} {} deliveries/s   deliveries {}   packets {}   messages {}   {:.2} s   \
         drops {}   send errors {}",
        Grouped(p.deliveries_per_sec().round() as u64),
        Grouped(p.received),
        Grouped(p.packets),
        Grouped(p.messages),
        p.elapsed.as_secs_f64(),
        Grouped(p.drops()),
        Grouped(p.send_errors),
    )
}

impl fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "multipoint fanout: {} leaves on {} shards, {}-byte messages in {}-byte datagrams, \
             GSO {}, leaf GRO {}, idle {}, {} receiver thread(s)",
            self.leaves,
            self.shards,
            self.size,
            self.max_datagram,
            if self.gso { "on" } else { "off" },
            if self.leaf_gro { "on" } else { "off" },
            self.idle,
            self.receivers,
        )?;
        writeln!(f, "backend {}", self.backend)?;
        writeln!(f)?;
        write_phase(f, "fan-out", &self.fanout)?;
        writeln!(
            f,
            "          send ops {}   GSO sends {}   backpressure {}   unrouted {}",
            Grouped(self.stats.send_ops),
            Grouped(self.stats.gso_ops),
            Grouped(self.stats.backpressure),
            Grouped(self.stats.unrouted),
        )?;
        if let Some(b) = &self.baseline {
            write_phase(f, "baseline", b)?;
        }
        if let Some(r) = self.ratio() {
            writeln!(f, "fan-out / baseline: {r:.2}x")?;
        }
        Ok(())
    }
}

impl Report for FanoutReport {
    fn to_json(&self) -> String {
        let p = &self.fanout;
        let mut json = Json::object();
        json.str("command", "fanout");
        summary(
            &mut json,
            &self.backend,
            (p.messages, p.messages * self.size as u64, p.packets),
            p.elapsed,
            None,
            None,
        );
        json.u64("leaves", self.leaves as u64)
            .u64("shards", self.shards as u64)
            .u64("receivers", self.receivers as u64)
            .u64("size", self.size as u64)
            .u64("max_datagram", self.max_datagram as u64)
            .bool("gso", self.gso)
            .bool("leaf_gro", self.leaf_gro)
            .str("idle", &self.idle)
            .u64("deliveries", p.received)
            .f64("deliveries_per_sec", p.deliveries_per_sec(), 0)
            .u64("sent", p.sent)
            .u64("drops", p.drops())
            .u64("send_errors", p.send_errors)
            .u64("send_ops", self.stats.send_ops)
            .u64("gso_ops", self.stats.gso_ops)
            .u64("backpressure", self.stats.backpressure)
            .u64("unrouted", self.stats.unrouted);
        let baseline = self.baseline.as_ref();
        json.opt_object("baseline", baseline, |o, b| {
            o.u64("messages", b.messages)
                .u64("packets", b.packets)
                .f64("secs", b.elapsed.as_secs_f64(), 3)
                .u64("deliveries", b.received)
                .f64("deliveries_per_sec", b.deliveries_per_sec(), 0)
                .u64("sent", b.sent)
                .u64("drops", b.drops())
                .u64("send_errors", b.send_errors);
        })
        .opt_f64(
            "baseline_deliveries_per_sec",
            baseline.map(Phase::deliveries_per_sec),
            0,
        )
        .opt_f64("ratio", self.ratio(), 3);
        json.finish()
    }
}

/// What a rooted root sent: a fan-out's counters (rooted-unicast) or a multicast
/// publisher's (admitted-multicast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSent {
    /// rooted-unicast: every packet went to every receiving leaf.
    Fanout(FanoutStats),
    /// admitted-multicast: every packet went once, to the group.
    Multicast(PublisherStats),
}

impl RootSent {
    /// Messages, bytes and packets offered (each counted once).
    fn totals(&self) -> (u64, u64, u64) {
        match self {
            RootSent::Fanout(st) => (st.messages, st.bytes, st.packets),
            RootSent::Multicast(st) => (st.messages, st.bytes, st.packets),
        }
    }

    /// Packet sends the kernel took for a leaf (rooted-unicast only).
    fn deliveries(&self) -> Option<u64> {
        match self {
            RootSent::Fanout(st) => Some(st.deliveries),
            RootSent::Multicast(_) => None,
        }
    }
}

/// What happened to a root's leaves over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeafCounts {
    /// Leaves admitted.
    pub joined: u64,
    /// Joins refused.
    pub refused: u64,
    /// Of those, leaves that did not prove the root's key (`--key-file`): refused with
    /// `authentication failed`.
    pub auth_failed: u64,
    /// Leaves that left (they said so, or their connection closed).
    pub left: u64,
    /// Leaves removed for silence.
    pub timed_out: u64,
    /// Leaves the root removed.
    pub removed: u64,
    /// Leaves in the session when publishing ended.
    pub at_end: u64,
}

/// What a rooted-unicast root received from sending leaves (`--uplink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UplinkReport {
    /// Leaves that joined to send.
    pub senders: u64,
    /// Messages received from them.
    pub messages: u64,
    /// Message bytes received.
    pub bytes: u64,
    /// Gaps in their streams.
    pub gaps: u64,
    /// Messages missing in those gaps.
    pub missing: u64,
}

/// Everything `multipoint root` measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootReport {
    /// `rooted-unicast` or `admitted-multicast`.
    pub transport: &'static str,
    /// Where leaves asked to join.
    pub listen: String,
    /// The address the data left from.
    pub data: String,
    /// The multicast group and interface (admitted-multicast).
    pub group: Option<(String, String)>,
    /// The session name leaves were told.
    pub session: String,
    /// Message size in bytes.
    pub size: usize,
    /// Target rate; 0 = as fast as possible.
    pub rate: u64,
    /// How long it published (from the first message to the last flush).
    pub elapsed: Duration,
    /// The backend of the fan-out or publisher, and why.
    pub backend: BackendInfo,
    /// The sending side's counters.
    pub sent: RootSent,
    /// The leaves.
    pub leaves: LeafCounts,
    /// What the control plane accepted, refused (by reason), shed and timed out.
    pub control: RootStats,
    /// Data from sending leaves, with `--uplink`.
    pub uplink: Option<UplinkReport>,
    /// What its re-request server did, with `--rerequest-server`.
    pub rerequest: Option<ServerStats>,
    /// What its retransmission store held at the end, with `--rerequest-server`.
    pub stored: Option<StoreStats>,
}

impl fmt::Display for RootReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "multipoint root: {}, session {}, listening on {}",
            self.transport, self.session, self.listen
        )?;
        match &self.group {
            Some((group, iface)) => write!(f, ", to {group} on {iface} from {}", self.data)?,
            None => write!(f, ", data from {}", self.data)?,
        }
        writeln!(
            f,
            ", {}-byte messages, {}, {:.2} s",
            self.size,
            rate_setting(self.rate),
            self.elapsed.as_secs_f64(),
        )?;
        writeln!(f, "backend {}", self.backend)?;
        writeln!(f)?;
        let (messages, bytes, packets) = self.sent.totals();
        write!(
            f,
            "root      {} msgs/s   {:.1} MB/s   messages {}   packets {}",
            rate(messages, self.elapsed),
            per_second(bytes, self.elapsed) / 1e6,
            Grouped(messages),
            Grouped(packets),
        )?;
        match &self.sent {
            RootSent::Fanout(st) => writeln!(
                f,
                "   deliveries {}   send errors {}   backpressure {}",
                Grouped(st.deliveries),
                Grouped(st.send_errors),
                Grouped(st.backpressure),
            )?,
            RootSent::Multicast(st) => writeln!(
                f,
                "   deliveries n/a (IP multicast)   send errors {}   backpressure {}",
                Grouped(st.send_errors),
                Grouped(st.backpressure),
            )?,
        }
        let l = &self.leaves;
        writeln!(
            f,
            "leaves    joined {}   refused {} (authentication failed {})   left {}   timed out \
             {}   removed {}   in the session at the end {}",
            Grouped(l.joined),
            Grouped(l.refused),
            Grouped(l.auth_failed),
            Grouped(l.left),
            Grouped(l.timed_out),
            Grouped(l.removed),
            Grouped(l.at_end),
        )?;
        let c = &self.control;
        writeln!(
            f,
            "control   connections {}   refused: over the total {}, over the per-address {}, \
             join rate {}, data address taken {}, authentication {}, session full {}, other {}   \
             shed {}   handshake timeouts {}   accept stalls {}",
            Grouped(c.accepted),
            Grouped(c.refused_max_connections),
            Grouped(c.refused_per_peer),
            Grouped(c.refused_join_rate),
            Grouped(c.refused_data_taken),
            Grouped(c.refused_auth),
            Grouped(c.refused_full),
            Grouped(c.refused_other),
            Grouped(c.shed),
            Grouped(c.handshake_timeouts),
            Grouped(c.accept_stalls),
        )?;
        if let Some(u) = &self.uplink {
            writeln!(
                f,
                "uplink    messages {} from {} sending leaf(s)   {:.1} MB   gaps {}   missing {}",
                Grouped(u.messages),
                Grouped(u.senders),
                u.bytes as f64 / 1e6,
                Grouped(u.gaps),
                Grouped(u.missing),
            )?;
        }
        write_rerequest(f, self.rerequest.as_ref(), self.stored.as_ref())
    }
}

impl Report for RootReport {
    fn to_json(&self) -> String {
        let mut json = Json::object();
        json.str("command", "root");
        summary(
            &mut json,
            &self.backend,
            self.sent.totals(),
            self.elapsed,
            None,
            None,
        );
        let l = &self.leaves;
        json.str("transport", self.transport)
            .str("listen", &self.listen)
            .str("data", &self.data)
            .opt_str("group", self.group.as_ref().map(|(g, _)| g.as_str()))
            .opt_str("interface", self.group.as_ref().map(|(_, i)| i.as_str()))
            .str("session", &self.session)
            .u64("size", self.size as u64)
            .u64("rate", self.rate)
            .u64("leaves", l.joined)
            .u64("refused", l.refused)
            .u64("auth_failed", l.auth_failed)
            .u64("left", l.left)
            .u64("timed_out", l.timed_out)
            .u64("removed", l.removed)
            .u64("leaves_at_end", l.at_end);
        json.opt_u64("deliveries", self.sent.deliveries());
        match &self.sent {
            RootSent::Fanout(st) => {
                json.u64("send_ops", st.send_ops)
                    .u64("gso_ops", st.gso_ops)
                    .u64("send_errors", st.send_errors)
                    .u64("backpressure", st.backpressure)
                    .u64("heartbeats", st.heartbeats)
                    .u64("unrouted", st.unrouted);
            }
            RootSent::Multicast(st) => {
                json.u64("send_ops", st.sends)
                    .u64("gso_ops", st.gso_sends)
                    .u64("send_errors", st.send_errors)
                    .u64("backpressure", st.backpressure)
                    .u64("heartbeats", st.heartbeats)
                    .null("unrouted");
            }
        }
        let c = &self.control;
        let mut o = Json::object();
        o.u64("accepted", c.accepted)
            .u64("refused_max_connections", c.refused_max_connections)
            .u64("refused_per_peer", c.refused_per_peer)
            .u64("refused_join_rate", c.refused_join_rate)
            .u64("refused_data_taken", c.refused_data_taken)
            .u64("refused_auth", c.refused_auth)
            .u64("refused_full", c.refused_full)
            .u64("refused_other", c.refused_other)
            .u64("shed", c.shed)
            .u64("handshake_timeouts", c.handshake_timeouts)
            .u64("accept_stalls", c.accept_stalls);
        json.raw("control", &o.finish());
        json.opt_object("uplink", self.uplink.as_ref(), |o, u| {
            o.u64("senders", u.senders)
                .u64("messages", u.messages)
                .u64("bytes", u.bytes)
                .u64("gaps", u.gaps)
                .u64("missing", u.missing);
        });
        rerequest_json(&mut json, self.rerequest.as_ref(), self.stored.as_ref());
        json.finish()
    }
}

/// How a leaf's report says the root ended the session (the control plane's usual words
/// too, which are then not repeated).
const ROOT_CLOSED: &str = "the root closed the session";

/// Why a leaf stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafEnd {
    /// `--count` messages arrived (and were sent).
    Count,
    /// `--secs` passed.
    Time,
    /// The root ended the session: end of session on the data plane, or the control
    /// plane's word (with what the root said).
    RootClosed(Option<String>),
    /// The root removed this leaf.
    Removed(String),
    /// The root went silent or its connection broke.
    RootGone(String),
    /// A signal ended the run early (SIGINT, SIGTERM).
    Interrupted(Signal),
}

impl LeafEnd {
    /// The `ended_by` JSON value.
    pub fn key(&self) -> &'static str {
        match self {
            LeafEnd::Count => "count",
            LeafEnd::Time => "secs",
            LeafEnd::RootClosed(_) => "root_closed",
            LeafEnd::Removed(_) => "removed",
            LeafEnd::RootGone(_) => "root_gone",
            LeafEnd::Interrupted(_) => "interrupted",
        }
    }

    /// What was said, if anything.
    pub fn reason(&self) -> Option<&str> {
        match self {
            LeafEnd::RootClosed(r) => r.as_deref(),
            LeafEnd::Removed(r) | LeafEnd::RootGone(r) => Some(r),
            LeafEnd::Count | LeafEnd::Time | LeafEnd::Interrupted(_) => None,
        }
    }
}

impl fmt::Display for LeafEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafEnd::Count => f.write_str("--count reached"),
            LeafEnd::Time => f.write_str("--secs passed"),
            LeafEnd::RootClosed(Some(r)) if !r.is_empty() && r != ROOT_CLOSED => {
                write!(f, "{ROOT_CLOSED}: {r}")
            }
            LeafEnd::RootClosed(_) => f.write_str(ROOT_CLOSED),
            LeafEnd::Removed(r) => write!(f, "the root removed this leaf: {r}"),
            LeafEnd::RootGone(r) => write!(f, "the root is gone: {r}"),
            LeafEnd::Interrupted(signal) => write!(f, "interrupted by {signal}"),
        }
    }
}

/// What a subscription received (`sub`, a leaf that receives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The backend of the shard and why.
    pub backend: BackendInfo,
    /// The final counters.
    pub stats: SubscriptionStats,
    /// One-way latency; `None` when the payloads carry no plausible timestamps.
    pub latency: Option<Percentiles>,
    /// The timestamps seen.
    pub stamps: Stamps,
    /// Recovery times (gap seen → filled), with recovery and once anything was
    /// recovered.
    pub recovery: Option<Percentiles>,
    /// With two lines (`--line-b`): each line, A first; empty with one.
    pub lines: Vec<LineReport>,
    /// The AF_XDP receive path, with `--backend xdp`.
    pub xdp: Option<XdpStats>,
}

/// One line of a subscription on two lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineReport {
    /// Its group and port.
    pub group: String,
    /// Its counters.
    pub stats: LineStats,
    /// How far behind the other line it ran, per packet both brought (0 when first);
    /// `None` when no packet came on both.
    pub behind: Option<Percentiles>,
}

impl Received {
    /// The text: the backend, rates and counters over `elapsed`, and the latency or why
    /// there is none (`payloads`: the tool whose timestamps were expected).
    fn write(&self, f: &mut fmt::Formatter<'_>, elapsed: Duration, payloads: &str) -> fmt::Result {
        writeln!(f, "subscriber         backend {}", self.backend)?;
        write_receive(f, &self.stats, elapsed)?;
        if let Some(x) = &self.xdp {
            write_xdp_recv(f, x)?;
        }
        if let Some(r) = &self.recovery {
            write_latency(f, "recovery", r)?;
        }
        for (name, line) in ["A", "B"].iter().zip(&self.lines) {
            let l = &line.stats;
            writeln!(
                f,
                "  line {name} {}  packets {}  wins {}  duplicates {}  gaps {} ({} alone, {} \
                 messages)  down {}{}",
                line.group,
                Grouped(l.packets),
                Grouped(l.wins),
                Grouped(l.duplicates),
                Grouped(l.gaps),
                Grouped(l.gaps_alone),
                Grouped(l.losses),
                Grouped(l.down_events),
                if l.down > 0 { " (down at the end)" } else { "" },
            )?;
            if let Some(b) = &line.behind {
                write_latency(f, "  behind", b)?;
            }
        }
        match &self.latency {
            Some(l) => write_latency(f, "latency", l),
            None if self.stamps.stamped == 0 => {
                writeln!(f, "  latency  none: no message carried a timestamp")
            }
            None => writeln!(
                f,
                "  latency  none: {} of {} timestamps implausible (not `{payloads}` payloads, \
                 or another host's clock)",
                Grouped(self.stamps.implausible),
                Grouped(self.stamps.stamped),
            ),
        }
    }

    /// The summary of a receiving tool's JSON, per second of `elapsed`.
    fn summary(&self, json: &mut Json, elapsed: Duration) {
        let st = &self.stats;
        let totals = (st.messages, st.bytes, st.packets);
        summary(
            json,
            &self.backend,
            totals,
            elapsed,
            Some(st),
            self.latency.as_ref(),
        );
    }

    /// The counters and stamps a receiving tool's JSON ends with.
    fn fields(&self, json: &mut Json) {
        let st = &self.stats;
        json.u64("recovered", st.recovered)
            .u64("requests", st.requests)
            .u64("retries", st.retries)
            .u64("replies", st.replies)
            .u64("gaps_given_up", st.gaps_given_up)
            .u64("reply_foreign_source", st.reply_foreign_source)
            .u64("reply_unasked", st.reply_unasked);
        json.raw("recovery_ns", &latency_json(self.recovery.as_ref()));
        json.raw("lines", &lines_json(&self.lines));
        xdp_recv_json(json, self.xdp.as_ref());
        json.u64("other_session", st.other_session)
            .u64("foreign_source", st.foreign_source)
            .u64("suspect", st.suspect)
            .u64("shard_failures", st.shard_failures)
            .u64("truncated", st.truncated)
            .u64("heartbeats", st.heartbeats)
            .u64("receive_errors", st.receive_errors)
            .u64("stamped", self.stamps.stamped)
            .u64("implausible_stamps", self.stamps.implausible);
    }
}

impl PublisherReport {
    /// The summary of a tool's JSON that only sent, per second of `elapsed`: the
    /// receive-side fields and latency are `null`.
    fn summary(&self, json: &mut Json, elapsed: Duration) {
        let st = &self.stats;
        let totals = (st.messages, st.bytes, st.packets);
        summary(json, &self.backend, totals, elapsed, None, None);
    }
}

/// What a leaf received and sent, by direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafFlow {
    /// It received the root's data.
    Receive(Received),
    /// It sent to the root.
    Send(PublisherReport),
    /// Both.
    Both(Received, PublisherReport),
}

impl LeafFlow {
    /// What was received, if the leaf received.
    pub fn received(&self) -> Option<&Received> {
        match self {
            LeafFlow::Receive(r) | LeafFlow::Both(r, _) => Some(r),
            LeafFlow::Send(_) => None,
        }
    }

    /// What was sent, if the leaf sent.
    pub fn sent(&self) -> Option<&PublisherReport> {
        match self {
            LeafFlow::Send(p) | LeafFlow::Both(_, p) => Some(p),
            LeafFlow::Receive(_) => None,
        }
    }
}

/// Everything `multipoint leaf` measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafReport {
    /// The name the root saw.
    pub name: String,
    /// `rooted-unicast` or `admitted-multicast`.
    pub transport: &'static str,
    /// The root's control address.
    pub root: String,
    /// The session name the root gave.
    pub session: String,
    /// `receive`, `send` or `both`.
    pub direction: &'static str,
    /// Where the data came from: the root's data address (rooted-unicast) or the group
    /// (admitted-multicast).
    pub data: String,
    /// The source joined for (admitted-multicast).
    pub source: Option<String>,
    /// Receiving: from the first message to the last one (or to the end of session), the
    /// whole run if nothing arrived. Sending only: how long it sent.
    pub elapsed: Duration,
    /// How long it sent (for leaves that send; else the whole run).
    pub send_elapsed: Duration,
    /// What moved.
    pub flow: LeafFlow,
    /// Why it stopped.
    pub end: LeafEnd,
}

impl fmt::Display for LeafReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "multipoint leaf {}: {}, root {}, session {}, {}, data {}{}, {:.2} s",
            self.name,
            self.transport,
            self.root,
            self.session,
            self.direction,
            self.data,
            match &self.source {
                Some(source) => format!(" from {source}"),
                None => String::new(),
            },
            self.elapsed.as_secs_f64(),
        )?;
        writeln!(f, "ended: {}", self.end)?;
        if let Some(r) = self.flow.received() {
            writeln!(f)?;
            r.write(f, self.elapsed, "multipoint root")?;
        }
        if let Some(p) = self.flow.sent() {
            writeln!(f)?;
            write_publisher(f, p, self.send_elapsed)?;
        }
        Ok(())
    }
}

impl Report for LeafReport {
    fn to_json(&self) -> String {
        let mut json = Json::object();
        json.str("command", "leaf");
        match &self.flow {
            LeafFlow::Receive(r) | LeafFlow::Both(r, _) => r.summary(&mut json, self.elapsed),
            LeafFlow::Send(p) => p.summary(&mut json, self.elapsed),
        }
        json.str("name", &self.name)
            .str("transport", self.transport)
            .str("root", &self.root)
            .str("session", &self.session)
            .str("direction", self.direction)
            .str("data", &self.data)
            .opt_str("source", self.source.as_deref())
            .bool(
                "ended",
                !matches!(
                    self.end,
                    LeafEnd::Count | LeafEnd::Time | LeafEnd::Interrupted(_)
                ),
            )
            .str("ended_by", self.end.key())
            .opt_str("end_reason", self.end.reason());
        if let Some(r) = self.flow.received() {
            r.fields(&mut json);
        }
        json.opt_raw(
            "sent",
            self.flow
                .sent()
                .map(|p| publisher_json(p, self.send_elapsed)),
        );
        json.finish()
    }
}

/// The summary every tool's JSON starts with ([`SUMMARY`]; see the module docs). `receive` and
/// `latency` are `None` where the tool does not measure them: their fields are `null`, as
/// is `latency_ns` when it has no sample.
fn summary(
    json: &mut Json,
    backend: &BackendInfo,
    (messages, bytes, packets): (u64, u64, u64),
    elapsed: Duration,
    receive: Option<&SubscriptionStats>,
    latency: Option<&Percentiles>,
) {
    json.str("backend", &backend.kind.to_string())
        .str("backend_reason", &backend.reason)
        .u64("messages", messages)
        .u64("bytes", bytes)
        .u64("packets", packets)
        .f64("secs", elapsed.as_secs_f64(), 3)
        .f64("msgs_per_sec", per_second(messages, elapsed), 0)
        .f64("bytes_per_sec", per_second(bytes, elapsed), 0);
    json.opt_u64("gaps", receive.map(|st| st.gaps))
        .opt_u64("missing", receive.map(|st| st.missing))
        .opt_u64("duplicates", receive.map(|st| st.duplicates))
        .opt_u64("malformed", receive.map(|st| st.malformed))
        .opt_u64("kernel_drops", receive.map(|st| st.kernel_drops));
    json.raw("latency_ns", &latency_json(latency.filter(|l| l.count > 0)));
}

/// A subscription's counters and rates.
fn receive_json(json: &mut Json, st: &SubscriptionStats, elapsed: Duration) {
    json.u64("messages", st.messages)
        .f64("msgs_per_sec", per_second(st.messages, elapsed), 0)
        .f64("bytes_per_sec", per_second(st.bytes, elapsed), 0)
        .u64("packets", st.packets)
        .u64("gaps", st.gaps)
        .u64("missing", st.missing)
        .u64("duplicates", st.duplicates)
        .u64("malformed", st.malformed)
        .u64("kernel_drops", st.kernel_drops)
        .u64("recovered", st.recovered)
        .u64("requests", st.requests)
        .u64("gaps_given_up", st.gaps_given_up);
}

/// The publisher's counters other than messages, bytes and packets.
fn publisher_fields(json: &mut Json, st: &PublisherStats) {
    json.u64("sends", st.sends)
        .u64("gso_sends", st.gso_sends)
        .u64("send_errors", st.send_errors)
        .u64("backpressure", st.backpressure)
        .u64("heartbeats", st.heartbeats);
}

/// A publisher's counters as an object of their own.
fn publisher_stats_json(st: &PublisherStats) -> String {
    let mut json = Json::object();
    json.u64("messages", st.messages)
        .u64("bytes", st.bytes)
        .u64("packets", st.packets);
    publisher_fields(&mut json, st);
    json.finish()
}

fn publisher_json(p: &PublisherReport, elapsed: Duration) -> String {
    let mut json = Json::object();
    json.str("backend", &p.backend.kind.to_string())
        .str("backend_reason", &p.backend.reason)
        .u64("messages", p.stats.messages)
        .f64("msgs_per_sec", per_second(p.stats.messages, elapsed), 0)
        .u64("bytes", p.stats.bytes)
        .u64("packets", p.stats.packets);
    publisher_fields(&mut json, &p.stats);
    json.finish()
}

/// `latency_ns`: the percentiles, or `null`.
/// The `lines` of a receiving tool's JSON: `null` with one line, else a list of two
/// objects (A, B) with `group`, the counters and `behind_us` (percentiles in µs, `null`
/// when no packet came on both lines).
fn lines_json(lines: &[LineReport]) -> String {
    if lines.is_empty() {
        return "null".to_owned();
    }
    let objects: Vec<String> = lines
        .iter()
        .map(|line| {
            let l = &line.stats;
            let mut json = Json::object();
            json.str("group", &line.group)
                .u64("packets", l.packets)
                .u64("wins", l.wins)
                .u64("duplicates", l.duplicates)
                .u64("gaps", l.gaps)
                .u64("losses", l.losses)
                .u64("gaps_alone", l.gaps_alone)
                .u64("down_events", l.down_events)
                .bool("down", l.down > 0)
                .opt_object("behind_us", line.behind.as_ref(), |p, b| {
                    let us = |ns: u64| ns as f64 / 1_000.0;
                    p.u64("count", b.count)
                        .f64("p50", us(b.p50), 1)
                        .f64("p90", us(b.p90), 1)
                        .f64("p99", us(b.p99), 1)
                        .f64("p999", us(b.p999), 1)
                        .f64("max", us(b.max), 1);
                });
            json.finish()
        })
        .collect();
    Json::array(&objects)
}

fn latency_json(latency: Option<&Percentiles>) -> String {
    let Some(l) = latency else {
        return "null".to_owned();
    };
    let mut json = Json::object();
    json.u64("count", l.count)
        .u64("p50", l.p50)
        .u64("p90", l.p90)
        .u64("p99", l.p99)
        .u64("p999", l.p999)
        .u64("p9999", l.p9999)
        .u64("max", l.max)
        .u64("min", l.min)
        .u64("mean", l.mean);
    json.finish()
}

/// A JSON object under construction, written straight into a string.
#[derive(Debug)]
pub(crate) struct Json {
    out: String,
}

impl Json {
    pub(crate) fn object() -> Json {
        Json {
            out: String::from("{"),
        }
    }

    pub(crate) fn key(&mut self, key: &str) -> &mut String {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_str_literal(&mut self.out, key);
        self.out.push(':');
        &mut self.out
    }

    pub(crate) fn raw(&mut self, key: &str, json: &str) -> &mut Json {
        self.key(key).push_str(json);
        self
    }

    /// `json` under `key`, or `null`.
    pub(crate) fn opt_raw(&mut self, key: &str, json: Option<String>) -> &mut Json {
        match json {
            Some(json) => self.raw(key, &json),
            None => self.null(key),
        }
    }

    /// Under `key`, the object that `write` makes of `value`, or `null` without one.
    pub(crate) fn opt_object<T>(
        &mut self,
        key: &str,
        value: Option<T>,
        write: impl FnOnce(&mut Json, T),
    ) -> &mut Json {
        let object = value.map(|value| {
            let mut o = Json::object();
            write(&mut o, value);
            o.finish()
        });
        self.opt_raw(key, object)
    }

    /// A JSON array of `items`, each already JSON.
    pub(crate) fn array(items: &[String]) -> String {
        format!("[{}]", items.join(","))
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Json {
        push_str_literal(self.key(key), value);
        self
    }

    pub(crate) fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Json {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    pub(crate) fn u64(&mut self, key: &str, value: u64) -> &mut Json {
        // Writing to a String cannot fail.
        let _ = write!(self.key(key), "{value}");
        self
    }

    pub(crate) fn opt_u64(&mut self, key: &str, value: Option<u64>) -> &mut Json {
        match value {
            Some(v) => self.u64(key, v),
            None => self.null(key),
        }
    }

    /// A number with `decimals` decimals; `null` if it is not finite.
    pub(crate) fn f64(&mut self, key: &str, value: f64, decimals: usize) -> &mut Json {
        let out = self.key(key);
        if value.is_finite() {
            let _ = write!(out, "{value:.decimals$}");
        } else {
            out.push_str("null");
        }
        self
    }

    /// [`Json::f64`], or `null` without a value.
    pub(crate) fn opt_f64(&mut self, key: &str, value: Option<f64>, decimals: usize) -> &mut Json {
        match value {
            Some(v) => self.f64(key, v, decimals),
            None => self.null(key),
        }
    }

    pub(crate) fn bool(&mut self, key: &str, value: bool) -> &mut Json {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    pub(crate) fn null(&mut self, key: &str) -> &mut Json {
        self.key(key).push_str("null");
        self
    }

    pub(crate) fn finish(&mut self) -> String {
        self.out.push('}');
        std::mem::take(&mut self.out)
    }
}

/// Appends `s` as a JSON string literal, quotes included.
fn push_str_literal(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use multipoint_dataplane::BackendKind;

    use super::*;

    fn backend() -> BackendInfo {
        BackendInfo {
            kind: BackendKind::Mmsg,
            reason: "forced by \"configuration\"".into(),
        }
    }

    fn latency() -> Percentiles {
        Percentiles {
            count: 2_000_000,
            p50: 10_240,
            p9999: 1_300_000,
            max: 2_000_000,
            ..Percentiles::default()
        }
    }

    fn report() -> DemoReport {
        let sub = SubscriberReport {
            shard: 1,
            backend: backend(),
            stats: SubscriptionStats {
                messages: 2_000_000,
                bytes: 128_000_000,
                gaps: 1,
                ..SubscriptionStats::default()
            },
            latency: latency(),
            session: Some("MP42".into()),
            sender: Some("127.0.0.1:40000".into()),
        };
        DemoReport {
            command: "demo",
            settings: Settings {
                group: "239.255.0.1:31001".into(),
                interface: "127.0.0.1".into(),
                size: 64,
                rate: 1_000_000,
                shards: 2,
                gso: true,
                idle: "block".into(),
            },
            elapsed: Duration::from_secs(2),
            publisher: PublisherReport {
                backend: backend(),
                stats: PublisherStats {
                    messages: 2_000_000,
                    ..PublisherStats::default()
                },
            },
            subscribers: vec![sub.clone(), sub],
            latency: latency(),
        }
    }

    /// `pub`'s report of `stats` over 500 ms on one line, without the options' extras.
    fn pub_report(stats: PublisherStats) -> PubReport {
        PubReport {
            group: "239.255.0.1:31001".into(),
            interface: "127.0.0.1".into(),
            session: "MP1".into(),
            size: 64,
            rate: 0,
            elapsed: Duration::from_millis(500),
            publisher: PublisherReport {
                backend: backend(),
                stats,
            },
            rerequest: None,
            stored: None,
            line_b: None,
            tx_stamps: None,
            xdp: None,
        }
    }

    /// What a subscription on one line received: `stats` and `stamps`, without latency
    /// or recovery.
    fn received(stats: SubscriptionStats, stamps: Stamps) -> Received {
        Received {
            xdp: None,
            backend: backend(),
            stats,
            latency: None,
            recovery: None,
            lines: Vec::new(),
            stamps,
        }
    }

    /// `sub`'s report of `received` on `group` and `interface` over a second, locked
    /// onto no session, without the options' extras.
    fn sub_report(group: &str, interface: &str, received: Received) -> SubReport {
        SubReport {
            group: group.into(),
            interface: interface.into(),
            source: None,
            session: None,
            sender: None,
            failure: None,
            elapsed: Duration::from_secs(1),
            received,
            kernel: None,
            ipc: None,
            published_ipc: None,
        }
    }

    fn parse_keys(json: &str) -> Vec<String> {
        // The top-level keys, in order: enough of a parser for objects this module writes.
        let mut keys = Vec::new();
        let (mut depth, mut in_str, mut escaped, mut start) = (0, false, false, None);
        for (i, c) in json.char_indices() {
            if in_str {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        in_str = false;
                        if depth == 1 && json[i + 1..].starts_with(':') {
                            keys.push(json[start.unwrap()..i].to_owned());
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => {
                    in_str = true;
                    start = Some(i + 1);
                }
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                _ => {}
            }
        }
        assert_eq!(depth, 0, "unbalanced: {json}");
        keys
    }

    fn assert_summary(json: &str) {
        let keys = parse_keys(json);
        assert_eq!(&keys[..SUMMARY.len()], &SUMMARY[..], "{json}");
    }

    /// `report`'s JSON, checked to start with the summary ([`assert_summary`]).
    fn json_with_summary(report: &impl Report) -> String {
        let json = report.to_json();
        assert_summary(&json);
        json
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(Grouped(0).to_string(), "0");
        assert_eq!(Grouped(999).to_string(), "999");
        assert_eq!(Grouped(1_000).to_string(), "1,000");
        assert_eq!(Grouped(1_234_567).to_string(), "1,234,567");
        assert_eq!(format!("{:>7}", Grouped(1_000)), "  1,000");
    }

    #[test]
    fn the_text_report_shows_rates_counters_and_percentiles() {
        let text = report().to_string();
        assert!(text.starts_with("multipoint demo: "), "{text}");
        assert!(text.contains("1,000,000 msgs/s   64.0 MB/s"), "{text}");
        assert!(text.contains("kernel drops 0"), "{text}");
        assert!(text.contains("p50 10.2µs"), "{text}");
        assert!(text.contains("p99.99 1.30ms"), "{text}");
        assert!(
            text.contains("subscriber 2 (shard 1)  backend mmsg"),
            "{text}"
        );
    }

    #[test]
    fn the_json_report_is_one_line_with_the_summary_first() {
        let json = report().to_json();
        assert!(!json.contains('\n'));
        assert_summary(&json);
        assert!(
            json.starts_with("{\"command\":\"demo\",\"backend\":\"mmsg\""),
            "{json}"
        );
        assert!(json.ends_with("]}"), "{json}");
        assert!(
            json.contains("\"backend_reason\":\"forced by \\\"configuration\\\"\""),
            "{json}"
        );
        // The summary's rate is the publisher's (not the subscribers' added up); each
        // subscriber has its own; the losses are totals.
        assert!(json.contains("\"messages\":2000000,"), "{json}");
        assert!(json.contains("\"msgs_per_sec\":1000000,"), "{json}");
        assert!(!json.contains("\"messages\":4000000"), "{json}");
        assert!(json.contains("\"gaps\":2,"), "{json}");
        assert_eq!(
            json.matches("\"msgs_per_sec\":1000000,").count(),
            4,
            "{json}"
        );
        assert_eq!(json.matches("\"session\":\"MP42\"").count(), 2, "{json}");
        assert!(
            json.contains(
                "\"latency_ns\":{\"count\":2000000,\"p50\":10240,\"p90\":0,\"p99\":0,\
                 \"p999\":0,\"p9999\":1300000,\"max\":2000000,\"min\":0,\"mean\":0}"
            ),
            "{json}"
        );
        assert_eq!(json.matches("\"shard\":1").count(), 2);
        assert!(
            json.contains("\"publisher\":{\"backend\":\"mmsg\""),
            "{json}"
        );
    }

    #[test]
    fn a_publisher_has_no_receive_figures() {
        let report = pub_report(PublisherStats {
            messages: 1_000,
            bytes: 64_000,
            packets: 50,
            ..PublisherStats::default()
        });
        let json = json_with_summary(&report);
        assert!(json.contains("\"gaps\":null,"), "{json}");
        assert!(json.contains("\"latency_ns\":null,"), "{json}");
        assert!(json.contains("\"msgs_per_sec\":2000,"), "{json}");
        assert!(!json.contains("line_b"), "no line B asked for: {json}");
        assert!(report.to_string().contains("as fast as possible"));
    }

    #[test]
    fn a_publisher_on_two_lines_reports_line_b_apart() {
        let report = PubReport {
            line_b: Some(LineBReport {
                group: "239.255.0.2:31002".into(),
                interface: "lo".into(),
                stats: LineSendStats {
                    packets: 50,
                    sends: 12,
                    gso_sends: 9,
                    send_errors: 3,
                },
            }),
            ..pub_report(PublisherStats {
                messages: 1_000,
                packets: 50,
                sends: 10,
                ..PublisherStats::default()
            })
        };
        let json = json_with_summary(&report);
        assert!(
            json.ends_with(
                ",\"line_b\":{\"group\":\"239.255.0.2:31002\",\"interface\":\"lo\",\
                 \"packets\":50,\"sends\":12,\"gso_sends\":9,\"send_errors\":3}}"
            ),
            "{json}"
        );
        assert!(json.contains("\"sends\":10,"), "line A's own: {json}");
        let text = report.to_string();
        assert!(
            text.contains("line B             239.255.0.2:31002 on lo"),
            "{text}"
        );
        assert!(text.contains("GSO sends 9   send errors 3"), "{text}");
    }

    #[test]
    fn a_subscriber_without_timestamps_has_null_latency() {
        let received = received(
            SubscriptionStats {
                messages: 10,
                end_of_session: 1,
                ..SubscriptionStats::default()
            },
            Stamps {
                stamped: 10,
                implausible: 10,
            },
        );
        let report = SubReport {
            session: Some("FEED1".into()),
            sender: Some("127.0.0.1:40000".into()),
            ..sub_report("239.255.0.1:31001", "127.0.0.1", received)
        };
        let json = json_with_summary(&report);
        assert!(json.contains("\"latency_ns\":null,"), "{json}");
        assert!(
            json.contains(
                "\"source\":null,\"session\":\"FEED1\",\"sender\":\"127.0.0.1:40000\",\
                 \"failure\":null,\"ended\":true"
            ),
            "{json}"
        );
        assert!(
            json.contains("\"foreign_source\":0,\"suspect\":0,"),
            "{json}"
        );
        let text = report.to_string();
        assert!(text.contains("10 of 10 timestamps implausible"), "{text}");
        assert!(text.contains("ended by the publisher"), "{text}");
        assert!(json.contains("\"lines\":null,"), "one line: {json}");
    }

    #[test]
    fn a_subscriber_on_two_lines_reports_each_line() {
        let line = |group: &str, wins, behind| LineReport {
            group: group.into(),
            stats: LineStats {
                packets: 100,
                wins,
                duplicates: 100 - wins,
                gaps: 2,
                losses: 3,
                gaps_alone: 1,
                down_events: 1,
                down: 0,
            },
            behind,
        };
        let received = Received {
            lines: vec![
                line("239.1.1.1:1000", 70, None),
                line("239.1.1.2:1000", 30, Some(latency())),
            ],
            ..received(
                SubscriptionStats {
                    messages: 10,
                    ..SubscriptionStats::default()
                },
                Stamps::default(),
            )
        };
        let mut json = Json::object();
        received.fields(&mut json);
        let json = json.finish();
        assert!(
            json.contains(
                "\"lines\":[{\"group\":\"239.1.1.1:1000\",\"packets\":100,\"wins\":70,\
                 \"duplicates\":30,\"gaps\":2,\"losses\":3,\"gaps_alone\":1,\
                 \"down_events\":1,\"down\":false,\"behind_us\":null},{\"group\":\
                 \"239.1.1.2:1000\""
            ),
            "{json}"
        );
        assert!(
            json.contains("\"behind_us\":{\"count\":2000000,\"p50\":10.2,"),
            "{json}"
        );
        let report = sub_report("239.1.1.1:1000", "lo", received);
        let text = report.to_string();
        assert!(
            text.contains("line B 239.1.1.2:1000  packets 100  wins 30  duplicates 70"),
            "{text}"
        );
        assert!(
            text.contains("gaps 2 (1 alone, 3 messages)  down 1"),
            "{text}"
        );
    }

    #[test]
    fn pingpong_reports_round_trips_and_both_sides() {
        let report = PingPongReport {
            role: "both",
            group: "239.255.0.1:31011".into(),
            reply_group: "239.255.0.1:31012".into(),
            interface: "127.0.0.1".into(),
            size: 32,
            idle: "block",
            backend: backend(),
            elapsed: Duration::from_secs(2),
            ping: Some(PingReport {
                round_trips: 40_000,
                timeouts: 1,
                late: 0,
                refused: 0,
                rtt: latency(),
                stats: SubscriptionStats {
                    messages: 40_000,
                    kernel_drops: 1,
                    ..SubscriptionStats::default()
                },
                publisher: PublisherStats::default(),
            }),
            pong: Some(PongReport {
                echoed: 40_001,
                refused: 0,
                stats: SubscriptionStats {
                    messages: 40_001,
                    kernel_drops: 2,
                    ..SubscriptionStats::default()
                },
                publisher: PublisherStats::default(),
            }),
        };
        let json = json_with_summary(&report);
        assert!(json.contains("\"messages\":40000,"), "{json}");
        assert!(json.contains("\"msgs_per_sec\":20000,"), "{json}");
        assert!(json.contains("\"kernel_drops\":3,"), "{json}");
        assert!(json.contains("\"timeouts\":1,"), "{json}");
        assert!(json.contains("\"pong\":{\"echoed\":40001"), "{json}");
        let text = report.to_string();
        assert!(text.contains("20,000 round trips/s"), "{text}");
        assert!(text.contains("round trip  p50 10.2µs"), "{text}");

        let pong_only = PingPongReport {
            role: "pong",
            ping: None,
            ..report
        };
        let json = json_with_summary(&pong_only);
        assert!(json.contains("\"messages\":40001,"), "{json}");
        assert!(json.contains("\"latency_ns\":null,"), "{json}");
    }

    #[test]
    fn a_root_reports_leaves_and_deliveries_and_null_receive_figures() {
        let mut report = RootReport {
            transport: "rooted-unicast",
            listen: "127.0.0.1:7000".into(),
            data: "127.0.0.1:7001".into(),
            group: None,
            session: "MP1".into(),
            size: 64,
            rate: 1_000,
            elapsed: Duration::from_secs(2),
            backend: backend(),
            sent: RootSent::Fanout(FanoutStats {
                messages: 2_000,
                bytes: 128_000,
                packets: 100,
                deliveries: 200,
                ..FanoutStats::default()
            }),
            leaves: LeafCounts {
                joined: 2,
                refused: 1,
                at_end: 2,
                ..LeafCounts::default()
            },
            control: RootStats {
                accepted: 9,
                refused_per_peer: 4,
                refused_data_taken: 3,
                ..RootStats::default()
            },
            uplink: None,
            rerequest: None,
            stored: None,
        };
        let json = json_with_summary(&report);
        assert!(json.starts_with("{\"command\":\"root\""), "{json}");
        for part in [
            "\"messages\":2000,",
            "\"packets\":100,",
            "\"msgs_per_sec\":1000,",
            "\"gaps\":null,",
            "\"latency_ns\":null,",
            "\"leaves\":2,",
            "\"refused\":1,",
            "\"deliveries\":200,",
            "\"group\":null,",
            "\"control\":{\"accepted\":9,\"refused_max_connections\":0,\"refused_per_peer\":4,\
             \"refused_join_rate\":0,\"refused_data_taken\":3,",
            "\"uplink\":null",
            "\"rerequest\":null",
        ] {
            assert!(json.contains(part), "no {part}: {json}");
        }
        let text = report.to_string();
        assert!(text.contains("deliveries 200"), "{text}");
        assert!(text.contains("joined 2   refused 1"), "{text}");
        assert!(
            text.contains("over the per-address 4, join rate 0, data address taken 3,"),
            "{text}"
        );

        report.sent = RootSent::Multicast(PublisherStats {
            messages: 2_000,
            ..PublisherStats::default()
        });
        report.group = Some(("239.254.0.1:5000".into(), "127.0.0.1".into()));
        report.uplink = Some(UplinkReport {
            senders: 1,
            messages: 5,
            ..UplinkReport::default()
        });
        let json = json_with_summary(&report);
        assert!(json.contains("\"deliveries\":null,"), "{json}");
        assert!(json.contains("\"group\":\"239.254.0.1:5000\""), "{json}");
        assert!(
            json.contains("\"uplink\":{\"senders\":1,\"messages\":5"),
            "{json}"
        );
        assert!(report.to_string().contains("deliveries n/a"));

        // With --rerequest-server: the server's counters, as pub has them.
        report.rerequest = Some(ServerStats {
            requests: 7,
            replies: 5,
            messages_served: 40,
            rate_limited: 2,
            ..ServerStats::default()
        });
        let json = json_with_summary(&report);
        assert!(
            json.contains("\"rerequest\":{\"requests\":7,\"replies\":5,\"messages_served\":40,"),
            "{json}"
        );
        assert!(json.contains("\"rate_limited\":2,"), "{json}");
        let text = report.to_string();
        assert!(
            text.contains("re-request server  requests 7   replies 5   messages served 40"),
            "{text}"
        );
        assert!(text.contains("rate limited 2"), "{text}");
    }

    #[test]
    fn a_leaf_reports_like_sub_and_why_it_ended() {
        let received = Received {
            latency: Some(latency()),
            ..received(
                SubscriptionStats {
                    messages: 1_000,
                    end_of_session: 1,
                    ..SubscriptionStats::default()
                },
                Stamps {
                    stamped: 1_000,
                    implausible: 0,
                },
            )
        };
        let mut report = LeafReport {
            name: "alice".into(),
            transport: "rooted-unicast",
            root: "127.0.0.1:7000".into(),
            session: "MP1".into(),
            direction: "receive",
            data: "127.0.0.1:7001".into(),
            source: None,
            elapsed: Duration::from_secs(1),
            send_elapsed: Duration::from_secs(1),
            flow: LeafFlow::Receive(received.clone()),
            end: LeafEnd::RootClosed(Some("the root closed the session".into())),
        };
        let json = json_with_summary(&report);
        assert!(json.starts_with("{\"command\":\"leaf\""), "{json}");
        assert!(json.contains("\"messages\":1000,"), "{json}");
        assert!(json.contains("\"gaps\":0,"), "{json}");
        assert!(json.contains("\"ended_by\":\"root_closed\""), "{json}");
        assert!(json.contains("\"source\":null,"), "{json}");
        assert!(json.ends_with("\"sent\":null}"), "{json}");
        let text = report.to_string();
        assert!(
            text.contains("ended: the root closed the session\n"),
            "{text}"
        );

        let publisher = PublisherReport {
            backend: backend(),
            stats: PublisherStats {
                messages: 500,
                ..PublisherStats::default()
            },
        };
        report.flow = LeafFlow::Send(publisher.clone());
        report.end = LeafEnd::Removed("bye".into());
        let json = json_with_summary(&report);
        assert!(json.contains("\"messages\":500,"), "{json}");
        assert!(json.contains("\"gaps\":null,"), "{json}");
        assert!(json.contains("\"end_reason\":\"bye\""), "{json}");
        assert!(json.contains("\"sent\":{\"backend\""), "{json}");

        report.flow = LeafFlow::Both(received, publisher);
        report.end = LeafEnd::Count;
        let json = report.to_json();
        assert!(json.contains("\"messages\":1000,"), "{json}");
        assert!(json.contains("\"ended\":false,"), "{json}");
        assert!(json.contains("\"end_reason\":null,"), "{json}");
        assert!(report.to_string().contains("publisher"));
    }

    #[test]
    fn control_characters_are_escaped_in_json() {
        let mut out = String::new();
        push_str_literal(&mut out, "a\u{1}b\\");
        assert_eq!(out, "\"a\\u0001b\\\\\"");
        let mut json = Json::object();
        json.f64("x", f64::NAN, 0).bool("y", true);
        assert_eq!(json.finish(), "{\"x\":null,\"y\":true}");
    }
}
