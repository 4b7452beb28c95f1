//! Static shapes and element types of a graph's values, as far as they can be told without
//! running the model: declared types first (graph inputs and outputs, value infos,
//! initializers, Constant nodes), then each node's outputs from its inputs by the operator's
//! shape rule, for the operators rewrites need to reason about. A dimension is a number, a
//! named symbol (`batch`), or unknown; a value whose rank cannot be told has no shape.
//!
//! Small integer tensors that feed shapes (a Reshape's target, a Shape's output on a static
//! input) are tracked by value too, so `Reshape(x, Concat(Shape(x)[0], 12, 32))` has a shape.

use std::collections::HashMap;

use crate::ir::proto::attribute_proto::AttributeType;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{GraphProto, NodeProto};
use crate::ir::{self, node_attr_int, node_attr_ints};

/// One dimension of a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(i64),
    Symbol(String),
    Unknown,
}

impl Dim {
    /// The size, when it is a number.
    pub fn known(&self) -> Option<i64> {
        match self {
            Dim::Known(size) => Some(*size),
            _ => None,
        }
    }
}

/// What is known of one value: its element type (0 when unknown) and its dimensions.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ValueType {
    pub elem_type: i32,
    pub dims: Option<Vec<Dim>>,
}

/// The integer values tracked for shape computations are at most this long.
const MAX_TRACKED_LEN: usize = 16;

/// The types and shapes of the values of one graph (subgraphs are not visited).
#[derive(Clone, Debug, Default)]
pub struct Shapes {
    values: HashMap<String, ValueType>,
    /// Small integer values known at build time, dimension by dimension (a symbolic
    /// dimension is `Dim::Symbol`), for the inputs of Reshape, Expand and the like.
    integers: HashMap<String, Vec<Dim>>,
}

impl Shapes {
    /// Infers what can be inferred of `graph`'s values.
    pub fn infer(graph: &GraphProto) -> Shapes {
        let mut shapes = Shapes::default();
        for value in graph.input.iter().chain(&graph.output).chain(&graph.value_info) {
            if let Some(declared) = ir::declared_type(value) {
                shapes.values.insert(value.name().to_string(), declared);
            }
        }
        for tensor in &graph.initializer {
            let dims = tensor.dims.iter().map(|&d| Dim::Known(d)).collect();
            let value = ValueType { elem_type: tensor.data_type(), dims: Some(dims) };
            shapes.values.insert(tensor.name().to_string(), value);
            shapes.track_constant(tensor.name(), tensor);
        }

        let order =
            ir::topological_order(graph).unwrap_or_else(|_| (0..graph.node.len()).collect());
        for index in order {
            shapes.infer_node(&graph.node[index]);
        }
        shapes
    }

    /// What is known of `value`.
    pub fn get(&self, value: &str) -> Option<&ValueType> {
        self.values.get(value)
    }

    /// The dimensions of `value`, when its rank is known.
    pub fn dims(&self, value: &str) -> Option<&[Dim]> {
        self.values.get(value)?.dims.as_deref()
    }

    /// The rank of `value`, when known.
    pub fn rank(&self, value: &str) -> Option<usize> {
        self.dims(value).map(<[Dim]>::len)
    }

    /// Every dimension of `value`, when all are numbers.
    pub fn known_dims(&self, value: &str) -> Option<Vec<i64>> {
        self.dims(value)?.iter().map(Dim::known).collect()
    }

    /// The element type of `value`, when known.
    pub fn elem_type(&self, value: &str) -> Option<i32> {
        self.values.get(value).map(|v| v.elem_type).filter(|&t| t != 0)
    }

    /// The integer values of `value`, when it is a small integer tensor known at build time.
    pub fn integers(&self, value: &str) -> Option<&[Dim]> {
        self.integers.get(value).map(Vec::as_slice)
    }

    fn track_constant(&mut self, name: &str, tensor: &crate::ir::proto::TensorProto) {
        let Ok(values) = ir::tensor_to_i64(tensor) else { return };
        if values.len() <= MAX_TRACKED_LEN && values.ndim() <= 1 {
            self.integers.insert(name.to_string(), values.iter().map(|&v| Dim::Known(v)).collect());
        }
    }

