//! urpnet node: one public body's ticket system and its gateway to the
//! federation.
//!
//! Layers, from the wire inwards (the map of who owns which tables and who
//! may call whom is in docs/architecture.md, "The node's modules"):
//! - [`desk`]: the Desk gRPC service, an adapter over [`casework`];
//! - [`public`]: the citizens' HTTP side (Open311, tracking), an adapter
//!   over [`casework`] too;
//! - [`auth`]: bearer tokens and roles;
//! - [`casework`]: the desk's operations on tickets — validate
//!   ([`validate`]), make a signed event, store it;
//! - [`shared_ticket`]: the shared ticket's rules (the pure fold of its
//!   events into its state) and its tables;
//! - [`attachments`]: content-addressed files attached to tickets;
//! - [`duplicates`]: recent open tickets in memory, for duplicate suggestions;
//! - [`peering`]: shared tickets travelling between nodes;
//! - [`faq`]: the shared FAQ set;
//! - [`archive`]: anonymised records of closed tickets, replicated to the
//!   registry;
//! - [`store`]: what every subsystem's storage shares — SQLite or
//!   PostgreSQL, migrations, the group-committing writer;
//! - [`server`]: the daemon's lifecycle; [`config`]: its configuration.

pub mod appointments;
pub mod archive;
pub mod attachments;
pub mod auth;
pub mod backup;
pub mod casework;
pub mod charter;
pub mod cli;
pub mod config;
pub mod console;
pub mod desk;
pub mod duplicates;
pub mod error;
pub mod faq;
pub mod fuzz;
pub mod notify;
pub mod peering;
pub mod privacy;
pub mod public;
pub mod registry_link;
pub mod replica;
pub mod secret;
pub mod server;
pub mod shared_ticket;
pub mod store;
pub mod taxonomy;
pub mod tracking;
pub mod validate;

pub use config::NodeConfig;
pub use error::{NodeError, NodeResult};
