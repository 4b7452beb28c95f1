//! Rules that fold what follows a convolution into its weight and bias: a BatchNormalization
//! at inference, and the Add or Mul of a constant that is the same over each output channel.
//! Conv and ConvTranspose both; folded values are computed in f64 and stored as float32.

use ndarray::{ArrayD, IxDyn};

use super::pattern::{is_op, node_label, Rewrite, Scan, View};
use super::Rule;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::NodeProto;
use crate::ir::{self, node_attr_float, node_attr_int};

pub(crate) const CONV_BN: Rule = Rule {
    name: "conv_bn",
    summary: "folds an inference BatchNormalization into the Conv or ConvTranspose before it",
    scan: conv_bn,
};

pub(crate) const CONV_MUL: Rule = Rule {
    name: "conv_mul",
    summary: "folds a Mul by a per-output-channel constant into the weight and bias of the \
              Conv or ConvTranspose before it",
    scan: conv_mul,
};

pub(crate) const CONV_ADD: Rule = Rule {
    name: "conv_add",
    summary: "folds the Add of a per-output-channel constant into the bias of the Conv or \
              ConvTranspose before it",
    scan: conv_add,
};

/// BatchNormalization's `epsilon` when the attribute is absent.
const DEFAULT_EPSILON: f32 = 1e-5;

/// A Conv or ConvTranspose whose output channels a rule rescales or shifts.
struct Convolution<'g> {
    index: usize,
    node: &'g NodeProto,
    /// ConvTranspose: the weight is [input channels, output channels / group, kernel...].
    transposed: bool,
    group: usize,
    weight_dims: Vec<usize>,
    /// How many channels the output has (axis 1).
    channels: usize,
}

impl Convolution<'_> {
    fn label(&self) -> String {
        node_label(self.node, self.index)
    }

    fn weight_name(&self) -> &str {
        self.node.input.get(1).map_or("", String::as_str)
    }

    fn bias_name(&self) -> Option<&str> {
        self.node.input.get(2).map(String::as_str).filter(|b| !b.is_empty())
    }

    /// The rank of the weight, which is the rank of the output too.
    fn rank(&self) -> usize {
        self.weight_dims.len()
    }
}

/// The Conv or ConvTranspose that writes `value`, with its index.
fn producer_convolution<'g>(view: &View<'g>, value: &str) -> Option<(usize, &'g NodeProto)> {
    view.producer(value).filter(|(_, node)| is_op(node, "Conv") || is_op(node, "ConvTranspose"))
}

/// What a rule needs to know of the convolution at `index`, or why it cannot tell.
fn convolution<'g>(view: &View<'g>, index: usize) -> Result<Convolution<'g>, String> {
    let node = view.node(index);
    let name = node_label(node, index);
    let transposed = node.op_type() == "ConvTranspose";
    let weight = node.input.get(1).filter(|w| !w.is_empty());
    let Some(weight) = weight else {
        return Err(format!("{name} has no weight input"));
    };

    let dims = view
        .shapes
        .known_dims(weight)
        .ok_or_else(|| format!("the shape of the weight `{weight}` of {name} is unknown"))?;
    let weight_dims: Vec<usize> = dims.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
    if weight_dims.len() < 3 || weight_dims.contains(&0) {
        return Err(format!(
            "the weight `{weight}` of {name} has shape {dims:?}; a convolution's has at least \
             3 non-empty axes"
        ));
    }

    let group = node_attr_int(node, "group").unwrap_or(1);
    let group = usize::try_from(group)
        .ok()
        .filter(|&g| g >= 1)
        .ok_or_else(|| format!("{name} has group {group}; it must be at least 1"))?;
    if !weight_dims[0].is_multiple_of(group) {
        return Err(format!(
            "the weight `{weight}` of {name} has {} channels on axis 0, which its group {group} \
             does not divide",
            weight_dims[0]
        ));
    }
    let channels =
        if transposed { weight_dims[1].checked_mul(group) } else { Some(weight_dims[0]) };
    let channels =
        channels.ok_or_else(|| format!("{name} has more output channels than can be counted"))?;

    Ok(Convolution { index, node, transposed, group, weight_dims, channels })
}

