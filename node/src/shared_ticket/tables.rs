//! The shared ticket's tables: `tickets` (each ticket's folded state and its
//! query columns), `ticket_events` (the signed log) and `citizen_contacts`
//! (held apart from the log, never replicated but to a consenting owner).
//!
//! Reads take the [`Store`]; the statements other subsystems' write
//! operations need inside the writer's transaction take a [`Tx`]. No other
//! module names these tables in SQL but the peering outbox's read, which
//! joins them (`peering/sql/outbox_batch.sql`).

use std::collections::HashMap;

use prost::Message as _;
use sqlx::Row as _;
use sqlx::any::AnyRow;
use urpnet_proto::territory::Territory;
use urpnet_proto::text;
use urpnet_proto::v1::{CitizenContact, Signed, Status, Ticket, TicketEvent};

use crate::error::{NodeError, NodeResult};
use crate::store::{MAX_IN, Store, Tx, Value, placeholders};

/// An event ready to store: the signed envelope's bytes and its index columns.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Event id.
    pub event_id: String,
    /// Ticket id.
    pub ticket_id: String,
    /// HLC wall time.
    pub hlc_wall: i64,
    /// HLC logical counter.
    pub hlc_logical: i64,
    /// Author node id.
    pub author_node: String,
    /// The encoded `Signed` envelope.
    pub envelope: Vec<u8>,
}

impl StoredEvent {
    /// The index columns of `event`, carried in `envelope`.
    pub fn of(event: &TicketEvent, envelope: &Signed) -> Self {
        let stamp = event.hlc.unwrap_or_default();
        Self {
            event_id: event.event_id.clone(),
            ticket_id: event.ticket_id.clone(),
            hlc_wall: stamp.wall_ms as i64,
            hlc_logical: i64::from(stamp.logical),
            author_node: event.author_node.clone(),
            envelope: envelope.encode_to_vec(),
        }
    }

    /// Its `ticket_events` row, received at `received_ms`, for
    /// [`INSERT_EVENTS`].
    pub fn row(&self, received_ms: i64) -> Vec<Value<'_>> {
        vec![
            Value::Text(&self.event_id),
            Value::Text(&self.ticket_id),
            Value::Int(self.hlc_wall),
            Value::Int(self.hlc_logical),
            Value::Text(&self.author_node),
            Value::Bytes(&self.envelope),
            Value::Int(received_ms),
        ]
    }
}

/// The head of an insert of [`StoredEvent::row`]s, for [`Tx::insert_rows`].
pub const INSERT_EVENTS: &str = "INSERT INTO ticket_events \
     (event_id, ticket_id, hlc_wall, hlc_logical, author_node, envelope, received_ms)";

/// The head of an insert of [`TicketColumns::row`]s, for [`Tx::insert_rows`].
pub const INSERT_TICKETS: &str = "INSERT INTO tickets (id, reference, origin_node, owner_node, category, \
     channel, status, priority, office, istat_code, province_code, region_code, latitude, longitude, \
     search_text, created_ms, updated_ms, state, pending_to)";

/// The head of an insert of citizen contacts (ticket id, name, e-mail,
/// phone, fiscal code, created ms), for [`Tx::insert_rows`].
pub const INSERT_CONTACTS: &str =
    "INSERT INTO citizen_contacts (ticket_id, full_name, email, phone, fiscal_code, created_ms)";

/// The columns of `tickets` derived from a state, besides the state itself.
#[derive(Debug, Clone)]
pub struct TicketColumns {
    province_code: String,
    region_code: String,
    istat_code: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    search_text: String,
    created_ms: i64,
    updated_ms: i64,
    state: Vec<u8>,
}

