//! bench-charter: answers from a regional set of charters, and how fast a
//! new charter version spreads.
//!
//! (a) **Answers.** Every comune of a large region (Lombardia by default,
//! ~1,500 comuni) gets a charter of ~150 services and ~10 offices, made
//! from the Celano sample (`examples/charters/celano.toml`) with its
//! offices moved to the comune and its services varied. They are stored as
//! charter versions in a real node store (SQLite) and loaded by the node's
//! own `CharterBook` (the path a node takes at start: the set, the search
//! index rebuilt). Then, one at a time and timed one by one:
//! `Explain` of a random service of a random comune (a cold charter: read
//! from the store and decoded; the LRU holds 128), `Explain` of a hot one
//! (cached), and searches of an operator's words (two to four words of a
//! service title, some with a typo or a half-typed last word, a third
//! filtered by the comune) — next to the bare search engine on the same
//! index in the same run. Goal: p99 under 5 ms. The node's resident memory
//! before and after loading is reported.
//!
//! (b) **Spread.** N simulated nodes (1,000 by default) each holding 200
//! charters run the node's anti-entropy logic (`DocSet` digests, answers
//! and plans, the code behind `FaqExchange` for every kind) in synchronous
//! push-pull rounds; one body publishes a new version; rounds until every
//! node holds it, next to the 2·log2(N) goal.
//!
//! cargo run --release -p urpnet-examples --bin bench-charter -- --help

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message as _;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use urpnet_examples::bench;
use urpnet_node::charter::CharterBook;
use urpnet_node::replica::tables::VersionRow;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::territory::Territory;
use urpnet_proto::v1::{Charter, CharterVersion, Hlc, PayloadKind};
use urpnet_shared_faq::{DocSet, Key, Stamp};

/// Answers from a regional set of charters, and their spread.
#[derive(Parser)]
struct Args {
    /// ISTAT code of the region whose comuni get a charter (03: Lombardia).
    #[arg(long, default_value = "03")]
    region: String,
    /// At most this many comuni (0: all of the region).
    #[arg(long, default_value_t = 0)]
    comuni: usize,
    /// Services per charter.
    #[arg(long, default_value_t = 150)]
    services: usize,
    /// Queries timed per kind.
    #[arg(long, default_value_t = 5000)]
    queries: usize,
    /// Network size for the spread simulation.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Peers each node calls per round (the node's `faq.fanout`).
    #[arg(long, default_value_t = 3)]
    fanout: usize,
    /// Spread trials.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/bench-charter.json")]
    json_out: PathBuf,
}

#[derive(Serialize)]
struct Row {
    what: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    per_s: f64,
    goal_met: Option<bool>,
}

#[derive(Serialize)]
struct Load {
    charters: usize,
    services: usize,
    offices: usize,
    stored_mb: f64,
    load_s: f64,
    index_mb: f64,
    /// The process before loading (the bench's own copies of the charters
    /// included), after the node loaded them, after the answers (LRU full).
    rss_before_load_mb: f64,
    rss_after_load_mb: f64,
    rss_after_answers_mb: f64,
}

#[derive(Serialize)]
struct Spread {
    nodes: usize,
    fanout: usize,
    trials: usize,
    rounds_median: usize,
    rounds_max: usize,
    goal_rounds: f64,
    goal_met: bool,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    when: String,
    region: String,
    load: Load,
    answers: Vec<Row>,
    spread: Spread,
}

/// What the bench keeps of a charter to pick its questions (the node
/// keeps the charters; the process's memory should be the node's).
struct Lite {
    offices: usize,
    services: Vec<Lite2>,
}

struct Lite2 {
    id: String,
    title: String,
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn dir_size(path: &std::path::Path) -> u64 {
    walk(path)
}

fn walk(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

const VARIANTS: [(&str, &str); 3] = [
    ("", ""),
    ("-online", " (online)"),
    ("-urgente", " (procedura urgente)"),
];

/// The Celano sample moved to `comune` (ISTAT code, IPA code), with
/// `services` services.
fn charter_for(sample: &Charter, istat: &str, ipa: &str, services: usize) -> Charter {
    let mut c = sample.clone();
    c.body = ipa.to_string();
    for o in &mut c.offices {
        o.istat_code = istat.to_string();
    }
    c.offices.truncate(10);
    let keep: Vec<String> = c.offices.iter().map(|o| o.id.clone()).collect();
    let base: Vec<_> = sample
        .services
        .iter()
        .filter(|s| {
            s.delivered
                .iter()
                .all(|d| d.office_id.is_empty() || keep.contains(&d.office_id))
                && s.responsible
                    .as_ref()
                    .is_none_or(|r| keep.contains(&r.office_id))
        })
        .cloned()
        .collect();
    c.services = (0..services)
        .map(|i| {
            let mut s = base[i % base.len()].clone();
            let (id, title) = VARIANTS[(i / base.len()) % VARIANTS.len()];
            let round = i / (base.len() * VARIANTS.len());
            s.id = format!(
                "{}{id}{}",
                s.id,
                if round > 0 {
                    format!("-{round}")
                } else {
                    String::new()
                }
            );
            s.title = format!("{}{title}", s.title);
            s
        })
        .collect();
    c
}

fn typo(word: &str, rng: &mut rand::rngs::StdRng) -> String {
    let chars: Vec<char> = word.chars().collect();
    if chars.len() < 5 {
        return word.to_string();
    }
    let i = rng.gen_range(1..chars.len() - 1);
    chars
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, c)| c)
        .collect()
}

