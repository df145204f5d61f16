//! Peering's tables: the transactional `outbox` (what each peer still has to
//! receive, in order), `ticket_participants` (which peers share which
//! tickets) and `quarantine` (peers caught equivocating).
//!
//! Rows are added inside other subsystems' write operations (an append, an
//! ingest) through the `*_in` functions, in the same transaction as the
//! events they carry, so an event is stored if and only if it is queued.

use prost::Message as _;
use sqlx::Row as _;
use urpnet_proto::v1::{CitizenContact, Signed};

use crate::error::{NodeError, NodeResult};
use crate::store::{Commit, MAX_IN, Store, Tx, Value, Write};

/// Outbox row kind: an event (item = event id).
pub const OUTBOX_EVENT: i64 = 1;
/// Outbox row kind: a citizen contact passed to the owner (item = ticket id).
pub const OUTBOX_CONTACT: i64 = 2;

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

// ---- inside the writer's transaction ----

/// Queues items of `kind` for `peer`, in the order given, and wakes its
/// delivery worker once committed.
///
/// # Errors
/// Storage failures.
pub async fn enqueue_in(
    tx: &mut Tx<'_>,
    commit: &mut Commit,
    peer: &str,
    kind: i64,
    items: &[&str],
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
    tx.insert_rows(
        "INSERT INTO outbox (peer, kind, item, created_ms)",
        "",
        &rows,
    )
    .await?;
    metrics::counter!("urpnet_outbox_enqueued_total").increment(items.len() as u64);
    commit.wake_peer(peer);
    Ok(())
}

/// Queues events (by id) for `peer`.
///
/// # Errors
/// Storage failures.
pub async fn enqueue_events_in(
    tx: &mut Tx<'_>,
    commit: &mut Commit,
    peer: &str,
    event_ids: &[&str],
) -> NodeResult<()> {
    enqueue_in(tx, commit, peer, OUTBOX_EVENT, event_ids).await
}

/// Records that `peer` takes part in a ticket.
///
/// # Errors
/// Storage failures.
pub async fn add_participant_in(tx: &mut Tx<'_>, peer: &str, ticket_id: &str) -> NodeResult<()> {
    tx.texts(
        "INSERT INTO ticket_participants (node, ticket_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&Value::Text(peer), &Value::Text(ticket_id)],
    )
    .await?;
    Ok(())
}

// ---- write operations ----

/// Deletes the outbox rows a peer acknowledged and delays those it asked to
/// retry.
///
/// # Errors
/// Storage failures.
pub async fn acknowledge(
    store: &Store,
    peer: &str,
    delivered: Vec<i64>,
    retry: Vec<Retry>,
) -> NodeResult<()> {
    store
        .write(Acknowledge {
            peer: peer.to_string(),
            delivered,
            retry,
        })
        .await
}

struct Acknowledge {
    peer: String,
    delivered: Vec<i64>,
    retry: Vec<Retry>,
}

impl Write for Acknowledge {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        let peer = self.peer.as_str();
        for chunk in self
            .delivered
            .chunks(tx.rows_per_statement().clamp(1, MAX_IN))
        {
            let mut sql = String::from("DELETE FROM outbox WHERE peer = $1 AND seq IN (");
            sql.push_str(&crate::store::placeholders(2, chunk.len()));
            sql.push(')');
            let values: Vec<Value<'_>> = std::iter::once(Value::Text(peer))
                .chain(chunk.iter().map(|s| Value::Int(*s)))
                .collect();
            let refs: Vec<&Value<'_>> = values.iter().collect();
            tx.texts(&sql, &refs).await?;
        }
        for r in &self.retry {
            tx.texts(
                "UPDATE outbox SET attempts = attempts + 1, not_before_ms = $1, last_error = $2 \
                 WHERE peer = $3 AND seq = $4",
                &[
                    &Value::Int(r.not_before_ms),
                    &Value::Text(&r.error),
                    &Value::Text(peer),
                    &Value::Int(r.seq),
                ],
            )
            .await?;
        }
        Ok(Ok(()))
    }
}

/// Queues held events for a peer (anti-entropy repairs).
///
/// # Errors
/// Storage failures.
pub async fn enqueue_events(store: &Store, peer: &str, event_ids: Vec<String>) -> NodeResult<()> {
    store
        .write(EnqueueEvents {
            peer: peer.to_string(),
            event_ids,
        })
        .await
}

