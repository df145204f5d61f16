//! Server plumbing shared by every daemon: structured logs, the Prometheus
//! recorder and its HTTP endpoint, the gRPC metrics layer, and the shutdown
//! signal.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;
use tower_service::Service;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global tracing subscriber. The filter comes from `RUST_LOG`
/// when set, else from `default_filter` (e.g. `info`). Calling it twice is
/// harmless (the second call does nothing).
pub fn init_logs(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Latency buckets (seconds) used by every urpnet histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's Prometheus recorder, installed on first use. Metrics are
/// process-wide: several in-process daemons (as in tests) share one registry.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness): then ours
        // only renders what it records, which is nothing; that is acceptable.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until
/// `shutdown` is cancelled.
///
/// # Errors
/// When the HTTP server fails.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::routing::get;
    let handle = prometheus();
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let body = handle.render();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Tower layer that counts gRPC requests and times them:
/// `urpnet_grpc_requests_total{server, rpc, code}` and
/// `urpnet_grpc_request_duration_seconds{server, rpc}`.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    server: &'static str,
}

impl GrpcMetricsLayer {
    /// A layer labelling its metrics with `server` (e.g. `node`).
    pub fn new(server: &'static str) -> Self {
        prometheus();
        Self { server }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            server: self.server,
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    server: &'static str,
}

impl<S, B, R> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let rpc = rpc_label(req.uri().path());
        let server = self.server;
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            // Errors answered before any message (the common case for unary
            // failures) carry grpc-status in the headers; a successful unary
            // answer carries it in trailers, which this layer does not wait for.
            let code = match &result {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(|c| format!("{:?}", tonic::Code::from(c)))
                    .unwrap_or_else(|| "Ok".to_string()),
                Err(_) => "TransportError".to_string(),
            };
            metrics::counter!("urpnet_grpc_requests_total", "server" => server, "rpc" => rpc, "code" => code)
                .increment(1);
            metrics::histogram!("urpnet_grpc_request_duration_seconds", "server" => server, "rpc" => rpc)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// The metric label of a request path: the method's name when the path is
/// one of the methods urpnet, health and reflection define, `unknown`
/// otherwise — labels never come from what a caller typed, so random paths
/// cannot grow the number of series (docs/security.md, T3).
pub fn rpc_label(path: &str) -> &'static str {
    static KNOWN: OnceLock<std::collections::HashMap<String, &'static str>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        use prost::Message as _;
        let mut known = std::collections::HashMap::new();
        for set in [
            crate::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        let path =
                            format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        let name: &'static str =
                            Box::leak(method.name().to_string().into_boxed_str());
                        known.insert(path, name);
                    }
                }
            }
        }
        for version in ["v1", "v1alpha"] {
            known.insert(
                format!("/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"),
                "ServerReflectionInfo",
            );
        }
        known
    });
    known.get(path).copied().unwrap_or("unknown")
}

/// Streams one HTTP/2 connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 128;
/// Requests one connection may have in service at once (the rest wait).
pub const CONCURRENCY_PER_CONNECTION: usize = 256;
/// Longest a unary call may take before the server answers
/// `DEADLINE_EXCEEDED` (a stream's messages are not bounded by it).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A tonic server with the limits every urpnet port shares
/// (docs/security.md, T3): bounded streams and in-flight requests per
/// connection, a request timeout, HTTP/2 keepalive pings that close dead
/// connections, TCP keepalive, and a cap on header size.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .tcp_keepalive(Some(std::time::Duration::from_secs(60)))
        .http2_max_header_list_size(Some(16 * 1024))
}

/// gRPC reflection services (v1 and v1alpha: many clients still speak only
/// v1alpha) listing `services` (full names, those one port serves) and gRPC
/// health.
///
/// # Errors
/// If the embedded descriptor sets do not decode (a build defect).
pub fn reflection_services(
    services: &[&str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    // Only the services this port serves, plus health: a client of one
    // port never sees another port's API in the list.
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for s in services {
            b = b.with_service_name(*s);
        }
        b
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_labels_come_only_from_known_methods() {
        assert_eq!(rpc_label("/urpnet.v1.Peering/Deliver"), "Deliver");
        assert_eq!(rpc_label("/urpnet.v1.Desk/CreateTicket"), "CreateTicket");
        assert_eq!(rpc_label("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(
            rpc_label("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            "ServerReflectionInfo"
        );
        for random in [
            "/urpnet.v1.Peering/Deliver2",
            "/x/Deliver",
            "/",
            "",
            "/urpnet.v1.Desk/CreateTicket/extra",
        ] {
            assert_eq!(rpc_label(random), "unknown", "{random}");
        }
    }
}
