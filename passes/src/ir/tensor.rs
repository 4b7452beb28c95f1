//! Conversions between ONNX tensors and `ndarray` arrays, and facts about element types.
//!
//! Tensors made here always carry their data in `raw_data` (little-endian, packed), the form
//! ONNX Runtime reads fastest; tensors read here may use `raw_data` or the typed fields.

use ndarray::{ArrayD, IxDyn};

use crate::ir::proto::tensor_proto::{DataLocation, DataType};
use crate::ir::proto::TensorProto;
use crate::ir::IrError;

/// The format's name of an element type (`FLOAT`, `INT8`, ...), or `data type N` for a
/// number the schema does not know.
pub fn data_type_name(data_type: i32) -> String {
    match DataType::try_from(data_type) {
        Ok(known) => known.as_str_name().to_string(),
        Err(_) => format!("data type {data_type}"),
    }
}

/// The size of one element in bits, or `None` for strings and unknown types.
pub(crate) fn element_bits(data_type: i32) -> Option<usize> {
    use DataType as T;

    let bits = match DataType::try_from(data_type).ok()? {
        T::Uint2 | T::Int2 => 2,
        T::Uint4 | T::Int4 | T::Float4e2m1 => 4,
        T::Uint8 | T::Int8 | T::Bool => 8,
        T::Float8e4m3fn | T::Float8e4m3fnuz | T::Float8e5m2 | T::Float8e5m2fnuz => 8,
        T::Float8e8m0 => 8,
        T::Uint16 | T::Int16 | T::Float16 | T::Bfloat16 => 16,
        T::Float | T::Int32 | T::Uint32 => 32,
        T::Double | T::Int64 | T::Uint64 | T::Complex64 => 64,
        T::Complex128 => 128,
        T::Undefined | T::String => return None,
    };
    Some(bits)
}

/// The shape of a tensor as array dimensions, checked to be non-negative.
pub(crate) fn shape(tensor: &TensorProto) -> Result<Vec<usize>, IrError> {
    tensor
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| malformed(tensor, format!("negative dimension {d}")))
        })
        .collect()
}

/// The number of elements a tensor's dimensions call for.
pub(crate) fn element_count(tensor: &TensorProto) -> Result<usize, IrError> {
    shape(tensor)?.iter().try_fold(1usize, |count, &d| count.checked_mul(d)).ok_or_else(|| {
        malformed(tensor, format!("dimensions {:?} overflow the element count", tensor.dims))
    })
}

/// The bytes `count` elements of `bits` each take packed, as `raw_data` and external data
/// store them; `None` when that overflows.
pub(crate) fn packed_len(count: usize, bits: usize) -> Option<usize> {
    count.checked_mul(bits).map(|b| b.div_ceil(8))
}

/// Checks that a tensor held in memory stores as many elements as its dimensions call for,
/// in `raw_data` or in the typed field of its element type, so that a malformed weight is
/// refused when the model is read instead of being skipped by a pass or failing in a runtime.
/// Strings, and 2- and 4-bit types stored in typed fields, are not checked.
pub(crate) fn check_data_length(tensor: &TensorProto) -> Result<(), IrError> {
    use DataType as T;

    if tensor.data_location() == DataLocation::External {
        return Ok(());
    }
    let Some(bits) = element_bits(tensor.data_type()) else { return Ok(()) };
    let count = element_count(tensor)?;

    if let Some(raw) = tensor.raw_data.as_ref().filter(|raw| !raw.is_empty()) {
        let expected = packed_len(count, bits);
        if expected != Some(raw.len()) {
            let reason = format!(
                "raw_data has {} bytes but dimensions {:?} of {} call for {}",
                raw.len(),
                tensor.dims,
                data_type_name(tensor.data_type()),
                expected.map_or("more than fit in memory".into(), |e| e.to_string())
            );
            return Err(malformed(tensor, reason));
        }
        return Ok(());
    }

    let (stored, per_element) = match DataType::try_from(tensor.data_type()) {
        Ok(T::Float) => (tensor.float_data.len(), 1),
        Ok(T::Complex64) => (tensor.float_data.len(), 2),
        Ok(T::Double) => (tensor.double_data.len(), 1),
        Ok(T::Complex128) => (tensor.double_data.len(), 2),
        Ok(T::Int64) => (tensor.int64_data.len(), 1),
        Ok(T::Uint32 | T::Uint64) => (tensor.uint64_data.len(), 1),
        Ok(T::Int4 | T::Uint4 | T::Float4e2m1 | T::Int2 | T::Uint2) => return Ok(()),
        _ => (tensor.int32_data.len(), 1),
    };
    if count.checked_mul(per_element) != Some(stored) {
        let reason = if stored == 0 {
            format!("dimensions {:?} call for {count} elements, and it holds no data", tensor.dims)
        } else {
            format!(
                "dimensions {:?} call for {count} elements, found {}",
                tensor.dims,
                stored / per_element
            )
        };
        return Err(malformed(tensor, reason));
    }
    Ok(())
}

