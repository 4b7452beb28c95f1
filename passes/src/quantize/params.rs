//! Scale and zero point of linear quantization, and the quantization of weights, computed
//! the way ONNX Runtime's quantization tool computes them so that results match it bit for bit.
//!
//! The facts that matter for bit-exactness: the range is widened to include 0; a symmetric
//! range becomes `[-absmax, absmax]`; the scale is `(rmax - rmin) / (qmax - qmin)` in f64, then
//! rounded to f32; a scale below the smallest normal f32 becomes 1 with zero point 0; the
//! asymmetric zero point is `round(qmin - rmin / scale)` with the f64 scale; a value is
//! quantized as `round(x / scale) + zero_point` in f32, rounding half to even, then clipped to
//! the full range of the integer type.

use ndarray::{ArrayD, ArrayViewD, Axis, Zip};

/// The integer type values are quantized to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantType {
    Int8,
    Uint8,
    Int16,
    Uint16,
}

impl QuantType {
    /// Every value of the type: `[-128, 127]`, `[0, 255]`, `[-32768, 32767]` or `[0, 65535]`.
    pub fn full_range(self) -> (i32, i32) {
        match self {
            QuantType::Int8 => (-128, 127),
            QuantType::Uint8 => (0, 255),
            QuantType::Int16 => (-32768, 32767),
            QuantType::Uint16 => (0, 65535),
        }
    }

    /// Whether the type holds negative values.
    pub fn is_signed(self) -> bool {
        matches!(self, QuantType::Int8 | QuantType::Int16)
    }

    /// The range `(qmin, qmax)` scales are computed for.
    ///
    /// `reduce_range` (7-bit weights, for CPUs without VNNI) wins over `symmetric`: INT8 gets
    /// `[-64, 64]` and UINT8 `[0, 127]` (INT16 `[-16384, 16384]`, UINT16 `[0, 32767]`).
    /// Symmetric signed types drop their lowest value to stay balanced, `[-127, 127]` and
    /// `[-32767, 32767]`; symmetric unsigned types keep their full range.
    pub fn range(self, symmetric: bool, reduce_range: bool) -> (i32, i32) {
        match (self, reduce_range, symmetric) {
            (QuantType::Int8, true, _) => (-64, 64),
            (QuantType::Uint8, true, _) => (0, 127),
            (QuantType::Int16, true, _) => (-16384, 16384),
            (QuantType::Uint16, true, _) => (0, 32767),
            (QuantType::Int8, false, true) => (-127, 127),
            (QuantType::Int16, false, true) => (-32767, 32767),
            (qtype, false, _) => qtype.full_range(),
        }
    }
}

/// The parameters of `x = scale * (q - zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantParams {
    pub scale: f32,
    pub zero_point: i32,
}

/// Why values could not be quantized.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ParamsError {
    #[error("the values hold {value}, which has no quantized form")]
    NonFinite { value: f32 },

    #[error("axis {axis} is out of range for a tensor of rank {rank}")]
    Axis { axis: usize, rank: usize },
}

/// The smallest and the largest of `values`; `(0, 0)` when there are none.
pub fn min_max<'a>(values: impl IntoIterator<Item = &'a f32>) -> Result<(f32, f32), ParamsError> {
    let mut range: Option<(f32, f32)> = None;
    for &value in values {
        if !value.is_finite() {
            return Err(ParamsError::NonFinite { value });
        }
        range = Some(match range {
            None => (value, value),
            Some((lo, hi)) => (lo.min(value), hi.max(value)),
        });
    }
    Ok(range.unwrap_or((0.0, 0.0)))
}

/// Scale and zero point that map `[rmin, rmax]` (widened to include 0) onto `[qmin, qmax]`.
///
/// `qmin <= 0 <= qmax` must hold, as it does for every range [`QuantType::range`] returns.
pub fn compute_params(rmin: f32, rmax: f32, qmin: i32, qmax: i32, symmetric: bool) -> QuantParams {
    debug_assert!(qmin <= 0 && 0 <= qmax, "the integer range must contain 0");

    let (mut rmin, mut rmax) = (rmin.min(0.0), rmax.max(0.0));
    if symmetric {
        let absmax = rmin.abs().max(rmax.abs());
        rmin = -absmax;
        rmax = absmax;
    }

    let scale = (f64::from(rmax) - f64::from(rmin)) / (f64::from(qmax) - f64::from(qmin));
    if scale < f64::from(f32::MIN_POSITIVE) {
        return QuantParams { scale: 1.0, zero_point: 0 };
    }

    // The symmetric zero point is the middle of the integer range whatever the data, so that
    // every channel of a per-channel weight gets the same one (0 for INT8, 128 for UINT8).
    let zero_point = if symmetric {
        (f64::from(qmin + qmax) / 2.0).round_ties_even()
    } else {
        (f64::from(qmin) - f64::from(rmin) / scale).round_ties_even()
    };

    QuantParams { scale: scale as f32, zero_point: zero_point as i32 }
}

