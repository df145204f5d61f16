//! The merge rule and the set of latest versions, with the per-owner digests
//! of epidemic anti-entropy, for every kind of shared document (FAQ entries,
//! charters): the set sees only keys, versions, sequences and payload
//! hashes, never a kind's content.
//!
//! The state of a shared set is a map from entry key to the greatest
//! version seen; merging two states takes, key by key, the greater of the
//! two. That makes merge commutative, associative and idempotent (a
//! join-semilattice, the state-based CRDT of Shapiro et al.), so nodes that
//! have seen the same versions hold the same set whatever the order the
//! versions arrived in, and an older version can never replace a newer one.
//!
//! Anti-entropy compares, per owner ("origin"), the highest publication
//! sequence held and a hash of the entries held. A node behind on an origin
//! receives that origin's entries above its sequence; two nodes level on the
//! sequence but with different hashes (a version was refused for now, or an
//! owner signed two contents under one number) exchange a listing of that
//! origin and fill in what each lacks.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use sha2::{Digest as _, Sha256};
use urpnet_proto::v1::{EntryStamp, FaqVersion, OriginDigest, OriginListing};

/// The set of latest versions of one kind of shared document.
pub type DocSet = FaqSet;

use crate::model::Key;

/// What the merge rule and the digests need of a version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// The entry.
    pub key: Key,
    /// Its version.
    pub version: u64,
    /// The owner's publication sequence.
    pub seq: u64,
    /// sha256 of the signed payload.
    pub sha: [u8; 32],
    /// A tombstone.
    pub retired: bool,
}

impl Stamp {
    /// The stamp of a decoded FAQ version and its payload bytes.
    pub fn of(version: &FaqVersion, payload: &[u8]) -> Self {
        Self::new(
            Key::of(version),
            version.version,
            version.seq,
            payload,
            version.retired,
        )
    }

    /// The stamp of a version of any kind, from its header and the exact
    /// signed payload bytes.
    pub fn new(key: Key, version: u64, seq: u64, payload: &[u8], retired: bool) -> Self {
        Self {
            key,
            version,
            seq,
            sha: Sha256::digest(payload).into(),
            retired,
        }
    }

    /// The order of two versions of one entry: by version, then by payload
    /// hash (equal versions with different content come only from an owner
    /// that signed two; every node must still pick the same one).
    pub fn rank(&self) -> (u64, [u8; 32]) {
        (self.version, self.sha)
    }

    /// The hash this entry contributes to its origin's digest.
    pub fn entry_hash(&self) -> [u8; 32] {
        entry_hash(&self.key.entry_id, self.version, &self.sha)
    }
}

fn entry_hash(entry_id: &str, version: u64, sha: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(entry_id.as_bytes());
    h.update(b"\n");
    h.update(version.to_string().as_bytes());
    h.update(b"\n");
    h.update(sha);
    h.finalize().into()
}

/// The merge rule: of two versions of one entry, the greater by
/// [`Stamp::rank`]. Pure; commutative, associative and idempotent.
///
/// # Panics
/// When `a` and `b` are versions of different entries.
pub fn merge<'a>(a: &'a Stamp, b: &'a Stamp) -> &'a Stamp {
    assert_eq!(a.key, b.key, "merge is defined per entry");
    match a.rank().cmp(&b.rank()) {
        Ordering::Less => b,
        _ => a,
    }
}

/// What applying a version did to a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A new entry.
    New,
    /// A newer version of an entry: the one it replaced.
    Replaced(Stamp),
    /// This very version was held.
    Duplicate,
    /// An older version than the one held: ignored.
    Stale,
}

impl Applied {
    /// Whether the set changed.
    pub fn changed(&self) -> bool {
        matches!(self, Applied::New | Applied::Replaced(_))
    }
}

/// What a node holds of one origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// Entries held.
    pub entries: u32,
    /// Of which retired.
    pub retired: u32,
    /// XOR of the entries' hashes.
    pub hash: [u8; 32],
}

