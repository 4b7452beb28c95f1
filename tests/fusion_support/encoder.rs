//! A small BERT-like encoder built node by node the way PyTorch exports BERT: embeddings
//! (word + position + token type Gathers, LayerNorm as a ReduceMean/Sub/Pow/ReduceMean/Add/
//! Sqrt/Div/Mul/Add chain), then per layer self-attention (Q/K/V MatMul + Add, Reshapes whose
//! targets are computed with Shape/Gather/Unsqueeze/Concat, Transposes, scaled scores, the
//! mask term `(1 - mask) * filler`, Softmax, context), output dense + residual + LayerNorm,
//! and a feed-forward block with the erf GELU chain, residual + LayerNorm. `input_ids` and
//! `attention_mask` are int64 [batch, sequence] with symbolic sizes.
//!
//! [`EncoderOptions`] bends one part of the attention block at a time, so the tests of a rule
//! can build the near-misses of its pattern from the same model; `cross_attention` makes K
//! and V come from a second input `memory` [batch, memory, hidden], masked by `memory_mask`.

use ndarray::{arr0, ArrayD, IxDyn};
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::ModelProto;

use super::{attr_int, attr_ints, Builder, Rng, D};
use pipeline_passes::ir;

/// How the attention scores are scaled.
#[derive(Clone, Debug, PartialEq)]
pub enum Scale {
    /// `scores / value`, as BERT's export does with sqrt(head_size).
    Div(f32),
    /// `scores * value`.
    Mul(f32),
    /// Q and K each multiplied by `sqrt(value)` before their MatMul, as SDPA exports do.
    QAndK(f32),
    /// `scores * t` for a [1, heads, 1, 1] tensor `t`: one factor per head.
    PerHead,
    /// `scores / s` for a scalar graph input `s`.
    Input,
}

/// How K reaches the scores' MatMul.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyTranspose {
    /// One Transpose [0, 2, 3, 1] after the Reshape.
    Direct,
    /// [0, 2, 1, 3] like Q, then [0, 1, 3, 2] before the MatMul.
    Later,
    /// One Transpose with this permutation.
    Perm(Vec<i64>),
}

/// How the Reshapes of the attention block get their target shapes.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// Computed at run time from Shape/Gather/Unsqueeze/Concat, as PyTorch exports them.
    Computed,
    /// Constants with 0 for the batch and sequence sizes.
    Constant,
    /// The heads Reshapes read their target from an int64 graph input `heads_shape`.
    Input,
}

/// Who else reads the first layer's attention probabilities.
#[derive(Clone, Debug, PartialEq)]
pub enum Probabilities {
    /// Only the context MatMul.
    Internal,
    /// They are a graph output too.
    Output,
    /// A ReduceMax reads them too, for a graph output `l0_probs_max`.
    Reduced,
}

/// The shape of the encoder and the variations of its attention blocks.
#[derive(Clone, Debug)]
pub struct EncoderOptions {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub opset: i64,
    /// Whether the model has an `attention_mask` input and adds the mask term.
    pub mask: bool,
    /// The value masked positions get: -10000 in older exports, f32::MIN in newer ones.
    pub filler: f32,
    pub scale: Scale,
    pub key: KeyTranspose,
    pub targets: Targets,
    /// Who else reads the first layer's attention probabilities.
    pub probabilities: Probabilities,
    /// K and V are projected from the input `memory`, and `memory_mask` masks them.
    pub cross_attention: bool,
    pub seed: u64,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            layers: 2,
            hidden: 16,
            heads: 4,
            intermediate: 32,
            vocab: 30,
            max_positions: 16,
            opset: 13,
            mask: true,
            filler: -10000.0,
            scale: Scale::Div(2.0),
            key: KeyTranspose::Direct,
            targets: Targets::Computed,
            probabilities: Probabilities::Internal,
            cross_attention: false,
            seed: 7,
        }
    }
}

impl EncoderOptions {
    pub fn head_size(&self) -> usize {
        self.hidden / self.heads
    }

    /// The input the mask term is made from.
    pub fn mask_input(&self) -> &'static str {
        if self.cross_attention {
            "memory_mask"
        } else {
            "attention_mask"
        }
    }
}

