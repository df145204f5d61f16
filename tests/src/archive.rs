//! Helpers for archive tests: tickets full of personal data, closed; signed
//! batches pushed as a member; the registry's archive API; a registry as a
//! child process for crash tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use prost::Message as _;
use tonic::transport::Channel;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::tls::TlsMaterial;
use urpnet_proto::v1::archive_admin_client::ArchiveAdminClient;
use urpnet_proto::v1::archive_client::ArchiveClient;
use urpnet_proto::v1::{
    ArchiveBatch, ArchiveQueryRequest, ArchiveQueryResponse, ArchiveRecord, ArchiveStatsRequest,
    ArchiveStatsResponse, ChangeStatusRequest, CitizenContact, Coordinates, Location, Outcome,
    PayloadKind, PushArchiveRequest, PushArchiveResponse, Status,
};
use urpnet_registry::config::RegistryConfig;

use crate::federation::TestRegistry;
use crate::shared::{create, request};
use crate::{Desk, binary, wait_for};

/// Personal data written into every free field of the tickets a privacy
/// test closes. None of it may reach the archive.
pub const PII: &[&str] = &[
    "Giuseppina Esposito",
    "RSSMRA80A01H501U",
    "giuseppina.esposito@example.it",
    "+39 333 1234567",
    "Via Garibaldi 12",
    "42.0851",
    "13.5520",
    "ricoverata al San Salvatore",
];

/// Creates `n` tickets at `desk` in `category` with personal data in every
/// free field, and ends each: every third rejected, the others resolved and
/// closed. Returns their ids.
pub async fn close_tickets(desk: &mut Desk, n: usize, category: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let mut req = request(category, false);
        req.subject = format!("{} chiede di {} ({i})", PII[0], PII[7]);
        req.description = format!(
            "Scrive {} da {} ({}), codice fiscale {}, telefono {}",
            PII[0], PII[4], PII[2], PII[1], PII[3]
        );
        req.location = Some(Location {
            istat_code: "066032".into(),
            address: PII[4].into(),
            coordinates: Some(Coordinates {
                latitude: 42.0851,
                longitude: 13.5520,
            }),
        });
        req.citizen = Some(CitizenContact {
            full_name: PII[0].into(),
            email: PII[2].into(),
            phone: PII[3].into(),
            fiscal_code: PII[1].into(),
        });
        let ticket = create(desk, req).await;
        let reason = format!("risposto a {} al numero {}", PII[0], PII[3]);
        let steps: &[Status] = if i % 3 == 0 {
            &[Status::Rejected]
        } else {
            &[Status::Resolved, Status::Closed]
        };
        for to in steps {
            desk.change_status(ChangeStatusRequest {
                ticket_id: ticket.id.clone(),
                status: *to as i32,
                reason: reason.clone(),
                merged_into: String::new(),
            })
            .await
            .expect("status change");
        }
        ids.push(ticket.id);
    }
    ids
}

/// The archive admin API as the `admin` coordinator.
pub fn admin(registry: &TestRegistry) -> ArchiveAdminClient<Channel> {
    ArchiveAdminClient::new(registry.channel(&registry.coordinator()))
}

