//! GELU: the subgraphs exporters write for `0.5 * x * (1 + erf(x / sqrt(2)))` and for its
//! tanh approximation `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))`, made into
//! one operator: ONNX Runtime's `Gelu`, `BiasGelu` or `FastGelu`, or the ONNX `Gelu` of
//! opset 20 for other runtimes.
//!
//! The 0.5 may be multiplied into `x`, into `1 + erf(..)` or into their product, every
//! commutative operation may have its operands either way round, `x / sqrt(2)` may be
//! `x * (1 / sqrt(2))`, and `x^3` may be `Pow(x, 3)` or `x * x * x`. Each constant must
//! equal GELU's within [`TOLERANCE`], and each value between the input and the output must
//! be read by the pattern alone.

use super::operands::{
    either_constant, first_output, only_inside, other_input, sole_reader, two_inputs, Matched,
};
use super::pattern::{is_op, node_in, Rewrite, Scan, View};
use super::{Rule, MS_DOMAIN};
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::shapes::Dim;
use crate::ir::{self, attr_string};

pub(crate) const GELU: Rule = Rule {
    name: "gelu",
    summary: "0.5 * x * (1 + erf(x / sqrt 2)) and its tanh form -> ONNX Runtime's Gelu, \
              BiasGelu (with the Add of a bias before it) or FastGelu; ONNX Gelu at opset 20 \
              for other runtimes",
    scan: gelu,
};

/// How far, relative to GELU's own constants, the graph's constants may be.
const TOLERANCE: f64 = 1e-4;

/// `sqrt(2 / pi)`, the scale of the tanh form.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;

/// The cubic coefficient of the tanh form.
const CUBIC: f64 = 0.044_715;

/// The opset in which ONNX has `Gelu`.
const ONNX_GELU_OPSET: i64 = 20;

/// The two functions the pattern can compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Erf,
    Tanh,
}

/// A GELU subgraph.
struct Found {
    form: Form,
    /// The input of the pattern.
    x: String,
    /// Every node of the pattern, by index.
    nodes: Vec<usize>,
    /// The value the pattern computes.
    output: String,
}

fn gelu(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !scan.is_free(index) {
            continue;
        }
        let found = if is_op(node, "Erf") {
            erf_form(view, index)
        } else if is_op(node, "Tanh") {
            tanh_form(view, index)
        } else {
            continue;
        };

        let found = match found {
            Ok(found) => found,
            Err(Some(reason)) => {
                scan.skip(index, reason);
                continue;
            }
            Err(None) => continue,
        };
        match rewrite(scan, &found) {
            Ok(rewrite) => {
                scan.offer(rewrite);
            }
            Err(reason) => scan.skip(index, reason),
        }
    }
}

/// `0.5 * x * (1 + erf(x / sqrt(2)))` around the Erf node `erf_index`.
fn erf_form(view: &View<'_>, erf_index: usize) -> Matched<Found> {
    let erf = view.node(erf_index);
    let scaled = erf.input.first().ok_or(None)?;
    let (scale_index, scale) = view.producer(scaled).ok_or(None)?;
    let x = if is_op(scale, "Div") {
        let (x, divisor) = two_inputs(scale)?;
        check_constant(view, divisor, std::f64::consts::SQRT_2, x)?;
        x
    } else if is_op(scale, "Mul") {
        let (x, factor) = either_constant(view, scale)?;
        check_constant(view, factor, std::f64::consts::FRAC_1_SQRT_2, x)?;
        x
    } else {
        return Err(None);
    };
    only_inside(view, scaled, erf_index)?;

    let erf_output = first_output(erf)?;
    let (plus_index, plus) = sole_reader(view, erf_output, "Add")?;
    let one = other_input(plus, erf_output)?;
    check_constant(view, one, 1.0, x)?;

    let mut nodes = vec![scale_index, erf_index, plus_index];
    let output = half_product(view, plus_index, x, &mut nodes)?;
    Ok(Found { form: Form::Erf, x: x.to_string(), nodes, output })
}

