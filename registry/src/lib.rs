//! The urpnet registry (DESIGN.md §6).
//!
//! Membership, the federation CA, discovery, routing and the archive arrive
//! with the registry issue; the crate exists now so the workspace has the
//! layout DESIGN.md §1 fixes and `node` and `registry` stay independent.
