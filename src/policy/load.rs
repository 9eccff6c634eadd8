//! Loading: files (or directories of `*.toml`) merged with figment, then environment
//! overrides, then typed extraction that reports **every** error, each at its
//! `file:line:col`.
//!
//! # Steps
//! 1. Each path is a file, or a directory whose `*.toml` files are taken in name order.
//! 2. Each file is parsed once by toml_edit, which keeps spans: syntax errors are reported
//!    with their position. A [`SpanIndex`] (every key path → where it is written) is built
//!    from the file's text when a diagnostic first needs a position in it.
//! 3. A named entry (`upstreams.NAME`, `models.NAME`, …) or a `defaults` key written in two
//!    files is an error naming both places. `[[routes]]` from several files are concatenated
//!    in file order.
//! 4. With a `TOLLGATE__…` environment override (or files whose merge is not plain, see
//!    `merge::simple`), figment merges the files and then the overrides. Without, the
//!    documents are read directly (`tree::Node`), as figment would read them.
//! 5. Each section and entry is deserialized on its own. On an error, the offending key is
//!    pruned and the entry tried again (through figment's values, whichever path read the
//!    rest), so one bad key does not hide the next.
//!
//! # Environment overrides
//! A variable `TOLLGATE__A__B__C=value` sets the key `a.b.c`: the prefix is stripped,
//! the rest lowercased and split at `__`. Values are parsed like TOML values where they
//! can be (`600`, `true`, `[1, 2]`), else taken as strings (`90s`). For example
//! `TOLLGATE__DEFAULTS__TIMEOUTS__TOTAL=120s` or
//! `TOLLGATE__UPSTREAMS__RELAY__BASE_URL=http://127.0.0.1:8080/v1`. Names containing `.`
//! or `-`, and `[[routes]]` entries, cannot be addressed this way. Errors in an overridden
//! value name the variable instead of a line.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;

use super::merge;
use super::spans::{FileFacts, KeyPath, Seg, SpanIndex, NAMED_SECTIONS};
use super::tree::{Node, Tree};
use super::Policy;
use crate::diagnostic::{
    did_you_mean, one_of, Code, Diagnostic, FileId, Origin, SourceFile, Sources,
};

/// Prefix of environment variables that override policy keys.
pub const ENV_PREFIX: &str = "TOLLGATE__";

/// Top-level keys of a policy.
const TOP_LEVEL: [&str; 10] = [
    "version",
    "defaults",
    "upstreams",
    "models",
    "retry",
    "breakers",
    "routes",
    "budgets",
    "callers",
    "state",
];

/// The process's `TOLLGATE_…` variables (read now).
pub(crate) fn process_overrides() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Files, or directories of `*.toml` files.
    pub paths: Vec<PathBuf>,
    /// Environment variables to apply as overrides (only those starting with
    /// [`ENV_PREFIX`] are used).
    pub env: Vec<(String, String)>,
    /// Policy text held in memory, each labelled with the path diagnostics name; loaded
    /// after `paths`, as if read from a file (hot reload does not watch them).
    pub texts: Vec<(PathBuf, String)>,
}

impl LoadOptions {
    /// Load these paths with overrides from the process environment.
    pub fn new<P: Into<PathBuf>>(paths: impl IntoIterator<Item = P>) -> Self {
        LoadOptions {
            paths: paths.into_iter().map(Into::into).collect(),
            env: process_overrides(),
            texts: Vec::new(),
        }
    }

    /// Load one policy given as text (diagnostics name it `label`), with overrides from
    /// the process environment.
    ///
    /// ```
    /// use tollgate::plan::Plan;
    /// use tollgate::policy::LoadOptions;
    ///
    /// let text = r#"
    /// [upstreams.local]
    /// base_url = "http://127.0.0.1:8080/v1"
    /// [models.small]
    /// upstream = "local"
    /// [[routes]]
    /// name = "all"
    /// targets = ["small"]
    /// "#;
    /// let opts = LoadOptions::from_text("inline.toml", text).with_env(Vec::<(String, String)>::new());
    /// let plan = Plan::load(&opts).expect("compiles").plan;
    /// assert_eq!(plan.routes.len(), 1);
    /// ```
    pub fn from_text(label: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        let mut opts = LoadOptions::new(Vec::<PathBuf>::new());
        opts.texts.push((label.into(), text.into()));
        opts
    }
    /// Replace the environment overrides (for tests, or to ignore the process environment).
    pub fn with_env<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }
}

