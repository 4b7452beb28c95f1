//! The numbers of static quantization: activation parameters from calibrated ranges, weight
//! parameters from their values (per tensor or per channel), int32 biases at the scale
//! `input scale x weight scale`, and the weight-scale adjustment that keeps such a bias
//! within int32. Each follows ONNX Runtime's tool to the bit; both output formats (QDQ and
//! QOperator) use them.

use ndarray::{ArrayD, ArrayViewD, Axis};

use super::super::calibrate::TensorRange;
use super::super::params::{compute_params, min_max, quantize_value, QuantParams, QuantType};
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::TensorProto;

/// ORT widens a weight's scale until the bias scale is at least this factor above the
/// smallest one that keeps the bias within int32.
const BIAS_SCALE_MARGIN: f64 = 1.0001;

/// `i32::MAX - (i32::MIN + 1)`: the int32 span ORT allows a bias.
const INT32_SPAN: f64 = 4_294_967_294.0;

/// The quantization parameters of one tensor: one scale and zero point, or one per index of
/// `axis`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TensorParams {
    pub qtype: QuantType,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i32>,
    pub axis: Option<usize>,
}

impl TensorParams {
    /// Per-tensor parameters.
    pub(crate) fn single(qtype: QuantType, params: QuantParams) -> Self {
        TensorParams {
            qtype,
            scales: vec![params.scale],
            zero_points: vec![params.zero_point],
            axis: None,
        }
    }

    pub(crate) fn channel(&self, index: usize) -> QuantParams {
        QuantParams { scale: self.scales[index], zero_point: self.zero_points[index] }
    }
}

/// The parameters of an activation with calibrated `range`. Activations never use the
/// reduced range, as in ORT.
pub(crate) fn activation_params(
    tensor: &str,
    range: TensorRange,
    qtype: QuantType,
    symmetric: bool,
) -> Result<QuantParams, String> {
    let TensorRange { min, max } = range;
    if !min.is_finite() || !max.is_finite() || min > max {
        return Err(format!(
            "the calibrated range of tensor `{tensor}` is [{min}, {max}], which is not a finite \
             range; hint: check the calibration data for NaN or Inf"
        ));
    }

    let (qmin, qmax) = qtype.range(symmetric, false);
    Ok(compute_params(min, max, qmin, qmax, symmetric))
}

/// The parameters of a constant tensor from its own values: per tensor, or per slice along
/// `axis`. Per channel, only symmetric parameters give every channel the same zero point, which
/// the QDQ format's callers ask for; ORT's QOperator writer follows the weight type's symmetry.
pub(crate) fn initializer_params(
    tensor: &str,
    data: ArrayViewD<'_, f32>,
    qtype: QuantType,
    axis: Option<usize>,
    symmetric: bool,
    reduce_range: bool,
) -> Result<TensorParams, String> {
    let read_range = |values: ArrayViewD<'_, f32>| {
        min_max(values.iter()).map_err(|e| {
            format!("cannot quantize initializer `{tensor}`: {e}; hint: fix the model's weights")
        })
    };

    let Some(axis) = axis else {
        let (qmin, qmax) = qtype.range(symmetric, reduce_range);
        let (rmin, rmax) = read_range(data)?;
        return Ok(TensorParams::single(qtype, compute_params(rmin, rmax, qmin, qmax, symmetric)));
    };

    if axis >= data.ndim() {
        return Err(format!(
            "initializer `{tensor}` has rank {}, so it has no channel axis {axis}",
            data.ndim()
        ));
    }
    let (qmin, qmax) = qtype.range(symmetric, reduce_range);
    let mut params = TensorParams { qtype, scales: vec![], zero_points: vec![], axis: Some(axis) };
    for channel in data.axis_iter(Axis(axis)) {
        let (rmin, rmax) = read_range(channel)?;
        let channel_params = compute_params(rmin, rmax, qmin, qmax, symmetric);
        params.scales.push(channel_params.scale);
        params.zero_points.push(channel_params.zero_point);
    }
    Ok(params)
}

/// `data` quantized with `params`, in `data`'s shape.
pub(crate) fn quantize(data: ArrayViewD<'_, f32>, params: &TensorParams) -> ArrayD<i32> {
    let mut values = ArrayD::<i32>::zeros(data.raw_dim());
    match params.axis {
        None => {
            let single = params.channel(0);
            values.zip_mut_with(&data, |q, &x| *q = quantize_value(x, single, params.qtype));
        }
        Some(axis) => {
            let channels = values.axis_iter_mut(Axis(axis)).zip(data.axis_iter(Axis(axis)));
            for (index, (mut out, channel)) in channels.enumerate() {
                let single = params.channel(index);
                out.zip_mut_with(&channel, |q, &x| *q = quantize_value(x, single, params.qtype));
            }
        }
    }
    values
}

