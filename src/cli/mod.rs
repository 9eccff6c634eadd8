//! The `tollgate` command line: `check`, `schema`, `explain`, `watch`, `serve`, `demo`,
//! `simulate`.
//!
//! Exit codes: 0 success (warnings allowed), 1 an invalid policy, 2 a usage or I/O error.

mod check;
mod demo;
mod explain;
mod serve;
mod simulate;
mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Call flaky, rate-limited, priced upstream APIs under policies written as TOML.
#[derive(Parser, Debug)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate policy files: every error at once, with file:line:col.
    Check {
        /// Policy files, or directories of *.toml files (merged in name order).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Check all paths as ONE policy (what `serve --policy` loads). Without it, every
        /// file (directories expanded to their *.toml files) is checked on its own.
        #[arg(long)]
        merge: bool,
    },
    /// Print the JSON Schema of policy files.
    Schema,
    /// Print the resolved plan and the static worst-case bounds of every route.
    Explain {
        /// Policy files, or directories of *.toml files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Input tokens per request, for the cost bounds.
        #[arg(long, default_value_t = 1000)]
        input_tokens: u64,
        /// Output tokens per request, for the cost bounds.
        #[arg(long, default_value_t = 500)]
        output_tokens: u64,
        /// `human` (tables) or `json` (one document: upstreams, models, routes with their
        /// bounds, budgets, warnings; for CI gates on worst-case cost or latency).
        #[arg(long, value_enum, default_value_t = ExplainFormat::Human)]
        format: ExplainFormat,
    },
    /// Load a policy, then reload it on every change (and on SIGHUP), one line per reload.
    Watch {
        /// Policy files, or directories of *.toml files (merged in name order).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Quiet time after the last file event before reloading, in milliseconds.
        #[arg(long, default_value_t = 75)]
        debounce_ms: u64,
    },
    /// Run the OpenAI-compatible relay: every call under the policy.
    Serve {
        /// Policy files, or directories of *.toml files (merged as one policy).
        #[arg(long = "policy", required = true)]
        policy: Vec<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Largest request body accepted, in bytes.
        #[arg(long, default_value_t = crate::server::DEFAULT_MAX_BODY)]
        max_body: usize,
    },
    /// Read a caller key from stdin and print its SHA-256 (hex), for `[callers.NAME]
    /// key_sha256`. Surrounding whitespace (the trailing newline) is not part of the key.
    HashKey,
    /// Simulated upstreams in-process, the reference policy, ~2,000 requests, and a report.
    /// Needs no key and no network.
    Demo {
        /// The policy to run (its upstreams are pointed at the simulated ones).
        #[arg(long, default_value = "policies/relay.toml")]
        policy: PathBuf,
        /// Requests to send.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Requests sent per second (open loop, so the run takes requests / rate seconds).
        #[arg(long, default_value_t = 250.0)]
        rate: f64,
        /// Seed of the simulated faults and of the request mix.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Run a scenario (traffic, upstream behaviour, events over simulated time) under the
    /// policy, in virtual time, and report what it did. Exit 1 when an `[expect]` gate
    /// fails, 2 for a bad scenario or arguments.
    Simulate(simulate::Args),
    /// Print the JSON Schema of scenario files.
    ScenarioSchema,
}

/// Diagnostic output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// rustc-style, with source snippets.
    Human,
    /// One JSON document, for CI annotations.
    Json,
    /// One line per diagnostic: `file:line:col: severity[code]: message`.
    Short,
}

/// `explain` output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    /// Tables.
    Human,
    /// One JSON document.
    Json,
}

/// The exit code for a policy that did not load and compile: usage/I-O when a file could
/// not be read, else invalid.
pub(crate) fn failed_exit(io_failed: bool) -> ExitCode {
    ExitCode::from(if io_failed { EXIT_USAGE } else { EXIT_INVALID })
}

/// Exit code for an invalid policy.
pub const EXIT_INVALID: u8 = 1;
/// Exit code for a usage or I/O error.
pub const EXIT_USAGE: u8 = 2;

/// `print!` that ends the program quietly when stdout is a closed pipe
/// (`tollgate explain … | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(&format!($($arg)*))
    };
}
pub(crate) use out;

/// Writes to stdout; a closed pipe exits 0, any other write error exits 2 with a message.
pub(crate) fn write_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("tollgate: cannot write to stdout: {e}");
        std::process::exit(i32::from(EXIT_USAGE));
    }
}

/// Whether to colour output written to stdout.
pub(crate) fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Runs the CLI with the process arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Check {
            paths,
            format,
            merge,
        } => check::run(&paths, format, merge),
        Command::Schema => {
            out!("{}\n", crate::schema::policy_schema_json());
            ExitCode::SUCCESS
        }
        Command::Explain {
            paths,
            input_tokens,
            output_tokens,
            format,
        } => explain::run(
            &paths,
            crate::plan::TokenCounts {
                input: input_tokens,
                output: output_tokens,
            },
            format,
        ),
        Command::Watch { paths, debounce_ms } => {
            watch::run(&paths, std::time::Duration::from_millis(debounce_ms))
        }
        Command::Serve {
            policy,
            listen,
            max_body,
        } => serve::run(&policy, listen, max_body),
        Command::HashKey => {
            let mut key = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut key) {
                eprintln!("error: cannot read the key from stdin: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            let key = key.trim();
            if key.is_empty() {
                eprintln!("error: no key on stdin (try `printf %s \"$KEY\" | tollgate hash-key`)");
                return ExitCode::from(EXIT_USAGE);
            }
            out!("{}\n", crate::server::hash_key_hex(key));
            ExitCode::SUCCESS
        }
        Command::Demo {
            policy,
            requests,
            concurrency,
            rate,
            seed,
        } => demo::run(&policy, requests, concurrency, rate, seed),
        Command::Simulate(args) => simulate::run(&args),
        Command::ScenarioSchema => {
            out!("{}\n", crate::sim::file::schema_json());
            ExitCode::SUCCESS
        }
    }
}
