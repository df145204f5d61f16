//! The `urpnet-node` command line: the daemon (`init`, `serve`) and the
//! operators' commands, which talk to a running node's Desk over gRPC
//! (`ticket ...`) or work on the local data directory (`operator ...`,
//! `check`).

pub mod appointments;
pub mod archive;
pub mod charter;
pub mod faq;
pub mod output;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use urpnet_proto::ids::NodeId;
use urpnet_proto::v1::desk_client::DeskClient;
use urpnet_proto::v1::faq_desk_client::FaqDeskClient;
use urpnet_proto::v1::{
    AddNoteRequest, AnswerHandoffRequest, AssignTicketRequest, AttachmentUpload,
    ChangeStatusRequest, CitizenContact, Consent, Coordinates, CreateTicketRequest,
    GetHistoryRequest, GetTicketRequest, HandoffRequest, ListOffersRequest, ListPeersRequest,
    ListTicketsRequest, Location, SetPeerQuarantineRequest, ShareTicketRequest, Ticket,
};

use crate::auth::Role;
use crate::config::NodeConfig;
use crate::server::{self, Listeners, paths};
use crate::shared_ticket::names;

/// urpnet-node: a public body's node in the urpnet federation of
/// public-relations offices (URP).
///
/// Start with `urpnet-node init --id <IPA code>`, then `urpnet-node serve`.
/// Operators work tickets with `urpnet-node ticket ...` against the running
/// node; the token comes from --token, URPNET_TOKEN, or the data directory's
/// operator.token written by init.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "URPNET_CONFIG",
        default_value = "urpnet.toml"
    )]
    pub config: PathBuf,
    /// Print JSON (canonical proto3 mapping) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented configuration file and prepare the data directory
    /// (signing key, database, a first supervisor token).
    Init(InitArgs),
    /// Run the node until SIGINT or SIGTERM.
    Serve,
    /// Work tickets on a running node (Desk API).
    #[command(subcommand)]
    Ticket(Box<TicketCommand>),
    /// Manage Desk credentials (local: needs the data directory).
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Notices to citizens (local: reads the data directory's database).
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// A citizen's rights: export or erase their data (local: needs the data
    /// directory; every action is audited without personal data).
    #[command(subcommand)]
    Citizen(CitizenCommand),
    /// List the categories this node accepts: the registry's taxonomy as
    /// last received, or the built-in one when the node runs alone.
    Taxonomy,
    /// The federation's members as this node last received them from the
    /// registry (local: reads the data directory's cache).
    Members,
    /// Delivery to each peer: reachable, outbox depth, lag, last error;
    /// quarantine or release a peer.
    Peers {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// What to do (default: show delivery to each peer).
        #[command(subcommand)]
        action: Option<PeersAction>,
    },
    /// Re-fold every ticket's events and compare with the stored state
    /// (local: needs the data directory).
    Check,
    /// Write a consistent backup of the data directory to one file while
    /// the node serves: a snapshot of the SQLite database, the signing key,
    /// secrets, certificate, registry cache and attachments (with
    /// PostgreSQL, back the database up with `pg_dump`: see the operations
    /// guide). The file holds the signing key: keep it as you keep the key.
    Backup {
        /// The file to write (a gzip'd tar, mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Put a backup back into the data directory of a stopped node; when it
    /// starts, its peers' anti-entropy brings back what happened since.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing database (kept as `*.before-restore`).
        #[arg(long)]
        force: bool,
    },
    /// The shared FAQ set: search, suggest answers for a ticket, publish,
    /// revise, retire, propose changes, local overrides.
    Faq {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// What to do.
        #[command(subcommand)]
        action: Box<faq::FaqCommand>,
    },
    /// The service charter (offices, hours, services): import from TOML or
    /// CSV, show, search, explain a service, history, export, door signs.
    Charter {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// What to do.
        #[command(subcommand)]
        action: Box<charter::CharterCommand>,
    },
    /// Appointments (Sportello virtuale): booking plans, free slots, book
    /// for a caller here or at another body, move, cancel, the day's
    /// agenda, attended or no-show.
    Appointments {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// What to do.
        #[command(subcommand)]
        action: Box<appointments::AppointmentsCommand>,
    },
    /// The anonymised archive of closed tickets: what was made and sent to
    /// the registry; push now.
    Archive {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// What to do.
        #[command(subcommand)]
        action: archive::ArchiveCommand,
    },
}

/// Peer commands (supervisors).
#[derive(Debug, Subcommand)]
pub enum PeersAction {
    /// Quarantine a peer: its calls are refused, items for it are held, its
    /// events relayed by others are held back. Reversible.
    Quarantine {
        /// Peer node id.
        peer: String,
        /// Why (recorded and shown).
        #[arg(long)]
        reason: String,
    },
    /// Release a quarantined peer; held items are delivered at once.
    Release {
        /// Peer node id.
        peer: String,
    },
}

/// `init` options.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The body's IPA code, lowercase (c_a662 = Comune di Bari).
    #[arg(long)]
    pub id: NodeId,
    /// Display name; defaults to "Comune di <name>" for a comune's IPA code.
    #[arg(long)]
    pub name: Option<String>,
    /// Data directory (default: ./data beside the config file).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Overwrite an existing configuration file.
    #[arg(long)]
    pub force: bool,
}

