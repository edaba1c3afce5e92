//! The crate's one error type. The audit itself never fails (what it cannot read shows up
//! in its items); only applying a profile can.

use std::io;
use std::path::PathBuf;

/// What went wrong while applying a profile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--apply` on the live host by a user other than root.
    #[error(
        "applying the profile writes /proc/sys, which needs root (effective uid {euid}): run \
         `sudo multipoint-tune profile --apply`, or leave out --apply to only print it"
    )]
    NotRoot {
        /// The effective user id that tried.
        euid: u32,
    },
    /// Writing one sysctl failed; the others were still tried.
    #[error("could not set {name} to {value} ({}): {source}", path.display())]
    Write {
        /// The sysctl.
        name: String,
        /// The value it should have taken.
        value: String,
        /// The file written.
        path: PathBuf,
        /// Why the write failed.
        #[source]
        source: io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
