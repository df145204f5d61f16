//! Checks on every event a peer hands over, before anything is stored
//! (DESIGN.md §2, §3, §10): the envelope's kind, the author's standing and
//! key from the cached member list, the signature over the exact bytes, the
//! author named inside the payload, the shape of the event and the clock
//! rule. Relayed events (authored by a third node) pass the same checks
//! against *their* author's key, so no node can forge another's events.

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message as _;
use urpnet_proto::hlc::HybridClock;
use urpnet_proto::ids::{NodeId, TicketId};
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{Created, MemberStatus, PayloadKind, Signed, TicketEvent};

use super::ingest::Incoming;
use crate::registry_link::{Members, signing_key};
use crate::shared_ticket::tables::StoredEvent;

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
    let mut out = batch(std::slice::from_ref(envelope), members, clock);
    let mut one = out.pop().expect("one result per envelope");
    if let Ok(incoming) = &mut one {
        incoming.index = index;
    }
    one
}

/// Verifies a batch of envelopes; one result per envelope, in order (the
/// `index` of each is its position). Signatures are checked with ed25519
/// batch verification, spread over the machine's cores; a batch that fails
/// is checked one signature at a time, so a bad one refuses only itself.
pub fn batch(
    envelopes: &[Signed],
    members: &Members,
    clock: &HybridClock,
) -> Vec<Result<Incoming, Refusal>> {
    signed(
        envelopes,
        members,
        PayloadKind::TicketEvent,
        MAX_EVENT_BYTES,
    )
    .into_iter()
    .zip(envelopes)
    .enumerate()
    .map(|(index, (checked, envelope))| checked.and_then(|()| finish(index, envelope, clock)))
    .collect()
}

