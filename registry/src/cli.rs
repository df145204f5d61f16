//! The `urpnet-registry` command line: the daemon (`init`, `ca ...`,
//! `serve`) and the coordinators' commands, which talk to a running
//! registry's `RegistryAdmin` and `Registry` services over mutual TLS with the
//! coordinator certificate `init` wrote (`data_dir/coordinator`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use urpnet_proto::cli::{table, time_ms, to_json};
use urpnet_proto::taxonomy::level_name;
use urpnet_proto::territory::Territory;
use urpnet_proto::tls::{self, TlsFiles, TlsMaterial};
use urpnet_proto::v1::registry_admin_client::RegistryAdminClient;
use urpnet_proto::v1::registry_client::RegistryClient;
use urpnet_proto::v1::{
    EnrolRequest, ExportTaxonomyRequest, GetMemberRequest, GetTaxonomyRequest, Health,
    ImportTaxonomyRequest, Level, ListMembersRequest, Member, MemberStatus, OverflowRequest,
    RevokeCoordinatorRequest, RouteRequest, SetStatusRequest, Taxonomy,
};

use crate::config::RegistryConfig;
use crate::registry::{CaFiles, paths};
use crate::server::{self, Listeners};
use crate::store::Store;

/// urpnet-registry: the coordinator's registry of an urpnet federation of
/// public-relations offices — membership and the federation CA, taxonomy,
/// health, competence routing and load distribution.
///
/// Start with `urpnet-registry init --name <region>`, then
/// `urpnet-registry serve`. The other commands talk to the running registry
/// over mutual TLS with the coordinator certificate in the data directory.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "URPNET_REGISTRY_CONFIG",
        default_value = "urpnet-registry.toml"
    )]
    pub config: PathBuf,
    /// Print JSON (canonical proto3 mapping) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Registry endpoint (default: https://<grpc.listen> of the config file).
    #[arg(long, global = true, env = "URPNET_REGISTRY")]
    pub registry: Option<String>,
    /// Directory with the coordinator's cert.pem, key.pem and ca.pem
    /// (default: <data_dir>/coordinator).
    #[arg(long, global = true, env = "URPNET_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented configuration file, create the federation CA, the
    /// registry's certificate and the local coordinator's certificate.
    Init {
        /// Short name of the registry, e.g. the region (`abruzzo`).
        #[arg(long)]
        name: String,
        /// Data directory (default: ./registry-data beside the config file).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the registry until SIGINT or SIGTERM.
    Serve,
    /// The federation CA (local: needs the data directory).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Enrol a public body: sign its certificate request and register its
    /// signing key, endpoint, level and territory.
    Enrol(EnrolArgs),
    /// Members of the network.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Suspend a member (reversible with `reinstate`).
    Suspend {
        /// Member id.
        id: String,
        /// Why (kept and shown to the member).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Make a suspended member active again.
    Reinstate {
        /// Member id.
        id: String,
    },
    /// Revoke a member for good: every node refuses it within one heartbeat.
    Revoke {
        /// Member id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The network's taxonomy of contacts.
    #[command(subcommand)]
    Taxonomy(TaxonomyCommand),
    /// Which member is competent for a category in a comune, and why.
    Route {
        /// Category code.
        category: String,
        /// The comune: 6-digit ISTAT code or name ("Celano").
        territory: String,
    },
    /// The anonymised archive: what it holds, protected queries (table,
    /// --json or --csv), trends with surges, SVG charts.
    #[command(subcommand)]
    Archive(crate::archive::cli::ArchiveCommand),
    /// Upward replication of the archive to a national registry (local:
    /// needs the data directory).
    #[command(subcommand)]
    Upstream(crate::archive::cli::UpstreamCommand),
    /// Peers that can take a category's overflow from a member, best first.
    Overflow {
        /// Category code.
        category: String,
        /// The overloaded member.
        #[arg(long)]
        from: String,
        /// Most peers to list.
        #[arg(long, default_value_t = 5)]
        limit: u32,
    },
}

/// `ca` commands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the CA and certificates if missing (what `init` does).
    Init,
    /// Issue a new server certificate for the registry (e.g. after changing
    /// grpc.hosts, or before expiry); a running registry switches to it
    /// within seconds, without a restart.
    RenewServer,
    /// Revoke every certificate of a coordinator (online: the running
    /// registry refuses it at once). You cannot revoke yourself.
    RevokeCoordinator {
        /// Coordinator name.
        name: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Issue a certificate for another coordinator's CLI.
    Coordinator {
        /// Coordinator name (`^[a-z0-9_]{2,32}$`).
        name: String,
        /// Directory to write cert.pem, key.pem and ca.pem into.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `enrol` options.
#[derive(Debug, Args)]
pub struct EnrolArgs {
    /// The body's IPA code (node id), e.g. c_c426.
    #[arg(long)]
    pub id: String,
    /// Display name, e.g. "Comune di Celano".
    #[arg(long)]
    pub name: String,
    /// Level of government.
    #[arg(long, value_enum)]
    pub level: LevelArg,
    /// ISTAT codes it serves (comma-separated): comuni (6 digits), province
    /// (3) or regioni (2); none for a national body.
    #[arg(long, value_delimiter = ',')]
    pub territory: Vec<String>,
    /// https://host:port of its node.
    #[arg(long)]
    pub endpoint: String,
    /// Its ed25519 public key: 64 hex digits, or a file holding them (the
    /// node writes node.pub).
    #[arg(long)]
    pub signing_key: String,
    /// Its certificate signing request (PEM file; the node writes
    /// tls/request.csr). Without it a key is made here and written to --out.
    #[arg(long)]
    pub csr: Option<PathBuf>,
    /// Directory to write cert.pem and ca.pem (and key.pem without --csr).
    #[arg(long)]
    pub out: PathBuf,
}

/// Level names on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LevelArg {
    /// A comune.
    Comune,
    /// A provincia or città metropolitana.
    Provincia,
    /// A regione.
    Regione,
    /// A national body.
    Nazionale,
}

impl From<LevelArg> for Level {
    fn from(l: LevelArg) -> Self {
        match l {
            LevelArg::Comune => Level::Comune,
            LevelArg::Provincia => Level::Provincia,
            LevelArg::Regione => Level::Regione,
            LevelArg::Nazionale => Level::Nazionale,
        }
    }
}

/// `members` commands.
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Every member: id, name, level, status, health, last heartbeat, load.
    List,
    /// One member with its territory, key and certificates.
    Show {
        /// Member id.
        id: String,
    },
}

/// `taxonomy` commands.
#[derive(Debug, Subcommand)]
pub enum TaxonomyCommand {
    /// Import a TOML file as the next version (see examples/taxonomy.toml).
    Import {
        /// The file.
        file: PathBuf,
    },
    /// Write the current taxonomy as TOML (to stdout without a file).
    Export {
        /// Output file.
        file: Option<PathBuf>,
    },
    /// Show the current taxonomy.
    Show,
}

/// Runs a parsed command line.
///
/// # Errors
/// Anything that went wrong, as one readable message.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Init { name, data_dir } => {
            let data_dir = data_dir.clone().unwrap_or_else(|| {
                cli.config
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("registry-data")
            });
            let data_dir = std::path::absolute(&data_dir)?;
            let (config, made) = server::init(&cli.config, name, &data_dir).await?;
            println!("wrote {}", cli.config.display());
            print_ca_init(&config, &made);
            return Ok(());
        }
        Command::Serve => {
            let config = load_config(&cli.config)?;
            urpnet_proto::telemetry::init_logs(config.log.format, &config.log.filter);
            let listeners = Listeners::bind(&config)
                .await
                .with_context(|| format!("binding {}", config.grpc.listen))?;
            let shutdown = CancellationToken::new();
            tokio::spawn({
                let shutdown = shutdown.clone();
                async move {
                    urpnet_proto::telemetry::shutdown_signal().await;
                    tracing::info!("shutdown requested");
                    shutdown.cancel();
                }
            });
            server::run(config, listeners, shutdown).await?;
            return Ok(());
        }
        Command::Ca(CaCommand::RevokeCoordinator { name, reason }) => {
            let conn = Connection::open(&cli)?;
            let resp = conn
                .admin()
                .revoke_coordinator(RevokeCoordinatorRequest {
                    name: name.clone(),
                    reason: reason.clone(),
                })
                .await?
                .into_inner();
            println!(
                "{} revoked: the registry refuses its certificates from now on",
                resp.identity
            );
            return Ok(());
        }
        Command::Ca(cmd) => return ca(&cli, cmd).await,
        Command::Upstream(crate::archive::cli::UpstreamCommand::Init { member_id }) => {
            let config = load_config(&cli.config)?;
            return crate::archive::cli::upstream_init(&config.registry.data_dir, member_id);
        }
        _ => {}
    }
    let conn = Connection::open(&cli)?;
    match cli.command {
        Command::Enrol(args) => enrol(&conn, args, cli.json).await,
        Command::Members(MembersCommand::List) => {
            let resp = conn
                .admin()
                .list_members(ListMembersRequest {})
                .await?
                .into_inner();
            if cli.json {
                print_json("urpnet.v1.ListMembersResponse", &resp);
            } else {
                print_members(&resp.members);
                println!("membership version {}", resp.membership_version);
            }
            Ok(())
        }
        Command::Members(MembersCommand::Show { id }) => {
            let resp = conn
                .admin()
                .get_member(GetMemberRequest { id })
                .await?
                .into_inner();
            if cli.json {
                print_json("urpnet.v1.MemberResponse", &resp);
            } else {
                print_member(&resp);
            }
            Ok(())
        }
        Command::Suspend { id, reason } => {
            set_status(&conn, id, MemberStatus::Suspended, reason, cli.json).await
        }
        Command::Reinstate { id } => {
            set_status(&conn, id, MemberStatus::Active, String::new(), cli.json).await
        }
        Command::Revoke { id, reason } => {
            set_status(&conn, id, MemberStatus::Revoked, reason, cli.json).await
        }
        Command::Taxonomy(TaxonomyCommand::Import { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let resp = conn
                .admin()
                .import_taxonomy(ImportTaxonomyRequest { toml: text })
                .await?
                .into_inner();
            let t = resp.taxonomy.unwrap_or_default();
            if cli.json {
                print_json("urpnet.v1.Taxonomy", &t);
            } else {
                println!(
                    "imported taxonomy version {} ({} categories)",
                    t.version,
                    t.categories.len()
                );
            }
            Ok(())
        }
        Command::Taxonomy(TaxonomyCommand::Export { file }) => {
            let resp = conn
                .admin()
                .export_taxonomy(ExportTaxonomyRequest {})
                .await?
                .into_inner();
            match file {
                Some(path) => {
                    std::fs::write(&path, &resp.toml)?;
                    println!(
                        "wrote taxonomy version {} to {}",
                        resp.version,
                        path.display()
                    );
                }
                None => print!("{}", resp.toml),
            }
            Ok(())
        }
        Command::Taxonomy(TaxonomyCommand::Show) => {
            let t = conn
                .registry()
                .get_taxonomy(GetTaxonomyRequest {})
                .await?
                .into_inner()
                .taxonomy
                .unwrap_or_default();
            if cli.json {
                print_json("urpnet.v1.Taxonomy", &t);
            } else {
                print_taxonomy(&t);
            }
            Ok(())
        }
        Command::Route {
            category,
            territory,
        } => {
            let territory = comune_code(&territory)?;
            let resp = conn
                .registry()
                .route(RouteRequest {
                    category,
                    territory,
                })
                .await?
                .into_inner();
            if cli.json {
                print_json("urpnet.v1.RouteResponse", &resp);
            } else {
                println!("{}", route_text(&resp));
            }
            Ok(())
        }
        Command::Overflow {
            category,
            from,
            limit,
        } => {
            let resp = conn
                .registry()
                .overflow(OverflowRequest {
                    category,
                    from,
                    limit,
                })
                .await?
                .into_inner();
            if cli.json {
                print_json("urpnet.v1.OverflowResponse", &resp);
            } else {
                println!("{}", overflow_text(&resp));
            }
            Ok(())
        }
        Command::Archive(cmd) => {
            crate::archive::cli::run(conn.channel.clone(), cmd, cli.json).await
        }
        Command::Init { .. } | Command::Serve | Command::Ca(_) | Command::Upstream(_) => {
            unreachable!("handled above")
        }
    }
}