/// Quantizes one value: `round_half_even(x / scale) + zero_point`, clipped to the type.
pub fn quantize_value(x: f32, params: QuantParams, qtype: QuantType) -> i32 {
    let (lo, hi) = qtype.full_range();
    let q = (x / params.scale).round_ties_even() + params.zero_point as f32;
    q.clamp(lo as f32, hi as f32) as i32
}

/// A weight quantized to INT8, per tensor or per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeight {
    /// The quantized values, in the weight's shape.
    pub values: ArrayD<i8>,
    /// One scale per tensor, or one per index of `axis`.
    pub scales: Vec<f32>,
    /// One zero point per scale.
    pub zero_points: Vec<i8>,
    /// The channel axis, or `None` for one scale over the whole tensor.
    pub axis: Option<usize>,
}

/// Quantizes a float weight to INT8 with one scale, or one scale per slice along `axis`.
pub fn quantize_weight_int8(
    weight: ArrayViewD<'_, f32>,
    axis: Option<usize>,
    symmetric: bool,
    reduce_range: bool,
) -> Result<QuantizedWeight, ParamsError> {
    let (qmin, qmax) = QuantType::Int8.range(symmetric, reduce_range);
    let mut values = ArrayD::<i8>::zeros(weight.raw_dim());

    let Some(axis) = axis else {
        let (rmin, rmax) = min_max(weight.iter())?;
        let params = compute_params(rmin, rmax, qmin, qmax, symmetric);
        quantize_into(values.view_mut(), weight, params);
        return Ok(QuantizedWeight {
            values,
            scales: vec![params.scale],
            zero_points: vec![params.zero_point as i8],
            axis: None,
        });
    };

    if axis >= weight.ndim() {
        return Err(ParamsError::Axis { axis, rank: weight.ndim() });
    }

    let mut scales = Vec::with_capacity(weight.len_of(Axis(axis)));
    let mut zero_points = Vec::with_capacity(scales.capacity());
    for (channel, out) in weight.axis_iter(Axis(axis)).zip(values.axis_iter_mut(Axis(axis))) {
        let (rmin, rmax) = min_max(channel.iter())?;
        let params = compute_params(rmin, rmax, qmin, qmax, symmetric);
        quantize_into(out, channel, params);
        scales.push(params.scale);
        zero_points.push(params.zero_point as i8);
    }
    Ok(QuantizedWeight { values, scales, zero_points, axis: Some(axis) })
}