/// The float32 constant `value`, or why it is none; `what` names it in the reason.
fn float_constant(view: &View<'_>, value: &str, what: &str) -> Result<ArrayD<f32>, String> {
    let Some(tensor) = view.constant(value) else {
        let why = if view.is_graph_input(value) {
            "a graph input, which can be fed"
        } else {
            "computed by the graph"
        };
        return Err(format!("{what} is not a constant: it is {why}"));
    };
    if tensor.data_type() != DataType::Float as i32 {
        let type_name = ir::data_type_name(tensor.data_type());
        return Err(format!("{what} is {type_name}; only float32 is folded"));
    }
    ir::tensor_to_f32(&tensor).map_err(|e| format!("{what} cannot be read: {e}"))
}

/// The float32 constant `value` as one value per channel: it must have shape [channels].
fn channel_vector(
    view: &View<'_>,
    value: &str,
    what: &str,
    channels: usize,
) -> Result<Vec<f64>, String> {
    let values = float_constant(view, value, what)?;
    if values.shape() != [channels] {
        return Err(format!(
            "{what} has shape {:?}, not [{channels}] like the output channels",
            values.shape()
        ));
    }
    Ok(values.iter().map(|&v| f64::from(v)).collect())
}

/// The convolution's bias, one value per output channel, or `None` when it has none.
fn bias(view: &View<'_>, conv: &Convolution<'_>) -> Result<Option<Vec<f64>>, String> {
    let Some(name) = conv.bias_name() else { return Ok(None) };
    let what = format!("the bias `{name}` of {}", conv.label());
    channel_vector(view, name, &what, conv.channels).map(Some)
}

/// The convolution's constant weight.
fn weight(view: &View<'_>, conv: &Convolution<'_>) -> Result<ArrayD<f32>, String> {
    let what = format!("the weight `{}` of {}", conv.weight_name(), conv.label());
    float_constant(view, conv.weight_name(), &what)
}

/// The weight with the values of output channel `o` multiplied by `factors[o]`.
fn scale_output_channels(
    conv: &Convolution<'_>,
    weight: &ArrayD<f32>,
    factors: &[f64],
) -> Result<ArrayD<f32>, String> {
    let dims = &conv.weight_dims;
    if weight.shape() != dims.as_slice() {
        return Err(format!(
            "the weight of {} holds shape {:?}, not the declared {dims:?}",
            conv.label(),
            weight.shape()
        ));
    }
    let kernel: usize = dims[2..].iter().product();
    let per_group_in = dims[0] / conv.group;
    let channel_of = |element: usize| -> usize {
        if conv.transposed {
            let input_channel = element / (dims[1] * kernel);
            let within_group = (element / kernel) % dims[1];
            (input_channel / per_group_in) * dims[1] + within_group
        } else {
            element / (dims[1] * kernel)
        }
    };

    let values: Vec<f32> = weight
        .iter()
        .enumerate()
        .map(|(element, &w)| (f64::from(w) * factors[channel_of(element)]) as f32)
        .collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(format!("folding into {} gives weights that are not finite", conv.label()));
    }
    ArrayD::from_shape_vec(IxDyn(weight.shape()), values)
        .map_err(|e| format!("the weight of {} cannot be rebuilt: {e}", conv.label()))
}

/// The convolution rewritten to write the output of the node at `follower` itself, in place
/// of both, with a new weight and a new bias where given.
fn folded(
    scan: &mut Scan<'_, '_>,
    conv: &Convolution<'_>,
    follower: usize,
    weight: Option<ArrayD<f32>>,
    bias: Option<Vec<f64>>,
) -> Result<Rewrite, String> {
    let output = scan.view.node(follower).output.first().cloned().unwrap_or_default();
    if output.is_empty() {
        return Err("its output is omitted".into());
    }

    let mut node = conv.node.clone();
    let mut initializers = Vec::new();
    if let Some(weight) = weight {
        let name = scan.fresh(&format!("{}_folded", conv.weight_name()));
        initializers.push(ir::tensor_from_f32(&name, &weight));
        node.input[1] = name;
    }

    if let Some(bias) = bias {
        let bias: Vec<f32> = bias.iter().map(|&b| b as f32).collect();
        if bias.iter().any(|b| !b.is_finite()) {
            return Err(format!("folding into {} gives a bias that is not finite", conv.label()));
        }
        let base = match conv.bias_name() {
            Some(name) => format!("{name}_folded"),
            None => format!("{}_bias", conv.weight_name()),
        };
        let name = scan.fresh(&base);
        let bias = ArrayD::from_shape_vec(IxDyn(&[bias.len()]), bias)
            .map_err(|e| format!("the bias of {} cannot be built: {e}", conv.label()))?;
        initializers.push(ir::tensor_from_f32(&name, &bias));
        if node.input.len() < 3 {
            node.input.resize(3, String::new());
        }
        node.input[2] = name;
    }
    node.output = vec![output];

    Ok(Rewrite {
        remove: vec![conv.index, follower],
        add: vec![node],
        initializers,
        renames: vec![],
    })
}

