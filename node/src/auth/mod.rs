//! Desk authentication and roles (DESIGN.md §9).
//!
//! The Desk is never anonymous. Each caller presents a bearer token created by
//! `urpnet-node operator add`; the node stores only the token's sha256. The
//! operator's id (a ULID, not a name) is recorded as the actor of every event
//! it causes, so the history is an audit trail that identifies nobody outside
//! this node.

pub mod tables;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::error::{NodeError, NodeResult};
use crate::store::Store;
pub use tables::OperatorRecord;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read tickets and history (no citizens' contacts).
    ReadOnly,
    /// A front-office integration: read, create, add public notes.
    Integration,
    /// An operator: also internal notes, status changes and assignment.
    Operator,
    /// A supervisor: everything.
    Supervisor,
}

impl Role {
    /// Every role, for help texts.
    pub const NAMES: &'static str = "read_only, integration, operator, supervisor";

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::ReadOnly => "read_only",
            Role::Integration => "integration",
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read_only" => Ok(Role::ReadOnly),
            "integration" => Ok(Role::Integration),
            "operator" => Ok(Role::Operator),
            "supervisor" => Ok(Role::Supervisor),
            other => Err(format!("unknown role `{other}` (one of {})", Role::NAMES)),
        }
    }
}

/// Something a caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read tickets, lists, history, attachments.
    Read,
    /// See a citizen's contact.
    ReadContact,
    /// Open a ticket.
    Create,
    /// Add a public note.
    PublicNote,
    /// Add an internal note.
    InternalNote,
    /// Change status or merge.
    ChangeStatus,
    /// Assign to an office.
    Assign,
    /// Offer, accept, decline or share a ticket with another body.
    Handoff,
    /// Quarantine or release a peer.
    Quarantine,
    /// Propose a change to another body's FAQ entry.
    ProposeFaq,
    /// Publish, revise, retire or override FAQ entries.
    PublishFaq,
    /// Import or withdraw this body's service charter.
    PublishCharter,
    /// Run an archive round now.
    SyncArchive,
}

impl Action {
    fn min_role(self) -> Role {
        match self {
            Action::Read => Role::ReadOnly,
            Action::Create | Action::PublicNote => Role::Integration,
            // A citizen's contact is for the body's operators: an
            // integration (a civic app, a chatbot, the Open311 key) never
            // reads one back, whoever entered it (docs/security.md, API3).
            Action::ReadContact
            | Action::InternalNote
            | Action::ChangeStatus
            | Action::Assign
            | Action::Handoff
            | Action::ProposeFaq => Role::Operator,
            Action::Quarantine
            | Action::PublishFaq
            | Action::PublishCharter
            | Action::SyncArchive => Role::Supervisor,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Pseudonymous operator id, recorded in events.
    pub id: String,
    /// Name, for this node's operators only.
    pub name: String,
    /// Role.
    pub role: Role,
}

impl Actor {
    /// Checks the actor's role allows `action`.
    ///
    /// # Errors
    /// `PermissionDenied` naming the role needed.
    pub fn require(&self, action: Action) -> NodeResult<()> {
        if self.role >= action.min_role() {
            Ok(())
        } else {
            Err(NodeError::PermissionDenied(format!(
                "role {} may not {action:?}; {} or higher is needed",
                self.role.name(),
                action.min_role().name()
            )))
        }
    }
}

/// A new token: `urpnet_` and 48 hex digits of randomness.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("urpnet_{}", hex::encode(bytes))
}

/// The hash under which a token is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates an operator and returns its token (shown once, never stored).
///
/// # Errors
/// `InvalidArgument` for a bad name, `AlreadyExists`, storage failures.
pub async fn add_operator(
    store: &Store,
    name: &str,
    role: Role,
    now_ms: i64,
) -> NodeResult<(OperatorRecord, String)> {
    let valid = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !valid {
        return Err(NodeError::invalid(
            "name",
            "must be 1..=64 characters of letters, digits, . _ - @",
        ));
    }
    let token = generate_token();
    let record = OperatorRecord {
        id: ulid::Ulid::new().to_string(),
        name: name.to_string(),
        role: role.name().to_string(),
        created_ms: now_ms,
        revoked_ms: None,
    };
    crate::auth::tables::add(store, &record, &token_hash(&token)).await?;
    Ok((record, token))
}

/// How long a looked-up token is trusted before the store is asked again:
/// a revocation takes effect within this time.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// Resolves bearer tokens to actors, with a short cache.
#[derive(Debug)]
pub struct Authenticator {
    store: Store,
    cache: Mutex<HashMap<String, (Instant, Option<Actor>)>>,
    /// Each token's rate, checked once it is known to be valid.
    limits: Option<urpnet_proto::limits::PerIdentity>,
}

impl Authenticator {
    /// An authenticator over the store's operators.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
            limits: None,
        }
    }

    /// The same, with a rate limit per token (`[desk] rate_per_second`).
    pub fn with_limits(mut self, limits: urpnet_proto::limits::PerIdentity) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The actor of a gRPC request, from its `authorization` header.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for a missing, unknown or revoked token.
    pub async fn actor_of<T>(&self, request: &tonic::Request<T>) -> Result<Actor, tonic::Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        Ok(self.authenticate(header).await?)
    }

    /// The actor holding `authorization` (`Bearer <token>`).
    ///
    /// # Errors
    /// `Unauthenticated` for a missing, malformed, unknown or revoked token.
    pub async fn authenticate(&self, authorization: Option<&str>) -> NodeResult<Actor> {
        let actor = self.resolve(authorization).await?;
        if let Some(limits) = &self.limits {
            limits
                .check(&actor.id)
                .map_err(|wait| NodeError::rate_limited(&actor.id, wait))?;
        }
        Ok(actor)
    }

    /// The actor holding `authorization`, without taking from its rate (for
    /// re-checking a token that holds a stream open).
    ///
    /// # Errors
    /// As [`Authenticator::authenticate`].
    pub async fn resolve(&self, authorization: Option<&str>) -> NodeResult<Actor> {
        let Some(header) = authorization else {
            return Err(NodeError::Unauthenticated(
                "missing `authorization: Bearer <token>` (create a token with `urpnet-node operator add`)".into(),
            ));
        };
        let Some(token) = header.strip_prefix("Bearer ").map(str::trim) else {
            return Err(NodeError::Unauthenticated(
                "authorization must be `Bearer <token>`".into(),
            ));
        };
        let hash = token_hash(token);
        let cached = {
            let cache = self.cache.lock().expect("auth cache lock");
            cache
                .get(&hash)
                .filter(|(at, _)| at.elapsed() < CACHE_TTL)
                .map(|(_, a)| a.clone())
        };
        let actor = match cached {
            Some(actor) => actor,
            None => {
                let record = crate::auth::tables::by_token(&self.store, &hash).await?;
                let actor = record.filter(|r| r.revoked_ms.is_none()).and_then(|r| {
                    Some(Actor {
                        role: r.role.parse().ok()?,
                        id: r.id,
                        name: r.name,
                    })
                });
                let mut cache = self.cache.lock().expect("auth cache lock");
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(hash, (Instant::now(), actor.clone()));
                actor
            }
        };
        actor.ok_or_else(|| NodeError::Unauthenticated("unknown or revoked token".into()))
    }
}
