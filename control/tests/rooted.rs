//! The rooted control protocol, by behaviour, on loopback TCP: admission and refusal,
//! invitations, one join at a time, leaving, liveness timeouts both ways, closing the
//! root, no growth over many joins, and authenticated admission with a pre-shared key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use multipoint_control::rooted::proto::{decode, Frame};
use multipoint_control::rooted::{
    DataPlan, Decision, JoinRequest, Key, Leaf, LeafConfig, LeafHandle, LeafId, Root, RootConfig,
    RootEvent, RootHooks, SessionEvent, AUTH_FAILED,
};
use multipoint_control::{ControlRole, DataRole, Direction, Error, Roles, Transport};

use common::{
    join_by_hand, joined, leaf, leaf_config, next_event, read_to_close, refusal, root,
    root_and_receiver, root_config, root_with, session_event, unicast_plan, Admit, ANY, SESSION,
};

/// Admits the leaves whose name starts with "good".
fn gatekeeper() -> impl RootHooks {
    Admit(|request: &JoinRequest| {
        if request.name.starts_with("good") {
            Decision::Admit
        } else {
            Decision::Refuse(format!("{} is not on the list", request.name))
        }
    })
}

#[test]
fn roles_are_checked_at_creation() {
    let root = |transport, roles| Root::new(transport, roles, RootConfig::new(SESSION));
    let err = root(Transport::RootedUnicast, Roles::LEAF).unwrap_err();
    assert!(matches!(err, Error::WrongSocketKind { .. }), "{err}");
    let err = root(Transport::Udp4Multicast, Roles::LEAF).unwrap_err();
    assert!(matches!(err, Error::WrongSocketKind { .. }), "{err}");
    // admitted-multicast has a non-rooted data plane: D_ROOT is refused by the model.
    let err = root(Transport::AdmittedMulticast, Roles::ROOT).unwrap_err();
    assert!(
        matches!(err, Error::RoleNotAllowed { role: "D_ROOT", .. }),
        "{err}"
    );
    let admitted_root = Roles::new(ControlRole::Root, DataRole::Leaf);
    root(Transport::AdmittedMulticast, admitted_root).unwrap();
    let err = Leaf::new(Transport::RootedUnicast, Roles::ROOT, LeafConfig::new("x")).unwrap_err();
    assert!(matches!(err, Error::WrongSocketKind { .. }), "{err}");
    let err = Leaf::new(Transport::Udp6Multicast, Roles::LEAF, LeafConfig::new("x")).unwrap_err();
    assert!(matches!(err, Error::WrongSocketKind { .. }), "{err}");
}

#[test]
fn a_leaf_joins_learns_the_plan_and_leaves() {
    let (root, at) = root(Duration::from_secs(3));
    let leaf = leaf("alpha", 40201);
    let session = leaf.join_leaf(at, Direction::ReceiverOnly).unwrap();
    assert_eq!(session.session(), SESSION);
    assert_eq!(session.plan(), &unicast_plan());
    assert_eq!(session.direction(), Direction::ReceiverOnly);
    assert_eq!(session.timeout(), Duration::from_secs(3));
    assert!(!session.invited());
    assert!(leaf.in_session());

    let handle = joined(&root);
    assert_eq!(handle.name(), "alpha");
    assert_eq!(handle.direction(), Direction::ReceiverOnly);
    assert_eq!(handle.data(), Some("127.0.0.1:40201".parse().unwrap()));
    assert_eq!(root.leaves().len(), 1);

    session.leave().unwrap();
    assert!(!leaf.in_session());
    match next_event(&root, Duration::from_secs(2)) {
        RootEvent::Left { leaf: id, reason } => {
            assert_eq!(id, handle.id());
            assert!(reason.contains("left"), "{reason}");
        }
        other => panic!("expected Left, got {other:?}"),
    }
    assert!(root.leaves().is_empty());
    assert!(!handle.is_present());
    assert!(matches!(handle.remove(), Err(Error::LeafGone { .. })));
}

