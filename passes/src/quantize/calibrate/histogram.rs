//! Entropy and Percentile calibration: histograms of each tensor's values, built as ORT's
//! `HistogramCollector` builds them, then cut by [`super::threshold`].
//!
//! ORT histograms all the values of one `collect_data` call (a stride) at once, over a range
//! fixed by their extremes: `[-t, t]` with `t` the largest magnitude for Entropy and for
//! asymmetric Percentile, `[min |x|, max |x|]` of the magnitudes for symmetric Percentile.
//! To get the same counts from a stream, the data is run twice: the first pass records each
//! stride's extremes, the second counts the values into bins laid out from them. When a
//! later stride reaches further out, the histogram is merged as ORT merges it: symmetric
//! histograms grow by whole bins of the old width at both ends and the old counts are
//! added to the middle; histograms of magnitudes grow bins at the top, and values below
//! the first stride's smallest magnitude are not counted, as in ORT.

use ndarray::ArrayViewD;

use super::threshold::{self, Histogram, ThresholdError};
use super::{numpy, stream, stride_length};
use super::{CalibrationError, CalibrationMethod, CalibrationOptions, TensorRange};
use crate::ir::proto::ModelProto;
use crate::pass::ModelRunner;

/// What the first pass learns of one tensor in one stride.
#[derive(Clone, Copy, Debug)]
struct Extremes {
    count: usize,
    min: f32,
    max: f32,
    abs_min: f32,
    abs_max: f32,
}

impl Extremes {
    const NONE: Extremes = Extremes {
        count: 0,
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
        abs_min: f32::INFINITY,
        abs_max: f32::NEG_INFINITY,
    };

    fn add(&mut self, values: &ArrayViewD<'_, f32>) {
        for &value in values {
            let magnitude = value.abs();
            self.min = if value < self.min { value } else { self.min };
            self.max = if value > self.max { value } else { self.max };
            self.abs_min = if magnitude < self.abs_min { magnitude } else { self.abs_min };
            self.abs_max = if magnitude > self.abs_max { magnitude } else { self.abs_max };
        }
        self.count += values.len();
    }

    /// The signed extremes, or zeros when the stride had no values, as ORT takes them.
    fn signed(&self) -> (f32, f32) {
        if self.count == 0 {
            (0.0, 0.0)
        } else {
            (self.min, self.max)
        }
    }
}

/// Bins that values are counted into, laid out as `np.histogram` lays them out.
#[derive(Debug)]
enum Bins {
    /// Equal bins from `first` to `last`: `np.histogram(values, n, range=(first, last))`.
    Uniform { first: f32, last: f32, edges: Vec<f32>, counts: Vec<i64> },
    /// Given edges, compared in float64: `np.histogram(values, bins=edges)`.
    Edges { edges: Vec<f64>, counts: Vec<i64> },
}

impl Bins {
    /// `n` equal bins over `[first, last]`, widened by 0.5 each way when the range is a
    /// single point, as NumPy does.
    fn uniform(mut first: f32, mut last: f32, n: usize) -> Result<Bins, String> {
        if first == last {
            first -= 0.5;
            last += 0.5;
        }

        let edges = numpy::linspace(first, last, n);
        if edges.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(format!(
                "{n} bins do not fit in the range [{first}, {last}]; NumPy refuses it too"
            ));
        }
        Ok(Bins::Uniform { first, last, edges, counts: vec![0; n] })
    }

    fn add(&mut self, value: f32) {
        match self {
            Bins::Uniform { first, last, edges, counts } => {
                if value < *first || value > *last {
                    return;
                }

                // NumPy's index: scaled position, then a one-bin correction either way so
                // that the edges decide; the last bin holds its right edge.
                let n = counts.len();
                let position = ((value - *first) / (*last - *first)) * n as f32;
                let mut index = (position as usize).min(n - 1);
                if value < edges[index] {
                    index = index.saturating_sub(1);
                }
                if index != n - 1 && value >= edges[index + 1] {
                    index += 1;
                }
                counts[index] += 1;
            }
            Bins::Edges { edges, counts } => {
                let value = f64::from(value);
                let (Some(&low), Some(&high)) = (edges.first(), edges.last()) else {
                    return;
                };
                if value < low || value > high {
                    return;
                }
                let above = edges.partition_point(|&edge| edge <= value);
                let last = counts.len() - 1;
                counts[(above - 1).min(last)] += 1;
            }
        }
    }

    fn into_parts(self) -> (Vec<i64>, Vec<f32>) {
        match self {
            Bins::Uniform { edges, counts, .. } => (counts, edges),
            Bins::Edges { edges, counts } => (counts, edges.iter().map(|&e| e as f32).collect()),
        }
    }
}

