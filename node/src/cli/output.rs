//! How the CLI shows things: readable tables by default, canonical proto3 JSON
//! (the mapping every gRPC tool understands) with `--json`.

use std::time::{Duration, UNIX_EPOCH};

use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{CitizenContact, DuplicateCandidate, HistoryEntry, Status, Ticket};

use crate::shared_ticket::fold::millis;
use crate::shared_ticket::names;

use urpnet_proto::cli::table;
pub use urpnet_proto::cli::to_json;

/// A timestamp as `2026-11-23 16:40:12Z`, or `-`.
pub fn time(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map(|t| {
        let at = UNIX_EPOCH + Duration::from_millis(millis(t));
        humantime::format_rfc3339_seconds(at)
            .to_string()
            .replace('T', " ")
    })
    .unwrap_or_else(|| "-".into())
}

/// Milliseconds since the Unix epoch as `2026-11-23 16:40:12Z`.
pub fn when_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
        .to_string()
        .replace('T', " ")
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

/// Tickets, one row each.
pub fn tickets_table(tickets: &[Ticket]) -> String {
    let mut t = table();
    t.set_header([
        "reference",
        "status",
        "category",
        "channel",
        "office",
        "comune",
        "subject",
        "updated",
    ]);
    for ticket in tickets {
        let comune = ticket
            .location
            .as_ref()
            .and_then(|l| urpnet_proto::territory::Territory::italy().comune(&l.istat_code))
            .map(|c| c.name.clone())
            .unwrap_or_default();
        t.add_row([
            ticket.reference.clone(),
            names::status_name(ticket.status()),
            ticket.category.clone(),
            names::channel_name(ticket.channel()),
            ticket.office.clone(),
            comune,
            short(&ticket.subject, 40),
            time(ticket.updated_at.as_ref()),
        ]);
    }
    t.to_string()
}

