//! `urpnet-node faq ...`: the shared FAQ set on a running node (FaqDesk).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use sha2::Digest as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use urpnet_proto::v1::faq_desk_client::FaqDeskClient;
use urpnet_proto::v1::{
    FaqContent, FaqEntry, FaqLink, FaqStatusRequest, FaqVersion, GetFaqRequest,
    ProposeFaqChangeRequest, PublishFaqRequest, RetireFaqRequest, ReviseFaqRequest,
    SearchFaqRequest, SearchFaqResponse, SetFaqOverrideRequest, SuggestFaqRequest,
};

use super::{TokenInterceptor, status_error};
use crate::faq::sample;

/// A FaqDesk client with the operator's token.
pub type FaqDesk = FaqDeskClient<InterceptedService<Channel, TokenInterceptor>>;

/// FAQ commands.
#[derive(Debug, Subcommand)]
pub enum FaqCommand {
    /// Search the FAQ set in Italian (stemming, accents, typos). Quote a
    /// "phrase" to require it; -word excludes a word.
    Search {
        /// Words to look for (none: list the entries the filters match).
        query: Vec<String>,
        /// Only this category or those under it (e.g. anagrafe).
        #[arg(long)]
        category: Option<String>,
        /// Only entries applying to this ISTAT territory (comune, province
        /// or region code).
        #[arg(long)]
        territory: Option<String>,
        /// Only this language (it, en, de, ...).
        #[arg(long)]
        language: Option<String>,
        /// Only entries valid on this day, YYYY-MM-DD (default today; * for any).
        #[arg(long)]
        valid_on: Option<String>,
        /// At most this many hits.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Include retired entries.
        #[arg(long)]
        retired: bool,
    },
    /// The best answers for a ticket (id or reference) or a text.
    Suggest {
        /// The ticket to answer.
        #[arg(long, conflicts_with = "text")]
        ticket: Option<String>,
        /// Free text instead of a ticket.
        #[arg(long)]
        text: Option<String>,
        /// At most this many answers.
        #[arg(long, default_value_t = 5)]
        limit: u32,
    },
    /// One entry: its current version, the local override, the versions
    /// held here.
    Show {
        /// `<owner>/<entry_id>`.
        key: String,
    },
    /// Publish a new entry owned by this node (supervisors).
    Publish {
        /// An idempotency key: publishing again with the same key returns
        /// the entry made the first time.
        #[arg(long)]
        request_id: Option<String>,
        /// The entry.
        #[command(flatten)]
        content: ContentArgs,
    },
    /// Publish a new version of an entry this node owns; fields not given
    /// keep their current value (supervisors).
    Revise {
        /// `<owner>/<entry_id>`.
        key: String,
        /// Refuse if the entry is no longer at this version.
        #[arg(long)]
        base_version: Option<u64>,
        /// The changes.
        #[command(flatten)]
        content: ContentArgs,
    },
    /// Retire an entry this node owns (supervisors).
    Retire {
        /// `<owner>/<entry_id>`.
        key: String,
    },
    /// Propose a change to another body's entry: opens a ticket and offers
    /// it to the owner.
    Propose {
        /// `<owner>/<entry_id>`.
        key: String,
        /// What should change and why.
        #[arg(long)]
        text: String,
        /// ISTAT code of the comune concerned (default: this node's comune).
        #[arg(long)]
        istat_code: Option<String>,
    },
    /// Show another text for an entry at this node only, or remove it with
    /// --clear; the shared entry is untouched (supervisors).
    Override {
        /// `<owner>/<entry_id>`.
        key: String,
        /// Why (shown to operators).
        #[arg(long, required_unless_present = "clear")]
        reason: Option<String>,
        /// Remove the override.
        #[arg(long)]
        clear: bool,
        /// The local changes (fields not given keep the shared value).
        #[command(flatten)]
        content: ContentArgs,
    },
    /// Publish every entry of a TOML collection (see examples/faq-sample.toml).
    /// Importing the same file again publishes nothing twice.
    Import {
        /// The collection.
        file: PathBuf,
        /// Only entries with this scope (e.g. comune, regione).
        #[arg(long)]
        scope: Option<String>,
        /// Territory for entries that name none (ISTAT code).
        #[arg(long)]
        territory: Option<String>,
    },
    /// What this node holds per owner body, and anti-entropy rounds.
    Status,
}

