//! Reading and writing ONNX files, with tensors stored inline or in an external data file.
//!
//! External data follows the format's convention: a tensor with `data_location = EXTERNAL`
//! lists `location` (a path relative to the model's folder), `offset` and `length` in
//! `external_data`. Loading reads that data into `raw_data`; saving can write the large
//! initializers to one data file beside the model. Both files of a save are written to
//! temporary files in their folders first and renamed into place.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use prost::bytes::buf::UninitSlice;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tempfile::NamedTempFile;

use crate::ir::proto::tensor_proto::DataLocation;
use crate::ir::proto::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, StringStringEntryProto,
    TensorProto, TrainingInfoProto,
};
use crate::ir::tensor::{
    check_data_length, element_bits, element_count, packed_len, typed_data_as_raw,
};
use crate::ir::IrError;

/// Protobuf cannot encode or decode a message larger than this.
const PROTOBUF_LIMIT: usize = i32::MAX as usize;

/// Tensors at least this large start at a multiple of [`LARGE_ALIGNMENT`] in the data file,
/// so a runtime can map them from the page cache; smaller ones at a multiple of
/// [`SMALL_ALIGNMENT`].
const LARGE_TENSOR: usize = 1 << 20;
const LARGE_ALIGNMENT: u64 = 4096;
const SMALL_ALIGNMENT: u64 = 64;

/// How [`save`] writes a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveOptions {
    /// Where large tensors go; `None` keeps every tensor inside the model file.
    pub external_data: Option<ExternalData>,
}

/// Large initializers go to one data file beside the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalData {
    /// The data file's path relative to the model's folder, e.g. `model.onnx.data`.
    pub location: String,
    /// Initializers whose data takes at least this many bytes are moved out.
    pub size_threshold: usize,
}

/// Decodes a model from its protobuf bytes. External data is not read.
pub fn decode(bytes: &[u8]) -> Result<ModelProto, IrError> {
    ModelProto::decode(bytes).map_err(|source| IrError::DecodeBytes { source })
}

/// Encodes a model to its protobuf bytes, exactly as read when nothing was changed.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Writes a model's protobuf encoding to `writer` as it is produced, without holding it: the
/// same bytes as [`encode`], through a small buffer, tensor data passed on as it is.
pub fn encode_to(model: &ModelProto, writer: &mut impl Write) -> std::io::Result<()> {
    let mut encoder = StreamEncoder::new(writer);
    // `encode_raw` writes without first checking room: the encoder takes any length.
    model.encode_raw(&mut encoder);
    encoder.finish()
}

/// A `BufMut` that passes what is written on to a writer through a small buffer; large slices
/// (tensor data) go to the writer directly. The first write error is kept and later writes
/// are dropped.
struct StreamEncoder<'w, W: Write> {
    writer: &'w mut W,
    buffer: Vec<u8>,
    filled: usize,
    error: Option<std::io::Error>,
}

impl<'w, W: Write> StreamEncoder<'w, W> {
    const BUFFER: usize = 64 * 1024;

    fn new(writer: &'w mut W) -> Self {
        StreamEncoder { writer, buffer: vec![0; Self::BUFFER], filled: 0, error: None }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            self.error = self.writer.write_all(bytes).err();
        }
    }

    fn flush(&mut self) {
        let filled = std::mem::take(&mut self.filled);
        if self.error.is_none() {
            self.error = self.writer.write_all(&self.buffer[..filled]).err();
        }
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.flush();
        match self.error.take() {
            Some(error) => Err(error),
            None => self.writer.flush(),
        }
    }
}

// SAFETY: `chunk_mut` always returns initialized, writable memory of `buffer` (at least one
// byte: a full buffer is flushed first), and `advance_mut` only moves `filled` within it.
unsafe impl<W: Write> BufMut for StreamEncoder<'_, W> {
    fn remaining_mut(&self) -> usize {
        usize::MAX
    }

    unsafe fn advance_mut(&mut self, count: usize) {
        self.filled = (self.filled + count).min(self.buffer.len());
        if self.filled == self.buffer.len() {
            self.flush();
        }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.filled == self.buffer.len() {
            self.flush();
        }
        UninitSlice::new(&mut self.buffer[self.filled..])
    }

    fn put_slice(&mut self, source: &[u8]) {
        if self.filled + source.len() <= self.buffer.len() {
            self.buffer[self.filled..self.filled + source.len()].copy_from_slice(source);
            self.filled += source.len();
            return;
        }

        self.flush();
        self.write(source);
    }

    fn put<T: Buf>(&mut self, mut source: T) {
        while source.has_remaining() {
            let chunk = source.chunk();
            let length = chunk.len();
            self.put_slice(chunk);
            source.advance(length);
        }
    }
}

