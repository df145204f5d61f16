//! Appointments (DESIGN.md §13, Sportello virtuale): booking at this body's
//! offices, and at other bodies' offices through them.
//!
//! A calendar belongs to one office of this body and this node is its only
//! writer. Slots come from the booking plan ([`plan`]) laid out in Italian
//! civil time (`urpnet_proto::slots`); a seat is taken under the seats
//! table's primary key ([`tables`]), so no race exceeds capacity. Each
//! booking opens a ticket (channel video or desk) so it is in the queue and
//! its outcome reaches the archive. The citizen's messages — confirmation,
//! update, cancellation with iCalendar, and reminders — go through a
//! durable queue sent by the notifier ([`messages`]). Another body's
//! calendar is asked and booked over peering ([`service`]); nothing is
//! replicated, and the citizen's data goes there only with their consent.
//!
//! The manage token is derived from a node secret, the booking and its
//! number of moves (like the tracking key), and stored hashed: each move
//! gives a new one (the old link stops working), and the e-mails, sent
//! later by the queue, can carry it without the token ever being stored.

pub mod messages;
pub mod plan;
pub mod service;
pub mod tables;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use jiff::{SignedDuration, Timestamp};
use urpnet_proto::slots::{self, SlotError};
use urpnet_proto::v1::{
    self, AppointmentCitizen, AppointmentPlan, BookRequest, BookResponse, Channel, Consent,
    CreateTicketRequest, FreeSlot, FreeSlotsRequest, FreeSlotsResponse, Location,
};
use urpnet_proto::validate::Violations;

use crate::auth::{Action, Actor, Role};
use crate::casework::{StatusChange, TicketDesk};
use crate::charter::CharterBook;
use crate::config::NodeConfig;
use crate::error::{NodeError, NodeResult};
use crate::peering::PeeringContext;
use crate::store::Store;
use plan::Ready;
use tables::{Booked, Booking};

/// Who is booking.
#[derive(Debug, Clone)]
pub enum Booker {
    /// A citizen on the public side.
    Citizen,
    /// An operator of this node.
    Operator(Actor),
    /// Another body's node, for its caller.
    Peer(String),
}

impl Booker {
    fn scope(&self) -> String {
        match self {
            Booker::Citizen => "citizen".into(),
            Booker::Operator(a) => format!("op:{}", a.id),
            Booker::Peer(node) => format!("peer:{node}"),
        }
    }

    fn label(&self) -> String {
        match self {
            Booker::Citizen => "citizen".into(),
            Booker::Operator(a) => format!("operator:{}", a.id),
            Booker::Peer(node) => format!("peer:{node}"),
        }
    }
}

/// The plans readied against one version of this body's charter.
#[derive(Debug)]
struct Plans {
    charter_version: u64,
    by_key: HashMap<(String, String), Arc<Ready>>,
}

/// A booking with its plan, as answered.
#[derive(Debug, Clone)]
pub struct View {
    /// The booking.
    pub booking: Booking,
    /// Its plan, while the service is bookable.
    pub plan: Option<Arc<Ready>>,
}

/// A booking just made (or found again by its key).
#[derive(Debug, Clone)]
pub struct Made {
    /// The booking and its plan.
    pub view: View,
    /// Its manage token (for the citizen only).
    pub token: String,
    /// The key's earlier booking.
    pub replayed: bool,
}

/// The appointments of this node.
pub struct Appointments {
    config: NodeConfig,
    store: Store,
    desk: Arc<TicketDesk>,
    charter: Arc<CharterBook>,
    peering: OnceLock<Arc<PeeringContext>>,
    plans: Mutex<Option<Arc<Plans>>>,
    video_secret: Option<Vec<u8>>,
    base_url: OnceLock<String>,
}

impl std::fmt::Debug for Appointments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appointments").finish_non_exhaustive()
    }
}

/// The actor recorded on tickets that citizens' bookings open.
fn front_door() -> Actor {
    Actor {
        id: "sportello-virtuale".into(),
        name: "Sportello virtuale".into(),
        role: Role::Operator,
    }
}

fn now_ms() -> i64 {
    urpnet_proto::hlc::system_time_ms() as i64
}

/// An instant as RFC 3339 with the Italian offset.
pub fn local_text(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| urpnet_proto::slots::rfc3339(&t.to_zoned(urpnet_proto::calendar::rome())))
        .unwrap_or_default()
}

/// "lunedì 14 dicembre 2026 alle 09:30".
pub fn local_words(ms: i64) -> String {
    let Ok(t) = Timestamp::from_millisecond(ms) else {
        return String::new();
    };
    let z = t.to_zoned(urpnet_proto::calendar::rome());
    format!(
        "{} alle {}",
        crate::charter::explain::day_words(z.date()),
        z.strftime("%H:%M")
    )
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn slot_error(field: &str, e: SlotError) -> NodeError {
    NodeError::invalid(field, e.to_string())
}

/// The "from"/"until" of a free-slot query: a date (start of that day in
/// Italy) or an instant.
fn parse_bound(field: &str, text: &str) -> NodeResult<Timestamp> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let date = text.parse::<jiff::civil::Date>().map_err(|_| {
        NodeError::invalid(field, "must be a date YYYY-MM-DD or an RFC 3339 instant")
    })?;
    date.to_zoned(urpnet_proto::calendar::rome())
        .map(|z| z.timestamp())
        .map_err(|e| NodeError::invalid(field, e.to_string()))
}

