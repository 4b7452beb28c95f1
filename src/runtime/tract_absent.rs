//! The stand-in for [`TractSession`] in a build without the `tract` cargo feature (the fuzz
//! targets' build, which leaves tract out to build in minutes): loading any model is an error
//! that says how to get tract back, and no session can exist.

use std::path::Path;
use std::time::Duration;

use super::session::InferenceSession;
use super::{IoInfo, RuntimeError, Tensor};

/// The version of tract a default build measures models with, for reports and cache keys.
pub const TRACT_VERSION: &str = "0.23.9";

/// A tract session, which this build cannot make: the type has no values.
#[derive(Debug)]
pub enum TractSession {}

impl TractSession {
    /// Always fails: this build has no tract.
    pub fn load(path: &Path) -> Result<TractSession, RuntimeError> {
        Err(RuntimeError::TractNotBuilt { model: path.to_path_buf() })
    }
}

impl InferenceSession for TractSession {
    fn path(&self) -> &Path {
        match *self {}
    }

    fn inputs(&self) -> &[IoInfo] {
        match *self {}
    }

    fn outputs(&self) -> &[IoInfo] {
        match *self {}
    }

    fn run(&mut self, _: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        match *self {}
    }

    fn run_timed(&mut self, _: &[(String, Tensor)]) -> Result<Duration, RuntimeError> {
        match *self {}
    }
}
