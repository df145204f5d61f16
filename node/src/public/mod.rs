//! The node's public HTTP side (DESIGN.md §11): Open311 GeoReport v2 for
//! civic apps ([`open311`]), the citizen's tracking page ([`track`]), and
//! the photos they sent, meant to sit behind the body's reverse proxy.
//!
//! Handlers are adapters over the desk's casework: a report filed here is
//! the same ticket, with the same validation, idempotency and events, as one
//! filed through the Desk. Around them, in order: the Prometheus metrics by
//! route and status, a per-client rate limit (its `api_key`, or its address)
//! answering 429 with `Retry-After`, CORS, the body limit (413 before the
//! body is read whole), a timeout, and a last layer that writes the
//! framework's own refusals (413, 408, 404, 405) in Open311's error format.

pub mod appointments;
pub mod booking;
pub mod charter;
pub mod faq_pages;
pub mod format;
pub mod open311;
pub mod photo;
pub mod report;
pub mod track;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use urpnet_proto::limits::PerIdentity;

use crate::auth::Authenticator;
use crate::casework::TicketDesk;
use crate::config::NodeConfig;
use crate::registry_link::Federation;
use format::Format;

/// What the public handlers share.
#[derive(Debug)]
pub struct PublicState {
    /// The node's configuration.
    pub config: NodeConfig,
    /// The desk's casework, which every handler calls.
    pub desk: Arc<TicketDesk>,
    /// Resolves `api_key`s (integration tokens).
    pub auth: Arc<Authenticator>,
    /// The member list, for the responsible body's name.
    pub federation: Arc<Federation>,
    /// The charters held here.
    pub charter: Arc<crate::charter::CharterBook>,
    /// Booking at this body's offices.
    pub appointments: Option<Arc<crate::appointments::Appointments>>,
    /// The FAQ set, for the citizens' FAQ pages.
    pub faq: Option<Arc<crate::faq::FaqBook>>,
    /// A token bucket per client.
    pub limiter: PerIdentity,
    /// Where citizens reach this listener (no trailing slash).
    pub base_url: String,
    /// The Open311 jurisdiction this node answers for.
    pub jurisdiction: String,
}

impl PublicState {
    /// The state of a node's public side, its links built from `base_url`
    /// or, without one, from the address it listens on.
    pub fn new(
        config: NodeConfig,
        desk: Arc<TicketDesk>,
        auth: Arc<Authenticator>,
        federation: Arc<Federation>,
        charter: Arc<crate::charter::CharterBook>,
        listening: Option<SocketAddr>,
    ) -> Self {
        let base_url = config.public_base_url(listening);
        let jurisdiction = if config.public.jurisdiction_id.is_empty() {
            config.node.id.to_string()
        } else {
            config.public.jurisdiction_id.clone()
        };
        let limiter = PerIdentity::new(
            "public",
            config.public.rate_per_second,
            config.public.rate_burst,
        );
        Self {
            config,
            desk,
            auth,
            federation,
            charter,
            appointments: None,
            faq: None,
            limiter,
            base_url,
            jurisdiction,
        }
    }

    /// Serves the FAQ pages too.
    #[must_use]
    pub fn with_faq(mut self, faq: Arc<crate::faq::FaqBook>) -> Self {
        self.faq = Some(faq);
        self
    }

    /// Serves booking too.
    #[must_use]
    pub fn with_appointments(mut self, a: Arc<crate::appointments::Appointments>) -> Self {
        self.appointments = Some(a);
        self
    }

    /// The display name of a body: this node's own, a member's, or its id.
    pub fn body_name(&self, node: &str) -> String {
        self.federation
            .body_name(node, self.config.node.id.as_str(), &self.config.node.name)
    }

    /// Takes one request from `client`'s bucket.
    ///
    /// # Errors
    /// A 429 answer with `Retry-After` when the bucket is empty.
    #[allow(clippy::result_large_err)]
    pub fn charge(&self, client: &str, format: Format) -> Result<(), Response> {
        self.limiter.check(client).map_err(|wait| {
            let mut response = format::error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "too many requests from this client; retry in {} s",
                    wait.as_secs().max(1)
                ),
                format,
            );
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        })
    }

    /// Takes one request from the bucket of a client without an
    /// `api_key` (its address), answering JSON errors.
    ///
    /// # Errors
    /// A 429 answer with `Retry-After` when the bucket is empty.
    #[allow(clippy::result_large_err)]
    pub fn admit(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<(), Response> {
        self.charge(
            &client_of(self, headers, ConnectInfo(peer), None),
            Format::Json,
        )
    }

    /// The client's address: the connection's, or the last hop of
    /// `X-Forwarded-For` when the configuration trusts the proxy.
    pub fn client_ip(&self, headers: &HeaderMap, peer: SocketAddr) -> String {
        if self.config.public.trust_forwarded_for
            && let Some(last) = headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim)
                .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
        {
            return last.to_string();
        }
        peer.ip().to_string()
    }
}

