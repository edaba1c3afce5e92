//! The kernel and io_uring: version, `kernel.io_uring_disabled`, setting up a ring,
//! and `RLIMIT_MEMLOCK` against what the data plane's rings charge.

use super::{sysctl_w, Check, Input};
use crate::host::{Host, Rlimit};
use crate::item::{Item, Verdict};
use crate::needs::{Bytes, Needs};

/// What the mmsg fallback costs, measured on the test VM (see the README).
const FALLBACK_COST: &str = "On the 2-core test VM over loopback the two backends measured \
    within a few per cent of each other (with GSO both 11.2–11.4 M msgs/s; without GSO \
    io_uring 2.14–2.25 M, mmsg 2.36–2.38 M msgs/s; ping-pong p50 48–54 µs against 52–55 µs), \
    because the kernel's per-datagram work dominates there. What the fallback gives up is \
    multishot receive into provided buffers (one recvmmsg per socket per poll instead of one \
    armed request) and batched, linked, optionally zero-copy sends; that shows with many \
    sockets per shard and on real NICs";

/// `major.minor` of a release string (`6.18.44-fc` → (6, 18)).
fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub(super) fn osrelease(input: &Input<'_>) -> Item {
    const NAME: &str = "kernel.osrelease";
    let check = Check::new(
        NAME,
        "≥ 6.0 (multishot RECVMSG, which io_uring receive is built on); ≥ 6.15 for \
         zero-copy sends from a registered buffer",
    );
    let fix = "install a kernel ≥ 6.0 (6.15 or later for registered zero-copy buffers)";
    let Some(release) = input.host.sysctl(NAME) else {
        return check.unreadable_sysctl(fix);
    };
    let Some(v) = version(&release) else {
        return check.warn(
            release,
            "the release is not of the form major.minor, so the data plane cannot tell which \
             io_uring features exist; it assumes a recent kernel",
            fix,
        );
    };
    let (verdict, why) = if v >= (6, 15) {
        (
            Verdict::Ok,
            "io_uring receive (multishot RECVMSG, 6.0) and zero-copy sends naming a \
             registered buffer (6.15) are both available",
        )
    } else if v >= (6, 0) {
        (
            Verdict::Ok,
            "io_uring receive (multishot RECVMSG, 6.0) is available; zero-copy sends \
             (zero_copy: true, 6.1+) work but cannot name a registered buffer before 6.15, so \
             the kernel pins the pages per send",
        )
    } else {
        (
            Verdict::Warn,
            "before 6.0 there is no multishot RECVMSG: the data plane falls back to \
             recvmmsg/sendmmsg (it still runs; see io_uring.setup for what that costs)",
        )
    };
    check.item(release, verdict, why, fix)
}

pub(super) fn io_uring_disabled(input: &Input<'_>) -> Item {
    const NAME: &str = "kernel.io_uring_disabled";
    let check = Check::new(NAME, "0 (io_uring for every process)");
    let fix = sysctl_w(NAME, 0);
    let Some(raw) = input.host.sysctl(NAME) else {
        return check.ok(
            "absent",
            "this kernel has no such switch (it arrived in 6.6): io_uring is not disabled by \
             sysctl; io_uring.setup tells whether a ring can really be set up",
        );
    };
    match raw.parse::<u32>() {
        Ok(0) => check.ok(raw, "every process may create io_uring instances"),
        Ok(1) => {
            let group = input
                .host
                .sysctl("kernel.io_uring_group")
                .unwrap_or_else(|| "-1".into());
            check.warn(
                raw,
                format!(
                    "only processes with CAP_SYS_ADMIN or in group kernel.io_uring_group (gid \
                     {group}) may create rings; any other data plane process falls back to \
                     recvmmsg/sendmmsg (see io_uring.setup for this process and the cost)"
                ),
                fix,
            )
        }
        Ok(2) => check.warn(
            raw,
            "io_uring is disabled for every process, root included: the data plane falls back \
             to recvmmsg/sendmmsg (see io_uring.setup for the cost)",
            fix,
        ),
        _ => check.warn(raw, "an unknown value: io_uring may be restricted", fix),
    }
}

