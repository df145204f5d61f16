//! The node daemon: binds nothing itself (listeners come from the caller, so
//! tests bind `127.0.0.1:0`), serves the Desk with health and reflection, the
//! metrics endpoint, and stops everything on one shutdown token.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::telemetry::{self, GrpcMetricsLayer};
use urpnet_proto::v1::appointment_desk_server::AppointmentDeskServer;
use urpnet_proto::v1::appointment_peer_server::AppointmentPeerServer;
use urpnet_proto::v1::archive_desk_server::ArchiveDeskServer;
use urpnet_proto::v1::charter_desk_server::CharterDeskServer;
use urpnet_proto::v1::desk_server::DeskServer;
use urpnet_proto::v1::faq_desk_server::FaqDeskServer;
use urpnet_proto::v1::faq_exchange_server::FaqExchangeServer;

use crate::auth::Authenticator;
use crate::casework::TicketDesk;
use crate::config::NodeConfig;
use crate::desk::DeskService;
use crate::error::{NodeError, NodeResult};
use crate::faq::FaqBook;
use crate::faq::service::FaqDeskService;
use crate::peering::service::PeeringService;
use crate::peering::{PeeringContext, anti_entropy, delivery, equivocation};
use crate::registry_link::{self, Federation, RegistryLink};
use crate::replica::exchange::{ExchangeService, Kinds};
use crate::store::{Store, StoreOptions};
use crate::taxonomy::TaxonomyHandle;

/// Sockets the node serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The Desk gRPC API.
    pub desk: TcpListener,
    /// The Prometheus endpoint, if enabled.
    pub metrics: Option<TcpListener>,
    /// The Peering service (mutual TLS), when the node is in a federation.
    pub peering: Option<TcpListener>,
    /// The public HTTP side (Open311, tracking), when `public.listen` is set.
    pub public: Option<TcpListener>,
    /// The operators' web console, when `console.listen` is set.
    pub console: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of the configuration.
    ///
    /// # Errors
    /// When an address is in use or invalid.
    pub async fn bind(config: &NodeConfig) -> std::io::Result<Self> {
        let desk = TcpListener::bind(config.desk.listen).await?;
        let metrics = if config.metrics.listen.is_empty() {
            None
        } else {
            Some(TcpListener::bind(&config.metrics.listen).await?)
        };
        let peering = if config.registry.endpoint.is_empty() {
            None
        } else {
            Some(TcpListener::bind(config.peering.listen).await?)
        };
        let public = if config.public.listen.is_empty() {
            None
        } else {
            Some(TcpListener::bind(&config.public.listen).await?)
        };
        let console = if config.console.listen.is_empty() {
            None
        } else {
            Some(TcpListener::bind(&config.console.listen).await?)
        };
        Ok(Self {
            desk,
            metrics,
            peering,
            public,
            console,
        })
    }
}

/// Paths inside a node's data directory.
pub mod paths {
    use std::path::{Path, PathBuf};

    /// The signing key.
    pub fn signing_key(data_dir: &Path) -> PathBuf {
        data_dir.join("node.key")
    }
    /// The first supervisor's token, written by `init` for the local CLI.
    pub fn operator_token(data_dir: &Path) -> PathBuf {
        data_dir.join("operator.token")
    }
    /// The signing key's public half, hex, for the coordinator's `enrol`.
    pub fn signing_public(data_dir: &Path) -> PathBuf {
        data_dir.join("node.pub")
    }
    /// Attachment content.
    pub fn attachments(data_dir: &Path) -> PathBuf {
        data_dir.join("attachments")
    }
}

/// Opens the node's store as configured.
///
/// # Errors
/// See [`Store::open`].
pub async fn open_store(config: &NodeConfig) -> NodeResult<(Store, tokio::task::JoinHandle<()>)> {
    Store::open(&StoreOptions {
        url: config.database_url(),
        blob_dir: paths::attachments(&config.node.data_dir),
        max_batch: config.store.max_batch,
        read_connections: config.store.read_connections,
        node: config.node.id.to_string(),
    })
    .await
}

