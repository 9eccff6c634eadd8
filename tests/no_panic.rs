//! CI's stand-in for the fuzzers in `fuzz/`: a few thousand generated inputs through the
//! same entry point (`policy_gen::check_bytes`: a file → load → compile → render every
//! format), asserting that nothing panics and that a rejected input always gets at least
//! one error diagnostic with a location.
//!
//! Inputs: random bytes; the example policies with bytes flipped, lines deleted,
//! duplicated, swapped or cut; and structured policies from the generator the
//! `load_structured` fuzz target uses.

mod policy_gen;

use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use policy_gen::{check_bytes, Doc};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The package root: read at run time (cargo sets it for tests), so a test binary reused
/// from another checkout sharing the target directory still reads this checkout's files.
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        max_shrink_iters: 2000,
        // A failure prints its minimal input; crashers worth keeping go to fuzz/regressions/.
        failure_persistence: None,
        ..Config::default()
    })
}

/// Example and corpus policies to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let root = root();
    let mut out = Vec::new();
    let mut dirs = vec![
        root.join("policies"),
        root.join("tests/valid"),
        root.join("tests/invalid"),
    ];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(std::fs::read(&p).expect("read seed"));
            }
        }
    }
    assert!(out.len() >= 2, "no seed policies found");
    out
}

#[test]
fn random_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    // Mostly printable ASCII (to get past UTF-8 and reach the TOML parser), some raw bytes.
    let byte = prop_oneof![
        6 => proptest::char::range(' ', '~').prop_map(|c| c as u8),
        1 => Just(b'\n'),
        1 => any::<u8>(),
    ];
    runner(600)
        .run(&vec(byte, 0..400), |bytes| {
            check_bytes(dir.path(), &bytes);
            Ok(())
        })
        .unwrap();
}

/// One edit of a policy's text.
#[derive(Debug, Clone)]
enum Edit {
    FlipByte(usize, u8),
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Truncate(usize),
    Insert(usize, &'static str),
}

const INSERTS: [&str; 12] = [
    "=",
    "\"",
    "[",
    "]]",
    "{",
    "}",
    ",",
    "\n[[routes]]\n",
    "\nx = 1\n",
    "nan",
    "-",
    "\\u0000",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::FlipByte(i, b)),
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 0..INSERTS.len()).prop_map(|(i, s)| Edit::Insert(i, INSERTS[s])),
    ]
}

fn apply(text: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut t = text.to_vec();
    for e in edits {
        let mut lines: Vec<Vec<u8>> = t.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        let n = lines.len();
        match *e {
            Edit::FlipByte(i, b) if !t.is_empty() => {
                let i = i % t.len();
                t[i] ^= b | 1;
                continue;
            }
            Edit::Truncate(i) => {
                t.truncate(i % (t.len() + 1));
                continue;
            }
            Edit::Insert(i, s) => {
                let i = i % (t.len() + 1);
                t.splice(i..i, s.bytes());
                continue;
            }
            Edit::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Edit::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::SwapLines(a, b) => lines.swap(a % n, b % n),
            Edit::FlipByte(..) => {}
        }
        t = lines.join(&b'\n');
    }
    t
}

#[test]
fn mutated_policies_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = seeds();
    let n = seeds.len();
    runner(900)
        .run(&(0..n, vec(edit(), 1..6)), |(i, edits)| {
            check_bytes(dir.path(), &apply(&seeds[i], &edits));
            Ok(())
        })
        .unwrap();
}

#[test]
fn unmutated_seeds_behave() {
    let dir = tempfile::tempdir().unwrap();
    let root = root();
    for f in ["policies/minimal.toml", "policies/relay.toml"] {
        let out = check_bytes(dir.path(), &std::fs::read(root.join(f)).unwrap());
        assert!(out.ok, "{f} should compile");
    }
}

fn doc(bytes: &[u8]) -> String {
    let mut u = Unstructured::new(bytes);
    Doc::arbitrary(&mut u)
        .map(|d| d.render())
        .unwrap_or_default()
}