    fn set(&mut self, name: &str, elem_type: i32, dims: Option<Vec<Dim>>) {
        if name.is_empty() {
            return;
        }
        let entry = self.values.entry(name.to_string()).or_default();
        if entry.elem_type == 0 {
            entry.elem_type = elem_type;
        }
        // A declared shape wins over an inferred one, unless the declared one has no rank.
        if entry.dims.is_none() {
            entry.dims = dims;
        }
    }

    fn infer_node(&mut self, node: &NodeProto) {
        if node.domain() == "com.microsoft" {
            self.infer_contrib_node(node);
            return;
        }
        if !matches!(node.domain(), "" | "ai.onnx") {
            return;
        }
        let input = |i: usize| node.input.get(i).map(String::as_str).unwrap_or_default();
        let elem = |shapes: &Shapes, i: usize| shapes.elem_type(input(i)).unwrap_or(0);
        let dims = |shapes: &Shapes, i: usize| shapes.dims(input(i)).map(<[Dim]>::to_vec);
        let output = node.output.first().map(String::as_str).unwrap_or_default();

        match node.op_type() {
            "Constant" => {
                if let Some(tensor) = constant_value(node) {
                    let dims = tensor.dims.iter().map(|&d| Dim::Known(d)).collect();
                    self.set(output, tensor.data_type(), Some(dims));
                    self.track_constant(output, &tensor);
                }
            }
            "Identity"
            | "Relu"
            | "Sigmoid"
            | "Tanh"
            | "Erf"
            | "Sqrt"
            | "Exp"
            | "Log"
            | "Neg"
            | "Abs"
            | "Reciprocal"
            | "Floor"
            | "Ceil"
            | "Round"
            | "Softmax"
            | "LeakyRelu"
            | "Gelu"
            | "Clip"
            | "Dropout"
            | "LayerNormalization"
            | "BatchNormalization"
            | "InstanceNormalization"
            | "LogSoftmax"
            | "HardSigmoid"
            | "Elu"
            | "Selu" => {
                self.set(output, elem(self, 0), dims(self, 0));
                if node.op_type() == "Identity" {
                    if let Some(values) = self.integers.get(input(0)).cloned() {
                        self.integers.insert(output.to_string(), values);
                    }
                }
            }
            "Cast" => {
                let to = node_attr_int(node, "to").unwrap_or(0) as i32;
                self.set(output, to, dims(self, 0));
                if let Some(values) = self.integers.get(input(0)).cloned() {
                    if is_integer(to) {
                        self.integers.insert(output.to_string(), values);
                    }
                }
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Mod" => {
                let shape = broadcast(node.input.iter().map(|i| self.dims(i)));
                self.set(output, elem(self, 0), shape);
                self.fold_integers(node);
            }
            "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or"
            | "Not" => {
                let shape = broadcast(node.input.iter().map(|i| self.dims(i)));
                self.set(output, DataType::Bool as i32, shape);
                if node.op_type() == "Equal" {
                    self.track_equal(node);
                }
            }
            "Where" => {
                let shape = broadcast(node.input.iter().map(|i| self.dims(i)));
                self.set(output, elem(self, 1), shape);
                self.track_where(node);
            }
            "MatMul" => {
                let shape = match (dims(self, 0), dims(self, 1)) {
                    (Some(a), Some(b)) => matmul(&a, &b),
                    _ => None,
                };
                self.set(output, elem(self, 0), shape);
            }
            "Gemm" => {
                let shape = match (dims(self, 0), dims(self, 1)) {
                    (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => {
                        let trans_a = node_attr_int(node, "transA").unwrap_or(0) != 0;
                        let trans_b = node_attr_int(node, "transB").unwrap_or(0) != 0;
                        let m = a[usize::from(trans_a)].clone();
                        let n = b[usize::from(!trans_b)].clone();
                        Some(vec![m, n])
                    }
                    _ => None,
                };
                self.set(output, elem(self, 0), shape);
            }
            "Transpose" => {
                let shape = dims(self, 0).map(|d| {
                    let perm = node_attr_ints(node, "perm")
                        .map(<[i64]>::to_vec)
                        .unwrap_or_else(|| (0..d.len() as i64).rev().collect());
                    perm.iter()
                        .map(|&p| d.get(p as usize).cloned().unwrap_or(Dim::Unknown))
                        .collect()
                });
                self.set(output, elem(self, 0), shape);
            }
            "Reshape" => {
                let shape = self.reshape_target(node);
                let flat = shape.as_ref().is_some_and(|d| d.len() == 1);
                self.set(output, elem(self, 0), shape);
                if let Some(values) = self.integers.get(input(0)).filter(|_| flat).cloned() {
                    self.integers.insert(output.to_string(), values);
                }
            }
            "Unsqueeze" | "Squeeze" => {
                let axes = self.axes(node);
                let shape = match (dims(self, 0), axes) {
                    (Some(d), Some(axes)) if node.op_type() == "Unsqueeze" => unsqueeze(&d, &axes),
                    (Some(d), Some(axes)) => squeeze(&d, &axes),
                    (Some(d), None) if node.op_type() == "Squeeze" => {
                        let all_known = d.iter().all(|x| x.known().is_some());
                        all_known.then(|| d.into_iter().filter(|x| *x != Dim::Known(1)).collect())
                    }
                    _ => None,
                };
                self.set(output, elem(self, 0), shape.clone());
                if let (Some(values), Some(axes)) = (self.integers.get(input(0)), self.axes(node)) {
                    if node.op_type() == "Unsqueeze" && axes == [0] && values.len() == 1 {
                        self.integers.insert(output.to_string(), values.clone());
                    }
                }
            }
            "Concat" => {
                let axis = node_attr_int(node, "axis").unwrap_or(0);
                let shape = concat(node.input.iter().map(|i| self.dims(i)), axis);
                self.set(output, elem(self, 0), shape);
                let parts: Option<Vec<Dim>> = node
                    .input
                    .iter()
                    .map(|i| self.integers.get(i).cloned())
                    .collect::<Option<Vec<_>>>()
                    .map(|parts| parts.concat());
                if let Some(values) = parts.filter(|v| v.len() <= MAX_TRACKED_LEN) {
                    self.integers.insert(output.to_string(), values);
                }
            }
            "Shape" => {
                let rank = self.rank(input(0));
                let shape = rank.map(|r| vec![Dim::Known(r as i64)]);
                self.set(output, DataType::Int64 as i32, shape);
                if let Some(d) = dims(self, 0).filter(|_| node.attribute.is_empty()) {
                    self.integers.insert(output.to_string(), d);
                }
            }
            "Gather" => {
                let axis = node_attr_int(node, "axis").unwrap_or(0);
                let shape = match (dims(self, 0), dims(self, 1)) {
                    (Some(data), Some(indices)) => {
                        let axis = normalize(axis, data.len());
                        axis.map(|a| [&data[..a], &indices[..], &data[a + 1..]].concat())
                    }
                    _ => None,
                };
                self.set(output, elem(self, 0), shape);
                let picked = match (self.integers.get(input(0)), self.integers.get(input(1))) {
                    (Some(values), Some(indices)) if axis == 0 => indices
                        .iter()
                        .map(|i| {
                            let i = i.known()?;
                            let i = if i < 0 { i + values.len() as i64 } else { i };
                            values.get(usize::try_from(i).ok()?).cloned()
                        })
                        .collect::<Option<Vec<_>>>(),
                    _ => None,
                };
                if let Some(values) = picked {
                    self.integers.insert(output.to_string(), values);
                }
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" => {
                let keep = node_attr_int(node, "keepdims").unwrap_or(1) != 0;
                let shape = match (dims(self, 0), self.axes(node)) {
                    (Some(d), Some(axes)) => reduce(&d, &axes, keep),
                    _ => None,
                };
                self.set(output, elem(self, 0), shape);
            }
            "Flatten" => {
                let shape = dims(self, 0).and_then(|d| {
                    let axis = normalize(node_attr_int(node, "axis").unwrap_or(1), d.len() + 1)?;
                    let product = |part: &[Dim]| -> Dim {
                        part.iter()
                            .try_fold(1i64, |p, x| Some(p * x.known()?))
                            .map_or(Dim::Unknown, Dim::Known)
                    };
                    Some(vec![product(&d[..axis]), product(&d[axis..])])
                });
                self.set(output, elem(self, 0), shape);
            }
            "Conv" => {
                // Only the channel count matters to rewrites: the spatial sizes need pads.
                let shape = match (dims(self, 0), dims(self, 1)) {
                    (Some(x), Some(w)) if x.len() == w.len() && x.len() >= 3 => {
                        let mut out = vec![x[0].clone(), w[0].clone()];
                        out.extend(std::iter::repeat_n(Dim::Unknown, x.len() - 2));
                        Some(out)
                    }
                    _ => None,
                };
                self.set(output, elem(self, 0), shape);
            }
            "MaxPool" | "AveragePool" | "LpPool" | "GlobalAveragePool" | "GlobalMaxPool"
            | "GlobalLpPool" => {
                // Batch and channels pass through; a global pool leaves 1 on each spatial axis.
                let global = node.op_type().starts_with("Global");
                let shape = dims(self, 0).filter(|x| x.len() >= 3).map(|x| {
                    let spatial = if global { Dim::Known(1) } else { Dim::Unknown };
                    let mut out = vec![x[0].clone(), x[1].clone()];
                    out.extend(std::iter::repeat_n(spatial, x.len() - 2));
                    out
                });
                self.set(output, elem(self, 0), shape);
            }
            "Slice" => {
                let shape = dims(self, 0).map(|d| self.slice(node, &d));
                self.set(output, elem(self, 0), shape);
            }
            "Expand" => {
                // The target's values, or at least its length: unknown sizes then broadcast
                // against the input's, which Expand cannot shrink.
                let target = node.input.get(1).and_then(|t| self.integers.get(t)).cloned();
                let target = target.or_else(|| {
                    let length = self.known_dims(input(1)).filter(|d| d.len() == 1)?[0];
                    Some(vec![Dim::Unknown; usize::try_from(length).ok()?])
                });
                let shape = match (dims(self, 0), target) {
                    (Some(d), Some(t)) => broadcast([Some(&d[..]), Some(&t[..])].into_iter()),
                    (_, Some(t)) => Some(vec![Dim::Unknown; t.len()]),
                    _ => None,
                };
                self.set(output, elem(self, 0), shape);
            }
            "ConstantOfShape" => {
                let shape = self.integers.get(input(0)).cloned();
                let value = node.attribute.iter().find(|a| a.name() == "value");
                let tensor = value.and_then(|a| a.t.as_ref());
                let elem_type = tensor.map_or(1, |t| t.data_type());
                self.set(output, elem_type, shape.clone());
                // A vector of one integer repeated, as PyTorch's `expand` idiom builds.
                let fill = tensor.and_then(|t| ir::tensor_to_i64(t).ok());
                let fill = fill.and_then(|v| (v.len() == 1).then(|| v.iter().copied().next())?);
                if let (Some(fill), Some([Dim::Known(length)])) = (fill, shape.as_deref()) {
                    if (0..=MAX_TRACKED_LEN as i64).contains(length) {
                        let values = vec![Dim::Known(fill); *length as usize];
                        self.integers.insert(output.to_string(), values);
                    }
                }
            }
            "Tile" | "Pad" | "Split" => {
                // The rank is kept; sizes along the changed axes are not worked out.
                let rank = self.rank(input(0));
                for out in &node.output {
                    self.set(out, elem(self, 0), rank.map(|r| vec![Dim::Unknown; r]));
                }
            }
            _ => {}
        }
    }

    /// A Slice's output dimensions: computed where the input dimension and the bounds are
    /// numbers; a slice from 0 to a symbolic end, by step 1, takes the symbol (exporters slice
    /// position tables to the sequence length so, which cannot exceed the table); otherwise
    /// unknown along the sliced axes.
    fn slice(&self, node: &NodeProto, input: &[Dim]) -> Vec<Dim> {
        let rank = input.len();
        let operand = |i: usize, attribute: &str| -> Option<Vec<Dim>> {
            if let Some(values) = node_attr_ints(node, attribute) {
                return Some(values.iter().map(|&v| Dim::Known(v)).collect());
            }
            let name = node.input.get(i).filter(|n| !n.is_empty())?;
            self.integers.get(name).cloned()
        };
        let (Some(starts), Some(ends)) = (operand(1, "starts"), operand(2, "ends")) else {
            return vec![Dim::Unknown; rank];
        };
        let axes = operand(3, "axes")
            .unwrap_or_else(|| (0..starts.len() as i64).map(Dim::Known).collect());
        let steps = operand(4, "").unwrap_or_else(|| vec![Dim::Known(1); starts.len()]);

        let mut out = input.to_vec();
        for (i, axis) in axes.iter().enumerate() {
            let Some(axis) = axis.known().and_then(|a| normalize(a, rank)) else {
                return vec![Dim::Unknown; rank];
            };
            let (start, end, step) = (starts.get(i), ends.get(i), steps.get(i));
            let (Some(start), Some(end), Some(step)) = (start, end, step) else {
                return vec![Dim::Unknown; rank];
            };
            out[axis] = match (start.known(), end, step.known(), input[axis].known()) {
                (Some(s), Dim::Known(e), Some(t), Some(d)) if t != 0 => {
                    Dim::Known(slice_length(s, *e, t, d))
                }
                (Some(0), Dim::Symbol(symbol), Some(1), _) => Dim::Symbol(symbol.clone()),
                _ => Dim::Unknown,
            };
        }
        out
    }

    /// The shape rules of the ONNX Runtime contrib operators that fusions write, so that
    /// rules after them still see shapes: each output named here has its first input's type
    /// and shape (SkipLayerNormalization's sum, its fourth output, included).
    fn infer_contrib_node(&mut self, node: &NodeProto) {
        let outputs: &[usize] = match node.op_type() {
            "Gelu" | "FastGelu" | "BiasGelu" => &[0],
            "SkipLayerNormalization" => &[0, 3],
            _ => return,
        };
        let Some(input) = node.input.first() else { return };
        let elem_type = self.elem_type(input).unwrap_or(0);
        let dims = self.dims(input).map(<[Dim]>::to_vec);
        for &position in outputs {
            if let Some(output) = node.output.get(position) {
                self.set(output, elem_type, dims.clone());
            }
        }
    }

    /// Element-wise arithmetic on tracked integers of equal length or scalars.
    fn fold_integers(&mut self, node: &NodeProto) {
        let (Some(a), Some(b)) = (
            node.input.first().and_then(|i| self.integers.get(i)),
            node.input.get(1).and_then(|i| self.integers.get(i)),
        ) else {
            return;
        };
        let len = a.len().max(b.len());
        if !(a.len() == b.len() || a.len() == 1 || b.len() == 1) {
            return;
        }
        let pick = |v: &[Dim], i: usize| if v.len() == 1 { v[0].clone() } else { v[i].clone() };
        let values = (0..len)
            .map(|i| match (pick(a, i).known(), pick(b, i).known()) {
                (Some(x), Some(y)) => match node.op_type() {
                    "Add" => Dim::Known(x + y),
                    "Sub" => Dim::Known(x - y),
                    "Mul" => Dim::Known(x * y),
                    "Div" if y != 0 => Dim::Known(x.div_euclid(y)),
                    _ => Dim::Unknown,
                },
                _ => Dim::Unknown,
            })
            .collect();
        if let Some(output) = node.output.first() {
            self.integers.insert(output.clone(), values);
        }
    }

    /// `Equal` of tracked integers, element by element, as 1 or 0 where it can be told: a
    /// symbolic dimension is never negative and always equals itself.
    fn track_equal(&mut self, node: &NodeProto) {
        let (Some(a), Some(b)) = (
            node.input.first().and_then(|i| self.integers.get(i)),
            node.input.get(1).and_then(|i| self.integers.get(i)),
        ) else {
            return;
        };
        if a.len() != b.len() && a.len() != 1 && b.len() != 1 {
            return;
        }
        let pick = |v: &[Dim], i: usize| if v.len() == 1 { v[0].clone() } else { v[i].clone() };
        let values = (0..a.len().max(b.len()))
            .map(|i| match (pick(a, i), pick(b, i)) {
                (Dim::Known(x), Dim::Known(y)) => Dim::Known(i64::from(x == y)),
                (Dim::Symbol(_), Dim::Known(y)) | (Dim::Known(y), Dim::Symbol(_)) if y < 0 => {
                    Dim::Known(0)
                }
                (Dim::Symbol(x), Dim::Symbol(y)) if x == y => Dim::Known(1),
                _ => Dim::Unknown,
            })
            .collect();
        if let Some(output) = node.output.first() {
            self.integers.insert(output.clone(), values);
        }
    }

    /// `Where` over tracked integers, element by element, where the condition is known.
    fn track_where(&mut self, node: &NodeProto) {
        let tracked = |i: usize| node.input.get(i).and_then(|name| self.integers.get(name));
        let (Some(condition), Some(yes), Some(no)) = (tracked(0), tracked(1), tracked(2)) else {
            return;
        };
        let len = condition.len().max(yes.len()).max(no.len());
        if [condition.len(), yes.len(), no.len()].iter().any(|&l| l != len && l != 1) {
            return;
        }
        let pick = |v: &[Dim], i: usize| if v.len() == 1 { v[0].clone() } else { v[i].clone() };
        let values = (0..len)
            .map(|i| match pick(condition, i) {
                Dim::Known(0) => pick(no, i),
                Dim::Known(_) => pick(yes, i),
                _ => Dim::Unknown,
            })
            .collect();
        if let Some(output) = node.output.first() {
            self.integers.insert(output.clone(), values);
        }
    }

    /// The axes of a Squeeze, Unsqueeze or reduction: the `axes` attribute (older opsets)
    /// or the constant second input.
    fn axes(&self, node: &NodeProto) -> Option<Vec<i64>> {
        if let Some(axes) = node_attr_ints(node, "axes") {
            return Some(axes.to_vec());
        }
        let name = node.input.get(1).filter(|n| !n.is_empty())?;
        self.integers.get(name)?.iter().map(Dim::known).collect()
    }

    /// A Reshape's output dimensions from its target shape: 0 copies the input's dimension
    /// (unless `allowzero`), -1 is what the element count leaves.
    fn reshape_target(&self, node: &NodeProto) -> Option<Vec<Dim>> {
        let target = self.integers.get(node.input.get(1)?)?;
        let input = self.dims(node.input.first()?);
        let allow_zero = node_attr_int(node, "allowzero").unwrap_or(0) != 0;
        let mut dims: Vec<Dim> = target
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dim::Known(0) if !allow_zero => {
                    input.and_then(|x| x.get(i).cloned()).unwrap_or(Dim::Unknown)
                }
                other => other.clone(),
            })
            .collect();
        if let Some(position) = dims.iter().position(|d| *d == Dim::Known(-1)) {
            let total: Option<i64> =
                input.and_then(|x| x.iter().try_fold(1i64, |p, d| Some(p * d.known()?)));
            let rest: Option<i64> = dims
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != position)
                .try_fold(1i64, |p, (_, d)| Some(p * d.known()?));
            dims[position] = match (total, rest) {
                (Some(total), Some(rest)) if rest > 0 => Dim::Known(total / rest),
                _ => Dim::Unknown,
            };
        }
        Some(dims)
    }
}

