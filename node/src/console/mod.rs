//! The operators' web console (DESIGN.md §14) on the node's console
//! listener (loopback by default): the queue with filters and live updates
//! (Server-Sent Events over the same change feed as `WatchTickets`), a
//! ticket's page with its history, notes, status and assignment, a new
//! request taken on the phone or at the desk, and the day's appointments.
//!
//! Every page is an adapter over the desk's domain functions, with the
//! operator's own Desk token: roles are the Desk's (a read-only token sees
//! and cannot post), and a ticket this node takes no part in does not
//! exist here. Sessions and CSRF: [`session`]. Pages: [`pages`] (escaped by
//! construction). Assets are embedded; no JavaScript is needed to work, a
//! small script adds the live queue.

pub mod pages;
pub mod session;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use urpnet_proto::limits::PerIdentity;
use urpnet_proto::v1::{
    Channel, CitizenContact, Consent, CreateTicketRequest, ListTicketsRequest, Location, Status,
};

use crate::appointments::Appointments;
use crate::auth::{Actor, Authenticator};
use crate::casework::{StatusChange, TicketDesk};
use crate::config::NodeConfig;
use crate::error::NodeError;
use pages::{Frame, tr};
use session::{Session, Sessions};

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// What the console's handlers share.
#[derive(Debug)]
pub struct ConsoleState {
    config: NodeConfig,
    desk: Arc<TicketDesk>,
    auth: Arc<Authenticator>,
    appointments: Option<Arc<Appointments>>,
    federation: Arc<crate::registry_link::Federation>,
    faq: Option<Arc<crate::faq::FaqBook>>,
    sessions: Sessions,
    logins: PerIdentity,
    secure: bool,
}

impl ConsoleState {
    /// Suggests FAQ answers and charter services while operators type.
    #[must_use]
    pub fn with_faq(mut self, faq: Arc<crate::faq::FaqBook>) -> Self {
        self.faq = Some(faq);
        self
    }

    /// A body's display name: this node's, a member's, or its id.
    pub fn body_name(&self, node: &str) -> String {
        self.federation
            .body_name(node, self.config.node.id.as_str(), &self.config.node.name)
    }

    /// The console of a node.
    pub fn new(
        config: NodeConfig,
        desk: Arc<TicketDesk>,
        auth: Arc<Authenticator>,
        appointments: Option<Arc<Appointments>>,
        federation: Arc<crate::registry_link::Federation>,
    ) -> Self {
        let c = &config.console;
        let sessions = Sessions::new(c.session_idle, c.session_max);
        let logins = PerIdentity::new("console_login", 1, c.login_burst);
        let secure = c.secure_cookies;
        Self {
            config,
            desk,
            auth,
            appointments,
            federation,
            faq: None,
            sessions,
            logins,
            secure,
        }
    }
}

type Shared = State<Arc<ConsoleState>>;
type Params = Query<BTreeMap<String, String>>;

/// A signed-in request.
struct Signed {
    id: String,
    session: Session,
    actor: Actor,
}

impl Signed {
    fn frame<'a>(&'a self, state: &'a ConsoleState, title: String, current: &'a str) -> Frame<'a> {
        Frame {
            lang: self.session.lang,
            title,
            body: &state.config.node.name,
            actor: Some(&self.actor),
            csrf: &self.session.csrf,
            current,
            notice: node_notice(state, self.session.lang),
        }
    }
}

/// What operators must know of the node's state before they act.
fn node_notice(state: &ConsoleState, l: &str) -> Option<String> {
    use crate::registry_link::RegistryReach;
    if state.federation.catching_up() {
        return Some(
            tr(
                l,
                "Nodo ripristinato da un backup: in attesa dei dati degli altri enti. Le modifiche sono sospese e riprendono da sole.",
                "This node was restored from a backup and is waiting for the other bodies' data. Changes are held and resume by themselves.",
            )
            .into(),
        );
    }
    if let RegistryReach::Unreachable { since_ms } = state.federation.registry_reach() {
        let since = jiff::Timestamp::from_millisecond(since_ms as i64)
            .map(|t| {
                t.to_zoned(urpnet_proto::calendar::rome())
                    .strftime("%d/%m %H:%M")
                    .to_string()
            })
            .unwrap_or_default();
        return Some(format!(
            "{} {since}: {}",
            tr(
                l,
                "Registro non raggiungibile dalle",
                "Registry unreachable since"
            ),
            tr(
                l,
                "per passare una richiesta indicare l'ente destinatario; il resto funziona.",
                "to hand a request on, name the receiving body; everything else works.",
            )
        ));
    }
    None
}

/// The session of a request, with its operator (the token re-checked: a
/// revoked token ends the session); otherwise the way to the sign-in page.
async fn signed(state: &ConsoleState, headers: &HeaderMap) -> Result<Signed, Response> {
    let to_login = || Redirect::to("/login").into_response();
    let id = session::cookie_of(headers).ok_or_else(to_login)?;
    let session = state.sessions.get(&id).ok_or_else(to_login)?;
    match state
        .auth
        .resolve(Some(&format!("Bearer {}", session.token)))
        .await
    {
        Ok(actor) => Ok(Signed { id, session, actor }),
        Err(_) => {
            state.sessions.close(&id);
            Err(to_login())
        }
    }
}

/// Refuses a form whose CSRF token is missing or not the session's.
#[allow(clippy::result_large_err)]
fn csrf(state: &ConsoleState, s: &Signed, token: &str) -> Result<(), Response> {
    if session::same(token, &s.session.csrf) {
        return Ok(());
    }
    metrics::counter!("urpnet_console_refused_total", "reason" => "csrf").increment(1);
    tracing::warn!(operator = %s.actor.id, "console form refused: missing or wrong CSRF token");
    let l = s.session.lang;
    Err(page(
        StatusCode::FORBIDDEN,
        &s.frame(state, tr(l, "Modulo non valido", "Invalid form").into(), ""),
        pages::alert(tr(
            l,
            "Il modulo è scaduto o non viene da questa console: ricarica la pagina e riprova.",
            "The form expired or did not come from this console: reload the page and try again.",
        )),
    ))
}

