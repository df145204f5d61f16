//! The node's side of the anonymised archive (DESIGN.md §7).
//!
//! - **Anonymiser**: every ticket this node owns that reached a terminal
//!   status (closed, rejected, merged) becomes one [`ArchiveRecord`]: category,
//!   channel, territory generalised (the comune, a configured district of a
//!   large comune, or the office's region for a place outside it), ISO week
//!   opened, outcome, handling-time bucket, handoffs, overflow flag, levels.
//!   Nothing else: no text, no names, no coordinates, no ticket id. The
//!   record id is HMAC-SHA256(archive secret, ticket id), truncated to 16
//!   bytes: the same ticket always gives the same id, and without the secret
//!   (`data_dir/archive.secret`, never sent) nobody can tell which ticket.
//! - **Sweep**: tickets are found by `updated_ms` from a durable cursor, so
//!   tickets closed before this version (or while the node was down) are
//!   archived at the next round; the records and the cursor commit together.
//! - **Replication**: records go to the registry in signed batches
//!   (`PAYLOAD_KIND_ARCHIVE_BATCH`) from the durable `sent_seq` cursor, which
//!   moves only after the registry acknowledged the batch. A crash in between
//!   re-sends the batch, which the registry counts as duplicates.

pub mod tables;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use prost::Message as _;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use urpnet_proto::archive as rules;
use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::territory::Territory;
use urpnet_proto::tls::{self, TlsFiles};
use urpnet_proto::v1::archive_client::ArchiveClient;
use urpnet_proto::v1::archive_desk_server::ArchiveDesk;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{
    ArchiveBatch, ArchiveRecord, ArchiveStatusRequest, ArchiveStatusResponse, Level, Outcome,
    PayloadKind, PushArchiveRequest, Status as TicketStatus, Ticket,
};

use crate::auth::{Action, Authenticator};
use crate::config::NodeConfig;
use crate::error::{NodeError, NodeResult};
use crate::registry_link::Federation;
use crate::store::Store;

/// Closed tickets are re-read this far behind the cursor: a ticket's
/// `updated_ms` comes from event clocks, which a relayed event can set a
/// little in the past. Re-made records are ignored by id.
const SWEEP_OVERLAP_MS: i64 = 10 * 60 * 1000;
/// Tickets read per sweep page.
const SWEEP_PAGE: usize = 1000;

/// Where the archive secret lives.
pub fn secret_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("archive.secret")
}

/// Loads the archive secret, making one on first use.
///
/// # Errors
/// I/O failures, or a file that is not 32 bytes.
pub fn load_secret(data_dir: &std::path::Path) -> NodeResult<[u8; 32]> {
    crate::secret::load_or_make(&secret_path(data_dir))
}

/// The record id of a ticket: HMAC-SHA256 under the node's secret, 16 bytes.
pub fn record_id(secret: &[u8; 32], ticket_id: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(b"urpnet archive record v1\0");
    mac.update(ticket_id.as_bytes());
    mac.finalize().into_bytes()[..rules::RECORD_ID_BYTES].to_vec()
}

/// How the last push went.
#[derive(Debug, Clone, Default)]
struct PushStatus {
    last_push_ms: u64,
    last_error: String,
}

/// Makes records of closed tickets and replicates them to the registry.
#[derive(Debug)]
pub struct Archiver {
    config: NodeConfig,
    store: Store,
    federation: Arc<Federation>,
    signer: NodeSigner,
    secret: [u8; 32],
    status: Mutex<PushStatus>,
    /// One round at a time (the timer and `archive sync`).
    round: tokio::sync::Mutex<()>,
    client: tokio::sync::Mutex<Option<ArchiveClient<tonic::transport::Channel>>>,
}

impl Archiver {
    /// The archiver of this node (loading or making its secret).
    ///
    /// # Errors
    /// The secret cannot be read or written.
    pub fn open(
        config: NodeConfig,
        store: Store,
        federation: Arc<Federation>,
        signer: NodeSigner,
    ) -> NodeResult<Arc<Self>> {
        let secret = load_secret(&config.node.data_dir)?;
        Ok(Arc::new(Self {
            config,
            store,
            federation,
            signer,
            secret,
            status: Mutex::new(PushStatus::default()),
            round: tokio::sync::Mutex::new(()),
            client: tokio::sync::Mutex::new(None),
        }))
    }

