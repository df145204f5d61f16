//! The citizen's tracking page: `GET /track/{reference}?key=...` (a small
//! Italian HTML page) and `GET /track/{reference}.json?key=...`.
//!
//! It shows the status, the body responsible, the public notes and the
//! dates; never internal notes, attachments or anyone's personal data. An
//! unknown reference and a wrong key get the same 404, and the key is
//! compared in constant time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use urpnet_proto::v1::Ticket;

use super::format::{self, Format};
use super::{PublicState, Shared};
use crate::shared_ticket::fold::millis;
use urpnet_proto::calendar::iso_rome as datetime;

/// The route of the page.
pub fn routes() -> Router<Arc<PublicState>> {
    Router::new().route("/track/{reference}", get(track))
}

/// What the citizen sees of a ticket.
#[derive(Debug, serde::Serialize)]
struct Tracking {
    reference: String,
    status: &'static str,
    status_label: &'static str,
    responsible: String,
    category: String,
    subject: String,
    opened: String,
    updated: String,
    expected: String,
    notes: Vec<TrackingNote>,
}

#[derive(Debug, serde::Serialize)]
struct TrackingNote {
    at: String,
    text: String,
}

async fn track(
    state: Shared,
    Path(reference): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    peer: ConnectInfo<SocketAddr>,
) -> Response {
    let (reference, json) = match reference.strip_suffix(".json") {
        Some(r) => (r.to_string(), true),
        None => (reference, false),
    };
    let fmt = if json { Format::Json } else { Format::Xml };
    if let Err(refused) = state.charge(&super::client_of(&state, &headers, peer, None), fmt) {
        return refused;
    }
    let key = params.get("key").map(String::as_str).unwrap_or_default();
    let not_found = || {
        if json {
            format::error(
                StatusCode::NOT_FOUND,
                "no ticket with this reference and key",
                Format::Json,
            )
        } else {
            html(
                StatusCode::NOT_FOUND,
                &page(
                    "Segnalazione non trovata",
                    "<p>Nessuna segnalazione con questo codice e questa chiave. Controlli il link ricevuto.</p>",
                ),
            )
        }
    };
    let store = state.desk.store();
    let Ok(Some(ticket)) =
        crate::shared_ticket::tables::ticket_by_reference(store, &reference).await
    else {
        // The same work as a wrong key: hash the key anyway.
        let _ = crate::tracking::key_hash(key);
        return not_found();
    };
    match crate::tracking::verify(store, &ticket.id, key).await {
        Ok(true) => {}
        _ => return not_found(),
    }
    let tracking = view(&state, &ticket).await;
    if json {
        let mut response = (
            StatusCode::OK,
            serde_json::to_vec(&tracking).unwrap_or_default(),
        )
            .into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        no_store(response)
    } else {
        no_store(html(StatusCode::OK, &render(&tracking)))
    }
}

async fn view(state: &PublicState, t: &Ticket) -> Tracking {
    let notes = crate::shared_ticket::tables::events(state.desk.store(), &t.id)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, e)| match e.kind {
            Some(urpnet_proto::v1::ticket_event::Kind::Note(n)) if n.public => Some(TrackingNote {
                at: datetime(e.hlc.map_or(0, |h| h.wall_ms)),
                text: n.text,
            }),
            _ => None,
        })
        .collect();
    let when = |ts: &Option<prost_types::Timestamp>| {
        ts.as_ref().map(|t| datetime(millis(t))).unwrap_or_default()
    };
    let taxonomy = state.desk.taxonomy();
    Tracking {
        reference: t.reference.clone(),
        status: crate::shared_ticket::names::fixmystreet_status(t),
        status_label: crate::shared_ticket::names::status_label_it(t.status()),
        responsible: state.body_name(&t.owner_node),
        category: taxonomy
            .get(&t.category)
            .map_or_else(|| t.category.clone(), |c| c.label.clone()),
        subject: t.subject.clone(),
        opened: when(&t.created_at),
        updated: when(&t.updated_at),
        expected: when(&t.due_at),
        notes,
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"it\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>{}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a;line-height:1.5}}\
         dt{{font-weight:600}}dd{{margin:0 0 .75rem}}.stato{{font-size:1.25rem;font-weight:700;color:#0b4f8a}}\
         li{{margin-bottom:.75rem}}time{{color:#555;font-size:.9rem}}</style></head><body><main>{body}</main></body></html>\n",
        escape(title)
    )
}

fn render(t: &Tracking) -> String {
    let notes = if t.notes.is_empty() {
        "<p>Nessun aggiornamento pubblico per ora.</p>".to_string()
    } else {
        let items: String = t
            .notes
            .iter()
            .map(|n| {
                format!(
                    "<li><time>{}</time><br>{}</li>",
                    escape(&n.at),
                    escape(&n.text)
                )
            })
            .collect();
        format!("<ol>{items}</ol>")
    };
    let body = format!(
        "<h1>Segnalazione {}</h1><p class=\"stato\">{}</p><dl>\
         <dt>Oggetto</dt><dd>{}</dd><dt>Servizio</dt><dd>{}</dd>\
         <dt>Ente responsabile</dt><dd>{}</dd><dt>Ricevuta il</dt><dd>{}</dd>\
         <dt>Ultimo aggiornamento</dt><dd>{}</dd><dt>Risposta prevista entro</dt><dd>{}</dd></dl>\
         <h2>Aggiornamenti</h2>{notes}",
        escape(&t.reference),
        escape(t.status_label),
        escape(&t.subject),
        escape(&t.category),
        escape(&t.responsible),
        escape(&t.opened),
        escape(&t.updated),
        if t.expected.is_empty() {
            "—".to_string()
        } else {
            escape(&t.expected)
        },
    );
    page(&format!("Segnalazione {}", t.reference), &body)
}

fn html(status: StatusCode, body: &str) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// The page holds a capability in its URL: never cached, never sent on.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
