//! Finding ONNX Runtime's shared library and loading it once per process.
//!
//! The search order is: the `--ort-lib` flag, `ORT_DYLIB_PATH`, the project's copy in
//! `.ort/lib` (installed by `scripts/setup-onnxruntime.sh`), then the `onnxruntime` Python
//! package that `python3` can import. A library named explicitly that is missing or broken is an
//! error; the search never moves on past it.

use std::ffi::{c_char, CStr, OsStr};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use super::RuntimeError;

/// The file name of the library on this platform.
const LIBRARY_NAME: &str = "libonnxruntime.so";

/// Where the project's own copy lives, relative to a project folder.
const PROJECT_LIBRARY: &str = ".ort/lib/libonnxruntime.so";

/// How the ONNX Runtime library was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeSource {
    /// The `--ort-lib` flag (the `explicit` argument of [`init`]).
    Flag,
    /// The `ORT_DYLIB_PATH` environment variable.
    EnvVar,
    /// The project's copy in `.ort/lib`, installed by `scripts/setup-onnxruntime.sh`.
    ProjectCopy,
    /// The `onnxruntime` Python package importable by `python3`.
    PythonPackage,
}

impl fmt::Display for RuntimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeSource::Flag => "--ort-lib",
            RuntimeSource::EnvVar => "ORT_DYLIB_PATH",
            RuntimeSource::ProjectCopy => "the project copy in .ort/lib",
            RuntimeSource::PythonPackage => "the onnxruntime package of python3",
        })
    }
}

/// The ONNX Runtime library this process uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// The library file that was loaded.
    pub library: PathBuf,
    /// The version the library reports, such as `1.31.1`.
    pub version: String,
    /// How the library was found.
    pub source: RuntimeSource,
}

/// The loaded library and the environment every session is created in.
struct Runtime {
    info: RuntimeInfo,
    environment: Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Serializes attempts to load, so two threads never race to load two libraries.
static LOADING: Mutex<()> = Mutex::new(());

/// Finds ONNX Runtime, loads it and creates the process-wide environment.
///
/// `explicit` is the `--ort-lib` flag: a library file, or a folder holding
/// `libonnxruntime.so`. The first successful call wins: later calls return its result whatever
/// they are given (a different `explicit` path only logs a warning), because a process can hold
/// one ONNX Runtime only. A failed call loads nothing, so it can be retried with another path.
pub fn init(explicit: Option<&Path>) -> Result<RuntimeInfo, RuntimeError> {
    if let Some(runtime) = RUNTIME.get() {
        warn_if_other(&runtime.info, explicit);
        return Ok(runtime.info.clone());
    }

    let _guard = LOADING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(runtime) = RUNTIME.get() {
        warn_if_other(&runtime.info, explicit);
        return Ok(runtime.info.clone());
    }

    let env_value = std::env::var_os("ORT_DYLIB_PATH");
    let (path, source) = locate(explicit, env_value.as_deref(), &project_folders(), "python3")?;
    let runtime = load(path, source)?;
    tracing::info!(
        library = %runtime.info.library.display(),
        version = %runtime.info.version,
        source = %runtime.info.source,
        "loaded onnx runtime"
    );
    Ok(RUNTIME.get_or_init(|| runtime).info.clone())
}

/// The environment sessions are created in, loading the runtime with [`init`] if needed.
pub(crate) fn environment() -> Result<&'static Environment, RuntimeError> {
    if RUNTIME.get().is_none() {
        init(None)?;
    }
    match RUNTIME.get() {
        Some(runtime) => Ok(&runtime.environment),
        None => {
            Err(RuntimeError::NotFound { looked: vec!["(initialization did not finish)".into()] })
        }
    }
}

fn warn_if_other(info: &RuntimeInfo, explicit: Option<&Path>) {
    let Some(explicit) = explicit else { return };
    let wanted = resolve(explicit);
    if !same_file(&wanted, &info.library) {
        tracing::warn!(
            wanted = %wanted.display(),
            loaded = %info.library.display(),
            "onnx runtime is already loaded in this process; keeping the loaded library"
        );
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A library file named by a flag or variable: a folder stands for the library inside it.
fn resolve(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(LIBRARY_NAME)
    } else {
        path.to_path_buf()
    }
}

/// The folders whose `.ort/lib` may hold the project's copy: the current folder and its
/// ancestors, the folders above the running executable, then the source checkout this crate
/// was built from.
fn project_folders() -> Vec<PathBuf> {
    let mut folders = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        folders.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        folders.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    folders.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));

    let mut unique = Vec::new();
    for folder in folders {
        if !unique.contains(&folder) {
            unique.push(folder);
        }
    }
    unique
}

