//! Registries for federation tests: a real `urpnet-registry` in-process on an
//! ephemeral port with its own CA, and helpers that enrol members over the
//! coordinators' mTLS API the way `urpnet-registry enrol` does.

use std::net::SocketAddr;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use urpnet_node::NodeConfig;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::tls::{self, FederationCa, TlsMaterial};
use urpnet_proto::v1::registry_admin_client::RegistryAdminClient;
use urpnet_proto::v1::registry_client::RegistryClient;
use urpnet_proto::v1::{EnrolRequest, ImportTaxonomyRequest, Level};
use urpnet_registry::config::RegistryConfig;
use urpnet_registry::registry::{CaFiles, paths};
use urpnet_registry::server::{self, Listeners};

use crate::{Backend, fresh_postgres_url, wait_for};

/// The sample taxonomy every federation test imports.
pub const SAMPLE_TAXONOMY: &str = include_str!("../../examples/taxonomy.toml");

/// A registry running inside the test process.
#[derive(Debug)]
pub struct TestRegistry {
    /// Its configuration (real data directory).
    pub config: RegistryConfig,
    /// Where its mTLS gRPC endpoint listens.
    pub addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<urpnet_registry::error::RegistryResult<()>>>,
    _dir: Option<TempDir>,
}

impl TestRegistry {
    /// A registry configuration in a new temporary directory, or `None` when
    /// the backend is unavailable.
    pub async fn config(backend: Backend, test: &str) -> Option<(TempDir, RegistryConfig)> {
        let dir = tempfile::Builder::new()
            .prefix("urpnet-registry-test-")
            .tempdir()
            .expect("temp dir");
        let mut config = RegistryConfig::new("test", dir.path().join("data"));
        config.grpc.listen = "127.0.0.1:0".parse().expect("addr");
        config.metrics.listen = "127.0.0.1:0".into();
        if backend == Backend::Postgres {
            config.store.url = fresh_postgres_url(test).await?;
        }
        Some((dir, config))
    }

    /// Starts a registry with default settings on `backend`.
    pub async fn start(backend: Backend, test: &str) -> Option<TestRegistry> {
        let (dir, config) = Self::config(backend, test).await?;
        Some(Self::start_with(config, Some(dir)).await)
    }

    /// Starts a registry with a prepared configuration (CA made if missing).
    pub async fn start_with(config: RegistryConfig, dir: Option<TempDir>) -> TestRegistry {
        urpnet_proto::telemetry::init_logs(Default::default(), "warn");
        server::ca_init(&config).await.expect("ca init");
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let metrics = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let addr = grpc.local_addr().expect("addr");
        let metrics_addr = metrics.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::run(
            config.clone(),
            Listeners {
                grpc,
                metrics: Some(metrics),
            },
            shutdown.clone(),
        ));
        let registry = TestRegistry {
            config,
            addr,
            metrics_addr,
            shutdown,
            task: Some(task),
            _dir: dir,
        };
        registry.wait_ready().await;
        registry
    }

    async fn wait_ready(&self) {
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
        let config = tls::anonymous_client_config(self.ca().cert_pem()).expect("client config");
        wait_for(
            &format!("registry at {} to serve", self.addr),
            Duration::from_secs(30),
            || {
                let config = config.clone();
                let endpoint = self.endpoint();
                async move {
                    let channel = tls::channel(&endpoint, config, Duration::from_secs(2)).ok()?;
                    let status = HealthClient::new(channel)
                        .check(HealthCheckRequest {
                            service: "urpnet.v1.Registry".into(),
                        })
                        .await
                        .ok()?
                        .into_inner()
                        .status;
                    (status == ServingStatus::Serving as i32).then_some(())
                }
            },
        )
        .await;
    }

    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The federation CA (read from the data directory).
    pub fn ca(&self) -> FederationCa {
        CaFiles::of(&self.config.registry.data_dir)
            .load()
            .expect("ca")
    }

    /// The `admin` coordinator's certificate, key and CA.
    pub fn coordinator(&self) -> TlsMaterial {
        paths::coordinator_tls(&self.config.registry.data_dir)
            .load()
            .expect("coordinator material")
    }

    /// A channel presenting `material`.
    pub fn channel(&self, material: &TlsMaterial) -> Channel {
        tls::channel(
            &self.endpoint(),
            material.client_config().expect("client config"),
            Duration::from_secs(5),
        )
        .expect("channel")
    }

    /// The admin API as the `admin` coordinator.
    pub fn admin(&self) -> RegistryAdminClient<Channel> {
        RegistryAdminClient::new(self.channel(&self.coordinator()))
    }

    /// The node API presenting `material`.
    pub fn registry_as(&self, material: &TlsMaterial) -> RegistryClient<Channel> {
        RegistryClient::new(self.channel(material))
    }

    /// Imports the sample taxonomy.
    pub async fn import_sample_taxonomy(&self) {
        self.admin()
            .import_taxonomy(ImportTaxonomyRequest {
                toml: SAMPLE_TAXONOMY.into(),
            })
            .await
            .expect("import sample taxonomy");
    }

    /// Enrols a member with a new TLS key and signing key, as a coordinator
    /// would with the node's CSR; returns its TLS material and signer.
    pub async fn enrol(
        &self,
        id: &str,
        level: Level,
        territory: &[&str],
    ) -> (TlsMaterial, NodeSigner) {
        let signer = NodeSigner::generate(urpnet_proto::ids::NodeId::new(id).expect("id"));
        let key_pem = tls::generate_key().expect("key");
        let csr_pem = tls::make_csr(&key_pem, id).expect("csr");
        let resp = self
            .admin()
            .enrol(EnrolRequest {
                id: id.into(),
                display_name: format!("Test body {id}"),
                level: level as i32,
                territory: territory.iter().map(|s| s.to_string()).collect(),
                endpoint: "https://127.0.0.1:7401".into(),
                signing_key: signer.verifying_key().as_bytes().to_vec(),
                csr_pem,
            })
            .await
            .unwrap_or_else(|e| panic!("enrol {id}: {e}"))
            .into_inner();
        (
            TlsMaterial {
                cert_pem: resp.certificate_pem,
                key_pem,
                ca_pem: resp.ca_pem,
            },
            signer,
        )
    }

    /// Enrols the node of `config` with the key and CSR its `initialise`
    /// made, and installs the certificate in its TLS directory; points the
    /// node at this registry.
    pub async fn enrol_node(&self, config: &mut NodeConfig, level: Level, territory: &[&str]) {
        urpnet_examples::federation::enrol_node(
            &mut self.admin(),
            &self.endpoint(),
            config,
            level,
            territory,
        )
        .await
        .expect("enrol node");
    }

    /// The Prometheus text of this process's metrics.
    pub async fn metrics(&self) -> String {
        crate::http_get(self.metrics_addr, "/metrics").await
    }

    /// Stops the registry and waits for every part.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("registry task")
                .expect("registry ended cleanly");
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The value of a counter line `name{labels} value` in Prometheus text, 0 if
/// absent.
pub fn counter(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
