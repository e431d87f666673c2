//! The command line against a running daemon: the status table and its JSON, operator commands,
//! unknown names, history, events (also followed), logs, and the peer check of the socket.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use medic_tests::{medic_bin, wait_for, Daemon, PATIENCE};
use serde_json::Value;

const CONFIG: &str = r#"
[service.base]
oneshot = ["/bin/true"]

[service.web]
run = ["/bin/sh", "-c", "echo one; echo two; echo three; exec sleep 1000"]
needs = ["base"]
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn status_prints_an_aligned_table_without_colour_when_piped() {
    let d = Daemon::start(CONFIG);
    d.wait_condition("web", "ready");
    let out = d.medic_ok(&["status"]);
    assert!(!out.contains('\x1b'), "no colour into a pipe:\n{out}");
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert!(
        out.starts_with("medic "),
        "a line about the daemon first:\n{out}"
    );
    assert_eq!(lines.len(), 3, "a header and a line per service:\n{out}");
    let columns = [
        "NAME",
        "CONDITION",
        "HEALTH",
        "PID",
        "UPTIME",
        "MEMORY",
        "STRIKES",
        "NEXT",
        "WHY",
    ];
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), columns);
    let at = |line: &str, word: &str| line.find(word).unwrap();
    let web = lines
        .iter()
        .find(|l| l.starts_with("web "))
        .expect("a line for web");
    assert_eq!(
        at(web, "ready"),
        at(lines[0], "CONDITION"),
        "columns line up:\n{out}"
    );
    assert_eq!(
        at(web, "healthy"),
        at(lines[0], "HEALTH"),
        "columns line up:\n{out}"
    );
    let pid = d.service_pid("web").unwrap().to_string();
    assert_eq!(
        at(web, &pid),
        at(lines[0], "PID"),
        "columns line up:\n{out}"
    );

    let only = d.medic_ok(&["status", "web", "base"]);
    assert_eq!(only.lines().count(), 4, "{only}");
}

#[test]
fn status_json_has_the_documented_fields() {
    let d = Daemon::start(CONFIG);
    d.wait_condition("web", "ready");
    let status = d.status();
    let names: Vec<&str> = status.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["base", "web"], "config order");
    let web = &status[1];
    for key in [
        "name",
        "kind",
        "condition",
        "healthy",
        "pid",
        "strikes",
        "since_ms",
        "needs",
    ] {
        assert!(web.get(key).is_some(), "{key} in {web}");
    }
    assert_eq!(web["kind"], "process");
    assert_eq!(web["healthy"], true);
    assert!(web["pid"].is_u64() && web["since_ms"].is_u64() && web["strikes"] == 0);
    assert_eq!(web["needs"], serde_json::json!(["base"]));
    assert!(
        status[0]["pid"].is_null(),
        "a finished oneshot runs nothing: {}",
        status[0]
    );
}

