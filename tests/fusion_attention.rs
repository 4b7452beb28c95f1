//! The `attention` rule on a BERT-like encoder built as PyTorch exports it: both layers fuse
//! into `com.microsoft.Attention` and ONNX Runtime computes the same outputs before and after
//! (ids within the vocabulary, masks with padding); the variants exporters make fuse too, and
//! the near-misses are left alone with the reason.

mod fusion_support;

use fusion_support::encoder::{
    bert_like_encoder, encoder_inputs, EncoderOptions, KeyTranspose, Probabilities, Scale, Targets,
};
use fusion_support::*;
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::{ModelProto, NodeProto};
use pipeline_passes::ir::{node_attr_float, node_attr_int};
use pipeline_passes::pass::{PassContext, PassError, Runtime};

const RULE: &[&str] = &["attention"];

/// Fuses the encoder of `options` with the attention rule alone, checks that every layer
/// became one Attention and that ONNX Runtime computes the same on padded inputs.
fn fuse_encoder(options: &EncoderOptions) -> (ModelProto, ModelProto) {
    let model = bert_like_encoder(options);
    let fused = fuse(&model, RULE).unwrap_or_else(|e| panic!("attention did not fuse: {e}"));

    let attention = histogram(&fused).get("com.microsoft:Attention").copied();
    assert_eq!(attention, Some(options.layers), "{:?}", histogram(&fused));
    assert_eq!(histogram(&fused).get("Softmax"), None);

    let inputs = encoder_inputs(options, 3, 5);
    assert_same_outputs(&model, &fused, &inputs, MAX_RELATIVE_DIFFERENCE);
    (model, fused)
}

fn attention_nodes(model: &ModelProto) -> Vec<&NodeProto> {
    let graph = model.graph.as_ref().unwrap();
    graph.node.iter().filter(|n| n.op_type() == "Attention").collect()
}

#[test]
fn both_layers_of_the_encoder_fuse_into_attention() {
    let options = EncoderOptions::default();
    let (model, fused) = fuse_encoder(&options);

    // What is left: the embeddings, the dense layers, the LayerNorm and GELU chains, and one
    // Cast of the mask to int32. Every Reshape, Transpose, Softmax, the scores' scaling, the
    // mask term and the Shape computations of the Reshape targets are gone.
    assert_eq!(
        histogram(&fused),
        ops(&[
            ("Add", 24),
            ("Cast", 1),
            ("Constant", 22),
            ("Div", 7),
            ("Erf", 2),
            ("Gather", 4),
            ("Identity", 1),
            ("MatMul", 6),
            ("Mul", 9),
            ("Pow", 5),
            ("ReduceMean", 10),
            ("Shape", 1),
            ("Slice", 2),
            ("Sqrt", 5),
            ("Sub", 5),
            ("Unsqueeze", 1),
            ("com.microsoft:Attention", 2),
        ]),
        "before: {:?}",
        histogram(&model)
    );

    let nodes = attention_nodes(&fused);
    let cast = first_of(&fused, "Cast");
    assert_eq!(cast.input, ["attention_mask"]);
    assert_eq!(node_attr_int(cast, "to"), Some(DataType::Int32 as i64));
    for node in &nodes {
        assert_eq!(node.domain(), "com.microsoft");
        assert_eq!(node_attr_int(node, "num_heads"), Some(4));
        assert_eq!(node.input.len(), 4);
        assert_eq!(node.input[3], cast.output[0], "both layers read one int32 mask");
        assert_eq!(node_attr_float(node, "scale"), None, "1/sqrt(head_size) is the default");
        assert_eq!(node_attr_float(node, "mask_filter_value"), None, "-10000 is the default");
    }
    assert_eq!(nodes[0].input[0], "emb_ln_out");
    assert!(fused.opset_import.iter().any(|o| o.domain() == "com.microsoft"));
}

#[test]
fn an_encoder_without_a_mask_fuses_without_mask_index() {
    let options = EncoderOptions { mask: false, ..EncoderOptions::default() };
    let (_, fused) = fuse_encoder(&options);

    for node in attention_nodes(&fused) {
        assert_eq!(node.input.len(), 3, "{node:?}");
    }
    assert_eq!(histogram(&fused).get("Cast"), None);
}

#[test]
fn a_filler_other_than_ten_thousand_is_written_as_mask_filter_value() {
    // Newer exports fill with the lowest float.
    let options = EncoderOptions { filler: f32::MIN, ..EncoderOptions::default() };
    let (_, fused) = fuse_encoder(&options);
    for node in attention_nodes(&fused) {
        assert_eq!(node_attr_float(node, "mask_filter_value"), Some(f32::MIN));
    }

    // A filler small enough that masked positions still weigh: the outputs agree only
    // because ONNX Runtime adds exactly this value where the mask is 0.
    let options = EncoderOptions { filler: -3.0, ..EncoderOptions::default() };
    let (_, fused) = fuse_encoder(&options);
    for node in attention_nodes(&fused) {
        assert_eq!(node_attr_float(node, "mask_filter_value"), Some(-3.0));
    }
}

#[test]
fn scaling_by_mul_or_on_q_and_k_apart_fuses_and_a_custom_scale_is_kept() {
    // SDPA exports multiply Q and K by the square root of the scale each.
    let options = EncoderOptions { scale: Scale::QAndK(0.5), ..EncoderOptions::default() };
    let (_, fused) = fuse_encoder(&options);
    for node in attention_nodes(&fused) {
        assert_eq!(node_attr_float(node, "scale"), None, "0.5 = 1/sqrt(4), the default");
    }

    let options = EncoderOptions { scale: Scale::Mul(0.3), ..EncoderOptions::default() };
    let (_, fused) = fuse_encoder(&options);
    for node in attention_nodes(&fused) {
        assert_eq!(node_attr_float(node, "scale"), Some(0.3));
    }
}

