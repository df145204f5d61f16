//! `urpnet-registry archive ...` and `upstream ...`: the coordinators' view
//! of the anonymised archive. Tables by default, `--json` on request, CSV
//! for open-data portals, SVG charts.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use tonic::transport::Channel;
use urpnet_proto::archive::{parse_week, week_label};
use urpnet_proto::cli::{table, time_ms, to_json};
use urpnet_proto::v1::archive_admin_client::ArchiveAdminClient;
use urpnet_proto::v1::{
    ArchiveFilter, ArchiveQueryRequest, ArchiveQueryResponse, ArchiveStatsRequest,
    ArchiveTrendsRequest, ArchiveTrendsResponse, Channel as ContactChannel, Dimension, Outcome,
    TerritoryLevel, TrendRow,
};

use super::publish::poisson_upper_tail;
use super::{DEFAULT_ALPHA, DEFAULT_MIN_COUNT, SURGE_MIN_RATIO};

/// `archive` commands.
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Records held, per sending member, and upward replication.
    Stats,
    /// Counts grouped by dimensions, small cells suppressed (`*`).
    Query(QueryArgs),
    /// This week against the trailing baseline per category x territory;
    /// surges first, each explained in one line.
    Trends(TrendArgs),
    /// Write an SVG chart of weekly counts with surges marked.
    Plot(PlotArgs),
}

/// `upstream` commands (a regional registry replicating to a national one).
#[derive(Debug, Subcommand)]
pub enum UpstreamCommand {
    /// Make this registry's key, certificate request and signing key for
    /// the national registry, in <data_dir>/upstream/, and print what the
    /// national coordinator runs to enrol it.
    Init {
        /// This registry's member id at the national registry: the
        /// region's IPA code (e.g. r_abruzz).
        #[arg(long)]
        member_id: String,
    },
}

/// A query dimension on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DimArg {
    /// Taxonomy category.
    Category,
    /// Channel the citizen used.
    Channel,
    /// Territory at --level.
    Territory,
    /// ISO week opened.
    Week,
    /// Answered, rejected, merged.
    Outcome,
    /// Handling-time bucket.
    Handling,
    /// Handed off as overflow.
    Overflow,
}

impl DimArg {
    fn wire(self) -> Dimension {
        match self {
            Self::Category => Dimension::Category,
            Self::Channel => Dimension::Channel,
            Self::Territory => Dimension::Territory,
            Self::Week => Dimension::Week,
            Self::Outcome => Dimension::Outcome,
            Self::Handling => Dimension::Handling,
            Self::Overflow => Dimension::Overflow,
        }
    }
}

/// The territory level on the command line.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LevelArg {
    /// Comuni (and districts).
    #[default]
    Comune,
    /// Province.
    Provincia,
    /// Regioni.
    Regione,
}

impl LevelArg {
    fn wire(self) -> i32 {
        match self {
            Self::Comune => TerritoryLevel::Comune as i32,
            Self::Provincia => TerritoryLevel::Provincia as i32,
            Self::Regione => TerritoryLevel::Regione as i32,
        }
    }
}

/// Filters shared by query, trends and plot.
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// A category and everything under it.
    #[arg(long)]
    pub category: Option<String>,
    /// An ISTAT code: comune (6 digits), province (3) or region (2).
    #[arg(long)]
    pub territory: Option<String>,
    /// Level territories are shown at.
    #[arg(long, value_enum, default_value_t)]
    pub level: LevelArg,
}

/// `archive query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// Dimensions to group by, comma-separated (1 to 4).
    #[arg(long, value_delimiter = ',', required = true)]
    pub by: Vec<DimArg>,
    /// Which records.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// First week, YYYY-Www or YYYYWW.
    #[arg(long)]
    pub from: Option<String>,
    /// Last week.
    #[arg(long)]
    pub to: Option<String>,
    /// Only this channel (phone, desk, email, app, web, chat, pec, social,
    /// video, open311).
    #[arg(long)]
    pub channel: Option<String>,
    /// Only this outcome (answered, rejected, merged).
    #[arg(long)]
    pub outcome: Option<String>,
    /// A larger k than the registry's, for a stricter release.
    #[arg(long)]
    pub k: Option<u32>,
    /// CSV (RFC 4180, header row) instead of a table: for open-data portals.
    /// Suppressed cells are empty with the reason in the last column.
    #[arg(long)]
    pub csv: bool,
    /// Write to this file instead of standard output (with a progress bar).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `archive trends`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrendArgs {
    /// Which records.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The week looked at (default: the latest with records).
    #[arg(long)]
    pub week: Option<String>,
    /// Weeks of trailing baseline.
    #[arg(long, default_value_t = 8)]
    pub baseline: u32,
    /// Smallest count this week for a surge.
    #[arg(long, default_value_t = DEFAULT_MIN_COUNT)]
    pub min_count: u32,
    /// Significance of the one-sided Poisson test.
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    pub alpha: f64,
    /// Every series, not only surges.
    #[arg(long)]
    pub all: bool,
}

