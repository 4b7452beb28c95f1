//! The `pipeline` engine: recipe -> plan -> candidates -> measurements -> report.
//!
//! The binary in `main.rs` is a thin command line over this library.

pub mod accuracy_aware;
pub mod build;
pub mod cache;
pub mod calibrate;
pub mod evaluate;
pub mod goals;
pub mod inspect;
pub mod plan;
pub mod recipe;
pub mod report;
pub mod run;
pub mod runtime;
pub mod search;
pub mod session_tune;
pub mod target;
pub mod tune;
