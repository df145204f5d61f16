//! The service charter (DESIGN.md §12, CittàClick): each body's offices and
//! services, shared across the network, with their history.
//!
//! A body's charter is one shared document of kind [`CharterKind`] (entry
//! id `charter`), kept by the same implementation as FAQ entries
//! ([`crate::replica`]): signed by its body, owner-only, versioned, a
//! tombstone when withdrawn, spread by the same anti-entropy and checked by
//! the same verification. Each import is a new version of the whole
//! charter, so "what did the charter say on 1 March" is the version in
//! force then, and a version is always internally consistent (a service
//! never names an office the same version lacks). See decision 101.
//!
//! A node holds its own charter, those of bodies in its region and those of
//! national bodies (`[charter] hold = "region"`), or all (`"all"`); the
//! exchange offers a peer only what it holds.
//!
//! - [`explain`]: the one-call answer about a service;
//! - [`import`]: TOML and CSV, with line and column in every error;
//! - [`export`]: JSON-LD (schema.org `GovernmentService`, CPSV-AP_IT), the
//!   printable charter, the office door sign;
//! - [`service`]: the `CharterDesk` gRPC adapter.

pub mod explain;
pub mod export;
pub mod import;
pub mod service;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use prost::Message as _;
use urpnet_proto::hlc::HybridClock;
use urpnet_proto::ids::NodeId;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::territory::Territory;
use urpnet_proto::v1::{
    Charter, CharterChange, CharterHit, CharterSummary, CharterVersion, ExplainResponse,
    PayloadKind, SharedKind,
};
use urpnet_proto::validate::Violations;
use urpnet_shared_faq::search::{Doc, SearchError, SearchQuery};
use urpnet_shared_faq::{FaqIndex, Key};

use crate::auth::{Action, Actor};
use crate::config::NodeConfig;
use crate::error::{NodeError, NodeResult};
use crate::registry_link::Federation;
use crate::replica::{Header, Held, Hook, Kind, Replica};
use crate::store::Store;
use crate::taxonomy::TaxonomyHandle;

/// The one entry id of a body's charter.
pub const ENTRY: &str = "charter";
/// Largest signed charter version.
pub const MAX_VERSION_BYTES: usize = 2 * 1024 * 1024;

/// Where the charter search index lives inside the data directory.
pub fn index_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("charter-index")
}

/// Charters as a kind of shared document.
#[derive(Debug)]
pub struct CharterKind;

impl Kind for CharterKind {
    const NAME: &'static str = "charter";
    const SHARED: SharedKind = SharedKind::Charter;
    const PAYLOAD: PayloadKind = PayloadKind::CharterVersion;
    const MAX_BYTES: usize = MAX_VERSION_BYTES;
    type Version = CharterVersion;

    fn header(v: &CharterVersion) -> Header<'_> {
        Header {
            owner: &v.owner,
            entry_id: &v.entry_id,
            version: v.version,
            seq: v.seq,
            retired: v.retired,
            published_at: v.published_at.as_ref(),
        }
    }

    fn validate(v: &CharterVersion) -> Result<(), Violations> {
        let mut out = Violations::new();
        out.check(v.entry_id == ENTRY, "entry_id", "must be \"charter\"");
        out.check(
            NodeId::new(v.owner.as_str()).is_ok(),
            "owner",
            "must be a node id",
        );
        out.check(v.version >= 1, "version", "must be at least 1");
        out.check(v.seq >= 1, "seq", "must be at least 1");
        out.check(v.published_at.is_some(), "published_at", "is required");
        match (&v.charter, v.retired) {
            (Some(_), true) => out.add("charter", "must be empty in a tombstone"),
            (None, false) => out.add("charter", "is required"),
            (Some(c), false) => {
                out.check(
                    c.body == v.owner,
                    "charter.body",
                    "must be the owner: a body publishes only its own charter",
                );
                if let Err(inner) = urpnet_proto::charter::validate(c, None) {
                    for f in inner.0 {
                        out.add(format!("charter.{}", f.field), f.rule);
                    }
                }
            }
            (None, true) => {}
        }
        out.into_result()
    }
}

/// What the charter book keeps beside the set for one body's current
/// version: its summary (so `ListCharters` decodes nothing) and its
/// service keys in the search index (so a new version replaces them all).
#[derive(Debug, Clone, Default)]
pub struct BodyEntry {
    /// The summary, without the body's display name.
    pub summary: CharterSummary,
    /// `<body>/<service>` of every service indexed.
    pub keys: Vec<String>,
}

