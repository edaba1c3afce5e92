//! Behaviour of IPv4 multicast sockets on the loopback interface: no root, no host
//! configuration. Every test uses its own port (and its own groups where the kernel's
//! host-wide group table is looked at), so they run in parallel without cross-talk.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use multipoint_control::{
    ControlRole, DataRole, Direction, Error, Interface, Membership, MultipointSocket, Roles,
    Transport,
};

const WAIT: Duration = Duration::from_secs(2);
/// How long to wait before concluding that nothing will arrive.
const QUIET: Duration = Duration::from_millis(300);

/// A group of 239.255.0.0/16 that no other test of this process uses, derived from the
/// process id so that parallel test processes are unlikely to share one either.
fn fresh_group() -> Ipv4Addr {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ipv4Addr::new(239, 255, (std::process::id() % 251) as u8 + 1, n)
}

/// A group of its own (see [`fresh_group`]) on `port`.
fn fresh_on(port: u16) -> SocketAddr {
    SocketAddr::from((fresh_group(), port))
}

/// Joins `group` to receive from `source` only (a source-specific join).
fn join_from(
    s: &MultipointSocket,
    group: SocketAddr,
    source: Ipv4Addr,
) -> multipoint_control::Result<Membership> {
    s.join_leaf(group, Direction::ReceiverOnly, Some(source.into()))
}

fn socket() -> MultipointSocket {
    let s = MultipointSocket::new(Transport::Udp4Multicast, Roles::LEAF).unwrap();
    s.set_interface(Interface::LOOPBACK_V4).unwrap();
    s
}

/// A socket bound to a free port on the wildcard address, and that port.
fn bound_socket() -> (MultipointSocket, u16) {
    let s = socket();
    s.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// Receives everything that arrives until the socket has been quiet for [`QUIET`].
fn drain(s: &MultipointSocket) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(d) = s.recv_timeout(&mut buf, QUIET).unwrap() {
        out.push(buf[..d.len].to_vec());
    }
    out
}

fn recv_one(s: &MultipointSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let d = s
        .recv_timeout(&mut buf, WAIT)
        .unwrap()
        .expect("a datagram within the wait");
    assert!(!d.truncated);
    buf[..d.len].to_vec()
}

/// The groups `/proc/net/igmp` lists for the loopback interface.
fn igmp_groups_on_lo() -> Vec<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/igmp").unwrap();
    let mut on_lo = false;
    let mut groups = Vec::new();
    for line in text.lines().skip(1) {
        if !line.starts_with('\t') {
            on_lo = line.split_whitespace().nth(1) == Some("lo");
        } else if on_lo {
            let hex = line.split_whitespace().next().unwrap();
            // The kernel prints the big-endian address as a native-endian u32.
            let raw = u32::from_str_radix(hex, 16).unwrap();
            groups.push(Ipv4Addr::from(raw.to_ne_bytes()));
        }
    }
    groups
}

/// Whether group `g` shows as joined on `lo`. The kernel walks /proc/net/igmp by position,
/// so a read while other tests join and leave groups can skip an entry: it counts as
/// joined if any read within 2 s shows it.
fn joined_on_lo(g: Ipv4Addr) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        if igmp_groups_on_lo().contains(&g) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether group `g` is gone from `lo`: absent from three reads in a row (within 2 s).
fn gone_from_lo(g: Ipv4Addr) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut absent = 0;
    loop {
        if igmp_groups_on_lo().contains(&g) {
            absent = 0;
        } else {
            absent += 1;
            if absent == 3 {
                return true;
            }
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_receiver_gets_what_is_sent_after_it_joins() {
    let (rx, port) = bound_socket();
    let group = fresh_on(port);
    let tx = socket();
    // Sent before the join: must not be delivered later.
    tx.send_to(b"before", group).unwrap();
    assert!(drain(&rx).is_empty());

    let _m = rx.join_leaf(group, Direction::ReceiverOnly, None).unwrap();
    for i in 0..10u8 {
        tx.send_to(&[i; 100], group).unwrap();
    }
    let got = drain(&rx);
    let want: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100]).collect();
    assert_eq!(got, want, "each datagram exactly once, in order");
}