#[test]
fn a_refused_join_gets_its_reason_and_no_plan() {
    let (root, at) = root_with(gatekeeper());
    let bad = leaf("mallory", 40202);
    let (peer, reason) = refusal(bad.join_leaf(at, Direction::ReceiverOnly));
    assert_eq!(reason, "mallory is not on the list");
    assert_eq!(peer, at);
    assert!(!bad.in_session());
    match next_event(&root, Duration::from_secs(2)) {
        RootEvent::Refused { reason, .. } => assert!(reason.contains("mallory")),
        other => panic!("expected Refused, got {other:?}"),
    }
    // The refused leaf can try again elsewhere; an admitted one gets in.
    let good = leaf("good-leaf", 40203);
    good.join_leaf(at, Direction::Both).unwrap();
    joined(&root);
}

#[test]
fn the_wire_carries_no_plan_to_a_refused_leaf() {
    // Speak the protocol by hand and look at every byte the root sends back.
    let (_root, at) = root_with(gatekeeper());
    let mut stream = join_by_hand(at, "eve", 40204);
    let (bytes, read) = read_to_close(&mut stream);
    read.unwrap();
    let (frame, used) = decode(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len(), "only one frame, then the root closes");
    assert_eq!(
        frame,
        Frame::Refuse {
            reason: "eve is not on the list".into()
        }
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("40100"));
}

#[test]
fn joining_twice_is_already_a_member_and_one_join_is_pending_at_a_time() {
    let (_root, at) = root(Duration::from_secs(3));
    let leaf = leaf("twice", 40205);
    let session = leaf.join_leaf(at, Direction::ReceiverOnly).unwrap();
    let err = leaf.join_leaf(at, Direction::ReceiverOnly).unwrap_err();
    assert!(matches!(err, Error::AlreadyJoined), "{err}");
    assert!(err.to_string().contains("already a member"), "{err}");
    session.leave().unwrap();
    // After leaving, joining works again.
    let again = leaf.join_leaf(at, Direction::ReceiverOnly).unwrap();
    drop(again);

    // A root that never answers keeps the first join pending; a second meanwhile is
    // refused at once.
    let silent = std::net::TcpListener::bind(ANY).unwrap();
    let silent_at = silent.local_addr().unwrap();
    let mut config = leaf_config("pending", 40206);
    config.join_timeout = Duration::from_millis(800);
    let leaf = Arc::new(Leaf::new(Transport::RootedUnicast, Roles::LEAF, config).unwrap());
    let first = {
        let leaf = Arc::clone(&leaf);
        std::thread::spawn(move || leaf.join_leaf(silent_at, Direction::ReceiverOnly))
    };
    let _conn = silent.accept().unwrap();
    let err = leaf.join_leaf(at, Direction::ReceiverOnly).unwrap_err();
    assert!(matches!(err, Error::JoinPending), "{err}");
    let err = first.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::TimedOut { .. }), "{err}");
    // The slot is free again.
    leaf.join_leaf(at, Direction::ReceiverOnly).unwrap();
}

#[test]
fn a_root_invites_a_listening_leaf() {
    let (root, _) = root(Duration::from_secs(3));
    let leaf = leaf("invitee", 40207);
    let leaf_at = leaf.listen(ANY).unwrap();
    let handle = root.join_leaf(leaf_at, Direction::Both).unwrap();
    assert!(handle.invited());
    assert_eq!(handle.direction(), Direction::Both);
    let session = leaf
        .accept(Duration::from_secs(2))
        .unwrap()
        .expect("a session");
    assert!(session.invited());
    assert_eq!(session.plan(), &unicast_plan());
    joined(&root);

    // Invited again while in the session: the leaf declines, "already a member".
    let (_, reason) = refusal(root.join_leaf(leaf_at, Direction::Both));
    assert!(reason.contains("already a member"));
    // The root removes it; the leaf is told.
    handle.remove().unwrap();
    assert_eq!(
        session_event(&session, Duration::from_secs(2)),
        SessionEvent::Removed {
            reason: "removed by the root".into()
        }
    );
    assert!(!session.is_active());
}

