//! The citizen's appointment messages (DESIGN.md §13): the confirmation,
//! each update and the cancellation, with an iCalendar (RFC 5545) part a
//! calendar program files in place of the earlier one (same `UID`, higher
//! `SEQUENCE`), and the reminders before the start.
//!
//! The queue (`appointment_messages`) is written in the booking's own
//! transaction and sent by the node's notifier over its channels (e-mail,
//! the body's signed webhook for its WhatsApp or SMS gateway), with the
//! same retries and backoff as ticket notices. A reminder belongs to one
//! sequence of its booking: once the booking has moved or been cancelled,
//! it is dropped unsent.

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use sqlx::Row as _;
use urpnet_proto::ics::{self, Method};

use super::tables::{self, Booking, CANCEL, CONFIRM, REMINDER, UPDATE};
use super::{Appointments, local_words};
use crate::error::NodeResult;
use crate::notify::tables::{EMAIL, WEBHOOK};
use crate::store::{Commit, Store, Tx, Value, Write};

/// Every channel a new message starts with.
pub const ALL: i64 = EMAIL | WEBHOOK;

/// A queued message.
#[derive(Debug, Clone)]
pub struct Due {
    /// Its id.
    pub id: i64,
    /// The booking.
    pub appointment_id: String,
    /// "confirm", "update", "cancel" or "reminder".
    pub kind: String,
    /// The iCalendar SEQUENCE: +1 on each move and on the cancellation.
    pub sequence: i64,
    /// Channels still to try.
    pub pending_mask: i64,
    /// Channels sent.
    pub sent_mask: i64,
    /// Channels given up.
    pub failed_mask: i64,
    /// Attempts so far.
    pub attempts: i64,
}

/// Up to `limit` messages due at `now_ms`, oldest first.
///
/// # Errors
/// Storage failures.
pub async fn due(store: &Store, now_ms: i64, limit: u32) -> NodeResult<Vec<Due>> {
    let rows = sqlx::query(
        "SELECT id, appointment_id, kind, sequence, pending_mask, sent_mask, failed_mask, attempts \
         FROM appointment_messages WHERE pending_mask <> 0 AND not_before_ms <= $1 ORDER BY not_before_ms, id LIMIT $2",
    )
    .bind(now_ms)
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Due {
                id: r.try_get(0)?,
                appointment_id: r.try_get(1)?,
                kind: r.try_get(2)?,
                sequence: r.try_get(3)?,
                pending_mask: r.try_get(4)?,
                sent_mask: r.try_get(5)?,
                failed_mask: r.try_get(6)?,
                attempts: r.try_get(7)?,
            })
        })
        .collect()
}

/// Records how an attempt went.
#[derive(Debug)]
pub struct Record {
    /// The message.
    pub due: Due,
    /// When to try again.
    pub not_before_ms: i64,
    /// Why the last attempt failed.
    pub last_error: String,
}

impl Write for Record {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        let d = &self.due;
        tx.texts(
            "UPDATE appointment_messages SET pending_mask = $1, sent_mask = $2, failed_mask = $3, \
             attempts = $4, not_before_ms = $5, last_error = $6 WHERE id = $7 RETURNING kind",
            &[
                &Value::Int(d.pending_mask),
                &Value::Int(d.sent_mask),
                &Value::Int(d.failed_mask),
                &Value::Int(d.attempts),
                &Value::Int(self.not_before_ms),
                &Value::Text(&self.last_error),
                &Value::Int(d.id),
            ],
        )
        .await?;
        Ok(Ok(()))
    }
}

/// One message, ready for every channel.
#[derive(Debug, Clone)]
pub struct Letter {
    /// The e-mail's subject.
    pub subject: String,
    /// Plain text.
    pub text: String,
    /// HTML.
    pub html: String,
    /// The iCalendar part and its method.
    pub ics: Option<(Method, String)>,
    /// The citizen's name.
    pub to_name: String,
    /// The citizen's e-mail.
    pub to_email: String,
    /// The same for every send of this message.
    pub message_id: String,
    /// The webhook's id and JSON.
    pub webhook: (String, Vec<u8>),
}

