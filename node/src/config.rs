//! The node's configuration: one commented TOML file (written by
//! `urpnet-node init`), overridable by `URPNET_*` environment variables.
//!
//! Overrides are resolved from an explicit map, so tests never touch the
//! process environment. Every error names the file and the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use urpnet_proto::ids::NodeId;

/// The commented default written by `urpnet-node init`; `{id}`, `{name}` and
/// `{data_dir}` are filled in.
const TEMPLATE: &str = include_str!("config_template.toml");

/// Environment variables that override keys of the file.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("URPNET_NODE_ID", "node.id"),
    ("URPNET_NODE_NAME", "node.name"),
    ("URPNET_DATA_DIR", "node.data_dir"),
    ("URPNET_DESK_LISTEN", "desk.listen"),
    ("URPNET_METRICS_LISTEN", "metrics.listen"),
    ("URPNET_PUBLIC_LISTEN", "public.listen"),
    ("URPNET_PUBLIC_BASE_URL", "public.base_url"),
    ("URPNET_NOTIFY_SMTP_URL", "notify.smtp_url"),
    ("URPNET_STORE_URL", "store.url"),
    ("URPNET_REGISTRY_ENDPOINT", "registry.endpoint"),
    ("URPNET_PEERING_LISTEN", "peering.listen"),
    ("URPNET_FAQ_INTERVAL", "faq.interval"),
    ("URPNET_CHARTER_HOLD", "charter.hold"),
    ("URPNET_ARCHIVE_INTERVAL", "archive.interval"),
    ("URPNET_LOG_FORMAT", "log.format"),
    ("URPNET_LOG_FILTER", "log.filter"),
];

pub use urpnet_proto::config::{ConfigError, LogSection};

/// The whole configuration of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Who this node is.
    pub node: NodeSection,
    /// The operators' gRPC API.
    #[serde(default)]
    pub desk: DeskSection,
    /// The public HTTP side: Open311, tracking pages.
    #[serde(default)]
    pub public: PublicSection,
    /// Notices to citizens: e-mail and the body's webhook.
    #[serde(default)]
    pub notify: NotifySection,
    /// Citizens' data: how long contacts are kept.
    #[serde(default)]
    pub privacy: PrivacySection,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// The database.
    #[serde(default)]
    pub store: StoreSection,
    /// Files sent with requests.
    #[serde(default)]
    pub attachments: AttachmentsSection,
    /// Ticket handling defaults.
    #[serde(default)]
    pub tickets: TicketsSection,
    /// The hybrid logical clock.
    #[serde(default)]
    pub clock: ClockSection,
    /// The registry this node is a member of.
    #[serde(default)]
    pub registry: RegistrySection,
    /// The node-to-node service and delivery to peers.
    #[serde(default)]
    pub peering: PeeringSection,
    /// `[faq]`
    #[serde(default)]
    pub faq: FaqSection,
    /// `[charter]`
    #[serde(default)]
    pub charter: CharterSection,
    /// `[appointments]`
    #[serde(default)]
    pub appointments: AppointmentsSection,
    /// `[console]`
    #[serde(default)]
    pub console: ConsoleSection,
    /// `[archive]`
    #[serde(default)]
    pub archive: ArchiveSection,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
}

/// `[node]`: the body this node is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The body's IPA code, lowercase (e.g. `c_a662`).
    pub id: NodeId,
    /// The body's display name (e.g. "Comune di Bari").
    pub name: String,
    /// Directory holding the database, keys and attachments. Relative paths
    /// are taken from the config file's directory.
    pub data_dir: PathBuf,
}

/// `[desk]`: the operators' API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeskSection {
    /// Address the Desk gRPC server listens on. Loopback by default.
    pub listen: SocketAddr,
    /// Largest gRPC message accepted or sent, in bytes. Larger ones are refused
    /// before decoding with OUT_OF_RANGE.
    pub max_message_bytes: usize,
    /// Requests per second each operator or integration token may make;
    /// beyond it, RESOURCE_EXHAUSTED with a `retry-after-ms` trailer.
    pub rate_per_second: u32,
    /// Requests a token may make at once above its rate.
    pub rate_burst: u32,
}

