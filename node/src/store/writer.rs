//! The single writer: group commit of operations it does not know.
//!
//! Every write of the node is a [`Write`] operation, defined by the subsystem
//! that owns the tables it touches, and sent to one task. The task takes the
//! first operation waiting, then every other one already queued (up to the
//! batch limit), runs them all in one transaction and commits once: one
//! fsync for the whole batch. Replies go out only after the commit, so an
//! acknowledged write is durable. If the batch fails as a whole (a storage
//! error, not a rule broken by one operation), each operation is retried in a
//! transaction of its own, so a bad one never takes good ones down with it.
//!
//! Operations of one kind in a batch run together, through
//! [`Write::run_all`], so a kind may write them with a few multi-row
//! statements (ticket creations do); kinds run in the order their first
//! operation arrived. Any order of one batch's operations is a valid one:
//! none of them was acknowledged before the others were sent.
//!
//! On PostgreSQL the writer is a task using sqlx. On SQLite it is a thread of
//! its own that runs a whole batch through rusqlite in one go: with sqlx every
//! statement is a hop to SQLite's worker thread, and under load each hop
//! waits for a CPU, which made a commit cost milliseconds.

use std::any::{Any, TypeId};
use std::time::Instant;

use futures::future::BoxFuture;
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::tx::Tx;
use super::{Commit, Signals};
use crate::error::{NodeError, NodeResult};

/// A piece of transactional work for the single writer, defined by the
/// subsystem whose tables it writes.
///
/// It may run more than once (when its batch is retried op by op), always in
/// a fresh transaction, so it must not change anything outside it except
/// through the [`Commit`] notices, which are kept only if it commits.
pub trait Write: Send + Sync + Sized + 'static {
    /// What the caller gets back once the transaction committed.
    type Output: Send + 'static;

    /// Runs this operation inside the writer's transaction.
    ///
    /// The outer `Err` aborts the transaction (a storage failure); the inner
    /// one refuses this operation alone, which must then have written
    /// nothing.
    fn run<'a>(
        &'a self,
        tx: &'a mut Tx<'_>,
        commit: &'a mut Commit,
    ) -> impl Future<Output = NodeResult<NodeResult<Self::Output>>> + Send + 'a;

    /// Runs every operation of this kind in the batch, in order, and answers
    /// each. The default runs them one by one; a kind overrides it to share
    /// statements between them.
    fn run_all<'a>(
        ops: &'a [&'a Self],
        tx: &'a mut Tx<'_>,
        commit: &'a mut Commit,
    ) -> impl Future<Output = NodeResult<Vec<NodeResult<Self::Output>>>> + Send + 'a {
        async move {
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                out.push(op.run(tx, commit).await?);
            }
            Ok(out)
        }
    }
}

/// One operation's answer before the commit, its type erased.
type Answer = Box<dyn Any + Send>;

/// A queued operation with its reply, its type erased for the writer.
pub(super) trait Job: Send + Sync {
    /// The operation's type: operations of one type run together.
    fn kind(&self) -> TypeId;
    /// The operation itself, for its kind's runner.
    fn op(&self) -> &dyn Any;
    /// Runs `group` (all of this job's kind) and answers each, in order.
    fn run_group<'a>(
        &self,
        group: &'a [Box<dyn Job>],
        tx: &'a mut Tx<'_>,
        commit: &'a mut Commit,
    ) -> BoxFuture<'a, NodeResult<Vec<Answer>>>;
    /// Sends the answer (or the transaction's failure) to the caller.
    fn reply(self: Box<Self>, answer: NodeResult<Answer>);
}

/// An operation of type `W` waiting for its batch.
pub(super) struct Pending<W: Write> {
    op: W,
    reply: oneshot::Sender<NodeResult<W::Output>>,
}

impl<W: Write> Pending<W> {
    pub(super) fn boxed(op: W, reply: oneshot::Sender<NodeResult<W::Output>>) -> Box<dyn Job> {
        Box::new(Self { op, reply })
    }
}

impl<W: Write> Job for Pending<W> {
    fn kind(&self) -> TypeId {
        TypeId::of::<W>()
    }

    fn op(&self) -> &dyn Any {
        &self.op
    }

    fn run_group<'a>(
        &self,
        group: &'a [Box<dyn Job>],
        tx: &'a mut Tx<'_>,
        commit: &'a mut Commit,
    ) -> BoxFuture<'a, NodeResult<Vec<Answer>>> {
        Box::pin(async move {
            let ops: Vec<&W> = group
                .iter()
                .map(|job| {
                    job.op()
                        .downcast_ref::<W>()
                        .expect("a group holds one kind")
                })
                .collect();
            let answers = W::run_all(&ops, tx, commit).await?;
            debug_assert_eq!(answers.len(), ops.len(), "one answer per operation");
            Ok(answers.into_iter().map(|a| Box::new(a) as Answer).collect())
        })
    }

    fn reply(self: Box<Self>, answer: NodeResult<Answer>) {
        let result = answer.and_then(|a| {
            *a.downcast::<NodeResult<W::Output>>()
                .expect("an answer of the operation's own type")
        });
        // A caller that gave up is no reason to stop: ignore closed replies.
        let _ = self.reply.send(result);
    }
}

/// Where the writer writes.
pub(super) enum Target {
    /// SQLite through rusqlite, on a dedicated thread.
    Sqlite(rusqlite::Connection),
    /// PostgreSQL (or any sqlx backend) through a one-connection pool.
    Pool(AnyPool),
}

