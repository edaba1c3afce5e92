//! What the tests of the built `multipoint` binary share: running it to the end or in the
//! background, reading the JSON object it prints last, and taking turns on loopback.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::UdpSocket;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a process started in the background may run before the test gives up on it.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// The tests of one file take turns: one test's traffic beside another's on a two-core
/// machine could make the kernel drop packets, and a test that wants every message would
/// then fail for the wrong reason.
static TURN: Mutex<()> = Mutex::new(());

/// Waits for this test's turn (see [`TURN`]); the turn lasts while the guard lives.
pub(crate) fn turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The command line `line`, split into its words.
pub(crate) fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `n` groups on ports no one else on this host is using right now (those of throwaway
/// UDP sockets, all open at once so that they differ), so that tests running elsewhere do
/// not share them.
pub(crate) fn groups<const N: usize>() -> [String; N] {
    let sockets: Vec<UdpSocket> = (0..N)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| format!("239.255.0.1:{}", sockets[i].local_addr().unwrap().port()))
}

/// Starts `multipoint sub ARGS` in the background and reads its first line (it has
/// joined).
pub(crate) fn spawn_sub(args: &str) -> Proc {
    spawn_sub_saying(args).0
}

/// [`spawn_sub`], and the first line, that said it joined.
pub(crate) fn spawn_sub_saying(args: &str) -> (Proc, String) {
    let mut sub = Proc::spawn(&words(&format!("sub {args}")));
    let first = sub.line();
    assert!(first.contains("listening on"), "sub said: {first:?}");
    (sub, first)
}

/// On a group of its own ([`groups`]): starts `multipoint sub SUB_ARGS --group GROUP`
/// (see [`spawn_sub`]) and runs `multipoint pub PUB_ARGS --group GROUP` to the end.
/// Returns pub's output and the sub, to be finished.
pub(crate) fn pub_to_sub(sub_args: &str, pub_args: &str) -> (Output, Proc) {
    let [group] = groups();
    let sub = spawn_sub(&format!("{sub_args} --group {group}"));
    (run(&words(&format!("pub {pub_args} --group {group}"))), sub)
}

/// The built binary, to be given arguments.
pub(crate) fn multipoint() -> Command {
    Command::new(env!("CARGO_BIN_EXE_multipoint"))
}

/// Runs `multipoint ARGS` to the end.
pub(crate) fn run(args: &[&str]) -> Output {
    multipoint()
        .args(args)
        .output()
        .expect("the multipoint binary runs")
}

/// Runs `multipoint ARGS --group GROUP` to the end, on a group of its own ([`groups`]).
pub(crate) fn run_on_own_group(args: &str) -> Output {
    let [group] = groups();
    run(&words(&format!("{args} --group {group}")))
}

/// Checks that the run succeeded and that the last line of its stdout is a JSON object,
/// and returns it.
pub(crate) fn last_json(output: &Output) -> Value {
    last_json_with(output, 0)
}

/// Checks that the run exited with `status` and that the last line of its stdout is a
/// JSON object, and returns it.
pub(crate) fn last_json_with(output: &Output, status: i32) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(status),
        "multipoint exited {} (not {status}):\n{stdout}\n{stderr}",
        output.status
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {last}"))
}

/// The number `report[key]`.
pub(crate) fn u64_of(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number: {report}"))
}

/// A `multipoint` process in the background, killed (and reaped) when dropped unless it
/// finished.
pub(crate) struct Proc {
    what: String,
    child: Option<Child>,
    stdout: BufReader<ChildStdout>,
    /// What was read from stdout so far.
    seen: String,
}

impl Proc {
    /// Starts `multipoint ARGS` with stdout and stderr piped.
    pub(crate) fn spawn(args: &[&str]) -> Proc {
        let mut command = multipoint();
        command.args(args);
        Proc::start(command, format!("multipoint {}", args.join(" ")))
    }

    /// Starts `multipoint ARGS` with stdout and stderr piped, allowed at most `files`
    /// open file descriptors (the shell's `ulimit -n`, which then execs the binary, so
    /// that the limit is the child's alone and its pid is the binary's).
    pub(crate) fn spawn_with_file_limit(args: &[&str], files: u32) -> Proc {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_multipoint"))
            .args(args);
        Proc::start(
            command,
            format!("multipoint {} (ulimit -n {files})", args.join(" ")),
        )
    }

    /// Starts `command` (a [`multipoint`] with its arguments, environment and stdin set
    /// up) with stdout and stderr piped.
    pub(crate) fn spawn_command(command: Command, what: &str) -> Proc {
        Proc::start(command, what.to_owned())
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.as_ref().expect("still running").id()
    }

    /// Closes the process's stdin (if it was piped).
    pub(crate) fn close_stdin(&mut self) {
        drop(self.child.as_mut().and_then(|c| c.stdin.take()));
    }

    fn start(mut command: Command, what: String) -> Proc {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the multipoint binary runs");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Proc {
            what,
            child: Some(child),
            stdout,
            seen: String::new(),
        }
    }

    /// Sends `signal` to the process.
    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) {
        let child = self.child.as_ref().expect("still running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Reads lines of stdout until one contains `what`, and returns it.
    pub(crate) fn line_with(&mut self, what: &str) -> String {
        loop {
            let line = self.line();
            assert!(
                !line.is_empty(),
                "{} ended before saying {what:?}",
                self.what
            );
            if line.contains(what) {
                return line;
            }
        }
    }

    /// The next line of stdout (blocking).
    pub(crate) fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        self.seen.push_str(&line);
        line
    }

    /// Waits (at most [`DEADLINE`] from now) for the process to exit; returns its status,
    /// all of its stdout and its stderr. A process still running then is killed and the
    /// test fails.
    pub(crate) fn finish(mut self) -> Output {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                remove_stat_file(child.id());
                panic!("{} did not end within {DEADLINE:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = std::mem::take(&mut self.seen);
        self.stdout.read_to_string(&mut stdout).unwrap();
        let mut stderr = Vec::new();
        if let Some(mut err) = child.stderr.take() {
            err.read_to_end(&mut stderr).unwrap();
        }
        Output {
            status,
            stdout: stdout.into_bytes(),
            stderr,
        }
    }
}

impl Proc {
    /// Waits for a successful exit (see [`Proc::finish`]) and returns stdout and the JSON
    /// object on its last line.
    pub(crate) fn json(self) -> (String, Value) {
        let output = self.finish();
        let report = last_json(&output);
        (String::from_utf8_lossy(&output.stdout).into_owned(), report)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            remove_stat_file(child.id());
        }
    }
}

/// Removes the counters file a process killed with SIGKILL left behind (in the default
/// directory; tests that set `MULTIPOINT_STAT_DIR` remove theirs with it).
pub(crate) fn remove_stat_file(pid: u32) {
    let dir = multipoint_dataplane::stat::dir();
    let _ = std::fs::remove_file(multipoint_dataplane::stat::file_path(&dir, pid));
}
