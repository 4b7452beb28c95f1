//! Ranges from a histogram: the percentile cut and the entropy (KL divergence) search of
//! ORT's `HistogramCollector`, with its rounding.
//!
//! Both work on a histogram of bin counts and its float32 edges, and clip the range they
//! choose to the extremes seen. The percentile cut walks the cumulative distribution in
//! float64. The entropy search tries every symmetric window of the histogram around its
//! middle bin that is at least `num_quantized_bins` wide, compares the window's
//! distribution (outliers folded into its end bins) with the same distribution merged into
//! `num_quantized_bins` bins and spread back, and keeps the window with the least KL
//! divergence, computed in float32 as ORT does.

use super::numpy;

/// The weight NumPy's `smooth_distribution` gives empty bins.
const SMOOTHING: f64 = 0.0001;

/// A histogram with the extremes of the values counted into it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Histogram {
    pub counts: Vec<i64>,
    /// `counts.len() + 1` edges.
    pub edges: Vec<f32>,
    pub min: f32,
    pub max: f32,
}

/// Why no range could be chosen from a histogram.
#[derive(Debug, PartialEq)]
pub(super) enum ThresholdError {
    /// No value fell inside the histogram's bins.
    Empty,
    /// So many bins were empty that ORT's smoothing would give them more weight than a
    /// count of one.
    Smoothing { zeros: usize, nonzeros: usize },
}

/// The range that keeps `percentile` percent of the values: of their magnitudes when
/// `symmetric` (the histogram then counts absolute values), else cutting half of the rest
/// from each end.
pub(super) fn percentile(
    histogram: &Histogram,
    percentile: f64,
    symmetric: bool,
) -> Result<(f32, f32), ThresholdError> {
    let total: i64 = histogram.counts.iter().sum();
    if total == 0 {
        return Err(ThresholdError::Empty);
    }

    let mut running = 0.0f64;
    let cdf: Vec<f64> = histogram
        .counts
        .iter()
        .map(|&count| {
            running += count as f64 / total as f64;
            running
        })
        .collect();
    let edge_at = |target: f64| histogram.edges[cdf.partition_point(|&value| value < target)];

    let (low, high) = if symmetric {
        let edge = edge_at(percentile / 100.0);
        (-edge, edge)
    } else {
        let cut = (100.0 - percentile) / 200.0;
        (edge_at(cut), edge_at(1.0 - cut))
    };
    Ok(clip(low, high, histogram))
}

/// The range whose quantization into `quantized_bins` bins loses the least information, by
/// KL divergence.
pub(super) fn entropy(
    histogram: &Histogram,
    quantized_bins: usize,
) -> Result<(f32, f32), ThresholdError> {
    let counts = &histogram.counts;
    let bins = counts.len();
    let middle = bins / 2;
    let half_quantized = quantized_bins / 2;

    let mut best: Option<(f32, (f32, f32))> = None;
    for half_width in half_quantized..=middle {
        let start = middle - half_width;
        let end = (middle + half_width + 1).min(bins);
        let window = (histogram.edges[start], histogram.edges[end]);

        let divergence = window_divergence(counts, start, end, quantized_bins)?;
        let better = match best {
            None => true,
            Some((least, _)) => !least.is_nan() && (divergence < least || divergence.is_nan()),
        };
        if better {
            best = Some((divergence, window));
        }
    }

    let (_, (low, high)) = best.ok_or(ThresholdError::Empty)?;
    Ok(clip(low, high, histogram))
}

/// The KL divergence between the window `start..end` of `counts` (values outside folded into
/// its first and last bins) and its quantization into `quantized_bins` bins.
fn window_divergence(
    counts: &[i64],
    start: usize,
    end: usize,
    quantized_bins: usize,
) -> Result<f32, ThresholdError> {
    let window = &counts[start..end];
    let mut reference = window.to_vec();
    reference[0] += counts[..start].iter().sum::<i64>();
    *reference.last_mut().expect("a window holds at least one bin") +=
        counts[end..].iter().sum::<i64>();

    // The window is merged into `quantized_bins` groups of `merged` bins each, the remainder
    // going to the last group. Each group's count is then divided, in integers, by the
    // number of its bins the reference has non-empty, and that share is given to every
    // bin of the group, empty or not; the remainder's bins stay empty. That is ORT's way
    // (TensorRT's leaves the empty bins empty), and this search must choose as ORT does.
    let merged = window.len() / quantized_bins;
    let mut quantized: Vec<i64> =
        window.chunks_exact(merged).take(quantized_bins).map(|c| c.iter().sum()).collect();
    if let Some(last) = quantized.last_mut() {
        *last += window[quantized_bins * merged..].iter().sum::<i64>();
    }

    let mut candidate = vec![0i64; reference.len()];
    for (group, &count) in quantized.iter().enumerate() {
        let bins = group * merged..(group + 1) * merged;
        let nonzero = reference[bins.clone()].iter().filter(|&&c| c != 0).count();
        if nonzero != 0 {
            let spread = (count as f64 / nonzero as f64) as i64;
            candidate[bins].fill(spread);
        }
    }

    match (smooth(&reference)?, smooth(&candidate)?) {
        (Some(p), Some(q)) => Ok(kl_divergence(&p, &q)),
        _ => Ok(f32::INFINITY),
    }
}

