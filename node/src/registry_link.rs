//! The node's side of the registry (DESIGN.md §6): register, report load
//! every heartbeat, keep the member list and the taxonomy (cached on disk so
//! a restart without the registry still knows its peers), and renew the
//! node's certificate before it expires.
//!
//! A revocation reaches the node with the first heartbeat after it: every
//! heartbeat answer carries the membership version, and a new version makes
//! the node fetch the list at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::tls::{self, TlsFiles, TlsMaterial};
use urpnet_proto::v1::registry_client::RegistryClient;
use urpnet_proto::v1::{
    GetMembersRequest, GetMembersResponse, GetTaxonomyRequest, HeartbeatRequest, LoadReport,
    Member, MemberStatus, RegisterRequest, RenewCertificateRequest, Taxonomy as TaxonomyProto,
};

use crate::config::NodeConfig;
use crate::store::Store;
use crate::taxonomy::{Taxonomy, TaxonomyHandle};

/// Files the link keeps in `data_dir/registry`.
fn cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("registry")
}

/// The member list as this node last received it.
#[derive(Debug, Clone, Default)]
pub struct Members {
    /// Version of the list at the registry.
    pub version: u64,
    /// Members by id.
    pub by_id: BTreeMap<String, Member>,
}

impl Members {
    /// Whether `id` is an active member (peers that are not are refused).
    pub fn is_active(&self, id: &str) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|m| m.status == MemberStatus::Active as i32)
    }
}

/// A member's ed25519 key, if it publishes a valid one.
pub fn signing_key(member: &Member) -> Option<ed25519_dalek::VerifyingKey> {
    let bytes = <[u8; 32]>::try_from(member.signing_key.as_slice()).ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .ok()
        .filter(|key| !key.is_weak())
}

/// A member status as a word: "active", "suspended", "revoked".
pub fn status_name(status: i32) -> &'static str {
    match MemberStatus::try_from(status) {
        Ok(MemberStatus::Active) => "active",
        Ok(MemberStatus::Suspended) => "suspended",
        Ok(MemberStatus::Revoked) => "revoked",
        _ => "unknown",
    }
}

/// Whether the registry answers, as the heartbeat last found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistryReach {
    /// Not asked yet (or the node runs without a registry).
    #[default]
    Unknown,
    /// The last heartbeat was answered.
    Reachable,
    /// Heartbeats fail since this instant (ms since the Unix epoch); the node
    /// works on its cached member list and taxonomy.
    Unreachable {
        /// First failure of this outage.
        since_ms: u64,
    },
}

/// The gRPC health service name that reports the registry's reachability
/// (SERVING / NOT_SERVING; the node's own services stay SERVING).
pub const REGISTRY_HEALTH: &str = "urpnet.node.Registry";

/// What the node knows of its federation; shared with every part that needs
/// the member list.
#[derive(Debug)]
pub struct Federation {
    members: RwLock<Arc<Members>>,
    reach: tokio::sync::watch::Sender<RegistryReach>,
    catching_up: std::sync::atomic::AtomicBool,
}

