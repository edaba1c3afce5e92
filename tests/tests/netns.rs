//! IP multicast between hosts: network namespaces joined by a bridge or by a router that
//! runs smcroute. Needs root (skips with the reason otherwise; CI runs these as root).

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use multipoint_control::{Direction, Interface, Membership, MultipointSocket, Roles, Transport};
use multipoint_tests::netns::wait_until;
use multipoint_tests::{lab_or_skip, Host, Lab};

const WAIT: Duration = Duration::from_secs(3);
const QUIET: Duration = Duration::from_millis(500);
const PORT: u16 = 40_321;

#[derive(Clone, Copy, Debug)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn transport(self) -> Transport {
        match self {
            Family::V4 => Transport::Udp4Multicast,
            Family::V6 => Transport::Udp6Multicast,
        }
    }

    fn group(self) -> SocketAddr {
        match self {
            Family::V4 => SocketAddr::from((Ipv4Addr::new(239, 7, 7, 7), PORT)),
            Family::V6 => SocketAddr::from((Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 7, 7), PORT)),
        }
    }

    /// Host `i`'s address on the LAN.
    fn addr(self, i: u8) -> IpAddr {
        match self {
            Family::V4 => Ipv4Addr::new(10, 99, 0, i).into(),
            Family::V6 => Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, u16::from(i)).into(),
        }
    }
}

/// `n` hosts `h1..hn` plugged into one bridge, each with `eth0` holding 10.99.0.i/24 and
/// fd99::i/64.
fn lan(lab: &mut Lab, n: u8) -> Vec<Host> {
    let sw = lab.bridge("sw");
    (1..=n)
        .map(|i| {
            let h = lab.host(&format!("h{i}"));
            let v4 = format!("10.99.0.{i}/24");
            let v6 = format!("fd99::{i}/64");
            lab.plug(&sw, &h, "eth0", &[&v4, &v6]);
            h
        })
        .collect()
}

/// A socket in `host` that sends and joins on `eth0`.
fn socket_on(host: &Host, family: Family) -> MultipointSocket {
    host.run(|| {
        let s = MultipointSocket::new(family.transport(), Roles::LEAF).unwrap();
        s.set_interface(Interface::Name("eth0".into())).unwrap();
        s.set_recv_hop_limit(true).unwrap();
        s
    })
}

/// A socket in `host` that receives `group` on `eth0`.
fn receiver_on(host: &Host, family: Family, group: SocketAddr) -> (MultipointSocket, Membership) {
    let s = socket_on(host, family);
    let m = s.join_leaf(group, Direction::ReceiverOnly, None).unwrap();
    (s, m)
}

/// What arrives until the socket has been quiet for [`QUIET`]: payloads with their
/// sources and hop limits.
fn drain(s: &MultipointSocket) -> Vec<(Vec<u8>, IpAddr, Option<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(d) = s.recv_timeout(&mut buf, QUIET).unwrap() {
        out.push((buf[..d.len].to_vec(), d.source.ip(), d.hop_limit));
    }
    out
}

fn multicast_reaches_another_host(family: Family, test: &str) {
    let mut lab = lab_or_skip!(test);
    let hosts = lan(&mut lab, 2);
    let group = family.group();
    let (rx, _m) = receiver_on(&hosts[1], family, group);
    let tx = socket_on(&hosts[0], family);
    let sender = tx.join_leaf(group, Direction::SenderOnly, None).unwrap();

    // The first datagrams may race the membership report; resend until one arrives.
    let mut buf = [0u8; 64];
    assert!(
        wait_until(WAIT, || {
            sender.send(b"hello").unwrap();
            rx.recv_timeout(&mut buf, Duration::from_millis(100))
                .unwrap()
                .is_some()
        }),
        "nothing crossed the bridge"
    );
    drain(&rx);
    for i in 0..20u8 {
        sender.send(&[i; 32]).unwrap();
    }
    let got = drain(&rx);
    assert_eq!(got.len(), 20, "every datagram arrives once: {got:?}");
    for (i, (payload, source, hop_limit)) in got.into_iter().enumerate() {
        assert_eq!(payload, [i as u8; 32]);
        assert_eq!(*hop_limit.as_ref().unwrap(), 1, "sent at scope 1");
        if matches!(family, Family::V4) {
            assert_eq!(source, family.addr(1));
        }
    }
}

