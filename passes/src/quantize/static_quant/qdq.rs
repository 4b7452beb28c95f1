//! Writes a [`Plan`] out in the QDQ format, as ONNX Runtime's QDQ quantizer does: each
//! quantized activation gets a QuantizeLinear/DequantizeLinear pair that every reader then
//! reads through; each quantized initializer is stored quantized and read through a
//! DequantizeLinear; each bias is stored as int32 with scale `input scale x weight scale` and
//! zero point 0, dequantized under its own name. New values are named as ORT names them
//! (`x_QuantizeLinear_Output`, `w_quantized`, `b_quantized_scale` ...), with a numeric
//! suffix where such a name is taken already.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::{debug, warn};

use super::super::calibrate::TensorRange;
use super::plan::{BiasMark, Mark, Plan, Role, Settings};
use super::values::{
    activation_params, float_tensor, initializer_params, int32_tensor, integer_tensor, quantize,
    quantize_bias, widen_weight_scales_for_bias, TensorParams,
};
use crate::ir::proto::{GraphProto, NodeProto, TensorProto};
use crate::ir::{self, NameGenerator};

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// Activations given a QuantizeLinear/DequantizeLinear pair with their own parameters.
    pub activations: usize,
    /// Activations given a pair with the parameters of the input they were computed from.
    pub shared: usize,
    /// Initializers stored quantized.
    pub initializers: usize,
    /// Biases stored as int32.
    pub biases: usize,
    /// Relu and Clip nodes folded into their input's quantization.
    pub folded: usize,
}

/// The names and scales of a quantized value.
#[derive(Clone, Debug)]
struct Quantized {
    scale: String,
    zero_point: String,
    scales: Vec<f32>,
}

struct Writer<'a> {
    domain: Option<&'a str>,
    names: NameGenerator,
    graph_outputs: HashSet<String>,
    graph_inputs: HashSet<String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    input_renames: HashMap<String, String>,
    output_renames: HashMap<String, String>,
    quantized: HashMap<String, Quantized>,
}

/// Rewrites the plan's graph with QuantizeLinear/DequantizeLinear nodes in `domain` (`None`
/// for the default domain). Fails when an activation to quantize has no calibrated range, or
/// a weight or bias cannot be quantized.
pub(crate) fn write_qdq(
    plan: Plan,
    settings: &Settings,
    domain: Option<&str>,
) -> Result<(GraphProto, Written), String> {
    let Plan { mut graph, removed, tensors, biases, ranges, .. } = plan;
    let mut written = Written { folded: removed.len(), ..Written::default() };

    let mut params = initializer_params_of(&graph, &tensors, settings)?;
    widen_weight_scales(&graph, &biases, &tensors, &ranges, &mut params, settings)?;

    let dequantized: HashMap<String, usize> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op_type() == "DequantizeLinear")
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i)))
        .collect();

    let mut writer = Writer {
        domain,
        names: NameGenerator::new(&graph),
        graph_outputs: graph.output.iter().map(|o| o.name().to_string()).collect(),
        graph_inputs: graph.input.iter().map(|i| i.name().to_string()).collect(),
        nodes: Vec::new(),
        initializers: Vec::new(),
        input_renames: HashMap::new(),
        output_renames: HashMap::new(),
        quantized: HashMap::new(),
    };

    // Tensors with their own parameters first, then those that share them.
    let mut shared = Vec::new();
    for (name, mark) in tensors {
        if mark.shared_from.is_some() {
            shared.push((name, mark));
        } else if let Some(tensor_params) = params.remove(&name) {
            let tensor = ir::initializer(&graph, &name)
                .ok_or_else(|| format!("initializer `{name}` disappeared"))?;
            writer.initializer(tensor, &tensor_params)?;
            written.initializers += 1;
        } else if dequantized.contains_key(&name) {
            debug!(tensor = %name, "already dequantized in the input model: left as it is");
        } else {
            let range = ranges.get(&name).copied().ok_or_else(|| {
                format!(
                    "tensor `{name}` has no calibrated range; hint: calibrate every float input \
                     and output of the nodes of the types in `op_types`"
                )
            })?;
            let qtype = settings.activation_type;
            let single = activation_params(&name, range, qtype, settings.activation_symmetric)?;
            writer.activation(&name, &TensorParams::single(qtype, single));
            written.activations += 1;
        }
    }
    written.shared = writer.shared(shared);

    for (bias, mark) in biases {
        let tensor = ir::initializer(&graph, &bias)
            .ok_or_else(|| format!("bias `{bias}` disappeared"))?
            .clone();
        let input_scale = writer.scale_of(&mark.input, &graph, &dequantized);
        let weight_scales = writer.quantized.get(&mark.weight).map(|q| q.scales.clone());
        let (Some(input_scale), Some(weight_scales)) = (input_scale, weight_scales) else {
            return Err(format!(
                "cannot quantize bias `{bias}` of node `{}`: its input `{}` or weight `{}` is not \
                 quantized; hint: exclude the node with `nodes_to_exclude`",
                graph.node[mark.node].name(),
                mark.input,
                mark.weight
            ));
        };
        if writer.bias(&tensor, input_scale, &weight_scales)? {
            graph.initializer.retain(|t| t.name() != bias);
            graph.input.retain(|i| i.name() != bias);
            written.biases += 1;
        }
    }

    writer.finish(&mut graph, &removed)?;
    Ok((graph, written))
}

