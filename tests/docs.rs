//! docs/policy.md cannot drift from the policy types: every key of every table in the JSON
//! Schema has a row in the section of docs/policy.md marked `<!-- schema: TYPE -->`, and no
//! section lists a key the schema does not have. The list of diagnostic codes is the
//! compiler's `Code` enum, in its order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

/// The package root: read at run time (cargo sets it for tests), so a test binary reused
/// from another checkout sharing the target directory still reads this checkout's files.
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Type name → its keys, for every object type of the schema (the root is `Policy`; the
/// table form of an enum such as `OnExceed` counts as the enum's).
fn schema_tables() -> BTreeMap<String, BTreeSet<String>> {
    tables_of(&tollgate::schema::policy_schema_json(), "Policy")
}

/// [`schema_tables`] of any schema, its root named `root_name`.
fn tables_of(schema: &str, root_name: &str) -> BTreeMap<String, BTreeSet<String>> {
    let s: Value = serde_json::from_str(schema).unwrap();
    fn keys(v: &Value, out: &mut BTreeSet<String>) {
        if let Some(p) = v.get("properties").and_then(Value::as_object) {
            out.extend(p.keys().cloned());
        }
        for alt in ["oneOf", "anyOf"] {
            for x in v.get(alt).and_then(Value::as_array).into_iter().flatten() {
                keys(x, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut root = BTreeSet::new();
    keys(&s, &mut root);
    out.insert(root_name.to_string(), root);
    for (name, def) in s["$defs"].as_object().unwrap() {
        let mut k = BTreeSet::new();
        keys(def, &mut k);
        if !k.is_empty() {
            out.insert(name.clone(), k);
        }
    }
    out
}

/// Type name → keys in the first column of the tables of its docs section.
fn doc_sections() -> BTreeMap<String, BTreeSet<String>> {
    sections_of("docs/policy.md")
}

/// [`doc_sections`] of any page.
fn sections_of(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join(page)).expect(page);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("<!-- schema: ") {
            let name = rest.trim_end_matches("-->").trim().to_string();
            assert!(!out.contains_key(&name), "two sections for {name}");
            out.insert(name.clone(), BTreeSet::new());
            current = Some(name);
        } else if line.starts_with("## ") && !line.contains('`') {
            current = None; // a section of prose (value types, environment overrides)
        } else if let (Some(name), Some(row)) = (&current, line.strip_prefix("| `")) {
            let key = row.split('`').next().unwrap_or_default();
            out.get_mut(name).unwrap().insert(key.to_string());
        }
    }
    out
}

#[test]
fn every_schema_key_is_documented_in_its_section() {
    let schema = schema_tables();
    assert!(schema.len() > 20, "found {} tables", schema.len());
    in_step(&schema, &doc_sections(), "docs/policy.md", "policy");
}

/// docs/scenario.md cannot drift from the scenario types, the same way.
#[test]
fn every_scenario_key_is_documented_in_its_section() {
    let schema = tables_of(&tollgate::sim::file::schema_json(), "ScenarioFile");
    assert!(schema.len() > 10, "found {} tables", schema.len());
    in_step(
        &schema,
        &sections_of("docs/scenario.md"),
        "docs/scenario.md",
        "scenario",
    );
}

fn in_step(
    schema: &BTreeMap<String, BTreeSet<String>>,
    docs: &BTreeMap<String, BTreeSet<String>>,
    page: &str,
    what: &str,
) {
    let mut problems = Vec::new();
    for (ty, keys) in schema {
        match docs.get(ty) {
            None => problems.push(format!(
                "{ty}: no section marked `<!-- schema: {ty} -->` (keys {keys:?})"
            )),
            Some(documented) => {
                for k in keys.difference(documented) {
                    problems.push(format!("{ty}: key `{k}` is not documented"));
                }
                for k in documented.difference(keys) {
                    problems.push(format!(
                        "{ty}: documents `{k}`, which the schema does not have"
                    ));
                }
            }
        }
    }
    for ty in docs.keys().filter(|t| !schema.contains_key(*t)) {
        problems.push(format!("docs section `{ty}` names no type of the schema"));
    }
    assert!(
        problems.is_empty(),
        "{page} is out of step with the {what} types:\n{}",
        problems.join("\n")
    );
}

/// The built-in defaults the docs state are the compiler's.
#[test]
fn documented_defaults_match_the_compiler() {
    use tollgate::plan::{DEFAULT_BACKOFF, DEFAULT_TIMEOUTS};
    let text = std::fs::read_to_string(root().join("docs/policy.md")).unwrap();
    let d = |x: std::time::Duration| tollgate::policy::Duration::new(x).to_string();
    let list = |xs: &[&str]| {
        let q: Vec<String> = xs.iter().map(|x| format!("\"{x}\"")).collect();
        format!("`[{}]`", q.join(", "))
    };
    for needle in [
        format!("connect `{}`", d(DEFAULT_TIMEOUTS.connect)),
        format!("per_try `{}`", d(DEFAULT_TIMEOUTS.per_try)),
        format!("total `{}`", d(DEFAULT_TIMEOUTS.total)),
        format!(
            "base `{}`, factor `{}`, max `{}`",
            d(DEFAULT_BACKOFF.base),
            DEFAULT_BACKOFF.factor,
            d(DEFAULT_BACKOFF.max)
        ),
        list(&tollgate::plan::DEFAULT_RETRY_ON),
        list(&tollgate::plan::DEFAULT_FAILOVER_ON),
        list(&tollgate::plan::DEFAULT_TRIP_ON),
    ] {
        assert!(text.contains(&needle), "docs/policy.md lacks `{needle}`");
    }
}

/// The diagnostic codes listed under `<!-- diagnostic-codes -->`, in order, are exactly
/// `Code::ALL`, each with a meaning.
#[test]
fn diagnostic_codes_are_documented() {
    let text = std::fs::read_to_string(root().join("docs/policy.md")).unwrap();
    let (_, list) = text
        .split_once("<!-- diagnostic-codes -->")
        .expect("docs/policy.md has a `<!-- diagnostic-codes -->` table");
    let mut documented = Vec::new();
    for line in list.lines().skip_while(|l| l.trim().is_empty()) {
        if !line.starts_with('|') {
            break;
        }
        let Some(row) = line.strip_prefix("| `") else {
            continue; // the header and its rule
        };
        let (code, rest) = row.split_once('`').unwrap_or_default();
        let meaning = rest.rsplit('|').nth(1).unwrap_or_default().trim();
        assert!(
            !meaning.is_empty(),
            "code `{code}` has no meaning in docs/policy.md"
        );
        documented.push(code.to_string());
    }
    let codes: Vec<String> = (tollgate::diagnostic::Code::ALL.iter())
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        documented, codes,
        "docs/policy.md's list of diagnostic codes differs from `Code::ALL`"
    );
}
