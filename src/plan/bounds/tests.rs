use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::plan::{ClassSet, RetryOverride, DEFAULT_BACKOFF};
use crate::policy::LoadOptions;
use crate::spec::backoff::{BackoffKind, Jitter};

const S: fn(u64) -> Duration = Duration::from_secs;

fn plan(toml: &str) -> Plan {
    let opts = LoadOptions::from_text("policy.toml", toml).with_env(Vec::<(String, String)>::new());
    match Plan::load(&opts) {
        Ok(c) => c.plan,
        Err(d) => panic!("test policy does not compile:\n{}", d.render(false)),
    }
}

fn bounds(toml: &str) -> RouteBounds {
    let p = plan(toml);
    route_bounds(&p, RouteId(0), TokenCounts::default())
}

/// `n` upstreams `u0..`, each with a model `m0..`, priced $1/$2 per million tokens.
fn models(n: usize, upstream_extra: &str) -> String {
    let mut s = String::new();
    for i in 0..n {
        s += &format!(
            "[upstreams.u{i}]\nbase_url = \"https://u{i}.example\"\n{upstream_extra}\n\
             [models.m{i}]\nupstream = \"u{i}\"\nprice = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}\n"
        );
    }
    s
}

fn targets(n: usize) -> String {
    let t: Vec<String> = (0..n).map(|i| format!("\"m{i}\"")).collect();
    format!("[{}]", t.join(", "))
}

const NO_RA: &str = "retry_after = { honor = false }";

#[test]
fn a_hedge_on_a_one_target_route_adds_nothing() {
    let b = bounds(&format!(
        "{}[retry.r]\nmax_attempts = 2\n{NO_RA}\nbackoff = {{ kind = \"constant\", base = \"1s\", max = \"1s\" }}\n\
         [[routes]]\nname = \"r\"\ntargets = [\"m0\"]\nretry = \"r\"\nhedge = {{ after = \"1s\", max_extra = 3 }}\n\
         timeouts = {{ per_try = \"5s\", total = \"1m\" }}\n",
        models(1, "")
    ));
    assert_eq!((b.attempts, b.hedges), (2, 0));
    // 2 attempts of 5s and one backoff of 1s; no hedge race.
    assert_eq!(b.schedule, S(11));
    assert_eq!(b.worst_cost_usd, Some(2.0 * 0.002));
}

#[test]
fn hedges_are_capped_by_the_other_targets() {
    let b = bounds(&format!(
        "{}[[routes]]\nname = \"r\"\ntargets = {}\nhedge = {{ after = \"1s\", max_extra = 5 }}\n\
         timeouts = {{ per_try = \"5s\", total = \"1m\" }}\n",
        models(3, ""),
        targets(3)
    ));
    // One attempt per target (no retry policy) and two hedges, launched 1s apart.
    assert_eq!((b.attempts, b.hedges), (5, 2));
    assert_eq!(b.schedule, S(3 * 5 + 2));
}

#[test]
fn limiter_waits_are_counted_for_every_attempt_and_hedge() {
    let limits = "limits = { concurrency = 2, requests_per_second = 5, on_limit = \"wait\", queue_timeout = \"2s\" }";
    let b = bounds(&format!(
        "{}[retry.r]\nmax_attempts = 3\n{NO_RA}\n[[routes]]\nname = \"r\"\ntargets = {}\nretry = \"r\"\n\
         hedge = {{ after = \"1s\" }}\ntimeouts = {{ per_try = \"5s\", total = \"10m\" }}\n",
        models(2, limits),
        targets(2)
    ));
    // Each admission: up to 2s in all for the concurrency permit and the rate limiter.
    // 3 attempts on each of 2 targets, and 1 hedge.
    assert_eq!(b.queueing, S(2 * (6 + 1)));
    assert_eq!(b.unbounded_latency, b.schedule + b.queueing);
    // With `fail` nothing waits.
    let b = bounds(&format!(
        "{}[[routes]]\nname = \"r\"\ntargets = [\"m0\"]\n",
        models(1, "limits = { concurrency = 2 }")
    ));
    assert_eq!(b.queueing, Duration::ZERO);
}

