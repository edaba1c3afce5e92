#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Each verdict of each check, from fixture roots: `tests/fixtures/tuned` (every item ok)
//! and `tests/fixtures/stock` (a distribution's defaults), changed file by file.
//!
//! [`CASES`] is the table: a fixture, what is changed on a copy of it (files, probes,
//! needs), the item looked at, its verdict and what it must say.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{check_with, Root};
use multipoint_tuning::{audit, Item, Needs, Rlimit, Verdict, ITEM_NAMES};

/// Asserts the verdict, and that a fix is given exactly when it is not ok.
#[track_caller]
fn expect(item: &Item, verdict: Verdict) {
    assert_eq!(item.verdict, verdict, "{item}");
    if verdict == Verdict::Ok {
        assert!(item.fix.is_empty(), "an ok item has no fix: {item}");
    } else {
        assert!(
            !item.fix.is_empty(),
            "a {verdict} item says how to fix it: {item}"
        );
    }
    assert!(!item.why.is_empty() && !item.wanted.is_empty() && !item.value.is_empty());
}

#[test]
fn a_tuned_host_is_ok_on_every_item() {
    let root = Root::copy_of("tuned");
    let items = audit(&root.host(), &Needs::default());
    let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ITEM_NAMES);
    for item in &items {
        expect(item, Verdict::Ok);
    }
}

#[test]
fn a_stock_host_warns_but_nothing_is_critical() {
    let root = Root::copy_of("stock");
    let items = audit(&root.host(), &Needs::default());
    assert!(items.iter().all(|i| i.verdict != Verdict::Critical));
    let warned: Vec<&str> = items
        .iter()
        .filter(|i| i.verdict == Verdict::Warn)
        .map(|i| i.name.as_str())
        .collect();
    for name in [
        "kernel.osrelease",
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.core.rmem_default",
        "net.core.netdev_max_backlog",
        "net.ipv4.conf.rp_filter",
        "net.multicast_route",
        "cpu.isolcpus",
        "cpu.nohz_full",
        "cpu.governor",
        "mm.transparent_hugepage",
        "irq.nic_affinity",
    ] {
        assert!(warned.contains(&name), "{name} should warn on a stock host");
    }
}

#[test]
fn an_empty_root_gives_every_item_without_panicking() {
    let root = Root::copy_of("stock");
    for dir in ["proc", "sys"] {
        root.remove(dir);
    }
    let items = audit(
        &root
            .host()
            .with_memlock(Some(Rlimit::new(8 << 20, 8 << 20))),
        &Needs::default(),
    );
    assert_eq!(items.len(), ITEM_NAMES.len());
    assert!(items.iter().all(|i| !i.value.is_empty()));
}