/// Starts the writer; it ends when every sender of `rx` is dropped.
pub(super) fn spawn(
    target: Target,
    rx: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    signals: Signals,
) -> tokio::task::JoinHandle<()> {
    match target {
        Target::Pool(pool) => tokio::spawn(run_pool(pool, rx, max_batch, signals)),
        Target::Sqlite(conn) => {
            tokio::task::spawn_blocking(move || run_sqlite(conn, rx, max_batch, &signals))
        }
    }
}

/// Runs a batch of jobs in one transaction of its backend.
trait Committer {
    async fn transaction(
        &mut self,
        jobs: &[Box<dyn Job>],
        commit: &mut Commit,
    ) -> NodeResult<Vec<Answer>>;
}

impl Committer for AnyPool {
    async fn transaction(
        &mut self,
        jobs: &[Box<dyn Job>],
        commit: &mut Commit,
    ) -> NodeResult<Vec<Answer>> {
        let mut tx = self.begin().await?;
        let answers = execute(&mut Tx::Pool(&mut tx), jobs, commit).await?;
        tx.commit().await?;
        Ok(answers)
    }
}

impl Committer for rusqlite::Connection {
    async fn transaction(
        &mut self,
        jobs: &[Box<dyn Job>],
        commit: &mut Commit,
    ) -> NodeResult<Vec<Answer>> {
        // What rusqlite's `Transaction` does, on the connection itself so the
        // transaction can be handed to operations as a `Send` value.
        self.execute_batch("BEGIN IMMEDIATE")?;
        let result = execute(&mut Tx::Sqlite(self), jobs, commit).await;
        let result = result.and_then(|answers| {
            self.execute_batch("COMMIT")?;
            Ok(answers)
        });
        if result.is_err()
            && !self.is_autocommit()
            && let Err(e) = self.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rolling back a failed write transaction");
        }
        result
    }
}

/// Runs jobs in one transaction, each kind together. `Err` only for
/// failures that abort it; the answers are in the order of `jobs`, which the
/// caller has grouped by kind.
async fn execute(
    tx: &mut Tx<'_>,
    jobs: &[Box<dyn Job>],
    commit: &mut Commit,
) -> NodeResult<Vec<Answer>> {
    let mut answers = Vec::with_capacity(jobs.len());
    let mut start = 0;
    while start < jobs.len() {
        let kind = jobs[start].kind();
        let end = jobs[start..]
            .iter()
            .position(|j| j.kind() != kind)
            .map_or(jobs.len(), |n| start + n);
        let group = &jobs[start..end];
        answers.extend(group[0].run_group(group, tx, commit).await?);
        start = end;
    }
    Ok(answers)
}

/// Orders a batch so each kind's jobs are together, kinds in the order of
/// their first job, jobs of a kind in arrival order.
fn group_by_kind(batch: &mut [Box<dyn Job>]) {
    let mut kinds: Vec<TypeId> = Vec::new();
    for job in batch.iter() {
        if !kinds.contains(&job.kind()) {
            kinds.push(job.kind());
        }
    }
    if kinds.len() > 1 {
        batch.sort_by_key(|job| kinds.iter().position(|k| *k == job.kind()));
    }
}

async fn run_pool(
    mut pool: AnyPool,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    signals: Signals,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let started = Instant::now();
        group_by_kind(&mut batch);
        let (answers, commit) = write_batch(&mut pool, &batch, &signals.node).await;
        reply(&mut batch, answers, started);
        signals.announce(commit);
    }
    pool.close().await;
    tracing::debug!("store writer stopped");
}

fn run_sqlite(
    mut conn: rusqlite::Connection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    signals: &Signals,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        group_by_kind(&mut batch);
        // Nothing in the SQLite path ever waits: the future completes on its
        // first poll, on this thread.
        let (answers, commit) =
            futures::executor::block_on(write_batch(&mut conn, &batch, &signals.node));
        reply(&mut batch, answers, started);
        signals.announce(commit);
    }
    tracing::debug!("store writer stopped");
}

/// Runs a batch in one transaction; if that fails, each job in its own.
/// Notices are kept only from transactions that committed.
async fn write_batch(
    committer: &mut impl Committer,
    batch: &[Box<dyn Job>],
    node: &str,
) -> (Vec<NodeResult<Answer>>, Commit) {
    metrics::histogram!("urpnet_store_commit_batch_size").record(batch.len() as f64);
    let mut commit = Commit::new(node);
    match committer.transaction(batch, &mut commit).await {
        Ok(answers) => (answers.into_iter().map(Ok).collect(), commit),
        Err(err) if batch.len() > 1 => {
            tracing::warn!(error = %err, ops = batch.len(), "group commit failed; retrying each write alone");
            let mut answers = Vec::with_capacity(batch.len());
            let mut kept = Commit::new(node);
            for job in batch {
                let mut one = Commit::new(node);
                let result = committer
                    .transaction(std::slice::from_ref(job), &mut one)
                    .await;
                if result.is_ok() {
                    kept.absorb(one);
                }
                answers.push(result.map(|mut a| a.remove(0)));
            }
            (answers, kept)
        }
        Err(err) => (vec![Err(err)], Commit::new(node)),
    }
}

/// Answers every job of a batch.
fn reply(batch: &mut Vec<Box<dyn Job>>, answers: Vec<NodeResult<Answer>>, started: Instant) {
    metrics::histogram!("urpnet_store_commit_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    for (job, answer) in batch.drain(..).zip(answers) {
        job.reply(answer);
    }
}

/// The error a job gets when the writer is gone.
pub(super) fn shutting_down() -> NodeError {
    NodeError::Unavailable("the store is shutting down".into())
}
