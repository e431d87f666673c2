//! # medic-sim: the deterministic simulator of medic
//!
//! A simulated [`world::World`] and a virtual clock stand in for the io-adapters; the real
//! [`medic_kernel::Kernel`] runs unchanged. One `u64` seed decides everything: a random
//! service graph ([`graph`]), a swarm of faults ([`world::Faults`]), the behaviour of every
//! process, and the external events (link faults, crashes, file changes, operator commands,
//! config reloads). After every step the checkers of [`check`] hold the kernel to the properties
//! of architecture.md §7, judged by a reference model that works out each service's condition
//! from the world; a second phase with faults off checks liveness, and a shutdown checks stop
//! order. A failure prints the seed, the property, the service, its history, the command that
//! reproduces it in the test it came from, and writes the trace (architecture.md §6) for
//! `medic replay`.
//!
//! ```text
//! SIM_SEEDS=100000 cargo test -p medic-sim --release --test seeds   # a soak
//! SIM_SEED=1234 cargo test -p medic-sim --test seeds -- --nocapture  # one seed
//! ```

pub mod check;
pub mod crash;
pub mod devices;
pub mod fresh;
pub mod graph;
pub mod rng;
pub mod run;
pub mod secrets;
pub mod templates;
pub mod timed;
pub mod world;

use medic_kernel::{Effect, Input, Instant, Kernel};

pub use check::{Checker, Property, Violation};
pub use run::{
    check_determinism, parse_script, reproduce_command, run_config, run_script, run_seed, run_with,
    script_text, Failure, Op, Options, Origin, Report,
};
pub use world::Faults;

/// Steps at one instant before a run is judged stuck there. A boot of every generated service
/// with its world's answers takes a few hundred; a kernel in a loop with its world (a spawn, an
/// exit, a spawn again …, or a deadline a tick does not move) reaches this in a fraction of a
/// second, where without it the run would go on until the test's timeout or out of memory.
pub const MAX_STEPS_AT_ONE_INSTANT: u32 = 100_000;

/// Counts the steps taken at one instant: [`OneInstant::step`] says when a run has taken
/// [`MAX_STEPS_AT_ONE_INSTANT`] without time moving.
#[derive(Debug, Default)]
pub struct OneInstant {
    at: Instant,
    steps: u32,
}

impl OneInstant {
    /// One step at `now`; `Some(why)` once, on the step that reaches the bound.
    pub fn step(&mut self, now: Instant) -> Option<String> {
        if self.at != now {
            self.at = now;
            self.steps = 0;
        }
        self.steps += 1;
        (self.steps == MAX_STEPS_AT_ONE_INSTANT).then(|| {
            format!(
                "{MAX_STEPS_AT_ONE_INSTANT} steps at {now} without time moving: the kernel and \
                 its world answer each other for ever"
            )
        })
    }
}

/// What the simulator drives: the kernel, or a wrapper around it (the checkers' tests wrap it
/// in deliberately broken ones to prove that the checkers catch them).
pub trait Supervisor {
    /// [`Kernel::step`].
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>);
    /// [`Kernel::next_deadline`].
    fn next_deadline(&self) -> Option<Instant>;
    /// The kernel inside, for the checkers to read conditions and configs.
    fn kernel(&self) -> &Kernel;
}

impl Supervisor for Kernel {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        Kernel::step(self, now, input, out)
    }

    fn next_deadline(&self) -> Option<Instant> {
        Kernel::next_deadline(self)
    }

    fn kernel(&self) -> &Kernel {
        self
    }
}

/// Seeds to run, from the environment: `SIM_SEED=S` runs only `S`; `SIM_SEEDS=N` runs `0..N`;
/// otherwise `0..default`.
pub fn seeds_from_env(default: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    // `SIM_SEED_START=S` shifts the range, so a long soak can be resumed or split.
    let start: u64 = std::env::var("SIM_SEED_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (start..start.saturating_add(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_stuck_on_the_step_that_reaches_the_bound_at_one_instant_and_only_then() {
        let mut guard = OneInstant::default();
        let t = Instant::from_millis(5);
        for _ in 1..MAX_STEPS_AT_ONE_INSTANT {
            assert_eq!(guard.step(t), None);
        }
        let why = guard.step(t).expect("the bound is reached");
        assert!(why.contains("without time moving"), "{why}");
        assert_eq!(guard.step(t), None, "said once");
        // Time moves: the count starts again.
        let later = Instant::from_millis(6);
        for _ in 1..MAX_STEPS_AT_ONE_INSTANT {
            assert_eq!(guard.step(later), None);
        }
        assert!(guard.step(later).is_some());
    }
}
