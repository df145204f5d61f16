//! bench-offers: `ListOffers`, paged, against a page of `ListTickets`.
//!
//! Two comuni in a federation on loopback (a real registry, mutual TLS).
//! Celano opens tickets and offers every one to Avezzano; once Avezzano's
//! inbox holds them all, one request at a time, each timed:
//!
//! - `ListOffers` at Celano (offers made) and at Avezzano (its inbox), a
//!   page of 100 and of 500;
//! - the whole inbox walked page by page;
//! - `ListTickets` at Celano, a page of 100 and of 500: the same number of
//!   tickets read from the store by an indexed query, the floor for a page
//!   of offers (which also reads each offer's reason from its signed
//!   event).
//!
//! `cargo run --release -p urpnet-examples --bin bench-offers`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rand::SeedableRng as _;
use serde::Serialize;
use urpnet_examples::{bench, federation, samples};
use urpnet_proto::v1::{Channel, HandoffRequest, ListOffersRequest, ListTicketsRequest};

/// Measures ListOffers.
#[derive(Parser)]
struct Args {
    /// Offers pending from Celano to Avezzano.
    #[arg(long, default_value_t = 5_000)]
    offers: usize,
    /// Timed requests per kind.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/bench-offers.json")]
    json_out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Row {
    what: String,
    n: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    machine: String,
    cores: usize,
    offers: usize,
    rows: Vec<Row>,
    walk_inbox_ms: f64,
    ratio_p50_100: f64,
    ratio_p50_500: f64,
}

fn row(what: &str, mut us: Vec<u32>) -> Row {
    us.sort_unstable();
    Row {
        what: what.into(),
        n: us.len(),
        p50_ms: bench::percentile_ms(&us, 0.5),
        p99_ms: bench::percentile_ms(&us, 0.99),
        max_ms: f64::from(*us.last().unwrap_or(&0)) / 1000.0,
    }
}

async fn time<F, Fut>(n: usize, mut call: F) -> anyhow::Result<Vec<u32>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call().await?;
        us.push(t.elapsed().as_micros() as u32);
    }
    Ok(us)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.offers >= 500,
        "--offers must be at least 500 (the largest page timed)"
    );
    urpnet_proto::telemetry::init_logs(Default::default(), "error");
    let dir = tempfile::Builder::new()
        .prefix("urpnet-bench-offers-")
        .tempdir()?;
    let (registry, nodes) = federation::bench_comuni(
        dir.path(),
        &[
            ("c_c426", "Comune di Celano", "066032"),
            ("c_a515", "Comune di Avezzano", "066006"),
        ],
    )
    .await?;
    let celano = nodes[0].desk().await?;
    let avezzano = nodes[1].desk().await?;

    // Celano offers every ticket to Avezzano.
    let bar = indicatif::ProgressBar::new(args.offers as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "offering {bar:40} {pos}/{len} {per_sec}",
    )?);
    let clients = 32;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (mut desk, bar) = (celano.clone(), bar.clone());
        let n = args.offers / clients + usize::from(c < args.offers % clients);
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            for i in 0..n {
                let req = samples::request(&mut rng, "066032", Channel::Phone);
                let t = desk
                    .create_ticket(req)
                    .await?
                    .into_inner()
                    .ticket
                    .context("ticket")?;
                desk.handoff(HandoffRequest {
                    ticket_id: t.id,
                    to_node: "c_a515".into(),
                    reason: format!("per competenza territoriale ({c}/{i})"),
                    overflow: false,
                })
                .await?;
                bar.inc(1);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    bar.finish_and_clear();

    // Avezzano's inbox, walked page by page, until it holds them all.
    let walk = |page_size: u32| {
        let desk = avezzano.clone();
        async move {
            let mut desk = desk;
            let mut n = 0;
            let mut token = String::new();
            loop {
                let r = desk
                    .list_offers(ListOffersRequest {
                        page_size,
                        incoming_page_token: token.clone(),
                        outgoing_page_token: String::new(),
                    })
                    .await?
                    .into_inner();
                n += r.incoming.len();
                if r.next_incoming_page_token.is_empty() {
                    return anyhow::Ok(n);
                }
                token = r.next_incoming_page_token;
            }
        }
    };
    let started = Instant::now();
    while walk(500).await? < args.offers {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the offers did not all arrive"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut rows = Vec::new();
    for size in [100u32, 500] {
        let desk = celano.clone();
        rows.push(row(
            &format!("ListTickets, page of {size} (Celano)"),
            time(args.requests, || {
                let mut desk = desk.clone();
                async move {
                    let r = desk
                        .list_tickets(ListTicketsRequest {
                            page_size: size,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    anyhow::ensure!(r.tickets.len() == size as usize);
                    Ok(())
                }
            })
            .await?,
        ));
        let desk = celano.clone();
        rows.push(row(
            &format!("ListOffers made, page of {size} (Celano)"),
            time(args.requests, || {
                let mut desk = desk.clone();
                async move {
                    let r = desk
                        .list_offers(ListOffersRequest {
                            page_size: size,
                            outgoing_page_token: String::new(),
                            incoming_page_token: String::new(),
                        })
                        .await?
                        .into_inner();
                    anyhow::ensure!(r.outgoing.len() == size as usize);
                    anyhow::ensure!(!r.outgoing[0].reason.is_empty());
                    Ok(())
                }
            })
            .await?,
        ));
        let desk = avezzano.clone();
        rows.push(row(
            &format!("ListOffers inbox, page of {size} (Avezzano)"),
            time(args.requests, || {
                let mut desk = desk.clone();
                async move {
                    let r = desk
                        .list_offers(ListOffersRequest {
                            page_size: size,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    anyhow::ensure!(r.incoming.len() == size as usize);
                    Ok(())
                }
            })
            .await?,
        ));
    }
    let t = Instant::now();
    let n = walk(100).await?;
    let walk_inbox_ms = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(n == args.offers, "walked {n} of {}", args.offers);

    let ratio = |a: usize, b: usize| rows[a].p50_ms / rows[b].p50_ms;
    let report = Report {
        date: bench::now(),
        machine: bench::machine(),
        cores: bench::cores(),
        offers: args.offers,
        ratio_p50_100: ratio(1, 0),
        ratio_p50_500: ratio(4, 3),
        walk_inbox_ms,
        rows,
    };
    let mut table = comfy_table::Table::new();
    table.set_header(["what", "n", "p50 ms", "p99 ms", "max ms"]);
    for r in &report.rows {
        table.add_row([
            r.what.clone(),
            r.n.to_string(),
            format!("{:.2}", r.p50_ms),
            format!("{:.2}", r.p99_ms),
            format!("{:.2}", r.max_ms),
        ]);
    }
    println!("{} offers pending; {}", report.offers, report.machine);
    println!("{table}");
    println!(
        "the whole inbox in pages of 100: {:.0} ms; ListOffers/ListTickets at p50: {:.2}x (100), {:.2}x (500)",
        report.walk_inbox_ms, report.ratio_p50_100, report.ratio_p50_500
    );
    if let Some(parent) = args.json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&report)?)?;
    println!("JSON: {}", args.json_out.display());
    for node in nodes {
        node.stop().await?;
    }
    registry.stop().await?;
    Ok(())
}
