//! How a recipe's passes become candidates: chains, cartesian products, `one_of` branches,
//! shared prefixes in the DAG, search dimensions and coordinates, configurations refused up
//! front (an error when written as is, skipped and counted when a search makes them), and
//! parameters that do not apply left out of searched configurations.

use std::path::Path;

use pipeline::plan::{self, Plan, PlanNode};
use pipeline::recipe;

/// A plan for a recipe whose `passes` (and optionally `search`) are given as YAML lines.
fn plan_for(passes: &str) -> Result<Plan, plan::PlanError> {
    let text = format!(
        "name: t\nmodel: model.onnx\nmetrics: {{latency: {{}}}}\nobjective: [latency]\n{passes}"
    );
    let recipe = recipe::parse(&text, Path::new("dir/recipe.yaml")).expect("the recipe loads");
    plan::build(&recipe)
}

fn labels(plan: &Plan) -> Vec<String> {
    plan.candidates().iter().map(|c| format!("{} {}", c.id, c.label())).collect()
}

#[test]
fn a_chain_is_one_candidate_with_its_steps_in_order() {
    let plan = plan_for(
        "passes:\n  - quantize_dynamic: {per_channel: false}\n  \
         - quantize_dynamic: {reduce_range: true}\n",
    )
    .expect("plans");
    assert_eq!(
        labels(&plan),
        ["c1 quantize_dynamic(per_channel=false) -> quantize_dynamic(reduce_range=true)"]
    );
    let steps = &plan.candidates()[0].steps;
    assert_eq!(steps[1].config, serde_json::json!({"reduce_range": true}));
    assert_eq!(steps[1].origin.field, "passes[1].quantize_dynamic");
    assert_eq!((steps[1].origin.line, steps[1].origin.column), (7, 5));
}

#[test]
fn lists_expand_as_a_cartesian_product_first_parameter_slowest() {
    let plan = plan_for(
        "passes:\n  - quantize_dynamic: \
         {per_channel: [false, true], reduce_range: [false, true]}\n",
    )
    .expect("plans");
    assert_eq!(plan.space_size(), 4);
    assert_eq!(
        labels(&plan),
        [
            "c1 quantize_dynamic(per_channel=false, reduce_range=false)",
            "c2 quantize_dynamic(per_channel=false, reduce_range=true)",
            "c3 quantize_dynamic(per_channel=true, reduce_range=false)",
            "c4 quantize_dynamic(per_channel=true, reduce_range=true)",
        ]
    );
}

#[test]
fn a_list_valued_parameter_takes_the_list_as_one_value() {
    let plan =
        plan_for("passes:\n  - quantize_dynamic: {op_types: [MatMul, Gemm]}\n").expect("plans");
    assert_eq!(labels(&plan), ["c1 quantize_dynamic(op_types=[\"MatMul\",\"Gemm\"])"]);

    let plan = plan_for("passes:\n  - quantize_dynamic: {op_types: [[MatMul], [Gemm, Conv]]}\n")
        .expect("plans");
    assert_eq!(plan.candidates().len(), 2);
}

#[test]
fn one_of_makes_branches_and_a_list_in_a_branch_is_a_chain() {
    let plan = plan_for(
        "passes:\n  - one_of:\n      - quantize_dynamic: {per_channel: true}\n      - \
         [quantize_dynamic: {}, quantize_dynamic: {reduce_range: [false, true]}]\n",
    )
    .expect("plans");
    assert_eq!(
        labels(&plan),
        [
            "c1 quantize_dynamic(per_channel=true)",
            "c2 quantize_dynamic() -> quantize_dynamic(reduce_range=false)",
            "c3 quantize_dynamic() -> quantize_dynamic(reduce_range=true)",
        ]
    );
    let origins: Vec<&str> =
        plan.candidates()[1].steps.iter().map(|s| s.origin.field.as_str()).collect();
    assert_eq!(
        origins,
        ["passes[0].one_of[1][0].quantize_dynamic", "passes[0].one_of[1][1].quantize_dynamic"]
    );
}

