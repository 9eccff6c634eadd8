//! Rendering diagnostics: rustc-style with source snippets (through miette), or JSON.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;

use super::{Diagnostic, Diagnostics, Origin, Severity, Sources};

/// Adapter from our diagnostic to miette's, carrying the (redacted) source it points into.
struct Report<'a> {
    d: &'a Diagnostic,
    message: String,
    source: Option<NamedSource<String>>,
    span: Option<SourceSpan>,
    related: Vec<Report<'a>>,
    /// A related place of another diagnostic ("first defined here"), rendered as a note.
    is_note: bool,
}

impl<'a> Report<'a> {
    fn new(d: &'a Diagnostic, sources: &Sources) -> Self {
        let mut r = Self::at(d, &d.origin, d.message.clone(), sources);
        r.related = d
            .related
            .iter()
            .map(|(o, note)| Report {
                is_note: true,
                ..Self::at(d, o, note.clone(), sources)
            })
            .collect();
        r
    }

    fn at(d: &'a Diagnostic, origin: &Origin, message: String, sources: &Sources) -> Self {
        let (source, span, message) = match origin {
            Origin::File { file, span } => {
                let f = sources.get(*file);
                let src = NamedSource::new(f.path.display().to_string(), f.display.clone());
                let len = span
                    .len()
                    .max(if span.start < f.text.len() { 1 } else { 0 });
                (
                    Some(src),
                    Some(SourceSpan::new(span.start.into(), len)),
                    message,
                )
            }
            Origin::Env { var } => (
                None,
                None,
                format!("{message}\n  (set by environment variable {var})"),
            ),
            Origin::Path(p) => (None, None, format!("{}: {message}", p.display())),
            Origin::None => (None, None, message),
        };
        Report {
            d,
            message,
            source,
            span,
            related: Vec::new(),
            is_note: false,
        }
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        if self.is_note {
            return None;
        }
        Some(Box::new(format!("tollgate::{}", self.d.code)))
    }
    fn severity(&self) -> Option<miette::Severity> {
        if self.is_note {
            return Some(miette::Severity::Advice);
        }
        Some(match self.d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        // Related places carry only their note, not the parent's help.
        if self.is_note {
            return None;
        }
        self.d
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span?;
        let label = if self.is_note {
            None
        } else {
            self.d.label.clone()
        };
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            label, span,
        ))))
    }
    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(
            self.related.iter().map(|r| r as &dyn miette::Diagnostic),
        ))
    }
}

/// One diagnostic as JSON, for CI annotations.
#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    severity: Severity,
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    help: Option<&'a str>,
    related: Vec<String>,
}

impl Diagnostics {
    /// Renders every diagnostic rustc-style: message, `file:line:col`, the source line with a
    /// caret under the span, the label and the help. Secrets in the source are masked.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        let mut out = String::new();
        for d in &self.items {
            let report = Report::new(d, &self.sources);
            // Writing into a String cannot fail.
            let _ = handler.render_report(&mut out, &report);
        }
        out
    }

    /// All diagnostics as a JSON document: `{ "errors": N, "warnings": N, "diagnostics": [...] }`.
    pub fn to_json(&self) -> serde_json::Value {
        let items: Vec<JsonDiagnostic> = self
            .items
            .iter()
            .map(|d| {
                let mut j = JsonDiagnostic {
                    severity: d.severity,
                    code: d.code,
                    message: &d.message,
                    file: None,
                    line: None,
                    column: None,
                    end_line: None,
                    end_column: None,
                    env: None,
                    label: d.label.as_deref(),
                    help: d.help.as_deref(),
                    related: d
                        .related
                        .iter()
                        .map(|(o, n)| format!("{}: {n}", self.sources.describe(o)))
                        .collect(),
                };
                match &d.origin {
                    Origin::File { file, span } => {
                        let f = self.sources.get(*file);
                        let (l, c) = f.line_col(span.start);
                        let (el, ec) = f.line_col(span.end);
                        j.file = Some(f.path.display().to_string());
                        (j.line, j.column, j.end_line, j.end_column) =
                            (Some(l), Some(c), Some(el), Some(ec));
                    }
                    Origin::Env { var } => j.env = Some(var),
                    Origin::Path(p) => j.file = Some(p.display().to_string()),
                    Origin::None => {}
                }
                j
            })
            .collect();
        serde_json::json!({
            "errors": self.error_count(),
            "warnings": self.warning_count(),
            "diagnostics": items,
        })
    }
}
