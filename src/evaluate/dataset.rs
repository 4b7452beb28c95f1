//! Datasets read from `.npz` archives (one array per model input, plus labels) or a single
//! `.npy` array, and their check against a model's inputs.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ndarray_npy::npy::header::Header;
use ndarray_npy::{ReadNpyExt, ReadableElement};

use crate::runtime::{ElemType, IoInfo, Tensor};

/// What can be wrong with a data file, alone or against a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or is not a valid archive.
    #[error("could not read data file {path}: {message}")]
    Unreadable {
        /// The data file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// One array inside the file could not be decoded.
    #[error("could not read array '{array}' in {path}: {message}")]
    ArrayUnreadable {
        /// The data file.
        path: PathBuf,
        /// The array's name.
        array: String,
        /// What went wrong.
        message: String,
    },

    /// The file's extension is neither `.npz` nor `.npy`.
    #[error(
        "data file {path} is neither .npz nor .npy\n\
         hint: save arrays with numpy.savez(path, input_name=array, labels=labels)"
    )]
    UnknownFormat {
        /// The data file.
        path: PathBuf,
    },

    /// The file holds no array, or is empty.
    #[error(
        "data file {path} holds no arrays\n\
         hint: save arrays with numpy.savez(path, input_name=array, labels=labels)"
    )]
    Empty {
        /// The data file.
        path: PathBuf,
    },

    /// The arrays hold no sample, or zero samples were asked for.
    #[error("data file {path} gives no samples: {why}\nhint: every array needs at least one row")]
    NoSamples {
        /// The data file.
        path: PathBuf,
        /// Why there are none.
        why: String,
    },

    /// An array has an element type no model input takes here.
    #[error(
        "array '{array}' in {path} has dtype {dtype}, which pipeline cannot read\n\
         hint: use float32, float64, int8..int64, uint8..uint64 or bool \
         (for example array.astype(numpy.float32))"
    )]
    UnsupportedDtype {
        /// The data file.
        path: PathBuf,
        /// The array's name.
        array: String,
        /// NumPy's description of the type.
        dtype: String,
    },

    /// An array has no dimension to count samples along.
    #[error(
        "array '{array}' in {path} is a scalar\n\
         hint: every array needs a first dimension that counts samples"
    )]
    Scalar {
        /// The data file.
        path: PathBuf,
        /// The array's name.
        array: String,
    },

    /// Arrays disagree on how many samples the file holds.
    #[error(
        "arrays in {path} have different numbers of samples (first dimension): {}\n\
         hint: every array must hold one row per sample",
        counts.iter().map(|(name, n)| format!("'{name}' has {n}")).collect::<Vec<_>>().join(", ")
    )]
    SampleCounts {
        /// The data file.
        path: PathBuf,
        /// Each array's name and first dimension.
        counts: Vec<(String, usize)>,
    },

    /// The labels array named by the caller is not in the file.
    #[error(
        "labels array '{labels}' not found in {path}; arrays present: {}\n\
         hint: set `labels` to the name of the array that holds them",
        present.join(", ")
    )]
    MissingLabels {
        /// The data file.
        path: PathBuf,
        /// The labels name asked for.
        labels: String,
        /// The arrays the file holds.
        present: Vec<String>,
    },

    /// Labels were asked of a `.npy` file, which holds one array only.
    #[error(
        "labels '{labels}' cannot come from {path}: a .npy file holds a single array\n\
         hint: save inputs and labels together with numpy.savez(path, input_name=x, {labels}=y)"
    )]
    LabelsInNpy {
        /// The data file.
        path: PathBuf,
        /// The labels name asked for.
        labels: String,
    },

    /// A model input has no array of its name.
    #[error(
        "data file {path} has no array for model input '{input}'; arrays present: {}{}\n\
         hint: name each array after the model input it feeds",
        present.join(", "),
        suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default()
    )]
    MissingInput {
        /// The data file.
        path: PathBuf,
        /// The model input.
        input: String,
        /// The input arrays the file holds.
        present: Vec<String>,
        /// The array whose name is closest, if one is close.
        suggestion: Option<String>,
    },

    /// A `.npy` file was given for a model with more than one input.
    #[error(
        "data file {path} holds a single array but the model takes {} inputs: {}\n\
         hint: save one array per input in a .npz, each named after its input",
        inputs.len(),
        inputs.join(", ")
    )]
    SingleArray {
        /// The data file.
        path: PathBuf,
        /// The model's inputs.
        inputs: Vec<String>,
    },

    /// An array's element type differs from its model input's.
    #[error(
        "array '{array}' in {path} is {found} but model input '{input}' expects {expected}\n\
         hint: convert it, for example array.astype(numpy.{expected})"
    )]
    DtypeMismatch {
        /// The data file.
        path: PathBuf,
        /// The array's name.
        array: String,
        /// The model input.
        input: String,
        /// The type the model expects.
        expected: ElemType,
        /// The array's type.
        found: ElemType,
    },

    /// An array's rank or fixed dimensions differ from its model input's.
    #[error(
        "array '{array}' in {path} has shape {} but model input '{input}' expects {}\n\
         hint: the first dimension counts samples; the others must match the model",
        Dims(found),
        ModelDims(expected)
    )]
    ShapeMismatch {
        /// The data file.
        path: PathBuf,
        /// The array's name.
        array: String,
        /// The model input.
        input: String,
        /// The model's dimensions (`None` where free).
        expected: Vec<Option<i64>>,
        /// The array's dimensions.
        found: Vec<usize>,
    },

    /// The file holds arrays that feed no model input and are not the labels.
    #[error(
        "data file {path} holds arrays the model does not take: {}; model inputs: {}\n\
         hint: remove them, or name the labels array in `labels`",
        extra.join(", "),
        inputs.join(", ")
    )]
    ExtraArrays {
        /// The data file.
        path: PathBuf,
        /// The arrays that feed nothing.
        extra: Vec<String>,
        /// The model's inputs.
        inputs: Vec<String>,
    },

    /// A float input array holds nothing but NaN and infinite values.
    #[error(
        "array '{array}' in {path} holds only NaN or infinite values ({count} of {total})\n\
         hint: a model's outputs on them are not numbers to judge it by; repair the data"
    )]
    NonFinite {
        /// The data file.
        path: PathBuf,
        /// The array.
        array: String,
        /// How many of its values are NaN or infinite.
        count: usize,
        /// How many values it holds.
        total: usize,
    },
}