fn xor(into: &mut [u8; 32], other: &[u8; 32]) {
    for (a, b) in into.iter_mut().zip(other) {
        *a ^= b;
    }
}

/// The latest version of every entry a node holds.
#[derive(Debug, Clone, Default)]
pub struct FaqSet {
    entries: HashMap<Key, Stamp>,
    origins: BTreeMap<String, Origin>,
    by_seq: BTreeSet<(String, u64, String)>,
}

/// What to send a peer that sent its digest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// Versions it lacks, per origin in sequence order.
    pub send: Vec<Stamp>,
    /// Listings of origins whose sets differ while it is not behind.
    pub listings: Vec<OriginListing>,
    /// More was due than the limits allowed.
    pub truncated: bool,
}

/// What to do after a peer's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Versions to push to it.
    pub push: Vec<Stamp>,
    /// Entries to ask it for (its listing showed a newer version).
    pub want: Vec<Key>,
}

impl FaqSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries (retired included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The version held of an entry.
    pub fn get(&self, key: &Key) -> Option<&Stamp> {
        self.entries.get(key)
    }

    /// Every entry held.
    pub fn stamps(&self) -> impl Iterator<Item = &Stamp> {
        self.entries.values()
    }

    /// What applying `stamp` would do, without doing it.
    pub fn check(&self, stamp: &Stamp) -> Applied {
        match self.entries.get(&stamp.key) {
            None => Applied::New,
            Some(held) if held.rank() == stamp.rank() => Applied::Duplicate,
            Some(held) if std::ptr::eq(merge(held, stamp), stamp) => {
                Applied::Replaced(held.clone())
            }
            Some(_) => Applied::Stale,
        }
    }

    /// Applies a version: kept when its entry is new or it wins the merge.
    pub fn apply(&mut self, stamp: Stamp) -> Applied {
        let outcome = self.check(&stamp);
        if !outcome.changed() {
            return outcome;
        }
        let origin = self.origins.entry(stamp.key.owner.clone()).or_default();
        if let Applied::Replaced(old) = &outcome {
            xor(&mut origin.hash, &old.entry_hash());
            origin.retired -= u32::from(old.retired);
            self.by_seq
                .remove(&(old.key.owner.clone(), old.seq, old.key.entry_id.clone()));
        } else {
            origin.entries += 1;
        }
        xor(&mut origin.hash, &stamp.entry_hash());
        origin.retired += u32::from(stamp.retired);
        self.by_seq.insert((
            stamp.key.owner.clone(),
            stamp.seq,
            stamp.key.entry_id.clone(),
        ));
        self.entries.insert(stamp.key.clone(), stamp);
        outcome
    }

    /// Merges another set into this one (the state-based merge).
    pub fn merge_from(&mut self, other: &FaqSet) {
        for stamp in other.entries.values() {
            self.apply(stamp.clone());
        }
    }

    /// The highest publication sequence held of `origin` (0: none).
    pub fn max_seq(&self, origin: &str) -> u64 {
        // Node ids are `[a-z0-9_]`: every key of `origin` sorts before
        // `origin` followed by NUL.
        let upper = (format!("{origin}\u{0}"), 0, String::new());
        self.by_seq
            .range((origin.to_string(), 0, String::new())..upper)
            .next_back()
            .map_or(0, |(_, seq, _)| *seq)
    }

    /// What is held of each origin.
    pub fn origins(&self) -> impl Iterator<Item = (&String, &Origin)> {
        self.origins.iter()
    }

    /// This node's digest: one item per origin held.
    pub fn digest(&self) -> Vec<OriginDigest> {
        self.origins
            .iter()
            .map(|(origin, o)| OriginDigest {
                origin: origin.clone(),
                max_seq: self.max_seq(origin),
                entries: o.entries,
                hash: o.hash.to_vec(),
            })
            .collect()
    }

    /// One hash of the whole set: equal sets, equal roots.
    pub fn root(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (origin, o) in &self.origins {
            h.update(origin.as_bytes());
            h.update(b"\n");
            h.update(o.hash);
        }
        h.finalize().into()
    }

    fn entries_after(&self, origin: &str, after: u64) -> impl Iterator<Item = &Stamp> {
        self.by_seq
            .range((origin.to_string(), after.saturating_add(1), String::new())..)
            .take_while(move |(o, ..)| o == origin)
            .filter_map(move |(_, _, id)| self.entries.get(&Key::new(origin, id.as_str())))
    }

    /// The listing of an origin's entries.
    pub fn listing(&self, origin: &str) -> OriginListing {
        OriginListing {
            origin: origin.to_string(),
            entries: self
                .entries_after(origin, 0)
                .map(|s| EntryStamp {
                    entry_id: s.key.entry_id.clone(),
                    version: s.version,
                    payload_sha256: s.sha.to_vec(),
                })
                .collect(),
        }
    }

    /// The answer to a peer's digest: what it lacks (at most `max_send`
    /// versions) and listings of origins where the sets differ although the
    /// peer is not behind (at most `max_listed` entries in all).
    pub fn answer(&self, theirs: &[OriginDigest], max_send: usize, max_listed: usize) -> Answer {
        self.answer_for(theirs, max_send, max_listed, |_| true)
    }

    /// [`FaqSet::answer`] for a peer that keeps only the origins `holds`
    /// accepts (a kind that is not held everywhere, like charters).
    pub fn answer_for(
        &self,
        theirs: &[OriginDigest],
        max_send: usize,
        max_listed: usize,
        holds: impl Fn(&str) -> bool,
    ) -> Answer {
        let theirs: HashMap<&str, &OriginDigest> =
            theirs.iter().map(|d| (d.origin.as_str(), d)).collect();
        let mut answer = Answer::default();
        let mut listed = 0;
        for (origin, mine) in self.origins.iter().filter(|(o, _)| holds(o)) {
            let (their_seq, same) = match theirs.get(origin.as_str()) {
                Some(d) => (d.max_seq, d.hash == mine.hash && d.entries == mine.entries),
                None => (0, false),
            };
            if same {
                continue;
            }
            let my_seq = self.max_seq(origin);
            if my_seq > their_seq {
                for stamp in self.entries_after(origin, their_seq) {
                    if answer.send.len() == max_send {
                        answer.truncated = true;
                        break;
                    }
                    answer.send.push(stamp.clone());
                }
            } else if my_seq == their_seq {
                let listing = self.listing(origin);
                if listed + listing.entries.len() > max_listed {
                    answer.truncated = true;
                    continue;
                }
                listed += listing.entries.len();
                answer.listings.push(listing);
            }
        }
        answer
    }

    /// What to push to a peer and ask of it, given its digest and listings
    /// (after applying what it sent). At most `max` of each.
    pub fn plan(&self, theirs: &[OriginDigest], listings: &[OriginListing], max: usize) -> Plan {
        self.plan_for(theirs, listings, max, |_| true)
    }

    /// [`FaqSet::plan`] for a peer that keeps only the origins `holds`
    /// accepts.
    pub fn plan_for(
        &self,
        theirs: &[OriginDigest],
        listings: &[OriginListing],
        max: usize,
        holds: impl Fn(&str) -> bool,
    ) -> Plan {
        let theirs: HashMap<&str, &OriginDigest> =
            theirs.iter().map(|d| (d.origin.as_str(), d)).collect();
        let mut plan = Plan::default();
        let mut pushed = BTreeSet::new();
        for (origin, mine) in self.origins.iter().filter(|(o, _)| holds(o)) {
            let (their_seq, same) = match theirs.get(origin.as_str()) {
                Some(d) => (d.max_seq, d.hash == mine.hash && d.entries == mine.entries),
                None => (0, false),
            };
            if same || self.max_seq(origin) <= their_seq {
                continue;
            }
            for stamp in self.entries_after(origin, their_seq) {
                if plan.push.len() == max {
                    break;
                }
                pushed.insert(stamp.key.clone());
                plan.push.push(stamp.clone());
            }
        }
        for listing in listings.iter().filter(|l| holds(&l.origin)) {
            let mut seen = BTreeSet::new();
            for e in &listing.entries {
                let key = Key::new(&listing.origin, &e.entry_id);
                seen.insert(e.entry_id.as_str());
                let their_rank = (e.version, e.payload_sha256.as_slice());
                match self.entries.get(&key) {
                    None => plan.want.push(key),
                    Some(mine) => match (mine.version, mine.sha.as_slice()).cmp(&their_rank) {
                        Ordering::Less => plan.want.push(key),
                        Ordering::Greater if !pushed.contains(&key) => plan.push.push(mine.clone()),
                        _ => {}
                    },
                }
            }
            for stamp in self.entries_after(&listing.origin, 0) {
                if !seen.contains(stamp.key.entry_id.as_str()) && !pushed.contains(&stamp.key) {
                    plan.push.push(stamp.clone());
                }
            }
        }
        plan.push.truncate(max);
        plan.want.truncate(max);
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OWNERS: [&str; 3] = ["c_c413", "r_abruzz", "c_a515"];
    const ENTRIES: [&str; 4] = [
        "01JD3Q5Z8W2N4V6X7Y9A0B1C2D",
        "01JD3Q5Z8W2N4V6X7Y9A0B1C2E",
        "01JD3Q5Z8W2N4V6X7Y9A0B1C2F",
        "01JD3Q5Z8W2N4V6X7Y9A0B1C2G",
    ];

    /// A version of one of a few entries; the sequence follows the version
    /// (as an honest owner's does) except when `twin` (an owner that signed
    /// two contents under one number).
    fn stamp() -> impl Strategy<Value = Stamp> {
        (
            0..OWNERS.len(),
            0..ENTRIES.len(),
            1u64..6,
            any::<bool>(),
            0u8..2,
        )
            .prop_map(|(o, e, version, retired, twin)| Stamp {
                key: Key::new(OWNERS[o], ENTRIES[e]),
                version,
                seq: version * 10,
                // The payload hash covers the whole version, tombstone flag
                // included.
                sha: [twin * 2 + u8::from(retired); 32],
                retired,
            })
    }

    fn set_of(stamps: &[Stamp]) -> FaqSet {
        let mut set = FaqSet::new();
        for s in stamps {
            set.apply(s.clone());
        }
        set
    }

    fn contents(set: &FaqSet) -> BTreeMap<Key, Stamp> {
        set.entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Two-way anti-entropy between `a` and `b` until neither changes.
    fn sync(a: &mut FaqSet, b: &mut FaqSet, max: usize) -> usize {
        for round in 1..100 {
            let before = (a.root(), b.root());
            let answer = b.answer(&a.digest(), max, 10 * max);
            for s in &answer.send {
                a.apply(s.clone());
            }
            let plan = a.plan(&b.digest(), &answer.listings, max);
            for s in plan.push {
                b.apply(s);
            }
            for key in plan.want {
                if let Some(s) = b.get(&key).cloned() {
                    a.apply(s);
                }
            }
            if (a.root(), b.root()) == before && a.root() == b.root() {
                return round;
            }
        }
        panic!("no convergence")
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(a in stamp(), b in stamp(), c in stamp()) {
            let (b, c) = (Stamp { key: a.key.clone(), ..b }, Stamp { key: a.key.clone(), ..c });
            prop_assert_eq!(merge(&a, &b), merge(&b, &a));
            prop_assert_eq!(merge(merge(&a, &b), &c), merge(&a, merge(&b, &c)));
            prop_assert_eq!(merge(&a, &a), &a);
            // Older versions never win.
            let winner = merge(&a, &b);
            prop_assert!(winner.version >= a.version.max(b.version));
        }

        #[test]
        fn any_order_of_arrival_gives_the_same_set(
            stamps in prop::collection::vec(stamp(), 0..40),
            seed in any::<u64>(),
        ) {
            let mut shuffled = stamps.clone();
            // A deterministic shuffle from the seed.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let a = set_of(&stamps);
            let b = set_of(&shuffled);
            prop_assert_eq!(contents(&a), contents(&b));
            prop_assert_eq!(a.digest(), b.digest());
            // Applying everything again changes nothing (idempotent).
            let mut again = a.clone();
            for s in &stamps {
                prop_assert!(!again.apply(s.clone()).changed());
            }
            prop_assert_eq!(again.root(), a.root());
            // Each entry holds the greatest version that arrived.
            for s in &stamps {
                let held = a.get(&s.key).unwrap();
                prop_assert!(held.rank() >= s.rank());
            }
        }

        #[test]
        fn merging_states_is_a_semilattice(
            x in prop::collection::vec(stamp(), 0..20),
            y in prop::collection::vec(stamp(), 0..20),
            z in prop::collection::vec(stamp(), 0..20),
        ) {
            let (x, y, z) = (set_of(&x), set_of(&y), set_of(&z));
            let join = |a: &FaqSet, b: &FaqSet| { let mut r = a.clone(); r.merge_from(b); r };
            prop_assert_eq!(contents(&join(&x, &y)), contents(&join(&y, &x)));
            prop_assert_eq!(contents(&join(&join(&x, &y), &z)), contents(&join(&x, &join(&y, &z))));
            prop_assert_eq!(contents(&join(&x, &x)), contents(&x));
        }

        #[test]
        fn anti_entropy_makes_two_sets_equal_to_their_merge(
            x in prop::collection::vec(stamp(), 0..30),
            y in prop::collection::vec(stamp(), 0..30),
            max in 1usize..8,
        ) {
            let (mut a, mut b) = (set_of(&x), set_of(&y));
            let mut expected = a.clone();
            expected.merge_from(&b);
            sync(&mut a, &mut b, max);
            prop_assert_eq!(contents(&a), contents(&expected));
            prop_assert_eq!(contents(&b), contents(&expected));
        }
    }

    #[test]
    fn an_older_version_is_stale_and_a_replay_a_duplicate() {
        let key = Key::new(OWNERS[0], ENTRIES[0]);
        let v = |version: u64| Stamp {
            key: key.clone(),
            version,
            seq: version,
            sha: [version as u8; 32],
            retired: false,
        };
        let mut set = FaqSet::new();
        assert_eq!(set.apply(v(2)), Applied::New);
        assert_eq!(set.apply(v(1)), Applied::Stale);
        assert_eq!(set.apply(v(2)), Applied::Duplicate);
        assert_eq!(set.apply(v(3)), Applied::Replaced(v(2)));
        assert_eq!(set.max_seq(OWNERS[0]), 3);
        assert_eq!(set.max_seq(OWNERS[1]), 0);
        assert_eq!(set.digest()[0].entries, 1);
    }

    #[test]
    fn a_gap_below_the_sequence_is_found_by_listing() {
        let mk = |e: usize, seq: u64| Stamp {
            key: Key::new(OWNERS[0], ENTRIES[e]),
            version: 1,
            seq,
            sha: [e as u8; 32],
            retired: false,
        };
        // `a` missed seq 2 (refused for now) but holds seq 3.
        let mut a = set_of(&[mk(0, 1), mk(2, 3)]);
        let mut b = set_of(&[mk(0, 1), mk(1, 2), mk(2, 3)]);
        let answer = b.answer(&a.digest(), 10, 10);
        assert!(answer.send.is_empty());
        assert_eq!(answer.listings.len(), 1);
        sync(&mut a, &mut b, 10);
        assert_eq!(a.root(), b.root());
        assert_eq!(a.len(), 3);
    }
}
