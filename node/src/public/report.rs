//! The citizens' report form (a disservice, a pothole, a broken lamp),
//! server-rendered and usable without JavaScript. It posts the Open311
//! fields to the same rules ([`super::open311::report_request`]: service,
//! place and comune, the photo re-encoded without metadata, contact and
//! consent) and opens the same ticket, channel `web`; the citizen lands on
//! the tracking page of their report.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::html;
use urpnet_proto::v1::Channel;

use super::booking::{l, page, refusal};
use super::{PublicState, Shared};
use crate::auth::{Actor, Role};
use crate::console::pages::tr;
use crate::error::NodeError;

/// The report form's routes.
pub fn routes() -> Router<Arc<PublicState>> {
    Router::new().route("/segnala", get(form).post(submit))
}

/// A rule broken (`field: rule`) as the domain's refusal.
fn invalid(message: &str) -> NodeError {
    match message.split_once(": ") {
        Some((field, rule)) => NodeError::invalid(field, rule),
        None => NodeError::invalid("form", message),
    }
}

/// The actor recorded on reports made on the web form.
fn website() -> Actor {
    Actor {
        id: "sito-web".into(),
        name: "Sito web".into(),
        role: Role::Integration,
    }
}

async fn form(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Response, Response> {
    state.admit(&headers, peer)?;
    let taxonomy = state.desk.taxonomy();
    let mut services: Vec<(String, String)> = taxonomy
        .categories()
        .filter(|c| c.citizen.is_some())
        .map(|c| (c.code.clone(), c.label.clone()))
        .collect();
    services.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(page(
        &state,
        StatusCode::OK,
        tr(l(), "Segnala un disservizio", "Report a problem"),
        html! {
            p { (tr(l(), "Descrivi il problema e dove si trova. Riceverai un codice e un link per seguire la segnalazione.", "Describe the problem and where it is. You will get a code and a link to follow your report.")) }
            form.card.wide method="post" action="/segnala" enctype="multipart/form-data" {
                fieldset {
                    legend { (tr(l(), "Il problema", "The problem")) }
                    label for="service_code" { (tr(l(), "Di cosa si tratta", "What it is about")) }
                    select #service_code name="service_code" required {
                        @for (code, label) in &services { option value=(code) { (label) } }
                    }
                    label for="description" { (tr(l(), "Descrizione", "Description")) }
                    textarea #description name="description" rows="5" required maxlength="10000" {}
                    label for="address_string" { (tr(l(), "Indirizzo (via, numero civico, comune)", "Address (street, number, comune)")) }
                    input #address_string name="address_string" required maxlength="500" autocomplete="street-address";
                    label for="media" { (tr(l(), "Foto (facoltativa; posizione e dati del telefono vengono tolti)", "Photo (optional; location and phone data are removed)")) }
                    input #media type="file" name="media" accept="image/jpeg,image/png,image/webp";
                }
                fieldset {
                    legend { (tr(l(), "I tuoi dati (facoltativi)", "Your details (optional)")) }
                    label for="first_name" { (tr(l(), "Nome", "Given name")) }
                    input #first_name name="first_name" autocomplete="given-name" maxlength="100";
                    label for="last_name" { (tr(l(), "Cognome", "Family name")) }
                    input #last_name name="last_name" autocomplete="family-name" maxlength="100";
                    label for="email" { (tr(l(), "E-mail (per ricevere gli aggiornamenti)", "E-mail (to get updates)")) }
                    input #email name="email" type="email" autocomplete="email" maxlength="254";
                    label for="phone" { (tr(l(), "Telefono", "Phone")) }
                    input #phone name="phone" type="tel" autocomplete="tel" maxlength="32";
                    div.check {
                        input #share_contact type="checkbox" name="share_contact" value="1";
                        label for="share_contact" { (tr(l(), "Se il problema è di un altro ente, passagli i miei dati", "If another body is competent, pass my details on to it")) }
                    }
                }
                button type="submit" { (tr(l(), "Invia la segnalazione", "Send the report")) }
            }
        },
    ))
}

async fn submit(state: Shared, request: Request) -> Result<Response, Response> {
    let headers = request.headers().clone();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .cloned()
        .map(|ConnectInfo(p)| p)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    state.admit(&headers, peer)?;
    let back = "/segnala";
    let form = super::open311::read_form(state.config.public.max_body_bytes, request)
        .await
        .map_err(|e| refusal(&state, invalid(&e), back))?;
    let req = super::open311::report_request(&state, &headers, &form, Channel::Web)
        .await
        .map_err(|e| refusal(&state, invalid(&e), back))?;
    let created = state
        .desk
        .create(&website(), req)
        .await
        .map_err(|e| refusal(&state, e, back))?;
    let t = &created.ticket;
    Ok(Redirect::to(&format!(
        "/track/{}?key={}",
        t.reference, created.tracking_key
    ))
    .into_response())
}
