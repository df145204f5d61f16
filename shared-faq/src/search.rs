//! The Italian full-text index of the FAQ set (tantivy).
//!
//! Question, answer and tags are analysed the same way: words split on
//! anything that is not a letter or digit, lowercased, Italian stop words
//! dropped, accents folded ("città" and "citta" are one word) and stemmed
//! with the Snowball Italian stemmer ("certificati" and "certificato" are
//! one word). A query word unknown to the index is matched with one typo
//! (two for long words); the last word, while the operator is still typing
//! it, also as a prefix. Filters (language, category, territory, validity,
//! retired) restrict without scoring; hits are ranked by BM25 with the
//! question weighing most.
//!
//! The index is a cache of the store: each commit carries a marker (the
//! set's root hash), and a node rebuilds the index when the marker differs
//! from its store, when the index is missing, or when it cannot be opened.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, PhraseQuery, Query, RangeQuery,
    TermQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value as _,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Searcher, TantivyDocument,
    Term,
};
use urpnet_proto::territory::Territory;
use urpnet_proto::v1::{FaqContent, FaqVersion};
use urpnet_proto::validate::Violations;

/// Name of the analyzer registered on the index.
const ANALYZER: &str = "it_folded";
/// Bump when the schema or the analysis changes: indexes with another
/// version are rebuilt.
const SCHEMA_VERSION: &str = "faq-v1";
/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 500;
/// Longest text given to suggest, in characters.
pub const MAX_SUGGEST_CHARS: usize = 20_000;
/// Most words of a text used by suggest (the rarest in the index).
const SUGGEST_TERMS: usize = 32;
/// Most words of a search query used.
const QUERY_TERMS: usize = 16;
/// Most hits per call.
pub const MAX_LIMIT: usize = 100;
/// Writer memory budget (tantivy's minimum is 15 MB).
const WRITER_BUDGET: usize = 20_000_000;

/// The Italian analyzer: split, lowercase, drop stop words, fold accents, stem.
/// Built once (the stop word set is a few hundred words); clones are cheap.
pub fn analyzer() -> TextAnalyzer {
    static ANALYZER: std::sync::OnceLock<TextAnalyzer> = std::sync::OnceLock::new();
    ANALYZER.get_or_init(build_analyzer).clone()
}

fn build_analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::Italian) {
        Some(stop) => builder
            .filter(stop)
            .filter(AsciiFoldingFilter)
            .filter(Stemmer::new(Language::Italian))
            .build(),
        None => builder
            .filter(AsciiFoldingFilter)
            .filter(Stemmer::new(Language::Italian))
            .build(),
    }
}

/// The words of `text` split, lowercased and accent-folded but not
/// stemmed, stop words kept: cheap to compare with a query's words.
fn light_terms(text: &str) -> Vec<String> {
    static LIGHT: std::sync::OnceLock<TextAnalyzer> = std::sync::OnceLock::new();
    let mut analyzer = LIGHT
        .get_or_init(|| {
            TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(40))
                .filter(LowerCaser)
                .filter(AsciiFoldingFilter)
                .build()
        })
        .clone();
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// The analysed terms of `text`, in order, repeated as they occur.
pub fn terms(text: &str) -> Vec<String> {
    positioned_terms(text).into_iter().map(|(_, t)| t).collect()
}

/// The analysed terms of `text` with their positions (stop words leave
/// gaps, as they do in the index).
fn positioned_terms(text: &str) -> Vec<(usize, String)> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        let token = stream.token();
        out.push((token.position, token.text.clone()));
    }
    out
}

/// One entry as indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// `<owner>/<entry_id>`.
    pub key: String,
    /// The owner.
    pub owner: String,
    /// The version.
    pub version: u64,
    /// A tombstone.
    pub retired: bool,
    /// The question.
    pub question: String,
    /// The answer (Markdown).
    pub answer: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Language.
    pub language: String,
    /// Categories.
    pub categories: Vec<String>,
    /// Territory codes (empty: everywhere).
    pub territory: Vec<String>,
    /// First valid day (days since the epoch).
    pub valid_from: Option<i64>,
    /// Last valid day.
    pub valid_until: Option<i64>,
    /// Publication time, ms.
    pub published_ms: u64,
    /// The content is a local override.
    pub overridden: bool,
}

impl Doc {
    /// The document of a version, with this node's override if any.
    pub fn new(version: &FaqVersion, override_content: Option<&FaqContent>) -> Self {
        let shared = version.content.clone().unwrap_or_default();
        let content = override_content.unwrap_or(&shared);
        let day = |s: &str| {
            (!s.is_empty())
                .then(|| crate::model::parse_day(s))
                .flatten()
        };
        Self {
            key: crate::Key::of(version).to_string(),
            owner: version.owner.clone(),
            version: version.version,
            retired: version.retired,
            question: content.question.clone(),
            answer: content.answer.clone(),
            tags: content.tags.clone(),
            language: content.language.clone(),
            categories: content.categories.clone(),
            territory: content.territory.clone(),
            valid_from: day(&content.valid_from),
            valid_until: day(&content.valid_until),
            published_ms: version.published_at.map_or(0, |h| h.wall_ms),
            overridden: override_content.is_some(),
        }
    }
}

