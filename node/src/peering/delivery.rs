//! Delivery workers: one per destination peer, each draining that peer's
//! outbox in order, in batches, and deleting only what the peer
//! acknowledged.
//!
//! A worker never blocks another: each has its own task, its own connection
//! with a short connect timeout, one call in flight, and its own backoff. An
//! unreachable peer is retried with full-jitter exponential backoff up to
//! `peering.max_backoff` while its outbox grows on disk; any call from that
//! peer wakes its worker at once (the failure that deadlocked Mastodon's
//! delivery queues, mastodon#12445, cannot happen here). Items the peer asks
//! to see again later wait in the outbox until their time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::v1::{DeliverRequest, DeliverResponse, SharedContact};

use super::tables::{OutboxItem, OutboxPayload, Retry};
use super::{PeeringContext, backoff};

/// What a worker knows about its peer, for `urpnet-node peers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    /// Whether the last attempt succeeded (`None`: no attempt yet).
    pub reachable: Option<bool>,
    /// Items delivered since start.
    pub delivered: u64,
    /// Consecutive failures.
    pub failures: u32,
    /// Last error (empty after a success).
    pub last_error: String,
    /// Next attempt, ms since the epoch (0: now or idle).
    pub next_attempt_ms: u64,
}

#[derive(Debug, Default)]
struct Worker {
    /// New items: ends an idle wait, not a backoff.
    items: Notify,
    /// The peer called us: ends any wait, backoff included.
    contact: Notify,
    state: Mutex<PeerState>,
}

/// The delivery workers of a node.
#[derive(Debug, Default)]
pub struct Deliveries {
    workers: Mutex<HashMap<String, Arc<Worker>>>,
}

impl Deliveries {
    /// Wakes `peer`'s worker, if it has one, even from a backoff: the peer
    /// has just shown it is up.
    pub fn wake(&self, peer: &str) {
        if let Some(w) = self.workers.lock().expect("workers lock").get(peer) {
            w.contact.notify_one();
        }
    }

    /// Each worker's state, by peer.
    pub fn states(&self) -> HashMap<String, PeerState> {
        self.workers
            .lock()
            .expect("workers lock")
            .iter()
            .map(|(p, w)| (p.clone(), w.state.lock().expect("state lock").clone()))
            .collect()
    }

    fn ensure(&self, peer: &str) -> (Arc<Worker>, bool) {
        let mut workers = self.workers.lock().expect("workers lock");
        if let Some(w) = workers.get(peer) {
            return (w.clone(), false);
        }
        let w = Arc::new(Worker::default());
        workers.insert(peer.to_string(), w.clone());
        (w, true)
    }
}

