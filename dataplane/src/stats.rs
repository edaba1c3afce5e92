//! Counters: written by the one thread that owns a publisher or subscription, readable
//! from any thread at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter with a single writer. Increments are a relaxed load and store (no locked
/// instruction on the hot path); readers see a recent value.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        // Single writer: a load and a store cannot lose an update.
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The live counters of one subscription. The shard writes them for every packet and
/// other threads read them: aligned to 128 bytes (two cache lines, the unit the adjacent-line
/// prefetcher moves) so that no neighbouring allocation, such as a publisher's buffers made
/// by the same thread, shares a line with them.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct SubscriptionCounters {
    pub(crate) packets: Counter,
    pub(crate) datagrams: Counter,
    pub(crate) messages: Counter,
    pub(crate) bytes: Counter,
    pub(crate) gaps: Counter,
    pub(crate) missing: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) other_session: Counter,
    pub(crate) malformed: Counter,
    pub(crate) truncated: Counter,
    pub(crate) rearms: Counter,
    pub(crate) kernel_drops: Counter,
    pub(crate) gro_batches: Counter,
    pub(crate) heartbeats: Counter,
    pub(crate) end_of_session: Counter,
    pub(crate) receive_errors: Counter,
    pub(crate) reordered: Counter,
    pub(crate) foreign_source: Counter,
    pub(crate) suspect: Counter,
    pub(crate) shard_failures: Counter,
    pub(crate) requests: Counter,
    pub(crate) retries: Counter,
    pub(crate) replies: Counter,
    pub(crate) recovered: Counter,
    pub(crate) gaps_given_up: Counter,
    pub(crate) reply_foreign_source: Counter,
    pub(crate) reply_unasked: Counter,
    pub(crate) ended: Counter,
}

/// A snapshot of one subscription's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// MoldUDP64 packets taken in (after splitting coalesced GRO datagrams), on both
    /// lines when there are two.
    pub packets: u64,
    /// Receive completions (one per datagram, or per GRO batch of datagrams).
    pub datagrams: u64,
    /// Messages handed to the handler.
    pub messages: u64,
    /// Message bytes handed to the handler (not counting framing).
    pub bytes: u64,
    /// Gaps detected in the sequence.
    pub gaps: u64,
    /// Messages missing in those gaps.
    pub missing: u64,
    /// Messages that arrived again and were not handed over again. With two lines, the
    /// other line's copies are not counted here but per line
    /// ([`LineStats::duplicates`](crate::core::lines::LineStats::duplicates)).
    pub duplicates: u64,
    /// Packets of another MoldUDP64 session, ignored.
    pub other_session: u64,
    /// Datagrams that are not valid MoldUDP64, skipped.
    pub malformed: u64,
    /// Datagrams longer than the receive buffer, cut off and skipped.
    pub truncated: u64,
    /// Times the receive had to be re-armed (multishot ended, e.g. ENOBUFS).
    pub rearms: u64,
    /// Datagrams the kernel dropped because the socket's receive buffer was full
    /// (`SO_RXQ_OVFL`).
    pub kernel_drops: u64,
    /// Receive completions that carried more than one datagram (UDP GRO).
    pub gro_batches: u64,
    /// Heartbeats seen.
    pub heartbeats: u64,
    /// End-of-session packets seen.
    pub end_of_session: u64,
    /// Receives the kernel failed (other than running out of buffers).
    pub receive_errors: u64,
    /// Packets that arrived ahead of a missing one and waited for it in the reorder
    /// window (0 without one).
    pub reordered: u64,
    /// Packets of the session followed (before the lock: of any session) from a sender
    /// the stream is not bound to, ignored.
    pub foreign_source: u64,
    /// Packets of the bound sender that pointed too far ahead (beyond the sequence
    /// window, or an end of session elsewhere than at the next expected number) and were
    /// never confirmed, dropped.
    pub suspect: u64,
    /// 1 when the shard serving the subscription failed and stopped receiving for it (see
    /// [`Subscription::failure`](crate::Subscription::failure)); summed over several.
    pub shard_failures: u64,
    /// Re-requests sent to the server (first asks, not retries).
    pub requests: u64,
    /// Re-requests sent again because the one before was not answered in time.
    pub retries: u64,
    /// Replies of the server that answered a request still out.
    pub replies: u64,
    /// Missing messages that came late and were delivered (by reply, or straggling in on the stream); counted in `messages` too.
    pub recovered: u64,
    /// Missing ranges given up with recovery: not recovered by their deadline (or no room to track them); their messages are in `missing`.
    pub gaps_given_up: u64,
    /// Datagrams on the request socket from anyone but the server, dropped.
    pub reply_foreign_source: u64,
    /// Packets from the server that answer nothing asked for (or no longer out: a late or repeated reply), dropped.
    pub reply_unasked: u64,
    /// 1 once the handler heard the end of session (with recovery, once it was done recovering what the end found missing); summed over several.
    pub ended: u64,
}

impl SubscriptionCounters {
    pub(crate) fn snapshot(&self) -> SubscriptionStats {
        SubscriptionStats {
            packets: self.packets.get(),
            datagrams: self.datagrams.get(),
            messages: self.messages.get(),
            bytes: self.bytes.get(),
            gaps: self.gaps.get(),
            missing: self.missing.get(),
            duplicates: self.duplicates.get(),
            other_session: self.other_session.get(),
            malformed: self.malformed.get(),
            truncated: self.truncated.get(),
            rearms: self.rearms.get(),
            kernel_drops: self.kernel_drops.get(),
            gro_batches: self.gro_batches.get(),
            heartbeats: self.heartbeats.get(),
            end_of_session: self.end_of_session.get(),
            receive_errors: self.receive_errors.get(),
            reordered: self.reordered.get(),
            foreign_source: self.foreign_source.get(),
            suspect: self.suspect.get(),
            shard_failures: self.shard_failures.get(),
            requests: self.requests.get(),
            retries: self.retries.get(),
            replies: self.replies.get(),
            recovered: self.recovered.get(),
            gaps_given_up: self.gaps_given_up.get(),
            reply_foreign_source: self.reply_foreign_source.get(),
            reply_unasked: self.reply_unasked.get(),
            ended: self.ended.get(),
        }
    }
}

/// A snapshot of a publisher's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Messages accepted by `offer`.
    pub messages: u64,
    /// Message bytes accepted.
    pub bytes: u64,
    /// Packets handed to the kernel (data, heartbeats and end of session).
    pub packets: u64,
    /// Send operations (system calls or SQEs): one per packet, or one per GSO run.
    pub sends: u64,
    /// Send operations that carried several packets as one GSO send.
    pub gso_sends: u64,
    /// Packets whose send failed (subscribers will see the gap).
    pub send_errors: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Offers refused because every packet buffer was in flight (an `offer_wait` or
    /// `offer_async` that had to wait for room counts once, however long it waited).
    pub backpressure: u64,
}
