//! Minimizing a failing scenario: fewer requests, shorter traffic, fewer scripted
//! upstreams and phases, fewer kinds of fault, for as long as it still fails.

use super::scenario::Scenario;

/// Most candidate runs one minimization tries.
const MAX_TRIES: usize = 300;

/// Smaller variants of `s`, each one step away.
fn candidates(s: &Scenario) -> Vec<Scenario> {
    let mut out = Vec::new();
    let mut push = |f: &dyn Fn(&mut Scenario)| {
        let mut c = s.clone();
        f(&mut c);
        if c != *s {
            out.push(c);
        }
    };
    let n = s.traffic.max_requests;
    push(&|c| c.traffic.max_requests = n / 2);
    push(&|c| c.traffic.max_requests = n.saturating_sub(1));
    push(&|c| c.reload = None);
    push(&|c| c.traffic.bursts.clear());
    push(&|c| {
        for seg in &mut c.traffic.segments {
            seg.to_ms = seg.from_ms + (seg.to_ms - seg.from_ms) / 2;
        }
    });
    push(&|c| c.traffic.mix.cancel = None);
    push(&|c| c.traffic.mix.panic_share = 0.0);
    push(&|c| c.traffic.mix.stream_share = 0.0);
    for i in 0..s.upstreams.len() {
        push(&|c| {
            c.upstreams.remove(i);
        });
        for p in 0..s.upstreams[i].phases.len() {
            push(&|c| {
                c.upstreams[i].phases.remove(p);
            });
            push(&|c| {
                let ph = &mut c.upstreams[i].phases[p];
                ph.faults = Default::default();
            });
            push(&|c| {
                let ph = &mut c.upstreams[i].phases[p];
                ph.slow = None;
                ph.rate_limit = None;
                ph.outage = false;
            });
        }
    }
    out
}

/// The smallest variant of `s` (by greedy steps) for which `fails` still holds.
/// `s` itself must fail.
pub fn minimize(s: &Scenario, fails: impl Fn(&Scenario) -> bool) -> Scenario {
    let mut best = s.clone();
    let mut tries = 0;
    'outer: loop {
        for c in candidates(&best) {
            tries += 1;
            if tries > MAX_TRIES {
                break 'outer;
            }
            if fails(&c) {
                best = c;
                continue 'outer;
            }
        }
        break;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::random::{scenario, Knobs};

    #[test]
    fn minimize_keeps_the_property_and_shrinks() {
        let s = scenario(3, &Knobs::default());
        let n = s.traffic.max_requests;
        // "Fails" while it has at least 2 requests: minimization must stop at 2.
        let m = minimize(&s, |c| c.traffic.max_requests >= 2);
        assert_eq!(m.traffic.max_requests, 2.min(n));
        assert!(
            m.upstreams.is_empty(),
            "scripts are not needed for this property"
        );
    }
}
