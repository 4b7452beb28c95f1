//! The QOperator rewrite of each operator type, as ONNX Runtime's QLinearOps writer makes it:
//! what the node must have to be rewritten (quantizable inputs, a calibrated output), which
//! integer operator it becomes and how its inputs are laid out. A rule that returns false has
//! written nothing, and the node stays in float.

use tracing::debug;

use super::{Quantized, Use, Writer, MS_DOMAIN};
use crate::ir;
use crate::ir::proto::attribute_proto::AttributeType;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::NodeProto;
use crate::quantize::params::{QuantParams, QuantType};
use crate::quantize::static_quant::ops::QOperatorRule;
use crate::quantize::static_quant::values::{
    int32_tensor, integer_tensor, quantize, quantize_bias, widen_weight_scales_for_bias,
};

impl Writer<'_> {
    /// Rewrites one selected node by its rule. Returns false, having written nothing, when
    /// the node stays in float.
    pub(super) fn rewrite(
        &mut self,
        node: &NodeProto,
        rule: QOperatorRule,
    ) -> Result<bool, String> {
        use QOperatorRule::*;

        let input = node.input.first().map(String::as_str).unwrap_or_default();
        let float_input = self.is_float(input);
        match rule {
            Conv => self.conv(node),
            MatMul if float_input || node.input.get(1).is_some_and(|b| self.is_float(b)) => {
                self.matmul(node)
            }
            Gemm if float_input || node.input.get(1).is_some_and(|b| self.is_float(b)) => {
                self.gemm(node)
            }
            Gather => self.gather(node),
            Removable => self.removable(node),
            _ if !float_input => Ok(false),
            Binary => self.simple(node, &[0, 1], None),
            Activation | AveragePool => self.simple(node, &[0], None),
            Softmax => {
                let zero_point = if self.settings.activation_type.is_signed() { -128 } else { 0 };
                let fixed = QuantParams { scale: 1.0 / 256.0, zero_point };
                self.simple(node, &[0], Some(fixed))
            }
            Concat => self.concat(node),
            GlobalAveragePool => self.global_average_pool(node),
            Direct { min_opset } if self.settings.opset >= min_opset => self.direct(node),
            Split => self.split(node),
            Pad if self.settings.opset >= 11 => self.pad(node),
            ArgMax => self.arg_max(node),
            MatMul | Gemm | Direct { .. } | Pad => Ok(false),
        }
    }

    /// Nodes whose integer form reads each input in `slots` as an activation and writes one
    /// output: QLinearAdd, QLinearMul, QLinearLeakyRelu, QLinearSigmoid, QLinearAveragePool
    /// and QLinearSoftmax (`fixed` output parameters), all `com.microsoft`.
    fn simple(
        &mut self,
        node: &NodeProto,
        slots: &[usize],
        fixed: Option<QuantParams>,
    ) -> Result<bool, String> {
        let Some(output) = node.output.first().filter(|o| !o.is_empty()) else { return Ok(false) };
        let names: Vec<&str> =
            slots.iter().filter_map(|&s| node.input.get(s)).map(|s| s.as_str()).collect();
        let ready = names.len() == slots.len() && names.iter().all(|n| self.can_quantize(n));
        if !ready || !self.ranges.contains_key(output.as_str()) {
            return Ok(false);
        }

        let mut pending = Vec::new();
        let mut inputs = Vec::new();
        for name in names {
            let quantized = self.input(name, Use::Activation, &mut pending)?;
            inputs.extend(quantized.triple());
        }
        let out = self.output(output, fixed, "_quantized")?;
        inputs.extend([out.scale.clone(), out.zero_point.clone()]);

        let mut extra = Vec::new();
        if node.op_type() == "Softmax" {
            extra.push(ir::attr_int("opset", self.settings.opset));
        }
        let op_type = format!("QLinear{}", node.op_type());
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let rewritten =
            self.new_node(&op_type, node, &inputs, &[&out.values], Some(MS_DOMAIN), extra);
        self.emit(pending, rewritten);
        Ok(true)
    }

    /// The weight input of a Conv or Gemm with `usage`, its scales widened where the int32
    /// bias would not fit them. Returns the weight and, when there is a bias, its int32 name.
    fn weight_and_bias(
        &mut self,
        node: &NodeProto,
        activation: &Quantized,
        usage: Use,
        bias_factor: f64,
        pending: &mut Vec<NodeProto>,
    ) -> Result<(Quantized, Option<String>), String> {
        let weight = &node.input[1];
        let bias = node.input.get(2).filter(|b| !b.is_empty());
        let Some(&tensor) = self.initializers.get(weight.as_str()) else {
            let quantized = self.input(weight, usage, pending)?;
            let bias = match bias {
                Some(bias) => Some(self.bias(bias, activation, &quantized, bias_factor)?),
                None => None,
            };
            return Ok((quantized, bias));
        };

        let mut params = self.initializer_params(tensor, usage)?;
        if let Some(bias) = bias {
            let data = self.bias_data(bias, bias_factor)?;
            let fits = params.scales.len() == 1 || data.shape() == [params.scales.len()];
            let widens = self.settings.weight_type == QuantType::Int8
                && params.zero_points.iter().all(|&z| z == 0);
            if fits && widens {
                let input_scale = activation.params.scales[0];
                if widen_weight_scales_for_bias(input_scale, &mut params, data.view()) {
                    debug!(weight = %weight, bias = %bias, "widened the weight's scale");
                }
            }
        }
        let quantized = self.store_initializer(tensor, params)?;
        let bias = match bias {
            Some(bias) => Some(self.bias(bias, activation, &quantized, bias_factor)?),
            None => None,
        };
        Ok((quantized, bias))
    }

    /// The bias's values, times `factor`.
    fn bias_data(&self, bias: &str, factor: f64) -> Result<ndarray::ArrayD<f32>, String> {
        let tensor = self.initializers.get(bias).ok_or_else(|| format!("no bias `{bias}`"))?;
        let data = ir::tensor_to_f32(tensor).map_err(|e| e.to_string())?;
        if let Some(value) = data.iter().find(|v| !v.is_finite()) {
            return Err(format!("bias `{bias}` holds {value}; hint: fix the model's weights"));
        }
        Ok(if factor == 1.0 { data } else { data.mapv(|v| (f64::from(v) * factor) as f32) })
    }

    /// The int32 bias at scale `input scale x weight scale`, once per scale.
    fn bias(
        &mut self,
        bias: &str,
        activation: &Quantized,
        weight: &Quantized,
        factor: f64,
    ) -> Result<String, String> {
        let data = self.bias_data(bias, factor)?;
        let input_scale = activation.params.scales[0];
        let quantized = quantize_bias(data.view(), input_scale, &weight.params.scales);
        let key = (bias.to_string(), quantized.scales.iter().map(|s| s.to_bits()).collect());
        if let Some(name) = self.biases.get(&key) {
            return Ok(name.clone());
        }
        if quantized.clipped {
            tracing::warn!("bias `{bias}` exceeds the int32 range at its scale and was clipped");
        }
        let dims = &self.initializers[bias].dims;
        let name = self.names.fresh(&format!("{bias}_quantized"));
        self.new_initializers.push(int32_tensor(&name, dims, quantized.values.iter().copied()));
        self.biases.insert(key, name.clone());
        Ok(name)
    }

    /// Whether a Conv or Gemm bias can be quantized for weight scales of `count`: a float
    /// initializer, of one value per scale when there are several.
    fn bias_fits(&self, bias: Option<&String>, count: usize) -> bool {
        let Some(bias) = bias.filter(|b| !b.is_empty()) else { return true };
        let Some(tensor) = self.initializers.get(bias.as_str()) else { return false };
        tensor.data_type() == DataType::Float as i32
            && (count == 1 || tensor.dims.len() == 1 && tensor.dims[0] == count as i64)
    }

    fn conv(&mut self, node: &NodeProto) -> Result<bool, String> {
        let (Some(x), Some(w), Some(y)) =
            (node.input.first(), node.input.get(1), node.output.first())
        else {
            return Ok(false);
        };
        let per_channel = self.settings.per_channel && self.initializers.contains_key(w.as_str());
        let usage = match per_channel {
            // ORT stores per-channel Conv weights as INT8 whatever the weight type.
            true => Use::Weight { qtype: QuantType::Int8, axis: Some(0) },
            false => Use::Weight { qtype: self.settings.weight_type, axis: None },
        };
        let channels = match per_channel {
            true => self.initializers[w.as_str()].dims.first().copied().unwrap_or(1) as usize,
            false => 1,
        };
        let ready = self.is_float(x)
            && self.can_quantize(x)
            && self.can_quantize(w)
            && self.ranges.contains_key(y.as_str())
            && self.bias_fits(node.input.get(2), channels);
        if !ready {
            return Ok(false);
        }

        let mut pending = Vec::new();
        let activation = self.input(x, Use::Activation, &mut pending)?;
        let (weight, bias) = self.weight_and_bias(node, &activation, usage, 1.0, &mut pending)?;
        let out = self.output(y, None, "_quantized")?;
        let mut inputs = [activation.triple(), weight.triple()].concat();
        inputs.extend([out.scale.clone(), out.zero_point.clone()]);
        inputs.extend(bias);
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let rewritten = self.new_node("QLinearConv", node, &inputs, &[&out.values], None, vec![]);
        self.emit(pending, rewritten);
        Ok(true)
    }

    fn matmul(&mut self, node: &NodeProto) -> Result<bool, String> {
        let (Some(a), Some(b), Some(y)) =
            (node.input.first(), node.input.get(1), node.output.first())
        else {
            return Ok(false);
        };
        if !(self.can_quantize(a) && self.can_quantize(b) && self.ranges.contains_key(y.as_str())) {
            return Ok(false);
        }
        let axis = match self.initializers.get(b.as_str()) {
            Some(tensor) if self.settings.per_channel && !tensor.dims.is_empty() => {
                Some(tensor.dims.len() - 1)
            }
            _ => None,
        };

        let mut pending = Vec::new();
        let a = self.input(a, Use::Activation, &mut pending)?;
        let usage = Use::Weight { qtype: self.settings.weight_type, axis };
        let b = self.input(b, usage, &mut pending)?;
        let out = self.output(y, None, "_quantized")?;
        let mut inputs = [a.triple(), b.triple()].concat();
        inputs.extend([out.scale.clone(), out.zero_point.clone()]);
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let rewritten = self.new_node("QLinearMatMul", node, &inputs, &[&out.values], None, vec![]);
        self.emit(pending, rewritten);
        Ok(true)
    }

    fn gemm(&mut self, node: &NodeProto) -> Result<bool, String> {
        let (Some(a), Some(b), Some(y)) =
            (node.input.first(), node.input.get(1), node.output.first())
        else {
            return Ok(false);
        };
        let trans_b = ir::node_attr_int(node, "transB").unwrap_or(0) != 0;
        let per_channel = self.settings.per_channel && self.initializers.contains_key(b.as_str());
        let axis = per_channel.then_some(if trans_b { 0 } else { 1 });
        let channels = match axis {
            Some(axis) => self.initializers[b.as_str()].dims.get(axis).copied().unwrap_or(1),
            None => 1,
        } as usize;
        let ready = self.can_quantize(a)
            && self.can_quantize(b)
            && self.ranges.contains_key(y.as_str())
            && self.bias_fits(node.input.get(2), channels);
        if !ready {
            return Ok(false);
        }

        // QGemm adds the int32 bias before scaling by `alpha x a_scale x b_scale`.
        let alpha = f64::from(ir::node_attr_float(node, "alpha").unwrap_or(1.0));
        let beta = f64::from(ir::node_attr_float(node, "beta").unwrap_or(1.0));
        let mut pending = Vec::new();
        let activation = self.input(a, Use::Activation, &mut pending)?;
        let usage = Use::Weight { qtype: self.settings.weight_type, axis };
        let (weight, bias) =
            self.weight_and_bias(node, &activation, usage, beta / alpha, &mut pending)?;
        let out = self.output(y, None, "_quantized")?;
        let bias = bias.unwrap_or_default();
        let mut inputs = [activation.triple(), weight.triple()].concat();
        inputs.extend([bias, out.scale.clone(), out.zero_point.clone()]);
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let mut rewritten =
            self.new_node("QGemm", node, &inputs, &[&out.values], Some(MS_DOMAIN), vec![]);
        // QGemm has no `beta`: the bias input is added as it is.
        rewritten.attribute.retain(|a| a.name() != "beta");
        self.emit(pending, rewritten);
        Ok(true)
    }

    fn concat(&mut self, node: &NodeProto) -> Result<bool, String> {
        let Some(output) = node.output.first().filter(|o| !o.is_empty()) else { return Ok(false) };
        let ready = !node.input.is_empty()
            && node.input.iter().all(|i| self.can_quantize(i))
            && self.ranges.contains_key(output.as_str());
        if !ready {
            return Ok(false);
        }

        let mut pending = Vec::new();
        let mut quantized = Vec::new();
        for input in &node.input {
            quantized.push(self.input(input, Use::Activation, &mut pending)?);
        }
        let out = self.output(output, None, "_quantized")?;
        let mut inputs = vec![out.scale.clone(), out.zero_point.clone()];
        for q in quantized {
            inputs.extend(q.triple());
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let rewritten =
            self.new_node("QLinearConcat", node, &inputs, &[&out.values], Some(MS_DOMAIN), vec![]);
        self.emit(pending, rewritten);
        Ok(true)
    }

    fn global_average_pool(&mut self, node: &NodeProto) -> Result<bool, String> {
        let (Some(x), Some(y)) = (node.input.first(), node.output.first()) else {
            return Ok(false);
        };
        let Some(input) = self.quantized.get(x.as_str()).cloned() else { return Ok(false) };
        let out = match self.ranges.contains_key(y.as_str()) {
            true => self.output(y, None, "_quantized")?,
            false => self.shared_output(y, &input, "_quantized"),
        };
        let inputs = [&input.values, &input.scale, &input.zero_point, &out.scale, &out.zero_point];
        let inputs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
        let extra = vec![ir::attr_int("channels_last", 0)];
        let rewritten = self.new_node(
            "QLinearGlobalAveragePool",
            node,
            &inputs,
            &[&out.values],
            Some(MS_DOMAIN),
            extra,
        );
        self.push(rewritten);
        Ok(true)
    }

    /// Reshape, Transpose, Squeeze, Unsqueeze, Flatten, MaxPool and Resize on the 8-bit input.
    fn direct(&mut self, node: &NodeProto) -> Result<bool, String> {
        let (Some(x), Some(y)) = (node.input.first(), node.output.first()) else {
            return Ok(false);
        };
        let Some(input) = self.quantized.get(x.as_str()).cloned() else { return Ok(false) };
        let out = self.shared_output(y, &input, "_quantized");
        let mut rewritten = node.clone();
        rewritten.input[0] = input.values;
        rewritten.output[0] = out.values;
        self.keep_float(rewritten);
        Ok(true)
    }

    fn split(&mut self, node: &NodeProto) -> Result<bool, String> {
        let Some(x) = node.input.first().filter(|x| self.can_quantize(x)) else {
            return Ok(false);
        };
        let mut pending = Vec::new();
        let input = self.input(x, Use::Activation, &mut pending)?;
        let mut outputs = Vec::new();
        for output in &node.output {
            let out = self.shared_output(output, &input, "quantized");
            outputs.push(out.values);
        }
        let mut inputs = vec![input.values.clone()];
        inputs.extend(node.input[1..].iter().cloned());
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        let rewritten = self.new_node("Split", node, &inputs, &outputs, None, vec![]);
        self.emit(pending, rewritten);
        Ok(true)
    }

    fn pad(&mut self, node: &NodeProto) -> Result<bool, String> {
        let (Some(x), Some(y)) = (node.input.first(), node.output.first()) else {
            return Ok(false);
        };
        let Some(input) = self.quantized.get(x.as_str()).cloned() else { return Ok(false) };
        let mode = node
            .attribute
            .iter()
            .find(|a| a.name() == "mode" && a.r#type() == AttributeType::String)
            .map_or(b"constant".as_slice(), |a| a.s());

        let mut rewritten = node.clone();
        let mut pending = Vec::new();
        if mode == b"constant" {
            match node.input.get(2).filter(|c| !c.is_empty()) {
                Some(constant) => {
                    let value = self.pad_value(constant, &input, &mut pending)?;
                    rewritten.input[2] = value;
                }
                None if node.input.len() == 2 => rewritten.input.push(input.zero_point.clone()),
                None => rewritten.input[2] = input.zero_point.clone(),
            }
        }
        let out = self.shared_output(y, &input, "_quantized");
        rewritten.input[0] = input.values;
        rewritten.output[0] = out.values;
        self.emit(pending, rewritten);
        Ok(true)
    }

    /// A Pad's constant value in the input's 8-bit form: a constant quantized ahead of time,
    /// or a computed one through a QuantizeLinear with the input's parameters.
    fn pad_value(
        &mut self,
        constant: &str,
        input: &Quantized,
        pending: &mut Vec<NodeProto>,
    ) -> Result<String, String> {
        if let Some(&tensor) = self.initializers.get(constant) {
            let data = ir::tensor_to_f32(tensor).map_err(|e| e.to_string())?;
            let codes = quantize(data.view(), &input.params);
            let name = self.names.fresh(&format!("{constant}_quantized"));
            self.new_initializers.push(integer_tensor(
                &name,
                input.params.qtype,
                &tensor.dims,
                codes.iter().copied(),
            ));
            return Ok(name);
        }

        let values = self.names.fresh(&format!("{constant}_quantized"));
        let node_name = self.names.fresh(&format!("{constant}_QuantizeLinear"));
        pending.push(ir::make_node(
            "QuantizeLinear",
            &[constant, &input.scale, &input.zero_point],
            &[&values],
            &node_name,
        ));
        let quantized = Quantized { values: values.clone(), ..input.clone() };
        self.quantized.insert(constant.to_string(), quantized);
        Ok(values)
    }

    fn gather(&mut self, node: &NodeProto) -> Result<bool, String> {
        let (Some(table), Some(y)) = (node.input.first(), node.output.first()) else {
            return Ok(false);
        };
        let is_table = self.initializers.contains_key(table.as_str()) && self.is_float(table);
        if !is_table {
            return Ok(false);
        }
        let mut pending = Vec::new();
        let table = self.input(table, Use::Activation, &mut pending)?;
        let out = self.shared_output(y, &table, "_quantized");
        let mut rewritten = node.clone();
        rewritten.input[0] = table.values;
        rewritten.output[0] = out.values;
        self.keep_float(rewritten);
        Ok(true)
    }

    fn arg_max(&mut self, node: &NodeProto) -> Result<bool, String> {
        let Some(x) = node.input.first() else { return Ok(false) };
        let Some(input) = self.quantized.get(x.as_str()).cloned() else { return Ok(false) };
        let mut rewritten = node.clone();
        rewritten.input[0] = input.values;
        self.keep_float(rewritten);
        Ok(true)
    }

    /// Relu and Clip vanish when their input is quantized with parameters that hold nothing
    /// they would change: the output is the input's 8-bit value.
    fn removable(&mut self, node: &NodeProto) -> Result<bool, String> {
        let (Some(x), Some(y)) = (node.input.first(), node.output.first()) else {
            return Ok(false);
        };
        let Some(input) = self.quantized.get(x.as_str()).cloned() else { return Ok(false) };
        if self.settings.activation_symmetric || input.params.axis.is_some() {
            return Ok(false);
        }
        let Some((low, high)) = self.clip_bounds(node) else { return Ok(false) };

        let params = input.params.channel(0);
        let (qmin, qmax) = input.params.qtype.full_range();
        let scale = f64::from(params.scale);
        let lowest = scale * f64::from(qmin - params.zero_point);
        let highest = scale * f64::from(qmax - params.zero_point);
        let clips = lowest >= low - scale / 2.0 && highest <= high + scale / 2.0;
        let clips = if node.op_type() == "Relu" { params.zero_point == qmin } else { clips };
        if !clips {
            debug!(
                node = node.name(),
                "kept in float: its input's quantization spans [{lowest}, {highest}]"
            );
            return Ok(false);
        }

        self.quantized.insert(y.clone(), input);
        self.written.folded += 1;
        Ok(true)
    }

    /// The bounds a Relu or Clip applies, when they are constants.
    fn clip_bounds(&self, node: &NodeProto) -> Option<(f64, f64)> {
        if node.op_type() == "Relu" {
            return Some((0.0, f64::INFINITY));
        }
        if self.settings.opset < 11 {
            let low = ir::node_attr_float(node, "min").map_or(f64::NEG_INFINITY, f64::from);
            let high = ir::node_attr_float(node, "max").map_or(f64::INFINITY, f64::from);
            return Some((low, high));
        }
        let bound = |slot: usize, default: f64| -> Option<f64> {
            match node.input.get(slot).filter(|n| !n.is_empty()) {
                None => Some(default),
                Some(name) => {
                    let tensor = self.initializers.get(name.as_str())?;
                    let values = ir::tensor_to_f32(tensor).ok()?;
                    let value = values.iter().copied().next()?;
                    (values.len() == 1).then_some(f64::from(value))
                }
            }
        };
        Some((bound(1, f64::NEG_INFINITY)?, bound(2, f64::INFINITY)?))
    }
}
