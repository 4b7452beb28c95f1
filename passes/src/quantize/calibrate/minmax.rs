//! MinMax calibration, as ORT's `MinMaxCalibrater` computes it.
//!
//! Per batch ORT reduces each tensor to its minimum and maximum (`ReduceMin`/`ReduceMax`
//! nodes added to the model). Over the batches of one stride it takes the smallest minimum
//! and the largest maximum, or with a moving average their means (`np.nanmean`, float32
//! pairwise sums); a symmetric range then becomes `[-m, m]` with `m` the larger magnitude.
//! Strides are merged by taking the extremes again, or with a moving average by
//! `old + c * (new - old)` in float32. Reading the whole tensor and reducing it here gives
//! the same extremes as ORT's reduce nodes: a minimum does not depend on the order.

use ndarray::ArrayViewD;

use super::numpy;
use super::{stream, stride_length, CalibrationError, CalibrationOptions, TensorRange};
use crate::ir::proto::ModelProto;
use crate::pass::ModelRunner;

/// What is known of one tensor so far.
#[derive(Default)]
struct Collector {
    /// The stride whose batches are being reduced.
    stride: usize,

    /// Extremes over the batches of the current stride.
    low: f32,
    high: f32,

    /// Per-batch extremes of the current stride, for the moving average.
    batch_lows: Vec<f32>,
    batch_highs: Vec<f32>,

    /// The range of the strides already finished, merged.
    merged: Option<TensorRange>,
}

impl Collector {
    fn add(&mut self, stride: usize, values: ArrayViewD<'_, f32>, options: &CalibrationOptions) {
        if stride != self.stride {
            self.finish_stride(options);
            self.stride = stride;
        }

        // An empty tensor has no extremes; ORT's reduce nodes would give it infinities.
        let Some(&first) = values.iter().next() else {
            return;
        };
        let (low, high) = values.iter().fold((first, first), |(low, high), &value| {
            (if value < low { value } else { low }, if value > high { value } else { high })
        });

        if self.batch_lows.is_empty() {
            (self.low, self.high) = (low, high);
        } else {
            self.low = self.low.min(low);
            self.high = self.high.max(high);
        }
        self.batch_lows.push(low);
        self.batch_highs.push(high);
    }

    /// Reduces the current stride to a range and merges it into the running one.
    fn finish_stride(&mut self, options: &CalibrationOptions) {
        if self.batch_lows.is_empty() {
            return;
        }

        let (mut low, mut high) = if options.moving_average {
            (numpy::mean(&self.batch_lows), numpy::mean(&self.batch_highs))
        } else {
            (self.low, self.high)
        };
        if options.symmetric {
            let magnitude = low.abs().max(high.abs());
            (low, high) = (-magnitude, magnitude);
        }
        self.batch_lows.clear();
        self.batch_highs.clear();

        let stride_range = TensorRange { min: low, max: high };
        self.merged = Some(match self.merged {
            None => stride_range,
            Some(old) if options.moving_average => {
                let constant = options.averaging_constant as f32;
                TensorRange {
                    min: old.min + constant * (stride_range.min - old.min),
                    max: old.max + constant * (stride_range.max - old.max),
                }
            }
            Some(old) => TensorRange {
                min: old.min.min(stride_range.min),
                max: old.max.max(stride_range.max),
            },
        });
    }
}

/// The MinMax range of each tensor of `names`, in that order.
pub(super) fn calibrate(
    model: &ModelProto,
    names: &[String],
    options: &CalibrationOptions,
    runner: &dyn ModelRunner,
) -> Result<Vec<TensorRange>, CalibrationError> {
    let stride = options.stride.unwrap_or(usize::MAX);
    let mut collectors: Vec<Collector> = names.iter().map(|_| Collector::default()).collect();

    let batches = stream(model, names, runner, &mut |batch, index, values| {
        collectors[index].add(batch / stride, values, options);
        Ok(())
    })?;
    stride_length(batches, options.stride)?;

    names
        .iter()
        .zip(&mut collectors)
        .map(|(name, collector)| {
            collector.finish_stride(options);
            collector.merged.ok_or_else(|| CalibrationError::Empty { tensor: name.clone() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::calibrate::CalibrationMethod;
    use ndarray::arr1;

    fn collect(batches: &[&[f32]], options: &CalibrationOptions) -> Option<TensorRange> {
        let stride = options.stride.unwrap_or(usize::MAX);
        let mut collector = Collector::default();
        for (batch, values) in batches.iter().enumerate() {
            collector.add(batch / stride, arr1(values).into_dyn().view(), options);
        }
        collector.finish_stride(options);
        collector.merged
    }

    #[test]
    fn extremes_over_batches() {
        let options = CalibrationOptions::new(CalibrationMethod::MinMax);
        let range = collect(&[&[1.0, 2.0], &[-3.0, 0.5], &[]], &options).unwrap();
        assert_eq!(range, TensorRange { min: -3.0, max: 2.0 });
    }

    #[test]
    fn symmetric_takes_the_larger_magnitude() {
        let mut options = CalibrationOptions::new(CalibrationMethod::MinMax);
        options.symmetric = true;
        let range = collect(&[&[1.0, 2.0], &[-0.5]], &options).unwrap();
        assert_eq!(range, TensorRange { min: -2.0, max: 2.0 });
    }

    #[test]
    fn moving_average_means_the_batch_extremes() {
        let mut options = CalibrationOptions::new(CalibrationMethod::MinMax);
        options.moving_average = true;
        let range = collect(&[&[1.0, 2.0], &[-3.0, 4.0]], &options).unwrap();
        assert_eq!(range, TensorRange { min: -1.0, max: 3.0 });
    }

    #[test]
    fn strides_merge_with_the_averaging_constant() {
        let mut options = CalibrationOptions::new(CalibrationMethod::MinMax);
        options.moving_average = true;
        options.averaging_constant = 0.25;
        options.stride = Some(1);
        let range = collect(&[&[0.0, 4.0], &[-4.0, 8.0]], &options).unwrap();
        assert_eq!(range, TensorRange { min: -1.0, max: 5.0 });

        options.moving_average = false;
        let range = collect(&[&[0.0, 4.0], &[-4.0, 8.0]], &options).unwrap();
        assert_eq!(range, TensorRange { min: -4.0, max: 8.0 });
    }

    #[test]
    fn no_values_no_range() {
        let options = CalibrationOptions::new(CalibrationMethod::MinMax);
        assert_eq!(collect(&[&[], &[]], &options), None);
    }
}
