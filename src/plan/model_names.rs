//! The `model` values a plan knows, indexed once when it is compiled: route names, model
//! names, and the values routes' conditions test `model` against. The relay refuses any
//! other (`model_not_found`), and asks this per request.

use std::collections::HashSet;

use super::{Attr, Matcher, Model, Route};
use crate::policy::Scalar;

/// The index behind [`Plan::knows_model_name`](super::Plan::knows_model_name).
#[derive(Debug, Default)]
pub(crate) struct ModelNames {
    /// Route and model names, and the values of `model = …` / `model in […]` conditions.
    exact: HashSet<String>,
    /// The (lowercased) words of `model contains …` conditions.
    words: Vec<String>,
}

impl ModelNames {
    pub(crate) fn new(routes: &[Route], models: &[Model]) -> ModelNames {
        let mut n = ModelNames::default();
        n.exact.extend(routes.iter().map(|r| r.name.clone()));
        n.exact.extend(models.iter().map(|m| m.name.clone()));
        for w in routes.iter().filter_map(|r| r.when.as_ref()) {
            n.add_tested(w);
        }
        n
    }

    /// The `model` values `w` tests, wherever in it (under `any`, `all` or `not` too).
    fn add_tested(&mut self, w: &Matcher) {
        match w {
            Matcher::OneOf(Attr::Model, vs) => {
                self.exact.extend(vs.iter().filter_map(|v| match v {
                    Scalar::Str(s) => Some(s.clone()),
                    _ => None,
                }));
            }
            Matcher::ContainsAny {
                attr: Attr::Model,
                words,
                ..
            } => self.words.extend(words.iter().cloned()),
            Matcher::Any(ms) | Matcher::All(ms) => ms.iter().for_each(|x| self.add_tested(x)),
            Matcher::Not(x) => self.add_tested(x),
            _ => {}
        }
    }

    pub(crate) fn contains(&self, m: &str) -> bool {
        if self.exact.contains(m) {
            return true;
        }
        if self.words.is_empty() {
            return false;
        }
        let lower = m.to_lowercase();
        self.words.iter().any(|w| lower.contains(w.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::Plan;
    use crate::policy::LoadOptions;

    #[test]
    fn names_and_the_model_values_conditions_test_are_known_and_nothing_else() {
        let mut toml = String::from(
            "[upstreams.up]\nbase_url = \"http://127.0.0.1:1/v1\"\n[models.m]\nupstream = \"up\"\n",
        );
        for (name, when) in [
            (
                "pinned",
                r#"{ attr = "model", one_of = ["gpt-4o", "gpt-4.1"] }"#,
            ),
            (
                "nested",
                r#"{ any = [{ attr = "task", eq = "x" }, { not = { attr = "model", contains_any = ["Claude"] } }] }"#,
            ),
            ("other-attrs", r#"{ attr = "task", eq = "summary" }"#),
            ("main", ""),
        ] {
            let when = if when.is_empty() {
                String::new()
            } else {
                format!("when = {when}\n")
            };
            toml += &format!("[[routes]]\nname = \"{name}\"\n{when}targets = [\"m\"]\n");
        }
        let opts = LoadOptions::from_text("p.toml", toml.as_str())
            .with_env(Vec::<(String, String)>::new());
        let plan = Plan::load(&opts).expect("compiles").plan;
        for known in [
            "main",
            "pinned",
            "m",
            "gpt-4o",
            "gpt-4.1",
            "my-CLAUDE-3",
            "claude",
        ] {
            assert!(plan.knows_model_name(known), "{known}");
        }
        for unknown in ["gpt-9", "summary", "x", "up", "Main", ""] {
            assert!(!plan.knows_model_name(unknown), "{unknown}");
        }
    }
}
