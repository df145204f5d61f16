//! The node's store (DESIGN.md §8): SQLite by default, PostgreSQL by URL, one
//! schema and one set of SQL for both.
//!
//! This module holds only what every subsystem shares: the pools, the
//! backend, the migrations, the single writer and the signals a commit sends.
//! Each subsystem owns its tables and their SQL in a `tables` module next to
//! its domain code (docs/architecture.md, "The node's modules"): it reads
//! through [`Store::reader`] and writes by handing the writer a [`Write`]
//! operation through [`Store::write`].
//!
//! Every write goes through one writer ([`writer`]: a task on PostgreSQL, a
//! rusqlite thread on SQLite) that commits concurrent requests together
//! (group commit), so a burst of creations is durable — on SQLite every
//! commit is fsynced (`synchronous=FULL`) — and still fast.

mod tx;
mod writer;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::{broadcast, mpsc, oneshot};
use urpnet_proto::db;
use urpnet_proto::v1::{Ticket, TicketChange};

use crate::error::{NodeError, NodeResult};
pub use tx::{MAX_IN, Tx, Value, placeholders};
pub use writer::Write;

pub use urpnet_proto::db::Backend;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://...` or `postgres://...`.
    pub url: String,
    /// Directory for attachment content.
    pub blob_dir: PathBuf,
    /// Most writes per group commit.
    pub max_batch: usize,
    /// Connections in the read pool.
    pub read_connections: u32,
    /// This node's id: the author of its own events, never an outbox
    /// destination.
    pub node: String,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    reader: AnyPool,
    writes: mpsc::Sender<Box<dyn writer::Job>>,
    blob_dir: PathBuf,
    signals: Signals,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("blob_dir", &self.blob_dir)
            .finish_non_exhaustive()
    }
}

/// Where the writer announces what it committed: changed tickets (for
/// watchers) and peers with new outbox rows (for their delivery workers).
#[derive(Debug, Clone)]
struct Signals {
    /// This node's id (never a destination).
    node: String,
    /// Tickets changed by a commit.
    changes: broadcast::Sender<Arc<TicketChange>>,
    /// Peers with new outbox rows.
    outbox: broadcast::Sender<String>,
}

impl Signals {
    /// Publishes what a commit changed. Nobody listening is fine.
    fn announce(&self, commit: Commit) {
        for change in commit.changes {
            let _ = self.changes.send(Arc::new(change));
        }
        for peer in commit.peers {
            let _ = self.outbox.send(peer);
        }
    }
}

/// What a write transaction will announce once committed, and the node it
/// writes for. Operations add to it; the writer drops it if the transaction
/// fails.
#[derive(Debug)]
pub struct Commit {
    node: String,
    changes: Vec<TicketChange>,
    peers: BTreeSet<String>,
}

impl Commit {
    fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            changes: Vec::new(),
            peers: BTreeSet::new(),
        }
    }

    /// Keeps what another (committed) transaction announces.
    fn absorb(&mut self, mut other: Commit) {
        self.changes.append(&mut other.changes);
        self.peers.append(&mut other.peers);
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Announces, once committed, that `events` events from `source` changed
    /// `ticket` (watchers of the Desk get it).
    pub fn ticket_changed(&mut self, ticket: &Ticket, source: &str, events: u32) {
        self.changes.push(TicketChange {
            ticket: Some(ticket.clone()),
            source: source.to_string(),
            events,
        });
    }

    /// Wakes, once committed, the delivery worker of `peer` (new outbox
    /// rows for it).
    pub fn wake_peer(&mut self, peer: &str) {
        if !self.peers.contains(peer) {
            self.peers.insert(peer.to_string());
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database, checks its durability
    /// settings, runs migrations and starts the writer, which ends when every
    /// `Store` handle is dropped.
    ///
    /// # Errors
    /// When the database cannot be opened or migrated, or SQLite does not run
    /// in WAL mode with `synchronous=FULL`.
    pub async fn open(options: &StoreOptions) -> NodeResult<(Store, tokio::task::JoinHandle<()>)> {
        let Some(backend) = Backend::of_url(&options.url) else {
            return Err(NodeError::invalid(
                "store.url",
                "must start with sqlite: or postgres:",
            ));
        };
        std::fs::create_dir_all(&options.blob_dir).map_err(|e| {
            NodeError::Internal(format!("cannot create {}: {e}", options.blob_dir.display()))
        })?;
        db::check_url(backend, &options.url)
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        let pool = |max: u32| db::pool_options(backend, max);
        let writer_pool = pool(1).connect(&options.url).await?;
        match backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&writer_pool)
                    .await
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&writer_pool)
                    .await
            }
        }
        .map_err(|e| NodeError::Internal(format!("migrating the database: {e}")))?;
        let reader = pool(options.read_connections.max(1))
            .connect(&options.url)
            .await?;

        let target = match backend {
            Backend::Sqlite => {
                writer_pool.close().await;
                writer::Target::Sqlite(open_sqlite_writer(&options.url)?)
            }
            Backend::Postgres => writer::Target::Pool(writer_pool),
        };
        let (writes, rx) = mpsc::channel(options.max_batch * 4);
        let (changes, _) = broadcast::channel(4096);
        let (outbox, _) = broadcast::channel(4096);
        let signals = Signals {
            node: options.node.clone(),
            changes: changes.clone(),
            outbox: outbox.clone(),
        };
        let task = writer::spawn(target, rx, options.max_batch, signals);
        Ok((
            Store {
                backend,
                reader,
                writes,
                blob_dir: options.blob_dir.clone(),
                signals: Signals {
                    node: options.node.clone(),
                    changes,
                    outbox,
                },
            },
            task,
        ))
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The read pool. Subsystems' `tables` modules read through it; nothing
    /// writes through it but operator credentials (not group-committed).
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// Where attachment content lives.
    pub fn blob_dir(&self) -> &std::path::Path {
        &self.blob_dir
    }

    /// Runs `op` in the single writer, group-committed with other concurrent
    /// writes; answers once it is durable.
    ///
    /// # Errors
    /// Whatever the operation refuses with, storage failures, and
    /// `Unavailable` while the store shuts down.
    pub async fn write<W: Write>(&self, op: W) -> NodeResult<W::Output> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(writer::Pending::boxed(op, reply))
            .await
            .map_err(|_| writer::shutting_down())?;
        answer.await.map_err(|_| writer::shutting_down())?
    }

    /// Changes committed from now on.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Arc<TicketChange>> {
        self.signals.changes.subscribe()
    }

    /// Peers that get new outbox rows from now on.
    pub fn subscribe_outbox(&self) -> broadcast::Receiver<String> {
        self.signals.outbox.subscribe()
    }

    /// Closes the pools (the writer ends when the last handle is dropped).
    pub async fn close(&self) {
        self.reader.close().await;
    }
}

/// The writer's own SQLite connection (rusqlite), set up like every other:
/// WAL, `synchronous=FULL`, checked.
fn open_sqlite_writer(url: &str) -> NodeResult<rusqlite::Connection> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    // Checkpoint every ~40 MiB of WAL instead of 4 MiB: pages written again
    // and again between checkpoints are copied to the database once.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = 10000;",
    )?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    conn.set_prepared_statement_cache_capacity(64);
    if !mode.eq_ignore_ascii_case("wal") || sync != 2 {
        return Err(NodeError::Internal(format!(
            "SQLite must run with journal_mode=WAL and synchronous=FULL, found journal_mode={mode} synchronous={sync}"
        )));
    }
    Ok(conn)
}
