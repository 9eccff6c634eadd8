//! The short account of a run: requests, outcomes by reason, attempts, cost, latency.

use std::collections::BTreeMap;

use serde::Serialize;

use super::event::{AttemptResult, Event, Outcome};

/// Latency buckets: bucket `i` holds requests that took under `2^i` ms (the last: the rest).
pub const BUCKETS: usize = 24;

/// What a run did, in numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Requests sent.
    pub requests: u64,
    /// Outcomes by label (`served`, a stop reason, `cancelled`, `panicked`).
    pub outcomes: BTreeMap<String, u64>,
    /// Attempts made (operation calls), hedges included.
    pub attempts: u64,
    /// Of those, hedges.
    pub hedges: u64,
    /// Attempts by how they ended (`ok`, a failure, `dropped`, `panicked`).
    pub attempt_results: BTreeMap<String, u64>,
    /// Streams read to their end, and broken ones.
    pub streams: (u64, u64),
    /// Cost the executor reported for served requests, USD.
    pub cost_usd: f64,
    /// Requests by latency: bucket `i` counts those under `2^i` ms.
    pub latency_ms_log2: Vec<u64>,
    /// Plan reloads.
    pub reloads: u64,
    /// Virtual time the run took, ms.
    pub virtual_ms: f64,
}

/// Builds a [`Summary`] from the events, in constant memory per request.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    s: Summary,
    starts: BTreeMap<u64, u64>,
}

impl Tally {
    pub(crate) fn on(&mut self, ev: &Event) {
        let s = &mut self.s;
        s.virtual_ms = s.virtual_ms.max(ev.at() as f64 / 1e6);
        match ev {
            Event::RequestStart { at, req, .. } => {
                s.requests += 1;
                self.starts.insert(*req, *at);
            }
            Event::AttemptStart { hedge, .. } => {
                s.attempts += 1;
                s.hedges += u64::from(*hedge);
            }
            Event::AttemptEnd { result, .. } => {
                let label = match result {
                    AttemptResult::Ok { .. } => "ok".to_string(),
                    AttemptResult::Failed(f) => failure_label(f),
                    AttemptResult::Dropped => "dropped".into(),
                    AttemptResult::Panicked => "panicked".into(),
                };
                *s.attempt_results.entry(label).or_default() += 1;
            }
            Event::RequestEnd { at, req, outcome } => {
                *s.outcomes.entry(outcome.label()).or_default() += 1;
                if let Outcome::Served { cost_usd, .. } = outcome {
                    s.cost_usd += cost_usd;
                }
                if let Some(start) = self.starts.remove(req) {
                    let ms = (at - start) / 1_000_000;
                    let b = (u64::BITS - ms.leading_zeros()) as usize;
                    if s.latency_ms_log2.is_empty() {
                        s.latency_ms_log2 = vec![0; BUCKETS];
                    }
                    s.latency_ms_log2[b.min(BUCKETS - 1)] += 1;
                }
            }
            Event::StreamEnd { failure, .. } => {
                s.streams.0 += 1;
                s.streams.1 += u64::from(failure.is_some());
            }
            Event::Reload { .. } => s.reloads += 1,
        }
    }

    pub(crate) fn finish(self) -> Summary {
        self.s
    }
}

/// `connect`, `timeout`, or the status (and code) of a failure.
fn failure_label(f: &crate::exec::Failure) -> String {
    use crate::exec::FailureKind;
    match f.kind {
        FailureKind::Connect => "connect".into(),
        FailureKind::Timeout => "timeout".into(),
        FailureKind::Response => match (f.status, &f.code) {
            (Some(s), Some(c)) => format!("{s} {c}"),
            (Some(s), None) => s.to_string(),
            (None, Some(c)) => c.clone(),
            (None, None) => "error".into(),
        },
    }
}

impl Summary {
    /// Requests under each latency bucket's bound, as `(bound_ms, count)`, empty ones left out.
    pub fn latency(&self) -> Vec<(u64, u64)> {
        self.latency_ms_log2
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (1u64 << i, *n))
            .collect()
    }
}
