//! How a recipe's passes become candidates: chains, cartesian products, `one_of` branches,
//! shared prefixes in the DAG, the `max_candidates` cap, and configurations refused up front.

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
         4 candidates\n"
    );
}

#[test]
fn max_candidates_keeps_the_first_and_says_how_many_were_dropped() {
    let plan = plan_for(
        "passes:\n  - quantize_dynamic: {per_channel: [false, true], reduce_range: [false, true]}\n\
         search: {max_candidates: 3}\n",
    )
    .expect("plans");
    assert_eq!(plan.candidates().len(), 3);
    assert_eq!((plan.space_size(), plan.dropped()), (4, 1));
    assert_eq!(labels(&plan)[2], "c3 quantize_dynamic(per_channel=true, reduce_range=false)");
    let rendered = plan.render();
    assert!(
        rendered.ends_with(
            "3 candidates of 4 in the search space; 1 dropped by search.max_candidates = 3\n"
        ),
        "{rendered}"
    );
}

#[test]
fn repeated_paths_are_merged_and_counted() {
    let plan = plan_for("passes:\n  - one_of: [quantize_dynamic: {}, quantize_dynamic: {}]\n")
        .expect("plans");
    assert_eq!(labels(&plan), ["c1 quantize_dynamic()"]);
    assert_eq!(plan.duplicates(), 1);
    assert_eq!(
        plan.render(),
        "model.onnx\n└── quantize_dynamic()  [c1]\n1 candidate\n\
         1 repeated path (the same steps as an earlier candidate) merged\n"
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

    // Also when the refused configuration is beyond the candidate cap.
    let error = plan_for(
        "passes:\n  - quantize_dynamic: {op_types: [[MatMul], [Relu]]}\n\
         search: {max_candidates: 1}\n",
    )
    .expect_err("the second configuration is refused");
    assert!(error.to_string().contains("Relu"), "{error}");
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
