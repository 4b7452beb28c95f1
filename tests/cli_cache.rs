//! The cache end to end: a second run of a recipe runs no pass and measures no accuracy again,
//! another weight value misses, a corrupt entry is replaced, `pipeline cache ls/clear`, and a
//! run stopped with SIGINT that leaves the output as it was and resumes from the cache.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use common::{outcome, Project};
use serde_json::Value;

fn read_report(project: &Project) -> Value {
    let text = std::fs::read_to_string(project.path("out/report.json")).expect("a report");
    serde_json::from_str(&text).expect("the report is JSON")
}

/// For each candidate, whether each step came from the cache, and whether its accuracy did.
fn cache_use(report: &Value) -> Vec<(Vec<bool>, bool)> {
    let candidates = report["candidates"].as_array().expect("candidates");
    candidates
        .iter()
        .map(|c| {
            let steps = c["steps"].as_array().expect("steps");
            let cached = steps.iter().map(|s| s["cached"].as_bool().expect("cached")).collect();
            (cached, c["accuracy_cached"].as_bool().expect("accuracy_cached"))
        })
        .collect()
}

/// The files of the cache folder, by name.
fn cache_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the cache folder exists")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The digits recipe ranked by size, so that the winner does not depend on timing.
fn by_size() -> Project {
    let project = Project::digits();
    project.edit_recipe("objective: [latency]", "objective: [size]");
    project
}

#[test]
fn a_second_run_runs_no_pass_and_writes_the_same_model() {
    let project = by_size();
    let first = outcome(&mut project.run());
    first.expect_code(0).no_panic();
    assert_eq!(cache_use(&read_report(&project)), vec![(vec![false], false); 2]);
    // quantize_dynamic warns about ConvInteger each time it runs.
    assert!(first.stderr.contains("ConvInteger"), "{}", first.stderr);
    assert!(!first.stderr.contains(": cached"), "{}", first.stderr);
    let model = std::fs::read(project.path("out/model.onnx")).expect("the best model");

    let second = outcome(&mut project.run());
    second.expect_code(0).stderr_has(&[
        "quantize_dynamic(per_channel=false): cached",
        "quantize_dynamic(per_channel=true): cached",
    ]);
    assert!(!second.stderr.contains("ConvInteger"), "a pass ran again:\n{}", second.stderr);
    assert_eq!(cache_use(&read_report(&project)), vec![(vec![true], true); 2]);
    let again = std::fs::read(project.path("out/model.onnx")).expect("the best model");
    assert!(model == again, "the cached model differs from the one built");

    // Off, the cache is neither read nor written.
    let before = cache_files(project.cache_dir());
    project.run().arg("--no-cache").assert().success();
    assert_eq!(cache_use(&read_report(&project)), vec![(vec![false], false); 2]);
    assert_eq!(cache_files(project.cache_dir()), before);
}

#[test]
fn another_weight_value_misses() {
    use pipeline_passes::ir;

    let project = by_size();
    project.run().assert().success();
    let entries = cache_files(project.cache_dir()).len();

    // The same graph with one weight changed, by enough to change the quantized weights too
    // (accuracies are cached by the candidate's bytes: a change that quantizes to the same
    // model rightly finds its accuracy).
    let path = project.path("model.onnx");
    let mut model = ir::load(&path).expect("the digits model loads");
    let graph = model.graph.as_mut().expect("a graph");
    let weight = graph.initializer.iter_mut().find(|t| !t.raw_data().is_empty()).expect("a weight");
    let mut flipped = weight.raw_data().to_vec();
    flipped[3] ^= 0x40;
    weight.raw_data = Some(flipped.into());
    ir::save(&model, &path, &ir::SaveOptions::default()).expect("the model is saved");

    let second = outcome(&mut project.run());
    second.expect_code(0);
    assert!(!second.stderr.contains(": cached"), "{}", second.stderr);
    assert_eq!(cache_use(&read_report(&project)), vec![(vec![false], false); 2]);
    // Two steps and three accuracies (the source's and each candidate's) more.
    assert_eq!(cache_files(project.cache_dir()).len(), entries + 5);
}

