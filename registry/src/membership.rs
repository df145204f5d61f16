//! What the registry knows of its members in memory: the enrolled list (a
//! copy of the store's, replaced after each change), each member's health and
//! last load report (soft state from heartbeats), and the indexes that make
//! `Route` and `Overflow` answer without touching the database.
//!
//! Health is computed when read: a member whose last heartbeat is older than
//! 3 intervals is unreachable; one never heard from since the registry
//! started is unknown.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use rand::Rng;
use urpnet_proto::territory::Territory;
use urpnet_proto::v1::{
    Health, Level, LoadReport, Member, MemberStatus, OverflowCandidate, OverflowResponse,
    RouteCandidate, RouteResponse,
};

use crate::error::{RegistryError, RegistryResult};
use urpnet_proto::taxonomy::{Taxonomy, level_name};

/// Heartbeats missed before a member is unreachable.
pub const MISSED_HEARTBEATS: u32 = 3;

#[derive(Debug, Clone)]
struct Entry {
    member: Member,
    last_heartbeat: Option<Instant>,
    last_heartbeat_ms: u64,
    load: Option<LoadReport>,
    /// Overflow sent its way by `Overflow` answers since its last heartbeat.
    provisional: u32,
    /// Health last reported by the sweeper (for transition logs).
    reported: Health,
}

#[derive(Debug, Default)]
struct Inner {
    members: BTreeMap<String, Entry>,
    version: u64,
    /// (level, ISTAT code) -> members serving it.
    by_area: HashMap<(i32, String), Vec<String>>,
    national: Vec<String>,
}

/// The registry's view of its members; shared by every request.
#[derive(Debug)]
pub struct Membership {
    inner: RwLock<Inner>,
    interval: Duration,
}

