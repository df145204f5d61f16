//! The Desk gRPC service: an adapter. Each method authenticates the caller,
//! unpacks the request, calls [`TicketDesk`], and converts the result.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use urpnet_proto::v1::desk_server::Desk;
use urpnet_proto::v1::{
    AddNoteRequest, AnswerHandoffRequest, AssignTicketRequest, ChangeStatusRequest,
    CreateTicketRequest, CreateTicketResponse, GetAttachmentRequest, GetAttachmentResponse,
    GetHistoryRequest, GetHistoryResponse, GetTicketRequest, GetTicketResponse, HandoffRequest,
    HandoffResponse, HistoryEntry, ListOffersRequest, ListOffersResponse, ListPeersRequest,
    ListPeersResponse, ListTicketsRequest, ListTicketsResponse, Offer, SetPeerQuarantineRequest,
    SetPeerQuarantineResponse, ShareTicketRequest, TicketChange, TicketResponse,
    WatchTicketsRequest,
};

use crate::auth::{Actor, Authenticator};
use crate::casework::{OfferView, StatusChange, TicketDesk};
use crate::shared_ticket::Effect;
use crate::shared_ticket::fold::timestamp;

fn offer(view: OfferView) -> Offer {
    Offer {
        ticket: Some(view.ticket),
        from_node: view.from_node,
        to_node: view.to_node,
        reason: view.reason,
        offered_at: Some(timestamp(view.offered_ms)),
    }
}

fn ticket_response(ticket: urpnet_proto::v1::Ticket) -> Response<TicketResponse> {
    Response::new(TicketResponse {
        ticket: Some(ticket),
    })
}

/// The Desk service of one node.
#[derive(Debug, Clone)]
pub struct DeskService {
    desk: Arc<TicketDesk>,
    auth: Arc<Authenticator>,
}

impl DeskService {
    /// A service over the node's desk and authenticator.
    pub fn new(desk: Arc<TicketDesk>, auth: Arc<Authenticator>) -> Self {
        Self { desk, auth }
    }

    async fn actor<T>(&self, request: &Request<T>) -> Result<Actor, Status> {
        self.auth.actor_of(request).await
    }
}

/// How often an open `WatchTickets` stream checks that its token is still
/// valid when no change arrives.
const WATCH_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

