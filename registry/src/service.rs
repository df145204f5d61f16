//! gRPC adapters for `Registry` (nodes) and `RegistryAdmin` (coordinators),
//! the gate in front of both (identity from the client certificate,
//! membership status, role), and the per-identity rate limit applied before
//! either.

use std::sync::Arc;
use std::time::Duration;

use tonic::service::Interceptor;
use tonic::{Request, Response, Status};
use urpnet_proto::ids::NodeId;
use urpnet_proto::limits::PerIdentity;
use urpnet_proto::taxonomy::to_toml;
use urpnet_proto::tls::{Identity, PeerInfo};
use urpnet_proto::v1::registry_admin_server::RegistryAdmin;
use urpnet_proto::v1::registry_server::Registry as RegistryRpc;
use urpnet_proto::v1::{
    EnrolRequest, EnrolResponse, ExportTaxonomyRequest, ExportTaxonomyResponse, GetMemberRequest,
    GetMembersRequest, GetMembersResponse, GetTaxonomyRequest, GetTaxonomyResponse,
    HeartbeatRequest, HeartbeatResponse, ImportTaxonomyRequest, IssuedCertificate,
    ListMembersRequest, ListMembersResponse, MemberResponse, MemberStatus, OverflowRequest,
    OverflowResponse, RegisterRequest, RegisterResponse, RenewCertificateRequest,
    RenewCertificateResponse, RevokeCoordinatorRequest, RevokeCoordinatorResponse, RouteRequest,
    RouteResponse, SetStatusRequest,
};

use crate::error::RegistryError;
use crate::registry::Registry;

/// The caller of a request, put in its extensions by [`Gate`].
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

/// Which service a gate guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// `Registry`: active members and coordinators.
    Registry,
    /// `RegistryAdmin`: coordinators only.
    Admin,
}

/// The per-identity rate limiters, shared by both services: one quota for
/// members, a larger one for coordinators.
#[derive(Debug, Clone)]
pub struct Limiter {
    members: PerIdentity,
    coordinators: PerIdentity,
}

/// Limiters from the `[limits]` section.
pub fn limiter(limits: &crate::config::LimitsSection) -> Limiter {
    Limiter {
        members: PerIdentity::new("registry", limits.requests_per_second, limits.burst),
        coordinators: PerIdentity::new(
            "registry",
            limits.coordinator_requests_per_second,
            limits.coordinator_burst,
        ),
    }
}

/// The longest an over-quota request is held before its refusal: a client
/// retrying in a tight loop is slowed to the pace of its quota instead of
/// making the registry refuse thousands of requests a second.
pub const MAX_REFUSAL_DELAY: Duration = Duration::from_millis(500);

/// Tower layer applying the per-identity quotas before anything else runs
/// (no decoding, no gate): over its quota, a request waits until the quota
/// would allow it (at most [`MAX_REFUSAL_DELAY`]) and is then answered
/// `RESOURCE_EXHAUSTED` with a `retry-after-ms` trailer. Health and
/// reflection, and callers without an identity (refused by the gate), are
/// not counted.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Limiter,
}

impl RateLimitLayer {
    /// A layer enforcing `limiter`.
    pub fn new(limiter: Limiter) -> Self {
        Self { limiter }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] wraps around the server.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Limiter,
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for RateLimit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let peer = req.extensions().get::<PeerInfo>();
        let identity = peer
            .and_then(|p| p.cert.as_ref())
            .map(|c| c.identity.clone());
        let exempt = req.uri().path().starts_with("/grpc.");
        if let (Some(identity), false) = (identity, exempt) {
            let limiter = match identity {
                Identity::Coordinator(_) => &self.limiter.coordinators,
                _ => &self.limiter.members,
            };
            let key = identity.uri();
            if let Err(wait) = limiter.check(&key) {
                let remote = peer.map(|p| p.remote.to_string()).unwrap_or_default();
                return Box::pin(async move {
                    tokio::time::sleep(wait.min(MAX_REFUSAL_DELAY)).await;
                    tracing::debug!(%remote, identity = %key, "rate limited");
                    metrics::counter!("urpnet_registry_refused_total", "reason" => "rate_limited")
                        .increment(1);
                    let mut status = Status::resource_exhausted(format!(
                        "rate limit for {key} exceeded; retry in {} ms",
                        wait.as_millis().max(1)
                    ));
                    if let Ok(v) = wait.as_millis().max(1).to_string().parse() {
                        status.metadata_mut().insert("retry-after-ms", v);
                    }
                    Ok(status.into_http())
                });
            }
        }
        Box::pin(self.inner.call(req))
    }
}

