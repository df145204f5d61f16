//! Open311 GeoReport v2 (<https://wiki.open311.org/GeoReport_v2>) with the
//! FixMyStreet `servicerequestupdates` extension, under `/open311/v2/`.
//!
//! - `discovery`, `services`, `services/{code}`: from the taxonomy's
//!   citizen services (categories with a `[category.citizen]` table).
//! - `requests` POST: a report, form-encoded or multipart with a `media`
//!   photo, filed through the desk as channel `open311` by the `api_key`'s
//!   integration token. `requests` GET, `requests/{id}`, `tokens/{token}`:
//!   reports filed here through Open311 (never those made by phone, desk or
//!   e-mail, whose text may name people).
//! - `servicerequestupdates` GET: status changes and public notes of those
//!   reports; POST: a back office's update, made by its `api_key`'s
//!   operator.
//!
//! `service_request_id` is the ticket's reference, `token` its id,
//! `agency_responsible` its current owner (the Region, once it accepted a
//! report made at a comune). Status codes as the spec says: 404 for an
//! unknown resource, 403 for a missing or bad `api_key`, 400 otherwise.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Multipart, Path, Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use sha2::{Digest as _, Sha256};
use urpnet_proto::v1::{
    AttachmentUpload, Channel, CitizenContact, Consent, Coordinates, CreateTicketRequest, Location,
    ServiceAnswer, Status, Ticket, TicketEvent, ticket_event::Kind,
};

use super::format::{self, Doc, Format};
use super::{PublicState, Shared, photo};
use crate::auth::Actor;
use crate::casework::StatusChange;
use crate::error::NodeError;
use crate::shared_ticket::fold::millis;
use crate::shared_ticket::names;
use crate::shared_ticket::tables::{self as tickets, TicketFilter};

/// Most results of one `requests` GET (the spec's usual cap).
pub const MAX_RESULTS: u32 = 1000;
/// Default window of a `requests` GET without dates.
const DEFAULT_DAYS: i64 = 90;
/// A POST without an `Idempotency-Key` is the same report as an identical
/// one within this window.
const SAME_CONTENT_WINDOW_MS: u64 = 10 * 60 * 1000;

/// The routes under `/open311/v2/`.
pub fn routes() -> Router<Arc<PublicState>> {
    Router::new()
        .route(
            "/open311/v2/{resource}",
            get(list_resource).post(post_resource),
        )
        .route("/open311/v2/services/{code}", get(service_definition))
        .route("/open311/v2/requests/{id}", get(one_request))
        .route("/open311/v2/tokens/{token}", get(one_token))
        .route("/media/{reference}/{file}", get(media))
}

type Params = Query<BTreeMap<String, String>>;

/// `discovery`, `services`, `requests`, `servicerequestupdates` (GET).
async fn list_resource(
    state: Shared,
    Path(resource): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    peer: ConnectInfo<SocketAddr>,
) -> Response {
    let Some((name, fmt)) = Format::split(&resource) else {
        return format::error(
            StatusCode::NOT_FOUND,
            "unknown format; use .xml or .json",
            Format::Xml,
        );
    };
    // Reads are limited by address: a key in the query is not checked, so
    // it must not pick a bucket (made-up keys would each get a fresh one).
    let client = super::client_of(&state, &headers, peer, None);
    if let Err(refused) = state.charge(&client, fmt) {
        return refused;
    }
    if let Err(refused) = check_jurisdiction(&state, &params, fmt) {
        return refused;
    }
    match name {
        "discovery" => discovery(&state, fmt),
        "services" => services(&state, fmt),
        "requests" => requests(&state, &params, fmt).await,
        "servicerequestupdates" => updates(&state, &params, fmt).await,
        _ => format::error(StatusCode::NOT_FOUND, "no such resource", fmt),
    }
}

/// `requests` and `servicerequestupdates` (POST).
async fn post_resource(
    state: Shared,
    Path(resource): Path<String>,
    peer: ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let Some((name, fmt)) = Format::split(&resource) else {
        return format::error(
            StatusCode::NOT_FOUND,
            "unknown format; use .xml or .json",
            Format::Xml,
        );
    };
    if !matches!(name, "requests" | "servicerequestupdates") {
        return format::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "only requests and servicerequestupdates take POST",
            fmt,
        );
    }
    let headers = request.headers().clone();
    let form = match read_form(state.config.public.max_body_bytes, request).await {
        Ok(form) => form,
        Err(message) => {
            let client = super::client_of(&state, &headers, peer, None);
            if let Err(refused) = state.charge(&client, fmt) {
                return refused;
            }
            return format::error(StatusCode::BAD_REQUEST, &message, fmt);
        }
    };
    let api_key = form.first("api_key");
    let actor = match api_key {
        Some(key) => state
            .auth
            .resolve(Some(&format!("Bearer {key}")))
            .await
            .ok(),
        None => None,
    };
    // Known keys are charged by key (an app's server may carry many
    // citizens from one address), the rest by address.
    let client = super::client_of(&state, &headers, peer, actor.as_ref().and(api_key));
    if let Err(refused) = state.charge(&client, fmt) {
        return refused;
    }
    let Some(actor) = actor else {
        let message = if api_key.is_none() {
            "api_key: is required (an integration token of this node)"
        } else {
            "api_key: is not valid here"
        };
        return format::error(StatusCode::FORBIDDEN, message, fmt);
    };
    let params: BTreeMap<String, String> = form
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Err(refused) = check_jurisdiction(&state, &params, fmt) {
        return refused;
    }
    match name {
        "requests" => post_request(&state, &actor, &headers, form, fmt).await,
        _ => post_update(&state, &actor, &form, fmt).await,
    }
}

