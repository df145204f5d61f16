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
    /// A ticket's id: a ULID minted by the origin node.
    TicketId
);
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
    fn ulids_round_trip_and_reject_garbage() {
        let id = TicketId::generate();
        assert_eq!(TicketId::parse(&id.to_string()).unwrap(), id);
        assert!(TicketId::parse("not-a-ulid").is_err());
        assert!(TicketId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAVX").is_err());
        assert!(TicketId::parse("UUUUUUUUUUUUUUUUUUUUUUUUUU").is_err());
    }
}
