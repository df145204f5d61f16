//! The appointment tables: plans, bookings, seats, documents and the
//! citizen's message queue (migration `0011_appointments.sql`).
//!
//! A seat is taken by inserting `(office, service, start, seat)` with a seat
//! number below the plan's capacity; the primary key makes a second holder
//! of the same seat impossible, whatever the code above it does. Every
//! write runs in the single writer, so the check of free seats and the
//! insert see the same state.

use sqlx::Row as _;

use crate::error::{NodeError, NodeResult};
use crate::store::{Commit, Store, Tx, Value, Write};

/// Message kinds.
pub const CONFIRM: &str = "confirm";
/// Sent after a move.
pub const UPDATE: &str = "update";
/// Sent after a cancellation.
pub const CANCEL: &str = "cancel";
/// Sent before the start.
pub const REMINDER: &str = "reminder";

/// One booking as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Booking {
    /// Its id.
    pub id: String,
    /// The office (charter id).
    pub office: String,
    /// The service (charter id).
    pub service: String,
    /// "video" or "desk".
    pub channel: String,
    /// Start, epoch ms.
    pub start_ms: i64,
    /// End, epoch ms.
    pub end_ms: i64,
    /// "booked", "cancelled", "attended" or "no_show".
    pub status: String,
    /// The iCalendar SEQUENCE: +1 on each move and on the cancellation.
    pub sequence: i64,
    /// Moves so far.
    pub moves: i64,
    /// The ticket it opened (empty until opened).
    pub ticket_id: String,
    /// The video room name (empty for desk).
    pub room: String,
    /// "citizen", "operator:<id>" or "peer:<node>".
    pub booked_by: String,
    /// The citizen's given name.
    pub given_name: String,
    /// The citizen's family name.
    pub family_name: String,
    /// The citizen's postal address.
    pub address: String,
    /// The citizen's e-mail.
    pub email: String,
    /// The citizen's phone (optional).
    pub phone: String,
    /// What the citizen needs.
    pub notes: String,
    /// When booked, epoch ms.
    pub created_ms: i64,
}

const COLUMNS: &str = "id, office_id, service_id, channel, start_ms, end_ms, status, sequence, moves, \
     ticket_id, room, booked_by, given_name, family_name, address, email, phone, notes, created_ms";

fn booking(r: &sqlx::any::AnyRow) -> NodeResult<Booking> {
    Ok(Booking {
        id: r.try_get(0)?,
        office: r.try_get(1)?,
        service: r.try_get(2)?,
        channel: r.try_get(3)?,
        start_ms: r.try_get(4)?,
        end_ms: r.try_get(5)?,
        status: r.try_get(6)?,
        sequence: r.try_get(7)?,
        moves: r.try_get(8)?,
        ticket_id: r.try_get(9)?,
        room: r.try_get(10)?,
        booked_by: r.try_get(11)?,
        given_name: r.try_get(12)?,
        family_name: r.try_get(13)?,
        address: r.try_get(14)?,
        email: r.try_get(15)?,
        phone: r.try_get(16)?,
        notes: r.try_get(17)?,
        created_ms: r.try_get(18)?,
    })
}

/// A booking by id.
///
/// # Errors
/// Storage failures.
pub async fn get(store: &Store, id: &str) -> NodeResult<Option<Booking>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM appointments WHERE id = $1"))
        .bind(id)
        .fetch_optional(store.reader())
        .await?;
    row.as_ref().map(booking).transpose()
}

/// A booking by id and manage-token hash (`None` for any mismatch).
///
/// # Errors
/// Storage failures.
pub async fn by_token(store: &Store, id: &str, token_sha: &str) -> NodeResult<Option<Booking>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM appointments WHERE id = $1 AND manage_sha256 = $2"
    ))
    .bind(id)
    .bind(token_sha)
    .fetch_optional(store.reader())
    .await?;
    row.as_ref().map(booking).transpose()
}

/// The bookings linked to a ticket (the citizen's data export).
///
/// # Errors
/// Storage failures.
pub async fn by_ticket(store: &Store, ticket_id: &str) -> NodeResult<Vec<Booking>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM appointments WHERE ticket_id = $1 ORDER BY start_ms"
    ))
    .bind(ticket_id)
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(booking).collect()
}