/// A loaded policy, possibly partial: entries that failed to parse are left out, listed in
/// [`Loaded::is_broken`], and explained in `diagnostics`.
#[derive(Debug)]
pub struct Loaded {
    /// The policy as far as it could be read.
    pub policy: Policy,
    /// Problems found while loading.
    pub diagnostics: Vec<Diagnostic>,
    /// The files read.
    pub sources: Sources,
    files: Vec<FileSpans>,
    env: Vec<(KeyPath, String)>,
    broken: BTreeSet<KeyPath>,
    route_paths: Vec<KeyPath>,
    io_failed: bool,
    unparsed: bool,
}

/// Loads a policy. Never panics and never stops at the first problem: see [`Loaded`].
pub fn load(opts: &LoadOptions) -> Loaded {
    load_as(opts, true)
}

/// [`load`] with every file read through figment, as when an environment override applies:
/// the reference the direct path is tested against (`tests/load.rs`). Not for use.
#[doc(hidden)]
pub fn load_through_figment(opts: &LoadOptions) -> Loaded {
    load_as(opts, false)
}

fn load_as(opts: &LoadOptions, direct: bool) -> Loaded {
    let mut l = Loaded::empty();
    let mut route_offset = 0;
    let files = if opts.paths.is_empty() && !opts.texts.is_empty() {
        Vec::new()
    } else {
        l.expand(&opts.paths)
    };
    // Each file parsed once; its span index is built from its text again only if a
    // diagnostic needs a position in it.
    let several = files.len() + opts.texts.len() > 1;
    let mut docs: Vec<Doc> = Vec::new();
    let in_memory = opts.texts.iter().map(|(p, t)| (p.clone(), Some(t.clone())));
    for (path, given) in files.into_iter().map(|p| (p, None)).chain(in_memory) {
        let Some(text) = l.read(&path, given) else {
            continue;
        };
        let parsed = toml_edit::ImDocument::parse(text.as_str())
            .map(|doc| (FileFacts::of(doc.as_table(), several), doc.into_table()));
        let mut file = SourceFile::new(&path, text);
        match parsed {
            Ok((facts, table)) => {
                for s in &facts.secrets {
                    file.redact(s.clone());
                }
                let id = l.sources.add(file);
                l.files.push(FileSpans {
                    id,
                    offset: route_offset,
                    routes: facts.routes,
                    definitions: facts.definitions,
                    index: OnceLock::new(),
                });
                route_offset += facts.routes;
                docs.push(Doc { path, table, id });
            }
            Err(e) => {
                l.unparsed = true;
                let id = l.sources.add(file);
                l.diagnostics.push(syntax_error(&e, id));
            }
        }
    }
    l.check_duplicates();
    let overrides = l.env_overrides(&opts.env);
    if direct && overrides.dict.is_empty() && merge::simple(&docs, &l.sources) {
        // No override: the documents are the policy (figment would only copy them).
        let mut root = merge::tables(docs.into_iter().map(|d| d.table));
        // One top-level key at a time, in the order of the whole root (sorted), each freed
        // once read: the document and the policy read from it are not both held whole.
        let mut keys: Vec<String> = root.iter().map(|(k, _)| k.to_string()).collect();
        keys.sort_unstable();
        for k in keys {
            let mut one = toml_edit::Table::new();
            if let Some(item) = root.remove(&k) {
                one.insert(&k, item);
            }
            l.extract_root(Node::Table(&one));
        }
    } else {
        let mut figment = Figment::new();
        for d in &docs {
            figment = figment.admerge(FileProvider {
                path: d.path.clone(),
                doc: &d.table,
                text: &l.sources.get(d.id).text,
            });
        }
        figment = figment.merge(overrides);
        let root = match figment.find_value("") {
            Ok(v) => v,
            Err(_) => Value::from(Dict::new()), // nothing loaded: an empty policy
        };
        l.extract_root(&root);
    }
    l
}

