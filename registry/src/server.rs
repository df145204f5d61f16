//! The registry daemon: set-up of the data directory and the CA (`init`,
//! `ca ...`), and `run`, which serves `Registry` and `RegistryAdmin` over
//! mutual TLS with health, reflection and metrics until shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::telemetry::{self, GrpcMetricsLayer};
use urpnet_proto::tls::{
    self, CertRequest, FederationCa, Identity, ReloadableTls, TlsFiles, TlsMaterial,
};
use urpnet_proto::v1::archive_admin_server::ArchiveAdminServer;
use urpnet_proto::v1::archive_server::ArchiveServer;
use urpnet_proto::v1::registry_admin_server::RegistryAdminServer;
use urpnet_proto::v1::registry_server::RegistryServer;

use crate::archive::service::{ArchiveAdminService, ArchiveService};
use crate::archive::upstream::Upstream;
use crate::archive::{Archive, BATCH_MAX_BYTES};
use crate::config::RegistryConfig;
use crate::error::{RegistryError, RegistryResult};
use crate::registry::{CaFiles, Registry, paths};
use crate::service::{AdminService, Gate, Guarded, RateLimitLayer, RegistryService, limiter};
use crate::store::Store;

/// Lifetime of the federation CA itself.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);

/// How often the registry checks whether its certificate files changed.
pub const TLS_RELOAD_CHECK: Duration = Duration::from_secs(2);

fn internal(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Internal(e.to_string())
}

/// What `ca init` made.
#[derive(Debug)]
pub struct CaInit {
    /// False when a CA existed already and was kept.
    pub created: bool,
    /// The registry's server certificate.
    pub server: tls::CertInfo,
    /// The local coordinator's certificate (`coordinator:admin`).
    pub coordinator: tls::CertInfo,
}

/// Creates the federation CA (unless one exists), the registry's server
/// certificate and the `admin` coordinator's certificate for the local CLI,
/// and records both certificates in the store.
///
/// # Errors
/// I/O, certificate or storage failures.
pub async fn ca_init(config: &RegistryConfig) -> RegistryResult<CaInit> {
    let dir = &config.registry.data_dir;
    let files = CaFiles::of(dir);
    let created = !files.cert.exists();
    let ca = if created {
        let (ca, key_pem) = FederationCa::generate(
            &format!("urpnet federation CA ({})", config.registry.name),
            CA_VALIDITY,
        )
        .map_err(internal)?;
        tls::write_atomic(&files.key, key_pem.as_bytes(), true).map_err(internal)?;
        tls::write_atomic(&files.cert, ca.cert_pem().as_bytes(), false).map_err(internal)?;
        ca
    } else {
        files.load()?
    };
    let store = Store::open(&config.database_url()).await?;
    let server = issue_server_cert(config, &ca, &store).await?;
    let coordinator_files = paths::coordinator_tls(dir);
    let coordinator = if coordinator_files.cert.exists() {
        coordinator_files
            .load()
            .map_err(internal)?
            .info()
            .map_err(internal)?
    } else {
        issue_coordinator(config, &ca, &store, "admin", &coordinator_files).await?
    };
    store.close().await;
    Ok(CaInit {
        created,
        server,
        coordinator,
    })
}

/// Issues (or renews) the registry's own server certificate into
/// `data_dir/tls`; a running registry picks the new files up by itself.
///
/// # Errors
/// I/O, certificate or storage failures.
pub async fn issue_server_cert(
    config: &RegistryConfig,
    ca: &FederationCa,
    store: &Store,
) -> RegistryResult<tls::CertInfo> {
    let identity = Identity::Registry(config.registry.name.clone());
    let files = paths::server_tls(&config.registry.data_dir);
    issue_into(
        config,
        ca,
        store,
        identity,
        config.grpc.hosts.clone(),
        &files,
    )
    .await
}

/// Issues a coordinator certificate (`urn:urpnet:coordinator:<name>`) and
/// writes it, its key and the CA into `files`.
///
/// # Errors
/// A bad name, I/O, certificate or storage failures.
pub async fn issue_coordinator(
    config: &RegistryConfig,
    ca: &FederationCa,
    store: &Store,
    name: &str,
    files: &TlsFiles,
) -> RegistryResult<tls::CertInfo> {
    let id = urpnet_proto::ids::NodeId::new(name)
        .map_err(|e| RegistryError::invalid("name", e.to_string()))?;
    issue_into(
        config,
        ca,
        store,
        Identity::Coordinator(id.to_string()),
        Vec::new(),
        files,
    )
    .await
}

