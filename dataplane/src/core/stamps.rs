//! The kernel's share of latency, decided without I/O: what a kernel timestamp
//! (`SO_TIMESTAMPING`) is worth once the backend has read it.
//!
//! - **wire→application** ([`KernelLatency`]): a subscription with
//!   [`KernelStamps`] on gets the kernel's receive stamp of each
//!   datagram (`CLOCK_REALTIME`, taken when the kernel took the packet in) and the
//!   `CLOCK_REALTIME` reading of its shard just before the datagram's messages go to the
//!   handler. The difference is recorded once per delivered message (every message of a
//!   GRO-coalesced datagram gets that datagram's one stamp; messages delivered later from
//!   a hold — a reorder window, in-order recovery, a reply — get none). A negative
//!   difference (the realtime clock was stepped) is recorded as 0 and counted.
//! - **send→wire** ([`TxSampler`]): a publisher with TX stamps samples one send in N. For
//!   each sampled send, [`handle_submitted`](TxSampler::handle_submitted) records the
//!   `CLOCK_REALTIME` reading at submission under the key the kernel will report back;
//!   [`handle_stamp`](TxSampler::handle_stamp) matches the kernel's stamp from the error
//!   queue to it and records the difference; [`poll_expired`](TxSampler::poll_expired)
//!   gives up on samples whose stamp never came. At most
//!   [`TxStampConfig::max_outstanding`] samples wait at once; a send due for sampling
//!   while that many wait is not sampled (counted).
//!
//! Call order for the sampler: per send, [`poll_sample`](TxSampler::poll_sample) (which
//! says whether to ask the kernel for a stamp, and under which key), then
//! `handle_submitted(key, now)` once the send is handed to the kernel; whenever the error
//! queue gives stamps, `handle_stamp(key, stamp)`; now and then `poll_expired(now)`.
//! Times are nanoseconds of `CLOCK_REALTIME`. Nothing here allocates after construction
//! or panics.

use std::time::Duration;

use crate::latency::LatencyHistogram;

/// Whether a subscription records wire→application latency from kernel receive stamps
/// ([`SubscriptionConfig::kernel_stamps`](crate::SubscriptionConfig::kernel_stamps)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KernelStamps {
    /// No stamps: the receive path is what it was (one flag check per datagram).
    #[default]
    Off,
    /// Software receive stamps (`SOF_TIMESTAMPING_RX_SOFTWARE`), `CLOCK_REALTIME`, taken
    /// when the kernel took the packet in (on a real NIC, in the driver's receive path;
    /// on loopback, as the sender's packet is looped back). The interface is still asked
    /// about hardware stamping, for the report.
    Software,
    /// Hardware receive stamps where the NIC has them: the interface is queried
    /// (`ETHTOOL_GET_TS_INFO`) and, if it can, told to stamp every packet
    /// (`SIOCSHWTSTAMP`, needs `CAP_NET_ADMIN`, and changes the interface for the whole
    /// host). Hardware stamps are in the NIC's clock: compared with `CLOCK_REALTIME` they
    /// mean something only when that clock is synchronised to it (phc2sys). Where the NIC
    /// cannot, software stamps as with `Software`.
    Hardware,
}

/// The counters of a subscription's wire→application measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxStampStats {
    /// Datagrams that carried a usable kernel receive stamp.
    pub stamped: u64,
    /// Datagrams that carried none (the kernel did not stamp them, or the stamp's control
    /// message was not there).
    pub unstamped: u64,
    /// Stamps later than the handler's clock (the realtime clock stepped back), recorded
    /// as 0.
    pub negative: u64,
    /// `SCM_TIMESTAMPING` control messages too short or holding an impossible time,
    /// ignored.
    pub malformed: u64,
    /// Receives whose control messages did not fit (`MSG_CTRUNC`); those datagrams are
    /// counted as `truncated` in the subscription's counters too.
    pub control_truncated: u64,
}

/// A subscription's wire→application latency: from the kernel's receive stamp to the
/// handler (see the module docs). Empty unless
/// [`SubscriptionConfig::kernel_stamps`](crate::SubscriptionConfig::kernel_stamps) is on.
#[derive(Debug, Clone, Default)]
pub struct KernelLatency {
    /// Kernel receive stamp → handler, one sample per delivered message.
    pub wire_to_app: LatencyHistogram,
    /// What happened to the stamps.
    pub stats: RxStampStats,
    /// What the query of the interface's hardware timestamping said (empty when
    /// software stamps were asked for, or for a socket given by the caller).
    pub hardware: String,
}

