//! Failure-class lists (`retry_on`, `failover_on`, `trip_on`).

use super::*;
use crate::diagnostic::did_you_mean;

/// The keywords a class list may hold (besides statuses, ranges and error codes).
pub(super) const CLASS_KEYWORDS: [&str; 5] = [
    "connect",
    "timeout",
    "breaker_open",
    "limited",
    "context_length",
];

impl Compiler<'_> {
    pub(super) fn classes(
        &mut self,
        entries: Option<&Vec<String>>,
        default: &[&str],
        path: &KeyPath,
    ) -> ClassSet {
        let Some(entries) = entries else {
            return ClassSet::builtin(default);
        };
        let mut set = ClassSet::default();
        for (i, e) in entries.iter().enumerate() {
            match e.parse::<ClassMatcher>() {
                Ok(m) => {
                    if let ClassMatcher::Code(code) = &m {
                        self.possible_class_typo(code, &path.index(i));
                    }
                    set.0.push(m);
                }
                Err(err) => {
                    let d = self.error(Code::InvalidClass, format!("{err}"), &path.index(i))
                        .with_label("expected `connect`, `timeout`, `breaker_open`, `limited`, `context_length`, a status (`429`), a range (`5xx`) or an error code")
                        .with_help_opt(did_you_mean(e, CLASS_KEYWORDS));
                    self.push(d);
                }
            }
        }
        set
    }

    /// An error code one typo away from a keyword (`timout`, `breaker-open`) is almost
    /// certainly the keyword misspelt: as a code it would never match anything.
    fn possible_class_typo(&mut self, code: &str, at: &KeyPath) {
        if code.eq_ignore_ascii_case(CONTEXT_LENGTH_CODE) {
            // The code `context_length` stands for: not a misspelt keyword.
            return;
        }
        if let Some(help) = did_you_mean(code, CLASS_KEYWORDS) {
            let message =
                format!("`{code}` is taken as an error code from response bodies, not a keyword");
            let d = self.warning(Code::PossibleTypo, message, at)
                .with_label("expected `connect`, `timeout`, `breaker_open`, `limited` or `context_length` for a keyword")
                .with_help(help);
            self.push(d);
        }
    }
}