#[test]
fn operator_commands_act_and_unknown_names_change_nothing() {
    let d = Daemon::start(CONFIG);
    d.wait_condition("web", "ready");
    let out = d.medic(&["stop", "web", "wbe"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`wbe`") && stderr.contains("did you mean `web`"),
        "{stderr}"
    );
    assert_eq!(d.condition("web"), "ready", "all or nothing");

    assert_eq!(d.medic_ok(&["stop", "web"]), "", "silent on success");
    let stopped = d.wait_condition("web", "stopped");
    assert!(stopped["pid"].is_null(), "{stopped}");
    d.medic_ok(&["start", "web"]);
    d.wait_condition("web", "ready");

    let out = d.medic(&["status", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no service `nope`"));
    let out = d.medic(&["history", "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn history_events_and_logs() {
    let d = Daemon::start(CONFIG);
    d.wait_condition("web", "ready");
    d.medic_ok(&["restart", "web"]);
    let history = wait_for(
        "the operator restart in the history",
        || {
            let h = d.history("web");
            h.iter()
                .any(|r| r["note"].as_str().unwrap_or("").contains("operator"))
                .then_some(h)
        },
        || d.describe("web"),
    );
    for record in &history {
        let keys: Vec<&str> = record
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in ["at_ms", "condition", "heal", "outcome", "note"] {
            assert!(keys.contains(&key), "{key} in {record}");
        }
    }
    let table = d.medic_ok(&["history", "web"]);
    assert!(table.starts_with("AT "), "{table}");

    let events = d.medic_ok(&["events", "--json"]);
    let events: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events
        .iter()
        .any(|e| e["service"] == "web" && e["condition"] == "ready"));
    assert!(events
        .iter()
        .all(|e| e.get("at_ms").is_some() && e.get("note").is_some()));
    let plain = d.medic_ok(&["events"]);
    assert!(plain.lines().any(|l| l.contains(" web ready")), "{plain}");

    let logs = wait_for(
        "web's output in its logs",
        || Some(d.medic_ok(&["logs", "web", "-n", "1"])).filter(|l| l.contains("three")),
        || d.log(),
    );
    assert_eq!(logs.lines().count(), 1, "-n 1 gives one line: {logs}");
}

#[test]
fn events_follow_streams_as_things_happen() {
    let d = Daemon::start(CONFIG);
    d.wait_condition("web", "ready");
    let mut follower = Command::new(medic_bin())
        .args(["events", "--follow", "--json"])
        .env("MEDIC_STATE_DIR", &d.state)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // The recent events are the follower's first answer: once one has arrived it is
    // subscribed, and the restart shows up live.
    let mut seen = vec![rx
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("the follower printed no recent events\n{}", d.log()))];
    d.medic_ok(&["restart", "web"]);
    let deadline = std::time::Instant::now() + PATIENCE;
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break false;
        };
        let event: Value = serde_json::from_str(&line).expect("one JSON object per line");
        seen.push(line);
        if event["service"] == "web" && event["note"].as_str().unwrap_or("").contains("operator") {
            break true;
        }
    };
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        found,
        "the restart was not streamed; saw:\n{}\n{}",
        seen.join("\n"),
        d.log()
    );
}

