//! The one-call answer about a service (`Explain`): where, when (open now,
//! next opening, this week), what to bring, how much, who is responsible,
//! how long, how to book — computed from a charter and an instant, in
//! Italian civil time. Pure: no store, no clock.

use jiff::Timestamp;
use jiff::civil::Date;
use urpnet_proto::calendar::{Calendar, rome};
use urpnet_proto::charter;
use urpnet_proto::v1::{
    Charter, CharterOffice, CharterService, DayHours, ExplainResponse, OfficeNow, ServiceCost,
    TimeRange,
};

use crate::error::{NodeError, NodeResult};

/// Italian weekday names, Monday first.
pub const WEEKDAYS: [&str; 7] = [
    "lunedì",
    "martedì",
    "mercoledì",
    "giovedì",
    "venerdì",
    "sabato",
    "domenica",
];

const MONTHS: [&str; 12] = [
    "gennaio",
    "febbraio",
    "marzo",
    "aprile",
    "maggio",
    "giugno",
    "luglio",
    "agosto",
    "settembre",
    "ottobre",
    "novembre",
    "dicembre",
];

fn weekday(date: Date) -> &'static str {
    WEEKDAYS[date.weekday().to_monday_zero_offset() as usize]
}

/// "lunedì 8 dicembre".
pub fn day_words(date: Date) -> String {
    format!(
        "{} {} {}",
        weekday(date),
        date.day(),
        MONTHS[(date.month() - 1) as usize]
    )
}

/// An amount in cents as Italians write it: "€ 16,00".
pub fn euro(cents: i64) -> String {
    let euros = cents / 100;
    let mut digits = euros.to_string();
    let mut grouped = String::new();
    while digits.len() > 3 {
        let tail = digits.split_off(digits.len() - 3);
        grouped = format!(".{tail}{grouped}");
    }
    format!("€ {digits}{grouped},{:02}", cents % 100)
}

/// The cost in words.
pub fn cost_words(cost: Option<&ServiceCost>) -> String {
    let Some(c) = cost else {
        return "Gratuito".into();
    };
    let mut out = if c.amount_cents == 0 {
        "Gratuito".to_string()
    } else {
        euro(c.amount_cents)
    };
    if c.pagopa && c.amount_cents > 0 {
        out.push_str(", con avviso pagoPA");
    }
    if !c.description.is_empty() {
        out.push_str(" — ");
        out.push_str(&c.description);
    }
    out
}

/// The time limits in words.
pub fn time_words(service: &CharterService) -> String {
    match (service.legal_days, service.usual_days) {
        (Some(l), Some(u)) => format!("Entro {l} giorni per legge; di solito {u}"),
        (Some(l), None) => format!("Entro {l} giorni per legge"),
        (None, Some(u)) => format!("Di solito {u} giorni"),
        (None, None) => "Tempi non indicati".into(),
    }
}

fn office<'a>(charter: &'a Charter, id: &str) -> Option<&'a CharterOffice> {
    charter.offices.iter().find(|o| o.id == id)
}

/// Who is responsible, in words.
pub fn responsible_words(charter: &Charter, service: &CharterService) -> String {
    let Some(r) = &service.responsible else {
        return String::new();
    };
    let mut out = r.role.clone();
    if !r.name.is_empty() {
        out.push_str(&format!(" ({})", r.name));
    }
    if let Some(o) = office(charter, &r.office_id) {
        out.push_str(&format!(", {}", o.name));
    }
    out
}

/// The offices a service is delivered at (desk and booking channels), else
/// its responsible's office; each once, in order.
pub fn offices_of<'a>(charter: &'a Charter, service: &CharterService) -> Vec<&'a CharterOffice> {
    let mut ids: Vec<&str> = service
        .delivered
        .iter()
        .filter(|d| !d.office_id.is_empty())
        .map(|d| d.office_id.as_str())
        .collect();
    if ids.is_empty()
        && let Some(r) = &service.responsible
    {
        ids.push(&r.office_id);
    }
    let mut seen = Vec::new();
    for id in ids {
        if let Some(o) = office(charter, id)
            && !seen.iter().any(|s: &&CharterOffice| s.id == o.id)
        {
            seen.push(o);
        }
    }
    seen
}

fn hhmm(t: jiff::civil::Time) -> String {
    t.strftime("%H:%M").to_string()
}

