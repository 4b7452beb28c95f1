//! Element-wise operators with numpy broadcasting: arithmetic, comparisons, logic, Where
//! and the unary maths, each in the tensor's own element type, so that the results are the
//! ones ONNX Runtime's CPU kernels compute (float32 in float32, integers wrapping).

use ndarray::{ArrayD, ArrayViewD, IxDyn, Zip};

use super::value::{array_of, with_type, Element, Value};
use super::EvalError;

/// The shape numpy broadcasting gives `shapes`, or why they do not broadcast.
pub(crate) fn broadcast_shape(shapes: &[&[usize]]) -> Result<Vec<usize>, EvalError> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for shape in shapes {
        let offset = rank - shape.len();
        for (i, &dim) in shape.iter().enumerate() {
            let current = out[offset + i];
            out[offset + i] = match (current, dim) {
                (a, b) if a == b => a,
                (1, b) => b,
                (a, 1) => a,
                _ => {
                    return Err(EvalError::Invalid(format!(
                        "shapes {:?} do not broadcast",
                        shapes.iter().map(|s| s.to_vec()).collect::<Vec<_>>()
                    )))
                }
            };
        }
    }
    Ok(out)
}

/// Refuses a result of `elements` elements of `size` bytes beyond `max_bytes`.
pub(crate) fn check_size(elements: usize, size: usize, max_bytes: usize) -> Result<(), EvalError> {
    let bytes = elements.saturating_mul(size);
    if bytes > max_bytes {
        return Err(EvalError::TooLarge { bytes });
    }
    Ok(())
}

/// `f` applied to `a` and `b` broadcast against each other.
fn zip2<A: Copy, B: Copy, C>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    max_bytes: usize,
    f: impl Fn(A, B) -> Result<C, EvalError>,
) -> Result<ArrayD<C>, EvalError> {
    let shape = broadcast_shape(&[a.shape(), b.shape()])?;
    check_size(shape.iter().product(), std::mem::size_of::<C>(), max_bytes)?;
    let (a, b) = (broadcast_to(a, &shape)?, broadcast_to(b, &shape)?);

    let mut values = Vec::with_capacity(shape.iter().product());
    for (&x, &y) in a.iter().zip(b.iter()) {
        values.push(f(x, y)?);
    }
    array_of(&shape, values)
}

/// `array` as a view of `shape`, which numpy broadcasting must allow.
pub(crate) fn broadcast_to<'a, T>(
    array: &'a ArrayD<T>,
    shape: &[usize],
) -> Result<ArrayViewD<'a, T>, EvalError> {
    array.broadcast(IxDyn(shape)).ok_or_else(|| {
        EvalError::Invalid(format!("shape {:?} does not broadcast to {shape:?}", array.shape()))
    })
}

