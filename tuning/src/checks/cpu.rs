//! CPUs: how many, which are isolated from the scheduler and the tick, their frequency
//! governor, and where the NIC queues' interrupts land.

use std::collections::BTreeMap;

use super::{Check, Input};
use crate::cpulist::{self, CpuSet};
use crate::host::Host;
use crate::item::{Item, Verdict};
use crate::needs::Needs;

/// Below this many CPUs isolating some is not worth what it takes from the rest.
pub(crate) const MIN_CPUS_TO_ISOLATE: usize = 4;

/// The online CPUs (from `online`, else by counting `cpuN` directories).
pub(crate) fn online(host: &Host) -> Option<CpuSet> {
    if let Some(set) = host
        .read("sys/devices/system/cpu/online")
        .and_then(|t| cpulist::parse(&t))
        .filter(|s| !s.is_empty())
    {
        return Some(set);
    }
    let set: CpuSet = cpu_dirs(host).into_iter().collect();
    (!set.is_empty()).then_some(set)
}

/// The numbers of the `cpuN` directories.
fn cpu_dirs(host: &Host) -> Vec<u32> {
    host.list("sys/devices/system/cpu")
        .iter()
        .filter_map(|n| n.strip_prefix("cpu")?.parse().ok())
        .collect()
}

/// The CPUs isolated from the scheduler: `/sys/devices/system/cpu/isolated`, else the
/// `isolcpus=` kernel parameter.
pub(crate) fn isolated(host: &Host) -> CpuSet {
    if let Some(set) = host
        .read("sys/devices/system/cpu/isolated")
        .and_then(|t| cpulist::parse(&t))
    {
        if !set.is_empty() {
            return set;
        }
    }
    host.read("proc/cmdline")
        .and_then(|c| cpulist::cmdline_value(&c, "isolcpus").and_then(cpulist::parse_isolcpus))
        .unwrap_or_default()
}

/// The CPUs the data plane's threads should have to themselves: 1..=k, CPU 0 (the
/// first online) left for housekeeping.
pub(crate) fn shard_cpus(online: &CpuSet, needs: &Needs) -> CpuSet {
    let threads = (needs.shards + needs.publishers).max(1) as usize;
    let take = threads.min(online.len().saturating_sub(1));
    online.iter().skip(1).take(take).copied().collect()
}

pub(super) fn count(input: &Input<'_>) -> Item {
    let needs = input.needs;
    let want = (needs.shards + needs.publishers + 1) as usize;
    let check = Check::new(
        "cpu.count",
        format!(
            "≥ {want}: one core per shard ({}) and publisher ({}) thread, plus one for the \
             kernel, interrupts and everything else",
            needs.shards, needs.publishers
        ),
    );
    let fix = "run fewer shards (ShardConfig::shards), keep IdleStrategy::Block, or use a \
               machine with more cores";
    let Some(online) = online(input.host) else {
        return check.unreadable("/sys/devices/system/cpu/online", fix);
    };
    let value = format!("{} online ({})", online.len(), cpulist::format(&online));
    if online.len() >= want {
        check.ok(value, "every data plane thread can have a core of its own")
    } else {
        check.warn(
            value,
            "the data plane's threads share cores with each other and the kernel: a spinning \
             shard (IdleStrategy::Spin) starves the others, and a blocked one waits for the \
             scheduler to wake it. On the 2-core test VM, idle spin still halved one-way p50 \
             at 100 k msgs/s (about 10 µs against 20 µs) because only one shard spun",
            fix,
        )
    }
}

/// The kernel command line arguments that isolate `cpus`.
fn isolation_args(cpus: &CpuSet) -> String {
    let list = cpulist::format(cpus);
    format!("isolcpus=managed_irq,domain,{list} nohz_full={list} rcu_nocbs={list}")
}

fn grubby(cpus: &CpuSet) -> String {
    format!(
        "grubby --update-kernel=ALL --args=\"{}\" && reboot   # Debian/Ubuntu: add them to \
         GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot",
        isolation_args(cpus)
    )
}

