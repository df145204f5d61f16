//! bench-appointments: bookings per second through a node's public HTTP
//! side, the free-slot query on a busy calendar, and that no seat is ever
//! taken beyond capacity.
//!
//! A Celano node on SQLite (every booking committed and fsynced before the
//! answer) with its sample charter and booking plans for every service it
//! delivers at an office, open every day 08:00–20:00 for a year:
//!
//! - **contention**: N clients all want the earliest free slot of one
//!   popular service (capacity 4): each asks for the free slots, books the
//!   first, and on "slot taken" books the next one the answer names;
//! - **spread**: N clients book random free slots of random services (each
//!   client asks for a page of 50 free slots of a service and books from it
//!   until it is used up, as a citizen picks from a page);
//! - next to them, in the same run: the Desk's own `CreateTicket` with N
//!   clients (a booking opens a ticket too), a bare axum handler answering
//!   a booking's JSON (what HTTP and JSON alone cost here), and raw SQLite
//!   inserts of one row per fsynced transaction (the storage floor);
//! - **free slots**: the popular office topped up to 10,000 bookings over
//!   its year, then the two-week free-slot query timed at random dates
//!   (goal: p99 under 5 ms) and the 62-day one;
//! - **capacity**: every slot's seats counted against its plan.
//!
//! `cargo run --release -p urpnet-examples --bin bench-appointments`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use urpnet_examples::{bench, samples};
use urpnet_node::NodeConfig;
use urpnet_node::server::{self, Listeners};
use urpnet_proto::ids::NodeId;
use urpnet_proto::v1::{AppointmentPlan, Channel, ImportCharterRequest, SetPlansRequest};

