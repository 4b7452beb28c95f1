//! Element types and the owned tensors that cross the boundary between datasets and ONNX
//! Runtime: what a model input expects, what an `.npy` array holds, what a run returns.

use std::fmt;
use std::ops::Range;

use half::f16;
use ndarray::{ArrayD, Axis, Slice};
use ort::session::SessionInputValue;
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

/// The element type of a tensor, named as NumPy names it (`float32`, `int64`, `bool`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ElemType {
    /// 32-bit float (ONNX `float`).
    F32,
    /// 64-bit float (ONNX `double`).
    F64,
    /// 16-bit IEEE float.
    F16,
    /// 16-bit brain float.
    BF16,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// Boolean.
    Bool,
    /// UTF-8 string.
    String,
    /// Anything else (float8, complex, sequences, maps), described in words.
    Other(String),
}

impl ElemType {
    /// The type ONNX Runtime reports for a tensor element.
    pub(crate) fn from_ort(ty: TensorElementType) -> ElemType {
        match ty {
            TensorElementType::Float32 => ElemType::F32,
            TensorElementType::Float64 => ElemType::F64,
            TensorElementType::Float16 => ElemType::F16,
            TensorElementType::Bfloat16 => ElemType::BF16,
            TensorElementType::Int8 => ElemType::I8,
            TensorElementType::Int16 => ElemType::I16,
            TensorElementType::Int32 => ElemType::I32,
            TensorElementType::Int64 => ElemType::I64,
            TensorElementType::Uint8 => ElemType::U8,
            TensorElementType::Uint16 => ElemType::U16,
            TensorElementType::Uint32 => ElemType::U32,
            TensorElementType::Uint64 => ElemType::U64,
            TensorElementType::Bool => ElemType::Bool,
            TensorElementType::String => ElemType::String,
            other => ElemType::Other(format!("{other:?}").to_lowercase()),
        }
    }

    /// The type an ONNX `TensorProto.DataType` code names.
    pub fn from_onnx(code: i32) -> ElemType {
        match code {
            1 => ElemType::F32,
            2 => ElemType::U8,
            3 => ElemType::I8,
            4 => ElemType::U16,
            5 => ElemType::I16,
            6 => ElemType::I32,
            7 => ElemType::I64,
            8 => ElemType::String,
            9 => ElemType::Bool,
            10 => ElemType::F16,
            11 => ElemType::F64,
            12 => ElemType::U32,
            13 => ElemType::U64,
            16 => ElemType::BF16,
            other => ElemType::Other(pipeline_passes::ir::data_type_name(other).to_lowercase()),
        }
    }

    /// The element type of any value ONNX Runtime describes; non-tensors become `Other`.
    pub(crate) fn from_value_type(ty: &ValueType) -> ElemType {
        match ty {
            ValueType::Tensor { ty, .. } => ElemType::from_ort(*ty),
            other => ElemType::Other(other.to_string()),
        }
    }

    /// The type a NumPy type descriptor such as `<f4` or `|b1` names, if it is one of ours.
    ///
    /// Big-endian descriptors are not ours: `.npy` readers here take native little-endian data.
    pub(crate) fn from_numpy_descr(descr: &str) -> Option<ElemType> {
        let (order, code) = descr.split_at_checked(1)?;
        if !matches!(order, "<" | "|" | "=") {
            return None;
        }
        let ty = match code {
            "f4" => ElemType::F32,
            "f8" => ElemType::F64,
            "f2" => ElemType::F16,
            "i1" => ElemType::I8,
            "i2" => ElemType::I16,
            "i4" => ElemType::I32,
            "i8" => ElemType::I64,
            "u1" => ElemType::U8,
            "u2" => ElemType::U16,
            "u4" => ElemType::U32,
            "u8" => ElemType::U64,
            "b1" => ElemType::Bool,
            _ => return None,
        };
        Some(ty)
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ElemType::F32 => "float32",
            ElemType::F64 => "float64",
            ElemType::F16 => "float16",
            ElemType::BF16 => "bfloat16",
            ElemType::I8 => "int8",
            ElemType::I16 => "int16",
            ElemType::I32 => "int32",
            ElemType::I64 => "int64",
            ElemType::U8 => "uint8",
            ElemType::U16 => "uint16",
            ElemType::U32 => "uint32",
            ElemType::U64 => "uint64",
            ElemType::Bool => "bool",
            ElemType::String => "string",
            ElemType::Other(name) => name,
        };
        f.write_str(name)
    }
}

