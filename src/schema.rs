//! The JSON Schema of policy files, generated from the policy types by schemars.
//!
//! `schemas/policy.schema.json` holds this output (plus the final newline `tollgate schema`
//! prints); `tests/schema.rs` fails when the two drift apart and rewrites the file with
//! `TOLLGATE_BLESS=1 cargo test --test schema`.
//!
//! # Validators, as checked (taplo 0.9 from npm `@taplo/cli` 0.7, `jsonschema` 0.61)
//! - schemars emits draft 2020-12 (`$schema` …/draft/2020-12/schema, definitions under
//!   `$defs`). The `jsonschema` crate picks that draft from `$schema`
//!   (`Validator::draft()` is `Draft202012`, asserted in `tests/schema.rs`).
//! - taplo accepts the 2020-12 schema as emitted: it resolves `$ref`s into `$defs`,
//!   reports unknown keys (`Additional properties are not allowed ('x' was unexpected)`,
//!   at the top level, in tables and in inline tables), wrong types, bad enum values and
//!   durations that miss the `Duration` pattern. So no switch to draft-07 is needed.
//!   Errors under an `Option<T>` (an `anyOf` of the type and `null`) are reported by taplo
//!   only as "not valid under any of the schemas listed in the 'anyOf' keyword".
//! - taplo honours the `#:schema ../schemas/policy.schema.json` directive on a policy's
//!   first line, relative to the policy file, from any working directory; a file without
//!   it is not validated at all (and passes), so `scripts/test.sh` also passes `--schema`.
//! - The schema is looser than the loader in places (e.g. `uint32` is a `format`, which
//!   validators treat as an annotation; names are not resolved). It should never be
//!   stricter on a policy tollgate accepts; `tests/no_panic.rs` checks that on generated
//!   policies. One known exception: the loader trims a duration (`" 3s "` is accepted),
//!   the schema's pattern does not.

use crate::policy::Policy;

/// The schema as pretty-printed JSON (what `tollgate schema` prints and
/// `schemas/policy.schema.json` holds).
pub fn policy_schema_json() -> String {
    let schema = schemars::schema_for!(Policy);
    // Serializing a JSON value to a string cannot fail.
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
