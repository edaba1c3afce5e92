//! The progress line: one line on stdout, rewritten in place about once a second and
//! cleared before the report is printed.
//!
//! Shown only when stdout is a terminal and the run may last longer than two seconds
//! ([`wanted`]), so that piped output (and `--json | tail -n 1`) never contains it.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

/// Runs up to this long get no progress line.
const SHORT_RUN: Duration = Duration::from_secs(2);

/// How often the tools refresh the line (and write an interval of the latency log).
pub const TICK: Duration = Duration::from_secs(1);

/// Whether a run limited to `secs` (`None`: no time limit) should show a progress line.
pub fn wanted(secs: Option<Duration>) -> bool {
    secs.is_none_or(|s| s > SHORT_RUN) && std::io::stdout().is_terminal()
}

/// The line on the terminal, if any.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    shown: bool,
}

impl Progress {
    /// A progress line that is drawn only when `enabled`.
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            shown: false,
        }
    }

    /// Replaces the line with `line` (built only when the line is drawn).
    pub fn show(&mut self, line: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        let mut out = std::io::stdout().lock();
        // A progress line that cannot be written is not worth failing the run for.
        let _ = write!(out, "\r\x1b[2K{}", line());
        let _ = out.flush();
        self.shown = true;
    }

    /// Erases the line, if one was drawn.
    pub fn clear(&mut self) {
        if self.shown {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
            self.shown = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A once-a-second schedule, measured from the start of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticker {
    /// When the current interval began.
    last: Duration,
    /// When the next tick is due.
    next: Duration,
}

impl Default for Ticker {
    fn default() -> Self {
        Ticker {
            last: Duration::ZERO,
            next: TICK,
        }
    }
}

impl Ticker {
    /// If a tick is due at `elapsed`, returns the interval it closes (its start and
    /// length) and begins the next one. A ticker that fell more than a tick behind counts
    /// the next second from `elapsed`.
    pub fn tick(&mut self, elapsed: Duration) -> Option<(Duration, Duration)> {
        if elapsed < self.next {
            return None;
        }
        let interval = (self.last, elapsed.saturating_sub(self.last));
        self.last = elapsed;
        self.next += TICK;
        if self.next <= elapsed {
            self.next = elapsed + TICK;
        }
        Some(interval)
    }

    /// The start of the interval not yet closed.
    pub fn last(&self) -> Duration {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_runs_get_no_progress_line() {
        assert!(!wanted(Some(Duration::from_secs(2))));
    }

    #[test]
    fn a_tick_closes_the_interval_since_the_last_one() {
        let mut ticker = Ticker::default();
        assert_eq!(ticker.tick(Duration::from_millis(999)), None);
        assert_eq!(
            ticker.tick(Duration::from_millis(1_001)),
            Some((Duration::ZERO, Duration::from_millis(1_001)))
        );
        assert_eq!(ticker.last(), Duration::from_millis(1_001));
        assert_eq!(ticker.tick(Duration::from_millis(1_500)), None);
        assert_eq!(
            ticker.tick(Duration::from_millis(2_000)),
            Some((Duration::from_millis(1_001), Duration::from_millis(999)))
        );
    }

    #[test]
    fn a_ticker_that_fell_behind_starts_over_from_now() {
        let mut ticker = Ticker::default();
        assert!(ticker.tick(Duration::from_secs(5)).is_some());
        assert_eq!(ticker.tick(Duration::from_millis(5_500)), None);
        assert!(ticker.tick(Duration::from_secs(6)).is_some());
    }
}