impl Default for Federation {
    fn default() -> Self {
        Self {
            members: RwLock::default(),
            reach: tokio::sync::watch::Sender::new(RegistryReach::Unknown),
            catching_up: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Federation {
    /// Whether this node, restored from a backup, still waits for its
    /// peers to give back what happened since (writes are held meanwhile:
    /// an event it signed now could reuse a place in its own author chain).
    pub fn catching_up(&self) -> bool {
        self.catching_up.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// See [`Federation::catching_up`].
    pub fn set_catching_up(&self, on: bool) {
        self.catching_up
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the registry answers.
    pub fn registry_reach(&self) -> RegistryReach {
        *self.reach.borrow()
    }

    /// Follows [`Federation::registry_reach`].
    pub fn watch_reach(&self) -> tokio::sync::watch::Receiver<RegistryReach> {
        self.reach.subscribe()
    }

    /// Records a heartbeat's outcome: logs and counts the start and the end
    /// of an outage once each.
    fn heartbeat_outcome(&self, ok: bool, error: &str) {
        let now = urpnet_proto::hlc::system_time_ms();
        let before = self.registry_reach();
        if ok {
            if let RegistryReach::Unreachable { since_ms } = before {
                tracing::info!(
                    down_for_s = now.saturating_sub(since_ms) / 1000,
                    "the registry answers again"
                );
            }
            self.reach.send_replace(RegistryReach::Reachable);
            metrics::gauge!("urpnet_node_registry_reachable").set(1.0);
            metrics::gauge!("urpnet_node_registry_last_contact_seconds").set(now as f64 / 1000.0);
        } else {
            if !matches!(before, RegistryReach::Unreachable { .. }) {
                tracing::warn!(
                    %error,
                    members_version = self.members().version,
                    "the registry is unreachable: working on the cached member list and taxonomy (handoffs need a named body until it returns)"
                );
                self.reach
                    .send_replace(RegistryReach::Unreachable { since_ms: now });
            }
            metrics::gauge!("urpnet_node_registry_reachable").set(0.0);
        }
    }

    /// The display name of a body: `own` for this node (`own_id`), a
    /// member's name as the registry publishes it, or else its id.
    pub fn body_name(&self, node: &str, own_id: &str, own: &str) -> String {
        if node == own_id {
            return own.to_string();
        }
        self.members()
            .by_id
            .get(node)
            .map(|m| m.display_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| node.to_string())
    }

    /// The current member list.
    pub fn members(&self) -> Arc<Members> {
        self.members.read().expect("members lock").clone()
    }

    /// Switches to a new member list.
    pub fn replace(&self, members: Members) {
        *self.members.write().expect("members lock") = Arc::new(members);
    }
}

/// Loads the cached member list and taxonomy, if any.
pub fn load_cache(data_dir: &Path) -> (Option<Members>, Option<Taxonomy>) {
    let dir = cache_dir(data_dir);
    let members = std::fs::read(dir.join("members.pb"))
        .ok()
        .and_then(|b| GetMembersResponse::decode(b.as_slice()).ok())
        .map(members_from);
    let taxonomy = std::fs::read(dir.join("taxonomy.pb"))
        .ok()
        .and_then(|b| TaxonomyProto::decode(b.as_slice()).ok())
        .and_then(|t| Taxonomy::new(t).ok());
    (members, taxonomy)
}

fn members_from(resp: GetMembersResponse) -> Members {
    Members {
        version: resp.membership_version,
        by_id: resp
            .members
            .into_iter()
            .map(|m| (m.id.clone(), m))
            .collect(),
    }
}

/// The registry link's background task.
#[derive(Debug)]
pub struct RegistryLink {
    config: NodeConfig,
    store: Store,
    taxonomy: Arc<TaxonomyHandle>,
    federation: Arc<Federation>,
    files: TlsFiles,
}

impl RegistryLink {
    /// A link for `config` (whose `registry.endpoint` is set).
    pub fn new(
        config: NodeConfig,
        store: Store,
        taxonomy: Arc<TaxonomyHandle>,
        federation: Arc<Federation>,
    ) -> Self {
        let files = TlsFiles::in_dir(&config.tls_dir());
        Self {
            config,
            store,
            taxonomy,
            federation,
            files,
        }
    }

    fn connect(&self) -> anyhow::Result<RegistryClient<Channel>> {
        let material = self.files.load()?;
        let channel = tls::channel_to_registry(
            &self.config.registry.endpoint,
            material.client_config()?,
            Duration::from_secs(5),
        )?;
        Ok(RegistryClient::new(channel))
    }

    /// Registers, then heartbeats every interval until `shutdown`. Failures
    /// are logged and retried at the next interval; the node keeps working
    /// on its cached member list meanwhile.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut client: Option<RegistryClient<Channel>> = None;
        let mut registered = false;
        let mut interval = Duration::from_secs(5);
        // Versions of what came from this registry (the built-in taxonomy
        // does not count: its version number is not the registry's).
        let (cached_members, cached_taxonomy) = load_cache(&self.config.node.data_dir);
        let mut members_version = cached_members.map_or(0, |m| m.version);
        let mut taxonomy_version = cached_taxonomy.map_or(0, |t| t.version());
        loop {
            if client.is_none() {
                match self.connect() {
                    Ok(c) => client = Some(c),
                    Err(error) => {
                        tracing::warn!(%error, dir = %self.config.tls_dir().display(), "cannot build the registry connection");
                        self.federation.heartbeat_outcome(false, &error.to_string());
                    }
                }
            }
            if let Some(c) = client.as_mut() {
                let step = self
                    .beat(
                        c,
                        &mut registered,
                        &mut members_version,
                        &mut taxonomy_version,
                    )
                    .await;
                match step {
                    Ok((next, renewed)) => {
                        self.federation.heartbeat_outcome(true, "");
                        interval = next;
                        if renewed {
                            // New certificate: new connections from now on.
                            client = None;
                        }
                    }
                    Err(status) => {
                        metrics::counter!("urpnet_node_registry_errors_total").increment(1);
                        if matches!(
                            status.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::DeadlineExceeded
                                | tonic::Code::Unknown
                        ) {
                            // Counted every time, logged once per outage.
                            self.federation.heartbeat_outcome(false, status.message());
                        } else {
                            tracing::warn!(code = ?status.code(), message = status.message(), "registry call failed");
                        }
                        if status.code() == tonic::Code::PermissionDenied {
                            registered = false;
                        }
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One heartbeat and whatever it calls for. Returns the next interval
    /// and whether the certificate was renewed.
    async fn beat(
        &self,
        client: &mut RegistryClient<Channel>,
        registered: &mut bool,
        members_version: &mut u64,
        taxonomy_version: &mut u32,
    ) -> Result<(Duration, bool), tonic::Status> {
        let node_id = self.config.node.id.to_string();
        if !*registered {
            let resp = client
                .register(RegisterRequest {
                    node_id: node_id.clone(),
                    endpoint: self.config.registry.advertise.clone(),
                })
                .await?
                .into_inner();
            *registered = true;
            tracing::info!(registry = %self.config.registry.endpoint, interval_ms = resp.heartbeat_interval_ms, "registered with the registry");
        }
        let (open, waiting) = crate::shared_ticket::tables::load_counts(&self.store, &node_id)
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let r = &self.config.registry;
        let resp = client
            .heartbeat(HeartbeatRequest {
                node_id,
                load: Some(LoadReport {
                    open_tickets: open,
                    queue_waiting: waiting,
                    operators_on_duty: r.operators_on_duty,
                    capacity_per_hour: r.capacity_per_hour,
                    overflow_categories: r.overflow_categories.clone(),
                }),
            })
            .await?
            .into_inner();
        metrics::counter!("urpnet_node_heartbeats_total").increment(1);
        if resp.membership_version != *members_version {
            let list = client.get_members(GetMembersRequest {}).await?.into_inner();
            self.save("members.pb", &list.encode_to_vec());
            let members = members_from(list);
            tracing::info!(
                version = members.version,
                members = members.by_id.len(),
                "member list updated"
            );
            *members_version = members.version;
            self.federation.replace(members);
        }
        if resp.taxonomy_version != *taxonomy_version && resp.taxonomy_version > 0 {
            let t = client
                .get_taxonomy(GetTaxonomyRequest {})
                .await?
                .into_inner()
                .taxonomy
                .unwrap_or_default();
            match Taxonomy::new(t.clone()) {
                Ok(taxonomy) => {
                    self.save("taxonomy.pb", &t.encode_to_vec());
                    tracing::info!(
                        version = t.version,
                        categories = taxonomy.len(),
                        "taxonomy updated"
                    );
                    *taxonomy_version = t.version;
                    self.taxonomy.replace(taxonomy);
                }
                Err(error) => {
                    tracing::warn!(%error, version = t.version, "taxonomy from the registry refused; keeping the current one");
                }
            }
        }
        let renewed = self.renew_if_due(client).await?;
        let next = Duration::from_millis(u64::from(resp.heartbeat_interval_ms.max(50)));
        Ok((next, renewed))
    }

    async fn renew_if_due(
        &self,
        client: &mut RegistryClient<Channel>,
    ) -> Result<bool, tonic::Status> {
        let Ok(material) = self.files.load() else {
            return Ok(false);
        };
        let Ok(info) = material.info() else {
            return Ok(false);
        };
        let left = info.not_after_ms.saturating_sub(system_time_ms());
        if u128::from(left) > self.config.registry.renew_before.as_millis() {
            return Ok(false);
        }
        let key_pem = tls::generate_key().map_err(|e| tonic::Status::internal(e.to_string()))?;
        let csr_pem = tls::make_csr(&key_pem, self.config.node.id.as_str())
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let resp = client
            .renew_certificate(RenewCertificateRequest { csr_pem })
            .await?
            .into_inner();
        let Some(new) = renewed(&material, &resp.ca_pem, resp.certificate_pem, key_pem) else {
            metrics::counter!("urpnet_node_ca_change_refused_total").increment(1);
            tracing::error!(
                "the registry's renewal answer carries another CA certificate; refused, keeping the current certificate and CA"
            );
            return Ok(false);
        };
        if let Err(error) = new.info().and_then(|_| self.files.save(&new)) {
            tracing::error!(%error, "cannot store the renewed certificate; keeping the old one");
            return Ok(false);
        }
        let serial = resp.issued.map(|i| i.serial).unwrap_or_default();
        tracing::info!(%serial, "certificate renewed");
        metrics::counter!("urpnet_node_certificates_renewed_total").increment(1);
        Ok(true)
    }

    fn save(&self, name: &str, bytes: &[u8]) {
        let path = cache_dir(&self.config.node.data_dir).join(name);
        if let Err(error) = tls::write_atomic(&path, bytes, false) {
            tracing::warn!(%error, path = %path.display(), "cannot cache registry data");
        }
    }
}

/// The TLS material after a renewal: the new certificate and key with the
/// CA enrolment gave. `None` when the answer carries another CA: the trust
/// root never changes by a renewal (a changed CA would let whoever answered
/// pose as the registry and every peer from then on).
fn renewed(
    current: &TlsMaterial,
    answered_ca_pem: &str,
    cert_pem: String,
    key_pem: String,
) -> Option<TlsMaterial> {
    same_pem(answered_ca_pem, &current.ca_pem).then(|| TlsMaterial {
        cert_pem,
        key_pem,
        ca_pem: current.ca_pem.clone(),
    })
}

/// Whether two PEM texts hold the same certificates (line endings and
/// surrounding blank space aside).
fn same_pem(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String { s.split_whitespace().collect() };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_never_changes_the_trust_root() {
        let (ca, _) =
            urpnet_proto::tls::FederationCa::generate("abruzzo", Duration::from_secs(3600))
                .unwrap();
        let (other, _) =
            urpnet_proto::tls::FederationCa::generate("impostor", Duration::from_secs(3600))
                .unwrap();
        let current = TlsMaterial {
            cert_pem: "old cert".into(),
            key_pem: "old key".into(),
            ca_pem: ca.cert_pem().to_string(),
        };
        // The same CA, however its lines end: accepted, the CA kept.
        let same = current.ca_pem.replace('\n', "\r\n");
        let new = renewed(&current, &same, "new cert".into(), "new key".into()).unwrap();
        assert_eq!(new.cert_pem, "new cert");
        assert_eq!(new.ca_pem, current.ca_pem);
        // Another CA: refused.
        assert!(
            renewed(
                &current,
                other.cert_pem(),
                "new cert".into(),
                "new key".into()
            )
            .is_none()
        );
    }
}
