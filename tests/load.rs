//! Loader behaviour: merging files and directories, environment overrides, positions of
//! parse errors, and partial policies.

use std::path::{Path, PathBuf};

use tollgate::diagnostic::{Diagnostics, Origin};
use tollgate::plan::compile;
use tollgate::policy::{load, load_cached, LoadCache, LoadOptions};

const UPSTREAM: &str = r#"
[upstreams.main]
base_url = "https://api.example.com/v1"

[models.m]
upstream = "main"
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn no_env(paths: impl IntoIterator<Item = PathBuf>) -> LoadOptions {
    LoadOptions::new(paths).with_env(Vec::<(String, String)>::new())
}

fn errors(opts: &LoadOptions) -> Diagnostics {
    compile(load(opts)).expect_err("expected the policy to be invalid")
}

#[test]
fn routes_from_several_files_are_concatenated_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.toml",
        &format!(
            "{UPSTREAM}\n[[routes]]\nname = \"one\"\nwhen = {{ attr = \"task\", eq = \"x\" }}\ntargets = [\"m\"]\n\n[[routes]]\nname = \"two\"\nwhen = {{ attr = \"task\", eq = \"y\" }}\ntargets = [\"m\"]\n"
        ),
    );
    let b = write(
        dir.path(),
        "b.toml",
        "[[routes]]\nname = \"three\"\ntargets = [\"m\"]\n",
    );
    let c = compile(load(&no_env([a, b]))).expect("compiles");
    let names: Vec<&str> = c.plan.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["one", "two", "three"]);
    assert!(c.warnings.items.is_empty(), "{}", c.warnings.short());
}

#[test]
fn a_name_in_two_files_is_an_error_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.toml",
        &format!("{UPSTREAM}\n[[routes]]\nname = \"r\"\ntargets = [\"m\"]\n"),
    );
    let b = write(
        dir.path(),
        "b.toml",
        "# again\n[models.m]\nupstream = \"main\"\n",
    );
    let d = errors(&no_env([a.clone(), b.clone()]));
    let dup: Vec<_> = d
        .items
        .iter()
        .filter(|i| i.code == "duplicate-name")
        .collect();
    assert_eq!(dup.len(), 1, "{}", d.short());
    let dup = dup[0];
    assert_eq!(dup.message, "`models.m` is defined in two files");
    let here = d.sources.describe(&dup.origin);
    assert_eq!(here, format!("{}:2:9", b.display()));
    assert_eq!(dup.related.len(), 1);
    let first = d.sources.describe(&dup.related[0].0);
    assert_eq!(first, format!("{}:5:9", a.display()));
    // Both files appear in every rendering.
    for r in [d.render(false), d.to_json().to_string()] {
        assert!(r.contains(&a.display().to_string()), "{r}");
        assert!(r.contains(&b.display().to_string()), "{r}");
    }
}

#[test]
fn a_directory_loads_its_toml_files_in_name_order_and_ignores_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "20-routes.toml",
        "[[routes]]\nname = \"second\"\ntargets = [\"m\"]\n",
    );
    write(
        dir.path(),
        "10-base.toml",
        &format!(
            "{UPSTREAM}\n[[routes]]\nname = \"first\"\nwhen = {{ attr = \"task\", eq = \"x\" }}\ntargets = [\"m\"]\n"
        ),
    );
    write(dir.path(), "notes.md", "not = [toml");
    write(dir.path(), "backup.toml.bak", "this is = not valid [");
    std::fs::create_dir(dir.path().join("sub.toml")).unwrap(); // a directory named *.toml
    let loaded = load(&no_env([dir.path().to_path_buf()]));
    let files: Vec<String> = loaded
        .sources
        .iter()
        .map(|(_, f)| f.path.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(files, ["10-base.toml", "20-routes.toml"]);
    let c = compile(loaded).expect("compiles");
    let names: Vec<&str> = c.plan.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
}

#[test]
fn a_missing_path_is_an_io_error() {
    let loaded = load(&no_env([PathBuf::from("tests/no/such/policy.toml")]));
    assert!(loaded.io_failed());
    let d = compile(loaded).expect_err("invalid");
    assert_eq!(d.items.len(), 1, "{}", d.short());
    assert_eq!(d.items[0].code, "io");
    assert!(matches!(d.items[0].origin, Origin::Path(_)));
}

fn base_policy(dir: &Path) -> PathBuf {
    write(
        dir,
        "p.toml",
        &format!(
            "[defaults]\ntimeouts = {{ total = \"30s\" }}\n{UPSTREAM}\n[[routes]]\nname = \"r\"\ntargets = [\"m\"]\n"
        ),
    )
}

