//! 10,000 rooted-unicast joins and leaves in a row, with the data plane attached each time
//! (fan-out leaf, subscription on the shards, control session), leave neither file
//! descriptors nor heap memory growing. Heap is measured with a counting global allocator
//! (live bytes, every thread), descriptors from /proc/self/fd.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use multipoint_control::rooted::RootEvent;
use multipoint_control::{Direction, Transport};
use multipoint_dataplane::rooted_transport::{
    DataLeaf, DataLeafConfig, UnicastRoot, UnicastRootConfig,
};
use multipoint_dataplane::wire::Session;
use multipoint_dataplane::{IdleStrategy, ShardConfig, Shards};
use multipoint_test_support::{alloc, open_fds};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

#[test]
fn ten_thousand_data_joins_and_leaves_leak_nothing() {
    let mut shards = Shards::start(ShardConfig {
        shards: 1,
        idle: IdleStrategy::Block,
        pin: false,
        ..ShardConfig::default()
    })
    .unwrap();
    let mut config = UnicastRootConfig::new(Session::new("CHURN").unwrap());
    config.fanout.shards = 1;
    config.fanout.pin = false;
    config.fanout.idle = IdleStrategy::Block;
    // One address joining thousands of times a second is what the join rate limit is
    // for; this test is about leaks, so its root takes any rate.
    config.limits.joins_per_second_per_peer = 1_000_000_000;
    let mut root = UnicastRoot::start(config).unwrap();
    let at = root.control_addr().unwrap();
    let leaf = DataLeaf::new(DataLeafConfig::new(Transport::RootedUnicast, "churn")).unwrap();

    let mut round = |n: usize, root: &mut UnicastRoot| {
        for _ in 0..n {
            let joined = leaf
                .join(
                    &mut shards,
                    at,
                    Direction::ReceiverOnly,
                    |_: u64, _: &[u8]| {},
                )
                .unwrap();
            // Data flows while leaves come and go.
            root.offer(b"churn").unwrap();
            root.flush();
            joined.leave().unwrap();
            for _ in 0..2 {
                let event = root
                    .control()
                    .events()
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap();
                assert!(
                    matches!(event, RootEvent::Joined(_) | RootEvent::Left { .. }),
                    "{event:?}"
                );
            }
        }
    };
    round(500, &mut root);
    std::thread::sleep(Duration::from_millis(100));
    root.poll();
    let fds_before = open_fds();
    let heap_before = alloc::live_bytes();

    round(10_000, &mut root);

    std::thread::sleep(Duration::from_millis(100));
    root.poll();
    let fds_after = open_fds();
    let heap_after = alloc::live_bytes();
    println!(
        "10,000 data joins and leaves: fds {fds_before} -> {fds_after}, live heap \
         {heap_before} -> {heap_after} bytes"
    );
    assert!(root.control().leaves().is_empty());
    assert_eq!(root.stats().leaves, 0);
    assert_eq!(fds_after, fds_before, "file descriptors grew");
    assert!(
        heap_after - heap_before < 64 * 1024,
        "live heap grew by {} bytes over 10,000 joins",
        heap_after - heap_before
    );
    drop(leaf);
    root.close();
    shards.shutdown();
}
