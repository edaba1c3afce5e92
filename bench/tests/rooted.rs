//! Runs the built `multipoint root` and `multipoint leaf` as separate processes on
//! loopback, as a user would in three terminals: the leaves read the root's address from
//! its first line, and each process's last line is its JSON report. Every child process
//! is killed when its test ends, whether it passed or not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{run, turn, u64_of, words, Proc};
use multipoint_control::rooted::proto::{decode, Frame};
use multipoint_control::socket2::{Domain, Socket, Type};
use multipoint_control::{Direction, Transport};
use serde_json::Value;

/// Starts `multipoint root ARGS` and returns it with the address it listens at, read
/// from its first line.
fn root(args: &str) -> (Proc, String) {
    listening(Proc::spawn(&words(&format!("root {args}"))))
}

/// As [`root`], the root allowed at most `files` open file descriptors.
fn root_with_file_limit(args: &str, files: u32) -> (Proc, String) {
    listening(Proc::spawn_with_file_limit(
        &words(&format!("root {args}")),
        files,
    ))
}

/// The root `root` with the address it listens at, read from its first line.
fn listening(mut root: Proc) -> (Proc, String) {
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

/// The word after `flag` in `line`.
fn after<'a>(line: &'a str, flag: &str) -> &'a str {
    line.split_whitespace()
        .skip_while(|w| *w != flag)
        .nth(1)
        .unwrap_or_else(|| panic!("no {flag} in {line:?}"))
}

#[test]
fn a_root_serves_re_requests_and_its_leaves_report_recovery() {
    let _turn = turn();
    // Port 0: the root's first line says which port its server got, and the leaf
    // command to go with it.
    let mut root = Proc::spawn(&words(
        "root --rerequest-server 127.0.0.1:0 --store 50000 --linger 0.5 --wait-leaves 2 \
         --count 20000 --rate 100000 --json",
    ));
    let first = root.line();
    let join = first
        .split("leaves join with: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no leaf command in {first:?}"));
    let (addr, server) = (after(join, "--root"), after(join, "--rerequest"));
    assert!(
        server.starts_with("127.0.0.1:") && !server.ends_with(":0"),
        "{first}"
    );
    assert!(
        first.contains(&format!("re-requests served on {server}")),
        "{first}"
    );
    let as_they_come = leaf(addr, &format!("--name dave --rerequest {server} --json"));
    let in_order = leaf(
        addr,
        &format!("--name erin --rerequest {server} --in-order --recovery-deadline 500 --json"),
    );
    let (root_out, root_report) = root.json();
    let (dave_out, dave) = as_they_come.json();
    let (_, erin) = in_order.json();

    assert_eq!(u64_of(&root_report, "messages"), 20_000, "{root_report}");
    let served = &root_report["rerequest"];
    for key in ["requests", "replies", "messages_served", "bytes_served"] {
        u64_of(served, key);
    }
    assert_eq!(u64_of(served, "refused"), 0, "{root_report}");
    // The store kept the whole stream.
    assert_eq!(u64_of(served, "stored_first"), 1, "{root_report}");
    assert_eq!(u64_of(served, "stored_next"), 20_001, "{root_report}");
    assert!(
        root_out.contains("re-request server  requests"),
        "{root_out}"
    );

    // Nothing is lost on loopback, or if the kernel dropped some, it was recovered: every
    // message arrived and nothing was given up. What recovery did is in the report.
    let mut replies = 0;
    for report in [&dave, &erin] {
        assert_eq!(u64_of(report, "messages"), 20_000, "{report}");
        assert_eq!(u64_of(report, "missing"), 0, "{report}");
        assert_eq!(u64_of(report, "gaps_given_up"), 0, "{report}");
        for key in ["recovered", "requests", "retries", "replies"] {
            u64_of(report, key);
        }
        for key in ["reply_foreign_source", "reply_unasked"] {
            assert_eq!(u64_of(report, key), 0, "{key}: {report}");
        }
        assert!(
            report["recovery_ns"].is_null() || report["recovery_ns"]["p99"].is_u64(),
            "{report}"
        );
        assert_eq!(report["ended_by"], "root_closed", "{report}");
        replies += u64_of(report, "replies");
    }
    assert!(u64_of(served, "replies") >= replies, "{root_report}");
    assert!(
        dave_out.contains(&format!(
            "recovering from {server} (as they come, 100 ms deadline)"
        )),
        "{dave_out}"
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

// ---- the root's limits ------------------------------------------------------------

/// A free UDP port on loopback (that of a throwaway socket).
fn free_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// A TCP connection to `root` from the loopback address `from` (any port).
fn connect_from(from: Ipv4Addr, root: &str) -> TcpStream {
    let root: SocketAddr = root.parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(IpAddr::V4(from), 0).into())
        .unwrap();
    socket.connect(&root.into()).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_nodelay(true).unwrap();
    stream
}

