//! Request attributes: what routes match on.

use crate::plan::{Attr, Cmp, Matcher};
use crate::policy::Scalar;

/// The attributes of one request. Routes match on these; none is required.
///
/// ```
/// use tollgate::exec::Request;
/// let req = Request::new()
///     .model("gpt-4.1")
///     .task("summary")
///     .max_tokens(800)
///     .prompt("Summarize this thread")
///     .tag("team-a")
///     .caller("svc-billing");
/// assert_eq!(req.estimated_input_tokens(), 6);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// The model asked for (a model name, or a route name to pick that route).
    pub model: Option<String>,
    /// A task label.
    pub task: Option<String>,
    /// Most output tokens wanted.
    pub max_tokens: Option<u64>,
    /// Input tokens, if the caller counted them (otherwise estimated from the prompt).
    pub input_tokens: Option<u64>,
    /// The prompt text.
    pub prompt: Option<String>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// The caller key's name.
    pub caller: Option<String>,
}

/// Output tokens assumed for cost reservations when a request sets no `max_tokens`.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

impl Request {
    /// A request with no attributes (it matches only routes without conditions, or
    /// conditions on absent attributes).
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the model.
    pub fn model(mut self, m: impl Into<String>) -> Self {
        self.model = Some(m.into());
        self
    }
    /// Sets the task.
    pub fn task(mut self, t: impl Into<String>) -> Self {
        self.task = Some(t.into());
        self
    }
    /// Sets `max_tokens`.
    pub fn max_tokens(mut self, n: u64) -> Self {
        self.max_tokens = Some(n);
        self
    }
    /// Sets the counted input tokens.
    pub fn input_tokens(mut self, n: u64) -> Self {
        self.input_tokens = Some(n);
        self
    }
    /// Sets the prompt.
    pub fn prompt(mut self, p: impl Into<String>) -> Self {
        self.prompt = Some(p.into());
        self
    }
    /// Adds a tag.
    pub fn tag(mut self, t: impl Into<String>) -> Self {
        self.tags.push(t.into());
        self
    }
    /// Sets the caller key name.
    pub fn caller(mut self, c: impl Into<String>) -> Self {
        self.caller = Some(c.into());
        self
    }

    /// Input tokens: as counted by the caller, else about one per four bytes of prompt.
    pub fn estimated_input_tokens(&self) -> u64 {
        self.input_tokens.unwrap_or_else(|| {
            self.prompt
                .as_ref()
                .map_or(0, |p| (p.len() as u64).div_ceil(4))
        })
    }

