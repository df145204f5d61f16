//! The node's store (DESIGN.md §8): SQLite by default, PostgreSQL by URL, one
//! schema and one set of SQL for both.
//!
//! Reads go through a small sqlx (`Any`) pool. Every write goes through one
//! writer ([`writer`]: a task on PostgreSQL, a rusqlite thread on SQLite) that
//! commits concurrent requests together (group commit), so a burst of
//! creations is durable — on SQLite every commit is fsynced
//! (`synchronous=FULL`) — and still fast.

mod writer;

use std::path::{Path, PathBuf};

use prost::Message as _;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};
use urpnet_proto::db;
use urpnet_proto::territory::Territory;
use urpnet_proto::text;
use urpnet_proto::v1::{
    Attachment, CitizenContact, Signed, Status, Ticket, TicketChange, TicketEvent,
};

use crate::error::{NodeError, NodeResult};
pub use writer::{
    CreateOutcome, FaqOverrideRow, FaqRow, Incoming, IncomingContact, IngestOutcome, Mutation,
    NewTicket, Retry, StoredEvent, Verdict,
};

pub use urpnet_proto::db::Backend;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://...` or `postgres://...`.
    pub url: String,
    /// Directory for attachment content.
    pub blob_dir: PathBuf,
    /// Most writes per group commit.
    pub max_batch: usize,
    /// Connections in the read pool.
    pub read_connections: u32,
    /// This node's id: the author of its own events, never an outbox
    /// destination.
    pub node: String,
}

/// Handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    reader: AnyPool,
    writes: mpsc::Sender<writer::WriteOp>,
    blob_dir: PathBuf,
    changes: broadcast::Sender<Arc<TicketChange>>,
    outbox: broadcast::Sender<String>,
}

/// One row of the outbox, ready to send.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    /// Sequence number (delivery order per peer).
    pub seq: i64,
    /// What it carries.
    pub payload: OutboxPayload,
}

/// What an outbox row carries.
#[derive(Debug, Clone)]
pub enum OutboxPayload {
    /// A stored event's envelope.
    Event(Signed),
    /// A citizen's contact for a ticket.
    Contact(String, CitizenContact),
    /// The event or contact is no longer held (nothing to send).
    Missing,
}

/// The outbox towards one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxSummary {
    /// Peer id.
    pub peer: String,
    /// Rows waiting.
    pub depth: u64,
    /// Creation time of the oldest, ms.
    pub oldest_ms: i64,
    /// The last error a peer gave for a row it asked to retry.
    pub last_error: String,
}

/// Filters of a ticket listing, already validated.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    /// Status numbers to include (empty: all).
    pub statuses: Vec<i32>,
    /// Category code; a code without '.' also matches its sub-categories.
    pub category: Option<String>,
    /// Office code.
    pub office: Option<String>,
    /// Channel number.
    pub channel: Option<i32>,
    /// (column, code) for the territory filter.
    pub territory: Option<(&'static str, String)>,
    /// Folded words that must all appear.
    pub words: Vec<String>,
    /// Minimum `updated_ms`.
    pub updated_since_ms: Option<i64>,
    /// Only ids lower than this (keyset pagination, newest first).
    pub before_id: Option<String>,
    /// Page size.
    pub limit: u32,
}

/// A Desk credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRecord {
    /// Pseudonymous id (ULID), recorded as the actor of events.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// Role name.
    pub role: String,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Revocation time, ms.
    pub revoked_ms: Option<i64>,
}

