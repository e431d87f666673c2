//! The operator's view (issue 12): a status that says why and what next, `status NAME`,
//! wall-clock times, logs with time, stream and runs, events in time order, and a command line
//! that helps (`-c FILE`, suggestions, `--wait`, `reload-config`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use medic_tests::{medic_bin, wait_for, Daemon};
use serde_json::Value;

/// A fixed graph: a oneshot, a process that needs it, a failing oneshot that gives up after
/// two strikes and a process that needs it, and a process under a memory limit.
const CONFIG: &str = r#"
[daemon]
state-dir = "@DIR@/state"

[service.base]
oneshot = ["/bin/true"]

[service.web]
run = ["/bin/sh", "-c", "echo web up; exec sleep 1000"]
needs = ["base"]

[service.crash]
oneshot = ["/bin/sh", "-c", "echo starting; echo failing >&2; exit 3"]
give-up-after = 2
retry-after = "never"

[service.dep]
run = ["/bin/sh", "-c", "exec sleep 1000"]
needs = ["crash"]

[service.lim]
run = ["/bin/sh", "-c", "exec sleep 1000"]
memory-max = "64MiB"
memory-every = "100ms"
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name)
}

/// Starts the daemon on [`CONFIG`] and waits until it has settled: crash given up, lim's
/// memory sampled.
fn settled() -> Daemon {
    let d = Daemon::start(CONFIG);
    d.wait_condition("web", "ready");
    d.wait_condition("crash", "given-up");
    wait_for(
        "a memory sample of lim",
        || d.service("lim")["memory_bytes"].as_u64(),
        || d.describe("lim"),
    );
    d
}

/// The status table with what changes from run to run masked: split into cells (columns are
/// two or more spaces apart), PID, UPTIME and the sample in MEMORY replaced, realigned.
fn masked_table(table: &str) -> String {
    let rows: Vec<Vec<String>> = table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect();
    let header = rows[0].clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (pid, up, mem) = (col("PID"), col("UPTIME"), col("MEMORY"));
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            if i > 0 {
                for c in [pid, up] {
                    if r[c] != "-" {
                        r[c] = "*".into();
                    }
                }
                if let Some((_, limit)) = r[mem].split_once('/') {
                    r[mem] = format!("*/{limit}");
                }
            }
            r
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap())
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[test]
fn status_says_why_and_what_next_golden() {
    let d = settled();
    let out = d.medic_ok(&["status"]);
    let mut lines = out.lines();
    let daemon = lines.next().unwrap();
    assert!(
        daemon.starts_with(&format!("medic {}, pid {}, up ", "0.1.0", d.pid()))
            && daemon.contains(" (since 20")
            && daemon.ends_with(&format!(", config {}", d.config.display())),
        "the daemon's line: {daemon}"
    );
    let table: String = lines.map(|l| format!("{l}\n")).collect();
    let got = masked_table(&table);
    let path = golden("status.txt");
    if std::env::var_os("MEDIC_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got,
        want,
        "the status table differs from {} (MEDIC_BLESS=1 re-records it)\n{out}",
        path.display()
    );

    // Fitted to the width asked for: WHY is cut first.
    let narrow = Command::new(medic_bin())
        .args(["status"])
        .env("MEDIC_STATE_DIR", &d.state)
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    let narrow = text(&narrow.stdout);
    for line in narrow.lines().skip(1) {
        assert!(line.chars().count() <= 100, "{narrow}");
    }
    assert!(narrow.contains('…'), "something was cut to fit:\n{narrow}");
}

