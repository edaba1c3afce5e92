//! Broadcast rings in shared memory: one process writes a stream's events into a named
//! ring in `/dev/shm`, any number of readers in any process read them in place.
//!
//! # Contract
//!
//! - **Names.** A ring named `NAME` is the file `/dev/shm/multipoint-ipc-NAME`. A name is
//!   1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits, `-`, `_` and `.`, not starting
//!   with `.` ([`Error::IpcName`] otherwise).
//! - **One writer.** [`IpcWriter::create`] makes a new file (written under a temporary
//!   name, then renamed over the name: a reader never sees a half-made ring, and a
//!   restarted writer never reuses a mapped file in place, so its readers notice the name
//!   now names another file). It refuses a name whose ring a live process writes
//!   ([`Error::IpcInUse`]). The writer is a [`Handler`](crate::Handler): give it to
//!   [`Shards::subscribe`](crate::Shards::subscribe) and a network subscription feeds the
//!   ring; or call [`IpcWriter::offer`] and [`IpcWriter::flush`] yourself. Records are
//!   published once per [`flush`](IpcWriter::flush) (the shard calls it after each turn),
//!   with the heartbeat. Dropping or [closing](IpcWriter::close) the writer marks the
//!   ring closed and removes its file (if the name still names it); readers that map it
//!   read what is left and then see the end.
//! - **The writer never waits.** No reader writes anything to the shared memory (readers
//!   map it read-only); the writer overwrites the oldest records whatever the readers do.
//! - **Readers.** [`IpcSubscription::attach`] maps a ring and checks its header (magic,
//!   version, layout: [`Error::IpcNotARing`], [`Error::IpcVersion`],
//!   [`Error::IpcLayout`]; [`Error::IpcNotFound`], [`Error::IpcPermission`]). It starts at
//!   the oldest record still in the ring, or at the tail ([`IpcStart`]).
//!   [`IpcSubscription::poll`] hands up to `limit` events to a closure, in the order the
//!   writer wrote them, and never waits; [`IpcSubscription::poll_wait`] waits first with
//!   the reader's idle strategy. Messages are read in place: the bytes borrow the shared
//!   memory while the closure runs.
//! - **Lapped readers.** A reader the writer overwrote is told, in its place in the
//!   stream, [`Event::Lapped`](crate::Event::Lapped): exactly how many records it lost
//!   (each record carries the writer's index of it) and the sequence numbers of the
//!   messages among them (`first_sequence..resume_sequence`: what to re-request, the
//!   ring's [re-request server](IpcSubscription::rerequest) if its writer knows one). It
//!   resumes at the oldest block start that is half a ring behind the writer (the writer
//!   publishes a block's first record position), else at the writer's tail. With
//!   [`IpcSubscription::recover`] the reader asks the server for that range itself
//!   (the subscriber's sans-IO recovery book, over one non-blocking UDP socket): the
//!   messages come later as [`Event::Recovered`](crate::Event::Recovered), and what is
//!   not back by the deadline as [`Event::Gap`](crate::Event::Gap).
//! - **Lapped during a handler.** Each record is checked before it is handed over (its
//!   header was not overwritten while read) and again after the closure returns. A
//!   message whose bytes the writer began to overwrite while the closure ran has been
//!   handed over with bytes that may be mixed; the reader counts it
//!   ([`IpcReaderStats::torn_during_read`]) and the next event is a `Lapped` whose count
//!   includes it and whose `first_sequence` is its own: whatever the closure made of it
//!   must be dropped. A reader that copies the message first and checks nothing has no
//!   other way to know.
//! - **Untrusted memory.** Everything a reader reads was written by another process:
//!   every length, offset and index is checked before use, nothing panics, and a record
//!   that makes no sense (not an overwrite) is discarded and counted
//!   ([`IpcReaderStats::discarded`]), and the reader resynchronises as after a lap.
//! - **Writer liveness.** The header holds the writer's pid and start time (so a reused
//!   pid is not the writer) and a heartbeat (`CLOCK_MONOTONIC`, at each flush). A reader
//!   with nothing to read looks every 10 ms: a writer whose process is gone
//!   ([`WriterState::Dead`]) or whose name now names another file
//!   ([`WriterState::Replaced`]) ends the stream once the rest is read, with an
//!   [`Event::Failure`](crate::Event::Failure) saying so;
//!   [`IpcSubscription::heartbeat_age`] tells a writer that stopped beating.
//! - **Threads.** A writer and a reader are each used by one thread at a time (both are
//!   `Send`). Nothing here panics.