/// Measures booking against its limits.
#[derive(Parser)]
struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of measurement per phase (after half a second of warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Bookings at the popular office before the free-slot queries.
    #[arg(long, default_value_t = 10_000)]
    bookings: usize,
    /// Free-slot queries timed per window.
    #[arg(long, default_value_t = 2_000)]
    queries: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/bench-appointments.json")]
    json_out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Cell {
    what: String,
    clients: usize,
    done: u64,
    refused: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Query {
    what: String,
    queries: usize,
    bookings_at_office: i64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    goal_ms: f64,
    met: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    machine: String,
    cores: usize,
    seconds_per_phase: u64,
    cells: Vec<Cell>,
    queries: Vec<Query>,
    slots_checked: i64,
    seats_over_capacity: i64,
}

const POPULAR: (&str, &str) = ("sue", "autorizzazione-paesaggistica");

struct Node {
    public: SocketAddr,
    desk: SocketAddr,
    admin: String,
    db_url: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<urpnet_node::NodeResult<()>>,
    _dir: tempfile::TempDir,
}

async fn start_node() -> anyhow::Result<Node> {
    let dir = tempfile::tempdir()?;
    let mut config = NodeConfig::new(
        NodeId::new("c_c426")?,
        "Comune di Celano",
        dir.path().join("data"),
    );
    config.metrics.listen = String::new();
    config.public.rate_per_second = 1_000_000;
    config.public.rate_burst = 1_000_000;
    config.desk.rate_per_second = 1_000_000;
    config.desk.rate_burst = 1_000_000;
    config.appointments.max_per_email_per_day = 0;
    let admin = server::initialise(&config)
        .await?
        .context("a fresh data dir")?;
    let desk = TcpListener::bind("127.0.0.1:0").await?;
    let public = TcpListener::bind("127.0.0.1:0").await?;
    let (desk_addr, public_addr) = (desk.local_addr()?, public.local_addr()?);
    let db_url = config.database_url();
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
    Ok(Node {
        public: public_addr,
        desk: desk_addr,
        admin,
        db_url,
        shutdown,
        task,
        _dir: dir,
    })
}

/// Plans: the popular service (capacity 4, 10-minute slots) and every
/// other service at the office it is delivered at (capacity 2), every day
/// 08:00–20:00, a year ahead.
fn plans(charter: &urpnet_proto::v1::Charter) -> Vec<AppointmentPlan> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for s in &charter.services {
        let Some(office) = s
            .delivered
            .iter()
            .find(|d| !d.office_id.is_empty())
            .map(|d| d.office_id.clone())
        else {
            continue;
        };
        if !seen.insert((office.clone(), s.id.clone())) {
            continue;
        }
        let popular = (office.as_str(), s.id.as_str()) == POPULAR;
        out.push(AppointmentPlan {
            office,
            service: s.id.clone(),
            hours: vec!["lun-dom 08:00-20:00".into()],
            length_min: if popular { 10 } else { 15 },
            capacity: if popular { 4 } else { 2 },
            min_notice_min: 0,
            max_days_ahead: 366,
            change_notice_min: 60,
            max_moves: 2,
            channels: vec!["desk".into()],
            ..AppointmentPlan::default()
        });
    }
    out
}

fn form(office: &str, service: &str, start: &str, key: &str) -> Value {
    json!({
        "idempotency_key": key,
        "office": office,
        "service": service,
        "start": start,
        "channel": "desk",
        "citizen": {
            "given_name": "Paola", "family_name": "Ranieri",
            "address": "Via Tiburtina 10, 67043 Celano (AQ)",
            "email": format!("{key}@example.it")
        },
        "consent_processing": true
    })
}

async fn free(
    http: &reqwest::Client,
    base: &str,
    office: &str,
    service: &str,
    from: &str,
    limit: u32,
) -> Vec<String> {
    let url = format!(
        "{base}/appointments/slots?office={office}&service={service}&from={from}&limit={limit}"
    );
    let Ok(r) = http.get(url).send().await else {
        return Vec::new();
    };
    let v: Value = r.json().await.unwrap_or_default();
    v["slots"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["start"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The next free slots an answer names after "next free: ".
fn next_named(message: &str) -> Vec<String> {
    message
        .split("next free: ")
        .nth(1)
        .map(|s| s.split(", ").map(str::to_string).collect())
        .unwrap_or_default()
}

/// One booking phase: `clients` clients for `seconds`; `contention` books
/// the earliest slot of the popular service, otherwise random slots of
/// random plans.
async fn booking_phase(
    base: &str,
    plans: Arc<Vec<AppointmentPlan>>,
    clients: usize,
    seconds: u64,
    contention: bool,
    phase: &str,
) -> anyhow::Result<Cell> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let started = Instant::now();
    let measure_from = started + Duration::from_millis(500);
    let stop_at = measure_from + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (http, base, plans, phase) = (
            http.clone(),
            base.to_string(),
            plans.clone(),
            phase.to_string(),
        );
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let (mut latencies, mut refused, mut n) = (Vec::new(), 0u64, 0u64);
            let mut wanted: Vec<String> = Vec::new();
            let mut seen: HashMap<usize, Vec<String>> = HashMap::new();
            let mut plan = &plans[0];
            loop {
                if Instant::now() >= stop_at {
                    break;
                }
                if wanted.is_empty() {
                    if contention {
                        plan = plans
                            .iter()
                            .find(|p| (p.office.as_str(), p.service.as_str()) == POPULAR)
                            .expect("the popular plan");
                        wanted = free(&http, &base, &plan.office, &plan.service, "", 5).await;
                    } else {
                        // A citizen looks at a page of free slots and picks
                        // one; each client keeps the pages it has seen.
                        let i = rng.gen_range(0..plans.len());
                        plan = &plans[i];
                        let page = seen.entry(i).or_default();
                        if page.is_empty() {
                            let day = rng.gen_range(0..300);
                            let from = (jiff::Zoned::now().date() + jiff::Span::new().days(day))
                                .to_string();
                            *page =
                                free(&http, &base, &plan.office, &plan.service, &from, 50).await;
                            page.shuffle(&mut rng);
                        }
                        wanted = page.pop().into_iter().collect();
                    }
                    if wanted.is_empty() {
                        continue;
                    }
                }
                n += 1;
                let start = wanted.remove(0);
                let key = format!("{phase}-{c}-{n}");
                let sent = Instant::now();
                let answer = http
                    .post(format!("{base}/appointments"))
                    .json(&form(&plan.office, &plan.service, &start, &key))
                    .send()
                    .await;
                let (status, body) = match answer {
                    Ok(r) => (
                        r.status().as_u16(),
                        r.json::<Value>().await.unwrap_or_default(),
                    ),
                    Err(_) => (0, Value::Null),
                };
                if sent < measure_from {
                    continue;
                }
                latencies.push(sent.elapsed().as_micros() as u32);
                match status {
                    201 => {}
                    409 => {
                        refused += 1;
                        if contention {
                            wanted = next_named(body["error"]["message"].as_str().unwrap_or(""));
                        }
                    }
                    other => anyhow::bail!("booking answered {other}: {body}"),
                }
            }
            Ok((latencies, refused))
        });
    }
    let (mut latencies, mut refused) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (l, r) = done??;
        latencies.extend(l);
        refused += r;
    }
    latencies.sort_unstable();
    let done = latencies.len() as u64 - refused;
    Ok(Cell {
        what: format!("book, {phase}"),
        clients,
        done,
        refused,
        per_second: done as f64 / seconds as f64,
        p50_ms: bench::percentile_ms(&latencies, 0.5),
        p99_ms: bench::percentile_ms(&latencies, 0.99),
        ratio: None,
    })
}

