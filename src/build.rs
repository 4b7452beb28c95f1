//! Builds candidates' models: runs their steps, shares prefixes between candidates, reads and
//! writes the step cache on disk, and builds independent branches of the plan in parallel.
//!
//! A step's cache key covers everything its output depends on: the input model's bytes, the
//! pass's name and version, its configuration (JSON with sorted keys, as the recipe gives it;
//! defaults are not filled in, so a configuration that spells out a default is another entry
//! and a miss, never a wrong hit), the calibration data file's content when the pass
//! calibrates, the ONNX Runtime version when the pass runs ONNX Runtime, and this crate's
//! version. Steps that fail are not cached (a failure may not happen again); steps that change
//! nothing are, with their reason.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pipeline_passes::convert::ort_optimize::OrtOptimize;
use pipeline_passes::export::Export;
use pipeline_passes::ir::proto::ModelProto;
use pipeline_passes::ir::IrError;
use pipeline_passes::pass::{
    Artifact, ArtifactSink, Configured, ModelRunner, PassContext, PassError, Runtime,
};
use prost::Message;
use rayon::prelude::*;
use serde_json::json;
use tracing::{debug, debug_span, info, warn};

use crate::cache::{hash_model, Cache, Entry, Key, KeyBuilder};
use crate::calibrate::OrtRunner;
use crate::plan::{Candidate, StepRef};
use crate::runtime::OrtOptimizer;

/// What the step cache's keys hold besides the step and its input.
#[derive(Debug, Clone)]
pub struct StepCache {
    pub cache: Cache,
    /// The hash of the calibration data file's content and the number of samples used, when
    /// the recipe has calibration data.
    pub calibration: Option<(blake3::Hash, Option<usize>)>,
    /// The ONNX Runtime version that calibrates and optimizes.
    pub ort_version: String,
}

impl StepCache {
    /// The key of `step` run on the model whose bytes hash to `input`.
    fn key(&self, input: &blake3::Hash, step: &StepRef) -> Key {
        let mut key = KeyBuilder::new("step");
        key.field("crate", env!("CARGO_PKG_VERSION").as_bytes())
            .field("input", input.as_bytes())
            .field("pass", step.pass.as_bytes())
            .field("config", step.config.to_string().as_bytes())
            .field("runtime", b"onnxruntime contrib operators allowed");
        let info = pipeline_passes::pass::find(&step.pass);
        key.field("version", &info.map_or(0, |i| i.version).to_le_bytes());

        let calibrates = info.is_some_and(|info| {
            info.needs_calibration(|name| step.config.get(name).map(std::slice::from_ref))
        });
        if calibrates {
            if let Some((data, samples)) = &self.calibration {
                key.field("calibration", data.as_bytes())
                    .field("samples", format!("{samples:?}").as_bytes());
            }
        }
        // The ORT format is ONNX Runtime's to write, and may differ between its versions.
        let ort_format = step.pass == <Export as Configured>::NAME
            && step.config.get("format").and_then(|f| f.as_str()) == Some("ort");
        if calibrates || ort_format || step.pass == <OrtOptimize as Configured>::NAME {
            key.field("ort", self.ort_version.as_bytes());
        }
        key.finish()
    }
}

/// Runs passes, remembering the model after each distinct prefix of steps so that
/// candidates that share a prefix build it once. Passes that calibrate run models on
/// `calibration`; passes that call ONNX Runtime's graph optimizer use `optimizer`.
pub struct Builder {
    source: Arc<ModelProto>,
    /// The hash of the source model's bytes, when steps are cached.
    source_hash: Option<blake3::Hash>,
    calibration: Option<OrtRunner>,
    optimizer: OrtOptimizer,
    built: HashMap<String, Result<Built, StepFailure>>,
    store: Option<StepCache>,
    /// Steps whose model encodes to more bytes than this are run again rather than cached.
    max_cached_model: usize,
    /// The source's file, while the source's external data is set aside.
    set_aside: Option<PathBuf>,
    stop: Arc<AtomicBool>,
}

/// The largest model the step cache stores, in bytes. A cache entry is written and read
/// whole, in memory, so a larger model would cost its size again (or more) in memory each
/// way; such a step runs again in the next run instead.
// TODO: stream entries to and from their files (with the model's tensors as external data)
// so that large models can be cached without that memory.
pub const MAX_CACHED_MODEL: usize = 256 << 20;

