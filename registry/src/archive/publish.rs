//! Small-cell protection of published tables, and the surge test. Pure
//! functions: no database, no network.
//!
//! A table is a list of non-empty cells, each with one key per dimension and
//! a count. Protection runs in three steps (docs/protocol.md, "The
//! anonymised archive"):
//!
//! 1. **Primary suppression**: every cell under k.
//! 2. **l-diversity**: when outcome is a dimension, a group of cells that
//!    agree on every other key and hold a single outcome would tell the
//!    outcome of everyone in it; its cells are withheld and published as one
//!    cell with outcome `*` (the outcome generalised away).
//! 3. **Complementary suppression** (the hypercube rule): any total along any
//!    dimension may be published by another query, so in every line of the
//!    table (cells agreeing on all keys but one) the hidden cells must be
//!    none, or at least two whose sum is at least k. Otherwise the smallest
//!    shown cell of the line is hidden too; repeated until no line changes.
//!    Subtracting the shown cells from a line's total then yields only a sum
//!    of two or more hidden cells, never one of them.
//!
//! Then every shown count is **perturbed by its cell key** ([`perturb`],
//! the cell-key method of the Australian Bureau of Statistics): each record
//! has a key 0..=255 ([`record_key`]), a cell's key is the sum of its
//! records' keys, and the noise is read from a fixed table at that key. The
//! same records always give the same noise, however the query reached them,
//! so asking again averages nothing away; two overlapping queries differ in
//! their records, so their noise differs and subtracting one from the other
//! no longer gives the count of the records between them.

use std::collections::{BTreeMap, BTreeSet};

/// Why a cell is hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hidden {
    /// Shown.
    No,
    /// Under k.
    Small,
    /// Hidden so a small cell cannot be recovered from totals.
    Complementary,
    /// Part of a group with a single outcome (published generalised).
    LDiversity,
}

impl Hidden {
    /// The wire word (`ArchiveCell.suppressed`).
    pub fn word(self) -> &'static str {
        match self {
            Self::No => "",
            Self::Small => "small",
            Self::Complementary => "complementary",
            Self::LDiversity => "l-diversity",
        }
    }
}

/// A cell of a protected table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// One key per dimension.
    pub keys: Vec<String>,
    /// The true count (never published when hidden).
    pub count: u64,
    /// The sum of its records' keys ([`record_key`]).
    pub key: i64,
    /// Whether and why it is hidden.
    pub hidden: Hidden,
}

/// The key shown for a generalised outcome.
pub const ANY_OUTCOME: &str = "*";

/// Protects a table of `dims` dimensions whose dimension `outcome_dim` (if
/// any) is the outcome. Returns the cells as published: withheld groups are
/// replaced by one `*` cell each (itself hidden as small under k).
pub fn protect(
    cells: Vec<(Vec<String>, u64, i64)>,
    dims: usize,
    k: u64,
    outcome_dim: Option<usize>,
) -> Vec<Cell> {
    let mut cells: Vec<Cell> = cells
        .into_iter()
        .filter(|(keys, count, _)| *count > 0 && keys.len() == dims)
        .map(|(keys, count, key)| Cell {
            hidden: if count < k { Hidden::Small } else { Hidden::No },
            keys,
            count,
            key,
        })
        .collect();
    // l-diversity: groups along the outcome dimension with one outcome.
    if let Some(d) = outcome_dim {
        let mut outcomes: BTreeMap<Vec<String>, BTreeSet<&str>> = BTreeMap::new();
        for c in &cells {
            outcomes
                .entry(without(&c.keys, d))
                .or_default()
                .insert(&c.keys[d]);
        }
        let withheld: BTreeSet<Vec<String>> = outcomes
            .into_iter()
            .filter(|(_, o)| o.len() < 2)
            .map(|(g, _)| g)
            .collect();
        for c in &mut cells {
            if withheld.contains(&without(&c.keys, d)) {
                c.hidden = Hidden::LDiversity;
            }
        }
    }
    complementary(&mut cells, dims, k, outcome_dim);
    // Publish withheld groups as one generalised cell each.
    let mut out: Vec<Cell> = Vec::with_capacity(cells.len());
    let mut generalised: BTreeMap<Vec<String>, (u64, i64)> = BTreeMap::new();
    for c in cells {
        match (c.hidden, outcome_dim) {
            (Hidden::LDiversity, Some(d)) => {
                let mut keys = c.keys;
                keys[d] = ANY_OUTCOME.to_owned();
                let group = generalised.entry(keys).or_default();
                group.0 += c.count;
                group.1 += c.key;
            }
            _ => out.push(c),
        }
    }
    out.extend(generalised.into_iter().map(|(keys, (count, key))| Cell {
        hidden: if count < k {
            Hidden::Small
        } else {
            Hidden::LDiversity
        },
        keys,
        count,
        key,
    }));
    out.sort_by(|a, b| a.keys.cmp(&b.keys));
    out
}

