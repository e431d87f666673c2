//! End to end: the daemon survives its own crash (DESIGN §13). `kill -9` the daemon, start it
//! again on the same state dir: what still runs is adopted (no second instance, no second
//! bind), the history goes on, an adopted process that dies is restarted at once; what nobody
//! accounts for is stopped; a second daemon on the same state dir is refused.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use medic_tests::{medic, process_gone, wait_for, Daemon};

/// A TCP port free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Every process whose command line holds `needle` (as separate arguments joined by spaces).
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(needle) && !process_gone(*pid)
        })
        .collect()
}

/// An HTTP GET of `/` on `port`: the status line.
fn get(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

fn config(port: u16) -> String {
    format!(
        r#"
[service.web]
run = ["python3", "-u", "-m", "http.server", "{port}", "--bind", "127.0.0.1", "--directory", "@DIR@"]
ready = {{ tcp = "127.0.0.1:{port}" }}

[service.sleeper]
run = ["/bin/sh", "-c", "echo $$ >> @DIR@/sleeper.runs; exec sleep 1000"]
"#
    )
}

fn history_notes(d: &Daemon, name: &str) -> Vec<String> {
    d.history(name)
        .iter()
        .map(|r| format!("{} {}", r["condition"], r["note"]))
        .collect()
}

#[test]
fn a_crashed_daemon_adopts_what_still_runs_and_the_history_goes_on() {
    let port = free_port();
    let mut d = Daemon::start(&config(port));
    let web = d.wait_condition("web", "ready")["pid"].as_u64().unwrap() as u32;
    d.wait_condition("sleeper", "ready");
    // Some history before the crash: an operator restart.
    let first = d.service_pid("sleeper");
    d.medic_ok(&["restart", "sleeper"]);
    let sleeper = d.wait_new_pid("sleeper", first);
    d.wait_condition("sleeper", "ready");
    let before = d.history("sleeper");
    assert!(
        before.iter().any(|r| r["note"] == "operator restart"),
        "{before:?}"
    );
    let state = std::fs::read(d.state.join("state")).expect("the state file exists");
    assert!(state.starts_with(b"MEDICSTA"));

    d.crash();
    assert!(
        !process_gone(web) && !process_gone(sleeper),
        "services outlive the daemon"
    );
    d.restart();

    // Adopted: the same processes, nothing started twice, nothing bound twice.
    assert_eq!(
        d.wait_condition("web", "ready")["pid"].as_u64(),
        Some(web.into())
    );
    assert_eq!(
        d.wait_condition("sleeper", "ready")["pid"].as_u64(),
        Some(sleeper.into())
    );
    let runs = d.read("sleeper.runs");
    assert_eq!(
        runs.lines().count(),
        2,
        "started at boot and once by the operator: {runs}"
    );
    assert_eq!(processes_with(&format!("http.server {port}")), vec![web]);
    assert!(!d.log().contains("Address already in use"), "{}", d.log());
    assert_eq!(get(port).split_whitespace().nth(1), Some("200"));
    // The history goes on, and says what happened.
    let notes = history_notes(&d, "sleeper");
    assert!(
        notes.len() > before.len() && notes.iter().any(|n| n.contains("operator restart")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("adopted pid")), "{notes:?}");
    // Its output is read again: the request above was logged by the adopted server.
    wait_for(
        "the adopted server's request log in medic logs",
        || {
            let out = d.medic_ok(&["logs", "web"]);
            out.contains("GET / HTTP/1.0").then_some(())
        },
        || d.describe("web"),
    );

    // An adopted process that dies is noticed at once (its pidfd) and restarted.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sleeper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let again = d.wait_new_pid("sleeper", Some(sleeper));
    d.wait_condition("sleeper", "ready");
    let notes = history_notes(&d, "sleeper");
    assert!(
        notes.iter().any(|n| n.contains("exit status unknown")),
        "{notes:?}"
    );

    // A clean stop stops the adopted server too.
    let status = d.stop();
    assert!(status.success(), "{status}");
    for pid in [web, again] {
        wait_for(
            &format!("pid {pid} to be stopped with the daemon"),
            || process_gone(pid).then_some(()),
            || d.log(),
        );
    }
}

#[test]
fn what_ended_while_no_daemon_ran_is_started_again_and_written_so() {
    let port = free_port();
    let mut d = Daemon::start(&config(port));
    d.wait_condition("web", "ready");
    let sleeper = d.wait_condition("sleeper", "ready")["pid"]
        .as_u64()
        .unwrap() as u32;
    d.crash();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sleeper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        "the sleeper to die",
        || process_gone(sleeper).then_some(()),
        String::new,
    );
    d.restart();
    d.wait_new_pid("sleeper", Some(sleeper));
    d.wait_condition("sleeper", "ready");
    let notes = history_notes(&d, "sleeper");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("ended while no daemon watched it")),
        "{notes:?}"
    );
    assert_eq!(d.service("sleeper")["strikes"], 1, "an end like any other");
}

#[test]
fn a_damaged_state_file_is_ignored_and_what_nobody_accounts_for_is_stopped() {
    let port = free_port();
    let mut d = Daemon::start(&config(port));
    let web = d.wait_condition("web", "ready")["pid"].as_u64().unwrap() as u32;
    let sleeper = d.wait_condition("sleeper", "ready")["pid"]
        .as_u64()
        .unwrap() as u32;
    d.crash();
    std::fs::write(d.state.join("state"), b"MEDICSTA and then garbage").unwrap();
    d.restart();
    assert!(d.log().contains("ignored"), "{}", d.log());
    // The old processes carry this state dir's tag: stopped before anything starts again.
    for pid in [web, sleeper] {
        wait_for(
            &format!("the unaccounted pid {pid} to be stopped"),
            || process_gone(pid).then_some(()),
            || d.log(),
        );
    }
    let new_web = d.wait_new_pid("web", Some(web));
    d.wait_condition("web", "ready");
    d.wait_new_pid("sleeper", Some(sleeper));
    assert_eq!(
        processes_with(&format!("http.server {port}")),
        vec![new_web]
    );
    assert!(!d.log().contains("Address already in use"), "{}", d.log());
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused_with_status_2() {
    let d = Daemon::start("[service.s]\nrun = [\"/bin/sh\", \"-c\", \"exec sleep 1000\"]\n");
    let pid = d.wait_condition("s", "ready")["pid"].as_u64();
    let out = medic(&[
        "daemon",
        "-c",
        d.config.to_str().unwrap(),
        "--state-dir",
        d.state.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("another medic daemon (pid {})", d.pid())),
        "{stderr}"
    );
    assert_eq!(
        d.service("s")["pid"].as_u64(),
        pid,
        "the first one is untouched"
    );
}
