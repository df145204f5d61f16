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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use sqlx::{AnyPool, Row as _};
use tokio::sync::{broadcast, mpsc, oneshot};
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{Attachment, CitizenContact, Signed, Ticket, TicketChange, TicketEvent};

use super::TicketColumns;
use crate::error::{NodeError, NodeResult};
use crate::ticket::{Effect, apply, fold};

/// Outbox row kinds.
pub(crate) const OUTBOX_EVENT: i64 = 1;
/// A citizen contact passed to the owner (item = ticket id).
pub(crate) const OUTBOX_CONTACT: i64 = 2;

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

impl StoredEvent {
    /// The index columns of `event`, carried in `envelope`.
    pub fn of(event: &TicketEvent, envelope: &Signed) -> Self {
        let stamp = event.hlc.unwrap_or_default();
        Self {
            event_id: event.event_id.clone(),
            ticket_id: event.ticket_id.clone(),
            hlc_wall: stamp.wall_ms as i64,
            hlc_logical: i64::from(stamp.logical),
            author_node: event.author_node.clone(),
            envelope: envelope.encode_to_vec(),
        }
    }
}

/// The node a ticket's pending handoff is offered to (empty: none).
fn pending_to(ticket: &Ticket) -> &str {
    ticket
        .pending_handoff
        .as_ref()
        .map(|p| p.to_node.as_str())
        .unwrap_or_default()
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

/// One outbox row the peer asked to see again later.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Outbox sequence number.
    pub seq: i64,
    /// Not before this time (ms).
    pub not_before_ms: i64,
    /// The peer's reason.
    pub error: String,
}

/// A FAQ version to store (decided by the FAQ book, which serialises its
/// writes and keeps the merge in memory).
#[derive(Debug, Clone)]
pub struct FaqRow {
    /// Owner node id.
    pub owner: String,
    /// Entry id.
    pub entry_id: String,
    /// Version.
    pub version: i64,
    /// Hex sha256 of the signed payload.
    pub sha: String,
    /// Owner's publication sequence.
    pub seq: i64,
    /// A tombstone.
    pub retired: bool,
    /// The encoded `Signed` envelope.
    pub envelope: Vec<u8>,
    /// It won the merge: it becomes the entry's current version.
    pub current: bool,
}

/// A local override to set (`content` some) or clear.
#[derive(Debug, Clone)]
pub struct FaqOverrideRow {
    /// Owner node id.
    pub owner: String,
    /// Entry id.
    pub entry_id: String,
    /// Encoded `FaqContent`, reason, operator, time (ms); `None` clears.
    pub content: Option<(Vec<u8>, String, String, i64)>,
}

