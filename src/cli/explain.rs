//! `tollgate explain`: the resolved plan and each route's static bounds, as tables.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{color, out, ExplainFormat};
use crate::plan::{route_bounds, OnExceed, Plan, RouteId, TokenCounts};
use crate::policy::{load, Duration, LoadOptions};

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

/// The explanation of a plan as one JSON document (durations in milliseconds, costs in
/// USD). Keys are stable: CI can gate on `routes[].bounds.worst_cost_usd` or
/// `routes[].bounds.worst_latency_ms`.
pub fn explain_json(plan: &Plan, tokens: TokenCounts) -> serde_json::Value {
    use serde_json::json;
    let upstreams: Vec<_> = plan
        .upstreams
        .iter()
        .map(|u| {
            let l = &u.limits;
            json!({
                "name": u.name,
                "base_url": u.base_url,
                "key_env": u.api_key.as_ref().map(|k| k.env.clone()),
                "limits": {
                    "requests_per_second": l.rate.map(|r| r.per_second),
                    "burst": l.rate.map(|r| r.burst),
                    "tokens_per_minute": l.tokens_per_minute,
                    "concurrency": l.concurrency,
                },
                "breaker": u.breaker.map(|b| plan.breakers[b.index()].name.clone()),
                "timeouts_ms": {
                    "connect": ms(u.timeouts.connect),
                    "per_try": ms(u.timeouts.per_try),
                    "total": ms(u.timeouts.total),
                },
            })
        })
        .collect();
    let models: Vec<_> = plan
        .models
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "upstream": plan.upstream(m.upstream).name,
                "upstream_model": m.upstream_model,
                "price_per_mtok": m.price.map(|p| json!({
                    "input": p.input_per_mtok,
                    "output": p.output_per_mtok,
                })),
                "context_window": m.context_window,
            })
        })
        .collect();
    let routes: Vec<_> = plan
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let b = route_bounds(plan, RouteId(i as u32), tokens);
            json!({
                "name": r.name,
                "when": r.when.as_ref().map(|w| w.to_string()),
                "strategy": r.strategy.to_string(),
                "targets": r.targets.iter().map(|t| plan.model(t.model).name.clone()).collect::<Vec<_>>(),
                "retry": plan.retry(r.retry).name,
                "bounds": {
                    "max_attempts": b.attempts,
                    "worst_latency_ms": ms(b.latency),
                    "unbounded_latency_ms": ms(b.unbounded_latency),
                    "schedule_ms": ms(b.schedule),
                    "cost_if_ok_usd": b.success_cost_usd.map(|(lo, hi)| json!({ "min": lo, "max": hi })),
                    "worst_cost_usd": b.worst_cost_usd,
                },
            })
        })
        .collect();
    let budgets: Vec<_> = plan
        .budgets
        .iter()
        .map(|b| {
            json!({
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
                    OnExceed::Reject => json!("reject"),
                    OnExceed::Reroute(r) => json!({ "reroute": plan.route(r).name }),
                },
            })
        })
        .collect();
    json!({
        "tokens": { "input": tokens.input, "output": tokens.output },
        "upstreams": upstreams,
        "models": models,
        "routes": routes,
        "budgets": budgets,
    })
}

/// The explanation of a plan as text.
pub fn explain(plan: &Plan, tokens: TokenCounts) -> String {
    let mut out = String::new();
    let ups: Vec<Vec<String>> = plan
        .upstreams
        .iter()
        .map(|u| {
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
            vec![
                u.name.clone(),
                u.base_url.clone(),
                u.api_key
                    .as_ref()
                    .map_or("-".into(), |k| format!("${}", k.env)),
                if limits.is_empty() {
                    "-".into()
                } else {
                    limits.join(", ")
                },
                u.breaker
                    .map_or("-".into(), |b| plan.breakers[b.index()].name.clone()),
                format!(
                    "{}/{}/{}",
                    d(u.timeouts.connect),
                    d(u.timeouts.per_try),
                    d(u.timeouts.total)
                ),
            ]
        })
        .collect();
    let _ = writeln!(out, "Upstreams\n");
    out.push_str(&table(
        &[
            "name",
            "base_url",
            "key",
            "limits",
            "breaker",
            "connect/per_try/total",
        ],
        &ups,
    ));
    let models: Vec<Vec<String>> = plan
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
            ]
        })
        .collect();
    let _ = writeln!(
        out,
        "\nModels (price in USD per million tokens, input / output)\n"
    );
    out.push_str(&table(
        &["name", "upstream", "upstream model", "price", "context"],
        &models,
    ));
    let routes: Vec<Vec<String>> = plan
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let b = route_bounds(plan, RouteId(i as u32), tokens);
            let targets: Vec<String> = r
                .targets
                .iter()
                .map(|t| plan.model(t.model).name.clone())
                .collect();
            vec![
                r.name.clone(),
                r.when.as_ref().map_or("(always)".into(), |w| w.to_string()),
                r.strategy.to_string(),
                targets.join(", "),
                plan.retry(r.retry).name.clone(),
                b.attempts.to_string(),
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
    let _ = writeln!(
        out,
        "\nRoutes, first match wins (costs for {} input + {} output tokens)\n",
        tokens.input, tokens.output
    );
    out.push_str(&table(
        &[
            "route",
            "when",
            "strategy",
            "targets",
            "retry",
            "max attempts",
            "worst latency",
            "cost if ok",
            "worst cost",
        ],
        &routes,
    ));
    if !plan.budgets.is_empty() {
        let budgets: Vec<Vec<String>> = plan
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
                ]
            })
            .collect();
        let _ = writeln!(out, "\nBudgets\n");
        out.push_str(&table(
            &["name", "limit", "window", "scope", "on exceed"],
            &budgets,
        ));
    }
    out
}