impl TicketColumns {
    /// Derives the columns (and encodes the state) of `ticket`; callers do it
    /// in their own task, not in the single writer.
    pub fn of(ticket: &Ticket) -> Self {
        let location = ticket.location.clone().unwrap_or_default();
        let comune = Territory::italy().comune(&location.istat_code);
        let ms = |t: &Option<prost_types::Timestamp>| {
            t.as_ref().map(super::fold::millis).unwrap_or(0) as i64
        };
        Self {
            province_code: comune.map(|c| c.province_code.clone()).unwrap_or_default(),
            region_code: comune.map(|c| c.region_code.clone()).unwrap_or_default(),
            istat_code: location.istat_code.clone(),
            latitude: location.coordinates.map(|c| c.latitude),
            longitude: location.coordinates.map(|c| c.longitude),
            search_text: text::fold(&format!(
                "{} {} {} {}",
                ticket.reference, ticket.subject, ticket.description, location.address
            )),
            created_ms: ms(&ticket.created_at),
            updated_ms: ms(&ticket.updated_at),
            state: ticket.encode_to_vec(),
        }
    }

    /// The `tickets` row of `t` (whose columns these are), for
    /// [`INSERT_TICKETS`].
    pub fn row<'a>(&'a self, t: &'a Ticket) -> Vec<Value<'a>> {
        vec![
            Value::Text(&t.id),
            Value::Text(&t.reference),
            Value::Text(&t.origin_node),
            Value::Text(&t.owner_node),
            Value::Text(&t.category),
            Value::Int(i64::from(t.channel)),
            Value::Int(i64::from(t.status)),
            Value::Int(i64::from(t.priority)),
            Value::Text(&t.office),
            Value::Text(&self.istat_code),
            Value::Text(&self.province_code),
            Value::Text(&self.region_code),
            Value::Real(self.latitude),
            Value::Real(self.longitude),
            Value::Text(&self.search_text),
            Value::Int(self.created_ms),
            Value::Int(self.updated_ms),
            Value::Bytes(&self.state),
            Value::Text(pending_to(t)),
        ]
    }
}

/// The node a ticket's pending handoff is offered to (empty: none).
fn pending_to(ticket: &Ticket) -> &str {
    ticket
        .pending_handoff
        .as_ref()
        .map(|p| p.to_node.as_str())
        .unwrap_or_default()
}

/// A contact's `citizen_contacts` row, for [`INSERT_CONTACTS`].
pub fn contact_row<'a>(
    ticket_id: &'a str,
    c: &'a CitizenContact,
    created_ms: i64,
) -> Vec<Value<'a>> {
    vec![
        Value::Text(ticket_id),
        Value::Text(&c.full_name),
        Value::Text(&c.email),
        Value::Text(&c.phone),
        Value::Text(&c.fiscal_code),
        Value::Int(created_ms),
    ]
}

// ---- inside the writer's transaction ----

/// A ticket's current state, read in the transaction.
///
/// # Errors
/// Storage failures, a state that does not decode.
pub async fn state_in(tx: &mut Tx<'_>, ticket_id: &str) -> NodeResult<Option<Ticket>> {
    let state = tx
        .blob(
            "SELECT state FROM tickets WHERE id = $1",
            &[&Value::Text(ticket_id)],
        )
        .await?;
    state
        .map(|s| {
            Ticket::decode(s.as_slice()).map_err(|e| {
                NodeError::Internal(format!("stored ticket state does not decode: {e}"))
            })
        })
        .transpose()
}

/// Inserts a ticket received from a peer (its first events).
///
/// # Errors
/// Storage failures (a clashing reference among them).
pub async fn insert_ticket(tx: &mut Tx<'_>, t: &Ticket) -> NodeResult<()> {
    let columns = TicketColumns::of(t);
    tx.insert_rows(INSERT_TICKETS, "", &[columns.row(t)])
        .await?;
    Ok(())
}

/// Rewrites a ticket's mutable columns and state.
///
/// # Errors
/// Storage failures.
pub async fn update_ticket(tx: &mut Tx<'_>, ticket: &Ticket) -> NodeResult<()> {
    let c = TicketColumns::of(ticket);
    tx.texts(
        "UPDATE tickets SET owner_node = $1, status = $2, priority = $3, office = $4, updated_ms = $5, state = $6, \
         pending_to = $7 WHERE id = $8",
        &[
            &Value::Text(&ticket.owner_node),
            &Value::Int(i64::from(ticket.status)),
            &Value::Int(i64::from(ticket.priority)),
            &Value::Text(&ticket.office),
            &Value::Int(c.updated_ms),
            &Value::Bytes(&c.state),
            &Value::Text(pending_to(ticket)),
            &Value::Text(&ticket.id),
        ],
    )
    .await?;
    Ok(())
}

