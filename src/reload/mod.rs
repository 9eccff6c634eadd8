//! Hot reload: policy edits take effect without a restart, and a bad edit never does.
//!
//! [`watch`] watches every file and directory a policy is loaded from (through their parent
//! directories, so every way an editor saves a file is seen: write in place, truncate and
//! write, write a temporary file and rename it over, delete and recreate, a directory
//! removed and recreated; `*.toml` files added to a watched directory count). Events are
//! debounced ([`ReloadConfig::debounce`], 75 ms by default), then the policy is loaded
//! again — environment overrides included, read again every time — and compiled:
//!
//! - **valid and different**: the plan is swapped into the [`Executor`] at once
//!   ([`Executor::swap_plan`]: one atomic pointer swap; calls in flight finish under the
//!   plan they started with, a request never sees two plans) and [`ReloadEvent::Applied`]
//!   says what changed ([`Summary`]);
//! - **valid and equivalent** (a comment, a touch): nothing is swapped,
//!   [`ReloadEvent::Unchanged`];
//! - **invalid**: the running plan is kept, [`ReloadEvent::Rejected`] carries the
//!   diagnostics `tollgate check` prints;
//! - **a file or directory gone**: the running plan is kept, [`ReloadEvent::Missing`]
//!   warns; the edit that brings it back is applied.
//!
//! State survives a reload for every entity that still exists under the same name
//! (breakers, limiter buckets, budget spend, latency EWMAs); a changed limit applies at
//! once without refilling its bucket. See [`Runtime::carry_over`](crate::exec::state::Runtime::carry_over).
//!
//! Reloads run on a thread of their own (compiling is CPU work and must not stall an async
//! runtime); events are published on a `tokio::sync::broadcast` channel.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate::exec::Executor;
//! use tollgate::plan::Plan;
//! use tollgate::policy::LoadOptions;
//! use tollgate::reload::{self, PolicySource, ReloadConfig, ReloadEvent};
//!
//! let plan = Plan::load(&LoadOptions::new(["policies/"]))?.plan;
//! let executor = Executor::new(plan)?;
//! let handle = reload::watch(PolicySource::new(["policies/"]), &executor, ReloadConfig::default())?;
//! let mut events = handle.subscribe();
//! while let Ok(ev) = events.recv().await {
//!     println!("{ev}");
//!     if let ReloadEvent::Rejected { diagnostics, .. } = &ev {
//!         eprint!("{}", diagnostics.render(false));
//!     }
//! }
//! # Ok(()) }
//! ```

mod event;
mod summary;
mod watcher;

use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};

pub use event::ReloadEvent;
pub use summary::{Changes, Summary};

use crate::exec::Executor;
use crate::policy::{LoadCache, LoadOptions};
use watcher::{Msg, WatchSet, Worker};

/// Default debounce: long enough to merge an editor's write-rename-chmod burst, short
/// enough to feel immediate.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(75);

/// Why watching or reloading failed. Published as [`ReloadEvent::Error`] while watching
/// (the running plan is kept), or returned by [`watch`] and [`ReloadHandle::reload_now`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The file watcher failed (starting, adding a watch, or reporting events).
    #[error("watching {}: {message}", path.as_ref().map_or_else(|| "policy files".into(), |p| p.display().to_string()))]
    Watch {
        /// The path concerned, if known.
        path: Option<PathBuf>,
        /// What the watcher said.
        message: String,
    },
    /// The new plan compiled but the executor could not build its state (a compiler bug).
    #[error("cannot apply the new plan: {0}")]
    Build(String),
    /// The plan compiled, but the `prepare` hook of [`watch_with`] refused it (e.g. the relay
    /// could not build an HTTP client: a key is unset); the running plan is kept.
    #[error("the new plan was refused: {0}")]
    Refused(String),
    /// A reload panicked (a bug); the running plan is kept and watching goes on.
    #[error("reload panicked: {0}")]
    Panicked(String),
    /// The watcher has stopped.
    #[error("the watcher has stopped")]
    Stopped,
}

