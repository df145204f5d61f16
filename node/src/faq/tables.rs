//! The FAQ's own table: `faq_overrides` (this node's local replacements).
//! The versions' tables (`faq_versions`, `faq_current`) are kept by the
//! shared-document replica ([`crate::replica::tables`]), as every kind's
//! are.

use sqlx::Row as _;

use crate::error::NodeResult;
use crate::store::{Commit, Store, Tx, Value, Write};

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

/// Stores local overrides in one transaction.
///
/// # Errors
/// Storage failures.
pub async fn write(store: &Store, overrides: Vec<FaqOverrideRow>) -> NodeResult<()> {
    store.write(WriteOverrides { overrides }).await
}

struct WriteOverrides {
    overrides: Vec<FaqOverrideRow>,
}

impl Write for WriteOverrides {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        for o in &self.overrides {
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
        Ok(Ok(()))
    }
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
