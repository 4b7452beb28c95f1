//! A candidate too large for one protobuf is saved with its tensors in a data file, and the
//! winner's model and data file both land in the output folder. The size limit is lowered so
//! the digits model takes that path.

mod common;

use std::process::Command;

use common::{ort_library, venv_python, Project};
use pipeline::run::{run, RunOptions};

#[test]
fn a_large_winner_is_written_with_its_external_data() {
    let project = Project::digits();
    let options = RunOptions {
        ort_lib: Some(ort_library()),
        external_data_above: 0,
        ..RunOptions::default()
    };

    let report = run(&project.recipe(), &options).expect("the run succeeds");

    let best = report.best.clone().expect("a candidate met the goals");
    let model = project.path("out/model.onnx");
    let data = project.path("out/model.onnx.data");
    assert_eq!(report.output_model.as_deref(), Some(model.as_path()));
    assert!(data.is_file(), "no data file beside the best model");

    // The size counted for the winner is the model plus its data file.
    let on_disk =
        std::fs::metadata(&model).unwrap().len() + std::fs::metadata(&data).unwrap().len();
    let measured = report.candidate(&best).unwrap().measurement.as_ref().unwrap().size_bytes;
    assert_eq!(measured, on_disk);

    // The pair is a valid model for onnx and ONNX Runtime, and its weights are INT8.
    let check = Command::new(venv_python())
        .arg("-c")
        .arg(
            "import sys, onnx, onnxruntime as ort\n\
             m = onnx.load(sys.argv[1])\n\
             onnx.checker.check_model(sys.argv[1])\n\
             ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
             print(sum(1 for t in m.graph.initializer if t.data_type == 3))",
        )
        .arg(&model)
        .output()
        .expect("the venv's python runs");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let int8_weights: usize = String::from_utf8_lossy(&check.stdout).trim().parse().unwrap();
    assert!(int8_weights >= 4, "expected the four weights in int8, found {int8_weights}");

    // The work folder is gone: only the model, its data and the reports remain.
    let mut names: Vec<_> = std::fs::read_dir(project.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["model.onnx", "model.onnx.data", "report.json", "report.md"]);
}