/// Where things are written in one parsed file.
#[derive(Debug)]
struct FileSpans {
    id: FileId,
    /// Index of its first `[[routes]]` entry in the merged policy.
    offset: usize,
    /// Number of its `[[routes]]` entries.
    routes: usize,
    /// See [`FileFacts::definitions`].
    definitions: Vec<KeyPath>,
    /// Built when first asked for (by a diagnostic): most loads never need it.
    index: OnceLock<SpanIndex>,
}

impl FileSpans {
    fn index(&self, sources: &Sources) -> &SpanIndex {
        self.index.get_or_init(|| {
            // The text parsed when it was loaded: it parses again, alike.
            match toml_edit::ImDocument::parse(sources.get(self.id).text.as_str()) {
                Ok(doc) => SpanIndex::build(doc.as_table()),
                Err(_) => SpanIndex::default(),
            }
        })
    }
}

/// One parsed file: its path, its document and where its text is kept.
pub(super) struct Doc {
    pub(super) path: PathBuf,
    pub(super) table: toml_edit::Table,
    pub(super) id: FileId,
}

impl Loaded {
    pub(super) fn empty() -> Self {
        Loaded {
            policy: Policy::default(),
            diagnostics: Vec::new(),
            sources: Sources::default(),
            files: Vec::new(),
            env: Vec::new(),
            broken: BTreeSet::new(),
            route_paths: Vec::new(),
            io_failed: false,
            unparsed: false,
        }
    }

    /// Whether nothing was reported and nothing left out: what was read is the policy.
    pub(super) fn is_clean(&self) -> bool {
        self.diagnostics.is_empty() && self.broken.is_empty() && !self.io_failed && !self.unparsed
    }

    /// Adds a file read cleanly elsewhere (see `policy::cache`): its text, and its
    /// `[[routes]]` count, which follow those of the files added before it.
    pub(super) fn add_clean_file(&mut self, source: SourceFile, routes: usize) {
        let offset = self.route_paths.len();
        let id = self.sources.add(source);
        self.files.push(FileSpans {
            id,
            offset,
            routes,
            definitions: Vec::new(),
            index: OnceLock::new(),
        });
        let base = KeyPath::root().key("routes");
        self.route_paths
            .extend((offset..offset + routes).map(|i| base.index(i)));
    }

    /// Whether loading hit an I/O problem (a missing path, an unreadable file): the CLI
    /// exits 2 for those, 1 for an invalid policy.
    pub fn io_failed(&self) -> bool {
        self.io_failed
    }

    /// Whether a file could not be parsed at all (a syntax error, or not UTF-8): nothing it
    /// defines is known, so the compiler reports neither references to it as unknown nor
    /// a policy without routes.
    pub fn is_partial(&self) -> bool {
        self.unparsed
    }

    /// Whether the entry at `path` (e.g. `models.x` or `routes[3]`) failed to parse and was
    /// left out of the policy; the compiler does not report references to it as unknown.
    pub fn is_broken(&self, path: &KeyPath) -> bool {
        self.broken.contains(path)
    }

    /// The key path of `policy.routes[i]` in the merged input (entries that failed to parse
    /// are not in `policy.routes`, so indices may differ).
    pub fn route_path(&self, i: usize) -> KeyPath {
        self.route_paths
            .get(i)
            .cloned()
            .unwrap_or_else(|| KeyPath::from(["routes"]).index(i))
    }

    /// Where the value at `path` is written (or its closest written ancestor).
    pub fn locate(&self, path: &KeyPath) -> Origin {
        self.find(path, false)
    }

    /// Where the key of `path` is written (for "unknown key" and the like).
    pub fn locate_key(&self, path: &KeyPath) -> Origin {
        self.find(path, true)
    }

