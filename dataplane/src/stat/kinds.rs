//! What each kind of object writes into its entry: the kind's name, its counters' names
//! (those of its stats struct, as the tool's JSON names them) and values, and the entries
//! of a subscription (its own, and one per line with two lines).

use super::{register, Cadence, Entry, Histogram};
use crate::core::lines::LineStats;
use crate::core::receive::ReceiveState;
use crate::core::server::ServerStats;
use crate::fanout::FanoutStats;
#[cfg(not(loom))]
use crate::ipc::{IpcReaderStats, IpcWriterStats};
use crate::publisher::LineSendStats;
use crate::stats::{PublisherStats, SubscriptionStats};

/// A stats struct written into an entry.
pub(crate) trait Counters {
    /// The entry's kind.
    const KIND: &'static str;
    /// The counters' names, in the order [`publish`](Counters::publish) writes them.
    const NAMES: &'static [&'static str];
    /// Writes the values into `entry`.
    fn publish(&self, entry: &Entry);

    /// Registers an entry of this kind (see [`register`]).
    fn register(name: &str, detail: &str) -> Option<Entry> {
        register(Self::KIND, name, detail, Self::NAMES)
    }
}

/// Implements [`Counters`] for a struct of `u64` fields, the names being the fields'.
/// The list must name every field (the struct is destructured whole): a counter added to
/// a stats struct is a build error here until `multipoint stat` shows it too.
///
/// With `merge`, it also writes the struct's public `merge`, which adds every field of
/// another (to total several objects of the kind).
macro_rules! counters {
    ($ty:ident, $kind:literal, merge, [$($field:ident),* $(,)?]) => {
        counters!($ty, $kind, [$($field),*]);

        impl $ty {
            /// Adds `other`'s counters to these (to total several).
            pub fn merge(&mut self, other: &$ty) {
                let $ty { $($field),* } = *other;
                $(self.$field += $field;)*
            }
        }
    };
    ($ty:ident, $kind:literal, [$($field:ident),* $(,)?]) => {
        impl Counters for $ty {
            const KIND: &'static str = $kind;
            const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];
            #[inline]
            fn publish(&self, entry: &Entry) {
                let $ty { $($field),* } = *self;
                entry.publish(&[$($field),*]);
            }
        }
    };
}

counters!(
    SubscriptionStats,
    "subscription",
    merge,
    [
        messages,
        bytes,
        packets,
        datagrams,
        gaps,
        missing,
        duplicates,
        other_session,
        malformed,
        truncated,
        rearms,
        kernel_drops,
        gro_batches,
        heartbeats,
        end_of_session,
        receive_errors,
        reordered,
        foreign_source,
        suspect,
        shard_failures,
        requests,
        retries,
        replies,
        recovered,
        gaps_given_up,
        reply_foreign_source,
        reply_unasked,
        ended,
    ]
);

counters!(
    PublisherStats,
    "publisher",
    [
        messages,
        bytes,
        packets,
        sends,
        gso_sends,
        send_errors,
        heartbeats,
        backpressure
    ]
);

counters!(
    LineStats,
    "line",
    [
        packets,
        wins,
        duplicates,
        gaps,
        losses,
        gaps_alone,
        down_events,
        down
    ]
);

counters!(
    LineSendStats,
    "line",
    [packets, sends, gso_sends, send_errors]
);

counters!(
    FanoutStats,
    "fanout",
    [
        messages,
        bytes,
        packets,
        unrouted,
        deliveries,
        send_ops,
        gso_ops,
        send_errors,
        leaves,
        heartbeats,
        backpressure,
        buffers_in_use,
    ]
);

#[cfg(not(loom))]
counters!(
    IpcReaderStats,
    "ipc_reader",
    [
        messages,
        events,
        lost,
        lapped,
        torn_during_read,
        discarded,
        requests,
        retries,
        replies,
        recovered,
        gaps_given_up,
        reply_foreign,
        reply_unasked,
    ]
);

#[cfg(not(loom))]
impl Counters for IpcWriterStats {
    const KIND: &'static str = "ipc_writer";
    const NAMES: &'static [&'static str] = &["records", "messages", "bytes", "laps", "too_large"];

    #[inline]
    fn publish(&self, entry: &Entry) {
        // The capacity is the entry's detail, not a counter.
        let IpcWriterStats {
            capacity: _,
            records,
            messages,
            bytes,
            laps,
            too_large,
        } = *self;
        entry.publish(&[records, messages, bytes, laps, too_large]);
    }
}