fn page(status: StatusCode, frame: &Frame<'_>, content: Markup) -> Response {
    (status, pages::layout(frame, content)).into_response()
}

/// A domain refusal as a page with the right status.
fn refusal(state: &ConsoleState, s: &Signed, e: NodeError) -> Response {
    let l = s.session.lang;
    let status = match &e {
        NodeError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        NodeError::NotFound(_) => StatusCode::NOT_FOUND,
        NodeError::PermissionDenied(_) | NodeError::Unauthenticated(_) => StatusCode::FORBIDDEN,
        NodeError::FailedPrecondition(_) | NodeError::AlreadyExists(_) => StatusCode::CONFLICT,
        NodeError::RateLimited(..) => StatusCode::TOO_MANY_REQUESTS,
        NodeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => {
            tracing::error!(error = %e, "console request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        tr(l, "Errore interno.", "Internal error.").to_string()
    } else {
        e.to_string()
    };
    page(
        status,
        &s.frame(state, tr(l, "Non eseguito", "Not done").into(), ""),
        html! {
            (pages::alert(&message))
            p { a href="/queue" { (tr(l, "Torna alla coda", "Back to the queue")) } }
        },
    )
}

/// The console's router.
pub fn router(state: Arc<ConsoleState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/queue") }))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/lang/{lang}", get(language))
        .route("/queue", get(queue))
        .route("/events", get(events))
        .route("/tickets/{id}", get(ticket))
        .route("/tickets/{id}/attachments/{sha256}", get(attachment))
        .route("/tickets/{id}/notes", post(note))
        .route("/tickets/{id}/status", post(status))
        .route("/tickets/{id}/assign", post(assign))
        .route("/tickets/{id}/handoff", get(handoff_page).post(handoff))
        .route("/tickets/{id}/answer", post(answer))
        .route("/tickets/{id}/share", post(share))
        .route("/tickets/{id}/merge", post(merge))
        .route("/inbox", get(inbox))
        .route("/new", get(new_page).post(create))
        .route("/suggest", get(suggest))
        .route("/appointments", get(agenda))
        .route("/appointments/{id}/mark", post(mark))
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .layer(middleware::from_fn(headers))
        .with_state(state)
}

/// Security headers on every answer; pages are never cached.
async fn headers(request: axum::extract::Request, next: Next) -> Response {
    let mut r = next.run(request).await;
    let h = r.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
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

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        JS,
    )
        .into_response()
}

fn lang_of(q: &str) -> &'static str {
    if q == "en" { "en" } else { "it" }
}

fn login_frame<'a>(state: &'a ConsoleState, lang: &'a str) -> Frame<'a> {
    Frame {
        lang,
        title: tr(lang, "Accesso", "Sign in").into(),
        body: &state.config.node.name,
        actor: None,
        csrf: "",
        current: "",
        notice: None,
    }
}

