//! The policy corpus: every invalid fixture in `tests/invalid/` must produce exactly the
//! diagnostics in its `.expected` file; every policy in `tests/valid/` and `policies/` must
//! compile. See `tests/invalid/README.md` for the fixture conventions.
//!
//! Bless (rewrite every `.expected` from the current output, then review each by eye):
//! `TOLLGATE_BLESS=1 cargo test --test corpus`

use std::path::{Path, PathBuf};

use tollgate::diagnostic::{Code, Diagnostics, Origin, Severity};
use tollgate::plan::compile;
use tollgate::policy::{load, LoadOptions};

const INVALID: &str = "tests/invalid";
const VALID: &str = "tests/valid";
/// Fewer fixtures than this means some were lost (a bad glob, a deleted folder).
const MIN_INVALID_FIXTURES: usize = 40;

/// Header conventions read from a fixture's leading comment lines.
#[derive(Debug, Default)]
struct Header {
    /// `# env: NAME=value`: passed to the loader as a `TOLLGATE__` override.
    env: Vec<(String, String)>,
    /// `# process-env: NAME=value`: set in the process environment before loading (for
    /// `api_key = { env = … }` checks, which read the real environment). Names must be
    /// unique to the corpus, as the process environment is shared by every test.
    process_env: Vec<(String, String)>,
}

fn header_of(text: &str) -> Header {
    let mut h = Header::default();
    for line in text.lines() {
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        let comment = comment.trim();
        let (list, rest) = if let Some(r) = comment.strip_prefix("env:") {
            (&mut h.env, r)
        } else if let Some(r) = comment.strip_prefix("process-env:") {
            (&mut h.process_env, r)
        } else {
            continue;
        };
        let (k, v) = rest
            .trim()
            .split_once('=')
            .unwrap_or_else(|| panic!("malformed header line `{line}`: expected NAME=value"));
        list.push((k.trim().to_string(), v.to_string()));
    }
    h
}

/// The header of a fixture (for a directory, the headers of all its files, merged).
fn fixture_header(path: &Path) -> Header {
    let mut h = Header::default();
    for f in toml_files(path) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let fh = header_of(&text);
        h.env.extend(fh.env);
        h.process_env.extend(fh.process_env);
    }
    h
}

fn toml_files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    }
}

/// Loads and compiles one fixture (a file or a directory): every diagnostic, sorted as
/// `compile` returns them.
fn run(path: &Path) -> Diagnostics {
    let h = fixture_header(path);
    for (k, v) in &h.process_env {
        assert!(
            k.starts_with("TOLLGATE_CORPUS_"),
            "process-env names must start with TOLLGATE_CORPUS_ (they are process-global): {k}"
        );
        std::env::set_var(k, v);
    }
    let loaded = load(&LoadOptions::new([path]).with_env(h.env));
    match compile(loaded) {
        Ok(c) => c.warnings,
        Err(d) => d,
    }
}

/// Every fixture in `tests/invalid/`: `*.toml` files and directories, sorted.
fn invalid_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(INVALID)
        .expect("tests/invalid exists")
        .map(|e| PathBuf::from(INVALID).join(e.unwrap().file_name()))
        .filter(|p| p.is_dir() || p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

fn expected_path(fixture: &Path) -> PathBuf {
    if fixture.is_dir() {
        let mut s = fixture.as_os_str().to_owned();
        s.push(".expected");
        PathBuf::from(s)
    } else {
        fixture.with_extension("expected")
    }
}

/// A line diff: `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for l in &e {
        if !a.contains(l) {
            out.push_str(&format!("- {l}\n"));
        }
    }
    for l in &a {
        if !e.contains(l) {
            out.push_str(&format!("+ {l}\n"));
        }
    }
    if out.is_empty() {
        out.push_str("(same lines, different order)\n");
    }
    out
}

