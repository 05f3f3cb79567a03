//! `fleetgate`: the reconciler's command line ([`fleetgate::cli`]).

fn main() -> std::process::ExitCode {
    fleetgate::cli::main()
}
