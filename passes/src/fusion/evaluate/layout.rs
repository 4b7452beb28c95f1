//! Operators that move elements without computing new ones (Reshape, Flatten, Transpose,
//! Squeeze, Unsqueeze, Concat, Gather, Slice, Expand), those that generate them
//! (ConstantOfShape, Range), and Shape and Size of a statically known shape.

use ndarray::{ArrayD, Axis, IxDyn};

use super::elementwise::{broadcast_shape, broadcast_to, check_size, Numeric};
use super::value::{array_of, with_type, Element, Value};
use super::EvalError;

fn invalid(reason: String) -> EvalError {
    EvalError::Invalid(reason)
}

/// `axis` counted from the end when negative, checked against `rank`.
pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Result<usize, EvalError> {
    let rank = rank as i64;
    let normalized = if axis < 0 { axis + rank } else { axis };
    if (0..rank).contains(&normalized) {
        Ok(normalized as usize)
    } else {
        Err(invalid(format!("axis {axis} is out of range for rank {rank}")))
    }
}

/// Normalized, distinct axes.
fn distinct_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, EvalError> {
    let mut normalized = Vec::with_capacity(axes.len());
    for &axis in axes {
        let axis = normalize_axis(axis, rank)?;
        if normalized.contains(&axis) {
            return Err(invalid(format!("axes {axes:?} repeat an axis")));
        }
        normalized.push(axis);
    }
    Ok(normalized)
}

/// The same elements in row-major order under another shape.
fn relabel(value: &Value, shape: &[usize]) -> Result<Value, EvalError> {
    with_type!(value, T, array => {
        let values: Vec<T> = array.iter().copied().collect();
        Ok(T::wrap(array_of(shape, values)?))
    })
}

/// The output shape of Reshape: 0 copies the input's dimension (unless `allow_zero`), -1
/// takes what the element count leaves.
pub(crate) fn reshape_dims(
    input: &[usize],
    target: &[i64],
    allow_zero: bool,
) -> Result<Vec<usize>, EvalError> {
    let count: usize = input.iter().product();
    let mut dims = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (i, &t) in target.iter().enumerate() {
        let dim = match t {
            -1 if inferred.is_none() => {
                inferred = Some(i);
                1
            }
            0 if !allow_zero => *input
                .get(i)
                .ok_or_else(|| invalid(format!("shape {target:?} copies a missing dimension")))?,
            t if t >= 0 => t as usize,
            _ => return Err(invalid(format!("shape {target:?} is not a valid Reshape target"))),
        };
        dims.push(dim);
    }
    if allow_zero && inferred.is_some() && target.contains(&0) {
        return Err(invalid(format!("shape {target:?} has both 0 and -1 with allowzero")));
    }

    let known: usize = dims.iter().product();
    if let Some(position) = inferred {
        if known == 0 || !count.is_multiple_of(known) {
            return Err(invalid(format!("cannot reshape {input:?} to {target:?}")));
        }
        dims[position] = count / known;
    } else if known != count {
        return Err(invalid(format!("cannot reshape {input:?} to {target:?}")));
    }
    Ok(dims)
}

pub(crate) fn reshape(data: &Value, target: &[i64], allow_zero: bool) -> Result<Value, EvalError> {
    let dims = reshape_dims(data.shape(), target, allow_zero)?;
    relabel(data, &dims)
}

pub(crate) fn flatten(data: &Value, axis: i64) -> Result<Value, EvalError> {
    let shape = data.shape();
    let rank = shape.len() as i64;
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..=rank).contains(&axis) {
        return Err(invalid(format!("Flatten axis {axis} is out of range for rank {rank}")));
    }
    let (outer, inner) = shape.split_at(axis as usize);
    relabel(data, &[outer.iter().product(), inner.iter().product()])
}

/// Transpose by `perm` (the reverse of the axes when absent).
pub(crate) fn transpose(data: &Value, perm: Option<&[i64]>) -> Result<Value, EvalError> {
    let rank = data.shape().len();
    let perm: Vec<usize> = match perm {
        Some(perm) if perm.len() == rank => distinct_axes(perm, rank)?,
        Some(perm) => return Err(invalid(format!("perm {perm:?} does not fit rank {rank}"))),
        None => (0..rank).rev().collect(),
    };
    with_type!(data, T, array => {
        let view = array.view().permuted_axes(IxDyn(&perm));
        let shape = view.shape().to_vec();
        Ok(T::wrap(array_of(&shape, view.iter().copied().collect())?))
    })
}