/// Why the convolution's output cannot disappear into the node at `follower`, if it cannot.
fn output_shared(view: &View<'_>, conv: &Convolution<'_>, follower: usize) -> Option<String> {
    let output = conv.node.output.first().map_or("", String::as_str);
    if conv.node.output.len() != 1 || !view.only_read_by(output, follower) {
        let op = view.node(follower).op_type();
        return Some(format!(
            "the output `{output}` of {} is read by other nodes too or is a graph output, so \
             the {op} cannot be folded into it",
            conv.label()
        ));
    }
    None
}

fn conv_bn(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !is_op(node, "BatchNormalization") || !scan.is_free(index) {
            continue;
        }
        let Some(input) = node.input.first() else { continue };
        let Some((conv_index, _)) = producer_convolution(view, input) else { continue };
        if !scan.is_free(conv_index) {
            continue;
        }
        match fold_batch_norm(scan, index, conv_index) {
            Ok(rewrite) => {
                scan.offer(rewrite);
            }
            Err(reason) => scan.skip(index, reason),
        }
    }
}

/// The Conv at `conv_index` with the BatchNormalization at `index` folded in:
/// factor = scale / sqrt(var + epsilon), W' = W * factor, b' = (b - mean) * factor + B.
fn fold_batch_norm(
    scan: &mut Scan<'_, '_>,
    index: usize,
    conv_index: usize,
) -> Result<Rewrite, String> {
    let view = scan.view;
    let node = view.node(index);
    inference_only(view, node)?;
    let conv = convolution(view, conv_index)?;
    if let Some(reason) = output_shared(view, &conv, index) {
        return Err(reason);
    }

    let [_, scale, offset, mean, var] = node.input.get(..5).unwrap_or_default() else {
        return Err(format!("it has {} inputs; BatchNormalization takes 5", node.input.len()));
    };
    let channels = conv.channels;
    let parameter = |value: &str, what: &str| {
        channel_vector(view, value, &format!("its {what} `{value}`"), channels)
    };
    let scale = parameter(scale, "scale")?;
    let offset = parameter(offset, "B")?;
    let mean = parameter(mean, "mean")?;
    let var = parameter(var, "var")?;
    let epsilon = f64::from(node_attr_float(node, "epsilon").unwrap_or(DEFAULT_EPSILON));
    let weight = weight(view, &conv)?;
    let bias = bias(view, &conv)?.unwrap_or_else(|| vec![0.0; channels]);

    let factors: Vec<f64> = (0..channels).map(|c| scale[c] / (var[c] + epsilon).sqrt()).collect();
    let new_bias: Vec<f64> =
        (0..channels).map(|c| (bias[c] - mean[c]) * factors[c] + offset[c]).collect();
    let new_weight = scale_output_channels(&conv, &weight, &factors)?;
    folded(scan, &conv, index, Some(new_weight), Some(new_bias))
}

/// Why the BatchNormalization `node` may compute with other than its constant statistics.
fn inference_only(view: &View<'_>, node: &NodeProto) -> Result<(), String> {
    if view.target.opset < 7 {
        return Err(format!(
            "the model's opset {} is older than 7, where BatchNormalization's `is_test` \
             chooses its mode; only opset 7 and later are folded",
            view.target.opset
        ));
    }
    if node_attr_int(node, "training_mode").unwrap_or(0) != 0 {
        return Err("it is in training mode (training_mode = 1): it normalizes with the \
                    statistics of each batch"
            .into());
    }
    if node_attr_int(node, "spatial").unwrap_or(1) == 0 {
        return Err("it has spatial = 0: its statistics differ per position".into());
    }
    let extra_read = node
        .output
        .iter()
        .skip(1)
        .filter(|o| !o.is_empty())
        .find(|o| !view.consumers(o).is_empty() || view.is_graph_output(o));
    if let Some(extra) = extra_read {
        return Err(format!("its output `{extra}` (a training statistic) is read"));
    }
    Ok(())
}

