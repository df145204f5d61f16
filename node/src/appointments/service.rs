//! The appointment gRPC services, as adapters over [`Appointments`]:
//! `AppointmentDesk` for this node's operators (Desk bearer tokens) and
//! `AppointmentPeer` for other bodies' nodes on the peering port (mutual
//! TLS, the peer gate).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use urpnet_proto::v1::appointment_desk_server::AppointmentDesk;
use urpnet_proto::v1::appointment_peer_server::AppointmentPeer;
use urpnet_proto::v1::{
    AgendaRequest, AgendaResponse, AppointmentResponse, BookRequest, BookResponse, CancelRequest,
    FreeSlotsRequest, FreeSlotsResponse, GetAppointmentDocumentRequest,
    GetAppointmentDocumentResponse, GetAppointmentRequest, HoldRequest, HoldResponse,
    ListPlansRequest, MarkRequest, MoveRequest, PlansResponse, SetPlansRequest,
};

use super::{Appointments, Booker, View};
use crate::auth::{Action, Authenticator};
use crate::error::NodeError;
use crate::peering::PeeringContext;

/// `AppointmentDesk` of one node.
#[derive(Debug, Clone)]
pub struct AppointmentDeskService {
    appointments: Arc<Appointments>,
    auth: Arc<Authenticator>,
}

impl AppointmentDeskService {
    /// A service over the node's appointments and authenticator.
    pub fn new(appointments: Arc<Appointments>, auth: Arc<Authenticator>) -> Self {
        Self { appointments, auth }
    }

    async fn answer(
        &self,
        view: View,
        contacts: bool,
    ) -> Result<Response<AppointmentResponse>, Status> {
        let docs = super::tables::documents(self.appointments.store(), &view.booking.id)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(AppointmentResponse {
            appointment: Some(self.appointments.to_proto(
                &view.booking,
                view.plan.as_deref(),
                contacts,
                docs,
            )),
        }))
    }
}

#[tonic::async_trait]
impl AppointmentDesk for AppointmentDeskService {
    async fn set_plans(
        &self,
        request: Request<SetPlansRequest>,
    ) -> Result<Response<PlansResponse>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        let req = request.into_inner();
        let plans = self
            .appointments
            .set_plans(&actor, req.plans, req.dry_run)
            .await?;
        Ok(Response::new(PlansResponse { plans }))
    }

    async fn list_plans(
        &self,
        request: Request<ListPlansRequest>,
    ) -> Result<Response<PlansResponse>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        actor.require(Action::Read)?;
        Ok(Response::new(PlansResponse {
            plans: self.appointments.list_plans().await?,
        }))
    }

    async fn free_slots(
        &self,
        request: Request<FreeSlotsRequest>,
    ) -> Result<Response<FreeSlotsResponse>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        actor.require(Action::Read)?;
        Ok(Response::new(
            self.appointments.free_slots(request.get_ref()).await?,
        ))
    }

    async fn hold(&self, request: Request<HoldRequest>) -> Result<Response<HoldResponse>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        actor.require(Action::Create)?;
        let r = request.into_inner();
        Ok(Response::new(
            self.appointments
                .hold(&r.office, &r.service, &r.start)
                .await?,
        ))
    }

    async fn book(&self, request: Request<BookRequest>) -> Result<Response<BookResponse>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        let mut answer = self
            .appointments
            .book(&Booker::Operator(actor), request.into_inner())
            .await?;
        // The manage link goes to the citizen by e-mail, not to operators.
        answer.manage_token.clear();
        Ok(Response::new(answer))
    }

    async fn r#move(
        &self,
        request: Request<MoveRequest>,
    ) -> Result<Response<AppointmentResponse>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        actor.require(Action::ChangeStatus)?;
        let r = request.into_inner();
        let view = self.appointments.by_id(&actor, &r.id).await?;
        let moved = self
            .appointments
            .move_to(&view, &r.start, &r.hold_id, true)
            .await?;
        self.answer(moved, actor.require(Action::ReadContact).is_ok())
            .await
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<AppointmentResponse>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        actor.require(Action::ChangeStatus)?;
        let r = request.into_inner();
        let view = self.appointments.by_id(&actor, &r.id).await?;
        let cancelled = self.appointments.cancel(&view, &r.reason, true).await?;
        self.answer(cancelled, actor.require(Action::ReadContact).is_ok())
            .await
    }

    async fn agenda(
        &self,
        request: Request<AgendaRequest>,
    ) -> Result<Response<AgendaResponse>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        let r = request.into_inner();
        Ok(Response::new(AgendaResponse {
            appointments: self.appointments.agenda(&actor, &r.office, &r.date).await?,
        }))
    }

    async fn mark(
        &self,
        request: Request<MarkRequest>,
    ) -> Result<Response<AppointmentResponse>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        let r = request.into_inner();
        let view = self.appointments.mark(&actor, &r.id, &r.outcome).await?;
        self.answer(view, actor.require(Action::ReadContact).is_ok())
            .await
    }

    async fn get_appointment(
        &self,
        request: Request<GetAppointmentRequest>,
    ) -> Result<Response<AppointmentResponse>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        let view = self
            .appointments
            .by_id(&actor, &request.get_ref().id)
            .await?;
        self.answer(view, actor.require(Action::ReadContact).is_ok())
            .await
    }

    async fn get_appointment_document(
        &self,
        request: Request<GetAppointmentDocumentRequest>,
    ) -> Result<Response<GetAppointmentDocumentResponse>, Status> {
        self.document(request).await
    }
}