#[test]
fn a_leaf_declines_an_invitation_with_a_reason() {
    let (root, _) = root(Duration::from_secs(3));
    let mut config = leaf_config("picky", 40208);
    config.on_invite = Some(Arc::new(|inv: &multipoint_control::rooted::Invitation| {
        if inv.direction == Direction::SenderOnly {
            Decision::Refuse("I only listen".into())
        } else {
            Decision::Admit
        }
    }));
    let leaf = Leaf::new(Transport::RootedUnicast, Roles::LEAF, config).unwrap();
    let leaf_at = leaf.listen(ANY).unwrap();
    let (peer, reason) = refusal(root.join_leaf(leaf_at, Direction::SenderOnly));
    assert_eq!(reason, "I only listen");
    assert_eq!(peer, leaf_at);
    assert!(!leaf.in_session());
    root.join_leaf(leaf_at, Direction::ReceiverOnly).unwrap();
    assert!(leaf.accept(Duration::from_secs(2)).unwrap().is_some());
}

#[test]
fn a_root_that_listens_also_invites() {
    let (root, at) = root(Duration::from_secs(3));
    let asker = leaf("asker", 40209);
    let invitee = leaf("invitee", 40210);
    let invitee_at = invitee.listen(ANY).unwrap();
    let _s1 = asker.join_leaf(at, Direction::ReceiverOnly).unwrap();
    root.join_leaf(invitee_at, Direction::ReceiverOnly).unwrap();
    let _s2 = invitee.accept(Duration::from_secs(2)).unwrap().unwrap();
    assert_eq!(root.leaves().len(), 2);
}

#[test]
fn heartbeats_keep_a_session_alive_past_the_timeout() {
    let timeout = Duration::from_millis(300);
    let (root, _, _leaf, session) = root_and_receiver(timeout, "steady", 40211);
    std::thread::sleep(timeout * 5);
    assert!(session.is_active());
    assert!(session.events().try_recv().is_err());
    assert!(
        root.events().try_recv().is_err(),
        "no event while heartbeats flow"
    );
    assert_eq!(root.leaves().len(), 1);
}

#[test]
fn a_silent_leaf_is_removed_after_the_timeout() {
    let timeout = Duration::from_millis(500);
    let (root, at, _healthy, healthy_session) = root_and_receiver(timeout, "healthy", 40212);

    // A leaf that joins and then hangs (its process stopped, its connection still open):
    // spoken by hand, it never sends a heartbeat.
    let _hung = join_by_hand(at, "hung", 40213);
    let silent_since = Instant::now();
    let handle = joined(&root);
    match next_event(&root, timeout * 4 + Duration::from_secs(2)) {
        RootEvent::TimedOut { leaf } => assert_eq!(leaf, handle.id()),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(
        silent_since.elapsed() >= timeout,
        "not removed before the timeout"
    );
    assert!(!handle.is_present());
    // The healthy leaf is untouched.
    assert!(healthy_session.is_active());
    assert_eq!(root.leaves().len(), 1);
}

#[test]
fn a_leaf_learns_its_root_went_silent() {
    // A "root" that admits by hand and then says nothing more.
    let listener = std::net::TcpListener::bind(ANY).unwrap();
    let at = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 512];
        let n = stream.read(&mut buf).unwrap();
        assert!(matches!(
            decode(&buf[..n]).unwrap(),
            Some((Frame::Join { .. }, _))
        ));
        let mut out = Vec::new();
        Frame::Admit {
            session: SESSION,
            timeout_ms: 300,
            next_sequence: 0,
            plan: unicast_plan(),
        }
        .encode(&mut out)
        .unwrap();
        stream.write_all(&out).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(stream);
    });
    let leaf = leaf("orphan", 40214);
    let session = leaf.join_leaf(at, Direction::ReceiverOnly).unwrap();
    match session_event(&session, Duration::from_secs(3)) {
        SessionEvent::RootGone { reason } => assert!(reason.contains("timeout"), "{reason}"),
        other => panic!("expected RootGone, got {other:?}"),
    }
    assert!(!session.is_active());
    assert!(!leaf.in_session());
    fake.join().unwrap();
}

