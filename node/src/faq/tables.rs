//! The FAQ's tables: `faq_versions` (every version held, signed envelopes),
//! `faq_current` (each entry's winning version) and `faq_overrides` (this
//! node's local replacements). The FAQ book decides what to store (it
//! serialises its writes and keeps the merge in memory); these statements
//! store it.

use sqlx::Row as _;

use crate::error::NodeResult;
use crate::store::{Commit, Store, Tx, Value, Write};

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

/// Stores FAQ versions and overrides in one transaction.
///
/// # Errors
/// Storage failures.
pub async fn write(
    store: &Store,
    rows: Vec<FaqRow>,
    overrides: Vec<FaqOverrideRow>,
) -> NodeResult<()> {
    store.write(WriteFaq { rows, overrides }).await
}

struct WriteFaq {
    rows: Vec<FaqRow>,
    overrides: Vec<FaqOverrideRow>,
}

impl Write for WriteFaq {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        write_faq(tx, &self.rows, &self.overrides).await?;
        Ok(Ok(()))
    }
}

/// Stores FAQ versions (history and, for winners, the current pointer) and
/// local overrides.
async fn write_faq(
    tx: &mut Tx<'_>,
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

/// The current version of every FAQ entry held (encoded envelopes).
///
/// # Errors
/// Storage failures.
pub async fn current(store: &Store) -> NodeResult<Vec<Vec<u8>>> {
    let rows = sqlx::query(
        "SELECT v.envelope FROM faq_current c JOIN faq_versions v \
         ON v.owner = c.owner AND v.entry_id = c.entry_id AND v.version = c.version AND v.sha = c.sha",
    )
    .fetch_all(store.reader())
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
pub async fn envelope(
    store: &Store,
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
    .fetch_optional(store.reader())
    .await?;
    Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?)
}

/// Every version of an entry held, newest first.
///
/// # Errors
/// Storage failures.
pub async fn history(store: &Store, owner: &str, entry_id: &str) -> NodeResult<Vec<Vec<u8>>> {
    let rows = sqlx::query(
        "SELECT envelope FROM faq_versions WHERE owner = $1 AND entry_id = $2 \
         ORDER BY version DESC, sha DESC",
    )
    .bind(owner)
    .bind(entry_id)
    .fetch_all(store.reader())
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
pub async fn overrides(
    store: &Store,
) -> NodeResult<Vec<(String, String, Vec<u8>, String, String, i64)>> {
    let rows = sqlx::query(
        "SELECT owner, entry_id, content, reason, set_by, set_at_ms FROM faq_overrides",
    )
    .fetch_all(store.reader())
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
