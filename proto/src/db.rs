//! Opening a daemon's database with sqlx: SQLite by default (WAL,
//! `synchronous=FULL`, checked on every connection) or PostgreSQL by URL.
//! Shared by the node and the registry (feature `db`).

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor as _, Row as _};

/// Which database a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a URL names, or `None` if it names neither.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// A pool on `url` with at most `max` connections; SQLite connections are
/// prepared for durability (see [`prepare_sqlite`]).
pub fn pool_options(backend: Backend, max: u32) -> AnyPoolOptions {
    let opts = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(30));
    if backend == Backend::Sqlite {
        opts.after_connect(|conn, _| Box::pin(prepare_sqlite(conn)))
    } else {
        opts
    }
}

/// Checks once, on a connection of its own, that an SQLite database can run
/// durably, so a bad one is refused at once with the reason (a pool would
/// retry the failing connection until its timeout). Does nothing for
/// PostgreSQL.
///
/// # Errors
/// When the database cannot be opened or does not keep WAL + FULL.
pub async fn check_url(backend: Backend, url: &str) -> Result<(), sqlx::Error> {
    sqlx::any::install_default_drivers();
    if backend == Backend::Sqlite {
        use sqlx::Connection as _;
        let mut conn = sqlx::AnyConnection::connect(url).await?;
        prepare_sqlite(&mut conn).await?;
        conn.close().await?;
    }
    Ok(())
}

/// Opens a pool after [`check_url`].
///
/// # Errors
/// As [`check_url`], or when the pool cannot connect.
pub async fn open_pool(backend: Backend, url: &str, max: u32) -> Result<AnyPool, sqlx::Error> {
    check_url(backend, url).await?;
    pool_options(backend, max).connect(url).await
}

/// Sets WAL, `synchronous=FULL`, a busy timeout and a 32 MiB page cache, and
/// checks that the durability settings really took.
///
/// # Errors
/// When a pragma fails or the settings are not in force (e.g. `:memory:`).
pub async fn prepare_sqlite(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute("PRAGMA journal_mode = WAL").await?;
    conn.execute("PRAGMA synchronous = FULL").await?;
    conn.execute("PRAGMA busy_timeout = 10000").await?;
    conn.execute("PRAGMA cache_size = -32768").await?;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    if !mode.eq_ignore_ascii_case("wal") || sync != 2 {
        return Err(sqlx::Error::Configuration(
            format!("SQLite must run with journal_mode=WAL and synchronous=FULL, found journal_mode={mode} synchronous={sync}")
                .into(),
        ));
    }
    Ok(())
}
