//! A small lab of network namespaces: hosts, veth links, a bridge, and daemons run inside
//! hosts. Everything a [`Lab`] creates it removes when dropped, also while a test panics;
//! labs left behind by a killed test process are removed by the next [`Lab::new`].
//!
//! Code runs inside a host with [`Host::run`]: the closure runs on a thread that entered
//! the host's namespace, and sockets it creates stay in that namespace wherever they are
//! used afterwards. Addresses and interface names resolve in the namespace of the
//! calling thread, so resolve them inside `run` too.
//!
//! Traffic never leaves the lab: its namespaces have no link to the host's own network.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multipoint_test_support::netns::{in_netns, run};

/// Prefix of every namespace a lab makes: `mpt<pid>-<lab>-<host>`.
const PREFIX: &str = "mpt";

/// Why a lab cannot be built here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

/// A set of network namespaces and the processes running in them, torn down on drop.
#[derive(Debug)]
pub struct Lab {
    name: String,
    tag: String,
    hosts: Vec<String>,
    daemons: Vec<(String, Child)>,
    dir: PathBuf,
}

/// One namespace of a lab: a host, a bridge or a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    ns: String,
    name: String,
}

/// Runs `ip ARGS`, panicking with its error output if it fails.
fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args)).unwrap_or_else(|e| panic!("{e}"))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces of labs whose test process is gone.
fn sweep_stale() {
    let Ok(out) = run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !pid_alive(pid) {
                let _ = run(Command::new("ip").args(["netns", "del", name]));
            }
        }
    }
}

impl Lab {
    /// Starts an empty lab, checking that this process may build one.
    ///
    /// # Errors
    ///
    /// [`Skip`] with the reason when not root, when `ip` is missing, or when the kernel
    /// refuses to create a network namespace.
    pub fn new(name: &str) -> Result<Lab, Skip> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Skip("needs root to create network namespaces".into()));
        }
        if run(Command::new("ip").arg("-V")).is_err() {
            return Err(Skip("needs `ip` from iproute2".into()));
        }
        sweep_stale();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{PREFIX}{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir).map_err(|e| Skip(format!("creating {dir:?}: {e}")))?;
        let lab = Lab {
            name: name.to_owned(),
            tag,
            hosts: Vec::new(),
            daemons: Vec::new(),
            dir,
        };
        // Probe: a namespace must be creatable (containers may forbid it).
        let probe = format!("{}-probe", lab.tag);
        run(Command::new("ip").args(["netns", "add", &probe]))
            .map_err(|e| Skip(format!("cannot create a network namespace: {e}")))?;
        let _ = run(Command::new("ip").args(["netns", "del", &probe]));
        Ok(lab)
    }

    /// A scratch directory that lives as long as the lab.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a host: a namespace with `lo` up and IPv6 duplicate address detection off, so
    /// that addresses are usable at once.
    pub fn host(&mut self, name: &str) -> Host {
        let ns = format!("{}-{name}", self.tag);
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        let host = Host {
            ns,
            name: name.to_owned(),
        };
        host.ip(&["link", "set", "lo", "up"]);
        host.sysctl("net.ipv6.conf.all.accept_dad", "0");
        host.sysctl("net.ipv6.conf.default.accept_dad", "0");
        host
    }

    /// Adds a host holding a bridge `br0` with multicast snooping off, so the bridge
    /// floods multicast to every port whether or not it saw a membership report.
    pub fn bridge(&mut self, name: &str) -> Host {
        let host = self.host(name);
        host.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        host.ip(&["link", "set", "br0", "up"]);
        host
    }

    /// Joins two hosts with a veth pair, `a_if` in `a` and `b_if` in `b`, both up, and
    /// gives each end its addresses (CIDR notation, IPv4 or IPv6).
    pub fn link(
        &mut self,
        a: &Host,
        a_if: &str,
        a_addrs: &[&str],
        b: &Host,
        b_if: &str,
        b_addrs: &[&str],
    ) {
        a.ip(&[
            "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.ns,
        ]);
        for (host, ifname, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
            for addr in addrs {
                let mut args = vec!["addr", "add", addr, "dev", ifname];
                if addr.contains(':') {
                    args.push("nodad");
                }
                host.ip(&args);
            }
            host.ip(&["link", "set", ifname, "up"]);
        }
    }

    /// Plugs `host` into `bridge`'s `br0` with a veth pair: `host_if` in the host, with
    /// the given addresses, and a port named after the host on the bridge.
    pub fn plug(&mut self, bridge: &Host, host: &Host, host_if: &str, host_addrs: &[&str]) {
        let port = format!("p-{}", host.name);
        self.link(host, host_if, host_addrs, bridge, &port, &[]);
        bridge.ip(&["link", "set", &port, "master", "br0"]);
    }

    /// Starts a daemon inside `host`; it is killed when the lab is dropped. Its output
    /// goes to `<dir>/<label>.log`.
    pub fn spawn(&mut self, host: &Host, label: &str, argv: &[&str]) -> Result<(), String> {
        let log = self.dir.join(format!("{label}.log"));
        let out = File::create(&log).map_err(|e| format!("{log:?}: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("{log:?}: {e}"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &host.ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {argv:?}: {e}"))?;
        self.daemons.push((label.to_owned(), child));
        Ok(())
    }

    /// The output a daemon started by [`spawn`](Self::spawn) has written so far.
    pub fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{label}.log"))).unwrap_or_default()
    }

    /// The process id of the daemon started as `label` (`ip netns exec` execs it, so
    /// this is the daemon's own).
    pub fn pid(&self, label: &str) -> Option<u32> {
        self.daemons
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| c.id())
    }

    /// Whether the daemon started as `label` is still running.
    pub fn daemon_running(&mut self, label: &str) -> bool {
        self.daemons
            .iter_mut()
            .find(|(l, _)| l == label)
            .is_some_and(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (label, child) in &mut self.daemons {
            let _ = child.kill();
            if child.wait().is_err() {
                eprintln!("lab {}: could not reap daemon {label}", self.name);
            }
        }
        for ns in self.hosts.iter().rev() {
            if let Err(e) = run(Command::new("ip").args(["netns", "del", ns])) {
                eprintln!("lab {}: {e}", self.name);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Host {
    /// The host's name within its lab.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's name, as `ip netns list` shows it.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Runs `ip ARGS` in this host; panics with the error output if it fails.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Sets a sysctl inside this host's namespace; panics if that fails.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))
            .unwrap_or_else(|e| panic!("{}: setting {key}={value}: {e}", self.name));
    }

    /// The index of interface `ifname` inside this host.
    pub fn index_of(&self, ifname: &str) -> u32 {
        self.run(|| nix::net::if_::if_nametoindex(ifname))
            .unwrap_or_else(|e| panic!("{}: no interface {ifname}: {e}", self.name))
    }

    /// Runs `f` on a thread inside this host's network namespace and returns its result;
    /// a panic in `f` is resumed in the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.ns, f)
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
