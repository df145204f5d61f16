//! The tables of every kind of shared document: `<kind>_versions` (every
//! version held, signed envelopes byte for byte) and `<kind>_current` (each
//! entry's winning version). A kind's migration creates both with the same
//! columns (`0004_faq.sql`, `0010_charter.sql`); the kind's name is a
//! constant of the code, never input.

use sqlx::Row as _;

use crate::error::NodeResult;
use crate::store::{Commit, Store, Tx, Value, Write};

/// A version to store (decided by the replica, which serialises its writes
/// and keeps the merge in memory).
#[derive(Debug, Clone)]
pub struct VersionRow {
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

/// Stores versions of kind `kind` in one transaction.
///
/// # Errors
/// Storage failures.
pub async fn write(store: &Store, kind: &'static str, rows: Vec<VersionRow>) -> NodeResult<()> {
    store.write(WriteVersions { kind, rows }).await
}

struct WriteVersions {
    kind: &'static str,
    rows: Vec<VersionRow>,
}

impl Write for WriteVersions {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        write_in(tx, self.kind, &self.rows).await?;
        Ok(Ok(()))
    }
}

/// Stores versions (history and, for winners, the current pointer) inside
/// a transaction.
///
/// # Errors
/// Storage failures.
pub async fn write_in(tx: &mut Tx<'_>, kind: &'static str, rows: &[VersionRow]) -> NodeResult<()> {
    let now = urpnet_proto::hlc::system_time_ms() as i64;
    let insert = format!(
        "INSERT INTO {kind}_versions (owner, entry_id, version, sha, seq, retired, received_ms, envelope) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
    );
    let current = format!(
        "INSERT INTO {kind}_current (owner, entry_id, version, sha) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (owner, entry_id) DO UPDATE SET version = $3, sha = $4"
    );
    for row in rows {
        tx.texts(
            &insert,
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
                &current,
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
    Ok(())
}

/// The current version of every entry held (encoded envelopes).
///
/// # Errors
/// Storage failures.
pub async fn current(store: &Store, kind: &'static str) -> NodeResult<Vec<Vec<u8>>> {
    let rows = sqlx::query(&format!(
        "SELECT v.envelope FROM {kind}_current c JOIN {kind}_versions v \
         ON v.owner = c.owner AND v.entry_id = c.entry_id AND v.version = c.version AND v.sha = c.sha"
    ))
    .fetch_all(store.reader())
    .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<Vec<u8>, _>(0))
        .collect::<Result<_, _>>()?)
}

/// One version's envelope (by its key, version and payload hash).
///
/// # Errors
/// Storage failures.
pub async fn envelope(
    store: &Store,
    kind: &'static str,
    owner: &str,
    entry_id: &str,
    version: i64,
    sha: &str,
) -> NodeResult<Option<Vec<u8>>> {
    let row = sqlx::query(&format!(
        "SELECT envelope FROM {kind}_versions WHERE owner = $1 AND entry_id = $2 AND version = $3 AND sha = $4"
    ))
    .bind(owner)
    .bind(entry_id)
    .bind(version)
    .bind(sha)
    .fetch_optional(store.reader())
    .await?;
    Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?)
}

/// Every version of an entry held, newest first.
///
/// # Errors
/// Storage failures.
pub async fn history(
    store: &Store,
    kind: &'static str,
    owner: &str,
    entry_id: &str,
) -> NodeResult<Vec<Vec<u8>>> {
    let rows = sqlx::query(&format!(
        "SELECT envelope FROM {kind}_versions WHERE owner = $1 AND entry_id = $2 \
         ORDER BY version DESC, sha DESC"
    ))
    .bind(owner)
    .bind(entry_id)
    .fetch_all(store.reader())
    .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<Vec<u8>, _>(0))
        .collect::<Result<_, _>>()?)
}
