//! The scenario corpus: every fixture in `tests/scenarios_invalid/` must produce exactly the
//! diagnostics in its `.expected` file when run against `policies/relay.toml`, and every
//! scenario diagnostic code must be produced by one of them. See
//! `tests/scenarios_invalid/README.md`.
//!
//! Bless (rewrite every `.expected` from the current output, then review each by eye):
//! `TOLLGATE_BLESS=1 cargo test --test scenario_corpus`

use std::path::{Path, PathBuf};

use tollgate::diagnostic::{Code, Diagnostics};
use tollgate::sim::file::{prepare, PrepareError};

const DIR: &str = "tests/scenarios_invalid";
const POLICY: &str = "policies/relay.toml";

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(DIR)
        .expect("tests/scenarios_invalid exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

/// The diagnostics of one fixture: its errors, or the warnings of a scenario that runs.
fn run(path: &Path) -> (Diagnostics, bool) {
    match prepare(path, &[PathBuf::from(POLICY)], None) {
        Ok((_, p)) => (p.warnings, true),
        Err(PrepareError::Scenario(d)) => (d, false),
        Err(PrepareError::Policy { diagnostics, .. }) => {
            panic!("{}: the policy fails:\n{diagnostics}", path.display())
        }
    }
}

#[test]
fn scenario_corpus_matches_expected() {
    let bless = std::env::var_os("TOLLGATE_BLESS").is_some_and(|v| v == "1");
    let files = fixtures();
    assert!(files.len() >= 10, "found {} fixtures", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let (d, _) = run(f);
        let actual = d.short();
        let expected_path = f.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                f.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(bless with TOLLGATE_BLESS=1 cargo test --test scenario_corpus)",
        failures.join("\n")
    );
}

/// Every fixture is refused with at least one error pointing into it, or (warnings only)
/// runs with at least one warning; the human rendering never panics.
#[test]
fn every_fixture_reports_something_somewhere() {
    for f in fixtures() {
        let (d, runs) = run(&f);
        assert!(!d.items.is_empty(), "{}: nothing reported", f.display());
        assert_eq!(runs, !d.has_errors(), "{}", f.display());
        for line in d.short().lines() {
            assert!(
                line.starts_with(&format!("{}:", f.display())),
                "{}: `{line}` does not point into the file",
                f.display()
            );
        }
        assert!(!d.render(false).is_empty());
    }
}

/// Every scenario code comes from a fixture.
#[test]
fn every_scenario_code_is_produced_by_a_fixture() {
    let mut seen = std::collections::HashSet::new();
    for f in fixtures() {
        seen.extend(run(&f).0.items.iter().map(|d| d.code));
    }
    let missing: Vec<&Code> = Code::SCENARIO
        .iter()
        .filter(|c| !seen.contains(c))
        .collect();
    assert!(missing.is_empty(), "no fixture produces {missing:?}");
}

/// Hostile variants of every shipped scenario (each number replaced by extreme values,
/// each line dropped) never make loading and compiling panic; what is accepted stays
/// within the limits (so a run ends).
#[test]
fn hostile_variants_never_panic() {
    let extremes = [
        "0",
        "-1",
        "1e308",
        "-1e308",
        "nan",
        "inf",
        "18446744073709551615",
        "\"0s\"",
        "\"400d\"",
        "\"18446744073709551615ms\"",
        "[]",
        "{}",
        "\"\"",
    ];
    let dir = std::env::temp_dir().join(format!("tollgate-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut variants = 0;
    for f in std::fs::read_dir("scenarios").unwrap() {
        let f = f.unwrap().path();
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut cases: Vec<String> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let mut dropped = lines.clone();
            dropped.remove(i);
            cases.push(dropped.join("\n"));
            if let Some((key, _)) = line.split_once(" = ") {
                if !line.trim_start().starts_with('#') && !key.contains('[') {
                    for x in extremes {
                        let mut l = lines.clone();
                        let changed = format!("{key} = {x}");
                        l[i] = &changed;
                        cases.push(l.join("\n"));
                    }
                }
            }
        }
        for (n, case) in cases.iter().enumerate() {
            let p = dir.join(format!("v{n}.toml"));
            std::fs::write(&p, case).unwrap();
            let r = std::panic::catch_unwind(|| prepare(&p, &[PathBuf::from(POLICY)], None));
            let r =
                r.unwrap_or_else(|_| panic!("panicked on a variant of {}:\n{case}", f.display()));
            if let Ok((_, prepared)) = r {
                assert!(prepared.duration_ms <= tollgate::sim::file::MAX_DURATION_MS);
            }
            variants += 1;
        }
    }
    assert!(variants > 200, "{variants} variants");
}
