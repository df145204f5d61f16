//! Node signing keys and the [`Signed`] envelope (DESIGN.md §2).
//!
//! Each node holds an ed25519 key; the registry publishes its public half with
//! the membership. A record is encoded once, signed over those exact bytes,
//! and travels as a [`Signed`] envelope; receivers verify before decoding.

use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::ids::NodeId;
use crate::v1::{PayloadKind, Signed};

/// Why a key or an envelope was refused.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key file could not be read or written.
    #[error("signing key {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold a PKCS#8 ed25519 key.
    #[error("signing key {path}: not a PKCS#8 PEM ed25519 private key")]
    BadKey {
        /// The file.
        path: String,
    },
    /// The envelope's signature does not verify.
    #[error("signature of {author}'s record does not verify")]
    BadSignature {
        /// The claimed author.
        author: String,
    },
    /// The envelope holds another kind of record than expected.
    #[error("envelope holds {found:?}, expected {expected:?}")]
    WrongKind {
        /// What was expected.
        expected: PayloadKind,
        /// What the envelope said.
        found: i32,
    },
}

/// A node's identity for signing: its id and its ed25519 key.
#[derive(Clone)]
pub struct NodeSigner {
    node: NodeId,
    key: SigningKey,
}

impl std::fmt::Debug for NodeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigner")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl NodeSigner {
    /// A signer with a fresh random key.
    pub fn generate(node: NodeId) -> Self {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Self { node, key }
    }

    /// A signer whose key comes from a fixed seed: for tests and fuzz
    /// targets that need the same key every run, never for a real node.
    pub fn from_seed(node: NodeId, seed: [u8; 32]) -> Self {
        Self {
            node,
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Loads the key from a PKCS#8 PEM file.
    ///
    /// # Errors
    /// When the file cannot be read or is not an ed25519 PKCS#8 key.
    pub fn load(node: NodeId, path: &Path) -> Result<Self, SigningError> {
        let pem = std::fs::read_to_string(path).map_err(|source| SigningError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| SigningError::BadKey {
            path: path.display().to_string(),
        })?;
        Ok(Self { node, key })
    }

    /// Writes the key as PKCS#8 PEM, readable by its owner only.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), SigningError> {
        let io = |source| SigningError::Io {
            path: path.display().to_string(),
            source,
        };
        let pem = self
            .key
            .to_pkcs8_pem(Default::default())
            .map_err(|_| SigningError::BadKey {
                path: path.display().to_string(),
            })?;
        write_private_file(path, pem.as_bytes()).map_err(io)
    }

    /// The node this key belongs to.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The public half, as published by the registry.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Wraps already-encoded record bytes in a signed envelope.
    pub fn sign(&self, kind: PayloadKind, payload: Vec<u8>) -> Signed {
        let signature = self.key.sign(&payload).to_bytes().to_vec();
        Signed {
            payload,
            author: self.node.to_string(),
            signature,
            kind: kind as i32,
        }
    }
}

/// Checks an envelope's kind and signature against its author's key.
///
/// # Errors
/// [`SigningError::WrongKind`] or [`SigningError::BadSignature`].
pub fn verify(
    envelope: &Signed,
    expected: PayloadKind,
    key: &VerifyingKey,
) -> Result<(), SigningError> {
    if envelope.kind != expected as i32 {
        return Err(SigningError::WrongKind {
            expected,
            found: envelope.kind,
        });
    }
    let bad = || SigningError::BadSignature {
        author: envelope.author.clone(),
    };
    let signature = Signature::from_slice(&envelope.signature).map_err(|_| bad())?;
    // Strict: no weak keys, no small-order R, so a signature verifies for
    // exactly one message under one key on every node.
    if key.is_weak() {
        return Err(bad());
    }
    key.verify_strict(&envelope.payload, &signature)
        .map_err(|_| bad())
}

/// Writes a secret file with mode 0600 (on Unix), replacing any old one.
///
/// # Errors
/// Any I/O error.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_envelopes_verify_and_tampering_is_caught() {
        let signer = NodeSigner::generate(NodeId::new("c_a662").unwrap());
        let mut env = signer.sign(PayloadKind::TicketEvent, b"hello".to_vec());
        verify(&env, PayloadKind::TicketEvent, &signer.verifying_key()).unwrap();
        assert!(verify(&env, PayloadKind::FaqVersion, &signer.verifying_key()).is_err());
        env.payload[0] ^= 1;
        assert!(verify(&env, PayloadKind::TicketEvent, &signer.verifying_key()).is_err());
        let other = NodeSigner::generate(NodeId::new("c_c426").unwrap());
        env.payload[0] ^= 1;
        assert!(verify(&env, PayloadKind::TicketEvent, &other.verifying_key()).is_err());
    }

    #[test]
    fn keys_survive_a_round_trip_through_a_file() {
        let dir = std::env::temp_dir().join(format!("urpnet-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        let signer = NodeSigner::generate(NodeId::new("c_a662").unwrap());
        signer.save(&path).unwrap();
        let loaded = NodeSigner::load(signer.node().clone(), &path).unwrap();
        assert_eq!(loaded.verifying_key(), signer.verifying_key());
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            NodeSigner::load(signer.node().clone(), &path),
            Err(SigningError::BadKey { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
