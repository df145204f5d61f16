//! The registry's configuration: one commented TOML file (written by
//! `urpnet-registry init`), overridable by `URPNET_*` environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use urpnet_proto::config::ConfigError;
pub use urpnet_proto::config::LogSection;

const TEMPLATE: &str = include_str!("config_template.toml");

/// Environment variables that override keys of the file.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("URPNET_REGISTRY_NAME", "registry.name"),
    ("URPNET_DATA_DIR", "registry.data_dir"),
    ("URPNET_GRPC_LISTEN", "grpc.listen"),
    ("URPNET_METRICS_LISTEN", "metrics.listen"),
    ("URPNET_STORE_URL", "store.url"),
    ("URPNET_LOG_FORMAT", "log.format"),
    ("URPNET_LOG_FILTER", "log.filter"),
    ("URPNET_ARCHIVE_K", "archive.k"),
    ("URPNET_UPSTREAM_ENDPOINT", "upstream.endpoint"),
    ("URPNET_UPSTREAM_INTERVAL", "upstream.interval"),
];

/// The whole configuration of a registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Who this registry is.
    pub registry: RegistrySection,
    /// The mTLS gRPC endpoint.
    #[serde(default)]
    pub grpc: GrpcSection,
    /// Prometheus.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// The coordinators' dashboard.
    #[serde(default)]
    pub dashboard: DashboardSection,
    /// The database.
    #[serde(default)]
    pub store: StoreSection,
    /// Heartbeats.
    #[serde(default)]
    pub membership: MembershipSection,
    /// The federation CA.
    #[serde(default)]
    pub ca: CaSection,
    /// Per-identity rate limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The anonymised archive's publication rules.
    #[serde(default)]
    pub archive: ArchiveSection,
    /// Upward replication of the archive to a national registry.
    #[serde(default)]
    pub upstream: UpstreamSection,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
}

/// The legal floor of k: the Italian statistical code (Codice di deontologia
/// per i trattamenti a fini statistici) treats cells under 3 as identifying.
pub const K_FLOOR: u32 = 3;

/// `[archive]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSection {
    /// Smallest count published in any cell; at least [`K_FLOOR`].
    pub k: u32,
}

impl Default for ArchiveSection {
    fn default() -> Self {
        Self { k: 5 }
    }
}

/// `[upstream]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    /// The national registry, `https://host:port`; empty: no upward
    /// replication.
    pub endpoint: String,
    /// This registry's member id at the national registry (e.g. the
    /// region's IPA code `r_abruzz`).
    pub member_id: String,
    /// How often records are pushed upward.
    #[serde(with = "urpnet_proto::config::duration")]
    pub interval: Duration,
    /// Records per batch, 1..=2000.
    pub batch: usize,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            member_id: String::new(),
            interval: Duration::from_secs(30),
            batch: 2000,
        }
    }
}

/// `[registry]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// Short name, the registry's identity (`urn:urpnet:registry:<name>`).
    pub name: String,
    /// CA, certificates and the default database.
    pub data_dir: PathBuf,
}

/// `[grpc]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcSection {
    /// Listen address.
    pub listen: SocketAddr,
    /// DNS names and IPs put in the registry's certificate.
    pub hosts: Vec<String>,
    /// Largest message in or out.
    pub max_message_bytes: usize,
}

impl Default for GrpcSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7500)),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// `/metrics` address; empty disables it.
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9500".into(),
        }
    }
}

/// `[dashboard]`: the coordinators' web dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSection {
    /// Where it listens (loopback by default); empty disables it. Sign in
    /// with the token in `<data_dir>/dashboard.token`.
    pub listen: String,
}

impl Default for DashboardSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7490".into(),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Empty: SQLite in the data directory; or a `postgres://` URL.
    pub url: String,
}

/// `[membership]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipSection {
    /// Expected heartbeat period; 3 missed = unreachable.
    #[serde(with = "urpnet_proto::config::duration")]
    pub heartbeat_interval: Duration,
}

impl Default for MembershipSection {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
        }
    }
}

/// `[ca]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaSection {
    /// Lifetime of issued certificates.
    #[serde(with = "urpnet_proto::config::duration")]
    pub certificate_validity: Duration,
}

impl Default for CaSection {
    fn default() -> Self {
        Self {
            certificate_validity: Duration::from_secs(90 * 86_400),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Sustained requests per second per member (node certificate).
    pub requests_per_second: u32,
    /// Requests a member may make at once.
    pub burst: u32,
    /// Sustained requests per second per coordinator (bulk enrolments and
    /// imports need more than a node's heartbeats).
    pub coordinator_requests_per_second: u32,
    /// Requests a coordinator may make at once.
    pub coordinator_burst: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            requests_per_second: 50,
            burst: 100,
            coordinator_requests_per_second: 1000,
            coordinator_burst: 2000,
        }
    }
}

