//! 10,000 joins and leaves in a row leave neither file descriptors nor heap memory
//! growing, on the root or the leaf (both in this process). Heap is measured with a
//! counting global allocator (live bytes), descriptors from /proc/self/fd.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use multipoint_control::rooted::{Root, RootEvent};
use multipoint_control::{Direction, Roles, Transport};
use multipoint_test_support::{alloc, open_fds};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

#[test]
fn ten_thousand_joins_and_leaves_leak_nothing() {
    // One address joining thousands of times a second is what the join rate limit is
    // for; this test is about leaks, so its root takes any rate.
    let mut config = common::root_config(Duration::from_secs(3));
    config.limits.joins_per_second_per_peer = 1_000_000_000;
    let root = Root::new(Transport::RootedUnicast, Roles::ROOT, config).unwrap();
    let at = root.listen(common::ANY).unwrap();
    let leaf = common::leaf("churn", 40301);

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
