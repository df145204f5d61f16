//! Shared documents (DESIGN.md §5, §12): signed, owner-only, versioned
//! records with tombstones — FAQ entries and service charters today — kept
//! by one implementation whatever their kind.
//!
//! - [`Kind`]: what a kind of document is (its payload, its header, its
//!   rules); the rest of this module never looks inside a document;
//! - [`Replica`]: the versions of one kind this node holds — the merged set
//!   in memory ([`DocSet`]), the store (`<kind>_versions`,
//!   `<kind>_current`), publication of this node's own versions, and the
//!   ingest of versions from peers after [`verify`];
//! - [`exchange`]: epidemic anti-entropy (`FaqExchange`, one request per
//!   kind) and the periodic rounds with random peers.
//!
//! Each kind's book (the FAQ book, the charter book) owns a [`Replica`] and
//! is its [`Hook`]: told under the replica's lock when versions arrive or
//! the set is reloaded, it keeps what it derives (search index, overrides,
//! caches) in step. Every change runs in this order: the merge in memory,
//! the store (durable), then the hook. The store is the truth: the set is
//! loaded from it at start and again after a failed write.

pub mod exchange;
pub mod tables;
pub mod verify;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use prost::Message as _;
use urpnet_proto::hlc::HybridClock;
use urpnet_proto::ids::NodeId;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::v1::{Hlc, ItemVerdict, PayloadKind, SharedKind, Signed};
use urpnet_proto::validate::Violations;
use urpnet_shared_faq::search::Doc;
use urpnet_shared_faq::{Applied, DocSet, FaqIndex, Key, Stamp};

use crate::error::{NodeError, NodeResult};
use crate::peering::verify::Refusal;
use crate::registry_link::Federation;
use crate::store::Store;
use tables::VersionRow;

/// What every version of every kind carries.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// The owner's node id (must be the signer).
    pub owner: &'a str,
    /// The entry's id within the owner.
    pub entry_id: &'a str,
    /// The entry's version (greater wins).
    pub version: u64,
    /// The owner's publication sequence of this kind.
    pub seq: u64,
    /// A tombstone.
    pub retired: bool,
    /// When the owner published it.
    pub published_at: Option<&'a Hlc>,
}

/// A kind of shared document.
pub trait Kind: Send + Sync + 'static {
    /// Its name: the tables `<NAME>_versions` and `<NAME>_current`, the
    /// metrics `urpnet_<NAME>_...`, the logs.
    const NAME: &'static str;
    /// Its name on the wire.
    const SHARED: SharedKind;
    /// The payload kind of its signed envelopes.
    const PAYLOAD: PayloadKind;
    /// Largest signed payload of one version.
    const MAX_BYTES: usize;
    /// The decoded version.
    type Version: prost::Message + Default + Clone + Send + Sync + 'static;
    /// The version's header.
    fn header(version: &Self::Version) -> Header<'_>;
    /// Every rule a version must follow (checked at publication and by
    /// every receiver); the header's rules included.
    ///
    /// # Errors
    /// The violations, each naming its field.
    fn validate(version: &Self::Version) -> Result<(), Violations>;
}

/// The stamp of a version and its exact payload.
pub fn stamp_of<K: Kind>(version: &K::Version, payload: &[u8]) -> Stamp {
    let h = K::header(version);
    Stamp::new(
        Key::new(h.owner, h.entry_id),
        h.version,
        h.seq,
        payload,
        h.retired,
    )
}

/// What a node holds of one kind: the merged set and the kind's own state,
/// under one lock.
#[derive(Debug, Default)]
pub struct Held<S> {
    /// The latest version of every entry.
    pub set: DocSet,
    /// What the kind's book keeps beside it (FAQ: local overrides).
    pub local: S,
}

/// A kind's book, told of every change under the replica's lock.
#[tonic::async_trait]
pub trait Hook<K: Kind, S: Send>: Send + Sync {
    /// The set was (re)loaded from the store: rebuild what derives from it.
    ///
    /// # Errors
    /// Storage or index failures.
    async fn loaded(&self, held: &mut Held<S>, current: Vec<K::Version>) -> NodeResult<()>;
    /// These versions were stored and won the merge.
    async fn applied(&self, held: &mut Held<S>, versions: Vec<K::Version>);
    /// Whether node `holder` keeps the documents of `origin` (a kind held
    /// only by some nodes, like a region's charters). Default: everyone.
    fn holds(&self, _holder: &str, _origin: &str) -> bool {
        true
    }
    /// Whether this node keeps every origin's documents whatever
    /// [`Hook::holds`] says of it (it tells peers so in its `Sync`).
    fn holds_all(&self) -> bool {
        false
    }
}