#[test]
fn retry_after_waits_count_up_to_their_cap() {
    let b = bounds(&format!(
        "{}[retry.r]\nmax_attempts = 3\nretry_after = {{ max = \"5s\" }}\n\
         backoff = {{ kind = \"constant\", base = \"1s\", max = \"1s\", jitter = \"none\" }}\n\
         [[routes]]\nname = \"r\"\ntargets = [\"m0\"]\nretry = \"r\"\ntimeouts = {{ per_try = \"2s\", total = \"1h\" }}\n",
        models(1, "")
    ));
    assert_eq!(b.schedule, S(3 * 2 + 2));
    // Each of the 2 retries waits max(1s, 5s): 4s more than its backoff.
    assert_eq!(b.retry_after, S(8));
    assert_eq!(b.latency, S(16));
}

#[test]
fn per_class_overrides_bound_each_retry_by_the_classes_still_retried() {
    // 5xx: 2 attempts with a 10s backoff; everything else: 4 attempts with 1s. Retry 1 may
    // wait 10s (a 5xx), retries 2 and 3 only 1s (no 5xx is retried that often).
    let b = bounds(&format!(
        "{}[retry.r]\nmax_attempts = 4\n{NO_RA}\n\
         backoff = {{ kind = \"constant\", base = \"1s\", max = \"1s\" }}\n\
         [retry.r.on.5xx]\nmax_attempts = 2\nbackoff = {{ kind = \"constant\", base = \"10s\", max = \"10s\" }}\n\
         [[routes]]\nname = \"r\"\ntargets = [\"m0\"]\nretry = \"r\"\ntimeouts = {{ per_try = \"1s\", total = \"1h\" }}\n",
        models(1, "")
    ));
    assert_eq!(b.attempts, 4);
    assert_eq!(b.schedule, S(4 + 10 + 1 + 1));
    // An override allowing more attempts raises the count.
    let b = bounds(&format!(
        "{}[retry.r]\nmax_attempts = 2\n{NO_RA}\n[retry.r.on.429]\nmax_attempts = 6\n\
         [[routes]]\nname = \"r\"\ntargets = [\"m0\"]\nretry = \"r\"\n",
        models(1, "")
    ));
    assert_eq!(b.attempts, 6);
}

#[test]
fn no_retry_class_means_one_attempt_per_target() {
    let b = bounds(&format!(
        "{}[retry.r]\nmax_attempts = 5\nretry_on = []\n[[routes]]\nname = \"r\"\ntargets = {}\nretry = \"r\"\n",
        models(2, ""),
        targets(2)
    ));
    assert_eq!(b.attempts, 2);
}

#[test]
fn the_deadline_cuts_the_latency() {
    let limits = "limits = { concurrency = 1, on_limit = \"wait\", queue_timeout = \"3s\" }";
    let b = bounds(&format!(
        "{}[retry.r]\nmax_attempts = 10\n[[routes]]\nname = \"r\"\ntargets = [\"m0\"]\nretry = \"r\"\n\
         timeouts = {{ per_try = \"5s\", total = \"20s\" }}\n",
        models(1, limits)
    ));
    assert!(b.unbounded_latency > S(20));
    assert_eq!(
        b.latency,
        S(20),
        "queueing is the request's time too: nothing past the deadline"
    );
}

#[test]
fn extreme_values_saturate() {
    let max = "18446744073709551615ms";
    let limits = format!("limits = {{ concurrency = 4294967295, requests_per_second = 1e9, tokens_per_minute = 1e18, burst = 4294967295, on_limit = \"wait\", queue_timeout = \"{max}\" }}");
    let b = bounds(&format!(
        "{}[retry.r]\nmax_attempts = 1000\nretry_after = {{ max = \"{max}\" }}\n\
         backoff = {{ base = \"{max}\", max = \"{max}\", factor = 1e300 }}\n\
         [[routes]]\nname = \"r\"\ntargets = {}\nretry = \"r\"\nhedge = {{ after = \"{max}\", max_extra = 4294967295 }}\n\
         timeouts = {{ per_try = \"{max}\", total = \"{max}\", connect = \"{max}\" }}\n",
        models(3, &limits),
        targets(3)
    ));
    assert_eq!(b.attempts, 3 * 1000 + 2);
    assert_eq!(b.unbounded_latency, Duration::MAX);
    assert!(b.latency >= Duration::from_millis(u64::MAX));
}

