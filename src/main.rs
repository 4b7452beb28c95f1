//! The `pipeline` command line: one function per subcommand, errors mapped to exit codes.
//!
//! Exit codes: 0 success; 1 the job ran but failed (no candidate met the goals, a step
//! failed); 2 the input was wrong (recipe, model, data, flags).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use pipeline::run::{RunError, RunOptions};
use pipeline::{inspect, plan, recipe, report};

/// Optimizes ONNX models for a target device from a declarative recipe.
#[derive(Parser)]
#[command(name = "pipeline", version, about, long_about = None)]
struct Cli {
    /// More logs (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Only errors, no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    /// The cache of pass outputs and accuracies [default: $PIPELINE_CACHE_DIR, else
    /// $XDG_CACHE_HOME/pipeline, else ~/.cache/pipeline].
    #[arg(long, value_name = "DIR", global = true)]
    cache_dir: Option<PathBuf>,

    /// Run without reading or writing the cache (also when PIPELINE_NO_CACHE=1).
    #[arg(long, global = true, conflicts_with = "cache_dir")]
    no_cache: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a recipe: build every candidate, measure each, write the best model and a report.
    Run {
        recipe: PathBuf,
        /// The ONNX Runtime shared library to use (libonnxruntime.so).
        #[arg(long, value_name = "PATH")]
        ort_lib: Option<PathBuf>,
        /// Build and save every candidate under <output>/candidates/<id>/ without measuring
        /// any, for a target this host cannot run; nothing is ranked.
        #[arg(long)]
        no_measure: bool,
    },
    /// Show the DAG of passes a recipe makes and how many candidates it holds.
    Plan { recipe: PathBuf },
    /// Check a recipe (syntax, fields, passes and their parameters) without running it.
    Validate { recipe: PathBuf },
    /// Print the JSON Schema of recipes, for editors.
    Schema,
    /// Show a model's inputs, outputs, opsets, operators, parameters and size.
    Inspect {
        model: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List every pass and its parameters.
    Passes,
    /// Optimize a model for a target with its built-in recipe: writes the resolved recipe to
    /// <output>/recipe.yaml (rerun it with `pipeline run`) and runs it.
    Tune {
        model: PathBuf,
        /// The target's name; `pipeline targets` lists them.
        #[arg(long)]
        target: String,
        /// Evaluation data: an .npz with one array per model input.
        #[arg(long, value_name = "NPZ")]
        data: PathBuf,
        /// Calibration data for static quantization: an .npz with one array per model input.
        #[arg(long, value_name = "NPZ")]
        calibration: Option<PathBuf>,
        /// The array of --data holding the labels; with it, top-1 accuracy is measured and may
        /// drop by at most 0.01.
        #[arg(long, value_name = "NAME")]
        labels: Option<String>,
        /// The folder for the recipe, the best model and the report.
        #[arg(long, value_name = "DIR", default_value = "tuned")]
        output: PathBuf,
        /// The ONNX Runtime shared library to use (libonnxruntime.so).
        #[arg(long, value_name = "PATH")]
        ort_lib: Option<PathBuf>,
        /// Build and save the candidates without measuring them (see `run --no-measure`).
        #[arg(long)]
        no_measure: bool,
    },
    /// List the device targets (providers, fast precisions, constraints) and which this host
    /// can measure.
    Targets {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
        /// The ONNX Runtime shared library to use (libonnxruntime.so).
        #[arg(long, value_name = "PATH")]
        ort_lib: Option<PathBuf>,
    },
    /// Show or empty the cache of pass outputs and accuracies.
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List the entries: key, pass, size and age, and the total size.
    Ls {
        /// Print the entries as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every entry, and the temporary files of runs that were stopped.
    Clear,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);

    let cache_dir = cache_dir(cli.cache_dir, cli.no_cache);
    let result = match cli.command {
        Command::Run { recipe, ort_lib, no_measure } => {
            run(&recipe, ort_lib, no_measure, cache_dir)
        }
        Command::Plan { recipe } => plan(&recipe),
        Command::Validate { recipe } => validate(&recipe),
        Command::Schema => {
            write_out(format_args!("{}", recipe::schema_json())).map(|()| ExitCode::SUCCESS)
        }
        Command::Inspect { model, json } => inspect(&model, json),
        Command::Passes => passes(),
        Command::Cache(command) => cache(command, cache_dir),
        Command::Targets { json, ort_lib } => targets(json, ort_lib),
        Command::Tune { model, target, data, calibration, labels, output, ort_lib, no_measure } => {
            let request =
                pipeline::tune::TuneRequest { model, target, data, calibration, labels, output };
            let options = RunOptions { ort_lib, no_measure, cache_dir, ..RunOptions::default() };
            stop_on_ctrl_c(options.stop.clone());
            tune(&request, options)
        }
    };

    result.unwrap_or_else(|error| {
        // A reader that stopped reading (`pipeline passes | head -1`) is no failure.
        if closed_pipe(&error) {
            return ExitCode::SUCCESS;
        }
        // Hints are indented the same way whichever module wrote them.
        let indent = |text: String| text.replace("\nhint:", "\n  hint:");
        let message = indent(error.to_string());
        eprintln!("error: {message}");
        // Most errors already quote their cause; print only causes that add something.
        for cause in error.chain().skip(1).map(|c| indent(c.to_string())) {
            if !message.contains(&cause) {
                eprintln!("  caused by: {cause}");
            }
        }
        exit_code_for(&error)
    })
}

/// Writes to standard output; a failed write is an error for `main` to report, where
/// `println!` would panic.
fn write_out(text: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    use std::io::Write;

    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(text).and_then(|()| stdout.flush()).context("writing to standard output")
}

/// `print!` through [`write_out`], returning the error from the calling function.
macro_rules! out {
    ($($arg:tt)*) => { write_out(format_args!($($arg)*))? };
}

/// `println!` through [`write_out`], returning the error from the calling function.
macro_rules! outln {
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*)))? };
}

