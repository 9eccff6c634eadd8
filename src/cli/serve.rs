//! `tollgate serve`: load the policy, check keys, and run the relay until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{color, EXIT_INVALID, EXIT_USAGE};
use crate::exec::Executor;
use crate::http::Client;
use crate::plan::{compile, RedisSettings};
use crate::policy::{load, LoadOptions};
use crate::reload::{self, PolicySource, Prepare, ReloadConfig, ReloadEvent, ReloadHandle};
use crate::server::{CallerKeys, Relay};
use std::sync::Arc;

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
            return super::failed_exit(io_failed);
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
    if let Err(e) = keys.check_against(&compiled.plan) {
        eprintln!("error: {CALLER_KEYS_ENV}: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
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
        let mut builder = Executor::builder(compiled.plan.clone());
        let mut connected = None;
        match shared_backend(&compiled.plan) {
            Ok(Some(b)) => {
                builder = builder.state_backend(b);
                connected = compiled.plan.redis.clone();
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        }
        let exec = match builder.build() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        };
        let relay = Relay::new(exec, client).caller_keys(keys).max_body(max_body);
        let _reload = start_reload(&relay, paths, connected);
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {listen}: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let addr = listener.local_addr().unwrap_or(listen);
        eprintln!("tollgate: relay listening on http://{addr} (POST /v1/chat/completions /v1/messages /v1/completions /v1/embeddings, GET /v1/models /status /metrics /healthz)");
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

/// The Redis backend for a policy whose `[state.redis]` section asks for shared state:
/// connected when this binary has the `redis` feature; otherwise shared limits and budgets
/// act per instance, and this says so on stderr rather than silently.
fn shared_backend(
    plan: &crate::plan::Plan,
) -> Result<Option<Arc<dyn crate::exec::shared::StateBackend>>, String> {
    let Some(settings) = plan.redis.as_ref() else {
        return Ok(None);
    };
    #[cfg(feature = "redis")]
    {
        let backend = crate::exec::shared::redis::RedisBackend::from_env(settings)
            .map_err(|e| format!("[state.redis]: {e}"))?;
        eprintln!(
            "tollgate: shared limits, budgets and breakers in Redis (URL from {})",
            settings.url_env
        );
        Ok(Some(Arc::new(backend)))
    }
    #[cfg(not(feature = "redis"))]
    {
        eprintln!(
            "warning: the policy has [state.redis] (URL from {}), but this tollgate was built without the `redis` feature: \
             shared limits, budgets and breakers act per instance. Build with `cargo build --release --features redis`.",
            settings.url_env
        );
        Ok(None)
    }
}

/// Whether a reloaded plan's `[state.redis]` (`new`) can run on the Redis connection made at
/// start-up (`connected`; `None` when there is none). `tollgate serve` connects only at
/// start-up, so a reload that adds `[state.redis]` to a server started without it, or
/// changes where or how it connects (`url`, `pool_size`), is refused with the reason (the
/// running plan stays; a restart applies it). Removing the section is fine (shared entities
/// act as local ones), and so is re-adding the same connection. A binary built without the
/// `redis` feature (`with_redis = false`) never connects: there the section only warns, as
/// at start-up.
fn redis_reload_check(
    connected: Option<&RedisSettings>,
    new: Option<&RedisSettings>,
    with_redis: bool,
) -> Result<(), String> {
    let Some(new) = new else {
        return Ok(());
    };
    match connected {
        None if with_redis => Err(format!(
            "[state.redis] was added, but `tollgate serve` connects to Redis only at start-up: \
             restart it to share state through {} (the running plan stays)",
            new.url_env
        )),
        None => {
            eprintln!(
                "warning: the policy has [state.redis], but this tollgate was built without the `redis` feature: \
                 shared limits, budgets and breakers act per instance"
            );
            Ok(())
        }
        Some(c) if c.url_env != new.url_env || c.pool_size != new.pool_size => Err(format!(
            "[state.redis] changed its connection (url from {} → {}, pool_size {} → {}), but \
             `tollgate serve` connects to Redis only at start-up: restart it to apply (the running plan stays)",
            c.url_env, new.url_env, c.pool_size, new.pool_size
        )),
        Some(_) => Ok(()),
    }
}

/// Hot reload: watch `paths` (and reload on SIGHUP); each plan that compiles and whose HTTP
/// clients can be built is swapped in, anything else keeps the running plan. Every event is
/// logged on stderr, with the same diagnostics `tollgate check` prints.
///
/// `connected`: the `[state.redis]` settings of the Redis connection made at start-up, if
/// any; a plan that needs another connection is refused ([`redis_reload_check`]).
fn start_reload(
    relay: &Relay,
    paths: &[PathBuf],
    connected: Option<RedisSettings>,
) -> Option<ReloadHandle> {
    let r = relay.clone();
    let prepare: Prepare = Arc::new(move |plan| {
        redis_reload_check(
            connected.as_ref(),
            plan.redis.as_ref(),
            cfg!(feature = "redis"),
        )?;
        r.prepare_plan(plan).map_err(|e| e.to_string())
    });
    let source = PolicySource::new(paths.iter().cloned());
    let handle = match reload::watch_with(
        source,
        relay.executor(),
        ReloadConfig::default(),
        Some(prepare),
    ) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("warning: hot reload is off: {e}");
            return None;
        }
    };
    let mut events = handle.subscribe();
    let reloader = handle.reloader();
    tokio::spawn(async move {
        let mut hup = super::watch::hangup();
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) => {
                        eprintln!("tollgate: reload: {ev}");
                        if let ReloadEvent::Rejected { diagnostics, .. } | ReloadEvent::Missing { diagnostics, .. } = &ev {
                            eprint!("{}", diagnostics.render(color()));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = super::watch::next_hangup(&mut hup) => {
                    // The outcome is published to `events` and logged above.
                    if reloader.reload_now().await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Some(handle)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url_env: &str, pool_size: u32) -> RedisSettings {
        RedisSettings {
            url_env: url_env.into(),
            key_prefix: "tollgate:".into(),
            timeout: std::time::Duration::from_millis(50),
            pool_size,
            fail_mode: crate::plan::FailMode::Open,
            expected_instances: 1,
            lease: 1,
            breaker_poll: crate::plan::DEFAULT_BREAKER_POLL,
        }
    }

    #[test]
    fn a_reload_that_needs_a_new_redis_connection_is_refused() {
        let s = settings("REDIS_URL", 1);
        // Started without Redis: adding it needs a restart (with the feature).
        let e = redis_reload_check(None, Some(&s), true).unwrap_err();
        assert!(
            e.contains("[state.redis] was added") && e.contains("restart"),
            "{e}"
        );
        assert!(redis_reload_check(None, Some(&s), false).is_ok());
        assert!(redis_reload_check(None, None, true).is_ok());
        // Connected: same connection (other settings may change), removed: fine.
        let tuned = RedisSettings {
            lease: 8,
            key_prefix: "x:".into(),
            ..s.clone()
        };
        assert!(redis_reload_check(Some(&s), Some(&tuned), true).is_ok());
        assert!(redis_reload_check(Some(&s), None, true).is_ok());
        // Another URL variable or pool size: a restart.
        let e = redis_reload_check(Some(&s), Some(&settings("OTHER_URL", 1)), true).unwrap_err();
        assert!(e.contains("REDIS_URL → OTHER_URL"), "{e}");
        assert!(redis_reload_check(Some(&s), Some(&settings("REDIS_URL", 4)), true).is_err());
    }
}
