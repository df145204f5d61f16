//! iCalendar (RFC 5545) for appointment messages: the `text/calendar` part
//! of the confirmation, update and cancellation e-mails (DESIGN.md §13).
//!
//! One event per calendar, with what calendar programs need to replace an
//! appointment in place: a `UID` stable across changes, a `SEQUENCE` bumped
//! on each move, `METHOD:REQUEST` (new or moved) or `METHOD:CANCEL`, start
//! and end in `TZID=Europe/Rome` with the zone's `VTIMEZONE` (CET/CEST, the
//! EU rule: last Sunday of March 02:00, last Sunday of October 03:00), the
//! place or the video room's URL, and reminders (`VALARM`). Text values are
//! escaped (`\\`, `;`, `,`, newlines) and lines folded at 75 octets without
//! splitting a UTF-8 character, as the RFC requires.

use jiff::Timestamp;

use crate::calendar::rome;

/// What the message does to the citizen's calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A new appointment, or a moved one (higher `sequence`).
    Request,
    /// The appointment is cancelled.
    Cancel,
}

/// One appointment as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appointment {
    /// Stable across moves and the cancellation, globally unique
    /// (e.g. `<appointment id>@<node id>.urpnet`).
    pub uid: String,
    /// 0 when booked, +1 on each move and on the cancellation.
    pub sequence: u32,
    /// Start and end.
    pub start: Timestamp,
    /// End, after `start`.
    pub end: Timestamp,
    /// Title, e.g. "Carta d'identità elettronica — Comune di Celano".
    pub summary: String,
    /// What to bring, how to manage it.
    pub description: String,
    /// The office's address, or empty for a video appointment.
    pub location: String,
    /// The video room or the manage page.
    pub url: String,
    /// The organiser's e-mail (the office).
    pub organizer: String,
    /// The citizen's e-mail.
    pub attendee: String,
    /// Reminders, minutes before the start.
    pub alarms_min: Vec<u32>,
    /// When this message was made.
    pub stamp: Timestamp,
}

const VTIMEZONE: &str = "BEGIN:VTIMEZONE\r\nTZID:Europe/Rome\r\nBEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nTZNAME:CEST\r\nDTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\nBEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nTZNAME:CET\r\nDTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n";

/// Escapes a TEXT value (RFC 5545 §3.3.11).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A URI value (not TEXT, so not escaped) without control characters: a
/// line break in an address checked elsewhere must still not start a
/// property of its own.
fn no_controls(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// Folds one content line at 75 octets (§3.1), never inside a character,
/// and ends it with CRLF.
pub fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / 70 * 3 + 2);
    let mut width = 0;
    for c in line.chars() {
        let n = c.len_utf8();
        if width + n > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += n;
    }
    out.push_str("\r\n");
    out
}

fn local(ts: Timestamp) -> String {
    ts.to_zoned(rome()).strftime("%Y%m%dT%H%M%S").to_string()
}

