//! Harness for urpnet's system tests: real nodes on loopback, in-process for
//! speed or as child processes where crashes matter, on SQLite or on the
//! PostgreSQL server whose URL CI hands over in `URPNET_TEST_POSTGRES_URL`.
//!
//! Nothing here sleeps to synchronise: every wait is a condition polled with a
//! deadline ([`wait_for`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use urpnet_node::NodeConfig;
use urpnet_node::cli::{Desk, connect};
use urpnet_node::server::{self, Listeners};
use urpnet_proto::ids::NodeId;

pub mod archive;
pub mod browser;
pub mod console;
pub mod federation;
pub mod proxy;
pub mod shared;

/// One test module per backend, each test calling the async scenario of its
/// name with the backend and the test's name: `on_both_backends!(a, b)` makes
/// `sqlite::a`, `postgres::a`, `sqlite::b`, `postgres::b`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $crate::backend_module!(sqlite, Sqlite, $($name),*);
        $crate::backend_module!(postgres, Postgres, $($name),*);
    };
}

/// One module of [`on_both_backends!`].
#[macro_export]
macro_rules! backend_module {
    ($module:ident, $backend:ident, $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let test = concat!(stringify!($module), "::", stringify!($name));
                    super::$name($crate::Backend::$backend, test).await
                }
            )*
        }
    };
}

/// The environment variable CI sets to a PostgreSQL URL.
pub const POSTGRES_ENV: &str = "URPNET_TEST_POSTGRES_URL";

/// Which database a test node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the node's temporary data directory.
    Sqlite,
    /// A fresh database on the CI PostgreSQL server.
    Postgres,
}

/// Waits until `condition` returns `Some`, polling every 20 ms, or panics
/// naming `what` after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh, empty PostgreSQL database for one test, or `None` (after saying
/// the test is skipped) when CI gave no server.
pub async fn fresh_postgres_url(test: &str) -> Option<String> {
    let Ok(base) = std::env::var(POSTGRES_ENV) else {
        eprintln!(
            "skipped: {test} needs PostgreSQL; set {POSTGRES_ENV} (as .ci/run does) to run it"
        );
        return None;
    };
    let name = format!("urpnet_t_{}", ulid::Ulid::new().to_string().to_lowercase());
    Some(
        urpnet_examples::bench::fresh_database(&base, &name)
            .await
            .expect("create a test database on the PostgreSQL server"),
    )
}

/// A test node's configuration in a new temporary directory.
pub async fn node_config(id: &str, backend: Backend, test: &str) -> Option<(TempDir, NodeConfig)> {
    let dir = tempfile::Builder::new()
        .prefix("urpnet-test-")
        .tempdir()
        .expect("temp dir");
    let id = NodeId::new(id).expect("valid node id");
    let name = format!("Test node {id}");
    let mut config = NodeConfig::new(id, name, dir.path().join("data"));
    config.metrics.listen = "127.0.0.1:0".into();
    config.desk.listen = "127.0.0.1:0".parse().expect("addr");
    // Tests run side by side: the console on any free port.
    config.console.listen = "127.0.0.1:0".into();
    if backend == Backend::Postgres {
        config.store.url = fresh_postgres_url(test).await?;
    }
    Some((dir, config))
}

/// A node running inside the test process.
#[derive(Debug)]
pub struct TestNode {
    /// The node's configuration (with the real data directory).
    pub config: NodeConfig,
    /// Where the Desk listens.
    pub desk_addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    /// Where the public HTTP side (Open311, tracking) is served.
    pub public_addr: SocketAddr,
    /// Where the operators' console is served.
    pub console_addr: SocketAddr,
    /// The `admin` supervisor token.
    pub token: String,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<urpnet_node::NodeResult<()>>>,
    _dir: Option<TempDir>,
}

impl TestNode {
    /// Starts node `id` on `backend`, or returns `None` when the backend is
    /// unavailable (the test then reports itself skipped).
    pub async fn start(id: &str, backend: Backend, test: &str) -> Option<TestNode> {
        let (dir, config) = node_config(id, backend, test).await?;
        Some(Self::start_with(config, Some(dir)).await)
    }