/// Checks the citizen's data and the booking's fields.
fn check_book(req: &BookRequest) -> Result<(), Violations> {
    let mut v = Violations::new();
    v.check(
        (8..=64).contains(&req.idempotency_key.len())
            && req
                .idempotency_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "idempotency_key",
        "must be 8..=64 characters of [A-Za-z0-9_-]",
    );
    v.length("office", &req.office, 1, 64);
    v.length("service", &req.service, 1, 64);
    v.length("start", &req.start, 1, 40);
    v.check(
        req.channel == "video" || req.channel == "desk",
        "channel",
        "must be \"video\" or \"desk\"",
    );
    v.check(
        req.consent_processing,
        "consent_processing",
        "the citizen must agree to the processing of their data for the appointment",
    );
    v.length("notes", &req.notes, 0, 2000);
    v.printable("notes", &req.notes);
    v.length("hold_id", &req.hold_id, 0, 64);
    match &req.citizen {
        None => v.add("citizen", "is required (name, surname, address, e-mail)"),
        Some(c) => check_citizen(&mut v, c),
    }
    v.into_result()
}

fn check_citizen(v: &mut Violations, c: &AppointmentCitizen) {
    for (field, value, max) in [
        ("citizen.given_name", &c.given_name, 100),
        ("citizen.family_name", &c.family_name, 100),
        ("citizen.address", &c.address, 300),
    ] {
        v.length(field, value.trim(), 1, max);
        v.printable(field, value);
    }
    v.length("citizen.email", &c.email, 3, 254);
    let parts: Vec<&str> = c.email.split('@').collect();
    v.check(
        parts.len() == 2
            && !parts[0].is_empty()
            && parts[1].contains('.')
            && !c
                .email
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control()),
        "citizen.email",
        "must be an e-mail address with one '@' and a domain, e.g. nome@example.it",
    );
    v.length("citizen.phone", &c.phone, 0, 32);
    v.check(
        c.phone
            .chars()
            .all(|ch| ch.is_ascii_digit() || " +-".contains(ch)),
        "citizen.phone",
        "only digits, spaces, '+' and '-'",
    );
}

impl Appointments {
    /// The appointments of a node.
    ///
    /// # Errors
    /// An unreadable video JWT secret.
    pub fn new(
        config: NodeConfig,
        store: Store,
        desk: Arc<TicketDesk>,
        charter: Arc<CharterBook>,
    ) -> NodeResult<Arc<Self>> {
        let a = &config.appointments;
        let video_secret = if a.video_jwt_secret_file.as_os_str().is_empty() {
            None
        } else {
            let text = std::fs::read_to_string(&a.video_jwt_secret_file).map_err(|e| {
                NodeError::invalid(
                    "appointments.video_jwt_secret_file",
                    format!("{}: {e}", a.video_jwt_secret_file.display()),
                )
            })?;
            Some(text.trim().as_bytes().to_vec())
        };
        Ok(Arc::new(Self {
            config,
            store,
            desk,
            charter,
            peering: OnceLock::new(),
            plans: Mutex::new(None),
            video_secret,
            base_url: OnceLock::new(),
        }))
    }

    /// Lets bookings at other bodies go through peering.
    pub fn attach_peering(&self, ctx: Arc<PeeringContext>) {
        let _ = self.peering.set(ctx);
    }

    /// Where citizens reach the public side (for manage links).
    pub fn set_base_url(&self, url: String) {
        let _ = self.base_url.set(url);
    }

    /// The public side's address, or empty.
    pub fn base_url(&self) -> &str {
        self.base_url.get().map_or("", String::as_str)
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This body's display name.
    pub fn body_name(&self) -> String {
        self.config.node.name.clone()
    }

    fn own(&self) -> &str {
        self.config.node.id.as_str()
    }

    /// The plans, readied against this body's current charter (cached until
    /// the charter or the plans change).
    async fn plans(&self) -> NodeResult<Arc<Plans>> {
        let current = self.charter.current(self.own()).await.ok();
        let version = current.as_ref().map_or(0, |v| v.version);
        if let Some(p) = self.plans.lock().expect("plans").as_ref()
            && p.charter_version == version
        {
            return Ok(p.clone());
        }
        let mut by_key = HashMap::new();
        if let Some(charter) = current.as_ref().and_then(|v| v.charter.as_ref())
            && !current.as_ref().is_some_and(|v| v.retired)
        {
            let stored: Vec<AppointmentPlan> = tables::plans(&self.store)
                .await?
                .iter()
                .filter_map(|json| serde_json::from_str(json).ok())
                .collect();
            for p in stored {
                match plan::check_all(std::slice::from_ref(&p), charter) {
                    Ok(mut ready) => {
                        if let Some(r) = ready.pop() {
                            by_key.insert((p.office.clone(), p.service.clone()), Arc::new(r));
                        }
                    }
                    Err(v) => {
                        tracing::warn!(office = %p.office, service = %p.service, error = %v, "a booking plan no longer fits the charter: not bookable")
                    }
                }
            }
        }
        let plans = Arc::new(Plans {
            charter_version: version,
            by_key,
        });
        *self.plans.lock().expect("plans") = Some(plans.clone());
        Ok(plans)
    }

    async fn ready(&self, office: &str, service: &str) -> NodeResult<Arc<Ready>> {
        self.plans()
            .await?
            .by_key
            .get(&(office.to_string(), service.to_string()))
            .cloned()
            .ok_or_else(|| {
                NodeError::NotFound(format!(
                    "a booking plan for service `{service}` at office `{office}` of {} (see `urpnet-node appointments plan`)",
                    self.config.node.name
                ))
            })
    }

    /// The plans in force.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list_plans(&self) -> NodeResult<Vec<AppointmentPlan>> {
        let plans = self.plans().await?;
        let mut out: Vec<AppointmentPlan> = plans.by_key.values().map(|r| r.plan.clone()).collect();
        out.sort_by(|a, b| (&a.office, &a.service).cmp(&(&b.office, &b.service)));
        Ok(out)
    }

