//! Static bounds: where a route's own retry schedule cannot fit its deadline.

use super::*;
use crate::plan::bounds::route_bounds;

impl Compiler<'_> {
    /// Warns where a route's own retry schedule cannot fit its deadline. The figures are
    /// [`route_bounds`]'s, the same `tollgate explain` prints.
    pub(super) fn deadline_warnings(&mut self, plan: &Plan) {
        for (i, r) in plan.routes.iter().enumerate() {
            // A model whose upstream did not resolve (already an error) holds a placeholder
            // id, which may not exist when no upstream parsed: no bounds for its routes.
            let resolved = r
                .targets
                .iter()
                .all(|t| plan.model(t.model).upstream.index() < plan.upstreams.len());
            if !resolved {
                continue;
            }
            let b = route_bounds(plan, RouteId(i as u32), TokenCounts::default());
            if b.schedule <= r.total_timeout {
                continue;
            }
            let d = |x| crate::policy::Duration::new(x);
            let mut message = format!(
                "route `{}`: its worst-case retry schedule ({} attempt{} timing out, backoff at its ceiling) takes {} but its total timeout is {}",
                r.name,
                b.attempts,
                plural(b.attempts),
                d(b.schedule),
                d(r.total_timeout)
            );
            let mut waits = Vec::new();
            if !b.retry_after.is_zero() {
                let max = plan.retry(r.retry).retry_after_max;
                waits.push(format!("Retry-After waits of up to {}", d(max)));
            }
            if !b.queueing.is_zero() {
                waits.push("limiter queueing".to_string());
            }
            if !waits.is_empty() {
                message += &format!(" ({} with {})", d(b.unbounded_latency), waits.join(" and "));
            }
            let path = self.l.route_path(i);
            let d = self.warning(Code::ScheduleExceedsDeadline, message, &path.key("name"))
                .with_help("the deadline will cut later attempts short; lower max_attempts or per_try, or raise the total timeout");
            self.push(d);
        }
    }
}