/// The encoder's model; its output is `last_hidden_state` [batch, sequence, hidden].
pub fn bert_like_encoder(options: &EncoderOptions) -> ModelProto {
    let mut e = Encoder { b: Builder::new(options.opset), rng: Rng::new(options.seed), o: options };
    e.b = e.b.clone().typed_input(
        "input_ids",
        DataType::Int64,
        vec![D::S("batch"), D::S("sequence")],
    );
    if options.cross_attention {
        let shape = vec![D::S("batch"), D::S("memory"), D::N(options.hidden as i64)];
        e.b = e.b.clone().input("memory", shape);
    }
    if options.mask {
        let length = if options.cross_attention { "memory" } else { "sequence" };
        let shape = vec![D::S("batch"), D::S(length)];
        e.b = e.b.clone().typed_input(options.mask_input(), DataType::Int64, shape);
    }
    if options.scale == Scale::Input {
        e.b = e.b.clone().input("scale", vec![]);
    }
    if options.targets == Targets::Input {
        e.b = e.b.clone().typed_input("heads_shape", DataType::Int64, vec![D::N(4)]);
    }

    let mut hidden = e.embeddings();
    if options.mask {
        e.mask_term();
    }
    for layer in 0..options.layers {
        hidden = e.layer(layer, &hidden);
    }
    e.op("Identity", &[&hidden], "last_hidden_state");
    let mut b = e.b.output("last_hidden_state");
    match options.probabilities {
        Probabilities::Internal => {}
        Probabilities::Output => b = b.output("l0_probs"),
        Probabilities::Reduced => {
            let axes = vec![attr_ints("axes", &[-1])];
            b = b.node_with("ReduceMax", &["l0_probs"], &["l0_probs_max"], axes);
            b = b.output("l0_probs_max");
        }
    }
    b.build()
}

/// Feeds for the encoder: ids within the vocabulary and, when it has one, a mask of ones
/// with trailing zeros in every row but the first (right padding); for cross-attention a
/// memory two longer than the sequence, which the mask covers instead.
pub fn encoder_inputs(
    options: &EncoderOptions,
    batch: usize,
    sequence: usize,
) -> Vec<(&'static str, pipeline::runtime::Tensor)> {
    use pipeline::runtime::Tensor;
    let mut rng = Rng::new(options.seed + 100);
    let ids = ArrayD::from_shape_simple_fn(IxDyn(&[batch, sequence]), || {
        (rng.next_u64() % options.vocab as u64) as i64
    });
    let mut feeds = vec![("input_ids", Tensor::I64(ids))];
    let mut masked = sequence;
    if options.cross_attention {
        masked = sequence + 2;
        let memory = rng.normal_array(&[batch, masked, options.hidden], 1.0);
        feeds.push(("memory", Tensor::F32(memory)));
    }
    if options.mask {
        let mask = ArrayD::from_shape_fn(IxDyn(&[batch, masked]), |index| {
            let (row, column) = (index[0], index[1]);
            let length = masked.saturating_sub(row % masked.max(1)).max(1);
            i64::from(column < length)
        });
        feeds.push((options.mask_input(), Tensor::I64(mask)));
    }
    feeds
}

struct Encoder<'o> {
    b: Builder,
    rng: Rng,
    o: &'o EncoderOptions,
}

