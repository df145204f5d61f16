//! The single writer: group commit.
//!
//! Every write of the node is a [`WriteOp`] sent to one task. The task takes
//! the first op waiting, then every other op already queued (up to the batch
//! limit), applies them all in one transaction and commits once: one fsync
//! for the whole batch. Replies go out only after the commit, so an
//! acknowledged write is durable. If the batch fails as a whole (a storage
//! error, not a rule broken by one op), each op is retried in a transaction of
//! its own, so a bad op never takes good ones down with it.
//!
//! The statements are the same on both backends, behind [`WriteTx`]. On
//! PostgreSQL the writer is a task using sqlx. On SQLite it is a thread of its
//! own that runs a whole batch through rusqlite in one go: with sqlx every
//! statement is a hop to SQLite's worker thread, and under load each hop
//! waits for a CPU, which made a commit cost milliseconds.

use std::collections::{HashMap, HashSet};
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
    /// Query columns and encoded state, derived from `ticket` by
    /// [`NewTicket::new`] in the caller's task, not in the single writer.
    derived: (TicketColumns, Vec<u8>),
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
        let derived = (TicketColumns::of(&ticket), ticket.encode_to_vec());
        Self {
            ticket,
            event,
            contact,
            request_key,
            fingerprint,
            attachments,
            derived,
        }
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

/// Where the writer writes.
pub(super) enum Target {
    /// SQLite through rusqlite, on a dedicated thread.
    Sqlite(rusqlite::Connection),
    /// PostgreSQL (or any sqlx backend) through a one-connection pool.
    Pool(AnyPool),
}

/// Starts the writer; it ends when every sender of `rx` is dropped.
pub(super) fn spawn(
    target: Target,
    rx: mpsc::Receiver<WriteOp>,
    max_batch: usize,
) -> tokio::task::JoinHandle<()> {
    match target {
        Target::Pool(pool) => tokio::spawn(run_pool(pool, rx, max_batch)),
        Target::Sqlite(conn) => {
            tokio::task::spawn_blocking(move || run_sqlite(conn, rx, max_batch))
        }
    }
}

/// Runs a batch of ops in one transaction of its backend.
trait Committer {
    async fn transaction(&mut self, ops: &[WriteOp]) -> NodeResult<Vec<OpResult>>;
}

impl Committer for AnyPool {
    async fn transaction(&mut self, ops: &[WriteOp]) -> NodeResult<Vec<OpResult>> {
        let mut tx = self.begin().await?;
        let results = execute(&mut tx, ops).await?;
        tx.commit().await?;
        Ok(results)
    }
}

impl Committer for rusqlite::Connection {
    async fn transaction(&mut self, ops: &[WriteOp]) -> NodeResult<Vec<OpResult>> {
        let mut tx = self.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let results = execute(&mut tx, ops).await?;
        tx.commit()?;
        Ok(results)
    }
}

async fn run_pool(mut pool: AnyPool, mut rx: mpsc::Receiver<WriteOp>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let started = Instant::now();
        let results = write_batch(&mut pool, &batch).await;
        reply(&mut batch, results, started);
    }
    pool.close().await;
    tracing::debug!("store writer stopped");
}

fn run_sqlite(mut conn: rusqlite::Connection, mut rx: mpsc::Receiver<WriteOp>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        // Nothing in the SQLite path ever waits: the future completes on its
        // first poll, on this thread.
        let results = futures::executor::block_on(write_batch(&mut conn, &batch));
        reply(&mut batch, results, started);
    }
    tracing::debug!("store writer stopped");
}

/// Runs a batch in one transaction; if that fails, each op in its own.
async fn write_batch(committer: &mut impl Committer, batch: &[WriteOp]) -> Vec<OpResult> {
    metrics::histogram!("urpnet_store_commit_batch_size").record(batch.len() as f64);
    match committer.transaction(batch).await {
        Ok(results) => results,
        Err(err) if batch.len() > 1 => {
            tracing::warn!(error = %err, ops = batch.len(), "group commit failed; retrying each write alone");
            let mut results = Vec::with_capacity(batch.len());
            for op in batch {
                let one = committer.transaction(std::slice::from_ref(op)).await;
                results.push(
                    one.map(|mut r| r.remove(0))
                        .unwrap_or_else(|e| failed(op, e)),
                );
            }
            results
        }
        Err(err) => vec![failed(&batch[0], err)],
    }
}