/// Widens the weight's scales, as ORT does, where `input_scale x weight scale` is too small
/// for `bias` to fit int32 (with a margin of 1e-4). Returns whether a scale changed.
///
/// Per tensor the bias's largest magnitude counts; per channel each channel's own bias. The
/// caller checks that the weight is symmetric (zero points all 0) and signed, and that a
/// per-channel weight has one bias value per channel.
pub(crate) fn widen_weight_scales_for_bias(
    input_scale: f32,
    weight: &mut TensorParams,
    bias: ArrayViewD<'_, f32>,
) -> bool {
    let input_scale = f64::from(input_scale);
    let mut changed = false;
    let mut widen = |scale: &mut f32, smallest_valid: f64| {
        let candidate = input_scale * f64::from(*scale);
        if candidate < smallest_valid && candidate > 0.0 {
            *scale = (f64::from(*scale) * (smallest_valid / candidate)) as f32;
            changed = true;
        }
    };

    match weight.axis {
        None => {
            // ORT takes the extremes as f32 and widens them to f64 to compare with 0.
            let lowest = bias.iter().copied().fold(f32::INFINITY, f32::min);
            let highest = bias.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let absmax = f64::from(lowest).min(0.0).abs().max(f64::from(highest).max(0.0));
            widen(&mut weight.scales[0], BIAS_SCALE_MARGIN * (2.0 * absmax) / INT32_SPAN);
        }
        Some(_) => {
            for (scale, &value) in weight.scales.iter_mut().zip(bias.iter()) {
                // Per channel ORT multiplies in f32 (NumPy keeps a float32 scalar's type).
                let span = BIAS_SCALE_MARGIN as f32 * (2.0 * value.abs());
                widen(scale, f64::from(span) / INT32_SPAN);
            }
        }
    }
    changed
}

/// A bias quantized to int32 with zero point 0.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct QuantizedBias {
    pub values: ArrayD<i32>,
    /// `input scale x weight scale`, one per weight scale.
    pub scales: Vec<f32>,
    /// Whether some value had to be clipped to the int32 range.
    pub clipped: bool,
}

/// `bias` quantized at the scale `input_scale x weight_scales[i]` (in f32), rounding half to
/// even in f64 as ORT does. With more than one weight scale the bias must be 1-D with one
/// value per scale.
pub(crate) fn quantize_bias(
    bias: ArrayViewD<'_, f32>,
    input_scale: f32,
    weight_scales: &[f32],
) -> QuantizedBias {
    let scales: Vec<f32> = weight_scales.iter().map(|&w| input_scale * w).collect();
    let mut clipped = false;
    let mut quantize = |x: f32, scale: f32| {
        let q = (f64::from(x) / f64::from(scale)).round_ties_even();
        let bounded = q.clamp(f64::from(i32::MIN), f64::from(i32::MAX));
        clipped |= bounded != q;
        bounded as i32
    };

    let values = match scales.as_slice() {
        [single] => bias.mapv(|x| quantize(x, *single)),
        _ => {
            let mut values = ArrayD::<i32>::zeros(bias.raw_dim());
            for ((q, &x), &scale) in values.iter_mut().zip(bias.iter()).zip(&scales) {
                *q = quantize(x, scale);
            }
            values
        }
    };
    QuantizedBias { values, scales, clipped }
}

/// The ONNX element type of a quantized type.
pub(crate) fn data_type(qtype: QuantType) -> DataType {
    match qtype {
        QuantType::Int8 => DataType::Int8,
        QuantType::Uint8 => DataType::Uint8,
        QuantType::Int16 => DataType::Int16,
        QuantType::Uint16 => DataType::Uint16,
    }
}

/// A tensor of `qtype` named `name` with the given dimensions and values, in `raw_data`.
/// The values must lie in the type's range.
pub(crate) fn integer_tensor(
    name: &str,
    qtype: QuantType,
    dims: &[i64],
    values: impl IntoIterator<Item = i32>,
) -> TensorProto {
    let raw: Vec<u8> = match qtype {
        QuantType::Int8 => values.into_iter().map(|v| v as i8 as u8).collect(),
        QuantType::Uint8 => values.into_iter().map(|v| v as u8).collect(),
        QuantType::Int16 => values.into_iter().flat_map(|v| (v as i16).to_le_bytes()).collect(),
        QuantType::Uint16 => values.into_iter().flat_map(|v| (v as u16).to_le_bytes()).collect(),
    };
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(data_type(qtype) as i32),
        name: Some(name.to_string()),
        raw_data: Some(raw.into()),
        ..TensorProto::default()
    }
}

/// An INT32 tensor named `name` with the given dimensions and values.
pub(crate) fn int32_tensor(
    name: &str,
    dims: &[i64],
    values: impl IntoIterator<Item = i32>,
) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Int32 as i32),
        name: Some(name.to_string()),
        raw_data: Some(values.into_iter().flat_map(i32::to_le_bytes).collect::<Vec<_>>().into()),
        ..TensorProto::default()
    }
}

