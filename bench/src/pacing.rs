//! The send schedule for a target rate (sans-IO: the caller reads the clock and passes
//! the time elapsed since the start).
//!
//! A paced sender works in small time slices: each slice it asks [`Pacer::due`] how many
//! messages should have left by now, offers the difference, and when it is ahead of
//! schedule sleeps for [`Pacer::until_next`] (bounded) rather than spinning. A sender that
//! fell behind (descheduled, backpressure) catches up in the next slice, so the average
//! rate holds.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A constant-rate schedule: message `n` (from 0) is due at `n / rate` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    rate: u64,
}

impl Pacer {
    /// A schedule of `rate` messages per second; `None` for 0 (as fast as possible has no
    /// schedule).
    pub fn new(rate: u64) -> Option<Pacer> {
        (rate > 0).then_some(Pacer { rate })
    }

    /// The rate in messages per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// How many messages are due once `elapsed` has passed since the start: those whose
    /// due time is at most `elapsed`.
    pub fn due(&self, elapsed: Duration) -> u64 {
        elapsed
            .as_nanos()
            .checked_mul(u128::from(self.rate))
            .and_then(|n| u64::try_from(n / NANOS_PER_SEC).ok())
            .map_or(u64::MAX, |n| n.saturating_add(1))
    }

    /// How long after `elapsed` message number `sent` (from 0) is due; zero if it is due
    /// already.
    pub fn until_next(&self, sent: u64, elapsed: Duration) -> Duration {
        let at_ns = u128::from(sent) * NANOS_PER_SEC / u128::from(self.rate);
        let wait_ns = at_ns.saturating_sub(elapsed.as_nanos());
        Duration::from_nanos(u64::try_from(wait_ns).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_zero_has_no_schedule() {
        assert_eq!(Pacer::new(0), None);
    }

    #[test]
    fn the_first_message_is_due_at_once_and_then_one_per_period() {
        let pacer = Pacer::new(1_000).unwrap();
        assert_eq!(pacer.due(Duration::ZERO), 1);
        assert_eq!(pacer.due(Duration::from_micros(999)), 1);
        assert_eq!(pacer.due(Duration::from_millis(1)), 2);
        assert_eq!(pacer.due(Duration::from_secs(1)), 1_001);
    }

    #[test]
    fn a_second_at_a_million_per_second_is_a_million_messages() {
        let pacer = Pacer::new(1_000_000).unwrap();
        let in_one_second = pacer.due(Duration::from_secs(1)) - pacer.due(Duration::ZERO);
        assert_eq!(in_one_second, 1_000_000);
    }

    #[test]
    fn the_wait_is_until_the_next_message_is_due() {
        let pacer = Pacer::new(1_000).unwrap();
        assert_eq!(
            pacer.until_next(2, Duration::from_micros(1_500)),
            Duration::from_micros(500)
        );
        assert_eq!(
            pacer.until_next(1, Duration::from_millis(5)),
            Duration::ZERO
        );
    }

    #[test]
    fn huge_rates_and_durations_do_not_overflow() {
        let pacer = Pacer::new(u64::MAX).unwrap();
        assert_eq!(pacer.due(Duration::MAX), u64::MAX);
        assert_eq!(
            pacer.until_next(u64::MAX, Duration::ZERO),
            Duration::from_secs(1)
        );
    }
}