/// Starts a worker for every peer with items waiting, then one for each peer
/// that gets items later; runs until `shutdown`.
pub async fn run(ctx: Arc<PeeringContext>, shutdown: CancellationToken) {
    let mut added = ctx.store.subscribe_outbox();
    let mut tasks = tokio::task::JoinSet::new();
    let start = |peer: &str, tasks: &mut tokio::task::JoinSet<()>| {
        let (worker, new) = ctx.deliveries.ensure(peer);
        if new {
            tasks.spawn(work(
                ctx.clone(),
                peer.to_string(),
                worker.clone(),
                shutdown.clone(),
            ));
        }
        worker.items.notify_one();
    };
    for peer in waiting(&ctx).await {
        start(&peer, &mut tasks);
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            got = added.recv() => match got {
                Ok(peer) => start(&peer, &mut tasks),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    for peer in waiting(&ctx).await {
                        start(&peer, &mut tasks);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Peers with items in the outbox.
async fn waiting(ctx: &PeeringContext) -> Vec<String> {
    match crate::peering::tables::outbox_summary(&ctx.store).await {
        Ok(rows) => rows.into_iter().map(|r| r.peer).collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the outbox");
            Vec::new()
        }
    }
}

/// Smallest wait between attempts (and the backoff's base).
const BASE_BACKOFF: Duration = Duration::from_millis(200);
/// How often an idle worker looks for items whose retry time has come.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Batches in flight to one peer at a time: while the peer stores one, it
/// verifies the signatures of the next.
const MAX_IN_FLIGHT: usize = 2;

/// The smallest batch budget a peer's refusals can halve it to: every single
/// event (at most 128 KiB) fits.
const MIN_BATCH_BYTES: usize = 256 * 1024;

type Call = tokio::task::JoinHandle<
    Result<Result<tonic::Response<DeliverResponse>, tonic::Status>, tokio::time::error::Elapsed>,
>;

async fn work(
    ctx: Arc<PeeringContext>,
    peer: String,
    worker: Arc<Worker>,
    shutdown: CancellationToken,
) {
    let settings = ctx.config.peering.clone();
    // Rows up to the cursor were sent in this pass; a pass restarts from 0
    // after a failure or at the end, for rows whose retry time has come.
    let mut cursor = 0i64;
    // A batch stays below three quarters of the message limit (the peer is
    // assumed to have ours); halved each time the peer still finds one too
    // large, so one oversized batch never stalls the peer for good.
    let mut byte_budget = settings.max_message_bytes / 4 * 3;
    let mut client = None;
    let mut members_version = u64::MAX;
    let mut in_flight: std::collections::VecDeque<(Batch, Call, std::time::Instant)> =
        std::collections::VecDeque::new();
    // The previous batch's acknowledgement, written while others travel.
    let mut acking: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        if shutdown.is_cancelled() {
            abort(&mut in_flight);
            settle(&mut acking).await;
            return;
        }
        let members = ctx.federation.members();
        if members.version != members_version {
            // A new member list may carry a new endpoint: reconnect.
            client = None;
            members_version = members.version;
        }
        let quarantined = ctx.quarantined(&peer);
        if !members.is_active(&peer) || quarantined.is_some() {
            let status = members
                .by_id
                .get(&peer)
                .map_or("unknown", |m| crate::registry_link::status_name(m.status));
            let why = match &quarantined {
                Some(reason) => format!("quarantined ({reason}): items are held"),
                None => format!("not an active member ({status}): items are held"),
            };
            set_state(&worker, |s| {
                s.reachable = None;
                s.last_error = why;
                s.next_attempt_ms = 0;
            });
            abort(&mut in_flight);
            settle(&mut acking).await;
            cursor = 0;
            wait(&worker, &shutdown, Duration::from_secs(5)).await;
            continue;
        }
        // Keep up to MAX_IN_FLIGHT batches travelling.
        while in_flight.len() < MAX_IN_FLIGHT {
            if cursor == 0 {
                // Rows being deleted must not be read again.
                settle(&mut acking).await;
            }
            let now = system_time_ms() as i64;
            let items = match crate::peering::tables::outbox_batch(
                &ctx.store,
                &peer,
                cursor,
                now,
                settings.batch_size,
            )
            .await
            {
                Ok(items) => items,
                Err(error) => {
                    tracing::warn!(%peer, %error, "cannot read the outbox");
                    break;
                }
            };
            if items.is_empty() {
                break;
            }
            if client.is_none() {
                match ctx.client(&peer).await {
                    Ok(c) => client = Some(c),
                    Err(error) => {
                        cursor = 0;
                        fail(&worker, &peer, &error.to_string(), &settings, &shutdown).await;
                        break;
                    }
                }
            }
            let batch = Batch::of(&items, byte_budget);
            cursor = batch.last_seq;
            let mut c = client.clone().expect("connected above");
            let request = batch.request.clone();
            let timeout = settings.request_timeout;
            let call =
                tokio::spawn(
                    async move { tokio::time::timeout(timeout, c.deliver(request)).await },
                );
            in_flight.push_back((batch, call, std::time::Instant::now()));
        }
        let Some((batch, mut call, started)) = in_flight.pop_front() else {
            if cursor != 0 {
                // Past the end: look again from the start for items whose
                // retry time has come.
                cursor = 0;
                continue;
            }
            wait(&worker, &shutdown, IDLE_POLL).await;
            continue;
        };
        let result = tokio::select! {
            () = shutdown.cancelled() => {
                call.abort();
                continue;
            }
            r = &mut call => r,
        };
        let failure = match result {
            Ok(Ok(Ok(r))) => {
                let response = r.into_inner();
                finished(
                    &ctx,
                    &peer,
                    &worker,
                    &batch,
                    &response,
                    started,
                    &mut acking,
                )
                .await;
                continue;
            }
            Ok(Ok(Err(status))) => Some(status),
            Ok(Err(_)) => None,
            Err(join) => Some(tonic::Status::internal(format!("delivery task: {join}"))),
        };
        // A failed call: whatever else is in flight is abandoned (the peer
        // may still store it; a resend is then a harmless duplicate).
        abort(&mut in_flight);
        settle(&mut acking).await;
        cursor = 0;
        match failure {
            Some(status)
                if status.code() == tonic::Code::OutOfRange && byte_budget > MIN_BATCH_BYTES =>
            {
                // The peer's message limit is below ours: halve the batches
                // for this peer and send again at once.
                byte_budget = (byte_budget / 2).max(MIN_BATCH_BYTES);
                tracing::warn!(%peer, byte_budget, "peer refused a batch as too large; splitting");
                metrics::counter!("urpnet_delivery_split_total", "peer" => peer.clone())
                    .increment(1);
            }
            Some(status) if status.code() == tonic::Code::ResourceExhausted => {
                let hint = status
                    .metadata()
                    .get("retry-after-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1_000);
                tracing::info!(%peer, retry_after_ms = hint, "peer is busy; slowing down");
                wait(&worker, &shutdown, Duration::from_millis(hint)).await;
            }
            Some(status) => {
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) {
                    client = None;
                }
                let error = format!("{:?}: {}", status.code(), status.message());
                fail(&worker, &peer, &error, &settings, &shutdown).await;
            }
            None => {
                client = None;
                fail(&worker, &peer, "the call timed out", &settings, &shutdown).await;
            }
        }
    }
}

/// Records a batch the peer answered: deletes what it stored or refused for
/// good (in the background, one acknowledgement at a time) and delays what
/// it asked to see again.
async fn finished(
    ctx: &PeeringContext,
    peer: &str,
    worker: &Worker,
    batch: &Batch,
    response: &DeliverResponse,
    started: std::time::Instant,
    acking: &mut Option<tokio::task::JoinHandle<()>>,
) {
    let sent = batch.event_seqs.len() + batch.contact_seqs.len();
    let (delivered, retry) = batch.outcome(response, system_time_ms() as i64);
    for v in &response.refused {
        tracing::warn!(%peer, item = %v.id, reason = %v.reason, "peer refused an item for good");
    }
    settle(acking).await;
    let (store, owned_peer) = (ctx.store.clone(), peer.to_string());
    *acking = Some(tokio::spawn(async move {
        if let Err(error) =
            crate::peering::tables::acknowledge(&store, &owned_peer, delivered, retry).await
        {
            // The peer has the items; they will be sent again and ignored.
            tracing::warn!(peer = %owned_peer, %error, "cannot record the acknowledgement");
        }
    }));
    let labels = [("peer", peer.to_string())];
    metrics::counter!("urpnet_deliveries_total", &labels).increment(sent as u64);
    metrics::counter!("urpnet_delivery_rejected_total", &labels)
        .increment(response.refused.len() as u64);
    metrics::counter!("urpnet_delivery_deferred_total", &labels)
        .increment(response.retry.len() as u64);
    metrics::histogram!("urpnet_delivery_batch_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    set_state(worker, |s| {
        s.reachable = Some(true);
        s.delivered += (sent - response.refused.len().min(sent)) as u64;
        s.failures = 0;
        s.last_error.clear();
        s.next_attempt_ms = 0;
    });
}

fn abort(in_flight: &mut std::collections::VecDeque<(Batch, Call, std::time::Instant)>) {
    for (_, call, _) in in_flight.drain(..) {
        call.abort();
    }
}

/// Waits for the acknowledgement being written, if any.
async fn settle(acking: &mut Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = acking.take() {
        let _ = task.await;
    }
}

/// One `Deliver` call and the outbox rows behind its items.
struct Batch {
    request: DeliverRequest,
    event_seqs: Vec<i64>,
    contact_seqs: Vec<i64>,
    /// Rows whose event or contact is gone: nothing to send, delete them.
    missing: Vec<i64>,
    last_seq: i64,
}

impl Batch {
    /// A batch of `items` in order, stopping before the encoded request
    /// would pass `max_bytes` (at least one item always goes).
    fn of(items: &[OutboxItem], max_bytes: usize) -> Self {
        use prost::Message as _;
        let mut b = Batch {
            request: DeliverRequest::default(),
            event_seqs: Vec::new(),
            contact_seqs: Vec::new(),
            missing: Vec::new(),
            last_seq: 0,
        };
        let mut bytes = 0usize;
        for item in items {
            let size = match &item.payload {
                OutboxPayload::Event(envelope) => envelope.encoded_len() + 8,
                OutboxPayload::Contact(_, contact) => contact.encoded_len() + 48,
                OutboxPayload::Missing => 0,
            };
            if bytes + size > max_bytes && b.last_seq != 0 {
                break;
            }
            bytes += size;
            match &item.payload {
                OutboxPayload::Event(envelope) => {
                    b.request.events.push(envelope.clone());
                    b.event_seqs.push(item.seq);
                }
                OutboxPayload::Contact(ticket_id, contact)
                    if b.request.contacts.len() < super::MAX_BATCH_CONTACTS =>
                {
                    b.request.contacts.push(SharedContact {
                        ticket_id: ticket_id.clone(),
                        contact: Some(contact.clone()),
                    });
                    b.contact_seqs.push(item.seq);
                }
                OutboxPayload::Contact(..) => break,
                OutboxPayload::Missing => b.missing.push(item.seq),
            }
            b.last_seq = item.seq;
        }
        b
    }

    /// The rows to delete and the rows to offer again later.
    fn outcome(&self, response: &DeliverResponse, now_ms: i64) -> (Vec<i64>, Vec<Retry>) {
        let mut retry = Vec::new();
        let mut later = HashSet::new();
        for v in &response.retry {
            let seqs = if v.contact {
                &self.contact_seqs
            } else {
                &self.event_seqs
            };
            if let Some(seq) = seqs.get(v.index as usize) {
                later.insert(*seq);
                retry.push(Retry {
                    seq: *seq,
                    not_before_ms: now_ms + v.retry_after_ms.clamp(100, 3_600_000) as i64,
                    error: v.reason.clone(),
                });
            }
        }
        let delivered = self
            .event_seqs
            .iter()
            .chain(&self.contact_seqs)
            .chain(&self.missing)
            .copied()
            .filter(|s| !later.contains(s))
            .collect();
        (delivered, retry)
    }
}

fn set_state(worker: &Worker, f: impl FnOnce(&mut PeerState)) {
    f(&mut worker.state.lock().expect("state lock"));
}

/// Records a failed attempt and waits out the backoff (or a wake-up).
async fn fail(
    worker: &Worker,
    peer: &str,
    error: &str,
    settings: &crate::config::PeeringSection,
    shutdown: &CancellationToken,
) {
    let (mut failures, mut delay) = (0, Duration::ZERO);
    set_state(worker, |s| {
        s.failures = s.failures.saturating_add(1);
        failures = s.failures;
        delay = backoff(failures, BASE_BACKOFF, settings.max_backoff);
        s.reachable = Some(false);
        s.last_error = error.to_string();
        s.next_attempt_ms = system_time_ms() + delay.as_millis() as u64;
    });
    metrics::counter!("urpnet_delivery_retries_total", "peer" => peer.to_string()).increment(1);
    if failures == 1 || failures.is_power_of_two() {
        tracing::warn!(%peer, %error, failures, retry_in = ?delay, "delivery failed");
    }
    back_off(worker, shutdown, delay).await;
}

/// Waits for new items, a call from the peer, or `at_most`.
async fn wait(worker: &Worker, shutdown: &CancellationToken, at_most: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = worker.items.notified() => {}
        () = worker.contact.notified() => {}
        () = tokio::time::sleep(at_most) => {}
    }
}

