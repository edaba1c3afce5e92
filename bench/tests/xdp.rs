//! The AF_XDP backend between two network namespaces joined by a veth pair: `multipoint
//! sub --backend xdp` in one, a publisher in the other. A stream arrives complete and in
//! order; ping, TCP and an unsubscribed group still reach the kernel beside it; hostile
//! frames are counted, not delivered; and no XDP program is left on the interface after
//! the subscriber exits, also when it is killed.
//!
//! Needs root (namespaces, XDP); skips with the reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::MutexGuard;
use std::time::Duration;

use multipoint_tests::{netns::wait_until, print_skip, Host, Lab};
use serde_json::Value;

const PUB_IF: &str = "xp0";
const SUB_IF: &str = "xs0";
const PUB_ADDR: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
const SUB_ADDR: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
const GROUP: &str = "239.231.0.1:41000";
const SESSION: &str = "XDPTEST";

/// This test's turn (see [`common::turn`]), the lab, and in it a publisher host and a
/// subscriber host joined by one veth pair.
type Setup = (MutexGuard<'static, ()>, Lab, Host, Host);

/// The test's [`Setup`], or why not.
fn lab(test: &str) -> Option<Setup> {
    let turn = common::turn();
    let mut lab = match Lab::new(test) {
        Ok(lab) => lab,
        Err(skip) => {
            print_skip(test, &skip);
            return None;
        }
    };
    let publisher = lab.host("p");
    let subscriber = lab.host("s");
    lab.link(
        &publisher,
        PUB_IF,
        &[&format!("{PUB_ADDR}/24")],
        &subscriber,
        SUB_IF,
        &[&format!("{SUB_ADDR}/24")],
    );
    // The group's route: out of the veth.
    for (host, ifname) in [(&publisher, PUB_IF), (&subscriber, SUB_IF)] {
        host.ip(&["route", "add", "224.0.0.0/4", "dev", ifname]);
    }
    // veth offloads the UDP checksum to its "hardware", which never computes it: the
    // frame then crosses with a partial checksum that a raw reader (AF_XDP) sees as
    // wrong. A NIC would fill it in on the wire; here the kernel must, in software.
    let ethtool = Command::new("ip")
        .args(["netns", "exec", publisher.namespace()])
        .args(["ethtool", "-K", PUB_IF, "tx", "off"])
        .output();
    match ethtool {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            print_skip(
                test,
                &format!(
                    "ethtool -K tx off failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
            return None;
        }
        Err(e) => {
            print_skip(
                test,
                &format!("needs ethtool (to turn off veth's checksum offload): {e}"),
            );
            return None;
        }
    }
    Some((turn, lab, publisher, subscriber))
}

/// [`lab`], with `multipoint sub --backend xdp` for the test's group already running on
/// the subscriber's veth (see [`start_xdp_sub`]).
fn lab_with_xdp_sub(test: &str, extra: &str) -> Option<Setup> {
    let (turn, mut lab, publisher, subscriber) = lab(test)?;
    start_xdp_sub(&mut lab, &subscriber, GROUP, extra);
    Some((turn, lab, publisher, subscriber))
}

/// `multipoint ARGS` inside `host`, as a command to be run.
fn in_host(host: &Host, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host.namespace()])
        .arg(env!("CARGO_BIN_EXE_multipoint"))
        .args(args);
    cmd
}