/// Where environment overrides come from on each reload.
#[derive(Clone)]
enum EnvSource {
    /// The process environment, read again on every reload.
    Process,
    /// These variables, always.
    Fixed(Vec<(String, String)>),
    /// Whatever the function returns, called on every reload.
    With(Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>),
}

/// What to load on each reload: paths (files, or directories of `*.toml`) and where the
/// `TOLLGATE__…` environment overrides come from.
///
/// ```
/// use tollgate::reload::PolicySource;
///
/// // Process environment, read again on every reload (what `tollgate watch` does).
/// let live = PolicySource::new(["policies/"]);
/// // Fixed overrides (tests), or a function called on every reload.
/// let fixed = PolicySource::new(["policies/minimal.toml"]).with_env([("TOLLGATE__DEFAULTS__RETRY", "default")]);
/// let opts = fixed.load_options();
/// assert_eq!(opts.env.len(), 1);
/// let none = PolicySource::new(["policies/"]).with_env_fn(Vec::new);
/// assert!(none.load_options().env.is_empty());
/// # let _ = live;
/// ```
#[derive(Clone)]
pub struct PolicySource {
    paths: Vec<PathBuf>,
    /// In-memory policy text ([`LoadOptions::texts`]): loaded again as is on each reload.
    texts: Vec<(PathBuf, String)>,
    env: EnvSource,
}

impl fmt::Debug for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env = match &self.env {
            EnvSource::Process => "process",
            EnvSource::Fixed(_) => "fixed",
            EnvSource::With(_) => "function",
        };
        f.debug_struct("PolicySource")
            .field("paths", &self.paths)
            .field("env", &env)
            .finish()
    }
}

impl PolicySource {
    /// These paths, with overrides from the process environment read again on each reload.
    pub fn new<P: Into<PathBuf>>(paths: impl IntoIterator<Item = P>) -> Self {
        PolicySource {
            paths: paths.into_iter().map(Into::into).collect(),
            texts: Vec::new(),
            env: EnvSource::Process,
        }
    }
    /// Uses these overrides on every reload instead of the process environment.
    pub fn with_env<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env = EnvSource::Fixed(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }
    /// Calls `f` on every reload for the overrides (e.g. to read a secrets file).
    pub fn with_env_fn(
        mut self,
        f: impl Fn() -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> Self {
        self.env = EnvSource::With(Arc::new(f));
        self
    }
    /// The paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
    /// What to load now (reads the environment source).
    pub fn load_options(&self) -> LoadOptions {
        let env = match &self.env {
            EnvSource::Process => crate::policy::process_overrides(),
            EnvSource::Fixed(v) => v.clone(),
            EnvSource::With(f) => f(),
        };
        LoadOptions {
            paths: self.paths.clone(),
            env,
            texts: self.texts.clone(),
        }
    }
}

impl From<LoadOptions> for PolicySource {
    /// The options' paths, with their environment as fixed overrides.
    fn from(o: LoadOptions) -> Self {
        PolicySource {
            paths: o.paths,
            texts: o.texts,
            env: EnvSource::Fixed(o.env),
        }
    }
}

/// How to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Quiet time after the last file event before reloading (default [`DEFAULT_DEBOUNCE`]).
    pub debounce: Duration,
    /// Events a slow subscriber may fall behind before it sees `Lagged` (default 64).
    pub capacity: usize,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            debounce: DEFAULT_DEBOUNCE,
            capacity: 64,
        }
    }
}

impl ReloadConfig {
    /// Sets the debounce (at least 1 ms).
    pub fn debounce(mut self, d: Duration) -> Self {
        self.debounce = d.max(Duration::from_millis(1));
        self
    }
}

/// Triggers reloads of a running watcher; see [`ReloadHandle::reloader`].
#[derive(Clone)]
pub struct Reloader {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloader")
    }
}

impl Reloader {
    /// Reloads now and returns the outcome (subscribers receive it too); fails with
    /// [`ReloadError::Stopped`] once the watcher is stopped.
    pub async fn reload_now(&self) -> Result<ReloadEvent, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Now(tx))
            .map_err(|_| ReloadError::Stopped)?;
        rx.await.map_err(|_| ReloadError::Stopped)
    }
}