fn quantize_into(out: ndarray::ArrayViewMutD<'_, i8>, x: ArrayViewD<'_, f32>, params: QuantParams) {
    Zip::from(out).and(x).for_each(|q, &x| *q = quantize_value(x, params, QuantType::Int8) as i8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    fn quantize_1d(data: &[f32], qtype: QuantType, symmetric: bool, reduce: bool) -> Vec<i32> {
        let (lo, hi) = min_max(data).unwrap();
        let (qmin, qmax) = qtype.range(symmetric, reduce);
        let params = compute_params(lo, hi, qmin, qmax, symmetric);
        data.iter().map(|&x| quantize_value(x, params, qtype)).collect()
    }

    fn params_1d(data: &[f32], qtype: QuantType, symmetric: bool, reduce: bool) -> QuantParams {
        let (lo, hi) = min_max(data).unwrap();
        let (qmin, qmax) = qtype.range(symmetric, reduce);
        compute_params(lo, hi, qmin, qmax, symmetric)
    }

    #[test]
    fn ranges_follow_ort_tables() {
        assert_eq!(QuantType::Int8.range(false, false), (-128, 127));
        assert_eq!(QuantType::Int8.range(true, false), (-127, 127));
        assert_eq!(QuantType::Int8.range(true, true), (-64, 64));
        assert_eq!(QuantType::Int8.range(false, true), (-64, 64));
        assert_eq!(QuantType::Uint8.range(false, false), (0, 255));
        assert_eq!(QuantType::Uint8.range(true, false), (0, 255));
        assert_eq!(QuantType::Uint8.range(false, true), (0, 127));
    }

    #[test]
    fn sixteen_bit_ranges_follow_ort_tables() {
        assert_eq!(QuantType::Int16.range(false, false), (-32768, 32767));
        assert_eq!(QuantType::Int16.range(true, false), (-32767, 32767));
        assert_eq!(QuantType::Int16.range(true, true), (-16384, 16384));
        assert_eq!(QuantType::Uint16.range(false, false), (0, 65535));
        assert_eq!(QuantType::Uint16.range(true, false), (0, 65535));
        assert_eq!(QuantType::Uint16.range(false, true), (0, 32767));
        assert!(QuantType::Int16.is_signed() && !QuantType::Uint16.is_signed());
    }

    #[test]
    fn symmetric_sixteen_bit_zero_points_are_0_and_32768() {
        // (0 + 65535) / 2 = 32767.5 rounds half to even, to 32768.
        let params = params_1d(&[-1.0, 3.0], QuantType::Uint16, true, false);
        assert_eq!(params.zero_point, 32768);
        let params = params_1d(&[-1.0, 3.0], QuantType::Int16, true, false);
        assert_eq!(params.zero_point, 0);
        assert_eq!(quantize_1d(&[-1.0, 3.0], QuantType::Int16, true, false), [-10922, 32767]);
    }

    #[test]
    fn symmetric_int8_scale_is_absmax_over_127() {
        // 2 * 2.54f32 / 254 in f64 is 0.0199999996996..., which rounds to 0.02f32.
        let data = [-1.0, 0.5, 2.54];
        let params = params_1d(&data, QuantType::Int8, true, false);
        assert_eq!(params.scale.to_bits(), 0.02f32.to_bits());
        assert_eq!(params.scale.to_bits(), 1017370378);
        assert_eq!(params.zero_point, 0);
        assert_eq!(quantize_1d(&data, QuantType::Int8, true, false), [-50, 25, 127]);
    }

    #[test]
    fn rounds_half_to_even() {
        // absmax 127 gives scale 254 / 254 = 1, so x / scale is x itself.
        let data = [0.0, 0.5, 1.5, 2.5, -0.5, -1.5, -127.0, 127.0];
        assert_eq!(params_1d(&data, QuantType::Int8, true, false).scale, 1.0);
        assert_eq!(
            quantize_1d(&data, QuantType::Int8, true, false),
            [0, 0, 2, 2, 0, -2, -127, 127]
        );
    }

    #[test]
    fn reduce_range_uses_seven_bits() {
        // [-64, 64]: absmax 64 gives scale 128 / 128 = 1.
        let data = [64.0, -64.0, 2.5, 3.5, -0.5];
        let params = params_1d(&data, QuantType::Int8, true, true);
        assert_eq!((params.scale, params.zero_point), (1.0, 0));
        assert_eq!(quantize_1d(&data, QuantType::Int8, true, true), [64, -64, 2, 4, 0]);

        // UINT8 reduced to [0, 127]: scale 4 / 127, zero point round(127 / 4) = 32.
        let params = params_1d(&[-1.0, 3.0], QuantType::Uint8, false, true);
        assert_eq!(params.scale.to_bits(), 1023476228);
        assert_eq!(params.zero_point, 32);
    }

    #[test]
    fn asymmetric_range_includes_zero() {
        // All-positive data: rmin is widened to 0, so the zero point is 0, scale 2.55 / 255.
        let params = params_1d(&[0.5, 2.55], QuantType::Uint8, false, false);
        assert_eq!(params.scale.to_bits(), 1008981770);
        assert_eq!(params.zero_point, 0);
        assert_eq!(quantize_1d(&[0.0, 2.55], QuantType::Uint8, false, false), [0, 255]);

        // [-1, 3]: zero point round(255 / 4) = round(63.75) = 64.
        let params = params_1d(&[-1.0, 3.0], QuantType::Uint8, false, false);
        assert_eq!((params.scale.to_bits(), params.zero_point), (1015054465, 64));

        // INT8 asymmetric on the same data: -128 + 63.75 rounds to -64.
        let params = params_1d(&[-1.0, 3.0], QuantType::Int8, false, false);
        assert_eq!((params.scale.to_bits(), params.zero_point), (1015054465, -64));
        assert_eq!(quantize_1d(&[-1.0, 3.0], QuantType::Int8, false, false), [-128, 127]);
    }

    #[test]
    fn zero_point_rounds_half_to_even() {
        // [-1, 1] on UINT8: 0 - (-1) / (2 / 255) = 127.5 exactly in f64, which rounds to 128.
        let params = params_1d(&[-1.0, 1.0], QuantType::Uint8, false, false);
        assert_eq!((params.scale.to_bits(), params.zero_point), (1006665857, 128));
        assert_eq!(quantize_1d(&[-1.0, 1.0], QuantType::Uint8, false, false), [1, 255]);
    }

    #[test]
    fn symmetric_uint8_zero_point_is_128() {
        // Scale 6 / 255; -1 / scale = -42.5 rounds to -42, plus 128.
        let params = params_1d(&[-1.0, 3.0], QuantType::Uint8, true, false);
        assert_eq!((params.scale.to_bits(), params.zero_point), (1019265217, 128));
        assert_eq!(quantize_1d(&[-1.0, 3.0], QuantType::Uint8, true, false), [86, 255]);
    }

    #[test]
    fn zero_point_uses_the_f64_scale() {
        // With the scale rounded to f32 first the zero point would be 248; ORT gets 249.
        let data = [f32::from_bits(0xc0ed_f950), f32::from_bits(0x3e47_3075)];
        let params = params_1d(&data, QuantType::Uint8, false, false);
        assert_eq!((params.scale.to_bits(), params.zero_point), (0x3cf5_27fc, 249));
        assert_eq!(quantize_1d(&data, QuantType::Uint8, false, false), [1, 255]);
    }

    #[test]
    fn zero_or_tiny_range_gets_scale_one() {
        for data in [&[0.0f32, 0.0, 0.0][..], &[1e-38, -5e-39], &[]] {
            let params = params_1d(data, QuantType::Int8, true, false);
            assert_eq!((params.scale, params.zero_point), (1.0, 0));
            assert!(quantize_1d(data, QuantType::Int8, true, false).iter().all(|&q| q == 0));
        }

        // A scale of exactly the smallest normal f32 is kept.
        let data = [f32::MIN_POSITIVE * 127.0];
        let params = params_1d(&data, QuantType::Int8, true, false);
        assert_eq!(params.scale, f32::MIN_POSITIVE);
        assert_eq!(quantize_1d(&data, QuantType::Int8, true, false), [127]);
    }

    #[test]
    fn quantized_values_are_clipped_to_the_type() {
        let params = QuantParams { scale: 1.0, zero_point: 0 };
        assert_eq!(quantize_value(1000.0, params, QuantType::Int8), 127);
        assert_eq!(quantize_value(-1000.0, params, QuantType::Int8), -128);
        assert_eq!(quantize_value(-3.0, params, QuantType::Uint8), 0);
    }

    #[test]
    fn non_finite_values_are_refused() {
        assert!(matches!(min_max(&[1.0, f32::NAN]), Err(ParamsError::NonFinite { .. })));
        assert_eq!(
            min_max(&[1.0, f32::INFINITY]),
            Err(ParamsError::NonFinite { value: f32::INFINITY })
        );
    }

    #[test]
    fn per_channel_weight_has_one_scale_per_column() {
        // Column 0 spans [-2, 1], column 1 is all zero, column 2 is all positive.
        let weight = arr2(&[[-2.0f32, 0.0, 0.5], [1.0, 0.0, 1.27]]).into_dyn();
        let q = quantize_weight_int8(weight.view(), Some(1), true, false).unwrap();
        assert_eq!(q.axis, Some(1));
        assert_eq!(q.zero_points, [0, 0, 0]);
        let bits: Vec<u32> = q.scales.iter().map(|s| s.to_bits()).collect();
        assert_eq!(bits, [1015087620, 1.0f32.to_bits(), 1008981770]);
        assert_eq!(q.values, arr2(&[[-127i8, 0, 50], [64, 0, 127]]).into_dyn());

        let q = quantize_weight_int8(weight.view(), None, true, false).unwrap();
        assert_eq!(q.scales[0].to_bits(), 1015087620);
        assert_eq!(q.values, arr2(&[[-127i8, 0, 32], [64, 0, 81]]).into_dyn());
    }

    #[test]
    fn axis_must_exist() {
        let weight = arr1(&[1.0f32]).into_dyn();
        let err = quantize_weight_int8(weight.view(), Some(1), true, false).unwrap_err();
        assert_eq!(err, ParamsError::Axis { axis: 1, rank: 1 });
    }
}
