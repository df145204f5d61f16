//! Charter import from the files an URP officer maintains: one TOML file,
//! or two CSV sheets (offices, services) as a spreadsheet exports them.
//! Every error names the file, line and column, and the rule; nothing is
//! published unless the whole charter is valid.
//!
//! TOML:
//!
//! ```toml
//! body = "c_c426"            # optional: the node's own id
//! patron_day = "10-10"       # MM-DD, optional
//!
//! [[office]]
//! id = "anagrafe"
//! name = "Ufficio Anagrafe"
//! address = "Via Sandro Pertini 2, Celano"
//! istat_code = "066032"
//! hours = ["lun-ven 08:30-12:30", "mar,gio 15:00-17:30"]
//! closures = ["2026-12-24 Chiusura natalizia"]
//!
//! [[service]]
//! id = "carta-identita"
//! title = "Carta d'identità elettronica"
//! categories = ["anagrafe.documenti"]
//! documents = ["Fototessera recente", "Vecchio documento | in caso di rinnovo"]
//! cost = "16,79"             # euro; "0" or absent: free
//! pagopa = true
//! delivered = ["booking:anagrafe", "desk:anagrafe"]
//! responsible = { role = "Ufficiale d'anagrafe", office = "anagrafe" }
//! legal_days = 30
//! usual_days = 6
//! ```
//!
//! CSV: the same fields as columns, lists separated by `;`; see
//! [`OFFICE_COLUMNS`] and [`SERVICE_COLUMNS`].

use std::fmt;

use serde::Deserialize;
use urpnet_proto::v1::{
    Charter, CharterOffice, CharterService, Coordinates, HoursException, OpeningHours,
    RequiredDocument, ServiceCost, ServiceDelivery, ServiceResponsible, TimeRange,
};

/// One error of an import, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The file.
    pub file: String,
    /// 1-based line (0: the file as a whole).
    pub line: usize,
    /// 1-based column (a character in TOML, a field in CSV; 0: unknown).
    pub column: usize,
    /// The field, as in the charter (`services[3].legal_days`) or the
    /// column's name.
    pub field: String,
    /// The rule broken.
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

/// All the errors of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportErrors(pub Vec<ImportError>);

impl fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImportErrors {}

const DAYS: [(&str, u32); 14] = [
    ("lun", 1),
    ("mar", 2),
    ("mer", 3),
    ("gio", 4),
    ("ven", 5),
    ("sab", 6),
    ("dom", 7),
    ("mon", 1),
    ("tue", 2),
    ("wed", 3),
    ("thu", 4),
    ("fri", 5),
    ("sat", 6),
    ("sun", 7),
];

fn day(text: &str) -> Result<u32, String> {
    let t = text.trim().to_lowercase();
    let short: String = t.chars().take(3).collect();
    DAYS.iter()
        .find(|(name, _)| *name == short && t.len() >= 3)
        .map(|(_, n)| *n)
        .ok_or_else(|| {
            format!(
                "`{}` is not a weekday (lun, mar, mer, gio, ven, sab, dom)",
                text.trim()
            )
        })
}

/// Parses `"lun-ven 08:30-12:30"`, `"mar,gio 15:00-17:30"`, `"sab 09:00-12:00"`.
///
/// # Errors
/// The rule broken, in words.
pub fn parse_hours(text: &str) -> Result<Vec<OpeningHours>, String> {
    let (days, range) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("`{text}` must be like \"lun-ven 08:30-12:30\""))?;
    let (start, end) = range
        .trim()
        .split_once('-')
        .ok_or_else(|| format!("`{range}` must be a time range HH:MM-HH:MM"))?;
    let hhmm = |s: &str| -> Result<String, String> {
        let s = s.trim();
        let ok = s.len() == 5
            && s.as_bytes()[2] == b':'
            && s[..2].parse::<u8>().is_ok_and(|h| h < 24)
            && s[3..].parse::<u8>().is_ok_and(|m| m < 60);
        ok.then(|| s.to_string())
            .ok_or_else(|| format!("`{s}` must be a time HH:MM"))
    };
    let (start, end) = (hhmm(start)?, hhmm(end)?);
    let mut weekdays = Vec::new();
    for part in days.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if b < a {
                    return Err(format!("`{part}`: the range of days must go forward"));
                }
                weekdays.extend(a..=b);
            }
            None => weekdays.push(day(part)?),
        }
    }
    Ok(weekdays
        .into_iter()
        .map(|weekday| OpeningHours {
            weekday,
            start: start.clone(),
            end: end.clone(),
        })
        .collect())
}