/// Picks the library to load, in the documented order.
///
/// `env_value` is the value of `ORT_DYLIB_PATH`, `folders` the project folders to look in and
/// `python` the interpreter to ask for an `onnxruntime` package.
fn locate(
    explicit: Option<&Path>,
    env_value: Option<&OsStr>,
    folders: &[PathBuf],
    python: &str,
) -> Result<(PathBuf, RuntimeSource), RuntimeError> {
    let mut looked = Vec::new();

    let named = [
        (explicit.map(Path::to_path_buf), RuntimeSource::Flag),
        (env_value.filter(|v| !v.is_empty()).map(PathBuf::from), RuntimeSource::EnvVar),
    ];
    for (path, origin) in named {
        match path {
            Some(path) => {
                let path = resolve(&path);
                if !path.exists() {
                    return Err(RuntimeError::LibraryMissing { path, origin });
                }
                return Ok((path, origin));
            }
            None if origin == RuntimeSource::Flag => looked.push("--ort-lib: not given".into()),
            None => looked.push("ORT_DYLIB_PATH: not set".into()),
        }
    }

    for folder in folders {
        let path = folder.join(PROJECT_LIBRARY);
        if path.exists() {
            return Ok((path, RuntimeSource::ProjectCopy));
        }
        looked.push(format!("{}: no such file", path.display()));
    }

    match python_package_library(python) {
        Ok(path) => Ok((path, RuntimeSource::PythonPackage)),
        Err(why) => {
            looked.push(format!("{python}: {why}"));
            Err(RuntimeError::NotFound { looked })
        }
    }
}