    /// Replaces the plans (supervisor), after checking every one against
    /// this body's charter and each other.
    ///
    /// # Errors
    /// `PermissionDenied`, `FailedPrecondition` without a charter,
    /// `InvalidArgument` naming each plan's broken rule.
    pub async fn set_plans(
        &self,
        actor: &Actor,
        plans: Vec<AppointmentPlan>,
        dry_run: bool,
    ) -> NodeResult<Vec<AppointmentPlan>> {
        actor.require(Action::PublishCharter)?;
        let current = self.charter.current(self.own()).await.map_err(|_| {
            NodeError::FailedPrecondition(
                "this body has no charter yet: import it first (`urpnet-node charter import`), plans name its offices and services".into(),
            )
        })?;
        let charter = current.charter.clone().unwrap_or_default();
        let ready = plan::check_all(&plans, &charter)?;
        let out: Vec<AppointmentPlan> = ready.iter().map(|r| r.plan.clone()).collect();
        if dry_run {
            return Ok(out);
        }
        let rows = out
            .iter()
            .map(|p| {
                Ok((
                    p.office.clone(),
                    p.service.clone(),
                    serde_json::to_string(p).map_err(|e| NodeError::Internal(e.to_string()))?,
                ))
            })
            .collect::<NodeResult<Vec<_>>>()?;
        self.store
            .write(tables::SetPlans {
                plans: rows,
                now_ms: now_ms(),
            })
            .await?;
        *self.plans.lock().expect("plans") = None;
        tracing::info!(plans = out.len(), "booking plans replaced");
        Ok(out)
    }

    /// Free slots, here or at another body.
    ///
    /// # Errors
    /// `InvalidArgument` for bad bounds, `NotFound` for an unplanned
    /// service, `Unavailable` when another body cannot be reached.
    pub async fn free_slots(&self, req: &FreeSlotsRequest) -> NodeResult<FreeSlotsResponse> {
        if !req.body.is_empty() && req.body != self.own() {
            return self.remote_slots(req).await;
        }
        let ready = self.ready(&req.office, &req.service).await?;
        let now = Timestamp::now();
        let from = if req.from.is_empty() {
            now
        } else {
            parse_bound("from", &req.from)?
        };
        let until = if req.until.is_empty() {
            from + SignedDuration::from_hours(24 * 14)
        } else {
            parse_bound("until", &req.until)?
        };
        if until <= from {
            return Err(NodeError::invalid("until", "must be after from"));
        }
        // An hour more for a window across the autumn change.
        if until.duration_since(from) > SignedDuration::from_hours(24 * 62 + 1) {
            return Err(NodeError::invalid("until", "at most 62 days after from"));
        }
        let limit = match req.limit {
            0 => 100,
            n => n.min(500) as usize,
        };
        let capacity = ready.plan.capacity;
        let laid = slots::slots(&ready.calendar, &ready.rules, from, until, now);
        let (Some(first), Some(last)) = (laid.first(), laid.last()) else {
            return Ok(self.slots_response(&ready, Vec::new()));
        };
        let taken = tables::taken(
            &self.store,
            &req.office,
            &req.service,
            first.start.timestamp().as_millisecond(),
            last.start.timestamp().as_millisecond() + 1,
            now.as_millisecond(),
        )
        .await?;
        let out = laid
            .iter()
            .filter_map(|s| {
                let used = taken
                    .get(&s.start.timestamp().as_millisecond())
                    .copied()
                    .unwrap_or(0);
                (used < capacity).then(|| FreeSlot {
                    start: s.start_text(),
                    end: s.end_text(),
                    length_min: ready.rules.length_min,
                    free: capacity - used,
                })
            })
            .take(limit)
            .collect();
        Ok(self.slots_response(&ready, out))
    }

    fn slots_response(&self, ready: &Ready, slots: Vec<FreeSlot>) -> FreeSlotsResponse {
        FreeSlotsResponse {
            slots,
            office_name: ready.office.name.clone(),
            service_title: ready.service.title.clone(),
        }
    }

    /// The next free slots after `after_ms` (for "slot taken" answers).
    async fn next_free(&self, office: &str, service: &str, after_ms: i64) -> Vec<String> {
        let from = Timestamp::from_millisecond(after_ms).unwrap_or_else(|_| Timestamp::now());
        let req = FreeSlotsRequest {
            office: office.into(),
            service: service.into(),
            from: from.to_string(),
            limit: 3,
            ..FreeSlotsRequest::default()
        };
        self.free_slots(&req)
            .await
            .map(|r| r.slots.into_iter().map(|s| s.start).collect())
            .unwrap_or_default()
    }

    async fn with_next(&self, e: NodeError, office: &str, service: &str, at: i64) -> NodeError {
        match e {
            NodeError::FailedPrecondition(m) if m.starts_with("slot taken") => {
                let next = self.next_free(office, service, at).await;
                NodeError::FailedPrecondition(if next.is_empty() {
                    format!("{m}; no other free slot in the next days")
                } else {
                    format!("{m}; next free: {}", next.join(", "))
                })
            }
            other => other,
        }
    }

    /// Checks a requested start against the plan.
    fn slot(&self, ready: &Ready, field: &str, start: &str) -> NodeResult<slots::Slot> {
        slots::check(&ready.calendar, &ready.rules, start, Timestamp::now())
            .map_err(|e| slot_error(field, e))
    }

