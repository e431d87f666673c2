//! The secrets scenario (DESIGN §10, `medic_sim::secrets`) on many seeds, and proof that its
//! checker bites: a kernel that takes every change as confirmed is caught keeping an
//! unconfirmed push past its deadline.

use medic_kernel::{Effect, Input, Instant, Kernel};
use medic_sim::secrets::run_secrets;
use medic_sim::{seeds_from_env, Supervisor};

#[test]
fn an_unconfirmed_push_is_rolled_back_and_its_consumer_acts_once() {
    let seeds = seeds_from_env(200);
    let (mut pushes, mut refused, mut secret_rb, mut config_rb, mut late, mut windows) =
        (0, 0, 0, 0, 0, 0);
    for &seed in &seeds {
        match run_secrets(seed, |k| k) {
            Ok(r) => {
                pushes += r.pushes;
                refused += r.refused;
                secret_rb += r.secret_rollbacks;
                config_rb += r.config_rollbacks;
                late += r.late_confirms;
                windows += r.windows;
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    eprintln!(
        "{} seeds: {pushes} pushes, {refused} refused while a change waited, {secret_rb} \
         secret roll-backs ({windows} judged), {config_rb} config roll-backs, {late} late \
         confirmations",
        seeds.len()
    );
    // The scenario exercises what it claims to.
    if std::env::var_os("SIM_SEED").is_none() {
        assert!(secret_rb > 100, "only {secret_rb} secret roll-backs");
        assert!(windows > 50, "only {windows} roll-back windows judged");
        assert!(config_rb > 50, "only {config_rb} config roll-backs");
        assert!(refused > 50 && late > 50, "{refused} refused, {late} late");
    }
}

/// Confirms every change the moment it is made: nothing is ever rolled back.
struct ConfirmsEverything(Kernel);

impl Supervisor for ConfirmsEverything {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        self.0.step(now, input, out);
        if self.0.pending().is_some() {
            self.0.step(now, Input::Confirm, out);
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.0.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.0
    }
}

#[test]
fn a_kernel_that_never_rolls_back_is_caught() {
    let caught = (0..20).filter_map(|seed| run_secrets(seed, ConfirmsEverything).err());
    let failure = caught.into_iter().next().expect("no seed caught it");
    let text = failure.to_string();
    assert!(
        text.contains("deadline passed") && text.contains("not the previous"),
        "{text}"
    );
}