impl BodyEntry {
    fn of(v: &CharterVersion) -> Self {
        Self {
            summary: summary(v, String::new()),
            keys: v.charter.as_ref().map_or_else(Vec::new, |c| {
                c.services
                    .iter()
                    .map(|s| format!("{}/{}", v.owner, s.id))
                    .collect()
            }),
        }
    }
}

/// Per body held, its [`BodyEntry`].
pub type Indexed = BTreeMap<String, BodyEntry>;
type State = Held<Indexed>;

fn marker(state: &State) -> String {
    hex::encode(state.set.root())
}

/// The summary of a version.
pub fn summary(v: &CharterVersion, body_name: String) -> CharterSummary {
    let c = v.charter.as_ref();
    CharterSummary {
        body: v.owner.clone(),
        body_name,
        version: v.version,
        published_at_ms: v.published_at.map_or(0, |h| h.wall_ms),
        offices: c.map_or(0, |c| c.offices.len() as u32),
        services: c.map_or(0, |c| c.services.len() as u32),
        retired: v.retired,
        unchanged: false,
    }
}

/// What changed between two charters: (added, removed, changed) ids.
pub fn diff(
    old: Option<&Charter>,
    new: Option<&Charter>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let items = |c: Option<&Charter>| -> BTreeMap<String, Vec<u8>> {
        let mut m = BTreeMap::new();
        if let Some(c) = c {
            for o in &c.offices {
                m.insert(format!("office:{}", o.id), o.encode_to_vec());
            }
            for s in &c.services {
                m.insert(format!("service:{}", s.id), s.encode_to_vec());
            }
            if !c.patron_day.is_empty() {
                m.insert("patron_day".into(), c.patron_day.clone().into_bytes());
            }
        }
        m
    };
    let (a, b) = (items(old), items(new));
    let added = b.keys().filter(|k| !a.contains_key(*k)).cloned().collect();
    let removed = a.keys().filter(|k| !b.contains_key(*k)).cloned().collect();
    let changed = b
        .iter()
        .filter(|(k, v)| a.get(*k).is_some_and(|old| old != *v))
        .map(|(k, _)| k.clone())
        .collect();
    (added, removed, changed)
}

/// Parses an `as_of`: a date (the end of that day in Italy) or an RFC 3339
/// instant, between 2000 and 2100.
///
/// # Errors
/// `InvalidArgument` naming `as_of`.
pub fn parse_as_of(text: &str) -> NodeResult<Timestamp> {
    let rule = "must be a date YYYY-MM-DD or an RFC 3339 instant between 2000 and 2100";
    let at = if let Ok(date) = text.parse::<jiff::civil::Date>() {
        date.tomorrow()
            .ok()
            .and_then(|d| d.to_zoned(urpnet_proto::calendar::rome()).ok())
            .map(|z| z.timestamp() - jiff::SignedDuration::from_millis(1))
    } else {
        text.parse::<Timestamp>().ok()
    };
    match at {
        Some(t) if (946_684_800..4_102_444_800).contains(&t.as_second()) => Ok(t),
        _ => Err(NodeError::invalid("as_of", rule)),
    }
}

/// The search index document of each service of a charter.
fn docs_of(v: &CharterVersion, territory: &[String]) -> Vec<Doc> {
    let Some(c) = &v.charter else {
        return Vec::new();
    };
    let day = |s: &str| {
        s.parse::<jiff::civil::Date>()
            .ok()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp().as_second().div_euclid(86_400))
    };
    c.services
        .iter()
        .map(|s| {
            let offices: Vec<&str> = explain::offices_of(c, s)
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            let documents: Vec<&str> = s.documents.iter().map(|d| d.name.as_str()).collect();
            let territory = if territory.is_empty() {
                c.offices
                    .iter()
                    .map(|o| o.istat_code.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            } else {
                territory.to_vec()
            };
            Doc {
                key: format!("{}/{}", v.owner, s.id),
                owner: v.owner.clone(),
                version: v.version,
                retired: false,
                question: s.title.clone(),
                answer: [
                    s.summary.as_str(),
                    &s.description,
                    &s.audience,
                    &s.how_to,
                    &s.outcome,
                    &documents.join("; "),
                    &offices.join("; "),
                ]
                .join("\n\n"),
                tags: s.keywords.clone(),
                language: "it".into(),
                categories: s.categories.clone(),
                territory,
                valid_from: day(&s.valid_from),
                valid_until: day(&s.valid_until),
                published_ms: v.published_at.map_or(0, |h| h.wall_ms),
                overridden: false,
            }
        })
        .collect()
}

