//! `multipoint-tune`: audits this host for the multipoint data plane (`check`) and prints
//! or applies a low-latency profile (`profile`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use multipoint_tuning::{
    apply, audit, profile, to_json, worst, Host, Needs, Summary, Verdict, ITEM_NAMES,
};

/// Host audit and low-latency profile for the multipoint data plane.
#[derive(Debug, Parser)]
#[command(name = "multipoint-tune", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  multipoint-tune check                     every item: value, wanted, verdict, why, fix
  multipoint-tune check --json | jq '.[] | select(.verdict != \"ok\")'
  multipoint-tune check --shards 4 --zero-copy   judge limits for 4 shards, zero-copy sends
  multipoint-tune profile                   print the sysctl file and commands (changes nothing)
  sudo multipoint-tune profile --apply      set the sysctls now, printing name: old -> new

Exit status of check: 0 when nothing is critical, 1 when something is, 2 on usage errors.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Reports each setting: its value, what low-latency multicast wants, why, and the fix.
    ///
    /// Exits with 1 when an item is critical (the data plane would not start or receive).
    Check {
        /// Print one JSON array of items (name, value, wanted, verdict, why, fix) instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Prints a sysctl file for /etc/sysctl.d/ and the commands of a low-latency profile.
    ///
    /// Changes nothing unless --apply is given.
    Profile {
        /// Write the profile's sysctls now (through /proc/sys; root) and print what changed.
        #[arg(long)]
        apply: bool,
        /// Print only the sysctl file (for redirecting into /etc/sysctl.d/).
        #[arg(long, conflicts_with = "apply")]
        sysctl_only: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// Which host and which needs.
#[derive(Debug, Args)]
struct Target {
    /// Read /proc and /sys under DIR instead of / (a fixture tree, or a copy).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Shard threads the data plane will run (each: an io_uring and a buffer ring).
    #[arg(long, value_name = "N", default_value_t = 1)]
    shards: u32,
    /// Receive buffers per shard (the provided buffer ring's entries).
    #[arg(long, value_name = "N", default_value_t = 64)]
    buffers: u16,
    /// Publishers the data plane will run (each: an io_uring).
    #[arg(long, value_name = "N", default_value_t = 1)]
    publishers: u32,
    /// Publishers send zero-copy from a registered buffer (256 × 1472 bytes each).
    #[arg(long)]
    zero_copy: bool,
    /// Most IPv4 groups one socket joins.
    #[arg(long, value_name = "N", default_value_t = 1)]
    memberships: u32,
    /// Most sources one socket filters (source-specific joins).
    #[arg(long, value_name = "N", default_value_t = 0)]
    sources: u32,
}

impl Target {
    fn host(&self) -> Host {
        Host::at(&self.root)
    }

    fn needs(&self) -> Needs {
        let defaults = Needs::default();
        let buffers = self.buffers.max(1).next_power_of_two();
        Needs {
            shards: self.shards,
            shard_buffers: buffers,
            shard_ring: multipoint_tuning::RingSize {
                sq: defaults.shard_ring.sq,
                cq: (u32::from(buffers) * 4).max(1024),
            },
            publishers: self.publishers,
            publisher_registered_bytes: if self.zero_copy { 256 * 1472 } else { 0 },
            probes: u32::from(self.shards > 0) + self.publishers,
            memberships_per_socket: self.memberships,
            sources_per_socket: self.sources,
            ..defaults
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { json, target } => check(json, &target),
        Command::Profile {
            apply,
            sysctl_only,
            target,
        } => run_profile(apply, sysctl_only, &target),
    }
}

fn check(json: bool, target: &Target) -> ExitCode {
    let host = target.host();
    let needs = target.needs();
    let items = audit(&host, &needs);
    if json {
        println!("{}", to_json(&items));
    } else {
        println!(
            "multipoint-tune check: root {}, {} shard(s) × {} buffers, {} publisher(s){}, {} \
             group(s) per socket",
            host.root().display(),
            needs.shards,
            needs.shard_buffers,
            needs.publishers,
            if needs.publisher_registered_bytes > 0 {
                " with zero-copy"
            } else {
                ""
            },
            needs.memberships_per_socket,
        );
        for item in &items {
            println!();
            print!("{item}");
        }
        let summary = Summary::of(&items);
        println!();
        println!(
            "{} items: {} ok, {} warn, {} critical",
            ITEM_NAMES.len(),
            summary.ok,
            summary.warn,
            summary.critical
        );
    }
    if worst(&items) == Verdict::Critical {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_profile(do_apply: bool, sysctl_only: bool, target: &Target) -> ExitCode {
    let host = target.host();
    let profile = profile(&host, &target.needs());
    if sysctl_only {
        print!("{}", profile.sysctl_file());
        return ExitCode::SUCCESS;
    }
    if !do_apply {
        print!("{}", profile.render());
        return ExitCode::SUCCESS;
    }
    let applied = match apply(&host, &profile) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("multipoint-tune: {e}");
            return ExitCode::from(2);
        }
    };
    for c in &applied.changed {
        println!("{}: {} -> {}", c.name, c.old, c.new);
    }
    for name in &applied.unchanged {
        println!("{name}: unchanged");
    }
    for name in &applied.missing {
        println!("{name}: not on this host, skipped");
    }
    for e in &applied.failed {
        eprintln!("multipoint-tune: {e}");
    }
    println!(
        "{} changed, {} unchanged, {} skipped, {} failed. Not persistent: see `multipoint-tune \
         profile` for the sysctl.d file and the other steps.",
        applied.changed.len(),
        applied.unchanged.len(),
        applied.missing.len(),
        applied.failed.len()
    );
    if applied.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