/// Reads a model and the data of every tensor stored in external files, so that every
/// tensor of the returned model holds its data in memory. A tensor whose data does not
/// agree with its dimensions is an error naming it.
pub fn load(path: &Path) -> Result<ModelProto, IrError> {
    let mut model = load_graph(path)?;

    let mut reader = ExternalReader::new(path);
    for_each_tensor_mut(&mut model, &mut |tensor| {
        if tensor.data_location() == DataLocation::External {
            reader.read(tensor)?;
        }
        check_data_length(tensor).map_err(|error| match error {
            IrError::TensorData { tensor, reason } => IrError::TensorData {
                tensor,
                reason: format!("{reason} (in `{}`)", path.display()),
            },
            other => other,
        })
    })?;

    tracing::debug!(path = %path.display(), external_files = reader.files.len(), "loaded model");
    Ok(model)
}

/// Reads a model without the data of its tensors stored in external files: those keep their
/// references (`data_location = EXTERNAL`), as in the file. [`save`] refuses such a model.
pub fn load_graph(path: &Path) -> Result<ModelProto, IrError> {
    let bytes = std::fs::read(path).map_err(|source| io_error(path, source))?;
    // Decoded from a shared buffer, tensors stored inline point into it instead of copying.
    let bytes = Bytes::from(bytes);
    let model = ModelProto::decode(bytes.clone())
        .map_err(|source| IrError::Decode { path: path.to_path_buf(), source })?;
    // Every byte string decodes as some message: an empty file, or a protobuf of another
    // kind, is a "model" without a graph.
    if model.graph.is_none() {
        let reason = if bytes.is_empty() { "the file is empty" } else { "it holds no graph" };
        return Err(IrError::NoGraph { path: path.to_path_buf(), reason });
    }
    Ok(model)
}

/// Whether some tensor of the model keeps its data in an external file.
pub fn has_external_data(model: &ModelProto) -> bool {
    check_in_memory(model).is_err()
}

/// Writes a model to `path`, atomically: to a temporary file in the same folder, then
/// renamed. With `options.external_data`, initializers at or above the size threshold are
/// written to one data file beside the model (created only if some tensor moves).
///
/// Every tensor must hold its data in memory (as [`load`] leaves them). A model that would
/// pass protobuf's 2 GiB limit is an error that says to use external data.
pub fn save(model: &ModelProto, path: &Path, options: &SaveOptions) -> Result<(), IrError> {
    check_in_memory(model)?;
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };

    let Some(external) = &options.external_data else {
        let size = model.encoded_len();
        if size > PROTOBUF_LIMIT {
            let hint = "save it with external data (`SaveOptions::external_data`)";
            return Err(IrError::TooLarge { path: path.to_path_buf(), size, hint });
        }
        return write_atomically(path, &folder, model);
    };

    let data_path = external_path(&folder, path, &external.location)?;
    let data_folder = data_path.parent().unwrap_or(&folder).to_path_buf();
    std::fs::create_dir_all(&data_folder).map_err(|source| io_error(&data_folder, source))?;
    let mut writer = ExternalWriter::new(&data_folder, external)?;
    let stripped = copy_model(model, &mut writer)?;
    let size = stripped.encoded_len();
    if size > PROTOBUF_LIMIT {
        let hint = "lower the external data size threshold";
        return Err(IrError::TooLarge { path: path.to_path_buf(), size, hint });
    }

    let moved = writer.moved;
    if moved > 0 {
        writer.finish(&data_path)?;
    }
    write_atomically(path, &folder, &stripped)?;

    tracing::debug!(path = %path.display(), moved, "saved model with external data");
    Ok(())
}

fn io_error(path: &Path, source: std::io::Error) -> IrError {
    IrError::Io { path: path.to_path_buf(), source }
}

/// A temporary file in `folder` that will be readable by others once renamed, as files
/// written with `create` are (tempfile's default is owner-only).
pub(crate) fn new_temp_file(folder: &Path) -> std::io::Result<NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    builder.tempfile_in(folder)
}

