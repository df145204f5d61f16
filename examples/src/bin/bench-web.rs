//! bench-web: the operators' console against the Desk API it stands on,
//! and how fast a handoff shows in another body's open console.
//!
//! Two comuni in a federation on loopback (a real registry, mutual TLS).
//! Celano's store is filled with 100,000 tickets through the Desk. Then,
//! one request at a time, each timed:
//!
//! - the queue page (`GET /queue`, the first 50, HTML) next to the Desk's
//!   `ListTickets` for the same page over gRPC;
//! - a ticket's page (`GET /tickets/{id}`: the ticket, its history, the
//!   forms) next to `GetTicket` + `GetHistory` over gRPC;
//!
//! and, with Avezzano's console open (its `/events` stream, as the queue's
//! script listens), Celano hands tickets to Avezzano: the time from the
//! handoff call's answer at Celano (committed there) to the event at
//! Avezzano's console, and to the queue rows fetched again with the
//! ticket in them. Goals: pages within 1.5× of the gRPC calls; p99 under
//! 100 ms from handoff to console.
//!
//! `cargo run --release -p urpnet-examples --bin bench-web`

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use urpnet_examples::{bench, federation, samples};
use urpnet_proto::v1::{
    Channel, GetHistoryRequest, GetTicketRequest, HandoffRequest, ListTicketsRequest,
};

