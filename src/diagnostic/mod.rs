//! Diagnostics: what went wrong (or looks wrong) in a policy, and where.
//!
//! Every problem the loader or the compiler finds becomes a [`Diagnostic`] with a severity,
//! a stable code, a message saying what was found and what was expected, and an [`Origin`]:
//! a byte span in a source file (rendered as `file:line:col` with the source line and a
//! caret) or the environment variable an override came from. They are collected, never
//! thrown one at a time, so a user sees every error of a policy in one run.

mod code;
mod render;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

pub use code::Code;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Suspicious but usable: `check` still exits 0.
    Warning,
    /// The policy cannot be used.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// Index of a file in [`Sources`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub(crate) u32);

/// Where a diagnostic points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A byte range in a loaded file.
    File {
        /// Which file.
        file: FileId,
        /// Byte range in its text.
        span: Range<usize>,
    },
    /// A value set by an environment variable override.
    Env {
        /// The variable's name.
        var: String,
    },
    /// A path on disk, for I/O problems (no position inside it).
    Path(PathBuf),
    /// Nowhere in particular (e.g. the policy as a whole).
    None,
}

/// One problem found in a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable identifier of the check (e.g. `unknown-reference`).
    pub code: Code,
    /// What was found.
    pub message: String,
    /// Where.
    pub origin: Origin,
    /// Short text shown under the caret: usually what was expected.
    pub label: Option<String>,
    /// A hint: "did you mean …", or how to fix it.
    pub help: Option<String>,
    /// Other places that matter (e.g. "first defined here").
    pub related: Vec<(Origin, String)>,
}

impl Diagnostic {
    /// An error.
    pub fn error(code: Code, message: impl Into<String>, origin: Origin) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            origin,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }
    /// A warning.
    pub fn warning(code: Code, message: impl Into<String>, origin: Origin) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message, origin)
        }
    }
    /// Sets the label under the caret.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
    /// Sets the help text.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    /// Sets the help text if there is one.
    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
    /// Adds a related place.
    pub fn with_related(mut self, origin: Origin, note: impl Into<String>) -> Self {
        self.related.push((origin, note.into()));
        self
    }
}

/// One loaded source file: its path, its text, and the text as shown in diagnostics (with
/// literal secrets masked, so no snippet ever echoes one).
#[derive(Clone)]
pub struct SourceFile {
    /// Path as given by the user (or joined from the directory given).
    pub path: PathBuf,
    /// The original text.
    pub text: String,
    /// The text with secrets replaced by `*`, byte for byte.
    pub display: String,
    line_starts: Vec<usize>,
    /// Lines of `display` as miette counts them, built when first rendered.
    display_lines: OnceLock<DisplayLines>,
}

/// Where the lines of a file's displayed text start, and how many line breaks miette
/// counts before each: it takes `\r\n`, `\n` and a lone `\r` each as one break, so a
/// snippet can be read from a few lines before its span instead of from the file's start.
#[derive(Debug, Clone)]
pub(crate) struct DisplayLines {
    /// 0, and the offset after each `\n`.
    pub(crate) starts: Vec<usize>,
    /// Line breaks (as miette counts them) before each start; `None` when the text has no
    /// `\r`, where it is the start's index.
    breaks: Option<Vec<usize>>,
}

impl DisplayLines {
    fn new(text: &str) -> Self {
        let starts: Vec<usize> = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let breaks = text.contains('\r').then(|| {
            let bytes = text.as_bytes();
            let mut out = Vec::with_capacity(starts.len());
            let (mut count, mut pos) = (0, 0);
            for &start in &starts {
                while pos < start {
                    match bytes[pos] {
                        b'\n' => count += 1,
                        // A `\r\n` is counted at its `\n`.
                        b'\r' if bytes.get(pos + 1) != Some(&b'\n') => count += 1,
                        _ => {}
                    }
                    pos += 1;
                }
                out.push(count);
            }
            out
        });
        DisplayLines { starts, breaks }
    }