/// A running watcher. Dropping it stops watching (as [`stop`](Self::stop) does).
#[derive(Debug)]
pub struct ReloadHandle {
    tx: mpsc::Sender<Msg>,
    events: broadcast::Sender<ReloadEvent>,
    thread: Option<JoinHandle<()>>,
    source: PolicySource,
}

/// A hook run on each new plan just before it is swapped in; an `Err` keeps the running
/// plan (see [`watch_with`]).
pub type Prepare = std::sync::Arc<dyn Fn(&crate::plan::Plan) -> Result<(), String> + Send + Sync>;

/// Starts watching `source` and reloading it into `executor`.
///
/// The executor keeps the plan it has until a change is seen (or
/// [`ReloadHandle::reload_now`] is called): an edit made between loading that plan and this
/// call is picked up by the next event or by `reload_now`.
///
/// Fails only if the file watcher cannot be started; every later problem is an event.
pub fn watch(
    source: impl Into<PolicySource>,
    executor: &Executor,
    config: ReloadConfig,
) -> Result<ReloadHandle, ReloadError> {
    watch_with(source, executor, config, None)
}

/// Like [`watch`], with a hook run on every new plan before it is swapped in. Whatever
/// must change together with the plan (the relay's HTTP clients) is prepared there; if the
/// hook fails, the running plan stays and [`ReloadError::Refused`] is published.
pub fn watch_with(
    source: impl Into<PolicySource>,
    executor: &Executor,
    config: ReloadConfig,
    prepare: Option<Prepare>,
) -> Result<ReloadHandle, ReloadError> {
    let source = source.into();
    let (tx, rx) = mpsc::channel();
    let fs_tx = tx.clone();
    let start_err = |e: notify::Error| ReloadError::Watch {
        path: e.paths.first().cloned(),
        message: e.to_string(),
    };
    let mut debouncer = notify_debouncer_full::new_debouncer(
        config.debounce.max(Duration::from_millis(1)),
        None,
        move |r| {
            let _ = fs_tx.send(Msg::Fs(r));
        },
    )
    .map_err(start_err)?;
    let mut set = WatchSet::new(source.paths());
    let (errors, _) = set.sync(&mut debouncer, &[]);
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let (events, _) = broadcast::channel(config.capacity.max(1));
    let worker = Worker {
        source: source.clone(),
        executor: executor.clone(),
        prepare,
        set,
        debouncer,
        rx,
        events: events.clone(),
        cache: LoadCache::default(),
    };
    let thread = std::thread::Builder::new()
        .name("tollgate-reload".into())
        .spawn(move || worker.run())
        .map_err(|e| ReloadError::Watch {
            path: None,
            message: format!("cannot start the reload thread: {e}"),
        })?;
    Ok(ReloadHandle {
        tx,
        events,
        thread: Some(thread),
        source,
    })
}

impl ReloadHandle {
    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadEvent> {
        self.events.subscribe()
    }

    /// Reloads now (e.g. on `SIGHUP`), whether or not a file changed, and returns the
    /// outcome, which subscribers also receive.
    pub async fn reload_now(&self) -> Result<ReloadEvent, ReloadError> {
        self.reloader().reload_now().await
    }

    /// A cloneable trigger for [`reload_now`](Self::reload_now), for another task (e.g. one
    /// that reloads on `SIGHUP`) while this handle keeps owning the watcher.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            tx: self.tx.clone(),
        }
    }

    /// [`reload_now`](Self::reload_now) for synchronous code. Panics if called from within
    /// an async runtime (as tokio's `blocking_recv` does); use `reload_now` there.
    pub fn reload_now_blocking(&self) -> Result<ReloadEvent, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Now(tx))
            .map_err(|_| ReloadError::Stopped)?;
        rx.blocking_recv().map_err(|_| ReloadError::Stopped)
    }

    /// What is watched and loaded.
    pub fn source(&self) -> &PolicySource {
        &self.source
    }

    /// Stops watching and waits for the reload thread to finish (at most one reload and
    /// one debounce tick). Subscribers then see the channel closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ReloadHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
