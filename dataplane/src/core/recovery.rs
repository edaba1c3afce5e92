//! Recovering lost messages by MoldUDP64 re-request (sans-IO): the subscriber's side.
//!
//! A receive state with [`ReceiveConfig::recovery`](crate::core::receive::ReceiveConfig)
//! keeps a book of what its stream is missing — ranges of sequence numbers, each with the
//! time it was seen missing, its deadline and what was asked of the server about it — and
//! decides what to ask and when. It owns no socket and reads no clock: the receive state
//! tells the book of gaps, of messages that came and of the server's replies
//! ([`ReceiveState::handle_reply`](crate::core::receive::ReceiveState::handle_reply)); the
//! driver takes the requests to send from
//! [`ReceiveState::poll_transmit`](crate::core::receive::ReceiveState::poll_transmit) and
//! wakes it at [`ReceiveState::poll_timeout`](crate::core::receive::ReceiveState::poll_timeout);
//! ranges whose deadline passed are given up and reported to the handler as lost for
//! good ([`Handler::on_gap`](crate::core::receive::Handler::on_gap)).
//!
//! # How it asks
//!
//! - A new gap is asked for after a random delay of up to
//!   [`RecoveryConfig::delay`], so that many subscribers that lost the same packet do
//!   not all ask at once, and a packet merely reordered on the way arrives before anyone
//!   asks for it.
//! - A gap larger than one reply holds is split into requests of about one packet's worth
//!   of messages (as many as the stream's packets carry on average), and up to
//!   [`RecoveryConfig::max_in_flight`] requests are out at once, over all gaps.
//! - A reply that holds fewer messages than were asked for (the rest did not fit its
//!   datagram) makes the rest be asked for at once; that is a new request, not a retry.
//! - A request not answered within the retransmission timeout is asked again (a retry),
//!   with the timeout doubled for each further attempt. The timeout adapts to the reply
//!   times measured on first attempts (smoothed round-trip time plus four times its
//!   variation, as TCP does, RFC 6298), between [`RecoveryConfig::min_timeout`] and a
//!   quarter of the deadline.
//! - A range still missing at its deadline ([`RecoveryConfig::deadline`] after it was
//!   seen missing) is given up: the receive state reports it lost for good.
//! - A reply counts only when it answers a range that was asked for and is still out:
//!   its first message lies in the asked range and it does not run past it. Where it
//!   came from is for the receive state to check (the server asked, and no one else).
//!
//! Room is allocated up front ([`RecoveryConfig::max_gaps`] ranges); a gap that finds no
//! room is given up at once, and so is the rest of a range that a fill would have split
//! with no room left. Nothing here allocates after construction or panics.

use std::net::SocketAddr;
use std::time::Duration;

use crate::latency::LatencyHistogram;
use crate::wire::{ReRequestRepr, Session, MAX_MESSAGE_COUNT, REREQUEST_LEN};

/// How a subscription recovers lost messages (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// The publisher's re-request server: requests go there, and only its replies count.
    pub server: SocketAddr,
    /// How long a missing range is asked for before it is given up and reported lost
    /// (default 100 ms).
    pub deadline: Duration,
    /// Deliver in order: messages after a gap wait (bounded by
    /// [`hold_bytes`](Self::hold_bytes)) until it is filled or given up. `false`, the
    /// default: as they come (live messages at once, recovered ones when they arrive,
    /// through [`Handler::on_recovered`](crate::core::receive::Handler::on_recovered)).
    pub in_order: bool,
    /// In order: the most bytes of packets held back behind gaps (default 32 MiB); when
    /// full, the oldest gap is given up at once.
    pub hold_bytes: usize,
    /// The longest random wait before a new gap is asked for (default 250 µs).
    pub delay: Duration,
    /// Most requests out at once (default 64).
    pub max_in_flight: usize,
    /// The retransmission timeout before any reply time was measured (default 5 ms).
    pub initial_timeout: Duration,
    /// The shortest retransmission timeout (default 500 µs).
    pub min_timeout: Duration,
    /// Most missing ranges tracked at once (default 4,096).
    pub max_gaps: usize,
    /// Seed of the random delays; 0 (the default): a random seed.
    pub seed: u64,
}

