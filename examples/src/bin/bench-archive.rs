//! bench-archive: the anonymised archive at regional and national scale.
//!
//! 1. **Ingest**: members push signed batches of 2000 records over mutual
//!    TLS to an in-process registry (4 members at once), on SQLite and on
//!    PostgreSQL. Every record is checked, stored idempotently and counted in
//!    the weekly rollup in the batch's transaction. The physical limit in the
//!    same run: the same rows written by bare multi-row INSERTs into a table
//!    of the same shape, no gRPC, no TLS, no checks, no rollup.
//! 2. **Queries at scale** (PostgreSQL): the archive is filled to 1, 10 and
//!    50 million records by server-side `INSERT ... SELECT` (skewed like real
//!    contacts: a few big comuni and common categories take most), the
//!    rollup rebuilt, and then measured: the national weekly trend (per
//!    category x region, and x province), a regional trend per comune, and
//!    two raw-table queries (a region by category x outcome over 12 weeks;
//!    the country by week x channel over 12 weeks). The limit beside them: a
//!    bare `COUNT(*)` over the same 9 weeks of raw records.
//! 3. **Replication catch-up**: a regional registry holding N records
//!    replicates them upward to a national one (both SQLite, in-process,
//!    mutual TLS, signed batches of 2000): records per second.
//!
//! Prints a table and writes JSON.
//!
//! cargo run --release -p urpnet-examples --bin bench-archive -- --help

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use prost::Message as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use sqlx::Row as _;
use urpnet_examples::{bench, federation};
use urpnet_proto::archive::{add_weeks, week_of_ms};
use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::territory::Territory;
use urpnet_proto::tls::{self, TlsMaterial};
use urpnet_proto::v1::archive_client::ArchiveClient;
use urpnet_proto::v1::{
    ArchiveBatch, ArchiveFilter, ArchiveQueryRequest, ArchiveRecord, ArchiveTrendsRequest,
    Dimension, EnrolRequest, Level, PayloadKind, PushArchiveRequest, TerritoryLevel,
};
use urpnet_registry::archive::Archive;
use urpnet_registry::config::RegistryConfig;

/// Measures archive ingest, queries at scale and replication catch-up.
#[derive(Parser)]
struct Args {
    /// Records pushed in the ingest phase, per backend.
    #[arg(long, default_value_t = 200_000)]
    ingest: usize,
    /// Archive sizes for the query phase on PostgreSQL (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000000,10000000,50000000"
    )]
    sizes: Vec<u64>,
    /// Records replicated upward in the catch-up phase.
    #[arg(long, default_value_t = 200_000)]
    catch_up: usize,
    /// PostgreSQL server (a database `urpnet_bench_archive` is made there);
    /// empty skips the PostgreSQL phases.
    #[arg(
        long,
        env = "URPNET_TEST_POSTGRES_URL",
        default_value = "postgres:///postgres?host=/var/run/postgresql"
    )]
    postgres: String,
    /// Runs of each query (the median is reported, and the first, cold).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/bench-archive.json")]
    json_out: PathBuf,
}

#[derive(Serialize)]
struct IngestRow {
    backend: String,
    records: usize,
    seconds: f64,
    records_per_s: f64,
    bare_insert_per_s: f64,
    ratio_to_bare: f64,
}

#[derive(Serialize)]
struct QueryRow {
    records: u64,
    query: String,
    cold_ms: f64,
    median_ms: f64,
    rows: usize,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    date: String,
    ingest: Vec<IngestRow>,
    queries: Vec<QueryRow>,
    catch_up_records: usize,
    catch_up_seconds: f64,
    catch_up_per_s: f64,
}

const CATEGORIES: &[&str] = &[
    "informazioni",
    "anagrafe.residenza",
    "anagrafe.certificati",
    "anagrafe.carta_identita",
    "tributi.tari",
    "tributi.imu",
    "rifiuti.ingombranti",
    "rifiuti.abbandono",
    "strade.buche",
    "sanita.prenotazioni",
    "servizi_sociali",
    "scuola",
    "mobilita.ztl",
    "verde",
    "edilizia",
    "polizia_locale",
    "reclami",
    "pensioni",
    "lavoro",
    "ambiente",
];