/// An owned n-dimensional array of one of the element types ONNX Runtime and `.npy` files share.
///
/// Bfloat16 and string tensors are not held here.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    /// 32-bit floats.
    F32(ArrayD<f32>),
    /// 16-bit IEEE floats.
    F16(ArrayD<f16>),
    /// 64-bit floats.
    F64(ArrayD<f64>),
    /// Signed 8-bit integers.
    I8(ArrayD<i8>),
    /// Signed 16-bit integers.
    I16(ArrayD<i16>),
    /// Signed 32-bit integers.
    I32(ArrayD<i32>),
    /// Signed 64-bit integers.
    I64(ArrayD<i64>),
    /// Unsigned 8-bit integers.
    U8(ArrayD<u8>),
    /// Unsigned 16-bit integers.
    U16(ArrayD<u16>),
    /// Unsigned 32-bit integers.
    U32(ArrayD<u32>),
    /// Unsigned 64-bit integers.
    U64(ArrayD<u64>),
    /// Booleans.
    Bool(ArrayD<bool>),
}

/// Runs the same expression on the array inside any variant of a [`Tensor`].
macro_rules! each_variant {
    ($tensor:expr, $array:ident => $body:expr) => {
        match $tensor {
            Tensor::F32($array) => $body,
            Tensor::F16($array) => $body,
            Tensor::F64($array) => $body,
            Tensor::I8($array) => $body,
            Tensor::I16($array) => $body,
            Tensor::I32($array) => $body,
            Tensor::I64($array) => $body,
            Tensor::U8($array) => $body,
            Tensor::U16($array) => $body,
            Tensor::U32($array) => $body,
            Tensor::U64($array) => $body,
            Tensor::Bool($array) => $body,
        }
    };
}

/// Runs the same expression on the array inside any variant and wraps the result in that variant.
macro_rules! map_variant {
    ($tensor:expr, $array:ident => $body:expr) => {
        match $tensor {
            Tensor::F32($array) => Tensor::F32($body),
            Tensor::F16($array) => Tensor::F16($body),
            Tensor::F64($array) => Tensor::F64($body),
            Tensor::I8($array) => Tensor::I8($body),
            Tensor::I16($array) => Tensor::I16($body),
            Tensor::I32($array) => Tensor::I32($body),
            Tensor::I64($array) => Tensor::I64($body),
            Tensor::U8($array) => Tensor::U8($body),
            Tensor::U16($array) => Tensor::U16($body),
            Tensor::U32($array) => Tensor::U32($body),
            Tensor::U64($array) => Tensor::U64($body),
            Tensor::Bool($array) => Tensor::Bool($body),
        }
    };
}

impl Tensor {
    /// The element type.
    pub fn elem(&self) -> ElemType {
        match self {
            Tensor::F32(_) => ElemType::F32,
            Tensor::F16(_) => ElemType::F16,
            Tensor::F64(_) => ElemType::F64,
            Tensor::I8(_) => ElemType::I8,
            Tensor::I16(_) => ElemType::I16,
            Tensor::I32(_) => ElemType::I32,
            Tensor::I64(_) => ElemType::I64,
            Tensor::U8(_) => ElemType::U8,
            Tensor::U16(_) => ElemType::U16,
            Tensor::U32(_) => ElemType::U32,
            Tensor::U64(_) => ElemType::U64,
            Tensor::Bool(_) => ElemType::Bool,
        }
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        each_variant!(self, a => a.shape())
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        each_variant!(self, a => a.len())
    }

    /// The bytes its elements take.
    pub fn byte_len(&self) -> usize {
        each_variant!(self, a => a.len() * a.iter().next().map_or(0, std::mem::size_of_val))
    }