impl Store {
    /// Opens (creating if needed) the database, checks its durability
    /// settings, runs migrations and starts the writer, which ends when every
    /// `Store` handle is dropped.
    ///
    /// # Errors
    /// When the database cannot be opened or migrated, or SQLite does not run
    /// in WAL mode with `synchronous=FULL`.
    pub async fn open(options: &StoreOptions) -> NodeResult<(Store, tokio::task::JoinHandle<()>)> {
        let Some(backend) = Backend::of_url(&options.url) else {
            return Err(NodeError::invalid(
                "store.url",
                "must start with sqlite: or postgres:",
            ));
        };
        std::fs::create_dir_all(&options.blob_dir).map_err(|e| {
            NodeError::Internal(format!("cannot create {}: {e}", options.blob_dir.display()))
        })?;
        db::check_url(backend, &options.url)
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        let pool = |max: u32| db::pool_options(backend, max);
        let writer_pool = pool(1).connect(&options.url).await?;
        match backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&writer_pool)
                    .await
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&writer_pool)
                    .await
            }
        }
        .map_err(|e| NodeError::Internal(format!("migrating the database: {e}")))?;
        let reader = pool(options.read_connections.max(1))
            .connect(&options.url)
            .await?;

        let target = match backend {
            Backend::Sqlite => {
                writer_pool.close().await;
                writer::Target::Sqlite(open_sqlite_writer(&options.url)?)
            }
            Backend::Postgres => writer::Target::Pool(writer_pool),
        };
        let (writes, rx) = mpsc::channel(options.max_batch * 4);
        let (changes, _) = broadcast::channel(4096);
        let (outbox, _) = broadcast::channel(4096);
        let signals = writer::Signals {
            node: options.node.clone(),
            changes: changes.clone(),
            outbox: outbox.clone(),
        };
        let task = writer::spawn(target, rx, options.max_batch, signals);
        Ok((
            Store {
                backend,
                reader,
                writes,
                blob_dir: options.blob_dir.clone(),
                changes,
                outbox,
            },
            task,
        ))
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn submit<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<NodeResult<T>>) -> writer::WriteOp,
    ) -> NodeResult<T> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(op(tx))
            .await
            .map_err(|_| NodeError::Unavailable("the store is shutting down".into()))?;
        rx.await
            .map_err(|_| NodeError::Unavailable("the store is shutting down".into()))?
    }

    /// Stores a new ticket with its first event (group-committed with other
    /// concurrent writes). Idempotent on the request key.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn create_ticket(&self, new: NewTicket) -> NodeResult<CreateOutcome> {
        self.submit(|reply| writer::WriteOp::Create(Box::new(new), reply))
            .await
    }

    /// Appends one event made by `mutation` from the ticket's current state,
    /// and stores the new state. The mutation runs inside the writer, so it
    /// always sees the latest state.
    ///
    /// # Errors
    /// `NotFound`, whatever the mutation returns, `FailedPrecondition` when the
    /// event would have no effect, storage failures.
    pub async fn append_event(&self, ticket_id: &str, mutation: Mutation) -> NodeResult<Ticket> {
        let ticket_id = ticket_id.to_string();
        self.submit(|reply| writer::WriteOp::Append {
            ticket_id,
            mutation,
            reply,
        })
        .await
    }

    /// Stores what a peer delivered (verified by the caller), ticket by
    /// ticket, in one transaction with the outbox rows it calls for.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn ingest(
        &self,
        from: &str,
        events: Vec<Incoming>,
        contacts: Vec<IncomingContact>,
    ) -> NodeResult<IngestOutcome> {
        let from = from.to_string();
        self.submit(|reply| writer::WriteOp::Ingest {
            from,
            events,
            contacts,
            reply,
        })
        .await
    }

    /// Deletes the outbox rows a peer acknowledged and delays those it asked
    /// to retry.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn acknowledge(
        &self,
        peer: &str,
        delivered: Vec<i64>,
        retry: Vec<Retry>,
    ) -> NodeResult<()> {
        let peer = peer.to_string();
        self.submit(|reply| writer::WriteOp::Ack {
            peer,
            delivered,
            retry,
            reply,
        })
        .await
    }

    /// Queues held events for a peer (anti-entropy repairs).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn enqueue_events(&self, peer: &str, event_ids: Vec<String>) -> NodeResult<()> {
        let peer = peer.to_string();
        self.submit(|reply| writer::WriteOp::Enqueue {
            peer,
            event_ids,
            reply,
        })
        .await
    }

    /// Quarantines `peer` (with `Some(reason)`) or releases it (`None`).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_quarantine(&self, peer: &str, reason: Option<String>) -> NodeResult<()> {
        let peer = peer.to_string();
        self.submit(|reply| writer::WriteOp::Quarantine {
            peer,
            reason,
            reply,
        })
        .await
    }

    /// Stores FAQ versions and overrides in one transaction.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn write_faq(
        &self,
        rows: Vec<FaqRow>,
        overrides: Vec<FaqOverrideRow>,
    ) -> NodeResult<()> {
        self.submit(|reply| writer::WriteOp::Faq {
            rows,
            overrides,
            reply,
        })
        .await
    }

    /// Adds archive records (ignoring ids held already) and sets archive
    /// cursors, in one transaction.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn write_archive(
        &self,
        records: Vec<(Vec<u8>, Vec<u8>, i64)>,
        state: Vec<(&'static str, i64)>,
    ) -> NodeResult<()> {
        self.submit(|reply| writer::WriteOp::Archive {
            records,
            state,
            reply,
        })
        .await
    }

    /// The archive's cursors and tallies by name.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn archive_state(&self) -> NodeResult<std::collections::BTreeMap<String, i64>> {
        let rows = sqlx::query("SELECT name, CAST(value AS BIGINT) FROM archive_state")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Up to `limit` encoded archive records after `seq`, with their seq.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn archive_after(&self, seq: i64, limit: usize) -> NodeResult<Vec<(i64, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT CAST(seq AS BIGINT), record FROM archive_outbox WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Records made, and records after `seq` (waiting).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn archive_counts(&self, seq: i64) -> NodeResult<(u64, u64)> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(CASE WHEN seq > $1 THEN 1 ELSE 0 END), 0) AS BIGINT) FROM archive_outbox",
        )
        .bind(seq)
        .fetch_one(&self.reader)
        .await?;
        Ok((
            row.try_get::<i64, _>(0)? as u64,
            row.try_get::<i64, _>(1)? as u64,
        ))
    }

    /// Tickets owned by `owner` in a terminal status (closed, rejected,
    /// merged), updated at or after `since_ms`, after the key `after`
    /// (updated ms, id), oldest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn closed_since(
        &self,
        owner: &str,
        after: (i64, &str),
        limit: usize,
    ) -> NodeResult<Vec<(i64, Ticket)>> {
        let rows = sqlx::query(
            "SELECT updated_ms, state FROM tickets WHERE owner_node = $1 AND status IN ($2, $3, $4) \
             AND (updated_ms > $5 OR (updated_ms = $5 AND id > $6)) ORDER BY updated_ms, id LIMIT $7",
        )
        .bind(owner.to_owned())
        .bind(Status::Closed as i64)
        .bind(Status::Rejected as i64)
        .bind(Status::Merged as i64)
        .bind(after.0)
        .bind(after.1.to_owned())
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let state: Vec<u8> = r.try_get(1)?;
                let ticket = Ticket::decode(state.as_slice())
                    .map_err(|e| NodeError::Internal(format!("stored ticket: {e}")))?;
                Ok((r.try_get(0)?, ticket))
            })
            .collect()
    }

    /// The current version of every FAQ entry held (encoded envelopes).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn faq_current(&self) -> NodeResult<Vec<Vec<u8>>> {
        let rows = sqlx::query(
            "SELECT v.envelope FROM faq_current c JOIN faq_versions v \
             ON v.owner = c.owner AND v.entry_id = c.entry_id AND v.version = c.version AND v.sha = c.sha",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<Vec<u8>, _>(0))
            .collect::<Result<_, _>>()?)
    }

    /// One FAQ version's envelope (by its key, version and payload hash).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn faq_envelope(
        &self,
        owner: &str,
        entry_id: &str,
        version: i64,
        sha: &str,
    ) -> NodeResult<Option<Vec<u8>>> {
        let row = sqlx::query(
            "SELECT envelope FROM faq_versions WHERE owner = $1 AND entry_id = $2 AND version = $3 AND sha = $4",
        )
        .bind(owner)
        .bind(entry_id)
        .bind(version)
        .bind(sha)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?)
    }

    /// Every version of an entry held, newest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn faq_history(&self, owner: &str, entry_id: &str) -> NodeResult<Vec<Vec<u8>>> {
        let rows = sqlx::query(
            "SELECT envelope FROM faq_versions WHERE owner = $1 AND entry_id = $2 \
             ORDER BY version DESC, sha DESC",
        )
        .bind(owner)
        .bind(entry_id)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<Vec<u8>, _>(0))
            .collect::<Result<_, _>>()?)
    }

    /// This node's FAQ overrides: owner, entry, encoded content, reason,
    /// operator, time.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn faq_overrides(
        &self,
    ) -> NodeResult<Vec<(String, String, Vec<u8>, String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT owner, entry_id, content, reason, set_by, set_at_ms FROM faq_overrides",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                ))
            })
            .collect()
    }

    /// Quarantined peers and why.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn quarantined(&self) -> NodeResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT node, reason FROM quarantine ORDER BY node")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Changes committed from now on.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Arc<TicketChange>> {
        self.changes.subscribe()
    }

    /// Peers that get new outbox rows from now on.
    pub fn subscribe_outbox(&self) -> broadcast::Receiver<String> {
        self.outbox.subscribe()
    }

    /// Up to `limit` outbox rows for `peer` after `after_seq` that are due
    /// at `now_ms`, in order.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn outbox_batch(
        &self,
        peer: &str,
        after_seq: i64,
        now_ms: i64,
        limit: u32,
    ) -> NodeResult<Vec<OutboxItem>> {
        let rows = sqlx::query(
            "SELECT o.seq, o.kind, o.item, e.envelope, c.full_name, c.email, c.phone, c.fiscal_code \
             FROM outbox o \
             LEFT JOIN ticket_events e ON o.kind = 1 AND e.event_id = o.item \
             LEFT JOIN citizen_contacts c ON o.kind = 2 AND c.ticket_id = o.item \
             WHERE o.peer = $1 AND o.seq > $2 AND o.not_before_ms <= $3 ORDER BY o.seq LIMIT $4",
        )
        .bind(peer)
        .bind(after_seq)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get(0)?;
                let kind: i64 = r.try_get(1)?;
                let item: String = r.try_get(2)?;
                let envelope: Option<Vec<u8>> = r.try_get(3)?;
                let name: Option<String> = r.try_get(4)?;
                let payload = match (kind, envelope, name) {
                    (writer::OUTBOX_EVENT, Some(bytes), _) => {
                        OutboxPayload::Event(Signed::decode(bytes.as_slice()).map_err(|e| {
                            NodeError::Internal(format!("stored envelope does not decode: {e}"))
                        })?)
                    }
                    (writer::OUTBOX_CONTACT, _, Some(full_name)) => OutboxPayload::Contact(
                        item,
                        CitizenContact {
                            full_name,
                            email: r.try_get(5)?,
                            phone: r.try_get(6)?,
                            fiscal_code: r.try_get(7)?,
                        },
                    ),
                    _ => OutboxPayload::Missing,
                };
                Ok(OutboxItem { seq, payload })
            })
            .collect()
    }

    /// Depth, age and last error of the outbox towards each peer.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn outbox_summary(&self) -> NodeResult<Vec<OutboxSummary>> {
        let rows = sqlx::query(
            "SELECT peer, COUNT(*), MIN(created_ms), MAX(last_error) FROM outbox GROUP BY peer ORDER BY peer",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxSummary {
                    peer: r.try_get(0)?,
                    depth: r.try_get::<i64, _>(1)? as u64,
                    oldest_ms: r.try_get(2)?,
                    last_error: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Every peer this node shares a ticket with.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn sharing_peers(&self) -> NodeResult<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT node FROM ticket_participants ORDER BY node")
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Up to `limit` ids of tickets shared with `peer`, after `after_id`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn tickets_shared_with(
        &self,
        peer: &str,
        after_id: &str,
        limit: u32,
    ) -> NodeResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT ticket_id FROM ticket_participants WHERE node = $1 AND ticket_id > $2 \
             ORDER BY ticket_id LIMIT $3",
        )
        .bind(peer)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Those of `ticket_ids` that `peer` takes part in.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn tickets_shared_among(
        &self,
        peer: &str,
        ticket_ids: &[String],
    ) -> NodeResult<Vec<String>> {
        let mut out = Vec::new();
        for chunk in ticket_ids.chunks(500) {
            let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT ticket_id FROM ticket_participants WHERE node = $1 AND ticket_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(peer);
            for id in chunk {
                query = query.bind(id);
            }
            for r in query.fetch_all(&self.reader).await? {
                out.push(r.try_get(0)?);
            }
        }
        Ok(out)
    }

    /// The event keys (`<author>/<event id>`, since an event is its author's
    /// id) held for each of `ticket_ids`, sorted (tickets with no events are
    /// absent).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn event_ids(
        &self,
        ticket_ids: &[String],
    ) -> NodeResult<std::collections::BTreeMap<String, Vec<String>>> {
        let mut out = std::collections::BTreeMap::<String, Vec<String>>::new();
        for chunk in ticket_ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT ticket_id, author_node, event_id FROM ticket_events WHERE ticket_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            for r in query.fetch_all(&self.reader).await? {
                let (author, id): (String, String) = (r.try_get(1)?, r.try_get(2)?);
                out.entry(r.try_get(0)?)
                    .or_default()
                    .push(event_key(&author, &id));
            }
        }
        for keys in out.values_mut() {
            keys.sort_unstable();
        }
        Ok(out)
    }

    /// Stored envelopes of one ticket (all, or those with the given
    /// `<author>/<event id>` keys).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn envelopes(&self, ticket_id: &str, keys: &[String]) -> NodeResult<Vec<Signed>> {
        let rows = sqlx::query(
            "SELECT envelope, author_node, event_id FROM ticket_events WHERE ticket_id = $1 \
             ORDER BY hlc_wall, hlc_logical, author_node, event_id",
        )
        .bind(ticket_id)
        .fetch_all(&self.reader)
        .await?;
        let wanted: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        for r in &rows {
            let (author, id): (String, String) = (r.try_get(1)?, r.try_get(2)?);
            if wanted.is_empty() || wanted.contains(event_key(&author, &id).as_str()) {
                out.push(decode_envelope(r)?.0);
            }
        }
        Ok(out)
    }

    /// Tickets with a handoff pending to `node` (`incoming`) or offered by
    /// `node` (the rest), oldest first, at most 500 of each.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn offers(&self, node: &str) -> NodeResult<(Vec<Ticket>, Vec<Ticket>)> {
        let incoming = sqlx::query(
            "SELECT state FROM tickets WHERE pending_to = $1 ORDER BY updated_ms LIMIT 500",
        )
        .bind(node)
        .fetch_all(&self.reader)
        .await?;
        let outgoing = sqlx::query(
            "SELECT state FROM tickets WHERE pending_to <> '' AND owner_node = $1 ORDER BY updated_ms LIMIT 500",
        )
        .bind(node)
        .fetch_all(&self.reader)
        .await?;
        Ok((
            incoming
                .iter()
                .map(decode_state)
                .collect::<NodeResult<_>>()?,
            outgoing
                .iter()
                .map(decode_state)
                .collect::<NodeResult<_>>()?,
        ))
    }

    /// One ticket's state by id.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn ticket(&self, id: &str) -> NodeResult<Option<Ticket>> {
        let row = sqlx::query("SELECT state FROM tickets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| decode_state(&r)).transpose()
    }

    /// One ticket's state by citizen reference.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn ticket_by_reference(&self, reference: &str) -> NodeResult<Option<Ticket>> {
        let row = sqlx::query("SELECT state FROM tickets WHERE reference = $1")
            .bind(reference)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| decode_state(&r)).transpose()
    }

    /// The citizen's contact for a ticket, if this node holds it.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn contact(&self, ticket_id: &str) -> NodeResult<Option<CitizenContact>> {
        let row = sqlx::query("SELECT full_name, email, phone, fiscal_code FROM citizen_contacts WHERE ticket_id = $1")
            .bind(ticket_id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| CitizenContact {
            full_name: r.get(0),
            email: r.get(1),
            phone: r.get(2),
            fiscal_code: r.get(3),
        }))
    }

    /// A ticket's events as stored envelopes, in HLC order.
    ///
    /// # Errors
    /// Storage failures or an envelope that does not decode.
    pub async fn events(&self, ticket_id: &str) -> NodeResult<Vec<(Signed, TicketEvent)>> {
        let rows = sqlx::query(
            "SELECT envelope FROM ticket_events WHERE ticket_id = $1 \
             ORDER BY hlc_wall, hlc_logical, author_node, event_id",
        )
        .bind(ticket_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_envelope).collect()
    }

    /// Tickets matching a filter, newest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list(&self, filter: &TicketFilter) -> NodeResult<Vec<Ticket>> {
        let mut sql = String::from("SELECT state FROM tickets WHERE 1 = 1");
        let mut args: Vec<Arg> = Vec::new();
        let param = |args: &mut Vec<Arg>, a: Arg| {
            args.push(a);
            format!("${}", args.len())
        };
        if !filter.statuses.is_empty() {
            let list: Vec<String> = filter
                .statuses
                .iter()
                .map(|s| param(&mut args, Arg::Int(i64::from(*s))))
                .collect();
            sql += &format!(" AND status IN ({})", list.join(", "));
        }
        if let Some(category) = &filter.category {
            let exact = param(&mut args, Arg::Text(category.clone()));
            if category.contains('.') {
                sql += &format!(" AND category = {exact}");
            } else {
                // Sub-categories are `<code>.<sub>`: the range ['<code>.', '<code>/').
                let lo = param(&mut args, Arg::Text(format!("{category}.")));
                let hi = param(&mut args, Arg::Text(format!("{category}/")));
                sql +=
                    &format!(" AND (category = {exact} OR (category >= {lo} AND category < {hi}))");
            }
        }
        if let Some(office) = &filter.office {
            sql += &format!(
                " AND office = {}",
                param(&mut args, Arg::Text(office.clone()))
            );
        }
        if let Some(channel) = filter.channel {
            sql += &format!(
                " AND channel = {}",
                param(&mut args, Arg::Int(i64::from(channel)))
            );
        }
        if let Some((column, code)) = &filter.territory {
            sql += &format!(
                " AND {column} = {}",
                param(&mut args, Arg::Text(code.clone()))
            );
        }
        for word in &filter.words {
            sql += &format!(
                " AND search_text LIKE {}",
                param(&mut args, Arg::Text(format!("%{word}%")))
            );
        }
        if let Some(since) = filter.updated_since_ms {
            sql += &format!(" AND updated_ms >= {}", param(&mut args, Arg::Int(since)));
        }
        if let Some(before) = &filter.before_id {
            sql += &format!(" AND id < {}", param(&mut args, Arg::Text(before.clone())));
        }
        sql += &format!(
            " ORDER BY id DESC LIMIT {}",
            param(&mut args, Arg::Int(i64::from(filter.limit)))
        );
        let rows = bind_args(sqlx::query(&sql), args)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(decode_state).collect()
    }

    /// Tickets created since `since_ms` whose status is one of `statuses`,
    /// oldest first (to rebuild the duplicates index at start-up).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn created_since(&self, since_ms: i64, statuses: &[i32]) -> NodeResult<Vec<Ticket>> {
        let statuses: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
        let sql = format!(
            "SELECT state FROM tickets WHERE created_ms >= $1 AND status IN ({}) ORDER BY id",
            statuses.join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(since_ms)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(decode_state).collect()
    }

    /// The highest reference sequence number minted for `prefix` (e.g.
    /// `c_a662-2026-`), so the counter resumes after a restart.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn max_reference_seq(&self, prefix: &str) -> NodeResult<u64> {
        // The highest *number*: a longer run of digits is a larger number
        // (the sequence is zero-padded to six digits and may grow past it),
        // so `c_a662-2026-1000000` follows `…-999999`.
        let row = sqlx::query(
            "SELECT reference FROM tickets WHERE reference >= $1 AND reference < $2 \
             ORDER BY length(reference) DESC, reference DESC LIMIT 1",
        )
        .bind(format!("{prefix}0"))
        .bind(format!("{prefix}:"))
        .fetch_optional(&self.reader)
        .await?;
        let max: Option<String> = row.map(|r| r.try_get(0)).transpose()?;
        Ok(max
            .and_then(|r| r.strip_prefix(prefix).and_then(|s| s.parse().ok()))
            .unwrap_or(0))
    }

    /// The latest HLC stamp among stored events, to restart the clock after it.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn max_hlc(&self) -> NodeResult<Option<(i64, i64)>> {
        let row = sqlx::query("SELECT hlc_wall, hlc_logical FROM ticket_events ORDER BY hlc_wall DESC, hlc_logical DESC LIMIT 1")
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Ids of every ticket, for verification.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn ticket_ids(&self) -> NodeResult<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM tickets ORDER BY id")
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Tickets this node owns that are open, and those of them still
    /// waiting to be taken in charge (status new): the load it reports.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn load_counts(&self, owner: &str) -> NodeResult<(u32, u32)> {
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = $2 THEN 1 ELSE 0 END), 0) \
             FROM tickets WHERE owner_node = $1 AND status IN ($2, $3, $4, $5)",
        )
        .bind(owner)
        .bind(Status::New as i32 as i64)
        .bind(Status::Assigned as i32 as i64)
        .bind(Status::InProgress as i32 as i64)
        .bind(Status::WaitingCitizen as i32 as i64)
        .fetch_one(&self.reader)
        .await?;
        let open: i64 = row.try_get(0)?;
        let waiting: i64 = row.try_get(1)?;
        Ok((open as u32, waiting as u32))
    }

    /// Where attachment content with this hash lives.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        blob_path(&self.blob_dir, sha256)
    }

    /// Metadata of an attachment held here.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn attachment(&self, sha256: &str) -> NodeResult<Option<Attachment>> {
        let row = sqlx::query(
            "SELECT file_name, media_type, size_bytes FROM attachments WHERE sha256 = $1",
        )
        .bind(sha256)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|r| Attachment {
            sha256: sha256.to_string(),
            file_name: r.get(0),
            media_type: r.get(1),
            size_bytes: r.get::<i64, _>(2) as u64,
        }))
    }

    /// Adds a Desk credential.
    ///
    /// # Errors
    /// `AlreadyExists` for a name in use; storage failures.
    pub async fn add_operator(
        &self,
        record: &OperatorRecord,
        token_sha256: &str,
    ) -> NodeResult<()> {
        let result = sqlx::query(
            "INSERT INTO operators (id, name, role, token_sha256, created_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&record.id)
        .bind(&record.name)
        .bind(&record.role)
        .bind(token_sha256)
        .bind(record.created_ms)
        .execute(&self.reader)
        .await?;
        if result.rows_affected() == 0 {
            return Err(NodeError::AlreadyExists(format!(
                "an operator named {} already exists",
                record.name
            )));
        }
        Ok(())
    }

    /// The operator holding a token (by its sha256), revoked or not.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn operator_by_token(
        &self,
        token_sha256: &str,
    ) -> NodeResult<Option<OperatorRecord>> {
        let row = sqlx::query(
            "SELECT id, name, role, created_ms, revoked_ms FROM operators WHERE token_sha256 = $1",
        )
        .bind(token_sha256)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|r| operator_record(&r)))
    }

    /// Every operator, by name.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn operators(&self) -> NodeResult<Vec<OperatorRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_ms, revoked_ms FROM operators ORDER BY name",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(operator_record).collect())
    }

    /// Revokes an operator's token by name.
    ///
    /// # Errors
    /// `NotFound` for an unknown or already revoked name; storage failures.
    pub async fn revoke_operator(&self, name: &str, now_ms: i64) -> NodeResult<()> {
        let result = sqlx::query(
            "UPDATE operators SET revoked_ms = $1 WHERE name = $2 AND revoked_ms IS NULL",
        )
        .bind(now_ms)
        .bind(name)
        .execute(&self.reader)
        .await?;
        if result.rows_affected() == 0 {
            return Err(NodeError::NotFound(format!("active operator {name}")));
        }
        Ok(())
    }

    /// Closes the pools (the writer ends when the last handle is dropped).
    pub async fn close(&self) {
        self.reader.close().await;
    }
}

