//! Goals and ranking: which goals a measured candidate missed (in words, with the numbers),
//! the lexicographic order of the objectives, and the Pareto front over them.
//!
//! Every goal is relative to the source model measured in the same run. Ranking and the
//! front only look at candidates that met every goal.

use std::cmp::Ordering;

use crate::recipe::{Improvement, LatencyStat, Metrics, Objective};
use crate::report::{human_bytes, millis, CandidateReport, Latency, Measurement, Status};

/// Rounding room for comparisons against a goal, so that a value exactly on it passes.
const EPSILON: f64 = 1e-12;

/// The statistic of a latency measurement that the recipe ranks by.
pub fn latency_value(stat: LatencyStat, latency: &Latency) -> f64 {
    match stat {
        LatencyStat::P50 => latency.p50,
        LatencyStat::P90 => latency.p90,
        LatencyStat::P99 => latency.p99,
        LatencyStat::Mean => latency.mean,
    }
}

/// Each goal of `metrics` the candidate missed, in words with the numbers; empty when it met
/// them all. A goal whose metric was not measured on the candidate is missed, with a reason
/// that says so.
pub fn missed_goals(
    metrics: &Metrics,
    source: &Measurement,
    candidate: &Measurement,
) -> Vec<String> {
    let mut missed = Vec::new();
    if let Some(spec) = &metrics.accuracy {
        if spec.max_drop.is_some() || spec.min.is_some() {
            accuracy_goals(spec, source.accuracy, candidate.accuracy, &mut missed);
        }
    }
    if let Some(spec) = &metrics.latency {
        if spec.max.is_some() || spec.min_improvement.is_some() {
            let value =
                |m: &Measurement| m.latency_ms.as_ref().map(|l| latency_value(spec.stat, l));
            let (base, got) = (value(source), value(candidate));
            latency_goals(spec, base, got, &mut missed);
        }
    }
    if let Some(spec) = &metrics.size {
        size_goals(spec, source.size_bytes, candidate.size_bytes, &mut missed);
    }
    missed
}

fn accuracy_goals(
    spec: &crate::recipe::AccuracyMetric,
    base: Option<f64>,
    got: Option<f64>,
    missed: &mut Vec<String>,
) {
    let (Some(base), Some(got)) = (base, got) else {
        missed.push("accuracy was not measured, so its goals cannot be checked".into());
        return;
    };
    let figure = crate::report::AccuracyFigure::of(spec);
    let name = figure.header();
    if let Some(max_drop) = &spec.max_drop {
        let allowed = max_drop.allowed(base);
        let drop = base - got;
        if drop > allowed + EPSILON {
            missed.push(format!(
                "{name} dropped by {drop:.4} ({} -> {}), more than the {max_drop} allowed",
                figure.format(Some(base)),
                figure.format(Some(got))
            ));
        }
    }
    if let Some(min) = spec.min {
        if got < min - EPSILON {
            missed.push(format!(
                "{name} {} is below the minimum of {}",
                figure.format(Some(got)),
                figure.format(Some(min))
            ));
        }
    }
}

fn latency_goals(
    spec: &crate::recipe::LatencyMetric,
    base: Option<f64>,
    got: Option<f64>,
    missed: &mut Vec<String>,
) {
    let stat = spec.stat;
    let (Some(base), Some(got)) = (base, got) else {
        missed.push("latency was not measured, so its goals cannot be checked".into());
        return;
    };
    if let Some(max) = spec.max {
        if got > max + EPSILON {
            missed.push(format!(
                "latency {stat} {} is above the maximum of {}",
                millis(Some(got)),
                millis(Some(max))
            ));
        }
    }
    if let Some(wanted) = spec.min_improvement {
        let required = wanted.required(base);
        let gained = base - got;
        if gained < required - EPSILON {
            missed.push(format!(
                "latency {stat} {} is {} the source's {}, short of the {} required",
                millis(Some(got)),
                change(gained, base, millis(Some(gained.abs()))),
                millis(Some(base)),
                required_words(wanted, millis(Some(required)))
            ));
        }
    }
}

fn size_goals(spec: &crate::recipe::SizeMetric, base: u64, got: u64, missed: &mut Vec<String>) {
    if let Some(max) = spec.max_bytes {
        if got > max {
            missed.push(format!(
                "size {} ({got} bytes) is above the maximum of {} ({max} bytes)",
                human_bytes(got),
                human_bytes(max)
            ));
        }
    }
    if let Some(wanted) = spec.min_improvement {
        let required = wanted.required(base as f64);
        let gained = base as f64 - got as f64;
        if gained < required - EPSILON {
            let bytes = |v: f64| format!("{} bytes", v.abs().round() as u64);
            missed.push(format!(
                "size {} ({got} bytes) is {} the source's {} ({base} bytes), short of the {} \
                 required",
                human_bytes(got),
                change(gained, base as f64, bytes(gained)),
                human_bytes(base),
                required_words(wanted, bytes(required))
            ));
        }
    }
}