/// Arithmetic on one numeric element type.
pub(crate) trait Numeric: Element {
    const IS_FLOAT: bool;
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    /// `None` where the quotient is undefined (integer division by zero or overflow).
    fn div(self, other: Self) -> Option<Self>;
    /// The remainder with the divisor's sign (`fmod` false) or the dividend's (true).
    fn rem(self, other: Self, fmod: bool) -> Option<Self>;
    /// The smaller, NaN when either is (ONNX Runtime propagates NaN in Min and Max).
    fn min_of(self, other: Self) -> Self;
    fn max_of(self, other: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn to_f64(self) -> f64;
    /// The value of `x` truncated into this type; `None` when it does not fit.
    fn from_f64(x: f64) -> Option<Self>;
}

macro_rules! integer_numeric {
    ($t:ty) => {
        impl Numeric for $t {
            const IS_FLOAT: bool = false;

            fn add(self, other: Self) -> Self {
                self.wrapping_add(other)
            }

            fn sub(self, other: Self) -> Self {
                self.wrapping_sub(other)
            }

            fn mul(self, other: Self) -> Self {
                self.wrapping_mul(other)
            }

            fn div(self, other: Self) -> Option<Self> {
                self.checked_div(other)
            }

            fn rem(self, other: Self, fmod: bool) -> Option<Self> {
                let r = self.checked_rem(other)?;
                let signs_differ = (r < 0) != (other < 0);
                Some(if !fmod && r != 0 && signs_differ { r + other } else { r })
            }

            fn min_of(self, other: Self) -> Self {
                self.min(other)
            }

            fn max_of(self, other: Self) -> Self {
                self.max(other)
            }

            fn neg(self) -> Self {
                self.wrapping_neg()
            }

            fn abs(self) -> Self {
                self.wrapping_abs()
            }

            fn to_f64(self) -> f64 {
                self as f64
            }

            fn from_f64(x: f64) -> Option<Self> {
                let t = x.trunc();
                let fits = t.is_finite() && t >= <$t>::MIN as f64 && t < <$t>::MAX as f64 + 1.0;
                fits.then(|| t as $t)
            }
        }
    };
}

macro_rules! float_numeric {
    ($t:ty) => {
        impl Numeric for $t {
            const IS_FLOAT: bool = true;

            fn add(self, other: Self) -> Self {
                self + other
            }

            fn sub(self, other: Self) -> Self {
                self - other
            }

            fn mul(self, other: Self) -> Self {
                self * other
            }

            fn div(self, other: Self) -> Option<Self> {
                Some(self / other)
            }

            fn rem(self, other: Self, _fmod: bool) -> Option<Self> {
                Some(self % other)
            }

            fn min_of(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    <$t>::NAN
                } else {
                    self.min(other)
                }
            }

            fn max_of(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    <$t>::NAN
                } else {
                    self.max(other)
                }
            }

            fn neg(self) -> Self {
                -self
            }

            fn abs(self) -> Self {
                self.abs()
            }

            fn to_f64(self) -> f64 {
                self as f64
            }

            fn from_f64(x: f64) -> Option<Self> {
                Some(x as $t)
            }
        }
    };
}

integer_numeric!(i32);
integer_numeric!(i64);
float_numeric!(f32);
float_numeric!(f64);

/// The float operators (Sqrt, Reciprocal, Floor, Ceil).
trait Float: Numeric {
    fn sqrt(self) -> Self;
    fn recip(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
}

macro_rules! float_ops {
    ($t:ty) => {
        impl Float for $t {
            fn sqrt(self) -> Self {
                self.sqrt()
            }

            fn recip(self) -> Self {
                1.0 / self
            }

            fn floor(self) -> Self {
                self.floor()
            }

            fn ceil(self) -> Self {
                self.ceil()
            }
        }
    };
}

float_ops!(f32);
float_ops!(f64);

fn not_covered(op: &str, value: &Value) -> EvalError {
    EvalError::NotCovered(format!("{op} on {} is not evaluated", value.type_name()))
}

fn mismatch(op: &str, a: &Value, b: &Value) -> EvalError {
    EvalError::Invalid(format!("{op} of {} and {}", a.type_name(), b.type_name()))
}

/// Runs `$body` with `$t` the numeric type both values share (float32, float64, int32,
/// int64).
macro_rules! numeric_pair {
    ($op:expr, $a:expr, $b:expr, $t:ident => $body:expr) => {
        match ($a, $b) {
            (Value::F32(_), Value::F32(_)) => {
                type $t = f32;
                $body
            }
            (Value::F64(_), Value::F64(_)) => {
                type $t = f64;
                $body
            }
            (Value::I32(_), Value::I32(_)) => {
                type $t = i32;
                $body
            }
            (Value::I64(_), Value::I64(_)) => {
                type $t = i64;
                $body
            }
            (a, b) if a.data_type() == b.data_type() => Err(not_covered($op, a)),
            (a, b) => Err(mismatch($op, a, b)),
        }
    };
}

/// The arrays of `a` and `b`, both of element type `T`.
fn arrays<'v, T: Element>(
    op: &str,
    a: &'v Value,
    b: &'v Value,
) -> Result<(&'v ArrayD<T>, &'v ArrayD<T>), EvalError> {
    match (T::array(a), T::array(b)) {
        (Some(x), Some(y)) => Ok((x, y)),
        _ => Err(mismatch(op, a, b)),
    }
}

