//! Epidemic anti-entropy of the FAQ set (DESIGN.md §5).
//!
//! Every `faq.interval` (with jitter) a node picks `faq.fanout` random
//! active peers and, with each, runs one push-pull exchange:
//!
//! 1. `Sync`: it sends its digest (per owner: highest sequence, count,
//!    hash); the peer answers with the versions it lacks, the peer's own
//!    digest, and listings for owners where the sets differ at equal
//!    sequences;
//! 2. `Push`: it sends the versions the peer lacks and asks for the entries
//!    a listing showed newer there.
//!
//! Versions of third parties are relayed like one's own: each is verified
//! against its owner's key, so relaying is safe and a version crosses any
//! partition some chain of nodes bridges. Push-pull with random peers
//! reaches all N nodes in about log2(N) + ln ln N rounds (Karp et al.,
//! "Randomized rumor spreading", 2000).

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
    OriginListing,
};
use urpnet_proto::validate::Violations;
use urpnet_shared_faq::set::{Answer, Plan};
use urpnet_shared_faq::{Key, Stamp};

use super::FaqBook;
use crate::error::NodeError;
use crate::peering::PeeringContext;

/// Most owners in a digest.
pub const MAX_ORIGINS: usize = 20_000;
/// Most entries listed in one answer.
pub const MAX_LISTED: usize = 10_000;
/// Most versions (or wanted keys) in one message.
pub const MAX_VERSIONS: usize = 500;
/// Most bytes of versions in one message.
pub const MAX_VERSION_BYTES_PER_MESSAGE: usize = 2 * 1024 * 1024;

impl FaqBook {
    async fn answer(&self, theirs: &[OriginDigest]) -> (Answer, Vec<OriginDigest>) {
        let state = self.state.lock().await;
        let answer = state.set.answer(theirs, self.config.faq.batch, MAX_LISTED);
        (answer, state.set.digest())
    }

    async fn plan(&self, theirs: &[OriginDigest], listings: &[OriginListing]) -> Plan {
        let state = self.state.lock().await;
        state.set.plan(theirs, listings, self.config.faq.batch)
    }

    async fn held(&self, keys: &[FaqKey]) -> Vec<Stamp> {
        let state = self.state.lock().await;
        keys.iter()
            .filter_map(|k| state.set.get(&Key::new(&k.owner, &k.entry_id)).cloned())
            .collect()
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

/// The `FaqExchange` service of one node, on its peering port.
#[derive(Debug, Clone)]
pub struct FaqExchangeService {
    book: Arc<FaqBook>,
    peering: Arc<PeeringContext>,
}

impl FaqExchangeService {
    /// A service over the node's FAQ book, gated like `Peering`.
    pub fn new(book: Arc<FaqBook>, peering: Arc<PeeringContext>) -> Self {
        Self { book, peering }
    }
}

#[tonic::async_trait]
impl FaqExchange for FaqExchangeService {
    #[tracing::instrument(skip_all, fields(peer))]
    async fn sync(
        &self,
        request: Request<FaqSyncRequest>,
    ) -> Result<Response<FaqSyncResponse>, Status> {
        let from = self.peering.admitted(&request)?;
        tracing::Span::current().record("peer", from.as_str());
        let req = request.into_inner();
        if let Err(v) = check_digest(&req.digest) {
            super::refused(&from, "bad_digest", &from, &v.to_string());
            return Err(NodeError::from(v).into());
        }
        let (answer, digest) = self.book.answer(&req.digest).await;
        let versions = self
            .book
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
            super::refused(&from, "oversized_batch", &from, &v.to_string());
            return Err(NodeError::from(v).into());
        }
        let report = self.book.ingest(&from, req.versions).await?;
        let wanted = self.book.held(&req.want).await;
        let wanted = self
            .book
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

/// One push-pull exchange with `peer`.
///
/// # Errors
/// The peer is unreachable or refused the call; storage failures.
pub async fn exchange_with(
    book: &FaqBook,
    peering: &PeeringContext,
    peer: &str,
) -> anyhow::Result<Exchanged> {
    let max = peering.config.peering.max_message_bytes;
    let timeout = peering.config.peering.request_timeout;
    let mut client = FaqExchangeClient::new(peering.channel(peer).await?)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let mut request = Request::new(FaqSyncRequest {
        digest: book.digest().await,
    });
    request.set_timeout(timeout);
    let answer = client.sync(request).await?.into_inner();
    let pulled = book.ingest(peer, answer.versions).await?;
    let plan = book.plan(&answer.digest, &answer.listings).await;
    let mut out = Exchanged {
        pulled: pulled.applied,
        pushed: 0,
    };
    if plan.push.is_empty() && plan.want.is_empty() {
        return Ok(out);
    }
    let versions = book
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
    let mut request = Request::new(FaqPushRequest { versions, want });
    request.set_timeout(timeout);
    let pushed = client.push(request).await?.into_inner();
    for refusal in &pushed.refused {
        tracing::warn!(peer, item = refusal.index, reason = %refusal.reason, "peer refused a FAQ version");
    }
    out.pushed = pushed.applied;
    out.pulled += book.ingest(peer, pushed.wanted).await?.applied;
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

/// One round: exchanges with `faq.fanout` random peers at once. Returns
/// how many answered.
pub async fn round(book: &FaqBook, peering: &PeeringContext) -> usize {
    let peers: Vec<String> = {
        let all = candidates(peering);
        let mut rng = rand::thread_rng();
        all.choose_multiple(&mut rng, book.config.faq.fanout)
            .cloned()
            .collect()
    };
    let results = futures::future::join_all(
        peers
            .iter()
            .map(|peer| async move { (peer, exchange_with(book, peering, peer).await) }),
    )
    .await;
    let mut reached = 0;
    for (peer, result) in results {
        match result {
            Ok(moved) => {
                reached += 1;
                if moved != Exchanged::default() {
                    tracing::debug!(peer = %peer, pulled = moved.pulled, pushed = moved.pushed, "FAQ exchange");
                }
            }
            Err(error) => {
                metrics::counter!("urpnet_faq_exchange_failures_total").increment(1);
                tracing::debug!(peer = %peer, %error, "FAQ exchange failed");
            }
        }
    }
    book.rounds.fetch_add(1, Ordering::Relaxed);
    book.last_round_ms
        .store(urpnet_proto::hlc::system_time_ms(), Ordering::Relaxed);
    metrics::counter!("urpnet_faq_rounds_total").increment(1);
    reached
}

/// Runs rounds every `faq.interval` (±25 % jitter, so nodes started
/// together do not call in step) until `shutdown`. The first round comes
/// soon after start, so a restarted node catches up at once.
pub async fn run(book: Arc<FaqBook>, peering: Arc<PeeringContext>, shutdown: CancellationToken) {
    use rand::Rng as _;
    let every = book.config.faq.interval;
    let mut wait = every.min(Duration::from_secs(1)) / 2;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        round(&book, &peering).await;
        let factor = rand::thread_rng().gen_range(0.75..1.25);
        wait = every.mul_f64(factor);
    }
}