impl Default for DeskSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            max_message_bytes: 16 * 1024 * 1024,
            rate_per_second: 5_000,
            rate_burst: 10_000,
        }
    }
}

/// `[public]`: the citizens' HTTP side (DESIGN.md §11): Open311 GeoReport v2
/// and the tracking pages, meant to sit behind the body's reverse proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublicSection {
    /// Address of the public HTTP listener; empty (the default) keeps it off.
    pub listen: String,
    /// The URL citizens and apps reach it at (through the reverse proxy),
    /// used in media and tracking links; empty: `http://<listen>`.
    pub base_url: String,
    /// The Open311 `jurisdiction_id` this node answers for; empty: its node
    /// id. Requests naming another are refused.
    pub jurisdiction_id: String,
    /// Largest request body, in bytes (413 beyond it, before it is read
    /// whole): a photo plus the form.
    pub max_body_bytes: usize,
    /// Longest a request may take, headers to answer.
    #[serde(with = "urpnet_proto::config::duration")]
    pub timeout: std::time::Duration,
    /// Web origins allowed to call it from a browser (CORS); empty: none,
    /// `["*"]`: any.
    pub cors_origins: Vec<String>,
    /// Requests per second per client (its `api_key`, or its IP address
    /// without one); 429 with `Retry-After` beyond.
    pub rate_per_second: u32,
    /// Requests a client may make at once above its rate.
    pub rate_burst: u32,
    /// Trust the `X-Forwarded-For` header's last address as the client's
    /// (only behind a reverse proxy that sets it).
    pub trust_forwarded_for: bool,
    /// Serve HTTPS with this certificate chain (PEM) and `tls_key_file`,
    /// when no reverse proxy terminates TLS; empty: plain HTTP.
    pub tls_cert_file: PathBuf,
    /// The private key (PEM) of `tls_cert_file`.
    pub tls_key_file: PathBuf,
    /// The comuni (ISTAT codes) citizens may report about here; empty: the
    /// comune whose IPA code is this node's id.
    pub comuni: Vec<String>,
    /// Where each comune lies, as bounding boxes: a reported point must fall
    /// in one (the first that holds it gives the comune). Without any, a
    /// point anywhere in Italy is taken as the only comune served.
    pub areas: Vec<PublicArea>,
}

/// `[[public.areas]]`: a comune's extent, for locating reported points (no
/// online geocoder is ever called).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicArea {
    /// The comune's ISTAT code (one of `public.comuni`).
    pub comune: String,
    /// `[south, west, north, east]` in degrees.
    pub bbox: [f64; 4],
}

impl Default for PublicSection {
    fn default() -> Self {
        Self {
            listen: String::new(),
            base_url: String::new(),
            jurisdiction_id: String::new(),
            max_body_bytes: 12 * 1024 * 1024,
            timeout: std::time::Duration::from_secs(30),
            cors_origins: Vec::new(),
            rate_per_second: 20,
            rate_burst: 40,
            trust_forwarded_for: false,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            comuni: Vec::new(),
            areas: Vec::new(),
        }
    }
}

/// `[notify]`: telling citizens who asked to be kept informed (DESIGN.md
/// §15), from the origin node, which holds their contact.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    /// The SMTP server: `smtp://host:25` (plain, for a local relay),
    /// `smtp://user:password@host:587?tls=required` (STARTTLS),
    /// `smtps://user:password@host:465` (TLS); empty: no e-mail.
    pub smtp_url: String,
    /// The sender, e.g. `URP Comune di Celano <urp@comune.celano.aq.it>`.
    pub from: String,
    /// The body's webhook receiver (its app, or an SMS/WhatsApp/App IO
    /// gateway), signed as Standard Webhooks; empty: none.
    pub webhook_url: String,
    /// A file holding the webhook secret, `whsec_<base64>` (mode 0600).
    pub webhook_secret_file: PathBuf,
    /// App IO's API base, e.g. `https://api.io.pagopa.it/api/v1`; empty:
    /// no App IO messages.
    pub appio_url: String,
    /// A file holding the body's App IO service key (its API subscription
    /// key, mode 0600).
    pub appio_key_file: PathBuf,
    /// How often the queue is checked (it is also checked after every
    /// change).
    #[serde(with = "urpnet_proto::config::duration")]
    pub interval: std::time::Duration,
    /// Notices sent at once.
    pub batch: u32,
    /// Attempts before a notice is given up.
    pub max_attempts: u32,
    /// Longest wait between two attempts of a notice.
    #[serde(with = "urpnet_proto::config::duration")]
    pub max_backoff: std::time::Duration,
    /// Longest an SMTP exchange or a webhook call may take.
    #[serde(with = "urpnet_proto::config::duration")]
    pub timeout: std::time::Duration,
}