/// Opens (or creates) a kind's search index in `dir`, off the async threads.
///
/// # Errors
/// A directory that cannot be written; a damaged index that cannot be
/// reset.
pub async fn open_index(dir: std::path::PathBuf) -> NodeResult<Arc<FaqIndex>> {
    tokio::task::spawn_blocking(move || FaqIndex::open(&dir))
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?
        .map(Arc::new)
        .map_err(|e| NodeError::Internal(e.to_string()))
}

/// Updates a kind's search index after a change (called under the
/// replica's lock), committing with `marker`. A failure is logged: the
/// store holds the change, and the next start rebuilds the index because
/// its marker will not match.
pub async fn reindex(
    index: &Arc<FaqIndex>,
    docs: Vec<Doc>,
    removes: Vec<String>,
    marker: String,
    kind: &str,
) {
    let index = index.clone();
    let done = tokio::task::spawn_blocking(move || index.apply(&docs, &removes, &marker)).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(kind, %error, "search index update failed"),
        Err(error) => tracing::error!(kind, %error, "search index task failed"),
    }
}

/// Replaces a kind's whole search index when its marker is not `marker`
/// (missing, damaged, or out of step with the store).
///
/// # Errors
/// Engine failures.
pub async fn rebuild_if_stale(
    index: &Arc<FaqIndex>,
    docs: Vec<Doc>,
    marker: String,
    kind: &str,
) -> NodeResult<()> {
    if index.marker().as_deref() == Some(marker.as_str()) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let n = docs.len();
    let ix = index.clone();
    tokio::task::spawn_blocking(move || ix.rebuild(docs, &marker))
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    tracing::info!(
        kind,
        documents = n,
        ms = started.elapsed().as_millis() as u64,
        "search index rebuilt"
    );
    Ok(())
}

/// What an ingest of received versions did.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    /// Versions that changed the set.
    pub applied: u32,
    /// Versions already held.
    pub duplicates: u32,
    /// Refused for good.
    pub refused: Vec<ItemVerdict>,
    /// Refused for now.
    pub retry: Vec<ItemVerdict>,
}

fn verdict(index: usize, id: String, reason: String, retry_after_ms: u64) -> ItemVerdict {
    ItemVerdict {
        index: index as u32,
        id,
        reason,
        retry_after_ms,
        contact: false,
    }
}

/// The versions of one kind this node holds.
pub struct Replica<K: Kind, S> {
    node: NodeId,
    store: Store,
    signer: NodeSigner,
    clock: Arc<HybridClock>,
    federation: Arc<Federation>,
    batch: usize,
    held: tokio::sync::Mutex<Held<S>>,
    hook: OnceLock<Weak<dyn Hook<K, S>>>,
    rounds: AtomicU64,
    last_round_ms: AtomicU64,
    kind: PhantomData<K>,
}

impl<K: Kind, S> std::fmt::Debug for Replica<K, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("kind", &K::NAME)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn sha_hex(stamp: &Stamp) -> String {
    hex::encode(stamp.sha)
}

fn row(stamp: &Stamp, envelope: &Signed, current: bool) -> VersionRow {
    VersionRow {
        owner: stamp.key.owner.clone(),
        entry_id: stamp.key.entry_id.clone(),
        version: stamp.version as i64,
        sha: sha_hex(stamp),
        seq: stamp.seq as i64,
        retired: stamp.retired,
        envelope: envelope.encode_to_vec(),
        current,
    }
}

/// Decodes a stored envelope and its version.
///
/// # Errors
/// Bytes that do not decode (a damaged store).
pub fn decode<K: Kind>(bytes: &[u8]) -> NodeResult<(Signed, K::Version)> {
    let signed = Signed::decode(bytes)
        .map_err(|e| NodeError::Internal(format!("stored {} envelope: {e}", K::NAME)))?;
    let version = K::Version::decode(signed.payload.as_slice())
        .map_err(|e| NodeError::Internal(format!("stored {} version: {e}", K::NAME)))?;
    Ok((signed, version))
}

/// Logs and counts a refused version.
pub fn refused<K: Kind>(peer: &str, code: &'static str, author: &str, reason: &str) {
    tracing::warn!(
        peer,
        kind = K::NAME,
        reason = code,
        author,
        detail = reason,
        "shared version refused"
    );
    metrics::counter!(format!("urpnet_{}_refused_total", K::NAME), "reason" => code).increment(1);
}