/// How to reach the node.
#[derive(Debug, Args, Clone)]
pub struct Connection {
    /// Desk endpoint (default: desk.listen of the config file).
    #[arg(long, env = "URPNET_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Bearer token (default: the data directory's operator.token).
    #[arg(long, env = "URPNET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Ticket commands.
#[derive(Debug, Subcommand)]
pub enum TicketCommand {
    /// Open a ticket.
    Create {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// Category code (see `urpnet-node taxonomy`).
        #[arg(long)]
        category: String,
        /// Channel: app, web, chat, email, pec, phone, desk, social, video, open311.
        #[arg(long, default_value = "desk")]
        channel: String,
        /// One-line summary.
        #[arg(long)]
        subject: String,
        /// The request in the citizen's words.
        #[arg(long, default_value = "")]
        description: String,
        /// ISTAT code of the comune concerned (e.g. 072006 for Bari).
        #[arg(long)]
        istat: String,
        /// Street address.
        #[arg(long, default_value = "")]
        address: String,
        /// Latitude (with --lon).
        #[arg(long, requires = "lon", allow_hyphen_values = true)]
        lat: Option<f64>,
        /// Longitude (with --lat).
        #[arg(long, requires = "lat", allow_hyphen_values = true)]
        lon: Option<f64>,
        /// low, normal, high, urgent.
        #[arg(long, default_value = "normal")]
        priority: String,
        /// File to attach (repeatable); the media type is guessed from the extension.
        #[arg(long = "attach")]
        attachments: Vec<PathBuf>,
        /// Citizen's full name.
        #[arg(long)]
        citizen_name: Option<String>,
        /// Citizen's e-mail.
        #[arg(long)]
        citizen_email: Option<String>,
        /// Citizen's phone.
        #[arg(long)]
        citizen_phone: Option<String>,
        /// The citizen consents to their contact going to the competent body.
        #[arg(long)]
        consent_share: bool,
        /// Idempotency key (default: a new one); reuse it to retry safely.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show one ticket, by id or reference.
    Show {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// Ticket id (ULID) or reference (c_a662-2026-000001).
        ticket: String,
    },
    /// List tickets, newest first.
    List {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// Only this status (repeatable).
        #[arg(long)]
        status: Vec<String>,
        /// Only this category (and its sub-categories).
        #[arg(long)]
        category: Option<String>,
        /// Only this office.
        #[arg(long)]
        office: Option<String>,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only this territory: ISTAT comune (6 digits), province (3) or region (2).
        #[arg(long)]
        territory: Option<String>,
        /// Only tickets containing these words.
        #[arg(long)]
        text: Option<String>,
        /// Only tickets changed since: an RFC 3339 time or an age like 2h, 7days.
        #[arg(long)]
        updated_since: Option<String>,
        /// Most tickets to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Add a note.
    Note {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// Ticket id or reference.
        ticket: String,
        /// The text.
        text: String,
        /// A public note, meant for the citizen (default: internal).
        #[arg(long)]
        public: bool,
    },
    /// Change status: new, assigned, in_progress, waiting_citizen, resolved,
    /// closed, rejected, merged.
    Status {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// Ticket id or reference.
        ticket: String,
        /// The new status.
        status: String,
        /// Why (required for rejected).
        #[arg(long, default_value = "")]
        reason: String,
        /// For merged: the ticket (id or reference) this one duplicates.
        #[arg(long)]
        merged_into: Option<String>,
    },
    /// Assign to an office of this body.
    Assign {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// Ticket id or reference.
        ticket: String,
        /// Office code, e.g. ufficio-tributi.
        office: String,
    },
    /// Show the full history (every event and its effect).
    History {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// Ticket id or reference.
        ticket: String,
    },
    /// Offer the ticket to another body. Without --to the registry names the
    /// competent body (Route); with --overflow, a peer with spare capacity.
    /// Ownership moves only when the other body accepts.
    Handoff {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// Ticket id or reference.
        ticket: String,
        /// The body to offer it to (node id, e.g. r_abruzz).
        #[arg(long)]
        to: Option<String>,
        /// Why that body is competent (default: the registry's reason).
        #[arg(long, default_value = "")]
        reason: String,
        /// Ask the registry for a peer with spare capacity instead.
        #[arg(long, conflicts_with = "to")]
        overflow: bool,
    },
    /// Accept the offer pending for this node: it becomes the owner.
    Accept {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// Ticket id or reference.
        ticket: String,
    },
    /// Decline the offer pending for this node; it stays with the offering body.
    Decline {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// Ticket id or reference.
        ticket: String,
        /// Why (shown to the offering office).
        #[arg(long)]
        reason: String,
    },
    /// Share the ticket read-only with another body.
    Share {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
        /// Ticket id or reference.
        ticket: String,
        /// The body (node id).
        with: String,
    },
    /// The inbox: offers made to this node, and offers it made, not yet answered.
    Offers {
        /// How to reach the node.
        #[command(flatten)]
        conn: Connection,
    },
}

/// Operator credential commands.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Create a credential and print its token (shown once).
    Add {
        /// Name, e.g. maria.rossi or chatbot.
        name: String,
        /// read_only, integration, operator, supervisor.
        #[arg(long, default_value = "operator")]
        role: Role,
    },
    /// List credentials.
    List,
    /// Revoke a credential (takes effect within seconds).
    Revoke {
        /// Name.
        name: String,
    },
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command fails with, as a message for people.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = NodeConfig::process_env();
    match cli.command {
        Command::Init(args) => init(&cli.config, args, cli.json).await,
        Command::Serve => serve(&cli.config, &env).await,
        Command::Ticket(cmd) => ticket(&cli.config, &env, *cmd, cli.json).await,
        Command::Operator(cmd) => operator(&cli.config, &env, cmd, cli.json).await,
        Command::Notify(NotifyCommand::Status) => notify_status(&cli.config, &env, cli.json).await,
        Command::Citizen(cmd) => citizen(&cli.config, &env, cmd, cli.json).await,
        Command::Members => members(&cli.config, &env, cli.json),
        Command::Peers { conn, action } => {
            let mut desk = desk_from(&cli.config, &env, &conn).await?;
            if let Some(action) = action {
                let (peer, quarantine, reason) = match action {
                    PeersAction::Quarantine { peer, reason } => (peer, true, reason),
                    PeersAction::Release { peer } => (peer, false, String::new()),
                };
                desk.set_peer_quarantine(SetPeerQuarantineRequest {
                    peer: peer.clone(),
                    quarantine,
                    reason,
                })
                .await
                .map_err(status_error)?;
                println!(
                    "{peer} {}",
                    if quarantine {
                        "quarantined"
                    } else {
                        "released"
                    }
                );
                return Ok(());
            }
            let r = desk
                .list_peers(ListPeersRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if cli.json {
                println!("{}", output::to_json("urpnet.v1.ListPeersResponse", &r));
            } else {
                println!("{}", output::peers_table(&r.peers));
            }
            Ok(())
        }
        Command::Taxonomy => {
            taxonomy(&cli.config, &env, cli.json);
            Ok(())
        }
        Command::Check => check(&cli.config, &env).await,
        Command::Backup { out } => backup(&cli.config, &env, &out, cli.json),
        Command::Restore { from, force } => restore(&cli.config, &env, &from, force, cli.json),
        Command::Faq { conn, action } => {
            let (channel, token, max) = connect_parts(&cli.config, &env, &conn).await?;
            let client = FaqDeskClient::with_interceptor(channel, token)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            faq::run(client, *action, cli.json).await
        }
        Command::Charter { conn, action } => {
            let (channel, token, max) = connect_parts(&cli.config, &env, &conn).await?;
            let client =
                urpnet_proto::v1::charter_desk_client::CharterDeskClient::with_interceptor(
                    channel, token,
                )
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            charter::run(client, *action, cli.json).await
        }
        Command::Appointments { conn, action } => {
            let (channel, token, max) = connect_parts(&cli.config, &env, &conn).await?;
            let client =
                urpnet_proto::v1::appointment_desk_client::AppointmentDeskClient::with_interceptor(
                    channel, token,
                )
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            appointments::run(client, *action, cli.json).await
        }
        Command::Archive { conn, action } => {
            let (channel, token, max) = connect_parts(&cli.config, &env, &conn).await?;
            let client =
                urpnet_proto::v1::archive_desk_client::ArchiveDeskClient::with_interceptor(
                    channel, token,
                )
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            archive::run(client, action, cli.json).await
        }
    }
}

async fn init(config_path: &Path, args: InitArgs, json: bool) -> anyhow::Result<()> {
    if config_path.exists() && !args.force {
        bail!(
            "{} already exists (use --force to overwrite it)",
            config_path.display()
        );
    }
    let name = args.name.unwrap_or_else(|| {
        urpnet_proto::territory::Territory::italy()
            .comune_by_ipa(args.id.as_str())
            .map(|c| format!("Comune di {}", c.name))
            .unwrap_or_else(|| args.id.to_string())
    });
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from("data"));
    if let Some(parent) = config_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let text = NodeConfig::template(&args.id, &name, &data_dir);
    std::fs::write(config_path, text)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let config = NodeConfig::load(config_path, &BTreeMap::new())?;
    let token = server::initialise(&config).await?;
    let token_file = paths::operator_token(&config.node.data_dir);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "config": config_path, "node": config.node.id.as_str(), "name": name,
                "data_dir": config.node.data_dir, "token_file": token_file, "token": token,
                "signing_key_file": paths::signing_public(&config.node.data_dir),
                "csr_file": config.tls_dir().join("request.csr"),
            })
        );
    } else {
        println!(
            "wrote {} for {} ({name})",
            config_path.display(),
            config.node.id
        );
        println!("data directory: {}", config.node.data_dir.display());
        match token {
            Some(_) => println!(
                "supervisor token for `admin` saved in {} (mode 0600)",
                token_file.display()
            ),
            None => println!("kept the existing operators and key"),
        }
        println!(
            "to join a federation, send the coordinator {} and {} (see docs/operations.md §8)",
            paths::signing_public(&config.node.data_dir).display(),
            config.tls_dir().join("request.csr").display()
        );
        println!("next: urpnet-node --config {} serve", config_path.display());
    }
    Ok(())
}

