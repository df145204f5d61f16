//! What a notice says: the Italian e-mail (plain text and HTML, with the
//! tracking link) and the webhook's JSON, signed as Standard Webhooks
//! (<https://www.standardwebhooks.com>) prescribes.

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use lettre::message::{Mailbox, MultiPart};
use sha2::Sha256;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{CitizenContact, Ticket, TicketEvent};

use super::Notifier;
use super::tables::Notice;
use crate::error::{NodeError, NodeResult};

/// A change to tell a citizen about, with what is needed to say it.
#[derive(Debug, Clone)]
pub struct News {
    /// The ticket after the change.
    pub ticket: Ticket,
    /// The change.
    pub event: TicketEvent,
    /// Whom to tell.
    pub contact: CitizenContact,
    /// The citizen's tracking link (empty when the key cannot be rebuilt).
    pub tracking_url: String,
    /// The body now responsible.
    pub responsible: String,
    /// The body telling (this node).
    pub sender: String,
    /// This node's id, for message ids.
    pub node: String,
}

impl News {
    /// What a queued notice is about, or `None` when its ticket, event or
    /// contact is gone (erased, or purged).
    ///
    /// # Errors
    /// Storage failures.
    pub(super) async fn load(n: &Notifier, notice: &Notice) -> NodeResult<Option<News>> {
        let store = n.desk.store();
        let Some(ticket) = crate::shared_ticket::tables::ticket(store, &notice.ticket_id).await?
        else {
            return Ok(None);
        };
        let Some(contact) = crate::shared_ticket::tables::contact(store, &notice.ticket_id).await?
        else {
            return Ok(None);
        };
        let event = crate::shared_ticket::tables::events(store, &notice.ticket_id)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .find(|e| {
                crate::shared_ticket::tables::event_key(&e.author_node, &e.event_id)
                    == notice.event_key
            });
        let Some(event) = event else {
            return Ok(None);
        };
        let tracking_url = match crate::casework::tables::request_key_of(store, &ticket.id).await? {
            Some(request_key) if !n.base_url.is_empty() => format!(
                "{}/track/{}?key={}",
                n.base_url,
                ticket.reference,
                n.desk.tracking_key_for(&request_key)
            ),
            _ => String::new(),
        };
        let responsible = n.federation.body_name(
            &ticket.owner_node,
            n.config.node.id.as_str(),
            &n.config.node.name,
        );
        Ok(Some(News {
            ticket,
            event,
            contact,
            tracking_url,
            responsible,
            sender: n.config.node.name.clone(),
            node: n.config.node.id.to_string(),
        }))
    }

    /// The change in one line, without personal data (also the
    /// `CitizenNotified` event's summary).
    pub fn summary(&self) -> String {
        match &self.event.kind {
            Some(Kind::StatusChanged(s)) => format!(
                "stato: {}",
                crate::shared_ticket::names::status_label_it(s.to())
            ),
            Some(Kind::Note(_)) => "nuova nota pubblica".into(),
            _ => "aggiornamento".into(),
        }
    }

    fn headline(&self) -> String {
        match &self.event.kind {
            Some(Kind::StatusChanged(s)) => format!(
                "La sua segnalazione {} è ora: {}",
                self.ticket.reference,
                crate::shared_ticket::names::status_label_it(s.to()).to_lowercase()
            ),
            _ => format!(
                "Nuovo aggiornamento sulla sua segnalazione {}",
                self.ticket.reference
            ),
        }
    }

    fn detail(&self) -> String {
        match &self.event.kind {
            Some(Kind::Note(n)) => n.text.clone(),
            Some(Kind::StatusChanged(s)) => s.reason.clone(),
            _ => String::new(),
        }
    }

    /// The message id: the same for every send of this notice (a resend
    /// after a crash is the same message to the recipient's server).
    pub fn message_id(&self) -> String {
        format!(
            "<{}.{}@{}.urpnet.invalid>",
            self.event.event_id.to_lowercase(),
            self.event.author_node,
            self.node
        )
    }