enum Arg {
    Int(i64),
    Text(String),
}

fn bind_args<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
        };
    }
    query
}

fn operator_record(r: &AnyRow) -> OperatorRecord {
    OperatorRecord {
        id: r.get(0),
        name: r.get(1),
        role: r.get(2),
        created_ms: r.get(3),
        revoked_ms: r.get(4),
    }
}

/// The writer's own SQLite connection (rusqlite), set up like every other:
/// WAL, `synchronous=FULL`, checked.
fn open_sqlite_writer(url: &str) -> NodeResult<rusqlite::Connection> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    // Checkpoint every ~40 MiB of WAL instead of 4 MiB: pages written again
    // and again between checkpoints are copied to the database once.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = 10000;",
    )?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    conn.set_prepared_statement_cache_capacity(64);
    if !mode.eq_ignore_ascii_case("wal") || sync != 2 {
        return Err(NodeError::Internal(format!(
            "SQLite must run with journal_mode=WAL and synchronous=FULL, found journal_mode={mode} synchronous={sync}"
        )));
    }
    Ok(conn)
}

/// Sets up a SQLite connection: WAL, `synchronous=FULL`, a busy timeout for
/// other processes (the operator CLI), then checks the durability settings.
fn decode_state(row: &AnyRow) -> NodeResult<Ticket> {
    let bytes: Vec<u8> = row.try_get(0)?;
    Ticket::decode(bytes.as_slice())
        .map_err(|e| NodeError::Internal(format!("stored ticket state does not decode: {e}")))
}