impl Default for NotifySection {
    fn default() -> Self {
        Self {
            smtp_url: String::new(),
            from: String::new(),
            webhook_url: String::new(),
            webhook_secret_file: PathBuf::new(),
            appio_url: String::new(),
            appio_key_file: PathBuf::new(),
            interval: std::time::Duration::from_secs(5),
            batch: 50,
            max_attempts: 40,
            max_backoff: std::time::Duration::from_secs(3600),
            timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// `[privacy]`: how long citizens' contacts are kept (DESIGN.md §15).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySection {
    /// How long after a ticket is closed its citizen's contact is kept; then
    /// it is erased here and at every body that received it.
    #[serde(with = "urpnet_proto::config::duration")]
    pub contact_retention: std::time::Duration,
    /// How often the retention purge runs.
    #[serde(with = "urpnet_proto::config::duration")]
    pub purge_interval: std::time::Duration,
}

impl Default for PrivacySection {
    fn default() -> Self {
        Self {
            contact_retention: std::time::Duration::from_secs(730 * 86_400),
            purge_interval: std::time::Duration::from_secs(3600),
        }
    }
}

/// `[metrics]`: Prometheus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Address of the `/metrics` HTTP endpoint; empty string disables it.
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9400".into(),
        }
    }
}

/// `[store]`: the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Empty: SQLite file `urpnet.db` in the data directory. Otherwise a
    /// `postgres://` URL (or a `sqlite://` one).
    pub url: String,
    /// Most writes committed together in one transaction (group commit).
    pub max_batch: usize,
    /// Connections for reads.
    pub read_connections: u32,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_batch: 256,
            read_connections: 4,
        }
    }
}

/// `[attachments]`: files sent with requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttachmentsSection {
    /// Largest attachment, in bytes.
    pub max_bytes: u64,
    /// Most attachments per request.
    pub max_per_request: usize,
    /// Media types accepted.
    pub allowed_media_types: Vec<String>,
}

impl Default for AttachmentsSection {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            max_per_request: 10,
            allowed_media_types: [
                "application/pdf",
                "image/jpeg",
                "image/png",
                "image/webp",
                "image/heic",
                "text/plain",
                "application/vnd.oasis.opendocument.text",
                "application/pkcs7-mime",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// `[tickets]`: handling defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketsSection {
    /// Days within which an answer is due when the request sets no due date
    /// (30 is the general term of Italian law 241/1990); 0 sets none.
    pub default_due_days: u32,
    /// How far back (days) to look for possible duplicates.
    pub duplicate_window_days: u32,
    /// Distance (metres) under which two located requests may be duplicates.
    pub duplicate_radius_m: f64,
}

impl Default for TicketsSection {
    fn default() -> Self {
        Self {
            default_due_days: 30,
            duplicate_window_days: 14,
            duplicate_radius_m: 300.0,
        }
    }
}

/// `[clock]`: the hybrid logical clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockSection {
    /// Received stamps further ahead of the local clock than this are refused.
    pub max_offset_ms: u64,
}

impl Default for ClockSection {
    fn default() -> Self {
        Self { max_offset_ms: 500 }
    }
}

