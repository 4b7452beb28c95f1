//! The tensors the evaluator computes with: one `ndarray` array per ONNX element type, read
//! from and written to `TensorProto`s, and the conversions between element types that Cast
//! and ConstantOfShape need.

use half::f16;
use ndarray::{ArrayD, IxDyn};

use super::EvalError;
use crate::ir::proto::tensor_proto::{DataLocation, DataType};
use crate::ir::proto::TensorProto;

/// A constant tensor of one of the element types the evaluator handles.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    F16(ArrayD<f16>),
    I8(ArrayD<i8>),
    I16(ArrayD<i16>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    U8(ArrayD<u8>),
    U16(ArrayD<u16>),
    U32(ArrayD<u32>),
    U64(ArrayD<u64>),
    Bool(ArrayD<bool>),
}

/// Runs `$body` with `$t` standing for the element type of `$value` and, in the second form,
/// `$array` bound to its array (`&ArrayD<$t>` when `$value` is a reference).
macro_rules! with_type {
    ($value:expr, $t:ident => $body:expr) => {
        with_type!($value, $t, _array => $body)
    };
    ($value:expr, $t:ident, $array:ident => $body:expr) => {
        match $value {
            Value::F32($array) => {
                #[allow(dead_code)]
                type $t = f32;
                $body
            }
            Value::F64($array) => {
                #[allow(dead_code)]
                type $t = f64;
                $body
            }
            Value::F16($array) => {
                #[allow(dead_code)]
                type $t = half::f16;
                $body
            }
            Value::I8($array) => {
                #[allow(dead_code)]
                type $t = i8;
                $body
            }
            Value::I16($array) => {
                #[allow(dead_code)]
                type $t = i16;
                $body
            }
            Value::I32($array) => {
                #[allow(dead_code)]
                type $t = i32;
                $body
            }
            Value::I64($array) => {
                #[allow(dead_code)]
                type $t = i64;
                $body
            }
            Value::U8($array) => {
                #[allow(dead_code)]
                type $t = u8;
                $body
            }
            Value::U16($array) => {
                #[allow(dead_code)]
                type $t = u16;
                $body
            }
            Value::U32($array) => {
                #[allow(dead_code)]
                type $t = u32;
                $body
            }
            Value::U64($array) => {
                #[allow(dead_code)]
                type $t = u64;
                $body
            }
            Value::Bool($array) => {
                #[allow(dead_code)]
                type $t = bool;
                $body
            }
        }
    };
}
pub(crate) use with_type;

/// A number on its way from one element type to another: integers exactly, floats as the
/// `f64` that holds every float16, float32 and float64 value exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Number {
    Int(i128),
    Float(f64),
}

/// What the evaluator needs of an element type.
pub(crate) trait Element: Copy + PartialEq + PartialOrd + std::fmt::Debug + 'static {
    const DATA_TYPE: DataType;
    /// Bytes per element in `raw_data`.
    const SIZE: usize;

    fn array(value: &Value) -> Option<&ArrayD<Self>>;
    fn wrap(array: ArrayD<Self>) -> Value;
    fn from_le(bytes: &[u8]) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
    /// The elements of the tensor's typed field, when the type keeps its data there.
    fn typed(tensor: &TensorProto) -> Vec<Self>;
    fn to_number(self) -> Number;
    /// The element `number` converts to, as ONNX Runtime's Cast converts it; `None` where
    /// the conversion is undefined (a float out of an integer type's range, NaN to integer).
    fn from_number(number: Number) -> Option<Self>;
}

macro_rules! integer_element {
    ($t:ty, $variant:ident, $data_type:ident, $field:ident) => {
        impl Element for $t {
            const DATA_TYPE: DataType = DataType::$data_type;
            const SIZE: usize = std::mem::size_of::<$t>();

            fn array(value: &Value) -> Option<&ArrayD<Self>> {
                match value {
                    Value::$variant(array) => Some(array),
                    _ => None,
                }
            }

            fn wrap(array: ArrayD<Self>) -> Value {
                Value::$variant(array)
            }

            fn from_le(bytes: &[u8]) -> Self {
                let mut element = [0u8; std::mem::size_of::<$t>()];
                element.copy_from_slice(bytes);
                <$t>::from_le_bytes(element)
            }

            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }

            fn typed(tensor: &TensorProto) -> Vec<Self> {
                // The typed fields hold narrower integers widened; taking the low bits back
                // is what the format means.
                tensor.$field.iter().map(|&v| v as $t).collect()
            }

            fn to_number(self) -> Number {
                Number::Int(i128::from(self))
            }

            fn from_number(number: Number) -> Option<Self> {
                match number {
                    // Integers wrap into narrower types, as C++'s conversion does.
                    Number::Int(value) => Some(value as $t),
                    Number::Float(value) => {
                        let truncated = value.trunc();
                        let fits = truncated.is_finite()
                            && truncated >= <$t>::MIN as f64
                            && truncated <= <$t>::MAX as f64;
                        fits.then(|| truncated as $t)
                    }
                }
            }
        }
    };
}

