//! bench-faq: search latency of the shared FAQ set, and how fast a new
//! version spreads by epidemic anti-entropy.
//!
//! (a) **Search.** A corpus of 10,000 and 100,000 Italian FAQ entries
//! (the sample collection of `examples/faq-sample.toml` adapted to every
//! comune of the ISTAT list, its sentences recombined) is indexed on disk
//! with the node's index. Operators' queries — two to four words of a
//! citizen's question, some with a typo, without accents, or with the last
//! word half typed, a third filtered by the operator's territory — run one
//! after the other and are timed one by one: p50, p99 and queries per second
//! of the node's search (Italian analysis, typo tolerance, filters, stored
//! fields and highlighted snippets), next to the bare engine on the same
//! index in the same run (tantivy's query parser, top 10 by BM25, nothing
//! else).
//!
//! (b) **Spread.** N simulated nodes (50, 200, 1,000), each holding the same
//! 200 entries of 20 owners, run the node's own anti-entropy logic
//! (`FaqSet` digests, answers and plans: the code behind `FaqExchange`) in
//! synchronous rounds: every node calls `fanout` random peers, push-pull,
//! from the state at the start of the round. One owner publishes a new
//! version; rounds until every node holds it, over many trials, next to
//! the log2(N) bound of epidemic spreading and the 2·log2(N) goal.
//!
//! cargo run --release -p urpnet-examples --bin bench-faq -- --help

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use urpnet_examples::bench;
use urpnet_proto::territory::Territory;
use urpnet_proto::v1::FaqContent;
use urpnet_shared_faq::search::{Doc, SearchQuery};
use urpnet_shared_faq::set::FaqSet;
use urpnet_shared_faq::{FaqIndex, Key, Stamp};

/// Search latency and spread of the shared FAQ set.
#[derive(Parser)]
struct Args {
    /// Corpus sizes for the search benchmark (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    entries: Vec<usize>,
    /// Queries timed per corpus and engine.
    #[arg(long, default_value_t = 5000)]
    queries: usize,
    /// Network sizes for the spread simulation (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "50,200,1000")]
    nodes: Vec<usize>,
    /// Peers each node calls per round (the node's `faq.fanout`; the
    /// default is the node's default).
    #[arg(long, value_delimiter = ',', default_value = "3,1")]
    fanout: Vec<usize>,
    /// Trials per network size.
    #[arg(long, default_value_t = 30)]
    trials: usize,
    /// The node's `faq.interval`, to turn rounds into time.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/bench-faq.json")]
    json_out: PathBuf,
}

#[derive(Serialize)]
struct SearchRow {
    entries: usize,
    engine: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    queries_per_s: f64,
    hits_per_query: f64,
}

#[derive(Serialize)]
struct IndexRow {
    entries: usize,
    build_s: f64,
    docs_per_s: f64,
    disk_mb: f64,
}

#[derive(Serialize)]
struct SpreadRow {
    nodes: usize,
    fanout: usize,
    trials: usize,
    rounds_median: usize,
    rounds_p95: usize,
    rounds_max: usize,
    log2_n: f64,
    goal_rounds: f64,
    goal_met: bool,
    seconds_median_at_interval: f64,
    cpu_ms_per_round: f64,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    when: String,
    queries: usize,
    index: Vec<IndexRow>,
    search: Vec<SearchRow>,
    spread: Vec<SpreadRow>,
}

