//! The citizens' FAQ pages ("domande frequenti"): a search over the shared
//! FAQ set held here (the body's own entries and those of the bodies it
//! shares with), and one entry's page with its answer (Markdown rendered
//! with raw HTML shown as text). Each page ends with the model's "was this
//! page clear?" 1–5 question, counted without any personal data.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::booking::{l, page, refusal};
use super::{PublicState, Shared};
use crate::auth::{Actor, Role};
use crate::console::pages::tr;
use crate::error::NodeError;

/// The FAQ pages' routes and the page feedback.
pub fn routes() -> Router<Arc<PublicState>> {
    Router::new()
        .route("/faq", get(search))
        .route("/faq/{key}", get(entry))
        .route("/feedback", post(feedback))
}

/// The public's read-only view.
fn public() -> Actor {
    Actor {
        id: "sito-web".into(),
        name: "Sito web".into(),
        role: Role::ReadOnly,
    }
}

/// "Was this page clear?" (1–5), posted to `/feedback`.
pub fn feedback_form(path: &str) -> Markup {
    html! {
        form.card method="post" action="/feedback" data-element="feedback" {
            fieldset {
                legend { (tr(l(), "Quanto sono chiare le informazioni su questa pagina?", "How clear is the information on this page?")) }
                input type="hidden" name="page" value=(path);
                @for n in 1..=5u8 {
                    div.check {
                        input type="radio" name="rating" id={ "r" (n) } value=(n) required;
                        label for={ "r" (n) } { (n) @if n == 1 { (tr(l(), " (per niente)", " (not at all)")) } @if n == 5 { (tr(l(), " (molto)", " (very)")) } }
                    }
                }
            }
            button type="submit" { (tr(l(), "Invia", "Send")) }
        }
    }
}

async fn search(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Response> {
    state.admit(&headers, peer)?;
    let text = q.get("q").map_or("", String::as_str).trim().to_string();
    let Some(faq) = &state.faq else {
        return Err(refusal(
            &state,
            NodeError::NotFound("the FAQ set".into()),
            "/",
        ));
    };
    let hits = if text.is_empty() {
        Vec::new()
    } else {
        let query = crate::faq::FaqBook::query(text.clone(), "", "", "", "", 20, 20)
            .map_err(|e| refusal(&state, e, "/faq"))?;
        faq.search(&public(), &query)
            .map_err(|e| refusal(&state, e, "/faq"))?
            .hits
    };
    Ok(page(
        &state,
        StatusCode::OK,
        tr(l(), "Domande frequenti", "Frequently asked questions"),
        html! {
            form.filters role="search" method="get" action="/faq" {
                div {
                    label for="q" { (tr(l(), "Cerca tra le domande frequenti", "Search the frequently asked questions")) }
                    input #q type="search" name="q" value=(text);
                }
                button type="submit" { (tr(l(), "Cerca", "Search")) }
            }
            @if !text.is_empty() {
                @if hits.is_empty() {
                    p { (tr(l(), "Nessuna risposta per queste parole. Puoi scrivere all'URP o ", "No answer for these words. You can write to the URP or ")) a href="/segnala" { (tr(l(), "fare una segnalazione", "send a report")) } "." }
                } @else {
                    ul.faq {
                        @for h in &hits {
                            li { a href={ "/faq/" (form_urlencoded::byte_serialize(h.key.as_bytes()).collect::<String>()) } { (h.question) } " — " (state.body_name(&h.owner)) }
                        }
                    }
                }
            }
            (feedback_form("/faq"))
        },
    ))
}

async fn entry(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
) -> Result<Response, Response> {
    state.admit(&headers, peer)?;
    let Some(faq) = &state.faq else {
        return Err(refusal(
            &state,
            NodeError::NotFound("the FAQ set".into()),
            "/",
        ));
    };
    let (entry, _) = faq
        .get(&public(), &key)
        .await
        .map_err(|e| refusal(&state, e, "/faq"))?;
    let current = entry.current.unwrap_or_default();
    let content = entry
        .local_override
        .and_then(|o| o.content)
        .or(current.content)
        .unwrap_or_default();
    if current.retired {
        return Err(refusal(
            &state,
            NodeError::NotFound("this FAQ (withdrawn)".into()),
            "/faq",
        ));
    }
    let answer = crate::charter::export::markdown_html(&content.answer);
    Ok(page(
        &state,
        StatusCode::OK,
        &content.question,
        html! {
            div.answer data-element="faq-item" { (PreEscaped(answer)) }
            @if !content.links.is_empty() {
                h2 { (tr(l(), "Per saperne di più", "To know more")) }
                ul { @for l in &content.links { li { a href=(l.url) { (l.title) } } } }
            }
            p { (tr(l(), "Risposta di ", "Answer by ")) (state.body_name(&current.owner)) "." }
            p { a href="/faq" { (tr(l(), "Altre domande frequenti", "More frequently asked questions")) } }
            (feedback_form(&format!("/faq/{key}")))
        },
    ))
}

#[derive(Deserialize)]
struct Feedback {
    #[serde(default)]
    page: String,
    #[serde(default)]
    rating: String,
}

async fn feedback(
    state: Shared,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<Feedback>,
) -> Result<Response, Response> {
    state.admit(&headers, peer)?;
    let Ok(rating @ 1..=5) = f.rating.parse::<u8>() else {
        return Err(refusal(
            &state,
            NodeError::invalid("rating", "must be 1..=5"),
            "/",
        ));
    };
    // Only the kind of page is counted (no address, no identifier).
    let kind = match f.page.split('/').nth(1).unwrap_or_default() {
        "faq" => "faq",
        "prenota" | "appuntamento" => "booking",
        "segnala" => "report",
        "charter" => "charter",
        _ => "other",
    };
    metrics::counter!("urpnet_page_feedback_total", "page" => kind, "rating" => rating.to_string())
        .increment(1);
    let back = if f.page.starts_with('/') && !f.page.starts_with("//") && f.page.len() < 300 {
        f.page
    } else {
        "/".into()
    };
    Ok(page(
        &state,
        StatusCode::OK,
        tr(l(), "Grazie per il tuo parere", "Thank you for your opinion"),
        html! { p role="status" { (tr(l(), "Il tuo parere ci aiuta a migliorare le informazioni.", "Your opinion helps us improve the information.")) } p { a href=(back) { (tr(l(), "Torna alla pagina", "Back to the page")) } } },
    )
    .into_response())
}