/// A ticket's event ids in fold order.
///
/// # Errors
/// Storage failures.
pub async fn event_ids_in_order(tx: &mut Tx<'_>, ticket_id: &str) -> NodeResult<Vec<String>> {
    let rows = tx
        .texts(
            "SELECT event_id FROM ticket_events WHERE ticket_id = $1 \
             ORDER BY hlc_wall, hlc_logical, author_node, event_id",
            &[&Value::Text(ticket_id)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect())
}

/// The events held for each of `ticket_ids` (a catch-up batch holds hundreds
/// of tickets: a few statements instead of hundreds).
///
/// # Errors
/// Storage failures, an envelope that does not decode.
pub async fn events_of_tickets_in(
    tx: &mut Tx<'_>,
    ticket_ids: &[&str],
) -> NodeResult<HashMap<String, Vec<TicketEvent>>> {
    let mut held: HashMap<String, Vec<TicketEvent>> = HashMap::new();
    for chunk in ticket_ids.chunks(MAX_IN) {
        let sql = format!(
            "SELECT envelope FROM ticket_events WHERE ticket_id IN ({})",
            placeholders(1, chunk.len())
        );
        let values: Vec<Value<'_>> = chunk.iter().map(|id| Value::Text(id)).collect();
        let refs: Vec<&Value<'_>> = values.iter().collect();
        for bytes in tx.blobs(&sql, &refs).await? {
            let event = decode_event(&bytes)?;
            held.entry(event.ticket_id.clone()).or_default().push(event);
        }
    }
    Ok(held)
}

/// Which of `references` are taken, and by which ticket id.
///
/// # Errors
/// Storage failures.
pub async fn references_taken_in(
    tx: &mut Tx<'_>,
    references: &[&str],
) -> NodeResult<HashMap<String, String>> {
    let mut taken = HashMap::new();
    for chunk in references.chunks(MAX_IN) {
        let sql = format!(
            "SELECT reference, id FROM tickets WHERE reference IN ({})",
            placeholders(1, chunk.len())
        );
        let values: Vec<Value<'_>> = chunk.iter().map(|r| Value::Text(r)).collect();
        let refs: Vec<&Value<'_>> = values.iter().collect();
        for row in tx.texts(&sql, &refs).await? {
            let mut row = row.into_iter();
            if let (Some(reference), Some(id)) = (row.next(), row.next()) {
                taken.insert(reference, id);
            }
        }
    }
    Ok(taken)
}

/// Whether the citizen's contact for a ticket is held.
///
/// # Errors
/// Storage failures.
pub async fn has_contact_in(tx: &mut Tx<'_>, ticket_id: &str) -> NodeResult<bool> {
    let has = tx
        .texts(
            "SELECT ticket_id FROM citizen_contacts WHERE ticket_id = $1",
            &[&Value::Text(ticket_id)],
        )
        .await?;
    Ok(!has.is_empty())
}

/// Stores (or replaces) the citizen's contact for a ticket.
///
/// # Errors
/// Storage failures.
pub async fn put_contact_in(
    tx: &mut Tx<'_>,
    ticket_id: &str,
    contact: &CitizenContact,
    now_ms: i64,
) -> NodeResult<()> {
    tx.texts(
        "INSERT INTO citizen_contacts (ticket_id, full_name, email, phone, fiscal_code, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (ticket_id) DO UPDATE SET full_name = $2, email = $3, \
         phone = $4, fiscal_code = $5",
        &[
            &Value::Text(ticket_id),
            &Value::Text(&contact.full_name),
            &Value::Text(&contact.email),
            &Value::Text(&contact.phone),
            &Value::Text(&contact.fiscal_code),
            &Value::Int(now_ms),
        ],
    )
    .await?;
    Ok(())
}

/// Deletes the citizen's contact for a ticket, if held.
///
/// # Errors
/// Storage failures.
pub async fn delete_contact_in(tx: &mut Tx<'_>, ticket_id: &str) -> NodeResult<()> {
    tx.texts(
        "DELETE FROM citizen_contacts WHERE ticket_id = $1",
        &[&Value::Text(ticket_id)],
    )
    .await?;
    // A booking's personal data goes with its ticket's contact.
    crate::appointments::tables::erase_in(tx, ticket_id).await?;
    Ok(())
}

/// Deletes the contacts of `events`' tickets when one of them is a
/// `ContactErased` (inside the transaction that stores it).
///
/// # Errors
/// Storage failures.
pub async fn apply_erasures_in(tx: &mut Tx<'_>, events: &[&TicketEvent]) -> NodeResult<()> {
    for e in events {
        if matches!(
            e.kind,
            Some(urpnet_proto::v1::ticket_event::Kind::ContactErased(_))
        ) {
            delete_contact_in(tx, &e.ticket_id).await?;
            metrics::counter!("urpnet_contacts_erased_total").increment(1);
        }
    }
    Ok(())
}

// ---- reads ----

/// The tickets whose contact has this e-mail, phone or fiscal code (exact,
/// case-insensitive for e-mail and fiscal code), with the contact.
///
/// # Errors
/// Storage failures.
pub async fn contacts_matching(
    store: &Store,
    email: Option<&str>,
    phone: Option<&str>,
    fiscal_code: Option<&str>,
) -> NodeResult<Vec<(String, CitizenContact)>> {
    let rows = sqlx::query(
        "SELECT ticket_id, full_name, email, phone, fiscal_code FROM citizen_contacts \
         WHERE ($1 <> '' AND lower(email) = lower($1)) OR ($2 <> '' AND phone = $2) \
         OR ($3 <> '' AND upper(fiscal_code) = upper($3)) ORDER BY ticket_id",
    )
    .bind(email.unwrap_or_default())
    .bind(phone.unwrap_or_default())
    .bind(fiscal_code.unwrap_or_default())
    .fetch_all(store.reader())
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                CitizenContact {
                    full_name: r.get(1),
                    email: r.get(2),
                    phone: r.get(3),
                    fiscal_code: r.get(4),
                },
            )
        })
        .collect())
}

