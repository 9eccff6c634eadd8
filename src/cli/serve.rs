//! `tollgate serve`: load the policy, check keys, and run the relay until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{color, EXIT_INVALID, EXIT_USAGE};
use crate::exec::Executor;
use crate::http::Client;
use crate::plan::compile;
use crate::policy::{load, LoadOptions};
use crate::server::{CallerKeys, Relay};

/// Environment variable holding caller keys (`name=KEY` or `name=sha256:HEX`, comma-separated).
pub const CALLER_KEYS_ENV: &str = "TOLLGATE_CALLER_KEYS";

/// Runs the relay.
pub fn run(paths: &[PathBuf], listen: SocketAddr, max_body: usize) -> ExitCode {
    let loaded = load(&LoadOptions::new(paths.iter().cloned()));
    let io_failed = loaded.io_failed();
    let compiled = match compile(loaded) {
        Ok(c) => c,
        Err(d) => {
            eprint!("{}", d.render(color()));
            return ExitCode::from(if io_failed { EXIT_USAGE } else { EXIT_INVALID });
        }
    };
    if !compiled.warnings.items.is_empty() {
        eprint!("{}", compiled.warnings.render(color()));
    }
    let keys = match std::env::var(CALLER_KEYS_ENV) {
        Ok(spec) => match CallerKeys::parse(&spec) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {CALLER_KEYS_ENV}: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        Err(_) => CallerKeys::default(),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
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
        // At start-up an unset key is an error (at `check` it is a warning).
        let client = match Client::from_plan(&compiled.plan) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        };
        let exec = match Executor::new(compiled.plan) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        };
        let relay = Relay::new(exec, client).caller_keys(keys).max_body(max_body);
        start_reload(&relay, paths);
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {listen}: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let addr = listener.local_addr().unwrap_or(listen);
        eprintln!("tollgate: relay listening on http://{addr} (POST /v1/chat/completions, GET /v1/models /status /metrics /healthz)");
        match crate::server::serve(listener, relay, shutdown_signal()).await {
            Ok(()) => {
                eprintln!("tollgate: stopped (requests in flight drained)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        }
    })
}

/// Hot reload hook: watch `paths` and call [`Relay::apply_plan`] with each plan that compiles.
// TODO(reload): start `crate::reload`'s watcher here once it lands; it owns debouncing and
// keeping the old plan on errors. Until then the plan is fixed for the process's life.
fn start_reload(_relay: &Relay, _paths: &[PathBuf]) {}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("tollgate: shutting down, draining requests in flight");
}