/// How many of a float tensor's values are NaN or infinite, of how many, and the sample
/// (index along the first axis) of the first; `None` when all are finite or it is not float.
fn non_finite(tensor: &Tensor) -> Option<(usize, usize, usize)> {
    let (count, total, first) = match tensor {
        Tensor::F32(a) => count_true(a.iter().map(|v| !v.is_finite())),
        Tensor::F16(a) => count_true(a.iter().map(|v| !v.is_finite())),
        Tensor::F64(a) => count_true(a.iter().map(|v| !v.is_finite())),
        _ => return None,
    };
    let per_sample = tensor.shape().iter().skip(1).product::<usize>().max(1);
    first.map(|first| (count, total, first / per_sample))
}

/// How many of `flags` are true, how many there are, and the index of the first true one.
fn count_true(flags: impl Iterator<Item = bool>) -> (usize, usize, Option<usize>) {
    let (mut count, mut total, mut first) = (0, 0, None);
    for flag in flags {
        if flag {
            count += 1;
            first.get_or_insert(total);
        }
        total += 1;
    }
    (count, total, first)
}

/// Shows array dimensions as `[100, 3, 32, 32]`.
struct Dims<'a>(&'a [usize]);

impl fmt::Display for Dims<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.0.iter().map(usize::to_string).collect();
        write!(f, "[{}]", dims.join(", "))
    }
}

/// Shows model dimensions as `[?, 3, 32, 32]`, with `?` where a dimension is free.
struct ModelDims<'a>(&'a [Option<i64>]);

impl fmt::Display for ModelDims<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> =
            self.0.iter().map(|d| d.map_or_else(|| "?".to_string(), |d| d.to_string())).collect();
        write!(f, "[{}]", dims.join(", "))
    }
}