pub(super) fn isolcpus(input: &Input<'_>) -> Item {
    const NAME: &str = "cpu.isolcpus";
    let (host, needs) = (input.host, input.needs);
    let Some(online) = online(host) else {
        return Check::new(NAME, "the shard cores isolated")
            .unreadable("/sys/devices/system/cpu/online", "");
    };
    let target = shard_cpus(&online, needs);
    let check = Check::new(
        NAME,
        format!(
            "the data plane's cores isolated from the scheduler \
             (isolcpus=managed_irq,domain,{}), CPU {} kept for housekeeping",
            cpulist::format(&target),
            online.iter().next().copied().unwrap_or(0)
        ),
    );
    let iso = isolated(host);
    let threads = (needs.shards + needs.publishers) as usize;
    let fix = grubby(&target);
    if iso.is_empty() {
        if online.len() < MIN_CPUS_TO_ISOLATE {
            return check.ok(
                "none",
                format!(
                    "with {} CPUs, isolating any would leave too little for the kernel and \
                     everything else; on a host with {MIN_CPUS_TO_ISOLATE} or more, isolate the \
                     shard cores",
                    online.len()
                ),
            );
        }
        return check.warn(
            "none",
            "the scheduler may run any task on a shard's core; each time it does, the shard \
             waits and its cache is cold, which shows in p99.9 and max latency rather than in \
             the median",
            fix,
        );
    }
    let value = cpulist::format(&iso);
    if iso.len() >= online.len() {
        return check.warn(
            value,
            "every CPU is isolated: nothing is left for housekeeping, and unpinned threads all \
             pile onto the first CPU",
            fix,
        );
    }
    if iso.len() < threads {
        return check.warn(
            value,
            format!(
                "{} isolated CPU(s) for {threads} data plane threads: the rest share cores with \
                 everything else",
                iso.len()
            ),
            fix,
        );
    }
    check.ok(
        value,
        "enough isolated cores for every data plane thread; pin the shards there (the data \
         plane pins shard i to CPU i mod the CPU count)",
    )
}

pub(super) fn nohz_full(input: &Input<'_>) -> Item {
    let (host, needs) = (input.host, input.needs);
    let online = online(host).unwrap_or_default();
    let iso = isolated(host);
    let target = if iso.is_empty() {
        shard_cpus(&online, needs)
    } else {
        iso.clone()
    };
    let check = Check::new(
        "cpu.nohz_full",
        format!(
            "nohz_full on the isolated cores ({}), so a core running one thread takes no \
             scheduler tick",
            cpulist::format(&target)
        ),
    );
    let fix = grubby(&target);
    let file = host.read("sys/devices/system/cpu/nohz_full");
    let tick = "the scheduler tick interrupts every busy core 100 to 1000 times a second, a \
                few µs each time, in the middle of whatever the shard was doing";
    let Some(text) = file else {
        let verdict = if iso.is_empty() && online.len() < MIN_CPUS_TO_ISOLATE {
            Verdict::Ok
        } else {
            Verdict::Warn
        };
        return check.item(
            "not supported by this kernel (no CONFIG_NO_HZ_FULL)",
            verdict,
            format!(
                "{tick}; this kernel cannot stop it{}",
                if verdict == Verdict::Ok {
                    ", which matters little with too few CPUs to isolate any"
                } else {
                    ""
                }
            ),
            "install a kernel built with CONFIG_NO_HZ_FULL=y, then: ".to_owned() + &fix,
        );
    };
    let nohz = cpulist::parse(&text).unwrap_or_default();
    let value = cpulist::format(&nohz);
    if iso.is_empty() {
        if !nohz.is_empty() || online.len() < MIN_CPUS_TO_ISOLATE {
            return check.ok(
                value,
                format!(
                    "{tick}; with no isolated cores there is little to gain (see cpu.isolcpus)"
                ),
            );
        }
        return check.warn(value, tick, fix);
    }
    if iso.is_subset(&nohz) {
        check.ok(
            value,
            "the isolated cores run tickless while one thread runs on them",
        )
    } else {
        let missing: CpuSet = iso.difference(&nohz).copied().collect();
        check.warn(
            value,
            format!(
                "{tick}; isolated CPU(s) {} still take it",
                cpulist::format(&missing)
            ),
            fix,
        )
    }
}

