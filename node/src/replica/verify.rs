//! Checks on every shared version a peer hands over, before anything is
//! stored (DESIGN.md §2, §5, §10, §12), the same for every kind: the
//! envelope's kind and size, the author known, not revoked and with a key,
//! the signature over the exact bytes (batch verified), then the payload:
//! it decodes, its owner is the signer (only the owner publishes versions;
//! a relayed version is still signed by its owner), it follows every rule
//! of its kind, and its stamp is not too far ahead of this node's clock.

use prost::Message as _;
use urpnet_proto::hlc::HybridClock;
use urpnet_proto::v1::Signed;
use urpnet_shared_faq::Stamp;

use super::{Kind, stamp_of};
use crate::peering::verify::{Refusal, signed};
use crate::registry_link::Members;

/// Verifies a batch; one result per envelope, in order.
pub fn versions<K: Kind>(
    envelopes: &[Signed],
    members: &Members,
    clock: &HybridClock,
) -> Vec<Result<(K::Version, Stamp), Refusal>> {
    signed(envelopes, members, K::PAYLOAD, K::MAX_BYTES)
        .into_iter()
        .zip(envelopes)
        .map(|(checked, envelope)| checked.and_then(|()| finish::<K>(envelope, clock)))
        .collect()
}

fn refuse(code: &'static str, reason: String) -> Refusal {
    Refusal::Refuse { code, reason }
}

fn finish<K: Kind>(envelope: &Signed, clock: &HybridClock) -> Result<(K::Version, Stamp), Refusal> {
    let version = K::Version::decode(envelope.payload.as_slice())
        .map_err(|e| refuse("malformed", format!("payload does not decode: {e}")))?;
    let h = K::header(&version);
    if h.owner != envelope.author {
        return Err(refuse(
            "not_owner",
            format!(
                "{} {}/{} is owned by {} but this version is signed by {}: only the owner publishes versions",
                K::NAME,
                h.owner,
                h.entry_id,
                h.owner,
                envelope.author
            ),
        ));
    }
    K::validate(&version)
        .map_err(|v| refuse("malformed", format!("{}/{}: {v}", h.owner, h.entry_id)))?;
    let stamp = h.published_at.expect("validated");
    if let Err(skew) = clock.observe(stamp) {
        return Err(crate::peering::verify::clock_ahead(h.owner, &skew));
    }
    let s = stamp_of::<K>(&version, &envelope.payload);
    Ok((version, s))
}