pub(super) enum WriteOp {
    Archive {
        /// (record id, encoded record, made at ms).
        records: Vec<(Vec<u8>, Vec<u8>, i64)>,
        /// Cursors and tallies to set, by name.
        state: Vec<(&'static str, i64)>,
        reply: oneshot::Sender<NodeResult<()>>,
    },
    Faq {
        rows: Vec<FaqRow>,
        overrides: Vec<FaqOverrideRow>,
        reply: oneshot::Sender<NodeResult<()>>,
    },
    Create(Box<NewTicket>, oneshot::Sender<NodeResult<CreateOutcome>>),
    Append {
        ticket_id: String,
        mutation: Mutation,
        reply: oneshot::Sender<NodeResult<Ticket>>,
    },
    Ingest {
        from: String,
        events: Vec<Incoming>,
        contacts: Vec<IncomingContact>,
        reply: oneshot::Sender<NodeResult<IngestOutcome>>,
    },
    Ack {
        peer: String,
        delivered: Vec<i64>,
        retry: Vec<Retry>,
        reply: oneshot::Sender<NodeResult<()>>,
    },
    Enqueue {
        peer: String,
        event_ids: Vec<String>,
        reply: oneshot::Sender<NodeResult<()>>,
    },
    Quarantine {
        peer: String,
        /// `Some(reason)` quarantines, `None` releases.
        reason: Option<String>,
        reply: oneshot::Sender<NodeResult<()>>,
    },
}

enum OpResult {
    Create(NodeResult<CreateOutcome>),
    Append(NodeResult<Box<Ticket>>),
    Ingest(NodeResult<IngestOutcome>),
    Done(NodeResult<()>),
}

/// Where the writer announces what it committed: changed tickets (for
/// watchers) and peers with new outbox rows (for their delivery workers).
#[derive(Debug, Clone)]
pub(super) struct Signals {
    /// This node's id (never a destination).
    pub node: String,
    /// Tickets changed by a commit.
    pub changes: broadcast::Sender<Arc<TicketChange>>,
    /// Peers with new outbox rows.
    pub outbox: broadcast::Sender<String>,
}

/// What a transaction will announce once committed.
#[derive(Default)]
struct Notices {
    changes: Vec<TicketChange>,
    peers: BTreeSet<String>,
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
    signals: Signals,
) -> tokio::task::JoinHandle<()> {
    match target {
        Target::Pool(pool) => tokio::spawn(run_pool(pool, rx, max_batch, signals)),
        Target::Sqlite(conn) => {
            tokio::task::spawn_blocking(move || run_sqlite(conn, rx, max_batch, &signals))
        }
    }
}

/// Runs a batch of ops in one transaction of its backend.
trait Committer {
    async fn transaction(
        &mut self,
        ops: &[WriteOp],
        node: &str,
        notices: &mut Notices,
    ) -> NodeResult<Vec<OpResult>>;
}

impl Committer for AnyPool {
    async fn transaction(
        &mut self,
        ops: &[WriteOp],
        node: &str,
        notices: &mut Notices,
    ) -> NodeResult<Vec<OpResult>> {
        let mut tx = self.begin().await?;
        let results = execute(&mut tx, ops, node, notices).await?;
        tx.commit().await?;
        Ok(results)
    }
}

impl Committer for rusqlite::Connection {
    async fn transaction(
        &mut self,
        ops: &[WriteOp],
        node: &str,
        notices: &mut Notices,
    ) -> NodeResult<Vec<OpResult>> {
        let mut tx = self.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let results = execute(&mut tx, ops, node, notices).await?;
        tx.commit()?;
        Ok(results)
    }
}

async fn run_pool(
    mut pool: AnyPool,
    mut rx: mpsc::Receiver<WriteOp>,
    max_batch: usize,
    signals: Signals,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let started = Instant::now();
        let (results, notices) = write_batch(&mut pool, &batch, &signals.node).await;
        reply(&mut batch, results, started);
        announce(&signals, notices);
    }
    pool.close().await;
    tracing::debug!("store writer stopped");
}

/// Publishes what a commit changed. Nobody listening is fine.
fn announce(signals: &Signals, notices: Notices) {
    for change in notices.changes {
        let _ = signals.changes.send(Arc::new(change));
    }
    for peer in notices.peers {
        let _ = signals.outbox.send(peer);
    }
}

fn run_sqlite(
    mut conn: rusqlite::Connection,
    mut rx: mpsc::Receiver<WriteOp>,
    max_batch: usize,
    signals: &Signals,
) {
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
        let (results, notices) =
            futures::executor::block_on(write_batch(&mut conn, &batch, &signals.node));
        reply(&mut batch, results, started);
        announce(signals, notices);
    }
    tracing::debug!("store writer stopped");
}

