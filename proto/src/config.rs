//! Loading a daemon's TOML configuration with `URPNET_*` overrides, shared by
//! the node and the registry so both report errors the same way: one line
//! naming the file, the key and the rule.
//!
//! Overrides are resolved from an explicit map, so tests never touch the
//! process environment.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::telemetry::LogFormat;

/// A configuration that could not be loaded; the message is one line naming
/// the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("config file {path}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Parses TOML `text` into `T` after applying the `overrides` (pairs of
/// environment variable and dotted key) found in `env`.
///
/// # Errors
/// Bad TOML (with line and column), an unknown key or a bad value, each as
/// one line naming the key.
pub fn parse_with_overrides<T: DeserializeOwned>(
    text: &str,
    overrides: &[(&str, &str)],
    env: &BTreeMap<String, String>,
) -> Result<T, String> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        format!(
            "invalid TOML at line {line}, column {col}: {}",
            e.message().trim().replace('\n', "; ")
        )
    })?;
    for (var, key) in overrides {
        if let Some(value) = env.get(*var) {
            set_key(&mut table, key, value);
        }
    }
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner().to_string();
        let inner = inner.lines().next().unwrap_or_default().to_string();
        if key == "." {
            inner
        } else {
            format!("key `{key}`: {inner}")
        }
    })
}

/// Reads `path` as text; a missing file says which command creates one.
///
/// # Errors
/// A missing or unreadable file.
pub fn read_file(path: &std::path::Path, init_command: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.display().to_string(),
        message: match e.kind() {
            std::io::ErrorKind::NotFound => format!("not found (create one with `{init_command}`)"),
            _ => format!("cannot be read: {e}"),
        },
    })
}

/// Reads `path` and parses it with `parse`; errors name the file.
///
/// # Errors
/// A missing or unreadable file, or what `parse` says (one line).
pub fn load_file<T>(
    path: &std::path::Path,
    init_command: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let text = read_file(path, init_command)?;
    parse(&text).map_err(|message| ConfigError {
        path: path.display().to_string(),
        message,
    })
}

/// A directory named in the file at `config_path`: relative paths are taken
/// from the file's directory.
pub fn beside(config_path: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    if dir.is_relative() {
        config_path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(dir)
    } else {
        dir.to_path_buf()
    }
}

/// The process environment's `URPNET_*` variables.
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("URPNET_"))
        .collect()
}

fn set_key(table: &mut toml::Table, dotted: &str, value: &str) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().expect("non-empty key");
    let mut cur = table;
    for p in parts {
        cur = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("override paths name tables");
    }
    cur.insert(last.to_string(), toml::Value::String(value.to_string()));
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count() + 1)
        .unwrap_or(1);
    (line, col)
}

/// `[log]`: logging, the same for every daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax (`RUST_LOG` itself wins when set).
    pub filter: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".into(),
        }
    }
}

/// Serde for durations written as humantime strings (`5s`, `30days`):
/// `#[serde(with = "urpnet_proto::config::duration")]`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `5s`, `30days`, ...
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads `5s`, `30days`, `1h 30m`, ...
    ///
    /// # Errors
    /// Text that is not a duration, with an example of one.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 5s or 30days: {e}"))
        })
    }
}
