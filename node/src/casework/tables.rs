//! The casework's writes: a ticket opened at this node's desk (with its
//! request key in `create_requests`, which makes a retried create answer the
//! first one) and an event appended by its operators. Both are operations for
//! the single writer; they store through the shared ticket's, the peering
//! outbox's and the attachments' statements.

use std::collections::{HashMap, HashSet};

use urpnet_proto::v1::{Attachment, CitizenContact, Ticket, TicketEvent};

use crate::attachments;
use crate::error::{NodeError, NodeResult};
use crate::peering::tables as outbox;
use crate::shared_ticket::tables::{
    self as tickets, INSERT_CONTACTS, INSERT_EVENTS, INSERT_TICKETS, StoredEvent, TicketColumns,
};
use crate::shared_ticket::{Effect, MAX_EVENTS_PER_AUTHOR, MAX_EVENTS_PER_TICKET, apply};
use crate::store::{Commit, Store, Tx, Value, Write};

/// A ticket to create, fully prepared outside the writer.
#[derive(Debug, Clone)]
pub struct NewTicket {
    /// The state after the Created event.
    pub ticket: Ticket,
    /// The Created event.
    pub event: StoredEvent,
    /// The citizen's contact, if given.
    pub contact: Option<CitizenContact>,
    /// `<actor>:<request_id>`.
    pub request_key: String,
    /// sha256 of the request.
    pub fingerprint: String,
    /// Attachments whose content is already on disk.
    pub attachments: Vec<Attachment>,
    /// Query columns and encoded state, derived from `ticket` by
    /// [`NewTicket::new`] in the caller's task, not in the single writer.
    columns: TicketColumns,
    /// sha256 of the citizen's tracking key (empty: none).
    tracking_hash: String,
}

impl NewTicket {
    /// Prepares a ticket for the writer.
    pub fn new(
        ticket: Ticket,
        event: StoredEvent,
        contact: Option<CitizenContact>,
        request_key: String,
        fingerprint: String,
        attachments: Vec<Attachment>,
    ) -> Self {
        let columns = TicketColumns::of(&ticket);
        Self {
            ticket,
            event,
            contact,
            request_key,
            fingerprint,
            attachments,
            columns,
            tracking_hash: String::new(),
        }
    }

    /// With the hash of the ticket's tracking key, stored with it.
    pub fn with_tracking_hash(mut self, hash: String) -> Self {
        self.tracking_hash = hash;
        self
    }
}

/// What a create did.
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    /// A new ticket was stored.
    Created(Box<Ticket>),
    /// The request key was seen before with the same fingerprint: this ticket.
    Replayed(String),
    /// The request key was seen before with another fingerprint.
    Conflict,
}

/// Stores a new ticket with its first event (group-committed with other
/// concurrent writes). Idempotent on the request key.
///
/// # Errors
/// Storage failures.
pub async fn create(store: &Store, new: NewTicket) -> NodeResult<CreateOutcome> {
    store.write(CreateTicket(new)).await
}

/// Makes the next event of a ticket from its current state (signing it), or
/// refuses. May run more than once if its batch is retried.
pub type Mutation = Box<dyn Fn(&Ticket) -> NodeResult<(StoredEvent, TicketEvent)> + Send + Sync>;

/// Appends one event made by `mutation` from the ticket's current state,
/// and stores the new state. The mutation runs inside the writer, so it
/// always sees the latest state.
///
/// # Errors
/// `NotFound`, whatever the mutation returns, `FailedPrecondition` when the
/// event would have no effect, storage failures.
pub async fn append(store: &Store, ticket_id: &str, mutation: Mutation) -> NodeResult<Ticket> {
    store
        .write(AppendEvent {
            ticket_id: ticket_id.to_string(),
            mutation,
        })
        .await
}

