//! `medic`: the supervisor daemon and its command line, in one binary (one binary saves flash).
//!
//! `medic daemon` runs the supervisor ([`daemon`]); every other command is in [`cli`]. The
//! binary is a one-line `main` around [`main`], so the end-to-end tests build the same code
//! into their own binary without compiling it twice.

mod cli;
mod daemon;
mod log;

/// Parses the command line and runs the command; the process's exit status.
pub fn main() -> std::process::ExitCode {
    cli::main()
}