fn time<T>(n: usize, mut run: impl FnMut(usize) -> T) -> (Vec<u32>, f64) {
    for i in 0..n.min(100) {
        run(i);
    }
    let mut lat = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        std::hint::black_box(run(i));
        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    let per_s = n as f64 / started.elapsed().as_secs_f64();
    lat.sort_unstable();
    (lat, per_s)
}

fn row(what: &'static str, (lat, per_s): (Vec<u32>, f64), goal: bool) -> Row {
    let p99 = bench::percentile_ms(&lat, 0.99);
    Row {
        what,
        p50_ms: bench::percentile_ms(&lat, 0.50),
        p99_ms: p99,
        max_ms: bench::percentile_ms(&lat, 1.0),
        per_s,
        goal_met: goal.then_some(p99 < 5.0),
    }
}

fn spread(args: &Args, rng: &mut rand::rngs::StdRng) -> Spread {
    let stamp = |owner: usize, version: u64, seq: u64| {
        Stamp::new(
            Key::new(format!("c_{owner:04}"), "charter"),
            version,
            seq,
            format!("{owner}:{version}").as_bytes(),
            false,
        )
    };
    let mut background = DocSet::new();
    for b in 0..200 {
        background.apply(stamp(b, 1, 1));
    }
    let bar = ProgressBar::new(args.trials as u64)
        .with_style(ProgressStyle::with_template("spread {pos}/{len} {bar:30}").expect("template"));
    let mut all = Vec::new();
    let peers: Vec<usize> = (0..args.nodes).collect();
    for _ in 0..args.trials {
        let mut sets = vec![background.clone(); args.nodes];
        let new = stamp(0, 2, 2);
        sets[rng.gen_range(0..args.nodes)].apply(new.clone());
        let mut rounds = 0;
        while sets
            .iter()
            .filter(|s| s.get(&new.key) == Some(&new))
            .count()
            < args.nodes
        {
            rounds += 1;
            assert!(rounds < 200, "no convergence");
            let snapshot = sets.clone();
            let digests: Vec<_> = snapshot.iter().map(DocSet::digest).collect();
            for i in 0..args.nodes {
                let chosen: Vec<usize> = peers
                    .choose_multiple(rng, args.fanout + 1)
                    .copied()
                    .filter(|j| *j != i)
                    .take(args.fanout)
                    .collect();
                for j in chosen {
                    let answer = snapshot[j].answer(&digests[i], 500, 10_000);
                    for s in answer.send {
                        sets[i].apply(s);
                    }
                    let plan = snapshot[i].plan(&digests[j], &answer.listings, 500);
                    for s in plan.push {
                        sets[j].apply(s);
                    }
                }
            }
        }
        all.push(rounds);
        bar.inc(1);
    }
    bar.finish_and_clear();
    all.sort_unstable();
    let goal = 2.0 * (args.nodes as f64).log2();
    Spread {
        nodes: args.nodes,
        fanout: args.fanout,
        trials: args.trials,
        rounds_median: all[all.len() / 2],
        rounds_max: *all.last().expect("trials"),
        goal_rounds: goal,
        goal_met: *all.last().expect("trials") as f64 <= goal,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    println!("machine: {}", bench::machine());
    let sample = urpnet_node::charter::import::from_toml(
        "celano.toml",
        include_str!("../../charters/celano.toml"),
        "",
        None,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut comuni: Vec<_> = Territory::italy()
        .comuni()
        .filter(|c| c.region_code == args.region)
        .collect();
    comuni.sort_by(|a, b| a.istat_code.cmp(&b.istat_code));
    if args.comuni > 0 {
        comuni.truncate(args.comuni);
    }
    anyhow::ensure!(!comuni.is_empty(), "no comuni in region {}", args.region);

    // A node of the region that holds them all, with a real store.
    let dir = tempfile::tempdir()?;
    let mut config = urpnet_node::NodeConfig::new(
        urpnet_proto::ids::NodeId::new("r_lombar")?,
        "Regione",
        dir.path(),
    );
    config.charter.hold = "all".into();
    let (store, writer) = urpnet_node::store::Store::open(&urpnet_node::store::StoreOptions {
        url: format!("sqlite://{}/urpnet.db?mode=rwc", dir.path().display()),
        blob_dir: dir.path().join("blobs"),
        max_batch: 512,
        read_connections: 4,
        node: "r_lombar".into(),
    })
    .await?;
    let taxonomy = Arc::new(urpnet_node::taxonomy::TaxonomyHandle::new(
        urpnet_node::taxonomy::builtin(),
    ));
    let federation = Arc::new(urpnet_node::registry_link::Federation::default());
    let clock = Arc::new(urpnet_proto::hlc::HybridClock::new(Duration::from_secs(60)));
    let book = CharterBook::open(
        config,
        store.clone(),
        NodeSigner::generate(urpnet_proto::ids::NodeId::new("r_lombar")?),
        clock,
        federation,
        taxonomy,
    )
    .await?;

    // Store every comune's charter as a signed version, as the exchange
    // would, then load them the way a node does at start.
    let bar = ProgressBar::new(comuni.len() as u64).with_style(ProgressStyle::with_template(
        "storing charters {pos}/{len} {bar:30} {eta}",
    )?);
    let mut stored = 0usize;
    let mut charters = Vec::new();
    for chunk in comuni.chunks(50) {
        let mut rows = Vec::new();
        for c in chunk {
            let charter = charter_for(&sample, &c.istat_code, &c.ipa_code, args.services);
            let signer = NodeSigner::generate(urpnet_proto::ids::NodeId::new(c.ipa_code.as_str())?);
            let version = CharterVersion {
                entry_id: "charter".into(),
                owner: c.ipa_code.clone(),
                version: 1,
                seq: 1,
                published_at: Some(Hlc {
                    wall_ms: urpnet_proto::hlc::system_time_ms(),
                    logical: 0,
                }),
                retired: false,
                charter: Some(charter.clone()),
            };
            let signed = signer.sign(PayloadKind::CharterVersion, version.encode_to_vec());
            let stamp = urpnet_node::replica::stamp_of::<urpnet_node::charter::CharterKind>(
                &version,
                &signed.payload,
            );
            stored += signed.payload.len();
            rows.push(VersionRow {
                owner: c.ipa_code.clone(),
                entry_id: "charter".into(),
                version: 1,
                sha: hex::encode(stamp.sha),
                seq: 1,
                retired: false,
                envelope: signed.encode_to_vec(),
                current: true,
            });
            charters.push((
                c.ipa_code.clone(),
                c.istat_code.clone(),
                Lite {
                    offices: charter.offices.len(),
                    services: charter
                        .services
                        .iter()
                        .map(|s| Lite2 {
                            id: s.id.clone(),
                            title: s.title.clone(),
                        })
                        .collect(),
                },
            ));
        }
        urpnet_node::replica::tables::write(&store, "charter", rows).await?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let rss_before = rss_mb();
    let started = Instant::now();
    book.replica().load().await?;
    let load_s = started.elapsed().as_secs_f64();
    let (held, indexed) = book.status().await;
    anyhow::ensure!(held == comuni.len(), "{held} charters held");
    let mut load = Load {
        charters: held,
        services: indexed as usize,
        offices: charters.iter().map(|(_, _, c)| c.offices).sum(),
        stored_mb: stored as f64 / 1e6,
        load_s,
        index_mb: dir_size(&dir.path().join("charter-index")) as f64 / 1e6,
        rss_before_load_mb: rss_before,
        rss_after_load_mb: rss_mb(),
        rss_after_answers_mb: 0.0,
    };

    // Explain: cold (random comune) and hot (a few comuni).
    let picks: Vec<(String, String)> = (0..args.queries)
        .map(|_| {
            let (body, _, c) = &charters[rng.gen_range(0..charters.len())];
            (
                body.clone(),
                c.services[rng.gen_range(0..c.services.len())].id.clone(),
            )
        })
        .collect();
    let hot: Vec<(String, String)> = (0..args.queries)
        .map(|_| {
            let (body, _, c) = &charters[rng.gen_range(0..charters.len().min(20))];
            (
                body.clone(),
                c.services[rng.gen_range(0..c.services.len())].id.clone(),
            )
        })
        .collect();
    let mut answers = Vec::new();
    let mut lat = Vec::with_capacity(picks.len());
    let t0 = Instant::now();
    for (body, service) in &picks {
        let t = Instant::now();
        book.explain(body, service, 0).await?;
        lat.push(t.elapsed().as_micros() as u32);
    }
    let per_s = picks.len() as f64 / t0.elapsed().as_secs_f64();
    lat.sort_unstable();
    answers.push(row(
        "Explain, a random comune (cold: store + decode)",
        (lat, per_s),
        true,
    ));
    for (body, service) in hot.iter().take(200) {
        book.explain(body, service, 0).await?;
    }
    let mut lat = Vec::with_capacity(hot.len());
    let t0 = Instant::now();
    for (body, service) in &hot {
        let t = Instant::now();
        book.explain(body, service, 0).await?;
        lat.push(t.elapsed().as_micros() as u32);
    }
    let per_s = hot.len() as f64 / t0.elapsed().as_secs_f64();
    lat.sort_unstable();
    answers.push(row("Explain, 20 busy comuni (cached)", (lat, per_s), true));

    // Searches: words of a title, a typo, a half-typed word, a filter.
    let queries: Vec<(String, String)> = (0..args.queries)
        .map(|_| {
            let (_, istat, c) = &charters[rng.gen_range(0..charters.len())];
            let s = &c.services[rng.gen_range(0..c.services.len())];
            let words: Vec<&str> = s.title.split_whitespace().filter(|w| w.len() > 3).collect();
            let n = rng.gen_range(2..=4).min(words.len().max(1));
            let mut q: Vec<String> = words.iter().take(n).map(|w| w.to_lowercase()).collect();
            if rng.gen_bool(0.3) && !q.is_empty() {
                q[0] = typo(&q[0], &mut rng);
            }
            if rng.gen_bool(0.3)
                && let Some(last) = q.last_mut()
            {
                let half: String = last
                    .chars()
                    .take((last.chars().count() / 2).max(3))
                    .collect();
                *last = half;
            }
            let territory = if rng.gen_bool(0.33) {
                istat.clone()
            } else {
                String::new()
            };
            (q.join(" "), territory)
        })
        .collect();
    answers.push(row(
        "search (Italian analysis, typos, filters, snippets)",
        time(queries.len(), |i| {
            book.search(&queries[i].0, "", &queries[i].1, "", 10, false)
                .map(|r| r.0.len())
                .unwrap_or(0)
        }),
        true,
    ));
    answers.push(row(
        "bare tantivy on the same index (query parser, top 10)",
        time(queries.len(), |i| {
            book.bare_search(&queries[i].0, 10).unwrap_or(0)
        }),
        false,
    ));

    load.rss_after_answers_mb = rss_mb();
    let mut t = urpnet_proto::cli::table();
    t.set_header([
        "charters",
        "services",
        "offices",
        "signed",
        "load + index",
        "index on disk",
        "RSS before load → loaded → after answers",
    ]);
    t.add_row([
        load.charters.to_string(),
        load.services.to_string(),
        load.offices.to_string(),
        format!("{:.0} MB", load.stored_mb),
        format!("{:.1} s", load.load_s),
        format!("{:.0} MB", load.index_mb),
        format!(
            "{:.0} → {:.0} → {:.0} MB",
            load.rss_before_load_mb, load.rss_after_load_mb, load.rss_after_answers_mb
        ),
    ]);
    println!("{t}");
    let bare_p99 = answers.last().map_or(1.0, |r| r.p99_ms.max(0.001));
    let mut t = urpnet_proto::cli::table();
    t.set_header([
        "answer",
        "p50",
        "p99",
        "max",
        "per s",
        "p99 < 5 ms",
        "p99 / bare",
    ]);
    for r in &answers {
        t.add_row([
            r.what.to_string(),
            format!("{:.2} ms", r.p50_ms),
            format!("{:.2} ms", r.p99_ms),
            format!("{:.2} ms", r.max_ms),
            format!("{:.0}", r.per_s),
            match r.goal_met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
            format!("{:.1}×", r.p99_ms / bare_p99),
        ]);
    }
    println!("{t}");
    let spread = spread(&args, &mut rng);
    let mut t = urpnet_proto::cli::table();
    t.set_header([
        "nodes",
        "fanout",
        "rounds p50",
        "max",
        "goal 2·log2 N",
        "met",
    ]);
    t.add_row([
        spread.nodes.to_string(),
        spread.fanout.to_string(),
        spread.rounds_median.to_string(),
        spread.rounds_max.to_string(),
        format!("{:.1}", spread.goal_rounds),
        if spread.goal_met { "yes" } else { "NO" }.into(),
    ]);
    println!("{t}");
    let report = Report {
        machine: bench::machine(),
        when: bench::now(),
        region: args.region.clone(),
        load,
        answers,
        spread,
    };
    if let Some(parent) = args.json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.json_out.display());
    drop(book);
    store.close().await;
    drop(store);
    let _ = writer.await;
    Ok(())
}
