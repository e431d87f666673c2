//! The `medic` binary: see the `medic_cli` library.

fn main() -> std::process::ExitCode {
    medic_cli::main()
}