/// `[registry]`: membership of a federation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// `https://host:port` of the registry; empty runs the node alone.
    pub endpoint: String,
    /// Directory with this node's `cert.pem`, `key.pem` and the federation's
    /// `ca.pem`; relative paths are inside the data directory.
    pub tls_dir: PathBuf,
    /// `https://host:port` where peers reach this node (sent at
    /// registration); empty keeps the enrolled one.
    pub advertise: String,
    /// Requests this office can take in per hour (reported with each
    /// heartbeat; the registry's overflow decisions rest on it).
    pub capacity_per_hour: u32,
    /// Operators on duty (reported with each heartbeat).
    pub operators_on_duty: u32,
    /// Categories this office accepts as overflow from other offices.
    pub overflow_categories: Vec<String>,
    /// Renew the certificate when less than this is left of it.
    #[serde(with = "urpnet_proto::config::duration")]
    pub renew_before: std::time::Duration,
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            tls_dir: PathBuf::from("tls"),
            advertise: String::new(),
            capacity_per_hour: 20,
            operators_on_duty: 1,
            overflow_categories: Vec::new(),
            renew_before: std::time::Duration::from_secs(30 * 86_400),
        }
    }
}

/// `[peering]`: the node-to-node service and delivery to peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeeringSection {
    /// Address the Peering gRPC server (mutual TLS) listens on. Served only
    /// when `registry.endpoint` is set and the TLS files are in place.
    pub listen: SocketAddr,
    /// Largest Peering message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Most events per delivery batch (at most 1000, the receivers' limit).
    pub batch_size: u32,
    /// Longest wait between attempts to reach an unreachable peer.
    #[serde(with = "urpnet_proto::config::duration")]
    pub max_backoff: std::time::Duration,
    /// Time allowed to open a connection to a peer.
    #[serde(with = "urpnet_proto::config::duration")]
    pub connect_timeout: std::time::Duration,
    /// Time allowed for one delivery call.
    #[serde(with = "urpnet_proto::config::duration")]
    pub request_timeout: std::time::Duration,
    /// How often shared tickets are compared with each peer (anti-entropy).
    #[serde(with = "urpnet_proto::config::duration")]
    pub anti_entropy_interval: std::time::Duration,
    /// Calls per second each peer may make on the peering port; beyond it,
    /// RESOURCE_EXHAUSTED with a `retry-after-ms` trailer (checked before the
    /// request is decoded).
    pub rate_per_second: u32,
    /// Calls a peer may make at once above its rate.
    pub rate_burst: u32,
}

impl Default for PeeringSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7401)),
            max_message_bytes: 8 * 1024 * 1024,
            batch_size: 1000,
            max_backoff: std::time::Duration::from_secs(3600),
            connect_timeout: std::time::Duration::from_secs(3),
            request_timeout: std::time::Duration::from_secs(30),
            anti_entropy_interval: std::time::Duration::from_secs(300),
            rate_per_second: 200,
            rate_burst: 400,
        }
    }
}

/// `[faq]`: the shared FAQ set's epidemic anti-entropy (DESIGN.md §5).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaqSection {
    /// How often this node exchanges digests with random peers.
    #[serde(with = "urpnet_proto::config::duration")]
    pub interval: std::time::Duration,
    /// How many random peers each round calls.
    pub fanout: usize,
    /// Most versions per exchange message (at most 500).
    pub batch: usize,
}

impl Default for FaqSection {
    fn default() -> Self {
        Self {
            interval: std::time::Duration::from_secs(30),
            fanout: 3,
            batch: 500,
        }
    }
}

/// `[charter]`: the service charters this node holds (DESIGN.md §12).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CharterSection {
    /// Which other bodies' charters this node keeps: "region" (bodies whose
    /// territory shares a region with this node's, and national bodies) or
    /// "all".
    pub hold: String,
    /// Decoded charters kept in memory for answers (the rest are read from
    /// the store when asked).
    pub cache: usize,
}

impl Default for CharterSection {
    fn default() -> Self {
        Self {
            hold: "region".into(),
            cache: 128,
        }
    }
}

/// `[console]`: the operators' web console (DESIGN.md §14).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// Where it listens (loopback by default, like the Desk); empty: off.
    pub listen: String,
    /// A session ends after this long without a request.
    #[serde(with = "urpnet_proto::config::duration")]
    pub session_idle: std::time::Duration,
    /// And this long after sign-in in any case.
    #[serde(with = "urpnet_proto::config::duration")]
    pub session_max: std::time::Duration,
    /// Sign-in attempts one address may make at once (then one a second).
    pub login_burst: u32,
    /// Mark cookies `Secure` (set it when a TLS proxy is in front).
    pub secure_cookies: bool,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7480".into(),
            session_idle: std::time::Duration::from_secs(30 * 60),
            session_max: std::time::Duration::from_secs(12 * 3600),
            login_burst: 5,
            secure_cookies: false,
        }
    }
}

