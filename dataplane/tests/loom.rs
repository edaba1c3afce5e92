//! The IPC ring's index protocol under the loom model checker, in the normal test suite:
//! this test runs `cargo test` on the protocol's loom tests with `--cfg loom`, in a
//! target directory of its own (`target/loom`, so that the flag does not rebuild the
//! normal one). Loom's preemptions are bounded (3) to keep it to seconds once built; the
//! first build takes a few minutes. Skipped, with the reason printed, only when cargo
//! cannot be run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

#[test]
fn the_ipc_index_protocol_holds_under_every_interleaving_loom_explores() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = workspace.join("target").join("loom");
    let run = Command::new(&cargo)
        .current_dir(&workspace)
        .args([
            "test",
            "--release",
            "-p",
            "multipoint-dataplane",
            "--lib",
            "ipc::protocol",
        ])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", &target)
        .env("LOOM_MAX_PREEMPTIONS", "3")
        .output();
    let output = match run {
        Ok(output) => output,
        Err(e) => {
            println!("skipped: cannot run {cargo}: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "loom found a problem (or the loom build failed):\n{stdout}\n{stderr}"
    );
    // The loom tests ran, not zero of them.
    assert!(
        stdout.contains("test result: ok. 2 passed"),
        "expected the two loom tests to run:\n{stdout}"
    );
}