/// The ISTAT codes of Abruzzo's comuni.
fn abruzzo() -> Vec<String> {
    Territory::italy()
        .comuni()
        .filter(|c| c.region_code == "13")
        .map(|c| c.istat_code.clone())
        .collect()
}

/// This ISO week and the `n - 1` before it.
fn recent_weeks(n: i64) -> Vec<u32> {
    let now = week_of_ms(system_time_ms());
    (0..n).filter_map(|i| add_weeks(now, -i)).collect()
}

/// A random record of region 13 (Abruzzo) in one of the last `weeks` weeks.
fn random_record(rng: &mut rand::rngs::StdRng, comuni: &[String], weeks: &[u32]) -> ArchiveRecord {
    let id = rng.r#gen::<[u8; 16]>().to_vec();
    let category = CATEGORIES[(rng.r#gen::<f64>().powi(2) * CATEGORIES.len() as f64) as usize];
    let territory = &comuni[(rng.r#gen::<f64>().powi(3) * comuni.len() as f64) as usize];
    let week = weeks[rng.gen_range(0..weeks.len())];
    ArchiveRecord {
        channel: rng.gen_range(1..=10),
        outcome: rng.gen_range(1..=3),
        handling: rng.gen_range(1..=6),
        handoffs: rng.gen_range(0..3),
        overflow: rng.gen_bool(0.05),
        ..urpnet_examples::samples::archive_record(id, category, territory, week)
    }
}

async fn enrol(
    registry: &federation::RunningRegistry,
    id: &str,
    level: Level,
    territory: &[&str],
) -> anyhow::Result<(TlsMaterial, NodeSigner)> {
    let signer = NodeSigner::generate(urpnet_proto::ids::NodeId::new(id)?);
    let key_pem = tls::generate_key()?;
    let resp = registry
        .admin()?
        .enrol(EnrolRequest {
            id: id.into(),
            display_name: id.into(),
            level: level as i32,
            territory: territory.iter().map(|s| s.to_string()).collect(),
            endpoint: "https://127.0.0.1:7401".into(),
            signing_key: signer.verifying_key().as_bytes().to_vec(),
            csr_pem: tls::make_csr(&key_pem, id)?,
        })
        .await?
        .into_inner();
    Ok((
        TlsMaterial {
            cert_pem: resp.certificate_pem,
            key_pem,
            ca_pem: resp.ca_pem,
        },
        signer,
    ))
}

/// Pushes `n` records from 4 members at once; returns seconds.
///
/// `spread`: each member is a region sending records of any of its 305
/// comuni over 52 weeks, so nearly every record opens a new rollup cell (the
/// worst case). Otherwise each member is a comune sending its own records of
/// the last 8 weeks (a node catching up): a batch touches a few hundred
/// rollup cells at most.
async fn ingest(
    registry: &federation::RunningRegistry,
    n: usize,
    spread: bool,
) -> anyhow::Result<f64> {
    let italy = Territory::italy();
    let abruzzo = abruzzo();
    let weeks = recent_weeks(if spread { 52 } else { 8 });
    let own = ["066032", "066006", "066098", "066049"];
    let mut members = Vec::new();
    for (i, comune) in own.iter().enumerate() {
        let member = if spread {
            enrol(registry, &format!("r_bench{i}"), Level::Regione, &["13"]).await?
        } else {
            let ipa = italy.comune(comune).context("comune")?.ipa_code.clone();
            enrol(registry, &ipa, Level::Comune, &[comune]).await?
        };
        let comuni = if spread {
            abruzzo.clone()
        } else {
            vec![comune.to_string()]
        };
        members.push((member, comuni));
    }
    // Batches made and signed before the clock starts.
    let per = n / members.len();
    let mut work = Vec::new();
    for (i, ((material, signer), comuni)) in members.into_iter().enumerate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64 + u64::from(spread) * 100);
        let mut batches = Vec::new();
        let records: Vec<_> = (0..per)
            .map(|_| random_record(&mut rng, &comuni, &weeks))
            .collect();
        for chunk in records.chunks(2000) {
            let batch = ArchiveBatch {
                author: signer.node().to_string(),
                first_seq: 0,
                records: chunk.iter().map(|r| r.encode_to_vec()).collect(),
            };
            batches.push(signer.sign(PayloadKind::ArchiveBatch, batch.encode_to_vec()));
        }
        work.push((ArchiveClient::new(registry.channel(&material)?), batches));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (mut client, batches) in work {
        tasks.push(tokio::spawn(async move {
            for b in batches {
                let r = client
                    .push_archive(PushArchiveRequest { batch: Some(b) })
                    .await?
                    .into_inner();
                anyhow::ensure!(r.refused.is_empty(), "refused: {:?}", r.refused[0]);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The same rows by bare multi-row INSERTs into a table of the same shape.
async fn bare_insert(url: &str, n: usize) -> anyhow::Result<f64> {
    sqlx::any::install_default_drivers();
    let backend = urpnet_proto::db::Backend::of_url(url).context("url")?;
    let pool = urpnet_proto::db::open_pool(backend, url, 2).await?;
    sqlx::query("DROP TABLE IF EXISTS bare_records")
        .execute(&pool)
        .await?;
    let blob = if backend == urpnet_proto::db::Backend::Postgres {
        "BYTEA"
    } else {
        "BLOB"
    };
    sqlx::query(&format!(
        "CREATE TABLE bare_records (id {blob} PRIMARY KEY, source TEXT, category TEXT, channel BIGINT, \
         territory TEXT, province TEXT, region TEXT, week BIGINT, outcome BIGINT, handling BIGINT, \
         handoffs BIGINT, overflow BIGINT, origin_level BIGINT, competent_level BIGINT, received_ms BIGINT)"
    ))
    .execute(&pool)
    .await?;
    let comuni = abruzzo();
    let weeks = recent_weeks(52);
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let records: Vec<_> = (0..n)
        .map(|_| random_record(&mut rng, &comuni, &weeks))
        .collect();
    let start = Instant::now();
    for batch in records.chunks(2000) {
        let mut tx = pool.begin().await?;
        for chunk in batch.chunks(1000) {
            let mut sql = String::from("INSERT INTO bare_records VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                let b = i * 15;
                sql.push('(');
                for j in 1..=15 {
                    if j > 1 {
                        sql.push(',');
                    }
                    if backend == urpnet_proto::db::Backend::Postgres {
                        sql.push_str(&format!("${}", b + j));
                    } else {
                        sql.push('?');
                    }
                }
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.id.clone())
                    .bind("r_bench")
                    .bind(r.category.clone())
                    .bind(i64::from(r.channel))
                    .bind(r.territory.clone())
                    .bind("066")
                    .bind("13")
                    .bind(i64::from(r.week))
                    .bind(i64::from(r.outcome))
                    .bind(i64::from(r.handling))
                    .bind(i64::from(r.handoffs))
                    .bind(i64::from(r.overflow))
                    .bind(i64::from(r.origin_level))
                    .bind(i64::from(r.competent_level))
                    .bind(0i64);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    let secs = start.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bare_records")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(secs)
}

async fn ingest_phase(
    dir: &std::path::Path,
    name: &str,
    url: Option<String>,
    n: usize,
    rows: &mut Vec<IngestRow>,
) -> anyhow::Result<()> {
    let mut config = RegistryConfig::new("bench", dir.join(name));
    config.metrics.listen = String::new();
    config.limits.requests_per_second = 100_000;
    config.limits.burst = 100_000;
    if let Some(url) = &url {
        config.store.url = url.clone();
    }
    let registry = federation::start_registry(config.clone()).await?;
    let nodes = ingest(&registry, n, false).await?;
    let spread = ingest(&registry, n, true).await?;
    registry.stop().await?;
    let db = config.database_url();
    let bare = bare_insert(&db, n).await?;
    for (shape, secs) in [
        ("nodes catching up", nodes),
        ("worst case: all new cells", spread),
    ] {
        let row = IngestRow {
            backend: format!("{name}, {shape}"),
            records: n,
            seconds: secs,
            records_per_s: n as f64 / secs,
            bare_insert_per_s: n as f64 / bare,
            ratio_to_bare: bare / secs,
        };
        println!(
            "ingest {:<40} {:>9} records in {:>6.2} s = {:>9.0} records/s (bare INSERT {:>9.0}/s, {:.2} of it)",
            row.backend, n, secs, row.records_per_s, row.bare_insert_per_s, row.ratio_to_bare
        );
        rows.push(row);
    }
    Ok(())
}

/// Grows the PostgreSQL archive to `target` records with server-side
/// inserts, then rebuilds the rollup.
async fn fill(pool: &sqlx::AnyPool, from: u64, target: u64) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(target - from);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} records loaded ({elapsed})",
    )?);
    let mut at = from;
    while at < target {
        let to = (at + 2_000_000).min(target);
        // Week: one of 104, by index into a generated list of weeks.
        // Random draws are made once per row in a materialised CTE, then
        // joined to the lookup tables by index.
        sqlx::query(&format!(
            "WITH r AS MATERIALIZED (SELECT g, floor(power(random(), 2) * {nc})::int AS ci, \
                    floor(random() * 104)::int AS wi, floor(power(random(), 3) * {ncom})::int AS ki, \
                    1 + floor(random() * 10)::int AS channel, 1 + floor(random() * 3)::int AS outcome, \
                    1 + floor(random() * 6)::int AS handling, floor(random() * 3)::int AS handoffs, \
                    (random() < 0.05)::int AS overflow \
                    FROM generate_series({}, {}) g) \
             INSERT INTO archive_records (id, source, category, channel, territory, province, region, \
             week, outcome, handling, handoffs, overflow, origin_level, competent_level, received_ms, \
             rkey) \
             SELECT decode(md5(r.g::text), 'hex'), 'r_bench', bc.code, r.channel, c.istat, c.province, \
                    c.region, bw.w, r.outcome, r.handling, r.handoffs, r.overflow, 1, 1, 0, \
                    get_byte(decode(md5(r.g::text), 'hex'), 0) \
             FROM r JOIN bench_categories bc ON bc.i = r.ci JOIN bench_weeks bw ON bw.i = r.wi \
                    JOIN bench_comuni c ON c.i = r.ki",
            at + 1,
            to,
            nc = CATEGORIES.len(),
            ncom = Territory::italy().comuni().count(),
        ))
        .execute(pool)
        .await?;
        bar.inc(to - at);
        at = to;
    }
    bar.finish();
    let t = Instant::now();
    sqlx::query("TRUNCATE archive_weekly").execute(pool).await?;
    sqlx::query(
        "INSERT INTO archive_weekly (week, category, territory, province, region, n, key_sum) \
         SELECT week, category, territory, province, region, COUNT(*), SUM(rkey) FROM archive_records \
         GROUP BY week, category, territory, province, region",
    )
    .execute(pool)
    .await?;
    sqlx::query("TRUNCATE archive_weekly_province")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO archive_weekly_province (week, category, region, province, n, key_sum) \
         SELECT week, category, region, province, SUM(n), SUM(key_sum) FROM archive_weekly \
         GROUP BY week, category, region, province",
    )
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE archive_weekly_province")
        .execute(pool)
        .await?;
    sqlx::query("ANALYZE archive_records").execute(pool).await?;
    sqlx::query("ANALYZE archive_weekly").execute(pool).await?;
    println!("rollup rebuilt in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

async fn prepare_helpers(pool: &sqlx::AnyPool) -> anyhow::Result<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_categories (i INT PRIMARY KEY, code TEXT)")
        .execute(pool)
        .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_weeks (i INT PRIMARY KEY, w INT)")
        .execute(pool)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_comuni (i INT PRIMARY KEY, istat TEXT, province TEXT, region TEXT)",
    )
    .execute(pool)
    .await?;
    for (i, c) in CATEGORIES.iter().enumerate() {
        sqlx::query("INSERT INTO bench_categories VALUES ($1, $2)")
            .bind(i as i32)
            .bind(*c)
            .execute(pool)
            .await?;
    }
    let now = week_of_ms(system_time_ms());
    for i in 0..104 {
        sqlx::query("INSERT INTO bench_weeks VALUES ($1, $2)")
            .bind(i)
            .bind(add_weeks(now, -i64::from(i)).context("week")? as i32)
            .execute(pool)
            .await?;
    }
    // Comuni ordered by a seeded shuffle, so the skew does not favour one
    // region's codes.
    let mut comuni: Vec<_> = Territory::italy().comuni().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    rand::seq::SliceRandom::shuffle(comuni.as_mut_slice(), &mut rng);
    for chunk in comuni.chunks(1000).enumerate() {
        let (n, chunk) = chunk;
        let mut sql = String::from("INSERT INTO bench_comuni VALUES ");
        for (j, c) in chunk.iter().enumerate() {
            if j > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "({}, '{}', '{}', '{}')",
                n * 1000 + j,
                c.istat_code,
                c.province_code,
                c.region_code
            ));
        }
        sqlx::query(&sql).execute(pool).await?;
    }
    Ok(())
}

async fn time_it<F, Fut>(runs: usize, mut f: F) -> anyhow::Result<(f64, f64, usize)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..runs {
        let t = Instant::now();
        rows = f().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let cold = times[0];
    times.sort_by(f64::total_cmp);
    Ok((cold, times[times.len() / 2], rows))
}

async fn query_phase(args: &Args, queries: &mut Vec<QueryRow>) -> anyhow::Result<()> {
    let url = bench::fresh_database(&args.postgres, "urpnet_bench_archive").await?;
    let store = urpnet_registry::store::Store::open(&url).await?;
    let pool = store.pool().clone();
    prepare_helpers(&pool).await?;
    let archive = Arc::new(Archive::new(
        pool.clone(),
        urpnet_proto::db::Backend::Postgres,
        &url,
        5,
    ));
    let now = week_of_ms(system_time_ms());
    let twelve = add_weeks(now, -11).context("week")?;
    let nine = add_weeks(now, -8).context("week")?;
    let mut loaded = 0;
    for &size in &args.sizes {
        fill(&pool, loaded, size).await?;
        loaded = size;
        let trend = |level: TerritoryLevel, territory: &str| ArchiveTrendsRequest {
            level: level as i32,
            territory: territory.into(),
            all: true,
            week: now,
            ..Default::default()
        };
        type Make<'a> = Box<dyn Fn() -> QueryKind + 'a>;
        let cases: Vec<(&str, Make<'_>)> = vec![
            (
                "national weekly trend, category x region",
                Box::new(move || QueryKind::Trend(trend(TerritoryLevel::Regione, ""))),
            ),
            (
                "national weekly trend, category x province",
                Box::new(move || QueryKind::Trend(trend(TerritoryLevel::Provincia, ""))),
            ),
            (
                "regional trend (Lombardia), category x comune",
                Box::new(move || QueryKind::Trend(trend(TerritoryLevel::Comune, "03"))),
            ),
            (
                "region x 12 weeks, category x outcome (raw)",
                Box::new(move || {
                    QueryKind::Query(ArchiveQueryRequest {
                        group_by: vec![Dimension::Category as i32, Dimension::Outcome as i32],
                        filter: Some(ArchiveFilter {
                            territory: "13".into(),
                            week_from: twelve,
                            week_to: now,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                }),
            ),
            (
                "Italy x 12 weeks, week x channel (raw)",
                Box::new(move || {
                    QueryKind::Query(ArchiveQueryRequest {
                        group_by: vec![Dimension::Week as i32, Dimension::Channel as i32],
                        filter: Some(ArchiveFilter {
                            week_from: twelve,
                            week_to: now,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (name, make) in cases {
            let archive = archive.clone();
            let (cold, median, rows) = time_it(args.runs, || {
                let archive = archive.clone();
                let q = make();
                async move {
                    Ok(match q {
                        QueryKind::Trend(r) => archive.trends(&r).await?.rows.len(),
                        QueryKind::Query(r) => archive.query(&r).await?.cells.len(),
                    })
                }
            })
            .await?;
            println!(
                "{size:>11} records  {name:<48} cold {cold:>8.1} ms  median {median:>8.1} ms  ({rows} rows)"
            );
            queries.push(QueryRow {
                records: size,
                query: name.into(),
                cold_ms: cold,
                median_ms: median,
                rows,
            });
        }
        let (cold, median, _) = time_it(args.runs, || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query("SELECT COUNT(*) FROM archive_records WHERE week >= $1")
                    .bind(i64::from(nine))
                    .fetch_one(&pool)
                    .await?
                    .get(0);
                Ok(n as usize)
            }
        })
        .await?;
        println!(
            "{size:>11} records  {:<48} cold {cold:>8.1} ms  median {median:>8.1} ms",
            "limit: bare COUNT(*) of 9 weeks of raw records"
        );
        queries.push(QueryRow {
            records: size,
            query: "limit: bare COUNT(*) of 9 weeks of raw records".into(),
            cold_ms: cold,
            median_ms: median,
            rows: 1,
        });
    }
    store.close().await;
    Ok(())
}

enum QueryKind {
    Trend(ArchiveTrendsRequest),
    Query(ArchiveQueryRequest),
}

async fn catch_up_phase(dir: &std::path::Path, n: usize) -> anyhow::Result<f64> {
    let mut nconfig = RegistryConfig::new("national", dir.join("national"));
    nconfig.metrics.listen = String::new();
    nconfig.limits.requests_per_second = 100_000;
    nconfig.limits.burst = 100_000;
    let national = federation::start_registry(nconfig).await?;
    let mut rconfig = RegistryConfig::new("abruzzo", dir.join("regional"));
    rconfig.metrics.listen = String::new();
    let data_dir = rconfig.registry.data_dir.clone();
    std::fs::create_dir_all(&data_dir)?;
    let made = urpnet_registry::archive::upstream::init(&data_dir, "r_abruzz")?;
    let resp = national
        .admin()?
        .enrol(EnrolRequest {
            id: "r_abruzz".into(),
            display_name: "Regione Abruzzo".into(),
            level: Level::Regione as i32,
            territory: vec!["13".into()],
            endpoint: "https://127.0.0.1:7500".into(),
            signing_key: hex::decode(std::fs::read_to_string(&made.signing_public)?.trim())?,
            csr_pem: std::fs::read_to_string(&made.csr)?,
        })
        .await?
        .into_inner();
    let up = urpnet_registry::archive::upstream::dir(&data_dir);
    std::fs::write(up.join("cert.pem"), resp.certificate_pem)?;
    std::fs::write(up.join("ca.pem"), resp.ca_pem)?;
    // The regional archive filled while upstream was off.
    {
        let store = urpnet_registry::store::Store::open(&rconfig.database_url()).await?;
        let archive = Archive::new(
            store.pool().clone(),
            store.backend(),
            &rconfig.database_url(),
            5,
        );
        let comuni = abruzzo();
        let weeks = recent_weeks(52);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let records: Vec<_> = (0..n)
            .map(|_| random_record(&mut rng, &comuni, &weeks))
            .collect();
        for chunk in records.chunks(2000) {
            archive.store("c_c426", chunk).await?;
        }
        store.close().await;
    }
    rconfig.upstream.endpoint = national.endpoint();
    rconfig.upstream.member_id = "r_abruzz".into();
    rconfig.upstream.interval = Duration::from_millis(50);
    let start = Instant::now();
    let regional = federation::start_registry(rconfig).await?;
    let nstore = urpnet_registry::store::Store::open(&national.config.database_url()).await?;
    let bar = indicatif::ProgressBar::new(n as u64);
    loop {
        let have: i64 = sqlx::query("SELECT COUNT(*) FROM archive_records")
            .fetch_one(nstore.pool())
            .await?
            .get(0);
        bar.set_position(have as u64);
        if have as usize >= n {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "catch-up stalled at {have}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    nstore.close().await;
    regional.stop().await?;
    national.stop().await?;
    println!(
        "catch-up  {n} records regional -> national in {secs:.2} s = {:.0} records/s",
        n as f64 / secs
    );
    Ok(secs)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    urpnet_proto::telemetry::init_logs(Default::default(), "warn");
    let dir = tempfile::Builder::new()
        .prefix("urpnet-bench-archive-")
        .tempdir()?;
    println!("machine: {}", bench::machine());
    let mut ingest_rows = Vec::new();
    ingest_phase(dir.path(), "sqlite", None, args.ingest, &mut ingest_rows).await?;
    if !args.postgres.is_empty() {
        let url = bench::fresh_database(&args.postgres, "urpnet_bench_ingest").await?;
        ingest_phase(
            dir.path(),
            "postgresql",
            Some(url),
            args.ingest,
            &mut ingest_rows,
        )
        .await?;
    }
    let catch_up = catch_up_phase(dir.path(), args.catch_up).await?;
    let mut queries = Vec::new();
    if !args.postgres.is_empty() && !args.sizes.is_empty() {
        query_phase(&args, &mut queries).await?;
    }
    let report = Report {
        machine: bench::machine(),
        date: bench::now(),
        ingest: ingest_rows,
        queries,
        catch_up_records: args.catch_up,
        catch_up_seconds: catch_up,
        catch_up_per_s: args.catch_up as f64 / catch_up,
    };
    if let Some(parent) = args.json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.json_out.display());
    Ok(())
}