async fn login_page(State(state): Shared, Query(q): Params) -> Response {
    let lang = lang_of(q.get("lang").map_or("", String::as_str));
    page(
        StatusCode::OK,
        &login_frame(&state, lang),
        pages::login(lang, None),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    lang: String,
}

async fn login(
    State(state): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = lang_of(&form.lang);
    if let Err(wait) = state.logins.check(&peer.ip().to_string()) {
        metrics::counter!("urpnet_console_refused_total", "reason" => "login_rate").increment(1);
        tracing::warn!(client = %peer.ip(), "console sign-in attempts limited");
        let mut r = page(
            StatusCode::TOO_MANY_REQUESTS,
            &login_frame(&state, lang),
            pages::login(
                lang,
                Some(tr(
                    lang,
                    "Troppi tentativi: attendi qualche secondo.",
                    "Too many attempts: wait a few seconds.",
                )),
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let token = form.token.trim().to_string();
    match state.auth.resolve(Some(&format!("Bearer {token}"))).await {
        Ok(actor) => {
            let id = state.sessions.open(token, lang);
            tracing::info!(operator = %actor.id, "console sign-in");
            let mut r = Redirect::to("/queue").into_response();
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
                &id,
                state.secure,
                state.config.console.session_max,
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(_) => {
            metrics::counter!("urpnet_console_refused_total", "reason" => "login").increment(1);
            page(
                StatusCode::UNAUTHORIZED,
                &login_frame(&state, lang),
                pages::login(
                    lang,
                    Some(tr(
                        lang,
                        "Token sconosciuto o revocato.",
                        "Unknown or revoked token.",
                    )),
                ),
            )
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(state): Shared, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    let s = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = csrf(&state, &s, &form.csrf) {
        return r;
    }
    state.sessions.close(&s.id);
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie("", state.secure, Duration::ZERO)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn language(State(state): Shared, headers: HeaderMap, Path(lang): Path<String>) -> Response {
    if let Some(id) = session::cookie_of(&headers) {
        state.sessions.set_lang(&id, lang_of(&lang));
    }
    Redirect::to("/queue").into_response()
}

fn param<'a>(q: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    q.get(key).map_or("", String::as_str)
}

/// The queue's request from the page's filters.
fn queue_request(q: &BTreeMap<String, String>) -> ListTicketsRequest {
    let statuses = match param(q, "status") {
        "" => Vec::new(),
        "open" => [
            Status::New,
            Status::Assigned,
            Status::InProgress,
            Status::WaitingCitizen,
        ]
        .iter()
        .map(|s| *s as i32)
        .collect(),
        name => crate::shared_ticket::names::parse_status(name)
            .map(|s| vec![s as i32])
            .unwrap_or_default(),
    };
    ListTicketsRequest {
        statuses,
        category: param(q, "category").trim().to_string(),
        office: param(q, "office").trim().to_string(),
        channel: crate::shared_ticket::names::parse_channel(param(q, "channel"))
            .map_or(0, |c| c as i32),
        territory: param(q, "territory").trim().to_string(),
        text: param(q, "q").trim().to_string(),
        updated_since: None,
        page_size: 50,
        page_token: param(q, "page").to_string(),
    }
}

async fn queue(State(state): Shared, headers: HeaderMap, Query(q): Params) -> Response {
    let s = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let l = s.session.lang;
    let req = queue_request(&q);
    let (mut tickets, next) = match state.desk.list(&s.actor, &req).await {
        Ok(r) => r,
        Err(e) => return refusal(&state, &s, e),
    };
    let now = urpnet_proto::hlc::system_time_ms() as i64;
    if param(&q, "overdue") == "1" {
        tickets.retain(|t| {
            t.due_at.as_ref().is_some_and(|d| d.seconds * 1000 < now)
                && !crate::shared_ticket::lifecycle::is_terminal(t.status())
                && t.status() != Status::Resolved
        });
    }
    if headers.get("x-fragment").is_some_and(|v| v == "rows") {
        return pages::queue_rows(l, &tickets, now, &|n| state.body_name(n)).into_response();
    }
    let next_link = (!next.is_empty()).then(|| {
        let mut q2 = q.clone();
        q2.insert("page".into(), next.clone());
        format!(
            "/queue?{}",
            q2.iter()
                .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                .collect::<Vec<_>>()
                .join("&")
        )
    });
    let statuses = [
        ("", tr(l, "Tutti", "All")),
        ("open", tr(l, "Aperti", "Open")),
        ("new", tr(l, "Nuovi", "New")),
        ("in_progress", tr(l, "In lavorazione", "In progress")),
        (
            "waiting_citizen",
            tr(l, "In attesa del cittadino", "Waiting for the citizen"),
        ),
        ("resolved", tr(l, "Risolti", "Resolved")),
        ("closed", tr(l, "Chiusi", "Closed")),
    ];
    let channels = [
        "", "phone", "desk", "email", "pec", "web", "app", "chat", "social", "video", "open311",
    ];
    let content = html! {
        form.filters method="get" action="/queue" role="search" {
            div {
                label for="f-status" { (tr(l, "Stato", "Status")) }
                select #f-status name="status" {
                    @for (v, label) in statuses {
                        option value=(v) selected[param(&q, "status") == v] { (label) }
                    }
                }
            }
            div {
                label for="f-category" { (tr(l, "Categoria", "Category")) }
                input #f-category name="category" value=(param(&q, "category"));
            }
            div {
                label for="f-channel" { (tr(l, "Canale", "Channel")) }
                select #f-channel name="channel" {
                    @for c in channels {
                        option value=(c) selected[param(&q, "channel") == c] { (if c.is_empty() { tr(l, "Tutti", "All") } else { c }) }
                    }
                }
            }
            div {
                label for="f-office" { (tr(l, "Ufficio", "Office")) }
                input #f-office name="office" value=(param(&q, "office"));
            }
            div {
                label for="f-territory" { (tr(l, "Territorio (codice ISTAT)", "Territory (ISTAT code)")) }
                input #f-territory name="territory" inputmode="numeric" value=(param(&q, "territory"));
            }
            div {
                label for="f-q" { (tr(l, "Testo", "Text")) }
                input #f-q type="search" name="q" value=(param(&q, "q"));
            }
            div.check {
                input #f-overdue type="checkbox" name="overdue" value="1" checked[param(&q, "overdue") == "1"];
                label for="f-overdue" { (tr(l, "Solo scaduti", "Overdue only")) }
            }
            button type="submit" { (tr(l, "Filtra", "Filter")) }
        }
        (pages::live_note(l))
        table.queue {
            caption { (tr(l, "Richieste", "Requests")) " (" span #queue-count { (tickets.len()) } ")" }
            thead {
                tr {
                    th scope="col" { (tr(l, "Riferimento", "Reference")) }
                    th scope="col" { (tr(l, "Oggetto", "Subject")) }
                    th scope="col" { (tr(l, "Categoria", "Category")) }
                    th scope="col" { (tr(l, "Canale", "Channel")) }
                    th scope="col" { (tr(l, "Stato", "Status")) }
                    th scope="col" { (tr(l, "Ente responsabile", "Responsible body")) }
                    th scope="col" { (tr(l, "Aggiornata", "Updated")) }
                    th scope="col" { (tr(l, "Scadenza", "Due")) }
                }
            }
            tbody #queue-rows { (pages::queue_rows(l, &tickets, now, &|n| state.body_name(n))) }
        }
        @if let Some(link) = next_link {
            p { a href=(link) rel="next" { (tr(l, "Pagina successiva", "Next page")) } }
        }
    };
    page(
        StatusCode::OK,
        &s.frame(
            &state,
            tr(l, "Coda delle richieste", "Request queue").into(),
            "/queue",
        ),
        content,
    )
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Server-Sent Events: one `ticket` event per change committed here (the
/// change feed behind `WatchTickets`), for the queue's live update.
async fn events(State(state): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = signed(&state, &headers).await {
        return r;
    }
    let changes = state.desk.store().subscribe_changes();
    let stream = futures::stream::unfold(changes, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(change) => {
                    let reference = change
                        .ticket
                        .as_ref()
                        .map(|t| t.reference.clone())
                        .unwrap_or_default();
                    let event = Event::default().event("ticket").data(reference);
                    return Some((Ok::<_, Infallible>(event), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn ticket(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let s = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let l = s.session.lang;
    let (t, citizen) = match state.desk.get(&s.actor, &id, "").await {
        Ok(x) => x,
        Err(e) => return refusal(&state, &s, e),
    };
    let history = match state.desk.history(&s.actor, &t.id).await {
        Ok(h) => h,
        Err(e) => return refusal(&state, &s, e),
    };
    let targets = crate::shared_ticket::lifecycle::allowed_targets(t.status());
    let location = t.location.clone().unwrap_or_default();
    // Possible duplicates named at creation (the new-request form passes
    // them on), each still open here.
    let mut duplicates = Vec::new();
    for other in param(&q, "doppioni")
        .split(',')
        .filter(|d| !d.is_empty())
        .take(5)
    {
        if let Ok((d, _)) = state.desk.get(&s.actor, other, "").await
            && d.id != t.id
            && !crate::shared_ticket::lifecycle::is_terminal(d.status())
        {
            duplicates.push(d);
        }
    }
    let open_here = t.owner_node == state.config.node.id.as_str()
        && !crate::shared_ticket::lifecycle::is_terminal(t.status());
    let content = html! {
        dl.fields {
            dt { (tr(l, "Riferimento", "Reference")) } dd { (t.reference) }
            dt { (tr(l, "Oggetto", "Subject")) } dd { (t.subject) }
            dt { (tr(l, "Descrizione", "Description")) } dd { (pages::text(&t.description)) }
            dt { (tr(l, "Stato", "Status")) } dd { (pages::status_label(l, t.status())) }
            dt { (tr(l, "Categoria", "Category")) } dd { (t.category) }
            dt { (tr(l, "Canale", "Channel")) } dd { (pages::channel_label(l, t.channel())) }
            dt { (tr(l, "Luogo", "Place")) } dd { (location.address) " (" (location.istat_code) ")" }
            dt { (tr(l, "Ufficio", "Office")) } dd { (t.office) }
            dt { (tr(l, "Ente di origine", "Origin body")) } dd { (state.body_name(&t.origin_node)) }
            dt { (tr(l, "Ente responsabile", "Responsible body")) } dd { (state.body_name(&t.owner_node)) }
            dt { (tr(l, "Scadenza", "Due")) } dd { (pages::when(t.due_at.as_ref())) }
            @if let Some(c) = &citizen {
                dt { (tr(l, "Cittadino", "Citizen")) }
                dd { (c.full_name) " " (c.email) " " (c.phone) }
            }
        }
        @if !t.attachments.is_empty() {
            h2 { (tr(l, "Allegati", "Attachments")) }
            ul.attachments {
                @for a in &t.attachments {
                    li {
                        a href={ "/tickets/" (t.id) "/attachments/" (a.sha256) } { (a.file_name) }
                        " (" (a.media_type) ", " (a.size_bytes) " byte)"
                        @if a.media_type.starts_with("image/") {
                            br;
                            img src={ "/tickets/" (t.id) "/attachments/" (a.sha256) } alt=(a.file_name) loading="lazy" width="320";
                        }
                    }
                }
            }
        }
        h2 { (tr(l, "Storia", "History")) }
        table.history {
            caption.visually-hidden { (tr(l, "Eventi della richiesta", "The request's events")) }
            thead { tr {
                th scope="col" { (tr(l, "Quando", "When")) }
                th scope="col" { (tr(l, "Chi", "Who")) }
                th scope="col" { (tr(l, "Evento", "Event")) }
                th scope="col" { (tr(l, "Dettagli", "Details")) }
            } }
            tbody {
                @for item in &history {
                    @let (what, details) = crate::cli::output::describe(item.event.kind.as_ref());
                    tr {
                        td { (item.event.hlc.map(|h| urpnet_proto::calendar::iso_rome(h.wall_ms)).unwrap_or_default().get(..16).unwrap_or_default().replace('T', " ")) }
                        td { (item.event.author_node) " / " (item.event.actor) }
                        td { (what) }
                        td {
                            @if let Some(urpnet_proto::v1::ticket_event::Kind::Note(n)) = &item.event.kind {
                                (pages::text(&n.text))
                            } @else {
                                (details)
                            }
                        }
                    }
                }
            }
        }
        @if !duplicates.is_empty() && open_here {
            section.card {
                h2 { (tr(l, "Possibili doppioni", "Possible duplicates")) }
                p { (tr(l, "Richieste aperte simili: se è la stessa, unisci questa a quella.",
                        "Similar open requests: if it is the same, merge this one into it.")) }
                ul {
                    @for d in &duplicates {
                        li {
                            a href={ "/tickets/" (d.id) } { (d.reference) } " — " (d.subject)
                            form.inline method="post" action={ "/tickets/" (t.id) "/merge" } {
                                input type="hidden" name="csrf" value=(s.session.csrf);
                                input type="hidden" name="into" value=(d.id);
                                button type="submit" { (tr(l, "Unisci a questa", "Merge into this one")) }
                            }
                        }
                    }
                }
            }
        }
        div.actions {
            form.card method="post" action={ "/tickets/" (t.id) "/notes" } {
                h2 { (tr(l, "Aggiungi una nota", "Add a note")) }
                input type="hidden" name="csrf" value=(s.session.csrf);
                label for="n-text" { (tr(l, "Testo", "Text")) }
                textarea #n-text name="text" rows="4" required {}
                div.check {
                    input #n-public type="checkbox" name="public" value="1";
                    label for="n-public" { (tr(l, "Visibile al cittadino", "Visible to the citizen")) }
                }
                button type="submit" { (tr(l, "Aggiungi", "Add")) }
            }
            @if !targets.is_empty() {
                form.card method="post" action={ "/tickets/" (t.id) "/status" } {
                    h2 { (tr(l, "Cambia stato", "Change status")) }
                    input type="hidden" name="csrf" value=(s.session.csrf);
                    label for="s-to" { (tr(l, "Nuovo stato", "New status")) }
                    select #s-to name="to" {
                        @for st in targets {
                            option value=(crate::shared_ticket::names::status_name(*st)) { (pages::status_label(l, *st)) }
                        }
                    }
                    label for="s-reason" { (tr(l, "Motivo", "Reason")) }
                    input #s-reason name="reason";
                    button type="submit" { (tr(l, "Cambia", "Change")) }
                }
            }
            @if t.owner_node == state.config.node.id.as_str() && t.pending_handoff.is_none() && !crate::shared_ticket::lifecycle::is_terminal(t.status()) {
                form.card method="get" action={ "/tickets/" (t.id) "/handoff" } {
                    h2 { (tr(l, "Passa all'ente competente", "Hand to the competent body")) }
                    p { (tr(l, "Il registro indica l'ente competente e il motivo; confermi nella pagina successiva.",
                            "The registry names the competent body and why; you confirm on the next page.")) }
                    button type="submit" { (tr(l, "Chiedi al registro", "Ask the registry")) }
                }
            }
            @if t.pending_handoff.as_ref().is_some_and(|p| p.to_node == state.config.node.id.as_str()) {
                form.card method="post" action={ "/tickets/" (t.id) "/answer" } {
                    h2 { (tr(l, "Offerta in arrivo", "Incoming offer")) }
                    input type="hidden" name="csrf" value=(s.session.csrf);
                    label for="o-reason" { (tr(l, "Motivo (se rifiuti)", "Reason (if you decline)")) }
                    input #o-reason name="reason";
                    button type="submit" name="decision" value="accept" { (tr(l, "Accetta", "Accept")) }
                    " "
                    button type="submit" name="decision" value="decline" { (tr(l, "Rifiuta", "Decline")) }
                }
            }
            @if open_here {
                form.card method="post" action={ "/tickets/" (t.id) "/share" } {
                    h2 { (tr(l, "Condividi con un altro ente", "Share with another body")) }
                    input type="hidden" name="csrf" value=(s.session.csrf);
                    label for="sh-node" { (tr(l, "Ente (codice)", "Body (id)")) }
                    input #sh-node name="with_node" required;
                    button type="submit" { (tr(l, "Condividi", "Share")) }
                }
                form.card method="post" action={ "/tickets/" (t.id) "/merge" } {
                    h2 { (tr(l, "Unisci a un'altra richiesta", "Merge into another request")) }
                    input type="hidden" name="csrf" value=(s.session.csrf);
                    label for="m-into" { (tr(l, "Richiesta che resta (id)", "Request kept (id)")) }
                    input #m-into name="into" required;
                    button type="submit" { (tr(l, "Unisci", "Merge")) }
                }
            }
            form.card method="post" action={ "/tickets/" (t.id) "/assign" } {
                h2 { (tr(l, "Assegna a un ufficio", "Assign to an office")) }
                input type="hidden" name="csrf" value=(s.session.csrf);
                label for="a-office" { (tr(l, "Ufficio", "Office")) }
                input #a-office name="office" required value=(t.office);
                button type="submit" { (tr(l, "Assegna", "Assign")) }
            }
        }
    };
    page(
        StatusCode::OK,
        &s.frame(&state, format!("{} — {}", t.reference, t.subject), "/queue"),
        content,
    )
}

/// A file sent with a ticket this node holds, to an operator who may read
/// it: the ticket must name it (no reaching another ticket's files by
/// hash), and the hash is checked before any path is made of it.
async fn attachment(
    State(state): Shared,
    headers: HeaderMap,
    Path((id, sha256)): Path<(String, String)>,
) -> Response {
    let s = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (t, _) = match state.desk.get(&s.actor, &id, "").await {
        Ok(x) => x,
        Err(e) => return refusal(&state, &s, e),
    };
    let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return refusal(
            &state,
            &s,
            NodeError::invalid("sha256", "must be 64 lowercase hex digits"),
        );
    }
    if !t.attachments.iter().any(|a| a.sha256 == sha256) {
        return refusal(
            &state,
            &s,
            NodeError::NotFound(format!("attachment {sha256} of this ticket")),
        );
    }
    match state.desk.attachment(&s.actor, &sha256).await {
        Ok((meta, content)) => {
            let inline = matches!(
                meta.media_type.as_str(),
                "image/jpeg" | "image/png" | "image/webp"
            );
            let mut r = (StatusCode::OK, content).into_response();
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&meta.media_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            let name: String = meta
                .file_name
                .chars()
                .filter(|c| c.is_alphanumeric() || ".-_ ".contains(*c))
                .collect();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{}; filename=\"{name}\"",
                if inline { "inline" } else { "attachment" }
            )) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=300"),
            );
            r
        }
        Err(e) => refusal(&state, &s, e),
    }
}

#[derive(Deserialize)]
struct NoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    public: String,
}

/// Runs a form's action: session, CSRF, then `act`; back to the ticket.
async fn act<F, Fut>(
    state: &ConsoleState,
    headers: &HeaderMap,
    token: &str,
    id: &str,
    act: F,
) -> Response
where
    F: FnOnce(Actor) -> Fut,
    Fut: Future<Output = Result<(), NodeError>>,
{
    let s = match signed(state, headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = csrf(state, &s, token) {
        return r;
    }
    match act(s.actor.clone()).await {
        Ok(()) => Redirect::to(&format!("/tickets/{}", urlencode(id))).into_response(),
        Err(e) => refusal(state, &s, e),
    }
}

async fn note(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<NoteForm>,
) -> Response {
    let desk = state.desk.clone();
    let target = id.clone();
    act(&state, &headers, &f.csrf, &id, |actor| async move {
        desk.add_note(&actor, &target, f.public == "1", &f.text)
            .await
            .map(|_| ())
    })
    .await
}

#[derive(Deserialize)]
struct StatusForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    reason: String,
}

async fn status(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<StatusForm>,
) -> Response {
    let desk = state.desk.clone();
    let target = id.clone();
    act(&state, &headers, &f.csrf, &id, |actor| async move {
        let to = crate::shared_ticket::names::parse_status(&f.to)
            .ok_or_else(|| NodeError::invalid("to", "unknown status"))?;
        desk.change_status(
            &actor,
            &target,
            StatusChange {
                to: to as i32,
                reason: f.reason,
                merged_into: String::new(),
            },
        )
        .await
        .map(|_| ())
    })
    .await
}

#[derive(Deserialize)]
struct ShareForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    with_node: String,
}

async fn share(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ShareForm>,
) -> Response {
    let desk = state.desk.clone();
    let target = id.clone();
    act(&state, &headers, &f.csrf, &id, |actor| async move {
        desk.share(&actor, &target, f.with_node.trim())
            .await
            .map(|_| ())
    })
    .await
}

#[derive(Deserialize)]
struct MergeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    into: String,
}

async fn merge(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<MergeForm>,
) -> Response {
    let desk = state.desk.clone();
    let target = id.clone();
    act(&state, &headers, &f.csrf, &id, |actor| async move {
        desk.change_status(
            &actor,
            &target,
            StatusChange {
                to: Status::Merged as i32,
                reason: String::new(),
                merged_into: f.into.trim().to_string(),
            },
        )
        .await
        .map(|_| ())
    })
    .await
}

#[derive(Deserialize)]
struct AssignForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    office: String,
}

async fn assign(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<AssignForm>,
) -> Response {
    let desk = state.desk.clone();
    let target = id.clone();
    act(&state, &headers, &f.csrf, &id, |actor| async move {
        desk.assign(&actor, &target, f.office.trim())
            .await
            .map(|_| ())
    })
    .await
}

/// FAQ answers and charter services for the words typed so far (an HTML
/// fragment for the new-request form's script).
async fn suggest(State(state): Shared, headers: HeaderMap, Query(q): Params) -> Response {
    let s = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let l = s.session.lang;
    let text: String = param(&q, "q").chars().take(500).collect();
    let Some(faq) = &state.faq else {
        return html! {}.into_response();
    };
    if text.trim().chars().count() < 3 {
        return html! {}.into_response();
    }
    let answers = faq
        .suggest(&s.actor, "", &text, "", 5)
        .await
        .map(|(r, _, _)| r.hits)
        .unwrap_or_default();
    let services = faq
        .charter()
        .and_then(|c| c.search(&text, "", "", "", 5, true).ok())
        .map(|(hits, _)| hits)
        .unwrap_or_default();
    html! {
        h2 { (tr(l, "Risposte pronte", "Ready answers")) }
        @if answers.is_empty() && services.is_empty() {
            p { (tr(l, "Nessuna risposta pronta per queste parole.", "No ready answer for these words.")) }
        }
        @if !answers.is_empty() {
            h3 { "FAQ" }
            ul { @for h in &answers { li { (h.question) " — " (state.body_name(&h.owner)) } } }
        }
        @if !services.is_empty() {
            h3 { (tr(l, "Carta dei servizi", "Service charter")) }
            ul { @for h in &services { li { (h.title) " — " (h.body_name) } } }
        }
    }
    .into_response()
}

async fn handoff_page(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let s = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let l = s.session.lang;
    let (t, _) = match state.desk.get(&s.actor, &id, "").await {
        Ok(x) => x,
        Err(e) => return refusal(&state, &s, e),
    };
    let route = state.desk.route_preview(&s.actor, &id).await;
    let content = html! {
        p { (t.reference) " — " (t.subject) " (" (t.category) ")" }
        @match &route {
            Ok((target, reason)) => {
                p.card {
                    (tr(l, "Il registro indica: ", "The registry names: "))
                    strong { (state.body_name(target)) " (" (target) ")" }
                    br;
                    (tr(l, "Perché: ", "Why: ")) (reason)
                }
            }
            Err(e) => { (pages::alert(&e.to_string())) }
        }
        form.card method="post" action={ "/tickets/" (t.id) "/handoff" } {
            input type="hidden" name="csrf" value=(s.session.csrf);
            label for="h-to" { (tr(l, "Ente destinatario (codice)", "Receiving body (id)")) }
            input #h-to name="to_node" required value=(route.as_ref().map(|(t, _)| t.as_str()).unwrap_or_default());
            label for="h-reason" { (tr(l, "Motivo", "Reason")) }
            input #h-reason name="reason" value=(route.as_ref().map(|(_, r)| r.as_str()).unwrap_or_default());
            button type="submit" { (tr(l, "Conferma il passaggio", "Confirm the handoff")) }
        }
        p { a href={ "/tickets/" (t.id) } { (tr(l, "Annulla", "Cancel")) } }
    };
    page(
        StatusCode::OK,
        &s.frame(
            &state,
            tr(l, "Passaggio all'ente competente", "Handoff").into(),
            "/queue",
        ),
        content,
    )
}

#[derive(Deserialize)]
struct HandoffForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to_node: String,
    #[serde(default)]
    reason: String,
}

async fn handoff(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<HandoffForm>,
) -> Response {
    let desk = state.desk.clone();
    let target = id.clone();
    act(&state, &headers, &f.csrf, &id, |actor| async move {
        desk.handoff(&actor, &target, f.to_node.trim(), &f.reason, false)
            .await
            .map(|_| ())
    })
    .await
}

#[derive(Deserialize)]
struct AnswerForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
}

async fn answer(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<AnswerForm>,
) -> Response {
    let desk = state.desk.clone();
    let target = id.clone();
    act(&state, &headers, &f.csrf, &id, |actor| async move {
        let decline = (f.decision == "decline").then_some(f.reason.as_str());
        desk.answer_handoff(&actor, &target, decline)
            .await
            .map(|_| ())
    })
    .await
}

async fn inbox(State(state): Shared, headers: HeaderMap) -> Response {
    let s = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let l = s.session.lang;
    let req = urpnet_proto::v1::ListOffersRequest {
        page_size: 500,
        ..Default::default()
    };
    let (incoming, outgoing) = match state.desk.offers(&s.actor, &req).await {
        Ok(x) => (x.incoming, x.outgoing),
        Err(e) => return refusal(&state, &s, e),
    };
    let table = |offers: &[crate::casework::OfferView], caption: &str, other: bool| {
        html! {
            table.queue {
                caption { (caption) " (" (offers.len()) ")" }
                thead { tr {
                    th scope="col" { (tr(l, "Riferimento", "Reference")) }
                    th scope="col" { (tr(l, "Oggetto", "Subject")) }
                    th scope="col" { (if other { tr(l, "Verso", "To") } else { tr(l, "Da", "From") }) }
                    th scope="col" { (tr(l, "Motivo", "Reason")) }
                    th scope="col" { (tr(l, "Quando", "When")) }
                } }
                tbody {
                    @for o in offers {
                        tr data-ticket=(o.ticket.id) {
                            td { a href={ "/tickets/" (o.ticket.id) } { (o.ticket.reference) } }
                            td { (o.ticket.subject) }
                            td { (state.body_name(if other { &o.to_node } else { &o.from_node })) }
                            td { (o.reason) }
                            td { (urpnet_proto::calendar::iso_rome(o.offered_ms).get(..16).unwrap_or_default().replace('T', " ")) }
                        }
                    }
                }
            }
        }
    };
    let content = html! {
        (table(&incoming, tr(l, "Offerte ricevute", "Offers received"), false))
        (table(&outgoing, tr(l, "Offerte fatte", "Offers made"), true))
    };
    page(
        StatusCode::OK,
        &s.frame(
            &state,
            tr(l, "Offerte tra enti", "Offers between bodies").into(),
            "/inbox",
        ),
        content,
    )
}

async fn new_page(State(state): Shared, headers: HeaderMap) -> Response {
    let s = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let l = s.session.lang;
    let taxonomy = state.desk.taxonomy();
    let mut categories: Vec<(String, String)> = taxonomy
        .categories()
        .map(|c| (c.code.clone(), c.label.clone()))
        .collect();
    categories.sort();
    let request_id = format!("console_{}", session::random_hex(12));
    let istat = state
        .config
        .public
        .comuni
        .first()
        .cloned()
        .unwrap_or_default();
    let content = html! {
        form.card.wide method="post" action="/new" {
            input type="hidden" name="csrf" value=(s.session.csrf);
            input type="hidden" name="request_id" value=(request_id);
            fieldset {
                legend { (tr(l, "La richiesta", "The request")) }
                label for="c-channel" { (tr(l, "Canale", "Channel")) }
                select #c-channel name="channel" {
                    option value="phone" { (tr(l, "Telefono", "Phone")) }
                    option value="desk" { (tr(l, "Sportello", "Desk")) }
                    option value="email" { "E-mail" }
                    option value="pec" { "PEC" }
                }
                label for="c-category" { (tr(l, "Categoria", "Category")) }
                select #c-category name="category" required {
                    @for (code, name) in &categories { option value=(code) { (name) " (" (code) ")" } }
                }
                label for="c-subject" { (tr(l, "Oggetto", "Subject")) }
                input #c-subject name="subject" required minlength="3" maxlength="200";
                label for="c-description" { (tr(l, "Descrizione", "Description")) }
                textarea #c-description name="description" rows="5" maxlength="10000" {}
                section.suggest #suggest aria-live="polite" data-suggest="/suggest" {
                    h2 { (tr(l, "Risposte pronte", "Ready answers")) }
                    p { (tr(l, "Mentre scrivi oggetto e descrizione, qui compaiono le FAQ e i servizi della carta che rispondono.",
                            "As you type the subject and description, the FAQs and charter services that answer appear here.")) }
                }
                label for="c-istat" { (tr(l, "Comune (codice ISTAT)", "Comune (ISTAT code)")) }
                input #c-istat name="istat_code" required inputmode="numeric" pattern="[0-9]{6}" value=(istat);
                label for="c-address" { (tr(l, "Indirizzo", "Address")) }
                input #c-address name="address";
            }
            fieldset {
                legend { (tr(l, "Il cittadino (facoltativo)", "The citizen (optional)")) }
                label for="c-name" { (tr(l, "Nome e cognome", "Full name")) }
                input #c-name name="full_name" autocomplete="off";
                label for="c-email" { "E-mail" }
                input #c-email name="email" type="email" autocomplete="off";
                label for="c-phone" { (tr(l, "Telefono", "Phone")) }
                input #c-phone name="phone" type="tel" autocomplete="off";
                div.check {
                    input #c-updates type="checkbox" name="contact_for_updates" value="1";
                    label for="c-updates" { (tr(l, "Vuole essere informato", "Wants updates")) }
                }
                div.check {
                    input #c-share type="checkbox" name="share_with_competent_body" value="1";
                    label for="c-share" { (tr(l, "Consente di passare i suoi dati all'ente competente", "Agrees their data may go to the competent body")) }
                }
            }
            button type="submit" { (tr(l, "Registra la richiesta", "Record the request")) }
        }
    };
    page(
        StatusCode::OK,
        &s.frame(
            &state,
            tr(l, "Nuova richiesta", "New request").into(),
            "/new",
        ),
        content,
    )
}