/// The runtime the engine asks every pass to make its models for, in building and in the
/// checks before a run (`quantize_weights`' `format: auto` follows it).
pub const PASS_RUNTIME: Runtime = Runtime::OnnxRuntime;

/// A candidate's model after some of its steps.
#[derive(Debug, Clone)]
pub struct Built {
    pub model: Arc<ModelProto>,
    /// The hash of the model's bytes, when steps are cached.
    pub hash: Option<blake3::Hash>,
    /// Whether some step changed the model or made an artifact; if none did, the candidate
    /// is the source.
    pub changed: bool,
    /// Why each step that changed nothing did not (`pass: reason`).
    pub unchanged_steps: Vec<String>,
    /// The files steps made beside the model, one per extension (a later step's replaces an
    /// earlier one's).
    pub artifacts: Vec<Arc<Artifact>>,
    /// For each step so far, whether its result was read from the cache instead of run.
    pub cached: Vec<bool>,
    /// Seconds the steps so far took to run or to read from the cache.
    pub seconds: f64,
}

/// Keeps the artifacts one step makes.
#[derive(Default)]
struct Collector(Mutex<Vec<Artifact>>);

impl ArtifactSink for Collector {
    fn add(&self, artifact: Artifact) {
        // A poisoned lock means a pass panicked while adding; its step fails anyway.
        if let Ok(mut artifacts) = self.0.lock() {
            artifacts.push(artifact);
        }
    }
}

