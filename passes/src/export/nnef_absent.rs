//! The stand-in for NNEF export in a build without the `nnef` cargo feature (the fuzz
//! targets' build, which leaves tract out to build in minutes): exporting is an error that
//! says how to get it back.

use crate::ir::proto::ModelProto;

/// The file extension of the archive, without the leading dot.
pub const EXTENSION: &str = "nnef.tgz";

/// Why a model could not be exported to NNEF.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NnefError {
    /// This build has no tract, which writes NNEF.
    #[error(
        "this build of pipeline has no NNEF export (the cargo feature `nnef` of \
         pipeline-passes, `tract` of pipeline, is off); hint: build with default features"
    )]
    NotBuilt,
}

/// An NNEF archive made from a model.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The `.nnef.tgz` archive.
    pub bytes: Vec<u8>,
    /// What the archive holds, in one line.
    pub summary: String,
}

/// Always fails: this build has no tract.
pub fn export(_model: &ModelProto) -> Result<Exported, NnefError> {
    Err(NnefError::NotBuilt)
}
