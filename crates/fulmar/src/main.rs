//! The `fulmar` command: an MQTT 3.1.1 and 5.0 broker (`fulmar broker`) and
//! the clients `fulmar pub` and `fulmar sub`.
//!
//! Each subcommand lives in its own module; `main` parses the command line
//! and runs the chosen subcommand, which sets up its own logging (see
//! [`logging`]).

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod acl;
mod bench;
mod bridges;
mod broker;
mod ca_path;
mod config;
mod format;
mod logging;
mod malloc;
mod mosquitto_conf;
mod passwd;
mod passwd_tool;
mod prometheus;
mod pubsub;

/// MQTT 3.1.1 and 5.0 tools.
#[derive(Debug, Parser)]
#[command(name = "fulmar", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run an MQTT broker (listens on 127.0.0.1:1883 by default).
    Broker(broker::BrokerArgs),
    /// Load-test an MQTT broker: throughput, latency percentiles, losses.
    #[command(after_help = bench::EXIT_STATUS_HELP)]
    Bench(bench::BenchArgs),
    /// Publish messages (flags as mosquitto_pub).
    Pub(pubsub::PubArgs),
    /// Subscribe and print messages, one per line (flags as mosquitto_sub).
    Sub(pubsub::SubArgs),
    /// Make or edit a password file (flags as mosquitto_passwd).
    Passwd(passwd_tool::PasswdArgs),
}

fn main() -> ExitCode {
    let mut command = Cli::command();
    command.build();
    let parsed = Cli::try_parse_from(pubsub::rewrite_property_flags(
        std::env::args_os().collect(),
        &command,
    ));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // Help and version go to stdout with success; a usage error
            // exits with 1, as mosquitto_pub and mosquitto_sub do (clap's
            // own is 2).
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Command::Passwd(args) = &cli.command {
        // No runtime: it reads the terminal and writes one file.
        return match passwd_tool::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("fulmar: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let threads = match worker_threads(std::env::var_os(WORKER_THREADS_VAR)) {
        Ok(threads) => threads,
        Err(message) => {
            eprintln!("fulmar: {message}");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fulmar: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Broker(args) => broker::run(args).await,
            Command::Bench(args) => return bench::run(args).await,
            Command::Pub(args) => return pubsub::run_pub(args).await,
            Command::Sub(args) => return pubsub::run_sub(args).await,
            Command::Passwd(_) => Ok(()),
        }
        .map_err(pubsub::Failure::from)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Empty with --quiet.
            if !failure.message.is_empty() {
                eprintln!("fulmar: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}

/// The environment variable that sets the runtime's worker threads: tokio's
/// own, read here so that a bad value is an error message, not a panic.
const WORKER_THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// At most this many worker threads.
const MAX_WORKER_THREADS: usize = 1024;

/// The number of worker threads `value` of [`WORKER_THREADS_VAR`] asks for;
/// `None` (unset): one per core.
fn worker_threads(value: Option<std::ffi::OsString>) -> Result<Option<usize>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value.to_str().map(|v| v.trim().parse::<usize>()) {
        Some(Ok(n)) if (1..=MAX_WORKER_THREADS).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "{WORKER_THREADS_VAR} must be a number of threads from 1 to {MAX_WORKER_THREADS}, \
             not {value:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_are_checked() {
        assert_eq!(worker_threads(None), Ok(None));
        assert_eq!(worker_threads(Some("1".into())), Ok(Some(1)));
        assert_eq!(worker_threads(Some(" 8 ".into())), Ok(Some(8)));
        for bad in [
            "0",
            "",
            "abc",
            "-1",
            "1.5",
            "1025",
            "99999999999999999999999",
        ] {
            let error = worker_threads(Some(bad.into())).unwrap_err();
            assert!(error.starts_with("TOKIO_WORKER_THREADS must be"), "{error}");
        }
    }
}
