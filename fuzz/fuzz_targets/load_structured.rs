//! Structure-aware: the fuzzer's bytes become a policy mini-AST (`policy_gen::Doc`, derived
//! with `arbitrary`), rendered to TOML that resembles a policy, then loaded, compiled and
//! rendered like `load_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/policy_gen/mod.rs"]
mod policy_gen;

thread_local! {
    static DIR: tempfile::TempDir = tempfile::tempdir().expect("temp dir");
}

fuzz_target!(|doc: policy_gen::Doc| {
    let text = doc.render();
    DIR.with(|dir| {
        policy_gen::check_bytes(dir.path(), text.as_bytes());
    });
});