fn load_config(path: &Path) -> anyhow::Result<RegistryConfig> {
    Ok(RegistryConfig::load(
        path,
        &urpnet_proto::config::process_env(),
    )?)
}

async fn ca(cli: &Cli, cmd: &CaCommand) -> anyhow::Result<()> {
    let config = load_config(&cli.config)?;
    match cmd {
        CaCommand::Init => {
            let made = server::ca_init(&config).await?;
            print_ca_init(&config, &made);
        }
        CaCommand::RenewServer => {
            let ca = CaFiles::of(&config.registry.data_dir).load()?;
            let store = Store::open(&config.database_url()).await?;
            let info = server::issue_server_cert(&config, &ca, &store).await?;
            store.close().await;
            println!(
                "new registry certificate {} valid until {}; a running registry switches to it within {}s",
                info.serial,
                time_ms(info.not_after_ms),
                server::TLS_RELOAD_CHECK.as_secs()
            );
        }
        CaCommand::RevokeCoordinator { .. } => unreachable!("handled online in run"),
        CaCommand::Coordinator { name, out } => {
            let ca = CaFiles::of(&config.registry.data_dir).load()?;
            let store = Store::open(&config.database_url()).await?;
            let info =
                server::issue_coordinator(&config, &ca, &store, name, &TlsFiles::in_dir(out))
                    .await?;
            store.close().await;
            println!(
                "coordinator certificate for {} written to {} (valid until {})",
                info.identity,
                out.display(),
                time_ms(info.not_after_ms)
            );
        }
    }
    Ok(())
}