/// A record's key, 0..=255: the first byte of its id (a keyed hash only
/// the making node can compute, so uniform, and the same at every registry
/// the record reaches).
pub fn record_key(id: &[u8]) -> i64 {
    i64::from(id.first().copied().unwrap_or(0))
}

/// The noise for a cell key (taken modulo 256): 0 for 102 of the 256 keys,
/// +1 and -1 for 51 each, +2 and -2 for 19 each, +3 and -3 for 7 each.
/// Symmetric, so unbiased; variance 1.46.
pub fn noise(cell_key: i64) -> i64 {
    match cell_key.rem_euclid(256) {
        0..=101 => 0,
        102..=152 => 1,
        153..=203 => -1,
        204..=222 => 2,
        223..=241 => -2,
        242..=248 => 3,
        _ => -3,
    }
}

/// A shown count (at least `k`) as published: with its cell's noise, and
/// never under `k` (a published count under k would read as a small cell).
pub fn perturb(count: u64, cell_key: i64, k: u64) -> u64 {
    (count as i64 + noise(cell_key)).max(k as i64) as u64
}

/// A total published whatever its size (a trend's baseline, whose weeks
/// are protected one by one): with its noise, never negative; nothing from
/// no records.
pub fn perturb_total(total: u64, key: i64) -> u64 {
    if total == 0 {
        return 0;
    }
    (total as i64 + noise(key)).max(0) as u64
}

fn without(keys: &[String], d: usize) -> Vec<String> {
    let mut k = keys.to_vec();
    k.remove(d);
    k
}

/// The hypercube rule over every line of every dimension, to a fixed point.
fn complementary(cells: &mut [Cell], dims: usize, k: u64, outcome_dim: Option<usize>) {
    loop {
        let mut changed = false;
        for d in 0..dims {
            let mut lines: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
            for (i, c) in cells.iter().enumerate() {
                lines.entry(without(&c.keys, d)).or_default().push(i);
            }
            for line in lines.values() {
                // A withheld group's own outcome line is published as its
                // total (the `*` cell): nothing more to hide there.
                if Some(d) == outcome_dim
                    && line.iter().all(|&i| cells[i].hidden == Hidden::LDiversity)
                {
                    continue;
                }
                loop {
                    let hidden: Vec<usize> = line
                        .iter()
                        .copied()
                        .filter(|&i| cells[i].hidden != Hidden::No)
                        .collect();
                    let sum: u64 = hidden.iter().map(|&i| cells[i].count).sum();
                    if hidden.is_empty() || (hidden.len() >= 2 && sum >= k) {
                        break;
                    }
                    let Some(&smallest) = line
                        .iter()
                        .filter(|&&i| cells[i].hidden == Hidden::No)
                        .min_by_key(|&&i| (cells[i].count, cells[i].keys.clone()))
                    else {
                        break;
                    };
                    cells[smallest].hidden = Hidden::Complementary;
                    changed = true;
                }
            }
        }
        if !changed {
            return;
        }
    }
}