/// One ticket, field by field.
pub fn ticket_detail(ticket: &Ticket, citizen: Option<&CitizenContact>) -> String {
    let mut t = table();
    let location = ticket.location.clone().unwrap_or_default();
    let comune = urpnet_proto::territory::Territory::italy()
        .comune(&location.istat_code)
        .map(|c| format!("{} ({}) {}", c.name, c.province_abbr, c.istat_code))
        .unwrap_or(location.istat_code.clone());
    let coordinates = location
        .coordinates
        .map(|c| format!("{:.5}, {:.5}", c.latitude, c.longitude))
        .unwrap_or_default();
    let consent = ticket.consent.unwrap_or_default();
    let mut rows: Vec<(&str, String)> = vec![
        ("reference", ticket.reference.clone()),
        ("id", ticket.id.clone()),
        ("status", names::status_name(ticket.status())),
        ("priority", names::priority_name(ticket.priority())),
        ("category", ticket.category.clone()),
        ("channel", names::channel_name(ticket.channel())),
        ("subject", ticket.subject.clone()),
        ("description", ticket.description.clone()),
        ("comune", comune),
        ("address", location.address),
        ("coordinates", coordinates),
        (
            "origin / owner",
            format!(
                "{} / {} (epoch {})",
                ticket.origin_node, ticket.owner_node, ticket.owner_epoch
            ),
        ),
        ("office", ticket.office.clone()),
        ("created", time(ticket.created_at.as_ref())),
        ("updated", time(ticket.updated_at.as_ref())),
        ("due", time(ticket.due_at.as_ref())),
        ("closed", time(ticket.closed_at.as_ref())),
        (
            "consent",
            format!(
                "share with competent body: {}, contact for updates: {}",
                yes_no(consent.share_with_competent_body),
                yes_no(consent.contact_for_updates)
            ),
        ),
        (
            "notes / events",
            format!(
                "{} / {} ({} without effect)",
                ticket.note_count, ticket.event_count, ticket.ineffective_event_count
            ),
        ),
    ];
    if ticket.status() == Status::Merged {
        rows.push(("merged into", ticket.merged_into.clone()));
    }
    for a in &ticket.attachments {
        rows.push((
            "attachment",
            format!(
                "{} ({}, {} bytes) sha256 {}",
                a.file_name, a.media_type, a.size_bytes, a.sha256
            ),
        ));
    }
    if let Some(c) = citizen {
        rows.push((
            "citizen",
            [&c.full_name, &c.email, &c.phone, &c.fiscal_code]
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    t.to_string()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Possible duplicates.
pub fn duplicates_table(candidates: &[DuplicateCandidate]) -> String {
    let mut t = table();
    t.set_header(["possible duplicate", "status", "distance", "subject"]);
    for c in candidates {
        t.add_row([
            c.reference.clone(),
            names::status_name(c.status()),
            c.distance_m
                .map(|d| format!("{d:.0} m"))
                .unwrap_or_else(|| "same address".into()),
            short(&c.subject, 50),
        ]);
    }
    t.to_string()
}

/// What an event did, in words.
pub fn describe(kind: Option<&Kind>) -> (String, String) {
    match kind {
        None => ("?".into(), String::new()),
        Some(Kind::Created(c)) => (
            "created".into(),
            format!(
                "{} via {}: {}",
                c.category,
                names::channel_name(c.channel()),
                c.subject
            ),
        ),
        Some(Kind::Note(n)) => (
            (if n.public {
                "public note"
            } else {
                "internal note"
            })
            .into(),
            short(&n.text, 60),
        ),
        Some(Kind::StatusChanged(s)) => (
            "status".into(),
            format!(
                "{} -> {}{}",
                names::status_name(s.from()),
                names::status_name(s.to()),
                if s.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", short(&s.reason, 40))
                }
            ),
        ),
        Some(Kind::Assigned(a)) => ("assigned".into(), a.office.clone()),
        Some(Kind::HandoffOffered(h)) => (
            "handoff offered".into(),
            format!("to {}: {}", h.to_node, h.reason),
        ),
        Some(Kind::HandoffAccepted(h)) => ("handoff accepted".into(), h.offer_event_id.clone()),
        Some(Kind::HandoffDeclined(h)) => ("handoff declined".into(), h.reason.clone()),
        Some(Kind::CitizenNotified(c)) => (
            "citizen notified".into(),
            format!("via {}: {}", names::channel_name(c.channel()), c.summary),
        ),
        Some(Kind::Merged(m)) => ("merged".into(), format!("into {}", m.into_ticket_id)),
        Some(Kind::AttachmentAdded(a)) => (
            "attachment".into(),
            a.attachment
                .as_ref()
                .map(|a| a.file_name.clone())
                .unwrap_or_default(),
        ),
        Some(Kind::Shared(s)) => ("shared".into(), format!("with {}", s.with_node)),
        Some(Kind::Rescheduled(_)) => ("rescheduled".into(), String::new()),
        Some(Kind::ContactErased(e)) => ("contact erased".into(), e.reason.clone()),
    }
}

/// A ticket's history.
pub fn history_table(entries: &[HistoryEntry]) -> String {
    let mut t = table();
    t.set_header(["when", "author", "actor", "event", "details", "effect"]);
    for e in entries {
        let Some(event) = &e.event else { continue };
        let (what, details) = describe(event.kind.as_ref());
        let stamp = event.hlc.map(|h| prost_types::Timestamp {
            seconds: (h.wall_ms / 1000) as i64,
            nanos: ((h.wall_ms % 1000) * 1_000_000) as i32,
        });
        let effect = match (e.effective, e.signature_valid) {
            (true, true) => "applied".to_string(),
            (true, false) => "applied (signature NOT verified)".to_string(),
            (false, _) => format!("no effect: {}", e.ineffective_reason),
        };
        t.add_row([
            time(stamp.as_ref()),
            event.author_node.clone(),
            short(&event.actor, 10),
            what,
            details,
            effect,
        ]);
    }
    t.to_string()
}

/// Pending offers, one per row.
pub fn offers_table(offers: &[urpnet_proto::v1::Offer]) -> String {
    if offers.is_empty() {
        return "  (none)".into();
    }
    let mut t = urpnet_proto::cli::table();
    t.set_header(["reference", "from", "to", "offered", "category", "reason"]);
    for o in offers {
        let ticket = o.ticket.clone().unwrap_or_default();
        t.add_row([
            ticket.reference,
            o.from_node.clone(),
            o.to_node.clone(),
            time(o.offered_at.as_ref()),
            ticket.category,
            o.reason.clone(),
        ]);
    }
    t.to_string()
}

/// Delivery to each peer, one per row.
pub fn peers_table(peers: &[urpnet_proto::v1::PeerDelivery]) -> String {
    if peers.is_empty() {
        return "no peers yet: this node shares no ticket with another body".into();
    }
    let mut t = urpnet_proto::cli::table();
    t.set_header([
        "peer",
        "name",
        "member",
        "reachable",
        "outbox",
        "lag",
        "delivered",
        "last error",
    ]);
    for p in peers {
        let reachable = match p.reachable {
            _ if !p.quarantine_reason.is_empty() => "quarantined".to_string(),
            None => "-".to_string(),
            Some(true) => "yes".to_string(),
            Some(false) => format!("no ({} failures)", p.failures),
        };
        let lag = if p.lag_ms == 0 {
            "-".to_string()
        } else {
            humantime::format_duration(
                std::time::Duration::from_millis(p.lag_ms / 1000 * 1000)
                    .max(std::time::Duration::from_secs(1)),
            )
            .to_string()
        };
        t.add_row([
            p.peer.clone(),
            p.display_name.clone(),
            p.member_status.clone(),
            reachable,
            p.outbox_depth.to_string(),
            lag,
            p.delivered.to_string(),
            if p.quarantine_reason.is_empty() {
                p.last_error.clone()
            } else {
                p.quarantine_reason.clone()
            },
        ]);
    }
    t.to_string()
}