/// Sentences of every sample answer, to recombine.
fn sentences(samples: &[FaqContent]) -> Vec<String> {
    samples
        .iter()
        .flat_map(|s| {
            s.answer
                .split(['.', '\n'])
                .map(str::trim)
                .filter(|l| l.len() > 20)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn corpus(n: usize, samples: &[FaqContent], rng: &mut rand::rngs::StdRng) -> Vec<Doc> {
    let comuni: Vec<_> = Territory::italy().comuni().collect();
    let sentences = sentences(samples);
    let templates = [
        "{q}",
        "{q} ({c})",
        "A {c}: {q}",
        "{q} — informazioni per i residenti di {c}",
    ];
    (0..n)
        .map(|i| {
            let s = &samples[i % samples.len()];
            let c = comuni[(i / samples.len()) % comuni.len()];
            let template = templates[rng.gen_range(0..templates.len())];
            let question = template.replace("{q}", &s.question).replace("{c}", &c.name);
            let mut answer = s.answer.clone();
            for _ in 0..rng.gen_range(1..4) {
                answer.push_str("\n\n");
                answer.push_str(&sentences[rng.gen_range(0..sentences.len())]);
                answer.push('.');
            }
            answer.push_str(&format!(
                "\n\nA {} rivolgiti all'URP del Comune, in {} {}.",
                c.name,
                [
                    "via Roma",
                    "piazza del Municipio",
                    "corso Italia",
                    "via Garibaldi"
                ][i % 4],
                1 + i % 90
            ));
            Doc {
                key: format!("{}/{}", c.ipa_code, ulid::Ulid::new()),
                owner: c.ipa_code.clone(),
                version: 1,
                retired: i % 97 == 0,
                question,
                answer,
                tags: s.tags.clone(),
                language: "it".into(),
                categories: s.categories.clone(),
                territory: if s.territory.is_empty() {
                    vec![c.istat_code.clone()]
                } else {
                    s.territory.clone()
                },
                valid_from: None,
                valid_until: None,
                published_ms: 1_700_000_000_000 + i as u64,
                overridden: false,
            }
        })
        .collect()
}

fn fold_accents(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'à' => 'a',
            'è' | 'é' => 'e',
            'ì' => 'i',
            'ò' => 'o',
            'ù' => 'u',
            c => c,
        })
        .collect()
}

/// Operators' queries: a few words of a citizen's question, sometimes
/// misspelt, without accents or still being typed; a third filtered by
/// territory.
fn queries(n: usize, samples: &[FaqContent], rng: &mut rand::rngs::StdRng) -> Vec<SearchQuery> {
    let comuni: Vec<_> = Territory::italy().comuni().collect();
    (0..n)
        .map(|_| {
            let s = &samples[rng.gen_range(0..samples.len())];
            let words: Vec<&str> = s
                .question
                .split(|c: char| !c.is_alphanumeric() && c != '\'')
                .filter(|w| w.chars().count() > 3)
                .collect();
            let k = rng.gen_range(2..=4).min(words.len()).max(1);
            let mut chosen: Vec<String> = words
                .choose_multiple(rng, k)
                .map(|w| w.to_lowercase())
                .collect();
            if rng.gen_bool(0.3) {
                let w = rng.gen_range(0..chosen.len());
                let mut chars: Vec<char> = chosen[w].chars().collect();
                if chars.len() > 4 {
                    let at = rng.gen_range(1..chars.len() - 1);
                    chars.swap(at, at + 1);
                    chosen[w] = chars.into_iter().collect();
                }
            }
            let mut text = chosen.join(" ");
            if rng.gen_bool(0.3) {
                text = fold_accents(&text);
            }
            if rng.gen_bool(0.3) {
                // Still typing the last word.
                let cut = text.chars().count().saturating_sub(2);
                text = text.chars().take(cut).collect();
            } else {
                text.push(' ');
            }
            let territory = rng
                .gen_bool(0.33)
                .then(|| comuni[rng.gen_range(0..comuni.len())].istat_code.clone());
            SearchQuery {
                text,
                territory,
                valid_on: Some(urpnet_shared_faq::model::today_days()),
                limit: 10,
                ..SearchQuery::default()
            }
        })
        .collect()
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn time_queries(
    qs: &[SearchQuery],
    mut run: impl FnMut(&SearchQuery) -> usize,
) -> (Vec<u32>, f64, f64) {
    for q in qs.iter().take(200) {
        run(q);
    }
    let mut lat = Vec::with_capacity(qs.len());
    let mut hits = 0usize;
    let started = Instant::now();
    for q in qs {
        let t = Instant::now();
        hits += run(q);
        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    (lat, qs.len() as f64 / secs, hits as f64 / qs.len() as f64)
}

fn search_bench(
    args: &Args,
    samples: &[FaqContent],
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<(Vec<IndexRow>, Vec<SearchRow>)> {
    let mut index_rows = Vec::new();
    let mut rows = Vec::new();
    let qs = queries(args.queries, samples, rng);
    for &n in &args.entries {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("faq-index");
        let index = FaqIndex::open(&path)?;
        let docs = corpus(n, samples, rng);
        let started = Instant::now();
        let bar = ProgressBar::new(n as u64).with_style(ProgressStyle::with_template(
            "indexing {pos}/{len} {bar:30} {eta}",
        )?);
        for chunk in docs.chunks(10_000) {
            index.apply(chunk, &[], "bench")?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let build = started.elapsed().as_secs_f64();
        index_rows.push(IndexRow {
            entries: n,
            build_s: build,
            docs_per_s: n as f64 / build,
            disk_mb: dir_size(&path) as f64 / 1e6,
        });
        let row = |engine, (lat, qps, hits): (Vec<u32>, f64, f64)| SearchRow {
            entries: n,
            engine,
            p50_ms: bench::percentile_ms(&lat, 0.50),
            p99_ms: bench::percentile_ms(&lat, 0.99),
            max_ms: bench::percentile_ms(&lat, 1.0),
            queries_per_s: qps,
            hits_per_query: hits,
        };
        rows.push(row(
            "urpnet (analysis, typos, filters, snippets)",
            time_queries(&qs, |q| index.search(q).map(|r| r.hits.len()).unwrap_or(0)),
        ));
        rows.push(row(
            "bare tantivy (query parser, top 10)",
            time_queries(&qs, |q| index.bare_search(&q.text, 10).unwrap_or(0)),
        ));
    }
    Ok((index_rows, rows))
}

fn stamp(owner: &str, entry: u64, version: u64, seq: u64) -> Stamp {
    Stamp {
        key: Key::new(owner, format!("01JD3Q5Z8W2N4V6X7Y9A{entry:06}")),
        version,
        seq,
        sha: [(entry % 251) as u8 ^ version as u8; 32],
        retired: false,
    }
}

/// Rounds until one new version reaches all `n` nodes.
fn spread_once(
    n: usize,
    fanout: usize,
    background: &FaqSet,
    rng: &mut rand::rngs::StdRng,
) -> (usize, f64) {
    let mut sets: Vec<FaqSet> = vec![background.clone(); n];
    let new = stamp("owner_0", 0, 2, 11);
    let origin = rng.gen_range(0..n);
    sets[origin].apply(new.clone());
    let has = |sets: &[FaqSet]| {
        sets.iter()
            .filter(|s| s.get(&new.key) == Some(&new))
            .count()
    };
    let mut rounds = 0;
    let started = Instant::now();
    let peers: Vec<usize> = (0..n).collect();
    while has(&sets) < n {
        rounds += 1;
        assert!(rounds < 200, "no convergence");
        let snapshot = sets.clone();
        let digests: Vec<_> = snapshot.iter().map(FaqSet::digest).collect();
        for i in 0..n {
            let chosen: Vec<usize> = peers
                .choose_multiple(rng, fanout + 1)
                .copied()
                .filter(|j| *j != i)
                .take(fanout)
                .collect();
            for j in chosen {
                // i calls j: Sync (pull), then Push (and wanted back).
                let answer = snapshot[j].answer(&digests[i], 500, 10_000);
                for s in answer.send {
                    sets[i].apply(s);
                }
                let plan = snapshot[i].plan(&digests[j], &answer.listings, 500);
                for s in plan.push {
                    sets[j].apply(s);
                }
                for key in plan.want {
                    if let Some(s) = snapshot[j].get(&key) {
                        sets[i].apply(s.clone());
                    }
                }
            }
        }
    }
    let cpu_ms = started.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    (rounds, cpu_ms)
}

fn spread_bench(args: &Args, rng: &mut rand::rngs::StdRng) -> Vec<SpreadRow> {
    let mut background = FaqSet::new();
    for e in 1..=200u64 {
        background.apply(stamp(&format!("owner_{}", e % 20), e, 1, e));
    }
    background.apply(stamp("owner_0", 0, 1, 10));
    let mut rows = Vec::new();
    for &fanout in &args.fanout {
        for &n in &args.nodes {
            let bar = ProgressBar::new(args.trials as u64).with_style(
                ProgressStyle::with_template(&format!(
                    "spread N={n} fanout={fanout} {{pos}}/{{len}} {{bar:30}}"
                ))
                .expect("template"),
            );
            let mut rounds = Vec::new();
            let mut cpu = 0.0;
            for _ in 0..args.trials {
                let (r, c) = spread_once(n, fanout, &background, rng);
                rounds.push(r);
                cpu += c;
                bar.inc(1);
            }
            bar.finish_and_clear();
            rounds.sort_unstable();
            let log2 = (n as f64).log2();
            let p95 = rounds[((rounds.len() - 1) as f64 * 0.95) as usize];
            let median = rounds[rounds.len() / 2];
            rows.push(SpreadRow {
                nodes: n,
                fanout,
                trials: args.trials,
                rounds_median: median,
                rounds_p95: p95,
                rounds_max: *rounds.last().expect("trials"),
                log2_n: log2,
                goal_rounds: 2.0 * log2,
                goal_met: *rounds.last().expect("trials") as f64 <= 2.0 * log2,
                seconds_median_at_interval: median as f64 * args.interval.as_secs_f64(),
                cpu_ms_per_round: cpu / args.trials as f64,
            });
        }
    }
    rows
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let samples: Vec<FaqContent> =
        urpnet_node::faq::sample::parse(urpnet_node::faq::sample::SAMPLE)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(|e| e.content)
            .collect();
    println!("machine: {}", bench::machine());
    let (index_rows, search_rows) = search_bench(&args, &samples, &mut rng)?;
    let mut t = urpnet_proto::cli::table();
    t.set_header(["entries", "build", "docs/s", "on disk"]);
    for r in &index_rows {
        t.add_row([
            r.entries.to_string(),
            format!("{:.1} s", r.build_s),
            format!("{:.0}", r.docs_per_s),
            format!("{:.0} MB", r.disk_mb),
        ]);
    }
    println!("{t}");
    let mut t = urpnet_proto::cli::table();
    t.set_header([
        "entries",
        "engine",
        "p50",
        "p99",
        "max",
        "queries/s",
        "hits/query",
        "p99 ratio",
    ]);
    for pair in search_rows.chunks(2) {
        let ratio = pair[0].p99_ms / pair[1].p99_ms.max(0.001);
        for (i, r) in pair.iter().enumerate() {
            t.add_row([
                r.entries.to_string(),
                r.engine.to_string(),
                format!("{:.2} ms", r.p50_ms),
                format!("{:.2} ms", r.p99_ms),
                format!("{:.2} ms", r.max_ms),
                format!("{:.0}", r.queries_per_s),
                format!("{:.1}", r.hits_per_query),
                if i == 0 {
                    format!("{ratio:.1}×")
                } else {
                    "1.0×".into()
                },
            ]);
        }
    }
    println!("{t}");
    let spread = spread_bench(&args, &mut rng);
    let mut t = urpnet_proto::cli::table();
    t.set_header([
        "nodes",
        "fanout",
        "rounds p50",
        "p95",
        "max",
        "log2 N",
        "goal 2·log2 N",
        "met",
        "time p50",
        "CPU/round",
    ]);
    for r in &spread {
        t.add_row([
            r.nodes.to_string(),
            r.fanout.to_string(),
            r.rounds_median.to_string(),
            r.rounds_p95.to_string(),
            r.rounds_max.to_string(),
            format!("{:.1}", r.log2_n),
            format!("{:.1}", r.goal_rounds),
            if r.goal_met { "yes" } else { "NO" }.to_string(),
            humantime::format_duration(std::time::Duration::from_secs_f64(
                r.seconds_median_at_interval,
            ))
            .to_string(),
            format!("{:.1} ms", r.cpu_ms_per_round),
        ]);
    }
    println!("{t}");
    let report = Report {
        machine: bench::machine(),
        when: bench::now(),
        queries: args.queries,
        index: index_rows,
        search: search_rows,
        spread,
    };
    if let Some(parent) = args.json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.json_out.display());
    Ok(())
}