fn retry_policy(max_attempts: u32, backoff: BackoffConfig) -> RetryPolicy {
    RetryPolicy {
        name: "r".into(),
        max_attempts,
        backoff,
        retry_on: ClassSet::builtin(&["5xx"]),
        retry_after_honor: true,
        retry_after_max: S(60),
        budget: None,
        overrides: Vec::new(),
    }
}

#[test]
fn the_schedule_is_computed_in_constant_work_whatever_max_attempts() {
    // Four billion retries: summed in closed form (this returns at once), saturating.
    let slow = BackoffConfig {
        kind: BackoffKind::Exponential,
        base: Duration::from_millis(1),
        factor: 1.000_001,
        max: S(10),
        jitter: Jitter::None,
    };
    let w = retry_waits(&retry_policy(u32::MAX, slow), u32::MAX);
    // Every retry waits at most 10s (backoff) or 60s (Retry-After): 60s each.
    let n = u32::MAX - 1;
    assert!(w.backoff <= S(10).saturating_mul(n));
    assert_eq!(w.backoff + w.retry_after, S(60).saturating_mul(n));
    let w = retry_waits(&retry_policy(u32::MAX, DEFAULT_BACKOFF), u32::MAX);
    // The default backoff reaches its 10s cap within the exact part: the sum is exact.
    let exact: Duration = (1..=EXACT_RETRIES)
        .map(|k| DEFAULT_BACKOFF.worst_case(k))
        .sum();
    assert_eq!(w.backoff, exact + S(10) * (n - EXACT_RETRIES));
}

#[test]
fn the_tail_estimate_is_exact_once_the_cap_is_reached_and_an_upper_bound_before() {
    let slow = BackoffConfig {
        kind: BackoffKind::Exponential,
        base: Duration::from_millis(1),
        factor: 1.1,
        max: S(3600),
        jitter: Jitter::None,
    };
    for attempts in [2, 10, 64, 65, 66, 200, 1000] {
        let w = retry_waits(&retry_policy(attempts, slow), attempts);
        let exact: Duration = (1..attempts).map(|k| slow.worst_case(k)).sum();
        assert!(
            w.backoff >= exact,
            "{attempts}: {:?} < {exact:?}",
            w.backoff
        );
        if attempts <= EXACT_RETRIES + 1 {
            assert_eq!(w.backoff, exact, "{attempts}");
        }
    }
}

fn backoff_strategy() -> impl Strategy<Value = BackoffConfig> {
    (
        prop_oneof![
            Just(BackoffKind::Exponential),
            Just(BackoffKind::Constant),
            Just(BackoffKind::Decorrelated)
        ],
        0u64..5_000,
        1.0f64..4.0,
        0u64..100_000,
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            (0.01f64..1.0).prop_map(Jitter::Proportional)
        ],
    )
        .prop_map(|(kind, base, factor, extra, jitter)| BackoffConfig {
            kind,
            base: Duration::from_millis(base),
            factor,
            max: Duration::from_millis(base + extra),
            jitter,
        })
}