/// Tickets of `origin` (this node: only the origin erases), closed (closed,
/// rejected, merged) before `closed_before_ms`, whose contact is still held
/// (for the retention purge), at most `limit`.
///
/// # Errors
/// Storage failures.
pub async fn contacts_past_retention(
    store: &Store,
    origin: &str,
    closed_before_ms: i64,
    limit: u32,
) -> NodeResult<Vec<String>> {
    let rows = sqlx::query(
        "SELECT t.id FROM tickets t JOIN citizen_contacts c ON c.ticket_id = t.id \
         WHERE t.status IN ($1, $2, $3) AND t.updated_ms < $4 AND t.origin_node = $6 \
         ORDER BY t.updated_ms LIMIT $5",
    )
    .bind(Status::Closed as i64)
    .bind(Status::Rejected as i64)
    .bind(Status::Merged as i64)
    .bind(closed_before_ms)
    .bind(i64::from(limit))
    .bind(origin)
    .fetch_all(store.reader())
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Filters of a ticket listing, already validated.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    /// Status numbers to include (empty: all).
    pub statuses: Vec<i32>,
    /// Category code; a code without '.' also matches its sub-categories.
    pub category: Option<String>,
    /// Office code.
    pub office: Option<String>,
    /// Channel number.
    pub channel: Option<i32>,
    /// (column, code) for the territory filter.
    pub territory: Option<(&'static str, String)>,
    /// Folded words that must all appear.
    pub words: Vec<String>,
    /// Minimum `updated_ms`.
    pub updated_since_ms: Option<i64>,
    /// Only ids lower than this (keyset pagination, newest first).
    pub before_id: Option<String>,
    /// Created at or after this time (ms).
    pub created_from_ms: Option<i64>,
    /// Created at or before this time (ms).
    pub created_to_ms: Option<i64>,
    /// Only tickets whose origin is this node.
    pub origin: Option<String>,
    /// Rows to skip (page-number pagination of the Open311 `page` extension).
    pub offset: u32,
    /// Page size.
    pub limit: u32,
}

/// One ticket's state by id.
///
/// # Errors
/// Storage failures.
pub async fn ticket(store: &Store, id: &str) -> NodeResult<Option<Ticket>> {
    let row = sqlx::query("SELECT state FROM tickets WHERE id = $1")
        .bind(id)
        .fetch_optional(store.reader())
        .await?;
    row.map(|r| decode_state(&r)).transpose()
}

/// One ticket's state by citizen reference.
///
/// # Errors
/// Storage failures.
pub async fn ticket_by_reference(store: &Store, reference: &str) -> NodeResult<Option<Ticket>> {
    let row = sqlx::query("SELECT state FROM tickets WHERE reference = $1")
        .bind(reference)
        .fetch_optional(store.reader())
        .await?;
    row.map(|r| decode_state(&r)).transpose()
}

/// The citizen's contact for a ticket, if this node holds it.
///
/// # Errors
/// Storage failures.
pub async fn contact(store: &Store, ticket_id: &str) -> NodeResult<Option<CitizenContact>> {
    let row = sqlx::query(
        "SELECT full_name, email, phone, fiscal_code FROM citizen_contacts WHERE ticket_id = $1",
    )
    .bind(ticket_id)
    .fetch_optional(store.reader())
    .await?;
    Ok(row.map(|r| CitizenContact {
        full_name: r.get(0),
        email: r.get(1),
        phone: r.get(2),
        fiscal_code: r.get(3),
    }))
}

/// A ticket's events as stored envelopes, in HLC order.
///
/// # Errors
/// Storage failures or an envelope that does not decode.
pub async fn events(store: &Store, ticket_id: &str) -> NodeResult<Vec<(Signed, TicketEvent)>> {
    let rows = sqlx::query(
        "SELECT envelope FROM ticket_events WHERE ticket_id = $1 \
         ORDER BY hlc_wall, hlc_logical, author_node, event_id",
    )
    .bind(ticket_id)
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(decode_envelope).collect()
}

/// Tickets matching a filter, newest first.
///
/// # Errors
/// Storage failures.
pub async fn list(store: &Store, filter: &TicketFilter) -> NodeResult<Vec<Ticket>> {
    let mut sql = String::from("SELECT state FROM tickets WHERE 1 = 1");
    let mut args: Vec<Arg> = Vec::new();
    let param = |args: &mut Vec<Arg>, a: Arg| {
        args.push(a);
        format!("${}", args.len())
    };
    if !filter.statuses.is_empty() {
        let list: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| param(&mut args, Arg::Int(i64::from(*s))))
            .collect();
        sql += &format!(" AND status IN ({})", list.join(", "));
    }
    if let Some(category) = &filter.category {
        let exact = param(&mut args, Arg::Text(category.clone()));
        if category.contains('.') {
            sql += &format!(" AND category = {exact}");
        } else {
            // Sub-categories are `<code>.<sub>`: the range ['<code>.', '<code>/').
            let lo = param(&mut args, Arg::Text(format!("{category}.")));
            let hi = param(&mut args, Arg::Text(format!("{category}/")));
            sql += &format!(" AND (category = {exact} OR (category >= {lo} AND category < {hi}))");
        }
    }
    if let Some(office) = &filter.office {
        sql += &format!(
            " AND office = {}",
            param(&mut args, Arg::Text(office.clone()))
        );
    }
    if let Some(channel) = filter.channel {
        sql += &format!(
            " AND channel = {}",
            param(&mut args, Arg::Int(i64::from(channel)))
        );
    }
    if let Some((column, code)) = &filter.territory {
        sql += &format!(
            " AND {column} = {}",
            param(&mut args, Arg::Text(code.clone()))
        );
    }
    for word in &filter.words {
        sql += &format!(
            " AND search_text LIKE {}",
            param(&mut args, Arg::Text(format!("%{word}%")))
        );
    }
    if let Some(since) = filter.updated_since_ms {
        sql += &format!(" AND updated_ms >= {}", param(&mut args, Arg::Int(since)));
    }
    if let Some(before) = &filter.before_id {
        sql += &format!(" AND id < {}", param(&mut args, Arg::Text(before.clone())));
    }
    if let Some(from) = filter.created_from_ms {
        sql += &format!(" AND created_ms >= {}", param(&mut args, Arg::Int(from)));
    }
    if let Some(to) = filter.created_to_ms {
        sql += &format!(" AND created_ms <= {}", param(&mut args, Arg::Int(to)));
    }
    if let Some(origin) = &filter.origin {
        sql += &format!(
            " AND origin_node = {}",
            param(&mut args, Arg::Text(origin.clone()))
        );
    }
    sql += &format!(
        " ORDER BY id DESC LIMIT {}",
        param(&mut args, Arg::Int(i64::from(filter.limit)))
    );
    if filter.offset > 0 {
        sql += &format!(
            " OFFSET {}",
            param(&mut args, Arg::Int(i64::from(filter.offset)))
        );
    }
    let rows = bind_args(sqlx::query(&sql), args)
        .fetch_all(store.reader())
        .await?;
    rows.iter().map(decode_state).collect()
}

