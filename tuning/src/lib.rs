//! The `multipoint-tune` host audit: what a Linux host does to a low-latency multicast
//! data plane, item by item, and the profile that fixes it.
//!
//! # Contract
//!
//! - [`audit`] reads a [`Host`] (the real `/proc` and `/sys`, or a fixture tree under
//!   another root) and returns one [`Item`] per name in [`ITEM_NAMES`], in that order:
//!   the value found, what is wanted, a [`Verdict`], why, and the command that fixes it.
//!   It writes nothing. Its only side effects are two probes of this process: setting up
//!   (and tearing down) one small io_uring, and `getrlimit(RLIMIT_MEMLOCK)`; a fixture
//!   host can fix both in advance.
//! - Limits are judged against [`Needs`]: what the caller will register and ask for. Its
//!   [`Default`] is the data plane's defaults.
//! - [`profile`] builds the low-latency profile for a host (reading only); [`apply`] is
//!   the only function that writes, and only the profile's sysctls.
//! - A program that runs the audit itself prints [`Summary::of`] its items: one line
//!   (`host: 2 critical, 4 warnings (multipoint-tune check explains them)`), nothing when
//!   all is ok; [`findings`] is the full text of the items that are not ok. Both are plain
//!   text, without escape codes.
//! - [`warn_at_startup`] audits the live host once per process and logs every item that
//!   is not `ok` through `tracing`.
//! - Nothing here panics on what a host contains; an unreadable file is reported in the
//!   item that needed it.
//!
//! ```
//! use multipoint_tuning::{audit, Host, Needs, Rlimit, Verdict};
//!
//! // A fixture root with nothing in it: every file is missing.
//! let dir = std::env::temp_dir().join("multipoint-tuning-doctest-empty");
//! let host = Host::at(&dir)
//!     .with_io_uring(Err("blocked by seccomp".into()))
//!     .with_memlock(Some(Rlimit::new(64 << 10, 64 << 10)));
//! let items = audit(&host, &Needs::default());
//! assert_eq!(items.len(), multipoint_tuning::ITEM_NAMES.len());
//! let uring = items.iter().find(|i| i.name == "io_uring.setup").unwrap();
//! assert_eq!(uring.verdict, Verdict::Warn);
//! ```

mod checks;
mod cpulist;
mod error;
mod host;
mod item;
mod needs;
mod probe;
mod profile;
mod summary;

use std::sync::Once;

pub use checks::{audit, ITEM_NAMES};
pub use error::{Error, Result};
pub use host::{Host, Rlimit};
pub use item::{to_json, worst, Item, Verdict};
pub use needs::{buffer_ring_locked_bytes, ring_locked_bytes, Needs, RingSize};
pub use profile::{apply, profile, Applied, Change, Profile, Setting, Step, SYSCTL_FILE};
pub use summary::{findings, Summary};

/// Audits this host once per process and logs each item that is not `ok` as one
/// `tracing::warn!` line (with its fix), `critical` ones saying so.
///
/// Call it when the data plane starts, with what it is about to register. Only the first
/// call in a process audits (later calls return at once, whatever `needs` they pass): the
/// audit reads about a hundred small files and sets up one small io_uring, a few
/// milliseconds.
pub fn warn_at_startup(needs: &Needs) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for item in audit(&Host::system(), needs) {
            match item.verdict {
                Verdict::Ok => {}
                Verdict::Warn | Verdict::Critical => tracing::warn!(
                    target: "multipoint_tuning",
                    setting = %item.name,
                    value = %item.value,
                    wanted = %item.wanted,
                    fix = %item.fix,
                    "host setting will hurt the data plane ({}): {}",
                    item.verdict,
                    item.why,
                ),
            }
        }
    });
}