/// The router of the public side.
pub fn router(state: Arc<PublicState>) -> Router {
    let max_body = state.config.public.max_body_bytes;
    let cors = cors_layer(&state.config.public.cors_origins);
    Router::new()
        .merge(open311::routes())
        .merge(track::routes())
        .merge(charter::routes())
        .merge(appointments::routes())
        .merge(booking::routes())
        .merge(report::routes())
        .merge(faq_pages::routes())
        .fallback(not_found)
        .layer(middleware::from_fn(booking::language))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.config.public.timeout,
        ))
        .layer(middleware::from_fn(open311_refusals))
        .layer(cors)
        .layer(middleware::from_fn(http_metrics))
        .with_state(state)
}

fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let layer = CorsLayer::new()
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            "idempotency-key".parse().expect("a header name"),
        ]);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

async fn not_found(request: Request) -> Response {
    let format = format_of_path(request.uri().path());
    format::error(StatusCode::NOT_FOUND, "no such resource", format)
}

/// The format a path asks for (`.json` or XML).
pub fn format_of_path(path: &str) -> Format {
    if path.ends_with(".json") {
        Format::Json
    } else {
        Format::Xml
    }
}

/// Writes refusals made by the layers (body too large, timeout, wrong
/// method) in Open311's error format, so a client parses every error alike.
async fn open311_refusals(request: Request, next: Next) -> Response {
    let format = format_of_path(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    let ours = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.starts_with("text/xml")
                || t.starts_with("application/json")
                || t.starts_with("text/html")
        });
    if ours || status.is_success() || status.is_redirection() {
        return response;
    }
    let description = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is larger than this node accepts (public.max_body_bytes)"
        }
        StatusCode::REQUEST_TIMEOUT => "the request took too long",
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this resource",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported content type",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    format::error(status, description, format)
}

/// Counts requests and their duration by route and status.
async fn http_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("urpnet_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.clone())
        .increment(1);
    metrics::histogram!("urpnet_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    if response.status().is_server_error() {
        tracing::warn!(status = %status, "public request failed");
    }
    response
}

/// Serves the public side on `listener` until `shutdown`.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    state: Arc<PublicState>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, base_url = %state.base_url, "public HTTP listening (Open311, tracking)");
    // Idle clients' buckets are forgotten, so the limiter's memory follows
    // the clients of the last minutes, not every address ever seen.
    let limiter = state.limiter.clone();
    let forget = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = forget.cancelled() => break,
                _ = tick.tick() => limiter.forget_idle(),
            }
        }
    });
    let tls = if state.config.public.tls_cert_file.as_os_str().is_empty() {
        None
    } else {
        Some(tls_config(&state.config)?)
    };
    let app = router(state);
    match tls {
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        }
        Some(config) => {
            let listener = TlsListener::new(listener, config, shutdown.clone())?;
            // Each connection's router knows its client's address, as the
            // plain listener's connect info gives it.
            let make = tower::service_fn(
                move |incoming: axum::serve::IncomingStream<'_, TlsListener>| {
                    let client = ConnectInfo(*incoming.remote_addr());
                    let app = app.clone().layer(axum::Extension(client));
                    async move { Ok::<_, std::convert::Infallible>(app) }
                },
            );
            axum::serve(listener, make)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    }
}

/// The server configuration of `[public] tls_cert_file` / `tls_key_file`:
/// no client certificates, HTTP/1.1.
fn tls_config(config: &NodeConfig) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| invalid(format!("{}: {e}", path.display())))
    };
    let certs = urpnet_proto::tls::certs_from_pem(&read(&config.public.tls_cert_file)?)
        .map_err(|e| invalid(format!("public.tls_cert_file: {e}")))?;
    let key = {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::PrivateKeyDer::from_pem_slice(
            read(&config.public.tls_key_file)?.as_bytes(),
        )
        .map_err(|e| invalid(format!("public.tls_key_file: {e}")))?
    };
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(format!("public.tls_cert_file and tls_key_file: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// Most TLS handshakes in progress at once; the rest wait in the kernel.
const MAX_HANDSHAKES: usize = 128;

/// Accepts TCP connections and hands axum those that complete a TLS
/// handshake (each in its own task, with a deadline, so a slow client holds
/// up nobody).
struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: SocketAddr,
}

impl TlsListener {
    fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = tokio::sync::mpsc::channel(256);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    () = shutdown.cancelled() => return,
                    p = handshakes.clone().acquire_owned() => p.expect("never closed"),
                };
                let (tcp, remote) = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            tracing::warn!(%error, "public accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, remote)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%remote, %error, "public TLS handshake failed");
                            metrics::counter!("urpnet_tls_refused_total", "server" => "public", "reason" => "handshake").increment(1);
                        }
                        Err(_) => {
                            metrics::counter!("urpnet_tls_refused_total", "server" => "public", "reason" => "handshake_timeout").increment(1);
                        }
                    }
                });
            }
        });
        Ok(Self { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(pair) => pair,
            // The accept task ended (shutdown): wait for axum to stop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The client key of a request without an `api_key` in its body: the
/// query's `api_key`, or the address.
pub(crate) fn client_of(
    state: &PublicState,
    headers: &HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    api_key: Option<&str>,
) -> String {
    match api_key.filter(|k| !k.is_empty()) {
        Some(key) => format!("key:{}", crate::auth::token_hash(key)),
        None => format!("ip:{}", state.client_ip(headers, peer)),
    }
}

/// `State` for handlers.
pub(crate) type Shared = State<Arc<PublicState>>;
