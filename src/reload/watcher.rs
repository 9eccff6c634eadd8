//! The watch set (which directories to watch for the given paths) and the worker thread
//! that turns debounced file events into reloads.
//!
//! # Why parent directories
//! Editors rarely write a file in place: vim writes a new file and renames it over the old
//! one, others delete and recreate, and a watch on the file itself dies with its inode. So
//! the watcher watches the *directory* holding each given path (and each given directory
//! itself, for `*.toml` files added later). When a directory on the way is missing, the
//! nearest existing ancestor is watched instead, so its recreation is seen; after every
//! batch of events the set is recomputed, and a watched directory that was removed or
//! replaced is watched again.
//!
//! # Symlink swaps
//! Kubernetes mounts a ConfigMap as `policy.toml -> ..data/policy.toml` with
//! `..data -> ..2026_11_22_…`, and updates it by pointing `..data` at a new directory: no
//! event names `policy.toml`. So after any batch of events in a watched directory the
//! worker also resolves every policy file through its symlinks, and reloads when a
//! resolution changed.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::{broadcast, oneshot};

use super::{PolicySource, ReloadError, ReloadEvent, Summary};
use crate::exec::Executor;
use crate::plan::compile;
use crate::policy::{load_cached, LoadCache};

/// The debouncer the worker drives.
pub(crate) type FsDebouncer = Debouncer<RecommendedWatcher, RecommendedCache>;

/// A message to the worker.
pub(crate) enum Msg {
    /// Debounced file events (or watcher errors).
    Fs(DebounceEventResult),
    /// Reload now and reply with the outcome.
    Now(oneshot::Sender<ReloadEvent>),
    /// Stop watching.
    Stop,
}

/// The given paths, made absolute, and the directories currently watched for them.
#[derive(Debug)]
pub(crate) struct WatchSet {
    roots: Vec<PathBuf>,
    watched: BTreeSet<PathBuf>,
    /// Every policy file the roots name, with the file it resolves to through symlinks.
    resolved: Vec<(PathBuf, Option<PathBuf>)>,
}

impl WatchSet {
    pub(crate) fn new(paths: &[PathBuf]) -> Self {
        let roots = paths
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect();
        let mut set = WatchSet {
            roots,
            watched: BTreeSet::new(),
            resolved: Vec::new(),
        };
        set.resolved = set.resolve();
        set
    }

    /// Each policy file of the roots (a directory's `*.toml` files) and what it resolves to.
    fn resolve(&self) -> Vec<(PathBuf, Option<PathBuf>)> {
        let mut out = Vec::new();
        for r in &self.roots {
            let files = if r.is_dir() {
                crate::policy::toml_files_in(r).unwrap_or_default()
            } else {
                vec![r.clone()]
            };
            out.extend(files.into_iter().map(|f| {
                let target = std::fs::canonicalize(&f).ok();
                (f, target)
            }));
        }
        out
    }

    /// Whether a policy file now resolves (through symlinks) to another file than when
    /// last asked: a symlink swap that no event names (see the module docs).
    pub(crate) fn links_moved(&mut self) -> bool {
        let now = self.resolve();
        let moved = now != self.resolved;
        self.resolved = now;
        moved
    }

    /// Directories to watch now: each given directory that exists, and the nearest existing
    /// ancestor of each given path's parent.
    fn desired(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        for r in &self.roots {
            if r.is_dir() {
                out.insert(r.clone());
            }
            let mut a = r.parent();
            while let Some(dir) = a {
                if dir.is_dir() {
                    out.insert(dir.to_path_buf());
                    break;
                }
                a = dir.parent();
            }
        }
        out
    }