impl<K: Kind, S: Default + Send + 'static> Replica<K, S> {
    /// An empty replica; [`Replica::attach`] its hook, then
    /// [`Replica::load`].
    pub fn new(
        node: NodeId,
        store: Store,
        signer: NodeSigner,
        clock: Arc<HybridClock>,
        federation: Arc<Federation>,
        batch: usize,
    ) -> Self {
        Self {
            node,
            store,
            signer,
            clock,
            federation,
            batch,
            held: tokio::sync::Mutex::default(),
            hook: OnceLock::new(),
            rounds: AtomicU64::new(0),
            last_round_ms: AtomicU64::new(0),
            kind: PhantomData,
        }
    }

    /// Sets the book told of every change (once).
    pub fn attach(&self, hook: Weak<dyn Hook<K, S>>) {
        let _ = self.hook.set(hook);
    }

    fn hook(&self) -> Option<Arc<dyn Hook<K, S>>> {
        self.hook.get().and_then(Weak::upgrade)
    }

    /// The node's clock.
    pub fn clock(&self) -> &HybridClock {
        &self.clock
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// (Re)loads the set from the store and lets the hook rebuild.
    ///
    /// # Errors
    /// Storage failures, and the hook's.
    pub async fn load(&self) -> NodeResult<()> {
        let mut held = self.held.lock().await;
        let mut fresh = Held::<S>::default();
        let mut versions = Vec::new();
        for bytes in tables::current(&self.store, K::NAME).await? {
            let (signed, version) = decode::<K>(&bytes)?;
            fresh.set.apply(stamp_of::<K>(&version, &signed.payload));
            versions.push(version);
        }
        *held = fresh;
        if let Some(hook) = self.hook() {
            hook.loaded(&mut held, versions).await?;
        }
        metrics::gauge!(format!("urpnet_{}_entries", K::NAME)).set(held.set.len() as f64);
        Ok(())
    }

    /// The lock over the set and the kind's state.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, Held<S>> {
        self.held.lock().await
    }

    /// Exchange rounds run, and when the last one ended (ms).
    pub fn rounds(&self) -> (u64, u64) {
        (
            self.rounds.load(Ordering::Relaxed),
            self.last_round_ms.load(Ordering::Relaxed),
        )
    }

    /// The next publication sequence of this node's own versions.
    pub fn next_seq(&self, held: &Held<S>) -> u64 {
        held.set.max_seq(self.node.as_str()) + 1
    }

    /// Signs, stores and applies a version this node owns (header filled
    /// in by the caller, with [`Replica::next_seq`]), then tells the hook.
    ///
    /// # Errors
    /// `InvalidArgument` (a rule broken, too large), storage failures.
    pub async fn publish(&self, held: &mut Held<S>, version: K::Version) -> NodeResult<Stamp> {
        K::validate(&version)?;
        let payload = version.encode_to_vec();
        if payload.len() > K::MAX_BYTES {
            return Err(NodeError::invalid(
                "content",
                format!("must encode to at most {} bytes", K::MAX_BYTES),
            ));
        }
        let signed = self.signer.sign(K::PAYLOAD, payload);
        let stamp = stamp_of::<K>(&version, &signed.payload);
        tables::write(&self.store, K::NAME, vec![row(&stamp, &signed, true)]).await?;
        held.set.apply(stamp.clone());
        metrics::gauge!(format!("urpnet_{}_entries", K::NAME)).set(held.set.len() as f64);
        if let Some(hook) = self.hook() {
            hook.applied(held, vec![version]).await;
        }
        Ok(stamp)
    }

    /// The current version of an entry as held.
    ///
    /// # Errors
    /// `NotFound`, storage failures.
    pub async fn current(&self, held: &Held<S>, key: &Key) -> NodeResult<K::Version> {
        let stamp = held
            .set
            .get(key)
            .ok_or_else(|| NodeError::NotFound(format!("{} entry {key}", K::NAME)))?;
        let raw = tables::envelope(
            &self.store,
            K::NAME,
            &key.owner,
            &key.entry_id,
            stamp.version as i64,
            &sha_hex(stamp),
        )
        .await?
        .ok_or_else(|| {
            NodeError::Internal(format!(
                "{} entry {key}: version missing from the store",
                K::NAME
            ))
        })?;
        Ok(decode::<K>(&raw)?.1)
    }

    /// Every version of an entry held here, newest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn history(&self, key: &Key) -> NodeResult<Vec<K::Version>> {
        tables::history(&self.store, K::NAME, &key.owner, &key.entry_id)
            .await?
            .iter()
            .map(|raw| decode::<K>(raw).map(|(_, v)| v))
            .collect()
    }

    /// The stored envelopes of these stamps, skipping any that vanished, up
    /// to `max_bytes` in all (at least one).
    async fn envelopes_of(&self, stamps: &[Stamp], max_bytes: usize) -> NodeResult<Vec<Signed>> {
        let mut out = Vec::with_capacity(stamps.len());
        let mut bytes = 0;
        for s in stamps {
            let Some(raw) = tables::envelope(
                &self.store,
                K::NAME,
                &s.key.owner,
                &s.key.entry_id,
                s.version as i64,
                &sha_hex(s),
            )
            .await?
            else {
                continue;
            };
            if bytes + raw.len() > max_bytes && !out.is_empty() {
                break;
            }
            bytes += raw.len();
            out.push(
                Signed::decode(raw.as_slice()).map_err(|e| {
                    NodeError::Internal(format!("stored {} envelope: {e}", K::NAME))
                })?,
            );
        }
        Ok(out)
    }

    /// The federation's member list as this node knows it.
    pub fn federation(&self) -> &Arc<Federation> {
        &self.federation
    }

    /// Verifies and applies versions received from `from`. Good versions
    /// are stored whatever the bad ones did; versions of an origin this
    /// node does not hold are refused as `not_held`.
    ///
    /// # Errors
    /// Storage failures (the set is then reloaded from the store).
    pub async fn ingest_from(
        &self,
        from: &str,
        envelopes: Vec<Signed>,
    ) -> NodeResult<IngestReport> {
        let mut report = IngestReport::default();
        if envelopes.is_empty() {
            return Ok(report);
        }
        let members = self.federation.members();
        let clock = self.clock.clone();
        let (checked, envelopes) = if envelopes.len() < 8 {
            (
                verify::versions::<K>(&envelopes, &members, &clock),
                envelopes,
            )
        } else {
            // Off the async threads, and back: no copy of the batch.
            tokio::task::spawn_blocking(move || {
                (
                    verify::versions::<K>(&envelopes, &members, &clock),
                    envelopes,
                )
            })
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?
        };
        let hook = self.hook();
        let received = format!("urpnet_{}_versions_received_total", K::NAME);
        let mut held = self.held.lock().await;
        let mut rows = Vec::new();
        let mut applied = Vec::new();
        for (index, (result, envelope)) in checked.into_iter().zip(&envelopes).enumerate() {
            match result {
                Err(Refusal::Refuse { code, reason }) => {
                    refused::<K>(from, code, &envelope.author, &reason);
                    report
                        .refused
                        .push(verdict(index, String::new(), reason, 0));
                }
                Err(Refusal::Retry {
                    code,
                    reason,
                    after_ms,
                }) => {
                    tracing::info!(peer = from, kind = K::NAME, reason = code, detail = %reason, "shared version refused for now");
                    metrics::counter!(received.clone(), "result" => "retry").increment(1);
                    report
                        .retry
                        .push(verdict(index, String::new(), reason, after_ms));
                }
                Ok((version, stamp)) => {
                    let key = stamp.key.to_string();
                    if let Some(hook) = &hook
                        && !hook.holds(self.node.as_str(), &stamp.key.owner)
                    {
                        let reason = format!(
                            "{key}: this node does not hold {}'s {}",
                            stamp.key.owner,
                            K::NAME
                        );
                        metrics::counter!(received.clone(), "result" => "not_held").increment(1);
                        report.refused.push(verdict(index, key, reason, 0));
                        continue;
                    }
                    match held.set.apply(stamp.clone()) {
                        Applied::New | Applied::Replaced(_) => {
                            rows.push(row(&stamp, envelope, true));
                            applied.push(version);
                            report.applied += 1;
                            metrics::counter!(received.clone(), "result" => "applied").increment(1);
                        }
                        Applied::Duplicate => {
                            report.duplicates += 1;
                            metrics::counter!(received.clone(), "result" => "duplicate")
                                .increment(1);
                        }
                        Applied::Stale => {
                            let had = held.set.get(&stamp.key).map_or(0, |s| s.version);
                            let reason = format!(
                                "{key} version {} is older than version {had} held here",
                                stamp.version
                            );
                            refused::<K>(from, "stale", &envelope.author, &reason);
                            report.refused.push(verdict(index, key, reason, 0));
                        }
                    }
                }
            }
        }
        if !rows.is_empty() {
            if let Err(err) = tables::write(&self.store, K::NAME, rows).await {
                drop(held);
                tracing::error!(kind = K::NAME, error = %err, "storing shared versions failed; reloading the set from the store");
                self.load().await?;
                return Err(err);
            }
            metrics::gauge!(format!("urpnet_{}_entries", K::NAME)).set(held.set.len() as f64);
            if let Some(hook) = &hook {
                hook.applied(&mut held, applied).await;
            }
            tracing::debug!(
                peer = from,
                kind = K::NAME,
                applied = report.applied,
                "shared versions applied"
            );
        }
        Ok(report)
    }
}
