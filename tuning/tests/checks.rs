#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Each verdict of each check, from fixture roots: `tests/fixtures/tuned` (every item ok)
//! and `tests/fixtures/stock` (a distribution's defaults), changed file by file.

mod common;

use common::{check, check_with, Root};
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

// ---- kernel.osrelease

#[test]
fn kernels_from_6_0_are_ok_and_older_ones_warn() {
    let root = Root::copy_of("tuned");
    root.set("proc/sys/kernel/osrelease", "6.8.0-45-generic");
    let item = check(&root.host(), "kernel.osrelease");
    expect(&item, Verdict::Ok);
    assert!(item.why.contains("6.15"));
    root.set("proc/sys/kernel/osrelease", "5.15.0-91-generic");
    let item = check(&root.host(), "kernel.osrelease");
    expect(&item, Verdict::Warn);
    assert!(item.why.contains("recvmmsg"));
}

#[test]
fn an_unreadable_kernel_release_warns() {
    let root = Root::copy_of("tuned");
    root.remove("proc/sys/kernel/osrelease");
    expect(&check(&root.host(), "kernel.osrelease"), Verdict::Warn);
    root.set("proc/sys/kernel/osrelease", "custom");
    expect(&check(&root.host(), "kernel.osrelease"), Verdict::Warn);
}

// ---- kernel.io_uring_disabled

#[test]
fn io_uring_disabled_1_or_2_warns_with_the_sysctl_fix() {
    let root = Root::copy_of("tuned");
    for value in ["1", "2"] {
        root.set("proc/sys/kernel/io_uring_disabled", value);
        let item = check(&root.host(), "kernel.io_uring_disabled");
        expect(&item, Verdict::Warn);
        assert_eq!(item.fix, "sysctl -w kernel.io_uring_disabled=0");
    }
}

#[test]
fn a_kernel_without_io_uring_disabled_is_ok() {
    let root = Root::copy_of("stock");
    let item = check(&root.host(), "kernel.io_uring_disabled");
    expect(&item, Verdict::Ok);
    assert!(item.value.contains("absent"));
}

// ---- io_uring.setup

#[test]
fn io_uring_that_cannot_be_set_up_warns_and_says_what_the_fallback_costs() {
    let root = Root::copy_of("tuned");
    let host = root
        .host()
        .with_io_uring(Err("io_uring_setup failed: Operation not permitted".into()));
    let item = check(&host, "io_uring.setup");
    expect(&item, Verdict::Warn);
    assert!(item.value.contains("Operation not permitted"));
    assert!(item.why.contains("falls back to recvmmsg/sendmmsg"));
    assert!(
        item.why.contains("msgs/s"),
        "the cost is quantified: {}",
        item.why
    );
    expect(&check(&root.host(), "io_uring.setup"), Verdict::Ok);
}

// ---- rlimit.memlock

#[test]
fn memlock_is_judged_against_what_the_kernel_charges() {
    let root = Root::copy_of("tuned");
    let needs = Needs::default();
    // 1 shard: 24 KiB ring + 4 KiB buffer ring; 1 publisher: 36 KiB ring; 2 probes of
    // 12 KiB: 88 KiB in all.
    assert_eq!(needs.locked_bytes(4096), 88 << 10);
    let at = |soft: u64| {
        check_with(
            &root
                .host()
                .with_memlock(Some(Rlimit::new(soft, Rlimit::UNLIMITED))),
            &needs,
            "rlimit.memlock",
        )
    };
    let enough = at(88 << 10);
    expect(&enough, Verdict::Ok);
    assert!(
        enough.why.contains("= 88 KiB (90112 bytes"),
        "{}",
        enough.why
    );
    expect(&at(Rlimit::UNLIMITED), Verdict::Ok);
    // Enough for the io_uring probe but not for the rings: the data plane picks io_uring
    // and then fails to start.
    let short = at(64 << 10);
    expect(&short, Verdict::Critical);
    assert!(short.why.contains("ENOMEM"));
    assert!(short.fix.starts_with("ulimit -l 8192"), "{}", short.fix);
    // Below even the probe: it falls back to mmsg and runs.
    expect(&at(8 << 10), Verdict::Warn);
}

