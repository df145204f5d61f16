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
    /// Whether and why it is hidden.
    pub hidden: Hidden,
}

/// The key shown for a generalised outcome.
pub const ANY_OUTCOME: &str = "*";

/// Protects a table of `dims` dimensions whose dimension `outcome_dim` (if
/// any) is the outcome. Returns the cells as published: withheld groups are
/// replaced by one `*` cell each (itself hidden as small under k).
pub fn protect(
    cells: Vec<(Vec<String>, u64)>,
    dims: usize,
    k: u64,
    outcome_dim: Option<usize>,
) -> Vec<Cell> {
    let mut cells: Vec<Cell> = cells
        .into_iter()
        .filter(|(keys, count)| *count > 0 && keys.len() == dims)
        .map(|(keys, count)| Cell {
            hidden: if count < k { Hidden::Small } else { Hidden::No },
            keys,
            count,
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
    let mut generalised: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for c in cells {
        match (c.hidden, outcome_dim) {
            (Hidden::LDiversity, Some(d)) => {
                let mut keys = c.keys;
                keys[d] = ANY_OUTCOME.to_owned();
                *generalised.entry(keys).or_default() += c.count;
            }
            _ => out.push(c),
        }
    }
    out.extend(generalised.into_iter().map(|(keys, count)| Cell {
        hidden: if count < k {
            Hidden::Small
        } else {
            Hidden::LDiversity
        },
        keys,
        count,
    }));
    out.sort_by(|a, b| a.keys.cmp(&b.keys));
    out
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

    fn table(rows: &[(&str, &str, u64)]) -> Vec<(Vec<String>, u64)> {
        rows.iter()
            .map(|(a, b, n)| (vec![a.to_string(), b.to_string()], *n))
            .collect()
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