async fn create_tickets(node: &Node, clients: usize, seconds: u64) -> anyhow::Result<Cell> {
    let desk = urpnet_node::cli::connect(&node.desk.to_string(), &node.admin, 4 << 20).await?;
    let started = Instant::now();
    let measure_from = started + Duration::from_millis(500);
    let stop_at = measure_from + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let mut desk = desk.clone();
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + c as u64);
            let mut latencies = Vec::new();
            while Instant::now() < stop_at {
                let req = samples::request(&mut rng, "066032", Channel::Desk);
                let sent = Instant::now();
                let ok = desk.create_ticket(req).await.is_ok();
                if sent >= measure_from && ok {
                    latencies.push(sent.elapsed().as_micros() as u32);
                }
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done?);
    }
    latencies.sort_unstable();
    Ok(Cell {
        what: "Desk CreateTicket (gRPC)".into(),
        clients,
        done: latencies.len() as u64,
        refused: 0,
        per_second: latencies.len() as f64 / seconds as f64,
        p50_ms: bench::percentile_ms(&latencies, 0.5),
        p99_ms: bench::percentile_ms(&latencies, 0.99),
        ratio: None,
    })
}

/// A bare axum handler reading a booking's JSON and answering one.
async fn bare(clients: usize, seconds: u64) -> anyhow::Result<Cell> {
    let app = axum::Router::new().route(
        "/appointments",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            (
                axum::http::StatusCode::CREATED,
                axum::Json(json!({"id": "01M90HYVFMY2Z2PDXTX4Q439KW", "start": v["start"], "status": "booked", "manage_token": "841191cb5217d52a9dbfffc2740be28d"})),
            )
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        }
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let started = Instant::now();
    let measure_from = started + Duration::from_millis(500);
    let stop_at = measure_from + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let http = http.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0;
            while Instant::now() < stop_at {
                n += 1;
                let sent = Instant::now();
                let ok = http
                    .post(format!("http://{addr}/appointments"))
                    .json(&form(
                        "sue",
                        "x",
                        "2026-12-10T09:00",
                        &format!("bare-{c}-{n}"),
                    ))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if sent >= measure_from && ok {
                    latencies.push(sent.elapsed().as_micros() as u32);
                }
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done?);
    }
    stop.cancel();
    let _ = server.await;
    latencies.sort_unstable();
    Ok(Cell {
        what: "bare axum JSON handler".into(),
        clients,
        done: latencies.len() as u64,
        refused: 0,
        per_second: latencies.len() as f64 / seconds as f64,
        p50_ms: bench::percentile_ms(&latencies, 0.5),
        p99_ms: bench::percentile_ms(&latencies, 0.99),
        ratio: None,
    })
}

/// One row per fsynced transaction (WAL, synchronous=FULL), as fast as one
/// thread can.
fn raw_sqlite(seconds: u64) -> anyhow::Result<Cell> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
         CREATE TABLE seats (office TEXT, service TEXT, start_ms INTEGER, seat INTEGER, holder TEXT, \
         PRIMARY KEY (office, service, start_ms, seat)) WITHOUT ROWID;",
    )?;
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut latencies = Vec::new();
    let mut n = 0i64;
    while Instant::now() < stop_at {
        n += 1;
        let sent = Instant::now();
        conn.execute(
            "INSERT INTO seats VALUES ('sue', 'x', ?1, 0, 'a')",
            rusqlite::params![n],
        )?;
        latencies.push(sent.elapsed().as_micros() as u32);
    }
    latencies.sort_unstable();
    Ok(Cell {
        what: "raw SQLite insert, one fsynced tx each".into(),
        clients: 1,
        done: latencies.len() as u64,
        refused: 0,
        per_second: latencies.len() as f64 / seconds as f64,
        p50_ms: bench::percentile_ms(&latencies, 0.5),
        p99_ms: bench::percentile_ms(&latencies, 0.99),
        ratio: None,
    })
}

