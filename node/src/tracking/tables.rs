//! The `tracking_keys` table: one key hash per ticket created here.

use sqlx::Row as _;

use crate::error::NodeResult;
use crate::store::{Store, Tx, Value};

/// Records tickets' key hashes (ticket id, sha256 hex) inside the writer's
/// transaction (the create's).
///
/// # Errors
/// Storage failures.
pub async fn insert_in(tx: &mut Tx<'_>, keys: &[(&str, &str)]) -> NodeResult<()> {
    let rows: Vec<Vec<Value<'_>>> = keys
        .iter()
        .map(|(ticket, hash)| vec![Value::Text(ticket), Value::Text(hash)])
        .collect();
    tx.insert_rows(
        "INSERT INTO tracking_keys (ticket_id, key_sha256)",
        "ON CONFLICT (ticket_id) DO NOTHING",
        &rows,
    )
    .await?;
    Ok(())
}

/// A ticket's key hash, if it has one.
///
/// # Errors
/// Storage failures.
pub async fn get(store: &Store, ticket_id: &str) -> NodeResult<Option<String>> {
    let row = sqlx::query("SELECT key_sha256 FROM tracking_keys WHERE ticket_id = $1")
        .bind(ticket_id)
        .fetch_optional(store.reader())
        .await?;
    Ok(row.map(|r| r.get(0)))
}