/// The request key (`<actor>:<request id>`) that created a ticket here.
///
/// # Errors
/// Storage failures.
pub async fn request_key_of(store: &Store, ticket_id: &str) -> NodeResult<Option<String>> {
    use sqlx::Row as _;
    let row = sqlx::query("SELECT request_key FROM create_requests WHERE ticket_id = $1")
        .bind(ticket_id)
        .fetch_optional(store.reader())
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// The writer's operation behind [`create`].
struct CreateTicket(NewTicket);

impl Write for CreateTicket {
    type Output = CreateOutcome;

    async fn run(
        &self,
        tx: &mut Tx<'_>,
        commit: &mut Commit,
    ) -> NodeResult<NodeResult<CreateOutcome>> {
        let mut all = Self::run_all(&[self], tx, commit).await?;
        Ok(all.remove(0))
    }

    /// Creates are written together, a few multi-row statements for the
    /// whole batch: each statement is a round trip to the database, and
    /// under load those round trips, not the fsync, are what a commit costs.
    async fn run_all(
        ops: &[&Self],
        tx: &mut Tx<'_>,
        commit: &mut Commit,
    ) -> NodeResult<Vec<NodeResult<CreateOutcome>>> {
        let news: Vec<&NewTicket> = ops.iter().map(|op| &op.0).collect();
        let outcomes = create_all(tx, &news).await?;
        let node = commit.node().to_string();
        for outcome in &outcomes {
            if let CreateOutcome::Created(ticket) = outcome {
                commit.ticket_changed(ticket, &node, 1);
            }
        }
        Ok(outcomes.into_iter().map(Ok).collect())
    }
}

/// Writes a batch of creates; one outcome per create, in order.
async fn create_all(tx: &mut Tx<'_>, news: &[&NewTicket]) -> NodeResult<Vec<CreateOutcome>> {
    if news.is_empty() {
        return Ok(Vec::new());
    }
    // Claim the request keys; those already claimed (earlier, or by an
    // earlier op of this very batch) are replays or conflicts.
    let claims: Vec<Vec<Value<'_>>> = news
        .iter()
        .map(|n| {
            vec![
                Value::Text(&n.request_key),
                Value::Text(&n.fingerprint),
                Value::Text(&n.ticket.id),
                Value::Int(n.event.hlc_wall),
            ]
        })
        .collect();
    let claimed: HashSet<String> = tx
        .insert_rows(
            "INSERT INTO create_requests (request_key, fingerprint, ticket_id, created_ms)",
            "ON CONFLICT (request_key) DO NOTHING RETURNING request_key",
            &claims,
        )
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect();
    let mut taken = HashSet::new();
    let fresh: Vec<bool> = news
        .iter()
        .map(|n| claimed.contains(&n.request_key) && taken.insert(&n.request_key))
        .collect();

    let mut seen = HashMap::new();
    for (n, _) in news.iter().zip(&fresh).filter(|(_, f)| !**f) {
        if !seen.contains_key(&n.request_key) {
            let rows = tx
                .texts(
                    "SELECT ticket_id, fingerprint FROM create_requests WHERE request_key = $1",
                    &[&Value::Text(&n.request_key)],
                )
                .await?;
            let mut row = rows.into_iter().next().unwrap_or_default().into_iter();
            let (ticket_id, fingerprint) = (
                row.next().unwrap_or_default(),
                row.next().unwrap_or_default(),
            );
            seen.insert(n.request_key.clone(), (ticket_id, fingerprint));
        }
    }

    let stored: Vec<&NewTicket> = news
        .iter()
        .zip(&fresh)
        .filter(|(_, f)| **f)
        .map(|(n, _)| *n)
        .collect();
    let events: Vec<Vec<Value<'_>>> = stored
        .iter()
        .map(|n| n.event.row(n.event.hlc_wall))
        .collect();
    tx.insert_rows(INSERT_EVENTS, "", &events).await?;
    let rows: Vec<Vec<Value<'_>>> = stored.iter().map(|n| n.columns.row(&n.ticket)).collect();
    tx.insert_rows(INSERT_TICKETS, "", &rows).await?;
    let contacts: Vec<Vec<Value<'_>>> = stored
        .iter()
        .filter_map(|n| {
            let c = n.contact.as_ref()?;
            Some(tickets::contact_row(&n.ticket.id, c, n.event.hlc_wall))
        })
        .collect();
    tx.insert_rows(INSERT_CONTACTS, "", &contacts).await?;
    let files: Vec<(&Attachment, i64)> = stored
        .iter()
        .flat_map(|n| n.attachments.iter().map(move |a| (a, n.event.hlc_wall)))
        .collect();
    attachments::tables::insert_in(tx, &files).await?;
    let keys: Vec<(&str, &str)> = stored
        .iter()
        .filter(|n| !n.tracking_hash.is_empty())
        .map(|n| (n.ticket.id.as_str(), n.tracking_hash.as_str()))
        .collect();
    crate::tracking::tables::insert_in(tx, &keys).await?;

    Ok(news
        .iter()
        .zip(&fresh)
        .map(|(n, fresh)| {
            if *fresh {
                return CreateOutcome::Created(Box::new(n.ticket.clone()));
            }
            let (ticket_id, fingerprint) = &seen[&n.request_key];
            if *fingerprint == n.fingerprint {
                CreateOutcome::Replayed(ticket_id.clone())
            } else {
                CreateOutcome::Conflict
            }
        })
        .collect())
}

/// The writer's operation behind [`append`].
struct AppendEvent {
    ticket_id: String,
    mutation: Mutation,
}

impl Write for AppendEvent {
    type Output = Ticket;

    /// Needs the ticket's latest state, so appends run one by one.
    async fn run(&self, tx: &mut Tx<'_>, commit: &mut Commit) -> NodeResult<NodeResult<Ticket>> {
        let ticket_id = self.ticket_id.as_str();
        let Some(current) = tickets::state_in(tx, ticket_id).await? else {
            return Ok(Err(NodeError::NotFound(format!("ticket {ticket_id}"))));
        };
        let node = commit.node().to_string();
        let own = current
            .chain_heads
            .iter()
            .find(|h| h.author == node)
            .map_or(0, |h| h.seq as usize);
        if current.event_count as usize >= MAX_EVENTS_PER_TICKET || own >= MAX_EVENTS_PER_AUTHOR {
            return Ok(Err(NodeError::FailedPrecondition(format!(
                "ticket {ticket_id} holds its limit of events ({MAX_EVENTS_PER_TICKET} in all, \
                 {MAX_EVENTS_PER_AUTHOR} per body); open a new ticket"
            ))));
        }
        let (stored, event) = match (self.mutation)(&current) {
            Ok(made) => made,
            Err(refused) => return Ok(Err(refused)),
        };
        let before = current.participants.clone();
        let mut state = Some(current);
        if let Effect::Ineffective(reason) = apply(&mut state, &event) {
            return Ok(Err(NodeError::FailedPrecondition(reason)));
        }
        let ticket = state.expect("apply keeps an existing ticket");
        tx.insert_rows(INSERT_EVENTS, "", &[stored.row(stored.hlc_wall)])
            .await?;
        tickets::update_ticket(tx, &ticket).await?;
        crate::notify::tables::enqueue_in(tx, commit, &ticket, &[&event]).await?;
        tickets::apply_erasures_in(tx, &[&event]).await?;
        // The new event goes to every other participant; a participant added
        // by it (an offer, a share) also needs everything before it, first.
        for peer in ticket.participants.iter().filter(|p| **p != node) {
            if before.contains(peer) {
                outbox::enqueue_events_in(tx, commit, peer, &[stored.event_id.as_str()]).await?;
            } else {
                let all = tickets::event_ids_in_order(tx, &ticket.id).await?;
                let ids: Vec<&str> = all.iter().map(String::as_str).collect();
                outbox::enqueue_events_in(tx, commit, peer, &ids).await?;
                outbox::add_participant_in(tx, peer, &ticket.id).await?;
            }
        }
        commit.ticket_changed(&ticket, &node, 1);
        Ok(Ok(ticket))
    }
}
