//! `tollgate simulate`: a scenario under a policy (and a baseline policy), in virtual time.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{out, EXIT_INVALID, EXIT_USAGE};
use crate::sim::file::report::{self, Document};
use crate::sim::file::{prepare, PrepareError};

/// `simulate` output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SimFormat {
    /// A summary.
    Human,
    /// One JSON document (`docs/simulate.md`).
    Json,
    /// One self-contained HTML page with charts over simulated time (for `--out`).
    Html,
}

/// What to run.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The scenario file (`docs/scenario.md`).
    #[arg(long)]
    scenario: PathBuf,
    /// Seed (overrides the scenario's).
    #[arg(long)]
    seed: Option<u64>,
    /// `human` (a summary), `json` (`docs/simulate.md`) or `html` (charts; with `--out`).
    #[arg(long, value_enum, default_value_t = SimFormat::Human)]
    format: SimFormat,
    /// Write the report to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A second policy (files or directories, repeatable) to run the same scenario and
    /// seed under, shown side by side with the differences.
    #[arg(long)]
    baseline: Vec<PathBuf>,
    /// Policy files, or directories of *.toml files (merged as one policy, like `serve`).
    #[arg(required = true)]
    policy: Vec<PathBuf>,
}

fn label(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Prints why the scenario cannot run; the exit code.
fn refused(e: PrepareError) -> ExitCode {
    let color = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    match e {
        PrepareError::Scenario(d) => {
            eprint!("{}", d.render(color));
            eprintln!(
                "error: the scenario is invalid ({} errors)",
                d.error_count()
            );
            ExitCode::from(EXIT_USAGE)
        }
        PrepareError::Policy { diagnostics, io } => {
            eprint!("{}", diagnostics.render(color));
            eprintln!("error: the policy does not load");
            super::failed_exit(io)
        }
    }
}

/// One policy's report under the scenario.
fn one(a: &Args, paths: &[PathBuf]) -> Result<(report::PolicyReport, u64, u64), ExitCode> {
    let (plan, prepared) = prepare(&a.scenario, paths, a.seed).map_err(refused)?;
    // The same scenario is prepared for the baseline: its warnings are shown once.
    if !prepared.warnings.items.is_empty() && paths == a.policy.as_slice() {
        eprint!("{}", prepared.warnings.render(false));
    }
    let r = report::run(&label(paths), plan, &prepared).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_INVALID)
    })?;
    Ok((r, prepared.scenario.seed, prepared.duration_ms))
}

fn write(path: Option<&Path>, text: &str) -> Result<(), ExitCode> {
    match path {
        Some(p) => std::fs::write(p, text).map_err(|e| {
            eprintln!("error: cannot write {}: {e}", p.display());
            ExitCode::from(EXIT_USAGE)
        }),
        None => {
            out!("{text}");
            Ok(())
        }
    }
}

/// Runs; exit 0, 1 when a gate fails (or a policy is invalid), 2 for bad input.
pub fn run(a: &Args) -> ExitCode {
    let (report, seed, duration_ms) = match one(a, &a.policy) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let baseline = if a.baseline.is_empty() {
        None
    } else {
        match one(a, &a.baseline) {
            Ok((b, _, _)) => Some(b),
            Err(code) => return code,
        }
    };
    let differences = baseline.as_ref().map(|b| report::differences(&report, b));
    let doc = Document {
        scenario: a.scenario.display().to_string(),
        seed,
        duration_s: duration_ms as f64 / 1000.0,
        report,
        baseline,
        differences,
    };
    let text = match a.format {
        SimFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        ),
        SimFormat::Human => report::human(&doc),
        SimFormat::Html => crate::sim::file::html::html(&doc),
    };
    if let Err(code) = write(a.out.as_deref(), &text) {
        return code;
    }
    if doc.report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}
