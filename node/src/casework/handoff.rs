//! Handing tickets between bodies (DESIGN.md §3): offer, accept, decline,
//! share read-only, and the views operators need around them (the inbox of
//! offers, delivery to each peer).
//!
//! Each operation is an event like any other: made in the writer from the
//! ticket's latest state, signed, stored with its outbox rows in one
//! transaction. Ownership moves only when the target's `HandoffAccepted`
//! answers the owner's `HandoffOffered`, in the fold, on every node alike.

use std::sync::Arc;

use std::time::Duration;

use urpnet_proto::ids::NodeId;
use urpnet_proto::tls;
use urpnet_proto::v1::registry_client::RegistryClient;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{
    HandoffAccepted, HandoffDeclined, HandoffOffered, ListOffersRequest, OverflowRequest,
    PeerDelivery, RouteRequest, Shared, Ticket,
};
use urpnet_proto::validate::Violations;

use super::{TicketDesk, require_owned};
use crate::auth::{Action, Actor};
use crate::error::{NodeError, NodeResult};
use crate::shared_ticket::{lifecycle, names};
use crate::validate;

/// A pending offer as operators see it.
#[derive(Debug, Clone)]
pub struct OfferView {
    /// The ticket.
    pub ticket: Ticket,
    /// The offering node (the owner).
    pub from_node: String,
    /// The node offered it.
    pub to_node: String,
    /// The reason given.
    pub reason: String,
    /// When it was offered (HLC wall ms).
    pub offered_ms: u64,
}

/// A page of each list of offers.
#[derive(Debug, Clone, Default)]
pub struct OfferLists {
    /// Offered to this node, oldest first.
    pub incoming: Vec<OfferView>,
    /// Offered by this node, oldest first.
    pub outgoing: Vec<OfferView>,
    /// Token for the next page of `incoming` (empty: none).
    pub next_incoming: String,
    /// Token for the next page of `outgoing` (empty: none).
    pub next_outgoing: String,
}

/// The answer when `Route` or `Overflow` cannot be asked.
fn registry_unreachable(detail: &str) -> NodeError {
    NodeError::Unavailable(format!(
        "the registry is unreachable ({detail}): name the receiving body with to_node; members and categories come from this node's cached list meanwhile"
    ))
}

/// The largest page of offers.
const MAX_OFFER_PAGE: u32 = 500;

/// `None` for no token, `Some(position)` for a valid one; a malformed token
/// is added to `v` (and read as `Some(None)`, unused since `v` fails).
fn offer_position(v: &mut Violations, field: &str, token: &str) -> Option<Option<(i64, String)>> {
    if token.is_empty() {
        return None;
    }
    let decoded = super::decode_page_token("o1", token)
        .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id)));
    if decoded.is_none() {
        v.add(
            field,
            "is malformed (pass back the next page token unchanged)",
        );
    }
    Some(decoded)
}

fn encode_offer_position((ms, id): &(i64, String)) -> String {
    super::encode_page_token("o1", &ms.to_string(), id)
}

impl TicketDesk {
    /// This node's id.
    pub fn node_id(&self) -> String {
        self.config.node.id.to_string()
    }

    /// Checks that `node` is another active member of the federation.
    fn require_peer(&self, v: &mut Violations, field: &str, node: &str) {
        if NodeId::new(node).is_err() {
            v.add(field, "must be a node id (^[a-z0-9_]{2,32}$)");
        } else if node == self.config.node.id.as_str() {
            v.add(field, "must be another body, not this node");
        } else if !self.federation.members().is_active(node) {
            v.add(
                field,
                format!("`{node}` is not an active member of the federation"),
            );
        }
    }

