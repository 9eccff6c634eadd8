//! `tollgate demo` (placeholder while it is built).
use std::path::Path;
use std::process::ExitCode;

/// Runs the demo.
pub fn run(_policy: &Path, _requests: usize, _concurrency: usize, _seed: u64) -> ExitCode {
    ExitCode::SUCCESS
}