proptest! {
    /// The closed form is an upper bound of the retry-by-retry sum, and equal to it as long
    /// as every retry is summed exactly.
    #[test]
    fn retry_waits_bound_the_exact_sum(
        backoff in backoff_strategy(),
        over in proptest::option::of((backoff_strategy(), 1u32..300)),
        attempts in 1u32..300,
        honor in any::<bool>(),
        ra_max in 0u64..120_000,
    ) {
        let mut r = retry_policy(attempts, backoff);
        r.retry_after_honor = honor;
        r.retry_after_max = Duration::from_millis(ra_max);
        if let Some((b, n)) = over {
            r.overrides.push(RetryOverride {
                class: "429".parse().unwrap(),
                max_attempts: Some(n),
                backoff: Some(b),
            });
        }
        let a = attempts_per_target(&r);
        let w = retry_waits(&r, a);
        let mut exact = Duration::ZERO;
        let mut exact_ra = Duration::ZERO;
        for k in 1..a {
            let d = std::iter::once((r.max_attempts, &r.backoff))
                .chain(r.overrides.iter().map(|o| (o.max_attempts.unwrap(), o.backoff.as_ref().unwrap())))
                .filter(|(m, _)| k < *m)
                .map(|(_, b)| b.worst_case(k))
                .max()
                .unwrap();
            exact += d;
            exact_ra += if honor { d.max(r.retry_after_max) } else { d };
        }
        prop_assert!(w.backoff >= exact);
        prop_assert!(w.backoff + w.retry_after >= exact_ra);
        if a <= EXACT_RETRIES + 1 {
            prop_assert_eq!(w.backoff, exact);
            prop_assert_eq!(w.backoff + w.retry_after, exact_ra);
        }
    }

    /// More attempts, longer timeouts, longer waits never lower a bound; the latency never
    /// exceeds the deadline, nor the unbounded latency.
    #[test]
    fn route_bounds_are_monotone_and_consistent(
        attempts in 1u32..20,
        more_attempts in 0u32..20,
        per_try in 1u64..60,
        total in 1u64..600,
        queue in 0u64..5,
        n in 1usize..4,
        hedge in any::<bool>(),
        wait in any::<bool>(),
    ) {
        let policy = |attempts: u32, per_try: u64, queue: u64| {
            let limits = format!(
                "limits = {{ concurrency = 3, on_limit = \"{}\", queue_timeout = \"{}ms\" }}",
                if wait { "wait" } else { "fail" }, queue * 1000 + 1
            );
            format!(
                "{}[retry.r]\nmax_attempts = {attempts}\n[[routes]]\nname = \"r\"\ntargets = {}\nretry = \"r\"\n{}\
                 timeouts = {{ per_try = \"{per_try}s\", total = \"{total}s\" }}\n",
                models(n, &limits),
                targets(n),
                if hedge { "hedge = { after = \"1s\", max_extra = 2 }\n" } else { "" },
            )
        };
        let base = bounds(&policy(attempts, per_try, queue));
        let b = &base;
        prop_assert!(b.latency <= b.unbounded_latency);
        prop_assert!(b.latency <= S(total));
        prop_assert_eq!(b.unbounded_latency, b.schedule + b.retry_after + b.queueing);
        prop_assert!(b.hedges < n as u32 || n == 1 && b.hedges == 0);
        prop_assert_eq!(b.attempts, attempts * n as u32 + b.hedges);
        for bigger in [
            bounds(&policy(attempts + more_attempts, per_try, queue)),
            bounds(&policy(attempts, per_try + 1, queue)),
            bounds(&policy(attempts, per_try, queue + 1)),
        ] {
            prop_assert!(bigger.attempts >= base.attempts);
            prop_assert!(bigger.unbounded_latency >= base.unbounded_latency);
            prop_assert!(bigger.latency >= base.latency);
            prop_assert!(bigger.schedule >= base.schedule);
        }
    }
}

/// Runs `n` concurrent requests on route 0 of `p` whose every attempt takes its whole
/// timeout, then fails with a 503 asking to retry after `retry_after`; returns each
/// request's attempts and elapsed (paused) time.
async fn worst_runs(p: &Plan, n: usize, retry_after: Duration) -> Vec<(u32, Duration)> {
    use crate::exec::{Executor, Failure, Request};
    let exec = Executor::builder(p.clone()).seed(7).build().unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let exec = exec.clone();
        set.spawn(async move {
            let start = tokio::time::Instant::now();
            let r = exec
                .execute(&Request::new().prompt("x"), |t, _| async move {
                    tokio::time::sleep(t.timeout()).await;
                    Err::<crate::exec::Done<()>, _>(Failure::status(503).retry_after(retry_after))
                })
                .await;
            let attempts = match r {
                Ok(s) => s.attempts,
                Err(e) => e.attempts.len() as u32,
            };
            (attempts, start.elapsed())
        });
    }
    set.join_all().await
}