#[test]
fn memlock_with_a_low_hard_limit_points_at_limits_conf() {
    let root = Root::copy_of("tuned");
    let host = root
        .host()
        .with_memlock(Some(Rlimit::new(64 << 10, 64 << 10)));
    let item = check(&host, "rlimit.memlock");
    expect(&item, Verdict::Critical);
    assert!(item.fix.contains("/etc/security/limits.d/"), "{}", item.fix);
}

#[test]
fn zero_copy_registered_buffers_raise_the_memlock_need() {
    let root = Root::copy_of("tuned");
    let needs = Needs {
        publisher_registered_bytes: 256 * 1472,
        ..Needs::default()
    };
    // 88 KiB + 376,832 bytes (92 pages) = 456 KiB.
    let host = root
        .host()
        .with_memlock(Some(Rlimit::new(400 << 10, 8 << 20)));
    let item = check_with(&host, &needs, "rlimit.memlock");
    expect(&item, Verdict::Critical);
    assert!(item.wanted.contains("456 KiB"), "{}", item.wanted);
}

#[test]
fn cap_ipc_lock_makes_memlock_irrelevant() {
    let root = Root::copy_of("tuned");
    root.set("proc/self/status", "Name:\tx\nCapEff:\t000001ffffffffff");
    let host = root.host().with_memlock(Some(Rlimit::new(0, 0)));
    let item = check(&host, "rlimit.memlock");
    expect(&item, Verdict::Ok);
    assert!(item.value.contains("CAP_IPC_LOCK"));
}

#[test]
fn an_unreadable_memlock_limit_warns() {
    let root = Root::copy_of("tuned");
    expect(
        &check(&root.host().with_memlock(None), "rlimit.memlock"),
        Verdict::Warn,
    );
}

// ---- socket buffers and backlog

#[test]
fn rmem_max_below_the_8_mib_request_warns_with_the_exact_sysctl() {
    let root = Root::copy_of("tuned");
    root.set("proc/sys/net/core/rmem_max", "4194304");
    let item = check(&root.host(), "net.core.rmem_max");
    expect(&item, Verdict::Warn);
    assert_eq!(item.fix, "sysctl -w net.core.rmem_max=8388608");
    root.set("proc/sys/net/core/rmem_max", "8388608");
    expect(&check(&root.host(), "net.core.rmem_max"), Verdict::Ok);
}

#[test]
fn wmem_max_below_the_4_mib_request_warns() {
    let root = Root::copy_of("tuned");
    root.set("proc/sys/net/core/wmem_max", "212992");
    let item = check(&root.host(), "net.core.wmem_max");
    expect(&item, Verdict::Warn);
    assert_eq!(item.fix, "sysctl -w net.core.wmem_max=4194304");
}

#[test]
fn a_small_rmem_default_warns() {
    let root = Root::copy_of("tuned");
    root.set("proc/sys/net/core/rmem_default", "212992");
    let item = check(&root.host(), "net.core.rmem_default");
    expect(&item, Verdict::Warn);
    assert!(item.why.contains("212992 bytes"));
}

#[test]
fn an_unreadable_sysctl_warns() {
    let root = Root::copy_of("tuned");
    root.remove("proc/sys/net/core/rmem_max");
    let item = check(&root.host(), "net.core.rmem_max");
    expect(&item, Verdict::Warn);
    assert_eq!(item.value, "unreadable");
}

