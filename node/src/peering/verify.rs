//! Checks on every event a peer hands over, before anything is stored
//! (DESIGN.md §2, §3, §10): the envelope's kind, the author's standing and
//! key from the cached member list, the signature over the exact bytes, the
//! author named inside the payload, the shape of the event and the clock
//! rule. Relayed events (authored by a third node) pass the same checks
//! against *their* author's key, so no node can forge another's events.

use ed25519_dalek::VerifyingKey;
use prost::Message as _;
use urpnet_proto::hlc::HybridClock;
use urpnet_proto::ids::{NodeId, TicketId};
use urpnet_proto::signing;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{MemberStatus, PayloadKind, Signed, TicketEvent};

use crate::registry_link::Members;
use crate::store::{Incoming, StoredEvent};

/// Largest encoded event accepted (a Created with ten attachments' metadata
/// and a 10,000-character description is well below it).
pub const MAX_EVENT_BYTES: usize = 128 * 1024;

/// Why an event was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// For good: the sender must drop it.
    Refuse {
        /// Metric label.
        code: &'static str,
        /// In words.
        reason: String,
    },
    /// For now: the sender keeps it and tries again later.
    Retry {
        /// Metric label.
        code: &'static str,
        /// In words.
        reason: String,
        /// Not before this long.
        after_ms: u64,
    },
}

impl Refusal {
    fn refuse(code: &'static str, reason: impl Into<String>) -> Self {
        Refusal::Refuse {
            code,
            reason: reason.into(),
        }
    }
}

/// Verifies one envelope. `index` is its place in the batch.
///
/// # Errors
/// The [`Refusal`] saying which rule it broke.
pub fn envelope(
    index: usize,
    envelope: &Signed,
    members: &Members,
    clock: &HybridClock,
) -> Result<Incoming, Refusal> {
    if envelope.kind != PayloadKind::TicketEvent as i32 {
        return Err(Refusal::refuse(
            "wrong_kind",
            format!(
                "kind must be PAYLOAD_KIND_TICKET_EVENT, found {}",
                envelope.kind
            ),
        ));
    }
    if envelope.payload.len() > MAX_EVENT_BYTES {
        return Err(Refusal::refuse(
            "oversized",
            format!(
                "payload is {} bytes, more than {MAX_EVENT_BYTES}",
                envelope.payload.len()
            ),
        ));
    }
    let Some(member) = members.by_id.get(&envelope.author) else {
        // Perhaps enrolled after our last member list: try again later.
        return Err(Refusal::Retry {
            code: "unknown_author",
            reason: format!(
                "author `{}` is not in this node's member list",
                envelope.author
            ),
            after_ms: 5_000,
        });
    };
    if member.status == MemberStatus::Revoked as i32 {
        return Err(Refusal::refuse(
            "revoked_author",
            format!("author {} is revoked", envelope.author),
        ));
    }
    let key = <[u8; 32]>::try_from(member.signing_key.as_slice())
        .ok()
        .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
        .ok_or_else(|| {
            Refusal::refuse(
                "no_key",
                format!("author {} has no valid signing key", envelope.author),
            )
        })?;
    signing::verify(envelope, PayloadKind::TicketEvent, &key).map_err(|_| {
        Refusal::refuse(
            "bad_signature",
            format!(
                "signature does not verify against {}'s key",
                envelope.author
            ),
        )
    })?;
    let event = TicketEvent::decode(envelope.payload.as_slice())
        .map_err(|e| Refusal::refuse("malformed", format!("payload does not decode: {e}")))?;
    if event.author_node != envelope.author {
        return Err(Refusal::refuse(
            "author_mismatch",
            format!(
                "event {} names author {} but is signed by {}",
                event.event_id, event.author_node, envelope.author
            ),
        ));
    }
    shape(&event).map_err(|reason| Refusal::refuse("malformed", reason))?;
    let stamp = event.hlc.expect("shape checked the stamp");
    if let Err(skew) = clock.observe(&stamp) {
        return Err(Refusal::Retry {
            code: "clock_ahead",
            reason: skew.to_string(),
            after_ms: skew.ahead_ms.saturating_sub(skew.max_offset_ms).max(100),
        });
    }
    Ok(Incoming {
        index,
        stored: StoredEvent {
            event_id: event.event_id.clone(),
            ticket_id: event.ticket_id.clone(),
            hlc_wall: stamp.wall_ms as i64,
            hlc_logical: i64::from(stamp.logical),
            author_node: event.author_node.clone(),
            envelope: envelope.encode_to_vec(),
        },
        event,
    })
}