// Under loom only the protocol (and what it needs) is built and tested.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod layout;
mod protocol;
mod sync;

#[cfg(not(loom))]
mod reader;
#[cfg(not(loom))]
mod recover;
#[cfg(not(loom))]
mod shm;
#[cfg(not(loom))]
mod writer;

pub use layout::{Layout, VERSION};
#[cfg(not(loom))]
pub use reader::{IpcAttachConfig, IpcReaderStats, IpcStart, IpcSubscription, WriterState};
#[cfg(not(loom))]
pub use writer::{IpcWriter, IpcWriterStats};

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The longest ring name.
pub const MAX_NAME_LEN: usize = 200;

/// Where rings live.
pub const SHM_DIR: &str = "/dev/shm";

/// The file names of rings begin with this.
pub const FILE_PREFIX: &str = "multipoint-ipc-";

/// How a ring is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcConfig {
    /// The ring's size in bytes: a power of two from [`IpcConfig::MIN_CAPACITY`] to
    /// [`IpcConfig::MAX_CAPACITY`]. A record takes 24 bytes plus its payload rounded up
    /// to 8: a 32-byte message takes 56.
    pub capacity: usize,
    /// The stream's MoldUDP64 session, if known (readers can see it).
    pub session: Option<crate::wire::Session>,
    /// The stream's re-request server, if known: where a lapped reader can ask for what
    /// it lost.
    pub rerequest: Option<std::net::SocketAddr>,
    /// The file's permission bits (`0o644`: readable by every user; `0o600`: by the
    /// writer's user only).
    pub mode: u32,
}

impl IpcConfig {
    /// The smallest ring.
    pub const MIN_CAPACITY: usize = 1 << 16;
    /// The largest ring.
    pub const MAX_CAPACITY: usize = 1 << 32;

    /// A ring of `capacity` bytes, the other settings at their defaults.
    pub fn new(capacity: usize) -> IpcConfig {
        IpcConfig {
            capacity,
            ..IpcConfig::default()
        }
    }
}

impl Default for IpcConfig {
    /// 64 MiB (about 1.2 M messages of 32 bytes), readable by every user.
    fn default() -> Self {
        IpcConfig {
            capacity: 64 << 20,
            session: None,
            rerequest: None,
            mode: 0o644,
        }
    }
}

/// The file of the ring named `name`.
///
/// # Errors
///
/// [`Error::IpcName`] for a name that is empty, too long, or holds anything but ASCII
/// letters, digits, `-`, `_` and `.` (or starts with `.`).
pub fn ring_path(name: &str) -> Result<PathBuf> {
    let refuse = |reason| {
        Err(Error::IpcName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return refuse("it is longer than 200 bytes");
    }
    if name.contains('/') {
        return refuse("it contains '/': a ring name is a file name, not a path");
    }
    if name.starts_with('.') {
        return refuse("it starts with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return refuse("use only ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(PathBuf::from(format!("{SHM_DIR}/{FILE_PREFIX}{name}")))
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(test)]
mod name_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_ring_name_is_a_plain_bounded_file_name() {
        assert_eq!(
            ring_path("feed-1.a_b").unwrap(),
            PathBuf::from("/dev/shm/multipoint-ipc-feed-1.a_b")
        );
        for (bad, why) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("..", "'.'"),
            ("a b", "ASCII"),
            ("é", "ASCII"),
        ] {
            let err = ring_path(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(ring_path(&"x".repeat(MAX_NAME_LEN)).is_ok());
        let err = ring_path(&"x".repeat(MAX_NAME_LEN + 1)).unwrap_err();
        assert!(err.to_string().contains("longer"), "{err}");
    }
}