/// How many elements `Slice` takes from a dimension of size `size`, as the operator clamps
/// its bounds.
fn slice_length(start: i64, end: i64, step: i64, size: i64) -> i64 {
    let resolve = |v: i64| if v < 0 { v.saturating_add(size) } else { v };
    if step > 0 {
        let start = resolve(start).clamp(0, size);
        let end = resolve(end).clamp(0, size);
        ((end - start + step - 1) / step).max(0)
    } else {
        let start = resolve(start).clamp(0, size - 1);
        let end = resolve(end).clamp(-1, size - 1);
        ((start - end + (-step) - 1) / (-step)).max(0)
    }
}

fn is_integer(data_type: i32) -> bool {
    use DataType as T;
    [T::Int64, T::Int32, T::Int16, T::Int8, T::Uint8, T::Uint16, T::Uint32]
        .iter()
        .any(|t| *t as i32 == data_type)
}

/// The tensor a Constant node holds, for its `value`, `value_float(s)` and `value_int(s)`.
pub fn constant_value(node: &NodeProto) -> Option<crate::ir::proto::TensorProto> {
    let attribute = node.attribute.first()?;
    let tensor = match (attribute.name(), attribute.r#type()) {
        ("value", AttributeType::Tensor) => attribute.t.clone()?,
        ("value_float", AttributeType::Float) => {
            let value = ndarray::arr0(attribute.f()).into_dyn();
            ir::tensor_from_f32("", &value)
        }
        ("value_floats", AttributeType::Floats) => {
            let value = ndarray::Array1::from(attribute.floats.clone()).into_dyn();
            ir::tensor_from_f32("", &value)
        }
        ("value_int", AttributeType::Int) => {
            ir::tensor_from_i64("", &ndarray::arr0(attribute.i()).into_dyn())
        }
        ("value_ints", AttributeType::Ints) => {
            let value = ndarray::Array1::from(attribute.ints.clone()).into_dyn();
            ir::tensor_from_i64("", &value)
        }
        _ => return None,
    };
    Some(tensor)
}

