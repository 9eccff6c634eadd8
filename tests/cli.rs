//! The `tollgate` binary: exit codes, output formats, and hostile inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::cli::{code, text, tollgate, BIN};

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn check_of_the_example_policies_succeeds() {
    let o = tollgate(&["check", "policies/"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = text(&o);
    for f in [
        "relay.toml",
        "minimal.toml",
        "failover.toml",
        "budgets.toml",
        "limits.toml",
    ] {
        assert!(
            out.contains(&format!("{f}: ok")),
            "{f} not reported ok:\n{out}"
        );
    }
}

#[test]
fn check_merge_of_a_split_policy() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "1-upstreams.toml",
        "[upstreams.u]\nbase_url = \"https://api.example.com/v1\"\n[models.m]\nupstream = \"u\"\n",
    );
    write(
        dir.path(),
        "2-routes.toml",
        "[[routes]]\nname = \"r\"\ntargets = [\"m\"]\n",
    );
    let d = dir.path().to_str().unwrap();
    // Merged: one valid policy.
    let o = tollgate(&["check", "--merge", d]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // File by file: the routes refer to a model the second file does not define.
    let o = tollgate(&["check", d]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("--merge"), "{}", text(&o));
}

#[test]
fn check_of_an_invalid_policy_exits_1() {
    let o = tollgate(&["check", "tests/invalid/zero_attempts.toml"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("tests/invalid/zero_attempts.toml:12:16"));
}

#[test]
fn a_missing_path_exits_2() {
    let o = tollgate(&["check", "no/such/policy.toml"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("no/such/policy.toml"), "{}", text(&o));
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["check"][..],
        &["check", "--format", "xml", "policies/"],
        &["frobnicate"],
        &["check", "--no-such-flag", "policies/"],
        &[],
    ] {
        let o = tollgate(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", text(&o));
        assert!(!o.stderr.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn json_format_parses_and_has_positions() {
    let o = tollgate(&[
        "check",
        "--format",
        "json",
        "tests/invalid/negative_price.toml",
    ]);
    assert_eq!(code(&o), 1);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(j["valid"], false);
    let d = &j["policies"][0]["diagnostics"];
    assert_eq!(d.as_array().unwrap().len(), 2);
    assert_eq!(d[0]["code"], "negative-price");
    assert_eq!(d[0]["file"], "tests/invalid/negative_price.toml");
    assert_eq!(d[0]["line"], 9);
    assert_eq!(d[0]["column"], 28);
    assert_eq!(d[1]["column"], 52);

    let o = tollgate(&["check", "--format", "json", "policies/"]);
    assert_eq!(code(&o), 0);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(j["valid"], true);
}

#[test]
fn schema_prints_the_policy_schema() {
    let o = tollgate(&["schema"]);
    assert_eq!(code(&o), 0);
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let expected: serde_json::Value =
        serde_json::from_str(&tollgate::schema::policy_schema_json()).unwrap();
    assert_eq!(printed, expected);
    assert!(printed["properties"]["routes"].is_object());
    // The checked-in copy must match too.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/policy.schema.json");
    let file = std::fs::read_to_string(&path).expect("schemas/policy.schema.json is checked in");
    let file: serde_json::Value = serde_json::from_str(&file).unwrap();
    assert_eq!(printed, file, "schemas/policy.schema.json is stale");
}

#[test]
fn explain_lists_every_route_with_its_bounds() {
    let o = tollgate(&["explain", "policies/relay.toml"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for route in ["urgent", "complex", "balanced", "bulk"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(route) || l.contains(&format!(" {route} "))),
            "route {route} missing:\n{out}"
        );
    }
    let lower = out.to_lowercase();
    for col in ["attempts", "latency", "cost"] {
        assert!(lower.contains(col), "column {col} missing:\n{out}");
    }
}

#[test]
fn explain_json_gives_each_routes_bounds_and_the_diagnostics() {
    let o = tollgate(&["explain", "--format", "json", "policies/relay.toml"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["errors"], 0);
    let routes = doc["routes"].as_array().expect("routes");
    let names: Vec<&str> = routes.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["urgent", "complex", "balanced", "bulk"]);
    for r in routes {
        let b = &r["bounds"];
        assert!(b["max_attempts"].as_u64().is_some_and(|n| n >= 1), "{r}");
        let worst = b["worst_latency_ms"].as_f64().expect("worst_latency_ms");
        let unbounded = b["unbounded_latency_ms"]
            .as_f64()
            .expect("unbounded_latency_ms");
        assert!(worst <= unbounded, "{r}");
        assert!(b["worst_cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{r}");
    }

    // An invalid policy: exit 1, the same document shape with `valid: false`, no plan.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[routes]]\nname = \"r\"\ntargets = [\"nope\"]\n").unwrap();
    let o = tollgate(&["explain", "--format", "json", bad.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert_eq!(doc["valid"], false);
    assert!(doc["errors"].as_u64().is_some_and(|n| n >= 1), "{doc}");
    assert!(doc.get("routes").is_none(), "{doc}");
}

/// Every leaf of a JSON document as a key path (`routes[].bounds.max_attempts`): arrays of
/// objects add `[]`, an array of scalars (or an empty one), a scalar or `null` is a leaf.
fn leaf_paths(v: &serde_json::Value, path: &str, out: &mut std::collections::BTreeSet<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        serde_json::Value::Object(m) => {
            for (k, c) in m {
                leaf_paths(c, &join(k), out);
            }
        }
        serde_json::Value::Array(a) if a.iter().any(|e| e.is_object()) => {
            for e in a.iter().filter(|e| e.is_object()) {
                leaf_paths(e, &format!("{path}[]"), out);
            }
        }
        _ => {
            out.insert(path.to_string());
        }
    }
}

/// The key paths `docs/explain.md` documents: the first cell of each row of its JSON table;
/// a key starting with `.` continues the row's first key (`upstreams[].name`, `.base_url`),
/// and `.x.*` stands for everything under `x`.
fn documented_explain_keys() -> Vec<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/explain.md"))
            .expect("docs/explain.md");
    let json = doc.split("## JSON").nth(1).expect("a JSON section");
    let mut keys = Vec::new();
    for row in json.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split('|').nth(1).unwrap_or_default();
        let mut parent = String::new();
        for k in cell.split(',').map(|k| k.trim().trim_matches('`')) {
            let full = match k.strip_prefix('.') {
                Some(rest) => format!("{parent}.{rest}"),
                None => {
                    parent = k
                        .rsplit_once('.')
                        .map_or(String::new(), |(p, _)| p.to_string());
                    k.to_string()
                }
            };
            keys.push(
                full.trim_start_matches('.')
                    .trim_end_matches(".*")
                    .to_string(),
            );
        }
    }
    keys
}

#[test]
fn explain_json_keys_are_the_documented_ones() {
    let documented = documented_explain_keys();
    assert!(documented.len() > 60, "{documented:?}");
    let mut printed = std::collections::BTreeSet::new();
    for f in [
        "policies/relay.toml",
        "policies/limits.toml",
        "tests/valid/hedging_streaming.toml",
        "tests/valid/shared_state.toml",
        "tests/valid/breakers.toml",
        "tests/valid/callers.toml",
        "tests/valid/backoff_kinds.toml",
        "tests/valid/budgets.toml",
    ] {
        let o = tollgate(&["explain", "--format", "json", f]);
        assert_eq!(code(&o), 0, "{f}: {}", text(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
        leaf_paths(&doc, "", &mut printed);
    }
    // Documented `d` covers printed `p`: the same key, a subtree of it, or a `null` (or
    // empty-array) parent.
    let covers = |d: &str, p: &str| {
        d == p
            || p.starts_with(&format!("{d}."))
            || p.starts_with(&format!("{d}[]"))
            || d.starts_with(&format!("{p}."))
            || d.starts_with(&format!("{p}[]"))
    };
    let undocumented: Vec<&String> = printed
        .iter()
        .filter(|p| !documented.iter().any(|d| covers(d, p)))
        .collect();
    assert!(
        undocumented.is_empty(),
        "printed but not in docs/explain.md: {undocumented:?}"
    );
    let unprinted: Vec<&String> = documented
        .iter()
        .filter(|d| {
            !printed.iter().any(|p| {
                *p == **d || p.starts_with(&format!("{d}.")) || p.starts_with(&format!("{d}[]"))
            })
        })
        .collect();
    assert!(
        unprinted.is_empty(),
        "in docs/explain.md but never printed: {unprinted:?}"
    );
}

#[test]
fn explain_shows_every_resolved_setting() {
    let o = tollgate(&["explain", "tests/valid/hedging_streaming.toml"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for s in [
        // retry policy: attempts, backoff, retry_on, Retry-After (default filled in)
        "constant 100ms, none jitter",
        "connect, timeout, 429, 5xx",
        "honour ≤ 1m",
        // breaker rules
        "3 failures in a row",
        "1 probe(s), 1 to close",
        // routes: failover_on, hedge, streaming, per-target timeouts, route breaker
        "overloaded_error",
        "after 800ms, ≤ 1 extra",
        "first byte 10s, idle 30s",
        "p (2s/5s), b (5s/5s)",
        "route_guard",
        // the worst cases, hedges included
        "5 (1 hedged)",
    ] {
        assert!(out.contains(s), "`{s}` missing:\n{out}");
    }
    let quick = out
        .lines()
        .find(|l| l.starts_with("quick "))
        .expect("the quick policy");
    assert!(quick.split_whitespace().nth(1) == Some("2"), "{quick}");
    let o = tollgate(&["explain", "policies/limits.toml"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for s in ["wait ≤ 20s", "Retry-After", "queueing", "pool"] {
        assert!(out.contains(s), "`{s}` missing:\n{out}");
    }
}

/// The explain table and the `schedule-exceeds-deadline` warning state the same figures.
#[test]
fn explain_and_the_deadline_warning_agree() {
    let o = tollgate(&[
        "explain",
        "--format",
        "json",
        "tests/invalid/schedule_exceeds_deadline.toml",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let b = &doc["routes"][0]["bounds"];
    assert_eq!(b["schedule_ms"].as_f64(), Some(470_000.0), "{b}");
    assert_eq!(b["unbounded_latency_ms"].as_f64(), Some(740_000.0), "{b}");
    let warning = doc["diagnostics"][0]["message"].as_str().unwrap();
    assert!(
        warning.contains("takes 7m50s") && warning.contains("(12m20s with Retry-After"),
        "{warning}"
    );
}

/// Hostile inputs: never a panic, always exit 1 or 2 with a message.
fn assert_rejected_cleanly(path: &Path) {
    let o = tollgate(&["check", "--format", "short", path.to_str().unwrap()]);
    let c = code(&o);
    assert!(
        c == 1 || c == 2,
        "{}: exit {c}: {}",
        path.display(),
        text(&o)
    );
    let out = text(&o);
    assert!(!out.contains("panicked"), "{}: {out}", path.display());
    assert!(!out.trim().is_empty(), "{}: no message", path.display());
}

#[test]
fn hostile_inputs_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut garbage = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..4096 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        garbage.push((x >> 16) as u8);
    }
    let files = [
        write(d, "garbage.toml", &garbage),
        write(d, "empty.toml", ""),
        write(d, "binary.toml", [0u8, 159, 146, 150, 0, 0, 255, 254, 1, 2]),
        write(d, "nul.toml", "version = 1\0\n"),
        write(d, "huge.toml", "a = 1\n".repeat(900_000)), // ~5 MB
        write(
            d,
            "deep_arrays.toml",
            format!("a = {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        write(
            d,
            "deep_tables.toml",
            format!("a = {}1{}\n", "{ b = ".repeat(10_000), " }".repeat(10_000)),
        ),
        write(
            d,
            "deep_keys.toml",
            format!("{} = 1\n", vec!["k"; 10_000].join(".")),
        ),
        write(d, "routes_string.toml", "routes = \"everything\"\n"),
        write(d, "bom.toml", "\u{feff}version = 1\n"),
    ];
    for f in &files {
        assert_rejected_cleanly(f);
    }
}

/// The relay policy with one mistake each: a mutated copy is rejected, with positions in
/// the copy, and never echoes the pasted key.
#[test]
fn mutated_relay_policy_is_rejected_with_positions() {
    const KEY: &str = "hs_live_Zx9Yw8Vu7Ts6Rq5Po4Nm3";
    let relay = std::fs::read_to_string("policies/relay.toml").unwrap();
    let mutations: [(&str, &str, &str, &str); 5] = [
        (
            "unknown model",
            "targets = [\"deepseek-v3.2\", \"gemini-2.5-flash\"]",
            "targets = [\"deepseek-v3.3\", \"gemini-2.5-flash\"]",
            "unknown-reference",
        ),
        (
            "zero attempts",
            "max_attempts = 4",
            "max_attempts = 0",
            "zero-attempts",
        ),
        (
            "negative price",
            "price = { input_per_mtok = 0.07, output_per_mtok = 0.42 }",
            "price = { input_per_mtok = -0.07, output_per_mtok = 0.42 }",
            "negative-price",
        ),
        (
            "backoff base above cap",
            "base = \"1s\", factor = 2.0, max = \"60s\"",
            "base = \"90s\", factor = 2.0, max = \"60s\"",
            "backoff-base-above-max",
        ),
        (
            "literal key",
            "api_key = { env = \"RELAY_API_KEY\", prefixes = [\"hs_live_\", \"hs_test_\"] }",
            &format!("api_key = \"{KEY}\""),
            "literal-secret",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, from, to, code_expected) in mutations {
        assert_eq!(
            relay.matches(from).count(),
            1,
            "{what}: `{from}` not unique"
        );
        let mutated = relay.replacen(from, to, 1);
        let line = relay[..relay.find(from).unwrap()].matches('\n').count() + 1;
        let p = write(dir.path(), "relay.toml", &mutated);
        for format in ["human", "short", "json"] {
            let o = tollgate(&["check", "--format", format, p.to_str().unwrap()]);
            let out = text(&o);
            assert_eq!(code(&o), 1, "{what} ({format}): {out}");
            assert!(out.contains(code_expected), "{what} ({format}): {out}");
            assert!(
                !out.contains(KEY),
                "{what} ({format}): the key is shown:\n{out}"
            );
            if format == "short" {
                let needle = format!("relay.toml:{line}:");
                assert!(
                    out.lines()
                        .any(|l| l.contains(&needle) && l.contains(code_expected)),
                    "{what}: expected {code_expected} at {needle}…:\n{out}"
                );
            }
        }
    }
}

#[test]
fn hash_key_prints_the_sha256_of_the_key_on_stdin() {
    use std::io::Write;
    let run = |input: &str| {
        let mut child = Command::new(BIN)
            .arg("hash-key")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // The trailing newline of `echo` is not part of the key.
    for input in ["secret", "secret\n", "  secret\r\n"] {
        let o = run(input);
        assert_eq!(code(&o), 0, "{}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\n"
        );
    }
    let o = run("\n");
    assert_eq!(code(&o), 2);
    assert!(text(&o).contains("no key on stdin"), "{}", text(&o));
}

/// `tollgate demo` runs on virtual time with seeded faults: the same seed prints the same
/// report, byte for byte (latencies and breaker trips included); another seed another one.
#[test]
fn demo_with_the_same_seed_prints_the_same_report() {
    let run = |seed: &str| {
        let o = tollgate(&["demo", "--requests", "400", "--seed", seed]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        String::from_utf8(o.stdout).expect("UTF-8 report")
    };
    let (a, b, c) = (run("11"), run("11"), run("12"));
    assert!(a.contains("success"), "a report: {a}");
    assert!(a.contains("failovers"), "a full report: {a}");
    assert_eq!(a, b, "one seed, two reports");
    assert_ne!(a, c, "another seed, the same report");
}
