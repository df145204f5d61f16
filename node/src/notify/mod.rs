//! Notices to citizens (DESIGN.md §15): the origin node, which holds the
//! contact, tells a citizen who asked to be kept informed of each status
//! change and public note — also those made by the competent body after a
//! handoff, which reach the origin as events.
//!
//! The queue is durable ([`tables`]): a notice is written in the same
//! transaction as the event it is about, so nothing is lost across a crash
//! or an SMTP server down for hours. The worker sends each due notice on
//! every configured channel — e-mail over SMTP (lettre), and the body's
//! signed webhook (Standard Webhooks) for its app or messaging gateway —
//! retrying transient failures with backoff and giving up on permanent ones
//! (a refused recipient) without holding the queue. Each message carries an
//! id derived from the event, so a resend after a crash is recognisable as
//! the same message. Every notice sent is recorded on the ticket as a
//! `CitizenNotified` event, without personal data.

pub mod message;
pub mod tables;

use std::sync::Arc;
use std::time::Duration;

use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use tokio_util::sync::CancellationToken;
use urpnet_proto::v1::Channel;

use crate::casework::TicketDesk;
use crate::config::NodeConfig;
use crate::error::{NodeError, NodeResult};
use crate::registry_link::Federation;
use tables::{APP_IO, EMAIL, Notice, WEBHOOK};

/// How one channel's attempt went.
#[derive(Debug)]
enum Outcome {
    Sent,
    /// Not configured, or nothing to send to (no e-mail address).
    Skipped,
    /// Will not work however often it is tried.
    Permanent(String),
    /// May work later.
    Transient(String),
}

