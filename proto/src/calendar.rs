//! Office calendars in Italian civil time (Europe/Rome, daylight saving
//! included): weekly opening hours with several ranges a day, dated
//! exceptions (closures, extra openings), the national holidays of the
//! Italian Republic and the body's patron saint; whether an office is open
//! at an instant, and when it opens next.
//!
//! Hours are civil times of a day (`08:30–12:30`), as an office publishes
//! them; instants are converted through the Europe/Rome zone, so an office
//! open 08:00–12:00 opens at 07:00 UTC in winter and 06:00 UTC in summer,
//! also in the week the clocks change. The charter (DESIGN.md §12) and the
//! appointment calendars (§13) both use this module.

use std::collections::BTreeMap;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// How far ahead [`Calendar::next_opening`] looks (an office closed for
/// longer has no next opening).
pub const HORIZON_DAYS: i32 = 400;

/// Italy's civil time zone.
pub fn rome() -> TimeZone {
    TimeZone::get("Europe/Rome").unwrap_or(TimeZone::UTC)
}

/// An instant (ms since the Unix epoch) as ISO 8601 in Italian civil time,
/// with its offset: `2026-12-04T10:00:00+01:00` (empty if out of range).
pub fn iso_rome(ms: u64) -> String {
    Timestamp::from_millisecond(ms as i64)
        .map(|ts| {
            ts.to_zoned(rome())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        })
        .unwrap_or_default()
}

/// A range of civil time within one day, `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hours {
    /// Opening time.
    pub start: Time,
    /// Closing time (after `start`, same day).
    pub end: Time,
}

impl Hours {
    /// `start`–`end` given as `HH:MM` strings.
    ///
    /// # Errors
    /// A time that does not parse, or an end not after the start.
    pub fn parse(start: &str, end: &str) -> Result<Hours, CalendarError> {
        let t = |s: &str| {
            s.parse::<Time>()
                .map_err(|_| CalendarError::BadTime(s.to_string()))
        };
        let h = Hours {
            start: t(start)?,
            end: t(end)?,
        };
        if h.end <= h.start {
            return Err(CalendarError::EndsBeforeStart(format!("{start}–{end}")));
        }
        Ok(h)
    }
}

/// Why a calendar is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// Not a `HH:MM` time.
    #[error("`{0}` is not a time (HH:MM)")]
    BadTime(String),
    /// A range that ends when or before it starts.
    #[error("{0}: ends before it starts")]
    EndsBeforeStart(String),
    /// Two ranges of one day overlap.
    #[error("{0}: ranges overlap")]
    Overlap(String),
    /// Not a weekday name.
    #[error("`{0}` is not a weekday (lunedi … domenica, or monday … sunday)")]
    BadWeekday(String),
}

/// A weekday from its Italian or English name (case and accents ignored).
///
/// # Errors
/// Another word.
pub fn parse_weekday(s: &str) -> Result<Weekday, CalendarError> {
    let folded = crate::text::fold(s);
    Ok(match folded.as_str() {
        "lunedi" | "monday" | "mon" | "lun" => Weekday::Monday,
        "martedi" | "tuesday" | "tue" | "mar" => Weekday::Tuesday,
        "mercoledi" | "wednesday" | "wed" | "mer" => Weekday::Wednesday,
        "giovedi" | "thursday" | "thu" | "gio" => Weekday::Thursday,
        "venerdi" | "friday" | "fri" | "ven" => Weekday::Friday,
        "sabato" | "saturday" | "sat" | "sab" => Weekday::Saturday,
        "domenica" | "sunday" | "sun" | "dom" => Weekday::Sunday,
        _ => return Err(CalendarError::BadWeekday(s.to_string())),
    })
}

/// Easter Sunday of `year` (Gregorian; the anonymous algorithm of Meeus,
/// Jones and Butcher).
pub fn easter_sunday(year: i16) -> Date {
    let y = i32::from(year);
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    Date::new(year, month as i8, day as i8).expect("a valid Easter date")
}

/// The national holidays of the Italian Republic in `year`, with their
/// names (Easter Sunday included: it is a holiday, and always a Sunday).
pub fn national_holidays(year: i16) -> Vec<(Date, &'static str)> {
    let d = |m: i8, day: i8| Date::new(year, m, day).expect("a fixed holiday");
    let easter = easter_sunday(year);
    let mut days = vec![
        (d(1, 1), "Capodanno"),
        (d(1, 6), "Epifania"),
        (easter, "Pasqua"),
        (easter.tomorrow().expect("in range"), "Lunedì dell'Angelo"),
        (d(4, 25), "Festa della Liberazione"),
        (d(5, 1), "Festa del Lavoro"),
        (d(6, 2), "Festa della Repubblica"),
        (d(8, 15), "Ferragosto"),
        (d(11, 1), "Ognissanti"),
        (d(12, 8), "Immacolata Concezione"),
        (d(12, 25), "Natale"),
        (d(12, 26), "Santo Stefano"),
    ];
    days.sort();
    days
}