fn normalize(axis: i64, rank: usize) -> Option<usize> {
    let axis = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(axis).ok().filter(|&a| a < rank)
}

/// Numpy broadcasting of every input's dimensions; `None` when a rank is unknown.
fn broadcast<'a>(inputs: impl Iterator<Item = Option<&'a [Dim]>>) -> Option<Vec<Dim>> {
    let shapes: Vec<&[Dim]> = inputs.collect::<Option<Vec<_>>>()?;
    let rank = shapes.iter().map(|s| s.len()).max()?;
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut dim = Dim::Known(1);
        for shape in &shapes {
            let Some(offset) = (i + shape.len()).checked_sub(rank) else { continue };
            let d = &shape[offset];
            dim = match (&dim, d) {
                (Dim::Known(1), other) => other.clone(),
                (_, Dim::Known(1)) => dim,
                (a, b) if a == b => dim,
                (Dim::Unknown, other) | (other, Dim::Unknown) => match other {
                    Dim::Known(_) => other.clone(),
                    _ => Dim::Unknown,
                },
                _ => Dim::Unknown,
            };
        }
        out.push(dim);
    }
    Some(out)
}

fn matmul(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (a_batch, m) = match a.len() {
        1 => (&a[..0], None),
        n => (&a[..n - 2], Some(a[n - 2].clone())),
    };
    let (b_batch, n) = match b.len() {
        1 => (&b[..0], None),
        k => (&b[..k - 2], Some(b[k - 1].clone())),
    };
    let mut out = broadcast([Some(a_batch), Some(b_batch)].into_iter())?;
    out.extend(m);
    out.extend(n);
    Some(out)
}