/// The structural rules every stored event meets: ids, stamp, kind, and the
/// node ids it names. (Authority is the fold's business, not this one's.)
fn shape(event: &TicketEvent) -> Result<(), String> {
    TicketId::parse(&event.event_id).map_err(|e| format!("event_id: {e}"))?;
    TicketId::parse(&event.ticket_id).map_err(|e| format!("ticket_id: {e}"))?;
    let Some(stamp) = event.hlc else {
        return Err(format!("event {}: hlc is required", event.event_id));
    };
    if stamp.wall_ms == 0 || stamp.wall_ms > i64::MAX as u64 {
        return Err(format!(
            "event {}: hlc.wall_ms is out of range",
            event.event_id
        ));
    }
    if event.actor.len() > 64 {
        return Err(format!(
            "event {}: actor is longer than 64 bytes",
            event.event_id
        ));
    }
    let node = |field: &str, id: &str| {
        NodeId::new(id)
            .map(|_| ())
            .map_err(|e| format!("event {}: {field}: {e}", event.event_id))
    };
    match &event.kind {
        None => Err(format!("event {}: kind is required", event.event_id)),
        Some(Kind::HandoffOffered(o)) => node("handoff_offered.to_node", &o.to_node),
        Some(Kind::Shared(s)) => node("shared.with_node", &s.with_node),
        Some(Kind::HandoffAccepted(a)) => TicketId::parse(&a.offer_event_id)
            .map(|_| ())
            .map_err(|e| format!("handoff_accepted.offer_event_id: {e}")),
        Some(Kind::HandoffDeclined(d)) => TicketId::parse(&d.offer_event_id)
            .map(|_| ())
            .map_err(|e| format!("handoff_declined.offer_event_id: {e}")),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use urpnet_proto::signing::NodeSigner;
    use urpnet_proto::v1::{Hlc, Member, Note};

    fn members(signers: &[(&NodeSigner, MemberStatus)]) -> Members {
        Members {
            version: 1,
            by_id: signers
                .iter()
                .map(|(s, status)| {
                    (
                        s.node().to_string(),
                        Member {
                            id: s.node().to_string(),
                            signing_key: s.verifying_key().as_bytes().to_vec(),
                            status: *status as i32,
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        }
    }

    fn note(author: &str, wall_ms: u64) -> TicketEvent {
        TicketEvent {
            event_id: ulid::Ulid::new().to_string(),
            ticket_id: ulid::Ulid::new().to_string(),
            hlc: Some(Hlc {
                wall_ms,
                logical: 0,
            }),
            author_node: author.into(),
            actor: "op".into(),
            owner_epoch: 0,
            kind: Some(Kind::Note(Note {
                public: true,
                text: "ciao".into(),
            })),
        }
    }

    fn code(r: Result<Incoming, Refusal>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(Refusal::Refuse { code, .. } | Refusal::Retry { code, .. }) => code,
        }
    }

    #[test]
    fn every_rule_has_its_refusal() {
        let a = NodeSigner::generate(NodeId::new("c_a515").unwrap());
        let b = NodeSigner::generate(NodeId::new("c_c426").unwrap());
        let r = NodeSigner::generate(NodeId::new("c_h501").unwrap());
        let list = members(&[
            (&a, MemberStatus::Active),
            (&b, MemberStatus::Active),
            (&r, MemberStatus::Revoked),
        ]);
        let clock = HybridClock::new(Duration::from_millis(500));
        let now = urpnet_proto::hlc::system_time_ms();
        let sign =
            |s: &NodeSigner, e: &TicketEvent| s.sign(PayloadKind::TicketEvent, e.encode_to_vec());

        assert_eq!(
            code(envelope(0, &sign(&a, &note("c_a515", now)), &list, &clock)),
            "ok"
        );
        // Relayed by anyone, still verified against the author's key.
        let mut forged = sign(&b, &note("c_a515", now));
        forged.author = "c_a515".into();
        assert_eq!(code(envelope(0, &forged, &list, &clock)), "bad_signature");
        assert_eq!(
            code(envelope(0, &sign(&b, &note("c_a515", now)), &list, &clock)),
            "author_mismatch"
        );
        assert_eq!(
            code(envelope(0, &sign(&r, &note("c_h501", now)), &list, &clock)),
            "revoked_author"
        );
        let stranger = NodeSigner::generate(NodeId::new("c_f205").unwrap());
        assert_eq!(
            code(envelope(
                0,
                &sign(&stranger, &note("c_f205", now)),
                &list,
                &clock
            )),
            "unknown_author"
        );
        assert_eq!(
            code(envelope(
                0,
                &sign(&a, &note("c_a515", now + 60_000)),
                &list,
                &clock
            )),
            "clock_ahead"
        );
        let mut wrong_kind = sign(&a, &note("c_a515", now));
        wrong_kind.kind = PayloadKind::FaqVersion as i32;
        assert_eq!(code(envelope(0, &wrong_kind, &list, &clock)), "wrong_kind");
        let mut bad_id = note("c_a515", now);
        bad_id.event_id = "x".into();
        assert_eq!(
            code(envelope(0, &sign(&a, &bad_id), &list, &clock)),
            "malformed"
        );
        let garbage = a.sign(PayloadKind::TicketEvent, vec![0xff; 16]);
        assert_eq!(code(envelope(0, &garbage, &list, &clock)), "malformed");
        let big = a.sign(PayloadKind::TicketEvent, vec![0; MAX_EVENT_BYTES + 1]);
        assert_eq!(code(envelope(0, &big, &list, &clock)), "oversized");
    }
}
