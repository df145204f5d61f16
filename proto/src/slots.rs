//! Appointment slots (DESIGN.md §13): the bookable times of an office's
//! calendar for one service, and the check of a slot a citizen asks for.
//!
//! Slots are laid out in Italian civil time inside each opening range of a
//! day (the [`Calendar`]'s hours, so holidays, the patron's day and
//! exceptions are closed): a slot starts every `interval` minutes from the
//! range's start and fits, with its buffers before and after, inside the
//! range. Each civil start becomes an instant through Europe/Rome; a start
//! the spring change skips does not exist and is not offered, and a start
//! the autumn change repeats is offered once, at its first occurrence.
//! Only slots at least `min_notice` from now and at most `max_days_ahead`
//! days ahead are bookable. Capacity (how many citizens share a slot) is
//! the booking's business, not the layout's.

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, Zoned};

use crate::calendar::{Calendar, rome};

/// How a service's slots are laid out at an office.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRules {
    /// Length of one appointment, minutes (1..=480).
    pub length_min: u32,
    /// Minutes between two slot starts (1..=480; usually the length).
    pub interval_min: u32,
    /// Free minutes kept before each appointment (0..=120).
    pub buffer_before_min: u32,
    /// Free minutes kept after each appointment (0..=120).
    pub buffer_after_min: u32,
    /// The earliest a slot may be booked before it starts, minutes.
    pub min_notice_min: u32,
    /// The latest day a slot may be booked for, days from today (1..=366).
    pub max_days_ahead: u32,
}

impl Default for SlotRules {
    fn default() -> Self {
        Self {
            length_min: 20,
            interval_min: 20,
            buffer_before_min: 0,
            buffer_after_min: 0,
            min_notice_min: 120,
            max_days_ahead: 60,
        }
    }
}

impl SlotRules {
    /// Every broken rule, in words naming the field.
    ///
    /// # Errors
    /// The violations.
    pub fn validate(&self) -> Result<(), crate::validate::Violations> {
        let mut v = crate::validate::Violations::new();
        v.check(
            (1..=480).contains(&self.length_min),
            "length_min",
            "must be 1..=480 minutes",
        );
        v.check(
            (1..=480).contains(&self.interval_min),
            "interval_min",
            "must be 1..=480 minutes",
        );
        v.check(
            self.buffer_before_min <= 120,
            "buffer_before_min",
            "must be at most 120 minutes",
        );
        v.check(
            self.buffer_after_min <= 120,
            "buffer_after_min",
            "must be at most 120 minutes",
        );
        v.check(
            self.min_notice_min <= 60 * 24 * 60,
            "min_notice_min",
            "must be at most 60 days",
        );
        v.check(
            (1..=366).contains(&self.max_days_ahead),
            "max_days_ahead",
            "must be 1..=366 days",
        );
        v.into_result()
    }
}

/// One bookable slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// When it starts, in Italian civil time (with its offset).
    pub start: Zoned,
    /// When it ends.
    pub end: Zoned,
}

impl Slot {
    /// The start as RFC 3339 with the Italian offset, e.g.
    /// `2026-03-30T09:00:00+02:00`.
    pub fn start_text(&self) -> String {
        rfc3339(&self.start)
    }

    /// The end, as [`Slot::start_text`].
    pub fn end_text(&self) -> String {
        rfc3339(&self.end)
    }
}

