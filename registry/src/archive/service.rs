//! gRPC adapters of the archive: `Archive` for members (behind the same gate
//! as `Registry`) and `ArchiveAdmin` for coordinators (behind the gate of
//! `RegistryAdmin`).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use urpnet_proto::tls::Identity;
use urpnet_proto::v1::archive_admin_server::ArchiveAdmin;
use urpnet_proto::v1::archive_server::Archive as ArchiveRpc;
use urpnet_proto::v1::{
    ArchiveQueryRequest, ArchiveQueryResponse, ArchiveStatsRequest, ArchiveStatsResponse,
    ArchiveTrendsRequest, ArchiveTrendsResponse, PushArchiveRequest, PushArchiveResponse,
};

use super::Archive;
use crate::error::RegistryError;
use crate::registry::Registry;
use crate::service::caller;

/// The `Archive` service.
#[derive(Debug, Clone)]
pub struct ArchiveService {
    registry: Arc<Registry>,
    archive: Arc<Archive>,
}

impl ArchiveService {
    /// Serves `archive` to the members of `registry`.
    pub fn new(registry: Arc<Registry>, archive: Arc<Archive>) -> Self {
        Self { registry, archive }
    }
}

#[tonic::async_trait]
impl ArchiveRpc for ArchiveService {
    async fn push_archive(
        &self,
        req: Request<PushArchiveRequest>,
    ) -> Result<Response<PushArchiveResponse>, Status> {
        let Identity::Node(id) = caller(&req)? else {
            return Err(Status::permission_denied(
                "only a member may push archive records",
            ));
        };
        let member = self
            .registry
            .membership()
            .get(id.as_str())
            .ok_or_else(|| Status::permission_denied(format!("`{id}` is not enrolled")))?;
        let Some(batch) = req.into_inner().batch else {
            return Err(RegistryError::invalid("batch", "is required").into());
        };
        Ok(Response::new(self.archive.push(&member, &batch).await?))
    }
}

/// The `ArchiveAdmin` service.
#[derive(Debug, Clone)]
pub struct ArchiveAdminService {
    archive: Arc<Archive>,
}

impl ArchiveAdminService {
    /// Serves `archive` to coordinators.
    pub fn new(archive: Arc<Archive>) -> Self {
        Self { archive }
    }
}

#[tonic::async_trait]
impl ArchiveAdmin for ArchiveAdminService {
    async fn archive_stats(
        &self,
        _req: Request<ArchiveStatsRequest>,
    ) -> Result<Response<ArchiveStatsResponse>, Status> {
        Ok(Response::new(self.archive.stats().await?))
    }

    async fn query_archive(
        &self,
        req: Request<ArchiveQueryRequest>,
    ) -> Result<Response<ArchiveQueryResponse>, Status> {
        Ok(Response::new(self.archive.query(req.get_ref()).await?))
    }

    async fn archive_trends(
        &self,
        req: Request<ArchiveTrendsRequest>,
    ) -> Result<Response<ArchiveTrendsResponse>, Status> {
        Ok(Response::new(self.archive.trends(req.get_ref()).await?))
    }
}
