//! What both ends of archive replication agree on (DESIGN.md §7): ISO weeks,
//! handling-time buckets, and the checks every received `ArchiveRecord`
//! passes before a registry stores it.

use std::collections::BTreeSet;

use prost::Message as _;

use crate::territory::{Level, Territory};
use crate::v1::{ArchiveRecord, Channel, HandlingTime, Outcome};

/// Length of a record id (a truncated HMAC-SHA256).
pub const RECORD_ID_BYTES: usize = 16;
/// Largest encoded record accepted.
pub const RECORD_MAX_BYTES: usize = 256;
/// Most records in one batch.
pub const BATCH_MAX_RECORDS: usize = 2000;
/// Handoffs are counted up to this.
pub const HANDOFFS_CAP: u32 = 10;

/// Why a record of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `undecodable`, `forbidden_field`, `invalid` or `territory_outside`.
    pub reason: &'static str,
    /// The field and rule, in words.
    pub detail: String,
}

impl Refusal {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

// ---- ISO weeks -------------------------------------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Monday = 0 .. Sunday = 6 of a day since the epoch (1970-01-01 was a
/// Thursday).
fn weekday(days: i64) -> i64 {
    (days + 3).rem_euclid(7)
}

/// The Monday of ISO week 1 of `year`: the week holding 4 January.
fn week_one_monday(year: i64) -> i64 {
    let jan4 = days_from_civil(year, 1, 4);
    jan4 - weekday(jan4)
}

/// The ISO week (`YYYYWW`) holding a day since the epoch.
pub fn week_of_days(days: i64) -> u32 {
    let monday = days - weekday(days);
    // The ISO year is the year of the week's Thursday.
    let thursday = monday + 3;
    let year = year_of_days(thursday);
    let week = (monday - week_one_monday(year)) / 7 + 1;
    (year * 100 + week) as u32
}

/// The ISO week holding a Unix time in milliseconds (UTC).
pub fn week_of_ms(ms: u64) -> u32 {
    week_of_days((ms / 86_400_000) as i64)
}

fn year_of_days(days: i64) -> i64 {
    // civil_from_days, year only.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

/// The Monday (days since the epoch) of a `YYYYWW` week, if it exists.
pub fn monday_of(week: u32) -> Option<i64> {
    let (year, w) = (i64::from(week / 100), i64::from(week % 100));
    if !(2000..=2100).contains(&year) || w < 1 {
        return None;
    }
    let monday = week_one_monday(year) + (w - 1) * 7;
    (week_of_days(monday) == week).then_some(monday)
}

/// `week` moved by `n` weeks (negative: earlier).
pub fn add_weeks(week: u32, n: i64) -> Option<u32> {
    Some(week_of_days(monday_of(week)? + n * 7))
}

/// `YYYY-Www` for people.
pub fn week_label(week: u32) -> String {
    format!("{}-W{:02}", week / 100, week % 100)
}

/// Parses `YYYYWW`, `YYYY-WW` or `YYYY-Www`.
pub fn parse_week(text: &str) -> Option<u32> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let rest: String = text
        .chars()
        .filter(|c| !c.is_ascii_digit() && *c != '-' && *c != 'W' && *c != 'w')
        .collect();
    if digits.len() != 6 || !rest.is_empty() {
        return None;
    }
    let week = digits.parse().ok()?;
    monday_of(week).map(|_| week)
}

// ---- handling time -----------------------------------------------------------

/// The bucket of a handling time in milliseconds.
pub fn handling_bucket(ms: u64) -> HandlingTime {
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;
    match ms {
        m if m < HOUR => HandlingTime::Under1h,
        m if m < DAY => HandlingTime::Under1d,
        m if m < 3 * DAY => HandlingTime::Under3d,
        m if m < 7 * DAY => HandlingTime::Under7d,
        m if m < 30 * DAY => HandlingTime::Under30d,
        _ => HandlingTime::Over30d,
    }
}

/// Short names used in tables, CSV and queries.
pub fn handling_name(h: HandlingTime) -> &'static str {
    match h {
        HandlingTime::Unspecified => "?",
        HandlingTime::Under1h => "<1h",
        HandlingTime::Under1d => "<1d",
        HandlingTime::Under3d => "1-3d",
        HandlingTime::Under7d => "3-7d",
        HandlingTime::Under30d => "7-30d",
        HandlingTime::Over30d => ">=30d",
    }
}

