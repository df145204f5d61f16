//! A federation on loopback for the demo and the benchmarks: a real registry
//! and real nodes in-process, joined the way an operator joins them —
//! `initialise` makes each node's keys and CSR, a coordinator enrols it over
//! the registry's mTLS admin API, and the returned certificate goes into the
//! node's TLS directory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use urpnet_node::NodeConfig;
use urpnet_proto::tls::{self, TlsFiles, TlsMaterial};
use urpnet_proto::v1::registry_admin_client::RegistryAdminClient;
use urpnet_proto::v1::registry_client::RegistryClient;
use urpnet_proto::v1::{EnrolRequest, Level};
use urpnet_registry::config::RegistryConfig;
use urpnet_registry::registry::paths;
use urpnet_registry::server::{self, Listeners};

/// A registry running in this process.
#[derive(Debug)]
pub struct RunningRegistry {
    /// Its configuration.
    pub config: RegistryConfig,
    /// Its mTLS gRPC address.
    pub addr: SocketAddr,
    /// Its `/metrics` address, when `metrics.listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// Its coordinators' dashboard (a free loopback port).
    pub dashboard_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<urpnet_registry::error::RegistryResult<()>>,
}

/// Creates the CA if missing, binds `127.0.0.1:0` and runs a registry until
/// [`RunningRegistry::stop`]; returns once it answers health checks.
///
/// # Errors
/// CA, bind or start-up failures.
pub async fn start_registry(mut config: RegistryConfig) -> anyhow::Result<RunningRegistry> {
    server::ca_init(&config).await?;
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let addr = grpc.local_addr()?;
    config.grpc.listen = addr;
    let metrics = if config.metrics.listen.is_empty() {
        None
    } else {
        Some(TcpListener::bind(&config.metrics.listen).await?)
    };
    let metrics_addr = metrics.as_ref().map(TcpListener::local_addr).transpose()?;
    // The coordinators' dashboard, on a free loopback port.
    let dashboard = if config.dashboard.listen.is_empty() {
        None
    } else {
        Some(TcpListener::bind("127.0.0.1:0").await?)
    };
    let dashboard_addr = dashboard
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::run(
        config.clone(),
        Listeners {
            grpc,
            metrics,
            dashboard,
        },
        shutdown.clone(),
    ));
    let registry = RunningRegistry {
        dashboard_addr,
        config,
        addr,
        metrics_addr,
        shutdown,
        task,
    };
    registry.wait_ready(Duration::from_secs(30)).await?;
    Ok(registry)
}

impl RunningRegistry {
    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The local coordinator's certificate, key and CA.
    ///
    /// # Errors
    /// Unreadable files.
    pub fn coordinator(&self) -> anyhow::Result<TlsMaterial> {
        Ok(paths::coordinator_tls(&self.config.registry.data_dir).load()?)
    }

    /// A channel presenting `material`.
    ///
    /// # Errors
    /// Bad material.
    pub fn channel(&self, material: &TlsMaterial) -> anyhow::Result<Channel> {
        Ok(tls::channel_to_registry(
            &self.endpoint(),
            material.client_config()?,
            Duration::from_secs(5),
        )?)
    }

    /// The admin API as the local coordinator.
    ///
    /// # Errors
    /// Unreadable coordinator files.
    pub fn admin(&self) -> anyhow::Result<RegistryAdminClient<Channel>> {
        Ok(RegistryAdminClient::new(
            self.channel(&self.coordinator()?)?,
        ))
    }

    /// The node API presenting `material`.
    ///
    /// # Errors
    /// Bad material.
    pub fn registry_as(&self, material: &TlsMaterial) -> anyhow::Result<RegistryClient<Channel>> {
        Ok(RegistryClient::new(self.channel(material)?))
    }

    /// Waits until the registry answers gRPC health over TLS.
    ///
    /// # Errors
    /// When it does not within `deadline`.
    pub async fn wait_ready(&self, deadline: Duration) -> anyhow::Result<()> {
        wait_serving(&self.endpoint(), &self.coordinator()?.ca_pem, deadline).await
    }

    /// Stops the registry and waits for it.
    ///
    /// # Errors
    /// If it ended with an error.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        (&mut self.task).await??;
        Ok(())
    }
}

