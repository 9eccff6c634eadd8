//! Compiled `when` conditions: what a route matches on.

use std::fmt;

use crate::policy::Scalar;

/// A request attribute routes can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attr {
    /// The model the caller asked for.
    Model,
    /// A task label (`chat`, `summary`, …), e.g. from the `x-tollgate-task` header.
    Task,
    /// The caller's `max_tokens`.
    MaxTokens,
    /// The estimated input tokens.
    InputTokens,
    /// The prompt text.
    Prompt,
    /// Free-form tags.
    Tags,
    /// The caller key's name.
    Caller,
}

/// What kind of values an attribute holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// Text.
    Text,
    /// A number.
    Number,
    /// A list of strings.
    List,
}

impl Attr {
    /// Every attribute, by its policy name.
    pub const ALL: [(&'static str, Attr); 7] = [
        ("model", Attr::Model),
        ("task", Attr::Task),
        ("max_tokens", Attr::MaxTokens),
        ("input_tokens", Attr::InputTokens),
        ("prompt", Attr::Prompt),
        ("tags", Attr::Tags),
        ("caller", Attr::Caller),
    ];

    /// The attribute named `s`.
    pub fn from_name(s: &str) -> Option<Attr> {
        Attr::ALL.iter().find(|(n, _)| *n == s).map(|(_, a)| *a)
    }

    /// Its policy name.
    pub fn name(self) -> &'static str {
        Attr::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("?", |(n, _)| n)
    }

    /// The kind of value it holds.
    pub fn kind(self) -> AttrKind {
        match self {
            Attr::MaxTokens | Attr::InputTokens => AttrKind::Number,
            Attr::Tags => AttrKind::List,
            _ => AttrKind::Text,
        }
    }
}

/// A numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
}

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// Attribute equals one of these values (one value for `eq`). For `tags`: has one of them.
    OneOf(Attr, Vec<Scalar>),
    /// Numeric attribute compared with a number.
    Compare(Attr, Cmp, f64),
    /// Text (or tags) containing at least `min_hits` distinct words of these, case-insensitive.
    ContainsAny {
        /// The attribute.
        attr: Attr,
        /// Lowercased words.
        words: Vec<String>,
        /// Distinct words needed.
        min_hits: u32,
    },
    /// Attribute present or absent.
    Exists(Attr, bool),
    /// Any of these.
    Any(Vec<Matcher>),
    /// All of these.
    All(Vec<Matcher>),
    /// Not this.
    Not(Box<Matcher>),
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, ms: &[Matcher], sep: &str| -> fmt::Result {
            f.write_str("(")?;
            for (i, m) in ms.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write!(f, "{m}")?;
            }
            f.write_str(")")
        };
        match self {
            Matcher::OneOf(a, v) if v.len() == 1 => write!(f, "{} = {}", a.name(), v[0]),
            Matcher::OneOf(a, v) => {
                let vs: Vec<String> = v.iter().map(|s| s.to_string()).collect();
                write!(f, "{} in [{}]", a.name(), vs.join(", "))
            }
            Matcher::Compare(a, c, n) => {
                let op = match c {
                    Cmp::Gt => ">",
                    Cmp::Gte => ">=",
                    Cmp::Lt => "<",
                    Cmp::Lte => "<=",
                };
                write!(f, "{} {op} {n}", a.name())
            }
            Matcher::ContainsAny {
                attr,
                words,
                min_hits,
            } => {
                write!(f, "{} has ", attr.name())?;
                if *min_hits > 1 {
                    write!(f, "{min_hits} of ")?;
                }
                write!(f, "[{}]", words.join(", "))
            }
            Matcher::Exists(a, true) => write!(f, "{} present", a.name()),
            Matcher::Exists(a, false) => write!(f, "{} absent", a.name()),
            Matcher::Any(ms) => join(f, ms, " or "),
            Matcher::All(ms) => join(f, ms, " and "),
            Matcher::Not(m) => write!(f, "not {m}"),
        }
    }
}
