//! Shared by `tests/no_panic.rs` (fed by proptest) and the cargo-fuzz targets in `fuzz/`
//! (fed by libFuzzer): the pipeline under test, and a structure-aware generator of
//! policy-like TOML.
//!
//! [`check_bytes`] is the one entry point: bytes → a policy file → `policy::load` →
//! `plan::compile` → diagnostics rendered in all three formats, with the invariants every
//! input must keep asserted on the way.
//!
//! [`Doc`] is a mini-AST of a policy, derived with `arbitrary`: sections `upstreams`,
//! `models`, `retry`, `breakers`, `routes`, `budgets`, `defaults`, with plausible values
//! most of the time (names that refer to defined entries, well-formed durations) and
//! implausible ones often enough (unknown names and keys, wrong types, NaN, negative counts,
//! bad durations, odd table syntax) to reach every check of the loader and the compiler;
//! and extreme ones ([`EXTREME_DURATIONS`], [`EXTREME_COUNTS`], [`EXTREME_NUMBERS`]: the
//! largest duration, `u32::MAX`, infinities, `-0.0`, subnormals), kept even in `sane` mode
//! where they are valid, so the static bounds and the runtime see them too.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use arbitrary::Arbitrary;
use tollgate::diagnostic::{Origin, Severity};
use tollgate::policy::{load, LoadOptions};

/// What one run of the pipeline produced.
#[derive(Debug)]
pub struct Outcome {
    /// The policy compiled.
    pub ok: bool,
    /// Number of error diagnostics.
    pub errors: usize,
}

/// Writes `bytes` to `dir/policy.toml`, loads and compiles it with no environment
/// overrides, renders the diagnostics (human with and without colour, JSON, short), and
/// checks what must hold for any input:
/// - a rejected policy has at least one error, and every error says where it is;
/// - a span lies within its file, on character boundaries, and `short` prints it as
///   `file:line:col`;
/// - an accepted policy has no error.
///
/// Panics (so the fuzzer or proptest reports it) when any of these fails.
pub fn check_bytes(dir: &Path, bytes: &[u8]) -> Outcome {
    let path: PathBuf = dir.join("policy.toml");
    std::fs::write(&path, bytes).expect("write the policy file");
    let loaded = load(&LoadOptions::new([&path]).with_env(Vec::<(String, String)>::new()));
    let (ok, diags) = match tollgate::plan::compile(loaded) {
        Ok(c) => {
            accepted_plan_runs(&c.plan);
            (true, c.warnings)
        }
        Err(d) => (false, d),
    };
    // Rendering must not panic, whatever the spans.
    let _ = diags.render(false);
    let _ = diags.render(true);
    let json = diags.to_json();
    let short = diags.short();

    let errors = diags.error_count();
    assert_eq!(
        json["errors"].as_u64(),
        Some(errors as u64),
        "JSON error count"
    );
    if ok {
        assert_eq!(errors, 0, "an accepted policy has errors:\n{short}");
        return Outcome { ok, errors };
    }
    assert!(errors >= 1, "a rejected policy has no error diagnostic");
    let text = std::str::from_utf8(bytes).ok();
    let mut located = 0;
    for d in &diags.items {
        if d.severity != Severity::Error {
            continue;
        }
        match &d.origin {
            Origin::File { file, span } => {
                let f = diags.sources.get(*file);
                assert!(
                    span.start <= span.end && span.end <= f.text.len(),
                    "span {span:?} outside the file ({} bytes): {d:?}",
                    f.text.len()
                );
                assert!(
                    f.text.is_char_boundary(span.start) && f.text.is_char_boundary(span.end),
                    "span {span:?} not on char boundaries: {d:?}"
                );
                let (line, col) = f.line_col(span.start);
                let at = format!("{}:{line}:{col}", f.path.display());
                assert!(short.contains(&at), "short output lacks `{at}`:\n{short}");
                located += 1;
            }
            // Non-UTF-8 input: the file is the location (no line to point at).
            Origin::Path(p) => {
                assert!(
                    text.is_none() && p == &path,
                    "an error located at a path only, for UTF-8 input: {d:?}"
                );
                located += 1;
            }
            // A policy-wide error (e.g. `no-routes`) may have no place of its own.
            Origin::None => {}
            Origin::Env { .. } => panic!("an env-override error with no override set: {d:?}"),
        }
    }
    assert!(
        located >= 1,
        "a rejected policy has no error that says where it is:\n{short}"
    );
    Outcome { ok, errors }
}