/// Squeeze `axes`, or every dimension of 1 when there are none.
pub(crate) fn squeeze(data: &Value, axes: Option<&[i64]>) -> Result<Value, EvalError> {
    let shape = data.shape();
    let axes = match axes.filter(|a| !a.is_empty()) {
        Some(axes) => distinct_axes(axes, shape.len())?,
        None => (0..shape.len()).filter(|&i| shape[i] == 1).collect(),
    };
    if let Some(&axis) = axes.iter().find(|&&a| shape[a] != 1) {
        return Err(invalid(format!("Squeeze of axis {axis}, of size {}", shape[axis])));
    }
    let dims: Vec<usize> =
        shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
    relabel(data, &dims)
}

pub(crate) fn unsqueeze(data: &Value, axes: &[i64]) -> Result<Value, EvalError> {
    let shape = data.shape();
    let rank = shape.len() + axes.len();
    let axes = distinct_axes(axes, rank)?;
    let mut rest = shape.iter();
    let dims: Vec<usize> = (0..rank)
        .map(|i| if axes.contains(&i) { 1 } else { rest.next().copied().unwrap_or(1) })
        .collect();
    relabel(data, &dims)
}

pub(crate) fn concat(values: &[&Value], axis: i64) -> Result<Value, EvalError> {
    let first = values.first().ok_or_else(|| invalid("Concat has no inputs".into()))?;
    let axis = normalize_axis(axis, first.shape().len())?;
    with_type!(first, T => {
        let mut views = Vec::with_capacity(values.len());
        for value in values {
            let array = T::array(value).ok_or_else(|| {
                invalid(format!("Concat of {} and {}", first.type_name(), value.type_name()))
            })?;
            views.push(array.view());
        }
        let joined = ndarray::concatenate(Axis(axis), &views)
            .map_err(|e| invalid(format!("Concat of shapes that do not fit: {e}")))?;
        Ok(T::wrap(joined))
    })
}

pub(crate) fn gather(
    data: &Value,
    indices: &Value,
    axis: i64,
    max_bytes: usize,
) -> Result<Value, EvalError> {
    let shape = data.shape().to_vec();
    let axis = normalize_axis(axis, shape.len())?;
    let raw = indices.integers().ok_or_else(|| {
        invalid(format!("Gather indices are {}, not integers", indices.type_name()))
    })?;
    let size = shape[axis] as i64;
    let picked: Vec<usize> = raw
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + size } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| (j as i64) < size)
                .ok_or_else(|| invalid(format!("Gather index {i} is out of range for {size}")))
        })
        .collect::<Result<_, _>>()?;

    let out_shape = [&shape[..axis], indices.shape(), &shape[axis + 1..]].concat();
    check_size(out_shape.iter().product(), data.bytes() / data.len().max(1), max_bytes)?;
    with_type!(data, T, array => {
        let selected = array.select(Axis(axis), &picked);
        Ok(T::wrap(array_of(&out_shape, selected.iter().copied().collect())?))
    })
}

/// Slice with `starts`, `ends`, `axes` and `steps` as the inputs of opset 10 (or the
/// attributes before).
pub(crate) fn slice(
    data: &Value,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Value, EvalError> {
    let shape = data.shape().to_vec();
    if starts.len() != ends.len() {
        return Err(invalid(format!("Slice starts {starts:?} and ends {ends:?} differ")));
    }
    let all: Vec<i64> = (0..starts.len() as i64).collect();
    let axes = distinct_axes(axes.unwrap_or(&all), shape.len())?;
    let ones = vec![1; starts.len()];
    let steps = steps.unwrap_or(&ones);
    if axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(invalid("Slice starts, ends, axes and steps differ in length".into()));
    }

    let mut result = data.clone();
    for (k, &axis) in axes.iter().enumerate() {
        let picked = slice_indices(shape[axis], starts[k], ends[k], steps[k])?;
        result = with_type!(&result, T, array => T::wrap(array.select(Axis(axis), &picked)));
    }
    Ok(result)
}

/// The indices one axis of `size` keeps, by the ONNX clamping rules.
pub(crate) fn slice_indices(
    size: usize,
    start: i64,
    end: i64,
    step: i64,
) -> Result<Vec<usize>, EvalError> {
    if step == 0 {
        return Err(invalid("Slice step 0".into()));
    }
    let size = size as i128;
    let (start, end, step) = (i128::from(start), i128::from(end), i128::from(step));
    let start = if start < 0 { start + size } else { start };
    let end = if end < 0 { end + size } else { end };
    let (start, end) = if step > 0 {
        (start.clamp(0, size), end.clamp(0, size))
    } else {
        (start.clamp(0, size - 1), end.clamp(-1, size - 1))
    };

    let mut picked = Vec::new();
    let mut i = start;
    while (step > 0 && i < end) || (step < 0 && i > end) {
        picked.push(i as usize);
        i += step;
    }
    Ok(picked)
}

