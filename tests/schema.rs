//! The JSON Schema of policy files: the committed file matches the generator, carries
//! hover text, and — checked by an independent validator (the `jsonschema` crate) —
//! accepts every valid policy and rejects broken ones, as the loader does.
//!
//! `schemas/policy.schema.json` is generated. When the policy types change, regenerate it:
//!
//! ```text
//! TOLLGATE_BLESS=1 cargo test --test schema
//! ```

use std::path::{Path, PathBuf};

use serde_json::Value;

const SCHEMA_FILE: &str = "schemas/policy.schema.json";
const SCENARIO_SCHEMA_FILE: &str = "schemas/scenario.schema.json";
const BLESS_COMMAND: &str = "TOLLGATE_BLESS=1 cargo test --test schema";

/// The package root: read at run time (cargo sets it for tests), so a test binary reused
/// from another checkout sharing the target directory still reads this checkout's files.
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// What `tollgate schema` prints (`println!` adds the final newline).
fn generated() -> String {
    format!("{}\n", tollgate::schema::policy_schema_json())
}

fn schema() -> Value {
    serde_json::from_str(&tollgate::schema::policy_schema_json()).expect("schema is JSON")
}

/// Compares `old` and `new` line by line and renders the differing region as one hunk
/// with three lines of context, `-` for the file's lines and `+` for the generator's.
fn diff(old: &str, new: &str) -> String {
    diff_named(SCHEMA_FILE, old, new)
}

/// [`diff`] of the file `file`.
fn diff_named(file: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a_mid, b_mid) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let ctx = 3;
    let start = prefix.saturating_sub(ctx);
    let mut out = format!(
        "--- {file} (committed)\n+++ {file} (generated)\n@@ -{},{} +{},{} @@\n",
        start + 1,
        prefix - start + a_mid.len() + suffix.min(ctx),
        start + 1,
        prefix - start + b_mid.len() + suffix.min(ctx),
    );
    let mut lines = Vec::new();
    lines.extend(a[start..prefix].iter().map(|l| format!(" {l}")));
    lines.extend(a_mid.iter().map(|l| format!("-{l}")));
    lines.extend(b_mid.iter().map(|l| format!("+{l}")));
    let after = a.len() - suffix;
    lines.extend(
        a[after..(after + ctx).min(a.len())]
            .iter()
            .map(|l| format!(" {l}")),
    );
    let shown = 120;
    if lines.len() > shown {
        let more = lines.len() - shown;
        lines.truncate(shown);
        lines.push(format!("… {more} more lines"));
    }
    if old.ends_with('\n') != new.ends_with('\n') {
        lines.push("(the files differ in their final newline)".into());
    }
    out.push_str(&lines.join("\n"));
    out
}

/// Check mode by default; write mode with `TOLLGATE_BLESS=1`.
#[test]
fn schema_file_is_up_to_date() {
    up_to_date(SCHEMA_FILE, &generated());
}

/// The scenario schema (`tollgate scenario-schema`) too.
#[test]
fn scenario_schema_file_is_up_to_date() {
    let want = format!("{}\n", tollgate::sim::file::schema_json());
    up_to_date(SCENARIO_SCHEMA_FILE, &want);
}

/// Check mode by default; write mode with `TOLLGATE_BLESS=1`.
fn up_to_date(file: &str, want: &str) {
    let path = root().join(file);
    if std::env::var_os("TOLLGATE_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir schemas/");
        std::fs::write(&path, want).expect("write the schema");
        eprintln!("wrote {}", path.display());
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        panic!(
            "{file} is out of date with its types.\n\n{}\n\nRegenerate it with:\n\n    {BLESS_COMMAND}\n",
            diff_named(file, &have, want)
        );
    }
}

#[test]
fn diff_shows_changed_lines_with_context() {
    let d = diff("a\nb\nc\nd\ne\n", "a\nb\nX\nd\ne\n");
    assert!(d.contains("-c\n+X"), "{d}");
    assert!(d.contains(" b\n-c"), "{d}");
    assert!(d.contains("+X\n d"), "{d}");
    assert!(diff("a\n", "a").contains("final newline"));
}

