//! Backup and restore of a node's data directory (`urpnet-node backup`,
//! `urpnet-node restore`; docs/operations.md, "Backup and restore").
//!
//! A backup is one gzip'd tar file: a consistent snapshot of the SQLite
//! database taken while the node serves (`VACUUM INTO`, which reads inside
//! one transaction), then the rest of the data directory: the signing key,
//! the secrets, the federation certificate, the registry cache and the
//! attachments (copied after the snapshot, so every attachment the snapshot
//! names is in the file). The search indexes are left out: a node rebuilds
//! them at start. With PostgreSQL the database is not in the file; the
//! operations guide gives the `pg_dump` way.
//!
//! A restored node is behind its peers by whatever happened after the
//! backup: anti-entropy brings back every event of a ticket it shares
//! (DESIGN.md §4), those of other bodies and its own.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;

/// Left in the data directory by `restore`: the node holds writes until
/// its peers have given back what happened after the backup, then removes
/// it.
pub const RESTORED_MARKER: &str = "restored.json";

/// The manifest's name inside the archive.
pub const MANIFEST: &str = "urpnet-backup.json";
/// The database snapshot's name inside the archive.
const DATABASE: &str = "urpnet.db";
/// Directories of the data directory a node rebuilds by itself.
const REBUILT: &[&str] = &["faq-index", "charter-index"];

/// What a backup holds, written first in the archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Format of this file.
    pub format: u32,
    /// The node it was taken from.
    pub node_id: String,
    /// When, ms since the Unix epoch.
    pub taken_at_ms: u64,
    /// `sqlite` (the database is in the file) or `postgres` (it is not).
    pub database: String,
    /// The urpnet version that took it.
    pub version: String,
    /// Files in the archive besides the manifest.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Errors of backup and restore, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database snapshot failed.
    #[error("database snapshot: {0}")]
    Database(#[from] rusqlite::Error),
    /// The file is not a backup of this node, or damaged.
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The SQLite file of a `sqlite:` URL, `None` for PostgreSQL.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(PathBuf::from(rest.split('?').next().unwrap_or_default()))
}

