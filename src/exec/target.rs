//! What the operation is asked to call: one attempt's target, its time and its plan.

use std::time::Duration;

use crate::plan::{ModelId, Plan, RouteId, UpstreamId};

/// What the operation is asked to call.
#[derive(Debug, Clone)]
pub struct Target {
    pub(super) plan: Plan,
    pub(super) version: u64,
    pub(super) route: RouteId,
    pub(super) model: ModelId,
    pub(super) attempt: u32,
    pub(super) hedge: bool,
    pub(super) time: AttemptTime,
}

/// The time an attempt is given, and how long it queued for its permits before.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttemptTime {
    pub timeout: Duration,
    pub queued: Duration,
}

impl Target {
    /// The model's name in the plan.
    pub fn model_name(&self) -> &str {
        &self.plan.model(self.model).name
    }
    /// The model id to send upstream.
    pub fn upstream_model(&self) -> &str {
        &self.plan.model(self.model).upstream_model
    }
    /// The upstream's name.
    pub fn upstream_name(&self) -> &str {
        &self.plan.upstream(self.upstream()).name
    }
    /// The upstream's base URL.
    pub fn base_url(&self) -> &str {
        &self.plan.upstream(self.upstream()).base_url
    }
    /// The route's name.
    pub fn route_name(&self) -> &str {
        &self.plan.route(self.route).name
    }
    /// The route's id.
    pub fn route(&self) -> RouteId {
        self.route
    }
    /// The model's id.
    pub fn model(&self) -> ModelId {
        self.model
    }
    /// The upstream's id.
    pub fn upstream(&self) -> UpstreamId {
        self.plan.model(self.model).upstream
    }
    /// 1-based attempt number on this target.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// Whether this attempt is a hedge racing another.
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }
    /// The time this attempt has (per-try timeout, cut by the request deadline). The
    /// executor enforces it; an operation may pass it on (e.g. as an HTTP timeout).
    pub fn timeout(&self) -> Duration {
        self.time.timeout
    }
    /// How long this attempt waited for its permits (limiters with `on_limit = "wait"`,
    /// the shared backend) before it was admitted: its admission, budget reservations
    /// included, was decided that long before the operation was called.
    pub fn queued(&self) -> Duration {
        self.time.queued
    }
    /// The plan this request runs under.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    /// That plan's version (as [`Served::plan_version`](super::Served::plan_version)): every attempt of one request
    /// has the same.
    pub fn plan_version(&self) -> u64 {
        self.version
    }
}
