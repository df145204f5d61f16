//! The node's shared FAQ set (DESIGN.md §5): the book of entries this node
//! holds, its Italian search index, and the operations behind `FaqDesk`.
//!
//! The entries are shared documents of kind [`FaqKind`], kept by the one
//! implementation every kind uses ([`crate::replica`]: verification,
//! storage, anti-entropy); this module adds what is the FAQ's own — the
//! rules of an entry, local overrides, search, proposals — and is the
//! replica's [`Hook`]:
//!
//! - [`service`]: the `FaqDesk` gRPC adapter;
//! - [`tables`]: the local overrides' table.
//!
//! The search index carries the set's root hash (and the overrides) as its
//! commit marker and is rebuilt when the marker does not match.

pub mod sample;
pub mod service;
pub mod tables;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use urpnet_proto::hlc::{self, HybridClock};
use urpnet_proto::ids::NodeId;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::territory::Territory;
use urpnet_proto::v1::{
    Channel, CreateTicketRequest, FaqContent, FaqEntry, FaqOrigin, FaqOverride, FaqVersion,
    Location, PayloadKind, SharedKind,
};
use urpnet_proto::validate::Violations;
use urpnet_shared_faq::search::{Doc, Results, SearchError, SearchQuery};
use urpnet_shared_faq::{FaqIndex, Key, model};

use crate::auth::{Action, Actor};
use crate::casework::TicketDesk;
use crate::config::NodeConfig;
use crate::error::{NodeError, NodeResult};
use crate::registry_link::Federation;
use crate::replica::{Header, Held, Hook, Kind, Replica};
use crate::store::Store;
use crate::taxonomy::TaxonomyHandle;
use tables::FaqOverrideRow;

/// FAQ entries as a kind of shared document.
#[derive(Debug)]
pub struct FaqKind;

impl Kind for FaqKind {
    const NAME: &'static str = "faq";
    const SHARED: SharedKind = SharedKind::Faq;
    const PAYLOAD: PayloadKind = PayloadKind::FaqVersion;
    const MAX_BYTES: usize = model::MAX_VERSION_BYTES;
    type Version = FaqVersion;

    fn header(v: &FaqVersion) -> Header<'_> {
        Header {
            owner: &v.owner,
            entry_id: &v.entry_id,
            version: v.version,
            seq: v.seq,
            retired: v.retired,
            published_at: v.published_at.as_ref(),
        }
    }

    fn validate(v: &FaqVersion) -> Result<(), Violations> {
        model::validate_version(v)
    }
}

/// This node's local overrides of shared entries.
pub type Overrides = BTreeMap<Key, FaqOverride>;
type State = Held<Overrides>;

/// The search index's expected marker: the set's root hash and the
/// overrides.
fn marker(state: &State) -> String {
    let mut h = Sha256::new();
    h.update(state.set.root());
    for (key, o) in &state.local {
        h.update(key.to_string().as_bytes());
        h.update(o.set_at_ms.to_be_bytes());
    }
    hex::encode(h.finalize())
}

/// Where the search index lives inside the data directory.
pub fn index_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("faq-index")
}

/// The node's FAQ book.
pub struct FaqBook {
    node: NodeId,
    config: NodeConfig,
    replica: Arc<Replica<FaqKind, Overrides>>,
    taxonomy: Arc<TaxonomyHandle>,
    index: Arc<FaqIndex>,
    desk: OnceLock<Arc<TicketDesk>>,
    charter: OnceLock<Arc<crate::charter::CharterBook>>,
}