impl Drop for RunningRegistry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits until the registry at `endpoint` answers gRPC health over TLS
/// (trusting `ca_pem`, presenting no certificate).
///
/// # Errors
/// When it does not within `deadline`.
pub async fn wait_serving(endpoint: &str, ca_pem: &str, deadline: Duration) -> anyhow::Result<()> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let config = tls::anonymous_client_config(ca_pem)?;
    let start = Instant::now();
    loop {
        let channel = tls::channel_to_registry(endpoint, config.clone(), Duration::from_secs(2))?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "urpnet.v1.Registry".into(),
            })
            .await
            .map(|r| r.into_inner().status);
        if status.ok() == Some(ServingStatus::Serving as i32) {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < deadline,
            "registry at {endpoint} did not serve within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Points the node of `config` at the registry, prepares its data directory
/// (signing key, TLS key and CSR), enrols it through `admin` exactly as
/// `urpnet-registry enrol --csr` does, and installs the certificate.
///
/// # Errors
/// Initialisation, enrolment or I/O failures.
pub async fn enrol_node(
    admin: &mut RegistryAdminClient<Channel>,
    registry_endpoint: &str,
    config: &mut NodeConfig,
    level: Level,
    territory: &[&str],
) -> anyhow::Result<()> {
    config.registry.endpoint = registry_endpoint.to_owned();
    if config.registry.advertise.is_empty() {
        // A free loopback port for the node's Peering service, advertised to
        // its peers (and written into its certificate's hosts). It is bound
        // only later, at start: taken below the kernel's ephemeral range, so
        // no `bind(:0)` elsewhere in the process (desks, metrics, proxies,
        // other tests) can take it meanwhile.
        let addr = free_port_below_ephemeral()?;
        config.peering.listen = addr;
        config.registry.advertise = format!("https://{addr}");
    }
    urpnet_node::server::initialise(config).await?;
    let dir = config.tls_dir();
    let csr_pem = std::fs::read_to_string(dir.join("request.csr")).context("node CSR")?;
    let key_hex = std::fs::read_to_string(urpnet_node::server::paths::signing_public(
        &config.node.data_dir,
    ))
    .context("node.pub")?;
    let resp = admin
        .enrol(EnrolRequest {
            id: config.node.id.to_string(),
            display_name: config.node.name.clone(),
            level: level as i32,
            territory: territory.iter().map(|s| s.to_string()).collect(),
            endpoint: config.registry.advertise.clone(),
            signing_key: hex::decode(key_hex.trim())?,
            csr_pem,
        })
        .await
        .with_context(|| format!("enrolling {}", config.node.id))?
        .into_inner();
    let files = TlsFiles::in_dir(&dir);
    tls::write_atomic(&files.cert, resp.certificate_pem.as_bytes(), false)?;
    tls::write_atomic(&files.ca, resp.ca_pem.as_bytes(), false)?;
    Ok(())
}

/// A node running in this process, started by [`start_node`].
#[derive(Debug)]
pub struct RunningNode {
    /// Its configuration.
    pub config: NodeConfig,
    /// Where its Desk listens.
    pub desk_addr: SocketAddr,
    /// Where its public HTTP side listens, when `public.listen` is set.
    pub public_addr: Option<SocketAddr>,
    /// Where its operators' console listens (a free loopback port).
    pub console_addr: Option<SocketAddr>,
    /// The `admin` supervisor token written by `initialise`.
    pub token: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<urpnet_node::NodeResult<()>>,
}

/// Runs an initialised (and, for a federation, enrolled) node: the Desk on a
/// free loopback port, Peering on `peering.listen` when a registry is set,
/// no metrics endpoint. Returns once the Desk answers.
///
/// # Errors
/// Bind failures, a missing token, a node that does not answer in 30 s.
pub async fn start_node(mut config: NodeConfig) -> anyhow::Result<RunningNode> {
    use urpnet_node::server::{self, Listeners};
    let token = std::fs::read_to_string(server::paths::operator_token(&config.node.data_dir))
        .context("operator token (run initialise first)")?
        .trim()
        .to_string();
    let desk = TcpListener::bind("127.0.0.1:0").await?;
    let desk_addr = desk.local_addr()?;
    config.desk.listen = desk_addr;
    config.metrics.listen = String::new();
    let peering = if config.registry.endpoint.is_empty() {
        None
    } else {
        Some(TcpListener::bind(config.peering.listen).await?)
    };
    // The public side, when configured (port 0: any free port).
    let public = if config.public.listen.is_empty() {
        None
    } else {
        Some(TcpListener::bind(&config.public.listen).await?)
    };
    let public_addr = public.as_ref().and_then(|l| l.local_addr().ok());
    // The console, like the Desk, on a free loopback port.
    let console = if config.console.listen.is_empty() {
        None
    } else {
        Some(TcpListener::bind("127.0.0.1:0").await?)
    };
    let console_addr = console.as_ref().and_then(|l| l.local_addr().ok());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::run(
        config.clone(),
        Listeners {
            desk,
            metrics: None,
            peering,
            public,
            console,
        },
        shutdown.clone(),
    ));
    let node = RunningNode {
        config,
        desk_addr,
        public_addr,
        console_addr,
        token,
        shutdown,
        task,
    };
    let start = Instant::now();
    while node.desk().await.is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "node {} did not answer",
            node.config.node.id
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(node)
}

