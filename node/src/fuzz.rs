//! Entry points for the fuzz targets (`fuzz/`) and for their regression
//! tests (`fuzz-targets/tests/corpus.rs`): each takes bytes as they would
//! come from outside and must return, whatever they are, without a panic,
//! an unbounded allocation or a hang. A few also check a property of what
//! they accept (a decoded photo fits its limits, a refusal names a rule).
//!
//! Signed records are fuzzed twice: as raw envelopes (the signature check
//! refuses nearly all of them, which exercises the checks before it), and
//! as payloads signed with a key the member list knows, so the fuzzer's
//! bytes reach the payload decoders and their rules.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use prost::Message as _;
use urpnet_proto::hlc::HybridClock;
use urpnet_proto::ids::NodeId;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::v1::{DeliverRequest, FaqPushRequest, Member, MemberStatus, PayloadKind};

use crate::charter::CharterKind;
use crate::faq::FaqKind;
use crate::peering::verify::Refusal;
use crate::registry_link::Members;

/// The member the fuzzer's signed payloads come from.
pub const FUZZ_AUTHOR: &str = "c_c426";

static SIGNER: LazyLock<NodeSigner> =
    LazyLock::new(|| NodeSigner::from_seed(NodeId::new(FUZZ_AUTHOR).expect("valid id"), [7; 32]));

static MEMBERS: LazyLock<Members> = LazyLock::new(|| {
    let mut by_id = BTreeMap::new();
    for (id, status) in [
        (FUZZ_AUTHOR, MemberStatus::Active),
        ("r_abruzzo", MemberStatus::Revoked),
    ] {
        by_id.insert(
            id.to_string(),
            Member {
                id: id.into(),
                display_name: id.into(),
                territory: vec!["066032".into()],
                signing_key: SIGNER.verifying_key().to_bytes().to_vec(),
                status: status as i32,
                ..Default::default()
            },
        );
    }
    Members { version: 1, by_id }
});

fn clock() -> HybridClock {
    HybridClock::new(Duration::from_secs(60))
}

/// A refusal must say what was wrong.
fn named(r: &Refusal) {
    let (Refusal::Refuse { code, reason } | Refusal::Retry { code, reason, .. }) = r;
    assert!(!code.is_empty() && !reason.is_empty(), "{r:?}");
}

/// `Peering.Deliver`: the first byte chooses raw envelopes (a
/// `DeliverRequest`) or one ticket event signed by a known member.
pub fn ticket_events(data: &[u8]) {
    for r in ticket_verdicts(data)
        .iter()
        .filter_map(|r| r.as_ref().err())
    {
        named(r);
    }
}

fn ticket_verdicts(data: &[u8]) -> Vec<Result<(), Refusal>> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    let envelopes = if mode & 1 == 0 {
        match DeliverRequest::decode(rest) {
            Ok(r) => r.events,
            Err(_) => return Vec::new(),
        }
    } else {
        vec![SIGNER.sign(PayloadKind::TicketEvent, rest.to_vec())]
    };
    let results = crate::peering::verify::batch(&envelopes, &MEMBERS, &clock());
    assert_eq!(results.len(), envelopes.len(), "one verdict per envelope");
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.map(|incoming| {
                assert_eq!(incoming.index, i, "verdicts in order");
            })
        })
        .collect()
}

/// `FaqExchange.Push` of FAQ or charter versions: the first byte chooses
/// raw envelopes (a `FaqPushRequest`) or one version signed by a known
/// member; the second the kind.
pub fn shared_versions(data: &[u8]) {
    for r in shared_verdicts(data)
        .iter()
        .filter_map(|r| r.as_ref().err())
    {
        named(r);
    }
}

fn shared_verdicts(data: &[u8]) -> Vec<Result<(), Refusal>> {
    let [mode, kind, rest @ ..] = data else {
        return Vec::new();
    };
    let charter = kind & 1 == 1;
    let envelopes = if mode & 1 == 0 {
        match FaqPushRequest::decode(rest) {
            Ok(r) => r.versions,
            Err(_) => return Vec::new(),
        }
    } else {
        let payload = if charter {
            PayloadKind::CharterVersion
        } else {
            PayloadKind::FaqVersion
        };
        vec![SIGNER.sign(payload, rest.to_vec())]
    };
    let clock = clock();
    let verdicts: Vec<Result<(), Refusal>> = if charter {
        crate::replica::verify::versions::<CharterKind>(&envelopes, &MEMBERS, &clock)
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect()
    } else {
        crate::replica::verify::versions::<FaqKind>(&envelopes, &MEMBERS, &clock)
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect()
    };
    assert_eq!(verdicts.len(), envelopes.len(), "one verdict per envelope");
    verdicts
}

/// The verdicts of `ticket_events` or `shared_versions` on `data` (for the
/// test that the signed seeds get past the signature).
pub fn verdicts(target: &str, data: &[u8]) -> Vec<Result<(), Refusal>> {
    match target {
        "ticket_events" => ticket_verdicts(data),
        "shared_versions" => shared_verdicts(data),
        _ => Vec::new(),
    }
}

