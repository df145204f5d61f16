//! `urpnet-node`: the node daemon and its operators' CLI. Thin: parses the
//! command line and hands over to [`urpnet_node::cli::run`].

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = urpnet_node::cli::Cli::parse();
    match urpnet_node::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