    async fn registry(&self) -> NodeResult<RegistryClient<tonic::transport::Channel>> {
        let mut cached = self.registry.lock().await;
        if let Some(client) = cached.as_ref() {
            return Ok(client.clone());
        }
        if self.config.registry.endpoint.is_empty() {
            return Err(NodeError::FailedPrecondition(
                "this node has no registry (registry.endpoint): name the body with to_node".into(),
            ));
        }
        let material = tls::TlsFiles::in_dir(&self.config.tls_dir())
            .load()
            .map_err(|e| NodeError::Unavailable(format!("TLS files: {e}")))?;
        let channel = tls::channel_to_registry(
            &self.config.registry.endpoint,
            material
                .client_config()
                .map_err(|e| NodeError::Unavailable(format!("TLS files: {e}")))?,
            Duration::from_secs(5),
        )
        .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        let client = RegistryClient::new(channel);
        *cached = Some(client.clone());
        Ok(client)
    }

    /// Asks the registry where `ticket` should go: the competent body
    /// (`Route`), or with `overflow` a peer with spare capacity.
    async fn choose_target(&self, ticket: &Ticket, overflow: bool) -> NodeResult<(String, String)> {
        let mut client = self.registry().await?;
        if let crate::registry_link::RegistryReach::Unreachable { since_ms } =
            self.federation.registry_reach()
        {
            // The heartbeat already knows: answer at once instead of
            // waiting for a connection timeout.
            return Err(registry_unreachable(&format!(
                "no heartbeat answered since {}",
                crate::cli::output::when_ms(since_ms)
            )));
        }
        let unavailable = |s: tonic::Status| registry_unreachable(s.message());
        if overflow {
            let resp = client
                .overflow(OverflowRequest {
                    category: ticket.category.clone(),
                    from: self.node_id(),
                    limit: 1,
                })
                .await
                .map_err(unavailable)?
                .into_inner();
            let first = resp
                .candidates
                .first()
                .and_then(|c| c.member.as_ref())
                .ok_or_else(|| {
                    NodeError::FailedPrecondition(format!(
                        "no peer can take overflow of {}: {}",
                        ticket.category, resp.reason
                    ))
                })?;
            return Ok((first.id.clone(), format!("overflow: {}", resp.reason)));
        }
        let territory = ticket
            .location
            .as_ref()
            .map(|l| l.istat_code.clone())
            .unwrap_or_default();
        let resp = client
            .route(RouteRequest {
                category: ticket.category.clone(),
                territory,
            })
            .await
            .map_err(unavailable)?
            .into_inner();
        let member = resp.member.ok_or_else(|| {
            NodeError::FailedPrecondition(format!("the registry found no body: {}", resp.reason))
        })?;
        if member.id == self.node_id() {
            return Err(NodeError::FailedPrecondition(format!(
                "the registry routes this ticket to this node itself ({})",
                resp.reason
            )));
        }
        Ok((member.id, resp.reason))
    }

    /// Where the registry would send a ticket, and why, without offering it
    /// (the console shows it before the operator confirms).
    ///
    /// # Errors
    /// As [`TicketDesk::handoff`] when it asks the registry.
    pub async fn route_preview(
        self: &Arc<Self>,
        actor: &Actor,
        ticket_id: &str,
    ) -> NodeResult<(String, String)> {
        actor.require(Action::Handoff)?;
        let (ticket, _) = self.get(actor, ticket_id, "").await?;
        self.choose_target(&ticket, false).await
    }

