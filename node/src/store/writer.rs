//! The single writer: group commit.
//!
//! Every write of the node is a [`WriteOp`] sent to one task. The task takes
//! the first op waiting, then every other op already queued (up to the batch
//! limit), applies them all in one transaction and commits once: one fsync
//! for the whole batch. Replies go out only after the commit, so an
//! acknowledged write is durable. If the batch fails as a whole (a storage
//! error, not a rule broken by one op), each op is retried in a transaction of
//! its own, so a bad op never takes good ones down with it.

use std::time::Instant;

use prost::Message as _;
use sqlx::{AnyPool, Row as _};
use tokio::sync::{mpsc, oneshot};
use urpnet_proto::v1::{Attachment, CitizenContact, Ticket, TicketEvent};

use super::TicketColumns;
use crate::error::{NodeError, NodeResult};
use crate::ticket::{Effect, apply};

/// An event ready to store: the signed envelope's bytes and its index columns.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Event id.
    pub event_id: String,
    /// Ticket id.
    pub ticket_id: String,
    /// HLC wall time.
    pub hlc_wall: i64,
    /// HLC logical counter.
    pub hlc_logical: i64,
    /// Author node id.
    pub author_node: String,
    /// The encoded `Signed` envelope.
    pub envelope: Vec<u8>,
}

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

/// Makes the next event of a ticket from its current state (signing it), or
/// refuses. May run more than once if its batch is retried.
pub type Mutation = Box<dyn Fn(&Ticket) -> NodeResult<(StoredEvent, TicketEvent)> + Send + Sync>;

pub(super) enum WriteOp {
    Create(Box<NewTicket>, oneshot::Sender<NodeResult<CreateOutcome>>),
    Append {
        ticket_id: String,
        mutation: Mutation,
        reply: oneshot::Sender<NodeResult<Ticket>>,
    },
}

enum OpResult {
    Create(NodeResult<CreateOutcome>),
    Append(NodeResult<Box<Ticket>>),
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

pub(super) async fn run(pool: AnyPool, mut rx: mpsc::Receiver<WriteOp>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let started = Instant::now();
        metrics::histogram!("urpnet_store_commit_batch_size").record(batch.len() as f64);
        let results = match execute(&pool, &batch).await {
            Ok(results) => results,
            Err(err) if batch.len() > 1 => {
                tracing::warn!(error = %err, ops = batch.len(), "group commit failed; retrying each write alone");
                let mut results = Vec::with_capacity(batch.len());
                for op in &batch {
                    let one = execute(&pool, std::slice::from_ref(op)).await;
                    results.push(
                        one.map(|mut r| r.remove(0))
                            .unwrap_or_else(|e| failed(op, e)),
                    );
                }
                results
            }
            Err(err) => vec![failed(&batch[0], err)],
        };
        metrics::histogram!("urpnet_store_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        for (op, result) in batch.drain(..).zip(results) {
            // A caller that gave up is no reason to stop: ignore closed replies.
            match (op, result) {
                (WriteOp::Create(_, reply), OpResult::Create(r)) => drop(reply.send(r)),
                (WriteOp::Append { reply, .. }, OpResult::Append(r)) => {
                    drop(reply.send(r.map(|t| *t)))
                }
                _ => unreachable!("results are produced in op order and kind"),
            }
        }
    }
    pool.close().await;
    tracing::debug!("store writer stopped");
}

fn failed(op: &WriteOp, err: NodeError) -> OpResult {
    match op {
        WriteOp::Create(..) => OpResult::Create(Err(err)),
        WriteOp::Append { .. } => OpResult::Append(Err(err)),
    }
}

/// Runs ops in one transaction. `Err` only for failures that abort it.
async fn execute(pool: &AnyPool, ops: &[WriteOp]) -> NodeResult<Vec<OpResult>> {
    let mut tx: Tx = pool.begin().await?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match op {
            WriteOp::Create(new, _) => OpResult::Create(Ok(create(&mut tx, new).await?)),
            WriteOp::Append {
                ticket_id,
                mutation,
                ..
            } => OpResult::Append(append(&mut tx, ticket_id, mutation).await?),
        });
    }
    tx.commit().await?;
    Ok(results)
}