/// Every object schema reachable in `v`, with a JSON pointer-ish path.
fn object_schemas<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            if m.contains_key("properties") {
                out.push((path.clone(), v));
            }
            for (k, x) in m {
                object_schemas(x, format!("{path}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                object_schemas(x, format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Hover text in an editor comes from `description`: every key has one, taken from the
/// doc comment of its field.
#[test]
fn every_property_has_a_description() {
    let s = schema();
    let p = |ptr: &str| {
        s.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string at {ptr}"))
            .to_string()
    };
    assert_eq!(
        p("/properties/upstreams/description"),
        "Upstream endpoints, by name."
    );
    assert!(p("/$defs/Upstream/properties/base_url/description").starts_with("Base URL"));
    assert!(p("/$defs/RetryPolicy/properties/max_attempts/description").contains("default 3"));
    assert!(p("/$defs/Duration/description").contains("ms, s, m, h, d"));

    let mut objects = Vec::new();
    object_schemas(&s, String::new(), &mut objects);
    assert!(
        objects.len() > 20,
        "found only {} object schemas",
        objects.len()
    );
    let mut missing = Vec::new();
    for (path, o) in objects {
        let props = o["properties"]
            .as_object()
            .expect("properties is an object");
        // An externally tagged newtype variant (`on_exceed = { reroute = "ROUTE" }`) is an
        // object of one property; schemars puts the variant's doc comment on the object.
        if props.len() == 1 && o.get("description").is_some_and(Value::is_string) {
            continue;
        }
        for (key, prop) in props {
            let has = prop
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !has {
                missing.push(format!("{path}/properties/{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "properties without a description (add a doc comment): {missing:#?}"
    );
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("the schema is a valid JSON Schema")
}

#[test]
fn validator_reads_the_draft_from_dollar_schema() {
    let s = schema();
    assert_eq!(
        s["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "the draft changed: re-check taplo (see src/schema.rs)"
    );
    assert_eq!(validator().draft(), jsonschema::Draft::Draft202012);
}

fn toml_to_json(text: &str) -> Result<Value, String> {
    toml_edit::de::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// `*.toml` files under `dir`, recursively, sorted.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(toml_files(&p));
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_valid_policy_satisfies_the_schema() {
    let v = validator();
    let mut files = toml_files(&root().join("policies"));
    assert!(
        files.len() >= 2,
        "expected the example policies in policies/"
    );
    files.extend(toml_files(&root().join("tests/valid")));
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read policy");
        match toml_to_json(&text) {
            Ok(doc) => {
                let errs = schema_errors(&v, &doc);
                if !errs.is_empty() {
                    failures.push(format!("{}:\n  {}", f.display(), errs.join("\n  ")));
                }
            }
            Err(e) => failures.push(format!("{}: not TOML: {e}", f.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "valid policies rejected by the schema:\n{}",
        failures.join("\n")
    );
}

#[test]
fn example_policies_name_the_schema_for_editors() {
    for f in toml_files(&root().join("policies")) {
        let text = std::fs::read_to_string(&f).expect("read policy");
        assert_eq!(
            text.lines().next(),
            Some("#:schema ../schemas/policy.schema.json"),
            "{}: the first line should be the taplo schema directive",
            f.display()
        );
    }
}

const MINIMAL: &str = r#"
[upstreams.u]
base_url = "https://api.example/v1"
api_key = { env = "TOLLGATE_TEST_KEY" }

[models.m]
upstream = "u"

[retry.r]
max_attempts = 2

[[routes]]
name = "all"
targets = ["m"]
"#;

/// Broken documents: (what is wrong, text). Each must be rejected by the schema *and* by
/// tollgate's own loader + compiler, so the two validators agree.
fn broken() -> Vec<(&'static str, String)> {
    vec![
        ("unknown top-level key", format!("{MINIMAL}\nroutez = 1\n")),
        (
            "unknown key in an upstream",
            MINIMAL.replace(
                "[models.m]",
                "[upstreams.v]\nbase_url = \"x\"\nbase_ulr = \"y\"\n\n[models.m]",
            ),
        ),
        (
            "unknown key in an inline table",
            MINIMAL.replace(
                "max_attempts = 2",
                "backoff = { kind = \"constant\", bsae = \"1s\" }",
            ),
        ),
        (
            "wrong type: string for an integer",
            MINIMAL.replace("max_attempts = 2", "max_attempts = \"2\""),
        ),
        (
            "wrong type: negative count",
            MINIMAL.replace("max_attempts = 2", "max_attempts = -1"),
        ),
        (
            "wrong type: targets not an array",
            MINIMAL.replace("targets = [\"m\"]", "targets = \"m\""),
        ),
        (
            "bad duration: words",
            format!("{MINIMAL}\n[breakers.b]\nopen_for = \"3 seconds\"\n"),
        ),
        (
            "bad duration: no unit",
            format!("{MINIMAL}\n[defaults]\ntimeouts = {{ total = \"90\" }}\n"),
        ),
        (
            "bad duration: unknown unit",
            format!("{MINIMAL}\n[budgets.b]\nlimit_usd = 1.0\nwindow = \"1w\"\n"),
        ),
        (
            "unknown enum value",
            MINIMAL.replace("name = \"all\"", "name = \"all\"\nstrategy = \"random\""),
        ),
        (
            "missing required key",
            MINIMAL.replace("upstream = \"u\"", "context_window = 10"),
        ),
        (
            "literal API key",
            MINIMAL.replace("{ env = \"TOLLGATE_TEST_KEY\" }", "\"sk-not-a-real-key\""),
        ),
    ]
}

#[test]
fn the_minimal_document_is_valid_for_both() {
    assert!(schema_errors(&validator(), &toml_to_json(MINIMAL).unwrap()).is_empty());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.toml");
    std::fs::write(&f, MINIMAL).unwrap();
    let loaded = tollgate::policy::load(&tollgate::policy::LoadOptions::new([f]).with_env(Vec::<(
        String,
        String,
    )>::new(
    )));
    if let Err(d) = tollgate::plan::compile(loaded) {
        panic!("MINIMAL should compile:\n{}", d.short());
    }
}

#[test]
fn broken_documents_are_rejected_by_the_schema_and_the_loader() {
    let v = validator();
    let dir = tempfile::tempdir().unwrap();
    for (what, text) in broken() {
        let doc = toml_to_json(&text).unwrap_or_else(|e| panic!("{what}: not TOML: {e}"));
        assert!(!v.is_valid(&doc), "{what}: the schema accepted it:\n{text}");
        let f = dir.path().join("p.toml");
        std::fs::write(&f, &text).unwrap();
        let loaded = tollgate::policy::load(
            &tollgate::policy::LoadOptions::new([&f]).with_env(Vec::<(String, String)>::new()),
        );
        assert!(
            tollgate::plan::compile(loaded).is_err(),
            "{what}: tollgate accepted it:\n{text}"
        );
    }
}

/// Every shipped scenario names the scenario schema on its first line and satisfies it.
#[test]
fn shipped_scenarios_satisfy_the_scenario_schema() {
    let schema: Value =
        serde_json::from_str(&tollgate::sim::file::schema_json()).expect("schema is JSON");
    let v = jsonschema::validator_for(&schema).expect("the scenario schema compiles");
    let files = toml_files(&root().join("scenarios"));
    assert!(files.len() >= 5, "found {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("#:schema ../schemas/scenario.schema.json"),
            "{} does not start with the #:schema directive",
            f.display()
        );
        let doc = toml_to_json(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let errors = schema_errors(&v, &doc);
        assert!(errors.is_empty(), "{}: {errors:?}", f.display());
    }
}