/// A search.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// The words (see `SearchFaqRequest.query`), or a ticket's text when
    /// `suggest`.
    pub text: String,
    /// Only this language.
    pub language: Option<String>,
    /// Only this category or those under it.
    pub category: Option<String>,
    /// Only entries applying to this ISTAT territory.
    pub territory: Option<String>,
    /// Only entries valid on this day (days since the epoch).
    pub valid_on: Option<i64>,
    /// At most this many hits.
    pub limit: usize,
    /// Include retired entries.
    pub include_retired: bool,
    /// `text` is a ticket's text to find answers for, not typed words.
    pub suggest: bool,
    /// Only this owner's entries.
    pub owner: Option<String>,
}

/// One hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// `<owner>/<entry_id>`.
    pub key: String,
    /// BM25 score.
    pub score: f32,
    /// The question.
    pub question: String,
    /// The question with matched words in `**bold**`.
    pub question_highlighted: String,
    /// A fragment of the answer with matched words in `**bold**`.
    pub snippet: String,
    /// The owner.
    pub owner: String,
    /// The version.
    pub version: u64,
    /// Categories.
    pub categories: Vec<String>,
    /// A local override.
    pub overridden: bool,
    /// Retired.
    pub retired: bool,
}

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    /// Best first.
    pub hits: Vec<Hit>,
    /// Matches in all.
    pub total: usize,
}

/// Why a search or an update failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query broke a rule.
    #[error("{0}")]
    Invalid(Violations),
    /// The engine failed.
    #[error("search index: {0}")]
    Engine(#[from] tantivy::TantivyError),
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    key: Field,
    owner: Field,
    version: Field,
    retired: Field,
    question: Field,
    answer: Field,
    tags: Field,
    all: Field,
    language: Field,
    category: Field,
    territory: Field,
    valid_from: Field,
    valid_until: Field,
    published_ms: Field,
    overridden: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = |stored: bool| {
        let o = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        if stored { o.set_stored() } else { o }
    };
    let fields = Fields {
        key: b.add_text_field("key", STRING | STORED),
        owner: b.add_text_field("owner", STRING | STORED),
        version: b.add_u64_field("version", STORED),
        retired: b.add_u64_field("retired", INDEXED | STORED),
        question: b.add_text_field("question", text(true)),
        answer: b.add_text_field("answer", text(true)),
        tags: b.add_text_field("tags", text(true)),
        all: b.add_text_field("all", text(false)),
        language: b.add_text_field("language", STRING),
        category: b.add_text_field("category", STRING | STORED),
        territory: b.add_text_field("territory", STRING),
        valid_from: b.add_i64_field("valid_from", INDEXED | FAST),
        valid_until: b.add_i64_field("valid_until", INDEXED | FAST),
        published_ms: b.add_u64_field("published_ms", FAST),
        overridden: b.add_u64_field("overridden", STORED),
    };
    (b.build(), fields)
}

/// The search index.
pub struct FaqIndex {
    index: Index,
    writer: Mutex<IndexWriter<TantivyDocument>>,
    reader: IndexReader,
    f: Fields,
}

impl std::fmt::Debug for FaqIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaqIndex")
            .field("docs", &self.len())
            .finish_non_exhaustive()
    }
}

impl FaqIndex {
    /// Opens the index in `dir`, creating it if missing. An index that
    /// cannot be opened, or was written with another schema, is deleted and
    /// created again empty (its marker then says it must be rebuilt).
    ///
    /// # Errors
    /// When the directory cannot be written.
    pub fn open(dir: &Path) -> Result<Self, SearchError> {
        let (schema, fields) = schema();
        std::fs::create_dir_all(dir).map_err(|e| {
            tantivy::TantivyError::from(
                tantivy::directory::error::OpenDirectoryError::wrap_io_error(e, dir.to_path_buf()),
            )
        })?;
        let index = match Index::open_in_dir(dir) {
            Ok(index) if index.schema() == schema => index,
            Ok(_) | Err(_)
                if std::fs::read_dir(dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false) =>
            {
                tracing::warn!(dir = %dir.display(), "FAQ index unreadable or of another schema: recreating it");
                std::fs::remove_dir_all(dir).ok();
                std::fs::create_dir_all(dir).ok();
                Index::create_in_dir(dir, schema)?
            }
            _ => Index::create_in_dir(dir, schema)?,
        };
        Self::with(index, fields)
    }

    /// An index in memory (tests, benchmarks).
    pub fn in_ram() -> Self {
        let (schema, fields) = schema();
        Self::with(Index::create_in_ram(schema), fields).expect("an index in memory opens")
    }

