//! End to end: timed jobs under the real daemon (DESIGN.md §11): `every` on a oneshot,
//! `restart-every` on a process, and a run that is still going when the next is due.

use medic_tests::{wait_for, Daemon};

fn notes(d: &Daemon, name: &str) -> Vec<String> {
    d.history(name)
        .iter()
        .filter_map(|r| r["note"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_oneshot_with_every_runs_again_and_a_run_still_going_is_not_started_twice() {
    let d = Daemon::start(
        r#"
[service.job]
oneshot = ["/bin/sh", "-c", "echo start >> @DIR@/runs; if [ -e @DIR@/slow ]; then rm @DIR@/slow; echo slow-start >> @DIR@/runs; sleep 4; echo slow-end >> @DIR@/runs; fi; echo end >> @DIR@/runs"]
every = "1s"
"#,
    );
    let lines = |d: &Daemon| {
        d.read("runs")
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_for(
        "three runs",
        || (lines(&d).iter().filter(|l| *l == "end").count() >= 3).then_some(()),
        || d.describe("job"),
    );
    assert!(
        notes(&d, "job").iter().any(|n| n == "every 1s: run again"),
        "{:?}",
        notes(&d, "job")
    );
    assert_eq!(d.service("job")["strikes"], 0, "a planned run is no strike");
    // A run by hand that lasts 4 s: the run due meanwhile is skipped, not started beside it.
    std::fs::write(d.path("slow"), "").unwrap();
    d.medic_ok(&["restart", "job"]);
    wait_for(
        "the skip in the history",
        || {
            notes(&d, "job")
                .iter()
                .any(|n| n.contains("run again skipped: the previous run is still going"))
                .then_some(())
        },
        || d.describe("job"),
    );
    // Never two runs at once: nothing started while the slow run went on.
    wait_for(
        "the slow run to end and the next to run",
        || {
            let runs = lines(&d);
            let end = runs.iter().position(|l| l == "slow-end")?;
            runs[end..].iter().any(|l| l == "start").then_some(())
        },
        || d.describe("job"),
    );
    let runs = lines(&d);
    let from = runs.iter().position(|l| l == "slow-start").unwrap();
    let to = runs.iter().position(|l| l == "slow-end").unwrap();
    assert!(
        !runs[from..to].iter().any(|l| l == "start"),
        "a run started beside the slow one: {runs:?}"
    );
}
#[test]
fn restart_every_restarts_a_process_as_planned_without_a_strike() {
    let d = Daemon::start(
        r#"
[service.leaky]
run = ["/bin/sh", "-c", "echo $$ >> @DIR@/pids; exec sleep 1000"]
restart-every = "1s"
"#,
    );
    wait_for(
        "three processes, one after the other",
        || (medic_tests::pids_in(&d.path("pids")).len() >= 3).then_some(()),
        || d.describe("leaky"),
    );
    let planned = notes(&d, "leaky")
        .iter()
        .filter(|n| *n == "restart-every 1s: planned restart")
        .count();
    assert!(planned >= 2, "{:?}", notes(&d, "leaky"));
    assert_eq!(
        d.service("leaky")["strikes"],
        0,
        "a planned restart is no strike"
    );
}
