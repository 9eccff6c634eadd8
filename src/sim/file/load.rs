//! Reading a scenario file: toml_edit for the syntax and the spans (the policy's
//! [`SpanIndex`]), figment's values for typed extraction. On an error the offending key is
//! reported, pruned and extraction tried again, so every bad key is reported in one run,
//! each at its `file:line:col`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::value::{Dict, Value};

use super::types::ScenarioFile;
use crate::diagnostic::{Code, Diagnostic, Diagnostics, FileId, Origin, SourceFile, Sources};
use crate::policy::load::{at_mut, diagnostic_of, extract_with, syntax_error};
use crate::policy::spans::{KeyPath, Seg, SpanIndex};

/// A scenario file as far as it could be read, with what went wrong.
#[derive(Debug)]
pub struct LoadedScenario {
    /// The scenario as far as it could be read: with errors in `diagnostics`, the keys in
    /// error are left out (required ones filled with placeholders), so later checks still
    /// see the rest.
    pub file: Option<ScenarioFile>,
    /// Its path.
    pub path: PathBuf,
    /// Problems found so far (loading, then compiling against a policy).
    pub diagnostics: Vec<Diagnostic>,
    sources: Sources,
    at: Option<(FileId, SpanIndex)>,
    io_failed: bool,
}

impl LoadedScenario {
    /// Whether the file could not be read at all.
    pub fn io_failed(&self) -> bool {
        self.io_failed
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == crate::diagnostic::Severity::Error)
    }

    /// The diagnostics with the file they point into, sorted by position.
    pub fn to_diagnostics(&self) -> Diagnostics {
        let mut d = Diagnostics {
            items: self.diagnostics.clone(),
            sources: Arc::new(self.sources.clone()),
        };
        d.sort();
        d
    }

    /// Where the value at `path` is written (or its closest written ancestor).
    pub fn locate(&self, path: &KeyPath) -> Origin {
        self.find(path, false)
    }

    /// Where the key of `path` is written.
    pub fn locate_key(&self, path: &KeyPath) -> Origin {
        self.find(path, true)
    }

    fn find(&self, path: &KeyPath, prefer_key: bool) -> Origin {
        let Some((id, idx)) = &self.at else {
            return Origin::Path(self.path.clone());
        };
        let mut span = 0..0;
        for s in idx.along(&path.0) {
            let found = if prefer_key {
                s.key.as_ref().or(s.value.as_ref())
            } else {
                s.value.as_ref().or(s.key.as_ref())
            };
            if let Some(f) = found {
                span = f.clone();
            }
        }
        Origin::File { file: *id, span }
    }

    /// Adds an error at `path`'s value.
    pub(crate) fn error(&mut self, code: Code, path: &KeyPath, message: String) -> &mut Diagnostic {
        let origin = self.locate(path);
        self.diagnostics
            .push(Diagnostic::error(code, message, origin));
        self.diagnostics.last_mut().expect("just pushed")
    }

    /// Adds a warning at `path`'s value.
    pub(crate) fn warning(
        &mut self,
        code: Code,
        path: &KeyPath,
        message: String,
    ) -> &mut Diagnostic {
        let origin = self.locate(path);
        self.diagnostics
            .push(Diagnostic::warning(code, message, origin));
        self.diagnostics.last_mut().expect("just pushed")
    }
}

/// Reads and parses a scenario file. Never panics; see [`LoadedScenario`].
pub fn load_scenario(path: &Path) -> LoadedScenario {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_scenario_text(path, text),
            Err(e) => unreadable(
                path,
                format!(
                    "the file is not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            ),
        },
        Err(e) => unreadable(path, format!("cannot read the scenario: {e}")),
    }
}

fn unreadable(path: &Path, message: String) -> LoadedScenario {
    LoadedScenario {
        file: None,
        path: path.to_path_buf(),
        diagnostics: vec![Diagnostic::error(
            Code::Io,
            message,
            Origin::Path(path.to_path_buf()),
        )],
        sources: Sources::default(),
        at: None,
        io_failed: true,
    }
}

/// Parses scenario text (diagnostics name it `path`).
pub fn load_scenario_text(path: impl Into<PathBuf>, text: String) -> LoadedScenario {
    let path = path.into();
    let mut sources = Sources::default();
    let mut l = LoadedScenario {
        file: None,
        path: path.clone(),
        diagnostics: Vec::new(),
        sources: Sources::default(),
        at: None,
        io_failed: false,
    };
    let doc = match toml_edit::ImDocument::parse(text.as_str()) {
        Ok(doc) => doc,
        Err(e) => {
            let id = sources.add(SourceFile::new(&path, text.clone()));
            l.diagnostics.push(syntax_error(&e, id));
            l.sources = sources;
            return l;
        }
    };
    let idx = SpanIndex::build(doc.as_table());
    let id = sources.add(SourceFile::new(&path, text.clone()));
    l.sources = sources;
    l.at = Some((id, idx));
    use figment::providers::Format as _;
    let value = figment::Figment::from(figment::providers::Toml::string(&text))
        .find_value("")
        .unwrap_or_else(|_| Value::from(Dict::new()));
    l.file = extract(&mut l, &value);
    l
}

/// Deserializes the whole file, every error reported: what is left is returned.
fn extract(l: &mut LoadedScenario, value: &Value) -> Option<ScenarioFile> {
    extract_with(value, &KeyPath::root(), prune, |err, kp| report(l, err, kp)).map(|(f, _)| f)
}

/// Removes the value at `rel` (keys, and indices into arrays); the path removed.
fn prune(v: &mut Value, rel: &[String]) -> Option<Vec<String>> {
    let (last, init) = rel.split_last()?;
    match at_mut(v, init)? {
        Value::Dict(_, d) => d.remove(last).map(|_| rel.to_vec()),
        Value::Array(_, items) => {
            let i = last.parse::<usize>().ok().filter(|i| *i < items.len())?;
            items.remove(i);
            Some(rel.to_vec())
        }
        _ => None,
    }
}

fn report(l: &mut LoadedScenario, err: &figment::Error, path: &KeyPath) {
    let d = diagnostic_of(err, path, l.locate_key(path), l.locate(path));
    l.diagnostics.push(d);
}

/// A key path from keys (for the compiler's diagnostics).
pub(crate) fn path<const N: usize>(keys: [&str; N]) -> KeyPath {
    KeyPath(keys.iter().map(|k| Seg::Key((*k).to_string())).collect())
}
