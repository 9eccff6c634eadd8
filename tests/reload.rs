//! Hot reload with real files in temp directories: editor save patterns, bad edits,
//! bursts of writes, reloads under load, and state carried across reloads.
//!
//! File events are real (not on paused time): every wait is for an event, bounded by
//! [`WAIT`], and fails with the events seen so far.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::{error::RecvError, Receiver};
use tollgate::exec::breaker::BreakerState;
use tollgate::exec::{Done, Executor, Failure, Request, SkipReason};
use tollgate::plan::{Plan, PlanData};
use tollgate::policy::LoadOptions;
use tollgate::reload::{self, PolicySource, ReloadConfig, ReloadEvent, ReloadHandle};

/// Longest wait for any one expected event.
const WAIT: Duration = Duration::from_secs(5);
/// Debounce used by the tests: short, so they run fast.
const DEBOUNCE: Duration = Duration::from_millis(30);

/// Policy version `n`: its only model is `m{n}`, so the serving model names the version.
fn policy(n: u32) -> String {
    format!(
        r#"
[upstreams.up]
base_url = "http://127.0.0.1:1/v1"
[models.m{n}]
upstream = "up"
price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}
[[routes]]
name = "main"
targets = ["m{n}"]
"#
    )
}

const INVALID: &str = r#"
[upstreams.up]
base_url = "http://127.0.0.1:1/v1"
[models.m1]
upstream = "up"
[[routes]]
name = "main"
targets = ["nope"]
"#;

/// A second file: a route matched before `main` (so it goes first), on version 1's model.
const EXTRA: &str = r#"
[[routes]]
name = "extra"
when = { attr = "task", one_of = ["extra"] }
targets = ["m1"]
"#;

fn no_env(paths: &[PathBuf]) -> LoadOptions {
    LoadOptions::new(paths.to_vec()).with_env(Vec::<(String, String)>::new())
}

/// An executor on the policy at `paths`, watched with a short debounce.
fn start(paths: &[PathBuf]) -> (Executor, ReloadHandle, Receiver<ReloadEvent>) {
    let plan = match Plan::load(&no_env(paths)) {
        Ok(c) => c.plan,
        Err(d) => panic!("initial policy does not compile:\n{d}"),
    };
    let exec = Executor::new(plan).expect("executor");
    let handle = reload::watch(
        PolicySource::from(no_env(paths)),
        &exec,
        ReloadConfig::default().debounce(DEBOUNCE),
    )
    .expect("watch");
    let rx = handle.subscribe();
    (exec, handle, rx)
}

/// Waits for an event that satisfies `done`; fails after [`WAIT`] with every event seen.
async fn wait_for(
    rx: &mut Receiver<ReloadEvent>,
    what: &str,
    mut done: impl FnMut(&ReloadEvent) -> bool,
) -> ReloadEvent {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("timed out after {WAIT:?} waiting for {what}; events seen: {seen:#?}"),
            Ok(Err(RecvError::Lagged(_))) => continue,
            Ok(Err(RecvError::Closed)) => panic!("watcher stopped while waiting for {what}"),
            Ok(Ok(ev)) => {
                if done(&ev) {
                    return ev;
                }
                seen.push(ev.to_string());
            }
        }
    }
}

/// Waits until the executor runs policy version `n` (an `Applied` event made it so).
async fn wait_model(rx: &mut Receiver<ReloadEvent>, exec: &Executor, n: u32) -> ReloadEvent {
    let name = format!("m{n}");
    wait_for(rx, &format!("plan with model {name}"), |ev| {
        ev.is_applied() && exec.plan().model_by_name(&name).is_some()
    })
    .await
}

fn model_of(exec: &Executor) -> String {
    exec.plan().models[0].name.clone()
}