/// The parameters of every initializer with its own parameters, from its values.
fn initializer_params_of(
    graph: &GraphProto,
    tensors: &[(String, Mark)],
    settings: &Settings,
) -> Result<HashMap<String, TensorParams>, String> {
    let mut params = HashMap::new();
    for (name, mark) in tensors.iter().filter(|(_, m)| m.shared_from.is_none()) {
        let Some(tensor) = ir::initializer(graph, name) else { continue };
        let data = ir::tensor_to_f32(tensor).map_err(|e| e.to_string())?;
        let (qtype, symmetric) = match mark.role {
            Role::Weight => (settings.weight_type, settings.weight_symmetric),
            Role::Activation => (settings.activation_type, settings.activation_symmetric),
        };
        // Per channel, always symmetric: one zero point for every channel.
        let tensor_params = initializer_params(
            name,
            data.view(),
            qtype,
            mark.axis,
            symmetric || mark.axis.is_some(),
            settings.reduce_range,
        )?;
        params.insert(name.clone(), tensor_params);
    }
    Ok(params)
}

/// ORT's widening of symmetric signed weight scales whose bias would not fit int32. The input
/// scale here is the input's own, from its calibrated range, as in ORT.
fn widen_weight_scales(
    graph: &GraphProto,
    biases: &[(String, BiasMark)],
    tensors: &[(String, Mark)],
    ranges: &BTreeMap<String, TensorRange>,
    params: &mut HashMap<String, TensorParams>,
    settings: &Settings,
) -> Result<(), String> {
    let marked: HashSet<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    for (bias, mark) in biases {
        let (Some(&range), true) = (ranges.get(&mark.input), marked.contains(mark.input.as_str()))
        else {
            continue;
        };
        let Some(weight) = params.get_mut(&mark.weight) else { continue };
        if !weight.qtype.is_signed() || weight.zero_points.iter().any(|&z| z != 0) {
            continue;
        }
        let Some(tensor) = ir::initializer(graph, bias) else { continue };
        let data = ir::tensor_to_f32(tensor).map_err(|e| e.to_string())?;
        if !bias_fits(data.shape(), weight) {
            continue;
        }

        let qtype = settings.activation_type;
        let input = activation_params(&mark.input, range, qtype, settings.activation_symmetric)?;
        if widen_weight_scales_for_bias(input.scale, weight, data.view()) {
            debug!(weight = %mark.weight, bias = %bias, "widened the weight's scale for the bias");
        }
    }
    Ok(())
}

/// Whether a bias of `shape` can take one scale per weight scale: any shape for one scale,
/// a vector of one value per channel otherwise.
fn bias_fits(shape: &[usize], weight: &TensorParams) -> bool {
    weight.scales.len() == 1 || shape == [weight.scales.len()]
}

