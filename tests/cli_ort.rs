//! Choosing ONNX Runtime's library for `pipeline run`: a flag or `ORT_DYLIB_PATH` that points
//! at nothing, or at a file that is not the library, is refused with exit code 2 and the path,
//! without a panic and before anything is written.

mod common;

use common::{outcome, Outcome, Project};

/// Runs `command`, expects exit code 2 naming `path`, and checks nothing was written.
fn refused(project: &Project, command: &mut assert_cmd::Command, path: &str) -> Outcome {
    let before = project.files();
    let result = outcome(command);
    result.expect_code(2).no_panic().stderr_has(&[path]);
    assert_eq!(project.files(), before, "a refused run changed the folder\n{}", result.stderr);
    result
}

#[test]
fn ort_lib_flag_that_does_not_exist() {
    let project = Project::digits();
    let missing = "/nonexistent/libonnxruntime.so";
    let mut command = project.pipeline();
    command.arg("run").arg(project.recipe()).arg("--ort-lib").arg(missing);
    refused(&project, &mut command, missing).stderr_has(&["--ort-lib"]);
}

#[test]
fn ort_lib_flag_naming_a_text_file() {
    let project = Project::digits();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, "not a shared library\n").expect("written");
    let mut command = project.pipeline();
    command.arg("run").arg(project.recipe()).arg("--ort-lib").arg(&fake);
    refused(&project, &mut command, &fake.display().to_string());
}

#[test]
fn ort_dylib_path_naming_a_text_file() {
    let project = Project::digits();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, "not a shared library\n").expect("written");
    let mut command = project.pipeline();
    command.arg("run").arg(project.recipe()).env("ORT_DYLIB_PATH", &fake);
    refused(&project, &mut command, &fake.display().to_string()).stderr_has(&["ORT_DYLIB_PATH"]);
}

#[test]
fn ort_dylib_path_that_does_not_exist() {
    let project = Project::digits();
    let missing = "/nonexistent/libonnxruntime.so";
    let mut command = project.pipeline();
    command.arg("run").arg(project.recipe()).env("ORT_DYLIB_PATH", missing);
    refused(&project, &mut command, missing).stderr_has(&["ORT_DYLIB_PATH"]);
}
