//! Goal checks with their numbers, the lexicographic ranking and the Pareto front.

use super::*;
use crate::recipe::{AccuracyKind, AccuracyMetric, LatencyMetric, MaxDrop, SizeMetric};
use crate::report::CandidateReport;

fn latency(ms: f64) -> Latency {
    Latency {
        p50: ms,
        p90: ms * 2.0,
        p99: ms * 3.0,
        mean: ms * 1.5,
        min: ms / 2.0,
        warmup: 1,
        runs: 5,
        batch: 1,
    }
}

fn measured(accuracy: Option<f64>, ms: Option<f64>, size: u64) -> Measurement {
    Measurement { accuracy, fidelity: None, latency_ms: ms.map(latency), size_bytes: size }
}

fn candidate(id: &str, status: Status, m: Option<Measurement>) -> CandidateReport {
    CandidateReport {
        id: id.into(),
        label: id.into(),
        steps: Vec::new(),
        status,
        reasons: Vec::new(),
        measurement: m,
        build_s: 0.0,
        notes: Vec::new(),
        accuracy_cached: false,
        accuracy_aware: None,
    }
}

fn passed(id: &str, accuracy: f64, ms: f64, size: u64) -> CandidateReport {
    candidate(id, Status::Passed, Some(measured(Some(accuracy), Some(ms), size)))
}

fn accuracy(max_drop: Option<MaxDrop>, min: Option<f64>) -> Option<AccuracyMetric> {
    Some(AccuracyMetric { kind: AccuracyKind::Top1, output: None, score: None, max_drop, min })
}

fn latency_goal(
    stat: LatencyStat,
    max: Option<f64>,
    min_improvement: Option<Improvement>,
) -> Option<LatencyMetric> {
    Some(LatencyMetric { stat, max, min_improvement, ..LatencyMetric::default() })
}

fn ids(reports: &[CandidateReport], indices: &[usize]) -> Vec<String> {
    indices.iter().map(|i| reports[*i].id.clone()).collect()
}

#[test]
fn accuracy_goals_give_the_numbers() {
    let source = measured(Some(0.90), None, 100);
    let metrics = Metrics {
        accuracy: accuracy(Some(MaxDrop::Relative(0.01)), Some(0.885)),
        ..Metrics::default()
    };

    // 1% of 0.90 is 0.009: a drop of exactly 0.009 passes, 0.0091 does not.
    assert!(missed_goals(&metrics, &source, &measured(Some(0.891), None, 100)).is_empty());
    let missed = missed_goals(&metrics, &source, &measured(Some(0.8889), None, 100));
    assert_eq!(missed, ["accuracy dropped by 0.0111 (90.00% -> 88.89%), more than the 1% allowed"]);

    let missed = missed_goals(&metrics, &source, &measured(Some(0.88), None, 100));
    assert_eq!(
        missed,
        [
            "accuracy dropped by 0.0200 (90.00% -> 88.00%), more than the 1% allowed",
            "accuracy 88.00% is below the minimum of 88.50%",
        ]
    );

    let missed = missed_goals(&metrics, &source, &measured(None, None, 100));
    assert_eq!(missed, ["accuracy was not measured, so its goals cannot be checked"]);
}

#[test]
fn latency_goals_use_the_recipe_statistic() {
    // p90 is twice p50 in these measurements: 2.0 ms at the source, 1.6 ms at the candidate.
    let source = measured(None, Some(1.0), 100);
    let candidate = measured(None, Some(0.8), 100);

    let metrics =
        Metrics { latency: latency_goal(LatencyStat::P90, Some(1.5), None), ..Metrics::default() };
    assert_eq!(
        missed_goals(&metrics, &source, &candidate),
        ["latency p90 1.600 ms is above the maximum of 1.500 ms"]
    );

    // 20% of 2.0 ms is 0.4 ms, and the candidate gained exactly that.
    let goal = Some(Improvement::Relative(0.2));
    let metrics =
        Metrics { latency: latency_goal(LatencyStat::P90, None, goal), ..Metrics::default() };
    assert!(missed_goals(&metrics, &source, &candidate).is_empty());

    let goal = Some(Improvement::Relative(0.25));
    let metrics =
        Metrics { latency: latency_goal(LatencyStat::P90, None, goal), ..Metrics::default() };
    assert_eq!(
        missed_goals(&metrics, &source, &candidate),
        ["latency p90 1.600 ms is 0.400 ms (20.0%) below the source's 2.000 ms, short of the \
          25% (0.500 ms) required"]
    );

    let goal = Some(Improvement::Absolute(0.1));
    let metrics =
        Metrics { latency: latency_goal(LatencyStat::P50, None, goal), ..Metrics::default() };
    let slower = measured(None, Some(1.2), 100);
    assert_eq!(
        missed_goals(&metrics, &source, &slower),
        ["latency p50 1.200 ms is 0.200 ms (20.0%) above the source's 1.000 ms, short of the \
          0.100 ms required"]
    );

    // Latency measured but without goals asks nothing of the candidate.
    let metrics =
        Metrics { latency: latency_goal(LatencyStat::P50, None, None), ..Metrics::default() };
    assert!(missed_goals(&metrics, &source, &slower).is_empty());
}