#[test]
fn leaving_stops_delivery() {
    let (rx, port) = bound_socket();
    let group = fresh_on(port);
    let tx = socket();

    let m = rx.join_leaf(group, Direction::ReceiverOnly, None).unwrap();
    tx.send_to(b"joined", group).unwrap();
    assert_eq!(recv_one(&rx), b"joined");
    m.leave().unwrap();
    tx.send_to(b"left", group).unwrap();
    assert!(drain(&rx).is_empty(), "nothing after an explicit leave");

    // Dropping the handle leaves too.
    let m = rx.join_leaf(group, Direction::ReceiverOnly, None).unwrap();
    tx.send_to(b"again", group).unwrap();
    assert_eq!(recv_one(&rx), b"again");
    drop(m);
    tx.send_to(b"dropped", group).unwrap();
    assert!(
        drain(&rx).is_empty(),
        "nothing after the handle was dropped"
    );
}

#[test]
fn two_receivers_on_one_port_each_get_only_their_own_group() {
    let (rx_a, port) = bound_socket();
    let rx_b = socket();
    rx_b.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        .unwrap();
    let (ga, gb) = (fresh_on(port), fresh_on(port));
    let _ma = rx_a.join_leaf(ga, Direction::ReceiverOnly, None).unwrap();
    let _mb = rx_b.join_leaf(gb, Direction::ReceiverOnly, None).unwrap();

    let tx = socket();
    tx.send_to(b"to a", ga).unwrap();
    tx.send_to(b"to b", gb).unwrap();
    assert_eq!(drain(&rx_a), [b"to a".to_vec()]);
    assert_eq!(drain(&rx_b), [b"to b".to_vec()]);

    // The same with the Linux default IP_MULTICAST_ALL=1 put back on one socket: it then
    // receives the other socket's group as well. This is what the setting prevents.
    rx_a.socket().set_multicast_all_v4(true).unwrap();
    tx.send_to(b"to b", gb).unwrap();
    assert_eq!(
        drain(&rx_a),
        [b"to b".to_vec()],
        "IP_MULTICAST_ALL=1 leaks groups"
    );
}

#[test]
fn a_source_specific_join_takes_only_the_named_source() {
    let (rx, port) = bound_socket();
    let group = fresh_on(port);
    let wanted = socket();
    wanted.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let other = socket();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();

    let _m = join_from(&rx, group, Ipv4Addr::LOCALHOST).unwrap();
    for i in 0..5u8 {
        other.send_to(&[b'x', i], group).unwrap();
        wanted.send_to(&[b'w', i], group).unwrap();
    }
    let got = drain(&rx);
    let want: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'w', i]).collect();
    assert_eq!(got, want);

    // An any-source receiver on the same port sees both senders: the filter was the join's.
    let any = socket();
    any.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        .unwrap();
    let _m2 = any.join_leaf(group, Direction::ReceiverOnly, None).unwrap();
    other.send_to(b"x", group).unwrap();
    wanted.send_to(b"w", group).unwrap();
    assert_eq!(drain(&any).len(), 2);
}

#[test]
fn the_receiver_sees_the_ttl_the_scope_set() {
    let (rx, port) = bound_socket();
    rx.set_recv_hop_limit(true).unwrap();
    let group = fresh_on(port);
    let _m = rx.join_leaf(group, Direction::ReceiverOnly, None).unwrap();
    let tx = socket();
    let mut buf = [0u8; 64];
    for scope in [0u8, 1, 2, 7, 64, 255] {
        tx.set_scope(scope).unwrap();
        tx.send_to(&[scope], group).unwrap();
        let d = rx
            .recv_timeout(&mut buf, WAIT)
            .unwrap()
            .expect("a datagram");
        assert_eq!(buf[..d.len], [scope]);
        assert_eq!(d.hop_limit, Some(scope), "scope {scope}");
        assert!(drain(&rx).is_empty(), "exactly one copy at scope {scope}");
    }
}

