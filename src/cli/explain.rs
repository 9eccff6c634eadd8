//! `tollgate explain`: the resolved plan, every default filled in, and each route's static
//! bounds, as tables or one JSON document (its shape: `docs/explain.md`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{color, out, ExplainFormat};
use crate::exec::backoff::{BackoffKind, Jitter};
use crate::plan::{
    route_bounds, Backoff, BreakerPolicy, OnExceed, Plan, RetryPolicy, Route, RouteBounds, RouteId,
    TokenCounts, Upstream,
};
use crate::policy::{load, Duration, LoadOptions};
use crate::spec::limit::OnLimit;

/// Loads, compiles and explains `paths`.
pub fn run(paths: &[PathBuf], tokens: TokenCounts, format: ExplainFormat) -> ExitCode {
    let loaded = load(&LoadOptions::new(paths.iter().cloned()));
    let io_failed = loaded.io_failed();
    if format == ExplainFormat::Json {
        // `valid`, then `tollgate check --format json`'s keys (`errors`, `warnings`,
        // `diagnostics`), then the plan's (only when it compiled).
        let (ok, diags, mut doc) = match crate::plan::compile(loaded) {
            Ok(c) => (true, c.warnings.to_json(), explain_json(&c.plan, tokens)),
            Err(d) => (false, d.to_json(), serde_json::json!({})),
        };
        doc["valid"] = ok.into();
        if let serde_json::Value::Object(m) = diags {
            for (k, v) in m {
                doc[k] = v;
            }
        }
        // Serializing a `serde_json::Value` cannot fail.
        out!(
            "{}\n",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
        return if ok {
            ExitCode::SUCCESS
        } else {
            super::failed_exit(io_failed)
        };
    }
    match crate::plan::compile(loaded) {
        Ok(c) => {
            out!("{}", explain(&c.plan, tokens));
            if !c.warnings.items.is_empty() {
                out!("\n{}", c.warnings.render(color()));
            }
            ExitCode::SUCCESS
        }
        Err(d) => {
            out!("{}", d.render(color()));
            super::failed_exit(io_failed)
        }
    }
}

fn d(x: std::time::Duration) -> String {
    Duration::new(x).to_string()
}

fn usd(x: f64) -> String {
    if x >= 1.0 {
        format!("${x:.2}")
    } else {
        format!("${x:.5}")
    }
}

/// A plain text table, columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn ms(x: std::time::Duration) -> f64 {
    x.as_secs_f64() * 1000.0
}

/// A serde enum's name as written in policies (`"wait"`, `"shared"`, `"open"`).
fn word<T: serde::Serialize>(x: &T) -> String {
    serde_json::to_value(x)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn kind_word(k: BackoffKind) -> &'static str {
    match k {
        BackoffKind::Exponential => "exponential",
        BackoffKind::Constant => "constant",
        BackoffKind::Decorrelated => "decorrelated",
    }
}

fn jitter_word(j: Jitter) -> (&'static str, Option<f64>) {
    match j {
        Jitter::None => ("none", None),
        Jitter::Full => ("full", None),
        Jitter::Equal => ("equal", None),
        Jitter::Proportional(r) => ("proportional", Some(r)),
    }
}

fn backoff_text(b: &Backoff) -> String {
    let (jitter, ratio) = jitter_word(b.jitter);
    let jitter = ratio.map_or(jitter.to_string(), |r| format!("{jitter} {r}"));
    match b.kind {
        BackoffKind::Exponential => format!(
            "exponential from {} ×{} up to {}, {jitter} jitter",
            d(b.base),
            b.factor,
            d(b.max)
        ),
        BackoffKind::Constant => format!("constant {}, {jitter} jitter", d(b.base.min(b.max))),
        BackoffKind::Decorrelated => {
            format!("decorrelated from {} up to {}", d(b.base), d(b.max))
        }
    }
}

