//! `pipeline tune`: picks the built-in recipe of a target, fills in the model and data,
//! writes it as `<output>/recipe.yaml` (paths relative to it, so it can be edited and rerun
//! with `pipeline run`), and runs it.
//!
//! Everything `pipeline run` would check (the model, the data against the model's inputs,
//! the labels, the calibration data, the output folder, whether the target can be measured)
//! is checked first, with errors naming the flags and the paths as the user gave them; only
//! then is the recipe written. A `recipe.yaml` that tune did not write is never overwritten.
//!
//! The built-in recipes are `recipes/<target>.yaml`, embedded in the binary. Tune rewrites
//! their top-level `name`, `model`, `data` and `output` blocks, turns the `accuracy` metric
//! into [`FIDELITY_GOAL`] when no labels are given, drops the lines marked
//! `# needs calibration` when no calibration
//! data is given, and fills the line marked `# tune: dims` with the model's symbolic
//! dimensions fixed to 1.

use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use pipeline_passes::ir;

use crate::evaluate::{DataError, Dataset, EvalError};
use crate::report::Report;
use crate::run::{self, Prepared, RunError, RunOptions};
use crate::runtime::IoInfo;
use crate::target::{Constraint, HostCpu, Target, UnknownTarget};

/// The accuracy metric of a tuned recipe without labels: every candidate's first output must
/// keep a mean cosine similarity of at least 0.99 to the model's.
pub const FIDELITY_GOAL: &str = "accuracy: {kind: fidelity, min: 0.99}";

/// The first words of every recipe tune writes: a `recipe.yaml` without them is the user's,
/// and tune does not overwrite it.
const HEADER_START: &str = "# Written by `pipeline tune`";

/// What `pipeline tune` was asked to do.
#[derive(Debug, Clone)]
pub struct TuneRequest {
    pub model: PathBuf,
    /// The target's name, as the user typed it.
    pub target: String,
    /// Evaluation inputs (`.npz`), and the labels array when `labels` names one.
    pub data: PathBuf,
    pub calibration: Option<PathBuf>,
    pub labels: Option<String>,
    /// The folder for the resolved recipe, the best model and the report.
    pub output: PathBuf,
}

/// Why `pipeline tune` stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TuneError {
    #[error(transparent)]
    Target(#[from] UnknownTarget),

    /// A file flag's path that is missing or is a folder (`problem` says which).
    #[error("{what} {} {problem}\n  hint: {hint}", path.display())]
    Missing { what: &'static str, path: PathBuf, problem: &'static str, hint: &'static str },

    #[error(
        "target `{target}` runs only QDQ-quantized models, which need calibration data\n  \
         hint: pass --calibration calib.npz (an .npz with one array per model input)"
    )]
    NeedsCalibration { target: Target },

    #[error("the model {}: {source}", path.display())]
    Model { path: PathBuf, source: ir::IrError },

    /// A flag whose value contradicts the model, the data or the file system.
    #[error("{flag}: {message}\n  hint: {hint}")]
    Flag { flag: &'static str, message: String, hint: String },

    /// A data file (of `--data` or `--calibration`) that does not fit the model.
    #[error("{flag}: {source}")]
    Data { flag: &'static str, source: Box<DataError> },

    #[error(
        "target `{target}` cannot be measured on this host: {reason}\n  hint: run it where \
         {target} is available, or pass --no-measure to build and save the candidates \
         without measuring them (`pipeline targets` shows what this host can measure)"
    )]
    TargetUnavailable { target: Target, reason: String },

    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error(transparent)]
    Run(Box<RunError>),
}

impl From<RunError> for TuneError {
    fn from(error: RunError) -> Self {
        TuneError::Run(Box::new(error))
    }
}

impl TuneError {
    /// 2 when the input was wrong, 1 when the job failed, as `pipeline run`.
    pub fn exit_code(&self) -> u8 {
        match self {
            TuneError::Run(error) => error.exit_code(),
            TuneError::Write { .. } => 1,
            _ => 2,
        }
    }
}

/// Checks everything, writes the resolved recipe and runs it; returns the recipe's path and
/// the run's report.
pub fn tune(request: &TuneRequest, options: &RunOptions) -> Result<(PathBuf, Report), TuneError> {
    let started = Instant::now();
    let (recipe_path, prepared) = write_recipe(request, options)?;
    tracing::info!("wrote {}; running it", recipe_path.display());
    let report = run::run_prepared(&recipe_path, prepared, options, started)?;
    Ok((recipe_path, report))
}