#[test]
fn equal_prefixes_share_one_node() {
    let plan = plan_for(
        "passes:\n  - quantize_dynamic: {per_channel: [false, true]}\n  - one_of:\n      - \
         quantize_dynamic: {reduce_range: true}\n      \
         - quantize_dynamic: {reduce_range: false}\n      - quantize_dynamic: {}\n",
    )
    .expect("plans");
    assert_eq!(plan.candidates().len(), 6);

    // The source, the two first steps, and one node per candidate: 9, not 1 + 6 * 2 = 13.
    assert_eq!(plan.graph().node_count(), 9);
    let first_steps: Vec<_> = plan
        .candidates()
        .iter()
        .map(|c| plan.graph().neighbors_directed(c.node, petgraph::Incoming).next())
        .collect();
    assert!(first_steps[0..3].iter().all(|n| *n == first_steps[0]));
    assert!(first_steps[3..6].iter().all(|n| *n == first_steps[3]));
    assert_ne!(first_steps[0], first_steps[3]);
    assert_eq!(plan.children(plan.root()).len(), 2);
    assert!(matches!(plan.graph()[plan.root()], PlanNode::Source));
}

#[test]
fn render_shows_the_tree_and_the_count() {
    let plan = plan_for(
        "passes:\n  - quantize_dynamic: {per_channel: [false, true]}\n  - one_of:\n      - \
         quantize_dynamic: {reduce_range: true}\n      - quantize_dynamic: {}\n",
    )
    .expect("plans");
    assert_eq!(
        plan.render(),
        "model.onnx\n\
         ├── quantize_dynamic(per_channel=false)\n\
         │   ├── quantize_dynamic(reduce_range=true)  [c1]\n\
         │   └── quantize_dynamic()  [c2]\n\
         └── quantize_dynamic(per_channel=true)\n    \
             ├── quantize_dynamic(reduce_range=true)  [c3]\n    \
             └── quantize_dynamic()  [c4]\n\
         4 candidates\n\
         search: exhaustive, max_candidates 64, no time limit\n"
    );
}

#[test]
fn max_candidates_is_a_budget_the_plan_states() {
    let plan = plan_for(
        "passes:\n  - quantize_dynamic: {per_channel: [false, true], reduce_range: [false, true]}\n\
         search: {strategy: random, seed: 9, max_candidates: 3, max_time: 90s}\n",
    )
    .expect("plans");
    assert_eq!(plan.candidates().len(), 4);
    assert_eq!(plan.space_size(), 4);
    let rendered = plan.render();
    assert!(
        rendered.ends_with(
            "4 candidates\nsearch: random (seed 9), max_candidates 3 (1 candidate will not run), \
             max_time 1m 30s\n"
        ),
        "{rendered}"
    );
}

#[test]
fn each_list_and_one_of_is_a_dimension_and_candidates_record_their_values() {
    let plan = plan_for(
        "passes:\n  - quantize_dynamic: {per_channel: [false, true]}\n  - one_of:\n      - \
         quantize_dynamic: {reduce_range: [true, false]}\n      - quantize_dynamic: {}\n",
    )
    .expect("plans");
    type Row<'a> = (&'a str, usize, Option<(usize, usize)>);
    let dims: Vec<Row> =
        plan.dimensions().iter().map(|d| (d.label.as_str(), d.size, d.parent)).collect();
    assert_eq!(
        dims,
        [
            ("passes[0].quantize_dynamic.per_channel", 2, None),
            ("passes[1].one_of", 2, None),
            ("passes[1].one_of[0].quantize_dynamic.reduce_range", 2, Some((1, 0))),
        ]
    );
    let coords: Vec<_> = plan.candidates().iter().map(|c| c.coords.clone()).collect();
    assert_eq!(
        coords,
        [
            vec![Some(0), Some(0), Some(0)],
            vec![Some(0), Some(0), Some(1)],
            vec![Some(0), Some(1), None],
            vec![Some(1), Some(0), Some(0)],
            vec![Some(1), Some(0), Some(1)],
            vec![Some(1), Some(1), None],
        ]
    );
    // A dimension in a branch not taken does not matter.
    assert_eq!(plan.lookup(&[1, 1, 0]), Some(5));
    assert_eq!(plan.lookup(&[1, 1, 1]), Some(5));
    assert_eq!(plan.lookup(&[0, 0, 1]), Some(1));
}

#[test]
fn repeated_paths_are_merged_and_counted() {
    let plan = plan_for("passes:\n  - one_of: [quantize_dynamic: {}, quantize_dynamic: {}]\n")
        .expect("plans");
    assert_eq!(labels(&plan), ["c1 quantize_dynamic()"]);
    assert_eq!(plan.duplicates(), 1);
    assert_eq!(
        plan.render(),
        "model.onnx\n└── quantize_dynamic()  [c1]\n1 candidate in a search space of 2\n\
         1 repeated path (the same steps as an earlier candidate) merged\n\
         search: exhaustive, max_candidates 64, no time limit\n"
    );
}

