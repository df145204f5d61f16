//! The urpnet registry (DESIGN.md §6): membership and the federation CA,
//! the taxonomy, discovery and health, competence routing and load
//! distribution, served to nodes (`Registry`) and coordinators
//! (`RegistryAdmin`) over mutual TLS.
//!
//! - [`config`]: the TOML configuration.
//! - [`store`]: members, certificates and taxonomy versions (SQLite or
//!   PostgreSQL).
//! - [`membership`]: the in-memory view — health from heartbeats, routing
//!   and overflow decisions.
//! - [`registry`]: the domain operations (enrol, status, heartbeat, taxonomy,
//!   renewal).
//! - [`service`]: gRPC adapters and the gate (identity, status, role, rate
//!   limit).
//! - [`server`]: `init`, `ca ...` and `run`.
//! - [`archive`]: the anonymised archive — ingest, protected queries,
//!   trends, upward replication.
//! - [`cli`]: the coordinators' command line.

pub mod archive;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod membership;
pub mod registry;
pub mod server;
pub mod service;
pub mod store;
