//! Computes one ONNX node from constant inputs, for constant folding: the shape arithmetic
//! exporters emit (Gather, Concat, Slice, Unsqueeze ... of shapes), element-wise arithmetic
//! with numpy broadcasting, and Cast between the float and integer types.
//!
//! Arithmetic runs in the tensors' own element type, as ONNX Runtime's CPU kernels run it:
//! float32 in float32, integers wrapping, integer division truncating. Where ONNX Runtime's
//! result is undefined (integer division by zero, a float cast out of an integer's range)
//! the node is not evaluated. Transcendental functions (Exp, Log, Erf, Tanh ...) are not
//! evaluated at all: ONNX Runtime computes them with its own approximations, which a libm
//! result would differ from in the last bits.

mod elementwise;
mod layout;
mod value;

use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::NodeProto;
use crate::ir::{node_attr_int, node_attr_ints};

pub(crate) use layout::{shape_of, size_of};
pub(crate) use value::Value;

/// Why a node was not evaluated.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum EvalError {
    /// The operator, or the element type it is given, is not one the evaluator computes.
    NotCovered(String),
    /// The inputs or attributes do not make a valid node, or the result is undefined.
    Invalid(String),
    /// The result would take more bytes than the caller allows.
    TooLarge { bytes: usize },
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::NotCovered(reason) | EvalError::Invalid(reason) => f.write_str(reason),
            EvalError::TooLarge { bytes } => write!(f, "its result would take {bytes} bytes"),
        }
    }
}

/// The operators of the default domain that [`evaluate`] computes. Shape and Size are
/// computed from a static shape instead, with [`shape_of`] and [`size_of`].
pub(crate) const EVALUATED_OPS: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "Cast",
    "Ceil",
    "Concat",
    "ConstantOfShape",
    "Div",
    "Equal",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Max",
    "Min",
    "Mod",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "Pow",
    "Range",
    "Reciprocal",
    "Reshape",
    "Slice",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Transpose",
    "Unsqueeze",
    "Where",
    "Xor",
];

/// The value `node` computes from `inputs` (one per node input, `None` for an omitted
/// optional one), refusing results over `max_bytes` before computing them where an
/// operator can grow its inputs (broadcasting, Expand, ConstantOfShape, Range, Gather).
pub(crate) fn evaluate(
    node: &NodeProto,
    inputs: &[Option<Value>],
    max_bytes: usize,
) -> Result<Value, EvalError> {
    let op = node.op_type();
    let input = |i: usize| -> Result<&Value, EvalError> {
        inputs
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| EvalError::Invalid(format!("{op} lacks its input {i}")))
    };
    let optional = |i: usize| inputs.get(i).and_then(Option::as_ref);
    let integers = |i: usize| -> Result<Vec<i64>, EvalError> {
        let value = input(i)?;
        value.integers().ok_or_else(|| {
            EvalError::Invalid(format!("{op} input {i} is {}, not integers", value.type_name()))
        })
    };
    let optional_integers = |i: usize| -> Result<Option<Vec<i64>>, EvalError> {
        optional(i).map(|_| integers(i)).transpose()
    };
    let attribute = |name: &str, default: i64| node_attr_int(node, name).unwrap_or(default);
    // Squeeze, Unsqueeze and Slice before opset 13 (10 for Slice) take attributes.
    let list = |name: &str, position: usize| -> Result<Option<Vec<i64>>, EvalError> {
        match node_attr_ints(node, name) {
            Some(values) => Ok(Some(values.to_vec())),
            None => optional_integers(position),
        }
    };

    match op {
        "Add" | "Sub" | "Mul" | "Div" | "Mod" => {
            let fmod = attribute("fmod", 0) != 0;
            elementwise::arithmetic(op, input(0)?, input(1)?, fmod, max_bytes)
        }
        "Min" | "Max" => {
            let mut result = input(0)?.clone();
            for i in 1..inputs.len() {
                result = elementwise::arithmetic(op, &result, input(i)?, false, max_bytes)?;
            }
            Ok(result)
        }
        "Pow" => elementwise::pow(input(0)?, input(1)?, max_bytes),
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" => {
            elementwise::compare(op, input(0)?, input(1)?, max_bytes)
        }
        "And" | "Or" | "Xor" => elementwise::logic(op, input(0)?, input(1)?, max_bytes),
        "Where" => elementwise::select(input(0)?, input(1)?, input(2)?, max_bytes),
        "Neg" | "Abs" | "Sqrt" | "Reciprocal" | "Floor" | "Ceil" | "Not" => {
            elementwise::unary(op, input(0)?)
        }
        "Cast" => {
            let to = attribute("to", 0);
            let data_type = i32::try_from(to)
                .ok()
                .and_then(|t| DataType::try_from(t).ok())
                .ok_or_else(|| EvalError::Invalid(format!("Cast to unknown type {to}")))?;
            input(0)?.cast(data_type)
        }
        "Reshape" => layout::reshape(input(0)?, &integers(1)?, attribute("allowzero", 0) != 0),
        "Flatten" => layout::flatten(input(0)?, attribute("axis", 1)),
        "Transpose" => layout::transpose(input(0)?, node_attr_ints(node, "perm")),
        "Squeeze" => layout::squeeze(input(0)?, list("axes", 1)?.as_deref()),
        "Unsqueeze" => {
            let axes = list("axes", 1)?
                .ok_or_else(|| EvalError::Invalid("Unsqueeze without axes".into()))?;
            layout::unsqueeze(input(0)?, &axes)
        }
        "Concat" => {
            let values: Vec<&Value> = (0..inputs.len()).map(input).collect::<Result<_, _>>()?;
            let axis = node_attr_int(node, "axis")
                .ok_or_else(|| EvalError::Invalid("Concat without axis".into()))?;
            layout::concat(&values, axis)
        }
        "Gather" => layout::gather(input(0)?, input(1)?, attribute("axis", 0), max_bytes),
        "Slice" => {
            let starts = list("starts", 1)?;
            let ends = list("ends", 2)?;
            let (Some(starts), Some(ends)) = (starts, ends) else {
                return Err(EvalError::Invalid("Slice without starts or ends".into()));
            };
            let axes = list("axes", 3)?;
            let steps = optional_integers(4)?;
            layout::slice(input(0)?, &starts, &ends, axes.as_deref(), steps.as_deref())
        }
        "Expand" => layout::expand(input(0)?, &integers(1)?, max_bytes),
        "ConstantOfShape" => {
            let fill = match node.attribute.iter().find(|a| a.name() == "value") {
                Some(attribute) => {
                    let tensor = attribute.t.as_ref().ok_or_else(|| {
                        EvalError::Invalid("ConstantOfShape value is not a tensor".into())
                    })?;
                    Value::from_tensor(tensor)?
                }
                None => Value::F32(ndarray::ArrayD::zeros(ndarray::IxDyn(&[1]))),
            };
            layout::constant_of_shape(&integers(0)?, &fill, max_bytes)
        }
        "Range" => layout::range(input(0)?, input(1)?, input(2)?, max_bytes),
        _ => Err(EvalError::NotCovered(format!("{op} is not evaluated"))),
    }
}

#[cfg(test)]
mod tests;