#[test]
fn ipv4_multicast_reaches_another_host() {
    multicast_reaches_another_host(Family::V4, "ipv4_multicast_reaches_another_host");
}

#[test]
fn ipv6_multicast_reaches_another_host() {
    multicast_reaches_another_host(Family::V6, "ipv6_multicast_reaches_another_host");
}

fn loopback_off_keeps_packets_off_the_senders_host(family: Family, test: &str) {
    let mut lab = lab_or_skip!(test);
    let hosts = lan(&mut lab, 2);
    let group = family.group();
    let (local, _ml) = receiver_on(&hosts[0], family, group);
    let (remote, _mr) = receiver_on(&hosts[1], family, group);
    let tx = socket_on(&hosts[0], family);
    tx.set_loopback(false).unwrap();

    let mut buf = [0u8; 64];
    assert!(
        wait_until(WAIT, || {
            tx.send_to(b"probe", group).unwrap();
            remote
                .recv_timeout(&mut buf, Duration::from_millis(100))
                .unwrap()
                .is_some()
        }),
        "nothing reached the other host"
    );
    drain(&remote);
    for _ in 0..5 {
        tx.send_to(b"loopback off", group).unwrap();
    }
    assert_eq!(
        drain(&remote).len(),
        5,
        "the other host receives everything"
    );
    assert!(
        drain(&local).is_empty(),
        "with loopback off the sender's own host receives nothing"
    );

    // The same receiver does get its host's packets once loopback is back on, so the
    // silence above was the setting's doing.
    tx.set_loopback(true).unwrap();
    tx.send_to(b"loopback on", group).unwrap();
    assert_eq!(drain(&local).len(), 1);
    assert_eq!(drain(&remote).len(), 1);
}

#[test]
fn ipv4_with_loopback_off_the_senders_host_does_not_receive_its_own_packets() {
    loopback_off_keeps_packets_off_the_senders_host(
        Family::V4,
        "ipv4_with_loopback_off_the_senders_host_does_not_receive_its_own_packets",
    );
}

#[test]
fn ipv6_with_loopback_off_the_senders_host_does_not_receive_its_own_packets() {
    loopback_off_keeps_packets_off_the_senders_host(
        Family::V6,
        "ipv6_with_loopback_off_the_senders_host_does_not_receive_its_own_packets",
    );
}