impl RunningNode {
    /// A Desk client as `admin`.
    ///
    /// # Errors
    /// When the node does not answer.
    pub async fn desk(&self) -> anyhow::Result<urpnet_node::cli::Desk> {
        let desk = urpnet_node::cli::connect(
            &self.desk_addr.to_string(),
            &self.token,
            self.config.desk.max_message_bytes,
        )
        .await?;
        // The channel is lazy: make one cheap call to know the node serves.
        desk.clone()
            .list_tickets(urpnet_proto::v1::ListTicketsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await?;
        Ok(desk)
    }

    /// Stops the node and waits for every part; returns its configuration
    /// so that it can be started again on the same data.
    ///
    /// # Errors
    /// If it ended with an error.
    pub async fn stop(self) -> anyhow::Result<NodeConfig> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(self.config)
    }
}

/// A loopback address on a port in 20000..32000, free when checked. Ports
/// handed out by `bind(127.0.0.1:0)` come from the ephemeral range (32768 and
/// up on Linux), so a port chosen here stays free until it is bound again,
/// unless another pick of this function lands on it.
///
/// # Errors
/// When 200 random ports were all taken.
pub fn free_port_below_ephemeral() -> std::io::Result<std::net::SocketAddr> {
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    let mut last = None;
    for _ in 0..200 {
        let port = rng.gen_range(20_000..32_000);
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return listener.local_addr(),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

/// For benchmarks: a registry (the sample taxonomy, heartbeats every
/// 500 ms) and one node per `(id, name, ISTAT code)` comune under `dir`,
/// enrolled and started with the per-caller rate limits lifted (capacity is
/// measured, not the limits); returns once every node knows every other as
/// active.
///
/// # Errors
/// Any start, enrolment or a member list that does not arrive in 60 s.
pub async fn bench_comuni(
    dir: &std::path::Path,
    comuni: &[(&str, &str, &str)],
) -> anyhow::Result<(RunningRegistry, Vec<RunningNode>)> {
    let mut rconfig = RegistryConfig::new("bench", dir.join("registry"));
    rconfig.membership.heartbeat_interval = Duration::from_millis(500);
    rconfig.metrics.listen = String::new();
    let registry = start_registry(rconfig).await?;
    let mut admin = registry.admin()?;
    admin
        .import_taxonomy(urpnet_proto::v1::ImportTaxonomyRequest {
            toml: include_str!("../taxonomy.toml").into(),
        })
        .await?;
    let mut nodes = Vec::new();
    for (id, name, code) in comuni {
        let mut config = NodeConfig::new(
            urpnet_proto::ids::NodeId::new(*id)?,
            *name,
            dir.join(id).join("data"),
        );
        config.desk.rate_per_second = 1_000_000;
        config.desk.rate_burst = 1_000_000;
        config.peering.rate_per_second = 1_000_000;
        config.peering.rate_burst = 1_000_000;
        enrol_node(
            &mut admin,
            &registry.endpoint(),
            &mut config,
            Level::Comune,
            &[code],
        )
        .await?;
        nodes.push(start_node(config).await?);
    }
    let started = Instant::now();
    for node in &nodes {
        loop {
            let members = urpnet_node::registry_link::load_cache(&node.config.node.data_dir).0;
            if members.is_some_and(|m| nodes.iter().all(|o| m.is_active(o.config.node.id.as_str())))
            {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "members not known"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((registry, nodes))
}
