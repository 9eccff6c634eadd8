//! Load + compile of a large policy: 1,000 routes, 200 models, 10 upstreams, 20 retry
//! policies, 10 breakers and 20 budgets, written as TOML into a temp dir.
//!
//! ```text
//! cargo bench --bench compile -- --warm-up-time 1 --measurement-time 3
//! ```

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::plan::compile;
use tollgate::policy::{load, LoadOptions};

const UPSTREAMS: usize = 10;
const MODELS: usize = 200;
const RETRIES: usize = 20;
const BREAKERS: usize = 10;
const ROUTES: usize = 1000;
const BUDGETS: usize = 20;

/// A valid policy of the sizes above.
fn big_policy() -> String {
    let mut s = String::from("version = 1\n\n[defaults]\ntimeouts = { connect = \"3s\", per_try = \"20s\", total = \"60s\" }\nretry = \"r0\"\nbreaker = \"b0\"\n");
    for u in 0..UPSTREAMS {
        let _ = write!(
            s,
            "\n[upstreams.u{u}]\nbase_url = \"https://api{u}.example/v1\"\napi_key = {{ env = \"TOLLGATE_BENCH_KEY_{u}\" }}\nlimits = {{ requests_per_minute = {}, tokens_per_minute = 1_000_000, concurrency = 50 }}\nrate_limit_headers = true\nbreaker = \"b{}\"\n",
            600 + u * 10,
            u % BREAKERS
        );
    }
    for m in 0..MODELS {
        let _ = write!(
            s,
            "\n[models.\"model-{m}\"]\nupstream = \"u{}\"\nprice = {{ input_per_mtok = {}.5, output_per_mtok = {}.25 }}\ncontext_window = {}\n",
            m % UPSTREAMS,
            m % 7,
            m % 13 + 1,
            100_000 + m * 1000
        );
    }
    for r in 0..RETRIES {
        let _ = write!(
            s,
            "\n[retry.r{r}]\nmax_attempts = {}\nbackoff = {{ kind = \"exponential\", base = \"{}ms\", factor = 2.0, max = \"10s\", jitter = \"full\" }}\nretry_on = [\"connect\", \"timeout\", \"429\", \"5xx\", \"rate_limit_exceeded\"]\nretry_after = {{ honor = true, max = \"30s\" }}\nbudget = {{ ratio = 0.2, min_per_second = 5 }}\n\n[retry.r{r}.on.429]\nbackoff = {{ kind = \"constant\", base = \"2s\" }}\n",
            r % 4 + 1,
            100 + r * 10
        );
    }
    for b in 0..BREAKERS {
        let _ = write!(
            s,
            "\n[breakers.b{b}]\nconsecutive_failures = {}\nfailure_rate = {{ threshold = 0.5, min_calls = 20, window = \"30s\" }}\nslow_call = {{ over = \"5s\", rate_threshold = 0.8 }}\nopen_for = \"30s\"\nhalf_open = {{ probes = 3, successes_to_close = 2 }}\n",
            b + 3
        );
    }
    for b in 0..BUDGETS {
        let _ = write!(
            s,
            "\n[budgets.g{b}]\nlimit_usd = {}.0\nwindow = \"1d\"\nscope = {{ routes = [\"route-{}\", \"route-{}\"], models = [\"model-{}\"] }}\non_exceed = {}\n",
            100 + b,
            b * 7,
            b * 7 + 1,
            b,
            if b % 2 == 0 {
                "\"reject\"".to_string()
            } else {
                format!("{{ reroute = \"route-{}\" }}", ROUTES - 1)
            }
        );
    }
    let strategies = [
        "failover",
        "weighted",
        "cheapest",
        "lowest-latency",
        "least-busy",
    ];
    for i in 0..ROUTES {
        let _ = write!(s, "\n[[routes]]\nname = \"route-{i}\"\n");
        if i + 1 < ROUTES {
            let when = match i % 4 {
                0 => format!("{{ attr = \"model\", eq = \"m{i}\" }}"),
                1 => format!("{{ attr = \"task\", one_of = [\"t{i}\", \"chat\"] }}"),
                2 => format!("{{ all = [{{ attr = \"max_tokens\", gt = {i} }}, {{ attr = \"caller\", eq = \"c{i}\" }}] }}"),
                _ => format!("{{ attr = \"prompt\", contains_any = [\"w{i}\", \"x{i}\", \"y{i}\"], min_hits = 2 }}"),
            };
            let _ = writeln!(s, "when = {when}");
        }
        let _ = writeln!(
            s,
            "strategy = \"{}\"\ntargets = [\"model-{}\", \"model-{}\", \"model-{}\"]\nretry = \"r{}\"",
            strategies[i % strategies.len()],
            i % MODELS,
            (i * 7 + 1) % MODELS,
            (i * 13 + 2) % MODELS,
            i % RETRIES
        );
    }
    s
}

fn bench_compile(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.toml");
    std::fs::write(&path, big_policy()).expect("write policy");
    let opts = LoadOptions::new([&path]).with_env(Vec::<(String, String)>::new());
    // The benchmark measures a valid policy; fail loudly if it is not.
    if let Err(d) = compile(load(&opts)) {
        panic!("the generated policy does not compile:\n{}", d.short());
    }
    let mut g = c.benchmark_group("compile");
    g.sample_size(20);
    g.bench_function("load+compile 1000 routes, 200 models", |b| {
        b.iter(|| black_box(compile(load(black_box(&opts))).is_ok()))
    });
    g.bench_function("load only", |b| {
        b.iter(|| black_box(load(black_box(&opts))))
    });
    g.finish();
}

criterion_group!(benches, bench_compile);
criterion_main!(benches);
