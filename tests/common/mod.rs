//! Shared helpers for behaviour tests: compile a policy from TOML text.
#![allow(dead_code)]

use tollgate::plan::Plan;
use tollgate::policy::LoadOptions;

/// Compiles `toml` with no environment overrides; panics with the rendered diagnostics if
/// it does not compile.
pub fn plan(toml: &str) -> Plan {
    let opts = LoadOptions::from_text("policy.toml", toml).with_env(Vec::<(String, String)>::new());
    match Plan::load(&opts) {
        Ok(c) => c.plan,
        Err(d) => panic!("test policy does not compile:\n{}", d.render(false)),
    }
}