    /// Whether an event at `path` can change what loading the roots reads: a given path, an
    /// ancestor of one (a directory removed, renamed or recreated), or a `*.toml` file
    /// directly inside a given directory.
    pub(crate) fn relevant(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| {
            r.starts_with(path)
                || (path.parent() == Some(r.as_path())
                    && path.extension().is_some_and(|x| x == "toml"))
        })
    }

    /// Brings the watches in line with [`desired`](Self::desired). A watched directory that
    /// an event names (or an ancestor of it) was removed, renamed or recreated: it is
    /// watched again, so the watch follows the directory now at that path. Returns the
    /// errors (as events to publish) and whether a new directory is now watched.
    pub(crate) fn sync(
        &mut self,
        w: &mut FsDebouncer,
        touched: &[PathBuf],
    ) -> (Vec<ReloadError>, bool) {
        let desired = self.desired();
        let mut errors = Vec::new();
        let mut added = false;
        for stale in self
            .watched
            .difference(&desired)
            .cloned()
            .collect::<Vec<_>>()
        {
            // The directory may be gone already, which ends its watch: nothing to report.
            let _ = w.unwatch(&stale);
            self.watched.remove(&stale);
        }
        for dir in desired {
            let rearm = self.watched.contains(&dir) && touched.iter().any(|t| dir.starts_with(t));
            if rearm {
                let _ = w.unwatch(&dir);
                self.watched.remove(&dir);
            }
            if self.watched.contains(&dir) {
                continue;
            }
            match w.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    added |= !rearm;
                    self.watched.insert(dir);
                }
                // Removed between the check and the watch: the next event on its parent
                // (watched as the nearest ancestor) brings it back.
                Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
                Err(e) => errors.push(ReloadError::Watch {
                    path: Some(dir),
                    message: e.to_string(),
                }),
            }
        }
        (errors, added)
    }

    /// Directories watched now.
    #[cfg(test)]
    pub(crate) fn watched(&self) -> &BTreeSet<PathBuf> {
        &self.watched
    }
}

/// The worker: owns the debouncer and the watch set, reloads, publishes.
pub(crate) struct Worker {
    pub(crate) source: PolicySource,
    pub(crate) executor: Executor,
    pub(crate) prepare: Option<super::Prepare>,
    pub(crate) set: WatchSet,
    pub(crate) debouncer: FsDebouncer,
    pub(crate) rx: Receiver<Msg>,
    pub(crate) events: broadcast::Sender<ReloadEvent>,
    /// The files as last read: a reload parses only those whose bytes changed.
    pub(crate) cache: LoadCache,
}

impl Worker {
    /// Runs until [`Msg::Stop`] (or every sender is gone).
    pub(crate) fn run(mut self) {
        // Read once now, so that the first reload already reads only what changed. Guarded as
        // a reload is: a panic while loading leaves the cache empty, and the worker running.
        let warmed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.cache.warm(&self.source.load_options())
        }));
        if let Err(p) = warmed {
            self.cache = LoadCache::default();
            self.publish(ReloadEvent::Error(ReloadError::Panicked(panic_message(&p))));
        }
        while let Ok(first) = self.rx.recv() {
            // Take everything queued, so a burst of events costs one reload.
            let mut batch = vec![first];
            batch.extend(self.rx.try_iter());
            let mut reload = false;
            let mut stop = false;
            let mut replies = Vec::new();
            let mut touched = Vec::new();
            for m in batch {
                match m {
                    Msg::Fs(Ok(events)) => {
                        for e in events.iter().filter(|e| changes_content(&e.event.kind)) {
                            for p in &e.event.paths {
                                reload |= self.set.relevant(p);
                            }
                            touched.extend(e.event.paths.iter().cloned());
                        }
                    }
                    Msg::Fs(Err(errors)) => {
                        for e in errors {
                            self.publish(ReloadEvent::Error(ReloadError::Watch {
                                path: e.paths.first().cloned(),
                                message: e.to_string(),
                            }));
                        }
                        // Events may have been lost with the error: read the files again.
                        reload = true;
                    }
                    Msg::Now(reply) => {
                        reload = true;
                        replies.push(reply);
                    }
                    Msg::Stop => stop = true,
                }
            }
            if stop {
                break; // pending replies are dropped: their callers get `Stopped`
            }
            if !touched.is_empty() {
                // Also updates what the files resolve to when they were reloaded anyway.
                reload |= self.set.links_moved();
            }
            let (errors, added) = self.set.sync(&mut self.debouncer, &touched);
            for e in errors {
                self.publish(ReloadEvent::Error(e));
            }
            // A directory watched anew may already hold the files written before its watch.
            if reload || added {
                let ev = match std::panic::catch_unwind(AssertUnwindSafe(|| self.reload())) {
                    Ok(ev) => ev,
                    Err(p) => {
                        // The panic may have come mid-update: start the cache afresh.
                        self.cache = LoadCache::default();
                        ReloadEvent::Error(ReloadError::Panicked(panic_message(&p)))
                    }
                };
                self.publish(ev.clone());
                for r in replies {
                    let _ = r.send(ev.clone());
                }
            }
        }
        self.debouncer.stop();
    }

    fn publish(&self, ev: ReloadEvent) {
        match &ev {
            ReloadEvent::Applied { .. } => tracing::info!(target: "tollgate::reload", "{ev}"),
            ReloadEvent::Unchanged { .. } => tracing::debug!(target: "tollgate::reload", "{ev}"),
            _ => tracing::warn!(target: "tollgate::reload", "{ev}"),
        }
        // No receiver is not an error: nobody is listening.
        let _ = self.events.send(ev);
    }

    /// Loads (environment read again), compiles, and swaps if valid and different.
    pub(crate) fn reload(&mut self) -> ReloadEvent {
        reload_once(
            &self.source,
            &self.executor,
            self.prepare.as_ref(),
            &mut self.cache,
        )
    }
}

