//! Sportello virtuale: Celano and the Region publish their booking plans; a
//! citizen books a video appointment at Celano's SUE for a landscape
//! (environmental) authorisation on the public side, gets the e-mail with
//! its iCalendar, and moves it; then an operator at Celano, on the phone
//! with another caller, books a slot at the Region's URP in Avezzano over
//! peering.

use anyhow::Context as _;
use serde_json::{Value, json};
use urpnet_node::cli;
use urpnet_proto::v1::appointment_desk_client::AppointmentDeskClient;
use urpnet_proto::v1::{
    AgendaRequest, AppointmentCitizen, BookRequest, FreeSlotsRequest, SetPlansRequest,
};

use crate::Demo;
use crate::join::RunningNode;
use crate::steps::{heading, wait_until};

const CELANO: &str = include_str!("../../../appointments/celano.toml");
const REGIONE: &str = include_str!("../../../appointments/regione-abruzzo.toml");

async fn client(node: &RunningNode) -> anyhow::Result<cli::appointments::AppointmentDesk> {
    let (channel, token) =
        cli::channel_with_token(&node.desk_addr.to_string(), &node.token).await?;
    Ok(AppointmentDeskClient::with_interceptor(channel, token))
}

/// The subject and the ICS lines a calendar program reads first.
fn summary(mail: &str) -> (String, String) {
    use mail_parser::MimeHeaders as _;
    let Some(m) = mail_parser::MessageParser::default().parse(mail.as_bytes()) else {
        return (String::new(), String::new());
    };
    let ics = m
        .attachments()
        .find(|a| {
            a.content_type()
                .is_some_and(|c| c.subtype() == Some("calendar"))
        })
        .map(|a| String::from_utf8_lossy(a.contents()).to_string())
        .unwrap_or_default();
    let lines = ["METHOD:", "UID:", "SEQUENCE:", "DTSTART;TZID=Europe/Rome:"]
        .iter()
        .filter_map(|k| ics.lines().find(|l| l.starts_with(k)).map(str::trim))
        .collect::<Vec<_>>()
        .join("  ");
    (m.subject().unwrap_or_default().to_string(), lines)
}

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo { nodes, smtp, .. } = demo;
    heading("Sportello virtuale: booking an appointment, in person or by video");
    let mut celano = client(&nodes[0]).await?;
    let mut region = client(&nodes[1]).await?;
    for (id, text, c) in [
        ("c_c426", CELANO, &mut celano),
        ("r_abruzz", REGIONE, &mut region),
    ] {
        let plans =
            urpnet_node::appointments::plan::from_toml(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let set = c
            .set_plans(SetPlansRequest {
                plans,
                dry_run: false,
            })
            .await?
            .into_inner();
        let list: Vec<String> = set
            .plans
            .iter()
            .map(|p| format!("{}@{}", p.service, p.office))
            .collect();
        println!("{id:<8} booking plans: {}", list.join(", "));
    }

    let public = nodes[0].public_addr.context("Celano's public listener")?;
    let base = format!("http://{public}");
    let http = reqwest::Client::new();
    let slots: Value = http
        .get(format!(
            "{base}/appointments/slots?office=sue&service=autorizzazione-paesaggistica&limit=4"
        ))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "\nGiulia opens Celano's booking page: {} at the {}",
        slots["service_title"].as_str().unwrap_or_default(),
        slots["office_name"].as_str().unwrap_or_default()
    );
    let starts: Vec<String> = slots["slots"]
        .as_array()
        .context("slots")?
        .iter()
        .map(|s| {
            println!(
                "  {}  ({} min)",
                s["start"].as_str().unwrap_or_default(),
                s["length_min"]
            );
            s["start"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    anyhow::ensure!(starts.len() >= 2, "the SUE has no free slots");
    let held: Value = http
        .post(format!("{base}/appointments/holds"))
        .json(&json!({"office": "sue", "service": "autorizzazione-paesaggistica", "start": starts[0]}))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "She picks {}; the seat is held for her until {} while she fills in the form.",
        starts[0],
        held["expires"].as_str().unwrap_or_default()
    );
    let booked: Value = http
        .post(format!("{base}/appointments"))
        .json(&json!({
            "idempotency_key": "demo-giulia-0001",
            "office": "sue",
            "service": "autorizzazione-paesaggistica",
            "start": starts[0],
            "channel": "video",
            "hold_id": held["hold_id"],
            "citizen": {
                "given_name": "Giulia", "family_name": "Marchetti",
                "address": "Via Ovidio 12, 67043 Celano (AQ)",
                "email": "giulia.marchetti@example.it"
            },
            "consent_processing": true,
            "notes": "Tettoia in legno nel giardino, zona di vincolo paesaggistico."
        }))
        .send()
        .await?
        .json()
        .await?;
    let id = booked["id"].as_str().context("booked")?.to_string();
    println!(
        "Booked: {} — ticket {} in Celano's queue (channel video).\n  manage link: {}\n  room link:   {} (opens 10 minutes before)",
        booked["when"].as_str().unwrap_or_default(),
        booked["ticket_id"].as_str().unwrap_or_default(),
        booked["manage_url"].as_str().unwrap_or_default(),
        booked["room_link"].as_str().unwrap_or_default(),
    );
    let token = booked["manage_token"].as_str().unwrap_or_default();
    let moved: Value = http
        .post(format!("{base}/appointments/{id}/move?token={token}"))
        .json(&json!({"start": starts[1]}))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "She moves it to {} (the old link stops working; the new one comes by e-mail).",
        moved["when"].as_str().unwrap_or_default()
    );
    match smtp {
        None => println!("(no local SMTP server: install python3-aiosmtpd to see the e-mails)"),
        Some(sink) => {
            let mails = wait_until("Giulia's confirmation and update", || {
                let mails: Vec<String> = sink
                    .messages()
                    .into_iter()
                    .filter(|m| {
                        m.starts_with("X-Envelope-To: giulia.marchetti@example.it")
                            && m.contains("text/calendar")
                    })
                    .collect();
                async move { (mails.len() >= 2).then_some(mails) }
            })
            .await?;
            for m in mails {
                let (subject, ics) = summary(&m);
                println!("  e-mail: {subject}");
                println!("          invito.ics: {ics}");
            }
        }
    }

    println!(
        "\nAt Celano an operator is on the phone with Mario, who needs a new health card: the Region's URP in Avezzano books it."
    );
    let theirs = celano
        .free_slots(FreeSlotsRequest {
            body: "r_abruzz".into(),
            office: "urp-avezzano".into(),
            service: "tessera-sanitaria".into(),
            limit: 3,
            ..Default::default()
        })
        .await?
        .into_inner();
    let first = theirs
        .slots
        .first()
        .context("the Region has no free slot")?;
    println!(
        "  {} at {}: first free {} (asked over peering, mutual TLS)",
        theirs.service_title, theirs.office_name, first.start
    );
    let booked = celano
        .book(BookRequest {
            body: "r_abruzz".into(),
            idempotency_key: "demo-phone-mario-01".into(),
            office: "urp-avezzano".into(),
            service: "tessera-sanitaria".into(),
            start: first.start.clone(),
            channel: "desk".into(),
            citizen: Some(AppointmentCitizen {
                given_name: "Mario".into(),
                family_name: "Di Pietro".into(),
                address: "Via Roma 3, 67043 Celano (AQ)".into(),
                email: "mario.dipietro@example.it".into(),
                phone: "0863 123456".into(),
            }),
            consent_processing: true,
            consent_share: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let a = booked.appointment.unwrap_or_default();
    println!(
        "  booked at {} ({}), {} — Mario agreed that his data goes to the Region, which e-mails him the confirmation and the manage link",
        a.body, a.office_name, a.start
    );
    let agenda = region
        .agenda(AgendaRequest {
            office: "urp-avezzano".into(),
            date: a.start.get(..10).unwrap_or_default().into(),
        })
        .await?
        .into_inner();
    println!(
        "  the Region's agenda for that day at Avezzano: {} appointment(s), booked by {}",
        agenda.appointments.len(),
        agenda
            .appointments
            .iter()
            .map(|x| x.booked_by.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
