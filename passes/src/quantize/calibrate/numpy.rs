//! The few pieces of NumPy arithmetic whose exact rounding ONNX Runtime's calibrators inherit.
//!
//! ORT computes calibration ranges with NumPy in float32, so its results depend on the
//! order in which NumPy adds numbers (pairwise summation) and on how it rounds floor
//! division. The functions here reproduce those orders in Rust; the tests in
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
}