    /// Output tokens to reserve for: `max_tokens`, else [`DEFAULT_MAX_OUTPUT_TOKENS`].
    pub fn reserved_output_tokens(&self) -> u64 {
        self.max_tokens.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)
    }

    /// Output tokens to reserve for on a model whose `max_tokens` is `model_default` (what
    /// the HTTP client sends when the request sets none): the request's `max_tokens`, else
    /// the model's, else [`DEFAULT_MAX_OUTPUT_TOKENS`].
    #[inline]
    pub fn reserved_output_tokens_on(&self, model_default: Option<u64>) -> u64 {
        self.max_tokens
            .or(model_default)
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)
    }

    fn text(&self, a: Attr) -> Option<&str> {
        match a {
            Attr::Model => self.model.as_deref(),
            Attr::Task => self.task.as_deref(),
            Attr::Prompt => self.prompt.as_deref(),
            Attr::Caller => self.caller.as_deref(),
            _ => None,
        }
    }

    fn number(&self, a: Attr) -> Option<f64> {
        match a {
            Attr::MaxTokens => self.max_tokens.map(|n| n as f64),
            Attr::InputTokens => Some(self.estimated_input_tokens() as f64),
            _ => None,
        }
    }

    fn present(&self, a: Attr) -> bool {
        match a {
            Attr::Tags => !self.tags.is_empty(),
            Attr::MaxTokens => self.max_tokens.is_some(),
            Attr::InputTokens => self.input_tokens.is_some() || self.prompt.is_some(),
            _ => self.text(a).is_some(),
        }
    }

    /// Whether the request satisfies a compiled condition.
    pub fn matches(&self, m: &Matcher) -> bool {
        match m {
            Matcher::Any(ms) => ms.iter().any(|m| self.matches(m)),
            Matcher::All(ms) => ms.iter().all(|m| self.matches(m)),
            Matcher::Not(m) => !self.matches(m),
            Matcher::Exists(a, want) => self.present(*a) == *want,
            Matcher::Compare(a, op, x) => self.number(*a).is_some_and(|v| match op {
                Cmp::Gt => v > *x,
                Cmp::Gte => v >= *x,
                Cmp::Lt => v < *x,
                Cmp::Lte => v <= *x,
            }),
            Matcher::OneOf(a, values) => match a {
                Attr::Tags => values
                    .iter()
                    .any(|v| matches!(v, Scalar::Str(s) if self.tags.iter().any(|t| t == s))),
                Attr::MaxTokens | Attr::InputTokens => self.number(*a).is_some_and(|n| {
                    values.iter().any(|v| match v {
                        Scalar::Int(i) => n == *i as f64,
                        Scalar::Float(f) => n == *f,
                        _ => false,
                    })
                }),
                _ => self
                    .text(*a)
                    .is_some_and(|t| values.iter().any(|v| matches!(v, Scalar::Str(s) if s == t))),
            },
            Matcher::ContainsAny {
                attr,
                words,
                min_hits,
            } => {
                let hits = match attr {
                    Attr::Tags => words
                        .iter()
                        .filter(|w| self.tags.iter().any(|t| t.eq_ignore_ascii_case(w)))
                        .count(),
                    _ => match self.text(*attr) {
                        Some(t) => {
                            let lower = t.to_lowercase();
                            words.iter().filter(|w| contains_word(&lower, w)).count()
                        }
                        None => 0,
                    },
                };
                hits >= *min_hits as usize
            }
        }
    }
}

/// Whether `word` occurs in `text` at word boundaries (so `fast` does not match `breakfast`).
fn contains_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back().is_none_or(|c| !is_word(c));
        let after = text[i + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !is_word(c));
        before && after
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[&str], min_hits: u32) -> Matcher {
        Matcher::ContainsAny {
            attr: Attr::Prompt,
            words: ws.iter().map(|s| s.to_string()).collect(),
            min_hits,
        }
    }

    #[test]
    fn contains_any_counts_distinct_whole_words() {
        let r = Request::new().prompt("Please ANALYZE and compare these; analyze again");
        assert!(r.matches(&words(&["analyze", "compare", "design"], 2)));
        assert!(!r.matches(&words(&["analyze", "design"], 2)));
        let r = Request::new().prompt("breakfast is served");
        assert!(!r.matches(&words(&["fast"], 1)));
    }

    #[test]
    fn numeric_comparisons_need_the_attribute() {
        let m = Matcher::Compare(Attr::MaxTokens, Cmp::Gt, 2000.0);
        assert!(Request::new().max_tokens(4000).matches(&m));
        assert!(!Request::new().max_tokens(100).matches(&m));
        assert!(!Request::new().matches(&m));
        assert!(Request::new().matches(&Matcher::Not(Box::new(m))));
    }

    #[test]
    fn one_of_on_text_tags_and_numbers() {
        let task = Matcher::OneOf(
            Attr::Task,
            vec![Scalar::Str("chat".into()), Scalar::Str("summary".into())],
        );
        assert!(Request::new().task("summary").matches(&task));
        assert!(!Request::new().task("code").matches(&task));
        let tags = Matcher::OneOf(Attr::Tags, vec![Scalar::Str("batch".into())]);
        assert!(Request::new().tag("x").tag("batch").matches(&tags));
        let n = Matcher::OneOf(Attr::MaxTokens, vec![Scalar::Int(256)]);
        assert!(Request::new().max_tokens(256).matches(&n));
        assert!(Request::new()
            .tag("a")
            .matches(&Matcher::Exists(Attr::Tags, true)));
        assert!(Request::new().matches(&Matcher::Exists(Attr::Caller, false)));
    }
}
