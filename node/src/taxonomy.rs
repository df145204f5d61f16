//! The classification of contacts the node accepts.
//!
//! The network's taxonomy is versioned and distributed by the registry
//! (DESIGN.md §6): the node keeps the last one received (cached on disk by
//! the registry link) and, before it has ever received one, uses the
//! built-in Italian default in `taxonomy_default.toml`.

use std::sync::RwLock;

pub use urpnet_proto::taxonomy::Taxonomy;

const DEFAULT: &str = include_str!("taxonomy_default.toml");

/// The built-in Italian default.
pub fn builtin() -> Taxonomy {
    let parsed = urpnet_proto::taxonomy::parse_toml(DEFAULT).expect("built-in taxonomy is valid");
    Taxonomy::new(parsed).expect("built-in taxonomy is valid")
}

/// The taxonomy in use, replaced when the registry publishes a new version.
#[derive(Debug)]
pub struct TaxonomyHandle(RwLock<Taxonomy>);

impl TaxonomyHandle {
    /// Starts with `taxonomy`.
    pub fn new(taxonomy: Taxonomy) -> Self {
        Self(RwLock::new(taxonomy))
    }

    /// The current taxonomy (cheap: shared inside).
    pub fn current(&self) -> Taxonomy {
        self.0.read().expect("taxonomy lock").clone()
    }

    /// Switches to `taxonomy`.
    pub fn replace(&self, taxonomy: Taxonomy) {
        *self.0.write().expect("taxonomy lock") = taxonomy;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use urpnet_proto::v1::Level;

    #[test]
    fn builtin_taxonomy_has_parents_for_every_subcategory() {
        let t = builtin();
        assert!(t.categories().count() > 20);
        for c in t.categories() {
            if let Some((parent, _)) = c.code.split_once('.') {
                assert!(t.get(parent).is_some(), "{} has no parent", c.code);
            }
        }
        assert_eq!(t.level_of("sanita"), Some(Level::Regione));
    }
}
