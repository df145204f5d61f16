//! bench-open311: Open311 reports per second through a node's public HTTP
//! side, next to a bare axum handler answering the same JSON in the same
//! run (what HTTP and form parsing alone cost on this machine).
//!
//! Two kinds of post: a form-encoded report (JSON answer), and a multipart
//! report with a ~200 KB phone photo carrying EXIF/GPS (decoded, stripped
//! and encoded again by the node before it is stored). Every report the
//! node answers is durable: its ticket is committed and fsynced (SQLite,
//! `synchronous=FULL`) before the answer leaves.
//!
//! `cargo run --release -p urpnet-examples --bin bench-open311`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::Multipart;
use axum::routing::post;
use clap::Parser;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use urpnet_examples::{bench, samples};
use urpnet_node::NodeConfig;
use urpnet_node::auth::Role;
use urpnet_node::server::{self, Listeners};
use urpnet_proto::ids::NodeId;

/// Measures Open311 posts against a bare axum handler.
#[derive(Parser)]
struct Args {
    /// Concurrent clients to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Seconds of measurement per cell (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Status changes whose e-mails are measured (0 skips the phase).
    #[arg(long, default_value_t = 10_000)]
    notices: usize,
    /// Status changes per second in the paced run.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/bench-open311.json")]
    json_out: PathBuf,
}