    /// Offers a ticket to another body. Returns the ticket, the target and
    /// how it was chosen.
    ///
    /// # Errors
    /// `InvalidArgument`, `PermissionDenied`, `NotFound`,
    /// `FailedPrecondition` (not the owner, closed, an offer already
    /// pending, the registry found nobody), `Unavailable` (no registry).
    pub async fn handoff(
        self: &Arc<Self>,
        actor: &Actor,
        ticket_id: &str,
        to_node: &str,
        reason: &str,
        overflow: bool,
    ) -> NodeResult<(Ticket, String, String)> {
        actor.require(Action::Handoff)?;
        let mut v = Violations::new();
        validate::ticket_id(&mut v, "ticket_id", ticket_id);
        v.length("reason", reason, 0, validate::REASON_MAX);
        v.printable("reason", reason);
        if !to_node.is_empty() {
            self.require_peer(&mut v, "to_node", to_node);
            v.check(!overflow, "overflow", "is only for an empty to_node");
        }
        v.into_result()?;
        let (to, decided_by) = if to_node.is_empty() {
            let ticket = crate::shared_ticket::tables::ticket(&self.store, ticket_id)
                .await?
                .ok_or_else(|| NodeError::NotFound(format!("ticket {ticket_id}")))?;
            let (to, why) = self.choose_target(&ticket, overflow).await?;
            let mut v = Violations::new();
            self.require_peer(&mut v, "to_node", &to);
            v.into_result()?;
            (to, why)
        } else {
            (to_node.to_string(), "given".to_string())
        };
        let reason = if reason.trim().is_empty() {
            decided_by.clone()
        } else {
            reason.trim().to_string()
        };
        let reason: String = reason.chars().take(validate::REASON_MAX).collect();
        let (desk, actor2, node, target) =
            (Arc::clone(self), actor.clone(), self.node_id(), to.clone());
        let ticket = self
            .append(
                ticket_id,
                Box::new(move |t: &Ticket| {
                    require_owned(t, &node)?;
                    require_open(t)?;
                    if let Some(p) = &t.pending_handoff {
                        return Err(NodeError::FailedPrecondition(format!(
                            "an offer to {} is already pending; wait for its answer",
                            p.to_node
                        )));
                    }
                    Ok(desk.new_event(
                        t,
                        &actor2,
                        t.owner_epoch,
                        Kind::HandoffOffered(HandoffOffered {
                            to_node: target.clone(),
                            reason: reason.clone(),
                            after_decline_event_id: t.last_decline_event_id.clone(),
                        }),
                    ))
                }),
            )
            .await?;
        metrics::counter!("urpnet_handoffs_total", "step" => "offered").increment(1);
        tracing::info!(ticket = %ticket_id, to = %to, %decided_by, "handoff offered");
        Ok((ticket, to, decided_by))
    }

    /// Accepts (`decline_reason` = `None`) or declines the offer pending for
    /// this node.
    ///
    /// # Errors
    /// `InvalidArgument`, `PermissionDenied`, `NotFound`,
    /// `FailedPrecondition` when no offer to this node is pending.
    pub async fn answer_handoff(
        self: &Arc<Self>,
        actor: &Actor,
        ticket_id: &str,
        decline_reason: Option<&str>,
    ) -> NodeResult<Ticket> {
        actor.require(Action::Handoff)?;
        let mut v = Violations::new();
        validate::ticket_id(&mut v, "ticket_id", ticket_id);
        if let Some(reason) = decline_reason {
            v.length("reason", reason, 0, validate::REASON_MAX);
            v.printable("reason", reason);
            v.check(
                !reason.trim().is_empty(),
                "reason",
                "is required to decline an offer",
            );
        }
        v.into_result()?;
        let (desk, actor2, node) = (Arc::clone(self), actor.clone(), self.node_id());
        let decline = decline_reason.map(|r| r.trim().to_string());
        let accepted = decline.is_none();
        let ticket = self
            .append(
                ticket_id,
                Box::new(move |t: &Ticket| {
                    let Some(pending) = t.pending_handoff.as_ref().filter(|p| p.to_node == node)
                    else {
                        return Err(NodeError::FailedPrecondition(
                            "no handoff to this node is pending on this ticket".into(),
                        ));
                    };
                    let offer_event_id = pending.offer_event_id.clone();
                    let kind = match &decline {
                        None => Kind::HandoffAccepted(HandoffAccepted { offer_event_id }),
                        Some(reason) => Kind::HandoffDeclined(HandoffDeclined {
                            offer_event_id,
                            reason: reason.clone(),
                        }),
                    };
                    Ok(desk.new_event(t, &actor2, t.owner_epoch, kind))
                }),
            )
            .await?;
        let step = if accepted { "accepted" } else { "declined" };
        metrics::counter!("urpnet_handoffs_total", "step" => step).increment(1);
        tracing::info!(ticket = %ticket_id, step, "handoff answered");
        Ok(ticket)
    }