/// The worker that empties the queue.
pub struct Notifier {
    config: NodeConfig,
    desk: Arc<TicketDesk>,
    federation: Arc<Federation>,
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    webhook: Option<(String, Vec<u8>)>,
    appio: Option<(String, String)>,
    http: reqwest::Client,
    base_url: String,
    appointments: std::sync::OnceLock<Arc<crate::appointments::Appointments>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("smtp", &self.smtp.is_some())
            .field("webhook", &self.webhook.as_ref().map(|w| &w.0))
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// The notifier of a node, its channels as configured.
    ///
    /// # Errors
    /// A bad SMTP URL or sender, an unreadable webhook secret.
    pub fn new(
        config: NodeConfig,
        desk: Arc<TicketDesk>,
        federation: Arc<Federation>,
        public_addr: Option<std::net::SocketAddr>,
    ) -> NodeResult<Self> {
        let n = &config.notify;
        let smtp = if n.smtp_url.is_empty() {
            None
        } else {
            n.from
                .parse::<lettre::message::Mailbox>()
                .map_err(|e| NodeError::invalid("notify.from", format!("not an address: {e}")))?;
            Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(&n.smtp_url)
                    .map_err(|e| NodeError::invalid("notify.smtp_url", e.to_string()))?
                    .timeout(Some(n.timeout))
                    .build(),
            )
        };
        let webhook = if n.webhook_url.is_empty() {
            None
        } else {
            let text = std::fs::read_to_string(&n.webhook_secret_file).map_err(|e| {
                NodeError::invalid(
                    "notify.webhook_secret_file",
                    format!("{}: {e}", n.webhook_secret_file.display()),
                )
            })?;
            Some((n.webhook_url.clone(), message::webhook_secret(text.trim())?))
        };
        let appio = if n.appio_url.is_empty() {
            None
        } else {
            let key = std::fs::read_to_string(&n.appio_key_file).map_err(|e| {
                NodeError::invalid(
                    "notify.appio_key_file",
                    format!("{}: {e}", n.appio_key_file.display()),
                )
            })?;
            Some((
                n.appio_url.trim_end_matches('/').to_string(),
                key.trim().to_string(),
            ))
        };
        let base_url = config.public_base_url(public_addr);
        let http = reqwest::Client::builder()
            .timeout(n.timeout)
            .build()
            .map_err(|e| NodeError::Internal(format!("webhook client: {e}")))?;
        Ok(Self {
            config,
            desk,
            federation,
            smtp,
            webhook,
            appio,
            http,
            base_url,
            appointments: std::sync::OnceLock::new(),
        })
    }

    /// Also sends the appointments' messages, and opens the tickets of
    /// bookings a crash left unlinked.
    pub fn attach_appointments(&self, appointments: Arc<crate::appointments::Appointments>) {
        let _ = self.appointments.set(appointments);
    }

    /// Whether any channel is configured (otherwise notices wait).
    pub fn has_channels(&self) -> bool {
        self.smtp.is_some() || self.webhook.is_some() || self.appio.is_some()
    }

    /// Sends due notices until `shutdown`: at every interval, and whenever a
    /// commit changed a ticket (a notice is written with its event).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.has_channels() {
            tracing::info!(
                "no notify channel configured ([notify] smtp_url, webhook_url): notices wait in the queue"
            );
        }
        let mut changes = self.desk.store().subscribe_changes();
        loop {
            if self.has_channels()
                && let Err(error) = self.round().await
            {
                tracing::warn!(%error, "notify round failed");
            }
            if let Some(appointments) = self.appointments.get() {
                if let Err(error) = appointments.link_pending().await {
                    tracing::warn!(%error, "linking bookings to tickets failed");
                }
                if self.has_channels()
                    && let Err(error) = self.appointment_round(appointments).await
                {
                    tracing::warn!(%error, "appointment messages round failed");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = changes.recv() => {}
                () = tokio::time::sleep(self.config.notify.interval) => {}
            }
        }
        tracing::debug!("notifier stopped");
    }

    /// Sends every notice due now, a batch at a time.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn round(&self) -> NodeResult<usize> {
        let store = self.desk.store();
        let mut done = 0;
        loop {
            let now = urpnet_proto::hlc::system_time_ms() as i64;
            let due = tables::due(store, now, self.config.notify.batch).await?;
            if due.is_empty() {
                return Ok(done);
            }
            let sends = due.into_iter().map(|n| self.send(n));
            for result in futures::future::join_all(sends).await {
                result?;
                done += 1;
            }
        }
    }

    /// Tries a notice's pending channels and records the outcome.
    async fn send(&self, mut notice: Notice) -> NodeResult<()> {
        let store = self.desk.store();
        let news = message::News::load(self, &notice).await?;
        let mut errors = Vec::new();
        for channel in [EMAIL, WEBHOOK, APP_IO] {
            if notice.pending_mask & channel == 0 {
                continue;
            }
            let outcome = match &news {
                None => Outcome::Permanent("the ticket, its event or the contact is gone".into()),
                Some(news) if channel == EMAIL => self.email(news).await,
                Some(news) if channel == WEBHOOK => self.webhook(news).await,
                Some(news) => self.app_io(news).await,
            };
            let name = match channel {
                EMAIL => "email",
                WEBHOOK => "webhook",
                _ => "app_io",
            };
            match outcome {
                Outcome::Sent => {
                    notice.pending_mask &= !channel;
                    notice.sent_mask |= channel;
                    metrics::counter!("urpnet_notify_sent_total", "channel" => name).increment(1);
                    if let Some(news) = &news {
                        let channel = if channel == EMAIL {
                            Channel::Email
                        } else {
                            Channel::App
                        };
                        if let Err(error) = self
                            .desk
                            .record_notice(
                                &notice.ticket_id,
                                channel,
                                format!("{name}: {}", news.summary()),
                                &notice.event_key,
                            )
                            .await
                        {
                            tracing::warn!(%error, ticket = %notice.ticket_id, "cannot record the notice on the ticket");
                        }
                    }
                }
                Outcome::Skipped => notice.pending_mask &= !channel,
                Outcome::Permanent(e) => {
                    notice.pending_mask &= !channel;
                    notice.failed_mask |= channel;
                    metrics::counter!("urpnet_notify_failed_total", "channel" => name).increment(1);
                    tracing::warn!(ticket = %notice.ticket_id, channel = name, error = %e, "notice given up");
                    errors.push(format!("{name}: {e}"));
                }
                Outcome::Transient(e) => {
                    metrics::counter!("urpnet_notify_retried_total", "channel" => name)
                        .increment(1);
                    errors.push(format!("{name}: {e}"));
                }
            }
        }
        notice.attempts += 1;
        if notice.pending_mask != 0 && notice.attempts >= i64::from(self.config.notify.max_attempts)
        {
            notice.failed_mask |= notice.pending_mask;
            notice.pending_mask = 0;
            errors.push(format!("given up after {} attempts", notice.attempts));
        }
        let backoff = backoff(notice.attempts as u32, self.config.notify.max_backoff);
        let not_before = urpnet_proto::hlc::system_time_ms() as i64 + backoff.as_millis() as i64;
        tables::record(store, &notice, not_before, errors.join("; ")).await
    }

    async fn email(&self, news: &message::News) -> Outcome {
        if self.smtp.is_none() || news.contact.email.is_empty() {
            return Outcome::Skipped;
        }
        self.mail(news.email(&self.config.notify.from)).await
    }

    /// Sends one built e-mail over SMTP.
    async fn mail(&self, built: Result<lettre::Message, String>) -> Outcome {
        let Some(smtp) = &self.smtp else {
            return Outcome::Skipped;
        };
        let mail = match built {
            Ok(m) => m,
            Err(e) => return Outcome::Permanent(e),
        };
        match smtp.send(mail).await {
            Ok(_) => Outcome::Sent,
            Err(e) if e.is_permanent() => Outcome::Permanent(e.to_string()),
            Err(e) => Outcome::Transient(e.to_string()),
        }
    }

    async fn webhook(&self, news: &message::News) -> Outcome {
        let (id, body) = news.webhook_body();
        self.post(id, body).await
    }

    /// Posts one signed webhook (Standard Webhooks).
    async fn post(&self, id: String, body: Vec<u8>) -> Outcome {
        let Some((url, secret)) = &self.webhook else {
            return Outcome::Skipped;
        };
        let timestamp = urpnet_proto::hlc::system_time_ms() / 1000;
        let signature = message::sign_webhook(secret, &id, timestamp, &body);
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Outcome::Sent,
            Ok(r)
                if r.status().is_client_error()
                    && r.status().as_u16() != 408
                    && r.status().as_u16() != 429 =>
            {
                Outcome::Permanent(format!("the receiver answered {}", r.status()))
            }
            Ok(r) => Outcome::Transient(format!("the receiver answered {}", r.status())),
            Err(e) => Outcome::Transient(e.to_string()),
        }
    }
}