    /// Starts a node with a prepared configuration.
    pub async fn start_with(config: NodeConfig, dir: Option<TempDir>) -> TestNode {
        // Warnings and errors of in-process nodes go to the test's output,
        // shown when a test fails.
        urpnet_proto::telemetry::init_logs(Default::default(), "warn");
        let token = match server::initialise(&config)
            .await
            .expect("initialise the data dir")
        {
            Some(token) => token,
            None => std::fs::read_to_string(server::paths::operator_token(&config.node.data_dir))
                .expect("token file")
                .trim()
                .to_string(),
        };
        let desk = TcpListener::bind("127.0.0.1:0").await.expect("bind desk");
        let metrics = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let desk_addr = desk.local_addr().expect("addr");
        let metrics_addr = metrics.local_addr().expect("addr");
        let peering = if config.registry.endpoint.is_empty() {
            None
        } else {
            Some(
                TcpListener::bind(config.peering.listen)
                    .await
                    .expect("bind peering"),
            )
        };
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind public");
        let public_addr = public.local_addr().expect("addr");
        let console = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind console");
        let console_addr = console.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let mut task = tokio::spawn(server::run(
            config.clone(),
            Listeners {
                desk,
                metrics: Some(metrics),
                peering,
                public: Some(public),
                console: Some(console),
            },
            shutdown.clone(),
        ));
        // A node that stops while starting says why, instead of a timeout.
        tokio::select! {
            () = wait_ready(desk_addr) => {}
            ended = &mut task => panic!(
                "node {} stopped while starting: {ended:?}",
                config.node.id
            ),
        }
        TestNode {
            config,
            desk_addr,
            metrics_addr,
            public_addr,
            console_addr,
            token,
            shutdown,
            task: Some(task),
            _dir: dir,
        }
    }

    /// A Desk client authenticated as `admin`.
    pub async fn desk(&self) -> Desk {
        self.desk_as(&self.token).await
    }

    /// A Desk client with another token.
    pub async fn desk_as(&self, token: &str) -> Desk {
        connect(
            &self.desk_addr.to_string(),
            token,
            self.config.desk.max_message_bytes,
        )
        .await
        .expect("connect to desk")
    }

    /// A FaqDesk client authenticated as `admin`.
    pub async fn faq(&self) -> shared::Faq {
        self.faq_as(&self.token).await
    }

    /// A FaqDesk client with another token.
    pub async fn faq_as(&self, token: &str) -> shared::Faq {
        let (channel, token) =
            urpnet_node::cli::channel_with_token(&self.desk_addr.to_string(), token)
                .await
                .expect("connect to desk");
        urpnet_proto::v1::faq_desk_client::FaqDeskClient::with_interceptor(channel, token)
    }

    /// A CharterDesk client with this node's (supervisor) token.
    pub async fn charter(&self) -> shared::Charter {
        self.charter_as(&self.token).await
    }

    /// A CharterDesk client with another token.
    pub async fn charter_as(&self, token: &str) -> shared::Charter {
        let (channel, token) =
            urpnet_node::cli::channel_with_token(&self.desk_addr.to_string(), token)
                .await
                .expect("connect to desk");
        urpnet_proto::v1::charter_desk_client::CharterDeskClient::with_interceptor(channel, token)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// An AppointmentDesk client with this node's (supervisor) token.
    pub async fn appointments(&self) -> shared::Appointments {
        self.appointments_as(&self.token).await
    }

    /// An AppointmentDesk client with another token.
    pub async fn appointments_as(&self, token: &str) -> shared::Appointments {
        let (channel, token) =
            urpnet_node::cli::channel_with_token(&self.desk_addr.to_string(), token)
                .await
                .expect("connect to desk");
        urpnet_proto::v1::appointment_desk_client::AppointmentDeskClient::with_interceptor(
            channel, token,
        )
    }

    /// The Prometheus text of this process's metrics, fetched over HTTP.
    pub async fn metrics(&self) -> String {
        http_get(self.metrics_addr, "/metrics").await
    }

    /// A new Desk credential on this node (through its data directory, as
    /// `urpnet-node operator add` does); its token.
    pub async fn add_operator(&self, name: &str, role: urpnet_node::auth::Role) -> String {
        let (store, writer) = server::open_store(&self.config).await.expect("store");
        let now = urpnet_proto::hlc::system_time_ms() as i64;
        let (_, token) = urpnet_node::auth::add_operator(&store, name, role, now)
            .await
            .expect("a new operator");
        store.close().await;
        drop(store);
        writer.await.expect("writer");
        token
    }

    /// The queue of notices to citizens, as `urpnet-node notify status`
    /// reads it (`None` while the store cannot be opened).
    pub async fn notify_status(&self) -> Option<urpnet_node::notify::tables::QueueStatus> {
        let (store, writer) = server::open_store(&self.config).await.ok()?;
        let status = urpnet_node::notify::tables::status(&store).await.ok();
        store.close().await;
        drop(store);
        let _ = writer.await;
        status
    }

    /// Stops the node and waits until every part has ended.
    pub async fn stop(self) {
        self.stop_keep_dir().await;
    }

    /// Stops the node and hands back its temporary directory, so that it
    /// can be started again on the same data.
    pub async fn stop_keep_dir(mut self) -> Option<TempDir> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("node task").expect("node ended cleanly");
        }
        self._dir.take()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits until a Desk answers gRPC health checks with SERVING.
pub async fn wait_ready(addr: SocketAddr) {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    wait_for(
        &format!("node at {addr} to serve"),
        Duration::from_secs(30),
        || async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .ok()?
                .connect()
                .await
                .ok()?;
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: "urpnet.v1.Desk".into(),
                })
                .await
                .ok()?
                .into_inner()
                .status;
            (status == ServingStatus::Serving as i32).then_some(())
        },
    )
    .await
}