/// Asserts no event arrives for a while (nothing left queued to flip the plan back).
async fn quiet(rx: &mut Receiver<ReloadEvent>, exec: &Executor, model: &str) {
    let until = tokio::time::Instant::now() + DEBOUNCE * 8;
    while let Ok(r) = tokio::time::timeout_at(until, rx.recv()).await {
        if let Ok(ev) = r {
            assert!(
                !ev.is_applied() || exec.plan().model_by_name(model).is_some(),
                "a late reload replaced the plan: {ev}"
            );
        }
    }
    assert_eq!(model_of(exec), model);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write policy");
}

#[tokio::test]
async fn valid_invalid_valid() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    write(&p, &policy(1));
    let (exec, handle, mut rx) = start(std::slice::from_ref(&p));

    write(&p, &policy(2));
    let ev = wait_model(&mut rx, &exec, 2).await;
    match &ev {
        ReloadEvent::Applied {
            version, summary, ..
        } => {
            assert_eq!(*version, 2);
            assert_eq!(summary.models.added, ["m2"]);
            assert_eq!(summary.models.removed, ["m1"]);
            assert_eq!(summary.routes.changed, ["main"]);
            assert!(summary.upstreams.is_empty());
            assert_eq!(
                ev.to_string(),
                "applied v2: routes +0 ~1 -0 (~main), models +1 ~0 -1 (+m2 -m1)"
            );
        }
        other => panic!("expected Applied, got {other}"),
    }

    write(&p, INVALID);
    let ev = wait_for(&mut rx, "Rejected", |e| {
        matches!(e, ReloadEvent::Rejected { .. })
    })
    .await;
    let ReloadEvent::Rejected {
        version,
        diagnostics,
    } = &ev
    else {
        unreachable!()
    };
    assert_eq!(*version, 2, "the running plan is kept");
    assert_eq!(model_of(&exec), "m2");
    // The same diagnostics `tollgate check` prints for this file.
    let check = Plan::load(&no_env(std::slice::from_ref(&p))).unwrap_err();
    assert_eq!(diagnostics.render(false), check.render(false));
    assert!(diagnostics.render(false).contains("nope"));
    assert!(ev.to_string().starts_with("rejected: "), "{ev}");
    assert!(ev.headline().unwrap().contains("error["), "{ev}");
    // Requests still run on the kept plan.
    let s = exec
        .execute(&Request::new().prompt("hi"), |_, _| async {
            Ok::<_, Failure>(Done::with_usage((), 1, 1))
        })
        .await
        .unwrap();
    assert_eq!(s.model_name(), "m2");

    write(&p, &policy(3));
    let ev = wait_model(&mut rx, &exec, 3).await;
    assert!(
        matches!(ev, ReloadEvent::Applied { version: 3, .. }),
        "{ev}"
    );

    // A comment changes nothing: no swap.
    write(&p, &format!("# a comment\n{}", policy(3)));
    let ev = wait_for(&mut rx, "Unchanged", |e| {
        matches!(e, ReloadEvent::Unchanged { .. })
    })
    .await;
    assert!(matches!(ev, ReloadEvent::Unchanged { version: 3 }), "{ev}");
    assert_eq!(exec.runtime().version(), 3);
    handle.stop();
}

/// Every way editors save, one after the other on the same watcher.
#[tokio::test]
async fn editor_save_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    write(&p, &policy(1));
    let (exec, handle, mut rx) = start(std::slice::from_ref(&p));

    // 1. Write in place (no truncation: same length, overwritten from the start).
    {
        use std::io::{Seek, Write};
        let text = policy(2);
        assert_eq!(text.len(), policy(1).len());
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.sync_all().unwrap();
    }
    wait_model(&mut rx, &exec, 2).await;

    // 2. Truncate, then write a moment later (within the debounce).
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        f.write_all(policy(3).as_bytes()).unwrap();
    }
    wait_model(&mut rx, &exec, 3).await;

    // 3. Write a temporary file and rename it over (vim, most IDEs, atomic writers).
    let tmp = dir.path().join(".policy.toml.tmp");
    write(&tmp, &policy(4));
    std::fs::rename(&tmp, &p).unwrap();
    wait_model(&mut rx, &exec, 4).await;

    // 4. Delete, then recreate (slowly enough to be seen as two changes).
    std::fs::remove_file(&p).unwrap();
    wait_for(&mut rx, "Missing", |e| {
        matches!(e, ReloadEvent::Missing { .. })
    })
    .await;
    assert_eq!(model_of(&exec), "m4", "a deleted file keeps the plan");
    write(&p, &policy(5));
    wait_model(&mut rx, &exec, 5).await;

    // 5. Delete and recreate at once (within the debounce).
    std::fs::remove_file(&p).unwrap();
    write(&p, &policy(6));
    wait_model(&mut rx, &exec, 6).await;
    handle.stop();
}