async fn serve(config_path: &Path, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path, env)?;
    urpnet_proto::telemetry::init_logs(config.log.format, &config.log.filter);
    let listeners = Listeners::bind(&config)
        .await
        .with_context(|| format!("binding {} / {}", config.desk.listen, config.metrics.listen))?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        urpnet_proto::telemetry::shutdown_signal().await;
        tracing::info!("shutdown requested");
        signal.cancel();
    });
    server::run(config, listeners, shutdown).await?;
    Ok(())
}

/// A Desk client that sends the bearer token with every call.
pub type Desk = DeskClient<InterceptedService<Channel, TokenInterceptor>>;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Debug, Clone)]
pub struct TokenInterceptor(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Connects to a node's Desk.
///
/// # Errors
/// A bad endpoint or token, or a node that does not answer.
pub async fn connect(
    endpoint: &str,
    token: &str,
    max_message_bytes: usize,
) -> anyhow::Result<Desk> {
    let (channel, token) = channel_with_token(endpoint, token).await?;
    Ok(DeskClient::with_interceptor(channel, token)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes))
}

/// A channel to a node's Desk port and the interceptor adding the token.
///
/// # Errors
/// A bad endpoint or token, or a node that does not answer.
pub async fn channel_with_token(
    endpoint: &str,
    token: &str,
) -> anyhow::Result<(Channel, TokenInterceptor)> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let channel = Endpoint::from_shared(url.clone())
        .with_context(|| format!("bad endpoint {endpoint}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| {
            format!("cannot reach the node at {url} (is `urpnet-node serve` running?)")
        })?;
    let value: MetadataValue<_> = format!("Bearer {}", token.trim())
        .parse()
        .context("the token has characters not allowed in a header")?;
    Ok((channel, TokenInterceptor(value)))
}

