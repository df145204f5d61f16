//! The console's pages, server-rendered with `maud` (every interpolated
//! value is HTML-escaped by the macro: a note, a subject or a name with
//! `<script>` in it is shown as text). Italian first, English on request;
//! one layout with a skip link, the language attribute, landmarks and
//! labelled controls (WCAG 2.1 AA, as the AgID guidelines require).

use maud::{DOCTYPE, Markup, PreEscaped, html};
use urpnet_proto::v1::{Status, Ticket};

use crate::auth::Actor;

/// A label in the session's language.
pub fn tr(lang: &str, it: &'static str, en: &'static str) -> &'static str {
    if lang == "en" { en } else { it }
}

/// What every page shows around its content.
pub struct Frame<'a> {
    /// "it" or "en".
    pub lang: &'a str,
    /// The page's title.
    pub title: String,
    /// This body's name.
    pub body: &'a str,
    /// The operator, once signed in.
    pub actor: Option<&'a Actor>,
    /// The session's form token (for the logout form).
    pub csrf: &'a str,
    /// Which navigation entry is current.
    pub current: &'a str,
    /// A state of the node every operator should know of (the registry
    /// unreachable, writes held after a restore), shown on every page.
    pub notice: Option<String>,
}

/// The page around `content`.
pub fn layout(f: &Frame<'_>, content: Markup) -> Markup {
    let l = f.lang;
    let nav = [
        ("/queue", tr(l, "Coda", "Queue")),
        ("/inbox", tr(l, "Offerte", "Offers")),
        ("/new", tr(l, "Nuova richiesta", "New request")),
        ("/appointments", tr(l, "Appuntamenti", "Appointments")),
    ];
    html! {
        (DOCTYPE)
        html lang=(l) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (f.title) " · " (f.body) " · urpnet" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { (tr(l, "Vai al contenuto", "Skip to content")) }
                header.top {
                    div.brand { span.body { (f.body) } " · " (tr(l, "Console URP", "URP console")) }
                    @if let Some(actor) = f.actor {
                        nav aria-label=(tr(l, "Sezioni", "Sections")) {
                            ul {
                                @for (href, label) in nav {
                                    li {
                                        @if href == f.current {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        div.who {
                            span { (actor.name) " (" (actor.role.name()) ")" }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(f.csrf);
                                button type="submit" { (tr(l, "Esci", "Sign out")) }
                            }
                            a href={ "/lang/" (if l == "en" { "it" } else { "en" }) } lang=(if l == "en" { "it" } else { "en" }) {
                                (if l == "en" { "Italiano" } else { "English" })
                            }
                        }
                    }
                }
                @if let Some(notice) = &f.notice {
                    p.notice role="status" { (notice) }
                }
                main #main tabindex="-1" {
                    h1 { (f.title) }
                    (content)
                }
                footer.bottom {
                    p { "urpnet · " (f.body) }
                }
            }
        }
    }
}

/// An alert line (errors are announced to screen readers).
pub fn alert(message: &str) -> Markup {
    html! { p.alert role="alert" { (message) } }
}

/// The sign-in form.
pub fn login(lang: &str, error: Option<&str>) -> Markup {
    let l = lang;
    html! {
        @if let Some(e) = error { (alert(e)) }
        form.card method="post" action="/login" {
            p { (tr(l, "Accedi con il token operatore che il tuo ente ti ha dato (urpnet-node operator add).",
                    "Sign in with the operator token your body gave you (urpnet-node operator add).")) }
            label for="token" { (tr(l, "Token operatore", "Operator token")) }
            input #token type="password" name="token" autocomplete="off" required;
            input type="hidden" name="lang" value=(l);
            button type="submit" { (tr(l, "Accedi", "Sign in")) }
        }
    }
}

/// A status in the session's language.
pub fn status_label(lang: &str, s: Status) -> String {
    if lang == "en" {
        crate::shared_ticket::names::status_name(s).replace('_', " ")
    } else {
        crate::shared_ticket::names::status_label_it(s).to_string()
    }
}

/// An instant in Italian time, minutes.
pub fn when(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map(|t| {
        let ms = t.seconds * 1000 + i64::from(t.nanos) / 1_000_000;
        urpnet_proto::calendar::iso_rome(ms.max(0) as u64)
            .get(..16)
            .unwrap_or_default()
            .replace('T', " ")
    })
    .unwrap_or_default()
}

/// A channel in the session's language.
pub fn channel_label(lang: &str, c: urpnet_proto::v1::Channel) -> String {
    use urpnet_proto::v1::Channel as C;
    if lang == "en" {
        return crate::shared_ticket::names::channel_name(c);
    }
    match c {
        C::App => "app",
        C::Web => "web",
        C::Chat => "chat",
        C::Email => "e-mail",
        C::Pec => "PEC",
        C::Phone => "telefono",
        C::Desk => "sportello",
        C::Social => "social",
        C::Video => "video",
        C::Open311 => "Open311",
        C::Unspecified => "",
    }
    .to_string()
}

/// The queue's rows (`body` names a body by its node id).
pub fn queue_rows(
    lang: &str,
    tickets: &[Ticket],
    now_ms: i64,
    body: &dyn Fn(&str) -> String,
) -> Markup {
    html! {
        @for t in tickets {
            @let overdue = t.due_at.as_ref().is_some_and(|d| d.seconds * 1000 < now_ms)
                && !crate::shared_ticket::lifecycle::is_terminal(t.status())
                && t.status() != Status::Resolved;
            tr data-ticket=(t.id) {
                td { a href={ "/tickets/" (t.id) } { (t.reference) } }
                td { (t.subject) }
                td { (t.category) }
                td { (channel_label(lang, t.channel())) }
                td { (status_label(lang, t.status())) }
                td { (body(&t.owner_node)) }
                td { (when(t.updated_at.as_ref())) }
                td {
                    (when(t.due_at.as_ref()))
                    @if overdue { " " strong.overdue { (tr(lang, "scaduto", "overdue")) } }
                }
            }
        }
    }
}

/// The inline script-free hint that the page updates itself.
pub fn live_note(lang: &str) -> Markup {
    html! {
        p.live #live aria-live="polite" data-events="/events" {
            (tr(lang, "La coda si aggiorna da sola quando arrivano richieste.",
                "The queue updates itself when requests arrive."))
        }
    }
}

/// Preformatted user text (notes keep their line breaks, escaped).
pub fn text(s: &str) -> Markup {
    html! {
        @for (i, line) in s.lines().enumerate() {
            @if i > 0 { br; }
            (line)
        }
    }
}

/// A raw, constant fragment.
pub fn raw(s: &'static str) -> PreEscaped<&'static str> {
    PreEscaped(s)
}