/// Reads a `FLOAT` tensor from `float_data` or `raw_data`.
///
/// Other element types are an error, not a conversion: a pass that means to handle them
/// must say how.
pub fn tensor_to_f32(tensor: &TensorProto) -> Result<ArrayD<f32>, IrError> {
    check_in_memory(tensor)?;
    expect_type(tensor, &[DataType::Float])?;

    let values = match raw(tensor, tensor.float_data.is_empty()) {
        Some(bytes) => from_le(tensor, bytes, f32::from_le_bytes)?,
        None => tensor.float_data.clone(),
    };
    to_array(tensor, values)
}

/// Reads an integer tensor as `i64`: `INT64` from `int64_data` or `raw_data`, and the
/// narrower types that widen without loss (`INT8`, `UINT8`, `INT16`, `UINT16`, `INT32`,
/// `UINT32`, and `BOOL` as 0 and 1) from their own fields.
pub fn tensor_to_i64(tensor: &TensorProto) -> Result<ArrayD<i64>, IrError> {
    use DataType as T;

    check_in_memory(tensor)?;
    let allowed = [T::Int64, T::Int32, T::Int16, T::Int8, T::Uint32, T::Uint16, T::Uint8, T::Bool];
    let data_type = expect_type(tensor, &allowed)?;

    let from_i32 = || tensor.int32_data.iter().map(|&v| i64::from(v)).collect::<Vec<_>>();
    let values = match data_type {
        T::Int64 => match raw(tensor, tensor.int64_data.is_empty()) {
            Some(bytes) => from_le(tensor, bytes, i64::from_le_bytes)?,
            None => tensor.int64_data.clone(),
        },
        T::Uint32 => match raw(tensor, tensor.uint64_data.is_empty()) {
            Some(bytes) => from_le(tensor, bytes, |b| i64::from(u32::from_le_bytes(b)))?,
            None => uint32_from_u64(tensor)?,
        },
        _ => match raw(tensor, tensor.int32_data.is_empty()) {
            Some(bytes) => match data_type {
                T::Int32 => from_le(tensor, bytes, |b| i64::from(i32::from_le_bytes(b)))?,
                T::Int16 => from_le(tensor, bytes, |b| i64::from(i16::from_le_bytes(b)))?,
                T::Uint16 => from_le(tensor, bytes, |b| i64::from(u16::from_le_bytes(b)))?,
                T::Int8 => from_le(tensor, bytes, |b: [u8; 1]| i64::from(b[0] as i8))?,
                _ => from_le(tensor, bytes, |b: [u8; 1]| i64::from(b[0]))?,
            },
            None => from_i32(),
        },
    };
    to_array(tensor, values)
}

/// A `FLOAT` tensor named `name` holding `array`.
pub fn tensor_from_f32(name: &str, array: &ArrayD<f32>) -> TensorProto {
    tensor_from(name, array, DataType::Float, f32::to_le_bytes)
}

/// An `INT8` tensor named `name` holding `array`.
pub fn tensor_from_i8(name: &str, array: &ArrayD<i8>) -> TensorProto {
    tensor_from(name, array, DataType::Int8, i8::to_le_bytes)
}

/// A `UINT8` tensor named `name` holding `array`.
pub fn tensor_from_u8(name: &str, array: &ArrayD<u8>) -> TensorProto {
    tensor_from(name, array, DataType::Uint8, u8::to_le_bytes)
}

/// An `INT32` tensor named `name` holding `array`.
pub fn tensor_from_i32(name: &str, array: &ArrayD<i32>) -> TensorProto {
    tensor_from(name, array, DataType::Int32, i32::to_le_bytes)
}

/// An `INT64` tensor named `name` holding `array`.
pub fn tensor_from_i64(name: &str, array: &ArrayD<i64>) -> TensorProto {
    tensor_from(name, array, DataType::Int64, i64::to_le_bytes)
}

