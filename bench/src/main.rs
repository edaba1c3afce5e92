//! `multipoint`: the command-line tool of the multipoint data plane. See
//! `multipoint --help`; the work is done by the `multipoint_bench` library.

use std::error::Error as _;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use multipoint_bench::cli::{Cli, Command};
use multipoint_bench::report::{Outcome, Report};
use multipoint_bench::{
    demo, fanout, host, interrupt, ipc, leaf, pingpong, progress, publish, root, stat, subscribe,
    throughput, Error,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(error) = interrupt::install() {
        // The run still works; only Ctrl-C would then end it without a report.
        tracing::warn!(%error, "cannot handle SIGINT and SIGTERM");
    }
    let result = run(&cli);
    // Whatever a run left registered (and what --hold-stat kept) goes with the process.
    multipoint_dataplane::stat::remove_file();
    match result {
        // A run that a signal ended early exits as the signal would have (130, 143), after
        // its report.
        Ok(()) => match interrupt::signal() {
            Some(signal) => ExitCode::from(signal.exit_status()),
            None => ExitCode::SUCCESS,
        },
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// Audits the host for what the tool will start, runs it and prints its report.
fn run(cli: &Cli) -> Result<(), Error> {
    let command = &cli.command;
    if let Command::Stat(a) = command {
        return stat::run(a);
    }
    let held = cli.hold_stat.then(multipoint_dataplane::stat::hold);
    host::check(host::needs_of(command)?, cli.verbose);
    let progress = progress::wanted(command.stop().secs);
    match command {
        Command::Demo(a) if a.lossless => {
            return Err(Error::Usage(
                "--lossless searches one subscriber's lossless rate: use it with \
                 `multipoint throughput`",
            ))
        }
        Command::Demo(a) => print_report(&demo::run(a, progress)?, a.report.json),
        Command::Throughput(a) if a.lossless => {
            print_report(&throughput::lossless(a, progress)?, a.report.json)
        }
        Command::Throughput(a) => print_report(&throughput::run(a, progress)?, a.report.json),
        Command::Pub(a) => match &a.ipc {
            Some(name) => print_report(&ipc::run_pub(a, name, progress)?, a.json),
            None => print_report(&publish::run(a, progress)?, a.json),
        },
        Command::Sub(a) => match &a.ipc {
            Some(name) => print_report(&ipc::run_sub(a, name, progress)?, a.report.json),
            None => print_report(&subscribe::run(a, progress)?, a.report.json),
        },
        Command::Fanout(a) => print_report(&fanout::run(a, progress)?, a.json),
        Command::Root(a) => print_report(&root::run(a, progress)?, a.json),
        Command::Leaf(a) => print_report(&leaf::run(a, progress)?, a.report.json),
        Command::PingPong(a) => print_report(&pingpong::run(a, progress)?, a.report.json),
        Command::Stat(_) => {}
    }
    if let Some(held) = held {
        wait_for_stdin_or_signal();
        drop(held);
    }
    Ok(())
}

/// With `--hold-stat`: waits until stdin closes (or says something) or a signal asks the
/// run to end, while `multipoint stat` reads the final counters.
fn wait_for_stdin_or_signal() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // The thread may stay blocked in read until the process exits: it holds nothing.
    let _ = std::thread::Builder::new()
        .name("hold-stat".into())
        .spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let _ = tx.send(());
        });
    while !interrupt::requested() {
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// The text report, then (with `--json`) the JSON object as the last line; both say
/// whether a signal ended the run early.
fn print_report(report: &impl Report, json: bool) {
    let outcome = Outcome {
        report,
        interrupted: interrupt::signal(),
    };
    print!("{outcome}");
    if json {
        println!("{}", outcome.to_json());
    }
}
