//! Datasets and metrics: `.npy`/`.npz` data checked against a model's inputs, top-1 accuracy,
//! fidelity to the source model's output, latency percentiles, and output comparison.
//! Progress reporting is the caller's.

mod dataset;
mod fidelity;
mod metrics;

pub use crate::runtime::{ElemType, Tensor};
pub use dataset::{DataError, Dataset};
pub use fidelity::{fidelity, reference_outputs, Fidelity, Reference, MAX_REFERENCE_BYTES};
pub use metrics::{
    accuracy_top1, accuracy_top1_until, check_labels, compare_outputs, latency, latency_until,
    non_finite_outputs, EvalError, LatencyStats,
};
