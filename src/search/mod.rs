//! The search over a plan's candidates: a strategy picks the next candidate from the
//! outcomes so far, and the budgets (`max_candidates`, `max_time`) stop it.
//!
//! The run loop asks [`Search::next`] for a candidate, evaluates it and tells the outcome
//! with [`Search::tell`]; when `next` says no more, [`Search::report`] says what ran, in what
//! order and when, what did not and why.

mod rng;
mod space;
mod strategy;

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

pub use rng::SplitMix64;
pub use space::Space;
pub use strategy::{better, Searcher};

use crate::plan::Plan;
use crate::recipe::{LatencyStat, Objective, Strategy};
use crate::report::{CandidateReport, Status};

/// What one evaluated candidate gave the search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub status: Status,
    /// The first objective's value, lower is better: latency in ms, size in bytes, minus the
    /// accuracy; infinite when nothing was measured.
    pub score: f64,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.status == Status::Passed
    }

    /// The outcome of a candidate's report, scored by the first objective.
    pub fn of(report: &CandidateReport, objective: &[Objective], stat: LatencyStat) -> Self {
        Outcome { status: report.status, score: score(report, objective, stat) }
    }
}

/// The first objective's value of a measured candidate, lower is better; infinite for a
/// candidate that failed or was not measured.
pub fn score(report: &CandidateReport, objective: &[Objective], stat: LatencyStat) -> f64 {
    let measured = matches!(report.status, Status::Passed | Status::MissedGoals);
    let (Some(m), Some(first), true) = (&report.measurement, objective.first(), measured) else {
        return f64::INFINITY;
    };
    let value = match first {
        Objective::Latency => m.latency_ms.as_ref().map(|l| match stat {
            LatencyStat::P50 => l.p50,
            LatencyStat::P90 => l.p90,
            LatencyStat::P99 => l.p99,
            LatencyStat::Mean => l.mean,
        }),
        Objective::Size => Some(m.size_bytes as f64),
        Objective::Accuracy => m.accuracy.map(|a| -a),
    };
    value.filter(|v| !v.is_nan()).unwrap_or(f64::INFINITY)
}

/// Why the search stopped starting candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every candidate ran.
    AllRun,
    /// The strategy had nothing more to try (greedy decided every dimension).
    StrategyDone,
    /// `max_candidates` candidates ran.
    MaxCandidates,
    /// `max_time` passed.
    MaxTime,
}

/// A search over one plan's candidates, with its budgets.
#[derive(Debug)]
pub struct Search {
    strategy: Strategy,
    seed: u64,
    max_candidates: usize,
    max_time: Option<Duration>,
    space: Space,
    searcher: Searcher,
    seen: HashMap<usize, Outcome>,
    history: Vec<(usize, f64)>,
    stopped: Option<StopReason>,
}

impl Search {
    /// A search over `plan`'s candidates with the recipe's strategy and budgets.
    pub fn new(plan: &Plan) -> Self {
        let settings = plan.search();
        let space = Space::from_plan(plan);
        Search::over(
            space,
            settings.strategy,
            settings.seed,
            settings.max_candidates,
            settings.max_time.map(|t| t.0),
        )
    }

    /// A search over `space` (also for tests, with a made-up space).
    pub fn over(
        space: Space,
        strategy: Strategy,
        seed: u64,
        max_candidates: usize,
        max_time: Option<Duration>,
    ) -> Self {
        Search {
            strategy,
            seed,
            max_candidates,
            max_time,
            searcher: Searcher::new(strategy, seed, &space),
            space,
            seen: HashMap::new(),
            history: Vec::new(),
            stopped: None,
        }
    }

    /// The most candidates this search will run.
    pub fn planned(&self) -> usize {
        self.space.len().min(self.max_candidates)
    }

    /// The next candidate to evaluate, or `None` when a budget is reached or the strategy has
    /// nothing left; `elapsed` is the time since the run started.
    pub fn next(&mut self, elapsed: Duration) -> Option<usize> {
        if self.stopped.is_some() {
            return None;
        }
        let stop = if self.seen.len() >= self.space.len() {
            Some(StopReason::AllRun)
        } else if self.seen.len() >= self.max_candidates {
            Some(StopReason::MaxCandidates)
        } else if self.max_time.is_some_and(|limit| elapsed >= limit) {
            Some(StopReason::MaxTime)
        } else {
            None
        };
        if let Some(stop) = stop {
            self.stop(stop);
            return None;
        }
        let next = self.searcher.next(&self.space, &self.seen);
        if next.is_none() {
            self.stop(StopReason::StrategyDone);
        }
        next
    }