/// Samples held in memory: input arrays that share their first dimension, and maybe labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    path: PathBuf,
    /// Input arrays in file order; from a `.npy` file, one array named after the file's stem.
    inputs: Vec<(String, Tensor)>,
    labels: Option<(String, Tensor)>,
    /// Whether the data came from a `.npy` file, whose one array feeds the model's one input.
    single: bool,
    samples: usize,
}

impl Dataset {
    /// Reads a `.npz` archive (arrays named after model inputs, plus the `labels` array) or a
    /// `.npy` file (the one input of a model; it cannot hold labels).
    ///
    /// `samples` keeps the first that many samples; asking for more than the file holds keeps
    /// them all and logs a warning.
    pub fn load(
        path: &Path,
        labels: Option<&str>,
        samples: Option<usize>,
    ) -> Result<Dataset, DataError> {
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_lowercase);
        let single = match extension.as_deref() {
            Some("npz") => false,
            Some("npy") => true,
            _ => return Err(DataError::UnknownFormat { path: path.to_path_buf() }),
        };
        if let (true, Some(labels)) = (single, labels) {
            return Err(DataError::LabelsInNpy {
                path: path.to_path_buf(),
                labels: labels.to_string(),
            });
        }

        if path.is_dir() {
            return Err(unreadable(path, "it is a folder, not a file"));
        }
        let mut arrays = if single { read_npy_file(path)? } else { read_npz(path)? };

        let labels = match labels {
            Some(name) => match arrays.iter().position(|(array, _)| array == name) {
                Some(index) => Some(arrays.remove(index)),
                None => {
                    return Err(DataError::MissingLabels {
                        path: path.to_path_buf(),
                        labels: name.to_string(),
                        present: arrays.into_iter().map(|(name, _)| name).collect(),
                    })
                }
            },
            None => None,
        };

