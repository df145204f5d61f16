//! The ticket fold (DESIGN.md §3): a ticket's state is a deterministic
//! function of its *set* of events.
//!
//! Events are deduplicated by (author, event id) and ordered by (HLC, author,
//! event id); each is then applied in turn by [`apply`], which checks the
//! authority rules. An event that breaks a rule is kept in the log but has no
//! effect, and the reason is reported in the fold's [`Effect`]s. So any two
//! nodes holding the same events hold the same state, whatever the order or
//! number of deliveries — the property tests at the bottom check exactly
//! this.
//!
//! Two rules stop a participant from rewriting the past with stamps of its
//! choosing (docs/security.md, T1):
//! - **Bound origin.** A ticket id is minted bound to its origin
//!   ([`TicketId::mint`]); only a `Created` signed by that node, as its first
//!   event, creates the ticket.
//! - **Author chains.** Each author numbers its events on a ticket (1, 2, …)
//!   and names the hash of its previous one. In fold order an event must
//!   follow its author's chain head; one stamped before its predecessor (a
//!   backdated event) or sharing a number with another (a fork) has no effect
//!   and marks its author an equivocator. When an author forked, the branch
//!   holding an offer another node answered wins, so an accepted handoff
//!   cannot be undone by its former owner.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use prost::Message as _;
use prost_types::Timestamp;
use sha2::{Digest as _, Sha256};
use urpnet_proto::ids::TicketId;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{ChainHead, PendingHandoff, Status, Ticket, TicketEvent};

use super::lifecycle;

/// What one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// It changed the ticket.
    Applied,
    /// It broke a rule and was kept without effect; the reason says which.
    Ineffective(String),
}

/// The result of a fold.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// The ticket, once a valid `Created` event has been seen.
    pub ticket: Option<Ticket>,
    /// The events in fold order, deduplicated, each with its effect.
    pub log: Vec<(TicketEvent, Effect)>,
}

/// The fold order: HLC, then author, then event id, then (only to make
/// corrupt duplicates of one id deterministic) the encoded bytes.
pub fn fold_order(a: &TicketEvent, b: &TicketEvent) -> Ordering {
    let stamp = |e: &TicketEvent| e.hlc.map(|h| (h.wall_ms, h.logical)).unwrap_or_default();
    stamp(a)
        .cmp(&stamp(b))
        .then_with(|| a.author_node.cmp(&b.author_node))
        .then_with(|| a.event_id.cmp(&b.event_id))
        .then_with(|| a.encode_to_vec().cmp(&b.encode_to_vec()))
}

/// The hash an author's next event names as `prev_hash`: SHA-256 of the
/// event's encoding.
pub fn event_hash(event: &TicketEvent) -> Vec<u8> {
    Sha256::digest(event.encode_to_vec()).to_vec()
}

/// The `(author_seq, prev_hash)` of `author`'s next event on `ticket`.
pub fn next_in_chain(ticket: &Ticket, author: &str) -> (u64, Vec<u8>) {
    match ticket.chain_heads.iter().find(|h| h.author == author) {
        Some(head) => (head.seq + 1, head.hash.clone()),
        None => (1, Vec::new()),
    }
}