impl Collector {
    fn into_artifacts(self) -> Vec<Artifact> {
        self.0.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `earlier` with `made` added, each replacing an earlier artifact of its extension.
fn with_artifacts(earlier: &[Arc<Artifact>], made: Vec<Artifact>) -> Vec<Arc<Artifact>> {
    let mut artifacts = earlier.to_vec();
    for artifact in made {
        artifacts.retain(|a| a.extension != artifact.extension);
        artifacts.push(Arc::new(artifact));
    }
    artifacts
}

/// The memo keys of each prefix of `candidate`'s steps, shortest first.
fn prefix_keys(candidate: &Candidate) -> Vec<String> {
    step_keys(&candidate.steps)
}

/// The memo keys of each prefix of `steps`, shortest first.
fn step_keys(steps: &[StepRef]) -> Vec<String> {
    let mut key = String::new();
    let mut keys = Vec::with_capacity(steps.len());
    for step in steps {
        key.push_str(&format!("/{}{}", step.pass, step.config));
        keys.push(key.clone());
    }
    keys
}

impl Builder {
    pub fn new(
        source: Arc<ModelProto>,
        calibration: Option<OrtRunner>,
        optimizer: OrtOptimizer,
    ) -> Self {
        Self {
            source,
            source_hash: None,
            calibration,
            optimizer,
            built: HashMap::new(),
            store: None,
            max_cached_model: MAX_CACHED_MODEL,
            set_aside: None,
            stop: Arc::default(),
        }
    }

    /// Reads steps from `store` and writes them to it.
    pub fn with_cache(mut self, store: StepCache) -> Self {
        self.source_hash = Some(hash_model(&self.source));
        self.store = Some(store);
        self
    }

    /// Starts no step once `stop` is set.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    /// Lets go of the source's tensor data stored in external files beside `path` (the file
    /// the source was read from), keeping their references, so that ONNX Runtime's copy of a
    /// model it measures does not stand beside this one. The next build that needs the
    /// source reads the data again. A model without external data is kept whole.
    pub fn set_aside_source(&mut self, path: &Path) -> Result<(), IrError> {
        if self.set_aside.is_some() {
            return Ok(());
        }
        let graph = pipeline_passes::ir::load_graph(path)?;
        if !pipeline_passes::ir::has_external_data(&graph) {
            return Ok(());
        }
        self.source = Arc::new(graph);
        self.set_aside = Some(path.to_path_buf());
        debug!("the source's external data is set aside");
        Ok(())
    }

    /// Reads the source's external data back after [`Builder::set_aside_source`]. When steps
    /// are cached, the model read must hash as the one set aside did.
    fn restore_source(&mut self) -> Result<(), StepFailure> {
        let Some(path) = self.set_aside.take() else {
            return Ok(());
        };
        let failed = |reason: String| {
            StepFailure::failed(format!(
                "reading the source model {} again: {reason}",
                path.display()
            ))
        };
        let model = pipeline_passes::ir::load(&path).map_err(|e| failed(e.to_string()))?;
        if self.source_hash.is_some_and(|hash| hash_model(&model) != hash) {
            return Err(failed(
                "the model or its data file changed during the run; hint: leave them alone \
                 while a run uses them"
                    .into(),
            ));
        }
        self.source = Arc::new(model);
        debug!("the source's external data is read again");
        Ok(())
    }

    /// Whether building `steps` starts from the source: some prefix is not built yet.
    fn needs_source(&self, steps: &[StepRef]) -> bool {
        steps.is_empty() || step_keys(steps).iter().any(|key| !self.built.contains_key(key))
    }

    /// The hash of the source model's bytes, when steps are cached.
    pub fn source_hash(&self) -> Option<blake3::Hash> {
        self.source_hash
    }

    fn start(&self) -> Built {
        Built {
            model: Arc::clone(&self.source),
            hash: self.source_hash,
            changed: false,
            unchanged_steps: Vec::new(),
            artifacts: Vec::new(),
            cached: Vec::new(),
            seconds: 0.0,
        }
    }

    /// The model after all of `candidate`'s steps, or why a step failed. A step that finds
    /// nothing to rewrite passes the model on to the next step; the candidate is unchanged
    /// only when every step was.
    pub fn build(&mut self, candidate: &Candidate) -> Result<Built, StepFailure> {
        let built = self.build_steps(&candidate.steps)?;
        if !built.changed {
            return Err(StepFailure { reason: built.unchanged_steps.join("; "), unchanged: true });
        }
        Ok(built)
    }

    /// The model after `steps` (the source model when there are none), even when no step
    /// changed it, or why a step failed. Shares prefixes and the cache with [`Builder::build`].
    pub fn build_steps(&mut self, steps: &[StepRef]) -> Result<Built, StepFailure> {
        if self.needs_source(steps) {
            self.restore_source()?;
        }
        let mut built = self.start();
        for (step, key) in steps.iter().zip(step_keys(steps)) {
            if let Some(done) = self.built.get(&key) {
                built = done.clone()?;
                continue;
            }
            let result = self.step(&built, step);
            // A step that was never started is not remembered: a later run may start it.
            if !self.stopped() {
                self.built.insert(key, result.clone());
            }
            built = result?;
        }
        Ok(built)
    }

    /// Builds every step of `candidates` ahead of measuring them, so that [`Builder::build`]
    /// finds them done: the steps at the same depth of the plan run at once on rayon's
    /// threads, each prefix once. Nothing is measured meanwhile.
    // TODO: every built prefix stays in memory until the run ends; a bound on the bytes held
    // would let large models build ahead without running out of memory.
    pub fn build_all(&mut self, candidates: &[&Candidate]) {
        let depth = candidates.iter().map(|c| c.steps.len()).max().unwrap_or(0);
        if candidates.iter().any(|c| self.needs_source(&c.steps)) {
            if let Err(failure) = self.restore_source() {
                // Each candidate's own build meets the failure again and reports it.
                warn!("{}", failure.reason);
                return;
            }
        }
        for level in 0..depth {
            if self.stopped() {
                return;
            }
            let mut seen = HashSet::new();
            let mut todo = Vec::new();
            for candidate in candidates {
                let keys = prefix_keys(candidate);
                let Some(key) = keys.get(level) else { continue };
                if self.built.contains_key(key) || !seen.insert(key.clone()) {
                    continue;
                }
                let parent = match level {
                    0 => self.start(),
                    _ => match self.built.get(&keys[level - 1]) {
                        Some(Ok(parent)) => parent.clone(),
                        _ => continue,
                    },
                };
                todo.push((key.clone(), parent, &candidate.steps[level]));
            }

            let this = &*self;
            let results: Vec<_> = todo
                .into_par_iter()
                .map(|(key, parent, step)| (key, this.step(&parent, step)))
                .collect();
            if self.stopped() {
                return;
            }
            self.built.extend(results);
        }
    }

    /// The model's bytes for its cache entry, or `None` (logged) when it is larger than
    /// [`Builder::max_cached_model`].
    fn cacheable(&self, step: &StepRef, model: &ModelProto) -> Option<Vec<u8>> {
        let size = model.encoded_len();
        if size > self.max_cached_model {
            info!(
                "{}: not cached: its model takes {size} bytes, more than the cache stores ({})",
                step.label(),
                self.max_cached_model
            );
            return None;
        }
        Some(model.encode_to_vec())
    }

    /// Stores no step whose model encodes to more than `bytes` (default
    /// [`MAX_CACHED_MODEL`]).
    pub fn with_max_cached_model(mut self, bytes: usize) -> Self {
        self.max_cached_model = bytes;
        self
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs `step` on `built`'s model, or reads its result from the cache.
    fn step(&self, built: &Built, step: &StepRef) -> Result<Built, StepFailure> {
        if self.stopped() {
            return Err(StepFailure::failed("stopped (Ctrl-C) before this step ran".into()));
        }
        let started = Instant::now();
        let key = self.store.as_ref().zip(built.hash).map(|(store, hash)| store.key(&hash, step));
        if let (Some(store), Some(key)) = (&self.store, &key) {
            if let Some(mut next) = load_step(&store.cache, key, built) {
                info!("{}: cached", step.label());
                next.seconds += started.elapsed().as_secs_f64();
                return Ok(next);
            }
        }

        let collector = Collector::default();
        let context = PassContext {
            calibration: self.calibration.as_ref().map(|runner| runner as &dyn ModelRunner),
            runtime: PASS_RUNTIME,
            optimizer: Some(&self.optimizer),
            artifacts: Some(&collector),
        };
        let mut next = built.clone();
        next.cached.push(false);
        let stored = match run_step(&step.pass, &step.config, &built.model, &context) {
            Ok(model) => {
                next.hash = self.store.is_some().then(|| hash_model(&model));
                let bytes = self.store.is_some().then(|| self.cacheable(step, &model)).flatten();
                next.model = model;
                next.changed = true;
                // The entry holds only this step's artifacts: an earlier step's belong to
                // the prefix, which the key does not cover.
                let made = collector.into_artifacts();
                let entry = bytes.map(|bytes| changed_entry(step, bytes, &made));
                next.artifacts = with_artifacts(&built.artifacts, made);
                entry
            }
            Err(failure) if failure.unchanged => {
                let entry = Entry {
                    label: step.pass.clone(),
                    meta: json!({"outcome": "unchanged", "reason": failure.reason}),
                    blobs: Vec::new(),
                };
                next.unchanged_steps.push(failure.reason);
                Some(entry)
            }
            Err(failure) => return Err(failure),
        };
        next.seconds += started.elapsed().as_secs_f64();

        if let (Some(store), Some(key), Some(entry)) = (&self.store, &key, stored) {
            if let Err(error) = store.cache.put(key, &entry) {
                warn!("the step cache was not written: {error}");
            }
        }
        Ok(next)
    }
}

/// The cache entry of a step that changed the model: the model's bytes, then each artifact's.
fn changed_entry(step: &StepRef, model: Vec<u8>, artifacts: &[Artifact]) -> Entry {
    let described: Vec<_> =
        artifacts.iter().map(|a| json!({"extension": a.extension, "summary": a.summary})).collect();
    let mut blobs = vec![model];
    blobs.extend(artifacts.iter().map(|a| a.bytes.clone()));
    Entry {
        label: step.pass.clone(),
        meta: json!({"outcome": "changed", "artifacts": described}),
        blobs,
    }
}

/// The result of a cached step applied to `built`, or `None` (with a warning) when the entry
/// is missing or does not decode.
fn load_step(cache: &Cache, key: &Key, built: &Built) -> Option<Built> {
    let entry = cache.get(key)?;
    let corrupt = |reason: &str| {
        warn!("the cache entry {} does not decode ({reason}); running the step", key.hex());
        None
    };
    let mut next = built.clone();
    next.cached.push(true);
    match entry.meta.get("outcome").and_then(|o| o.as_str()) {
        Some("unchanged") => {
            let Some(reason) = entry.meta.get("reason").and_then(|r| r.as_str()) else {
                return corrupt("no reason");
            };
            next.unchanged_steps.push(reason.to_string());
            Some(next)
        }
        Some("changed") => {
            let described = entry.meta.get("artifacts").and_then(|a| a.as_array());
            let Some(described) = described.filter(|d| d.len() + 1 == entry.blobs.len()) else {
                return corrupt("artifacts do not match the content");
            };
            let mut blobs = entry.blobs.into_iter();
            let bytes = blobs.next()?;
            let hash = blake3::hash(&bytes);
            // Decoded from a shared buffer, the model's tensors point into it: no copy.
            let Ok(model) = ModelProto::decode(prost::bytes::Bytes::from(bytes)) else {
                return corrupt("the model is no ONNX model");
            };
            let mut artifacts = Vec::new();
            for (description, bytes) in described.iter().zip(blobs) {
                let extension = description.get("extension").and_then(|e| e.as_str());
                let known = pipeline_passes::export::ARTIFACT_EXTENSIONS
                    .iter()
                    .find(|known| Some(**known) == extension);
                let summary = description.get("summary").and_then(|s| s.as_str());
                let (Some(extension), Some(summary)) = (known, summary) else {
                    return corrupt("an artifact of an unknown kind");
                };
                artifacts.push(Artifact { extension, bytes, summary: summary.to_string() });
            }
            next.hash = Some(hash);
            next.model = Arc::new(model);
            next.changed = true;
            next.artifacts = with_artifacts(&built.artifacts, artifacts);
            Some(next)
        }
        _ => corrupt("no outcome"),
    }
}

/// Why a step gave no model.
#[derive(Debug, Clone)]
pub struct StepFailure {
    pub reason: String,
    /// The pass found nothing to rewrite ([`PassError::Unchanged`]): not an error of the pass,
    /// but the candidate would be the source model under another name.
    pub unchanged: bool,
}

impl StepFailure {
    fn failed(reason: String) -> Self {
        StepFailure { reason, unchanged: false }
    }
}

/// Runs one pass, turning an error or a panic inside it into a reason.
fn run_step(
    pass: &str,
    config: &serde_json::Value,
    model: &Arc<ModelProto>,
    context: &PassContext,
) -> Result<Arc<ModelProto>, StepFailure> {
    let _span = debug_span!("pass", pass).entered();
    let info = pipeline_passes::pass::find(pass)
        .ok_or_else(|| StepFailure::failed(format!("unknown pass `{pass}`")))?;
    let built = (info.build)(config).map_err(|e| StepFailure::failed(e.to_string()))?;
    let input = ModelProto::clone(model);
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| built.run(input, context)));
    match result {
        Ok(Ok(model)) => Ok(Arc::new(model)),
        Ok(Err(error)) => Err(StepFailure {
            unchanged: matches!(error, PassError::Unchanged { .. }),
            reason: error.to_string(),
        }),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(StepFailure::failed(format!("pass `{pass}` crashed: {message}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Threads;

    /// The digits model and a plan of four candidates: fuse, then one of dynamic quantization
    /// (two ways) or float16, then float16 again or not; no step needs ONNX Runtime.
    fn digits_plan(dir: &std::path::Path) -> (Arc<ModelProto>, crate::plan::Plan) {
        let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/digits/model.onnx");
        let recipe = format!(
            "name: t\nmodel: {model}\ntarget: cpu\nmetrics: {{size: {{}}}}\nobjective: [size]\npasses:\n  - fuse: {{}}\n  \
             - one_of:\n      - quantize_dynamic: {{per_channel: [false, true]}}\n      \
             - convert_fp16: {{keep_io_types: [false, true]}}\n"
        );
        let path = dir.join("recipe.yaml");
        std::fs::write(&path, recipe).unwrap();
        let recipe = crate::recipe::load(&path).unwrap();
        let plan = crate::plan::build(&recipe).unwrap();
        let source = pipeline_passes::ir::load(std::path::Path::new(model)).unwrap();
        (Arc::new(source), plan)
    }

    fn builder(source: &Arc<ModelProto>) -> Builder {
        Builder::new(Arc::clone(source), None, OrtOptimizer::new(Threads::default()))
    }

    /// Each candidate's model bytes, or its failure.
    fn bytes(builder: &mut Builder, candidates: &[Candidate]) -> Vec<Result<Vec<u8>, String>> {
        let build = |c| builder.build(c).map(|b| b.model.encode_to_vec()).map_err(|f| f.reason);
        candidates.iter().map(build).collect()
    }

    #[test]
    fn parallel_build_equals_sequential_build() {
        let dir = tempfile::tempdir().unwrap();
        let (source, plan) = digits_plan(dir.path());
        let candidates = plan.candidates();
        assert_eq!(candidates.len(), 4, "{}", plan.render());

        let sequential = bytes(&mut builder(&source), candidates);
        let mut parallel = builder(&source);
        parallel.build_all(&candidates.iter().collect::<Vec<_>>());
        assert_eq!(parallel.built.len(), 5, "fuse once, then four branches");
        let parallel = bytes(&mut parallel, candidates);
        assert_eq!(parallel, sequential);
        assert!(sequential.iter().all(|r| r.is_ok()), "{sequential:?}");
        // The candidates differ, so equal lists are no accident of one model.
        let distinct: HashSet<_> = sequential.iter().map(|r| r.as_ref().unwrap()).collect();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn a_second_builder_reads_every_step_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (source, plan) = digits_plan(dir.path());
        let store = StepCache {
            cache: Cache::open(&dir.path().join("cache")).unwrap(),
            calibration: None,
            ort_version: "test".into(),
        };
        let candidates = plan.candidates();
        let mut first = builder(&source).with_cache(store.clone());
        first.build_all(&candidates.iter().collect::<Vec<_>>());
        let expected = bytes(&mut first, candidates);
        assert_eq!(store.cache.list().unwrap().len(), 5);

        let mut second = builder(&source).with_cache(store.clone());
        for candidate in candidates {
            let built = second.build(candidate).unwrap();
            assert_eq!(built.cached, vec![true, true], "{}", candidate.label());
            assert_eq!(built.hash, Some(blake3::hash(&built.model.encode_to_vec())));
        }
        assert_eq!(bytes(&mut second, candidates), expected);

        // Another weight is another input: nothing is found.
        let mut changed = ModelProto::clone(&source);
        let graph = changed.graph.as_mut().unwrap();
        let weight = graph.initializer.iter_mut().find(|t| !t.raw_data().is_empty()).unwrap();
        let mut flipped = weight.raw_data().to_vec();
        flipped[0] ^= 0x40;
        weight.raw_data = Some(flipped.into());
        let mut third = builder(&Arc::new(changed)).with_cache(store);
        let built = third.build(&candidates[0]).unwrap();
        assert_eq!(built.cached, vec![false, false]);
    }

    #[test]
    fn a_model_above_the_cache_limit_is_built_again() {
        let dir = tempfile::tempdir().unwrap();
        let (source, plan) = digits_plan(dir.path());
        let store = StepCache {
            cache: Cache::open(&dir.path().join("cache")).unwrap(),
            calibration: None,
            ort_version: "test".into(),
        };
        let candidates = plan.candidates();
        let mut first = builder(&source).with_cache(store.clone()).with_max_cached_model(0);
        let expected = bytes(&mut first, candidates);

        let mut second = builder(&source).with_cache(store);
        for candidate in candidates {
            let built = second.build(candidate).unwrap();
            assert_eq!(built.cached.last(), Some(&false), "{}", candidate.label());
            assert_eq!(built.hash, Some(blake3::hash(&built.model.encode_to_vec())));
        }
        assert_eq!(bytes(&mut second, candidates), expected);
    }

    #[test]
    fn a_stopped_builder_starts_no_step() {
        let dir = tempfile::tempdir().unwrap();
        let (source, plan) = digits_plan(dir.path());
        let stop = Arc::new(AtomicBool::new(true));
        let mut stopped = builder(&source).with_stop(stop);
        stopped.build_all(&plan.candidates().iter().collect::<Vec<_>>());
        assert!(stopped.built.is_empty());
        let failure = stopped.build(&plan.candidates()[0]).unwrap_err();
        assert!(failure.reason.contains("stopped"), "{}", failure.reason);
        assert!(stopped.built.is_empty());
    }
}
