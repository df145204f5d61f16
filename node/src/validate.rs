//! Validation of Desk requests at the edge (DESIGN.md §10): each rule broken is
//! reported naming the field and the rule, and nothing is stored.

use urpnet_proto::ids::TicketId;
use urpnet_proto::territory::Territory;
use urpnet_proto::v1::{Channel, CitizenContact, CreateTicketRequest, Location, Priority, Status};
use urpnet_proto::validate::Violations;

use crate::config::AttachmentsSection;
use crate::shared_ticket::fold::millis;
use crate::shared_ticket::names;
use crate::taxonomy::Taxonomy;

/// Longest subject, in characters.
pub const SUBJECT_MAX: usize = 200;
/// Longest description or note, in characters.
pub const TEXT_MAX: usize = 10_000;
/// Longest address, file name or name, in characters.
pub const SHORT_MAX: usize = 200;
/// Longest reason, in characters.
pub const REASON_MAX: usize = 1_000;

/// Checks a ticket id.
pub fn ticket_id(v: &mut Violations, field: &str, value: &str) {
    if value.is_empty() {
        v.add(field, "is required");
    } else if TicketId::parse(value).is_err() {
        v.add(field, TicketId::RULE);
    }
}

/// Checks an office code.
pub fn office(v: &mut Violations, field: &str, value: &str) {
    let ok = (1..=64).contains(&value.len())
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    v.check(ok, field, "must match ^[a-z0-9][a-z0-9_.-]{0,63}$");
}

/// Checks a category code against the taxonomy.
pub fn category(v: &mut Violations, field: &str, value: &str, taxonomy: &Taxonomy) {
    if value.is_empty() {
        v.add(field, "is required");
    } else if taxonomy.get(value).is_none() {
        v.add(
            field,
            format!("unknown category `{value}` (see `urpnet-node taxonomy`)"),
        );
    }
}

/// Checks a channel value.
pub fn channel(v: &mut Violations, field: &str, value: i32) {
    if value == 0 || Channel::try_from(value).is_err() {
        v.add(
            field,
            format!("must be one of {}", names::channel_names().join(", ")),
        );
    }
}

/// Checks a status value is known and not unspecified.
pub fn status(v: &mut Violations, field: &str, value: i32) {
    if value == 0 || Status::try_from(value).is_err() {
        v.add(
            field,
            format!("must be one of {}", names::status_names().join(", ")),
        );
    }
}

fn location(v: &mut Violations, location: Option<&Location>) {
    let Some(location) = location else {
        v.add("location.istat_code", "is required");
        return;
    };
    if location.istat_code.is_empty() {
        v.add("location.istat_code", "is required");
    } else if Territory::italy().comune(&location.istat_code).is_none() {
        v.add(
            "location.istat_code",
            "must be the 6-digit ISTAT code of an existing comune",
        );
    }
    v.length("location.address", &location.address, 0, SHORT_MAX);
    v.printable("location.address", &location.address);
    if let Some(c) = location.coordinates {
        v.check(
            c.latitude.is_finite() && (-90.0..=90.0).contains(&c.latitude),
            "location.coordinates.latitude",
            "must be within -90..=90",
        );
        v.check(
            c.longitude.is_finite() && (-180.0..=180.0).contains(&c.longitude),
            "location.coordinates.longitude",
            "must be within -180..=180",
        );
    }
}

/// Checks a citizen's contact (also one passed on by a peer).
pub fn citizen(v: &mut Violations, c: &CitizenContact) {
    v.length("citizen.full_name", &c.full_name, 0, SHORT_MAX);
    v.printable("citizen.full_name", &c.full_name);
    if !c.email.is_empty() {
        let ok = c.email.len() <= 254
            && c.email
                .split_once('@')
                .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
            && !c.email.chars().any(char::is_whitespace);
        v.check(
            ok,
            "citizen.email",
            "must be an e-mail address of at most 254 characters",
        );
    }
    if !c.phone.is_empty() {
        let ok = c.phone.len() <= 32
            && c.phone
                .chars()
                .all(|ch| ch.is_ascii_digit() || matches!(ch, '+' | ' ' | '-' | '/'))
            && c.phone.chars().filter(char::is_ascii_digit).count() >= 5;
        v.check(
            ok,
            "citizen.phone",
            "must be at most 32 characters of digits, spaces, '+', '-', '/'",
        );
    }
    if !c.fiscal_code.is_empty() {
        let ok =
            c.fiscal_code.len() == 16 && c.fiscal_code.chars().all(|ch| ch.is_ascii_alphanumeric());
        v.check(ok, "citizen.fiscal_code", "must be 16 letters and digits");
    }
}

/// Most answers to a service's questions in one request.
pub const MAX_ANSWERS: usize = 20;
/// Longest answer, in characters.
pub const ANSWER_MAX: usize = 500;

