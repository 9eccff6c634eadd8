//! The checker on hand-made event sequences: each promise is flagged when broken, and a
//! sequence that keeps them all is clean.

use super::*;
use crate::exec::Usage;
use crate::sim::event::Outcome;

const POLICY: &str = r#"
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
[upstreams.u.limits]
requests_per_second = 1
burst = 1
concurrency = 1
tokens_per_minute = 100
[upstreams.v]
base_url = "http://127.0.0.1:1/v"
[models.m]
upstream = "u"
price = { input_per_mtok = 1000.0, output_per_mtok = 1000.0 }
[models.n]
upstream = "v"
[retry.r]
max_attempts = 1
budget = { ratio = 0.0, min_per_second = 0, ttl = "1s" }
[[routes]]
name = "main"
targets = ["m", "n"]
retry = "r"
failover_on = ["connect"]
timeouts = { per_try = "1s", total = "2s" }
[budgets.b]
limit_usd = 0.1
window = "1h"
"#;

const MS: u64 = 1_000_000;

struct Run {
    c: Checker,
    exec: Executor,
}

impl Run {
    fn new() -> Run {
        let plan = crate::sim::engine::compile("t.toml", POLICY).unwrap();
        Run {
            c: Checker::new(plan.clone()),
            exec: Executor::new(plan).unwrap(),
        }
    }
    fn on(&mut self, ev: Event) -> &mut Run {
        self.c.on(&ev, &self.exec);
        self
    }
    fn request(&mut self, at: u64, req: u64, tokens: u64) -> &mut Run {
        self.on(Event::RequestStart {
            at: at * MS,
            req,
            route: Some("main".into()),
            input_tokens: tokens / 2,
            output_tokens: tokens - tokens / 2,
            caller: None,
            stream: false,
        })
    }
    fn attempt(&mut self, at: u64, req: u64, id: u64, model: &str, version: u64) -> &mut Run {
        let upstream = if model == "m" { "u" } else { "v" };
        self.on(Event::AttemptStart {
            at: at * MS,
            req,
            id,
            route: "main".into(),
            model: model.into(),
            upstream: upstream.into(),
            number: 1,
            hedge: false,
            timeout: 1000 * MS,
            queued: 0,
            plan_version: version,
        })
    }
    fn end(&mut self, at: u64, req: u64, id: u64, result: AttemptResult) -> &mut Run {
        self.on(Event::AttemptEnd {
            at: at * MS,
            req,
            id,
            result,
        })
    }
    fn done(&mut self, at: u64, req: u64) -> &mut Run {
        self.on(Event::RequestEnd {
            at: at * MS,
            req,
            outcome: Outcome::Failed {
                route: Some("main".into()),
                reason: "x".into(),
                attempts: 1,
                skipped: 0,
            },
        })
    }
    fn promises(&mut self) -> Vec<Promise> {
        self.c.finish(10_000 * MS, &self.exec);
        let mut p: Vec<Promise> = self.c.violations().0.iter().map(|v| v.promise).collect();
        p.dedup();
        p
    }
}

fn ok(tokens: u64) -> AttemptResult {
    AttemptResult::Ok {
        usage: Some(Usage {
            input_tokens: tokens / 2,
            output_tokens: tokens - tokens / 2,
        }),
        pending: false,
    }
}

#[test]
fn a_clean_sequence_keeps_every_promise() {
    let mut r = Run::new();
    r.request(0, 0, 10)
        .attempt(0, 0, 0, "m", 1)
        .end(50, 0, 0, ok(10))
        .done(50, 0);
    r.request(2000, 1, 10)
        .attempt(2000, 1, 1, "m", 1)
        .end(2100, 1, 1, ok(10))
        .done(2100, 1);
    assert_eq!(r.promises(), vec![]);
}

#[test]
fn an_attempt_past_its_timeout_and_a_late_answer_are_flagged() {
    let mut r = Run::new();
    r.request(0, 0, 10)
        .attempt(0, 0, 0, "n", 1)
        .end(1500, 0, 0, ok(10))
        .done(2500, 0);
    let p = r.promises();
    assert!(
        p.contains(&Promise::PerTry) && p.contains(&Promise::Deadline),
        "{p:?}"
    );
}

#[test]
fn limits_are_checked_in_every_window() {
    let mut r = Run::new();
    // Two calls on u at once: concurrency 1, 1 request/s with a burst of 1, 100 tokens/min.
    r.request(0, 0, 80).request(0, 1, 80);
    r.attempt(0, 0, 0, "m", 1).attempt(0, 1, 1, "m", 1);
    r.end(10, 0, 0, ok(80))
        .end(10, 1, 1, ok(80))
        .done(10, 0)
        .done(10, 1);
    let p = r.promises();
    for want in [
        Promise::Concurrency,
        Promise::RateWindow,
        Promise::TokenWindow,
    ] {
        assert!(p.contains(&want), "{want} not flagged: {p:?}");
    }
}

#[test]
fn overspending_a_budget_is_flagged() {
    let mut r = Run::new();
    // $1000/Mtok: 60 tokens reserve and cost $0.06; two of them exceed $0.10.
    for i in 0..2 {
        r.request(i * 60_000, i, 60)
            .attempt(i * 60_000, i, i, "m", 1);
        r.end(i * 60_000 + 5, i, i, ok(60)).done(i * 60_000 + 5, i);
    }
    assert_eq!(r.promises(), vec![Promise::BudgetSpend]);
}

#[test]
fn a_move_the_route_does_not_allow_and_a_retry_past_the_budget_are_flagged() {
    let mut r = Run::new();
    r.request(0, 0, 10).attempt(0, 0, 0, "m", 1);
    r.end(5, 0, 0, AttemptResult::Failed(Failure::status(400)));
    r.attempt(5, 0, 1, "n", 1).end(10, 0, 1, ok(10)).done(10, 0);
    let p = r.promises();
    assert!(p.contains(&Promise::FailoverClass), "{p:?}");
    assert!(p.contains(&Promise::RetryBudget), "{p:?}");
}

#[test]
fn two_plans_in_one_request_and_a_missing_or_double_outcome_are_flagged() {
    let mut r = Run::new();
    let plan = r.c.plan(1);
    r.c.add_plan(plan);
    r.request(0, 0, 10).attempt(0, 0, 0, "n", 1);
    r.end(5, 0, 0, AttemptResult::Failed(Failure::connect("x")));
    r.attempt(2000, 0, 1, "n", 2).end(2005, 0, 1, ok(10));
    r.request(3000, 1, 10).done(3001, 1).done(3002, 1);
    r.request(4000, 2, 10);
    let p = r.promises();
    for want in [Promise::OnePlan, Promise::OneOutcome] {
        assert!(p.contains(&want), "{want} not flagged: {p:?}");
    }
    assert!(
        r.c.violations().1 >= 3,
        "OnePlan, the second outcome, the missing one"
    );
}