fn print_ca_init(config: &RegistryConfig, made: &server::CaInit) {
    let dir = &config.registry.data_dir;
    if made.created {
        println!(
            "created the federation CA in {}",
            paths::ca_dir(dir).display()
        );
    } else {
        println!(
            "kept the existing federation CA in {}",
            paths::ca_dir(dir).display()
        );
    }
    println!(
        "registry certificate {} for {} ({})",
        made.server.serial,
        made.server.identity,
        config.grpc.hosts.join(", ")
    );
    println!(
        "coordinator certificate {} in {}",
        made.coordinator.identity,
        paths::coordinator_tls(dir)
            .cert
            .parent()
            .unwrap_or(dir)
            .display()
    );
    println!(
        "next: urpnet-registry serve, then urpnet-registry taxonomy import examples/taxonomy.toml"
    );
}

/// A coordinator's connection to a registry.
struct Connection {
    channel: Channel,
}

impl Connection {
    fn open(cli: &Cli) -> anyhow::Result<Self> {
        let config = if cli.registry.is_none() || cli.identity.is_none() {
            Some(load_config(&cli.config)?)
        } else {
            None
        };
        let endpoint = match (&cli.registry, &config) {
            (Some(e), _) => e.clone(),
            (None, Some(c)) => format!("https://{}", c.grpc.listen),
            (None, None) => unreachable!("config loaded when no endpoint is given"),
        };
        let identity = match (&cli.identity, &config) {
            (Some(dir), _) => TlsFiles::in_dir(dir),
            (None, Some(c)) => paths::coordinator_tls(&c.registry.data_dir),
            (None, None) => unreachable!("config loaded when no identity is given"),
        };
        let material = identity.load().context(
            "reading the coordinator certificate (run `urpnet-registry init`, or pass --identity)",
        )?;
        let channel =
            tls::channel_to_registry(&endpoint, material.client_config()?, Duration::from_secs(5))?;
        Ok(Self { channel })
    }

