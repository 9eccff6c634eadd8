//! `tollgate watch`: load a policy, then reload it on every change (and on `SIGHUP`),
//! printing one line per reload as it happens, for people editing policies live.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{color, EXIT_INVALID, EXIT_USAGE};
use crate::diagnostic::Diagnostics;
use crate::exec::Executor;
use crate::plan::compile;
use crate::policy::{load, LoadOptions};
use crate::reload::{self, PolicySource, ReloadConfig, ReloadEvent};

fn paint(s: &str, code: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Prints one event: its line, then any diagnostics as `tollgate check` renders them (the
/// warnings of an applied plan only when they are new since the last plan, not every time).
fn print_event(ev: &ReloadEvent, c: bool, seen: &mut HashSet<String>) {
    let line = ev.to_string();
    let (word, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
    let code = match ev {
        ReloadEvent::Applied { .. } => "32",
        ReloadEvent::Unchanged { .. } => "2",
        ReloadEvent::Rejected { .. } | ReloadEvent::Error(_) => "31",
        ReloadEvent::Missing { .. } => "33",
    };
    println!("{} {rest}", paint(word, code, c));
    match ev {
        ReloadEvent::Rejected { diagnostics, .. } => print!("{}", diagnostics.render(c)),
        ReloadEvent::Applied { warnings, .. } => {
            let now = warning_lines(warnings);
            let fresh = Diagnostics {
                items: warnings
                    .items
                    .iter()
                    .filter(|d| !seen.contains(&warnings.short_one(d)))
                    .cloned()
                    .collect(),
                sources: warnings.sources.clone(),
            };
            print!("{}", fresh.render(c));
            *seen = now;
        }
        _ => {}
    }
}

fn warning_lines(w: &Diagnostics) -> HashSet<String> {
    w.items.iter().map(|d| w.short_one(d)).collect()
}

/// Runs `tollgate watch` until Ctrl-C.
pub fn run(paths: &[PathBuf], debounce: Duration) -> ExitCode {
    let c = color();
    let loaded = load(&LoadOptions::new(paths.to_vec()));
    let io_failed = loaded.io_failed();
    let compiled = match compile(loaded) {
        Ok(compiled) => compiled,
        Err(d) => {
            print!("{}", d.render(c));
            println!("not watching: the policy must be valid to start");
            return super::failed_exit(io_failed);
        }
    };
    print!("{}", compiled.warnings.render(c));
    let mut seen = warning_lines(&compiled.warnings);
    let plan = compiled.plan;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    rt.block_on(async move {
        let (routes, upstreams, models) =
            (plan.routes.len(), plan.upstreams.len(), plan.models.len());
        let executor = match Executor::new(plan) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        };
        let config = ReloadConfig::default().debounce(debounce);
        let handle = match reload::watch(PolicySource::new(paths.to_vec()), &executor, config) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let mut events = handle.subscribe();
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        println!(
            "{} v1: {routes} routes, {upstreams} upstreams, {models} models from {}; watching (Ctrl-C to stop, SIGHUP to reload)",
            paint("loaded", "32", c),
            shown.join(", ")
        );
        let mut hup = hangup();
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) => print_event(&ev, c, &mut seen),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        println!("({n} events skipped: output fell behind)");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = next_hangup(&mut hup) => {
                    // The outcome is published to `events` too, and printed there.
                    if handle.reload_now().await.is_err() {
                        break;
                    }
                }
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        handle.stop();
        ExitCode::SUCCESS
    })
}

#[cfg(unix)]
pub(super) type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub(super) type Hangup = ();

#[cfg(unix)]
pub(super) fn hangup() -> Hangup {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
pub(super) fn hangup() -> Hangup {}

/// Resolves on the next `SIGHUP` (never, where there is none).
#[cfg(unix)]
pub(super) async fn next_hangup(h: &mut Hangup) {
    match h {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
pub(super) async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}