/// An entry's fields on the command line.
#[derive(Debug, Args, Clone, Default)]
pub struct ContentArgs {
    /// The question, one line.
    #[arg(long)]
    pub question: Option<String>,
    /// The answer (Markdown).
    #[arg(long, conflicts_with = "answer_file")]
    pub answer: Option<String>,
    /// Read the answer from a file.
    #[arg(long)]
    pub answer_file: Option<PathBuf>,
    /// Language (default it).
    #[arg(long)]
    pub language: Option<String>,
    /// A category of the taxonomy (repeat for more).
    #[arg(long = "category")]
    pub categories: Vec<String>,
    /// An ISTAT territory it applies to (repeat; none: everywhere).
    #[arg(long = "territory")]
    pub territory: Vec<String>,
    /// First valid day, YYYY-MM-DD.
    #[arg(long)]
    pub valid_from: Option<String>,
    /// Last valid day, YYYY-MM-DD.
    #[arg(long)]
    pub valid_until: Option<String>,
    /// A tag (repeat for more).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// A link, "title=https://..." (repeat for more).
    #[arg(long = "link")]
    pub links: Vec<String>,
}

impl ContentArgs {
    /// The given fields over `base`.
    fn over(&self, mut base: FaqContent) -> anyhow::Result<FaqContent> {
        if let Some(q) = &self.question {
            base.question = q.clone();
        }
        if let Some(a) = &self.answer {
            base.answer = a.clone();
        }
        if let Some(path) = &self.answer_file {
            base.answer = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_string();
        }
        if let Some(l) = &self.language {
            base.language = l.clone();
        }
        if base.language.is_empty() {
            base.language = "it".into();
        }
        if !self.categories.is_empty() {
            base.categories = self.categories.clone();
        }
        if !self.territory.is_empty() {
            base.territory = self.territory.clone();
        }
        if let Some(d) = &self.valid_from {
            base.valid_from = d.clone();
        }
        if let Some(d) = &self.valid_until {
            base.valid_until = d.clone();
        }
        if !self.tags.is_empty() {
            base.tags = self.tags.clone();
        }
        if !self.links.is_empty() {
            base.links = self
                .links
                .iter()
                .map(|l| {
                    let (title, url) = l
                        .split_once('=')
                        .with_context(|| format!("--link {l:?}: must be title=url"))?;
                    Ok(FaqLink {
                        title: title.trim().to_string(),
                        url: url.trim().to_string(),
                    })
                })
                .collect::<anyhow::Result<_>>()?;
        }
        Ok(base)
    }
}

async fn current(faq: &mut FaqDesk, key: &str) -> anyhow::Result<FaqEntry> {
    faq.get_faq(GetFaqRequest {
        key: key.to_string(),
    })
    .await
    .map_err(status_error)?
    .into_inner()
    .entry
    .context("the node returned no entry")
}

