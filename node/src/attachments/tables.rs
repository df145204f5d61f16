//! The `attachments` table: one row of metadata per content hash.

use std::collections::HashSet;

use sqlx::Row as _;
use urpnet_proto::v1::Attachment;

use crate::error::NodeResult;
use crate::store::{Store, Tx, Value};

/// Records attachments (with the time of the ticket that brought them),
/// once per hash, inside the writer's transaction.
///
/// # Errors
/// Storage failures.
pub async fn insert_in(tx: &mut Tx<'_>, files: &[(&Attachment, i64)]) -> NodeResult<()> {
    let mut seen = HashSet::new();
    let rows: Vec<Vec<Value<'_>>> = files
        .iter()
        .filter(|(a, _)| seen.insert(a.sha256.as_str()))
        .map(|(a, created_ms)| {
            vec![
                Value::Text(&a.sha256),
                Value::Text(&a.file_name),
                Value::Text(&a.media_type),
                Value::Int(a.size_bytes as i64),
                Value::Int(*created_ms),
            ]
        })
        .collect();
    tx.insert_rows(
        "INSERT INTO attachments (sha256, file_name, media_type, size_bytes, created_ms)",
        "ON CONFLICT (sha256) DO NOTHING",
        &rows,
    )
    .await?;
    Ok(())
}

/// Metadata of an attachment held here.
///
/// # Errors
/// Storage failures.
pub async fn get(store: &Store, sha256: &str) -> NodeResult<Option<Attachment>> {
    let row =
        sqlx::query("SELECT file_name, media_type, size_bytes FROM attachments WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(store.reader())
            .await?;
    Ok(row.map(|r| Attachment {
        sha256: sha256.to_string(),
        file_name: r.get(0),
        media_type: r.get(1),
        size_bytes: r.get::<i64, _>(2) as u64,
    }))
}