/// Writes the model's encoding to a temporary file in `folder` as it is produced, then renames
/// it to `path`.
fn write_atomically(path: &Path, folder: &Path, model: &ModelProto) -> Result<(), IrError> {
    let file = new_temp_file(folder).map_err(|source| io_error(folder, source))?;
    let mut writer = BufWriter::new(file);
    let written = encode_to(model, &mut writer);
    written.map_err(|source| io_error(writer.get_ref().path(), source))?;
    let file = writer.into_inner().map_err(|e| io_error(path, e.into_error()))?;
    file.as_file().sync_all().map_err(|source| io_error(path, source))?;
    file.persist(path).map_err(|e| io_error(path, e.error))?;
    Ok(())
}

/// Checks that an external data location is a relative path that stays inside the model's
/// folder, and returns why not.
fn check_location(location: &str) -> Result<(), String> {
    let relative = Path::new(location);
    if location.is_empty() {
        return Err("the location is empty".into());
    }
    if relative.is_absolute() || relative.has_root() {
        return Err(format!(
            "location `{location}` is an absolute path; \
             hint: external data must be named relative to the model's folder"
        ));
    }
    let escapes = relative
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_) | Component::RootDir));
    if escapes {
        return Err(format!(
            "location `{location}` leaves the model's folder; \
             hint: external data must lie in the model's folder or below it"
        ));
    }
    Ok(())
}

/// The path of the data file for a save, checked to be a plain relative location that is
/// not the model file itself.
fn external_path(folder: &Path, model_path: &Path, location: &str) -> Result<PathBuf, IrError> {
    let invalid = |reason: String| IrError::ExternalLocation { location: location.into(), reason };
    check_location(location).map_err(invalid)?;

    let data_path = folder.join(location);
    if model_path.file_name().is_some_and(|name| Path::new(location) == Path::new(name)) {
        return Err(invalid("it is the model file itself".into()));
    }
    Ok(data_path)
}

/// Reads external tensor data relative to one model file, keeping each data file open.
struct ExternalReader {
    model: PathBuf,
    folder: PathBuf,
    files: HashMap<String, (File, u64)>,
}

impl ExternalReader {
    fn new(model: &Path) -> Self {
        let folder = match model.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self { model: model.to_path_buf(), folder, files: HashMap::new() }
    }

    fn error(&self, tensor: &TensorProto, reason: String) -> IrError {
        IrError::ExternalData {
            model: self.model.clone(),
            tensor: tensor.name().to_string(),
            reason,
        }
    }

    /// Replaces the tensor's external reference with its data in `raw_data`.
    fn read(&mut self, tensor: &mut TensorProto) -> Result<(), IrError> {
        let mut location = None;
        let mut offset = None;
        let mut length = None;
        for entry in &tensor.external_data {
            match entry.key() {
                "location" => location = Some(entry.value().to_string()),
                "offset" => offset = Some(self.number(tensor, "offset", entry.value())?),
                "length" => length = Some(self.number(tensor, "length", entry.value())?),
                _ => {}
            }
        }
        let location = location
            .ok_or_else(|| self.error(tensor, "its external_data has no `location`".into()))?;
        check_location(&location).map_err(|reason| self.error(tensor, reason))?;

        let offset = offset.unwrap_or(0);
        let file_len = self.open(tensor, &location)?.1;
        let length = length.unwrap_or(file_len.saturating_sub(offset));
        let end = offset.checked_add(length).filter(|&end| end <= file_len).ok_or_else(|| {
            let reason = format!(
                "`{location}` holds {file_len} bytes but the tensor needs bytes \
                 {offset}..{}; hint: the data file may be truncated or from another model",
                offset.saturating_add(length)
            );
            self.error(tensor, reason)
        })?;
        self.check_length(tensor, length)?;

        let (file, _) = self.open(tensor, &location)?;
        let mut data = vec![0u8; (end - offset) as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut data))
            .map_err(|e| IrError::Io { path: self.folder.join(&location), source: e })?;

