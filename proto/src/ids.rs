//! Identifiers, validated on construction so that an unchecked string never
//! reaches the domain.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub &'static str);

/// A node's id: the public body's IPA code, lowercase (`c_a662` is the Comune
/// di Bari). Pattern `^[a-z0-9_]{2,32}$` (DESIGN.md §2).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// The rule a node id must follow, as reported to callers.
    pub const RULE: &'static str = "must match ^[a-z0-9_]{2,32}$ (the body's IPA code, lowercase)";

    /// Parses a node id.
    ///
    /// # Errors
    /// When `s` does not match [`NodeId::RULE`].
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let ok = (2..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(s))
        } else {
            Err(IdError(Self::RULE))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl FromStr for NodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub ulid::Ulid);

        impl $name {
            /// The rule the string form follows, as reported to callers.
            pub const RULE: &'static str = "must be a ULID (26 characters of Crockford base32)";

            /// Mints a new id from the current time and randomness.
            pub fn generate() -> Self {
                Self(ulid::Ulid::new())
            }

            /// Parses the canonical 26-character form (case-insensitive).
            ///
            /// # Errors
            /// When `s` is not a ULID.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if s.len() != 26 {
                    return Err(IdError(Self::RULE));
                }
                ulid::Ulid::from_string(s).map(Self).map_err(|_| IdError(Self::RULE))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

ulid_id!(
    /// A ticket's id: a ULID minted by the origin node, bound to it (see
    /// [`TicketId::mint`]).
    TicketId
);

impl TicketId {
    /// Mints a ticket id bound to `origin`: the ULID's 80 random bits are
    /// 40 random bits and the first 40 bits of
    /// SHA-256(`urpnet-ticket-id` ‖ origin ‖ time ‖ random). Anyone can
    /// check the binding ([`TicketId::is_bound_to`]); no other node can sign a
    /// `Created` for this id that the fold accepts, since finding another
    /// node id with the same 40-bit tag is a 2^40 search per try, and a
    /// member has one node id.
    pub fn mint(origin: &NodeId) -> Self {
        let ms = ulid::Ulid::new().timestamp_ms();
        let nonce: u64 = rand::random::<u64>() & 0xff_ffff_ffff;
        Self::with_parts(origin.as_str(), ms, nonce)
    }

    /// Mints a ticket id bound to `origin` from a given time and nonce (40
    /// bits used): for simulations that must replay exactly.
    pub fn mint_at(origin: &NodeId, ms: u64, nonce: u64) -> Self {
        Self::with_parts(origin.as_str(), ms, nonce & 0xff_ffff_ffff)
    }

    fn with_parts(origin: &str, ms: u64, nonce: u64) -> Self {
        let tag = binding_tag(origin, ms, nonce);
        Self(ulid::Ulid::from_parts(
            ms,
            (u128::from(nonce) << 40) | u128::from(tag),
        ))
    }

    /// Whether this id was minted by [`TicketId::mint`] for `origin`.
    pub fn is_bound_to(&self, origin: &str) -> bool {
        let random = self.0.random();
        let nonce = (random >> 40) as u64;
        let tag = (random & 0xff_ffff_ffff) as u64;
        binding_tag(origin, self.0.timestamp_ms(), nonce) == tag
    }
}

/// The 40-bit tag binding a ticket id to its origin.
fn binding_tag(origin: &str, ms: u64, nonce: u64) -> u64 {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(b"urpnet-ticket-id\0");
    h.update(origin.as_bytes());
    h.update(b"\0");
    h.update(ms.to_be_bytes());
    h.update(nonce.to_be_bytes());
    let d = h.finalize();
    u64::from_be_bytes([0, 0, 0, d[0], d[1], d[2], d[3], d[4]])
}
ulid_id!(
    /// An event's id: a ULID minted by its author; events apply idempotently by it.
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_follow_the_ipa_pattern() {
        assert!(NodeId::new("c_a662").is_ok());
        assert!(NodeId::new("r_puglia").is_ok());
        assert!(NodeId::new("C_A662").is_err());
        assert!(NodeId::new("c").is_err());
        assert!(NodeId::new("c-a662").is_err());
        assert!(NodeId::new("x".repeat(33)).is_err());
    }

    #[test]
    fn a_minted_ticket_id_is_bound_to_its_origin_only() {
        let celano = NodeId::new("c_c426").unwrap();
        let id = TicketId::mint(&celano);
        assert!(id.is_bound_to("c_c426"));
        assert!(!id.is_bound_to("c_a515"));
        assert!(!id.is_bound_to("c_c42"));
        let parsed = TicketId::parse(&id.to_string()).unwrap();
        assert!(parsed.is_bound_to("c_c426"));
        // A plain ULID is bound to nobody (but one time in 2^40).
        assert!(!TicketId::generate().is_bound_to("c_c426"));
        // Two mints differ.
        assert_ne!(TicketId::mint(&celano), id);
    }

    #[test]
    fn ulids_round_trip_and_reject_garbage() {
        let id = TicketId::generate();
        assert_eq!(TicketId::parse(&id.to_string()).unwrap(), id);
        assert!(TicketId::parse("not-a-ulid").is_err());
        assert!(TicketId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAVX").is_err());
        assert!(TicketId::parse("UUUUUUUUUUUUUUUUUUUUUUUUUU").is_err());
    }
}
