//! The `FaqDesk` gRPC service: an adapter. Each method authenticates the
//! caller with the Desk's bearer token, unpacks the request, calls
//! [`FaqBook`], and converts the result.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use urpnet_proto::v1::faq_desk_server::FaqDesk;
use urpnet_proto::v1::{
    FaqEntryResponse, FaqHit, FaqStatusRequest, FaqStatusResponse, GetFaqRequest, GetFaqResponse,
    ProposeFaqChangeRequest, ProposeFaqChangeResponse, PublishFaqRequest, RetireFaqRequest,
    ReviseFaqRequest, SearchFaqRequest, SearchFaqResponse, SetFaqOverrideRequest,
    SuggestFaqRequest,
};
use urpnet_shared_faq::search::Results;

use super::FaqBook;
use crate::auth::{Actor, Authenticator};

/// The FaqDesk service of one node.
#[derive(Debug, Clone)]
pub struct FaqDeskService {
    book: Arc<FaqBook>,
    auth: Arc<Authenticator>,
}

impl FaqDeskService {
    /// A service over the node's FAQ book and authenticator.
    pub fn new(book: Arc<FaqBook>, auth: Arc<Authenticator>) -> Self {
        Self { book, auth }
    }

    async fn actor<T>(&self, request: &Request<T>) -> Result<Actor, Status> {
        self.auth.actor_of(request).await
    }
}

fn hits(results: Results) -> SearchFaqResponse {
    SearchFaqResponse {
        total: results.total as u32,
        hits: results
            .hits
            .into_iter()
            .map(|h| FaqHit {
                key: h.key,
                score: h.score,
                question: h.question,
                snippet: h.snippet,
                owner: h.owner,
                version: h.version,
                categories: h.categories,
                overridden: h.overridden,
                retired: h.retired,
                question_highlighted: h.question_highlighted,
            })
            .collect(),
        services: Vec::new(),
    }
}

#[tonic::async_trait]
impl FaqDesk for FaqDeskService {
    #[tracing::instrument(skip_all)]
    async fn publish_faq(
        &self,
        request: Request<PublishFaqRequest>,
    ) -> Result<Response<FaqEntryResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let entry = self
            .book
            .publish(&actor, req.content, &req.request_id)
            .await?;
        Ok(Response::new(FaqEntryResponse { entry: Some(entry) }))
    }

    #[tracing::instrument(skip_all)]
    async fn revise_faq(
        &self,
        request: Request<ReviseFaqRequest>,
    ) -> Result<Response<FaqEntryResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let entry = self
            .book
            .revise(&actor, &req.key, req.base_version, req.content)
            .await?;
        Ok(Response::new(FaqEntryResponse { entry: Some(entry) }))
    }

    #[tracing::instrument(skip_all)]
    async fn retire_faq(
        &self,
        request: Request<RetireFaqRequest>,
    ) -> Result<Response<FaqEntryResponse>, Status> {
        let actor = self.actor(&request).await?;
        let entry = self.book.retire(&actor, &request.into_inner().key).await?;
        Ok(Response::new(FaqEntryResponse { entry: Some(entry) }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_faq(
        &self,
        request: Request<GetFaqRequest>,
    ) -> Result<Response<GetFaqResponse>, Status> {
        let actor = self.actor(&request).await?;
        let (entry, history) = self.book.get(&actor, &request.into_inner().key).await?;
        Ok(Response::new(GetFaqResponse {
            entry: Some(entry),
            history,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn search_faq(
        &self,
        request: Request<SearchFaqRequest>,
    ) -> Result<Response<SearchFaqResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let mut query = FaqBook::query(
            req.query,
            &req.language,
            &req.category,
            &req.territory,
            &req.valid_on,
            req.limit,
            10,
        )?;
        query.include_retired = req.include_retired;
        Ok(Response::new(hits(self.book.search(&actor, &query)?)))
    }

    #[tracing::instrument(skip_all)]
    async fn suggest_faq(
        &self,
        request: Request<SuggestFaqRequest>,
    ) -> Result<Response<SearchFaqResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let (results, text, territory) = self
            .book
            .suggest(&actor, &req.ticket, &req.text, &req.territory, req.limit)
            .await?;
        let mut response = hits(results);
        if let Some(charter) = self.book.charter() {
            let limit = if req.limit == 0 { 5 } else { req.limit };
            let words: String = text.chars().take(500).collect();
            response.services = charter.search(&words, "", &territory, "", limit, true)?.0;
        }
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn propose_faq_change(
        &self,
        request: Request<ProposeFaqChangeRequest>,
    ) -> Result<Response<ProposeFaqChangeResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let (ticket_id, reference) = self
            .book
            .propose(&actor, &req.key, &req.proposal, &req.istat_code)
            .await?;
        Ok(Response::new(ProposeFaqChangeResponse {
            ticket_id,
            reference,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_faq_override(
        &self,
        request: Request<SetFaqOverrideRequest>,
    ) -> Result<Response<FaqEntryResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let entry = self
            .book
            .set_override(&actor, &req.key, req.content, &req.reason, req.clear)
            .await?;
        Ok(Response::new(FaqEntryResponse { entry: Some(entry) }))
    }

    #[tracing::instrument(skip_all)]
    async fn faq_status(
        &self,
        request: Request<FaqStatusRequest>,
    ) -> Result<Response<FaqStatusResponse>, Status> {
        let actor = self.actor(&request).await?;
        actor.require(crate::auth::Action::Read)?;
        Ok(Response::new(self.book.status().await))
    }
}
