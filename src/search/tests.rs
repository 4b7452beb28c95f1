//! Unit tests of the strategies and budgets on made-up spaces and scores.

use super::*;

const ALL: [Strategy; 4] =
    [Strategy::Exhaustive, Strategy::Random, Strategy::Greedy, Strategy::Tpe];

fn passed(score: f64) -> Outcome {
    Outcome { status: Status::Passed, score }
}

/// Runs `search` to its end, scoring each candidate with `outcome`; the clock advances one
/// second per candidate. Returns the candidates in the order evaluated.
fn drive(search: &mut Search, mut outcome: impl FnMut(&[Option<usize>]) -> Outcome) -> Vec<usize> {
    let mut clock = Duration::ZERO;
    while let Some(candidate) = search.next(clock) {
        let coords = search.space.coords(candidate).to_vec();
        clock += Duration::from_secs(1);
        search.tell(candidate, outcome(&coords), clock);
    }
    search.order()
}

fn search(sizes: &[usize], strategy: Strategy, seed: u64) -> Search {
    Search::over(Space::cartesian(sizes), strategy, seed, usize::MAX, None)
}

#[test]
fn exhaustive_runs_the_plan_in_order() {
    let mut s = search(&[2, 3], Strategy::Exhaustive, 0);
    assert_eq!(drive(&mut s, |_| passed(1.0)), [0, 1, 2, 3, 4, 5]);
    assert_eq!(s.stopped, Some(StopReason::AllRun));
}

#[test]
fn random_is_a_permutation_fixed_by_the_seed() {
    let order = |seed| drive(&mut search(&[4, 5], Strategy::Random, seed), |_| passed(1.0));
    let first = order(7);
    assert_eq!(first, order(7), "the same seed gives the same order");
    assert_ne!(first, order(8), "another seed gives another order");
    assert_ne!(first, (0..20).collect::<Vec<_>>(), "the order is shuffled");
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>(), "every candidate runs once");
}

#[test]
fn greedy_keeps_the_best_value_of_each_dimension_in_turn() {
    // Scores by value, per dimension; the total is their sum, so the greedy path is exact.
    let table = [[5.0, 1.0, 3.0], [2.0, 0.5, 9.0], [4.0, 4.0, 0.0]];
    let mut s = search(&[3, 2, 3], Strategy::Greedy, 0);
    let order = drive(&mut s, |coords| {
        passed(coords.iter().enumerate().map(|(d, v)| table[d][v.unwrap()]).sum())
    });
    let visited: Vec<Vec<usize>> =
        order.iter().map(|&c| s.space.coords(c).iter().map(|v| v.unwrap()).collect()).collect();
    assert_eq!(
        visited,
        [
            // The first dimension with the others at their first value: 1 is best.
            vec![0, 0, 0],
            vec![1, 0, 0],
            vec![2, 0, 0],
            // The second, the first fixed at 1: [1, 0, 0] is not run again.
            vec![1, 1, 0],
            // The third.
            vec![1, 1, 1],
            vec![1, 1, 2],
        ]
    );
    // 3 + 2 + 3 values, minus the two repeats.
    assert_eq!(order.len(), 6);
    assert_eq!(s.stopped, Some(StopReason::StrategyDone));
    let report_reason = s.not_run_reason();
    assert!(report_reason.contains("greedy"), "{report_reason}");
}

#[test]
fn greedy_prefers_a_passing_value_to_a_lower_score_that_missed_goals() {
    let mut s = search(&[3, 2], Strategy::Greedy, 0);
    let order = drive(&mut s, |coords| match coords[0] {
        Some(0) => Outcome { status: Status::MissedGoals, score: 0.1 },
        Some(1) => passed(5.0),
        _ => Outcome { status: Status::Failed, score: f64::INFINITY },
    });
    // After the first dimension, value 1 is kept: the second dimension is tried with it.
    assert_eq!(order, [0, 2, 4, 3]);
}

#[test]
fn greedy_counts_a_refused_combination_as_the_worst_and_skips_branches_not_taken() {
    // A one_of (dimension 0) with a parameter (dimension 1, 3 values) in its first branch
    // only; the second branch has no parameter.
    let dims = vec![
        crate::plan::Dimension { label: "one_of".into(), size: 2, parent: None },
        crate::plan::Dimension { label: "p".into(), size: 3, parent: Some((0, 0)) },
    ];
    let coords = vec![vec![Some(0), Some(0)], vec![Some(0), Some(2)], vec![Some(1), None]];
    let mut paths: HashMap<Vec<Option<usize>>, Option<usize>> =
        coords.iter().enumerate().map(|(i, c)| (c.clone(), Some(i))).collect();
    paths.insert(vec![Some(0), Some(1)], None);
    let space = Space::from_parts(dims, coords, paths);

    // Branch 1 wins: the parameter of branch 0 is not tried at all.
    let mut s = Search::over(space.clone(), Strategy::Greedy, 0, usize::MAX, None);
    let order = drive(&mut s, |c| passed(if c[0] == Some(1) { 1.0 } else { 2.0 }));
    assert_eq!(order, [0, 2]);

    // Branch 0 wins: its parameter is tried, the refused value is passed over.
    let mut s = Search::over(space, Strategy::Greedy, 0, usize::MAX, None);
    let order = drive(&mut s, |c| passed(if c[1] == Some(2) { 0.5 } else { 1.0 }));
    assert_eq!(order, [0, 2, 1]);
}