impl Writer<'_> {
    fn node(&mut self, op_type: &str, inputs: &[&str], output: &str, base: &str) -> NodeProto {
        let name = self.names.fresh(base);
        let mut node = ir::make_node(op_type, inputs, &[output], &name);
        node.domain = self.domain.map(str::to_string);
        node
    }

    fn scale_and_zero_point(&mut self, name: &str, params: &TensorParams) -> Quantized {
        let count = params.scales.len() as i64;
        let dims: &[i64] = if params.axis.is_some() { &[count] } else { &[] };
        let scale = self.names.fresh(&format!("{name}_scale"));
        let zero_point = self.names.fresh(&format!("{name}_zero_point"));
        self.initializers.push(integer_tensor(
            &zero_point,
            params.qtype,
            dims,
            params.zero_points.iter().copied(),
        ));
        self.initializers.push(float_tensor(&scale, dims, &params.scales));
        Quantized { scale, zero_point, scales: params.scales.clone() }
    }

    /// An initializer stored quantized, read through a DequantizeLinear.
    fn initializer(&mut self, tensor: &TensorProto, params: &TensorParams) -> Result<(), String> {
        let name = tensor.name();
        let data = ir::tensor_to_f32(tensor).map_err(|e| e.to_string())?;
        let quantized = self.scale_and_zero_point(name, params);

        let values = self.names.fresh(&format!("{name}_quantized"));
        let flat = quantize(data.view(), params);
        self.initializers.push(integer_tensor(
            &values,
            params.qtype,
            &tensor.dims,
            flat.iter().copied(),
        ));

        let output = self.names.fresh(&format!("{name}_DequantizeLinear_Output"));
        self.input_renames.insert(name.to_string(), output.clone());
        let inputs = [values.as_str(), &quantized.scale, &quantized.zero_point];
        let mut dequantize =
            self.node("DequantizeLinear", &inputs, &output, &format!("{name}_DequantizeLinear"));
        if let Some(axis) = params.axis {
            dequantize.attribute.push(ir::attr_int("axis", axis as i64));
        }
        self.nodes.push(dequantize);
        self.quantized.insert(name.to_string(), quantized);
        Ok(())
    }

    /// A QuantizeLinear/DequantizeLinear pair on an activation with its own parameters.
    fn activation(&mut self, name: &str, params: &TensorParams) {
        let quantized = self.scale_and_zero_point(name, params);
        self.pair(name, &quantized);
        self.quantized.insert(name.to_string(), quantized);
    }

    /// Pairs for the tensors that share an input's parameters, once that input is quantized.
    /// Returns how many were written.
    fn shared(&mut self, mut pending: Vec<(String, Mark)>) -> usize {
        let mut count = 0;
        loop {
            let before = pending.len();
            let mut waiting = Vec::new();
            for (name, mark) in pending {
                let provider = mark.shared_from.as_ref().map(|(input, _)| input.as_str());
                match provider.and_then(|input| self.quantized.get(input)).cloned() {
                    Some(quantized) => {
                        self.pair(&name, &quantized);
                        self.quantized.insert(name, quantized);
                        count += 1;
                    }
                    None => waiting.push((name, mark)),
                }
            }
            pending = waiting;
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        for (name, _) in pending {
            debug!(tensor = %name, "left in float: the input whose parameters it shares is not");
        }
        count
    }

    fn pair(&mut self, name: &str, quantized: &Quantized) {
        // A graph output keeps its name on the DequantizeLinear, its producer writes a new
        // one; a graph input has no producer to rename, so its readers are renamed instead.
        let renames_producer =
            self.graph_outputs.contains(name) && !self.graph_inputs.contains(name);
        let (q_input, dq_output) = if renames_producer {
            let q_input = self.names.fresh(&format!("{name}_QuantizeLinear_Input"));
            self.output_renames.insert(name.to_string(), q_input.clone());
            (q_input, name.to_string())
        } else {
            let dq_output = self.names.fresh(&format!("{name}_DequantizeLinear_Output"));
            self.input_renames.insert(name.to_string(), dq_output.clone());
            (name.to_string(), dq_output)
        };

        let q_output = self.names.fresh(&format!("{name}_QuantizeLinear_Output"));
        let params = [quantized.scale.as_str(), &quantized.zero_point];
        let quantize = self.node(
            "QuantizeLinear",
            &[&q_input, params[0], params[1]],
            &q_output,
            &format!("{name}_QuantizeLinear"),
        );
        let dequantize = self.node(
            "DequantizeLinear",
            &[&q_output, params[0], params[1]],
            &dq_output,
            &format!("{name}_DequantizeLinear"),
        );
        self.nodes.extend([quantize, dequantize]);
    }

    /// The scale an input is quantized with: ours, or that of the DequantizeLinear that
    /// produces it in the input model.
    fn scale_of(
        &self,
        name: &str,
        graph: &GraphProto,
        dequantized: &HashMap<String, usize>,
    ) -> Option<f32> {
        if let Some(quantized) = self.quantized.get(name) {
            return quantized.scales.first().copied();
        }
        let producer = &graph.node[*dequantized.get(name)?];
        let scale = ir::initializer(graph, producer.input.get(1)?)?;
        let values = ir::tensor_to_f32(scale).ok()?;
        (values.len() == 1).then(|| values.iter().copied().next()).flatten()
    }

    /// An int32 bias dequantized under the bias's own name. Returns false when the bias does
    /// not fit the weight's scales (a per-channel weight with a bias of another shape), which
    /// leaves it in float.
    fn bias(
        &mut self,
        tensor: &TensorProto,
        input_scale: f32,
        weight_scales: &[f32],
    ) -> Result<bool, String> {
        let name = tensor.name();
        let data = ir::tensor_to_f32(tensor).map_err(|e| e.to_string())?;
        if let Some(value) = data.iter().find(|v| !v.is_finite()) {
            return Err(format!("bias `{name}` holds {value}; hint: fix the model's weights"));
        }
        if weight_scales.len() > 1 && data.shape() != [weight_scales.len()] {
            debug!(bias = %name, "left in float: its shape does not match the weight's channels");
            return Ok(false);
        }

        let quantized = quantize_bias(data.view(), input_scale, weight_scales);
        if quantized.clipped {
            warn!("bias `{name}` exceeds the int32 range at its scale and was clipped");
        }
        let count = quantized.scales.len();
        let values = self.names.fresh(&format!("{name}_quantized"));
        let scale = self.names.fresh(&format!("{name}_quantized_scale"));
        let zero_point = self.names.fresh(&format!("{name}_quantized_zero_point"));
        let zero_dims: &[i64] = if count > 1 { &[count as i64] } else { &[] };
        self.initializers.push(int32_tensor(
            &values,
            &tensor.dims,
            quantized.values.iter().copied(),
        ));
        self.initializers.push(float_tensor(&scale, &[count as i64], &quantized.scales));
        self.initializers.push(int32_tensor(&zero_point, zero_dims, vec![0; count]));

        let inputs = [values.as_str(), &scale, &zero_point];
        let mut dequantize =
            self.node("DequantizeLinear", &inputs, name, &format!("{name}_DequantizeLinear"));
        if count > 1 {
            dequantize.attribute.push(ir::attr_int("axis", 0));
        }
        self.nodes.push(dequantize);
        Ok(true)
    }

    /// Puts the new nodes and initializers into `graph`, drops the folded nodes and the
    /// initializers nothing reads any more, and orders the nodes.
    fn finish(self, graph: &mut GraphProto, removed: &HashSet<usize>) -> Result<(), String> {
        let old = std::mem::take(&mut graph.node);
        for (index, mut node) in old.into_iter().enumerate() {
            if removed.contains(&index) {
                continue;
            }
            for input in &mut node.input {
                if let Some(renamed) = self.input_renames.get(input) {
                    *input = renamed.clone();
                }
            }
            for output in &mut node.output {
                if let Some(renamed) = self.output_renames.get(output) {
                    *output = renamed.clone();
                }
            }
            graph.node.push(node);
        }
        graph.node.extend(self.nodes);
        graph.initializer.extend(self.initializers);

        drop_unread_initializers(graph);
        let order = ir::topological_order(graph).map_err(|e| e.to_string())?;
        let mut nodes: Vec<Option<NodeProto>> =
            std::mem::take(&mut graph.node).into_iter().map(Some).collect();
        graph.node = order.into_iter().filter_map(|i| nodes[i].take()).collect();
        drop_stale_value_info(graph);
        Ok(())
    }
}

/// Removes initializers that no node reads (here or in a subgraph) and that are no graph
/// output, with the graph inputs that only named them, as ORT's tool cleans up.
pub(crate) fn drop_unread_initializers(graph: &mut GraphProto) {
    let index = ir::GraphIndex::new(graph);
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name()).collect();
    let unread: HashSet<String> = graph
        .initializer
        .iter()
        .map(|t| t.name())
        .filter(|name| index.consumers(name).is_empty() && !outputs.contains(name))
        .map(str::to_string)
        .collect();
    graph.initializer.retain(|t| !unread.contains(t.name()));
    graph.input.retain(|i| !unread.contains(i.name()));
}

/// Removes the value infos of values the rewrite renamed away.
pub(crate) fn drop_stale_value_info(graph: &mut GraphProto) {
    let mut live: HashSet<String> = HashSet::new();
    for node in &graph.node {
        live.extend(node.input.iter().chain(&node.output).cloned());
    }
    live.extend(graph.input.iter().chain(&graph.output).map(|v| v.name().to_string()));
    graph.value_info.retain(|v| live.contains(v.name()));
}