    /// Shares a ticket read-only with another body.
    ///
    /// # Errors
    /// `InvalidArgument`, `PermissionDenied`, `NotFound`,
    /// `FailedPrecondition` (not the owner, already a participant).
    pub async fn share(
        self: &Arc<Self>,
        actor: &Actor,
        ticket_id: &str,
        with_node: &str,
    ) -> NodeResult<Ticket> {
        actor.require(Action::Handoff)?;
        let mut v = Violations::new();
        validate::ticket_id(&mut v, "ticket_id", ticket_id);
        self.require_peer(&mut v, "with_node", with_node);
        v.into_result()?;
        let (desk, actor2, node, with) = (
            Arc::clone(self),
            actor.clone(),
            self.node_id(),
            with_node.to_string(),
        );
        let ticket = self
            .append(
                ticket_id,
                Box::new(move |t: &Ticket| {
                    require_owned(t, &node)?;
                    if t.participants.contains(&with) {
                        return Err(NodeError::FailedPrecondition(format!(
                            "{with} already takes part in this ticket"
                        )));
                    }
                    Ok(desk.new_event(
                        t,
                        &actor2,
                        t.owner_epoch,
                        Kind::Shared(Shared {
                            with_node: with.clone(),
                        }),
                    ))
                }),
            )
            .await?;
        tracing::info!(ticket = %ticket_id, with = %with_node, "ticket shared");
        Ok(ticket)
    }

    /// Offers pending for this node (its inbox) and offers it made, a page
    /// of each (see `ListOffersRequest`).
    ///
    /// # Errors
    /// `InvalidArgument` for a page size over 500 or a malformed page token;
    /// `PermissionDenied`, storage failures.
    pub async fn offers(&self, actor: &Actor, req: &ListOffersRequest) -> NodeResult<OfferLists> {
        actor.require(Action::Read)?;
        let mut v = Violations::new();
        if req.page_size > MAX_OFFER_PAGE {
            v.add("page_size", format!("must be at most {MAX_OFFER_PAGE}"));
        }
        let incoming_after =
            offer_position(&mut v, "incoming_page_token", &req.incoming_page_token);
        let outgoing_after =
            offer_position(&mut v, "outgoing_page_token", &req.outgoing_page_token);
        v.into_result()?;
        let limit = if req.page_size == 0 {
            100
        } else {
            req.page_size
        };
        let first = req.incoming_page_token.is_empty() && req.outgoing_page_token.is_empty();
        let node = self.config.node.id.as_str();
        let mut lists = OfferLists::default();
        if first || incoming_after.is_some() {
            let (tickets, next) = crate::shared_ticket::tables::offers_page(
                &self.store,
                node,
                true,
                incoming_after.flatten(),
                limit,
            )
            .await?;
            lists.incoming = self.offer_views(tickets).await?;
            lists.next_incoming = next.map(|p| encode_offer_position(&p)).unwrap_or_default();
        }
        if first || outgoing_after.is_some() {
            let (tickets, next) = crate::shared_ticket::tables::offers_page(
                &self.store,
                node,
                false,
                outgoing_after.flatten(),
                limit,
            )
            .await?;
            lists.outgoing = self.offer_views(tickets).await?;
            lists.next_outgoing = next.map(|p| encode_offer_position(&p)).unwrap_or_default();
        }
        Ok(lists)
    }

    /// Each ticket with its pending offer's reason and time, read in one
    /// query for the whole page.
    async fn offer_views(&self, tickets: Vec<Ticket>) -> NodeResult<Vec<OfferView>> {
        // The pending offer was signed by the owner it would replace.
        let wanted: Vec<(String, String, String)> = tickets
            .iter()
            .filter_map(|t| {
                let p = t.pending_handoff.as_ref()?;
                Some((t.id.clone(), t.owner_node.clone(), p.offer_event_id.clone()))
            })
            .collect();
        let events = crate::shared_ticket::tables::events_named(&self.store, &wanted).await?;
        Ok(tickets
            .into_iter()
            .map(|ticket| {
                let pending = ticket.pending_handoff.clone().unwrap_or_default();
                let (reason, offered_ms) = events
                    .get(&ticket.id)
                    .map(|e| {
                        let reason = match &e.kind {
                            Some(Kind::HandoffOffered(o)) => o.reason.clone(),
                            _ => String::new(),
                        };
                        (reason, e.hlc.map(|h| h.wall_ms).unwrap_or_default())
                    })
                    .unwrap_or_default();
                OfferView {
                    from_node: ticket.owner_node.clone(),
                    to_node: pending.to_node,
                    reason,
                    offered_ms,
                    ticket,
                }
            })
            .collect())
    }

