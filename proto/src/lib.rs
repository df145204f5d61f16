//! The urpnet wire contract and what every side of the wire needs.
//!
//! - [`v1`]: messages and services generated from `urpnet/v1/*.proto`, the
//!   protocol's one source of truth, and [`FILE_DESCRIPTOR_SET`] for gRPC
//!   reflection.
//! - [`ids`]: validated identifiers ([`ids::NodeId`], [`ids::TicketId`], ...).
//! - [`hlc`]: the hybrid logical clock that stamps federated records.
//! - [`signing`]: node signing keys and the [`v1::Signed`] envelope.
//! - [`territory`]: the ISTAT hierarchy comune -> provincia -> regione.
//! - [`validate`]: field violations reported as `INVALID_ARGUMENT`.
//! - [`text`]: case and accent folding for search.
//! - [`telemetry`]: logs, Prometheus metrics and the gRPC metrics layer shared
//!   by every daemon.

pub mod hlc;
pub mod ids;
pub mod signing;
pub mod telemetry;
pub mod territory;
pub mod text;
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