/// Whether `ip link` shows an XDP program on `ifname` in `host`.
fn has_xdp(host: &Host, ifname: &str) -> bool {
    let out = host.ip(&["-d", "link", "show", "dev", ifname]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("prog/xdp") || text.contains(" xdp") || text.contains("xdpgeneric")
}

/// The last line of a log as JSON, if it is a JSON object.
fn last_json_line(text: &str) -> Option<Value> {
    let line = text.lines().rev().find(|l| l.starts_with('{'))?;
    serde_json::from_str(line).ok()
}

/// Starts `multipoint sub ARGS` in `host` in the background (output in the lab's log
/// `label`) and waits until it listens.
fn start_sub(lab: &mut Lab, host: &Host, label: &str, args: &str) {
    let line = format!("{} sub {args}", env!("CARGO_BIN_EXE_multipoint"));
    lab.spawn(host, label, &common::words(&line))
        .expect("sub starts");
    let listening = wait_until(Duration::from_secs(20), || {
        lab.log(label).contains("listening on") || !lab.daemon_running(label)
    });
    let log = lab.log(label);
    assert!(
        listening && log.contains("listening on"),
        "the subscriber did not start:\n{log}"
    );
}

/// Starts `multipoint sub --backend xdp` on the subscriber's veth for `group` (see
/// [`start_sub`]); its XDP program is then attached.
fn start_xdp_sub(lab: &mut Lab, subscriber: &Host, group: &str, extra: &str) {
    start_sub(
        lab,
        subscriber,
        "sub",
        &format!(
            "--backend xdp --iface {SUB_IF} --group {group} --session {SESSION} --idle yield \
             --json {extra}"
        ),
    );
    assert!(
        has_xdp(subscriber, SUB_IF),
        "no XDP program on {SUB_IF} while the subscriber runs"
    );
}

/// Sends `signal` to the daemon `label` (`ip netns exec` execs the tool, so the
/// daemon's pid is the tool's); returns the pid.
fn signal(lab: &Lab, label: &str, signal: i32) -> u32 {
    let pid = lab.pid(label).expect("the daemon's pid");
    // SAFETY: a plain kill(2) of a child this test started.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    pid
}

/// Stops the daemon `label` with SIGINT and returns its final JSON.
fn stop(lab: &mut Lab, label: &str) -> Value {
    signal(lab, label, libc::SIGINT);
    finish(lab, label, Duration::from_secs(10))
}

/// Waits for the daemon `label` to exit and returns its final JSON.
fn finish(lab: &mut Lab, label: &str, within: Duration) -> Value {
    let done = wait_until(within, || !lab.daemon_running(label));
    let log = lab.log(label);
    assert!(done, "{label} did not finish:\n{log}");
    last_json_line(&log).unwrap_or_else(|| panic!("{label} printed no JSON:\n{log}"))
}

/// Runs the publisher to `group` to the end inside `host` and returns its JSON.
fn publish(host: &Host, group: &str, args: &str) -> Value {
    let line =
        format!("pub --iface {PUB_IF} --group {group} --session {SESSION} --ttl 4 --json {args}");
    let out = in_host(host, &common::words(&line))
        .stdin(Stdio::null())
        .output()
        .expect("pub runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pub failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    last_json_line(&stdout).unwrap_or_else(|| panic!("pub printed no JSON:\n{stdout}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Checks that a subscription got exactly `n` messages, in order, with nothing lost.
fn assert_all_arrived(sub: &Value, n: u64) {
    assert_eq!(u(sub, "messages"), n, "{sub}");
    for key in ["gaps", "missing", "duplicates", "malformed"] {
        assert_eq!(u(sub, key), 0, "{key} in {sub}");
    }
}

/// [`assert_all_arrived`], on the AF_XDP backend.
fn assert_complete(sub: &Value, n: u64) {
    assert_all_arrived(sub, n);
    assert_eq!(sub["backend"], "af_xdp", "{sub}");
}

#[test]
fn xdp_sub_gets_a_million_messages_complete_and_in_order_and_leaves_no_program() {
    let test = "xdp_sub_gets_a_million_messages_complete_and_in_order_and_leaves_no_program";
    let Some((_turn, mut lab, publisher, subscriber)) =
        lab_with_xdp_sub(test, "--count 1000000 --secs 120")
    else {
        return;
    };
    // Paced for the test profile's unoptimised build of the tool; the release build's
    // rates are in bench/README.md.
    let sent = publish(&publisher, GROUP, "--count 1000000 --size 32 --rate 250000");
    assert_eq!(u(&sent, "messages"), 1_000_000, "{sent}");
    let sub = finish(&mut lab, "sub", Duration::from_secs(60));
    assert_complete(&sub, 1_000_000);
    let xdp = &sub["xdp"];
    assert_eq!(u(xdp, "discarded"), 0, "{xdp}");
    assert!(u(xdp, "delivered") >= u(&sub, "packets"), "{sub}");
    eprintln!("{test}: {}", xdp["setup"]);
    assert!(
        !has_xdp(&subscriber, SUB_IF),
        "an XDP program is left on {SUB_IF} after the subscriber exited"
    );
}

#[test]
fn a_killed_xdp_sub_leaves_no_program_behind() {
    let test = "a_killed_xdp_sub_leaves_no_program_behind";
    let Some((_turn, lab, _publisher, subscriber)) = lab_with_xdp_sub(test, "--secs 120") else {
        return;
    };
    let pid = signal(&lab, "sub", libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(10), || !has_xdp(&subscriber, SUB_IF)),
        "an XDP program is left on {SUB_IF} after SIGKILL"
    );
    // A killed process cannot remove its counters file (`multipoint stat` reports it
    // stale): the test does, so as to leave nothing behind.
    let _ = std::fs::remove_file(format!("/dev/shm/multipoint-stat-{pid}"));
}

#[test]
fn pings_tcp_and_other_groups_still_reach_the_kernel_beside_an_xdp_sub() {
    let test = "pings_tcp_and_other_groups_still_reach_the_kernel_beside_an_xdp_sub";
    let Some((_turn, mut lab, publisher, subscriber)) = lab_with_xdp_sub(test, "--secs 120") else {
        return;
    };

    // Ping.
    let ping = Command::new("ip")
        .args(["netns", "exec", publisher.namespace()])
        .args([
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            &SUB_ADDR.to_string(),
        ])
        .output();
    match ping {
        Ok(out) => assert!(
            out.status.success(),
            "ping through the XDP interface failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(e) => print_skip(&format!("{test} (ping)"), &e),
    }

    // TCP: a listener in the subscriber's namespace, a client in the publisher's.
    let listener = subscriber.run(|| TcpListener::bind((SUB_ADDR, 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
        buf
    });
    let echoed = publisher.run(|| {
        let mut c = TcpStream::connect_timeout(&(SUB_ADDR, port).into(), Duration::from_secs(5))
            .expect("TCP connects through the XDP interface");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).unwrap();
        back
    });
    assert_eq!(&echoed, b"hello");
    assert_eq!(&server.join().unwrap(), b"hello");

    // An unsubscribed group, and the subscribed group on another port: both go to
    // kernel sockets.
    for other in ["239.231.0.2:41002", "239.231.0.1:41001"] {
        let other: SocketAddr = other.parse().unwrap();
        let receiver = subscriber.run(|| {
            let s = UdpSocket::bind(("0.0.0.0", other.port())).unwrap();
            let SocketAddr::V4(g) = other else {
                unreachable!()
            };
            s.join_multicast_v4(g.ip(), &SUB_ADDR).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        });
        publisher.run(|| {
            let s = UdpSocket::bind((PUB_ADDR, 0)).unwrap();
            s.set_multicast_ttl_v4(4).unwrap();
            for _ in 0..3 {
                s.send_to(b"kernel", other).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut buf = [0u8; 16];
        let (n, _) = receiver
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("nothing sent to {other} reached the kernel: {e}"));
        assert_eq!(&buf[..n], b"kernel");
    }

    let sub = stop(&mut lab, "sub");
    assert_eq!(u(&sub["xdp"], "delivered"), 0, "{sub}");
}

/// An Ethernet/IPv4/UDP frame to the test's group from the publisher's veth, with a
/// correct IP header checksum and no UDP checksum (0), and then `edit` applied to it.
fn frame(payload: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let group: SocketAddr = GROUP.parse().unwrap();
    let SocketAddr::V4(g) = group else {
        unreachable!()
    };
    let o = g.ip().octets();
    let mut f = vec![0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = 20 + 8 + payload.len();
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        4,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&PUB_ADDR.octets());
    f.extend_from_slice(&o);
    let udp = 8 + payload.len();
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&g.port().to_be_bytes());
    f.extend_from_slice(&[(udp >> 8) as u8, udp as u8, 0, 0]);
    f.extend_from_slice(payload);
    let sum = ones(&f[14..34]);
    f[24..26].copy_from_slice(&(!sum).to_be_bytes());
    edit(&mut f);
    f
}

/// The ones'-complement sum of `b`, folded.
fn ones(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Sends raw `frames` out of the publisher's veth (an AF_PACKET socket).
fn send_raw(publisher: &Host, frames: &[Vec<u8>]) {
    publisher.run(|| {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let index = nix::net::if_::if_nametoindex(PUB_IF).unwrap();
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = index as i32;
        to.sll_halen = 6;
        for f in frames {
            to.sll_addr[..6].copy_from_slice(&f[..6.min(f.len())]);
            // SAFETY: `f` and `to` are valid for the call.
            let rc = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const to).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert!(rc >= 0, "sendto: {}", std::io::Error::last_os_error());
        }
    });
}

#[test]
fn hostile_frames_are_counted_by_reason_and_never_delivered() {
    let test = "hostile_frames_are_counted_by_reason_and_never_delivered";
    let Some((_turn, mut lab, publisher, _subscriber)) = lab_with_xdp_sub(test, "--secs 120")
    else {
        return;
    };
    // A MoldUDP64 heartbeat of the test's session, so that a frame delivered by mistake
    // would count as a packet.
    let mut mold = Vec::new();
    mold.extend_from_slice(format!("{SESSION:<10}").as_bytes());
    mold.extend_from_slice(&1u64.to_be_bytes());
    mold.extend_from_slice(&0u16.to_be_bytes());
    let hostile = vec![
        // Short: cut inside the UDP header.
        frame(&mold, |f| f.truncate(14 + 20 + 4)),
        // IP header length 4 words (less than the minimum 5).
        frame(&mold, |f| f[14] = 0x44),
        // IP header length 15 words: longer than what follows it.
        frame(&[], |f| f[14] = 0x4f),
        // UDP length past the frame.
        frame(&mold, |f| f[38..40].copy_from_slice(&500u16.to_be_bytes())),
        // A first fragment (more fragments set).
        frame(&mold, |f| {
            f[20] = 0x20;
            f[24..26].fill(0);
            let sum = ones(&f[14..34]);
            f[24..26].copy_from_slice(&(!sum).to_be_bytes());
        }),
        // A bad IP header checksum.
        frame(&mold, |f| f[24] ^= 0xff),
        // A bad UDP checksum.
        frame(&mold, |f| f[40..42].copy_from_slice(&[0x12, 0x34])),
    ];
    send_raw(&publisher, &hostile);
    let counted = wait_until(Duration::from_secs(5), || {
        lab.log("sub").contains("listening on")
    });
    assert!(counted);
    std::thread::sleep(Duration::from_millis(500));
    let sub = stop(&mut lab, "sub");
    let xdp = &sub["xdp"];
    assert_eq!(
        u(&sub, "packets"),
        0,
        "a hostile frame was delivered: {sub}"
    );
    assert_eq!(u(&sub, "messages"), 0, "{sub}");
    let discards = &xdp["discards"];
    for reason in [
        "short",
        "ip_header_length",
        "udp_length",
        "fragment",
        "ip_checksum",
        "udp_checksum",
    ] {
        assert!(
            discards[reason].as_u64().unwrap_or(0) >= 1,
            "no {reason} counted: {xdp}"
        );
    }
    assert_eq!(u(xdp, "discarded"), hostile.len() as u64, "{xdp}");
}

#[test]
fn an_xdp_publisher_reaches_a_kernel_subscriber_complete_and_in_order() {
    let test = "an_xdp_publisher_reaches_a_kernel_subscriber_complete_and_in_order";
    let Some((_turn, mut lab, publisher, subscriber)) = lab(test) else {
        return;
    };
    start_sub(
        &mut lab,
        &subscriber,
        "sub",
        &format!(
            "--iface {SUB_IF} --group {GROUP} --session {SESSION} --idle yield --json --count \
             200000 --secs 60"
        ),
    );
    let sent = publish(
        &publisher,
        GROUP,
        "--backend xdp --count 200000 --size 32 --rate 500000",
    );
    assert_eq!(sent["backend"], "af_xdp", "{sent}");
    assert!(u(&sent["xdp"], "frames") > 0, "{sent}");
    let sub = finish(&mut lab, "sub", Duration::from_secs(30));
    assert_all_arrived(&sub, 200_000);
}

#[test]
fn xdp_without_an_interface_or_on_a_missing_one_is_a_clear_error() {
    let test = "xdp_without_an_interface_or_on_a_missing_one_is_a_clear_error";
    if !nix::unistd::geteuid().is_root() {
        print_skip(test, &"needs root");
        return;
    }
    for (iface, want) in [("nosuchif0", "nosuchif0"), ("10.231.9.9", "10.231.9.9")] {
        let line = format!("sub --backend xdp --iface {iface} --group {GROUP} --secs 1");
        let out = common::run(&common::words(&line));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line} succeeded");
        assert!(stderr.contains(want), "{line}: {stderr}");
    }
}

#[test]
fn a_source_specific_xdp_sub_takes_only_its_source() {
    let test = "a_source_specific_xdp_sub_takes_only_its_source";
    let Some((_turn, mut lab, publisher, subscriber)) = lab(test) else {
        return;
    };
    // Joined for a source that is not the publisher: the program steers the group's
    // frames to the socket, and the shard drops them as not for this subscription.
    let ssm = "232.231.0.1:41000";
    start_xdp_sub(
        &mut lab,
        &subscriber,
        ssm,
        "--source 10.231.0.99 --secs 120",
    );
    publish(&publisher, ssm, "--count 20000 --rate 100000");
    std::thread::sleep(Duration::from_millis(300));
    let sub = stop(&mut lab, "sub");
    let xdp = &sub["xdp"];
    assert_eq!(
        u(&sub, "messages"),
        0,
        "another source's messages were delivered: {sub}"
    );
    assert!(u(xdp, "frames") > 0, "the program steered nothing: {xdp}");
    assert_eq!(u(xdp, "not_subscribed"), u(xdp, "frames"), "{xdp}");
}
