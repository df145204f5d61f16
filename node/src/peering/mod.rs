//! Peering (DESIGN.md §4): shared tickets travel between their participants.
//!
//! - [`service`]: the `Peering` gRPC server other nodes deliver to, behind a
//!   gate (certificate identity, active membership, quarantine);
//! - [`verify`]: the checks on each received event before it is stored;
//! - [`delivery`]: one worker per destination peer draining the
//!   transactional outbox in order, with backoff;
//! - [`anti_entropy`]: periodic per-ticket digest comparison with each peer.
//!
//! Events and their outbox rows are written by the store's single writer in
//! one transaction; a receiver applies idempotently by event id. At-least-once
//! delivery plus idempotent apply: each event takes effect exactly once.

pub mod anti_entropy;
pub mod delivery;
pub mod equivocation;
pub mod ingest;
pub mod service;
#[cfg(test)]
mod simulation;
pub mod tables;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;
use tonic::transport::Channel;
use urpnet_proto::hlc::HybridClock;
use urpnet_proto::ids::NodeId;
use urpnet_proto::tls::{self, Identity, TlsFiles};
use urpnet_proto::v1::peering_client::PeeringClient;

use crate::config::NodeConfig;
use crate::registry_link::Federation;
use crate::store::Store;

/// Most events in one `Deliver` call, enforced by receivers.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// Most contacts in one `Deliver` call.
pub const MAX_BATCH_CONTACTS: usize = 100;
/// Most tickets in one `CompareDigests` call.
pub const MAX_DIGESTS: usize = 1000;

/// What peering needs, shared by the server, the workers and anti-entropy.
#[derive(Debug)]
pub struct PeeringContext {
    /// This node.
    pub node: NodeId,
    /// Configuration.
    pub config: NodeConfig,
    /// The store.
    pub store: Store,
    /// The cached member list.
    pub federation: Arc<Federation>,
    /// The node's clock (received stamps move it forward).
    pub clock: Arc<HybridClock>,
    /// Delivery workers and their state.
    pub deliveries: delivery::Deliveries,
    /// Quarantined peers and why (mirrors the `quarantine` table).
    quarantine: std::sync::RwLock<std::collections::BTreeMap<String, String>>,
    clients: Clients,
}

impl PeeringContext {
    /// A context for a node.
    pub fn new(
        config: NodeConfig,
        store: Store,
        federation: Arc<Federation>,
        clock: Arc<HybridClock>,
    ) -> Arc<Self> {
        let files = TlsFiles::in_dir(&config.tls_dir());
        Arc::new(Self {
            node: config.node.id.clone(),
            config,
            store,
            federation,
            clock,
            deliveries: delivery::Deliveries::default(),
            quarantine: std::sync::RwLock::default(),
            clients: Clients {
                files,
                cache: Mutex::new(None),
                channels: Mutex::default(),
            },
        })
    }

