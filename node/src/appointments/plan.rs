//! Booking plans: which services are bookable at which office, when, and by
//! which rules (DESIGN.md §13). A plan's weekly hours are written as the
//! charter's (`"lun-ven 09:00-12:00"`); the gaps between ranges are breaks;
//! the office's holidays, patron's day and exceptions close it too.

use serde::Deserialize;
use urpnet_proto::calendar::Calendar;
use urpnet_proto::slots::SlotRules;
use urpnet_proto::v1::{AppointmentPlan, Charter, CharterOffice, CharterService};
use urpnet_proto::validate::Violations;

/// Most plans a body may have.
pub const MAX_PLANS: usize = 500;

/// A plan checked against the charter, ready to lay out slots.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The plan as given (interval filled in, channels listed).
    pub plan: AppointmentPlan,
    /// The office's calendar with the plan's weekly hours.
    pub calendar: Calendar,
    /// The slot rules.
    pub rules: SlotRules,
    /// The office's name and address.
    pub office: CharterOffice,
    /// The service.
    pub service: CharterService,
}

impl Ready {
    /// Whether `channel` ("video" or "desk") is offered.
    pub fn offers(&self, channel: &str) -> bool {
        self.plan.channels.iter().any(|c| c == channel)
    }
}

/// The plan's slot rules.
pub fn rules(p: &AppointmentPlan) -> SlotRules {
    SlotRules {
        length_min: p.length_min,
        interval_min: if p.interval_min == 0 {
            p.length_min
        } else {
            p.interval_min
        },
        buffer_before_min: p.buffer_before_min,
        buffer_after_min: p.buffer_after_min,
        min_notice_min: p.min_notice_min,
        max_days_ahead: p.max_days_ahead,
    }
}

/// Checks every plan against the body's charter and each other, naming
/// `plans[i].field` for each broken rule, and readies them.
///
/// # Errors
/// Every violation.
pub fn check_all(plans: &[AppointmentPlan], charter: &Charter) -> Result<Vec<Ready>, Violations> {
    let mut v = Violations::new();
    v.check(
        plans.len() <= MAX_PLANS,
        "plans",
        format!("at most {MAX_PLANS} plans"),
    );
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in plans.iter().enumerate() {
        let at = |f: &str| format!("plans[{i}].{f}");
        if !seen.insert((p.office.clone(), p.service.clone())) {
            v.add(
                at("service"),
                format!(
                    "a second plan for service `{}` at office `{}`: one plan per office and service",
                    p.service, p.office
                ),
            );
            continue;
        }
        match check(p, charter) {
            Ok(ready) => out.push(ready),
            Err(errors) => {
                for (field, rule) in errors {
                    v.add(at(&field), rule);
                }
            }
        }
    }
    v.into_result().map(|()| out)
}

/// Checks one plan; errors are (field, rule).
fn check(p: &AppointmentPlan, charter: &Charter) -> Result<Ready, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut err = |f: &str, r: String| errors.push((f.to_string(), r));
    let office = charter.offices.iter().find(|o| o.id == p.office);
    let service = charter.services.iter().find(|s| s.id == p.service);
    if office.is_none() {
        err(
            "office",
            format!("`{}` is not an office of this body's charter", p.office),
        );
    }
    if service.is_none() {
        err(
            "service",
            format!("`{}` is not a service of this body's charter", p.service),
        );
    }
    if !(1..=50).contains(&p.capacity) {
        err("capacity", "must be 1..=50 citizens in parallel".into());
    }
    if p.max_moves > 20 {
        err("max_moves", "must be at most 20".into());
    }
    if p.change_notice_min > 60 * 24 * 30 {
        err("change_notice_min", "must be at most 30 days".into());
    }
    for c in &p.channels {
        if c != "video" && c != "desk" {
            err("channels", format!("`{c}` must be \"video\" or \"desk\""));
        }
    }
    let rules = rules(p);
    if let Err(violations) = rules.validate() {
        for f in violations.0 {
            err(&f.field, f.rule);
        }
    }
    let mut hours = Vec::new();
    for (j, text) in p.hours.iter().enumerate() {
        match crate::charter::import::parse_hours(text) {
            Ok(mut h) => hours.append(&mut h),
            Err(e) => err(&format!("hours[{j}]"), e),
        }
    }
    let (Some(office), Some(service)) = (office, service) else {
        return Err(errors);
    };
    let mut planned = office.clone();
    if !p.hours.is_empty() {
        planned.hours = hours;
    }
    let calendar = match urpnet_proto::charter::calendar(&planned, &charter.patron_day) {
        Ok(c) => c,
        Err(e) => {
            err("hours", format!("{e} (ranges of one day must not overlap)"));
            return Err(errors);
        }
    };
    if calendar.weekly.iter().all(Vec::is_empty) {
        err(
            "hours",
            "the plan has no hours: the office is never open".into(),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut plan = p.clone();
    if plan.interval_min == 0 {
        plan.interval_min = plan.length_min;
    }
    if plan.channels.is_empty() {
        plan.channels = vec!["desk".into(), "video".into()];
    }
    Ok(Ready {
        plan,
        calendar,
        rules,
        office: office.clone(),
        service: service.clone(),
    })
}

/// A plans file (`urpnet-node appointments plan FILE`): `[[plan]]` tables
/// with the fields of [`AppointmentPlan`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlansFile {
    #[serde(default)]
    plan: Vec<PlanToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanToml {
    office: String,
    /// One service, or several sharing the rules.
    #[serde(default)]
    service: String,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    hours: Vec<String>,
    length_min: u32,
    #[serde(default)]
    interval_min: u32,
    #[serde(default = "one")]
    capacity: u32,
    #[serde(default)]
    buffer_before_min: u32,
    #[serde(default)]
    buffer_after_min: u32,
    #[serde(default = "two_hours")]
    min_notice_min: u32,
    #[serde(default = "sixty")]
    max_days_ahead: u32,
    #[serde(default = "one_day")]
    change_notice_min: u32,
    #[serde(default = "two")]
    max_moves: u32,
    #[serde(default)]
    channels: Vec<String>,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn two_hours() -> u32 {
    120
}
fn sixty() -> u32 {
    60
}
fn one_day() -> u32 {
    24 * 60
}

/// Reads a plans file.
///
/// # Errors
/// A file that is not valid TOML or has unknown keys, with its line.
pub fn from_toml(text: &str) -> Result<Vec<AppointmentPlan>, String> {
    let file: PlansFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        match line {
            Some(l) => format!("line {l}: {}", e.message()),
            None => e.message().to_string(),
        }
    })?;
    let mut out = Vec::new();
    for p in file.plan {
        let mut services = p.services.clone();
        if !p.service.is_empty() {
            services.insert(0, p.service.clone());
        }
        if services.is_empty() {
            return Err(format!(
                "plan for office `{}`: give `service` or `services`",
                p.office
            ));
        }
        for service in services {
            out.push(AppointmentPlan {
                office: p.office.clone(),
                service,
                hours: p.hours.clone(),
                length_min: p.length_min,
                interval_min: p.interval_min,
                capacity: p.capacity,
                buffer_before_min: p.buffer_before_min,
                buffer_after_min: p.buffer_after_min,
                min_notice_min: p.min_notice_min,
                max_days_ahead: p.max_days_ahead,
                change_notice_min: p.change_notice_min,
                max_moves: p.max_moves,
                channels: p.channels.clone(),
            });
        }
    }
    Ok(out)
}