/// ORT's `smooth_distribution`: empty bins get 0.0001 and the others give up the same total,
/// in float32. `None` when every bin is empty.
fn smooth(counts: &[i64]) -> Result<Option<Vec<f32>>, ThresholdError> {
    let zeros = counts.iter().filter(|&&c| c == 0).count();
    let nonzeros_f32 = counts.len() as f32 - zeros as f32;
    if nonzeros_f32 == 0.0 {
        return Ok(None);
    }

    let taken = SMOOTHING * zeros as f64 / f64::from(nonzeros_f32);
    if taken >= 1.0 {
        return Err(ThresholdError::Smoothing { zeros, nonzeros: counts.len() - zeros });
    }

    let given = SMOOTHING as f32;
    let taken = -(taken as f32);
    let smoothed = counts
        .iter()
        .map(|&c| if c == 0 { c as f32 + (given + taken * 0.0) } else { c as f32 + (taken + 0.0) })
        .collect();
    Ok(Some(smoothed))
}

/// `sum(p * log(p / q))` over the distributions `p` and `q` normalized to sum to one, in
/// float32 with NumPy's summation order and logarithm, as ORT's `entropy` helper computes it.
fn kl_divergence(p: &[f32], q: &[f32]) -> f32 {
    let p_total = numpy::pairwise_sum(p);
    let q_total = numpy::pairwise_sum(q);

    let terms: Vec<f32> = p
        .iter()
        .zip(q)
        .map(|(&p, &q)| {
            let (p, q) = (p / p_total, q / q_total);
            if p > 0.0 && q > 0.0 {
                p * numpy::log(p / q)
            } else {
                f32::INFINITY
            }
        })
        .collect();
    numpy::pairwise_sum(&terms)
}

/// Clips a range to the extremes seen, as ORT does after both searches.
fn clip(low: f32, high: f32, histogram: &Histogram) -> (f32, f32) {
    let low = if low < histogram.min { histogram.min } else { low };
    let high = if high > histogram.max { histogram.max } else { high };
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(counts: &[i64], first: f32, last: f32) -> Histogram {
        let edges = numpy::linspace(first, last, counts.len());
        Histogram { counts: counts.to_vec(), edges, min: first, max: last }
    }

    #[test]
    fn percentile_cuts_each_end() {
        // 1000 values, one per bin of width 1 over [0, 1000). The cut is the left edge of the
        // first bin where the cumulative share reaches the target, as `np.searchsorted` finds
        // it: 5% is reached in bin 49 ([49, 50)), 95% in bin 949.
        let counts = vec![1; 1000];
        let h = histogram(&counts, 0.0, 1000.0);
        assert_eq!(percentile(&h, 90.0, false).unwrap(), (49.0, 949.0));

        // Symmetric, on magnitudes: 90% is reached in bin 899; -899 is clipped to the
        // smallest value seen, 0.
        assert_eq!(percentile(&h, 90.0, true).unwrap(), (0.0, 899.0));
    }

    #[test]
    fn percentile_is_clipped_to_the_extremes() {
        // Bins [-4, -2, 0, 2, 4]; the cumulative shares are [0, 0.5, 1, 1], so 100% is
        // reached in bin 2 and the cut is [-4, 0]; -4 is below the smallest value.
        let mut h = histogram(&[0, 5, 5, 0], -4.0, 4.0);
        h.min = -3.5;
        h.max = 1.5;
        assert_eq!(percentile(&h, 100.0, false).unwrap(), (-3.5, 0.0));

        // Magnitudes in bins [0, 1, 2, 3, 4]: 100% is reached in bin 3, so [-3, 3], and 3 is
        // above the largest value.
        let mut h = histogram(&[5, 0, 0, 5], 0.0, 4.0);
        h.min = -3.9;
        h.max = 0.5;
        assert_eq!(percentile(&h, 100.0, true).unwrap(), (-3.0, 0.5));
    }

    #[test]
    fn percentile_of_nothing_is_an_error() {
        let h = histogram(&[0, 0], -1.0, 1.0);
        assert_eq!(percentile(&h, 99.0, true), Err(ThresholdError::Empty));
    }

    #[test]
    fn entropy_with_as_many_bins_as_quantized_bins_is_the_whole_range() {
        let h = histogram(&[3, 0, 9, 1], -2.0, 2.0);
        assert_eq!(entropy(&h, 4).unwrap(), (-2.0, 2.0));
    }

    #[test]
    fn entropy_cuts_a_far_outlier() {
        // A dense bell in the middle 16 bins of 64 and one outlier at the far right: the
        // narrowest window, 8 bins each side of the middle, folds the outlier into its
        // last bin, which costs less than spreading the bell over 8 quantized bins of a
        // wide window.
        let mut counts = vec![0i64; 64];
        for (i, count) in counts[24..40].iter_mut().enumerate() {
            *count = 1000 - 100 * (i as i64 - 8).abs();
        }
        counts[63] = 1;
        let mut h = histogram(&counts, -32.0, 32.0);
        h.min = -8.0;
        let (low, high) = entropy(&h, 8).unwrap();
        assert_eq!(low, -8.0, "clipped to the smallest value");
        assert!(high < 32.0, "{high}");
    }

    #[test]
    fn kl_divergence_by_hand() {
        // p = [0.5, 0.5], q = [0.25, 0.75]: 0.5 ln 2 + 0.5 ln(2/3).
        let expected = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        let divergence = kl_divergence(&[1.0, 1.0], &[1.0, 3.0]);
        assert!((f64::from(divergence) - expected).abs() < 1e-6, "{divergence} {expected}");
        assert_eq!(kl_divergence(&[2.0, 2.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn smoothing_moves_weight_to_empty_bins() {
        let smoothed = smooth(&[0, 4, 0, 0]).unwrap().unwrap();
        let taken = (0.0001f64 * 3.0 / 1.0) as f32;
        assert_eq!(smoothed, [0.0001, 4.0 - taken, 0.0001, 0.0001]);
        assert_eq!(smooth(&[0, 0]).unwrap(), None);
    }
}
