//! Pure logic of the shared FAQ set (DESIGN.md §5).
//!
//! This crate starts empty: the FAQ model, its merge rule and its search index
//! arrive with the shared-FAQ issue. It exists now so the workspace has the
//! layout DESIGN.md §1 fixes and the dependency direction
//! `proto <- shared-faq <- node` is enforced by the build from day one.