/// Runs a batch in one transaction; if that fails, each op in its own.
/// Notices are kept only from transactions that committed.
async fn write_batch(
    committer: &mut impl Committer,
    batch: &[WriteOp],
    node: &str,
) -> (Vec<OpResult>, Notices) {
    metrics::histogram!("urpnet_store_commit_batch_size").record(batch.len() as f64);
    let mut notices = Notices::default();
    match committer.transaction(batch, node, &mut notices).await {
        Ok(results) => (results, notices),
        Err(err) if batch.len() > 1 => {
            tracing::warn!(error = %err, ops = batch.len(), "group commit failed; retrying each write alone");
            let mut results = Vec::with_capacity(batch.len());
            let mut kept = Notices::default();
            for op in batch {
                let mut one_notices = Notices::default();
                let one = committer
                    .transaction(std::slice::from_ref(op), node, &mut one_notices)
                    .await;
                if one.is_ok() {
                    kept.changes.append(&mut one_notices.changes);
                    kept.peers.append(&mut one_notices.peers);
                }
                results.push(
                    one.map(|mut r| r.remove(0))
                        .unwrap_or_else(|e| failed(op, e)),
                );
            }
            (results, kept)
        }
        Err(err) => (vec![failed(&batch[0], err)], Notices::default()),
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
            (WriteOp::Ingest { reply, .. }, OpResult::Ingest(r)) => drop(reply.send(r)),
            (
                WriteOp::Ack { reply, .. }
                | WriteOp::Enqueue { reply, .. }
                | WriteOp::Quarantine { reply, .. }
                | WriteOp::Archive { reply, .. }
                | WriteOp::Faq { reply, .. },
                OpResult::Done(r),
            ) => {
                drop(reply.send(r));
            }
            _ => unreachable!("results are produced in op order and kind"),
        }
    }
}

