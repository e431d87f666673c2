//! End to end: real processes under the real daemon: crashes, crash loops, stops that need
//! SIGKILL, double-forking daemons, memory limits, oneshot retries.

use medic_tests::{pids_in, process_gone, wait_for, Daemon};

fn heals(history: &[serde_json::Value], heal: &str) -> Vec<u64> {
    history
        .iter()
        .filter(|r| {
            r["heal"] == heal && r["note"].as_str().is_some_and(|n| n.starts_with("strike"))
        })
        .filter(|r| {
            r["outcome"] == "pending" || r["outcome"] == "resolved" || r["outcome"] == "unresolved"
        })
        .filter_map(|r| r["at_ms"].as_u64())
        .collect()
}

#[test]
fn a_crashed_process_is_restarted() {
    let d = Daemon::start(
        r#"
[service.crashy]
run = ["/bin/sh", "-c", "echo $$ >> @DIR@/pids; if [ -e @DIR@/crashed ]; then exec sleep 1000; fi; touch @DIR@/crashed; sleep 0.3; exit 3"]
"#,
    );
    wait_for(
        "two starts",
        || (pids_in(&d.path("pids")).len() >= 2).then_some(()),
        || d.describe("crashy"),
    );
    let s = d.wait_condition("crashy", "ready");
    let pids = pids_in(&d.path("pids"));
    assert_eq!(
        s["pid"].as_u64(),
        Some(pids[1] as u64),
        "the second process runs"
    );
    let history = d.history("crashy");
    assert!(
        history
            .iter()
            .any(|r| r["condition"] == "exited" && r["heal"] == "restart"),
        "a restart after the exit: {history:#?}"
    );
    assert!(history
        .iter()
        .any(|r| r["note"].as_str().unwrap_or("").contains("exit code 3")));
}

#[test]
fn a_crash_loop_backs_off_gives_up_and_an_operator_restart_revives_it() {
    let d = Daemon::start(
        r#"
[service.looper]
run = ["/bin/sh", "-c", "if [ -e @DIR@/fixed ]; then exec sleep 1000; fi; sleep 0.1; exit 1"]
give-up-after = 4
retry-after = "never"
"#,
    );
    d.wait_condition("looper", "given-up");
    let history = d.history("looper");
    let at = heals(&history, "restart");
    assert_eq!(at.len(), 4, "four restarts before giving up: {history:#?}");
    let gaps: Vec<u64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Settle 1 s, then backoff 1 s, 2 s, 4 s between automatic restarts: the spacing grows.
    for w in gaps.windows(2) {
        assert!(
            w[1] * 10 >= w[0] * 15,
            "spacing must grow: gaps {gaps:?} ms\n{history:#?}"
        );
    }
    assert!(
        gaps[0] >= 900,
        "no two restarts closer than the settle time: {gaps:?}"
    );
    // Still given up a while later: no automatic intervention without a new fact.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(d.condition("looper"), "given-up");
    assert_eq!(heals(&d.history("looper"), "restart").len(), 4);

    std::fs::write(d.path("fixed"), "").unwrap();
    d.medic_ok(&["restart", "looper"]);
    let s = d.wait_condition("looper", "ready");
    assert_eq!(s["strikes"], 0, "an operator restart clears the strikes");
}

#[test]
fn a_sigterm_ignorer_and_a_double_forking_daemon_are_gone_after_stop() {
    let d = Daemon::start(
        r#"
[service.ignorer]
run = ["/bin/sh", "-c", "trap '' TERM; echo $$ >> @DIR@/ignorer.pids; sleep 1000 & echo $! >> @DIR@/ignorer.pids; wait"]
stop-timeout = "1s"

[service.forker]
run = ["/bin/sh", "-c", "setsid sh -c 'echo $$ >> @DIR@/forker.pids; exec sleep 1000' & (sleep 1000 & echo $! >> @DIR@/forker.pids) ; echo $$ >> @DIR@/forker.pids; wait"]
"#,
    );
    d.wait_condition("ignorer", "ready");
    d.wait_condition("forker", "ready");
    let ignorer = wait_for(
        "the ignorer's pids",
        || Some(pids_in(&d.path("ignorer.pids"))).filter(|p| p.len() == 2),
        || d.log(),
    );
    let forker = wait_for(
        "the forker's pids",
        || Some(pids_in(&d.path("forker.pids"))).filter(|p| p.len() == 3),
        || d.log(),
    );
    d.medic_ok(&["stop", "ignorer", "forker"]);
    d.wait_condition("ignorer", "stopped");
    d.wait_condition("forker", "stopped");
    for pid in ignorer.iter().chain(&forker) {
        wait_for(
            &format!("process {pid} to be gone"),
            || process_gone(*pid).then_some(()),
            || d.log(),
        );
    }
    let history = d.history("ignorer");
    assert!(
        history
            .iter()
            .any(|r| r["note"].as_str().unwrap_or("").contains("SIGKILL")),
        "the ignorer needed SIGKILL: {history:#?}"
    );
}