    fn with(index: Index, f: Fields) -> Result<Self, SearchError> {
        index.tokenizers().register(ANALYZER, analyzer());
        // The directory's writer lock may still be held for a moment by the
        // node that ran here before (a restart in the same process, whose
        // last connections are closing): wait for it, boundedly.
        let started = std::time::Instant::now();
        let writer = loop {
            match index.writer_with_num_threads(1, WRITER_BUDGET) {
                Err(tantivy::TantivyError::LockFailure(
                    tantivy::directory::error::LockError::LockBusy,
                    _,
                )) if started.elapsed() < std::time::Duration::from_secs(20) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            writer: Mutex::new(writer),
            reader,
            f,
        })
    }

    /// The marker of the last commit (`None`: never committed, or by
    /// another schema version).
    pub fn marker(&self) -> Option<String> {
        let payload = self.index.load_metas().ok()?.payload?;
        payload
            .strip_prefix(SCHEMA_VERSION)
            .and_then(|m| m.strip_prefix(':'))
            .map(str::to_string)
    }

    /// Documents in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn document(&self, doc: &Doc) -> TantivyDocument {
        let f = &self.f;
        let mut d = TantivyDocument::default();
        d.add_text(f.key, &doc.key);
        d.add_text(f.owner, &doc.owner);
        d.add_u64(f.version, doc.version);
        d.add_u64(f.retired, u64::from(doc.retired));
        d.add_text(f.question, &doc.question);
        d.add_text(f.answer, &doc.answer);
        for tag in &doc.tags {
            d.add_text(f.tags, tag);
        }
        d.add_text(
            f.all,
            format!("{}\n{}\n{}", doc.question, doc.answer, doc.tags.join("\n")),
        );
        d.add_text(f.language, &doc.language);
        let mut paths = BTreeSet::new();
        for c in &doc.categories {
            d.add_text(f.category, c);
            let mut prefix = String::new();
            for part in c.split('.') {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(part);
                paths.insert(prefix.clone());
            }
        }
        // Category prefixes are indexed (not stored) as extra terms of the
        // same field, so "anagrafe" finds "anagrafe.cie".
        for p in paths {
            if !doc.categories.contains(&p) {
                d.add_text(f.category, format!("\u{1}{p}"));
            }
        }
        if doc.territory.is_empty() {
            d.add_text(f.territory, "*");
        }
        for t in &doc.territory {
            d.add_text(f.territory, t);
        }
        d.add_i64(f.valid_from, doc.valid_from.unwrap_or(i64::MIN));
        d.add_i64(f.valid_until, doc.valid_until.unwrap_or(i64::MAX));
        d.add_u64(f.published_ms, doc.published_ms);
        d.add_u64(f.overridden, u64::from(doc.overridden));
        d
    }

    /// Replaces the documents of `upserts` (by key), deletes `removes`, and
    /// commits with `marker`; searches see the change when this returns.
    ///
    /// # Errors
    /// Engine failures.
    pub fn apply(
        &self,
        upserts: &[Doc],
        removes: &[String],
        marker: &str,
    ) -> Result<(), SearchError> {
        let mut writer = self.writer.lock().expect("index writer lock");
        for doc in upserts {
            writer.delete_term(Term::from_field_text(self.f.key, &doc.key));
            writer.add_document(self.document(doc))?;
        }
        for key in removes {
            writer.delete_term(Term::from_field_text(self.f.key, key));
        }
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&format!("{SCHEMA_VERSION}:{marker}"));
        commit.commit()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// Replaces the whole index with `docs`.
    ///
    /// # Errors
    /// Engine failures.
    pub fn rebuild(
        &self,
        docs: impl IntoIterator<Item = Doc>,
        marker: &str,
    ) -> Result<(), SearchError> {
        let mut writer = self.writer.lock().expect("index writer lock");
        writer.delete_all_documents()?;
        for doc in docs {
            writer.add_document(self.document(&doc))?;
        }
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&format!("{SCHEMA_VERSION}:{marker}"));
        commit.commit()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    fn filters(&self, q: &SearchQuery) -> Vec<(Occur, Box<dyn Query>)> {
        let f = &self.f;
        let term = |field: Field, text: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, text),
                IndexRecordOption::Basic,
            ))
        };
        let mut out: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(lang) = &q.language {
            out.push((Occur::Must, term(f.language, lang)));
        }
        if let Some(owner) = &q.owner {
            out.push((Occur::Must, term(f.owner, owner)));
        }
        if let Some(cat) = &q.category {
            out.push((
                Occur::Must,
                Box::new(BooleanQuery::union(vec![
                    term(f.category, cat),
                    term(f.category, &format!("\u{1}{cat}")),
                ])),
            ));
        }
        if let Some(code) = &q.territory {
            let mut codes = vec!["*".to_string(), code.clone()];
            let italy = Territory::italy();
            if let Some(c) = italy.comune(code) {
                codes.push(c.province_code.clone());
                codes.push(c.region_code.clone());
            } else if code.len() == 3
                && let Some(c) = italy.comuni().find(|c| c.province_code == *code)
            {
                codes.push(c.region_code.clone());
            }
            out.push((
                Occur::Must,
                Box::new(BooleanQuery::union(
                    codes.iter().map(|c| term(f.territory, c)).collect(),
                )),
            ));
        }
        if let Some(day) = q.valid_on {
            out.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    std::ops::Bound::Unbounded,
                    std::ops::Bound::Included(Term::from_field_i64(f.valid_from, day)),
                )),
            ));
            out.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    std::ops::Bound::Included(Term::from_field_i64(f.valid_until, day)),
                    std::ops::Bound::Unbounded,
                )),
            ));
        }
        if !q.include_retired {
            out.push((
                Occur::MustNot,
                Box::new(TermQuery::new(
                    Term::from_field_u64(f.retired, 1),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        // Filters restrict; they do not score.
        out.into_iter()
            .map(|(occur, q)| match occur {
                Occur::Must => (occur, Box::new(BoostQuery::new(q, 0.0)) as Box<dyn Query>),
                _ => (occur, q),
            })
            .collect()
    }

    /// The scored part of a query: one clause per word (any may match, more
    /// matches rank higher), phrases that must match, words that must not.
    fn text_query(
        &self,
        searcher: &Searcher,
        q: &SearchQuery,
        wanted: &mut Wanted,
    ) -> Option<Box<dyn Query>> {
        let f = &self.f;
        let parsed = parse(&q.text);
        let mut words: Vec<String> = Vec::new();
        // Each analysed word with the folded, unstemmed forms it came from
        // (to find what a typo matched without stemming whole answers).
        let mut raw: Vec<(String, String)> = Vec::new();
        if !q.suggest {
            for r in light_terms(&parsed.words.join(" ")) {
                if let Some(stem) = terms(&r).into_iter().next() {
                    raw.push((stem, r));
                }
            }
        }
        for w in terms(&parsed.words.join(" ")) {
            if !words.contains(&w) {
                words.push(w);
            }
        }
        let raw_of = |w: &String| -> Vec<String> {
            raw.iter()
                .filter(|(stem, _)| stem == w)
                .map(|(_, r)| r.clone())
                .collect()
        };
        if q.suggest {
            // A ticket's text: the rarest words the index knows say most.
            let mut known: Vec<(u64, String)> = words
                .into_iter()
                .filter_map(|w| {
                    let df = searcher.doc_freq(&Term::from_field_text(f.all, &w)).ok()?;
                    (df > 0).then_some((df, w))
                })
                .collect();
            known.sort();
            words = known
                .into_iter()
                .take(SUGGEST_TERMS)
                .map(|(_, w)| w)
                .collect();
        } else {
            words.truncate(QUERY_TERMS);
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut shoulds: Vec<Box<dyn Query>> = Vec::new();
        let last = words.len().saturating_sub(1);
        for (i, w) in words.iter().enumerate() {
            wanted.exact.push(w.clone());
            let exact = |field: Field, boost: f32| -> Box<dyn Query> {
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(
                        Term::from_field_text(field, w),
                        IndexRecordOption::WithFreqs,
                    )),
                    boost,
                ))
            };
            let mut alternatives = vec![
                exact(f.question, 3.0),
                exact(f.answer, 1.0),
                exact(f.tags, 2.0),
            ];
            if !q.suggest {
                let all = Term::from_field_text(f.all, w);
                let known = searcher.doc_freq(&all).unwrap_or(0) > 0;
                let chars = w.chars().count();
                if !known && chars >= 4 {
                    wanted.fuzzy.extend(raw_of(w));
                    // One edit (a transposition counts as one) catches most
                    // typing errors; two cost a far larger automaton.
                    let distance = 1;
                    alternatives.push(Box::new(BoostQuery::new(
                        Box::new(FuzzyTermQuery::new(all.clone(), distance, true)),
                        0.5,
                    )));
                }
                // A prefix of fewer than four letters matches too many
                // words to help, and costs the most.
                if i == last && parsed.typing && chars >= 4 {
                    wanted.prefix = raw_of(w).pop();
                    alternatives.push(Box::new(BoostQuery::new(
                        Box::new(FuzzyTermQuery::new_prefix(all, 0, true)),
                        0.5,
                    )));
                }
            }
            shoulds.push(Box::new(BooleanQuery::union(alternatives)));
        }
        if !shoulds.is_empty() {
            clauses.push((Occur::Must, Box::new(BooleanQuery::union(shoulds))));
        }
        for phrase in &parsed.phrases {
            let words = positioned_terms(phrase);
            wanted.exact.extend(words.iter().map(|(_, w)| w.clone()));
            let first = words.first().map_or(0, |(p, _)| *p);
            let q: Box<dyn Query> = match words.len() {
                0 => continue,
                1 => Box::new(TermQuery::new(
                    Term::from_field_text(f.all, &words[0].1),
                    IndexRecordOption::WithFreqs,
                )),
                _ => {
                    let phrase_in = |field: Field| -> Box<dyn Query> {
                        Box::new(PhraseQuery::new_with_offset(
                            words
                                .iter()
                                .map(|(p, w)| (p - first, Term::from_field_text(field, w)))
                                .collect(),
                        ))
                    };
                    Box::new(BooleanQuery::union(vec![
                        phrase_in(f.question),
                        phrase_in(f.answer),
                        phrase_in(f.tags),
                    ]))
                }
            };
            clauses.push((Occur::Must, q));
        }
        for word in terms(&parsed.excluded.join(" ")) {
            clauses.push((
                Occur::MustNot,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.all, &word),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if clauses.iter().all(|(o, _)| *o == Occur::MustNot) {
            if clauses.is_empty() {
                return None;
            }
            clauses.push((Occur::Must, Box::new(AllQuery)));
        }
        Some(Box::new(BooleanQuery::new(clauses)))
    }

    /// Searches.
    ///
    /// # Errors
    /// [`SearchError::Invalid`] for a query too long or a limit out of
    /// range; engine failures.
    pub fn search(&self, q: &SearchQuery) -> Result<Results, SearchError> {
        let mut v = Violations::new();
        let max = if q.suggest {
            MAX_SUGGEST_CHARS
        } else {
            MAX_QUERY_CHARS
        };
        v.length(if q.suggest { "text" } else { "query" }, &q.text, 0, max);
        v.check(
            (1..=MAX_LIMIT).contains(&q.limit),
            "limit",
            format!("must be 1..={MAX_LIMIT}"),
        );
        v.into_result().map_err(SearchError::Invalid)?;
        let searcher = self.reader.searcher();
        let mut wanted = Wanted::default();
        let text = self.text_query(&searcher, q, &mut wanted);
        if text.is_none() && q.suggest {
            // Nothing in the text the index knows: no suggestion.
            return Ok(Results::default());
        }
        let scored = text.is_some();
        let mut clauses = self.filters(q);
        clauses.push((Occur::Must, text.unwrap_or_else(|| Box::new(AllQuery))));
        let query = BooleanQuery::new(clauses);
        let (addresses, total): (Vec<(f32, DocAddress)>, usize) = if scored {
            searcher.search(
                &query,
                &(TopDocs::with_limit(q.limit).order_by_score(), Count),
            )?
        } else {
            let (docs, total) = searcher.search(
                &query,
                &(
                    TopDocs::with_limit(q.limit)
                        .order_by_fast_field::<u64>("published_ms", Order::Desc),
                    Count,
                ),
            )?;
            (docs.into_iter().map(|(_, a)| (0.0, a)).collect(), total)
        };
        let docs: Vec<(f32, TantivyDocument)> = addresses
            .into_iter()
            .map(|(score, address)| Ok((score, searcher.doc(address)?)))
            .collect::<Result<_, tantivy::TantivyError>>()?;
        let stored = |doc: &TantivyDocument, field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        // Highlight the query's words, and the words of these hits that a
        // misspelt or half-typed word matched.
        let mut highlight: BTreeMap<String, f32> =
            wanted.exact.iter().map(|w| (w.clone(), 1.0)).collect();
        if !wanted.fuzzy.is_empty() || wanted.prefix.is_some() {
            for (_, doc) in &docs {
                let text = format!(
                    "{}\n{}",
                    stored(doc, self.f.question),
                    stored(doc, self.f.answer)
                );
                for t in light_terms(&text) {
                    let near = wanted.fuzzy.iter().any(|f| one_edit(f, &t))
                        || wanted
                            .prefix
                            .as_ref()
                            .is_some_and(|p| t.starts_with(p.as_str()));
                    if near && let Some(stem) = terms(&t).into_iter().next() {
                        highlight.entry(stem).or_insert(0.5);
                    }
                }
            }
        }
        let answer_snippets =
            SnippetGenerator::new(highlight.clone(), analyzer(), self.f.answer, 220);
        let question_snippets = SnippetGenerator::new(highlight, analyzer(), self.f.question, 400);
        let mut hits = Vec::with_capacity(docs.len());
        for (score, doc) in docs {
            let text = |field: Field| stored(&doc, field);
            let number = |field: Field| doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
            let question = text(self.f.question);
            let answer = text(self.f.answer);
            let highlighted_question = bold_whole(&question_snippets.snippet(&question), &question);
            let snippet = answer_snippets.snippet(&answer);
            let snippet = if snippet.highlighted().is_empty() {
                lead(&answer, 220)
            } else {
                bold(&snippet, &answer)
            };
            hits.push(Hit {
                key: text(self.f.key),
                score,
                question,
                question_highlighted: highlighted_question,
                snippet,
                owner: text(self.f.owner),
                version: number(self.f.version),
                categories: doc
                    .get_all(self.f.category)
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                overridden: number(self.f.overridden) == 1,
                retired: number(self.f.retired) == 1,
            });
        }
        Ok(Results { hits, total })
    }
}

impl FaqIndex {
    /// The bare engine on the same index, the benchmark's baseline:
    /// tantivy's own query parser over question and answer (lenient, any
    /// word may match), the top `limit` by BM25, and nothing else — no typo
    /// tolerance, no filters, no stored fields read, no snippets. Returns
    /// the number of hits.
    ///
    /// # Errors
    /// Engine failures.
    pub fn bare_search(&self, text: &str, limit: usize) -> Result<usize, SearchError> {
        let parser = tantivy::query::QueryParser::for_index(
            &self.index,
            vec![self.f.question, self.f.answer],
        );
        let (query, _) = parser.parse_query_lenient(text);
        let searcher = self.reader.searcher();
        Ok(searcher
            .search(&query, &TopDocs::with_limit(limit).order_by_score())?
            .len())
    }
}

/// What a query looks for, to highlight it: its analysed words, and the
/// folded unstemmed forms of those matched with a typo and of the word
/// being typed.
#[derive(Debug, Default)]
struct Wanted {
    exact: Vec<String>,
    fuzzy: Vec<String>,
    prefix: Option<String>,
}

/// Whether `a` and `b` are at most one edit apart (insertion, deletion,
/// substitution, or a transposition of neighbours), as the typo-tolerant
/// query matched them.
fn one_edit(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a == b {
        return true;
    }
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    if long.len() - short.len() > 1 {
        return false;
    }
    let first = short
        .iter()
        .zip(long.iter())
        .take_while(|(x, y)| x == y)
        .count();
    if short.len() == long.len() {
        let (ra, rb) = (&a[first..], &b[first..]);
        ra[1..] == rb[1..]
            || (ra.len() >= 2 && ra[0] == rb[1] && ra[1] == rb[0] && ra[2..] == rb[2..])
    } else {
        short[first..] == long[first + 1..]
    }
}

/// The words of a query: `"phrases"`, `-excluded` words, the rest; and
/// whether the last word is still being typed (no space after it).
#[derive(Debug, Default, PartialEq)]
struct Parsed {
    words: Vec<String>,
    phrases: Vec<String>,
    excluded: Vec<String>,
    typing: bool,
}

fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut rest = text;
    while let Some(start) = rest.find('"') {
        let (before, after) = rest.split_at(start);
        p.words
            .extend(before.split_whitespace().map(str::to_string));
        let after = &after[1..];
        match after.find('"') {
            Some(end) => {
                p.phrases.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            None => {
                // An unclosed quote: its words are ordinary words.
                rest = after;
                break;
            }
        }
    }
    p.words.extend(rest.split_whitespace().map(str::to_string));
    let (excluded, words): (Vec<String>, Vec<String>) = p
        .words
        .into_iter()
        .partition(|w| w.starts_with('-') && w.len() > 1);
    p.excluded = excluded.into_iter().map(|w| w[1..].to_string()).collect();
    p.words = words;
    p.typing = !text.is_empty()
        && !text.ends_with(char::is_whitespace)
        && !text.ends_with('"')
        && p.words
            .last()
            .is_some_and(|w| rest.trim_end().ends_with(w.as_str()));
    p
}

/// Plain text of a Markdown fragment: emphasis and code marks dropped, so
/// the only `**` left in a snippet are the highlights.
fn plain(text: &str) -> String {
    text.chars().filter(|c| !matches!(c, '*' | '`')).collect()
}

/// The fragment with its highlighted ranges in `**bold**`, and `…` where
/// it cuts the text.
fn bold(snippet: &tantivy::snippet::Snippet, whole: &str) -> String {
    let fragment = snippet.fragment();
    if fragment.is_empty() {
        return plain(whole);
    }
    let range = snippet.fragment_range();
    let prefix = if range.start > 0 { "…" } else { "" };
    let suffix = if range.end < whole.len() { "…" } else { "" };
    format!(
        "{prefix}{}{suffix}",
        highlight(fragment, snippet.highlighted()).trim()
    )
}

/// The whole (short) text with the snippet's highlights in `**bold**`.
fn bold_whole(snippet: &tantivy::snippet::Snippet, whole: &str) -> String {
    let start = snippet.fragment_range().start;
    let ranges: Vec<std::ops::Range<usize>> = snippet
        .highlighted()
        .iter()
        .map(|r| r.start + start..r.end + start)
        .collect();
    highlight(whole, &ranges)
}

fn highlight(text: &str, ranges: &[std::ops::Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut at = 0;
    for r in ranges {
        if r.start < at
            || r.end > text.len()
            || !text.is_char_boundary(r.start)
            || !text.is_char_boundary(r.end)
        {
            continue;
        }
        out.push_str(&plain(&text[at..r.start]));
        out.push_str("**");
        out.push_str(&plain(&text[r.clone()]));
        out.push_str("**");
        at = r.end;
    }
    out.push_str(&plain(&text[at..]));
    out
}

/// The first `chars` characters of `text`, cut at a word.
fn lead(text: &str, chars: usize) -> String {
    let text = plain(text);
    if text.chars().count() <= chars {
        return text;
    }
    let cut: String = text.chars().take(chars).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(a, _)| a);
    format!("{cut}…")
}

/// Counts of documents per category in `docs` (for the benchmark's corpus
/// summary and tests).
pub fn category_counts<'a>(docs: impl IntoIterator<Item = &'a Doc>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for d in docs {
        for c in &d.categories {
            *out.entry(c.clone()).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(
        key: &str,
        question: &str,
        answer: &str,
        categories: &[&str],
        territory: &[&str],
    ) -> Doc {
        Doc {
            key: format!("c_c413/{key}"),
            owner: "c_c413".into(),
            version: 1,
            retired: false,
            question: question.into(),
            answer: answer.into(),
            tags: vec![],
            language: "it".into(),
            categories: categories.iter().map(|s| s.to_string()).collect(),
            territory: territory.iter().map(|s| s.to_string()).collect(),
            valid_from: None,
            valid_until: None,
            published_ms: 1,
            overridden: false,
        }
    }

    fn index() -> FaqIndex {
        let index = FaqIndex::in_ram();
        index
            .apply(
                &[
                    doc("A", "Come richiedo un certificato di residenza?", "Il certificato anagrafico si scarica da ANPR oppure allo sportello dell'Ufficio anagrafe della città.", &["anagrafe.certificati"], &[]),
                    doc("B", "Quando passa la raccolta differenziata?", "Il calendario della raccolta porta a porta è pubblicato sul sito del Comune.", &["ambiente.rifiuti"], &["066032"]),
                    doc("C", "Come prenoto una visita specialistica?", "Si prenota al CUP regionale con l'impegnativa del medico.", &["sanita.prenotazioni"], &["13"]),
                    doc("D", "Dove pago la TARI?", "La tassa sui rifiuti si paga con **PagoPA**.", &["tributi.tari"], &["066"]),
                ],
                &[],
                "m1",
            )
            .unwrap();
        index
    }

    fn keys(index: &FaqIndex, q: SearchQuery) -> Vec<String> {
        index
            .search(&SearchQuery { limit: 10, ..q })
            .unwrap()
            .hits
            .into_iter()
            .map(|h| h.key.trim_start_matches("c_c413/").to_string())
            .collect()
    }

    fn text(t: &str) -> SearchQuery {
        SearchQuery {
            text: t.into(),
            ..SearchQuery::default()
        }
    }

    #[test]
    fn stemming_accents_and_typos_find_the_entry() {
        let index = index();
        assert_eq!(keys(&index, text("certificati residenza ")), ["A"]);
        assert_eq!(keys(&index, text("citta ")), ["A"], "citta finds città");
        assert_eq!(keys(&index, text("certficato ")), ["A"], "one typo");
        assert_eq!(keys(&index, text("prenotazone visite ")), ["C"]);
        assert_eq!(keys(&index, text("raccol")), ["B"], "a word being typed");
    }

    #[test]
    fn filters_restrict_by_category_territory_and_validity() {
        let index = index();
        let q = |category: Option<&str>, territory: Option<&str>| SearchQuery {
            category: category.map(str::to_string),
            territory: territory.map(str::to_string),
            ..SearchQuery::default()
        };
        assert_eq!(keys(&index, q(Some("anagrafe"), None)), ["A"]);
        assert_eq!(keys(&index, q(Some("tributi.tari"), None)), ["D"]);
        assert!(keys(&index, q(Some("anagr"), None)).is_empty());
        // Celano (066032) is in the province of L'Aquila (066), Abruzzo (13).
        let mut celano = keys(&index, q(None, Some("066032")));
        celano.sort();
        assert_eq!(celano, ["A", "B", "C", "D"]);
        // Pescara (068028) is in Abruzzo but not in the province of L'Aquila.
        let mut pescara = keys(&index, q(None, Some("068028")));
        pescara.sort();
        assert_eq!(pescara, ["A", "C"]);
        let mut expired = doc("E", "Bonus vecchio", "Scaduto", &["tributi"], &[]);
        expired.valid_until = Some(100);
        index.apply(&[expired], &[], "m2").unwrap();
        let on = |day| {
            keys(
                &index,
                SearchQuery {
                    text: "bonus".into(),
                    valid_on: Some(day),
                    ..SearchQuery::default()
                },
            )
        };
        assert_eq!(on(50), ["E"]);
        assert!(on(101).is_empty());
        assert_eq!(index.marker().as_deref(), Some("m2"));
    }

    #[test]
    fn phrases_exclusions_and_odd_queries_never_panic() {
        let index = index();
        assert_eq!(keys(&index, text("\"raccolta porta a porta\"")), ["B"]);
        assert!(keys(&index, text("\"porta raccolta\"")).is_empty());
        assert_eq!(keys(&index, text("prenota -CUP")), Vec::<String>::new());
        for odd in [
            "",
            " ",
            "\"",
            "\"\"",
            "-",
            "--x",
            "AND OR NOT",
            "title:x^2 (a OR b)",
            "*",
            "???",
            "\u{0}\u{1}",
            "città\"unclosed",
            "ÀÈÌÒÙ",
            "🙂 emoji",
            "a b c d e f g h i j k l m n o p q r s",
        ] {
            let r = index.search(&SearchQuery {
                text: odd.into(),
                limit: 5,
                ..SearchQuery::default()
            });
            assert!(r.is_ok(), "{odd:?}: {r:?}");
        }
        let long = index.search(&SearchQuery {
            text: "parola ".repeat(100),
            limit: 5,
            ..SearchQuery::default()
        });
        match long {
            Err(SearchError::Invalid(v)) => assert_eq!(v.0[0].field, "query"),
            other => panic!("{other:?}"),
        }
        assert!(
            index
                .search(&SearchQuery {
                    text: "x".into(),
                    limit: 0,
                    ..SearchQuery::default()
                })
                .is_err()
        );
    }

    #[test]
    fn snippets_highlight_the_matched_words() {
        let index = index();
        let r = index
            .search(&SearchQuery {
                text: "tassa rifiuti".into(),
                limit: 3,
                ..SearchQuery::default()
            })
            .unwrap();
        assert_eq!(r.hits[0].key, "c_c413/D");
        assert!(
            r.hits[0].snippet.contains("**tassa**"),
            "{}",
            r.hits[0].snippet
        );
        assert!(
            r.hits[0].snippet.contains("**rifiuti**"),
            "{}",
            r.hits[0].snippet
        );
        // Markdown emphasis of the answer is not mistaken for a highlight.
        assert!(
            r.hits[0].snippet.contains(" PagoPA") && !r.hits[0].snippet.contains("**PagoPA"),
            "{}",
            r.hits[0].snippet
        );
        assert_eq!(r.hits[0].question_highlighted, "Dove pago la TARI?");
    }

    #[test]
    fn suggest_ranks_answers_for_a_long_ticket_text() {
        let index = index();
        let ticket =
            "Buongiorno, sono residente da poco e mi serve un certificato di residenza per \
                      il datore di lavoro. Posso averlo senza venire allo sportello? Grazie. "
                .repeat(20);
        let r = index
            .search(&SearchQuery {
                text: ticket,
                limit: 3,
                suggest: true,
                ..SearchQuery::default()
            })
            .unwrap();
        assert_eq!(r.hits[0].key, "c_c413/A");
    }

    #[test]
    fn retired_entries_are_hidden_unless_asked_for() {
        let index = index();
        let mut gone = doc(
            "A",
            "Come richiedo un certificato di residenza?",
            "…",
            &["anagrafe"],
            &[],
        );
        gone.retired = true;
        index.apply(&[gone], &[], "m3").unwrap();
        assert!(keys(&index, text("certificato ")).is_empty());
        assert_eq!(
            keys(
                &index,
                SearchQuery {
                    text: "certificato ".into(),
                    include_retired: true,
                    ..SearchQuery::default()
                }
            ),
            ["A"]
        );
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn an_index_still_held_by_the_node_before_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faq-index");
        let before = FaqIndex::open(&path).unwrap();
        // The node before lets go a moment later, as its last tasks end.
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(before);
        });
        let after = FaqIndex::open(&path).expect("opened once the lock is free");
        letting_go.join().unwrap();
        assert!(after.is_empty());
    }

    #[test]
    fn an_index_on_disk_keeps_its_marker_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faq-index");
        {
            let index = FaqIndex::open(&path).unwrap();
            assert_eq!(index.marker(), None);
            index
                .apply(
                    &[doc("A", "Domanda?", "Risposta", &["x"], &[])],
                    &[],
                    "root1",
                )
                .unwrap();
        }
        let index = FaqIndex::open(&path).unwrap();
        assert_eq!(index.marker().as_deref(), Some("root1"));
        assert_eq!(index.len(), 1);
        drop(index);
        std::fs::write(path.join("meta.json"), b"garbage").unwrap();
        let index = FaqIndex::open(&path).unwrap();
        assert_eq!(
            index.marker(),
            None,
            "an unreadable index is recreated and must be rebuilt"
        );
    }

    #[test]
    fn one_edit_is_one_insertion_deletion_substitution_or_swap() {
        for (a, b) in [
            ("residenz", "residenz"),
            ("residens", "residenz"),
            ("resdenz", "residenz"),
            ("residenza", "residenz"),
            ("reisdenz", "residenz"),
        ] {
            assert!(one_edit(a, b), "{a} {b}");
        }
        for (a, b) in [
            ("resi", "residenz"),
            ("rseidnez", "residenz"),
            ("xesidenx", "residenz"),
        ] {
            assert!(!one_edit(a, b), "{a} {b}");
        }
    }

    #[test]
    fn a_misspelt_word_is_highlighted_as_matched() {
        let index = index();
        let r = index
            .search(&SearchQuery {
                text: "certficato ".into(),
                limit: 3,
                ..SearchQuery::default()
            })
            .unwrap();
        assert!(
            r.hits[0].question_highlighted.contains("**certificato**"),
            "{:?}",
            r.hits[0]
        );
        assert!(
            r.hits[0].snippet.contains("**certificato**"),
            "{:?}",
            r.hits[0]
        );
    }

    #[test]
    fn queries_are_parsed_into_words_phrases_and_exclusions() {
        let p = parse("certificato \"carta d'identità\" -passaporto nasc");
        assert_eq!(p.words, ["certificato", "nasc"]);
        assert_eq!(p.phrases, ["carta d'identità"]);
        assert_eq!(p.excluded, ["passaporto"]);
        assert!(p.typing);
        assert!(!parse("certificato ").typing);
    }
}
