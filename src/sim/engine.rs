//! The engine: the real executor under a real plan, on tokio's paused clock, with scripted
//! upstreams and traffic. Single-threaded, so one seed gives one run, event for event.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::check::Checker;
use super::event::{AttemptResult, Event, Outcome};
use super::record::Recorder;
use super::summary::Tally;
use super::traffic::Arrival;
use super::upstream::{self, Ask, Play, StreamPlan};
use super::{Report, RunError, RunOptions, Scenario};
use crate::exec::{Done, Executor, Failure, Served, Target};
use crate::plan::Plan;

/// The payload of the panics the simulation provokes in `op` (see [`super::quiet_panics`]).
#[derive(Debug)]
pub struct SimPanic;

/// What every task of the run shares (one thread: `Rc`, `RefCell`).
struct World {
    scenario: Rc<Scenario>,
    exec: Executor,
    plans: RefCell<Vec<Plan>>,
    checker: RefCell<Checker>,
    tally: RefCell<Tally>,
    events: RefCell<Option<Vec<Event>>>,
    digest: Cell<u64>,
    next_attempt: Cell<u64>,
    recorder: RefCell<Option<Recorder>>,
}

impl World {
    fn now(&self) -> u64 {
        self.exec.clock().now()
    }

    fn emit(&self, ev: Event) {
        self.checker.borrow_mut().on(&ev, &self.exec);
        self.tally.borrow_mut().on(&ev);
        self.digest.set(fold(self.digest.get(), &ev));
        if let Some(r) = self.recorder.borrow_mut().as_mut() {
            r.on(&ev, &self.exec);
        }
        if let Some(log) = self.events.borrow_mut().as_mut() {
            log.push(ev);
        }
    }

    /// The version of a plan this run swapped in (1 = the first).
    fn version_of(&self, plan: &Plan) -> u64 {
        let plans = self.plans.borrow();
        let i = plans
            .iter()
            .position(|p| std::ptr::eq::<crate::plan::PlanData>(&**p, &**plan));
        i.map_or(0, |i| i as u64 + 1)
    }
}

/// FNV-1a over the event's kind, time and ids: cheap, and enough to tell two runs apart.
fn fold(h: u64, ev: &Event) -> u64 {
    let (kind, a, b) = match ev {
        Event::RequestStart { req, .. } => (1, *req, 0),
        Event::AttemptStart { req, id, .. } => (2, *req, *id),
        Event::AttemptEnd { req, id, .. } => (3, *req, *id),
        Event::RequestEnd { req, .. } => (4, *req, 0),
        Event::StreamEnd { req, id, .. } => (5, *req, *id),
        Event::Reload { version, .. } => (6, *version, 0),
    };
    [kind, ev.at(), a, b].iter().fold(h, |h, x| {
        x.to_le_bytes().iter().fold(h, |h, byte| {
            (h ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3)
        })
    })
}

/// What an attempt returns to the request: its id and, for a stream, how it goes on.
struct Value {
    id: u64,
    stream: Option<StreamPlan>,
}

/// Reports the end of an attempt exactly once: when it finishes, or when it is dropped.
struct AttemptGuard {
    world: Rc<World>,
    req: u64,
    id: u64,
    done: bool,
}

impl AttemptGuard {
    fn finish(&mut self, result: AttemptResult) {
        self.done = true;
        self.world.emit(Event::AttemptEnd {
            at: self.world.now(),
            req: self.req,
            id: self.id,
            result,
        });
    }

