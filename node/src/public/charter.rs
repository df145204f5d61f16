//! The charter on the public side (DESIGN.md §12): the reads of
//! `CharterDesk` as JSON for citizens' apps and the municipal website, the
//! exports, and the door sign. Everything here is already public in the
//! charter; the routes are rate-limited like every public read.
//!
//! | route | answer |
//! |---|---|
//! | `GET /charter` | the charters held here |
//! | `GET /charter/search?q=&body=&territory=&category=&limit=` | services |
//! | `GET /charter/{body}?as_of=` | the charter (JSON) |
//! | `GET /charter/{body}/services/{id}?at=` | `Explain` |
//! | `GET /charter/{body}/history` | the versions and what each changed |
//! | `GET /charter/{body}/jsonld` · `/cpsv` | schema.org · CPSV-AP_IT |
//! | `GET /charter/{body}/page` | the printable charter (HTML) |
//! | `GET /charter/{body}/services/{id}/page` | one service page (HTML) |
//! | `GET /charter/{body}/offices/{id}/sign.svg` | the door sign |

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

use super::format::Format;
use super::open311::node_error;
use super::{PublicState, Shared};
use crate::charter::export;
use crate::error::NodeError;

/// The charter's routes.
pub fn routes() -> Router<Arc<PublicState>> {
    Router::new()
        .route("/charter", get(list))
        .route("/charter/search", get(search))
        .route("/charter/{body}", get(charter))
        .route("/charter/{body}/history", get(history))
        .route("/charter/{body}/jsonld", get(jsonld))
        .route("/charter/{body}/cpsv", get(cpsv))
        .route("/charter/{body}/page", get(page))
        .route("/charter/{body}/services/{service}", get(explain))
        .route("/charter/{body}/services/{service}/page", get(service_page))
        .route("/charter/{body}/offices/{office}/sign.svg", get(sign))
}

type Params = Query<BTreeMap<String, String>>;

fn fail(e: NodeError) -> Response {
    node_error(e, Format::Json)
}

fn typed(content_type: &'static str, body: String) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn base(state: &PublicState, body: &str) -> String {
    format!("{}/charter/{body}", state.base_url)
}

async fn list(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if let Err(r) = state.admit(&headers, peer) {
        return r;
    }
    Json(serde_json::json!({ "charters": state.charter.list().await })).into_response()
}

async fn search(
    state: Shared,
    Query(p): Params,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if let Err(r) = state.admit(&headers, peer) {
        return r;
    }
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    let limit = match get("limit") {
        "" => 0,
        l => match l.parse::<u32>() {
            Ok(l) => l,
            Err(_) => return fail(NodeError::invalid("limit", "must be a number 1..=50")),
        },
    };
    let suggest = get("suggest") == "true";
    match state.charter.search(
        get("q"),
        get("body"),
        get("territory"),
        get("category"),
        limit,
        suggest,
    ) {
        Ok((hits, total)) => {
            Json(serde_json::json!({ "hits": hits, "total": total })).into_response()
        }
        Err(e) => fail(e),
    }
}

async fn charter(
    state: Shared,
    Path(body): Path<String>,
    Query(p): Params,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if let Err(r) = state.admit(&headers, peer) {
        return r;
    }
    let as_of = p.get("as_of").map(String::as_str).unwrap_or_default();
    match state.charter.get(&body, as_of).await {
        Ok((summary, charter)) => {
            Json(serde_json::json!({ "summary": summary, "charter": charter })).into_response()
        }
        Err(e) => fail(e),
    }
}

async fn history(
    state: Shared,
    Path(body): Path<String>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if let Err(r) = state.admit(&headers, peer) {
        return r;
    }
    match state.charter.history(&body).await {
        Ok(versions) => Json(serde_json::json!({ "versions": versions })).into_response(),
        Err(e) => fail(e),
    }
}

async fn explain(
    state: Shared,
    Path((body, service)): Path<(String, String)>,
    Query(p): Params,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if let Err(r) = state.admit(&headers, peer) {
        return r;
    }
    let at_ms = match p.get("at").map(String::as_str) {
        None | Some("") => 0,
        Some(at) => match at.parse::<jiff::Timestamp>() {
            Ok(t) if t.as_millisecond() > 0 => t.as_millisecond() as u64,
            _ => {
                return fail(NodeError::invalid(
                    "at",
                    "must be an RFC 3339 instant, e.g. 2026-12-04T10:00:00+01:00",
                ));
            }
        },
    };
    match state.charter.explain(&body, &service, at_ms).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => fail(e),
    }
}

/// Admits the client, reads `body`'s current charter and renders it.
async fn render(
    state: &PublicState,
    body: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
    draw: impl FnOnce(
        &urpnet_proto::v1::CharterSummary,
        &urpnet_proto::v1::Charter,
    ) -> Result<Response, NodeError>,
) -> Response {
    if let Err(r) = state.admit(headers, peer) {
        return r;
    }
    match state
        .charter
        .get(body, "")
        .await
        .and_then(|(s, c)| draw(&s, &c))
    {
        Ok(r) => r,
        Err(e) => fail(e),
    }
}

async fn jsonld(
    state: Shared,
    Path(body): Path<String>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let base = base(&state, &body);
    render(&state, &body, &headers, peer, |s, c| {
        Ok(typed(
            "application/ld+json",
            export::jsonld(c, &s.body_name, &base).to_string(),
        ))
    })
    .await
}

async fn cpsv(
    state: Shared,
    Path(body): Path<String>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let base = base(&state, &body);
    render(&state, &body, &headers, peer, |s, c| {
        Ok(typed(
            "application/ld+json",
            export::cpsv(c, &s.body_name, &base).to_string(),
        ))
    })
    .await
}

async fn page(
    state: Shared,
    Path(body): Path<String>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    render(&state, &body, &headers, peer, |s, c| {
        Ok(typed(
            "text/html; charset=utf-8",
            export::charter_html(c, &s.body_name, s.version, ""),
        ))
    })
    .await
}

async fn service_page(
    state: Shared,
    Path((body, service)): Path<(String, String)>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    render(&state, &body, &headers, peer, |s, c| {
        let x = c
            .services
            .iter()
            .find(|x| x.id == service)
            .ok_or_else(|| NodeError::NotFound(format!("service `{service}` in the charter of {body}")))?;
        Ok(typed(
            "text/html; charset=utf-8",
            format!(
                r#"<!doctype html><html lang="it"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{}</title></head><body>{}</body></html>"#,
                export::escape(&x.title),
                export::service_html(c, x, &s.body_name, "")
            ),
        ))
    })
    .await
}

async fn sign(
    state: Shared,
    Path((body, office)): Path<(String, String)>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let office = office.strip_suffix(".svg").unwrap_or(&office).to_string();
    render(&state, &body, &headers, peer, |s, c| {
        let o = c.offices.iter().find(|o| o.id == office).ok_or_else(|| {
            NodeError::NotFound(format!("office `{office}` in the charter of {body}"))
        })?;
        let today = jiff::Zoned::now()
            .with_time_zone(urpnet_proto::calendar::rome())
            .date()
            .to_string();
        Ok(typed(
            "image/svg+xml",
            export::door_sign_svg(c, o, &s.body_name, &today),
        ))
    })
    .await
}