#[test]
fn a_valid_override_changes_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let p = base_policy(dir.path());
    let plain = compile(load(&no_env([p.clone()]))).unwrap();
    assert_eq!(
        plain.plan.routes[0].total_timeout,
        std::time::Duration::from_secs(30)
    );
    let opts = LoadOptions::new([p]).with_env([
        ("TOLLGATE__DEFAULTS__TIMEOUTS__TOTAL", "2m"),
        (
            "TOLLGATE__UPSTREAMS__MAIN__BASE_URL",
            "http://127.0.0.1:8080/v1",
        ),
        ("TOLLGATE__UPSTREAMS__MAIN__LIMITS__CONCURRENCY", "7"),
        ("UNRELATED_VARIABLE", "ignored"),
    ]);
    let c = compile(load(&opts)).expect("compiles");
    assert_eq!(
        c.plan.routes[0].total_timeout,
        std::time::Duration::from_secs(120)
    );
    assert_eq!(c.plan.upstreams[0].base_url, "http://127.0.0.1:8080/v1");
    assert_eq!(c.plan.upstreams[0].limits.concurrency, Some(7));
}

#[test]
fn an_invalid_override_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let p = base_policy(dir.path());
    let opts = LoadOptions::new([p]).with_env([("TOLLGATE__DEFAULTS__TIMEOUTS__TOTAL", "forever")]);
    let d = errors(&opts);
    assert_eq!(d.items.len(), 1, "{}", d.short());
    assert_eq!(
        d.items[0].origin,
        Origin::Env {
            var: "TOLLGATE__DEFAULTS__TIMEOUTS__TOTAL".into()
        }
    );
    assert!(
        d.items[0].message.contains("invalid duration `forever`"),
        "{}",
        d.items[0].message
    );
    let json = d.to_json();
    assert_eq!(
        json["diagnostics"][0]["env"],
        "TOLLGATE__DEFAULTS__TIMEOUTS__TOTAL"
    );
    assert!(d
        .render(false)
        .contains("environment variable TOLLGATE__DEFAULTS__TIMEOUTS__TOTAL"));
}

#[test]
fn an_override_of_an_unknown_key_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let p = base_policy(dir.path());
    let opts = LoadOptions::new([p]).with_env([("TOLLGATE__UPSTREAMS__MAIN__BASEURL", "x")]);
    let d = errors(&opts);
    assert_eq!(d.items.len(), 1, "{}", d.short());
    assert_eq!(d.items[0].code, "unknown-key");
    assert_eq!(
        d.items[0].origin,
        Origin::Env {
            var: "TOLLGATE__UPSTREAMS__MAIN__BASEURL".into()
        }
    );
    assert_eq!(d.items[0].help.as_deref(), Some("did you mean `base_url`?"));
}

#[test]
fn figment_level_errors_report_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.toml",
        &format!(
            "{UPSTREAM}\n[retry.r]\nmax_attempts = \"three\"\nbackoff = {{ kind = \"linear\" }}\n\n[[routes]]\nname = \"r\"\ntargetz = [\"m\"]\n"
        ),
    );
    let d = errors(&no_env([p.clone()]));
    let got: Vec<(String, &str)> = d
        .items
        .iter()
        .map(|i| (d.sources.describe(&i.origin), i.code.as_str()))
        .collect();
    let at = |l: u32, c: u32| format!("{}:{l}:{c}", p.display());
    assert_eq!(
        got,
        [
            (at(9, 16), "invalid-type"),
            (at(10, 20), "invalid-value"),
            (at(14, 1), "unknown-key"),
        ],
        "{}",
        d.short()
    );
    // The JSON form carries the same position.
    let j = d.to_json();
    assert_eq!(j["diagnostics"][0]["line"], 9);
    assert_eq!(j["diagnostics"][0]["column"], 16);
    assert_eq!(j["diagnostics"][0]["file"], p.display().to_string());
}

#[test]
fn a_syntax_error_reports_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.toml",
        "version = 1\n\n[models.m\nupstream = \"x\"\n",
    );
    let d = errors(&no_env([p.clone()]));
    assert_eq!(d.items.len(), 1, "{}", d.short());
    assert_eq!(d.items[0].code, "syntax");
    assert_eq!(
        d.sources.describe(&d.items[0].origin),
        format!("{}:3:10", p.display())
    );
}

#[test]
fn a_partially_broken_policy_still_reports_the_good_parts() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.toml",
        r#"[upstreams.main]
base_url = "https://api.example.com/v1"

[upstreams.broken]
base_url = 42

[models.good]
upstream = "main"
price = { input_per_mtok = -1.0, output_per_mtok = 1.0 }

[models.bad]
upstream = "broken"
context_window = "large"

