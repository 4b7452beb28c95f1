//! Ctrl-C (SIGINT) in the middle of a long latency measurement: the run stops within a
//! fraction of a second instead of finishing the measurement, exits 130, counts the candidate
//! being measured as not done, and leaves the output folder as it was. The time bounds are
//! generous: they only tell a stop between runs from one after the whole measurement.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{outcome, Project};

/// What a run stopped by SIGINT did.
struct Stopped {
    code: Option<i32>,
    stderr: String,
    /// From the signal to the process's exit.
    took: Duration,
}

/// Runs `project`'s recipe, sends SIGINT once a stderr line contains `marker`, and waits
/// for the exit.
fn interrupt_after(project: &Project, marker: &str) -> Stopped {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipeline"))
        .current_dir(project.root())
        .env_remove("PIPELINE_LOG")
        .env("PIPELINE_NO_CACHE", "1")
        .arg("run")
        .arg(project.recipe())
        .arg("--ort-lib")
        .arg(common::ort_library())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pipeline starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let mut seen = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).expect("stderr reads") > 0 {
        seen.push_str(&line);
        if line.contains(marker) {
            break;
        }
        line.clear();
    }
    assert!(seen.contains(marker), "the run ended before `{marker}`:\n{seen}");
    // Let the measurement get going past its first runs.
    std::thread::sleep(Duration::from_millis(300));
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    let signalled = Instant::now();
    // SAFETY: kill(2) on our own child's pid, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("stderr reads");
    let status = child.wait().expect("the run exits");
    seen.push_str(&rest);
    Stopped { code: status.code(), stderr: seen, took: signalled.elapsed() }
}

/// The digits recipe with `runs` latency runs.
fn project_with_runs(runs: usize) -> Project {
    let project = Project::digits();
    project.edit_recipe("warmup: 2, runs: 5", &format!("warmup: 2, runs: {runs}"));
    std::fs::create_dir(project.path("out")).expect("an output folder");
    std::fs::write(project.path("out/model.onnx"), b"an earlier model").expect("written");
    project
}

fn assert_left_as_it_was(project: &Project, stopped: &Stopped) {
    let out: Vec<String> = std::fs::read_dir(project.path("out"))
        .expect("the output folder is there")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(out, ["model.onnx"], "the run left files:\n{}", stopped.stderr);
    let model = std::fs::read(project.path("out/model.onnx")).expect("readable");
    assert_eq!(model, b"an earlier model");
}

#[test]
fn sigint_during_the_source_measurement_stops_at_once() {
    // Two million runs take about 40 s on the digits model: far past the bound below.
    let project = project_with_runs(2_000_000);
    let stopped = interrupt_after(&project, "measuring the source model");
    assert_eq!(stopped.code, Some(130), "{}", stopped.stderr);
    assert!(stopped.took < Duration::from_secs(10), "took {:?}:\n{}", stopped.took, stopped.stderr);
    assert!(stopped.stderr.contains("stopped: 0 of 2 candidates"), "{}", stopped.stderr);
    assert!(!stopped.stderr.contains("panicked"), "{}", stopped.stderr);
    assert_left_as_it_was(&project, &stopped);
}

#[test]
fn sigint_during_a_candidate_measurement_abandons_it() {
    // The source and c1 finish; c2's measurement is cut short and not counted as done.
    let project = project_with_runs(300_000);
    let stopped = interrupt_after(&project, "c1 quantize_dynamic");
    assert_eq!(stopped.code, Some(130), "{}", stopped.stderr);
    assert!(stopped.took < Duration::from_secs(10), "took {:?}:\n{}", stopped.took, stopped.stderr);
    assert!(stopped.stderr.contains("stopped: 1 of 2 candidates"), "{}", stopped.stderr);
    assert!(!stopped.stderr.contains("c2 quantize_dynamic"), "{}", stopped.stderr);
    assert_left_as_it_was(&project, &stopped);
}

/// A work folder left by a run that was quit at once (a second Ctrl-C) is named in a warning
/// by the next run in that output folder, and left alone: another run may own it.
#[test]
fn a_work_folder_left_behind_is_named_by_the_next_run() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - quantize_dynamic: {per_channel: false}\n",
    );
    let left = project.path("out/.pipeline-work-AbC123");
    std::fs::create_dir_all(&left).unwrap();

    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic().stderr_has(&[
        "1 work folder(s) of runs that were stopped at once: .pipeline-work-AbC123",
        "remove them unless another run",
    ]);
    assert!(left.is_dir(), "the folder was removed");
}
