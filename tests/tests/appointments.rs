//! Appointments (Sportello virtuale) on real nodes: a citizen books a video
//! appointment at Celano's SUE over the public HTTP side, gets the e-mail
//! with its iCalendar from a real SMTP server (aiosmtpd), moves it (update,
//! new manage token), sends a document, meets the room's window, and
//! cancels; 200 clients race for 3 seats and exactly 3 win; every bad input
//! of the issue is refused with nothing stored; an operator at Celano books
//! at the Region's office over peering (mutual TLS), and a Region that
//! cannot be reached gives a clear answer.

use std::time::Duration;

use jiff::civil::{Date, Weekday};
use jiff::{Timestamp, ToSpan as _};
use mail_parser::{MessageParser, MimeHeaders as _};
use serde_json::{Value, json};
use tonic::Code;
use urpnet_examples::smtp::{SmtpSink, free_port};
use urpnet_proto::calendar::{national_holidays, rome};
use urpnet_proto::v1::{
    AgendaRequest, AppointmentCitizen, AppointmentPlan, BookRequest, FreeSlotsRequest,
    GetTicketRequest, ImportCharterRequest, ListPlansRequest, SetPlansRequest,
};
use urpnet_tests::federation::{ABRUZZO, CELANO, TestFederation};
use urpnet_tests::shared::{DEADLINE, sample_charter, sample_plans};
use urpnet_tests::{Backend, TestNode, wait_for};

urpnet_tests::on_both_backends!(
    a_citizen_books_moves_sends_a_document_and_cancels_with_mails_and_ics,
    two_hundred_clients_racing_for_three_seats_leave_exactly_three_bookings,
    bad_input_is_refused_and_leaves_the_calendar_unchanged,
    an_operator_at_celano_books_at_the_region_over_peering,
    a_citizens_erasure_empties_their_bookings_and_stops_their_messages,
);

const VIDEO: &str = "https://video.comune.celano.example.it";
const JWT_SECRET: &str = "a shared secret of the body's Jitsi";