/// Prepares a data directory: creates it, the signing key (if missing), the
/// database schema, and a first `supervisor` operator named `admin` whose
/// token is written to `operator.token` (mode 0600) and returned. Running it
/// again keeps the key and the data, and returns `None`.
///
/// # Errors
/// I/O and storage failures.
pub async fn initialise(config: &NodeConfig) -> NodeResult<Option<String>> {
    let dir = &config.node.data_dir;
    let io = |e: std::io::Error| NodeError::Internal(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let key_path = paths::signing_key(dir);
    if !key_path.exists() {
        NodeSigner::generate(config.node.id.clone())
            .save(&key_path)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
    }
    let signer = NodeSigner::load(config.node.id.clone(), &key_path)
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    std::fs::write(
        paths::signing_public(dir),
        format!("{}\n", hex::encode(signer.verifying_key().as_bytes())),
    )
    .map_err(io)?;
    let tls = urpnet_proto::tls::TlsFiles::in_dir(&config.tls_dir());
    let csr_path = config.tls_dir().join("request.csr");
    if !tls.key.exists() {
        let key =
            urpnet_proto::tls::generate_key().map_err(|e| NodeError::Internal(e.to_string()))?;
        urpnet_proto::tls::write_atomic(&tls.key, key.as_bytes(), true).map_err(io)?;
    }
    if !csr_path.exists() {
        let key = std::fs::read_to_string(&tls.key).map_err(io)?;
        let csr = urpnet_proto::tls::make_csr(&key, config.node.id.as_str())
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        std::fs::write(&csr_path, csr).map_err(io)?;
    }
    let (store, writer) = open_store(config).await?;
    let token_path = paths::operator_token(dir);
    let token = if crate::auth::tables::all(&store)
        .await?
        .iter()
        .any(|o| o.name == "admin")
    {
        None
    } else {
        let now = urpnet_proto::hlc::system_time_ms() as i64;
        let (_, token) =
            crate::auth::add_operator(&store, "admin", crate::auth::Role::Supervisor, now).await?;
        urpnet_proto::signing::write_private_file(&token_path, format!("{token}\n").as_bytes())
            .map_err(io)?;
        Some(token)
    };
    store.close().await;
    drop(store);
    let _ = writer.await;
    Ok(token)
}

/// Runs the node until `shutdown` is cancelled, then stops every part and
/// waits for each (the store's writer commits what it holds first).
///
/// # Errors
/// When the store cannot be opened, the signing key is missing, or a server
/// fails.
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> NodeResult<()> {
    let node_id = config.node.id.clone();
    let key_path = paths::signing_key(&config.node.data_dir);
    let signer = NodeSigner::load(node_id.clone(), &key_path)
        .map_err(|e| NodeError::Internal(format!("{e} (run `urpnet-node init` first)")))?;
    let (store, writer) = open_store(&config).await?;
    let backend = store.backend();
    let max_message = config.desk.max_message_bytes;
    let (cached_members, cached_taxonomy) = registry_link::load_cache(&config.node.data_dir);
    let taxonomy = Arc::new(TaxonomyHandle::new(
        cached_taxonomy.unwrap_or_else(crate::taxonomy::builtin),
    ));
    let federation = Arc::new(Federation::default());
    let restored = config.node.data_dir.join(crate::backup::RESTORED_MARKER);
    if restored.exists() {
        if config.registry.endpoint.is_empty() {
            // Alone, there is nobody to catch up with.
            let _ = std::fs::remove_file(&restored);
        } else {
            tracing::warn!(
                "restored from a backup: writes wait until every peer has been heard (anti-entropy)"
            );
            federation.set_catching_up(true);
        }
    }
    if let Some(members) = cached_members {
        federation.replace(members);
    }
    let link_task = (!config.registry.endpoint.is_empty()).then(|| {
        let link = RegistryLink::new(
            config.clone(),
            store.clone(),
            taxonomy.clone(),
            federation.clone(),
        );
        tokio::spawn(link.run(shutdown.clone()))
    });
    let faq_signer = NodeSigner::load(node_id.clone(), &key_path)
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    let desk = Arc::new(
        TicketDesk::new(
            config.clone(),
            store.clone(),
            signer,
            taxonomy.clone(),
            federation.clone(),
        )
        .await?,
    );
    let faq = FaqBook::open(
        config.clone(),
        store.clone(),
        faq_signer,
        desk.clock(),
        federation.clone(),
        taxonomy.clone(),
    )
    .await?;
    faq.attach_desk(desk.clone());
    let charter = crate::charter::CharterBook::open(
        config.clone(),
        store.clone(),
        NodeSigner::load(node_id.clone(), &key_path)
            .map_err(|e| NodeError::Internal(e.to_string()))?,
        desk.clock(),
        federation.clone(),
        taxonomy,
    )
    .await?;
    faq.attach_charter(charter.clone());
    let archiver = crate::archive::Archiver::open(
        config.clone(),
        store.clone(),
        federation.clone(),
        NodeSigner::load(node_id.clone(), &key_path)
            .map_err(|e| NodeError::Internal(e.to_string()))?,
    )?;
    let archive_task = tokio::spawn(archiver.clone().run(shutdown.clone()));
    let peering = PeeringContext::new(
        config.clone(),
        store.clone(),
        federation.clone(),
        desk.clock(),
    );
    peering.load_quarantine().await?;
    desk.attach_peering(peering.clone());
    let appointments = crate::appointments::Appointments::new(
        config.clone(),
        store.clone(),
        desk.clone(),
        charter.clone(),
    )?;
    appointments.attach_peering(peering.clone());
    appointments.set_base_url(
        config.public_base_url(listeners.public.as_ref().and_then(|l| l.local_addr().ok())),
    );
    let shared = Kinds::default().with(faq.replica()).with(charter.replica());
    let mut peering_tasks = tokio::task::JoinSet::new();
    if let Some(listener) = listeners.peering {
        peering_tasks.spawn(serve_peering(
            peering.clone(),
            shared.clone(),
            appointments.clone(),
            listener,
            shutdown.clone(),
        ));
    }
    if !config.registry.endpoint.is_empty() {
        peering_tasks.spawn(delivery::run(peering.clone(), shutdown.clone()));
        peering_tasks.spawn(delivery::gauges(peering.clone(), shutdown.clone()));
        peering_tasks.spawn(anti_entropy::run(peering.clone(), shutdown.clone()));
        peering_tasks.spawn(equivocation::run(peering.clone(), shutdown.clone()));
        peering_tasks.spawn(crate::replica::exchange::run(
            shared.clone(),
            config.clone(),
            peering.clone(),
            shutdown.clone(),
        ));
    }
    let auth = Arc::new(Authenticator::new(store.clone()).with_limits(
        urpnet_proto::limits::PerIdentity::new(
            "desk",
            config.desk.rate_per_second,
            config.desk.rate_burst,
        ),
    ));
    let faq_service = FaqDeskServer::new(FaqDeskService::new(faq.clone(), auth.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let charter_service = CharterDeskServer::new(crate::charter::service::CharterDeskService::new(
        charter.clone(),
        auth.clone(),
    ))
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_message);
    let archive_service = ArchiveDeskServer::new(crate::archive::ArchiveDeskService::new(
        archiver.clone(),
        auth.clone(),
    ))
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_message);
    let appointment_service =
        AppointmentDeskServer::new(crate::appointments::service::AppointmentDeskService::new(
            appointments.clone(),
            auth.clone(),
        ))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let public_addr = listeners.public.as_ref().and_then(|l| l.local_addr().ok());
    let notifier = Arc::new(crate::notify::Notifier::new(
        config.clone(),
        desk.clone(),
        federation.clone(),
        public_addr,
    )?);
    notifier.attach_appointments(appointments.clone());
    let notify_task = tokio::spawn(notifier.run(shutdown.clone()));
    let purge_task = tokio::spawn(crate::privacy::run_purge(
        desk.clone(),
        config.privacy.contact_retention,
        config.privacy.purge_interval,
        shutdown.clone(),
    ));
    let public_task = listeners.public.map(|listener| {
        let state = Arc::new(
            crate::public::PublicState::new(
                config.clone(),
                desk.clone(),
                auth.clone(),
                federation.clone(),
                charter.clone(),
                listener.local_addr().ok(),
            )
            .with_appointments(appointments.clone())
            .with_faq(faq.clone()),
        );
        tokio::spawn(crate::public::serve(state, listener, shutdown.clone()))
    });
    let console_task = listeners.console.map(|listener| {
        let state = Arc::new(
            crate::console::ConsoleState::new(
                config.clone(),
                desk.clone(),
                auth.clone(),
                Some(appointments.clone()),
                federation.clone(),
            )
            .with_faq(faq.clone()),
        );
        tokio::spawn(crate::console::serve(state, listener, shutdown.clone()))
    });
    let service = DeskServer::new(DeskService::new(desk, auth))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<DeskServer<DeskService>>().await;
    health.set_serving::<FaqDeskServer<FaqDeskService>>().await;
    health
        .set_serving::<CharterDeskServer<crate::charter::service::CharterDeskService>>()
        .await;
    health
        .set_serving::<ArchiveDeskServer<crate::archive::ArchiveDeskService>>()
        .await;
    health
        .set_serving::<AppointmentDeskServer<crate::appointments::service::AppointmentDeskService>>(
        )
        .await;
    // The registry's reachability as a health service of its own: the
    // node's services stay SERVING while it works on its cached lists.
    {
        let health = health.clone();
        let mut reach = federation.watch_reach();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            use crate::registry_link::{REGISTRY_HEALTH, RegistryReach};
            use tonic_health::ServingStatus;
            loop {
                let status = match *reach.borrow_and_update() {
                    RegistryReach::Reachable => ServingStatus::Serving,
                    RegistryReach::Unreachable { .. } => ServingStatus::NotServing,
                    RegistryReach::Unknown => ServingStatus::Unknown,
                };
                health.set_service_status(REGISTRY_HEALTH, status).await;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = reach.changed() => if changed.is_err() { return },
                }
            }
        });
    }
    let (reflection_v1, reflection_v1alpha) = telemetry::reflection_services(&[
        "urpnet.v1.Desk",
        "urpnet.v1.FaqDesk",
        "urpnet.v1.CharterDesk",
        "urpnet.v1.ArchiveDesk",
        "urpnet.v1.AppointmentDesk",
    ])
    .map_err(|e| NodeError::Internal(format!("reflection: {e}")))?;

    let desk_addr = listeners
        .desk
        .local_addr()
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    let metrics_task = listeners.metrics.map(|listener| {
        let addr = listener.local_addr().ok();
        tracing::info!(addr = ?addr, "metrics endpoint listening");
        tokio::spawn(telemetry::serve_metrics(listener, shutdown.clone()))
    });
    tracing::info!(node = %node_id, desk = %desk_addr, backend = ?backend, "node ready");

    let incoming =
        tonic::transport::server::TcpIncoming::from(listeners.desk).with_nodelay(Some(true));
    let served = telemetry::server_builder()
        .layer(GrpcMetricsLayer::new("node"))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .add_service(faq_service)
        .add_service(charter_service)
        .add_service(archive_service)
        .add_service(appointment_service)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned())
        .await;
    shutdown.cancel();
    while let Some(done) = peering_tasks.join_next().await {
        if let Err(e) = done {
            tracing::warn!(error = %e, "a peering task panicked");
        }
    }
    if let Err(e) = archive_task.await {
        tracing::warn!(error = %e, "archive task panicked");
    }
    drop(archiver);
    if let Some(task) = link_task
        && let Err(e) = task.await
    {
        tracing::warn!(error = %e, "registry link panicked");
    }
    if let Err(e) = purge_task.await {
        tracing::warn!(error = %e, "retention purge panicked");
    }
    if let Err(e) = notify_task.await {
        tracing::warn!(error = %e, "notifier panicked");
    }
    if let Some(task) = public_task {
        match task.await {
            Ok(Ok(())) => tracing::debug!("public HTTP stopped"),
            Ok(Err(e)) => tracing::warn!(error = %e, "public HTTP failed"),
            Err(e) => tracing::warn!(error = %e, "public HTTP task panicked"),
        }
    }
    if let Some(task) = console_task {
        match task.await {
            Ok(Ok(())) => tracing::debug!("console stopped"),
            Ok(Err(e)) => tracing::warn!(error = %e, "console failed"),
            Err(e) => tracing::warn!(error = %e, "console task panicked"),
        }
    }
    if let Some(task) = metrics_task {
        match task.await {
            Ok(Ok(())) => tracing::debug!("metrics endpoint stopped"),
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics endpoint failed"),
            Err(e) => tracing::warn!(error = %e, "metrics task panicked"),
        }
    }
    // The writer ends when the last store handle goes, peering's and the
    // FAQ and charter books' included.
    drop(peering);
    drop(faq);
    drop(charter);
    drop(shared);
    drop(appointments);
    store.close().await;
    drop(store);
    let _ = writer.await;
    tracing::info!(node = %node_id, "node stopped");
    served.map_err(|e| NodeError::Internal(format!("desk server: {e}")))
}

