//! The shared ticket: its lifecycle, the names of its enums, the fold of its
//! event log into its state (DESIGN.md §3), and its tables.

pub mod fold;
pub mod lifecycle;
pub mod names;
pub mod tables;

pub use fold::{Effect, Folded, apply, fold};

/// Most events a ticket's log holds (docs/security.md, T4): beyond it a
/// peer's events are refused (`ticket_full`) and the desk answers
/// `FAILED_PRECONDITION`. A busy ticket has tens of events.
pub const MAX_EVENTS_PER_TICKET: usize = 5_000;

/// Most events one body signs on one ticket.
pub const MAX_EVENTS_PER_AUTHOR: usize = 2_000;
