//! What a reload publishes.

use std::fmt;
use std::path::PathBuf;

use super::summary::Summary;
use super::ReloadError;
use crate::diagnostic::Diagnostics;

/// The outcome of one reload (or a problem with watching), as published to
/// [`ReloadHandle::subscribe`](super::ReloadHandle::subscribe) receivers.
#[derive(Debug, Clone)]
pub enum ReloadEvent {
    /// The policy compiled and differs from the running plan: it was swapped in.
    Applied {
        /// The executor's plan version now running.
        version: u64,
        /// What changed (boxed: it is the largest payload and events are cloned per subscriber).
        summary: Box<Summary>,
        /// Warnings of the new policy (no errors).
        warnings: Diagnostics,
    },
    /// The policy compiled to the plan already running (a comment, whitespace, a touch, a
    /// reordering of tables): nothing was swapped.
    Unchanged {
        /// The plan version still running.
        version: u64,
    },
    /// The policy does not compile: the running plan is kept. The diagnostics are those
    /// `tollgate check` prints ([`Diagnostics::render`]).
    Rejected {
        /// The plan version still running.
        version: u64,
        /// Every error (and warning) found.
        diagnostics: Diagnostics,
    },
    /// A policy file or directory is gone (or unreadable, or a directory holds no `*.toml`
    /// file any more): the running plan is kept, and the next change that makes the paths
    /// whole again is applied. Usually the middle of a delete-and-recreate.
    Missing {
        /// The plan version still running.
        version: u64,
        /// Paths given to the watcher that do not exist now.
        paths: Vec<PathBuf>,
        /// The loader's I/O diagnostics.
        diagnostics: Diagnostics,
    },
    /// Watching or swapping failed; the running plan is kept and watching goes on.
    Error(ReloadError),
}

impl ReloadEvent {
    /// Whether the running plan was replaced.
    pub fn is_applied(&self) -> bool {
        matches!(self, ReloadEvent::Applied { .. })
    }

    /// The first line of the first error diagnostic, for one-line logs
    /// (`path:line:col: error[code]: message`).
    pub fn headline(&self) -> Option<String> {
        let d = match self {
            ReloadEvent::Rejected { diagnostics, .. }
            | ReloadEvent::Missing { diagnostics, .. } => diagnostics,
            ReloadEvent::Error(e) => return Some(e.to_string()),
            _ => return None,
        };
        let first = d
            .items
            .iter()
            .find(|i| i.severity == crate::diagnostic::Severity::Error)
            .or(d.items.first())?;
        Some(d.short_one(first))
    }
}

impl fmt::Display for ReloadEvent {
    /// One line: `applied v3: routes +1 ~0 -0 (+fast)`, `unchanged v3`,
    /// `rejected: policy.toml:4:7: error[unknown-key]: …`, `missing: policy.toml (keeping v3)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadEvent::Applied {
                version, summary, ..
            } => write!(f, "applied v{version}: {summary}"),
            ReloadEvent::Unchanged { version } => write!(f, "unchanged v{version}"),
            ReloadEvent::Rejected {
                version,
                diagnostics,
            } => {
                let n = diagnostics.error_count();
                write!(
                    f,
                    "rejected: {} ({n} error{}, keeping v{version})",
                    self.headline().unwrap_or_default(),
                    if n == 1 { "" } else { "s" }
                )
            }
            ReloadEvent::Missing { version, paths, .. } => {
                let p: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                let what = if p.is_empty() {
                    self.headline().unwrap_or_default()
                } else {
                    p.join(", ")
                };
                write!(f, "missing: {what} (keeping v{version})")
            }
            ReloadEvent::Error(e) => write!(f, "error: {e}"),
        }
    }
}