        tensor.raw_data = Some(data.into());
        tensor.external_data.clear();
        tensor.data_location = None;
        Ok(())
    }

    fn number(&self, tensor: &TensorProto, key: &str, value: &str) -> Result<u64, IrError> {
        value.trim().parse().map_err(|_| {
            self.error(tensor, format!("`{key}` is `{value}`, not a non-negative integer"))
        })
    }

    /// Checks the stored length against what the tensor's type and dimensions call for.
    fn check_length(&self, tensor: &TensorProto, length: u64) -> Result<(), IrError> {
        let Some(bits) = element_bits(tensor.data_type()) else {
            let reason = format!(
                "external data of type {} is not supported",
                crate::ir::data_type_name(tensor.data_type())
            );
            return Err(self.error(tensor, reason));
        };
        let count = element_count(tensor)?;
        let expected = packed_len(count, bits);
        if expected != Some(length as usize) {
            let reason = format!(
                "it stores {length} bytes but dimensions {:?} call for {}",
                tensor.dims,
                expected.map_or("more than fit in memory".into(), |e| e.to_string())
            );
            return Err(self.error(tensor, reason));
        }
        Ok(())
    }

    /// The open data file at `location` and its length, opened on first use after checking
    /// that it lies inside the model's folder (symbolic links included).
    fn open(&mut self, tensor: &TensorProto, location: &str) -> Result<&mut (File, u64), IrError> {
        let opened = match self.files.remove(location) {
            Some(opened) => opened,
            None => self.open_new(tensor, location)?,
        };
        Ok(self.files.entry(location.to_string()).or_insert(opened))
    }

    fn open_new(&self, tensor: &TensorProto, location: &str) -> Result<(File, u64), IrError> {
        let path = self.folder.join(location);
        let canonical_folder =
            self.folder.canonicalize().map_err(|source| io_error(&self.folder, source))?;
        let canonical = path.canonicalize().map_err(|source| {
            let reason = format!(
                "its data file `{location}` cannot be opened at {}: {source}; hint: keep the \
                 data file beside the model, under the name the model gives it",
                path.display()
            );
            self.error(tensor, reason)
        })?;
        if !canonical.starts_with(&canonical_folder) {
            let reason = format!(
                "location `{location}` resolves to `{}`, outside the model's folder",
                canonical.display()
            );
            return Err(self.error(tensor, reason));
        }

        let file = File::open(&canonical).map_err(|source| io_error(&path, source))?;
        let len = file.metadata().map_err(|source| io_error(&path, source))?.len();
        Ok((file, len))
    }
}

/// Writes tensor data to one temporary data file and makes the references to it.
struct ExternalWriter<'o> {
    options: &'o ExternalData,
    file: BufWriter<NamedTempFile>,
    position: u64,
    moved: usize,
}

impl<'o> ExternalWriter<'o> {
    fn new(folder: &Path, options: &'o ExternalData) -> Result<Self, IrError> {
        let file = new_temp_file(folder).map_err(|source| io_error(folder, source))?;
        Ok(Self { options, file: BufWriter::new(file), position: 0, moved: 0 })
    }

    /// The tensor as it goes in the saved model: a reference into the data file when its
    /// data is large enough, a copy otherwise.
    fn tensor(&mut self, tensor: &TensorProto) -> Result<TensorProto, IrError> {
        let converted;
        let data: &[u8] = match &tensor.raw_data {
            Some(raw) if !raw.is_empty() => raw,
            _ => match typed_data_as_raw(tensor) {
                Some(bytes) => {
                    converted = bytes;
                    &converted
                }
                None => return Ok(tensor.clone()),
            },
        };
        if data.is_empty() || data.len() < self.options.size_threshold {
            return Ok(tensor.clone());
        }

        let alignment = if data.len() >= LARGE_TENSOR { LARGE_ALIGNMENT } else { SMALL_ALIGNMENT };
        let padding = (alignment - self.position % alignment) % alignment;
        let offset = self.position + padding;
        let written = self
            .file
            .write_all(&vec![0u8; padding as usize])
            .and_then(|()| self.file.write_all(data));
        written.map_err(|source| io_error(self.file.get_ref().path(), source))?;
        self.position = offset + data.len() as u64;
        self.moved += 1;

        let entry = |key: &str, value: String| StringStringEntryProto {
            key: Some(key.to_string()),
            value: Some(value),
        };
        Ok(TensorProto {
            dims: tensor.dims.clone(),
            data_type: tensor.data_type,
            segment: tensor.segment,
            name: tensor.name.clone(),
            doc_string: tensor.doc_string.clone(),
            external_data: vec![
                entry("location", self.options.location.clone()),
                entry("offset", offset.to_string()),
                entry("length", data.len().to_string()),
            ],
            data_location: Some(DataLocation::External as i32),
            metadata_props: tensor.metadata_props.clone(),
            ..TensorProto::default()
        })
    }

    /// Flushes the data file and renames it to `path`.
    fn finish(self, path: &Path) -> Result<(), IrError> {
        let file = self.file.into_inner().map_err(|e| io_error(path, e.into_error()))?;
        file.as_file().sync_all().map_err(|source| io_error(path, source))?;
        file.persist(path).map_err(|e| io_error(path, e.error))?;
        Ok(())
    }
}