fn backoff_json(b: &Backoff) -> serde_json::Value {
    let (jitter, ratio) = jitter_word(b.jitter);
    serde_json::json!({
        "kind": kind_word(b.kind),
        "base_ms": ms(b.base),
        "factor": b.factor,
        "max_ms": ms(b.max),
        "jitter": jitter,
        "jitter_ratio": ratio,
    })
}

fn classes(c: &crate::plan::ClassSet) -> Vec<String> {
    c.0.iter().map(|m| m.to_string()).collect()
}

fn or_dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

fn breaker_name(plan: &Plan, b: Option<crate::plan::BreakerId>) -> Option<String> {
    b.map(|b| plan.breakers[b.index()].name.clone())
}

/// The rules that open a breaker, one phrase each.
fn opens_on(b: &BreakerPolicy) -> String {
    let c = &b.config;
    let mut rules = Vec::new();
    if let Some(n) = c.consecutive_failures {
        rules.push(format!("{n} failures in a row"));
    }
    if let Some(r) = c.failure_rate {
        rules.push(format!(
            "failure rate ≥ {} of ≥ {} calls in {}",
            r.threshold,
            r.min_calls,
            d(r.window)
        ));
    }
    if let Some(s) = c.slow_call {
        rules.push(format!(
            "≥ {} of ≥ {} calls slower than {} in {}",
            s.rate_threshold,
            s.min_calls,
            d(s.over),
            d(s.window)
        ));
    }
    if rules.is_empty() {
        "never".into()
    } else {
        rules.join("; ")
    }
}

fn limits_text(u: &Upstream) -> String {
    let l = &u.limits;
    let mut limits = Vec::new();
    if let Some(r) = l.rate {
        limits.push(format!("{:.4}/s burst {}", r.per_second, r.burst));
    }
    if let Some(t) = l.tokens_per_minute {
        limits.push(format!("{t} tok/min"));
    }
    if let Some(c) = l.concurrency {
        limits.push(format!("{c} in flight"));
    }
    if limits.is_empty() {
        return "-".into();
    }
    let on_limit = match l.on_limit {
        OnLimit::Wait { queue_timeout } => format!("wait ≤ {}", d(queue_timeout)),
        OnLimit::Fail => "fail".into(),
    };
    format!("{} ({on_limit}, {})", limits.join(", "), word(&l.state))
}

/// The explanation of a plan as one JSON document (durations in milliseconds, costs in
/// USD). Keys are stable and documented in `docs/explain.md`: CI can gate on
/// `routes[].bounds.worst_cost_usd` or `routes[].bounds.worst_latency_ms`.
pub fn explain_json(plan: &Plan, tokens: TokenCounts) -> serde_json::Value {
    serde_json::json!({
        "tokens": { "input": tokens.input, "output": tokens.output },
        "upstreams": plan.upstreams.iter().map(|u| upstream_json(plan, u)).collect::<Vec<_>>(),
        "models": models_json(plan),
        "retry": plan.retries.iter().map(retry_json).collect::<Vec<_>>(),
        "breakers": plan.breakers.iter().map(breaker_json).collect::<Vec<_>>(),
        "routes": plan.routes.iter().enumerate().map(|(i, r)| {
            route_json(plan, r, &route_bounds(plan, RouteId(i as u32), tokens))
        }).collect::<Vec<_>>(),
        "budgets": budgets_json(plan),
        "callers": plan.callers.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "state": { "redis": plan.redis.as_ref().map(|r| serde_json::json!({
            "url_env": r.url_env,
            "key_prefix": r.key_prefix,
            "timeout_ms": ms(r.timeout),
            "pool_size": r.pool_size,
            "fail_mode": word(&r.fail_mode),
            "expected_instances": r.expected_instances,
            "lease": r.lease,
            "breaker_poll_ms": ms(r.breaker_poll),
        })) },
    })
}