#[test]
fn invalid_corpus_matches_expected() {
    let bless = std::env::var_os("TOLLGATE_BLESS").is_some();
    let fixtures = invalid_fixtures();
    assert!(
        fixtures.len() >= MIN_INVALID_FIXTURES,
        "only {} fixtures in {INVALID}; expected at least {MIN_INVALID_FIXTURES}",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for f in &fixtures {
        let actual = run(f).short();
        let exp_path = expected_path(f);
        if bless {
            std::fs::write(&exp_path, &actual).unwrap();
            continue;
        }
        let Ok(expected) = std::fs::read_to_string(&exp_path) else {
            failures.push(format!(
                "{}: no {} file; actual output:\n{actual}",
                f.display(),
                exp_path.display()
            ));
            continue;
        };
        if expected != actual {
            failures.push(format!(
                "{}: output differs from {}\n{}",
                f.display(),
                exp_path.display(),
                diff(&expected, &actual)
            ));
        }
    }
    // Every .expected file belongs to a fixture.
    for e in std::fs::read_dir(INVALID).unwrap() {
        let p = PathBuf::from(INVALID).join(e.unwrap().file_name());
        if p.extension().is_some_and(|x| x == "expected") {
            let stem = p.with_extension("");
            if !(stem.is_dir() || stem.with_extension("toml").is_file()) {
                failures.push(format!("{}: no fixture for it", p.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}\n\nIf the new output is right, bless it with \
         `TOLLGATE_BLESS=1 cargo test --test corpus` and review every changed .expected file.",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

#[test]
fn invalid_corpus_reports_something_and_points_somewhere() {
    for f in invalid_fixtures() {
        let d = run(&f);
        assert!(!d.items.is_empty(), "{}: no diagnostic at all", f.display());
        // Renders without panicking, in every format.
        let human = d.render(false);
        assert!(!human.is_empty(), "{}: empty human rendering", f.display());
        let json = d.to_json();
        assert_eq!(
            json["diagnostics"].as_array().map(Vec::len),
            Some(d.items.len())
        );
        for item in &d.items {
            match &item.origin {
                Origin::File { file, span } => {
                    let src = d.sources.get(*file);
                    let (line, col) = src.line_col(span.start);
                    // Fixtures start with a comment line, so 1:1 is only right for
                    // diagnostics about the whole file.
                    assert!(
                        (line, col) != (1, 1) || item.code == "no-routes",
                        "{}: `{}` points at 1:1: {}",
                        f.display(),
                        item.code,
                        item.message
                    );
                    assert!(
                        span.end <= src.text.len(),
                        "{}: span past the end",
                        f.display()
                    );
                }
                Origin::Env { var } => assert!(
                    var.starts_with("TOLLGATE__"),
                    "{}: env origin {var}",
                    f.display()
                ),
                other => panic!(
                    "{}: `{}` has no position: {other:?}",
                    f.display(),
                    item.code
                ),
            }
            assert!(!item.message.is_empty());
        }
        for item in d.items.iter().filter(|i| i.severity == Severity::Error) {
            assert!(!item.code.as_str().is_empty());
        }
    }
}

/// Codes no fixture can produce, each with the reason (also stated in `docs/policy.md`).
const NOT_FROM_A_FIXTURE: &[(Code, &str)] = &[
    (
        Code::Io,
        "a policy path that cannot be read (missing, a directory without *.toml, not UTF-8) \
         points at the path, not into a file, and a fixture is a file that exists; \
         tests/load.rs covers it",
    ),
    (Code::DurationOutOfRange, SCENARIO_ONLY),
    (Code::NoTraffic, SCENARIO_ONLY),
    (Code::OutsideDuration, SCENARIO_ONLY),
    (Code::ShareOutOfRange, SCENARIO_ONLY),
    (Code::TooMuchTraffic, SCENARIO_ONLY),
];

/// Why a scenario code is not from a policy fixture.
const SCENARIO_ONLY: &str =
    "a scenario code (Code::SCENARIO): tests/scenarios_invalid/ produces it (tests/scenario_corpus.rs)";

/// Every diagnostic code is produced by at least one fixture of the invalid corpus (the
/// loader's and the compiler's alike), except the few no file can trigger.
#[test]
fn every_code_is_produced_by_a_fixture() {
    let mut seen = std::collections::HashSet::new();
    for f in invalid_fixtures() {
        seen.extend(run(&f).items.iter().map(|d| d.code));
    }
    let exempt: Vec<Code> = NOT_FROM_A_FIXTURE.iter().map(|(c, _)| *c).collect();
    let missing: Vec<&str> = (Code::ALL.iter())
        .filter(|c| !seen.contains(c) && !exempt.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "no fixture in {INVALID} produces {missing:?}: add one (and bless its .expected)"
    );
    for (c, why) in NOT_FROM_A_FIXTURE {
        assert!(
            !seen.contains(c),
            "`{c}` is listed as impossible from a fixture ({why}), but one produces it"
        );
    }
}

/// Tokens that look like pasted API keys in a fixture.
fn secrets_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["sk-live-", "hs_live_"] {
        for (i, _) in text.match_indices(prefix) {
            let token: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "-_".contains(*c))
                .collect();
            if token.len() > prefix.len() + 4 {
                out.push(token);
            }
        }
    }
    out
}

/// Every fixture holding something that looks like a pasted key (`sk-live-…`,
/// `hs_live_…`) never shows it, in any rendering; the `literal_secret*` fixtures must also
/// be reported as `literal-secret`.
#[test]
fn literal_secrets_are_never_rendered() {
    let mut checked = 0;
    for f in invalid_fixtures() {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text: String = toml_files(&f)
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let secrets = secrets_in(&text);
        if name.starts_with("literal_secret") {
            assert!(!secrets.is_empty(), "{name}: no secret-looking token found");
        }
        if secrets.is_empty() {
            continue;
        }
        let d = run(&f);
        if name.starts_with("literal_secret") {
            assert!(
                d.items.iter().any(|i| i.code == "literal-secret"),
                "{name}: no literal-secret diagnostic"
            );
        }
        let renderings = [
            d.short(),
            d.render(false),
            d.render(true),
            d.to_json().to_string(),
            format!("{d:?}"),
        ];
        for s in &secrets {
            for r in &renderings {
                assert!(!r.contains(s.as_str()), "{name}: secret {s} rendered:\n{r}");
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected at least three fixtures with secrets, found {checked}"
    );
}

fn valid_policies() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in [VALID, "policies"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| PathBuf::from(dir).join(e.unwrap().file_name()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        v.extend(files);
    }
    v
}

/// Warning codes a valid policy is expected to produce, from `# warnings: a, b` in its
/// header (none if absent). Repeated codes are listed once per diagnostic.
fn expected_warnings(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out: Vec<String> = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').trim().strip_prefix("warnings:"))
        .flat_map(|w| w.split(',').map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .collect();
    out.sort();
    out
}

#[test]
fn valid_corpus_compiles() {
    let files = valid_policies();
    let n_valid = files.iter().filter(|p| p.starts_with(VALID)).count();
    assert!(n_valid >= 8, "only {n_valid} valid fixtures");
    for f in &files {
        let h = fixture_header(f);
        for (k, v) in &h.process_env {
            std::env::set_var(k, v);
        }
        let loaded = load(&LoadOptions::new([f]).with_env(h.env));
        match compile(loaded) {
            // The example policies name real provider variables, which may or may not be
            // set where the tests run: only their errors are checked.
            Ok(_) if f.starts_with("policies") => {}
            Ok(c) => {
                let mut codes: Vec<String> = c
                    .warnings
                    .items
                    .iter()
                    .map(|d| d.code.to_string())
                    .collect();
                codes.sort();
                assert_eq!(
                    codes,
                    expected_warnings(f),
                    "{}: unexpected warnings (list them in a `# warnings:` header):\n{}",
                    f.display(),
                    c.warnings.short()
                );
            }
            Err(d) => panic!("{} does not compile:\n{}", f.display(), d.short()),
        }
    }
}
