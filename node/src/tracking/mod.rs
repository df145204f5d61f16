//! Tracking keys (DESIGN.md §11): the citizen follows a ticket by its
//! reference and a key given at creation, without an account.
//!
//! The key is 128 bits, HMAC-SHA256 under the node's tracking secret
//! (`data_dir/tracking.secret`, never sent) of the create's request key, so a retried create (the same request key) gives the citizen
//! the same key again although only its sha256 is stored ([`tables`]).
//! Without the secret, the keys cannot be derived; without a key, the
//! database does not let anyone follow a ticket.

pub mod tables;

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

use crate::error::NodeResult;
use crate::store::Store;

/// Where the tracking secret lives.
pub fn secret_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("tracking.secret")
}

/// Makes tracking keys under a node's secret.
#[derive(Clone)]
pub struct TrackingKeys {
    secret: [u8; 32],
}

impl std::fmt::Debug for TrackingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrackingKeys(..)")
    }
}

impl TrackingKeys {
    /// The keys of the node whose data directory this is (making its secret
    /// on first use).
    ///
    /// # Errors
    /// The secret cannot be read or written.
    pub fn load(data_dir: &std::path::Path) -> NodeResult<Self> {
        Ok(Self {
            secret: crate::secret::load_or_make(&secret_path(data_dir))?,
        })
    }

    /// The key of the ticket created by `request_key` (`<actor>:<request
    /// id>`, which makes one ticket only): 32 hex digits.
    pub fn key_for(&self, request_key: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(b"urpnet tracking key v1\0");
        mac.update(request_key.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// What is stored of a key: its sha256, hex.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `key` is the tracking key of `ticket_id`. The comparison takes the
/// same time whatever the key, and a ticket without a key (made before keys
/// existed, or received from another node) matches nothing.
///
/// # Errors
/// Storage failures.
pub async fn verify(store: &Store, ticket_id: &str, key: &str) -> NodeResult<bool> {
    let stored = tables::get(store, ticket_id).await?;
    let offered = key_hash(key);
    Ok(stored.is_some_and(|s| {
        s.len() == offered.len()
            && s.bytes()
                .zip(offered.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }))
}
