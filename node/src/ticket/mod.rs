//! The shared ticket: its lifecycle, the names of its enums, and the fold of
//! its event log into its state (DESIGN.md §3).

pub mod fold;
pub mod lifecycle;
pub mod names;

pub use fold::{Effect, Folded, apply, fold};