[retry.r]
max_attempts = 0

[[routes]]
name = "first"
targets = "bad"

[[routes]]
name = "second"
targets = ["good", "bad", "typo"]
retry = "r"

[budgets.b]
limit_usd = 10.0
window = "1d"
scope = { routes = ["first"], upstreams = ["broken"] }
"#,
    );
    let d = errors(&no_env([p]));
    let codes: Vec<(&str, &str)> = d
        .items
        .iter()
        .map(|i| (i.code.as_str(), i.message.as_str()))
        .collect();
    // The broken entries: reported once each, where they are broken.
    assert!(codes.contains(&(
        "invalid-type",
        "`upstreams.broken.base_url` has the wrong type: found signed int `42`"
    )));
    assert!(codes.contains(&(
        "invalid-type",
        "`models.bad.context_window` has the wrong type: found string \"large\""
    )));
    assert!(codes.contains(&(
        "invalid-type",
        "`routes[0].targets` has the wrong type: found string \"bad\""
    )));
    // The good parts: still checked.
    assert!(codes.contains(&("negative-price", "input_per_mtok is -1")));
    assert!(codes.contains(&(
        "zero-attempts",
        "max_attempts is 0: no call would ever be made"
    )));
    assert!(codes.contains(&("unknown-reference", "unknown model `typo`")));
    // No unknown-reference for entries that exist but failed to parse.
    let unknown: Vec<&str> = codes
        .iter()
        .filter(|(c, _)| *c == "unknown-reference")
        .map(|(_, m)| *m)
        .collect();
    assert_eq!(unknown, ["unknown model `typo`"], "{}", d.short());
    assert_eq!(d.error_count(), 6, "{}", d.short());
}

#[test]
fn a_file_that_fails_to_parse_does_not_make_other_files_references_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.toml",
        "[[routes]]\nname = \"r\"\ntargets = [\"m\"]\nretry = \"standard\"\n",
    );
    let b = write(
        dir.path(),
        "b.toml",
        &format!("{UPSTREAM}\n[retry.standard\nmax_attempts = 3\n"),
    );
    let d = errors(&no_env([a, b.clone()]));
    assert_eq!(d.items.len(), 1, "{}", d.short());
    assert_eq!(d.items[0].code, "syntax");
    assert!(
        d.short().starts_with(&format!("{}:8:16", b.display())),
        "{}",
        d.short()
    );
}

#[test]
fn text_in_memory_loads_after_the_files_and_is_named_by_its_label() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.toml",
        &format!("{UPSTREAM}\n[[routes]]\nname = \"one\"\nwhen = {{ attr = \"task\", eq = \"x\" }}\ntargets = [\"m\"]\n"),
    );
    let mut opts = no_env([a]);
    opts.texts.push((
        "inline.toml".into(),
        "[[routes]]\nname = \"two\"\ntargets = [\"m\"]\n".into(),
    ));
    let c = compile(load(&opts)).expect("compiles");
    let names: Vec<&str> = c.plan.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["one", "two"]);

    let bad = LoadOptions::from_text(
        "inline.toml",
        format!("{UPSTREAM}\n[[routes]]\nname = \"r\"\ntargets = [\"m\"]\nretry = 3\n"),
    )
    .with_env(Vec::<(String, String)>::new());
    let short = errors(&bad).short();
    assert!(short.starts_with("inline.toml:"), "{short}");
    assert!(short.contains("retry"), "{short}");
}

/// What one load gives, compared between the direct path and figment's.
fn outcome(l: tollgate::policy::Loaded) -> String {
    let mut out = format!("{:?}\n{:?}\n{}\n", l.policy, l.diagnostics, l.is_partial());
    for i in 0..l.policy.routes.len() + 1 {
        out.push_str(&format!("{} ", l.route_path(i)));
    }
    match compile(l) {
        // (The plan holds hash maps: its Debug text is in no fixed order.)
        Ok(c) => out.push_str(&format!("\nok {:?}", c.warnings.items)),
        Err(d) => out.push_str(&format!("\nerr {:?}", d.items)),
    }
    out
}

#[track_caller]
fn same_both_ways(opts: &LoadOptions) {
    let direct = outcome(load(opts));
    let figment = outcome(tollgate::policy::load_through_figment(opts));
    assert!(
        direct == figment,
        "{:?}: the direct path differs from figment's\n direct:  {direct}\n figment: {figment}",
        opts.paths
    );
}

