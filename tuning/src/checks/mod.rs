//! The checks. Each reads a few files of a [`Host`] (or one of its two probes) and
//! returns one [`Item`]; none writes anything, none panics, and a file that cannot be
//! read is reported in the item rather than as an error.
//!
//! [`CHECKS`] is the one list of them: their names, which [`ITEM_NAMES`] publishes, and
//! the order [`audit`] runs them in. Each check builds its item through a [`Check`],
//! which fixes the item's name and what is wanted before the check judges.

pub(crate) mod cpu;
mod kernel;
mod mm;
pub(crate) mod net;

use crate::host::{sysctl_path, Host};
use crate::item::{Item, Verdict};
use crate::needs::Needs;

/// What every check may look at.
pub(crate) struct Input<'a> {
    /// The host audited.
    host: &'a Host,
    /// What the data plane will register and ask for.
    needs: &'a Needs,
    /// The outcome of setting up an io_uring, probed once per audit.
    uring: Result<(), String>,
}

/// A check: reads its [`Input`] and returns its item.
type CheckFn = fn(&Input<'_>) -> Item;

/// Every check with the name of the item it returns, in the order [`audit`] returns
/// them.
const CHECKS: [(&str, CheckFn); 22] = [
    ("kernel.osrelease", kernel::osrelease),
    ("kernel.io_uring_disabled", kernel::io_uring_disabled),
    ("io_uring.setup", kernel::io_uring_setup),
    ("rlimit.memlock", kernel::memlock),
    ("net.core.rmem_max", net::rmem_max),
    ("net.core.wmem_max", net::wmem_max),
    ("net.core.rmem_default", net::rmem_default),
    ("net.core.netdev_max_backlog", net::netdev_max_backlog),
    ("net.ipv4.igmp_max_memberships", net::igmp_max_memberships),
    ("net.ipv4.igmp_max_msf", net::igmp_max_msf),
    ("net.ipv6.mld_max_msf", net::mld_max_msf),
    ("net.core.busy_read", net::busy_read),
    ("net.core.busy_poll", net::busy_poll),
    ("net.ipv4.conf.rp_filter", net::rp_filter),
    ("net.multicast_interfaces", net::multicast_interfaces),
    ("net.multicast_route", net::multicast_route),
    ("cpu.count", cpu::count),
    ("cpu.isolcpus", cpu::isolcpus),
    ("cpu.nohz_full", cpu::nohz_full),
    ("cpu.governor", cpu::governor),
    ("mm.transparent_hugepage", mm::transparent_hugepage),
    ("irq.nic_affinity", cpu::nic_irq_affinity),
];

/// The name of every item [`audit`] returns, in the order it returns them.
pub const ITEM_NAMES: &[&str] = &{
    let mut names = [""; CHECKS.len()];
    let mut i = 0;
    while i < CHECKS.len() {
        names[i] = CHECKS[i].0;
        i += 1;
    }
    names
};

/// Audits `host` for a data plane that needs `needs`: one item per entry of
/// [`ITEM_NAMES`], in that order.
///
/// Sets up (and tears down) one small io_uring when the host's probe is live; reads files
/// otherwise. Never panics; a missing file shows up as an item's value.
pub fn audit(host: &Host, needs: &Needs) -> Vec<Item> {
    let input = Input {
        host,
        needs,
        uring: host.io_uring_setup(),
    };
    CHECKS.iter().map(|(_, check)| check(&input)).collect()
}

/// The item one check builds: its name and what is wanted are fixed first, so that each
/// outcome names only its value, verdict, why and fix.
struct Check<'a> {
    name: &'a str,
    wanted: String,
}

impl<'a> Check<'a> {
    /// The check of item `name`, which wants `wanted`.
    fn new(name: &'a str, wanted: impl Into<String>) -> Check<'a> {
        Check {
            name,
            wanted: wanted.into(),
        }
    }

    /// The item with `verdict` (`fix` is dropped when it is [`Verdict::Ok`]); [`Check::ok`]
    /// and [`Check::warn`] are the usual cases.
    fn item(
        self,
        value: impl Into<String>,
        verdict: Verdict,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Item {
        Item::new(self.name, value, self.wanted, verdict, why, fix)
    }

    /// An ok item: nothing to fix.
    fn ok(self, value: impl Into<String>, why: impl Into<String>) -> Item {
        self.item(value, Verdict::Ok, why, "")
    }

    /// A warning with its fix.
    fn warn(
        self,
        value: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Item {
        self.item(value, Verdict::Warn, why, fix)
    }

    /// The warning for a file (`what`) the check could not read.
    fn unreadable(self, what: &str, fix: impl Into<String>) -> Item {
        let why = format!("{what} could not be read, so the setting cannot be judged");
        self.warn("unreadable", why, fix)
    }

    /// The warning for the sysctl of the check's own name, which could not be read.
    fn unreadable_sysctl(self, fix: impl Into<String>) -> Item {
        let path = format!("/{}", sysctl_path(self.name));
        self.unreadable(&path, fix)
    }
}

/// `sysctl -w name=value`.
fn sysctl_w(name: &str, value: impl std::fmt::Display) -> String {
    format!("sysctl -w {name}={value}")
}