#[test]
fn sender_only_joins_send_no_membership_report() {
    let (rx, port) = bound_socket();
    let g = fresh_group();
    let group = SocketAddr::from((g, port));
    let tx = socket();
    let sender = tx.join_leaf(group, Direction::SenderOnly, None).unwrap();
    assert!(
        gone_from_lo(g),
        "a sender-only join must not make a kernel membership"
    );
    let receiver = rx.join_leaf(group, Direction::ReceiverOnly, None).unwrap();
    assert!(joined_on_lo(g), "a receiving join makes one");

    sender.send(b"from a sender-only leaf").unwrap();
    assert_eq!(recv_one(&rx), b"from a sender-only leaf");
    drop(receiver);
    assert!(gone_from_lo(g), "leaving removes it");
}

#[test]
fn closing_the_socket_leaves_its_groups() {
    let (rx, port) = bound_socket();
    let g = fresh_group();
    let m = rx
        .join_leaf(SocketAddr::from((g, port)), Direction::ReceiverOnly, None)
        .unwrap();
    assert!(joined_on_lo(g));
    drop(rx);
    assert!(gone_from_lo(g));
    assert!(matches!(m.leave(), Err(Error::NotMember { .. })));
}

#[test]
fn settings_start_at_the_documented_defaults_and_read_back_what_was_set() {
    let s = MultipointSocket::new(Transport::Udp4Multicast, Roles::LEAF).unwrap();
    assert!(s.loopback().unwrap());
    assert_eq!(s.scope().unwrap(), 1);
    assert_eq!(s.interface().unwrap(), Interface::Default);
    assert!(!s.socket().multicast_all_v4().unwrap());

    s.set_loopback(false).unwrap();
    assert!(!s.loopback().unwrap());
    s.set_scope(0).unwrap();
    assert_eq!(s.scope().unwrap(), 0);
    s.set_scope(255).unwrap();
    assert_eq!(s.scope().unwrap(), 255);
    s.set_interface(Interface::Name("lo".into())).unwrap();
    assert_eq!(s.interface().unwrap(), Interface::LOOPBACK_V4);
    s.set_interface(Interface::Default).unwrap();
    assert_eq!(s.interface().unwrap(), Interface::Default);
}

#[test]
fn a_membership_sends_to_its_group() {
    let (rx, port) = bound_socket();
    let group = fresh_on(port);
    let both = rx.join_leaf(group, Direction::Both, None).unwrap();
    assert_eq!(both.group(), group);
    assert_eq!(both.direction(), Direction::Both);
    both.send(b"to myself").unwrap();
    assert_eq!(recv_one(&rx), b"to myself");
}

// ---- errors ----------------------------------------------------------------------------

fn assert_mentions(err: &Error, words: &[&str]) {
    let msg = err.to_string();
    for w in words {
        assert!(msg.contains(w), "{msg:?} should mention {w:?}");
    }
}

#[test]
fn a_group_that_is_not_multicast_is_refused() {
    let (s, port) = bound_socket();
    for addr in [
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::BROADCAST,
    ] {
        let err = s
            .join_leaf(SocketAddr::from((addr, port)), Direction::Both, None)
            .unwrap_err();
        assert!(matches!(err, Error::NotMulticast { .. }), "{err}");
        assert_mentions(
            &err,
            &[&addr.to_string(), "not a multicast address", "224.0.0.0/4"],
        );
    }
}