#[test]
fn a_configuration_the_pass_refuses_is_reported_before_anything_runs() {
    let error = plan_for(
        "passes:\n  - one_of:\n      - quantize_dynamic: {}\n      \
         - quantize_dynamic: {op_types: [Relu]}\n",
    )
    .expect_err("Relu cannot be quantized by this pass");
    let message = error.to_string();
    assert!(
        message.starts_with(
            "dir/recipe.yaml:8:9: passes[0].one_of[1].quantize_dynamic: invalid configuration \
             for pass `quantize_dynamic`"
        ),
        "{message}"
    );
    assert!(message.contains("Relu"), "{message}");
    assert!(message.contains("(configuration {\"op_types\":[\"Relu\"]})"), "{message}");
}

#[test]
fn a_combination_a_search_makes_and_the_pass_refuses_is_skipped_and_counted() {
    let plan = plan_for(
        "passes:\n  - quantize_weights: {bits: [4, 8], block_size: [32, 64], \
         more_bits: [false, true]}\n",
    )
    .expect("plans");
    let made = labels(&plan);
    assert_eq!(made.len(), 6, "{made:?}");
    assert!(made.iter().all(|l| !l.contains("bits=8, block_size=32, more_bits=true")));
    assert!(made.iter().any(|l| l.contains("bits=8, block_size=64, more_bits=false")));
    assert_eq!(plan.skipped_invalid(), 2);
    let groups = plan.invalid_reasons();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].count, 2);
    assert!(groups[0].reason.contains("`more_bits`"), "{}", groups[0].reason);
    assert_eq!(groups[0].example, "quantize_weights(bits=8, block_size=32, more_bits=true)");
    let rendered = plan.render();
    assert!(
        rendered.contains("6 candidates in a search space of 8\n2 skipped as invalid:\n  2 x "),
        "{rendered}"
    );
    // The refused path maps to no candidate.
    assert_eq!(plan.lookup(&[1, 0, 1]), None);
    assert_eq!(plan.lookup(&[0, 1, 1]), Some(3));

    // Refusals for different reasons are grouped apart, in the order first met: more_bits
    // with 8 bits, then embeddings at 8 bits in MatMulNBits (checked before more_bits).
    let plan = plan_for(
        "passes:\n  - quantize_weights: {bits: [4, 8], embeddings: [false, true], \
         more_bits: [false, true], format: matmul_nbits}\n",
    )
    .expect("plans");
    assert_eq!(plan.candidates().len(), 5, "{:?}", labels(&plan));
    let counts: Vec<usize> = plan.invalid_reasons().iter().map(|g| g.count).collect();
    assert_eq!(counts, [1, 2], "{:?}", plan.invalid_reasons());
}

