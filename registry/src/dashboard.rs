//! The coordinators' dashboard (DESIGN.md §14): members with health and
//! load, the routing explorer (category × comune → who, and why), trends
//! with the surge plot, and protected archive queries with CSV download —
//! the same functions as `RegistryAdmin` and `ArchiveAdmin`, read-only.
//!
//! It listens on loopback by default. Sign-in is bound to the coordinator's
//! identity on this machine: the token the registry writes to
//! `<data_dir>/dashboard.token` (mode 0600, like the CA's key), which only
//! the coordinator's account can read. A session is a random id in an
//! HttpOnly, SameSite=Strict cookie; sign-in is rate-limited.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use rand::RngCore as _;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use urpnet_proto::v1::{ArchiveQueryRequest, ArchiveTrendsRequest, Dimension, Health};

use crate::archive::Archive;
use crate::config::RegistryConfig;
use crate::error::{RegistryError, RegistryResult};
use crate::registry::Registry;

const COOKIE: &str = "urp_dashboard";
const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);

const CSS: &str = "
:root{--blue:#0066cc;--dark:#17324d;--line:#d1d9e0;--bg:#f5f7fa}
html{font-family:system-ui,sans-serif;color:#1a1a1a}body{margin:0;line-height:1.5}
a{color:var(--blue)}:focus-visible{outline:3px solid #ffb400;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:.5rem;background:#fff;padding:.5rem}
header{background:var(--dark);color:#fff;padding:.5rem 1rem;display:flex;gap:1.5rem;flex-wrap:wrap}
header a{color:#fff}main{padding:1rem;max-width:80rem;margin:auto}h1{color:var(--dark)}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line)}
thead th{background:var(--bg)}caption{text-align:left;font-weight:700}
label{display:block;font-weight:600}input,select{font:inherit;padding:.3rem;border:1px solid #5c6f82;border-radius:4px}
button{font:inherit;background:var(--blue);color:#fff;border:0;border-radius:4px;padding:.4rem .9rem;margin-top:.5rem}
form.filters{display:flex;gap:1rem;flex-wrap:wrap;align-items:end;background:var(--bg);padding:.75rem;border-radius:6px}
.surge{color:#a61919;font-weight:700}.plot svg{max-width:100%;height:auto}.alert{border-left:4px solid #a61919;padding:.5rem}
";

/// What the dashboard's handlers share.
pub struct DashboardState {
    config: RegistryConfig,
    registry: Arc<Registry>,
    archive: Arc<Archive>,
    token: String,
    sessions: Mutex<HashMap<String, Instant>>,
    logins: urpnet_proto::limits::PerIdentity,
}

impl std::fmt::Debug for DashboardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardState").finish_non_exhaustive()
    }
}

/// Where the sign-in token lives.
pub fn token_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("dashboard.token")
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl DashboardState {
    /// The dashboard of a registry; writes its sign-in token once.
    ///
    /// # Errors
    /// The token file cannot be read or written.
    pub fn new(
        config: RegistryConfig,
        registry: Arc<Registry>,
        archive: Arc<Archive>,
    ) -> RegistryResult<Self> {
        let path = token_path(&config.registry.data_dir);
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().len() >= 32 => t.trim().to_string(),
            _ => {
                let t = random_hex(32);
                urpnet_proto::signing::write_private_file(&path, t.as_bytes())
                    .map_err(|e| RegistryError::Internal(format!("{}: {e}", path.display())))?;
                t
            }
        };
        Ok(Self {
            config,
            registry,
            archive,
            token,
            sessions: Mutex::new(HashMap::new()),
            logins: urpnet_proto::limits::PerIdentity::new("dashboard_login", 1, 5),
        })
    }

    fn signed_in(&self, headers: &HeaderMap) -> bool {
        let Some(id) = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_string())
        else {
            return false;
        };
        let mut sessions = self.sessions.lock().expect("sessions");
        sessions.retain(|_, at| at.elapsed() < SESSION_MAX);
        sessions.contains_key(&id)
    }
}

type Shared = State<Arc<DashboardState>>;
type Params = Query<BTreeMap<String, String>>;

fn param<'a>(q: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    q.get(key).map_or("", String::as_str)
}

fn layout(state: &DashboardState, title: &str, content: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="it" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (state.config.registry.name) }
                style { (PreEscaped(CSS)) }
            }
            body {
                a.skip href="#main" { "Vai al contenuto" }
                header {
                    strong { "Registro " (state.config.registry.name) }
                    nav aria-label="Sezioni" {
                        a href="/members" { "Membri" } " · "
                        a href="/route" { "Instradamento" } " · "
                        a href="/trends" { "Tendenze" } " · "
                        a href="/archive" { "Archivio" }
                    }
                }
                main #main tabindex="-1" { h1 { (title) } (content) }
            }
        }
    };
    let mut r = (StatusCode::OK, page).into_response();
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The dashboard's router.
pub fn router(state: Arc<DashboardState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/members") }))
        .route("/login", get(login_page).post(login))
        .route("/members", get(members))
        .route("/route", get(route))
        .route("/trends", get(trends))
        .route("/archive", get(archive))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

fn login_form(state: &DashboardState, error: Option<&str>) -> Response {
    let mut r = layout(
        state,
        "Accesso coordinatore",
        html! {
            @if let Some(e) = error { p.alert role="alert" { (e) } }
            form method="post" action="/login" {
                label for="token" { "Token del cruscotto (" (token_path(&state.config.registry.data_dir).display()) ")" }
                input #token type="password" name="token" required autocomplete="off";
                button type="submit" { "Accedi" }
            }
        },
    );
    if error.is_some() {
        *r.status_mut() = StatusCode::UNAUTHORIZED;
    }
    r
}

async fn login_page(State(state): Shared) -> Response {
    login_form(&state, None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(state): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    if state.logins.check(&peer.ip().to_string()).is_err() {
        let mut r = login_form(&state, Some("Troppi tentativi: attendi qualche secondo."));
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return r;
    }
    let given = f.token.trim();
    let same = given.len() == state.token.len()
        && given
            .bytes()
            .zip(state.token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        tracing::warn!(client = %peer.ip(), "dashboard sign-in refused");
        return login_form(&state, Some("Token non valido."));
    }
    let id = random_hex(32);
    state
        .sessions
        .lock()
        .expect("sessions")
        .insert(id.clone(), Instant::now());
    let mut r = Redirect::to("/members").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_MAX.as_secs()
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

macro_rules! signed_in {
    ($state:expr, $headers:expr) => {
        if !$state.signed_in(&$headers) {
            return Redirect::to("/login").into_response();
        }
    };
}

fn health_it(h: Health) -> &'static str {
    match h {
        Health::Reachable => "raggiungibile",
        Health::Unreachable => "non raggiungibile",
        Health::Unknown => "mai sentito",
    }
}

async fn members(State(state): Shared, headers: HeaderMap) -> Response {
    signed_in!(state, headers);
    let (list, version) = state.registry.membership().list();
    layout(
        &state,
        "Membri della federazione",
        html! {
            table {
                caption { (list.len()) " membri (versione dell'elenco " (version) ")" }
                thead { tr {
                    th scope="col" { "Ente" } th scope="col" { "Livello" } th scope="col" { "Territorio" }
                    th scope="col" { "Stato" } th scope="col" { "Salute" } th scope="col" { "Richieste aperte" }
                    th scope="col" { "In coda" } th scope="col" { "Operatori" } th scope="col" { "Capacità/ora" }
                } }
                tbody {
                    @for m in &list {
                        @let load = m.load.clone().unwrap_or_default();
                        tr {
                            td { (m.display_name) " (" (m.id) ")" }
                            td { (m.level().as_str_name().trim_start_matches("LEVEL_").to_lowercase()) }
                            td { (m.territory.join(", ")) }
                            td { (m.status().as_str_name().trim_start_matches("MEMBER_STATUS_").to_lowercase()) }
                            td { (health_it(m.health())) }
                            td { (load.open_tickets) }
                            td { (load.queue_waiting) }
                            td { (load.operators_on_duty) }
                            td { (load.capacity_per_hour) }
                        }
                    }
                }
            }
        },
    )
}

async fn route(State(state): Shared, headers: HeaderMap, Query(q): Params) -> Response {
    signed_in!(state, headers);
    let (category, comune) = (param(&q, "category"), param(&q, "comune"));
    let taxonomy = state.registry.taxonomy();
    let answer = (!category.is_empty() && !comune.is_empty()).then(|| {
        state
            .registry
            .membership()
            .route(&taxonomy, category, comune)
    });
    layout(
        &state,
        "Esploratore dell'instradamento",
        html! {
            form.filters method="get" action="/route" {
                div { label for="category" { "Categoria" } input #category name="category" value=(category) required; }
                div { label for="comune" { "Comune (codice ISTAT)" } input #comune name="comune" value=(comune) required inputmode="numeric"; }
                button type="submit" { "Chi è competente?" }
            }
            @match answer {
                Some(Ok(r)) => {
                    p {
                        "Competente: " strong { (r.member.as_ref().map(|m| format!("{} ({})", m.display_name, m.id)).unwrap_or_default()) }
                        @if r.fallback { " — ente di riserva" }
                    }
                    p { "Perché: " (r.reason) }
                }
                Some(Err(e)) => { p.alert role="alert" { (e.to_string()) } }
                None => {}
            }
        },
    )
}

async fn trends(State(state): Shared, headers: HeaderMap, Query(q): Params) -> Response {
    signed_in!(state, headers);
    let req = ArchiveTrendsRequest {
        week: 0,
        baseline_weeks: 20,
        level: 0,
        category: param(&q, "category").to_string(),
        territory: param(&q, "territory").to_string(),
        min_count: 0,
        alpha: 0.0,
        all: true,
    };
    let result = state.archive.trends(&req).await;
    let content = match result {
        Err(e) => html! { p.alert role="alert" { (e.to_string()) } },
        Ok(r) => {
            let plot = crate::archive::cli::plot_svg(&r, 13, 5).ok();
            let mut rows: Vec<_> = r.rows.iter().collect();
            rows.sort_by(|a, b| b.surge.cmp(&a.surge).then(b.count.cmp(&a.count)));
            html! {
                form.filters method="get" action="/trends" {
                    div { label for="t-category" { "Categoria" } input #t-category name="category" value=(param(&q, "category")); }
                    div { label for="t-territory" { "Territorio (ISTAT)" } input #t-territory name="territory" value=(param(&q, "territory")); }
                    button type="submit" { "Mostra" }
                }
                @if let Some((svg, drawn, marked)) = plot {
                    figure.plot {
                        (PreEscaped(svg))
                        figcaption { "Contatti per settimana: le " (drawn) " serie più grandi; " (marked) " picchi cerchiati in rosso." }
                    }
                }
                table {
                    caption { "Settimana " (r.week) " contro le " (r.baseline_weeks) " precedenti" }
                    thead { tr {
                        th scope="col" { "Categoria" } th scope="col" { "Territorio" } th scope="col" { "Questa settimana" }
                        th scope="col" { "Media" } th scope="col" { "Rapporto" } th scope="col" { "Picco" }
                    } }
                    tbody {
                        @for row in rows.iter().take(50) {
                            tr {
                                td { (row.category) }
                                td { (row.territory_name) " (" (row.territory) ")" }
                                td { @if row.suppressed { "< k" } @else { (row.count) } }
                                td { (format!("{:.1}", row.baseline_mean)) }
                                td { (format!("{:.1}×", row.ratio)) }
                                td { @if row.surge { span.surge { "picco" } } }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&state, "Tendenze", content)
}

async fn archive(State(state): Shared, headers: HeaderMap, Query(q): Params) -> Response {
    signed_in!(state, headers);
    let by = match param(&q, "by") {
        "" => "category,outcome",
        b => b,
    };
    let dims: Vec<i32> = by
        .split(',')
        .filter_map(|d| match d.trim() {
            "category" => Some(Dimension::Category),
            "channel" => Some(Dimension::Channel),
            "territory" => Some(Dimension::Territory),
            "week" => Some(Dimension::Week),
            "outcome" => Some(Dimension::Outcome),
            "handling" => Some(Dimension::Handling),
            "overflow" => Some(Dimension::Overflow),
            _ => None,
        })
        .map(|d| d as i32)
        .collect();
    let result = state
        .archive
        .query(&ArchiveQueryRequest {
            group_by: dims,
            level: 0,
            filter: None,
            k: 0,
        })
        .await;
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            return layout(
                &state,
                "Archivio",
                html! { p.alert role="alert" { (e.to_string()) } },
            );
        }
    };
    if param(&q, "format") == "csv" {
        return match crate::archive::cli::query_csv(&r, false) {
            Ok(csv) => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"archivio.csv\"",
                    ),
                ],
                csv,
            )
                .into_response(),
            Err(e) => layout(
                &state,
                "Archivio",
                html! { p.alert role="alert" { (e.to_string()) } },
            ),
        };
    }
    let csv_link = format!(
        "/archive?by={}&format=csv",
        form_urlencoded::byte_serialize(by.as_bytes()).collect::<String>()
    );
    layout(
        &state,
        "Archivio anonimo",
        html! {
            form.filters method="get" action="/archive" {
                div { label for="by" { "Raggruppa per (category, channel, territory, week, outcome, handling, overflow)" } input #by name="by" value=(by); }
                button type="submit" { "Interroga" }
            }
            p { "Totale " (r.total) " record; celle sotto k = " (r.k) " nascoste (" (r.suppressed_small) "), complementari (" (r.suppressed_complementary) "). I conteggi portano un rumore di al più ±3, lo stesso a ogni richiesta. "
                a href=(csv_link) download { "Scarica CSV" } }
            table {
                caption { "Conteggi" }
                thead { tr { @for c in &r.columns { th scope="col" { (c) } } th scope="col" { "Conteggio" } } }
                tbody {
                    @for cell in r.cells.iter().take(500) {
                        tr {
                            @for k in &cell.keys { td { (k) } }
                            td { @if cell.suppressed.is_empty() { (cell.count) } @else { "nascosta (" (cell.suppressed) ")" } }
                        }
                    }
                }
            }
        },
    )
}

/// Serves the dashboard until `shutdown`.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    state: Arc<DashboardState>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), token = %token_path(&state.config.registry.data_dir).display(), "dashboard listening");
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