#[test]
fn size_goals_in_bytes_and_percent() {
    let source = measured(None, None, 4000);
    let size = |max_bytes, min_improvement| Metrics {
        size: Some(SizeMetric { max_bytes, min_improvement }),
        ..Metrics::default()
    };

    assert!(missed_goals(&size(Some(1000), None), &source, &measured(None, None, 1000)).is_empty());
    assert_eq!(
        missed_goals(&size(Some(1000), None), &source, &measured(None, None, 1001)),
        ["size 1001 B (1001 bytes) is above the maximum of 1000 B (1000 bytes)"]
    );

    // Half of 4000 bytes is 2000: 2000 bytes passes, 2001 does not.
    let half = size(None, Some(Improvement::Relative(0.5)));
    assert!(missed_goals(&half, &source, &measured(None, None, 2000)).is_empty());
    assert_eq!(
        missed_goals(&half, &source, &measured(None, None, 2001)),
        ["size 2.0 KiB (2001 bytes) is 1999 bytes (50.0%) below the source's 3.9 KiB (4000 \
          bytes), short of the 50% (2000 bytes) required"]
    );

    let bytes = size(None, Some(Improvement::Absolute(10.0)));
    assert_eq!(missed_goals(&bytes, &source, &measured(None, None, 3991)).len(), 1);
    assert!(missed_goals(&bytes, &source, &measured(None, None, 3990)).is_empty());
}

#[test]
fn rank_is_lexicographic_over_passing_candidates() {
    let reports = vec![
        passed("c1", 0.9, 2.0, 100),
        passed("c2", 0.8, 1.0, 300),
        passed("c3", 0.9, 1.0, 200),
        candidate("c4", Status::MissedGoals, Some(measured(Some(1.0), Some(0.1), 1))),
        candidate("c5", Status::Failed, None),
    ];
    let stat = LatencyStat::P50;
    assert_eq!(rank(&[Objective::Latency], &reports, stat), Some(1));
    assert_eq!(rank(&[Objective::Latency, Objective::Size], &reports, stat), Some(2));
    assert_eq!(rank(&[Objective::Size], &reports, stat), Some(0));
    assert_eq!(rank(&[Objective::Accuracy, Objective::Latency], &reports, stat), Some(2));
    assert_eq!(rank(&[Objective::Latency], &reports[3..], stat), None);
}

#[test]
fn pareto_front_keeps_the_undominated() {
    let stat = LatencyStat::P50;
    let reports = vec![
        passed("c1", 0.90, 2.0, 100), // smallest
        passed("c2", 0.80, 1.0, 300), // fastest
        passed("c3", 0.90, 1.5, 150), // between the two
        passed("c4", 0.90, 2.5, 150), // slower and larger than c3
        candidate("c5", Status::MissedGoals, Some(measured(Some(0.9), Some(0.5), 50))),
        candidate("c6", Status::Failed, None),
    ];
    let both = [Objective::Latency, Objective::Size];
    let front = pareto_front(&both, &reports, stat);
    assert_eq!(ids(&reports, &front), ["c2", "c3", "c1"]);
    assert_eq!(dominated_by(&both, &reports, &front, &reports[3], stat), Some("c3"));
    assert_eq!(dominated_by(&both, &reports, &front, &reports[0], stat), None);

    // One objective: the front is the best value, with every candidate tied on it.
    let front = pareto_front(&[Objective::Accuracy], &reports, stat);
    assert_eq!(ids(&reports, &front), ["c1", "c3", "c4"]);
    let front = pareto_front(&[Objective::Latency], &reports, stat);
    assert_eq!(ids(&reports, &front), ["c2"]);

    // Accuracy counts higher as better: c2 is off the front when accuracy joins latency.
    let front = pareto_front(&[Objective::Accuracy, Objective::Size], &reports, stat);
    assert_eq!(ids(&reports, &front), ["c1"]);
}

#[test]
fn pareto_front_ties_and_missing_values() {
    let stat = LatencyStat::P50;
    let both = [Objective::Latency, Objective::Size];

    // Equal on every objective: neither dominates the other.
    let reports = vec![passed("c1", 0.9, 1.0, 100), passed("c2", 0.8, 1.0, 100)];
    assert_eq!(ids(&reports, &pareto_front(&both, &reports, stat)), ["c1", "c2"]);

    // Equal on one objective and better on the other dominates.
    let reports = vec![passed("c1", 0.9, 1.0, 100), passed("c2", 0.8, 1.0, 99)];
    assert_eq!(ids(&reports, &pareto_front(&both, &reports, stat)), ["c2"]);

    // A candidate without a latency is worse on it than one with any latency.
    let reports = vec![
        candidate("c1", Status::Passed, Some(measured(None, None, 100))),
        passed("c2", 0.9, 5.0, 100),
        candidate("c3", Status::Passed, Some(measured(None, None, 50))),
    ];
    assert_eq!(ids(&reports, &pareto_front(&both, &reports, stat)), ["c2", "c3"]);

    assert!(pareto_front(&both, &[], stat).is_empty());
}