struct EnqueueEvents {
    peer: String,
    event_ids: Vec<String>,
}

impl Write for EnqueueEvents {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, commit: &mut Commit) -> NodeResult<NodeResult<()>> {
        let ids: Vec<&str> = self.event_ids.iter().map(String::as_str).collect();
        enqueue_events_in(tx, commit, &self.peer, &ids).await?;
        Ok(Ok(()))
    }
}

/// Quarantines `peer` (with `Some(reason)`) or releases it (`None`).
///
/// # Errors
/// Storage failures.
pub async fn set_quarantine(store: &Store, peer: &str, reason: Option<String>) -> NodeResult<()> {
    store
        .write(SetQuarantine {
            peer: peer.to_string(),
            reason,
        })
        .await
}

struct SetQuarantine {
    peer: String,
    reason: Option<String>,
}

impl Write for SetQuarantine {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        match &self.reason {
            Some(reason) => {
                tx.texts(
                    "INSERT INTO quarantine (node, reason, since_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (node) DO UPDATE SET reason = $2",
                    &[
                        &Value::Text(&self.peer),
                        &Value::Text(reason),
                        &Value::Int(urpnet_proto::hlc::system_time_ms() as i64),
                    ],
                )
                .await?;
            }
            None => {
                tx.texts(
                    "DELETE FROM quarantine WHERE node = $1",
                    &[&Value::Text(&self.peer)],
                )
                .await?;
            }
        }
        Ok(Ok(()))
    }
}

// ---- reads ----

/// Quarantined peers and why.
///
/// # Errors
/// Storage failures.
pub async fn quarantined(store: &Store) -> NodeResult<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT node, reason FROM quarantine ORDER BY node")
        .fetch_all(store.reader())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Up to `limit` outbox rows for `peer` after `after_seq` that are due at
/// `now_ms`, in order.
///
/// # Errors
/// Storage failures.
pub async fn outbox_batch(
    store: &Store,
    peer: &str,
    after_seq: i64,
    now_ms: i64,
    limit: u32,
) -> NodeResult<Vec<OutboxItem>> {
    let rows = sqlx::query(include_str!("sql/outbox_batch.sql"))
        .bind(peer)
        .bind(after_seq)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(store.reader())
        .await?;
    rows.iter()
        .map(|r| {
            let seq: i64 = r.try_get(0)?;
            let kind: i64 = r.try_get(1)?;
            let item: String = r.try_get(2)?;
            let envelope: Option<Vec<u8>> = r.try_get(3)?;
            let name: Option<String> = r.try_get(4)?;
            let payload = match (kind, envelope, name) {
                (OUTBOX_EVENT, Some(bytes), _) => {
                    OutboxPayload::Event(Signed::decode(bytes.as_slice()).map_err(|e| {
                        NodeError::Internal(format!("stored envelope does not decode: {e}"))
                    })?)
                }
                (OUTBOX_CONTACT, _, Some(full_name)) => OutboxPayload::Contact(
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
pub async fn outbox_summary(store: &Store) -> NodeResult<Vec<OutboxSummary>> {
    let rows = sqlx::query(
        "SELECT peer, COUNT(*), MIN(created_ms), MAX(last_error) FROM outbox GROUP BY peer ORDER BY peer",
    )
    .fetch_all(store.reader())
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
pub async fn sharing_peers(store: &Store) -> NodeResult<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT node FROM ticket_participants ORDER BY node")
        .fetch_all(store.reader())
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Up to `limit` ids of tickets shared with `peer`, after `after_id`.
///
/// # Errors
/// Storage failures.
pub async fn tickets_shared_with(
    store: &Store,
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
    .fetch_all(store.reader())
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Those of `ticket_ids` that `peer` takes part in.
///
/// # Errors
/// Storage failures.
pub async fn tickets_shared_among(
    store: &Store,
    peer: &str,
    ticket_ids: &[String],
) -> NodeResult<Vec<String>> {
    let mut out = Vec::new();
    for chunk in ticket_ids.chunks(MAX_IN) {
        let sql = format!(
            "SELECT ticket_id FROM ticket_participants WHERE node = $1 AND ticket_id IN ({})",
            crate::store::placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(peer);
        for id in chunk {
            query = query.bind(id);
        }
        for r in query.fetch_all(store.reader()).await? {
            out.push(r.try_get(0)?);
        }
    }
    Ok(out)
}