/// Checks the request as `pipeline run` would check the recipe, then resolves the target's
/// built-in recipe and writes it as `<output>/recipe.yaml`; nothing is written when a check
/// fails. Returns the recipe's path and the checked run, ready for [`run::run_prepared`].
pub fn write_recipe(
    request: &TuneRequest,
    options: &RunOptions,
) -> Result<(PathBuf, Prepared), TuneError> {
    let target = Target::from_name(&request.target)?;
    let must_exist = [
        ("the model", Some(&request.model), "give the path of an .onnx file"),
        ("the data file", Some(&request.data), "--data takes an .npz with one array per input"),
        ("the calibration file", request.calibration.as_ref(), "--calibration takes an .npz"),
    ];
    for (what, path, hint) in must_exist {
        if let Some(path) = path.filter(|p| !p.is_file()) {
            let problem = if path.is_dir() { "is a folder, not a file" } else { "does not exist" };
            return Err(TuneError::Missing { what, path: path.clone(), problem, hint });
        }
    }
    let qdq_only = target.profile().constraints.contains(&Constraint::QdqOnly);
    if qdq_only && request.calibration.is_none() {
        return Err(TuneError::NeedsCalibration { target });
    }
    let path = request.output.join("recipe.yaml");
    check_output(request, &path)?;

    let model = ir::load(&request.model)
        .map_err(|source| TuneError::Model { path: request.model.clone(), source })?;
    let inputs = IoInfo::model_inputs(&model);
    let evaluation = load_data("--data", &request.data, request.labels.as_deref(), &inputs)?;
    let calibration = match &request.calibration {
        Some(calibration) => Some(load_data("--calibration", calibration, None, &inputs)?),
        None => None,
    };
    check_host(target, options)?;

    let shapes = static_input_shapes(&model, &evaluation);
    let opset = ir::graph::opset_version(&model, "");
    let text = recipe_text(request, target, &path, &shapes, opset)?;
    // The recipe as `pipeline run` will read it, checked before it is written.
    let recipe = crate::recipe::parse(&text, &path).map_err(RunError::from)?;
    let prepared = run::prepare_loaded(recipe, model, evaluation, calibration).map_err(
        |error| match error {
            // The labels are the flags' doing, not a field of a recipe not yet written.
            RunError::At { place, error } => match *error {
                RunError::Labels(labels) => labels_flag_error(*labels),
                error => TuneError::from(RunError::At { place, error: Box::new(error) }),
            },
            other => TuneError::from(other),
        },
    )?;

    let write_error = |source| TuneError::Write { path: request.output.clone(), source };
    std::fs::create_dir_all(&request.output).map_err(write_error)?;
    crate::report::write_atomically(&path, text.as_bytes())
        .map_err(|source| TuneError::Write { path: path.clone(), source })?;
    Ok((path, prepared))
}

/// Refuses an `--output` that is a file, that is the model's own folder (the best model
/// would overwrite the source), or that holds a `recipe.yaml` tune did not write.
fn check_output(request: &TuneRequest, recipe: &Path) -> Result<(), TuneError> {
    let output = &request.output;
    let flag = |message: String, hint: String| TuneError::Flag { flag: "--output", message, hint };
    if output.exists() && !output.is_dir() {
        return Err(flag(
            format!("{} is a file, not a folder", output.display()),
            "pass --output a folder (it is created when missing)".into(),
        ));
    }
    if let Some(message) = crate::run::unwritable(output) {
        return Err(flag(message, "pass --output a folder you can write".into()));
    }
    let file_name = request.model.file_name().unwrap_or("model.onnx".as_ref());
    let resolved = crate::run::resolved;
    if resolved(&request.model) == resolved(&output.join(file_name)) {
        return Err(flag(
            format!(
                "{} is the model's own folder: the best model would overwrite {}",
                output.display(),
                request.model.display()
            ),
            "pass --output another folder, for example --output tuned".into(),
        ));
    }
    if std::fs::symlink_metadata(recipe).is_ok() && !written_by_tune(recipe) {
        return Err(flag(
            format!(
                "{} already exists and `pipeline tune` did not write it; tune would overwrite it",
                recipe.display()
            ),
            format!(
                "pass --output another folder, or remove {} if it is not needed",
                recipe.display()
            ),
        ));
    }
    Ok(())
}

/// Whether the file at `path` starts with the header tune writes.
fn written_by_tune(path: &Path) -> bool {
    use std::io::Read;

    let mut start = [0u8; HEADER_START.len()];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut start))
        .is_ok_and(|()| start == HEADER_START.as_bytes())
}

