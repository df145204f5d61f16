//! Entry keys and the rules of a valid FAQ version.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use urpnet_proto::ids::NodeId;
use urpnet_proto::territory::Territory;
use urpnet_proto::v1::{FaqContent, FaqVersion};
use urpnet_proto::validate::Violations;

/// Largest signed payload of one version, in bytes. Receivers refuse larger
/// ones before decoding.
pub const MAX_VERSION_BYTES: usize = 128 * 1024;
/// Question length, in characters.
pub const QUESTION_CHARS: (usize, usize) = (3, 300);
/// Answer length, in characters.
pub const ANSWER_CHARS: (usize, usize) = (1, 20_000);
/// Most categories per entry.
pub const MAX_CATEGORIES: usize = 8;
/// Most territory codes per entry.
pub const MAX_TERRITORY: usize = 200;
/// Most tags per entry.
pub const MAX_TAGS: usize = 20;
/// Most links per entry.
pub const MAX_LINKS: usize = 10;

/// An entry's name across the network: its owner and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The owner's node id.
    pub owner: String,
    /// The entry id (ULID).
    pub entry_id: String,
}

impl Key {
    /// A key from its parts.
    pub fn new(owner: impl Into<String>, entry_id: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            entry_id: entry_id.into(),
        }
    }

    /// Parses `<owner>/<entry_id>`.
    ///
    /// # Errors
    /// A violation of `field` naming the expected form.
    pub fn parse(field: &str, text: &str) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let rule = "must be <owner>/<entry_id>, e.g. r_abruzz/01JD3Q5Z8W2N4V6X7Y9A0B1C2D";
        match text.split_once('/') {
            Some((owner, entry))
                if NodeId::new(owner).is_ok() && ulid::Ulid::from_string(entry).is_ok() =>
            {
                return Ok(Self::new(owner, entry.to_ascii_uppercase()));
            }
            _ => v.add(field, rule),
        }
        Err(v)
    }

    /// The key of a version.
    pub fn of(version: &FaqVersion) -> Self {
        Self::new(&version.owner, &version.entry_id)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.entry_id)
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, if it is one.
pub fn parse_day(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let stamp = humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok()?;
    let secs = stamp.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some((secs / 86_400) as i64)
}

/// Today (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    day_string(SystemTime::now())
}

/// `at` (UTC) as `YYYY-MM-DD`.
pub fn day_string(at: SystemTime) -> String {
    humantime::format_rfc3339(at).to_string()[..10].to_string()
}

/// Days since 1970-01-01 of today (UTC).
pub fn today_days() -> i64 {
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 86_400) as i64
}

use urpnet_proto::archive::category_ok;

