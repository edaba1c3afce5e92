//! Runs the built `multipoint root` and `multipoint leaf` as separate processes on
//! loopback, as a user would in three terminals: the leaves read the root's address from
//! its first line, and each process's last line is its JSON report. Every child process
//! is killed when its test ends, whether it passed or not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::{run, turn, u64_of, words, Proc};
use serde_json::Value;

/// Starts `multipoint root ARGS` and returns it with the address it listens at, read
/// from its first line.
fn root(args: &str) -> (Proc, String) {
    let mut root = Proc::spawn(&words(&format!("root {args}")));
    let first = root.line();
    let addr = first
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in the root's first line: {first:?}"))
        .to_owned();
    assert!(
        first.contains(&format!("multipoint leaf --root {addr}")),
        "{first}"
    );
    (root, addr)
}

/// Starts `multipoint leaf --root ROOT --secs 8 ARGS`.
fn leaf(root: &str, args: &str) -> Proc {
    Proc::spawn(&words(&format!("leaf --root {root} --secs 8 {args}")))
}

/// Runs `multipoint leaf` with `args` to a root that must refuse it; returns what the
/// leaf said on stderr.
fn refused(root: &str, args: &str) -> String {
    let output = leaf(root, args).finish();
    assert!(!output.status.success(), "leaf {args} was let in");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A leaf's report that has all `n` messages, no gap, one-way latency for each, and says
/// the root closed the session.
fn assert_got_everything(report: &Value, n: u64) {
    assert_eq!(report["command"], "leaf", "{report}");
    assert_eq!(u64_of(report, "messages"), n, "{report}");
    for key in ["gaps", "missing", "duplicates", "malformed", "kernel_drops"] {
        assert_eq!(u64_of(report, key), 0, "{key}: {report}");
    }
    assert_eq!(u64_of(&report["latency_ns"], "count"), n, "{report}");
    assert_eq!(report["ended_by"], "root_closed", "{report}");
}

#[test]
fn two_leaves_get_every_message_of_a_root_that_waits_for_them() {
    let _turn = turn();
    let (root, addr) = root("--wait-leaves 2 --count 20000 --rate 100000 --json");
    let alice = leaf(&addr, "--name alice --json");
    let bob = leaf(&addr, "--name bob --json");
    let (root_out, root_report) = root.json();
    let (alice_out, alice_report) = alice.json();
    let (_, bob_report) = bob.json();

    assert_eq!(root_report["command"], "root", "{root_report}");
    assert_eq!(root_report["transport"], "rooted-unicast");
    assert_eq!(u64_of(&root_report, "leaves"), 2, "{root_report}");
    assert_eq!(u64_of(&root_report, "leaves_at_end"), 2, "{root_report}");
    assert_eq!(u64_of(&root_report, "messages"), 20_000, "{root_report}");
    assert!(root_report["msgs_per_sec"].as_f64().unwrap() > 0.0);
    assert!(root_report["secs"].as_f64().unwrap() > 0.0);
    // Every packet went to both leaves.
    let packets = u64_of(&root_report, "packets");
    assert!(
        u64_of(&root_report, "deliveries") >= 2 * (packets - 1),
        "{root_report}"
    );
    assert!(root_out.contains("leaf \"alice\" joined"), "{root_out}");
    assert!(root_out.contains("leaf \"bob\" joined"), "{root_out}");

    assert_got_everything(&alice_report, 20_000);
    assert_got_everything(&bob_report, 20_000);
    assert_eq!(alice_report["name"], "alice");
    assert_eq!(alice_report["session"], root_report["session"]);
    assert!(
        alice_out.contains("ended: the root closed the session"),
        "{alice_out}"
    );
}

#[test]
fn a_leaf_not_on_the_admit_list_is_refused_with_the_reason() {
    let _turn = turn();
    let (root, addr) = root("--admit alice --wait-leaves 1 --count 1000 --rate 50000 --json");
    let stderr = refused(&addr, "--name mallory");
    assert!(
        stderr.contains("cannot join the root") && stderr.contains("\"mallory\" is not admitted"),
        "{stderr}"
    );
    // A root without --uplink takes no data from leaves, and says so.
    let stderr = refused(&addr, "--name alice --direction both");
    assert!(stderr.contains("receive-only"), "{stderr}");

    let (_, alice) = leaf(&addr, "--name alice --json").json();
    let (root_out, root_report) = root.json();
    assert_got_everything(&alice, 1_000);
    assert_eq!(u64_of(&root_report, "leaves"), 1, "{root_report}");
    assert_eq!(u64_of(&root_report, "refused"), 2, "{root_report}");
    assert!(
        root_out.contains("refused: leaf \"mallory\" is not admitted"),
        "{root_out}"
    );
}

#[test]
fn an_admitted_multicast_root_feeds_a_leaf_by_multicast() {
    let _turn = turn();
    // A port no one else on this host uses right now, in a range the other loopback
    // tests do not draw their groups from.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let group = format!("239.254.{}.{}:{port}", port >> 8, port & 0xff);
    let (root, addr) = root(&format!(
        "--transport admitted-multicast --group {group} --iface 127.0.0.1 --ttl 0 \
         --wait-leaves 1 --count 5000 --rate 50000 --json"
    ));
    let leaf = leaf(&addr, "--transport admitted-multicast --name m1 --json");
    let (_, leaf_report) = leaf.json();
    let (_, root_report) = root.json();
    assert_got_everything(&leaf_report, 5_000);
    assert_eq!(leaf_report["data"], group.as_str(), "{leaf_report}");
    assert_eq!(leaf_report["source"], "127.0.0.1", "{leaf_report}");
    assert_eq!(root_report["transport"], "admitted-multicast");
    assert_eq!(u64_of(&root_report, "leaves"), 1, "{root_report}");
    assert_eq!(u64_of(&root_report, "messages"), 5_000, "{root_report}");
    assert!(root_report["deliveries"].is_null(), "{root_report}");
}

#[test]
fn a_sending_leaf_reaches_a_root_with_uplink() {
    let _turn = turn();
    let (root, addr) = root("--uplink --wait-leaves 1 --secs 1 --rate 10000 --json");
    let leaf = leaf(&addr, "--direction both --count 2000 --rate 20000 --json");
    let (_, leaf_report) = leaf.json();
    let (_, root_report) = root.json();
    assert_eq!(leaf_report["direction"], "both", "{leaf_report}");
    assert_eq!(leaf_report["ended_by"], "count", "{leaf_report}");
    assert!(u64_of(&leaf_report, "messages") >= 2_000, "{leaf_report}");
    assert_eq!(u64_of(&leaf_report, "gaps"), 0, "{leaf_report}");
    assert_eq!(
        u64_of(&leaf_report["sent"], "messages"),
        2_000,
        "{leaf_report}"
    );
    let uplink = &root_report["uplink"];
    assert_eq!(u64_of(uplink, "senders"), 1, "{root_report}");
    assert_eq!(u64_of(uplink, "messages"), 2_000, "{root_report}");
    assert_eq!(u64_of(uplink, "gaps"), 0, "{root_report}");
    assert_eq!(u64_of(&root_report, "left"), 1, "{root_report}");
}

/// A key file named `name` holding `content`, with `mode`, in a directory of this test
/// process; removed when the value drops.
struct KeyFile(PathBuf);

impl KeyFile {
    fn new(name: &str, content: &str, mode: u32) -> KeyFile {
        let dir = std::env::temp_dir().join(format!("mp-tool-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        KeyFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_world_readable_key_file_is_refused_saying_why_and_what_to_do() {
    let open = KeyFile::new("open", "00112233445566778899aabbccddeeff\n", 0o644);
    for command in ["root", "leaf --root 127.0.0.1:9"] {
        let output = run(&words(&format!("{command} --key-file {}", open.path())));
        assert!(!output.status.success(), "{command} took the key");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("world-readable"), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("chmod 600 {}", open.path())),
            "{command}: {stderr}"
        );
        assert!(
            !stderr.contains("00112233"),
            "the key is not shown: {stderr}"
        );
    }
}

#[test]
fn a_leaf_with_a_wrong_key_or_none_is_refused_with_authentication_failed() {
    let _turn = turn();
    let key = KeyFile::new(
        "good",
        "4d756c7469706f696e74206b6579203332206279746573212121212121212121\n",
        0o600,
    );
    let wrong = KeyFile::new("wrong", "an entirely different key, in raw bytes", 0o400);
    let (root, addr) = root(&format!(
        "--key-file {} --wait-leaves 1 --count 1000 --rate 50000 --json",
        key.path()
    ));
    for args in [
        format!("--name eve --key-file {}", wrong.path()),
        "--name anon".into(),
    ] {
        let stderr = refused(&addr, &args);
        assert!(
            stderr.contains("cannot join the root") && stderr.contains("authentication failed"),
            "{args}: {stderr}"
        );
    }

    let (_, member) = leaf(
        &addr,
        &format!("--name member --key-file {} --json", key.path()),
    )
    .json();
    let (root_out, root_report) = root.json();
    assert_got_everything(&member, 1_000);
    assert_eq!(u64_of(&root_report, "leaves"), 1, "{root_report}");
    assert_eq!(u64_of(&root_report, "refused"), 2, "{root_report}");
    assert_eq!(u64_of(&root_report, "auth_failed"), 2, "{root_report}");
    assert!(
        root_out.contains("refused: authentication failed"),
        "{root_out}"
    );
    assert!(root_out.contains("(authentication failed 2)"), "{root_out}");
}