pub(super) fn governor(input: &Input<'_>) -> Item {
    let host = input.host;
    let check = Check::new("cpu.governor", "performance on every CPU");
    let mut by_governor: BTreeMap<String, CpuSet> = BTreeMap::new();
    for cpu in cpu_dirs(host) {
        if let Some(g) = host.read(&format!(
            "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        )) {
            by_governor.entry(g).or_default().insert(cpu);
        }
    }
    if by_governor.is_empty() {
        return check.ok(
            "no cpufreq",
            "no CPU frequency driver is loaded (usual in a VM: the hypervisor owns the clock), \
             so there is no governor to set here",
        );
    }
    let value = by_governor
        .iter()
        .map(|(g, cpus)| format!("{g} on {}", cpulist::format(cpus)))
        .collect::<Vec<_>>()
        .join(", ");
    if by_governor.keys().all(|g| g == "performance") {
        check.ok(value, "the CPUs stay at their highest frequency")
    } else {
        check.warn(
            value,
            "other governors lower the clock when a core looks idle; a core that blocks between \
             bursts then handles the first packets of the next burst slowly while the clock \
             ramps up (tens of µs to milliseconds), and every packet costs more cycles' worth of \
             time at a lower clock",
            "cpupower frequency-set -g performance",
        )
    }
}

/// One NIC queue interrupt.
struct QueueIrq {
    irq: u32,
    label: String,
    affinity: Option<CpuSet>,
}

/// Whether action name `label` (from `/proc/interrupts`) is a queue of interface `iface`
/// on device `dev` (`eth0-TxRx-0`, `virtio2-input.0`, `mlx5_comp3@pci:0000:3b:00.0`).
fn is_queue_of(label: &str, iface: &str, dev: Option<&str>) -> bool {
    if label.ends_with("-config") || label.ends_with("-event") {
        return false;
    }
    let starts = |token: &str| {
        label == token
            || label
                .strip_prefix(token)
                .is_some_and(|rest| rest.starts_with(['-', '_', '@', '.']))
    };
    starts(iface) || dev.is_some_and(|d| starts(d) || label.ends_with(&format!("@pci:{d}")))
}

/// The queue interrupts of every non-loopback interface, found by name in
/// `/proc/interrupts` and by the device's `msi_irqs`.
fn nic_queue_irqs(host: &Host) -> Option<BTreeMap<String, Vec<QueueIrq>>> {
    let interrupts = host.read("proc/interrupts")?;
    let mut lines = interrupts.lines();
    let ncpus = lines.next()?.split_whitespace().count();
    let table: Vec<(u32, String)> = lines
        .filter_map(|line| {
            let (num, rest) = line.trim_start().split_once(':')?;
            let irq: u32 = num.trim().parse().ok()?;
            let label = rest.split_whitespace().skip(ncpus).last()?.to_owned();
            Some((irq, label))
        })
        .collect();
    let mut out = BTreeMap::new();
    for iface in super::net::interfaces(host) {
        if iface.flags & super::net::IFF_LOOPBACK != 0 {
            continue;
        }
        let dev = host.link_name(&format!("sys/class/net/{}/device", iface.name));
        let mut irqs: Vec<(u32, String)> = table
            .iter()
            .filter(|(_, label)| is_queue_of(label, &iface.name, dev.as_deref()))
            .cloned()
            .collect();
        if irqs.is_empty() {
            for n in host.list(&format!("sys/class/net/{}/device/msi_irqs", iface.name)) {
                if let Ok(irq) = n.parse::<u32>() {
                    let label = table
                        .iter()
                        .find(|(i, _)| *i == irq)
                        .map_or_else(|| format!("msi {irq}"), |(_, l)| l.clone());
                    irqs.push((irq, label));
                }
            }
        }
        if irqs.is_empty() {
            continue;
        }
        let queues = irqs
            .into_iter()
            .map(|(irq, label)| QueueIrq {
                irq,
                label,
                affinity: host
                    .read(&format!("proc/irq/{irq}/smp_affinity_list"))
                    .and_then(|t| cpulist::parse(&t)),
            })
            .collect();
        out.insert(iface.name, queues);
    }
    Some(out)
}

/// The NIC queue interrupts (number and label) of every interface, for the profile.
pub(crate) fn nic_irqs(host: &Host) -> Vec<(u32, String)> {
    nic_queue_irqs(host)
        .unwrap_or_default()
        .into_values()
        .flatten()
        .map(|q| (q.irq, q.label))
        .collect()
}

/// A NIC queue interrupt whose affinity could be read: interface, queue, affinity.
type Pinned<'a> = (&'a String, &'a QueueIrq, &'a CpuSet);

