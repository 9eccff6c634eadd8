//! Arbitrary bytes as a policy file: load, compile, render diagnostics in every format.
//! The invariants checked are those of `tests/policy_gen::check_bytes` (shared with
//! `tests/no_panic.rs`, CI's stand-in for this target).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/policy_gen/mod.rs"]
mod policy_gen;

thread_local! {
    /// One directory for the whole run: each input overwrites `policy.toml` in it.
    static DIR: tempfile::TempDir = tempfile::tempdir().expect("temp dir");
}

fuzz_target!(|data: &[u8]| {
    DIR.with(|dir| {
        policy_gen::check_bytes(dir.path(), data);
    });
});
