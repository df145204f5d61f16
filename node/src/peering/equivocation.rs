//! Equivocation quarantines the signer (DESIGN.md §3): a node that signed
//! two different handoff offers at one owner epoch is listed by the fold in
//! `Ticket.equivocators`; as soon as a committed ticket shows a new
//! equivocator, this node quarantines it — refused at the gate, its items
//! held, its relayed events held back — until an operator releases it
//! (`urpnet-node peers release`).

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::PeeringContext;

/// Watches committed changes until `shutdown`.
pub async fn run(ctx: Arc<PeeringContext>, shutdown: CancellationToken) {
    let mut changes = ctx.store.subscribe_changes();
    loop {
        let change = tokio::select! {
            () = shutdown.cancelled() => return,
            c = changes.recv() => c,
        };
        let change = match change {
            Ok(change) => change,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let Some(ticket) = &change.ticket else {
            continue;
        };
        for signer in &ticket.equivocators {
            if signer == ctx.node.as_str() || ctx.quarantined(signer).is_some() {
                continue;
            }
            let reason = format!(
                "equivocation: signed two handoff offers at one owner epoch on ticket {}",
                ticket.id
            );
            if let Err(error) = ctx.set_quarantine(signer, Some(reason)).await {
                tracing::error!(%signer, %error, "cannot quarantine an equivocating peer");
            }
        }
    }
}