async fn desk_from(
    config_path: &Path,
    env: &BTreeMap<String, String>,
    conn: &Connection,
) -> anyhow::Result<Desk> {
    let (channel, token, max) = connect_parts(config_path, env, conn).await?;
    Ok(DeskClient::with_interceptor(channel, token)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}

/// The channel, token and message limit for `conn`, from the flags or the
/// configuration file.
async fn connect_parts(
    config_path: &Path,
    env: &BTreeMap<String, String>,
    conn: &Connection,
) -> anyhow::Result<(Channel, TokenInterceptor, usize)> {
    let config = NodeConfig::load(config_path, env);
    let endpoint = match (&conn.endpoint, &config) {
        (Some(e), _) => e.clone(),
        (None, Ok(c)) => c.desk.listen.to_string(),
        (None, Err(e)) => bail!("{e}; or give --endpoint"),
    };
    let token = match (&conn.token, &config) {
        (Some(t), _) => t.clone(),
        (None, Ok(c)) => {
            let path = paths::operator_token(&c.node.data_dir);
            std::fs::read_to_string(&path).with_context(|| {
                format!("reading the token from {}; or give --token", path.display())
            })?
        }
        (None, Err(e)) => bail!("{e}; or give --token"),
    };
    let max = config
        .map(|c| c.desk.max_message_bytes)
        .unwrap_or(16 * 1024 * 1024);
    let (channel, token) = channel_with_token(&endpoint, &token).await?;
    Ok((channel, token, max))
}

pub(crate) fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

/// Finds a ticket's id from an id or a reference.
async fn resolve(desk: &mut Desk, ticket: &str) -> anyhow::Result<String> {
    if urpnet_proto::ids::TicketId::parse(ticket).is_ok() {
        return Ok(ticket.to_string());
    }
    let found = desk
        .get_ticket(GetTicketRequest {
            ticket_id: String::new(),
            reference: ticket.to_string(),
        })
        .await
        .map_err(status_error)?;
    Ok(found.into_inner().ticket.map(|t| t.id).unwrap_or_default())
}

fn print_ticket(ticket: &Ticket, json: bool) {
    if json {
        println!("{}", output::to_json("urpnet.v1.Ticket", ticket));
    } else {
        println!("{}", output::ticket_detail(ticket, None));
    }
}

fn parse_enum<T>(
    field: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
    all: fn() -> Vec<String>,
) -> anyhow::Result<T> {
    parse(value)
        .ok_or_else(|| anyhow::anyhow!("--{field}: `{value}` is not one of {}", all().join(", ")))
}

fn media_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("pdf") => "application/pdf",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("txt") => "text/plain",
        Some("odt") => "application/vnd.oasis.opendocument.text",
        Some("p7m") => "application/pkcs7-mime",
        _ => "application/octet-stream",
    }
}

fn parse_since(value: &str) -> anyhow::Result<prost_types::Timestamp> {
    let at = humantime::parse_rfc3339_weak(value).or_else(|_| {
        humantime::parse_duration(value).map(|age| std::time::SystemTime::now() - age)
    });
    let at = at.map_err(|_| {
        anyhow::anyhow!("--updated-since: `{value}` is neither an RFC 3339 time nor an age like 2h")
    })?;
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    Ok(crate::shared_ticket::fold::timestamp(ms))
}

