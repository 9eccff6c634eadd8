//! `timeouts` tables, resolved field by field over what they override (the defaults, an
//! upstream's, a route's).

use super::*;

impl Compiler<'_> {
    pub(super) fn timeouts(
        &mut self,
        base: Timeouts,
        t: Option<&policy::Timeouts>,
        path: &KeyPath,
    ) -> Timeouts {
        let Some(t) = t else { return base };
        let mut out = base;
        for (name, v, slot) in [
            ("connect", t.connect, &mut out.connect),
            ("per_try", t.per_try, &mut out.per_try),
            ("total", t.total, &mut out.total),
        ] {
            if let Some(v) = v {
                if v.get().is_zero() {
                    let message = format!("timeout `{name}` must be above zero");
                    let d = self.error(Code::InvalidValue, message, &path.key(name));
                    self.push(d.with_label("expected a positive duration"));
                }
                *slot = v.get();
            }
        }
        if (t.per_try.is_some() || t.total.is_some()) && out.per_try > out.total {
            let message = format!(
                "per_try ({}) is longer than total ({})",
                policy::Duration::new(out.per_try),
                policy::Duration::new(out.total)
            );
            let key = if t.per_try.is_some() {
                "per_try"
            } else {
                "total"
            };
            let d = self.warning(Code::PerTryExceedsTotal, message, &path.key(key));
            self.push(d.with_help("an attempt can never use more than the total timeout"));
        }
        out
    }
}
