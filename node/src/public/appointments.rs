//! Booking on the public side (DESIGN.md §13): JSON for citizens' apps and
//! the web pages, over the same domain functions as `AppointmentDesk`.
//! Citizens book at this body's offices only; the manage token they get
//! (and find in every e-mail) is their only key to the booking.
//!
//! | route | answer |
//! |---|---|
//! | `GET /appointments/services` | what can be booked, where |
//! | `GET /appointments/slots?office=&service=&from=&until=&limit=` | free slots |
//! | `POST /appointments/holds` `{office, service, start}` | a seat held for a few minutes |
//! | `POST /appointments` `{idempotency_key, office, service, start, channel, citizen, consent_processing, hold_id?, notes?}` | the booking and its manage token |
//! | `GET /appointments/{id}?token=` | the booking |
//! | `POST /appointments/{id}/move?token=` `{start, hold_id?}` | moved; a new token |
//! | `POST /appointments/{id}/cancel?token=` `{reason?}` | cancelled |
//! | `GET /appointments/{id}/room?token=` | 303 to the video room in its window, 409 with when it opens otherwise |
//! | `GET /appointments/{id}/calendar.ics?token=` | the iCalendar event |
//! | `POST /appointments/{id}/documents?token=&name=` (body: the file, `Content-Type`) | a document for the appointment |
//!
//! Errors are `{"error": {"status", "code", "message"}}`: 400 for a rule
//! broken (the message names the field), 404 for an unknown booking or a
//! token that is forged, replaced by a move or expired (the same answer),
//! 409 for a slot taken (with the next free ones) or a state that forbids
//! the change, 429 for too many requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use urpnet_proto::v1::{AppointmentCitizen, BookRequest, FreeSlotsRequest};

use super::{PublicState, Shared};
use crate::appointments::{Appointments, View, local_text};
use crate::error::NodeError;

/// The booking routes.
pub fn routes() -> Router<Arc<PublicState>> {
    Router::new()
        .route("/appointments", post(book))
        .route("/appointments/services", get(services))
        .route("/appointments/slots", get(slots))
        .route("/appointments/holds", post(hold))
        .route("/appointments/{id}", get(show))
        .route("/appointments/{id}/move", post(move_to))
        .route("/appointments/{id}/cancel", post(cancel))
        .route("/appointments/{id}/room", get(room))
        .route("/appointments/{id}/calendar.ics", get(calendar))
        .route("/appointments/{id}/documents", post(document))
}

type Params = Query<BTreeMap<String, String>>;

/// A JSON error naming what went wrong.
pub fn fail(e: NodeError) -> Response {
    let (status, code) = match &e {
        NodeError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
        NodeError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        NodeError::FailedPrecondition(m) if m.starts_with("slot taken") => {
            (StatusCode::CONFLICT, "slot_taken")
        }
        NodeError::FailedPrecondition(_) => (StatusCode::CONFLICT, "failed_precondition"),
        NodeError::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
        NodeError::Unauthenticated(_) | NodeError::PermissionDenied(_) => {
            (StatusCode::FORBIDDEN, "permission_denied")
        }
        NodeError::RateLimited(..) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        NodeError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        NodeError::Internal(_) | NodeError::Storage(_) | NodeError::Sqlite(_) => {
            tracing::error!(error = %e, "appointment request failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            );
        }
    };
    error(status, code, &e.to_string())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({
            "error": { "status": status.as_u16(), "code": code, "message": message }
        })),
    )
        .into_response()
}

/// Charges the client and finds the node's appointments.
#[allow(clippy::result_large_err)]
fn admit<'a>(
    state: &'a PublicState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<&'a Arc<Appointments>, Response> {
    state.admit(headers, peer)?;
    state.appointments.as_ref().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this node takes no bookings",
        )
    })
}

fn param<'a>(q: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    q.get(key).map_or("", String::as_str)
}

/// The booking as the citizen sees it (their own data included).
async fn view_json(
    a: &Appointments,
    view: &View,
    token: Option<&str>,
    docs: Option<Vec<urpnet_proto::v1::AppointmentDocument>>,
) -> serde_json::Value {
    let docs = match docs {
        Some(d) => d,
        None => crate::appointments::tables::documents(a.store(), &view.booking.id)
            .await
            .unwrap_or_default(),
    };
    let b = &view.booking;
    let mut json =
        serde_json::to_value(a.to_proto(b, view.plan.as_deref(), true, docs)).unwrap_or_default();
    if let Some(obj) = json.as_object_mut() {
        // The room's address is given by the room route, in its window.
        obj.remove("room_url");
        obj.remove("booked_by");
        obj.insert(
            "when".into(),
            crate::appointments::local_words(b.start_ms).into(),
        );
        obj.insert(
            "status_label".into(),
            crate::appointments::status_it(&b.status).into(),
        );
        if let Some(token) = token {
            let base = a.base_url();
            obj.insert("manage_token".into(), token.into());
            obj.insert(
                "manage_url".into(),
                format!("{base}/appointments/{}?token={token}", b.id).into(),
            );
            if b.channel == "video" {
                obj.insert(
                    "room_link".into(),
                    format!("{base}/appointments/{}/room?token={token}", b.id).into(),
                );
            }
        }
    }
    json
}

async fn services(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    Ok(match a.list_plans().await {
        Ok(plans) => {
            Json(serde_json::json!({ "body": state.config.node.id.as_str(), "plans": plans }))
                .into_response()
        }
        Err(e) => fail(e),
    })
}

