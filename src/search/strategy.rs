//! The search strategies: which candidate to evaluate next, given the outcomes so far.
//!
//! Every strategy is deterministic: the same space, seed and outcomes give the same order.
//! None proposes a candidate twice; a strategy returns `None` when it has nothing left to try.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::rng::SplitMix64;
use super::space::Space;
use super::Outcome;
use crate::recipe::Strategy;

/// How many random candidates TPE evaluates before its model picks (fewer in a smaller
/// space).
const TPE_STARTUP: usize = 5;

/// The share of the evaluated candidates TPE counts as good.
const TPE_GOOD_SHARE: f64 = 0.25;

/// A strategy with its state.
#[derive(Debug, Clone)]
pub enum Searcher {
    /// Plan order.
    Exhaustive,
    /// A seeded shuffle of the plan.
    Random { order: Vec<usize> },
    /// One dimension at a time.
    Greedy(Greedy),
    /// The tree-structured Parzen estimator over the categorical dimensions.
    Tpe { order: Vec<usize>, startup: usize },
}

impl Searcher {
    pub fn new(strategy: Strategy, seed: u64, space: &Space) -> Self {
        match strategy {
            Strategy::Exhaustive => Searcher::Exhaustive,
            Strategy::Random => {
                Searcher::Random { order: SplitMix64::new(seed).permutation(space.len()) }
            }
            Strategy::Greedy => Searcher::Greedy(Greedy::new(space)),
            Strategy::Tpe => Searcher::Tpe {
                order: SplitMix64::new(seed).permutation(space.len()),
                startup: TPE_STARTUP.min(space.len()),
            },
        }
    }

    /// The next candidate to evaluate, never one in `seen`.
    pub fn next(&mut self, space: &Space, seen: &HashMap<usize, Outcome>) -> Option<usize> {
        match self {
            Searcher::Exhaustive => (0..space.len()).find(|c| !seen.contains_key(c)),
            Searcher::Random { order } => order.iter().copied().find(|c| !seen.contains_key(c)),
            Searcher::Greedy(greedy) => greedy.next(space, seen),
            Searcher::Tpe { order, startup } => {
                if seen.len() < *startup {
                    order.iter().copied().find(|c| !seen.contains_key(c))
                } else {
                    tpe_next(space, seen, order)
                }
            }
        }
    }
}

/// Orders outcomes best first: passed before the rest, then by lower score.
pub fn better(a: &Outcome, b: &Outcome) -> Ordering {
    (!a.passed()).cmp(&!b.passed()).then(a.score.total_cmp(&b.score))
}

/// Greedy, dimension by dimension in recipe order: each value of the current dimension is
/// tried with the dimensions already decided at their best value and the later ones at their
/// first; the best value is kept. A combination met before is not run again, and one that no
/// candidate makes (a pass refuses it) counts as the worst.
#[derive(Debug, Clone)]
pub struct Greedy {
    best: Vec<usize>,
    dim: usize,
    value: usize,
    /// The outcome of each value of the current dimension tried so far.
    tried: Vec<(usize, Option<Outcome>)>,
    /// The candidate proposed and not yet told, with the value it stands for.
    pending: Option<(usize, usize)>,
}

impl Greedy {
    fn new(space: &Space) -> Self {
        Greedy {
            best: vec![0; space.dims().len()],
            dim: 0,
            value: 0,
            tried: Vec::new(),
            pending: None,
        }
    }

    fn next(&mut self, space: &Space, seen: &HashMap<usize, Outcome>) -> Option<usize> {
        if let Some((candidate, value)) = self.pending.take() {
            self.tried.push((value, seen.get(&candidate).copied()));
        }
        if space.dims().is_empty() {
            // Nothing to search: the one candidate, once.
            return (0..space.len()).find(|c| !seen.contains_key(c));
        }
        loop {
            let dimension = space.dims().get(self.dim)?;
            if self.value >= dimension.size {
                self.best[self.dim] = self.best_value();
                tracing::debug!(
                    dimension = %dimension.label,
                    value = self.best[self.dim],
                    "greedy keeps the best value"
                );
                self.dim += 1;
                self.value = 0;
                self.tried.clear();
                continue;
            }
            let mut assignment = self.best.clone();
            assignment[self.dim] = self.value;
            let value = self.value;
            self.value += 1;
            match space.lookup(&assignment) {
                None => self.tried.push((value, None)),
                Some(candidate) => match seen.get(&candidate) {
                    Some(outcome) => self.tried.push((value, Some(*outcome))),
                    None => {
                        self.pending = Some((candidate, value));
                        return Some(candidate);
                    }
                },
            }
        }
    }

    /// The best value of the current dimension: the first of the best outcomes, or the first
    /// value when none was measured.
    fn best_value(&self) -> usize {
        let measured = self.tried.iter().filter_map(|(value, o)| o.map(|o| (*value, o)));
        measured.min_by(|(_, a), (_, b)| better(a, b)).map_or(0, |(value, _)| value)
    }
}

/// TPE's pick: the evaluated candidates are split into the best quarter (good) and the rest
/// (bad); each dimension's values are counted in each group with Laplace smoothing (a value
/// in a branch not taken is a category of its own), and the untried candidate with the
/// largest product over dimensions of P(value | good) / P(value | bad) is next. Ties go to
/// the earlier one in the seeded `order`.
fn tpe_next(space: &Space, seen: &HashMap<usize, Outcome>, order: &[usize]) -> Option<usize> {
    let mut ranked: Vec<(usize, Outcome)> = seen.iter().map(|(c, o)| (*c, *o)).collect();
    ranked.sort_by(|(ca, a), (cb, b)| better(a, b).then(ca.cmp(cb)));
    let n_good = ((ranked.len() as f64 * TPE_GOOD_SHARE).ceil() as usize).clamp(1, ranked.len());
    let (good, bad) = ranked.split_at(n_good);

    let dims = space.dims();
    let count = |group: &[(usize, Outcome)]| -> Vec<Vec<f64>> {
        let mut counts: Vec<Vec<f64>> = dims.iter().map(|d| vec![0.0; d.size + 1]).collect();
        for (candidate, _) in group {
            for (d, value) in space.coords(*candidate).iter().enumerate() {
                counts[d][value.unwrap_or(dims[d].size)] += 1.0;
            }
        }
        counts
    };
    let (good_counts, bad_counts) = (count(good), count(bad));

    let log_ratio = |candidate: usize| -> f64 {
        let mut total = 0.0;
        for (d, value) in space.coords(candidate).iter().enumerate() {
            let category = value.unwrap_or(dims[d].size);
            let categories = (dims[d].size + 1) as f64;
            let l = (good_counts[d][category] + 1.0) / (good.len() as f64 + categories);
            let g = (bad_counts[d][category] + 1.0) / (bad.len() as f64 + categories);
            total += l.ln() - g.ln();
        }
        total
    };

    let mut best: Option<(usize, f64)> = None;
    for &candidate in order.iter().filter(|c| !seen.contains_key(c)) {
        let ratio = log_ratio(candidate);
        if best.is_none_or(|(_, top)| ratio > top) {
            best = Some((candidate, ratio));
        }
    }
    best.map(|(candidate, _)| candidate)
}