impl Notifier {
    /// An App IO message (its Services API): only for a citizen with a
    /// fiscal code whose profile allows this body's messages
    /// (`sender_allowed`); a citizen not on App IO, or who turned the
    /// service off, is skipped, not retried.
    async fn app_io(&self, news: &message::News) -> Outcome {
        let Some((base, key)) = &self.appio else {
            return Outcome::Skipped;
        };
        let fiscal_code = news.contact.fiscal_code.trim().to_uppercase();
        if fiscal_code.is_empty() {
            return Outcome::Skipped;
        }
        let profile = self
            .http
            .post(format!("{base}/profiles"))
            .header("Ocp-Apim-Subscription-Key", key)
            .json(&serde_json::json!({ "fiscal_code": fiscal_code }))
            .send()
            .await;
        match profile {
            Ok(r) if r.status().is_success() => {
                let allowed = r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["sender_allowed"].as_bool())
                    .unwrap_or(false);
                if !allowed {
                    return Outcome::Skipped;
                }
            }
            Ok(r) if r.status().as_u16() == 404 => return Outcome::Skipped,
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                return Outcome::Permanent(format!("App IO profiles answered {}", r.status()));
            }
            Ok(r) => return Outcome::Transient(format!("App IO profiles answered {}", r.status())),
            Err(e) => return Outcome::Transient(e.to_string()),
        }
        let (subject, markdown) = news.app_io_content();
        let sent = self
            .http
            .post(format!("{base}/messages"))
            .header("Ocp-Apim-Subscription-Key", key)
            .json(&serde_json::json!({
                "fiscal_code": fiscal_code,
                "content": { "subject": subject, "markdown": markdown },
            }))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Outcome::Sent,
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                Outcome::Permanent(format!("App IO messages answered {}", r.status()))
            }
            Ok(r) => Outcome::Transient(format!("App IO messages answered {}", r.status())),
            Err(e) => Outcome::Transient(e.to_string()),
        }
    }
}

