//! `urpnet-node charter ...`: the service charter on a running node
//! (CharterDesk): import, show, search, explain, history, export, door sign.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use urpnet_proto::v1::charter_desk_client::CharterDeskClient;
use urpnet_proto::v1::{
    Charter, CharterHistoryRequest, CharterSummary, ExplainRequest, ExplainResponse,
    GetCharterRequest, ImportCharterRequest, ListChartersRequest, SearchCharterRequest,
    WithdrawCharterRequest,
};

use super::{TokenInterceptor, status_error};
use crate::charter::{export, import};

/// A CharterDesk client with the operator's token.
pub type CharterDesk = CharterDeskClient<InterceptedService<Channel, TokenInterceptor>>;

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// schema.org JSON-LD (GovernmentService, GovernmentOffice), as the
    /// municipal website model embeds it.
    Jsonld,
    /// CPSV-AP_IT JSON-LD, for open-data portals.
    Cpsv,
    /// The printable charter in Markdown, service pages in the model's order.
    Markdown,
    /// The printable charter as one HTML page.
    Html,
    /// The charter as canonical proto3 JSON.
    Json,
}

/// Charter commands.
#[derive(Debug, Subcommand)]
pub enum CharterCommand {
    /// Publish this body's charter from a TOML file, or from two CSV sheets
    /// (offices and services) as a spreadsheet exports them. Every error is
    /// shown with file, line and column; nothing is published unless the
    /// whole charter is valid (supervisors).
    Import {
        /// The charter in TOML (see examples/charters/celano.toml).
        #[arg(required_unless_present = "services")]
        file: Option<PathBuf>,
        /// The offices sheet (CSV), with --services.
        #[arg(long, requires = "services", conflicts_with = "file")]
        offices: Option<PathBuf>,
        /// The services sheet (CSV), with --offices.
        #[arg(long, requires = "offices")]
        services: Option<PathBuf>,
        /// The patron saint's day, MM-DD (CSV import).
        #[arg(long, default_value = "")]
        patron_day: String,
        /// Check the files and show what would be published, without
        /// publishing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Withdraw this body's charter (a tombstone version; supervisors).
    Withdraw {
        /// Why, for the log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The charters this node holds.
    List,
    /// A body's charter: its offices with their hours and its services; or
    /// one service's page in the order of the municipal website model.
    Show {
        /// The body (node id; default: this node).
        body: Option<String>,
        /// Only this service, as its page.
        #[arg(long)]
        service: Option<String>,
        /// The charter as it was at the end of this day (YYYY-MM-DD) or at
        /// this instant (RFC 3339).
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Search the services of every charter held, in Italian (stemming,
    /// accents, typos, a typed prefix).
    Search {
        /// The citizen's words.
        query: Vec<String>,
        /// Only this body's services.
        #[arg(long)]
        body: Option<String>,
        /// Only services for this ISTAT territory (comune, province, region).
        #[arg(long)]
        territory: Option<String>,
        /// Only this category or those under it.
        #[arg(long)]
        category: Option<String>,
        /// At most this many hits (1..=50).
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// Everything about one service: where, when (open now?), what to
    /// bring, how much, who, how long, how to book.
    Explain {
        /// The body (node id).
        body: String,
        /// The service id.
        service: String,
        /// As seen at this instant (RFC 3339; default now).
        #[arg(long)]
        at: Option<String>,
    },
    /// Every version of a body's charter held here and what each changed.
    History {
        /// The body (default: this node).
        body: Option<String>,
    },
    /// Export a charter (JSON-LD, CPSV-AP_IT, Markdown, HTML, JSON).
    Export {
        /// The body (default: this node).
        body: Option<String>,
        /// The format.
        #[arg(long, value_enum, default_value = "jsonld")]
        format: ExportFormat,
        /// The base URL of identifiers in JSON-LD.
        #[arg(long, default_value = "")]
        base_url: String,
        /// As it was at this date or instant.
        #[arg(long)]
        as_of: Option<String>,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// The printable door sign of an office (SVG, A4): office, hours,
    /// services, responsible.
    Sign {
        /// The office id.
        office: String,
        /// The body (default: this node).
        #[arg(long)]
        body: Option<String>,
        /// Write here (default: <office>.svg).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

fn load_charter(
    file: Option<PathBuf>,
    offices: Option<PathBuf>,
    services: Option<PathBuf>,
    patron_day: &str,
) -> anyhow::Result<Charter> {
    let taxonomy = crate::taxonomy::builtin();
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let parsed = match (file, offices, services) {
        (Some(f), _, _) => {
            import::from_toml(&f.display().to_string(), &read(&f)?, "", Some(&taxonomy))
        }
        (None, Some(o), Some(s)) => import::from_csv(
            (&o.display().to_string(), &read(&o)?),
            (&s.display().to_string(), &read(&s)?),
            "",
            patron_day,
            Some(&taxonomy),
        ),
        _ => bail!("give a TOML file, or --offices and --services"),
    };
    parsed.map_err(|errors| {
        anyhow::anyhow!(
            "the charter has {} error(s); nothing was published:\n{errors}",
            errors.0.len()
        )
    })
}

fn summary_line(s: &CharterSummary) -> String {
    if s.retired {
        return format!(
            "{} ({}): version {}, withdrawn",
            s.body_name, s.body, s.version
        );
    }
    format!(
        "{} ({}): version {} of {}, {} offices, {} services{}",
        s.body_name,
        s.body,
        s.version,
        urpnet_proto::calendar::iso_rome(s.published_at_ms),
        s.offices,
        s.services,
        if s.unchanged {
            " (unchanged: nothing published)"
        } else {
            ""
        }
    )
}

fn charter_tables(c: &Charter) -> String {
    let mut t = urpnet_proto::cli::table();
    t.set_header(["office", "where", "hours"]);
    for o in &c.offices {
        t.add_row([
            format!("{}\n{}", o.id, o.name),
            [o.address.as_str(), &o.floor, &o.room]
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            export::week_lines(o).join("\n"),
        ]);
    }
    let mut s = urpnet_proto::cli::table();
    s.set_header(["service", "title", "where", "time", "cost"]);
    for sv in &c.services {
        s.add_row([
            sv.id.clone(),
            sv.title.clone(),
            sv.delivered
                .iter()
                .map(|d| {
                    if d.office_id.is_empty() {
                        d.channel.clone()
                    } else {
                        format!("{}:{}", d.channel, d.office_id)
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
            crate::charter::explain::time_words(sv),
            crate::charter::explain::cost_words(sv.cost.as_ref()),
        ]);
    }
    format!("{t}\n{s}")
}

/// A body's charter (current, or as of a date) and its summary.
async fn fetch(
    client: &mut CharterDesk,
    body: Option<String>,
    as_of: Option<String>,
) -> anyhow::Result<(CharterSummary, Charter)> {
    let r = client
        .get_charter(GetCharterRequest {
            body: body.unwrap_or_default(),
            as_of: as_of.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok((r.summary.unwrap_or_default(), r.charter.unwrap_or_default()))
}

/// Explain's answer, readable.
pub fn explain_text(e: &ExplainResponse) -> String {
    let s = e.service.clone().unwrap_or_default();
    let mut out = format!("{} — {}\n{}\n\n", s.title, e.body_name, s.summary);
    out.push_str("Dove e quando\n");
    for o in &e.offices {
        let office = o.office.clone().unwrap_or_default();
        out.push_str(&format!("  {} — {}\n", office.name, office.address));
        if !office.directions.is_empty() {
            out.push_str(&format!("    {}\n", office.directions));
        }
        out.push_str(&format!("    {}\n", o.status));
        for d in &o.week {
            let ranges = if d.ranges.is_empty() {
                "chiuso".to_string()
            } else {
                d.ranges
                    .iter()
                    .map(|r| format!("{}–{}", r.start, r.end))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let note = if d.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", d.note)
            };
            out.push_str(&format!(
                "    {} {}: {ranges}{note}\n",
                d.weekday,
                &d.date[8..]
            ));
        }
    }
    out.push_str("\nCosa portare\n");
    if s.documents.is_empty() {
        out.push_str("  nessun documento\n");
    }
    for d in &s.documents {
        out.push_str(&format!(
            "  - {}{}\n",
            d.name,
            if d.where_to_get.is_empty() {
                String::new()
            } else {
                format!(" ({})", d.where_to_get)
            }
        ));
    }
    out.push_str(&format!(
        "\nQuanto costa: {}\nQuanto tempo: {}\nResponsabile: {}\n",
        e.cost, e.time, e.responsible
    ));
    if !e.booking.is_empty() {
        out.push_str("Su appuntamento: sì\n");
    }
    out
}

/// Runs one charter command.
///
/// # Errors
/// Files that do not parse, the node's refusals.
pub async fn run(
    mut client: CharterDesk,
    command: CharterCommand,
    json: bool,
) -> anyhow::Result<()> {
    let out = |name: &str, m: &dyn Fn() -> serde_json::Value| {
        println!(
            "{}",
            if json {
                m().to_string()
            } else {
                name.to_string()
            }
        )
    };
    match command {
        CharterCommand::Import {
            file,
            offices,
            services,
            patron_day,
            dry_run,
        } => {
            let charter = load_charter(file, offices, services, &patron_day)?;
            if dry_run {
                println!("{}", charter_tables(&charter));
                println!(
                    "valid: {} offices, {} services (not published: --dry-run)",
                    charter.offices.len(),
                    charter.services.len()
                );
                return Ok(());
            }
            let r = client
                .import_charter(ImportCharterRequest {
                    charter: Some(charter),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            out(&summary_line(&r), &|| {
                super::output::to_json("urpnet.v1.CharterSummary", &r)
            });
        }
        CharterCommand::Withdraw { reason } => {
            let r = client
                .withdraw_charter(WithdrawCharterRequest { reason })
                .await
                .map_err(status_error)?
                .into_inner();
            out(&summary_line(&r), &|| {
                super::output::to_json("urpnet.v1.CharterSummary", &r)
            });
        }
        CharterCommand::List => {
            let r = client
                .list_charters(ListChartersRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    super::output::to_json("urpnet.v1.ListChartersResponse", &r)
                );
            } else if r.charters.is_empty() {
                println!("no charters held");
            } else {
                let mut t = urpnet_proto::cli::table();
                t.set_header([
                    "body",
                    "name",
                    "version",
                    "published",
                    "offices",
                    "services",
                ]);
                for s in &r.charters {
                    t.add_row([
                        s.body.clone(),
                        s.body_name.clone(),
                        if s.retired {
                            format!("{} (withdrawn)", s.version)
                        } else {
                            s.version.to_string()
                        },
                        urpnet_proto::calendar::iso_rome(s.published_at_ms),
                        s.offices.to_string(),
                        s.services.to_string(),
                    ]);
                }
                println!("{t}");
            }
        }
        CharterCommand::Show {
            body,
            service,
            as_of,
        } => {
            let r = client
                .get_charter(GetCharterRequest {
                    body: body.unwrap_or_default(),
                    as_of: as_of.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let c = r.charter.clone().unwrap_or_default();
            match (service, json) {
                (Some(id), j) => {
                    let s = c
                        .services
                        .iter()
                        .find(|s| s.id == id)
                        .with_context(|| format!("no service `{id}` in this charter"))?;
                    if j {
                        println!("{}", super::output::to_json("urpnet.v1.CharterService", s));
                    } else {
                        println!("{}", export::service_markdown(&c, s));
                    }
                }
                (None, true) => println!(
                    "{}",
                    super::output::to_json("urpnet.v1.GetCharterResponse", &r)
                ),
                (None, false) => {
                    println!("{}\n", summary_line(&r.summary.unwrap_or_default()));
                    println!("{}", charter_tables(&c));
                }
            }
        }
        CharterCommand::Search {
            query,
            body,
            territory,
            category,
            limit,
        } => {
            let r = client
                .search_charter(SearchCharterRequest {
                    query: query.join(" "),
                    body: body.unwrap_or_default(),
                    territory: territory.unwrap_or_default(),
                    category: category.unwrap_or_default(),
                    limit,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    super::output::to_json("urpnet.v1.SearchCharterResponse", &r)
                );
            } else if r.hits.is_empty() {
                println!("no service matches");
            } else {
                let mut t = urpnet_proto::cli::table();
                t.set_header(["#", "body / service", "title", "score"]);
                for (i, h) in r.hits.iter().enumerate() {
                    t.add_row([
                        (i + 1).to_string(),
                        format!("{}\n{}", h.body_name, h.service),
                        format!(
                            "{}\n{}",
                            super::faq::terminal(&h.title_highlighted),
                            super::faq::terminal(&h.snippet.replace('\n', " "))
                        ),
                        format!("{:.1}", h.score),
                    ]);
                }
                println!("{t}");
            }
        }
        CharterCommand::Explain { body, service, at } => {
            let at_ms = match at {
                None => 0,
                Some(a) => a
                    .parse::<jiff::Timestamp>()
                    .with_context(|| format!("--at {a}: must be an RFC 3339 instant"))?
                    .as_millisecond()
                    .max(0) as u64,
            };
            let r = client
                .explain(ExplainRequest {
                    body,
                    service,
                    at_ms,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    super::output::to_json("urpnet.v1.ExplainResponse", &r)
                );
            } else {
                print!("{}", explain_text(&r));
            }
        }
        CharterCommand::History { body } => {
            let r = client
                .charter_history(CharterHistoryRequest {
                    body: body.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    super::output::to_json("urpnet.v1.CharterHistoryResponse", &r)
                );
            } else {
                let mut t = urpnet_proto::cli::table();
                t.set_header([
                    "version",
                    "published",
                    "services",
                    "added",
                    "removed",
                    "changed",
                ]);
                for v in &r.versions {
                    let s = v.summary.clone().unwrap_or_default();
                    t.add_row([
                        if s.retired {
                            format!("{} (withdrawn)", s.version)
                        } else {
                            s.version.to_string()
                        },
                        urpnet_proto::calendar::iso_rome(s.published_at_ms),
                        s.services.to_string(),
                        v.added.join("\n"),
                        v.removed.join("\n"),
                        v.changed.join("\n"),
                    ]);
                }
                println!("{t}");
            }
        }
        CharterCommand::Export {
            body,
            format,
            base_url,
            as_of,
            output,
        } => {
            let (s, c) = fetch(&mut client, body, as_of).await?;
            let text = match format {
                ExportFormat::Jsonld => {
                    serde_json::to_string_pretty(&export::jsonld(&c, &s.body_name, &base_url))?
                }
                ExportFormat::Cpsv => {
                    serde_json::to_string_pretty(&export::cpsv(&c, &s.body_name, &base_url))?
                }
                ExportFormat::Markdown => export::charter_markdown(&c, &s.body_name, s.version),
                ExportFormat::Html => export::charter_html(&c, &s.body_name, s.version, ""),
                ExportFormat::Json => super::output::to_json("urpnet.v1.Charter", &c).to_string(),
            };
            match output {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("written {}", path.display());
                }
                None => println!("{text}"),
            }
        }
        CharterCommand::Sign {
            office,
            body,
            output,
        } => {
            let (s, c) = fetch(&mut client, body, None).await?;
            let o =
                c.offices.iter().find(|o| o.id == office).with_context(|| {
                    format!("no office `{office}` in the charter of {}", s.body)
                })?;
            let today = jiff::Zoned::now()
                .with_time_zone(urpnet_proto::calendar::rome())
                .date()
                .to_string();
            let path = output.unwrap_or_else(|| PathBuf::from(format!("{office}.svg")));
            std::fs::write(&path, export::door_sign_svg(&c, o, &s.body_name, &today))
                .with_context(|| format!("writing {}", path.display()))?;
            out(
                &format!("door sign of {} written to {}", o.name, path.display()),
                &|| serde_json::json!({"office": o.id, "path": path.display().to_string()}),
            );
        }
    }
    Ok(())
}