impl Membership {
    /// Empty, with the expected heartbeat interval.
    pub fn new(interval: Duration) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            interval,
        }
    }

    /// The heartbeat interval members are told to use.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Replaces the enrolled list (after a change in the store), keeping the
    /// soft state of members that remain.
    pub fn replace(&self, members: Vec<Member>, version: u64) {
        let mut inner = self.inner.write().expect("membership lock");
        let mut old = std::mem::take(&mut inner.members);
        inner.by_area.clear();
        inner.national.clear();
        for member in members {
            let id = member.id.clone();
            if member.level == Level::Nazionale as i32 {
                inner.national.push(id.clone());
            } else {
                for code in &member.territory {
                    inner
                        .by_area
                        .entry((member.level, code.clone()))
                        .or_default()
                        .push(id.clone());
                }
            }
            let entry = match old.remove(&id) {
                Some(mut e) => {
                    e.member = member;
                    e
                }
                None => Entry {
                    member,
                    last_heartbeat: None,
                    last_heartbeat_ms: 0,
                    load: None,
                    provisional: 0,
                    reported: Health::Unknown,
                },
            };
            inner.members.insert(id, entry);
        }
        inner.version = version;
    }

    /// The membership version.
    pub fn version(&self) -> u64 {
        self.inner.read().expect("membership lock").version
    }

    /// The status of a member, if enrolled.
    pub fn status(&self, id: &str) -> Option<(MemberStatus, String)> {
        let inner = self.inner.read().expect("membership lock");
        inner.members.get(id).map(|e| {
            (
                MemberStatus::try_from(e.member.status).unwrap_or(MemberStatus::Unspecified),
                e.member.status_reason.clone(),
            )
        })
    }

    /// Records a heartbeat.
    ///
    /// # Errors
    /// `NotFound` if the member is not enrolled.
    pub fn heartbeat(&self, id: &str, load: LoadReport, now_ms: u64) -> RegistryResult<()> {
        let mut inner = self.inner.write().expect("membership lock");
        let entry = inner
            .members
            .get_mut(id)
            .ok_or_else(|| RegistryError::NotFound(format!("member `{id}` is not enrolled")))?;
        entry.last_heartbeat = Some(Instant::now());
        entry.last_heartbeat_ms = now_ms;
        entry.load = Some(load);
        entry.provisional = 0;
        Ok(())
    }

    fn health(&self, entry: &Entry, now: Instant) -> Health {
        match entry.last_heartbeat {
            None => Health::Unknown,
            Some(t) if now.duration_since(t) > self.interval * MISSED_HEARTBEATS => {
                Health::Unreachable
            }
            Some(_) => Health::Reachable,
        }
    }

    fn view(&self, entry: &Entry, now: Instant) -> Member {
        let mut m = entry.member.clone();
        m.health = self.health(entry, now) as i32;
        m.last_heartbeat_ms = entry.last_heartbeat_ms;
        m.load = entry.load.clone();
        m
    }

    /// Every member with health and load, sorted by id, and the version.
    pub fn list(&self) -> (Vec<Member>, u64) {
        let inner = self.inner.read().expect("membership lock");
        let now = Instant::now();
        (
            inner.members.values().map(|e| self.view(e, now)).collect(),
            inner.version,
        )
    }

    /// One member with health and load.
    pub fn get(&self, id: &str) -> Option<Member> {
        let inner = self.inner.read().expect("membership lock");
        inner.members.get(id).map(|e| self.view(e, Instant::now()))
    }

    /// Health transitions since the last call, for logs and metrics: returns
    /// `(id, new health)` for each member whose health changed, and counts of
    /// members by health.
    pub fn sweep(&self) -> (Vec<(String, Health)>, [u64; 3]) {
        let mut inner = self.inner.write().expect("membership lock");
        let now = Instant::now();
        let mut changed = Vec::new();
        let mut counts = [0u64; 3];
        let interval = self.interval;
        for (id, entry) in inner.members.iter_mut() {
            let health = match entry.last_heartbeat {
                None => Health::Unknown,
                Some(t) if now.duration_since(t) > interval * MISSED_HEARTBEATS => {
                    Health::Unreachable
                }
                Some(_) => Health::Reachable,
            };
            counts[health as usize] += 1;
            if health != entry.reported {
                entry.reported = health;
                changed.push((id.clone(), health));
            }
        }
        (changed, counts)
    }

    /// Competence routing: which member should handle `category` in the
    /// comune `territory`, and why.
    ///
    /// The competent level comes from the taxonomy; the hierarchy from ISTAT
    /// (comune -> provincia -> regione). Levels are tried nearest first:
    /// the competent one, then the levels above it up to the national
    /// bodies, then those below it down to the comune. At each level only
    /// active members that serve the territory count; a reachable one wins
    /// over one not heard from yet, and an unreachable one is passed over.
    /// Among equals, the most spare capacity, then the smallest id.
    ///
    /// # Errors
    /// `InvalidArgument` for an unknown category or comune, `NotFound` when
    /// no active member serves the territory at any level.
    pub fn route(
        &self,
        taxonomy: &Taxonomy,
        category: &str,
        territory: &str,
    ) -> RegistryResult<RouteResponse> {
        let mut violations = urpnet_proto::validate::Violations::new();
        let cat = taxonomy.get(category);
        if cat.is_none() {
            violations.add(
                "category",
                format!(
                    "unknown category `{category}` (taxonomy version {})",
                    taxonomy.version()
                ),
            );
        }
        let comune = Territory::italy().comune(territory);
        if comune.is_none() {
            violations.add(
                "territory",
                format!("`{territory}` is not the 6-digit ISTAT code of an existing comune"),
            );
        }
        violations.into_result()?;
        let (cat, comune) = (cat.expect("checked"), comune.expect("checked"));
        let competent = Level::try_from(cat.level).unwrap_or(Level::Comune);
        let order: &[Level] = match competent {
            Level::Comune | Level::Unspecified => &[
                Level::Comune,
                Level::Provincia,
                Level::Regione,
                Level::Nazionale,
            ],
            Level::Provincia => &[
                Level::Provincia,
                Level::Regione,
                Level::Nazionale,
                Level::Comune,
            ],
            Level::Regione => &[
                Level::Regione,
                Level::Nazionale,
                Level::Provincia,
                Level::Comune,
            ],
            Level::Nazionale => &[
                Level::Nazionale,
                Level::Regione,
                Level::Provincia,
                Level::Comune,
            ],
        };

        let inner = self.inner.read().expect("membership lock");
        let now = Instant::now();
        let mut considered = Vec::new();
        let mut competent_member_id = String::new();
        for (step, level) in order.iter().enumerate() {
            let ids: Vec<&String> = match level {
                Level::Nazionale => {
                    if cat.competent_body.is_empty() || step > 0 {
                        inner.national.iter().collect()
                    } else {
                        inner
                            .national
                            .iter()
                            .filter(|id| **id == cat.competent_body)
                            .collect()
                    }
                }
                _ => {
                    let area = match level {
                        Level::Comune => &comune.istat_code,
                        Level::Provincia => &comune.province_code,
                        _ => &comune.region_code,
                    };
                    inner
                        .by_area
                        .get(&(*level as i32, area.clone()))
                        .map(|v| v.iter().collect())
                        .unwrap_or_default()
                }
            };
            let mut best: Option<(&Entry, Health, i64)> = None;
            for id in ids {
                let entry = &inner.members[id];
                if step == 0 && competent_member_id.is_empty() {
                    competent_member_id = id.clone();
                }
                if entry.member.status != MemberStatus::Active as i32 {
                    considered.push(RouteCandidate {
                        member_id: id.clone(),
                        reason: format!("passed over: {}", status_word(entry.member.status)),
                    });
                    continue;
                }
                let health = self.health(entry, now);
                if health == Health::Unreachable {
                    considered.push(RouteCandidate {
                        member_id: id.clone(),
                        reason: format!(
                            "passed over: unreachable (no heartbeat for {}s)",
                            entry
                                .last_heartbeat
                                .map(|t| now.duration_since(t).as_secs())
                                .unwrap_or_default()
                        ),
                    });
                    continue;
                }
                considered.push(RouteCandidate {
                    member_id: id.clone(),
                    reason: format!(
                        "{} {} member serving {}",
                        if health == Health::Reachable {
                            "reachable"
                        } else {
                            "not yet heard from,"
                        },
                        level_name(*level),
                        if *level == Level::Nazionale {
                            "Italy"
                        } else {
                            "the territory"
                        },
                    ),
                });
                let spare = spare(entry);
                let better = match &best {
                    None => true,
                    Some((b, bh, bs)) => {
                        (health == Health::Reachable && *bh != Health::Reachable)
                            || (health == *bh
                                && (spare > *bs || (spare == *bs && entry.member.id < b.member.id)))
                    }
                };
                if better {
                    best = Some((entry, health, spare));
                }
            }
            if let Some((entry, _, _)) = best {
                let fallback = step > 0;
                let reason = if fallback {
                    format!(
                        "`{category}` is a matter for {competent_level} ({why}); {id} ({name}) takes it as the nearest active {level} member serving {comune} ({comune_name})",
                        competent_level = level_phrase(competent),
                        why = if competent_member_id.is_empty() {
                            "no member serves it".to_string()
                        } else {
                            format!("{competent_member_id} cannot take it")
                        },
                        id = entry.member.id,
                        name = entry.member.display_name,
                        level = level_name(*level),
                        comune = comune.istat_code,
                        comune_name = comune.name,
                    )
                } else {
                    format!(
                        "`{category}` is a matter for {level}; {id} ({name}) serves {comune} ({comune_name})",
                        level = level_phrase(*level),
                        id = entry.member.id,
                        name = entry.member.display_name,
                        comune = comune.istat_code,
                        comune_name = comune.name,
                    )
                };
                return Ok(RouteResponse {
                    member: Some(self.view(entry, now)),
                    competent_level: competent as i32,
                    competent_member_id,
                    fallback,
                    reason,
                    considered,
                });
            }
        }
        Err(RegistryError::NotFound(format!(
            "no active member serves {} ({}) at any level for `{category}`",
            comune.istat_code, comune.name
        )))
    }

    /// Load distribution: peers that can take `category` overflow from
    /// `from`, best first, at most `limit`.
    ///
    /// Only active, reachable members that accept the category (or a parent
    /// of it) and have operators on duty and spare capacity are eligible.
    /// The first is chosen by the power of two choices (two eligible peers
    /// drawn at random, the one with more spare wins), which keeps many
    /// overloaded offices asking at once from all picking the same peer; the
    /// rest follow by spare capacity. Each answer counts one request against
    /// the first peer's spare until its next heartbeat.
    ///
    /// # Errors
    /// `InvalidArgument` for an unknown category or sender.
    pub fn overflow(
        &self,
        taxonomy: &Taxonomy,
        category: &str,
        from: &str,
        limit: usize,
        rng: &mut impl Rng,
    ) -> RegistryResult<OverflowResponse> {
        let mut violations = urpnet_proto::validate::Violations::new();
        if taxonomy.get(category).is_none() {
            violations.add("category", format!("unknown category `{category}`"));
        }
        let mut inner = self.inner.write().expect("membership lock");
        if !inner.members.contains_key(from) {
            violations.add("from", format!("`{from}` is not a member"));
        }
        violations.into_result()?;
        let now = Instant::now();
        let (mut unreachable, mut saturated, mut not_accepting) = (0, 0, 0);
        let mut eligible: Vec<(&String, i64)> = Vec::new();
        for (id, entry) in &inner.members {
            if id == from || entry.member.status != MemberStatus::Active as i32 {
                continue;
            }
            let Some(load) = &entry.load else {
                continue;
            };
            if !accepts(load, category) {
                not_accepting += 1;
                continue;
            }
            if self.health(entry, now) != Health::Reachable {
                unreachable += 1;
                continue;
            }
            let spare = spare(entry);
            if spare <= 0 || load.operators_on_duty == 0 {
                saturated += 1;
                continue;
            }
            eligible.push((id, spare));
        }
        eligible.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let first = match eligible.len() {
            0 => None,
            1 => Some(0),
            n => {
                let a = rng.gen_range(0..n);
                let mut b = rng.gen_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                // Sorted by spare: the smaller index has at least as much.
                Some(a.min(b))
            }
        };
        let mut order: Vec<usize> = (0..eligible.len()).collect();
        if let Some(f) = first {
            order.remove(f);
            order.insert(0, f);
        }
        let picked: Vec<(String, i64)> = order
            .into_iter()
            .take(limit)
            .map(|i| (eligible[i].0.clone(), eligible[i].1))
            .collect();
        let total = eligible.len();
        if let Some(e) = picked.first().and_then(|(id, _)| inner.members.get_mut(id)) {
            e.provisional += 1;
        }
        let candidates = picked
            .iter()
            .enumerate()
            .map(|(rank, (id, spare))| {
                let entry = &inner.members[id];
                let load = entry.load.clone().unwrap_or_default();
                OverflowCandidate {
                    member: Some(self.view(entry, now)),
                    spare: *spare,
                    reason: if rank == 0 && total > 1 {
                        format!(
                            "power of two choices: more spare of two drawn at random ({spare} of {}/h, {} waiting, {} operators)",
                            load.capacity_per_hour, load.queue_waiting, load.operators_on_duty
                        )
                    } else {
                        format!(
                            "{spare} spare of {}/h ({} waiting, {} operators)",
                            load.capacity_per_hour, load.queue_waiting, load.operators_on_duty
                        )
                    },
                }
            })
            .collect();
        Ok(OverflowResponse {
            candidates,
            reason: format!(
                "{total} peers can take `{category}` overflow from {from}; excluded: {saturated} saturated, {unreachable} unreachable, {not_accepting} not accepting it"
            ),
        })
    }
}

/// "the comune", "a national body", ... for reasons.
fn level_phrase(level: Level) -> &'static str {
    match level {
        Level::Comune | Level::Unspecified => "the comune",
        Level::Provincia => "the provincia",
        Level::Regione => "the regione",
        Level::Nazionale => "a national body",
    }
}

fn status_word(status: i32) -> &'static str {
    match MemberStatus::try_from(status) {
        Ok(MemberStatus::Active) => "active",
        Ok(MemberStatus::Suspended) => "suspended",
        Ok(MemberStatus::Revoked) => "revoked",
        _ => "unknown status",
    }
}

/// Capacity per hour minus the queue and the overflow already sent.
fn spare(entry: &Entry) -> i64 {
    entry.load.as_ref().map_or(0, |l| {
        i64::from(l.capacity_per_hour) - i64::from(l.queue_waiting) - i64::from(entry.provisional)
    })
}

/// Whether a load report accepts `category`: listed itself or by an
/// ancestor (`anagrafe` accepts `anagrafe.certificati`).
fn accepts(load: &LoadReport, category: &str) -> bool {
    load.overflow_categories.iter().any(|c| {
        category == c
            || (category.starts_with(c.as_str()) && category.as_bytes().get(c.len()) == Some(&b'.'))
    })
}
