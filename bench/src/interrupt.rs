//! SIGINT and SIGTERM: the first ends a run early, as if its `--secs` or `--count` came,
//! so that the tool still prints its full report (and JSON, with `"interrupted"` set); a
//! second one exits at once.
//!
//! [`install`] registers the handlers (once, in `main`); every loop that runs until a
//! count or a time also stops when [`requested`] says so. The handlers only store to
//! atomics (signal-hook's `flag` actions, which are async-signal-safe); the exit on a
//! second signal is signal-hook's conditional shutdown (`_exit` with 128 + the signal
//! number, as a shell reports a process killed by it).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// Set by the first SIGINT or SIGTERM.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// The number of the signal that set [`REQUESTED`] (the last one, if both came).
static SIGNAL: AtomicUsize = AtomicUsize::new(0);

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
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Installs the handlers of SIGINT and SIGTERM: the first of them sets the flag that
/// [`requested`] reads; one after it exits the process at once (status 128 + its number).
///
/// # Errors
///
/// The OS error if a handler cannot be installed.
pub fn install() -> io::Result<()> {
    for signal in [SIGINT, SIGTERM] {
        // The order matters: the exit is armed only by an earlier signal's flag.
        flag::register_conditional_shutdown(signal, 128 + signal, &REQUESTED)?;
        flag::register_usize(signal, &SIGNAL, signal as usize)?;
        flag::register(signal, &REQUESTED)?;
    }
    Ok(())
}

/// Whether a SIGINT or SIGTERM asked the run to end.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// The signal that asked the run to end, if one did.
pub fn signal() -> Option<Signal> {
    if !requested() {
        return None;
    }
    match SIGNAL.load(Ordering::Relaxed) {
        s if s == SIGTERM as usize => Some(Signal::Term),
        _ => Some(Signal::Int),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_is_128_and_the_signal_number() {
        assert_eq!(Signal::Int.exit_status(), 130);
        assert_eq!(Signal::Term.exit_status(), 143);
        assert_eq!(Signal::Term.to_string(), "SIGTERM");
    }
}