/// `2026-03-30T09:00:00+02:00`: RFC 3339 with the zone's offset, written
/// directly (the free-slot list writes two per slot; `strftime` parses its
/// pattern each time).
pub fn rfc3339(z: &Zoned) -> String {
    fn two(out: &mut String, n: i64) {
        out.push(char::from(b'0' + (n / 10 % 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    }
    let (d, t) = (z.date(), z.time());
    let offset = z.offset().seconds();
    let mut out = String::with_capacity(25);
    let year = i64::from(d.year());
    if !(0..=9999).contains(&year) {
        return z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
    }
    two(&mut out, year / 100);
    two(&mut out, year % 100);
    out.push('-');
    two(&mut out, i64::from(d.month()));
    out.push('-');
    two(&mut out, i64::from(d.day()));
    out.push('T');
    two(&mut out, i64::from(t.hour()));
    out.push(':');
    two(&mut out, i64::from(t.minute()));
    out.push(':');
    two(&mut out, i64::from(t.second()));
    out.push(if offset < 0 { '-' } else { '+' });
    let offset = i64::from(offset.unsigned_abs());
    two(&mut out, offset / 3600);
    out.push(':');
    two(&mut out, offset % 3600 / 60);
    out
}

/// Why a requested slot is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// Not a time.
    #[error(
        "`{0}` is not a time: give YYYY-MM-DDTHH:MM, in Italian time, or RFC 3339 with its offset"
    )]
    NotATime(String),
    /// A civil time the spring change skips.
    #[error("{0} does not exist in Italy: the clocks jump from 02:00 to 03:00 that night")]
    DoesNotExist(String),
    /// A civil time the autumn change repeats.
    #[error(
        "{0} happens twice in Italy (the clocks go back from 03:00 to 02:00): give the offset, +02:00 for the first, +01:00 for the second"
    )]
    Ambiguous(String),
    /// In the past.
    #[error("{0} is in the past")]
    Past(String),
    /// Too soon.
    #[error("{0} is too soon: book at least {1} minutes ahead")]
    TooSoon(String, u32),
    /// Too far ahead.
    #[error("{0} is too far ahead: book at most {1} days ahead")]
    TooFar(String, u32),
    /// The office is closed that day.
    #[error("{0}: the office is closed that day{1}")]
    Closed(String, String),
    /// Not one of the day's slot starts.
    #[error("{0} is not a slot of this service: the day's slots start at {1}")]
    NotASlot(String, String),
}

fn minutes(m: u32) -> SignedDuration {
    SignedDuration::from_mins(i64::from(m))
}

/// The civil starts of `date`'s slots (before the time-zone conversion).
fn civil_starts(calendar: &Calendar, rules: &SlotRules, date: Date) -> Vec<DateTime> {
    let mut out = Vec::new();
    let (len, step) = (minutes(rules.length_min), minutes(rules.interval_min));
    let (before, after) = (
        minutes(rules.buffer_before_min),
        minutes(rules.buffer_after_min),
    );
    for h in calendar.hours_on(date) {
        let (open, close) = (date.to_datetime(h.start), date.to_datetime(h.end));
        let Ok(mut s) = open.checked_add(before) else {
            continue;
        };
        while let (Ok(end), Ok(free)) = (s.checked_add(len), s.checked_add(len + after)) {
            if free > close || end > close {
                break;
            }
            out.push(s);
            match s.checked_add(step) {
                Ok(next) => s = next,
                Err(_) => break,
            }
        }
    }
    out
}

/// The one instant of a civil time in Italy, if it has exactly one.
fn instant(civil: DateTime, tz: &TimeZone) -> Result<Zoned, SlotError> {
    // Written only for an error: this runs for every slot laid out.
    let text = || civil.strftime("%Y-%m-%d %H:%M").to_string();
    let ambiguous = tz.to_ambiguous_zoned(civil);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { .. } => ambiguous
            .unambiguous()
            .map_err(|_| SlotError::NotATime(text())),
        AmbiguousOffset::Gap { .. } => Err(SlotError::DoesNotExist(text())),
        AmbiguousOffset::Fold { .. } => Err(SlotError::Ambiguous(text())),
    }
}

/// The bookable slots between `from` and `until` (starts in `[from,
/// until)`) as seen at `now`, in order.
pub fn slots(
    calendar: &Calendar,
    rules: &SlotRules,
    from: Timestamp,
    until: Timestamp,
    now: Timestamp,
) -> Vec<Slot> {
    let tz = rome();
    let earliest = from.max(now + minutes(rules.min_notice_min));
    let last_day = now
        .to_zoned(tz.clone())
        .date()
        .checked_add(jiff::Span::new().days(i64::from(rules.max_days_ahead)))
        .unwrap_or(Date::MAX);
    let mut out = Vec::new();
    let mut date = earliest.to_zoned(tz.clone()).date();
    while date <= last_day {
        for civil in civil_starts(calendar, rules, date) {
            let start = match instant(civil, &tz) {
                Ok(z) => z,
                // Offered once, at the first occurrence.
                Err(SlotError::Ambiguous(_)) => match tz.to_ambiguous_zoned(civil).earlier() {
                    Ok(z) => z,
                    Err(_) => continue,
                },
                Err(_) => continue,
            };
            let at = start.timestamp();
            if at < earliest {
                continue;
            }
            if at >= until {
                return out;
            }
            let Ok(end) = start.checked_add(minutes(rules.length_min)) else {
                continue;
            };
            out.push(Slot { start, end });
        }
        match date.tomorrow() {
            Ok(d) => date = d,
            Err(_) => break,
        }
    }
    out
}