    /// Whether the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The size of the first dimension (the samples of a dataset); 1 for a scalar.
    pub fn len0(&self) -> usize {
        self.shape().first().copied().unwrap_or(1)
    }

    /// A copy of the rows `range` along the first dimension.
    ///
    /// # Panics
    ///
    /// If the tensor is a scalar or `range` reaches past [`Tensor::len0`].
    pub fn slice0(&self, range: Range<usize>) -> Tensor {
        map_variant!(self, a => a.slice_axis(Axis(0), Slice::from(range)).to_owned())
    }

    /// A view ONNX Runtime can read; contiguous arrays are lent without a copy.
    pub(crate) fn to_session_input(&self) -> ort::Result<SessionInputValue<'_>> {
        fn lend<T>(array: &ArrayD<T>) -> ort::Result<SessionInputValue<'_>>
        where
            T: ort::value::PrimitiveTensorElementType + Clone + fmt::Debug + 'static,
        {
            if array.is_standard_layout() {
                Ok(TensorRef::from_array_view(array.view())?.into())
            } else {
                let owned = array.as_standard_layout().into_owned();
                Ok(ort::value::Tensor::from_array(owned)?.into())
            }
        }

        each_variant!(self, a => lend(a))
    }

    /// Copies a tensor value ONNX Runtime returned; `None` if its type is not one of ours.
    pub(crate) fn from_ort(value: &DynValue) -> ort::Result<Option<Tensor>> {
        let ValueType::Tensor { ty, .. } = value.dtype() else {
            return Ok(None);
        };

        let tensor = match ty {
            TensorElementType::Float32 => Tensor::F32(value.try_extract_array()?.to_owned()),
            TensorElementType::Float16 => Tensor::F16(value.try_extract_array()?.to_owned()),
            TensorElementType::Float64 => Tensor::F64(value.try_extract_array()?.to_owned()),
            TensorElementType::Int8 => Tensor::I8(value.try_extract_array()?.to_owned()),
            TensorElementType::Int16 => Tensor::I16(value.try_extract_array()?.to_owned()),
            TensorElementType::Int32 => Tensor::I32(value.try_extract_array()?.to_owned()),
            TensorElementType::Int64 => Tensor::I64(value.try_extract_array()?.to_owned()),
            TensorElementType::Uint8 => Tensor::U8(value.try_extract_array()?.to_owned()),
            TensorElementType::Uint16 => Tensor::U16(value.try_extract_array()?.to_owned()),
            TensorElementType::Uint32 => Tensor::U32(value.try_extract_array()?.to_owned()),
            TensorElementType::Uint64 => Tensor::U64(value.try_extract_array()?.to_owned()),
            TensorElementType::Bool => Tensor::Bool(value.try_extract_array()?.to_owned()),
            _ => return Ok(None),
        };
        Ok(Some(tensor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn slice0_copies_rows_along_the_first_dimension() {
        let data: Vec<i64> = (0..12).collect();
        let tensor = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[4, 3]), data).unwrap());

        let rows = tensor.slice0(1..3);

        assert_eq!(rows.shape(), &[2, 3]);
        let Tensor::I64(rows) = rows else { panic!("slice changed the element type") };
        assert_eq!(rows.iter().copied().collect::<Vec<_>>(), vec![3, 4, 5, 6, 7, 8]);
        assert_eq!(tensor.len0(), 4);
    }

    #[test]
    fn numpy_descriptors_map_to_element_types() {
        assert_eq!(ElemType::from_numpy_descr("<f4"), Some(ElemType::F32));
        assert_eq!(ElemType::from_numpy_descr("|b1"), Some(ElemType::Bool));
        assert_eq!(ElemType::from_numpy_descr("|u1"), Some(ElemType::U8));
        assert_eq!(ElemType::from_numpy_descr(">f4"), None);
        assert_eq!(ElemType::from_numpy_descr("<U5"), None);
        assert_eq!(ElemType::I64.to_string(), "int64");
    }
}
