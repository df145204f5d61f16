//! The classification of contacts the node accepts.
//!
//! The network's taxonomy will be versioned and distributed by the registry
//! (DESIGN.md §6); until a node has received one it uses the built-in Italian
//! default in `taxonomy_default.toml`, which follows the services URPs answer
//! for most often.

use std::collections::BTreeMap;

use serde::Deserialize;

const DEFAULT: &str = include_str!("taxonomy_default.toml");

/// The level of government competent for a category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The comune.
    Comune,
    /// The provincia or città metropolitana.
    Provincia,
    /// The regione.
    Regione,
    /// A national body (INPS, Agenzia delle Entrate, ...).
    Nazionale,
}

/// One category or sub-category.
#[derive(Debug, Clone, Deserialize)]
pub struct Category {
    /// Code, e.g. `rifiuti` or `rifiuti.ingombranti`.
    pub code: String,
    /// Italian label.
    pub label: String,
    /// Who is competent.
    pub level: Level,
}

#[derive(Deserialize)]
struct File {
    version: u32,
    category: Vec<Category>,
}

/// A taxonomy: categories by code.
#[derive(Debug, Clone)]
pub struct Taxonomy {
    /// Version of the taxonomy.
    pub version: u32,
    categories: BTreeMap<String, Category>,
}

impl Taxonomy {
    /// The built-in Italian default.
    pub fn builtin() -> Self {
        let file: File = toml::from_str(DEFAULT).expect("built-in taxonomy is valid");
        Self {
            version: file.version,
            categories: file
                .category
                .into_iter()
                .map(|c| (c.code.clone(), c))
                .collect(),
        }
    }

    /// The category with this code.
    pub fn get(&self, code: &str) -> Option<&Category> {
        self.categories.get(code)
    }

    /// Every category, sorted by code.
    pub fn categories(&self) -> impl Iterator<Item = &Category> {
        self.categories.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_taxonomy_has_parents_for_every_subcategory() {
        let t = Taxonomy::builtin();
        assert!(t.categories().count() > 20);
        for c in t.categories() {
            if let Some((parent, _)) = c.code.split_once('.') {
                assert!(t.get(parent).is_some(), "{} has no parent", c.code);
            }
        }
        assert_eq!(t.get("sanita").unwrap().level, Level::Regione);
    }
}