/// Answers every op of a committed batch.
fn reply(batch: &mut Vec<WriteOp>, results: Vec<OpResult>, started: Instant) {
    metrics::histogram!("urpnet_store_commit_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    for (op, result) in batch.drain(..).zip(results) {
        // A caller that gave up is no reason to stop: ignore closed replies.
        match (op, result) {
            (WriteOp::Create(_, reply), OpResult::Create(r)) => drop(reply.send(r)),
            (WriteOp::Append { reply, .. }, OpResult::Append(r)) => drop(reply.send(r.map(|t| *t))),
            _ => unreachable!("results are produced in op order and kind"),
        }
    }
}

fn failed(op: &WriteOp, err: NodeError) -> OpResult {
    match op {
        WriteOp::Create(..) => OpResult::Create(Err(err)),
        WriteOp::Append { .. } => OpResult::Append(Err(err)),
    }
}

/// A value bound into a statement.
pub(super) enum Value<'a> {
    Int(i64),
    Real(Option<f64>),
    Text(&'a str),
    Bytes(&'a [u8]),
}

/// An open write transaction, whatever the backend: the three shapes of
/// statement the writer needs. Placeholders are `$1`, `$2`, ... in order.
pub(super) trait WriteTx {
    /// Most rows per INSERT statement. Each statement to PostgreSQL is a
    /// network round trip, so rows are sent many at a time; SQLite runs in
    /// this thread, where a cached one-row statement run N times is cheapest.
    const ROWS_PER_STATEMENT: usize;
    /// Runs a statement, returning its rows as text columns.
    async fn texts(&mut self, sql: &str, values: &[&Value<'_>]) -> NodeResult<Vec<Vec<String>>>;
    /// Runs a query returning at most one blob.
    async fn blob(&mut self, sql: &str, values: &[&Value<'_>]) -> NodeResult<Option<Vec<u8>>>;
}

impl WriteTx for sqlx::Transaction<'_, sqlx::Any> {
    const ROWS_PER_STATEMENT: usize = 1_000;

    async fn texts(&mut self, sql: &str, values: &[&Value<'_>]) -> NodeResult<Vec<Vec<String>>> {
        let rows = bind_sqlx(sqlx::query(sql), values)
            .fetch_all(&mut **self)
            .await?;
        rows.iter()
            .map(|r| {
                (0..sqlx::Row::len(r))
                    .map(|i| r.try_get::<String, _>(i).map_err(NodeError::from))
                    .collect()
            })
            .collect()
    }

    async fn blob(&mut self, sql: &str, values: &[&Value<'_>]) -> NodeResult<Option<Vec<u8>>> {
        let row = bind_sqlx(sqlx::query(sql), values)
            .fetch_optional(&mut **self)
            .await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?)
    }
}

fn bind_sqlx<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    values: &'q [&'q Value<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for value in values {
        query = match *value {
            Value::Int(v) => query.bind(*v),
            Value::Real(v) => query.bind(*v),
            Value::Text(v) => query.bind(*v),
            Value::Bytes(v) => query.bind(*v),
        };
    }
    query
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Real(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Value::Real(None) => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Bytes(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

impl WriteTx for rusqlite::Transaction<'_> {
    const ROWS_PER_STATEMENT: usize = 1;

    async fn texts(&mut self, sql: &str, values: &[&Value<'_>]) -> NodeResult<Vec<Vec<String>>> {
        let mut stmt = self.prepare_cached(sql)?;
        let width = stmt.column_count();
        let rows = stmt.query_map(rusqlite::params_from_iter(values), |row| {
            (0..width)
                .map(|i| row.get::<_, String>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    async fn blob(&mut self, sql: &str, values: &[&Value<'_>]) -> NodeResult<Option<Vec<u8>>> {
        use rusqlite::OptionalExtension as _;
        let mut stmt = self.prepare_cached(sql)?;
        Ok(stmt
            .query_row(rusqlite::params_from_iter(values), |row| {
                row.get::<_, Vec<u8>>(0)
            })
            .optional()?)
    }
}

/// Runs ops in one transaction. `Err` only for failures that abort it.
///
/// Creates are written together, a few multi-row statements for the whole
/// batch: each statement is a round trip to the database (for SQLite, to its
/// worker thread), and under load those round trips, not the fsync, are what
/// a commit costs. Appends need the ticket's latest state and run one by one.
async fn execute(tx: &mut impl WriteTx, ops: &[WriteOp]) -> NodeResult<Vec<OpResult>> {
    let creates: Vec<&NewTicket> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Create(new, _) => Some(&**new),
            WriteOp::Append { .. } => None,
        })
        .collect();
    let mut created = create_all(tx, &creates).await?.into_iter();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match op {
            WriteOp::Create(..) => {
                OpResult::Create(Ok(created.next().expect("one outcome per create")))
            }
            WriteOp::Append {
                ticket_id,
                mutation,
                ..
            } => OpResult::Append(append(tx, ticket_id, mutation).await?),
        });
    }
    Ok(results)
}

/// Most bound parameters per statement (SQLite allows 32766, PostgreSQL 65535).
const MAX_PARAMS: usize = 30_000;

/// Runs `<head> VALUES (...), (...) <tail>` for all rows, in as few statements
/// as the parameter limit allows, and returns what they return.
async fn insert_rows<T: WriteTx>(
    tx: &mut T,
    head: &str,
    tail: &str,
    rows: &[Vec<Value<'_>>],
) -> NodeResult<Vec<Vec<String>>> {
    let Some(width) = rows.first().map(Vec::len) else {
        return Ok(Vec::new());
    };
    let rows_per_statement = (MAX_PARAMS / width).min(T::ROWS_PER_STATEMENT);
    // All chunks but the last have the same size: build their SQL once.
    let full = insert_sql(head, tail, width, rows_per_statement.min(rows.len()));
    let mut returned = Vec::new();
    for chunk in rows.chunks(rows_per_statement) {
        let partial;
        let sql = if chunk.len() == rows_per_statement.min(rows.len()) {
            &full
        } else {
            partial = insert_sql(head, tail, width, chunk.len());
            &partial
        };
        let values: Vec<&Value<'_>> = chunk.iter().flatten().collect();
        returned.extend(tx.texts(sql, &values).await?);
    }
    Ok(returned)
}

/// `<head> VALUES ($1, …), (…) <tail>` for `rows` rows of `width` values.
fn insert_sql(head: &str, tail: &str, width: usize, rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * width * 6 + 16);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", r * width + c + 1);
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(tail);
    sql
}

/// Writes a batch of creates; one outcome per create, in order.
async fn create_all(tx: &mut impl WriteTx, news: &[&NewTicket]) -> NodeResult<Vec<CreateOutcome>> {
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
    let claimed: HashSet<String> = insert_rows(
        tx,
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
    let events: Vec<Vec<Value<'_>>> = stored.iter().map(|n| event_row(&n.event)).collect();
    insert_rows(
        tx,
        "INSERT INTO ticket_events (event_id, ticket_id, hlc_wall, hlc_logical, author_node, envelope, received_ms)",
        "",
        &events,
    )
    .await?;
    let tickets: Vec<Vec<Value<'_>>> = stored
        .iter()
        .map(|n| {
            let (c, state) = &n.derived;
            let t = &n.ticket;
            vec![
                Value::Text(&t.id),
                Value::Text(&t.reference),
                Value::Text(&t.origin_node),
                Value::Text(&t.owner_node),
                Value::Text(&t.category),
                Value::Int(i64::from(t.channel)),
                Value::Int(i64::from(t.status)),
                Value::Int(i64::from(t.priority)),
                Value::Text(&t.office),
                Value::Text(&c.istat_code),
                Value::Text(&c.province_code),
                Value::Text(&c.region_code),
                Value::Real(c.latitude),
                Value::Real(c.longitude),
                Value::Text(&c.search_text),
                Value::Int(c.created_ms),
                Value::Int(c.updated_ms),
                Value::Bytes(state),
            ]
        })
        .collect();
    insert_rows(
        tx,
        "INSERT INTO tickets (id, reference, origin_node, owner_node, category, channel, status, priority, office, \
         istat_code, province_code, region_code, latitude, longitude, search_text, created_ms, updated_ms, state)",
        "",
        &tickets,
    )
    .await?;
    let contacts: Vec<Vec<Value<'_>>> = stored
        .iter()
        .filter_map(|n| {
            let c = n.contact.as_ref()?;
            Some(vec![
                Value::Text(&n.ticket.id),
                Value::Text(&c.full_name),
                Value::Text(&c.email),
                Value::Text(&c.phone),
                Value::Text(&c.fiscal_code),
                Value::Int(n.event.hlc_wall),
            ])
        })
        .collect();
    insert_rows(
        tx,
        "INSERT INTO citizen_contacts (ticket_id, full_name, email, phone, fiscal_code, created_ms)",
        "",
        &contacts,
    )
    .await?;
    let mut blobs = HashSet::new();
    let attachments: Vec<Vec<Value<'_>>> = stored
        .iter()
        .flat_map(|n| n.attachments.iter().map(move |a| (n, a)))
        .filter(|(_, a)| blobs.insert(a.sha256.as_str()))
        .map(|(n, a)| {
            vec![
                Value::Text(&a.sha256),
                Value::Text(&a.file_name),
                Value::Text(&a.media_type),
                Value::Int(a.size_bytes as i64),
                Value::Int(n.event.hlc_wall),
            ]
        })
        .collect();
    insert_rows(
        tx,
        "INSERT INTO attachments (sha256, file_name, media_type, size_bytes, created_ms)",
        "ON CONFLICT (sha256) DO NOTHING",
        &attachments,
    )
    .await?;

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

fn event_row(e: &StoredEvent) -> Vec<Value<'_>> {
    vec![
        Value::Text(&e.event_id),
        Value::Text(&e.ticket_id),
        Value::Int(e.hlc_wall),
        Value::Int(e.hlc_logical),
        Value::Text(&e.author_node),
        Value::Bytes(&e.envelope),
        Value::Int(e.hlc_wall),
    ]
}

/// Outer `Err`: the transaction must abort. Inner `Err`: this op is refused
/// and wrote nothing.
async fn append(
    tx: &mut impl WriteTx,
    ticket_id: &str,
    mutation: &Mutation,
) -> NodeResult<NodeResult<Box<Ticket>>> {
    let state = tx
        .blob(
            "SELECT state FROM tickets WHERE id = $1",
            &[&Value::Text(ticket_id)],
        )
        .await?;
    let Some(state) = state else {
        return Ok(Err(NodeError::NotFound(format!("ticket {ticket_id}"))));
    };
    let current = Ticket::decode(state.as_slice())
        .map_err(|e| NodeError::Internal(format!("stored ticket state does not decode: {e}")))?;
    let (stored, event) = match mutation(&current) {
        Ok(made) => made,
        Err(refused) => return Ok(Err(refused)),
    };
    let mut state = Some(current);
    if let Effect::Ineffective(reason) = apply(&mut state, &event) {
        return Ok(Err(NodeError::FailedPrecondition(reason)));
    }
    let ticket = state.expect("apply keeps an existing ticket");
    insert_rows(
        tx,
        "INSERT INTO ticket_events (event_id, ticket_id, hlc_wall, hlc_logical, author_node, envelope, received_ms)",
        "",
        &[event_row(&stored)],
    )
    .await?;
    let c = TicketColumns::of(&ticket);
    let encoded = ticket.encode_to_vec();
    tx.texts(
        "UPDATE tickets SET owner_node = $1, status = $2, priority = $3, office = $4, updated_ms = $5, state = $6 \
         WHERE id = $7",
        &[
            &Value::Text(&ticket.owner_node),
            &Value::Int(i64::from(ticket.status)),
            &Value::Int(i64::from(ticket.priority)),
            &Value::Text(&ticket.office),
            &Value::Int(c.updated_ms),
            &Value::Bytes(&encoded),
            &Value::Text(&ticket.id),
        ],
    )
    .await?;
    Ok(Ok(Box::new(ticket)))
}