impl AppointmentDeskService {
    async fn document(
        &self,
        request: Request<GetAppointmentDocumentRequest>,
    ) -> Result<Response<GetAppointmentDocumentResponse>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        actor.require(Action::ReadContact)?;
        let r = request.into_inner();
        let view = self.appointments.by_id(&actor, &r.id).await?;
        let docs = super::tables::documents(self.appointments.store(), &view.booking.id).await?;
        let Some(doc) = docs.into_iter().find(|d| d.sha256 == r.sha256) else {
            return Err(NodeError::NotFound(format!(
                "document {} of appointment {}",
                r.sha256, r.id
            ))
            .into());
        };
        let content =
            crate::attachments::read_content(self.appointments.store(), &doc.sha256).await?;
        Ok(Response::new(GetAppointmentDocumentResponse {
            document: Some(doc),
            content,
        }))
    }
}

/// `AppointmentPeer` of one node (behind the peer gate).
#[derive(Debug, Clone)]
pub struct AppointmentPeerService {
    appointments: Arc<Appointments>,
    peering: Arc<PeeringContext>,
}

impl AppointmentPeerService {
    /// A service over the node's appointments, gated like `Peering`.
    pub fn new(appointments: Arc<Appointments>, peering: Arc<PeeringContext>) -> Self {
        Self {
            appointments,
            peering,
        }
    }
}

#[tonic::async_trait]
impl AppointmentPeer for AppointmentPeerService {
    async fn peer_free_slots(
        &self,
        request: Request<FreeSlotsRequest>,
    ) -> Result<Response<FreeSlotsResponse>, Status> {
        self.peering.admitted(&request)?;
        let mut req = request.into_inner();
        // This node answers for its own calendars only.
        req.body.clear();
        Ok(Response::new(self.appointments.free_slots(&req).await?))
    }

    async fn peer_book(
        &self,
        request: Request<BookRequest>,
    ) -> Result<Response<BookResponse>, Status> {
        let from = self.peering.admitted(&request)?;
        let mut req = request.into_inner();
        if !req.consent_share {
            return Err(NodeError::invalid(
                "consent_share",
                "the citizen's consent to pass their data to this body is required",
            )
            .into());
        }
        req.body.clear();
        let mut answer = self.appointments.book(&Booker::Peer(from), req).await?;
        answer.manage_token.clear();
        Ok(Response::new(answer))
    }
}
