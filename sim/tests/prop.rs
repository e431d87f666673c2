//! proptest scenarios: a list of operations (shrinkable) against a graph and process
//! behaviours from a seed (not shrunk, so a shrunk failure keeps its world).

use core::time::Duration;

use medic_sim::{parse_script, run_script, Op, Options, Origin};
use proptest::collection::vec;
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..30_000).prop_map(Op::Wait),
        1 => any::<u8>().prop_map(Op::Crash),
        1 => any::<u8>().prop_map(Op::Hang),
        1 => any::<u8>().prop_map(Op::LinkAbsent),
        1 => any::<u8>().prop_map(Op::LinkAdminDown),
        1 => any::<u8>().prop_map(Op::LinkNoCarrier),
        1 => any::<u8>().prop_map(Op::LinkNoAddress),
        1 => any::<u8>().prop_map(Op::LinkRestore),
        1 => any::<u8>().prop_map(Op::FileChange),
        1 => any::<u8>().prop_map(Op::Start),
        1 => any::<u8>().prop_map(Op::Stop),
        1 => any::<u8>().prop_map(Op::Restart),
        1 => any::<u8>().prop_map(Op::Reload),
        1 => Just(Op::Reconfigure),
        1 => Just(Op::BadConfig),
    ]
}

/// The options of these scenarios; a failure's reproduce line reruns it with
/// [`replay_script`] (`SIM_SEED` and `SIM_SCRIPT`).
fn opts() -> Options {
    Options {
        max_services: 12,
        fault_time: Duration::from_secs(60),
        write_trace: true,
        origin: Origin {
            target: "prop",
            name: "replay_script",
        },
        ..Options::default()
    }
    .from_env()
}

/// Replays one scripted scenario from the environment (what a failure's reproduce line sets):
/// `SIM_SEED=S SIM_SCRIPT='Wait(200),Crash(3)'`. Without `SIM_SCRIPT` it does nothing.
#[test]
fn replay_script() {
    let Ok(text) = std::env::var("SIM_SCRIPT") else {
        return;
    };
    let script = parse_script(&text).unwrap_or_else(|e| panic!("SIM_SCRIPT: {e}"));
    for seed in medic_sim::seeds_from_env(1) {
        if let Err(f) = run_script(seed, &script, &opts()) {
            panic!("{f}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn scripted_scenarios_keep_every_property(
        seed in any::<u64>().no_shrink(),
        ops in vec(op(), 0..60)
    ) {
        if let Err(f) = run_script(seed, &ops, &opts()) {
            prop_assert!(false, "{}", f);
        }
    }
}

/// A crash loop, an operator stop and start, and a link that flaps under a need: the shape of
/// the bugs the simulator found, kept as a fixed scenario.
#[test]
fn operator_stop_start_during_a_link_flap() {
    let ops = [
        Op::Wait(2_000),
        Op::Crash(0),
        Op::LinkNoCarrier(0),
        Op::Stop(1),
        Op::Wait(500),
        Op::LinkRestore(0),
        Op::Reload(2),
        Op::Start(1),
        Op::Wait(10_000),
        Op::Reconfigure,
        Op::Wait(5_000),
    ];
    for seed in 0..32 {
        if let Err(f) = run_script(seed, &ops, &opts()) {
            panic!("{f}");
        }
    }
}
