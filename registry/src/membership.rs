//! What the registry knows of its members in memory: the enrolled list (a
//! copy of the store's, replaced after each change), each member's health and
//! last load report (soft state from heartbeats), and the indexes that make
//! `Route` and `Overflow` answer without touching the database.
//!
//! Health is computed when read: a member whose last heartbeat is older than
//! 3 intervals is unreachable; one never heard from since the registry
//! started is unknown.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, Ordering};
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

#[derive(Debug)]
struct Entry {
    member: Member,
    last_heartbeat: Option<Instant>,
    last_heartbeat_ms: u64,
    load: Option<LoadReport>,
    /// Overflow sent its way by `Overflow` answers since its last heartbeat
    /// (atomic, so `Overflow` needs only the read lock).
    provisional: AtomicU32,
    /// Health last reported by the sweeper (for transition logs).
    reported: Health,
}

#[derive(Debug, Default)]
struct Inner {
    /// By id (hashed: `Overflow` looks up hundreds per call).
    members: HashMap<String, Entry>,
    version: u64,
    /// (level, ISTAT code) -> members serving it.
    by_area: HashMap<(i32, String), Vec<String>>,
    national: Vec<String>,
    /// Category code -> members whose last load report accepts it as
    /// overflow, so `Overflow` reads only those.
    acceptors: HashMap<String, BTreeSet<String>>,
}

impl Inner {
    /// Adds `member` (with the soft state of `previous`, if any) and its
    /// index entries.
    fn insert(&mut self, member: Member, previous: Option<Entry>) {
        let id = member.id.clone();
        if member.level == Level::Nazionale as i32 {
            if let Err(at) = self.national.binary_search(&id) {
                self.national.insert(at, id.clone());
            }
        } else {
            for code in &member.territory {
                let list = self
                    .by_area
                    .entry((member.level, code.clone()))
                    .or_default();
                if let Err(at) = list.binary_search(&id) {
                    list.insert(at, id.clone());
                }
            }
        }
        let entry = match previous {
            Some(mut e) => {
                e.member = member;
                e
            }
            None => Entry {
                member,
                last_heartbeat: None,
                last_heartbeat_ms: 0,
                load: None,
                provisional: AtomicU32::new(0),
                reported: Health::Unknown,
            },
        };
        if let Some(load) = &entry.load {
            for c in &load.overflow_categories {
                self.acceptors
                    .entry(c.clone())
                    .or_default()
                    .insert(id.clone());
            }
        }
        self.members.insert(id, entry);
    }