/// Measures the console against the Desk API.
#[derive(Parser)]
struct Args {
    /// Tickets in Celano's store.
    #[arg(long, default_value_t = 100_000)]
    tickets: usize,
    /// Timed requests per page kind.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Handoffs timed to the other console.
    #[arg(long, default_value_t = 200)]
    handoffs: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/bench-web.json")]
    json_out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Row {
    what: String,
    n: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    bytes: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    machine: String,
    cores: usize,
    tickets: usize,
    rows: Vec<Row>,
    queue_ratio_p50: f64,
    queue_ratio_p99: f64,
    ticket_ratio_p50: f64,
    ticket_ratio_p99: f64,
    handoff_to_console_p99_ms: f64,
}

fn row(what: &str, mut us: Vec<u32>, bytes: usize) -> Row {
    us.sort_unstable();
    Row {
        what: what.into(),
        n: us.len(),
        p50_ms: bench::percentile_ms(&us, 0.5),
        p99_ms: bench::percentile_ms(&us, 0.99),
        max_ms: f64::from(*us.last().unwrap_or(&0)) / 1000.0,
        bytes,
    }
}

async fn sign_in(base: &str, token: &str) -> anyhow::Result<reqwest::Client> {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = http
        .post(format!("{base}/login"))
        .form(&[("token", token)])
        .send()
        .await?;
    anyhow::ensure!(
        r.status().as_u16() == 303,
        "sign-in answered {}",
        r.status()
    );
    Ok(http)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    urpnet_proto::telemetry::init_logs(Default::default(), "error");
    let dir = tempfile::Builder::new()
        .prefix("urpnet-bench-web-")
        .tempdir()?;
    let (registry, nodes) = federation::bench_comuni(
        dir.path(),
        &[
            ("c_c426", "Comune di Celano", "066032"),
            ("c_a515", "Comune di Avezzano", "066006"),
        ],
    )
    .await?;
    let (celano, avezzano) = (&nodes[0], &nodes[1]);
    let desk = celano.desk().await?;

    // Fill Celano's store.
    let bar = indicatif::ProgressBar::new(args.tickets as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "filling Celano {bar:40} {pos}/{len} {per_sec}",
    )?);
    let clients = 64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = Vec::new();
    for c in 0..clients {
        let (mut desk, bar) = (desk.clone(), bar.clone());
        let n = args.tickets / clients + usize::from(c < args.tickets % clients);
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                let req = samples::request(&mut rng, "066032", Channel::Phone);
                let t = desk
                    .create_ticket(req)
                    .await?
                    .into_inner()
                    .ticket
                    .context("ticket")?;
                ids.push(t.id);
                bar.inc(1);
            }
            anyhow::Ok(ids)
        });
    }
    while let Some(done) = tasks.join_next().await {
        ids.extend(done??);
    }
    bar.finish_and_clear();

    let base = format!("http://{}", celano.console_addr.context("console")?);
    let http = sign_in(&base, &celano.token).await?;
    let mut rows = Vec::new();

    // The queue: page vs ListTickets, alternating.
    let (mut page_us, mut grpc_us, mut page_bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..args.requests {
        let t = Instant::now();
        let body = http
            .get(format!("{base}/queue"))
            .send()
            .await?
            .text()
            .await?;
        page_us.push(t.elapsed().as_micros() as u32);
        page_bytes = body.len();
        let t = Instant::now();
        let r = desk
            .clone()
            .list_tickets(ListTicketsRequest {
                page_size: 50,
                ..Default::default()
            })
            .await?
            .into_inner();
        grpc_us.push(t.elapsed().as_micros() as u32);
        anyhow::ensure!(r.tickets.len() == 50 && body.matches("data-ticket=").count() == 50);
    }
    rows.push(row("queue page, first 50 (HTML)", page_us, page_bytes));
    rows.push(row("ListTickets, first 50 (gRPC)", grpc_us, 0));

    // A ticket's page vs GetTicket + GetHistory.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (mut page_us, mut grpc_us, mut page_bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..args.requests {
        let id = &ids[rng.gen_range(0..ids.len())];
        let t = Instant::now();
        let r = http.get(format!("{base}/tickets/{id}")).send().await?;
        anyhow::ensure!(r.status().is_success(), "ticket page {}", r.status());
        page_bytes = r.text().await?.len();
        page_us.push(t.elapsed().as_micros() as u32);
        let t = Instant::now();
        let mut d = desk.clone();
        d.get_ticket(GetTicketRequest {
            ticket_id: id.clone(),
            reference: String::new(),
        })
        .await?;
        d.get_history(GetHistoryRequest {
            ticket_id: id.clone(),
        })
        .await?;
        grpc_us.push(t.elapsed().as_micros() as u32);
    }
    rows.push(row("ticket page (HTML)", page_us, page_bytes));
    rows.push(row("GetTicket + GetHistory (gRPC)", grpc_us, 0));

    // Handoffs to Avezzano's open console.
    let abase = format!("http://{}", avezzano.console_addr.context("console")?);
    let ahttp = sign_in(&abase, &avezzano.token).await?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut stream = ahttp.get(format!("{abase}/events")).send().await?;
    let listener = tokio::spawn(async move {
        let mut buf = String::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            let at = Instant::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) {
                    let _ = tx.send((data.trim().to_string(), at));
                }
            }
        }
    });
    let mut event_us = Vec::new();
    let mut visible_us = Vec::new();
    let mut d = desk.clone();
    for n in 0..args.handoffs {
        let ticket = d
            .create_ticket(samples::request(
                &mut rand::rngs::StdRng::seed_from_u64(10_000 + n as u64),
                "066032",
                Channel::Phone,
            ))
            .await?
            .into_inner()
            .ticket
            .context("ticket")?;
        d.handoff(HandoffRequest {
            ticket_id: ticket.id.clone(),
            to_node: "c_a515".into(),
            reason: "per competenza".into(),
            overflow: false,
        })
        .await?;
        let committed = Instant::now();
        sent.lock()
            .expect("sent")
            .insert(ticket.reference.clone(), committed);
        let deadline = committed + Duration::from_secs(10);
        loop {
            let (reference, at) = tokio::time::timeout_at(deadline.into(), rx.recv())
                .await
                .context("no event at Avezzano's console within 10 s")?
                .context("event stream ended")?;
            if reference == ticket.reference {
                event_us.push(at.saturating_duration_since(committed).as_micros() as u32);
                let rows = ahttp
                    .get(format!("{abase}/queue"))
                    .header("x-fragment", "rows")
                    .send()
                    .await?
                    .text()
                    .await?;
                visible_us.push(committed.elapsed().as_micros() as u32);
                anyhow::ensure!(
                    rows.contains(&ticket.reference),
                    "the handed-off ticket is not in Avezzano's queue rows"
                );
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    listener.abort();
    rows.push(row(
        "handoff committed → event in the other console",
        event_us,
        0,
    ));
    rows.push(row(
        "handoff committed → row in the other console's queue",
        visible_us,
        0,
    ));

    let ratio = |a: usize, b: usize, p99: bool| {
        if p99 {
            rows[a].p99_ms / rows[b].p99_ms.max(1e-9)
        } else {
            rows[a].p50_ms / rows[b].p50_ms.max(1e-9)
        }
    };
    let report = Report {
        date: bench::now(),
        machine: bench::machine(),
        cores: bench::cores(),
        tickets: args.tickets,
        queue_ratio_p50: ratio(0, 1, false),
        queue_ratio_p99: ratio(0, 1, true),
        ticket_ratio_p50: ratio(2, 3, false),
        ticket_ratio_p99: ratio(2, 3, true),
        handoff_to_console_p99_ms: rows[5].p99_ms,
        rows,
    };
    let mut t = urpnet_proto::cli::table();
    t.set_header(["what", "n", "p50 ms", "p99 ms", "max ms", "bytes"]);
    for r in &report.rows {
        t.add_row([
            r.what.clone(),
            r.n.to_string(),
            format!("{:.2}", r.p50_ms),
            format!("{:.2}", r.p99_ms),
            format!("{:.2}", r.max_ms),
            if r.bytes == 0 {
                String::new()
            } else {
                r.bytes.to_string()
            },
        ]);
    }
    println!(
        "bench-web — {} — {} — {} tickets",
        report.date, report.machine, report.tickets
    );
    println!("{t}");
    println!(
        "queue page / ListTickets: {:.2}x p50, {:.2}x p99 (goal 1.5x); ticket page / gRPC: {:.2}x p50, {:.2}x p99; handoff → other console p99 {:.1} ms (goal 100 ms)",
        report.queue_ratio_p50,
        report.queue_ratio_p99,
        report.ticket_ratio_p50,
        report.ticket_ratio_p99,
        report.handoff_to_console_p99_ms
    );
    if let Some(parent) = args.json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.json_out.display());
    for node in nodes {
        node.stop().await?;
    }
    registry.stop().await?;
    Ok(())
}
