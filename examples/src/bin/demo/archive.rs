//! Closing the day: closed tickets become anonymous records at the registry;
//! eight weeks of simulated history and a planted surge show the trends and a
//! protected query.

use rand::SeedableRng as _;
use urpnet_proto::ids::NodeId;

use anyhow::Context as _;
use urpnet_examples::samples;
use urpnet_node::cli::{self};
use urpnet_proto::v1::{
    Channel, CitizenContact, CreateTicketRequest, ListTicketsRequest, Location, Status,
};

use crate::Demo;
use crate::steps::{change, heading};

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo {
        registry,
        nodes,
        desk,
        ..
    } = demo;
    use urpnet_proto::v1::archive_admin_client::ArchiveAdminClient;
    use urpnet_proto::v1::archive_client::ArchiveClient;
    use urpnet_proto::v1::archive_desk_client::ArchiveDeskClient;
    use urpnet_proto::v1::{
        ArchiveBatch, ArchiveQueryRequest, ArchiveRecord, ArchiveStatsRequest,
        ArchiveStatusRequest, ArchiveTrendsRequest, Dimension, Outcome, PayloadKind,
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
                    let id = rand::Rng::r#gen::<[u8; 16]>(&mut rng).to_vec();
                    records.push(ArchiveRecord {
                        channel: [Channel::Phone, Channel::Desk, Channel::Email, Channel::App]
                            [rand::Rng::gen_range(&mut rng, 0..4)]
                            as i32,
                        outcome: if rand::Rng::gen_range(&mut rng, 0..6) == 0 {
                            Outcome::Rejected as i32
                        } else {
                            Outcome::Answered as i32
                        },
                        ..samples::archive_record(id, category, territory, week)
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
