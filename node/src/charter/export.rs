//! The charter in the forms others consume:
//!
//! - a service page in the order of the Designers Italia municipal model
//!   (category, title, status, summary, *A chi è rivolto*, *Come fare*,
//!   *Cosa serve*, *Cosa si ottiene*, *Tempi e scadenze*, *Accedi al
//!   servizio*, *Condizioni di servizio*, *Contatti*, topics), as Markdown
//!   and as HTML carrying the `data-element` attributes the model's
//!   conformity checker looks for, so a comune can feed its site from it;
//! - the printable charter (every office with its hours, then every
//!   service);
//! - JSON-LD: schema.org `GovernmentService`/`GovernmentOffice` with
//!   `OpeningHoursSpecification`, and a CPSV-AP_IT view (`PublicService`,
//!   `Channel`, `Input`, `Output`, `Cost`, `ServiceProcessingTime`,
//!   `ServiceStatus`, `isPhysicallyAvailableAt`, `serviceKeyword`) for
//!   open-data portals;
//! - the office door sign (SVG, A4 portrait): office, where, hours,
//!   services, who is responsible.

use std::fmt::Write as _;

use serde_json::{Value, json};
use urpnet_proto::v1::{Charter, CharterOffice, CharterService};

use super::explain::{WEEKDAYS, cost_words, offices_of, responsible_words, time_words};