impl RegistryConfig {
    /// Every default, for a registry named `name` in `data_dir`.
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            registry: RegistrySection {
                name: name.into(),
                data_dir: data_dir.into(),
            },
            grpc: GrpcSection::default(),
            metrics: MetricsSection::default(),
            dashboard: DashboardSection::default(),
            store: StoreSection::default(),
            membership: MembershipSection::default(),
            ca: CaSection::default(),
            limits: LimitsSection::default(),
            archive: ArchiveSection::default(),
            upstream: UpstreamSection::default(),
            log: LogSection::default(),
        }
    }

    /// Reads `path` and applies overrides from `env`.
    ///
    /// # Errors
    /// One line naming the file and the key.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut config: Self =
            urpnet_proto::config::load_file(path, "urpnet-registry init", |t| Self::parse(t, env))?;
        config.registry.data_dir = urpnet_proto::config::beside(path, &config.registry.data_dir);
        Ok(config)
    }

    /// Parses text and applies overrides.
    ///
    /// # Errors
    /// One line naming the key.
    pub fn parse(text: &str, env: &BTreeMap<String, String>) -> Result<Self, String> {
        let config: Self = urpnet_proto::config::parse_with_overrides(text, ENV_OVERRIDES, env)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        urpnet_proto::ids::NodeId::new(&self.registry.name)
            .map_err(|e| format!("key `registry.name`: {e}"))?;
        if self.membership.heartbeat_interval < Duration::from_millis(50) {
            return Err("key `membership.heartbeat_interval`: must be at least 50ms".into());
        }
        if self.ca.certificate_validity < Duration::from_secs(60) {
            return Err("key `ca.certificate_validity`: must be at least 1m".into());
        }
        let l = &self.limits;
        if [
            l.requests_per_second,
            l.burst,
            l.coordinator_requests_per_second,
            l.coordinator_burst,
        ]
        .contains(&0)
        {
            return Err("key `limits`: every rate and burst must be at least 1".into());
        }
        if self.archive.k < K_FLOOR {
            return Err(format!(
                "key `archive.k`: must be at least {K_FLOOR} (the statistical code's floor)"
            ));
        }
        let u = &self.upstream;
        if !u.endpoint.is_empty() {
            let mut v = urpnet_proto::validate::Violations::new();
            crate::registry::check_endpoint(&mut v, "upstream.endpoint", &u.endpoint);
            if let Err(e) = v.into_result() {
                return Err(format!("key `upstream.endpoint`: {e}"));
            }
            urpnet_proto::ids::NodeId::new(&u.member_id)
                .map_err(|e| format!("key `upstream.member_id`: {e}"))?;
        }
        if !(1..=urpnet_proto::archive::BATCH_MAX_RECORDS).contains(&u.batch) {
            return Err(format!(
                "key `upstream.batch`: must be 1..={}",
                urpnet_proto::archive::BATCH_MAX_RECORDS
            ));
        }
        if u.interval < Duration::from_millis(50) {
            return Err("key `upstream.interval`: must be at least 50ms".into());
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return Err(
                "key `metrics.listen`: must be an address like 127.0.0.1:9500, or empty".into(),
            );
        }
        Ok(())
    }

    /// The commented file `init` writes.
    pub fn template(name: &str, data_dir: &Path) -> String {
        TEMPLATE
            .replace("{name}", name)
            .replace("{data_dir}", &data_dir.display().to_string())
    }

    /// The database URL: the configured one or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        if self.store.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.registry.data_dir.join("registry.db").display()
            )
        } else {
            self.store.url.clone()
        }
    }
}

/// Entry point for the fuzz target of the registry's configuration file
/// (`fuzz/`): any text parses or is refused with a message, never a panic.
pub fn fuzz(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(message) = RegistryConfig::parse(text, &BTreeMap::new()) {
        assert!(!message.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_to_the_defaults_and_env_overrides_win() {
        let text = RegistryConfig::template("abruzzo", Path::new("/var/lib/urpnet-registry"));
        let config = RegistryConfig::parse(&text, &BTreeMap::new()).unwrap();
        assert_eq!(config.registry.name, "abruzzo");
        assert_eq!(config.membership.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(
            config.ca.certificate_validity,
            Duration::from_secs(90 * 86400)
        );
        let env = BTreeMap::from([("URPNET_GRPC_LISTEN".to_string(), "127.0.0.1:1".to_string())]);
        let config = RegistryConfig::parse(&text, &env).unwrap();
        assert_eq!(config.grpc.listen.port(), 1);
    }

    #[test]
    fn errors_name_the_key() {
        let base = "[registry]\nname = \"abruzzo\"\ndata_dir = \"d\"\n";
        let err = RegistryConfig::parse(
            &format!("{base}[membership]\nheartbeat_interval = \"soon\"\n"),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            err.starts_with("key `membership.heartbeat_interval`"),
            "{err}"
        );
        let err = RegistryConfig::parse(
            "[registry]\nname = \"Abruzzo!\"\ndata_dir = \"d\"\n",
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(err.starts_with("key `registry.name`"), "{err}");
    }
}
