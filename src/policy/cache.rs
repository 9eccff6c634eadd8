//! Loading again what was loaded before: each file whose bytes did not change since the
//! last load is not parsed or deserialized again.
//!
//! A reload of a policy of 50,000 callers spread over fifty files, one caller edited, reads
//! the fifty files but parses one: the rest is what it was (see "Reload" in BENCHMARKS.md).
//! It keeps a copy of each file's entries and text (about 2.7 KB per caller with its budget),
//! so it keeps nothing for a policy of one file, which is parsed whole either way.
//!
//! # The promise: the same outcome as [`load`]
//! A [`LoadCache`] changes how long a load takes, never what it gives:
//! [`load_cached`] returns what [`load`] returns for the same files (policy, diagnostics,
//! route paths, and so the same compile outcome). It takes the shortcut only where that is
//! so by construction, and otherwise calls [`load`]:
//! - each file is read alone (parsed, its entries deserialized, as `load` reads the merged
//!   document) and kept only if that reported nothing: a file with any diagnostic, and any
//!   load with one, goes through [`load`], which words and places them;
//! - the pieces are put together only where `load` would merge the files plainly
//!   (`merge::simple`): a top-level key in several files must be a named section whose names
//!   differ from file to file, or `[[routes]]` (concatenated in file order), never
//!   `version`, `defaults` or `state`; a name in two files (an error) goes through [`load`];
//! - environment overrides (`TOLLGATE__…`), text given in memory, and figment's own keys go
//!   through [`load`].
//!
//! `tests/load.rs` (`a_cached_load_is_a_load`) holds it to that: every corpus and example
//! file, directory and neighbouring pair, loaded cold, warm, and after each line of one file
//! is removed, against [`load`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use super::load::{load, LoadOptions, Loaded, ENV_PREFIX};
use super::spans::{FileFacts, NAMED_SECTIONS};
use super::tree::Node;
use super::Policy;
use crate::diagnostic::SourceFile;

/// The files of earlier loads, each read alone, kept while their bytes stay the same. A
/// reload watcher keeps one (see [`crate::reload`]).
#[derive(Default)]
pub struct LoadCache {
    files: HashMap<PathBuf, Piece>,
    parsed: usize,
}

impl std::fmt::Debug for LoadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadCache")
            .field("files", &self.files.len())
            .field("parsed", &self.parsed)
            .finish()
    }
}

/// One file read alone, without a diagnostic.
struct Piece {
    /// Its text, secrets masked for display, as [`load`] keeps it.
    source: SourceFile,
    /// Its entries (all of them: a piece reported nothing, so none was left out).
    policy: Policy,
    /// Its top-level keys.
    keys: Vec<String>,
    /// Whether its `routes`, if it has any, is an array of tables (`[[routes]]`) rather than
    /// an inline array.
    route_tables: Option<bool>,
}

/// [`load`], reading again only the files whose bytes changed since `cache` last saw them;
/// the outcome is [`load`]'s (see the module docs). Files no longer loaded leave the cache.
pub fn load_cached(opts: &LoadOptions, cache: &mut LoadCache) -> Loaded {
    match pieces(opts, cache) {
        Some(paths) => assemble(&paths, cache).unwrap_or_else(|| load(opts)),
        None => load(opts),
    }
}

impl LoadCache {
    /// Reads every file of `opts` into the cache (what the first [`load_cached`] would do),
    /// so that the first reload already reads only what changed.
    pub fn warm(&mut self, opts: &LoadOptions) {
        let _ = pieces(opts, self);
    }

    /// How many times a file was parsed into the cache (read for the first time, or read
    /// again because its bytes changed).
    pub fn parsed(&self) -> usize {
        self.parsed
    }
}

/// Brings the cache up to date with the files of `opts` and returns their paths in load
/// order; `None` when the shortcut does not apply or a file is not clean on its own.
fn pieces(opts: &LoadOptions, cache: &mut LoadCache) -> Option<Vec<PathBuf>> {
    let overridden = opts.env.iter().any(|(k, _)| k.starts_with(ENV_PREFIX));
    if overridden || !opts.texts.is_empty() {
        return None;
    }
    let mut probe = Loaded::empty();
    let paths = probe.expand(&opts.paths);
    if !probe.is_clean() {
        return None;
    }
    // One file is parsed whole either way: keeping its pieces would only cost memory.
    if paths.len() < 2 {
        cache.files.clear();
        return None;
    }
    let current: HashSet<&PathBuf> = paths.iter().collect();
    cache.files.retain(|p, _| current.contains(p));
    let mut all_clean = true;
    for path in &paths {
        let text = probe.read(path, None)?;
        if cache.files.get(path).is_some_and(|p| p.source.text == text) {
            continue;
        }
        cache.parsed += 1;
        match read_alone(path, text) {
            Some(piece) => {
                cache.files.insert(path.clone(), piece);
            }
            None => {
                cache.files.remove(path);
                all_clean = false;
            }
        }
    }
    all_clean.then_some(paths)
}