/// The checks every signed record passes, whatever it carries (ticket
/// events, FAQ versions): its kind, its size, its author known, not revoked
/// and with a key, and the signature over the exact payload bytes. One
/// result per envelope, in order.
pub fn signed(
    envelopes: &[Signed],
    members: &Members,
    kind: PayloadKind,
    max_bytes: usize,
) -> Vec<Result<(), Refusal>> {
    // Decompressing a public key costs as much as half a verification:
    // once per author and batch.
    let mut keys = std::collections::HashMap::new();
    let mut results: Vec<Result<(VerifyingKey, Signature), Refusal>> = envelopes
        .iter()
        .map(|e| precheck(e, members, &mut keys, kind, max_bytes))
        .collect();
    // Threads pay off only for big batches (a live handoff is one or two
    // events; a catch-up batch is a thousand).
    let threads = if envelopes.len() < 64 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let candidates: Vec<usize> = (0..envelopes.len())
        .filter(|i| results[*i].is_ok())
        .collect();
    let chunk = candidates.len().div_ceil(threads).max(16);
    let bad: Vec<usize> = if threads == 1 {
        signatures(&candidates, envelopes, &results)
    } else {
        std::thread::scope(|scope| {
            let results = &results;
            let handles: Vec<_> = candidates
                .chunks(chunk)
                .map(|part| scope.spawn(move || signatures(part, envelopes, results)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("verification thread"))
                .collect()
        })
    };
    for i in bad {
        results[i] = Err(Refusal::refuse(
            "bad_signature",
            format!(
                "signature does not verify against {}'s key",
                envelopes[i].author
            ),
        ));
    }
    results.into_iter().map(|r| r.map(|_| ())).collect()
}

/// Checks the signatures of `part` (indexes into `envelopes`): all at once,
/// then one by one if that fails. Returns the indexes that do not verify.
fn signatures(
    part: &[usize],
    envelopes: &[Signed],
    checked: &[Result<(VerifyingKey, Signature), Refusal>],
) -> Vec<usize> {
    let keyed = |i: &usize| {
        checked[*i]
            .as_ref()
            .expect("candidates passed the precheck")
    };
    let one_by_one = || -> Vec<usize> {
        part.iter()
            .copied()
            .filter(|i| {
                let (key, sig) = keyed(i);
                key.verify_strict(&envelopes[*i].payload, sig).is_err()
            })
            .collect()
    };
    // Batch verification has a fixed cost that a handful does not repay.
    if part.len() < 8 {
        return one_by_one();
    }
    let messages: Vec<&[u8]> = part
        .iter()
        .map(|i| envelopes[*i].payload.as_slice())
        .collect();
    let sigs: Vec<Signature> = part.iter().map(|i| keyed(i).1).collect();
    let keys: Vec<VerifyingKey> = part.iter().map(|i| keyed(i).0).collect();
    if ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok() {
        return Vec::new();
    }
    one_by_one()
}

/// Everything that can be checked before the signature.
fn precheck(
    envelope: &Signed,
    members: &Members,
    keys: &mut std::collections::HashMap<String, Option<VerifyingKey>>,
    kind: PayloadKind,
    max_bytes: usize,
) -> Result<(VerifyingKey, Signature), Refusal> {
    if envelope.kind != kind as i32 {
        return Err(Refusal::refuse(
            "wrong_kind",
            format!(
                "kind must be {}, found {}",
                kind.as_str_name(),
                envelope.kind
            ),
        ));
    }
    if envelope.payload.len() > max_bytes {
        return Err(Refusal::refuse(
            "oversized",
            format!(
                "payload is {} bytes, more than {max_bytes}",
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
    let key = keys
        .entry(envelope.author.clone())
        .or_insert_with(|| signing_key(member))
        .ok_or_else(|| {
            Refusal::refuse(
                "no_key",
                format!("author {} has no valid signing key", envelope.author),
            )
        })?;
    let signature = Signature::from_slice(&envelope.signature).map_err(|_| {
        Refusal::refuse(
            "bad_signature",
            format!("signature of {} is not 64 bytes", envelope.author),
        )
    })?;
    // Batch verification accepts what strict verification refuses when R
    // has small order; refusing those first makes a batch's verdict the
    // same as `verify_strict`'s, so every node accepts the same envelopes.
    if small_order_r(&signature) {
        return Err(Refusal::refuse(
            "bad_signature",
            format!("signature of {} has a small-order R", envelope.author),
        ));
    }
    Ok((key, signature))
}

/// Whether a signature's R point is of small order (or not a point at all).
fn small_order_r(signature: &Signature) -> bool {
    curve25519_dalek::edwards::CompressedEdwardsY(signature.r_bytes().to_owned())
        .decompress()
        .is_none_or(|r| r.is_small_order())
}

/// Everything checked after the signature: the payload itself.
fn finish(index: usize, envelope: &Signed, clock: &HybridClock) -> Result<Incoming, Refusal> {
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
    if matches!(event.kind, Some(Kind::Created(_)))
        && !TicketId::parse(&event.ticket_id).is_ok_and(|t| t.is_bound_to(&event.author_node))
    {
        // Only the node that minted a ticket id can open that ticket.
        return Err(Refusal::refuse(
            "not_origin",
            format!(
                "ticket {}: the id was not minted by {}, so it cannot create it",
                event.ticket_id, event.author_node
            ),
        ));
    }
    shape(&event).map_err(|reason| Refusal::refuse("malformed", reason))?;
    let stamp = event.hlc.expect("shape checked the stamp");
    if let Err(skew) = clock.check(&stamp) {
        return Err(clock_ahead(&event.author_node, &skew));
    }
    Ok(Incoming {
        index,
        stored: StoredEvent::of(&event, envelope),
        event,
    })
}

/// A stamp too far ahead: kept by the sender and retried once this node's
/// clock is within the offset (so nothing is lost), the author's lead shown
/// in `urpnet_peer_clock_ahead_seconds{peer}`.
pub fn clock_ahead(author: &str, skew: &urpnet_proto::hlc::ClockSkew) -> Refusal {
    metrics::gauge!("urpnet_peer_clock_ahead_seconds", "peer" => author.to_string())
        .set(skew.ahead_ms as f64 / 1000.0);
    Refusal::Retry {
        code: "clock_ahead",
        reason: format!("{author}'s clock runs ahead of this node's: {skew}"),
        after_ms: skew.ahead_ms.saturating_sub(skew.max_offset_ms).max(100),
    }
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
    if event.author_seq == 0 {
        return Err(format!(
            "event {}: author_seq must be at least 1",
            event.event_id
        ));
    }
    if !(event.prev_hash.is_empty() || event.prev_hash.len() == 32) {
        return Err(format!(
            "event {}: prev_hash must be empty or 32 bytes",
            event.event_id
        ));
    }
    match &event.kind {
        None => Err(format!("event {}: kind is required", event.event_id)),
        Some(Kind::Created(created)) => created_shape(event, created),
        Some(Kind::HandoffOffered(o)) => {
            node("handoff_offered.to_node", &o.to_node)?;
            if o.after_decline_event_id.is_empty() {
                return Ok(());
            }
            TicketId::parse(&o.after_decline_event_id)
                .map(|_| ())
                .map_err(|e| format!("handoff_offered.after_decline_event_id: {e}"))
        }
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

/// A `Created` from a peer: the ticket id minted by its author, the
/// reference in the author's series, and the fields a desk would refuse.
fn created_shape(event: &TicketEvent, created: &Created) -> Result<(), String> {
    let author = &event.author_node;
    if event.author_seq != 1 || !event.prev_hash.is_empty() {
        return Err(format!(
            "event {}: a Created event must be its author's first (author_seq 1, no prev_hash)",
            event.event_id
        ));
    }
    let in_series = created
        .reference
        .strip_prefix(author.as_str())
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.split_once('-'))
        .filter(|(year, seq)| {
            year.len() == 4
                && year.bytes().all(|b| b.is_ascii_digit())
                && !seq.is_empty()
                && seq.len() <= 12
                && seq.bytes().all(|b| b.is_ascii_digit())
        });
    if in_series.is_none() {
        return Err(format!(
            "created.reference: `{}` is not in {author}'s series (<node>-<year>-<number>)",
            created.reference
        ));
    }
    let mut v = urpnet_proto::validate::Violations::new();
    crate::validate::created_from_peer(&mut v, created);
    v.into_result()
        .map_err(|e| format!("event {}: {e}", event.event_id))
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
            author_seq: 2,
            prev_hash: vec![7; 32],
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
        // A Created for an id another node minted, or outside its author's
        // reference series, or not first in its author's chain.
        let created = |ticket: String, reference: &str, seq: u64| {
            let mut e = note("c_a515", now);
            e.ticket_id = ticket;
            e.author_seq = seq;
            e.prev_hash = Vec::new();
            e.kind = Some(Kind::Created(Created {
                reference: reference.into(),
                category: "rifiuti".into(),
                channel: 1,
                subject: "Cassonetto".into(),
                location: Some(urpnet_proto::v1::Location {
                    istat_code: "066032".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }));
            sign(&a, &e)
        };
        let mine = || TicketId::mint(&NodeId::new("c_a515").unwrap()).to_string();
        let theirs = TicketId::mint(&NodeId::new("c_c426").unwrap()).to_string();
        assert_eq!(
            code(envelope(
                0,
                &created(mine(), "c_a515-2026-000001", 1),
                &list,
                &clock
            )),
            "ok"
        );
        assert_eq!(
            code(envelope(
                0,
                &created(theirs, "c_a515-2026-000001", 1),
                &list,
                &clock
            )),
            "not_origin"
        );
        for (reference, seq) in [
            ("c_c426-2026-000001", 1),
            ("c_a515-26-1", 1),
            ("c_a515-2026-", 1),
            ("c_a515-2026-000001", 2),
        ] {
            assert_eq!(
                code(envelope(0, &created(mine(), reference, seq), &list, &clock)),
                "malformed",
                "{reference} {seq}"
            );
        }
        // R of small order (the identity point) never verifies, batch or not.
        let mut small_r = sign(&a, &note("c_a515", now));
        small_r.signature = [vec![1], vec![0; 63]].concat();
        assert_eq!(code(envelope(0, &small_r, &list, &clock)), "bad_signature");
        let mut unnumbered = note("c_a515", now);
        unnumbered.author_seq = 0;
        assert_eq!(
            code(envelope(0, &sign(&a, &unnumbered), &list, &clock)),
            "malformed"
        );
        let big = a.sign(PayloadKind::TicketEvent, vec![0; MAX_EVENT_BYTES + 1]);
        assert_eq!(code(envelope(0, &big, &list, &clock)), "oversized");
    }

    #[test]
    fn one_bad_signature_in_a_batch_refuses_only_itself() {
        let a = NodeSigner::generate(NodeId::new("c_a515").unwrap());
        let b = NodeSigner::generate(NodeId::new("c_c426").unwrap());
        let list = members(&[(&a, MemberStatus::Active), (&b, MemberStatus::Active)]);
        let clock = HybridClock::new(Duration::from_millis(500));
        let now = urpnet_proto::hlc::system_time_ms();
        let mut envelopes: Vec<Signed> = (0..300)
            .map(|i| {
                let s = if i % 2 == 0 { &a } else { &b };
                s.sign(
                    PayloadKind::TicketEvent,
                    note(s.node().as_str(), now).encode_to_vec(),
                )
            })
            .collect();
        envelopes[137].signature[3] ^= 1;
        envelopes[251].author = "c_a515".into(); // signed by b
        let results = batch(&envelopes, &list, &clock);
        for (i, r) in results.iter().enumerate() {
            match i {
                137 | 251 => assert!(
                    matches!(
                        r,
                        Err(Refusal::Refuse {
                            code: "bad_signature",
                            ..
                        })
                    ),
                    "{i}: {r:?}"
                ),
                _ => assert_eq!(r.as_ref().map(|ok| ok.index), Ok(i)),
            }
        }
    }
}
