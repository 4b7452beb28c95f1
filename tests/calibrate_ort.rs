//! Calibration against ONNX Runtime's own calibrators: the same model, the same samples fed
//! one at a time, the same options; every range must be the same float32, bit for bit.
//!
//! The model (built here with the IR) has a Conv, a Relu, a Reshape, a MatMul, an Add and a
//! Softmax; the data has outliers and later samples reach further out than earlier ones, so
//! strides make histograms grow and merge. `scripts/reference/calibrate.py` runs ORT's
//! `create_calibrator` for every case in one Python process; our side runs
//! `pipeline_passes::quantize::calibrate::calibrate` through the engine's `OrtRunner`.

#[path = "common/paths.rs"]
mod paths;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::process::Command;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::NpzWriter;
use pipeline::calibrate::OrtRunner;
use pipeline::evaluate::Dataset;
use pipeline::runtime::{self, Threads};
use pipeline_passes::ir::proto::{GraphProto, ModelProto, OperatorSetIdProto};
use pipeline_passes::ir::{self, float_value_info, SaveOptions};
use pipeline_passes::quantize::calibrate::{
    calibrate, CalibrationMethod, CalibrationOptions, TensorRange,
};
use serde_json::{json, Value};

/// How many samples the calibration data holds.
const SAMPLES: usize = 12;

/// A deterministic source of test numbers.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    fn array(&mut self, shape: &[usize], scale: f64) -> ArrayD<f32> {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || (scale * self.normal()) as f32)
    }
}