/// `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))` around the Tanh node.
fn tanh_form(view: &View<'_>, tanh_index: usize) -> Matched<Found> {
    let tanh = view.node(tanh_index);
    let scaled = tanh.input.first().ok_or(None)?;
    let (scale_index, scale) = view.producer_of_type(scaled, "Mul").ok_or(None)?;
    let (inner, factor) = either_constant(view, scale)?;

    let (sum_index, sum) = view.producer_of_type(inner, "Add").ok_or(None)?;
    let (a, b) = two_inputs(sum)?;
    let (x, cubic_term, cube) = [(a, b), (b, a)]
        .into_iter()
        .find_map(|(x, term)| {
            let (_, term_node) = view.producer_of_type(term, "Mul")?;
            let (cube, _) = either_constant(view, term_node).ok()?;
            let (_, cube_x) = cube_of(view, cube)?;
            (cube_x == x).then_some((x, term, cube))
        })
        .ok_or(None)?;

    check_constant(view, factor, SQRT_2_OVER_PI, x)?;
    let (term_index, term_node) = view.producer(cubic_term).ok_or(None)?;
    let coefficient = other_input(term_node, cube)?;
    check_constant(view, coefficient, CUBIC, x)?;
    let (cube_nodes, _) = cube_of(view, cube).ok_or(None)?;

    only_inside(view, scaled, tanh_index)?;
    only_inside(view, inner, scale_index)?;
    only_inside(view, cubic_term, sum_index)?;
    only_inside(view, cube, term_index)?;
    if let [square_index, _] = cube_nodes[..] {
        let square = first_output(view.node(square_index))?;
        only_inside(view, square, cube_nodes[1])?;
    }

    let tanh_output = first_output(tanh)?;
    let (plus_index, plus) = sole_reader(view, tanh_output, "Add")?;
    let one = other_input(plus, tanh_output)?;
    check_constant(view, one, 1.0, x)?;

    let mut nodes = vec![scale_index, sum_index, term_index, tanh_index, plus_index];
    nodes.extend(cube_nodes);
    let output = half_product(view, plus_index, x, &mut nodes)?;
    Ok(Found { form: Form::Tanh, x: x.to_string(), nodes, output })
}

/// `x^3` as `Pow(x, 3)` or `x * x * x` (in any grouping): the nodes, the last one last, and x.
fn cube_of<'g>(view: &View<'g>, value: &str) -> Option<(Vec<usize>, &'g str)> {
    let (index, node) = view.producer(value)?;
    if is_op(node, "Pow") {
        let (x, exponent) = two_inputs(node).ok()?;
        let three = view.scalar_f32(exponent).map(f64::from).or_else(|| {
            let values = view.constant_i64(exponent)?;
            (values.len() == 1).then(|| values.iter().next().map(|&v| v as f64)).flatten()
        })?;
        return (three == 3.0).then(|| (vec![index], x));
    }
    if !is_op(node, "Mul") {
        return None;
    }
    let (a, b) = two_inputs(node).ok()?;
    [(a, b), (b, a)].into_iter().find_map(|(x, square)| {
        let (square_index, square_node) = view.producer_of_type(square, "Mul")?;
        let is_square = square_node.input.len() == 2 && square_node.input.iter().all(|i| i == x);
        is_square.then(|| (vec![square_index, index], x))
    })
}

/// The product of `x`, the value of the Add node `plus_index` and 0.5, in any of the three
/// groupings; adds its nodes to `nodes` and returns the output.
fn half_product(
    view: &View<'_>,
    plus_index: usize,
    x: &str,
    nodes: &mut Vec<usize>,
) -> Matched<String> {
    let plus = first_output(view.node(plus_index))?;
    let (first_index, first) = sole_reader(view, plus, "Mul")?;
    let operand = other_input(first, plus)?;
    let product = first_output(first)?;

    // (x * p) * 0.5 or x * (p * 0.5): a second Mul reads the first one's product.
    if operand == x || view.constant(operand).is_some() {
        let (second_index, second) = sole_reader(view, product, "Mul")?;
        let other = other_input(second, product)?;
        if operand == x {
            check_constant(view, other, 0.5, x)?;
        } else {
            check_constant(view, operand, 0.5, x)?;
            if other != x {
                return Err(None);
            }
        }
        nodes.extend([first_index, second_index]);
        return Ok(first_output(second)?.to_string());
    }

    // (x * 0.5) * p.
    let (half_index, half) = view.producer_of_type(operand, "Mul").ok_or(None)?;
    let factor = other_input(half, x)?;
    check_constant(view, factor, 0.5, x)?;
    only_inside(view, operand, first_index)?;
    nodes.extend([half_index, first_index]);
    Ok(product.to_string())
}