/// Checks every request before it is decoded.
#[derive(Clone)]
pub struct Gate {
    registry: Arc<Registry>,
    guarded: Guarded,
}

impl Gate {
    /// A gate for one service.
    pub fn new(registry: Arc<Registry>, guarded: Guarded) -> Self {
        Self { registry, guarded }
    }

    fn refuse(&self, peer: Option<&PeerInfo>, reason: &'static str, status: Status) -> Status {
        let remote = peer.map(|p| p.remote.to_string()).unwrap_or_default();
        let identity = peer
            .and_then(|p| p.cert.as_ref())
            .map(|c| c.identity.uri())
            .unwrap_or_default();
        tracing::warn!(%remote, %identity, reason, service = ?self.guarded, message = status.message(), "request refused");
        metrics::counter!("urpnet_registry_refused_total", "reason" => reason).increment(1);
        status
    }
}

impl Interceptor for Gate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let peer = urpnet_proto::tls::peer_of(&req).cloned();
        let Some(cert) = peer.as_ref().and_then(|p| p.cert.clone()) else {
            return Err(self.refuse(
                peer.as_ref(),
                "no_certificate",
                Status::unauthenticated(
                    "a client certificate issued by the federation CA, carrying one urn:urpnet identity, is required",
                ),
            ));
        };
        match (&cert.identity, self.guarded) {
            (Identity::Coordinator(_), _) if self.registry.is_revoked(&cert.identity) => {
                return Err(self.refuse(
                    peer.as_ref(),
                    "coordinator_revoked",
                    Status::permission_denied(format!(
                        "the certificates of {} are revoked",
                        cert.identity
                    )),
                ));
            }
            (Identity::Coordinator(_), _) => {}
            (Identity::Node(_), Guarded::Admin) => {
                return Err(self.refuse(
                    peer.as_ref(),
                    "node_calls_admin",
                    Status::permission_denied(
                        "RegistryAdmin is for coordinators' certificates; a node certificate may call Registry only",
                    ),
                ));
            }
            (Identity::Node(id), Guarded::Registry) => {
                match self.registry.membership().status(id.as_str()) {
                    Some((MemberStatus::Active, _)) => {}
                    Some((status, reason)) => {
                        let word = if status == MemberStatus::Revoked {
                            "revoked"
                        } else {
                            "suspended"
                        };
                        return Err(self.refuse(
                            peer.as_ref(),
                            if status == MemberStatus::Revoked {
                                "revoked"
                            } else {
                                "suspended"
                            },
                            Status::permission_denied(format!(
                                "member `{id}` is {word}{}",
                                if reason.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {reason}")
                                }
                            )),
                        ));
                    }
                    None => {
                        return Err(self.refuse(
                            peer.as_ref(),
                            "not_a_member",
                            Status::permission_denied(format!(
                                "`{id}` is not enrolled in this registry"
                            )),
                        ));
                    }
                }
            }
            (Identity::Registry(_), _) => {
                return Err(self.refuse(
                    peer.as_ref(),
                    "registry_identity",
                    Status::permission_denied("registry certificates cannot call this service"),
                ));
            }
        }
        req.extensions_mut().insert(Caller(cert.identity));
        Ok(req)
    }
}

pub(crate) fn caller<T>(req: &Request<T>) -> Result<Identity, Status> {
    req.extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| Status::unauthenticated("no verified identity"))
}