/// Tickets created since `since_ms` whose status is one of `statuses`,
/// oldest first (to rebuild the duplicates index at start-up).
///
/// # Errors
/// Storage failures.
pub async fn created_since(
    store: &Store,
    since_ms: i64,
    statuses: &[i32],
) -> NodeResult<Vec<Ticket>> {
    let statuses: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
    let sql = format!(
        "SELECT state FROM tickets WHERE created_ms >= $1 AND status IN ({}) ORDER BY id",
        statuses.join(", ")
    );
    let rows = sqlx::query(&sql)
        .bind(since_ms)
        .fetch_all(store.reader())
        .await?;
    rows.iter().map(decode_state).collect()
}

/// Tickets owned by `owner` in a terminal status (closed, rejected,
/// merged), updated at or after `since_ms`, after the key `after`
/// (updated ms, id), oldest first.
///
/// # Errors
/// Storage failures.
pub async fn closed_since(
    store: &Store,
    owner: &str,
    after: (i64, &str),
    limit: usize,
) -> NodeResult<Vec<(i64, Ticket)>> {
    let rows = sqlx::query(
        "SELECT updated_ms, state FROM tickets WHERE owner_node = $1 AND status IN ($2, $3, $4) \
         AND (updated_ms > $5 OR (updated_ms = $5 AND id > $6)) ORDER BY updated_ms, id LIMIT $7",
    )
    .bind(owner.to_owned())
    .bind(Status::Closed as i64)
    .bind(Status::Rejected as i64)
    .bind(Status::Merged as i64)
    .bind(after.0)
    .bind(after.1.to_owned())
    .bind(limit as i64)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|r| {
            let state: Vec<u8> = r.try_get(1)?;
            let ticket = Ticket::decode(state.as_slice())
                .map_err(|e| NodeError::Internal(format!("stored ticket: {e}")))?;
            Ok((r.try_get(0)?, ticket))
        })
        .collect()
}

