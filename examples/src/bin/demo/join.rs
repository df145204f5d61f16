//! The federation comes up: a registry for Abruzzo with its own CA and the
//! sample taxonomy, then three offices, each enrolled with a certificate
//! issued from its own CSR.

use std::time::Duration;

use anyhow::Context as _;
use rand::SeedableRng as _;
use urpnet_examples::federation;
use urpnet_node::NodeConfig;
use urpnet_node::cli;
use urpnet_proto::ids::NodeId;
use urpnet_proto::v1::{Health, ImportTaxonomyRequest, Level};
use urpnet_registry::config::RegistryConfig;

use crate::steps::{heading, members_of, show_members, wait_until};
use crate::{Args, Demo};

/// The sample taxonomy the registry distributes.
const SAMPLE_TAXONOMY: &str = include_str!("../../../taxonomy.toml");

/// Starts the registry and the offices, and connects to Celano's desk.
pub(crate) async fn run(args: Args) -> anyhow::Result<Demo> {
    let dir = tempfile::Builder::new().prefix("urpnet-demo-").tempdir()?;
    // A real SMTP server on loopback for the citizens' e-mails, when this
    // machine has python3-aiosmtpd (the demo runs without it).
    let smtp = if urpnet_examples::smtp::available() {
        let mail = dir.path().join("mail");
        std::fs::create_dir_all(&mail)?;
        urpnet_examples::smtp::SmtpSink::start(urpnet_examples::smtp::free_port(), &mail)
            .await
            .ok()
    } else {
        None
    };
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
        let node = start_office(
            office,
            &registry,
            &mut admin,
            dir.path(),
            smtp.as_ref().map(|s| s.port),
        )
        .await?;
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
    show_members(&mut admin).await?;

    let celano = &nodes[0];
    let desk = cli::connect(
        &celano.desk_addr.to_string(),
        &celano.token,
        celano.config.desk.max_message_bytes,
    )
    .await?;
    Ok(Demo {
        args,
        dir,
        registry,
        admin,
        nodes,
        desk,
        rng: rand::rngs::StdRng::seed_from_u64(2026),
        tickets: Vec::new(),
        smtp,
    })
}

/// One office of the demo federation.
pub(crate) struct Office {
    id: &'static str,
    name: &'static str,
    level: Level,
    territory: &'static [&'static str],
    capacity: u32,
    overflow: &'static [&'static str],
}

/// A running node of the demo.
pub(crate) struct RunningNode {
    pub(crate) id: &'static str,
    pub(crate) tls: urpnet_proto::tls::TlsMaterial,
    pub(crate) node: federation::RunningNode,
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
    smtp_port: Option<u16>,
) -> anyhow::Result<RunningNode> {
    let mut config = NodeConfig::new(
        NodeId::new(office.id)?,
        office.name,
        base.join(office.id).join("data"),
    );
    // FAQs spread and records reach the archive in seconds for the demo
    // (the defaults are every 30 s and every 60 s).
    config.faq.interval = Duration::from_secs(1);
    // The citizens' side: Open311 and tracking pages on a free port, and
    // notices by e-mail through the local SMTP server.
    config.public.listen = "127.0.0.1:0".into();
    if let Some(port) = smtp_port {
        config.notify.smtp_url = format!("smtp://127.0.0.1:{port}");
        config.notify.from = format!("URP {} <urp@{}.example.it>", office.name, office.id);
        config.notify.interval = Duration::from_millis(200);
    }
    // The body's video service for Sportello virtuale appointments (rooms
    // are links on it; nothing is called in the demo).
    config.appointments.video_base_url = format!("https://video.{}.example.it", office.id);
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

pub(crate) fn toml_config(config: &NodeConfig) -> String {
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