fn node_caller<T>(req: &Request<T>, claimed: &str, what: &str) -> Result<NodeId, Status> {
    let identity = caller(req)?;
    let Identity::Node(id) = identity else {
        return Err(Status::permission_denied(format!(
            "only a member's node may {what}"
        )));
    };
    if !claimed.is_empty() && claimed != id.as_str() {
        metrics::counter!("urpnet_registry_refused_total", "reason" => "identity_mismatch")
            .increment(1);
        tracing::warn!(certificate = %id, claimed, what, "request for another id refused");
        return Err(Status::permission_denied(format!(
            "the certificate identifies `{id}`; it cannot {what} for `{claimed}`"
        )));
    }
    Ok(id)
}

fn issued(info: &urpnet_proto::tls::CertInfo) -> IssuedCertificate {
    IssuedCertificate {
        serial: info.serial.clone(),
        subject: info.identity.uri(),
        not_before_ms: info.not_before_ms,
        not_after_ms: info.not_after_ms,
    }
}

/// The `Registry` service.
#[derive(Debug, Clone)]
pub struct RegistryService {
    registry: Arc<Registry>,
}

impl RegistryService {
    /// Serves `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

#[tonic::async_trait]
impl RegistryRpc for RegistryService {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let id = node_caller(&req, &req.get_ref().node_id, "register")?;
        let member = self.registry.register(&id, &req.get_ref().endpoint).await?;
        Ok(Response::new(RegisterResponse {
            member: Some(member),
            heartbeat_interval_ms: interval_ms(self.registry.membership().interval()),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let id = node_caller(&req, &req.get_ref().node_id, "heartbeat")?;
        let load = req.into_inner().load.unwrap_or_default();
        self.registry.heartbeat(&id, load)?;
        Ok(Response::new(HeartbeatResponse {
            membership_version: self.registry.membership().version(),
            taxonomy_version: self.registry.taxonomy().version(),
            heartbeat_interval_ms: interval_ms(self.registry.membership().interval()),
        }))
    }

    async fn get_members(
        &self,
        _req: Request<GetMembersRequest>,
    ) -> Result<Response<GetMembersResponse>, Status> {
        let (members, membership_version) = self.registry.membership().list();
        Ok(Response::new(GetMembersResponse {
            membership_version,
            members,
        }))
    }

    async fn get_taxonomy(
        &self,
        _req: Request<GetTaxonomyRequest>,
    ) -> Result<Response<GetTaxonomyResponse>, Status> {
        Ok(Response::new(GetTaxonomyResponse {
            taxonomy: Some(self.registry.taxonomy().to_proto()),
        }))
    }

    async fn route(&self, req: Request<RouteRequest>) -> Result<Response<RouteResponse>, Status> {
        let req = req.into_inner();
        let taxonomy = self.registry.taxonomy();
        let answer = self
            .registry
            .membership()
            .route(&taxonomy, &req.category, &req.territory)?;
        metrics::counter!("urpnet_registry_routes_total", "fallback" => if answer.fallback { "yes" } else { "no" }).increment(1);
        Ok(Response::new(answer))
    }

    async fn overflow(
        &self,
        req: Request<OverflowRequest>,
    ) -> Result<Response<OverflowResponse>, Status> {
        let identity = caller(&req)?;
        let req = req.into_inner();
        let from = match &identity {
            Identity::Node(id) => {
                if !req.from.is_empty() && req.from != id.as_str() {
                    return Err(Status::permission_denied(format!(
                        "the certificate identifies `{id}`; it cannot ask overflow for `{}`",
                        req.from
                    )));
                }
                id.to_string()
            }
            _ => {
                if req.from.is_empty() {
                    return Err(
                        RegistryError::invalid("from", "is required for a coordinator").into(),
                    );
                }
                req.from.clone()
            }
        };
        let limit = match req.limit {
            0 => 5,
            n if n > 50 => {
                return Err(RegistryError::invalid("limit", "must be at most 50").into());
            }
            n => n as usize,
        };
        let taxonomy = self.registry.taxonomy();
        let answer = self.registry.membership().overflow(
            &taxonomy,
            &req.category,
            &from,
            limit,
            &mut rand::thread_rng(),
        )?;
        Ok(Response::new(answer))
    }

    async fn renew_certificate(
        &self,
        req: Request<RenewCertificateRequest>,
    ) -> Result<Response<RenewCertificateResponse>, Status> {
        let identity = caller(&req)?;
        let issued_cert = self
            .registry
            .renew(&identity, &req.get_ref().csr_pem)
            .await?;
        Ok(Response::new(RenewCertificateResponse {
            certificate_pem: issued_cert.certificate_pem.clone(),
            ca_pem: self.registry.ca_pem().to_owned(),
            issued: Some(issued(&issued_cert.info)),
        }))
    }
}

fn interval_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The `RegistryAdmin` service.
#[derive(Debug, Clone)]
pub struct AdminService {
    registry: Arc<Registry>,
}

impl AdminService {
    /// Serves `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    async fn member_response(&self, id: &str) -> Result<MemberResponse, Status> {
        let member = self
            .registry
            .membership()
            .get(id)
            .ok_or_else(|| RegistryError::NotFound(format!("member `{id}` is not enrolled")))?;
        let subject = Identity::Node(
            NodeId::new(id).map_err(|e| RegistryError::invalid("id", e.to_string()))?,
        )
        .uri();
        let certificates = self.registry.store().certificates(&subject).await?;
        Ok(MemberResponse {
            member: Some(member),
            certificates,
        })
    }
}

#[tonic::async_trait]
impl RegistryAdmin for AdminService {
    async fn enrol(&self, req: Request<EnrolRequest>) -> Result<Response<EnrolResponse>, Status> {
        let by = caller(&req)?;
        tracing::info!(by = %by, id = %req.get_ref().id, "enrolment requested");
        let (member, cert) = self.registry.enrol(req.into_inner()).await?;
        Ok(Response::new(EnrolResponse {
            member: Some(member),
            certificate_pem: cert.certificate_pem.clone(),
            ca_pem: self.registry.ca_pem().to_owned(),
            issued: Some(issued(&cert.info)),
        }))
    }