async fn ticket(
    config_path: &Path,
    env: &BTreeMap<String, String>,
    cmd: TicketCommand,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        TicketCommand::Create {
            conn,
            category,
            channel,
            subject,
            description,
            istat,
            address,
            lat,
            lon,
            priority,
            attachments,
            citizen_name,
            citizen_email,
            citizen_phone,
            consent_share,
            request_id,
        } => {
            let channel = parse_enum(
                "channel",
                &channel,
                names::parse_channel,
                names::channel_names,
            )?;
            let priority = parse_enum(
                "priority",
                &priority,
                names::parse_priority,
                names::priority_names,
            )?;
            let mut uploads = Vec::new();
            for path in &attachments {
                let content =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                uploads.push(AttachmentUpload {
                    file_name,
                    media_type: media_type(path).into(),
                    content,
                });
            }
            let citizen =
                (citizen_name.is_some() || citizen_email.is_some() || citizen_phone.is_some())
                    .then(|| CitizenContact {
                        full_name: citizen_name.unwrap_or_default(),
                        email: citizen_email.unwrap_or_default(),
                        phone: citizen_phone.unwrap_or_default(),
                        fiscal_code: String::new(),
                    });
            let request = CreateTicketRequest {
                request_id: request_id.unwrap_or_else(|| format!("cli-{}", ulid::Ulid::new())),
                category,
                channel: channel as i32,
                subject,
                description,
                location: Some(Location {
                    istat_code: istat,
                    address,
                    coordinates: lat.zip(lon).map(|(latitude, longitude)| Coordinates {
                        latitude,
                        longitude,
                    }),
                }),
                attachments: uploads,
                priority: priority as i32,
                consent: Some(Consent {
                    share_with_competent_body: consent_share,
                    contact_for_updates: citizen.is_some(),
                }),
                citizen,
                due_at: None,
                answers: Vec::new(),
            };
            let mut desk = desk_from(config_path, env, &conn).await?;
            let created = desk
                .create_ticket(request)
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    output::to_json("urpnet.v1.CreateTicketResponse", &created)
                );
            } else {
                let ticket = created.ticket.unwrap_or_default();
                let verb = if created.replayed {
                    "already created (same request id)"
                } else {
                    "created"
                };
                println!("{} {verb}", ticket.reference);
                println!("{}", output::ticket_detail(&ticket, None));
                if !created.possible_duplicates.is_empty() {
                    println!("{}", output::duplicates_table(&created.possible_duplicates));
                }
            }
        }
        TicketCommand::Show { conn, ticket } => {
            let mut desk = desk_from(config_path, env, &conn).await?;
            let request = if urpnet_proto::ids::TicketId::parse(&ticket).is_ok() {
                GetTicketRequest {
                    ticket_id: ticket,
                    reference: String::new(),
                }
            } else {
                GetTicketRequest {
                    ticket_id: String::new(),
                    reference: ticket,
                }
            };
            let found = desk
                .get_ticket(request)
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!("{}", output::to_json("urpnet.v1.GetTicketResponse", &found));
            } else {
                println!(
                    "{}",
                    output::ticket_detail(
                        &found.ticket.unwrap_or_default(),
                        found.citizen.as_ref()
                    )
                );
            }
        }
        TicketCommand::List {
            conn,
            status,
            category,
            office,
            channel,
            territory,
            text,
            updated_since,
            limit,
        } => {
            let statuses = status
                .iter()
                .map(|s| {
                    parse_enum("status", s, names::parse_status, names::status_names)
                        .map(|s| s as i32)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let channel = channel
                .map(|c| {
                    parse_enum("channel", &c, names::parse_channel, names::channel_names)
                        .map(|c| c as i32)
                })
                .transpose()?
                .unwrap_or(0);
            let mut request = ListTicketsRequest {
                statuses,
                category: category.unwrap_or_default(),
                office: office.unwrap_or_default(),
                channel,
                territory: territory.unwrap_or_default(),
                text: text.unwrap_or_default(),
                updated_since: updated_since.as_deref().map(parse_since).transpose()?,
                page_size: limit.min(500),
                page_token: String::new(),
            };
            let mut desk = desk_from(config_path, env, &conn).await?;
            let mut tickets = Vec::new();
            loop {
                let page = desk
                    .list_tickets(request.clone())
                    .await
                    .map_err(status_error)?
                    .into_inner();
                tickets.extend(page.tickets);
                if page.next_page_token.is_empty() || tickets.len() >= limit as usize {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            tickets.truncate(limit as usize);
            if json {
                let list: Vec<_> = tickets
                    .iter()
                    .map(|t| output::to_json("urpnet.v1.Ticket", t))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!("{}", output::tickets_table(&tickets));
                println!("{} ticket(s)", tickets.len());
            }
        }
        TicketCommand::Note {
            conn,
            ticket,
            text,
            public,
        } => {
            let mut desk = desk_from(config_path, env, &conn).await?;
            let ticket_id = resolve(&mut desk, &ticket).await?;
            let r = desk
                .add_note(AddNoteRequest {
                    ticket_id,
                    public,
                    text,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_ticket(&r.ticket.unwrap_or_default(), json);
        }
        TicketCommand::Status {
            conn,
            ticket,
            status,
            reason,
            merged_into,
        } => {
            let to = parse_enum("status", &status, names::parse_status, names::status_names)?;
            let mut desk = desk_from(config_path, env, &conn).await?;
            let ticket_id = resolve(&mut desk, &ticket).await?;
            let merged_into = match merged_into {
                Some(m) => resolve(&mut desk, &m).await?,
                None => String::new(),
            };
            let r = desk
                .change_status(ChangeStatusRequest {
                    ticket_id,
                    status: to as i32,
                    reason,
                    merged_into,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_ticket(&r.ticket.unwrap_or_default(), json);
        }
        TicketCommand::Assign {
            conn,
            ticket,
            office,
        } => {
            let mut desk = desk_from(config_path, env, &conn).await?;
            let ticket_id = resolve(&mut desk, &ticket).await?;
            let r = desk
                .assign_ticket(AssignTicketRequest { ticket_id, office })
                .await
                .map_err(status_error)?
                .into_inner();
            print_ticket(&r.ticket.unwrap_or_default(), json);
        }
        TicketCommand::History { conn, ticket } => {
            let mut desk = desk_from(config_path, env, &conn).await?;
            let ticket_id = resolve(&mut desk, &ticket).await?;
            let h = desk
                .get_history(GetHistoryRequest { ticket_id })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!("{}", output::to_json("urpnet.v1.GetHistoryResponse", &h));
            } else {
                println!("{}", output::history_table(&h.entries));
            }
        }
        TicketCommand::Handoff {
            conn,
            ticket,
            to,
            reason,
            overflow,
        } => {
            let mut desk = desk_from(config_path, env, &conn).await?;
            let ticket_id = resolve(&mut desk, &ticket).await?;
            let r = desk
                .handoff(HandoffRequest {
                    ticket_id,
                    to_node: to.unwrap_or_default(),
                    reason,
                    overflow,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!("{}", output::to_json("urpnet.v1.HandoffResponse", &r));
            } else {
                println!("offered to {} ({})", r.to_node, r.decided_by);
                print_ticket(&r.ticket.unwrap_or_default(), false);
            }
        }
        TicketCommand::Accept { conn, ticket } => {
            let mut desk = desk_from(config_path, env, &conn).await?;
            let ticket_id = resolve(&mut desk, &ticket).await?;
            let r = desk
                .accept_handoff(AnswerHandoffRequest {
                    ticket_id,
                    reason: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_ticket(&r.ticket.unwrap_or_default(), json);
        }
        TicketCommand::Decline {
            conn,
            ticket,
            reason,
        } => {
            let mut desk = desk_from(config_path, env, &conn).await?;
            let ticket_id = resolve(&mut desk, &ticket).await?;
            let r = desk
                .decline_handoff(AnswerHandoffRequest { ticket_id, reason })
                .await
                .map_err(status_error)?
                .into_inner();
            print_ticket(&r.ticket.unwrap_or_default(), json);
        }
        TicketCommand::Share { conn, ticket, with } => {
            let mut desk = desk_from(config_path, env, &conn).await?;
            let ticket_id = resolve(&mut desk, &ticket).await?;
            let r = desk
                .share_ticket(ShareTicketRequest {
                    ticket_id,
                    with_node: with,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_ticket(&r.ticket.unwrap_or_default(), json);
        }
        TicketCommand::Offers { conn } => {
            let mut desk = desk_from(config_path, env, &conn).await?;
            // Every page of both lists.
            let mut r = desk
                .list_offers(ListOffersRequest::default())
                .await
                .map_err(status_error)?
                .into_inner();
            while !r.next_incoming_page_token.is_empty() || !r.next_outgoing_page_token.is_empty() {
                let more = desk
                    .list_offers(ListOffersRequest {
                        page_size: 0,
                        incoming_page_token: std::mem::take(&mut r.next_incoming_page_token),
                        outgoing_page_token: std::mem::take(&mut r.next_outgoing_page_token),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                r.incoming.extend(more.incoming);
                r.outgoing.extend(more.outgoing);
                r.next_incoming_page_token = more.next_incoming_page_token;
                r.next_outgoing_page_token = more.next_outgoing_page_token;
            }
            if json {
                println!("{}", output::to_json("urpnet.v1.ListOffersResponse", &r));
            } else {
                println!(
                    "Offered to this node:\n{}",
                    output::offers_table(&r.incoming)
                );
                println!(
                    "Offered by this node, not yet answered:\n{}",
                    output::offers_table(&r.outgoing)
                );
            }
        }
    }
    Ok(())
}

/// Who a citizen request is about: at least one of the three.
#[derive(Debug, Args)]
pub struct SubjectArgs {
    /// The citizen's e-mail address.
    #[arg(long)]
    email: Option<String>,
    /// The citizen's phone number, as recorded.
    #[arg(long)]
    phone: Option<String>,
    /// The citizen's fiscal code.
    #[arg(long)]
    fiscal_code: Option<String>,
}

impl From<SubjectArgs> for crate::privacy::Subject {
    fn from(a: SubjectArgs) -> Self {
        Self {
            email: a.email,
            phone: a.phone,
            fiscal_code: a.fiscal_code,
        }
    }
}

/// `urpnet-node citizen ...`.
#[derive(Debug, Subcommand)]
pub enum CitizenCommand {
    /// Everything held about a citizen (contacts, their tickets, the public
    /// answers) as JSON, to hand over on an access request.
    Export {
        /// Who the request is about.
        #[command(flatten)]
        subject: SubjectArgs,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Who asks (recorded in the audit).
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Erase a citizen's contact from every ticket filed with it, here and
    /// at every body it was passed to (they delete their copy when the
    /// erasure event reaches them). Tickets stay, anonymous.
    Erase {
        /// Who the request is about.
        #[command(flatten)]
        subject: SubjectArgs,
        /// Confirm: erasure cannot be undone.
        #[arg(long)]
        yes: bool,
        /// Who asks (recorded in the audit).
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// The latest exports, erasures and purges (no personal data).
    Audit,
}

async fn citizen(
    config_path: &Path,
    env: &BTreeMap<String, String>,
    cmd: CitizenCommand,
    json: bool,
) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path, env)?;
    let (desk, store, writer) = local_desk(config).await?;
    let desk = std::sync::Arc::new(desk);
    let result = async {
        match cmd {
            CitizenCommand::Export { subject, out, by } => {
                let data = crate::privacy::export(&desk, &subject.into(), &by).await?;
                let text = serde_json::to_string_pretty(&data)?;
                match out {
                    Some(path) => {
                        urpnet_proto::signing::write_private_file(&path, text.as_bytes())?;
                        let n = data["tickets"].as_array().map_or(0, Vec::len);
                        println!("{n} ticket(s) exported to {}", path.display());
                    }
                    None => println!("{text}"),
                }
            }
            CitizenCommand::Erase { subject, yes, by } => {
                if !yes {
                    bail!("erasure cannot be undone: add --yes to confirm");
                }
                let erased = crate::privacy::erase(&desk, &subject.into(), &by).await?;
                if json {
                    println!("{}", serde_json::json!({ "erased": erased }));
                } else if erased.is_empty() {
                    println!("no contact matches");
                } else {
                    println!(
                        "contact erased from {} ticket(s): {} (bodies holding a copy delete it when the event reaches them)",
                        erased.len(),
                        erased.join(", ")
                    );
                }
            }
            CitizenCommand::Audit => {
                let entries = crate::privacy::tables::recent(desk.store(), 50).await?;
                if json {
                    println!("{}", serde_json::to_string(&entries)?);
                } else {
                    let mut t = comfy_table::Table::new();
                    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
                    t.set_header(["when", "action", "by", "tickets", "subject (sha256)"]);
                    for e in entries {
                        t.add_row([
                            output::time(Some(&crate::shared_ticket::fold::timestamp(e.at_ms as u64))),
                            e.action,
                            e.actor,
                            e.tickets.to_string(),
                            e.subject_hash.chars().take(16).collect(),
                        ]);
                    }
                    println!("{t}");
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    drop(desk);
    store.close().await;
    drop(store);
    let _ = writer.await;
    result
}

/// `urpnet-node notify ...`.
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// The queue of notices to citizens: pending, sent, given up, the oldest
    /// waiting and the last error; and which channels are configured.
    Status,
}

async fn notify_status(
    config_path: &Path,
    env: &BTreeMap<String, String>,
    json: bool,
) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path, env)?;
    let (store, writer) = server::open_store(&config).await?;
    let status = crate::notify::tables::status(&store).await;
    store.close().await;
    drop(store);
    let _ = writer.await;
    let status = status?;
    let email = !config.notify.smtp_url.is_empty();
    let webhook = !config.notify.webhook_url.is_empty();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "pending": status.pending, "sent": status.sent, "failed": status.failed,
                "oldest_pending_ms": status.oldest_pending_ms, "last_error": status.last_error,
                "email": email, "webhook": webhook,
            })
        );
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "pending",
        "sent",
        "given up",
        "oldest pending",
        "channels",
        "last error",
    ]);
    let channels = [("e-mail", email), ("webhook", webhook)]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ");
    t.add_row([
        status.pending.to_string(),
        status.sent.to_string(),
        status.failed.to_string(),
        if status.oldest_pending_ms == 0 {
            String::new()
        } else {
            output::time(Some(&crate::shared_ticket::fold::timestamp(
                status.oldest_pending_ms as u64,
            )))
        },
        if channels.is_empty() {
            "none configured".into()
        } else {
            channels
        },
        status.last_error,
    ]);
    println!("{t}");
    Ok(())
}

async fn operator(
    config_path: &Path,
    env: &BTreeMap<String, String>,
    cmd: OperatorCommand,
    json: bool,
) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path, env)?;
    let (store, writer) = server::open_store(&config).await?;
    let now = urpnet_proto::hlc::system_time_ms() as i64;
    let result = async {
        match cmd {
            OperatorCommand::Add { name, role } => {
                let (record, token) = crate::auth::add_operator(&store, &name, role, now).await?;
                if json {
                    println!("{}", serde_json::json!({"id": record.id, "name": record.name, "role": record.role, "token": token}));
                } else {
                    println!("operator {} ({}) created; its token, shown only now:", record.name, record.role);
                    println!("{token}");
                }
            }
            OperatorCommand::List => {
                let operators = crate::auth::tables::all(&store).await?;
                if json {
                    let list: Vec<_> = operators
                        .iter()
                        .map(|o| serde_json::json!({"id": o.id, "name": o.name, "role": o.role, "created_ms": o.created_ms, "revoked_ms": o.revoked_ms}))
                        .collect();
                    println!("{}", serde_json::Value::Array(list));
                } else {
                    let mut t = comfy_table::Table::new();
                    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
                    t.set_header(["name", "role", "id (recorded in events)", "created", "revoked"]);
                    let ts = |ms: i64| output::time(Some(&crate::shared_ticket::fold::timestamp(ms as u64)));
                    for o in operators {
                        t.add_row([o.name, o.role, o.id, ts(o.created_ms), o.revoked_ms.map(ts).unwrap_or_default()]);
                    }
                    println!("{t}");
                }
            }
            OperatorCommand::Revoke { name } => {
                crate::auth::tables::revoke(&store, &name, now).await?;
                println!("operator {name} revoked");
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    drop(store);
    let _ = writer.await;
    result
}

fn members(config_path: &Path, env: &BTreeMap<String, String>, json: bool) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path, env)?;
    let Some(members) = crate::registry_link::load_cache(&config.node.data_dir).0 else {
        bail!(
            "no member list yet: set registry.endpoint and let the node heartbeat once (see docs/operations.md §8)"
        );
    };
    let list: Vec<_> = members.by_id.values().cloned().collect();
    if json {
        let resp = urpnet_proto::v1::GetMembersResponse {
            membership_version: members.version,
            members: list,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&output::to_json("urpnet.v1.GetMembersResponse", &resp))
                .expect("json")
        );
        return Ok(());
    }
    let mut t = urpnet_proto::cli::table();
    t.set_header(["id", "name", "level", "status", "endpoint"]);
    for m in &list {
        t.add_row([
            m.id.clone(),
            m.display_name.clone(),
            urpnet_proto::taxonomy::level_name(
                urpnet_proto::v1::Level::try_from(m.level).unwrap_or_default(),
            )
            .to_owned(),
            crate::registry_link::status_name(m.status).to_owned(),
            m.endpoint.clone(),
        ]);
    }
    println!("{t}");
    println!(
        "membership version {} ({} members)",
        members.version,
        list.len()
    );
    Ok(())
}

fn taxonomy(config_path: &Path, env: &BTreeMap<String, String>, json: bool) {
    // The registry's taxonomy as last received, or the built-in one.
    let taxonomy = NodeConfig::load(config_path, env)
        .ok()
        .and_then(|c| crate::registry_link::load_cache(&c.node.data_dir).1)
        .unwrap_or_else(crate::taxonomy::builtin);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&output::to_json(
                "urpnet.v1.Taxonomy",
                &taxonomy.to_proto()
            ))
            .expect("json")
        );
        return;
    }
    let mut t = urpnet_proto::cli::table();
    t.set_header(["code", "label", "competent level"]);
    for c in taxonomy.categories() {
        t.add_row([
            c.code.clone(),
            c.label.clone(),
            urpnet_proto::taxonomy::level_name(
                urpnet_proto::v1::Level::try_from(c.level).unwrap_or_default(),
            )
            .to_owned(),
        ]);
    }
    println!("{t}");
    println!("taxonomy version {}", taxonomy.version());
}

/// The desk's casework over this node's data directory, for the local
/// commands that work on it (also while the daemon runs).
async fn local_desk(
    config: NodeConfig,
) -> anyhow::Result<(
    crate::casework::TicketDesk,
    crate::store::Store,
    tokio::task::JoinHandle<()>,
)> {
    let key = urpnet_proto::signing::NodeSigner::load(
        config.node.id.clone(),
        &paths::signing_key(&config.node.data_dir),
    )?;
    let (store, writer) = server::open_store(&config).await?;
    let taxonomy = std::sync::Arc::new(crate::taxonomy::TaxonomyHandle::new(
        crate::registry_link::load_cache(&config.node.data_dir)
            .1
            .unwrap_or_else(crate::taxonomy::builtin),
    ));
    let desk = crate::casework::TicketDesk::new(
        config,
        store.clone(),
        key,
        taxonomy,
        std::sync::Arc::default(),
    )
    .await?;
    Ok((desk, store, writer))
}

fn backup(
    config_path: &Path,
    env: &BTreeMap<String, String>,
    out: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path, env)?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} files, {msg}").expect("template"),
    );
    let mut bytes = 0u64;
    let manifest = crate::backup::backup(&config, out, |_, n| {
        bytes += n;
        bar.inc(1);
        bar.set_message(format!("{:.1} MB", bytes as f64 / 1e6));
    })?;
    bar.finish_and_clear();
    print_manifest("backup written", out, &manifest, json);
    if manifest.database == "postgres" {
        eprintln!(
            "The database is PostgreSQL and is not in this file: back it up with pg_dump (docs/operations.md, \"Backup and restore\")."
        );
    }
    Ok(())
}

