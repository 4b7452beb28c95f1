//! Byte-for-byte round trip of the ONNX wheel's backend test data through our schema.
//!
//! Every `.onnx` model under `.cache/onnx-wheel/onnx/backend/test/data/` is decoded and
//! encoded again and must come out identical; so must every `input_*.pb` / `output_*.pb`
//! beside it, decoded as the message its graph input or output type calls for. This proves
//! the schema in `proto/onnx.proto` has every field, number, presence rule and `packed`
//! option right: a missing field would be dropped and a wrong option would change bytes.
//! Every model must also pass `ir::load`, whose checks must refuse no valid model.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;

use pipeline_passes::ir::proto::{
    type_proto, MapProto, ModelProto, OptionalProto, SequenceProto, SparseTensorProto, TensorProto,
    TypeProto,
};
use prost::Message;

/// Fewer models than this means the test data is missing or incomplete.
const MIN_MODELS: usize = 1500;

/// Fewer data files than this means the test data is missing or incomplete.
const MIN_DATA_FILES: usize = 5000;

/// The backend test data installed by `scripts/setup-test-env.sh`.
fn data_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/onnx-wheel/onnx/backend/test/data")
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// Decodes `bytes` as `M`, encodes it again and says how the result differs, if it does.
fn round_trip<M: Message + Default>(bytes: &[u8]) -> Result<(), String> {
    let message = M::decode(bytes).map_err(|e| format!("decode failed: {e}"))?;
    let again = message.encode_to_vec();
    if again == bytes {
        return Ok(());
    }
    let first_difference = again.iter().zip(bytes).position(|(a, b)| a != b);
    Err(format!(
        "re-encoded {} bytes differ from the {} read (first difference at byte {:?})",
        again.len(),
        bytes.len(),
        first_difference.unwrap_or(again.len().min(bytes.len()))
    ))
}

/// Round-trips a data file as the message its declared type calls for.
fn round_trip_value(bytes: &[u8], value_type: Option<&TypeProto>) -> Result<(), String> {
    match value_type.and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::SequenceType(_)) => round_trip::<SequenceProto>(bytes),
        Some(type_proto::Value::MapType(_)) => round_trip::<MapProto>(bytes),
        Some(type_proto::Value::OptionalType(_)) => round_trip::<OptionalProto>(bytes),
        Some(type_proto::Value::SparseTensorType(_)) => round_trip::<SparseTensorProto>(bytes),
        _ => round_trip::<TensorProto>(bytes),
    }
}

/// The graph input or output that a data file such as `input_2.pb` holds.
fn declared_type<'m>(model: &'m ModelProto, file: &Path) -> Option<&'m TypeProto> {
    let stem = file.file_stem()?.to_str()?;
    let (kind, index) = stem.rsplit_once('_')?;
    let index: usize = index.parse().ok()?;
    let graph = model.graph.as_ref()?;
    let values = if kind.ends_with("input") { &graph.input } else { &graph.output };
    values.get(index)?.r#type.as_ref()
}

/// The model a data file belongs to: `model.onnx` one folder up for `test_data_set_N/`,
/// `light_X.onnx` beside `light_X_output_0.pb`.
fn model_of(file: &Path) -> Option<PathBuf> {
    let dir = file.parent()?;
    if dir.file_name()?.to_str()?.starts_with("test_data_set") {
        return Some(dir.parent()?.join("model.onnx"));
    }
    let stem = file.file_stem()?.to_str()?;
    let model = stem.split("_output_").next()?;
    Some(dir.join(format!("{model}.onnx")))
}

/// Checks one file and returns its kind (model or data) or why it failed.
fn check(file: &Path) -> Result<bool, String> {
    let bytes = fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    if file.extension().is_some_and(|e| e == "onnx") {
        round_trip::<ModelProto>(&bytes)?;
        // The loader's checks (tensor data against dimensions) refuse none of these models.
        pipeline_passes::ir::load(file).map_err(|e| format!("ir::load refused it: {e}"))?;
        return Ok(true);
    }

    let model_path = model_of(file).ok_or("cannot tell which model this file belongs to")?;
    let model_bytes = fs::read(&model_path)
        .map_err(|e| format!("cannot read its model {}: {e}", model_path.display()))?;
    let model = ModelProto::decode(model_bytes.as_slice())
        .map_err(|e| format!("cannot decode its model: {e}"))?;
    round_trip_value(&bytes, declared_type(&model, file)).map(|()| false)
}

#[test]
fn backend_test_data_round_trips_byte_for_byte() {
    let root = data_root();
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.retain(|f| f.extension().is_some_and(|e| e == "onnx" || e == "pb"));
    files.sort();

    let workers = thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    let chunk = files.len().div_ceil(workers).max(1);
    let results: Vec<(PathBuf, Result<bool, String>)> = thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(|f| (f.clone(), check(f))).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });

    let models = results.iter().filter(|(_, r)| matches!(r, Ok(true))).count();
    let data_files = results.iter().filter(|(_, r)| matches!(r, Ok(false))).count();
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(f, r)| r.as_ref().err().map(|e| format!("{}: {e}", f.display())))
        .collect();
    println!("{models} models and {data_files} data files checked");

    assert!(
        failures.is_empty(),
        "{} of {} files do not round trip:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
    assert!(
        models >= MIN_MODELS && data_files >= MIN_DATA_FILES,
        "only {models} models and {data_files} data files under {}; \
         run scripts/setup-test-env.sh to install the ONNX backend test data",
        root.display()
    );
}