/// Events that another node's answer depends on: an offer answered by its
/// target, and that offer's chain ancestors. Keyed by (author, seq) so a fork
/// at that number loses to them.
fn pinned<'a>(
    events: &'a [TicketEvent],
    hashes: &'a [Vec<u8>],
) -> HashMap<(&'a str, u64), &'a str> {
    let mut by_hash: HashMap<(&str, &[u8]), &TicketEvent> = HashMap::new();
    let mut pins = HashMap::new();
    for answer in events {
        let offer_id = match &answer.kind {
            Some(Kind::HandoffAccepted(a)) => &a.offer_event_id,
            Some(Kind::HandoffDeclined(d)) => &d.offer_event_id,
            _ => continue,
        };
        // The offer's author is whoever offered this ticket to the answerer.
        let offer = events.iter().find(|o| {
            o.event_id == *offer_id
                && matches!(&o.kind, Some(Kind::HandoffOffered(h)) if h.to_node == answer.author_node)
        });
        let Some(offer) = offer else { continue };
        if by_hash.is_empty() {
            by_hash = events
                .iter()
                .zip(hashes)
                .map(|(e, h)| ((e.author_node.as_str(), h.as_slice()), e))
                .collect();
        }
        let mut at = Some(offer);
        let mut steps = 0;
        while let Some(e) = at {
            let key = (e.author_node.as_str(), e.author_seq);
            if pins.contains_key(&key) || steps > events.len() {
                break;
            }
            pins.insert(key, e.event_id.as_str());
            steps += 1;
            at = (e.author_seq > 1)
                .then(|| {
                    by_hash
                        .get(&(e.author_node.as_str(), e.prev_hash.as_slice()))
                        .copied()
                })
                .flatten();
        }
    }
    pins
}

/// Folds a set of events (any order, duplicates allowed) into a ticket.
pub fn fold(events: impl IntoIterator<Item = TicketEvent>) -> Folded {
    let mut events: Vec<TicketEvent> = events.into_iter().collect();
    events.sort_by(fold_order);
    {
        // Deduplicate by (author, id): a reused id of another author's is
        // another event.
        let mut seen = HashSet::new();
        events.retain(|e| seen.insert((e.author_node.clone(), e.event_id.clone())));
    }
    // Each event's hash once: for chain heads, pins and the backdating check.
    let hashes: Vec<Vec<u8>> = events.iter().map(event_hash).collect();
    let pins = pinned(&events, &hashes);
    let mut ticket = None;
    let mut log = Vec::with_capacity(events.len());
    for (event, hash) in events.iter().zip(&hashes) {
        let effect = step(&mut ticket, event, hash, &pins);
        log.push((event.clone(), effect));
    }
    // An event stamped before the predecessor it names is a backdating: its
    // author is an equivocator. Only the stamps tell: an event whose
    // predecessor is held but did not take its place (its own predecessor
    // has not arrived yet) is merely waiting.
    let behind =
        |effect: &Effect| matches!(effect, Effect::Ineffective(r) if r.starts_with(BEHIND_CHAIN));
    if let Some(t) = ticket.as_mut()
        && log.iter().any(|(_, effect)| behind(effect))
    {
        let position: HashMap<(&str, &[u8]), usize> = events
            .iter()
            .zip(&hashes)
            .enumerate()
            .map(|(i, (e, h))| ((e.author_node.as_str(), h.as_slice()), i))
            .collect();
        for (i, (e, effect)) in log.iter().enumerate() {
            let predecessor = position.get(&(e.author_node.as_str(), e.prev_hash.as_slice()));
            if behind(effect) && predecessor.is_some_and(|p| *p > i) {
                mark_equivocator(t, &e.author_node);
            }
        }
    }
    Folded { ticket, log }
}

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn timestamp(ms: u64) -> Timestamp {
    Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A protobuf timestamp as milliseconds since the epoch (negative clamps to 0).
pub fn millis(ts: &Timestamp) -> u64 {
    (ts.seconds.max(0) as u64) * 1000 + (ts.nanos.max(0) as u64) / 1_000_000
}

/// Applies one event to the state. The event must sort after every event
/// already applied (true for a node's own new events, whose HLC stamp is later
/// than everything it holds) and answer no offer that lost a fork; otherwise
/// re-fold the whole set with [`fold`].
pub fn apply(state: &mut Option<Ticket>, event: &TicketEvent) -> Effect {
    step(state, event, &event_hash(event), &HashMap::new())
}

/// The start of the reason given to an event that does not follow its
/// author's chain head at its place in fold order.
const BEHIND_CHAIN: &str = "out of chain";

/// Applies `event`, whose hash is `hash`, given the fork pins of its set.
fn step(
    state: &mut Option<Ticket>,
    event: &TicketEvent,
    hash: &[u8],
    pins: &HashMap<(&str, u64), &str>,
) -> Effect {
    let wall_ms = event.hlc.map(|h| h.wall_ms).unwrap_or_default();
    let Some(ticket) = state else {
        return match &event.kind {
            Some(Kind::Created(created)) => {
                let bound = TicketId::parse(&event.ticket_id)
                    .is_ok_and(|id| id.is_bound_to(&event.author_node));
                if !bound {
                    return Effect::Ineffective(format!(
                        "ticket id {} was not minted by {}",
                        event.ticket_id, event.author_node
                    ));
                }
                if event.author_seq != 1 || !event.prev_hash.is_empty() {
                    return Effect::Ineffective(
                        "a Created event must be its author's first (author_seq 1)".into(),
                    );
                }
                let mut ticket = created_ticket(event, created, wall_ms);
                ticket.chain_heads.push(ChainHead {
                    author: event.author_node.clone(),
                    seq: 1,
                    hash: hash.to_vec(),
                });
                *state = Some(ticket);
                Effect::Applied
            }
            _ => Effect::Ineffective("the ticket has no Created event before this one".into()),
        };
    };
    ticket.event_count += 1;
    // An event in its author's chain moves the chain on even when it breaks
    // an authority rule: the author's next event names it.
    let result = follow_chain(ticket, event, pins).and_then(|()| {
        advance_chain(ticket, event, hash);
        check_and_apply(ticket, event)
    });
    match result {
        Ok(()) => {
            ticket.updated_at = Some(timestamp(wall_ms));
            if lifecycle::is_terminal(ticket.status()) && ticket.closed_at.is_none() {
                ticket.closed_at = Some(timestamp(wall_ms));
            }
            Effect::Applied
        }
        Err(reason) => {
            ticket.ineffective_event_count += 1;
            Effect::Ineffective(reason)
        }
    }
}

fn mark_equivocator(ticket: &mut Ticket, node: &str) {
    if let Err(at) = ticket
        .equivocators
        .binary_search_by(|p| p.as_str().cmp(node))
    {
        ticket.equivocators.insert(at, node.to_string());
    }
}

/// Checks that `event` is its author's next event: one more than the chain
/// head, naming its hash, and not a fork another node's answer ruled out.
fn follow_chain(
    ticket: &mut Ticket,
    event: &TicketEvent,
    pins: &HashMap<(&str, u64), &str>,
) -> Result<(), String> {
    let (seq, prev) = next_in_chain(ticket, &event.author_node);
    if event.author_seq < seq {
        mark_equivocator(ticket, &event.author_node);
        return Err(format!(
            "equivocation: {} already signed event {} of this ticket",
            event.author_node, event.author_seq
        ));
    }
    if event.author_seq > seq || event.prev_hash != prev {
        // Its predecessor is missing, or stamped after it (the fold's
        // post-pass tells the two apart).
        return Err(format!(
            "{BEHIND_CHAIN}: {}'s event {} does not follow its event {} at this point",
            event.author_node,
            event.author_seq,
            seq - 1
        ));
    }
    if let Some(pinned) = pins.get(&(event.author_node.as_str(), event.author_seq))
        && *pinned != event.event_id
    {
        mark_equivocator(ticket, &event.author_node);
        return Err(format!(
            "equivocation: {} signed another event {} ({pinned}) that a peer answered",
            event.author_node, event.author_seq
        ));
    }
    Ok(())
}

/// Moves the author's chain head to `event` (kept sorted by author).
fn advance_chain(ticket: &mut Ticket, event: &TicketEvent, hash: &[u8]) {
    let head = ChainHead {
        author: event.author_node.clone(),
        seq: event.author_seq,
        hash: hash.to_vec(),
    };
    match ticket
        .chain_heads
        .binary_search_by(|h| h.author.as_str().cmp(&event.author_node))
    {
        Ok(at) => ticket.chain_heads[at] = head,
        Err(at) => ticket.chain_heads.insert(at, head),
    }
}

fn created_ticket(
    event: &TicketEvent,
    created: &urpnet_proto::v1::Created,
    wall_ms: u64,
) -> Ticket {
    Ticket {
        id: event.ticket_id.clone(),
        reference: created.reference.clone(),
        origin_node: event.author_node.clone(),
        owner_node: event.author_node.clone(),
        owner_epoch: 0,
        category: created.category.clone(),
        channel: created.channel,
        subject: created.subject.clone(),
        description: created.description.clone(),
        location: created.location.clone(),
        attachments: created.attachments.clone(),
        status: Status::New as i32,
        priority: created.priority,
        office: String::new(),
        created_at: Some(timestamp(wall_ms)),
        updated_at: Some(timestamp(wall_ms)),
        due_at: created.due_at,
        closed_at: None,
        consent: created.consent,
        merged_into: String::new(),
        participants: vec![event.author_node.clone()],
        pending_handoff: None,
        handoff_count: 0,
        note_count: 0,
        event_count: 1,
        ineffective_event_count: 0,
        equivocators: Vec::new(),
        chain_heads: Vec::new(),
        answers: created.answers.clone(),
        contact_erased: false,
        last_decline_event_id: String::new(),
    }
}

fn add_participant(ticket: &mut Ticket, node: &str) {
    if let Err(at) = ticket
        .participants
        .binary_search_by(|p| p.as_str().cmp(node))
    {
        ticket.participants.insert(at, node.to_string());
    }
}

/// Owner-only events must come from the current owner, at the current epoch.
fn require_owner(ticket: &Ticket, event: &TicketEvent) -> Result<(), String> {
    if event.author_node != ticket.owner_node {
        return Err(format!(
            "{} is not the owner ({})",
            event.author_node, ticket.owner_node
        ));
    }
    if event.owner_epoch != ticket.owner_epoch {
        return Err(format!(
            "stale owner epoch {} (current {})",
            event.owner_epoch, ticket.owner_epoch
        ));
    }
    Ok(())
}

fn require_open(ticket: &Ticket) -> Result<(), String> {
    if lifecycle::is_terminal(ticket.status()) {
        return Err(format!(
            "the ticket is {}",
            super::names::status_name(ticket.status())
        ));
    }
    Ok(())
}

fn require_participant(ticket: &Ticket, event: &TicketEvent) -> Result<(), String> {
    if ticket
        .participants
        .binary_search(&event.author_node)
        .is_err()
    {
        return Err(format!("{} is not a participant", event.author_node));
    }
    Ok(())
}

fn check_and_apply(ticket: &mut Ticket, event: &TicketEvent) -> Result<(), String> {
    if event.ticket_id != ticket.id {
        return Err(format!("the event belongs to ticket {}", event.ticket_id));
    }
    match &event.kind {
        None => Err("the event has no kind".into()),
        Some(Kind::Created(_)) => Err("the ticket was already created".into()),
        Some(Kind::Note(_)) => {
            require_participant(ticket, event)?;
            ticket.note_count += 1;
            Ok(())
        }
        Some(Kind::StatusChanged(change)) => {
            require_owner(ticket, event)?;
            let (from, to) = (ticket.status(), change.to());
            if !lifecycle::allowed(from, to) {
                return Err(format!(
                    "status may not change from {} to {}",
                    super::names::status_name(from),
                    super::names::status_name(to)
                ));
            }
            ticket.status = to as i32;
            if !lifecycle::is_terminal(to) {
                ticket.closed_at = None;
            }
            Ok(())
        }
        Some(Kind::Assigned(assigned)) => {
            require_owner(ticket, event)?;
            require_open(ticket)?;
            if assigned.office.is_empty() {
                return Err("an assignment needs an office".into());
            }
            ticket.office = assigned.office.clone();
            if ticket.status() == Status::New {
                ticket.status = Status::Assigned as i32;
            }
            Ok(())
        }
        Some(Kind::Rescheduled(r)) => {
            require_owner(ticket, event)?;
            require_open(ticket)?;
            if r.priority != 0 {
                ticket.priority = r.priority;
            }
            if r.due_at.is_some() {
                ticket.due_at = r.due_at;
            }
            Ok(())
        }
        Some(Kind::HandoffOffered(offer)) => {
            require_owner(ticket, event)?;
            require_open(ticket)?;
            if offer.to_node == ticket.owner_node {
                return Err("a ticket cannot be offered to its owner".into());
            }
            if let Some(pending) = &ticket.pending_handoff
                && pending.owner_epoch == event.owner_epoch
            {
                // Two different offers signed by one owner at one epoch:
                // equivocation. The first (in fold order) stands.
                if let Err(at) = ticket.equivocators.binary_search(&event.author_node) {
                    ticket.equivocators.insert(at, event.author_node.clone());
                }
                return Err(format!(
                    "equivocation: {} already offered the ticket at epoch {}",
                    event.author_node, event.owner_epoch
                ));
            }
            ticket.pending_handoff = Some(PendingHandoff {
                offer_event_id: event.event_id.clone(),
                to_node: offer.to_node.clone(),
                owner_epoch: ticket.owner_epoch,
            });
            add_participant(ticket, &offer.to_node);
            Ok(())
        }
        Some(Kind::HandoffAccepted(answer)) => {
            let pending = answer_pending(ticket, event, &answer.offer_event_id)?;
            ticket.owner_node = pending.to_node;
            ticket.owner_epoch += 1;
            ticket.last_decline_event_id.clear();
            ticket.handoff_count += 1;
            ticket.office.clear();
            if !lifecycle::is_terminal(ticket.status()) {
                ticket.status = Status::New as i32;
            }
            Ok(())
        }
        Some(Kind::HandoffDeclined(answer)) => {
            answer_pending(ticket, event, &answer.offer_event_id)?;
            ticket.last_decline_event_id.clone_from(&event.event_id);
            Ok(())
        }
        Some(Kind::CitizenNotified(_)) => require_participant(ticket, event),
        Some(Kind::ContactErased(_)) => {
            // Only the origin holds (and so erases) the contact.
            if event.author_node != ticket.origin_node {
                return Err(format!(
                    "{} is not the origin ({}); only the origin erases the contact",
                    event.author_node, ticket.origin_node
                ));
            }
            ticket.contact_erased = true;
            Ok(())
        }
        Some(Kind::Merged(merged)) => {
            require_owner(ticket, event)?;
            require_open(ticket)?;
            if merged.into_ticket_id == ticket.id || merged.into_ticket_id.is_empty() {
                return Err("a ticket must be merged into another ticket".into());
            }
            ticket.status = Status::Merged as i32;
            ticket.merged_into = merged.into_ticket_id.clone();
            Ok(())
        }
        Some(Kind::AttachmentAdded(added)) => {
            require_participant(ticket, event)?;
            let Some(attachment) = &added.attachment else {
                return Err("the event carries no attachment".into());
            };
            if !ticket
                .attachments
                .iter()
                .any(|a| a.sha256 == attachment.sha256)
            {
                ticket.attachments.push(attachment.clone());
            }
            Ok(())
        }
        Some(Kind::Shared(shared)) => {
            require_owner(ticket, event)?;
            add_participant(ticket, &shared.with_node);
            Ok(())
        }
    }
}

/// Checks that `event` answers the pending offer, as its target, and clears it.
fn answer_pending(
    ticket: &mut Ticket,
    event: &TicketEvent,
    offer_id: &str,
) -> Result<PendingHandoff, String> {
    let Some(pending) = ticket.pending_handoff.clone() else {
        return Err("no handoff is pending".into());
    };
    if pending.offer_event_id != offer_id {
        return Err(format!(
            "the pending offer is {}, not {offer_id}",
            pending.offer_event_id
        ));
    }
    if pending.to_node != event.author_node {
        return Err(format!("only {} may answer the offer", pending.to_node));
    }
    ticket.pending_handoff = None;
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use urpnet_proto::v1::{
        Assigned, Created, HandoffAccepted, HandoffDeclined, HandoffOffered, Hlc, Merged, Note,
        StatusChanged,
    };

    /// A ticket id minted by the origin of these tests, c_a662.
    fn ticket_id() -> &'static str {
        static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        ID.get_or_init(|| {
            TicketId::mint(&urpnet_proto::ids::NodeId::new("c_a662").unwrap()).to_string()
        })
    }

    /// Numbers each author's events in fold order and links them by hash, as
    /// honest authors do.
    fn chained(events: impl IntoIterator<Item = TicketEvent>) -> Vec<TicketEvent> {
        let mut events: Vec<TicketEvent> = events.into_iter().collect();
        events.sort_by(fold_order);
        let mut heads: HashMap<String, (u64, Vec<u8>)> = HashMap::new();
        for e in &mut events {
            let head = heads.entry(e.author_node.clone()).or_default();
            e.author_seq = head.0 + 1;
            e.prev_hash = head.1.clone();
            *head = (e.author_seq, event_hash(e));
        }
        events
    }

    fn event(n: u64, author: &str, epoch: u64, kind: Kind) -> TicketEvent {
        TicketEvent {
            event_id: format!("01JD{n:022}"),
            ticket_id: ticket_id().into(),
            hlc: Some(Hlc {
                wall_ms: 1_700_000_000_000 + n,
                logical: 0,
            }),
            author_node: author.into(),
            actor: "op-1".into(),
            owner_epoch: epoch,
            author_seq: 0,
            prev_hash: Vec::new(),
            kind: Some(kind),
        }
    }

    fn created() -> TicketEvent {
        event(
            0,
            "c_a662",
            0,
            Kind::Created(Created {
                reference: "c_a662-2026-000001".into(),
                category: "rifiuti".into(),
                subject: "Cassonetto pieno".into(),
                ..Default::default()
            }),
        )
    }

    fn status(n: u64, author: &str, epoch: u64, to: Status) -> TicketEvent {
        event(
            n,
            author,
            epoch,
            Kind::StatusChanged(StatusChanged {
                to: to as i32,
                ..Default::default()
            }),
        )
    }

    #[test]
    fn an_illegal_transition_is_recorded_and_has_no_effect() {
        let folded = fold(chained([created(), status(1, "c_a662", 0, Status::Closed)]));
        let ticket = folded.ticket.unwrap();
        assert_eq!(ticket.status(), Status::New);
        assert_eq!(ticket.event_count, 2);
        assert_eq!(ticket.ineffective_event_count, 1);
        assert!(
            matches!(&folded.log[1].1, Effect::Ineffective(r) if r.contains("from new to closed"))
        );
    }

    #[test]
    fn only_the_owner_changes_status_and_only_at_its_epoch() {
        let folded = fold(chained([
            created(),
            status(1, "c_c426", 0, Status::InProgress),
            status(2, "c_a662", 3, Status::InProgress),
        ]));
        let ticket = folded.ticket.unwrap();
        assert_eq!(ticket.status(), Status::New);
        assert_eq!(ticket.ineffective_event_count, 2);
    }

    #[test]
    fn ownership_moves_only_when_the_target_accepts() {
        let offer = event(
            1,
            "c_a662",
            0,
            Kind::HandoffOffered(HandoffOffered {
                to_node: "p_ba".into(),
                reason: String::new(),
                ..Default::default()
            }),
        );
        let offer_id = offer.event_id.clone();
        let wrong_accept = event(
            2,
            "c_c426",
            0,
            Kind::HandoffAccepted(HandoffAccepted {
                offer_event_id: offer_id.clone(),
            }),
        );
        let folded = fold(chained([created(), offer.clone(), wrong_accept]));
        assert_eq!(folded.ticket.as_ref().unwrap().owner_node, "c_a662");

        let accept = event(
            3,
            "p_ba",
            0,
            Kind::HandoffAccepted(HandoffAccepted {
                offer_event_id: offer_id.clone(),
            }),
        );
        let stale = status(4, "c_a662", 0, Status::InProgress);
        let fresh = status(5, "p_ba", 1, Status::InProgress);
        let folded = fold(chained([created(), offer, accept, stale, fresh]));
        let ticket = folded.ticket.unwrap();
        assert_eq!(ticket.owner_node, "p_ba");
        assert_eq!(ticket.owner_epoch, 1);
        assert_eq!(ticket.status(), Status::InProgress);
        assert_eq!(ticket.participants, ["c_a662", "p_ba"]);
        assert!(matches!(&folded.log[3].1, Effect::Ineffective(r) if r.contains("not the owner")));
    }

    #[test]
    fn two_pending_offers_at_one_epoch_are_equivocation() {
        let a = event(
            1,
            "c_a662",
            0,
            Kind::HandoffOffered(HandoffOffered {
                to_node: "p_ba".into(),
                reason: String::new(),
                ..Default::default()
            }),
        );
        let b = event(
            2,
            "c_a662",
            0,
            Kind::HandoffOffered(HandoffOffered {
                to_node: "r_puglia".into(),
                reason: String::new(),
                ..Default::default()
            }),
        );
        let ticket = fold(chained([created(), a.clone(), b])).ticket.unwrap();
        assert_eq!(ticket.equivocators, ["c_a662"]);
        assert_eq!(ticket.pending_handoff.unwrap().offer_event_id, a.event_id);

        // A declined offer may be followed by a new one at the same epoch.
        let decline = event(
            2,
            "p_ba",
            0,
            Kind::HandoffDeclined(HandoffDeclined {
                offer_event_id: a.event_id.clone(),
                reason: "non competente".into(),
            }),
        );
        let c = event(
            3,
            "c_a662",
            0,
            Kind::HandoffOffered(HandoffOffered {
                to_node: "r_puglia".into(),
                reason: String::new(),
                ..Default::default()
            }),
        );
        let ticket = fold(chained([created(), a, decline, c])).ticket.unwrap();
        assert!(ticket.equivocators.is_empty());
        assert_eq!(ticket.pending_handoff.unwrap().to_node, "r_puglia");
    }

    #[test]
    fn merged_is_terminal() {
        let merged = event(
            1,
            "c_a662",
            0,
            Kind::Merged(Merged {
                into_ticket_id: "01JD9999999999999999999999".into(),
            }),
        );
        let after = status(2, "c_a662", 0, Status::InProgress);
        let ticket = fold(chained([created(), merged, after])).ticket.unwrap();
        assert_eq!(ticket.status(), Status::Merged);
        assert!(ticket.closed_at.is_some());
        assert_eq!(ticket.ineffective_event_count, 1);
    }

    fn arbitrary_event() -> impl Strategy<Value = TicketEvent> {
        let author = prop::sample::select(vec!["c_a662", "c_c426", "p_ba"]);
        let to = prop::sample::select(vec![
            Status::New,
            Status::Assigned,
            Status::InProgress,
            Status::WaitingCitizen,
            Status::Resolved,
            Status::Closed,
            Status::Rejected,
        ]);
        let target = prop::sample::select(vec!["c_c426", "p_ba", "r_puglia"]);
        (
            1u64..40,
            0u32..3,
            author,
            0u64..3,
            0u8..7,
            to,
            target,
            0u64..40,
        )
            .prop_map(|(n, logical, author, epoch, which, to, target, offer_n)| {
                let kind = match which {
                    0 => Kind::Note(Note {
                        public: n % 2 == 0,
                        text: format!("nota {n}"),
                    }),
                    1 | 2 => Kind::StatusChanged(StatusChanged {
                        to: to as i32,
                        ..Default::default()
                    }),
                    3 => Kind::Assigned(Assigned {
                        office: format!("ufficio-{}", n % 3),
                    }),
                    4 => Kind::HandoffOffered(HandoffOffered {
                        to_node: target.into(),
                        reason: String::new(),
                        ..Default::default()
                    }),
                    5 => Kind::HandoffAccepted(HandoffAccepted {
                        offer_event_id: format!("01JD{offer_n:022}"),
                    }),
                    _ => Kind::HandoffDeclined(HandoffDeclined {
                        offer_event_id: format!("01JD{offer_n:022}"),
                        reason: String::new(),
                    }),
                };
                let mut e = event(n, author, epoch, kind);
                e.hlc.as_mut().unwrap().logical = logical;
                e
            })
    }

    fn event_set() -> impl Strategy<Value = Vec<TicketEvent>> {
        (
            prop::collection::vec(arbitrary_event(), 0..30),
            // A few events whose author numbers wrongly (forks, gaps).
            prop::collection::vec((any::<prop::sample::Index>(), 0u64..6), 0..3),
        )
            .prop_map(|(mut events, forks)| {
                events.push(created());
                events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
                events.dedup_by(|a, b| a.event_id == b.event_id);
                let mut events = chained(events);
                for (at, seq) in forks {
                    let i = at.index(events.len());
                    if events[i].author_seq > 1 {
                        events[i].author_seq = seq;
                    }
                }
                events
            })
    }

    /// One of the honest history's actors, c_a662 after handing the ticket
    /// to p_ba, or the bystander c_c426, signing whatever it likes.
    fn hostile_events(author: &'static str) -> impl Strategy<Value = Vec<TicketEvent>> {
        let one = (
            0u64..60,
            0u8..8,
            0u64..3,
            prop::sample::select(vec!["p_ba", "c_c426", "c_a662", "r_puglia"]),
            0u64..8,
            any::<bool>(),
            0u64..60,
        )
            .prop_map(move |(n, which, epoch, target, seq, fork, offer_n)| {
                let kind = match which {
                    0 => Kind::Created(Created {
                        reference: format!("{author}-2026-000009"),
                        category: "rifiuti".into(),
                        ..Default::default()
                    }),
                    1 => Kind::StatusChanged(StatusChanged {
                        to: Status::Closed as i32,
                        ..Default::default()
                    }),
                    2 => Kind::Merged(Merged {
                        into_ticket_id: "01JD9999999999999999999999".into(),
                    }),
                    3 | 4 => Kind::HandoffOffered(HandoffOffered {
                        to_node: target.into(),
                        reason: String::new(),
                        ..Default::default()
                    }),
                    5 => Kind::HandoffAccepted(HandoffAccepted {
                        offer_event_id: format!("01JD{offer_n:022}"),
                    }),
                    6 => Kind::HandoffDeclined(HandoffDeclined {
                        offer_event_id: format!("01JD{offer_n:022}"),
                        reason: String::new(),
                    }),
                    _ => Kind::Assigned(Assigned {
                        office: "altrove".into(),
                    }),
                };
                // Ids from 100 on, stamps anywhere in the history.
                let mut e = event(100 + n, author, epoch, kind);
                e.hlc.as_mut().unwrap().wall_ms = 1_700_000_000_000 + n;
                (e, seq, fork)
            });
        prop::collection::vec(one, 1..12).prop_map(|list| {
            list.into_iter()
                .map(|(mut e, seq, fork)| {
                    // Either a number of its own choosing, or an honest-looking
                    // link to a chain of its own.
                    e.author_seq = seq;
                    if fork {
                        e.prev_hash = vec![seq as u8; 32];
                    }
                    e
                })
                .collect()
        })
    }

    /// c_a662 opens the ticket (stamps 0..), offers it to p_ba at 10, p_ba
    /// accepts at 20 and starts work at 30.
    fn honest_handoff() -> Vec<TicketEvent> {
        let note = |n, author| {
            event(
                n,
                author,
                0,
                Kind::Note(Note {
                    public: true,
                    text: "nota".into(),
                }),
            )
        };
        let offer = event(
            10,
            "c_a662",
            0,
            Kind::HandoffOffered(HandoffOffered {
                to_node: "p_ba".into(),
                reason: String::new(),
                ..Default::default()
            }),
        );
        let accept = event(
            20,
            "p_ba",
            0,
            Kind::HandoffAccepted(HandoffAccepted {
                offer_event_id: offer.event_id.clone(),
            }),
        );
        chained([
            created(),
            note(3, "c_a662"),
            offer,
            accept,
            status(30, "p_ba", 1, Status::InProgress),
        ])
    }

    /// An honest history with a decline and a re-offer at one epoch, an
    /// accepted handoff, and notes by every participant between them
    /// (`notes` a note per step, by the author at that index mod 3).
    fn honest_with_reoffer(notes: &[u8]) -> Vec<TicketEvent> {
        let authors = ["c_a662", "p_ba", "c_c426"];
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        let mut out = vec![created()];
        let chat = |out: &mut Vec<TicketEvent>,
                    at: usize,
                    joined: usize,
                    next: &mut dyn FnMut() -> u64| {
            for a in notes.iter().skip(at).take(3) {
                let author = authors[usize::from(*a) % joined];
                out.push(event(
                    next(),
                    author,
                    0,
                    Kind::Note(Note {
                        public: false,
                        text: "n".into(),
                    }),
                ));
            }
        };
        chat(&mut out, 0, 1, &mut next);
        let first = event(
            next(),
            "c_a662",
            0,
            Kind::HandoffOffered(HandoffOffered {
                to_node: "p_ba".into(),
                ..Default::default()
            }),
        );
        let decline = event(
            next(),
            "p_ba",
            0,
            Kind::HandoffDeclined(HandoffDeclined {
                offer_event_id: first.event_id.clone(),
                reason: "no".into(),
            }),
        );
        let decline_id = decline.event_id.clone();
        out.extend([first, decline]);
        chat(&mut out, 3, 2, &mut next);
        let second = event(
            next(),
            "c_a662",
            0,
            Kind::HandoffOffered(HandoffOffered {
                to_node: "c_c426".into(),
                after_decline_event_id: decline_id,
                ..Default::default()
            }),
        );
        let accept = event(
            next(),
            "c_c426",
            0,
            Kind::HandoffAccepted(HandoffAccepted {
                offer_event_id: second.event_id.clone(),
            }),
        );
        out.extend([second, accept]);
        chat(&mut out, 6, 3, &mut next);
        out.push(status(next(), "c_c426", 1, Status::InProgress));
        chat(&mut out, 9, 3, &mut next);
        chained(out)
    }

    #[test]
    fn a_held_predecessor_still_waiting_for_its_own_is_no_backdating() {
        // The author's 2nd event is missing; its 3rd and 4th are held. The
        // 4th names the 3rd, which is held but could not take its place.
        let history = honest_with_reoffer(&[0, 0, 0]);
        let missing = history[2].clone();
        assert_eq!(
            (missing.author_node.as_str(), missing.author_seq),
            ("c_a662", 3)
        );
        let partial: Vec<TicketEvent> =
            history.iter().filter(|e| **e != missing).cloned().collect();
        let ticket = fold(partial).ticket.unwrap();
        assert!(ticket.equivocators.is_empty(), "{:?}", ticket.equivocators);
        let whole = fold(history).ticket.unwrap();
        assert!(whole.equivocators.is_empty());
        assert_eq!(
            (whole.owner_node.as_str(), whole.owner_epoch),
            ("c_c426", 1)
        );
    }

    proptest! {
        /// What a participant holds while events are on their way is any
        /// subset of the history that ingest stores (an offer only with the
        /// decline it names): an honest history never looks, in part, like
        /// equivocation, and quarantine (which is for good) never follows
        /// from a delay.
        #[test]
        fn no_part_of_an_honest_history_names_an_equivocator(
            notes in prop::collection::vec(0u8..3, 12),
            keep in prop::collection::vec(any::<bool>(), 32),
        ) {
            let history = honest_with_reoffer(&notes);
            let whole = fold(history.clone()).ticket.unwrap();
            prop_assert!(whole.equivocators.is_empty());
            prop_assert_eq!(whole.ineffective_event_count, 0);
            let part: Vec<TicketEvent> = history
                .into_iter()
                .zip(keep.iter().chain(std::iter::repeat(&true)))
                .filter(|(_, k)| **k)
                .map(|(e, _)| e)
                .collect();
            let held: HashSet<String> = part.iter().map(|e| e.event_id.clone()).collect();
            let part: Vec<TicketEvent> = part
                .into_iter()
                .filter(|e| match &e.kind {
                    Some(Kind::HandoffOffered(o)) => {
                        o.after_decline_event_id.is_empty()
                            || held.contains(&o.after_decline_event_id)
                    }
                    _ => true,
                })
                .collect();
            if let Some(t) = fold(part).ticket {
                prop_assert!(t.equivocators.is_empty(), "{:?}", t.equivocators);
            }
        }

        #[test]
        fn any_permutation_and_duplication_folds_to_the_same_state(
            events in event_set(),
            seed in any::<u64>(),
            dups in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let reference = fold(events.clone());
            let mut shuffled = events.clone();
            for d in &dups {
                shuffled.push(d.get(&events).clone());
            }
            use rand::{SeedableRng, seq::SliceRandom};
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let again = fold(shuffled);
            prop_assert_eq!(reference, again);
        }

        #[test]
        fn applying_a_later_event_equals_refolding(events in event_set(), last in arbitrary_event()) {
            let mut last = last;
            last.event_id = "01JZZZZZZZZZZZZZZZZZZZZZZZ".into();
            last.hlc = Some(Hlc { wall_ms: 1_800_000_000_000, logical: 0 });
            let mut state = fold(events.clone()).ticket;
            if let Some(t) = &state {
                (last.author_seq, last.prev_hash) = next_in_chain(t, &last.author_node);
            }
            // A node answers only the offer pending in its own state (an
            // answer to another one re-decides a fork: the writer refolds).
            if let Some(Kind::HandoffAccepted(HandoffAccepted { offer_event_id })
                | Kind::HandoffDeclined(HandoffDeclined { offer_event_id, .. })) = &last.kind
            {
                let pending = state.as_ref().and_then(|t| t.pending_handoff.as_ref());
                prop_assume!(pending.is_some_and(|p| p.offer_event_id == *offer_event_id));
            }
            // Nor does an honest author ever sign two events of one number,
            // so no answer pins another event at the new event's number.
            let mut all = events;
            all.push(last.clone());
            let hashes: Vec<Vec<u8>> = all.iter().map(event_hash).collect();
            prop_assume!(!pinned(&all, &hashes).contains_key(&(last.author_node.as_str(), last.author_seq)));
            let effect = apply(&mut state, &last);
            let refolded = fold(all);
            prop_assert_eq!(state, refolded.ticket);
            prop_assert_eq!(&effect, &refolded.log.last().unwrap().1);
        }

        #[test]
        fn no_event_a_non_owner_signs_moves_ownership_without_an_accepted_handoff(
            hostile in prop_oneof![hostile_events("c_a662"), hostile_events("c_c426")],
            chain_last in any::<bool>(),
        ) {
            let honest = honest_handoff();
            let mut all = honest.clone();
            let mut hostile = hostile;
            // Half the time the hostile events continue their author's real
            // chain (as a member that knows its own history would sign them).
            if chain_last {
                let folded = fold(honest.clone()).ticket.unwrap();
                let author = hostile[0].author_node.clone();
                let (mut seq, mut prev) = next_in_chain(&folded, &author);
                for e in hostile.iter_mut().filter(|e| e.author_node == author) {
                    e.author_seq = seq;
                    e.prev_hash = prev.clone();
                    seq += 1;
                    prev = event_hash(e);
                }
            }
            all.extend(hostile);
            let ticket = fold(all).ticket.expect("the origin's Created stands");
            prop_assert_eq!(&ticket.origin_node, "c_a662");
            prop_assert_eq!(&ticket.owner_node, "p_ba");
            prop_assert_eq!(ticket.owner_epoch, 1);
        }
    }

    #[test]
    fn a_created_for_a_ticket_id_minted_by_another_node_has_no_effect() {
        let mut stolen = created();
        stolen.author_node = "c_c426".into();
        stolen.hlc.as_mut().unwrap().wall_ms = 1;
        let folded = fold(chained([created(), stolen]));
        assert_eq!(folded.ticket.unwrap().origin_node, "c_a662");
        assert!(
            matches!(&folded.log[0].1, Effect::Ineffective(r) if r.contains("not minted by c_c426"))
        );
    }

    #[test]
    fn a_former_owner_cannot_backdate_or_fork_its_way_back() {
        let honest = honest_handoff();
        let origin_events: Vec<&TicketEvent> = honest
            .iter()
            .filter(|e| e.author_node == "c_a662")
            .collect();
        let offer = origin_events.last().unwrap();
        // Backdated: the next in its chain, stamped before the offer.
        let mut backdated = event(
            50,
            "c_a662",
            0,
            Kind::HandoffOffered(HandoffOffered {
                to_node: "c_c426".into(),
                reason: String::new(),
                ..Default::default()
            }),
        );
        backdated.hlc.as_mut().unwrap().wall_ms = 1_700_000_000_005;
        backdated.author_seq = offer.author_seq + 1;
        backdated.prev_hash = event_hash(offer);
        let folded = fold(honest.iter().cloned().chain([backdated.clone()]));
        let ticket = folded.ticket.unwrap();
        assert_eq!(ticket.owner_node, "p_ba");
        assert_eq!(ticket.equivocators, ["c_a662"]);
        // A fork: another event with the offer's number and predecessor,
        // stamped before it, closing the ticket.
        let mut fork = status(6, "c_a662", 0, Status::Rejected);
        fork.author_seq = offer.author_seq;
        fork.prev_hash = offer.prev_hash.clone();
        let folded = fold(honest.iter().cloned().chain([fork]));
        let ticket = folded.ticket.unwrap();
        assert_eq!(ticket.owner_node, "p_ba");
        assert_eq!(ticket.status(), Status::InProgress);
        assert_eq!(ticket.equivocators, ["c_a662"]);
    }

    #[test]
    fn a_reused_event_id_of_another_author_is_another_event() {
        let honest = honest_handoff();
        let mut copy = honest[1].clone();
        copy.author_node = "c_c426".into();
        copy.author_seq = 1;
        copy.prev_hash.clear();
        let folded = fold(honest.iter().cloned().chain([copy]));
        assert_eq!(folded.log.len(), honest.len() + 1);
        assert_eq!(folded.ticket.unwrap().note_count, 1);
    }
}