    fn level_of(&self, id: &str) -> Level {
        if let Some(m) = self.federation.members().by_id.get(id)
            && let Ok(level) = Level::try_from(m.level)
            && level != Level::Unspecified
        {
            return level;
        }
        // Not (yet) in the member list: the IPA code's prefix tells.
        match id.split('_').next() {
            Some("c") => Level::Comune,
            Some("p" | "cm") => Level::Provincia,
            Some("r") => Level::Regione,
            _ => Level::Nazionale,
        }
    }

    /// The regions this node serves; `None` for a national body.
    fn own_regions(&self) -> Option<BTreeSet<String>> {
        let id = self.config.node.id.as_str();
        if let Some(m) = self.federation.members().by_id.get(id) {
            return rules::regions_of_member(&m.territory);
        }
        Territory::italy()
            .comune_by_ipa(id)
            .map(|c| BTreeSet::from([c.region_code.clone()]))
    }

    fn territory_of(&self, ticket: &Ticket, regions: Option<&BTreeSet<String>>) -> Option<String> {
        let location = ticket.location.as_ref();
        let istat = location.map_or("", |l| l.istat_code.as_str());
        let comune = Territory::italy().comune(istat);
        match (comune, regions) {
            (Some(c), r) if r.is_none_or(|r| r.contains(&c.region_code)) => {
                if let Some(point) = location.and_then(|l| l.coordinates.as_ref()) {
                    for d in &self.config.archive.districts {
                        let [south, west, north, east] = d.bbox;
                        if d.comune == istat
                            && (south..=north).contains(&point.latitude)
                            && (west..=east).contains(&point.longitude)
                        {
                            return Some(format!("{istat}/{}", d.code));
                        }
                    }
                }
                Some(istat.to_owned())
            }
            // Outside the office's region(s): counted at its own region.
            (_, Some(r)) => r.iter().next().cloned(),
            (_, None) => None,
        }
    }

    /// The anonymised record of a terminal ticket (`None` for one that is
    /// not terminal or whose territory cannot be placed).
    pub fn record_of(
        &self,
        ticket: &Ticket,
        overflow: bool,
        regions: Option<&BTreeSet<String>>,
    ) -> Option<ArchiveRecord> {
        let outcome = match ticket.status() {
            TicketStatus::Closed => Outcome::Answered,
            TicketStatus::Rejected => Outcome::Rejected,
            TicketStatus::Merged => Outcome::Merged,
            _ => return None,
        };
        let ms = |t: &Option<prost_types::Timestamp>| {
            t.as_ref()
                .map(|t| (t.seconds.max(0) as u64) * 1000 + (t.nanos.max(0) as u64) / 1_000_000)
        };
        let created = ms(&ticket.created_at)?;
        let closed = ms(&ticket.closed_at)
            .or_else(|| ms(&ticket.updated_at))
            .unwrap_or(created);
        Some(ArchiveRecord {
            id: record_id(&self.secret, &ticket.id),
            category: ticket.category.clone(),
            channel: ticket.channel,
            territory: self.territory_of(ticket, regions)?,
            week: rules::week_of_ms(created),
            outcome: outcome as i32,
            handling: rules::handling_bucket(closed.saturating_sub(created)) as i32,
            handoffs: ticket.handoff_count.min(rules::HANDOFFS_CAP),
            overflow,
            origin_level: self.level_of(&ticket.origin_node) as i32,
            competent_level: self.level_of(self.config.node.id.as_str()) as i32,
        })
    }

    /// Whether one of the ticket's handoffs was chosen as overflow.
    async fn was_overflow(&self, ticket: &Ticket) -> NodeResult<bool> {
        if ticket.handoff_count == 0 {
            return Ok(false);
        }
        Ok(crate::shared_ticket::tables::events(&self.store, &ticket.id).await?.iter().any(|(_, e)| {
            matches!(&e.kind, Some(Kind::HandoffOffered(h)) if h.reason.starts_with("overflow"))
        }))
    }

