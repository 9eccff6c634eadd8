//! Key path → source span index, from toml_edit's spanned parse of each file.
//!
//! figment reports errors by key path, not position; the compiler finds problems in the
//! typed [`super::Policy`], which has no positions either. Both resolve a key path through
//! this index to a `file:line:col`.

use std::fmt;
use std::ops::Range;

use toml_edit::{Item, Table, Value};

/// One step in a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path from the root of a policy to a value, e.g. `models."gpt-4.1".price`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The root.
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }
    /// This path extended by a key.
    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.into()));
        p
    }
    /// This path extended by an index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
    /// The path one step up (the root stays the root).
    pub fn parent(&self) -> Self {
        let mut p = self.clone();
        p.0.pop();
        p
    }
    /// Whether `self` starts with `prefix`.
    pub fn starts_with(&self, prefix: &KeyPath) -> bool {
        self.0.starts_with(&prefix.0)
    }
}

impl<S: Into<String>, const N: usize> From<[S; N]> for KeyPath {
    fn from(keys: [S; N]) -> Self {
        KeyPath(keys.into_iter().map(|k| Seg::Key(k.into())).collect())
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        if first {
            f.write_str("<root>")?;
        }
        Ok(())
    }
}

/// Where a key and its value are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans {
    /// The key (for a `[table]` header: the header).
    pub key: Option<Range<usize>>,
    /// The value (for a table: its header or inline braces).
    pub value: Option<Range<usize>>,
}

/// Every key path of one file with its spans.
///
/// A trie mirroring the document: one node per written key path, its children by key
/// (sorted, for binary search) and by index. Building it clones each key once, not each
/// full path; a lookup walks the path. Only diagnostics need it: the loader builds it
/// when the first one is located (see [`FileFacts`] for what loading needs of every file).
#[derive(Debug)]
pub struct SpanIndex {
    /// `nodes[0]` is the root (which has no spans).
    nodes: Vec<Node>,
}

impl Default for SpanIndex {
    fn default() -> Self {
        SpanIndex {
            nodes: vec![Node::default()],
        }
    }
}

/// What loading needs to know of every file, read from its top-level sections only.
#[derive(Debug, Default)]
pub struct FileFacts {
    /// Number of `[[routes]]` entries in this file.
    pub routes: usize,
    /// Spans of values that are (or look like) API keys, to mask in every snippet.
    pub secrets: Vec<Range<usize>>,
    /// Top-level named entries (`upstreams.x`, …) and leaf keys of `defaults`, for the
    /// duplicate check across files (left empty when asked not to: a lone file).
    pub definitions: Vec<KeyPath>,
}

#[derive(Debug, Default)]
struct Node {
    spans: Spans,
    /// Children by key, sorted by key once the index is built.
    keys: Vec<(Box<str>, u32)>,
    /// Children by index, in order.
    items: Vec<u32>,
}

/// A step of the path being walked while building (borrowed from the document).
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index,
}

/// Sections whose entries are named tables.
pub(crate) const NAMED_SECTIONS: [&str; 6] = [
    "upstreams",
    "models",
    "retry",
    "breakers",
    "budgets",
    "callers",
];

const ROOT: u32 = 0;

impl SpanIndex {
    /// Indexes a parsed document.
    pub fn build(doc: &Table) -> Self {
        let mut idx = SpanIndex::default();
        let mut path = Vec::new();
        idx.walk_table(ROOT, &mut path, doc);
        for n in &mut idx.nodes {
            n.keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        idx
    }

    /// The spans of exactly this path, if written in this file.
    pub fn get(&self, path: &KeyPath) -> Option<&Spans> {
        if path.0.is_empty() {
            return None;
        }
        self.along(&path.0).nth(path.0.len() - 1)
    }

    /// The spans of the written prefixes of `path`, shortest (one step) first, up to the
    /// longest written one.
    pub(crate) fn along<'a, 'p>(
        &'a self,
        path: &'p [Seg],
    ) -> impl Iterator<Item = &'a Spans> + use<'a, 'p> {
        let mut node = ROOT;
        path.iter().map_while(move |seg| {
            let n = &self.nodes[node as usize];
            node = match seg {
                Seg::Key(k) => {
                    let i = n
                        .keys
                        .binary_search_by(|(c, _)| (**c).cmp(k.as_str()))
                        .ok()?;
                    n.keys[i].1
                }
                Seg::Index(i) => *n.items.get(*i)?,
            };
            Some(&self.nodes[node as usize].spans)
        })
    }