#[test]
fn a_short_backlog_warns_and_reports_drops_so_far() {
    let root = Root::copy_of("stock");
    let item = check(&root.host(), "net.core.netdev_max_backlog");
    expect(&item, Verdict::Warn);
    assert!(
        item.value.contains("drops since boot: 15"),
        "{}",
        item.value
    );
    expect(
        &check(
            &Root::copy_of("tuned").host(),
            "net.core.netdev_max_backlog",
        ),
        Verdict::Ok,
    );
}

// ---- membership limits

#[test]
fn fewer_memberships_than_needed_is_critical() {
    let root = Root::copy_of("stock");
    let needs = Needs {
        memberships_per_socket: 21,
        ..Needs::default()
    };
    let item = check_with(&root.host(), &needs, "net.ipv4.igmp_max_memberships");
    expect(&item, Verdict::Critical);
    assert!(item.why.contains("ENOBUFS"));
    assert_eq!(item.fix, "sysctl -w net.ipv4.igmp_max_memberships=21");
    expect(
        &check(&root.host(), "net.ipv4.igmp_max_memberships"),
        Verdict::Ok,
    );
}

#[test]
fn fewer_source_filters_than_needed_is_critical() {
    let root = Root::copy_of("stock");
    let needs = Needs {
        sources_per_socket: 32,
        ..Needs::default()
    };
    expect(
        &check_with(&root.host(), &needs, "net.ipv4.igmp_max_msf"),
        Verdict::Critical,
    );
    expect(
        &check_with(&root.host(), &needs, "net.ipv6.mld_max_msf"),
        Verdict::Ok,
    );
    let needs = Needs {
        sources_per_socket: 65,
        ..Needs::default()
    };
    expect(
        &check_with(&root.host(), &needs, "net.ipv6.mld_max_msf"),
        Verdict::Critical,
    );
}

#[test]
fn a_host_without_ipv6_has_no_mld_limit_to_judge() {
    let root = Root::copy_of("stock");
    root.remove("proc/sys/net/ipv6");
    let item = check(&root.host(), "net.ipv6.mld_max_msf");
    expect(&item, Verdict::Ok);
    assert!(item.value.contains("IPv6 is off"));
}

// ---- busy polling

#[test]
fn busy_polling_matters_only_when_the_data_plane_falls_back_to_mmsg() {
    let root = Root::copy_of("stock");
    for name in ["net.core.busy_read", "net.core.busy_poll"] {
        let uring = check(&root.host(), name);
        expect(&uring, Verdict::Ok);
        assert!(uring.why.contains("ignores it"));
        let mmsg = check(&root.host().with_io_uring(Err("blocked".into())), name);
        expect(&mmsg, Verdict::Warn);
        assert_eq!(mmsg.fix, format!("sysctl -w {name}=50"));
    }
    let tuned = Root::copy_of("tuned");
    let host = tuned.host().with_io_uring(Err("blocked".into()));
    expect(&check(&host, "net.core.busy_read"), Verdict::Ok);
    expect(&check(&host, "net.core.busy_poll"), Verdict::Ok);
}

// ---- rp_filter

#[test]
fn strict_rp_filter_on_a_multicast_interface_warns() {
    let root = Root::copy_of("stock");
    let item = check(&root.host(), "net.ipv4.conf.rp_filter");
    expect(&item, Verdict::Warn);
    assert_eq!(item.value, "eth0=1 (all=0)");
    assert_eq!(item.fix, "sysctl -w net.ipv4.conf.eth0.rp_filter=2");
}

#[test]
fn strict_rp_filter_in_conf_all_is_loosened_too() {
    let root = Root::copy_of("tuned");
    root.set("proc/sys/net/ipv4/conf/all/rp_filter", "1");
    // The effective value is max(all, iface): eth0 and eth1 at 2 stay loose.
    let item = check(&root.host(), "net.ipv4.conf.rp_filter");
    expect(&item, Verdict::Ok);
    assert_eq!(item.value, "eth0=2 eth1=2 (all=1)");
    // eth1 at 0 becomes strict through `all`, so `all` is what must change.
    root.set("proc/sys/net/ipv4/conf/eth1/rp_filter", "0");
    let item = check(&root.host(), "net.ipv4.conf.rp_filter");
    expect(&item, Verdict::Warn);
    assert_eq!(item.fix, "sysctl -w net.ipv4.conf.all.rp_filter=2");
}