fn upstream_json(plan: &Plan, u: &Upstream) -> serde_json::Value {
    let l = &u.limits;
    serde_json::json!({
        "name": u.name,
        "base_url": u.base_url,
        "key_env": u.api_keys.first().map(|k| k.env.clone()),
        "key_prefixes": u.api_keys.first().map(|k| k.prefixes.clone()),
        "keys": u.api_keys.iter().map(|k| serde_json::json!({ "env": k.env, "prefixes": k.prefixes })).collect::<Vec<_>>(),
        "pool": {
            "max_connections": u.max_connections,
            "max_idle": u.max_idle,
            "idle_timeout_ms": ms(u.idle_timeout),
        },
        "limits": {
            "requests_per_second": l.rate.map(|r| r.per_second),
            "burst": l.rate.map(|r| r.burst),
            "tokens_per_minute": l.tokens_per_minute,
            "concurrency": l.concurrency,
            "on_limit": match l.on_limit {
                OnLimit::Fail => "fail",
                OnLimit::Wait { .. } => "wait",
            },
            "queue_timeout_ms": ms(match l.on_limit {
                OnLimit::Fail => std::time::Duration::ZERO,
                OnLimit::Wait { queue_timeout } => queue_timeout,
            }),
            "state": word(&l.state),
        },
        "rate_limit_headers": u.rate_limit_headers,
        "breaker": breaker_name(plan, u.breaker),
        "timeouts_ms": {
            "connect": ms(u.timeouts.connect),
            "per_try": ms(u.timeouts.per_try),
            "total": ms(u.timeouts.total),
        },
    })
}

fn models_json(plan: &Plan) -> Vec<serde_json::Value> {
    plan.models
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "upstream": plan.upstream(m.upstream).name,
                "upstream_model": m.upstream_model,
                "price_per_mtok": m.price.map(|p| serde_json::json!({
                    "input": p.input_per_mtok,
                    "output": p.output_per_mtok,
                })),
                "context_window": m.context_window,
                "breaker": breaker_name(plan, m.breaker),
            })
        })
        .collect()
}

fn retry_json(r: &RetryPolicy) -> serde_json::Value {
    serde_json::json!({
        "name": r.name,
        "max_attempts": r.max_attempts,
        "backoff": backoff_json(&r.backoff),
        "retry_on": classes(&r.retry_on),
        "retry_after": { "honor": r.retry_after_honor, "max_ms": ms(r.retry_after_max) },
        "budget": r.budget.map(|b| serde_json::json!({
            "ratio": b.ratio,
            "min_per_second": b.min_per_second,
            "ttl_ms": ms(b.ttl),
        })),
        "on": r.overrides.iter().map(|o| serde_json::json!({
            "class": o.class.to_string(),
            "max_attempts": o.max_attempts.unwrap_or(r.max_attempts),
            "backoff": backoff_json(o.backoff.as_ref().unwrap_or(&r.backoff)),
        })).collect::<Vec<_>>(),
    })
}

fn breaker_json(b: &BreakerPolicy) -> serde_json::Value {
    let c = &b.config;
    serde_json::json!({
        "name": b.name,
        "consecutive_failures": c.consecutive_failures,
        "failure_rate": c.failure_rate.map(|r| serde_json::json!({
            "threshold": r.threshold,
            "min_calls": r.min_calls,
            "window_ms": ms(r.window),
        })),
        "slow_call": c.slow_call.map(|s| serde_json::json!({
            "over_ms": ms(s.over),
            "rate_threshold": s.rate_threshold,
            "min_calls": s.min_calls,
            "window_ms": ms(s.window),
        })),
        "open_for_ms": ms(c.open_for),
        "half_open": { "probes": c.probes, "successes_to_close": c.successes_to_close },
        "trip_on": classes(&b.trip_on),
        "state": word(&b.state),
    })
}

