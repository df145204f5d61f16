//! bench-federation: how fast shared tickets travel between nodes.
//!
//! For each federation size, a real registry and N real nodes (comuni of
//! Abruzzo, each enrolled with its own key and certificate) run in this
//! process on loopback, every node-to-node call over mutual TLS. It measures:
//!
//! 1. **replication lag** under a steady open-loop load: at `--rate`
//!    handoffs per second, a ticket is created at node i and offered to node
//!    i+1 (`Desk.CreateTicket` then `Desk.Handoff`); the lag runs from the
//!    create call to the moment the destination's `WatchTickets` stream
//!    reports the offer applied. Also reported: the lag from the handoff's
//!    acknowledgement alone (pure replication), and, as the transport's
//!    limit in the same run, the round trip of a bare gRPC health check over
//!    mutual TLS between two nodes;
//! 2. **catch-up** (first size only): a node is stopped while its peer
//!    queues `--backlog` events for it, then started again; the rate at
//!    which the outbox drains, next to raw SQLite inserts of the same
//!    envelopes in the same batches with `synchronous=FULL` (the receiver's
//!    storage limit).
//!
//! cargo run --release -p urpnet-examples --bin bench-federation -- --help

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use urpnet_examples::bench;
use urpnet_examples::federation::{self, RunningNode};
use urpnet_node::NodeConfig;
use urpnet_node::cli::Desk;
use urpnet_proto::ids::NodeId;
use urpnet_proto::territory::Territory;
use urpnet_proto::tls::{self, Identity};
use urpnet_proto::v1::{
    Channel, CreateTicketRequest, HandoffRequest, ImportTaxonomyRequest, Level, ListPeersRequest,
    Location, WatchTicketsRequest,
};
use urpnet_registry::config::RegistryConfig;

/// Measures replication lag and catch-up between nodes.
#[derive(Parser)]
struct Args {
    /// Federation sizes (nodes).
    #[arg(long, value_delimiter = ',', default_value = "3,20")]
    nodes: Vec<usize>,
    /// Handoffs per second offered during the steady phase.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds of steady load per size.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Events queued for the stopped node in the catch-up phase (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    backlog: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/bench-federation.json")]
    json_out: std::path::PathBuf,
}

