//! The `operators` table: Desk credentials, each a pseudonymous id, a name,
//! a role and the SHA-256 of its bearer token (never the token).
//!
//! These few writes go through the read pool, not the group-committing
//! writer: they are rare, made by an operator at the CLI.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::error::{NodeError, NodeResult};
use crate::store::Store;

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

/// Adds a Desk credential.
///
/// # Errors
/// `AlreadyExists` for a name in use; storage failures.
pub async fn add(store: &Store, record: &OperatorRecord, token_sha256: &str) -> NodeResult<()> {
    let result = sqlx::query(
        "INSERT INTO operators (id, name, role, token_sha256, created_ms) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&record.id)
    .bind(&record.name)
    .bind(&record.role)
    .bind(token_sha256)
    .bind(record.created_ms)
    .execute(store.reader())
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
pub async fn by_token(store: &Store, token_sha256: &str) -> NodeResult<Option<OperatorRecord>> {
    let row = sqlx::query(
        "SELECT id, name, role, created_ms, revoked_ms FROM operators WHERE token_sha256 = $1",
    )
    .bind(token_sha256)
    .fetch_optional(store.reader())
    .await?;
    Ok(row.map(|r| operator_record(&r)))
}

/// Every operator, by name.
///
/// # Errors
/// Storage failures.
pub async fn all(store: &Store) -> NodeResult<Vec<OperatorRecord>> {
    let rows =
        sqlx::query("SELECT id, name, role, created_ms, revoked_ms FROM operators ORDER BY name")
            .fetch_all(store.reader())
            .await?;
    Ok(rows.iter().map(operator_record).collect())
}

/// Revokes an operator's token by name.
///
/// # Errors
/// `NotFound` for an unknown or already revoked name; storage failures.
pub async fn revoke(store: &Store, name: &str, now_ms: i64) -> NodeResult<()> {
    let result =
        sqlx::query("UPDATE operators SET revoked_ms = $1 WHERE name = $2 AND revoked_ms IS NULL")
            .bind(now_ms)
            .bind(name)
            .execute(store.reader())
            .await?;
    if result.rows_affected() == 0 {
        return Err(NodeError::NotFound(format!("active operator {name}")));
    }
    Ok(())
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