fn route_json(plan: &Plan, r: &Route, b: &RouteBounds) -> serde_json::Value {
    serde_json::json!({
        "name": r.name,
        "when": r.when.as_ref().map(|w| w.to_string()),
        "strategy": r.strategy.to_string(),
        "targets": r.targets.iter().map(|t| plan.model(t.model).name.clone()).collect::<Vec<_>>(),
        "target_details": r.targets.iter().map(|t| serde_json::json!({
            "model": plan.model(t.model).name,
            "weight": t.weight,
            "timeouts_ms": {
                "connect": ms(t.timeouts.connect),
                "per_try": ms(t.timeouts.per_try),
                "total": ms(r.total_timeout),
            },
        })).collect::<Vec<_>>(),
        "retry": plan.retry(r.retry).name,
        "breaker": breaker_name(plan, r.breaker),
        "failover_on": classes(&r.failover_on),
        "hedge": r.hedge.map(|h| serde_json::json!({
            "after_ms": ms(h.after),
            "max_extra": h.max_extra,
        })),
        "streaming": r.streaming.map(|s| serde_json::json!({
            "first_byte_ms": s.first_byte.map(ms),
            "idle_chunk_ms": s.idle_chunk.map(ms),
        })),
        "total_timeout_ms": ms(r.total_timeout),
        "budgets": r.budgets.iter().map(|b| plan.budgets[b.index()].name.clone()).collect::<Vec<_>>(),
        "bounds": {
            "max_attempts": b.attempts,
            "hedges": b.hedges,
            "worst_latency_ms": ms(b.latency),
            "unbounded_latency_ms": ms(b.unbounded_latency),
            "schedule_ms": ms(b.schedule),
            "retry_after_ms": ms(b.retry_after),
            "queueing_ms": ms(b.queueing),
            "cost_if_ok_usd": b.success_cost_usd.map(|(lo, hi)| serde_json::json!({ "min": lo, "max": hi })),
            "worst_cost_usd": b.worst_cost_usd,
        },
    })
}

fn budgets_json(plan: &Plan) -> Vec<serde_json::Value> {
    plan.budgets
        .iter()
        .map(|b| {
            serde_json::json!({
                "name": b.name,
                "limit_usd": b.limit_usd,
                "window_ms": ms(b.window),
                "scope": {
                    "routes": b.scope.routes.iter().map(|r| plan.route(*r).name.clone()).collect::<Vec<_>>(),
                    "models": b.scope.models.iter().map(|m| plan.model(*m).name.clone()).collect::<Vec<_>>(),
                    "upstreams": b.scope.upstreams.iter().map(|u| plan.upstream(*u).name.clone()).collect::<Vec<_>>(),
                    "keys": b.scope.keys,
                },
                "on_exceed": match b.on_exceed {
                    OnExceed::Reject => serde_json::json!("reject"),
                    OnExceed::Reroute(r) => serde_json::json!({ "reroute": plan.route(r).name }),
                },
                "state": word(&b.state),
            })
        })
        .collect()
}

/// The explanation of a plan as text: one table per section.
pub fn explain(plan: &Plan, tokens: TokenCounts) -> String {
    let mut out = String::new();
    upstreams_text(plan, &mut out);
    models_text(plan, &mut out);
    retry_text(plan, &mut out);
    breakers_text(plan, &mut out);
    routes_text(plan, &mut out);
    bounds_text(plan, tokens, &mut out);
    budgets_text(plan, &mut out);
    if !plan.callers.is_empty() {
        let names: Vec<&str> = plan.callers.iter().map(|c| c.name.as_str()).collect();
        let _ = writeln!(out, "\nCallers: {}", names.join(", "));
    }
    if let Some(r) = &plan.redis {
        let _ = writeln!(
            out,
            "\nShared state: Redis from ${}, keys `{}…`, timeout {}, pool {}, fail {}, {} instance(s), lease {}, breaker poll {}",
            r.url_env,
            r.key_prefix,
            d(r.timeout),
            r.pool_size,
            word(&r.fail_mode),
            r.expected_instances,
            r.lease,
            d(r.breaker_poll)
        );
    }
    out
}

fn section(out: &mut String, title: &str, header: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "{}{title}\n", if out.is_empty() { "" } else { "\n" });
    out.push_str(&table(header, rows));
}

