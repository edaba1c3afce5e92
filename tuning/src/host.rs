//! Where the audit looks: a [`Host`] is a root directory whose `proc/` and `sys/` trees
//! are read like the real `/proc` and `/sys`, plus the two facts that are not files
//! (whether an io_uring can be set up, and `RLIMIT_MEMLOCK`), which a test can fix in
//! advance.
//!
//! Reading never fails loudly: a file that is missing or unreadable is `None`, and the
//! check that wanted it says so in its item. Nothing here writes except
//! [`Host::write`], which only [`crate::apply`] calls.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::probe;

/// A resource limit in bytes, as `getrlimit(2)` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The limit that applies (`ulimit -l` shows it in KiB).
    pub soft: u64,
    /// The ceiling an unprivileged process may raise `soft` to.
    pub hard: u64,
}

impl Rlimit {
    /// The value of an unlimited limit (`RLIM_INFINITY`).
    pub const UNLIMITED: u64 = u64::MAX;

    /// A limit of `soft` and `hard` bytes.
    pub fn new(soft: u64, hard: u64) -> Rlimit {
        Rlimit { soft, hard }
    }
}

/// A fact taken from the running kernel, or fixed in advance by a test.
#[derive(Debug, Clone)]
enum Source<T> {
    Live,
    Fixed(T),
}

/// The machine being audited: files under a root directory, and two probes.
///
/// [`Host::system`] is this machine (`/`, live probes). [`Host::at`] reads the files of a
/// fixture tree instead; its probes still ask the running kernel about this process
/// unless fixed with [`Host::with_io_uring`] and [`Host::with_memlock`].
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
    io_uring: Source<Result<(), String>>,
    memlock: Source<Option<Rlimit>>,
    page_size: u64,
}

impl Host {
    /// This machine: `/proc` and `/sys`, a real io_uring probe, the real
    /// `RLIMIT_MEMLOCK`.
    pub fn system() -> Host {
        Host::at("/")
    }

    /// The files under `root` (which holds `proc/...` and `sys/...`), with live probes.
    pub fn at(root: impl Into<PathBuf>) -> Host {
        Host {
            root: root.into(),
            io_uring: Source::Live,
            memlock: Source::Live,
            page_size: probe::page_size(),
        }
    }

    /// Fixes the outcome of setting up an io_uring (`Err` holds the reason, as the live
    /// probe would give it).
    pub fn with_io_uring(mut self, outcome: Result<(), String>) -> Host {
        self.io_uring = Source::Fixed(outcome);
        self
    }

    /// Fixes `RLIMIT_MEMLOCK` (`None`: it could not be read).
    pub fn with_memlock(mut self, limit: Option<Rlimit>) -> Host {
        self.memlock = Source::Fixed(limit);
        self
    }

    /// Fixes the page size the kernel accounts locked memory in (default: this
    /// machine's).
    pub fn with_page_size(mut self, bytes: u64) -> Host {
        self.page_size = bytes.max(1);
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this is the live machine (root `/`).
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The page size in bytes.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Sets up a small io_uring the way the data plane does (flags, opcode probe, a
    /// provided buffer ring) and tears it down; `Err` says what failed.
    pub fn io_uring_setup(&self) -> Result<(), String> {
        match &self.io_uring {
            Source::Live => probe::io_uring(),
            Source::Fixed(outcome) => outcome.clone(),
        }
    }

    /// `RLIMIT_MEMLOCK` of this process, `None` when it cannot be read.
    pub fn memlock(&self) -> Option<Rlimit> {
        match &self.memlock {
            Source::Live => probe::memlock(),
            Source::Fixed(limit) => *limit,
        }
    }

    /// The path of `rel` (relative to `/`, e.g. `proc/cmdline`) under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The contents of `rel`, trimmed; `None` when missing or unreadable.
    pub fn read(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.path(rel))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// A sysctl by its name (`net.core.rmem_max`, or with `/` separators when a part
    /// holds a dot: `net/ipv4/conf/eth0.100/rp_filter`), trimmed.
    pub fn sysctl(&self, name: &str) -> Option<String> {
        self.read(&sysctl_path(name))
    }

    /// A sysctl parsed as an unsigned integer.
    pub fn sysctl_u64(&self, name: &str) -> Option<u64> {
        self.sysctl(name).and_then(|s| s.parse().ok())
    }

    /// The names in directory `rel`, sorted; empty when it cannot be listed.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path(rel))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The last component of the target of symlink `rel` (`sys/class/net/eth0/device`
    /// → `virtio2`).
    pub fn link_name(&self, rel: &str) -> Option<String> {
        let target = fs::read_link(self.path(rel)).ok()?;
        target.file_name()?.to_str().map(str::to_owned)
    }

    /// Writes `value` and a newline to `rel` (a `/proc/sys` file under the root).
    pub fn write(&self, rel: &str, value: &str) -> io::Result<()> {
        fs::write(self.path(rel), format!("{value}\n"))
    }
}

/// The path under the root of sysctl `name` (see [`Host::sysctl`]).
pub(crate) fn sysctl_path(name: &str) -> String {
    let sep = if name.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = name.split(sep).collect();
    format!("proc/sys/{}", parts.join("/"))
}

/// The sysctl name of the per-interface setting `leaf` of `iface` under
/// `net.ipv4.conf` (slash form when the interface name holds a dot).
pub(crate) fn conf_name(family: &str, iface: &str, leaf: &str) -> String {
    if iface.contains('.') {
        format!("net/{family}/conf/{iface}/{leaf}")
    } else {
        format!("net.{family}.conf.{iface}.{leaf}")
    }
}
