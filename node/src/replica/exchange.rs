//! Epidemic anti-entropy of every kind of shared document (DESIGN.md §5,
//! §12).
//!
//! Every `faq.interval` (with jitter) a node picks `faq.fanout` random
//! active peers and, with each and for each kind, runs one push-pull
//! exchange:
//!
//! 1. `Sync`: it sends its digest of the kind (per owner: highest sequence,
//!    count, hash); the peer answers with the versions it lacks, the peer's
//!    own digest, and listings for owners where the sets differ at equal
//!    sequences;
//! 2. `Push`: it sends the versions the peer lacks and asks for the entries
//!    a listing showed newer there.
//!
//! Versions of third parties are relayed like one's own: each is verified
//! against its owner's key, so relaying is safe and a version crosses any
//! partition some chain of nodes bridges. Push-pull with random peers
//! reaches all N nodes in about log2(N) + ln ln N rounds (Karp et al.,
//! "Randomized rumor spreading", 2000). A kind held only by some nodes
//! (charters: a region's nodes) is offered to a peer only for the origins
//! that peer holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::seq::SliceRandom as _;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use urpnet_proto::ids::NodeId;
use urpnet_proto::v1::faq_exchange_client::FaqExchangeClient;
use urpnet_proto::v1::faq_exchange_server::FaqExchange;
use urpnet_proto::v1::{
    FaqKey, FaqPushRequest, FaqPushResponse, FaqSyncRequest, FaqSyncResponse, OriginDigest,
    OriginListing, SharedKind, Signed,
};
use urpnet_proto::validate::Violations;
use urpnet_shared_faq::set::{Answer, Plan};
use urpnet_shared_faq::{Key, Stamp};

use super::{IngestReport, Kind, Replica, refused};
use crate::config::NodeConfig;
use crate::error::{NodeError, NodeResult};
use crate::peering::PeeringContext;

/// Most owners in a digest.
pub const MAX_ORIGINS: usize = 20_000;
/// Most entries listed in one answer.
pub const MAX_LISTED: usize = 10_000;
/// Most versions (or wanted keys) in one message.
pub const MAX_VERSIONS: usize = 500;
/// Most bytes of versions in one message (one larger version still goes
/// alone).
pub const MAX_VERSION_BYTES_PER_MESSAGE: usize = 2 * 1024 * 1024;

/// One kind's replica as the exchange sees it.
#[tonic::async_trait]
pub trait Shared: Send + Sync {
    /// The kind on the wire.
    fn kind(&self) -> SharedKind;
    /// The kind's name.
    fn name(&self) -> &'static str;
    /// This node's digest.
    async fn digest(&self) -> Vec<OriginDigest>;
    /// The answer to `caller`'s digest (`all`: the caller keeps every
    /// origin), and this node's digest.
    async fn answer(
        &self,
        caller: &str,
        theirs: &[OriginDigest],
        all: bool,
    ) -> (Answer, Vec<OriginDigest>);
    /// Whether this node keeps every origin of the kind.
    fn holds_all(&self) -> bool;
    /// What to push to and ask of `peer`.
    async fn plan(&self, peer: &str, theirs: &[OriginDigest], listings: &[OriginListing]) -> Plan;
    /// The stamps held of these keys.
    async fn wanted(&self, keys: &[FaqKey]) -> Vec<Stamp>;
    /// Their envelopes, up to `max_bytes`.
    async fn envelopes(&self, stamps: &[Stamp], max_bytes: usize) -> NodeResult<Vec<Signed>>;
    /// Verifies and applies received versions.
    async fn ingest(&self, from: &str, envelopes: Vec<Signed>) -> NodeResult<IngestReport>;
    /// A round ended.
    fn round_done(&self);
    /// Logs and counts a refusal of the exchange itself.
    fn refused(&self, peer: &str, code: &'static str, reason: &str);
}

#[tonic::async_trait]
impl<K: Kind, S: Default + Send + 'static> Shared for Replica<K, S> {
    fn kind(&self) -> SharedKind {
        K::SHARED
    }