fn upstreams_text(plan: &Plan, out: &mut String) {
    let rows: Vec<Vec<String>> = plan
        .upstreams
        .iter()
        .map(|u| {
            vec![
                u.name.clone(),
                u.base_url.clone(),
                if u.api_keys.is_empty() {
                    "-".into()
                } else {
                    let envs: Vec<String> =
                        u.api_keys.iter().map(|k| format!("${}", k.env)).collect();
                    envs.join(", ")
                },
                limits_text(u),
                if u.rate_limit_headers { "yes" } else { "no" }.into(),
                format!(
                    "{}/{} idle, {}",
                    u.max_connections,
                    u.max_idle,
                    d(u.idle_timeout)
                ),
                breaker_name(plan, u.breaker).unwrap_or_else(|| "-".into()),
                format!(
                    "{}/{}/{}",
                    d(u.timeouts.connect),
                    d(u.timeouts.per_try),
                    d(u.timeouts.total)
                ),
            ]
        })
        .collect();
    section(
        out,
        "Upstreams",
        &[
            "name",
            "base_url",
            "key",
            "limits (on limit, state)",
            "rate headers",
            "pool",
            "breaker",
            "connect/per_try/total",
        ],
        &rows,
    );
}

fn models_text(plan: &Plan, out: &mut String) {
    let rows: Vec<Vec<String>> = plan
        .models
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                plan.upstream(m.upstream).name.clone(),
                m.upstream_model.clone(),
                m.price.map_or("-".into(), |p| {
                    format!("${} / ${}", p.input_per_mtok, p.output_per_mtok)
                }),
                m.context_window.map_or("-".into(), |c| c.to_string()),
                breaker_name(plan, m.breaker).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    section(
        out,
        "Models (price in USD per million tokens, input / output)",
        &[
            "name",
            "upstream",
            "upstream model",
            "price",
            "context",
            "breaker",
        ],
        &rows,
    );
}

fn retry_text(plan: &Plan, out: &mut String) {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in &plan.retries {
        rows.push(vec![
            r.name.clone(),
            r.max_attempts.to_string(),
            backoff_text(&r.backoff),
            or_dash(r.retry_on.to_string()),
            if r.retry_after_honor {
                format!("honour ≤ {}", d(r.retry_after_max))
            } else {
                "ignore".into()
            },
            r.budget.map_or("-".into(), |b| {
                format!(
                    "ratio {}, {}/s, ttl {}",
                    b.ratio,
                    b.min_per_second,
                    d(b.ttl)
                )
            }),
        ]);
        for o in &r.overrides {
            rows.push(vec![
                format!("  on {}", o.class),
                o.max_attempts.unwrap_or(r.max_attempts).to_string(),
                backoff_text(o.backoff.as_ref().unwrap_or(&r.backoff)),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
    }
    section(
        out,
        "Retry policies (`<none>`: the built-in single attempt)",
        &[
            "name",
            "attempts",
            "backoff",
            "retry_on",
            "Retry-After",
            "retry budget",
        ],
        &rows,
    );
}

fn breakers_text(plan: &Plan, out: &mut String) {
    if plan.breakers.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = plan
        .breakers
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                opens_on(b),
                d(b.config.open_for),
                format!(
                    "{} probe(s), {} to close",
                    b.config.probes, b.config.successes_to_close
                ),
                or_dash(b.trip_on.to_string()),
                word(&b.state),
            ]
        })
        .collect();
    section(
        out,
        "Breakers",
        &[
            "name",
            "opens on",
            "open for",
            "half-open",
            "trip_on",
            "state",
        ],
        &rows,
    );
}

