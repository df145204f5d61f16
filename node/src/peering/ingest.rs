//! Storing what a peer delivered: the writer's operation that folds each
//! received ticket's events with those held, stores them only when both the
//! sender and this node take part in the ticket, queues what the fold calls
//! for (this node's own events for a participant it had not seen, the
//! citizen's contact for a consenting new owner), and gives a verdict on
//! every item it does not store.

use std::collections::{HashMap, HashSet};

use urpnet_proto::hlc::HybridClock;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{CitizenContact, Hlc, Ticket, TicketEvent};

use super::tables as outbox;
use crate::error::NodeResult;
use crate::shared_ticket::tables::{self as tickets, INSERT_EVENTS, StoredEvent};
use crate::shared_ticket::{MAX_EVENTS_PER_AUTHOR, MAX_EVENTS_PER_TICKET, fold};
use crate::store::{Commit, Store, Tx, Value, Write};

/// An event received from a peer, verified, ready to store.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Position in the peer's batch (for the verdict).
    pub index: usize,
    /// Envelope bytes and index columns.
    pub stored: StoredEvent,
    /// The decoded event.
    pub event: TicketEvent,
}

/// A contact received from a ticket's origin, already validated.
#[derive(Debug, Clone)]
pub struct IncomingContact {
    /// Position in the peer's batch.
    pub index: usize,
    /// Ticket id.
    pub ticket_id: String,
    /// The contact.
    pub contact: CitizenContact,
}

/// A verdict on one item of a received batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Position in the batch.
    pub index: usize,
    /// Event or ticket id.
    pub id: String,
    /// The rule, as a short code (a metric label).
    pub code: &'static str,
    /// Why, in words.
    pub reason: String,
}

/// What an ingest did.
#[derive(Debug, Clone, Default)]
pub struct IngestOutcome {
    /// Events stored.
    pub applied: u32,
    /// Events already held.
    pub duplicates: u32,
    /// Events refused for now (the sender should try again later).
    pub retry: Vec<Verdict>,
    /// Items refused for good.
    pub refused: Vec<Verdict>,
    /// Contacts stored.
    pub contacts_stored: u32,
    /// Contacts refused for now (their ticket is not held here yet).
    pub contacts_retry: Vec<Verdict>,
    /// Contacts refused for good.
    pub contacts_refused: Vec<Verdict>,
}

/// Stores what a peer delivered or anti-entropy fetched (verified by the
/// caller), ticket by ticket, in one transaction with the outbox rows it
/// calls for; then moves `clock` past the latest event stored (never past
/// one refused or held back), so this node's next event is stamped after
/// everything it has seen: an offer after the decline it follows, whichever
/// way the decline came.
///
/// # Errors
/// Storage failures.
pub async fn ingest_delivered(
    store: &Store,
    clock: &HybridClock,
    from: &str,
    events: Vec<Incoming>,
    contacts: Vec<IncomingContact>,
) -> NodeResult<IngestOutcome> {
    let stamps: Vec<(usize, Hlc)> = events
        .iter()
        .filter_map(|i| i.event.hlc.map(|h| (i.index, h)))
        .collect();
    let outcome = store
        .write(Ingest {
            from: from.to_string(),
            events,
            contacts,
        })
        .await?;
    let not_stored: HashSet<usize> = outcome
        .retry
        .iter()
        .chain(&outcome.refused)
        .map(|v| v.index)
        .collect();
    if let Some((_, latest)) = stamps
        .iter()
        .filter(|(i, _)| !not_stored.contains(i))
        .max_by_key(|(_, h)| (h.wall_ms, h.logical))
    {
        clock.restore(latest);
    }
    Ok(outcome)
}

struct Ingest {
    from: String,
    events: Vec<Incoming>,
    contacts: Vec<IncomingContact>,
}

impl Write for Ingest {
    type Output = IngestOutcome;