/// `[appointments]`: booking at this body's offices (DESIGN.md §13).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppointmentsSection {
    /// How long a seat is held while the citizen fills in the form.
    #[serde(with = "urpnet_proto::config::duration")]
    pub hold: std::time::Duration,
    /// Most bookings one e-mail address may make per day (0 = no limit).
    pub max_per_email_per_day: u32,
    /// Reminders, minutes before the start (e.g. a day and an hour).
    pub reminders_min: Vec<u32>,
    /// The video service the body runs (Jitsi-style): rooms are
    /// `<video_base_url>/<room>`. Empty: video appointments are not offered.
    pub video_base_url: String,
    /// A file with the shared secret for the video service's JWT (HS256);
    /// empty: no JWT.
    pub video_jwt_secret_file: std::path::PathBuf,
    /// The JWT's `iss` and `aud` (Jitsi's `app_id` and "jitsi").
    pub video_jwt_app_id: String,
    /// How early the citizen may enter the room, minutes before the start.
    pub room_opens_min: u32,
    /// The largest document a citizen may send, bytes.
    pub max_document_bytes: usize,
    /// Documents per appointment.
    pub max_documents: u32,
    /// How long a booking at another body may take before it is given up.
    #[serde(with = "urpnet_proto::config::duration")]
    pub peer_timeout: std::time::Duration,
}

impl Default for AppointmentsSection {
    fn default() -> Self {
        Self {
            hold: std::time::Duration::from_secs(300),
            max_per_email_per_day: 3,
            reminders_min: vec![24 * 60, 60],
            video_base_url: String::new(),
            video_jwt_secret_file: std::path::PathBuf::new(),
            video_jwt_app_id: "urpnet".into(),
            room_opens_min: 10,
            max_document_bytes: 10 * 1024 * 1024,
            max_documents: 10,
            peer_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// `[archive]`: the anonymised records of closed tickets (DESIGN.md §7).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSection {
    /// How often closed tickets are anonymised and pushed to the registry.
    #[serde(with = "urpnet_proto::config::duration")]
    pub interval: std::time::Duration,
    /// Records per signed batch (1..=2000).
    pub batch: usize,
    /// How long records the registry acknowledged stay in the outbox.
    #[serde(with = "urpnet_proto::config::duration")]
    pub keep_sent: std::time::Duration,
    /// Districts of large comuni: a closed ticket with coordinates inside a
    /// district's box is archived as `<comune>/<code>` instead of the comune.
    pub districts: Vec<District>,
}

/// One district of a large comune (a municipio of Rome, a quartiere).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct District {
    /// The comune's 6-digit ISTAT code.
    pub comune: String,
    /// Short code, `^[A-Z0-9]{1,8}$` (`M01`).
    pub code: String,
    /// Bounding box in WGS 84 degrees: south, west, north, east.
    pub bbox: [f64; 4],
}

impl Default for ArchiveSection {
    fn default() -> Self {
        Self {
            interval: std::time::Duration::from_secs(60),
            batch: 2000,
            keep_sent: std::time::Duration::from_secs(30 * 24 * 3600),
            districts: Vec::new(),
        }
    }
}

impl NodeConfig {
    /// A configuration with every default, for a node with this id and data
    /// directory (used by `init`, tests and the demo).
    pub fn new(id: NodeId, name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node: NodeSection {
                id,
                name: name.into(),
                data_dir: data_dir.into(),
            },
            desk: DeskSection::default(),
            public: PublicSection::default(),
            notify: NotifySection::default(),
            privacy: PrivacySection::default(),
            metrics: MetricsSection::default(),
            store: StoreSection::default(),
            attachments: AttachmentsSection::default(),
            tickets: TicketsSection::default(),
            clock: ClockSection::default(),
            registry: RegistrySection::default(),
            peering: PeeringSection::default(),
            faq: FaqSection::default(),
            charter: CharterSection::default(),
            appointments: AppointmentsSection::default(),
            console: ConsoleSection::default(),
            archive: ArchiveSection::default(),
            log: LogSection::default(),
        }
    }