#[test]
fn addresses_of_the_other_family_are_refused() {
    let s = socket();
    let v6_group = SocketAddr::from((Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0, 1), 5000));
    let err = s.join_leaf(v6_group, Direction::Both, None).unwrap_err();
    assert!(matches!(err, Error::WrongFamily { .. }), "{err}");
    assert_mentions(&err, &["IPv6", "udp4-multicast", "udp6-multicast socket"]);

    let v4_group = fresh_on(5000);
    let err = s
        .join_leaf(v4_group, Direction::Both, Some(Ipv6Addr::LOCALHOST.into()))
        .unwrap_err();
    assert!(matches!(err, Error::WrongFamily { .. }), "{err}");
    assert!(matches!(
        s.bind("[::1]:0".parse().unwrap()),
        Err(Error::WrongFamily { .. })
    ));
    assert!(matches!(
        s.send_to(b"x", v6_group),
        Err(Error::WrongFamily { .. })
    ));
    assert!(matches!(
        s.set_interface(Ipv6Addr::LOCALHOST),
        Err(Error::WrongFamily { .. })
    ));

    let s6 = MultipointSocket::new(Transport::Udp6Multicast, Roles::LEAF).unwrap();
    let err = s6.join_leaf(v4_group, Direction::Both, None).unwrap_err();
    assert!(matches!(err, Error::WrongFamily { .. }), "{err}");
    assert_mentions(&err, &["IPv4", "udp6-multicast", "udp4-multicast socket"]);
}

#[test]
fn joining_twice_is_already_a_member() {
    let (s, port) = bound_socket();
    let group = fresh_on(port);
    let _m = s.join_leaf(group, Direction::ReceiverOnly, None).unwrap();
    for (dir, src) in [
        (Direction::ReceiverOnly, None),
        (Direction::SenderOnly, None),
        (Direction::Both, Some(IpAddr::from(Ipv4Addr::LOCALHOST))),
    ] {
        let err = s.join_leaf(group, dir, src).unwrap_err();
        assert!(matches!(err, Error::AlreadyMember { .. }), "{err}");
        assert_mentions(&err, &["already a member", &group.ip().to_string()]);
    }
    // Two sources of one group are two memberships; the same source twice is not.
    let g2 = fresh_on(port);
    let _a = join_from(&s, g2, Ipv4Addr::LOCALHOST).unwrap();
    let _b = join_from(&s, g2, Ipv4Addr::new(127, 0, 0, 2)).unwrap();
    let err = join_from(&s, g2, Ipv4Addr::LOCALHOST).unwrap_err();
    assert_mentions(&err, &["already a member", "from source 127.0.0.1"]);
}

#[test]
fn leaving_what_was_never_joined_is_not_a_member() {
    let (s, port) = bound_socket();
    let g = fresh_group();
    let err = s.leave(g.into(), None).unwrap_err();
    assert!(matches!(err, Error::NotMember { .. }), "{err}");
    assert_mentions(&err, &["not a member", &g.to_string()]);

    // Left through the socket, the handle has nothing left to leave.
    let m = s
        .join_leaf(SocketAddr::from((g, port)), Direction::ReceiverOnly, None)
        .unwrap();
    s.leave(g.into(), None).unwrap();
    assert!(matches!(m.leave(), Err(Error::NotMember { .. })));
}

#[test]
fn unknown_interfaces_are_refused() {
    let s = socket();
    for iface in [
        Interface::Name("nosuchif9".into()),
        Interface::Index(999_999),
        Interface::Addr(Ipv4Addr::new(192, 0, 2, 1).into()),
    ] {
        let err = s.set_interface(iface.clone()).unwrap_err();
        assert!(matches!(err, Error::UnknownInterface { .. }), "{err}");
        assert_mentions(&err, &["no interface", &iface.to_string(), "ip -br addr"]);
    }
    // The socket keeps the interface it had.
    assert_eq!(s.interface().unwrap(), Interface::LOOPBACK_V4);
}