    /// Loads the quarantined peers from the store (at start-up).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn load_quarantine(&self) -> crate::NodeResult<()> {
        let list = crate::peering::tables::quarantined(&self.store).await?;
        *self.quarantine.write().expect("quarantine lock") = list.into_iter().collect();
        Ok(())
    }

    /// Why `peer` is quarantined, if it is.
    pub fn quarantined(&self, peer: &str) -> Option<String> {
        self.quarantine
            .read()
            .expect("quarantine lock")
            .get(peer)
            .cloned()
    }

    /// Quarantines `peer` (`Some(reason)`) or releases it (`None`): stored
    /// first, then applied. A released peer's delivery resumes at once.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_quarantine(
        &self,
        peer: &str,
        reason: Option<String>,
    ) -> crate::NodeResult<()> {
        crate::peering::tables::set_quarantine(&self.store, peer, reason.clone()).await?;
        let mut q = self.quarantine.write().expect("quarantine lock");
        match reason {
            Some(reason) => {
                tracing::warn!(%peer, %reason, "peer quarantined");
                metrics::counter!("urpnet_peers_quarantined_total").increment(1);
                q.insert(peer.to_string(), reason);
            }
            None => {
                tracing::info!(%peer, "peer released from quarantine");
                q.remove(peer);
            }
        }
        drop(q);
        self.deliveries.wake(peer);
        Ok(())
    }

    /// A client for `peer` at its endpoint in the member list. The server
    /// must present `peer`'s identity.
    ///
    /// # Errors
    /// When `peer` is not an active member with an endpoint, or this node's
    /// TLS files are missing.
    pub async fn client(&self, peer: &str) -> anyhow::Result<PeeringClient<Channel>> {
        let max = self.config.peering.max_message_bytes;
        Ok(PeeringClient::new(self.channel(peer).await?)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max))
    }

    /// A mutual-TLS channel to `peer`'s peering port (Peering and
    /// FaqExchange); the server must present `peer`'s identity.
    ///
    /// # Errors
    /// When `peer` is not an active member with an endpoint, or this node's
    /// TLS files are missing.
    pub async fn channel(&self, peer: &str) -> anyhow::Result<Channel> {
        let members = self.federation.members();
        let member = members
            .by_id
            .get(peer)
            .filter(|_| members.is_active(peer))
            .ok_or_else(|| anyhow::anyhow!("{peer} is not an active member"))?;
        anyhow::ensure!(
            !member.endpoint.is_empty(),
            "{peer} has no peering endpoint"
        );
        let config = self.clients.client_config().await?;
        // Channels are kept per peer and reused (one TLS handshake, then
        // HTTP/2 streams) while the peer's endpoint and this node's client
        // certificate stay the same.
        let mut channels = self.clients.channels.lock().await;
        if let Some((endpoint, used, channel)) = channels.get(peer)
            && *endpoint == member.endpoint
            && Arc::ptr_eq(used, &config)
        {
            return Ok(channel.clone());
        }
        let id = NodeId::new(peer)?;
        let channel = tls::channel_to(
            &member.endpoint,
            config.clone(),
            self.config.peering.connect_timeout,
            Identity::Node(id),
        )?;
        channels.insert(
            peer.to_string(),
            (member.endpoint.clone(), config, channel.clone()),
        );
        Ok(channel)
    }

    /// The caller's node id, if it may call the peering port at all: its
    /// certificate names a node (never the request), that node is an active
    /// member in the cached member list, and it is not quarantined here.
    /// Every refusal is logged and counted.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` or `PERMISSION_DENIED`, with the reason.
    pub fn gate<T>(&self, request: &tonic::Request<T>) -> Result<String, tonic::Status> {
        let info = tls::peer_of(request);
        let remote = info.map(|i| i.remote.to_string()).unwrap_or_default();
        let Some(Identity::Node(id)) = info.and_then(|i| i.cert.as_ref()).map(|c| &c.identity)
        else {
            service::refused("no_node_certificate", &remote, "");
            return Err(tonic::Status::unauthenticated(
                "Peering needs a node certificate issued by the federation CA",
            ));
        };
        let id = id.to_string();
        let members = self.federation.members();
        if !members.is_active(&id) {
            let status = members
                .by_id
                .get(&id)
                .map_or("unknown", |m| crate::registry_link::status_name(m.status));
            service::refused("not_active_member", &remote, &id);
            return Err(tonic::Status::permission_denied(format!(
                "{id} is not an active member of the federation (status: {status})"
            )));
        }
        if let Some(reason) = self.quarantined(&id) {
            service::refused("quarantined", &remote, &id);
            return Err(tonic::Status::permission_denied(format!(
                "{id} is quarantined by this node: {reason}"
            )));
        }
        // Inbound contact: the peer is up, so deliver to it now.
        self.deliveries.wake(&id);
        Ok(id)
    }
}

/// The node id of the peer a request's [`PeerGate`] admitted.
#[derive(Debug, Clone)]
pub struct Admitted(pub String);

