//! The `x-tollgate-*` headers an answer carries: what served it, or what was tried before
//! the executor gave up. One writer for the relay's answers, its errors and the reqwest
//! middleware's responses; the names are constants, so writing them parses nothing.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::exec::Served;

/// The route that took the request.
pub const ROUTE: HeaderName = HeaderName::from_static("x-tollgate-route");
/// The model that answered (or was tried last).
pub const MODEL: HeaderName = HeaderName::from_static("x-tollgate-model");
/// The upstream that answered (or was tried last).
pub const UPSTREAM: HeaderName = HeaderName::from_static("x-tollgate-upstream");
/// Attempts made, the answering one included.
pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-tollgate-attempts");
/// Moves to another target.
pub const FAILOVERS: HeaderName = HeaderName::from_static("x-tollgate-failovers");
/// What the answer cost by the plan's prices, in dollars.
pub const COST_USD: HeaderName = HeaderName::from_static("x-tollgate-cost-usd");

/// What was tried: the route, the last target's model and upstream, the attempts.
pub(crate) struct Tried<'a> {
    pub(crate) route: &'a str,
    pub(crate) model: &'a str,
    pub(crate) upstream: &'a str,
    pub(crate) attempts: u32,
}

/// Writes `-route`, `-model`, `-upstream` and `-attempts` (a name no header can carry is
/// left out).
pub(crate) fn write_tried(h: &mut HeaderMap, t: &Tried<'_>) {
    for (name, v) in [(ROUTE, t.route), (MODEL, t.model), (UPSTREAM, t.upstream)] {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(name, v);
        }
    }
    h.insert(ATTEMPTS, HeaderValue::from(t.attempts));
}

/// Writes what served `s`: [`write_tried`]'s four, `-failovers` and `-cost-usd`.
pub(crate) fn write_served<T>(h: &mut HeaderMap, s: &Served<T>) {
    let tried = Tried {
        route: s.route_name(),
        model: s.model_name(),
        upstream: s.upstream_name(),
        attempts: s.attempts,
    };
    write_tried(h, &tried);
    h.insert(FAILOVERS, HeaderValue::from(s.failovers));
    if let Ok(v) = HeaderValue::from_str(&format!("{:.9}", s.cost_usd)) {
        h.insert(COST_USD, v);
    }
}
