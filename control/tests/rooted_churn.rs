//! 10,000 joins and leaves in a row leave neither file descriptors nor heap memory
//! growing, on the root or the leaf (both in this process). Heap is measured with a
//! counting global allocator (live bytes), descriptors from /proc/self/fd.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use multipoint_control::rooted::{DataPlan, Leaf, LeafConfig, Root, RootConfig, RootEvent};
use multipoint_control::{Direction, Roles, Transport};
use multipoint_test_support::{alloc, open_fds};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

#[test]
fn ten_thousand_joins_and_leaves_leak_nothing() {
    let mut config = RootConfig::new(*b"CHURN00001");
    config.plan = Some(DataPlan::Unicast {
        root: "127.0.0.1:40300".parse().unwrap(),
        uplink: None,
    });
    let root = Root::new(Transport::RootedUnicast, Roles::ROOT, config).unwrap();
    let at = root
        .listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
        .unwrap();
    let mut leaf_config = LeafConfig::new("churn");
    leaf_config.data = Some("127.0.0.1:40301".parse().unwrap());
    let leaf = Leaf::new(Transport::RootedUnicast, Roles::LEAF, leaf_config).unwrap();

    let round = |n: usize| {
        for _ in 0..n {
            let session = leaf.join_leaf(at, Direction::ReceiverOnly).unwrap();
            session.leave().unwrap();
            // The root's side: joined, then left.
            for _ in 0..2 {
                let event = root.events().recv_timeout(Duration::from_secs(5)).unwrap();
                assert!(
                    matches!(event, RootEvent::Joined(_) | RootEvent::Left { .. }),
                    "{event:?}"
                );
            }
        }
    };
    // Warm up: tables and buffers reach their working size.
    round(500);
    // Let the root finish closing the last connection before measuring.
    wait_until(|| root.leaves().is_empty());
    let fds_before = open_fds();
    let heap_before = alloc::live_bytes();

    round(10_000);

    wait_until(|| root.leaves().is_empty());
    std::thread::sleep(Duration::from_millis(100));
    let fds_after = open_fds();
    let heap_after = alloc::live_bytes();
    println!(
        "10,000 joins and leaves: fds {fds_before} -> {fds_after}, live heap {heap_before} -> \
         {heap_after} bytes"
    );
    assert_eq!(fds_after, fds_before, "file descriptors grew");
    // A few hash-table or buffer resizes may still happen; a leak would be at least a
    // few hundred bytes per join (megabytes here).
    assert!(
        heap_after - heap_before < 64 * 1024,
        "live heap grew by {} bytes over 10,000 joins",
        heap_after - heap_before
    );
    assert_eq!(root.dropped_events(), 0);
}

fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("condition not reached within 5 s");
}