/// The tensor's data from its typed field as `raw_data` bytes, for the types whose typed
/// field stores exactly one element per entry at the element's own width.
pub(crate) fn typed_data_as_raw(tensor: &TensorProto) -> Option<Vec<u8>> {
    fn bytes<T: Copy, const N: usize>(values: &[T], to_le: fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|&v| to_le(v)).collect()
    }

    match DataType::try_from(tensor.data_type()).ok()? {
        DataType::Float if !tensor.float_data.is_empty() => {
            Some(bytes(&tensor.float_data, f32::to_le_bytes))
        }
        DataType::Int32 if !tensor.int32_data.is_empty() => {
            Some(bytes(&tensor.int32_data, i32::to_le_bytes))
        }
        DataType::Int64 if !tensor.int64_data.is_empty() => {
            Some(bytes(&tensor.int64_data, i64::to_le_bytes))
        }
        DataType::Double if !tensor.double_data.is_empty() => {
            Some(bytes(&tensor.double_data, f64::to_le_bytes))
        }
        DataType::Uint64 if !tensor.uint64_data.is_empty() => {
            Some(bytes(&tensor.uint64_data, u64::to_le_bytes))
        }
        _ => None,
    }
}

fn tensor_from<T: Copy, const N: usize>(
    name: &str,
    array: &ArrayD<T>,
    data_type: DataType,
    to_le: fn(T) -> [u8; N],
) -> TensorProto {
    let raw: Vec<u8> = array.iter().flat_map(|&v| to_le(v)).collect();

    TensorProto {
        dims: array.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type as i32),
        name: Some(name.to_string()),
        raw_data: Some(raw.into()),
        ..TensorProto::default()
    }
}

fn tensor_name(tensor: &TensorProto) -> String {
    tensor.name().to_string()
}

fn malformed(tensor: &TensorProto, reason: String) -> IrError {
    IrError::TensorData { tensor: tensor_name(tensor), reason }
}

fn check_in_memory(tensor: &TensorProto) -> Result<(), IrError> {
    if tensor.data_location() == DataLocation::External {
        return Err(IrError::NotInMemory { tensor: tensor_name(tensor) });
    }
    Ok(())
}

fn expect_type(tensor: &TensorProto, allowed: &[DataType]) -> Result<DataType, IrError> {
    match DataType::try_from(tensor.data_type()) {
        Ok(found) if allowed.contains(&found) => Ok(found),
        _ => Err(IrError::DataType {
            tensor: tensor_name(tensor),
            expected: allowed.iter().map(|t| t.as_str_name()).collect::<Vec<_>>().join(" or "),
            found: data_type_name(tensor.data_type()),
        }),
    }
}

/// The `raw_data` bytes if they hold the data: when present and not empty, or when the typed
/// field is empty too.
fn raw(tensor: &TensorProto, typed_is_empty: bool) -> Option<&[u8]> {
    match &tensor.raw_data {
        Some(bytes) if !bytes.is_empty() || typed_is_empty => Some(bytes),
        _ => None,
    }
}

fn from_le<T, const N: usize>(
    tensor: &TensorProto,
    bytes: &[u8],
    convert: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, IrError> {
    if !bytes.len().is_multiple_of(N) {
        let reason = format!("raw_data has {} bytes, not a multiple of {N}", bytes.len());
        return Err(malformed(tensor, reason));
    }

    let values = bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut element = [0u8; N];
            element.copy_from_slice(chunk);
            convert(element)
        })
        .collect();
    Ok(values)
}

fn uint32_from_u64(tensor: &TensorProto) -> Result<Vec<i64>, IrError> {
    tensor
        .uint64_data
        .iter()
        .map(|&v| {
            u32::try_from(v)
                .map(i64::from)
                .map_err(|_| malformed(tensor, format!("UINT32 element {v} is out of range")))
        })
        .collect()
}

fn to_array<T>(tensor: &TensorProto, values: Vec<T>) -> Result<ArrayD<T>, IrError> {
    let count = element_count(tensor)?;
    if values.len() != count {
        let reason = format!(
            "dimensions {:?} call for {count} elements, found {}",
            tensor.dims,
            values.len()
        );
        return Err(malformed(tensor, reason));
    }

    let shape = shape(tensor)?;
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| malformed(tensor, e.to_string()))
}

#[cfg(test)]
mod tests {
    use ndarray::{arr1, arr2, ArrayD};

    use super::*;

