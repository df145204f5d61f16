//! The network's taxonomy of citizens' contacts: which categories exist, how
//! they nest, and which level of government is competent for each.
//!
//! A coordinator writes the taxonomy as TOML (see `examples/taxonomy.toml`),
//! the registry imports it with [`parse_toml`], versions it and distributes it
//! as a [`v1::Taxonomy`]; nodes check what they receive with [`validate`] and
//! look categories up through the indexed [`Taxonomy`] view. [`to_toml`] writes
//! the same format back, so an export can be edited and imported again.
//!
//! The rules every taxonomy follows, wherever it comes from:
//!
//! - a code matches [`CODE_RULE`] and is unique;
//! - a label is 1 to [`MAX_LABEL_CHARS`] characters, not blank, without
//!   control characters;
//! - the level is comune, provincia, regione or nazionale;
//! - a sub-category (a code with a dot) has a parent; every parent is defined
//!   and the parent graph has no cycle;
//! - `competent_body` is set only on nazionale categories and is a valid
//!   [`NodeId`];
//! - there are at most [`MAX_CATEGORIES`] categories.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Deserialize;

use crate::ids::NodeId;
use crate::v1;

/// The pattern a category code must match, as reported to callers.
pub const CODE_RULE: &str = r"^[a-z][a-z0-9_]{0,39}(\.[a-z][a-z0-9_]{0,39}){0,3}$";

/// The most characters a label may have.
pub const MAX_LABEL_CHARS: usize = 120;

/// The most categories a taxonomy may hold.
pub const MAX_CATEGORIES: usize = 2000;

/// The levels a category may have, as reported to callers.
const LEVELS_EXPECTED: &str = "comune, provincia, regione or nazionale";

/// Why a taxonomy was refused. Each message is one line naming the category
/// (or the line of the TOML text) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxonomyError {
    /// The text is not TOML or does not have the taxonomy's shape: a syntax
    /// error, a missing or unknown field, a value of the wrong type.
    #[error("{}{message}", line_prefix(*.line))]
    Toml {
        /// 1-based line the TOML parser points at, when it points at one.
        line: Option<usize>,
        /// The TOML parser's own message.
        message: String,
    },
    /// A `level` in the TOML text is not one of the four level names.
    #[error("line {line}: unknown level `{value}`; expected {LEVELS_EXPECTED}")]
    UnknownLevel {
        /// 1-based line of the value.
        line: usize,
        /// The value found.
        value: String,
    },
    /// More than [`MAX_CATEGORIES`] categories.
    #[error("taxonomy has {count} categories; at most {MAX_CATEGORIES} are allowed")]
    TooManyCategories {
        /// How many categories there are.
        count: usize,
    },
    /// A code does not match [`CODE_RULE`].
    #[error("category `{code}`: code must match {CODE_RULE}")]
    BadCode {
        /// The offending code.
        code: String,
    },
    /// A label is empty, blank, too long or holds control characters.
    #[error(
        "category `{code}`: label must be 1 to {MAX_LABEL_CHARS} characters, not blank, \
         without control characters"
    )]
    BadLabel {
        /// The category's code.
        code: String,
    },
    /// A level is unspecified or not a known [`v1::Level`] value (only
    /// possible for a taxonomy received over the wire).
    #[error("category `{code}`: level must be {LEVELS_EXPECTED}, not {}", wire_level_name(*.level))]
    BadLevel {
        /// The category's code.
        code: String,
        /// The level's raw wire value.
        level: i32,
    },
    /// A citizen-facing service definition breaks a rule.
    #[error("category `{code}`: citizen.{field}: {rule}")]
    BadCitizenService {
        /// The category's code.
        code: String,
        /// The field, e.g. `question[2].values`.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// Two categories share a code.
    #[error("category `{code}`: code is defined more than once")]
    DuplicateCode {
        /// The repeated code.
        code: String,
    },
    /// A sub-category (a code with a dot) has an empty parent.
    #[error("category `{code}`: a sub-category must have a parent")]
    ParentRequired {
        /// The sub-category's code.
        code: String,
    },
    /// A parent names no category of the taxonomy.
    #[error("category `{code}`: parent `{parent}` is not defined")]
    UnknownParent {
        /// The category's code.
        code: String,
        /// The missing parent.
        parent: String,
    },
    /// Following parents from a category comes back to it.
    #[error("category `{code}`: parent cycle {}", .cycle.join(" -> "))]
    ParentCycle {
        /// The first category of the cycle.
        code: String,
        /// The codes along the cycle, starting and ending with `code`.
        cycle: Vec<String>,
    },
    /// `competent_body` is set on a category that is not nazionale.
    #[error(
        "category `{code}`: competent_body `{competent_body}` is only allowed with \
         level nazionale, not {}",
        level_name(*.level)
    )]
    CompetentBodyNotNational {
        /// The category's code.
        code: String,
        /// The body named.
        competent_body: String,
        /// The category's level.
        level: v1::Level,
    },
    /// `competent_body` is not a valid node id.
    #[error(
        "category `{code}`: competent_body `{competent_body}` {}",
        NodeId::RULE
    )]
    BadCompetentBody {
        /// The category's code.
        code: String,
        /// The invalid id.
        competent_body: String,
    },
}

