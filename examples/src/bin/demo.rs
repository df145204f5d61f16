//! The urpnet demo: starts a node for the Comune di Bari on SQLite in a
//! temporary directory, files requests from citizens across every channel and
//! many categories (real comuni of the Città metropolitana di Bari), walks
//! them through their lifecycle, and prints what happened.
//!
//! `cargo run -p urpnet-examples --bin demo` — add `-- --keep` to leave the
//! node running and try the `urpnet-node` CLI against it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use urpnet_examples::samples;
use urpnet_node::NodeConfig;
use urpnet_node::cli::{self, output};
use urpnet_node::server::{self, Listeners};
use urpnet_node::ticket::{fold, names};
use urpnet_proto::ids::NodeId;
use urpnet_proto::territory::Territory;
use urpnet_proto::v1::{
    AddNoteRequest, AssignTicketRequest, ChangeStatusRequest, Channel, Coordinates,
    CreateTicketRequest, GetHistoryRequest, ListTicketsRequest, Location, Status, Ticket,
};

/// Runs a demo URP node and shows a day of its work.
#[derive(Parser)]
struct Args {
    /// How many sample requests to file.
    #[arg(long, default_value_t = 60)]
    tickets: usize,
    /// Keep the node running after the demo (Ctrl-C to stop).
    #[arg(long)]
    keep: bool,
}

fn heading(text: &str) {
    use std::io::IsTerminal as _;
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m== {text}\x1b[0m");
    } else {
        println!("\n== {text}");
    }
}

async fn change(
    desk: &mut cli::Desk,
    id: &str,
    to: Status,
    reason: &str,
) -> anyhow::Result<Ticket> {
    let req = ChangeStatusRequest {
        ticket_id: id.into(),
        status: to as i32,
        reason: reason.into(),
        merged_into: String::new(),
    };
    desk.change_status(req)
        .await?
        .into_inner()
        .ticket
        .context("ticket")
}

async fn assign(desk: &mut cli::Desk, id: &str, office: &str) -> anyhow::Result<Ticket> {
    let req = AssignTicketRequest {
        ticket_id: id.into(),
        office: office.into(),
    };
    desk.assign_ticket(req)
        .await?
        .into_inner()
        .ticket
        .context("ticket")
}

