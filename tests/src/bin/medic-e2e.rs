//! The `medic` binary under test, built by this package from the daemon's library, so that
//! `cargo test` always runs the current code (a binary of another package is not built or
//! located by `cargo test`).

fn main() -> std::process::ExitCode {
    medic_cli::main()
}