    fn find(&self, path: &KeyPath, prefer_key: bool) -> Origin {
        if let Some((_, var)) = self.env.iter().find(|(p, _)| path.starts_with(p)) {
            return Origin::Env { var: var.clone() };
        }
        // (matched length, origin) of the longest written prefix of `path` in any file.
        let mut best: Option<(usize, Origin)> = None;
        for f in &self.files {
            let mut local = path.clone();
            if let [Seg::Key(k), Seg::Index(i), ..] = local.0.as_mut_slice() {
                if k == "routes" {
                    if *i < f.offset || *i >= f.offset + f.routes {
                        continue;
                    }
                    *i -= f.offset;
                }
            }
            // The longest written prefix with a span, if longer than the best so far.
            let mut longest = None;
            for (i, s) in f.index(&self.sources).along(&local.0).enumerate() {
                let span = if prefer_key {
                    s.key.as_ref().or(s.value.as_ref())
                } else {
                    s.value.as_ref().or(s.key.as_ref())
                };
                if let Some(span) = span {
                    longest = Some((i + 1, span));
                }
            }
            if let Some((len, span)) = longest {
                if best.as_ref().is_none_or(|(l, _)| *l < len) {
                    let span = span.clone();
                    best = Some((len, Origin::File { file: f.id, span }));
                }
            }
        }
        if best.as_ref().is_none_or(|(l, _)| *l < path.0.len()) {
            if let Some((_, var)) = self.env.iter().find(|(p, _)| p.starts_with(path)) {
                return Origin::Env { var: var.clone() };
            }
        }
        match best {
            Some((_, o)) => o,
            None => match self.files.first() {
                Some(f) => Origin::File {
                    file: f.id,
                    span: 0..0,
                },
                None => Origin::None,
            },
        }
    }

