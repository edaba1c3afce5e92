//! The checks. Each reads a few files of a [`Host`] (or one of its two probes) and
//! returns one [`Item`]; none writes anything, none panics, and a file that cannot be
//! read is reported in the item rather than as an error.

pub(crate) mod cpu;
mod kernel;
mod mm;
pub(crate) mod net;

use crate::host::Host;
use crate::item::{Item, Verdict};
use crate::needs::Needs;

/// The name of every item [`audit`] returns, in the order it returns them.
pub const ITEM_NAMES: &[&str] = &[
    "kernel.osrelease",
    "kernel.io_uring_disabled",
    "io_uring.setup",
    "rlimit.memlock",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.core.rmem_default",
    "net.core.netdev_max_backlog",
    "net.ipv4.igmp_max_memberships",
    "net.ipv4.igmp_max_msf",
    "net.ipv6.mld_max_msf",
    "net.core.busy_read",
    "net.core.busy_poll",
    "net.ipv4.conf.rp_filter",
    "net.multicast_interfaces",
    "net.multicast_route",
    "cpu.count",
    "cpu.isolcpus",
    "cpu.nohz_full",
    "cpu.governor",
    "mm.transparent_hugepage",
    "irq.nic_affinity",
];

/// Audits `host` for a data plane that needs `needs`: one item per entry of
/// [`ITEM_NAMES`], in that order.
///
/// Sets up (and tears down) one small io_uring when the host's probe is live; reads files
/// otherwise. Never panics; a missing file shows up as an item's value.
pub fn audit(host: &Host, needs: &Needs) -> Vec<Item> {
    let uring = host.io_uring_setup();
    let uring_works = uring.is_ok();
    vec![
        kernel::osrelease(host),
        kernel::io_uring_disabled(host),
        kernel::io_uring_setup(uring),
        kernel::memlock(host, needs),
        net::rmem_max(host, needs),
        net::wmem_max(host, needs),
        net::rmem_default(host, needs),
        net::netdev_max_backlog(host),
        net::igmp_max_memberships(host, needs),
        net::igmp_max_msf(host, needs),
        net::mld_max_msf(host, needs),
        net::busy_read(host, uring_works),
        net::busy_poll(host, uring_works),
        net::rp_filter(host),
        net::multicast_interfaces(host),
        net::multicast_route(host),
        cpu::count(host, needs),
        cpu::isolcpus(host, needs),
        cpu::nohz_full(host, needs),
        cpu::governor(host),
        mm::transparent_hugepage(host),
        cpu::nic_irq_affinity(host),
    ]
}

/// The item for a file the check could not read.
fn unreadable(name: &str, what: &str, wanted: impl Into<String>, fix: &str) -> Item {
    Item::new(
        name,
        "unreadable",
        wanted,
        Verdict::Warn,
        format!("{what} could not be read, so the setting cannot be judged"),
        fix,
    )
}

/// `sysctl -w name=value`.
fn sysctl_w(name: &str, value: impl std::fmt::Display) -> String {
    format!("sysctl -w {name}={value}")
}