/// Whether `error` comes from writing to a pipe whose reader has gone.
fn closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_indicatif::{filter::IndicatifFilter, IndicatifLayer};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("PIPELINE_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!("warn,pipeline={default},pipeline_passes={default}"))
    });

    // Progress bars belong to spans marked `indicatif.pb_show`; logs are printed above them.
    let bars = IndicatifLayer::new();
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(bars.get_stderr_writer())
        .with_target(verbose > 0)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .fmt_fields(tracing_indicatif::filter::hide_indicatif_span_fields(
            tracing_subscriber::fmt::format::DefaultFields::new(),
        ))
        .with_filter(filter);
    let bars = (!quiet).then(|| bars.with_filter(IndicatifFilter::new(false)));
    tracing_subscriber::registry().with(logs).with(bars).init();
}

/// A command line that cannot work as given, in the environment it runs in (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn exit_code_for(error: &anyhow::Error) -> ExitCode {
    if let Some(run_error) = error.downcast_ref::<RunError>() {
        return ExitCode::from(run_error.exit_code());
    }
    if let Some(tune_error) = error.downcast_ref::<pipeline::tune::TuneError>() {
        return ExitCode::from(tune_error.exit_code());
    }
    if let Some(cache_error) = error.downcast_ref::<pipeline::cache::CacheError>() {
        return ExitCode::from(cache_error.exit_code());
    }
    let user_error = error.downcast_ref::<recipe::RecipeError>().is_some()
        || error.downcast_ref::<plan::PlanError>().is_some()
        || error.downcast_ref::<pipeline_passes::ir::IrError>().is_some()
        || error.downcast_ref::<UsageError>().is_some();
    ExitCode::from(if user_error { 2 } else { 1 })
}

/// The cache folder the flags and the environment choose; `None` when caching is off.
fn cache_dir(flag: Option<PathBuf>, no_cache: bool) -> Option<PathBuf> {
    let off = std::env::var_os("PIPELINE_NO_CACHE").is_some_and(|v| !v.is_empty() && v != "0");
    if no_cache || (off && flag.is_none()) {
        return None;
    }
    flag.or_else(pipeline::cache::default_dir)
}

/// Sets `stop` on the first Ctrl-C, so that the run stops between candidates, cleans up and
/// exits with 130; a second Ctrl-C exits at once.
fn stop_on_ctrl_c(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;

    let installed = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "stopping: the current step finishes, a measurement stops at its next run (Ctrl-C \
             again to quit at once)"
        );
    });
    if let Err(error) = installed {
        tracing::warn!("Ctrl-C will stop the run at once, without cleaning up: {error}");
    }
}

fn run(
    recipe_path: &Path,
    ort_lib: Option<PathBuf>,
    no_measure: bool,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let options = RunOptions { ort_lib, no_measure, cache_dir, ..RunOptions::default() };
    stop_on_ctrl_c(options.stop.clone());
    let report = pipeline::run::run(recipe_path, &options)?;
    print_outcome(&report)
}