pub(super) fn io_uring_setup(input: &Input<'_>) -> Item {
    let check = Check::new(
        "io_uring.setup",
        "a ring sets up (8 SQ / 16 CQ, SINGLE_ISSUER + DEFER_TASKRUN), its opcode probe lists \
         RECVMSG, SENDMSG and ASYNC_CANCEL, and a provided buffer ring registers",
    );
    match &input.uring {
        Ok(()) => check.ok(
            "works",
            "the data plane will use io_uring: one multishot RECVMSG per socket into a \
             provided buffer ring, batched sends",
        ),
        Err(reason) => check.warn(
            format!("fails: {reason}"),
            format!(
                "Warn, not critical: with backend auto the data plane falls back to \
                 recvmmsg/sendmmsg and runs (backend uring fails). {FALLBACK_COST}"
            ),
            "sysctl -w kernel.io_uring_disabled=0; in a container, run with a seccomp profile \
             that allows io_uring_setup, io_uring_enter and io_uring_register (docker run \
             --security-opt seccomp=PROFILE.json)",
        ),
    }
}

/// Whether `proc/self/status` shows `CAP_IPC_LOCK` (bit 14) in the effective set.
fn has_cap_ipc_lock(host: &Host) -> bool {
    let Some(status) = host.read("proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

pub(super) fn memlock(input: &Input<'_>) -> Item {
    let (host, needs) = (input.host, input.needs);
    let page = host.page_size();
    let need = needs.locked_bytes(page);
    let probe = u64::from(needs.probes.min(1)) * Needs::probe_locked_bytes(page);
    let check = Check::new(
        "rlimit.memlock",
        format!(
            "≥ {} ({need} bytes) of RLIMIT_MEMLOCK, or CAP_IPC_LOCK",
            Bytes(need)
        ),
    );
    let arithmetic = needs.explain_locked(page);
    // A suggestion with room for the user's other processes: the kernel's default of
    // 8 MiB, or the need rounded up to whole MiB when that is more.
    let suggest = need.next_multiple_of(1 << 20).max(8 << 20);
    let Some(limit) = host.memlock() else {
        return check.warn(
            "unreadable",
            format!("getrlimit(RLIMIT_MEMLOCK) failed, so the limit cannot be judged. Needed: {arithmetic}"),
            format!("ulimit -l {}", suggest >> 10),
        );
    };
    let value = format!("soft {}, hard {}", Bytes(limit.soft), Bytes(limit.hard));
    if has_cap_ipc_lock(host) {
        return check.ok(
            format!("{value}; CAP_IPC_LOCK held"),
            format!(
                "with CAP_IPC_LOCK the kernel charges nothing to RLIMIT_MEMLOCK (without it, it \
                 would charge {arithmetic})"
            ),
        );
    }
    // `ulimit -l` may raise the soft limit up to the hard one without privilege.
    let reachable = if limit.hard >= suggest {
        Some(suggest)
    } else if limit.hard >= need {
        Some(limit.hard)
    } else {
        None
    };
    let fix = if let Some(to) = reachable {
        format!(
            "ulimit -l {} (in the shell that starts the data plane; under systemd: \
             LimitMEMLOCK={to} in the unit)",
            to >> 10
        )
    } else {
        format!(
            "echo '* - memlock {}' > /etc/security/limits.d/90-multipoint.conf and log in \
             again (the hard limit {} is below it); under systemd: LimitMEMLOCK={suggest}; or \
             setcap cap_ipc_lock+ep /path/to/the/binary",
            suggest >> 10,
            Bytes(limit.hard)
        )
    };
    let per_user = "The charge is per user: every process of the same user counts against \
                    the limit, and a closed ring's charge comes back only shortly after.";
    if limit.soft == Rlimit::UNLIMITED || limit.soft >= need {
        check.ok(
            value,
            format!("the limit covers what the kernel charges: {arithmetic}. {per_user}"),
        )
    } else if limit.soft < probe {
        check.warn(
            value,
            format!(
                "below even the {} of the data plane's io_uring probe, so the probe fails \
                 with ENOMEM and backend auto falls back to recvmmsg/sendmmsg (it runs, without \
                 io_uring). Needed for io_uring: {arithmetic}. {per_user}",
                Bytes(probe)
            ),
            fix,
        )
    } else {
        check.item(
            value,
            Verdict::Critical,
            format!(
                "the io_uring probe fits, so the data plane chooses io_uring, and then setting \
                 up the shard or publisher rings fails with ENOMEM and it does not start. \
                 Needed: {arithmetic}. {per_user}"
            ),
            fix,
        )
    }
}