/// A Celano node with its charter and the given plans (the sample's by
/// default), public side on, video service configured, SMTP optional.
async fn celano(
    backend: Backend,
    test: &str,
    smtp: Option<u16>,
    plans: Option<Vec<AppointmentPlan>>,
) -> Option<TestNode> {
    let (dir, mut config) = urpnet_tests::node_config(CELANO.id, backend, test).await?;
    config.node.name = "Comune di Celano".into();
    config.public.rate_per_second = 100_000;
    config.public.rate_burst = 100_000;
    config.appointments.video_base_url = VIDEO.into();
    let secret = dir.path().join("jitsi.secret");
    std::fs::write(&secret, JWT_SECRET).unwrap();
    config.appointments.video_jwt_secret_file = secret;
    config.appointments.video_jwt_app_id = "celano".into();
    if let Some(port) = smtp {
        config.notify.smtp_url = format!("smtp://127.0.0.1:{port}");
        config.notify.from = "Comune di Celano <prenotazioni@comune.celano.example.it>".into();
        config.notify.interval = Duration::from_millis(100);
        config.notify.max_backoff = Duration::from_millis(300);
    }
    let node = TestNode::start_with(config, Some(dir)).await;
    node.charter()
        .await
        .import_charter(ImportCharterRequest {
            charter: Some(sample_charter("celano")),
        })
        .await
        .expect("import the charter");
    node.appointments()
        .await
        .set_plans(SetPlansRequest {
            plans: plans.unwrap_or_else(|| sample_plans("celano")),
            dry_run: false,
        })
        .await
        .expect("plans");
    Some(node)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn url(node: &TestNode, path: &str) -> String {
    format!("http://{}{path}", node.public_addr)
}

async fn get(node: &TestNode, path: &str) -> (u16, Value) {
    let r = http().get(url(node, path)).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(node: &TestNode, path: &str, body: &Value) -> (u16, Value) {
    let r = http()
        .post(url(node, path))
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn booking(start: &str, email: &str, key: &str) -> Value {
    json!({
        "idempotency_key": key,
        "office": "sue",
        "service": "autorizzazione-paesaggistica",
        "start": start,
        "channel": "video",
        "citizen": {
            "given_name": "Giulia",
            "family_name": "Marchetti",
            "address": "Via Ovidio 12, 67043 Celano (AQ)",
            "email": email,
            "phone": "+39 333 1234567"
        },
        "consent_processing": true,
        "notes": "Tettoia in legno in zona vincolata."
    })
}

async fn free(node: &TestNode, office: &str, service: &str) -> Vec<String> {
    let (status, body) = get(
        node,
        &format!("/appointments/slots?office={office}&service={service}&limit=500"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["start"].as_str().unwrap().to_string())
        .collect()
}

/// Runs SQL on the node's database (to move a booking in time).
async fn sql(node: &TestNode, statement: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&node.config.database_url())
        .await
        .unwrap();
    sqlx::query(statement).execute(&pool).await.unwrap();
    pool.close().await;
}

async fn count(node: &TestNode, query: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&node.config.database_url())
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(query).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

/// The decoded `text/calendar` part and the plain text of a message.
fn parts(raw: &str) -> (String, String, String) {
    let m = MessageParser::default()
        .parse(raw.as_bytes())
        .expect("a MIME message");
    let subject = m.subject().unwrap_or_default().to_string();
    let text = m.body_text(0).unwrap_or_default().to_string();
    let ics = m
        .attachments()
        .find(|a| {
            a.content_type()
                .is_some_and(|c| c.subtype() == Some("calendar"))
        })
        .map(|a| String::from_utf8_lossy(a.contents()).to_string())
        .unwrap_or_default();
    (subject, text, ics)
}

fn ics_field<'a>(ics: &'a str, name: &str) -> Vec<&'a str> {
    ics.lines().filter_map(|l| l.strip_prefix(name)).collect()
}

async fn a_citizen_books_moves_sends_a_document_and_cancels_with_mails_and_ics(
    backend: Backend,
    test: &str,
) {
    let mail_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink = SmtpSink::start(port, mail_dir.path())
        .await
        .expect("the SMTP sink (python3-aiosmtpd)");
    let Some(node) = celano(backend, test, Some(port), None).await else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        sink.stop().await;
        return;
    };
    // What can be booked, then the free slots of the SUE's service.
    let (status, services) = get(&node, "/appointments/services").await;
    assert_eq!(status, 200);
    assert!(
        services["plans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["service"] == "autorizzazione-paesaggistica" && p["office"] == "sue"),
        "{services}"
    );
    let slots = free(&node, "sue", "autorizzazione-paesaggistica").await;
    assert!(slots.len() > 4, "{slots:?}");
    // Every slot is on Tuesday or Thursday, in the plan's hours, 30 minutes.
    for s in &slots {
        let z = s.parse::<Timestamp>().unwrap().to_zoned(rome());
        assert!(
            matches!(z.weekday(), Weekday::Tuesday | Weekday::Thursday),
            "{s}"
        );
    }

    // The citizen holds the first slot while filling in the form, then books.
    let (status, held) = post(
        &node,
        "/appointments/holds",
        &json!({"office": "sue", "service": "autorizzazione-paesaggistica", "start": slots[0]}),
    )
    .await;
    assert_eq!(status, 201, "{held}");
    assert!(
        !free(&node, "sue", "autorizzazione-paesaggistica")
            .await
            .contains(&slots[0]),
        "a held seat is not offered"
    );
    let mut form = booking(&slots[0], "giulia.marchetti@example.it", "booking-key-0001");
    form["hold_id"] = held["hold_id"].clone();
    let (status, booked) = post(&node, "/appointments", &form).await;
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().unwrap().to_string();
    let token = booked["manage_token"].as_str().unwrap().to_string();
    assert_eq!(booked["channel"], "video");
    assert_eq!(booked["start"], slots[0].as_str());
    assert!(
        booked["room_link"]
            .as_str()
            .unwrap()
            .contains("/room?token=")
    );
    // A retry with the same key is the same booking, not a second seat.
    let (status, again) = post(&node, "/appointments", &form).await;
    assert_eq!((status, &again["id"]), (200, &booked["id"]), "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(
        count(&node, "SELECT COUNT(*) FROM appointment_seats").await,
        1
    );

    // The booking is a ticket of the service's category, channel video.
    let ticket_id = booked["ticket_id"].as_str().unwrap().to_string();
    let ticket = node
        .desk()
        .await
        .get_ticket(GetTicketRequest {
            ticket_id: ticket_id.clone(),
            reference: String::new(),
        })
        .await
        .expect("the booking's ticket")
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(ticket.channel(), urpnet_proto::v1::Channel::Video);
    assert_eq!(ticket.category, "edilizia");

    // The confirmation e-mail carries the ICS: REQUEST, sequence 0, the
    // zone, the room and the manage link.
    wait_for("the confirmation", DEADLINE, || async {
        (sink.count() >= 1).then_some(())
    })
    .await;
    let (subject, text, ics) = parts(&sink.messages()[0]);
    assert!(subject.starts_with("Appuntamento confermato"), "{subject}");
    assert!(text.contains("Giulia Marchetti"), "{text}");
    assert!(
        text.contains(&format!("/appointments/{id}?token={token}")),
        "{text}"
    );
    assert!(
        text.contains("Relazione paesaggistica"),
        "what to bring: {text}"
    );
    assert_eq!(ics_field(&ics, "METHOD:"), ["REQUEST"], "{ics}");
    assert_eq!(ics_field(&ics, "SEQUENCE:"), ["0"]);
    let uid = ics_field(&ics, "UID:")[0].to_string();
    assert_eq!(uid, format!("{}@{}.urpnet", id.to_lowercase(), CELANO.id));
    assert!(ics.contains("BEGIN:VTIMEZONE\r\nTZID:Europe/Rome"), "{ics}");
    assert!(ics.contains("DTSTART;TZID=Europe/Rome:"), "{ics}");
    assert!(ics.contains("BEGIN:VALARM"), "{ics}");

    // A document for the appointment, seen by the operator in the agenda.
    let r = http()
        .post(url(
            &node,
            &format!("/appointments/{id}/documents?token={token}&name=progetto.pdf"),
        ))
        .header("content-type", "application/pdf")
        .body(b"%PDF-1.4\n% progetto tettoia\n".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = http()
        .post(url(
            &node,
            &format!("/appointments/{id}/documents?token={token}&name=../../etc/passwd"),
        ))
        .header("content-type", "application/pdf")
        .body(b"%PDF-1.4\n".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "a path in the name is refused");
    let day = slots[0][..10].to_string();
    let agenda = node
        .appointments()
        .await
        .agenda(AgendaRequest {
            office: "sue".into(),
            date: day.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mine = agenda.appointments.iter().find(|a| a.id == id).unwrap();
    assert_eq!(mine.documents.len(), 1);
    assert_eq!(mine.documents[0].file_name, "progetto.pdf");
    let doc = node
        .appointments()
        .await
        .get_appointment_document(urpnet_proto::v1::GetAppointmentDocumentRequest {
            id: id.clone(),
            sha256: mine.documents[0].sha256.clone(),
        })
        .await
        .expect("the document")
        .into_inner();
    assert_eq!(doc.content, b"%PDF-1.4\n% progetto tettoia\n");
    assert_eq!(mine.citizen.as_ref().unwrap().family_name, "Marchetti");
    assert!(mine.room_url.starts_with(&format!("{VIDEO}/urp-")));

    // The room is closed until ten minutes before the start.
    let (status, closed) = get(&node, &format!("/appointments/{id}/room?token={token}")).await;
    assert_eq!(status, 409, "{closed}");
    assert!(
        closed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the room opens"),
        "{closed}"
    );

    // The citizen moves it: an update with sequence 1, a new token; the old
    // token is now the same as an unknown one.
    let (status, moved) = post(
        &node,
        &format!("/appointments/{id}/move?token={token}"),
        &json!({"start": slots[2]}),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["start"], slots[2].as_str());
    assert_eq!(moved["sequence"], 1);
    let token2 = moved["manage_token"].as_str().unwrap().to_string();
    assert_ne!(token, token2);
    let (status, old) = get(&node, &format!("/appointments/{id}?token={token}")).await;
    assert_eq!(status, 404, "{old}");
    let (status, _) = get(&node, &format!("/appointments/{id}?token={token2}")).await;
    assert_eq!(status, 200);
    assert!(
        free(&node, "sue", "autorizzazione-paesaggistica")
            .await
            .contains(&slots[0]),
        "the old slot is free again"
    );
    wait_for("the update", DEADLINE, || async {
        (sink.count() >= 2).then_some(())
    })
    .await;
    let update = sink
        .messages()
        .into_iter()
        .map(|m| parts(&m))
        .find(|(s, _, _)| s.starts_with("Appuntamento spostato"))
        .expect("the update e-mail");
    assert_eq!(ics_field(&update.2, "SEQUENCE:"), ["1"]);
    assert_eq!(ics_field(&update.2, "UID:"), [uid.as_str()]);
    assert!(update.1.contains(&token2), "the new link: {}", update.1);

    // The reminders come due (made so here): those of the move are sent,
    // without an invitation; those made for the first time are dropped.
    let current = count(
        &node,
        &format!("SELECT COUNT(*) FROM appointment_messages WHERE appointment_id = '{id}' AND kind = 'reminder' AND sequence = 1"),
    )
    .await;
    assert!(current >= 1, "at least the hour-before reminder");
    sql(
        &node,
        "UPDATE appointment_messages SET not_before_ms = not_before_ms - 40000000000 WHERE kind = 'reminder'",
    )
    .await;
    let reminders = wait_for("the reminders", DEADLINE, || async {
        let pending = count(
            &node,
            "SELECT COUNT(*) FROM appointment_messages WHERE kind = 'reminder' AND pending_mask <> 0",
        )
        .await;
        let sent: Vec<_> = sink
            .messages()
            .iter()
            .map(|m| parts(m))
            .filter(|(s, _, _)| s.starts_with("Promemoria"))
            .collect();
        (pending == 0).then_some(sent)
    })
    .await;
    assert_eq!(
        reminders.len() as i64,
        current,
        "only the current sequence's"
    );
    for (_, text, ics) in &reminders {
        assert!(ics.is_empty(), "a reminder carries no invitation");
        assert!(text.contains(&token2), "{text}");
    }

    // Ten minutes before the start the room opens: a redirect to the
    // body's video service with a JWT for this room only.
    let now = Timestamp::now().as_millisecond();
    sql(
        &node,
        &format!(
            "UPDATE appointments SET start_ms = {}, end_ms = {} WHERE id = '{id}'",
            now + 5 * 60_000,
            now + 35 * 60_000
        ),
    )
    .await;
    let r = http()
        .get(url(
            &node,
            &format!("/appointments/{id}/room?token={token2}"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let (room, jwt) = location.split_once("?jwt=").expect("a JWT");
    assert_eq!(room, mine.room_url.split('?').next().unwrap());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["jitsi"]);
    let claims = jsonwebtoken::decode::<Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .expect("a JWT signed with the body's secret")
    .claims;
    assert_eq!(claims["room"], room.rsplit('/').next().unwrap());
    assert_eq!(claims["iss"], "celano");

    // Cancelled: a CANCEL with a higher sequence; cancelling twice is refused.
    sql(
        &node,
        &format!(
            "UPDATE appointments SET start_ms = {}, end_ms = {} WHERE id = '{id}'",
            now + 3 * 86_400_000,
            now + 3 * 86_400_000 + 1_800_000
        ),
    )
    .await;
    let (status, cancelled) = post(
        &node,
        &format!("/appointments/{id}/cancel?token={token2}"),
        &json!({"reason": "Ho risolto con il tecnico."}),
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (status, twice) = post(
        &node,
        &format!("/appointments/{id}/cancel?token={token2}"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 409, "{twice}");
    assert!(
        twice["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already cancelled")
    );
    wait_for("the cancellation", DEADLINE, || async {
        sink.messages()
            .iter()
            .map(|m| parts(m))
            .find(|(s, _, _)| s.starts_with("Appuntamento annullato"))
    })
    .await;
    let cancel = sink
        .messages()
        .into_iter()
        .map(|m| parts(&m))
        .find(|(s, _, _)| s.starts_with("Appuntamento annullato"))
        .unwrap();
    assert_eq!(ics_field(&cancel.2, "METHOD:"), ["CANCEL"]);
    assert_eq!(ics_field(&cancel.2, "SEQUENCE:"), ["2"]);
    assert_eq!(ics_field(&cancel.2, "UID:"), [uid.as_str()]);
    assert!(!cancel.2.contains("VALARM"), "a cancellation has no alarm");
    // The ticket followed: resolved, then closed.
    let ticket = wait_for("the ticket closed", DEADLINE, || {
        let ticket_id = ticket_id.clone();
        let node = &node;
        async move {
            let t = node
                .desk()
                .await
                .get_ticket(GetTicketRequest {
                    ticket_id,
                    reference: String::new(),
                })
                .await
                .ok()?
                .into_inner()
                .ticket?;
            (t.status() == urpnet_proto::v1::Status::Closed).then_some(t)
        }
    })
    .await;
    assert_eq!(ticket.status(), urpnet_proto::v1::Status::Closed);
    assert_eq!(
        count(&node, "SELECT COUNT(*) FROM appointment_seats").await,
        0,
        "the seat is free"
    );
    // No reminder after the cancellation.
    assert_eq!(
        sink.messages()
            .iter()
            .filter(|m| parts(m).0.starts_with("Promemoria"))
            .count() as i64,
        current
    );
    // An expired token (a day after the end) is the same as a forged one.
    sql(
        &node,
        &format!(
            "UPDATE appointments SET end_ms = {} WHERE id = '{id}'",
            now - 2 * 86_400_000
        ),
    )
    .await;
    let (status, expired) = get(&node, &format!("/appointments/{id}?token={token2}")).await;
    let (_, forged) = get(
        &node,
        &format!("/appointments/{id}?token=0123456789abcdef0123456789abcdef"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(expired, forged, "the same answer");
    node.stop().await;
    sink.stop().await;
}

async fn two_hundred_clients_racing_for_three_seats_leave_exactly_three_bookings(
    backend: Backend,
    test: &str,
) {
    let mut plans = sample_plans("celano");
    for p in &mut plans {
        if p.service == "autorizzazione-paesaggistica" {
            p.capacity = 3;
        }
    }
    let Some(node) = celano(backend, test, None, Some(plans)).await else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    let slots = free(&node, "sue", "autorizzazione-paesaggistica").await;
    let target = slots[0].clone();
    let client = http();
    let races = (0..200).map(|i| {
        let client = client.clone();
        let url = url(&node, "/appointments");
        let mut form = booking(
            &target,
            &format!("citizen{i}@example.it"),
            &format!("race-key-{i:04}"),
        );
        form["channel"] = "desk".into();
        async move {
            let r = client.post(url).json(&form).send().await.expect("POST");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(races).await;
    let won = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(won, 3, "exactly the capacity wins");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(body["error"]["code"], "slot_taken", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("next free: "), "{message}");
        assert!(
            !message.contains(&target[..16]) || message.starts_with("slot taken"),
            "{message}"
        );
    }
    assert_eq!(count(&node, "SELECT COUNT(*) FROM appointments").await, 3);
    assert_eq!(
        count(&node, "SELECT COUNT(*) FROM appointment_seats").await,
        3
    );
    assert!(
        !free(&node, "sue", "autorizzazione-paesaggistica")
            .await
            .contains(&target)
    );
    // Each winner opened one ticket.
    let agenda = node
        .appointments()
        .await
        .agenda(AgendaRequest {
            office: "sue".into(),
            date: target[..10].into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(agenda.appointments.len(), 3);
    assert!(agenda.appointments.iter().all(|a| !a.ticket_id.is_empty()));
    node.stop().await;
}

/// The first date from `from` (inclusive) with a weekday in `days` that is
/// not a national holiday.
fn next_working(from: Date, days: &[Weekday]) -> Date {
    let mut d = from;
    loop {
        let holiday = national_holidays(d.year()).iter().any(|(h, _)| *h == d);
        if days.contains(&d.weekday()) && !holiday {
            return d;
        }
        d = d.tomorrow().unwrap();
    }
}

/// The last Sunday of `month` on or after `from`'s year, the first one
/// still ahead.
fn last_sunday_ahead(from: Date, month: i8) -> Date {
    for year in [from.year(), from.year() + 1] {
        let mut d = Date::new(year, month, 1).unwrap().last_of_month();
        while d.weekday() != Weekday::Sunday {
            d = d.yesterday().unwrap();
        }
        if d > from {
            return d;
        }
    }
    unreachable!()
}

async fn bad_input_is_refused_and_leaves_the_calendar_unchanged(backend: Backend, test: &str) {
    let plan = |service: &str, hours: &[&str], notice: u32, ahead: u32| AppointmentPlan {
        office: "sue".into(),
        service: service.into(),
        hours: hours.iter().map(|h| h.to_string()).collect(),
        length_min: 30,
        capacity: 1,
        min_notice_min: notice,
        max_days_ahead: ahead,
        change_notice_min: 60,
        max_moves: 1,
        ..AppointmentPlan::default()
    };
    let plans = vec![
        // Tuesday and Thursday mornings, at least a week ahead, two months.
        plan(
            "autorizzazione-paesaggistica",
            &["mar,gio 09:00-12:30"],
            7 * 24 * 60,
            60,
        ),
        // Every night 01:00-04:00, for the DST changes and the holidays.
        plan(
            "accesso-pratiche-edilizie",
            &["lun-dom 01:00-04:00"],
            0,
            366,
        ),
    ];
    let Some(node) = celano(backend, test, None, Some(plans.clone())).await else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    let today = Timestamp::now().to_zoned(rome()).date();
    let tue_thu = [Weekday::Tuesday, Weekday::Thursday];
    let later = next_working(today + 14.days(), &tue_thu);
    let soon = next_working(today + 1.day(), &tue_thu);
    let soon = if soon >= today + 7.days() {
        None
    } else {
        Some(soon)
    };
    let far = next_working(today + 70.days(), &tue_thu);
    let holiday = {
        let mut all: Vec<Date> = [today.year(), today.year() + 1]
            .iter()
            .flat_map(|y| national_holidays(*y).into_iter().map(|(d, _)| d))
            .filter(|d| *d > today + 1.day())
            .collect();
        all.sort();
        all[0]
    };
    let spring = last_sunday_ahead(today, 3);
    let autumn = last_sunday_ahead(today, 10);

    let good = free(&node, "sue", "autorizzazione-paesaggistica").await;
    let night = free(&node, "sue", "accesso-pratiche-edilizie").await;
    let paesaggio = |start: String, email: &str, key: &str| booking(&start, email, key);
    let pratiche = |start: String| {
        let mut b = booking(&start, "anna@example.it", "key-pratiche-01");
        b["service"] = "accesso-pratiche-edilizie".into();
        b["channel"] = "desk".into();
        b
    };
    let mut cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "a slot not on the plan",
            paesaggio(format!("{later}T09:10"), "a@example.it", "key-bad-0001"),
            400,
            "is not a slot of this service",
        ),
        (
            "in the past",
            paesaggio("2025-01-14T09:00".into(), "a@example.it", "key-bad-0002"),
            400,
            "is in the past",
        ),
        (
            "beyond the window",
            paesaggio(format!("{far}T09:00"), "a@example.it", "key-bad-0004"),
            400,
            "too far ahead",
        ),
        (
            "on a holiday",
            pratiche(format!("{holiday}T01:00")),
            400,
            "closed that day",
        ),
        (
            "in the DST gap",
            pratiche(format!("{spring}T02:30")),
            400,
            "does not exist in Italy",
        ),
        (
            "in the repeated hour",
            pratiche(format!("{autumn}T02:30")),
            400,
            "happens twice in Italy",
        ),
        (
            "an e-mail without '@'",
            paesaggio(good[0].clone(), "giulia.example.it", "key-bad-0005"),
            400,
            "citizen.email",
        ),
        (
            "an over-long name",
            {
                let mut b = paesaggio(good[0].clone(), "a@example.it", "key-bad-0006");
                b["citizen"]["given_name"] = "G".repeat(101).into();
                b
            },
            400,
            "citizen.given_name",
        ),
        (
            "no consent",
            {
                let mut b = paesaggio(good[0].clone(), "a@example.it", "key-bad-0007");
                b["consent_processing"] = false.into();
                b
            },
            400,
            "consent_processing",
        ),
        (
            "an unknown field",
            {
                let mut b = paesaggio(good[0].clone(), "a@example.it", "key-bad-0008");
                b["codice_fiscale"] = "MRCGLI80A41C426X".into();
                b
            },
            400,
            "unknown field",
        ),
        (
            "a short idempotency key",
            paesaggio(good[0].clone(), "a@example.it", "k1"),
            400,
            "idempotency_key",
        ),
    ];
    if let Some(soon) = soon {
        cases.push((
            "inside the minimum notice",
            paesaggio(format!("{soon}T09:00"), "a@example.it", "key-bad-0003"),
            400,
            "too soon",
        ));
    }
    for (what, body, status, words) in &cases {
        let (got, answer) = post(&node, "/appointments", body).await;
        assert_eq!(got, *status, "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{what}: {message}");
    }
    // The night plan itself is fine: the same night's 01:00 is bookable
    // after the spring change, and the repeated hour is offered once.
    assert!(
        night
            .iter()
            .any(|s| s.starts_with(&format!("{spring}T01:00")))
            || spring > today + 14.days()
    );
    assert_eq!(count(&node, "SELECT COUNT(*) FROM appointments").await, 0);
    assert_eq!(
        count(&node, "SELECT COUNT(*) FROM appointment_seats").await,
        0
    );

    // Too many bookings by one e-mail in a day (the limit is 3).
    for (i, start) in good.iter().take(3).enumerate() {
        let (status, body) = post(
            &node,
            "/appointments",
            &paesaggio(
                start.clone(),
                "busy@example.it",
                &format!("key-busy-{i:04}"),
            ),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = post(
        &node,
        "/appointments",
        &paesaggio(good[3].clone(), "BUSY@example.it", "key-busy-0003"),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 bookings")
    );
    assert_eq!(count(&node, "SELECT COUNT(*) FROM appointments").await, 3);
    // A key used again for a different booking is refused.
    let (status, body) = post(
        &node,
        "/appointments",
        &paesaggio(good[4].clone(), "other@example.it", "key-busy-0000"),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_exists");

    // Plans: overlapping ranges and a second plan for the same service.
    let mut desk = node.appointments().await;
    let mut overlapping = plans.clone();
    overlapping[0].hours = vec!["lun 09:00-12:00".into(), "lun 11:00-13:00".into()];
    let err = desk
        .set_plans(SetPlansRequest {
            plans: overlapping,
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("plans[0].hours"),
        "{}",
        err.message()
    );
    let mut twice = plans.clone();
    twice.push(plans[0].clone());
    let err = desk
        .set_plans(SetPlansRequest {
            plans: twice,
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("one plan per office and service"),
        "{}",
        err.message()
    );
    let mut unknown = plans.clone();
    unknown[1].office = "ufficio-inesistente".into();
    unknown[1].capacity = 0;
    let err = desk
        .set_plans(SetPlansRequest {
            plans: unknown,
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("plans[1].office"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("plans[1].capacity"),
        "{}",
        err.message()
    );
    let held = desk
        .list_plans(ListPlansRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.plans.len(), 2, "the plans in force are unchanged");
    // A read-only operator may not set plans.
    let reader = node
        .add_operator("lettore", urpnet_node::auth::Role::ReadOnly)
        .await;
    let err = node
        .appointments_as(&reader)
        .await
        .set_plans(SetPlansRequest {
            plans: plans.clone(),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The calendar is as the good bookings left it.
    let after = free(&node, "sue", "autorizzazione-paesaggistica").await;
    assert_eq!(after, good[3..].to_vec());
    node.stop().await;
}

async fn an_operator_at_celano_books_at_the_region_over_peering(backend: Backend, test: &str) {
    let Some(mut fed) = TestFederation::start(backend, test, &[CELANO, ABRUZZO], |_| {}).await
    else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    let region = fed.node(ABRUZZO.id);
    region
        .charter()
        .await
        .import_charter(ImportCharterRequest {
            charter: Some(sample_charter("regione-abruzzo")),
        })
        .await
        .expect("import");
    region
        .appointments()
        .await
        .set_plans(SetPlansRequest {
            plans: sample_plans("regione-abruzzo"),
            dry_run: false,
        })
        .await
        .expect("plans");
    let mut celano = fed.node(CELANO.id).appointments().await;
    let ask = FreeSlotsRequest {
        body: ABRUZZO.id.into(),
        office: "urp-avezzano".into(),
        service: "tessera-sanitaria".into(),
        limit: 5,
        ..FreeSlotsRequest::default()
    };
    let slots = wait_for("the Region's free slots", DEADLINE, || {
        let mut celano = celano.clone();
        let ask = ask.clone();
        async move {
            let r = celano.free_slots(ask).await.ok()?.into_inner();
            (!r.slots.is_empty()).then_some(r)
        }
    })
    .await;
    assert_eq!(
        slots.service_title, "Tessera sanitaria: rinnovo e duplicato",
        "{slots:?}"
    );
    let caller = AppointmentCitizen {
        given_name: "Mario".into(),
        family_name: "Di Pietro".into(),
        address: "Via Roma 3, 67043 Celano (AQ)".into(),
        email: "mario.dipietro@example.it".into(),
        phone: "0863 123456".into(),
    };
    let mut book = BookRequest {
        body: ABRUZZO.id.into(),
        idempotency_key: "phone-call-0001".into(),
        office: "urp-avezzano".into(),
        service: "tessera-sanitaria".into(),
        start: slots.slots[0].start.clone(),
        channel: "desk".into(),
        citizen: Some(caller),
        consent_processing: true,
        consent_share: false,
        ..BookRequest::default()
    };
    // Without the citizen's consent their data does not leave Celano.
    let err = celano.book(book.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("consent_share"), "{}", err.message());
    book.consent_share = true;
    let booked = celano
        .book(book.clone())
        .await
        .expect("booked")
        .into_inner();
    let a = booked.appointment.unwrap();
    assert_eq!(a.body, ABRUZZO.id);
    assert_eq!(a.booked_by, format!("peer:{}", CELANO.id));
    assert!(
        booked.manage_token.is_empty(),
        "the link goes to the citizen from the Region"
    );
    // A retry after a lost answer is the same booking.
    let again = celano.book(book.clone()).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(again.appointment.unwrap().id, a.id);
    // The Region holds it, with the caller's data; Celano holds nothing.
    let day = a.start[..10].to_string();
    let theirs = region
        .appointments()
        .await
        .agenda(AgendaRequest {
            office: "urp-avezzano".into(),
            date: day.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(theirs.appointments.len(), 1);
    assert_eq!(
        theirs.appointments[0].citizen.as_ref().unwrap().family_name,
        "Di Pietro"
    );
    let ours = celano
        .agenda(AgendaRequest {
            office: String::new(),
            date: day,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ours.appointments.is_empty());

    // The Region goes down: a clear answer, nothing booked anywhere.
    let region = fed.nodes.remove(1);
    region.stop().await;
    book.idempotency_key = "phone-call-0002".into();
    book.start = slots.slots[1].start.clone();
    let err = celano.book(book).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("cannot be reached"),
        "{}",
        err.message()
    );
}

async fn a_citizens_erasure_empties_their_bookings_and_stops_their_messages(
    backend: Backend,
    test: &str,
) {
    let Some(node) = celano(backend, test, None, None).await else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    let slots = free(&node, "sue", "autorizzazione-paesaggistica").await;
    // A slot more than a day ahead, so reminders are queued.
    let later = slots
        .iter()
        .find(|s| {
            s.parse::<Timestamp>().unwrap().as_millisecond()
                > Timestamp::now().as_millisecond() + 2 * 86_400_000
        })
        .unwrap()
        .clone();
    let (status, booked) = post(
        &node,
        "/appointments",
        &booking(&later, "giulia.marchetti@example.it", "erase-key-0001"),
    )
    .await;
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().unwrap().to_string();
    let queued = format!(
        "SELECT COUNT(*) FROM appointment_messages WHERE appointment_id = '{id}' AND pending_mask <> 0 AND kind = 'reminder'"
    );
    assert_eq!(count(&node, &queued).await, 2, "a day and an hour before");

    let (desk, store, writer) = urpnet_tests::local_desk(&node).await;
    let subject = urpnet_node::privacy::Subject {
        email: Some("giulia.marchetti@example.it".into()),
        ..Default::default()
    };
    let exported = urpnet_node::privacy::export(&desk, &subject, "urp")
        .await
        .unwrap();
    let appointment = &exported["tickets"][0]["appointments"][0];
    assert_eq!(appointment["family_name"], "Marchetti", "{exported}");
    assert_eq!(appointment["start"], later.as_str());
    urpnet_node::privacy::erase(&desk, &subject, "urp")
        .await
        .unwrap();
    drop(desk);
    drop(store);
    writer.await.unwrap();
    assert_eq!(
        count(
            &node,
            &format!("SELECT COUNT(*) FROM appointments WHERE id = '{id}' AND email = '' AND family_name = '' AND address = ''")
        )
        .await,
        1,
        "the booking keeps its seat without the citizen's data"
    );
    assert_eq!(
        count(&node, &queued).await,
        0,
        "no reminder to an erased citizen"
    );
    let again =
        urpnet_node::privacy::export(&urpnet_tests::local_desk(&node).await.0, &subject, "urp")
            .await
            .unwrap();
    assert_eq!(
        again["tickets"].as_array().map_or(0, Vec::len),
        0,
        "{again}"
    );
    node.stop().await;
}
