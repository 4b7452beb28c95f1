//! Acceptance test of `quantize_dynamic` on Gather, Transpose, LSTM, and `com.microsoft`
//! Attention and EmbedLayerNormalization against ONNX Runtime's own `quantize_dynamic`, and
//! the rules for what stays in float.
//!
//! Each model is built here, quantized by our pass and checked by
//! `quantize_dynamic_support::check_model_against_ort`: every quantized weight and table, its
//! scales and zero points, bit for bit against ORT's tool, and the outputs of our model, ORT's
//! quantized model and the float model compared on the same random inputs.

mod quantize_dynamic_support;

use pipeline_passes::ir::proto::{
    attribute_proto, AttributeProto, GraphProto, ModelProto, OperatorSetIdProto,
};
use pipeline_passes::ir::{self, float_value_info};
use pipeline_passes::quantize::dynamic::QuantizeDynamicConfig;
use quantize_dynamic_support::{
    check_model_against_ort, count_op, model, ms_node, node_named, op_types, report_weights,
    run_pass, value, Rng, INT32, INT64,
};

/// `ids [2,3] -> g: Gather(emb [10,8]) -> e`, then `e` is read by a quantized MatMul `mm`, by
/// a Transpose `t` whose output a Relu reads, by two float nodes and as a graph output.
fn embedding_model() -> ModelProto {
    let mut rng = Rng::new(11);
    let emb = rng.array(&[10, 8], |r| r.normal());
    let w = rng.array(&[8, 6], |r| 0.5 * r.normal());

    let mut transpose = ir::make_node("Transpose", &["e"], &["et"], "t");
    transpose.attribute.push(ir::attr_ints("perm", &[0, 2, 1]));
    let graph = GraphProto {
        name: Some("embedding".into()),
        node: vec![
            ir::make_node("Gather", &["emb", "ids"], &["e"], "g"),
            ir::make_node("MatMul", &["e", "W"], &["m"], "mm"),
            transpose,
            ir::make_node("Relu", &["et"], &["r"], "relu"),
            ir::make_node("Sigmoid", &["e"], &["s"], "sigmoid"),
            ir::make_node("Tanh", &["e"], &["h"], "tanh"),
        ],
        initializer: vec![ir::tensor_from_f32("emb", &emb), ir::tensor_from_f32("W", &w)],
        input: vec![value("ids", INT64, &[2, 3])],
        output: vec![
            float_value_info("m", &[2, 3, 6]),
            float_value_info("r", &[2, 8, 3]),
            float_value_info("s", &[2, 3, 8]),
            float_value_info("h", &[2, 3, 8]),
            float_value_info("e", &[2, 3, 8]),
        ],
        ..Default::default()
    };
    model(graph, 13)
}

#[test]
fn gather_table_matches_ort_bit_for_bit() {
    for per_channel in [false, true] {
        let config = QuantizeDynamicConfig { per_channel, ..Default::default() };
        let (ours, report) = check_model_against_ort(embedding_model(), config);

        let weights = report_weights(&report, "ort_weights");
        let table = &weights["emb"];
        assert_eq!((table.op.as_str(), table.dtype.as_str()), ("Gather", "uint8"));
        assert_eq!(table.zero_point_dtype, "uint8");
        assert!(table.scale_shape.is_empty(), "the table has one scale");
        assert_eq!(weights["W"].scale_shape.len(), usize::from(per_channel));

        // The MatMul reads the 8-bit rows as they are; `e` and `et` are dequantized once each.
        assert_eq!(count_op(&ours, "DynamicQuantizeLinear"), 0);
        assert_eq!(count_op(&ours, "DequantizeLinear"), 2);
        let matmul = node_named(&ours, "mm_quant").expect("the MatMul is quantized");
        assert_eq!(matmul.input[0], "e_quantized");
        assert_eq!(node_named(&ours, "t").expect("the Transpose stays").input[0], "e_quantized");
    }
}

#[test]
fn gather_table_keeps_8_bits_under_reduce_range() {
    let config = QuantizeDynamicConfig { reduce_range: true, ..Default::default() };
    let (_, report) = check_model_against_ort(embedding_model(), config);
    let weights = report_weights(&report, "ort_weights");
    assert_eq!(weights["emb"].values.iter().max(), Some(&255));
    assert!(weights["W"].values.iter().all(|q| (-64..=64).contains(q)));
}