    /// The text of a file (or the text given for it); `None`, reported, if it cannot be
    /// read or is not UTF-8.
    pub(super) fn read(&mut self, path: &PathBuf, given: Option<String>) -> Option<String> {
        let read = match given {
            Some(t) => Ok(t.into_bytes()),
            None => std::fs::read(path),
        };
        match read {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.unparsed = true;
                    self.diagnostics.push(Diagnostic::error(
                        Code::Io,
                        format!(
                            "the file is not UTF-8 text (invalid byte at offset {})",
                            e.utf8_error().valid_up_to()
                        ),
                        Origin::Path(path.clone()),
                    ));
                    None
                }
            },
            Err(e) => {
                self.io_error(format!("cannot read: {e}"), Origin::Path(path.clone()));
                None
            }
        }
    }

    /// A path that cannot be read: what is left is not the policy meant, so it is not
    /// checked further.
    fn io_error(&mut self, message: impl Into<String>, origin: Origin) {
        self.io_failed = true;
        self.diagnostics
            .push(Diagnostic::error(Code::Io, message, origin));
    }

    pub(super) fn expand(&mut self, paths: &[PathBuf]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if paths.is_empty() {
            self.io_error("no policy path given", Origin::None);
        }
        for p in paths {
            if p.is_dir() {
                let files = match toml_files_in(p) {
                    Ok(f) => f,
                    Err(e) => {
                        self.io_error(
                            format!("cannot read directory: {e}"),
                            Origin::Path(p.clone()),
                        );
                        continue;
                    }
                };
                if files.is_empty() {
                    self.io_error(
                        "the directory holds no *.toml file",
                        Origin::Path(p.clone()),
                    );
                }
                out.extend(files);
            } else if p.exists() {
                out.push(p.clone());
            } else {
                self.io_error("no such file or directory", Origin::Path(p.clone()));
            }
        }
        out
    }

    fn check_duplicates(&mut self) {
        // A map, not a list: a file may hold many thousands of top-level keys.
        let mut seen: std::collections::HashMap<&KeyPath, FileId> =
            std::collections::HashMap::new();
        let mut found = Vec::new();
        for file in &self.files {
            let id = &file.id;
            for def in &file.definitions {
                if let Some(first) = seen.get(def) {
                    let span_of = |f: FileId| {
                        let file = self
                            .files
                            .iter()
                            .find(|x| x.id == f)
                            .expect("file was indexed above");
                        file.index(&self.sources)
                            .get(def)
                            .and_then(|s| s.key.clone().or(s.value.clone()))
                            .unwrap_or(0..0)
                    };
                    found.push(
                        Diagnostic::error(Code::DuplicateName, format!("`{def}` is defined in two files"), Origin::File { file: *id, span: span_of(*id) })
                            .with_label("defined again here")
                            .with_related(Origin::File { file: *first, span: span_of(*first) }, "first defined here")
                            .with_help("each name may be defined in one file only; rename or remove one of them"),
                    );
                } else {
                    seen.insert(def, *id);
                }
            }
        }
        self.diagnostics.extend(found);
    }

    fn env_overrides(&mut self, vars: &[(String, String)]) -> EnvOverrides {
        let mut dict = Dict::new();
        let mut sorted: Vec<&(String, String)> = vars
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        sorted.sort();
        for (var, value) in sorted {
            let rest = &var[ENV_PREFIX.len()..];
            let segs: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if segs.iter().any(|s| s.is_empty() || s.contains('.')) {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::InvalidOverride,
                        "malformed override variable name",
                        Origin::Env { var: var.clone() },
                    )
                    .with_help(format!(
                        "write `{ENV_PREFIX}SECTION__NAME__KEY`, keys separated by `__`"
                    )),
                );
                continue;
            }
            if !TOP_LEVEL.contains(&segs[0].as_str()) {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::UnknownKey,
                        format!("override of unknown top-level key `{}`", segs[0]),
                        Origin::Env { var: var.clone() },
                    )
                    .with_label(format!("expected one of {}", one_of(TOP_LEVEL)))
                    .with_help_opt(did_you_mean(&segs[0], TOP_LEVEL)),
                );
                continue;
            }
            let parsed: Value = value.parse().unwrap_or_else(|_| Value::from(value.clone()));
            let nested = figment::util::nest(&segs.join("."), parsed);
            if let Some(d) = nested.into_dict() {
                dict = merge_dicts(dict, d);
            }
            self.env.push((
                KeyPath(segs.into_iter().map(Seg::Key).collect()),
                var.clone(),
            ));
        }
        EnvOverrides { dict }
    }

    pub(super) fn extract_root<'a, N: Tree<'a>>(&mut self, root: N) {
        let Some(entries) = root.entries() else {
            return self.type_error(&KeyPath::root(), "a table", root);
        };
        let root_path = KeyPath::root();
        for (key, value) in entries {
            let path = root_path.key(key);
            match key {
                "version" => self.policy.version = value.decode(self, &path),
                "defaults" => self.policy.defaults = value.decode(self, &path).unwrap_or_default(),
                "upstreams" => self.policy.upstreams = self.extract_named(value, &path),
                "models" => self.policy.models = self.extract_named(value, &path),
                "retry" => self.policy.retry = self.extract_named(value, &path),
                "breakers" => self.policy.breakers = self.extract_named(value, &path),
                "budgets" => self.policy.budgets = self.extract_named(value, &path),
                "callers" => self.policy.callers = self.extract_named(value, &path),
                "state" => self.policy.state = value.decode(self, &path),
                "routes" => {
                    let Some(items) = value.elements() else {
                        self.type_error(&path, "an array of tables (`[[routes]]`)", value);
                        self.broken.insert(path);
                        continue;
                    };
                    for (i, item) in items.into_iter().enumerate() {
                        let p = path.index(i);
                        match item.decode(self, &p) {
                            Some(r) => {
                                self.policy.routes.push(r);
                                self.route_paths.push(p);
                            }
                            None => {
                                self.broken.insert(p);
                            }
                        }
                    }
                }
                other => {
                    let d = Diagnostic::error(
                        Code::UnknownKey,
                        format!("unknown key `{other}` at the top level"),
                        self.locate_key(&path),
                    )
                    .with_label(format!("expected one of {}", one_of(TOP_LEVEL)))
                    .with_help_opt(did_you_mean(other, TOP_LEVEL));
                    self.diagnostics.push(d);
                }
            }
        }
        debug_assert!(NAMED_SECTIONS.iter().all(|s| TOP_LEVEL.contains(s)));
    }

    fn extract_named<'a, T: DeserializeOwned, N: Tree<'a>>(
        &mut self,
        value: N,
        path: &KeyPath,
    ) -> std::collections::BTreeMap<String, T> {
        let mut out = std::collections::BTreeMap::new();
        let Some(entries) = value.entries() else {
            self.type_error(path, "a table of named entries", value);
            return out;
        };
        for (name, v) in entries {
            let p = path.key(name);
            match v.decode(self, &p) {
                Some(t) => {
                    out.insert(name.to_string(), t);
                }
                None => {
                    self.broken.insert(p);
                }
            }
        }
        out
    }

    /// Deserializes one value with [`extract_with`], every error reported; `None` when
    /// there was any.
    pub(super) fn extract<T: DeserializeOwned>(
        &mut self,
        value: &Value,
        path: &KeyPath,
    ) -> Option<T> {
        let (t, failed) = extract_with(value, path, prune, |err, kp| self.report(err, kp))?;
        (!failed).then_some(t)
    }

    fn report(&mut self, err: &figment::Error, path: &KeyPath) {
        let d = diagnostic_of(err, path, self.locate_key(path), self.locate(path));
        self.diagnostics.push(d);
    }

    fn type_error<'a>(&mut self, path: &KeyPath, expected: &str, found: impl Tree<'a>) {
        let d = Diagnostic::error(
            Code::InvalidType,
            format!("`{path}` has the wrong type: found {}", found.kind()),
            self.locate(path),
        )
        .with_label(format!("expected {expected}"));
        self.diagnostics.push(d);
    }
}