#[test]
fn a_searched_value_the_pass_refuses_in_every_combination_is_an_error_at_its_place() {
    // 16 bits is never valid: an error at the value, as `bits: 16` written alone is.
    let error = plan_for("passes:\n  - quantize_weights: {bits: [4, 16]}\n")
        .expect_err("16 bits is refused");
    assert!(matches!(error, plan::PlanError::InvalidValue { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("dir/recipe.yaml:6:5: passes[0].quantize_weights.bits[1]: "),
        "{message}"
    );
    assert!(message.contains("`bits` is 16"), "{message}");
    assert!(message.contains("hint:"), "{message}");

    // 8 bits with a fixed `more_bits: true` is refused with every block size.
    let error = plan_for(
        "passes:\n  - quantize_weights: {bits: [4, 8], block_size: [32, 64], more_bits: true}\n",
    )
    .expect_err("8 bits never works with more_bits");
    let message = error.to_string();
    assert!(message.contains("passes[0].quantize_weights.bits[1]: "), "{message}");
    assert!(message.contains("`more_bits`"), "{message}");

    // A value never valid in a `one_of` branch is found there too.
    let error = plan_for(
        "passes:\n  - one_of:\n    - quantize_dynamic: {}\n    \
         - quantize_weights: {accuracy_level: [4, 7]}\n",
    )
    .expect_err("accuracy level 7 does not exist");
    let message = error.to_string();
    assert!(
        message.contains("passes[0].one_of[1].quantize_weights.accuracy_level[1]: "),
        "{message}"
    );

    // A branch none of whose configurations is valid is refused at the step.
    let error = plan_for(
        "passes:\n  - one_of:\n    - quantize_dynamic: {}\n    \
         - quantize_weights: {bits: 16, block_size: [32, 64]}\n",
    )
    .expect_err("16 bits is refused");
    assert!(matches!(error, plan::PlanError::InvalidConfig { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("passes[0].one_of[1].quantize_weights: "), "{message}");
    assert!(message.contains("`bits` is 16"), "{message}");
}

#[test]
fn a_refused_configuration_written_as_is_stays_an_error() {
    let error = plan_for("passes:\n  - quantize_weights: {bits: 8, more_bits: true}\n")
        .expect_err("more_bits needs 4 bits");
    let message = error.to_string();
    assert!(message.starts_with("dir/recipe.yaml:6:5: passes[0].quantize_weights:"), "{message}");
    assert!(message.contains("`more_bits`"), "{message}");
}

#[test]
fn a_space_with_no_valid_candidate_is_an_error_that_gives_the_reasons() {
    let error = plan_for("passes:\n  - quantize_dynamic: {op_types: [[Relu], [Sigmoid]]}\n")
        .expect_err("neither op type can be quantized");
    assert!(matches!(error, plan::PlanError::NoValidCandidate { skipped: 2, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.starts_with("dir/recipe.yaml: no valid candidate"), "{message}");
    assert!(message.contains("Relu") && message.contains("Sigmoid"), "{message}");
}

#[test]
fn parameters_that_do_not_apply_are_left_out_and_collapse() {
    // `percentile` only applies to the percentile method: the two minmax paths are one.
    let plan = plan_for(
        "passes:\n  - quantize_static: {calibration: [minmax, percentile], \
         percentile: [99.9, 99.99]}\ndata: {calibration: {path: c.npz}}\n",
    )
    .expect("plans");
    assert_eq!(
        labels(&plan),
        [
            "c1 quantize_static(calibration=minmax)",
            "c2 quantize_static(calibration=percentile, percentile=99.9)",
            "c3 quantize_static(calibration=percentile, percentile=99.99)",
        ]
    );
    assert_eq!(plan.duplicates(), 1);
    assert_eq!(plan.lookup(&[0, 1]), Some(0));

    // Without `calibration`, its default (minmax) decides; dropping `moving_average` for
    // entropy also drops `averaging_constant`, which only weighs a moving average.
    let plan = plan_for(
        "passes:\n  - quantize_static: {calibration: [minmax, entropy], moving_average: true, \
         averaging_constant: [0.01, 0.1], num_quantized_bins: 64}\n\
         data: {calibration: {path: c.npz}}\n",
    )
    .expect("plans");
    assert_eq!(
        labels(&plan),
        [
            "c1 quantize_static(averaging_constant=0.01, calibration=minmax, moving_average=true)",
            "c2 quantize_static(averaging_constant=0.1, calibration=minmax, moving_average=true)",
            "c3 quantize_static(calibration=entropy, num_quantized_bins=64)",
        ]
    );

    // `accuracy_level` is dropped for qdq in a search instead of refused.
    let plan = plan_for(
        "passes:\n  - quantize_weights: {format: [qdq, matmul_nbits], accuracy_level: 4}\n",
    )
    .expect("plans");
    assert_eq!(
        labels(&plan),
        [
            "c1 quantize_weights(format=qdq)",
            "c2 quantize_weights(accuracy_level=4, format=matmul_nbits)",
        ]
    );
    assert_eq!(plan.skipped_invalid(), 0);

    // Written as is, nothing is dropped and the pass decides.
    let error = plan_for("passes:\n  - quantize_weights: {format: qdq, accuracy_level: 4}\n")
        .expect_err("accuracy_level is refused with qdq");
    assert!(error.to_string().contains("`accuracy_level`"), "{error}");
}

#[test]
fn the_digits_example_plans_dynamic_and_static_candidates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits/recipe.yaml");
    let recipe = recipe::load(&path).expect("the example loads");
    let plan = plan::build(&recipe).expect("the example plans");
    let mut expected = vec![
        "c1 quantize_dynamic(per_channel=false)".to_string(),
        "c2 quantize_dynamic(per_channel=true)".to_string(),
    ];
    for method in ["minmax", "entropy", "percentile"] {
        for per_channel in [false, true] {
            let id = expected.len() + 1;
            expected.push(format!(
                "c{id} quantize_static(calibration={method}, per_channel={per_channel})"
            ));
        }
    }
    assert_eq!(labels(&plan), expected);
}