/// Bookings starting in `[from, until)`, at one office or all, by start.
///
/// # Errors
/// Storage failures.
pub async fn agenda(
    store: &Store,
    office: &str,
    from_ms: i64,
    until_ms: i64,
) -> NodeResult<Vec<Booking>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM appointments WHERE start_ms >= $1 AND start_ms < $2 \
         AND ($3 = '' OR office_id = $3) ORDER BY start_ms, id LIMIT 5000"
    ))
    .bind(from_ms)
    .bind(until_ms)
    .bind(office)
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(booking).collect()
}

/// Bookings not yet linked to a ticket (a crash between the booking and
/// the ticket's creation).
///
/// # Errors
/// Storage failures.
pub async fn unlinked(store: &Store, limit: i64) -> NodeResult<Vec<Booking>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM appointments WHERE ticket_id = '' ORDER BY created_ms LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(booking).collect()
}

/// Seats taken (bookings and live holds) per start in `[from, until)` for
/// one service at one office.
///
/// # Errors
/// Storage failures.
pub async fn taken(
    store: &Store,
    office: &str,
    service: &str,
    from_ms: i64,
    until_ms: i64,
    now_ms: i64,
) -> NodeResult<std::collections::HashMap<i64, u32>> {
    let rows = sqlx::query(
        "SELECT start_ms, COUNT(*) FROM appointment_seats WHERE office_id = $1 AND service_id = $2 \
         AND start_ms >= $3 AND start_ms < $4 AND (hold_expires_ms IS NULL OR hold_expires_ms > $5) \
         GROUP BY start_ms",
    )
    .bind(office)
    .bind(service)
    .bind(from_ms)
    .bind(until_ms)
    .bind(now_ms)
    .fetch_all(store.reader())
    .await?;
    let mut out = std::collections::HashMap::new();
    for r in rows {
        let start: i64 = r.try_get(0)?;
        let n: i64 = r.try_get(1)?;
        out.insert(start, u32::try_from(n).unwrap_or(u32::MAX));
    }
    Ok(out)
}

/// The plans stored, as JSON texts by (office, service).
///
/// # Errors
/// Storage failures.
pub async fn plans(store: &Store) -> NodeResult<Vec<String>> {
    let rows = sqlx::query("SELECT plan FROM appointment_plans ORDER BY office_id, service_id")
        .fetch_all(store.reader())
        .await?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(NodeError::from))
        .collect()
}

/// Documents of a booking.
///
/// # Errors
/// Storage failures.
pub async fn documents(
    store: &Store,
    id: &str,
) -> NodeResult<Vec<urpnet_proto::v1::AppointmentDocument>> {
    let rows = sqlx::query(
        "SELECT sha256, file_name, media_type, size, received_ms, appointment_id FROM appointment_documents \
         WHERE appointment_id = $1 ORDER BY received_ms, sha256",
    )
    .bind(id)
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(|r| document(r).map(|(_, d)| d)).collect()
}

/// The documents of every booking starting in `[from, until)` (at one
/// office or all), by booking: one read for a day's agenda.
///
/// # Errors
/// Storage failures.
pub async fn documents_between(
    store: &Store,
    office: &str,
    from_ms: i64,
    until_ms: i64,
) -> NodeResult<std::collections::HashMap<String, Vec<urpnet_proto::v1::AppointmentDocument>>> {
    let rows = sqlx::query(
        "SELECT d.sha256, d.file_name, d.media_type, d.size, d.received_ms, d.appointment_id \
         FROM appointment_documents d JOIN appointments a ON a.id = d.appointment_id \
         WHERE a.start_ms >= $1 AND a.start_ms < $2 AND ($3 = '' OR a.office_id = $3) \
         ORDER BY d.received_ms, d.sha256",
    )
    .bind(from_ms)
    .bind(until_ms)
    .bind(office)
    .fetch_all(store.reader())
    .await?;
    let mut out: std::collections::HashMap<String, Vec<_>> = std::collections::HashMap::new();
    for r in &rows {
        let (id, d) = document(r)?;
        out.entry(id).or_default().push(d);
    }
    Ok(out)
}

fn document(r: &sqlx::any::AnyRow) -> NodeResult<(String, urpnet_proto::v1::AppointmentDocument)> {
    Ok((
        r.try_get(5)?,
        urpnet_proto::v1::AppointmentDocument {
            sha256: r.try_get(0)?,
            file_name: r.try_get(1)?,
            media_type: r.try_get(2)?,
            size: r.try_get::<i64, _>(3)? as u64,
            received_ms: r.try_get::<i64, _>(4)? as u64,
        },
    ))
}