/// Add, Sub, Mul, Div, Mod, Min and Max of two values.
pub(crate) fn arithmetic(
    op: &str,
    a: &Value,
    b: &Value,
    fmod: bool,
    max_bytes: usize,
) -> Result<Value, EvalError> {
    numeric_pair!(op, a, b, T => {
        let (x, y) = arrays::<T>(op, a, b)?;
        if op == "Mod" && T::IS_FLOAT && !fmod {
            return Err(EvalError::Invalid("Mod of floats needs fmod=1".into()));
        }
        let undefined = || EvalError::Invalid(format!("{op} by zero or out of range"));
        let result = match op {
            "Add" => zip2(x, y, max_bytes, |p, q| Ok(p.add(q)))?,
            "Sub" => zip2(x, y, max_bytes, |p, q| Ok(p.sub(q)))?,
            "Mul" => zip2(x, y, max_bytes, |p, q| Ok(p.mul(q)))?,
            "Div" => zip2(x, y, max_bytes, |p, q| p.div(q).ok_or_else(undefined))?,
            "Mod" => zip2(x, y, max_bytes, |p, q| p.rem(q, fmod).ok_or_else(undefined))?,
            "Min" => zip2(x, y, max_bytes, |p, q| Ok(p.min_of(q)))?,
            "Max" => zip2(x, y, max_bytes, |p, q| Ok(p.max_of(q)))?,
            _ => return Err(EvalError::NotCovered(format!("{op} is not evaluated"))),
        };
        Ok(T::wrap(result))
    })
}

/// Pow of a float32, float64, int32 or int64 base by an exponent of any of those types, as
/// ONNX Runtime computes it: a one-element exponent of 2 or 3 as products in the base's
/// type, float32 by float32 in float32, every other pair in float64 cast to the base's type.
pub(crate) fn pow(base: &Value, exponent: &Value, max_bytes: usize) -> Result<Value, EvalError> {
    match base {
        Value::F32(x) => pow_of(x, exponent, max_bytes).map(Value::F32),
        Value::F64(x) => pow_of(x, exponent, max_bytes).map(Value::F64),
        Value::I32(x) => pow_of(x, exponent, max_bytes).map(Value::I32),
        Value::I64(x) => pow_of(x, exponent, max_bytes).map(Value::I64),
        other => Err(not_covered("Pow", other)),
    }
}

fn pow_of<T: Numeric>(
    base: &ArrayD<T>,
    exponent: &Value,
    max_bytes: usize,
) -> Result<ArrayD<T>, EvalError> {
    let exponents: ArrayD<f64> = match exponent {
        Value::F32(e) => e.mapv(f64::from),
        Value::F64(e) => e.clone(),
        Value::I32(e) => e.mapv(f64::from),
        Value::I64(e) => e.mapv(|v| v as f64),
        other => return Err(not_covered("Pow with an exponent", other)),
    };
    let single_precision = T::DATA_TYPE == f32::DATA_TYPE && matches!(exponent, Value::F32(_));
    let small_power = match exponents.iter().next() {
        Some(&e) if exponents.len() == 1 && base.len() != 1 && e == 2.0 => Some(2),
        Some(&e) if exponents.len() == 1 && base.len() != 1 && e == 3.0 => Some(3),
        _ => None,
    };

    let out_of_range = || EvalError::Invalid("Pow gives a value out of the base's range".into());
    zip2(base, &exponents, max_bytes, |x, e| match small_power {
        Some(2) => Ok(x.mul(x)),
        Some(_) => Ok(x.mul(x).mul(x)),
        None if single_precision => {
            // Single precision means T is float32, which float64 holds exactly.
            let x = x.to_f64() as f32;
            let power = x.powf(e as f32);
            T::from_f64(f64::from(power)).ok_or_else(out_of_range)
        }
        None => {
            let power = x.to_f64().powf(e);
            if !T::IS_FLOAT && !power.is_finite() {
                return Err(out_of_range());
            }
            T::from_f64(power).ok_or_else(out_of_range)
        }
    })
}