impl std::fmt::Debug for FaqBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaqBook")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl FaqBook {
    /// Loads the set and the overrides from the store, opens the search
    /// index in the data directory and rebuilds it if it is missing or
    /// stale.
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
            federation,
            config.faq.batch,
        ));
        let book = Arc::new(Self {
            node: config.node.id.clone(),
            config,
            replica,
            taxonomy,
            index,
            desk: OnceLock::new(),
            charter: OnceLock::new(),
        });
        let weak = Arc::downgrade(&book);
        book.replica.attach(weak);
        book.replica.load().await?;
        Ok(book)
    }

    /// Lets suggestions include the charter's services (set once at start).
    pub fn attach_charter(&self, charter: Arc<crate::charter::CharterBook>) {
        let _ = self.charter.set(charter);
    }

    /// The charter book, once attached.
    pub fn charter(&self) -> Option<&Arc<crate::charter::CharterBook>> {
        self.charter.get()
    }

    /// The replica of FAQ entries (for the exchange).
    pub fn replica(&self) -> Arc<Replica<FaqKind, Overrides>> {
        self.replica.clone()
    }

    fn store(&self) -> &Store {
        self.replica.store()
    }

    /// Lets proposals open tickets (set once at start).
    pub fn attach_desk(&self, desk: Arc<TicketDesk>) {
        let _ = self.desk.set(desk);
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Updates the search index after a change (under the state lock).
    async fn reindex(&self, state: &State, docs: Vec<Doc>, removes: Vec<String>) {
        crate::replica::reindex(&self.index, docs, removes, marker(state), "faq").await;
    }

    /// Signs and stores a version of an entry this node owns.
    async fn publish_version(
        &self,
        state: &mut State,
        entry_id: String,
        version: u64,
        content: Option<FaqContent>,
    ) -> NodeResult<FaqEntry> {
        let record = FaqVersion {
            entry_id,
            owner: self.node.to_string(),
            version,
            seq: self.replica.next_seq(state),
            published_at: Some(self.replica.clock().now()),
            retired: content.is_none(),
            content,
        };
        let stamp = self.replica.publish(state, record.clone()).await?;
        metrics::counter!("urpnet_faq_published_total", "kind" => if record.retired { "retired" } else if version == 1 { "new" } else { "revised" })
            .increment(1);
        tracing::info!(entry = %stamp.key, version, seq = record.seq, retired = record.retired, "FAQ version published");
        Ok(FaqEntry {
            key: stamp.key.to_string(),
            local_override: state.local.get(&stamp.key).cloned(),
            current: Some(record),
        })
    }

    fn check_content(&self, content: Option<&FaqContent>, v: &mut Violations) {
        let Some(content) = content else {
            v.add("content", "is required");
            return;
        };
        model::validate_content(content, "content", v);
        let taxonomy = self.taxonomy.current();
        for (i, code) in content.categories.iter().enumerate() {
            v.check(
                taxonomy.get(code).is_some(),
                format!("content.categories[{i}]"),
                format!("`{code}` is not a category of the federation's taxonomy"),
            );
        }
    }

    /// Publishes a new entry owned by this node.
    ///
    /// # Errors
    /// `PermissionDenied`, `InvalidArgument`, storage failures.
    pub async fn publish(
        &self,
        actor: &Actor,
        content: Option<FaqContent>,
        request_id: &str,
    ) -> NodeResult<FaqEntry> {
        actor.require(Action::PublishFaq)?;
        let mut v = Violations::new();
        self.check_content(content.as_ref(), &mut v);
        v.check(
            request_id.is_empty()
                || ((8..=64).contains(&request_id.len())
                    && request_id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')),
            "request_id",
            "must be 8..=64 characters of A-Z a-z 0-9 _ -",
        );
        v.into_result()?;
        let mut state = self.replica.lock().await;
        if request_id.is_empty() {
            return self
                .publish_version(&mut state, ulid::Ulid::new().to_string(), 1, content)
                .await;
        }
        // The entry id follows from the key: a retry finds the entry made.
        let mut h = Sha256::new();
        for part in [self.node.as_str(), &actor.id, request_id] {
            h.update(part.as_bytes());
            h.update(b"\n");
        }
        let digest: [u8; 32] = h.finalize().into();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let entry_id = ulid::Ulid::from_bytes(bytes).to_string();
        let key = Key::new(self.node.as_str(), &entry_id);
        if state.set.get(&key).is_none() {
            return self.publish_version(&mut state, entry_id, 1, content).await;
        }
        let first = self
            .history(&key)
            .await?
            .into_iter()
            .find(|v| v.version == 1);
        if first.and_then(|v| v.content) != content {
            return Err(NodeError::AlreadyExists(format!(
                "request_id `{request_id}` made {key} with other content"
            )));
        }
        let current = self.current(&state, &key).await?;
        Ok(FaqEntry {
            key: key.to_string(),
            local_override: state.local.get(&key).cloned(),
            current: Some(current),
        })
    }

    /// The current version of an entry this node owns, for a new version.
    fn own_current(&self, state: &State, key: &Key, base_version: u64) -> NodeResult<u64> {
        if key.owner != self.node.as_str() {
            return Err(NodeError::PermissionDenied(format!(
                "{key} belongs to {}; only its owner publishes versions (propose a change instead)",
                key.owner
            )));
        }
        let held = state
            .set
            .get(key)
            .ok_or_else(|| NodeError::NotFound(format!("FAQ entry {key}")))?;
        if held.retired {
            return Err(NodeError::FailedPrecondition(format!("{key} is retired")));
        }
        if base_version != 0 && base_version != held.version {
            return Err(NodeError::FailedPrecondition(format!(
                "{key} is at version {}, not {base_version}: someone revised it meanwhile; read it again",
                held.version
            )));
        }
        Ok(held.version)
    }

    /// Publishes a new version of an entry this node owns.
    ///
    /// # Errors
    /// `PermissionDenied` (not the owner), `NotFound`, `FailedPrecondition`
    /// (retired, or `base_version` not current), `InvalidArgument`.
    pub async fn revise(
        &self,
        actor: &Actor,
        key: &str,
        base_version: u64,
        content: Option<FaqContent>,
    ) -> NodeResult<FaqEntry> {
        actor.require(Action::PublishFaq)?;
        let key = Key::parse("key", key)?;
        let mut v = Violations::new();
        self.check_content(content.as_ref(), &mut v);
        v.into_result()?;
        let mut state = self.replica.lock().await;
        let current = self.own_current(&state, &key, base_version)?;
        self.publish_version(&mut state, key.entry_id, current + 1, content)
            .await
    }

    /// Retires an entry this node owns (a tombstone version).
    ///
    /// # Errors
    /// As [`FaqBook::revise`].
    pub async fn retire(&self, actor: &Actor, key: &str) -> NodeResult<FaqEntry> {
        actor.require(Action::PublishFaq)?;
        let key = Key::parse("key", key)?;
        let mut state = self.replica.lock().await;
        let current = self.own_current(&state, &key, 0)?;
        self.publish_version(&mut state, key.entry_id, current + 1, None)
            .await
    }

    /// The current version of an entry as held.
    async fn current(&self, state: &State, key: &Key) -> NodeResult<FaqVersion> {
        self.replica.current(state, key).await
    }

    /// Every version of an entry held here, newest first.
    async fn history(&self, key: &Key) -> NodeResult<Vec<FaqVersion>> {
        self.replica.history(key).await
    }

    /// One entry with its history (newest first) as held here.
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`, storage failures.
    pub async fn get(&self, actor: &Actor, key: &str) -> NodeResult<(FaqEntry, Vec<FaqVersion>)> {
        actor.require(Action::Read)?;
        let key = Key::parse("key", key)?;
        let state = self.replica.lock().await;
        let current = self.current(&state, &key).await?;
        let overridden = state.local.get(&key).cloned();
        drop(state);
        let history = self.history(&key).await?;
        Ok((
            FaqEntry {
                key: key.to_string(),
                current: Some(current),
                local_override: overridden,
            },
            history,
        ))
    }

    /// Searches the index.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad filter or query.
    pub fn search(&self, actor: &Actor, query: &SearchQuery) -> NodeResult<Results> {
        actor.require(Action::Read)?;
        let started = std::time::Instant::now();
        let mut results = self.index.search(query).map_err(|e| match e {
            SearchError::Invalid(v) => NodeError::InvalidArgument(v),
            SearchError::Engine(e) => NodeError::Internal(format!("search index: {e}")),
        })?;
        // A body the federation revoked no longer answers anywhere: its
        // entries stay held (its history is kept) but are not offered.
        let members = self.replica.federation().members();
        let before = results.hits.len();
        results.hits.retain(|h| {
            members
                .by_id
                .get(&h.owner)
                .is_none_or(|m| m.status != urpnet_proto::v1::MemberStatus::Revoked as i32)
        });
        let dropped = before - results.hits.len();
        if dropped > 0 {
            results.total = results.total.saturating_sub(dropped);
            metrics::counter!("urpnet_faq_hits_of_revoked_total").increment(dropped as u64);
        }
        metrics::histogram!("urpnet_faq_search_seconds", "kind" => if query.suggest { "suggest" } else { "search" })
            .record(started.elapsed().as_secs_f64());
        Ok(results)
    }

    /// Builds a search from the Desk's filters.
    ///
    /// # Errors
    /// `InvalidArgument` naming the filter.
    pub fn query(
        text: String,
        language: &str,
        category: &str,
        territory: &str,
        valid_on: &str,
        limit: u32,
        default_limit: u32,
    ) -> NodeResult<SearchQuery> {
        let mut v = Violations::new();
        v.check(
            language.is_empty()
                || (language.len() == 2 && language.bytes().all(|c| c.is_ascii_lowercase())),
            "language",
            "must be an ISO 639-1 code in lowercase, e.g. it",
        );
        v.check(
            category.is_empty()
                || category.split('.').all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
                }),
            "category",
            "must be a taxonomy code like anagrafe.certificati",
        );
        v.check(
            territory.is_empty() || Territory::italy().level_of(territory).is_some(),
            "territory",
            "must be an ISTAT code of a region (2 digits), province (3) or comune (6)",
        );
        let valid_on = match valid_on {
            "" => Some(model::today_days()),
            "*" => None,
            day => {
                let parsed = model::parse_day(day);
                v.check(
                    parsed.is_some(),
                    "valid_on",
                    "must be a date YYYY-MM-DD, or *",
                );
                parsed
            }
        };
        v.into_result()?;
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(SearchQuery {
            text,
            language: some(language),
            category: some(category),
            territory: some(territory),
            valid_on,
            limit: if limit == 0 {
                default_limit as usize
            } else {
                limit as usize
            },
            include_retired: false,
            suggest: false,
            owner: None,
        })
    }

    /// The best answers for a ticket (by id or reference) or a text.
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`.
    pub async fn suggest(
        &self,
        actor: &Actor,
        ticket: &str,
        text: &str,
        territory: &str,
        limit: u32,
    ) -> NodeResult<(Results, String, String)> {
        actor.require(Action::Read)?;
        let (text, territory) = match (ticket.is_empty(), text.is_empty()) {
            (false, true) => {
                let desk = self
                    .desk
                    .get()
                    .ok_or_else(|| NodeError::Unavailable("the ticket desk is not ready".into()))?;
                let (t, _) = if ulid::Ulid::from_string(ticket).is_ok() {
                    desk.get(actor, ticket, "").await?
                } else {
                    desk.get(actor, "", ticket).await?
                };
                let place = t.location.map(|l| l.istat_code).unwrap_or_default();
                (
                    format!("{}\n{}", t.subject, t.description),
                    if territory.is_empty() {
                        place
                    } else {
                        territory.to_string()
                    },
                )
            }
            (true, false) => (text.to_string(), territory.to_string()),
            _ => {
                return Err(NodeError::invalid(
                    "ticket",
                    "exactly one of ticket and text must be set",
                ));
            }
        };
        let mut query = Self::query(String::new(), "", "", &territory, "", limit, 5)?;
        let mut v = Violations::new();
        v.check(limit <= 20, "limit", "must be at most 20");
        v.into_result()?;
        query.text = text.clone();
        query.suggest = true;
        let results = self.search(actor, &query)?;
        Ok((results, text, territory))
    }

    /// Sets (or clears) this node's override of an entry.
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`, storage failures.
    pub async fn set_override(
        &self,
        actor: &Actor,
        key: &str,
        content: Option<FaqContent>,
        reason: &str,
        clear: bool,
    ) -> NodeResult<FaqEntry> {
        actor.require(Action::PublishFaq)?;
        let key = Key::parse("key", key)?;
        let mut v = Violations::new();
        if !clear {
            self.check_content(content.as_ref(), &mut v);
            v.length("reason", reason, 1, 500);
            v.printable("reason", reason);
        }
        v.into_result()?;
        let mut state = self.replica.lock().await;
        let current = self.current(&state, &key).await?;
        let overridden = (!clear).then(|| FaqOverride {
            content: content.clone(),
            reason: reason.trim().to_string(),
            set_by: actor.id.clone(),
            set_at_ms: hlc::system_time_ms(),
        });
        crate::faq::tables::write(
            self.store(),
            vec![FaqOverrideRow {
                owner: key.owner.clone(),
                entry_id: key.entry_id.clone(),
                content: overridden.as_ref().map(|o| {
                    (
                        o.content.clone().unwrap_or_default().encode_to_vec(),
                        o.reason.clone(),
                        o.set_by.clone(),
                        o.set_at_ms as i64,
                    )
                }),
            }],
        )
        .await?;
        match &overridden {
            Some(o) => state.local.insert(key.clone(), o.clone()),
            None => state.local.remove(&key),
        };
        let doc = Doc::new(&current, override_of(&state, &current));
        self.reindex(&state, vec![doc], Vec::new()).await;
        tracing::info!(entry = %key, cleared = clear, "FAQ local override changed");
        Ok(FaqEntry {
            key: key.to_string(),
            current: Some(current),
            local_override: overridden,
        })
    }

    /// Proposes a change to another body's entry: a ticket opened here and
    /// offered to the owner.
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`, `FailedPrecondition` (this node owns
    /// the entry), and whatever opening or offering the ticket returns.
    pub async fn propose(
        &self,
        actor: &Actor,
        key: &str,
        proposal: &str,
        istat_code: &str,
    ) -> NodeResult<(String, String)> {
        actor.require(Action::ProposeFaq)?;
        let key = Key::parse("key", key)?;
        let mut v = Violations::new();
        v.length("proposal", proposal, 1, 4000);
        v.printable("proposal", proposal);
        let istat = if istat_code.is_empty() {
            Territory::italy()
                .comune_by_ipa(self.node.as_str())
                .map(|c| c.istat_code.clone())
                .unwrap_or_default()
        } else {
            istat_code.to_string()
        };
        v.check(
            Territory::italy().comune(&istat).is_some(),
            "istat_code",
            "must be the ISTAT code of a comune (required when this node is not a comune)",
        );
        v.into_result()?;
        if key.owner == self.node.as_str() {
            return Err(NodeError::FailedPrecondition(format!(
                "{key} belongs to this node: revise it instead"
            )));
        }
        let state = self.replica.lock().await;
        let current = self.current(&state, &key).await?;
        drop(state);
        let desk = self
            .desk
            .get()
            .ok_or_else(|| NodeError::Unavailable("the ticket desk is not ready".into()))?;
        let content = current.content.clone().unwrap_or_default();
        let category = content
            .categories
            .iter()
            .find(|c| self.taxonomy.current().get(c).is_some())
            .cloned()
            .ok_or_else(|| {
                NodeError::FailedPrecondition(format!(
                    "none of {key}'s categories is in this node's taxonomy"
                ))
            })?;
        let subject: String = format!("Proposta di modifica FAQ: {}", content.question)
            .chars()
            .take(crate::validate::SUBJECT_MAX)
            .collect();
        let fingerprint = hex::encode(Sha256::digest(proposal.as_bytes()));
        let created = desk
            .create(
                actor,
                CreateTicketRequest {
                    request_id: format!("faq-{}-{}", key.entry_id, &fingerprint[..16]),
                    category,
                    channel: Channel::Desk as i32,
                    subject,
                    description: format!("{proposal}\n\n— FAQ {key}, versione {}", current.version),
                    location: Some(Location {
                        istat_code: istat,
                        ..Location::default()
                    }),
                    ..CreateTicketRequest::default()
                },
            )
            .await?;
        let ticket = created.ticket;
        if !created.replayed
            || (ticket.pending_handoff.is_none() && ticket.owner_node == self.node.as_str())
        {
            desk.handoff(
                actor,
                &ticket.id,
                &key.owner,
                &format!("proposta di modifica della FAQ {key}"),
                false,
            )
            .await?;
        }
        metrics::counter!("urpnet_faq_proposals_total").increment(1);
        tracing::info!(entry = %key, ticket = %ticket.id, "FAQ change proposed to its owner");
        Ok((ticket.id, ticket.reference))
    }

    /// Per owner: entries, retired, highest sequence; entries indexed;
    /// overrides; rounds.
    pub async fn status(&self) -> urpnet_proto::v1::FaqStatusResponse {
        let state = self.replica.lock().await;
        urpnet_proto::v1::FaqStatusResponse {
            origins: state
                .set
                .origins()
                .map(|(origin, o)| FaqOrigin {
                    origin: origin.clone(),
                    entries: o.entries,
                    retired: o.retired,
                    max_seq: state.set.max_seq(origin),
                })
                .collect(),
            indexed: self.index.len(),
            overrides: state.local.len() as u32,
            rounds: self.replica.rounds().0,
            last_round_ms: self.replica.rounds().1,
            root: hex::encode(state.set.root()),
        }
    }
}

fn override_of<'a>(state: &'a State, version: &FaqVersion) -> Option<&'a FaqContent> {
    state
        .local
        .get(&Key::of(version))
        .and_then(|o| o.content.as_ref())
}

#[tonic::async_trait]
impl Hook<FaqKind, Overrides> for FaqBook {
    async fn loaded(&self, state: &mut State, current: Vec<FaqVersion>) -> NodeResult<()> {
        for (owner, entry_id, content, reason, set_by, set_at_ms) in
            tables::overrides(self.store()).await?
        {
            let content = FaqContent::decode(content.as_slice())
                .map_err(|e| NodeError::Internal(format!("stored FAQ local_override: {e}")))?;
            state.local.insert(
                Key::new(owner, entry_id),
                FaqOverride {
                    content: Some(content),
                    reason,
                    set_by,
                    set_at_ms: set_at_ms as u64,
                },
            );
        }
        let docs: Vec<Doc> = current
            .iter()
            .map(|v| Doc::new(v, override_of(state, v)))
            .collect();
        crate::replica::rebuild_if_stale(&self.index, docs, marker(state), "faq").await?;
        Ok(())
    }

    async fn applied(&self, state: &mut State, versions: Vec<FaqVersion>) {
        let docs = versions
            .iter()
            .map(|v| Doc::new(v, override_of(state, v)))
            .collect();
        self.reindex(state, docs, Vec::new()).await;
    }
}