/// The highest reference sequence number minted for `prefix` (e.g.
/// `c_a662-2026-`), so the counter resumes after a restart.
///
/// # Errors
/// Storage failures.
pub async fn max_reference_seq(store: &Store, prefix: &str) -> NodeResult<u64> {
    // The highest *number*: a longer run of digits is a larger number
    // (the sequence is zero-padded to six digits and may grow past it),
    // so `c_a662-2026-1000000` follows `…-999999`.
    let row = sqlx::query(
        "SELECT reference FROM tickets WHERE reference >= $1 AND reference < $2 \
         ORDER BY length(reference) DESC, reference DESC LIMIT 1",
    )
    .bind(format!("{prefix}0"))
    .bind(format!("{prefix}:"))
    .fetch_optional(store.reader())
    .await?;
    let max: Option<String> = row.map(|r| r.try_get(0)).transpose()?;
    Ok(max
        .and_then(|r| r.strip_prefix(prefix).and_then(|s| s.parse().ok()))
        .unwrap_or(0))
}

/// The latest HLC stamp among stored events, to restart the clock after it.
///
/// # Errors
/// Storage failures.
pub async fn max_hlc(store: &Store) -> NodeResult<Option<(i64, i64)>> {
    let row = sqlx::query(
        "SELECT hlc_wall, hlc_logical FROM ticket_events ORDER BY hlc_wall DESC, hlc_logical DESC LIMIT 1",
    )
    .fetch_optional(store.reader())
    .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Ids of every ticket, for verification.
///
/// # Errors
/// Storage failures.
pub async fn ticket_ids(store: &Store) -> NodeResult<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM tickets ORDER BY id")
        .fetch_all(store.reader())
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Tickets this node owns that are open, and those of them still waiting to
/// be taken in charge (status new): the load it reports.
///
/// # Errors
/// Storage failures.
pub async fn load_counts(store: &Store, owner: &str) -> NodeResult<(u32, u32)> {
    let row = sqlx::query(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = $2 THEN 1 ELSE 0 END), 0) \
         FROM tickets WHERE owner_node = $1 AND status IN ($2, $3, $4, $5)",
    )
    .bind(owner)
    .bind(Status::New as i32 as i64)
    .bind(Status::Assigned as i32 as i64)
    .bind(Status::InProgress as i32 as i64)
    .bind(Status::WaitingCitizen as i32 as i64)
    .fetch_one(store.reader())
    .await?;
    let open: i64 = row.try_get(0)?;
    let waiting: i64 = row.try_get(1)?;
    Ok((open as u32, waiting as u32))
}

