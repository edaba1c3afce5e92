#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The `multipoint-tune` binary against fixture roots: `check --json` output, the exit
//! status, and `profile` with and without `--apply`.

mod common;

use std::process::{Command, Output};

use common::Root;
use multipoint_tuning::ITEM_NAMES;

/// Runs `multipoint-tune` with `args` (stdout and stderr piped, so never a terminal).
fn tune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_multipoint-tune"))
        .args(args)
        .env_remove("CLICOLOR_FORCE")
        .output()
        .expect("run multipoint-tune")
}

/// Runs `multipoint-tune ARGS --root ROOT`.
fn tune_on(root: &Root, args: &[&str]) -> Output {
    let path = root.path().to_str().unwrap();
    tune(&[args, &["--root", path]].concat())
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The items of `check --json` output.
fn json_items(out: &Output) -> Vec<serde_json::Value> {
    let items: serde_json::Value = serde_json::from_str(&stdout(out)).unwrap();
    items.as_array().expect("a JSON array").clone()
}

/// Asserts that item `name` of `check --json` output has `verdict` and `fix`.
#[track_caller]
fn assert_item(items: &[serde_json::Value], name: &str, verdict: &str, fix: &str) {
    let item = items.iter().find(|i| i["name"] == name).unwrap();
    assert_eq!(item["verdict"], verdict);
    assert_eq!(item["fix"], fix);
}

#[test]
fn check_json_is_one_array_of_items_with_every_field() {
    let root = Root::copy_of("stock");
    let items = json_items(&tune_on(&root, &["check", "--json"]));
    assert_eq!(items.len(), ITEM_NAMES.len());
    for (item, name) in items.iter().zip(ITEM_NAMES) {
        assert_eq!(item["name"], *name);
        for field in ["name", "value", "wanted", "verdict", "why", "fix"] {
            assert!(item[field].is_string(), "{field} of {item}");
        }
        let verdict = item["verdict"].as_str().unwrap();
        assert!(["ok", "warn", "critical"].contains(&verdict), "{verdict}");
    }
    let rmem_fix = "sysctl -w net.core.rmem_max=8388608";
    assert_item(&items, "net.core.rmem_max", "warn", rmem_fix);
}

#[test]
fn check_exits_non_zero_when_something_is_critical() {
    let root = Root::copy_of("stock");
    let ok = tune_on(&root, &["check"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    // Take the only multicast interface down: critical.
    root.set("sys/class/net/eth0/flags", "0x1002");
    let bad = tune_on(&root, &["check"]);
    assert_eq!(bad.status.code(), Some(1));
    let text = stdout(&bad);
    assert!(
        text.contains("[critical] net.multicast_interfaces"),
        "{text}"
    );
    assert!(
        text.contains("fix:    ip link set dev eth0 multicast on up"),
        "{text}"
    );
    let json = tune_on(&root, &["check", "--json"]);
    assert_eq!(json.status.code(), Some(1));
}

#[test]
fn check_judges_memberships_against_the_needs_given() {
    let root = Root::copy_of("stock");
    let out = tune_on(&root, &["check", "--json", "--memberships", "50"]);
    assert_eq!(out.status.code(), Some(1));
    let fix = "sysctl -w net.ipv4.igmp_max_memberships=50";
    assert_item(
        &json_items(&out),
        "net.ipv4.igmp_max_memberships",
        "critical",
        fix,
    );
}

#[test]
fn profile_without_apply_changes_nothing() {
    let root = Root::copy_of("stock");
    let before = root.snapshot();
    let out = tune_on(&root, &["profile"]);
    assert!(out.status.success());
    assert_eq!(root.snapshot(), before);
    let text = stdout(&out);
    assert!(text.contains("net.core.rmem_max = 16777216"), "{text}");
    assert!(text.contains("net.ipv4.conf.eth0.rp_filter = 2"), "{text}");
    assert!(
        text.contains("cpupower frequency-set -g performance"),
        "{text}"
    );
    assert!(
        text.contains("echo 0 > /proc/irq/130/smp_affinity_list"),
        "{text}"
    );
    assert!(text.contains("isolcpus=managed_irq,domain,1-2"), "{text}");
    let file = tune_on(&root, &["profile", "--sysctl-only"]);
    assert_eq!(root.snapshot(), before);
    let file = stdout(&file);
    assert!(file
        .lines()
        .all(|l| l.is_empty() || l.starts_with('#') || l.contains(" = ")));
}

#[test]
fn profile_apply_writes_the_sysctls_and_reports_old_and_new() {
    let root = Root::copy_of("stock");
    let out = tune_on(&root, &["profile", "--apply"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    for line in [
        "net.core.rmem_max: 212992 -> 16777216",
        "net.core.wmem_max: 212992 -> 16777216",
        "net.core.rmem_default: 212992 -> 8388608",
        "net.core.netdev_max_backlog: 1000 -> 10000",
        "net.ipv4.igmp_max_memberships: 20 -> 1024",
        "net.core.busy_read: 0 -> 50",
        "net.ipv4.conf.default.rp_filter: 1 -> 2",
        "net.ipv4.conf.eth0.rp_filter: 1 -> 2",
        "kernel.io_uring_disabled: not on this host, skipped",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let read = |rel: &str| std::fs::read_to_string(root.path().join(rel)).unwrap();
    assert_eq!(read("proc/sys/net/core/rmem_max"), "16777216\n");
    assert_eq!(read("proc/sys/net/ipv4/conf/eth0/rp_filter"), "2\n");
    // The host is now tuned where sysctls can tune it.
    let again = stdout(&tune_on(&root, &["profile", "--apply"]));
    assert!(again.contains("0 changed"), "{again}");
    for item in json_items(&tune_on(&root, &["check", "--json"])) {
        let name = item["name"].as_str().unwrap();
        if name.starts_with("net.core") || name.starts_with("net.ipv") {
            assert_eq!(item["verdict"], "ok", "{item}");
        }
    }
}

#[test]
fn profile_apply_never_lowers_a_higher_value() {
    let root = Root::copy_of("stock");
    root.set("proc/sys/net/core/rmem_max", "67108864");
    let out = tune_on(&root, &["profile", "--apply"]);
    assert!(stdout(&out).contains("net.core.rmem_max: unchanged"));
    assert_eq!(
        std::fs::read_to_string(root.path().join("proc/sys/net/core/rmem_max")).unwrap(),
        "67108864\n"
    );
}

#[test]
fn output_that_is_not_a_terminal_has_no_colour_codes() {
    // clap colours help and usage errors only on a terminal (and when CLICOLOR_FORCE asks);
    // everything else the tool prints is plain text.
    let root = Root::copy_of("stock");
    let runs = [
        tune(&["--help"]),
        tune(&["check", "--help"]),
        tune(&["check", "--no-such-flag"]),
        tune_on(&root, &["check"]),
        tune_on(&root, &["profile"]),
    ];
    for out in &runs {
        assert!(!out.stdout.is_empty() || !out.stderr.is_empty());
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains('\x1b'),
                "an escape code on {stream}: {text:?}"
            );
        }
    }
    assert_eq!(runs[2].status.code(), Some(2), "a usage error");
}