#[derive(Debug, Clone, Serialize)]
struct LagCell {
    nodes: usize,
    offered_per_second: u32,
    achieved_per_second: f64,
    handoffs: usize,
    errors: usize,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    replication_p50_ms: f64,
    replication_p99_ms: f64,
    mtls_rtt_p50_ms: f64,
    mtls_rtt_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
struct CatchUp {
    events: u64,
    /// From starting the node again to an empty outbox.
    seconds: f64,
    /// Of which the node's own start-up (until its Desk answered).
    start_seconds: f64,
    events_per_second: f64,
    raw_sqlite_events_per_second: f64,
    ratio_to_raw: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    when: String,
    lag: Vec<LagCell>,
    catch_up: Option<CatchUp>,
}

/// The comuni of Abruzzo, by ISTAT code: the federation's members.
fn offices(n: usize) -> Vec<(String, String, String)> {
    let mut comuni: Vec<_> = Territory::italy()
        .comuni()
        .filter(|c| c.region_code == "13")
        .map(|c| {
            (
                c.ipa_code.to_lowercase(),
                c.name.clone(),
                c.istat_code.clone(),
            )
        })
        .collect();
    comuni.sort_by(|a, b| a.2.cmp(&b.2));
    comuni.truncate(n);
    comuni
}

fn ticket_request(istat: &str, n: u64) -> CreateTicketRequest {
    CreateTicketRequest {
        request_id: format!("bench-{n}-{}", ulid::Ulid::new()),
        category: "sanita.prenotazioni".into(),
        channel: Channel::Phone as i32,
        subject: "Prenotazione visita specialistica".into(),
        description: "Chiede tempi e modalità di prenotazione di una visita".into(),
        location: Some(Location {
            istat_code: istat.into(),
            address: String::new(),
            coordinates: None,
        }),
        ..Default::default()
    }
}

/// A running federation of `n` nodes.
struct Federation {
    registry: federation::RunningRegistry,
    nodes: Vec<RunningNode>,
    istat: Vec<String>,
    _dir: tempfile::TempDir,
}

async fn start(n: usize) -> anyhow::Result<Federation> {
    let dir = tempfile::Builder::new()
        .prefix("urpnet-bench-fed-")
        .tempdir()?;
    let mut rconfig = RegistryConfig::new("bench", dir.path().join("registry"));
    rconfig.membership.heartbeat_interval = Duration::from_secs(1);
    rconfig.metrics.listen = String::new();
    let registry = federation::start_registry(rconfig).await?;
    let mut admin = registry.admin()?;
    admin
        .import_taxonomy(ImportTaxonomyRequest {
            toml: include_str!("../../taxonomy.toml").into(),
        })
        .await?;
    let mut nodes = Vec::new();
    let mut istat = Vec::new();
    for (id, name, code) in offices(n) {
        let mut config = NodeConfig::new(
            NodeId::new(&id)?,
            format!("Comune di {name}"),
            dir.path().join(&id).join("data"),
        );
        // Capacity is measured, not the per-caller rate limits.
        config.desk.rate_per_second = 1_000_000;
        config.desk.rate_burst = 1_000_000;
        config.peering.rate_per_second = 1_000_000;
        config.peering.rate_burst = 1_000_000;
        federation::enrol_node(
            &mut admin,
            &registry.endpoint(),
            &mut config,
            Level::Comune,
            &[&code],
        )
        .await?;
        nodes.push(federation::start_node(config).await?);
        istat.push(code);
    }
    // Every node must know every other as active before the load starts.
    let start = Instant::now();
    for node in &nodes {
        loop {
            let members = urpnet_node::registry_link::load_cache(&node.config.node.data_dir).0;
            if members.is_some_and(|m| nodes.iter().all(|o| m.is_active(o.config.node.id.as_str())))
            {
                break;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "members not known"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Federation {
        registry,
        nodes,
        istat,
        _dir: dir,
    })
}

/// Round trips of a bare gRPC health check over mutual TLS from node 0's
/// certificate to node 1's Peering port.
async fn mtls_rtt(fed: &Federation, calls: usize) -> anyhow::Result<Vec<u32>> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let material = tls::TlsFiles::in_dir(&fed.nodes[0].config.tls_dir()).load()?;
    let to = &fed.nodes[1].config;
    let channel = tls::channel_to(
        &to.registry.advertise,
        material.client_config()?,
        Duration::from_secs(3),
        Identity::Node(to.node.id.clone()),
    )?;
    let mut client = HealthClient::new(channel);
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        out.push(t.elapsed().as_micros() as u32);
    }
    out.sort_unstable();
    Ok(out)
}

/// Arrival time of each offer at its destination, by ticket id.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn watch(
    node: &RunningNode,
    arrivals: Arrivals,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let me = node.config.node.id.to_string();
    let mut stream = node
        .desk()
        .await?
        .watch_tickets(WatchTicketsRequest {})
        .await?
        .into_inner();
    Ok(tokio::spawn(async move {
        while let Some(Ok(change)) = stream.next().await {
            let Some(ticket) = change.ticket else {
                continue;
            };
            if change.source != me
                && ticket
                    .pending_handoff
                    .as_ref()
                    .is_some_and(|p| p.to_node == me)
            {
                arrivals
                    .lock()
                    .expect("arrivals")
                    .entry(ticket.id)
                    .or_insert_with(Instant::now);
            }
        }
    }))
}

async fn create_and_offer(
    desk: &mut Desk,
    istat: &str,
    to: &str,
    n: u64,
) -> anyhow::Result<(String, Instant)> {
    let ticket = desk
        .create_ticket(ticket_request(istat, n))
        .await?
        .into_inner()
        .ticket
        .context("ticket")?;
    desk.handoff(HandoffRequest {
        ticket_id: ticket.id.clone(),
        to_node: to.into(),
        reason: "per competenza".into(),
        overflow: false,
    })
    .await?;
    Ok((ticket.id, Instant::now()))
}