/// Tickets with a handoff pending to `node` (`incoming`) or offered by
/// `node` (otherwise), oldest change first, after the `(updated_ms, id)`
/// position `after`, at most `limit`; with the position of the last one
/// when more follow.
///
/// # Errors
/// Storage failures.
pub async fn offers_page(
    store: &Store,
    node: &str,
    incoming: bool,
    after: Option<(i64, String)>,
    limit: u32,
) -> NodeResult<(Vec<Ticket>, Option<(i64, String)>)> {
    // `pending_to <> ''` in both, so SQLite may use the partial indexes
    // (migration 0012).
    let which = if incoming {
        "pending_to = $1 AND pending_to <> ''"
    } else {
        "pending_to <> '' AND owner_node = $1"
    };
    let (after_ms, after_id) = after.unwrap_or((i64::MIN, String::new()));
    let rows = sqlx::query(&format!(
        "SELECT state, updated_ms, id FROM tickets WHERE {which} \
         AND (updated_ms > $2 OR (updated_ms = $2 AND id > $3)) \
         ORDER BY updated_ms, id LIMIT $4"
    ))
    .bind(node)
    .bind(after_ms)
    .bind(after_id)
    .bind(i64::from(limit) + 1)
    .fetch_all(store.reader())
    .await?;
    let more = rows.len() > limit as usize;
    let rows = &rows[..rows.len().min(limit as usize)];
    let next = match rows.last() {
        Some(last) if more => Some((last.try_get(1)?, last.try_get(2)?)),
        _ => None,
    };
    Ok((
        rows.iter().map(decode_state).collect::<NodeResult<_>>()?,
        next,
    ))
}

