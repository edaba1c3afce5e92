//! Networking: socket buffer ceilings, the backlog queue, membership limits, busy
//! polling, reverse-path filtering, multicast interfaces and the multicast route.

use std::net::Ipv4Addr;

use super::{sysctl_w, Check, Input};
use crate::host::{conf_name, Host};
use crate::item::{Item, Verdict};
use crate::needs::Bytes;

/// `IFF_UP` in `/sys/class/net/*/flags`.
pub(crate) const IFF_UP: u32 = 0x1;
/// `IFF_LOOPBACK`.
pub(crate) const IFF_LOOPBACK: u32 = 0x8;
/// `IFF_MULTICAST`.
pub(crate) const IFF_MULTICAST: u32 = 0x1000;

/// The backlog length the audit asks for (datagrams per CPU).
pub(crate) const WANTED_BACKLOG: u64 = 10_000;
/// What the profile sets busy_read and busy_poll to (µs).
pub(crate) const WANTED_BUSY_US: u64 = 50;

/// A network interface and its flags.
#[derive(Debug, Clone)]
pub(crate) struct Iface {
    pub(crate) name: String,
    pub(crate) flags: u32,
}

impl Iface {
    pub(crate) fn is_up_multicast(&self) -> bool {
        self.flags & IFF_UP != 0 && self.flags & IFF_MULTICAST != 0
    }
}

/// Every interface under `sys/class/net` whose flags can be read.
pub(crate) fn interfaces(host: &Host) -> Vec<Iface> {
    host.list("sys/class/net")
        .into_iter()
        .filter_map(|name| {
            let raw = host.read(&format!("sys/class/net/{name}/flags"))?;
            let flags = u32::from_str_radix(raw.trim_start_matches("0x"), 16).ok()?;
            Some(Iface { name, flags })
        })
        .collect()
}

/// An "at least" sysctl: `Ok` at or above `want`, `below` under it.
struct AtLeast<'a> {
    name: &'a str,
    want: u64,
    wanted: String,
    below: Verdict,
    why_ok: String,
    why_low: String,
}

impl AtLeast<'_> {
    fn judge(self, host: &Host) -> Item {
        let check = Check::new(self.name, self.wanted);
        let fix = sysctl_w(self.name, self.want);
        let Some(value) = host.sysctl_u64(self.name) else {
            return check.unreadable_sysctl(fix);
        };
        if value >= self.want {
            check.ok(value.to_string(), self.why_ok)
        } else {
            check.item(value.to_string(), self.below, self.why_low, fix)
        }
    }
}

pub(super) fn rmem_max(input: &Input<'_>) -> Item {
    let want = input.needs.recv_buffer;
    AtLeast {
        name: "net.core.rmem_max",
        want,
        wanted: format!(
            "≥ {want} (the {} SO_RCVBUF each subscription asks for)",
            Bytes(want)
        ),
        below: Verdict::Warn,
        why_ok: format!(
            "each subscription gets the {} receive buffer it asks for (the kernel doubles it \
             for bookkeeping), room to absorb a burst while its shard is busy or descheduled",
            Bytes(want)
        ),
        why_low: format!(
            "the kernel silently caps SO_RCVBUF at rmem_max, so each subscription gets less \
             than the {} it asks for; a burst that overflows the buffer is dropped (the data \
             plane counts it as kernel drops, and gaps follow). Warn, not critical: it \
             receives, with less slack",
            Bytes(want)
        ),
    }
    .judge(input.host)
}

pub(super) fn wmem_max(input: &Input<'_>) -> Item {
    let want = input.needs.send_buffer;
    AtLeast {
        name: "net.core.wmem_max",
        want,
        wanted: format!(
            "≥ {want} (the {} SO_SNDBUF each publisher asks for)",
            Bytes(want)
        ),
        below: Verdict::Warn,
        why_ok: format!(
            "each publisher gets the {} send buffer it asks for",
            Bytes(want)
        ),
        why_low: format!(
            "the kernel caps SO_SNDBUF at wmem_max, so each publisher gets less than the {} it \
             asks for; a batch of GSO sends that does not fit waits (counted as backpressure) \
             instead of leaving at once",
            Bytes(want)
        ),
    }
    .judge(input.host)
}