/// One file parsed and deserialized on its own; `None` if that reported anything.
fn read_alone(path: &PathBuf, text: String) -> Option<Piece> {
    // Keys figment rebuilds tagged values from: `load` reads such files through figment.
    if text.contains("___figment_value") {
        return None;
    }
    let doc = toml_edit::ImDocument::parse(text.as_str()).ok()?;
    let table = doc.as_table();
    let secrets = FileFacts::of(table, false).secrets;
    let mut l = Loaded::empty();
    l.extract_root(Node::Table(table));
    if !l.is_clean() {
        return None;
    }
    let keys = table.iter().map(|(k, _)| k.to_string()).collect();
    let route_tables = table.get("routes").map(|i| i.is_array_of_tables());
    drop(doc);
    let mut source = SourceFile::new(path, text);
    for s in secrets {
        source.redact(s);
    }
    Some(Piece {
        source,
        policy: l.policy,
        keys,
        route_tables,
    })
}

/// The cached pieces of `paths` as one [`Loaded`], as [`load`] would merge them; `None`
/// where it would not merge them plainly.
fn assemble(paths: &[PathBuf], cache: &LoadCache) -> Option<Loaded> {
    let pieces: Vec<&Piece> = paths
        .iter()
        .map(|p| cache.files.get(p))
        .collect::<Option<_>>()?;
    if !merges_plainly(&pieces) {
        return None;
    }
    let mut l = Loaded::empty();
    for piece in pieces {
        add_entries(&mut l.policy, &piece.policy)?;
        l.add_clean_file(piece.source.clone(), piece.policy.routes.len());
    }
    Some(l)
}

/// Whether every top-level key written in several files is one [`add_entries`] merges as
/// `merge::simple` allows: a named section, or `routes` of one kind in every file.
fn merges_plainly(pieces: &[&Piece]) -> bool {
    let mut files_of: BTreeMap<&str, usize> = BTreeMap::new();
    for p in pieces {
        for k in &p.keys {
            *files_of.entry(k.as_str()).or_default() += 1;
        }
    }
    let kinds: Vec<bool> = pieces.iter().filter_map(|p| p.route_tables).collect();
    let one_route_kind = kinds.windows(2).all(|w| w[0] == w[1]);
    files_of
        .iter()
        .all(|(k, n)| *n == 1 || NAMED_SECTIONS.contains(k) || (*k == "routes" && one_route_kind))
}

/// Adds one file's entries to `into`; `None` if a name is already there (defined in two
/// files: an error [`load`] reports).
fn add_entries(into: &mut Policy, from: &Policy) -> Option<()> {
    fn named<T: Clone>(into: &mut BTreeMap<String, T>, from: &BTreeMap<String, T>) -> Option<()> {
        if into.is_empty() {
            into.clone_from(from);
            return Some(());
        }
        for (name, v) in from {
            if into.insert(name.clone(), v.clone()).is_some() {
                return None;
            }
        }
        Some(())
    }
    // Destructured, so that a new section cannot be forgotten here.
    let Policy {
        version,
        defaults,
        upstreams,
        models,
        retry,
        breakers,
        routes,
        budgets,
        callers,
        state,
    } = from;
    // Written in one file at most (`merges_plainly`): the one that has it sets it.
    if version.is_some() {
        into.version = *version;
    }
    if *defaults != Default::default() {
        into.defaults = defaults.clone();
    }
    if state.is_some() {
        into.state = state.clone();
    }
    named(&mut into.upstreams, upstreams)?;
    named(&mut into.models, models)?;
    named(&mut into.retry, retry)?;
    named(&mut into.breakers, breakers)?;
    named(&mut into.budgets, budgets)?;
    named(&mut into.callers, callers)?;
    into.routes.extend(routes.iter().cloned());
    Some(())
}
