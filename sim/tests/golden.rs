//! The committed golden trace must still replay identically: an encoding change of the trace,
//! `Input`, `Effect` or the kernel snapshot, or a change of the kernel's decisions on this
//! scenario, fails here instead of slipping in unnoticed.
//!
//! After a deliberate change (and a bumped `FORMAT_VERSION` where the encoding changed),
//! regenerate with `MEDIC_BLESS=1 cargo test -p medic-sim --test golden`.

use core::time::Duration;
use std::path::PathBuf;

use medic_kernel::trace::{decode, replay, FORMAT_VERSION};
use medic_sim::{run_config, Faults, Op, Options, Origin};

/// A router's small graph; dnsmasq crash-loops until faults stop.
const CONFIG: &str = r#"[service.wan]
interface = "eth0"
ready-when = "carrier"

[service.firewall]
oneshot = ["/etc/firewall.sh", "up"]
stop = ["/etc/firewall.sh", "down"]
needs = ["wan"]

[service.dnsmasq]
run = ["/usr/sbin/dnsmasq", "-k"]
needs = ["firewall"]
give-up-after = 5
max-backoff = "8s"
retry-after = "30s"
"#;

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/crash-loop.trace")
}

fn record() -> Vec<u8> {
    let faults = Faults {
        crash_loop: 1000,
        ..Faults::default()
    };
    let script = [
        Op::Wait(20_000),
        Op::LinkNoCarrier(0),
        Op::Wait(3_000),
        Op::LinkRestore(0),
        Op::Wait(40_000),
    ];
    let opts = Options {
        fault_time: Duration::from_secs(60),
        write_trace: false,
        origin: Origin {
            target: "golden",
            name: "the_golden_scenario_still_records_the_same_trace",
        },
        ..Options::default()
    };
    let report = run_config(7, CONFIG, faults, &script, &opts).unwrap_or_else(|f| panic!("{f}"));
    report.trace.to_file_bytes()
}

#[test]
fn the_golden_crash_loop_trace_still_replays_identically() {
    if std::env::var_os("MEDIC_BLESS").is_some() {
        std::fs::write(path(), record()).expect("write the golden trace");
    }
    let bytes = std::fs::read(path()).expect("tests/golden/crash-loop.trace is committed");
    let trace = decode(&bytes).unwrap_or_else(|e| panic!("golden trace: {e}"));
    assert_eq!(trace.header.version, FORMAT_VERSION);
    assert!(!trace.torn_tail);
    assert!(trace.records.len() > 30, "{} records", trace.records.len());
    let report = replay(&trace);
    assert!(report.identical(), "{report}");
    assert_eq!(
        report.to_string(),
        format!("{} steps replayed, identical", trace.records.len())
    );
}

#[test]
fn the_golden_scenario_still_records_the_same_trace() {
    let bytes = std::fs::read(path()).expect("committed");
    let golden = decode(&bytes).expect("decodes");
    let fresh = decode(&record()).expect("decodes");
    assert_eq!(
        fresh.digest(),
        golden.digest(),
        "the simulator or kernel changed this scenario"
    );
}

#[test]
fn a_torn_golden_trace_replays_what_it_has() {
    let bytes = std::fs::read(path()).expect("committed");
    let torn = decode(&bytes[..bytes.len() - 2]).expect("a torn tail is not an error");
    assert!(torn.torn_tail);
    assert!(replay(&torn).identical());
}