impl KernelLatency {
    /// Adds `other`'s samples and counters to these (to total several subscriptions).
    pub fn merge(&mut self, other: &KernelLatency) {
        self.wire_to_app.merge(&other.wire_to_app);
        let s = &mut self.stats;
        let o = &other.stats;
        s.stamped += o.stamped;
        s.unstamped += o.unstamped;
        s.negative += o.negative;
        s.malformed += o.malformed;
        s.control_truncated += o.control_truncated;
        if self.hardware.is_empty() {
            self.hardware.clone_from(&other.hardware);
        }
    }
}

/// What the backend read about one datagram's kernel receive stamp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxStamp {
    /// The kernel's receive stamp, nanoseconds of `CLOCK_REALTIME` (software; or the
    /// hardware stamp when hardware stamping was enabled), if one came.
    pub wire_ns: Option<u64>,
    /// `CLOCK_REALTIME` read just before the datagram's messages go to the handler (0
    /// when stamps are off).
    pub app_ns: u64,
    /// An `SCM_TIMESTAMPING` control message was there but could not be read.
    pub malformed: bool,
    /// The control messages did not fit (`MSG_CTRUNC`).
    pub control_truncated: bool,
}

/// The receive state's side of wire→application: one datagram's stamp turned into a
/// latency, then recorded for each message delivered from it.
#[derive(Debug, Default)]
pub(crate) struct RxStamps {
    pub(crate) latency: Box<KernelLatency>,
}

impl RxStamps {
    /// Takes in one datagram's stamp; returns the latency its messages get, if any.
    pub(crate) fn handle_datagram(&mut self, stamp: &RxStamp) -> Option<u64> {
        let s = &mut self.latency.stats;
        if stamp.control_truncated {
            s.control_truncated += 1;
        }
        if stamp.malformed {
            s.malformed += 1;
        }
        match stamp.wire_ns {
            Some(wire) => {
                s.stamped += 1;
                Some(match stamp.app_ns.checked_sub(wire) {
                    Some(ns) => ns,
                    None => {
                        s.negative += 1;
                        0
                    }
                })
            }
            None => {
                s.unstamped += 1;
                None
            }
        }
    }

    /// Records `messages` delivered messages of latency `ns`.
    pub(crate) fn record(&mut self, ns: u64, messages: u64) {
        self.latency.wire_to_app.record_n(ns, messages);
    }
}

/// How a publisher samples its sends for send→wire stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxStampConfig {
    /// Sample one send in this many (1: every send); the first send is sampled.
    pub every: u32,
    /// Most samples waiting for their stamp at once.
    pub max_outstanding: usize,
    /// How long a sample waits for its stamp before it is given up (counted as expired).
    pub expiry: Duration,
}

impl TxStampConfig {
    /// One send in `every`, at most 64 waiting, given up after a second.
    pub fn every(every: u32) -> TxStampConfig {
        TxStampConfig {
            every: every.max(1),
            max_outstanding: 64,
            expiry: Duration::from_secs(1),
        }
    }
}

/// The counters of a publisher's send→wire measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxStampStats {
    /// Sends seen by the sampler (datagrams or GSO sends).
    pub sends: u64,
    /// Sends that asked the kernel for a stamp.
    pub sampled: u64,
    /// Stamps matched to their send and recorded.
    pub recorded: u64,
    /// Samples given up: their stamp did not come within the expiry (the send failed,
    /// or the kernel dropped the stamp).
    pub expired: u64,
    /// Sends due for sampling while `max_outstanding` samples waited, not sampled.
    pub skipped: u64,
    /// Stamps whose key matched no waiting sample (late after expiry, or repeated).
    pub unmatched: u64,
    /// Stamps earlier than their submission time (the realtime clock stepped), recorded
    /// as 0.
    pub negative: u64,
}

/// A publisher's send→wire latency (see the module docs). Empty unless
/// [`PublisherConfig::tx_stamp_every`](crate::PublisherConfig::tx_stamp_every) is set.
#[derive(Debug, Clone, Default)]
pub struct SendLatency {
    /// Submission → the kernel's software transmit stamp, one sample per sampled send.
    pub send_to_wire: LatencyHistogram,
    /// What happened to the samples.
    pub stats: TxStampStats,
}