/// A watched directory removed and recreated, and `*.toml` files added to it later.
#[tokio::test]
async fn directory_removed_recreated_and_new_files() {
    let root = tempfile::tempdir().unwrap();
    let conf = root.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    write(&conf.join("a.toml"), &policy(1));
    let (exec, handle, mut rx) = start(std::slice::from_ref(&conf));

    // A new *.toml file in the directory counts (here: a second route).
    write(&conf.join("0-extra.toml"), EXTRA);
    let ev = wait_for(&mut rx, "route `extra` applied", |e| {
        e.is_applied() && exec.plan().route_by_name("extra").is_some()
    })
    .await;
    assert!(ev.to_string().contains("+extra"), "{ev}");
    // Other files do not.
    write(&conf.join("notes.txt"), "not a policy");

    // The directory removed: the plan is kept, with a warning.
    std::fs::remove_dir_all(&conf).unwrap();
    wait_for(&mut rx, "Missing", |e| {
        matches!(e, ReloadEvent::Missing { .. })
    })
    .await;
    assert!(exec.plan().route_by_name("extra").is_some());

    // ... and recreated with new content: watched again, and applied.
    std::fs::create_dir(&conf).unwrap();
    write(&conf.join("a.toml"), &policy(2));
    wait_model(&mut rx, &exec, 2).await;
    assert!(exec.plan().route_by_name("extra").is_none());

    // Edits after the recreation are seen too (the new directory is watched).
    write(&conf.join("a.toml"), &policy(3));
    wait_model(&mut rx, &exec, 3).await;
    handle.stop();
}

/// A Kubernetes ConfigMap update: `policy.toml -> ..data/policy.toml`, and the update points
/// `..data` at a new directory by renaming a new symlink over it. No event names the policy
/// file; the watcher sees that it now resolves elsewhere. Both a watched file and a watched
/// directory (holding the symlinked `*.toml`) follow the swap.
#[tokio::test]
async fn configmap_style_symlink_swap() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let d = root.path();
    let version = |n: u32| {
        let dir = d.join(format!("..2026_v{n}"));
        std::fs::create_dir(&dir).unwrap();
        write(&dir.join("policy.toml"), &policy(n));
        dir
    };
    let swap = |dir: &Path| {
        let tmp = d.join("..data_tmp");
        symlink(dir.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, d.join("..data")).unwrap();
    };
    symlink(version(1).file_name().unwrap(), d.join("..data")).unwrap();
    symlink("..data/policy.toml", d.join("policy.toml")).unwrap();

    for watched in [d.join("policy.toml"), d.to_path_buf()] {
        let (exec, handle, mut rx) = start(std::slice::from_ref(&watched));
        let n = model_of(&exec)[1..].parse::<u32>().unwrap();
        swap(&version(n + 1));
        wait_model(&mut rx, &exec, n + 1).await;
        swap(&version(n + 2));
        wait_model(&mut rx, &exec, n + 2).await;
        handle.stop();
    }
}