    /// Delivery to each peer this node shares tickets with or has items for.
    ///
    /// # Errors
    /// `PermissionDenied`, storage failures.
    pub async fn peers(&self, actor: &Actor) -> NodeResult<Vec<PeerDelivery>> {
        actor.require(Action::Read)?;
        let summary = crate::peering::tables::outbox_summary(&self.store).await?;
        let mut peers: std::collections::BTreeSet<String> =
            crate::peering::tables::sharing_peers(&self.store)
                .await?
                .into_iter()
                .collect();
        peers.extend(summary.iter().map(|s| s.peer.clone()));
        let states = self
            .peering
            .get()
            .map(|p| p.deliveries.states())
            .unwrap_or_default();
        let members = self.federation.members();
        let now = urpnet_proto::hlc::system_time_ms() as i64;
        Ok(peers
            .into_iter()
            .map(|peer| {
                let s = states.get(&peer).cloned().unwrap_or_default();
                let q = summary.iter().find(|q| q.peer == peer);
                let member = members.by_id.get(&peer);
                PeerDelivery {
                    display_name: member.map(|m| m.display_name.clone()).unwrap_or_default(),
                    member_status: member
                        .map_or("unknown", |m| crate::registry_link::status_name(m.status))
                        .to_string(),
                    reachable: s.reachable,
                    outbox_depth: q.map_or(0, |q| q.depth),
                    lag_ms: q.map_or(0, |q| (now - q.oldest_ms).max(0) as u64),
                    delivered: s.delivered,
                    failures: s.failures,
                    last_error: if s.last_error.is_empty() {
                        q.map(|q| q.last_error.clone()).unwrap_or_default()
                    } else {
                        s.last_error
                    },
                    next_attempt_ms: s.next_attempt_ms,
                    quarantine_reason: self
                        .peering
                        .get()
                        .and_then(|p| p.quarantined(&peer))
                        .unwrap_or_default(),
                    peer,
                }
            })
            .collect())
    }
}

impl TicketDesk {
    /// Quarantines (`Some(reason)`) or releases (`None`) a peer.
    ///
    /// # Errors
    /// `PermissionDenied` below supervisor, `InvalidArgument`,
    /// `FailedPrecondition` when peering is not running, storage failures.
    pub async fn set_quarantine(
        &self,
        actor: &Actor,
        peer: &str,
        reason: Option<&str>,
    ) -> NodeResult<()> {
        actor.require(Action::Quarantine)?;
        let mut v = Violations::new();
        if NodeId::new(peer).is_err() {
            v.add("peer", "must be a node id (^[a-z0-9_]{2,32}$)");
        }
        v.check(
            peer != self.config.node.id.as_str(),
            "peer",
            "must be another node",
        );
        if let Some(reason) = reason {
            v.length("reason", reason, 1, validate::REASON_MAX);
            v.printable("reason", reason);
            v.check(
                !reason.trim().is_empty(),
                "reason",
                "is required to quarantine",
            );
        }
        v.into_result()?;
        let peering = self.peering.get().ok_or_else(|| {
            NodeError::FailedPrecondition("peering is not running on this node".into())
        })?;
        peering
            .set_quarantine(
                peer,
                reason.map(|r| format!("{} (by {})", r.trim(), actor.name)),
            )
            .await
    }
}

fn require_open(ticket: &Ticket) -> NodeResult<()> {
    if lifecycle::is_terminal(ticket.status()) {
        return Err(NodeError::FailedPrecondition(format!(
            "the ticket is {} and cannot be handed off",
            names::status_name(ticket.status())
        )));
    }
    Ok(())
}