impl RecoveryConfig {
    /// Defaults for the server at `server` (see each field).
    pub fn new(server: SocketAddr) -> RecoveryConfig {
        RecoveryConfig {
            server,
            deadline: Duration::from_millis(100),
            in_order: false,
            hold_bytes: 32 << 20,
            delay: Duration::from_micros(250),
            max_in_flight: 64,
            initial_timeout: Duration::from_millis(5),
            min_timeout: Duration::from_micros(500),
            max_gaps: 4096,
            seed: 0,
        }
    }
}

/// Where a missing range stands with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// Not asked (or to be asked again) from `at` on.
    Waiting { at: u64 },
    /// Asked for `first..end` at `sent` (attempt `attempts`), to be asked again at
    /// `timeout`.
    Out {
        first: u64,
        end: u64,
        sent: u64,
        timeout: u64,
        attempts: u32,
    },
}

/// A run of missing sequence numbers, `first..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Missing {
    first: u64,
    end: u64,
    /// When it was seen missing.
    seen: u64,
    /// When it is given up.
    deadline: u64,
    ask: Ask,
}

/// What a [`Recovery`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecoveryCounts {
    pub(crate) requests: u64,
    pub(crate) retries: u64,
}

/// The subscriber's book of missing ranges and requests. See the module docs.
#[derive(Debug)]
pub(crate) struct Recovery {
    config: RecoveryConfig,
    deadline_ns: u64,
    delay_ns: u64,
    min_timeout_ns: u64,
    max_timeout_ns: u64,
    /// The missing ranges, by increasing first number, disjoint (capacity reserved).
    missing: Vec<Missing>,
    /// Smoothed reply time and its variation (ns); 0: nothing measured yet.
    srtt: u64,
    rttvar: u64,
    /// The retransmission timeout now (ns).
    rto: u64,
    /// Messages and data packets seen on the stream, for the size of a request.
    seen_messages: u64,
    seen_packets: u64,
    rng: fastrand::Rng,
    counts: RecoveryCounts,
    /// Gap seen → gap filled, per missing range (ns).
    times: Box<LatencyHistogram>,
}