fn unsqueeze(dims: &[Dim], axes: &[i64]) -> Option<Vec<Dim>> {
    let rank = dims.len() + axes.len();
    let mut axes: Vec<usize> =
        axes.iter().map(|&a| normalize(a, rank)).collect::<Option<Vec<_>>>()?;
    axes.sort_unstable();
    let mut out = Vec::with_capacity(rank);
    let mut rest = dims.iter();
    for i in 0..rank {
        if axes.binary_search(&i).is_ok() {
            out.push(Dim::Known(1));
        } else {
            out.push(rest.next()?.clone());
        }
    }
    Some(out)
}

fn squeeze(dims: &[Dim], axes: &[i64]) -> Option<Vec<Dim>> {
    let axes: Vec<usize> =
        axes.iter().map(|&a| normalize(a, dims.len())).collect::<Option<Vec<_>>>()?;
    Some(
        dims.iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, d)| d.clone())
            .collect(),
    )
}

fn reduce(dims: &[Dim], axes: &[i64], keep: bool) -> Option<Vec<Dim>> {
    let axes: Vec<usize> =
        axes.iter().map(|&a| normalize(a, dims.len())).collect::<Option<Vec<_>>>()?;
    let reduced = |i: usize| axes.is_empty() || axes.contains(&i);
    Some(
        dims.iter()
            .enumerate()
            .filter_map(|(i, d)| match (reduced(i), keep) {
                (true, true) => Some(Dim::Known(1)),
                (true, false) => None,
                (false, _) => Some(d.clone()),
            })
            .collect(),
    )
}