/// The parent directory of a watched *file* removed and recreated.
#[tokio::test]
async fn parent_of_a_file_removed_and_recreated() {
    let root = tempfile::tempdir().unwrap();
    let conf = root.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let p = conf.join("policy.toml");
    write(&p, &policy(1));
    let (exec, handle, mut rx) = start(std::slice::from_ref(&p));
    std::fs::remove_dir_all(&conf).unwrap();
    wait_for(&mut rx, "Missing", |e| {
        matches!(e, ReloadEvent::Missing { .. })
    })
    .await;
    std::fs::create_dir(&conf).unwrap();
    write(&p, &policy(2));
    wait_model(&mut rx, &exec, 2).await;
    write(&p, &policy(3));
    wait_model(&mut rx, &exec, 3).await;
    handle.stop();
}

#[tokio::test]
async fn two_hundred_rapid_writes_end_on_the_last_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    write(&p, &policy(1));
    let (exec, handle, mut rx) = start(std::slice::from_ref(&p));
    for n in 2..=201 {
        write(&p, &policy(n));
    }
    wait_model(&mut rx, &exec, 201).await;
    quiet(&mut rx, &exec, "m201").await;
    handle.stop();
}

#[tokio::test]
async fn deleted_file_keeps_the_plan_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    write(&a, &policy(1));
    write(&b, EXTRA);
    let (exec, handle, mut rx) = start(&[b.clone(), a.clone()]);
    std::fs::remove_file(&b).unwrap();
    let ev = wait_for(&mut rx, "Missing", |e| {
        matches!(e, ReloadEvent::Missing { .. })
    })
    .await;
    let ReloadEvent::Missing {
        version,
        paths,
        diagnostics,
    } = &ev
    else {
        unreachable!()
    };
    assert_eq!(*version, 1);
    assert_eq!(paths, std::slice::from_ref(&b));
    assert!(diagnostics.has_errors());
    assert!(ev.to_string().starts_with("missing: "), "{ev}");
    assert!(exec.plan().route_by_name("extra").is_some(), "plan kept");
    // reload_now says the same, and still keeps the plan.
    let again = handle.reload_now().await.unwrap();
    assert!(matches!(again, ReloadEvent::Missing { .. }), "{again}");
    assert_eq!(exec.runtime().version(), 1);
    handle.stop();
}

#[tokio::test]
async fn reload_now_rereads_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    write(&p, &policy(1));
    let timeout = Arc::new(Mutex::new(None::<String>));
    let env = timeout.clone();
    let source = PolicySource::new([p.clone()]).with_env_fn(move || {
        env.lock()
            .unwrap()
            .iter()
            .map(|v| ("TOLLGATE__DEFAULTS__TIMEOUTS__TOTAL".to_string(), v.clone()))
            .collect()
    });
    let exec = Executor::new(Plan::load(&source.load_options()).unwrap().plan).unwrap();
    let handle = reload::watch(source, &exec, ReloadConfig::default()).unwrap();
    *timeout.lock().unwrap() = Some("7s".into());
    let ev = tokio::time::timeout(WAIT, handle.reload_now())
        .await
        .expect("reload_now in time")
        .unwrap();
    assert!(ev.is_applied(), "{ev}");
    assert_eq!(exec.plan().routes[0].total_timeout, Duration::from_secs(7));
    let ev = handle.reload_now().await.unwrap();
    assert!(matches!(ev, ReloadEvent::Unchanged { .. }), "{ev}");
    handle.stop();
}

