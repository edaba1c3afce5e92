//! Pacing a sender to a rate (sans-IO: the caller reads the clock and passes the time
//! elapsed since its start).
//!
//! A [`Pacer`] is a schedule of `rate` messages per second with bursts of at most
//! `burst`: message `n` (from 0) is due `n / rate` seconds after the start. A paced loop
//! asks [`allow`](Pacer::allow) how many may go now (those due and not yet sent, at most a
//! burst), offers them, and when none may go sleeps for [`until_next`](Pacer::until_next)
//! rather than spinning. A sender that fell behind (descheduled, back-pressure) catches up
//! by at most one burst: what it owes beyond that is forgiven, and the schedule goes on
//! from there, so that the rate never exceeds one burst above `rate` over any stretch and
//! holds on average while the sender keeps up.
//!
//! [`due`](Pacer::due) gives the whole count due by a time (the schedule's own view,
//! without the burst bound), for callers that count for themselves.
//!
//! ```
//! use std::time::Duration;
//! use multipoint_dataplane::Pacer;
//!
//! let mut pacer = Pacer::new(1_000, 10).unwrap(); // 1,000 msgs/s, bursts of 10
//! assert_eq!(pacer.allow(0, Duration::ZERO), 1, "the first is due at once");
//! assert_eq!(pacer.until_next(1, Duration::ZERO), Duration::from_millis(1));
//! // A second later, 1,000 more are due, but only a burst may go at once.
//! assert_eq!(pacer.allow(1, Duration::from_secs(1)), 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Nothing here allocates, reads a clock or panics (all arithmetic saturates).

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A message rate with bounded bursts. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    rate: u64,
    burst: u64,
    /// Messages of the schedule forgiven to a sender that fell more than a burst behind:
    /// the schedule counts from the first one it still expects.
    forgiven: u64,
}

impl Pacer {
    /// A schedule of `rate` messages per second, at most `burst` at once (0 counts as
    /// 1); `None` for a rate of 0 (as fast as possible has no schedule).
    pub fn new(rate: u64, burst: u64) -> Option<Pacer> {
        (rate > 0).then_some(Pacer {
            rate,
            burst: burst.max(1),
            forgiven: 0,
        })
    }

    /// The rate in messages per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The most messages [`allow`](Self::allow) lets go at once.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// How many messages the schedule has due once `elapsed` passed since the start:
    /// those due at most `elapsed` after it (the first at once), less those forgiven.
    pub fn due(&self, elapsed: Duration) -> u64 {
        let slots = elapsed
            .as_nanos()
            .checked_mul(u128::from(self.rate))
            .map_or(u128::MAX, |n| n / NANOS_PER_SEC);
        u64::try_from(slots)
            .unwrap_or(u64::MAX)
            .saturating_add(1)
            .saturating_sub(self.forgiven)
    }

    /// How many messages may go now, `elapsed` after the start, when `sent` went so far:
    /// those due and not sent, at most a burst. A sender more than a burst behind is
    /// forgiven the rest (the schedule moves on, see the module docs).
    pub fn allow(&mut self, sent: u64, elapsed: Duration) -> u64 {
        let due = self.due(elapsed);
        let most = sent.saturating_add(self.burst);
        if due > most {
            self.forgiven = self.forgiven.saturating_add(due - most);
        }
        due.min(most).saturating_sub(sent)
    }

    /// How long after `elapsed` message number `sent` (from 0) is due; zero if it is due
    /// already. Once it passed, [`due`](Self::due) counts that message.
    pub fn until_next(&self, sent: u64, elapsed: Duration) -> Duration {
        let slot = u128::from(sent.saturating_add(self.forgiven));
        // The first instant (in whole nanoseconds) at which `slot` is due.
        let at_ns = (slot * NANOS_PER_SEC).div_ceil(u128::from(self.rate));
        let wait_ns = at_ns.saturating_sub(elapsed.as_nanos());
        Duration::from_nanos(u64::try_from(wait_ns).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::FakeClock;

    fn pacer(rate: u64, burst: u64) -> Pacer {
        Pacer::new(rate, burst).unwrap_or_else(|| panic!("a pacer"))
    }

    #[test]
    fn a_rate_of_zero_has_no_schedule_and_a_burst_of_zero_is_one() {
        assert_eq!(Pacer::new(0, 5), None);
        assert_eq!(pacer(10, 0).burst(), 1);
    }

    #[test]
    fn the_average_rate_holds_for_a_sender_that_keeps_up() {
        // 10,000 msgs/s, a sender that looks every 30 µs (a fake clock) for 2 s.
        let clock = FakeClock::new();
        let mut p = pacer(10_000, 8);
        let mut sent = 0u64;
        while clock.elapsed() < Duration::from_secs(2) {
            sent += p.allow(sent, clock.elapsed());
            clock.advance(Duration::from_micros(30));
        }
        // Due by the last look (just under 2 s): 20,000, the first at once.
        assert!((19_999..=20_001).contains(&sent), "{sent}");
    }

    #[test]
    fn bursts_are_bounded_and_a_sender_that_fell_behind_catches_up_only_one_burst() {
        let mut p = pacer(1_000, 10);
        assert_eq!(p.allow(0, Duration::ZERO), 1);
        // Asleep for a second: 1,000 are owed, one burst may go.
        assert_eq!(p.allow(1, Duration::from_secs(1)), 10);
        assert_eq!(
            p.allow(11, Duration::from_secs(1)),
            0,
            "the rest was forgiven"
        );
        // From then on the rate again: one per millisecond.
        assert_eq!(
            p.until_next(11, Duration::from_secs(1)),
            Duration::from_millis(1)
        );
        assert_eq!(p.allow(11, Duration::from_millis(1_001)), 1);
        assert_eq!(p.allow(12, Duration::from_millis(1_005)), 4);
    }

    #[test]
    fn the_wait_is_until_the_next_message_is_due_and_then_it_is() {
        let p = pacer(3, 1);
        // Message 1 is due at 1/3 s: 333,333,334 ns, rounded up.
        let wait = p.until_next(1, Duration::ZERO);
        assert_eq!(wait, Duration::from_nanos(333_333_334));
        assert_eq!(p.due(wait - Duration::from_nanos(1)), 1);
        assert_eq!(p.due(wait), 2);
        assert_eq!(p.until_next(1, Duration::from_secs(5)), Duration::ZERO);
    }

    #[test]
    fn huge_rates_and_durations_do_not_overflow() {
        let mut p = pacer(u64::MAX, u64::MAX);
        assert_eq!(p.due(Duration::MAX), u64::MAX);
        assert_eq!(p.allow(0, Duration::MAX), u64::MAX);
        assert_eq!(
            p.until_next(u64::MAX, Duration::ZERO),
            Duration::from_secs(1)
        );
        let mut slow = pacer(1, 1);
        assert_eq!(slow.allow(u64::MAX - 1, Duration::MAX), 1);
        assert!(slow.until_next(u64::MAX, Duration::ZERO) > Duration::from_secs(1 << 30));
    }
}
