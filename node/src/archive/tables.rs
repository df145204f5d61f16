//! The archive's tables: `archive_outbox` (anonymised records of closed
//! tickets, in the order they are pushed to the registry) and
//! `archive_state` (cursors and tallies by name).

use sqlx::Row as _;

use crate::error::NodeResult;
use crate::store::{Commit, Store, Tx, Value, Write};

/// Adds archive records (ignoring ids held already) and sets archive
/// cursors, in one transaction.
///
/// # Errors
/// Storage failures.
pub async fn write(
    store: &Store,
    records: Vec<(Vec<u8>, Vec<u8>, i64)>,
    state: Vec<(&'static str, i64)>,
) -> NodeResult<()> {
    store
        .write(WriteArchive {
            records,
            state,
            prune: None,
        })
        .await
}

/// Sets cursors and, in the same transaction, deletes the records the
/// registry acknowledged (`seq <= sent_seq`) made before `before_ms`,
/// counting them in the `pruned` tally; returns how many.
///
/// # Errors
/// Storage failures.
pub async fn acknowledge(
    store: &Store,
    state: Vec<(&'static str, i64)>,
    sent_seq: i64,
    before_ms: i64,
) -> NodeResult<()> {
    store
        .write(WriteArchive {
            records: Vec::new(),
            state,
            prune: Some((sent_seq, before_ms)),
        })
        .await
}

struct WriteArchive {
    /// (record id, encoded record, made at ms).
    records: Vec<(Vec<u8>, Vec<u8>, i64)>,
    /// Cursors and tallies to set, by name.
    state: Vec<(&'static str, i64)>,
    /// Acknowledged records (up to this seq) made before this instant to
    /// delete.
    prune: Option<(i64, i64)>,
}

impl Write for WriteArchive {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        let rows: Vec<Vec<Value<'_>>> = self
            .records
            .iter()
            .map(|(id, record, made)| {
                vec![Value::Bytes(id), Value::Bytes(record), Value::Int(*made)]
            })
            .collect();
        tx.insert_rows(
            "INSERT INTO archive_outbox (id, record, made_ms)",
            "ON CONFLICT (id) DO NOTHING",
            &rows,
        )
        .await?;
        for (name, value) in &self.state {
            tx.texts(
                "INSERT INTO archive_state (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&Value::Text(name), &Value::Int(*value)],
            )
            .await?;
        }
        if let Some((sent_seq, before_ms)) = self.prune {
            let gone = tx
                .texts(
                    "DELETE FROM archive_outbox WHERE seq <= $1 AND made_ms < $2 RETURNING CAST(seq AS TEXT)",
                    &[&Value::Int(sent_seq), &Value::Int(before_ms)],
                )
                .await?
                .len() as i64;
            if gone > 0 {
                tx.texts(
                    "INSERT INTO archive_state (name, value) VALUES ('pruned', $1) \
                     ON CONFLICT (name) DO UPDATE SET value = archive_state.value + excluded.value",
                    &[&Value::Int(gone)],
                )
                .await?;
                metrics::counter!("urpnet_archive_pruned_total").increment(gone as u64);
            }
        }
        Ok(Ok(()))
    }
}

/// The archive's cursors and tallies by name.
///
/// # Errors
/// Storage failures.
pub async fn state(store: &Store) -> NodeResult<std::collections::BTreeMap<String, i64>> {
    let rows = sqlx::query("SELECT name, CAST(value AS BIGINT) FROM archive_state")
        .fetch_all(store.reader())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Up to `limit` encoded archive records after `seq`, with their seq.
///
/// # Errors
/// Storage failures.
pub async fn records_after(
    store: &Store,
    seq: i64,
    limit: usize,
) -> NodeResult<Vec<(i64, Vec<u8>)>> {
    let rows = sqlx::query(
        "SELECT CAST(seq AS BIGINT), record FROM archive_outbox WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(seq)
    .bind(limit as i64)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Records made, and records after `seq` (waiting).
///
/// # Errors
/// Storage failures.
pub async fn counts(store: &Store, seq: i64) -> NodeResult<(u64, u64)> {
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(CASE WHEN seq > $1 THEN 1 ELSE 0 END), 0) AS BIGINT) FROM archive_outbox",
    )
    .bind(seq)
    .fetch_one(store.reader())
    .await?;
    Ok((
        row.try_get::<i64, _>(0)? as u64,
        row.try_get::<i64, _>(1)? as u64,
    ))
}