    /// Holds a seat for `[appointments] hold`.
    ///
    /// # Errors
    /// As booking: a slot refused by rule, or taken.
    pub async fn hold(
        &self,
        office: &str,
        service: &str,
        start: &str,
    ) -> NodeResult<v1::HoldResponse> {
        let ready = self.ready(office, service).await?;
        let slot = self.slot(&ready, "start", start)?;
        let hold_id = ulid::Ulid::new().to_string().to_lowercase();
        let now = now_ms();
        let expires_ms = now + self.config.appointments.hold.as_millis() as i64;
        let start_ms = slot.start.timestamp().as_millisecond();
        let written = self
            .store
            .write(tables::Hold {
                office: office.into(),
                service: service.into(),
                start_ms,
                start_text: slot.start_text(),
                capacity: ready.plan.capacity,
                hold_id: hold_id.clone(),
                expires_ms,
                now_ms: now,
            })
            .await;
        if let Err(e) = written {
            return Err(self.with_next(e, office, service, start_ms).await);
        }
        Ok(v1::HoldResponse {
            hold_id,
            expires_ms: expires_ms as u64,
            slot: Some(FreeSlot {
                start: slot.start_text(),
                end: slot.end_text(),
                length_min: ready.rules.length_min,
                free: 0,
            }),
        })
    }

    /// The manage token of a booking after `moves` moves.
    pub fn manage_token(&self, id: &str, moves: i64) -> String {
        self.desk
            .tracking_key_for(&format!("appointment:{id}:{moves}"))
    }

    /// Books a slot here, or at another body through peering.
    ///
    /// # Errors
    /// `InvalidArgument` naming the field and rule, `FailedPrecondition`
    /// for a taken slot (with the next free ones) or the daily limit,
    /// `AlreadyExists` for a key reused with another request,
    /// `Unavailable` when another body cannot be reached.
    pub async fn book(&self, booker: &Booker, req: BookRequest) -> NodeResult<BookResponse> {
        if let Booker::Operator(actor) = booker {
            actor.require(Action::Create)?;
        }
        check_book(&req)?;
        if !req.body.is_empty() && req.body != self.own() {
            return self.remote_book(booker, req).await;
        }
        let made = self.book_here(booker, req).await?;
        Ok(BookResponse {
            appointment: Some(self.to_proto(
                &made.view.booking,
                made.view.plan.as_deref(),
                true,
                Vec::new(),
            )),
            manage_token: match booker {
                Booker::Peer(_) => String::new(),
                _ => made.token,
            },
            replayed: made.replayed,
        })
    }

    /// Books a slot of this body's calendar for a citizen (the public
    /// side), answering the booking itself.
    ///
    /// # Errors
    /// As [`Appointments::book`].
    pub async fn book_citizen(&self, req: BookRequest) -> NodeResult<Made> {
        check_book(&req)?;
        if !req.body.is_empty() && req.body != self.own() {
            return Err(NodeError::invalid(
                "body",
                "citizens book at this body's offices only",
            ));
        }
        self.book_here(&Booker::Citizen, req).await
    }

    async fn book_here(&self, booker: &Booker, req: BookRequest) -> NodeResult<Made> {
        let ready = self.ready(&req.office, &req.service).await?;
        if !ready.offers(&req.channel) {
            return Err(NodeError::invalid(
                "channel",
                format!(
                    "this service is booked at this office only as: {}",
                    ready.plan.channels.join(", ")
                ),
            ));
        }
        if req.channel == "video" && self.config.appointments.video_base_url.is_empty() {
            return Err(NodeError::invalid(
                "channel",
                "this body runs no video service ([appointments] video_base_url): choose \"desk\"",
            ));
        }
        let slot = self.slot(&ready, "start", &req.start)?;
        let citizen = req.citizen.clone().unwrap_or_default();
        let now = now_ms();
        let id = ulid::Ulid::new().to_string();
        let today = Timestamp::now()
            .to_zoned(urpnet_proto::calendar::rome())
            .date();
        let start_ms = slot.start.timestamp().as_millisecond();
        let mut fingerprint = req.clone();
        fingerprint.hold_id.clear();
        let request_sha = sha256_hex(&format!("{fingerprint:?}"));
        let room = if req.channel == "video" {
            let mut bytes = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
            format!("urp-{}", hex::encode(bytes))
        } else {
            String::new()
        };
        let booking = Booking {
            id: id.clone(),
            office: req.office.clone(),
            service: req.service.clone(),
            channel: req.channel.clone(),
            start_ms,
            end_ms: slot.end.timestamp().as_millisecond(),
            status: "booked".into(),
            room,
            booked_by: booker.label(),
            given_name: citizen.given_name.trim().to_string(),
            family_name: citizen.family_name.trim().to_string(),
            address: citizen.address.trim().to_string(),
            email: citizen.email.trim().to_string(),
            phone: citizen.phone.trim().to_string(),
            notes: req.notes.clone(),
            created_ms: now,
            ..Booking::default()
        };
        let limit = match booker {
            Booker::Operator(_) => 0,
            _ => self.config.appointments.max_per_email_per_day,
        };
        let written = self
            .store
            .write(tables::Book {
                booking: booking.clone(),
                start_text: slot.start_text(),
                capacity: ready.plan.capacity,
                hold: (!req.hold_id.is_empty()).then(|| req.hold_id.clone()),
                manage_sha: crate::tracking::key_hash(&self.manage_token(&id, 0)),
                idempotency_key: format!("{}:{}", booker.scope(), req.idempotency_key),
                request_sha,
                email_day: sha256_hex(&format!("{}|{today}", citizen.email.trim().to_lowercase())),
                max_per_day: limit,
                reminders_min: self.config.appointments.reminders_min.clone(),
                now_ms: now,
            })
            .await;
        let (mut booking, replayed) = match written {
            Ok(Booked::New) => {
                metrics::counter!("urpnet_appointments_booked_total", "by" => match booker {
                    Booker::Citizen => "citizen",
                    Booker::Operator(_) => "operator",
                    Booker::Peer(_) => "peer",
                })
                .increment(1);
                (booking, false)
            }
            Ok(Booked::Replayed(earlier)) => (
                tables::get(&self.store, &earlier).await?.ok_or_else(|| {
                    NodeError::Internal(format!("appointment {earlier} vanished"))
                })?,
                true,
            ),
            Err(e) => {
                metrics::counter!("urpnet_appointments_refused_total").increment(1);
                return Err(self.with_next(e, &req.office, &req.service, start_ms).await);
            }
        };
        if booking.ticket_id.is_empty()
            && let Err(error) = self.link(&mut booking, booker).await
        {
            // The booking holds; the sweeper links it later.
            tracing::warn!(%error, appointment = %booking.id, "booked, the ticket will be opened later");
        }
        let token = self.manage_token(&booking.id, booking.moves);
        Ok(Made {
            view: View {
                booking,
                plan: Some(ready),
            },
            token,
            replayed,
        })
    }