/// Empties the personal data of the bookings linked to `ticket_id` (the
/// citizen's erasure, or the retention purge, of that ticket's contact).
/// The booking stays, as a seat and a time, with its messages cancelled.
///
/// # Errors
/// Storage failures.
pub async fn erase_in(tx: &mut Tx<'_>, ticket_id: &str) -> NodeResult<()> {
    let erased = tx
        .texts(
            "UPDATE appointments SET given_name = '', family_name = '', address = '', email = '', \
             phone = '', notes = '' WHERE ticket_id = $1 RETURNING id",
            &[&Value::Text(ticket_id)],
        )
        .await?;
    for row in erased {
        tx.texts(
            "UPDATE appointment_messages SET pending_mask = 0, last_error = 'erased' \
             WHERE appointment_id = $1 AND pending_mask <> 0 RETURNING kind",
            &[&Value::Text(&row[0])],
        )
        .await?;
    }
    Ok(())
}

/// Replaces every plan.
#[derive(Debug)]
pub struct SetPlans {
    /// (office, service, JSON).
    pub plans: Vec<(String, String, String)>,
    /// Now, epoch ms.
    pub now_ms: i64,
}

impl Write for SetPlans {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        tx.texts("DELETE FROM appointment_plans RETURNING office_id", &[])
            .await?;
        let rows: Vec<Vec<Value<'_>>> = self
            .plans
            .iter()
            .map(|(o, s, p)| {
                vec![
                    Value::Text(o),
                    Value::Text(s),
                    Value::Text(p),
                    Value::Int(self.now_ms),
                ]
            })
            .collect();
        tx.insert_rows(
            "INSERT INTO appointment_plans (office_id, service_id, plan, updated_ms)",
            "",
            &rows,
        )
        .await?;
        Ok(Ok(()))
    }
}

/// Why a seat could not be taken.
pub fn slot_taken(start: &str) -> NodeError {
    NodeError::FailedPrecondition(format!(
        "slot taken: every seat at {start} is booked; choose another of the free slots"
    ))
}

/// Takes the lowest free seat of a slot (dropping lapsed holds first), or
/// converts `hold` when it holds a seat of this slot. `None` when full.
async fn take_seat(
    tx: &mut Tx<'_>,
    (office, service, start_ms): (&str, &str, i64),
    capacity: u32,
    holder: &str,
    hold: Option<&str>,
    hold_expires_ms: Option<i64>,
    now_ms: i64,
) -> NodeResult<Option<i64>> {
    tx.texts(
        "DELETE FROM appointment_seats WHERE office_id = $1 AND service_id = $2 AND start_ms = $3 \
         AND hold_expires_ms IS NOT NULL AND hold_expires_ms <= $4 RETURNING holder",
        &[
            &Value::Text(office),
            &Value::Text(service),
            &Value::Int(start_ms),
            &Value::Int(now_ms),
        ],
    )
    .await?;
    if let Some(hold) = hold {
        let converted = tx
            .texts(
                "UPDATE appointment_seats SET holder = $1, hold_expires_ms = NULL \
                 WHERE holder = $2 AND office_id = $3 AND service_id = $4 AND start_ms = $5 \
                 RETURNING CAST(seat AS TEXT)",
                &[
                    &Value::Text(holder),
                    &Value::Text(&format!("hold:{hold}")),
                    &Value::Text(office),
                    &Value::Text(service),
                    &Value::Int(start_ms),
                ],
            )
            .await?;
        if let Some(seat) = converted.first().and_then(|r| r[0].parse().ok()) {
            return Ok(Some(seat));
        }
    }
    let used: Vec<i64> = tx
        .texts(
            "SELECT CAST(seat AS TEXT) FROM appointment_seats WHERE office_id = $1 AND service_id = $2 AND start_ms = $3",
            &[
                &Value::Text(office),
                &Value::Text(service),
                &Value::Int(start_ms),
            ],
        )
        .await?
        .iter()
        .filter_map(|r| r[0].parse().ok())
        .collect();
    let Some(seat) = (0..i64::from(capacity)).find(|s| !used.contains(s)) else {
        return Ok(None);
    };
    let expires = hold_expires_ms.map_or(Value::Real(None), Value::Int);
    tx.insert_rows(
        "INSERT INTO appointment_seats (office_id, service_id, start_ms, seat, holder, hold_expires_ms)",
        "",
        &[vec![
            Value::Text(office),
            Value::Text(service),
            Value::Int(start_ms),
            Value::Int(seat),
            Value::Text(holder),
            expires,
        ]],
    )
    .await?;
    Ok(Some(seat))
}