async fn steady(fed: &Federation, rate: u32, seconds: u64) -> anyhow::Result<LagCell> {
    let n = fed.nodes.len();
    let arrivals: Arrivals = Arc::default();
    let mut watchers = Vec::new();
    for node in &fed.nodes {
        watchers.push(watch(node, arrivals.clone()).await?);
    }
    let mut desks = Vec::new();
    for node in &fed.nodes {
        desks.push(node.desk().await?);
    }
    let rtt = mtls_rtt(fed, 2000).await?;
    type Sent = (Instant, anyhow::Result<(String, Instant)>);
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let total = u64::from(rate) * seconds;
    let bar = ProgressBar::new(total).with_style(ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} handoffs",
    )?);
    bar.set_message(format!("{n} nodes, {rate}/s"));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..total {
        tick.tick().await;
        let i = (k as usize) % n;
        let (mut desk, istat, to, sent) = (
            desks[i].clone(),
            fed.istat[i].clone(),
            fed.nodes[(i + 1) % n].config.node.id.to_string(),
            sent.clone(),
        );
        tasks.spawn(async move {
            let t0 = Instant::now();
            let r = create_and_offer(&mut desk, &istat, &to, k).await;
            sent.lock().expect("sent").push((t0, r));
        });
        bar.inc(1);
    }
    while tasks.join_next().await.is_some() {}
    let offered_for = began.elapsed();
    bar.finish_and_clear();
    let sent = std::mem::take(&mut *sent.lock().expect("sent"));
    let ok: Vec<(Instant, String, Instant)> = sent
        .iter()
        .filter_map(|(t0, r)| r.as_ref().ok().map(|(id, t2)| (*t0, id.clone(), *t2)))
        .collect();
    let errors = sent.len() - ok.len();
    // Wait (at most 60 s) for every offer to arrive.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let arrived = {
            let a = arrivals.lock().expect("arrivals");
            ok.iter().filter(|(_, id, _)| a.contains_key(id)).count()
        };
        if arrived == ok.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = arrivals.lock().expect("arrivals").clone();
    let (mut lag, mut repl): (Vec<u32>, Vec<u32>) = ok
        .iter()
        .filter_map(|(t0, id, t2)| {
            let at = a.get(id)?;
            Some((
                at.saturating_duration_since(*t0).as_micros() as u32,
                at.saturating_duration_since(*t2).as_micros() as u32,
            ))
        })
        .unzip();
    lag.sort_unstable();
    repl.sort_unstable();
    for w in watchers {
        w.abort();
    }
    Ok(LagCell {
        nodes: n,
        offered_per_second: rate,
        achieved_per_second: ok.len() as f64 / offered_for.as_secs_f64(),
        handoffs: lag.len(),
        errors: errors + (ok.len() - lag.len()),
        lag_p50_ms: bench::percentile_ms(&lag, 0.50),
        lag_p99_ms: bench::percentile_ms(&lag, 0.99),
        replication_p50_ms: bench::percentile_ms(&repl, 0.50),
        replication_p99_ms: bench::percentile_ms(&repl, 0.99),
        mtls_rtt_p50_ms: bench::percentile_ms(&rtt, 0.50),
        mtls_rtt_p99_ms: bench::percentile_ms(&rtt, 0.99),
    })
}

async fn outbox_depth(desk: &Desk, peer: &str) -> anyhow::Result<u64> {
    let peers = desk
        .clone()
        .list_peers(ListPeersRequest {})
        .await?
        .into_inner()
        .peers;
    Ok(peers
        .iter()
        .find(|p| p.peer == peer)
        .map_or(0, |p| p.outbox_depth))
}