/// How the bins of a stride join what earlier strides counted.
#[derive(Debug)]
enum Join {
    /// The first stride: its bins are the histogram.
    First,
    /// The old histogram covered the stride: counts are added bin by bin, edges kept.
    Same,
    /// The old histogram was a single point at zero: counts are added bin by bin, and the
    /// stride's edges replace the old ones.
    Replace { threshold: f32 },
    /// The histogram grew by `offset` bins at each end: old counts go to the middle.
    Widen { offset: usize, threshold: f32 },
    /// The histogram of magnitudes may have grown at the top: old counts go to the start.
    Extend,
    /// The stride had no values for this tensor, so nothing changes.
    Skip,
}

/// One tensor's histogram as the strides go by.
struct Collector {
    /// Magnitudes (symmetric Percentile) or signed values.
    absolute: bool,
    num_bins: usize,
    histogram: Option<Histogram>,
    /// The half-width of a symmetric histogram.
    threshold: f32,
    stride: Option<(Bins, Join, Extremes)>,
}

impl Collector {
    fn new(absolute: bool, num_bins: usize) -> Self {
        Collector { absolute, num_bins, histogram: None, threshold: 0.0, stride: None }
    }

    /// Lays out the bins of a stride whose extremes are `extremes`.
    fn begin(&mut self, extremes: Extremes) -> Result<(), String> {
        let (bins, join) = match (&self.histogram, self.absolute) {
            (None, true) => {
                let (first, last) = if extremes.count == 0 {
                    (0.0, 1.0)
                } else {
                    (extremes.abs_min, extremes.abs_max)
                };
                (Bins::uniform(first, last, self.num_bins)?, Join::First)
            }
            (None, false) => {
                let threshold = magnitude(extremes.signed());
                self.threshold = threshold;
                (Bins::uniform(-threshold, threshold, self.num_bins)?, Join::First)
            }
            (Some(old), true) => {
                if extremes.count == 0 {
                    (Bins::Edges { edges: Vec::new(), counts: Vec::new() }, Join::Skip)
                } else {
                    let edges = extend_edges(&old.edges, extremes.abs_max);
                    let counts = vec![0; edges.len() - 1];
                    (Bins::Edges { edges, counts }, Join::Extend)
                }
            }
            (Some(old), false) => {
                let threshold = magnitude(extremes.signed());
                let (old_threshold, old_bins) = (self.threshold, old.counts.len());
                if threshold <= old_threshold {
                    (Bins::uniform(-old_threshold, old_threshold, old_bins)?, Join::Same)
                } else if old_threshold == 0.0 {
                    let bins = Bins::uniform(-threshold, threshold, old_bins)?;
                    (bins, Join::Replace { threshold })
                } else {
                    let width = 2.0 * old_threshold / old_bins as f32;
                    let offset = numpy::floor_divide(threshold - old_threshold, width) + 1.0;
                    let offset = offset as usize;
                    let threshold = offset as f32 * width + old_threshold;
                    let bins = Bins::uniform(-threshold, threshold, old_bins + 2 * offset)?;
                    (bins, Join::Widen { offset, threshold })
                }
            }
        };
        self.stride = Some((bins, join, extremes));
        Ok(())
    }

    fn add(&mut self, values: &ArrayViewD<'_, f32>) {
        let Some((bins, _, _)) = &mut self.stride else {
            return;
        };
        if self.absolute {
            values.iter().for_each(|&value| bins.add(value.abs()));
        } else {
            values.iter().for_each(|&value| bins.add(value));
        }
    }