/// A FLOAT tensor named `name` with the given dimensions and values.
pub(crate) fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        name: Some(name.to_string()),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>().into()),
        ..TensorProto::default()
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{arr1, arr2};

    use super::*;

    #[test]
    fn activation_range_must_be_finite() {
        let range = TensorRange { min: f32::NAN, max: 1.0 };
        let err = activation_params("x", range, QuantType::Uint8, false).unwrap_err();
        assert!(err.contains("tensor `x`") && err.contains("NaN"), "{err}");

        let range = TensorRange { min: -1.0, max: 3.0 };
        let params = activation_params("x", range, QuantType::Uint8, false).unwrap();
        assert_eq!((params.scale.to_bits(), params.zero_point), (1015054465, 64));
    }

    #[test]
    fn per_channel_parameters_follow_the_symmetry_asked_for() {
        let data = arr2(&[[-1.0f32, 0.0], [3.0, 2.0]]).into_dyn();
        let symmetric =
            initializer_params("w", data.view(), QuantType::Uint8, Some(1), true, false).unwrap();
        assert_eq!(symmetric.zero_points, [128, 128]);
        assert_eq!(symmetric.scales[0], 6.0 / 255.0);

        // Column 0 spans [-1, 3], column 1 [0, 2]: each its own zero point.
        let asymmetric =
            initializer_params("w", data.view(), QuantType::Uint8, Some(1), false, false).unwrap();
        assert_eq!(asymmetric.zero_points, [64, 0]);
        assert_eq!(asymmetric.scales, [4.0 / 255.0, 2.0 / 255.0]);

        let reduced =
            initializer_params("w", data.view(), QuantType::Int8, None, true, true).unwrap();
        assert_eq!(reduced.scales, [6.0 / 128.0]);
        assert_eq!(quantize(data.view(), &reduced), arr2(&[[-21, 0], [64, 43]]).into_dyn());
    }

    #[test]
    fn per_channel_values_use_their_channel() {
        let data = arr2(&[[1.0f32, 10.0], [-1.0, 5.0]]).into_dyn();
        let params =
            initializer_params("w", data.view(), QuantType::Int8, Some(1), true, false).unwrap();
        assert_eq!(params.scales, [1.0f32 * 2.0 / 254.0, 10.0 * 2.0 / 254.0]);
        assert_eq!(quantize(data.view(), &params), arr2(&[[127, 127], [-127, 64]]).into_dyn());
    }

    #[test]
    fn bias_scale_is_input_scale_times_weight_scale() {
        let bias = arr1(&[0.5f32, -0.25, 1e-3]).into_dyn();
        let quantized = quantize_bias(bias.view(), 0.1, &[0.02]);
        assert_eq!(quantized.scales, [0.1f32 * 0.02]);
        // 0.5 / 0.002 = 250, -0.25 / 0.002 = -125, 0.001 / 0.002 = 0.5 rounds to 0.
        let scale = f64::from(0.1f32 * 0.02);
        let expect = |x: f64| (x / scale).round_ties_even() as i32;
        let expected = [expect(f64::from(0.5f32)), expect(f64::from(-0.25f32)), expect(1e-3)];
        assert_eq!(quantized.values.as_slice().unwrap(), expected);
        assert!(!quantized.clipped);

        let per_channel = quantize_bias(arr1(&[1.0f32, 1.0]).into_dyn().view(), 1.0, &[0.5, 0.25]);
        assert_eq!(per_channel.values.as_slice().unwrap(), [2, 4]);

        let huge = quantize_bias(arr1(&[1e30f32]).into_dyn().view(), 1e-10, &[1e-10]);
        assert_eq!(huge.values.as_slice().unwrap(), [i32::MAX]);
        assert!(huge.clipped);
    }

    #[test]
    fn tiny_bias_scale_widens_the_weight_scale() {
        // 1e-6 x 1e-6 = 1e-12 cannot hold a bias of 1000 in int32 (needs about 4.7e-7).
        let bias = arr1(&[1000.0f32, -10.0]).into_dyn();
        let mut weight =
            TensorParams::single(QuantType::Int8, QuantParams { scale: 1e-6, zero_point: 0 });
        assert!(widen_weight_scales_for_bias(1e-6, &mut weight, bias.view()));
        let smallest = 1.0001 * 2000.0 / INT32_SPAN;
        let expected =
            (f64::from(1e-6f32) * (smallest / (f64::from(1e-6f32) * f64::from(1e-6f32)))) as f32;
        assert_eq!(weight.scales[0], expected);
        let quantized = quantize_bias(bias.view(), 1e-6, &weight.scales);
        assert!(!quantized.clipped);

        let mut fine =
            TensorParams::single(QuantType::Int8, QuantParams { scale: 0.1, zero_point: 0 });
        assert!(!widen_weight_scales_for_bias(0.1, &mut fine, bias.view()));
        assert_eq!(fine.scales, [0.1]);
    }

    #[test]
    fn integer_tensors_hold_each_type() {
        let t = integer_tensor("z", QuantType::Int16, &[2], [-2, 300]);
        assert_eq!(t.raw_data.unwrap().to_vec(), [254, 255, 44, 1]);
        let t = integer_tensor("z", QuantType::Uint16, &[], [32768]);
        assert_eq!(
            (t.data_type(), t.raw_data.unwrap().to_vec()),
            (DataType::Uint16 as i32, vec![0, 128])
        );
        let t = integer_tensor("z", QuantType::Int8, &[], [-1]);
        assert_eq!(t.raw_data.unwrap().to_vec(), [255]);
    }
}