/// Checks a slot a citizen asks for: `text` is a civil time in Italy
/// (`2026-03-30T09:00`) or an instant with its offset
/// (`2026-10-25T02:30:00+01:00`). The slot must exist, be one of the
/// day's slot starts, at least `min_notice` ahead and within the window.
///
/// # Errors
/// The rule broken, in words.
pub fn check(
    calendar: &Calendar,
    rules: &SlotRules,
    text: &str,
    now: Timestamp,
) -> Result<Slot, SlotError> {
    let tz = rome();
    let start = if let Ok(ts) = text.parse::<Timestamp>() {
        ts.to_zoned(tz.clone())
    } else {
        let civil = text
            .parse::<DateTime>()
            .map_err(|_| SlotError::NotATime(text.to_string()))?;
        instant(civil, &tz)?
    };
    let shown = start.strftime("%Y-%m-%d %H:%M").to_string();
    let at = start.timestamp();
    if at < now {
        return Err(SlotError::Past(shown));
    }
    if at < now + minutes(rules.min_notice_min) {
        return Err(SlotError::TooSoon(shown, rules.min_notice_min));
    }
    let today = now.to_zoned(tz.clone()).date();
    let days = (start.date() - today).get_days();
    if days > rules.max_days_ahead as i32 {
        return Err(SlotError::TooFar(shown, rules.max_days_ahead));
    }
    let starts = civil_starts(calendar, rules, start.date());
    if starts.is_empty() {
        let why = calendar
            .holiday(start.date())
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        return Err(SlotError::Closed(shown, why));
    }
    let same = starts.iter().any(|c| {
        tz.to_ambiguous_zoned(*c)
            .earlier()
            .is_ok_and(|z| z.timestamp() == at)
            || tz
                .to_ambiguous_zoned(*c)
                .later()
                .is_ok_and(|z| z.timestamp() == at)
    });
    if !same {
        let list: Vec<String> = starts
            .iter()
            .take(12)
            .map(|c| c.strftime("%H:%M").to_string())
            .collect();
        return Err(SlotError::NotASlot(shown, list.join(", ")));
    }
    let end = start
        .checked_add(minutes(rules.length_min))
        .map_err(|_| SlotError::NotATime(text.to_string()))?;
    Ok(Slot { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Hours;
    use proptest::prelude::*;

    fn office() -> Calendar {
        let mut c = Calendar::default();
        for d in 0..5 {
            c.weekly[d] = vec![Hours::parse("08:30", "12:30").unwrap()];
        }
        c.weekly[1].push(Hours::parse("15:00", "17:00").unwrap());
        // A night desk on Sunday, to meet both DST changes.
        c.weekly[6] = vec![Hours::parse("01:00", "04:00").unwrap()];
        c.normalise().unwrap();
        c
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn rfc3339_writes_what_strftime_writes() {
        for at in [
            "2026-03-29T00:59:59Z",
            "2026-03-29T01:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00Z",
            "1999-12-31T23:00:00Z",
        ] {
            let z = ts(at).to_zoned(rome());
            assert_eq!(
                rfc3339(&z),
                z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                "{at}"
            );
        }
    }

    #[test]
    fn slots_fill_the_ranges_with_buffers_and_skip_holidays() {
        let rules = SlotRules {
            length_min: 30,
            interval_min: 30,
            buffer_before_min: 0,
            buffer_after_min: 10,
            min_notice_min: 60,
            max_days_ahead: 30,
        };
        // Monday 7 December 2026, 07:00: Tuesday 8 is the Immacolata.
        let now = ts("2026-12-07T06:00:00Z");
        let s = slots(&office(), &rules, now, ts("2026-12-10T00:00:00Z"), now);
        let days: Vec<String> = s.iter().map(|x| x.start.date().to_string()).collect();
        assert!(!days.contains(&"2026-12-08".to_string()), "{days:?}");
        let monday: Vec<String> = s
            .iter()
            .filter(|x| x.start.date().to_string() == "2026-12-07")
            .map(|x| x.start.strftime("%H:%M").to_string())
            .collect();
        // 08:30 + 30 + 10 after must fit before 12:30: the last is 11:30.
        assert_eq!(
            monday,
            [
                "08:30", "09:00", "09:30", "10:00", "10:30", "11:00", "11:30"
            ]
        );
        assert_eq!(s[0].start_text(), "2026-12-07T08:30:00+01:00");
    }

    #[test]
    fn a_slot_in_the_spring_gap_does_not_exist_and_the_autumn_hour_needs_an_offset() {
        let rules = SlotRules {
            length_min: 30,
            interval_min: 30,
            min_notice_min: 0,
            max_days_ahead: 366,
            ..SlotRules::default()
        };
        let now = ts("2026-03-01T00:00:00Z");
        // Sunday 29 March 2026: 02:00–03:00 does not exist.
        let spring = slots(
            &office(),
            &rules,
            ts("2026-03-28T23:00:00Z"),
            ts("2026-03-29T04:00:00Z"),
            now,
        );
        let starts: Vec<String> = spring.iter().map(Slot::start_text).collect();
        assert!(starts.iter().all(|s| !s.contains("T02:")), "{starts:?}");
        assert!(
            starts.contains(&"2026-03-29T03:00:00+02:00".to_string()),
            "{starts:?}"
        );
        assert!(matches!(
            check(&office(), &rules, "2026-03-29T02:30", now),
            Err(SlotError::DoesNotExist(_))
        ));
        // Sunday 25 October 2026: 02:30 happens twice.
        assert!(matches!(
            check(&office(), &rules, "2026-10-25T02:30", now),
            Err(SlotError::Ambiguous(_))
        ));
        let second = check(&office(), &rules, "2026-10-25T02:30:00+01:00", now).unwrap();
        assert_eq!(second.start_text(), "2026-10-25T02:30:00+01:00");
        let autumn = slots(
            &office(),
            &rules,
            ts("2026-10-24T22:00:00Z"),
            ts("2026-10-25T04:00:00Z"),
            now,
        );
        let twice = autumn
            .iter()
            .filter(|s| s.start.strftime("%H:%M").to_string() == "02:30")
            .count();
        assert_eq!(twice, 1, "offered once");
    }

    #[test]
    fn every_refusal_names_its_rule() {
        let rules = SlotRules {
            min_notice_min: 120,
            max_days_ahead: 10,
            ..SlotRules::default()
        };
        let now = ts("2026-12-07T08:00:00Z"); // 09:00 in Rome, Monday
        let c = office();
        assert!(matches!(
            check(&c, &rules, "2026-12-04T09:00", now),
            Err(SlotError::Past(_))
        ));
        assert!(matches!(
            check(&c, &rules, "2026-12-07T10:00", now),
            Err(SlotError::TooSoon(_, 120))
        ));
        assert!(matches!(
            check(&c, &rules, "2027-01-04T09:00", now),
            Err(SlotError::TooFar(_, 10))
        ));
        let e = check(&c, &rules, "2026-12-08T09:10", now).unwrap_err();
        assert!(e.to_string().contains("Immacolata"), "{e}");
        let e = check(&c, &rules, "2026-12-09T09:15", now).unwrap_err();
        assert!(matches!(e, SlotError::NotASlot(..)), "{e}");
        assert!(e.to_string().contains("08:30, 08:50"), "{e}");
        assert!(matches!(
            check(&c, &rules, "domani", now),
            Err(SlotError::NotATime(_))
        ));
        assert!(check(&c, &rules, "2026-12-09T08:50", now).is_ok());
        assert!(
            SlotRules {
                length_min: 0,
                max_days_ahead: 400,
                ..rules
            }
            .validate()
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn every_offered_slot_is_accepted_and_fits_the_hours(
            length in 5u32..90, step in 5u32..90, before in 0u32..20, after in 0u32..20,
            notice in 0u32..600, day in 0i64..400, hour in 0i64..24,
        ) {
            let rules = SlotRules {
                length_min: length, interval_min: step, buffer_before_min: before,
                buffer_after_min: after, min_notice_min: notice, max_days_ahead: 14,
            };
            let now = ts("2026-01-01T00:00:00Z") + SignedDuration::from_hours(day * 24 + hour);
            let c = office();
            let until = now + SignedDuration::from_hours(24 * 15);
            let offered = slots(&c, &rules, now, until, now);
            let mut last: Option<Timestamp> = None;
            for s in &offered {
                let at = s.start.timestamp();
                prop_assert!(at >= now + minutes(notice));
                prop_assert!(last.is_none_or(|l| l < at), "sorted, distinct");
                last = Some(at);
                // Inside one opening range of its day, buffers included.
                let local = s.start.datetime();
                let end = local + minutes(length + after);
                let fits = c.hours_on(local.date()).iter().any(|h| {
                    local.date().to_datetime(h.start) + minutes(before) <= local
                        && end <= local.date().to_datetime(h.end)
                });
                prop_assert!(fits, "{} does not fit", s.start_text());
                let back = check(&c, &rules, &s.start_text(), now);
                prop_assert_eq!(back.map(|b| b.start.timestamp()), Ok(at));
            }
        }
    }
}