    /// Merges the stride's counts into the histogram.
    fn end(&mut self) {
        let Some((bins, join, extremes)) = self.stride.take() else {
            return;
        };
        let (mut counts, edges) = bins.into_parts();
        let (min, max) = extremes.signed();

        let Some(old) = self.histogram.take() else {
            self.histogram = Some(Histogram { counts, edges, min, max });
            return;
        };

        let edges = match join {
            Join::First | Join::Skip => {
                self.histogram = Some(old);
                return;
            }
            Join::Same => {
                add_counts(&mut counts, 0, &old.counts);
                old.edges
            }
            Join::Replace { threshold } => {
                self.threshold = threshold;
                add_counts(&mut counts, 0, &old.counts);
                edges
            }
            Join::Widen { offset, threshold } => {
                self.threshold = threshold;
                add_counts(&mut counts, offset, &old.counts);
                edges
            }
            Join::Extend => {
                add_counts(&mut counts, 0, &old.counts);
                edges
            }
        };
        let min = if min < old.min { min } else { old.min };
        let max = if max > old.max { max } else { old.max };
        self.histogram = Some(Histogram { counts, edges, min, max });
    }
}

/// The larger of the two magnitudes, as Python's `max(abs(low), abs(high))`.
fn magnitude((low, high): (f32, f32)) -> f32 {
    let (low, high) = (low.abs(), high.abs());
    if high > low {
        high
    } else {
        low
    }
}

/// The edges of a histogram of magnitudes, in float64, with bins of the first bin's width
/// added at the top until `abs_max` is covered, as ORT adds them with `np.arange`.
fn extend_edges(edges: &[f32], abs_max: f32) -> Vec<f64> {
    let mut extended: Vec<f64> = edges.iter().map(|&e| f64::from(e)).collect();
    let last = edges[edges.len() - 1];
    if abs_max > last {
        let width = edges[1] - edges[0];
        extended.extend(numpy::arange(last + width, abs_max + width, width));
    }
    extended
}

fn add_counts(counts: &mut [i64], offset: usize, old: &[i64]) {
    for (count, &old) in counts[offset..].iter_mut().zip(old) {
        *count += old;
    }
}

/// The Entropy or Percentile range of each tensor of `names`, in that order.
pub(super) fn calibrate(
    model: &ModelProto,
    names: &[String],
    options: &CalibrationOptions,
    runner: &dyn ModelRunner,
) -> Result<Vec<TensorRange>, CalibrationError> {
    let stride = options.stride.unwrap_or(usize::MAX);
    let absolute = options.method == CalibrationMethod::Percentile && options.symmetric;

    let mut extremes: Vec<Vec<Extremes>> = vec![Vec::new(); names.len()];
    let batches = stream(model, names, runner, &mut |batch, index, values| {
        let strides = &mut extremes[index];
        if strides.len() <= batch / stride {
            strides.resize(batch / stride + 1, Extremes::NONE);
        }
        strides[batch / stride].add(&values);
        Ok(())
    })?;
    stride_length(batches, options.stride)?;

    let mut collectors: Vec<Collector> =
        names.iter().map(|_| Collector::new(absolute, options.num_bins)).collect();
    let mut current: Vec<Option<usize>> = vec![None; names.len()];
    let second = stream(model, names, runner, &mut |batch, index, values| {
        let collector = &mut collectors[index];
        let stride_index = batch / stride;
        if current[index] != Some(stride_index) {
            collector.end();
            let stride_extremes =
                extremes[index].get(stride_index).copied().unwrap_or(Extremes::NONE);
            collector.begin(stride_extremes).map_err(|reason| CalibrationError::Histogram {
                tensor: names[index].clone(),
                reason,
            })?;
            current[index] = Some(stride_index);
        }
        collector.add(&values);
        Ok(())
    })?;
    if second != batches {
        let reason =
            format!("the first run over the data gave {batches} batches, the second {second}");
        return Err(CalibrationError::Runner(reason));
    }

    let mut ranges = Vec::with_capacity(names.len());
    for (index, mut collector) in collectors.into_iter().enumerate() {
        collector.end();
        let tensor = &names[index];
        let seen = extremes[index].iter().any(|e| e.count > 0);
        let histogram = match collector.histogram {
            Some(histogram) if seen => histogram,
            _ => return Err(CalibrationError::Empty { tensor: tensor.clone() }),
        };
        ranges.push(range(&histogram, options).map_err(|error| threshold_error(tensor, error))?);
    }
    Ok(ranges)
}

