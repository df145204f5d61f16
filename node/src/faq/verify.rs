//! Checks on every FAQ version a peer hands over, before anything is stored
//! (DESIGN.md §2, §5, §10): the envelope's kind and size, the author known,
//! not revoked and with a key, the signature over the exact bytes (batch
//! verified), then the payload: it decodes, its owner is the signer (only
//! the owner publishes versions; a relayed version is still signed by its
//! owner), every field follows the rules of `faq.proto`, and its stamp is
//! not too far ahead of this node's clock.

use prost::Message as _;
use urpnet_proto::hlc::HybridClock;
use urpnet_proto::v1::{FaqVersion, PayloadKind, Signed};
use urpnet_shared_faq::{Stamp, model};

use crate::peering::verify::{Refusal, signed};
use crate::registry_link::Members;

/// Verifies a batch; one result per envelope, in order.
pub fn versions(
    envelopes: &[Signed],
    members: &Members,
    clock: &HybridClock,
) -> Vec<Result<(FaqVersion, Stamp), Refusal>> {
    signed(
        envelopes,
        members,
        PayloadKind::FaqVersion,
        model::MAX_VERSION_BYTES,
    )
    .into_iter()
    .zip(envelopes)
    .map(|(checked, envelope)| checked.and_then(|()| finish(envelope, clock)))
    .collect()
}

fn refuse(code: &'static str, reason: String) -> Refusal {
    Refusal::Refuse { code, reason }
}

fn finish(envelope: &Signed, clock: &HybridClock) -> Result<(FaqVersion, Stamp), Refusal> {
    let version = FaqVersion::decode(envelope.payload.as_slice())
        .map_err(|e| refuse("malformed", format!("payload does not decode: {e}")))?;
    if version.owner != envelope.author {
        return Err(refuse(
            "not_owner",
            format!(
                "entry {}/{} is owned by {} but this version is signed by {}: only the owner publishes versions",
                version.owner, version.entry_id, version.owner, envelope.author
            ),
        ));
    }
    model::validate_version(&version).map_err(|v| {
        refuse(
            "malformed",
            format!("{}/{}: {v}", version.owner, version.entry_id),
        )
    })?;
    let stamp = version.published_at.expect("validated");
    if let Err(skew) = clock.observe(&stamp) {
        return Err(Refusal::Retry {
            code: "clock_ahead",
            reason: skew.to_string(),
            after_ms: skew.ahead_ms.saturating_sub(skew.max_offset_ms).max(100),
        });
    }
    let s = Stamp::of(&version, &envelope.payload);
    Ok((version, s))
}