/// Per member list version, each member's regions (`None`: national).
type RegionCache = (u64, HashMap<String, Option<BTreeSet<String>>>);

/// The node's charter book.
pub struct CharterBook {
    node: NodeId,
    config: NodeConfig,
    replica: Arc<Replica<CharterKind, Indexed>>,
    federation: Arc<Federation>,
    taxonomy: Arc<TaxonomyHandle>,
    index: Arc<FaqIndex>,
    cache: Mutex<lru::LruCache<String, Arc<CharterVersion>>>,
    regions: Mutex<RegionCache>,
}

impl std::fmt::Debug for CharterBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CharterBook")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The regions a territory lies in; `None`: national (no territory).
fn regions_of(territory: &[String]) -> Option<BTreeSet<String>> {
    if territory.is_empty() {
        return None;
    }
    let italy = Territory::italy();
    let mut out = BTreeSet::new();
    for code in territory {
        match code.len() {
            2 => {
                out.insert(code.clone());
            }
            3 => {
                if let Some(c) = italy.comuni().find(|c| c.province_code == *code) {
                    out.insert(c.region_code.clone());
                }
            }
            _ => {
                if let Some(c) = italy.comune(code) {
                    out.insert(c.region_code.clone());
                }
            }
        }
    }
    Some(out)
}

impl CharterBook {
    /// Loads the charters held from the store and opens the search index,
    /// rebuilding it if it is missing or stale.
    ///
    /// # Errors
    /// Storage failures; an index directory that cannot be written.
    pub async fn open(
        config: NodeConfig,
        store: Store,
        signer: NodeSigner,
        clock: Arc<HybridClock>,
        federation: Arc<Federation>,
        taxonomy: Arc<TaxonomyHandle>,
    ) -> NodeResult<Arc<Self>> {
        let index = crate::replica::open_index(index_dir(&config.node.data_dir)).await?;
        let replica = Arc::new(Replica::new(
            config.node.id.clone(),
            store,
            signer,
            clock,
            federation.clone(),
            config.faq.batch,
        ));
        let cache = NonZeroUsize::new(config.charter.cache).unwrap_or(NonZeroUsize::MIN);
        let book = Arc::new(Self {
            node: config.node.id.clone(),
            config,
            replica,
            federation,
            taxonomy,
            index,
            cache: Mutex::new(lru::LruCache::new(cache)),
            regions: Mutex::default(),
        });
        let weak = Arc::downgrade(&book);
        book.replica.attach(weak);
        book.replica.load().await?;
        Ok(book)
    }