/// Parses `"2026-12-24 Chiusura natalizia"` (closed) or
/// `"2026-12-23 09:00-12:00 Apertura straordinaria"`.
///
/// # Errors
/// The rule broken, in words.
pub fn parse_exception(text: &str) -> Result<HoursException, String> {
    let text = text.trim();
    let (date, rest) = text.split_once(' ').unwrap_or((text, ""));
    if date.parse::<jiff::civil::Date>().is_err() {
        return Err(format!("`{date}` must be a date YYYY-MM-DD"));
    }
    let rest = rest.trim();
    let (ranges, reason) = match rest.split_once(' ') {
        Some((first, reason)) if first.contains(':') => (vec![first], reason),
        _ if rest.contains(':') && !rest.contains(' ') => (vec![rest], ""),
        _ => (Vec::new(), rest),
    };
    let mut out = Vec::new();
    for r in ranges {
        let parsed = parse_hours(&format!("lun {r}"))?;
        out.push(TimeRange {
            start: parsed[0].start.clone(),
            end: parsed[0].end.clone(),
        });
    }
    Ok(HoursException {
        date: date.to_string(),
        ranges: out,
        reason: reason.to_string(),
    })
}

/// Parses an amount in euro ("16,79", "16.79", "€ 5", "0") into cents.
///
/// # Errors
/// Not an amount, or negative.
pub fn parse_euro(text: &str) -> Result<i64, String> {
    let t = text.trim().trim_start_matches('€').trim().replace(' ', "");
    if t.is_empty() {
        return Ok(0);
    }
    if t.starts_with('-') {
        return Err("must not be negative".into());
    }
    let t = if t.contains(',') {
        t.replace('.', "").replace(',', ".")
    } else {
        t
    };
    let (whole, frac) = t.split_once('.').unwrap_or((&t, ""));
    let bad = || format!("`{}` must be an amount in euro, e.g. 16,79", text.trim());
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().map_err(|_| bad())? * 10,
        2 => frac.parse().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    whole
        .checked_mul(100)
        .and_then(|c| c.checked_add(frac))
        .ok_or_else(bad)
}

/// Parses `"desk:anagrafe"`, `"booking:anagrafe"`, `"online:https://…"`,
/// `"pec:protocollo@pec.comune.celano.aq.it"`, `"phone:0863 7921"`.
///
/// # Errors
/// No channel.
pub fn parse_delivery(text: &str) -> Result<ServiceDelivery, String> {
    let (channel, rest) = text.trim().split_once(':').ok_or_else(|| {
        format!("`{text}` must be channel:office or channel:address, e.g. desk:anagrafe")
    })?;
    let channel = channel.trim().to_lowercase();
    let rest = rest.trim().to_string();
    Ok(if matches!(channel.as_str(), "desk" | "booking") {
        ServiceDelivery {
            channel,
            office_id: rest,
            address: String::new(),
        }
    } else {
        ServiceDelivery {
            channel,
            office_id: String::new(),
            address: rest,
        }
    })
}