#[derive(Deserialize)]
struct NewForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    istat_code: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    contact_for_updates: String,
    #[serde(default)]
    share_with_competent_body: String,
}

async fn create(State(state): Shared, headers: HeaderMap, Form(f): Form<NewForm>) -> Response {
    let s = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = csrf(&state, &s, &f.csrf) {
        return r;
    }
    let channel = match f.channel.as_str() {
        "desk" => Channel::Desk,
        "email" => Channel::Email,
        "pec" => Channel::Pec,
        _ => Channel::Phone,
    };
    let has_citizen =
        !(f.full_name.trim().is_empty() && f.email.trim().is_empty() && f.phone.trim().is_empty());
    let req = CreateTicketRequest {
        request_id: f.request_id,
        category: f.category,
        channel: channel as i32,
        subject: f.subject.trim().to_string(),
        description: f.description,
        location: Some(Location {
            istat_code: f.istat_code.trim().to_string(),
            address: f.address.trim().to_string(),
            coordinates: None,
        }),
        consent: Some(Consent {
            share_with_competent_body: f.share_with_competent_body == "1",
            contact_for_updates: f.contact_for_updates == "1",
        }),
        citizen: has_citizen.then(|| CitizenContact {
            full_name: f.full_name.trim().to_string(),
            email: f.email.trim().to_string(),
            phone: f.phone.trim().to_string(),
            fiscal_code: String::new(),
        }),
        ..CreateTicketRequest::default()
    };
    match state.desk.create(&s.actor, req).await {
        Ok(created) => {
            let dups: Vec<&str> = created
                .possible_duplicates
                .iter()
                .map(|d| d.ticket_id.as_str())
                .take(5)
                .collect();
            let suffix = if dups.is_empty() {
                String::new()
            } else {
                format!("?doppioni={}", dups.join(","))
            };
            Redirect::to(&format!("/tickets/{}{suffix}", created.ticket.id)).into_response()
        }
        Err(e) => refusal(&state, &s, e),
    }
}