pub(super) fn rmem_default(input: &Input<'_>) -> Item {
    let want = input.needs.recv_buffer;
    let have = input.host.sysctl_u64("net.core.rmem_default").unwrap_or(0);
    AtLeast {
        name: "net.core.rmem_default",
        want,
        wanted: format!(
            "≥ {want} ({}), like the data plane's own request",
            Bytes(want)
        ),
        below: Verdict::Warn,
        why_ok: "sockets that do not set SO_RCVBUF also get a deep receive buffer".into(),
        why_low: format!(
            "the data plane sets SO_RCVBUF itself, but every other receiver on this host that \
             does not (feed handlers, capture tools, a gap-fill client) gets only this: {have} \
             bytes hold roughly {}–{} full-size datagrams (each costs 2–4 KiB of kernel memory \
             with its bookkeeping), a fraction of a millisecond of a busy feed",
            have / 4096,
            have / 2048
        ),
    }
    .judge(input.host)
}

pub(super) fn netdev_max_backlog(input: &Input<'_>) -> Item {
    let drops = backlog_drops(input.host);
    let mut item = AtLeast {
        name: "net.core.netdev_max_backlog",
        want: WANTED_BACKLOG,
        wanted: format!("≥ {WANTED_BACKLOG} packets per CPU"),
        below: Verdict::Warn,
        why_ok: "the per-CPU backlog holds a 10 ms burst at 1 M packets/s".into(),
        why_low: "the per-CPU backlog queue (packets from loopback, veth and RPS wait there \
                  for the softirq) drops whatever arrives once it is full; at 1 M packets/s the \
                  default 1000 is 1 ms of traffic"
            .into(),
    }
    .judge(input.host);
    if let Some(drops) = drops {
        item.value = format!("{} (backlog drops since boot: {drops})", item.value);
    }
    item
}

/// Packets dropped because a CPU's backlog was full (column 2 of
/// `/proc/net/softnet_stat`), summed over CPUs.
fn backlog_drops(host: &Host) -> Option<u64> {
    let text = host.read("proc/net/softnet_stat")?;
    let mut total = 0u64;
    for line in text.lines() {
        let field = line.split_whitespace().nth(1)?;
        total += u64::from_str_radix(field, 16).ok()?;
    }
    Some(total)
}

pub(super) fn igmp_max_memberships(input: &Input<'_>) -> Item {
    let want = u64::from(input.needs.memberships_per_socket);
    AtLeast {
        name: "net.ipv4.igmp_max_memberships",
        want,
        wanted: format!("≥ {want} (the most IPv4 groups one socket joins)"),
        below: Verdict::Critical,
        why_ok: format!(
            "a limit per socket: each socket may join this many IPv4 groups, and the data plane \
             joins {want} per socket"
        ),
        why_low: format!(
            "a limit per socket: the join beyond it fails with ENOBUFS, so a subscription that \
             needs {want} groups on one socket cannot be made"
        ),
    }
    .judge(input.host)
}

pub(super) fn igmp_max_msf(input: &Input<'_>) -> Item {
    let want = u64::from(input.needs.sources_per_socket);
    AtLeast {
        name: "net.ipv4.igmp_max_msf",
        want,
        wanted: format!("≥ {want} (the most sources one socket filters, source-specific joins)"),
        below: Verdict::Critical,
        why_ok: "enough source filters per socket for the source-specific joins asked for".into(),
        why_low: format!(
            "the source-specific join beyond this many sources on one socket fails with \
             ENOBUFS; {want} are needed"
        ),
    }
    .judge(input.host)
}

pub(super) fn mld_max_msf(input: &Input<'_>) -> Item {
    const NAME: &str = "net.ipv6.mld_max_msf";
    let want = u64::from(input.needs.sources_per_socket);
    if input.host.sysctl(NAME).is_none() && input.host.list("proc/sys/net/ipv6").is_empty() {
        return Check::new(NAME, format!("≥ {want} where IPv6 multicast is used")).ok(
            "absent (IPv6 is off on this host)",
            "no IPv6 here, so no IPv6 multicast to limit; IPv4 groups are unaffected",
        );
    }
    AtLeast {
        name: NAME,
        want,
        wanted: format!("≥ {want} (the most sources one IPv6 socket filters)"),
        below: Verdict::Critical,
        why_ok: "enough source filters per IPv6 socket for the source-specific joins asked for"
            .into(),
        why_low: format!(
            "the IPv6 source-specific join beyond this many sources on one socket fails with \
             ENOBUFS; {want} are needed"
        ),
    }
    .judge(input.host)
}

