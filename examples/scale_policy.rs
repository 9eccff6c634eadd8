//! Policies of many callers or many routes, to measure what compiling and reloading cost as
//! a policy grows (it measures, it does not assert).
//!
//! ```text
//! cargo run --release --example scale_policy -- gen callers 50000 > /tmp/c50k.toml
//! cargo run --release --example scale_policy -- gen routes 64000 > /tmp/r64k.toml
//! /usr/bin/time -v target/release/tollgate check /tmp/c50k.toml
//! cargo run --release --example scale_policy -- reload callers 50000
//! ```
//!
//! `callers N`: N callers (`[callers.cNAME] key_sha256`), each with its own budget
//! (`[budgets.bNAME] scope.keys = ["cNAME"]`), one route. `routes N`: N routes, each matching
//! one model name, over 10 models. `reload KIND N` writes that policy, loads, compiles and
//! starts an executor on it, then changes one caller's key (or one route's match) and times
//! the reload through `tollgate::reload` (`reload_now`: load, compile, compare, swap).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tollgate::exec::Executor;
use tollgate::plan::Plan;
use tollgate::policy::{LoadCache, LoadOptions};
use tollgate::reload::{self, PolicySource, ReloadConfig, ReloadEvent};

// As the `tollgate` binary (src/main.rs), so a reload here costs what `serve`'s does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HEAD: &str = "version = 1\n\n[upstreams.up]\nbase_url = \"http://127.0.0.1:1/v1\"\n\
limits = { requests_per_second = 100.0, burst = 10 }\n";

/// A key hash for caller `i` (64 hex digits; `salt` changes it).
fn key(i: usize, salt: u64) -> String {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    let mut s = String::with_capacity(64);
    for _ in 0..4 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let _ = write!(s, "{x:016x}");
    }
    s
}

/// N callers, each with its own budget; caller `changed` gets another key.
pub fn callers(n: usize, changed: Option<usize>) -> String {
    let mut s = String::from(HEAD);
    s.push_str("\n[models.m0]\nupstream = \"up\"\nprice = { input_per_mtok = 1.0, output_per_mtok = 2.0 }\n\n[[routes]]\nname = \"main\"\ntargets = [\"m0\"]\n");
    for i in 0..n {
        let salt = if Some(i) == changed { 1 } else { 0 };
        let _ = write!(
            s,
            "\n[callers.c{i}]\nkey_sha256 = \"{}\"\n\n[budgets.b{i}]\nlimit_usd = 10.0\nwindow = \"1d\"\nscope = {{ keys = [\"c{i}\"] }}\n",
            key(i, salt)
        );
    }
    s
}

/// N routes over 10 models, each but the last matching one model name; route `changed`
/// matches another name.
pub fn routes(n: usize, changed: Option<usize>) -> String {
    let mut s = String::from(HEAD);
    for m in 0..10 {
        let _ = write!(
            s,
            "\n[models.m{m}]\nupstream = \"up\"\nprice = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}\n"
        );
    }
    for i in 0..n {
        let _ = write!(s, "\n[[routes]]\nname = \"r{i}\"\n");
        if i + 1 < n {
            let tag = if Some(i) == changed { "x" } else { "" };
            let _ = writeln!(s, "when = {{ attr = \"model\", eq = \"want-{i}{tag}\" }}");
        }
        let _ = writeln!(s, "targets = [\"m{}\"]", i % 10);
    }
    s
}

fn generate(kind: &str, n: usize, changed: Option<usize>) -> String {
    match kind {
        "callers" => callers(n, changed),
        "routes" => routes(n, changed),
        other => panic!("unknown kind {other:?}: callers or routes"),
    }
}