/// Nanoseconds of `d`, saturating.
fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Recovery {
    /// An empty book for `config`.
    pub(crate) fn new(config: &RecoveryConfig) -> Recovery {
        let deadline_ns = ns(config.deadline).max(1);
        let min_timeout_ns = ns(config.min_timeout).max(1);
        let max_timeout_ns = (deadline_ns / 4).max(min_timeout_ns);
        let rng = match config.seed {
            0 => fastrand::Rng::new(),
            seed => fastrand::Rng::with_seed(seed),
        };
        // Room beyond max_gaps for the splits of ranges into requests (at most one per
        // request out) and of fills in the middle of ranges.
        let slots = 2 * config.max_gaps.max(1) + config.max_in_flight.max(1);
        Recovery {
            config: *config,
            deadline_ns,
            delay_ns: ns(config.delay),
            min_timeout_ns,
            max_timeout_ns,
            missing: Vec::with_capacity(slots + 1),
            srtt: 0,
            rttvar: 0,
            rto: ns(config.initial_timeout).clamp(min_timeout_ns, max_timeout_ns),
            seen_messages: 0,
            seen_packets: 0,
            rng,
            counts: RecoveryCounts::default(),
            times: Box::new(LatencyHistogram::new()),
        }
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    /// Whether nothing is missing.
    pub(crate) fn is_empty(&self) -> bool {
        self.missing.is_empty()
    }

    /// What was counted.
    pub(crate) fn counts(&self) -> RecoveryCounts {
        self.counts
    }

    /// The retransmission timeout now.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_nanos(self.rto)
    }

    /// Recovery times so far (gap seen → gap filled).
    pub(crate) fn times(&self) -> &LatencyHistogram {
        &self.times
    }

    /// A data packet of `messages` messages was seen on the stream (for the size of a
    /// request: about one packet's worth).
    pub(crate) fn note_packet(&mut self, messages: u16) {
        self.seen_messages = self.seen_messages.saturating_add(u64::from(messages));
        self.seen_packets = self.seen_packets.saturating_add(1);
    }

    /// Messages per request: what the stream's packets carry on average.
    fn per_request(&self) -> u64 {
        (self.seen_messages / self.seen_packets.max(1)).clamp(1, u64::from(MAX_MESSAGE_COUNT))
    }

    /// Whether `sequence` is missing.
    pub(crate) fn contains(&self, sequence: u64) -> bool {
        let i = self.missing.partition_point(|m| m.end <= sequence);
        self.missing.get(i).is_some_and(|m| m.first <= sequence)
    }

    /// Whether any of `first..end` is missing.
    pub(crate) fn overlaps(&self, first: u64, end: u64) -> bool {
        let i = self.missing.partition_point(|m| m.end <= first);
        self.missing.get(i).is_some_and(|m| m.first < end)
    }

    /// How many of `first..end` are missing.
    #[cfg(test)]
    pub(crate) fn count_missing(&self, first: u64, end: u64) -> u64 {
        let i = self.missing.partition_point(|m| m.end <= first);
        self.missing[i..]
            .iter()
            .take_while(|m| m.first < end)
            .map(|m| m.end.min(end) - m.first.max(first))
            .sum()
    }

    /// `first..end` was seen missing at `now`: it will be asked for. Returns `false`
    /// (and tracks nothing) when there is no room, or the range is empty or overlaps
    /// one already tracked: the caller gives it up.
    pub(crate) fn add(&mut self, first: u64, end: u64, now: u64) -> bool {
        if first >= end || self.missing.len() >= self.config.max_gaps.max(1) {
            return false;
        }
        let at = self.missing.partition_point(|m| m.end <= first);
        if self.missing.get(at).is_some_and(|m| m.first < end) {
            return false;
        }
        let wait = if self.delay_ns == 0 {
            0
        } else {
            self.rng.u64(0..=self.delay_ns)
        };
        self.missing.insert(
            at,
            Missing {
                first,
                end,
                seen: now,
                deadline: now.saturating_add(self.deadline_ns),
                ask: Ask::Waiting {
                    at: now.saturating_add(wait),
                },
            },
        );
        true
    }

    /// Messages `first..end` came (by reply, or late on the stream) at `now`: they are no
    /// longer missing. A range emptied records its recovery time. Returns how many were
    /// missing; `give_up` hears any part that could not be kept for want of room (a fill
    /// in the middle of a range splits it).
    pub(crate) fn fill(
        &mut self,
        first: u64,
        end: u64,
        now: u64,
        give_up: &mut impl FnMut(u64, u64),
    ) -> u64 {
        self.cut(first, end, Some(now), give_up)
    }

    /// Stops tracking `first..end` without recording a recovery (the receive state gave
    /// it up itself).
    pub(crate) fn forget(&mut self, first: u64, end: u64) {
        self.cut(first, end, None, &mut |_, _| {});
    }

    /// Takes `first..end` out of the book; returns how many of it were missing. A range
    /// emptied records its recovery time at `recovered` (if given); `give_up` hears the
    /// right part of a range cut in the middle when there is no room to keep it.
    fn cut(
        &mut self,
        first: u64,
        end: u64,
        recovered: Option<u64>,
        give_up: &mut impl FnMut(u64, u64),
    ) -> u64 {
        let mut cut = 0;
        let mut i = self.missing.partition_point(|m| m.end <= first);
        while let Some(m) = self.missing.get(i).copied() {
            if m.first >= end {
                break;
            }
            let (lo, hi) = (m.first.max(first), m.end.min(end));
            cut += hi - lo;
            match (m.first < lo, hi < m.end) {
                (false, false) => {
                    if let Some(now) = recovered {
                        self.times.record(now.saturating_sub(m.seen));
                    }
                    self.missing.remove(i);
                    continue;
                }
                (true, false) => self.missing[i].end = lo,
                (false, true) => self.missing[i].first = hi,
                (true, true) => {
                    self.missing[i].end = lo;
                    if self.missing.len() < self.missing.capacity() {
                        self.missing.insert(i + 1, Missing { first: hi, ..m });
                    } else {
                        give_up(hi, m.end);
                    }
                }
            }
            i += 1;
        }
        cut
    }

    /// Gives up every range whose deadline passed by `now`, telling `give_up`.
    pub(crate) fn expire(&mut self, now: u64, give_up: &mut impl FnMut(u64, u64)) {
        self.missing.retain(|m| {
            let keep = m.deadline > now;
            if !keep {
                give_up(m.first, m.end);
            }
            keep
        });
    }

    /// Gives up every range, telling `give_up` (the subscription ends).
    pub(crate) fn give_up_all(&mut self, give_up: &mut impl FnMut(u64, u64)) {
        for m in self.missing.drain(..) {
            give_up(m.first, m.end);
        }
    }

    /// A reply to `session` carrying `count` messages from `first` arrived at `now`:
    /// whether it answers a request still out. If it does, the reply time is measured
    /// (first attempts only), and whatever the request asked for that is still missing
    /// after the reply's messages are filled in is asked for again at once.
    pub(crate) fn handle_reply(&mut self, first: u64, count: u16, now: u64) -> bool {
        let Some(end) = first.checked_add(u64::from(count)) else {
            return false;
        };
        let asked = self.missing.iter().find_map(|m| match m.ask {
            Ask::Out {
                first: f,
                end: e,
                sent,
                attempts,
                ..
            } if f <= first && first < e && end <= e => Some((f, e, sent, attempts)),
            _ => None,
        });
        let Some((f, e, sent, attempts)) = asked else {
            return false;
        };
        if attempts == 1 {
            self.measure(now.saturating_sub(sent));
        }
        for m in &mut self.missing {
            if matches!(m.ask, Ask::Out { first, end, .. } if first == f && end == e) {
                m.ask = Ask::Waiting { at: now };
            }
        }
        true
    }

    /// One reply time sample (RFC 6298).
    fn measure(&mut self, rtt: u64) {
        if self.srtt == 0 {
            self.srtt = rtt.max(1);
            self.rttvar = rtt / 2;
        } else {
            let diff = self.srtt.abs_diff(rtt);
            self.rttvar = (3 * (self.rttvar / 4)).saturating_add(diff / 4);
            self.srtt = (7 * (self.srtt / 8)).saturating_add(rtt / 8).max(1);
        }
        self.rto = self
            .srtt
            .saturating_add(self.rttvar.saturating_mul(4))
            .clamp(self.min_timeout_ns, self.max_timeout_ns);
    }

    /// When [`poll_request`](Self::poll_request) or [`expire`](Self::expire) next has
    /// something to do; `None` when nothing is missing.
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        let out = self.in_flight();
        self.missing
            .iter()
            .map(|m| {
                let ask = match m.ask {
                    Ask::Waiting { at } if out < self.config.max_in_flight.max(1) => at,
                    Ask::Waiting { .. } => u64::MAX,
                    Ask::Out { timeout, .. } => timeout,
                };
                ask.min(m.deadline)
            })
            .min()
    }

    /// Requests out now.
    fn in_flight(&self) -> usize {
        self.missing
            .iter()
            .filter(|m| matches!(m.ask, Ask::Out { .. }))
            .count()
    }

    /// The next request due at `now`, written into `buf` (at least 20 bytes) for
    /// `session`: its length and where it goes; `None` when none is due.
    pub(crate) fn poll_request(
        &mut self,
        session: Session,
        now: u64,
        buf: &mut [u8],
    ) -> Option<(usize, SocketAddr)> {
        if self.missing.is_empty() || buf.len() < REREQUEST_LEN {
            return None;
        }
        // A request whose time ran out is asked again first.
        let retry = self
            .missing
            .iter()
            .position(|m| matches!(m.ask, Ask::Out { timeout, .. } if timeout <= now));
        let (i, retrying) = match retry {
            Some(i) => (i, true),
            None => {
                if self.in_flight() >= self.config.max_in_flight.max(1) {
                    return None;
                }
                let i = self
                    .missing
                    .iter()
                    .position(|m| matches!(m.ask, Ask::Waiting { at } if at <= now))?;
                (i, false)
            }
        };
        let m = self.missing[i];
        let attempts = match m.ask {
            Ask::Out { attempts, .. } => attempts.saturating_add(1),
            Ask::Waiting { .. } => 1,
        };
        // About one reply's worth; a larger range is split, the rest asked for next.
        let want = self.per_request();
        let mut end = m.end;
        if end - m.first > want {
            end = m.first + want;
            if !retrying && self.missing.len() < self.missing.capacity() - 1 {
                self.missing[i].end = end;
                self.missing.insert(
                    i + 1,
                    Missing {
                        first: end,
                        ask: Ask::Waiting { at: now },
                        ..m
                    },
                );
            }
        }
        let count = u16::try_from(end - m.first).unwrap_or(MAX_MESSAGE_COUNT);
        let request = ReRequestRepr {
            session,
            sequence: m.first,
            count,
        };
        let len = request.emit(buf).ok()?;
        let backoff = self.rto.saturating_mul(1 << (attempts - 1).min(4));
        self.missing[i].ask = Ask::Out {
            first: m.first,
            end: m.first + u64::from(count),
            sent: now,
            timeout: now.saturating_add(backoff.min(self.max_timeout_ns)),
            attempts,
        };
        if retrying {
            self.counts.retries += 1;
        } else {
            self.counts.requests += 1;
        }
        Some((len, self.config.server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        7000,
    ));

    fn book(delay_us: u64) -> Recovery {
        Recovery::new(&RecoveryConfig {
            delay: Duration::from_micros(delay_us),
            seed: 7,
            ..RecoveryConfig::new(SERVER)
        })
    }

    fn request(r: &mut Recovery, now: u64) -> Option<(u64, u16)> {
        let mut buf = [0u8; 20];
        let session = Session::from_bytes(*b"RECOVER   ");
        let (len, to) = r.poll_request(session, now, &mut buf)?;
        assert_eq!((len, to), (20, SERVER));
        let parsed = crate::wire::ReRequest::new_checked(&buf[..]).ok()?;
        Some((parsed.sequence(), parsed.count()))
    }

    fn no_give_up(first: u64, end: u64) {
        panic!("{first}..{end} given up");
    }

    #[test]
    fn a_gap_is_asked_for_after_its_random_delay_and_split_into_packet_sized_requests() {
        let mut r = book(100);
        for _ in 0..10 {
            r.note_packet(4);
        }
        assert!(r.add(10, 20, 1_000));
        let first_due = r.poll_timeout().unwrap_or(0);
        assert!((1_000..=101_000).contains(&first_due));
        assert_eq!(request(&mut r, first_due.saturating_sub(1)), None);
        assert_eq!(request(&mut r, first_due), Some((10, 4)));
        assert_eq!(request(&mut r, first_due), Some((14, 4)));
        assert_eq!(request(&mut r, first_due), Some((18, 2)));
        assert_eq!(request(&mut r, first_due), None, "all out");
        assert_eq!(r.counts().requests, 3);
    }

    #[test]
    fn a_partial_reply_asks_for_the_rest_at_once_and_a_full_one_measures_the_reply_time() {
        let mut r = book(0);
        r.note_packet(10);
        assert!(r.add(1, 11, 0));
        assert_eq!(request(&mut r, 0), Some((1, 10)));
        // The server fitted 6 of 10.
        assert!(r.handle_reply(1, 6, 40_000));
        assert_eq!(r.fill(1, 7, 40_000, &mut no_give_up), 6);
        assert_eq!(request(&mut r, 40_000), Some((7, 4)));
        assert!(r.handle_reply(7, 4, 80_000));
        assert_eq!(r.fill(7, 11, 80_000, &mut no_give_up), 4);
        assert!(r.is_empty());
        assert_eq!(r.times().len(), 1);
        assert_eq!((r.counts().requests, r.counts().retries), (2, 0));
        assert_eq!(r.srtt, 40_000);
    }

    #[test]
    fn an_unanswered_request_is_retried_with_backoff_and_then_given_up_at_the_deadline() {
        let mut r = book(0);
        assert!(r.add(5, 6, 0));
        assert_eq!(request(&mut r, 0), Some((5, 1)));
        let rto = r.timeout().as_nanos() as u64;
        assert_eq!(request(&mut r, rto - 1), None);
        assert_eq!(request(&mut r, rto), Some((5, 1)));
        assert_eq!(
            request(&mut r, rto + rto),
            None,
            "the second wait is doubled"
        );
        assert_eq!(request(&mut r, rto + 2 * rto), Some((5, 1)));
        assert_eq!(r.counts().retries, 2);
        let mut lost = Vec::new();
        r.expire(99_999_999, &mut |a, b| lost.push((a, b)));
        assert!(lost.is_empty());
        r.expire(100_000_000, &mut |a, b| lost.push((a, b)));
        assert_eq!(lost, [(5, 6)]);
        assert!(r.is_empty());
    }

    #[test]
    fn a_reply_counts_only_for_a_range_asked_for_and_out() {
        let mut r = book(0);
        r.note_packet(5);
        assert!(r.add(100, 110, 0));
        assert!(!r.handle_reply(100, 5, 10), "not asked yet");
        assert_eq!(request(&mut r, 0), Some((100, 5)));
        assert!(!r.handle_reply(99, 5, 10), "starts before the range asked");
        assert!(!r.handle_reply(102, 5, 10), "runs past it");
        assert!(!r.handle_reply(105, 5, 10), "the part not asked yet");
        assert!(r.handle_reply(102, 3, 10));
    }

    #[test]
    fn fills_split_ranges_and_counting_sees_only_what_is_missing() {
        let mut r = book(0);
        assert!(r.add(10, 20, 0));
        assert!(r.add(30, 40, 0));
        assert!(!r.add(35, 50, 0), "overlaps");
        assert_eq!(r.fill(12, 14, 5, &mut no_give_up), 2);
        assert!(r.contains(11) && !r.contains(12) && r.contains(14));
        assert_eq!(r.count_missing(0, 100), 18);
        assert_eq!(r.fill(15, 35, 5, &mut no_give_up), 10);
        assert_eq!(r.count_missing(0, 100), 8);
        assert!(r.overlaps(14, 15) && !r.overlaps(15, 35));
        r.forget(0, 100);
        assert!(r.is_empty());
        assert_eq!(r.times().len(), 0, "nothing recorded as recovered");
    }

    #[test]
    fn a_full_book_refuses_new_gaps_and_gives_up_what_a_split_cannot_keep() {
        // One gap, one request out: room for 2 + 1 + 1 ranges.
        let mut r = Recovery::new(&RecoveryConfig {
            max_gaps: 1,
            max_in_flight: 1,
            delay: Duration::ZERO,
            ..RecoveryConfig::new(SERVER)
        });
        assert!(r.add(10, 20, 0));
        assert!(!r.add(50, 60, 0), "max_gaps");
        for at in [12, 14, 16] {
            assert_eq!(
                r.fill(at, at + 1, 0, &mut no_give_up),
                1,
                "a split has room"
            );
        }
        let mut lost = Vec::new();
        r.fill(18, 19, 0, &mut |a, b| lost.push((a, b)));
        assert_eq!(lost, [(19, 20)], "no room for the right part");
        assert_eq!(r.count_missing(0, 100), 10 - 4 - 1);
    }
}