#[test]
fn loose_or_no_reverse_path_filtering_is_ok() {
    let root = Root::copy_of("tuned");
    expect(&check(&root.host(), "net.ipv4.conf.rp_filter"), Verdict::Ok);
    root.set("sys/class/net/eth0/flags", "0x1002");
    root.set("sys/class/net/eth1/flags", "0x1002");
    let item = check(&root.host(), "net.ipv4.conf.rp_filter");
    expect(&item, Verdict::Ok);
    assert!(item.value.starts_with("no multicast interface"));
}

// ---- multicast interfaces and route

#[test]
fn no_interface_with_the_multicast_flag_is_critical() {
    let root = Root::copy_of("stock");
    root.set("sys/class/net/eth0/flags", "0x1003");
    expect(
        &check(&root.host(), "net.multicast_interfaces"),
        Verdict::Ok,
    );
    root.set("sys/class/net/eth0/flags", "0x3");
    let item = check(&root.host(), "net.multicast_interfaces");
    expect(&item, Verdict::Critical);
    assert_eq!(item.fix, "ip link set dev eth0 multicast on up");
    root.set("sys/class/net/eth0/flags", "0x1002");
    let item = check(&root.host(), "net.multicast_interfaces");
    expect(&item, Verdict::Critical);
    assert!(item.value.contains("eth0 (down)"));
}

#[test]
fn an_explicit_multicast_route_is_ok_and_the_default_route_alone_warns() {
    let tuned = Root::copy_of("tuned");
    let item = check(&tuned.host(), "net.multicast_route");
    expect(&item, Verdict::Ok);
    assert_eq!(item.value, "224.0.0.0/4 dev eth1");
    let stock = Root::copy_of("stock");
    let item = check(&stock.host(), "net.multicast_route");
    expect(&item, Verdict::Warn);
    assert_eq!(item.value, "only the default route (dev eth0)");
    assert_eq!(item.fix, "ip route add 224.0.0.0/4 dev eth0");
}

#[test]
fn no_route_for_multicast_warns_of_enetunreach() {
    let root = Root::copy_of("stock");
    root.set(
        "proc/net/route",
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
         eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0",
    );
    let item = check(&root.host(), "net.multicast_route");
    expect(&item, Verdict::Warn);
    assert!(item.why.contains("ENETUNREACH"));
}

#[test]
fn a_multicast_route_to_an_interface_without_the_flag_warns() {
    let root = Root::copy_of("tuned");
    root.set("sys/class/net/eth1/flags", "0x3");
    let item = check(&root.host(), "net.multicast_route");
    expect(&item, Verdict::Warn);
    assert!(item.value.contains("no MULTICAST flag"));
}

// ---- CPUs

#[test]
fn fewer_cores_than_threads_plus_one_warns() {
    let root = Root::copy_of("tuned");
    expect(&check(&root.host(), "cpu.count"), Verdict::Ok);
    let needs = Needs {
        shards: 7,
        ..Needs::default()
    };
    let item = check_with(&root.host(), &needs, "cpu.count");
    expect(&item, Verdict::Warn);
    assert!(item.wanted.starts_with("≥ 9"), "{}", item.wanted);
    root.set("sys/devices/system/cpu/online", "0-1");
    let item = check(&root.host(), "cpu.count");
    expect(&item, Verdict::Warn);
    assert!(item.wanted.starts_with("≥ 3"));
}