    /// Opens the booking's ticket (idempotent: its request id is the
    /// booking's).
    async fn link(&self, booking: &mut Booking, booker: &Booker) -> NodeResult<()> {
        let ready = self.ready(&booking.office, &booking.service).await?;
        let category = ready
            .service
            .categories
            .first()
            .cloned()
            .unwrap_or_else(|| "altro".into());
        let actor = match booker {
            Booker::Operator(a) => a.clone(),
            _ => front_door(),
        };
        let channel = if booking.channel == "video" {
            Channel::Video
        } else {
            Channel::Desk
        };
        let subject: String = format!("Appuntamento: {}", ready.service.title)
            .chars()
            .take(200)
            .collect();
        let mut description = format!(
            "Appuntamento {} ({}), {} minuti, presso {}.",
            local_words(booking.start_ms),
            if booking.channel == "video" {
                "in videochiamata"
            } else {
                "allo sportello"
            },
            ready.rules.length_min,
            ready.office.name
        );
        if !booking.notes.is_empty() {
            description.push_str("\n\n");
            description.push_str(&booking.notes);
        }
        let created = self
            .desk
            .create(
                &actor,
                CreateTicketRequest {
                    request_id: format!("appt_{}", booking.id),
                    category,
                    channel: channel as i32,
                    subject,
                    description: description.chars().take(10_000).collect(),
                    location: Some(Location {
                        istat_code: ready.office.istat_code.clone(),
                        address: ready.office.address.clone(),
                        coordinates: None,
                    }),
                    consent: Some(Consent {
                        share_with_competent_body: false,
                        contact_for_updates: false,
                    }),
                    citizen: Some(v1::CitizenContact {
                        full_name: format!("{} {}", booking.given_name, booking.family_name),
                        email: booking.email.clone(),
                        phone: booking.phone.clone(),
                        fiscal_code: String::new(),
                    }),
                    ..CreateTicketRequest::default()
                },
            )
            .await?;
        booking.ticket_id = created.ticket.id.clone();
        self.store
            .write(tables::Link {
                id: booking.id.clone(),
                ticket_id: created.ticket.id,
            })
            .await
    }