#[test]
fn gather_alone_in_op_types_dequantizes_for_every_reader() {
    let config = QuantizeDynamicConfig { op_types: vec!["Gather".into()], ..Default::default() };
    let (ours, report) = check_model_against_ort(embedding_model(), config);
    let weights = report_weights(&report, "ort_weights");
    assert_eq!(weights.keys().collect::<Vec<_>>(), ["emb"]);
    assert_eq!(count_op(&ours, "DequantizeLinear"), 1);
    assert_eq!(count_op(&ours, "MatMul"), 1);
}

/// Gather that stays alone: on a computed tensor, on an INT64 table, or excluded.
#[test]
fn gathers_without_a_float_table_are_left_alone() {
    let shape = ir::tensor_from_i64("dims", &ndarray::arr1(&[4i64, 5, 6]).into_dyn());
    let graph = GraphProto {
        name: Some("gathers".into()),
        node: vec![
            ir::make_node("Shape", &["x"], &["x_shape"], "shape"),
            ir::make_node("Gather", &["x_shape", "i"], &["picked"], "computed"),
            ir::make_node("Gather", &["dims", "i"], &["dim"], "int_table"),
            ir::make_node("Gather", &["emb", "i"], &["row"], "excluded"),
            ir::make_node("MatMul", &["x", "W"], &["y"], "mm"),
        ],
        initializer: vec![
            shape,
            ir::tensor_from_f32("emb", &Rng::new(3).array(&[3, 4], |r| r.normal())),
            ir::tensor_from_f32("W", &Rng::new(4).array(&[4, 2], |r| r.normal())),
        ],
        input: vec![float_value_info("x", &[3, 4]), value("i", INT64, &[])],
        output: vec![
            value("picked", INT64, &[]),
            value("dim", INT64, &[]),
            float_value_info("row", &[4]),
            float_value_info("y", &[3, 2]),
        ],
        ..Default::default()
    };
    let config =
        QuantizeDynamicConfig { nodes_to_exclude: vec!["excluded".into()], ..Default::default() };
    let ours = run_pass(model(graph, 13), config).expect("the MatMul quantizes");
    for name in ["computed", "int_table", "excluded"] {
        let gather = node_named(&ours, name).expect("the Gather is kept");
        assert!(!gather.input[0].ends_with("_quantized"), "`{name}` was quantized");
    }
    assert_eq!(count_op(&ours, "DequantizeLinear"), 0);
    assert!(ir::initializer(ours.graph.as_ref().expect("a graph"), "emb").is_some());
}

/// `ids [3,2] -> Gather(emb [10,5]) -> x [3,2,5] -> bidirectional LSTM (with bias)`, and a
/// forward LSTM without bias on the float input `z`.
fn lstm_model() -> ModelProto {
    let mut rng = Rng::new(21);
    let emb = rng.array(&[10, 5], |r| r.normal());
    let w = rng.array(&[2, 16, 5], |r| 0.4 * r.normal());
    let r = rng.array(&[2, 16, 4], |r| 0.4 * r.normal());
    let b = rng.array(&[2, 32], |r| 0.2 * r.normal());
    let w2 = rng.array(&[1, 16, 5], |r| 0.4 * r.normal());
    let r2 = rng.array(&[1, 16, 4], |r| 0.4 * r.normal());

    let mut lstm = ir::make_node("LSTM", &["x", "W", "R", "B"], &["y", "y_h", "y_c"], "lstm");
    lstm.attribute.push(ir::attr_int("hidden_size", 4));
    lstm.attribute.push(ir::attr_string("direction", "bidirectional"));
    let mut forward = ir::make_node("LSTM", &["z", "W2", "R2"], &["y2"], "forward");
    forward.attribute.push(ir::attr_int("hidden_size", 4));

    let graph = GraphProto {
        name: Some("lstm".into()),
        node: vec![ir::make_node("Gather", &["emb", "ids"], &["x"], "g"), lstm, forward],
        initializer: vec![
            ir::tensor_from_f32("emb", &emb),
            ir::tensor_from_f32("W", &w),
            ir::tensor_from_f32("R", &r),
            ir::tensor_from_f32("B", &b),
            ir::tensor_from_f32("W2", &w2),
            ir::tensor_from_f32("R2", &r2),
        ],
        input: vec![value("ids", INT64, &[3, 2]), float_value_info("z", &[3, 2, 5])],
        output: vec![
            float_value_info("y", &[3, 2, 2, 4]),
            float_value_info("y_h", &[2, 2, 4]),
            float_value_info("y_c", &[2, 2, 4]),
            float_value_info("y2", &[3, 1, 2, 4]),
        ],
        ..Default::default()
    };
    model(graph, 14)
}