/// Loads the data file of `flag` and checks it against the model's inputs; errors name the
/// flags (`--labels` when the labels are wrong or missing).
fn load_data(
    flag: &'static str,
    path: &Path,
    labels: Option<&str>,
    inputs: &[IoInfo],
) -> Result<Dataset, TuneError> {
    let data_error = |source: DataError| match source {
        DataError::MissingLabels { labels, present, .. } => TuneError::Flag {
            flag: "--labels",
            message: format!(
                "{} has no array `{labels}`; its arrays are: {}",
                path.display(),
                present.join(", ")
            ),
            hint: "pass --labels the name of the array that holds the labels, or leave it out \
                   to measure no accuracy"
                .into(),
        },
        DataError::LabelsInNpy { labels, .. } => TuneError::Flag {
            flag: "--labels",
            message: format!("{} is a .npy file, which cannot hold `{labels}`", path.display()),
            hint: "save the inputs and labels together with numpy.savez, or leave --labels out"
                .into(),
        },
        DataError::ExtraArrays { extra, inputs, .. } => {
            let message = format!(
                "{} holds arrays the model does not take: {}; the model's inputs are: {}",
                path.display(),
                extra.join(", "),
                inputs.join(", ")
            );
            let hint = match (flag, labels, extra.as_slice()) {
                ("--data", None, [one]) => format!(
                    "if `{one}` holds the labels, pass --labels {one} (top-1 accuracy is then \
                     measured); otherwise remove it from the file"
                ),
                ("--data", None, _) => "pass --labels NAME for the array that holds the \
                                        labels, and remove the others from the file"
                    .into(),
                ("--data", Some(_), _) => "remove them from the file".into(),
                _ => format!("{flag} takes one array per model input and nothing else"),
            };
            TuneError::Flag { flag, message, hint }
        }
        other => TuneError::Data { flag, source: Box::new(other) },
    };
    let data = Dataset::load(path, labels, None).map_err(data_error)?;
    data.check_inputs(inputs).map_err(data_error)?;
    data.check_finite(flag == "--calibration").map_err(data_error)?;
    Ok(data)
}

/// Loads ONNX Runtime, checks the cache folder, and, unless `--no-measure` was given,
/// refuses a target this host cannot measure.
fn check_host(target: Target, options: &RunOptions) -> Result<(), TuneError> {
    crate::runtime::init(options.ort_lib.as_deref()).map_err(RunError::from)?;
    if let Some(dir) = &options.cache_dir {
        crate::cache::Cache::open(dir).map_err(RunError::from)?;
    }
    if options.no_measure {
        return Ok(());
    }
    let available = crate::runtime::available_providers().map_err(RunError::from)?;
    let check = crate::target::measurability(target, &available, &HostCpu::detect());
    match check.reason {
        Some(reason) => Err(TuneError::TargetUnavailable { target, reason }),
        None => Ok(()),
    }
}

/// The target's built-in recipe with the request's model, data and output filled in, paths
/// relative to the folder of `recipe_path`, which need not exist yet.
fn recipe_text(
    request: &TuneRequest,
    target: Target,
    recipe_path: &Path,
    shapes: &[(String, Vec<i64>)],
    opset: Option<i64>,
) -> Result<String, TuneError> {
    let output = absolute(&request.output)
        .map_err(|source| TuneError::Write { path: request.output.clone(), source })?;
    let relative = |path: &Path| -> Result<String, TuneError> {
        let absolute = path
            .canonicalize()
            .map_err(|source| TuneError::Write { path: path.to_path_buf(), source })?;
        Ok(quoted(&relative_path(&output, &absolute)))
    };

    let stem = request.model.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
    let mut data = vec!["data:".to_string()];
    if let Some(calibration) = &request.calibration {
        data.push(format!("  calibration: {{path: {}}}", relative(calibration)?));
    }
    let labels = match &request.labels {
        Some(labels) => format!(", labels: {}", quoted(labels)),
        None => String::new(),
    };
    data.push(format!("  evaluation: {{path: {}{labels}}}", relative(&request.data)?));

    let text = resolve(
        target.profile().recipe,
        &Replacements {
            name: format!("name: {}", quoted(&format!("tune-{}-{stem}", target))),
            model: format!("model: {}", relative(&request.model)?),
            data: data.join("\n"),
            output: "output: .".to_string(),
            calibration: request.calibration.is_some(),
            labels: request.labels.is_some(),
            shapes,
            opset,
        },
    );
    let header = format!(
        "{HEADER_START} from the built-in recipe for `{target}`; edit it and \
         rerun\n# with `pipeline run {}`.\n",
        recipe_path.display()
    );
    Ok(format!("{header}{text}"))
}