integer_element!(i8, I8, Int8, int32_data);
integer_element!(i16, I16, Int16, int32_data);
integer_element!(i32, I32, Int32, int32_data);
integer_element!(i64, I64, Int64, int64_data);
integer_element!(u8, U8, Uint8, int32_data);
integer_element!(u16, U16, Uint16, int32_data);
integer_element!(u32, U32, Uint32, uint64_data);
integer_element!(u64, U64, Uint64, uint64_data);

impl Element for f32 {
    const DATA_TYPE: DataType = DataType::Float;
    const SIZE: usize = 4;

    fn array(value: &Value) -> Option<&ArrayD<Self>> {
        match value {
            Value::F32(array) => Some(array),
            _ => None,
        }
    }

    fn wrap(array: ArrayD<Self>) -> Value {
        Value::F32(array)
    }

    fn from_le(bytes: &[u8]) -> Self {
        f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }

    fn typed(tensor: &TensorProto) -> Vec<Self> {
        tensor.float_data.clone()
    }

    fn to_number(self) -> Number {
        Number::Float(f64::from(self))
    }

    fn from_number(number: Number) -> Option<Self> {
        Some(match number {
            Number::Int(value) => value as f32,
            Number::Float(value) => value as f32,
        })
    }
}

impl Element for f64 {
    const DATA_TYPE: DataType = DataType::Double;
    const SIZE: usize = 8;

    fn array(value: &Value) -> Option<&ArrayD<Self>> {
        match value {
            Value::F64(array) => Some(array),
            _ => None,
        }
    }

    fn wrap(array: ArrayD<Self>) -> Value {
        Value::F64(array)
    }

    fn from_le(bytes: &[u8]) -> Self {
        let mut element = [0u8; 8];
        element.copy_from_slice(bytes);
        f64::from_le_bytes(element)
    }

    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }

    fn typed(tensor: &TensorProto) -> Vec<Self> {
        tensor.double_data.clone()
    }

    fn to_number(self) -> Number {
        Number::Float(self)
    }

    fn from_number(number: Number) -> Option<Self> {
        Some(match number {
            Number::Int(value) => value as f64,
            Number::Float(value) => value,
        })
    }
}

impl Element for f16 {
    const DATA_TYPE: DataType = DataType::Float16;
    const SIZE: usize = 2;

    fn array(value: &Value) -> Option<&ArrayD<Self>> {
        match value {
            Value::F16(array) => Some(array),
            _ => None,
        }
    }

    fn wrap(array: ArrayD<Self>) -> Value {
        Value::F16(array)
    }

    fn from_le(bytes: &[u8]) -> Self {
        f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }

    fn typed(tensor: &TensorProto) -> Vec<Self> {
        tensor.int32_data.iter().map(|&bits| f16::from_bits(bits as u16)).collect()
    }

    fn to_number(self) -> Number {
        Number::Float(self.to_f64())
    }

    fn from_number(number: Number) -> Option<Self> {
        // ONNX Runtime casts to float16 by way of float32, rounding twice from float64.
        let single = match number {
            Number::Int(value) => value as f32,
            Number::Float(value) => value as f32,
        };
        Some(f16::from_f32(single))
    }
}

impl Element for bool {
    const DATA_TYPE: DataType = DataType::Bool;
    const SIZE: usize = 1;

    fn array(value: &Value) -> Option<&ArrayD<Self>> {
        match value {
            Value::Bool(array) => Some(array),
            _ => None,
        }
    }

    fn wrap(array: ArrayD<Self>) -> Value {
        Value::Bool(array)
    }

    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }

    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }

    fn typed(tensor: &TensorProto) -> Vec<Self> {
        tensor.int32_data.iter().map(|&v| v != 0).collect()
    }

    fn to_number(self) -> Number {
        Number::Int(i128::from(self))
    }

    fn from_number(number: Number) -> Option<Self> {
        // NaN is not zero, so it is true, as in C++.
        Some(match number {
            Number::Int(value) => value != 0,
            Number::Float(value) => value != 0.0,
        })
    }
}

impl Value {
    /// Reads `tensor`, from `raw_data` or its typed field.
    pub(crate) fn from_tensor(tensor: &TensorProto) -> Result<Value, EvalError> {
        use DataType as T;

        if tensor.data_location() == DataLocation::External {
            return Err(EvalError::Invalid(format!(
                "tensor `{}` keeps its data in an external file",
                tensor.name()
            )));
        }
        let data_type = DataType::try_from(tensor.data_type()).unwrap_or(T::Undefined);
        match data_type {
            T::Float => read::<f32>(tensor),
            T::Double => read::<f64>(tensor),
            T::Float16 => read::<f16>(tensor),
            T::Int8 => read::<i8>(tensor),
            T::Int16 => read::<i16>(tensor),
            T::Int32 => read::<i32>(tensor),
            T::Int64 => read::<i64>(tensor),
            T::Uint8 => read::<u8>(tensor),
            T::Uint16 => read::<u16>(tensor),
            T::Uint32 => read::<u32>(tensor),
            T::Uint64 => read::<u64>(tensor),
            T::Bool => read::<bool>(tensor),
            _ => Err(EvalError::NotCovered(format!(
                "tensors of {} are not evaluated",
                crate::ir::data_type_name(tensor.data_type())
            ))),
        }
    }