/// The archive's stats, `None` while the registry does not answer.
pub async fn stats(admin: &ArchiveAdminClient<Channel>) -> Option<ArchiveStatsResponse> {
    admin
        .clone()
        .archive_stats(ArchiveStatsRequest {})
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

/// Waits until the archive holds exactly `n` records (by its rollup), and
/// returns the stats.
pub async fn wait_records(
    admin: &ArchiveAdminClient<Channel>,
    n: u64,
    deadline: Duration,
) -> ArchiveStatsResponse {
    wait_for(&format!("{n} records in the archive"), deadline, || async {
        stats(admin).await.filter(|s| s.records == n)
    })
    .await
}

/// Runs a query.
pub async fn query(
    admin: &ArchiveAdminClient<Channel>,
    req: ArchiveQueryRequest,
) -> Result<ArchiveQueryResponse, tonic::Status> {
    admin
        .clone()
        .query_archive(req)
        .await
        .map(tonic::Response::into_inner)
}

/// A well-formed record about `territory` in `week` (one in four rejected).
pub fn record(seed: u64, category: &str, territory: &str, week: u32) -> ArchiveRecord {
    // Spread like the keyed hash a node makes (its first byte is the
    // record's key for the published counts' noise).
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut id = mix(seed).to_be_bytes().to_vec();
    id.extend_from_slice(&mix(seed ^ 0x5a5a_5a5a).to_be_bytes());
    ArchiveRecord {
        outcome: if seed.is_multiple_of(4) {
            Outcome::Rejected
        } else {
            Outcome::Answered
        } as i32,
        ..urpnet_examples::samples::archive_record(id, category, territory, week)
    }
}

/// The signed envelope of a batch of encoded records.
pub fn signed_batch(signer: &NodeSigner, records: Vec<Vec<u8>>) -> urpnet_proto::v1::Signed {
    let batch = ArchiveBatch {
        author: signer.node().to_string(),
        first_seq: 1,
        records,
    };
    signer.sign(PayloadKind::ArchiveBatch, batch.encode_to_vec())
}

/// Pushes records as a member (its certificate and signing key).
pub async fn push(
    registry: &TestRegistry,
    material: &TlsMaterial,
    signer: &NodeSigner,
    records: &[ArchiveRecord],
) -> Result<PushArchiveResponse, tonic::Status> {
    let signed = signed_batch(signer, records.iter().map(|r| r.encode_to_vec()).collect());
    ArchiveClient::new(registry.channel(material))
        .push_archive(PushArchiveRequest {
            batch: Some(signed),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A registry running as a child process on a fixed port, for crash tests.
#[derive(Debug)]
pub struct ProcessRegistry {
    /// Its configuration (CA made).
    pub config: RegistryConfig,
    /// The config file.
    pub config_path: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    child: tokio::process::Child,
    log_path: PathBuf,
}

impl ProcessRegistry {
    /// Makes the CA (if missing) and starts `urpnet-registry serve` on the
    /// address in `config` (0 = a free port now).
    pub async fn start(config: &RegistryConfig) -> ProcessRegistry {
        let mut config = config.clone();
        if config.grpc.listen.port() == 0 {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
            config.grpc.listen = probe.local_addr().expect("addr");
        }
        config.metrics.listen = String::new();
        config.dashboard.listen = "127.0.0.1:0".into();
        urpnet_registry::server::ca_init(&config)
            .await
            .expect("ca init");
        let base = config
            .registry
            .data_dir
            .parent()
            .expect("parent")
            .to_path_buf();
        let config_path = base.join("urpnet-registry.toml");
        std::fs::write(&config_path, toml::to_string(&config).expect("toml")).expect("write");
        let log_path = base.join(format!("registry-{}.log", ulid::Ulid::new()));
        let child = tokio::process::Command::new(binary("urpnet-registry"))
            .arg("--config")
            .arg(&config_path)
            .arg("serve")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn urpnet-registry");
        let addr = config.grpc.listen;
        let mut registry = ProcessRegistry {
            config,
            config_path,
            addr,
            child,
            log_path,
        };
        let admin = registry.admin();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while stats(&admin).await.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if ready.is_err() || registry.child.try_wait().ok().flatten().is_some() {
            panic!("registry process did not start:\n{}", registry.log());
        }
        registry
    }

    /// `https://<addr>`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A channel presenting the local `admin` coordinator's certificate.
    pub fn coordinator_channel(&self) -> Channel {
        let material =
            urpnet_registry::registry::paths::coordinator_tls(&self.config.registry.data_dir)
                .load()
                .expect("coordinator certificate");
        urpnet_proto::tls::channel_to_registry(
            &self.endpoint(),
            material.client_config().expect("client config"),
            Duration::from_secs(5),
        )
        .expect("channel")
    }

    /// The archive admin API.
    pub fn admin(&self) -> ArchiveAdminClient<Channel> {
        ArchiveAdminClient::new(self.coordinator_channel())
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `kill -9`.
    pub async fn kill9(mut self) -> RegistryConfig {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reap");
        self.config
    }
}