fn iso(z: &jiff::Zoned) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// An office seen from `at`: open now, when it closes, when it opens next,
/// the seven days from `at`'s date, a sentence.
///
/// # Errors
/// Hours that do not parse (a charter that passed validation has none).
pub fn office_now(
    office: &CharterOffice,
    patron_day: &str,
    at: Timestamp,
) -> NodeResult<OfficeNow> {
    let cal = charter::calendar(office, patron_day)
        .map_err(|e| NodeError::Internal(format!("office {}: {e}", office.id)))?;
    Ok(office_with(office, &cal, at))
}

fn office_with(office: &CharterOffice, cal: &Calendar, at: Timestamp) -> OfficeNow {
    let tz = rome();
    let local = at.to_zoned(tz.clone());
    let today = local.date();
    let open_now = cal.is_open(at);
    let closes_at = if open_now {
        cal.hours_on(today)
            .iter()
            .find(|h| h.start <= local.time() && local.time() < h.end)
            .and_then(|h| today.to_datetime(h.end).to_zoned(tz.clone()).ok())
    } else {
        None
    };
    let next = cal.next_opening(at);
    let mut week = Vec::new();
    let mut date = today;
    for _ in 0..7 {
        let hours = cal.hours_on(date);
        let note = if let Some(x) = office
            .exceptions
            .iter()
            .find(|x| x.date == date.to_string())
        {
            if x.reason.is_empty() {
                "Orario straordinario".to_string()
            } else {
                x.reason.clone()
            }
        } else {
            cal.holiday(date).map(str::to_string).unwrap_or_default()
        };
        week.push(DayHours {
            date: date.to_string(),
            weekday: weekday(date).to_string(),
            ranges: hours
                .iter()
                .map(|h| TimeRange {
                    start: hhmm(h.start),
                    end: hhmm(h.end),
                })
                .collect(),
            note,
        });
        match date.tomorrow() {
            Ok(d) => date = d,
            Err(_) => break,
        }
    }
    let status = match (&closes_at, &next) {
        (Some(c), _) => format!("Aperto ora, chiude alle {}", hhmm(c.time())),
        (None, Some(n)) if n.date() == today => {
            format!("Chiuso; apre oggi alle {}", hhmm(n.time()))
        }
        (None, Some(n)) if Some(n.date()) == today.tomorrow().ok() => {
            format!("Chiuso; apre domani alle {}", hhmm(n.time()))
        }
        (None, Some(n)) => format!(
            "Chiuso; riapre {} alle {}",
            day_words(n.date()),
            hhmm(n.time())
        ),
        (None, None) => "Chiuso; nessuna apertura prevista".into(),
    };
    OfficeNow {
        office: Some(office.clone()),
        open_now,
        closes_at: closes_at.as_ref().map(iso).unwrap_or_default(),
        next_opening: next.as_ref().map(iso).unwrap_or_default(),
        week,
        status,
    }
}