/// The shape of answers, whatever the taxonomy says: at most
/// [`MAX_ANSWERS`], codes well-formed and unique, values printable and short.
fn answer_shapes(v: &mut Violations, field: &str, answers: &[urpnet_proto::v1::ServiceAnswer]) {
    v.check(
        answers.len() <= MAX_ANSWERS,
        field,
        format!("at most {MAX_ANSWERS}"),
    );
    let mut seen = std::collections::HashSet::new();
    for (i, a) in answers.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let code_ok = !a.code.is_empty()
            && a.code.len() <= 40
            && a.code.as_bytes()[0].is_ascii_lowercase()
            && a.code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        v.check(
            code_ok,
            format!("{f}.code"),
            "must match ^[a-z][a-z0-9_]{0,39}$",
        );
        v.check(
            seen.insert(a.code.as_str()),
            format!("{f}.code"),
            format!("`{}` is answered twice", a.code),
        );
        v.length(&format!("{f}.value"), &a.value, 0, ANSWER_MAX);
        v.printable(&format!("{f}.value"), &a.value);
    }
}

/// Answers checked against the category's citizen questions: listed values
/// among the keys, numbers numeric, no unknown code, and, for a citizen's
/// own report (`self_service`: Open311), required ones answered. An operator
/// taking a call files what the caller knows.
fn answers(
    v: &mut Violations,
    answers: &[urpnet_proto::v1::ServiceAnswer],
    category: Option<&urpnet_proto::v1::Category>,
    self_service: bool,
) {
    answer_shapes(v, "answers", answers);
    let questions: &[urpnet_proto::v1::ServiceQuestion] = category
        .and_then(|c| c.citizen.as_ref())
        .map(|s| s.questions.as_slice())
        .unwrap_or_default();
    for (i, a) in answers.iter().enumerate() {
        let f = format!("answers[{i}]");
        let Some(q) = questions.iter().find(|q| q.code == a.code) else {
            v.add(
                format!("{f}.code"),
                format!("`{}` is not a question of this category", a.code),
            );
            continue;
        };
        match q.datatype.as_str() {
            "number" => v.check(
                a.value.trim().parse::<f64>().is_ok_and(f64::is_finite),
                format!("{f}.value"),
                "must be a number",
            ),
            "datetime" => v.check(
                a.value.trim().parse::<jiff::Timestamp>().is_ok(),
                format!("{f}.value"),
                "must be an ISO 8601 date and time with its offset",
            ),
            "singlevaluelist" | "multivaluelist" => {
                let keys: Vec<&str> = if q.datatype == "singlevaluelist" {
                    vec![a.value.as_str()]
                } else {
                    a.value.split(',').map(str::trim).collect()
                };
                let ok = keys
                    .iter()
                    .all(|k| q.values.iter().any(|val| val.key == *k));
                let allowed: Vec<&str> = q.values.iter().map(|val| val.key.as_str()).collect();
                v.check(
                    ok,
                    format!("{f}.value"),
                    format!("must be one of {}", allowed.join(", ")),
                );
            }
            _ => {}
        }
    }
    for q in questions.iter().filter(|q| q.required && self_service) {
        v.check(
            answers
                .iter()
                .any(|a| a.code == q.code && !a.value.trim().is_empty()),
            format!("answers.{}", q.code),
            format!("is required ({})", q.description),
        );
    }
}

/// Checks the fields of a `Created` event a peer sent, with the desk's
/// limits (the category is checked against the taxonomy by nobody here: a
/// peer may know a newer version).
pub fn created_from_peer(v: &mut Violations, c: &urpnet_proto::v1::Created) {
    v.length("created.reference", &c.reference, 1, 64);
    v.length("created.category", &c.category, 1, 64);
    v.check(
        c.category
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_'),
        "created.category",
        "must be lowercase letters, digits, '.' and '_'",
    );
    channel(v, "created.channel", c.channel);
    answer_shapes(v, "created.answers", &c.answers);
    v.length("created.subject", &c.subject, 1, SUBJECT_MAX);
    v.printable("created.subject", &c.subject);
    v.length("created.description", &c.description, 0, TEXT_MAX);
    v.printable("created.description", &c.description);
    location(v, c.location.as_ref());
    if c.priority != 0 && Priority::try_from(c.priority).is_err() {
        v.add("created.priority", "is not a known priority");
    }
    v.check(
        c.attachments.len() <= 64,
        "created.attachments",
        "at most 64",
    );
    for (i, a) in c.attachments.iter().enumerate() {
        let ok = a.sha256.len() == 64 && a.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        v.check(
            ok,
            format!("created.attachments[{i}].sha256"),
            "must be 64 hex digits",
        );
        v.length(
            &format!("created.attachments[{i}].file_name"),
            &a.file_name,
            1,
            SHORT_MAX,
        );
        v.check(
            !a.file_name.contains(['/', '\\']) && !a.file_name.chars().any(char::is_control),
            format!("created.attachments[{i}].file_name"),
            "must not contain '/', '\\' or control characters",
        );
    }
}