    /// Opens the tickets of bookings a crash left unlinked.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn link_pending(&self) -> NodeResult<usize> {
        let mut n = 0;
        for mut b in tables::unlinked(&self.store, 100).await? {
            let booker = if let Some(node) = b.booked_by.strip_prefix("peer:") {
                Booker::Peer(node.to_string())
            } else {
                Booker::Citizen
            };
            match self.link(&mut b, &booker).await {
                Ok(()) => n += 1,
                Err(error) => {
                    tracing::warn!(%error, appointment = %b.id, "cannot open the booking's ticket yet")
                }
            }
        }
        Ok(n)
    }

    /// A booking by its manage token; forged, reused (before a move) and
    /// expired (a day after the end) tokens get the same answer as an
    /// unknown booking.
    ///
    /// # Errors
    /// `NotFound`, storage failures.
    pub async fn by_token(&self, id: &str, token: &str) -> NodeResult<View> {
        let unknown = || NodeError::NotFound("an appointment with this id and token".into());
        if id.len() > 40 || token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let booking = tables::by_token(&self.store, id, &crate::tracking::key_hash(token))
            .await?
            .ok_or_else(unknown)?;
        if booking.end_ms + 24 * 3_600_000 < now_ms() {
            return Err(unknown());
        }
        let plan = self.ready(&booking.office, &booking.service).await.ok();
        Ok(View { booking, plan })
    }

    /// A booking by id (operators).
    ///
    /// # Errors
    /// `NotFound`, storage failures.
    pub async fn by_id(&self, actor: &Actor, id: &str) -> NodeResult<View> {
        actor.require(Action::Read)?;
        let booking = tables::get(&self.store, id)
            .await?
            .ok_or_else(|| NodeError::NotFound(format!("appointment {id}")))?;
        let plan = self.ready(&booking.office, &booking.service).await.ok();
        Ok(View { booking, plan })
    }

    /// Moves a booking. Citizens must respect the plan's change notice and
    /// move limit; a new manage token replaces the old one.
    ///
    /// # Errors
    /// `InvalidArgument` for a refused slot, `FailedPrecondition` for the
    /// notice, the limit, a cancelled booking or a taken slot.
    pub async fn move_to(
        &self,
        view: &View,
        start: &str,
        hold: &str,
        operator: bool,
    ) -> NodeResult<View> {
        let b = &view.booking;
        let ready = view.plan.clone().ok_or_else(|| {
            NodeError::FailedPrecondition("this service is no longer bookable here".into())
        })?;
        if b.status != "booked" {
            return Err(NodeError::FailedPrecondition(format!(
                "the appointment is {}, it cannot be moved",
                status_en(&b.status)
            )));
        }
        let now = now_ms();
        let notice = i64::from(ready.plan.change_notice_min) * 60_000;
        if !operator && b.start_ms - now < notice {
            return Err(NodeError::FailedPrecondition(format!(
                "too late to move it: at least {} minutes before the start; call the office",
                ready.plan.change_notice_min
            )));
        }
        if !operator && b.moves >= i64::from(ready.plan.max_moves) {
            return Err(NodeError::FailedPrecondition(format!(
                "moved {} times already, the most this service allows; cancel it and book again",
                b.moves
            )));
        }
        let slot = self.slot(&ready, "start", start)?;
        let start_ms = slot.start.timestamp().as_millisecond();
        if start_ms == b.start_ms {
            return Err(NodeError::invalid(
                "start",
                "is the appointment's current start",
            ));
        }
        let written = self
            .store
            .write(tables::Move {
                id: b.id.clone(),
                sequence: b.sequence,
                start_ms,
                end_ms: slot.end.timestamp().as_millisecond(),
                start_text: slot.start_text(),
                capacity: ready.plan.capacity,
                hold: (!hold.is_empty()).then(|| hold.to_string()),
                manage_sha: crate::tracking::key_hash(&self.manage_token(&b.id, b.moves + 1)),
                reminders_min: self.config.appointments.reminders_min.clone(),
                now_ms: now,
            })
            .await;
        if let Err(e) = written {
            return Err(self.with_next(e, &b.office, &b.service, start_ms).await);
        }
        metrics::counter!("urpnet_appointments_moved_total").increment(1);
        if !b.ticket_id.is_empty()
            && let Err(error) = self
                .desk
                .add_note(
                    &front_door(),
                    &b.ticket_id,
                    false,
                    &format!("Appuntamento spostato a {}.", local_words(start_ms)),
                )
                .await
        {
            tracing::warn!(%error, appointment = %b.id, "cannot note the move on the ticket");
        }
        let booking = tables::get(&self.store, &b.id)
            .await?
            .ok_or_else(|| NodeError::Internal("appointment vanished".into()))?;
        Ok(View {
            booking,
            plan: Some(ready),
        })
    }

    /// Cancels a booking (its seat is free at once); citizens must respect
    /// the change notice.
    ///
    /// # Errors
    /// `FailedPrecondition` when already cancelled or too late.
    pub async fn cancel(&self, view: &View, reason: &str, operator: bool) -> NodeResult<View> {
        let b = &view.booking;
        if reason.chars().count() > 500 {
            return Err(NodeError::invalid("reason", "at most 500 characters"));
        }
        if b.status != "booked" {
            return Err(NodeError::FailedPrecondition(format!(
                "the appointment is already {}",
                status_en(&b.status)
            )));
        }
        if !operator
            && let Some(ready) = &view.plan
            && b.start_ms - now_ms() < i64::from(ready.plan.change_notice_min) * 60_000
        {
            return Err(NodeError::FailedPrecondition(format!(
                "too late to cancel it online: at least {} minutes before the start; call the office",
                ready.plan.change_notice_min
            )));
        }
        self.set_status(
            b,
            "cancelled",
            if reason.is_empty() {
                "Appuntamento annullato."
            } else {
                reason
            },
        )
        .await?;
        metrics::counter!("urpnet_appointments_cancelled_total").increment(1);
        let booking = tables::get(&self.store, &b.id)
            .await?
            .ok_or_else(|| NodeError::Internal("appointment vanished".into()))?;
        Ok(View {
            booking,
            plan: view.plan.clone(),
        })
    }

    async fn set_status(&self, b: &Booking, to: &'static str, reason: &str) -> NodeResult<()> {
        self.store
            .write(tables::SetStatus {
                id: b.id.clone(),
                from: "booked",
                to,
                now_ms: now_ms(),
            })
            .await?;
        if b.ticket_id.is_empty() {
            return Ok(());
        }
        // The ticket follows: resolved with the outcome, closed unless the
        // citizen came.
        let steps: &[v1::Status] = if to == "attended" {
            &[v1::Status::Resolved]
        } else {
            &[v1::Status::Resolved, v1::Status::Closed]
        };
        for status in steps {
            if let Err(error) = self
                .desk
                .change_status(
                    &front_door(),
                    &b.ticket_id,
                    StatusChange {
                        to: *status as i32,
                        reason: reason.chars().take(500).collect(),
                        merged_into: String::new(),
                    },
                )
                .await
            {
                tracing::warn!(%error, appointment = %b.id, "the ticket could not follow the appointment");
                break;
            }
        }
        Ok(())
    }

    /// Marks a booking attended or no-show (operators, once it started).
    ///
    /// # Errors
    /// `InvalidArgument` for another outcome, `FailedPrecondition` before
    /// the start or when not booked.
    pub async fn mark(&self, actor: &Actor, id: &str, outcome: &str) -> NodeResult<View> {
        actor.require(Action::ChangeStatus)?;
        let to = match outcome {
            "attended" => "attended",
            "no_show" => "no_show",
            _ => {
                return Err(NodeError::invalid(
                    "outcome",
                    "must be \"attended\" or \"no_show\"",
                ));
            }
        };
        let view = self.by_id(actor, id).await?;
        let b = &view.booking;
        if b.status != "booked" {
            return Err(NodeError::FailedPrecondition(format!(
                "the appointment is {}",
                status_en(&b.status)
            )));
        }
        if now_ms() < b.start_ms {
            return Err(NodeError::FailedPrecondition(format!(
                "the appointment starts {}: mark it once it has started",
                local_words(b.start_ms)
            )));
        }
        let reason = if to == "attended" {
            "Appuntamento svolto."
        } else {
            "Il cittadino non si è presentato all'appuntamento."
        };
        self.set_status(b, to, reason).await?;
        self.by_id(actor, id).await
    }

    /// The day's agenda (`date` in Italy, empty = today).
    ///
    /// # Errors
    /// `InvalidArgument` for a bad date.
    pub async fn agenda(
        &self,
        actor: &Actor,
        office: &str,
        date: &str,
    ) -> NodeResult<Vec<v1::Appointment>> {
        actor.require(Action::Read)?;
        let tz = urpnet_proto::calendar::rome();
        let day = if date.is_empty() {
            Timestamp::now().to_zoned(tz.clone()).date()
        } else {
            date.parse::<jiff::civil::Date>()
                .map_err(|_| NodeError::invalid("date", "must be YYYY-MM-DD"))?
        };
        let from = day
            .to_zoned(tz.clone())
            .map_err(|e| NodeError::invalid("date", e.to_string()))?;
        let until = from
            .tomorrow()
            .map_err(|e| NodeError::invalid("date", e.to_string()))?;
        let contacts = actor.require(Action::ReadContact).is_ok();
        let plans = self.plans().await?;
        let (from_ms, until_ms) = (
            from.timestamp().as_millisecond(),
            until.timestamp().as_millisecond(),
        );
        let mut docs = tables::documents_between(&self.store, office, from_ms, until_ms).await?;
        let mut out = Vec::new();
        for b in tables::agenda(&self.store, office, from_ms, until_ms).await? {
            let plan = plans
                .by_key
                .get(&(b.office.clone(), b.service.clone()))
                .cloned();
            let docs = docs.remove(&b.id).unwrap_or_default();
            out.push(self.to_proto(&b, plan.as_deref(), contacts, docs));
        }
        Ok(out)
    }

    /// The video room's URL (with its JWT when configured).
    pub fn room_url(&self, b: &Booking) -> String {
        if b.room.is_empty() || self.config.appointments.video_base_url.is_empty() {
            return String::new();
        }
        let base = format!(
            "{}/{}",
            self.config
                .appointments
                .video_base_url
                .trim_end_matches('/'),
            b.room
        );
        match &self.video_secret {
            None => base,
            Some(secret) => {
                let a = &self.config.appointments;
                let claims = serde_json::json!({
                    "aud": "jitsi",
                    "iss": a.video_jwt_app_id,
                    "sub": "*",
                    "room": b.room,
                    "nbf": b.start_ms / 1000 - i64::from(a.room_opens_min) * 60,
                    "exp": b.end_ms / 1000 + 1800,
                    "context": { "user": { "name": format!("{} {}", b.given_name, b.family_name) } },
                });
                let key = jsonwebtoken::EncodingKey::from_secret(secret);
                match jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) {
                    Ok(jwt) => format!("{base}?jwt={jwt}"),
                    Err(error) => {
                        tracing::warn!(%error, "cannot sign the room's JWT");
                        base
                    }
                }
            }
        }
    }

    /// Where the citizen goes for the room now: `Ok(url)` in the window
    /// (`room_opens_min` before the start until the end), otherwise when it
    /// opens or that it is over.
    ///
    /// # Errors
    /// `FailedPrecondition` with the words to show.
    pub fn room_now(&self, b: &Booking, now: i64) -> NodeResult<String> {
        if b.channel != "video" || b.room.is_empty() {
            return Err(NodeError::FailedPrecondition(
                "this is a desk appointment: there is no video room".into(),
            ));
        }
        if b.status != "booked" {
            return Err(NodeError::FailedPrecondition(format!(
                "the appointment is {}",
                status_en(&b.status)
            )));
        }
        let opens = b.start_ms - i64::from(self.config.appointments.room_opens_min) * 60_000;
        if now < opens {
            return Err(NodeError::FailedPrecondition(format!(
                "the room opens {} ({} minutes before the appointment)",
                local_words(opens),
                self.config.appointments.room_opens_min
            )));
        }
        if now > b.end_ms {
            return Err(NodeError::FailedPrecondition(format!(
                "the appointment ended {}",
                local_words(b.end_ms)
            )));
        }
        Ok(self.room_url(b))
    }

    /// Stores a document the citizen sent (photos' metadata stripped).
    ///
    /// # Errors
    /// `InvalidArgument` for a bad name, type or size, `FailedPrecondition`
    /// beyond the count or for a cancelled booking.
    pub async fn add_document(
        &self,
        b: &Booking,
        file_name: &str,
        media_type: &str,
        content: &[u8],
    ) -> NodeResult<v1::AppointmentDocument> {
        let mut v = Violations::new();
        v.length("file_name", file_name, 1, 200);
        v.check(
            !file_name.contains(['/', '\\']) && !file_name.starts_with('.'),
            "file_name",
            "no '/', '\\' or leading '.'",
        );
        v.printable("file_name", file_name);
        let allowed = &self.config.attachments.allowed_media_types;
        v.check(
            allowed.iter().any(|t| t == media_type),
            "media_type",
            format!("must be one of {}", allowed.join(", ")),
        );
        v.check(!content.is_empty(), "content", "is empty");
        v.check(
            content.len() <= self.config.appointments.max_document_bytes,
            "content",
            format!(
                "at most {} bytes (appointments.max_document_bytes)",
                self.config.appointments.max_document_bytes
            ),
        );
        v.into_result()?;
        if b.status != "booked" {
            return Err(NodeError::FailedPrecondition(format!(
                "the appointment is {}",
                status_en(&b.status)
            )));
        }
        let cleaned;
        let content = if media_type.starts_with("image/") {
            cleaned = crate::public::photo::clean(content)
                .map_err(|e| NodeError::invalid("content", e.to_string()))?;
            cleaned.bytes.as_slice()
        } else {
            content
        };
        let sha = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(content))
        };
        crate::attachments::write_content(&self.store, &sha, content).await?;
        let now = now_ms();
        self.store
            .write(tables::AddDocument {
                id: b.id.clone(),
                sha256: sha.clone(),
                file_name: file_name.into(),
                media_type: media_type.into(),
                size: content.len() as i64,
                max: self.config.appointments.max_documents,
                now_ms: now,
            })
            .await?;
        Ok(v1::AppointmentDocument {
            sha256: sha,
            file_name: file_name.into(),
            media_type: media_type.into(),
            size: content.len() as u64,
            received_ms: now as u64,
        })
    }

    /// A booking on the wire; the citizen only when `contacts`.
    pub fn to_proto(
        &self,
        b: &Booking,
        plan: Option<&Ready>,
        contacts: bool,
        documents: Vec<v1::AppointmentDocument>,
    ) -> v1::Appointment {
        v1::Appointment {
            id: b.id.clone(),
            body: self.own().to_string(),
            office: b.office.clone(),
            service: b.service.clone(),
            office_name: plan.map(|p| p.office.name.clone()).unwrap_or_default(),
            service_title: plan.map(|p| p.service.title.clone()).unwrap_or_default(),
            start: local_text(b.start_ms),
            end: local_text(b.end_ms),
            channel: b.channel.clone(),
            status: b.status.clone(),
            sequence: b.sequence as u32,
            moves: b.moves as u32,
            ticket_id: b.ticket_id.clone(),
            reference: String::new(),
            booked_by: b.booked_by.clone(),
            citizen: contacts.then(|| AppointmentCitizen {
                given_name: b.given_name.clone(),
                family_name: b.family_name.clone(),
                address: b.address.clone(),
                email: b.email.clone(),
                phone: b.phone.clone(),
            }),
            notes: if contacts {
                b.notes.clone()
            } else {
                String::new()
            },
            room_url: if b.channel == "video" && contacts {
                self.room_url(b)
            } else {
                String::new()
            },
            documents,
        }
    }

    /// Free slots at another body (peering).
    async fn remote_slots(&self, req: &FreeSlotsRequest) -> NodeResult<FreeSlotsResponse> {
        let mut client = self.peer_client(&req.body).await?;
        let mut request = tonic::Request::new(req.clone());
        request.set_timeout(self.config.appointments.peer_timeout);
        client
            .peer_free_slots(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.peer_error(&req.body, &s, false))
    }

    /// Books at another body (peering): only with the citizen's consent to
    /// pass their data there; a lost answer is safe to retry with the same
    /// key.
    async fn remote_book(&self, booker: &Booker, req: BookRequest) -> NodeResult<BookResponse> {
        let Booker::Operator(_) = booker else {
            return Err(NodeError::PermissionDenied(
                "only this body's operators book at another body".into(),
            ));
        };
        if !req.consent_share {
            return Err(NodeError::invalid(
                "consent_share",
                format!(
                    "the citizen must agree that their data goes to {} (who holds that calendar)",
                    req.body
                ),
            ));
        }
        let body = req.body.clone();
        let mut client = self.peer_client(&body).await?;
        let mut forwarded = req;
        forwarded.body.clear();
        let mut request = tonic::Request::new(forwarded);
        request.set_timeout(self.config.appointments.peer_timeout);
        let answer = client
            .peer_book(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.peer_error(&body, &s, true))?;
        metrics::counter!("urpnet_appointments_booked_remote_total").increment(1);
        Ok(answer)
    }

    async fn peer_client(
        &self,
        body: &str,
    ) -> NodeResult<v1::appointment_peer_client::AppointmentPeerClient<tonic::transport::Channel>>
    {
        let ctx = self.peering.get().ok_or_else(|| {
            NodeError::Unavailable(
                "this node has no peering: it cannot book at other bodies".into(),
            )
        })?;
        let channel = ctx.channel(body).await.map_err(|e| {
            NodeError::Unavailable(format!("{body} cannot be reached: {e}; nothing was booked"))
        })?;
        Ok(v1::appointment_peer_client::AppointmentPeerClient::new(
            channel,
        ))
    }

    /// An error from another body, in words for the operator.
    fn peer_error(&self, body: &str, s: &tonic::Status, booking: bool) -> NodeError {
        use tonic::Code;
        let safe = if booking {
            "; nothing is booked unless a retry with the same idempotency key says so"
        } else {
            ""
        };
        match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                NodeError::Unavailable(format!(
                    "{body} cannot be reached now ({}){safe}",
                    s.message()
                ))
            }
            Code::InvalidArgument => NodeError::invalid("", format!("{body}: {}", s.message())),
            Code::NotFound => NodeError::NotFound(format!("{body}: {}", s.message())),
            Code::AlreadyExists => NodeError::AlreadyExists(format!("{body}: {}", s.message())),
            Code::PermissionDenied | Code::Unauthenticated => {
                NodeError::PermissionDenied(format!("{body} refused: {}", s.message()))
            }
            _ => NodeError::FailedPrecondition(format!("{body}: {}", s.message())),
        }
    }
}

/// A status in English words, for error messages.
pub fn status_en(status: &str) -> String {
    status.replace('_', "-")
}

/// A status in Italian words.
pub fn status_it(status: &str) -> &'static str {
    match status {
        "booked" => "prenotato",
        "cancelled" => "annullato",
        "attended" => "svolto",
        "no_show" => "mancata presentazione",
        _ => "sconosciuto",
    }
}