/// How often the TLS files are checked for a renewed certificate.
const TLS_RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves `Peering` on `listener` with mutual TLS once this node's
/// certificate is in place (a node started before its enrolment begins
/// serving when the files appear), until `shutdown`.
async fn serve_peering(
    ctx: Arc<PeeringContext>,
    shared: Kinds,
    appointments: Arc<crate::appointments::Appointments>,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    use tonic::service::interceptor::InterceptedService;
    use urpnet_proto::tls::{self, ReloadableTls, TlsFiles};
    use urpnet_proto::v1::peering_server::PeeringServer;
    let files = TlsFiles::in_dir(&ctx.config.tls_dir());
    let mut warned = false;
    let tls = loop {
        match ReloadableTls::from_files(files.clone()) {
            Ok(tls) => break tls,
            Err(error) => {
                if !warned {
                    tracing::warn!(%error, dir = %ctx.config.tls_dir().display(), "peering waits for this node's certificate (see docs/operations.md §8)");
                    warned = true;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(TLS_RELOAD_CHECK) => {}
                }
            }
        }
    };
    tokio::spawn(tls.clone().watch(TLS_RELOAD_CHECK, shutdown.clone()));
    let addr = listener.local_addr().ok();
    let max = ctx.config.peering.max_message_bytes;
    // The gate runs as an interceptor: a stranger's body is never decoded.
    let gate = crate::peering::PeerGate::new(ctx.clone());
    let exchange = InterceptedService::new(
        FaqExchangeServer::new(ExchangeService::new(shared, ctx.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        gate.clone(),
    );
    let booking = InterceptedService::new(
        AppointmentPeerServer::new(crate::appointments::service::AppointmentPeerService::new(
            appointments,
            ctx.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max),
        gate.clone(),
    );
    let service = InterceptedService::new(
        PeeringServer::new(PeeringService::new(ctx))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        gate,
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<PeeringServer<PeeringService>>().await;
    health
        .set_serving::<FaqExchangeServer<ExchangeService>>()
        .await;
    let (reflection_v1, reflection_v1alpha) = match telemetry::reflection_services(&[
        "urpnet.v1.Peering",
        "urpnet.v1.FaqExchange",
        "urpnet.v1.AppointmentPeer",
    ]) {
        Ok(services) => services,
        Err(error) => {
            tracing::error!(%error, "peering cannot serve reflection");
            return;
        }
    };
    let incoming = tls::incoming(listener, tls, "peering", shutdown.clone());
    tracing::info!(addr = ?addr, "peering listening (mutual TLS)");
    let served = telemetry::server_builder()
        .layer(GrpcMetricsLayer::new("peering"))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .add_service(exchange)
        .add_service(booking)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "peering server failed");
    }
}
