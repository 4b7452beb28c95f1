//! The few pieces of NumPy arithmetic whose exact rounding ONNX Runtime's calibrators inherit.
//!
//! ORT computes calibration ranges with NumPy in float32, so its results depend on the
//! order in which NumPy adds numbers (pairwise summation), on how it spaces histogram edges
//! (`linspace`, `arange`), on how it rounds floor division, and on its own float32
//! logarithm. The functions here reproduce those in Rust; the tests in
//! `passes/tests/calibrate_ort.rs` check the end results against ORT itself.

/// How many values NumPy adds with eight running sums before it splits a sum in two.
const PAIRWISE_BLOCK: usize = 128;

/// The sum of `values` in float32, added in the order NumPy's `np.sum` adds a contiguous
/// float32 array: blocks of up to 128 values summed with eight interleaved accumulators,
/// larger ranges split in two at a multiple of eight. The reduction starts from `0.0`.
pub(crate) fn pairwise_sum(values: &[f32]) -> f32 {
    0.0 + pairwise_block(values)
}

fn pairwise_block(values: &[f32]) -> f32 {
    let n = values.len();
    if n < 8 {
        return values.iter().fold(-0.0, |sum, &value| sum + value);
    }

    if n <= PAIRWISE_BLOCK {
        let mut lanes = [0.0f32; 8];
        lanes.copy_from_slice(&values[..8]);
        let whole = n - n % 8;
        for chunk in values[8..whole].chunks_exact(8) {
            for (lane, &value) in lanes.iter_mut().zip(chunk) {
                *lane += value;
            }
        }

        let mut sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
            + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
        for &value in &values[whole..] {
            sum += value;
        }
        return sum;
    }

    let mut half = n / 2;
    half -= half % 8;
    pairwise_block(&values[..half]) + pairwise_block(&values[half..])
}

/// The mean of `values` as `np.nanmean` computes it for float32 data without NaN: the
/// pairwise float32 sum, divided by the count in float64, rounded back to float32.
pub(crate) fn mean(values: &[f32]) -> f32 {
    (f64::from(pairwise_sum(values)) / values.len() as f64) as f32
}

/// `n + 1` edges from `first` to `last`, as `np.linspace(first, last, n + 1, dtype=float32)`
/// makes them for `np.histogram`: edge `i` is `i * step + first` in float32, with
/// `step = (last - first) / n`, and the last edge is `last` itself.
pub(crate) fn linspace(first: f32, last: f32, n: usize) -> Vec<f32> {
    let delta = last - first;
    let step = delta / n as f32;
    let mut edges: Vec<f32> = if step == 0.0 {
        // NumPy divides before it multiplies when the step underflows to zero.
        (0..=n).map(|i| (i as f32 / n as f32) * delta + first).collect()
    } else {
        (0..=n).map(|i| i as f32 * step + first).collect()
    };
    edges[n] = last;
    edges
}

/// `np.arange(start, stop, step)` for float32 scalars, which NumPy returns in float64: its
/// length is `ceil((stop - start) / step)` computed in float32; the first value is `start`,
/// the second `start + step` in float32, and the others `start + i * delta` in float64 with
/// `delta` the difference of the first two.
pub(crate) fn arange(start: f32, stop: f32, step: f32) -> Vec<f64> {
    let length = ((stop - start) / step).ceil();
    if length.is_nan() || length <= 0.0 {
        return Vec::new();
    }

    let length = length as usize;
    let first = f64::from(start);
    let second = f64::from(start + step);
    let delta = second - first;
    (0..length)
        .map(|i| match i {
            0 => first,
            1 => second,
            _ => first + i as f64 * delta,
        })
        .collect()
}

/// `a // b` for float32 scalars, as NumPy computes it: `(a - fmod(a, b)) / b`, moved down
/// by one when the remainder's sign differs from `b`'s, then floored and snapped to the
/// nearest integer.
pub(crate) fn floor_divide(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return a / b;
    }

    let remainder = a % b;
    let mut quotient = (a - remainder) / b;
    if remainder != 0.0 && (b < 0.0) != (remainder < 0.0) {
        quotient -= 1.0;
    }

    if quotient == 0.0 {
        return 0.0f32.copysign(a / b);
    }
    let mut floor = quotient.floor();
    if quotient - floor > 0.5 {
        floor += 1.0;
    }
    floor
}

/// The numerator of NumPy's float32 logarithm, coefficients of `x^0` to `x^5`.
const LOG_P: [u32; 6] =
    [0x0000_0000, 0x3f80_0000, 0x4007_361c, 0x3fbd_70a9, 0x3ec3_0333, 0x3cd4_2bcd];

/// The denominator of NumPy's float32 logarithm, coefficients of `x^0` to `x^5`.
const LOG_Q: [u32; 6] =
    [0x3f80_0000, 0x4027_361c, 0x401c_fe0d, 0x3f7c_8ae4, 0x3e1e_5bf3, 0x3bc0_83df];