fn line_prefix(line: Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

fn wire_level_name(level: i32) -> String {
    match v1::Level::try_from(level) {
        Ok(known) => level_name(known).to_string(),
        Err(_) => format!("unknown value {level}"),
    }
}

/// The name of a level as written in the TOML format: `comune`, `provincia`,
/// `regione`, `nazionale`, or `unspecified`.
pub fn level_name(level: v1::Level) -> &'static str {
    match level {
        v1::Level::Unspecified => "unspecified",
        v1::Level::Comune => "comune",
        v1::Level::Provincia => "provincia",
        v1::Level::Regione => "regione",
        v1::Level::Nazionale => "nazionale",
    }
}

/// Parses a level name as written in the TOML format (exact, lowercase).
/// `unspecified` is not a level a category may have and gives `None`.
pub fn parse_level(s: &str) -> Option<v1::Level> {
    match s {
        "comune" => Some(v1::Level::Comune),
        "provincia" => Some(v1::Level::Provincia),
        "regione" => Some(v1::Level::Regione),
        "nazionale" => Some(v1::Level::Nazionale),
        _ => None,
    }
}

/// Whether `code` matches [`CODE_RULE`].
fn is_valid_code(code: &str) -> bool {
    let mut words = 0;
    code.split('.').all(|word| {
        words += 1;
        let bytes = word.as_bytes();
        words <= 4
            && (1..=40).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
    })
}

fn is_valid_label(label: &str) -> bool {
    let chars = label.chars().count();
    (1..=MAX_LABEL_CHARS).contains(&chars)
        && !label.trim().is_empty()
        && !label.chars().any(char::is_control)
}

/// The parent a code implies: the code before its last dot.
fn implied_parent(code: &str) -> Option<&str> {
    code.rsplit_once('.').map(|(parent, _)| parent)
}

/// Checks every rule of the module documentation. Categories need not be
/// sorted; when several rules are broken, the first one met in the order of
/// `t.categories` is reported.
///
/// # Errors
/// The first broken rule, as a [`TaxonomyError`] naming the category.
pub fn validate(t: &v1::Taxonomy) -> Result<(), TaxonomyError> {
    if t.categories.len() > MAX_CATEGORIES {
        return Err(TaxonomyError::TooManyCategories {
            count: t.categories.len(),
        });
    }
    let mut seen = HashSet::with_capacity(t.categories.len());
    for c in &t.categories {
        let code = || c.code.clone();
        if !is_valid_code(&c.code) {
            return Err(TaxonomyError::BadCode { code: code() });
        }
        if !is_valid_label(&c.label) {
            return Err(TaxonomyError::BadLabel { code: code() });
        }
        let level = match v1::Level::try_from(c.level) {
            Ok(level) if level != v1::Level::Unspecified => level,
            _ => {
                return Err(TaxonomyError::BadLevel {
                    code: code(),
                    level: c.level,
                });
            }
        };
        if !c.competent_body.is_empty() {
            if level != v1::Level::Nazionale {
                return Err(TaxonomyError::CompetentBodyNotNational {
                    code: code(),
                    competent_body: c.competent_body.clone(),
                    level,
                });
            }
            if NodeId::new(c.competent_body.as_str()).is_err() {
                return Err(TaxonomyError::BadCompetentBody {
                    code: code(),
                    competent_body: c.competent_body.clone(),
                });
            }
        }
        if !seen.insert(c.code.as_str()) {
            return Err(TaxonomyError::DuplicateCode { code: code() });
        }
        if let Some(service) = &c.citizen {
            validate_citizen_service(service).map_err(|(field, rule)| {
                TaxonomyError::BadCitizenService {
                    code: code(),
                    field,
                    rule,
                }
            })?;
        }
    }

    let mut parents: HashMap<&str, &str> = HashMap::with_capacity(t.categories.len());
    for c in &t.categories {
        if c.parent.is_empty() {
            if implied_parent(&c.code).is_some() {
                return Err(TaxonomyError::ParentRequired {
                    code: c.code.clone(),
                });
            }
        } else if !seen.contains(c.parent.as_str()) {
            return Err(TaxonomyError::UnknownParent {
                code: c.code.clone(),
                parent: c.parent.clone(),
            });
        } else {
            parents.insert(&c.code, &c.parent);
        }
    }
    check_acyclic(&t.categories, &parents)
}

/// Walks up from each category; a walk that meets a code already on its own
/// path has found a cycle. Codes whose ancestry is known to end at a root are
/// never walked again, so the whole check is linear.
fn check_acyclic(
    categories: &[v1::Category],
    parents: &HashMap<&str, &str>,
) -> Result<(), TaxonomyError> {
    let mut rooted: HashSet<&str> = HashSet::with_capacity(categories.len());
    for c in categories {
        let mut path: Vec<&str> = Vec::new();
        let mut on_path: HashMap<&str, usize> = HashMap::new();
        let mut current = c.code.as_str();
        loop {
            if rooted.contains(current) {
                break;
            }
            if let Some(&start) = on_path.get(current) {
                let mut cycle: Vec<String> = path[start..]
                    .iter()
                    .map(|code| (*code).to_string())
                    .collect();
                cycle.push(current.to_string());
                return Err(TaxonomyError::ParentCycle {
                    code: current.to_string(),
                    cycle,
                });
            }
            on_path.insert(current, path.len());
            path.push(current);
            match parents.get(current) {
                Some(parent) => current = parent,
                None => break,
            }
        }
        rooted.extend(path);
    }
    Ok(())
}

