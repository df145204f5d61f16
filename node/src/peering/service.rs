//! The `Peering` gRPC service other nodes call.
//!
//! Every call passes the gate first: the caller's identity comes from its
//! verified certificate (never from the request) and must be an active member
//! in the cached member list. Each refusal — of a caller, of a whole batch,
//! or of one item in it — is logged and counted in
//! `urpnet_peering_refused_total{reason}`; the good items of a batch are
//! stored whatever the bad ones did.

use std::collections::BTreeSet;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tonic::{Request, Response, Status};
use urpnet_proto::v1::peering_server::Peering;
use urpnet_proto::v1::{
    CompareDigestsRequest, CompareDigestsResponse, DeliverRequest, DeliverResponse,
    FetchEventsRequest, FetchEventsResponse, ItemVerdict, TicketEventIds,
};
use urpnet_proto::validate::Violations;

use super::ingest::{IncomingContact, Verdict};
use super::verify::{self, Refusal};
use super::{MAX_BATCH_CONTACTS, MAX_BATCH_EVENTS, MAX_DIGESTS, PeeringContext};

/// The Peering service of one node.
#[derive(Debug, Clone)]
pub struct PeeringService {
    ctx: Arc<PeeringContext>,
}

impl PeeringService {
    /// A service over the node's peering context.
    pub fn new(ctx: Arc<PeeringContext>) -> Self {
        Self { ctx }
    }

    fn gate<T>(&self, request: &Request<T>) -> Result<String, Status> {
        self.ctx.admitted(request)
    }
}

pub(crate) fn refused(reason: &'static str, remote: &str, peer: &str) {
    metrics::counter!("urpnet_peering_refused_total", "reason" => reason).increment(1);
    // One warning per peer and reason a minute: at start-up, nodes whose
    // member lists are not fresh yet refuse each other's first calls
    // several times a second; the metric counts every one.
    if REFUSAL_LOG.first_in_window(reason, peer, std::time::Instant::now()) {
        tracing::warn!(reason, %remote, peer, "peering call refused (repeats within a minute are counted, not logged)");
    } else {
        tracing::debug!(reason, %remote, peer, "peering call refused");
    }
}

/// When each (reason, peer) was last logged.
struct RefusalLog {
    last: std::sync::Mutex<std::collections::HashMap<(&'static str, String), std::time::Instant>>,
    window: std::time::Duration,
}

impl RefusalLog {
    /// Whether a refusal at `now` is the first of its (reason, peer) in the
    /// window (and so is logged).
    fn first_in_window(&self, reason: &'static str, peer: &str, now: std::time::Instant) -> bool {
        let mut last = self.last.lock().expect("refusal log");
        if last.len() > 10_000 {
            last.clear();
        }
        let key = (reason, peer.to_string());
        match last.get(&key) {
            Some(at) if now.saturating_duration_since(*at) < self.window => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }
}

static REFUSAL_LOG: std::sync::LazyLock<RefusalLog> = std::sync::LazyLock::new(|| RefusalLog {
    last: std::sync::Mutex::new(std::collections::HashMap::new()),
    window: std::time::Duration::from_secs(60),
});

fn item_refused(peer: &str, code: &'static str, id: &str, reason: &str) {
    // A batch of a thousand events from a skewed clock is one warning a
    // minute, not a thousand.
    if REFUSAL_LOG.first_in_window(code, peer, std::time::Instant::now()) {
        tracing::warn!(
            peer,
            reason = code,
            item = id,
            detail = reason,
            "peering item refused (repeats within a minute are counted, not logged)"
        );
    } else {
        tracing::debug!(
            peer,
            reason = code,
            item = id,
            detail = reason,
            "peering item refused"
        );
    }
    metrics::counter!("urpnet_peering_refused_total", "reason" => code).increment(1);
}

fn verdict(v: &Verdict, contact: bool, retry_after_ms: u64) -> ItemVerdict {
    ItemVerdict {
        index: v.index as u32,
        id: v.id.clone(),
        reason: v.reason.clone(),
        retry_after_ms,
        contact,
    }
}

/// How long a sender waits before offering again an event refused for now
/// because a participant was missing (the event that adds it is usually in
/// the same or the next batch).
const PARTICIPANT_RETRY_MS: u64 = 1_000;

#[tonic::async_trait]
impl Peering for PeeringService {
    #[tracing::instrument(skip_all, fields(peer))]
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        let from = self.gate(&request)?;
        tracing::Span::current().record("peer", from.as_str());
        let req = request.into_inner();
        let mut v = Violations::new();
        v.check(
            req.events.len() <= MAX_BATCH_EVENTS,
            "events",
            format!("at most {MAX_BATCH_EVENTS} per batch"),
        );
        v.check(
            req.contacts.len() <= MAX_BATCH_CONTACTS,
            "contacts",
            format!("at most {MAX_BATCH_CONTACTS} per batch"),
        );
        if let Err(err) = v.into_result() {
            refused("oversized_batch", "", &from);
            return Err(crate::error::NodeError::from(err).into());
        }
        let mut out = DeliverResponse::default();