#[test]
fn no_isolated_cores_warns_only_where_there_are_enough_to_isolate() {
    let stock = Root::copy_of("stock");
    let item = check(&stock.host(), "cpu.isolcpus");
    expect(&item, Verdict::Warn);
    assert!(
        item.fix.contains("isolcpus=managed_irq,domain,1-2"),
        "{}",
        item.fix
    );
    stock.set("sys/devices/system/cpu/online", "0-1");
    expect(&check(&stock.host(), "cpu.isolcpus"), Verdict::Ok);
}

#[test]
fn isolated_cores_count_from_sysfs_or_the_command_line() {
    let root = Root::copy_of("tuned");
    expect(&check(&root.host(), "cpu.isolcpus"), Verdict::Ok);
    root.remove("sys/devices/system/cpu/isolated");
    let item = check(&root.host(), "cpu.isolcpus");
    expect(&item, Verdict::Ok);
    assert_eq!(item.value, "2-7");
}

#[test]
fn too_few_or_all_cores_isolated_warns() {
    let root = Root::copy_of("tuned");
    root.set("sys/devices/system/cpu/isolated", "7");
    let item = check(&root.host(), "cpu.isolcpus");
    expect(&item, Verdict::Warn);
    assert!(item.why.contains("1 isolated CPU(s) for 2"));
    root.set("sys/devices/system/cpu/isolated", "0-7");
    let item = check(&root.host(), "cpu.isolcpus");
    expect(&item, Verdict::Warn);
    assert!(item.why.contains("every CPU is isolated"));
}

#[test]
fn isolated_cores_without_nohz_full_warn() {
    let root = Root::copy_of("tuned");
    expect(&check(&root.host(), "cpu.nohz_full"), Verdict::Ok);
    root.set("sys/devices/system/cpu/nohz_full", "2-5");
    let item = check(&root.host(), "cpu.nohz_full");
    expect(&item, Verdict::Warn);
    assert!(item.why.contains("isolated CPU(s) 6-7 still take it"));
    root.remove("sys/devices/system/cpu/nohz_full");
    let item = check(&root.host(), "cpu.nohz_full");
    expect(&item, Verdict::Warn);
    assert!(item.value.contains("not supported"));
}

#[test]
fn nohz_full_follows_isolation_when_nothing_is_isolated() {
    let stock = Root::copy_of("stock");
    expect(&check(&stock.host(), "cpu.nohz_full"), Verdict::Warn);
    stock.set("sys/devices/system/cpu/online", "0-1");
    expect(&check(&stock.host(), "cpu.nohz_full"), Verdict::Ok);
    stock.remove("sys/devices/system/cpu/nohz_full");
    let item = check(&stock.host(), "cpu.nohz_full");
    expect(&item, Verdict::Ok);
    assert!(item.value.contains("not supported"));
}

#[test]
fn a_governor_other_than_performance_warns() {
    let root = Root::copy_of("stock");
    let item = check(&root.host(), "cpu.governor");
    expect(&item, Verdict::Warn);
    assert_eq!(item.value, "powersave on 0-3");
    assert_eq!(item.fix, "cpupower frequency-set -g performance");
    root.set(
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
        "performance",
    );
    let item = check(&root.host(), "cpu.governor");
    assert_eq!(item.value, "performance on 0, powersave on 1-3");
    expect(&item, Verdict::Warn);
}

#[test]
fn no_cpufreq_driver_is_ok() {
    let root = Root::copy_of("stock");
    for c in 0..4 {
        root.remove(&format!("sys/devices/system/cpu/cpu{c}/cpufreq"));
    }
    let item = check(&root.host(), "cpu.governor");
    expect(&item, Verdict::Ok);
    assert_eq!(item.value, "no cpufreq");
}

// ---- transparent hugepages