/// A plain HTTP/1.1 GET on loopback, returning the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Path of a workspace binary: `$URPNET_<NAME>_BIN`, else beside the test
/// executable's `deps/` directory (where cargo puts `target/<profile>/<bin>`).
pub fn binary(name: &str) -> PathBuf {
    let var = format!(
        "URPNET_{}_BIN",
        name.trim_start_matches("urpnet-").to_uppercase()
    );
    if let Ok(path) = std::env::var(&var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it (cargo build -p urpnet-node) or set {var}",
        path.display()
    );
    path
}

/// A node running as a child process, for crash tests.
#[derive(Debug)]
pub struct ProcessNode {
    /// The config file.
    pub config_path: PathBuf,
    /// The configuration.
    pub config: NodeConfig,
    /// The Desk address.
    pub desk_addr: SocketAddr,
    /// The admin token.
    pub token: String,
    child: tokio::process::Child,
    log_path: PathBuf,
}

impl ProcessNode {
    /// Writes `config` to a file in its data directory's parent, reserves a
    /// port, and starts `urpnet-node serve` on it.
    pub async fn start(config: &NodeConfig) -> ProcessNode {
        Self::start_with_env(config, &[]).await
    }

    /// As [`ProcessNode::start`], with extra environment variables for the
    /// child (e.g. libfaketime's, to skew its clock).
    pub async fn start_with_env(config: &NodeConfig, env: &[(&str, &str)]) -> ProcessNode {
        let token = match server::initialise(config).await.expect("initialise") {
            Some(t) => t,
            None => std::fs::read_to_string(server::paths::operator_token(&config.node.data_dir))
                .expect("token")
                .trim()
                .to_string(),
        };
        let mut config = config.clone();
        // Port 0 cannot be handed to a child and read back, so take a free
        // port now; the child binds it a moment later.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
        config.desk.listen = probe.local_addr().expect("addr");
        drop(probe);
        if config.metrics.listen.ends_with(":0") {
            // Only a fixed port can be read back from a child.
            config.metrics.listen = String::new();
        }
        let base = config
            .node
            .data_dir
            .parent()
            .expect("data dir parent")
            .to_path_buf();
        let config_path = base.join("urpnet.toml");
        std::fs::write(
            &config_path,
            toml::to_string(&config).expect("config serialises"),
        )
        .expect("write config");
        let log_path = base.join(format!("node-{}.log", ulid::Ulid::new()));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = tokio::process::Command::new(binary("urpnet-node"))
            .arg("--config")
            .arg(&config_path)
            .arg("serve")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn urpnet-node");
        let desk_addr = config.desk.listen;
        let mut node = ProcessNode {
            config_path,
            config,
            desk_addr,
            token,
            child,
            log_path,
        };
        let ready = tokio::time::timeout(Duration::from_secs(60), wait_ready(desk_addr)).await;
        if ready.is_err() || node.child.try_wait().ok().flatten().is_some() {
            panic!("node process did not start; its log:\n{}", node.log());
        }
        node
    }

    /// What the process logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A Desk client.
    pub async fn desk(&self) -> Desk {
        connect(
            &self.desk_addr.to_string(),
            &self.token,
            self.config.desk.max_message_bytes,
        )
        .await
        .expect("connect")
    }

    /// `kill -9`: no shutdown, no flush.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reap");
    }
}

/// A node's own desk library over its store, beside the running node (the
/// path of the CLI's local commands).
pub async fn local_desk(
    node: &TestNode,
) -> (
    std::sync::Arc<urpnet_node::casework::TicketDesk>,
    urpnet_node::store::Store,
    tokio::task::JoinHandle<()>,
) {
    let config = node.config.clone();
    let key = urpnet_proto::signing::NodeSigner::load(
        config.node.id.clone(),
        &urpnet_node::server::paths::signing_key(&config.node.data_dir),
    )
    .unwrap();
    let (store, writer) = urpnet_node::server::open_store(&config).await.unwrap();
    let taxonomy = std::sync::Arc::new(urpnet_node::taxonomy::TaxonomyHandle::new(
        urpnet_node::registry_link::load_cache(&config.node.data_dir)
            .1
            .unwrap_or_else(urpnet_node::taxonomy::builtin),
    ));
    let desk = urpnet_node::casework::TicketDesk::new(
        config,
        store.clone(),
        key,
        taxonomy,
        std::sync::Arc::default(),
    )
    .await
    .unwrap();
    (std::sync::Arc::new(desk), store, writer)
}
