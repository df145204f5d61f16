//! `urpnet-registry`: the coordinators' daemon and CLI. Thin: parses the
//! command line and hands over to [`urpnet_registry::cli::run`].

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = urpnet_registry::cli::Cli::parse();
    match urpnet_registry::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
