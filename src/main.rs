// mimalloc: loading and compiling a large policy is allocation-bound (many small keys,
// strings and tables made and freed); see BENCHMARKS.md, "Scale".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tollgate::cli::main()
}
