//! Rendering diagnostics: rustc-style with source snippets (through miette), or JSON.

use std::fmt;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    SourceCode, SourceSpan, SpanContents,
};
use serde::Serialize;

use super::{Diagnostic, Diagnostics, Origin, Severity, SourceFile, Sources};

/// A file's (redacted) text as miette's source code, borrowed, not copied per diagnostic.
///
/// miette's own `str` source finds a span's lines by scanning from the start of the text,
/// so each snippet costs the whole file. This one looks the span's line up in the file's
/// line index and lets miette scan from the first context line on: the same result (the
/// offsets and line numbers shifted back), in time independent of where the span is.
struct Snippet<'a> {
    name: &'a str,
    file: &'a SourceFile,
}

impl SourceCode for Snippet<'_> {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let lines = self.file.display_lines();
        let text = self.file.display.as_str();
        // The `\n`-separated line holding the span's start, and the first context line
        // above it: at least `context_lines_before` line breaks lie between that line's
        // start and the span, which is all miette's scan looks back at. At least one line
        // more: for an empty span, miette takes the byte before it as its end.
        let line = lines.starts.partition_point(|&s| s <= span.offset()) - 1;
        let first = line.saturating_sub(context_lines_before.max(1));
        let start = lines.starts[first];
        let skipped = lines.breaks_before(first);
        let inner = SourceSpan::new((span.offset() - start).into(), span.len());
        let c = <str as SourceCode>::read_span(
            &text[start..],
            &inner,
            context_lines_before,
            context_lines_after,
        )?;
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.to_string(),
            c.data(),
            SourceSpan::new((c.span().offset() + start).into(), c.span().len()),
            c.line() + skipped,
            c.column(),
            c.line_count() + skipped,
        )))
    }
}

/// Adapter from our diagnostic to miette's, carrying the (redacted) source it points into.
struct Report<'a> {
    d: &'a Diagnostic,
    message: String,
    source: Option<Snippet<'a>>,
    span: Option<SourceSpan>,
    related: Vec<Report<'a>>,
    /// A related place of another diagnostic ("first defined here"), rendered as a note.
    is_note: bool,
}

impl<'a> Report<'a> {
    fn new(d: &'a Diagnostic, sources: &'a Sources, names: &'a [String]) -> Self {
        let mut r = Self::at(d, &d.origin, d.message.clone(), sources, names);
        r.related = d
            .related
            .iter()
            .map(|(o, note)| Report {
                is_note: true,
                ..Self::at(d, o, note.clone(), sources, names)
            })
            .collect();
        r
    }