    /// Reads `path` and applies the overrides found in `env` (see
    /// [`ENV_OVERRIDES`]).
    ///
    /// # Errors
    /// A missing or unreadable file, bad TOML, an unknown key or a bad value,
    /// each named in one line.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut config: Self =
            urpnet_proto::config::load_file(path, "urpnet-node init", |t| Self::parse(t, env))?;
        config.node.data_dir = urpnet_proto::config::beside(path, &config.node.data_dir);
        Ok(config)
    }

    /// Parses configuration text and applies overrides.
    ///
    /// # Errors
    /// A one-line message naming the key.
    pub fn parse(text: &str, env: &BTreeMap<String, String>) -> Result<Self, String> {
        let config: Self = urpnet_proto::config::parse_with_overrides(text, ENV_OVERRIDES, env)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.desk.max_message_bytes < 64 * 1024 {
            return Err("key `desk.max_message_bytes`: must be at least 65536".into());
        }
        if self.attachments.max_bytes as usize >= self.desk.max_message_bytes {
            return Err("key `attachments.max_bytes`: must be below desk.max_message_bytes".into());
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return Err(
                "key `metrics.listen`: must be an address like 127.0.0.1:9400, or empty".into(),
            );
        }
        if !(1..=1000).contains(&self.peering.batch_size) {
            return Err("key `peering.batch_size`: must be within 1..=1000".into());
        }
        if self.desk.rate_per_second == 0 || self.desk.rate_burst == 0 {
            return Err(
                "keys `desk.rate_per_second` and `desk.rate_burst`: must be at least 1".into(),
            );
        }
        if self.peering.rate_per_second == 0 || self.peering.rate_burst == 0 {
            return Err(
                "keys `peering.rate_per_second` and `peering.rate_burst`: must be at least 1"
                    .into(),
            );
        }
        if self.peering.max_message_bytes < 1024 * 1024 {
            return Err("key `peering.max_message_bytes`: must be at least 1048576".into());
        }
        if self.peering.anti_entropy_interval < std::time::Duration::from_millis(100) {
            return Err("key `peering.anti_entropy_interval`: must be at least 100ms".into());
        }
        if self.faq.interval < std::time::Duration::from_millis(50) {
            return Err("key `faq.interval`: must be at least 50ms".into());
        }
        if !(1..=50).contains(&self.faq.fanout) {
            return Err("key `faq.fanout`: must be within 1..=50".into());
        }
        if !["region", "all"].contains(&self.charter.hold.as_str()) {
            return Err("key `charter.hold`: must be \"region\" or \"all\"".into());
        }
        if !(1..=100_000).contains(&self.charter.cache) {
            return Err("key `charter.cache`: must be within 1..=100000".into());
        }
        let a = &self.appointments;
        if a.hold < std::time::Duration::from_secs(1)
            || a.hold > std::time::Duration::from_secs(3600)
        {
            return Err("key `appointments.hold`: must be within 1s..=1h".into());
        }
        if a.reminders_min.len() > 5 || a.reminders_min.iter().any(|m| !(1..=10_080).contains(m)) {
            return Err(
                "key `appointments.reminders_min`: at most 5, each within 1..=10080 minutes".into(),
            );
        }
        let video = &a.video_base_url;
        if !(video.is_empty() || video.starts_with("https://") || video.starts_with("http://")) {
            return Err(
                "key `appointments.video_base_url`: must be an http(s) URL, or empty".into(),
            );
        }
        if a.room_opens_min > 120 {
            return Err("key `appointments.room_opens_min`: must be at most 120".into());
        }
        if !(1..=100).contains(&a.max_documents) {
            return Err("key `appointments.max_documents`: must be within 1..=100".into());
        }
        if !(1..=500).contains(&self.faq.batch) {
            return Err("key `faq.batch`: must be within 1..=500".into());
        }
        if !self.registry.endpoint.is_empty() && !self.registry.endpoint.starts_with("https://") {
            return Err("key `registry.endpoint`: must be https://host:port, or empty".into());
        }
        if self.archive.interval < std::time::Duration::from_millis(50) {
            return Err("key `archive.interval`: must be at least 50ms".into());
        }
        if !(1..=urpnet_proto::archive::BATCH_MAX_RECORDS).contains(&self.archive.batch) {
            return Err("key `archive.batch`: must be within 1..=2000".into());
        }
        for (i, d) in self.archive.districts.iter().enumerate() {
            let [s, w, n, e] = d.bbox;
            if urpnet_proto::territory::Territory::italy()
                .comune(&d.comune)
                .is_none()
            {
                return Err(format!(
                    "key `archive.districts[{i}].comune`: must be a comune's ISTAT code"
                ));
            }
            if !urpnet_proto::archive::district_ok(&d.code) {
                return Err(format!(
                    "key `archive.districts[{i}].code`: must match ^[A-Z0-9]{{1,8}}$"
                ));
            }
            if !(s < n && w < e && (-90.0..=90.0).contains(&s) && (-90.0..=90.0).contains(&n)) {
                return Err(format!(
                    "key `archive.districts[{i}].bbox`: must be [south, west, north, east] with south < north and west < east"
                ));
            }
        }
        if !self.public.listen.is_empty() && self.public.listen.parse::<SocketAddr>().is_err() {
            return Err(
                "key `public.listen`: must be an address like 0.0.0.0:8080, or empty".into(),
            );
        }
        let base = &self.public.base_url;
        if !(base.is_empty() || base.starts_with("http://") || base.starts_with("https://")) {
            return Err(
                "key `public.base_url`: must start with http:// or https://, or be empty".into(),
            );
        }
        if self.public.tls_cert_file.as_os_str().is_empty()
            != self.public.tls_key_file.as_os_str().is_empty()
        {
            return Err(
                "keys `public.tls_cert_file` and `public.tls_key_file`: give both, or neither"
                    .into(),
            );
        }
        if self.public.max_body_bytes < 64 * 1024 {
            return Err("key `public.max_body_bytes`: must be at least 65536".into());
        }
        if self.public.rate_per_second == 0 || self.public.rate_burst == 0 {
            return Err(
                "keys `public.rate_per_second` and `public.rate_burst`: must be at least 1".into(),
            );
        }
        let italy = urpnet_proto::territory::Territory::italy();
        for (i, c) in self.public.comuni.iter().enumerate() {
            if italy.comune(c).is_none() {
                return Err(format!(
                    "key `public.comuni[{i}]`: must be a comune's ISTAT code"
                ));
            }
        }
        for (i, a) in self.public.areas.iter().enumerate() {
            let [s, w, n, e] = a.bbox;
            if !self.public_comuni().contains(&a.comune) {
                return Err(format!(
                    "key `public.areas[{i}].comune`: must be one of the comuni served (public.comuni)"
                ));
            }
            if !(s < n && w < e && (-90.0..=90.0).contains(&s) && (-90.0..=90.0).contains(&n)) {
                return Err(format!(
                    "key `public.areas[{i}].bbox`: must be [south, west, north, east] with south < north and west < east"
                ));
            }
        }
        if !self.notify.smtp_url.is_empty() && self.notify.from.is_empty() {
            return Err("key `notify.from`: is required with notify.smtp_url".into());
        }
        if !self.notify.webhook_url.is_empty()
            && self.notify.webhook_secret_file.as_os_str().is_empty()
        {
            return Err(
                "key `notify.webhook_secret_file`: is required with notify.webhook_url".into(),
            );
        }
        if !self.notify.appio_url.is_empty() && self.notify.appio_key_file.as_os_str().is_empty() {
            return Err("key `notify.appio_key_file`: is required with notify.appio_url".into());
        }
        if !(1..=1000).contains(&self.notify.batch) {
            return Err("key `notify.batch`: must be within 1..=1000".into());
        }
        if self.notify.max_attempts == 0 {
            return Err("key `notify.max_attempts`: must be at least 1".into());
        }
        if self.notify.interval < std::time::Duration::from_millis(50) {
            return Err("key `notify.interval`: must be at least 50ms".into());
        }
        if self.store.max_batch == 0 {
            return Err("key `store.max_batch`: must be at least 1".into());
        }
        Ok(())
    }

    /// The comuni citizens may report about through the public side:
    /// `public.comuni`, or the comune whose IPA code is this node's id.
    pub fn public_comuni(&self) -> Vec<String> {
        if !self.public.comuni.is_empty() {
            return self.public.comuni.clone();
        }
        urpnet_proto::territory::Territory::italy()
            .comune_by_ipa(self.node.id.as_str())
            .map(|c| vec![c.istat_code.clone()])
            .unwrap_or_default()
    }

    /// Where citizens reach the public side (no trailing slash):
    /// `public.base_url`, or the address it listens on (`https` when it
    /// terminates TLS itself); empty when neither is known.
    pub fn public_base_url(&self, listening: Option<SocketAddr>) -> String {
        if !self.public.base_url.is_empty() {
            return self.public.base_url.trim_end_matches('/').to_string();
        }
        let scheme = if self.public.tls_cert_file.as_os_str().is_empty() {
            "http"
        } else {
            "https"
        };
        listening.map_or_else(String::new, |a| format!("{scheme}://{a}"))
    }

    /// The commented configuration file `init` writes.
    pub fn template(id: &NodeId, name: &str, data_dir: &Path) -> String {
        TEMPLATE
            .replace("{id}", id.as_str())
            .replace("{name}", &name.replace('"', "'"))
            .replace("{data_dir}", &data_dir.display().to_string())
    }

    /// The database URL: the configured one, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        if self.store.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.node.data_dir.join("urpnet.db").display()
            )
        } else {
            self.store.url.clone()
        }
    }

    /// The directory of this node's federation certificate.
    pub fn tls_dir(&self) -> PathBuf {
        self.node.data_dir.join(&self.registry.tls_dir)
    }

    /// The process environment's `URPNET_*` variables, for [`NodeConfig::load`].
    pub fn process_env() -> BTreeMap<String, String> {
        urpnet_proto::config::process_env()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_template_parses_to_the_defaults() {
        let text = NodeConfig::template(
            &NodeId::new("c_a662").unwrap(),
            "Comune di Bari",
            Path::new("/var/lib/urpnet"),
        );
        let config = NodeConfig::parse(&text, &BTreeMap::new()).unwrap();
        assert_eq!(config.node.id.as_str(), "c_a662");
        assert_eq!(config.desk.listen, DeskSection::default().listen);
        assert_eq!(
            config.attachments.max_bytes,
            AttachmentsSection::default().max_bytes
        );
        assert!(
            config
                .database_url()
                .starts_with("sqlite:///var/lib/urpnet/urpnet.db")
        );
    }

    #[test]
    fn environment_overrides_win() {
        let text = NodeConfig::template(&NodeId::new("c_a662").unwrap(), "Bari", Path::new("/d"));
        let config = NodeConfig::parse(
            &text,
            &env(&[
                ("URPNET_DESK_LISTEN", "127.0.0.1:9999"),
                ("URPNET_STORE_URL", "postgres:///x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.desk.listen.port(), 9999);
        assert_eq!(config.database_url(), "postgres:///x");
    }

    #[test]
    fn errors_name_the_key_in_one_line() {
        let base = "[node]\nid = \"c_a662\"\nname = \"x\"\ndata_dir = \"d\"\n";
        let err = NodeConfig::parse(
            &format!("{base}[desk]\nlisten = \"nowhere\"\n"),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(err.starts_with("key `desk.listen`"), "{err}");
        let err = NodeConfig::parse(
            "[node]\nid = \"C-A662\"\nname = \"x\"\ndata_dir = \"d\"\n",
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(err.starts_with("key `node.id`"), "{err}");
        let err =
            NodeConfig::parse(&format!("{base}[desk]\nlisten = \n"), &BTreeMap::new()).unwrap_err();
        assert!(err.contains("line 6"), "{err}");
        let err = NodeConfig::parse(&format!("{base}[desk]\nlisen = \"x\"\n"), &BTreeMap::new())
            .unwrap_err();
        assert!(err.contains("lisen"), "{err}");
        assert!(!err.contains('\n'));
        let err =
            NodeConfig::load(Path::new("/nonexistent/urpnet.toml"), &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file /nonexistent/urpnet.toml: not found (create one with `urpnet-node init`)"
        );
    }
}
