//! The urpnet wire contract and what every side of the wire needs.
//!
//! - [`v1`]: messages and services generated from `urpnet/v1/*.proto`, the
//!   protocol's one source of truth, and [`FILE_DESCRIPTOR_SET`] for gRPC
//!   reflection.
//! - [`archive`]: ISO weeks, handling buckets and the checks on archive
//!   records.
//! - [`ids`]: validated identifiers ([`ids::NodeId`], [`ids::TicketId`], ...).
//! - `cli` (feature `cli`): tables, JSON and times for the CLIs.
//! - [`config`]: TOML configuration with `URPNET_*` overrides.
//! - `db` (feature `db`): opening SQLite or PostgreSQL with sqlx.
//! - [`hlc`]: the hybrid logical clock that stamps federated records.
//! - [`signing`]: node signing keys and the [`v1::Signed`] envelope.
//! - [`tls`]: the federation CA, mutual TLS configs and peer identity.
//! - [`territory`]: the ISTAT hierarchy comune -> provincia -> regione.
//! - [`taxonomy`]: the network's categories of contacts and who is competent
//!   for each, in TOML and on the wire.
//! - [`validate`]: field violations reported as `INVALID_ARGUMENT`.
//! - [`text`]: case and accent folding for search.
//! - [`telemetry`]: logs, Prometheus metrics and the gRPC metrics layer shared
//!   by every daemon.

pub mod archive;
pub mod calendar;
pub mod charter;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
#[cfg(feature = "db")]
pub mod db;
pub mod hlc;
pub mod ics;
pub mod ids;
pub mod limits;
pub mod signing;
pub mod slots;
pub mod taxonomy;
pub mod telemetry;
pub mod territory;
pub mod text;
pub mod tls;
pub mod validate;

/// Generated code for package `urpnet.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("urpnet.v1");
}

/// The encoded `FileDescriptorSet` of every urpnet proto file and its imports,
/// served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/urpnet_descriptor.bin"));
