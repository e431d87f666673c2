//! Every input a fuzz target once crashed on (`fuzz/regressions/TARGET/`), and every seed
//! (`fuzz/seeds/TARGET/`), through the code of that target (`medic_tests::fuzz`): none may
//! panic. A new crash found by `scripts/fuzz-ci` goes into `fuzz/regressions/` and is a test
//! from then on.

use std::path::PathBuf;

use medic_tests::fuzz;

/// Runs `target` on every file under `fuzz/regressions/NAME` and `fuzz/seeds/NAME`; returns
/// how many there were.
fn run_all(name: &str, target: fn(&[u8])) -> usize {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            eprintln!("{}", path.display());
            target(&bytes);
            count += 1;
        }
    }
    count
}

#[test]
fn config_parse_inputs() {
    assert!(run_all("config_parse", fuzz::config_parse) >= 5);
}

#[test]
fn trace_replay_inputs() {
    // The fuzzer's first find (a snapshot whose `dependents` did not mirror `needs`, which made
    // a need's recovery count a dependent's unhealthy needs below zero) was a format-2 file; the
    // kernel's own test `snapshot::tests::out_of_range_ids_and_disagreeing_indexes_are_refused`
    // covers it now, and `scripts/fuzz-ci` adds new finds here.
    assert!(run_all("trace_replay", fuzz::trace_replay) >= 5);
}

#[test]
fn control_decode_inputs() {
    assert!(run_all("control_decode", fuzz::control_decode) >= 16);
}

#[test]
fn netlink_parse_inputs() {
    assert!(run_all("netlink_parse", fuzz::netlink_parse) >= 8);
}