    fn name(&self) -> &'static str {
        K::NAME
    }

    async fn digest(&self) -> Vec<OriginDigest> {
        self.lock().await.set.digest()
    }

    async fn answer(
        &self,
        caller: &str,
        theirs: &[OriginDigest],
        all: bool,
    ) -> (Answer, Vec<OriginDigest>) {
        let hook = self.hook();
        let held = self.lock().await;
        let answer = held
            .set
            .answer_for(theirs, self.batch, MAX_LISTED, |origin| {
                all || hook.as_ref().is_none_or(|h| h.holds(caller, origin))
            });
        (answer, held.set.digest())
    }

    fn holds_all(&self) -> bool {
        self.hook().is_some_and(|h| h.holds_all())
    }

    async fn plan(&self, peer: &str, theirs: &[OriginDigest], listings: &[OriginListing]) -> Plan {
        let hook = self.hook();
        let held = self.lock().await;
        held.set.plan_for(theirs, listings, self.batch, |origin| {
            hook.as_ref().is_none_or(|h| h.holds(peer, origin))
        })
    }

    async fn wanted(&self, keys: &[FaqKey]) -> Vec<Stamp> {
        let held = self.lock().await;
        keys.iter()
            .filter_map(|k| held.set.get(&Key::new(&k.owner, &k.entry_id)).cloned())
            .collect()
    }

    async fn envelopes(&self, stamps: &[Stamp], max_bytes: usize) -> NodeResult<Vec<Signed>> {
        self.envelopes_of(stamps, max_bytes).await
    }

    async fn ingest(&self, from: &str, envelopes: Vec<Signed>) -> NodeResult<IngestReport> {
        self.ingest_from(from, envelopes).await
    }

    fn round_done(&self) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.last_round_ms
            .store(urpnet_proto::hlc::system_time_ms(), Ordering::Relaxed);
    }

    fn refused(&self, peer: &str, code: &'static str, reason: &str) {
        refused::<K>(peer, code, peer, reason);
    }
}

/// The kinds a node shares, by wire kind.
#[derive(Clone, Default)]
pub struct Kinds(BTreeMap<i32, Arc<dyn Shared>>);

impl std::fmt::Debug for Kinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.values().map(|k| k.name()))
            .finish()
    }
}

impl Kinds {
    /// Adds a kind.
    #[must_use]
    pub fn with(mut self, kind: Arc<dyn Shared>) -> Self {
        self.0.insert(kind.kind() as i32, kind);
        self
    }

    fn get(&self, kind: i32) -> Result<&Arc<dyn Shared>, Status> {
        self.0.get(&kind).ok_or_else(|| {
            Status::invalid_argument(format!(
                "kind: {kind} is not a kind of shared document this node keeps"
            ))
        })
    }
}

fn check_digest(digest: &[OriginDigest]) -> Result<(), Violations> {
    let mut v = Violations::new();
    v.check(
        digest.len() <= MAX_ORIGINS,
        "digest",
        format!("at most {MAX_ORIGINS} owners"),
    );
    for (i, d) in digest.iter().enumerate().take(MAX_ORIGINS) {
        if NodeId::new(&d.origin).is_err() {
            v.add(format!("digest[{i}].origin"), "must be a node id");
        }
        if d.hash.len() != 32 {
            v.add(format!("digest[{i}].hash"), "must be 32 bytes");
        }
        if v.0.len() >= 10 {
            break;
        }
    }
    v.into_result()
}

/// The `FaqExchange` service of one node, on its peering port, for every
/// kind it shares.
#[derive(Debug, Clone)]
pub struct ExchangeService {
    kinds: Kinds,
    peering: Arc<PeeringContext>,
}

impl ExchangeService {
    /// A service over the node's kinds, gated like `Peering`.
    pub fn new(kinds: Kinds, peering: Arc<PeeringContext>) -> Self {
        Self { kinds, peering }
    }
}

#[tonic::async_trait]
impl FaqExchange for ExchangeService {
    #[tracing::instrument(skip_all, fields(peer))]
    async fn sync(
        &self,
        request: Request<FaqSyncRequest>,
    ) -> Result<Response<FaqSyncResponse>, Status> {
        let from = self.peering.admitted(&request)?;
        tracing::Span::current().record("peer", from.as_str());
        let req = request.into_inner();
        let kind = self.kinds.get(req.kind)?;
        if let Err(v) = check_digest(&req.digest) {
            kind.refused(&from, "bad_digest", &v.to_string());
            return Err(NodeError::from(v).into());
        }
        let (answer, digest) = kind.answer(&from, &req.digest, req.holds_all).await;
        let versions = kind
            .envelopes(&answer.send, MAX_VERSION_BYTES_PER_MESSAGE)
            .await?;
        let truncated = answer.truncated || versions.len() < answer.send.len();
        Ok(Response::new(FaqSyncResponse {
            versions,
            digest,
            listings: answer.listings,
            truncated,
        }))
    }

    #[tracing::instrument(skip_all, fields(peer))]
    async fn push(
        &self,
        request: Request<FaqPushRequest>,
    ) -> Result<Response<FaqPushResponse>, Status> {
        let from = self.peering.admitted(&request)?;
        tracing::Span::current().record("peer", from.as_str());
        let req = request.into_inner();
        let kind = self.kinds.get(req.kind)?;
        let mut v = Violations::new();
        v.check(
            req.versions.len() <= MAX_VERSIONS,
            "versions",
            format!("at most {MAX_VERSIONS} per message"),
        );
        v.check(
            req.want.len() <= MAX_VERSIONS,
            "want",
            format!("at most {MAX_VERSIONS} per message"),
        );
        if let Err(v) = v.into_result() {
            kind.refused(&from, "oversized_batch", &v.to_string());
            return Err(NodeError::from(v).into());
        }
        let report = kind.ingest(&from, req.versions).await?;
        let wanted = kind.wanted(&req.want).await;
        let wanted = kind
            .envelopes(&wanted, MAX_VERSION_BYTES_PER_MESSAGE)
            .await?;
        Ok(Response::new(FaqPushResponse {
            applied: report.applied,
            duplicates: report.duplicates,
            refused: report.refused,
            retry: report.retry,
            wanted,
        }))
    }
}