/// Queues the messages of a booking's `sequence`: the `kind` message now,
/// and reminders (`reminders_min` before the start, those still ahead).
async fn queue_messages(
    tx: &mut Tx<'_>,
    id: &str,
    kind: &str,
    sequence: i64,
    start_ms: i64,
    reminders_min: &[u32],
    now_ms: i64,
) -> NodeResult<()> {
    let mut due = vec![(kind, now_ms)];
    if kind != CANCEL {
        for m in reminders_min {
            let at = start_ms - i64::from(*m) * 60_000;
            if at > now_ms {
                due.push((REMINDER, at));
            }
        }
    }
    let rows: Vec<Vec<Value<'_>>> = due
        .iter()
        .map(|(k, at)| {
            vec![
                Value::Text(id),
                Value::Text(k),
                Value::Int(sequence),
                Value::Int(super::messages::ALL),
                Value::Int(*at),
                Value::Int(now_ms),
            ]
        })
        .collect();
    tx.insert_rows(
        "INSERT INTO appointment_messages (appointment_id, kind, sequence, pending_mask, not_before_ms, created_ms)",
        "ON CONFLICT (appointment_id, kind, sequence, not_before_ms) DO NOTHING",
        &rows,
    )
    .await?;
    Ok(())
}

/// Holds a seat for a while.
#[derive(Debug)]
pub struct Hold {
    /// The office (charter id).
    pub office: String,
    /// The service (charter id).
    pub service: String,
    /// Start, epoch ms.
    pub start_ms: i64,
    /// The start, as shown in errors.
    pub start_text: String,
    /// The plan's capacity.
    pub capacity: u32,
    /// The hold's id.
    pub hold_id: String,
    /// When the hold lapses.
    pub expires_ms: i64,
    /// Now, epoch ms.
    pub now_ms: i64,
}

impl Write for Hold {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        let seat = take_seat(
            tx,
            (&self.office, &self.service, self.start_ms),
            self.capacity,
            &format!("hold:{}", self.hold_id),
            None,
            Some(self.expires_ms),
            self.now_ms,
        )
        .await?;
        Ok(match seat {
            Some(_) => Ok(()),
            None => Err(slot_taken(&self.start_text)),
        })
    }
}

/// A new booking.
#[derive(Debug)]
pub struct Book {
    /// The booking.
    pub booking: Booking,
    /// The start, as shown in errors.
    pub start_text: String,
    /// The plan's capacity.
    pub capacity: u32,
    /// A hold to convert, if any.
    pub hold: Option<String>,
    /// sha256 of the manage token.
    pub manage_sha: String,
    /// `<scope>:<key>`.
    pub idempotency_key: String,
    /// Fingerprint of the request.
    pub request_sha: String,
    /// sha256 of the e-mail and the day, for the daily limit.
    pub email_day: String,
    /// The daily limit per e-mail (0 = none).
    pub max_per_day: u32,
    /// Reminders, minutes before the start.
    pub reminders_min: Vec<u32>,
    /// Now, epoch ms.
    pub now_ms: i64,
}

/// What a booking write did.
#[derive(Debug, Clone)]
pub enum Booked {
    /// A new booking.
    New,
    /// The key's earlier booking (its id).
    Replayed(String),
}

