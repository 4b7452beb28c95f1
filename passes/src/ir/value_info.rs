//! Tensor declarations (`ValueInfoProto`): one built from a name, an element type and
//! dimensions, and the element type and dimensions read back out of one.

use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::ir::proto::tensor_shape_proto::Dimension;
use crate::ir::proto::{type_proto, TensorShapeProto, TypeProto, ValueInfoProto};
use crate::ir::shapes::{Dim, ValueType};

/// Declares `name` a tensor of ONNX element type `elem_type` (a `DataType` number).
///
/// With `shape`, each dimension becomes a `dim_value` ([`Dim::Known`]), a `dim_param`
/// ([`Dim::Symbol`]) or a dimension with neither ([`Dim::Unknown`]); without, the tensor's
/// rank is unknown too. Nothing else is set: no denotation, doc string or metadata.
pub fn tensor_value_info(name: &str, elem_type: i32, shape: Option<&[Dim]>) -> ValueInfoProto {
    let shape = shape.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|dim| Dimension {
                value: match dim {
                    Dim::Known(size) => Some(DimValue::DimValue(*size)),
                    Dim::Symbol(symbol) => Some(DimValue::DimParam(symbol.clone())),
                    Dim::Unknown => None,
                },
                denotation: None,
            })
            .collect(),
    });
    let tensor = type_proto::Tensor { elem_type: Some(elem_type), shape };

    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            denotation: None,
        }),
        ..ValueInfoProto::default()
    }
}

/// Declares `name` a float32 tensor of the fixed dimensions `dims`, as
/// [`tensor_value_info`] does.
pub fn float_value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<Dim> = dims.iter().map(|&size| Dim::Known(size)).collect();
    tensor_value_info(name, DataType::Float as i32, Some(&dims))
}

/// The element type (0 when it declares none) and dimensions `value` declares, when it
/// declares a tensor; `None` for a value of no type or of another type (sequence, map ...).
/// A `dim_param` that is empty counts as an unknown dimension, not a symbol.
pub fn declared_type(value: &ValueInfoProto) -> Option<ValueType> {
    let type_proto::Value::TensorType(tensor) = value.r#type.as_ref()?.value.as_ref()? else {
        return None;
    };
    let dims = tensor.shape.as_ref().map(|shape| {
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(DimValue::DimValue(v)) => Dim::Known(*v),
                Some(DimValue::DimParam(p)) if !p.is_empty() => Dim::Symbol(p.clone()),
                _ => Dim::Unknown,
            })
            .collect()
    });
    Some(ValueType { elem_type: tensor.elem_type.unwrap_or(0), dims })
}

/// The element type `value` declares, when it declares a tensor with one (not 0, which is
/// `UNDEFINED`).
pub fn declared_elem_type(value: &ValueInfoProto) -> Option<i32> {
    match value.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(tensor) => {
            tensor.elem_type.filter(|&t| t != DataType::Undefined as i32)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(value: &ValueInfoProto) -> Option<&[Dimension]> {
        match value.r#type.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(tensor) => Some(tensor.shape.as_ref()?.dim.as_slice()),
            _ => None,
        }
    }

    #[test]
    fn each_kind_of_dimension_becomes_its_field() {
        let shape = [Dim::Known(2), Dim::Symbol("batch".into()), Dim::Unknown];

        let value = tensor_value_info("x", DataType::Int64 as i32, Some(&shape));

        assert_eq!(value.name(), "x");
        let dims = dims(&value).expect("a shape");
        assert_eq!(dims[0].value, Some(DimValue::DimValue(2)));
        assert_eq!(dims[1].value, Some(DimValue::DimParam("batch".into())));
        assert_eq!(dims[2], Dimension::default());
        assert_eq!(dims.len(), 3);
        assert_eq!(declared_elem_type(&value), Some(DataType::Int64 as i32));
    }

    #[test]
    fn without_a_shape_the_rank_is_unknown_and_an_empty_shape_is_a_scalar() {
        let unranked = tensor_value_info("x", DataType::Float as i32, None);
        let scalar = tensor_value_info("s", DataType::Float as i32, Some(&[]));

        assert_eq!(dims(&unranked), None);
        assert_eq!(dims(&scalar), Some(&[][..]));
    }

    #[test]
    fn declared_types_read_back_what_was_built() {
        let shape = vec![Dim::Symbol("batch".into()), Dim::Unknown, Dim::Known(4)];
        let built = tensor_value_info("x", DataType::Float16 as i32, Some(&shape));

        let read = declared_type(&built).expect("a tensor");

        assert_eq!(read, ValueType { elem_type: DataType::Float16 as i32, dims: Some(shape) });
        assert_eq!(
            declared_type(&float_value_info("y", &[1, 3])),
            Some(ValueType { elem_type: 1, dims: Some(vec![Dim::Known(1), Dim::Known(3)]) })
        );
    }

    #[test]
    fn values_that_are_not_typed_tensors_declare_no_tensor_type() {
        let untyped = ValueInfoProto { name: Some("u".into()), ..ValueInfoProto::default() };
        let sequence = ValueInfoProto {
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::SequenceType(Box::default())),
                denotation: None,
            }),
            ..ValueInfoProto::default()
        };
        let undefined = tensor_value_info("z", DataType::Undefined as i32, None);

        assert_eq!(declared_type(&untyped), None);
        assert_eq!(declared_type(&sequence), None);
        assert_eq!(declared_elem_type(&sequence), None);
        assert_eq!(declared_elem_type(&undefined), None);
        assert_eq!(declared_type(&undefined).map(|t| t.elem_type), Some(0));
    }

    #[test]
    fn an_empty_dim_param_reads_as_unknown() {
        let value = tensor_value_info("x", 1, Some(&[Dim::Symbol(String::new())]));

        let read = declared_type(&value).and_then(|t| t.dims);

        assert_eq!(read, Some(vec![Dim::Unknown]));
    }
}
