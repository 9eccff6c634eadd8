//! A successful request: the value, and the account of how it was served.

use super::error::AttemptRecord;
use super::hold::StreamHold;
use super::outcome::Usage;
use crate::plan::{ModelId, Plan, RouteId};

/// A successful request.
#[derive(Debug)]
pub struct Served<T> {
    /// What the operation produced.
    pub value: T,
    /// The route that served it.
    pub route: RouteId,
    /// The model that served it.
    pub model: ModelId,
    /// Attempts made, the successful one included.
    pub attempts: u32,
    /// Cost of the successful attempt (and any billed failures), USD.
    pub cost_usd: f64,
    /// Token usage reported.
    pub usage: Option<Usage>,
    /// Failed attempts before the success.
    pub failed: Vec<AttemptRecord>,
    /// The plan it ran under.
    pub plan: Plan,
    /// That plan's version.
    pub plan_version: u64,
    /// What a served stream (no usage yet) keeps until its usage is known: its budget
    /// reservations and its token estimate. [`Executor::record_late_usage`](super::Executor::record_late_usage) settles them;
    /// dropped without it, each budget is charged its reservation and the token estimate
    /// stays charged. Empty for a call that reported its usage.
    pub hold: StreamHold,
    /// Failovers: how many times the request moved on from one target to another (after
    /// its failures there, a skip — breaker open, limited, budget, context window — or a
    /// reroute). A hedge that wins is not a failover. 0 when the first target served it.
    pub failovers: u32,
}

impl<T> Served<T> {
    /// The value, and the account of how it was served without it (e.g. to keep while a
    /// stream is read from the value).
    pub fn into_parts(self) -> (T, Served<()>) {
        let Served {
            value,
            route,
            model,
            attempts,
            cost_usd,
            usage,
            failed,
            plan,
            plan_version,
            hold,
            failovers,
        } = self;
        let meta = Served {
            value: (),
            route,
            model,
            attempts,
            cost_usd,
            usage,
            failed,
            plan,
            plan_version,
            hold,
            failovers,
        };
        (value, meta)
    }
    /// The serving model's name.
    pub fn model_name(&self) -> &str {
        &self.plan.model(self.model).name
    }
    /// The serving model's upstream's name.
    pub fn upstream_name(&self) -> &str {
        &self
            .plan
            .upstream(self.plan.model(self.model).upstream)
            .name
    }
    /// The route's name.
    pub fn route_name(&self) -> &str {
        &self.plan.route(self.route).name
    }
}
