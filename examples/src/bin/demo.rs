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

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use urpnet_examples::{federation, samples};
use urpnet_node::NodeConfig;
use urpnet_node::cli::{self, output};
use urpnet_node::shared_ticket::{fold, names};
use urpnet_proto::ids::NodeId;
use urpnet_proto::territory::Territory;
use urpnet_proto::v1::faq_desk_client::FaqDeskClient;
use urpnet_proto::v1::{
    AddNoteRequest, AnswerHandoffRequest, AssignTicketRequest, ChangeStatusRequest, Channel,
    CitizenContact, Consent, Coordinates, CreateTicketRequest, GetHistoryRequest, GetTicketRequest,
    HandoffRequest, Health, ImportTaxonomyRequest, Level, ListMembersRequest, ListOffersRequest,
    ListPeersRequest, ListTicketsRequest, Location, OverflowRequest, RouteRequest, Status, Ticket,
};
use urpnet_proto::v1::{FaqStatusRequest, GetFaqRequest, PublishFaqRequest, SearchFaqRequest};
use urpnet_registry::cli as registry_cli;
use urpnet_registry::config::RegistryConfig;

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

/// The sample taxonomy the registry distributes.
const SAMPLE_TAXONOMY: &str = include_str!("../../taxonomy.toml");

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

    heading("A regional federation: the registry for Abruzzo");
    let mut rconfig = RegistryConfig::new("abruzzo", dir.path().join("registry"));
    rconfig.membership.heartbeat_interval = Duration::from_secs(1);
    rconfig.metrics.listen = String::new();
    let registry = federation::start_registry(rconfig).await?;
    let mut admin = registry.admin()?;
    let taxonomy = admin
        .import_taxonomy(ImportTaxonomyRequest {
            toml: SAMPLE_TAXONOMY.into(),
        })
        .await?
        .into_inner()
        .taxonomy
        .context("taxonomy")?;
    println!(
        "registry       {} (mutual TLS; federation CA in {})",
        registry.endpoint(),
        dir.path().join("registry/ca").display()
    );
    println!(
        "taxonomy       version {} with {} categories, each with its competent level (examples/taxonomy.toml)",
        taxonomy.version,
        taxonomy.categories.len()
    );

    heading("Three offices join: keys made at home, certificates from the registry's CA");
    let offices = [
        Office {
            id: "c_c426",
            name: "Comune di Celano",
            level: Level::Comune,
            territory: &["066032"],
            capacity: 20,
            overflow: &[],
        },
        Office {
            id: "r_abruzz",
            name: "Regione Abruzzo",
            level: Level::Regione,
            territory: &["13"],
            capacity: 120,
            overflow: &["informazioni", "sanita"],
        },
        Office {
            id: "c_a515",
            name: "Comune di Avezzano",
            level: Level::Comune,
            territory: &["066006"],
            capacity: 40,
            overflow: &["informazioni", "anagrafe"],
        },
    ];
    let mut nodes = Vec::new();
    for office in &offices {
        let node = start_office(office, &registry, &mut admin, dir.path()).await?;
        println!(
            "{:<9} {:<20} enrolled as {} for {}; desk on {}",
            office.id,
            office.name,
            urpnet_proto::taxonomy::level_name(office.level),
            office.territory.join(", "),
            node.desk_addr
        );
        nodes.push(node);
    }
    wait_until("every office to report to the registry", || async {
        members_of(&registry)
            .await?
            .iter()
            .all(|m| m.health == Health::Reachable as i32)
            .then_some(())
    })
    .await?;
    let members = admin
        .list_members(ListMembersRequest {})
        .await?
        .into_inner()
        .members;
    println!("{}", registry_cli::members_table(&members));

    heading("Competence routing: who answers for what, and why");
    let celano = &nodes[0];
    let mut as_celano = registry.registry_as(&celano.tls)?;
    let mut routes = comfy_table::Table::new();
    routes.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    routes.set_header(["request about", "in", "goes to", "why"]);
    for (category, comune) in [
        ("rifiuti.ingombranti", "066032"),
        ("rifiuti.ingombranti", "066006"),
        ("sanita.prenotazioni", "066032"),
        ("strade.provinciali", "066032"),
        ("pensioni", "066032"),
        ("anagrafe.certificati", "066049"),
    ] {
        let r = as_celano
            .route(RouteRequest {
                category: category.into(),
                territory: comune.into(),
            })
            .await?
            .into_inner();
        let member = r.member.unwrap_or_default();
        routes.add_row([
            category.to_string(),
            samples::comune(comune).name.clone(),
            format!(
                "{}{}",
                member.id,
                if r.fallback { " (fallback)" } else { "" }
            ),
            r.reason,
        ]);
    }
    println!("{routes}");

    let node = &nodes[0];
    let id = NodeId::new(node.id)?;
    let config = node.config.clone();
    let desk_addr = node.desk_addr;
    let token = node.token.clone();
    println!(
        "\nCelano's node: data {} (SQLite, WAL, synchronous=FULL); desk {desk_addr} with health + reflection",
        config.node.data_dir.display()
    );
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
        .filter(|c| c.province_code == "066")
        .map(|c| c.istat_code.as_str())
        .collect();
    println!(
        "about the provincia dell'Aquila: {} comuni, e.g. {}",
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
        // Most requests are about Celano itself, some about the rest of the province.
        let comune = if i % 3 == 0 {
            *province.choose(&mut rng).expect("comuni")
        } else {
            "066032"
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

    heading("Celano is swamped: where can its overflow go?");
    wait_until("Celano's next heartbeat to report its queue", || async {
        let members = members_of(&registry).await?;
        let celano = members.iter().find(|m| m.id == "c_c426")?;
        (celano.load.as_ref()?.queue_waiting > 20).then_some(())
    })
    .await?;
    let members = admin
        .list_members(ListMembersRequest {})
        .await?
        .into_inner()
        .members;
    println!("{}", registry_cli::members_table(&members));
    let overflow = as_celano
        .overflow(OverflowRequest {
            category: "informazioni".into(),
            from: String::new(),
            limit: 5,
        })
        .await?
        .into_inner();
    println!("Overflow(informazioni) asked by c_c426 with its own certificate:");
    println!("{}", registry_cli::overflow_text(&overflow));

    heading("A citizen calls Celano about a regional matter");
    let region = &nodes[1];
    let mut region_desk = cli::connect(
        &region.desk_addr.to_string(),
        &region.token,
        region.config.desk.max_message_bytes,
    )
    .await?;
    let call = desk
        .create_ticket(CreateTicketRequest {
            request_id: format!("demo-{}", ulid::Ulid::new()),
            category: "sanita.prenotazioni".into(),
            channel: Channel::Phone as i32,
            subject: "Prenotare una visita cardiologica".into(),
            description: "La signora chiede come prenotare una visita cardiologica \
                          all'ospedale di Avezzano e quanto si attende"
                .into(),
            location: Some(Location {
                istat_code: "066032".into(),
                address: "Via Roma 10".into(),
                coordinates: None,
            }),
            citizen: Some(CitizenContact {
                full_name: "Anna Di Censo".into(),
                email: String::new(),
                phone: "+39 0863 123456".into(),
                fiscal_code: String::new(),
            }),
            consent: Some(Consent {
                share_with_competent_body: true,
                contact_for_updates: true,
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .ticket
        .context("ticket")?;
    let offered = desk
        .handoff(HandoffRequest {
            ticket_id: call.id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "{} opened at c_c426 by phone; handoff without a target, so the registry routes it:\n  -> {} ({})",
        call.reference, offered.to_node, offered.decided_by
    );
    let inbox = wait_until("the offer in the region's inbox", || async {
        let offers = region_desk
            .clone()
            .list_offers(ListOffersRequest {})
            .await
            .ok()?
            .into_inner();
        (!offers.incoming.is_empty()).then_some(offers.incoming)
    })
    .await?;
    println!("The region's inbox (urpnet-node ticket offers):");
    println!("{}", output::offers_table(&inbox));
    region_desk
        .accept_handoff(AnswerHandoffRequest {
            ticket_id: call.id.clone(),
            reason: String::new(),
        })
        .await?;
    assign(&mut region_desk, &call.id, "cup-regionale").await?;
    change(&mut region_desk, &call.id, Status::InProgress, "").await?;
    note(
        &mut region_desk,
        &call.id,
        true,
        "Prenotabile al CUP regionale (numero verde) o in farmacia; attesa attuale 20 giorni",
    )
    .await?;
    change(
        &mut region_desk,
        &call.id,
        Status::Resolved,
        "informazioni date",
    )
    .await?;
    let at_region = region_desk
        .get_ticket(GetTicketRequest {
            ticket_id: call.id.clone(),
            reference: String::new(),
        })
        .await?
        .into_inner();
    println!(
        "r_abruzz accepted, assigned it to cup-regionale, answered and resolved it; \
         the citizen's contact came with it (consent given): {}",
        at_region
            .citizen
            .as_ref()
            .map_or("no".to_string(), |c| format!("yes, {}", c.full_name))
    );
    let at_celano = wait_until("the resolution to reach Celano", || async {
        let t = desk
            .clone()
            .get_ticket(GetTicketRequest {
                ticket_id: call.id.clone(),
                reference: String::new(),
            })
            .await
            .ok()?
            .into_inner()
            .ticket?;
        (t.status() == Status::Resolved && t.note_count == 1).then_some(t)
    })
    .await?;
    anyhow::ensure!(
        Some(&at_celano) == at_region.ticket.as_ref(),
        "both offices must fold the same ticket"
    );
    for (who, d) in [
        ("c_c426 (origin)", &desk),
        ("r_abruzz (owner)", &region_desk),
    ] {
        let h = d
            .clone()
            .get_history(GetHistoryRequest {
                ticket_id: call.id.clone(),
            })
            .await?
            .into_inner();
        println!("History of {} as {who} holds it:", call.reference);
        println!("{}", output::history_table(&h.entries));
    }
    let peers = desk.list_peers(ListPeersRequest {}).await?.into_inner();
    println!("Delivery from Celano (urpnet-node peers):");
    println!("{}", output::peers_table(&peers.peers));

    heading("The Region publishes shared FAQs; every comune receives them");
    let faq_client = |node: &RunningNode| {
        let (addr, token) = (node.desk_addr.to_string(), node.token.clone());
        async move {
            let (channel, token) = cli::channel_with_token(&addr, &token).await?;
            anyhow::Ok(FaqDeskClient::with_interceptor(channel, token))
        }
    };
    let mut region_faq = faq_client(region).await?;
    let celano_faq = faq_client(&nodes[0]).await?;
    let avezzano_faq = faq_client(&nodes[2]).await?;
    let regional: Vec<_> = urpnet_node::faq::sample::parse(urpnet_node::faq::sample::SAMPLE)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .filter(|e| e.scope == "regione")
        .collect();
    let published_at = std::time::Instant::now();
    for entry in &regional {
        region_faq
            .publish_faq(PublishFaqRequest {
                content: Some(entry.content.clone()),
                ..Default::default()
            })
            .await?;
    }
    let region_root = region_faq
        .faq_status(FaqStatusRequest {})
        .await?
        .into_inner()
        .root;
    println!(
        "r_abruzz published {} FAQs (examples/faq-sample.toml), each version signed with its key",
        regional.len()
    );
    for (id, client) in [("c_c426", &celano_faq), ("c_a515", &avezzano_faq)] {
        let status = wait_until("the FAQ set to reach every comune", || {
            let mut client = client.clone();
            let root = region_root.clone();
            async move {
                let s = client
                    .faq_status(FaqStatusRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (s.root == root).then_some(s)
            }
        })
        .await?;
        println!(
            "{id}   holds the same set after {:.1} s: {} entries from {}, {} in its Italian search index",
            published_at.elapsed().as_secs_f64(),
            status.origins.iter().map(|o| o.entries).sum::<u32>(),
            status
                .origins
                .iter()
                .map(|o| o.origin.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            status.indexed
        );
    }
    println!(
        "(epidemic anti-entropy: each node exchanges digests with random peers every faq.interval, here 1 s; no central server)"
    );
    println!("\nA citizen calls Celano: \"devo cambiare il medico di famiglia, come si fa?\"");
    println!(
        "The operator types \"cambiare medico famigla\" (with a typo) and sees, before opening any ticket:"
    );
    let found = celano_faq
        .clone()
        .search_faq(SearchFaqRequest {
            query: "cambiare medico famigla".into(),
            territory: "066032".into(),
            limit: 3,
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("{}", cli::faq::hits_table(&found));
    let best = found.hits.first().context("an answer")?;
    let answer = celano_faq
        .clone()
        .get_faq(GetFaqRequest {
            key: best.key.clone(),
        })
        .await?
        .into_inner()
        .entry
        .and_then(|e| e.current)
        .and_then(|v| v.content)
        .context("content")?;
    println!(
        "Answer read to the citizen (from {}):\n{}",
        best.owner, answer.answer
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
            istat_code: "066032".into(),
            address: "Via Roma 52".into(),
            coordinates: Some(Coordinates {
                latitude: lat,
                longitude: lon,
            }),
        }),
        ..Default::default()
    };
    let first = desk
        .create_ticket(pothole(
            "Buca in via Roma",
            42.08470,
            13.55690,
            Channel::App,
        ))
        .await?
        .into_inner();
    let second = desk
        .create_ticket(pothole(
            "Voragine via Roma",
            42.08478,
            13.55700,
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
    let retry = samples::request(&mut rng, "066032", Channel::App);
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
    let mut bad = samples::request(&mut rng, "066032", Channel::Web);
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

    archive_section(&registry, &nodes, &mut desk).await?;

    if args.keep {
        heading("The federation keeps running; try the CLIs");
        let registry_config_path = dir.path().join("urpnet-registry.toml");
        std::fs::write(&registry_config_path, toml::to_string(&registry.config)?)?;
        let config_path = dir.path().join("urpnet.toml");
        std::fs::write(&config_path, toml_config(&config))?;
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
        let n = format!("urpnet-node --config {}", config_path.display());
        println!("{n} ticket list");
        println!("{n} ticket history {}", done.reference);
        println!("{n} faq search cambiare medico");
        println!("{n} faq status");
        println!("{n} archive status");
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

/// Closes the day's tickets, plants a surge of bulky-waste reports at
/// Celano, loads eight weeks of simulated history, and shows the records
/// arriving at the registry and the trend that finds the surge.
async fn archive_section(
    registry: &federation::RunningRegistry,
    nodes: &[RunningNode],
    desk: &mut cli::Desk,
) -> anyhow::Result<()> {
    use urpnet_proto::v1::archive_admin_client::ArchiveAdminClient;
    use urpnet_proto::v1::archive_client::ArchiveClient;
    use urpnet_proto::v1::archive_desk_client::ArchiveDeskClient;
    use urpnet_proto::v1::{
        ArchiveBatch, ArchiveQueryRequest, ArchiveRecord, ArchiveStatsRequest,
        ArchiveStatusRequest, ArchiveTrendsRequest, Dimension, HandlingTime, Outcome, PayloadKind,
        PushArchiveRequest,
    };
    use urpnet_registry::archive::cli as archive_cli;

    heading("Closing the day: every closed ticket becomes an anonymous record");
    let open = desk
        .list_tickets(ListTicketsRequest {
            page_size: 500,
            statuses: vec![
                Status::New as i32,
                Status::Assigned as i32,
                Status::InProgress as i32,
                Status::WaitingCitizen as i32,
            ],
            ..Default::default()
        })
        .await?
        .into_inner()
        .tickets;
    let mut closed = 0;
    for t in open
        .iter()
        .filter(|t| t.owner_node == nodes[0].id && t.pending_handoff.is_none())
    {
        if change(desk, &t.id, Status::Resolved, "risposta inviata")
            .await
            .is_ok()
            && change(desk, &t.id, Status::Closed, "").await.is_ok()
        {
            closed += 1;
        }
    }
    println!("Celano resolves and closes {closed} open tickets.");
    // After a storm, bulky waste piles up in Celano: 30 reports this week.
    let mut surge = 0;
    for i in 0..30 {
        let created = desk
            .create_ticket(CreateTicketRequest {
                request_id: format!("demo-storm-{i}"),
                category: "rifiuti.ingombranti".into(),
                channel: if i % 2 == 0 {
                    Channel::App
                } else {
                    Channel::Phone
                } as i32,
                subject: format!("Rifiuti ingombranti abbandonati dopo il temporale ({i})"),
                description: "Materassi e mobili in strada, chiedo il ritiro".into(),
                location: Some(Location {
                    istat_code: "066032".into(),
                    address: format!("Via Aia Santa {}", i + 1),
                    coordinates: None,
                }),
                citizen: Some(CitizenContact {
                    full_name: format!("Cittadino {i}"),
                    email: format!("cittadino{i}@example.it"),
                    phone: String::new(),
                    fiscal_code: String::new(),
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .ticket
            .context("ticket")?;
        change(desk, &created.id, Status::Resolved, "ritiro programmato").await?;
        change(desk, &created.id, Status::Closed, "").await?;
        surge += 1;
    }
    println!(
        "A storm: {surge} reports of bulky waste at Celano this week, each closed (names, e-mails and addresses stay at the node)."
    );
    // Avezzano's desk has a quieter day.
    let avezzano = &nodes[2];
    let mut other = cli::connect(
        &avezzano.desk_addr.to_string(),
        &avezzano.token,
        avezzano.config.desk.max_message_bytes,
    )
    .await?;
    for i in 0..8 {
        let t = other
            .create_ticket(CreateTicketRequest {
                request_id: format!("demo-avezzano-{i}"),
                category: "anagrafe.residenza".into(),
                channel: Channel::Desk as i32,
                subject: "Cambio di residenza".into(),
                description: "Chiede i documenti per il cambio di residenza".into(),
                location: Some(Location {
                    istat_code: "066006".into(),
                    address: String::new(),
                    coordinates: None,
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .ticket
            .context("ticket")?;
        change(&mut other, &t.id, Status::Resolved, "modulo consegnato").await?;
        change(&mut other, &t.id, Status::Closed, "").await?;
    }
    println!("Avezzano closes 8 requests about changes of residence.");

    // Eight weeks of history: what Celano and Avezzano would have archived
    // over the previous two months, simulated with a seeded generator and
    // signed with each node's own key, as the nodes send it.
    let now = urpnet_proto::archive::week_of_ms(urpnet_proto::hlc::system_time_ms());
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut history = 0;
    for node in nodes.iter().filter(|n| n.id != "r_abruzz") {
        let territory = if node.id == "c_c426" {
            "066032"
        } else {
            "066006"
        };
        let signer = urpnet_proto::signing::NodeSigner::load(
            NodeId::new(node.id)?,
            &urpnet_node::server::paths::signing_key(&node.config.node.data_dir),
        )?;
        let mut records = Vec::new();
        for back in 1..=8 {
            let week = urpnet_proto::archive::add_weeks(now, -back).context("week")?;
            for (category, mean) in [
                ("rifiuti.ingombranti", 7u32),
                ("anagrafe.residenza", 9),
                ("tributi.tari", 6),
                ("informazioni", 12),
            ] {
                let n = mean - 2 + rand::Rng::gen_range(&mut rng, 0..5);
                for _ in 0..n {
                    records.push(ArchiveRecord {
                        id: rand::Rng::r#gen::<[u8; 16]>(&mut rng).to_vec(),
                        category: category.into(),
                        channel: [Channel::Phone, Channel::Desk, Channel::Email, Channel::App]
                            [rand::Rng::gen_range(&mut rng, 0..4)]
                            as i32,
                        territory: territory.into(),
                        week,
                        outcome: if rand::Rng::gen_range(&mut rng, 0..6) == 0 {
                            Outcome::Rejected
                        } else {
                            Outcome::Answered
                        } as i32,
                        handling: HandlingTime::Under3d as i32,
                        handoffs: 0,
                        overflow: false,
                        origin_level: Level::Comune as i32,
                        competent_level: Level::Comune as i32,
                    });
                }
            }
        }
        history += records.len();
        let batch = ArchiveBatch {
            author: node.id.into(),
            first_seq: 0,
            records: records.iter().map(prost::Message::encode_to_vec).collect(),
        };
        ArchiveClient::new(registry.channel(&node.tls)?)
            .push_archive(PushArchiveRequest {
                batch: Some(signer.sign(
                    PayloadKind::ArchiveBatch,
                    prost::Message::encode_to_vec(&batch),
                )),
            })
            .await?;
    }
    println!(
        "History: {history} records of the previous 8 weeks from Celano and Avezzano (simulated, signed by each node)."
    );

    // Each node pushes at its interval (1 s here); `archive sync` pushes now.
    for node in nodes {
        let (channel, token) =
            cli::channel_with_token(&node.desk_addr.to_string(), &node.token).await?;
        let status = ArchiveDeskClient::with_interceptor(channel, token)
            .sync_archive(ArchiveStatusRequest {})
            .await?
            .into_inner();
        println!(
            "{:<9} made {} records, {} acknowledged by the registry, {} waiting",
            node.id, status.made, status.sent, status.pending
        );
    }
    let mut admin = ArchiveAdminClient::new(registry.channel(&registry.coordinator()?)?);
    let stats = admin
        .archive_stats(ArchiveStatsRequest {})
        .await?
        .into_inner();
    println!("\nAt the registry (urpnet-registry archive stats):");
    println!("{}", archive_cli::stats_text(&stats));

    heading("Trends for the region: this week against the 8 before it");
    let trends = admin
        .archive_trends(ArchiveTrendsRequest {
            all: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let hidden = trends.rows.iter().filter(|r| r.suppressed).count();
    let shown = urpnet_proto::v1::ArchiveTrendsResponse {
        rows: trends
            .rows
            .iter()
            .filter(|r| !r.suppressed)
            .cloned()
            .collect(),
        ..trends.clone()
    };
    println!("{}", archive_cli::trends_text(&shown));
    println!("({hidden} more series under k = 5 this week are not shown)");
    let found = trends
        .rows
        .iter()
        .find(|r| r.surge && r.category == "rifiuti.ingombranti" && r.territory == "066032")
        .context("the planted surge was not found")?;
    println!("\nFound: {}", found.explanation);

    heading("A protected query: this week by category and outcome (k = 5)");
    let week = ArchiveQueryRequest {
        group_by: vec![Dimension::Category as i32, Dimension::Outcome as i32],
        filter: Some(urpnet_proto::v1::ArchiveFilter {
            week_from: now,
            week_to: now,
            ..Default::default()
        }),
        ..Default::default()
    };
    println!(
        "{}",
        archive_cli::query_table(&admin.query_archive(week).await?.into_inner())
    );
    Ok(())
}

/// One office of the demo federation.
struct Office {
    id: &'static str,
    name: &'static str,
    level: Level,
    territory: &'static [&'static str],
    capacity: u32,
    overflow: &'static [&'static str],
}

/// A running node of the demo.
struct RunningNode {
    id: &'static str,
    tls: urpnet_proto::tls::TlsMaterial,
    node: federation::RunningNode,
}

impl std::ops::Deref for RunningNode {
    type Target = federation::RunningNode;
    fn deref(&self) -> &Self::Target {
        &self.node
    }
}

/// Prepares an office's node, enrols it with the registry (CSR made by the
/// node), and runs it.
async fn start_office(
    office: &Office,
    registry: &federation::RunningRegistry,
    admin: &mut urpnet_proto::v1::registry_admin_client::RegistryAdminClient<
        tonic::transport::Channel,
    >,
    base: &std::path::Path,
) -> anyhow::Result<RunningNode> {
    let mut config = NodeConfig::new(
        NodeId::new(office.id)?,
        office.name,
        base.join(office.id).join("data"),
    );
    // FAQs spread and records reach the archive in seconds for the demo
    // (the defaults are every 30 s and every 60 s).
    config.faq.interval = Duration::from_secs(1);
    config.archive.interval = Duration::from_secs(1);
    config.registry.capacity_per_hour = office.capacity;
    config.registry.operators_on_duty = 2;
    config.registry.overflow_categories = office.overflow.iter().map(|s| s.to_string()).collect();
    federation::enrol_node(
        admin,
        &registry.endpoint(),
        &mut config,
        office.level,
        office.territory,
    )
    .await?;
    let tls = urpnet_proto::tls::TlsFiles::in_dir(&config.tls_dir()).load()?;
    Ok(RunningNode {
        id: office.id,
        tls,
        node: federation::start_node(config).await?,
    })
}

/// The registry's member list as the coordinator sees it, or `None` if the
/// call failed (the caller polls again).
async fn members_of(
    registry: &federation::RunningRegistry,
) -> Option<Vec<urpnet_proto::v1::Member>> {
    Some(
        registry
            .admin()
            .ok()?
            .list_members(ListMembersRequest {})
            .await
            .ok()?
            .into_inner()
            .members,
    )
}

/// Waits for a condition, polling, for at most 30 s.
async fn wait_until<T, F, Fut>(what: &str, mut condition: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = condition().await {
            return Ok(v);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        .replace(
            "endpoint = \"\"",
            &format!("endpoint = \"{}\"", config.registry.endpoint),
        )
}
