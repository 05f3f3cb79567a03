//! `fleetgate`: the reconciler's command line ([`fleetgate::cli`]).

/// Rendering and planning thousands of bundles is allocation-bound: mimalloc takes a third
/// off a plan's CPU against the system allocator (docs/benchmarks.md, "Scale").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fleetgate::cli::main()
}
