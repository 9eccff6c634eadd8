//! Running the `tollgate` binary.

use std::process::{Command, Output};

/// The binary cargo built for the tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// Runs `tollgate ARGS` without colour and without the overrides of the caller's
/// environment that would change what is tested.
pub fn tollgate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("TOLLGATE__DEFAULTS__TIMEOUTS__TOTAL")
        .output()
        .expect("runs tollgate")
}

/// Its exit code.
pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed by a signal")
}

/// Its stdout, then its stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
