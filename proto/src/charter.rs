//! The service charter's rules (DESIGN.md §12): what a valid charter is, and
//! each office's calendar.
//!
//! [`validate`] checks a whole charter and names every broken rule by its
//! field path (`offices[2].hours[1].end`, `services[5].delivered[0].office_id`),
//! so an import or a received version is refused with all its errors at once.
//! The category codes are checked against a taxonomy when one is given.

use std::collections::HashSet;

use jiff::civil::Date;

use crate::calendar::{Calendar, Hours};
use crate::v1::{Charter, CharterOffice};
use crate::validate::Violations;

/// Most offices in one charter.
pub const MAX_OFFICES: usize = 200;
/// Most services in one charter.
pub const MAX_SERVICES: usize = 2000;
/// The channels a service may be delivered through.
pub const CHANNELS: &[&str] = &["desk", "online", "pec", "phone", "post", "booking"];

fn is_code(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn date(v: &mut Violations, field: &str, s: &str) -> Option<Date> {
    if s.is_empty() {
        return None;
    }
    match s.parse::<Date>() {
        Ok(d) => Some(d),
        Err(_) => {
            v.add(field, "must be a date YYYY-MM-DD");
            None
        }
    }
}

/// Every broken rule of `charter`; `taxonomy`, when given, also checks the
/// services' categories.
///
/// # Errors
/// The violations, each naming its field.
pub fn validate(
    charter: &Charter,
    taxonomy: Option<&crate::taxonomy::Taxonomy>,
) -> Result<(), Violations> {
    let mut v = Violations::new();
    v.check(
        crate::ids::NodeId::new(charter.body.as_str()).is_ok(),
        "body",
        "must be a node id (the body's IPA code)",
    );
    if !charter.patron_day.is_empty() {
        let ok = charter
            .patron_day
            .split_once('-')
            .and_then(|(m, d)| Some((m.parse::<i8>().ok()?, d.parse::<i8>().ok()?)))
            .is_some_and(|(m, d)| Date::new(2024, m, d).is_ok());
        v.check(ok, "patron_day", "must be MM-DD, a day of the year");
    }
    v.check(
        charter.offices.len() <= MAX_OFFICES,
        "offices",
        format!("at most {MAX_OFFICES}"),
    );
    v.check(
        charter.services.len() <= MAX_SERVICES,
        "services",
        format!("at most {MAX_SERVICES}"),
    );
    let mut offices = HashSet::new();
    for (i, o) in charter.offices.iter().enumerate() {
        let f = |name: &str| format!("offices[{i}].{name}");
        v.check(
            is_code(&o.id),
            f("id"),
            "must match ^[a-z0-9][a-z0-9-]{0,63}$",
        );
        v.check(
            offices.insert(o.id.as_str()),
            f("id"),
            format!("`{}` is used twice", o.id),
        );
        v.length(&f("name"), &o.name, 1, 200);
        v.length(&f("address"), &o.address, 1, 300);
        v.check(
            crate::territory::Territory::italy()
                .comune(&o.istat_code)
                .is_some(),
            f("istat_code"),
            "must be a comune's ISTAT code",
        );
        if let Some(c) = &o.coordinates {
            v.check(
                (-90.0..=90.0).contains(&c.latitude) && (-180.0..=180.0).contains(&c.longitude),
                f("coordinates"),
                "must be within -90..90 and -180..180",
            );
        }
        for (name, value, max) in [
            ("building", &o.building, 100),
            ("floor", &o.floor, 100),
            ("room", &o.room, 100),
            ("directions", &o.directions, 1000),
            ("accessibility", &o.accessibility, 1000),
            ("phone", &o.phone, 200),
            ("email", &o.email, 200),
            ("pec", &o.pec, 200),
        ] {
            v.length(&f(name), value, 0, max);
            v.printable(&f(name), value);
        }
        for (j, h) in o.hours.iter().enumerate() {
            v.check(
                (1..=7).contains(&h.weekday),
                format!("offices[{i}].hours[{j}].weekday"),
                "must be 1 (Monday) to 7 (Sunday)",
            );
            if let Err(e) = Hours::parse(&h.start, &h.end) {
                v.add(format!("offices[{i}].hours[{j}]"), e.to_string());
            }
        }
        for (j, x) in o.exceptions.iter().enumerate() {
            date(
                &mut v,
                &format!("offices[{i}].exceptions[{j}].date"),
                &x.date,
            );
            v.length(
                &format!("offices[{i}].exceptions[{j}].reason"),
                &x.reason,
                0,
                200,
            );
            for (k, r) in x.ranges.iter().enumerate() {
                if let Err(e) = Hours::parse(&r.start, &r.end) {
                    v.add(
                        format!("offices[{i}].exceptions[{j}].ranges[{k}]"),
                        e.to_string(),
                    );
                }
            }
        }
        // Ranges that parse but overlap (the others are named above).
        if let Err(e @ crate::calendar::CalendarError::Overlap(_)) = calendar(o, "") {
            v.add(f("hours"), e.to_string());
        }
    }
    let mut services = HashSet::new();
    for (i, s) in charter.services.iter().enumerate() {
        let f = |name: &str| format!("services[{i}].{name}");
        v.check(
            is_code(&s.id),
            f("id"),
            "must match ^[a-z0-9][a-z0-9-]{0,63}$",
        );
        v.check(
            services.insert(s.id.as_str()),
            f("id"),
            format!("`{}` is used twice", s.id),
        );
        v.length(&f("title"), &s.title, 3, 200);
        for (name, value, max) in [
            ("summary", &s.summary, 600),
            ("description", &s.description, 20_000),
            ("audience", &s.audience, 2000),
            ("how_to", &s.how_to, 5000),
            ("outcome", &s.outcome, 2000),
            ("conditions", &s.conditions, 5000),
        ] {
            v.length(&f(name), value, 0, max);
        }
        v.check(
            (1..=8).contains(&s.categories.len()),
            f("categories"),
            "1 to 8 taxonomy categories",
        );
        if let Some(t) = taxonomy {
            for (j, c) in s.categories.iter().enumerate() {
                v.check(
                    t.get(c).is_some(),
                    format!("services[{i}].categories[{j}]"),
                    format!("`{c}` is not a category of the taxonomy"),
                );
            }
        }
        v.check(s.documents.len() <= 50, f("documents"), "at most 50");
        for (j, d) in s.documents.iter().enumerate() {
            v.length(
                &format!("services[{i}].documents[{j}].name"),
                &d.name,
                1,
                300,
            );
            v.length(
                &format!("services[{i}].documents[{j}].where_to_get"),
                &d.where_to_get,
                0,
                500,
            );
        }
        for (name, days) in [("legal_days", s.legal_days), ("usual_days", s.usual_days)] {
            if let Some(d) = days {
                v.check(d >= 1, f(name), "must be at least 1 day when given");
            }
        }
        if let Some(c) = &s.cost {
            v.check(
                c.amount_cents >= 0,
                f("cost.amount_cents"),
                "must not be negative",
            );
            v.length(&f("cost.description"), &c.description, 0, 500);
        }
        v.check(
            !s.delivered.is_empty(),
            f("delivered"),
            "at least one way to get the service",
        );
        for (j, d) in s.delivered.iter().enumerate() {
            let g = |name: &str| format!("services[{i}].delivered[{j}].{name}");
            v.check(
                CHANNELS.contains(&d.channel.as_str()),
                g("channel"),
                format!("must be one of {}", CHANNELS.join(", ")),
            );
            if matches!(d.channel.as_str(), "desk" | "booking") || !d.office_id.is_empty() {
                v.check(
                    offices.contains(d.office_id.as_str()),
                    g("office_id"),
                    format!("`{}` is not an office of this charter", d.office_id),
                );
            }
            v.length(&g("address"), &d.address, 0, 500);
        }
        if let Some(r) = &s.responsible {
            v.length(&f("responsible.role"), &r.role, 1, 200);
            v.length(&f("responsible.name"), &r.name, 0, 200);
            v.check(
                r.office_id.is_empty() || offices.contains(r.office_id.as_str()),
                f("responsible.office_id"),
                format!("`{}` is not an office of this charter", r.office_id),
            );
        }
        v.check(
            s.legal_references.len() <= 20,
            f("legal_references"),
            "at most 20",
        );
        for (j, l) in s.legal_references.iter().enumerate() {
            v.length(&format!("services[{i}].legal_references[{j}]"), l, 1, 300);
        }
        v.check(s.keywords.len() <= 30, f("keywords"), "at most 30");
        for (j, k) in s.keywords.iter().enumerate() {
            v.length(&format!("services[{i}].keywords[{j}]"), k, 1, 40);
        }
        let from = date(&mut v, &f("valid_from"), &s.valid_from);
        let until = date(&mut v, &f("valid_until"), &s.valid_until);
        if let (Some(a), Some(b)) = (from, until) {
            v.check(a <= b, f("valid_until"), "must not be before valid_from");
        }
    }
    v.into_result()
}

/// An office's calendar: its weekly hours and exceptions, closed on the
/// national holidays and on `patron_day` ("MM-DD", empty: none).
///
/// # Errors
/// Hours that do not parse, end before they start or overlap (naming the
/// day).
pub fn calendar(
    office: &CharterOffice,
    patron_day: &str,
) -> Result<Calendar, crate::calendar::CalendarError> {
    let mut c = Calendar::default();
    for h in &office.hours {
        let day = (h.weekday.clamp(1, 7) - 1) as usize;
        c.weekly[day].push(Hours::parse(&h.start, &h.end)?);
    }
    for x in &office.exceptions {
        let Ok(date) = x.date.parse::<Date>() else {
            continue;
        };
        let mut ranges = Vec::new();
        for r in &x.ranges {
            ranges.push(Hours::parse(&r.start, &r.end)?);
        }
        c.exceptions.insert(date, ranges);
    }
    c.patron = patron_day
        .split_once('-')
        .and_then(|(m, d)| Some((m.parse().ok()?, d.parse().ok()?)));
    c.normalise()?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{
        CharterService, Coordinates, HoursException, OpeningHours, ServiceCost, ServiceDelivery,
        ServiceResponsible, TimeRange,
    };

    fn celano() -> Charter {
        let hours = |weekday, start: &str, end: &str| OpeningHours {
            weekday,
            start: start.into(),
            end: end.into(),
        };
        Charter {
            body: "c_c426".into(),
            patron_day: "07-13".into(),
            offices: vec![CharterOffice {
                id: "ufficio-anagrafe".into(),
                name: "Ufficio Anagrafe".into(),
                address: "Via Sandro Pertini 2, Celano".into(),
                coordinates: Some(Coordinates {
                    latitude: 42.085,
                    longitude: 13.547,
                }),
                istat_code: "066032".into(),
                floor: "piano terra".into(),
                directions: "Dall'ingresso principale, prima porta a destra".into(),
                hours: vec![
                    hours(1, "08:30", "12:30"),
                    hours(2, "08:30", "12:30"),
                    hours(2, "15:00", "17:00"),
                ],
                exceptions: vec![HoursException {
                    date: "2026-12-24".into(),
                    ranges: vec![],
                    reason: "Chiusura natalizia".into(),
                }],
                ..Default::default()
            }],
            services: vec![CharterService {
                id: "carta-identita".into(),
                title: "Carta d'identità elettronica".into(),
                categories: vec!["anagrafe.carta_identita".into()],
                legal_days: Some(6),
                cost: Some(ServiceCost {
                    amount_cents: 2222,
                    description: "diritti di segreteria compresi".into(),
                    pagopa: true,
                }),
                delivered: vec![ServiceDelivery {
                    channel: "booking".into(),
                    office_id: "ufficio-anagrafe".into(),
                    address: String::new(),
                }],
                responsible: Some(ServiceResponsible {
                    role: "Responsabile dei Servizi Demografici".into(),
                    office_id: "ufficio-anagrafe".into(),
                    name: String::new(),
                }),
                valid_from: "2026-01-01".into(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_good_charter_passes_and_gives_each_office_its_calendar() {
        validate(&celano(), None).unwrap();
        let c = calendar(&celano().offices[0], &celano().patron_day).unwrap();
        assert_eq!(c.weekly[1].len(), 2);
        assert_eq!(c.patron, Some((7, 13)));
        assert!(
            c.exceptions
                .get(&"2026-12-24".parse().unwrap())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn each_broken_rule_is_named_by_its_field() {
        type Spoil = Box<dyn Fn(&mut Charter)>;
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "offices[0].hours[2]",
                Box::new(|c| c.offices[0].hours[2].end = "14:00".into()),
            ),
            (
                "offices[0].hours",
                Box::new(|c| c.offices[0].hours[2].start = "12:00".into()),
            ),
            (
                "offices[0].hours[0].weekday",
                Box::new(|c| c.offices[0].hours[0].weekday = 8),
            ),
            (
                "services[0].delivered[0].office_id",
                Box::new(|c| c.services[0].delivered[0].office_id = "ufficio-tributi".into()),
            ),
            (
                "services[0].cost.amount_cents",
                Box::new(|c| c.services[0].cost.as_mut().unwrap().amount_cents = -1),
            ),
            (
                "services[0].legal_days",
                Box::new(|c| c.services[0].legal_days = Some(0)),
            ),
            (
                "services[0].title",
                Box::new(|c| c.services[0].title = "x".repeat(201)),
            ),
            (
                "services[0].delivered[0].channel",
                Box::new(|c| c.services[0].delivered[0].channel = "fax".into()),
            ),
            (
                "services[0].valid_until",
                Box::new(|c| c.services[0].valid_until = "2025-12-31".into()),
            ),
            (
                "offices[0].exceptions[0].date",
                Box::new(|c| c.offices[0].exceptions[0].date = "24/12/2026".into()),
            ),
            (
                "offices[0].istat_code",
                Box::new(|c| c.offices[0].istat_code = "999999".into()),
            ),
            ("patron_day", Box::new(|c| c.patron_day = "02-30".into())),
            (
                "offices[0].exceptions[0].ranges[0]",
                Box::new(|c| {
                    c.offices[0].exceptions[0].ranges = vec![TimeRange {
                        start: "9".into(),
                        end: "12:00".into(),
                    }]
                }),
            ),
        ];
        for (field, spoil) in cases {
            let mut c = celano();
            spoil(&mut c);
            let e = validate(&c, None).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        // An unknown category, with a taxonomy to check against.
        let taxonomy = crate::taxonomy::Taxonomy::new(
            crate::taxonomy::parse_toml(
                "[[category]]\ncode = \"anagrafe\"\nlabel = \"Anagrafe\"\nlevel = \"comune\"\n",
            )
            .unwrap(),
        )
        .unwrap();
        let e = validate(&celano(), Some(&taxonomy))
            .unwrap_err()
            .to_string();
        assert!(e.contains("services[0].categories[0]"), "{e}");
    }
}