/// 10,000 requests on many tasks while the policy is rewritten 100 times: none fails, and
/// each is served by exactly one plan version, the one whose model it was sent to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_never_mix_plans_or_fail_requests() {
    const TASKS: usize = 32;
    const REQUESTS: u64 = 10_000;
    const REWRITES: u32 = 100;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    write(&p, &policy(1));
    let (exec, handle, mut rx) = start(std::slice::from_ref(&p));

    let writing = Arc::new(AtomicBool::new(true));
    let done = Arc::new(AtomicU64::new(0));
    // version -> model that served it: one model per version, whatever the task.
    let served_by: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (exec, writing, done, served_by) = (
            exec.clone(),
            writing.clone(),
            done.clone(),
            served_by.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while writing.load(SeqCst) || done.load(SeqCst) < REQUESTS {
                let r = exec
                    .execute(&Request::new().prompt("hi"), |t, _| {
                        // What the operation sees: its target's model and the plan it is in.
                        let seen = (
                            t.model_name().to_string(),
                            t.plan().models.len(),
                            &**t.plan() as *const PlanData as usize,
                        );
                        async move {
                            tokio::time::sleep(Duration::from_micros(200)).await;
                            Ok::<_, Failure>(Done::with_usage(seen, 1, 1))
                        }
                    })
                    .await;
                let s = match r {
                    Ok(s) => s,
                    Err(e) => panic!("a request failed during reloads: {e}"),
                };
                let (model, n_models, plan_ptr) = &s.value;
                assert_eq!(*n_models, 1);
                assert_eq!(
                    *plan_ptr, &*s.plan as *const PlanData as usize,
                    "the operation ran under the plan the request was served by"
                );
                assert_eq!(model, s.model_name());
                assert_eq!(model, &s.plan.models[0].name);
                let mut m = served_by.lock().unwrap();
                let prev = m.entry(s.plan_version).or_insert_with(|| model.clone());
                assert_eq!(prev, model, "plan v{} served by two models", s.plan_version);
                drop(m);
                done.fetch_add(1, SeqCst);
            }
        }));
    }
    for n in 2..=REWRITES + 1 {
        // Alternate save patterns; leave time for most rewrites to be applied one by one.
        if n % 2 == 0 {
            let tmp = dir.path().join("policy.toml.tmp");
            write(&tmp, &policy(n));
            std::fs::rename(&tmp, &p).unwrap();
        } else {
            write(&p, &policy(n));
        }
        tokio::time::sleep(DEBOUNCE + Duration::from_millis(15)).await;
    }
    wait_model(&mut rx, &exec, REWRITES + 1).await;
    writing.store(false, SeqCst);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("load tasks finish")
            .expect("no task panicked");
    }
    let versions = served_by.lock().unwrap();
    assert!(done.load(SeqCst) >= REQUESTS);
    assert!(
        versions.len() >= 10,
        "requests should have seen many plan versions, saw {}",
        versions.len()
    );
    // The version -> model map is consistent with the writes: later versions, later models.
    let mut by_version: Vec<(u64, u32)> = versions
        .iter()
        .map(|(v, m)| (*v, m[1..].parse::<u32>().unwrap()))
        .collect();
    by_version.sort();
    assert!(
        by_version.windows(2).all(|w| w[0].1 < w[1].1),
        "{by_version:?}"
    );
    drop(versions);
    assert_eq!(model_of(&exec), format!("m{}", REWRITES + 1));
    handle.stop();
}

// ---- state carried across reloads ----------------------------------------------------

fn stateful(extra: &str, breaker_failures: u32, rate: &str, budget_usd: f64) -> String {
    format!(
        r#"
[upstreams.up]
base_url = "http://127.0.0.1:1/v1"
breaker = "b"
limits = {{ {rate} }}
[models.m]
upstream = "up"
price = {{ input_per_mtok = 1000.0, output_per_mtok = 1000.0 }}
[breakers.b]
consecutive_failures = {breaker_failures}
open_for = "10m"
half_open = {{ probes = 1, successes_to_close = 1 }}
[budgets.spend]
limit_usd = {budget_usd}
window = "1d"
scope = {{ routes = ["main"] }}
[[routes]]
name = "main"
targets = ["m"]
{extra}
"#
    )
}

const UNRELATED: &str = "[upstreams.other]\nbase_url = \"http://127.0.0.1:1/other\"\n";

async fn fail_once(exec: &Executor) {
    let r = exec
        .execute(&Request::new().prompt("hi"), |_, _| async {
            Err::<Done<()>, _>(Failure::status(503))
        })
        .await;
    assert!(r.is_err());
}

