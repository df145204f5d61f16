//! The urpnet demo: a regional federation on loopback. A registry for
//! Abruzzo (its own federation CA, SQLite) enrols three offices — the Comune di
//! Celano, the Regione Abruzzo and the Comune di Avezzano — each a real node
//! with a certificate issued from its own CSR, talking to the registry over
//! mutual TLS. The demo shows competence routing and overflow decisions, then
//! a day of work at Celano's desk: requests from every channel, their
//! lifecycle, duplicates, retries, bad input and the signed history.
//!
//! `cargo run -p urpnet-examples --bin demo` — add `-- --keep` to leave the
//! federation running and try the `urpnet-node` and `urpnet-registry` CLIs.
//!
//! Each section of the demo is a chapter, a module of its own, run in the
//! order of [`main`]; they share the [`Demo`] and the [`steps`].

mod appointments;
mod archive;
mod bad_input;
mod charter;
mod duplicates;
mod faq;
mod handoff;
mod history;
mod intake;
mod join;
mod lifecycle;
mod open311;
mod overflow;
mod retries;
mod routing;
mod standing;
mod steps;

use std::time::Duration;

use clap::Parser;
use urpnet_examples::federation;
use urpnet_node::cli;
use urpnet_proto::v1::Ticket;
use urpnet_proto::v1::registry_admin_client::RegistryAdminClient;

use crate::steps::heading;

/// Runs a demo URP node and shows a day of its work.
#[derive(Parser)]
pub(crate) struct Args {
    /// How many sample requests to file.
    #[arg(long, default_value_t = 60)]
    tickets: usize,
    /// Keep the node running after the demo (Ctrl-C to stop).
    #[arg(long)]
    keep: bool,
}

/// What the chapters share: the running federation, Celano's desk, and what
/// an earlier chapter leaves for later ones.
pub(crate) struct Demo {
    /// The command line.
    args: Args,
    /// Everything the federation stores; removed at the end.
    dir: tempfile::TempDir,
    /// The regional registry.
    registry: federation::RunningRegistry,
    /// The coordinator's client of the registry.
    admin: RegistryAdminClient<tonic::transport::Channel>,
    /// Celano, the Region, Avezzano.
    nodes: Vec<join::RunningNode>,
    /// Celano's desk, as its operators use it.
    desk: cli::Desk,
    /// The sample requests' randomness (seeded: the same demo each run).
    rng: rand::rngs::StdRng,
    /// The tickets filed at Celano's desk in the intake chapter.
    tickets: Vec<Ticket>,
    /// The local SMTP server citizens' e-mails go to, when available.
    smtp: Option<urpnet_examples::smtp::SmtpSink>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    urpnet_proto::telemetry::init_logs(Default::default(), "warn");
    let mut demo = join::run(args).await?;
    routing::run(&mut demo).await?;
    intake::run(&mut demo).await?;
    overflow::run(&mut demo).await?;
    handoff::run(&mut demo).await?;
    faq::run(&mut demo).await?;
    charter::run(&mut demo).await?;
    appointments::run(&mut demo).await?;
    let done = lifecycle::run(&mut demo).await?;
    duplicates::run(&mut demo).await?;
    retries::run(&mut demo).await?;
    bad_input::run(&mut demo, &done).await?;
    history::run(&mut demo, &done).await?;
    open311::run(&mut demo).await?;
    standing::run(&mut demo).await?;
    archive::run(&mut demo).await?;
    let Demo {
        args,
        dir,
        registry,
        nodes,
        smtp,
        ..
    } = demo;
    if let Some(smtp) = smtp {
        smtp.stop().await;
    }
    let config = nodes[0].config.clone();
    if args.keep {
        heading("The federation keeps running; try the CLIs");
        let registry_config_path = dir.path().join("urpnet-registry.toml");
        std::fs::write(&registry_config_path, toml::to_string(&registry.config)?)?;
        let config_path = dir.path().join("urpnet.toml");
        std::fs::write(&config_path, join::toml_config(&config))?;
        let r = format!(
            "urpnet-registry --config {}",
            registry_config_path.display()
        );
        println!("{r} members list");
        println!("{r} members show c_c426");
        println!("{r} route rifiuti Avezzano");
        println!("{r} overflow informazioni --from c_c426");
        println!("{r} taxonomy show");
        println!("{r} archive stats");
        println!("{r} archive trends --all");
        println!("{r} archive query --by category,outcome --csv");
        println!("{r} archive plot --category rifiuti --territory 066032 --out chart.svg");
        if let Some(public) = nodes[0].public_addr {
            println!("curl http://{public}/open311/v2/services.xml");
            println!("curl 'http://{public}/open311/v2/requests.json?status=open'");
        }
        let n = format!("urpnet-node --config {}", config_path.display());
        println!("{n} ticket list");
        println!("{n} ticket history {}", done.reference);
        println!("{n} faq search cambiare medico");
        println!("{n} faq status");
        println!("{n} charter list");
        println!("{n} charter search tessera sanitaria");
        println!("{n} charter explain r_abruzz tessera-sanitaria");
        println!("{n} charter show --service carta-identita");
        println!("{n} charter sign anagrafe -o targa.svg");
        println!("{n} charter export --format cpsv");
        println!("{n} appointments plan");
        println!("{n} appointments slots sue autorizzazione-paesaggistica");
        println!("{n} appointments agenda --office sue");
        println!("{n} appointments slots urp-avezzano tessera-sanitaria --body r_abruzz");
        println!("{n} archive status");
        println!("{n} notify status");
        println!("\nIn the browser (sign in with the token shown):");
        if let Some(dashboard) = registry.dashboard_addr {
            let token = std::fs::read_to_string(urpnet_registry::dashboard::token_path(
                &registry.config.registry.data_dir,
            ))
            .unwrap_or_default();
            println!(
                "  registry coordinators' dashboard: http://{dashboard}/login   token: {}",
                token.trim()
            );
        }
        for node in &nodes {
            if let Some(console) = node.console_addr {
                println!(
                    "  {:<8} operators' console: http://{console}/login   token: {}",
                    node.id, node.token
                );
            }
            if let Some(public) = node.public_addr {
                println!(
                    "  {:<8} citizens' pages:    http://{public}/prenota   http://{public}/segnala   http://{public}/faq",
                    node.id
                );
            }
        }
        println!(
            "(cargo run -p urpnet-registry -- ... and cargo run -p urpnet-node -- ... work too.) Ctrl-C to stop."
        );
        urpnet_proto::telemetry::shutdown_signal().await;
    }
    for node in nodes {
        tokio::time::timeout(Duration::from_secs(30), node.node.stop()).await??;
    }
    registry.stop().await?;
    println!(
        "\nfederation stopped; demo data removed with {}",
        dir.path().display()
    );
    Ok(())
}