async fn agenda(State(state): Shared, headers: HeaderMap, Query(q): Params) -> Response {
    let s = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let l = s.session.lang;
    let Some(appointments) = &state.appointments else {
        return refusal(
            &state,
            &s,
            NodeError::NotFound("booking at this node".into()),
        );
    };
    let date = param(&q, "date");
    let list = match appointments
        .agenda(&s.actor, param(&q, "office"), date)
        .await
    {
        Ok(list) => list,
        Err(e) => return refusal(&state, &s, e),
    };
    let content = html! {
        form.filters method="get" action="/appointments" {
            div {
                label for="g-date" { (tr(l, "Giorno", "Day")) }
                input #g-date type="date" name="date" value=(date);
            }
            div {
                label for="g-office" { (tr(l, "Ufficio", "Office")) }
                input #g-office name="office" value=(param(&q, "office"));
            }
            button type="submit" { (tr(l, "Mostra", "Show")) }
        }
        @if list.is_empty() {
            p { (tr(l, "Nessun appuntamento.", "No appointments.")) }
        } @else {
            table.queue {
                caption { (tr(l, "Appuntamenti del giorno", "The day's appointments")) }
                thead { tr {
                    th scope="col" { (tr(l, "Ora", "Time")) }
                    th scope="col" { (tr(l, "Ufficio", "Office")) }
                    th scope="col" { (tr(l, "Servizio", "Service")) }
                    th scope="col" { (tr(l, "Cittadino", "Citizen")) }
                    th scope="col" { (tr(l, "Canale", "Channel")) }
                    th scope="col" { (tr(l, "Documenti", "Documents")) }
                    th scope="col" { (tr(l, "Esito", "Outcome")) }
                } }
                tbody {
                    @for a in &list {
                        tr {
                            td { (a.start.get(11..16).unwrap_or_default()) "–" (a.end.get(11..16).unwrap_or_default()) }
                            td { (a.office_name) }
                            td { (a.service_title) }
                            td { @if let Some(c) = &a.citizen { (c.given_name) " " (c.family_name) } }
                            td { (a.channel) }
                            td { @for d in &a.documents { (d.file_name) br; } }
                            td {
                                @if a.status == "booked" {
                                    form.inline method="post" action={ "/appointments/" (a.id) "/mark" } {
                                        input type="hidden" name="csrf" value=(s.session.csrf);
                                        button type="submit" name="outcome" value="attended" { (tr(l, "Presente", "Attended")) }
                                        button type="submit" name="outcome" value="no_show" { (tr(l, "Assente", "No-show")) }
                                    }
                                } @else {
                                    (crate::appointments::status_it(&a.status))
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        StatusCode::OK,
        &s.frame(
            &state,
            tr(l, "Appuntamenti", "Appointments").into(),
            "/appointments",
        ),
        content,
    )
}

#[derive(Deserialize)]
struct MarkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    outcome: String,
}

async fn mark(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<MarkForm>,
) -> Response {
    let s = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = csrf(&state, &s, &f.csrf) {
        return r;
    }
    let Some(appointments) = &state.appointments else {
        return refusal(
            &state,
            &s,
            NodeError::NotFound("booking at this node".into()),
        );
    };
    match appointments.mark(&s.actor, &id, &f.outcome).await {
        Ok(_) => Redirect::to("/appointments").into_response(),
        Err(e) => refusal(&state, &s, e),
    }
}

/// Serves the console on `listener` until `shutdown`.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    state: Arc<ConsoleState>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "console listening");
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