/// Runs a FAQ command.
///
/// # Errors
/// The node's refusal, or a bad file, as a message for people.
pub async fn run(mut faq: FaqDesk, cmd: FaqCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        FaqCommand::Search {
            query,
            category,
            territory,
            language,
            valid_on,
            limit,
            retired,
        } => {
            let r = faq
                .search_faq(SearchFaqRequest {
                    query: query.join(" "),
                    language: language.unwrap_or_default(),
                    category: category.unwrap_or_default(),
                    territory: territory.unwrap_or_default(),
                    valid_on: valid_on.unwrap_or_default(),
                    limit,
                    include_retired: retired,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_hits(&r, json);
        }
        FaqCommand::Suggest {
            ticket,
            text,
            limit,
        } => {
            if ticket.is_none() && text.is_none() {
                bail!("give --ticket or --text");
            }
            let r = faq
                .suggest_faq(SuggestFaqRequest {
                    ticket: ticket.unwrap_or_default(),
                    text: text.unwrap_or_default(),
                    limit,
                    territory: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_hits(&r, json);
            if !json && !r.services.is_empty() {
                let mut t = urpnet_proto::cli::table();
                t.set_header(["#", "charter: body / service", "title"]);
                for (i, h) in r.services.iter().enumerate() {
                    t.add_row([
                        (i + 1).to_string(),
                        format!("{}\n{}", h.body_name, h.service),
                        format!(
                            "{}\n{}",
                            terminal(&h.title_highlighted),
                            terminal(&h.snippet.replace('\n', " "))
                        ),
                    ]);
                }
                println!(
                    "{t}\n(urpnet-node charter explain <body> <service> for where, when and what to bring)"
                );
            }
        }
        FaqCommand::Show { key } => {
            let r = faq
                .get_faq(GetFaqRequest { key })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!("{}", super::output::to_json("urpnet.v1.GetFaqResponse", &r));
            } else {
                println!("{}", entry_detail(r.entry.as_ref()));
                println!("{}", history_table(&r.history));
            }
        }
        FaqCommand::Publish {
            request_id,
            content,
        } => {
            let content = content.over(FaqContent::default())?;
            let r = faq
                .publish_faq(PublishFaqRequest {
                    content: Some(content),
                    request_id: request_id.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_entry(r.entry.as_ref(), json, "published");
        }
        FaqCommand::Revise {
            key,
            base_version,
            content,
        } => {
            let now = current(&mut faq, &key).await?;
            let base = now
                .current
                .as_ref()
                .and_then(|v| v.content.clone())
                .unwrap_or_default();
            let r = faq
                .revise_faq(ReviseFaqRequest {
                    key,
                    base_version: base_version
                        .unwrap_or_else(|| now.current.as_ref().map_or(0, |v| v.version)),
                    content: Some(content.over(base)?),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_entry(r.entry.as_ref(), json, "revised");
        }
        FaqCommand::Retire { key } => {
            let r = faq
                .retire_faq(RetireFaqRequest { key })
                .await
                .map_err(status_error)?
                .into_inner();
            print_entry(r.entry.as_ref(), json, "retired");
        }
        FaqCommand::Propose {
            key,
            text,
            istat_code,
        } => {
            let r = faq
                .propose_faq_change(ProposeFaqChangeRequest {
                    key: key.clone(),
                    proposal: text,
                    istat_code: istat_code.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    super::output::to_json("urpnet.v1.ProposeFaqChangeResponse", &r)
                );
            } else {
                println!(
                    "proposal for {key} opened as ticket {} ({}) and offered to {}",
                    r.reference,
                    r.ticket_id,
                    key.split('/').next().unwrap_or_default()
                );
            }
        }
        FaqCommand::Override {
            key,
            reason,
            clear,
            content,
        } => {
            let content = if clear {
                None
            } else {
                let now = current(&mut faq, &key).await?;
                let base = now
                    .local_override
                    .and_then(|o| o.content)
                    .or_else(|| now.current.and_then(|v| v.content))
                    .unwrap_or_default();
                Some(content.over(base)?)
            };
            let r = faq
                .set_faq_override(SetFaqOverrideRequest {
                    key,
                    content,
                    reason: reason.unwrap_or_default(),
                    clear,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_entry(
                r.entry.as_ref(),
                json,
                if clear {
                    "override removed"
                } else {
                    "override set"
                },
            );
        }
        FaqCommand::Import {
            file,
            scope,
            territory,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let entries: Vec<_> = sample::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
                .into_iter()
                .filter(|e| scope.as_ref().is_none_or(|s| *s == e.scope))
                .collect();
            let bar = indicatif::ProgressBar::new(entries.len() as u64);
            if json {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .expect("a valid template"),
            );
            let mut published = Vec::new();
            let mut failed = 0;
            for mut e in entries {
                if e.content.territory.is_empty()
                    && let Some(t) = &territory
                {
                    e.content.territory = vec![t.clone()];
                }
                bar.set_message(e.content.question.chars().take(40).collect::<String>());
                // One key per question: a second import of the file
                // returns the entries the first one made.
                let request_id = format!(
                    "import-{}",
                    &hex::encode(sha2::Sha256::digest(e.content.question.as_bytes()))[..32]
                );
                match faq
                    .publish_faq(PublishFaqRequest {
                        content: Some(e.content.clone()),
                        request_id,
                    })
                    .await
                {
                    Ok(r) => published.push(r.into_inner().entry.unwrap_or_default()),
                    Err(status) => {
                        failed += 1;
                        bar.println(format!(
                            "refused: {}: {}",
                            e.content.question,
                            status.message()
                        ));
                    }
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
            if json {
                let all: Vec<_> = published
                    .iter()
                    .map(|e| super::output::to_json("urpnet.v1.FaqEntry", e))
                    .collect();
                println!("{}", serde_json::Value::Array(all));
            } else {
                println!("published {} entries, {failed} refused", published.len());
            }
            if failed > 0 {
                bail!("{failed} entries were refused");
            }
        }
        FaqCommand::Status => {
            let r = faq
                .faq_status(FaqStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    super::output::to_json("urpnet.v1.FaqStatusResponse", &r)
                );
            } else {
                let mut t = urpnet_proto::cli::table();
                t.set_header(["owner", "entries", "retired", "highest seq"]);
                for o in &r.origins {
                    t.add_row([
                        o.origin.clone(),
                        o.entries.to_string(),
                        o.retired.to_string(),
                        o.max_seq.to_string(),
                    ]);
                }
                println!("{t}");
                println!(
                    "{} entries in the search index, {} local overrides; {} anti-entropy rounds, last at {}",
                    r.indexed,
                    r.overrides,
                    r.rounds,
                    urpnet_proto::cli::time_ms(r.last_round_ms)
                );
            }
        }
    }
    Ok(())
}

/// `**bold**` as terminal bold when printing to a terminal; as is (it is
/// Markdown) into a pipe or a file.
pub(crate) fn terminal(text: &str) -> String {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        return text.to_string();
    }
    let mut out = String::new();
    for (i, part) in text.split("**").enumerate() {
        if i % 2 == 1 {
            out.push_str("\x1b[1m");
            out.push_str(part);
            out.push_str("\x1b[0m");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn print_hits(r: &SearchFaqResponse, json: bool) {
    if json {
        println!(
            "{}",
            super::output::to_json("urpnet.v1.SearchFaqResponse", r)
        );
    } else {
        println!("{}", hits_table(r));
    }
}

/// Search hits as a table, matched words in bold.
pub fn hits_table(r: &SearchFaqResponse) -> String {
    if r.hits.is_empty() {
        return "no FAQ matches".into();
    }
    let mut t = urpnet_proto::cli::table();
    t.set_header(["#", "entry", "question / answer", "score"]);
    for (i, h) in r.hits.iter().enumerate() {
        let mut question = terminal(&h.question_highlighted);
        if h.overridden {
            question.push_str(" [local]");
        }
        if h.retired {
            question.push_str(" [retired]");
        }
        t.add_row([
            (i + 1).to_string(),
            format!("{}\nv{}", h.key, h.version),
            format!("{question}\n{}", terminal(&h.snippet.replace('\n', " "))),
            if h.score > 0.0 {
                format!("{:.1}", h.score)
            } else {
                "-".into()
            },
        ]);
    }
    format!("{t}\n{} of {} matching entries", r.hits.len(), r.total)
}

fn entry_detail(entry: Option<&FaqEntry>) -> String {
    let Some(entry) = entry else {
        return "no entry".into();
    };
    let v = entry.current.clone().unwrap_or_default();
    let mut t = urpnet_proto::cli::table();
    let c = v.content.clone().unwrap_or_default();
    let at = v.published_at.map_or(0, |h| h.wall_ms);
    t.add_row(["entry", entry.key.as_str()]);
    t.add_row(["version", &format!("{} (sequence {})", v.version, v.seq)]);
    t.add_row(["published", &urpnet_proto::cli::time_ms(at)]);
    if v.retired {
        t.add_row(["status", "retired"]);
    } else {
        t.add_row(["question", &c.question]);
        t.add_row(["answer", &c.answer]);
        t.add_row(["language", &c.language]);
        t.add_row(["categories", &c.categories.join(", ")]);
        let territory = if c.territory.is_empty() {
            "everywhere".to_string()
        } else {
            c.territory.join(", ")
        };
        t.add_row(["territory", &territory]);
        let valid = format!(
            "{} – {}",
            if c.valid_from.is_empty() {
                "…"
            } else {
                &c.valid_from
            },
            if c.valid_until.is_empty() {
                "…"
            } else {
                &c.valid_until
            }
        );
        t.add_row(["valid", &valid]);
        if !c.tags.is_empty() {
            t.add_row(["tags", &c.tags.join(", ")]);
        }
        for l in &c.links {
            t.add_row(["link", &format!("{} <{}>", l.title, l.url)]);
        }
    }
    if let Some(o) = &entry.local_override {
        let oc = o.content.clone().unwrap_or_default();
        t.add_row([
            "local override",
            &format!(
                "{} — by {} at {}: {}\n{}",
                o.reason,
                o.set_by,
                urpnet_proto::cli::time_ms(o.set_at_ms),
                oc.question,
                oc.answer
            ),
        ]);
    }
    t.to_string()
}

fn history_table(history: &[FaqVersion]) -> String {
    let mut t = urpnet_proto::cli::table();
    t.set_header(["version", "seq", "published", "question"]);
    for v in history {
        t.add_row([
            v.version.to_string(),
            v.seq.to_string(),
            urpnet_proto::cli::time_ms(v.published_at.map_or(0, |h| h.wall_ms)),
            if v.retired {
                "(retired)".to_string()
            } else {
                v.content
                    .as_ref()
                    .map(|c| c.question.clone())
                    .unwrap_or_default()
            },
        ]);
    }
    format!("versions held here:\n{t}")
}

fn print_entry(entry: Option<&FaqEntry>, json: bool, what: &str) {
    match entry {
        Some(e) if json => println!("{}", super::output::to_json("urpnet.v1.FaqEntry", e)),
        Some(e) => {
            let v = e.current.as_ref().map_or(0, |v| v.version);
            println!("{what}: {} version {v}", e.key);
        }
        None => println!("{what}"),
    }
}