/// Writes the policy into `dir`: one `policy.toml`, or with `files > 1` a directory
/// `policy/` of `files` files, the entries spread evenly across them in order. Returns the
/// path to load.
fn write_policy(dir: &Path, kind: &str, n: usize, files: usize, changed: Option<usize>) -> PathBuf {
    let text = generate(kind, n, changed);
    if files <= 1 {
        let path = dir.join("policy.toml");
        std::fs::write(&path, text).expect("write");
        return path;
    }
    let root = dir.join("policy");
    std::fs::create_dir_all(&root).expect("mkdir");
    // Split at entry starts (blank line then `[`), `files` parts of about equal size.
    let starts: Vec<usize> = text.match_indices("\n\n[").map(|(i, _)| i + 2).collect();
    let per = starts.len().div_ceil(files);
    let mut cuts = vec![0];
    cuts.extend(starts.iter().skip(per).step_by(per).copied());
    cuts.push(text.len());
    for (k, w) in cuts.windows(2).enumerate() {
        let path = root.join(format!("part-{k:04}.toml"));
        std::fs::write(&path, &text[w[0]..w[1]]).expect("write");
    }
    root
}

fn reload_once(kind: &str, n: usize, files: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_policy(dir.path(), kind, n, files, None);
    let opts = LoadOptions::new([path.clone()]).with_env(Vec::<(String, String)>::new());
    let t = Instant::now();
    let plan = Plan::load(&opts).expect("policy compiles").plan;
    let compiled = t.elapsed();
    let t = Instant::now();
    let exec = Executor::new(plan).expect("executor");
    let started = t.elapsed();
    let handle = reload::watch(
        PolicySource::from(opts.clone()),
        &exec,
        ReloadConfig::default(),
    )
    .expect("watch");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The watcher reads the files once when it starts: wait for that (an unchanged reload).
    let t = Instant::now();
    let first = rt.block_on(handle.reload_now()).expect("reload");
    let warmed = t.elapsed();
    assert!(matches!(first, ReloadEvent::Unchanged { .. }), "{first}");
    write_policy(dir.path(), kind, n, files, Some(n / 2));
    let t = Instant::now();
    let ev = rt.block_on(handle.reload_now()).expect("reload");
    let reloaded = t.elapsed();
    match &ev {
        ReloadEvent::Applied { .. } => {}
        other => panic!("expected an applied reload, got {other}"),
    }
    println!(
        "{kind} {n} in {files} file(s): load+compile {:.3} s, Executor::new {:.3} s, watcher ready {:.3} s, reload (one changed) {:.3} s: {ev}",
        compiled.as_secs_f64(),
        started.as_secs_f64(),
        warmed.as_secs_f64(),
        reloaded.as_secs_f64()
    );
    handle.stop();
    let mut cache = LoadCache::default();
    cache.warm(&opts);
    phases(&opts, &exec, &mut cache, || {
        write_policy(dir.path(), kind, n, files, Some(n / 3));
    });
}

/// The steps of one reload, timed one by one (what `reload_now` does, without the watcher):
/// after `edit` changes the files, load, compile, compare with the running plan, swap.
fn phases(opts: &LoadOptions, exec: &Executor, cache: &mut LoadCache, edit: impl FnOnce()) {
    edit();
    let t = Instant::now();
    let loaded = tollgate::policy::load_cached(opts, cache);
    let load = t.elapsed();
    let t = Instant::now();
    let compiled = tollgate::plan::compile(loaded).expect("compiles");
    let compile = t.elapsed();
    let t = Instant::now();
    let summary = reload::Summary::between(&exec.plan(), &compiled.plan);
    let compare = t.elapsed();
    let t = Instant::now();
    exec.swap_plan(compiled.plan).expect("swap");
    let swap = t.elapsed();
    println!(
        "  phases: load {:.3} s, compile {:.3} s, compare {:.3} s, swap {:.3} s ({summary})",
        load.as_secs_f64(),
        compile.as_secs_f64(),
        compare.as_secs_f64(),
        swap.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: scale_policy (gen|reload) (callers|routes) N [FILES]";
    let (mode, kind, n, files) = match args.as_slice() {
        [m, k, n] => (m, k, n, "1"),
        [m, k, n, f] => (m, k, n, f.as_str()),
        _ => panic!("{usage}"),
    };
    let n: usize = n.parse().expect(usage);
    let files: usize = files.parse().expect(usage);
    match mode.as_str() {
        "gen" => print!("{}", generate(kind, n, None)),
        "reload" => reload_once(kind, n, files),
        _ => panic!("{usage}"),
    }
}