#[test]
fn scope_decides_whether_multicast_crosses_a_router() {
    let test = "scope_decides_whether_multicast_crosses_a_router";
    let mut lab = lab_or_skip!(test);
    if Command::new("smcrouted").arg("-v").output().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: smcrouted is not installed (.ci/run installs smcroute)");
        }
        multipoint_tests::print_skip(test, &"needs smcrouted (apt-get install smcroute)");
        return;
    }
    // smcrouted asks the kernel to forward multicast (MRT_INIT); a kernel built without
    // CONFIG_IP_MROUTE cannot, whoever runs the test, and has no multicast route table.
    if !std::path::Path::new("/proc/net/ip_mr_vif").exists() {
        multipoint_tests::print_skip(
            test,
            &"the kernel has no multicast routing (CONFIG_IP_MROUTE: no /proc/net/ip_mr_vif)",
        );
        return;
    }
    // h1 (10.98.1.2) -- a0 [router] b0 -- h2 (10.98.2.2)
    let h1 = lab.host("h1");
    let router = lab.host("r");
    let h2 = lab.host("h2");
    lab.link(
        &h1,
        "eth0",
        &["10.98.1.2/24"],
        &router,
        "a0",
        &["10.98.1.1/24"],
    );
    lab.link(
        &router,
        "b0",
        &["10.98.2.1/24"],
        &h2,
        "eth0",
        &["10.98.2.2/24"],
    );
    router.sysctl("net.ipv4.ip_forward", "1");
    for conf in ["all", "default", "a0", "b0"] {
        router.sysctl(&format!("net.ipv4.conf.{conf}.rp_filter"), "0");
    }
    let group = SocketAddr::from((Ipv4Addr::new(239, 8, 8, 8), PORT));
    let conf = lab.dir().join("smcroute.conf");
    std::fs::write(
        &conf,
        format!("mroute from a0 group {} to b0\n", group.ip()),
    )
    .unwrap();
    let dir = lab.dir().to_owned();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let ident = router.namespace().to_owned();
    lab.spawn(
        &router,
        "smcrouted",
        &[
            "smcrouted",
            "-n",
            "-f",
            &path("smcroute.conf"),
            "-i",
            &ident,
            "-P",
            &path("smcroute.pid"),
            "-u",
            &path("smcroute.sock"),
            "-l",
            "debug",
        ],
    )
    .unwrap();

    let (rx, _m) = receiver_on(&h2, Family::V4, group);
    let tx = socket_on(&h1, Family::V4);
    tx.set_scope(2).unwrap();
    let mut buf = [0u8; 64];
    let crossed = wait_until(Duration::from_secs(10), || {
        tx.send_to(b"probe", group).unwrap();
        rx.recv_timeout(&mut buf, Duration::from_millis(100))
            .unwrap()
            .is_some()
    });
    assert!(
        crossed,
        "scope 2 never crossed the router; smcrouted running: {}; its log:\n{}",
        lab.daemon_running("smcrouted"),
        lab.log("smcrouted")
    );
    drain(&rx);

    tx.set_scope(1).unwrap();
    for _ in 0..5 {
        tx.send_to(b"scope 1", group).unwrap();
    }
    assert!(drain(&rx).is_empty(), "scope 1 must stop at the router");

    tx.set_scope(2).unwrap();
    tx.send_to(b"scope 2", group).unwrap();
    let got = drain(&rx);
    assert_eq!(
        got,
        [(
            b"scope 2".to_vec(),
            IpAddr::from(Ipv4Addr::new(10, 98, 1, 2)),
            Some(1)
        )],
        "scope 2 crosses one router and arrives with TTL 1"
    );
}

#[test]
fn the_lab_removes_everything_it_made_even_when_a_test_panics() {
    let test = "the_lab_removes_everything_it_made_even_when_a_test_panics";
    let mut lab = lab_or_skip!(test);
    let a = lab.host("a");
    let sw = lab.bridge("sw");
    lab.plug(&sw, &a, "eth0", &["10.97.0.1/24"]);
    lab.spawn(&a, "sleeper", &["sleep", "600"]).unwrap();
    let names = [a.namespace().to_owned(), sw.namespace().to_owned()];
    let dir = lab.dir().to_owned();
    let listed = || {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(names.iter().all(|n| listed().contains(n.as_str())));
    assert!(lab.daemon_running("sleeper"));

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _lab = lab;
        a.run(|| panic!("a test fails inside a host"));
    }));
    assert!(
        outcome.is_err(),
        "the panic inside the host reached the caller"
    );
    let now = listed();
    for n in &names {
        assert!(!now.contains(n.as_str()), "{n} left behind: {now}");
    }
    assert!(!dir.exists(), "scratch directory left behind");
    let sleepers = Command::new("pgrep")
        .args(["-f", "^sleep 600$"])
        .output()
        .unwrap();
    let own: Vec<_> = String::from_utf8_lossy(&sleepers.stdout)
        .lines()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| s.contains(&format!("PPid:\t{}", std::process::id())))
                .unwrap_or(false)
        })
        .map(str::to_owned)
        .collect();
    assert!(own.is_empty(), "daemon left running: {own:?}");
}