/// The datatypes of a service question (Open311 GeoReport v2).
pub const QUESTION_DATATYPES: &[&str] = &[
    "string",
    "number",
    "datetime",
    "text",
    "singlevaluelist",
    "multivaluelist",
];

/// Most questions of one service, keywords of one service.
pub const MAX_QUESTIONS: usize = 20;

fn is_valid_question_code(code: &str) -> bool {
    let b = code.as_bytes();
    !b.is_empty()
        && b.len() <= 40
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

fn is_valid_text(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// Checks a citizen service: `Err((field, rule))`.
fn validate_citizen_service(s: &v1::CitizenService) -> Result<(), (String, String)> {
    let bad = |field: &str, rule: &str| Err((field.to_string(), rule.to_string()));
    if !is_valid_text(&s.description, 1000) {
        return bad(
            "description",
            "1 to 1000 characters, not blank, no control characters",
        );
    }
    if !s.group.is_empty() && !is_valid_text(&s.group, 120) {
        return bad(
            "group",
            "at most 120 characters, not blank, no control characters",
        );
    }
    if s.keywords.len() > MAX_QUESTIONS || s.keywords.iter().any(|k| !is_valid_text(k, 40)) {
        return bad("keywords", "at most 20 words of 1 to 40 characters");
    }
    if s.questions.len() > MAX_QUESTIONS {
        return bad("question", "at most 20 questions");
    }
    let mut codes = HashSet::new();
    for (i, q) in s.questions.iter().enumerate() {
        let field = |f: &str| format!("question[{}].{f}", i + 1);
        if !is_valid_question_code(&q.code) {
            return Err((field("code"), "must match ^[a-z][a-z0-9_]{0,39}$".into()));
        }
        if !codes.insert(q.code.as_str()) {
            return Err((field("code"), format!("`{}` is used twice", q.code)));
        }
        if !QUESTION_DATATYPES.contains(&q.datatype.as_str()) {
            return Err((
                field("datatype"),
                format!("must be one of {}", QUESTION_DATATYPES.join(", ")),
            ));
        }
        if !is_valid_text(&q.description, 500) {
            return Err((
                field("description"),
                "1 to 500 characters, not blank, no control characters".into(),
            ));
        }
        let is_list = q.datatype.ends_with("valuelist");
        if is_list == q.values.is_empty() {
            return Err((
                field("values"),
                "list questions need at least one value; other questions have none".into(),
            ));
        }
        let mut keys = HashSet::new();
        for v in &q.values {
            let key_ok = !v.key.is_empty()
                && v.key.len() <= 40
                && v.key
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
            if !key_ok || !keys.insert(v.key.as_str()) || !is_valid_text(&v.name, 120) {
                return Err((
                    field("values"),
                    "each key must match ^[a-z0-9_]{1,40}$ and be unique, each name 1 to 120 characters".into(),
                ));
            }
        }
    }
    Ok(())
}

/// The TOML file as written by coordinators.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaxonomyFile {
    /// Absent means 0: the registry assigns the next version.
    #[serde(default)]
    version: u32,
    category: Vec<CategoryEntry>,
}

/// One `[[category]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryEntry {
    code: String,
    label: String,
    /// Spanned so an unknown level is reported with its line.
    level: toml::Spanned<String>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    competent_body: Option<String>,
    /// How citizens may file it (an Open311 service); absent: not offered.
    #[serde(default)]
    citizen: Option<CitizenEntry>,
}

/// A `[category.citizen]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CitizenEntry {
    description: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    question: Vec<QuestionEntry>,
}

/// A `[[category.citizen.question]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionEntry {
    code: String,
    datatype: String,
    #[serde(default)]
    required: bool,
    description: String,
    /// Absent: the question's position in the file.
    #[serde(default)]
    order: Option<u32>,
    #[serde(default)]
    values: Vec<ValueEntry>,
}

/// One `{ key = "...", name = "..." }` of a list question.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueEntry {
    key: String,
    name: String,
}

