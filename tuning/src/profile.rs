//! The low-latency profile: a file for `/etc/sysctl.d/` and the commands that are not
//! sysctls (governor, hugepages, interrupt affinity, kernel parameters).
//!
//! [`profile`] only reads the host, so that values already above what the profile wants
//! are kept rather than lowered. [`apply`] is the only function of this crate that writes,
//! and it writes only the sysctls, through `/proc/sys` under the host's root.

use std::fmt::Write as _;

use crate::checks::cpu::{isolated, nic_irqs, online, shard_cpus, MIN_CPUS_TO_ISOLATE};
use crate::checks::net::{interfaces, WANTED_BACKLOG, WANTED_BUSY_US};
use crate::cpulist;
use crate::error::{Error, Result};
use crate::host::{conf_name, sysctl_path, Host};
use crate::needs::{Bytes, Needs};

/// Where the profile's sysctl file belongs.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/60-multipoint.conf";

/// One sysctl of the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Its name (`net.core.rmem_max`; `/`-separated when a part holds a dot).
    pub name: String,
    /// The value to set.
    pub value: String,
    /// What it does, one line.
    pub comment: String,
}

/// A step that is not a sysctl: printed for a person to run, never run by [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it does and when (may be several lines).
    pub comment: String,
    /// The command; empty when the step is only a note for this host.
    pub command: String,
}

/// The profile for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The sysctls, in file order.
    pub settings: Vec<Setting>,
    /// The other steps.
    pub steps: Vec<Step>,
}

/// One sysctl that [`apply`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The sysctl.
    pub name: String,
    /// Its value before.
    pub old: String,
    /// Its value after (as read back).
    pub new: String,
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// The sysctls it changed, in profile order.
    pub changed: Vec<Change>,
    /// The sysctls that already had the profile's value.
    pub unchanged: Vec<String>,
    /// The sysctls this host does not have (left alone).
    pub missing: Vec<String>,
    /// The writes that failed (the rest were still tried).
    pub failed: Vec<Error>,
}

/// `max(current, floor)`: the profile never lowers a setting that is already higher.
fn at_least(host: &Host, name: &str, floor: u64) -> String {
    host.sysctl_u64(name).unwrap_or(0).max(floor).to_string()
}

/// The profile for `host` and a data plane that needs `needs`.
pub fn profile(host: &Host, needs: &Needs) -> Profile {
    let mut settings = Vec::new();
    let mut set = |name: &str, value: String, comment: &str| {
        settings.push(Setting {
            name: name.to_owned(),
            value,
            comment: comment.to_owned(),
        })
    };
    let rmem = needs.recv_buffer.max(16 << 20);
    let wmem = needs.send_buffer.max(16 << 20);
    set(
        "kernel.io_uring_disabled",
        "0".into(),
        "io_uring for every process (else the data plane falls back to recvmmsg/sendmmsg).",
    );
    set(
        "net.core.rmem_max",
        at_least(host, "net.core.rmem_max", rmem),
        &format!(
            "Ceiling of SO_RCVBUF: room for the {} each subscription asks for, and more.",
            Bytes(needs.recv_buffer)
        ),
    );
    set(
        "net.core.wmem_max",
        at_least(host, "net.core.wmem_max", wmem),
        &format!(
            "Ceiling of SO_SNDBUF: room for the {} each publisher asks for, and more.",
            Bytes(needs.send_buffer)
        ),
    );
    set(
        "net.core.rmem_default",
        at_least(host, "net.core.rmem_default", needs.recv_buffer),
        "Receive buffer of sockets that do not ask: other receivers absorb bursts too.",
    );
    set(
        "net.core.netdev_max_backlog",
        at_least(host, "net.core.netdev_max_backlog", WANTED_BACKLOG),
        "Per-CPU backlog (loopback, veth, RPS): 10 ms at 1 M packets/s before drops.",
    );
    set(
        "net.ipv4.igmp_max_memberships",
        at_least(
            host,
            "net.ipv4.igmp_max_memberships",
            u64::from(needs.memberships_per_socket).max(1024),
        ),
        "IPv4 groups per socket (the 21st join fails with ENOBUFS at the default 20).",
    );
    set(
        "net.ipv4.igmp_max_msf",
        at_least(
            host,
            "net.ipv4.igmp_max_msf",
            u64::from(needs.sources_per_socket).max(256),
        ),
        "IPv4 sources per socket for source-specific joins (default 10).",
    );
    set(
        "net.ipv6.mld_max_msf",
        at_least(
            host,
            "net.ipv6.mld_max_msf",
            u64::from(needs.sources_per_socket).max(256),
        ),
        "IPv6 sources per socket for source-specific joins (default 64).",
    );
    set(
        "net.core.busy_read",
        at_least(host, "net.core.busy_read", WANTED_BUSY_US),
        "µs to busy-poll the NIC queue in reads (recvmmsg fallback; io_uring ignores it). Costs CPU.",
    );
    set(
        "net.core.busy_poll",
        at_least(host, "net.core.busy_poll", WANTED_BUSY_US),
        "µs to busy-poll in poll/epoll (recvmmsg fallback; io_uring ignores it). Costs CPU.",
    );
    // rp_filter: loosen (2) only where it is strict (1); the effective value is
    // max(all, iface), so a strict `all` must go too.
    let loose = "Loose reverse-path filter: strict (1) drops multicast from sources routed via another NIC.";
    for scope in ["all", "default"] {
        let name = format!("net.ipv4.conf.{scope}.rp_filter");
        if host.sysctl_u64(&name) == Some(1) {
            set(&name, "2".into(), loose);
        }
    }
    for iface in interfaces(host).iter().filter(|i| i.is_up_multicast()) {
        let name = conf_name("ipv4", &iface.name, "rp_filter");
        if host.sysctl_u64(&name) == Some(1) {
            set(&name, "2".into(), loose);
        }
    }
    Profile {
        settings,
        steps: steps(host, needs),
    }
}

