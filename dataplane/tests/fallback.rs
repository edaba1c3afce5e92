//! Where io_uring cannot be set up, `BackendChoice::Auto` falls back to recvmmsg/sendmmsg,
//! says why, and the data still flows. io_uring is blocked for real: a seccomp filter on
//! the test's thread makes `io_uring_setup` fail with EPERM, as a container's seccomp
//! profile would. (Threads spawned afterwards, the shards among them, inherit it.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{group, loopback_subscription, new_publisher, offer, wait_for};
use multipoint_dataplane::{BackendChoice, BackendKind, Error, ShardConfig, Shards};

/// Makes `io_uring_setup` fail with EPERM on the calling thread and threads it spawns.
fn block_io_uring_on_this_thread() {
    const IO_URING_SETUP: u32 = 425; // the same number on every architecture
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if A == io_uring_setup: fall through to ERRNO, else skip to ALLOW
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: IO_URING_SETUP,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl calls; `prog` and `filter` outlive the call, which copies them.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const prog
            ),
            0,
            "installing the seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn without_io_uring_auto_falls_back_to_mmsg_and_says_why() {
    // Run on a thread of our own so the filter dies with it.
    std::thread::spawn(|| {
        block_io_uring_on_this_thread();

        let err = Shards::start(ShardConfig {
            backend: BackendChoice::Uring,
            ..ShardConfig::default()
        })
        .unwrap_err();
        assert!(matches!(err, Error::UringUnavailable { .. }), "{err}");
        assert!(
            err.to_string().contains("io_uring_disabled"),
            "says what to check: {err}"
        );

        let mut shards = Shards::start(ShardConfig::default()).unwrap();
        assert_eq!(shards.backend().kind, BackendKind::Mmsg);
        assert!(
            shards.backend().reason.contains("Operation not permitted"),
            "the reason names the failure: {}",
            shards.backend().reason
        );

        let group = group(77, 1);
        let sub = shards
            .subscribe(loopback_subscription(group), |_: u64, _: &[u8]| {})
            .unwrap();
        // Auto (the default), like the shards: it must fall back as well.
        let mut publisher = new_publisher(BackendChoice::Auto, "FALLBACK", group);
        assert_eq!(publisher.backend().kind, BackendKind::Mmsg);
        for i in 0..1000u32 {
            offer(&mut publisher, &i.to_be_bytes());
        }
        publisher.flush();
        wait_for(Duration::from_secs(5), || sub.stats().messages >= 1000);
        assert_eq!(sub.stats().messages, 1000);
        assert_eq!(sub.stats().gaps, 0);
    })
    .join()
    .unwrap();
}
