//! Float32 tensors as float16. Values beyond float16's range become its largest finite value
//! (±65504) instead of infinity, and non-zero values too small for any float16 become its
//! smallest subnormal (±2^-24) instead of zero, keeping their sign; everything else rounds to
//! the nearest float16 (ties to even). Infinities and NaN stay what they are.

use half::f16;

use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::TensorProto;
use crate::ir::{self, IrError};

/// The largest finite float16.
pub const MAX_FINITE: f32 = 65504.0;

/// The smallest positive float16, a subnormal: 2^-24.
pub const MIN_POSITIVE: f32 = 5.960_464_5e-8;

/// How many values of a conversion were moved to stay finite and non-zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adjusted {
    /// Finite values beyond ±65504, clamped to ±65504.
    pub clamped: usize,
    /// Non-zero values closer to zero than 2^-24, raised to ±2^-24.
    pub raised: usize,
}

impl Adjusted {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: Adjusted) {
        self.clamped += other.clamped;
        self.raised += other.raised;
    }

    /// Whether any value was moved.
    pub fn any(&self) -> bool {
        self.clamped + self.raised > 0
    }
}

/// One value as float16, counted in `adjusted` when it had to be moved.
pub fn to_f16(value: f32, adjusted: &mut Adjusted) -> f16 {
    let magnitude = value.abs();
    let kept = if magnitude.is_finite() && magnitude > MAX_FINITE {
        adjusted.clamped += 1;
        MAX_FINITE.copysign(value)
    } else if magnitude > 0.0 && magnitude < MIN_POSITIVE {
        adjusted.raised += 1;
        MIN_POSITIVE.copysign(value)
    } else {
        value
    };
    f16::from_f32(kept)
}

/// A FLOAT tensor as a FLOAT16 tensor with the same name, dimensions and metadata, its data
/// in `raw_data`.
pub fn tensor_to_f16(tensor: &TensorProto) -> Result<(TensorProto, Adjusted), IrError> {
    let values = ir::tensor_to_f32(tensor)?;

    let mut adjusted = Adjusted::default();
    let raw: Vec<u8> =
        values.iter().flat_map(|&v| to_f16(v, &mut adjusted).to_bits().to_le_bytes()).collect();

    // Only the description is copied: the float32 data may be large.
    let converted = TensorProto {
        name: tensor.name.clone(),
        dims: tensor.dims.clone(),
        doc_string: tensor.doc_string.clone(),
        metadata_props: tensor.metadata_props.clone(),
        data_type: Some(DataType::Float16 as i32),
        raw_data: Some(raw.into()),
        ..TensorProto::default()
    };
    Ok((converted, adjusted))
}

#[cfg(test)]
mod tests {
    use ndarray::arr1;

    use super::*;

    fn halves(tensor: &TensorProto) -> Vec<f32> {
        let raw = tensor.raw_data.as_deref().unwrap_or_default();
        raw.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
    }

    #[test]
    fn out_of_range_values_are_clamped_and_tiny_ones_raised() {
        let values = [
            1.0,
            -2.5,
            70000.0,
            -1e30,
            1e-9,
            -1e-12,
            0.0,
            1e-7,
            f32::INFINITY,
            f32::NEG_INFINITY,
            65504.0,
        ];
        let tensor = ir::tensor_from_f32("w", &arr1(&values).into_dyn());

        let (converted, adjusted) = tensor_to_f16(&tensor).unwrap();

        assert_eq!(converted.data_type(), DataType::Float16 as i32);
        assert_eq!(converted.name(), "w");
        assert_eq!(converted.dims, [values.len() as i64]);
        assert_eq!(adjusted, Adjusted { clamped: 2, raised: 2 });
        let back = halves(&converted);
        let tiny = f16::from_bits(1).to_f32();
        assert_eq!(&back[..4], &[1.0, -2.5, 65504.0, -65504.0]);
        assert_eq!(&back[4..7], &[tiny, -tiny, 0.0]);
        // 1e-7 is a float16 subnormal: it rounds to the nearest one (2 x 2^-24), not raised.
        assert_eq!(back[7], 2.0 * tiny);
        assert_eq!(&back[8..], &[f32::INFINITY, f32::NEG_INFINITY, 65504.0]);
    }

    #[test]
    fn nan_stays_nan_and_float_data_is_read() {
        let tensor = TensorProto {
            name: Some("c".into()),
            dims: vec![2],
            data_type: Some(DataType::Float as i32),
            float_data: vec![f32::NAN, 0.333_333_34],
            ..TensorProto::default()
        };

        let (converted, adjusted) = tensor_to_f16(&tensor).unwrap();

        assert!(converted.float_data.is_empty());
        let back = halves(&converted);
        assert!(back[0].is_nan());
        assert_eq!(back[1], f16::from_f32(0.333_333_34).to_f32());
        assert!(!adjusted.any());
    }

    #[test]
    fn the_smallest_positive_value_is_the_smallest_subnormal() {
        assert_eq!(f16::from_f32(MIN_POSITIVE).to_bits(), 1);
        assert_eq!(f16::from_f32(MAX_FINITE), f16::MAX);
    }
}
