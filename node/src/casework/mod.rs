//! The node's ticket desk: the domain operations behind the Desk API.
//!
//! Every change is an event: made here, stamped by the node's hybrid logical
//! clock, signed with the node's key, then stored by the writer together with
//! the new materialised state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use urpnet_proto::hlc::{self, HybridClock};
use urpnet_proto::signing::{self, NodeSigner};
use urpnet_proto::territory::{Level, Territory};
use urpnet_proto::text;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{
    Assigned, Attachment, CitizenContact, CreateTicketRequest, Created, DuplicateCandidate,
    ListTicketsRequest, Merged, Note, PayloadKind, Priority, Status, StatusChanged, Ticket,
    TicketEvent,
};
use urpnet_proto::validate::Violations;

mod handoff;
pub mod tables;

pub use handoff::{OfferLists, OfferView};

use crate::auth::{Action, Actor};
use crate::config::NodeConfig;
use crate::duplicates::RecentTickets;
use crate::error::{NodeError, NodeResult};
use crate::peering::PeeringContext;
use crate::registry_link::Federation;
use crate::shared_ticket::fold::{millis, timestamp};
use crate::shared_ticket::tables::{StoredEvent, TicketFilter};
use crate::shared_ticket::{Effect, fold, lifecycle, names};
use crate::store::Store;
use crate::taxonomy::{Taxonomy, TaxonomyHandle};
use crate::validate;
use tables::{CreateOutcome, Mutation, NewTicket};
use urpnet_proto::v1::registry_client::RegistryClient;

/// What a create returned.
#[derive(Debug, Clone)]
pub struct Creation {
    /// The ticket.
    pub ticket: Ticket,
    /// Whether the request id had been seen before.
    pub replayed: bool,
    /// Possible duplicates.
    pub possible_duplicates: Vec<DuplicateCandidate>,
    /// The key the citizen follows the ticket with (the same for a replay).
    pub tracking_key: String,
}

/// One entry of a ticket's history.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    /// The event.
    pub event: TicketEvent,
    /// What it did.
    pub effect: Effect,
    /// Whether its signature verified.
    pub signature_valid: bool,
}

/// A status change request.
#[derive(Debug, Clone)]
pub struct StatusChange {
    /// Target status.
    pub to: i32,
    /// Why.
    pub reason: String,
    /// For MERGED: the ticket kept.
    pub merged_into: String,
}

/// The domain operations of one node's desk.
#[derive(Debug)]
pub struct TicketDesk {
    config: NodeConfig,
    store: Store,
    signer: NodeSigner,
    clock: Arc<HybridClock>,
    taxonomy: Arc<TaxonomyHandle>,
    /// (year, last sequence number minted) for citizen references.
    reference_seq: Mutex<(i32, u64)>,
    /// Recent open tickets, for duplicate suggestions.
    recent: RecentTickets,
    /// The member list (empty when the node runs alone).
    federation: Arc<Federation>,
    /// Peering, once the daemon has started it.
    peering: std::sync::OnceLock<Arc<PeeringContext>>,
    /// The registry client for Route and Overflow, built on first use.
    registry: tokio::sync::Mutex<Option<RegistryClient<tonic::transport::Channel>>>,
    /// Makes the citizens' tracking keys.
    tracking: crate::tracking::TrackingKeys,
}