    /// The child of `parent` by this step, created if new; a node's spans are the first
    /// ones recorded for it.
    fn insert(
        &mut self,
        parent: u32,
        step: Step<'_>,
        key: Option<Range<usize>>,
        value: Option<Range<usize>>,
    ) -> u32 {
        let id = self.nodes.len() as u32;
        let p = &mut self.nodes[parent as usize];
        // Keys of a table are unique and each item is visited once, so a step is new to its
        // parent; the lookup only guards that (keys are sorted after the walk, so a linear
        // search here would be quadratic: only the last child is checked).
        let existing = match step {
            Step::Key(k) => p.keys.last().filter(|(c, _)| **c == *k).map(|(_, n)| *n),
            Step::Index => None,
        };
        if let Some(n) = existing {
            let e = &mut self.nodes[n as usize].spans;
            if e.key.is_none() {
                e.key = key;
            }
            if e.value.is_none() {
                e.value = value;
            }
            return n;
        }
        match step {
            Step::Key(k) => p.keys.push((k.into(), id)),
            Step::Index => p.items.push(id),
        }
        self.nodes.push(Node {
            spans: Spans { key, value },
            ..Node::default()
        });
        id
    }

    fn walk_table<'a>(&mut self, node: u32, path: &mut Vec<Step<'a>>, t: &'a Table) {
        for (k, item) in t.iter() {
            let key_span = t.key(k).and_then(|k| k.span());
            path.push(Step::Key(k));
            self.walk_item(node, path, key_span, item);
            path.pop();
        }
    }

    /// Walks the item at `path` (whose last step is the item's own), a child of `parent`.
    fn walk_item<'a>(
        &mut self,
        parent: u32,
        path: &mut Vec<Step<'a>>,
        key_span: Option<Range<usize>>,
        item: &'a Item,
    ) {
        let step = *path.last().expect("an item has a step");
        match item {
            Item::None => {}
            Item::Value(v) => self.walk_value(parent, path, key_span, v),
            Item::Table(t) => {
                let n = self.insert(parent, step, key_span, t.span());
                self.walk_table(n, path, t);
            }
            Item::ArrayOfTables(a) => {
                let n = self.insert(parent, step, key_span.clone(), a.span());
                for t in a.iter() {
                    let i = self.insert(n, Step::Index, t.span(), t.span());
                    path.push(Step::Index);
                    self.walk_table(i, path, t);
                    path.pop();
                }
            }
        }
    }

    fn walk_value<'a>(
        &mut self,
        parent: u32,
        path: &mut Vec<Step<'a>>,
        key_span: Option<Range<usize>>,
        v: &'a Value,
    ) {
        let step = *path.last().expect("a value has a step");
        let n = self.insert(parent, step, key_span, v.span());
        match v {
            Value::Array(a) => {
                for v in a.iter() {
                    path.push(Step::Index);
                    self.walk_value(n, path, v.span(), v);
                    path.pop();
                }
            }
            Value::InlineTable(t) => {
                for (k, v) in t.iter() {
                    let ks = t.key(k).and_then(|k| k.span());
                    path.push(Step::Key(k));
                    self.walk_value(n, path, ks, v);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

impl FileFacts {
    /// The facts of a parsed document; `definitions` only if asked for.
    pub fn of(doc: &Table, definitions: bool) -> Self {
        let mut f = FileFacts::default();
        match doc.get("routes") {
            Some(Item::ArrayOfTables(a)) => f.routes = a.len(),
            Some(Item::Value(Value::Array(a))) => f.routes = a.len(),
            _ => {}
        }
        f.find_secrets(doc);
        if definitions {
            f.find_definitions(doc);
        }
        f
    }

    fn find_definitions(&mut self, doc: &Table) {
        for (k, item) in doc.iter() {
            let section = KeyPath::root().key(k);
            if NAMED_SECTIONS.contains(&k) || k == "defaults" {
                if let Some(t) = item.as_table_like() {
                    self.definitions
                        .extend(t.iter().map(|(name, _)| section.key(name)));
                }
            } else if k != "routes" {
                self.definitions.push(section);
            }
        }
    }

    /// Literal keys: `upstreams.NAME.api_key` and each of `api_keys` (a string, or the
    /// key-like strings of its table) and any `callers.NAME.key_sha256` that is not a hash.
    fn find_secrets(&mut self, doc: &Table) {
        let entries = |section: &str| {
            doc.get(section)
                .and_then(Item::as_table_like)
                .into_iter()
                .flat_map(|t| t.iter())
                .filter_map(|(_, e)| e.as_table_like())
        };
        for upstream in entries("upstreams") {
            match upstream.get("api_key") {
                Some(Item::Table(t)) => {
                    self.api_key_secrets(t.iter().filter_map(|(k, i)| Some((k, i.as_value()?))))
                }
                Some(Item::Value(v @ Value::String(_))) => self.secrets.extend(v.span()),
                Some(Item::Value(Value::InlineTable(t))) => self.api_key_secrets(t.iter()),
                _ => {}
            }
            // `api_keys`: each element as an `api_key` (an inline array, or an array of
            // tables).
            match upstream.get("api_keys") {
                Some(Item::Value(Value::Array(a))) => {
                    for v in a.iter() {
                        match v {
                            Value::String(_) => self.secrets.extend(v.span()),
                            Value::InlineTable(t) => self.api_key_secrets(t.iter()),
                            _ => {}
                        }
                    }
                }
                Some(Item::ArrayOfTables(ts)) => {
                    for t in ts.iter() {
                        self.api_key_secrets(
                            t.iter().filter_map(|(k, i)| Some((k, i.as_value()?))),
                        );
                    }
                }
                _ => {}
            }
        }
        for caller in entries("callers") {
            if let Some(Item::Value(v)) = caller.get("key_sha256") {
                // Anything but a hash there may be a pasted key: never echo it.
                if !matches!(v, Value::String(h) if is_sha256_hex(h.value())) {
                    self.secrets.extend(v.span());
                }
            }
        }
    }

    /// Records the strings of an `api_key` table that may be keys: an `env` that does not
    /// look like a variable name (see [`env_looks_like_key`]), and any string under a key
    /// other than `env` and `prefixes` (a misspelt `key = "sk-…"` is still a secret).
    fn api_key_secrets<'a>(&mut self, entries: impl Iterator<Item = (&'a str, &'a Value)>) {
        let entries: Vec<(&str, &Value)> = entries.collect();
        let prefixes: Vec<String> = entries
            .iter()
            .find(|(k, _)| *k == "prefixes")
            .and_then(|(_, v)| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in entries {
            match (k, v) {
                ("prefixes", _) => {}
                ("env", Value::String(s)) if env_looks_like_key(s.value(), &prefixes) => {
                    self.secrets.extend(s.span());
                }
                ("env", _) => {}
                (_, Value::String(s)) => self.secrets.extend(s.span()),
                _ => {}
            }
        }
    }
}

/// Whether the `env` of an `api_key` is more likely a pasted key than a variable name: it is
/// not a plausible name, or it starts with one of the key prefixes the policy itself allows
/// (`hs_live_…` is a valid identifier, but it is a key).
pub(crate) fn env_looks_like_key(env: &str, prefixes: &[String]) -> bool {
    !is_env_name(env)
        || prefixes
            .iter()
            .any(|p| !p.is_empty() && env.starts_with(p.as_str()))
}

/// Whether `s` is a SHA-256 hash written as 64 hex digits (either case).
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A SHA-256 hash from 64 hex digits (either case); `None` for anything else.
pub(crate) fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    if !is_sha256_hex(s) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        // 64 ASCII hex digits (checked above): every pair parses.
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether `s` is a plausible environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub(crate) fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(src: &str) -> SpanIndex {
        let doc = toml_edit::ImDocument::parse(src.to_string()).unwrap();
        SpanIndex::build(doc.as_table())
    }

    fn facts(src: &str) -> FileFacts {
        let doc = toml_edit::ImDocument::parse(src.to_string()).unwrap();
        FileFacts::of(doc.as_table(), true)
    }

    #[test]
    fn finds_keys_in_tables_inline_tables_and_arrays() {
        let src = "[models.\"gpt-4.1\"]\nupstream = \"relay\"\nprice = { input_per_mtok = 2.0 }\n[[routes]]\nname = \"a\"\ntargets = [\"x\", { model = \"y\" }]\n";
        let idx = index(src);
        let at = |p: KeyPath| {
            let s = idx.get(&p).unwrap_or_else(|| panic!("no {p}"));
            &src[s.value.clone().unwrap()]
        };
        assert_eq!(
            at(KeyPath::from(["models", "gpt-4.1", "upstream"])),
            "\"relay\""
        );
        assert_eq!(
            at(KeyPath::from([
                "models",
                "gpt-4.1",
                "price",
                "input_per_mtok"
            ])),
            "2.0"
        );
        assert_eq!(
            at(KeyPath::from(["routes"])
                .index(0)
                .key("targets")
                .index(1)
                .key("model")),
            "\"y\""
        );
        let facts = facts(src);
        assert_eq!(facts.routes, 1);
        assert_eq!(
            facts.definitions,
            vec![KeyPath::from(["models", "gpt-4.1"])]
        );
    }

    #[test]
    fn records_literal_keys_as_secrets() {
        let src = "[upstreams.a]\napi_key = \"sk-live-123\"\n[upstreams.b]\napi_key = { env = \"sk-live-456\" }\n[upstreams.c]\napi_key = { env = \"OK_VAR\" }\n[upstreams.d]\napi_key = { env = \"hs_live_789\", prefixes = [\"hs_live_\"] }\n[upstreams.e]\napi_key = { env = \"OK\", key = \"sk-live-abc\" }\n[upstreams.f.api_key]\nenv = \"sk-live-def\"\n";
        let secrets: Vec<&str> = facts(src).secrets.iter().map(|r| &src[r.clone()]).collect();
        assert_eq!(
            secrets,
            [
                "\"sk-live-123\"",
                "\"sk-live-456\"",
                "\"hs_live_789\"",
                "\"sk-live-abc\"",
                "\"sk-live-def\""
            ]
        );
    }

    #[test]
    fn finds_every_key_of_wide_tables_and_nothing_else() {
        let mut src = String::from("[t]\n");
        for i in (0..300).rev() {
            src.push_str(&format!("k{i} = {i}\n"));
        }
        let idx = index(&src);
        for i in 0..300 {
            let s = idx.get(&KeyPath::from(["t", &format!("k{i}")])).unwrap();
            assert_eq!(&src[s.value.clone().unwrap()], i.to_string());
        }
        assert!(idx.get(&KeyPath::root()).is_none());
        assert!(idx.get(&KeyPath::from(["t", "k300"])).is_none());
        assert!(idx.get(&KeyPath::from(["t", "k1", "x"])).is_none());
        assert!(idx.get(&KeyPath::from(["t"]).index(0)).is_none());
        assert!(idx.get(&KeyPath::from(["u"])).is_none());
    }

    #[test]
    fn key_paths_display_like_toml() {
        let p = KeyPath::from(["models", "gpt-4.1"]).key("price");
        assert_eq!(p.to_string(), "models.\"gpt-4.1\".price");
        assert_eq!(
            KeyPath::from(["routes"]).index(2).key("when").to_string(),
            "routes[2].when"
        );
    }
}