#[test]
fn a_memory_hog_is_killed_and_restarted() {
    let d = Daemon::start(
        r#"
[service.hog]
run = ["/bin/sh", "-c", "echo $$ >> @DIR@/hog.pids; if [ $(wc -l < @DIR@/hog.pids) -le 1 ]; then x=$(seq 1 6000000); fi; sleep 1000 & wait"]
memory-max = "24MiB"
memory-every = "200ms"
"#,
    );
    wait_for(
        "a second hog process",
        || (pids_in(&d.path("hog.pids")).len() >= 2).then_some(()),
        || d.describe("hog"),
    );
    let first = pids_in(&d.path("hog.pids"))[0];
    wait_for(
        "the first hog to be gone",
        || process_gone(first).then_some(()),
        || d.describe("hog"),
    );
    d.wait_condition("hog", "ready");
    let history = d.history("hog");
    assert!(
        history
            .iter()
            .any(|r| r["condition"] == "memory-high" && r["heal"] == "kill"),
        "killed for memory: {history:#?}"
    );
}

#[test]
fn a_failed_oneshot_is_retried_until_it_succeeds() {
    let d = Daemon::start(
        r#"
[service.setup]
oneshot = ["/bin/sh", "-c", "echo try >> @DIR@/tries; [ $(wc -l < @DIR@/tries) -ge 3 ]"]

[service.after-setup]
run = ["/bin/sh", "-c", "exec sleep 1000"]
needs = ["setup"]
"#,
    );
    d.wait_condition("setup", "ready");
    d.wait_condition("after-setup", "ready");
    assert_eq!(d.read("tries").lines().count(), 3);
    let history = d.history("setup");
    let failures = history
        .iter()
        .filter(|r| r["condition"] == "failed" && r["heal"] == "restart")
        .count();
    assert_eq!(failures, 2, "two failures, each retried: {history:#?}");
}

#[test]
fn reload_signals_the_main_process_not_its_children() {
    // The main process forks a child into its group. On SIGHUP the main process sends the
    // child SIGUSR1; the child writes down every HUP and USR1 it gets. A HUP sent to the whole
    // group would reach the child no later than the USR1 (and a pending HUP is handled first),
    // so once `usr1` is written, no `child-hup` before it means the group was not signalled.
    let d = Daemon::start(
        r#"
[service.parent]
run = ["/bin/sh", "-c", "sh -c 'trap \"echo child-hup >> @DIR@/log\" HUP; trap \"echo usr1 >> @DIR@/log\" USR1; echo $$ > @DIR@/child; while :; do sleep 0.05; done' & c=$!; trap 'echo hup >> @DIR@/log; kill -USR1 $c' HUP; echo $$ > @DIR@/parent; while :; do wait; done"]
reload = { signal = "HUP" }
"#,
    );
    d.wait_condition("parent", "ready");
    // Both have set their traps once both pids are written.
    let child = wait_for(
        "the child's and the parent's traps",
        || {
            let parent = pids_in(&d.path("parent")).first().copied();
            parent.and(pids_in(&d.path("child")).first().copied())
        },
        || d.describe("parent"),
    );
    d.medic_ok(&["reload", "parent"]);
    wait_for(
        "the child's USR1 from the main process",
        || d.read("log").contains("usr1").then_some(()),
        || d.read("log"),
    );
    let log = d.read("log");
    assert!(log.starts_with("hup\n"), "{log}");
    assert!(!log.contains("child-hup"), "the group got SIGHUP: {log}");
    assert!(!process_gone(child));
}

/// A program that cannot be executed is a spawn failure that says why, never a process that
/// "started" and exited 127: a file without the execute bit (`Permission denied`), and an
/// executable file that is neither a binary nor a `#!` script (`Exec format error`; no shell
/// runs it), both on the fast spawn path and on the forking one (`cwd` set).
#[test]
fn a_program_that_cannot_be_executed_is_a_spawn_failure_with_the_reason() {
    let d = Daemon::start(
        r#"
[service.prep]
oneshot = ["/bin/sh", "-c", "echo hello > @DIR@/noexec; chmod 644 @DIR@/noexec; echo true > @DIR@/text; chmod 755 @DIR@/text"]

[service.noexec]
run = ["@DIR@/noexec"]
needs = ["prep"]

[service.text]
run = ["@DIR@/text"]
needs = ["prep"]

[service.text-cwd]
run = ["@DIR@/text"]
cwd = "@DIR@"
needs = ["prep"]

[service.noexec-cwd]
run = ["@DIR@/noexec"]
cwd = "@DIR@"
needs = ["prep"]
"#,
    );
    for (name, reason) in [
        ("noexec", "Permission denied"),
        ("text", "Exec format error"),
        ("text-cwd", "Exec format error"),
        ("noexec-cwd", "Permission denied"),
    ] {
        let record = wait_for(
            &format!("{name}: a spawn failure saying `{reason}` in its history"),
            || {
                d.history(name).into_iter().find(|r| {
                    let note = r["note"].as_str().unwrap_or("");
                    note.contains("spawn failed") && note.contains(reason)
                })
            },
            || d.describe(name),
        );
        eprintln!("{name}: {record}");
        let history = d.history(name);
        assert!(
            history.iter().all(|r| {
                let note = r["note"].as_str().unwrap_or("");
                r["condition"] != "ready" && !note.contains("exit code")
            }),
            "{name} never ran: {history:#?}"
        );
        let program = d.path(if name.starts_with("text") {
            "text"
        } else {
            "noexec"
        });
        let started = format!("started {}", program.display());
        let log = d.log();
        let ours: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("service={name} ")))
            .collect();
        assert!(
            ours.iter().all(|l| !l.contains(&started)),
            "{name} was never logged as started:\n{}",
            ours.join("\n")
        );
    }
}