/// Without environment overrides a policy is deserialized straight from the parsed
/// documents; with them, through figment. Both must read every policy alike: every corpus
/// and example file alone, every directory, a few merged sets, and each file with every
/// line removed in turn (which makes all kinds of invalid and odd policies).
#[test]
fn the_direct_path_reads_every_policy_as_figment_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (files, dirs) = corpus();
    for f in &files {
        same_both_ways(&no_env([f.clone()]));
    }
    for d in &dirs {
        same_both_ways(&no_env([d.clone()]));
    }
    same_both_ways(&no_env([root.join("policies")]));
    for pair in files.windows(2) {
        same_both_ways(&no_env(pair.iter().cloned()));
    }
    let dir = tempfile::tempdir().unwrap();
    for f in &files {
        for text in each_line_removed(f) {
            let p = write(dir.path(), "p.toml", &text);
            same_both_ways(&no_env([p]));
        }
    }
}

/// Every corpus, example and regression policy file, and every directory holding them.
fn corpus() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for d in [
        "policies",
        "tests/valid",
        "tests/invalid",
        "fuzz/regressions",
    ] {
        let mut pending = vec![root.join(d)];
        while let Some(d) = pending.pop() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    dirs.push(p.clone());
                    pending.push(p);
                } else if p.extension().is_some_and(|x| x == "toml") {
                    files.push(p);
                }
            }
        }
    }
    assert!(files.len() > 100, "found the corpus: {}", files.len());
    (files, dirs)
}

/// The file's text with each of its lines removed in turn (which makes all kinds of invalid
/// and odd policies).
fn each_line_removed(f: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(f).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    (0..lines.len())
        .map(|i| {
            let mut l = lines.clone();
            l.remove(i);
            l.join("\n")
        })
        .collect()
}

#[track_caller]
fn same_as_load(opts: &LoadOptions, cache: &mut LoadCache, what: &str) {
    let cached = outcome(load_cached(opts, cache));
    let plain = outcome(load(opts));
    assert!(
        cached == plain,
        "{:?} ({what}): the cached load differs from load\n cached: {cached}\n load:   {plain}",
        opts.paths
    );
}

/// `policy::load_cached` gives what `load` gives: every corpus file, directory and
/// neighbouring pair, with a new cache and with the cache of the load before; then a
/// directory of two files whose second has each of its lines removed in turn, one load
/// after the other through the same cache (the first file cached, the second read again).
#[test]
fn a_cached_load_is_a_load() {
    let (files, dirs) = corpus();
    let mut warm = LoadCache::default();
    let sets = files
        .iter()
        .map(|f| vec![f.clone()])
        .chain(dirs.iter().map(|d| vec![d.clone()]))
        .chain(files.windows(2).map(|w| w.to_vec()));
    for paths in sets {
        let opts = no_env(paths);
        same_as_load(&opts, &mut LoadCache::default(), "cold");
        same_as_load(&opts, &mut warm, "warm");
        same_as_load(&opts, &mut warm, "warm, again");
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = no_env([dir.path().to_path_buf()]);
    for pair in files.windows(2) {
        std::fs::copy(&pair[0], dir.path().join("a.toml")).unwrap();
        for text in each_line_removed(&pair[1]) {
            write(dir.path(), "b.toml", &text);
            same_as_load(&opts, &mut warm, "b.toml edited");
        }
    }
}

/// A policy split across files, one entry edited: one file is parsed again, and the
/// outcome is `load`'s.
#[test]
fn a_cached_load_parses_only_the_files_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.toml",
        &format!("version = 1\n{UPSTREAM}\n[[routes]]\nname = \"r\"\ntargets = [\"m\"]\n"),
    );
    let callers = |i: usize, key: char| {
        format!(
            "[callers.c{i}]\nkey_sha256 = \"{}\"\n[budgets.b{i}]\nlimit_usd = 1.0\nwindow = \"1d\"\nscope = {{ keys = [\"c{i}\"] }}\n",
            key.to_string().repeat(64)
        )
    };
    write(dir.path(), "b.toml", &callers(1, 'a'));
    write(dir.path(), "c.toml", &callers(2, 'b'));
    let opts = no_env([dir.path().to_path_buf()]);
    let mut cache = LoadCache::default();
    same_as_load(&opts, &mut cache, "cold");
    assert_eq!(cache.parsed(), 3, "every file read once");
    same_as_load(&opts, &mut cache, "unchanged");
    assert_eq!(cache.parsed(), 3, "nothing read again");
    write(dir.path(), "c.toml", &callers(2, 'c'));
    same_as_load(&opts, &mut cache, "c.toml edited");
    assert_eq!(cache.parsed(), 4, "only c.toml read again");
    // A name moved into another file: defined twice, reported by `load`.
    write(dir.path(), "c.toml", &callers(1, 'c'));
    same_as_load(&opts, &mut cache, "a name in two files");
    assert!(compile(load_cached(&opts, &mut cache)).is_err());
}