impl Encoder<'_> {
    fn op(&mut self, op: &str, inputs: &[&str], output: &str) {
        self.b = self.b.clone().node(op, inputs, &[output]);
    }

    fn op_with(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<ir::proto::AttributeProto>,
    ) {
        self.b = self.b.clone().node_with(op, inputs, &[output], attrs);
    }

    fn scalar(&mut self, name: &str, value: f32) -> String {
        let tensor = ir::tensor_from_f32(name, &arr0(value).into_dyn());
        self.b = self.b.clone().constant(name, tensor);
        name.to_string()
    }

    fn ints(&mut self, name: &str, values: &[i64]) -> String {
        let array = ArrayD::from_shape_vec(IxDyn(&[values.len()]), values.to_vec()).unwrap();
        self.b = self.b.clone().constant(name, ir::tensor_from_i64(name, &array));
        name.to_string()
    }

    fn int_scalar(&mut self, name: &str, value: i64) -> String {
        self.b = self.b.clone().constant(name, ir::tensor_from_i64(name, &arr0(value).into_dyn()));
        name.to_string()
    }

    fn weight(&mut self, name: &str, shape: &[usize], scale: f64) -> String {
        let values = self.rng.normal_array(shape, scale);
        self.b = self.b.clone().init(name, values);
        name.to_string()
    }

    fn embeddings(&mut self) -> String {
        let (hidden, max) = (self.o.hidden, self.o.max_positions as i64);

        // The sequence length, as `input_ids.shape[1]`, slices the position and token type
        // buffers.
        self.op("Shape", &["input_ids"], "ids_shape");
        let one = self.int_scalar("emb_one", 1);
        self.op_with("Gather", &["ids_shape", &one], "seq_len", vec![attr_int("axis", 0)]);
        let zero_axis = self.ints("emb_axis0", &[0]);
        self.op("Unsqueeze", &["seq_len", &zero_axis], "seq_len_1d");
        let positions: Vec<i64> = (0..max).collect();
        let positions = ArrayD::from_shape_vec(IxDyn(&[1, max as usize]), positions).unwrap();
        self.b = self.b.clone().constant("position_ids_all", ir::tensor_from_i64("p", &positions));
        let types = ArrayD::from_elem(IxDyn(&[1, max as usize]), 0i64);
        self.b = self.b.clone().constant("token_type_all", ir::tensor_from_i64("t", &types));
        let starts = self.ints("emb_starts", &[0]);
        let axes = self.ints("emb_axes", &[1]);
        self.op("Slice", &["position_ids_all", &starts, "seq_len_1d", &axes], "position_ids");
        self.op("Slice", &["token_type_all", &starts, "seq_len_1d", &axes], "token_type_ids");

        let words = self.weight("word_embeddings", &[self.o.vocab, hidden], 0.5);
        let positions = self.weight("position_embeddings", &[self.o.max_positions, hidden], 0.5);
        let types = self.weight("token_type_embeddings", &[2, hidden], 0.5);
        self.op("Gather", &[&words, "input_ids"], "word_emb");
        self.op("Gather", &[&types, "token_type_ids"], "type_emb");
        self.op("Add", &["word_emb", "type_emb"], "emb_sum");
        self.op("Gather", &[&positions, "position_ids"], "pos_emb");
        self.op("Add", &["emb_sum", "pos_emb"], "emb_sum2");
        self.layer_norm("emb_ln", "emb_sum2")
    }

    /// `(1 - float(mask[:, None, None, :])) * filler`, computed once for every layer.
    fn mask_term(&mut self) {
        let one = self.ints("mask_axis1", &[1]);
        self.op("Unsqueeze", &[self.o.mask_input(), &one], "mask_u1");
        let two = self.ints("mask_axis2", &[2]);
        self.op("Unsqueeze", &["mask_u1", &two], "mask_u2");
        self.op_with("Cast", &["mask_u2"], "mask_float", vec![attr_int("to", 1)]);
        let one = self.scalar("mask_one", 1.0);
        self.op("Sub", &[&one, "mask_float"], "mask_inverted");
        let filler = self.scalar("mask_filler", self.o.filler);
        self.op("Mul", &["mask_inverted", &filler], "mask_term");
    }

    /// LayerNorm over the last axis, as the ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add
    /// chain PyTorch exports before opset 17.
    fn layer_norm(&mut self, p: &str, x: &str) -> String {
        let axes = || vec![attr_ints("axes", &[-1])];
        self.op_with("ReduceMean", &[x], &format!("{p}_mean"), axes());
        self.op("Sub", &[x, &format!("{p}_mean")], &format!("{p}_centered"));
        let two = self.scalar(&format!("{p}_two"), 2.0);
        self.op("Pow", &[&format!("{p}_centered"), &two], &format!("{p}_squared"));
        self.op_with("ReduceMean", &[&format!("{p}_squared")], &format!("{p}_var"), axes());
        let eps = self.scalar(&format!("{p}_eps"), 1e-12);
        self.op("Add", &[&format!("{p}_var"), &eps], &format!("{p}_var_eps"));
        self.op("Sqrt", &[&format!("{p}_var_eps")], &format!("{p}_std"));
        self.op("Div", &[&format!("{p}_centered"), &format!("{p}_std")], &format!("{p}_normed"));
        let mut gamma = self.rng.normal_array(&[self.o.hidden], 0.1);
        gamma.mapv_inplace(|g| 1.0 + g);
        self.b = self.b.clone().init(&format!("{p}_gamma"), gamma);
        let beta = self.weight(&format!("{p}_beta"), &[self.o.hidden], 0.1);
        self.op("Mul", &[&format!("{p}_normed"), &format!("{p}_gamma")], &format!("{p}_scaled"));
        self.op("Add", &[&format!("{p}_scaled"), &beta], &format!("{p}_out"));
        format!("{p}_out")
    }

    /// `MatMul(x, W) + b` with W [in, out] (bias first, as PyTorch writes the Add).
    fn dense(&mut self, p: &str, x: &str, inputs: usize, outputs: usize) -> String {
        let w = self.weight(&format!("{p}_weight"), &[inputs, outputs], 0.3);
        let bias = self.weight(&format!("{p}_bias"), &[outputs], 0.1);
        self.op("MatMul", &[x, &w], &format!("{p}_mm"));
        self.op("Add", &[&bias, &format!("{p}_mm")], &format!("{p}_out"));
        format!("{p}_out")
    }

    /// A Reshape target: `[v.shape[0], v.shape[1], rest...]` as the export computes it, or
    /// `[0, 0, rest...]`.
    fn target(&mut self, p: &str, v: &str, rest: &[i64], from_input: bool) -> String {
        if from_input {
            return "heads_shape".into();
        }
        if self.o.targets != Targets::Computed {
            let values: Vec<i64> = [0, 0].iter().chain(rest).copied().collect();
            return self.ints(&format!("{p}_target"), &values);
        }
        let mut parts = Vec::new();
        for position in 0..2 {
            let shape = format!("{p}_shape{position}");
            self.op("Shape", &[v], &shape);
            let index = self.int_scalar(&format!("{p}_index{position}"), position as i64);
            let dim = format!("{p}_dim{position}");
            self.op_with("Gather", &[&shape, &index], &dim, vec![attr_int("axis", 0)]);
            let axis = self.ints(&format!("{p}_axis{position}"), &[0]);
            let part = format!("{p}_part{position}");
            self.op("Unsqueeze", &[&dim, &axis], &part);
            parts.push(part);
        }
        for (i, value) in rest.iter().enumerate() {
            parts.push(self.ints(&format!("{p}_rest{i}"), &[*value]));
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let target = format!("{p}_target");
        self.op_with("Concat", &refs, &target, vec![attr_int("axis", 0)]);
        target
    }

    /// Splits a projection into heads: Reshape to [B, S, heads, head_size], then `perms`.
    fn heads(&mut self, p: &str, projected: &str, perms: &[Vec<i64>]) -> String {
        let (heads, size) = (self.o.heads as i64, self.o.head_size() as i64);
        let from_input = self.o.targets == Targets::Input;
        let target = self.target(p, projected, &[heads, size], from_input);
        let mut value = format!("{p}_split");
        self.op("Reshape", &[projected, &target], &value);
        for (i, perm) in perms.iter().enumerate() {
            let next = format!("{p}_t{i}");
            self.op_with("Transpose", &[&value], &next, vec![attr_ints("perm", perm)]);
            value = next;
        }
        value
    }

    fn attention(&mut self, p: &str, x: &str) -> String {
        let h = self.o.hidden;
        let source = if self.o.cross_attention { "memory" } else { x };
        let q = self.dense(&format!("{p}_q"), x, h, h);
        let k = self.dense(&format!("{p}_k"), source, h, h);
        let v = self.dense(&format!("{p}_v"), source, h, h);

        let key_perms = match &self.o.key {
            KeyTranspose::Direct => vec![vec![0, 2, 3, 1]],
            KeyTranspose::Later => vec![vec![0, 2, 1, 3], vec![0, 1, 3, 2]],
            KeyTranspose::Perm(perm) => vec![perm.clone()],
        };
        let mut q = self.heads(&format!("{p}_qh"), &q, &[vec![0, 2, 1, 3]]);
        let mut k = self.heads(&format!("{p}_kh"), &k, &key_perms);
        let v = self.heads(&format!("{p}_vh"), &v, &[vec![0, 2, 1, 3]]);

        if let Scale::QAndK(value) = self.o.scale {
            let root = self.scalar(&format!("{p}_qk_root"), value.sqrt());
            self.op("Mul", &[&q, &root], &format!("{p}_q_scaled"));
            self.op("Mul", &[&k, &root], &format!("{p}_k_scaled"));
            q = format!("{p}_q_scaled");
            k = format!("{p}_k_scaled");
        }
        let raw = format!("{p}_scores");
        self.op("MatMul", &[&q, &k], &raw);
        let mut scaled = format!("{p}_scaled");
        match self.o.scale.clone() {
            Scale::Div(value) => {
                let c = self.scalar(&format!("{p}_root"), value);
                self.op("Div", &[&raw, &c], &scaled);
            }
            Scale::Mul(value) => {
                let c = self.scalar(&format!("{p}_factor"), value);
                self.op("Mul", &[&raw, &c], &scaled);
            }
            Scale::QAndK(_) => scaled = raw,
            Scale::PerHead => {
                let factors = self.rng.uniform_array(&[1, self.o.heads, 1, 1], 0.2, 0.6);
                self.b = self.b.clone().init(&format!("{p}_head_factors"), factors);
                self.op("Mul", &[&raw, &format!("{p}_head_factors")], &scaled);
            }
            Scale::Input => self.op("Div", &[&raw, "scale"], &scaled),
        }
        let scores = if self.o.mask {
            self.op("Add", &[&scaled, "mask_term"], &format!("{p}_masked"));
            format!("{p}_masked")
        } else {
            scaled
        };
        let probs = format!("{p}_probs");
        self.op_with("Softmax", &[&scores], &probs, vec![attr_int("axis", -1)]);
        let context = format!("{p}_context");
        self.op("MatMul", &[&probs, &v], &context);
        let merged = format!("{p}_merged");
        self.op_with("Transpose", &[&context], &merged, vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let target = self.target(&format!("{p}_out"), &merged, &[h as i64], false);
        let output = format!("{p}_attention");
        self.op("Reshape", &[&merged, &target], &output);
        output
    }

    fn layer(&mut self, layer: usize, x: &str) -> String {
        let p = format!("l{layer}");
        let (h, i) = (self.o.hidden, self.o.intermediate);
        let attended = self.attention(&p, x);
        let projected = self.dense(&format!("{p}_attn_out"), &attended, h, h);
        self.op("Add", &[&projected, x], &format!("{p}_residual1"));
        let normed = self.layer_norm(&format!("{p}_ln1"), &format!("{p}_residual1"));

        let up = self.dense(&format!("{p}_ffn_up"), &normed, h, i);
        let root2 = self.scalar(&format!("{p}_gelu_root2"), std::f32::consts::SQRT_2);
        self.op("Div", &[&up, &root2], &format!("{p}_gelu_div"));
        self.op("Erf", &[&format!("{p}_gelu_div")], &format!("{p}_gelu_erf"));
        let one = self.scalar(&format!("{p}_gelu_one"), 1.0);
        self.op("Add", &[&format!("{p}_gelu_erf"), &one], &format!("{p}_gelu_add"));
        self.op("Mul", &[&up, &format!("{p}_gelu_add")], &format!("{p}_gelu_mul"));
        let half = self.scalar(&format!("{p}_gelu_half"), 0.5);
        self.op("Mul", &[&format!("{p}_gelu_mul"), &half], &format!("{p}_gelu"));

        let down = self.dense(&format!("{p}_ffn_down"), &format!("{p}_gelu"), i, h);
        self.op("Add", &[&down, &normed], &format!("{p}_residual2"));
        self.layer_norm(&format!("{p}_ln2"), &format!("{p}_residual2"))
    }
}