/// What a case changes on its copy of the fixture before the audit.
#[derive(Debug)]
enum Given {
    /// Writes a file (and a newline).
    Set(&'static str, &'static str),
    /// Removes a file or directory.
    Remove(&'static str),
    /// Makes a path a symlink to a target.
    Link(&'static str, &'static str),
    /// Setting up an io_uring fails for this reason.
    IoUringFails(&'static str),
    /// `RLIMIT_MEMLOCK` is (soft, hard) instead of 8 MiB.
    Memlock(u64, u64),
    /// `RLIMIT_MEMLOCK` cannot be read.
    NoMemlock,
    /// The data plane runs this many shards.
    Shards(u32),
    /// One socket joins this many groups.
    Memberships(u32),
    /// One socket filters this many sources.
    Sources(u32),
    /// Publishers send zero-copy from a registered buffer of 256 × 1472 bytes.
    ZeroCopy,
}

/// A field of an item.
#[derive(Debug, Clone, Copy)]
enum Field {
    Value,
    Wanted,
    Why,
    Fix,
}

/// What a field of the item must say.
#[derive(Debug)]
enum Says {
    /// The field is exactly this.
    Is(Field, &'static str),
    /// The field contains this.
    Has(Field, &'static str),
    /// The field starts with this.
    Starts(Field, &'static str),
}

use Field::{Fix, Value, Wanted, Why};
use Given::{
    IoUringFails, Link, Memberships, Memlock, NoMemlock, Remove, Set, Shards, Sources, ZeroCopy,
};
use Says::{Has, Is, Starts};
use Verdict::{Critical, Warn};

/// `Verdict::Ok`, named apart from `Result::Ok`.
const OK: Verdict = Verdict::Ok;
/// `Rlimit::UNLIMITED`.
const UNLIMITED: u64 = Rlimit::UNLIMITED;

/// A route table with one up route (192.168.1.0/24) and no default route.
const ROUTE_WITHOUT_MULTICAST: &str =
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
     eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0";

/// As on this project's VM: eth0 -> virtio2, queues named virtio2-input.0 / -output.0.
const VIRTIO_INTERRUPTS: &str = "           CPU0       CPU1       CPU2       CPU3\n \
     37:          0          0          0          0  PCI-MSIX-0000:00:03.0   0-edge      virtio2-config\n \
     38:          0       4319          0          0  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n \
     39:       3058          0          0          0  PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0";

/// A queue whose name matches no interface, found through the device's PCI MSI vectors.
const MSI_INTERRUPTS: &str = "           CPU0       CPU1       CPU2       CPU3\n \
     64:          0          0          0          0  PCI-MSI 1-edge      mystery-queue";

/// No NIC queue at all, only the timer.
const TIMER_INTERRUPTS: &str = "           CPU0       CPU1       CPU2       CPU3\n  \
     0:         44          0          0          0  IO-APIC   2-edge      timer";

/// One case: fixture, changes, item, verdict, what it says.
type Case = (
    &'static str,
    &'static [Given],
    &'static str,
    Verdict,
    &'static [Says],
);

const OSRELEASE: &str = "proc/sys/kernel/osrelease";
const IO_URING_DISABLED: &str = "proc/sys/kernel/io_uring_disabled";
const ONLINE: &str = "sys/devices/system/cpu/online";
const ISOLATED: &str = "sys/devices/system/cpu/isolated";
const NOHZ_FULL: &str = "sys/devices/system/cpu/nohz_full";
const ETH0_FLAGS: &str = "sys/class/net/eth0/flags";
const ETH1_FLAGS: &str = "sys/class/net/eth1/flags";

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Kernels from 6.0 are ok and older ones warn; an unreadable or odd release warns.
    ("tuned", &[Set(OSRELEASE, "6.8.0-45-generic")], "kernel.osrelease", OK, &[Has(Why, "6.15")]),
    ("tuned", &[Set(OSRELEASE, "5.15.0-91-generic")], "kernel.osrelease", Warn, &[Has(Why, "recvmmsg")]),
    ("tuned", &[Remove(OSRELEASE)], "kernel.osrelease", Warn, &[]),
    ("tuned", &[Set(OSRELEASE, "custom")], "kernel.osrelease", Warn, &[]),
    // io_uring_disabled 1 or 2 warns with the sysctl fix; a kernel without it is ok.
    ("tuned", &[Set(IO_URING_DISABLED, "1")], "kernel.io_uring_disabled", Warn, &[Is(Fix, "sysctl -w kernel.io_uring_disabled=0")]),
    ("tuned", &[Set(IO_URING_DISABLED, "2")], "kernel.io_uring_disabled", Warn, &[Is(Fix, "sysctl -w kernel.io_uring_disabled=0")]),
    ("stock", &[], "kernel.io_uring_disabled", OK, &[Has(Value, "absent")]),
    // An io_uring that cannot be set up warns and says what the fallback costs.
    ("tuned", &[IoUringFails("io_uring_setup failed: Operation not permitted")], "io_uring.setup", Warn,
        &[Has(Value, "Operation not permitted"), Has(Why, "falls back to recvmmsg/sendmmsg"), Has(Why, "msgs/s")]),
    ("tuned", &[], "io_uring.setup", OK, &[]),
    // Memlock is judged against what the kernel charges: 88 KiB for the defaults. Enough
    // for the io_uring probe but not for the rings is critical (the data plane picks
    // io_uring and then fails to start); below even the probe it falls back and warns.
    ("tuned", &[Memlock(88 << 10, UNLIMITED)], "rlimit.memlock", OK, &[Has(Why, "= 88 KiB (90112 bytes")]),
    ("tuned", &[Memlock(UNLIMITED, UNLIMITED)], "rlimit.memlock", OK, &[]),
    ("tuned", &[Memlock(64 << 10, UNLIMITED)], "rlimit.memlock", Critical, &[Has(Why, "ENOMEM"), Starts(Fix, "ulimit -l 8192")]),
    ("tuned", &[Memlock(8 << 10, UNLIMITED)], "rlimit.memlock", Warn, &[]),
    // A low hard limit points at limits.conf.
    ("tuned", &[Memlock(64 << 10, 64 << 10)], "rlimit.memlock", Critical, &[Has(Fix, "/etc/security/limits.d/")]),
    // Zero-copy registered buffers raise the need: 88 KiB + 376,832 bytes (92 pages).
    ("tuned", &[ZeroCopy, Memlock(400 << 10, 8 << 20)], "rlimit.memlock", Critical, &[Has(Wanted, "456 KiB")]),
    // CAP_IPC_LOCK makes the limit irrelevant; an unreadable limit warns.
    ("tuned", &[Set("proc/self/status", "Name:\tx\nCapEff:\t000001ffffffffff"), Memlock(0, 0)], "rlimit.memlock", OK,
        &[Has(Value, "CAP_IPC_LOCK")]),
    ("tuned", &[NoMemlock], "rlimit.memlock", Warn, &[]),
    // Socket buffers below the 8 MiB / 4 MiB requests warn with the exact sysctl; an
    // unreadable sysctl warns.
    ("tuned", &[Set("proc/sys/net/core/rmem_max", "4194304")], "net.core.rmem_max", Warn, &[Is(Fix, "sysctl -w net.core.rmem_max=8388608")]),
    ("tuned", &[Set("proc/sys/net/core/rmem_max", "8388608")], "net.core.rmem_max", OK, &[]),
    ("tuned", &[Set("proc/sys/net/core/wmem_max", "212992")], "net.core.wmem_max", Warn, &[Is(Fix, "sysctl -w net.core.wmem_max=4194304")]),
    ("tuned", &[Set("proc/sys/net/core/rmem_default", "212992")], "net.core.rmem_default", Warn, &[Has(Why, "212992 bytes")]),
    ("tuned", &[Remove("proc/sys/net/core/rmem_max")], "net.core.rmem_max", Warn, &[Is(Value, "unreadable")]),
    // A short backlog warns and reports the drops so far.
    ("stock", &[], "net.core.netdev_max_backlog", Warn, &[Has(Value, "drops since boot: 15")]),
    ("tuned", &[], "net.core.netdev_max_backlog", OK, &[]),
    // Fewer memberships or source filters than needed is critical; no IPv6, no MLD limit.
    ("stock", &[Memberships(21)], "net.ipv4.igmp_max_memberships", Critical,
        &[Has(Why, "ENOBUFS"), Is(Fix, "sysctl -w net.ipv4.igmp_max_memberships=21")]),
    ("stock", &[], "net.ipv4.igmp_max_memberships", OK, &[]),
    ("stock", &[Sources(32)], "net.ipv4.igmp_max_msf", Critical, &[]),
    ("stock", &[Sources(32)], "net.ipv6.mld_max_msf", OK, &[]),
    ("stock", &[Sources(65)], "net.ipv6.mld_max_msf", Critical, &[]),
    ("stock", &[Remove("proc/sys/net/ipv6")], "net.ipv6.mld_max_msf", OK, &[Has(Value, "IPv6 is off")]),
    // Busy polling matters only when the data plane falls back to mmsg.
    ("stock", &[], "net.core.busy_read", OK, &[Has(Why, "ignores it")]),
    ("stock", &[IoUringFails("blocked")], "net.core.busy_read", Warn, &[Is(Fix, "sysctl -w net.core.busy_read=50")]),
    ("stock", &[], "net.core.busy_poll", OK, &[Has(Why, "ignores it")]),
    ("stock", &[IoUringFails("blocked")], "net.core.busy_poll", Warn, &[Is(Fix, "sysctl -w net.core.busy_poll=50")]),
    ("tuned", &[IoUringFails("blocked")], "net.core.busy_read", OK, &[]),
    ("tuned", &[IoUringFails("blocked")], "net.core.busy_poll", OK, &[]),
    // Strict rp_filter on a multicast interface warns; the effective value is
    // max(all, iface), so eth0 and eth1 at 2 stay loose under all=1, and eth1 at 0 becomes
    // strict through `all`, which is then what must change. Loose or none is ok.
    ("stock", &[], "net.ipv4.conf.rp_filter", Warn,
        &[Is(Value, "eth0=1 (all=0)"), Is(Fix, "sysctl -w net.ipv4.conf.eth0.rp_filter=2")]),
    ("tuned", &[Set("proc/sys/net/ipv4/conf/all/rp_filter", "1")], "net.ipv4.conf.rp_filter", OK,
        &[Is(Value, "eth0=2 eth1=2 (all=1)")]),
    ("tuned", &[Set("proc/sys/net/ipv4/conf/all/rp_filter", "1"), Set("proc/sys/net/ipv4/conf/eth1/rp_filter", "0")],
        "net.ipv4.conf.rp_filter", Warn, &[Is(Fix, "sysctl -w net.ipv4.conf.all.rp_filter=2")]),
    ("tuned", &[], "net.ipv4.conf.rp_filter", OK, &[]),
    ("tuned", &[Set(ETH0_FLAGS, "0x1002"), Set(ETH1_FLAGS, "0x1002")], "net.ipv4.conf.rp_filter", OK,
        &[Starts(Value, "no multicast interface")]),
    // No interface with the multicast flag (or up) is critical.
    ("stock", &[Set(ETH0_FLAGS, "0x1003")], "net.multicast_interfaces", OK, &[]),
    ("stock", &[Set(ETH0_FLAGS, "0x3")], "net.multicast_interfaces", Critical, &[Is(Fix, "ip link set dev eth0 multicast on up")]),
    ("stock", &[Set(ETH0_FLAGS, "0x1002")], "net.multicast_interfaces", Critical, &[Has(Value, "eth0 (down)")]),
    // An explicit multicast route is ok; the default route alone, no route (ENETUNREACH)
    // or a route to an interface without the flag warns.
    ("tuned", &[], "net.multicast_route", OK, &[Is(Value, "224.0.0.0/4 dev eth1")]),
    ("stock", &[], "net.multicast_route", Warn,
        &[Is(Value, "only the default route (dev eth0)"), Is(Fix, "ip route add 224.0.0.0/4 dev eth0")]),
    ("stock", &[Set("proc/net/route", ROUTE_WITHOUT_MULTICAST)], "net.multicast_route", Warn, &[Has(Why, "ENETUNREACH")]),
    ("tuned", &[Set(ETH1_FLAGS, "0x3")], "net.multicast_route", Warn, &[Has(Value, "no MULTICAST flag")]),
    // Fewer cores than threads plus one warns.
    ("tuned", &[], "cpu.count", OK, &[]),
    ("tuned", &[Shards(7)], "cpu.count", Warn, &[Starts(Wanted, "≥ 9")]),
    ("tuned", &[Set(ONLINE, "0-1")], "cpu.count", Warn, &[Starts(Wanted, "≥ 3")]),
    // No isolated cores warns only where there are enough to isolate.
    ("stock", &[], "cpu.isolcpus", Warn, &[Has(Fix, "isolcpus=managed_irq,domain,1-2")]),
    ("stock", &[Set(ONLINE, "0-1")], "cpu.isolcpus", OK, &[]),
    // Isolated cores count from sysfs or the command line; too few or all warns.
    ("tuned", &[], "cpu.isolcpus", OK, &[]),
    ("tuned", &[Remove(ISOLATED)], "cpu.isolcpus", OK, &[Is(Value, "2-7")]),
    ("tuned", &[Set(ISOLATED, "7")], "cpu.isolcpus", Warn, &[Has(Why, "1 isolated CPU(s) for 2")]),
    ("tuned", &[Set(ISOLATED, "0-7")], "cpu.isolcpus", Warn, &[Has(Why, "every CPU is isolated")]),
    // Isolated cores without nohz_full warn; with nothing isolated, nohz_full follows
    // whether there is enough to isolate.
    ("tuned", &[], "cpu.nohz_full", OK, &[]),
    ("tuned", &[Set(NOHZ_FULL, "2-5")], "cpu.nohz_full", Warn, &[Has(Why, "isolated CPU(s) 6-7 still take it")]),
    ("tuned", &[Remove(NOHZ_FULL)], "cpu.nohz_full", Warn, &[Has(Value, "not supported")]),
    ("stock", &[], "cpu.nohz_full", Warn, &[]),
    ("stock", &[Set(ONLINE, "0-1")], "cpu.nohz_full", OK, &[]),
    ("stock", &[Set(ONLINE, "0-1"), Remove(NOHZ_FULL)], "cpu.nohz_full", OK, &[Has(Value, "not supported")]),
    // A governor other than performance warns; no cpufreq driver is ok.
    ("stock", &[], "cpu.governor", Warn, &[Is(Value, "powersave on 0-3"), Is(Fix, "cpupower frequency-set -g performance")]),
    ("stock", &[Set("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "performance")], "cpu.governor", Warn,
        &[Is(Value, "performance on 0, powersave on 1-3")]),
    ("stock", &[
        Remove("sys/devices/system/cpu/cpu0/cpufreq"), Remove("sys/devices/system/cpu/cpu1/cpufreq"),
        Remove("sys/devices/system/cpu/cpu2/cpufreq"), Remove("sys/devices/system/cpu/cpu3/cpufreq"),
    ], "cpu.governor", OK, &[Is(Value, "no cpufreq")]),
    // Transparent hugepages `always` warns; a kernel without them is ok.
    ("stock", &[], "mm.transparent_hugepage", Warn,
        &[Is(Value, "enabled=always defrag=madvise"), Is(Fix, "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled")]),
    ("stock", &[
        Set("sys/kernel/mm/transparent_hugepage/enabled", "always madvise [never]"),
        Set("sys/kernel/mm/transparent_hugepage/defrag", "[always] defer defer+madvise madvise never"),
    ], "mm.transparent_hugepage", Warn, &[Has(Fix, "defrag")]),
    ("stock", &[Remove("sys/kernel/mm/transparent_hugepage")], "mm.transparent_hugepage", OK, &[Is(Value, "absent")]),
    // NIC interrupts that may land on any CPU, or on isolated cores, warn.
    ("stock", &[], "irq.nic_affinity", Warn,
        &[Has(Value, "130 eth0-TxRx-0 -> 0-3"), Has(Fix, "echo 0 > /proc/irq/131/smp_affinity_list")]),
    ("tuned", &[], "irq.nic_affinity", OK, &[]),
    ("tuned", &[Set("proc/irq/123/smp_affinity_list", "1-3")], "irq.nic_affinity", Warn, &[Has(Why, "[123]")]),
    // Virtio queues are found through the device link, PCI MSI vectors when no name
    // matches; no NIC queue interrupts is ok.
    ("stock", &[
        Set("proc/interrupts", VIRTIO_INTERRUPTS), Set("proc/irq/38/smp_affinity_list", "1"),
        Set("proc/irq/39/smp_affinity_list", "0"), Link("sys/class/net/eth0/device", "../../../devices/virtio2"),
    ], "irq.nic_affinity", OK, &[Is(Value, "eth0: 38 virtio2-input.0 -> 1; eth0: 39 virtio2-output.0 -> 0")]),
    ("stock", &[
        Set("proc/interrupts", MSI_INTERRUPTS), Set("proc/irq/64/smp_affinity_list", "0-3"),
        Set("sys/class/net/eth0/device/msi_irqs/64", "msix"),
    ], "irq.nic_affinity", Warn, &[Has(Value, "64 mystery-queue")]),
    ("stock", &[Set("proc/interrupts", TIMER_INTERRUPTS)], "irq.nic_affinity", OK, &[Is(Value, "no NIC queue interrupts found")]),
];

/// Runs one case on a fresh copy of its fixture.
fn run((fixture, givens, name, verdict, says): &Case) {
    let root = Root::copy_of(fixture);
    let mut host = root.host();
    let mut needs = Needs::default();
    for given in *givens {
        match *given {
            Set(rel, text) => {
                root.set(rel, text);
            }
            Remove(rel) => {
                root.remove(rel);
            }
            Link(rel, target) => {
                root.link(rel, target);
            }
            IoUringFails(reason) => host = host.with_io_uring(Err(reason.into())),
            Memlock(soft, hard) => host = host.with_memlock(Some(Rlimit::new(soft, hard))),
            NoMemlock => host = host.with_memlock(None),
            Shards(n) => needs.shards = n,
            Memberships(n) => needs.memberships_per_socket = n,
            Sources(n) => needs.sources_per_socket = n,
            ZeroCopy => needs.publisher_registered_bytes = 256 * 1472,
        }
    }
    let item = check_with(&host, &needs, name);
    expect(&item, *verdict);
    for say in *says {
        let (field, text) = match *say {
            Is(field, text) | Has(field, text) | Starts(field, text) => (field, text),
        };
        let got = match field {
            Value => &item.value,
            Wanted => &item.wanted,
            Why => &item.why,
            Fix => &item.fix,
        };
        let holds = match say {
            Is(..) => got == text,
            Has(..) => got.contains(text),
            Starts(..) => got.starts_with(text),
        };
        assert!(holds, "{field:?} should match {say:?}: {item}");
    }
}

#[test]
fn each_check_gives_its_verdict_and_reasons_on_a_changed_fixture() {
    // The memlock cases rest on this: 1 shard (24 KiB ring + 4 KiB buffer ring), 1
    // publisher (36 KiB ring), 2 probes of 12 KiB.
    assert_eq!(Needs::default().locked_bytes(4096), 88 << 10);
    let failed: Vec<String> = CASES
        .iter()
        .enumerate()
        .filter(|(_, case)| catch_unwind(AssertUnwindSafe(|| run(case))).is_err())
        .map(|(i, case)| format!("case {i}: {case:?}"))
        .collect();
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
}