#[test]
fn status_json_gains_the_plan_and_wall_clock_times() {
    let d = settled();
    let crash = d.service("crash");
    assert_eq!(crash["why"], "given up after 2 strikes", "{crash}");
    assert_eq!(crash["next"], "nothing until `medic restart`");
    assert_eq!(crash["last_exit"], "exit code 3");
    assert_eq!(crash["give_up_after"], 2);
    assert_eq!(crash["dependents"], serde_json::json!(["dep"]));
    let since = crash["since"].as_str().unwrap();
    assert!(since.starts_with("20") && since.ends_with('Z'), "{since}");
    let dep = d.service("dep");
    assert_eq!(dep["condition"], "waiting");
    assert_eq!(dep["why"], "waiting for crash");
    assert_eq!(dep["next"], "start once crash is healthy");
    let lim = d.service("lim");
    assert_eq!(lim["memory_max_bytes"], 64 << 20);
    assert!(lim["memory_bytes"].as_u64().unwrap() > 0);

    let v2: Value = serde_json::from_str(&d.medic_ok(&["status", "--json=v2"])).unwrap();
    assert_eq!(v2["daemon"]["pid"], d.pid());
    assert_eq!(v2["daemon"]["config_path"], d.config.display().to_string());
    assert!(v2["daemon"]["started"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v2["services"].as_array().unwrap().len(), 5);
    assert_eq!(v2["services"][2]["name"], "crash");
}

#[test]
fn status_name_shows_everything_about_one_service() {
    let d = settled();
    let out = d.medic_ok(&["status", "crash"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "● crash (oneshot): given-up, unhealthy", "{out}");
    let field = |key: &str| {
        lines
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key} in\n{out}"))
            .to_string()
    };
    assert!(field("since").ends_with(" ago)"), "{out}");
    assert_eq!(field("why"), "given up after 2 strikes");
    assert_eq!(field("next"), "nothing until `medic restart`");
    assert!(field("last exit").starts_with("exit code 3, 20"), "{out}");
    assert_eq!(field("strikes"), "2 of 2");
    assert_eq!(field("needs"), "-");
    assert_eq!(field("needed by"), "dep (waiting, unhealthy)");
    // The last 10 lines of output, with time and stream, runs marked.
    // (Which lines of a short run's output arrive, and whether before the next run's mark, is
    // up to the pipes: only the marks are counted.)
    let logs: Vec<&str> = out.split("\n\n").nth(1).unwrap().lines().collect();
    let marks = logs
        .iter()
        .filter(|l| l.starts_with("-- started 20"))
        .count();
    assert_eq!(marks, 3, "a mark for each of three runs:\n{out}");
    assert!(logs
        .iter()
        .all(|l| l.starts_with("-- started ") || is_local_time(&l[..23])));
    assert!(logs.iter().any(|l| l.ends_with(" out  starting")), "{out}");
    assert!(logs.iter().any(|l| l.ends_with(" err  failing")), "{out}");

    let web = d.medic_ok(&["status", "web"]);
    assert!(web.contains("needs: base (ready, healthy)"), "{web}");
    assert!(web.contains(&format!("pid: {}", d.service_pid("web").unwrap())));
    let lim = d.medic_ok(&["status", "lim"]);
    assert!(lim.contains("memory: ") && lim.contains("/64 MiB"), "{lim}");
}

/// `2024-05-01T14:02:11.123`: a local ISO 8601 time with milliseconds.
fn is_local_time(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 23
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && s.chars().filter(char::is_ascii_digit).count() == 17
}

#[test]
fn history_events_and_logs_show_wall_clock_times() {
    let d = settled();
    let history = d.medic_ok(&["history", "crash"]);
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert!(!rows.is_empty());
    for row in &rows {
        let at = row.split_whitespace().next().unwrap();
        assert!(is_local_time(at), "{history}");
    }
    assert!(
        !history.contains("until 0.") && !history.contains("until 1."),
        "the daemon's instants in notes are shown as times too:\n{history}"
    );
    let relative = d.medic_ok(&["history", "crash", "--relative"]);
    let first = relative.lines().nth(1).unwrap().split_whitespace().next();
    assert!(first.unwrap().ends_with('s'), "{relative}");

    let json = d.history("crash");
    for r in &json {
        let at = r["at"].as_str().unwrap();
        assert!(at.ends_with('Z') && at.len() == 24, "{r}");
    }
    // `at` and `at_ms` agree: the difference of two records is the same on both clocks.
    let ms = |r: &Value| {
        let at = humantime::parse_rfc3339(r["at"].as_str().unwrap()).unwrap();
        at.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let (a, b) = (&json[0], json.last().unwrap());
    assert_eq!(
        ms(b) - ms(a),
        b["at_ms"].as_u64().unwrap() - a["at_ms"].as_u64().unwrap()
    );

    let events = d.medic_ok(&["events"]);
    assert!(events.lines().all(|l| is_local_time(&l[..23])), "{events}");
    let event = d.medic_ok(&["events", "--json"]);
    let first: Value = serde_json::from_str(event.lines().next().unwrap()).unwrap();
    assert!(first["at"].as_str().unwrap().ends_with('Z'), "{first}");

    let logs = d.medic_ok(&["logs", "web"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines[0].starts_with("-- started 20"), "{logs}");
    assert!(is_local_time(&lines[1][..23]) && lines[1].ends_with(" out  web up"));
    let raw = d.medic_ok(&["logs", "web", "--json"]);
    assert_eq!(
        raw, "\"web up\"\n",
        "--json keeps its shape: raw lines only"
    );
}

#[test]
fn logs_of_an_interface_say_there_are_none() {
    let d = Daemon::start("[service.lo]\ninterface = \"lo\"\nready-when = \"present\"\n");
    let out = d.medic(&["logs", "lo"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("lo is an interface") && stderr.contains("no output"),
        "{stderr}"
    );
    assert!(
        d.log().contains("supervising 1 service from"),
        "one service is not `1 services`:\n{}",
        d.log()
    );
}

#[test]
fn followed_events_stay_in_time_order() {
    // A restart whose outcome is decided 1 s after it, while other events happen.
    let d = Daemon::start(
        r#"
[service.flap]
run = ["/bin/sh", "-c", "sleep 0.3; exit 1"]
give-up-after = 3
"#,
    );
    let mut follower = Command::new(medic_bin())
        .args(["events", "--follow", "--relative"])
        .env("MEDIC_STATE_DIR", &d.state)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    d.wait_condition("flap", "given-up");
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(1500)) {
        lines.push(line);
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let times: Vec<f64> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .map(|t| t.trim_end_matches('s').parse().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in time order:\n{}",
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(": outcome of the restart at ")),
        "an outcome decided live is shown when decided:\n{}",
        lines.join("\n")
    );
}

fn without_state_dir(args: &[&str]) -> Output {
    Command::new(medic_bin())
        .args(args)
        .env_remove("MEDIC_STATE_DIR")
        .env_remove("MEDIC_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn client_commands_find_the_daemon_through_the_config() {
    let d = Daemon::start(CONFIG);
    d.wait_condition("web", "ready");
    let config = d.config.to_str().unwrap();
    let out = without_state_dir(&["status", "-c", config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("web "), "{}", text(&out.stdout));
    let out = without_state_dir(&["history", "web", "--config", config]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let bad = d.path("bad.toml");
    std::fs::write(&bad, "[service.x]\nrun = 5\n").unwrap();
    let out = without_state_dir(&["status", "-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "a named config must be valid");
    assert!(
        text(&out.stderr).contains("bad.toml:2:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn misspelt_commands_and_flags_get_suggestions() {
    let out = without_state_dir(&["statsu"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("'status'"),
        "{}",
        text(&out.stderr)
    );
    let out = without_state_dir(&["status", "--jsno"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("'--json'"),
        "{}",
        text(&out.stderr)
    );
    let out = without_state_dir(&["reload-confg"]);
    assert!(text(&out.stderr).contains("'reload-config'"));
}

#[test]
fn operator_commands_wait_when_asked() {
    let d = Daemon::start(CONFIG);
    d.wait_condition("web", "ready");
    d.medic_ok(&["stop", "web", "--wait"]);
    assert_eq!(d.condition("web"), "stopped", "stopped when --wait returns");
    d.medic_ok(&["start", "web", "--wait"]);
    assert_eq!(d.condition("web"), "ready", "ready when --wait returns");
    let old = d.service_pid("web");
    d.medic_ok(&["restart", "web", "--wait=20s"]);
    let new = d.service("web");
    assert_eq!(new["condition"], "ready");
    assert_ne!(new["pid"].as_u64().map(|p| p as u32), old, "a new run");

    // Services that do not get there: exit 1, saying where they are and why.
    let out = d.medic(&["start", "dep", "--wait=1s"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not ready after 1s") && stderr.contains("dep is waiting"),
        "{stderr}"
    );
    let never = Daemon::start(
        r#"
[service.never]
run = ["/bin/sh", "-c", "exec sleep 1000"]
ready = { file = "/nonexistent/medic-never-ready" }
start-timeout = "200ms"
give-up-after = 1
retry-after = "never"
"#,
    );
    never.wait_condition("never", "given-up");
    let out = never.medic(&["restart", "never", "--wait=60s"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("gave up waiting: never is given-up (given up after 1 strikes)"),
        "{stderr}"
    );
}

#[test]
fn reload_config_applies_a_valid_config_and_refuses_a_bad_one() {
    let d = Daemon::start(CONFIG);
    d.wait_condition("web", "ready");
    d.write_config(&format!(
        "{CONFIG}\n[service.extra]\nrun = [\"/bin/sh\", \"-c\", \"exec sleep 1000\"]\n"
    ));
    d.medic_ok(&["reload-config"]);
    d.wait_condition("extra", "ready");

    let web = d.service_pid("web");
    d.write_config("[service.web]\nrun = 5\n");
    let out = d.medic(&["reload-config"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("medic.toml:2:") && stderr.contains("nothing changed"),
        "{stderr}"
    );
    assert_eq!(d.service_pid("web"), web, "nothing changed");
    assert_eq!(d.condition("extra"), "ready");
}

#[test]
fn check_warns_about_what_cannot_run_here_but_still_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let config = dir.path().join("medic.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[service.missing]
run = ["/nonexistent/medic-daemon"]
[service.shell]
run = ["/bin/sleep 100"]
[service.plain]
oneshot = ["{}"]
cwd = "/nonexistent/dir"
user = "no-such-user-medic"
group = "no-such-group-medic"
[service.zero]
run = ["sleep", "1"]
memory-max = "0"
[service.fine]
run = ["sleep", "1"]
user = "0"
"#,
            script.display()
        ),
    )
    .unwrap();
    let out = medic_tests::medic(&["check", "-c", config.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "warnings are not errors: {stderr}"
    );
    for want in [
        "warning: service missing: `run`: /nonexistent/medic-daemon does not exist here",
        "warning: service shell: `run`: `/bin/sleep 100` is not a program",
        "[\"/bin/sleep\", \"100\"]",
        "warning: service plain: `oneshot`: ",
        "not-executable.sh is not executable",
        "warning: service plain: `cwd` /nonexistent/dir is not a directory here",
        "warning: service plain: no user `no-such-user-medic` here",
        "warning: service plain: no group `no-such-group-medic` here",
        "warning: service zero: `memory-max` is 0",
    ] {
        assert!(stderr.contains(want), "{want:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("service fine"), "{stderr}");

    std::fs::write(&config, "# nothing yet\n").unwrap();
    let out = medic_tests::medic(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("warning: no services"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(&config, b"[service.a]\nrun = [\"/bin/true\"]\n# caf\xe9\n").unwrap();
    let out = medic_tests::medic(&["check", "-c", config.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("medic.toml:3:6: not UTF-8: the byte at offset 37 (0xe9)"),
        "{stderr}"
    );
}