/// Short outcome names.
pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Unspecified => "?",
        Outcome::Answered => "answered",
        Outcome::Rejected => "rejected",
        Outcome::Merged => "merged",
    }
}

// ---- territory ---------------------------------------------------------------

/// Whether `district` is a valid district code (`^[A-Z0-9]{1,8}$`).
pub fn district_ok(district: &str) -> bool {
    (1..=8).contains(&district.len())
        && district
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The region (2 digits) a record territory lies in, if it names a real
/// comune, a district of one, or a region.
pub fn region_of(territory: &str) -> Option<String> {
    let italy = Territory::italy();
    let comune = match territory.split_once('/') {
        Some((comune, district)) if district_ok(district) => comune,
        Some(_) => return None,
        None => territory,
    };
    match italy.level_of(comune)? {
        Level::Comune => italy.comune(comune).map(|c| c.region_code.clone()),
        Level::Regione if comune == territory => Some(comune.to_owned()),
        _ => None,
    }
}

/// The regions a member's territory (comuni, provinces, regions) lies in;
/// `None` for a national member (empty territory: all of Italy).
pub fn regions_of_member(territory: &[String]) -> Option<BTreeSet<String>> {
    if territory.is_empty() {
        return None;
    }
    let italy = Territory::italy();
    let mut regions = BTreeSet::new();
    for code in territory {
        match italy.level_of(code) {
            Some(Level::Comune) => {
                if let Some(c) = italy.comune(code) {
                    regions.insert(c.region_code.clone());
                }
            }
            Some(Level::Provincia) => {
                if let Some(c) = italy.comuni().find(|c| &c.province_code == code) {
                    regions.insert(c.region_code.clone());
                }
            }
            Some(Level::Regione) => {
                regions.insert(code.clone());
            }
            None => {}
        }
    }
    Some(regions)
}

// ---- records -----------------------------------------------------------------

/// Whether `code` is a well-formed category code:
/// `^[a-z0-9_]+(\.[a-z0-9_]+)*$`, at most 64 bytes.
pub fn category_ok(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        })
}

