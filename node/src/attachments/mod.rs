//! Attachments: content-addressed files under the store's blob directory
//! (two levels of fan-out by SHA-256), with their metadata in the
//! `attachments` table ([`tables`]). Content is written, fsynced and renamed
//! into place before the ticket that names it is committed, so a committed
//! ticket never names missing content.

pub mod tables;

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt as _;

use crate::error::{NodeError, NodeResult};
use crate::store::Store;

/// Where content with this hash lives under `dir` (two levels of fan-out).
pub fn blob_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(&sha256[..2]).join(&sha256[2..4]).join(sha256)
}

/// Writes attachment content once, durably, under its hash.
///
/// # Errors
/// I/O failures.
pub async fn write_content(store: &Store, sha256: &str, content: &[u8]) -> NodeResult<()> {
    let path = blob_path(store.blob_dir(), sha256);
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Ok(());
    }
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::StorageFull {
            crate::error::disk_full(&e)
        } else {
            NodeError::Internal(format!("writing attachment {sha256}: {e}"))
        }
    };
    let dir = path.parent().expect("blob paths have a parent");
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let tmp = dir.join(format!(".{sha256}.{}", ulid::Ulid::new()));
    let written = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(content).await?;
        file.sync_all().await?;
        tokio::fs::rename(&tmp, &path).await
    }
    .await;
    if let Err(e) = written {
        // A partial file must not hold the space the disk lacks.
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io(e));
    }
    Ok(())
}

/// Reads the content of an attachment held here.
///
/// # Errors
/// I/O failures.
pub async fn read_content(store: &Store, sha256: &str) -> NodeResult<Vec<u8>> {
    tokio::fs::read(blob_path(store.blob_dir(), sha256))
        .await
        .map_err(|e| NodeError::Internal(format!("reading attachment {sha256}: {e}")))
}