impl Notifier {
    /// Sends every appointment message due now, a batch at a time.
    async fn appointment_round(
        &self,
        appointments: &crate::appointments::Appointments,
    ) -> NodeResult<usize> {
        use crate::appointments::messages;
        let store = self.desk.store();
        let mut done = 0;
        loop {
            let now = urpnet_proto::hlc::system_time_ms() as i64;
            let due = messages::due(store, now, self.config.notify.batch).await?;
            if due.is_empty() {
                return Ok(done);
            }
            for mut d in due {
                let letter = appointments.letter(&d).await?;
                let mut errors = Vec::new();
                for channel in [tables::EMAIL, tables::WEBHOOK] {
                    if d.pending_mask & channel == 0 {
                        continue;
                    }
                    let outcome = match &letter {
                        None => Outcome::Skipped,
                        Some(l) if channel == tables::EMAIL => {
                            self.mail(l.email(&self.config.notify.from)).await
                        }
                        Some(l) => self.post(l.webhook.0.clone(), l.webhook.1.clone()).await,
                    };
                    let name = if channel == tables::EMAIL {
                        "email"
                    } else {
                        "webhook"
                    };
                    match outcome {
                        Outcome::Sent => {
                            d.pending_mask &= !channel;
                            d.sent_mask |= channel;
                            metrics::counter!("urpnet_appointment_messages_sent_total", "channel" => name, "kind" => d.kind.clone()).increment(1);
                        }
                        Outcome::Skipped => d.pending_mask &= !channel,
                        Outcome::Permanent(e) => {
                            d.pending_mask &= !channel;
                            d.failed_mask |= channel;
                            tracing::warn!(appointment = %d.appointment_id, channel = name, error = %e, "appointment message given up");
                            errors.push(format!("{name}: {e}"));
                        }
                        Outcome::Transient(e) => errors.push(format!("{name}: {e}")),
                    }
                }
                d.attempts += 1;
                if d.pending_mask != 0 && d.attempts >= i64::from(self.config.notify.max_attempts) {
                    d.failed_mask |= d.pending_mask;
                    d.pending_mask = 0;
                    errors.push(format!("given up after {} attempts", d.attempts));
                }
                let wait = backoff(d.attempts as u32, self.config.notify.max_backoff);
                store
                    .write(messages::Record {
                        not_before_ms: urpnet_proto::hlc::system_time_ms() as i64
                            + wait.as_millis() as i64,
                        last_error: errors.join("; "),
                        due: d,
                    })
                    .await?;
                done += 1;
            }
        }
    }
}

/// 2, 4, 8 ... seconds after each failed attempt, up to `max`.
fn backoff(attempts: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempts.min(20)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let cap = Duration::from_secs(3600);
        assert_eq!(backoff(1, cap), Duration::from_secs(2));
        assert_eq!(backoff(5, cap), Duration::from_secs(32));
        assert_eq!(backoff(40, cap), cap);
    }
}