#[test]
fn a_corrupt_entry_is_a_miss_and_is_replaced() {
    let project = by_size();
    project.run().assert().success();
    for name in cache_files(project.cache_dir()) {
        let path = project.cache_dir().join(name);
        let bytes = std::fs::read(&path).expect("an entry");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("the entry is cut short");
    }

    let second = outcome(&mut project.run());
    second.expect_code(0).stderr_has(&["is corrupt", "computing it again"]);
    assert_eq!(cache_use(&read_report(&project)), vec![(vec![false], false); 2]);

    let third = outcome(&mut project.run());
    third.expect_code(0);
    assert!(!third.stderr.contains("corrupt"), "{}", third.stderr);
    assert_eq!(cache_use(&read_report(&project)), vec![(vec![true], true); 2]);
}

#[test]
fn cache_ls_and_clear() {
    let project = by_size();
    project.run().assert().success();
    std::fs::write(project.cache_dir().join(".tmp-stopped"), b"half").expect("a temp file");
    std::fs::write(project.cache_dir().join("README"), b"not the cache's").expect("a file");

    let listed = outcome(project.pipeline().args(["cache", "ls", "--json"]));
    listed.expect_code(0);
    let listing: Value = serde_json::from_str(&listed.stdout).expect("ls --json prints JSON");
    let entries = listing["entries"].as_array().expect("entries");
    let mut labels: Vec<&str> = entries.iter().map(|e| e["label"].as_str().unwrap()).collect();
    labels.sort();
    assert_eq!(
        labels,
        ["accuracy", "accuracy", "accuracy", "quantize_dynamic", "quantize_dynamic"]
    );
    let mut on_disk = 0;
    for entry in entries {
        let key = entry["key"].as_str().unwrap();
        let file = project.cache_dir().join(format!("{key}.entry"));
        let size = std::fs::metadata(&file).expect("the entry's file").len();
        assert_eq!(entry["size"].as_u64(), Some(size));
        assert!(entry["age_s"].as_u64().unwrap() < 600);
        on_disk += size;
    }
    assert_eq!(listing["total_bytes"].as_u64(), Some(on_disk));

    let text = outcome(project.pipeline().args(["cache", "ls"]));
    text.expect_code(0);
    assert!(text.stdout.contains("quantize_dynamic"), "{}", text.stdout);
    assert!(text.stdout.contains("5 entries"), "{}", text.stdout);

    let cleared = outcome(project.pipeline().args(["cache", "clear"]));
    cleared.expect_code(0);
    assert!(
        cleared.stdout.contains("removed 5 entries and 1 temporary files"),
        "{}",
        cleared.stdout
    );
    assert_eq!(cache_files(project.cache_dir()), ["README"]);
    let empty = outcome(project.pipeline().args(["cache", "ls"]));
    assert!(empty.stdout.contains("0 entries"), "{}", empty.stdout);

    // --cache-dir names another folder.
    let other = project.path("elsewhere");
    project.run().arg("--cache-dir").arg(&other).assert().success();
    assert_eq!(cache_files(&other).len(), 5);
    assert_eq!(cache_files(project.cache_dir()), ["README"]);
}