/// The notification phase: status changes to e-mails accepted by a real
/// SMTP server on loopback.
#[derive(Debug, Serialize)]
struct NoticeRun {
    mode: String,
    changes: usize,
    changes_per_second: f64,
    seconds_to_last_email: f64,
    emails_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// One measured cell.
#[derive(Debug, Serialize)]
struct Cell {
    target: String,
    body: &'static str,
    clients: usize,
    requests: u64,
    errors: u64,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    ratio_to_bare: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    date: String,
    machine: String,
    cores: usize,
    seconds_per_cell: u64,
    photo_bytes: usize,
    cells: Vec<Cell>,
    notices: Vec<NoticeRun>,
}

/// The JSON the node answers a report with, for the bare handler to send.
fn answer(n: u64) -> String {
    format!(
        "[{{\"service_request_id\":\"c_c426-2026-{n:06}\",\"token\":\"01KBMZ0000000000000000000{}\",\"service_notice\":null,\"account_id\":null,\"tracking_url\":\"http://127.0.0.1/track/c_c426-2026-{n:06}?key=00000000000000000000000000000000\"}}]",
        n % 10
    )
}

/// A bare axum server: parses the same form or multipart body, answers the
/// same JSON, stores nothing.
async fn start_bare(shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/open311/v2/requests.json",
            post({
                let counter = counter.clone();
                move |headers: axum::http::HeaderMap, request: axum::extract::Request| {
                    let counter = counter.clone();
                    async move {
                        let multipart = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|t| t.starts_with("multipart/"));
                        if multipart {
                            let mut form =
                                <Multipart as axum::extract::FromRequest<()>>::from_request(
                                    request,
                                    &(),
                                )
                                .await
                                .map_err(|_| axum::http::StatusCode::BAD_REQUEST)?;
                            while let Some(field) = form
                                .next_field()
                                .await
                                .map_err(|_| axum::http::StatusCode::BAD_REQUEST)?
                            {
                                let _ = field.bytes().await;
                            }
                        } else {
                            let body = axum::body::to_bytes(request.into_body(), 16 << 20)
                                .await
                                .map_err(|_| axum::http::StatusCode::BAD_REQUEST)?;
                            let _: Vec<(String, String)> =
                                form_urlencoded::parse(&body).into_owned().collect();
                        }
                        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok::<_, axum::http::StatusCode>((
                            [("content-type", "application/json")],
                            answer(n),
                        ))
                    }
                }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(addr)
}

struct NodeUnderTest {
    public: SocketAddr,
    desk: SocketAddr,
    admin: String,
    api_key: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<urpnet_node::NodeResult<()>>,
    _dir: tempfile::TempDir,
}

/// A fresh Celano node on SQLite with its public side and an integration
/// token; limits raised, since this measures capacity, not the limiter.
async fn start_node(smtp_port: Option<u16>) -> anyhow::Result<NodeUnderTest> {
    let dir = tempfile::tempdir()?;
    let mut config = NodeConfig::new(
        NodeId::new("c_c426")?,
        "Comune di Celano",
        dir.path().join("data"),
    );
    config.metrics.listen = String::new();
    config.public.listen = "127.0.0.1:0".into();
    config.public.rate_per_second = 1_000_000;
    config.public.rate_burst = 1_000_000;
    config.desk.rate_per_second = 1_000_000;
    config.desk.rate_burst = 1_000_000;
    if let Some(port) = smtp_port {
        config.notify.smtp_url = format!("smtp://127.0.0.1:{port}");
        config.notify.from = "URP Comune di Celano <urp@comune.celano.example.it>".into();
        config.notify.interval = Duration::from_millis(200);
        config.notify.batch = 100;
    }
    let admin = server::initialise(&config)
        .await?
        .context("a fresh data dir")?;
    let (store, writer) = server::open_store(&config).await?;
    let (_, api_key) = urpnet_node::auth::add_operator(
        &store,
        "bench-app",
        Role::Integration,
        urpnet_proto::hlc::system_time_ms() as i64,
    )
    .await?;
    store.close().await;
    drop(store);
    let _ = writer.await;
    let desk = TcpListener::bind("127.0.0.1:0").await?;
    let desk_addr = desk.local_addr()?;
    let public = TcpListener::bind("127.0.0.1:0").await?;
    let public_addr = public.local_addr()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::run(
        config,
        Listeners {
            desk,
            metrics: None,
            peering: None,
            public: Some(public),
            console: None,
        },
        shutdown.clone(),
    ));
    Ok(NodeUnderTest {
        public: public_addr,
        desk: desk_addr,
        admin,
        api_key,
        shutdown,
        task,
        _dir: dir,
    })
}

/// A ~200 KB phone photo.
fn photo() -> Vec<u8> {
    let mut side = 320;
    loop {
        let p = samples::photo_with_gps(side, side * 3 / 4);
        if p.len() >= 200_000 || side > 4000 {
            return p;
        }
        side += 40;
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    target: &str,
    body: &'static str,
    addr: SocketAddr,
    api_key: &str,
    photo: Arc<Vec<u8>>,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Cell> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let url = format!("http://{addr}/open311/v2/requests.json");
    let warmup = Duration::from_secs(1);
    let started = Instant::now();
    let measure_from = started + warmup;
    let stop_at = measure_from + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (http, url, key, photo) = (
            http.clone(),
            url.clone(),
            api_key.to_string(),
            photo.clone(),
        );
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            loop {
                n += 1;
                let description = format!("Buca profonda in via Roma, segnalazione {c}-{n}");
                let fields = [
                    ("api_key", key.as_str()),
                    ("service_code", "strade.buche"),
                    ("lat", "42.0847"),
                    ("long", "13.5569"),
                    ("address_string", "Via Roma 52, Celano"),
                    ("description", description.as_str()),
                    ("attribute[pericolo]", "si"),
                    ("email", "cittadino@example.it"),
                ];
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                let request = if body == "multipart" {
                    let mut form = reqwest::multipart::Form::new();
                    for (k, v) in fields {
                        form = form.text(k, v.to_string());
                    }
                    form = form.part(
                        "media",
                        reqwest::multipart::Part::bytes(photo.as_ref().clone())
                            .file_name("IMG.jpg"),
                    );
                    http.post(&url).multipart(form)
                } else {
                    http.post(&url).form(&fields)
                };
                let ok = match request.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
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
    let secs = seconds as f64;
    Ok(Cell {
        target: target.into(),
        body,
        clients,
        requests: latencies.len() as u64,
        errors,
        requests_per_second: latencies.len() as f64 / secs,
        p50_ms: bench::percentile_ms(&latencies, 0.50),
        p99_ms: bench::percentile_ms(&latencies, 0.99),
        ratio_to_bare: None,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    urpnet_proto::telemetry::init_logs(Default::default(), "error");
    let photo = Arc::new(photo());
    let bodies = ["form", "multipart"];
    let total = args.clients.len() * bodies.len() * 2;
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cells  {msg}")?,
    );
    let mut cells = Vec::new();
    let bare_shutdown = CancellationToken::new();
    let bare = start_bare(bare_shutdown.clone()).await?;
    for body in bodies {
        for &clients in &args.clients {
            bar.set_message(format!("bare axum, {body}, {clients} clients"));
            cells.push(
                measure(
                    "bare axum",
                    body,
                    bare,
                    "unused",
                    photo.clone(),
                    clients,
                    args.seconds,
                )
                .await?,
            );
            bar.inc(1);
        }
    }
    bare_shutdown.cancel();
    for body in bodies {
        for &clients in &args.clients {
            // A fresh node per cell, so cells do not inherit each other's data.
            let node = start_node(None).await?;
            bar.set_message(format!("node, {body}, {clients} clients"));
            let ready = Instant::now();
            while reqwest::get(format!("http://{}/open311/v2/services.xml", node.public))
                .await
                .is_err()
            {
                anyhow::ensure!(
                    ready.elapsed() < Duration::from_secs(30),
                    "the node did not start"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cells.push(
                measure(
                    "node (SQLite)",
                    body,
                    node.public,
                    &node.api_key,
                    photo.clone(),
                    clients,
                    args.seconds,
                )
                .await?,
            );
            node.shutdown.cancel();
            node.task.await??;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let mut notices = Vec::new();
    if args.notices > 0 {
        if urpnet_examples::smtp::available() {
            notices.push(notice_run(args.notices, args.rate).await?);
            notices.push(notice_run(args.notices.min(5_000), 0).await?);
        } else {
            println!("notification phase skipped: python3-aiosmtpd is not installed");
        }
    }
    let bare_rate = |body: &str, clients: usize| {
        cells
            .iter()
            .find(|c| c.target == "bare axum" && c.body == body && c.clients == clients)
            .map(|c| c.requests_per_second)
    };
    let ratios: Vec<Option<f64>> = cells
        .iter()
        .map(|c| bare_rate(c.body, c.clients).map(|b| c.requests_per_second / b))
        .collect();
    for (cell, ratio) in cells.iter_mut().zip(ratios) {
        cell.ratio_to_bare = ratio;
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "target",
        "body",
        "clients",
        "reports/s",
        "p50 ms",
        "p99 ms",
        "vs bare",
        "errors",
    ]);
    for c in &cells {
        table.add_row([
            c.target.clone(),
            c.body.to_string(),
            c.clients.to_string(),
            format!("{:.0}", c.requests_per_second),
            format!("{:.2}", c.p50_ms),
            format!("{:.2}", c.p99_ms),
            c.ratio_to_bare
                .map(|r| format!("{:.0} %", r * 100.0))
                .unwrap_or_default(),
            c.errors.to_string(),
        ]);
    }
    let report = Report {
        benchmark: "bench-open311",
        date: bench::now(),
        machine: bench::machine(),
        cores: bench::cores(),
        seconds_per_cell: args.seconds,
        photo_bytes: photo.len(),
        cells,
        notices,
    };
    println!("bench-open311 — {} — {}", report.date, report.machine);
    println!("{table}");
    println!(
        "photo: {} bytes, JPEG with EXIF (GPS, device)",
        report.photo_bytes
    );
    if !report.notices.is_empty() {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header([
            "status changes",
            "changes/s",
            "e-mails/s",
            "all sent in s",
            "commit→SMTP p50 ms",
            "p99 ms",
            "max ms",
        ]);
        for r in &report.notices {
            t.add_row([
                format!("{} ({})", r.changes, r.mode),
                format!("{:.0}", r.changes_per_second),
                format!("{:.0}", r.emails_per_second),
                format!("{:.1}", r.seconds_to_last_email),
                format!("{:.0}", r.p50_ms),
                format!("{:.0}", r.p99_ms),
                format!("{:.0}", r.max_ms),
            ]);
        }
        println!("notices to citizens (e-mails accepted by a local aiosmtpd):\n{t}");
    }
    if let Some(parent) = args.json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.json_out.display());
    Ok(())
}

/// `changes` status changes at `rate` a second (0: as fast as the Desk
/// takes them, 64 in flight), each on its own ticket whose citizen asked for
/// updates; the time from each change's commit to its e-mail's acceptance by
/// a real SMTP server on loopback.
async fn notice_run(changes: usize, rate: u32) -> anyhow::Result<NoticeRun> {
    use urpnet_proto::v1::{ChangeStatusRequest, CitizenContact, Consent, Status};
    let mail_dir = tempfile::tempdir()?;
    let port = urpnet_examples::smtp::free_port();
    let sink = urpnet_examples::smtp::SmtpSink::start(port, mail_dir.path()).await?;
    let node = start_node(Some(port)).await?;
    let ready = Instant::now();
    let desk = loop {
        match urpnet_node::cli::connect(&node.desk.to_string(), &node.admin, 1 << 20).await {
            Ok(d) => break d,
            Err(e) => {
                anyhow::ensure!(
                    ready.elapsed() < Duration::from_secs(30),
                    "the node did not start: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // The tickets, 64 at a time.
    let mut ids = Vec::with_capacity(changes);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    let all: Vec<usize> = (0..changes).collect();
    for chunk in all.chunks(64) {
        let mut calls = Vec::new();
        for _ in chunk {
            let mut req = samples::request(&mut rng, "066032", urpnet_proto::v1::Channel::Phone);
            req.citizen = Some(CitizenContact {
                full_name: "Anna Di Censo".into(),
                email: "anna.dicenso@example.it".into(),
                ..Default::default()
            });
            req.consent = Some(Consent {
                share_with_competent_body: false,
                contact_for_updates: true,
            });
            let mut d = desk.clone();
            calls.push(async move { d.create_ticket(req).await });
        }
        for r in futures::future::join_all(calls).await {
            let t = r?.into_inner().ticket.context("ticket")?;
            ids.push((t.id, t.reference));
        }
    }
    let start = Instant::now();
    let mut committed: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (id, reference)) in ids.iter().cloned().enumerate() {
        if rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
            tokio::time::sleep_until(due.into()).await;
        }
        let mut d = desk.clone();
        tasks.spawn(async move {
            d.change_status(ChangeStatusRequest {
                ticket_id: id,
                status: Status::InProgress as i32,
                reason: "presa in carico".into(),
                merged_into: String::new(),
            })
            .await
            .map(|_| (reference, urpnet_proto::hlc::system_time_ms() as f64))
        });
        if rate == 0 && tasks.len() >= 64 {
            let (reference, at) = tasks.join_next().await.context("a change")???;
            committed.insert(reference, at);
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (reference, at) = done??;
        committed.insert(reference, at);
    }
    let changes_done = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while sink.count() < changes {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {changes} e-mails in 10 minutes",
            sink.count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut latencies: Vec<u32> = Vec::with_capacity(changes);
    let mut last_accept = 0f64;
    let first_commit = committed.values().cloned().fold(f64::MAX, f64::min);
    for m in sink.messages() {
        let accepted: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix("X-Accepted-Ms: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        let reference = m
            .lines()
            .find_map(|l| l.strip_prefix("Subject: Segnalazione "))
            .and_then(|v| v.split(':').next())
            .unwrap_or_default()
            .trim()
            .to_string();
        if let Some(c) = committed.get(&reference) {
            // Microseconds, for bench::percentile_ms.
            latencies.push(((accepted - c).max(0.0) * 1000.0) as u32);
            last_accept = last_accept.max(accepted);
        }
    }
    latencies.sort_unstable();
    node.shutdown.cancel();
    node.task.await??;
    sink.stop().await;
    let all_sent = ((last_accept - first_commit) / 1000.0).max(0.001);
    Ok(NoticeRun {
        mode: if rate > 0 {
            format!("{rate}/s")
        } else {
            "burst".into()
        },
        changes,
        changes_per_second: changes as f64 / changes_done.as_secs_f64(),
        seconds_to_last_email: all_sent,
        emails_per_second: latencies.len() as f64 / all_sent,
        p50_ms: bench::percentile_ms(&latencies, 0.50),
        p99_ms: bench::percentile_ms(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |l| f64::from(*l) / 1000.0),
    })
}