    fn admin(&self) -> RegistryAdminClient<Channel> {
        RegistryAdminClient::new(self.channel.clone())
    }

    fn registry(&self) -> RegistryClient<Channel> {
        RegistryClient::new(self.channel.clone())
    }
}

async fn enrol(conn: &Connection, args: EnrolArgs, json: bool) -> anyhow::Result<()> {
    let key_text = if Path::new(&args.signing_key).is_file() {
        std::fs::read_to_string(&args.signing_key)?
    } else {
        args.signing_key.clone()
    };
    let signing_key = hex::decode(key_text.trim())
        .context("--signing-key: must be 64 hex digits or a file holding them")?;
    let (csr_pem, key_pem) = match &args.csr {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            None,
        ),
        None => {
            let key = tls::generate_key()?;
            (tls::make_csr(&key, &args.id)?, Some(key))
        }
    };
    let resp = conn
        .admin()
        .enrol(EnrolRequest {
            id: args.id.clone(),
            display_name: args.name,
            level: Level::from(args.level) as i32,
            territory: args.territory,
            endpoint: args.endpoint,
            signing_key,
            csr_pem,
        })
        .await?
        .into_inner();
    std::fs::create_dir_all(&args.out)?;
    let files = TlsFiles::in_dir(&args.out);
    match key_pem {
        Some(key_pem) => files.save(&TlsMaterial {
            cert_pem: resp.certificate_pem.clone(),
            key_pem,
            ca_pem: resp.ca_pem.clone(),
        })?,
        None => {
            tls::write_atomic(&files.cert, resp.certificate_pem.as_bytes(), false)?;
            tls::write_atomic(&files.ca, resp.ca_pem.as_bytes(), false)?;
        }
    }
    if json {
        print_json("urpnet.v1.EnrolResponse", &resp);
    } else {
        let issued = resp.issued.unwrap_or_default();
        println!(
            "enrolled {} — certificate {} valid until {}, written to {}",
            args.id,
            issued.serial,
            time_ms(issued.not_after_ms),
            args.out.display()
        );
        println!("copy cert.pem and ca.pem (and key.pem if written) into the node's tls directory");
    }
    Ok(())
}