/// The share of picks after the first five, over ten seeds, that take value 2 of
/// dimension 0, which is much better than the others.
fn share_of_best_picks(strategy: Strategy) -> f64 {
    let score = |coords: &[Option<usize>]| {
        let base = if coords[0] == Some(2) { 0.0 } else { 10.0 };
        passed(base + coords[1].unwrap() as f64 * 0.1 + coords[2].unwrap() as f64 * 0.01)
    };
    let evaluations = 20;
    let (mut hits, mut picks) = (0, 0);
    for seed in 0..10 {
        let run = || {
            let mut s =
                Search::over(Space::cartesian(&[4, 4, 4]), strategy, seed, evaluations, None);
            let order = drive(&mut s, score);
            let firsts: Vec<Option<usize>> = order.iter().map(|&c| s.space.coords(c)[0]).collect();
            firsts
        };
        let firsts = run();
        assert_eq!(firsts.len(), evaluations);
        assert_eq!(firsts, run(), "{strategy}, seed {seed}: the same seed gives the same picks");
        for first in &firsts[5..] {
            picks += 1;
            hits += usize::from(*first == Some(2));
        }
    }
    hits as f64 / picks as f64
}

#[test]
fn tpe_explores_then_exploits_the_best_value() {
    let tpe = share_of_best_picks(Strategy::Tpe);
    let random = share_of_best_picks(Strategy::Random);
    // Random picks find the best value about a quarter of the time.
    assert!(random < 0.4, "random picked the best value in {random:.2} of its picks");
    assert!(tpe > 0.6, "TPE picked the best value in {tpe:.2} of its picks (random {random:.2})");
    eprintln!("best-value share after startup: tpe {tpe:.2}, random {random:.2}");
}

#[test]
fn tpe_startup_is_the_seeded_random_order() {
    let mut tpe = search(&[3, 3], Strategy::Tpe, 4);
    let mut random = search(&[3, 3], Strategy::Random, 4);
    let tpe_order = drive(&mut tpe, |_| passed(1.0));
    let random_order = drive(&mut random, |_| passed(1.0));
    assert_eq!(tpe_order[..5], random_order[..5]);
    assert_eq!(tpe_order.len(), 9);
}

#[test]
fn max_candidates_stops_every_strategy() {
    for strategy in ALL {
        let mut s = Search::over(Space::cartesian(&[3, 3]), strategy, 1, 4, None);
        let order = drive(&mut s, |c| passed(c[0].unwrap() as f64));
        assert_eq!(order.len(), 4, "{strategy}");
        let report_reason = s.not_run_reason();
        assert_eq!(s.stopped, Some(StopReason::MaxCandidates), "{strategy}");
        assert!(report_reason.contains("max_candidates (4)"), "{strategy}: {report_reason}");
    }
}

#[test]
fn max_time_stops_every_strategy() {
    for strategy in ALL {
        // One second per candidate: candidates start at 0, 1 and 2 s; none at 3 s.
        let limit = Some(Duration::from_secs(3));
        let mut s = Search::over(Space::cartesian(&[3, 3]), strategy, 1, usize::MAX, limit);
        let order = drive(&mut s, |c| passed(c[1].unwrap() as f64));
        assert_eq!(order.len(), 3, "{strategy}");
        assert_eq!(s.stopped, Some(StopReason::MaxTime), "{strategy}");
        assert!(s.not_run_reason().contains("max_time (3s)"), "{strategy}");
    }
}

#[test]
fn a_budget_larger_than_the_space_runs_everything_and_stops_for_that() {
    let mut s = Search::over(Space::cartesian(&[2]), Strategy::Random, 3, 10, None);
    assert_eq!(drive(&mut s, |_| passed(1.0)).len(), 2);
    assert_eq!(s.stopped, Some(StopReason::AllRun));
    assert_eq!(s.planned(), 2);
}

#[test]
fn the_score_is_the_first_objective_lower_is_better() {
    use crate::report::{Latency, Measurement};
    let latency = Latency {
        p50: 2.0,
        p90: 3.0,
        p99: 4.0,
        mean: 2.5,
        min: 1.0,
        warmup: 1,
        runs: 10,
        batch: 1,
    };
    let mut report = CandidateReport {
        id: "c1".into(),
        label: String::new(),
        steps: Vec::new(),
        status: Status::MissedGoals,
        reasons: Vec::new(),
        measurement: Some(Measurement {
            accuracy: Some(0.9),
            fidelity: None,
            latency_ms: Some(latency),
            size_bytes: 1000,
        }),
        build_s: 0.0,
        notes: Vec::new(),
        accuracy_cached: false,
        accuracy_aware: None,
    };
    let stat = LatencyStat::P90;
    assert_eq!(score(&report, &[Objective::Latency, Objective::Size], stat), 3.0);
    assert_eq!(score(&report, &[Objective::Size], stat), 1000.0);
    assert_eq!(score(&report, &[Objective::Accuracy], stat), -0.9);
    report.status = Status::Failed;
    assert_eq!(score(&report, &[Objective::Size], stat), f64::INFINITY);
}