/// The line a process printed just before it died is in `medic logs`, every time: its output
/// is drained after the exit, not cut off. Each run prints a burst (a backtrace, say) and then
/// the line that explains the crash; only operator restarts run it again.
#[test]
fn the_last_words_of_a_crashing_process_are_always_in_its_logs() {
    let d = Daemon::start(
        r#"
[service.words]
run = ["/bin/sh", "-c", "n=$(( $(cat @DIR@/n 2>/dev/null || echo 0) + 1 )); echo $n > @DIR@/n; seq 1 300; echo \"last words $n\"; exit 3"]
[service.words.on.exited]
heal = []
"#,
    );
    let runs = || d.read("n").trim().parse::<u32>().unwrap_or(0);
    for i in 1..=20 {
        // The first run is the boot's; restarting before it has written its number would
        // kill it mid-way and number the next run 2.
        if i > 1 && runs() < i {
            // An operator restart acts at once, whatever the backoff.
            d.medic_ok(&["restart", "words"]);
        }
        wait_for(
            &format!("run {i} of words"),
            || (runs() >= i).then_some(()),
            || d.describe("words"),
        );
        let want = format!("last words {i}");
        wait_for(
            &format!("`{want}` in `medic logs words`"),
            || {
                let logs = d.medic_ok(&["logs", "words", "-n", "1000"]);
                // Each line is `TIME STREAM  TEXT`.
                logs.lines()
                    .any(|l| l.ends_with(&format!("  {want}")))
                    .then_some(())
            },
            || {
                format!(
                    "--- medic logs words ---\n{}\n{}",
                    d.medic_ok(&["logs", "words", "-n", "1000"]),
                    d.describe("words")
                )
            },
        );
    }
}

/// A command's output follows the same policy as a service's: drained after it is reaped, then
/// closed, even while something it left in the background still holds the pipe.
#[test]
fn a_commands_output_is_drained_then_closed_like_a_services() {
    let d = Daemon::start(
        r#"
[service.setup]
oneshot = ["/bin/true"]
stop = ["/bin/sh", "-c", "echo undoing; (trap '' PIPE; sleep 2; echo late || touch @DIR@/closed) & exit 0"]
"#,
    );
    d.wait_condition("setup", "ready");
    d.medic_ok(&["stop", "setup"]);
    d.wait_condition("setup", "stopped");
    wait_for(
        "the stop command's output in the logs",
        || {
            let logs = d.medic_ok(&["logs", "setup"]);
            logs.lines()
                .any(|l| l.ends_with(" out  undoing"))
                .then_some(())
        },
        || d.describe("setup"),
    );
    wait_for(
        "the background writer to find the pipe closed",
        || d.path("closed").exists().then_some(()),
        || {
            format!(
                "--- medic logs setup ---\n{}\n{}",
                d.medic_ok(&["logs", "setup"]),
                d.describe("setup")
            )
        },
    );
    let logs = d.medic_ok(&["logs", "setup"]);
    assert!(!logs.contains("late"), "{logs}");
}

#[test]
fn relative_paths_are_taken_from_the_config_files_directory_whatever_the_cwd() {
    let d = Daemon::start("[service.placeholder]\nrun = [\"sleep\", \"1000\"]\n");
    let bin = d.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("svc.sh");
    std::fs::write(&script, "#!/bin/sh\npwd > \"$1\"\nexec sleep 1000\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A program named relative to the config (read again on SIGHUP, from the daemon's own
    // working directory, which is not the config's); the service itself runs in `/`.
    d.write_config("[service.rel]\nrun = [\"bin/svc.sh\", \"@DIR@/cwd\"]\ncwd = \"/\"\n");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_condition("rel", "ready");
    wait_for(
        "the service's pwd",
        || (d.read("cwd").trim() == "/").then_some(()),
        || d.describe("rel"),
    );
    let started = format!("started {} ", script.display());
    assert!(d.log().contains(&started), "{}", d.log());
    // `medic check` from another directory resolves it alike.
    let out = std::process::Command::new(medic_tests::medic_bin())
        .args(["check", "-c"])
        .arg(&d.config)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
