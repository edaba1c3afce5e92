//! Test support for multipoint's cross-crate and multi-host tests.
//!
//! The multi-host tests run on [`netns::Lab`]: hosts are Linux network namespaces joined
//! by veth pairs, a bridge, or a router namespace. Building a lab needs root; without it
//! the tests print why and skip ([`lab_or_skip!`]). Under CI (`CI` set in the
//! environment) a missing prerequisite fails the test instead, because CI runs as root
//! and must run them.

// Test support: failing loudly (panicking with the command's output) is what a test
// harness should do when the lab cannot be built as asked.
#![allow(clippy::panic)]
// The same for an assertion or an expectation that fails.
#![allow(clippy::expect_used)]

pub mod netns;
pub mod stream;

pub use netns::{Host, Lab, Skip};

/// Builds a [`Lab`] named after the test, or prints why it cannot and returns from the
/// calling test (with `$ret`, if given). Under CI (`CI` set) it panics instead of
/// skipping.
#[macro_export]
macro_rules! lab_or_skip {
    ($name:expr) => {
        $crate::lab_or_skip!($name; ())
    };
    ($name:expr; $ret:expr) => {
        match $crate::Lab::new($name) {
            Ok(lab) => lab,
            Err(skip) => {
                if ::std::env::var_os("CI").is_some() {
                    panic!("{}: {skip} (CI runs as root and must run this test)", $name);
                }
                $crate::print_skip($name, &skip);
                return $ret;
            }
        }
    };
}

/// Prints that a test was skipped and why, past the test harness's output capture, so the
/// reason shows in every run and not only for failing tests.
pub fn print_skip(test: &str, reason: &dyn std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "skipped {test}: {reason}");
}