    /// Line breaks miette counts before `starts[i]`.
    pub(crate) fn breaks_before(&self, i: usize) -> usize {
        self.breaks.as_ref().map_or(i, |b| b[i])
    }
}

impl SourceFile {
    /// A file whose text is shown as is.
    pub fn new(path: impl Into<PathBuf>, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path: path.into(),
            display: text.clone(),
            text,
            line_starts,
            display_lines: OnceLock::new(),
        }
    }

    /// The line index of [`SourceFile::display`], for rendering snippets.
    pub(crate) fn display_lines(&self) -> &DisplayLines {
        self.display_lines
            .get_or_init(|| DisplayLines::new(&self.display))
    }

    /// Masks a byte range (a secret) in the displayed text.
    pub(crate) fn redact(&mut self, span: Range<usize>) {
        let span = span.start.min(self.display.len())..span.end.min(self.display.len());
        if self.display.is_char_boundary(span.start) && self.display.is_char_boundary(span.end) {
            let stars = "*".repeat(span.len());
            self.display.replace_range(span, &stars);
            self.display_lines = OnceLock::new();
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (line + 1, col + 1)
    }
}

impl fmt::Debug for SourceFile {
    /// Shows the masked text only: a `{:?}` in a log must not echo a secret either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceFile")
            .field("path", &self.path)
            .field("display", &self.display)
            .finish_non_exhaustive()
    }
}

/// All files a policy was loaded from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    /// Adds a file and returns its id.
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        FileId(self.files.len() as u32 - 1)
    }
    /// A file by id.
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }
    /// All files with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }
    /// The id of a file by path.
    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.iter().find(|(_, f)| f.path == path).map(|(id, _)| id)
    }

    /// `file:line:col`, `env VAR`, a path, or `<policy>`.
    pub fn describe(&self, origin: &Origin) -> String {
        match origin {
            Origin::File { file, span } => {
                let f = self.get(*file);
                let (l, c) = f.line_col(span.start);
                format!("{}:{l}:{c}", f.path.display())
            }
            Origin::Env { var } => format!("environment variable {var}"),
            Origin::Path(p) => p.display().to_string(),
            Origin::None => "<policy>".to_string(),
        }
    }
}

/// A set of diagnostics together with the sources they point into.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    /// The diagnostics, errors and warnings, in the order found.
    pub items: Vec<Diagnostic>,
    /// The files they point into.
    pub sources: Arc<Sources>,
}

impl Diagnostics {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }
    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.items.len() - self.error_count()
    }
    /// Sorts by file, position and severity, for stable output.
    pub fn sort(&mut self) {
        let key = |d: &Diagnostic| match &d.origin {
            Origin::File { file, span } => (0, file.0, span.start, String::new()),
            Origin::Env { var } => (1, 0, 0, var.clone()),
            Origin::Path(p) => (2, 0, 0, p.display().to_string()),
            Origin::None => (3, 0, 0, String::new()),
        };
        self.items.sort_by_key(key);
    }
    /// One line per diagnostic: `path:line:col: error[code]: message`. Stable, for tests
    /// and logs.
    pub fn short(&self) -> String {
        self.items
            .iter()
            .map(|d| self.short_one(d) + "\n")
            .collect()
    }
    /// One diagnostic on one line.
    pub fn short_one(&self, d: &Diagnostic) -> String {
        format!(
            "{}: {}[{}]: {}",
            self.sources.describe(&d.origin),
            d.severity,
            d.code,
            d.message
        )
    }
}

impl fmt::Display for Diagnostics {
    /// Same as [`Diagnostics::render`] without colour.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostics {}

/// Near-miss suggestion: the closest candidate by edit distance, if close enough.
pub fn did_you_mean<'a>(
    found: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&found.to_lowercase(), &c.to_lowercase());
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

/// `a`, `b` or `c` — for "expected one of" lists.
pub fn one_of<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    match names.len() {
        0 => "nothing (none is defined)".to_string(),
        1 => names[0].clone(),
        n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
    }
}