    async fn set_status(
        &self,
        req: Request<SetStatusRequest>,
    ) -> Result<Response<MemberResponse>, Status> {
        let by = caller(&req)?;
        let req = req.into_inner();
        self.registry
            .set_status(&req.id, req.status, &req.reason, &by)
            .await?;
        Ok(Response::new(self.member_response(&req.id).await?))
    }

    async fn list_members(
        &self,
        _req: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        let (members, membership_version) = self.registry.membership().list();
        Ok(Response::new(ListMembersResponse {
            membership_version,
            members,
        }))
    }

    async fn get_member(
        &self,
        req: Request<GetMemberRequest>,
    ) -> Result<Response<MemberResponse>, Status> {
        Ok(Response::new(
            self.member_response(&req.get_ref().id).await?,
        ))
    }

    async fn import_taxonomy(
        &self,
        req: Request<ImportTaxonomyRequest>,
    ) -> Result<Response<GetTaxonomyResponse>, Status> {
        let by = caller(&req)?;
        let taxonomy = self
            .registry
            .import_taxonomy(&req.get_ref().toml, &by)
            .await?;
        Ok(Response::new(GetTaxonomyResponse {
            taxonomy: Some(taxonomy.to_proto()),
        }))
    }

    async fn revoke_coordinator(
        &self,
        req: Request<RevokeCoordinatorRequest>,
    ) -> Result<Response<RevokeCoordinatorResponse>, Status> {
        let by = caller(&req)?;
        let req = req.into_inner();
        let identity = self
            .registry
            .revoke_coordinator(&req.name, &req.reason, &by)
            .await?;
        Ok(Response::new(RevokeCoordinatorResponse {
            identity: identity.uri(),
        }))
    }

    async fn export_taxonomy(
        &self,
        _req: Request<ExportTaxonomyRequest>,
    ) -> Result<Response<ExportTaxonomyResponse>, Status> {
        let taxonomy = self.registry.taxonomy();
        Ok(Response::new(ExportTaxonomyResponse {
            toml: to_toml(&taxonomy.to_proto()),
            version: taxonomy.version(),
        }))
    }
}