fn busy(input: &Input<'_>, name: &str, used_by: &str) -> Item {
    let check = Check::new(
        name,
        format!(
            "{WANTED_BUSY_US} (µs) where receive goes through {used_by}; io_uring does not use it"
        ),
    );
    let fix = sysctl_w(name, WANTED_BUSY_US);
    let Some(value) = input.host.sysctl_u64(name) else {
        return check.unreadable_sysctl(fix);
    };
    let what = format!(
        "busy polling spins on the NIC's receive queue for up to this many µs instead of \
         waiting for the interrupt and softirq, saving their wake-up latency at the price of \
         CPU; it needs a driver with NAPI (not loopback) and applies to sockets created after \
         it is set. It acts in {used_by}, i.e. the recvmmsg fallback"
    );
    if input.uring.is_ok() {
        return check.ok(
            value.to_string(),
            format!(
                "{what}; the data plane receives through io_uring here, which ignores it (its own \
                 NAPI busy polling, IORING_REGISTER_NAPI, is not used yet), so {value} costs \
                 nothing"
            ),
        );
    }
    // The data plane runs the mmsg fallback here, where only 0 (off) costs latency.
    let verdict = if value == 0 {
        Verdict::Warn
    } else {
        Verdict::Ok
    };
    check.item(
        value.to_string(),
        verdict,
        format!("{what}, which is what the data plane runs on here (io_uring fails)"),
        fix,
    )
}

pub(super) fn busy_read(input: &Input<'_>) -> Item {
    busy(
        input,
        "net.core.busy_read",
        "non-blocking and blocking reads (recvmmsg)",
    )
}

pub(super) fn busy_poll(input: &Input<'_>) -> Item {
    busy(input, "net.core.busy_poll", "poll(2) and epoll waits")
}

pub(super) fn rp_filter(input: &Input<'_>) -> Item {
    let host = input.host;
    let check = Check::new(
        "net.ipv4.conf.rp_filter",
        "0 (off) or 2 (loose) on every interface that receives multicast; the effective value \
         is max(conf.all, conf.IFACE)",
    );
    let all = host.sysctl_u64("net.ipv4.conf.all.rp_filter");
    let mut strict = Vec::new();
    let mut values = Vec::new();
    for iface in interfaces(host).iter().filter(|i| i.is_up_multicast()) {
        let own = host.sysctl_u64(&conf_name("ipv4", &iface.name, "rp_filter"));
        let effective = match (all, own) {
            (Some(a), Some(o)) => Some(a.max(o)),
            (a, o) => a.or(o),
        };
        match effective {
            Some(e) => values.push(format!("{}={e}", iface.name)),
            None => values.push(format!("{}=unreadable", iface.name)),
        }
        if effective == Some(1) {
            strict.push((iface.name.clone(), own == Some(1)));
        }
    }
    let all_text = all.map_or("unreadable".to_owned(), |a| a.to_string());
    if values.is_empty() {
        return check.ok(
            format!("no multicast interface (all={all_text})"),
            "no interface is up with the MULTICAST flag, so there is nothing to filter (see \
             net.multicast_interfaces)",
        );
    }
    let value = format!("{} (all={all_text})", values.join(" "));
    if strict.is_empty() {
        return check.ok(
            value,
            "no multicast interface filters strictly, so multicast from any source reaches its \
             sockets",
        );
    }
    let mut settings = Vec::new();
    if all == Some(1) {
        settings.push("net.ipv4.conf.all.rp_filter=2".to_owned());
    }
    for (name, own_strict) in &strict {
        if *own_strict {
            settings.push(format!("{}=2", conf_name("ipv4", name, "rp_filter")));
        }
    }
    let names: Vec<&str> = strict.iter().map(|(n, _)| n.as_str()).collect();
    check.warn(
        value,
        format!(
            "strict reverse-path filtering on {} drops multicast whose source is not routed \
             back out of the same interface: the A/B feed pair on two NICs, or a feed on a NIC \
             that is not the default route. The drop is silent (only nstat's \
             IPReversePathFilter counts it)",
            names.join(", ")
        ),
        format!("sysctl -w {}", settings.join(" ")),
    )
}

pub(super) fn multicast_interfaces(input: &Input<'_>) -> Item {
    let check = Check::new(
        "net.multicast_interfaces",
        "at least one interface up with the MULTICAST flag (IFF_MULTICAST, 0x1000)",
    );
    let ifaces = interfaces(input.host);
    if ifaces.is_empty() {
        return check.unreadable(
            "/sys/class/net/*/flags",
            "ip link show   # and: ip link set dev IFACE multicast on",
        );
    }
    let good: Vec<&str> = ifaces
        .iter()
        .filter(|i| i.is_up_multicast())
        .map(|i| i.name.as_str())
        .collect();
    let others: Vec<String> = ifaces
        .iter()
        .filter(|i| !i.is_up_multicast())
        .map(|i| {
            let why = if i.flags & IFF_UP == 0 {
                "down"
            } else {
                "no MULTICAST"
            };
            format!("{} ({why})", i.name)
        })
        .collect();
    let value = if others.is_empty() {
        good.join(", ")
    } else if good.is_empty() {
        format!("none; {}", others.join(", "))
    } else {
        format!("{}; not: {}", good.join(", "), others.join(", "))
    };
    if good.is_empty() {
        let candidate = ifaces
            .iter()
            .find(|i| i.flags & IFF_LOOPBACK == 0)
            .map_or("IFACE", |i| i.name.as_str());
        check.item(
            value,
            Verdict::Critical,
            "no interface can carry multicast off this host: joins on a network interface fail \
             and nothing is received from the network (loopback, without the flag, still \
             carries IPv4 multicast between processes of this host with IP_MULTICAST_IF \
             127.0.0.1)",
            format!("ip link set dev {candidate} multicast on up"),
        )
    } else {
        check.ok(value, "these interfaces can join groups and send multicast")
    }
}

