//! What the tests of every multipoint crate share, so that each is written once: a
//! counting global allocator ([`alloc`]), the number of open file descriptors
//! ([`open_fds`]), a free UDP port ([`free_port`]), printing why a test skipped
//! ([`print_skip`]), network namespaces of a test's own ([`netns`]) and the fuzz
//! targets' input reader ([`input`]).
//!
//! This crate depends on none of the multipoint crates, so any of them can take it as a
//! dev-dependency, and the fuzz crates (outside the workspace) by path.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod alloc;
pub mod input;
pub mod netns;

use std::net::{Ipv4Addr, UdpSocket};

/// The number of file descriptors this process has open now (entries of `/proc/self/fd`;
/// 0 if it cannot be read).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A UDP port nobody on this host uses right now: bind a throwaway socket to port 0 on
/// loopback and keep the kernel's pick. Parallel tests then never share a port.
///
/// # Panics
///
/// If no socket can be bound on loopback (a test harness should stop then).
#[allow(clippy::expect_used)]
pub fn free_port() -> u16 {
    let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a throwaway socket");
    probe.local_addr().expect("reading its port").port()
}

/// Prints that `test` was skipped and why, past the test harness's output capture, so the
/// reason shows in every run and not only for failing tests.
pub fn print_skip(test: &str, reason: &dyn std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{test}: skipped: {reason}");
}

/// Whether the tests run under CI (`CI` set in the environment), where a missing
/// prerequisite must fail a test rather than skip it.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some()
}
