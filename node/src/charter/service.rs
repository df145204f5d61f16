//! The `CharterDesk` gRPC service: an adapter. Each method authenticates
//! the caller with the Desk's bearer token, checks its role, calls
//! [`CharterBook`], and converts the result.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use urpnet_proto::v1::charter_desk_server::CharterDesk;
use urpnet_proto::v1::{
    CharterHistoryRequest, CharterHistoryResponse, CharterSummary, ExplainRequest, ExplainResponse,
    GetCharterRequest, GetCharterResponse, ImportCharterRequest, ListChartersRequest,
    ListChartersResponse, SearchCharterRequest, SearchCharterResponse, WithdrawCharterRequest,
};

use super::CharterBook;
use crate::auth::{Action, Actor, Authenticator};
use crate::error::NodeError;

/// The CharterDesk service of one node.
#[derive(Debug, Clone)]
pub struct CharterDeskService {
    book: Arc<CharterBook>,
    auth: Arc<Authenticator>,
}

impl CharterDeskService {
    /// A service over the node's charter book and authenticator.
    pub fn new(book: Arc<CharterBook>, auth: Arc<Authenticator>) -> Self {
        Self { book, auth }
    }

    async fn reader<T>(&self, request: &Request<T>) -> Result<Actor, Status> {
        let actor = self.auth.actor_of(request).await?;
        actor.require(Action::Read)?;
        Ok(actor)
    }
}

#[tonic::async_trait]
impl CharterDesk for CharterDeskService {
    async fn import_charter(
        &self,
        request: Request<ImportCharterRequest>,
    ) -> Result<Response<CharterSummary>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        let charter = request
            .into_inner()
            .charter
            .ok_or_else(|| NodeError::invalid("charter", "is required"))?;
        Ok(Response::new(self.book.import(&actor, charter).await?))
    }

    async fn withdraw_charter(
        &self,
        request: Request<WithdrawCharterRequest>,
    ) -> Result<Response<CharterSummary>, Status> {
        let actor = self.auth.actor_of(&request).await?;
        let req = request.into_inner();
        Ok(Response::new(
            self.book.withdraw(&actor, &req.reason).await?,
        ))
    }

    async fn get_charter(
        &self,
        request: Request<GetCharterRequest>,
    ) -> Result<Response<GetCharterResponse>, Status> {
        self.reader(&request).await?;
        let req = request.into_inner();
        let (summary, charter) = self.book.get(&req.body, &req.as_of).await?;
        Ok(Response::new(GetCharterResponse {
            summary: Some(summary),
            charter: Some(charter),
        }))
    }

    async fn charter_history(
        &self,
        request: Request<CharterHistoryRequest>,
    ) -> Result<Response<CharterHistoryResponse>, Status> {
        self.reader(&request).await?;
        let req = request.into_inner();
        Ok(Response::new(CharterHistoryResponse {
            versions: self.book.history(&req.body).await?,
        }))
    }

    async fn list_charters(
        &self,
        request: Request<ListChartersRequest>,
    ) -> Result<Response<ListChartersResponse>, Status> {
        self.reader(&request).await?;
        Ok(Response::new(ListChartersResponse {
            charters: self.book.list().await,
        }))
    }

    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        self.reader(&request).await?;
        let req = request.into_inner();
        Ok(Response::new(
            self.book
                .explain(&req.body, &req.service, req.at_ms)
                .await?,
        ))
    }

    async fn search_charter(
        &self,
        request: Request<SearchCharterRequest>,
    ) -> Result<Response<SearchCharterResponse>, Status> {
        self.reader(&request).await?;
        let req = request.into_inner();
        let (hits, total) = self.book.search(
            &req.query,
            &req.body,
            &req.territory,
            &req.category,
            req.limit,
            false,
        )?;
        Ok(Response::new(SearchCharterResponse {
            total: total as u32,
            hits,
        }))
    }
}