/// Everything about one service of `charter` at `at`.
///
/// # Errors
/// `NotFound` for a service the charter does not have.
pub fn explain(
    charter: &Charter,
    body_name: &str,
    charter_version: u64,
    service_id: &str,
    at: Timestamp,
) -> NodeResult<ExplainResponse> {
    let service = charter
        .services
        .iter()
        .find(|s| s.id == service_id)
        .ok_or_else(|| {
            NodeError::NotFound(format!(
                "service `{service_id}` in the charter of {}",
                charter.body
            ))
        })?;
    let offices = offices_of(charter, service)
        .into_iter()
        .map(|o| office_now(o, &charter.patron_day, at))
        .collect::<NodeResult<Vec<_>>>()?;
    Ok(ExplainResponse {
        body: charter.body.clone(),
        body_name: body_name.to_string(),
        charter_version,
        service: Some(service.clone()),
        offices,
        cost: cost_words(service.cost.as_ref()),
        time: time_words(service),
        responsible: responsible_words(charter, service),
        booking: service
            .delivered
            .iter()
            .filter(|d| d.channel == "booking")
            .cloned()
            .collect(),
        at: iso(&at.to_zoned(rome())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use urpnet_proto::v1::{OpeningHours, RequiredDocument, ServiceDelivery, ServiceResponsible};

    fn charter() -> Charter {
        let h = |weekday, start: &str, end: &str| OpeningHours {
            weekday,
            start: start.into(),
            end: end.into(),
        };
        Charter {
            body: "r_abruzz".into(),
            patron_day: String::new(),
            offices: vec![CharterOffice {
                id: "urp-avezzano".into(),
                name: "URP di Avezzano".into(),
                address: "Via Corradini 1".into(),
                istat_code: "066006".into(),
                hours: (1..=5)
                    .map(|d| h(d, "08:30", "12:30"))
                    .chain([h(2, "15:00", "17:00")])
                    .collect(),
                ..CharterOffice::default()
            }],
            services: vec![CharterService {
                id: "tessera-sanitaria".into(),
                title: "Rinnovo della tessera sanitaria".into(),
                categories: vec!["sanita".into()],
                documents: vec![RequiredDocument {
                    name: "Documento d'identità".into(),
                    where_to_get: String::new(),
                }],
                legal_days: Some(30),
                usual_days: Some(5),
                cost: Some(ServiceCost {
                    amount_cents: 1600,
                    description: String::new(),
                    pagopa: true,
                }),
                delivered: vec![
                    ServiceDelivery {
                        channel: "desk".into(),
                        office_id: "urp-avezzano".into(),
                        address: String::new(),
                    },
                    ServiceDelivery {
                        channel: "booking".into(),
                        office_id: "urp-avezzano".into(),
                        address: String::new(),
                    },
                ],
                responsible: Some(ServiceResponsible {
                    role: "Dirigente del Servizio".into(),
                    office_id: "urp-avezzano".into(),
                    name: String::new(),
                }),
                ..CharterService::default()
            }],
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn open_now_and_the_next_opening_follow_italian_civil_time_across_dst() {
        let c = charter();
        // Friday 27 March 2026, 11:00 in Rome (CET, UTC+1): open.
        let e = explain(
            &c,
            "Regione Abruzzo",
            3,
            "tessera-sanitaria",
            at("2026-03-27T10:00:00Z"),
        )
        .unwrap();
        let o = &e.offices[0];
        assert!(o.open_now);
        assert_eq!(o.closes_at, "2026-03-27T12:30:00+01:00");
        assert_eq!(o.status, "Aperto ora, chiude alle 12:30");
        // Friday 13:00: closed until Monday 30 March, after the clocks
        // went forward on Sunday 29: 08:30 is now UTC+2.
        let e = explain(&c, "", 3, "tessera-sanitaria", at("2026-03-27T12:00:00Z")).unwrap();
        let o = &e.offices[0];
        assert!(!o.open_now);
        assert_eq!(o.next_opening, "2026-03-30T08:30:00+02:00");
        assert_eq!(o.status, "Chiuso; riapre lunedì 30 marzo alle 08:30");
        assert_eq!(o.week.len(), 7);
        assert_eq!(o.week[0].weekday, "venerdì");
        assert!(o.week[1].ranges.is_empty() && o.week[2].ranges.is_empty());
        assert_eq!(o.week[4].ranges.len(), 2, "Tuesday has an afternoon");
        assert_eq!(e.cost, "€ 16,00, con avviso pagoPA");
        assert_eq!(e.time, "Entro 30 giorni per legge; di solito 5");
        assert_eq!(e.responsible, "Dirigente del Servizio, URP di Avezzano");
        assert_eq!(e.booking.len(), 1);
    }

    #[test]
    fn holidays_show_in_the_week_and_push_the_next_opening() {
        let c = charter();
        // Monday 7 December 2026, 18:00: closed for the day.
        let e = explain(&c, "", 1, "tessera-sanitaria", at("2026-12-07T17:00:00Z")).unwrap();
        let o = &e.offices[0];
        // Tuesday 8 December is the Immacolata: closed, next opening 9th.
        assert_eq!(o.week[1].note, "Immacolata Concezione");
        assert!(o.week[1].ranges.is_empty());
        assert_eq!(o.next_opening, "2026-12-09T08:30:00+01:00");
        assert_eq!(o.status, "Chiuso; riapre mercoledì 9 dicembre alle 08:30");
    }

    #[test]
    fn an_unknown_service_is_not_found_and_amounts_read_italian() {
        assert!(matches!(
            explain(&charter(), "", 1, "nope", Timestamp::now()),
            Err(NodeError::NotFound(_))
        ));
        assert_eq!(euro(12_345_678), "€ 123.456,78");
        assert_eq!(euro(5), "€ 0,05");
        assert_eq!(cost_words(None), "Gratuito");
    }
}