/// A label error of the recipe tune wrote, told as the `--labels` flag's.
fn labels_flag_error(error: EvalError) -> TuneError {
    match error {
        EvalError::BadLabels { data, array, problem } => TuneError::Flag {
            flag: "--labels",
            message: format!("`{array}` in {} {problem}", data.display()),
            hint: "pass --labels the array of integer class indices, one per sample, or leave \
                   --labels out to judge candidates by fidelity"
                .into(),
        },
        other => TuneError::Run(Box::new(RunError::Labels(Box::new(other)))),
    }
}

/// `path` made absolute with its links resolved, where the part that does not exist yet is
/// taken as written (`..` climbing out of it).
fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    let full = std::path::absolute(path)?;
    let parts: Vec<Component> = full.components().collect();
    for split in (1..=parts.len()).rev() {
        let existing: PathBuf = parts[..split].iter().collect();
        let Ok(mut resolved) = existing.canonicalize() else { continue };
        for part in &parts[split..] {
            match part {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::CurDir => {}
                other => resolved.push(other),
            }
        }
        return Ok(resolved);
    }
    Ok(full)
}

/// What replaces the template's blocks and marked lines.
struct Replacements<'a> {
    name: String,
    model: String,
    data: String,
    output: String,
    calibration: bool,
    labels: bool,
    /// The shapes `fix_shapes` gives the inputs whose shape is not fixed.
    shapes: &'a [(String, Vec<i64>)],
    /// The model's opset of the default domain: below 13, static QDQ is per tensor only.
    opset: Option<i64>,
}

/// Marks the line of a template whose static `per_channel` search needs opset 13.
const PER_CHANNEL_MARK: &str = "tune: per-channel needs opset 13";

