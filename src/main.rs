//! Wiring only: parse flags, start logging, run the subcommand, map its result to the exit code.
#![forbid(unsafe_code)]

use clap::Parser;
use dts_operator::cli::{Cli, Command};
use dts_operator::telemetry::{self, LogFormat};

fn main() {
    let cli = Cli::parse();
    dts_operator::install_crypto_provider();
    let code = match cli.command {
        Command::Crd => {
            print!("{}", dts_operator::crd::crd_yaml());
            0
        }
        Command::Reset(args) => one_shot(dts_operator::reset::execute(
            args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )),
        Command::Describe(args) => one_shot(dts_operator::describe::execute(
            args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )),
        Command::Run(args) => {
            telemetry::init(args.log_format, "info");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match runtime.block_on(dts_operator::operator::run(*args)) {
                Ok(()) => 0,
                Err(e @ dts_operator::operator::RunError::Config { .. }) => {
                    tracing::error!(error = %e.chain(), "cannot start");
                    eprintln!("dts-operator run: {}", e.chain());
                    2
                }
                Err(e) => {
                    tracing::error!(error = %e.chain(), "stopped with an error");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

/// Runs a one-shot command (`reset`, `describe`) to its exit code.
fn one_shot(command: impl std::future::Future<Output = i32>) -> i32 {
    // Diagnostics only when asked for: progress goes to stderr without a subscriber, and a
    // cold start stays small.
    if std::env::var_os("RUST_LOG").is_some() {
        telemetry::init(LogFormat::Text, "warn");
    }
    // One call at a time: a single-threaded runtime keeps the cold start small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(command)
}
