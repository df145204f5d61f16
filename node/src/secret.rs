//! Node-local secrets: 32 random bytes in a file of the data directory,
//! made on first use, readable by the node's user only, never sent.

use std::path::Path;

use crate::error::{NodeError, NodeResult};

/// Loads the secret at `path`, making one on first use.
///
/// # Errors
/// I/O failures, or a file that is not 32 bytes.
pub fn load_or_make(path: &Path) -> NodeResult<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| NodeError::Internal(format!("{}: must hold 32 bytes", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret: [u8; 32] = rand::random();
            urpnet_proto::signing::write_private_file(path, &secret)
                .map_err(|e| NodeError::Internal(format!("{}: {e}", path.display())))?;
            Ok(secret)
        }
        Err(e) => Err(NodeError::Internal(format!("{}: {e}", path.display()))),
    }
}