async fn succeed(exec: &Executor) -> Result<(), tollgate::exec::ExecError> {
    // 200 output tokens reserved at $1000/Mtok: $0.2 (+ the prompt) before the call.
    exec.execute(&Request::new().prompt("hi").max_tokens(200), |_, _| async {
        Ok::<_, Failure>(Done::with_usage((), 100, 100))
    })
    .await
    .map(|_| ())
}

fn breaker_state(exec: &Executor) -> BreakerState {
    let rt = exec.runtime();
    let id = rt.plan().upstream_by_name("up").unwrap();
    let slot = rt.upstream(id).breaker.as_ref().unwrap();
    slot.breaker.state(exec.clock().now())
}

#[tokio::test]
async fn open_breaker_stays_open_across_edits() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    write(&p, &stateful("", 1, "requests_per_second = 100.0", 1000.0));
    let (exec, handle, mut rx) = start(std::slice::from_ref(&p));
    fail_once(&exec).await;
    assert!(matches!(breaker_state(&exec), BreakerState::Open));

    // An unrelated edit: the breaker is the same one, still open.
    write(
        &p,
        &stateful(UNRELATED, 1, "requests_per_second = 100.0", 1000.0),
    );
    wait_for(&mut rx, "Applied", |e| e.is_applied()).await;
    assert!(matches!(breaker_state(&exec), BreakerState::Open));
    let e = succeed(&exec).await.unwrap_err();
    assert!(
        e.skipped
            .iter()
            .any(|s| matches!(s.reason, SkipReason::BreakerOpen { .. })),
        "{e}"
    );

    // A limit of the same upstream changed: the breaker is still open.
    write(
        &p,
        &stateful(UNRELATED, 1, "requests_per_second = 50.0", 1000.0),
    );
    wait_for(&mut rx, "Applied", |e| e.is_applied()).await;
    assert!(matches!(breaker_state(&exec), BreakerState::Open));

    // The breaker's own threshold changed: handed over, still open.
    write(
        &p,
        &stateful(UNRELATED, 5, "requests_per_second = 50.0", 1000.0),
    );
    let ev = wait_for(&mut rx, "Applied", |e| e.is_applied()).await;
    assert!(ev.to_string().contains("breakers +0 ~1 -0 (~b)"), "{ev}");
    assert!(matches!(breaker_state(&exec), BreakerState::Open));
    handle.stop();
}

#[tokio::test]
async fn spent_budget_stays_spent() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    // 200 tokens at $1000/Mtok = $0.2 a call; a $0.3 budget allows one call.
    write(&p, &stateful("", 5, "requests_per_second = 100.0", 0.3));
    let (exec, handle, mut rx) = start(std::slice::from_ref(&p));
    let spent = |exec: &Executor| {
        let rt = exec.runtime();
        let id = rt.plan().budget_by_name("spend").unwrap();
        rt.budget(id).ledger.spent(exec.clock().now())
    };
    succeed(&exec).await.unwrap();
    let before = spent(&exec);
    assert!(before.as_dollars() > 0.1, "{before:?}");
    assert!(succeed(&exec).await.is_err(), "the budget is spent");

    // An unrelated edit: same spend, still refused.
    write(
        &p,
        &stateful(UNRELATED, 5, "requests_per_second = 100.0", 0.3),
    );
    wait_for(&mut rx, "Applied", |e| e.is_applied()).await;
    assert_eq!(spent(&exec), before);
    assert!(succeed(&exec).await.is_err(), "still spent after the edit");

    // The budget's limit raised: the spend is kept, so only the difference is available.
    write(
        &p,
        &stateful(UNRELATED, 5, "requests_per_second = 100.0", 0.5),
    );
    let ev = wait_for(&mut rx, "Applied", |e| e.is_applied()).await;
    assert!(ev.to_string().contains("~spend"), "{ev}");
    assert_eq!(spent(&exec), before);
    succeed(&exec).await.unwrap();
    assert!(succeed(&exec).await.is_err(), "0.2 + 0.2 of 0.5 spent");
    handle.stop();
}