fn check_in_memory(model: &ModelProto) -> Result<(), IrError> {
    for_each_tensor(model, &mut |tensor| {
        if tensor.data_location() == DataLocation::External {
            return Err(IrError::NotInMemory { tensor: tensor.name().to_string() });
        }
        Ok(())
    })
}

/// Defines a function that calls `f` on every tensor of a model: initializers, sparse
/// initializers and attribute values, in the main graph, every subgraph, functions and
/// training graphs. Written once for shared and once for mutable access.
macro_rules! tensor_walk {
    ($model_fn:ident, $graph_fn:ident, $attribute_fn:ident, $($m:ident)?) => {
        fn $model_fn(
            model: & $($m)? ModelProto,
            f: &mut dyn FnMut(& $($m)? TensorProto) -> Result<(), IrError>,
        ) -> Result<(), IrError> {
            if let Some(graph) = & $($m)? model.graph {
                $graph_fn(graph, f)?;
            }
            for info in & $($m)? model.training_info {
                let graphs = [& $($m)? info.initialization, & $($m)? info.algorithm];
                for graph in graphs.into_iter().flatten() {
                    $graph_fn(graph, f)?;
                }
            }
            for function in & $($m)? model.functions {
                for node in & $($m)? function.node {
                    for attribute in & $($m)? node.attribute {
                        $attribute_fn(attribute, f)?;
                    }
                }
                for attribute in & $($m)? function.attribute_proto {
                    $attribute_fn(attribute, f)?;
                }
            }
            Ok(())
        }

        fn $graph_fn(
            graph: & $($m)? GraphProto,
            f: &mut dyn FnMut(& $($m)? TensorProto) -> Result<(), IrError>,
        ) -> Result<(), IrError> {
            for tensor in & $($m)? graph.initializer {
                f(tensor)?;
            }
            for sparse in & $($m)? graph.sparse_initializer {
                let parts = [& $($m)? sparse.values, & $($m)? sparse.indices];
                for tensor in parts.into_iter().flatten() {
                    f(tensor)?;
                }
            }
            for node in & $($m)? graph.node {
                for attribute in & $($m)? node.attribute {
                    $attribute_fn(attribute, f)?;
                }
            }
            Ok(())
        }

        fn $attribute_fn(
            attribute: & $($m)? AttributeProto,
            f: &mut dyn FnMut(& $($m)? TensorProto) -> Result<(), IrError>,
        ) -> Result<(), IrError> {
            for tensor in (& $($m)? attribute.t).into_iter().chain(& $($m)? attribute.tensors) {
                f(tensor)?;
            }
            let sparse_tensors = (& $($m)? attribute.sparse_tensor)
                .into_iter()
                .chain(& $($m)? attribute.sparse_tensors);
            for sparse in sparse_tensors {
                let parts = [& $($m)? sparse.values, & $($m)? sparse.indices];
                for tensor in parts.into_iter().flatten() {
                    f(tensor)?;
                }
            }
            for graph in (& $($m)? attribute.g).into_iter().chain(& $($m)? attribute.graphs) {
                $graph_fn(graph, f)?;
            }
            Ok(())
        }
    };
}

tensor_walk!(for_each_tensor, graph_tensors, attribute_tensors,);
tensor_walk!(for_each_tensor_mut, graph_tensors_mut, attribute_tensors_mut, mut);

// The copies below rebuild every message that can hold a graph, so that initializers pass
// through the writer without first cloning their data. Each destructures its message in
// full: a field added to the schema breaks the build here instead of being dropped.

fn copy_model(model: &ModelProto, writer: &mut ExternalWriter) -> Result<ModelProto, IrError> {
    let ModelProto {
        ir_version,
        producer_name,
        producer_version,
        domain,
        model_version,
        doc_string,
        graph,
        opset_import,
        metadata_props,
        training_info,
        functions,
        configuration,
    } = model;

    Ok(ModelProto {
        ir_version: *ir_version,
        producer_name: producer_name.clone(),
        producer_version: producer_version.clone(),
        domain: domain.clone(),
        model_version: *model_version,
        doc_string: doc_string.clone(),
        graph: graph.as_ref().map(|g| copy_graph(g, writer)).transpose()?,
        opset_import: opset_import.clone(),
        metadata_props: metadata_props.clone(),
        training_info: training_info
            .iter()
            .map(|t| copy_training_info(t, writer))
            .collect::<Result<_, _>>()?,
        functions: functions.iter().map(|f| copy_function(f, writer)).collect::<Result<_, _>>()?,
        configuration: configuration.clone(),
    })
}