fn steps(host: &Host, needs: &Needs) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut step = |comment: String, command: String| steps.push(Step { comment, command });
    step(
        "Make the sysctls permanent (they are loaded at every boot):".into(),
        format!("multipoint-tune profile --sysctl-only > {SYSCTL_FILE} && sysctl --system"),
    );
    let page = host.page_size();
    let need = needs.locked_bytes(page);
    let limit = need.next_multiple_of(1 << 20).max(8 << 20);
    step(
        format!(
            "io_uring memory charged to RLIMIT_MEMLOCK without CAP_IPC_LOCK: {} for these \
             needs. Give the data plane at least that (or CAP_IPC_LOCK); for a systemd \
             service: LimitMEMLOCK={limit} in its [Service] section.",
            Bytes(need)
        ),
        format!("ulimit -l {}   # in the shell that starts it", limit >> 10),
    );
    let has_cpufreq = host.list("sys/devices/system/cpu").iter().any(|c| {
        host.read(&format!(
            "sys/devices/system/cpu/{c}/cpufreq/scaling_governor"
        ))
        .is_some()
    });
    if has_cpufreq {
        step(
            "Keep every CPU at its highest clock (no ramp-up after a quiet spell):".into(),
            "cpupower frequency-set -g performance".into(),
        );
    } else {
        step(
            "CPU governor: no cpufreq driver on this host (a VM): nothing to set.".into(),
            String::new(),
        );
    }
    step(
        "Transparent hugepages only where asked; no compaction stalls at page faults:".into(),
        "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled; \
         echo madvise > /sys/kernel/mm/transparent_hugepage/defrag"
            .into(),
    );
    let online = online(host).unwrap_or_default();
    let housekeeping = online.iter().next().copied().unwrap_or(0);
    let irqs = nic_irqs(host);
    if irqs.is_empty() {
        step(
            "NIC interrupts: none found here (loopback or virtual interfaces only).".into(),
            String::new(),
        );
    } else {
        let labels: Vec<String> = irqs.iter().map(|(n, l)| format!("{n} ({l})")).collect();
        let mut cmd = "systemctl disable --now irqbalance".to_owned();
        for (irq, _) in &irqs {
            let _ = write!(
                cmd,
                "; echo {housekeeping} > /proc/irq/{irq}/smp_affinity_list"
            );
        }
        step(
            format!(
                "Pin the NIC queue interrupts {} to housekeeping CPU {housekeeping}, away from \
                 the shards (or each to the core next to its consumer on a NUMA host):",
                labels.join(", ")
            ),
            cmd,
        );
    }
    let target = shard_cpus(&online, needs);
    let list = cpulist::format(&target);
    let args = format!("isolcpus=managed_irq,domain,{list} nohz_full={list} rcu_nocbs={list}");
    let already = isolated(host);
    if online.len() < MIN_CPUS_TO_ISOLATE || target.is_empty() {
        step(
            format!(
                "Kernel parameters: with {} CPUs, isolating any leaves too little for the rest; \
                 on a host with {MIN_CPUS_TO_ISOLATE}+ CPUs isolate the shard cores, e.g. {args}",
                online.len()
            ),
            String::new(),
        );
    } else if already.is_superset(&target) {
        step(
            format!(
                "Kernel parameters: CPUs {} are already isolated.",
                cpulist::format(&already)
            ),
            String::new(),
        );
    } else {
        step(
            format!(
                "Isolate the data plane's cores {list} from the scheduler, the tick and RCU \
                 callbacks, keeping CPU {housekeeping} for housekeeping (then reboot; \
                 Debian/Ubuntu: add them to GRUB_CMDLINE_LINUX in /etc/default/grub and run \
                 update-grub). Pin the shards to these cores:"
            ),
            format!("grubby --update-kernel=ALL --args=\"{args}\""),
        );
    }
    steps
}

