//! `medic`: the supervisor daemon and its command line, in one binary (one binary saves flash).
//!
//! `medic daemon` runs the supervisor ([`daemon`]); every other command is in [`cli`].

mod cli;
mod daemon;

fn main() -> std::process::ExitCode {
    cli::main()
}