/// An office's calendar.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Calendar {
    /// Opening hours of each weekday, Monday first; sorted, not overlapping.
    pub weekly: [Vec<Hours>; 7],
    /// Dated exceptions: the hours of that date instead of the week's
    /// (empty: closed), whatever the holidays say.
    pub exceptions: BTreeMap<Date, Vec<Hours>>,
    /// The patron saint's day (month, day): closed, like a national holiday.
    pub patron: Option<(i8, i8)>,
}

impl Calendar {
    /// Checks every day's ranges: none ends before it starts, none overlaps
    /// another (sorting them on the way).
    ///
    /// # Errors
    /// The first broken rule, naming the day.
    pub fn normalise(&mut self) -> Result<(), CalendarError> {
        let names = [
            "lunedì",
            "martedì",
            "mercoledì",
            "giovedì",
            "venerdì",
            "sabato",
            "domenica",
        ];
        for (day, hours) in self.weekly.iter_mut().enumerate() {
            check_day(names[day], hours)?;
        }
        for (date, hours) in &mut self.exceptions {
            check_day(&date.to_string(), hours)?;
        }
        Ok(())
    }

    /// Why `date` is a holiday, if it is one (national or the patron's).
    pub fn holiday(&self, date: Date) -> Option<&'static str> {
        if self.patron == Some((date.month(), date.day())) {
            return Some("Santo patrono");
        }
        national_holidays(date.year())
            .into_iter()
            .find(|(d, _)| *d == date)
            .map(|(_, name)| name)
    }

    /// The opening hours of a civil date: its exception, else closed on a
    /// holiday, else the weekday's.
    pub fn hours_on(&self, date: Date) -> &[Hours] {
        if let Some(hours) = self.exceptions.get(&date) {
            return hours;
        }
        if self.holiday(date).is_some() {
            return &[];
        }
        &self.weekly[date.weekday().to_monday_zero_offset() as usize]
    }

    /// Whether the office is open at `at`.
    pub fn is_open(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(rome());
        let (date, time) = (local.date(), local.time());
        self.hours_on(date)
            .iter()
            .any(|h| h.start <= time && time < h.end)
    }

    /// The next instant at or after `from` when the office is open (`from`
    /// itself when open then), within [`HORIZON_DAYS`]; `None` beyond.
    pub fn next_opening(&self, from: Timestamp) -> Option<Zoned> {
        let tz = rome();
        let local = from.to_zoned(tz.clone());
        if self.is_open(from) {
            return Some(local);
        }
        let mut date = local.date();
        for _ in 0..HORIZON_DAYS {
            for h in self.hours_on(date) {
                // A civil time skipped by the spring change (02:00–03:00)
                // becomes the first instant after it.
                let Ok(start) = date.to_datetime(h.start).to_zoned(tz.clone()) else {
                    continue;
                };
                let Ok(end) = date.to_datetime(h.end).to_zoned(tz.clone()) else {
                    continue;
                };
                if end.timestamp() > from && start.timestamp() < end.timestamp() {
                    return Some(if start.timestamp() >= from {
                        start
                    } else {
                        local
                    });
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

fn check_day(name: &str, hours: &mut [Hours]) -> Result<(), CalendarError> {
    hours.sort();
    for h in hours.iter() {
        if h.end <= h.start {
            return Err(CalendarError::EndsBeforeStart(format!(
                "{name} {}–{}",
                h.start.strftime("%H:%M"),
                h.end.strftime("%H:%M")
            )));
        }
    }
    for pair in hours.windows(2) {
        if pair[1].start < pair[0].end {
            return Err(CalendarError::Overlap(format!(
                "{name} {}–{} and {}–{}",
                pair[0].start.strftime("%H:%M"),
                pair[0].end.strftime("%H:%M"),
                pair[1].start.strftime("%H:%M"),
                pair[1].end.strftime("%H:%M")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn office() -> Calendar {
        let h = |a: &str, b: &str| Hours::parse(a, b).unwrap();
        let mut c = Calendar::default();
        for day in 0..5 {
            c.weekly[day] = vec![h("08:30", "12:30")];
        }
        c.weekly[1].push(h("15:00", "17:00"));
        c.weekly[3].push(h("15:00", "17:00"));
        c.patron = Some((10, 15));
        c.normalise().unwrap();
        c
    }

    fn at(s: &str) -> Timestamp {
        s.parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(rome())
            .unwrap()
            .timestamp()
    }

    #[test]
    fn easter_falls_on_the_known_sundays() {
        for (year, month, day) in [
            (2024, 3, 31),
            (2025, 4, 20),
            (2026, 4, 5),
            (2027, 3, 28),
            (2038, 4, 25),
            (2285, 3, 22),
        ] {
            assert_eq!(
                easter_sunday(year),
                Date::new(year, month, day).unwrap(),
                "{year}"
            );
        }
        let h = national_holidays(2026);
        assert_eq!(h.len(), 12);
        assert!(h.contains(&(Date::new(2026, 4, 6).unwrap(), "Lunedì dell'Angelo")));
    }

    #[test]
    fn opening_follows_the_civil_clock_across_both_dst_changes() {
        let c = office();
        // Spring: Sunday 29 March 2026 at 02:00 the clocks go to 03:00.
        // From Saturday evening the next opening is Monday 08:30 CEST, 06:30 UTC.
        let next = c.next_opening(at("2026-03-28T20:00")).unwrap();
        assert_eq!(next.to_string(), "2026-03-30T08:30:00+02:00[Europe/Rome]");
        assert_eq!(next.timestamp().to_string(), "2026-03-30T06:30:00Z");
        // Autumn: Sunday 25 October 2026 the clocks go back; Monday 08:30 is
        // CET, 07:30 UTC.
        let next = c.next_opening(at("2026-10-24T20:00")).unwrap();
        assert_eq!(next.timestamp().to_string(), "2026-10-26T07:30:00Z");
        // Open now, closed at lunch, the afternoon on Tuesdays only.
        assert!(c.is_open(at("2026-03-30T09:00")));
        assert!(!c.is_open(at("2026-03-30T12:30")));
        assert!(c.is_open(at("2026-03-31T16:59")));
        assert!(!c.is_open(at("2026-03-30T16:00")));
        assert_eq!(
            c.next_opening(at("2026-03-31T13:00")).unwrap().to_string(),
            "2026-03-31T15:00:00+02:00[Europe/Rome]"
        );
    }

    #[test]
    fn holidays_the_patron_and_exceptions_decide_a_day() {
        let mut c = office();
        // Easter Monday 2026 and 25 April fall on working days or not; Monday
        // 6 April is closed, so from Saturday 4 April the next opening is Tuesday.
        let next = c.next_opening(at("2026-04-04T10:00")).unwrap();
        assert_eq!(next.date(), Date::new(2026, 4, 7).unwrap());
        assert_eq!(
            c.holiday(Date::new(2026, 10, 15).unwrap()),
            Some("Santo patrono")
        );
        assert!(
            !c.is_open(at("2026-10-15T09:00")),
            "closed on the patron's day"
        );
        // An extra Saturday opening, and a Monday closure.
        let h = Hours::parse("09:00", "12:00").unwrap();
        c.exceptions.insert(Date::new(2026, 5, 9).unwrap(), vec![h]);
        c.exceptions.insert(Date::new(2026, 5, 11).unwrap(), vec![]);
        assert!(c.is_open(at("2026-05-09T10:00")));
        assert!(!c.is_open(at("2026-05-11T10:00")));
        let next = c.next_opening(at("2026-05-09T12:00")).unwrap();
        assert_eq!(next.date(), Date::new(2026, 5, 12).unwrap());
        // Never open: no next opening, not a loop or a panic.
        assert!(
            Calendar::default()
                .next_opening(at("2026-05-09T12:00"))
                .is_none()
        );
        // Far dates get an answer too.
        assert!(
            c.next_opening(Timestamp::from_second(4_102_444_800).unwrap())
                .is_some()
        );
    }

    #[test]
    fn bad_hours_are_refused_naming_the_day() {
        assert!(matches!(
            Hours::parse("12:00", "08:00"),
            Err(CalendarError::EndsBeforeStart(_))
        ));
        assert!(matches!(
            Hours::parse("8h", "12:00"),
            Err(CalendarError::BadTime(_))
        ));
        let mut c = Calendar::default();
        c.weekly[2] = vec![
            Hours::parse("09:00", "12:00").unwrap(),
            Hours::parse("11:00", "13:00").unwrap(),
        ];
        let e = c.normalise().unwrap_err();
        assert!(
            e.to_string()
                .contains("mercoledì 09:00–12:00 and 11:00–13:00"),
            "{e}"
        );
        assert_eq!(parse_weekday("Lunedì").unwrap(), Weekday::Monday);
        assert!(parse_weekday("festa").is_err());
    }

    proptest! {
        #[test]
        fn easter_is_a_sunday_between_22_march_and_25_april(year in 1900i16..2500) {
            let e = easter_sunday(year);
            prop_assert_eq!(e.weekday(), Weekday::Sunday);
            prop_assert!(e >= Date::new(year, 3, 22).unwrap() && e <= Date::new(year, 4, 25).unwrap());
        }

        #[test]
        fn the_next_opening_is_open_and_nothing_before_it_is(
            secs in 1_767_225_600i64..1_830_297_600, // 2026-01-01 .. 2028-01-01
            probe in 0.0f64..1.0,
        ) {
            let c = office();
            let from = Timestamp::from_second(secs).unwrap();
            let next = c.next_opening(from).expect("an office open every week");
            prop_assert!(next.timestamp() >= from);
            prop_assert!(c.is_open(next.timestamp()));
            // Any instant between `from` and the opening is closed.
            let span = next.timestamp().as_second() - from.as_second();
            let between = Timestamp::from_second(from.as_second() + (span as f64 * probe) as i64).unwrap();
            if between < next.timestamp() {
                prop_assert!(!c.is_open(between));
            }
        }
    }
}