/// Issues a certificate with a key made here, writes both and the CA into
/// `files` (each atomically) and records the certificate.
async fn issue_into(
    config: &RegistryConfig,
    ca: &FederationCa,
    store: &Store,
    identity: Identity,
    hosts: Vec<String>,
    files: &TlsFiles,
) -> RegistryResult<tls::CertInfo> {
    let (issued, key_pem) = ca
        .issue(&CertRequest {
            identity,
            hosts,
            validity: config.ca.certificate_validity,
            not_before: None,
        })
        .map_err(internal)?;
    files
        .save(&TlsMaterial {
            cert_pem: issued.certificate_pem,
            key_pem,
            ca_pem: ca.cert_pem().to_owned(),
        })
        .map_err(internal)?;
    store
        .record_certificate(&issued.info, system_time_ms() as i64)
        .await?;
    Ok(issued.info)
}

/// Sockets the registry serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The mTLS gRPC endpoint.
    pub grpc: TcpListener,
    /// The Prometheus endpoint, if enabled.
    pub metrics: Option<TcpListener>,
    /// The coordinators' dashboard, if enabled.
    pub dashboard: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses.
    ///
    /// # Errors
    /// An address in use or invalid.
    pub async fn bind(config: &RegistryConfig) -> std::io::Result<Self> {
        let grpc = TcpListener::bind(config.grpc.listen).await?;
        let metrics = if config.metrics.listen.is_empty() {
            None
        } else {
            Some(TcpListener::bind(&config.metrics.listen).await?)
        };
        let dashboard = if config.dashboard.listen.is_empty() {
            None
        } else {
            Some(TcpListener::bind(&config.dashboard.listen).await?)
        };
        Ok(Self {
            grpc,
            metrics,
            dashboard,
        })
    }
}

