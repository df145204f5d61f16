//! bench-registry: how many members one registry serves on this machine.
//!
//! For each network size (comuni from the ISTAT list, plus the 20 regioni and
//! one national body), the benchmark starts a real `urpnet-registry serve`
//! process, enrols every member through the coordinators' mTLS API (each
//! with its own key, CSR and certificate), opens one mTLS connection per
//! member, and measures:
//!
//! 1. **flood**: heartbeats per second with 64 requests in flight, next to
//!    gRPC health checks over the same connections in the same run (tonic +
//!    rustls with no registry logic: the transport's limit);
//! 2. **steady state**: every member heartbeating once per interval (5 s by
//!    default, at random phase) while one coordinator connection measures
//!    `Route` and `Overflow` latency back to back;
//! 3. **one noisy member**: a member flooding heartbeats far beyond its quota
//!    while the others keep beating and the coordinator keeps routing — what
//!    the rate limit lets through and refuses, and the others' latency;
//! 4. the registry process's resident memory.
//!
//! Prints a table and writes JSON. Needs the release binary of the registry:
//!
//! cargo build --release -p urpnet-registry
//! cargo run --release -p urpnet-examples --bin bench-registry -- --help

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tonic::transport::Channel;
use urpnet_examples::{bench, federation};
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::territory::Territory;
use urpnet_proto::tls::{self, TlsMaterial};
use urpnet_proto::v1::registry_admin_client::RegistryAdminClient;
use urpnet_proto::v1::registry_client::RegistryClient;
use urpnet_proto::v1::{
    EnrolRequest, HeartbeatRequest, ImportTaxonomyRequest, Level, LoadReport, OverflowRequest,
    RouteRequest,
};
use urpnet_registry::config::RegistryConfig;
use urpnet_registry::registry::paths;

/// Measures heartbeats, routing and memory of one registry.
#[derive(Parser)]
struct Args {
    /// Network sizes in comuni (comma-separated; 7896 = every comune).
    #[arg(long, value_delimiter = ',', default_value = "1000,7896")]
    members: Vec<usize>,
    /// Seconds of the flood phase (each of heartbeats and health checks).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Heartbeat interval of the steady-state phase.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Steady-state intervals to measure.
    #[arg(long, default_value_t = 3)]
    intervals: u32,
    /// Run the registry on this PostgreSQL URL instead of SQLite.
    #[arg(long, env = "URPNET_BENCH_POSTGRES_URL")]
    postgres: Option<String>,
    /// The registry binary (default: beside this program).
    #[arg(long)]
    registry_bin: Option<PathBuf>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/bench-registry.json")]
    json_out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
struct Cell {
    comuni: usize,
    members: usize,
    store: String,
    enrol_seconds: f64,
    enrolments_per_second: f64,
    flood_heartbeats_per_second: f64,
    flood_heartbeat_p99_ms: f64,
    flood_health_checks_per_second: f64,
    flood_ratio_to_transport: f64,
    steady_interval_s: f64,
    steady_heartbeats_per_second: f64,
    steady_heartbeat_p99_ms: f64,
    steady_heartbeat_errors: u64,
    route_calls: usize,
    route_p50_ms: f64,
    route_p99_ms: f64,
    overflow_calls: usize,
    overflow_p50_ms: f64,
    overflow_p99_ms: f64,
    /// A member flooding heartbeats: what the rate limit let through and
    /// refused, per second.
    noisy_member_accepted_per_second: f64,
    noisy_member_refused_per_second: f64,
    /// `Route` p99 and the other members' heartbeat p99 during that flood.
    noisy_route_p99_ms: f64,
    noisy_others_heartbeat_p99_ms: f64,
    registry_rss_mib: f64,
    registry_peak_rss_mib: f64,
}

/// A coordinator sending `Route` (and every fourth time `Overflow`) back to
/// back, on a thread and runtime of its own so that its calls never queue
/// behind the simulated members' tasks in this process.
#[derive(Clone)]
struct RouteProbe {
    endpoint: String,
    coordinator: TlsMaterial,
    categories: Vec<String>,
    comune_codes: Vec<String>,
    overflow_from: Vec<String>,
    overflow_pool: Vec<String>,
}

impl RouteProbe {
    /// Latencies (µs) of `Route` and `Overflow` calls for `duration`.
    async fn run(self, duration: Duration, seed: u64) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
        let thread = std::thread::spawn(move || -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut registry = RegistryClient::new(channel(&self.endpoint, &self.coordinator)?);
                let (mut route_lat, mut overflow_lat) = (Vec::new(), Vec::new());
                let start = Instant::now();
                let mut k = 0usize;
                while start.elapsed() < duration {
                    let category = self.categories[rng.gen_range(0..self.categories.len())].clone();
                    let territory =
                        self.comune_codes[rng.gen_range(0..self.comune_codes.len())].clone();
                    let t = Instant::now();
                    registry
                        .route(RouteRequest {
                            category,
                            territory,
                        })
                        .await
                        .context("route")?;
                    route_lat.push(t.elapsed().as_micros() as u32);
                    if k.is_multiple_of(4) {
                        let t = Instant::now();
                        registry
                            .overflow(OverflowRequest {
                                category: self.overflow_pool[k % self.overflow_pool.len()].clone(),
                                from: self.overflow_from
                                    [rng.gen_range(0..self.overflow_from.len())]
                                .clone(),
                                limit: 5,
                            })
                            .await
                            .context("overflow")?;
                        overflow_lat.push(t.elapsed().as_micros() as u32);
                    }
                    k += 1;
                }
                Ok((route_lat, overflow_lat))
            })
        });
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("measuring thread panicked"))?
    }
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    date: String,
    machine: String,
    cores: usize,
    cells: Vec<Cell>,
}