/// Expand: the data broadcast against `shape`, both ways.
pub(crate) fn expand(data: &Value, shape: &[i64], max_bytes: usize) -> Result<Value, EvalError> {
    let target: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| invalid(format!("Expand to {shape:?}"))))
        .collect::<Result<_, _>>()?;
    let out = broadcast_shape(&[data.shape(), &target])?;
    check_size(out.iter().product(), data.bytes() / data.len().max(1), max_bytes)?;
    with_type!(data, T, array => Ok(T::wrap(broadcast_to(array, &out)?.to_owned())))
}

/// ConstantOfShape: `fill` (one element) repeated over `shape`.
pub(crate) fn constant_of_shape(
    shape: &[i64],
    fill: &Value,
    max_bytes: usize,
) -> Result<Value, EvalError> {
    let dims: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| invalid(format!("ConstantOfShape {shape:?}"))))
        .collect::<Result<_, _>>()?;
    if fill.len() != 1 {
        return Err(invalid(format!("ConstantOfShape value has {} elements", fill.len())));
    }
    let count: usize = dims.iter().product();
    check_size(count, fill.bytes(), max_bytes)?;
    with_type!(fill, T, array => match array.iter().next() {
        Some(&element) => Ok(T::wrap(ArrayD::from_elem(IxDyn(&dims), element))),
        None => Err(invalid("ConstantOfShape value is empty".into())),
    })
}

/// Range as ONNX Runtime computes it: the count from the difference in the inputs' type
/// divided in float64, each element the previous one plus `delta` in the inputs' type.
pub(crate) fn range(
    start: &Value,
    limit: &Value,
    delta: &Value,
    max_bytes: usize,
) -> Result<Value, EvalError> {
    fn typed<T: Numeric>(
        start: &Value,
        limit: &Value,
        delta: &Value,
        max_bytes: usize,
    ) -> Result<Value, EvalError> {
        let scalar = |value: &Value| -> Result<T, EvalError> {
            let array = T::array(value).ok_or_else(|| {
                invalid(format!("Range of {} and {}", start.type_name(), value.type_name()))
            })?;
            match (array.len(), array.iter().next()) {
                (1, Some(&element)) => Ok(element),
                (n, _) => Err(invalid(format!("Range input of {n} elements, not a scalar"))),
            }
        };
        let (first, limit, delta) = (scalar(start)?, scalar(limit)?, scalar(delta)?);
        if delta.to_f64() == 0.0 {
            return Err(invalid("Range delta 0".into()));
        }
        let difference = if T::IS_FLOAT {
            limit.sub(first).to_f64()
        } else {
            // Integer overflow in the difference is undefined in ONNX Runtime's C++.
            let exact = limit.to_f64() - first.to_f64();
            T::from_f64(exact).ok_or_else(|| invalid("Range too wide".into()))?.to_f64()
        };
        let count = (difference / delta.to_f64()).ceil();
        if !count.is_finite() {
            return Err(invalid("Range of non-finite bounds".into()));
        }
        let count = count.max(0.0);
        check_size(count as usize, T::SIZE, max_bytes)?;

        let mut values = Vec::with_capacity(count as usize);
        let mut current = first;
        for _ in 0..count as usize {
            values.push(current);
            current = current.add(delta);
        }
        Ok(T::wrap(array_of(&[values.len()], values)?))
    }

    match start {
        Value::F32(_) => typed::<f32>(start, limit, delta, max_bytes),
        Value::F64(_) => typed::<f64>(start, limit, delta, max_bytes),
        Value::I32(_) => typed::<i32>(start, limit, delta, max_bytes),
        Value::I64(_) => typed::<i64>(start, limit, delta, max_bytes),
        other => {
            Err(EvalError::NotCovered(format!("Range of {} is not evaluated", other.type_name())))
        }
    }
}

/// Shape's output for a value of `dims`, from `start` to `end` (opset 15; negative counts
/// from the end, both clamped to the rank).
pub(crate) fn shape_of(dims: &[i64], start: Option<i64>, end: Option<i64>) -> Value {
    let rank = dims.len() as i64;
    let clamp = |position: i64| {
        let position = if position < 0 { position + rank } else { position };
        position.clamp(0, rank) as usize
    };
    let (from, to) = (clamp(start.unwrap_or(0)), clamp(end.unwrap_or(rank)));
    let picked = if from < to { dims[from..to].to_vec() } else { Vec::new() };
    Value::I64(ndarray::Array1::from(picked).into_dyn())
}

/// Size's output for a value of `dims`: the element count as an int64 scalar.
pub(crate) fn size_of(dims: &[i64]) -> Value {
    Value::I64(ArrayD::from_elem(IxDyn(&[]), dims.iter().product()))
}