    /// The replica of charters (for the exchange).
    pub fn replica(&self) -> Arc<Replica<CharterKind, Indexed>> {
        self.replica.clone()
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// A body's display name as this node knows it.
    pub fn body_name(&self, body: &str) -> String {
        self.federation
            .body_name(body, self.node.as_str(), &self.config.node.name)
    }

    fn territory_of(&self, body: &str) -> Vec<String> {
        self.federation
            .members()
            .by_id
            .get(body)
            .map(|m| m.territory.clone())
            .unwrap_or_default()
    }

    /// The body a request names (empty: this node).
    fn body<'a>(&'a self, body: &'a str) -> NodeResult<&'a str> {
        if body.is_empty() {
            return Ok(self.node.as_str());
        }
        NodeId::new(body).map_err(|_| {
            NodeError::invalid(
                "body",
                "must be a node id (the body's IPA code, e.g. c_c426)",
            )
        })?;
        Ok(body)
    }

    fn key(body: &str) -> Key {
        Key::new(body, ENTRY)
    }

    /// Publishes this node's charter as a new version; nothing when it
    /// equals the current one.
    ///
    /// # Errors
    /// `PermissionDenied`, `InvalidArgument` naming every broken rule,
    /// storage failures.
    pub async fn import(&self, actor: &Actor, mut charter: Charter) -> NodeResult<CharterSummary> {
        actor.require(Action::PublishCharter)?;
        if charter.body.is_empty() {
            charter.body = self.node.to_string();
        }
        if charter.body != self.node.as_str() {
            return Err(NodeError::PermissionDenied(format!(
                "this node publishes the charter of {} only, not of {}",
                self.node, charter.body
            )));
        }
        let taxonomy = self.taxonomy.current();
        urpnet_proto::charter::validate(&charter, Some(&taxonomy))?;
        let key = Self::key(self.node.as_str());
        let mut state = self.replica.lock().await;
        let held = state.set.get(&key).cloned();
        if let Some(held) = &held
            && !held.retired
        {
            let current = self.replica.current(&state, &key).await?;
            if current.charter.as_ref() == Some(&charter) {
                let mut s = summary(&current, self.body_name(&current.owner));
                s.unchanged = true;
                return Ok(s);
            }
        }
        let version = CharterVersion {
            entry_id: ENTRY.into(),
            owner: self.node.to_string(),
            version: held.map_or(1, |h| h.version + 1),
            seq: self.replica.next_seq(&state),
            published_at: Some(self.replica.clock().now()),
            retired: false,
            charter: Some(charter),
        };
        self.replica.publish(&mut state, version.clone()).await?;
        metrics::counter!("urpnet_charter_published_total", "kind" => "import").increment(1);
        tracing::info!(version = version.version, offices = version.charter.as_ref().map_or(0, |c| c.offices.len()), services = version.charter.as_ref().map_or(0, |c| c.services.len()), actor = %actor.id, "charter version published");
        Ok(summary(&version, self.body_name(&version.owner)))
    }

    /// Withdraws this node's charter (a tombstone version).
    ///
    /// # Errors
    /// `PermissionDenied`, `NotFound` (none published), storage failures.
    pub async fn withdraw(&self, actor: &Actor, reason: &str) -> NodeResult<CharterSummary> {
        actor.require(Action::PublishCharter)?;
        let mut v = Violations::new();
        v.length("reason", reason, 0, 500);
        v.printable("reason", reason);
        v.into_result()?;
        let key = Self::key(self.node.as_str());
        let mut state = self.replica.lock().await;
        let held = state
            .set
            .get(&key)
            .cloned()
            .ok_or_else(|| NodeError::NotFound(format!("a charter of {}", self.node)))?;
        if held.retired {
            return Err(NodeError::FailedPrecondition(format!(
                "the charter of {} is already withdrawn",
                self.node
            )));
        }
        let version = CharterVersion {
            entry_id: ENTRY.into(),
            owner: self.node.to_string(),
            version: held.version + 1,
            seq: self.replica.next_seq(&state),
            published_at: Some(self.replica.clock().now()),
            retired: true,
            charter: None,
        };
        self.replica.publish(&mut state, version.clone()).await?;
        metrics::counter!("urpnet_charter_published_total", "kind" => "withdraw").increment(1);
        tracing::info!(version = version.version, reason, actor = %actor.id, "charter withdrawn");
        Ok(summary(&version, self.body_name(&version.owner)))
    }

    /// A body's current charter version (a tombstone if withdrawn).
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`, storage failures.
    pub async fn current(&self, body: &str) -> NodeResult<Arc<CharterVersion>> {
        let body = self.body(body)?;
        if let Some(hit) = self.cache.lock().expect("charter cache").get(body) {
            return Ok(hit.clone());
        }
        let state = self.replica.lock().await;
        let version = self
            .replica
            .current(&state, &Self::key(body))
            .await
            .map_err(|e| match e {
                NodeError::NotFound(_) => {
                    NodeError::NotFound(format!("a charter of {body} held by this node"))
                }
                e => e,
            })?;
        let version = Arc::new(version);
        self.cache
            .lock()
            .expect("charter cache")
            .put(body.to_string(), version.clone());
        Ok(version)
    }

    /// A body's charter: the current version, or the one in force at
    /// `as_of` (see [`parse_as_of`]).
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound` (none held, none in force then, or
    /// withdrawn), storage failures.
    pub async fn get(&self, body: &str, as_of: &str) -> NodeResult<(CharterSummary, Charter)> {
        let body = self.body(body)?.to_string();
        let version = if as_of.is_empty() {
            (*self.current(&body).await?).clone()
        } else {
            let at = parse_as_of(as_of)?;
            let at_ms = at.as_millisecond() as u64;
            let history = self.replica.history(&Self::key(&body)).await?;
            let first = history.last().cloned().ok_or_else(|| {
                NodeError::NotFound(format!("a charter of {body} held by this node"))
            })?;
            history
                .into_iter()
                .find(|v| v.published_at.map_or(0, |h| h.wall_ms) <= at_ms)
                .ok_or_else(|| {
                    NodeError::NotFound(format!(
                        "a charter of {body} on {as_of}: its first version held here was published on {}",
                        urpnet_proto::calendar::iso_rome(first.published_at.map_or(0, |h| h.wall_ms))
                    ))
                })?
        };
        if version.retired {
            return Err(NodeError::NotFound(format!(
                "a charter of {body} in force: withdrawn on {}",
                urpnet_proto::calendar::iso_rome(version.published_at.map_or(0, |h| h.wall_ms))
            )));
        }
        let s = summary(&version, self.body_name(&body));
        Ok((s, version.charter.unwrap_or_default()))
    }

    /// Every version of a body's charter held here, newest first, with
    /// what each changed.
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`, storage failures.
    pub async fn history(&self, body: &str) -> NodeResult<Vec<CharterChange>> {
        let body = self.body(body)?.to_string();
        let history = self.replica.history(&Self::key(&body)).await?;
        if history.is_empty() {
            return Err(NodeError::NotFound(format!(
                "a charter of {body} held by this node"
            )));
        }
        let name = self.body_name(&body);
        let mut out = Vec::with_capacity(history.len());
        for (i, v) in history.iter().enumerate() {
            let before = history.get(i + 1).and_then(|b| b.charter.as_ref());
            let (added, removed, changed) = diff(before, v.charter.as_ref());
            out.push(CharterChange {
                summary: Some(summary(v, name.clone())),
                added,
                removed,
                changed,
            });
        }
        Ok(out)
    }

    /// The charters held here (withdrawn ones included, flagged), from the
    /// summaries kept in memory.
    pub async fn list(&self) -> Vec<CharterSummary> {
        let mut out: Vec<CharterSummary> = {
            let state = self.replica.lock().await;
            state.local.values().map(|e| e.summary.clone()).collect()
        };
        for s in &mut out {
            s.body_name = self.body_name(&s.body);
        }
        out
    }

    /// Everything about one service at `at_ms` (0: now).
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`.
    pub async fn explain(
        &self,
        body: &str,
        service: &str,
        at_ms: u64,
    ) -> NodeResult<ExplainResponse> {
        let started = std::time::Instant::now();
        let mut v = Violations::new();
        v.length("service", service, 1, 64);
        v.check(
            at_ms == 0 || (946_684_800_000..4_102_444_800_000).contains(&at_ms),
            "at_ms",
            "must be 0 (now) or an instant between 2000 and 2100",
        );
        v.into_result()?;
        let at = if at_ms == 0 {
            Timestamp::now()
        } else {
            Timestamp::from_millisecond(at_ms as i64)
                .map_err(|_| NodeError::invalid("at_ms", "must be an instant"))?
        };
        let version = self.current(body).await?;
        let Some(charter) = &version.charter else {
            return Err(NodeError::NotFound(format!(
                "a charter of {}: it was withdrawn",
                version.owner
            )));
        };
        let out = explain::explain(
            charter,
            &self.body_name(&version.owner),
            version.version,
            service,
            at,
        )?;
        metrics::histogram!("urpnet_charter_explain_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Italian full-text search over the services held.
    ///
    /// # Errors
    /// `InvalidArgument` naming the filter.
    pub fn search(
        &self,
        text: &str,
        body: &str,
        territory: &str,
        category: &str,
        limit: u32,
        suggest: bool,
    ) -> NodeResult<(Vec<CharterHit>, usize)> {
        let started = std::time::Instant::now();
        let mut v = Violations::new();
        v.length("query", text, 0, 500);
        v.check(limit <= 50, "limit", "must be at most 50");
        v.check(
            body.is_empty() || NodeId::new(body).is_ok(),
            "body",
            "must be a node id",
        );
        v.into_result()?;
        let mut query =
            crate::faq::FaqBook::query(text.to_string(), "", category, territory, "", limit, 10)?;
        query.owner = (!body.is_empty()).then(|| body.to_string());
        query.suggest = suggest;
        let results = self.run(&query)?;
        metrics::histogram!("urpnet_charter_search_seconds")
            .record(started.elapsed().as_secs_f64());
        let total = results.total;
        let hits = results
            .hits
            .into_iter()
            .map(|h| {
                let service = h
                    .key
                    .split_once('/')
                    .map(|(_, s)| s.to_string())
                    .unwrap_or_default();
                CharterHit {
                    body_name: self.body_name(&h.owner),
                    body: h.owner,
                    service,
                    title: h.question,
                    title_highlighted: h.question_highlighted,
                    snippet: h.snippet,
                    score: h.score,
                    categories: h.categories,
                }
            })
            .collect();
        Ok((hits, total))
    }

    fn run(&self, query: &SearchQuery) -> NodeResult<urpnet_shared_faq::search::Results> {
        self.index.search(query).map_err(|e| match e {
            SearchError::Invalid(v) => NodeError::InvalidArgument(v),
            SearchError::Engine(e) => NodeError::Internal(format!("charter index: {e}")),
        })
    }

    /// The bare search engine over the same index (tantivy's query parser,
    /// top `limit` by BM25): the benchmark's physical limit.
    ///
    /// # Errors
    /// Engine failures.
    pub fn bare_search(&self, text: &str, limit: usize) -> NodeResult<usize> {
        self.index
            .bare_search(text, limit)
            .map_err(|e| NodeError::Internal(e.to_string()))
    }

    /// Charters held (withdrawn included) and services indexed.
    pub async fn status(&self) -> (usize, u64) {
        let state = self.replica.lock().await;
        (state.set.len(), self.index.len())
    }

    async fn reindex(&self, state: &State, docs: Vec<Doc>, removes: Vec<String>) {
        crate::replica::reindex(&self.index, docs, removes, marker(state), "charter").await;
    }

    fn regions(&self, id: &str) -> Option<Option<BTreeSet<String>>> {
        let members = self.federation.members();
        let mut cache = self.regions.lock().expect("regions cache");
        if cache.0 != members.version {
            *cache = (members.version, HashMap::new());
        }
        if let Some(r) = cache.1.get(id) {
            return Some(r.clone());
        }
        let r = regions_of(&members.by_id.get(id)?.territory);
        cache.1.insert(id.to_string(), r.clone());
        Some(r)
    }
}

#[tonic::async_trait]
impl Hook<CharterKind, Indexed> for CharterBook {
    async fn loaded(&self, state: &mut State, current: Vec<CharterVersion>) -> NodeResult<()> {
        self.cache.lock().expect("charter cache").clear();
        for v in &current {
            state.local.insert(v.owner.clone(), BodyEntry::of(v));
        }
        let marker = marker(state);
        // The documents are made only when the index must be rebuilt: a
        // region's charters make hundreds of megabytes of them.
        if self.index.marker().as_deref() != Some(marker.as_str()) {
            let mut docs = Vec::new();
            for v in current {
                docs.extend(docs_of(&v, &self.territory_of(&v.owner)));
            }
            crate::replica::rebuild_if_stale(&self.index, docs, marker, "charter").await?;
        }
        Ok(())
    }

    async fn applied(&self, state: &mut State, versions: Vec<CharterVersion>) {
        let mut docs = Vec::new();
        let mut removes = Vec::new();
        for v in &versions {
            self.cache.lock().expect("charter cache").pop(&v.owner);
            if let Some(old) = state.local.insert(v.owner.clone(), BodyEntry::of(v)) {
                removes.extend(old.keys);
            }
            docs.extend(docs_of(v, &self.territory_of(&v.owner)));
        }
        let keep: BTreeSet<&String> = docs.iter().map(|d| &d.key).collect();
        removes.retain(|k| !keep.contains(k));
        self.reindex(state, docs, removes).await;
    }

    fn holds_all(&self) -> bool {
        self.config.charter.hold == "all"
    }

    fn holds(&self, holder: &str, origin: &str) -> bool {
        if holder == origin {
            return true;
        }
        if holder == self.node.as_str() && self.holds_all() {
            return true;
        }
        match (self.regions(holder), self.regions(origin)) {
            (Some(None), Some(_)) | (Some(_), Some(None)) => true,
            (Some(Some(a)), Some(Some(b))) => !a.is_disjoint(&b),
            _ => false,
        }
    }
}
