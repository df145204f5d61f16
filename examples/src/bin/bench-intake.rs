//! bench-intake: durable ticket creations per second through the Desk API,
//! next to a bare tonic echo server measured in the same run with the same
//! client — the physical limit of gRPC on this machine.
//!
//! For each target (echo, node on SQLite, node on PostgreSQL when a URL is
//! given) and each number of concurrent clients, clients send
//! `CreateTicket` requests back to back for a fixed time; the table reports
//! requests per second, p50 and p99 latency, and the ratio to the echo
//! server at the same concurrency. Results are also written as JSON.
//!
//! cargo run --release -p urpnet-examples --bin bench-intake -- --help

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rand::SeedableRng as _;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use urpnet_examples::{bench, samples};
use urpnet_node::NodeConfig;
use urpnet_node::server::{self, Listeners};
use urpnet_proto::ids::NodeId;
use urpnet_proto::v1::desk_server::{Desk, DeskServer};
use urpnet_proto::v1::{self, *};

/// Measures durable ticket intake against a bare gRPC echo server.
#[derive(Parser)]
struct Args {
    /// Concurrent clients to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Seconds of measurement per cell (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Also measure the node on this PostgreSQL URL.
    #[arg(long, env = "URPNET_BENCH_POSTGRES_URL")]
    postgres: Option<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/bench-intake.json")]
    json_out: std::path::PathBuf,
}

/// The same Desk service with nothing behind it: answers CreateTicket with a
/// ticket made from the request, storing and signing nothing.
struct EchoDesk;