/// Checks an entry's content; violations name `<prefix>.<field>`.
pub fn validate_content(content: &FaqContent, prefix: &str, v: &mut Violations) {
    let f = |name: &str| format!("{prefix}.{name}");
    v.length(
        &f("question"),
        &content.question,
        QUESTION_CHARS.0,
        QUESTION_CHARS.1,
    );
    v.printable(&f("question"), &content.question);
    v.check(
        !content.question.contains(['\n', '\r']),
        f("question"),
        "must be one line",
    );
    v.length(
        &f("answer"),
        &content.answer,
        ANSWER_CHARS.0,
        ANSWER_CHARS.1,
    );
    v.printable(&f("answer"), &content.answer);
    v.check(
        content.language.len() == 2 && content.language.bytes().all(|c| c.is_ascii_lowercase()),
        f("language"),
        "must be an ISO 639-1 code in lowercase, e.g. it",
    );
    v.check(
        (1..=MAX_CATEGORIES).contains(&content.categories.len()),
        f("categories"),
        format!("must name 1..={MAX_CATEGORIES} categories of the taxonomy"),
    );
    for (i, code) in content.categories.iter().enumerate() {
        v.check(
            category_ok(code),
            format!("{}[{i}]", f("categories")),
            "must be a taxonomy code like anagrafe.certificati",
        );
    }
    v.check(
        content.territory.len() <= MAX_TERRITORY,
        f("territory"),
        format!("at most {MAX_TERRITORY} codes"),
    );
    let italy = Territory::italy();
    for (i, code) in content.territory.iter().enumerate().take(MAX_TERRITORY) {
        v.check(
            italy.level_of(code).is_some(),
            format!("{}[{i}]", f("territory")),
            "must be an ISTAT code of a region (2 digits), province (3) or comune (6)",
        );
    }
    let from = (!content.valid_from.is_empty()).then(|| parse_day(&content.valid_from));
    let until = (!content.valid_until.is_empty()).then(|| parse_day(&content.valid_until));
    v.check(
        !matches!(from, Some(None)),
        f("valid_from"),
        "must be a date YYYY-MM-DD",
    );
    v.check(
        !matches!(until, Some(None)),
        f("valid_until"),
        "must be a date YYYY-MM-DD",
    );
    if let (Some(Some(from)), Some(Some(until))) = (from, until) {
        v.check(
            until >= from,
            f("valid_until"),
            "must not be before valid_from",
        );
    }
    v.check(
        content.tags.len() <= MAX_TAGS,
        f("tags"),
        format!("at most {MAX_TAGS}"),
    );
    for (i, tag) in content.tags.iter().enumerate().take(MAX_TAGS) {
        let field = format!("{}[{i}]", f("tags"));
        v.length(&field, tag, 1, 40);
        v.check(
            !tag.chars().any(char::is_control),
            field,
            "must not contain control characters",
        );
    }
    v.check(
        content.links.len() <= MAX_LINKS,
        f("links"),
        format!("at most {MAX_LINKS}"),
    );
    for (i, link) in content.links.iter().enumerate().take(MAX_LINKS) {
        let field = format!("{}[{i}]", f("links"));
        v.length(&format!("{field}.title"), &link.title, 1, 120);
        v.printable(&format!("{field}.title"), &link.title);
        v.check(
            (link.url.starts_with("https://") || link.url.starts_with("http://"))
                && link.url.len() > 8
                && link.url.len() <= 500
                && !link
                    .url
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control()),
            format!("{field}.url"),
            "must be an absolute http(s) URL of at most 500 characters",
        );
    }
}