fn concat<'a>(inputs: impl Iterator<Item = Option<&'a [Dim]>>, axis: i64) -> Option<Vec<Dim>> {
    let shapes: Vec<&[Dim]> = inputs.collect::<Option<Vec<_>>>()?;
    let first = shapes.first()?;
    let axis = normalize(axis, first.len())?;
    let mut out = first.to_vec();
    let total = shapes.iter().try_fold(0i64, |sum, s| Some(sum + s.get(axis)?.known()?));
    out[axis] = total.map_or(Dim::Unknown, Dim::Known);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(values: &[i64]) -> Vec<Dim> {
        values.iter().map(|&v| Dim::Known(v)).collect()
    }

    /// PyTorch's `x.expand(batch, seq)` as it exports it: the target goes through
    /// `Where(Equal(target, -1 * ones), ones, target)`, whose result is the target itself.
    #[test]
    fn the_expand_idiom_keeps_symbolic_sizes() {
        use crate::ir::{attr_tensor, make_node, tensor_from_i64, tensor_value_info};

        let symbols = [Dim::Symbol("batch".into()), Dim::Symbol("seq".into())];
        let ids = tensor_value_info("ids", DataType::Int64 as i32, Some(&symbols));
        let int = |v: &[i64]| tensor_from_i64("", &ndarray::Array1::from(v.to_vec()).into_dyn());
        let constant = |name: &str, v: &[i64]| {
            let mut node = make_node("Constant", &[], &[name], name);
            node.attribute.push(attr_tensor("value", int(v)));
            node
        };
        let mut fill = make_node("ConstantOfShape", &["flat_shape"], &["ones"], "fill");
        fill.attribute.push(attr_tensor("value", int(&[1])));
        let graph = GraphProto {
            input: vec![ids],
            initializer: vec![tensor_from_i64("table", &ndarray::ArrayD::zeros(vec![1, 1]))],
            node: vec![
                make_node("Shape", &["ids"], &["shape"], "shape"),
                constant("minus_one", &[-1]),
                make_node("Reshape", &["shape", "minus_one"], &["flat"], "flat"),
                make_node("Shape", &["flat"], &["flat_shape"], "flat_shape"),
                fill,
                make_node("Mul", &["ones", "minus_one"], &["negatives"], "negatives"),
                make_node("Equal", &["flat", "negatives"], &["is_free"], "is_free"),
                make_node("Where", &["is_free", "ones", "flat"], &["target"], "target"),
                make_node("Expand", &["table", "target"], &["expanded"], "expanded"),
            ],
            ..Default::default()
        };

        let shapes = Shapes::infer(&graph);

        let symbols = [Dim::Symbol("batch".into()), Dim::Symbol("seq".into())];
        assert_eq!(shapes.integers("target"), Some(&symbols[..]));
        assert_eq!(shapes.dims("expanded"), Some(&symbols[..]));
    }

    #[test]
    fn broadcasting_follows_numpy() {
        let a = d(&[2, 1, 4]);
        let b = d(&[3, 1]);
        assert_eq!(broadcast([Some(&a[..]), Some(&b[..])].into_iter()), Some(d(&[2, 3, 4])));
        let batch = vec![Dim::Symbol("n".into()), Dim::Known(4)];
        let bias = d(&[4]);
        assert_eq!(broadcast([Some(&batch[..]), Some(&bias[..])].into_iter()), Some(batch));
    }

    #[test]
    fn slice_lengths_clamp_as_the_operator_does() {
        assert_eq!(slice_length(0, 3, 1, 10), 3);
        assert_eq!(slice_length(-3, i64::MAX, 1, 10), 3);
        assert_eq!(slice_length(2, 100, 3, 10), 3);
        assert_eq!(slice_length(-1, i64::MIN, -1, 10), 10);
        assert_eq!(slice_length(8, 2, -2, 10), 3);
        assert_eq!(slice_length(5, 2, 1, 10), 0);
    }

    #[test]
    fn matmul_squeeze_unsqueeze_reduce() {
        assert_eq!(matmul(&d(&[2, 5, 3]), &d(&[3, 7])), Some(d(&[2, 5, 7])));
        assert_eq!(matmul(&d(&[3]), &d(&[3, 7])), Some(d(&[7])));
        assert_eq!(unsqueeze(&d(&[3, 4]), &[0, -1]), Some(d(&[1, 3, 4, 1])));
        assert_eq!(squeeze(&d(&[1, 3, 1]), &[0, 2]), Some(d(&[3])));
        assert_eq!(reduce(&d(&[2, 3, 4]), &[-1], true), Some(d(&[2, 3, 1])));
        assert_eq!(reduce(&d(&[2, 3, 4]), &[1], false), Some(d(&[2, 4])));
    }
}