/// What one exchange moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exchanged {
    /// Versions received that changed this node's set.
    pub pulled: u32,
    /// Versions sent that changed the peer's set.
    pub pushed: u32,
}

/// One push-pull exchange of one kind with `peer`.
///
/// # Errors
/// The peer is unreachable or refused the call; storage failures.
pub async fn exchange_with(
    kind: &dyn Shared,
    peering: &PeeringContext,
    peer: &str,
) -> anyhow::Result<Exchanged> {
    let max = peering.config.peering.max_message_bytes;
    let timeout = peering.config.peering.request_timeout;
    let mut client = FaqExchangeClient::new(peering.channel(peer).await?)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let mut request = Request::new(FaqSyncRequest {
        digest: kind.digest().await,
        kind: kind.kind() as i32,
        holds_all: kind.holds_all(),
    });
    request.set_timeout(timeout);
    let answer = client.sync(request).await?.into_inner();
    let pulled = kind.ingest(peer, answer.versions).await?;
    let plan = kind.plan(peer, &answer.digest, &answer.listings).await;
    let mut out = Exchanged {
        pulled: pulled.applied,
        pushed: 0,
    };
    if plan.push.is_empty() && plan.want.is_empty() {
        return Ok(out);
    }
    let versions = kind
        .envelopes(&plan.push, MAX_VERSION_BYTES_PER_MESSAGE)
        .await?;
    let want = plan
        .want
        .iter()
        .map(|k| FaqKey {
            owner: k.owner.clone(),
            entry_id: k.entry_id.clone(),
        })
        .collect();
    let mut request = Request::new(FaqPushRequest {
        versions,
        want,
        kind: kind.kind() as i32,
    });
    request.set_timeout(timeout);
    let pushed = client.push(request).await?.into_inner();
    for refusal in &pushed.refused {
        tracing::warn!(peer, kind = kind.name(), item = refusal.index, reason = %refusal.reason, "peer refused a shared version");
    }
    out.pushed = pushed.applied;
    out.pulled += kind.ingest(peer, pushed.wanted).await?.applied;
    Ok(out)
}

/// The peers a round may call: active members with an endpoint, not this
/// node, not quarantined.
fn candidates(peering: &PeeringContext) -> Vec<String> {
    let members = peering.federation.members();
    members
        .by_id
        .values()
        .filter(|m| {
            m.id != peering.node.as_str()
                && !m.endpoint.is_empty()
                && members.is_active(&m.id)
                && peering.quarantined(&m.id).is_none()
        })
        .map(|m| m.id.clone())
        .collect()
}

/// One round: with `faq.fanout` random peers at once, one exchange per
/// kind each. Returns how many peers answered every exchange.
pub async fn round(kinds: &Kinds, config: &NodeConfig, peering: &PeeringContext) -> usize {
    let peers: Vec<String> = {
        let all = candidates(peering);
        let mut rng = rand::thread_rng();
        all.choose_multiple(&mut rng, config.faq.fanout)
            .cloned()
            .collect()
    };
    let results = futures::future::join_all(peers.iter().map(|peer| async move {
        let mut ok = true;
        for kind in kinds.0.values() {
            match exchange_with(kind.as_ref(), peering, peer).await {
                Ok(moved) => {
                    if moved != Exchanged::default() {
                        tracing::debug!(peer = %peer, kind = kind.name(), pulled = moved.pulled, pushed = moved.pushed, "shared exchange");
                    }
                }
                Err(error) => {
                    ok = false;
                    metrics::counter!(format!("urpnet_{}_exchange_failures_total", kind.name()))
                        .increment(1);
                    tracing::debug!(peer = %peer, kind = kind.name(), %error, "shared exchange failed");
                }
            }
        }
        ok
    }))
    .await;
    for kind in kinds.0.values() {
        kind.round_done();
        metrics::counter!(format!("urpnet_{}_rounds_total", kind.name())).increment(1);
    }
    results.into_iter().filter(|ok| *ok).count()
}

/// Runs rounds every `faq.interval` (±25 % jitter, so nodes started
/// together do not call in step) until `shutdown`. The first round comes
/// soon after start, so a restarted node catches up at once.
pub async fn run(
    kinds: Kinds,
    config: NodeConfig,
    peering: Arc<PeeringContext>,
    shutdown: CancellationToken,
) {
    use rand::Rng as _;
    let every = config.faq.interval;
    let mut wait = every.min(Duration::from_secs(1)) / 2;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        round(&kinds, &config, &peering).await;
        let factor = rand::thread_rng().gen_range(0.75..1.25);
        wait = every.mul_f64(factor);
    }
}