    fn at(
        d: &'a Diagnostic,
        origin: &Origin,
        message: String,
        sources: &'a Sources,
        names: &'a [String],
    ) -> Self {
        let (source, span, message) = match origin {
            Origin::File { file, span } => {
                let f = sources.get(*file);
                let src = Snippet {
                    name: &names[file.0 as usize],
                    file: f,
                };
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
        self.source.as_ref().map(|s| s as &dyn SourceCode)
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
        let names: Vec<String> = self
            .sources
            .iter()
            .map(|(_, f)| f.path.display().to_string())
            .collect();
        let mut out = String::new();
        for d in &self.items {
            let report = Report::new(d, &self.sources, &names);
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
                    code: d.code.as_str(),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use miette::NamedSource;

    use super::*;
    use crate::diagnostic::Code;

    /// Whatever miette's own `NamedSource<String>` reads for a span, ours reads the same.
    #[test]
    fn snippets_read_like_miettes_own_source() {
        let texts = [
            "",
            "a",
            "a = 1\n",
            "a = 1\nb = 2\nc = 3\nd = 4\ne = 5",
            "\n\n\nx = 1\n\n\ny = \"é ü\"\n\n",
            "a = 1\r\nb = 2\r\n\r\nc = 3\r\n",
            "a\rb\r\rc\nd\r\n\re\n\r",
            "[t]\nk = \"\"\"\nmulti\nline\"\"\"\nz = [\n  1,\n  2,\n]\n",
        ];
        for text in texts {
            let file = SourceFile::new("p.toml", text.to_string());
            let ours = Snippet {
                name: "p.toml",
                file: &file,
            };
            let theirs = NamedSource::new("p.toml", text.to_string());
            // Spans start within the text (miette's own scan panics on some past its end).
            for offset in 0..=text.len() {
                for len in [0, 1, 2, 3, 7, 40] {
                    for (before, after) in [(0, 0), (1, 1), (2, 0), (0, 3), (3, 2)] {
                        let span = SourceSpan::new(offset.into(), len);
                        let at = format!("{text:?} at {offset}+{len}, context {before}/{after}");
                        let read = |s: &dyn SourceCode| {
                            s.read_span(&span, before, after).map(|c| {
                                (
                                    c.data().to_vec(),
                                    *c.span(),
                                    c.line(),
                                    c.column(),
                                    c.line_count(),
                                    c.name().map(String::from),
                                    c.language().map(String::from),
                                )
                            })
                        };
                        let (a, b) = (read(&ours), read(&theirs));
                        match (a, b) {
                            (Ok(a), Ok(b)) => assert_eq!(a, b, "{at}"),
                            (Err(_), Err(_)) => {}
                            (a, b) => panic!(
                                "{at}: ours {}, miette's {}",
                                if a.is_ok() { "read it" } else { "failed" },
                                if b.is_ok() { "read it" } else { "failed" },
                            ),
                        }
                    }
                }
            }
        }
    }

    /// A redacted secret spanning lines changes the displayed lines; snippets follow them.
    #[test]
    fn snippets_follow_the_redacted_text() {
        let text = "a = 1\nk = \"\"\"s\nk\"\"\"\nb = 2\nc = 3\n";
        let mut file = SourceFile::new("p.toml", text.to_string());
        let _ = file.display_lines();
        let s = text.find("\"\"\"").unwrap();
        file.redact(s..s + 10);
        let theirs = NamedSource::new("p.toml", file.display.clone());
        let ours = Snippet {
            name: "p.toml",
            file: &file,
        };
        let span = SourceSpan::new(text.find("c =").unwrap().into(), 1);
        let (a, b) = (
            ours.read_span(&span, 1, 1).unwrap(),
            theirs.read_span(&span, 1, 1).unwrap(),
        );
        assert_eq!(
            (a.data(), a.line(), a.span()),
            (b.data(), b.line(), b.span())
        );
    }

    /// 20,000 diagnostics in one 20,000-line file: each is rendered once, with its own line.
    /// (With a copy of the file per diagnostic and a scan from its start, this took minutes;
    /// `benches/render.rs` measures it.)
    #[test]
    fn renders_many_diagnostics_of_one_file() {
        const N: usize = 20_000;
        let mut text = String::new();
        let mut starts = Vec::new();
        for i in 0..N {
            starts.push(text.len());
            text.push_str(&format!("key_{i} = {i}\n"));
        }
        let mut sources = Sources::default();
        let file = sources.add(SourceFile::new("big.toml", text));
        let items: Vec<Diagnostic> = starts
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                Diagnostic::error(
                    Code::UnknownKey,
                    format!("unknown key `key_{i}`"),
                    Origin::File {
                        file,
                        span: s..s + 4 + i.to_string().len(),
                    },
                )
                .with_label("here")
            })
            .collect();
        let d = Diagnostics {
            items,
            sources: Arc::new(sources),
        };
        let out = d.render(false);
        assert_eq!(out.matches("tollgate::unknown-key").count(), N);
        for i in [0, 1, N / 2, N - 1] {
            let at = format!("[big.toml:{}:1]", i + 1);
            assert_eq!(out.matches(&at).count(), 1, "{at}");
        }
    }
}