async fn catch_up(fed: &mut Federation, backlog: usize) -> anyhow::Result<CatchUp> {
    let target = fed.nodes.remove(1);
    let target_id = target.config.node.id.to_string();
    let target_config = target.stop().await?;
    let desk = fed.nodes[0].desk().await?;
    let istat = fed.istat[0].clone();
    // Each handoff queues two events for the stopped node: Created, Offered.
    let tickets = backlog.div_ceil(2) as u64;
    let bar = ProgressBar::new(tickets).with_style(ProgressStyle::with_template(
        "queueing for the stopped node {bar:40} {pos}/{len} handoffs",
    )?);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (mut desk, istat, to, next, bar) = (
            desk.clone(),
            istat.clone(),
            target_id.clone(),
            next.clone(),
            bar.clone(),
        );
        workers.spawn(async move {
            loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if k >= tickets {
                    return anyhow::Ok(());
                }
                create_and_offer(&mut desk, &istat, &to, k).await?;
                bar.inc(1);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    bar.finish_and_clear();
    let queued = outbox_depth(&desk, &target_id).await?;
    println!("{queued} events queued for {target_id} while it was down");
    let started = Instant::now();
    let node = federation::start_node(target_config).await?;
    let serving = Instant::now();
    let bar = ProgressBar::new(queued).with_style(ProgressStyle::with_template(
        "catching up {bar:40} {pos}/{len} events",
    )?);
    loop {
        let left = outbox_depth(&desk, &target_id).await?;
        bar.set_position(queued - left.min(queued));
        if left == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "catch-up stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let draining = serving.elapsed().as_secs_f64();
    bar.finish_and_clear();
    fed.nodes.insert(1, node);
    let raw = raw_sqlite_rate(
        queued as usize,
        fed.nodes[0].config.peering.batch_size as usize,
    )?;
    let rate = queued as f64 / seconds;
    Ok(CatchUp {
        events: queued,
        seconds,
        start_seconds: seconds - draining,
        events_per_second: rate,
        raw_sqlite_events_per_second: raw,
        ratio_to_raw: rate / raw,
    })
}

/// Inserts `events` rows shaped like stored events (300-byte envelopes) in
/// transactions of `batch`, WAL and synchronous=FULL: what the receiver's
/// disk allows at best.
fn raw_sqlite_rate(events: usize, batch: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE e (id TEXT PRIMARY KEY, t TEXT NOT NULL, w INTEGER, l INTEGER, a TEXT, b BLOB, r INTEGER) WITHOUT ROWID;",
    )?;
    let envelope = vec![7u8; 300];
    let started = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(batch) {
        let tx = conn.transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO e VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
            for i in chunk {
                stmt.execute(rusqlite::params![
                    ulid::Ulid::new().to_string(),
                    format!("t{}", i / 2),
                    *i as i64,
                    0,
                    "c_a345",
                    &envelope,
                    0
                ])?;
            }
        }
        tx.commit()?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    urpnet_proto::telemetry::init_logs(Default::default(), "error");
    let mut report = Report {
        machine: bench::machine(),
        when: bench::now(),
        lag: Vec::new(),
        catch_up: None,
    };
    println!("bench-federation on {}", report.machine);
    for (i, &n) in args.nodes.iter().enumerate() {
        let mut fed = start(n).await?;
        println!("{n} nodes and a registry on loopback, mutual TLS between all");
        let cell = steady(&fed, args.rate, args.seconds).await?;
        println!(
            "  {} handoffs: lag p50 {:.2} ms, p99 {:.2} ms (mTLS round trip p50 {:.3} ms)",
            cell.handoffs, cell.lag_p50_ms, cell.lag_p99_ms, cell.mtls_rtt_p50_ms
        );
        report.lag.push(cell);
        if i == 0 && args.backlog > 0 {
            let c = catch_up(&mut fed, args.backlog).await?;
            println!(
                "  catch-up: {} events in {:.1} s = {:.0} events/s",
                c.events, c.seconds, c.events_per_second
            );
            report.catch_up = Some(c);
        }
        for node in fed.nodes {
            node.stop().await?;
        }
        fed.registry.stop().await?;
    }

    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "nodes",
        "offered/s",
        "achieved/s",
        "handoffs",
        "errors",
        "lag p50 ms",
        "lag p99 ms",
        "after ack p50",
        "after ack p99",
        "mTLS RTT p50",
        "mTLS RTT p99",
    ]);
    for c in &report.lag {
        t.add_row([
            c.nodes.to_string(),
            c.offered_per_second.to_string(),
            format!("{:.0}", c.achieved_per_second),
            c.handoffs.to_string(),
            c.errors.to_string(),
            format!("{:.2}", c.lag_p50_ms),
            format!("{:.2}", c.lag_p99_ms),
            format!("{:.2}", c.replication_p50_ms),
            format!("{:.2}", c.replication_p99_ms),
            format!("{:.3}", c.mtls_rtt_p50_ms),
            format!("{:.3}", c.mtls_rtt_p99_ms),
        ]);
    }
    println!("{t}");
    if let Some(c) = &report.catch_up {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header([
            "backlog events",
            "seconds",
            "events/s",
            "raw SQLite inserts/s",
            "ratio",
        ]);
        t.add_row([
            c.events.to_string(),
            format!("{:.1}", c.seconds),
            format!("{:.0}", c.events_per_second),
            format!("{:.0}", c.raw_sqlite_events_per_second),
            format!("{:.2}", c.ratio_to_raw),
        ]);
        println!("{t}");
    }
    if let Some(parent) = args.json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.json_out.display());
    Ok(())
}