/// The natural logarithm of a float32 array element as `np.log` computes it.
///
/// On x86-64 with AVX2 and FMA, NumPy does not call the C library: it splits `x` into a
/// mantissa in `[sqrt(1/2), sqrt(2))` and a power of two, evaluates a rational function of
/// degree 5 over 5 in float32 with fused multiply-adds, and adds the power times `ln 2`.
/// That result is within 4 ulp of the true logarithm but often not the nearest float, and
/// the KL divergences ORT compares are sums of such logarithms, so this function does the
/// same. Elsewhere NumPy uses the C library's `logf`, as `f32::ln` does.
pub(crate) fn log(x: f32) -> f32 {
    if simd_log() {
        simd_style_log(x)
    } else {
        x.ln()
    }
}

/// Whether NumPy's float32 `log` takes its SIMD path on this machine.
fn simd_log() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn simd_style_log(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x == f32::INFINITY {
        return f32::INFINITY;
    }

    // Mantissa in [0.5, 1) and the matching exponent; subnormals are scaled up first.
    let (scaled, offset) =
        if x < f32::MIN_POSITIVE { (x * 2f32.powi(100), 100.0) } else { (x, 0.0) };
    let bits = scaled.to_bits();
    let mut exponent = ((bits >> 23) as i32 - 126) as f32 - offset;
    let mut mantissa = f32::from_bits((bits & 0x007f_ffff) | (126 << 23));

    if mantissa <= std::f32::consts::FRAC_1_SQRT_2 {
        mantissa = mantissa + mantissa;
        exponent -= 1.0;
    }
    let m = mantissa - 1.0;

    let horner = |coefficients: &[u32; 6]| {
        let c = |i: usize| f32::from_bits(coefficients[i]);
        let mut value = c(5).mul_add(m, c(4));
        for i in (0..4).rev() {
            value = value.mul_add(m, c(i));
        }
        value
    };
    let ratio = horner(&LOG_P) / horner(&LOG_Q);
    exponent.mul_add(std::f32::consts::LN_2, ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_sums_add_left_to_right() {
        assert_eq!(pairwise_sum(&[1.0, 2.0, 3.0]), 6.0);
        assert_eq!(pairwise_sum(&[]), 0.0);
        assert_eq!(pairwise_sum(&[-0.0, -0.0]).to_bits(), 0.0f32.to_bits());
    }

    #[test]
    fn blocks_use_eight_accumulators() {
        // Added one by one to 1e8, each 4.0 is a tie that rounds back to 1e8; summed on the
        // other seven lanes first, they survive. NumPy gives 1e8 + 56 for this array.
        let mut values = vec![1e8f32];
        values.extend(std::iter::repeat_n(4.0f32, 15));
        let sequential = values.iter().fold(0.0f32, |sum, &value| sum + value);
        assert_eq!(sequential, 1e8);
        assert_eq!(pairwise_sum(&values), 1e8 + 56.0);
    }

    #[test]
    fn mean_divides_in_double() {
        assert_eq!(mean(&[1.0, 2.0]), 1.5);
        assert_eq!(mean(&[0.1; 3]), (f64::from(0.1f32 + 0.1 + 0.1) / 3.0) as f32);
    }

    #[test]
    fn floor_division_rounds_down() {
        assert_eq!(floor_divide(7.0, 2.0), 3.0);
        assert_eq!(floor_divide(-7.0, 2.0), -4.0);
        // In float32, as NumPy computes them (in float64, 0.3 // 0.1 is 2).
        assert_eq!(floor_divide(0.3, 0.1), 3.0);
        assert_eq!(floor_divide(1.0, 0.1), 9.0);
    }

    #[test]
    fn arange_is_float64_after_the_second_value() {
        let values = arange(1.0, 2.0, 0.1);
        assert_eq!(values.len(), 10);
        assert_eq!(values[1], f64::from(1.0f32 + 0.1f32));
        let delta = values[1] - values[0];
        assert_eq!(values[9], 1.0 + 9.0 * delta);
        assert!(arange(2.0, 1.0, 0.1).is_empty());
    }

    #[test]
    fn log_matches_numpy() {
        // (x, np.log(x)) as float32 bits, from NumPy 2.4 on x86-64 with AVX-512; in each pair
        // NumPy's result is not the float nearest to the true logarithm.
        let pairs = [
            (0x3f28840c, 0xbed6177a),
            (0x3f756ea4, 0xbd2cac8d),
            (0x40b7ce87, 0x3fdfc358),
            (0x3f8299d8, 0x3ca4cad1),
            (0x3f2a85b7, 0xbed00807),
            (0x3f858165, 0x3d2c7da5),
        ];
        if simd_log() {
            for (x, expected) in pairs {
                assert_eq!(log(f32::from_bits(x)).to_bits(), expected, "log of {x:#x}");
            }
        }

        assert_eq!(log(1.0), 0.0);
        assert_eq!(log(0.0), f32::NEG_INFINITY);
        assert_eq!(log(f32::INFINITY), f32::INFINITY);
        assert!(log(-1.0).is_nan());
        assert!((log(1e-40) - 1e-40f64.ln() as f32).abs() < 1e-4);
    }
}