/// P(X >= x) for X ~ Poisson(lambda), with terms computed in log space so
/// large counts neither overflow nor underflow. Above the mean the tail is
/// summed upward directly (precise even for p-values like 1e-40); below it,
/// one minus the sum of the first x terms.
pub fn poisson_upper_tail(x: u64, lambda: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    let log_pmf = |i: u64| -> f64 {
        let log_fact: f64 = (1..=i).map(|j| (j as f64).ln()).sum();
        i as f64 * lambda.ln() - lambda - log_fact
    };
    if x as f64 > lambda {
        let mut log_term = log_pmf(x);
        let mut tail = 0.0;
        let mut i = x;
        loop {
            let term = log_term.exp();
            tail += term;
            if term <= tail * 1e-17 || i > x + 100_000 {
                return tail.min(1.0);
            }
            i += 1;
            log_term += lambda.ln() - (i as f64).ln();
        }
    }
    let mut below = 0.0;
    let mut log_term = -lambda;
    for i in 0..x {
        if i > 0 {
            log_term += lambda.ln() - (i as f64).ln();
        }
        below += log_term.exp();
    }
    (1.0 - below).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, &str, u64)]) -> Vec<(Vec<String>, u64, i64)> {
        rows.iter()
            .map(|(a, b, n)| (vec![a.to_string(), b.to_string()], *n, *n as i64 * 7))
            .collect()
    }

    #[test]
    fn the_noise_table_is_symmetric_and_small() {
        let all: Vec<i64> = (0..256).map(noise).collect();
        assert_eq!(all.iter().sum::<i64>(), 0, "unbiased");
        for n in -3..=3 {
            let count = all.iter().filter(|x| **x == n).count();
            let mirror = all.iter().filter(|x| **x == -n).count();
            assert_eq!(count, mirror, "{n}");
        }
        assert_eq!(all.iter().filter(|x| **x == 0).count(), 102);
        assert!(all.iter().all(|x| x.abs() <= 3));
        assert_eq!(noise(256 + 7), noise(7), "keys are taken modulo 256");
        assert_eq!(noise(-1), noise(255));
    }

    #[test]
    fn a_perturbed_count_never_falls_under_k() {
        for key in 0..256 {
            assert!(perturb(5, key, 5) >= 5);
            let p = perturb(100, key, 5) as i64;
            assert!((97..=103).contains(&p));
        }
    }

    #[test]
    fn a_generalised_cell_carries_the_sum_of_its_keys() {
        let out = protect(
            vec![
                (vec!["066032".into(), "rejected".into()], 7, 300),
                (vec!["066006".into(), "answered".into()], 20, 10),
                (vec!["066006".into(), "rejected".into()], 9, 11),
            ],
            2,
            5,
            Some(1),
        );
        let celano = out.iter().find(|c| c.keys[0] == "066032").unwrap();
        assert_eq!((celano.count, celano.key), (7, 300));
    }

    #[test]
    fn a_lone_small_cell_takes_its_smallest_neighbour_with_it() {
        let out = protect(
            table(&[("a", "x", 2), ("a", "y", 9), ("a", "z", 30)]),
            2,
            5,
            None,
        );
        let hidden: Vec<_> = out.iter().map(|c| (c.keys[1].as_str(), c.hidden)).collect();
        assert_eq!(
            hidden,
            vec![
                ("x", Hidden::Small),
                ("y", Hidden::Complementary),
                ("z", Hidden::No)
            ]
        );
    }

    #[test]
    fn two_small_cells_summing_under_k_need_a_third() {
        let out = protect(
            table(&[("a", "x", 1), ("a", "y", 1), ("a", "z", 6), ("a", "w", 40)]),
            2,
            5,
            None,
        );
        let z = out.iter().find(|c| c.keys[1] == "z").unwrap();
        assert_eq!(z.hidden, Hidden::Complementary, "1 + 1 < 5: the 6 goes too");
        assert_eq!(out.iter().filter(|c| c.hidden != Hidden::No).count(), 3);
    }

    #[test]
    fn a_group_with_one_outcome_is_generalised() {
        // Celano: 7 records, all rejected; Avezzano: two outcomes.
        let out = protect(
            table(&[
                ("066032", "rejected", 7),
                ("066006", "answered", 20),
                ("066006", "rejected", 9),
            ]),
            2,
            5,
            Some(1),
        );
        let celano: Vec<_> = out.iter().filter(|c| c.keys[0] == "066032").collect();
        assert_eq!(celano.len(), 1);
        assert_eq!(celano[0].keys[1], ANY_OUTCOME);
        assert_eq!(celano[0].count, 7);
        assert!(
            out.iter()
                .all(|c| c.keys[1] != "rejected" || c.keys[0] != "066032")
        );
    }

    #[test]
    fn the_poisson_tail_matches_known_values() {
        // P(X >= 1 | 1) = 1 - e^-1.
        assert!((poisson_upper_tail(1, 1.0) - 0.632_120_6).abs() < 1e-6);
        // P(X >= 10 | 3) = 0.001102.
        assert!((poisson_upper_tail(10, 3.0) - 0.001_102_4).abs() < 1e-6);
        let tiny = poisson_upper_tail(400, 100.0);
        assert!(tiny > 0.0 && tiny < 1e-50, "{tiny}");
        // Below the mean the tail is near one.
        assert!(poisson_upper_tail(5, 10.0) > 0.97);
        assert_eq!(poisson_upper_tail(0, 5.0), 1.0);
    }
}
