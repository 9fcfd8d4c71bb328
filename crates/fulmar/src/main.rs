//! The `fulmar` command: an MQTT 3.1.1 and 5.0 broker (`fulmar broker`).
//!
//! Each subcommand lives in its own module; `main` parses the command line,
//! sets up logging and runs the chosen subcommand.

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

mod broker;

/// MQTT 3.1.1 and 5.0 tools.
#[derive(Debug, Parser)]
#[command(name = "fulmar", version, about)]
struct Cli {
    /// More log output: -v debug, -vv trace (RUST_LOG takes precedence).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run an MQTT broker (listens on 127.0.0.1:1883 by default).
    Broker(broker::BrokerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fulmar: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Broker(args) => broker::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fulmar: {message}");
            ExitCode::FAILURE
        }
    }
}