#[test]
fn closing_the_root_ends_the_session_at_every_leaf() {
    let (root, at) = root(Duration::from_secs(3));
    let leaves: Vec<Leaf> = (0..32).map(|i| leaf(&format!("l{i}"), 41000 + i)).collect();
    let sessions: Vec<_> = leaves
        .iter()
        .map(|l| l.join_leaf(at, Direction::ReceiverOnly).unwrap())
        .collect();
    assert_eq!(root.leaves().len(), 32);
    root.close();
    for session in &sessions {
        match session_event(session, Duration::from_secs(3)) {
            SessionEvent::Ended { reason } => assert!(reason.contains("closed")),
            other => panic!("expected Ended, got {other:?}"),
        }
        assert!(!session.is_active());
    }
    assert!(leaves.iter().all(|l| !l.in_session()));
}

#[test]
fn a_leaf_of_another_transport_is_refused() {
    let (root, at) = root(Duration::from_secs(3));
    let leaf = Leaf::new(
        Transport::AdmittedMulticast,
        Roles::LEAF,
        LeafConfig::new("wrong"),
    )
    .unwrap();
    let (_, reason) = refusal(leaf.join_leaf(at, Direction::ReceiverOnly));
    assert!(reason.contains("rooted-unicast"), "{reason}");
    // A rooted-unicast leaf without a data address is refused too.
    let leaf = Leaf::new(
        Transport::RootedUnicast,
        Roles::LEAF,
        LeafConfig::new("nodata"),
    )
    .unwrap();
    assert!(matches!(
        leaf.join_leaf(at, Direction::ReceiverOnly),
        Err(Error::Refused { .. })
    ));
    drop(root);
}

#[test]
fn garbage_on_the_control_port_is_dropped_without_harm() {
    let (root, at) = root(Duration::from_secs(3));
    let mut stream = TcpStream::connect(at).unwrap();
    stream.write_all(&[0xff; 64]).unwrap();
    // The root closes the connection.
    let (rest, _) = read_to_close(&mut stream);
    assert!(rest.is_empty());
    // And still serves real leaves.
    let leaf = leaf("after-garbage", 40215);
    leaf.join_leaf(at, Direction::ReceiverOnly).unwrap();
    joined(&root);
}

#[test]
fn hooks_see_every_join_and_departure() {
    #[derive(Default)]
    struct Counting {
        joined: Arc<AtomicUsize>,
        gone: Arc<AtomicUsize>,
    }
    impl RootHooks for Counting {
        fn on_join(
            &mut self,
            _leaf: LeafId,
            request: &JoinRequest,
            _default: Option<&DataPlan>,
        ) -> Result<DataPlan, String> {
            self.joined.fetch_add(1, Ordering::SeqCst);
            Ok(DataPlan::Unicast {
                root: "127.0.0.1:40100".parse().unwrap(),
                uplink: request.data,
            })
        }
        fn on_gone(&mut self, _leaf: LeafId) {
            self.gone.fetch_add(1, Ordering::SeqCst);
        }
    }
    let hooks = Counting::default();
    let (joined, gone) = (Arc::clone(&hooks.joined), Arc::clone(&hooks.gone));
    let (root, at) = root_with(hooks);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let leaf = leaf(&format!("t{i}"), 41100 + i);
                barrier.wait();
                let s = leaf.join_leaf(at, Direction::Both).unwrap();
                let DataPlan::Unicast { uplink, .. } = s.plan() else {
                    panic!("unicast plan")
                };
                assert_eq!(
                    *uplink,
                    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 41100 + i))
                );
                s.leave().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    root.close();
    assert_eq!(joined.load(Ordering::SeqCst), 8);
    assert_eq!(gone.load(Ordering::SeqCst), 8);
}

#[test]
fn a_panicking_hook_refuses_the_leaf_and_the_root_carries_on() {
    let (root, at) = root_with(Admit(|request: &JoinRequest| {
        assert!(request.name != "boom", "the admission hook panicked");
        Decision::Admit
    }));
    let fine = leaf("fine", 40216);
    let _s = fine.join_leaf(at, Direction::ReceiverOnly).unwrap();
    let boom = leaf("boom", 40217);
    let (_, reason) = refusal(boom.join_leaf(at, Direction::ReceiverOnly));
    assert!(reason.contains("hook failed"), "{reason}");
    let later = leaf("later", 40218);
    let _s2 = later.join_leaf(at, Direction::ReceiverOnly).unwrap();
    assert_eq!(root.leaves().len(), 2);
}