impl PeeringContext {
    /// The caller's node id: the one [`PeerGate`] admitted, or (for a
    /// service not behind it) the gate's answer now.
    ///
    /// # Errors
    /// As [`PeeringContext::gate`].
    pub fn admitted<T>(&self, request: &tonic::Request<T>) -> Result<String, tonic::Status> {
        match request.extensions().get::<Admitted>() {
            Some(Admitted(id)) => Ok(id.clone()),
            None => self.gate(request),
        }
    }
}

/// The peering port's gate and per-peer rate limit as an interceptor, so a
/// caller without a node certificate, not an active member, quarantined or
/// over its rate is refused before its request body is read and decoded
/// (docs/security.md, T3).
#[derive(Debug, Clone)]
pub struct PeerGate {
    ctx: Arc<PeeringContext>,
    limits: urpnet_proto::limits::PerIdentity,
}

impl PeerGate {
    /// The gate of `ctx`, with `[peering] rate_per_second` and `rate_burst`.
    pub fn new(ctx: Arc<PeeringContext>) -> Self {
        let limits = urpnet_proto::limits::PerIdentity::new(
            "peering",
            ctx.config.peering.rate_per_second,
            ctx.config.peering.rate_burst,
        );
        Self { ctx, limits }
    }
}

impl tonic::service::Interceptor for PeerGate {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let id = self.ctx.gate(&request)?;
        if let Err(wait) = self.limits.check(&id) {
            let remote = tls::peer_of(&request)
                .map(|i| i.remote.to_string())
                .unwrap_or_default();
            service::refused("rate_limited", &remote, &id);
            return Err(crate::error::NodeError::rate_limited(&id, wait).into());
        }
        request.extensions_mut().insert(Admitted(id));
        Ok(request)
    }
}

/// This node's TLS client configuration, reloaded when its files change
/// (a renewed certificate).
#[derive(Debug)]
struct Clients {
    files: TlsFiles,
    cache: Mutex<Option<(Option<SystemTime>, Arc<tls::ClientConfig>)>>,
    /// Per peer: the endpoint and client configuration a channel was made
    /// with, and the channel.
    channels: Mutex<std::collections::HashMap<String, ChannelEntry>>,
}

type ChannelEntry = (String, Arc<tls::ClientConfig>, Channel);

impl Clients {
    async fn client_config(&self) -> anyhow::Result<Arc<tls::ClientConfig>> {
        let modified = self.files.modified();
        let mut cache = self.cache.lock().await;
        if let Some((at, config)) = cache.as_ref()
            && *at == modified
        {
            return Ok(config.clone());
        }
        let config = self.files.load()?.client_config()?;
        *cache = Some((modified, config.clone()));
        Ok(config)
    }
}

/// Full-jitter exponential backoff: a random wait in `0..=min(cap, base·2^n)`
/// (AWS architecture blog, "Exponential Backoff and Jitter").
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    use rand::Rng as _;
    let ceiling = base
        .saturating_mul(1u32 << failures.min(20))
        .min(cap)
        .max(Duration::from_millis(1));
    let ms = rand::thread_rng().gen_range(0..=ceiling.as_millis() as u64);
    Duration::from_millis(ms.max(base.as_millis() as u64 / 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_its_cap() {
        let base = Duration::from_millis(200);
        let cap = Duration::from_secs(60);
        for failures in 0..40 {
            let d = backoff(failures, base, cap);
            let ceiling = base.saturating_mul(1u32 << failures.min(20)).min(cap);
            assert!(
                d <= ceiling.max(base / 4),
                "{failures}: {d:?} > {ceiling:?}"
            );
        }
        // With many failures the waits spread over the whole capped range.
        let waits: Vec<Duration> = (0..200).map(|_| backoff(30, base, cap)).collect();
        assert!(waits.iter().any(|d| *d > Duration::from_secs(30)));
        assert!(waits.iter().any(|d| *d < Duration::from_secs(30)));
    }
}