    fn float_tensor(dims: &[i64]) -> TensorProto {
        TensorProto {
            name: Some("w".into()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            ..TensorProto::default()
        }
    }

    #[test]
    fn float_data_reads_in_row_major_order() {
        let mut tensor = float_tensor(&[2, 3]);
        tensor.float_data = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];

        let array = tensor_to_f32(&tensor).unwrap();

        assert_eq!(array, arr2(&[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).into_dyn());
    }

    #[test]
    fn raw_data_reads_little_endian() {
        let mut tensor = float_tensor(&[2]);
        tensor.raw_data = Some([1.5f32.to_le_bytes(), (-2.25f32).to_le_bytes()].concat().into());

        let array = tensor_to_f32(&tensor).unwrap();

        assert_eq!(array, arr1(&[1.5, -2.25]).into_dyn());
    }

    #[test]
    fn scalar_has_no_dimensions_and_one_element() {
        let mut tensor = float_tensor(&[]);
        tensor.float_data = vec![7.0];

        assert_eq!(tensor_to_f32(&tensor).unwrap().ndim(), 0);
        assert_eq!(tensor_to_f32(&tensor).unwrap().sum(), 7.0);
    }

    #[test]
    fn element_count_mismatch_is_an_error() {
        let mut tensor = float_tensor(&[2, 2]);
        tensor.float_data = vec![1.0, 2.0, 3.0];

        let error = tensor_to_f32(&tensor).unwrap_err().to_string();

        assert!(error.contains("call for 4 elements, found 3"), "{error}");
    }

    #[test]
    fn ragged_raw_data_is_an_error() {
        let mut tensor = float_tensor(&[1]);
        tensor.raw_data = Some(vec![0, 0, 128].into());

        assert!(matches!(tensor_to_f32(&tensor), Err(IrError::TensorData { .. })));
    }

    #[test]
    fn wrong_type_names_both_types() {
        let tensor = tensor_from_i8("q", &arr1(&[1i8, -1]).into_dyn());

        let error = tensor_to_f32(&tensor).unwrap_err().to_string();

        assert_eq!(error, "tensor `q` holds INT8, expected FLOAT");
    }

    #[test]
    fn external_tensor_is_not_read() {
        let mut tensor = float_tensor(&[1]);
        tensor.data_location = Some(DataLocation::External as i32);

        assert!(matches!(tensor_to_f32(&tensor), Err(IrError::NotInMemory { .. })));
    }

    #[test]
    fn made_tensors_read_back_equal() {
        let floats =
            ArrayD::from_shape_vec(IxDyn(&[2, 1, 2]), vec![0.5f32, -1.0, 3.0, 1e-7]).unwrap();
        let ints = arr2(&[[i64::MIN, -1], [0, i64::MAX]]).into_dyn();

        let float_tensor = tensor_from_f32("f", &floats);
        let int_tensor = tensor_from_i64("i", &ints);

        assert_eq!(float_tensor.dims, vec![2, 1, 2]);
        assert_eq!(float_tensor.raw_data.as_ref().map(|raw| raw.len()), Some(16));
        assert_eq!(tensor_to_f32(&float_tensor).unwrap(), floats);
        assert_eq!(tensor_to_i64(&int_tensor).unwrap(), ints);
    }

    #[test]
    fn narrow_integers_widen_to_i64() {
        let int8 = tensor_from_i8("a", &arr1(&[-128i8, 127]).into_dyn());
        let uint8 = tensor_from_u8("b", &arr1(&[0u8, 255]).into_dyn());
        let int32 = tensor_from_i32("c", &arr1(&[i32::MIN, 5]).into_dyn());
        let mut typed = float_tensor(&[2]);
        typed.data_type = Some(DataType::Int8 as i32);
        typed.int32_data = vec![-3, 4];

        assert_eq!(tensor_to_i64(&int8).unwrap(), arr1(&[-128i64, 127]).into_dyn());
        assert_eq!(tensor_to_i64(&uint8).unwrap(), arr1(&[0i64, 255]).into_dyn());
        assert_eq!(tensor_to_i64(&int32).unwrap(), arr1(&[i32::MIN as i64, 5]).into_dyn());
        assert_eq!(tensor_to_i64(&typed).unwrap(), arr1(&[-3i64, 4]).into_dyn());
    }

    #[test]
    fn transposed_view_is_written_in_logical_order() {
        let array = arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
        let transposed = array.t().to_owned().into_dyn();

        let tensor = tensor_from_f32("t", &transposed);

        assert_eq!(tensor_to_f32(&tensor).unwrap(), arr2(&[[1.0, 3.0], [2.0, 4.0]]).into_dyn());
    }

    #[test]
    fn typed_data_converts_to_raw_bytes() {
        let mut tensor = float_tensor(&[2]);
        tensor.float_data = vec![1.0, -0.5];

        let raw = typed_data_as_raw(&tensor).unwrap();

        assert_eq!(raw, [1.0f32.to_le_bytes(), (-0.5f32).to_le_bytes()].concat());
    }
}
