//! `multipoint`: the command-line tool of the multipoint data plane. See
//! `multipoint --help`; the work is done by the `multipoint_bench` library.

use std::error::Error as _;
use std::process::ExitCode;

use clap::Parser as _;
use multipoint_bench::cli::{Cli, Command};
use multipoint_bench::report::Report;
use multipoint_bench::{
    demo, fanout, leaf, pingpong, progress, publish, root, subscribe, throughput, Error,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
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

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Demo(args) => {
            let report = demo::run(&args, progress::wanted(args.stop.secs))?;
            print_report(&report, args.report.json);
        }
        Command::Throughput(args) => {
            let report = throughput::run(&args, progress::wanted(args.stop.secs))?;
            print_report(&report, args.report.json);
        }
        Command::Pub(args) => {
            let report = publish::run(&args, progress::wanted(args.stop.secs))?;
            print_report(&report, args.json);
        }
        Command::Sub(args) => {
            let report = subscribe::run(&args, progress::wanted(args.stop.secs))?;
            print_report(&report, args.report.json);
        }
        Command::Fanout(args) => {
            let report = fanout::run(&args, progress::wanted(args.stop.secs))?;
            print_report(&report, args.json);
        }
        Command::Root(args) => {
            let report = root::run(&args, progress::wanted(args.stop.secs))?;
            print_report(&report, args.json);
        }
        Command::Leaf(args) => {
            let report = leaf::run(&args, progress::wanted(args.stop.secs))?;
            print_report(&report, args.report.json);
        }
        Command::PingPong(args) => {
            let report = pingpong::run(&args, progress::wanted(args.stop.secs))?;
            print_report(&report, args.report.json);
        }
    }
    Ok(())
}

/// The text report, then (with `--json`) the JSON object as the last line.
fn print_report(report: &impl Report, json: bool) {
    print!("{report}");
    if json {
        println!("{}", report.to_json());
    }
}
