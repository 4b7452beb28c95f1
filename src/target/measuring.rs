//! How a run's target decides what is measured: the check before anything runs, the
//! sessions' execution providers, and what `--no-measure` saves and says instead of ranking.

use std::path::Path;

use super::{measurability, HostCpu, Target, CPU_PROVIDER};
use crate::recipe::Recipe;
use crate::report::{CandidateReport, Status};
use crate::run::RunError;
use crate::runtime::{self, SessionConfig, Threads};

/// The folder, inside the output folder, where `--no-measure` saves every built candidate.
pub const CANDIDATES_DIR: &str = "candidates";

/// Why candidates will not be measured (`None` when they will): `--no-measure`, or the
/// missing provider or CPU feature when the flag allows it. Without the flag, a target this
/// host cannot measure is an error.
pub fn check_host(recipe: &Recipe, no_measure: bool) -> Result<Option<String>, RunError> {
    let available = runtime::available_providers()?;
    let check = measurability(recipe.target, &available, &HostCpu::detect());
    match (check.reason, no_measure) {
        (None, false) => {
            tracing::info!(
                "target {}: measuring on {}",
                recipe.target,
                recipe.target.profile().providers.join(", ")
            );
            Ok(None)
        }
        (None, true) => Ok(Some("--no-measure was given".to_string())),
        (Some(reason), true) => {
            tracing::info!("target {}: building only, {reason}", recipe.target);
            Ok(Some(reason))
        }
        (Some(reason), false) => Err(RunError::TargetUnavailable {
            recipe: recipe.path.clone(),
            target: recipe.target,
            reason,
        }),
    }
}

/// How sessions are made for `target`: its providers before the CPU's, on `threads`.
pub fn session_config(target: Target, threads: Threads) -> SessionConfig {
    let providers = target.profile().providers.iter().filter(|p| **p != CPU_PROVIDER);
    SessionConfig {
        providers: providers.map(|p| p.to_string()).collect(),
        ..SessionConfig::cpu(threads)
    }
}

/// The providers a session made with `config` has, most preferred first.
pub fn session_providers(config: &SessionConfig) -> Vec<String> {
    let mut providers = config.providers.clone();
    providers.push(CPU_PROVIDER.to_string());
    providers
}

/// Removes the `candidates/` folder an earlier `--no-measure` run left in `output_dir`: a
/// measured run's report does not list those models.
pub fn remove_unmeasured(output_dir: &Path) -> Result<(), RunError> {
    let folder = output_dir.join(CANDIDATES_DIR);
    if !folder.is_dir() {
        return Ok(());
    }
    std::fs::remove_dir_all(&folder)
        .map_err(|source| RunError::Write { path: folder.clone(), source })?;
    tracing::info!("removed {}, which an earlier --no-measure run wrote", folder.display());
    Ok(())
}

/// Moves every built, unmeasured candidate from the work folder to
/// `<output>/candidates/<id>/`, replacing what an earlier run saved there.
pub fn save_unmeasured(
    reports: &[CandidateReport],
    work: &Path,
    output_dir: &Path,
) -> Result<(), RunError> {
    let write_error = |path: &Path, source| RunError::Write { path: path.to_path_buf(), source };
    let folder = output_dir.join(CANDIDATES_DIR);
    if folder.is_dir() {
        std::fs::remove_dir_all(&folder).map_err(|e| write_error(&folder, e))?;
    }
    let built = reports.iter().filter(|r| r.status == Status::NotMeasured);
    for report in built {
        std::fs::create_dir_all(&folder).map_err(|e| write_error(&folder, e))?;
        let to = folder.join(&report.id);
        std::fs::rename(work.join(&report.id), &to).map_err(|e| write_error(&to, e))?;
    }
    Ok(())
}

/// The verdict of a run that measured nothing: why, and where the candidates are.
pub fn unmeasured_verdict(why: &str, reports: &[CandidateReport], output_dir: &Path) -> String {
    let built = reports.iter().filter(|r| r.status == Status::NotMeasured).count();
    let other = reports.len() - built;
    let other = match other {
        0 => String::new(),
        n => format!(" {n} candidate(s) failed or left the model unchanged; see the table."),
    };
    format!(
        "Not measured: {why}. {built} candidate(s) built and saved under {}/<id>/; none is \
         ranked.{other}",
        output_dir.join(CANDIDATES_DIR).display()
    )
}