#[test]
fn sigint_stops_the_run_and_the_next_run_resumes() {
    let project = Project::digits();
    // Long latency measurements, so that the run is still measuring when the signal lands.
    project.write_recipe(
        &common::DIGITS_RECIPE.replace("warmup: 2, runs: 5", "warmup: 2, runs: 20000").replace(
            "  - quantize_dynamic: {per_channel: [false, true]}",
            "  - one_of:\n      - quantize_dynamic: {per_channel: [false, true]}\n      \
                 - quantize_static: {calibration: [minmax, entropy], per_channel: [false, true]}",
        ),
    );
    std::fs::create_dir(project.path("out")).unwrap();
    let previous = b"the model an earlier run wrote";
    std::fs::write(project.path("out/model.onnx"), previous).unwrap();

    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipeline"))
        .current_dir(project.root())
        .env_remove("PIPELINE_LOG")
        .env_remove("PIPELINE_NO_CACHE")
        .env("PIPELINE_CACHE_DIR", project.cache_dir())
        .arg("run")
        .arg(project.recipe())
        .arg("--ort-lib")
        .arg(common::ort_library())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pipeline starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).expect("stderr reads") > 0 {
        seen.push_str(&line);
        // The first candidate is measured: the rest are being measured.
        if line.contains("c1 quantize_dynamic") {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("c1 quantize_dynamic"), "the run ended first:\n{seen}");
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    seen.push_str(&rest);
    let status = child.wait().unwrap();

    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("stopped: ") && seen.contains(" of 6 candidates"), "{seen}");
    assert!(!seen.contains("panicked"), "{seen}");
    let out: Vec<String> = std::fs::read_dir(project.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(out, ["model.onnx"], "the work folder or a report was left: {seen}");
    assert_eq!(std::fs::read(project.path("out/model.onnx")).unwrap(), previous);
    let cached = cache_files(project.cache_dir());
    assert!(cached.iter().all(|name| name.ends_with(".entry")), "{cached:?}");

    // The next run builds nothing: every step was built before measuring began.
    project.write_recipe(
        &std::fs::read_to_string(project.recipe()).unwrap().replace("runs: 20000", "runs: 5"),
    );
    let resumed = outcome(&mut project.run());
    resumed.expect_code(0);
    let report = read_report(&project);
    let used = cache_use(&report);
    assert_eq!(used.len(), 6);
    assert!(used.iter().all(|(steps, _)| steps == &[true]), "{used:?}\n{}", resumed.stderr);
    assert!(used[0].1, "c1's accuracy was measured before the signal");
}

#[test]
fn a_cache_folder_that_cannot_be_written_stops_the_run_before_it_starts() {
    let project = Project::digits();
    std::fs::write(project.path("afile"), b"not a folder").unwrap();
    // /proc exists but no file can be made in it, not even by root (chmod does not stop
    // root); afile/sub cannot be created.
    let proc_writable = tempfile::tempfile_in("/proc").is_ok();
    let mut folders = vec!["afile/sub"];
    if !proc_writable {
        folders.push("/proc");
    }
    let before = project.files();
    for folder in folders {
        let result = outcome(project.run().args(["--cache-dir", folder]));
        result
            .expect_code(2)
            .stderr_has(&[&format!("cache folder {folder}"), "--no-cache"])
            .no_panic();
        assert!(!result.stderr.contains("WARN"), "{folder}: {}", result.stderr);
        assert_eq!(project.files(), before, "{folder}: the run wrote files");
    }

    // A file where the folder should be says so (it was "File exists (os error 17)").
    let result = outcome(project.run().args(["--cache-dir", "afile"]));
    result.expect_code(2).stderr_has(&["cache folder afile: it is a file, not a folder"]);
    assert_eq!(project.files(), before, "afile: the run wrote files");
}

#[test]
fn cache_ls_and_clear_on_a_file_is_a_wrong_folder() {
    let project = Project::digits();
    std::fs::write(project.path("afile"), b"not a folder").unwrap();
    for command in ["ls", "clear"] {
        let result = outcome(project.pipeline().args(["cache", command, "--cache-dir", "afile"]));
        result
            .expect_code(2)
            .stderr_has(&["cache folder afile cannot be read", "hint: name the cache folder"]);
    }
    assert_eq!(std::fs::read(project.path("afile")).unwrap(), b"not a folder");
}

#[test]
fn cache_ls_with_the_cache_turned_off_is_a_usage_error() {
    // The tests' own command: PIPELINE_NO_CACHE=1 and no PIPELINE_CACHE_DIR.
    let mut command = common::pipeline();
    command.args(["cache", "ls"]);
    outcome(&mut command)
        .expect_code(2)
        .stderr_has(&["no cache folder", "hint: name one with --cache-dir DIR"]);
}