    async fn play(mut self, play: Play) -> Result<Done<Value>, Failure> {
        match play {
            Play::Answer {
                after,
                usage,
                rate_limit,
                stream,
            } => {
                tokio::time::sleep(after).await;
                let pending = stream.is_some();
                let value = Value {
                    id: self.id,
                    stream,
                };
                let mut done = if pending {
                    Done::new(value).pending()
                } else {
                    Done::with_usage(value, usage.input_tokens, usage.output_tokens)
                };
                if let Some((remaining, reset)) = rate_limit {
                    done = done.rate_limit(remaining, reset);
                }
                self.finish(AttemptResult::Ok {
                    usage: done.usage,
                    pending,
                });
                Ok(done)
            }
            Play::Fail { after, failure } => {
                tokio::time::sleep(after).await;
                self.finish(AttemptResult::Failed(failure.clone()));
                Err(failure)
            }
            Play::Panic { after } => {
                tokio::time::sleep(after).await;
                self.finish(AttemptResult::Panicked);
                std::panic::panic_any(SimPanic)
            }
        }
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if !self.done {
            self.finish(AttemptResult::Dropped);
        }
    }
}

/// What the operation returns for one attempt.
type AttemptFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Done<Value>, Failure>>>>;

/// The operation the executor runs for one request: draws each attempt from the script.
fn operation(
    world: Rc<World>,
    req: u64,
    a: &Arrival,
    seed: u64,
) -> impl FnMut(Target, u32) -> AttemptFuture {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (input, output) = (
        a.request.estimated_input_tokens(),
        a.request.reserved_output_tokens(),
    );
    let stream = a.stream;
    move |t: Target, _n: u32| {
        let w = world.clone();
        let id = w.next_attempt.get();
        w.next_attempt.set(id + 1);
        let now = w.now();
        let ask = Ask {
            upstream: t.upstream_name(),
            model: t.model_name(),
            input,
            output,
            stream,
            panic_share: w.scenario.traffic.mix.panic_share,
            now_ms: now / 1_000_000,
        };
        let play = upstream::draw(&w.scenario, &ask, &mut rng);
        w.emit(Event::AttemptStart {
            at: now,
            req,
            id,
            route: t.route_name().to_string(),
            model: t.model_name().to_string(),
            upstream: t.upstream_name().to_string(),
            number: t.attempt(),
            hedge: t.is_hedge(),
            timeout: crate::exec::clock::nanos(t.timeout()),
            queued: crate::exec::clock::nanos(t.queued()),
            plan_version: w.version_of(t.plan()),
        });
        let guard = AttemptGuard {
            world: w,
            req,
            id,
            done: false,
        };
        Box::pin(guard.play(play))
    }
}

/// One request, from arrival to the end of its stream.
async fn request(world: Rc<World>, req: u64, a: Arrival, seed: u64) {
    let plan = world.exec.plan();
    let route = world
        .exec
        .route_for(&a.request)
        .map(|r| plan.route(r).name.clone());
    world.emit(Event::RequestStart {
        at: world.now(),
        req,
        route,
        input_tokens: a.request.estimated_input_tokens(),
        output_tokens: a.request.reserved_output_tokens(),
        caller: a.request.caller.clone(),
        stream: a.stream,
    });
    let op = operation(world.clone(), req, &a, seed);
    let fut = world.exec.execute(&a.request, op);
    let result = match a.cancel_after {
        Some(d) => tokio::time::timeout(d, fut).await.ok(),
        None => Some(fut.await),
    };
    let outcome = match &result {
        None => Outcome::Cancelled,
        Some(Ok(s)) => Outcome::Served {
            route: s.route_name().to_string(),
            model: s.model_name().to_string(),
            attempts: s.attempts,
            cost_usd: s.cost_usd,
            plan_version: world.version_of(&s.plan),
            failovers: s.failovers,
        },
        Some(Err(e)) => {
            if let Some(r) = world.recorder.borrow_mut().as_mut() {
                r.skipped(&e.skipped);
            }
            Outcome::Failed {
                route: e.route.clone(),
                reason: e.reason.to_string(),
                attempts: e.attempts.len() as u32,
                skipped: e.skipped.len() as u32,
            }
        }
    };
    world.emit(Event::RequestEnd {
        at: world.now(),
        req,
        outcome,
    });
    if let Some(Ok(served)) = result {
        read_stream(&world, req, served, a.request.caller.as_deref()).await;
    }
}