    async fn run(
        &self,
        tx: &mut Tx<'_>,
        commit: &mut Commit,
    ) -> NodeResult<NodeResult<IngestOutcome>> {
        Ok(Ok(ingest(
            tx,
            commit,
            &self.from,
            &self.events,
            &self.contacts,
        )
        .await?))
    }
}

/// The ids of the declines among `events`.
pub fn declines_among<'a>(events: impl Iterator<Item = &'a TicketEvent>) -> HashSet<&'a str> {
    events
        .filter(|e| matches!(e.kind, Some(Kind::HandoffDeclined(_))))
        .map(|e| e.event_id.as_str())
        .collect()
}

/// The decline an offer follows, when it is not among `declines` (those
/// held and those arriving with it): the offer waits for it. Folded
/// without it, the owner's earlier offer would still look pending and the
/// owner like an equivocator.
pub fn missing_decline<'a>(event: &'a TicketEvent, declines: &HashSet<&str>) -> Option<&'a str> {
    match &event.kind {
        Some(Kind::HandoffOffered(o))
            if !o.after_decline_event_id.is_empty()
                && !declines.contains(o.after_decline_event_id.as_str()) =>
        {
            Some(&o.after_decline_event_id)
        }
        _ => None,
    }
}

/// The body the origin `node` passes the citizen's contact to, now that the
/// ticket went from `before` to `after`: a new owner other than itself, if
/// the citizen consented (DESIGN.md §3).
pub fn contact_goes_to<'a>(
    before: Option<&Ticket>,
    after: &'a Ticket,
    node: &str,
) -> Option<&'a str> {
    let old_owner = before.map(|b| b.owner_node.as_str()).unwrap_or_default();
    let consent = after.consent.is_some_and(|c| c.share_with_competent_body);
    (after.origin_node == node
        && after.owner_node != node
        && after.owner_node != old_owner
        && consent)
        .then_some(after.owner_node.as_str())
}

/// Why `node` refuses a contact `from` sent for `ticket`: only the origin
/// passes one on, only with the citizen's consent, never after erasure,
/// and only to the owner.
pub fn contact_refusal(ticket: &Ticket, from: &str, node: &str) -> Option<(&'static str, String)> {
    if ticket.origin_node != from {
        return Some((
            "contact_not_origin",
            format!(
                "contact for ticket {}: only its origin ({}) may pass on the citizen's contact",
                ticket.id, ticket.origin_node
            ),
        ));
    }
    if !ticket.consent.is_some_and(|k| k.share_with_competent_body) {
        return Some((
            "contact_no_consent",
            format!(
                "contact for ticket {}: the citizen did not consent to sharing it",
                ticket.id
            ),
        ));
    }
    if ticket.contact_erased {
        return Some((
            "contact_erased",
            format!(
                "contact for ticket {}: the origin erased it; it is not stored again",
                ticket.id
            ),
        ));
    }
    if ticket.owner_node != node {
        return Some((
            "contact_not_owner",
            format!(
                "contact for ticket {}: this node is not its owner ({})",
                ticket.id, ticket.owner_node
            ),
        ));
    }
    None
}