fn routes_text(plan: &Plan, out: &mut String) {
    let rows: Vec<Vec<String>> = plan
        .routes
        .iter()
        .map(|r| {
            let weighted = r.strategy == crate::policy::Strategy::Weighted;
            let targets: Vec<String> = r
                .targets
                .iter()
                .map(|t| {
                    let name = &plan.model(t.model).name;
                    let w = if weighted {
                        format!(" ×{}", t.weight)
                    } else {
                        String::new()
                    };
                    format!(
                        "{name}{w} ({}/{})",
                        d(t.timeouts.connect),
                        d(t.timeouts.per_try)
                    )
                })
                .collect();
            vec![
                r.name.clone(),
                r.when.as_ref().map_or("(always)".into(), |w| w.to_string()),
                r.strategy.to_string(),
                targets.join(", "),
                d(r.total_timeout),
                plan.retry(r.retry).name.clone(),
                breaker_name(plan, r.breaker).unwrap_or_else(|| "(upstreams')".into()),
                or_dash(r.failover_on.to_string()),
                r.hedge.map_or("-".into(), |h| {
                    format!("after {}, ≤ {} extra", d(h.after), h.max_extra)
                }),
                r.streaming.map_or("-".into(), |s| {
                    let f = |x: Option<std::time::Duration>| x.map_or("-".into(), d);
                    format!("first byte {}, idle {}", f(s.first_byte), f(s.idle_chunk))
                }),
            ]
        })
        .collect();
    section(
        out,
        "Routes, first match wins (targets with connect/per_try timeouts)",
        &[
            "route",
            "when",
            "strategy",
            "targets",
            "total",
            "retry",
            "breaker",
            "failover_on",
            "hedge",
            "streaming",
        ],
        &rows,
    );
}

fn bounds_text(plan: &Plan, tokens: TokenCounts, out: &mut String) {
    let rows: Vec<Vec<String>> = (0..plan.routes.len())
        .map(|i| {
            let b = route_bounds(plan, RouteId(i as u32), tokens);
            let plus = |x: std::time::Duration| {
                if x.is_zero() {
                    "-".into()
                } else {
                    format!("+{}", d(x))
                }
            };
            vec![
                plan.routes[i].name.clone(),
                if b.hedges > 0 {
                    format!("{} ({} hedged)", b.attempts, b.hedges)
                } else {
                    b.attempts.to_string()
                },
                d(b.schedule),
                plus(b.retry_after),
                plus(b.queueing),
                if b.unbounded_latency > b.latency {
                    format!(
                        "{} (deadline; {} unbounded)",
                        d(b.latency),
                        d(b.unbounded_latency)
                    )
                } else {
                    d(b.latency)
                },
                b.success_cost_usd.map_or("-".into(), |(lo, hi)| {
                    if lo == hi {
                        usd(lo)
                    } else {
                        format!("{}–{}", usd(lo), usd(hi))
                    }
                }),
                b.worst_cost_usd.map_or("unpriced".into(), usd),
            ]
        })
        .collect();
    section(
        out,
        &format!(
            "Worst cases per route (costs for {} input + {} output tokens; a budget's reroute continues under its target route's bounds)",
            tokens.input, tokens.output
        ),
        &[
            "route",
            "max attempts",
            "schedule",
            "Retry-After",
            "queueing",
            "worst latency",
            "cost if ok",
            "worst cost",
        ],
        &rows,
    );
}

fn budgets_text(plan: &Plan, out: &mut String) {
    if plan.budgets.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = plan
        .budgets
        .iter()
        .map(|b| {
            let scope: Vec<String> = b
                .scope
                .routes
                .iter()
                .map(|r| format!("route {}", plan.route(*r).name))
                .chain(
                    b.scope
                        .models
                        .iter()
                        .map(|m| format!("model {}", plan.model(*m).name)),
                )
                .chain(
                    b.scope
                        .upstreams
                        .iter()
                        .map(|u| format!("upstream {}", plan.upstream(*u).name)),
                )
                .chain(b.scope.keys.iter().map(|k| format!("key {k}")))
                .collect();
            vec![
                b.name.clone(),
                usd(b.limit_usd),
                d(b.window),
                if scope.is_empty() {
                    "all calls".into()
                } else {
                    scope.join(", ")
                },
                match b.on_exceed {
                    OnExceed::Reject => "reject".into(),
                    OnExceed::Reroute(r) => format!("reroute to {}", plan.route(r).name),
                },
                word(&b.state),
            ]
        })
        .collect();
    section(
        out,
        "Budgets",
        &["name", "limit", "window", "scope", "on exceed", "state"],
        &rows,
    );
}