#[test]
fn only_root_and_the_daemons_user_may_use_the_socket() {
    if !medic_tests::root_or_skip(
        "only_root_and_the_daemons_user_may_use_the_socket",
        "to connect as another user",
    ) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let d = Daemon::start(CONFIG);
    // Open the way to the socket so that only the peer check stands between nobody and it.
    for path in [d.dir.path(), d.state.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket = d.state.join("control.sock");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new(medic_bin())
        .args(["status", "--state-dir"])
        .arg(&d.state)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("uid 65534 may not control medic"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    d.medic_ok(&["status"]);
}

/// While a process is `stopping` and still alive, `status` shows its pid (in the table and the
/// JSON), not `-`.
#[test]
fn status_shows_the_pid_of_a_process_that_is_stopping() {
    let d = Daemon::start(
        r#"
[service.slow]
run = ["/bin/sh", "-c", "trap '' TERM; exec sleep 1000"]
stop-timeout = "10m"
"#,
    );
    let pid = d.wait_condition("slow", "ready")["pid"].as_u64().unwrap();
    d.medic_ok(&["stop", "slow"]);
    let stopping = d.wait_condition("slow", "stopping");
    assert_eq!(stopping["pid"].as_u64(), Some(pid), "{stopping}");
    let table = d.medic_ok(&["status"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("slow "))
        .unwrap_or_default();
    let detail = d.medic_ok(&["status", "slow"]);
    assert!(
        detail.contains(&format!("pid: {pid}")),
        "and in status NAME:\n{detail}"
    );
    assert!(
        line.split_whitespace().any(|w| w == pid.to_string()),
        "the pid in the table:\n{table}"
    );
    // It ignores SIGTERM: end it here rather than wait out its stop timeout.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let stopped = d.wait_condition("slow", "stopped");
    assert!(stopped["pid"].is_null(), "{stopped}");
}

/// A follower started as `medic ARGS…` against `d`, its stdout lines collected on a thread.
struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    fn start(d: &Daemon, args: &[&str]) -> Follower {
        let mut child = Command::new(medic_bin())
            .args(args)
            .env("MEDIC_STATE_DIR", &d.state)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line, within [`PATIENCE`]; `None` at the end of the output.
    fn next(&mut self) -> Option<String> {
        let line = self.lines.recv_timeout(PATIENCE).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Every line until the end of the output, and the exit status and stderr.
    fn finish(mut self) -> (Vec<String>, std::process::ExitStatus, String) {
        while self.next().is_some() {}
        let status = wait_for(
            "the follower to exit",
            || self.child.try_wait().unwrap(),
            || self.seen.join("\n"),
        );
        let mut stderr = String::new();
        use std::io::Read;
        let _ = self
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr);
        (self.seen, status, stderr)
    }
}

/// `events --follow` shows the shutdown as it happens, then says that the daemon is gone as
/// its last line and exits 0 (in JSON mode stdout stays JSON; the last word goes to stderr).
#[test]
fn events_follow_shows_the_shutdown_and_ends_with_a_last_line() {
    let mut d = Daemon::start(CONFIG);
    d.wait_condition("web", "ready");
    let mut plain = Follower::start(&d, &["events", "--follow"]);
    let mut json = Follower::start(&d, &["events", "--follow", "--json"]);
    let mut logs = Follower::start(&d, &["logs", "web", "--follow"]);
    // The recent events (lines) come first: once one has arrived, the follower is subscribed.
    assert!(plain.next().is_some(), "no recent events\n{}", d.log());
    assert!(json.next().is_some(), "no recent events\n{}", d.log());
    assert!(logs.next().is_some(), "no recent lines\n{}", d.log());
    assert!(d.stop().success(), "{}", d.log());

    let (lines, status, stderr) = logs.finish();
    assert!(status.success(), "{status}: {stderr}\n{}", lines.join("\n"));
    assert_eq!(
        lines.last().map(String::as_str),
        Some("-- the medic daemon shut down: no more output --"),
        "{}",
        lines.join("\n")
    );

    let (lines, status, stderr) = plain.finish();
    assert!(status.success(), "{status}: {stderr}\n{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains(" web stopped: shutdown")),
        "the shutdown is streamed:\n{}\n{}",
        lines.join("\n"),
        d.log()
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("-- the medic daemon shut down: no more events --"),
        "{}",
        lines.join("\n")
    );

    let (lines, status, stderr) = json.finish();
    assert!(status.success(), "{status}: {stderr}\n{}", lines.join("\n"));
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("stdout stays one JSON object per line"))
        .collect();
    assert!(
        events.iter().any(|e| e["service"] == "web"
            && e["condition"] == "stopped"
            && e["note"].as_str().unwrap_or("").contains("shutdown")),
        "{}",
        lines.join("\n")
    );
    assert!(
        stderr.contains("the medic daemon shut down: no more events"),
        "{stderr}"
    );
}

/// A followed stream that stops without the daemon's last word (the daemon was killed) is not
/// a clean end: the follower says so and exits 1.
#[test]
fn a_follower_whose_daemon_is_killed_says_so_and_exits_1() {
    let d = Daemon::start(CONFIG);
    let web = d.wait_condition("web", "ready")["pid"].as_u64().unwrap();
    let mut follower = Follower::start(&d, &["events", "--follow"]);
    assert!(follower.next().is_some(), "no recent events\n{}", d.log());
    d.signal(nix::sys::signal::Signal::SIGKILL);
    let (lines, status, stderr) = follower.finish();
    // The daemon's service outlives it: end it here.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(web as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(status.code(), Some(1), "{stderr}\n{}", lines.join("\n"));
    assert!(stderr.contains("without a last word"), "{stderr}");
}