/// The range the method picks from a tensor's histogram.
fn range(
    histogram: &Histogram,
    options: &CalibrationOptions,
) -> Result<TensorRange, ThresholdError> {
    let (min, max) = match options.method {
        CalibrationMethod::Entropy => threshold::entropy(histogram, options.num_quantized_bins)?,
        _ => threshold::percentile(histogram, options.percentile, options.symmetric)?,
    };
    Ok(TensorRange { min, max })
}

fn threshold_error(tensor: &str, error: ThresholdError) -> CalibrationError {
    let reason = match error {
        ThresholdError::Empty => "no value fell inside its histogram".to_string(),
        ThresholdError::Smoothing { zeros, nonzeros } => format!(
            "{zeros} empty bins against {nonzeros} non-empty ones are too many to smooth; \
             hint: use fewer bins"
        ),
    };
    CalibrationError::Histogram { tensor: tensor.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    fn extremes(values: &[f32]) -> Extremes {
        let mut e = Extremes::NONE;
        e.add(&arr1(values).into_dyn().view());
        e
    }

    fn collect(collector: &mut Collector, strides: &[&[f32]]) {
        for values in strides {
            collector.begin(extremes(values)).unwrap();
            collector.add(&arr1(values).into_dyn().view());
            collector.end();
        }
    }

    #[test]
    fn uniform_bins_match_numpy() {
        // np.histogram([-1, -0.5, 0, 0.2, 1, 1.5], 4, range=(-1, 1)) -> [1, 1, 2, 1]: a bin
        // holds its left edge, the last one its right edge too, and 1.5 is out of range.
        let mut bins = Bins::uniform(-1.0, 1.0, 4).unwrap();
        for value in [-1.0, -0.5, 0.0, 0.2, 1.0, 1.5] {
            bins.add(value);
        }
        let (counts, edges) = bins.into_parts();
        assert_eq!(counts, [1, 1, 2, 1]);
        assert_eq!(edges, [-1.0, -0.5, 0.0, 0.5, 1.0]);
    }

    #[test]
    fn a_single_point_gets_a_unit_range() {
        let (_, edges) = Bins::uniform(0.0, 0.0, 2).unwrap().into_parts();
        assert_eq!(edges, [-0.5, 0.0, 0.5]);
    }

    #[test]
    fn histogram_widens_by_whole_bins_when_the_range_grows() {
        let mut collector = Collector::new(false, 4);
        collect(&mut collector, &[&[-2.0, 1.0, 1.5]]);
        let first = collector.histogram.clone().unwrap();
        assert_eq!(first.edges, [-2.0, -1.0, 0.0, 1.0, 2.0]);
        assert_eq!(first.counts, [1, 0, 0, 2]);

        // A value at 3.2 needs two more bins of width 1 on each side: [-4, 4] in 8 bins.
        collect(&mut collector, &[&[3.2, 0.5]]);
        let merged = collector.histogram.unwrap();
        assert_eq!(merged.edges, [-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(merged.counts, [0, 0, 1, 0, 1, 2, 0, 1]);
        assert_eq!((merged.min, merged.max), (-2.0, 3.2));
        assert_eq!(collector.threshold, 4.0);
    }

    #[test]
    fn histogram_keeps_its_bins_when_the_range_does_not_grow() {
        let mut collector = Collector::new(false, 4);
        collect(&mut collector, &[&[-2.0, 2.0], &[0.5]]);
        let merged = collector.histogram.unwrap();
        assert_eq!(merged.counts, [1, 0, 1, 1]);
        assert_eq!(merged.edges, [-2.0, -1.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn magnitudes_grow_at_the_top_and_drop_what_falls_below() {
        let mut collector = Collector::new(true, 2);
        collect(&mut collector, &[&[-1.0, 3.0]]);
        assert_eq!(collector.histogram.as_ref().unwrap().edges, [1.0, 2.0, 3.0]);

        // 4.5 needs two more bins of width 1; 0.5 lies below the first edge and is lost.
        collect(&mut collector, &[&[4.5, -0.5]]);
        let merged = collector.histogram.unwrap();
        assert_eq!(merged.edges, [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(merged.counts, [1, 1, 0, 1]);
        assert_eq!((merged.min, merged.max), (-1.0, 4.5));
    }
}