impl Write for Book {
    type Output = Booked;

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<Booked>> {
        let earlier = tx
            .texts(
                "SELECT id, request_sha256 FROM appointments WHERE idempotency_key = $1",
                &[&Value::Text(&self.idempotency_key)],
            )
            .await?;
        if let Some(row) = earlier.first() {
            return Ok(if row[1] == self.request_sha {
                Ok(Booked::Replayed(row[0].clone()))
            } else {
                Err(NodeError::AlreadyExists(
                    "idempotency_key: already used for a different booking; use a new key".into(),
                ))
            });
        }
        if self.max_per_day > 0 {
            let n = tx
                .texts(
                    "SELECT CAST(COUNT(*) AS TEXT) FROM appointments WHERE email_day = $1",
                    &[&Value::Text(&self.email_day)],
                )
                .await?;
            let n: u32 = n.first().and_then(|r| r[0].parse().ok()).unwrap_or(0);
            if n >= self.max_per_day {
                return Ok(Err(NodeError::FailedPrecondition(format!(
                    "citizen.email: at most {} bookings per e-mail address per day (appointments.max_per_email_per_day); try again tomorrow or call the office",
                    self.max_per_day
                ))));
            }
        }
        let b = &self.booking;
        let seat = take_seat(
            tx,
            (&b.office, &b.service, b.start_ms),
            self.capacity,
            &b.id,
            self.hold.as_deref(),
            None,
            self.now_ms,
        )
        .await?;
        if seat.is_none() {
            return Ok(Err(slot_taken(&self.start_text)));
        }
        tx.insert_rows(
            "INSERT INTO appointments (id, office_id, service_id, channel, start_ms, end_ms, status, sequence, moves, \
             ticket_id, manage_sha256, idempotency_key, request_sha256, room, booked_by, given_name, family_name, \
             address, email, phone, notes, email_day, created_ms, updated_ms)",
            "",
            &[vec![
                Value::Text(&b.id),
                Value::Text(&b.office),
                Value::Text(&b.service),
                Value::Text(&b.channel),
                Value::Int(b.start_ms),
                Value::Int(b.end_ms),
                Value::Text("booked"),
                Value::Int(0),
                Value::Int(0),
                Value::Text(""),
                Value::Text(&self.manage_sha),
                Value::Text(&self.idempotency_key),
                Value::Text(&self.request_sha),
                Value::Text(&b.room),
                Value::Text(&b.booked_by),
                Value::Text(&b.given_name),
                Value::Text(&b.family_name),
                Value::Text(&b.address),
                Value::Text(&b.email),
                Value::Text(&b.phone),
                Value::Text(&b.notes),
                Value::Text(&self.email_day),
                Value::Int(self.now_ms),
                Value::Int(self.now_ms),
            ]],
        )
        .await?;
        queue_messages(
            tx,
            &b.id,
            CONFIRM,
            0,
            b.start_ms,
            &self.reminders_min,
            self.now_ms,
        )
        .await?;
        Ok(Ok(Booked::New))
    }
}

/// Moves a booking to another slot, replacing its manage token.
#[derive(Debug)]
pub struct Move {
    /// Its id.
    pub id: String,
    /// The sequence the caller saw (a concurrent change wins otherwise).
    pub sequence: i64,
    /// Start, epoch ms.
    pub start_ms: i64,
    /// End, epoch ms.
    pub end_ms: i64,
    /// The start, as shown in errors.
    pub start_text: String,
    /// The plan's capacity.
    pub capacity: u32,
    /// A hold to convert, if any.
    pub hold: Option<String>,
    /// sha256 of the manage token.
    pub manage_sha: String,
    /// Reminders, minutes before the start.
    pub reminders_min: Vec<u32>,
    /// Now, epoch ms.
    pub now_ms: i64,
}

impl Write for Move {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        let current = tx
            .texts(
                "SELECT office_id, service_id, CAST(start_ms AS TEXT) FROM appointments \
                 WHERE id = $1 AND status = 'booked' AND sequence = $2",
                &[&Value::Text(&self.id), &Value::Int(self.sequence)],
            )
            .await?;
        let Some(row) = current.first() else {
            return Ok(Err(NodeError::FailedPrecondition(
                "the appointment changed meanwhile; read it again".into(),
            )));
        };
        let (office, service) = (row[0].clone(), row[1].clone());
        let old_start: i64 = row[2].parse().unwrap_or_default();
        // The new seat first: when the slot is full nothing has changed.
        let seat = take_seat(
            tx,
            (&office, &service, self.start_ms),
            self.capacity,
            &self.id,
            self.hold.as_deref(),
            None,
            self.now_ms,
        )
        .await?;
        if seat.is_none() {
            return Ok(Err(slot_taken(&self.start_text)));
        }
        tx.texts(
            "DELETE FROM appointment_seats WHERE holder = $1 AND start_ms = $2 RETURNING holder",
            &[&Value::Text(&self.id), &Value::Int(old_start)],
        )
        .await?;
        let sequence = self.sequence + 1;
        tx.texts(
            "UPDATE appointments SET start_ms = $1, end_ms = $2, sequence = $3, moves = moves + 1, \
             manage_sha256 = $4, updated_ms = $5 WHERE id = $6 RETURNING id",
            &[
                &Value::Int(self.start_ms),
                &Value::Int(self.end_ms),
                &Value::Int(sequence),
                &Value::Text(&self.manage_sha),
                &Value::Int(self.now_ms),
                &Value::Text(&self.id),
            ],
        )
        .await?;
        queue_messages(
            tx,
            &self.id,
            UPDATE,
            sequence,
            self.start_ms,
            &self.reminders_min,
            self.now_ms,
        )
        .await?;
        Ok(Ok(()))
    }
}