struct Member {
    id: String,
    tls: TlsMaterial,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    urpnet_proto::telemetry::init_logs(Default::default(), "warn");
    raise_fd_limit();
    let bin = match &args.registry_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("urpnet-registry"),
    };
    anyhow::ensure!(
        bin.exists(),
        "{} not found: run `cargo build --release -p urpnet-registry` first (or pass --registry-bin)",
        bin.display()
    );
    let mut cells = Vec::new();
    for &comuni in &args.members {
        cells.push(run_size(&args, &bin, comuni).await?);
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "members",
        "enrol/s",
        "flood hb/s",
        "vs transport",
        "steady hb/s",
        "hb p99 ms",
        "Route p50/p99 ms",
        "Overflow p50/p99 ms",
        "one member flooding: let through / refused per s; Route p99; others' hb p99",
        "RSS MiB",
    ]);
    for c in &cells {
        table.add_row([
            format!("{} ({} comuni)", c.members, c.comuni),
            format!("{:.0}", c.enrolments_per_second),
            format!("{:.0}", c.flood_heartbeats_per_second),
            format!(
                "{:.0} % of {:.0}/s",
                c.flood_ratio_to_transport * 100.0,
                c.flood_health_checks_per_second
            ),
            format!("{:.0}", c.steady_heartbeats_per_second),
            format!("{:.2}", c.steady_heartbeat_p99_ms),
            format!("{:.3} / {:.3}", c.route_p50_ms, c.route_p99_ms),
            format!("{:.3} / {:.3}", c.overflow_p50_ms, c.overflow_p99_ms),
            format!(
                "{:.0} / {:.0}; {:.3} ms; {:.2} ms",
                c.noisy_member_accepted_per_second,
                c.noisy_member_refused_per_second,
                c.noisy_route_p99_ms,
                c.noisy_others_heartbeat_p99_ms
            ),
            format!(
                "{:.0} (peak {:.0})",
                c.registry_rss_mib, c.registry_peak_rss_mib
            ),
        ]);
    }
    let report = Report {
        benchmark: "bench-registry",
        date: bench::now(),
        machine: bench::machine(),
        cores: bench::cores(),
        cells,
    };
    println!("bench-registry — {} — {}", report.date, report.machine);
    println!("{table}");
    if let Some(parent) = args.json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.json_out.display());
    Ok(())
}