async fn scalar(pool: &sqlx::AnyPool, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await?)
}

/// Books the popular service at distinct slots across its year until the
/// office holds `target` bookings.
async fn fill(
    base: &str,
    pool: &sqlx::AnyPool,
    target: usize,
    clients: usize,
) -> anyhow::Result<i64> {
    let count = "SELECT COUNT(*) FROM appointments WHERE office_id = 'sue'";
    let have = scalar(pool, count).await? as usize;
    if have >= target {
        return Ok(have as i64);
    }
    let bar = indicatif::ProgressBar::new((target - have) as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "filling the SUE's year {bar:40} {pos}/{len} {per_sec}",
    )?);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let per_client = (target - have).div_ceil(clients);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (http, base, bar) = (http.clone(), base.to_string(), bar.clone());
        tasks.spawn(async move {
            let mut day = (c * 5) as i64 % 360;
            let mut made = 0;
            let mut n = 0;
            while made < per_client {
                let from = (jiff::Zoned::now().date() + jiff::Span::new().days(day)).to_string();
                let slots = free(&http, &base, POPULAR.0, POPULAR.1, &from, 20).await;
                if slots.is_empty() {
                    day = (day + 1) % 360;
                    continue;
                }
                for s in slots {
                    n += 1;
                    let ok = http
                        .post(format!("{base}/appointments"))
                        .json(&form(POPULAR.0, POPULAR.1, &s, &format!("fill-{c}-{n}")))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().as_u16() == 201);
                    if ok {
                        made += 1;
                        bar.inc(1);
                        if made >= per_client {
                            break;
                        }
                    }
                }
                day = (day + 7) % 360;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    bar.finish_and_clear();
    scalar(pool, count).await
}

async fn queries(base: &str, n: usize, days: i64, bookings: i64) -> anyhow::Result<Query> {
    let http = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let today = jiff::Zoned::now().date();
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let from = today + jiff::Span::new().days(rng.gen_range(0..(366 - days)));
        let until = from + jiff::Span::new().days(days);
        let url = format!(
            "{base}/appointments/slots?office={}&service={}&from={from}&until={until}&limit=500",
            POPULAR.0, POPULAR.1
        );
        let sent = Instant::now();
        let r = http.get(url).send().await?;
        if !r.status().is_success() {
            anyhow::bail!("slots answered {}: {}", r.status(), r.text().await?);
        }
        let _ = r.bytes().await?;
        latencies.push(sent.elapsed().as_micros() as u32);
    }
    latencies.sort_unstable();
    let p99 = bench::percentile_ms(&latencies, 0.99);
    Ok(Query {
        what: format!("free slots, {days}-day window (HTTP)"),
        queries: n,
        bookings_at_office: bookings,
        p50_ms: bench::percentile_ms(&latencies, 0.5),
        p99_ms: p99,
        max_ms: f64::from(*latencies.last().unwrap_or(&0)) / 1000.0,
        goal_ms: 5.0,
        met: p99 < 5.0,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    urpnet_proto::telemetry::init_logs(Default::default(), "error");
    let node = start_node().await?;
    let base = format!("http://{}", node.public);
    let (channel, token) =
        urpnet_node::cli::channel_with_token(&node.desk.to_string(), &node.admin).await?;
    let charter = urpnet_node::charter::import::from_toml(
        "celano.toml",
        include_str!("../../charters/celano.toml"),
        "",
        None,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    urpnet_proto::v1::charter_desk_client::CharterDeskClient::with_interceptor(
        channel.clone(),
        token.clone(),
    )
    .import_charter(ImportCharterRequest {
        charter: Some(charter.clone()),
    })
    .await?;
    let plans = Arc::new(plans(&charter));
    urpnet_proto::v1::appointment_desk_client::AppointmentDeskClient::with_interceptor(
        channel, token,
    )
    .set_plans(SetPlansRequest {
        plans: plans.to_vec(),
        dry_run: false,
    })
    .await?;
    println!(
        "bench-appointments: {} plans, {} clients, {} s per phase",
        plans.len(),
        args.clients,
        args.seconds
    );

    let mut cells = Vec::new();
    cells.push(raw_sqlite(args.seconds)?);
    cells.push(bare(args.clients, args.seconds).await?);
    cells.push(create_tickets(&node, args.clients, args.seconds).await?);
    cells.push(
        booking_phase(
            &base,
            plans.clone(),
            args.clients,
            args.seconds,
            true,
            "contention",
        )
        .await?,
    );
    cells.push(
        booking_phase(
            &base,
            plans.clone(),
            args.clients,
            args.seconds,
            false,
            "spread",
        )
        .await?,
    );
    let ticket_rate = cells[2].per_second;
    for c in &mut cells[3..] {
        c.ratio = Some(c.per_second / ticket_rate.max(1e-9));
    }

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&node.db_url).await?;
    let bookings = fill(&base, &pool, args.bookings, args.clients).await?;
    let q14 = queries(&base, args.queries, 14, bookings).await?;
    let q62 = queries(&base, args.queries / 4, 62, bookings).await?;

    // Never a seat over capacity: every slot's seats against its plan.
    let capacity: HashMap<(String, String), i64> = plans
        .iter()
        .map(|p| ((p.office.clone(), p.service.clone()), i64::from(p.capacity)))
        .collect();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT office_id, service_id, COUNT(*) FROM appointment_seats GROUP BY office_id, service_id, start_ms",
    )
    .fetch_all(&pool)
    .await?;
    let over = rows
        .iter()
        .filter(|(o, s, n)| *n > capacity.get(&(o.clone(), s.clone())).copied().unwrap_or(0))
        .count() as i64;
    let booked_seats = scalar(
        &pool,
        "SELECT COUNT(*) FROM appointments WHERE status = 'booked'",
    )
    .await?;
    let seats = scalar(
        &pool,
        "SELECT COUNT(*) FROM appointment_seats WHERE hold_expires_ms IS NULL",
    )
    .await?;
    anyhow::ensure!(
        booked_seats == seats,
        "{booked_seats} bookings but {seats} seats"
    );
    pool.close().await;
    node.shutdown.cancel();
    let _ = node.task.await;

    let report = Report {
        date: bench::now(),
        machine: bench::machine(),
        cores: bench::cores(),
        seconds_per_phase: args.seconds,
        cells,
        queries: vec![q14, q62],
        slots_checked: rows.len() as i64,
        seats_over_capacity: over,
    };
    let mut t = urpnet_proto::cli::table();
    t.set_header([
        "what",
        "clients",
        "done",
        "refused",
        "/s",
        "p50 ms",
        "p99 ms",
        "× CreateTicket",
    ]);
    for c in &report.cells {
        t.add_row([
            c.what.clone(),
            c.clients.to_string(),
            c.done.to_string(),
            c.refused.to_string(),
            format!("{:.0}", c.per_second),
            format!("{:.2}", c.p50_ms),
            format!("{:.2}", c.p99_ms),
            c.ratio.map_or(String::new(), |r| format!("{r:.2}")),
        ]);
    }
    println!("bench-appointments — {} — {}", report.date, report.machine);
    println!("{t}");
    let mut q = urpnet_proto::cli::table();
    q.set_header([
        "query",
        "bookings at office",
        "p50 ms",
        "p99 ms",
        "max ms",
        "goal",
    ]);
    for x in &report.queries {
        q.add_row([
            x.what.clone(),
            x.bookings_at_office.to_string(),
            format!("{:.2}", x.p50_ms),
            format!("{:.2}", x.p99_ms),
            format!("{:.2}", x.max_ms),
            format!(
                "p99 < {} ms: {}",
                x.goal_ms,
                if x.met { "met" } else { "missed" }
            ),
        ]);
    }
    println!("{q}");
    println!(
        "capacity: {} slots checked, {} over capacity",
        report.slots_checked, report.seats_over_capacity
    );
    if let Some(parent) = args.json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.json_out.display());
    Ok(())
}