/// Checks a version as received (or before signing it).
///
/// # Errors
/// Every rule broken, by field.
pub fn validate_version(version: &FaqVersion) -> Result<(), Violations> {
    let mut v = Violations::new();
    v.check(
        ulid::Ulid::from_string(&version.entry_id).is_ok() && version.entry_id.len() == 26,
        "entry_id",
        "must be a ULID",
    );
    v.check(
        NodeId::new(&version.owner).is_ok(),
        "owner",
        "must be a node id",
    );
    v.check(version.version >= 1, "version", "must be at least 1");
    v.check(version.seq >= 1, "seq", "must be at least 1");
    v.check(
        version.published_at.is_some(),
        "published_at",
        "is required",
    );
    match (&version.content, version.retired) {
        (Some(_), true) => v.add("content", "must be empty in a tombstone (retired)"),
        (None, false) => v.add("content", "is required"),
        (Some(content), false) => validate_content(content, "content", &mut v),
        (None, true) => {}
    }
    v.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use urpnet_proto::v1::{FaqLink, Hlc};

    pub(crate) fn content() -> FaqContent {
        FaqContent {
            question: "Come si richiede la carta d'identità elettronica?".into(),
            answer: "Si prenota sull'*Agenda CIE* e ci si presenta allo sportello.".into(),
            language: "it".into(),
            categories: vec!["anagrafe.cie".into()],
            territory: vec!["066".into()],
            valid_from: "2026-01-01".into(),
            valid_until: String::new(),
            tags: vec!["CIE".into()],
            links: vec![FaqLink {
                title: "Agenda CIE".into(),
                url: "https://www.prenotazionicie.interno.gov.it".into(),
            }],
        }
    }

    fn version() -> FaqVersion {
        FaqVersion {
            entry_id: ulid::Ulid::new().to_string(),
            owner: "c_c413".into(),
            version: 1,
            seq: 1,
            published_at: Some(Hlc::default()),
            retired: false,
            content: Some(content()),
        }
    }

    #[test]
    fn a_complete_version_is_valid() {
        validate_version(&version()).unwrap();
    }

    fn fields(v: &FaqVersion) -> Vec<String> {
        validate_version(v)
            .unwrap_err()
            .0
            .into_iter()
            .map(|f| f.field)
            .collect()
    }

    #[test]
    fn each_rule_names_its_field() {
        let mut v = version();
        v.content.as_mut().unwrap().question = "ok".into();
        assert_eq!(fields(&v), ["content.question"]);
        let mut v = version();
        v.content.as_mut().unwrap().question = "due\nrighe".into();
        assert_eq!(fields(&v), ["content.question"]);
        let mut v = version();
        v.content.as_mut().unwrap().answer = "x".repeat(20_001);
        assert_eq!(fields(&v), ["content.answer"]);
        let mut v = version();
        v.content.as_mut().unwrap().language = "ITA".into();
        assert_eq!(fields(&v), ["content.language"]);
        let mut v = version();
        v.content.as_mut().unwrap().categories = vec![];
        assert_eq!(fields(&v), ["content.categories"]);
        let mut v = version();
        v.content.as_mut().unwrap().categories = vec!["Anagrafe!".into()];
        assert_eq!(fields(&v), ["content.categories[0]"]);
        let mut v = version();
        v.content.as_mut().unwrap().territory = vec!["999999".into()];
        assert_eq!(fields(&v), ["content.territory[0]"]);
        let mut v = version();
        v.content.as_mut().unwrap().valid_until = "2025-12-31".into();
        assert_eq!(fields(&v), ["content.valid_until"]);
        let mut v = version();
        v.content.as_mut().unwrap().valid_from = "2026-02-30".into();
        assert_eq!(fields(&v), ["content.valid_from"]);
        let mut v = version();
        v.content.as_mut().unwrap().links[0].url = "javascript:alert(1)".into();
        assert_eq!(fields(&v), ["content.links[0].url"]);
        let mut v = version();
        v.content.as_mut().unwrap().tags = vec!["t".into(); 21];
        assert_eq!(fields(&v), ["content.tags"]);
        let mut v = version();
        v.retired = true;
        assert_eq!(fields(&v), ["content"]);
        let mut v = version();
        v.entry_id = "nope".into();
        v.version = 0;
        assert_eq!(fields(&v), ["entry_id", "version"]);
    }

    #[test]
    fn keys_round_trip_and_refuse_other_forms() {
        let key = Key::parse("key", "r_abruzz/01JD3Q5Z8W2N4V6X7Y9A0B1C2D").unwrap();
        assert_eq!(key.owner, "r_abruzz");
        assert_eq!(key.to_string(), "r_abruzz/01JD3Q5Z8W2N4V6X7Y9A0B1C2D");
        for bad in [
            "",
            "r_abruzz",
            "/01JD3Q5Z8W2N4V6X7Y9A0B1C2D",
            "R!/x",
            "r_abruzz/notaulid",
        ] {
            assert_eq!(
                Key::parse("key", bad).unwrap_err().0[0].field,
                "key",
                "{bad}"
            );
        }
    }

    #[test]
    fn days_are_counted_from_the_epoch() {
        assert_eq!(parse_day("1970-01-02"), Some(1));
        assert_eq!(parse_day("2026-11-24"), Some(20_781));
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_day("24/11/2026"), None);
        assert_eq!(today().len(), 10);
    }
}