/// Samples sends and matches their transmit stamps (see the module docs).
#[derive(Debug)]
pub struct TxSampler {
    config: TxStampConfig,
    /// Sends to go before the next sample (0: the next send is sampled).
    countdown: u32,
    /// The key the next sample gets.
    next_key: u32,
    /// Waiting samples: key and submission time (capacity reserved up front).
    waiting: Vec<(u32, u64)>,
    latency: SendLatency,
}

impl TxSampler {
    /// A sampler for `config`; the first send is sampled.
    pub fn new(config: TxStampConfig) -> TxSampler {
        let config = TxStampConfig {
            every: config.every.max(1),
            max_outstanding: config.max_outstanding.max(1),
            ..config
        };
        TxSampler {
            config,
            countdown: 0,
            next_key: 0,
            waiting: Vec::with_capacity(config.max_outstanding),
            latency: SendLatency::default(),
        }
    }

    /// One send is about to leave: `Some(key)` if it is to carry a stamp request, under
    /// that key (0, 1, 2, … in the order of sampled sends, as the kernel's
    /// `SOF_TIMESTAMPING_OPT_ID` counter numbers them).
    pub fn poll_sample(&mut self) -> Option<u32> {
        self.latency.stats.sends += 1;
        if self.countdown > 0 {
            self.countdown -= 1;
            return None;
        }
        self.countdown = self.config.every - 1;
        if self.waiting.len() >= self.config.max_outstanding {
            self.latency.stats.skipped += 1;
            return None;
        }
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1);
        self.latency.stats.sampled += 1;
        Some(key)
    }

    /// The send sampled under `key` was handed to the kernel at `now_ns`.
    pub fn handle_submitted(&mut self, key: u32, now_ns: u64) {
        if self.waiting.len() < self.config.max_outstanding {
            self.waiting.push((key, now_ns));
        }
    }

    /// The kernel stamped the send of `key` at `stamp_ns`; returns the latency recorded,
    /// or `None` when no sample waits under that key.
    pub fn handle_stamp(&mut self, key: u32, stamp_ns: u64) -> Option<u64> {
        let Some(at) = self.waiting.iter().position(|&(k, _)| k == key) else {
            self.latency.stats.unmatched += 1;
            return None;
        };
        let (_, submitted) = self.waiting.swap_remove(at);
        let ns = match stamp_ns.checked_sub(submitted) {
            Some(ns) => ns,
            None => {
                self.latency.stats.negative += 1;
                0
            }
        };
        self.latency.send_to_wire.record(ns);
        self.latency.stats.recorded += 1;
        Some(ns)
    }

    /// Gives up the samples submitted more than the expiry before `now_ns`; returns how
    /// many.
    pub fn poll_expired(&mut self, now_ns: u64) -> usize {
        let expiry = u64::try_from(self.config.expiry.as_nanos()).unwrap_or(u64::MAX);
        let before = self.waiting.len();
        self.waiting
            .retain(|&(_, submitted)| now_ns.saturating_sub(submitted) <= expiry);
        let expired = before - self.waiting.len();
        self.latency.stats.expired += expired as u64;
        expired
    }

    /// Gives up every waiting sample (the publisher closes); returns how many.
    pub fn expire_all(&mut self) -> usize {
        let n = self.waiting.len();
        self.waiting.clear();
        self.latency.stats.expired += n as u64;
        n
    }

    /// Samples waiting for their stamp.
    pub fn outstanding(&self) -> usize {
        self.waiting.len()
    }

    /// The latency and counters so far.
    pub fn latency(&self) -> &SendLatency {
        &self.latency
    }

    /// Counts every send→wire latency recorded from now on in `mirror` too, a histogram
    /// of the counters file ([`crate::stat`]).
    pub(crate) fn mirror_to(&mut self, mirror: crate::stat::Histogram) {
        self.latency.send_to_wire.mirror_to(mirror);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake realtime clock: nanoseconds that only the test moves.
    struct Clock(u64);

    fn sampler(every: u32, max: usize) -> TxSampler {
        TxSampler::new(TxStampConfig {
            every,
            max_outstanding: max,
            expiry: Duration::from_millis(10),
        })
    }

    #[test]
    fn one_send_in_n_is_sampled_starting_with_the_first() {
        let mut s = sampler(4, 64);
        let keys: Vec<Option<u32>> = (0..10).map(|_| s.poll_sample()).collect();
        assert_eq!(
            keys,
            [
                Some(0),
                None,
                None,
                None,
                Some(1),
                None,
                None,
                None,
                Some(2),
                None
            ]
        );
        assert_eq!(s.latency().stats.sends, 10);
        assert_eq!(s.latency().stats.sampled, 3, "ceil(10 / 4)");
    }

    #[test]
    fn a_stamp_is_matched_by_its_key_and_records_the_time_from_submission() {
        let mut clock = Clock(1_000_000);
        let mut s = sampler(1, 64);
        let a = s.poll_sample().unwrap();
        s.handle_submitted(a, clock.0);
        clock.0 += 500;
        let b = s.poll_sample().unwrap();
        s.handle_submitted(b, clock.0);
        // The kernel reports them out of order.
        assert_eq!(s.handle_stamp(b, clock.0 + 2_000), Some(2_000));
        assert_eq!(s.handle_stamp(a, clock.0 + 3_000), Some(3_500));
        assert_eq!(s.handle_stamp(a, clock.0 + 4_000), None, "only once");
        let l = s.latency();
        assert_eq!(l.send_to_wire.len(), 2);
        assert_eq!((l.stats.recorded, l.stats.unmatched), (2, 1));
        assert_eq!(s.outstanding(), 0);
    }

    #[test]
    fn a_stamp_before_its_submission_is_recorded_as_zero_and_counted() {
        let mut s = sampler(1, 64);
        let k = s.poll_sample().unwrap();
        s.handle_submitted(k, 10_000);
        assert_eq!(s.handle_stamp(k, 9_000), Some(0));
        assert_eq!(s.latency().stats.negative, 1);
        assert_eq!(s.latency().send_to_wire.len(), 1);
    }

    #[test]
    fn a_sample_whose_stamp_never_comes_expires_after_the_expiry_not_before() {
        let mut clock = Clock(0);
        let mut s = sampler(1, 64);
        let k = s.poll_sample().unwrap();
        s.handle_submitted(k, clock.0);
        clock.0 += 10_000_000;
        assert_eq!(
            s.poll_expired(clock.0),
            0,
            "exactly at the expiry it still waits"
        );
        clock.0 += 1;
        assert_eq!(s.poll_expired(clock.0), 1);
        assert_eq!(s.latency().stats.expired, 1);
        assert_eq!(s.handle_stamp(k, clock.0), None, "too late: unmatched");
        assert_eq!(s.latency().stats.unmatched, 1);
    }

    #[test]
    fn with_every_place_taken_a_due_send_is_skipped_and_counted_not_queued() {
        let mut s = sampler(1, 2);
        for now in 0..2 {
            let k = s.poll_sample().unwrap();
            s.handle_submitted(k, now);
        }
        assert_eq!(s.poll_sample(), None);
        assert_eq!(s.latency().stats.skipped, 1);
        assert_eq!(s.outstanding(), 2);
        // Once a stamp came, sampling goes on with the next key.
        assert!(s.handle_stamp(0, 5).is_some());
        assert_eq!(s.poll_sample(), Some(2));
        let st = s.latency().stats;
        assert_eq!(st.sampled + st.skipped, st.sends);
    }

    #[test]
    fn a_datagram_stamp_becomes_a_latency_clamped_at_zero_and_counted() {
        let mut rx = RxStamps::default();
        let on_time = RxStamp {
            wire_ns: Some(1_000),
            app_ns: 4_000,
            ..RxStamp::default()
        };
        assert_eq!(rx.handle_datagram(&on_time), Some(3_000));
        let stepped = RxStamp {
            wire_ns: Some(5_000),
            app_ns: 4_000,
            ..RxStamp::default()
        };
        assert_eq!(rx.handle_datagram(&stepped), Some(0));
        let broken = RxStamp {
            malformed: true,
            control_truncated: true,
            ..RxStamp::default()
        };
        assert_eq!(rx.handle_datagram(&broken), None);
        let s = rx.latency.stats;
        assert_eq!(
            (
                s.stamped,
                s.unstamped,
                s.negative,
                s.malformed,
                s.control_truncated
            ),
            (2, 1, 1, 1, 1)
        );
    }
}
