//! Pure logic of the shared FAQ set (DESIGN.md §5) and of every other kind
//! of shared, signed, owner-only document (the charter, §12), with no I/O of
//! the network and no database:
//!
//! - [`model`]: entry keys and the rules every version must follow, checked
//!   at the Desk and again by every node receiving one;
//! - [`set`]: the merge rule (a pure function: the greater version wins) and
//!   [`set::FaqSet`], the latest version of every entry, with the per-owner
//!   digests, answers and plans of epidemic anti-entropy;
//! - [`search`]: the Italian full-text index (tantivy: stemming, accent
//!   folding, typo tolerance, filters, highlighted snippets).
//!
//! The node wires these to its store, its peers and its Desk; the benchmark
//! drives [`set::FaqSet`] directly to simulate a thousand nodes.

pub mod model;
pub mod search;
pub mod set;

pub use model::{Key, validate_content, validate_version};
pub use search::{FaqIndex, SearchQuery};
pub use set::{Applied, DocSet, FaqSet, Stamp};