#[allow(clippy::result_large_err)]
fn check_jurisdiction(
    state: &PublicState,
    params: &BTreeMap<String, String>,
    fmt: Format,
) -> Result<(), Response> {
    match params.get("jurisdiction_id") {
        Some(j) if !j.is_empty() && *j != state.jurisdiction => Err(format::error(
            StatusCode::NOT_FOUND,
            &format!(
                "jurisdiction_id: this endpoint serves `{}` only",
                state.jurisdiction
            ),
            fmt,
        )),
        _ => Ok(()),
    }
}

fn discovery(state: &PublicState, fmt: Format) -> Response {
    Doc::Object(vec![
        ("changeset", Doc::Text("2026-12-04T00:00:00Z".into())),
        (
            "contact",
            Doc::Text(format!("{} (URP)", state.config.node.name)),
        ),
        (
            "key_service",
            Doc::Text(format!(
                "{}: ask the URP for an integration token",
                state.config.node.name
            )),
        ),
        (
            "endpoints",
            Doc::List(
                "endpoint",
                vec![Doc::Object(vec![
                    (
                        "specification",
                        Doc::Text("http://wiki.open311.org/GeoReport_v2".into()),
                    ),
                    ("url", Doc::Text(format!("{}/open311/v2", state.base_url))),
                    ("changeset", Doc::Text("2026-12-04T00:00:00Z".into())),
                    ("type", Doc::Text("production".into())),
                    (
                        "formats",
                        Doc::List(
                            "format",
                            vec![
                                Doc::Text("text/xml".into()),
                                Doc::Text("application/json".into()),
                            ],
                        ),
                    ),
                ])],
            ),
        ),
    ])
    .respond(StatusCode::OK, "discovery", fmt)
}

fn services(state: &PublicState, fmt: Format) -> Response {
    let taxonomy = state.desk.taxonomy();
    let list = taxonomy
        .categories()
        .filter_map(|c| {
            let s = c.citizen.as_ref()?;
            Some(Doc::Object(vec![
                ("service_code", Doc::Text(c.code.clone())),
                ("service_name", Doc::Text(c.label.clone())),
                ("description", Doc::Text(s.description.clone())),
                ("metadata", Doc::Bool(!s.questions.is_empty())),
                ("type", Doc::Text("realtime".into())),
                ("keywords", Doc::text_or_null(s.keywords.join(","))),
                ("group", Doc::text_or_null(s.group.clone())),
            ]))
        })
        .collect();
    Doc::List("service", list).respond(StatusCode::OK, "services", fmt)
}