    fn stop(&mut self, reason: StopReason) {
        self.stopped = Some(reason);
        let not_run = self.space.len() - self.seen.len();
        if not_run > 0 {
            tracing::info!("{not_run} candidate(s) not run: {}", self.not_run_reason());
        }
    }

    /// Records the outcome of `candidate`, which ended `elapsed` after the run started.
    pub fn tell(&mut self, candidate: usize, outcome: Outcome, elapsed: Duration) {
        self.seen.insert(candidate, outcome);
        self.history.push((candidate, elapsed.as_secs_f64()));
    }

    /// The candidates this search will run, in order, when the order does not depend on
    /// outcomes (exhaustive, random), so that they can be built ahead of measuring; `None`
    /// for strategies that pick each candidate from the ones before (greedy, tpe), and under
    /// a time budget, which building ahead would overrun.
    pub fn upfront(&self) -> Option<Vec<usize>> {
        if self.max_time.is_some() {
            return None;
        }
        let order: Vec<usize> = match &self.searcher {
            Searcher::Exhaustive => (0..self.space.len()).collect(),
            Searcher::Random { order } => order.clone(),
            Searcher::Greedy(_) | Searcher::Tpe { .. } => return None,
        };
        Some(order.into_iter().take(self.planned()).collect())
    }

    /// The candidates evaluated, in order.
    pub fn order(&self) -> Vec<usize> {
        self.history.iter().map(|(candidate, _)| *candidate).collect()
    }

    fn not_run_reason(&self) -> String {
        match self.stopped {
            Some(StopReason::MaxCandidates) => {
                format!("search.max_candidates ({}) was reached", self.max_candidates)
            }
            Some(StopReason::MaxTime) => match self.max_time {
                Some(limit) => {
                    format!("search.max_time ({}) was reached", humantime::format_duration(limit))
                }
                None => "search.max_time was reached".to_owned(),
            },
            Some(StopReason::StrategyDone) => {
                format!("the {} strategy had nothing more to try", self.strategy)
            }
            Some(StopReason::AllRun) | None => String::new(),
        }
    }

    /// What the search did, for the report; `plan` names the candidates.
    pub fn report(&self, plan: &Plan) -> SearchReport {
        let not_run = self.space.len() - self.seen.len();
        SearchReport {
            strategy: self.strategy.to_string(),
            seed: self.seed,
            max_candidates: self.max_candidates,
            max_time_s: self.max_time.map(|t| t.as_secs_f64()),
            space_size: plan.space_size(),
            candidates: self.space.len(),
            duplicates: plan.duplicates(),
            skipped_invalid: plan.skipped_invalid(),
            invalid_reasons: plan
                .invalid_reasons()
                .iter()
                .map(|group| InvalidReason {
                    reason: group.reason.clone(),
                    count: group.count,
                    example: group.example.clone(),
                })
                .collect(),
            run: self.seen.len(),
            not_run,
            stopped_by: self.stopped.unwrap_or(StopReason::AllRun),
            not_run_reason: (not_run > 0).then(|| self.not_run_reason()),
            history: self
                .history
                .iter()
                .map(|(candidate, elapsed_s)| HistoryEntry {
                    id: plan.candidates()[*candidate].id.clone(),
                    elapsed_s: *elapsed_s,
                })
                .collect(),
        }
    }
}

/// `report.json`'s `search`: the strategy and budgets, what ran and what did not, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SearchReport {
    pub strategy: String,
    pub seed: u64,
    pub max_candidates: usize,
    /// The time budget in seconds, if the recipe sets one.
    pub max_time_s: Option<f64>,
    /// Paths through the recipe's passes, before refused combinations and repeats.
    pub space_size: usize,
    /// Distinct valid candidates in the plan.
    pub candidates: usize,
    /// Paths that repeated an earlier candidate's steps.
    pub duplicates: usize,
    /// Paths skipped because a pass refuses the combination.
    pub skipped_invalid: usize,
    pub invalid_reasons: Vec<InvalidReason>,
    /// Candidates evaluated.
    pub run: usize,
    /// Valid candidates not evaluated.
    pub not_run: usize,
    pub stopped_by: StopReason,
    /// Why `not_run` candidates did not run, in words; absent when all ran.
    pub not_run_reason: Option<String>,
    /// The candidates in the order they were evaluated, with the seconds since the run
    /// started when each finished.
    pub history: Vec<HistoryEntry>,
}

/// Paths skipped for one reason.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidReason {
    pub reason: String,
    pub count: usize,
    /// The first refused step, as a label.
    pub example: String,
}

/// One evaluated candidate in the search history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub id: String,
    pub elapsed_s: f64,
}

#[cfg(test)]
mod tests;