fn copy_training_info(
    info: &TrainingInfoProto,
    writer: &mut ExternalWriter,
) -> Result<TrainingInfoProto, IrError> {
    let TrainingInfoProto { initialization, algorithm, initialization_binding, update_binding } =
        info;

    Ok(TrainingInfoProto {
        initialization: initialization.as_ref().map(|g| copy_graph(g, writer)).transpose()?,
        algorithm: algorithm.as_ref().map(|g| copy_graph(g, writer)).transpose()?,
        initialization_binding: initialization_binding.clone(),
        update_binding: update_binding.clone(),
    })
}

fn copy_function(
    function: &FunctionProto,
    writer: &mut ExternalWriter,
) -> Result<FunctionProto, IrError> {
    let FunctionProto {
        name,
        input,
        output,
        attribute,
        node,
        doc_string,
        opset_import,
        domain,
        attribute_proto,
        value_info,
        overload,
        metadata_props,
    } = function;

    Ok(FunctionProto {
        name: name.clone(),
        input: input.clone(),
        output: output.clone(),
        attribute: attribute.clone(),
        node: node.iter().map(|n| copy_node(n, writer)).collect::<Result<_, _>>()?,
        doc_string: doc_string.clone(),
        opset_import: opset_import.clone(),
        domain: domain.clone(),
        attribute_proto: attribute_proto.clone(),
        value_info: value_info.clone(),
        overload: overload.clone(),
        metadata_props: metadata_props.clone(),
    })
}

fn copy_graph(graph: &GraphProto, writer: &mut ExternalWriter) -> Result<GraphProto, IrError> {
    let GraphProto {
        node,
        name,
        initializer,
        doc_string,
        input,
        output,
        value_info,
        quantization_annotation,
        sparse_initializer,
        metadata_props,
    } = graph;

    Ok(GraphProto {
        node: node.iter().map(|n| copy_node(n, writer)).collect::<Result<_, _>>()?,
        name: name.clone(),
        initializer: initializer.iter().map(|t| writer.tensor(t)).collect::<Result<_, _>>()?,
        doc_string: doc_string.clone(),
        input: input.clone(),
        output: output.clone(),
        value_info: value_info.clone(),
        quantization_annotation: quantization_annotation.clone(),
        sparse_initializer: sparse_initializer.clone(),
        metadata_props: metadata_props.clone(),
    })
}

fn copy_node(node: &NodeProto, writer: &mut ExternalWriter) -> Result<NodeProto, IrError> {
    let NodeProto {
        input,
        output,
        name,
        op_type,
        attribute,
        doc_string,
        domain,
        overload,
        metadata_props,
        device_configurations,
    } = node;

    Ok(NodeProto {
        input: input.clone(),
        output: output.clone(),
        name: name.clone(),
        op_type: op_type.clone(),
        attribute: attribute.iter().map(|a| copy_attribute(a, writer)).collect::<Result<_, _>>()?,
        doc_string: doc_string.clone(),
        domain: domain.clone(),
        overload: overload.clone(),
        metadata_props: metadata_props.clone(),
        device_configurations: device_configurations.clone(),
    })
}

fn copy_attribute(
    attribute: &AttributeProto,
    writer: &mut ExternalWriter,
) -> Result<AttributeProto, IrError> {
    let AttributeProto {
        name,
        f,
        i,
        s,
        t,
        g,
        floats,
        ints,
        strings,
        tensors,
        graphs,
        doc_string,
        tp,
        type_protos,
        r#type,
        ref_attr_name,
        sparse_tensor,
        sparse_tensors,
    } = attribute;

    // Only graph attributes are rebuilt; tensor attributes stay inline.
    Ok(AttributeProto {
        name: name.clone(),
        f: *f,
        i: *i,
        s: s.clone(),
        t: t.clone(),
        g: g.as_ref().map(|g| copy_graph(g, writer)).transpose()?,
        floats: floats.clone(),
        ints: ints.clone(),
        strings: strings.clone(),
        tensors: tensors.clone(),
        graphs: graphs.iter().map(|g| copy_graph(g, writer)).collect::<Result<_, _>>()?,
        doc_string: doc_string.clone(),
        tp: tp.clone(),
        type_protos: type_protos.clone(),
        r#type: *r#type,
        ref_attr_name: ref_attr_name.clone(),
        sparse_tensor: sparse_tensor.clone(),
        sparse_tensors: sparse_tensors.clone(),
    })
}