async fn create(tx: &mut Tx, new: &NewTicket) -> NodeResult<CreateOutcome> {
    let claimed = sqlx::query(
        "INSERT INTO create_requests (request_key, fingerprint, ticket_id, created_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (request_key) DO NOTHING",
    )
    .bind(&new.request_key)
    .bind(&new.fingerprint)
    .bind(&new.ticket.id)
    .bind(new.event.hlc_wall)
    .execute(&mut **tx)
    .await?;
    if claimed.rows_affected() == 0 {
        let row = sqlx::query(
            "SELECT ticket_id, fingerprint FROM create_requests WHERE request_key = $1",
        )
        .bind(&new.request_key)
        .fetch_one(&mut **tx)
        .await?;
        let (ticket_id, fingerprint): (String, String) = (row.get(0), row.get(1));
        return Ok(if fingerprint == new.fingerprint {
            CreateOutcome::Replayed(ticket_id)
        } else {
            CreateOutcome::Conflict
        });
    }
    insert_event(tx, &new.event).await?;
    let c = TicketColumns::of(&new.ticket);
    sqlx::query(
        "INSERT INTO tickets (id, reference, origin_node, owner_node, category, subject, channel, status, priority, office, \
         istat_code, province_code, region_code, latitude, longitude, search_text, address_key, created_ms, updated_ms, \
         state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
    )
    .bind(&new.ticket.id)
    .bind(&new.ticket.reference)
    .bind(&new.ticket.origin_node)
    .bind(&new.ticket.owner_node)
    .bind(&new.ticket.category)
    .bind(&new.ticket.subject)
    .bind(i64::from(new.ticket.channel))
    .bind(i64::from(new.ticket.status))
    .bind(i64::from(new.ticket.priority))
    .bind(&new.ticket.office)
    .bind(c.istat_code)
    .bind(c.province_code)
    .bind(c.region_code)
    .bind(c.latitude)
    .bind(c.longitude)
    .bind(c.search_text)
    .bind(c.address_key)
    .bind(c.created_ms)
    .bind(c.updated_ms)
    .bind(new.ticket.encode_to_vec())
    .execute(&mut **tx)
    .await?;
    if let Some(contact) = &new.contact {
        sqlx::query(
            "INSERT INTO citizen_contacts (ticket_id, full_name, email, phone, fiscal_code, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&new.ticket.id)
        .bind(&contact.full_name)
        .bind(&contact.email)
        .bind(&contact.phone)
        .bind(&contact.fiscal_code)
        .bind(c.created_ms)
        .execute(&mut **tx)
        .await?;
    }
    for a in &new.attachments {
        sqlx::query(
            "INSERT INTO attachments (sha256, file_name, media_type, size_bytes, created_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(&a.sha256)
        .bind(&a.file_name)
        .bind(&a.media_type)
        .bind(a.size_bytes as i64)
        .bind(c.created_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(CreateOutcome::Created(Box::new(new.ticket.clone())))
}

/// Outer `Err`: the transaction must abort. Inner `Err`: this op is refused
/// and wrote nothing.
async fn append(
    tx: &mut Tx,
    ticket_id: &str,
    mutation: &Mutation,
) -> NodeResult<NodeResult<Box<Ticket>>> {
    let row = sqlx::query("SELECT state FROM tickets WHERE id = $1")
        .bind(ticket_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(Err(NodeError::NotFound(format!("ticket {ticket_id}"))));
    };
    let current = super::decode_state(&row)?;
    let (stored, event) = match mutation(&current) {
        Ok(made) => made,
        Err(refused) => return Ok(Err(refused)),
    };
    let mut state = Some(current);
    if let Effect::Ineffective(reason) = apply(&mut state, &event) {
        return Ok(Err(NodeError::FailedPrecondition(reason)));
    }
    let ticket = state.expect("apply keeps an existing ticket");
    insert_event(tx, &stored).await?;
    let c = TicketColumns::of(&ticket);
    sqlx::query(
        "UPDATE tickets SET owner_node = $1, status = $2, priority = $3, office = $4, updated_ms = $5, state = $6 \
         WHERE id = $7",
    )
    .bind(&ticket.owner_node)
    .bind(i64::from(ticket.status))
    .bind(i64::from(ticket.priority))
    .bind(&ticket.office)
    .bind(c.updated_ms)
    .bind(ticket.encode_to_vec())
    .bind(&ticket.id)
    .execute(&mut **tx)
    .await?;
    Ok(Ok(Box::new(ticket)))
}

async fn insert_event(tx: &mut Tx, e: &StoredEvent) -> NodeResult<()> {
    sqlx::query(
        "INSERT INTO ticket_events (event_id, ticket_id, hlc_wall, hlc_logical, author_node, envelope, received_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&e.event_id)
    .bind(&e.ticket_id)
    .bind(e.hlc_wall)
    .bind(e.hlc_logical)
    .bind(&e.author_node)
    .bind(&e.envelope)
    .bind(e.hlc_wall)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
