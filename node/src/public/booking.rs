//! The citizens' booking pages (Sportello virtuale), server-rendered and
//! usable without JavaScript, in the seed's order: office and service →
//! day → time → the citizen's data → confirmation, then the manage page
//! (move is done by booking again; cancel here). Every step calls the same
//! domain functions as the JSON routes ([`super::appointments`]); the slot
//! chosen is held while the citizen fills in the form. The footer carries
//! the links and `data-element`s the Designers Italia municipal model's
//! checker looks for (`appointment-booking`, `contacts`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use urpnet_proto::v1::{AppointmentCitizen, BookRequest, FreeSlotsRequest};

use super::format::Format;
use super::{PublicState, Shared};
use crate::appointments::{Appointments, local_words};
use crate::error::NodeError;

const CSS: &str = include_str!("../console/console.css");

/// The booking pages' routes.
pub fn routes() -> Router<Arc<PublicState>> {
    Router::new()
        .route("/prenota", get(start))
        .route("/prenota/{office}/{service}", get(days))
        .route("/prenota/{office}/{service}/blocca", post(hold))
        .route("/prenota/{office}/{service}/dati", get(data).post(book))
        .route("/appuntamento/{id}", get(manage))
        .route("/appuntamento/{id}/annulla", post(cancel))
        .route("/appuntamento/{id}/sposta", post(move_to))
        .route("/static/site.css", get(css))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

type Params = Query<BTreeMap<String, String>>;

fn param<'a>(q: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    q.get(key).map_or("", String::as_str)
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The page around `content`, with the body's name and the model's footer.
pub(super) fn layout(state: &PublicState, title: &str, content: Markup) -> Markup {
    let body = &state.config.node.name;
    html! {
        (DOCTYPE)
        html lang="it" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (body) }
                link rel="stylesheet" href="/static/site.css";
            }
            body {
                a.skip href="#main" { "Vai al contenuto" }
                header.top { div.brand { (body) " · Servizi al cittadino" } }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
                footer.bottom {
                    ul {
                        li { a href="/prenota" data-element="appointment-booking" { "Prenota un appuntamento" } }
                        li { a href="/segnala" data-element="report-inefficiency" { "Segnala un disservizio" } }
                        li { a href="/faq" data-element="faq" { "Domande frequenti" } }
                        li { a href={ "/charter/" (state.config.node.id.as_str()) "/page" } data-element="contacts" { "Uffici, orari e contatti" } }
                    }
                    p { (body) }
                }
            }
        }
    }
}

