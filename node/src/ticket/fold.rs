//! The ticket fold (DESIGN.md §3): a ticket's state is a deterministic
//! function of its *set* of events.
//!
//! Events are deduplicated by id and ordered by (HLC, author, event id); each
//! is then applied in turn by [`apply`], which checks the authority rules. An
//! event that breaks a rule is kept in the log but has no effect, and the
//! reason is reported in the fold's [`Effect`]s. So any two nodes holding the
//! same events hold the same state, whatever the order or number of
//! deliveries — the property tests at the bottom check exactly this.

use std::cmp::Ordering;

use prost::Message as _;
use prost_types::Timestamp;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{PendingHandoff, Status, Ticket, TicketEvent};

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

/// Folds a set of events (any order, duplicates allowed) into a ticket.
pub fn fold(events: impl IntoIterator<Item = TicketEvent>) -> Folded {
    let mut events: Vec<TicketEvent> = events.into_iter().collect();
    events.sort_by(fold_order);
    events.dedup_by(|later, earlier| later.event_id == earlier.event_id);
    let mut ticket = None;
    let mut log = Vec::with_capacity(events.len());
    for event in events {
        let effect = apply(&mut ticket, &event);
        log.push((event, effect));
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
/// than everything it holds); otherwise re-fold the whole set with [`fold`].
pub fn apply(state: &mut Option<Ticket>, event: &TicketEvent) -> Effect {
    let wall_ms = event.hlc.map(|h| h.wall_ms).unwrap_or_default();
    let Some(ticket) = state else {
        return match &event.kind {
            Some(Kind::Created(created)) => {
                *state = Some(created_ticket(event, created, wall_ms));
                Effect::Applied
            }
            _ => Effect::Ineffective("the ticket has no Created event before this one".into()),
        };
    };
    ticket.event_count += 1;
    match check_and_apply(ticket, event) {
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
            ticket.handoff_count += 1;
            ticket.office.clear();
            if !lifecycle::is_terminal(ticket.status()) {
                ticket.status = Status::New as i32;
            }
            Ok(())
        }
        Some(Kind::HandoffDeclined(answer)) => {
            answer_pending(ticket, event, &answer.offer_event_id)?;
            Ok(())
        }
        Some(Kind::CitizenNotified(_)) => require_participant(ticket, event),
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

    const TICKET: &str = "01JD0000000000000000000000";

    fn event(n: u64, author: &str, epoch: u64, kind: Kind) -> TicketEvent {
        TicketEvent {
            event_id: format!("01JD{n:022}"),
            ticket_id: TICKET.into(),
            hlc: Some(Hlc {
                wall_ms: 1_700_000_000_000 + n,
                logical: 0,
            }),
            author_node: author.into(),
            actor: "op-1".into(),
            owner_epoch: epoch,
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
        let folded = fold([created(), status(1, "c_a662", 0, Status::Closed)]);
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
        let folded = fold([
            created(),
            status(1, "c_c426", 0, Status::InProgress),
            status(2, "c_a662", 3, Status::InProgress),
        ]);
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
        let folded = fold([created(), offer.clone(), wrong_accept]);
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
        let folded = fold([created(), offer, accept, stale, fresh]);
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
            }),
        );
        let b = event(
            2,
            "c_a662",
            0,
            Kind::HandoffOffered(HandoffOffered {
                to_node: "r_puglia".into(),
                reason: String::new(),
            }),
        );
        let ticket = fold([created(), a.clone(), b]).ticket.unwrap();
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
            }),
        );
        let ticket = fold([created(), a, decline, c]).ticket.unwrap();
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
        let ticket = fold([created(), merged, after]).ticket.unwrap();
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
        prop::collection::vec(arbitrary_event(), 0..30).prop_map(|mut events| {
            events.push(created());
            events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
            events.dedup_by(|a, b| a.event_id == b.event_id);
            events
        })
    }

    proptest! {
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
            let effect = apply(&mut state, &last);
            let mut all = events;
            all.push(last);
            let refolded = fold(all);
            prop_assert_eq!(state, refolded.ticket);
            prop_assert_eq!(&effect, &refolded.log.last().unwrap().1);
        }
    }
}