#[test]
fn lstm_matches_ort_bit_for_bit() {
    for (per_channel, reduce_range) in [(false, false), (true, false), (true, true)] {
        let config = QuantizeDynamicConfig { per_channel, reduce_range, ..Default::default() };
        let (ours, report) = check_model_against_ort(lstm_model(), config);

        let weights = report_weights(&report, "ort_weights");
        assert_eq!(weights.keys().collect::<Vec<_>>(), ["R", "R2", "W", "W2", "emb"]);
        assert_eq!(weights["W"].shape, [2, 5, 16], "W is stored [directions, inputs, 4 x hidden]");
        let scales = if per_channel { vec![2, 16] } else { vec![2] };
        assert_eq!(weights["W"].scale_shape, scales);
        assert_eq!(weights["R"].zero_point_shape, scales);
        if reduce_range {
            assert!(weights["R"].values.iter().all(|q| (-64..=64).contains(q)));
        }

        assert_eq!(count_op(&ours, "DynamicQuantizeLSTM"), 2);
        assert_eq!(count_op(&ours, "DequantizeLinear"), 1, "the LSTM reads `x` in float");
        let ms = ours.opset_import.iter().find(|o| o.domain() == "com.microsoft");
        assert_eq!(ms.map(|o| o.version()), Some(1));
    }
}

#[test]
fn lstm_with_layout_1_and_gru_stay_float() {
    let mut rng = Rng::new(5);
    let mut batch_first = ir::make_node("LSTM", &["x", "W", "R"], &["y"], "batch_first");
    batch_first.attribute.push(ir::attr_int("hidden_size", 4));
    batch_first.attribute.push(ir::attr_int("layout", 1));
    let mut gru = ir::make_node("GRU", &["x", "GW", "GR"], &["g"], "gru");
    gru.attribute.push(ir::attr_int("hidden_size", 4));
    let graph = GraphProto {
        name: Some("recurrent".into()),
        node: vec![batch_first, gru, ir::make_node("MatMul", &["x", "M"], &["m"], "mm")],
        initializer: vec![
            ir::tensor_from_f32("W", &rng.array(&[1, 16, 5], |r| r.normal())),
            ir::tensor_from_f32("R", &rng.array(&[1, 16, 4], |r| r.normal())),
            ir::tensor_from_f32("GW", &rng.array(&[1, 12, 5], |r| r.normal())),
            ir::tensor_from_f32("GR", &rng.array(&[1, 12, 4], |r| r.normal())),
            ir::tensor_from_f32("M", &rng.array(&[5, 3], |r| r.normal())),
        ],
        input: vec![float_value_info("x", &[2, 3, 5])],
        output: vec![
            float_value_info("y", &[2, 3, 1, 4]),
            float_value_info("g", &[3, 1, 2, 4]),
            float_value_info("m", &[2, 3, 3]),
        ],
        ..Default::default()
    };
    let ours = run_pass(model(graph, 14), QuantizeDynamicConfig::default()).expect("quantizes");
    assert!(node_named(&ours, "batch_first").is_some(), "the batch-first LSTM was rewritten");
    assert!(node_named(&ours, "gru").is_some(), "the GRU was rewritten");
    assert_eq!(count_op(&ours, "MatMulInteger"), 1);
    assert!(ours.opset_import.iter().all(|o| o.domain() != "com.microsoft"));
}

/// `x [2,4,8] -> att: Attention(W [8,24], B)`, and `ids -> Gather(emb) -> e -> causal
/// Attention att2`, which reads the 8-bit rows as they are.
fn attention_model() -> ModelProto {
    let mut rng = Rng::new(31);
    let w = rng.array(&[8, 24], |r| 0.3 * r.normal());
    let b = rng.array(&[24], |r| 0.1 * r.normal());
    let emb = rng.array(&[10, 8], |r| r.normal());
    let w2 = rng.array(&[8, 24], |r| 0.3 * r.normal());
    let b2 = rng.array(&[24], |r| 0.1 * r.normal());

    let mut att = ms_node("Attention", &["x", "W", "B"], &["y"], "att");
    att.attribute.push(ir::attr_int("num_heads", 2));
    let mut causal = ms_node("Attention", &["e", "W2", "B2"], &["y2"], "att2");
    causal.attribute.push(ir::attr_int("num_heads", 4));
    causal.attribute.push(ir::attr_int("unidirectional", 1));

    let graph = GraphProto {
        name: Some("attention".into()),
        node: vec![att, ir::make_node("Gather", &["emb", "ids"], &["e"], "g"), causal],
        initializer: vec![
            ir::tensor_from_f32("W", &w),
            ir::tensor_from_f32("B", &b),
            ir::tensor_from_f32("emb", &emb),
            ir::tensor_from_f32("W2", &w2),
            ir::tensor_from_f32("B2", &b2),
        ],
        input: vec![float_value_info("x", &[2, 4, 8]), value("ids", INT64, &[2, 4])],
        output: vec![float_value_info("y", &[2, 4, 8]), float_value_info("y2", &[2, 4, 8])],
        ..Default::default()
    };
    let mut model = model(graph, 14);
    model
        .opset_import
        .push(OperatorSetIdProto { domain: Some("com.microsoft".into()), version: Some(1) });
    model
}

