//! Registries for federation tests: a real `urpnet-registry` in-process on an
//! ephemeral port with its own CA, and helpers that enrol members over the
//! coordinators' mTLS API the way `urpnet-registry enrol` does.

use std::net::SocketAddr;
use std::time::Duration;

use tempfile::TempDir;
use tonic::transport::Channel;
use urpnet_node::NodeConfig;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::tls::{self, FederationCa, TlsMaterial};
use urpnet_proto::v1::registry_admin_client::RegistryAdminClient;
use urpnet_proto::v1::registry_client::RegistryClient;
use urpnet_proto::v1::{EnrolRequest, ImportTaxonomyRequest, Level};
use urpnet_registry::config::RegistryConfig;
use urpnet_registry::registry::{CaFiles, paths};

use urpnet_examples::federation::RunningRegistry;

use crate::{Backend, fresh_postgres_url};

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
    running: Option<RunningRegistry>,
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
        config.dashboard.listen = "127.0.0.1:0".into();
        if backend == Backend::Postgres {
            config.store.url = fresh_postgres_url(test).await?;
        }
        Some((dir, config))
    }

    /// Starts a registry with default settings on `backend` (stopped when
    /// dropped).
    pub async fn start(backend: Backend, test: &str) -> Option<TestRegistry> {
        let (dir, config) = Self::config(backend, test).await?;
        Some(Self::start_with(config, Some(dir)).await)
    }

    /// Starts a registry with a prepared configuration (CA made if missing).
    pub async fn start_with(config: RegistryConfig, dir: Option<TempDir>) -> TestRegistry {
        urpnet_proto::telemetry::init_logs(Default::default(), "warn");
        let running = urpnet_examples::federation::start_registry(config)
            .await
            .expect("start registry");
        TestRegistry {
            config: running.config.clone(),
            addr: running.addr,
            metrics_addr: running.metrics_addr.expect("metrics listener"),
            running: Some(running),
            _dir: dir,
        }
    }

    /// Where the coordinators' dashboard listens.
    pub fn dashboard_addr(&self) -> std::net::SocketAddr {
        self.running
            .as_ref()
            .and_then(|r| r.dashboard_addr)
            .expect("a dashboard")
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
        tls::channel_to_registry(
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

    /// Stops the registry and hands back its temporary directory, so it can
    /// be started again on the same data.
    pub async fn stop_keep_dir(mut self) -> Option<TempDir> {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("registry ended cleanly");
        }
        self._dir.take()
    }

    /// Stops the registry and waits for every part.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("registry ended cleanly");
        }
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

/// A member office of a [`TestFederation`]: id, level, territory.
#[derive(Debug, Clone, Copy)]
pub struct Office {
    /// Node id (IPA code).
    pub id: &'static str,
    /// Level of government.
    pub level: Level,
    /// ISTAT codes it serves.
    pub territory: &'static [&'static str],
}

/// Celano (AQ), a comune.
pub const CELANO: Office = Office {
    id: "c_c426",
    level: Level::Comune,
    territory: &["066032"],
};
/// Regione Abruzzo.
pub const ABRUZZO: Office = Office {
    id: "r_abruzz",
    level: Level::Regione,
    territory: &["13"],
};
/// Avezzano (AQ), a comune.
pub const AVEZZANO: Office = Office {
    id: "c_a515",
    level: Level::Comune,
    territory: &["066006"],
};
/// Sulmona (AQ), a comune.
pub const SULMONA: Office = Office {
    id: "c_i804",
    level: Level::Comune,
    territory: &["066098"],
};

/// A registry and running nodes that have all seen each other as active.
#[derive(Debug)]
pub struct TestFederation {
    /// The registry.
    pub registry: TestRegistry,
    /// The nodes, in the order of the offices given.
    pub nodes: Vec<crate::TestNode>,
}

impl TestFederation {
    /// Starts a registry (heartbeats every 200 ms) with the sample taxonomy
    /// and one node per office, all on `backend`; `tune` adjusts each node's
    /// configuration before it is enrolled (a preset `registry.advertise`
    /// is kept, e.g. a proxy's address) and started. `None` when the backend is missing.
    pub async fn start(
        backend: Backend,
        test: &str,
        offices: &[Office],
        tune: impl Fn(&mut NodeConfig),
    ) -> Option<TestFederation> {
        let (rdir, mut rconfig) = TestRegistry::config(backend, test).await?;
        rconfig.membership.heartbeat_interval = Duration::from_millis(200);
        let registry = TestRegistry::start_with(rconfig, Some(rdir)).await;
        registry.import_sample_taxonomy().await;
        let mut nodes = Vec::new();
        for office in offices {
            let (dir, mut config) =
                crate::node_config(office.id, backend, &format!("{test}_{}", office.id)).await?;
            tune(&mut config);
            registry
                .enrol_node(&mut config, office.level, office.territory)
                .await;
            nodes.push(crate::TestNode::start_with(config, Some(dir)).await);
        }
        let federation = TestFederation { registry, nodes };
        federation.wait_members().await;
        Some(federation)
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> &crate::TestNode {
        self.nodes
            .iter()
            .find(|n| n.config.node.id.as_str() == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Stops node `id`, runs `between` on its configuration (to damage or
    /// restore its data), and starts it again on the same data.
    pub async fn restart(&mut self, id: &str, between: impl FnOnce(&NodeConfig)) {
        let at = self
            .nodes
            .iter()
            .position(|n| n.config.node.id.as_str() == id)
            .unwrap_or_else(|| panic!("no node {id}"));
        let node = self.nodes.remove(at);
        let config = node.config.clone();
        let dir = node.stop_keep_dir().await;
        between(&config);
        let node = crate::TestNode::start_with(config, dir).await;
        self.nodes.insert(at, node);
    }

    /// Waits until every node's cached member list shows every node active.
    pub async fn wait_members(&self) {
        let ids: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.config.node.id.to_string())
            .collect();
        for node in &self.nodes {
            let dir = node.config.node.data_dir.clone();
            let ids = ids.clone();
            crate::wait_for(
                "every member in the node's list",
                Duration::from_secs(20),
                || {
                    let dir = dir.clone();
                    let ids = ids.clone();
                    async move {
                        // The taxonomy comes with the same heartbeat;
                        // wait for it too (FAQ entries are checked
                        // against it).
                        let (members, taxonomy) = urpnet_node::registry_link::load_cache(&dir);
                        let members = members?;
                        taxonomy?;
                        ids.iter().all(|id| members.is_active(id)).then_some(())
                    }
                },
            )
            .await;
        }
    }
}