/// Writes a backup of `config`'s node to `out` (mode 0600: it holds the
/// signing key), while the node may be serving. `progress` is called with
/// each file added.
///
/// # Errors
/// I/O errors, a failed snapshot.
pub fn backup(
    config: &NodeConfig,
    out: &Path,
    mut progress: impl FnMut(&Path, u64),
) -> Result<Manifest, BackupError> {
    let data_dir = &config.node.data_dir;
    let url = config.database_url();
    let staging = tempfile::Builder::new()
        .prefix(".urpnet-backup-")
        .tempdir_in(
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .map_err(io(out))?;
    // The snapshot first: attachments it names were written before it.
    let snapshot = staging.path().join(DATABASE);
    let database = match sqlite_path(&url) {
        Some(db) => {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(30))?;
            conn.execute("VACUUM INTO ?1", [snapshot.to_string_lossy()])?;
            "sqlite"
        }
        None => "postgres",
    };
    let mut files: Vec<(PathBuf, PathBuf)> = Vec::new();
    if database == "sqlite" {
        files.push((snapshot.clone(), PathBuf::from(DATABASE)));
    }
    let db_name = sqlite_path(&url).and_then(|p| p.file_name().map(|n| n.to_os_string()));
    collect(data_dir, data_dir, db_name.as_deref(), &mut files)?;
    let bytes = files
        .iter()
        .map(|(p, _)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let manifest = Manifest {
        format: 1,
        node_id: config.node.id.to_string(),
        taken_at_ms: urpnet_proto::hlc::system_time_ms(),
        database: database.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        files: files.len() as u64,
        bytes,
    };
    let partial = out.with_extension("partial");
    {
        let file = private_file(&partial)?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest");
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(manifest.taken_at_ms / 1000);
        header.set_cksum();
        tar.append_data(&mut header, MANIFEST, json.as_slice())
            .map_err(io(&partial))?;
        for (path, name) in &files {
            // A file removed since it was listed (an index segment, a
            // temporary) is skipped; the database snapshot is not.
            match std::fs::File::open(path) {
                Ok(mut f) => {
                    tar.append_file(name, &mut f).map_err(io(path))?;
                    progress(name, f.metadata().map(|m| m.len()).unwrap_or(0));
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound && name != Path::new(DATABASE) => {}
                Err(e) => return Err(io(path)(e)),
            }
        }
        let gz = tar.into_inner().map_err(io(&partial))?;
        let file = gz.finish().map_err(io(&partial))?;
        file.sync_all().map_err(io(&partial))?;
    }
    std::fs::rename(&partial, out).map_err(io(out))?;
    Ok(manifest)
}

/// The files of `dir` to back up, as (path, name in the archive).
fn collect(
    root: &Path,
    dir: &Path,
    db_name: Option<&std::ffi::OsStr>,
    out: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<(), BackupError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let name = path.strip_prefix(root).expect("under root").to_path_buf();
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let kind = entry.file_type().map_err(io(&path))?;
        if dir == root {
            let is_db = db_name.is_some_and(|db| {
                let db = db.to_string_lossy();
                file_name == db
                    || file_name == format!("{db}-wal")
                    || file_name == format!("{db}-shm")
            });
            if is_db
                || REBUILT.contains(&file_name.as_ref())
                || file_name == RESTORED_MARKER
                || file_name.starts_with(".urpnet-backup-")
            {
                continue;
            }
        }
        if kind.is_dir() {
            collect(root, &path, db_name, out)?;
        } else if kind.is_file() && !file_name.ends_with(".partial") && !is_backup(&path) {
            out.push((path, name));
        }
    }
    Ok(())
}

/// Whether `path` is a backup of ours (a gzip'd tar whose first entry is the
/// manifest): one written into the data directory is not taken into the
/// next backup, which would otherwise hold every earlier one.
fn is_backup(path: &Path) -> bool {
    use std::io::Read as _;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut header = [0u8; 512];
    let mut gz = flate2::read::GzDecoder::new(file);
    if gz.read_exact(&mut header).is_err() {
        return false;
    }
    let name = header[..100].split(|b| *b == 0).next().unwrap_or_default();
    name == MANIFEST.as_bytes()
}

fn private_file(path: &Path) -> Result<std::fs::File, BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path).map_err(io(path))
}

/// Reads only the manifest of a backup.
///
/// # Errors
/// Not a backup file.
pub fn manifest(from: &Path) -> Result<Manifest, BackupError> {
    let file = std::fs::File::open(from).map_err(io(from))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut entries = tar.entries().map_err(io(from))?;
    let not_backup = || BackupError::Invalid(format!("{}: not an urpnet backup", from.display()));
    let mut first = entries
        .next()
        .ok_or_else(not_backup)?
        .map_err(|_| not_backup())?;
    if first.path().map_err(|_| not_backup())?.as_ref() != Path::new(MANIFEST) {
        return Err(not_backup());
    }
    let mut json = Vec::new();
    first
        .by_ref()
        .take(1 << 20)
        .read_to_end(&mut json)
        .map_err(io(from))?;
    serde_json::from_slice(&json)
        .map_err(|e| BackupError::Invalid(format!("{}: manifest: {e}", from.display())))
}