/// Decodes and checks one record of a batch from a sender whose territory
/// lies in `sender_regions` (`None`: anywhere), received during `now_week`.
///
/// A record that decodes but re-encodes shorter carried fields the schema
/// does not have: it is refused as `forbidden_field`, since anything beyond
/// the eleven fields could hold personal data.
///
/// # Errors
/// The [`Refusal`] naming the first broken rule.
pub fn check_record(
    bytes: &[u8],
    sender_regions: Option<&BTreeSet<String>>,
    now_week: u32,
) -> Result<ArchiveRecord, Refusal> {
    if bytes.len() > RECORD_MAX_BYTES {
        return Err(Refusal::new(
            "invalid",
            format!("record: {} bytes, at most {RECORD_MAX_BYTES}", bytes.len()),
        ));
    }
    let record = ArchiveRecord::decode(bytes)
        .map_err(|e| Refusal::new("undecodable", format!("record: {e}")))?;
    if record.encoded_len() != bytes.len() {
        return Err(Refusal::new(
            "forbidden_field",
            "record: carries fields beyond the eleven an archive record may hold",
        ));
    }
    let invalid = |detail: String| Err(Refusal::new("invalid", detail));
    if record.id.len() != RECORD_ID_BYTES {
        return invalid(format!("id: must be {RECORD_ID_BYTES} bytes"));
    }
    if !category_ok(&record.category) {
        return invalid("category: must match ^[a-z0-9_]+(\\.[a-z0-9_]+)*$, at most 64".into());
    }
    if !matches!(Channel::try_from(record.channel), Ok(c) if c != Channel::Unspecified) {
        return invalid("channel: must be a known channel".into());
    }
    let Some(region) = region_of(&record.territory) else {
        return invalid(
            "territory: must be a comune's ISTAT code, `<istat>/<DISTRICT>` or a region's code"
                .into(),
        );
    };
    if monday_of(record.week).is_none() {
        return invalid("week: must be an ISO week YYYYWW between 2000 and 2100".into());
    }
    if record.week > now_week {
        return invalid(format!(
            "week: {} is after the current week {}",
            record.week, now_week
        ));
    }
    if !matches!(Outcome::try_from(record.outcome), Ok(o) if o != Outcome::Unspecified) {
        return invalid("outcome: must be answered, rejected or merged".into());
    }
    if !matches!(HandlingTime::try_from(record.handling), Ok(h) if h != HandlingTime::Unspecified) {
        return invalid("handling: must be a known bucket".into());
    }
    if record.handoffs > HANDOFFS_CAP {
        return invalid(format!("handoffs: at most {HANDOFFS_CAP}"));
    }
    for (field, level) in [
        ("origin_level", record.origin_level),
        ("competent_level", record.competent_level),
    ] {
        if !(1..=4).contains(&level) {
            return invalid(format!(
                "{field}: must be comune, provincia, regione or nazionale"
            ));
        }
    }
    if let Some(regions) = sender_regions
        && !regions.contains(&region)
    {
        return Err(Refusal::new(
            "territory_outside",
            format!(
                "territory: {} lies outside the sender's region(s) {}",
                record.territory,
                regions.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::Level as WireLevel;

    #[test]
    fn iso_weeks_match_the_calendar() {
        // 2026-11-24 is a Tuesday of week 48.
        assert_eq!(week_of_days(days_from_civil(2026, 11, 24)), 202648);
        // 1 January 2021 (Friday) belongs to 2020-W53; 4 January 2021 is W01.
        assert_eq!(week_of_days(days_from_civil(2021, 1, 1)), 202053);
        assert_eq!(week_of_days(days_from_civil(2021, 1, 4)), 202101);
        // 31 December 2024 (Tuesday) is 2025-W01.
        assert_eq!(week_of_days(days_from_civil(2024, 12, 31)), 202501);
        assert_eq!(monday_of(202101), Some(days_from_civil(2021, 1, 4)));
        assert_eq!(monday_of(202053), Some(days_from_civil(2020, 12, 28)));
        assert_eq!(monday_of(202153), None, "2021 has 52 weeks");
        assert_eq!(monday_of(202600), None);
        assert_eq!(add_weeks(202101, -1), Some(202053));
        assert_eq!(add_weeks(202652, 1), Some(202653));
        assert_eq!(add_weeks(202653, 1), Some(202701));
        assert_eq!(parse_week("2026-W07"), Some(202607));
        assert_eq!(parse_week("202607"), Some(202607));
        assert_eq!(parse_week("2026-07x"), None);
        assert_eq!(week_label(202607), "2026-W07");
    }

    #[test]
    fn every_day_of_a_long_range_round_trips_through_its_week() {
        let start = days_from_civil(2000, 1, 3);
        for d in start..start + 365 * 60 {
            let week = week_of_days(d);
            let monday = monday_of(week).expect("week exists");
            assert!(monday <= d && d < monday + 7, "{d} in {week}");
        }
    }

    #[test]
    fn handling_buckets_have_the_documented_edges() {
        assert_eq!(handling_bucket(0), HandlingTime::Under1h);
        assert_eq!(handling_bucket(3_600_000), HandlingTime::Under1d);
        assert_eq!(handling_bucket(86_400_000 * 3 - 1), HandlingTime::Under3d);
        assert_eq!(handling_bucket(86_400_000 * 29), HandlingTime::Under30d);
        assert_eq!(handling_bucket(86_400_000 * 400), HandlingTime::Over30d);
    }

    fn good() -> ArchiveRecord {
        ArchiveRecord {
            id: vec![7; 16],
            category: "rifiuti.ingombranti".into(),
            channel: Channel::Phone as i32,
            territory: "066032".into(),
            week: 202647,
            outcome: Outcome::Answered as i32,
            handling: HandlingTime::Under3d as i32,
            handoffs: 1,
            overflow: false,
            origin_level: WireLevel::Comune as i32,
            competent_level: WireLevel::Comune as i32,
        }
    }

    #[test]
    fn a_good_record_passes_and_each_rule_names_its_field() {
        let abruzzo: BTreeSet<String> = ["13".to_string()].into();
        let check = |r: &ArchiveRecord| check_record(&r.encode_to_vec(), Some(&abruzzo), 202648);
        assert_eq!(check(&good()).unwrap(), good());
        type Spoil = Box<dyn Fn(&mut ArchiveRecord)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("id:", Box::new(|r| r.id = vec![1; 15])),
            ("category:", Box::new(|r| r.category = "Rifiuti".into())),
            ("channel:", Box::new(|r| r.channel = 0)),
            ("channel:", Box::new(|r| r.channel = 99)),
            ("territory:", Box::new(|r| r.territory = "999999".into())),
            ("territory:", Box::new(|r| r.territory = "066032/m1".into())),
            ("territory:", Box::new(|r| r.territory = "066".into())),
            ("week:", Box::new(|r| r.week = 202660)),
            ("week:", Box::new(|r| r.week = 202649)),
            ("outcome:", Box::new(|r| r.outcome = 0)),
            ("handling:", Box::new(|r| r.handling = 9)),
            ("handoffs:", Box::new(|r| r.handoffs = 11)),
            ("origin_level:", Box::new(|r| r.origin_level = 0)),
            ("competent_level:", Box::new(|r| r.competent_level = 5)),
        ];
        for (field, spoil) in cases {
            let mut r = good();
            spoil(&mut r);
            let refusal = check(&r).unwrap_err();
            assert_eq!(refusal.reason, "invalid", "{field}");
            assert!(
                refusal.detail.starts_with(field),
                "{field}: {}",
                refusal.detail
            );
        }
        let mut r = good();
        r.territory = "072006".into(); // Bari, Puglia
        assert_eq!(check(&r).unwrap_err().reason, "territory_outside");
        assert!(
            check_record(&r.encode_to_vec(), None, 202648).is_ok(),
            "a national sender"
        );
        r.territory = "058091/M01".into();
        assert!(
            check_record(&r.encode_to_vec(), None, 202648).is_ok(),
            "a district"
        );
        r.territory = "13".into();
        assert!(check(&r).is_ok(), "a region code");
    }

    #[test]
    fn a_record_with_an_extra_field_is_forbidden_and_garbage_is_undecodable() {
        let mut bytes = good().encode_to_vec();
        // Field 12, wire type 2 (length-delimited): a citizen's name.
        let name = b"Mario Rossi";
        bytes.push((12 << 3) | 2);
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name);
        let refusal = check_record(&bytes, None, 202648).unwrap_err();
        assert_eq!(refusal.reason, "forbidden_field");
        assert_eq!(
            check_record(&[0xff, 0xff, 0xff], None, 202648)
                .unwrap_err()
                .reason,
            "undecodable"
        );
        assert_eq!(
            check_record(&[0u8; 300], None, 202648).unwrap_err().reason,
            "invalid"
        );
    }

    #[test]
    fn member_regions_widen_comuni_and_provinces() {
        let r = regions_of_member(&["066032".into(), "067".into()]).unwrap();
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec!["13".to_string()]);
        assert!(regions_of_member(&[]).is_none());
    }
}
