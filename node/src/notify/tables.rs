//! The `notifications` table: the durable queue of notices to citizens.

use sqlx::Row as _;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{Ticket, TicketEvent};

use crate::error::NodeResult;
use crate::store::{Commit, Store, Tx, Value, Write};

/// Channel bit: e-mail over SMTP.
pub const EMAIL: i64 = 1;
/// Channel bit: the body's signed webhook.
pub const WEBHOOK: i64 = 2;
/// Channel bit: App IO, the Italian public services app (citizens who gave
/// a fiscal code).
pub const APP_IO: i64 = 4;
/// Every channel a new notice starts with (each is skipped when not
/// configured or when the contact gives no address for it).
pub const ALL: i64 = EMAIL | WEBHOOK | APP_IO;

/// Whether a citizen hears about this event: a status change or a public
/// note.
pub fn is_news(event: &TicketEvent) -> bool {
    matches!(
        &event.kind,
        Some(Kind::StatusChanged(_))
            | Some(Kind::Note(urpnet_proto::v1::Note { public: true, .. }))
    )
}

/// Queues a notice for each of `events` the citizen of `ticket` asked to
/// hear about, inside the transaction that stores them: only at the origin
/// (which holds the contact), only with `contact_for_updates`, only when a
/// contact is held. An event already queued is not queued again.
///
/// # Errors
/// Storage failures.
pub async fn enqueue_in(
    tx: &mut Tx<'_>,
    commit: &Commit,
    ticket: &Ticket,
    events: &[&TicketEvent],
) -> NodeResult<()> {
    let wanted = ticket.origin_node == commit.node()
        && ticket.consent.is_some_and(|c| c.contact_for_updates)
        && events.iter().any(|e| is_news(e));
    if !wanted || !crate::shared_ticket::tables::has_contact_in(tx, &ticket.id).await? {
        return Ok(());
    }
    let now = urpnet_proto::hlc::system_time_ms() as i64;
    let keys: Vec<String> = events
        .iter()
        .filter(|e| is_news(e))
        .map(|e| crate::shared_ticket::tables::event_key(&e.author_node, &e.event_id))
        .collect();
    let rows: Vec<Vec<Value<'_>>> = keys
        .iter()
        .map(|k| {
            vec![
                Value::Text(&ticket.id),
                Value::Text(k),
                Value::Int(ALL),
                Value::Int(now),
                Value::Int(now),
            ]
        })
        .collect();
    tx.insert_rows(
        "INSERT INTO notifications (ticket_id, event_key, pending_mask, not_before_ms, created_ms)",
        "ON CONFLICT (event_key) DO NOTHING",
        &rows,
    )
    .await?;
    metrics::counter!("urpnet_notify_queued_total").increment(keys.len() as u64);
    Ok(())
}

/// A queued notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Row id.
    pub id: i64,
    /// The ticket.
    pub ticket_id: String,
    /// `<author>/<event id>` of the change.
    pub event_key: String,
    /// Channels still to try.
    pub pending_mask: i64,
    /// Channels sent.
    pub sent_mask: i64,
    /// Channels given up.
    pub failed_mask: i64,
    /// Attempts so far.
    pub attempts: i64,
}

/// Up to `limit` notices due at `now_ms`, oldest first.
///
/// # Errors
/// Storage failures.
pub async fn due(store: &Store, now_ms: i64, limit: u32) -> NodeResult<Vec<Notice>> {
    let rows = sqlx::query(
        "SELECT id, ticket_id, event_key, pending_mask, sent_mask, failed_mask, attempts FROM notifications \
         WHERE pending_mask <> 0 AND not_before_ms <= $1 ORDER BY id LIMIT $2",
    )
    .bind(now_ms)
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Notice {
                id: r.try_get(0)?,
                ticket_id: r.try_get(1)?,
                event_key: r.try_get(2)?,
                pending_mask: r.try_get(3)?,
                sent_mask: r.try_get(4)?,
                failed_mask: r.try_get(5)?,
                attempts: r.try_get(6)?,
            })
        })
        .collect()
}

/// Records how an attempt went.
///
/// # Errors
/// Storage failures.
pub async fn record(
    store: &Store,
    notice: &Notice,
    not_before_ms: i64,
    last_error: String,
) -> NodeResult<()> {
    store
        .write(Record {
            notice: notice.clone(),
            not_before_ms,
            last_error,
        })
        .await
}

struct Record {
    notice: Notice,
    not_before_ms: i64,
    last_error: String,
}

impl Write for Record {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        let n = &self.notice;
        let now = urpnet_proto::hlc::system_time_ms() as i64;
        tx.texts(
            "UPDATE notifications SET pending_mask = $1, sent_mask = $2, failed_mask = $3, attempts = $4, \
             not_before_ms = $5, last_error = $6, done_ms = CASE WHEN $1 = 0 THEN $7 ELSE NULL END WHERE id = $8",
            &[
                &Value::Int(n.pending_mask),
                &Value::Int(n.sent_mask),
                &Value::Int(n.failed_mask),
                &Value::Int(n.attempts),
                &Value::Int(self.not_before_ms),
                &Value::Text(&self.last_error),
                &Value::Int(now),
                &Value::Int(n.id),
            ],
        )
        .await?;
        Ok(Ok(()))
    }
}

/// The queue's state, for `notify status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStatus {
    /// Notices with a channel still to try.
    pub pending: u64,
    /// Notices done with at least one channel sent.
    pub sent: u64,
    /// Notices done with every channel given up.
    pub failed: u64,
    /// Creation time of the oldest pending notice, ms (0: none).
    pub oldest_pending_ms: i64,
    /// The latest error recorded on a pending or failed notice.
    pub last_error: String,
}

/// The queue's state.
///
/// # Errors
/// Storage failures.
pub async fn status(store: &Store) -> NodeResult<QueueStatus> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(CASE WHEN pending_mask <> 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN pending_mask = 0 AND sent_mask <> 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN pending_mask = 0 AND sent_mask = 0 AND failed_mask <> 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(MIN(CASE WHEN pending_mask <> 0 THEN created_ms END), 0) AS BIGINT) FROM notifications",
    )
    .fetch_one(store.reader())
    .await?;
    let last = sqlx::query(
        "SELECT last_error FROM notifications WHERE last_error <> '' ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(store.reader())
    .await?;
    Ok(QueueStatus {
        pending: row.try_get::<i64, _>(0)? as u64,
        sent: row.try_get::<i64, _>(1)? as u64,
        failed: row.try_get::<i64, _>(2)? as u64,
        oldest_pending_ms: row.try_get(3)?,
        last_error: last.map(|r| r.try_get(0)).transpose()?.unwrap_or_default(),
    })
}