fn restore(
    config_path: &Path,
    env: &BTreeMap<String, String>,
    from: &Path,
    force: bool,
    json: bool,
) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path, env)?;
    let manifest = crate::backup::restore(&config, from, force)?;
    print_manifest("restored", from, &manifest, json);
    if !json {
        println!(
            "Start the node: its peers bring back what happened after {} (watch urpnet_anti_entropy_repairs_total), then run `urpnet-node check`.",
            output::when_ms(manifest.taken_at_ms)
        );
    }
    Ok(())
}

fn print_manifest(what: &str, file: &Path, m: &crate::backup::Manifest, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(m).expect("manifest"));
        return;
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    table.add_row(vec!["file".to_string(), file.display().to_string()]);
    table.add_row(vec!["node".to_string(), m.node_id.clone()]);
    table.add_row(vec!["taken".to_string(), output::when_ms(m.taken_at_ms)]);
    table.add_row(vec!["database".to_string(), m.database.clone()]);
    table.add_row(vec!["files".to_string(), m.files.to_string()]);
    table.add_row(vec![
        "size".to_string(),
        format!("{:.1} MB", m.bytes as f64 / 1e6),
    ]);
    println!("{what}:\n{table}");
}

async fn check(config_path: &Path, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path, env)?;
    let (desk, store, writer) = local_desk(config).await?;
    let total = crate::shared_ticket::tables::ticket_ids(&store)
        .await?
        .len();
    let differing = desk.verify_materialised().await?;
    drop(desk);
    store.close().await;
    drop(store);
    let _ = writer.await;
    if differing.is_empty() {
        println!("{total} ticket(s): stored state equals the fold of the events for every one");
        Ok(())
    } else {
        bail!(
            "{} of {total} ticket(s) differ from the fold of their events: {}",
            differing.len(),
            differing.join(", ")
        )
    }
}