/// Reads a streamed answer to its end, then reports its usage and how it ended.
async fn read_stream(world: &World, req: u64, served: Served<Value>, caller: Option<&str>) {
    let (value, mut meta) = served.into_parts();
    let Some(plan) = value.stream else { return };
    tokio::time::sleep(plan.lasts).await;
    let usage = match &plan.breaks {
        Some(f) => {
            world.exec.record_late_outcome(&meta, Some(f));
            None
        }
        None => {
            world.exec.record_late_usage(&mut meta, caller, plan.usage);
            world.exec.record_late_outcome(&meta, None);
            Some(plan.usage)
        }
    };
    world.emit(Event::StreamEnd {
        at: world.now(),
        req,
        id: value.id,
        usage,
        failure: plan.breaks,
    });
}

/// Compiles a policy text.
pub(crate) fn compile(label: &str, text: &str) -> Result<Plan, RunError> {
    let opts =
        crate::policy::LoadOptions::from_text(label, text).with_env(Vec::<(String, String)>::new());
    Plan::load(&opts)
        .map(|c| c.plan)
        .map_err(|d| RunError::Policy(d.render(false)))
}

/// Runs the scenario on a fresh current-thread runtime with paused time.
pub(crate) fn run(s: &Scenario, opts: &RunOptions) -> Result<Report, RunError> {
    let plan = compile("scenario.toml", &s.policy)?;
    let reloads = match &s.reload {
        Some(r) => vec![(r.at_ms, compile("reload.toml", &r.policy)?)],
        None => Vec::new(),
    };
    run_compiled(s, plan, reloads, opts)
}

/// Runs the scenario under compiled plans: `plan` first, then each of `reloads` swapped in
/// at its time (ms); the scenario's own `policy` and `reload` are not read.
pub(crate) fn run_compiled(
    s: &Scenario,
    plan: Plan,
    reloads: Vec<(u64, Plan)>,
    opts: &RunOptions,
) -> Result<Report, RunError> {
    // The run owns its runtime (paused time, one thread): inside another one, blocking on
    // it would panic.
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(RunError::Runtime(
            "called inside a tokio runtime: run the simulation outside one (e.g. in spawn_blocking)"
                .into(),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| RunError::Runtime(e.to_string()))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, drive(Rc::new(s.clone()), plan, reloads, opts))
}

/// Requests started between two sweeps of finished tasks.
const SWEEP: usize = 1024;

/// A request task, or what is left of one that already ended.
enum Task {
    Running(JoinHandle<()>),
    /// Ended by a panic: its outcome is reported when the run joins it, as for a running one.
    Panicked,
}

/// Drops the tasks that ended normally, so what is kept grows with the requests in flight
/// (and the panicked ones), not with the requests of the run.
fn sweep(handles: &mut Vec<(u64, Task)>) {
    use futures_util::FutureExt as _;
    handles.retain_mut(|(_, t)| {
        let Task::Running(h) = t else { return true };
        if !h.is_finished() {
            return true;
        }
        // Unconstrained: tokio's cooperative budget would have a finished handle answer
        // "pending" after the first hundred or so polls of a sweep.
        match tokio::task::unconstrained(h).now_or_never() {
            Some(Err(e)) if e.is_panic() => {
                *t = Task::Panicked;
                true
            }
            Some(_) => false,
            None => true,
        }
    });
}