#[test]
fn waiting_calls_from_a_hook_fail_instead_of_deadlocking() {
    let slot: Arc<std::sync::Mutex<Option<LeafHandle>>> = Arc::new(std::sync::Mutex::new(None));
    let in_hook = Arc::clone(&slot);
    let (root, at) = root_with(Admit(move |_: &JoinRequest| {
        if let Some(handle) = in_hook.lock().unwrap().as_ref() {
            let err = handle.remove().unwrap_err();
            assert!(matches!(err, Error::InsideHook { .. }), "{err}");
            return Decision::Refuse(err.to_string());
        }
        Decision::Admit
    }));
    let first = leaf("first", 40219);
    let _s = first.join_leaf(at, Direction::ReceiverOnly).unwrap();
    *slot.lock().unwrap() = Some(root.leaves()[0].clone());
    let second = leaf("second", 40220);
    let (_, reason) = refusal(second.join_leaf(at, Direction::ReceiverOnly));
    assert!(
        reason.contains("cannot be called from a root hook"),
        "{reason}"
    );
}

#[test]
fn a_timeout_out_of_range_is_refused_at_creation() {
    for timeout in [
        Duration::ZERO,
        Duration::from_millis(99),
        Duration::from_secs(3601),
    ] {
        let err =
            Root::new(Transport::RootedUnicast, Roles::ROOT, root_config(timeout)).unwrap_err();
        assert!(matches!(err, Error::BadSetting { .. }), "{err}");
    }
}

#[test]
fn closing_a_root_refuses_a_leaf_still_on_its_way_in() {
    // A connection that has not said Join yet when the root closes is refused
    // ("closing"), not told of a session it never had.
    let (root, _) = root(Duration::from_secs(3));
    let at = root.local_addr().unwrap();
    let mut quiet = TcpStream::connect(at).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    root.close();
    let (bytes, _) = read_to_close(&mut quiet);
    let (frame, _) = decode(&bytes).unwrap().unwrap();
    assert_eq!(
        frame,
        Frame::Refuse {
            reason: "the root is closing".into()
        }
    );
}