#[tokio::test]
async fn changed_limit_applies_at_once_without_refilling() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    // One call per 100 s: the bucket does not visibly refill during the test.
    let limit = |burst: u32| format!("requests_per_second = 0.01, burst = {burst}");
    write(&p, &stateful("", 5, &limit(5), 1000.0));
    let (exec, handle, mut rx) = start(std::slice::from_ref(&p));
    let headroom = |exec: &Executor| {
        let rt = exec.runtime();
        let id = rt.plan().upstream_by_name("up").unwrap();
        rt.upstream(id)
            .rate
            .as_ref()
            .unwrap()
            .headroom(exec.clock().now())
    };
    for _ in 0..4 {
        succeed(&exec).await.unwrap();
    }
    assert_eq!(headroom(&exec), 1);

    // Burst raised to 10: 4 calls are still in the bucket, so 6 remain (not a fresh 10).
    write(&p, &stateful("", 5, &limit(10), 1000.0));
    let ev = wait_for(&mut rx, "Applied", |e| e.is_applied()).await;
    assert!(ev.to_string().contains("~up"), "{ev}");
    assert_eq!(headroom(&exec), 6);

    // Burst lowered to 3 (below what is in the bucket): nothing is admitted at once.
    write(&p, &stateful("", 5, &limit(3), 1000.0));
    wait_for(&mut rx, "Applied", |e| e.is_applied()).await;
    assert_eq!(headroom(&exec), 0);
    let e = succeed(&exec).await.unwrap_err();
    assert!(
        e.skipped
            .iter()
            .any(|s| matches!(s.reason, SkipReason::Limited(_))),
        "{e}"
    );

    // An unrelated edit keeps the very same bucket.
    write(&p, &stateful(UNRELATED, 5, &limit(3), 1000.0));
    wait_for(&mut rx, "Applied", |e| e.is_applied()).await;
    assert_eq!(headroom(&exec), 0);
    handle.stop();
}

#[test]
fn stop_closes_the_event_channel_and_reload_now_fails_after() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    write(&p, &policy(1));
    let (exec, handle, mut rx) = start(std::slice::from_ref(&p));
    let ev = handle.reload_now_blocking().unwrap();
    assert!(matches!(ev, ReloadEvent::Unchanged { version: 1 }), "{ev}");
    handle.stop();
    // The event of reload_now, then the channel closed.
    assert!(matches!(rx.try_recv(), Ok(ReloadEvent::Unchanged { .. })));
    assert!(matches!(
        rx.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Closed)
    ));
    // Later edits change nothing.
    write(&p, &policy(2));
    std::thread::sleep(DEBOUNCE * 4);
    assert_eq!(model_of(&exec), "m1");
}

#[tokio::test]
async fn a_plan_the_prepare_hook_refuses_keeps_the_running_plan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    write(&path, &policy(1));
    let paths = vec![path.clone()];
    let plan = Plan::load(&no_env(&paths)).unwrap().plan;
    let exec = Executor::new(plan).unwrap();
    // Like the relay's hook: refuse plans it cannot serve (here: any with model m2).
    let prepare: reload::Prepare = Arc::new(|plan: &Plan| match plan.model_by_name("m2") {
        Some(_) => Err("no HTTP client for m2 (its key is unset)".to_string()),
        None => Ok(()),
    });
    let handle = reload::watch_with(
        PolicySource::from(no_env(&paths)),
        &exec,
        ReloadConfig::default().debounce(DEBOUNCE),
        Some(prepare),
    )
    .unwrap();
    let mut rx = handle.subscribe();
    write(&path, &policy(2));
    let ev = wait_for(&mut rx, "a refusal", |ev| {
        matches!(ev, ReloadEvent::Error(reload::ReloadError::Refused(_)))
    })
    .await;
    assert!(ev.to_string().contains("key is unset"), "{ev}");
    assert_eq!(model_of(&exec), "m1", "the running plan stays");
    write(&path, &policy(3));
    wait_model(&mut rx, &exec, 3).await;
    handle.stop();
}