/// Stores events and contacts a peer delivered, ticket by ticket: each
/// ticket's events are folded with those already held, and stored only if
/// both the sender and this node are among its participants. Returns the
/// verdicts; `Err` only for failures that abort the transaction.
async fn ingest(
    tx: &mut Tx<'_>,
    commit: &mut Commit,
    from: &str,
    events: &[Incoming],
    contacts: &[IncomingContact],
) -> NodeResult<IngestOutcome> {
    let node = commit.node().to_string();
    let node = node.as_str();
    let mut out = IngestOutcome::default();
    let now = urpnet_proto::hlc::system_time_ms() as i64;
    // Group by ticket, keeping the batch order of tickets.
    let mut order: Vec<&str> = Vec::new();
    let mut by_ticket: HashMap<&str, Vec<&Incoming>> = HashMap::new();
    for e in events {
        let list = by_ticket.entry(e.stored.ticket_id.as_str()).or_default();
        if list.is_empty() {
            order.push(e.stored.ticket_id.as_str());
        }
        list.push(e);
    }
    // What is already held, for every ticket of the batch at once (a catch-up
    // batch holds hundreds of tickets: one statement instead of hundreds).
    let mut held_by_ticket = tickets::events_of_tickets_in(tx, &order).await?;
    // References already taken, for the tickets this batch may create.
    let references: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event.kind {
            Some(Kind::Created(c)) => Some(c.reference.as_str()),
            _ => None,
        })
        .collect();
    let mut taken = tickets::references_taken_in(tx, &references).await?;
    for ticket_id in order {
        let batch = &by_ticket[ticket_id];
        let held_events = held_by_ticket.remove(ticket_id).unwrap_or_default();
        // Events are keyed by (author, id): another author's event with the
        // same id is another event.
        let held_keys: HashMap<(&str, &str), &TicketEvent> = held_events
            .iter()
            .map(|e| ((e.author_node.as_str(), e.event_id.as_str()), e))
            .collect();
        let mut has_created = held_events
            .iter()
            .any(|e| matches!(e.kind, Some(Kind::Created(_))));
        let mut total = held_events.len();
        let mut by_author: HashMap<&str, usize> = HashMap::new();
        for e in &held_events {
            *by_author.entry(e.author_node.as_str()).or_default() += 1;
        }
        let mut fresh: Vec<&Incoming> = Vec::new();
        let mut seen = HashSet::new();
        for e in batch {
            let key = (e.stored.author_node.as_str(), e.stored.event_id.as_str());
            let refuse = |code: &'static str, reason: String| Verdict {
                index: e.index,
                id: e.stored.event_id.clone(),
                code,
                reason,
            };
            if let Some(held) = held_keys.get(&key) {
                if **held == e.event {
                    out.duplicates += 1;
                } else {
                    out.refused.push(refuse(
                        "event_rewritten",
                        format!(
                            "event {} of {} is already held with other content",
                            e.stored.event_id, e.stored.author_node
                        ),
                    ));
                }
            } else if !seen.insert(key) {
                out.duplicates += 1;
            } else if total >= MAX_EVENTS_PER_TICKET
                || by_author.get(key.0).copied().unwrap_or(0) >= MAX_EVENTS_PER_AUTHOR
            {
                // A ticket's log is bounded, so no participant can grow it
                // (and every fold of it) without end.
                out.refused.push(refuse(
                    "ticket_full",
                    format!(
                        "ticket {ticket_id} holds its limit of events ({} in all, {} per author)",
                        MAX_EVENTS_PER_TICKET, MAX_EVENTS_PER_AUTHOR
                    ),
                ));
            } else if matches!(e.event.kind, Some(Kind::Created(_))) && has_created {
                // One Created per ticket: a second one (byte-identical copies
                // are duplicates above) is refused, never stored.
                out.refused.push(refuse(
                    "second_created",
                    format!("ticket {ticket_id} was already created"),
                ));
            } else {
                has_created |= matches!(e.event.kind, Some(Kind::Created(_)));
                total += 1;
                *by_author.entry(key.0).or_default() += 1;
                fresh.push(e);
            }
        }
        let declines = declines_among(held_events.iter().chain(fresh.iter().map(|e| &e.event)));
        fresh.retain(|e| match missing_decline(&e.event, &declines) {
            Some(decline) => {
                out.retry.push(Verdict {
                    index: e.index,
                    id: e.stored.event_id.clone(),
                    code: "decline_missing",
                    reason: format!(
                        "ticket {ticket_id}: the offer follows decline {decline}, which has not arrived yet"
                    ),
                });
                false
            }
            None => true,
        });
        if fresh.is_empty() {
            continue;
        }
        let before = if held_events.is_empty() {
            None
        } else {
            fold(held_events.iter().cloned()).ticket
        };
        let folded = fold(
            held_events
                .into_iter()
                .chain(fresh.iter().map(|e| e.event.clone())),
        );
        let verdict = |code: &'static str, reason: String| -> Vec<Verdict> {
            fresh
                .iter()
                .map(|e| Verdict {
                    index: e.index,
                    id: e.stored.event_id.clone(),
                    code,
                    reason: reason.clone(),
                })
                .collect()
        };
        let Some(ticket) = folded.ticket.clone() else {
            out.retry.extend(verdict(
                "no_created",
                format!("ticket {ticket_id}: its Created event has not arrived yet"),
            ));
            continue;
        };
        let is_participant = |n: &str| {
            ticket
                .participants
                .binary_search_by(|p| p.as_str().cmp(n))
                .is_ok()
        };
        if !is_participant(from) {
            out.retry.extend(verdict(
                "sender_not_participant",
                format!("ticket {ticket_id}: the sender {from} is not one of its participants"),
            ));
            continue;
        }
        if !is_participant(node) {
            out.retry.extend(verdict(
                "receiver_not_participant",
                format!("ticket {ticket_id}: this node ({node}) is not one of its participants"),
            ));
            continue;
        }
        if before.is_none() {
            let clash = taken
                .get(&ticket.reference)
                .is_some_and(|id| *id != ticket.id);
            if clash {
                out.refused.extend(verdict(
                    "reference_clash",
                    format!(
                        "ticket {ticket_id}: reference {} already belongs to another ticket",
                        ticket.reference
                    ),
                ));
                continue;
            }
        }
        let rows: Vec<Vec<Value<'_>>> = fresh.iter().map(|e| e.stored.row(now)).collect();
        tx.insert_rows(INSERT_EVENTS, "", &rows).await?;
        out.applied += fresh.len() as u32;
        let fresh_events: Vec<&TicketEvent> = fresh.iter().map(|e| &e.event).collect();
        crate::notify::tables::enqueue_in(tx, commit, &ticket, &fresh_events).await?;
        tickets::apply_erasures_in(tx, &fresh_events).await?;
        match &before {
            None => {
                tickets::insert_ticket(tx, &ticket).await?;
                taken.insert(ticket.reference.clone(), ticket.id.clone());
            }
            Some(_) => tickets::update_ticket(tx, &ticket).await?,
        }
        // Participants this node had not seen get this node's own events (each
        // author sends its own; the one who added them sent the rest).
        let known: Vec<String> = before
            .as_ref()
            .map(|b| b.participants.clone())
            .unwrap_or_default();
        for peer in ticket.participants.iter().filter(|p| *p != node) {
            if known.contains(peer) {
                continue;
            }
            outbox::add_participant_in(tx, peer, &ticket.id).await?;
            let own: Vec<&str> = folded
                .log
                .iter()
                .filter(|(e, _)| e.author_node == node)
                .map(|(e, _)| e.event_id.as_str())
                .collect();
            outbox::enqueue_events_in(tx, commit, peer, &own).await?;
        }
        if let Some(owner) = contact_goes_to(before.as_ref(), &ticket, node)
            && tickets::has_contact_in(tx, &ticket.id).await?
        {
            outbox::enqueue_in(
                tx,
                commit,
                owner,
                outbox::OUTBOX_CONTACT,
                &[ticket.id.as_str()],
            )
            .await?;
        }
        commit.ticket_changed(&ticket, from, fresh.len() as u32);
    }
    for c in contacts {
        let ticket = match tickets::state_in(tx, &c.ticket_id).await? {
            Some(t) => t,
            None => {
                out.contacts_retry.push(Verdict {
                    index: c.index,
                    id: c.ticket_id.clone(),
                    code: "contact_unknown_ticket",
                    reason: format!("ticket {} is not held here yet", c.ticket_id),
                });
                continue;
            }
        };
        if let Some((code, reason)) = contact_refusal(&ticket, from, node) {
            out.contacts_refused.push(Verdict {
                index: c.index,
                id: c.ticket_id.clone(),
                code,
                reason,
            });
            continue;
        }
        tickets::put_contact_in(tx, &c.ticket_id, &c.contact, now).await?;
        out.contacts_stored += 1;
    }
    Ok(out)
}