fn document(text: &str) -> RequiredDocument {
    let (name, place) = text.split_once('|').unwrap_or((text, ""));
    RequiredDocument {
        name: name.trim().to_string(),
        where_to_get: place.trim().to_string(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlCharter {
    #[serde(default)]
    body: String,
    #[serde(default)]
    patron_day: String,
    #[serde(default)]
    office: Vec<toml::Spanned<TomlOffice>>,
    #[serde(default)]
    service: Vec<toml::Spanned<TomlService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlOffice {
    id: String,
    name: String,
    address: String,
    istat_code: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    #[serde(default)]
    building: String,
    #[serde(default)]
    floor: String,
    #[serde(default)]
    room: String,
    #[serde(default)]
    directions: String,
    #[serde(default)]
    accessibility: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    pec: String,
    #[serde(default)]
    hours: Vec<String>,
    #[serde(default)]
    closures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlResponsible {
    role: String,
    #[serde(default)]
    office: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlService {
    id: String,
    title: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    how_to: String,
    #[serde(default)]
    documents: Vec<String>,
    #[serde(default)]
    outcome: String,
    legal_days: Option<i64>,
    usual_days: Option<i64>,
    #[serde(default)]
    cost: Option<toml::Value>,
    #[serde(default)]
    cost_description: String,
    #[serde(default)]
    pagopa: bool,
    #[serde(default)]
    delivered: Vec<String>,
    #[serde(default)]
    conditions: String,
    responsible: Option<TomlResponsible>,
    #[serde(default)]
    legal_references: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    valid_from: String,
    #[serde(default)]
    valid_until: String,
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Where `field` (the last name of a path like `services[3].legal_days`)
/// is written inside `span` of `text`: its `name =` line, else the span's
/// start.
fn locate(text: &str, span: std::ops::Range<usize>, field: &str) -> (usize, usize) {
    let name = field
        .rsplit('.')
        .next()
        .unwrap_or(field)
        .split('[')
        .next()
        .unwrap_or("");
    let body = &text[span.start.min(text.len())..span.end.min(text.len())];
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if !name.is_empty()
            && trimmed.starts_with(name)
            && trimmed[name.len()..].trim_start().starts_with('=')
        {
            let indent = line.len() - trimmed.len();
            return line_col(text, span.start + offset + indent);
        }
        offset += line.len();
    }
    line_col(text, span.start)
}

fn days(v: Option<i64>, field: &str, errors: &mut Vec<(String, String)>) -> Option<u32> {
    match v {
        None => None,
        Some(d) if (0..=i64::from(u32::MAX)).contains(&d) => Some(d as u32),
        Some(_) => {
            errors.push((
                field.to_string(),
                "must be a positive number of days (absent: not set)".into(),
            ));
            None
        }
    }
}

/// Parses and validates a TOML charter; `body` fills an empty `body`.
/// `taxonomy`, when given, checks the categories.
///
/// # Errors
/// Every error, located.
pub fn from_toml(
    file: &str,
    text: &str,
    body: &str,
    taxonomy: Option<&urpnet_proto::taxonomy::Taxonomy>,
) -> Result<Charter, ImportErrors> {
    let err = |line, column, field: &str, message: String| ImportError {
        file: file.to_string(),
        line,
        column,
        field: field.to_string(),
        message,
    };
    let parsed: TomlCharter = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        ImportErrors(vec![err(line, column, "", e.message().to_string())])
    })?;
    let mut charter = Charter {
        body: if parsed.body.is_empty() {
            body.to_string()
        } else {
            parsed.body
        },
        patron_day: parsed.patron_day,
        ..Charter::default()
    };
    // (path, rule) pairs found while converting, located like validation's.
    let mut early: Vec<(String, String)> = Vec::new();
    let mut spans = (Vec::new(), Vec::new());
    for (i, o) in parsed.office.into_iter().enumerate() {
        spans.0.push(o.span());
        let o = o.into_inner();
        let mut hours = Vec::new();
        for (j, h) in o.hours.iter().enumerate() {
            match parse_hours(h) {
                Ok(mut h) => hours.append(&mut h),
                Err(e) => early.push((format!("offices[{i}].hours[{j}]"), e)),
            }
        }
        let mut exceptions = Vec::new();
        for (j, x) in o.closures.iter().enumerate() {
            match parse_exception(x) {
                Ok(x) => exceptions.push(x),
                Err(e) => early.push((format!("offices[{i}].closures[{j}]"), e)),
            }
        }
        charter.offices.push(CharterOffice {
            id: o.id,
            name: o.name,
            address: o.address,
            coordinates: o
                .latitude
                .zip(o.longitude)
                .map(|(latitude, longitude)| Coordinates {
                    latitude,
                    longitude,
                }),
            istat_code: o.istat_code,
            building: o.building,
            floor: o.floor,
            room: o.room,
            directions: o.directions,
            accessibility: o.accessibility,
            phone: o.phone,
            email: o.email,
            pec: o.pec,
            hours,
            exceptions,
        });
    }
    for (i, s) in parsed.service.into_iter().enumerate() {
        spans.1.push(s.span());
        let s = s.into_inner();
        let f = |name: &str| format!("services[{i}].{name}");
        let amount = match &s.cost {
            None => 0,
            Some(toml::Value::Integer(n)) if *n >= 0 => n.saturating_mul(100),
            Some(toml::Value::Integer(_)) => {
                early.push((f("cost"), "must not be negative".into()));
                0
            }
            Some(toml::Value::Float(x)) if *x >= 0.0 => (x * 100.0).round() as i64,
            Some(toml::Value::String(t)) => parse_euro(t).unwrap_or_else(|e| {
                early.push((f("cost"), e));
                0
            }),
            Some(_) => {
                early.push((f("cost"), "must be an amount in euro, not negative".into()));
                0
            }
        };
        let mut delivered = Vec::new();
        for (j, d) in s.delivered.iter().enumerate() {
            match parse_delivery(d) {
                Ok(d) => delivered.push(d),
                Err(e) => early.push((format!("services[{i}].delivered[{j}]"), e)),
            }
        }
        charter.services.push(CharterService {
            id: s.id,
            title: s.title,
            summary: s.summary,
            description: s.description,
            categories: s.categories,
            audience: s.audience,
            how_to: s.how_to,
            documents: s.documents.iter().map(|d| document(d)).collect(),
            outcome: s.outcome,
            legal_days: days(s.legal_days, &f("legal_days"), &mut early),
            usual_days: days(s.usual_days, &f("usual_days"), &mut early),
            cost: Some(ServiceCost {
                amount_cents: amount,
                description: s.cost_description,
                pagopa: s.pagopa,
            }),
            delivered,
            conditions: s.conditions,
            responsible: s.responsible.map(|r| ServiceResponsible {
                role: r.role,
                office_id: r.office,
                name: r.name,
            }),
            legal_references: s.legal_references,
            keywords: s.keywords,
            valid_from: s.valid_from,
            valid_until: s.valid_until,
        });
    }
    let mut found = early;
    if let Err(v) = urpnet_proto::charter::validate(&charter, taxonomy) {
        found.extend(v.0.into_iter().map(|f| (f.field, f.rule)));
    }
    if found.is_empty() {
        return Ok(charter);
    }
    let located = found
        .into_iter()
        .map(|(field, message)| {
            let index = |prefix: &str| -> Option<usize> {
                field.strip_prefix(prefix)?.split(']').next()?.parse().ok()
            };
            let (line, column) = if let Some(i) = index("offices[") {
                spans
                    .0
                    .get(i)
                    .map_or((0, 0), |s| locate(text, s.clone(), &field))
            } else if let Some(i) = index("services[") {
                spans
                    .1
                    .get(i)
                    .map_or((0, 0), |s| locate(text, s.clone(), &field))
            } else {
                locate(text, 0..text.len(), &field)
            };
            err(line, column, &field, message)
        })
        .collect();
    Err(ImportErrors(located))
}

/// The columns of the offices sheet, in order; `id`, `name`, `address`
/// and `istat_code` are required.
pub const OFFICE_COLUMNS: &[&str] = &[
    "id",
    "name",
    "address",
    "istat_code",
    "latitude",
    "longitude",
    "building",
    "floor",
    "room",
    "directions",
    "accessibility",
    "phone",
    "email",
    "pec",
    "hours",
    "closures",
];

/// The columns of the services sheet; `id`, `title` and `categories` are
/// required. Lists are separated by `;`; a document is `name | where`.
pub const SERVICE_COLUMNS: &[&str] = &[
    "id",
    "title",
    "summary",
    "categories",
    "audience",
    "how_to",
    "documents",
    "outcome",
    "legal_days",
    "usual_days",
    "cost",
    "pagopa",
    "cost_description",
    "delivered",
    "conditions",
    "responsible_role",
    "responsible_office",
    "responsible_name",
    "legal_references",
    "keywords",
    "valid_from",
    "valid_until",
    "description",
];

const REQUIRED_OFFICE: &[&str] = &["id", "name", "address", "istat_code"];
const REQUIRED_SERVICE: &[&str] = &["id", "title", "categories"];

struct Sheet {
    file: String,
    header: Vec<String>,
    rows: Vec<(usize, csv::StringRecord)>,
}

impl Sheet {
    fn read(
        file: &str,
        text: &str,
        known: &[&str],
        required: &[&str],
    ) -> Result<Sheet, Vec<ImportError>> {
        let err = |line, column, field: &str, message: String| ImportError {
            file: file.to_string(),
            line,
            column,
            field: field.to_string(),
            message,
        };
        // Spreadsheets in Italy often export with `;`.
        let first = text.lines().next().unwrap_or("");
        let delimiter = if first.matches(';').count() > first.matches(',').count() {
            b';'
        } else {
            b','
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(false)
            .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
        let header: Vec<String> = match reader.headers() {
            Ok(h) => h.iter().map(|c| c.trim().to_lowercase()).collect(),
            Err(e) => return Err(vec![err(1, 0, "", e.to_string())]),
        };
        let mut errors = Vec::new();
        for (i, name) in header.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                errors.push(err(
                    1,
                    i + 1,
                    name,
                    format!(
                        "is not a column of this sheet (columns: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        for name in required {
            if !header.iter().any(|h| h == name) {
                errors.push(err(1, 0, name, "required column is missing".into()));
            }
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            match record {
                Ok(r) => rows.push((r.position().map_or(0, |p| p.line() as usize), r)),
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line() as usize);
                    errors.push(err(line, 0, "", e.to_string()));
                }
            }
        }
        if errors.is_empty() {
            Ok(Sheet {
                file: file.to_string(),
                header,
                rows,
            })
        } else {
            Err(errors)
        }
    }

    fn column(&self, name: &str) -> usize {
        self.header
            .iter()
            .position(|h| h == name)
            .map_or(0, |i| i + 1)
    }

    fn get<'a>(&self, record: &'a csv::StringRecord, name: &str) -> &'a str {
        self.header
            .iter()
            .position(|h| h == name)
            .and_then(|i| record.get(i))
            .map_or("", str::trim)
    }
}

fn list(text: &str) -> Vec<String> {
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses and validates a charter from its two sheets.
///
/// # Errors
/// Every error, located by file, line and column.
pub fn from_csv(
    offices: (&str, &str),
    services: (&str, &str),
    body: &str,
    patron_day: &str,
    taxonomy: Option<&urpnet_proto::taxonomy::Taxonomy>,
) -> Result<Charter, ImportErrors> {
    let o = Sheet::read(offices.0, offices.1, OFFICE_COLUMNS, REQUIRED_OFFICE);
    let s = Sheet::read(services.0, services.1, SERVICE_COLUMNS, REQUIRED_SERVICE);
    let (o, s) = match (o, s) {
        (Ok(o), Ok(s)) => (o, s),
        (o, s) => {
            let mut all = o.err().unwrap_or_default();
            all.extend(s.err().unwrap_or_default());
            return Err(ImportErrors(all));
        }
    };
    let mut charter = Charter {
        body: body.to_string(),
        patron_day: patron_day.to_string(),
        ..Charter::default()
    };
    // (sheet 0/1, row index, column name, message)
    let mut found: Vec<(usize, usize, String, String)> = Vec::new();
    for (i, (_, r)) in o.rows.iter().enumerate() {
        let g = |n: &str| o.get(r, n).to_string();
        let mut hours = Vec::new();
        for h in list(&g("hours")) {
            match parse_hours(&h) {
                Ok(mut h) => hours.append(&mut h),
                Err(e) => found.push((0, i, "hours".into(), e)),
            }
        }
        let mut exceptions = Vec::new();
        for x in list(&g("closures")) {
            match parse_exception(&x) {
                Ok(x) => exceptions.push(x),
                Err(e) => found.push((0, i, "closures".into(), e)),
            }
        }
        let mut coord = |n: &str| -> Option<f64> {
            let t = g(n).replace(',', ".");
            if t.is_empty() {
                return None;
            }
            t.parse()
                .map_err(|_| found.push((0, i, n.into(), "must be a decimal number".into())))
                .ok()
        };
        let (lat, lon) = (coord("latitude"), coord("longitude"));
        charter.offices.push(CharterOffice {
            id: g("id"),
            name: g("name"),
            address: g("address"),
            coordinates: lat.zip(lon).map(|(latitude, longitude)| Coordinates {
                latitude,
                longitude,
            }),
            istat_code: g("istat_code"),
            building: g("building"),
            floor: g("floor"),
            room: g("room"),
            directions: g("directions"),
            accessibility: g("accessibility"),
            phone: g("phone"),
            email: g("email"),
            pec: g("pec"),
            hours,
            exceptions,
        });
    }
    for (i, (_, r)) in s.rows.iter().enumerate() {
        let g = |n: &str| s.get(r, n).to_string();
        let mut number = |n: &str| -> Option<u32> {
            let t = g(n);
            if t.is_empty() {
                return None;
            }
            match t.parse::<u32>() {
                Ok(d) => Some(d),
                Err(_) => {
                    found.push((1, i, n.into(), "must be a whole number of days".into()));
                    Some(0)
                }
            }
        };
        let (legal, usual) = (number("legal_days"), number("usual_days"));
        let amount = parse_euro(&g("cost")).unwrap_or_else(|e| {
            found.push((1, i, "cost".into(), e));
            0
        });
        let pagopa = match g("pagopa").to_lowercase().as_str() {
            "" | "no" | "false" | "0" => false,
            "sì" | "si" | "yes" | "true" | "1" | "x" => true,
            other => {
                found.push((1, i, "pagopa".into(), format!("`{other}` must be sì or no")));
                false
            }
        };
        let mut delivered = Vec::new();
        for d in list(&g("delivered")) {
            match parse_delivery(&d) {
                Ok(d) => delivered.push(d),
                Err(e) => found.push((1, i, "delivered".into(), e)),
            }
        }
        let role = g("responsible_role");
        charter.services.push(CharterService {
            id: g("id"),
            title: g("title"),
            summary: g("summary"),
            description: g("description"),
            categories: list(&g("categories")),
            audience: g("audience"),
            how_to: g("how_to"),
            documents: list(&g("documents")).iter().map(|d| document(d)).collect(),
            outcome: g("outcome"),
            legal_days: legal,
            usual_days: usual,
            cost: Some(ServiceCost {
                amount_cents: amount,
                description: g("cost_description"),
                pagopa,
            }),
            delivered,
            conditions: g("conditions"),
            responsible: (!role.is_empty()).then(|| ServiceResponsible {
                role,
                office_id: g("responsible_office"),
                name: g("responsible_name"),
            }),
            legal_references: list(&g("legal_references")),
            keywords: list(&g("keywords")),
            valid_from: g("valid_from"),
            valid_until: g("valid_until"),
        });
    }
    if let Err(v) = urpnet_proto::charter::validate(&charter, taxonomy) {
        for f in v.0 {
            let (sheet, rest) = if let Some(rest) = f.field.strip_prefix("offices[") {
                (0, rest)
            } else if let Some(rest) = f.field.strip_prefix("services[") {
                (1, rest)
            } else {
                found.push((2, 0, f.field, f.rule));
                continue;
            };
            let (index, path) = rest.split_once(']').unwrap_or(("", ""));
            let column = path
                .trim_start_matches('.')
                .split(['.', '['])
                .next()
                .unwrap_or("")
                .to_string();
            let column = match column.as_str() {
                "responsible" => "responsible_role".to_string(),
                "coordinates" => "latitude".to_string(),
                "exceptions" => "closures".to_string(),
                _ => column,
            };
            found.push((
                sheet,
                index.parse().unwrap_or(0),
                column,
                format!("{}: {}", f.field, f.rule),
            ));
        }
    }
    if found.is_empty() {
        return Ok(charter);
    }
    Err(ImportErrors(
        found
            .into_iter()
            .map(|(sheet, row, column, message)| match sheet {
                2 => ImportError {
                    file: String::new(),
                    line: 0,
                    column: 0,
                    field: column,
                    message,
                },
                _ => {
                    let sh = if sheet == 0 { &o } else { &s };
                    ImportError {
                        file: sh.file.clone(),
                        line: sh.rows.get(row).map_or(0, |(l, _)| *l),
                        column: sh.column(&column),
                        field: column,
                        message,
                    }
                }
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taxonomy() -> urpnet_proto::taxonomy::Taxonomy {
        crate::taxonomy::builtin()
    }

    const CELANO: &str = include_str!("../../../examples/charters/celano.toml");
    const REGIONE: &str = include_str!("../../../examples/charters/regione-abruzzo.toml");

    #[test]
    fn the_sample_charters_import_whole() {
        let c = from_toml("celano.toml", CELANO, "", Some(&taxonomy())).unwrap();
        assert_eq!(c.body, "c_c426");
        assert!(c.offices.len() >= 12, "{}", c.offices.len());
        assert!(c.services.len() >= 60, "{}", c.services.len());
        let cie = c
            .services
            .iter()
            .find(|s| s.id == "carta-identita")
            .unwrap();
        assert_eq!(cie.cost.as_ref().unwrap().amount_cents, 2221);
        assert_eq!(cie.delivered[0].channel, "booking");
        let anagrafe = c.offices.iter().find(|o| o.id == "anagrafe").unwrap();
        // lun-ven mornings, Tue/Thu afternoons, Saturday morning.
        assert_eq!(anagrafe.hours.len(), 5 + 2 + 1);
        assert_eq!(anagrafe.exceptions[0].ranges.len(), 1);
        let r = from_toml("regione.toml", REGIONE, "", Some(&taxonomy())).unwrap();
        assert_eq!(r.body, "r_abruzz");
        assert!(r.services.len() >= 20);
    }

    #[test]
    fn every_error_names_line_and_column_and_nothing_is_returned() {
        let bad = CELANO
            .replacen("legal_days = 45", "legal_days = 0", 1)
            .replacen("\"lun-ven 08:30-12:30\"", "\"lnu-ven 08:30-12:30\"", 1)
            .replacen(
                "categories = [\"anagrafe.residenza\"]",
                "categories = [\"anagrafe.nope\"]",
                1,
            )
            .replacen(
                "delivered = [\"desk:elettorale\"]",
                "delivered = [\"desk:altrove\"]",
                1,
            );
        let errors = from_toml("celano.toml", &bad, "", Some(&taxonomy())).unwrap_err();
        let text = errors.to_string();
        assert_eq!(errors.0.len(), 4, "{text}");
        for e in &errors.0 {
            assert!(e.line > 0 && e.column > 0, "{e}");
        }
        let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
        let find = |field: &str| {
            errors
                .0
                .iter()
                .find(|e| e.field.ends_with(field))
                .unwrap_or_else(|| panic!("{field} in {text}"))
        };
        assert_eq!(find("legal_days").line, line_of("legal_days = 0"));
        assert!(find("hours[0]").message.contains("`lnu`"), "{text}");
        assert_eq!(find("categories[0]").line, line_of("anagrafe.nope"));
        assert!(find("office_id").message.contains("altrove"), "{text}");
        // A syntax error: line and column of the TOML parser.
        let e = from_toml("x.toml", "body = \"c_c426\"\n[[office]\n", "", None).unwrap_err();
        assert_eq!(e.0[0].line, 2, "{e}");
        // Overlapping hours and an hour ending before it starts.
        let e = from_toml(
            "x.toml",
            &CELANO.replacen(
                "\"lun-ven 08:30-12:30\"",
                "\"lun-ven 08:30-12:30\", \"lun 12:00-13:00\", \"mar 14:00-13:00\"",
                1,
            ),
            "",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("hours"), "{e}");
    }

    #[test]
    fn csv_sheets_import_and_a_bad_row_names_line_and_column() {
        let offices = "id;name;address;istat_code;hours\n\
                       anagrafe;Ufficio Anagrafe;Via Pertini 2, Celano;066032;lun-ven 08:30-12:30; mar 15:00-17:00\n";
        // `;` separates fields here, so lists in a cell need quotes.
        let offices = offices.replace(
            "lun-ven 08:30-12:30; mar 15:00-17:00",
            "\"lun-ven 08:30-12:30; mar 15:00-17:00\"",
        );
        let services = "id,title,categories,legal_days,cost,pagopa,delivered,responsible_role,responsible_office\n\
                        carta-identita,Carta d'identità,anagrafe.carta_identita,,\"22,21\",sì,desk:anagrafe,Ufficiale d'anagrafe,anagrafe\n\
                        residenza,Cambio di residenza,anagrafe.residenza,45,,no,desk:anagrafe,Ufficiale d'anagrafe,anagrafe\n";
        let c = from_csv(
            ("uffici.csv", &offices),
            ("servizi.csv", services),
            "c_c426",
            "08-25",
            Some(&taxonomy()),
        )
        .unwrap();
        assert_eq!(c.offices[0].hours.len(), 6);
        assert_eq!(c.services[0].cost.as_ref().unwrap().amount_cents, 2221);
        assert!(c.services[0].cost.as_ref().unwrap().pagopa);
        assert_eq!(c.services[1].legal_days, Some(45));
        // A bad row: line 3, column 4 (legal_days); a negative cost.
        let bad = services.replace(",45,,no,", ",tanti,-3,no,");
        let e = from_csv(
            ("uffici.csv", &offices),
            ("servizi.csv", &bad),
            "c_c426",
            "",
            None,
        )
        .unwrap_err();
        let days = e.0.iter().find(|e| e.field == "legal_days").unwrap();
        assert_eq!(
            (days.file.as_str(), days.line, days.column),
            ("servizi.csv", 3, 4),
            "{e}"
        );
        let cost = e.0.iter().find(|e| e.field == "cost").unwrap();
        assert_eq!((cost.line, cost.column), (3, 5), "{e}");
        assert!(cost.message.contains("negative"), "{e}");
        // A missing column.
        let e = from_csv(
            ("uffici.csv", &offices),
            ("servizi.csv", "id,title\nx,Y\n"),
            "c_c426",
            "",
            None,
        )
        .unwrap_err();
        assert!(
            e.0.iter()
                .any(|e| e.field == "categories" && e.message.contains("missing")),
            "{e}"
        );
        // A service pointing at an unknown office: its line and the column.
        let e = from_csv(
            ("uffici.csv", &offices),
            (
                "servizi.csv",
                &services.replace(
                    "desk:anagrafe,Ufficiale d'anagrafe,anagrafe\nresidenza",
                    "desk:altrove,Ufficiale d'anagrafe,anagrafe\nresidenza",
                ),
            ),
            "c_c426",
            "",
            None,
        )
        .unwrap_err();
        let d = e.0.iter().find(|e| e.field == "delivered").unwrap();
        assert_eq!((d.line, d.column), (2, 7), "{e}");
    }

    #[test]
    fn hours_amounts_and_channels_parse_as_officers_write_them() {
        assert_eq!(parse_hours("lun-ven 08:30-12:30").unwrap().len(), 5);
        assert_eq!(parse_hours("Mar,Gio 15:00-17:30").unwrap()[1].weekday, 4);
        assert!(parse_hours("lun 8-12").is_err());
        assert!(parse_hours("ven-lun 08:00-09:00").is_err());
        assert!(parse_hours("xyz 08:00-09:00").unwrap_err().contains("xyz"));
        assert_eq!(parse_euro("16,79").unwrap(), 1679);
        assert_eq!(parse_euro("€ 1.234,5").unwrap(), 123_450);
        assert_eq!(parse_euro("16.79").unwrap(), 1679);
        assert!(parse_euro("-1").is_err());
        assert!(parse_euro("dieci").is_err());
        let x = parse_exception("2026-12-24 08:30-12:00 Vigilia").unwrap();
        assert_eq!((x.ranges.len(), x.reason.as_str()), (1, "Vigilia"));
        let x = parse_exception("2026-08-14 Chiusura estiva").unwrap();
        assert!(x.ranges.is_empty());
        assert!(parse_exception("24/12/2026 chiuso").is_err());
        assert_eq!(
            parse_delivery("online:https://x.it/a").unwrap().address,
            "https://x.it/a"
        );
        assert_eq!(
            parse_delivery("desk:anagrafe").unwrap().office_id,
            "anagrafe"
        );
    }
}