#[test]
fn joining_or_inviting_where_nobody_listens_fails_with_the_os_error() {
    // A port that was just free: nobody listens there.
    let nobody = std::net::TcpListener::bind(ANY)
        .unwrap()
        .local_addr()
        .unwrap();
    let leaf = leaf("lonely", 40221);
    match leaf.join_leaf(nobody, Direction::ReceiverOnly) {
        Err(Error::OsAt { op, addr, source }) => {
            assert_eq!((op, addr), ("connecting to the root", nobody));
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected the connection refused, got {other:?}"),
    }
    assert!(!leaf.in_session());
    let (inviter, at) = root(Duration::from_secs(3));
    match inviter.join_leaf(nobody, Direction::Both) {
        Err(Error::OsAt { op, addr, .. }) => {
            assert_eq!((op, addr), ("connecting to the leaf", nobody))
        }
        other => panic!("expected the connection refused, got {other:?}"),
    }
    // Neither socket is left with a join pending.
    leaf.join_leaf(at, Direction::ReceiverOnly).unwrap();
    let invitee = self::leaf("invitee", 40222);
    inviter
        .join_leaf(invitee.listen(ANY).unwrap(), Direction::Both)
        .unwrap();
}

// ---- authenticated admission ---------------------------------------------------------

const KEY: [u8; 32] = *b"a pre-shared key of 32 bytes ok!";

/// A rooted-unicast root with [`KEY`] (3 s timeout), listening on loopback.
fn keyed_root() -> (Root, SocketAddr) {
    let mut config = root_config(Duration::from_secs(3));
    config.key = Some(Key::new(KEY).unwrap());
    let root = Root::new(Transport::RootedUnicast, Roles::ROOT, config).unwrap();
    let at = root.listen(ANY).unwrap();
    (root, at)
}

/// A leaf named `name` (data on `port`) holding `key`.
fn keyed_leaf(name: &str, port: u16, key: Option<&[u8]>) -> Leaf {
    let mut config = leaf_config(name, port);
    config.key = key.map(|k| Key::new(k).unwrap());
    Leaf::new(Transport::RootedUnicast, Roles::LEAF, config).unwrap()
}

/// The next root event, which must be a refusal for authentication.
fn refused_for_authentication(root: &Root) {
    match next_event(root, Duration::from_secs(2)) {
        RootEvent::Refused { reason, .. } => assert_eq!(reason, AUTH_FAILED),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn a_root_with_a_key_admits_who_holds_it_and_refuses_a_keyless_and_a_wrong_key_leaf() {
    let (root, at) = keyed_root();
    let good = keyed_leaf("good", 40230, Some(&KEY));
    let session = good.join_leaf(at, Direction::ReceiverOnly).unwrap();
    assert_eq!(session.plan(), &unicast_plan());
    assert_eq!(joined(&root).name(), "good");

    for (name, key) in [("keyless", None), ("wrong", Some(&[9u8; 32][..]))] {
        let leaf = keyed_leaf(name, 40231, key);
        let (peer, reason) = refusal(leaf.join_leaf(at, Direction::ReceiverOnly));
        assert_eq!((peer, reason.as_str()), (at, AUTH_FAILED), "{name}");
        assert!(!leaf.in_session());
        refused_for_authentication(&root);
    }
    assert_eq!(root.leaves().len(), 1, "only the leaf with the key is in");
    assert!(session.is_active());
}

#[test]
fn a_leaf_with_a_key_refuses_a_root_without_one() {
    let (root, at) = self::root(Duration::from_secs(3));
    let leaf = keyed_leaf("careful", 40232, Some(&KEY));
    match leaf.join_leaf(at, Direction::ReceiverOnly) {
        Err(err @ Error::AuthenticationFailed { .. }) => {
            assert!(
                err.to_string().starts_with("authentication failed"),
                "{err}"
            );
        }
        other => panic!("expected the root refused, got {other:?}"),
    }
    assert!(!leaf.in_session());
    let handle = joined(&root);
    match next_event(&root, Duration::from_secs(2)) {
        RootEvent::Left { leaf, reason } => {
            assert_eq!((leaf, reason.as_str()), (handle.id(), AUTH_FAILED));
        }
        other => panic!("expected Left, got {other:?}"),
    }
    assert!(root.leaves().is_empty());
}

#[test]
fn a_keyed_root_invites_a_leaf_with_the_key_and_is_declined_by_one_without() {
    let (root, _) = keyed_root();
    let good = keyed_leaf("invitee", 40233, Some(&KEY));
    let handle = root
        .join_leaf(good.listen(ANY).unwrap(), Direction::Both)
        .unwrap();
    assert!(handle.invited());
    let _session = good
        .accept(Duration::from_secs(2))
        .unwrap()
        .expect("a session");
    joined(&root);

    let wrong = keyed_leaf("wrong", 40234, Some(&[1; 16]));
    let (_, reason) = refusal(root.join_leaf(wrong.listen(ANY).unwrap(), Direction::Both));
    assert_eq!(reason, AUTH_FAILED);
    assert!(!wrong.in_session());
    refused_for_authentication(&root);
}

/// Reads the next frame from `stream` (3 s at most), keeping what follows in `pending`.
fn read_frame(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Frame> {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    loop {
        if let Some((frame, used)) = decode(pending).unwrap() {
            pending.drain(..used);
            return Some(frame);
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

fn send(stream: &mut TcpStream, frame: &Frame) {
    let mut out = Vec::new();
    frame.encode(&mut out).unwrap();
    stream.write_all(&out).unwrap();
}

/// HMAC-SHA256 with [`KEY`] over the parts, one after the other.
fn hmac(parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&KEY).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[test]
fn a_proof_made_by_the_documented_recipe_is_admitted_and_its_replay_is_refused() {
    let (root, at) = keyed_root();
    let join = Frame::Join {
        transport: Transport::RootedUnicast,
        direction: Direction::ReceiverOnly,
        data: Some("127.0.0.1:40235".parse().unwrap()),
        name: "by-hand".into(),
    };
    let mut join_bytes = Vec::new();
    join.encode(&mut join_bytes).unwrap();
    let leaf_nonce = [0x5a; 32];

    // The exchange, spoken by hand as rooted::auth documents it.
    let mut first = TcpStream::connect(at).unwrap();
    let mut pending = Vec::new();
    send(&mut first, &join);
    let Some(Frame::Challenge { nonce: root_nonce }) = read_frame(&mut first, &mut pending) else {
        panic!("expected a Challenge");
    };
    let mac = hmac(&[b"multipoint-join-v1", &root_nonce, &leaf_nonce, &join_bytes]);
    let proof = Frame::Proof {
        nonce: leaf_nonce,
        mac,
    };
    send(&mut first, &proof);
    let Some(Frame::RootProof { mac: root_mac }) = read_frame(&mut first, &mut pending) else {
        panic!("expected the root's proof");
    };
    let admit = read_frame(&mut first, &mut pending).unwrap();
    assert!(matches!(admit, Frame::Admit { .. }), "{admit:?}");
    let mut admit_bytes = Vec::new();
    admit.encode(&mut admit_bytes).unwrap();
    assert_eq!(
        root_mac,
        hmac(&[
            b"multipoint-root-v1",
            &leaf_nonce,
            &root_nonce,
            &join_bytes,
            &admit_bytes
        ]),
        "the root proves the key over both nonces, the Join and the Admit"
    );
    assert_eq!(joined(&root).name(), "by-hand");

    // The same bytes played again on a new connection: the root's nonce is another.
    let mut replay = TcpStream::connect(at).unwrap();
    let mut pending = Vec::new();
    send(&mut replay, &join);
    let Some(Frame::Challenge { nonce: fresh }) = read_frame(&mut replay, &mut pending) else {
        panic!("expected a Challenge");
    };
    assert_ne!(fresh, root_nonce);
    send(&mut replay, &proof);
    assert_eq!(
        read_frame(&mut replay, &mut pending),
        Some(Frame::Refuse {
            reason: AUTH_FAILED.into()
        })
    );
    assert_eq!(
        read_frame(&mut replay, &mut pending),
        None,
        "then it closes"
    );
    refused_for_authentication(&root);
    assert_eq!(root.leaves().len(), 1);
}

#[test]
fn a_root_at_its_connection_limit_sheds_the_oldest_idle_connection_and_times_out_the_next() {
    let mut config = root_config(Duration::from_secs(3));
    config.limits.max_connections = 2;
    config.limits.handshake_timeout = Duration::from_millis(400);
    let root = Root::new(Transport::RootedUnicast, Roles::ROOT, config).unwrap();
    let at = root.listen(ANY).unwrap();
    let mut oldest = TcpStream::connect(at).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut younger = TcpStream::connect(at).unwrap();
    std::thread::sleep(Duration::from_millis(50));

    // A real leaf at the limit: the oldest idle connection makes room, and is told why.
    let leaf = leaf("real", 40230);
    let asked = Instant::now();
    let session = leaf.join_leaf(at, Direction::ReceiverOnly).unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(300),
        "{:?}",
        asked.elapsed()
    );
    let (bytes, _) = read_to_close(&mut oldest);
    match decode(&bytes) {
        Ok(Some((Frame::Refuse { reason }, _))) => {
            assert!(reason.contains("needed room"), "{reason}")
        }
        other => panic!("expected a Refuse, got {other:?}"),
    }
    // The other says nothing either: closed at the handshake timeout, not the session's.
    let (bytes, read) = read_to_close(&mut younger);
    assert!(
        bytes.is_empty() && matches!(read, Ok(0)),
        "{bytes:?} {read:?}"
    );
    assert!(asked.elapsed() < Duration::from_millis(1500));

    let stats = root.stats();
    assert_eq!(
        (stats.accepted, stats.shed, stats.handshake_timeouts),
        (3, 1, 1),
        "{stats:?}"
    );
    assert!(session.is_active());
}

#[test]
fn limits_that_let_nothing_through_are_refused_at_creation() {
    let mut config = root_config(Duration::from_secs(3));
    config.limits.max_connections_per_peer = 0;
    assert!(matches!(
        Root::new(Transport::RootedUnicast, Roles::ROOT, config),
        Err(Error::BadSetting { .. })
    ));
    let mut config = root_config(Duration::from_secs(3));
    config.limits.handshake_timeout = Duration::ZERO;
    assert!(matches!(
        Root::new(Transport::RootedUnicast, Roles::ROOT, config),
        Err(Error::BadSetting { .. })
    ));
}
