//! The `privacy_audit` table: what was exported, erased or purged, when and
//! by whom, without personal data.

use sqlx::Row as _;

use crate::error::NodeResult;
use crate::store::{Commit, Store, Tx, Value, Write};

/// Records an action.
///
/// # Errors
/// Storage failures.
pub async fn audit(
    store: &Store,
    action: &'static str,
    actor: &str,
    subject_hash: &str,
    tickets: i64,
) -> NodeResult<()> {
    store
        .write(Audit {
            action,
            actor: actor.to_string(),
            subject_hash: subject_hash.to_string(),
            tickets,
        })
        .await
}

struct Audit {
    action: &'static str,
    actor: String,
    subject_hash: String,
    tickets: i64,
}

impl Write for Audit {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        tx.texts(
            "INSERT INTO privacy_audit (at_ms, action, actor, subject_hash, tickets) VALUES ($1, $2, $3, $4, $5)",
            &[
                &Value::Int(urpnet_proto::hlc::system_time_ms() as i64),
                &Value::Text(self.action),
                &Value::Text(&self.actor),
                &Value::Text(&self.subject_hash),
                &Value::Int(self.tickets),
            ],
        )
        .await?;
        Ok(Ok(()))
    }
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// When, ms.
    pub at_ms: i64,
    /// `export`, `erase` or `purge`.
    pub action: String,
    /// Who (an operator's name, or `retention`).
    pub actor: String,
    /// sha256 of the identifiers used.
    pub subject_hash: String,
    /// Tickets concerned.
    pub tickets: i64,
}

/// The latest `limit` actions, newest first.
///
/// # Errors
/// Storage failures.
pub async fn recent(store: &Store, limit: u32) -> NodeResult<Vec<AuditEntry>> {
    let rows = sqlx::query(
        "SELECT at_ms, action, actor, subject_hash, CAST(tickets AS BIGINT) FROM privacy_audit ORDER BY id DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                at_ms: r.try_get(0)?,
                action: r.try_get(1)?,
                actor: r.try_get(2)?,
                subject_hash: r.try_get(3)?,
                tickets: r.try_get(4)?,
            })
        })
        .collect()
}