#[test]
fn attention_matches_ort_bit_for_bit() {
    for (per_channel, reduce_range) in [(false, false), (true, true)] {
        let config = QuantizeDynamicConfig { per_channel, reduce_range, ..Default::default() };
        let (ours, report) = check_model_against_ort(attention_model(), config);

        let weights = report_weights(&report, "ort_weights");
        assert_eq!(weights.keys().collect::<Vec<_>>(), ["W", "W2", "emb"]);
        assert_eq!(weights["W"].op, "QAttention");
        let scales = if per_channel { vec![24] } else { vec![] };
        assert_eq!(weights["W2"].scale_shape, scales);

        assert_eq!(count_op(&ours, "QAttention"), 2);
        assert_eq!(
            count_op(&ours, "DynamicQuantizeLinear"),
            1,
            "only `x` is quantized at run time"
        );
        let causal = node_named(&ours, "att2_quant").expect("att2 is quantized");
        assert_eq!(causal.input[0], "e_quantized");
        assert_eq!(ours.opset_import.iter().filter(|o| o.domain() == "com.microsoft").count(), 1);
    }
}

#[test]
fn attention_that_qattention_cannot_express_stays_float() {
    let mut rng = Rng::new(9);
    let mut unequal = ms_node("Attention", &["x", "W", "B"], &["y1"], "unequal");
    unequal.attribute.push(ir::attr_int("num_heads", 2));
    unequal.attribute.push(ir::attr_ints("qkv_hidden_sizes", &[8, 8, 8]));
    let mut biased = ms_node("Attention", &["x", "W", "B", "", "", "bias"], &["y2"], "biased");
    biased.attribute.push(ir::attr_int("num_heads", 2));
    let mut no_bias = ms_node("Attention", &["x", "W"], &["y3"], "no_bias");
    no_bias.attribute.push(ir::attr_int("num_heads", 2));
    let mut onnx_domain = ms_node("Attention", &["x", "W", "B"], &["y4"], "onnx_domain");
    onnx_domain.domain = None;

    let graph = GraphProto {
        name: Some("attention".into()),
        node: vec![unequal, biased, no_bias, onnx_domain],
        initializer: vec![
            ir::tensor_from_f32("W", &rng.array(&[8, 24], |r| r.normal())),
            ir::tensor_from_f32("B", &rng.array(&[24], |r| r.normal())),
            ir::tensor_from_f32("bias", &rng.array(&[1, 2, 4, 4], |r| r.normal())),
        ],
        input: vec![float_value_info("x", &[1, 4, 8])],
        output: ["y1", "y2", "y3", "y4"].iter().map(|n| float_value_info(n, &[1, 4, 8])).collect(),
        ..Default::default()
    };
    let err = run_pass(model(graph, 14), QuantizeDynamicConfig::default()).unwrap_err();
    assert!(err.contains("no node was quantized"), "{err}");
    for reason in ["`qkv_hidden_sizes`", "no `attention_bias` input", "needs one"] {
        assert!(err.contains(reason), "the error lacks {reason:?}: {err}");
    }
}

/// The start of a BERT encoder: `EmbedLayerNormalization(ids, segments)` gives the embeddings
/// and the mask index, which an Attention reads, followed by a MatMul.
fn bert_model() -> ModelProto {
    let mut rng = Rng::new(41);
    let mut table = |name: &str, shape: &[usize]| {
        ir::tensor_from_f32(name, &rng.array(shape, |r| 0.5 * r.normal()))
    };
    let initializer = vec![
        table("word", &[12, 8]),
        table("position", &[16, 8]),
        table("segment", &[2, 8]),
        table("gamma", &[8]),
        table("beta", &[8]),
        table("W", &[8, 24]),
        table("B", &[24]),
        table("O", &[8, 8]),
    ];

    let inputs = ["ids", "segments", "word", "position", "segment", "gamma", "beta"];
    let mut embed = ms_node("EmbedLayerNormalization", &inputs, &["e", "mask"], "embed");
    embed.attribute.push(ir::attr_float("epsilon", 1e-5));
    let mut attention = ms_node("Attention", &["e", "W", "B", "mask"], &["a"], "att");
    attention.attribute.push(ir::attr_int("num_heads", 2));

    let graph = GraphProto {
        name: Some("bert".into()),
        node: vec![embed, attention, ir::make_node("MatMul", &["a", "O"], &["y"], "out")],
        initializer,
        input: vec![value("ids", INT32, &[2, 4]), value("segments", INT32, &[2, 4])],
        output: vec![float_value_info("y", &[2, 4, 8])],
        ..Default::default()
    };
    let mut model = model(graph, 14);
    model
        .opset_import
        .push(OperatorSetIdProto { domain: Some("com.microsoft".into()), version: Some(1) });
    model
}