/// `0.2 ms (15.0%) below` or `0.1 ms (5.0%) above`: how far a value moved from `base`.
fn change(gained: f64, base: f64, amount: String) -> String {
    let share = if base > 0.0 { gained.abs() / base * 100.0 } else { 0.0 };
    let direction = if gained >= 0.0 { "below" } else { "above" };
    format!("{amount} ({share:.1}%) {direction}")
}

/// `20% (0.150 ms)` for a relative improvement, the absolute amount alone otherwise.
fn required_words(wanted: Improvement, absolute: String) -> String {
    match wanted {
        Improvement::Relative(_) => format!("{wanted} ({absolute})"),
        Improvement::Absolute(_) => absolute,
    }
}

/// A candidate's value for one objective, oriented so that lower is better; `None` when the
/// metric was not measured on it.
fn objective_value(objective: Objective, m: &Measurement, stat: LatencyStat) -> Option<f64> {
    match objective {
        Objective::Latency => m.latency_ms.as_ref().map(|l| latency_value(stat, l)),
        Objective::Size => Some(m.size_bytes as f64),
        Objective::Accuracy => m.accuracy.map(|a| -a),
    }
}

/// Orders two values of one objective, lower first; a missing value sorts last.
fn order(a: Option<f64>, b: Option<f64>) -> Ordering {
    a.unwrap_or(f64::INFINITY).total_cmp(&b.unwrap_or(f64::INFINITY))
}

/// Orders two measured candidates by the objective: the first key that differs decides.
pub fn compare(
    objective: &[Objective],
    a: &CandidateReport,
    b: &CandidateReport,
    stat: LatencyStat,
) -> Ordering {
    let (Some(a), Some(b)) = (&a.measurement, &b.measurement) else { return Ordering::Equal };
    for key in objective {
        let order = order(objective_value(*key, a, stat), objective_value(*key, b, stat));
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// The index of the best candidate that met every goal under the objective, if any did; the
/// first in plan order wins a tie.
pub fn rank(
    objective: &[Objective],
    reports: &[CandidateReport],
    stat: LatencyStat,
) -> Option<usize> {
    let passing = reports.iter().enumerate().filter(|(_, r)| r.status == Status::Passed);
    passing.min_by(|(_, a), (_, b)| compare(objective, a, b, stat)).map(|(index, _)| index)
}

/// Whether `a` dominates `b`: at least as good on every objective and better on one. A
/// missing value is worse than any measured one.
fn dominates(objective: &[Objective], a: &Measurement, b: &Measurement, stat: LatencyStat) -> bool {
    let mut better = false;
    for key in objective {
        match order(objective_value(*key, a, stat), objective_value(*key, b, stat)) {
            Ordering::Greater => return false,
            Ordering::Less => better = true,
            Ordering::Equal => {}
        }
    }
    better
}

/// The indices of the candidates that met every goal and that no other such candidate
/// dominates on the objectives, best first under the lexicographic order (plan order among
/// equals). Candidates equal on every objective are all on the front.
pub fn pareto_front(
    objective: &[Objective],
    reports: &[CandidateReport],
    stat: LatencyStat,
) -> Vec<usize> {
    let passing: Vec<(usize, &Measurement)> = reports
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == Status::Passed)
        .filter_map(|(i, r)| r.measurement.as_ref().map(|m| (i, m)))
        .collect();
    let mut front: Vec<usize> = passing
        .iter()
        .filter(|(_, m)| !passing.iter().any(|(_, other)| dominates(objective, other, m, stat)))
        .map(|(i, _)| *i)
        .collect();
    front.sort_by(|a, b| compare(objective, &reports[*a], &reports[*b], stat).then(a.cmp(b)));
    front
}

/// For a candidate that met every goal but is off the front, the id of one front candidate
/// that dominates it.
pub fn dominated_by<'r>(
    objective: &[Objective],
    reports: &'r [CandidateReport],
    front: &[usize],
    candidate: &CandidateReport,
    stat: LatencyStat,
) -> Option<&'r str> {
    let m = candidate.measurement.as_ref()?;
    front.iter().map(|i| &reports[*i]).find_map(|other| {
        let theirs = other.measurement.as_ref()?;
        dominates(objective, theirs, m, stat).then_some(other.id.as_str())
    })
}

#[cfg(test)]
mod tests;
