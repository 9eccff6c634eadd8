//! `tollgate check`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{color, out, Format, EXIT_INVALID, EXIT_USAGE};
use crate::diagnostic::{Code, Diagnostics};
use crate::plan::compile;
use crate::policy::{load, LoadOptions};

/// The outcome of checking one policy.
struct Checked {
    label: String,
    diags: Diagnostics,
    ok: bool,
    io_failed: bool,
}

fn check_one(paths: Vec<PathBuf>) -> Checked {
    let label = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    let loaded = load(&LoadOptions::new(paths));
    let io_failed = loaded.io_failed();
    match compile(loaded) {
        Ok(c) => Checked {
            label,
            diags: c.warnings,
            ok: true,
            io_failed,
        },
        Err(d) => Checked {
            label,
            diags: d,
            ok: false,
            io_failed,
        },
    }
}

/// Files to check one by one: each file as given, each directory's `*.toml` in name order.
/// A path that does not exist is kept, so loading reports it.
fn each_file(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        match crate::policy::toml_files_in(p) {
            Ok(files) if !files.is_empty() => out.extend(files),
            // A file, a missing path or an empty directory: loading it reports what is wrong.
            _ => out.push(p.clone()),
        }
    }
    out
}

/// Loads and compiles; prints diagnostics; returns the exit code.
pub fn run(paths: &[PathBuf], format: Format, merge: bool) -> ExitCode {
    let checked: Vec<Checked> = if merge {
        vec![check_one(paths.to_vec())]
    } else {
        each_file(paths)
            .into_iter()
            .map(|p| check_one(vec![p]))
            .collect()
    };
    match format {
        Format::Json => {
            let policies: Vec<serde_json::Value> = checked
                .iter()
                .map(|c| {
                    let mut j = c.diags.to_json();
                    j["policy"] = c.label.clone().into();
                    j["valid"] = c.ok.into();
                    j
                })
                .collect();
            let doc =
                serde_json::json!({ "valid": checked.iter().all(|c| c.ok), "policies": policies });
            out!(
                "{}\n",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            );
        }
        Format::Short => {
            for c in &checked {
                out!("{}", c.diags.short());
            }
        }
        Format::Human => {
            for c in &checked {
                out!("{}", c.diags.render(color()));
                let (e, w) = (c.diags.error_count(), c.diags.warning_count());
                let plural = |n: usize| if n == 1 { "" } else { "s" };
                if c.ok {
                    out!("{}: ok ({w} warning{})\n", c.label, plural(w));
                } else {
                    out!(
                        "{}: invalid ({e} error{}, {w} warning{})\n",
                        c.label,
                        plural(e),
                        plural(w)
                    );
                }
            }
            if !merge
                && checked.len() > 1
                && checked.iter().any(|c| {
                    c.diags
                        .items
                        .iter()
                        .any(|d| d.code == Code::UnknownReference)
                })
            {
                out!("note: each file was checked on its own; if these files are one policy split across files, check them together with --merge\n");
            }
        }
    }
    if checked.iter().any(|c| c.io_failed) {
        ExitCode::from(EXIT_USAGE)
    } else if checked.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}