impl Letter {
    /// The e-mail: text and HTML, plus `invite.ics` (`text/calendar` with
    /// its method, as calendar programs look for).
    ///
    /// # Errors
    /// An address that does not parse.
    pub fn email(&self, from: &str) -> Result<lettre::Message, String> {
        let from: Mailbox = from.parse().map_err(|e| format!("notify.from: {e}"))?;
        let to: Mailbox = format!(
            "{} <{}>",
            self.to_name.replace(['<', '>', '"', ','], ""),
            self.to_email
        )
        .parse()
        .map_err(|e| format!("the citizen's address does not parse: {e}"))?;
        let body = MultiPart::alternative_plain_html(self.text.clone(), self.html.clone());
        let builder = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(self.subject.clone())
            .message_id(Some(self.message_id.clone()));
        let built = match &self.ics {
            None => builder.multipart(body),
            Some((method, ics)) => {
                let m = match method {
                    Method::Request => "REQUEST",
                    Method::Cancel => "CANCEL",
                };
                let kind = ContentType::parse(&format!("text/calendar; charset=UTF-8; method={m}"))
                    .map_err(|e| e.to_string())?;
                builder.multipart(
                    MultiPart::mixed()
                        .multipart(body)
                        .singlepart(Attachment::new("invito.ics".into()).body(ics.clone(), kind)),
                )
            }
        };
        built.map_err(|e| format!("the message cannot be built: {e}"))
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Appointments {
    /// The message a queued row stands for, or `None` when it is no longer
    /// to be sent (a reminder of an earlier sequence or of a cancelled
    /// booking, or a booking whose data is gone).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn letter(&self, due: &Due) -> NodeResult<Option<Letter>> {
        let Some(b) = tables::get(self.store(), &due.appointment_id).await? else {
            return Ok(None);
        };
        if b.email.is_empty() {
            return Ok(None);
        }
        if due.kind == REMINDER && (b.sequence != due.sequence || b.status != "booked") {
            return Ok(None);
        }
        if due.kind == UPDATE && b.sequence != due.sequence {
            // A later move has its own update.
            return Ok(None);
        }
        let plan = self.ready(&b.office, &b.service).await.ok();
        Ok(Some(self.compose(&b, due, plan.as_deref())))
    }

    fn compose(&self, b: &Booking, due: &Due, plan: Option<&super::plan::Ready>) -> Letter {
        let body = self.body_name();
        let service = plan.map_or(b.service.clone(), |p| p.service.title.clone());
        let (office_name, address) = plan.map_or((b.office.clone(), String::new()), |p| {
            (p.office.name.clone(), p.office.address.clone())
        });
        let when = local_words(b.start_ms);
        let length = (b.end_ms - b.start_ms) / 60_000;
        let base = self.base_url();
        let token = self.manage_token(&b.id, b.moves);
        let manage = if base.is_empty() {
            String::new()
        } else {
            format!("{base}/appointments/{}?token={token}", b.id)
        };
        let room = if b.channel == "video" && !base.is_empty() {
            format!("{base}/appointments/{}/room?token={token}", b.id)
        } else {
            String::new()
        };
        let (headline, subject_head) = match due.kind.as_str() {
            CONFIRM => (
                "Il suo appuntamento è confermato.",
                "Appuntamento confermato",
            ),
            UPDATE => (
                "Il suo appuntamento è stato spostato.",
                "Appuntamento spostato",
            ),
            CANCEL => (
                "Il suo appuntamento è stato annullato.",
                "Appuntamento annullato",
            ),
            _ => (
                "Le ricordiamo il suo appuntamento.",
                "Promemoria appuntamento",
            ),
        };
        let place = if b.channel == "video" {
            format!(
                "In videochiamata: il collegamento si apre {} minuti prima dell'inizio.",
                self.config().appointments.room_opens_min
            )
        } else {
            format!("Presso: {office_name}, {address}")
        };
        let bring: Vec<String> = plan
            .map(|p| p.service.documents.iter().map(|d| d.name.clone()).collect())
            .unwrap_or_default();
        let mut text = format!(
            "Gentile {} {},\n\n{headline}\n\nServizio: {service}\nEnte: {body}\nQuando: {when} ({length} minuti)\n{place}\n",
            b.given_name, b.family_name
        );
        if !bring.is_empty() && due.kind != CANCEL {
            text.push_str("\nDa portare o tenere a portata di mano:\n");
            for d in &bring {
                text.push_str(&format!("- {d}\n"));
            }
        }
        if !room.is_empty() && due.kind != CANCEL {
            text.push_str(&format!("\nStanza video: {room}\n"));
        }
        if !manage.is_empty() && due.kind != CANCEL {
            text.push_str(&format!(
                "\nPer spostare o annullare l'appuntamento, e per inviare documenti:\n{manage}\n"
            ));
        }
        text.push_str(&format!(
            "\nMessaggio inviato da {body}. Non risponda a questo indirizzo.\n"
        ));
        let mut html = format!(
            "<!doctype html><html lang=\"it\"><body style=\"font-family:sans-serif;line-height:1.5\">\
             <p>Gentile {} {},</p><p><strong>{}</strong></p><p>Servizio: {}<br>Ente: {}<br>Quando: {} ({} minuti)<br>{}</p>",
            esc(&b.given_name),
            esc(&b.family_name),
            headline,
            esc(&service),
            esc(&body),
            esc(&when),
            length,
            esc(&place)
        );
        if !bring.is_empty() && due.kind != CANCEL {
            html.push_str("<p>Da portare:</p><ul>");
            for d in &bring {
                html.push_str(&format!("<li>{}</li>", esc(d)));
            }
            html.push_str("</ul>");
        }
        if !room.is_empty() && due.kind != CANCEL {
            html.push_str(&format!(
                "<p><a href=\"{0}\">Entra nella stanza video</a></p>",
                esc(&room)
            ));
        }
        if !manage.is_empty() && due.kind != CANCEL {
            html.push_str(&format!(
                "<p><a href=\"{0}\">Sposta o annulla l'appuntamento, invia documenti</a></p>",
                esc(&manage)
            ));
        }
        html.push_str(&format!(
            "<p style=\"color:#555;font-size:smaller\">Messaggio inviato da {}.</p></body></html>",
            esc(&body)
        ));
        let ics = (due.kind != REMINDER).then(|| {
            let method = if due.kind == CANCEL {
                Method::Cancel
            } else {
                Method::Request
            };
            let event = ics::Appointment {
                uid: format!("{}@{}.urpnet", b.id.to_lowercase(), self.config().node.id),
                sequence: due.sequence as u32,
                start: jiff::Timestamp::from_millisecond(b.start_ms).unwrap_or_default(),
                end: jiff::Timestamp::from_millisecond(b.end_ms).unwrap_or_default(),
                summary: format!("{service} — {body}"),
                description: text.clone(),
                location: if b.channel == "video" {
                    String::new()
                } else {
                    format!("{office_name}, {address}")
                },
                url: if room.is_empty() {
                    manage.clone()
                } else {
                    room.clone()
                },
                organizer: plan
                    .map(|p| p.office.email.clone())
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| self.config().notify.from.clone()),
                attendee: b.email.clone(),
                alarms_min: self.config().appointments.reminders_min.clone(),
                stamp: jiff::Timestamp::now(),
            };
            (method, ics::render(method, &event))
        });
        let message_id = format!(
            "<appt.{}.{}.{}.{}@{}.urpnet.invalid>",
            b.id.to_lowercase(),
            due.kind,
            due.sequence,
            due.id,
            self.config().node.id
        );
        let webhook_id = format!("msg_appt_{}_{}", b.id, due.id);
        let webhook = serde_json::json!({
            "type": format!("appointment.{}", due.kind),
            "timestamp": urpnet_proto::calendar::iso_rome(urpnet_proto::hlc::system_time_ms()),
            "data": {
                "appointment_id": b.id,
                "service": service,
                "office": office_name,
                "start": super::local_text(b.start_ms),
                "end": super::local_text(b.end_ms),
                "channel": b.channel,
                "status": b.status,
                "text": text,
                "manage_url": manage,
                "room_url": room,
                "contact": {
                    "full_name": format!("{} {}", b.given_name, b.family_name),
                    "email": b.email,
                    "phone": b.phone,
                },
            },
        });
        Letter {
            subject: format!("{subject_head}: {service}, {when}"),
            text,
            html,
            ics,
            to_name: format!("{} {}", b.given_name, b.family_name),
            to_email: b.email.clone(),
            message_id,
            webhook: (webhook_id, serde_json::to_vec(&webhook).unwrap_or_default()),
        }
    }
}
