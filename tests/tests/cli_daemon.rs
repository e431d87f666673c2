//! The command line against a running daemon: the status table and its JSON, operator commands,
//! unknown names, history, events (also followed), logs, and the peer check of the socket.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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
    // Give the follower time to subscribe before acting; the restart then shows up live.
    std::thread::sleep(Duration::from_millis(500));
    d.medic_ok(&["restart", "web"]);
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
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
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root to connect as another user; CI runs it as root");
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