#[test]
fn k_transposed_later_and_constant_reshape_targets_fuse() {
    let options = EncoderOptions { key: KeyTranspose::Later, ..EncoderOptions::default() };
    fuse_encoder(&options);

    let options = EncoderOptions {
        targets: Targets::Constant,
        layers: 1,
        hidden: 24,
        heads: 3,
        ..EncoderOptions::default()
    };
    let (_, fused) = fuse_encoder(&options);
    assert_eq!(node_attr_int(attention_nodes(&fused)[0], "num_heads"), Some(3));
}

#[test]
fn cross_attention_fuses_into_multi_head_attention() {
    let options = EncoderOptions { cross_attention: true, ..EncoderOptions::default() };
    let model = bert_like_encoder(&options);

    let fused = fuse(&model, RULE).unwrap_or_else(|e| panic!("attention did not fuse: {e}"));

    let counts = histogram(&fused);
    assert_eq!(counts.get("com.microsoft:MultiHeadAttention"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("com.microsoft:Attention"), None);
    // The Q, K and V MatMuls stay; the scores' and the context's go.
    assert_eq!(counts.get("MatMul"), Some(&(2 * 6)));
    let graph = fused.graph.as_ref().unwrap();
    for node in graph.node.iter().filter(|n| n.op_type() == "MultiHeadAttention") {
        assert_eq!(node.input.len(), 5, "query, key, value, bias, key_padding_mask");
        assert_eq!(node_attr_int(node, "num_heads"), Some(4));
    }
    let inputs = encoder_inputs(&options, 3, 4);
    assert_same_outputs(&model, &fused, &inputs, MAX_RELATIVE_DIFFERENCE);
}

#[test]
fn a_scale_per_head_or_fed_at_run_time_is_left_alone() {
    let options = EncoderOptions { scale: Scale::PerHead, layers: 1, ..EncoderOptions::default() };
    assert_left_alone(&bert_like_encoder(&options), RULE, "tensor of 4 values");

    let options = EncoderOptions { scale: Scale::Input, layers: 1, ..EncoderOptions::default() };
    assert_left_alone(&bert_like_encoder(&options), RULE, "not a constant");
}

#[test]
fn k_transposed_with_a_wrong_permutation_is_left_alone() {
    // With 4 heads of 4 the model still runs: [0, 3, 2, 1] swaps heads and head dimensions.
    let options = EncoderOptions {
        key: KeyTranspose::Perm(vec![0, 3, 2, 1]),
        layers: 1,
        ..EncoderOptions::default()
    };
    let model = bert_like_encoder(&options);
    assert_same_outputs(&model, &model, &encoder_inputs(&options, 2, 3), 0.0);

    assert_left_alone(&model, RULE, "K is transposed by [0, 3, 2, 1]");
}

#[test]
fn attention_probabilities_read_elsewhere_are_left_alone() {
    let options =
        EncoderOptions { probabilities: Probabilities::Output, layers: 1, ..Default::default() };
    assert_left_alone(&bert_like_encoder(&options), RULE, "`l0_probs` is a graph output");

    let options =
        EncoderOptions { probabilities: Probabilities::Reduced, layers: 1, ..Default::default() };
    assert_left_alone(
        &bert_like_encoder(&options),
        RULE,
        "`l0_probs` is also read by `ReduceMax_l0_probs_max` (ReduceMax)",
    );
}

#[test]
fn heads_that_cannot_be_told_are_left_alone() {
    let options =
        EncoderOptions { targets: Targets::Input, layers: 1, ..EncoderOptions::default() };
    assert_left_alone(&bert_like_encoder(&options), RULE, "the number of heads cannot be told");
}

#[test]
fn the_standard_runtime_is_left_alone() {
    let model = bert_like_encoder(&EncoderOptions::default());
    let context = PassContext { runtime: Runtime::Standard, ..PassContext::default() };

    let result = run_pass_with("fuse", serde_json::json!({ "rules": RULE }), &model, context);

    match result {
        Err(PassError::Unchanged { reason, .. }) => {
            assert!(reason.contains("not ONNX Runtime"), "{reason}")
        }
        other => panic!("expected the model left alone, got {other:?}"),
    }
}

#[test]
fn every_rule_together_fuses_the_whole_encoder() {
    let options = EncoderOptions::default();
    let model = bert_like_encoder(&options);

    let fused = fuse(&model, &[]).unwrap_or_else(|e| panic!("fuse did nothing: {e}"));

    // Per layer: one Attention, the attention output's dense MatMul and the FFN's two, a
    // BiasGelu, and two SkipLayerNormalizations with their bias Adds taken in; before them,
    // the embeddings' Gathers, and the last Add of the embeddings with their LayerNorm chain
    // as a fifth SkipLayerNormalization (the position embeddings as a (1, S, H) skip).
    let histogram = histogram(&fused);
    eprintln!("{:?}\n->\n{histogram:?}", fusion_support::histogram(&model));
    for (op, count) in [
        ("com.microsoft:Attention", 2),
        ("com.microsoft:BiasGelu", 2),
        ("com.microsoft:SkipLayerNormalization", 5),
        ("MatMul", 6),
    ] {
        assert_eq!(histogram.get(op), Some(&count), "{op} in {histogram:?}");
    }
    let gone = ["Softmax", "Transpose", "Reshape", "Erf", "ReduceMean", "LayerNormalization"];
    for gone in gone {
        assert_eq!(histogram.get(gone), None, "{gone} left in {histogram:?}");
    }
    let inputs = encoder_inputs(&options, 3, 5);
    assert_same_outputs(&model, &fused, &inputs, MAX_RELATIVE_DIFFERENCE);
}