/// Escapes text for HTML and XML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Markdown to HTML; raw HTML in the source is shown as text, never run.
pub fn markdown_html(text: &str) -> String {
    use pulldown_cmark::{Event, Parser};
    let events = Parser::new(text).map(|e| match e {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        e => e,
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

/// The weekly hours of an office, one line per weekday with its ranges
/// ("lunedì: 08:30–12:30, 15:30–17:30"); closed days omitted.
pub fn week_lines(office: &CharterOffice) -> Vec<String> {
    (1..=7u32)
        .filter_map(|d| {
            let mut ranges: Vec<(&str, &str)> = office
                .hours
                .iter()
                .filter(|h| h.weekday == d)
                .map(|h| (h.start.as_str(), h.end.as_str()))
                .collect();
            ranges.sort();
            (!ranges.is_empty()).then(|| {
                format!(
                    "{}: {}",
                    WEEKDAYS[(d - 1) as usize],
                    ranges
                        .iter()
                        .map(|(s, e)| format!("{s}–{e}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

fn channel_label(channel: &str) -> &'static str {
    match channel {
        "desk" => "Allo sportello",
        "online" => "Online",
        "pec" => "Per PEC",
        "phone" => "Per telefono",
        "post" => "Per posta",
        "booking" => "Su appuntamento",
        _ => "Altro",
    }
}

fn office_of<'a>(charter: &'a Charter, id: &str) -> Option<&'a CharterOffice> {
    charter.offices.iter().find(|o| o.id == id)
}

fn access_lines(charter: &Charter, s: &CharterService) -> Vec<String> {
    s.delivered
        .iter()
        .map(|d| {
            let what = office_of(charter, &d.office_id)
                .map(|o| format!("{}, {}", o.name, o.address))
                .unwrap_or_else(|| d.address.clone());
            format!("{}: {what}", channel_label(&d.channel))
        })
        .collect()
}

fn contact_lines(charter: &Charter, s: &CharterService) -> Vec<String> {
    offices_of(charter, s)
        .iter()
        .map(|o| {
            let mut line = format!("{} — {}", o.name, o.address);
            for (label, v) in [("tel.", &o.phone), ("e-mail", &o.email), ("PEC", &o.pec)] {
                if !v.is_empty() {
                    line.push_str(&format!("; {label} {v}"));
                }
            }
            line
        })
        .collect()
}

/// One service page in the municipal model's order, as Markdown.
pub fn service_markdown(charter: &Charter, s: &CharterService) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "_{}_\n", s.categories.join(", "));
    let _ = writeln!(out, "## {}\n", s.title);
    let _ = writeln!(out, "**Stato:** {}\n", status_words(s));
    if !s.summary.is_empty() {
        let _ = writeln!(out, "{}\n", s.summary);
    }
    if !s.description.is_empty() {
        let _ = writeln!(out, "{}\n", s.description);
    }
    let section = |out: &mut String, title: &str, body: &str| {
        if !body.trim().is_empty() {
            let _ = writeln!(out, "### {title}\n\n{}\n", body.trim());
        }
    };
    section(&mut out, "A chi è rivolto", &s.audience);
    section(&mut out, "Come fare", &s.how_to);
    let needed: Vec<String> = s
        .documents
        .iter()
        .map(|d| {
            if d.where_to_get.is_empty() {
                format!("- {}", d.name)
            } else {
                format!("- {} ({})", d.name, d.where_to_get)
            }
        })
        .collect();
    section(&mut out, "Cosa serve", &needed.join("\n"));
    section(&mut out, "Cosa si ottiene", &s.outcome);
    section(&mut out, "Tempi e scadenze", &time_words(s));
    section(&mut out, "Quanto costa", &cost_words(s.cost.as_ref()));
    let access: Vec<String> = access_lines(charter, s)
        .iter()
        .map(|l| format!("- {l}"))
        .collect();
    section(&mut out, "Accedi al servizio", &access.join("\n"));
    section(&mut out, "Condizioni di servizio", &s.conditions);
    let mut contacts: Vec<String> = contact_lines(charter, s)
        .iter()
        .map(|l| format!("- {l}"))
        .collect();
    let responsible = responsible_words(charter, s);
    if !responsible.is_empty() {
        contacts.insert(0, format!("- Responsabile: {responsible}"));
    }
    section(&mut out, "Contatti", &contacts.join("\n"));
    if !s.legal_references.is_empty() {
        section(
            &mut out,
            "Riferimenti normativi",
            &s.legal_references
                .iter()
                .map(|l| format!("- {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    if !s.keywords.is_empty() {
        let _ = writeln!(out, "_Argomenti: {}_\n", s.keywords.join(", "));
    }
    out
}

fn status_words(s: &CharterService) -> String {
    let today = jiff::Zoned::now()
        .with_time_zone(urpnet_proto::calendar::rome())
        .date()
        .to_string();
    if !s.valid_until.is_empty() && s.valid_until < today {
        format!("Servizio non più attivo dal {}", s.valid_until)
    } else if !s.valid_from.is_empty() && s.valid_from > today {
        format!("Servizio attivo dal {}", s.valid_from)
    } else {
        "Servizio attivo".into()
    }
}

/// The whole charter, printable, as Markdown: offices with their hours,
/// then every service page.
pub fn charter_markdown(charter: &Charter, body_name: &str, version: u64) -> String {
    let mut out =
        format!("# Carta dei servizi — {body_name}\n\nVersione {version}.\n\n## Uffici\n\n");
    for o in &charter.offices {
        let _ = writeln!(out, "### {}\n\n{}", o.name, o.address);
        for (label, v) in [
            ("Piano", &o.floor),
            ("Stanza", &o.room),
            ("Come arrivare", &o.directions),
            ("Accessibilità", &o.accessibility),
            ("Telefono", &o.phone),
            ("E-mail", &o.email),
            ("PEC", &o.pec),
        ] {
            if !v.is_empty() {
                let _ = writeln!(out, "- {label}: {v}");
            }
        }
        let _ = writeln!(out, "\nOrari:\n");
        for line in week_lines(o) {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
    }
    out.push_str("## Servizi\n\n");
    for s in &charter.services {
        out.push_str(&service_markdown(charter, s).replacen("## ", "### ", 1));
    }
    out
}

/// One service page as HTML with the municipal model's `data-element`
/// attributes (page index, breadcrumb, title, status, description,
/// sections, access buttons, contacts, topics).
pub fn service_html(
    charter: &Charter,
    s: &CharterService,
    body_name: &str,
    booking_url: &str,
) -> String {
    let e = escape;
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<article class="service" lang="it"><nav aria-label="Percorso"><ol data-element="breadcrumb"><li>{}</li><li>Servizi</li><li>{}</li></ol></nav>"#,
        e(body_name),
        e(&s.categories.join(", "))
    );
    let _ = write!(
        h,
        r#"<h1 data-element="service-title">{}</h1><p data-element="service-status">{}</p><p data-element="service-description">{}</p>"#,
        e(&s.title),
        e(&status_words(s)),
        e(&s.summary)
    );
    let sections: [(&str, &str); 8] = [
        ("a-chi-e-rivolto", "A chi è rivolto"),
        ("come-fare", "Come fare"),
        ("cosa-serve", "Cosa serve"),
        ("cosa-si-ottiene", "Cosa si ottiene"),
        ("tempi-e-scadenze", "Tempi e scadenze"),
        ("accedi-al-servizio", "Accedi al servizio"),
        ("condizioni-di-servizio", "Condizioni di servizio"),
        ("contatti", "Contatti"),
    ];
    h.push_str(r#"<nav aria-label="Indice della pagina"><ul data-element="page-index">"#);
    for (id, title) in sections {
        let _ = write!(h, r##"<li><a href="#{id}">{title}</a></li>"##);
    }
    h.push_str("</ul></nav>");
    if !s.description.is_empty() {
        let _ = write!(
            h,
            r#"<div data-element="service-extended-description">{}</div>"#,
            markdown_html(&s.description)
        );
    }
    let para = |t: &str| -> String {
        let t = if t.trim().is_empty() {
            "Nessuna indicazione."
        } else {
            t
        };
        t.split("\n\n")
            .map(|p| format!("<p>{}</p>", e(p.trim())))
            .collect()
    };
    let section = |h: &mut String, id: &str, title: &str, element: &str, body: String| {
        let _ = write!(
            h,
            r#"<section id="{id}"><h2>{title}</h2><div data-element="{element}">{body}</div></section>"#
        );
    };
    section(
        &mut h,
        sections[0].0,
        sections[0].1,
        "service-addressed",
        para(&s.audience),
    );
    section(
        &mut h,
        sections[1].0,
        sections[1].1,
        "service-how-to",
        para(&s.how_to),
    );
    let docs: String = if s.documents.is_empty() {
        "<p>Nessun documento richiesto.</p>".into()
    } else {
        let items: String = s
            .documents
            .iter()
            .map(|d| {
                if d.where_to_get.is_empty() {
                    format!("<li>{}</li>", e(&d.name))
                } else {
                    format!(
                        "<li>{} <small>({})</small></li>",
                        e(&d.name),
                        e(&d.where_to_get)
                    )
                }
            })
            .collect();
        format!("<p>Porta con te:</p><ul>{items}</ul>")
    };
    section(&mut h, sections[2].0, sections[2].1, "service-needed", docs);
    section(
        &mut h,
        sections[3].0,
        sections[3].1,
        "service-achieved",
        para(&s.outcome),
    );
    section(
        &mut h,
        sections[4].0,
        sections[4].1,
        "service-calendar-text",
        format!(
            "<p>{}</p><p>Costo: {}</p>",
            e(&time_words(s)),
            e(&cost_words(s.cost.as_ref()))
        ),
    );
    let mut access = String::new();
    for d in &s.delivered {
        match d.channel.as_str() {
            "booking" => {
                let _ = write!(
                    access,
                    r#"<p><a data-element="service-booking-access" class="button" href="{}">Prenota appuntamento</a></p>"#,
                    e(booking_url)
                );
            }
            "online" => {
                let _ = write!(
                    access,
                    r#"<p><a data-element="service-online-access" class="button" href="{}">Accedi online</a></p>"#,
                    e(&d.address)
                );
            }
            _ => {
                let what = office_of(charter, &d.office_id)
                    .map(|o| format!("{}, {}", o.name, o.address))
                    .unwrap_or_else(|| d.address.clone());
                let _ = write!(
                    access,
                    r#"<p data-element="service-generic-access">{}: {}</p>"#,
                    channel_label(&d.channel),
                    e(&what)
                );
            }
        }
    }
    section(
        &mut h,
        sections[5].0,
        sections[5].1,
        "service-access",
        access,
    );
    section(
        &mut h,
        sections[6].0,
        sections[6].1,
        "service-conditions",
        para(&s.conditions),
    );
    let mut contacts = String::new();
    let responsible = responsible_words(charter, s);
    if !responsible.is_empty() {
        let _ = write!(contacts, "<p>Responsabile: {}</p>", e(&responsible));
    }
    for line in contact_lines(charter, s) {
        let _ = write!(contacts, "<p>{}</p>", e(&line));
    }
    let _ = write!(
        h,
        r#"<section id="contatti"><h2>Contatti</h2><div data-element="service-area">{contacts}</div></section>"#
    );
    h.push_str(r#"<p>Argomenti: "#);
    for k in &s.keywords {
        let _ = write!(
            h,
            r#"<a data-element="service-topic" href="?q={}">{}</a> "#,
            e(k),
            e(k)
        );
    }
    let _ = write!(
        h,
        r#"</p><p><a data-element="appointment-booking" href="{}">Prenota un appuntamento</a></p></article>"#,
        e(booking_url)
    );
    h
}

/// The printable charter as one HTML page.
pub fn charter_html(charter: &Charter, body_name: &str, version: u64, booking_url: &str) -> String {
    let e = escape;
    let mut h = format!(
        r#"<!doctype html><html lang="it"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Carta dei servizi — {name}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:48rem;margin:auto;padding:1rem;color:#1a1a1a}}h1,h2{{color:#0b3d91}}.office,.service{{border-top:2px solid #0b3d91;margin-top:2rem}}.button{{display:inline-block;padding:.4rem .8rem;background:#0b3d91;color:#fff;text-decoration:none;border-radius:4px}}@media print{{.button{{color:#000;background:none;border:1px solid #000}}}}</style></head><body><h1>Carta dei servizi — {name}</h1><p>Versione {version}</p><h2>Uffici</h2>"#,
        name = e(body_name)
    );
    for o in &charter.offices {
        let _ = write!(
            h,
            r#"<section class="office" id="ufficio-{}"><h3>{}</h3><p>{}</p>"#,
            e(&o.id),
            e(&o.name),
            e(&o.address)
        );
        for (label, v) in [
            ("Piano", &o.floor),
            ("Stanza", &o.room),
            ("Come arrivare", &o.directions),
            ("Accessibilità", &o.accessibility),
            ("Telefono", &o.phone),
            ("E-mail", &o.email),
            ("PEC", &o.pec),
        ] {
            if !v.is_empty() {
                let _ = write!(h, "<p>{label}: {}</p>", e(v));
            }
        }
        h.push_str("<ul>");
        for line in week_lines(o) {
            let _ = write!(h, "<li>{}</li>", e(&line));
        }
        h.push_str("</ul></section>");
    }
    h.push_str("<h2>Servizi</h2>");
    for s in &charter.services {
        h.push_str(&service_html(charter, s, body_name, booking_url));
    }
    h.push_str("</body></html>");
    h
}

const DAY_URIS: [&str; 7] = [
    "https://schema.org/Monday",
    "https://schema.org/Tuesday",
    "https://schema.org/Wednesday",
    "https://schema.org/Thursday",
    "https://schema.org/Friday",
    "https://schema.org/Saturday",
    "https://schema.org/Sunday",
];

fn office_jsonld(base: &str, o: &CharterOffice) -> Value {
    let hours: Vec<Value> = o
        .hours
        .iter()
        .map(|h| {
            json!({
                "@type": "OpeningHoursSpecification",
                "dayOfWeek": DAY_URIS[(h.weekday.clamp(1, 7) - 1) as usize],
                "opens": h.start,
                "closes": h.end,
            })
        })
        .collect();
    let special: Vec<Value> = o
        .exceptions
        .iter()
        .flat_map(|x| {
            if x.ranges.is_empty() {
                vec![json!({"@type": "OpeningHoursSpecification", "validFrom": x.date, "validThrough": x.date, "opens": "00:00", "closes": "00:00", "description": x.reason})]
            } else {
                x.ranges
                    .iter()
                    .map(|r| json!({"@type": "OpeningHoursSpecification", "validFrom": x.date, "validThrough": x.date, "opens": r.start, "closes": r.end, "description": x.reason}))
                    .collect()
            }
        })
        .collect();
    let mut v = json!({
        "@type": "GovernmentOffice",
        "@id": format!("{base}#ufficio-{}", o.id),
        "identifier": o.id,
        "name": o.name,
        "address": {"@type": "PostalAddress", "streetAddress": o.address, "addressCountry": "IT"},
        "openingHoursSpecification": hours,
        "specialOpeningHoursSpecification": special,
    });
    if let Some(c) = &o.coordinates {
        v["geo"] =
            json!({"@type": "GeoCoordinates", "latitude": c.latitude, "longitude": c.longitude});
    }
    for (key, value) in [("telephone", &o.phone), ("email", &o.email)] {
        if !value.is_empty() {
            v[key] = json!(value);
        }
    }
    if !o.accessibility.is_empty() {
        v["amenityFeature"] = json!({"@type": "LocationFeatureSpecification", "name": "Accessibilità", "value": o.accessibility});
    }
    v
}

/// The charter as schema.org JSON-LD (`@graph` of `GovernmentOffice` and
/// `GovernmentService`), as the municipal model embeds it. `base` is the
/// charter's URL.
pub fn jsonld(charter: &Charter, body_name: &str, base: &str) -> Value {
    let provider = json!({"@type": "GovernmentOrganization", "@id": format!("{base}#ente"), "name": body_name, "identifier": charter.body});
    let mut graph = vec![provider];
    graph.extend(charter.offices.iter().map(|o| office_jsonld(base, o)));
    for s in &charter.services {
        let channels: Vec<Value> = s
            .delivered
            .iter()
            .map(|d| {
                let mut c = json!({"@type": "ServiceChannel", "name": channel_label(&d.channel)});
                match d.channel.as_str() {
                    "online" => c["serviceUrl"] = json!(d.address),
                    "phone" => {
                        c["servicePhone"] = json!({"@type": "ContactPoint", "telephone": d.address})
                    }
                    "desk" | "booking" => {
                        c["serviceLocation"] =
                            json!({"@id": format!("{base}#ufficio-{}", d.office_id)})
                    }
                    _ => c["description"] = json!(d.address),
                }
                if let Some(days) = s.usual_days.or(s.legal_days) {
                    c["processingTime"] = json!(format!("P{days}D"));
                }
                c
            })
            .collect();
        let mut v = json!({
            "@type": "GovernmentService",
            "@id": format!("{base}#servizio-{}", s.id),
            "identifier": s.id,
            "name": s.title,
            "description": if s.summary.is_empty() { &s.description } else { &s.summary },
            "serviceType": s.categories.first().cloned().unwrap_or_default(),
            "category": s.categories,
            "provider": {"@id": format!("{base}#ente")},
            "serviceOperator": {"@id": format!("{base}#ente")},
            "audience": {"@type": "Audience", "audienceType": s.audience},
            "availableChannel": channels,
            "keywords": s.keywords.join(", "),
            "termsOfService": s.conditions,
            "serviceOutput": s.outcome,
        });
        if let Some(c) = &s.cost {
            v["offers"] = json!({"@type": "Offer", "price": format!("{}.{:02}", c.amount_cents / 100, c.amount_cents % 100), "priceCurrency": "EUR", "description": c.description});
        }
        graph.push(v);
    }
    json!({"@context": "https://schema.org", "@graph": graph})
}

/// The charter as CPSV-AP_IT (the Italian profile of the EU Core Public
/// Service Vocabulary, OntoPiA), in JSON-LD.
pub fn cpsv(charter: &Charter, body_name: &str, base: &str) -> Value {
    let today = jiff::Zoned::now()
        .with_time_zone(urpnet_proto::calendar::rome())
        .date()
        .to_string();
    let services: Vec<Value> = charter
        .services
        .iter()
        .map(|s| {
            let active = (s.valid_until.is_empty() || s.valid_until >= today)
                && (s.valid_from.is_empty() || s.valid_from <= today);
            let mut v = json!({
                "@id": format!("{base}#servizio-{}", s.id),
                "@type": "cpsv:PublicService",
                "dct:identifier": s.id,
                "cpsv:title": s.title,
                "cpsv:description": if s.summary.is_empty() { &s.description } else { &s.summary },
                "cpsv:serviceKeyword": s.keywords,
                "cpsv:hasServiceStatus": {"@type": "cpsv:ServiceStatus", "rdfs:label": if active { "Attivo" } else { "Non attivo" }},
                "cpsv:hasChannel": s.delivered.iter().map(|d| json!({
                    "@type": "cpsv:Channel",
                    "cpsv:channelType": channel_label(&d.channel),
                    "cpsv:channelAddress": if d.office_id.is_empty() { d.address.clone() } else { format!("{base}#ufficio-{}", d.office_id) },
                })).collect::<Vec<_>>(),
                "cpsv:hasInput": s.documents.iter().map(|d| json!({"@type": "cpsv:Input", "cpsv:name": d.name, "cpsv:description": d.where_to_get})).collect::<Vec<_>>(),
                "cpsv:hasOutput": {"@type": "cpsv:Output", "cpsv:description": s.outcome},
                "cpsv:isPhysicallyAvailableAt": offices_of(charter, s).iter().map(|o| json!({"@id": format!("{base}#ufficio-{}", o.id), "cpsv:name": o.name, "cpsv:address": o.address})).collect::<Vec<_>>(),
                "cpsv:hasCompetentAuthority": {"@id": format!("{base}#ente"), "cpsv:name": body_name},
                "cpsv:sector": s.categories,
            });
            if let Some(c) = &s.cost {
                v["cpsv:hasCost"] = json!({"@type": "cpsv:Cost", "cpsv:value": c.amount_cents as f64 / 100.0, "cpsv:currency": "EUR", "cpsv:description": c.description, "cpsv:pagoPA": c.pagopa});
            }
            let mut times = Vec::new();
            if let Some(d) = s.legal_days {
                times.push(json!({"@type": "cpsv:ServiceProcessingTime", "cpsv:duration": format!("P{d}D"), "cpsv:description": "Termine di legge"}));
            }
            if let Some(d) = s.usual_days {
                times.push(json!({"@type": "cpsv:ServiceProcessingTime", "cpsv:duration": format!("P{d}D"), "cpsv:description": "Tempo medio"}));
            }
            v["cpsv:hasServiceProcessingTime"] = json!(times);
            v
        })
        .collect();
    json!({
        "@context": {
            "cpsv": "https://w3id.org/italia/onto/CPSV/",
            "dct": "http://purl.org/dc/terms/",
            "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
        },
        "@graph": services,
    })
}

/// The office door sign ("targa ufficio"), A4 portrait SVG: the body, the
/// office, where it is, the week's hours, the services received there and
/// who is responsible. `printed` is the date shown at the foot.
pub fn door_sign_svg(
    charter: &Charter,
    office: &CharterOffice,
    body_name: &str,
    printed: &str,
) -> String {
    let e = escape;
    let mut y = 60;
    let mut s = String::from(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="210mm" height="297mm" viewBox="0 0 595 842" font-family="Titillium Web, Helvetica, Arial, sans-serif" role="img">"##,
    );
    let _ = write!(
        s,
        r##"<title>{} — {}</title><rect width="595" height="842" fill="#ffffff"/><rect width="595" height="110" fill="#0b3d91"/>"##,
        e(body_name),
        e(&office.name)
    );
    let _ = write!(
        s,
        r##"<text x="40" y="{y}" font-size="18" fill="#ffffff">{}</text>"##,
        e(body_name)
    );
    y += 34;
    let _ = write!(
        s,
        r##"<text x="40" y="{y}" font-size="26" font-weight="700" fill="#ffffff">{}</text>"##,
        e(&office.name)
    );
    y = 150;
    let place: Vec<&str> = [
        office.building.as_str(),
        office.floor.as_str(),
        office.room.as_str(),
    ]
    .into_iter()
    .filter(|p| !p.is_empty())
    .collect();
    if !place.is_empty() {
        let _ = write!(
            s,
            r##"<text x="40" y="{y}" font-size="16" fill="#1a1a1a">{}</text>"##,
            e(&place.join(" · "))
        );
        y += 26;
    }
    let _ = write!(
        s,
        r##"<text x="40" y="{y}" font-size="20" font-weight="700" fill="#0b3d91">Orari di apertura</text>"##
    );
    y += 28;
    for line in week_lines(office) {
        let _ = write!(
            s,
            r##"<text x="40" y="{y}" font-size="17" fill="#1a1a1a">{}</text>"##,
            e(&line)
        );
        y += 24;
    }
    if !charter.patron_day.is_empty() {
        let _ = write!(
            s,
            r##"<text x="40" y="{y}" font-size="13" fill="#555555">Chiuso nei giorni festivi e nel giorno del santo patrono ({}).</text>"##,
            e(&charter.patron_day)
        );
        y += 22;
    }
    y += 14;
    let services: Vec<&CharterService> = charter
        .services
        .iter()
        .filter(|sv| offices_of(charter, sv).iter().any(|o| o.id == office.id))
        .collect();
    let _ = write!(
        s,
        r##"<text x="40" y="{y}" font-size="20" font-weight="700" fill="#0b3d91">Servizi</text>"##
    );
    y += 26;
    let room = ((760 - y) / 21).max(1) as usize;
    for sv in services.iter().take(room) {
        let title: String = sv.title.chars().take(70).collect();
        let _ = write!(
            s,
            r##"<text x="48" y="{y}" font-size="15" fill="#1a1a1a">• {}</text>"##,
            e(&title)
        );
        y += 21;
    }
    if services.len() > room {
        let _ = write!(
            s,
            r##"<text x="48" y="{y}" font-size="14" fill="#555555">… e altri {} servizi</text>"##,
            services.len() - room
        );
    }
    let responsible = services
        .first()
        .and_then(|sv| sv.responsible.as_ref())
        .map(|r| {
            if r.name.is_empty() {
                r.role.clone()
            } else {
                format!("{} ({})", r.role, r.name)
            }
        })
        .unwrap_or_default();
    if !responsible.is_empty() {
        let _ = write!(
            s,
            r##"<text x="40" y="790" font-size="14" fill="#1a1a1a">Responsabile: {}</text>"##,
            e(&responsible)
        );
    }
    let contacts: Vec<String> = [("Tel.", &office.phone), ("", &office.email)]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(l, v)| {
            if l.is_empty() {
                v.clone()
            } else {
                format!("{l} {v}")
            }
        })
        .collect();
    let _ = write!(
        s,
        r##"<text x="40" y="812" font-size="13" fill="#1a1a1a">{}</text>"##,
        e(&contacts.join(" · "))
    );
    let _ = write!(
        s,
        r##"<text x="555" y="830" font-size="10" fill="#777777" text-anchor="end">Aggiornato al {}</text></svg>"##,
        e(printed)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn celano() -> Charter {
        super::super::import::from_toml(
            "celano.toml",
            include_str!("../../../examples/charters/celano.toml"),
            "",
            None,
        )
        .unwrap()
    }

    #[test]
    fn the_service_page_follows_the_municipal_model_order() {
        let c = celano();
        let s = c
            .services
            .iter()
            .find(|s| s.id == "carta-identita")
            .unwrap();
        let md = service_markdown(&c, s);
        let order = [
            "## Carta d'identità",
            "**Stato:**",
            "### A chi è rivolto",
            "### Come fare",
            "### Cosa serve",
            "### Cosa si ottiene",
            "### Tempi e scadenze",
            "### Accedi al servizio",
            "### Contatti",
            "_Argomenti:",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|h| md.find(h).unwrap_or_else(|| panic!("{h} in {md}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{md}");
        let html = service_html(&c, s, "Comune di Celano", "/prenota");
        let elements = [
            "breadcrumb",
            "service-title",
            "service-status",
            "service-description",
            "page-index",
            "service-addressed",
            "service-how-to",
            "service-needed",
            "service-achieved",
            "service-calendar-text",
            "service-booking-access",
            "service-area",
            "service-topic",
            "appointment-booking",
        ];
        let at: Vec<usize> = elements
            .iter()
            .map(|d| {
                html.find(&format!("data-element=\"{d}\""))
                    .unwrap_or_else(|| panic!("{d}"))
            })
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "data-elements out of order"
        );
    }

    #[test]
    fn markup_in_the_content_is_escaped_everywhere() {
        let mut c = celano();
        c.services[0].title = "<script>alert(1)</script>".into();
        c.services[0].description = "ok <img src=x onerror=alert(1)>".into();
        let html = charter_html(&c, "Comune di <b>Celano</b>", 1, "/p");
        assert!(
            !html.contains("<script>") && !html.contains("<img") && !html.contains("<b>Celano"),
            "{html}"
        );
        let svg = door_sign_svg(&c, &c.offices[1], "Comune & <Celano>", "2026-12-04");
        assert!(svg.contains("Comune &amp; &lt;Celano&gt;"));
    }

    #[test]
    fn json_ld_carries_offices_hours_services_and_costs() {
        let c = celano();
        let v = jsonld(&c, "Comune di Celano", "https://celano.example/charter");
        let graph = v["@graph"].as_array().unwrap();
        assert_eq!(graph.len(), 1 + c.offices.len() + c.services.len());
        let office = graph
            .iter()
            .find(|g| g["identifier"] == "anagrafe")
            .unwrap();
        assert_eq!(office["@type"], "GovernmentOffice");
        assert!(
            office["openingHoursSpecification"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["dayOfWeek"] == "https://schema.org/Saturday")
        );
        let cie = graph
            .iter()
            .find(|g| g["identifier"] == "carta-identita")
            .unwrap();
        assert_eq!(cie["@type"], "GovernmentService");
        assert_eq!(cie["offers"]["price"], "22.21");
        let p = cpsv(&c, "Comune di Celano", "https://celano.example/charter");
        let cie = p["@graph"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["dct:identifier"] == "carta-identita")
            .unwrap();
        assert_eq!(cie["@type"], "cpsv:PublicService");
        assert_eq!(cie["cpsv:hasCost"]["cpsv:value"], 22.21);
        assert!(
            cie["cpsv:isPhysicallyAvailableAt"][0]["@id"]
                .as_str()
                .unwrap()
                .ends_with("#ufficio-anagrafe")
        );
        assert_eq!(
            cie["cpsv:hasServiceProcessingTime"][0]["cpsv:duration"],
            "P6D"
        );
    }
}