        // Verify signatures off the async threads: a full batch is up to
        // 1000 ed25519 verifications.
        let members = self.ctx.federation.members();
        let clock = self.ctx.clock.clone();
        let events = req.events;
        let checked = if events.len() < 8 {
            // A live handoff: cheaper here than a hop to a blocking thread.
            verify::batch(&events, &members, &clock)
        } else {
            tokio::task::spawn_blocking(move || verify::batch(&events, &members, &clock))
                .await
                .map_err(|e| Status::internal(format!("verification task failed: {e}")))?
        };
        let mut good = Vec::with_capacity(checked.len());
        for (index, result) in checked.into_iter().enumerate() {
            match result {
                Ok(incoming) => match self.ctx.quarantined(&incoming.stored.author_node) {
                    // Held back, not dropped: quarantine is reversible.
                    Some(why) => {
                        let reason = format!(
                            "author {} is quarantined by this node: {why}",
                            incoming.stored.author_node
                        );
                        item_refused(
                            &from,
                            "quarantined_author",
                            &incoming.stored.event_id,
                            &reason,
                        );
                        out.retry.push(ItemVerdict {
                            index: index as u32,
                            id: incoming.stored.event_id,
                            reason,
                            retry_after_ms: 60_000,
                            ..Default::default()
                        });
                    }
                    None => good.push(incoming),
                },
                Err(Refusal::Refuse { code, reason }) => {
                    item_refused(&from, code, "", &reason);
                    out.refused.push(ItemVerdict {
                        index: index as u32,
                        reason,
                        ..Default::default()
                    });
                }
                Err(Refusal::Retry {
                    code,
                    reason,
                    after_ms,
                }) => {
                    item_refused(&from, code, "", &reason);
                    out.retry.push(ItemVerdict {
                        index: index as u32,
                        reason,
                        retry_after_ms: after_ms,
                        ..Default::default()
                    });
                }
            }
        }
        let mut contacts = Vec::new();
        for (index, c) in req.contacts.into_iter().enumerate() {
            let mut v = Violations::new();
            v.check(
                urpnet_proto::ids::TicketId::parse(&c.ticket_id).is_ok(),
                "contacts.ticket_id",
                "must be a ULID",
            );
            let contact = c.contact.unwrap_or_default();
            crate::validate::citizen(&mut v, &contact);
            match v.into_result() {
                Ok(()) => contacts.push(IncomingContact {
                    index,
                    ticket_id: c.ticket_id,
                    contact,
                }),
                Err(violations) => {
                    let reason = violations.to_string();
                    item_refused(&from, "malformed_contact", &c.ticket_id, &reason);
                    out.refused.push(ItemVerdict {
                        index: index as u32,
                        id: c.ticket_id,
                        reason,
                        contact: true,
                        ..Default::default()
                    });
                }
            }
        }
        let outcome = crate::peering::ingest::ingest_delivered(
            &self.ctx.store,
            &self.ctx.clock,
            &from,
            good,
            contacts,
        )
        .await?;
        for v in &outcome.retry {
            item_refused(&from, v.code, &v.id, &v.reason);
            out.retry.push(verdict(v, false, PARTICIPANT_RETRY_MS));
        }
        for v in &outcome.refused {
            item_refused(&from, v.code, &v.id, &v.reason);
            out.refused.push(verdict(v, false, 0));
        }
        for v in &outcome.contacts_retry {
            item_refused(&from, v.code, &v.id, &v.reason);
            out.retry.push(verdict(v, true, PARTICIPANT_RETRY_MS));
        }
        for v in &outcome.contacts_refused {
            item_refused(&from, v.code, &v.id, &v.reason);
            out.refused.push(verdict(v, true, 0));
        }
        out.applied = outcome.applied;
        out.duplicates = outcome.duplicates;
        out.contacts_stored = outcome.contacts_stored;
        let count = |result: &'static str, n: usize| {
            metrics::counter!("urpnet_peering_events_received_total", "result" => result)
                .increment(n as u64);
        };
        count("applied", outcome.applied as usize);
        count("duplicate", outcome.duplicates as usize);
        count("refused", out.refused.iter().filter(|v| !v.contact).count());
        count("retry", out.retry.iter().filter(|v| !v.contact).count());
        tracing::debug!(
            peer = %from,
            applied = out.applied,
            duplicates = out.duplicates,
            refused = out.refused.len(),
            retry = out.retry.len(),
            "batch received"
        );
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all, fields(peer))]
    async fn compare_digests(
        &self,
        request: Request<CompareDigestsRequest>,
    ) -> Result<Response<CompareDigestsResponse>, Status> {
        let from = self.gate(&request)?;
        let req = request.into_inner();
        if req.tickets.len() > MAX_DIGESTS {
            refused("oversized_batch", "", &from);
            return Err(crate::error::NodeError::invalid(
                "tickets",
                format!("at most {MAX_DIGESTS} per call"),
            )
            .into());
        }
        let ids: Vec<String> = req
            .tickets
            .iter()
            .filter(|t| urpnet_proto::ids::TicketId::parse(&t.ticket_id).is_ok())
            .map(|t| t.ticket_id.clone())
            .collect();
        let shared: BTreeSet<String> =
            crate::peering::tables::tickets_shared_among(&self.ctx.store, &from, &ids)
                .await?
                .into_iter()
                .collect();
        let held = crate::shared_ticket::tables::event_keys(&self.ctx.store, &ids).await?;
        let mut out = CompareDigestsResponse::default();
        for t in &req.tickets {
            // Event ids of a ticket go only to its participants.
            let mine = if shared.contains(&t.ticket_id) {
                held.get(&t.ticket_id).cloned().unwrap_or_default()
            } else {
                Vec::new()
            };
            if digest(&mine) != t.digest {
                out.differing.push(TicketEventIds {
                    ticket_id: t.ticket_id.clone(),
                    event_ids: mine,
                });
            }
        }
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all, fields(peer))]
    async fn fetch_events(
        &self,
        request: Request<FetchEventsRequest>,
    ) -> Result<Response<FetchEventsResponse>, Status> {
        let from = self.gate(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        v.check(
            urpnet_proto::ids::TicketId::parse(&req.ticket_id).is_ok(),
            "ticket_id",
            "must be a ULID",
        );
        v.check(
            req.event_ids.len() <= MAX_BATCH_EVENTS,
            "event_ids",
            format!("at most {MAX_BATCH_EVENTS}"),
        );
        v.into_result().map_err(crate::error::NodeError::from)?;
        let shared = crate::peering::tables::tickets_shared_among(
            &self.ctx.store,
            &from,
            std::slice::from_ref(&req.ticket_id),
        )
        .await?;
        if shared.is_empty() {
            refused("not_participant", "", &from);
            return Err(Status::permission_denied(format!(
                "{from} is not a participant of ticket {}",
                req.ticket_id
            )));
        }
        let events = crate::shared_ticket::tables::envelopes(
            &self.ctx.store,
            &req.ticket_id,
            &req.event_ids,
        )
        .await?;
        Ok(Response::new(FetchEventsResponse { events }))
    }
}

/// The anti-entropy digest of a ticket: sha256 over its sorted event ids,
/// each followed by a newline. Empty for no events.
pub fn digest(sorted_ids: &[String]) -> Vec<u8> {
    if sorted_ids.is_empty() {
        return Vec::new();
    }
    let mut h = Sha256::new();
    for id in sorted_ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_storm_is_logged_once_per_peer_and_reason_a_minute() {
        let log = RefusalLog {
            last: std::sync::Mutex::new(std::collections::HashMap::new()),
            window: std::time::Duration::from_secs(60),
        };
        let t0 = std::time::Instant::now();
        assert!(log.first_in_window("not_active_member", "r_abruzz", t0));
        for i in 1..100 {
            let at = t0 + std::time::Duration::from_millis(i * 100);
            assert!(!log.first_in_window("not_active_member", "r_abruzz", at));
        }
        assert!(
            log.first_in_window("not_active_member", "c_a515", t0),
            "another peer"
        );
        assert!(
            log.first_in_window("quarantined", "r_abruzz", t0),
            "another reason"
        );
        let later = t0 + std::time::Duration::from_secs(61);
        assert!(
            log.first_in_window("not_active_member", "r_abruzz", later),
            "a minute on"
        );
    }
}
