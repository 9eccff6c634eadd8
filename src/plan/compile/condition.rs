//! A route's `when`: tests of one request attribute, combined with `any`, `all`, `not`.

use super::*;
use crate::diagnostic::{did_you_mean, one_of};
use crate::policy::{Condition, Scalar};

impl Compiler<'_> {
    pub(super) fn condition(&mut self, c: &Condition, path: &KeyPath) -> Option<Matcher> {
        let combos = [c.any.is_some(), c.all.is_some(), c.not.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        let tests: Vec<&str> = [
            ("eq", c.eq.is_some()),
            ("one_of", c.one_of.is_some()),
            ("gt", c.gt.is_some()),
            ("gte", c.gte.is_some()),
            ("lt", c.lt.is_some()),
            ("lte", c.lte.is_some()),
            ("contains_any", c.contains_any.is_some()),
            ("exists", c.exists.is_some()),
        ]
        .iter()
        .filter(|(_, b)| *b)
        .map(|(n, _)| *n)
        .collect();
        if combos > 0 {
            if combos > 1 || !tests.is_empty() || c.attr.is_some() {
                let message =
                    "a condition is either a test of one attribute or one of `any`, `all`, `not`";
                let d = self
                    .error(Code::InvalidCondition, message, path)
                    .with_help("nest them: `{ all = [{ attr = … }, { any = [...] }] }`");
                self.push(d);
                return None;
            }
            return self.combination(c, path);
        }
        let Some(attr_name) = &c.attr else {
            let message = if tests.is_empty() {
                "empty condition".to_string()
            } else {
                format!("`{}` needs an `attr` to test", tests[0])
            };
            let d = self
                .error(Code::InvalidCondition, message, path)
                .with_label("expected `attr` and a test, or `any`/`all`/`not`");
            self.push(d);
            return None;
        };
        let attr = self.attr(attr_name, &path.key("attr"))?;
        self.test(c, attr, attr_name, &tests, path)
    }

    /// `any`, `all` or `not` (exactly one is set).
    fn combination(&mut self, c: &Condition, path: &KeyPath) -> Option<Matcher> {
        if let Some(n) = &c.not {
            return self
                .condition(n, &path.key("not"))
                .map(|m| Matcher::Not(Box::new(m)));
        }
        let (v, key) = match (&c.any, &c.all) {
            (Some(v), _) => (v, "any"),
            (_, Some(v)) => (v, "all"),
            _ => unreachable!("one of any, all, not is set"),
        };
        if v.is_empty() {
            let d = self.error(
                Code::InvalidCondition,
                format!("`{key}` is empty"),
                &path.key(key),
            );
            self.push(d.with_label("expected at least one condition"));
            return None;
        }
        let ms: Vec<Option<Matcher>> = v
            .iter()
            .enumerate()
            .map(|(i, c)| self.condition(c, &path.key(key).index(i)))
            .collect();
        let ms: Vec<Matcher> = ms.into_iter().collect::<Option<_>>()?;
        Some(if key == "any" {
            Matcher::Any(ms)
        } else {
            Matcher::All(ms)
        })
    }

    fn attr(&mut self, name: &str, at: &KeyPath) -> Option<Attr> {
        let attr = Attr::from_name(name);
        if attr.is_none() {
            let names = || Attr::ALL.iter().map(|(n, _)| *n);
            let message = format!("unknown request attribute `{name}`");
            let d = self
                .error(Code::UnknownAttribute, message, at)
                .with_label(format!("expected one of {}", one_of(names())))
                .with_help_opt(did_you_mean(name, names()));
            self.push(d);
        }
        attr
    }

    /// The one test of an attribute.
    fn test(
        &mut self,
        c: &Condition,
        attr: Attr,
        attr_name: &str,
        tests: &[&str],
        path: &KeyPath,
    ) -> Option<Matcher> {
        let numeric: Vec<(Cmp, f64, &str)> = [
            (Cmp::Gt, c.gt, "gt"),
            (Cmp::Gte, c.gte, "gte"),
            (Cmp::Lt, c.lt, "lt"),
            (Cmp::Lte, c.lte, "lte"),
        ]
        .into_iter()
        .filter_map(|(op, v, n)| v.map(|v| (op, v, n)))
        .collect();
        let others = tests.len() - numeric.len();
        if tests.is_empty() {
            let message = format!("condition on `{attr_name}` has no test");
            let d = self.error(Code::InvalidCondition, message, path)
                .with_label("expected one of `eq`, `one_of`, `gt`, `gte`, `lt`, `lte`, `contains_any`, `exists`");
            self.push(d);
            return None;
        }
        if others > 1 || (others == 1 && !numeric.is_empty()) {
            let message = format!(
                "one condition may hold one test; found {}",
                tests.join(", ")
            );
            let d = self
                .error(Code::InvalidCondition, message, path)
                .with_help("combine several tests with `all = [...]`");
            self.push(d);
            return None;
        }
        if c.min_hits.is_some() && c.contains_any.is_none() {
            let message = "min_hits only applies to contains_any";
            self.push(self.error(Code::InvalidCondition, message, &path.key("min_hits")));
        }
        if !numeric.is_empty() {
            return self.compare(attr, attr_name, &numeric, path);
        }
        if let Some(words) = &c.contains_any {
            return self.contains_any(attr, attr_name, words, c.min_hits, path);
        }
        if let Some(e) = c.exists {
            return Some(Matcher::Exists(attr, e));
        }
        let (values, key): (Vec<Scalar>, &str) = match (&c.eq, &c.one_of) {
            (Some(v), _) => (vec![v.clone()], "eq"),
            (_, Some(vs)) => (vs.clone(), "one_of"),
            _ => unreachable!("tests is non-empty and every other test returned above"),
        };
        self.one_of(attr, attr_name, values, key, path)
    }

    /// `gt`, `gte`, `lt`, `lte` (all of them, when several are set).
    fn compare(
        &mut self,
        attr: Attr,
        attr_name: &str,
        numeric: &[(Cmp, f64, &str)],
        path: &KeyPath,
    ) -> Option<Matcher> {
        if attr.kind() != AttrKind::Number {
            let key = numeric[0].2;
            let message = format!("`{key}` compares numbers but `{attr_name}` is not numeric");
            let d = self
                .error(Code::AttributeType, message, &path.key(key))
                .with_label("numeric attributes: `max_tokens`, `input_tokens`");
            self.push(d);
            return None;
        }
        let mut ms: Vec<Matcher> = numeric
            .iter()
            .map(|(op, v, _)| Matcher::Compare(attr, *op, *v))
            .collect();
        Some(if ms.len() == 1 {
            ms.pop().expect("len is 1")
        } else {
            Matcher::All(ms)
        })
    }

    fn contains_any(
        &mut self,
        attr: Attr,
        attr_name: &str,
        words: &[String],
        min_hits: Option<u32>,
        path: &KeyPath,
    ) -> Option<Matcher> {
        let at = path.key("contains_any");
        if attr.kind() == AttrKind::Number {
            let message = format!("contains_any tests text but `{attr_name}` is numeric");
            self.push(self.error(Code::AttributeType, message, &at));
            return None;
        }
        if words.is_empty() {
            let d = self.error(Code::InvalidCondition, "contains_any is empty", &at);
            self.push(d.with_label("expected at least one word"));
            return None;
        }
        let min_hits = min_hits.unwrap_or(1);
        if min_hits == 0 || min_hits as usize > words.len() {
            let message = format!(
                "min_hits {min_hits} can never be met by {} word(s)",
                words.len()
            );
            let d = self.error(Code::InvalidCondition, message, &path.key("min_hits"));
            self.push(d.with_label(format!("expected 1 to {}", words.len())));
            return None;
        }
        Some(Matcher::ContainsAny {
            attr,
            words: words.iter().map(|w| w.to_lowercase()).collect(),
            min_hits,
        })
    }

    /// `eq` or `one_of` (`key`): values of the attribute's type; a caller must exist.
    fn one_of(
        &mut self,
        attr: Attr,
        attr_name: &str,
        values: Vec<Scalar>,
        key: &str,
        path: &KeyPath,
    ) -> Option<Matcher> {
        if values.is_empty() {
            let d = self.error(Code::InvalidCondition, "one_of is empty", &path.key(key));
            self.push(d.with_label("expected at least one value"));
            return None;
        }
        let value_path = |i: usize| {
            if key == "eq" {
                path.key("eq")
            } else {
                path.key("one_of").index(i)
            }
        };
        let kind = attr.kind();
        for (i, v) in values.iter().enumerate() {
            let ok = match kind {
                AttrKind::Number => matches!(v, Scalar::Int(_) | Scalar::Float(_)),
                AttrKind::Text | AttrKind::List => matches!(v, Scalar::Str(_)),
            };
            if !ok {
                let want = if kind == AttrKind::Number {
                    "number"
                } else {
                    "string"
                };
                let message = format!("`{attr_name}` is compared with {v}, which is not a {want}");
                self.push(self.error(Code::AttributeType, message, &value_path(i)));
                return None;
            }
        }
        if attr == Attr::Caller && !self.p().callers.is_empty() {
            for (i, v) in values.iter().enumerate() {
                if let Scalar::Str(name) = v {
                    self.resolve(Section::Callers, name, &value_path(i));
                }
            }
        }
        Some(Matcher::OneOf(attr, values))
    }
}