impl CitizenEntry {
    fn into_proto(self) -> v1::CitizenService {
        v1::CitizenService {
            description: self.description,
            group: self.group,
            keywords: self.keywords,
            questions: self
                .question
                .into_iter()
                .enumerate()
                .map(|(i, q)| v1::ServiceQuestion {
                    code: q.code,
                    datatype: q.datatype,
                    required: q.required,
                    description: q.description,
                    order: q.order.unwrap_or(i as u32 + 1),
                    values: q
                        .values
                        .into_iter()
                        .map(|v| v1::ServiceValue {
                            key: v.key,
                            name: v.name,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Parses and validates a taxonomy written in the TOML format of
/// `examples/taxonomy.toml`. The result has its categories sorted by code,
/// each with its parent filled in (explicit, or implied by the code), and the
/// file's version (0 when the file has none).
///
/// # Errors
/// [`TaxonomyError::Toml`] when the text is not TOML of the expected shape
/// (unknown fields included), [`TaxonomyError::UnknownLevel`] for a level that
/// is not a level name, and any error of [`validate`].
pub fn parse_toml(text: &str) -> Result<v1::Taxonomy, TaxonomyError> {
    let file: TaxonomyFile = toml::from_str(text).map_err(|e| TaxonomyError::Toml {
        line: e.span().map(|span| line_of(text, span.start)),
        // One line: toml's message may span several (`invalid table header\nexpected ...`).
        message: e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    let mut categories = Vec::with_capacity(file.category.len());
    for entry in file.category {
        let Some(level) = parse_level(entry.level.get_ref()) else {
            return Err(TaxonomyError::UnknownLevel {
                line: line_of(text, entry.level.span().start),
                value: entry.level.into_inner(),
            });
        };
        let parent = match entry.parent {
            Some(parent) => parent,
            None => implied_parent(&entry.code).unwrap_or_default().to_string(),
        };
        categories.push(v1::Category {
            code: entry.code,
            label: entry.label,
            level: level as i32,
            parent,
            competent_body: entry.competent_body.unwrap_or_default(),
            citizen: entry.citizen.map(CitizenEntry::into_proto),
        });
    }
    let mut taxonomy = v1::Taxonomy {
        version: file.version,
        categories,
    };
    // Validate in file order so the first error reported is the first in the file.
    validate(&taxonomy)?;
    taxonomy.categories.sort_by(|a, b| a.code.cmp(&b.code));
    Ok(taxonomy)
}

/// Writes a taxonomy in the TOML format [`parse_toml`] reads, categories
/// sorted by code, `parent` only where it differs from the one the code
/// implies. For a valid taxonomy whose categories are sorted by code (as
/// [`parse_toml`] and [`Taxonomy::to_proto`] give them),
/// `parse_toml(&to_toml(t))` gives back `t`. An invalid taxonomy is written
/// as it is, and [`parse_toml`] will refuse it.
pub fn to_toml(t: &v1::Taxonomy) -> String {
    let mut sorted: Vec<&v1::Category> = t.categories.iter().collect();
    sorted.sort_by(|a, b| a.code.cmp(&b.code));

    let mut out = String::with_capacity(64 + sorted.len() * 96);
    out.push_str(
        "# urpnet taxonomy: categories of citizens' contacts and the level of\n\
         # government competent for each (comune, provincia, regione, nazionale).\n\
         # Edit and import it again with a greater version.\n",
    );
    // Writing to a String cannot fail.
    let _ = writeln!(out, "version = {}", t.version);
    for c in sorted {
        let level = v1::Level::try_from(c.level).unwrap_or(v1::Level::Unspecified);
        out.push_str("\n[[category]]\n");
        let _ = writeln!(out, "code = {}", quote(&c.code));
        let _ = writeln!(out, "label = {}", quote(&c.label));
        let _ = writeln!(out, "level = {}", quote(level_name(level)));
        if !c.parent.is_empty() && implied_parent(&c.code) != Some(c.parent.as_str()) {
            let _ = writeln!(out, "parent = {}", quote(&c.parent));
        }
        if !c.competent_body.is_empty() {
            let _ = writeln!(out, "competent_body = {}", quote(&c.competent_body));
        }
        if let Some(service) = &c.citizen {
            write_citizen(&mut out, service);
        }
    }
    out
}

fn write_citizen(out: &mut String, s: &v1::CitizenService) {
    out.push_str("[category.citizen]\n");
    let _ = writeln!(out, "description = {}", quote(&s.description));
    if !s.group.is_empty() {
        let _ = writeln!(out, "group = {}", quote(&s.group));
    }
    if !s.keywords.is_empty() {
        let words: Vec<String> = s.keywords.iter().map(|k| quote(k)).collect();
        let _ = writeln!(out, "keywords = [{}]", words.join(", "));
    }
    for q in &s.questions {
        out.push_str("[[category.citizen.question]]\n");
        let _ = writeln!(out, "code = {}", quote(&q.code));
        let _ = writeln!(out, "datatype = {}", quote(&q.datatype));
        let _ = writeln!(out, "required = {}", q.required);
        let _ = writeln!(out, "description = {}", quote(&q.description));
        let _ = writeln!(out, "order = {}", q.order);
        if !q.values.is_empty() {
            let values: Vec<String> = q
                .values
                .iter()
                .map(|v| format!("{{ key = {}, name = {} }}", quote(&v.key), quote(&v.name)))
                .collect();
            let _ = writeln!(out, "values = [{}]", values.join(", "));
        }
    }
}

/// A TOML basic string holding `s`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A validated taxonomy indexed by code. Cloning is cheap (the index is shared
/// behind an [`Arc`]), so one value can be handed to every request handler.
#[derive(Debug, Clone)]
pub struct Taxonomy {
    inner: Arc<Indexed>,
}

#[derive(Debug)]
struct Indexed {
    /// The taxonomy's version; 0 when none has been imported yet.
    version: u32,
    /// Every category by code; iteration is sorted by code.
    by_code: BTreeMap<String, v1::Category>,
}

impl Taxonomy {
    /// Validates and indexes a taxonomy.
    ///
    /// # Errors
    /// Any error of [`validate`].
    pub fn new(taxonomy: v1::Taxonomy) -> Result<Self, TaxonomyError> {
        validate(&taxonomy)?;
        let by_code = taxonomy
            .categories
            .into_iter()
            .map(|c| (c.code.clone(), c))
            .collect();
        Ok(Self {
            inner: Arc::new(Indexed {
                version: taxonomy.version,
                by_code,
            }),
        })
    }

    /// The taxonomy's version; 0 when none has been imported yet.
    pub fn version(&self) -> u32 {
        self.inner.version
    }

    /// The category with this code.
    pub fn get(&self, code: &str) -> Option<&v1::Category> {
        self.inner.by_code.get(code)
    }

    /// The level competent for the category with this code.
    pub fn level_of(&self, code: &str) -> Option<v1::Level> {
        // Validation guarantees a known, specified level.
        self.get(code)
            .and_then(|c| v1::Level::try_from(c.level).ok())
    }

    /// Every category, sorted by code.
    pub fn categories(&self) -> impl Iterator<Item = &v1::Category> {
        self.inner.by_code.values()
    }

    /// How many categories it holds.
    pub fn len(&self) -> usize {
        self.inner.by_code.len()
    }

    /// Whether it holds no category (a registry that has imported none).
    pub fn is_empty(&self) -> bool {
        self.inner.by_code.is_empty()
    }

    /// The wire form, categories sorted by code.
    pub fn to_proto(&self) -> v1::Taxonomy {
        v1::Taxonomy {
            version: self.version(),
            categories: self.categories().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../examples/taxonomy.toml");
    const NODE_DEFAULT: &str = include_str!("../../node/src/taxonomy_default.toml");

    fn category(code: &str, level: v1::Level, parent: &str) -> v1::Category {
        v1::Category {
            code: code.to_string(),
            label: format!("Etichetta {code}"),
            level: level as i32,
            parent: parent.to_string(),
            competent_body: String::new(),
            citizen: None,
        }
    }

    const CITIZEN_SAMPLE: &str = r#"
version = 3

[[category]]
code = "strade"
label = "Strade"
level = "comune"

[[category]]
code = "strade.buche"
label = "Buche e dissesti"
level = "comune"
[category.citizen]
description = "Buche, avvallamenti e tombini rotti sulle strade comunali"
group = "Strade e marciapiedi"
keywords = ["buca", "asfalto"]
[[category.citizen.question]]
code = "pericolo"
datatype = "singlevaluelist"
required = true
description = "La buca è pericolosa per chi passa?"
values = [{ key = "si", name = "Sì" }, { key = "no", name = "No" }]
[[category.citizen.question]]
code = "larghezza_cm"
datatype = "number"
description = "Larghezza approssimativa in centimetri"
"#;

    #[test]
    fn citizen_services_parse_write_back_and_name_each_broken_rule() {
        let t = parse_toml(CITIZEN_SAMPLE).unwrap();
        let service = t.categories[1].citizen.as_ref().expect("a citizen service");
        assert_eq!(service.group, "Strade e marciapiedi");
        assert_eq!(service.questions.len(), 2);
        assert_eq!(service.questions[0].values.len(), 2);
        assert!(service.questions[0].required);
        assert_eq!(
            service.questions[1].order, 2,
            "order defaults to the position"
        );
        assert!(t.categories[0].citizen.is_none(), "absent: not offered");
        assert_eq!(parse_toml(&to_toml(&t)).unwrap(), t, "round trip");

        let broken = |from: &str, to: &str| {
            let text = CITIZEN_SAMPLE.replace(from, to);
            assert_ne!(text, CITIZEN_SAMPLE, "{from}");
            parse_toml(&text).unwrap_err().to_string()
        };
        let e = broken("datatype = \"number\"", "datatype = \"colour\"");
        assert!(e.contains("question[2].datatype"), "{e}");
        let e = broken(
            "values = [{ key = \"si\", name = \"Sì\" }, { key = \"no\", name = \"No\" }]",
            "",
        );
        assert!(e.contains("question[1].values"), "{e}");
        let e = broken("code = \"larghezza_cm\"", "code = \"pericolo\"");
        assert!(e.contains("used twice"), "{e}");
        let e = broken("description = \"Buche,", "description = \" \" #");
        assert!(e.contains("citizen.description"), "{e}");
        let e = broken("group = \"Strade e marciapiedi\"", "colour = \"blu\"");
        assert!(e.contains("colour"), "unknown fields are refused: {e}");
    }

    fn taxonomy(categories: Vec<v1::Category>) -> v1::Taxonomy {
        v1::Taxonomy {
            version: 1,
            categories,
        }
    }

    fn parse_err(text: &str) -> String {
        parse_toml(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn sample_parses_with_every_area() {
        let t = parse_toml(SAMPLE).unwrap();
        assert_eq!(t.version, 1);
        assert!(
            (60..=90).contains(&t.categories.len()),
            "{}",
            t.categories.len()
        );
        let codes: Vec<&str> = t.categories.iter().map(|c| c.code.as_str()).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        assert_eq!(codes, sorted, "categories sorted by code");

        let t = Taxonomy::new(t).unwrap();
        let expected = [
            ("anagrafe", v1::Level::Comune),
            ("anagrafe.carta_identita", v1::Level::Comune),
            ("anagrafe.residenza", v1::Level::Comune),
            ("anagrafe.certificati", v1::Level::Comune),
            ("anagrafe.stato_civile", v1::Level::Comune),
            ("tributi.imu", v1::Level::Comune),
            ("tributi.tari", v1::Level::Comune),
            ("tributi.canone_unico", v1::Level::Comune),
            ("rifiuti.raccolta", v1::Level::Comune),
            ("rifiuti.ingombranti", v1::Level::Comune),
            ("rifiuti.abbandono", v1::Level::Comune),
            ("rifiuti.centri_raccolta", v1::Level::Comune),
            ("strade.buche", v1::Level::Comune),
            ("strade.segnaletica", v1::Level::Comune),
            ("strade.marciapiedi", v1::Level::Comune),
            ("strade.provinciali", v1::Level::Provincia),
            ("illuminazione", v1::Level::Comune),
            ("verde", v1::Level::Comune),
            ("servizi_sociali.contributi", v1::Level::Comune),
            ("servizi_sociali.anziani", v1::Level::Comune),
            ("servizi_sociali.disabilita", v1::Level::Comune),
            ("servizi_sociali.casa", v1::Level::Comune),
            ("scuola.iscrizioni", v1::Level::Comune),
            ("scuola.mensa", v1::Level::Comune),
            ("scuola.trasporto", v1::Level::Comune),
            ("scuola.superiori", v1::Level::Provincia),
            ("mobilita.ztl", v1::Level::Comune),
            ("mobilita.trasporto_pubblico", v1::Level::Regione),
            ("polizia_locale", v1::Level::Comune),
            ("edilizia.sue", v1::Level::Comune),
            ("attivita_produttive.suap", v1::Level::Comune),
            ("ambiente.caccia", v1::Level::Regione),
            ("ambiente.pesca", v1::Level::Provincia),
            ("sanita.prenotazioni", v1::Level::Regione),
            ("sanita.medico", v1::Level::Regione),
            ("sanita.esenzioni", v1::Level::Regione),
            ("sanita.asl", v1::Level::Regione),
            ("lavoro.centri_impiego", v1::Level::Regione),
            ("lavoro.formazione", v1::Level::Regione),
            ("agricoltura", v1::Level::Regione),
            ("turismo", v1::Level::Comune),
            ("cultura", v1::Level::Comune),
            ("pensioni", v1::Level::Nazionale),
            ("fisco.dichiarazione", v1::Level::Nazionale),
            ("fisco.codice_fiscale", v1::Level::Nazionale),
            ("motorizzazione.patenti", v1::Level::Nazionale),
            ("informazioni", v1::Level::Comune),
            ("altro", v1::Level::Comune),
        ];
        for (code, level) in expected {
            assert_eq!(t.level_of(code), Some(level), "{code}");
        }
        for (code, body) in [
            ("pensioni", "inps"),
            ("fisco", "age"),
            ("motorizzazione", "m_inf"),
        ] {
            assert_eq!(t.get(code).unwrap().competent_body, body, "{code}");
        }
        assert_eq!(t.get("rifiuti.ingombranti").unwrap().parent, "rifiuti");
        assert_eq!(t.get("rifiuti").unwrap().parent, "");
        assert_eq!(t.get("trasporti_regionali").unwrap().parent, "mobilita");
    }

    #[test]
    fn node_default_parses_and_every_code_is_in_the_sample() {
        let default = Taxonomy::new(parse_toml(NODE_DEFAULT).unwrap()).unwrap();
        let sample = Taxonomy::new(parse_toml(SAMPLE).unwrap()).unwrap();
        for c in default.categories() {
            let Some(s) = sample.get(&c.code) else {
                panic!("`{}` is missing from examples/taxonomy.toml", c.code);
            };
            assert_eq!(s.level, c.level, "{} changed level", c.code);
        }
    }

    #[test]
    fn sample_round_trips() {
        let t = parse_toml(SAMPLE).unwrap();
        let text = to_toml(&t);
        assert_eq!(parse_toml(&text).unwrap(), t, "{text}");
        assert_eq!(Taxonomy::new(t.clone()).unwrap().to_proto(), t);
    }

    #[test]
    fn awkward_values_round_trip() {
        let mut national = category("zeta", v1::Level::Nazionale, "alfa.beta");
        national.competent_body = "m_inf".to_string();
        national.label = "Quote \" backslash \\ # [x] = 'y' — città".to_string();
        let t = v1::Taxonomy {
            version: 42,
            categories: vec![
                category("alfa", v1::Level::Comune, ""),
                category("alfa.beta", v1::Level::Provincia, "alfa"),
                category("alfa.beta.gamma_1", v1::Level::Regione, "zeta"),
                national,
            ],
        };
        validate(&t).unwrap();
        let text = to_toml(&t);
        assert_eq!(parse_toml(&text).unwrap(), t, "{text}");
        assert!(
            !text.contains("parent = \"alfa\""),
            "implied parent written: {text}"
        );
    }

    #[test]
    fn version_defaults_to_zero() {
        let t =
            parse_toml("[[category]]\ncode = \"a\"\nlabel = \"A\"\nlevel = \"comune\"\n").unwrap();
        assert_eq!(t.version, 0);
    }

    #[test]
    fn cycle_is_reported_with_its_path() {
        let text = r#"
[[category]]
code = "a"
label = "A"
level = "comune"
parent = "b"
[[category]]
code = "b"
label = "B"
level = "comune"
parent = "a"
"#;
        assert_eq!(parse_err(text), "category `a`: parent cycle a -> b -> a");

        let t = taxonomy(vec![category("a", v1::Level::Comune, "a")]);
        assert_eq!(
            validate(&t).unwrap_err().to_string(),
            "category `a`: parent cycle a -> a"
        );

        // A tail leading into a cycle reports the cycle, not the tail.
        let t = taxonomy(vec![
            category("x", v1::Level::Comune, "y"),
            category("y", v1::Level::Comune, "z"),
            category("z", v1::Level::Comune, "y"),
        ]);
        assert_eq!(
            validate(&t).unwrap_err().to_string(),
            "category `y`: parent cycle y -> z -> y"
        );
    }

    #[test]
    fn missing_level_is_refused_with_its_line() {
        let err = parse_err("version = 1\n[[category]]\ncode = \"a\"\nlabel = \"A\"\n");
        assert!(err.starts_with("line "), "{err}");
        assert!(err.contains("missing field `level`"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn unknown_level_is_refused_with_its_line() {
        let text = "version = 1\n\n[[category]]\ncode = \"a\"\nlabel = \"A\"\nlevel = \"comune\"\n\
                    [[category]]\ncode = \"b\"\nlabel = \"B\"\nlevel = \"città\"\n";
        assert_eq!(
            parse_err(text),
            "line 10: unknown level `città`; expected comune, provincia, regione or nazionale"
        );
        let text = "[[category]]\ncode = \"a\"\nlabel = \"A\"\nlevel = \"unspecified\"\n";
        assert!(parse_err(text).contains("unknown level `unspecified`"));
    }

    #[test]
    fn unspecified_or_unknown_wire_level_is_refused() {
        let t = taxonomy(vec![category("a", v1::Level::Unspecified, "")]);
        assert_eq!(
            validate(&t).unwrap_err().to_string(),
            "category `a`: level must be comune, provincia, regione or nazionale, not unspecified"
        );
        let mut c = category("a", v1::Level::Comune, "");
        c.level = 99;
        let err = validate(&taxonomy(vec![c])).unwrap_err();
        assert!(err.to_string().contains("not unknown value 99"), "{err}");
    }

    #[test]
    fn duplicate_code_is_refused() {
        let text = "[[category]]\ncode = \"a\"\nlabel = \"A\"\nlevel = \"comune\"\n\
                    [[category]]\ncode = \"a\"\nlabel = \"A bis\"\nlevel = \"regione\"\n";
        assert_eq!(
            parse_err(text),
            "category `a`: code is defined more than once"
        );
    }

    #[test]
    fn missing_parent_is_refused() {
        let text = "[[category]]\ncode = \"rifiuti.x\"\nlabel = \"X\"\nlevel = \"comune\"\n";
        assert_eq!(
            parse_err(text),
            "category `rifiuti.x`: parent `rifiuti` is not defined"
        );
        let text =
            "[[category]]\ncode = \"a\"\nlabel = \"A\"\nlevel = \"comune\"\nparent = \"nope\"\n";
        assert_eq!(
            parse_err(text),
            "category `a`: parent `nope` is not defined"
        );
        // Over the wire a sub-category must carry its parent.
        let t = taxonomy(vec![
            category("a", v1::Level::Comune, ""),
            category("a.b", v1::Level::Comune, ""),
        ]);
        assert_eq!(
            validate(&t).unwrap_err(),
            TaxonomyError::ParentRequired {
                code: "a.b".to_string()
            }
        );
    }

    #[test]
    fn competent_body_only_on_national_categories() {
        let text = "[[category]]\ncode = \"a\"\nlabel = \"A\"\nlevel = \"regione\"\n\
                    competent_body = \"inps\"\n";
        assert_eq!(
            parse_err(text),
            "category `a`: competent_body `inps` is only allowed with level nazionale, not regione"
        );
        let text = "[[category]]\ncode = \"a\"\nlabel = \"A\"\nlevel = \"nazionale\"\n\
                    competent_body = \"INPS\"\n";
        let err = parse_err(text);
        assert!(
            err.starts_with("category `a`: competent_body `INPS` must match"),
            "{err}"
        );
    }

    #[test]
    fn bad_codes_are_refused() {
        for code in [
            "",
            "Rifiuti",
            "1rifiuti",
            "_x",
            "rifiuti.",
            ".rifiuti",
            "a..b",
            "a.b.c.d.e",
            "rifiuti-ingombranti",
            "città",
            &"a".repeat(41),
        ] {
            let t = taxonomy(vec![category(code, v1::Level::Comune, "")]);
            assert_eq!(
                validate(&t).unwrap_err(),
                TaxonomyError::BadCode {
                    code: code.to_string()
                },
                "{code:?}"
            );
        }
        let err =
            parse_err("[[category]]\ncode = \"Rifiuti\"\nlabel = \"R\"\nlevel = \"comune\"\n");
        assert!(
            err.starts_with("category `Rifiuti`: code must match ^[a-z]"),
            "{err}"
        );
        for code in ["a", "a.b.c.d", &"a".repeat(40), "a_1.b2"] {
            assert!(is_valid_code(code), "{code}");
        }
    }

    #[test]
    fn bad_labels_are_refused() {
        for label in ["", "   ", "riga\nspezzata", &"à".repeat(121)] {
            let mut c = category("a", v1::Level::Comune, "");
            c.label = label.to_string();
            let err = validate(&taxonomy(vec![c])).unwrap_err();
            assert_eq!(
                err,
                TaxonomyError::BadLabel {
                    code: "a".to_string()
                },
                "{label:?}"
            );
        }
        let mut c = category("a", v1::Level::Comune, "");
        c.label = "à".repeat(120);
        validate(&taxonomy(vec![c])).unwrap();
    }

    #[test]
    fn unknown_field_is_refused_with_its_line() {
        let err = parse_err("[[category]]\ncode = \"a\"\nlable = \"A\"\nlevel = \"comune\"\n");
        assert!(err.starts_with("line 3: unknown field `lable`"), "{err}");
        let err = parse_err(
            "versione = 1\n[[category]]\ncode = \"a\"\nlabel = \"A\"\nlevel = \"comune\"\n",
        );
        assert!(err.starts_with("line 1: unknown field `versione`"), "{err}");
    }

    #[test]
    fn syntax_errors_are_one_line() {
        let err = parse_err("version = 1\n[[category]\n");
        assert!(
            err.starts_with("line 2: invalid table header; expected"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn too_many_categories_are_refused() {
        let categories = (0..=MAX_CATEGORIES)
            .map(|i| category(&format!("c{i}"), v1::Level::Comune, ""))
            .collect();
        assert_eq!(
            validate(&taxonomy(categories)).unwrap_err(),
            TaxonomyError::TooManyCategories {
                count: MAX_CATEGORIES + 1
            }
        );
    }

    #[test]
    fn level_names_round_trip() {
        for level in [
            v1::Level::Comune,
            v1::Level::Provincia,
            v1::Level::Regione,
            v1::Level::Nazionale,
        ] {
            assert_eq!(parse_level(level_name(level)), Some(level));
        }
        assert_eq!(level_name(v1::Level::Unspecified), "unspecified");
        assert_eq!(parse_level("unspecified"), None);
        assert_eq!(parse_level("Comune"), None);
    }

    #[test]
    fn indexed_view() {
        let t = Taxonomy::new(taxonomy(vec![
            category("b", v1::Level::Regione, ""),
            category("a.x", v1::Level::Provincia, "a"),
            category("a", v1::Level::Comune, ""),
        ]))
        .unwrap();
        assert_eq!(t.version(), 1);
        assert_eq!(t.len(), 3);
        assert!(!t.is_empty());
        let codes: Vec<&str> = t.categories().map(|c| c.code.as_str()).collect();
        assert_eq!(codes, ["a", "a.x", "b"]);
        assert_eq!(t.level_of("a.x"), Some(v1::Level::Provincia));
        assert_eq!(t.level_of("nope"), None);
        assert!(t.get("nope").is_none());
        let proto = t.clone().to_proto();
        assert_eq!(proto.categories.len(), 3);
        assert_eq!(proto.categories[0].code, "a");
        assert!(Taxonomy::new(taxonomy(vec![category("a.b", v1::Level::Comune, "a")])).is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn level() -> impl Strategy<Value = v1::Level> {
            prop_oneof![
                Just(v1::Level::Comune),
                Just(v1::Level::Provincia),
                Just(v1::Level::Regione),
                Just(v1::Level::Nazionale),
            ]
        }

        fn label() -> impl Strategy<Value = String> {
            "[a-zA-Zàèéìòù0-9 '\"\\\\#=.,()\\[\\]{}-]{0,60}[a-zà]"
        }

        /// Valid taxonomies: top-level codes, each with sub-categories filed
        /// under their implied parent or explicitly under a top-level code.
        fn valid_taxonomy() -> impl Strategy<Value = v1::Taxonomy> {
            let sub = (
                "[a-z][a-z0-9_]{0,6}",
                label(),
                level(),
                any::<Option<prop::sample::Index>>(),
            );
            let top = (
                "[a-z][a-z0-9_]{0,6}",
                label(),
                level(),
                prop::collection::vec(sub, 0..4),
            );
            (
                any::<u32>(),
                prop::collection::btree_map("[a-z][a-z0-9_]{0,6}", top, 1..8),
            )
                .prop_map(|(version, tops)| {
                    let roots: Vec<String> = tops.keys().cloned().collect();
                    let mut categories = BTreeMap::new();
                    for (root, (_, root_label, root_level, subs)) in tops {
                        for (word, label, level, explicit) in subs {
                            let code = format!("{root}.{word}");
                            let parent = match explicit {
                                Some(index) => roots[index.index(roots.len())].clone(),
                                None => root.clone(),
                            };
                            categories.insert(code.clone(), with_body(code, label, level, parent));
                        }
                        categories.insert(
                            root.clone(),
                            with_body(root, root_label, root_level, String::new()),
                        );
                    }
                    v1::Taxonomy {
                        version,
                        categories: categories.into_values().collect(),
                    }
                })
        }

        fn with_body(
            code: String,
            label: String,
            level: v1::Level,
            parent: String,
        ) -> v1::Category {
            let competent_body = if level == v1::Level::Nazionale {
                "inps".to_string()
            } else {
                String::new()
            };
            v1::Category {
                code,
                label,
                level: level as i32,
                parent,
                competent_body,
                citizen: None,
            }
        }

        proptest! {
            #[test]
            fn to_toml_then_parse_toml_is_identity(t in valid_taxonomy()) {
                validate(&t).unwrap();
                let text = to_toml(&t);
                prop_assert_eq!(parse_toml(&text).unwrap(), t, "{}", text);
            }
        }
    }
}