    /// The tensor named `name` holding this value, its data in `raw_data`.
    pub(crate) fn to_tensor(&self, name: &str) -> TensorProto {
        with_type!(self, T, array => write::<T>(name, array))
    }

    /// The ONNX element type.
    pub(crate) fn data_type(&self) -> DataType {
        with_type!(self, T => T::DATA_TYPE)
    }

    /// The format's name of the element type (`FLOAT`, `INT64` ...).
    pub(crate) fn type_name(&self) -> &'static str {
        self.data_type().as_str_name()
    }

    pub(crate) fn shape(&self) -> &[usize] {
        with_type!(self, T, array => array.shape())
    }

    pub(crate) fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// The bytes the value takes as an initializer.
    pub(crate) fn bytes(&self) -> usize {
        self.len() * with_type!(self, T => T::SIZE)
    }

    /// The values as integers, for shapes, axes and indices (integer types only).
    pub(crate) fn integers(&self) -> Option<Vec<i64>> {
        match self {
            Value::I64(array) => Some(array.iter().copied().collect()),
            Value::I32(array) => Some(array.iter().map(|&v| i64::from(v)).collect()),
            _ => None,
        }
    }

    /// The value converted element by element to `data_type`, as Cast does.
    pub(crate) fn cast(&self, data_type: DataType) -> Result<Value, EvalError> {
        use DataType as T;

        match data_type {
            T::Float => convert::<f32>(self),
            T::Double => convert::<f64>(self),
            T::Float16 => convert::<f16>(self),
            T::Int8 => convert::<i8>(self),
            T::Int16 => convert::<i16>(self),
            T::Int32 => convert::<i32>(self),
            T::Int64 => convert::<i64>(self),
            T::Uint8 => convert::<u8>(self),
            T::Uint16 => convert::<u16>(self),
            T::Uint32 => convert::<u32>(self),
            T::Uint64 => convert::<u64>(self),
            T::Bool => convert::<bool>(self),
            other => Err(EvalError::NotCovered(format!(
                "Cast to {} is not evaluated",
                other.as_str_name()
            ))),
        }
    }
}

fn read<T: Element>(tensor: &TensorProto) -> Result<Value, EvalError> {
    let malformed = |reason: String| {
        EvalError::Invalid(format!("tensor `{}` is malformed: {reason}", tensor.name()))
    };
    let shape: Vec<usize> = tensor
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| malformed(format!("dimension {d}"))))
        .collect::<Result<_, _>>()?;

    let typed = T::typed(tensor);
    let values = match &tensor.raw_data {
        Some(bytes) if !bytes.is_empty() || typed.is_empty() => {
            if !bytes.len().is_multiple_of(T::SIZE) {
                return Err(malformed(format!("{} bytes of raw_data", bytes.len())));
            }
            bytes.chunks_exact(T::SIZE).map(T::from_le).collect()
        }
        _ => typed,
    };
    ArrayD::from_shape_vec(IxDyn(&shape), values)
        .map(T::wrap)
        .map_err(|_| malformed(format!("its data does not fill dimensions {:?}", tensor.dims)))
}

fn write<T: Element>(name: &str, array: &ArrayD<T>) -> TensorProto {
    let mut raw = Vec::with_capacity(array.len() * T::SIZE);
    for &value in array.iter() {
        value.write_le(&mut raw);
    }
    TensorProto {
        dims: array.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(T::DATA_TYPE as i32),
        name: Some(name.to_string()),
        raw_data: Some(raw.into()),
        ..TensorProto::default()
    }
}

fn convert<To: Element>(value: &Value) -> Result<Value, EvalError> {
    with_type!(value, From, array => {
        let mut out = Vec::with_capacity(array.len());
        for &element in array.iter() {
            let number = element.to_number();
            let converted = To::from_number(number).ok_or_else(|| {
                EvalError::Invalid(format!(
                    "{number:?} does not fit {}, where runtimes differ",
                    To::DATA_TYPE.as_str_name()
                ))
            })?;
            out.push(converted);
        }
        Ok(To::wrap(array_of(array.shape(), out)?))
    })
}

/// An array of `shape` filled from `values` in row-major order.
pub(crate) fn array_of<T>(shape: &[usize], values: Vec<T>) -> Result<ArrayD<T>, EvalError> {
    ArrayD::from_shape_vec(IxDyn(shape), values)
        .map_err(|e| EvalError::Invalid(format!("cannot shape the result as {shape:?}: {e}")))
}