pub(super) fn page(
    state: &PublicState,
    status: StatusCode,
    title: &str,
    content: Markup,
) -> Response {
    let mut r = (status, layout(state, title, content)).into_response();
    r.headers_mut().insert(
        "content-security-policy",
        header::HeaderValue::from_static(
            "default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// A refusal, in words, with a way back.
pub(super) fn refusal(state: &PublicState, e: NodeError, back: &str) -> Response {
    let status = match &e {
        NodeError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        NodeError::NotFound(_) => StatusCode::NOT_FOUND,
        NodeError::FailedPrecondition(_) | NodeError::AlreadyExists(_) => StatusCode::CONFLICT,
        NodeError::RateLimited(..) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "booking page failed");
        "Errore interno: riprova più tardi.".to_string()
    } else {
        e.to_string()
    };
    page(
        state,
        status,
        "Non è stato possibile completare la richiesta",
        html! {
            p.alert role="alert" { (message) }
            p { a href=(back) { "Torna indietro" } }
        },
    )
}

#[allow(clippy::result_large_err)]
fn admit<'a>(
    state: &'a PublicState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<&'a Arc<Appointments>, Response> {
    state.charge(
        &super::client_of(state, headers, ConnectInfo(peer), None),
        Format::Json,
    )?;
    state.appointments.as_ref().ok_or_else(|| {
        refusal(
            state,
            NodeError::NotFound("booking at this body".into()),
            "/",
        )
    })
}

async fn start(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let plans = a.list_plans().await.map_err(|e| refusal(&state, e, "/"))?;
    let charter = state
        .charter
        .current(state.config.node.id.as_str())
        .await
        .ok()
        .and_then(|v| v.charter.clone())
        .unwrap_or_default();
    let name = |office: &str, service: &str| {
        (
            charter
                .offices
                .iter()
                .find(|o| o.id == office)
                .map_or(office.to_string(), |o| o.name.clone()),
            charter
                .services
                .iter()
                .find(|s| s.id == service)
                .map_or(service.to_string(), |s| s.title.clone()),
        )
    };
    let mut by_office: BTreeMap<String, Vec<(String, String, u32)>> = BTreeMap::new();
    for p in &plans {
        let (office, service) = name(&p.office, &p.service);
        by_office
            .entry(format!("{}\u{0}{}", office, p.office))
            .or_default()
            .push((p.service.clone(), service, p.length_min));
    }
    Ok(page(
        &state,
        StatusCode::OK,
        "Prenota un appuntamento",
        html! {
            p { "Scegli l'ufficio e il servizio: vedrai i giorni e gli orari liberi." }
            @if by_office.is_empty() { p { "Al momento non ci sono servizi prenotabili." } }
            @for (key, services) in &by_office {
                @let (office_name, office) = key.split_once('\u{0}').unwrap_or((key, key));
                section.card {
                    h2 { (office_name) }
                    ul {
                        @for (id, title, minutes) in services {
                            li { a href={ "/prenota/" (enc(office)) "/" (enc(id)) } { (title) } " (" (minutes) " minuti)" }
                        }
                    }
                }
            }
        },
    ))
}

async fn days(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((office, service)): Path<(String, String)>,
    Query(q): Params,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let free = a
        .free_slots(&FreeSlotsRequest {
            office: office.clone(),
            service: service.clone(),
            limit: 500,
            ..FreeSlotsRequest::default()
        })
        .await
        .map_err(|e| refusal(&state, e, "/prenota"))?;
    let mut by_day: BTreeMap<String, Vec<&urpnet_proto::v1::FreeSlot>> = BTreeMap::new();
    for s in &free.slots {
        by_day.entry(s.start[..10].to_string()).or_default().push(s);
    }
    let chosen = match param(&q, "giorno") {
        "" => by_day.keys().next().cloned().unwrap_or_default(),
        d => d.to_string(),
    };
    let base = format!("/prenota/{}/{}", enc(&office), enc(&service));
    // Moving a booking: the same choice, posted to the booking's move.
    let moving = (!param(&q, "sposta").is_empty()).then(|| {
        (
            format!(
                "&sposta={}&token={}",
                enc(param(&q, "sposta")),
                enc(param(&q, "token"))
            ),
            format!(
                "/appuntamento/{}/sposta?token={}",
                enc(param(&q, "sposta")),
                enc(param(&q, "token"))
            ),
        )
    });
    let (keep, action) = moving
        .clone()
        .unwrap_or_else(|| (String::new(), format!("{base}/blocca")));
    let day_words = |d: &str| {
        d.parse::<jiff::civil::Date>()
            .map(crate::charter::explain::day_words)
            .unwrap_or_else(|_| d.to_string())
    };
    Ok(page(
        &state,
        StatusCode::OK,
        &free.service_title,
        html! {
            p { "Presso: " strong { (free.office_name) } }
            @if by_day.is_empty() {
                p { "Nessun orario libero nelle prossime due settimane: riprova più avanti o contatta l'ufficio." }
            } @else {
                h2 { "Scegli il giorno" }
                ul.days {
                    @for (day, slots) in &by_day {
                        li {
                            @if *day == chosen {
                                a href={ (base) "?giorno=" (day) (keep) } aria-current="date" { strong { (day_words(day)) } }
                            } @else {
                                a href={ (base) "?giorno=" (day) (keep) } { (day_words(day)) }
                            }
                            " (" (slots.len()) " orari liberi)"
                        }
                    }
                }
                @if let Some(slots) = by_day.get(&chosen) {
                    form.card method="post" action=(action) {
                        fieldset {
                            legend { "Scegli l'orario di " (day_words(&chosen)) }
                            @for (i, s) in slots.iter().enumerate() {
                                div.check {
                                    input type="radio" name="start" id={ "t" (i) } value=(s.start) required checked[i == 0];
                                    label for={ "t" (i) } { (s.start.get(11..16).unwrap_or_default()) " – " (s.end.get(11..16).unwrap_or_default()) " (" (s.length_min) " minuti)" }
                                }
                            }
                        }
                        button type="submit" { (if moving.is_some() { "Sposta qui l'appuntamento" } else { "Continua" }) }
                    }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
struct HoldForm {
    #[serde(default)]
    start: String,
}

async fn hold(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((office, service)): Path<(String, String)>,
    Form(f): Form<HoldForm>,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let back = format!("/prenota/{}/{}", enc(&office), enc(&service));
    let held = a
        .hold(&office, &service, &f.start)
        .await
        .map_err(|e| refusal(&state, e, &back))?;
    Ok(Redirect::to(&format!(
        "{back}/dati?start={}&hold={}",
        enc(&f.start),
        enc(&held.hold_id)
    ))
    .into_response())
}

async fn data(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((office, service)): Path<(String, String)>,
    Query(q): Params,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let start = param(&q, "start");
    let when = start
        .parse::<Timestamp>()
        .map(|t| local_words(t.as_millisecond()))
        .unwrap_or_else(|_| start.to_string());
    let channels = a
        .list_plans()
        .await
        .ok()
        .and_then(|p| {
            p.into_iter()
                .find(|p| p.office == office && p.service == service)
        })
        .map(|p| p.channels)
        .unwrap_or_default();
    let video = channels.iter().any(|c| c == "video")
        && !state.config.appointments.video_base_url.is_empty();
    let key = format!("web_{}", crate::console::session::random_hex(12));
    Ok(page(
        &state,
        StatusCode::OK,
        "I tuoi dati",
        html! {
            p { "Appuntamento: " strong { (when) } ". Il posto è tenuto per te per qualche minuto mentre compili il modulo." }
            form.card.wide method="post" action={ "/prenota/" (enc(&office)) "/" (enc(&service)) "/dati" } {
                input type="hidden" name="start" value=(start);
                input type="hidden" name="hold_id" value=(param(&q, "hold"));
                input type="hidden" name="idempotency_key" value=(key);
                fieldset {
                    legend { "Come vuoi svolgere l'appuntamento" }
                    div.check {
                        input #ch-desk type="radio" name="channel" value="desk" checked[!video];
                        label for="ch-desk" { "Allo sportello" }
                    }
                    @if video {
                        div.check {
                            input #ch-video type="radio" name="channel" value="video" checked;
                            label for="ch-video" { "In videochiamata" }
                        }
                    }
                }
                fieldset {
                    legend { "I tuoi dati" }
                    label for="given_name" { "Nome" }
                    input #given_name name="given_name" autocomplete="given-name" required maxlength="100";
                    label for="family_name" { "Cognome" }
                    input #family_name name="family_name" autocomplete="family-name" required maxlength="100";
                    label for="address" { "Indirizzo" }
                    input #address name="address" autocomplete="street-address" required maxlength="300";
                    label for="email" { "E-mail (riceverai la conferma e il link per spostare o annullare)" }
                    input #email name="email" type="email" autocomplete="email" required maxlength="254";
                    label for="phone" { "Telefono (facoltativo)" }
                    input #phone name="phone" type="tel" autocomplete="tel" maxlength="32";
                    label for="notes" { "Di cosa hai bisogno (facoltativo)" }
                    textarea #notes name="notes" rows="3" maxlength="2000" {}
                }
                div.check {
                    input #consent type="checkbox" name="consent" value="1" required;
                    label for="consent" { "Acconsento al trattamento dei miei dati per l'appuntamento" }
                }
                button type="submit" { "Conferma la prenotazione" }
            }
        },
    ))
}

#[derive(Deserialize)]
struct BookForm {
    #[serde(default)]
    start: String,
    #[serde(default)]
    hold_id: String,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    given_name: String,
    #[serde(default)]
    family_name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    consent: String,
}

async fn book(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((office, service)): Path<(String, String)>,
    Form(f): Form<BookForm>,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let back = format!("/prenota/{}/{}", enc(&office), enc(&service));
    let made = a
        .book_citizen(BookRequest {
            body: String::new(),
            idempotency_key: f.idempotency_key,
            office,
            service,
            start: f.start,
            channel: if f.channel == "video" {
                "video"
            } else {
                "desk"
            }
            .into(),
            citizen: Some(AppointmentCitizen {
                given_name: f.given_name,
                family_name: f.family_name,
                address: f.address,
                email: f.email,
                phone: f.phone,
            }),
            consent_processing: f.consent == "1",
            consent_share: false,
            hold_id: f.hold_id,
            notes: f.notes,
        })
        .await
        .map_err(|e| refusal(&state, e, &back))?;
    let b = &made.view.booking;
    Ok(Redirect::to(&format!(
        "/appuntamento/{}?token={}&confermato=1",
        b.id, made.token
    ))
    .into_response())
}

async fn manage(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let token = param(&q, "token");
    let view = a
        .by_token(&id, token)
        .await
        .map_err(|e| refusal(&state, e, "/prenota"))?;
    let b = &view.booking;
    let (service, office, address) = view.plan.as_ref().map_or_else(
        || (b.service.clone(), b.office.clone(), String::new()),
        |p| {
            (
                p.service.title.clone(),
                p.office.name.clone(),
                p.office.address.clone(),
            )
        },
    );
    let documents: Vec<String> = view
        .plan
        .as_ref()
        .map(|p| p.service.documents.iter().map(|d| d.name.clone()).collect())
        .unwrap_or_default();
    let confirmed = param(&q, "confermato") == "1";
    Ok(page(
        &state,
        StatusCode::OK,
        if confirmed {
            "Prenotazione confermata"
        } else {
            "Il tuo appuntamento"
        },
        html! {
            @if param(&q, "spostato") == "1" {
                p role="status" { "Appuntamento spostato: riceverai una e-mail con il nuovo orario e il nuovo link (quello vecchio non vale più)." }
            }
            @if confirmed {
                p role="status" { "Riceverai una e-mail con i dettagli, l'invito per il calendario e questo link." }
            }
            dl.fields {
                dt { "Servizio" } dd { (service) }
                dt { "Quando" } dd { (local_words(b.start_ms)) " (" ((b.end_ms - b.start_ms) / 60_000) " minuti)" }
                dt { "Dove" } dd {
                    @if b.channel == "video" { "In videochiamata: il collegamento si apre 10 minuti prima" }
                    @else { (office) ", " (address) }
                }
                dt { "Stato" } dd { (crate::appointments::status_it(&b.status)) }
            }
            @if !documents.is_empty() && b.status == "booked" {
                h2 { "Cosa portare" }
                ul { @for d in &documents { li { (d) } } }
            }
            @if b.status == "booked" {
                @if b.channel == "video" {
                    p { a href={ "/appointments/" (b.id) "/room?token=" (token) } { "Entra nella stanza video" } }
                }
                p { a href={ "/appointments/" (b.id) "/calendar.ics?token=" (token) } { "Aggiungi al calendario" } }
                p { a href={ "/prenota/" (enc(&b.office)) "/" (enc(&b.service)) "?sposta=" (b.id) "&token=" (token) } { "Sposta l'appuntamento a un altro orario" } }
                form.card method="post" action={ "/appuntamento/" (b.id) "/annulla?token=" (token) } {
                    h2 { "Annulla l'appuntamento" }
                    button type="submit" { "Annulla l'appuntamento" }
                }
            }
        },
    ))
}

async fn cancel(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let token = param(&q, "token");
    let back = format!("/appuntamento/{id}?token={token}");
    let view = a
        .by_token(&id, token)
        .await
        .map_err(|e| refusal(&state, e, "/prenota"))?;
    a.cancel(&view, "Annullato dal cittadino.", false)
        .await
        .map_err(|e| refusal(&state, e, &back))?;
    Ok(Redirect::to(&back).into_response())
}

async fn move_to(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Params,
    Form(f): Form<HoldForm>,
) -> Result<Response, Response> {
    let a = admit(&state, &headers, peer)?;
    let token = param(&q, "token");
    let back = format!("/appuntamento/{}?token={}", enc(&id), enc(token));
    let view = a
        .by_token(&id, token)
        .await
        .map_err(|e| refusal(&state, e, "/prenota"))?;
    let moved = a
        .move_to(&view, &f.start, "", false)
        .await
        .map_err(|e| refusal(&state, e, &back))?;
    let b = &moved.booking;
    let token = a.manage_token(&b.id, b.moves);
    Ok(Redirect::to(&format!("/appuntamento/{}?token={token}&spostato=1", b.id)).into_response())
}