/// Sets a booking's status: `cancelled` frees its seat and queues the
/// cancellation; `attended` and `no_show` keep it.
#[derive(Debug)]
pub struct SetStatus {
    /// Its id.
    pub id: String,
    /// The status it must have.
    pub from: &'static str,
    /// The status it gets.
    pub to: &'static str,
    /// Now, epoch ms.
    pub now_ms: i64,
}

impl Write for SetStatus {
    type Output = i64;

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<i64>> {
        let bump = i64::from(self.to == "cancelled");
        let updated = tx
            .texts(
                "UPDATE appointments SET status = $1, sequence = sequence + $2, updated_ms = $3 \
                 WHERE id = $4 AND status = $5 RETURNING CAST(sequence AS TEXT), CAST(start_ms AS TEXT)",
                &[
                    &Value::Text(self.to),
                    &Value::Int(bump),
                    &Value::Int(self.now_ms),
                    &Value::Text(&self.id),
                    &Value::Text(self.from),
                ],
            )
            .await?;
        let Some(row) = updated.first() else {
            return Ok(Err(NodeError::FailedPrecondition(format!(
                "the appointment is not {} any more",
                self.from
            ))));
        };
        let sequence: i64 = row[0].parse().unwrap_or(0);
        if self.to == "cancelled" {
            tx.texts(
                "DELETE FROM appointment_seats WHERE holder = $1 RETURNING holder",
                &[&Value::Text(&self.id)],
            )
            .await?;
            queue_messages(tx, &self.id, CANCEL, sequence, 0, &[], self.now_ms).await?;
        }
        Ok(Ok(sequence))
    }
}

/// Records the ticket a booking opened.
#[derive(Debug)]
pub struct Link {
    /// Its id.
    pub id: String,
    /// The ticket it opened (empty until opened).
    pub ticket_id: String,
}

impl Write for Link {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        tx.texts(
            "UPDATE appointments SET ticket_id = $1 WHERE id = $2 RETURNING id",
            &[&Value::Text(&self.ticket_id), &Value::Text(&self.id)],
        )
        .await?;
        Ok(Ok(()))
    }
}

/// Records a document (its content already written).
#[derive(Debug)]
pub struct AddDocument {
    /// Its id.
    pub id: String,
    /// Content hash.
    pub sha256: String,
    /// File name.
    pub file_name: String,
    /// Media type.
    pub media_type: String,
    /// Bytes.
    pub size: i64,
    /// Most documents per booking.
    pub max: u32,
    /// Now, epoch ms.
    pub now_ms: i64,
}

impl Write for AddDocument {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>, _: &mut Commit) -> NodeResult<NodeResult<()>> {
        let n = tx
            .texts(
                "SELECT CAST(COUNT(*) AS TEXT) FROM appointment_documents WHERE appointment_id = $1",
                &[&Value::Text(&self.id)],
            )
            .await?;
        let n: u32 = n.first().and_then(|r| r[0].parse().ok()).unwrap_or(0);
        if n >= self.max {
            return Ok(Err(NodeError::FailedPrecondition(format!(
                "at most {} documents per appointment (appointments.max_documents)",
                self.max
            ))));
        }
        tx.insert_rows(
            "INSERT INTO appointment_documents (appointment_id, sha256, file_name, media_type, size, received_ms)",
            "ON CONFLICT (appointment_id, sha256) DO NOTHING",
            &[vec![
                Value::Text(&self.id),
                Value::Text(&self.sha256),
                Value::Text(&self.file_name),
                Value::Text(&self.media_type),
                Value::Int(self.size),
                Value::Int(self.now_ms),
            ]],
        )
        .await?;
        Ok(Ok(()))
    }
}