async fn note(desk: &mut cli::Desk, id: &str, public: bool, text: &str) -> anyhow::Result<()> {
    desk.add_note(AddNoteRequest {
        ticket_id: id.into(),
        public,
        text: text.into(),
    })
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    urpnet_proto::telemetry::init_logs(Default::default(), "warn");
    let dir = tempfile::Builder::new().prefix("urpnet-demo-").tempdir()?;
    let id = NodeId::new("c_a662")?;
    let mut config = NodeConfig::new(id.clone(), "Comune di Bari", dir.path().join("data"));
    config.desk.listen = "127.0.0.1:0".parse()?;
    let token = server::initialise(&config)
        .await?
        .context("fresh data dir has a token")?;
    let desk_listener = TcpListener::bind("127.0.0.1:0").await?;
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await?;
    let desk_addr = desk_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;
    config.desk.listen = desk_addr;
    config.metrics.listen = metrics_addr.to_string();
    let shutdown = CancellationToken::new();
    let node = tokio::spawn(server::run(
        config.clone(),
        Listeners {
            desk: desk_listener,
            metrics: Some(metrics_listener),
        },
        shutdown.clone(),
    ));

    heading("A URP node for the Comune di Bari");
    println!("node id        {id} (the body's IPA code)");
    println!(
        "data dir       {} (SQLite, WAL, synchronous=FULL)",
        config.node.data_dir.display()
    );
    println!("desk (gRPC)    {desk_addr}   health + reflection on the same port");
    println!("metrics        http://{metrics_addr}/metrics");
    let mut desk = cli::connect(
        &desk_addr.to_string(),
        &token,
        config.desk.max_message_bytes,
    )
    .await?;

    heading(&format!(
        "Citizens write, call and walk in: {} requests",
        args.tickets
    ));
    let italy = Territory::italy();
    let province: Vec<&str> = italy
        .comuni()
        .filter(|c| c.province_code == "272")
        .map(|c| c.istat_code.as_str())
        .collect();
    println!(
        "about the Città metropolitana di Bari: {} comuni, e.g. {}",
        province.len(),
        province
            .iter()
            .take(4)
            .map(|c| italy.comune(c).map(|c| c.name.as_str()).unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let bar = ProgressBar::new(args.tickets as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} tickets filed",
    )?);
    let mut tickets = Vec::new();
    let mut suggested = 0;
    for i in 0..args.tickets {
        // Most requests are about Bari itself, some about the rest of the province.
        let comune = if i % 3 == 0 {
            *province.choose(&mut rng).expect("comuni")
        } else {
            "072006"
        };
        let channel = samples::CHANNELS[i % samples::CHANNELS.len()];
        let created = desk
            .create_ticket(samples::request(&mut rng, comune, channel))
            .await?
            .into_inner();
        suggested += usize::from(!created.possible_duplicates.is_empty());
        tickets.push(created.ticket.context("ticket")?);
        bar.inc(1);
    }
    bar.finish();
    let mut by_channel: BTreeMap<String, usize> = BTreeMap::new();
    for t in &tickets {
        *by_channel
            .entry(names::channel_name(t.channel()))
            .or_default() += 1;
    }
    println!(
        "by channel: {}",
        by_channel
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{suggested} of them came with possible duplicates suggested (same category, nearby, recent)"
    );
    println!(
        "{}",
        output::tickets_table(&tickets[..8.min(tickets.len())])
    );

    heading("Walking tickets through their lifecycle");
    let t = &tickets[0];
    assign(&mut desk, &t.id, "ufficio-relazioni-pubblico").await?;
    change(&mut desk, &t.id, Status::InProgress, "").await?;
    note(
        &mut desk,
        &t.id,
        false,
        "Inoltrata all'ufficio competente, in attesa di riscontro",
    )
    .await?;
    note(
        &mut desk,
        &t.id,
        true,
        "Gentile cittadino, la sua richiesta è in lavorazione",
    )
    .await?;
    change(&mut desk, &t.id, Status::Resolved, "risposta inviata").await?;
    let done = change(&mut desk, &t.id, Status::Closed, "").await?;
    println!(
        "{}  {} -> closed after assignment, two notes and a resolution",
        done.reference, t.subject
    );

    let w = &tickets[1];
    assign(&mut desk, &w.id, "ufficio-tributi").await?;
    change(
        &mut desk,
        &w.id,
        Status::WaitingCitizen,
        "serve copia del documento d'identità",
    )
    .await?;
    println!("{}  {} -> waiting for the citizen", w.reference, w.subject);

    let r = &tickets[2];
    change(
        &mut desk,
        &r.id,
        Status::Rejected,
        "richiesta anonima e priva di elementi per procedere",
    )
    .await?;
    println!(
        "{}  {} -> rejected, with its reason on record",
        r.reference, r.subject
    );
    for t in tickets.iter().skip(3).take(args.tickets / 3) {
        assign(&mut desk, &t.id, "ufficio-manutenzioni").await?;
    }
    println!("{} more assigned to ufficio-manutenzioni", args.tickets / 3);

    heading("Two citizens report the same pothole");
    let pothole = |subject: &str, lat: f64, lon: f64, channel: Channel| CreateTicketRequest {
        request_id: format!("demo-{}", ulid::Ulid::new()),
        category: "strade.buche".into(),
        channel: channel as i32,
        subject: subject.into(),
        description: "Buca profonda davanti al civico 52, pericolosa per i motorini".into(),
        location: Some(Location {
            istat_code: "072006".into(),
            address: "Corso Cavour 52".into(),
            coordinates: Some(Coordinates {
                latitude: lat,
                longitude: lon,
            }),
        }),
        ..Default::default()
    };
    let first = desk
        .create_ticket(pothole(
            "Buca in corso Cavour",
            41.12310,
            16.87180,
            Channel::App,
        ))
        .await?
        .into_inner();
    let second = desk
        .create_ticket(pothole(
            "Voragine corso Cavour",
            41.12318,
            16.87190,
            Channel::Phone,
        ))
        .await?
        .into_inner();
    let (first, second_ticket) = (
        first.ticket.context("ticket")?,
        second.ticket.clone().context("ticket")?,
    );
    println!(
        "{} filed by app; {} filed by phone, with this suggestion:",
        first.reference, second_ticket.reference
    );
    println!("{}", output::duplicates_table(&second.possible_duplicates));
    let merged = desk
        .change_status(ChangeStatusRequest {
            ticket_id: second_ticket.id.clone(),
            status: Status::Merged as i32,
            reason: String::new(),
            merged_into: first.id.clone(),
        })
        .await?
        .into_inner()
        .ticket
        .context("ticket")?;
    println!(
        "{} merged into {} ({})",
        merged.reference,
        first.reference,
        names::status_name(merged.status())
    );

    heading("A flaky mobile network retries a request");
    let retry = samples::request(&mut rng, "072006", Channel::App);
    let a = desk.create_ticket(retry.clone()).await?.into_inner();
    let b = desk.create_ticket(retry).await?.into_inner();
    println!(
        "same request_id twice -> {} both times (second answer replayed: {})",
        b.ticket
            .as_ref()
            .map(|t| t.reference.as_str())
            .unwrap_or("?"),
        b.replayed
    );
    anyhow::ensure!(
        a.ticket == b.ticket,
        "a retried create must return the same ticket"
    );

    heading("Bad input is refused, naming the field and the rule");
    let mut bad = samples::request(&mut rng, "072006", Channel::Web);
    bad.category = "astrologia".into();
    bad.location.as_mut().context("location")?.coordinates = Some(Coordinates {
        latitude: 123.0,
        longitude: 16.0,
    });
    match desk.create_ticket(bad).await {
        Ok(_) => anyhow::bail!("a bad request was accepted"),
        Err(status) => println!("{:?}: {}", status.code(), status.message()),
    }
    let reopen = ChangeStatusRequest {
        ticket_id: done.id.clone(),
        status: Status::InProgress as i32,
        reason: String::new(),
        merged_into: String::new(),
    };
    match desk.change_status(reopen).await {
        Ok(_) => anyhow::bail!("a closed ticket was reopened"),
        Err(status) => println!("{:?}: {}", status.code(), status.message()),
    }

    heading(&format!(
        "History of {} (every event signed by {id}, HLC-stamped)",
        done.reference
    ));
    let history = desk
        .get_history(GetHistoryRequest {
            ticket_id: done.id.clone(),
        })
        .await?
        .into_inner();
    println!("{}", output::history_table(&history.entries));

    heading("Where things stand");
    let all = desk
        .list_tickets(ListTicketsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await?
        .into_inner()
        .tickets;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for t in &all {
        *by_status.entry(names::status_name(t.status())).or_default() += 1;
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["status", "tickets"]);
    for (s, n) in &by_status {
        table.add_row([s.clone(), n.to_string()]);
    }
    println!("{table}");
    let mut consistent = 0;
    for t in &all {
        let h = desk
            .get_history(GetHistoryRequest {
                ticket_id: t.id.clone(),
            })
            .await?
            .into_inner();
        let refolded = fold::fold(h.entries.into_iter().filter_map(|e| e.event)).ticket;
        anyhow::ensure!(
            refolded.as_ref() == Some(t),
            "ticket {} differs from the fold of its events",
            t.reference
        );
        consistent += 1;
    }
    println!("{consistent} tickets: each stored state equals the fold of its signed events");
    let metrics = urpnet_proto::telemetry::prometheus().render();
    let created: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("urpnet_tickets_created_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!("metrics: urpnet_tickets_created_total = {created}");

    if args.keep {
        heading("The node keeps running; try the CLI");
        let config_path = dir.path().join("urpnet.toml");
        std::fs::write(&config_path, toml_config(&config))?;
        println!("urpnet-node --config {} ticket list", config_path.display());
        println!(
            "urpnet-node --config {} ticket show {}",
            config_path.display(),
            done.reference
        );
        println!(
            "urpnet-node --config {} ticket history {}",
            config_path.display(),
            done.reference
        );
        println!("(cargo run -p urpnet-node -- ... works too.) Ctrl-C to stop.");
        urpnet_proto::telemetry::shutdown_signal().await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), node).await???;
    println!(
        "\nnode stopped; demo data removed with {}",
        dir.path().display()
    );
    Ok(())
}

fn toml_config(config: &NodeConfig) -> String {
    NodeConfig::template(&config.node.id, &config.node.name, &config.node.data_dir)
        .replace(
            "listen = \"127.0.0.1:7400\"",
            &format!("listen = \"{}\"", config.desk.listen),
        )
        .replace(
            "listen = \"127.0.0.1:9400\"",
            &format!("listen = \"{}\"", config.metrics.listen),
        )
}