/// The interrupt numbers of the `queues` whose affinity is `affected`.
fn irqs_where(queues: &[Pinned<'_>], affected: impl Fn(&CpuSet) -> bool) -> Vec<u32> {
    queues
        .iter()
        .filter(|(_, _, a)| affected(a))
        .map(|(_, q, _)| q.irq)
        .collect()
}

pub(super) fn nic_irq_affinity(input: &Input<'_>) -> Item {
    let host = input.host;
    let online = online(host).unwrap_or_default();
    let housekeeping = online.iter().next().copied().unwrap_or(0);
    let check = Check::new(
        "irq.nic_affinity",
        format!(
            "each NIC queue's interrupt pinned to a housekeeping core (CPU {housekeeping}, or \
             the core next to its consumer), never to an isolated shard core, with irqbalance \
             off"
        ),
    );
    let Some(by_iface) = nic_queue_irqs(host) else {
        return check.unreadable("/proc/interrupts", "cat /proc/interrupts   # as root");
    };
    let queues: Vec<(&String, &QueueIrq)> = by_iface
        .iter()
        .flat_map(|(i, qs)| qs.iter().map(move |q| (i, q)))
        .collect();
    if queues.is_empty() {
        return check.ok(
            "no NIC queue interrupts found",
            "no interface's queues show up in /proc/interrupts (loopback and virtual interfaces \
             have none), so there is nothing to pin",
        );
    }
    let readable: Vec<Pinned<'_>> = queues
        .iter()
        .filter_map(|(i, q)| q.affinity.as_ref().map(|a| (*i, *q, a)))
        .collect();
    let value = queues
        .iter()
        .map(|(i, q)| {
            let aff = q
                .affinity
                .as_ref()
                .map_or("unreadable".to_owned(), cpulist::format);
            format!("{i}: {} {} -> {aff}", q.irq, q.label)
        })
        .collect::<Vec<_>>()
        .join("; ");
    if readable.is_empty() {
        return check.ok(
            value,
            "the affinity files cannot be read (not root?), so nothing can be judged",
        );
    }
    let fix = readable
        .iter()
        .map(|(_, q, _)| {
            format!(
                "echo {housekeeping} > /proc/irq/{}/smp_affinity_list",
                q.irq
            )
        })
        .collect::<Vec<_>>();
    let fix = format!("systemctl disable --now irqbalance; {}", fix.join("; "));
    let iso = isolated(host);
    let on_isolated = irqs_where(&readable, |a| !a.is_disjoint(&iso));
    if !on_isolated.is_empty() {
        return check.warn(
            value,
            format!(
                "interrupt(s) {on_isolated:?} may run on isolated cores ({}): the hard interrupt \
                 and the softirq that follows preempt the shard there",
                cpulist::format(&iso)
            ),
            fix,
        );
    }
    let unpinned = irqs_where(&readable, |a| online.len() > 1 && online.is_subset(a));
    if !unpinned.is_empty() {
        return check.warn(
            value,
            format!(
                "interrupt(s) {unpinned:?} may be delivered to any CPU: the kernel or irqbalance \
                 picks one and may move it, so the interrupt and its softirq (the kernel's share \
                 of every received packet) can land on a shard's core and preempt it, or far from \
                 the socket's consumer"
            ),
            fix,
        );
    }
    check.ok(
        value,
        "every NIC queue interrupt is pinned, and none to an isolated core",
    )
}