#[tonic::async_trait]
impl Desk for EchoDesk {
    async fn create_ticket(
        &self,
        request: Request<CreateTicketRequest>,
    ) -> Result<Response<CreateTicketResponse>, Status> {
        let r = request.into_inner();
        let ticket = Ticket {
            id: r.request_id.clone(),
            category: r.category,
            channel: r.channel,
            subject: r.subject,
            description: r.description,
            location: r.location,
            consent: r.consent,
            ..Default::default()
        };
        Ok(Response::new(CreateTicketResponse {
            ticket: Some(ticket),
            replayed: false,
            possible_duplicates: vec![],
            tracking_key: String::new(),
        }))
    }
    async fn get_ticket(
        &self,
        _: Request<GetTicketRequest>,
    ) -> Result<Response<GetTicketResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn list_tickets(
        &self,
        _: Request<ListTicketsRequest>,
    ) -> Result<Response<ListTicketsResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn add_note(
        &self,
        _: Request<AddNoteRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn change_status(
        &self,
        _: Request<ChangeStatusRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn assign_ticket(
        &self,
        _: Request<AssignTicketRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn get_history(
        &self,
        _: Request<GetHistoryRequest>,
    ) -> Result<Response<GetHistoryResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn get_attachment(
        &self,
        _: Request<GetAttachmentRequest>,
    ) -> Result<Response<GetAttachmentResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn handoff(
        &self,
        _: Request<v1::HandoffRequest>,
    ) -> Result<Response<v1::HandoffResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn accept_handoff(
        &self,
        _: Request<v1::AnswerHandoffRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn decline_handoff(
        &self,
        _: Request<v1::AnswerHandoffRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn share_ticket(
        &self,
        _: Request<v1::ShareTicketRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn list_offers(
        &self,
        _: Request<v1::ListOffersRequest>,
    ) -> Result<Response<v1::ListOffersResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn list_peers(
        &self,
        _: Request<v1::ListPeersRequest>,
    ) -> Result<Response<v1::ListPeersResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn set_peer_quarantine(
        &self,
        _: Request<v1::SetPeerQuarantineRequest>,
    ) -> Result<Response<v1::SetPeerQuarantineResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    type WatchTicketsStream = futures::stream::Empty<Result<v1::TicketChange, Status>>;
    async fn watch_tickets(
        &self,
        _: Request<v1::WatchTicketsRequest>,
    ) -> Result<Response<Self::WatchTicketsStream>, Status> {
        Err(Status::unimplemented("echo"))
    }
}

/// One measured cell.
#[derive(Debug, Clone, Serialize)]
struct Cell {
    target: String,
    clients: usize,
    requests: u64,
    errors: u64,
    seconds: f64,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    ratio_to_echo: Option<f64>,
    /// Mean writes per group commit during the cell (node targets).
    mean_batch: Option<f64>,
    /// Mean time of one group commit, in ms (node targets).
    mean_commit_ms: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    date: String,
    machine: String,
    cores: usize,
    seconds_per_cell: u64,
    cells: Vec<Cell>,
    /// The storage limit: raw SQLite inserts, group-committed, no gRPC.
    raw_sqlite: RawSqlite,
}

/// Raw SQLite inserts of ticket-sized rows, 64 per fsynced commit (WAL,
/// synchronous=FULL), from one thread: what the disk and SQLite allow before
/// any urpnet code runs.
#[derive(Debug, Clone, Serialize)]
struct RawSqlite {
    rows_per_commit: usize,
    row_bytes: usize,
    rows_per_second: f64,
    commits_per_second: f64,
}

fn raw_sqlite(seconds: u64) -> anyhow::Result<RawSqlite> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL; CREATE TABLE t (id TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;",
    )?;
    let (rows_per_commit, row_bytes) = (64, 1_500);
    let body = vec![7u8; row_bytes];
    let started = Instant::now();
    let (mut rows, mut commits) = (0u64, 0u64);
    while started.elapsed() < Duration::from_secs(seconds) {
        let tx = conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO t (id, body) VALUES (?1, ?2)")?;
            for _ in 0..rows_per_commit {
                insert.execute(rusqlite::params![ulid::Ulid::new().to_string(), body])?;
            }
        }
        tx.commit()?;
        rows += rows_per_commit as u64;
        commits += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(RawSqlite {
        rows_per_commit,
        row_bytes,
        rows_per_second: rows as f64 / secs,
        commits_per_second: commits as f64 / secs,
    })
}

async fn start_echo(shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let max = NodeConfig::new(NodeId::new("c_a662")?, "", "")
        .desk
        .max_message_bytes;
    let service = DeskServer::new(EchoDesk)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()),
    );
    Ok(addr)
}

struct NodeUnderTest {
    addr: SocketAddr,
    token: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<urpnet_node::NodeResult<()>>,
    _dir: tempfile::TempDir,
}

async fn start_node(store_url: Option<String>) -> anyhow::Result<NodeUnderTest> {
    let dir = tempfile::Builder::new().prefix("urpnet-bench-").tempdir()?;
    let mut config = NodeConfig::new(
        NodeId::new("c_a662")?,
        "Comune di Bari",
        dir.path().join("data"),
    );
    if let Some(url) = store_url {
        config.store.url = url;
    }
    // Capacity is measured, not the per-token rate limit (one token here
    // stands for a whole call centre).
    config.desk.rate_per_second = 1_000_000;
    config.desk.rate_burst = 1_000_000;
    let token = server::initialise(&config)
        .await?
        .context("fresh data dir")?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::run(
        config,
        Listeners {
            desk: listener,
            metrics: None,
            peering: None,
            public: None,
            console: None,
        },
        shutdown.clone(),
    ));
    Ok(NodeUnderTest {
        addr,
        token,
        shutdown,
        task,
        _dir: dir,
    })
}

/// Runs `clients` concurrent loops of CreateTicket against `addr` for the
/// warm-up plus `seconds`, counting only the measured part.
async fn measure(
    target: &str,
    addr: SocketAddr,
    token: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Cell> {
    // A few HTTP/2 connections, shared by the clients, as a front office
    // integration would hold them.
    let connections = clients.clamp(1, 4);
    let mut desks = Vec::new();
    for _ in 0..connections {
        desks.push(urpnet_node::cli::connect(&addr.to_string(), token, 16 * 1024 * 1024).await?);
    }
    let warmup = Duration::from_secs(1);
    let started = Instant::now();
    let measure_from = started + warmup;
    let stop_at = measure_from + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let mut desk = desks[c % connections].clone();
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let req = samples::request(
                    &mut rng,
                    samples::CENTRES[c % samples::CENTRES.len()].0,
                    samples::CHANNELS[c % 10],
                );
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                let ok = desk.create_ticket(req).await.is_ok();
                if sent >= measure_from {
                    if ok {
                        latencies.push(sent.elapsed().as_micros() as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    let pct = |p: f64| bench::percentile_ms(&latencies, p);
    let secs = seconds as f64;
    Ok(Cell {
        target: target.into(),
        clients,
        requests: latencies.len() as u64,
        errors,
        seconds: secs,
        requests_per_second: latencies.len() as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        ratio_to_echo: None,
        mean_batch: None,
        mean_commit_ms: None,
    })
}

/// (writes, commits, commit seconds) so far, from the process's metrics.
fn store_metrics() -> (f64, f64, f64) {
    let text = urpnet_proto::telemetry::prometheus().render();
    let value = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    (
        value("urpnet_store_commit_batch_size_sum"),
        value("urpnet_store_commit_batch_size_count"),
        value("urpnet_store_commit_duration_seconds_sum"),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    urpnet_proto::telemetry::init_logs(Default::default(), "warn");
    let total_cells = args.clients.len() * (2 + usize::from(args.postgres.is_some()));
    let bar = indicatif::ProgressBar::new(total_cells as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cells  {msg}")?,
    );
    let mut cells = Vec::new();

    let echo_shutdown = CancellationToken::new();
    let echo = start_echo(echo_shutdown.clone()).await?;
    for &clients in &args.clients {
        bar.set_message(format!("echo, {clients} clients"));
        cells.push(measure("tonic echo", echo, "unused", clients, args.seconds).await?);
        bar.inc(1);
    }
    echo_shutdown.cancel();

    bar.set_message("raw SQLite inserts");
    let raw = raw_sqlite(args.seconds)?;

    let mut targets = vec![("node sqlite", None)];
    if let Some(url) = &args.postgres {
        targets.push(("node postgres", Some(url.clone())));
    }
    for (name, url) in targets {
        for &clients in &args.clients {
            // A fresh node (and database) per cell, so cells do not inherit
            // each other's data.
            let url = url.as_ref().map(|u| fresh_database(u, clients));
            let url = match url {
                Some(f) => Some(f.await?),
                None => None,
            };
            let node = start_node(url).await?;
            bar.set_message(format!("{name}, {clients} clients"));
            urpnet_node::cli::connect(&node.addr.to_string(), &node.token, 1 << 20).await?;
            let before = store_metrics();
            let mut cell = measure(name, node.addr, &node.token, clients, args.seconds).await?;
            let after = store_metrics();
            let commits = after.1 - before.1;
            if commits > 0.0 {
                cell.mean_batch = Some((after.0 - before.0) / commits);
                cell.mean_commit_ms = Some((after.2 - before.2) / commits * 1000.0);
            }
            cells.push(cell);
            node.shutdown.cancel();
            node.task.await??;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let echo_rate = |clients: usize| {
        cells
            .iter()
            .find(|c| c.target == "tonic echo" && c.clients == clients)
            .map(|c| c.requests_per_second)
    };
    let ratios: Vec<Option<f64>> = cells
        .iter()
        .map(|c| echo_rate(c.clients).map(|e| c.requests_per_second / e))
        .collect();
    for (cell, ratio) in cells.iter_mut().zip(ratios) {
        cell.ratio_to_echo = ratio;
    }

    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "target",
        "clients",
        "creates/s",
        "p50 ms",
        "p99 ms",
        "vs echo",
        "errors",
        "batch",
        "commit ms",
    ]);
    for c in &cells {
        table.add_row([
            c.target.clone(),
            c.clients.to_string(),
            format!("{:.0}", c.requests_per_second),
            format!("{:.2}", c.p50_ms),
            format!("{:.2}", c.p99_ms),
            c.ratio_to_echo
                .map(|r| format!("{:.0} %", r * 100.0))
                .unwrap_or_default(),
            c.errors.to_string(),
            c.mean_batch.map(|b| format!("{b:.1}")).unwrap_or_default(),
            c.mean_commit_ms
                .map(|m| format!("{m:.2}"))
                .unwrap_or_default(),
        ]);
    }
    let report = Report {
        benchmark: "bench-intake",
        date: bench::now(),
        machine: bench::machine(),
        cores: bench::cores(),
        seconds_per_cell: args.seconds,
        cells,
        raw_sqlite: raw,
    };
    println!("bench-intake — {} — {}", report.date, report.machine);
    println!("{table}");
    println!(
        "storage limit: raw SQLite inserts of {}-byte rows, {} per fsynced commit: {:.0} rows/s ({:.0} commits/s)",
        report.raw_sqlite.row_bytes,
        report.raw_sqlite.rows_per_commit,
        report.raw_sqlite.rows_per_second,
        report.raw_sqlite.commits_per_second
    );
    if let Some(parent) = args.json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.json_out.display());
    Ok(())
}

/// A new database on the server of `base`, for one cell.
async fn fresh_database(base: &str, clients: usize) -> anyhow::Result<String> {
    bench::fresh_database(
        base,
        &format!("urpnet_bench_{clients}_{}", std::process::id()),
    )
    .await
}