/// The diagnostic for a figment extraction error at `path`: an unknown key points at
/// `key` (where the key is written), anything else at `value`.
pub(crate) fn diagnostic_of(
    err: &figment::Error,
    path: &KeyPath,
    key: Origin,
    value: Origin,
) -> Diagnostic {
    use figment::error::Kind;
    let secret = path
        .0
        .iter()
        .any(|s| matches!(s, Seg::Key(k) if k == "api_key"));
    // What was found, as a kind only under `api_key` (it may be the key).
    let shown = |actual: &figment::error::Actual| {
        if secret {
            actual_kind(actual)
        } else {
            actual.to_string()
        }
    };
    match &err.kind {
        Kind::UnknownField(field, expected) => {
            let table = path.parent();
            Diagnostic::error(
                Code::UnknownKey,
                format!("unknown key `{field}` in `{table}`"),
                key,
            )
            .with_label(format!(
                "expected one of {}",
                one_of(expected.iter().copied())
            ))
            .with_help_opt(did_you_mean(field, expected.iter().copied()))
        }
        Kind::MissingField(field) => Diagnostic::error(
            Code::MissingKey,
            format!("missing key `{field}` in `{path}`"),
            value.clone(),
        )
        .with_label(format!("`{field}` is required here")),
        Kind::UnknownVariant(found, expected) => Diagnostic::error(
            Code::InvalidValue,
            format!("unknown value `{found}` for `{path}`"),
            value.clone(),
        )
        .with_label(format!(
            "expected one of {}",
            one_of(expected.iter().copied())
        ))
        .with_help_opt(did_you_mean(found, expected.iter().copied())),
        Kind::InvalidType(actual, expected) => Diagnostic::error(
            Code::InvalidType,
            format!("`{path}` has the wrong type: found {}", shown(actual)),
            value.clone(),
        )
        .with_label(format!("expected {}", humanize_expected(expected))),
        Kind::InvalidValue(actual, expected) => Diagnostic::error(
            Code::InvalidValue,
            format!("invalid value for `{path}`: found {}", shown(actual)),
            value.clone(),
        )
        .with_label(format!("expected {}", humanize_expected(expected))),
        Kind::Message(m) => Diagnostic::error(
            Code::InvalidValue,
            format!("invalid value for `{path}`: {m}"),
            value.clone(),
        ),
        other => Diagnostic::error(
            Code::InvalidValue,
            format!("invalid value for `{path}`: {other}"),
            value.clone(),
        ),
    }
}