/// One reload of `source` into `executor`.
pub(crate) fn reload_once(
    source: &PolicySource,
    executor: &Executor,
    prepare: Option<&super::Prepare>,
    cache: &mut LoadCache,
) -> ReloadEvent {
    let version = executor.runtime().version();
    let opts = source.load_options();
    let loaded = load_cached(&opts, cache);
    if loaded.io_failed() {
        let diagnostics = compile(loaded).err().unwrap_or_default();
        let paths = opts.paths.iter().filter(|p| !p.exists()).cloned().collect();
        return ReloadEvent::Missing {
            version,
            paths,
            diagnostics,
        };
    }
    let compiled = match compile(loaded) {
        Ok(c) => c,
        Err(diagnostics) => {
            return ReloadEvent::Rejected {
                version,
                diagnostics,
            }
        }
    };
    let summary = Summary::between(&executor.plan(), &compiled.plan);
    if summary.is_empty() {
        return ReloadEvent::Unchanged { version };
    }
    if let Some(prepare) = prepare {
        if let Err(reason) = prepare(&compiled.plan) {
            return ReloadEvent::Error(ReloadError::Refused(reason));
        }
    }
    match executor.swap_plan(compiled.plan) {
        Ok(version) => ReloadEvent::Applied {
            version,
            summary: Box::new(summary),
            warnings: compiled.warnings,
        },
        Err(e) => ReloadEvent::Error(ReloadError::Build(e.to_string())),
    }
}

/// Whether an event kind can change a file's content or existence. Opening, reading and
/// closing a file unwritten cannot, and must not count: every reload reads the files, and
/// counting those reads would reload forever.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevance() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("conf")).unwrap();
        let set = WatchSet::new(&[d.join("a.toml"), d.join("conf")]);
        assert!(set.relevant(&d.join("a.toml")));
        assert!(
            !set.relevant(&d.join("b.toml")),
            "a sibling of a given file"
        );
        assert!(!set.relevant(&d.join(".a.toml.swp")));
        assert!(!set.relevant(&d.join("a.toml.tmp")));
        assert!(
            set.relevant(&d.join("conf/new.toml")),
            "a new *.toml in a given dir"
        );
        assert!(!set.relevant(&d.join("conf/notes.txt")));
        assert!(set.relevant(&d.join("conf")), "the directory itself");
        assert!(set.relevant(d), "an ancestor");
        let want: BTreeSet<PathBuf> = [d.to_path_buf(), d.join("conf")].into();
        assert_eq!(set.desired(), want);
    }

    #[test]
    fn missing_directories_fall_back_to_the_nearest_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let set = WatchSet::new(&[d.join("x/y/policy.toml")]);
        let want: BTreeSet<PathBuf> = [d.to_path_buf()].into();
        assert_eq!(set.desired(), want);
        assert!(set.watched().is_empty());
    }
}
