//! Network namespaces for the tests that run as root: running a command, a namespace of
//! the test's own that is deleted (with every link in it) when dropped, and running code
//! inside one.
//!
//! Namespaces are named `<prefix><pid>-<n>`, so that one whose process died before its
//! guard ran (an abort) is recognised and deleted by the next [`Netns::new`] of that
//! prefix.

#![allow(
    clippy::panic,
    reason = "test support: a namespace that cannot be made or entered ends the test"
)]

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{setns, CloneFlags};

/// Runs `cmd` with stdin closed: its output, or what went wrong (it could not start, or
/// it failed: its status and error output).
///
/// # Errors
///
/// As above, in words.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip ARGS`: its standard output.
///
/// # Errors
///
/// As [`run`].
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = run(Command::new("ip").args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a thread inside the network namespace `name` (`/run/netns/NAME`) and
/// returns its result; a panic in `f` is resumed in the caller.
///
/// # Panics
///
/// If the namespace cannot be entered.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering {path}: {e}"));
            f()
        });
        match handle.join() {
            Ok(v) => v,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// A network namespace of the test's own, its loopback up; deleted on drop with every
/// link in it. See the module docs.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace `<prefix><pid>-<n>`, after deleting the namespaces of this prefix
    /// whose process is gone.
    ///
    /// # Errors
    ///
    /// `ip netns add` failed (not root, or no `ip`).
    pub fn new(prefix: &str) -> Result<Netns, String> {
        sweep_stale(prefix);
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.try_ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`: its standard output.
    ///
    /// # Errors
    ///
    /// As [`run`].
    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip -n NAME ARGS`: its standard output.
    ///
    /// # Panics
    ///
    /// If it fails, with what went wrong.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `f` on a thread inside the namespace (see [`in_netns`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("{e}");
        }
    }
}

/// Deletes the namespaces `<prefix><pid>-<n>` whose process is gone.
fn sweep_stale(prefix: &str) {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let pid = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('-'))
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
}