fn decode_envelope(row: &AnyRow) -> NodeResult<(Signed, TicketEvent)> {
    let bytes: Vec<u8> = row.try_get(0)?;
    let envelope = Signed::decode(bytes.as_slice())
        .map_err(|e| NodeError::Internal(format!("stored envelope does not decode: {e}")))?;
    let event = TicketEvent::decode(envelope.payload.as_slice())
        .map_err(|e| NodeError::Internal(format!("stored event does not decode: {e}")))?;
    Ok((envelope, event))
}

/// Where content with this hash lives under `dir` (two levels of fan-out).
pub fn blob_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(&sha256[..2]).join(&sha256[2..4]).join(sha256)
}

/// The columns of `tickets` derived from a state, besides the state itself.
#[derive(Debug, Clone)]
struct TicketColumns {
    province_code: String,
    region_code: String,
    istat_code: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    search_text: String,
    created_ms: i64,
    updated_ms: i64,
}

impl TicketColumns {
    fn of(ticket: &Ticket) -> Self {
        let location = ticket.location.clone().unwrap_or_default();
        let comune = Territory::italy().comune(&location.istat_code);
        let ms = |t: &Option<prost_types::Timestamp>| {
            t.as_ref().map(crate::ticket::fold::millis).unwrap_or(0) as i64
        };
        Self {
            province_code: comune.map(|c| c.province_code.clone()).unwrap_or_default(),
            region_code: comune.map(|c| c.region_code.clone()).unwrap_or_default(),
            istat_code: location.istat_code.clone(),
            latitude: location.coordinates.map(|c| c.latitude),
            longitude: location.coordinates.map(|c| c.longitude),
            search_text: text::fold(&format!(
                "{} {} {} {}",
                ticket.reference, ticket.subject, ticket.description, location.address
            )),
            created_ms: ms(&ticket.created_at),
            updated_ms: ms(&ticket.updated_at),
        }
    }
}

/// An event's key across nodes: `<author>/<event id>` (an id is unique only
/// within its author's events).
pub fn event_key(author: &str, event_id: &str) -> String {
    format!("{author}/{event_id}")
}