/// `archive plot`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// Which records.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Weeks to draw, ending at --week.
    #[arg(long, default_value_t = 26)]
    pub weeks: u32,
    /// The last week drawn (default: the latest with records).
    #[arg(long)]
    pub week: Option<String>,
    /// Most series drawn (the largest).
    #[arg(long, default_value_t = 6)]
    pub series: usize,
    /// The SVG file to write.
    #[arg(long, short)]
    pub out: PathBuf,
}

fn week_arg(name: &str, text: &Option<String>) -> anyhow::Result<u32> {
    match text {
        None => Ok(0),
        Some(t) => parse_week(t)
            .with_context(|| format!("--{name}: `{t}` is not an ISO week like 2026-W07")),
    }
}

fn channel_arg(text: &Option<String>) -> anyhow::Result<i32> {
    match text {
        None => Ok(0),
        Some(t) => ContactChannel::from_str_name(&format!("CHANNEL_{}", t.to_uppercase()))
            .map(|c| c as i32)
            .with_context(|| format!("--channel: unknown channel `{t}`")),
    }
}

fn outcome_arg(text: &Option<String>) -> anyhow::Result<i32> {
    match text {
        None => Ok(0),
        Some(t) => Outcome::from_str_name(&format!("OUTCOME_{}", t.to_uppercase()))
            .map(|c| c as i32)
            .with_context(|| format!("--outcome: unknown outcome `{t}`")),
    }
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// Runs an archive command against a registry.
///
/// # Errors
/// Bad arguments, connection or registry failures, I/O.
pub async fn run(channel: Channel, cmd: ArchiveCommand, json: bool) -> anyhow::Result<()> {
    let mut admin = ArchiveAdminClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    match cmd {
        ArchiveCommand::Stats => {
            let s = admin
                .archive_stats(ArchiveStatsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if json {
                println!("{}", to_json("urpnet.v1.ArchiveStatsResponse", &s));
            } else {
                println!("{}", stats_text(&s));
            }
        }
        ArchiveCommand::Query(args) => {
            let req = ArchiveQueryRequest {
                group_by: args.by.iter().map(|d| d.wire() as i32).collect(),
                level: args.filter.level.wire(),
                filter: Some(ArchiveFilter {
                    category: args.filter.category.clone().unwrap_or_default(),
                    territory: args.filter.territory.clone().unwrap_or_default(),
                    week_from: week_arg("from", &args.from)?,
                    week_to: week_arg("to", &args.to)?,
                    channel: channel_arg(&args.channel)?,
                    outcome: outcome_arg(&args.outcome)?,
                }),
                k: args.k.unwrap_or(0),
            };
            let r = admin.query_archive(req).await.map_err(status)?.into_inner();
            let text = if json {
                to_json("urpnet.v1.ArchiveQueryResponse", &r).to_string()
            } else if args.csv {
                query_csv(&r, args.out.is_some())?
            } else {
                query_table(&r)
            };
            match &args.out {
                Some(path) => {
                    std::fs::write(path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("{} cells written to {}", r.cells.len(), path.display());
                }
                None => println!("{text}"),
            }
        }
        ArchiveCommand::Trends(args) => {
            let r = admin
                .archive_trends(ArchiveTrendsRequest {
                    week: week_arg("week", &args.week)?,
                    baseline_weeks: args.baseline,
                    level: args.filter.level.wire(),
                    category: args.filter.category.clone().unwrap_or_default(),
                    territory: args.filter.territory.clone().unwrap_or_default(),
                    min_count: args.min_count,
                    alpha: args.alpha,
                    all: args.all,
                })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                println!("{}", to_json("urpnet.v1.ArchiveTrendsResponse", &r));
            } else {
                println!("{}", trends_text(&r));
            }
        }
        ArchiveCommand::Plot(args) => {
            if !(4..=104).contains(&args.weeks) {
                bail!("--weeks: must be 4..=104");
            }
            // Eight more weeks than drawn, so the first weeks drawn have a
            // baseline to be tested against.
            let r = admin
                .archive_trends(ArchiveTrendsRequest {
                    week: week_arg("week", &args.week)?,
                    baseline_weeks: (args.weeks - 1 + 8).min(52),
                    level: args.filter.level.wire(),
                    category: args.filter.category.clone().unwrap_or_default(),
                    territory: args.filter.territory.clone().unwrap_or_default(),
                    min_count: 0,
                    alpha: 0.0,
                    all: true,
                })
                .await
                .map_err(status)?
                .into_inner();
            let drawn = plot(&r, args.weeks as usize, args.series, &args.out)?;
            println!(
                "{} written: {} series over {} weeks, {} surge(s) marked",
                args.out.display(),
                drawn.0,
                args.weeks,
                drawn.1
            );
        }
    }
    Ok(())
}

/// What the archive holds, per sender, and upward replication.
pub fn stats_text(s: &urpnet_proto::v1::ArchiveStatsResponse) -> String {
    let mut out = format!(
        "{} records, weeks {} to {}, published with k = {}\n",
        s.records,
        if s.first_week == 0 {
            "-".into()
        } else {
            week_label(s.first_week)
        },
        if s.last_week == 0 {
            "-".into()
        } else {
            week_label(s.last_week)
        },
        s.k
    );
    let mut t = table();
    t.set_header(vec!["member", "records", "last batch", "refused"]);
    for src in &s.sources {
        t.add_row(vec![
            src.member.clone(),
            src.records.to_string(),
            if src.last_received_ms == 0 {
                "never".into()
            } else {
                time_ms(src.last_received_ms)
            },
            src.refused.to_string(),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    if s.upstream.is_empty() {
        out.push_str("upstream: none (this registry replicates nowhere)");
    } else {
        out.push_str(&format!(
            "upstream {}: {} sent, {} waiting{}",
            s.upstream,
            s.upstream_sent,
            s.upstream_pending,
            if s.upstream_error.is_empty() {
                String::new()
            } else {
                format!(", last error: {}", s.upstream_error)
            }
        ));
    }
    out
}

/// A query result as a table with its suppression footer.
pub fn query_table(r: &ArchiveQueryResponse) -> String {
    let mut t = table();
    let mut header: Vec<String> = r.columns.clone();
    header.push("count".into());
    t.set_header(header);
    for c in &r.cells {
        let mut row = c.keys.clone();
        row.push(if c.suppressed.is_empty() {
            c.count.to_string()
        } else {
            format!("* ({})", c.suppressed)
        });
        t.add_row(row);
    }
    format!(
        "{t}\ntotal {} · k = {} · suppressed: {} under k, {} complementary · {} group(s) with a single outcome shown as outcome `*` (l-diversity) · counts carry noise of at most ±3",
        if r.total == 0 {
            "*".to_string()
        } else {
            r.total.to_string()
        },
        r.k,
        r.suppressed_small,
        r.suppressed_complementary,
        r.generalised_l_diversity
    )
}

/// A query's cells as CSV (the coordinator's download).
///
/// # Errors
/// CSV writing failures.
pub fn query_csv(r: &ArchiveQueryResponse, progress: bool) -> anyhow::Result<String> {
    let bar = if progress {
        indicatif::ProgressBar::new(r.cells.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = r.columns.clone();
    header.extend(["count".to_string(), "suppressed".to_string()]);
    w.write_record(&header)?;
    for c in &r.cells {
        let mut row = c.keys.clone();
        row.push(if c.suppressed.is_empty() {
            c.count.to_string()
        } else {
            String::new()
        });
        row.push(c.suppressed.clone());
        w.write_record(&row)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// Trends as a table, surges first, with the method.
pub fn trends_text(r: &ArchiveTrendsResponse) -> String {
    if r.week == 0 {
        return "the archive is empty".into();
    }
    let mut out = format!(
        "week {} against the {} weeks before it\n",
        week_label(r.week),
        r.baseline_weeks
    );
    let mut t = table();
    t.set_header(vec![
        "",
        "category",
        "territory",
        "this week",
        "mean",
        "ratio",
        "p",
        "why",
    ]);
    for row in &r.rows {
        t.add_row(trend_row(row));
    }
    let surges = r.rows.iter().filter(|r| r.surge).count();
    out.push_str(&format!("{t}\n{surges} surge(s). Method: {}", r.method));
    out
}

fn trend_row(row: &TrendRow) -> Vec<String> {
    vec![
        if row.surge { "SURGE" } else { "" }.into(),
        row.category.clone(),
        format!("{} {}", row.territory, row.territory_name),
        if row.suppressed {
            "*".into()
        } else {
            row.count.to_string()
        },
        format!("{:.1}", row.baseline_mean),
        if row.suppressed || row.baseline_mean == 0.0 {
            "-".into()
        } else {
            format!("{:.1}x", row.ratio)
        },
        if row.suppressed {
            "-".into()
        } else {
            format!("{:.1e}", row.p_value)
        },
        row.explanation.clone(),
    ]
}

/// Weeks of `weekly` (beyond the first eight) that pass the surge test
/// against the eight before them.
pub fn surge_weeks(weekly: &[u64], hidden: &[bool]) -> Vec<usize> {
    let mut out = Vec::new();
    for i in 8..weekly.len() {
        if hidden[i] {
            continue;
        }
        let base = &weekly[i - 8..i];
        let mean = base.iter().sum::<u64>() as f64 / 8.0;
        let count = weekly[i];
        let p = poisson_upper_tail(count, mean.max(0.5));
        if count >= u64::from(DEFAULT_MIN_COUNT)
            && p < DEFAULT_ALPHA
            && (mean == 0.0 || count as f64 >= SURGE_MIN_RATIO * mean)
        {
            out.push(i);
        }
    }
    out
}

/// Draws the largest `max_series` series over the last `weeks` weeks into
/// `out`; returns (series drawn, surges marked).
fn plot(
    r: &ArchiveTrendsResponse,
    weeks: usize,
    max_series: usize,
    out: &Path,
) -> anyhow::Result<(usize, usize)> {
    let (svg, drawn, marked) = plot_svg(r, weeks, max_series)?;
    std::fs::write(out, svg)?;
    Ok((drawn, marked))
}

/// The same plot as SVG text (the dashboard embeds it): (SVG, series
/// drawn, surges marked).
///
/// # Errors
/// Nothing to draw, or a drawing failure.
pub fn plot_svg(
    r: &ArchiveTrendsResponse,
    weeks: usize,
    max_series: usize,
) -> anyhow::Result<(String, usize, usize)> {
    use plotters::prelude::*;
    let mut svg = String::new();
    if r.rows.is_empty() {
        bail!("nothing to draw: no records match");
    }
    let mut rows: Vec<&TrendRow> = r.rows.iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.weekly.iter().sum::<u64>()));
    rows.truncate(max_series);
    let total_weeks = rows[0].weeks.len();
    let skip = total_weeks.saturating_sub(weeks);
    let labels: Vec<String> = rows[0].weeks[skip..]
        .iter()
        .map(|w| week_label(*w))
        .collect();
    let top = rows
        .iter()
        .flat_map(|row| row.weekly[skip..].iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let root = SVGBackend::with_string(&mut svg, (1100, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "Weekly contacts{}, {} to {}",
        if rows.len() == 1 {
            format!(": {} in {}", rows[0].category, rows[0].territory_name)
        } else {
            String::new()
        },
        labels.first().cloned().unwrap_or_default(),
        labels.last().cloned().unwrap_or_default()
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d(
            0..labels.len().saturating_sub(1).max(1),
            0u64..top + top / 8 + 1,
        )?;
    let label_of = labels.clone();
    chart
        .configure_mesh()
        .x_labels(labels.len().min(13))
        .x_label_formatter(&move |i| label_of.get(*i).cloned().unwrap_or_default())
        .y_desc("contacts per week (hidden under k: drawn as 0)")
        .draw()?;
    let mut marked = 0;
    for (n, row) in rows.iter().enumerate() {
        let color = Palette99::pick(n).to_rgba();
        let hidden: Vec<bool> = row
            .weeks
            .iter()
            .map(|w| row.hidden_weeks.contains(w))
            .collect();
        let points: Vec<(usize, u64)> = row.weekly[skip..].iter().copied().enumerate().collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!("{} · {}", row.category, row.territory_name))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        let surges: Vec<(usize, u64)> = surge_weeks(&row.weekly, &hidden)
            .into_iter()
            .filter(|i| *i >= skip)
            .map(|i| (i - skip, row.weekly[i]))
            .collect();
        marked += surges.len();
        chart.draw_series(
            surges
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 7, RED.stroke_width(3))),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    let drawn = rows.len();
    drop(chart);
    drop(root);
    Ok((svg, drawn, marked))
}

/// Runs `upstream init`.
///
/// # Errors
/// A bad id, I/O failures.
pub fn upstream_init(data_dir: &Path, member_id: &str) -> anyhow::Result<()> {
    let made = super::upstream::init(data_dir, member_id)?;
    let dir = super::upstream::dir(data_dir);
    println!(
        "{} {}",
        if made.created {
            "made"
        } else {
            "kept the existing"
        },
        dir.display()
    );
    println!("Send these two files to the national coordinator:");
    println!("  {}", made.csr.display());
    println!("  {}", made.signing_public.display());
    println!("who enrols this registry as a member of the national registry:");
    println!(
        "  urpnet-registry enrol --id {member_id} --name \"Regione ...\" --level regione \\\n    --territory <region code> --endpoint https://<this registry's host:port> \\\n    --csr request.csr --signing-key signing.pub --out <dir>"
    );
    println!(
        "Put the cert.pem and ca.pem it writes into {}, then set [upstream] endpoint and member_id in the configuration and restart.",
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_week_is_marked_and_a_flat_series_is_not() {
        let mut weekly = vec![10u64; 20];
        weekly[15] = 40;
        let hidden = vec![false; 20];
        assert_eq!(surge_weeks(&weekly, &hidden), vec![15]);
        assert!(surge_weeks(&[10; 20], &hidden).is_empty());
    }
}