/// Equal, Less, Greater, LessOrEqual and GreaterOrEqual.
pub(crate) fn compare(
    op: &str,
    a: &Value,
    b: &Value,
    max_bytes: usize,
) -> Result<Value, EvalError> {
    fn apply<T: Element>(
        op: &str,
        x: &ArrayD<T>,
        y: &ArrayD<T>,
        max_bytes: usize,
    ) -> Result<Value, EvalError> {
        let result = match op {
            "Equal" => zip2(x, y, max_bytes, |p, q| Ok(p == q))?,
            "Less" => zip2(x, y, max_bytes, |p, q| Ok(p < q))?,
            "Greater" => zip2(x, y, max_bytes, |p, q| Ok(p > q))?,
            "LessOrEqual" => zip2(x, y, max_bytes, |p, q| Ok(p <= q))?,
            "GreaterOrEqual" => zip2(x, y, max_bytes, |p, q| Ok(p >= q))?,
            _ => return Err(EvalError::NotCovered(format!("{op} is not evaluated"))),
        };
        Ok(Value::Bool(result))
    }

    if let (Value::Bool(x), Value::Bool(y)) = (a, b) {
        if op == "Equal" {
            return apply(op, x, y, max_bytes);
        }
        return Err(not_covered(op, a));
    }
    numeric_pair!(op, a, b, T => {
        let (x, y) = arrays::<T>(op, a, b)?;
        apply(op, x, y, max_bytes)
    })
}

/// And, Or and Xor of booleans.
pub(crate) fn logic(op: &str, a: &Value, b: &Value, max_bytes: usize) -> Result<Value, EvalError> {
    let (Value::Bool(x), Value::Bool(y)) = (a, b) else {
        return Err(mismatch(op, a, b));
    };
    let result = match op {
        "And" => zip2(x, y, max_bytes, |p, q| Ok(p && q))?,
        "Or" => zip2(x, y, max_bytes, |p, q| Ok(p || q))?,
        "Xor" => zip2(x, y, max_bytes, |p, q| Ok(p != q))?,
        _ => return Err(EvalError::NotCovered(format!("{op} is not evaluated"))),
    };
    Ok(Value::Bool(result))
}

/// Where(condition, x, y), the three broadcast together.
pub(crate) fn select(
    condition: &Value,
    x: &Value,
    y: &Value,
    max_bytes: usize,
) -> Result<Value, EvalError> {
    let Value::Bool(condition) = condition else {
        return Err(EvalError::Invalid(format!(
            "Where's condition is {}, not BOOL",
            condition.type_name()
        )));
    };
    if x.data_type() != y.data_type() {
        return Err(mismatch("Where", x, y));
    }

    with_type!(x, T => {
        let (a, b) = arrays::<T>("Where", x, y)?;
        let shape = broadcast_shape(&[condition.shape(), a.shape(), b.shape()])?;
        check_size(shape.iter().product(), T::SIZE, max_bytes)?;
        let (c, a, b) =
            (broadcast_to(condition, &shape)?, broadcast_to(a, &shape)?, broadcast_to(b, &shape)?);
        let result = Zip::from(&c).and(&a).and(&b).map_collect(|&c, &p, &q| if c { p } else { q });
        Ok(T::wrap(result))
    })
}

/// Neg, Abs, Sqrt, Reciprocal, Floor, Ceil and Not.
pub(crate) fn unary(op: &str, value: &Value) -> Result<Value, EvalError> {
    fn numeric<T: Numeric>(op: &str, x: &ArrayD<T>) -> Option<ArrayD<T>> {
        match op {
            "Neg" => Some(x.mapv(T::neg)),
            "Abs" => Some(x.mapv(T::abs)),
            _ => None,
        }
    }
    fn float<T: Float>(op: &str, x: &ArrayD<T>) -> Option<ArrayD<T>> {
        match op {
            "Sqrt" => Some(x.mapv(T::sqrt)),
            "Reciprocal" => Some(x.mapv(T::recip)),
            "Floor" => Some(x.mapv(T::floor)),
            "Ceil" => Some(x.mapv(T::ceil)),
            _ => numeric(op, x),
        }
    }

    let result = match value {
        Value::F32(x) => float(op, x).map(Value::F32),
        Value::F64(x) => float(op, x).map(Value::F64),
        Value::I32(x) => numeric(op, x).map(Value::I32),
        Value::I64(x) => numeric(op, x).map(Value::I64),
        Value::I8(x) if op == "Neg" => Some(Value::I8(x.mapv(i8::wrapping_neg))),
        Value::Bool(x) if op == "Not" => Some(Value::Bool(x.mapv(|b| !b))),
        _ => None,
    };
    result.ok_or_else(|| not_covered(op, value))
}