#[test]
fn structured_policies_never_panic_and_valid_ones_satisfy_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&tollgate::schema::policy_schema_json()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    runner(900)
        .run(&vec(any::<u8>(), 0..1500), |bytes| {
            let text = doc(&bytes);
            let out = check_bytes(dir.path(), text.as_bytes());
            if out.ok {
                // What tollgate accepts, the schema (and so an editor) accepts too.
                let json: serde_json::Value =
                    toml_edit::de::from_str(&text).expect("accepted, so TOML");
                let errs: Vec<String> = validator
                    .iter_errors(&json)
                    .map(|e| e.to_string())
                    .collect();
                prop_assert!(
                    errs.is_empty(),
                    "schema rejects an accepted policy: {errs:?}\n{text}"
                );
            }
            Ok(())
        })
        .unwrap();
}

/// The generator is not degenerate: from random input it makes policies that compile,
/// policies that are valid TOML but rejected, and policies that are not TOML.
#[test]
fn structured_generator_reaches_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut ok, mut rejected_toml, mut not_toml) = (0, 0, 0);
    for _ in 0..300 {
        let len = rng.usize(0..2000);
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let text = doc(&bytes);
        let out = check_bytes(dir.path(), text.as_bytes());
        if out.ok {
            ok += 1;
        } else if toml_edit::ImDocument::parse(text.as_str()).is_ok() {
            rejected_toml += 1;
        } else {
            not_toml += 1;
        }
    }
    eprintln!("compiled {ok}, TOML but rejected {rejected_toml}, not TOML {not_toml}");
    assert!(ok >= 3, "only {ok} of 300 generated policies compiled");
    assert!(
        rejected_toml >= 30,
        "only {rejected_toml} rejected TOML documents"
    );
    assert!(not_toml >= 3, "only {not_toml} syntax errors");
}

/// Crashers found by `cargo fuzz` (minimized), kept so they stay fixed.
#[test]
fn fuzz_regressions_stay_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let regressions = root().join("fuzz/regressions");
    let mut n = 0;
    for e in std::fs::read_dir(regressions)
        .expect("fuzz/regressions/")
        .flatten()
    {
        check_bytes(dir.path(), &std::fs::read(e.path()).unwrap());
        n += 1;
    }
    assert!(n >= 1);
}

/// Every extreme value TOML can write, in every numeric key, alone and all at once
/// (`policy_gen::extreme_policies`): `check` answers without panicking, and a policy it
/// accepts has bounds and builds an executor (what a reload does; `check_bytes` asserts
/// both); every message stays short. The whole corpus runs on another thread under a generous wall-clock limit: a hang
/// guard (compile work must not grow with `max_attempts` or a duration), not a speed goal.
#[test]
fn extreme_values_are_answered_and_never_panic() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        let policies = policy_gen::extreme_policies();
        let compiled = policies
            .iter()
            .filter(|text| check_bytes(dir.path(), text.as_bytes()).ok)
            .count();
        // A number in a message is written short (`5e-324`, not 324 digits).
        for text in &policies {
            let opts = tollgate::policy::LoadOptions::from_text("extreme.toml", text.as_str())
                .with_env(Vec::<(String, String)>::new());
            let diags = match tollgate::plan::Plan::load(&opts) {
                Ok(c) => c.warnings,
                Err(d) => d,
            };
            for d in &diags.items {
                let longest_number = d
                    .message
                    .split(|c: char| !c.is_ascii_digit())
                    .map(str::len)
                    .max()
                    .unwrap_or(0);
                assert!(longest_number <= 24, "a long number: {}", d.message);
            }
        }
        tx.send((policies.len(), compiled)).unwrap();
    });
    let (total, compiled) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("checking the extreme policies hung (or panicked: see above)");
    eprintln!("{total} extreme policies, {compiled} compiled");
    assert!(total >= 400, "{total}");
    assert!(compiled >= 50, "only {compiled} extreme policies compiled");
}