/// A row of `/proc/net/route`.
struct Route {
    iface: String,
    dest: Ipv4Addr,
    prefix: u32,
}

fn routes(host: &Host) -> Option<Vec<Route>> {
    let text = host.read("proc/net/route")?;
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        // The kernel prints the network-order address as a native-endian integer.
        let (Ok(dest), Ok(flags), Ok(mask)) = (
            u32::from_str_radix(f[1], 16),
            u32::from_str_radix(f[3], 16),
            u32::from_str_radix(f[7], 16),
        ) else {
            continue;
        };
        if flags & 0x1 == 0 {
            continue; // RTF_UP
        }
        out.push(Route {
            iface: f[0].to_owned(),
            dest: Ipv4Addr::from(dest.to_ne_bytes()),
            prefix: u32::from_be_bytes(mask.to_ne_bytes()).count_ones(),
        });
    }
    Some(out)
}

pub(super) fn multicast_route(input: &Input<'_>) -> Item {
    let check = Check::new(
        "net.multicast_route",
        "a route for 224.0.0.0/4 on the feed interface (or every socket names its interface \
         with IP_MULTICAST_IF)",
    );
    let Some(routes) = routes(input.host) else {
        return check.unreadable("/proc/net/route", "ip route add 224.0.0.0/4 dev IFACE");
    };
    let ifaces = interfaces(input.host);
    let multicast_capable = |name: &str| {
        ifaces
            .iter()
            .any(|i| i.name == name && i.flags & IFF_MULTICAST != 0)
    };
    let explicit: Vec<&Route> = routes
        .iter()
        .filter(|r| {
            (r.prefix >= 4 && r.dest.octets()[0] & 0xF0 == 0xE0)
                || ((1..4).contains(&r.prefix) && covers(r))
        })
        .collect();
    let default = routes.iter().find(|r| r.prefix == 0);
    let fix_dev = default.map_or_else(
        || {
            ifaces
                .iter()
                .find(|i| i.is_up_multicast())
                .map_or("IFACE".to_owned(), |i| i.name.clone())
        },
        |r| r.iface.clone(),
    );
    let fix = format!("ip route add 224.0.0.0/4 dev {fix_dev}");
    if let Some(r) = explicit.iter().find(|r| multicast_capable(&r.iface)) {
        return check.ok(
            format!("{}/{} dev {}", r.dest, r.prefix, r.iface),
            "multicast from sockets that name no interface leaves by this route, on an \
             interface with the MULTICAST flag",
        );
    }
    if let Some(r) = explicit.first() {
        return check.warn(
            format!(
                "{}/{} dev {} (no MULTICAST flag)",
                r.dest, r.prefix, r.iface
            ),
            format!(
                "the multicast route points at {}, which lacks the MULTICAST flag: sockets that \
                 name no interface send there",
                r.iface
            ),
            fix,
        );
    }
    if let Some(r) = default {
        return check.warn(
            format!("only the default route (dev {})", r.iface),
            format!(
                "multicast from sockets that name no interface follows the default route out of \
                 {}; on a host with a separate feed NIC that is the wrong one. The data plane \
                 sends correctly when the interface is named (Interface::Name, Index or Addr), \
                 so this bites only Interface::Default and other programs",
                r.iface
            ),
            fix,
        );
    }
    check.warn(
        "none",
        "no route covers 224.0.0.0/4: sending from a socket that names no interface fails with \
         ENETUNREACH. Sockets that name their interface (IP_MULTICAST_IF) still work",
        fix,
    )
}

/// Whether a short-prefix route covers 224.0.0.0.
fn covers(r: &Route) -> bool {
    let mask = u32::MAX.checked_shl(32 - r.prefix).unwrap_or(0);
    u32::from(r.dest) & mask == u32::from(Ipv4Addr::new(224, 0, 0, 0)) & mask
}