/// A file that is not valid TOML, at the parser's position.
pub(crate) fn syntax_error(e: &toml_edit::TomlError, file: FileId) -> Diagnostic {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim_end().replace('\n', "; ");
    Diagnostic::error(
        Code::Syntax,
        format!("invalid TOML: {message}"),
        Origin::File { file, span },
    )
    .with_label("here")
}

/// Deserializes `value` (at `path`); on each error, `report`s it, prunes the offending
/// key (with `prune`) and tries again, so every bad key of an entry is reported in one
/// pass. A missing required key is filled with a placeholder (of whichever type fits)
/// for the same reason: the keys after it are still checked, and every missing key is
/// reported. Returns what could be read, and whether anything was reported.
pub(crate) fn extract_with<T: DeserializeOwned>(
    value: &Value,
    path: &KeyPath,
    prune: fn(&mut Value, &[String]) -> Option<Vec<String>>,
    mut report: impl FnMut(&figment::Error, &KeyPath),
) -> Option<(T, bool)> {
    use figment::error::Kind;
    // Most entries are valid: only an invalid one is copied, to be pruned.
    let mut first = match T::deserialize(value) {
        Ok(t) => return Some((t, false)),
        Err(e) => Some(e),
    };
    let mut v = value.clone();
    let mut pruned: Vec<Vec<String>> = Vec::new();
    // Required keys filled in, with the index of the placeholder being tried.
    let mut filled: Vec<(Vec<String>, usize)> = Vec::new();
    // Keys that an unknown key was probably meant to be: (table, key).
    let mut suggested: Vec<(Vec<String>, String)> = Vec::new();
    let mut failed = false;
    // Each round prunes a key or fills one, so this ends; the bound is a guard, not a
    // limit users meet.
    for _ in 0..256 {
        let err = match first.take() {
            Some(e) => e,
            None => match T::deserialize(&v) {
                Ok(t) => return Some((t, failed)),
                Err(e) => e,
            },
        };
        failed = true;
        let rel: Vec<String> = err.path.clone();
        if let Some((p, i)) = filled.iter_mut().find(|(p, _)| rel.starts_with(p)) {
            // Our placeholder has the wrong type: try the next one.
            *i += 1;
            let ph = placeholder(*i)?;
            set(&mut v, p, ph)?;
            continue;
        }
        if let Kind::MissingField(f) = &err.kind {
            let mut full = rel.clone();
            full.push(f.to_string());
            // Not reported when we pruned it ourselves (already reported as having
            // the wrong type) or an unknown key nearby was suggested to be it.
            let known = pruned.iter().any(|p| full.starts_with(p))
                || suggested.iter().any(|(t, k)| *t == rel && k == f);
            if !known {
                let kp = key_path(path, &v, &rel);
                report(&err, &kp);
            }
            set(&mut v, &full, placeholder(0)?)?;
            filled.push((full, 0));
            continue;
        }
        if let Kind::UnknownField(field, expected) = &err.kind {
            if let Some(s) = closest(field, expected) {
                suggested.push((rel[..rel.len().saturating_sub(1)].to_vec(), s.to_string()));
            }
        }
        let kp = key_path(path, &v, &rel);
        report(&err, &kp);
        match prune(&mut v, &rel) {
            Some(p) => pruned.push(p),
            None => return None,
        }
    }
    None
}

