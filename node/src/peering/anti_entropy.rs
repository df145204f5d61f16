//! Anti-entropy for shared tickets (DESIGN.md §4): every interval, for each
//! active peer this node shares tickets with, compare per-ticket digests
//! (sha256 of the sorted event ids), push the events the peer lacks through
//! the outbox and fetch those this node lacks. A node restored from an old
//! backup, or one that missed events in any other way, converges without
//! operator action.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use urpnet_proto::v1::{CompareDigestsRequest, FetchEventsRequest, TicketDigest};

use super::PeeringContext;
use super::service::digest;
use super::verify;

/// Tickets compared per call.
const PAGE: u32 = 500;

/// What one round with one peer found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repair {
    /// Tickets compared.
    pub compared: usize,
    /// Tickets whose digests differed.
    pub differing: usize,
    /// Events queued for the peer.
    pub pushed: usize,
    /// Events fetched from the peer and stored.
    pub fetched: usize,
    /// Active peers that could not be compared with.
    pub unreached: usize,
}

/// Runs a first round as soon as the node starts (calling its peers also
/// tells them it is back, which wakes their delivery workers at once), then
/// one every `peering.anti_entropy_interval`, until `shutdown`.
pub async fn run(ctx: Arc<PeeringContext>, shutdown: CancellationToken) {
    let every = ctx.config.peering.anti_entropy_interval;
    // Give the peering server a moment to come up before calling out.
    let mut wait = Duration::from_millis(200);
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = every;
        match round(&ctx).await {
            Ok(r) => {
                // A restored node resumes writing once its own round has
                // reached every peer it shares with, and every peer's round
                // (one interval) has had time to push what it lacks.
                if ctx.federation.catching_up() && r.unreached == 0 && started.elapsed() >= every {
                    let marker = ctx
                        .config
                        .node
                        .data_dir
                        .join(crate::backup::RESTORED_MARKER);
                    if let Err(error) = std::fs::remove_file(&marker) {
                        tracing::warn!(%error, "cannot remove the restore marker");
                    }
                    ctx.federation.set_catching_up(false);
                    tracing::info!(
                        compared = r.compared,
                        fetched = r.fetched,
                        "caught up with every peer after the restore: writes resume"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "anti-entropy round failed"),
        }
    }
}

/// One round with every active peer this node shares tickets with.
///
/// # Errors
/// Storage failures (a peer that cannot be reached is skipped).
pub async fn round(ctx: &PeeringContext) -> anyhow::Result<Repair> {
    let mut total = Repair::default();
    let members = ctx.federation.members();
    for peer in crate::peering::tables::sharing_peers(&ctx.store).await? {
        if !members.is_active(&peer) || ctx.quarantined(&peer).is_some() {
            continue;
        }
        match with_peer(ctx, &peer).await {
            Ok(r) => {
                if r.differing > 0 {
                    tracing::info!(%peer, compared = r.compared, differing = r.differing, pushed = r.pushed, fetched = r.fetched, "anti-entropy repaired tickets");
                }
                metrics::counter!("urpnet_anti_entropy_repairs_total")
                    .increment(r.differing as u64);
                total.compared += r.compared;
                total.differing += r.differing;
                total.pushed += r.pushed;
                total.fetched += r.fetched;
            }
            Err(error) => {
                total.unreached += 1;
                tracing::debug!(%peer, %error, "anti-entropy with this peer skipped");
            }
        }
    }
    Ok(total)
}

/// Compares every ticket shared with `peer`, a page at a time.
///
/// # Errors
/// Storage or call failures.
pub async fn with_peer(ctx: &PeeringContext, peer: &str) -> anyhow::Result<Repair> {
    let mut client = ctx.client(peer).await?;
    let mut repair = Repair::default();
    let mut after = String::new();
    loop {
        let ids =
            crate::peering::tables::tickets_shared_with(&ctx.store, peer, &after, PAGE).await?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        let held = crate::shared_ticket::tables::event_keys(&ctx.store, &ids).await?;
        let tickets = ids
            .iter()
            .map(|id| {
                let events = held.get(id).map(Vec::as_slice).unwrap_or_default();
                TicketDigest {
                    ticket_id: id.clone(),
                    digest: digest(events),
                    event_count: events.len() as u32,
                }
            })
            .collect();
        repair.compared += ids.len();
        let differing = client
            .compare_digests(CompareDigestsRequest { tickets })
            .await?
            .into_inner()
            .differing;
        for theirs in differing {
            repair.differing += 1;
            let mine: BTreeSet<&String> = held
                .get(&theirs.ticket_id)
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            let their_set: BTreeSet<&String> = theirs.event_ids.iter().collect();
            let push: Vec<String> = mine.difference(&their_set).map(|s| (*s).clone()).collect();
            let fetch: Vec<String> = their_set.difference(&mine).map(|s| (*s).clone()).collect();
            if !push.is_empty() {
                repair.pushed += push.len();
                // The outbox holds event ids (the key's second half).
                let ids = push
                    .iter()
                    .filter_map(|key| key.split_once('/').map(|(_, id)| id.to_string()))
                    .collect();
                crate::peering::tables::enqueue_events(&ctx.store, peer, ids).await?;
            }
            if !fetch.is_empty() {
                repair.fetched +=
                    fetch_and_store(ctx, &mut client, peer, &theirs.ticket_id, fetch).await?;
            }
        }
        after = last;
    }
    Ok(repair)
}

async fn fetch_and_store(
    ctx: &PeeringContext,
    client: &mut urpnet_proto::v1::peering_client::PeeringClient<tonic::transport::Channel>,
    peer: &str,
    ticket_id: &str,
    ids: Vec<String>,
) -> anyhow::Result<usize> {
    let mut stored = 0;
    for chunk in ids.chunks(super::MAX_BATCH_EVENTS) {
        let events = client
            .fetch_events(FetchEventsRequest {
                ticket_id: ticket_id.to_string(),
                event_ids: chunk.to_vec(),
            })
            .await?
            .into_inner()
            .events;
        let members = ctx.federation.members();
        let mut good = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match verify::envelope(i, e, &members, &ctx.clock) {
                Ok(incoming) if ctx.quarantined(&incoming.stored.author_node).is_some() => {
                    tracing::debug!(%peer, author = %incoming.stored.author_node, "fetched event of a quarantined author held back");
                }
                Ok(incoming) if incoming.stored.ticket_id == ticket_id => good.push(incoming),
                Ok(_) => tracing::warn!(%peer, "fetched event belongs to another ticket; ignored"),
                Err(refusal) => tracing::warn!(%peer, ?refusal, "fetched event refused"),
            }
        }
        let outcome = crate::peering::ingest::ingest_delivered(
            &ctx.store,
            &ctx.clock,
            peer,
            good,
            Vec::new(),
        )
        .await?;
        stored += outcome.applied as usize;
    }
    Ok(stored)
}