/// Waits out a backoff: only a call from the peer cuts it short (new items
/// for a peer that is down must not hasten the next attempt).
async fn back_off(worker: &Worker, shutdown: &CancellationToken, delay: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = worker.contact.notified() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

/// Publishes outbox depth and delivery lag per peer every few seconds.
pub async fn gauges(ctx: Arc<PeeringContext>, shutdown: CancellationToken) {
    let mut known: HashSet<String> = HashSet::new();
    loop {
        if let Ok(rows) = crate::peering::tables::outbox_summary(&ctx.store).await {
            let now = system_time_ms() as i64;
            let mut seen = HashSet::new();
            for r in rows {
                let labels = [("peer", r.peer.clone())];
                metrics::gauge!("urpnet_outbox_depth", &labels).set(r.depth as f64);
                metrics::gauge!("urpnet_delivery_lag_seconds", &labels)
                    .set((now - r.oldest_ms).max(0) as f64 / 1000.0);
                seen.insert(r.peer);
            }
            for gone in known.difference(&seen) {
                let labels = [("peer", gone.clone())];
                metrics::gauge!("urpnet_outbox_depth", &labels).set(0.0);
                metrics::gauge!("urpnet_delivery_lag_seconds", &labels).set(0.0);
            }
            known = seen;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