#[test]
fn transparent_hugepages_always_warns() {
    let root = Root::copy_of("stock");
    let item = check(&root.host(), "mm.transparent_hugepage");
    expect(&item, Verdict::Warn);
    assert_eq!(item.value, "enabled=always defrag=madvise");
    assert_eq!(
        item.fix,
        "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled"
    );
    root.set(
        "sys/kernel/mm/transparent_hugepage/enabled",
        "always madvise [never]",
    );
    root.set(
        "sys/kernel/mm/transparent_hugepage/defrag",
        "[always] defer defer+madvise madvise never",
    );
    let item = check(&root.host(), "mm.transparent_hugepage");
    expect(&item, Verdict::Warn);
    assert!(item.fix.contains("defrag"));
}

#[test]
fn a_kernel_without_transparent_hugepages_is_ok() {
    let root = Root::copy_of("stock");
    root.remove("sys/kernel/mm/transparent_hugepage");
    let item = check(&root.host(), "mm.transparent_hugepage");
    expect(&item, Verdict::Ok);
    assert_eq!(item.value, "absent");
}

// ---- NIC interrupt affinity

#[test]
fn nic_interrupts_that_may_land_on_any_cpu_warn() {
    let root = Root::copy_of("stock");
    let item = check(&root.host(), "irq.nic_affinity");
    expect(&item, Verdict::Warn);
    assert!(
        item.value.contains("130 eth0-TxRx-0 -> 0-3"),
        "{}",
        item.value
    );
    assert!(item
        .fix
        .contains("echo 0 > /proc/irq/131/smp_affinity_list"));
}

#[test]
fn nic_interrupts_on_isolated_cores_warn() {
    let root = Root::copy_of("tuned");
    expect(&check(&root.host(), "irq.nic_affinity"), Verdict::Ok);
    root.set("proc/irq/123/smp_affinity_list", "1-3");
    let item = check(&root.host(), "irq.nic_affinity");
    expect(&item, Verdict::Warn);
    assert!(item.why.contains("[123]"), "{}", item.why);
}

#[test]
fn virtio_queues_are_found_through_the_device_link() {
    // As on this project's VM: eth0 -> virtio2, queues named virtio2-input.0 / -output.0.
    let root = Root::copy_of("stock");
    root.set(
        "proc/interrupts",
        "           CPU0       CPU1       CPU2       CPU3\n \
         37:          0          0          0          0  PCI-MSIX-0000:00:03.0   0-edge      virtio2-config\n \
         38:          0       4319          0          0  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n \
         39:       3058          0          0          0  PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0",
    );
    root.set("proc/irq/38/smp_affinity_list", "1");
    root.set("proc/irq/39/smp_affinity_list", "0");
    root.link("sys/class/net/eth0/device", "../../../devices/virtio2");
    let item = check(&root.host(), "irq.nic_affinity");
    expect(&item, Verdict::Ok);
    assert_eq!(
        item.value,
        "eth0: 38 virtio2-input.0 -> 1; eth0: 39 virtio2-output.0 -> 0"
    );
}

#[test]
fn pci_msi_vectors_are_used_when_no_name_matches() {
    let root = Root::copy_of("stock");
    root.set(
        "proc/interrupts",
        "           CPU0       CPU1       CPU2       CPU3\n \
         64:          0          0          0          0  PCI-MSI 1-edge      mystery-queue",
    );
    root.set("proc/irq/64/smp_affinity_list", "0-3");
    root.set("sys/class/net/eth0/device/msi_irqs/64", "msix");
    let item = check(&root.host(), "irq.nic_affinity");
    expect(&item, Verdict::Warn);
    assert!(item.value.contains("64 mystery-queue"));
}

#[test]
fn no_nic_queue_interrupts_is_ok() {
    let root = Root::copy_of("stock");
    root.set(
        "proc/interrupts",
        "           CPU0       CPU1       CPU2       CPU3\n  \
         0:         44          0          0          0  IO-APIC   2-edge      timer",
    );
    let item = check(&root.host(), "irq.nic_affinity");
    expect(&item, Verdict::Ok);
    assert_eq!(item.value, "no NIC queue interrupts found");
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