fn utc(ts: Timestamp) -> String {
    ts.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// The calendar object of one message.
pub fn render(method: Method, a: &Appointment) -> String {
    let mut lines: Vec<String> = vec![
        "BEGIN:VCALENDAR".into(),
        "VERSION:2.0".into(),
        "PRODID:-//urpnet//Sportello virtuale//IT".into(),
        "CALSCALE:GREGORIAN".into(),
        format!(
            "METHOD:{}",
            match method {
                Method::Request => "REQUEST",
                Method::Cancel => "CANCEL",
            }
        ),
    ];
    let mut out: String = lines.drain(..).map(|l| fold(&l)).collect();
    out.push_str(VTIMEZONE);
    let mut event = vec![
        "BEGIN:VEVENT".to_string(),
        format!("UID:{}", escape(&a.uid)),
        format!("SEQUENCE:{}", a.sequence),
        format!("DTSTAMP:{}", utc(a.stamp)),
        format!("DTSTART;TZID=Europe/Rome:{}", local(a.start)),
        format!("DTEND;TZID=Europe/Rome:{}", local(a.end)),
        format!("SUMMARY;LANGUAGE=it:{}", escape(&a.summary)),
        format!("DESCRIPTION;LANGUAGE=it:{}", escape(&a.description)),
        format!(
            "STATUS:{}",
            if method == Method::Cancel {
                "CANCELLED"
            } else {
                "CONFIRMED"
            }
        ),
        "TRANSP:OPAQUE".into(),
    ];
    if !a.location.is_empty() {
        event.push(format!("LOCATION:{}", escape(&a.location)));
    } else if !a.url.is_empty() {
        event.push(format!("LOCATION:{}", escape(&a.url)));
    }
    if !a.url.is_empty() {
        event.push(format!("URL:{}", no_controls(&a.url)));
    }
    if !a.organizer.is_empty() {
        event.push(format!("ORGANIZER:mailto:{}", no_controls(&a.organizer)));
    }
    if !a.attendee.is_empty() {
        event.push(format!(
            "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED:mailto:{}",
            no_controls(&a.attendee)
        ));
    }
    if method == Method::Request {
        for m in &a.alarms_min {
            event.extend([
                "BEGIN:VALARM".to_string(),
                "ACTION:DISPLAY".into(),
                format!("DESCRIPTION:{}", escape(&a.summary)),
                format!("TRIGGER:-PT{m}M"),
                "END:VALARM".into(),
            ]);
        }
    }
    event.push("END:VEVENT".into());
    event.push("END:VCALENDAR".into());
    out.extend(event.iter().map(|l| fold(l)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appointment() -> Appointment {
        Appointment {
            uid: "01JD3Q5Z8W2N4V6X7Y9A0B1C2D@c_c426.urpnet".into(),
            sequence: 0,
            start: "2026-03-30T07:00:00Z".parse().unwrap(),
            end: "2026-03-30T07:20:00Z".parse().unwrap(),
            summary: "Carta d'identità elettronica — Comune di Celano".into(),
            description: "Porta: fototessera, vecchia carta; codice fiscale.\nPer spostare o annullare: https://celano.example/a/x".into(),
            location: "Ufficio Anagrafe, Via Sandro Pertini, Celano".into(),
            url: String::new(),
            organizer: "anagrafe@comune.celano.aq.it".into(),
            attendee: "maria.rossi@example.it".into(),
            alarms_min: vec![1440, 60],
            stamp: "2026-03-20T10:00:00Z".parse().unwrap(),
        }
    }

    /// Unfolds content lines (§3.1).
    fn unfold(text: &str) -> Vec<String> {
        text.replace("\r\n ", "")
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_request_carries_the_zone_the_local_times_and_the_alarms() {
        let text = render(Method::Request, &appointment());
        assert!(text.ends_with("END:VCALENDAR\r\n"));
        for line in text.split("\r\n") {
            assert!(line.len() <= 75, "{line}");
        }
        let lines = unfold(&text);
        let has = |l: &str| lines.iter().any(|x| x == l);
        assert!(has("METHOD:REQUEST"));
        assert!(has("TZID:Europe/Rome"));
        assert!(has("RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU"));
        // 07:00 UTC on Monday 30 March 2026 is 09:00 in Rome (CEST).
        assert!(has("DTSTART;TZID=Europe/Rome:20260330T090000"), "{lines:?}");
        assert!(has("DTEND;TZID=Europe/Rome:20260330T092000"));
        assert!(has("SEQUENCE:0"));
        assert!(
            has(
                "DESCRIPTION;LANGUAGE=it:Porta: fototessera\\, vecchia carta\\; codice fiscale.\\nPer spostare o annullare: https://celano.example/a/x"
            ),
            "{lines:?}"
        );
        assert_eq!(lines.iter().filter(|l| *l == "BEGIN:VALARM").count(), 2);
        assert!(has("TRIGGER:-PT60M"));
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("BEGIN:")).count(),
            lines.iter().filter(|l| l.starts_with("END:")).count()
        );
    }

    #[test]
    fn a_move_keeps_the_uid_and_a_cancel_has_no_alarm() {
        let mut a = appointment();
        let first = unfold(&render(Method::Request, &a));
        a.sequence = 1;
        a.start = "2026-11-02T08:00:00Z".parse().unwrap();
        a.end = "2026-11-02T08:20:00Z".parse().unwrap();
        let moved = unfold(&render(Method::Request, &a));
        let uid = |l: &[String]| l.iter().find(|x| x.starts_with("UID:")).cloned();
        assert_eq!(uid(&first), uid(&moved));
        // In winter 08:00 UTC is 09:00 CET.
        assert!(moved.contains(&"DTSTART;TZID=Europe/Rome:20261102T090000".to_string()));
        assert!(moved.contains(&"SEQUENCE:1".to_string()));
        a.sequence = 2;
        let cancel = unfold(&render(Method::Cancel, &a));
        assert!(cancel.contains(&"METHOD:CANCEL".to_string()));
        assert!(cancel.contains(&"STATUS:CANCELLED".to_string()));
        assert!(!cancel.contains(&"BEGIN:VALARM".to_string()));
        assert_eq!(uid(&cancel), uid(&first));
    }

    #[test]
    fn folding_never_splits_a_character_and_unfolds_to_the_original() {
        let line = format!("SUMMARY:{}", "è".repeat(100));
        let folded = fold(&line);
        for part in folded.split("\r\n") {
            assert!(part.len() <= 75);
        }
        assert_eq!(unfold(&folded), [line]);
        assert_eq!(escape("a\\b;c,d\r\ne\u{7}"), "a\\\\b\\;c\\,d\\ne");
    }
}
