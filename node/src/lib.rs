//! urpnet node: one public body's ticket system and its gateway to the
//! federation.
//!
//! Layers, from the wire inwards:
//! - [`desk`]: the Desk gRPC service, an adapter over [`tickets`];
//! - [`auth`]: bearer tokens and roles;
//! - [`tickets`]: the domain operations — validate ([`validate`]), make a
//!   signed event, store it;
//! - [`ticket`]: the pure fold of a ticket's events into its state;
//! - [`duplicates`]: recent open tickets in memory, for duplicate suggestions;
//! - [`store`]: SQLite or PostgreSQL, group-committed writes;
//! - [`archive`]: anonymised records of closed tickets, replicated to the
//!   registry;
//! - [`server`]: the daemon's lifecycle; [`config`]: its configuration.

pub mod archive;
pub mod auth;
pub mod cli;
pub mod config;
pub mod desk;
pub mod duplicates;
pub mod error;
pub mod faq;
pub mod peering;
pub mod registry_link;
pub mod server;
pub mod store;
pub mod taxonomy;
pub mod ticket;
pub mod tickets;
pub mod validate;

pub use config::NodeConfig;
pub use error::{NodeError, NodeResult};