impl TicketDesk {
    /// A desk over an open store. Restores the clock past every stored event
    /// and the reference counter past every stored reference.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn new(
        config: NodeConfig,
        store: Store,
        signer: NodeSigner,
        taxonomy: Arc<TaxonomyHandle>,
        federation: Arc<Federation>,
    ) -> NodeResult<Self> {
        let config_data_dir = config.node.data_dir.clone();
        let clock = Arc::new(HybridClock::new(Duration::from_millis(
            config.clock.max_offset_ms,
        )));
        if let Some((wall, logical)) = crate::shared_ticket::tables::max_hlc(&store).await? {
            clock.restore(&urpnet_proto::v1::Hlc {
                wall_ms: wall as u64,
                logical: logical as u32,
            });
        }
        let year = year_of(hlc::system_time_ms());
        let prefix = format!("{}-{year}-", config.node.id);
        let seq = crate::shared_ticket::tables::max_reference_seq(&store, &prefix).await?;
        let window_ms = u64::from(config.tickets.duplicate_window_days) * 24 * 3600 * 1000;
        let recent = RecentTickets::new(window_ms, config.tickets.duplicate_radius_m);
        let open = [
            Status::New,
            Status::Assigned,
            Status::InProgress,
            Status::WaitingCitizen,
        ]
        .map(|s| s as i32);
        let since = hlc::system_time_ms().saturating_sub(window_ms) as i64;
        for ticket in crate::shared_ticket::tables::created_since(&store, since, &open).await? {
            recent.record(&ticket);
        }
        Ok(Self {
            config,
            store,
            signer,
            clock,
            taxonomy,
            reference_seq: Mutex::new((year, seq)),
            recent,
            federation,
            peering: std::sync::OnceLock::new(),
            registry: tokio::sync::Mutex::new(None),
            tracking: crate::tracking::TrackingKeys::load(&config_data_dir)?,
        })
    }

    /// The node's hybrid logical clock (peering moves it past received
    /// stamps, so this node's next events sort after them).
    pub fn clock(&self) -> Arc<HybridClock> {
        self.clock.clone()
    }

    /// Connects the desk to the running peering (for `ListPeers`).
    pub fn attach_peering(&self, ctx: Arc<PeeringContext>) {
        let _ = self.peering.set(ctx);
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The taxonomy in use.
    pub fn taxonomy(&self) -> Taxonomy {
        self.taxonomy.current()
    }

    async fn next_reference(&self, now_ms: u64) -> NodeResult<String> {
        let year = year_of(now_ms);
        let prefix = format!("{}-{year}-", self.config.node.id);
        let stale = self.reference_seq.lock().expect("reference lock").0 != year;
        let restored = if stale {
            Some(crate::shared_ticket::tables::max_reference_seq(&self.store, &prefix).await?)
        } else {
            None
        };
        let mut seq = self.reference_seq.lock().expect("reference lock");
        if seq.0 != year {
            *seq = (year, restored.unwrap_or(0));
        }
        seq.1 += 1;
        Ok(format!("{prefix}{:06}", seq.1))
    }

    /// A new event of this node's on ticket `t`, next in this node's chain.
    /// Writes wait while a restored node catches up (decision 134): a new
    /// event could reuse a place in its author chain, a new ticket a
    /// reference, that its peers already hold.
    fn not_catching_up(&self) -> NodeResult<()> {
        if self.federation.catching_up() {
            return Err(NodeError::Unavailable(
                "this node was restored from a backup and is catching up with its peers; writes resume by themselves once every peer has been heard (docs/operations.md, \"Backup and restore\")".into(),
            ));
        }
        Ok(())
    }

    fn new_event(
        &self,
        t: &Ticket,
        actor: &Actor,
        owner_epoch: u64,
        kind: Kind,
    ) -> (StoredEvent, TicketEvent) {
        let (author_seq, prev_hash) =
            crate::shared_ticket::fold::next_in_chain(t, self.config.node.id.as_str());
        self.sign_event(&t.id, actor, owner_epoch, (author_seq, prev_hash), kind)
    }

    fn sign_event(
        &self,
        ticket_id: &str,
        actor: &Actor,
        owner_epoch: u64,
        (author_seq, prev_hash): (u64, Vec<u8>),
        kind: Kind,
    ) -> (StoredEvent, TicketEvent) {
        let stamp = self.clock.now();
        let event = TicketEvent {
            event_id: ulid::Ulid::new().to_string(),
            ticket_id: ticket_id.to_string(),
            hlc: Some(stamp),
            author_node: self.config.node.id.to_string(),
            actor: actor.id.clone(),
            owner_epoch,
            author_seq,
            prev_hash,
            kind: Some(kind),
        };
        let envelope = self
            .signer
            .sign(PayloadKind::TicketEvent, event.encode_to_vec());
        (StoredEvent::of(&event, &envelope), event)
    }

    /// Opens a ticket (idempotent on the actor's request id).
    ///
    /// # Errors
    /// `InvalidArgument` naming each rule broken, `AlreadyExists` for a
    /// request id reused with other content, storage failures.
    #[tracing::instrument(skip_all, fields(actor = %actor.id, request_id = %req.request_id))]
    pub async fn create(&self, actor: &Actor, req: CreateTicketRequest) -> NodeResult<Creation> {
        actor.require(Action::Create)?;
        self.not_catching_up()?;
        let now_ms = hlc::system_time_ms();
        validate::create_request(
            &req,
            &self.taxonomy.current(),
            &self.config.attachments,
            now_ms,
        )?;
        let request_key = format!("{}:{}", actor.id, req.request_id);
        let fingerprint = hex::encode(Sha256::digest(req.encode_to_vec()));
        // A retried request id is recognised by the writer, inside the
        // transaction, so concurrent retries of one id also make one ticket.

        let mut attachments = Vec::with_capacity(req.attachments.len());
        for upload in &req.attachments {
            let sha256 = hex::encode(Sha256::digest(&upload.content));
            crate::attachments::write_content(&self.store, &sha256, &upload.content).await?;
            attachments.push(Attachment {
                sha256,
                file_name: upload.file_name.clone(),
                media_type: upload.media_type.clone(),
                size_bytes: upload.content.len() as u64,
            });
        }
        let due_at = req.due_at.or_else(|| {
            let days = u64::from(self.config.tickets.default_due_days);
            (days > 0).then(|| timestamp(now_ms + days * 24 * 3600 * 1000))
        });
        let priority = if req.priority == 0 {
            Priority::Normal as i32
        } else {
            req.priority
        };
        let ticket_id = urpnet_proto::ids::TicketId::mint(&self.config.node.id).to_string();
        let created = Created {
            reference: self.next_reference(now_ms).await?,
            category: req.category.clone(),
            channel: req.channel,
            subject: req.subject.trim().to_string(),
            description: req.description.clone(),
            location: req.location.clone(),
            attachments: attachments.clone(),
            priority,
            consent: req.consent,
            due_at,
            answers: req.answers.clone(),
        };
        let (stored, event) = self.sign_event(
            &ticket_id,
            actor,
            0,
            (1, Vec::new()),
            Kind::Created(created),
        );
        let mut state = None;
        crate::shared_ticket::apply(&mut state, &event);
        let ticket = state.expect("a Created event creates the ticket");
        let contact = req
            .citizen
            .clone()
            .filter(|c| *c != CitizenContact::default());
        let tracking_key = self.tracking.key_for(&request_key);
        let outcome = crate::casework::tables::create(
            &self.store,
            NewTicket::new(
                ticket,
                stored,
                contact,
                request_key,
                fingerprint,
                attachments,
            )
            .with_tracking_hash(crate::tracking::key_hash(&tracking_key)),
        )
        .await;
        let outcome = outcome?;
        let ticket = match outcome {
            CreateOutcome::Created(ticket) => *ticket,
            CreateOutcome::Replayed(id) => {
                let mut replay = self.replay(id, true).await?;
                replay.tracking_key = tracking_key;
                return Ok(replay);
            }
            CreateOutcome::Conflict => return self.replay(String::new(), false).await,
        };
        metrics::counter!("urpnet_tickets_created_total", "channel" => names::channel_name(ticket.channel())).increment(1);
        tracing::info!(ticket = %ticket.id, reference = %ticket.reference, category = %ticket.category, "ticket created");
        let possible_duplicates = self.recent.suggest(&ticket);
        self.recent.record(&ticket);
        Ok(Creation {
            ticket,
            replayed: false,
            possible_duplicates,
            tracking_key,
        })
    }

    async fn replay(&self, ticket_id: String, same_request: bool) -> NodeResult<Creation> {
        if !same_request {
            return Err(NodeError::AlreadyExists(
                "request_id: was already used for a different request; use a new request_id".into(),
            ));
        }
        let ticket = crate::shared_ticket::tables::ticket(&self.store, &ticket_id)
            .await?
            .ok_or_else(|| NodeError::NotFound(format!("ticket {ticket_id}")))?;
        Ok(Creation {
            ticket,
            replayed: true,
            possible_duplicates: Vec::new(),
            tracking_key: String::new(),
        })
    }

    /// One ticket by id or reference, with the contact when the actor may see it.
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`, storage failures.
    pub async fn get(
        &self,
        actor: &Actor,
        ticket_id: &str,
        reference: &str,
    ) -> NodeResult<(Ticket, Option<CitizenContact>)> {
        actor.require(Action::Read)?;
        let ticket = match (ticket_id.is_empty(), reference.is_empty()) {
            (false, true) => {
                let mut v = Violations::new();
                validate::ticket_id(&mut v, "ticket_id", ticket_id);
                v.into_result()?;
                crate::shared_ticket::tables::ticket(&self.store, ticket_id).await?
            }
            (true, false) => {
                let mut v = Violations::new();
                v.length("reference", reference, 1, 64);
                v.into_result()?;
                crate::shared_ticket::tables::ticket_by_reference(&self.store, reference).await?
            }
            _ => {
                return Err(NodeError::invalid(
                    "ticket_id",
                    "exactly one of ticket_id and reference must be set",
                ));
            }
        };
        let ticket =
            ticket.ok_or_else(|| NodeError::NotFound(format!("ticket {ticket_id}{reference}")))?;
        let contact = if actor.require(Action::ReadContact).is_ok() {
            crate::shared_ticket::tables::contact(&self.store, &ticket.id).await?
        } else {
            None
        };
        Ok((ticket, contact))
    }

    /// A page of tickets matching the request's filters.
    ///
    /// # Errors
    /// `InvalidArgument` for bad filters or page token, storage failures.
    pub async fn list(
        &self,
        actor: &Actor,
        req: &ListTicketsRequest,
    ) -> NodeResult<(Vec<Ticket>, String)> {
        actor.require(Action::Read)?;
        let mut v = Violations::new();
        for (i, s) in req.statuses.iter().enumerate() {
            validate::status(&mut v, &format!("statuses[{i}]"), *s);
        }
        if !req.category.is_empty() {
            let known = self.taxonomy.current().get(&req.category).is_some();
            v.check(
                known,
                "category",
                format!("unknown category `{}`", req.category),
            );
        }
        if !req.office.is_empty() {
            validate::office(&mut v, "office", &req.office);
        }
        if req.channel != 0 {
            validate::channel(&mut v, "channel", req.channel);
        }
        let territory = if req.territory.is_empty() {
            None
        } else {
            match Territory::italy().level_of(&req.territory) {
                Some(Level::Comune) => Some(("istat_code", req.territory.clone())),
                Some(Level::Provincia) => Some(("province_code", req.territory.clone())),
                Some(Level::Regione) => Some(("region_code", req.territory.clone())),
                None => {
                    v.add("territory", "must be an existing ISTAT comune (6 digits), province (3) or region (2) code");
                    None
                }
            }
        };
        v.length("text", &req.text, 0, 200);
        v.check(req.page_size <= 500, "page_size", "must be at most 500");
        let fingerprint = filter_fingerprint(req);
        let before_id = if req.page_token.is_empty() {
            None
        } else {
            match decode_page_token("v1", &req.page_token) {
                Some((fp, id)) if fp == fingerprint => Some(id),
                Some(_) => {
                    v.add("page_token", "was issued for different filters");
                    None
                }
                None => {
                    v.add(
                        "page_token",
                        "is malformed (pass back next_page_token unchanged)",
                    );
                    None
                }
            }
        };
        v.into_result()?;
        let limit = if req.page_size == 0 {
            50
        } else {
            req.page_size
        };
        let filter = TicketFilter {
            statuses: req.statuses.clone(),
            category: (!req.category.is_empty()).then(|| req.category.clone()),
            office: (!req.office.is_empty()).then(|| req.office.clone()),
            channel: (req.channel != 0).then_some(req.channel),
            territory,
            words: text::fold(&req.text)
                .split(' ')
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect(),
            updated_since_ms: req.updated_since.as_ref().map(|t| millis(t) as i64),
            before_id,
            limit: limit + 1,
            ..TicketFilter::default()
        };
        let mut tickets = crate::shared_ticket::tables::list(&self.store, &filter).await?;
        let next = if tickets.len() > limit as usize {
            tickets.truncate(limit as usize);
            encode_page_token(
                "v1",
                &fingerprint,
                &tickets.last().expect("non-empty page").id,
            )
        } else {
            String::new()
        };
        Ok((tickets, next))
    }

    async fn append(&self, ticket_id: &str, mutation: Mutation) -> NodeResult<Ticket> {
        self.not_catching_up()?;
        let ticket = crate::casework::tables::append(&self.store, ticket_id, mutation).await?;
        self.recent.record(&ticket);
        Ok(ticket)
    }

    /// Adds a note.
    ///
    /// # Errors
    /// `InvalidArgument`, `PermissionDenied`, `NotFound`, storage failures.
    pub async fn add_note(
        self: &Arc<Self>,
        actor: &Actor,
        ticket_id: &str,
        public: bool,
        text: &str,
    ) -> NodeResult<Ticket> {
        actor.require(if public {
            Action::PublicNote
        } else {
            Action::InternalNote
        })?;
        let mut v = Violations::new();
        validate::ticket_id(&mut v, "ticket_id", ticket_id);
        v.length("text", text, 1, validate::TEXT_MAX);
        v.printable("text", text);
        v.into_result()?;
        let (desk, actor2, text) = (Arc::clone(self), actor.clone(), text.to_string());
        let ticket = self
            .append(
                ticket_id,
                Box::new(move |t: &Ticket| {
                    Ok(desk.new_event(
                        t,
                        &actor2,
                        t.owner_epoch,
                        Kind::Note(Note {
                            public,
                            text: text.clone(),
                        }),
                    ))
                }),
            )
            .await?;
        tracing::info!(ticket = %ticket_id, public, "note added");
        Ok(ticket)
    }

    /// Records on the ticket that its citizen was told about the change
    /// `about` (`<author>/<event id>`), by `channel`: a `CitizenNotified`
    /// event without personal data, signed by this node (the origin, which
    /// holds the contact).
    ///
    /// # Errors
    /// `NotFound`, storage failures.
    pub async fn record_notice(
        self: &Arc<Self>,
        ticket_id: &str,
        channel: urpnet_proto::v1::Channel,
        summary: String,
        about: &str,
    ) -> NodeResult<Ticket> {
        let actor = Actor {
            id: "notify".into(),
            name: "notify".into(),
            role: crate::auth::Role::Supervisor,
        };
        let desk = Arc::clone(self);
        let summary = format!("{summary} ({about})");
        self.append(
            ticket_id,
            Box::new(move |t: &Ticket| {
                Ok(desk.new_event(
                    t,
                    &actor,
                    t.owner_epoch,
                    Kind::CitizenNotified(urpnet_proto::v1::CitizenNotified {
                        channel: channel as i32,
                        summary: summary.clone(),
                    }),
                ))
            }),
        )
        .await
    }

    /// Erases the citizen's contact of a ticket this node is the origin of:
    /// a `ContactErased` event, stored with the contact's deletion, which
    /// every other participant applies to its own copy.
    ///
    /// # Errors
    /// `FailedPrecondition` when this node is not the origin, `NotFound`,
    /// storage failures.
    pub async fn erase_contact(
        self: &Arc<Self>,
        ticket_id: &str,
        reason: &str,
    ) -> NodeResult<Ticket> {
        let actor = Actor {
            id: "privacy".into(),
            name: "privacy".into(),
            role: crate::auth::Role::Supervisor,
        };
        let desk = Arc::clone(self);
        let reason = reason.to_string();
        self.append(
            ticket_id,
            Box::new(move |t: &Ticket| {
                if t.origin_node != desk.config.node.id.as_str() {
                    return Err(NodeError::FailedPrecondition(format!(
                        "ticket {}: only its origin ({}) holds and erases the contact",
                        t.reference, t.origin_node
                    )));
                }
                Ok(desk.new_event(
                    t,
                    &actor,
                    t.owner_epoch,
                    Kind::ContactErased(urpnet_proto::v1::ContactErased {
                        reason: reason.clone(),
                    }),
                ))
            }),
        )
        .await
    }

    /// This body's display name.
    pub fn node_name(&self) -> String {
        self.config.node.name.clone()
    }

    /// The tracking key of the ticket created by `request_key`.
    pub fn tracking_key_for(&self, request_key: &str) -> String {
        self.tracking.key_for(request_key)
    }

    /// Changes the status (or merges, for MERGED).
    ///
    /// # Errors
    /// `InvalidArgument` for a bad request or a transition the lifecycle
    /// forbids, `PermissionDenied`, `NotFound`, `FailedPrecondition` when this
    /// node is not the owner, storage failures.
    pub async fn change_status(
        self: &Arc<Self>,
        actor: &Actor,
        ticket_id: &str,
        change: StatusChange,
    ) -> NodeResult<Ticket> {
        actor.require(Action::ChangeStatus)?;
        let mut v = Violations::new();
        validate::ticket_id(&mut v, "ticket_id", ticket_id);
        validate::status(&mut v, "status", change.to);
        v.length("reason", &change.reason, 0, validate::REASON_MAX);
        v.printable("reason", &change.reason);
        let to = Status::try_from(change.to).unwrap_or(Status::Unspecified);
        if to == Status::Merged {
            validate::ticket_id(&mut v, "merged_into", &change.merged_into);
            v.check(
                change.merged_into != ticket_id,
                "merged_into",
                "must name another ticket",
            );
        } else {
            v.check(
                change.merged_into.is_empty(),
                "merged_into",
                "is only for status merged",
            );
        }
        if to == Status::Rejected {
            v.check(
                !change.reason.trim().is_empty(),
                "reason",
                "is required when rejecting a ticket",
            );
        }
        v.into_result()?;
        if to == Status::Merged
            && crate::shared_ticket::tables::ticket(&self.store, &change.merged_into)
                .await?
                .is_none()
        {
            return Err(NodeError::invalid(
                "merged_into",
                "must name an existing ticket",
            ));
        }
        let (desk, actor2, node) = (
            Arc::clone(self),
            actor.clone(),
            self.config.node.id.to_string(),
        );
        let ticket = self
            .append(
                ticket_id,
                Box::new(move |t: &Ticket| {
                    require_owned(t, &node)?;
                    let from = t.status();
                    let kind = if to == Status::Merged {
                        if lifecycle::is_terminal(from) {
                            return Err(status_violation(from, to));
                        }
                        Kind::Merged(Merged {
                            into_ticket_id: change.merged_into.clone(),
                        })
                    } else {
                        if !lifecycle::allowed(from, to) {
                            return Err(status_violation(from, to));
                        }
                        Kind::StatusChanged(StatusChanged {
                            from: from as i32,
                            to: to as i32,
                            reason: change.reason.clone(),
                        })
                    };
                    Ok(desk.new_event(t, &actor2, t.owner_epoch, kind))
                }),
            )
            .await?;
        metrics::counter!("urpnet_ticket_status_changes_total", "to" => names::status_name(to))
            .increment(1);
        tracing::info!(ticket = %ticket_id, to = names::status_name(to), "status changed");
        Ok(ticket)
    }

    /// Assigns the ticket to an office of this body.
    ///
    /// # Errors
    /// `InvalidArgument`, `PermissionDenied`, `NotFound`, `FailedPrecondition`
    /// when the ticket is closed or owned elsewhere, storage failures.
    pub async fn assign(
        self: &Arc<Self>,
        actor: &Actor,
        ticket_id: &str,
        office: &str,
    ) -> NodeResult<Ticket> {
        actor.require(Action::Assign)?;
        let mut v = Violations::new();
        validate::ticket_id(&mut v, "ticket_id", ticket_id);
        validate::office(&mut v, "office", office);
        v.into_result()?;
        let (desk, actor2, node, office) = (
            Arc::clone(self),
            actor.clone(),
            self.config.node.id.to_string(),
            office.to_string(),
        );
        let ticket = self
            .append(
                ticket_id,
                Box::new(move |t: &Ticket| {
                    require_owned(t, &node)?;
                    if lifecycle::is_terminal(t.status()) {
                        return Err(NodeError::FailedPrecondition(format!(
                            "the ticket is {} and cannot be assigned",
                            names::status_name(t.status())
                        )));
                    }
                    Ok(desk.new_event(
                        t,
                        &actor2,
                        t.owner_epoch,
                        Kind::Assigned(Assigned {
                            office: office.clone(),
                        }),
                    ))
                }),
            )
            .await?;
        tracing::info!(ticket = %ticket_id, office = %ticket.office, "ticket assigned");
        Ok(ticket)
    }

    /// The full event log with the effect of each event.
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`, storage failures.
    pub async fn history(&self, actor: &Actor, ticket_id: &str) -> NodeResult<Vec<HistoryItem>> {
        actor.require(Action::Read)?;
        let mut v = Violations::new();
        validate::ticket_id(&mut v, "ticket_id", ticket_id);
        v.into_result()?;
        let events = crate::shared_ticket::tables::events(&self.store, ticket_id).await?;
        if events.is_empty() {
            return Err(NodeError::NotFound(format!("ticket {ticket_id}")));
        }
        let own_key = self.signer.verifying_key();
        let members = self.federation.members();
        let key_of = |author: &str| {
            if author == self.signer.node().as_str() {
                return Some(own_key);
            }
            crate::registry_link::signing_key(members.by_id.get(author)?)
        };
        let valid: std::collections::HashMap<String, bool> = events
            .iter()
            .map(|(env, e)| {
                let ok = env.author == e.author_node
                    && key_of(&env.author).is_some_and(|key| {
                        signing::verify(env, PayloadKind::TicketEvent, &key).is_ok()
                    });
                (e.event_id.clone(), ok)
            })
            .collect();
        let folded = fold(events.into_iter().map(|(_, e)| e));
        Ok(folded
            .log
            .into_iter()
            .map(|(event, effect)| {
                let signature_valid = valid.get(&event.event_id).copied().unwrap_or(false);
                HistoryItem {
                    event,
                    effect,
                    signature_valid,
                }
            })
            .collect())
    }

    /// Re-folds every ticket's events and compares with the materialised
    /// state: returns the ids that differ (none, unless the store is damaged).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn verify_materialised(&self) -> NodeResult<Vec<String>> {
        let mut differing = Vec::new();
        for id in crate::shared_ticket::tables::ticket_ids(&self.store).await? {
            let events = crate::shared_ticket::tables::events(&self.store, &id).await?;
            let refolded = fold(events.into_iter().map(|(_, e)| e)).ticket;
            if refolded != crate::shared_ticket::tables::ticket(&self.store, &id).await? {
                differing.push(id);
            }
        }
        Ok(differing)
    }

    /// An attachment's metadata and content.
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`, I/O failures.
    pub async fn attachment(
        &self,
        actor: &Actor,
        sha256: &str,
    ) -> NodeResult<(Attachment, Vec<u8>)> {
        actor.require(Action::Read)?;
        let ok = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(NodeError::invalid(
                "sha256",
                "must be 64 lowercase hex digits",
            ));
        }
        let meta = crate::attachments::tables::get(&self.store, sha256)
            .await?
            .ok_or_else(|| NodeError::NotFound(format!("attachment {sha256}")))?;
        let content = crate::attachments::read_content(&self.store, sha256).await?;
        Ok((meta, content))
    }
}

pub(crate) fn require_owned(ticket: &Ticket, node: &str) -> NodeResult<()> {
    if ticket.owner_node != node {
        return Err(NodeError::FailedPrecondition(format!(
            "the ticket is owned by {}; only its owner may change it",
            ticket.owner_node
        )));
    }
    Ok(())
}

fn status_violation(from: Status, to: Status) -> NodeError {
    let allowed: Vec<String> = lifecycle::allowed_targets(from)
        .iter()
        .map(|s| names::status_name(*s))
        .collect();
    NodeError::invalid(
        "status",
        format!(
            "may not change from {} to {} (allowed: {})",
            names::status_name(from),
            names::status_name(to),
            if allowed.is_empty() {
                "none, the status is terminal".to_string()
            } else {
                allowed.join(", ")
            }
        ),
    )
}

/// A keyset page token: `<tag>.<key>.<last ticket id>`, base64url. The tag
/// names the list (`v1` tickets, whose key is the filters' fingerprint, so a
/// token only continues the query it came from; `o1` offers, whose key is
/// the last offer's time); the key holds no dot.
pub(crate) fn encode_page_token(tag: &str, key: &str, last_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{tag}.{key}.{last_id}"))
}

/// The key and last ticket id of a token [`encode_page_token`] made with
/// `tag`; `None` for anything else.
pub(crate) fn decode_page_token(tag: &str, token: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let mut parts = raw.splitn(3, '.');
    (parts.next()? == tag).then_some(())?;
    let key = parts.next()?.to_string();
    let id = parts.next()?;
    urpnet_proto::ids::TicketId::parse(id).ok()?;
    Some((key, id.to_string()))
}

fn filter_fingerprint(req: &ListTicketsRequest) -> String {
    let mut key = req.clone();
    key.page_token.clear();
    key.page_size = 0;
    hex::encode(&Sha256::digest(key.encode_to_vec())[..8])
}

/// The UTC calendar year of a Unix time in milliseconds.
pub fn year_of(ms: u64) -> i32 {
    // Civil-from-days (H. Hinnant), enough for the year.
    let days = (ms / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years_from_unix_time() {
        assert_eq!(year_of(0), 1970);
        assert_eq!(year_of(1_767_225_599_000), 2025); // 2025-12-31T23:59:59Z
        assert_eq!(year_of(1_767_225_600_000), 2026);
    }

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let id = ulid::Ulid::new().to_string();
        let token = encode_page_token("v1", "abcd", &id);
        assert_eq!(decode_page_token("v1", &token), Some(("abcd".into(), id)));
        assert_eq!(
            decode_page_token("o1", &token),
            None,
            "another list's token"
        );
        assert_eq!(decode_page_token("v1", "!!!"), None);
        assert_eq!(
            decode_page_token("v1", &encode_page_token("v1", "abcd", "not-an-id")),
            None
        );
    }
}