#[tonic::async_trait]
impl Desk for DeskService {
    #[tracing::instrument(skip_all)]
    async fn create_ticket(
        &self,
        request: Request<CreateTicketRequest>,
    ) -> Result<Response<CreateTicketResponse>, Status> {
        let actor = self.actor(&request).await?;
        let created = self.desk.create(&actor, request.into_inner()).await?;
        Ok(Response::new(CreateTicketResponse {
            ticket: Some(created.ticket),
            replayed: created.replayed,
            possible_duplicates: created.possible_duplicates,
            tracking_key: created.tracking_key,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_ticket(
        &self,
        request: Request<GetTicketRequest>,
    ) -> Result<Response<GetTicketResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let (ticket, citizen) = self
            .desk
            .get(&actor, &req.ticket_id, &req.reference)
            .await?;
        Ok(Response::new(GetTicketResponse {
            ticket: Some(ticket),
            citizen,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_tickets(
        &self,
        request: Request<ListTicketsRequest>,
    ) -> Result<Response<ListTicketsResponse>, Status> {
        let actor = self.actor(&request).await?;
        let (tickets, next_page_token) = self.desk.list(&actor, request.get_ref()).await?;
        Ok(Response::new(ListTicketsResponse {
            tickets,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn add_note(
        &self,
        request: Request<AddNoteRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let ticket = self
            .desk
            .add_note(&actor, &req.ticket_id, req.public, &req.text)
            .await?;
        Ok(ticket_response(ticket))
    }

    #[tracing::instrument(skip_all)]
    async fn change_status(
        &self,
        request: Request<ChangeStatusRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let change = StatusChange {
            to: req.status,
            reason: req.reason,
            merged_into: req.merged_into,
        };
        let ticket = self
            .desk
            .change_status(&actor, &req.ticket_id, change)
            .await?;
        Ok(ticket_response(ticket))
    }

    #[tracing::instrument(skip_all)]
    async fn assign_ticket(
        &self,
        request: Request<AssignTicketRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let ticket = self
            .desk
            .assign(&actor, &req.ticket_id, &req.office)
            .await?;
        Ok(ticket_response(ticket))
    }

    #[tracing::instrument(skip_all)]
    async fn get_history(
        &self,
        request: Request<GetHistoryRequest>,
    ) -> Result<Response<GetHistoryResponse>, Status> {
        let actor = self.actor(&request).await?;
        let items = self
            .desk
            .history(&actor, &request.get_ref().ticket_id)
            .await?;
        let entries = items
            .into_iter()
            .map(|item| {
                let (effective, ineffective_reason) = match item.effect {
                    Effect::Applied => (true, String::new()),
                    Effect::Ineffective(reason) => (false, reason),
                };
                HistoryEntry {
                    event: Some(item.event),
                    effective,
                    ineffective_reason,
                    signature_valid: item.signature_valid,
                }
            })
            .collect();
        Ok(Response::new(GetHistoryResponse { entries }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_attachment(
        &self,
        request: Request<GetAttachmentRequest>,
    ) -> Result<Response<GetAttachmentResponse>, Status> {
        let actor = self.actor(&request).await?;
        let (attachment, content) = self
            .desk
            .attachment(&actor, &request.get_ref().sha256)
            .await?;
        Ok(Response::new(GetAttachmentResponse {
            attachment: Some(attachment),
            content,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn handoff(
        &self,
        request: Request<HandoffRequest>,
    ) -> Result<Response<HandoffResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let (ticket, to_node, decided_by) = self
            .desk
            .handoff(
                &actor,
                &req.ticket_id,
                &req.to_node,
                &req.reason,
                req.overflow,
            )
            .await?;
        Ok(Response::new(HandoffResponse {
            ticket: Some(ticket),
            to_node,
            decided_by,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn accept_handoff(
        &self,
        request: Request<AnswerHandoffRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let ticket = self
            .desk
            .answer_handoff(&actor, &req.ticket_id, None)
            .await?;
        Ok(ticket_response(ticket))
    }

    #[tracing::instrument(skip_all)]
    async fn decline_handoff(
        &self,
        request: Request<AnswerHandoffRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let ticket = self
            .desk
            .answer_handoff(&actor, &req.ticket_id, Some(&req.reason))
            .await?;
        Ok(ticket_response(ticket))
    }

    #[tracing::instrument(skip_all)]
    async fn share_ticket(
        &self,
        request: Request<ShareTicketRequest>,
    ) -> Result<Response<TicketResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let ticket = self
            .desk
            .share(&actor, &req.ticket_id, &req.with_node)
            .await?;
        Ok(ticket_response(ticket))
    }

    #[tracing::instrument(skip_all)]
    async fn list_offers(
        &self,
        request: Request<ListOffersRequest>,
    ) -> Result<Response<ListOffersResponse>, Status> {
        let actor = self.actor(&request).await?;
        let lists = self.desk.offers(&actor, request.get_ref()).await?;
        Ok(Response::new(ListOffersResponse {
            incoming: lists.incoming.into_iter().map(offer).collect(),
            outgoing: lists.outgoing.into_iter().map(offer).collect(),
            next_incoming_page_token: lists.next_incoming,
            next_outgoing_page_token: lists.next_outgoing,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_peers(
        &self,
        request: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        let actor = self.actor(&request).await?;
        let peers = self.desk.peers(&actor).await?;
        Ok(Response::new(ListPeersResponse { peers }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_peer_quarantine(
        &self,
        request: Request<SetPeerQuarantineRequest>,
    ) -> Result<Response<SetPeerQuarantineResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let reason = req.quarantine.then_some(req.reason.as_str());
        self.desk.set_quarantine(&actor, &req.peer, reason).await?;
        Ok(Response::new(SetPeerQuarantineResponse {}))
    }

    type WatchTicketsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<TicketChange, Status>> + Send>>;

    #[tracing::instrument(skip_all)]
    async fn watch_tickets(
        &self,
        request: Request<WatchTicketsRequest>,
    ) -> Result<Response<Self::WatchTicketsStream>, Status> {
        let actor = self.actor(&request).await?;
        actor.require(crate::auth::Action::Read)?;
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let changes = self.desk.store().subscribe_changes();
        let recheck = tokio::time::interval(WATCH_RECHECK);
        let state = (changes, recheck, self.auth.clone(), authorization, false);
        // The token is checked again on every change and every few seconds:
        // a revoked token's stream ends with UNAUTHENTICATED.
        let stream = futures::stream::unfold(state, |mut state| async move {
            let (rx, recheck, auth, authorization, ended) = &mut state;
            if *ended {
                return None;
            }
            loop {
                let next = tokio::select! {
                    received = rx.recv() => Some(received),
                    _ = recheck.tick() => None,
                };
                if let Err(error) = auth.resolve(authorization.as_deref()).await {
                    *ended = true;
                    return Some((Err(Status::from(error)), state));
                }
                match next {
                    None => continue,
                    Some(Ok(change)) => return Some((Ok((*change).clone()), state)),
                    Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(missed))) => {
                        let status = Status::resource_exhausted(format!(
                            "the watcher fell {missed} changes behind; watch again and re-read"
                        ));
                        return Some((Err(status), state));
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