/// The replacement of a GELU pattern for the target.
fn rewrite(scan: &mut Scan<'_, '_>, found: &Found) -> Result<Rewrite, String> {
    let view = scan.view;
    let target = view.target;
    let approximate = match found.form {
        Form::Erf => "none",
        Form::Tanh => "tanh",
    };

    let mut remove = found.nodes.clone();
    let node = if target.contrib_ops {
        let elem_type = view.shapes.elem_type(&found.x);
        if elem_type != Some(DataType::Float as i32) {
            let found_type = elem_type.map_or("of unknown type".into(), ir::data_type_name);
            return Err(format!(
                "its input `{}` is {found_type}: only float32 GELU is fused for ONNX Runtime",
                found.x
            ));
        }
        let bias = bias_before(view, found);
        let (op_type, inputs): (&str, Vec<&str>) = match (bias, found.form) {
            (Some((_, y, b)), Form::Erf) => ("BiasGelu", vec![y, b]),
            (Some((_, y, b)), Form::Tanh) => ("FastGelu", vec![y, b]),
            (None, Form::Erf) => ("Gelu", vec![found.x.as_str()]),
            (None, Form::Tanh) => ("FastGelu", vec![found.x.as_str()]),
        };
        let name = scan.fresh(&format!("{op_type}_{}", found.output));
        let node = node_in(Some(MS_DOMAIN), op_type, &inputs, &[&found.output], &name);
        remove.extend(bias.map(|(index, _, _)| index));
        node
    } else if target.opset >= ONNX_GELU_OPSET {
        let name = scan.fresh(&format!("Gelu_{}", found.output));
        let mut node = node_in(None, "Gelu", &[&found.x], &[&found.output], &name);
        node.attribute.push(attr_string("approximate", approximate));
        node
    } else {
        return Err(format!(
            "ONNX has Gelu from opset {ONNX_GELU_OPSET} and the model's opset is {}; the \
             target runtime is not ONNX Runtime, whose contrib Gelu needs no opset",
            target.opset
        ));
    };

    Ok(Rewrite { remove, add: vec![node], ..Rewrite::default() })
}

/// The Add of a constant bias that makes the pattern's input, when a fused operator can take
/// it over: `x = y + b` with `b` a float32 vector of x's last dimension, and `x` read by the
/// pattern alone. Returns the Add's index, `y` and `b`.
fn bias_before<'g>(view: &View<'g>, found: &Found) -> Option<(usize, &'g str, &'g str)> {
    let (index, add) = view.producer_of_type(&found.x, "Add")?;
    let readers = view.consumers(&found.x);
    if view.is_graph_output(&found.x) || readers.iter().any(|r| !found.nodes.contains(r)) {
        return None;
    }

    let hidden = view.shapes.dims(&found.x)?.last()?.known()?;
    let (a, b) = two_inputs(add).ok()?;
    [(a, b), (b, a)]
        .into_iter()
        .find(|(y, bias)| {
            let Some(tensor) = view.constant(bias) else { return false };
            let is_vector = tensor.data_type() == DataType::Float as i32 && tensor.dims == [hidden];
            let y_last = view.shapes.dims(y).and_then(|d| d.last().cloned());
            let y_float = view.shapes.elem_type(y) == Some(DataType::Float as i32);
            is_vector && y_float && y_last == Some(Dim::Known(hidden))
        })
        .map(|(y, bias)| (index, y, bias))
}

/// Checks that `value` is a float32 constant of one element equal to `expected` within
/// [`TOLERANCE`], which broadcasts without changing the shape of `x`.
fn check_constant(view: &View<'_>, value: &str, expected: f64, x: &str) -> Matched<()> {
    let tensor = view.constant(value).ok_or(None)?;
    let found = view.scalar_f32(value).map(f64::from).ok_or(None)?;
    if (found - expected).abs() > TOLERANCE * expected.abs() {
        return Err(Some(format!(
            "constant `{value}` is {}, where GELU has {}",
            found as f32, expected as f32
        )));
    }

    let rank = tensor.dims.len();
    match view.shapes.rank(x) {
        Some(x_rank) if rank <= x_rank => Ok(()),
        Some(x_rank) => Err(Some(format!(
            "constant `{value}` has rank {rank}, more than the rank {x_rank} of `{x}`: it \
             would broadcast the result"
        ))),
        None if rank == 0 => Ok(()),
        None => Err(Some(format!(
            "the rank of `{x}` is unknown, so constant `{value}` of rank {rank} could \
             broadcast the result"
        ))),
    }
}
