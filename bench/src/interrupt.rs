//! SIGINT and SIGTERM: the first ends a run early, as if its `--secs` or `--count` came,
//! so that the tool still prints its full report (and JSON, with `"interrupted"` set); a
//! second one, a moment later, exits at once.
//!
//! [`install`] starts a thread that waits for the signals (signal-hook's iterator: the
//! handler only writes to a pipe, which is async-signal-safe); every loop that runs until
//! a count or a time also stops when [`requested`] says so. A repeat within
//! [`REPEAT_GRACE`] of the first counts as the same request: `timeout -s INT` sends the
//! signal to the process and then to its process group, so one expiry arrives twice. A
//! later one exits with 128 + the signal number, as a shell reports a process killed by
//! it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Set by the first SIGINT or SIGTERM.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// The number of the signal that set [`REQUESTED`].
static SIGNAL: AtomicUsize = AtomicUsize::new(0);

/// A signal this soon after the first is the same request, not a second one.
pub const REPEAT_GRACE: Duration = Duration::from_millis(250);

/// A signal that ended a run early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: Ctrl-C, `timeout -s INT`.
    Int,
    /// SIGTERM: `kill`, `timeout`.
    Term,
}

impl Signal {
    /// Its name: `SIGINT`, `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }

    /// The exit status of a process that ended because of it: 128 + its number.
    pub fn exit_status(self) -> u8 {
        match self {
            Signal::Int => 128 + SIGINT as u8,
            Signal::Term => 128 + SIGTERM as u8,
        }
    }

    fn of(number: i32) -> Signal {
        if number == SIGTERM {
            Signal::Term
        } else {
            Signal::Int
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a signal arriving `since_first` after the first one (`None`: it is the first)
/// should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// End the run early, with its report.
    Request,
    /// Nothing: the same request delivered again.
    Repeat,
    /// Exit now.
    Exit,
}

fn action(since_first: Option<Duration>) -> Action {
    match since_first {
        None => Action::Request,
        Some(d) if d < REPEAT_GRACE => Action::Repeat,
        Some(_) => Action::Exit,
    }
}

/// Installs the handling of SIGINT and SIGTERM: the first of them sets the flag that
/// [`requested`] reads; one at least [`REPEAT_GRACE`] after it exits the process at once
/// (status 128 + its number).
///
/// # Errors
///
/// The OS error if the handlers or their thread cannot be set up.
pub fn install() -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first: Option<Instant> = None;
            for number in signals.forever() {
                match action(first.map(|at| at.elapsed())) {
                    Action::Request => {
                        first = Some(Instant::now());
                        SIGNAL.store(number as usize, Ordering::Relaxed);
                        REQUESTED.store(true, Ordering::Release);
                    }
                    Action::Repeat => {}
                    Action::Exit => {
                        // Exiting skips every destructor: the counters file and the
                        // rings this process writes go now.
                        multipoint_dataplane::stat::remove_file();
                        let rings = RINGS.lock().unwrap_or_else(PoisonError::into_inner);
                        for ring in rings.iter() {
                            let _ = std::fs::remove_file(ring);
                        }
                        std::process::exit(i32::from(Signal::of(number).exit_status()))
                    }
                }
            }
        })?;
    Ok(())
}

/// Whether a SIGINT or SIGTERM asked the run to end.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Acquire)
}

/// The signal that asked the run to end, if one did.
pub fn signal() -> Option<Signal> {
    if !requested() {
        return None;
    }
    let number = SIGNAL.load(Ordering::Relaxed);
    Some(Signal::of(i32::try_from(number).unwrap_or(SIGINT)))
}

/// Shared-memory rings this process writes, removed if a second signal makes it exit at
/// once (their writers' destructors would have removed them).
static RINGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes the ring file `path` if the process is made to exit at once (see [`install`]).
pub fn remove_on_exit(path: &Path) {
    RINGS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(path.to_path_buf());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_is_128_and_the_signal_number() {
        assert_eq!(Signal::Int.exit_status(), 130);
        assert_eq!(Signal::Term.exit_status(), 143);
        assert_eq!(Signal::Term.to_string(), "SIGTERM");
        assert_eq!(Signal::of(SIGTERM), Signal::Term);
        assert_eq!(Signal::of(SIGINT), Signal::Int);
    }

    #[test]
    fn a_repeat_right_after_the_first_signal_is_the_same_request_and_a_later_one_exits() {
        assert_eq!(action(None), Action::Request);
        assert_eq!(action(Some(Duration::from_micros(50))), Action::Repeat);
        assert_eq!(action(Some(REPEAT_GRACE)), Action::Exit);
        assert_eq!(action(Some(Duration::from_secs(3))), Action::Exit);
    }
}