/// A leaf spoken by hand: connects to `root` from `from` and asks to join, receiving at
/// `data`.
fn ask(from: Ipv4Addr, root: &str, data: SocketAddr) -> TcpStream {
    let mut stream = connect_from(from, root);
    let join = Frame::Join {
        transport: Transport::RootedUnicast,
        direction: Direction::ReceiverOnly,
        data: Some(data),
        name: "fake".into(),
    };
    let mut bytes = Vec::new();
    join.encode(&mut bytes).unwrap();
    stream.write_all(&bytes).unwrap();
    stream
}

/// The first frame the root sends on `stream`, if one comes within `within`.
fn answer(stream: &mut TcpStream, within: Duration) -> Option<Frame> {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Ok(Some((frame, _))) = decode(&buf) {
            return Some(frame);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The reason of a Refuse, or what came instead.
fn refusal(frame: Option<Frame>) -> String {
    match frame {
        Some(Frame::Refuse { reason }) => reason,
        other => panic!("expected a Refuse, got {other:?}"),
    }
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
fn three_hundred_idle_connections_under_a_file_limit_of_100_do_not_keep_a_real_leaf_out() {
    let _turn = turn();
    let (root, addr) = root_with_file_limit("--wait-leaves 1 --secs 1 --rate 10000 --json", 100);
    // An attacker opens 300 connections and says nothing: more than the root has
    // descriptors, so most wait in its listen queue, ahead of the real leaf.
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let idle: Vec<TcpStream> = (0..300).map(|_| connect_from(attacker, &addr)).collect();
    let asked = Instant::now();
    // The leaf's own join timeout is 3 s; failing it, the leaf exits non-zero.
    let (_, leaf_report) = leaf(&addr, "--name real --json").json();
    let joined_within = asked.elapsed();
    let (_, root_report) = root.json();
    drop(idle);

    assert_eq!(u64_of(&root_report, "leaves"), 1, "{root_report}");
    assert_got_everything(&leaf_report, u64_of(&root_report, "messages"));
    let control = &root_report["control"];
    assert_eq!(u64_of(control, "accepted"), 301, "{root_report}");
    // At most 100 descriptors: at least 200 of the idle connections made room for later
    // ones (shed) or ran out of time.
    assert!(
        u64_of(control, "shed") + u64_of(control, "handshake_timeouts") >= 200,
        "{root_report}"
    );
    println!("the real leaf was in and served within {joined_within:?}");
}

#[test]
fn a_root_out_of_descriptors_takes_the_waiting_leaf_once_a_descriptor_is_free() {
    let _turn = turn();
    let (root, addr) = root_with_file_limit(
        "--wait-leaves 1 --secs 4 --rate 10000 --timeout 30 --json",
        100,
    );
    // Fake leaves that do join fill the root's descriptors: leaves are never shed.
    let fake = Ipv4Addr::new(127, 0, 0, 2);
    let mut fakes = Vec::new();
    let waiting = loop {
        assert!(fakes.len() < 100, "the root took more than 100 leaves");
        let data = SocketAddr::new(IpAddr::V4(fake), 20_000 + fakes.len() as u16);
        let mut stream = ask(fake, &addr, data);
        match answer(&mut stream, Duration::from_millis(500)) {
            Some(Frame::Admit { .. }) => fakes.push(stream),
            None => break stream,
            Some(other) => panic!("fake leaf {} got {other:?}", fakes.len()),
        }
    };
    // That one waits in the listen queue; it gives up (its Join already sent). The real leaf comes to the queue
    // while the root still has no descriptor: its arrival is no use to an accept that
    // waits for an event.
    drop(waiting);
    let real = leaf(&addr, "--name real --json");
    std::thread::sleep(Duration::from_millis(500));
    // Two leave: one descriptor for the connection that gave up, one for the real leaf,
    // which only the root's timer can now pick up.
    fakes.truncate(fakes.len() - 2);
    let (_, leaf_report) = real.json();
    let (_, root_report) = root.json();
    // The fakes, the one that gave up (its Join is read before its close) and the real
    // leaf; three left (two fakes and the one that gave up).
    let admitted = fakes.len() as u64 + 2 + 1 + 1;
    drop(fakes);

    assert_eq!(leaf_report["ended_by"], "root_closed", "{leaf_report}");
    assert!(u64_of(&leaf_report, "messages") > 0, "{leaf_report}");
    assert_eq!(u64_of(&leaf_report, "gaps"), 0, "{leaf_report}");
    assert_eq!(u64_of(&root_report, "leaves"), admitted, "{root_report}");
    assert_eq!(u64_of(&root_report, "left"), 3, "{root_report}");
    assert!(
        u64_of(&root_report["control"], "accept_stalls") >= 1,
        "{root_report}"
    );
}

#[test]
fn fake_leaves_beyond_the_caps_are_refused_and_the_real_leaf_keeps_its_one_stream() {
    let _turn = turn();
    let (mut root, addr) = root(
        "--max-connections-per-peer 6 --join-burst 4 --joins-per-sec 1 --handshake-timeout 30 \
         --timeout 30 --wait-leaves 1 --secs 2 --rate 20000 --json",
    );
    let data = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let real = leaf(&addr, &format!("--name real --data {data} --json"));
    root.line_with("leaf \"real\" joined");

    // 200 idle connections from one address: 6 are kept, 194 refused as they come.
    let greedy = Ipv4Addr::new(127, 0, 0, 2);
    let mut idle: Vec<TcpStream> = (0..200).map(|_| connect_from(greedy, &addr)).collect();
    let reason = refusal(answer(idle.last_mut().unwrap(), Duration::from_secs(5)));
    assert_eq!(
        reason,
        "too many connections from 127.0.0.2: the root takes 6 per address"
    );
    // 10 joins from another address, one after the other: 4 in (the burst), 6 refused.
    let eager = Ipv4Addr::new(127, 0, 0, 3);
    let mut admitted = Vec::new();
    for i in 0..10u16 {
        let mut stream = ask(eager, &addr, SocketAddr::new(IpAddr::V4(eager), 20_000 + i));
        match answer(&mut stream, Duration::from_secs(5)) {
            Some(Frame::Admit { .. }) => admitted.push(stream),
            other => assert_eq!(
                refusal(other),
                "127.0.0.3 asks to join too often: the root takes 1 joins a second from \
                 one address (4 at once)"
            ),
        }
    }
    assert_eq!(admitted.len(), 4);
    // Three fakes on the real leaf's host naming its data port: none doubles its stream.
    for _ in 0..3 {
        let mut stream = ask(Ipv4Addr::LOCALHOST, &addr, data);
        let reason = refusal(answer(&mut stream, Duration::from_secs(5)));
        assert!(
            reason.starts_with(&format!("the data address {data} is taken by another leaf")),
            "{reason}"
        );
    }

    let (_, leaf_report) = real.json();
    let (_, root_report) = root.json();
    drop((idle, admitted));
    assert_got_everything(&leaf_report, u64_of(&root_report, "messages"));
    assert_eq!(u64_of(&root_report, "leaves"), 5, "{root_report}");
    assert_eq!(u64_of(&root_report, "refused"), 9, "{root_report}");
    let control = &root_report["control"];
    for (key, count) in [
        ("accepted", 1 + 200 + 10 + 3),
        ("refused_per_peer", 194),
        ("refused_join_rate", 6),
        ("refused_data_taken", 3),
        ("refused_max_connections", 0),
        ("shed", 0),
    ] {
        assert_eq!(u64_of(control, key), count, "{key}: {root_report}");
    }
    // The fan-out never had more than its five leaves: the real one got one copy of
    // each packet, not one per fake naming its port.
    let packets = u64_of(&root_report, "packets");
    assert!(
        u64_of(&root_report, "deliveries") <= 5 * packets,
        "{root_report}"
    );
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