/// Runs the registry until `shutdown`, then stops every part and waits for
/// each.
///
/// # Errors
/// Missing CA or certificates (run `ca init`), storage or server failures.
pub async fn run(
    config: RegistryConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> RegistryResult<()> {
    let dir = config.registry.data_dir.clone();
    let ca = CaFiles::of(&dir).load()?;
    let tls = ReloadableTls::from_files(paths::server_tls(&dir))
        .map_err(|e| internal(format!("{e} (run `urpnet-registry ca init` first)")))?;
    let store = Store::open(&config.database_url()).await?;
    let backend = store.backend();
    let registry = Arc::new(
        Registry::load(
            store.clone(),
            ca,
            config.membership.heartbeat_interval,
            config.ca.certificate_validity,
        )
        .await?,
    );
    registry.reserve_hosts(&config.grpc.hosts);
    let limiter = limiter(&config.limits);
    let max = config.grpc.max_message_bytes;
    let registry_service = tonic::service::interceptor::InterceptedService::new(
        RegistryServer::new(RegistryService::new(registry.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        Gate::new(registry.clone(), Guarded::Registry),
    );
    let admin_service = tonic::service::interceptor::InterceptedService::new(
        RegistryAdminServer::new(AdminService::new(registry.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        Gate::new(registry.clone(), Guarded::Admin),
    );
    let archive = Arc::new(Archive::new(
        store.pool().clone(),
        backend,
        &config.database_url(),
        config.archive.k,
    ));
    // A full signed batch plus framing must fit whatever max_message_bytes is.
    let archive_max = max.max(BATCH_MAX_BYTES + 64 * 1024);
    let archive_service = tonic::service::interceptor::InterceptedService::new(
        ArchiveServer::new(ArchiveService::new(registry.clone(), archive.clone()))
            .max_decoding_message_size(archive_max)
            .max_encoding_message_size(max),
        Gate::new(registry.clone(), Guarded::Registry),
    );
    let archive_admin_service = tonic::service::interceptor::InterceptedService::new(
        ArchiveAdminServer::new(ArchiveAdminService::new(archive.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        Gate::new(registry.clone(), Guarded::Admin),
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ArchiveServer<ArchiveService>>().await;
    health
        .set_serving::<ArchiveAdminServer<ArchiveAdminService>>()
        .await;
    health
        .set_serving::<RegistryServer<RegistryService>>()
        .await;
    health
        .set_serving::<RegistryAdminServer<AdminService>>()
        .await;
    let (reflection_v1, reflection_v1alpha) = telemetry::reflection_services(&[
        "urpnet.v1.Registry",
        "urpnet.v1.RegistryAdmin",
        "urpnet.v1.Archive",
        "urpnet.v1.ArchiveAdmin",
    ])
    .map_err(internal)?;

    let addr = listeners.grpc.local_addr().map_err(internal)?;
    let metrics_task = listeners.metrics.map(|listener| {
        tracing::info!(addr = ?listener.local_addr().ok(), "metrics endpoint listening");
        tokio::spawn(telemetry::serve_metrics(listener, shutdown.clone()))
    });
    let dashboard_task = match listeners.dashboard {
        Some(listener) => {
            let state = crate::dashboard::DashboardState::new(
                config.clone(),
                registry.clone(),
                archive.clone(),
            )?;
            Some(tokio::spawn(crate::dashboard::serve(
                std::sync::Arc::new(state),
                listener,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let watch_task = tokio::spawn(tls.clone().watch(TLS_RELOAD_CHECK, shutdown.clone()));
    let sweep_task = tokio::spawn(sweep(registry.clone(), shutdown.clone()));
    let upstream_task = (!config.upstream.endpoint.is_empty()).then(|| {
        tracing::info!(endpoint = %config.upstream.endpoint, member = %config.upstream.member_id, "archive replicates upward");
        tokio::spawn(
            Upstream::new(archive.clone(), config.upstream.clone(), dir.clone())
                .run(shutdown.clone()),
        )
    });
    let info = tls.info();
    tracing::info!(
        registry = %config.registry.name,
        grpc = %addr,
        backend = ?backend,
        members = registry.membership().list().0.len(),
        taxonomy = registry.taxonomy().version(),
        certificate = %info.serial,
        "registry ready"
    );
    let incoming = tls::incoming(listeners.grpc, tls, "registry", shutdown.clone());
    let served = telemetry::server_builder()
        .layer(GrpcMetricsLayer::new("registry"))
        .layer(RateLimitLayer::new(limiter))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(registry_service)
        .add_service(admin_service)
        .add_service(archive_service)
        .add_service(archive_admin_service)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned())
        .await;
    shutdown.cancel();
    for (name, task) in [("tls watch", watch_task), ("health sweep", sweep_task)] {
        if let Err(e) = task.await {
            tracing::warn!(task = name, error = %e, "task panicked");
        }
    }
    if let Some(task) = dashboard_task
        && let Ok(Err(e)) = task.await
    {
        tracing::warn!(error = %e, "dashboard failed");
    }
    if let Some(task) = upstream_task
        && let Err(e) = task.await
    {
        tracing::warn!(task = "upstream", error = %e, "task panicked");
    }
    if let Some(task) = metrics_task
        && let Ok(Err(e)) = task.await
    {
        tracing::warn!(error = %e, "metrics endpoint failed");
    }
    archive.close().await;
    store.close().await;
    tracing::info!(registry = %config.registry.name, "registry stopped");
    served.map_err(|e| internal(format!("grpc server: {e}")))
}

/// Every interval: logs members that became unreachable or came back, and
/// publishes counts by health.
async fn sweep(registry: Arc<Registry>, shutdown: CancellationToken) {
    let interval = registry.membership().interval();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let (changes, counts) = registry.membership().sweep();
        for (id, health) in changes {
            match health {
                urpnet_proto::v1::Health::Unreachable => {
                    tracing::warn!(member = %id, "member unreachable (3 heartbeats missed)")
                }
                urpnet_proto::v1::Health::Reachable => {
                    tracing::info!(member = %id, "member reachable")
                }
                urpnet_proto::v1::Health::Unknown => {}
            }
        }
        for (i, label) in ["unknown", "reachable", "unreachable"].iter().enumerate() {
            metrics::gauge!("urpnet_registry_members", "health" => *label).set(counts[i] as f64);
        }
    }
}

/// Writes a commented configuration to `path` (refusing to overwrite) and
/// runs [`ca_init`].
///
/// # Errors
/// An existing file, I/O, certificate or storage failures.
pub async fn init(
    path: &Path,
    name: &str,
    data_dir: &Path,
) -> anyhow::Result<(RegistryConfig, CaInit)> {
    if path.exists() {
        anyhow::bail!(
            "{} exists already; edit it or remove it first",
            path.display()
        );
    }
    let text = RegistryConfig::template(name, data_dir);
    let config =
        RegistryConfig::parse(&text, &Default::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(data_dir)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    let made = ca_init(&config).await?;
    Ok((config, made))
}