/// What `check` accepts, a reload accepts: the executor builds its state from the plan
/// (the compiler checks every range it needs), and every route has static bounds, the
/// latency within the unbounded figure.
fn accepted_plan_runs(plan: &tollgate::plan::Plan) {
    for r in 0..plan.routes.len() {
        let b = tollgate::plan::route_bounds(
            plan,
            tollgate::plan::RouteId(r as u32),
            tollgate::plan::TokenCounts {
                input: u64::MAX,
                output: u64::MAX,
            },
        );
        assert!(b.latency <= b.unbounded_latency, "{b:?}");
        assert!(b.attempts >= 1, "{b:?}");
    }
    if let Err(e) = tollgate::exec::Executor::new(plan.clone()) {
        panic!("an accepted policy cannot be run: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// The mini-AST.

thread_local! {
    /// While rendering a [`Doc`] whose `sane` flag is set: every implausible variant is
    /// rendered as a plausible one, required keys are always written, names are unique and
    /// references resolve. Random input then yields policies that get past the loader and
    /// exercise the compiler's semantic checks (and often compile), not only syntax errors.
    static SANE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn sane() -> bool {
    SANE.with(|s| s.get())
}

const NAMES: [&str; 12] = [
    "a",
    "b",
    "relay",
    "openai",
    "gpt-4.1",
    "claude-sonnet-4.5",
    "deepseek_v3",
    "x.y",
    "",
    "with space",
    "ünïcødé",
    "q\"uote\\",
];

/// A name for a new entry.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Name(u8);

impl Name {
    fn get(self) -> &'static str {
        NAMES[self.0 as usize % NAMES.len()]
    }
}

/// A reference to an entry of some section: usually one that exists.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Ref(u8);

impl Ref {
    fn pick<'a>(self, defined: &'a [&'static str]) -> &'a str {
        if (self.0 < 224 || sane()) && !defined.is_empty() {
            defined[self.0 as usize % defined.len()]
        } else {
            ["nope", "gpt-4", "", "a "][self.0 as usize % 4]
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Dur {
    Ms(u16),
    S(u8),
    Min(u8),
    H(u8),
    D(u8),
    Compound(u8, u16),
    Zero,
    Huge,
    /// One of [`EXTREME_DURATIONS`]: the largest representable, and just past it.
    Extreme(u8),
    NoUnit(u16),
    BadUnit(u8),
    Bare(u16),
    Empty,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Num {
    Int(u8),
    Mid(u16),
    Big,
    TooBigForToml,
    Neg(i16),
    Frac(u8, u8),
    Zero,
    Nan,
    Inf,
    NegInf,
    /// One of [`EXTREME_COUNTS`] or [`EXTREME_NUMBERS`] (`u32::MAX`, `-0.0`, `5e-324`, …).
    Extreme(u8),
    Str(u8),
    Bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Ratio {
    Frac(u8),
    One,
    Zero,
    Over(u8),
    Neg,
    Nan,
    NegZero,
    Tiny,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Flag {
    True,
    False,
    Str,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Class {
    Connect,
    Timeout,
    S429,
    S5xx,
    S4xx,
    S503,
    Code,
    BreakerOpen,
    Limited,
    Bogus,
    S999,
    Number,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Timeouts {
    connect: Option<Dur>,
    per_try: Option<Dur>,
    total: Option<Dur>,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Defaults {
    timeouts: Option<Timeouts>,
    retry: Option<Ref>,
    breaker: Option<Ref>,
    baseline_model: Option<Ref>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Url {
    Https,
    Http,
    Empty,
    NoScheme,
    Int,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Key {
    Env(u8, Vec<u8>),
    Literal,
    EmptyEnv,
    NotATable,
    Extra,
}

/// `state = "local" | "shared"` (or a bad value) on limits, breakers and budgets.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Scope2 {
    Local,
    Shared,
    Bogus,
}

impl Scope2 {
    fn render(self) -> String {
        quote(match self {
            Scope2::Local => "local",
            Scope2::Shared => "shared",
            Scope2::Bogus if sane() => "local",
            Scope2::Bogus => "global",
        })
    }
}

/// `[callers.NAME] key_sha256 = …`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum KeyHash {
    /// 64 hex digits (two callers with the same byte share a key).
    Valid(u8),
    /// The same in capitals.
    Upper(u8),
    Short,
    NotHex,
    Missing,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Caller {
    key_sha256: KeyHash,
}

impl Caller {
    fn kv(&self) -> Kv {
        let hex = |b: u8| format!("{b:02x}").repeat(32);
        let v = match self.key_sha256 {
            KeyHash::Valid(b) => Some(hex(b)),
            KeyHash::Upper(b) => Some(hex(b).to_uppercase()),
            KeyHash::Short if !sane() => Some("abc123".into()),
            KeyHash::NotHex if !sane() => Some("zz".repeat(32)),
            KeyHash::Missing if !sane() => None,
            _ => Some(hex(0x5a)),
        };
        let mut kv = Kv::default();
        kv.put("key_sha256", v.map(|h| quote(&h)));
        kv
    }
}

/// `[state.redis]`.
#[derive(Arbitrary, Debug, Clone)]
pub struct StateRedis {
    url_env: Option<Name>,
    key_prefix: Option<Name>,
    timeout: Option<Dur>,
    pool_size: Option<Num>,
    fail_closed: Option<bool>,
    expected_instances: Option<Num>,
    lease: Option<Num>,
}

impl StateRedis {
    fn kv(&self) -> Kv {
        let mut kv = Kv::default();
        let url = match self.url_env {
            Some(n) => Some(format!("{{ env = {} }}", quote(&n.get().to_uppercase()))),
            None if sane() => Some("{ env = \"REDIS_URL\" }".into()),
            None => None,
        };
        kv.put("url", url)
            .put("key_prefix", self.key_prefix.map(|n| quote(n.get())))
            .put("timeout", self.timeout.map(Dur::render))
            .put("pool_size", self.pool_size.map(Num::render))
            .put(
                "fail_mode",
                self.fail_closed
                    .map(|c| quote(if c { "closed" } else { "open" })),
            )
            .put(
                "expected_instances",
                self.expected_instances.map(Num::render),
            )
            .put("lease", self.lease.map(Num::render));
        kv
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Limits {
    state: Option<Scope2>,
    requests_per_second: Option<Num>,
    requests_per_minute: Option<Num>,
    tokens_per_minute: Option<Num>,
    burst: Option<Num>,
    concurrency: Option<Num>,
    on_limit: Option<(bool, bool)>,
    queue_timeout: Option<Dur>,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Upstream {
    base_url: Option<Url>,
    api_key: Option<Key>,
    pool: Option<(Option<Num>, Option<Num>, Option<Dur>)>,
    limits: Option<Limits>,
    rate_limit_headers: Option<Flag>,
    breaker: Option<Ref>,
    timeouts: Option<Timeouts>,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Model {
    upstream: Option<Ref>,
    upstream_model: Option<Name>,
    price: Option<(Option<Num>, Option<Num>)>,
    context_window: Option<Num>,
    breaker: Option<Ref>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Kind {
    Exponential,
    Constant,
    Decorrelated,
    Bogus,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Jitter {
    None,
    Full,
    Equal,
    Proportional,
    Bogus,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Backoff {
    kind: Option<Kind>,
    base: Option<Dur>,
    factor: Option<Num>,
    max: Option<Dur>,
    jitter: Option<Jitter>,
    jitter_ratio: Option<Ratio>,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Retry {
    max_attempts: Option<Num>,
    backoff: Option<Backoff>,
    retry_on: Option<Vec<Class>>,
    retry_after: Option<(Option<Flag>, Option<Dur>)>,
    budget: Option<(Option<Ratio>, Option<Num>, Option<Dur>)>,
    on: Vec<(Class, Option<Num>, Option<Backoff>)>,
}

/// `slow_call = { over, rate_threshold, min_calls, window }`.
pub type SlowCall = (Option<Dur>, Option<Ratio>, Option<Num>, Option<Dur>);

#[derive(Arbitrary, Debug, Clone)]
pub struct Breaker {
    consecutive_failures: Option<Num>,
    failure_rate: Option<(Option<Ratio>, Option<Num>, Option<Dur>)>,
    slow_call: Option<SlowCall>,
    open_for: Option<Dur>,
    half_open: Option<(Option<Num>, Option<Num>)>,
    trip_on: Option<Vec<Class>>,
    state: Option<Scope2>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Attr {
    Model,
    Task,
    MaxTokens,
    InputTokens,
    Prompt,
    Tags,
    Caller,
    Bogus,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Scalar {
    Str(Name),
    Num(Num),
    Flag(Flag),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    Eq(Scalar),
    OneOf(Vec<Scalar>),
    Gt(Num),
    Gte(Num),
    Lt(Num),
    Lte(Num),
    ContainsAny(Vec<Name>, Option<Num>),
    Exists(Flag),
    Two(Num, Scalar),
    None,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Cond {
    Test(Option<Attr>, Op),
    Any(Vec<Cond>),
    All(Vec<Cond>),
    Not(Box<Cond>),
    AttrAndAny(Attr, Vec<Cond>),
    Empty,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Strategy {
    Failover,
    Weighted,
    Cheapest,
    LowestLatency,
    LeastBusy,
    Bogus,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Target {
    Model(Ref),
    Weighted(Ref, Option<Num>),
    NoModel(Num),
    Number(Num),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Route {
    name: Option<Name>,
    when: Option<Cond>,
    strategy: Option<Strategy>,
    targets: Option<Vec<Target>>,
    failover_on: Option<Vec<Class>>,
    hedge: Option<(Option<Dur>, Option<Num>)>,
    retry: Option<Ref>,
    breaker: Option<Ref>,
    timeouts: Option<Timeouts>,
    streaming: Option<(Option<Dur>, Option<Dur>)>,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Exceed {
    Reject,
    Reroute(Ref),
    Bogus,
}

/// `scope = { routes, models, upstreams, keys }`.
pub type Scope = (Vec<Ref>, Vec<Ref>, Vec<Ref>, Vec<Name>);

#[derive(Arbitrary, Debug, Clone)]
pub struct Budget {
    state: Option<Scope2>,
    limit_usd: Option<Num>,
    window: Option<Dur>,
    scope: Option<Scope>,
    on_exceed: Option<Exceed>,
}

/// Something out of place.
#[derive(Arbitrary, Debug, Clone)]
pub enum Junk {
    /// An unknown key at the top level or in a table.
    UnknownKey(u8, Name),
    /// Any text, as a line of its own.
    Raw(String),
    /// A table header written twice.
    DuplicateHeader(Name),
    /// A top-level section of the wrong type.
    WrongSectionType(u8),
}

/// How an entry is written.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Style {
    /// `[section.NAME]` then `key = value` lines.
    Table,
    /// `section.NAME = { key = value, … }` (at the top, before any header).
    Inline,
}

/// A policy document.
#[derive(Arbitrary, Debug, Clone)]
pub struct Doc {
    sane: bool,
    version: Option<Num>,
    defaults: Option<Defaults>,
    upstreams: Vec<(Name, Style, Upstream)>,
    models: Vec<(Name, Style, Model)>,
    retry: Vec<(Name, Style, Retry)>,
    breakers: Vec<(Name, Style, Breaker)>,
    routes: Vec<Route>,
    budgets: Vec<(Name, Style, Budget)>,
    callers: Vec<(Name, Style, Caller)>,
    state: Option<StateRedis>,
    junk: Vec<Junk>,
}

// ---------------------------------------------------------------------------------------
// Rendering.

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_string()
    } else {
        quote(s)
    }
}

impl Dur {
    fn render(self) -> String {
        if sane()
            && matches!(
                self,
                Dur::Huge | Dur::NoUnit(_) | Dur::BadUnit(_) | Dur::Bare(_) | Dur::Empty
            )
        {
            return quote("1s");
        }
        if let (true, Dur::Extreme(i)) = (sane(), self) {
            // The largest durations a policy can write, kept: they must compile (and bound).
            return quote(["1ms", "18446744073709551615ms", "213503982334d"][i as usize % 3]);
        }
        match self {
            Dur::Ms(n) => quote(&format!("{n}ms")),
            Dur::S(n) => quote(&format!("{n}s")),
            Dur::Min(n) => quote(&format!("{n}m")),
            Dur::H(n) => quote(&format!("{n}h")),
            Dur::D(n) => quote(&format!("{n}d")),
            Dur::Compound(m, s) => quote(&format!("{m}m{s}s")),
            Dur::Zero => quote("0s"),
            Dur::Huge => quote("99999999999999999999d"),
            Dur::Extreme(i) => quote(EXTREME_DURATIONS[i as usize % EXTREME_DURATIONS.len()]),
            Dur::NoUnit(n) => quote(&n.to_string()),
            Dur::BadUnit(n) => quote(&format!("{n}w")),
            Dur::Bare(n) => n.to_string(),
            Dur::Empty => quote(""),
        }
    }
}

impl Num {
    fn render(self) -> String {
        if sane() {
            // A small positive integer: valid for counts and for prices alike.
            return match self {
                Num::Int(n) | Num::Str(n) | Num::Frac(n, _) => (n % 16 + 1).to_string(),
                Num::Mid(n) => (n % 5000 + 1).to_string(),
                // The largest count valid everywhere a count goes (`max_attempts` included).
                Num::Extreme(_) => "1000".into(),
                _ => "2".into(),
            };
        }
        match self {
            Num::Int(n) => n.to_string(),
            Num::Mid(n) => n.to_string(),
            Num::Big => "4294967296".into(),
            Num::TooBigForToml => "18446744073709551616".into(),
            Num::Neg(n) => (-(n.unsigned_abs() as i32) - 1).to_string(),
            Num::Frac(a, b) => format!("{a}.{b}"),
            Num::Zero => "0".into(),
            Num::Nan => "nan".into(),
            Num::Inf => "inf".into(),
            Num::NegInf => "-inf".into(),
            Num::Extreme(i) => {
                let all: Vec<&str> = EXTREME_COUNTS
                    .iter()
                    .chain(&EXTREME_NUMBERS)
                    .copied()
                    .collect();
                all[i as usize % all.len()].into()
            }
            Num::Str(n) => quote(&n.to_string()),
            Num::Bool => "true".into(),
        }
    }
}

impl Ratio {
    fn render(self) -> String {
        if sane()
            && matches!(
                self,
                Ratio::Over(_)
                    | Ratio::Neg
                    | Ratio::Nan
                    | Ratio::Zero
                    | Ratio::NegZero
                    | Ratio::Tiny
            )
        {
            return "0.5".into();
        }
        match self {
            Ratio::Frac(n) => format!("{:.3}", (n as f64 + 1.0) / 256.0),
            Ratio::One => "1.0".into(),
            Ratio::Zero => "0.0".into(),
            Ratio::Over(n) => format!("{}.5", n as u32 + 1),
            Ratio::Neg => "-0.5".into(),
            Ratio::Nan => "nan".into(),
            Ratio::NegZero => "-0.0".into(),
            Ratio::Tiny => "5e-324".into(),
        }
    }
}

impl Flag {
    fn render(self) -> String {
        if sane() && matches!(self, Flag::Str) {
            return "true".into();
        }
        match self {
            Flag::True => "true".into(),
            Flag::False => "false".into(),
            Flag::Str => quote("yes"),
        }
    }
}

impl Class {
    fn render(self) -> String {
        if sane() && matches!(self, Class::Bogus | Class::S999 | Class::Number) {
            return quote("connect");
        }
        match self {
            Class::Connect => quote("connect"),
            Class::Timeout => quote("timeout"),
            Class::S429 => quote("429"),
            Class::S5xx => quote("5xx"),
            Class::S4xx => quote("4xx"),
            Class::S503 => quote("503"),
            Class::Code => quote("rate_limit_exceeded"),
            Class::BreakerOpen => quote("breaker_open"),
            Class::Limited => quote("limited"),
            Class::Bogus => quote("sometimes"),
            Class::S999 => quote("999"),
            Class::Number => "429".into(),
        }
    }
}

fn classes(cs: &[Class]) -> String {
    let items: Vec<String> = cs.iter().map(|c| c.render()).collect();
    format!("[{}]", items.join(", "))
}

/// The key/value pairs of a table, in order.
#[derive(Default)]
struct Kv(Vec<(String, String)>);

impl Kv {
    fn put(&mut self, k: &str, v: Option<String>) -> &mut Self {
        if let Some(v) = v {
            self.0.push((k.to_string(), v));
        }
        self
    }
    fn inline(&self) -> String {
        let items: Vec<String> = self.0.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        format!("{{ {} }}", items.join(", "))
    }
    fn lines(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
    }
}

/// Names defined in each section, for references.
struct Names {
    upstreams: Vec<&'static str>,
    models: Vec<&'static str>,
    retry: Vec<&'static str>,
    breakers: Vec<&'static str>,
    routes: Vec<&'static str>,
}

impl Timeouts {
    fn kv(&self) -> Kv {
        let mut kv = Kv::default();
        kv.put("connect", self.connect.map(Dur::render))
            .put("per_try", self.per_try.map(Dur::render))
            .put("total", self.total.map(Dur::render));
        kv
    }
}

impl Backoff {
    fn kv(&self) -> Kv {
        let mut kv = Kv::default();
        kv.put(
            "kind",
            self.kind.map(|k| {
                quote(match k {
                    Kind::Exponential => "exponential",
                    Kind::Constant => "constant",
                    Kind::Decorrelated => "decorrelated",
                    Kind::Bogus if sane() => "constant",
                    Kind::Bogus => "linear",
                })
            }),
        )
        .put("base", self.base.map(Dur::render))
        .put("factor", self.factor.map(Num::render))
        .put("max", self.max.map(Dur::render))
        .put(
            "jitter",
            self.jitter.map(|j| {
                quote(match j {
                    Jitter::None => "none",
                    Jitter::Full => "full",
                    Jitter::Equal => "equal",
                    Jitter::Proportional => "proportional",
                    Jitter::Bogus if sane() => "none",
                    Jitter::Bogus => "half",
                })
            }),
        )
        .put("jitter_ratio", self.jitter_ratio.map(Ratio::render));
        kv
    }
}

impl Upstream {
    fn kv(&self, n: &Names) -> Kv {
        let mut kv = Kv::default();
        let base_url = match self.base_url {
            Some(Url::Empty | Url::NoScheme | Url::Int) | None if sane() => Some(Url::Https),
            u => u,
        };
        kv.put(
            "base_url",
            base_url.map(|u| match u {
                Url::Https => quote("https://api.example/v1"),
                Url::Http => quote("http://127.0.0.1:8080/v1"),
                Url::Empty => quote(""),
                Url::NoScheme => quote("api.example"),
                Url::Int => "8080".into(),
            }),
        );
        kv.put(
            "api_key",
            self.api_key.as_ref().map(|k| match k {
                Key::Env(..) | Key::Literal | Key::EmptyEnv | Key::NotATable | Key::Extra
                    if sane() =>
                {
                    "{ env = \"TOLLGATE_FUZZ_UNSET\" }".into()
                }
                Key::Env(i, prefixes) => {
                    let var =
                        ["OPENAI_API_KEY", "TOLLGATE_FUZZ_UNSET", "lower", "1BAD"][*i as usize % 4];
                    let mut t = Kv::default();
                    t.put("env", Some(quote(var)));
                    if !prefixes.is_empty() {
                        let ps: Vec<String> = prefixes
                            .iter()
                            .map(|p| quote(["sk-", "", "hs_live_"][*p as usize % 3]))
                            .collect();
                        t.put("prefixes", Some(format!("[{}]", ps.join(", "))));
                    }
                    t.inline()
                }
                Key::Literal => quote("sk-fuzz-literal-key"),
                Key::EmptyEnv => "{ env = \"\" }".into(),
                Key::NotATable => "42".into(),
                Key::Extra => "{ env = \"K\", value = \"sk-x\" }".into(),
            }),
        );
        kv.put(
            "pool",
            self.pool.map(|(c, i, t)| {
                let mut p = Kv::default();
                p.put("max_connections", c.map(Num::render))
                    .put("max_idle", i.map(Num::render))
                    .put("idle_timeout", t.map(Dur::render));
                p.inline()
            }),
        );
        kv.put(
            "limits",
            self.limits.as_ref().map(|l| {
                let mut p = Kv::default();
                p.put(
                    "requests_per_second",
                    l.requests_per_second.map(Num::render),
                )
                .put(
                    "requests_per_minute",
                    l.requests_per_minute.map(Num::render),
                )
                .put("tokens_per_minute", l.tokens_per_minute.map(Num::render))
                .put("state", l.state.map(Scope2::render))
                .put("burst", l.burst.map(Num::render))
                .put("concurrency", l.concurrency.map(Num::render))
                .put(
                    "on_limit",
                    l.on_limit.map(|(w, bad)| {
                        quote(match (w, bad && !sane()) {
                            (_, true) => "queue",
                            (true, false) => "wait",
                            (false, false) => "fail",
                        })
                    }),
                )
                .put("queue_timeout", l.queue_timeout.map(Dur::render));
                p.inline()
            }),
        );
        kv.put(
            "rate_limit_headers",
            self.rate_limit_headers.map(Flag::render),
        )
        .put("breaker", self.breaker.map(|r| quote(r.pick(&n.breakers))))
        .put("timeouts", self.timeouts.as_ref().map(|t| t.kv().inline()));
        kv
    }
}

impl Model {
    fn kv(&self, n: &Names) -> Kv {
        let mut kv = Kv::default();
        let upstream = self.upstream.or(sane().then_some(Ref(0)));
        kv.put("upstream", upstream.map(|r| quote(r.pick(&n.upstreams))))
            .put(
                "upstream_model",
                self.upstream_model.map(|m| quote(m.get())),
            )
            .put(
                "price",
                self.price.map(|(i, o)| {
                    let mut p = Kv::default();
                    let or = |x: Option<Num>| x.or(sane().then_some(Num::Int(1)));
                    p.put("input_per_mtok", or(i).map(Num::render))
                        .put("output_per_mtok", or(o).map(Num::render));
                    p.inline()
                }),
            )
            .put("context_window", self.context_window.map(Num::render))
            .put("breaker", self.breaker.map(|r| quote(r.pick(&n.breakers))));
        kv
    }
}

impl Retry {
    fn kv(&self) -> Kv {
        let mut kv = Kv::default();
        kv.put("max_attempts", self.max_attempts.map(Num::render))
            .put("backoff", self.backoff.as_ref().map(|b| b.kv().inline()))
            .put("retry_on", self.retry_on.as_deref().map(classes))
            .put(
                "retry_after",
                self.retry_after.map(|(h, m)| {
                    let mut p = Kv::default();
                    p.put("honor", h.map(Flag::render))
                        .put("max", m.map(Dur::render));
                    p.inline()
                }),
            )
            .put(
                "budget",
                self.budget.map(|(r, m, t)| {
                    let mut p = Kv::default();
                    p.put(
                        "ratio",
                        r.or(sane().then_some(Ratio::One)).map(Ratio::render),
                    )
                    .put("min_per_second", m.map(Num::render))
                    .put("ttl", t.map(Dur::render));
                    p.inline()
                }),
            );
        if !self.on.is_empty() {
            let items: Vec<String> = self
                .on
                .iter()
                .map(|(c, m, b)| {
                    let mut p = Kv::default();
                    p.put("max_attempts", m.map(Num::render))
                        .put("backoff", b.as_ref().map(|b| b.kv().inline()));
                    format!("{} = {}", c.render(), p.inline())
                })
                .collect();
            kv.put("on", Some(format!("{{ {} }}", items.join(", "))));
        }
        kv
    }
}

impl Breaker {
    fn kv(&self) -> Kv {
        let mut kv = Kv::default();
        kv.put(
            "consecutive_failures",
            self.consecutive_failures.map(Num::render),
        )
        .put(
            "failure_rate",
            self.failure_rate.map(|(t, m, w)| {
                let mut p = Kv::default();
                p.put(
                    "threshold",
                    t.or(sane().then_some(Ratio::One)).map(Ratio::render),
                )
                .put("min_calls", m.map(Num::render))
                .put("window", w.map(Dur::render));
                p.inline()
            }),
        )
        .put(
            "slow_call",
            self.slow_call.map(|(o, r, m, w)| {
                let mut p = Kv::default();
                p.put("over", o.or(sane().then_some(Dur::S(2))).map(Dur::render))
                    .put(
                        "rate_threshold",
                        r.or(sane().then_some(Ratio::One)).map(Ratio::render),
                    )
                    .put("min_calls", m.map(Num::render))
                    .put("window", w.map(Dur::render));
                p.inline()
            }),
        )
        .put("open_for", self.open_for.map(Dur::render))
        .put(
            "half_open",
            self.half_open.map(|(p, s)| {
                let mut h = Kv::default();
                h.put("probes", p.map(Num::render))
                    .put("successes_to_close", s.map(Num::render));
                h.inline()
            }),
        )
        .put("trip_on", self.trip_on.as_deref().map(classes))
        .put("state", self.state.map(Scope2::render));
        kv
    }
}

impl Scalar {
    fn render(&self) -> String {
        match self {
            Scalar::Str(n) => quote(n.get()),
            Scalar::Num(n) => n.render(),
            Scalar::Flag(f) => f.render(),
        }
    }
}

impl Cond {
    fn render(&self, depth: u32) -> String {
        if depth > 4 {
            return "{}".into();
        }
        let list = |cs: &[Cond]| {
            let items: Vec<String> = cs.iter().take(4).map(|c| c.render(depth + 1)).collect();
            format!("[{}]", items.join(", "))
        };
        let mut kv = Kv::default();
        match self {
            Cond::Test(attr, op) => {
                let attr = attr.or(sane().then_some(Attr::Task));
                kv.put(
                    "attr",
                    attr.map(|a| {
                        quote(match a {
                            Attr::Model => "model",
                            Attr::Task => "task",
                            Attr::MaxTokens => "max_tokens",
                            Attr::InputTokens => "input_tokens",
                            Attr::Prompt => "prompt",
                            Attr::Tags => "tags",
                            Attr::Caller => "caller",
                            Attr::Bogus if sane() => "task",
                            Attr::Bogus => "temperature",
                        })
                    }),
                );
                match op {
                    Op::Eq(s) => kv.put("eq", Some(s.render())),
                    Op::OneOf(ss) => {
                        let items: Vec<String> = ss.iter().map(Scalar::render).collect();
                        kv.put("one_of", Some(format!("[{}]", items.join(", "))))
                    }
                    Op::Gt(n) => kv.put("gt", Some(n.render())),
                    Op::Gte(n) => kv.put("gte", Some(n.render())),
                    Op::Lt(n) => kv.put("lt", Some(n.render())),
                    Op::Lte(n) => kv.put("lte", Some(n.render())),
                    Op::ContainsAny(words, hits) => {
                        let items: Vec<String> = words.iter().map(|w| quote(w.get())).collect();
                        kv.put("contains_any", Some(format!("[{}]", items.join(", "))))
                            .put("min_hits", hits.map(Num::render))
                    }
                    Op::Exists(f) => kv.put("exists", Some(f.render())),
                    Op::Two(_, s) if sane() => kv.put("eq", Some(s.render())),
                    Op::None if sane() => kv.put("exists", Some("true".into())),
                    Op::Two(n, s) => kv.put("gt", Some(n.render())).put("eq", Some(s.render())),
                    Op::None => &mut kv,
                };
            }
            Cond::Any(cs) => {
                kv.put("any", Some(list(cs)));
            }
            Cond::All(cs) => {
                kv.put("all", Some(list(cs)));
            }
            Cond::Not(c) => {
                kv.put("not", Some(c.render(depth + 1)));
            }
            Cond::AttrAndAny(..) | Cond::Empty if sane() => {
                kv.put("attr", Some(quote("tags")))
                    .put("exists", Some("true".into()));
            }
            Cond::AttrAndAny(_, cs) => {
                kv.put("attr", Some(quote("model")))
                    .put("any", Some(list(cs)));
            }
            Cond::Empty => {}
        }
        kv.inline()
    }
}

impl Route {
    fn kv(&self, n: &Names, index: usize) -> Kv {
        let mut kv = Kv::default();
        let name = match self.name {
            _ if sane() => Some(quote(n.routes[index])),
            x => x.map(|x| quote(x.get())),
        };
        let no_targets = Vec::new();
        let targets = match &self.targets {
            None if sane() => Some(&no_targets),
            t => t.as_ref(),
        };
        kv.put("name", name)
            .put("when", self.when.as_ref().map(|c| c.render(0)))
            .put(
                "strategy",
                self.strategy.map(|s| {
                    quote(match s {
                        Strategy::Failover => "failover",
                        Strategy::Weighted => "weighted",
                        Strategy::Cheapest => "cheapest",
                        Strategy::LowestLatency => "lowest-latency",
                        Strategy::LeastBusy => "least-busy",
                        Strategy::Bogus if sane() => "failover",
                        Strategy::Bogus => "round-robin",
                    })
                }),
            )
            .put(
                "targets",
                targets.map(|ts| {
                    let mut items: Vec<String> = ts
                        .iter()
                        .map(|t| match t {
                            Target::NoModel(_) | Target::Number(_) if sane() => {
                                quote(Ref(0).pick(&n.models))
                            }
                            Target::Model(r) => quote(r.pick(&n.models)),
                            Target::Weighted(r, w) => {
                                let mut p = Kv::default();
                                p.put("model", Some(quote(r.pick(&n.models))))
                                    .put("weight", w.map(Num::render));
                                p.inline()
                            }
                            Target::NoModel(w) => format!("{{ weight = {} }}", w.render()),
                            Target::Number(x) => x.render(),
                        })
                        .collect();
                    if items.is_empty() && sane() {
                        items.push(quote(Ref(0).pick(&n.models)));
                    }
                    format!("[{}]", items.join(", "))
                }),
            )
            .put("failover_on", self.failover_on.as_deref().map(classes))
            .put(
                "hedge",
                self.hedge.map(|(a, m)| {
                    let mut p = Kv::default();
                    p.put("after", a.or(sane().then_some(Dur::S(1))).map(Dur::render))
                        .put("max_extra", m.map(Num::render));
                    p.inline()
                }),
            )
            .put("retry", self.retry.map(|r| quote(r.pick(&n.retry))))
            .put("breaker", self.breaker.map(|r| quote(r.pick(&n.breakers))))
            .put("timeouts", self.timeouts.as_ref().map(|t| t.kv().inline()))
            .put(
                "streaming",
                self.streaming.map(|(f, i)| {
                    let mut p = Kv::default();
                    p.put("first_byte", f.map(Dur::render))
                        .put("idle_chunk", i.map(Dur::render));
                    p.inline()
                }),
            );
        kv
    }
}

impl Budget {
    fn kv(&self, n: &Names) -> Kv {
        let refs = |rs: &[Ref], names: &[&'static str]| {
            let items: Vec<String> = rs.iter().map(|r| quote(r.pick(names))).collect();
            format!("[{}]", items.join(", "))
        };
        let mut kv = Kv::default();
        kv.put(
            "limit_usd",
            self.limit_usd
                .or(sane().then_some(Num::Int(9)))
                .map(Num::render),
        )
        .put(
            "window",
            self.window.or(sane().then_some(Dur::D(1))).map(Dur::render),
        )
        .put(
            "scope",
            self.scope.as_ref().map(|(r, m, u, k)| {
                let mut p = Kv::default();
                if !r.is_empty() {
                    p.put("routes", Some(refs(r, &n.routes)));
                }
                if !m.is_empty() {
                    p.put("models", Some(refs(m, &n.models)));
                }
                if !u.is_empty() {
                    p.put("upstreams", Some(refs(u, &n.upstreams)));
                }
                if !k.is_empty() {
                    let items: Vec<String> = k.iter().map(|x| quote(x.get())).collect();
                    p.put("keys", Some(format!("[{}]", items.join(", "))));
                }
                p.inline()
            }),
        )
        .put(
            "on_exceed",
            self.on_exceed.as_ref().map(|e| match e {
                Exceed::Reject => quote("reject"),
                Exceed::Reroute(r) => format!("{{ reroute = {} }}", quote(r.pick(&n.routes))),
                Exceed::Bogus if sane() => quote("reject"),
                Exceed::Bogus => quote("throttle"),
            }),
        )
        .put("state", self.state.map(Scope2::render));
        kv
    }
}

const SECTIONS: [&str; 10] = [
    "callers",
    "state",
    "version",
    "defaults",
    "upstreams",
    "models",
    "retry",
    "breakers",
    "routes",
    "budgets",
];

impl Doc {
    /// The document as TOML text (not always valid TOML, by design).
    pub fn render(&self) -> String {
        SANE.with(|s| s.set(self.sane));
        let text = self.render_inner();
        SANE.with(|s| s.set(false));
        text
    }

    fn render_inner(&self) -> String {
        let mut doc = self.clone();
        if self.sane {
            // Unique names per section (a name written twice is a TOML error), at least one
            // route, and no junk.
            fn dedup<T>(v: &mut Vec<(Name, Style, T)>) {
                let mut seen = std::collections::HashSet::new();
                v.retain(|(n, ..)| seen.insert(n.get()));
            }
            dedup(&mut doc.upstreams);
            dedup(&mut doc.models);
            dedup(&mut doc.retry);
            dedup(&mut doc.breakers);
            dedup(&mut doc.budgets);
            dedup(&mut doc.callers);
            doc.junk.clear();
            doc.routes.truncate(8);
            if doc.upstreams.is_empty() {
                let u = Upstream {
                    base_url: None,
                    api_key: None,
                    pool: None,
                    limits: None,
                    rate_limit_headers: None,
                    breaker: None,
                    timeouts: None,
                };
                doc.upstreams.push((Name(2), Style::Table, u));
            }
            if doc.models.is_empty() {
                let m = Model {
                    upstream: None,
                    upstream_model: None,
                    price: None,
                    context_window: None,
                    breaker: None,
                };
                doc.models.push((Name(4), Style::Table, m));
            }
            if doc.routes.is_empty() {
                doc.routes.push(Route {
                    name: None,
                    when: None,
                    strategy: None,
                    targets: None,
                    failover_on: None,
                    hedge: None,
                    retry: None,
                    breaker: None,
                    timeouts: None,
                    streaming: None,
                });
            }
        }
        let doc = &doc;
        const ROUTE_NAMES: [&str; 8] = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"];
        let names = Names {
            upstreams: doc.upstreams.iter().map(|(n, ..)| n.get()).collect(),
            models: doc.models.iter().map(|(n, ..)| n.get()).collect(),
            retry: doc.retry.iter().map(|(n, ..)| n.get()).collect(),
            breakers: doc.breakers.iter().map(|(n, ..)| n.get()).collect(),
            routes: if self.sane {
                (0..doc.routes.len())
                    .map(|i| ROUTE_NAMES[i % ROUTE_NAMES.len()])
                    .collect()
            } else {
                doc.routes
                    .iter()
                    .filter_map(|r| r.name.map(Name::get))
                    .collect()
            },
        };
        // Inline entries and top-level keys come first; tables after.
        let mut head = String::new();
        let mut body = String::new();
        if let Some(v) = doc.version {
            let _ = writeln!(head, "version = {}", v.render());
        }
        let mut entry = |section: &str, name: Name, style: Style, kv: Kv| match style {
            Style::Table => {
                let _ = write!(body, "\n[{section}.{}]\n{}", key(name.get()), kv.lines());
            }
            Style::Inline => {
                let _ = writeln!(head, "{section}.{} = {}", key(name.get()), kv.inline());
            }
        };
        for (n, s, u) in &doc.upstreams {
            entry("upstreams", *n, *s, u.kv(&names));
        }
        for (n, s, m) in &doc.models {
            entry("models", *n, *s, m.kv(&names));
        }
        for (n, s, r) in &doc.retry {
            entry("retry", *n, *s, r.kv());
        }
        for (n, s, b) in &doc.breakers {
            entry("breakers", *n, *s, b.kv());
        }
        for (n, s, b) in &doc.budgets {
            entry("budgets", *n, *s, b.kv(&names));
        }
        for (n, s, c) in &doc.callers {
            entry("callers", *n, *s, c.kv());
        }
        if let Some(r) = &doc.state {
            let _ = write!(body, "\n[state.redis]\n{}", r.kv().lines());
        }
        if let Some(d) = &doc.defaults {
            let mut kv = Kv::default();
            kv.put("timeouts", d.timeouts.as_ref().map(|t| t.kv().inline()))
                .put("retry", d.retry.map(|r| quote(r.pick(&names.retry))))
                .put("breaker", d.breaker.map(|r| quote(r.pick(&names.breakers))))
                .put(
                    "baseline_model",
                    d.baseline_model.map(|r| quote(r.pick(&names.models))),
                );
            let _ = write!(body, "\n[defaults]\n{}", kv.lines());
        }
        for (i, r) in doc.routes.iter().enumerate() {
            let _ = write!(body, "\n[[routes]]\n{}", r.kv(&names, i).lines());
        }
        for j in &doc.junk {
            match j {
                Junk::UnknownKey(at, k) => {
                    let k = key(&format!("{}_x", k.get()));
                    if *at % 2 == 0 {
                        let _ = writeln!(head, "{k} = 1");
                    } else {
                        let _ = writeln!(body, "{k} = \"?\"");
                    }
                }
                Junk::Raw(s) => {
                    let _ = writeln!(body, "{s}");
                }
                Junk::DuplicateHeader(n) => {
                    let _ = write!(body, "\n[models.{}]\nupstream = \"a\"\n", key(n.get()));
                }
                Junk::WrongSectionType(i) => {
                    let s = SECTIONS[*i as usize % SECTIONS.len()];
                    let _ = writeln!(head, "{s} = \"oops\"");
                }
            }
        }
        head + &body
    }
}

// ---------------------------------------------------------------------------------------
// Extreme values.

/// Durations at and past the edges: zero, one millisecond, the largest a policy can write
/// (`u64::MAX` milliseconds, in two spellings), and three too large to represent.
pub const EXTREME_DURATIONS: [&str; 7] = [
    "0s",
    "1ms",
    "18446744073709551615ms",
    "213503982334d",
    "18446744073709551615s",
    "99999999999999d",
    "99999999999999999999d",
];

/// Counts at and past the edges of `u32` and of TOML's `i64`.
pub const EXTREME_COUNTS: [&str; 8] = [
    "0",
    "1",
    "1000",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-1",
    "-0",
];

/// Numbers (floats and integers) at the edges: NaN, infinities, negative zero, the smallest
/// subnormal, the largest finite `f64`, and huge ones of both signs.
pub const EXTREME_NUMBERS: [&str; 10] = [
    "nan",
    "inf",
    "-inf",
    "-0.0",
    "0.0",
    "5e-324",
    "1.7976931348623157e308",
    "1e300",
    "-1e300",
    "9223372036854775807",
];

/// What kind of value a slot of [`EXTREME_TEMPLATE`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// A duration string.
    Duration,
    /// A whole number.
    Count,
    /// A float or integer.
    Number,
}

/// Each slot of [`EXTREME_TEMPLATE`]: its marker, kind and an ordinary value.
pub const EXTREME_SLOTS: [(&str, SlotKind, &str); 43] = {
    use SlotKind::*;
    [
        ("@rps", Number, "10"),
        ("@burst", Count, "5"),
        ("@tpm", Number, "100000"),
        ("@concurrency", Count, "4"),
        ("@queue_timeout", Duration, "\"1s\""),
        ("@max_connections", Count, "10"),
        ("@max_idle", Count, "2"),
        ("@idle_timeout", Duration, "\"90s\""),
        ("@up_connect", Duration, "\"3s\""),
        ("@up_per_try", Duration, "\"20s\""),
        ("@up_total", Duration, "\"1m\""),
        ("@price_in", Number, "1.0"),
        ("@price_out", Number, "2.0"),
        ("@context", Count, "100000"),
        ("@max_attempts", Count, "3"),
        ("@base", Duration, "\"100ms\""),
        ("@backoff_max", Duration, "\"10s\""),
        ("@factor", Number, "2.0"),
        ("@jitter_ratio", Number, "0.2"),
        ("@ra_max", Duration, "\"60s\""),
        ("@ratio", Number, "0.2"),
        ("@min_per_second", Number, "10"),
        ("@ttl", Duration, "\"10s\""),
        ("@on_attempts", Count, "5"),
        ("@consecutive", Count, "5"),
        ("@threshold", Number, "0.5"),
        ("@min_calls", Count, "10"),
        ("@window", Duration, "\"30s\""),
        ("@slow_over", Duration, "\"5s\""),
        ("@slow_rate", Number, "0.5"),
        ("@open_for", Duration, "\"30s\""),
        ("@probes", Count, "2"),
        ("@successes", Count, "1"),
        ("@hedge_after", Duration, "\"1s\""),
        ("@max_extra", Count, "1"),
        ("@per_try", Duration, "\"5s\""),
        ("@total", Duration, "\"1m\""),
        ("@first_byte", Duration, "\"10s\""),
        ("@weight", Number, "1.0"),
        ("@limit_usd", Number, "100"),
        ("@budget_window", Duration, "\"1d\""),
        ("@redis_timeout", Duration, "\"50ms\""),
        ("@lease", Count, "4"),
    ]
};

/// A policy using every numeric key, each value a slot of [`EXTREME_SLOTS`].
pub const EXTREME_TEMPLATE: &str = r#"version = 1
[defaults]
retry = "r"
breaker = "b"
[upstreams.u]
base_url = "https://u.example/v1"
limits = { requests_per_second = @rps, burst = @burst, tokens_per_minute = @tpm, concurrency = @concurrency, on_limit = "wait", queue_timeout = @queue_timeout, state = "shared" }
pool = { max_connections = @max_connections, max_idle = @max_idle, idle_timeout = @idle_timeout }
timeouts = { connect = @up_connect, per_try = @up_per_try, total = @up_total }
[upstreams.v]
base_url = "https://v.example/v1"
limits = { requests_per_second = @rps, burst = @burst, concurrency = @concurrency, on_limit = "wait", queue_timeout = @queue_timeout }
[models.m]
upstream = "u"
price = { input_per_mtok = @price_in, output_per_mtok = @price_out }
context_window = @context
[models.n]
upstream = "v"
price = { input_per_mtok = @price_in, output_per_mtok = @price_out }
[retry.r]
max_attempts = @max_attempts
backoff = { kind = "exponential", base = @base, max = @backoff_max, factor = @factor, jitter = "proportional", jitter_ratio = @jitter_ratio }
retry_after = { honor = true, max = @ra_max }
budget = { ratio = @ratio, min_per_second = @min_per_second, ttl = @ttl }
[retry.r.on.429]
max_attempts = @on_attempts
backoff = { kind = "decorrelated", base = @base, max = @backoff_max }
[breakers.b]
consecutive_failures = @consecutive
failure_rate = { threshold = @threshold, min_calls = @min_calls, window = @window }
slow_call = { over = @slow_over, rate_threshold = @slow_rate }
open_for = @open_for
half_open = { probes = @probes, successes_to_close = @successes }
[[routes]]
name = "hedged"
when = { attr = "max_tokens", gt = @rps }
targets = ["m", { model = "n", weight = @weight }]
hedge = { after = @hedge_after, max_extra = @max_extra }
timeouts = { per_try = @per_try, total = @total }
streaming = { first_byte = @first_byte, idle_chunk = @first_byte }
[[routes]]
name = "rest"
targets = ["n"]
[budgets.daily]
limit_usd = @limit_usd
window = @budget_window
state = "shared"
[state.redis]
url = { env = "TOLLGATE_EXTREME_REDIS_URL" }
timeout = @redis_timeout
breaker_poll = @redis_timeout
pool_size = @lease
expected_instances = @lease
lease = @lease
"#;

fn quoted_if(kind: SlotKind, v: &str) -> String {
    if kind == SlotKind::Duration {
        quote(v)
    } else {
        v.to_string()
    }
}

/// [`EXTREME_TEMPLATE`] with the given slot values (an ordinary value for the others).
pub fn extreme_policy(value: impl Fn(&str, SlotKind) -> Option<String>) -> String {
    let mut text = EXTREME_TEMPLATE.to_string();
    // Longest markers first, so `@max_extra` is not taken for a prefix of another.
    let mut slots = EXTREME_SLOTS.to_vec();
    slots.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    for (marker, kind, ordinary) in slots {
        let v = value(marker, kind).unwrap_or_else(|| ordinary.to_string());
        text = text.replace(marker, &v);
    }
    text
}

fn values(kind: SlotKind) -> &'static [&'static str] {
    match kind {
        SlotKind::Duration => &EXTREME_DURATIONS,
        SlotKind::Count => &EXTREME_COUNTS,
        SlotKind::Number => &EXTREME_NUMBERS,
    }
}

/// Policies with extreme values: every slot of [`EXTREME_TEMPLATE`] in turn at every
/// extreme of its kind (the others ordinary), then every slot at once at one extreme per
/// kind (durations and counts in every combination).
pub fn extreme_policies() -> Vec<String> {
    let mut out = Vec::new();
    for (marker, kind, _) in EXTREME_SLOTS {
        for v in values(kind) {
            out.push(extreme_policy(|m, _| {
                (m == marker).then(|| quoted_if(kind, v))
            }));
        }
    }
    for d in EXTREME_DURATIONS {
        for c in EXTREME_COUNTS {
            // Numbers ordinary: more of these compile, and reach the bounds and the runtime.
            out.push(extreme_policy(|_, kind| match kind {
                SlotKind::Duration => Some(quote(d)),
                SlotKind::Count => Some(c.to_string()),
                SlotKind::Number => None,
            }));
        }
    }
    // And numbers too, one extreme each, taking turns.
    for (i, d) in EXTREME_DURATIONS.iter().enumerate() {
        for (j, c) in EXTREME_COUNTS.iter().enumerate() {
            let n = EXTREME_NUMBERS[(i + j) % EXTREME_NUMBERS.len()];
            {
                out.push(extreme_policy(|_, kind| {
                    Some(quoted_if(
                        kind,
                        match kind {
                            SlotKind::Duration => d,
                            SlotKind::Count => c,
                            SlotKind::Number => n,
                        },
                    ))
                }));
            }
        }
    }
    out
}