impl Counters for ServerStats {
    const KIND: &'static str = "rerequest_server";
    const NAMES: &'static [&'static str] = &[
        "requests",
        "replies",
        "messages_served",
        "bytes_served",
        "refused",
        "malformed",
        "foreign_session",
        "sequence_zero",
        "not_yet_sent",
        "no_longer_stored",
        "rate_limited",
        "bytes_limited",
        "requesters_full",
        "too_large",
        "reply_errors",
        "receive_errors",
    ];

    fn publish(&self, entry: &Entry) {
        entry.publish(&[
            self.requests,
            self.replies,
            self.messages_served,
            self.bytes_served,
            self.refused(),
            self.malformed,
            self.foreign_session,
            self.sequence_zero,
            self.not_yet_sent,
            self.no_longer_stored,
            self.rate_limited,
            self.bytes_limited,
            self.requesters_full,
            self.too_large,
            self.reply_errors,
            self.receive_errors,
        ]);
    }
}

/// A fan-out leaf's counters.
pub(crate) const LEAF_KIND: &str = "leaf";
/// Their names, in the order written.
pub(crate) const LEAF_NAMES: &[&str] = &["deliveries", "send_errors"];

/// The entries of one subscription: its own (with the `end_to_end` histogram, attached
/// to the receive state's), and each line's with two lines. Written by its shard.
#[derive(Debug)]
pub(crate) struct SubscriptionEntries {
    entry: Option<Entry>,
    lines: [Option<Entry>; 2],
    /// Whether the entry has its session's name (learned at the lock).
    named: bool,
}

impl SubscriptionEntries {
    /// Registers the entries of a subscription to `group` (and `line_b`), following
    /// `session` if it names one; attaches the end-to-end histogram to `state`'s.
    pub(crate) fn register(
        state: &mut ReceiveState,
        session: Option<&str>,
        group: &str,
        line_b: Option<&str>,
    ) -> SubscriptionEntries {
        let name = session.unwrap_or("");
        let entry = SubscriptionStats::register(name, group);
        if let Some(h) = entry.as_ref().and_then(|e| e.add_histogram("end_to_end")) {
            state.mirror_latency(h);
        }
        if state.kernel_latency().is_some() {
            if let Some(h) = entry.as_ref().and_then(|e| e.add_histogram("wire_to_app")) {
                state.mirror_kernel_latency(h);
            }
        }
        let lines = match line_b {
            Some(b) => [
                LineStats::register(name, &format!("A {group}")),
                LineStats::register(name, &format!("B {b}")),
            ],
            None => [None, None],
        };
        SubscriptionEntries {
            entry,
            lines,
            named: session.is_some(),
        }
    }

    /// Writes `state`'s counters (and its lines') into the entries, and its session's
    /// name once it locked.
    pub(crate) fn publish(&mut self, state: &ReceiveState) {
        let Some(entry) = &self.entry else { return };
        state.stats().publish(entry);
        if let Some(lines) = state.line_stats() {
            for (line, stats) in self.lines.iter().zip(lines) {
                if let Some(e) = line {
                    stats.publish(e);
                }
            }
        }
        if !self.named {
            if let Some(session) = state.session() {
                let name = session.to_string();
                entry.rename(&name);
                for e in self.lines.iter().flatten() {
                    e.rename(&name);
                }
                self.named = true;
            }
        }
    }
}

/// The entries of a sender (a publisher, a fan-out root): its own, and line B's with two
/// lines; written by its owner's thread at most once per clock tick ([`Cadence`]) and
/// at the end.
#[derive(Debug, Default)]
pub(crate) struct SenderEntries {
    own: Option<Entry>,
    line_b: Option<Entry>,
    cadence: Cadence,
}

impl SenderEntries {
    /// Registers the entries of a `C` named `name` sending to `detail` (and line B's to
    /// `line_b`).
    pub(crate) fn register<C: Counters>(
        name: &str,
        detail: &str,
        line_b: Option<&str>,
    ) -> SenderEntries {
        let own = C::register(name, detail);
        let line_b = match (&own, line_b) {
            (Some(_), Some(b)) => LineSendStats::register(name, &format!("B {b}")),
            _ => None,
        };
        SenderEntries {
            own,
            line_b,
            cadence: Cadence::default(),
        }
    }

    /// Adds a histogram to the sender's own entry (attach it with
    /// [`LatencyHistogram::mirror_to`](crate::latency::LatencyHistogram::mirror_to)).
    pub(crate) fn add_histogram(&self, name: &str) -> Option<Histogram> {
        self.own.as_ref()?.add_histogram(name)
    }

    /// Whether the counters are due to be written (the clock ticked since last time).
    #[inline]
    pub(crate) fn due(&mut self) -> bool {
        self.own.is_some() && self.cadence.due()
    }

    /// Writes the counters, now.
    pub(crate) fn publish(&self, own: &impl Counters, line_b: Option<LineSendStats>) {
        if let Some(entry) = &self.own {
            own.publish(entry);
        }
        if let (Some(entry), Some(stats)) = (&self.line_b, line_b) {
            stats.publish(entry);
        }
    }
}
