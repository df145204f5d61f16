//! `urpnet-registry`: the coordinators' daemon and CLI.

use clap::Parser;

/// The urpnet registry: membership, discovery, routing and the anonymised
/// archive of a regional or national federation of public-relations offices.
///
/// Not built yet: this release ships the node only (see README).
#[derive(Parser)]
#[command(version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("urpnet-registry is not built yet in this release: only urpnet-node is")
}