fn failed(op: &WriteOp, err: NodeError) -> OpResult {
    match op {
        WriteOp::Create(..) => OpResult::Create(Err(err)),
        WriteOp::Append { .. } => OpResult::Append(Err(err)),
        WriteOp::Ingest { .. } => OpResult::Ingest(Err(err)),
        WriteOp::Ack { .. }
        | WriteOp::Enqueue { .. }
        | WriteOp::Quarantine { .. }
        | WriteOp::Archive { .. }
        | WriteOp::Faq { .. } => OpResult::Done(Err(err)),
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
    /// Runs a query returning one blob per row.
    async fn blobs(&mut self, sql: &str, values: &[&Value<'_>]) -> NodeResult<Vec<Vec<u8>>>;
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

    async fn blobs(&mut self, sql: &str, values: &[&Value<'_>]) -> NodeResult<Vec<Vec<u8>>> {
        let rows = bind_sqlx(sqlx::query(sql), values)
            .fetch_all(&mut **self)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<Vec<u8>, _>(0))
            .collect::<Result<_, _>>()?)
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

    async fn blobs(&mut self, sql: &str, values: &[&Value<'_>]) -> NodeResult<Vec<Vec<u8>>> {
        let mut stmt = self.prepare_cached(sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), |row| {
            row.get::<_, Vec<u8>>(0)
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

/// Runs ops in one transaction. `Err` only for failures that abort it.
///
/// Creates are written together, a few multi-row statements for the whole
/// batch: each statement is a round trip to the database (for SQLite, to its
/// worker thread), and under load those round trips, not the fsync, are what
/// a commit costs. Appends need the ticket's latest state and run one by one.
async fn execute(
    tx: &mut impl WriteTx,
    ops: &[WriteOp],
    node: &str,
    notices: &mut Notices,
) -> NodeResult<Vec<OpResult>> {
    let creates: Vec<&NewTicket> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Create(new, _) => Some(&**new),
            _ => None,
        })
        .collect();
    let mut created = create_all(tx, &creates).await?.into_iter();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match op {
            WriteOp::Create(..) => {
                let outcome = created.next().expect("one outcome per create");
                if let CreateOutcome::Created(ticket) = &outcome {
                    notices.changes.push(change(ticket, node, 1));
                }
                OpResult::Create(Ok(outcome))
            }
            WriteOp::Append {
                ticket_id,
                mutation,
                ..
            } => OpResult::Append(append(tx, ticket_id, mutation, node, notices).await?),
            WriteOp::Ingest {
                from,
                events,
                contacts,
                ..
            } => OpResult::Ingest(Ok(ingest(tx, from, events, contacts, node, notices).await?)),
            WriteOp::Ack {
                peer,
                delivered,
                retry,
                ..
            } => {
                acknowledge(tx, peer, delivered, retry).await?;
                OpResult::Done(Ok(()))
            }
            WriteOp::Faq {
                rows, overrides, ..
            } => {
                write_faq(tx, rows, overrides).await?;
                OpResult::Done(Ok(()))
            }
            WriteOp::Archive { records, state, .. } => {
                let rows: Vec<Vec<Value<'_>>> = records
                    .iter()
                    .map(|(id, record, made)| {
                        vec![Value::Bytes(id), Value::Bytes(record), Value::Int(*made)]
                    })
                    .collect();
                insert_rows(
                    tx,
                    "INSERT INTO archive_outbox (id, record, made_ms)",
                    "ON CONFLICT (id) DO NOTHING",
                    &rows,
                )
                .await?;
                for (name, value) in state {
                    tx.texts(
                        "INSERT INTO archive_state (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                        &[&Value::Text(name), &Value::Int(*value)],
                    )
                    .await?;
                }
                OpResult::Done(Ok(()))
            }
            WriteOp::Quarantine { peer, reason, .. } => {
                match reason {
                    Some(reason) => {
                        tx.texts(
                            "INSERT INTO quarantine (node, reason, since_ms) VALUES ($1, $2, $3) \
                             ON CONFLICT (node) DO UPDATE SET reason = $2",
                            &[
                                &Value::Text(peer),
                                &Value::Text(reason),
                                &Value::Int(urpnet_proto::hlc::system_time_ms() as i64),
                            ],
                        )
                        .await?;
                    }
                    None => {
                        tx.texts(
                            "DELETE FROM quarantine WHERE node = $1",
                            &[&Value::Text(peer)],
                        )
                        .await?;
                    }
                }
                OpResult::Done(Ok(()))
            }
            WriteOp::Enqueue {
                peer, event_ids, ..
            } => {
                let ids: Vec<&str> = event_ids.iter().map(String::as_str).collect();
                enqueue(tx, peer, OUTBOX_EVENT, &ids, notices).await?;
                OpResult::Done(Ok(()))
            }
        });
    }
    Ok(results)
}

fn change(ticket: &Ticket, source: &str, events: u32) -> TicketChange {
    TicketChange {
        ticket: Some(ticket.clone()),
        source: source.to_string(),
        events,
    }
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
    let events: Vec<Vec<Value<'_>>> = stored
        .iter()
        .map(|n| event_row(&n.event, n.event.hlc_wall))
        .collect();
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

fn event_row(e: &StoredEvent, received_ms: i64) -> Vec<Value<'_>> {
    vec![
        Value::Text(&e.event_id),
        Value::Text(&e.ticket_id),
        Value::Int(e.hlc_wall),
        Value::Int(e.hlc_logical),
        Value::Text(&e.author_node),
        Value::Bytes(&e.envelope),
        Value::Int(received_ms),
    ]
}

/// Outer `Err`: the transaction must abort. Inner `Err`: this op is refused
/// and wrote nothing.
async fn append(
    tx: &mut impl WriteTx,
    ticket_id: &str,
    mutation: &Mutation,
    node: &str,
    notices: &mut Notices,
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
    let own = current
        .chain_heads
        .iter()
        .find(|h| h.author == node)
        .map_or(0, |h| h.seq as usize);
    if current.event_count as usize >= crate::ticket::MAX_EVENTS_PER_TICKET
        || own >= crate::ticket::MAX_EVENTS_PER_AUTHOR
    {
        return Ok(Err(NodeError::FailedPrecondition(format!(
            "ticket {ticket_id} holds its limit of events ({} in all, {} per body); open a new ticket",
            crate::ticket::MAX_EVENTS_PER_TICKET,
            crate::ticket::MAX_EVENTS_PER_AUTHOR
        ))));
    }
    let (stored, event) = match mutation(&current) {
        Ok(made) => made,
        Err(refused) => return Ok(Err(refused)),
    };
    let before = current.participants.clone();
    let mut state = Some(current);
    if let Effect::Ineffective(reason) = apply(&mut state, &event) {
        return Ok(Err(NodeError::FailedPrecondition(reason)));
    }
    let ticket = state.expect("apply keeps an existing ticket");
    insert_rows(
        tx,
        "INSERT INTO ticket_events (event_id, ticket_id, hlc_wall, hlc_logical, author_node, envelope, received_ms)",
        "",
        &[event_row(&stored, stored.hlc_wall)],
    )
    .await?;
    update_ticket(tx, &ticket).await?;
    // The new event goes to every other participant; a participant added by
    // it (an offer, a share) also needs everything before it, first.
    for peer in ticket.participants.iter().filter(|p| *p != node) {
        if before.contains(peer) {
            enqueue(tx, peer, OUTBOX_EVENT, &[stored.event_id.as_str()], notices).await?;
        } else {
            let all = event_ids_in_order(tx, &ticket.id).await?;
            let ids: Vec<&str> = all.iter().map(String::as_str).collect();
            enqueue(tx, peer, OUTBOX_EVENT, &ids, notices).await?;
            add_participant_row(tx, peer, &ticket.id).await?;
        }
    }
    notices.changes.push(change(&ticket, node, 1));
    Ok(Ok(Box::new(ticket)))
}

/// Rewrites a ticket's mutable columns and state.
async fn update_ticket(tx: &mut impl WriteTx, ticket: &Ticket) -> NodeResult<()> {
    let c = TicketColumns::of(ticket);
    let encoded = ticket.encode_to_vec();
    let pending_to = pending_to(ticket);
    tx.texts(
        "UPDATE tickets SET owner_node = $1, status = $2, priority = $3, office = $4, updated_ms = $5, state = $6, \
         pending_to = $7 WHERE id = $8",
        &[
            &Value::Text(&ticket.owner_node),
            &Value::Int(i64::from(ticket.status)),
            &Value::Int(i64::from(ticket.priority)),
            &Value::Text(&ticket.office),
            &Value::Int(c.updated_ms),
            &Value::Bytes(&encoded),
            &Value::Text(pending_to),
            &Value::Text(&ticket.id),
        ],
    )
    .await?;
    Ok(())
}

/// Inserts a ticket received from a peer (its first events).
async fn insert_ticket(tx: &mut impl WriteTx, t: &Ticket) -> NodeResult<()> {
    let c = TicketColumns::of(t);
    let state = t.encode_to_vec();
    let pending_to = pending_to(t);
    tx.texts(
        "INSERT INTO tickets (id, reference, origin_node, owner_node, category, channel, status, priority, office, \
         istat_code, province_code, region_code, latitude, longitude, search_text, created_ms, updated_ms, state, pending_to) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        &[
            &Value::Text(&t.id),
            &Value::Text(&t.reference),
            &Value::Text(&t.origin_node),
            &Value::Text(&t.owner_node),
            &Value::Text(&t.category),
            &Value::Int(i64::from(t.channel)),
            &Value::Int(i64::from(t.status)),
            &Value::Int(i64::from(t.priority)),
            &Value::Text(&t.office),
            &Value::Text(&c.istat_code),
            &Value::Text(&c.province_code),
            &Value::Text(&c.region_code),
            &Value::Real(c.latitude),
            &Value::Real(c.longitude),
            &Value::Text(&c.search_text),
            &Value::Int(c.created_ms),
            &Value::Int(c.updated_ms),
            &Value::Bytes(&state),
            &Value::Text(pending_to),
        ],
    )
    .await?;
    Ok(())
}

/// A ticket's event ids in fold order.
async fn event_ids_in_order(tx: &mut impl WriteTx, ticket_id: &str) -> NodeResult<Vec<String>> {
    let rows = tx
        .texts(
            "SELECT event_id FROM ticket_events WHERE ticket_id = $1 \
             ORDER BY hlc_wall, hlc_logical, author_node, event_id",
            &[&Value::Text(ticket_id)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect())
}

async fn add_participant_row(tx: &mut impl WriteTx, peer: &str, ticket_id: &str) -> NodeResult<()> {
    tx.texts(
        "INSERT INTO ticket_participants (node, ticket_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&Value::Text(peer), &Value::Text(ticket_id)],
    )
    .await?;
    Ok(())
}

/// Queues items for `peer`, in the order given.
async fn enqueue(
    tx: &mut impl WriteTx,
    peer: &str,
    kind: i64,
    items: &[&str],
    notices: &mut Notices,
) -> NodeResult<()> {
    if items.is_empty() {
        return Ok(());
    }
    let now = urpnet_proto::hlc::system_time_ms() as i64;
    let rows: Vec<Vec<Value<'_>>> = items
        .iter()
        .map(|item| {
            vec![
                Value::Text(peer),
                Value::Int(kind),
                Value::Text(item),
                Value::Int(now),
            ]
        })
        .collect();
    insert_rows(
        tx,
        "INSERT INTO outbox (peer, kind, item, created_ms)",
        "",
        &rows,
    )
    .await?;
    metrics::counter!("urpnet_outbox_enqueued_total").increment(items.len() as u64);
    notices.peers.insert(peer.to_string());
    Ok(())
}

/// Deletes what a peer acknowledged; marks what it asked to see again later.
async fn acknowledge<T: WriteTx>(
    tx: &mut T,
    peer: &str,
    delivered: &[i64],
    retry: &[Retry],
) -> NodeResult<()> {
    for chunk in delivered.chunks(T::ROWS_PER_STATEMENT.clamp(1, MAX_IN)) {
        let mut sql = String::from("DELETE FROM outbox WHERE peer = $1 AND seq IN (");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", i + 2));
        }
        sql.push(')');
        let values: Vec<Value<'_>> = std::iter::once(Value::Text(peer))
            .chain(chunk.iter().map(|s| Value::Int(*s)))
            .collect();
        let refs: Vec<&Value<'_>> = values.iter().collect();
        tx.texts(&sql, &refs).await?;
    }
    for r in retry {
        tx.texts(
            "UPDATE outbox SET attempts = attempts + 1, not_before_ms = $1, last_error = $2 WHERE peer = $3 AND seq = $4",
            &[
                &Value::Int(r.not_before_ms),
                &Value::Text(&r.error),
                &Value::Text(peer),
                &Value::Int(r.seq),
            ],
        )
        .await?;
    }
    Ok(())
}

/// Most ids in one `IN (...)` list.
const MAX_IN: usize = 500;

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Stores events and contacts a peer delivered, ticket by ticket: each
/// ticket's events are folded with those already held, and stored only if
/// both the sender and this node are among its participants. Returns the
/// verdicts; `Err` only for failures that abort the transaction.
async fn ingest(
    tx: &mut impl WriteTx,
    from: &str,
    events: &[Incoming],
    contacts: &[IncomingContact],
    node: &str,
    notices: &mut Notices,
) -> NodeResult<IngestOutcome> {
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
    let mut held_by_ticket: HashMap<String, Vec<TicketEvent>> = HashMap::new();
    for chunk in order.chunks(MAX_IN) {
        let sql = format!(
            "SELECT envelope FROM ticket_events WHERE ticket_id IN ({})",
            placeholders(1, chunk.len())
        );
        let values: Vec<Value<'_>> = chunk.iter().map(|id| Value::Text(id)).collect();
        let refs: Vec<&Value<'_>> = values.iter().collect();
        for bytes in tx.blobs(&sql, &refs).await? {
            let event = decode_stored(&bytes)?;
            held_by_ticket
                .entry(event.ticket_id.clone())
                .or_default()
                .push(event);
        }
    }
    // References already taken, for the tickets this batch may create.
    let references: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event.kind {
            Some(Kind::Created(c)) => Some(c.reference.as_str()),
            _ => None,
        })
        .collect();
    let mut taken: HashMap<String, String> = HashMap::new();
    for chunk in references.chunks(MAX_IN) {
        let sql = format!(
            "SELECT reference, id FROM tickets WHERE reference IN ({})",
            placeholders(1, chunk.len())
        );
        let values: Vec<Value<'_>> = chunk.iter().map(|r| Value::Text(r)).collect();
        let refs: Vec<&Value<'_>> = values.iter().collect();
        for row in tx.texts(&sql, &refs).await? {
            let mut row = row.into_iter();
            if let (Some(reference), Some(id)) = (row.next(), row.next()) {
                taken.insert(reference, id);
            }
        }
    }
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
            } else if total >= crate::ticket::MAX_EVENTS_PER_TICKET
                || by_author.get(key.0).copied().unwrap_or(0)
                    >= crate::ticket::MAX_EVENTS_PER_AUTHOR
            {
                // A ticket's log is bounded, so no participant can grow it
                // (and every fold of it) without end.
                out.refused.push(refuse(
                    "ticket_full",
                    format!(
                        "ticket {ticket_id} holds its limit of events ({} in all, {} per author)",
                        crate::ticket::MAX_EVENTS_PER_TICKET,
                        crate::ticket::MAX_EVENTS_PER_AUTHOR
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
        let rows: Vec<Vec<Value<'_>>> = fresh.iter().map(|e| event_row(&e.stored, now)).collect();
        insert_rows(
            tx,
            "INSERT INTO ticket_events (event_id, ticket_id, hlc_wall, hlc_logical, author_node, envelope, received_ms)",
            "",
            &rows,
        )
        .await?;
        out.applied += fresh.len() as u32;
        match &before {
            None => {
                insert_ticket(tx, &ticket).await?;
                taken.insert(ticket.reference.clone(), ticket.id.clone());
            }
            Some(_) => update_ticket(tx, &ticket).await?,
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
            add_participant_row(tx, peer, &ticket.id).await?;
            let own: Vec<&str> = folded
                .log
                .iter()
                .filter(|(e, _)| e.author_node == node)
                .map(|(e, _)| e.event_id.as_str())
                .collect();
            enqueue(tx, peer, OUTBOX_EVENT, &own, notices).await?;
        }
        // The origin passes the citizen's contact to a new owner, if the
        // citizen consented (DESIGN.md §3).
        let old_owner = before
            .as_ref()
            .map(|b| b.owner_node.as_str())
            .unwrap_or_default();
        let consent = ticket.consent.is_some_and(|c| c.share_with_competent_body);
        if ticket.origin_node == node
            && ticket.owner_node != node
            && ticket.owner_node != old_owner
            && consent
        {
            let has = tx
                .texts(
                    "SELECT ticket_id FROM citizen_contacts WHERE ticket_id = $1",
                    &[&Value::Text(&ticket.id)],
                )
                .await?;
            if !has.is_empty() {
                enqueue(
                    tx,
                    &ticket.owner_node,
                    OUTBOX_CONTACT,
                    &[ticket.id.as_str()],
                    notices,
                )
                .await?;
            }
        }
        notices
            .changes
            .push(change(&ticket, from, fresh.len() as u32));
    }
    for c in contacts {
        let state = tx
            .blob(
                "SELECT state FROM tickets WHERE id = $1",
                &[&Value::Text(&c.ticket_id)],
            )
            .await?;
        let ticket = match state.map(|s| Ticket::decode(s.as_slice())) {
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                return Err(NodeError::Internal(format!(
                    "stored ticket state does not decode: {e}"
                )));
            }
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
        let refuse = |code: &'static str, reason: String| Verdict {
            index: c.index,
            id: c.ticket_id.clone(),
            code,
            reason,
        };
        if ticket.origin_node != from {
            out.contacts_refused.push(refuse(
                "contact_not_origin",
                format!(
                    "contact for ticket {}: only its origin ({}) may pass on the citizen's contact",
                    ticket.id, ticket.origin_node
                ),
            ));
            continue;
        }
        if !ticket.consent.is_some_and(|k| k.share_with_competent_body) {
            out.contacts_refused.push(refuse(
                "contact_no_consent",
                format!(
                    "contact for ticket {}: the citizen did not consent to sharing it",
                    ticket.id
                ),
            ));
            continue;
        }
        if ticket.owner_node != node {
            out.contacts_refused.push(refuse(
                "contact_not_owner",
                format!(
                    "contact for ticket {}: this node is not its owner ({})",
                    ticket.id, ticket.owner_node
                ),
            ));
            continue;
        }
        tx.texts(
            "INSERT INTO citizen_contacts (ticket_id, full_name, email, phone, fiscal_code, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (ticket_id) DO UPDATE SET full_name = $2, email = $3, \
             phone = $4, fiscal_code = $5",
            &[
                &Value::Text(&c.ticket_id),
                &Value::Text(&c.contact.full_name),
                &Value::Text(&c.contact.email),
                &Value::Text(&c.contact.phone),
                &Value::Text(&c.contact.fiscal_code),
                &Value::Int(now),
            ],
        )
        .await?;
        out.contacts_stored += 1;
    }
    Ok(out)
}

fn decode_stored(bytes: &[u8]) -> NodeResult<TicketEvent> {
    let envelope = Signed::decode(bytes)
        .map_err(|e| NodeError::Internal(format!("stored envelope does not decode: {e}")))?;
    TicketEvent::decode(envelope.payload.as_slice())
        .map_err(|e| NodeError::Internal(format!("stored event does not decode: {e}")))
}

/// Stores FAQ versions (history and, for winners, the current pointer) and
/// local overrides.
async fn write_faq(
    tx: &mut impl WriteTx,
    rows: &[FaqRow],
    overrides: &[FaqOverrideRow],
) -> NodeResult<()> {
    let now = urpnet_proto::hlc::system_time_ms() as i64;
    for row in rows {
        tx.texts(
            "INSERT INTO faq_versions (owner, entry_id, version, sha, seq, retired, received_ms, envelope) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[
                &Value::Text(&row.owner),
                &Value::Text(&row.entry_id),
                &Value::Int(row.version),
                &Value::Text(&row.sha),
                &Value::Int(row.seq),
                &Value::Int(i64::from(row.retired)),
                &Value::Int(now),
                &Value::Bytes(&row.envelope),
            ],
        )
        .await?;
        if row.current {
            tx.texts(
                "INSERT INTO faq_current (owner, entry_id, version, sha) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (owner, entry_id) DO UPDATE SET version = $3, sha = $4",
                &[
                    &Value::Text(&row.owner),
                    &Value::Text(&row.entry_id),
                    &Value::Int(row.version),
                    &Value::Text(&row.sha),
                ],
            )
            .await?;
        }
    }
    for o in overrides {
        match &o.content {
            Some((content, reason, by, at)) => {
                tx.texts(
                    "INSERT INTO faq_overrides (owner, entry_id, content, reason, set_by, set_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (owner, entry_id) DO UPDATE \
                     SET content = $3, reason = $4, set_by = $5, set_at_ms = $6",
                    &[
                        &Value::Text(&o.owner),
                        &Value::Text(&o.entry_id),
                        &Value::Bytes(content),
                        &Value::Text(reason),
                        &Value::Text(by),
                        &Value::Int(*at),
                    ],
                )
                .await?;
            }
            None => {
                tx.texts(
                    "DELETE FROM faq_overrides WHERE owner = $1 AND entry_id = $2",
                    &[&Value::Text(&o.owner), &Value::Text(&o.entry_id)],
                )
                .await?;
            }
        }
    }
    Ok(())
}