fn tune(request: &pipeline::tune::TuneRequest, options: RunOptions) -> anyhow::Result<ExitCode> {
    let (recipe_path, report) = pipeline::tune::tune(request, &options)?;
    outln!("recipe: {} (rerun it with `pipeline run`)", recipe_path.display());
    print_outcome(&report)
}

/// Prints a run's table and verdict; the exit code says whether the job succeeded.
fn print_outcome(report: &report::Report) -> anyhow::Result<ExitCode> {
    outln!("{}", report::render_table(report));
    outln!("{}", report.verdict);
    if let Some(path) = &report.output_model {
        outln!("best model: {}", path.display());
    }
    // Under --no-measure the job is to build: it succeeded if some candidate was built.
    let built = report.candidates.iter().any(|c| c.status == report::Status::NotMeasured);
    let succeeded = report.best.is_some() || (report.not_measured.is_some() && built);
    Ok(if succeeded { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn plan(recipe_path: &Path) -> anyhow::Result<ExitCode> {
    let recipe = recipe::load(recipe_path)?;
    let plan = plan::build(&recipe)?;
    out!("{}", plan.render());
    Ok(ExitCode::SUCCESS)
}

fn validate(recipe_path: &Path) -> anyhow::Result<ExitCode> {
    let prepared = pipeline::run::prepare(recipe_path)?;
    outln!(
        "{}: valid; model, data and output folder checked; {} candidate(s)",
        recipe_path.display(),
        prepared.plan.candidates().len()
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect(model: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let summary = inspect::inspect(model)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&summary).context("serializing the summary")?);
    } else {
        out!("{}", summary.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn passes() -> anyhow::Result<ExitCode> {
    for info in pipeline_passes::pass::registry() {
        outln!("{}: {}", info.name, info.summary);
        let mut generator = schemars::SchemaGenerator::default();
        let schema = (info.config_schema)(&mut generator);
        let properties = schema.get("properties").and_then(|p| p.as_object());
        for (name, property) in properties.into_iter().flatten() {
            let description =
                property.get("description").and_then(|d| d.as_str()).unwrap_or_default();
            // A null default means "chosen by another parameter": the description says how.
            let default = property
                .get("default")
                .filter(|d| !d.is_null())
                .map(|d| format!(" (default {d})"))
                .unwrap_or_default();
            outln!("  {name}{default}: {description}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cache(command: CacheCommand, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let Some(dir) = dir else {
        return Err(UsageError(
            "no cache folder: --no-cache or PIPELINE_NO_CACHE is set, or HOME is not\n\
             hint: name one with --cache-dir DIR"
                .into(),
        )
        .into());
    };
    let cache = pipeline::cache::Cache::at(&dir);
    match command {
        CacheCommand::Ls { json } => {
            let entries = cache.list()?;
            let total: u64 = entries.iter().map(|e| e.size).sum();
            if json {
                let listing = serde_json::json!({
                    "dir": dir, "entries": entries, "total_bytes": total
                });
                outln!("{}", serde_json::to_string_pretty(&listing).context("serializing")?);
                return Ok(ExitCode::SUCCESS);
            }
            for entry in &entries {
                outln!(
                    "{}  {:<18} {:>10}  {}",
                    &entry.key[..16],
                    entry.label,
                    report::human_bytes(entry.size),
                    age(entry.age_s)
                );
            }
            outln!(
                "{} entries, {} in {}",
                entries.len(),
                report::human_bytes(total),
                dir.display()
            );
        }
        CacheCommand::Clear => {
            let cleared = cache.clear()?;
            outln!(
                "removed {} entries and {} temporary files ({}) from {}",
                cleared.entries,
                cleared.temporary,
                report::human_bytes(cleared.bytes),
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An age in seconds as a reader says it: `42s`, `5m`, `3h`, `2d`.
fn age(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

fn targets(json: bool, ort_lib: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use pipeline::target::{HostCpu, Listing};

    // A library named by --ort-lib that does not load is a wrong flag; without the flag, a
    // missing runtime is no error: the list says why nothing can be measured.
    if ort_lib.is_some() {
        pipeline::runtime::init(ort_lib.as_deref()).map_err(RunError::from)?;
    }
    let providers = pipeline::runtime::init(ort_lib.as_deref())
        .and_then(|_| pipeline::runtime::available_providers())
        .map_err(|error| error.to_string());
    let listing = Listing::new(providers, HostCpu::detect());
    if json {
        outln!("{}", serde_json::to_string_pretty(&listing).context("serializing the targets")?);
    } else {
        out!("{}", listing.render());
    }
    Ok(ExitCode::SUCCESS)
}