/// Where a Mul or Add reads a convolution: the index of the operand it writes, and the
/// convolution's node index.
fn convolution_operand(view: &View<'_>, node: &NodeProto) -> Option<(usize, usize)> {
    if node.input.len() != 2 {
        return None;
    }
    (0..2).find_map(|position| {
        producer_convolution(view, &node.input[position]).map(|(conv, _)| (position, conv))
    })
}

fn conv_mul(scan: &mut Scan<'_, '_>) {
    scan_channel_ops(scan, "Mul");
}

fn conv_add(scan: &mut Scan<'_, '_>) {
    scan_channel_ops(scan, "Add");
}

/// Offers a rewrite for each `op` (Mul or Add) of a convolution's output and a constant.
fn scan_channel_ops(scan: &mut Scan<'_, '_>, op: &str) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !is_op(node, op) || !scan.is_free(index) {
            continue;
        }
        let Some((position, conv_index)) = convolution_operand(view, node) else { continue };
        if !scan.is_free(conv_index) {
            continue;
        }
        match fold_channel_op(scan, index, 1 - position, conv_index) {
            Ok(rewrite) => {
                scan.offer(rewrite);
            }
            Err(reason) => scan.skip(index, reason),
        }
    }
}

/// The convolution at `conv_index` with the Mul or Add at `index` folded in; its operand at
/// `constant_position` is the per-channel constant.
fn fold_channel_op(
    scan: &mut Scan<'_, '_>,
    index: usize,
    constant_position: usize,
    conv_index: usize,
) -> Result<Rewrite, String> {
    let view = scan.view;
    let node = view.node(index);
    let conv = convolution(view, conv_index)?;
    if let Some(reason) = output_shared(view, &conv, index) {
        return Err(reason);
    }

    let operand = &node.input[constant_position];
    let constant = float_constant(view, operand, &format!("its other operand `{operand}`"))?;
    let values = per_channel(constant, conv.rank(), conv.channels)?;
    let bias = bias(view, &conv)?;

    if node.op_type() == "Add" {
        let bias = bias.unwrap_or_else(|| vec![0.0; conv.channels]);
        let new_bias: Vec<f64> = bias.iter().zip(&values).map(|(b, v)| b + v).collect();
        return folded(scan, &conv, index, None, Some(new_bias));
    }

    let weight = weight(view, &conv)?;
    let new_weight = scale_output_channels(&conv, &weight, &values)?;
    let new_bias = bias.map(|bias| bias.iter().zip(&values).map(|(b, v)| b * v).collect());
    folded(scan, &conv, index, Some(new_weight), new_bias)
}

/// The values of a constant that broadcasts against a convolution's output of `rank` without
/// changing its shape and varies at most along the channels (axis 1): one per channel.
fn per_channel(constant: ArrayD<f32>, rank: usize, channels: usize) -> Result<Vec<f64>, String> {
    let shape = constant.shape().to_vec();
    if constant.is_empty() {
        return Err(format!("its constant of shape {shape:?} is empty"));
    }
    let Some(offset) = rank.checked_sub(shape.len()) else {
        return Err(format!(
            "its constant has rank {}, more than the convolution's output ({rank}): the \
             broadcast would add axes",
            shape.len()
        ));
    };

    for (axis, &size) in shape.iter().enumerate().map(|(i, size)| (i + offset, size)) {
        if size == 1 || (axis == 1 && size == channels) {
            continue;
        }
        if axis == 1 {
            return Err(format!(
                "its constant of shape {shape:?} has {size} values along the channels; the \
                 convolution has {channels} output channels"
            ));
        }
        return Err(format!(
            "its constant of shape {shape:?} varies along axis {axis} of the convolution's \
             output, not only along the channels (axis 1)"
        ));
    }

    let values: Vec<f64> = constant.iter().map(|&v| f64::from(v)).collect();
    Ok(if values.len() == 1 { vec![values[0]; channels] } else { values })
}
