//! An open write transaction, whatever the backend: what every subsystem's
//! write operations are written against.
//!
//! The statements are the same on both backends. Placeholders are `$1`, `$2`,
//! ... in order (SQLite accepts them too). On SQLite the transaction runs on
//! the writer's own thread through rusqlite, so its futures complete at once;
//! on PostgreSQL each statement is a network round trip through sqlx, which
//! is why [`Tx::insert_rows`] sends many rows per statement there.

use sqlx::Row as _;

use crate::error::{NodeError, NodeResult};

/// A value bound into a statement.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// An integer.
    Int(i64),
    /// A float, or NULL.
    Real(Option<f64>),
    /// Text.
    Text(&'a str),
    /// A blob.
    Bytes(&'a [u8]),
}

/// An open write transaction of the single writer.
///
/// Only the writer makes one and commits it: a write operation runs its
/// statements and returns, and a failure it returns as `Err` aborts the whole
/// transaction (the writer then retries each operation of the batch alone).
#[derive(Debug)]
pub enum Tx<'t> {
    /// SQLite through rusqlite, on the writer's thread, inside
    /// `BEGIN IMMEDIATE`.
    Sqlite(&'t mut rusqlite::Connection),
    /// PostgreSQL (or any sqlx backend) through a one-connection pool.
    Pool(&'t mut sqlx::Transaction<'static, sqlx::Any>),
}

/// Most bound parameters per statement (SQLite allows 32766, PostgreSQL 65535).
const MAX_PARAMS: usize = 30_000;

/// Most ids in one `IN (...)` list.
pub const MAX_IN: usize = 500;

impl Tx<'_> {
    /// Most rows per INSERT statement. Each statement to PostgreSQL is a
    /// network round trip, so rows are sent many at a time; SQLite runs in
    /// this thread, where a cached one-row statement run N times is cheapest.
    pub fn rows_per_statement(&self) -> usize {
        match self {
            Tx::Sqlite(_) => 1,
            Tx::Pool(_) => 1_000,
        }
    }

    /// Runs a statement, returning its rows as text columns.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn texts(
        &mut self,
        sql: &str,
        values: &[&Value<'_>],
    ) -> NodeResult<Vec<Vec<String>>> {
        match self {
            Tx::Sqlite(conn) => sqlite_texts(conn, sql, values),
            Tx::Pool(tx) => {
                let rows = bind_sqlx(sqlx::query(sql), values)
                    .fetch_all(&mut ***tx)
                    .await?;
                rows.iter()
                    .map(|r| {
                        (0..sqlx::Row::len(r))
                            .map(|i| r.try_get::<String, _>(i).map_err(NodeError::from))
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// Runs a query returning at most one blob.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn blob(&mut self, sql: &str, values: &[&Value<'_>]) -> NodeResult<Option<Vec<u8>>> {
        match self {
            Tx::Sqlite(conn) => {
                use rusqlite::OptionalExtension as _;
                let mut stmt = conn.prepare_cached(sql)?;
                Ok(stmt
                    .query_row(rusqlite::params_from_iter(values), |row| {
                        row.get::<_, Vec<u8>>(0)
                    })
                    .optional()?)
            }
            Tx::Pool(tx) => {
                let row = bind_sqlx(sqlx::query(sql), values)
                    .fetch_optional(&mut ***tx)
                    .await?;
                Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?)
            }
        }
    }

    /// Runs a query returning one blob per row.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn blobs(&mut self, sql: &str, values: &[&Value<'_>]) -> NodeResult<Vec<Vec<u8>>> {
        match self {
            Tx::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(values), |row| {
                    row.get::<_, Vec<u8>>(0)
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            }
            Tx::Pool(tx) => {
                let rows = bind_sqlx(sqlx::query(sql), values)
                    .fetch_all(&mut ***tx)
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| r.try_get::<Vec<u8>, _>(0))
                    .collect::<Result<_, _>>()?)
            }
        }
    }

    /// Runs `<head> VALUES (...), (...) <tail>` for all rows, in as few
    /// statements as the parameter limit and the backend allow, and returns
    /// what they return.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn insert_rows(
        &mut self,
        head: &str,
        tail: &str,
        rows: &[Vec<Value<'_>>],
    ) -> NodeResult<Vec<Vec<String>>> {
        let Some(width) = rows.first().map(Vec::len) else {
            return Ok(Vec::new());
        };
        let rows_per_statement = (MAX_PARAMS / width).min(self.rows_per_statement());
        // All chunks but the last have the same size: build their SQL once.
        let full = insert_sql(head, tail, width, rows_per_statement.min(rows.len()));
        let mut returned = Vec::new();
        for chunk in rows.chunks(rows_per_statement) {
            let partial;
            let sql = if chunk.len() == rows_per_statement.min(rows.len()) {
                &full
            } else {
                partial = insert_sql(head, tail, width, chunk.len());
                &partial
            };
            let values: Vec<&Value<'_>> = chunk.iter().flatten().collect();
            returned.extend(self.texts(sql, &values).await?);
        }
        Ok(returned)
    }
}

fn sqlite_texts(
    conn: &rusqlite::Connection,
    sql: &str,
    values: &[&Value<'_>],
) -> NodeResult<Vec<Vec<String>>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let width = stmt.column_count();
    let rows = stmt.query_map(rusqlite::params_from_iter(values), |row| {
        (0..width)
            .map(|i| row.get::<_, String>(i))
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// `<head> VALUES ($1, …), (…) <tail>` for `rows` rows of `width` values.
fn insert_sql(head: &str, tail: &str, width: usize, rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * width * 6 + 16);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", r * width + c + 1);
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(tail);
    sql
}

/// `$first, $first+1, …` for `n` values.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn bind_sqlx<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    values: &'q [&'q Value<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for value in values {
        query = match *value {
            Value::Int(v) => query.bind(*v),
            Value::Real(v) => query.bind(*v),
            Value::Text(v) => query.bind(*v),
            Value::Bytes(v) => query.bind(*v),
        };
    }
    query
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Real(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Value::Real(None) => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Bytes(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}