/// The `*.toml` files directly in `dir`, in name order: what loading a directory reads.
pub fn toml_files_in(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.extension().is_some_and(|x| x == "toml") && f.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Removes the key an error points at (or the array holding it), returning the removed
/// path; `None` if there is nothing left to remove.
fn prune(v: &mut Value, rel: &[String]) -> Option<Vec<String>> {
    let (first, rest) = rel.split_first()?;
    match v {
        Value::Dict(_, d) => {
            let recurse = !rest.is_empty() && matches!(d.get(first), Some(Value::Dict(..)));
            if recurse {
                let inner = d.get_mut(first)?;
                let mut p = prune(inner, rest)?;
                p.insert(0, first.clone());
                Some(p)
            } else {
                d.remove(first).map(|_| vec![first.clone()])
            }
        }
        _ => None,
    }
}

/// Turns figment's string path (relative to `value`) into a key path, reading indices
/// where the value is an array.
fn key_path(base: &KeyPath, value: &Value, rel: &[String]) -> KeyPath {
    let mut kp = base.clone();
    let mut cur = Some(value);
    for seg in rel {
        match cur {
            Some(Value::Array(_, items)) => match seg.parse::<usize>() {
                Ok(i) => {
                    kp = kp.index(i);
                    cur = items.get(i);
                }
                Err(_) => break,
            },
            Some(Value::Dict(_, d)) => {
                kp = kp.key(seg.clone());
                cur = d.get(seg);
            }
            _ => {
                kp = kp.key(seg.clone());
                cur = None;
            }
        }
    }
    kp
}

/// Placeholders for a missing required key, in the order tried.
fn placeholder(i: usize) -> Option<Value> {
    Some(match i {
        0 => Value::from("1s"), // a string, a duration
        1 => Value::from(1u32),
        2 => Value::from(true),
        3 => Value::from(Vec::<Value>::new()),
        4 => Value::from(Dict::new()),
        _ => return None,
    })
}

/// The value at `rel` (a figment path: keys, and indices into arrays).
pub(crate) fn at_mut<'v>(v: &'v mut Value, rel: &[String]) -> Option<&'v mut Value> {
    let mut cur = v;
    for seg in rel {
        cur = match cur {
            Value::Dict(_, d) => d.get_mut(seg)?,
            Value::Array(_, items) => items.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Sets the value at `rel` (a figment path: keys, and indices into arrays), creating the
/// last key; `None` if the path does not lead to a table.
fn set(v: &mut Value, rel: &[String], new: Value) -> Option<()> {
    let (last, init) = rel.split_last()?;
    match at_mut(v, init)? {
        Value::Dict(_, d) => {
            d.insert(last.clone(), new);
            Some(())
        }
        _ => None,
    }
}

/// The expected key an unknown key was most likely meant to be (as in [`did_you_mean`]).
fn closest<'a>(found: &str, expected: &[&'a str]) -> Option<&'a str> {
    let help = did_you_mean(found, expected.iter().copied())?;
    expected
        .iter()
        .copied()
        .find(|e| help == format!("did you mean `{e}`?"))
}

fn merge_dicts(mut a: Dict, b: Dict) -> Dict {
    for (k, v) in b {
        match (a.remove(&k), v) {
            (Some(Value::Dict(t, x)), Value::Dict(_, y)) => {
                a.insert(k, Value::Dict(t, merge_dicts(x, y)));
            }
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
    a
}

fn actual_kind(a: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match a {
        Actual::Str(_) | Actual::Char(_) => "a string (value not shown)".into(),
        other => other.to_string(),
    }
}

/// serde's "expected" texts, in a policy author's words.
fn humanize_expected(e: &str) -> String {
    match e {
        "f64" | "f32" => "a number".into(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative whole number".into(),
        "i8" | "i16" | "i32" | "i64" => "a whole number".into(),
        "a boolean" | "bool" => "`true` or `false`".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        s if s.starts_with("struct ") => "a table".into(),
        s => s.to_string(),
    }
}

/// One policy file as a figment provider, labelled with its path. Its values come from the
/// document already parsed for the span index (figment would parse the text again).
struct FileProvider<'a> {
    path: PathBuf,
    doc: &'a toml_edit::Table,
    text: &'a str,
}

impl Provider for FileProvider<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named("policy file").source(figment::Source::File(self.path.clone()))
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        match super::convert::to_dict(self.doc) {
            Some(dict) => Ok(Profile::Default.collect(dict)),
            None => {
                // A key figment's values treat specially: let figment parse it its way.
                use figment::providers::Format;
                figment::providers::Toml::string(self.text).data()
            }
        }
    }
}

/// `TOLLGATE__…` overrides as a figment provider. figment's own `Env` reads only the
/// process environment; this one takes explicit variables, so loading is testable and
/// reloads re-read exactly what they are given.
struct EnvOverrides {
    dict: Dict,
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment override").interpolater(|_: &Profile, keys: &[&str]| {
            format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase())
        })
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}