async fn set_status(
    conn: &Connection,
    id: String,
    status: MemberStatus,
    reason: String,
    json: bool,
) -> anyhow::Result<()> {
    let resp = conn
        .admin()
        .set_status(SetStatusRequest {
            id,
            status: status as i32,
            reason,
        })
        .await?
        .into_inner();
    if json {
        print_json("urpnet.v1.MemberResponse", &resp);
    } else {
        print_member(&resp);
    }
    Ok(())
}

fn comune_code(text: &str) -> anyhow::Result<String> {
    if text.len() == 6 && text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(text.to_owned());
    }
    let folded = urpnet_proto::text::fold(text);
    let found: Vec<_> = Territory::italy()
        .comuni()
        .filter(|c| urpnet_proto::text::fold(&c.name) == folded)
        .collect();
    match found.as_slice() {
        [one] => Ok(one.istat_code.clone()),
        [] => bail!("no comune is named `{text}`; give its 6-digit ISTAT code"),
        many => bail!(
            "`{text}` names {} comuni ({}); give the ISTAT code",
            many.len(),
            many.iter()
                .map(|c| format!("{} {}", c.istat_code, c.province_abbr))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn print_json(name: &str, message: &impl prost::Message) {
    println!(
        "{}",
        serde_json::to_string_pretty(&to_json(name, message)).expect("json")
    );
}

fn status_name(status: i32) -> &'static str {
    match MemberStatus::try_from(status) {
        Ok(MemberStatus::Active) => "active",
        Ok(MemberStatus::Suspended) => "suspended",
        Ok(MemberStatus::Revoked) => "revoked",
        _ => "?",
    }
}

fn health_name(health: i32) -> &'static str {
    match Health::try_from(health) {
        Ok(Health::Reachable) => "reachable",
        Ok(Health::Unreachable) => "unreachable",
        _ => "unknown",
    }
}

fn level_of(member: &Member) -> &'static str {
    level_name(Level::try_from(member.level).unwrap_or(Level::Unspecified))
}

fn load_text(member: &Member) -> String {
    member.load.as_ref().map_or("-".into(), |l| {
        format!(
            "{} open, {} waiting, {}/h, {} operators",
            l.open_tickets, l.queue_waiting, l.capacity_per_hour, l.operators_on_duty
        )
    })
}

/// The members table of `members list`.
pub fn members_table(members: &[Member]) -> comfy_table::Table {
    let mut t = table();
    t.set_header([
        "id",
        "name",
        "level",
        "status",
        "health",
        "last heartbeat",
        "load",
    ]);
    for m in members {
        t.add_row([
            m.id.clone(),
            m.display_name.clone(),
            level_of(m).to_owned(),
            status_name(m.status).to_owned(),
            health_name(m.health).to_owned(),
            time_ms(m.last_heartbeat_ms),
            load_text(m),
        ]);
    }
    t
}