#[test]
fn embed_layer_normalization_matches_ort_bit_for_bit() {
    for per_channel in [false, true] {
        let config = QuantizeDynamicConfig { per_channel, ..Default::default() };
        let (ours, report) = check_model_against_ort(bert_model(), config);

        let weights = report_weights(&report, "ort_weights");
        let names = ["O", "W", "beta", "gamma", "position", "segment", "word"];
        assert_eq!(weights.keys().collect::<Vec<_>>(), names);
        for name in ["word", "position", "segment", "gamma", "beta"] {
            assert_eq!(weights[name].op, "QEmbedLayerNormalization");
            assert_eq!(
                (weights[name].dtype.as_str(), weights[name].scale_shape.len()),
                ("uint8", 0)
            );
        }
        assert_eq!(count_op(&ours, "QEmbedLayerNormalization"), 1);
        assert_eq!(count_op(&ours, "QAttention"), 1);
    }
}

#[test]
fn embed_layer_normalization_that_cannot_be_expressed_stays_float() {
    let model = bert_model();
    let mut with_sum = model.clone();
    let graph = with_sum.graph.as_mut().expect("a graph");
    graph.node[0].output.push("sum".into());
    graph.output.push(float_value_info("sum", &[2, 4, 8]));
    let ours = run_pass(with_sum, QuantizeDynamicConfig::default()).expect("the rest quantizes");
    assert!(node_named(&ours, "embed").is_some(), "the node with `embedding_sum` was rewritten");

    let mut typed_mask = model;
    let graph = typed_mask.graph.as_mut().expect("a graph");
    graph.node[0].attribute.push(ir::attr_int("mask_index_type", 0));
    let ours = run_pass(typed_mask, QuantizeDynamicConfig::default()).expect("the rest quantizes");
    assert!(node_named(&ours, "embed").is_some(), "the node with `mask_index_type` was rewritten");
    assert_eq!(count_op(&ours, "QAttention"), 1);
}

#[test]
fn a_subgraph_reading_a_gather_output_gets_it_in_float() {
    let branch = |name: &str| GraphProto {
        name: Some(name.into()),
        node: vec![ir::make_node("Identity", &["e"], &[&format!("{name}_out")], name)],
        output: vec![float_value_info(&format!("{name}_out"), &[3, 4])],
        ..Default::default()
    };
    let mut branches = ir::make_node("If", &["flag"], &["picked"], "if");
    for (attribute, name) in [("then_branch", "then"), ("else_branch", "else")] {
        branches.attribute.push(AttributeProto {
            name: Some(attribute.into()),
            r#type: Some(attribute_proto::AttributeType::Graph as i32),
            g: Some(branch(name)),
            ..Default::default()
        });
    }
    let graph = GraphProto {
        name: Some("branches".into()),
        node: vec![ir::make_node("Gather", &["emb", "ids"], &["e"], "g"), branches],
        initializer: vec![ir::tensor_from_f32("emb", &Rng::new(8).array(&[5, 4], |r| r.normal()))],
        input: vec![value("ids", INT64, &[3]), value("flag", 9, &[])],
        output: vec![float_value_info("picked", &[3, 4])],
        ..Default::default()
    };

    let ours = run_pass(model(graph, 13), QuantizeDynamicConfig::default()).expect("quantizes");
    let nodes = &ours.graph.as_ref().expect("a graph").node;
    let dequantize = nodes.iter().position(|n| n.op_type() == "DequantizeLinear");
    let branch = nodes.iter().position(|n| n.op_type() == "If");
    assert!(dequantize.is_some() && dequantize < branch, "{:?}", op_types(&ours));
    assert_eq!(nodes[dequantize.unwrap_or_default()].output, ["e"]);
}