#[test]
fn the_membership_limit_names_the_sysctl_to_raise() {
    let limit: usize = std::fs::read_to_string("/proc/sys/net/ipv4/igmp_max_memberships")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if limit > 1000 {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "skipped: net.ipv4.igmp_max_memberships is {limit}, too many joins to reach"
        );
        return;
    }
    let (s, port) = bound_socket();
    let base = fresh_group().octets();
    let mut held = Vec::new();
    let err = loop {
        let n = held.len();
        let g = Ipv4Addr::new(239, 254, base[2], 0).to_bits() + n as u32;
        match s.join_leaf(
            SocketAddr::from((Ipv4Addr::from_bits(g), port)),
            Direction::ReceiverOnly,
            None,
        ) {
            Ok(m) => held.push(m),
            Err(e) => break e,
        }
        assert!(held.len() <= limit, "joined more groups than the limit");
    };
    assert_eq!(
        held.len(),
        limit,
        "the limit-th join succeeds, the next fails"
    );
    assert!(matches!(err, Error::MembershipLimit { .. }), "{err}");
    assert_mentions(
        &err,
        &["net.ipv4.igmp_max_memberships", &limit.to_string(), "raise"],
    );
}

#[test]
fn roles_the_transport_cannot_take_are_refused_at_creation() {
    for roles in [
        Roles::ROOT,
        Roles::new(ControlRole::Root, DataRole::Leaf),
        Roles::new(ControlRole::Leaf, DataRole::Root),
    ] {
        for t in [Transport::Udp4Multicast, Transport::Udp6Multicast] {
            let err = MultipointSocket::new(t, roles).unwrap_err();
            assert!(matches!(err, Error::RoleNotAllowed { .. }), "{err}");
            assert_mentions(
                &err,
                &["not allowed", t.name(), "non-rooted", "C_LEAF|D_LEAF"],
            );
        }
    }
}

#[test]
fn rooted_transports_take_rooted_sockets() {
    for t in [Transport::RootedUnicast, Transport::AdmittedMulticast] {
        let err = MultipointSocket::new(t, Roles::LEAF).unwrap_err();
        assert!(matches!(err, Error::WrongSocketKind { .. }), "{err}");
        assert_mentions(&err, &["rooted::Root", "rooted::Leaf", t.name()]);
    }
    // A role the transport cannot take is still reported as such first.
    let err = MultipointSocket::new(Transport::AdmittedMulticast, Roles::ROOT).unwrap_err();
    assert!(
        matches!(err, Error::RoleNotAllowed { role: "D_ROOT", .. }),
        "{err}"
    );
}

#[test]
fn a_receiving_join_on_another_port_is_refused() {
    let (s, port) = bound_socket();
    let other = port.wrapping_add(1).max(1);
    let err = s
        .join_leaf(fresh_on(other), Direction::Both, None)
        .unwrap_err();
    assert!(matches!(err, Error::PortMismatch { .. }), "{err}");
    assert_mentions(&err, &[&port.to_string(), &other.to_string()]);

    let unbound = socket();
    let err = unbound
        .join_leaf(fresh_on(0), Direction::ReceiverOnly, None)
        .unwrap_err();
    assert_mentions(&err, &["port 0"]);
    // A sender-only join on another port is fine: it receives nothing.
    s.join_leaf(fresh_on(other), Direction::SenderOnly, None)
        .unwrap();
}

#[test]
fn a_receive_only_membership_cannot_send() {
    let (s, port) = bound_socket();
    let m = s
        .join_leaf(fresh_on(port), Direction::ReceiverOnly, None)
        .unwrap();
    let err = m.send(b"x").unwrap_err();
    assert!(matches!(err, Error::ReceiveOnly { .. }), "{err}");
    assert_mentions(&err, &["receive-only", "SenderOnly"]);
}

#[test]
fn other_kernel_refusals_come_back_as_os_errors() {
    let s = socket();
    let err = s.bind("192.0.2.1:0".parse().unwrap()).unwrap_err();
    assert!(
        matches!(&err, Error::OsAt { source, .. } if source.kind() == std::io::ErrorKind::AddrNotAvailable),
        "{err}"
    );
    assert_mentions(&err, &["binding 192.0.2.1:0"]);
}
