//! The citizen's rights under the GDPR (DESIGN.md §15), at the origin node,
//! which holds the contact:
//!
//! - **export**: every contact matching an e-mail, phone or fiscal code, and
//!   the tickets filed with it (what they said, their status, the public
//!   answers), as JSON for the citizen;
//! - **erase**: each matching contact is deleted here, and a
//!   `ContactErased` event (no personal data) on its ticket makes every body
//!   that received the contact under consent delete its copy when the event
//!   reaches it;
//! - **retention purge**: the same erasure, automatically, for tickets
//!   closed longer than `[privacy] contact_retention`.
//!
//! Every action is audited ([`tables`]) without personal data: the subject
//! is the sha256 of the identifier used.

pub mod tables;

use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use urpnet_proto::v1::ticket_event::Kind;

use crate::casework::TicketDesk;
use crate::error::{NodeError, NodeResult};

/// Who a request is about: at least one identifier.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number, as recorded.
    pub phone: Option<String>,
    /// Fiscal code.
    pub fiscal_code: Option<String>,
}

impl Subject {
    fn check(&self) -> NodeResult<()> {
        let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        if !(given(&self.email) || given(&self.phone) || given(&self.fiscal_code)) {
            return Err(NodeError::invalid(
                "subject",
                "give an e-mail, a phone number or a fiscal code",
            ));
        }
        Ok(())
    }

    /// The audit's name for the subject: sha256 of its identifiers.
    fn hash(&self) -> String {
        let mut h = Sha256::new();
        for v in [&self.email, &self.phone, &self.fiscal_code] {
            h.update(
                v.as_deref()
                    .unwrap_or_default()
                    .trim()
                    .to_lowercase()
                    .as_bytes(),
            );
            h.update([0]);
        }
        hex::encode(h.finalize())
    }
}

/// Everything held about a subject, for the citizen.
///
/// # Errors
/// `InvalidArgument` without an identifier; storage failures.
pub async fn export(
    desk: &TicketDesk,
    subject: &Subject,
    actor: &str,
) -> NodeResult<serde_json::Value> {
    subject.check()?;
    let store = desk.store();
    let matches = crate::shared_ticket::tables::contacts_matching(
        store,
        subject.email.as_deref(),
        subject.phone.as_deref(),
        subject.fiscal_code.as_deref(),
    )
    .await?;
    let mut tickets = Vec::new();
    for (ticket_id, contact) in &matches {
        let Some(t) = crate::shared_ticket::tables::ticket(store, ticket_id).await? else {
            continue;
        };
        let events = crate::shared_ticket::tables::events(store, ticket_id).await?;
        let answers: Vec<serde_json::Value> = events
            .iter()
            .filter_map(|(_, e)| match &e.kind {
                Some(Kind::Note(n)) if n.public => Some(serde_json::json!({
                    "at": urpnet_proto::calendar::iso_rome(e.hlc.map_or(0, |h| h.wall_ms)),
                    "text": n.text,
                })),
                _ => None,
            })
            .collect();
        let location = t.location.clone().unwrap_or_default();
        let appointments: Vec<serde_json::Value> =
            crate::appointments::tables::by_ticket(store, ticket_id)
                .await?
                .iter()
                .map(|b| {
                    serde_json::json!({
                        "office": b.office,
                        "service": b.service,
                        "start": crate::appointments::local_text(b.start_ms),
                        "channel": b.channel,
                        "status": b.status,
                        "given_name": b.given_name,
                        "family_name": b.family_name,
                        "address": b.address,
                        "email": b.email,
                        "phone": b.phone,
                        "notes": b.notes,
                    })
                })
                .collect();
        tickets.push(serde_json::json!({
            "appointments": appointments,
            "reference": t.reference,
            "category": t.category,
            "channel": crate::shared_ticket::names::channel_name(t.channel()),
            "subject": t.subject,
            "description": t.description,
            "address": location.address,
            "comune": location.istat_code,
            "status": crate::shared_ticket::names::status_name(t.status()),
            "responsible_body": t.owner_node,
            "opened": t.created_at.as_ref().map(|ts| urpnet_proto::calendar::iso_rome(crate::shared_ticket::fold::millis(ts))),
            "consent": {
                "share_with_competent_body": t.consent.is_some_and(|c| c.share_with_competent_body),
                "contact_for_updates": t.consent.is_some_and(|c| c.contact_for_updates),
            },
            "contact": {
                "full_name": contact.full_name,
                "email": contact.email,
                "phone": contact.phone,
                "fiscal_code": contact.fiscal_code,
            },
            "public_answers": answers,
            "attachments": t.attachments.iter().map(|a| serde_json::json!({"file_name": a.file_name, "sha256": a.sha256})).collect::<Vec<_>>(),
        }));
    }
    tables::audit(
        store,
        "export",
        actor,
        &subject.hash(),
        tickets.len() as i64,
    )
    .await?;
    tracing::info!(tickets = tickets.len(), actor, "citizen data exported");
    Ok(serde_json::json!({
        "exported_by": desk.node_name(),
        "exported_at": urpnet_proto::calendar::iso_rome(urpnet_proto::hlc::system_time_ms()),
        "tickets": tickets,
    }))
}

/// Erases every contact matching the subject; returns the references of the
/// tickets whose contact was erased.
///
/// # Errors
/// `InvalidArgument` without an identifier; storage failures.
pub async fn erase(
    desk: &Arc<TicketDesk>,
    subject: &Subject,
    actor: &str,
) -> NodeResult<Vec<String>> {
    subject.check()?;
    let store = desk.store();
    let matches = crate::shared_ticket::tables::contacts_matching(
        store,
        subject.email.as_deref(),
        subject.phone.as_deref(),
        subject.fiscal_code.as_deref(),
    )
    .await?;
    let mut erased = Vec::new();
    for (ticket_id, _) in &matches {
        let t = desk.erase_contact(ticket_id, "request").await?;
        erased.push(t.reference);
    }
    tables::audit(store, "erase", actor, &subject.hash(), erased.len() as i64).await?;
    tracing::info!(tickets = erased.len(), actor, "citizen contact erased");
    Ok(erased)
}

/// Erases the contacts of tickets closed longer than the retention period;
/// returns how many.
///
/// # Errors
/// Storage failures.
pub async fn purge(desk: &Arc<TicketDesk>, retention: std::time::Duration) -> NodeResult<usize> {
    let store = desk.store();
    let before =
        urpnet_proto::hlc::system_time_ms().saturating_sub(retention.as_millis() as u64) as i64;
    let mut total = 0;
    loop {
        let ids = crate::shared_ticket::tables::contacts_past_retention(
            store,
            &desk.node_id(),
            before,
            200,
        )
        .await?;
        if ids.is_empty() {
            break;
        }
        for id in &ids {
            desk.erase_contact(id, "retention").await?;
        }
        total += ids.len();
    }
    if total > 0 {
        tables::audit(store, "purge", "retention", "", total as i64).await?;
        tracing::info!(contacts = total, "contacts past their retention erased");
    }
    Ok(total)
}

/// Purges at start and then every `every`, until `shutdown`.
pub async fn run_purge(
    desk: Arc<TicketDesk>,
    retention: std::time::Duration,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    loop {
        if let Err(error) = purge(&desk, retention).await {
            tracing::warn!(%error, "retention purge failed");
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
}
