//! Shared helpers for behaviour tests: compile a policy from TOML text.
#![allow(dead_code)]

use std::io::Write;

use tollgate::plan::Plan;
use tollgate::policy::LoadOptions;

/// Compiles `toml` (written to a temp file) with no environment overrides; panics with the
/// rendered diagnostics if it does not compile.
pub fn plan(toml: &str) -> Plan {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.toml");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(toml.as_bytes()))
        .expect("write policy");
    match Plan::load(&LoadOptions::new([path]).with_env(Vec::<(String, String)>::new())) {
        Ok(c) => c.plan,
        Err(d) => panic!("test policy does not compile:\n{}", d.render(false)),
    }
}