/// The events named by `(ticket, author, event id)`, in a few statements
/// (not one per event), keyed by ticket id; those not held are absent.
///
/// # Errors
/// Storage failures or an envelope that does not decode.
pub async fn events_named(
    store: &Store,
    wanted: &[(String, String, String)],
) -> NodeResult<HashMap<String, TicketEvent>> {
    let mut out = HashMap::new();
    for chunk in wanted.chunks(MAX_IN) {
        let sql = format!(
            "SELECT envelope, ticket_id, author_node, event_id FROM ticket_events WHERE event_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for (_, _, id) in chunk {
            query = query.bind(id);
        }
        for row in query.fetch_all(store.reader()).await? {
            let key: (String, String, String) = (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            // An id is its author's: the same id on another ticket or by
            // another author is another event.
            if chunk.contains(&key) {
                out.insert(key.0, decode_envelope(&row)?.1);
            }
        }
    }
    Ok(out)
}

/// The event keys (`<author>/<event id>`, since an event is its author's
/// id) held for each of `ticket_ids`, sorted (tickets with no events are
/// absent).
///
/// # Errors
/// Storage failures.
pub async fn event_keys(
    store: &Store,
    ticket_ids: &[String],
) -> NodeResult<std::collections::BTreeMap<String, Vec<String>>> {
    let mut out = std::collections::BTreeMap::<String, Vec<String>>::new();
    for chunk in ticket_ids.chunks(MAX_IN) {
        let sql = format!(
            "SELECT ticket_id, author_node, event_id FROM ticket_events WHERE ticket_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id);
        }
        for r in query.fetch_all(store.reader()).await? {
            let (author, id): (String, String) = (r.try_get(1)?, r.try_get(2)?);
            out.entry(r.try_get(0)?)
                .or_default()
                .push(event_key(&author, &id));
        }
    }
    for keys in out.values_mut() {
        keys.sort_unstable();
    }
    Ok(out)
}

/// Stored envelopes of one ticket (all, or those with the given
/// `<author>/<event id>` keys).
///
/// # Errors
/// Storage failures.
pub async fn envelopes(store: &Store, ticket_id: &str, keys: &[String]) -> NodeResult<Vec<Signed>> {
    let rows = sqlx::query(
        "SELECT envelope, author_node, event_id FROM ticket_events WHERE ticket_id = $1 \
         ORDER BY hlc_wall, hlc_logical, author_node, event_id",
    )
    .bind(ticket_id)
    .fetch_all(store.reader())
    .await?;
    let wanted: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for r in &rows {
        let (author, id): (String, String) = (r.try_get(1)?, r.try_get(2)?);
        if wanted.is_empty() || wanted.contains(event_key(&author, &id).as_str()) {
            out.push(decode_envelope(r)?.0);
        }
    }
    Ok(out)
}

/// The latest public note of each of `ticket_ids` that has one, in a few
/// statements (not one per ticket).
///
/// # Errors
/// Storage failures or an envelope that does not decode.
pub async fn latest_public_notes(
    store: &Store,
    ticket_ids: &[String],
) -> NodeResult<HashMap<String, String>> {
    let mut latest = HashMap::new();
    for chunk in ticket_ids.chunks(MAX_IN) {
        let sql = format!(
            "SELECT envelope FROM ticket_events WHERE ticket_id IN ({}) \
             ORDER BY ticket_id, hlc_wall, hlc_logical, author_node, event_id",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id);
        }
        for row in query.fetch_all(store.reader()).await? {
            let (_, event) = decode_envelope(&row)?;
            if let Some(urpnet_proto::v1::ticket_event::Kind::Note(n)) = event.kind
                && n.public
            {
                latest.insert(event.ticket_id, n.text);
            }
        }
    }
    Ok(latest)
}

/// An event's key across nodes: `<author>/<event id>` (an id is unique only
/// within its author's events).
pub fn event_key(author: &str, event_id: &str) -> String {
    format!("{author}/{event_id}")
}

enum Arg {
    Int(i64),
    Text(String),
}

fn bind_args<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
        };
    }
    query
}

fn decode_state(row: &AnyRow) -> NodeResult<Ticket> {
    let bytes: Vec<u8> = row.try_get(0)?;
    Ticket::decode(bytes.as_slice())
        .map_err(|e| NodeError::Internal(format!("stored ticket state does not decode: {e}")))
}

fn decode_envelope(row: &AnyRow) -> NodeResult<(Signed, TicketEvent)> {
    let bytes: Vec<u8> = row.try_get(0)?;
    let envelope = Signed::decode(bytes.as_slice())
        .map_err(|e| NodeError::Internal(format!("stored envelope does not decode: {e}")))?;
    let event = TicketEvent::decode(envelope.payload.as_slice())
        .map_err(|e| NodeError::Internal(format!("stored event does not decode: {e}")))?;
    Ok((envelope, event))
}

/// The event inside a stored envelope.
///
/// # Errors
/// `Internal` when it does not decode.
pub fn decode_event(bytes: &[u8]) -> NodeResult<TicketEvent> {
    let envelope = Signed::decode(bytes)
        .map_err(|e| NodeError::Internal(format!("stored envelope does not decode: {e}")))?;
    TicketEvent::decode(envelope.payload.as_slice())
        .map_err(|e| NodeError::Internal(format!("stored event does not decode: {e}")))
}