/// The template with its blocks replaced and its marked lines kept, dropped or filled in.
fn resolve(template: &str, with: &Replacements<'_>) -> String {
    let mut out = Vec::new();
    let mut block: Option<&str> = None;
    for line in template.lines() {
        let top_key = (!line.starts_with([' ', '#', '-']) && !line.is_empty())
            .then(|| line.split(':').next().unwrap_or_default());
        if let Some(key) = top_key {
            block = Some(key);
            let replacement = match key {
                "name" => Some(&with.name),
                "model" => Some(&with.model),
                "data" => Some(&with.data),
                "output" => Some(&with.output),
                _ => None,
            };
            if let Some(replacement) = replacement {
                out.push(replacement.clone());
                continue;
            }
        } else if matches!(block, Some("name" | "model" | "data" | "output")) {
            // Inside a replaced block: its old lines go.
            if line.starts_with(' ') {
                continue;
            }
        }
        if line.starts_with('#') && out.is_empty() {
            continue; // the template's own header; tune writes its own
        }
        if !with.calibration && line.contains("# needs calibration") {
            continue;
        }
        if !with.labels && block == Some("metrics") && line.trim_start().starts_with("accuracy:") {
            // Without labels, a candidate is judged by how closely it follows the model.
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push(format!("{indent}{FIDELITY_GOAL}"));
            continue;
        }
        if line.contains(PER_CHANNEL_MARK) && with.opset.is_some_and(|opset| opset < 13) {
            // Searching it would only add candidates that fail on the model's opset.
            out.push(line.replace("per_channel: [false, true]", "per_channel: false"));
            continue;
        }
        if line.contains("# tune: dims") {
            if with.shapes.is_empty() {
                continue;
            }
            let indent = &line[..line.len() - line.trim_start().len()];
            let shapes: Vec<String> = with
                .shapes
                .iter()
                .map(|(name, shape)| format!("{}: {shape:?}", quoted(name)))
                .collect();
            out.push(format!("{indent}- fix_shapes: {{inputs: {{{}}}}}", shapes.join(", ")));
            continue;
        }
        out.push(line.to_string());
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// The shape to fix for each model input whose shape is not fixed (a symbolic, unknown or
/// -1 dimension): one sample of the evaluation data, `[1, ...]`, so that an NPU target gets
/// the sizes the model is measured at rather than 1 for every free dimension.
fn static_input_shapes(model: &ir::proto::ModelProto, data: &Dataset) -> Vec<(String, Vec<i64>)> {
    let arrays = data.inputs();
    let mut shapes = Vec::new();
    for input in crate::runtime::IoInfo::model_inputs(model) {
        let fixed = input.shape.iter().all(|dim| dim.is_some_and(|size| size > 0));
        if fixed && !input.shape.is_empty() {
            continue;
        }
        // A `.npy` file's one array is named after the file; it feeds the one input.
        let array = arrays.iter().find(|(name, _)| *name == input.name).or(match arrays {
            [only] => Some(only),
            _ => None,
        });
        let Some((_, array)) = array else { continue };
        let sample = array.shape().iter().skip(1).map(|&size| size as i64);
        shapes.push((input.name.clone(), std::iter::once(1).chain(sample).collect()));
    }
    shapes
}

/// `text` as a YAML double-quoted string (JSON's quoting is valid YAML).
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// `to` relative to the folder `from`; both absolute.
fn relative_path(from: &Path, to: &Path) -> String {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_and_descend() {
        let rel = |a: &str, b: &str| relative_path(Path::new(a), Path::new(b));
        assert_eq!(rel("/a/b/out", "/a/b/model.onnx"), "../model.onnx");
        assert_eq!(rel("/a/out", "/a/out/x.npz"), "x.npz");
        assert_eq!(rel("/a/b/c", "/a/d/e.onnx"), "../../d/e.onnx");
    }

    fn resolved(
        target: Target,
        calibration: bool,
        labels: bool,
        shapes: &[(String, Vec<i64>)],
    ) -> String {
        resolve(
            target.profile().recipe,
            &Replacements {
                name: "name: \"t\"".into(),
                model: "model: \"../m.onnx\"".into(),
                data: "data:\n  evaluation: {path: \"e.npz\"}".into(),
                output: "output: .".into(),
                calibration,
                labels,
                shapes,
                opset: Some(17),
            },
        )
    }

    #[test]
    fn every_built_in_recipe_resolves_to_a_valid_recipe() {
        for target in Target::all() {
            let calibrated = target.profile().constraints.contains(&Constraint::QdqOnly);
            let mut text = resolved(target, calibrated, false, &[("x".into(), vec![1, 4])]);
            if calibrated {
                text = text.replace("data:\n", "data:\n  calibration: {path: \"c.npz\"}\n");
            }
            let recipe = crate::recipe::parse(&text, Path::new("out/recipe.yaml"))
                .unwrap_or_else(|e| panic!("{target}: {e}\n{text}"));
            assert_eq!(recipe.target, target);
            assert_eq!(recipe.model, Path::new("../m.onnx"));
            let accuracy = recipe.metrics.accuracy.as_ref();
            let kind = accuracy.map(|a| a.kind);
            assert_eq!(kind, Some(crate::recipe::AccuracyKind::Fidelity), "{target}: no labels");
            assert!(recipe.data.calibration.is_some() == calibrated, "{target}");
            assert!(!text.contains("needs calibration") || calibrated, "{target}:\n{text}");
        }
    }

    #[test]
    fn without_calibration_the_calibrated_branch_goes() {
        let text = resolved(Target::Cpu, false, true, &[]);
        assert!(!text.contains("quantize_static"), "{text}");
        assert!(text.contains("quantize_dynamic") && text.contains("accuracy:"), "{text}");
        let with = resolved(Target::Cpu, true, true, &[]);
        assert!(with.contains("quantize_static"), "{with}");
    }

    /// Per-channel QDQ needs opset 13: below it, the static branch searches per tensor only
    /// (the OCR classifier, at opset 11, had its per-channel candidates all fail).
    #[test]
    fn static_per_channel_is_searched_only_from_opset_13() {
        let with = |opset| {
            resolve(
                Target::Cpu.profile().recipe,
                &Replacements {
                    name: "name: \"t\"".into(),
                    model: "model: \"../m.onnx\"".into(),
                    data: "data:\n  calibration: {path: \"c.npz\"}\n  evaluation: {path: \
                           \"e.npz\", labels: y}"
                        .into(),
                    output: "output: .".into(),
                    calibration: true,
                    labels: true,
                    shapes: &[],
                    opset: Some(opset),
                },
            )
        };
        let old = with(11);
        assert!(old.contains("          per_channel: false  # needs calibration"), "{old}");
        assert!(old.contains("quantize_dynamic: {per_channel: [false, true]}"), "{old}");
        let new = with(13);
        assert!(new.contains("          per_channel: [false, true]  # needs calib"), "{new}");
        crate::recipe::parse(&old, Path::new("out/recipe.yaml")).expect("a valid recipe");
    }

    #[test]
    fn fix_shapes_takes_one_sample_of_the_data() {
        let shapes = [("x".to_string(), vec![1, 3, 48, 192]), ("mask".to_string(), vec![1, 7])];
        let text = resolved(Target::NpuQnn, true, false, &shapes);
        let line = "- fix_shapes: {inputs: {\"x\": [1, 3, 48, 192], \"mask\": [1, 7]}}";
        assert!(text.contains(line), "{text}");
        let none = resolved(Target::NpuQnn, true, false, &[]);
        assert!(!none.contains("fix_shapes"), "{none}");
    }
}