async fn run_size(args: &Args, bin: &std::path::Path, comuni: usize) -> anyhow::Result<Cell> {
    let dir = tempfile::Builder::new()
        .prefix("urpnet-bench-registry-")
        .tempdir()?;
    let mut config = RegistryConfig::new("bench", dir.path().join("data"));
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    config.grpc.listen = probe.local_addr()?;
    drop(probe);
    config.metrics.listen = String::new();
    config.membership.heartbeat_interval = args.interval;
    // Members keep the default quota (50/s, burst 100): the flood phase
    // spreads its requests over every member, well under each one's quota;
    // the noisy-member phase goes far beyond one member's. The measuring
    // coordinator sends thousands of requests a second, so it gets more.
    config.limits.coordinator_requests_per_second = 100_000;
    config.limits.coordinator_burst = 100_000;
    config.log.filter = "warn".into();
    let store = match &args.postgres {
        Some(base) => {
            let name = format!("urpnet_bench_registry_{comuni}_{}", std::process::id());
            config.store.url = bench::fresh_database(base, &name).await?;
            "postgres"
        }
        None => "sqlite",
    };
    urpnet_registry::server::ca_init(&config).await?;
    let config_path = dir.path().join("urpnet-registry.toml");
    std::fs::write(&config_path, toml::to_string(&config)?)?;
    let log = std::fs::File::create(dir.path().join("registry.log"))?;
    let mut child = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("spawn urpnet-registry")?;
    let pid = child.id().context("pid")?;
    let endpoint = format!("https://{}", config.grpc.listen);
    let coordinator = paths::coordinator_tls(&config.registry.data_dir).load()?;
    let coordinator_channel = channel(&endpoint, &coordinator)?;
    federation::wait_serving(&endpoint, &coordinator.ca_pem, Duration::from_secs(30)).await?;
    let mut admin = RegistryAdminClient::new(coordinator_channel.clone());
    let taxonomy = admin
        .import_taxonomy(ImportTaxonomyRequest {
            toml: include_str!("../../taxonomy.toml").into(),
        })
        .await?
        .into_inner()
        .taxonomy
        .context("taxonomy")?;

    // Members: `comuni` comuni spread over Italy, every regione, INPS.
    let italy = Territory::italy();
    let all: Vec<_> = italy.comuni().collect();
    let step = (all.len() as f64 / comuni.min(all.len()) as f64).max(1.0);
    let mut wanted: Vec<(String, Level, Vec<String>)> = (0..comuni.min(all.len()))
        .map(|i| {
            let c = all[(i as f64 * step) as usize];
            (
                c.ipa_code.clone(),
                Level::Comune,
                vec![c.istat_code.clone()],
            )
        })
        .collect();
    let mut regions: Vec<String> = all.iter().map(|c| c.region_code.clone()).collect();
    regions.sort();
    regions.dedup();
    for r in &regions {
        wanted.push((format!("r_{r}"), Level::Regione, vec![r.clone()]));
    }
    wanted.push(("inps".into(), Level::Nazionale, vec![]));
    let bar = ProgressBar::new(wanted.len() as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} enrolled  {per_sec}",
    )?);
    let started = Instant::now();
    let members: Vec<Member> = {
        use futures::StreamExt as _;
        futures::stream::iter(wanted.into_iter().map(|(id, level, territory)| {
            let mut admin = admin.clone();
            let bar = bar.clone();
            async move {
                let signer = NodeSigner::generate(urpnet_proto::ids::NodeId::new(&id)?);
                let key_pem = tls::generate_key()?;
                let csr_pem = tls::make_csr(&key_pem, &id)?;
                let resp = admin
                    .enrol(EnrolRequest {
                        id: id.clone(),
                        display_name: format!("Ente {id}"),
                        level: level as i32,
                        territory,
                        endpoint: format!("https://{id}.example.it:7401"),
                        signing_key: signer.verifying_key().as_bytes().to_vec(),
                        csr_pem,
                    })
                    .await
                    .with_context(|| format!("enrol {id}"))?
                    .into_inner();
                bar.inc(1);
                anyhow::Ok(Member {
                    id,
                    tls: TlsMaterial {
                        cert_pem: resp.certificate_pem,
                        key_pem,
                        ca_pem: resp.ca_pem,
                    },
                })
            }
        }))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?
    };
    let enrol_seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    // One mTLS connection per member, opened by a first heartbeat.
    let mut rng = rand::rngs::StdRng::seed_from_u64(comuni as u64);
    let overflow_pool = ["informazioni", "anagrafe", "tributi", "servizi_sociali"];
    let loads: Vec<LoadReport> = members
        .iter()
        .map(|_| {
            let capacity = rng.gen_range(10..80);
            LoadReport {
                open_tickets: rng.gen_range(0..300),
                queue_waiting: rng.gen_range(0..capacity + 20),
                operators_on_duty: rng.gen_range(0..6),
                capacity_per_hour: capacity,
                overflow_categories: if rng.gen_bool(0.3) {
                    vec![overflow_pool[rng.gen_range(0..overflow_pool.len())].to_string()]
                } else {
                    vec![]
                },
            }
        })
        .collect();
    let bar = ProgressBar::new(members.len() as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} connected",
    )?);
    let mut clients = Vec::with_capacity(members.len());
    let mut channels = Vec::with_capacity(members.len());
    for (m, load) in members.iter().zip(&loads) {
        let ch = channel(&endpoint, &m.tls)?;
        channels.push(ch.clone());
        let mut client = RegistryClient::new(ch);
        client
            .heartbeat(HeartbeatRequest {
                node_id: m.id.clone(),
                load: Some(load.clone()),
            })
            .await
            .with_context(|| format!("first heartbeat of {}", m.id))?;
        clients.push(client);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let clients = Arc::new(clients);
    let members = Arc::new(members);
    let loads = Arc::new(loads);

    // 1. Flood: health checks over the member connections (the transport's
    // limit), heartbeats, health checks again; the limit is the mean of the
    // two health runs.
    let health: Arc<Vec<_>> = Arc::new(
        channels
            .iter()
            .cloned()
            .map(tonic_health::pb::health_client::HealthClient::new)
            .collect(),
    );
    let health_flood = || {
        let health = health.clone();
        flood(args.seconds, members.len(), move |i| {
            let mut c = health[i].clone();
            async move {
                c.check(tonic_health::pb::HealthCheckRequest {
                    service: "urpnet.v1.Registry".into(),
                })
                .await
                .is_ok()
            }
        })
    };
    let (health_before, _) = health_flood().await;
    let (hb_rate, hb_lat) = flood(args.seconds, members.len(), {
        let (clients, members, loads) = (clients.clone(), members.clone(), loads.clone());
        move |i| {
            let mut c = clients[i].clone();
            let req = HeartbeatRequest {
                node_id: members[i].id.clone(),
                load: Some(loads[i].clone()),
            };
            async move { c.heartbeat(req).await.is_ok() }
        }
    })
    .await;
    let (health_after, _) = health_flood().await;
    let health_rate = (health_before + health_after) / 2.0;
    drop(health);

    // 2. Steady state: every member once per interval, at random phase.
    let stop = tokio_util::sync::CancellationToken::new();
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let steady_lat = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let mut beaters = tokio::task::JoinSet::new();
    for i in 0..members.len() {
        let (clients, members, loads) = (clients.clone(), members.clone(), loads.clone());
        let (stop, sent, errors, lat) = (
            stop.clone(),
            sent.clone(),
            errors.clone(),
            steady_lat.clone(),
        );
        let interval = args.interval;
        let phase = Duration::from_millis(rng.gen_range(0..interval.as_millis() as u64));
        beaters.spawn(async move {
            tokio::time::sleep(phase).await;
            let mut tick = tokio::time::interval(interval);
            let mut c = clients[i].clone();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let t = Instant::now();
                let ok = c
                    .heartbeat(HeartbeatRequest {
                        node_id: members[i].id.clone(),
                        load: Some(loads[i].clone()),
                    })
                    .await
                    .is_ok();
                sent.fetch_add(1, Ordering::Relaxed);
                if ok {
                    lat.lock()
                        .expect("lat")
                        .push(t.elapsed().as_micros() as u32);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    // Let every member's phase start, then measure.
    tokio::time::sleep(args.interval).await;
    sent.store(0, Ordering::Relaxed);
    steady_lat.lock().expect("lat").clear();
    let measure = args.interval * args.intervals;
    let measure_start = Instant::now();
    let categories: Vec<String> = taxonomy.categories.iter().map(|c| c.code.clone()).collect();
    let comune_codes: Vec<String> = all.iter().map(|c| c.istat_code.clone()).collect();
    let overflow_from: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    let probe = RouteProbe {
        endpoint: endpoint.clone(),
        coordinator: coordinator.clone(),
        categories,
        comune_codes,
        overflow_from,
        overflow_pool: overflow_pool.iter().map(|s| s.to_string()).collect(),
    };
    let (mut route_lat, mut overflow_lat) = probe.clone().run(measure, rng.r#gen()).await?;
    let steady_secs = measure_start.elapsed().as_secs_f64();
    let steady_sent = sent.load(Ordering::Relaxed);
    let mut steady = std::mem::take(&mut *steady_lat.lock().expect("lat"));
    steady.sort_unstable();

    // 3. One member floods heartbeats (8 in flight, far beyond its quota)
    // while the others keep beating and a coordinator keeps routing.
    let flood_stop = tokio_util::sync::CancellationToken::new();
    let (flood_ok, flood_limited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flooders = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (mut c, id, stop) = (
            clients[0].clone(),
            members[0].id.clone(),
            flood_stop.clone(),
        );
        let (ok, limited) = (flood_ok.clone(), flood_limited.clone());
        flooders.spawn(async move {
            while !stop.is_cancelled() {
                match c
                    .heartbeat(HeartbeatRequest {
                        node_id: id.clone(),
                        load: None,
                    })
                    .await
                {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                        limited.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => 0,
                };
            }
        });
    }
    steady_lat.lock().expect("lat").clear();
    let noisy_start = Instant::now();
    let (mut noisy_route, _) = probe.run(args.interval, rng.r#gen()).await?;
    let noisy_secs = noisy_start.elapsed().as_secs_f64();
    flood_stop.cancel();
    while flooders.join_next().await.is_some() {}
    let mut noisy_others = std::mem::take(&mut *steady_lat.lock().expect("lat"));
    noisy_others.sort_unstable();
    noisy_route.sort_unstable();
    stop.cancel();
    while beaters.join_next().await.is_some() {}
    route_lat.sort_unstable();
    overflow_lat.sort_unstable();
    let (rss, peak) = memory_mib(pid);
    child.start_kill()?;
    let _ = child.wait().await;

    let cell = Cell {
        comuni,
        members: members.len(),
        store: store.into(),
        enrol_seconds,
        enrolments_per_second: members.len() as f64 / enrol_seconds,
        flood_heartbeats_per_second: hb_rate,
        flood_heartbeat_p99_ms: bench::percentile_ms(&hb_lat, 0.99),
        flood_health_checks_per_second: health_rate,
        flood_ratio_to_transport: hb_rate / health_rate,
        steady_interval_s: args.interval.as_secs_f64(),
        steady_heartbeats_per_second: steady_sent as f64 / steady_secs,
        steady_heartbeat_p99_ms: bench::percentile_ms(&steady, 0.99),
        steady_heartbeat_errors: errors.load(Ordering::Relaxed),
        route_calls: route_lat.len(),
        route_p50_ms: bench::percentile_ms(&route_lat, 0.5),
        route_p99_ms: bench::percentile_ms(&route_lat, 0.99),
        overflow_calls: overflow_lat.len(),
        overflow_p50_ms: bench::percentile_ms(&overflow_lat, 0.5),
        overflow_p99_ms: bench::percentile_ms(&overflow_lat, 0.99),
        noisy_member_accepted_per_second: flood_ok.load(Ordering::Relaxed) as f64 / noisy_secs,
        noisy_member_refused_per_second: flood_limited.load(Ordering::Relaxed) as f64 / noisy_secs,
        noisy_route_p99_ms: bench::percentile_ms(&noisy_route, 0.99),
        noisy_others_heartbeat_p99_ms: bench::percentile_ms(&noisy_others, 0.99),
        registry_rss_mib: rss,
        registry_peak_rss_mib: peak,
    };
    eprintln!("{comuni} comuni: {cell:?}");
    Ok(cell)
}

/// 64 requests in flight for `seconds`, spread round-robin over `n`
/// connections; returns requests/s and sorted latencies (µs).
async fn flood<F, Fut>(seconds: u64, n: usize, call: F) -> (f64, Vec<u32>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (call, next) = (call.clone(), next.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) % n;
                let t = Instant::now();
                if call(i).await {
                    lat.push(t.elapsed().as_micros() as u32);
                }
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(Ok(l)) = tasks.join_next().await {
        all.extend(l);
    }
    all.sort_unstable();
    (all.len() as f64 / seconds as f64, all)
}

fn channel(endpoint: &str, material: &TlsMaterial) -> anyhow::Result<Channel> {
    Ok(tls::channel_to_registry(
        endpoint,
        material.client_config()?,
        Duration::from_secs(10),
    )?)
}

/// (VmRSS, VmHWM) of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One connection per member needs a descriptor at each end.
fn raise_fd_limit() {
    // `ulimit -n` is usually already high enough here (see docs); nothing
    // to do portably without libc, so just report it.
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
        && let Some(line) = limits.lines().find(|l| l.starts_with("Max open files"))
    {
        eprintln!("{}", line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
}