    /// Anonymises terminal tickets updated since the cursor; returns records
    /// made (new or not).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn sweep(&self) -> NodeResult<u64> {
        let state = crate::archive::tables::state(&self.store).await?;
        let swept = state.get("swept_ms").copied().unwrap_or(0);
        let regions = self.own_regions();
        let me = self.config.node.id.to_string();
        let mut after = ((swept - SWEEP_OVERLAP_MS).max(0), String::new());
        let mut made = 0;
        loop {
            let page = crate::shared_ticket::tables::closed_since(
                &self.store,
                &me,
                (after.0, &after.1),
                SWEEP_PAGE,
            )
            .await?;
            let Some((last_ms, last)) = page.last() else {
                break;
            };
            let next = (*last_ms, last.id.clone());
            let now = system_time_ms() as i64;
            let mut records = Vec::with_capacity(page.len());
            for (_, ticket) in &page {
                let overflow = self.was_overflow(ticket).await?;
                match self.record_of(ticket, overflow, regions.as_ref()) {
                    Some(r) => records.push((r.id.clone(), r.encode_to_vec(), now)),
                    None => {
                        metrics::counter!("urpnet_archive_unplaced_total").increment(1);
                        tracing::warn!(ticket = %ticket.id, "closed ticket has no territory to archive under");
                    }
                }
            }
            made += records.len() as u64;
            let cursor = next.0.max(swept);
            crate::archive::tables::write(&self.store, records, vec![("swept_ms", cursor)]).await?;
            if page.len() < SWEEP_PAGE {
                break;
            }
            after = next;
        }
        Ok(made)
    }

    async fn client(&self) -> NodeResult<ArchiveClient<tonic::transport::Channel>> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let material = TlsFiles::in_dir(&self.config.tls_dir())
            .load()
            .map_err(|e| NodeError::Unavailable(format!("this node's certificate: {e}")))?;
        let config = material
            .client_config()
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        let channel = tls::channel_to_registry(
            &self.config.registry.endpoint,
            config,
            Duration::from_secs(5),
        )
        .map_err(|e| NodeError::Internal(e.to_string()))?;
        let client = ArchiveClient::new(channel);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Pushes every waiting record; returns records acknowledged.
    ///
    /// # Errors
    /// No registry configured or reachable, a refused batch, storage.
    pub async fn push(&self) -> NodeResult<u64> {
        if self.config.registry.endpoint.is_empty() {
            return Err(NodeError::FailedPrecondition(
                "no registry is configured (registry.endpoint)".into(),
            ));
        }
        let mut client = self.client().await?;
        let mut sent = 0;
        loop {
            let state = crate::archive::tables::state(&self.store).await?;
            let cursor = state.get("sent_seq").copied().unwrap_or(0);
            let refused = state.get("refused").copied().unwrap_or(0);
            let rows = crate::archive::tables::records_after(
                &self.store,
                cursor,
                self.config.archive.batch,
            )
            .await?;
            let Some(&(last, _)) = rows.last() else {
                break;
            };
            let n = rows.len() as u64;
            let batch = ArchiveBatch {
                author: self.signer.node().to_string(),
                first_seq: rows[0].0 as u64,
                records: rows.into_iter().map(|(_, r)| r).collect(),
            };
            let signed = self
                .signer
                .sign(PayloadKind::ArchiveBatch, batch.encode_to_vec());
            let resp = client
                .push_archive(PushArchiveRequest {
                    batch: Some(signed),
                })
                .await
                .map_err(|s| {
                    NodeError::Unavailable(format!(
                        "the registry refused the batch: {:?}: {}",
                        s.code(),
                        s.message()
                    ))
                })?
                .into_inner();
            if !resp.refused.is_empty() {
                tracing::warn!(refused = resp.refused.len(), first = %resp.refused[0].detail, "the registry refused archive records");
            }
            let now = system_time_ms() as i64;
            // Acknowledged records older than `keep_sent` leave the outbox
            // (the registry holds them; its ids make a re-made one a no-op).
            crate::archive::tables::acknowledge(
                &self.store,
                vec![
                    ("sent_seq", last),
                    ("refused", refused + resp.refused.len() as i64),
                    ("last_push_ms", now),
                ],
                last,
                now - self.config.archive.keep_sent.as_millis() as i64,
            )
            .await?;
            metrics::counter!("urpnet_archive_pushed_total").increment(n);
            sent += n;
        }
        Ok(sent)
    }

    /// One round: sweep, then push. The outcome is kept for `status`.
    pub async fn round(&self) -> NodeResult<(u64, u64)> {
        let _one = self.round.lock().await;
        let made = self.sweep().await?;
        let result = if self.config.registry.endpoint.is_empty() {
            Ok(0)
        } else {
            self.push().await
        };
        let failed = {
            let mut status = self.status.lock().expect("status lock");
            match &result {
                Ok(sent) => {
                    status.last_error.clear();
                    if *sent > 0 {
                        status.last_push_ms = system_time_ms();
                    }
                    false
                }
                Err(e) => {
                    status.last_error = e.to_string();
                    true
                }
            }
        };
        if failed {
            // A broken channel is rebuilt at the next round.
            *self.client.lock().await = None;
        }
        result.map(|sent| (made, sent))
    }

    /// Records made, sent, waiting; the last push.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn status(&self) -> NodeResult<ArchiveStatusResponse> {
        let state = crate::archive::tables::state(&self.store).await?;
        let cursor = state.get("sent_seq").copied().unwrap_or(0);
        let (held, pending) = crate::archive::tables::counts(&self.store, cursor).await?;
        // Records pruned after their acknowledgement were made and sent.
        let made = held + state.get("pruned").copied().unwrap_or(0).max(0) as u64;
        let status = self.status.lock().expect("status lock").clone();
        metrics::gauge!("urpnet_archive_pending").set(pending as f64);
        Ok(ArchiveStatusResponse {
            made,
            sent: made - pending,
            pending,
            last_push_ms: state
                .get("last_push_ms")
                .map_or(status.last_push_ms, |v| *v as u64),
            last_error: status.last_error,
            refused: state.get("refused").copied().unwrap_or(0) as u64,
        })
    }

    /// Rounds every `archive.interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.round() => match r {
                    Ok((made, sent)) if made + sent > 0 => {
                        tracing::debug!(made, sent, "archive round");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "archive round failed; retrying at the next interval"),
                },
            }
            // Refreshes the `urpnet_archive_pending` gauge.
            let _ = self.status().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.archive.interval) => {}
            }
        }
    }
}