/// An Open311 / web-report POST body: the first byte chooses the content
/// type (form-encoded, or multipart with the boundary `XyZ`), the rest is
/// the body. Read with the public listener's limit.
pub fn open311_form(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let content_type = match mode % 3 {
        0 => "application/x-www-form-urlencoded",
        1 => "multipart/form-data; boundary=XyZ",
        _ => "multipart/form-data",
    };
    let request = axum::extract::Request::builder()
        .method("POST")
        .header(axum::http::header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(body.to_vec()))
        .expect("request");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    match runtime.block_on(crate::public::open311::read_form(1 << 20, request)) {
        Ok(form) => {
            // Nothing is made from nothing: a field is at most what its
            // bytes decode to (invalid UTF-8 becomes U+FFFD, three bytes
            // for one; the first fuzzing run found that a bound of one
            // byte per byte was wrong).
            let total: usize = form.fields().iter().map(|(n, v)| n.len() + v.len()).sum();
            assert!(
                total <= 3 * body.len(),
                "{total} bytes of fields from {}",
                body.len()
            );
        }
        Err(message) => assert!(!message.is_empty()),
    }
}

/// A citizen's photo: decoded, turned upright and encoded again without
/// metadata, in the family it came in.
pub fn photo(data: &[u8]) {
    if let Ok(clean) = crate::public::photo::clean(data) {
        assert!(!clean.bytes.is_empty());
        let again = image::guess_format(&clean.bytes).expect("a known format");
        assert_eq!(again.to_mime_type(), clean.media_type);
    }
}

/// The node's configuration file, with no overrides.
pub fn node_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(message) = crate::config::NodeConfig::parse(text, &BTreeMap::new()) {
        assert!(!message.is_empty());
    }
}

/// A charter as TOML, or as the two CSV sheets (offices, then services,
/// split at the first NUL byte).
pub fn charter_import(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    static TAXONOMY: LazyLock<urpnet_proto::taxonomy::Taxonomy> =
        LazyLock::new(crate::taxonomy::builtin);
    let taxonomy = Some(&*TAXONOMY);
    let result = if mode & 1 == 0 {
        crate::charter::import::from_toml("fuzz.toml", text, "c_c426", taxonomy)
    } else {
        let (offices, services) = text.split_once('\0').unwrap_or((text, ""));
        crate::charter::import::from_csv(
            ("uffici.csv", offices),
            ("servizi.csv", services),
            "c_c426",
            "07-16",
            taxonomy,
        )
    };
    if let Err(errors) = result {
        assert!(!errors.to_string().is_empty());
    }
}

/// A collection of sample FAQ entries (`urpnet-node faq import`).
pub fn faq_sample(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(message) = crate::faq::sample::parse(text) {
        assert!(!message.is_empty());
    }
}

/// An archive batch as the registry receives it: every record checked on
/// its own, a bad one refused with its reason, the good ones kept.
pub fn archive_batch(data: &[u8]) {
    let Ok(batch) = urpnet_proto::v1::ArchiveBatch::decode(data) else {
        return;
    };
    let regions = urpnet_proto::archive::regions_of_member(&["066032".to_string()]);
    let now_week = urpnet_proto::archive::week_of_ms(1_780_000_000_000);
    for bytes in batch.records.iter().take(2000) {
        match urpnet_proto::archive::check_record(bytes, regions.as_ref(), now_week) {
            Ok(record) => assert!(record.encoded_len() <= urpnet_proto::archive::RECORD_MAX_BYTES),
            Err(refusal) => assert!(!refusal.reason.is_empty() && !refusal.detail.is_empty()),
        }
    }
}

/// A taxonomy file (the registry's, or a node's override).
pub fn taxonomy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = urpnet_proto::taxonomy::parse_toml(text) {
        // What parses also passes the rules a node checks on load.
        urpnet_proto::taxonomy::Taxonomy::new(t).expect("a parsed taxonomy is valid");
    }
}

/// The texts a booking puts into its calendar invitation, split at NUL
/// bytes: whatever they hold, the invitation keeps its structure (no
/// property injected, every line folded at 75 octets, CRLF only).
pub fn ics(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0').map(str::to_string);
    let mut next = || parts.next().unwrap_or_default();
    let at: jiff::Timestamp = "2026-03-30T07:00:00Z".parse().expect("instant");
    let a = urpnet_proto::ics::Appointment {
        uid: next(),
        sequence: 1,
        start: at,
        end: at + jiff::SignedDuration::from_mins(20),
        summary: next(),
        description: next(),
        location: next(),
        url: next(),
        organizer: next(),
        attendee: next(),
        alarms_min: vec![60],
        stamp: at,
    };
    let out = urpnet_proto::ics::render(urpnet_proto::ics::Method::Request, &a);
    for physical in out.split_inclusive("\r\n") {
        assert!(physical.ends_with("\r\n"), "{physical:?}");
        let body = &physical[..physical.len() - 2];
        assert!(body.len() <= 75, "{} octets: {body:?}", body.len());
        assert!(!body.contains(['\r', '\n']), "{body:?}");
    }
    let unfolded = out.replace("\r\n ", "");
    const NAMES: &[&str] = &[
        "BEGIN",
        "END",
        "VERSION",
        "PRODID",
        "CALSCALE",
        "METHOD",
        "TZID",
        "TZOFFSETFROM",
        "TZOFFSETTO",
        "TZNAME",
        "DTSTART",
        "RRULE",
        "UID",
        "SEQUENCE",
        "DTSTAMP",
        "DTEND",
        "SUMMARY",
        "DESCRIPTION",
        "STATUS",
        "TRANSP",
        "LOCATION",
        "URL",
        "ORGANIZER",
        "ATTENDEE",
        "ACTION",
        "TRIGGER",
    ];
    let lines: Vec<&str> = unfolded.split("\r\n").filter(|l| !l.is_empty()).collect();
    for line in &lines {
        let name = line.split([':', ';']).next().unwrap_or_default();
        assert!(
            NAMES.contains(&name),
            "unexpected property {name:?} in {line:?}"
        );
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("BEGIN:VEVENT"))
            .count(),
        1
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("ATTENDEE")).count(),
        1.min(a.attendee.len())
    );
}