    /// Removes `member`'s area entries (its acceptor entries stay: the id
    /// and its load are the same after an upsert).
    fn unindex(&mut self, member: &Member) {
        if member.level == Level::Nazionale as i32 {
            self.national.retain(|m| *m != member.id);
        } else {
            for code in &member.territory {
                if let Some(list) = self.by_area.get_mut(&(member.level, code.clone())) {
                    list.retain(|m| *m != member.id);
                }
            }
        }
    }
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
        inner.acceptors.clear();
        for member in members {
            let previous = old.remove(&member.id);
            inner.insert(member, previous);
        }
        inner.version = version;
    }

    /// Inserts or replaces one member (after a change committed in the
    /// store at `version`), keeping its soft state: O(its territory), not
    /// O(members), so enrolling a whole country stays linear.
    pub fn upsert(&self, member: Member, version: u64) {
        let mut inner = self.inner.write().expect("membership lock");
        let previous = inner.members.remove(&member.id);
        if let Some(previous) = &previous {
            inner.unindex(&previous.member);
        }
        inner.insert(member, previous);
        inner.version = inner.version.max(version);
    }

    /// The enrolled record of a member (without soft state).
    pub fn enrolled(&self, id: &str) -> Option<Member> {
        let inner = self.inner.read().expect("membership lock");
        inner.members.get(id).map(|e| e.member.clone())
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
        let inner = &mut *inner;
        let entry = inner
            .members
            .get_mut(id)
            .ok_or_else(|| RegistryError::NotFound(format!("member `{id}` is not enrolled")))?;
        let old = entry
            .load
            .as_ref()
            .map(|l| l.overflow_categories.as_slice())
            .unwrap_or_default();
        if old != load.overflow_categories.as_slice() {
            for c in old {
                if let Some(set) = inner.acceptors.get_mut(c) {
                    set.remove(id);
                }
            }
            for c in &load.overflow_categories {
                inner
                    .acceptors
                    .entry(c.clone())
                    .or_default()
                    .insert(id.to_owned());
            }
        }
        entry.last_heartbeat = Some(Instant::now());
        entry.last_heartbeat_ms = now_ms;
        entry.load = Some(load);
        entry.provisional.store(0, Ordering::Relaxed);
        Ok(())
    }

    fn health(&self, entry: &Entry, now: Instant) -> Health {
        health_at(entry, now, self.interval)
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
            {
                let mut all: Vec<Member> =
                    inner.members.values().map(|e| self.view(e, now)).collect();
                all.sort_by(|a, b| a.id.cmp(&b.id));
                all
            },
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
            let health = health_at(entry, now, interval);
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
        let inner = self.inner.read().expect("membership lock");
        if !inner.members.contains_key(from) {
            violations.add("from", format!("`{from}` is not a member"));
        }
        violations.into_result()?;
        let now = Instant::now();
        let (mut unreachable, mut saturated) = (0, 0);
        // Members accepting the category or an ancestor (`a.b.c`, `a.b`, `a`).
        let mut sets: Vec<&BTreeSet<String>> = Vec::new();
        let mut code = category;
        loop {
            if let Some(set) = inner.acceptors.get(code) {
                sets.push(set);
            }
            match code.rfind('.') {
                Some(i) => code = &code[..i],
                None => break,
            }
        }
        let mut eligible: Vec<(&String, i64, &Entry)> = Vec::new();
        for (k, set) in sets.iter().enumerate() {
            for id in set.iter() {
                if sets[..k].iter().any(|earlier| earlier.contains(id)) {
                    continue;
                }
                let Some(entry) = inner.members.get(id) else {
                    continue;
                };
                if id == from || entry.member.status != MemberStatus::Active as i32 {
                    continue;
                }
                let Some(load) = &entry.load else {
                    continue;
                };
                if self.health(entry, now) != Health::Reachable {
                    unreachable += 1;
                    continue;
                }
                let spare = spare(entry);
                if spare <= 0 || load.operators_on_duty == 0 {
                    saturated += 1;
                    continue;
                }
                eligible.push((id, spare, entry));
            }
        }
        // More spare first, then the smaller id.
        let better = |a: &(&String, i64, &Entry), b: &(&String, i64, &Entry)| {
            b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0))
        };
        let total = eligible.len();
        let mut picked: Vec<(&String, i64, &Entry)> = Vec::with_capacity(limit.min(total));
        if total > 0 {
            let first = if total == 1 {
                0
            } else {
                let a = rng.gen_range(0..total);
                let mut b = rng.gen_range(0..total - 1);
                if b >= a {
                    b += 1;
                }
                if better(&eligible[a], &eligible[b]).is_le() {
                    a
                } else {
                    b
                }
            };
            picked.push(eligible.swap_remove(first));
            // The best of the rest, without sorting them all.
            let want = limit.saturating_sub(1).min(eligible.len());
            if want > 0 && want < eligible.len() {
                eligible.select_nth_unstable_by(want - 1, better);
                eligible.truncate(want);
            }
            eligible.sort_unstable_by(better);
            picked.extend(eligible.into_iter().take(want));
        }
        if let Some((_, _, e)) = picked.first() {
            e.provisional.fetch_add(1, Ordering::Relaxed);
        }
        let picked: Vec<(String, i64)> = picked
            .into_iter()
            .map(|(id, spare, _)| (id.clone(), spare))
            .collect();
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
                "{total} peers can take `{category}` overflow from {from}; excluded: {saturated} saturated, {unreachable} unreachable"
            ),
        })
    }
}