/// The library inside the `onnxruntime` package `python` would import, or why there is none.
fn python_package_library(python: &str) -> Result<PathBuf, String> {
    // find_spec locates the package without importing it, which is fast and runs none of its code.
    let script = "import importlib.util as u\n\
                  s = u.find_spec('onnxruntime')\n\
                  places = s.submodule_search_locations if s else None\n\
                  print(places[0] if places else '')";
    let output = Command::new(python)
        .args(["-c", script])
        .output()
        .map_err(|e| format!("could not run it ({e})"))?;
    if !output.status.success() {
        return Err(format!("it failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }

    let package = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if package.is_empty() {
        return Err("it has no onnxruntime package".into());
    }

    let capi = Path::new(&package).join("capi");
    let mut libraries: Vec<PathBuf> = std::fs::read_dir(&capi)
        .map_err(|e| format!("its onnxruntime package has no readable {} ({e})", capi.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|name| name.starts_with(LIBRARY_NAME))
        })
        .collect();
    libraries.sort();
    libraries.into_iter().next().ok_or_else(|| {
        format!("its onnxruntime package has no {LIBRARY_NAME}* in {}", capi.display())
    })
}

/// Loads the library at `path` and creates the environment.
fn load(path: PathBuf, source: RuntimeSource) -> Result<Runtime, RuntimeError> {
    let load_error =
        |message: String| RuntimeError::LibraryLoad { path: path.clone(), origin: source, message };

    let builder =
        ort::init_from(&path).map_err(|e| load_error(with_loader_reason(e.to_string(), &path)))?;
    let version = library_version(&path).map_err(load_error)?;
    let environment =
        builder.with_name("pipeline").with_telemetry(false).build().map_err(|e| {
            RuntimeError::Environment { library: path.clone(), message: e.to_string() }
        })?;

    Ok(Runtime { info: RuntimeInfo { library: path, version, source }, environment })
}

/// Adds the system loader's own reason (such as "invalid ELF header") to `message`, which
/// `ort` reduces to "dlopen failed".
fn with_loader_reason(message: String, path: &Path) -> String {
    // SAFETY: this repeats the load `ort` just attempted on the same file; it runs only when
    // that attempt failed, to read the loader's error.
    let Err(error) = (unsafe { libloading::Library::new(path) }) else { return message };

    let mut reasons = Vec::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reasons.push(cause.to_string());
        source = cause.source();
    }
    if reasons.is_empty() {
        message
    } else {
        format!("{message}: {}", reasons.join(": "))
    }
}

/// The version string the library at `path` reports through `OrtGetApiBase`.
fn library_version(path: &Path) -> Result<String, String> {
    // SAFETY: `ort::init_from` has already loaded this file as ONNX Runtime and checked that it
    // exports `OrtGetApiBase`, so opening it again only takes another reference to that library,
    // and the symbol has the C signature declared by `ort-sys`.
    unsafe {
        let library = libloading::Library::new(path).map_err(|e| e.to_string())?;
        let get_api_base: libloading::Symbol<
            unsafe extern "system" fn() -> *const ort::sys::OrtApiBase,
        > = library.get(b"OrtGetApiBase").map_err(|e| e.to_string())?;
        let base = get_api_base();
        if base.is_null() {
            return Err("OrtGetApiBase returned nothing".into());
        }
        let version: *const c_char = ((*base).GetVersionString)();
        if version.is_null() {
            return Err("the library reports no version".into());
        }
        Ok(CStr::from_ptr(version).to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_that_does_not_exist_stops_the_search() {
        let folders = [PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
        let missing = Path::new("/nonexistent/libonnxruntime.so");

        let error = locate(Some(missing), None, &folders, "python3").unwrap_err();

        let text = error.to_string();
        assert!(text.contains("/nonexistent/libonnxruntime.so"), "{text}");
        assert!(text.contains("--ort-lib"), "{text}");
    }

    #[test]
    fn the_variable_is_used_before_the_project_copy() {
        let folders = [PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
        let error =
            locate(None, Some(OsStr::new("/nowhere/ort.so")), &folders, "python3").unwrap_err();

        let text = error.to_string();
        assert!(text.contains("/nowhere/ort.so") && text.contains("ORT_DYLIB_PATH"), "{text}");
    }

    #[test]
    fn nothing_found_lists_every_place_and_the_install_command() {
        let empty = tempfile::tempdir().unwrap();
        let folders = [empty.path().to_path_buf()];

        let error = locate(None, None, &folders, "no-such-python-for-tests").unwrap_err();

        let text = error.to_string();
        assert!(matches!(error, RuntimeError::NotFound { .. }));
        assert!(text.contains("--ort-lib: not given"), "{text}");
        assert!(text.contains("ORT_DYLIB_PATH: not set"), "{text}");
        assert!(text.contains(&empty.path().join(PROJECT_LIBRARY).display().to_string()), "{text}");
        assert!(text.contains("no-such-python-for-tests: could not run it"), "{text}");
        assert!(text.contains("scripts/setup-onnxruntime.sh"), "{text}");
    }

    #[test]
    fn a_folder_stands_for_the_library_inside_it() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join(LIBRARY_NAME), b"not really").unwrap();

        let (path, source) = locate(Some(folder.path()), None, &[], "python3").unwrap();

        assert_eq!(path, folder.path().join(LIBRARY_NAME));
        assert_eq!(source, RuntimeSource::Flag);
    }

    #[test]
    fn the_project_copy_is_found_in_a_project_folder() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        if !root.join(PROJECT_LIBRARY).exists() {
            panic!("no {PROJECT_LIBRARY} in {}: run scripts/setup-test-env.sh", root.display());
        }

        let (path, source) = locate(None, None, std::slice::from_ref(&root), "python3").unwrap();

        assert_eq!(path, root.join(PROJECT_LIBRARY));
        assert_eq!(source, RuntimeSource::ProjectCopy);
    }

    #[test]
    fn the_python_package_is_found_through_find_spec() {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        if !venv.exists() {
            panic!("no {}: run scripts/setup-test-env.sh", venv.display());
        }
        let empty = tempfile::tempdir().unwrap();

        let (path, source) =
            locate(None, None, &[empty.path().to_path_buf()], venv.to_str().unwrap()).unwrap();

        assert_eq!(source, RuntimeSource::PythonPackage);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("libonnxruntime.so"), "{}", path.display());
        assert!(path.parent().unwrap().ends_with("onnxruntime/capi"), "{}", path.display());
    }
}