/// The `ArchiveDesk` service.
#[derive(Debug, Clone)]
pub struct ArchiveDeskService {
    archiver: Arc<Archiver>,
    auth: Arc<Authenticator>,
}

impl ArchiveDeskService {
    /// Serves `archiver` to operators.
    pub fn new(archiver: Arc<Archiver>, auth: Arc<Authenticator>) -> Self {
        Self { archiver, auth }
    }
}

#[tonic::async_trait]
impl ArchiveDesk for ArchiveDeskService {
    async fn archive_status(
        &self,
        req: Request<ArchiveStatusRequest>,
    ) -> Result<Response<ArchiveStatusResponse>, Status> {
        self.auth.actor_of(&req).await?.require(Action::Read)?;
        Ok(Response::new(self.archiver.status().await?))
    }

    async fn sync_archive(
        &self,
        req: Request<ArchiveStatusRequest>,
    ) -> Result<Response<ArchiveStatusResponse>, Status> {
        self.auth
            .actor_of(&req)
            .await?
            .require(Action::SyncArchive)?;
        let round = self.archiver.round().await;
        let status = self.archiver.status().await?;
        match round {
            Ok(_) => Ok(Response::new(status)),
            Err(e) => Err(Status::unavailable(format!(
                "archive round failed: {e} ({} records waiting)",
                status.pending
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_stable_per_secret_and_unlinkable_across_secrets() {
        let a = record_id(&[1; 32], "01JD3Q5Z8W2N4V6X7Y9A0B1C2D");
        assert_eq!(a, record_id(&[1; 32], "01JD3Q5Z8W2N4V6X7Y9A0B1C2D"));
        assert_eq!(a.len(), 16);
        assert_ne!(a, record_id(&[2; 32], "01JD3Q5Z8W2N4V6X7Y9A0B1C2D"));
        assert_ne!(a, record_id(&[1; 32], "01JD3Q5Z8W2N4V6X7Y9A0B1C2E"));
    }
}