impl Profile {
    /// The file for `/etc/sysctl.d/`, with a comment above each setting.
    pub fn sysctl_file(&self) -> String {
        let mut out = format!(
            "# {SYSCTL_FILE}: low-latency multicast profile written by multipoint-tune.\n\
             # Load with `sysctl --system`. Values already higher on this host are kept.\n"
        );
        for s in &self.settings {
            let _ = write!(out, "\n# {}\n{} = {}\n", s.comment, s.name, s.value);
        }
        out
    }

    /// The sysctl file, then the other steps as commented shell commands.
    pub fn render(&self) -> String {
        let mut out = self.sysctl_file();
        out.push_str(
            "\n# ---------------------------------------------------------------------------\n\
             # Not sysctls: review and run these as root yourself (--apply does not).\n",
        );
        for s in &self.steps {
            out.push('\n');
            for line in s.comment.lines() {
                for wrapped in wrap(line, 88) {
                    let _ = writeln!(out, "# {wrapped}");
                }
            }
            if !s.command.is_empty() {
                let _ = writeln!(out, "{}", s.command);
            }
        }
        out
    }
}

/// `text` broken at spaces into lines of at most `width` characters (longer words stay
/// whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Whitespace-normalised value (`/proc/sys` separates vector values with tabs).
fn normalise(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes the profile's sysctls that differ on `host` (through `proc/sys` under its root)
/// and reports each change with its old and new value.
///
/// # Errors
///
/// [`Error::NotRoot`] on the live host (`/`) when not running as root; nothing is written
/// then. A write that fails is reported in [`Applied::failed`] and the others are still
/// tried.
pub fn apply(host: &Host, profile: &Profile) -> Result<Applied> {
    if host.is_live() {
        let euid = crate::probe::euid();
        if euid != 0 {
            return Err(Error::NotRoot { euid });
        }
    }
    let mut applied = Applied::default();
    for s in &profile.settings {
        let rel = sysctl_path(&s.name);
        let Some(old) = host.read(&rel) else {
            applied.missing.push(s.name.clone());
            continue;
        };
        if normalise(&old) == normalise(&s.value) {
            applied.unchanged.push(s.name.clone());
            continue;
        }
        match host.write(&rel, &s.value) {
            Ok(()) => {
                let new = host.read(&rel).unwrap_or_else(|| s.value.clone());
                applied.changed.push(Change {
                    name: s.name.clone(),
                    old: normalise(&old),
                    new: normalise(&new),
                });
            }
            Err(source) => applied.failed.push(Error::Write {
                name: s.name.clone(),
                value: s.value.clone(),
                path: host.path(&rel),
                source,
            }),
        }
    }
    Ok(applied)
}
