//! Datasets and metrics: `.npy`/`.npz` data checked against a model's inputs, top-1 accuracy,
//! latency percentiles, and output comparison. Progress reporting is the caller's.

mod dataset;
mod metrics;

pub use crate::runtime::{ElemType, Tensor};
pub use dataset::{DataError, Dataset};
pub use metrics::{
    accuracy_top1, accuracy_top1_until, compare_outputs, latency, latency_until, EvalError,
    LatencyStats,
};