async fn service_definition(
    state: Shared,
    Path(code): Path<String>,
    headers: HeaderMap,
    peer: ConnectInfo<SocketAddr>,
) -> Response {
    let (code, fmt) = match open(&state, &code, &headers, peer) {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    let taxonomy = state.desk.taxonomy();
    let Some((category, service)) = taxonomy
        .get(code)
        .and_then(|c| c.citizen.as_ref().map(|s| (c, s)))
    else {
        return format::error(
            StatusCode::NOT_FOUND,
            &format!("service_code: `{code}` is not a service of this node"),
            fmt,
        );
    };
    let mut questions = service.questions.clone();
    questions.sort_by_key(|q| q.order);
    let attributes = questions
        .iter()
        .map(|q| {
            Doc::Object(vec![
                ("variable", Doc::Bool(true)),
                ("code", Doc::Text(q.code.clone())),
                ("datatype", Doc::Text(q.datatype.clone())),
                ("required", Doc::Bool(q.required)),
                ("datatype_description", Doc::Null),
                ("order", Doc::Number(q.order.to_string())),
                ("description", Doc::Text(q.description.clone())),
                (
                    "values",
                    Doc::List(
                        "value",
                        q.values
                            .iter()
                            .map(|v| {
                                Doc::Object(vec![
                                    ("key", Doc::Text(v.key.clone())),
                                    ("name", Doc::Text(v.name.clone())),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ])
        })
        .collect();
    Doc::Object(vec![
        ("service_code", Doc::Text(category.code.clone())),
        ("attributes", Doc::List("attribute", attributes)),
    ])
    .respond(StatusCode::OK, "service_definition", fmt)
}

/// The name and format of a `name.{xml,json}` path segment, once the
/// client's bucket allowed the request.
#[allow(clippy::result_large_err)]
fn open<'a>(
    state: &PublicState,
    segment: &'a str,
    headers: &HeaderMap,
    peer: ConnectInfo<SocketAddr>,
) -> Result<(&'a str, Format), Response> {
    let Some((name, fmt)) = Format::split(segment) else {
        return Err(format::error(
            StatusCode::NOT_FOUND,
            "unknown format; use .xml or .json",
            Format::Xml,
        ));
    };
    state.charge(&super::client_of(state, headers, peer, None), fmt)?;
    Ok((name, fmt))
}

/// A POST body: its fields (repeated names kept in order) and a photo.
#[derive(Debug, Default)]
pub struct Form {
    fields: Vec<(String, String)>,
    media: Option<(String, Vec<u8>)>,
}

impl Form {
    /// Every field, in order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// The first non-empty value of a field.
    pub(super) fn first(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Reads a form-encoded or multipart body. Nothing else is parsed (an XML
/// or JSON body is refused unread, entities and all).
pub async fn read_form(max_body_bytes: usize, request: Request) -> Result<Form, String> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| format!("body: not a valid multipart form: {e}"))?;
        let mut form = Form::default();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| format!("body: not a valid multipart form: {e}"))?
        {
            let name = field.name().unwrap_or_default().to_string();
            if name == "media" {
                let file = field.file_name().unwrap_or("foto").to_string();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| format!("media: cannot be read: {e}"))?;
                if !bytes.is_empty() {
                    form.media = Some((file, bytes.to_vec()));
                }
            } else {
                let value = field
                    .text()
                    .await
                    .map_err(|e| format!("{name}: cannot be read: {e}"))?;
                form.fields.push((name, value));
            }
        }
        Ok(form)
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let body: Bytes = axum::body::to_bytes(request.into_body(), max_body_bytes)
            .await
            .map_err(|e| format!("body: cannot be read: {e}"))?;
        Ok(Form {
            fields: form_urlencoded::parse(&body).into_owned().collect(),
            media: None,
        })
    } else {
        Err(format!(
            "Content-Type: must be application/x-www-form-urlencoded or multipart/form-data, not `{}`",
            if content_type.is_empty() {
                "none"
            } else {
                &content_type
            }
        ))
    }
}

/// The answers among the fields: `attribute[code]`, and `attribute[code][]`
/// repeated for a multi-value list.
fn answers_of(form: &Form) -> Vec<ServiceAnswer> {
    let mut answers: Vec<ServiceAnswer> = Vec::new();
    for (k, v) in &form.fields {
        let Some(code) = k
            .strip_prefix("attribute[")
            .map(|rest| rest.trim_end_matches("[]").trim_end_matches(']'))
        else {
            continue;
        };
        match answers.iter_mut().find(|a| a.code == code) {
            Some(a) => {
                a.value.push(',');
                a.value.push_str(v);
            }
            None => answers.push(ServiceAnswer {
                code: code.to_string(),
                value: v.clone(),
            }),
        }
    }
    answers
}

/// Where a report is: the comune among those served, from its point (by the
/// configured areas) or its address.
fn comune_of(
    state: &PublicState,
    point: Option<(f64, f64)>,
    address: &str,
) -> Result<String, String> {
    let served = state.config.public_comuni();
    let italy = urpnet_proto::territory::Territory::italy();
    let names = || {
        served
            .iter()
            .filter_map(|c| italy.comune(c))
            .map(|c| format!("{} ({})", c.name, c.istat_code))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if served.is_empty() {
        return Err(
            "this node takes no reports through Open311 (no comuni in [public] comuni)".into(),
        );
    }
    if let Some((lat, lon)) = point {
        let areas = &state.config.public.areas;
        if !areas.is_empty() {
            return areas
                .iter()
                .find(|a| {
                    let [s, w, n, e] = a.bbox;
                    (s..=n).contains(&lat) && (w..=e).contains(&lon)
                })
                .map(|a| a.comune.clone())
                .ok_or_else(|| {
                    format!(
                        "lat/long: the point is outside the area this node serves: {}",
                        names()
                    )
                });
        }
        // Italy's extent, islands included.
        if !((35.2..=47.2).contains(&lat) && (6.5..=18.6).contains(&lon)) {
            return Err(format!(
                "lat/long: the point is outside the area this node serves: {}",
                names()
            ));
        }
    }
    if served.len() == 1 {
        return Ok(served[0].clone());
    }
    let folded = urpnet_proto::text::fold(address);
    served
        .iter()
        .find(|c| {
            italy
                .comune(c)
                .is_some_and(|c| folded.contains(&urpnet_proto::text::fold(&c.name)))
        })
        .cloned()
        .ok_or_else(|| format!("address_string: name the comune, one of {}", names()))
}

/// The ticket a citizen's report asks for (Open311's fields; the web form
/// uses the same), every rule checked: the service, the point or address
/// and its comune, the photo re-encoded without metadata, the contact and
/// consent.
///
/// # Errors
/// The broken rule, naming the field.
pub(super) async fn report_request(
    state: &PublicState,
    headers: &HeaderMap,
    form: &Form,
    channel: Channel,
) -> Result<CreateTicketRequest, String> {
    let taxonomy = state.desk.taxonomy();
    let Some(code) = form.first("service_code") else {
        return Err("service_code: is required".into());
    };
    let Some(category) = taxonomy.get(code).filter(|c| c.citizen.is_some()) else {
        return Err(format!(
            "service_code: `{code}` is not a service of this node (GET services.xml lists them)"
        ));
    };
    let number = |name: &str| -> Result<Option<f64>, String> {
        match form.first(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| format!("{name}: must be a number in decimal degrees")),
        }
    };
    let (lat, lon) = match (number("lat"), number("long")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let point = match (lat, lon) {
        (Some(a), Some(b)) => {
            if !(-90.0..=90.0).contains(&a) || !(-180.0..=180.0).contains(&b) {
                return Err("lat/long: must be within -90..90 and -180..180".into());
            }
            Some((a, b))
        }
        (None, None) => None,
        _ => return Err("lat/long: give both, or neither".into()),
    };
    let address = form.first("address_string").unwrap_or_default().to_string();
    if point.is_none() && address.trim().is_empty() {
        return Err("location: give lat and long, or address_string".into());
    }
    let istat = match comune_of(state, point, &address) {
        Ok(c) => c,
        Err(e) => return Err(e),
    };
    let mut description = form.first("description").unwrap_or_default().to_string();
    if let Some(url) = form.first("media_url") {
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2000 {
            return Err("media_url: must be an http(s) URL of at most 2000 characters".into());
        }
        // Never fetched: the node calls nobody on a citizen's behalf.
        description.push_str(&format!("\n\nImmagine: {url}"));
    }
    let mut attachments = Vec::new();
    if let Some((file, bytes)) = &form.media {
        if bytes.len() as u64 > state.config.attachments.max_bytes {
            return Err(format!(
                "media: the photo is larger than {} bytes",
                state.config.attachments.max_bytes
            ));
        }
        let clean = match tokio::task::spawn_blocking({
            let bytes = bytes.clone();
            move || photo::clean(&bytes)
        })
        .await
        {
            Ok(Ok(clean)) => clean,
            Ok(Err(e)) => return Err(e.0),
            Err(_) => return Err("media: cannot be read".into()),
        };
        let stem: String = file
            .rsplit('/')
            .next()
            .unwrap_or("foto")
            .split('.')
            .next()
            .unwrap_or("foto")
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
            .take(60)
            .collect();
        let stem = if stem.is_empty() {
            "foto".to_string()
        } else {
            stem
        };
        attachments.push(AttachmentUpload {
            file_name: format!("{stem}.{}", clean.extension),
            media_type: clean.media_type.to_string(),
            content: clean.bytes,
        });
    }
    let name = [form.first("first_name"), form.first("last_name")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let citizen = CitizenContact {
        full_name: name,
        email: form.first("email").unwrap_or_default().to_string(),
        phone: form.first("phone").unwrap_or_default().to_string(),
        fiscal_code: String::new(),
    };
    let has_contact = citizen != CitizenContact::default();
    let subject = {
        let first_line = description.lines().next().unwrap_or_default().trim();
        let mut s = if first_line.is_empty() {
            category.label.clone()
        } else {
            format!("{}: {first_line}", category.label)
        };
        if s.chars().count() > 200 {
            s = s.chars().take(199).collect::<String>() + "…";
        }
        s
    };
    let request_id = match headers.get("idempotency-key").map(|v| v.to_str()) {
        Some(Ok(key)) => key.to_string(),
        Some(Err(_)) => {
            return Err("Idempotency-Key: must be 8..=64 characters of A-Z a-z 0-9 _ -".into());
        }
        None => {
            // The same content within the window is the same report.
            let mut h = Sha256::new();
            for (k, v) in &form.fields {
                h.update(k.as_bytes());
                h.update([0]);
                h.update(v.as_bytes());
                h.update([0]);
            }
            if let Some((_, bytes)) = &form.media {
                h.update(Sha256::digest(bytes));
            }
            h.update((urpnet_proto::hlc::system_time_ms() / SAME_CONTENT_WINDOW_MS).to_be_bytes());
            format!("o311-{}", &hex::encode(h.finalize())[..40])
        }
    };
    let share = form
        .first("share_contact")
        .is_some_and(|v| matches!(v, "true" | "1" | "si" | "yes"));
    let req = CreateTicketRequest {
        request_id,
        category: category.code.clone(),
        channel: channel as i32,
        subject,
        description,
        location: Some(Location {
            istat_code: istat,
            address,
            coordinates: point.map(|(latitude, longitude)| Coordinates {
                latitude,
                longitude,
            }),
        }),
        attachments,
        priority: 0,
        consent: Some(Consent {
            share_with_competent_body: share && has_contact,
            contact_for_updates: has_contact,
        }),
        citizen: has_contact.then_some(citizen),
        due_at: None,
        answers: answers_of(form),
    };
    Ok(req)
}

async fn post_request(
    state: &PublicState,
    actor: &Actor,
    headers: &HeaderMap,
    form: Form,
    fmt: Format,
) -> Response {
    let req = match report_request(state, headers, &form, Channel::Open311).await {
        Ok(req) => req,
        Err(message) => return format::error(StatusCode::BAD_REQUEST, &message, fmt),
    };
    match state.desk.create(actor, req).await {
        Ok(created) => {
            let t = &created.ticket;
            Doc::List(
                "request",
                vec![Doc::Object(vec![
                    ("service_request_id", Doc::Text(t.reference.clone())),
                    ("token", Doc::Text(t.id.clone())),
                    ("service_notice", Doc::Null),
                    ("account_id", Doc::Null),
                    (
                        "tracking_url",
                        Doc::text_or_null(if created.tracking_key.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "{}/track/{}?key={}",
                                state.base_url, t.reference, created.tracking_key
                            )
                        }),
                    ),
                ])],
            )
            .respond(StatusCode::OK, "service_requests", fmt)
        }
        Err(e) => node_error(e, fmt),
    }
}

/// A domain error as an Open311 error.
pub(super) fn node_error(e: NodeError, fmt: Format) -> Response {
    let status = match &e {
        NodeError::NotFound(_) => StatusCode::NOT_FOUND,
        NodeError::Unauthenticated(_) | NodeError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        NodeError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        NodeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        NodeError::Internal(_) | NodeError::Storage(_) => {
            tracing::error!(error = %e, "open311 request failed");
            return format::error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", fmt);
        }
        _ => StatusCode::BAD_REQUEST,
    };
    format::error(status, &e.to_string(), fmt)
}

/// Open311's two statuses.
fn open_or_closed(status: Status) -> &'static str {
    if matches!(
        status,
        Status::Resolved | Status::Closed | Status::Rejected | Status::Merged
    ) {
        "closed"
    } else {
        "open"
    }
}

/// Our lifecycle's target for a FixMyStreet status (`None`: no change).
fn status_of_extended(s: &str) -> Result<Option<Status>, String> {
    Ok(match s.to_ascii_uppercase().replace(' ', "_").as_str() {
        "" | "OPEN" => None,
        "IN_PROGRESS" | "INVESTIGATING" | "ACTION_SCHEDULED" => Some(Status::InProgress),
        "FIXED" => Some(Status::Resolved),
        "CLOSED" => Some(Status::Closed),
        "NO_FURTHER_ACTION" | "NOT_COUNCILS_RESPONSIBILITY" | "WONT_FIX" => Some(Status::Rejected),
        "DUPLICATE" => {
            return Err(
                "status: DUPLICATE needs the report it duplicates; merge it at the desk".into(),
            );
        }
        "INTERNAL_REFERRAL" => {
            return Err("status: INTERNAL_REFERRAL is a handoff; make it at the desk, which asks the registry who is competent".into());
        }
        other => {
            return Err(format!(
                "status: `{other}` is not one of OPEN, INVESTIGATING, ACTION_SCHEDULED, IN_PROGRESS, FIXED, CLOSED, NO_FURTHER_ACTION, NOT_COUNCILS_RESPONSIBILITY"
            ));
        }
    })
}

fn parse_date(params: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, String> {
    match params.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<jiff::Timestamp>()
            .map(|t| Some(t.as_millisecond()))
            .map_err(|_| format!("{name}: must be an ISO 8601 date and time with its offset, e.g. 2026-12-04T10:00:00+01:00")),
    }
}

/// Whether a ticket is one of the reports this endpoint shows.
fn is_public_report(state: &PublicState, t: &Ticket) -> bool {
    t.channel() == Channel::Open311 && t.origin_node == state.config.node.id.as_str()
}

/// The Open311 request of a report, with its latest public note.
fn request_doc(state: &PublicState, t: &Ticket, latest_note: Option<&String>) -> Doc {
    let taxonomy = state.desk.taxonomy();
    let location = t.location.clone().unwrap_or_default();
    let ms = |ts: &Option<prost_types::Timestamp>| ts.as_ref().map(millis);
    let media = t
        .attachments
        .iter()
        .find(|a| a.media_type.starts_with("image/"))
        .map(|a| format!("{}/media/{}/{}", state.base_url, t.reference, a.sha256));
    Doc::Object(vec![
        ("service_request_id", Doc::Text(t.reference.clone())),
        ("status", Doc::Text(open_or_closed(t.status()).into())),
        (
            "status_notes",
            Doc::text_or_null(latest_note.cloned().unwrap_or_default()),
        ),
        (
            "service_name",
            Doc::Text(
                taxonomy
                    .get(&t.category)
                    .map_or_else(|| t.category.clone(), |c| c.label.clone()),
            ),
        ),
        ("service_code", Doc::Text(t.category.clone())),
        ("description", Doc::text_or_null(t.description.clone())),
        (
            "agency_responsible",
            Doc::Text(state.body_name(&t.owner_node)),
        ),
        ("service_notice", Doc::Null),
        (
            "requested_datetime",
            Doc::text_or_null(
                ms(&t.created_at)
                    .map(urpnet_proto::calendar::iso_rome)
                    .unwrap_or_default(),
            ),
        ),
        (
            "updated_datetime",
            Doc::text_or_null(
                ms(&t.updated_at)
                    .map(urpnet_proto::calendar::iso_rome)
                    .unwrap_or_default(),
            ),
        ),
        (
            "expected_datetime",
            Doc::text_or_null(
                ms(&t.due_at)
                    .map(urpnet_proto::calendar::iso_rome)
                    .unwrap_or_default(),
            ),
        ),
        ("address", Doc::text_or_null(location.address.clone())),
        ("address_id", Doc::Null),
        ("zipcode", Doc::Null),
        (
            "lat",
            location
                .coordinates
                .map_or(Doc::Null, |c| Doc::Number(c.latitude.to_string())),
        ),
        (
            "long",
            location
                .coordinates
                .map_or(Doc::Null, |c| Doc::Number(c.longitude.to_string())),
        ),
        ("media_url", Doc::text_or_null(media.unwrap_or_default())),
    ])
}

async fn requests(state: &PublicState, params: &BTreeMap<String, String>, fmt: Format) -> Response {
    let bad = |m: String| format::error(StatusCode::BAD_REQUEST, &m, fmt);
    let (from, to) = match (
        parse_date(params, "start_date"),
        parse_date(params, "end_date"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let page_size = match params.get("page_size").map(|v| v.parse::<u32>()) {
        None => MAX_RESULTS,
        Some(Ok(n)) if (1..=MAX_RESULTS).contains(&n) => n,
        Some(_) => return bad(format!("page_size: must be within 1..={MAX_RESULTS}")),
    };
    let page = match params.get("page").map(|v| v.parse::<u32>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return bad("page: must be a whole number from 1".into()),
    };
    let mut statuses = Vec::new();
    if let Some(list) = params.get("status").filter(|s| !s.is_empty()) {
        for s in list.split(',').map(str::trim) {
            match s {
                "open" => statuses.extend([
                    Status::New,
                    Status::Assigned,
                    Status::InProgress,
                    Status::WaitingCitizen,
                ]),
                "closed" => statuses.extend([
                    Status::Resolved,
                    Status::Closed,
                    Status::Rejected,
                    Status::Merged,
                ]),
                other => return bad(format!("status: `{other}` is not open or closed")),
            }
        }
    }
    let mut found: Vec<Ticket> = Vec::new();
    if let Some(ids) = params.get("service_request_id").filter(|s| !s.is_empty()) {
        let ids: Vec<&str> = ids
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if ids.len() > MAX_RESULTS as usize {
            return bad(format!("service_request_id: at most {MAX_RESULTS}"));
        }
        for id in ids {
            match tickets::ticket_by_reference(state.desk.store(), id).await {
                Ok(Some(t)) if is_public_report(state, &t) => found.push(t),
                Ok(_) => {}
                Err(e) => return node_error(e, fmt),
            }
        }
    } else {
        if let Some(code) = params.get("service_code").filter(|s| !s.is_empty())
            && state.desk.taxonomy().get(code).is_none()
        {
            return bad(format!(
                "service_code: `{code}` is not a service of this node"
            ));
        }
        let now = urpnet_proto::hlc::system_time_ms() as i64;
        let from = from.or((to.is_none()).then_some(now - DEFAULT_DAYS * 86_400_000));
        let filter = TicketFilter {
            statuses: statuses.iter().map(|s| *s as i32).collect(),
            category: params
                .get("service_code")
                .filter(|s| !s.is_empty())
                .cloned(),
            channel: Some(Channel::Open311 as i32),
            created_from_ms: from,
            created_to_ms: to,
            origin: Some(state.config.node.id.to_string()),
            offset: (page - 1).saturating_mul(page_size),
            limit: page_size,
            ..TicketFilter::default()
        };
        match tickets::list(state.desk.store(), &filter).await {
            Ok(list) => found = list,
            Err(e) => return node_error(e, fmt),
        }
    }
    let ids: Vec<String> = found.iter().map(|t| t.id.clone()).collect();
    let notes = match tickets::latest_public_notes(state.desk.store(), &ids).await {
        Ok(n) => n,
        Err(e) => return node_error(e, fmt),
    };
    let docs = found
        .iter()
        .map(|t| request_doc(state, t, notes.get(&t.id)))
        .collect();
    Doc::List("request", docs).respond(StatusCode::OK, "service_requests", fmt)
}

async fn one_request(
    state: Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    peer: ConnectInfo<SocketAddr>,
) -> Response {
    let (id, fmt) = match open(&state, &id, &headers, peer) {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    match tickets::ticket_by_reference(state.desk.store(), id).await {
        Ok(Some(t)) if is_public_report(&state, &t) => Doc::List(
            "request",
            vec![request_doc(
                &state,
                &t,
                tickets::latest_public_notes(state.desk.store(), std::slice::from_ref(&t.id))
                    .await
                    .unwrap_or_default()
                    .get(&t.id),
            )],
        )
        .respond(StatusCode::OK, "service_requests", fmt),
        Ok(_) => format::error(
            StatusCode::NOT_FOUND,
            &format!("service_request_id: `{id}` is not a report of this node"),
            fmt,
        ),
        Err(e) => node_error(e, fmt),
    }
}

async fn one_token(
    state: Shared,
    Path(token): Path<String>,
    headers: HeaderMap,
    peer: ConnectInfo<SocketAddr>,
) -> Response {
    let (token, fmt) = match open(&state, &token, &headers, peer) {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    let mut v = urpnet_proto::validate::Violations::new();
    crate::validate::ticket_id(&mut v, "token", token);
    if v.into_result().is_err() {
        return format::error(StatusCode::NOT_FOUND, "token: unknown", fmt);
    }
    match tickets::ticket(state.desk.store(), token).await {
        Ok(Some(t)) if is_public_report(&state, &t) => Doc::List(
            "request",
            vec![Doc::Object(vec![
                ("service_request_id", Doc::Text(t.reference.clone())),
                ("token", Doc::Text(t.id.clone())),
            ])],
        )
        .respond(StatusCode::OK, "service_requests", fmt),
        Ok(_) => format::error(StatusCode::NOT_FOUND, "token: unknown", fmt),
        Err(e) => node_error(e, fmt),
    }
}

/// `servicerequestupdates` GET: status changes and public notes of this
/// node's reports between `start_date` and `end_date` (default: the last
/// day), oldest first.
async fn updates(state: &PublicState, params: &BTreeMap<String, String>, fmt: Format) -> Response {
    let bad = |m: String| format::error(StatusCode::BAD_REQUEST, &m, fmt);
    let (from, to) = match (
        parse_date(params, "start_date"),
        parse_date(params, "end_date"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let now = urpnet_proto::hlc::system_time_ms() as i64;
    let from = from.unwrap_or(now - 86_400_000);
    let to = to.unwrap_or(i64::MAX);
    let filter = TicketFilter {
        channel: Some(Channel::Open311 as i32),
        origin: Some(state.config.node.id.to_string()),
        updated_since_ms: Some(from),
        limit: MAX_RESULTS,
        ..TicketFilter::default()
    };
    let list = match tickets::list(state.desk.store(), &filter).await {
        Ok(list) => list,
        Err(e) => return node_error(e, fmt),
    };
    let mut rows: Vec<(u64, Doc)> = Vec::new();
    for t in &list {
        let events = match tickets::events(state.desk.store(), &t.id).await {
            Ok(e) => e,
            Err(e) => return node_error(e, fmt),
        };
        let mut folded = None;
        for (_, e) in events {
            let effect = crate::shared_ticket::apply(&mut folded, &e);
            let at = e.hlc.map_or(0, |h| h.wall_ms);
            if (at as i64) < from
                || (at as i64) > to
                || !matches!(effect, crate::shared_ticket::Effect::Applied)
            {
                continue;
            }
            let Some(current) = &folded else { continue };
            if let Some(doc) = update_doc(state, current, &e, at) {
                rows.push((at, doc));
            }
        }
    }
    rows.sort_by_key(|(at, _)| *at);
    Doc::List("request_update", rows.into_iter().map(|(_, d)| d).collect()).respond(
        StatusCode::OK,
        "service_request_updates",
        fmt,
    )
}

fn update_doc(state: &PublicState, t: &Ticket, e: &TicketEvent, at: u64) -> Option<Doc> {
    let description = match &e.kind {
        Some(Kind::Note(n)) if n.public => n.text.clone(),
        Some(Kind::StatusChanged(s)) => s.reason.clone(),
        Some(Kind::HandoffAccepted(_)) => {
            format!("Presa in carico da {}", state.body_name(&t.owner_node))
        }
        _ => return None,
    };
    Some(Doc::Object(vec![
        (
            "update_id",
            Doc::Text(format!("{}/{}", e.author_node, e.event_id)),
        ),
        ("service_request_id", Doc::Text(t.reference.clone())),
        ("status", Doc::Text(names::fixmystreet_status(t).into())),
        (
            "updated_datetime",
            Doc::Text(urpnet_proto::calendar::iso_rome(at)),
        ),
        ("description", Doc::text_or_null(description)),
        ("media_url", Doc::Null),
    ]))
}

/// `servicerequestupdates` POST (FixMyStreet's back-office update): a
/// status change and a public note on one of this node's reports.
async fn post_update(state: &PublicState, actor: &Actor, form: &Form, fmt: Format) -> Response {
    let bad = |m: String| format::error(StatusCode::BAD_REQUEST, &m, fmt);
    let Some(reference) = form.first("service_request_id") else {
        return bad("service_request_id: is required".into());
    };
    let ticket = match tickets::ticket_by_reference(state.desk.store(), reference).await {
        Ok(Some(t)) if is_public_report(state, &t) => t,
        Ok(_) => {
            return format::error(
                StatusCode::NOT_FOUND,
                &format!("service_request_id: `{reference}` is not a report of this node"),
                fmt,
            );
        }
        Err(e) => return node_error(e, fmt),
    };
    let target = match status_of_extended(form.first("status").unwrap_or_default()) {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    let description = form
        .first("description")
        .unwrap_or_default()
        .trim()
        .to_string();
    if target.is_none() && description.is_empty() {
        return bad("description: is required when the status does not change".into());
    }
    let desk = state.desk.clone();
    let mut last = ticket.clone();
    if let Some(to) = target.filter(|to| *to != ticket.status()) {
        match desk
            .change_status(
                actor,
                &ticket.id,
                StatusChange {
                    to: to as i32,
                    reason: description.chars().take(1000).collect(),
                    merged_into: String::new(),
                },
            )
            .await
        {
            Ok(t) => last = t,
            Err(e) => return node_error(e, fmt),
        }
    }
    if !description.is_empty() {
        match desk.add_note(actor, &ticket.id, true, &description).await {
            Ok(t) => last = t,
            Err(e) => return node_error(e, fmt),
        }
    }
    let update_id = last
        .chain_heads
        .iter()
        .find(|h| h.author == state.config.node.id.as_str())
        .map(|h| format!("{}/{}", h.author, h.seq))
        .unwrap_or_default();
    Doc::List(
        "request_update",
        vec![Doc::Object(vec![
            ("update_id", Doc::Text(update_id)),
            ("service_request_id", Doc::Text(last.reference.clone())),
            ("status", Doc::Text(names::fixmystreet_status(&last).into())),
            (
                "updated_datetime",
                Doc::text_or_null(
                    last.updated_at
                        .as_ref()
                        .map(|t| urpnet_proto::calendar::iso_rome(millis(t)))
                        .unwrap_or_default(),
                ),
            ),
        ])],
    )
    .respond(StatusCode::OK, "service_request_updates", fmt)
}

/// A report's photo, as stored (metadata stripped at intake).
async fn media(
    state: Shared,
    Path((reference, file)): Path<(String, String)>,
    headers: HeaderMap,
    peer: ConnectInfo<SocketAddr>,
) -> Response {
    if let Err(refused) = state.charge(&super::client_of(&state, &headers, peer, None), Format::Xml)
    {
        return refused;
    }
    let missing = || format::error(StatusCode::NOT_FOUND, "no such photo", Format::Xml);
    let Ok(Some(t)) = tickets::ticket_by_reference(state.desk.store(), &reference).await else {
        return missing();
    };
    let Some(a) = t
        .attachments
        .iter()
        .find(|a| a.sha256 == file && a.media_type.starts_with("image/"))
        .filter(|_| is_public_report(&state, &t))
    else {
        return missing();
    };
    match crate::attachments::read_content(state.desk.store(), &a.sha256).await {
        Ok(bytes) => {
            use axum::response::IntoResponse as _;
            (
                [
                    (header::CONTENT_TYPE, a.media_type.clone()),
                    (
                        header::CACHE_CONTROL,
                        "public, max-age=31536000, immutable".to_string(),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Err(_) => missing(),
    }
}
