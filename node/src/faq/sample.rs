//! FAQ collections in TOML (`[[faq]]` tables with the fields of
//! `FaqContent`), as in `examples/faq-sample.toml`, for `faq import`, the
//! demo and the tests.

use serde::Deserialize;
use urpnet_proto::v1::{FaqContent, FaqLink};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    faq: Vec<Item>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    #[serde(default)]
    scope: String,
    question: String,
    answer: String,
    #[serde(default = "italian")]
    language: String,
    categories: Vec<String>,
    #[serde(default)]
    territory: Vec<String>,
    #[serde(default)]
    valid_from: String,
    #[serde(default)]
    valid_until: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    links: Vec<Link>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Link {
    title: String,
    url: String,
}

fn italian() -> String {
    "it".into()
}

/// One entry of a collection: who would publish it ("comune", "regione",
/// ... or empty) and its content.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleEntry {
    /// The kind of body that would publish it.
    pub scope: String,
    /// The content.
    pub content: FaqContent,
}

/// Parses a collection.
///
/// # Errors
/// Bad TOML or an unknown key, in one line naming where.
pub fn parse(text: &str) -> Result<Vec<SampleEntry>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    Ok(file
        .faq
        .into_iter()
        .map(|i| SampleEntry {
            scope: i.scope,
            content: FaqContent {
                question: i.question.trim().to_string(),
                answer: i.answer.trim().to_string(),
                language: i.language,
                categories: i.categories,
                territory: i.territory,
                valid_from: i.valid_from,
                valid_until: i.valid_until,
                tags: i.tags,
                links: i
                    .links
                    .into_iter()
                    .map(|l| FaqLink {
                        title: l.title,
                        url: l.url,
                    })
                    .collect(),
            },
        })
        .collect())
}

/// The sample collection shipped in `examples/faq-sample.toml`.
pub const SAMPLE: &str = include_str!("../../../examples/faq-sample.toml");

#[cfg(test)]
mod tests {
    use super::*;
    use urpnet_proto::validate::Violations;

    #[test]
    fn the_sample_collection_is_valid_for_the_sample_taxonomy() {
        let entries = parse(SAMPLE).unwrap();
        assert!(entries.len() >= 20);
        let taxonomy = urpnet_proto::taxonomy::Taxonomy::new(
            urpnet_proto::taxonomy::parse_toml(include_str!("../../../examples/taxonomy.toml"))
                .unwrap(),
        )
        .unwrap();
        for e in &entries {
            let mut v = Violations::new();
            urpnet_shared_faq::validate_content(&e.content, "content", &mut v);
            assert!(v.is_empty(), "{}: {v}", e.content.question);
            for c in &e.content.categories {
                assert!(taxonomy.get(c).is_some(), "{c}");
                // A node running alone (built-in taxonomy) imports them too.
                assert!(crate::taxonomy::builtin().get(c).is_some(), "built-in: {c}");
            }
            assert!(["comune", "regione"].contains(&e.scope.as_str()));
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            parse("[[faq]]\nquestion = \"a?\"\nanswer = \"b\"\ncategories = []\ncolour = 1\n")
                .unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }
}