        let available = sample_count(path, &arrays, labels.as_ref())?;
        let dataset = Dataset {
            path: path.to_path_buf(),
            inputs: arrays,
            labels,
            single,
            samples: available,
        };
        dataset.truncated(samples)
    }

    /// Keeps the first `samples` samples.
    fn truncated(mut self, samples: Option<usize>) -> Result<Dataset, DataError> {
        let Some(wanted) = samples else { return Ok(self) };
        if wanted == 0 {
            return Err(DataError::NoSamples {
                path: self.path,
                why: "0 samples were asked for".into(),
            });
        }
        if wanted > self.samples {
            tracing::warn!(
                data = %self.path.display(),
                wanted,
                available = self.samples,
                "the data file holds fewer samples than asked for; using all of them"
            );
            return Ok(self);
        }
        if wanted < self.samples {
            for (_, tensor) in self.inputs.iter_mut().chain(self.labels.iter_mut()) {
                *tensor = tensor.slice0(0..wanted);
            }
            self.samples = wanted;
        }
        Ok(self)
    }

    /// Keeps only the first `samples` samples (all of them when there are fewer).
    pub fn truncate(&mut self, samples: usize) {
        if samples > 0 && samples < self.samples {
            for (_, tensor) in self.inputs.iter_mut().chain(self.labels.iter_mut()) {
                *tensor = tensor.slice0(0..samples);
            }
            self.samples = samples;
        }
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.samples
    }

    /// Whether there is no sample (never true for a loaded dataset).
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// The input arrays, named as in the file (a `.npy` array is named after the file's stem).
    pub fn inputs(&self) -> &[(String, Tensor)] {
        &self.inputs
    }

    /// The labels array and its name, if labels were asked for.
    pub fn labels(&self) -> Option<(&str, &Tensor)> {
        self.labels.as_ref().map(|(name, tensor)| (name.as_str(), tensor))
    }

    /// Checks the float input arrays for NaN and infinite values. Evaluation data
    /// (`calibration` false): an array that holds nothing else is refused, one that holds some
    /// is logged. Calibration data is only logged: a NaN range fails the candidate that
    /// calibrates on it, naming the tensor and the batch.
    pub fn check_finite(&self, calibration: bool) -> Result<(), DataError> {
        for (name, tensor) in &self.inputs {
            let Some((count, total, first)) = non_finite(tensor) else { continue };
            if count == total && !calibration {
                return Err(DataError::NonFinite {
                    path: self.path.clone(),
                    array: name.clone(),
                    count,
                    total,
                });
            }
            let effect = if calibration {
                "ranges calibrated on them are NaN or infinite, which fails the static \
                 candidates"
            } else {
                "outputs on those samples may be NaN, and dynamic quantization, which takes \
                 its ranges from each batch, loses accuracy on the whole batch"
            };
            tracing::warn!(
                "{}: array '{name}' holds {count} NaN or infinite values of {total} (the first \
                 in sample {first}); {effect}",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Checks that the arrays fit `model_inputs`: one array per input with the same dtype (or
    /// float32 for a float16 input), rank and fixed dimensions (the first dimension counts
    /// samples and is not compared), and no array left over except the labels.
    pub fn check_inputs(&self, model_inputs: &[IoInfo]) -> Result<(), DataError> {
        if self.single {
            let [input] = model_inputs else {
                return Err(DataError::SingleArray {
                    path: self.path.clone(),
                    inputs: model_inputs.iter().map(|i| i.name.clone()).collect(),
                });
            };
            let (array, tensor) = &self.inputs[0];
            return self.check_array(array, tensor, input);
        }

        let present: Vec<String> = self.inputs.iter().map(|(name, _)| name.clone()).collect();
        for input in model_inputs {
            let Some((array, tensor)) = self.inputs.iter().find(|(name, _)| *name == input.name)
            else {
                return Err(DataError::MissingInput {
                    path: self.path.clone(),
                    input: input.name.clone(),
                    suggestion: closest(&input.name, &present),
                    present,
                });
            };
            self.check_array(array, tensor, input)?;
        }

        let extra: Vec<String> = present
            .into_iter()
            .filter(|name| !model_inputs.iter().any(|input| input.name == *name))
            .collect();
        if !extra.is_empty() {
            return Err(DataError::ExtraArrays {
                path: self.path.clone(),
                extra,
                inputs: model_inputs.iter().map(|i| i.name.clone()).collect(),
            });
        }
        Ok(())
    }

    fn check_array(&self, array: &str, tensor: &Tensor, input: &IoInfo) -> Result<(), DataError> {
        if !feeds(tensor, input) {
            return Err(DataError::DtypeMismatch {
                path: self.path.clone(),
                array: array.to_string(),
                input: input.name.clone(),
                expected: input.elem.clone(),
                found: tensor.elem(),
            });
        }

        let found = tensor.shape();
        let fits = found.len() == input.shape.len()
            && found.iter().zip(&input.shape).skip(1).all(|(&have, want)| match want {
                Some(want) => i64::try_from(have).is_ok_and(|have| have == *want),
                None => true,
            });
        if !fits {
            return Err(DataError::ShapeMismatch {
                path: self.path.clone(),
                array: array.to_string(),
                input: input.name.clone(),
                expected: input.shape.clone(),
                found: found.to_vec(),
            });
        }
        Ok(())
    }

    /// The inputs of samples `range`, named after `model_inputs` (which
    /// [`Dataset::check_inputs`] accepted), ready for [`crate::runtime::ModelSession::run`]:
    /// float32 arrays that feed float16 inputs are rounded to float16.
    ///
    /// # Panics
    ///
    /// If `range` reaches past [`Dataset::len`].
    pub fn batch(&self, model_inputs: &[IoInfo], range: Range<usize>) -> Vec<(String, Tensor)> {
        if self.single {
            let rows = self.inputs[0].1.slice0(range);
            return match model_inputs.first() {
                Some(input) => vec![(input.name.clone(), as_input(rows, input))],
                None => vec![(self.inputs[0].0.clone(), rows)],
            };
        }
        model_inputs
            .iter()
            .filter_map(|input| {
                let (name, tensor) = self.inputs.iter().find(|(name, _)| *name == input.name)?;
                Some((name.clone(), as_input(tensor.slice0(range.clone()), input)))
            })
            .collect()
    }
}

/// Whether `tensor` can feed `input`: the same element type, or float32 values for a float16
/// input (a model converted to float16 is measured on the float32 data of its source).
fn feeds(tensor: &Tensor, input: &IoInfo) -> bool {
    tensor.elem() == input.elem || (tensor.elem() == ElemType::F32 && input.elem == ElemType::F16)
}

/// `tensor` in the element type `input` takes: float32 values rounded to the nearest float16
/// for a float16 input, anything else as it is.
fn as_input(tensor: Tensor, input: &IoInfo) -> Tensor {
    match tensor {
        Tensor::F32(values) if input.elem == ElemType::F16 => {
            Tensor::F16(values.mapv(half::f16::from_f32))
        }
        other => other,
    }
}

/// The name in `names` closest to `wanted`, if it is close enough to be a likely typo or one
/// name holds the other.
fn closest(wanted: &str, names: &[String]) -> Option<String> {
    let wanted = wanted.to_lowercase();
    names
        .iter()
        .map(|name| {
            let lower = name.to_lowercase();
            let holds = wanted.contains(&lower) || lower.contains(&wanted);
            (if holds { 1.0 } else { strsim::jaro_winkler(&wanted, &lower) }, name)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name.clone())
}

/// The number of samples every array agrees on.
fn sample_count(
    path: &Path,
    inputs: &[(String, Tensor)],
    labels: Option<&(String, Tensor)>,
) -> Result<usize, DataError> {
    let counts: Vec<(String, usize)> =
        inputs.iter().chain(labels).map(|(name, tensor)| (name.clone(), tensor.len0())).collect();
    let Some(&(ref first, samples)) = counts.first() else {
        return Err(DataError::Empty { path: path.to_path_buf() });
    };
    if counts.iter().any(|(_, n)| *n != samples) {
        return Err(DataError::SampleCounts { path: path.to_path_buf(), counts });
    }
    if samples == 0 {
        return Err(DataError::NoSamples {
            path: path.to_path_buf(),
            why: format!("array '{first}' has 0 rows"),
        });
    }
    if inputs.is_empty() {
        return Err(DataError::NoSamples {
            path: path.to_path_buf(),
            why: "it holds labels but no input array".into(),
        });
    }
    Ok(samples)
}

fn unreadable(path: &Path, message: impl fmt::Display) -> DataError {
    DataError::Unreadable { path: path.to_path_buf(), message: message.to_string() }
}

/// Reads every array of a `.npz` archive, in archive order.
fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, DataError> {
    let file = File::open(path).map_err(|e| unreadable(path, e))?;
    if file.metadata().map_err(|e| unreadable(path, e))?.len() == 0 {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| unreadable(path, format!("not a .npz (zip) archive: {e}")))?;

    let mut arrays = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(|e| unreadable(path, e))?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name();
        let name = name.strip_suffix(".npy").unwrap_or(name).to_string();

        let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        entry.read_to_end(&mut bytes).map_err(|e| DataError::ArrayUnreadable {
            path: path.to_path_buf(),
            array: name.clone(),
            message: e.to_string(),
        })?;
        let tensor = decode_npy(path, &name, &bytes)?;
        arrays.push((name, tensor));
    }
    if arrays.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(arrays)
}

/// Reads a `.npy` file as one array named after the file's stem.
fn read_npy_file(path: &Path) -> Result<Vec<(String, Tensor)>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| unreadable(path, e))?;
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let tensor = decode_npy(path, &name, &bytes)?;
    Ok(vec![(name, tensor)])
}

/// Decodes the bytes of one `.npy` array, in C order whatever order the file stored.
fn decode_npy(path: &Path, name: &str, bytes: &[u8]) -> Result<Tensor, DataError> {
    let array_error = |message: String| DataError::ArrayUnreadable {
        path: path.to_path_buf(),
        array: name.to_string(),
        message,
    };

    let header = Header::from_reader(&mut &bytes[..]).map_err(|e| array_error(e.to_string()))?;
    let descr = match header.type_descriptor.as_string() {
        Some(descr) => descr.clone(),
        None => header.type_descriptor.to_string(),
    };
    let unsupported = || DataError::UnsupportedDtype {
        path: path.to_path_buf(),
        array: name.to_string(),
        dtype: numpy_name(&descr),
    };
    if header.shape.is_empty() {
        return Err(DataError::Scalar { path: path.to_path_buf(), array: name.to_string() });
    }

    fn read<T: ReadableElement + Clone>(bytes: &[u8]) -> Result<ArrayD<T>, String> {
        let array = ArrayD::<T>::read_npy(bytes).map_err(|e| e.to_string())?;
        if array.is_standard_layout() {
            Ok(array)
        } else {
            Ok(array.as_standard_layout().into_owned())
        }
    }

    let tensor = match ElemType::from_numpy_descr(&descr).ok_or_else(unsupported)? {
        ElemType::F32 => read(bytes).map(Tensor::F32),
        ElemType::F64 => read(bytes).map(Tensor::F64),
        ElemType::I8 => read(bytes).map(Tensor::I8),
        ElemType::I16 => read(bytes).map(Tensor::I16),
        ElemType::I32 => read(bytes).map(Tensor::I32),
        ElemType::I64 => read(bytes).map(Tensor::I64),
        ElemType::U8 => read(bytes).map(Tensor::U8),
        ElemType::U16 => read(bytes).map(Tensor::U16),
        ElemType::U32 => read(bytes).map(Tensor::U32),
        ElemType::U64 => read(bytes).map(Tensor::U64),
        ElemType::Bool => read(bytes).map(Tensor::Bool),
        _ => return Err(unsupported()),
    };
    tensor.map_err(array_error)
}

/// NumPy's name for a type descriptor, such as `float16` for `<f2`, or the descriptor itself.
fn numpy_name(descr: &str) -> String {
    if let Some(ty) = ElemType::from_numpy_descr(descr) {
        return ty.to_string();
    }
    let name = match descr.get(1..) {
        Some("c8") => "complex64",
        Some("c16") => "complex128",
        Some("O") => "object",
        Some(code) if code.starts_with('U') => "str",
        Some(code) if code.starts_with('S') => "bytes",
        Some(code) if code.starts_with("M8") => "datetime64",
        _ => return descr.to_string(),
    };
    format!("{name} ({descr})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_far_ones_are_not() {
        let names = vec!["input_ids".to_string(), "labels".to_string()];
        assert_eq!(closest("input_id", &names), Some("input_ids".to_string()));
        assert_eq!(closest("pixel_values", &names), None);
        assert_eq!(closest("x_in", &["x".to_string(), "y".to_string()]), Some("x".to_string()));
    }

    fn float_input(elem: ElemType) -> IoInfo {
        IoInfo { name: "x".into(), elem, shape: vec![None, Some(2)] }
    }

    fn dataset(tensor: Tensor) -> Dataset {
        Dataset {
            path: PathBuf::from("data.npz"),
            inputs: vec![("x".into(), tensor)],
            labels: None,
            single: false,
            samples: 2,
        }
    }

    #[test]
    fn float32_data_feeds_a_float16_input_rounded_to_float16() {
        let values =
            ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 2]), vec![1.0f32, 0.1, -3.0, 7e4]).unwrap();
        let data = dataset(Tensor::F32(values));
        let input = float_input(ElemType::F16);

        data.check_inputs(std::slice::from_ref(&input)).unwrap();
        let batch = data.batch(&[input], 1..2);

        let Tensor::F16(rows) = &batch[0].1 else { panic!("not float16: {:?}", batch[0].1) };
        let rows: Vec<f32> = rows.iter().map(|v| v.to_f32()).collect();
        assert_eq!(rows, [-3.0, f32::INFINITY], "values round as a Cast to float16 rounds them");
    }

    #[test]
    fn other_types_for_a_float16_input_are_refused() {
        let values = ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 2]), vec![1.0f64; 4]).unwrap();
        let data = dataset(Tensor::F64(values));

        let error = data.check_inputs(&[float_input(ElemType::F16)]).unwrap_err().to_string();

        assert!(error.contains("is float64 but model input 'x' expects float16"), "{error}");
    }

    #[test]
    fn numpy_names_cover_unsupported_types() {
        assert_eq!(numpy_name("<f2"), "float16");
        assert_eq!(numpy_name("<U5"), "str (<U5)");
        assert_eq!(numpy_name(">f4"), ">f4");
    }
}