/// Checks a create request; `now_ms` bounds the due date.
///
/// # Errors
/// Every rule broken.
pub fn create_request(
    req: &CreateTicketRequest,
    taxonomy: &Taxonomy,
    limits: &AttachmentsSection,
    now_ms: u64,
) -> Result<(), Violations> {
    let mut v = Violations::new();
    let id_ok = (8..=64).contains(&req.request_id.len())
        && req
            .request_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if req.request_id.is_empty() {
        v.add(
            "request_id",
            "is required (a client-chosen idempotency key)",
        );
    } else {
        v.check(
            id_ok,
            "request_id",
            "must be 8..=64 characters of A-Z a-z 0-9 _ -",
        );
    }
    category(&mut v, "category", &req.category, taxonomy);
    answers(
        &mut v,
        &req.answers,
        taxonomy.get(&req.category),
        req.channel == urpnet_proto::v1::Channel::Open311 as i32,
    );
    channel(&mut v, "channel", req.channel);
    v.length("subject", &req.subject, 3, SUBJECT_MAX);
    v.printable("subject", &req.subject);
    v.length("description", &req.description, 0, TEXT_MAX);
    v.printable("description", &req.description);
    location(&mut v, req.location.as_ref());
    if req.priority != 0 && Priority::try_from(req.priority).is_err() {
        v.add(
            "priority",
            format!("must be one of {}", names::priority_names().join(", ")),
        );
    }
    if req.attachments.len() > limits.max_per_request {
        v.add(
            "attachments",
            format!("at most {} per request", limits.max_per_request),
        );
    }
    for (i, a) in req.attachments.iter().enumerate() {
        let f = |name: &str| format!("attachments[{i}].{name}");
        v.length(&f("file_name"), &a.file_name, 1, SHORT_MAX);
        v.check(
            !a.file_name.contains(['/', '\\']) && !a.file_name.chars().any(char::is_control),
            f("file_name"),
            "must not contain '/', '\\' or control characters",
        );
        if !limits
            .allowed_media_types
            .iter()
            .any(|t| t == &a.media_type)
        {
            v.add(
                f("media_type"),
                format!("must be one of {}", limits.allowed_media_types.join(", ")),
            );
        }
        if a.content.is_empty() {
            v.add(f("content"), "must not be empty");
        } else if a.content.len() as u64 > limits.max_bytes {
            v.add(
                f("content"),
                format!(
                    "must be at most {} bytes (got {})",
                    limits.max_bytes,
                    a.content.len()
                ),
            );
        }
    }
    if let Some(c) = &req.citizen {
        citizen(&mut v, c);
    }
    if let Some(due) = &req.due_at {
        let due_ms = millis(due);
        let two_years = 2 * 366 * 24 * 3600 * 1000;
        v.check(
            due.seconds > 0 && due_ms > now_ms && due_ms < now_ms + two_years,
            "due_at",
            "must be in the future and within two years",
        );
    }
    v.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use urpnet_proto::v1::{AttachmentUpload, Coordinates};

    fn good() -> CreateTicketRequest {
        CreateTicketRequest {
            request_id: "req-00000001".into(),
            category: "rifiuti.ingombranti".into(),
            channel: Channel::App as i32,
            subject: "Materasso abbandonato".into(),
            description: "In via Sparano c'è un materasso da giorni.".into(),
            location: Some(Location {
                istat_code: "072006".into(),
                address: "Via Sparano 10".into(),
                coordinates: Some(Coordinates {
                    latitude: 41.12,
                    longitude: 16.87,
                }),
            }),
            ..Default::default()
        }
    }

    fn fields(req: &CreateTicketRequest) -> Vec<String> {
        match create_request(
            req,
            &crate::taxonomy::builtin(),
            &AttachmentsSection::default(),
            1_700_000_000_000,
        ) {
            Ok(()) => vec![],
            Err(v) => v.0.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn a_good_request_passes() {
        assert!(fields(&good()).is_empty());
    }

    #[test]
    fn each_rule_names_its_field() {
        type Mutate = Box<dyn Fn(&mut CreateTicketRequest)>;
        let cases: Vec<(&str, Mutate)> = vec![
            ("request_id", Box::new(|r| r.request_id = "short".into())),
            (
                "request_id",
                Box::new(|r| r.request_id = "bad id with spaces".into()),
            ),
            ("category", Box::new(|r| r.category = "astrologia".into())),
            ("category", Box::new(|r| r.category.clear())),
            ("channel", Box::new(|r| r.channel = 0)),
            ("channel", Box::new(|r| r.channel = 99)),
            ("subject", Box::new(|r| r.subject = "x".repeat(201))),
            ("subject", Box::new(|r| r.subject.clear())),
            (
                "description",
                Box::new(|r| r.description = "x".repeat(10_001)),
            ),
            ("location.istat_code", Box::new(|r| r.location = None)),
            (
                "location.istat_code",
                Box::new(|r| r.location.as_mut().unwrap().istat_code = "999999".into()),
            ),
            (
                "location.address",
                Box::new(|r| r.location.as_mut().unwrap().address = "x".repeat(201)),
            ),
            (
                "location.coordinates.latitude",
                Box::new(|r| {
                    r.location
                        .as_mut()
                        .unwrap()
                        .coordinates
                        .as_mut()
                        .unwrap()
                        .latitude = 91.0
                }),
            ),
            (
                "location.coordinates.longitude",
                Box::new(|r| {
                    r.location
                        .as_mut()
                        .unwrap()
                        .coordinates
                        .as_mut()
                        .unwrap()
                        .longitude = f64::NAN
                }),
            ),
            ("priority", Box::new(|r| r.priority = 42)),
            (
                "attachments[0].media_type",
                Box::new(|r| {
                    r.attachments.push(AttachmentUpload {
                        file_name: "a.exe".into(),
                        media_type: "application/x-msdownload".into(),
                        content: vec![1],
                    })
                }),
            ),
            (
                "attachments[0].content",
                Box::new(|r| {
                    r.attachments.push(AttachmentUpload {
                        file_name: "big.pdf".into(),
                        media_type: "application/pdf".into(),
                        content: vec![0; 10 * 1024 * 1024 + 1],
                    })
                }),
            ),
            (
                "attachments[0].file_name",
                Box::new(|r| {
                    r.attachments.push(AttachmentUpload {
                        file_name: "../etc/passwd".into(),
                        media_type: "text/plain".into(),
                        content: vec![1],
                    })
                }),
            ),
            (
                "citizen.email",
                Box::new(|r| {
                    r.citizen = Some(CitizenContact {
                        email: "not-an-address".into(),
                        ..Default::default()
                    })
                }),
            ),
            (
                "citizen.phone",
                Box::new(|r| {
                    r.citizen = Some(CitizenContact {
                        phone: "call me".into(),
                        ..Default::default()
                    })
                }),
            ),
            (
                "citizen.fiscal_code",
                Box::new(|r| {
                    r.citizen = Some(CitizenContact {
                        fiscal_code: "RSSMRA".into(),
                        ..Default::default()
                    })
                }),
            ),
            (
                "due_at",
                Box::new(|r| {
                    r.due_at = Some(prost_types::Timestamp {
                        seconds: 1,
                        nanos: 0,
                    })
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut req = good();
            mutate(&mut req);
            assert_eq!(fields(&req), vec![field.to_string()], "case for {field}");
        }
    }

    proptest::proptest! {
        /// Whatever arrives, validation answers (never panics), and a request
        /// it accepts has the fields the store relies on.
        #[test]
        fn validation_never_panics_and_accepts_only_sound_requests(
            request_id in ".{0,80}",
            category in "[a-z_.]{0,30}",
            channel in proptest::prelude::any::<i32>(),
            subject in "\\PC{0,250}",
            istat in "[0-9]{0,8}",
            lat in proptest::prelude::any::<f64>(),
            lon in proptest::prelude::any::<f64>(),
            priority in proptest::prelude::any::<i32>(),
            email in ".{0,300}",
        ) {
            let req = CreateTicketRequest {
                request_id,
                category,
                channel,
                subject,
                location: Some(Location {
                    istat_code: istat,
                    address: String::new(),
                    coordinates: Some(Coordinates { latitude: lat, longitude: lon }),
                }),
                priority,
                citizen: Some(CitizenContact { email, ..Default::default() }),
                ..Default::default()
            };
            let accepted =
                create_request(&req, &crate::taxonomy::builtin(), &AttachmentsSection::default(), 1_700_000_000_000).is_ok();
            if accepted {
                proptest::prop_assert!(crate::taxonomy::builtin().get(&req.category).is_some());
                proptest::prop_assert!(Channel::try_from(req.channel).is_ok() && req.channel != 0);
                let c = req.location.as_ref().unwrap().coordinates.unwrap();
                proptest::prop_assert!(c.latitude.abs() <= 90.0 && c.longitude.abs() <= 180.0);
                proptest::prop_assert!((3..=200).contains(&req.subject.chars().count()));
            }
        }
    }
}