    /// The e-mail, plain text and HTML.
    ///
    /// # Errors
    /// An address that does not parse (the notice is then given up).
    pub fn email(&self, from: &str) -> Result<lettre::Message, String> {
        let from: Mailbox = from.parse().map_err(|e| format!("notify.from: {e}"))?;
        let to: Mailbox = if self.contact.full_name.is_empty() {
            self.contact.email.parse()
        } else {
            format!(
                "{} <{}>",
                self.contact.full_name.replace(['<', '>', '"'], ""),
                self.contact.email
            )
            .parse()
        }
        .map_err(|e| format!("the citizen's address does not parse: {e}"))?;
        let greeting = if self.contact.full_name.is_empty() {
            "Gentile cittadina, gentile cittadino,".to_string()
        } else {
            format!("Gentile {},", self.contact.full_name)
        };
        let detail = self.detail();
        let link_text = if self.tracking_url.is_empty() {
            String::new()
        } else {
            format!(
                "\nPuò seguire la segnalazione qui:\n{}\n",
                self.tracking_url
            )
        };
        let text = format!(
            "{greeting}\n\n{}.\n{}\nEnte responsabile: {}\nOggetto: {}\n{link_text}\nQuesto messaggio è inviato da {} perché ha chiesto di essere informato. Non risponda a questo indirizzo.\n",
            self.headline(),
            if detail.is_empty() {
                String::new()
            } else {
                format!("\n{detail}\n")
            },
            self.responsible,
            self.ticket.subject,
            self.sender,
        );
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let html = format!(
            "<!doctype html><html lang=\"it\"><body style=\"font-family:sans-serif;line-height:1.5\">\
             <p>{}</p><p><strong>{}</strong></p>{}<p>Ente responsabile: {}<br>Oggetto: {}</p>{}\
             <p style=\"color:#555;font-size:smaller\">Messaggio inviato da {} perché ha chiesto di essere informato.</p></body></html>",
            esc(&greeting),
            esc(&self.headline()),
            if detail.is_empty() {
                String::new()
            } else {
                format!("<p>{}</p>", esc(&detail))
            },
            esc(&self.responsible),
            esc(&self.ticket.subject),
            if self.tracking_url.is_empty() {
                String::new()
            } else {
                format!(
                    "<p><a href=\"{0}\">Segua la segnalazione</a></p>",
                    esc(&self.tracking_url)
                )
            },
            esc(&self.sender),
        );
        lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(format!(
                "Segnalazione {}: {}",
                self.ticket.reference,
                self.summary()
            ))
            .message_id(Some(self.message_id()))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| format!("the message cannot be built: {e}"))
    }

    /// App IO's subject (10 to 120 characters) and Markdown body (80 to
    /// 10,000 characters), as its message API requires.
    pub fn app_io_content(&self) -> (String, String) {
        let mut subject: String =
            format!("Segnalazione {}: {}", self.ticket.reference, self.summary())
                .chars()
                .take(120)
                .collect();
        while subject.chars().count() < 10 {
            subject.push('.');
        }
        let detail = self.detail();
        let mut markdown = format!(
            "**{}**\n\n{}{}\n\nEnte responsabile: {}  \nOggetto: {}\n\n{}",
            self.headline(),
            detail,
            if detail.is_empty() { "" } else { "\n" },
            self.responsible,
            self.ticket.subject,
            if self.tracking_url.is_empty() {
                String::new()
            } else {
                format!("[Segua la segnalazione]({})", self.tracking_url)
            },
        );
        if markdown.chars().count() < 80 {
            markdown.push_str("\n\nMessaggio inviato perché ha chiesto di essere informato sulla sua segnalazione.");
        }
        (subject, markdown.chars().take(10_000).collect())
    }

    /// The webhook's id (one per notice) and JSON body, for the body's own
    /// app or messaging gateway (which may text or message the citizen, so
    /// the contact is included: it stays with the body that holds it).
    pub fn webhook_body(&self) -> (String, Vec<u8>) {
        let id = format!("msg_{}_{}", self.event.author_node, self.event.event_id);
        let body = serde_json::json!({
            "type": "ticket.updated",
            "timestamp": urpnet_proto::calendar::iso_rome(self.event.hlc.map_or(0, |h| h.wall_ms)),
            "data": {
                "reference": self.ticket.reference,
                "status": crate::shared_ticket::names::fixmystreet_status(&self.ticket),
                "status_label": crate::shared_ticket::names::status_label_it(self.ticket.status()),
                "summary": self.summary(),
                "text": self.detail(),
                "responsible": self.responsible,
                "tracking_url": self.tracking_url,
                "contact": {
                    "full_name": self.contact.full_name,
                    "email": self.contact.email,
                    "phone": self.contact.phone,
                },
            },
        });
        (id, serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// The secret of a `whsec_<base64>` string (Standard Webhooks' format).
///
/// # Errors
/// A secret in another format, or shorter than 24 bytes.
pub fn webhook_secret(text: &str) -> NodeResult<Vec<u8>> {
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| {
            NodeError::invalid("notify.webhook_secret_file", "must hold whsec_<base64>")
        })?;
    if bytes.len() < 24 {
        return Err(NodeError::invalid(
            "notify.webhook_secret_file",
            "the secret must be at least 24 bytes",
        ));
    }
    Ok(bytes)
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn sign_webhook(secret: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signatures_follow_the_standard_webhooks_example() {
        // The specification's published example.
        let secret = webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign_webhook(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(webhook_secret("whsec_c2hvcnQ=").is_err(), "too short");
        assert!(webhook_secret("whsec_!!!").is_err(), "not base64");
    }
}
