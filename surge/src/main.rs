//! `surge`: composes the Surge libraries into one binary. It parses configuration, sets up
//! telemetry, builds the backends the flags select, and serves; all logic lives in the
//! crates (`surge-signup-api`, `surge-sfu`, `surge-cluster`).

mod backends;
mod cli;
mod commands;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    surge_cluster::telemetry::init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("surge: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line, not a panic trace: the chain of causes, outermost first.
            eprintln!("surge: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