async fn slots(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Params,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let req = FreeSlotsRequest {
        body: String::new(),
        office: param(&q, "office").into(),
        service: param(&q, "service").into(),
        from: param(&q, "from").into(),
        until: param(&q, "until").into(),
        limit: param(&q, "limit").parse().unwrap_or(0),
    };
    Ok(match a.free_slots(&req).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => fail(e),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    office: String,
    service: String,
    start: String,
}

async fn hold(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let h: HoldBody = parse(&body)?;
    Ok(match a.hold(&h.office, &h.service, &h.start).await {
        Ok(r) => (
            StatusCode::CREATED,
            Json(serde_json::json!({
                "hold_id": r.hold_id,
                "expires": local_text(r.expires_ms as i64),
                "slot": r.slot,
            })),
        )
            .into_response(),
        Err(e) => fail(e),
    })
}

#[allow(clippy::result_large_err)]
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            &format!(
                "{}: {}",
                if path == "." { "body" } else { &path },
                e.inner()
            ),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CitizenBody {
    given_name: String,
    family_name: String,
    address: String,
    email: String,
    #[serde(default)]
    phone: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BookBody {
    #[serde(default)]
    idempotency_key: String,
    office: String,
    service: String,
    start: String,
    channel: String,
    citizen: CitizenBody,
    #[serde(default)]
    consent_processing: bool,
    #[serde(default)]
    hold_id: String,
    #[serde(default)]
    notes: String,
}

async fn book(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let b: BookBody = parse(&body)?;
    let key = if b.idempotency_key.is_empty() {
        headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    } else {
        b.idempotency_key
    };
    let req = BookRequest {
        body: String::new(),
        idempotency_key: key,
        office: b.office,
        service: b.service,
        start: b.start,
        channel: b.channel,
        citizen: Some(AppointmentCitizen {
            given_name: b.citizen.given_name,
            family_name: b.citizen.family_name,
            address: b.citizen.address,
            email: b.citizen.email,
            phone: b.citizen.phone,
        }),
        consent_processing: b.consent_processing,
        consent_share: false,
        hold_id: b.hold_id,
        notes: b.notes,
    };
    let made = a.book_citizen(req).await.map_err(fail)?;
    let status = if made.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let docs = if made.replayed {
        None
    } else {
        Some(Vec::new())
    };
    let mut json = view_json(a, &made.view, Some(&made.token), docs).await;
    json["replayed"] = made.replayed.into();
    Ok((status, Json(json)).into_response())
}

async fn by_token(
    a: &Appointments,
    id: &str,
    q: &BTreeMap<String, String>,
) -> Result<View, Response> {
    a.by_token(id, param(q, "token")).await.map_err(fail)
}

async fn show(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    Ok(match by_token(a, &id, &q).await {
        Ok(view) => Json(view_json(a, &view, None, None).await).into_response(),
        Err(r) => r,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    start: String,
    #[serde(default)]
    hold_id: String,
}

async fn move_to(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let m: MoveBody = parse(&body)?;
    let view = by_token(a, &id, &q).await?;
    Ok(match a.move_to(&view, &m.start, &m.hold_id, false).await {
        Ok(moved) => {
            let token = a.manage_token(&moved.booking.id, moved.booking.moves);
            Json(view_json(a, &moved, Some(&token), None).await).into_response()
        }
        Err(e) => fail(e),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: String,
}

async fn cancel(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let c: CancelBody = if body.is_empty() {
        CancelBody::default()
    } else {
        parse(&body)?
    };
    let view = by_token(a, &id, &q).await?;
    Ok(match a.cancel(&view, &c.reason, false).await {
        Ok(done) => Json(view_json(a, &done, None, None).await).into_response(),
        Err(e) => fail(e),
    })
}

async fn room(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let view = by_token(a, &id, &q).await?;
    let now = urpnet_proto::hlc::system_time_ms() as i64;
    Ok(match a.room_now(&view.booking, now) {
        Ok(url) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&url) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            let opens =
                view.booking.start_ms - i64::from(a.config().appointments.room_opens_min) * 60_000;
            let mut r = fail(e);
            if let Ok(v) = HeaderValue::from_str(&local_text(opens)) {
                r.headers_mut().insert("x-room-opens", v);
            }
            r
        }
    })
}

async fn calendar(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let view = by_token(a, &id, &q).await?;
    let b = &view.booking;
    let kind = if b.status == "cancelled" {
        crate::appointments::tables::CANCEL
    } else {
        crate::appointments::tables::CONFIRM
    };
    let due = crate::appointments::messages::Due {
        id: 0,
        appointment_id: b.id.clone(),
        kind: kind.into(),
        sequence: b.sequence,
        pending_mask: 0,
        sent_mask: 0,
        failed_mask: 0,
        attempts: 0,
    };
    Ok(match a.letter(&due).await {
        Ok(Some(letter)) => match letter.ics {
            Some((_, ics)) => {
                let mut r = (StatusCode::OK, ics).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/calendar; charset=utf-8"),
                );
                r
            }
            None => fail(NodeError::NotFound("a calendar for this message".into())),
        },
        Ok(None) => fail(NodeError::NotFound(
            "an appointment with this id and token".into(),
        )),
        Err(e) => fail(e),
    })
}

async fn document(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let view = by_token(a, &id, &q).await?;
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    Ok(
        match a
            .add_document(&view.booking, param(&q, "name"), &media_type, &body)
            .await
        {
            Ok(doc) => (StatusCode::CREATED, Json(doc)).into_response(),
            Err(e) => fail(e),
        },
    )
}