/// Puts a backup back into `config`'s data directory. The node must be
/// stopped. Refuses a backup of another node, and a data directory that
/// already holds a database unless `force` (the old database files are then
/// kept beside it as `*.before-restore`).
///
/// # Errors
/// See above; I/O errors.
pub fn restore(config: &NodeConfig, from: &Path, force: bool) -> Result<Manifest, BackupError> {
    let manifest = manifest(from)?;
    if manifest.node_id != config.node.id.as_str() {
        return Err(BackupError::Invalid(format!(
            "{} is a backup of {}, not of this node ({})",
            from.display(),
            manifest.node_id,
            config.node.id
        )));
    }
    let data_dir = &config.node.data_dir;
    let db = sqlite_path(&config.database_url());
    if manifest.database == "sqlite" && db.is_none() {
        return Err(BackupError::Invalid(
            "the backup holds a SQLite database but this node is configured for PostgreSQL".into(),
        ));
    }
    if let Some(db) = db.as_ref().filter(|db| db.exists()) {
        if !force {
            return Err(BackupError::Invalid(format!(
                "{} exists: stop the node and pass --force to replace it (it is kept as {}.before-restore)",
                db.display(),
                db.display()
            )));
        }
        for suffix in ["", "-wal", "-shm"] {
            let old = PathBuf::from(format!("{}{suffix}", db.display()));
            if old.exists() {
                let kept = PathBuf::from(format!("{}{suffix}.before-restore", db.display()));
                std::fs::rename(&old, &kept).map_err(io(&old))?;
            }
        }
    }
    for rebuilt in REBUILT {
        let dir = data_dir.join(rebuilt);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
    }
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let file = std::fs::File::open(from).map_err(io(from))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in tar.entries().map_err(io(from))? {
        let mut entry = entry.map_err(io(from))?;
        let name = entry.path().map_err(io(from))?.to_path_buf();
        if name == Path::new(MANIFEST) {
            continue;
        }
        let target = if name == Path::new(DATABASE) {
            db.clone()
                .ok_or_else(|| BackupError::Invalid("no SQLite path".into()))?
        } else {
            // `unpack_in` refuses names that leave the directory.
            if !entry.unpack_in(data_dir).map_err(io(data_dir))? {
                return Err(BackupError::Invalid(format!(
                    "{}: entry {} would leave the data directory",
                    from.display(),
                    name.display()
                )));
            }
            continue;
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut out = private_file(&target)?;
        std::io::copy(&mut entry, &mut out).map_err(io(&target))?;
        out.flush().map_err(io(&target))?;
        out.sync_all().map_err(io(&target))?;
    }
    let marker = data_dir.join(RESTORED_MARKER);
    std::fs::write(
        &marker,
        serde_json::to_vec_pretty(&manifest).expect("manifest"),
    )
    .map_err(io(&marker))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/urpnet/urpnet.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/urpnet/urpnet.db"))
        );
        assert_eq!(sqlite_path("sqlite:x.db"), Some(PathBuf::from("x.db")));
        assert_eq!(sqlite_path("postgres:///urpnet"), None);
    }

    #[test]
    fn a_backup_left_in_the_data_directory_is_not_backed_up_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node.key"), b"key").unwrap();
        std::fs::create_dir(dir.path().join("attachments")).unwrap();
        std::fs::write(dir.path().join("attachments").join("a.jpg"), b"jpg").unwrap();
        // An earlier backup, written by hand into the data directory.
        let earlier = dir.path().join("nightly.tar.gz");
        {
            let gz = flate2::write::GzEncoder::new(
                std::fs::File::create(&earlier).unwrap(),
                flate2::Compression::fast(),
            );
            let mut tar = tar::Builder::new(gz);
            let mut header = tar::Header::new_gnu();
            header.set_size(2);
            header.set_cksum();
            tar.append_data(&mut header, MANIFEST, &b"{}"[..]).unwrap();
            tar.into_inner().unwrap().finish().unwrap();
        }
        // Another gzip'd file that is not ours stays in.
        {
            let mut gz = flate2::write::GzEncoder::new(
                std::fs::File::create(dir.path().join("export.csv.gz")).unwrap(),
                flate2::Compression::fast(),
            );
            std::io::Write::write_all(&mut gz, &[b'x'; 600]).unwrap();
            gz.finish().unwrap();
        }
        let mut files = Vec::new();
        collect(dir.path(), dir.path(), None, &mut files).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|(_, n)| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["attachments/a.jpg", "export.csv.gz", "node.key"]);
    }
}