async fn drive(
    s: Rc<Scenario>,
    plan: Plan,
    reloads: Vec<(u64, Plan)>,
    opts: &RunOptions,
) -> Result<Report, RunError> {
    let t0 = Instant::now();
    let mut builder = Executor::builder(plan.clone()).seed(s.seed);
    if let Some(script) = &s.shared {
        let backend = super::backend::SimBackend::new(script.clone(), s.seed ^ 0xbac0_e4d0);
        builder = builder.state_backend(std::sync::Arc::new(backend));
    }
    let exec = builder
        .build()
        .map_err(|e| RunError::Build(e.to_string()))?;
    let mut checker = Checker::new(plan.clone());
    if let Some(script) = &s.shared {
        checker.set_backend(script);
    }
    let world = Rc::new(World {
        scenario: s.clone(),
        exec,
        plans: RefCell::new(vec![plan.clone()]),
        checker: RefCell::new(checker),
        tally: RefCell::new(Tally::default()),
        events: RefCell::new(opts.keep_events.then(Vec::new)),
        digest: Cell::new(0xcbf2_9ce4_8422_2325),
        next_attempt: Cell::new(0),
        recorder: RefCell::new(opts.record.clone().map(Recorder::new)),
    });
    let mut rng = fastrand::Rng::with_seed(s.seed);
    let arrivals = super::traffic::Arrivals::new(&s.traffic, &mut rng);
    let reloading = tokio::task::spawn_local(swaps(world.clone(), t0, reloads));
    let mut handles: Vec<(u64, Task)> = Vec::with_capacity(arrivals.len().min(SWEEP * 4));
    for (i, a) in arrivals.enumerate() {
        tokio::time::sleep_until(t0 + a.at).await;
        let seed = rng.u64(..);
        if i % SWEEP == SWEEP - 1 {
            sweep(&mut handles);
        }
        handles.push((
            i as u64,
            Task::Running(tokio::task::spawn_local(request(
                world.clone(),
                i as u64,
                a,
                seed,
            ))),
        ));
    }
    let joined = tokio::time::timeout(HORIZON, join(&world, handles)).await;
    if joined.is_err() {
        world.checker.borrow_mut().hung(world.now());
    }
    reloading
        .await
        .map_err(|e| RunError::Runtime(e.to_string()))??;
    let at = world.now();
    world.checker.borrow_mut().finish(at, &world.exec);
    let record = world.recorder.take().map(|r| r.finish(at, &world.exec));
    let checker = world.checker.borrow();
    let (violations, total) = checker.violations();
    Ok(Report {
        summary: world.tally.take().finish(),
        violations: violations.to_vec(),
        violation_count: total,
        events: world.events.take(),
        digest: world.digest.get(),
        record,
    })
}

/// Virtual time after which requests still running are reported as hung (the checker's
/// [`Promise::OneOutcome`](super::Promise::OneOutcome)): well past any deadline a
/// generated policy can set and past [`upstream::HANG`].
const HORIZON: Duration = Duration::from_secs(2 * 3600);

/// Waits for every request task; a panicked one ends in [`Outcome::Panicked`].
async fn join(world: &World, handles: Vec<(u64, Task)>) {
    for (req, t) in handles {
        let panicked = match t {
            Task::Running(h) => h.await.is_err_and(|e| e.is_panic()),
            Task::Panicked => true,
        };
        if panicked {
            world.emit(Event::RequestEnd {
                at: world.now(),
                req,
                outcome: Outcome::Panicked,
            });
        }
    }
}

/// Swaps in each plan at its time (ms from the start), in order.
async fn swaps(world: Rc<World>, t0: Instant, reloads: Vec<(u64, Plan)>) -> Result<(), RunError> {
    for (at_ms, plan) in reloads {
        tokio::time::sleep_until(t0 + Duration::from_millis(at_ms)).await;
        world.plans.borrow_mut().push(plan.clone());
        world.checker.borrow_mut().add_plan(plan.clone());
        if let Some(r) = world.recorder.borrow_mut().as_mut() {
            r.retire(world.exec.runtime());
        }
        let version = world
            .exec
            .swap_plan(plan)
            .map_err(|e| RunError::Build(e.to_string()))?;
        world.emit(Event::Reload {
            at: world.now(),
            version,
        });
    }
    Ok(())
}
