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

/// The local time (hour, minute) `ahead` seconds from now, as the daemon will see it (same
/// `TZ`), and the seconds into that minute now.
fn local_in(ahead: i64) -> (i32, i32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = (now + ahead) as libc::time_t;
    // SAFETY: plain data filled by localtime_r.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    assert!(!unsafe { libc::localtime_r(&t, &mut tm) }.is_null());
    (tm.tm_hour, tm.tm_min)
}

#[test]
fn an_at_time_runs_the_job_at_that_minute_of_the_wall_clock() {
    // The next whole minute at least two seconds away (the test takes up to a minute).
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let to_next = 60 - secs % 60;
    let ahead = if to_next < 2 { to_next + 60 } else { to_next };
    let (h, m) = local_in(ahead);
    let at = format!("{h:02}:{m:02}");
    let d = Daemon::start(&format!(
        r#"
[service.nightly]
oneshot = ["/bin/sh", "-c", "date +%s >> @DIR@/runs"]
at = ["{at}"]
"#
    ));
    // The boot run's line is written before the oneshot exits: wait for the exit
    // (NEXT then names the planned run), not just for the line.
    wait_for(
        "the boot run, and NEXT planning the run at its time",
        || {
            (d.read("runs").lines().count() == 1
                && d.medic_ok(&["status", "nightly"]).contains("run again"))
            .then_some(())
        },
        || d.describe("nightly"),
    );
    // The wall clock reaches the minute (up to a minute away: more than `wait_for`'s
    // patience), then the run is waited for.
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    while unix_now() < secs + ahead {
        assert_eq!(d.read("runs").lines().count(), 1, "ran before {at}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let note = format!("at {at}: run again");
    let ran = wait_for(
        &format!("the run at {at}"),
        || {
            notes(&d, "nightly")
                .contains(&note)
                .then(|| d.read("runs"))
                .filter(|runs| runs.lines().count() == 2)
        },
        || d.describe("nightly"),
    );
    let second: i64 = ran.lines().nth(1).unwrap().trim().parse().unwrap();
    assert_eq!(
        second.div_euclid(60) * 60,
        secs + ahead,
        "in the minute {at}: {ran}"
    );
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The next 03:00 local time after now, in Unix seconds.
fn next_three_oclock() -> i64 {
    let now = unix_ms() / 1000;
    let t = now as libc::time_t;
    // SAFETY: plain data filled by localtime_r, then read by mktime.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    assert!(!unsafe { libc::localtime_r(&t, &mut tm) }.is_null());
    tm.tm_hour = 3;
    tm.tm_min = 0;
    tm.tm_sec = 0;
    tm.tm_isdst = -1;
    let today = unsafe { libc::mktime(&mut tm) } as i64;
    if today > now + 5 {
        today
    } else {
        today + 86_400
    }
}

/// Steps the real clock to where it already is: the kernel tells every timerfd armed with
/// cancel-on-set, as it would for NTP's first sync, and time moves by microseconds only.
fn report_a_clock_step() {
    // SAFETY: plain data, filled by clock_gettime and read by clock_settime.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) },
        0
    );
    let rc = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
    assert_eq!(rc, 0, "clock_settime: {}", std::io::Error::last_os_error());
}

/// The daemon's wall clock is faked with `MEDIC_TEST_WALL_OFFSET_FILE` (the adapter adds the
/// file's milliseconds to each reading, and reads it again at each step of the real clock);
/// the step itself is real: `clock_settime`, which needs root (CAP_SYS_TIME).
#[test]
fn an_at_time_waits_for_a_clock_set_from_1970_then_runs_at_its_time() {
    if !medic_tests::root_or_skip(
        "an_at_time_waits_for_a_clock_set_from_1970_then_runs_at_its_time",
        "clock_settime (CAP_SYS_TIME), to report a clock step to the daemon",
    ) {
        return;
    }
    let fake = tempfile::tempdir().unwrap();
    let offset = fake.path().join("offset");
    // The router boots with its clock at 1970-01-01 00:00:10.
    std::fs::write(&offset, (10_000 - unix_ms()).to_string()).unwrap();
    let offset_env = offset.display().to_string();
    let d = Daemon::start_with_env(
        r#"
[service.nightly]
oneshot = ["/bin/sh", "-c", "date +%s >> @DIR@/runs"]
at = ["03:00"]
"#,
        &[("MEDIC_TEST_WALL_OFFSET_FILE", offset_env.as_str())],
    );
    wait_for(
        "the boot run",
        || (d.read("runs").lines().count() == 1).then_some(()),
        || d.describe("nightly"),
    );
    // Its line is written before it exits: wait for the exit, when the next run would be
    // planned if the clock were trusted (a finished oneshot is `ready`).
    d.wait_condition("nightly", "ready");
    let untrusted = d.medic_ok(&["status", "nightly"]);
    assert!(
        !untrusted.contains("run again"),
        "no `at` time is planned on a clock in 1970:\n{untrusted}"
    );
    // NTP sets the clock: to two seconds before the next 03:00.
    let target_ms = next_three_oclock() * 1000 - 2_000;
    std::fs::write(&offset, (target_ms - unix_ms()).to_string()).unwrap();
    report_a_clock_step();
    wait_for(
        "the daemon to read the stepped clock",
        || d.log().contains("wall clock now").then_some(()),
        || d.log(),
    );
    wait_for(
        "the run at 03:00",
        || {
            notes(&d, "nightly")
                .iter()
                .any(|n| n == "at 03:00: run again")
                .then_some(())
                .filter(|_| d.read("runs").lines().count() == 2)
        },
        || d.describe("nightly"),
    );
    assert_eq!(d.service("nightly")["strikes"], 0);
}