/// Unknown before the first heartbeat, unreachable after
/// [`MISSED_HEARTBEATS`] silent intervals, reachable otherwise.
fn health_at(entry: &Entry, now: Instant, interval: Duration) -> Health {
    match entry.last_heartbeat {
        None => Health::Unknown,
        Some(t) if now.duration_since(t) > interval * MISSED_HEARTBEATS => Health::Unreachable,
        Some(_) => Health::Reachable,
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
        i64::from(l.capacity_per_hour)
            - i64::from(l.queue_waiting)
            - i64::from(entry.provisional.load(Ordering::Relaxed))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng as _;

    use super::*;

    fn taxonomy() -> Taxonomy {
        let t = urpnet_proto::taxonomy::parse_toml(
            "[[category]]\ncode = \"anagrafe\"\nlabel = \"Anagrafe\"\nlevel = \"comune\"\n\
             [[category]]\ncode = \"anagrafe.certificati\"\nlabel = \"Certificati\"\nlevel = \"comune\"\n\
             [[category]]\ncode = \"tributi\"\nlabel = \"Tributi\"\nlevel = \"comune\"\n",
        )
        .unwrap();
        Taxonomy::new(t).unwrap()
    }

    fn member(i: usize, status: MemberStatus) -> Member {
        Member {
            id: format!("m_{i:03}"),
            level: Level::Comune as i32,
            territory: vec!["066032".into()],
            status: status as i32,
            ..Member::default()
        }
    }

    proptest! {
        /// Overflow answers exactly the eligible peers (active, heard from,
        /// accepting the category or a parent, operators on duty, spare
        /// capacity, not the sender), the first being one of them and the
        /// rest by spare capacity; however heartbeats changed the index.
        #[test]
        fn overflow_answers_exactly_the_eligible_peers(
            peers in proptest::collection::vec(
                (0u32..4, 0u32..60, 0u32..80, 0u32..3, any::<bool>(), any::<bool>()),
                2..40,
            ),
            seed in any::<u64>(),
        ) {
            let t = taxonomy();
            let membership = Membership::new(Duration::from_secs(60));
            let members: Vec<Member> = peers
                .iter()
                .enumerate()
                .map(|(i, p)| member(i, if p.4 { MemberStatus::Active } else { MemberStatus::Suspended }))
                .collect();
            membership.replace(members, 1);
            let accepted = |k: u32| match k {
                0 => vec![],
                1 => vec!["anagrafe".to_string()],
                2 => vec!["anagrafe.certificati".to_string(), "tributi".to_string()],
                _ => vec!["tributi".to_string()],
            };
            for (i, p) in peers.iter().enumerate() {
                // Twice, with a different report first, to exercise the index.
                if p.5 {
                    let first = LoadReport { overflow_categories: accepted((p.0 + 1) % 4), ..LoadReport::default() };
                    membership.heartbeat(&format!("m_{i:03}"), first, 1).unwrap();
                }
                let load = LoadReport {
                    queue_waiting: p.1,
                    capacity_per_hour: p.2,
                    operators_on_duty: p.3,
                    overflow_categories: accepted(p.0),
                    ..LoadReport::default()
                };
                membership.heartbeat(&format!("m_{i:03}"), load, 1).unwrap();
            }
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let answer = membership
                .overflow(&t, "anagrafe.certificati", "m_000", 50, &mut rng)
                .unwrap();
            let mut expected: Vec<(String, i64)> = peers
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(_, p)| p.4 && (p.0 == 1 || p.0 == 2) && p.3 > 0 && p.2 > p.1)
                .map(|(i, p)| (format!("m_{i:03}"), i64::from(p.2) - i64::from(p.1)))
                .collect();
            let got: Vec<(String, i64)> = answer
                .candidates
                .iter()
                .map(|c| (c.member.as_ref().unwrap().id.clone(), c.spare))
                .collect();
            let mut got_sorted = got.clone();
            got_sorted.sort();
            expected.sort();
            prop_assert_eq!(&got_sorted, &expected);
            if got.len() > 2 {
                let rest = &got[1..];
                prop_assert!(rest.windows(2).all(|w| w[0].1 >= w[1].1), "{:?}", got);
            }
        }
    }

    #[test]
    fn upsert_keeps_the_index_equal_to_a_full_rebuild() {
        let t = taxonomy();
        let a = Membership::new(Duration::from_secs(60));
        let b = Membership::new(Duration::from_secs(60));
        let mut members: Vec<Member> = (0..5).map(|i| member(i, MemberStatus::Active)).collect();
        for m in &members {
            a.upsert(m.clone(), 1);
        }
        members[2].territory = vec!["066006".into()];
        members[3].status = MemberStatus::Revoked as i32;
        a.upsert(members[2].clone(), 2);
        a.upsert(members[3].clone(), 3);
        b.replace(members.clone(), 3);
        for (membership, label) in [(&a, "upserted"), (&b, "rebuilt")] {
            let celano = membership.route(&t, "anagrafe", "066032").unwrap();
            assert_eq!(celano.member.unwrap().id, "m_000", "{label}");
            let avezzano = membership.route(&t, "anagrafe", "066006").unwrap();
            assert_eq!(avezzano.member.unwrap().id, "m_002", "{label}");
            assert!(
                celano
                    .considered
                    .iter()
                    .any(|c| c.member_id == "m_003" && c.reason.contains("revoked")),
                "{label}"
            );
        }
        assert_eq!(a.version(), 3);
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use rand::SeedableRng as _;

    /// Not a benchmark (bench-registry is): a quick look at where time goes.
    #[test]
    #[ignore]
    fn overflow_and_route_cost_at_national_scale() {
        let text = include_str!("../../examples/taxonomy.toml");
        let t = Taxonomy::new(urpnet_proto::taxonomy::parse_toml(text).unwrap()).unwrap();
        let m = Membership::new(Duration::from_secs(5));
        let italy = Territory::italy();
        let members: Vec<Member> = italy
            .comuni()
            .map(|c| Member {
                id: c.ipa_code.clone(),
                level: Level::Comune as i32,
                territory: vec![c.istat_code.clone()],
                status: MemberStatus::Active as i32,
                ..Member::default()
            })
            .collect();
        m.replace(members.clone(), 1);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let pool = ["informazioni", "anagrafe", "tributi", "servizi_sociali"];
        for mem in &members {
            let cap = rng.gen_range(10..80);
            m.heartbeat(
                &mem.id,
                LoadReport {
                    queue_waiting: rng.gen_range(0..cap + 20),
                    capacity_per_hour: cap,
                    operators_on_duty: rng.gen_range(0..6),
                    overflow_categories: if rng.gen_bool(0.3) {
                        vec![pool[rng.gen_range(0..4)].into()]
                    } else {
                        vec![]
                    },
                    ..LoadReport::default()
                },
                1,
            )
            .unwrap();
        }
        let start = Instant::now();
        for i in 0..2000 {
            m.overflow(&t, pool[i % 4], &members[i].id, 5, &mut rng)
                .unwrap();
        }
        eprintln!("overflow: {:?} each", start.elapsed() / 2000);
        let start = Instant::now();
        for i in 0..20000 {
            let _ = m.route(&t, "rifiuti", &members[i % members.len()].territory[0]);
        }
        eprintln!("route: {:?} each", start.elapsed() / 20000);
    }
}
