//! Reading a scenario file: toml_edit for the syntax and the spans (the policy's
//! [`SpanIndex`]), figment's values for typed extraction. On an error the offending key is
//! reported, pruned and extraction tried again, so every bad key is reported in one run,
//! each at its `file:line:col`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::value::{Dict, Value};
use serde::Deserialize;

use super::types::ScenarioFile;
use crate::diagnostic::{
    did_you_mean, one_of, Code, Diagnostic, Diagnostics, FileId, Origin, SourceFile, Sources,
};
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
            let span = e.span().unwrap_or(0..0);
            let id = sources.add(SourceFile::new(&path, text.clone()));
            let message = e.message().trim_end().replace('\n', "; ");
            l.diagnostics.push(
                Diagnostic::error(
                    Code::Syntax,
                    format!("invalid TOML: {message}"),
                    Origin::File { file: id, span },
                )
                .with_label("here"),
            );
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

/// Placeholders for a missing required key, in the order tried.
fn placeholder(i: usize) -> Option<Value> {
    Some(match i {
        0 => Value::from("1s"),
        1 => Value::from(1u32),
        2 => Value::from(Dict::new()),
        _ => return None,
    })
}

/// Deserializes the whole file; each error is reported and its key pruned (a missing one
/// filled), then extraction is tried again: what is left is returned.
fn extract(l: &mut LoadedScenario, value: &Value) -> Option<ScenarioFile> {
    use figment::error::Kind;
    let mut v = value.clone();
    let mut pruned: Vec<Vec<String>> = Vec::new();
    let mut filled: Vec<(Vec<String>, usize)> = Vec::new();
    // Keys an unknown key was probably meant to be: (table, key); not reported missing.
    let mut suggested: Vec<(Vec<String>, String)> = Vec::new();
    // Each round prunes or fills a key, so this ends; the bound is a guard.
    for _ in 0..256 {
        let err = match ScenarioFile::deserialize(&v) {
            Ok(f) => return Some(f),
            Err(e) => e,
        };
        let rel = err.path.clone();
        if let Some((p, i)) = filled.iter_mut().find(|(p, _)| rel.starts_with(p)) {
            *i += 1;
            let ph = placeholder(*i)?;
            set(&mut v, p, ph)?;
            continue;
        }
        if let Kind::MissingField(f) = &err.kind {
            let mut full = rel.clone();
            full.push(f.to_string());
            let meant = suggested.iter().any(|(t, k)| *t == rel && k == f);
            if !meant && !pruned.iter().any(|p| full.starts_with(p)) {
                let kp = key_path(&v, &rel);
                report(l, &err, &kp);
            }
            set(&mut v, &full, placeholder(0)?)?;
            filled.push((full, 0));
            continue;
        }
        if let Kind::UnknownField(field, exp) = &err.kind {
            let help = did_you_mean(field, exp.iter().copied());
            if let Some(k) = exp
                .iter()
                .find(|e| help == Some(format!("did you mean `{e}`?")))
            {
                suggested.push((rel[..rel.len().saturating_sub(1)].to_vec(), k.to_string()));
            }
        }
        let kp = key_path(&v, &rel);
        report(l, &err, &kp);
        pruned.push(prune(&mut v, &rel)?);
    }
    None
}

/// figment's string path as a key path, reading indices where the value is an array.
fn key_path(value: &Value, rel: &[String]) -> KeyPath {
    let mut kp = KeyPath::root();
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

/// Removes the value at `rel` (keys, and indices into arrays); the path removed.
fn prune(v: &mut Value, rel: &[String]) -> Option<Vec<String>> {
    let (last, init) = rel.split_last()?;
    let mut cur = v;
    for seg in init {
        cur = match cur {
            Value::Dict(_, d) => d.get_mut(seg)?,
            Value::Array(_, items) => items.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match cur {
        Value::Dict(_, d) => d.remove(last).map(|_| rel.to_vec()),
        Value::Array(_, items) => {
            let i = last.parse::<usize>().ok().filter(|i| *i < items.len())?;
            items.remove(i);
            Some(rel.to_vec())
        }
        _ => None,
    }
}

/// Sets the value at `rel`, creating its last key.
fn set(v: &mut Value, rel: &[String], new: Value) -> Option<()> {
    let (last, init) = rel.split_last()?;
    let mut cur = v;
    for seg in init {
        cur = match cur {
            Value::Dict(_, d) => d.get_mut(seg)?,
            Value::Array(_, items) => items.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match cur {
        Value::Dict(_, d) => {
            d.insert(last.clone(), new);
            Some(())
        }
        _ => None,
    }
}

/// serde's "expected" texts, in a scenario author's words.
fn expected(e: &str) -> String {
    match e {
        "f64" | "f32" => "a number".into(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative whole number".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        s if s.starts_with("struct ") => "a table".into(),
        s => s.to_string(),
    }
}

fn report(l: &mut LoadedScenario, err: &figment::Error, path: &KeyPath) {
    use figment::error::Kind;
    let d = match &err.kind {
        Kind::UnknownField(field, exp) => {
            let table = path.parent();
            Diagnostic::error(
                Code::UnknownKey,
                format!("unknown key `{field}` in `{table}`"),
                l.locate_key(path),
            )
            .with_label(format!("expected one of {}", one_of(exp.iter().copied())))
            .with_help_opt(did_you_mean(field, exp.iter().copied()))
        }
        Kind::MissingField(field) => Diagnostic::error(
            Code::MissingKey,
            format!("missing key `{field}` in `{path}`"),
            l.locate(path),
        )
        .with_label(format!("`{field}` is required here")),
        Kind::InvalidType(actual, exp) => Diagnostic::error(
            Code::InvalidType,
            format!("`{path}` has the wrong type: found {actual}"),
            l.locate(path),
        )
        .with_label(format!("expected {}", expected(exp))),
        Kind::InvalidValue(actual, exp) => Diagnostic::error(
            Code::InvalidValue,
            format!("invalid value for `{path}`: found {actual}"),
            l.locate(path),
        )
        .with_label(format!("expected {}", expected(exp))),
        Kind::InvalidLength(n, exp) => Diagnostic::error(
            Code::InvalidValue,
            format!("`{path}` has {n} item{}", if *n == 1 { "" } else { "s" }),
            l.locate(path),
        )
        .with_label(format!("expected {}", expected(exp))),
        other => Diagnostic::error(
            Code::InvalidValue,
            format!("invalid value for `{path}`: {other}"),
            l.locate(path),
        ),
    };
    l.diagnostics.push(d);
}

/// A key path from keys (for the compiler's diagnostics).
pub(crate) fn path<const N: usize>(keys: [&str; N]) -> KeyPath {
    KeyPath(keys.iter().map(|k| Seg::Key((*k).to_string())).collect())
}
