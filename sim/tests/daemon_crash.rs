//! Properties 2 and 4 across crashes of the daemon itself (DESIGN §13), and proof that the
//! checkers bite: a kernel that forgets the processes it adopted, and one that forgets strikes
//! across a crash, are caught.

use medic_sim::crash::{run_crash_seed, Mutant};

#[test]
fn properties_2_and_4_hold_across_crashes_of_the_daemon() {
    let mut crashes = 0;
    let mut adopted = 0;
    let mut unseen = 0;
    let mut failures = Vec::new();
    let seeds = medic_sim::seeds_from_env(200);
    for &seed in &seeds {
        match run_crash_seed(seed, Mutant::None) {
            Ok(r) => {
                crashes += r.crashes;
                adopted += r.adopted;
                unseen += r.ended_unseen;
            }
            Err(f) => failures.push(f),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!(
        "{crashes} crashes of the daemon, {adopted} processes adopted, {unseen} ended unseen"
    );
    // The counts are for the default 200 seeds; fewer (SIM_SEEDS=100 in scripts/mutants) may
    // see fewer processes end unseen (22 in the first 100).
    if std::env::var_os("SIM_SEED").is_none() && seeds.len() >= 200 {
        assert!(
            crashes > 1000 && adopted > 500 && unseen > 50,
            "the runs exercise adoption"
        );
    }
}

/// The first seed of `0..200` that `mutant` fails, with its message.
fn caught(mutant: Mutant) -> Option<(u64, String)> {
    (0..200).find_map(|seed| run_crash_seed(seed, mutant).err().map(|e| (seed, e)))
}

#[test]
fn a_kernel_that_forgets_adopted_processes_is_caught() {
    let (seed, why) = caught(Mutant::ForgetsAdopted).expect("caught on some seed");
    eprintln!("seed {seed}: {why}");
    assert!(
        why.contains("property 4 one instance"),
        "seed {seed}: {why}"
    );
}

#[test]
fn a_kernel_that_forgets_strikes_across_a_crash_is_caught() {
    let (seed, why) = caught(Mutant::ForgetsStrikes).expect("caught on some seed");
    eprintln!("seed {seed}: {why}");
    assert!(
        why.contains("property 2 bounded healing"),
        "seed {seed}: {why}"
    );
}
