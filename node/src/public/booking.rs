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

use super::{PublicState, Shared};
use crate::appointments::{Appointments, local_words};
use crate::console::pages::tr;
use crate::error::NodeError;

const CSS: &str = include_str!("../console/console.css");

tokio::task_local! {
    /// The language of the request being answered ("it" or "en").
    static LANG: &'static str;
}

/// The language of the request being answered.
pub(super) fn l() -> &'static str {
    LANG.try_with(|l| *l).unwrap_or("it")
}

/// Answers each request in the language its `lingua` cookie names
/// (Italian by default).
pub(super) async fn language(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let lang = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == "lingua")
        .map_or("it", |(_, v)| if v == "en" { "en" } else { "it" });
    LANG.scope(lang, next.run(request)).await
}

/// `GET /lingua/{it|en}`: remembers the choice and goes back.
async fn choose_language(Path(lang): Path<String>, headers: HeaderMap) -> Response {
    let lang = if lang == "en" { "en" } else { "it" };
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.split_once("://").map(|(_, rest)| rest))
        .and_then(|rest| rest.find('/').map(|i| rest[i..].to_string()))
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .unwrap_or_else(|| "/prenota".into());
    let mut r = Redirect::to(&back).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&format!(
        "lingua={lang}; Path=/; SameSite=Lax; Max-Age=31536000"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

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
        .route("/lingua/{lang}", get(choose_language))
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
        html lang=(l()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (body) }
                link rel="stylesheet" href="/static/site.css";
            }
            body {
                a.skip href="#main" { (tr(l(), "Vai al contenuto", "Skip to content")) }
                header.top {
                    div.brand { (body) " · " (tr(l(), "Servizi al cittadino", "Services for citizens")) }
                    div.who {
                        @if l() == "en" {
                            a href="/lingua/it" lang="it" { "Italiano" }
                        } @else {
                            a href="/lingua/en" lang="en" { "English" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
                footer.bottom {
                    ul {
                        li { a href="/prenota" data-element="appointment-booking" { (tr(l(), "Prenota un appuntamento", "Book an appointment")) } }
                        li { a href="/segnala" data-element="report-inefficiency" { (tr(l(), "Segnala un disservizio", "Report a problem")) } }
                        li { a href="/faq" data-element="faq" { (tr(l(), "Domande frequenti", "Frequently asked questions")) } }
                        li { a href={ "/charter/" (state.config.node.id.as_str()) "/page" } data-element="contacts" { (tr(l(), "Uffici, orari e contatti", "Offices, hours and contacts")) } }
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
        NodeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "booking page failed");
        tr(
            l(),
            "Errore interno: riprova più tardi.",
            "Internal error: try again later.",
        )
        .to_string()
    } else {
        e.to_string()
    };
    page(
        state,
        status,
        tr(
            l(),
            "Non è stato possibile completare la richiesta",
            "The request could not be completed",
        ),
        html! {
            p.alert role="alert" { (message) }
            p { a href=(back) { (tr(l(), "Torna indietro", "Go back")) } }
        },
    )
}

#[allow(clippy::result_large_err)]
fn admit<'a>(
    state: &'a PublicState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<&'a Arc<Appointments>, Response> {
    state.admit(headers, peer)?;
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
        tr(l(), "Prenota un appuntamento", "Book an appointment"),
        html! {
            p { (tr(l(), "Scegli l'ufficio e il servizio: vedrai i giorni e gli orari liberi.", "Choose the office and the service: you will see the free days and times.")) }
            @if by_office.is_empty() { p { (tr(l(), "Al momento non ci sono servizi prenotabili.", "No service can be booked at the moment.")) } }
            @for (key, services) in &by_office {
                @let (office_name, office) = key.split_once('\u{0}').unwrap_or((key, key));
                section.card {
                    h2 { (office_name) }
                    ul {
                        @for (id, title, minutes) in services {
                            li { a href={ "/prenota/" (enc(office)) "/" (enc(id)) } { (title) } " (" (minutes) " " (tr(l(), "minuti", "minutes")) ")" }
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
            p { (tr(l(), "Presso: ", "At: ")) strong { (free.office_name) } }
            @if by_day.is_empty() {
                p { (tr(l(), "Nessun orario libero nelle prossime due settimane: riprova più avanti o contatta l'ufficio.", "No free time in the next two weeks: try again later or contact the office.")) }
            } @else {
                h2 { (tr(l(), "Scegli il giorno", "Choose the day")) }
                ul.days {
                    @for (day, slots) in &by_day {
                        li {
                            @if *day == chosen {
                                a href={ (base) "?giorno=" (day) (keep) } aria-current="date" { strong { (day_words(day)) } }
                            } @else {
                                a href={ (base) "?giorno=" (day) (keep) } { (day_words(day)) }
                            }
                            " (" (slots.len()) " " (tr(l(), "orari liberi", "free times")) ")"
                        }
                    }
                }
                @if let Some(slots) = by_day.get(&chosen) {
                    form.card method="post" action=(action) {
                        fieldset {
                            legend { (tr(l(), "Scegli l'orario di ", "Choose the time on ")) (day_words(&chosen)) }
                            @for (i, s) in slots.iter().enumerate() {
                                div.check {
                                    input type="radio" name="start" id={ "t" (i) } value=(s.start) required checked[i == 0];
                                    label for={ "t" (i) } { (s.start.get(11..16).unwrap_or_default()) " – " (s.end.get(11..16).unwrap_or_default()) " (" (s.length_min) " minuti)" }
                                }
                            }
                        }
                        button type="submit" { (if moving.is_some() { tr(l(), "Sposta qui l'appuntamento", "Move the appointment here") } else { tr(l(), "Continua", "Continue") }) }
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
        tr(l(), "I tuoi dati", "Your details"),
        html! {
            p { (tr(l(), "Appuntamento: ", "Appointment: ")) strong { (when) } (tr(l(), ". Il posto è tenuto per te per qualche minuto mentre compili il modulo.", ". The seat is held for you for a few minutes while you fill in the form.")) }
            form.card.wide method="post" action={ "/prenota/" (enc(&office)) "/" (enc(&service)) "/dati" } {
                input type="hidden" name="start" value=(start);
                input type="hidden" name="hold_id" value=(param(&q, "hold"));
                input type="hidden" name="idempotency_key" value=(key);
                fieldset {
                    legend { (tr(l(), "Come vuoi svolgere l'appuntamento", "How you want the appointment")) }
                    div.check {
                        input #ch-desk type="radio" name="channel" value="desk" checked[!video];
                        label for="ch-desk" { (tr(l(), "Allo sportello", "At the desk")) }
                    }
                    @if video {
                        div.check {
                            input #ch-video type="radio" name="channel" value="video" checked;
                            label for="ch-video" { (tr(l(), "In videochiamata", "By video call")) }
                        }
                    }
                }
                fieldset {
                    legend { (tr(l(), "I tuoi dati", "Your details")) }
                    label for="given_name" { (tr(l(), "Nome", "Given name")) }
                    input #given_name name="given_name" autocomplete="given-name" required maxlength="100";
                    label for="family_name" { (tr(l(), "Cognome", "Family name")) }
                    input #family_name name="family_name" autocomplete="family-name" required maxlength="100";
                    label for="address" { (tr(l(), "Indirizzo", "Address")) }
                    input #address name="address" autocomplete="street-address" required maxlength="300";
                    label for="email" { (tr(l(), "E-mail (riceverai la conferma e il link per spostare o annullare)", "E-mail (you will get the confirmation and the link to move or cancel)")) }
                    input #email name="email" type="email" autocomplete="email" required maxlength="254";
                    label for="phone" { (tr(l(), "Telefono (facoltativo)", "Phone (optional)")) }
                    input #phone name="phone" type="tel" autocomplete="tel" maxlength="32";
                    label for="notes" { (tr(l(), "Di cosa hai bisogno (facoltativo)", "What you need (optional)")) }
                    textarea #notes name="notes" rows="3" maxlength="2000" {}
                }
                div.check {
                    input #consent type="checkbox" name="consent" value="1" required;
                    label for="consent" { (tr(l(), "Acconsento al trattamento dei miei dati per l'appuntamento", "I agree to the processing of my data for the appointment")) }
                }
                button type="submit" { (tr(l(), "Conferma la prenotazione", "Confirm the booking")) }
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
            tr(l(), "Prenotazione confermata", "Booking confirmed")
        } else {
            tr(l(), "Il tuo appuntamento", "Your appointment")
        },
        html! {
            @if param(&q, "spostato") == "1" {
                p role="status" { (tr(l(), "Appuntamento spostato: riceverai una e-mail con il nuovo orario e il nuovo link (quello vecchio non vale più).", "Appointment moved: you will get an e-mail with the new time and a new link (the old one no longer works).")) }
            }
            @if confirmed {
                p role="status" { (tr(l(), "Riceverai una e-mail con i dettagli, l'invito per il calendario e questo link.", "You will get an e-mail with the details, the calendar invitation and this link.")) }
            }
            dl.fields {
                dt { (tr(l(), "Servizio", "Service")) } dd { (service) }
                dt { (tr(l(), "Quando", "When")) } dd { (local_words(b.start_ms)) " (" ((b.end_ms - b.start_ms) / 60_000) " " (tr(l(), "minuti", "minutes")) ")" }
                dt { (tr(l(), "Dove", "Where")) } dd {
                    @if b.channel == "video" { (tr(l(), "In videochiamata: il collegamento si apre 10 minuti prima", "By video call: the room opens 10 minutes before")) }
                    @else { (office) ", " (address) }
                }
                dt { (tr(l(), "Stato", "Status")) } dd { (if l() == "en" { crate::appointments::status_en(&b.status) } else { crate::appointments::status_it(&b.status).to_string() }) }
            }
            @if !documents.is_empty() && b.status == "booked" {
                h2 { (tr(l(), "Cosa portare", "What to bring")) }
                ul { @for d in &documents { li { (d) } } }
            }
            @if b.status == "booked" {
                @if b.channel == "video" {
                    p { a href={ "/appointments/" (b.id) "/room?token=" (token) } { (tr(l(), "Entra nella stanza video", "Enter the video room")) } }
                }
                p { a href={ "/appointments/" (b.id) "/calendar.ics?token=" (token) } { (tr(l(), "Aggiungi al calendario", "Add to calendar")) } }
                p { a href={ "/prenota/" (enc(&b.office)) "/" (enc(&b.service)) "?sposta=" (b.id) "&token=" (token) } { (tr(l(), "Sposta l'appuntamento a un altro orario", "Move the appointment to another time")) } }
                form.card method="post" action={ "/appuntamento/" (b.id) "/annulla?token=" (token) } {
                    h2 { (tr(l(), "Annulla l'appuntamento", "Cancel the appointment")) }
                    button type="submit" { (tr(l(), "Annulla l'appuntamento", "Cancel the appointment")) }
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