/// `x [1,3,8,8] -> Conv -> c -> Relu -> r -> Reshape -> f [1,512] -> MatMul -> m -> Add -> a
/// -> Softmax -> y`, with `a` a graph output too.
fn model() -> ModelProto {
    let mut rng = Rng(11);
    let mut conv = ir::make_node("Conv", &["x", "W", "B"], &["c"], "conv");
    conv.attribute.push(ir::attr_ints("pads", &[1, 1, 1, 1]));
    let mut softmax = ir::make_node("Softmax", &["a"], &["y"], "softmax");
    softmax.attribute.push(ir::attr_int("axis", 1));

    let graph = GraphProto {
        name: Some("calibrate_ort".into()),
        node: vec![
            conv,
            ir::make_node("Relu", &["c"], &["r"], "relu"),
            ir::make_node("Reshape", &["r", "shape"], &["f"], "reshape"),
            ir::make_node("MatMul", &["f", "W2"], &["m"], "matmul"),
            ir::make_node("Add", &["m", "bias"], &["a"], "add"),
            softmax,
        ],
        initializer: vec![
            ir::tensor_from_f32("W", &rng.array(&[8, 3, 3, 3], 0.3)),
            ir::tensor_from_f32("B", &rng.array(&[8], 1.0)),
            ir::tensor_from_f32("W2", &rng.array(&[512, 10], 0.1)),
            ir::tensor_from_f32("bias", &rng.array(&[10], 1.0)),
            ir::tensor_from_i64("shape", &ndarray::arr1(&[1i64, -1]).into_dyn()),
        ],
        input: vec![float_value_info("x", &[1, 3, 8, 8])],
        output: vec![float_value_info("y", &[1, 10]), float_value_info("a", &[1, 10])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// Samples of `x` with outliers, each later sample reaching a little further out.
fn samples() -> ArrayD<f32> {
    let mut rng = Rng(5);
    let mut x = rng.array(&[SAMPLES, 3, 8, 8], 1.0);
    for (i, mut sample) in x.outer_iter_mut().enumerate() {
        sample.mapv_inplace(|v| v * (1.0 + i as f32 / 4.0));
    }
    x[[3, 0, 2, 2]] = 25.0;
    x[[7, 1, 5, 5]] = -40.0;
    x[[10, 2, 0, 7]] = 60.0;
    x
}

/// Every case: a name, our options, and the same settings as ORT's `extra_options`.
fn cases() -> Vec<(&'static str, CalibrationOptions, Value)> {
    use CalibrationMethod::{Entropy, MinMax, Percentile};
    let with = |method, edit: &dyn Fn(&mut CalibrationOptions)| {
        let mut options = CalibrationOptions::new(method);
        edit(&mut options);
        options
    };

    vec![
        ("minmax", with(MinMax, &|_| {}), json!({})),
        ("minmax_symmetric", with(MinMax, &|o| o.symmetric = true), json!({"symmetric": true})),
        (
            "minmax_moving_average",
            with(MinMax, &|o| o.moving_average = true),
            json!({"moving_average": true}),
        ),
        (
            "minmax_moving_average_strides",
            with(MinMax, &|o| {
                o.moving_average = true;
                o.averaging_constant = 0.3;
                o.stride = Some(4);
            }),
            json!({"moving_average": true, "averaging_constant": 0.3}),
        ),
        (
            "minmax_symmetric_strides",
            with(MinMax, &|o| {
                o.symmetric = true;
                o.stride = Some(3);
            }),
            json!({"symmetric": true}),
        ),
        ("percentile", with(Percentile, &|_| {}), json!({})),
        (
            "percentile_asymmetric",
            with(Percentile, &|o| {
                o.symmetric = false;
                o.percentile = 99.9;
            }),
            json!({"symmetric": false, "percentile": 99.9}),
        ),
        (
            "percentile_strides",
            with(Percentile, &|o| {
                o.num_bins = 256;
                o.percentile = 99.0;
                o.stride = Some(4);
            }),
            json!({"num_bins": 256, "percentile": 99.0}),
        ),
        (
            "percentile_asymmetric_strides",
            with(Percentile, &|o| {
                o.symmetric = false;
                o.num_bins = 300;
                o.percentile = 99.5;
                o.stride = Some(3);
            }),
            json!({"symmetric": false, "num_bins": 300, "percentile": 99.5}),
        ),
        ("entropy_ort_default_bins", with(Entropy, &|o| o.num_bins = 128), json!({})),
        ("entropy", with(Entropy, &|_| {}), json!({"num_bins": 2048, "num_quantized_bins": 128})),
        (
            "entropy_strides",
            with(Entropy, &|o| {
                o.num_bins = 301;
                o.num_quantized_bins = 64;
                o.stride = Some(4);
            }),
            json!({"num_bins": 301, "num_quantized_bins": 64}),
        ),
    ]
}

/// The ranges ORT's calibrators find for every case, keyed by case and tensor.
fn reference(dir: &Path, model: &Path, data: &Path) -> BTreeMap<String, BTreeMap<String, Value>> {
    let cases: Vec<Value> = cases()
        .into_iter()
        .map(|(name, options, extra)| {
            let method = serde_json::to_value(options.method).unwrap();
            json!({"name": name, "method": method, "extra_options": extra, "stride": options.stride})
        })
        .collect();
    let cases_path = dir.join("cases.json");
    std::fs::write(&cases_path, serde_json::to_string(&cases).unwrap()).unwrap();

    let report_path = dir.join("report.json");
    let output = Command::new(paths::venv_python())
        .arg(paths::root().join("scripts/reference/calibrate.py"))
        .args(["--model".as_ref(), model.as_os_str()])
        .args(["--data".as_ref(), data.as_os_str()])
        .args(["--cases".as_ref(), cases_path.as_os_str()])
        .args(["--workdir".as_ref(), dir.join("work").as_os_str()])
        .args(["--report".as_ref(), report_path.as_os_str()])
        .output()
        .expect("the venv's python runs");
    assert!(
        output.status.success(),
        "calibrate.py failed (run scripts/setup-test-env.sh if a module is missing):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let report: Value = serde_json::from_str(&std::fs::read_to_string(report_path).unwrap())
        .expect("the report is JSON");
    report["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(case, value)| {
            let tensors = value["tensors"].as_object().unwrap();
            (case.clone(), tensors.iter().map(|(t, v)| (t.clone(), v.clone())).collect())
        })
        .collect()
}

fn bits(range: &TensorRange) -> (u32, u32) {
    (range.min.to_bits(), range.max.to_bits())
}

#[test]
fn every_method_matches_ort_bit_for_bit() {
    runtime::init(Some(&paths::ort_library())).expect("onnx runtime loads");
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("model.onnx");
    let data_path = dir.path().join("calib.npz");
    let model = model();
    ir::save(&model, &model_path, &SaveOptions::default()).unwrap();
    let mut npz = NpzWriter::new(File::create(&data_path).unwrap());
    npz.add_array("x", &samples()).unwrap();
    npz.finish().unwrap();

    let expected = reference(dir.path(), &model_path, &data_path);
    let data = Dataset::load(&data_path, None, None).unwrap();
    let runner = OrtRunner::new(data, Threads::default());

    let mut mismatches = Vec::new();
    for (case, options, _) in cases() {
        let ort = &expected[case];
        let tensors: Vec<String> = ort.keys().cloned().collect();
        let wanted: BTreeSet<&str> = ["x", "c", "r", "f", "m", "a", "y"].into();
        assert_eq!(tensors.iter().map(String::as_str).collect::<BTreeSet<_>>(), wanted, "{case}");

        let ours = calibrate(&model, &tensors, &options, &runner)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        for (tensor, reference) in ort {
            let theirs = (
                reference["min_bits"].as_u64().unwrap() as u32,
                reference["max_bits"].as_u64().unwrap() as u32,
            );
            if bits(&ours[tensor]) != theirs {
                mismatches.push(format!(
                    "{case} {tensor}: ours [{}, {}], ORT's [{}, {}]",
                    ours[tensor].min, ours[tensor].max, reference["min"], reference["max"]
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "ranges differ from ORT's:\n{}", mismatches.join("\n"));
}

/// A runner whose stop flag is set (Ctrl-C) runs no further batch: a stopped run does not
/// wait for every calibration to finish. The same runner calibrates once the flag is clear.
#[test]
fn a_stopped_runner_runs_no_batch() {
    use pipeline_passes::pass::ModelRunner;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    runtime::init(Some(&paths::ort_library())).expect("onnx runtime loads");
    let dir = tempfile::tempdir().unwrap();
    let data_path = dir.path().join("calib.npz");
    let mut npz = NpzWriter::new(File::create(&data_path).unwrap());
    npz.add_array("x", &samples()).unwrap();
    npz.finish().unwrap();
    let data = Dataset::load(&data_path, None, None).unwrap();
    let stop = Arc::new(AtomicBool::new(true));
    let runner = OrtRunner::new(data, Threads::default()).with_stop(Arc::clone(&stop));

    let mut batches = 0;
    let outputs = ["y".to_string()];
    let error = runner
        .for_each_batch(&model(), &outputs, &mut |_, _| {
            batches += 1;
            Ok(())
        })
        .expect_err("a stopped runner gives up");
    assert!(error.to_string().contains("stopped (Ctrl-C)"), "{error}");
    assert_eq!(batches, 0);

    stop.store(false, Ordering::Relaxed);
    runner
        .for_each_batch(&model(), &outputs, &mut |_, _| {
            batches += 1;
            Ok(())
        })
        .expect("the runner calibrates once the flag is clear");
    assert_eq!(batches, runner.samples());
}
