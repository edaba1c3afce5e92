//! `multipoint`: the command-line tool of the multipoint data plane. See
//! `multipoint --help`; the work is done by the `multipoint_bench` library.

use std::error::Error as _;
use std::process::ExitCode;

use clap::Parser as _;
use multipoint_bench::cli::{Cli, Command};
use multipoint_bench::{demo, Error};
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
            let report = demo::run(&args, demo::wants_progress(&args))?;
            print!("{report}");
            if args.json {
                println!("{}", report.to_json());
            }
            Ok(())
        }
    }
}
