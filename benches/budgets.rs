//! Per-call cost with many per-caller budgets: one route, one priced target, and N
//! budgets each scoped to one caller (`scope.keys = ["cI"]`), side by side for N = 1 and
//! N = 10,000. Each call is made by one caller, so it concerns one budget whatever N is; a
//! per-call cost growing with N means the executor visits budgets that do not concern
//! the call.
//!
//! Same harness as `benches/executor.rs`: one current-thread runtime, an immediately-ready
//! operation, limits never reached.
//!
//! Run: `cargo bench --bench budgets -- --warm-up-time 1 --measurement-time 3`

use std::fmt::Write as _;
use std::future::ready;
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::exec::{Done, Executor, Failure, Request};
use tollgate::plan::Plan;
use tollgate::policy::LoadOptions;

/// One route and `n` budgets, budget `i` for caller `c{i}`, none ever spent.
fn policy(n: usize) -> String {
    let mut s = String::from(
        "version = 1\n\n[upstreams.up]\nbase_url = \"http://127.0.0.1:1/v1\"\n\n\
         [models.m]\nupstream = \"up\"\nprice = { input_per_mtok = 1.0, output_per_mtok = 2.0 }\n\n\
         [retry.none]\nmax_attempts = 1\n\n[[routes]]\nname = \"main\"\ntargets = [\"m\"]\nretry = \"none\"\n",
    );
    for i in 0..n {
        let _ = write!(
            s,
            "\n[budgets.b{i}]\nlimit_usd = 1e9\nwindow = \"1d\"\nscope = {{ keys = [\"c{i}\"] }}\n"
        );
    }
    s
}

fn executor(n: usize) -> Executor {
    let opts =
        LoadOptions::from_text("policy.toml", policy(n)).with_env(Vec::<(String, String)>::new());
    let plan = match Plan::load(&opts) {
        Ok(c) => c.plan,
        Err(d) => panic!("bench policy does not compile:\n{}", d.render(false)),
    };
    Executor::builder(plan).seed(1).build().expect("executor")
}

fn per_caller_budgets(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("per_caller_budgets");
    for n in [1usize, 10_000] {
        // The executor's clock is created inside the runtime (TokioClock reads tokio's time).
        let exec = rt.block_on(async { executor(n) });
        // The last caller: its budget is the last one the route lists.
        let req = Request::new()
            .prompt("hello")
            .max_tokens(16)
            .caller(format!("c{}", n - 1));
        g.bench_function(format!("call/{n}_budgets"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let served = exec
                            .execute(&req, |_target, _attempt| {
                                ready(Ok::<_, Failure>(Done::with_usage((), 3, 7)))
                            })
                            .await;
                        black_box(served.is_ok());
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, per_caller_budgets);
criterion_main!(benches);