fn assert_within(b: &RouteBounds, runs: &[(u32, Duration)]) {
    let tick = Duration::from_millis(1);
    for &(attempts, elapsed) in runs {
        assert!(attempts <= b.attempts, "{attempts} attempts > {b:?}");
        assert!(elapsed <= b.latency + tick, "{elapsed:?} > {b:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_executor_stays_within_the_bounds_with_hedges_and_retry_after() {
    let p = plan(&format!(
        "{}[retry.r]\nmax_attempts = 3\nretry_after = {{ max = \"2s\" }}\n\
         backoff = {{ kind = \"constant\", base = \"100ms\", max = \"100ms\" }}\n\
         [[routes]]\nname = \"r\"\ntargets = {}\nretry = \"r\"\nhedge = {{ after = \"100ms\", max_extra = 2 }}\n\
         timeouts = {{ per_try = \"1s\", total = \"1m\" }}\n",
        models(3, ""),
        targets(3)
    ));
    let b = route_bounds(&p, RouteId(0), TokenCounts::default());
    // The deadline does not cut: the figure is the sum itself.
    assert!(b.unbounded_latency < S(60), "{b:?}");
    let runs = worst_runs(&p, 1, S(2)).await;
    assert_within(&b, &runs);
    // Every attempt was made (9 and 2 hedges), every retry waited the full Retry-After.
    assert_eq!(runs[0].0, b.attempts);
}

#[tokio::test(start_paused = true)]
async fn the_executor_stays_within_the_bounds_while_queueing() {
    let limits = "limits = { concurrency = 1, on_limit = \"wait\", queue_timeout = \"700ms\" }";
    let p = plan(&format!(
        "{}[retry.r]\nmax_attempts = 2\nretry_after = {{ honor = false }}\n\
         backoff = {{ kind = \"constant\", base = \"50ms\", max = \"50ms\" }}\n\
         [[routes]]\nname = \"r\"\ntargets = [\"m0\"]\nretry = \"r\"\n\
         timeouts = {{ per_try = \"1s\", total = \"3s\" }}\n",
        models(1, limits),
    ));
    let b = route_bounds(&p, RouteId(0), TokenCounts::default());
    assert_eq!(b.queueing, Duration::from_millis(2 * 700));
    let runs = worst_runs(&p, 4, Duration::ZERO).await;
    assert_within(&b, &runs);
}

/// A request admitted after queueing ends by its deadline: the attempt gets what is left of
/// it after the wait (it ran to 2 s for a total of 1.5 s when timed from before the wait).
#[tokio::test(start_paused = true)]
async fn an_attempt_admitted_after_queueing_ends_by_the_deadline() {
    let limits = "limits = { concurrency = 1, on_limit = \"wait\", queue_timeout = \"1s\" }";
    let p = plan(&format!(
        "{}[[routes]]\nname = \"r\"\ntargets = [\"m0\"]\n\
         timeouts = {{ per_try = \"1s\", total = \"1500ms\" }}\n",
        models(1, limits),
    ));
    let b = route_bounds(&p, RouteId(0), TokenCounts::default());
    assert_eq!(b.latency, Duration::from_millis(1500));
    let runs = worst_runs(&p, 2, Duration::ZERO).await;
    assert_within(&b, &runs);
}

/// Under contention a token wait that finds the refill taken waits again: every wait of one
/// admission comes out of one queue timeout, so the request still ends within the bound
/// (one request took 60 s against a bound of 41 s when each wait had a queue timeout of
/// its own).
#[tokio::test(start_paused = true)]
async fn repeated_token_waits_stay_within_the_bound() {
    use crate::exec::{Done, Executor, Request};
    let limits =
        "limits = { tokens_per_minute = 60, on_limit = \"wait\", queue_timeout = \"40s\" }";
    let p = plan(&format!(
        "{}[[routes]]\nname = \"r\"\ntargets = [\"m0\"]\ntimeouts = {{ per_try = \"1s\", total = \"45s\" }}\n",
        models(1, limits),
    ));
    let b = route_bounds(&p, RouteId(0), TokenCounts::default());
    let exec = Executor::builder(p.clone()).seed(1).build().unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let exec = exec.clone();
        set.spawn(async move {
            let start = tokio::time::Instant::now();
            let req = Request::new().input_tokens(0).max_tokens(30);
            let _ = exec
                .execute(&req, |_, _| async {
                    Ok::<_, crate::exec::Failure>(Done::new(()))
                })
                .await;
            start.elapsed()
        });
    }
    let tick = Duration::from_millis(1);
    for elapsed in set.join_all().await {
        assert!(elapsed <= b.latency + tick, "{elapsed:?} > {:?}", b.latency);
    }
}