fn print_members(members: &[Member]) {
    println!("{}", members_table(members));
}

/// A routing decision as `route` prints it.
pub fn route_text(resp: &urpnet_proto::v1::RouteResponse) -> String {
    let m = resp.member.clone().unwrap_or_default();
    let mut t = table();
    t.set_header(["considered", "reason"]);
    for c in &resp.considered {
        t.add_row([c.member_id.clone(), c.reason.clone()]);
    }
    format!(
        "route to {} ({}){}\nwhy: {}\n{t}",
        m.id,
        m.display_name,
        if resp.fallback { "  [fallback]" } else { "" },
        resp.reason
    )
}

/// An overflow answer as `overflow` prints it.
pub fn overflow_text(resp: &urpnet_proto::v1::OverflowResponse) -> String {
    let mut t = table();
    t.set_header(["rank", "member", "name", "spare/h", "why"]);
    for (i, c) in resp.candidates.iter().enumerate() {
        let m = c.member.clone().unwrap_or_default();
        t.add_row([
            (i + 1).to_string(),
            m.id,
            m.display_name,
            c.spare.to_string(),
            c.reason.clone(),
        ]);
    }
    format!("{t}\n{}", resp.reason)
}

fn print_member(resp: &urpnet_proto::v1::MemberResponse) {
    let m = resp.member.clone().unwrap_or_default();
    let mut t = table();
    let territory = m
        .territory
        .iter()
        .map(|code| territory_name(code))
        .collect::<Vec<_>>()
        .join(", ");
    for (k, v) in [
        ("id", m.id.clone()),
        ("name", m.display_name.clone()),
        ("level", level_of(&m).to_owned()),
        (
            "territory",
            if territory.is_empty() {
                "Italia".into()
            } else {
                territory
            },
        ),
        ("endpoint", m.endpoint.clone()),
        ("signing key", hex::encode(&m.signing_key)),
        (
            "status",
            format!("{} {}", status_name(m.status), m.status_reason),
        ),
        ("enrolled", time_ms(m.enrolled_at_ms)),
        ("health", health_name(m.health).to_owned()),
        ("last heartbeat", time_ms(m.last_heartbeat_ms)),
        ("load", load_text(&m)),
        (
            "overflow accepted",
            m.load
                .as_ref()
                .map(|l| l.overflow_categories.join(", "))
                .unwrap_or_default(),
        ),
    ] {
        t.add_row([k.to_owned(), v]);
    }
    println!("{t}");
    if !resp.certificates.is_empty() {
        let mut c = table();
        c.set_header(["certificate", "valid from", "valid until"]);
        for cert in &resp.certificates {
            c.add_row([
                cert.serial.clone(),
                time_ms(cert.not_before_ms),
                time_ms(cert.not_after_ms),
            ]);
        }
        println!("{c}");
    }
}

fn territory_name(code: &str) -> String {
    let italy = Territory::italy();
    let name = match code.len() {
        6 => italy.comune(code).map(|c| c.name.clone()),
        3 => italy
            .comuni()
            .find(|c| c.province_code == code)
            .map(|c| format!("provincia di {}", c.province_name)),
        2 => italy
            .comuni()
            .find(|c| c.region_code == code)
            .map(|c| c.region_name.clone()),
        _ => None,
    };
    match name {
        Some(n) => format!("{code} {n}"),
        None => code.to_owned(),
    }
}

fn print_taxonomy(t: &Taxonomy) {
    let mut table = table();
    table.set_header(["code", "label", "competent level", "body"]);
    for c in &t.categories {
        table.add_row([
            c.code.clone(),
            c.label.clone(),
            level_name(Level::try_from(c.level).unwrap_or(Level::Unspecified)).to_owned(),
            c.competent_body.clone(),
        ]);
    }
    println!("{table}");
    println!(
        "taxonomy version {} ({} categories)",
        t.version,
        t.categories.len()
    );
}
