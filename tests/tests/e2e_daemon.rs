//! End to end: the daemon as a whole: config errors, SIGHUP, the control socket under abuse,
//! traces, and the example configs.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use medic_tests::{medic, wait_for, Daemon};
use nix::sys::signal::Signal;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn a_bad_config_exits_2_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[service.x]\nrun = [\"/bin/true\"]\nneed = [\"y\"]\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let out = medic(&[
        "daemon",
        "-c",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:1:", config.display())),
        "file:line:col in {stderr}"
    );
    assert!(
        stderr.contains("needs"),
        "the nearest valid key is suggested: {stderr}"
    );
    assert!(!state.join("control.sock").exists(), "nothing started");
}

#[test]
fn sighup_restarts_only_the_changed_service_and_keeps_a_bad_config_out() {
    let config = |v: &str| {
        format!(
            r#"
[service.keep]
run = ["/bin/sh", "-c", "exec sleep 1000"]

[service.change]
run = ["/bin/sh", "-c", "exec sleep 1000"]
env = {{ V = "{v}" }}
"#
        )
    };
    let d = Daemon::start(&config("1"));
    let keep = d.wait_condition("keep", "ready")["pid"].as_u64();
    let change = d.wait_condition("change", "ready")["pid"].as_u64();
    d.write_config(&config("2"));
    d.signal(Signal::SIGHUP);
    d.wait_new_pid("change", change.map(|p| p as u32));
    d.wait_condition("change", "ready");
    assert_eq!(
        d.service("keep")["pid"].as_u64(),
        keep,
        "the unchanged service keeps running"
    );

    // A config that does not validate changes nothing.
    let change = d.service("change")["pid"].as_u64();
    d.write_config("[service.keep]\nrun = 5\n");
    d.signal(Signal::SIGHUP);
    // The refusal is logged in the step that refuses it: by then nothing was changed.
    wait_for(
        "the daemon to log that the new config is refused",
        || d.log().contains("does not validate").then_some(()),
        || d.log(),
    );
    assert_eq!(d.service("keep")["pid"].as_u64(), keep);
    assert_eq!(d.service("change")["pid"].as_u64(), change);
}

fn send_and_drain(socket: &std::path::Path, bytes: &[u8], close_write: bool) {
    let mut s = UnixStream::connect(socket).expect("connect to control.sock");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    if close_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink); // an error reply, or just the close
}

#[test]
fn malformed_control_frames_never_stop_the_daemon() {
    let d = Daemon::start(
        r#"
[service.a]
run = ["/bin/sh", "-c", "exec sleep 1000"]
"#,
    );
    let socket = d.state.join("control.sock");
    // A connection that never sends anything, held open through the rest.
    let _idle = UnixStream::connect(&socket).unwrap();
    // Random bytes (a fixed pseudo-random sequence).
    let mut x: u32 = 0x1234_5678;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    send_and_drain(&socket, &random, true);
    // A huge length prefix.
    send_and_drain(&socket, &u32::MAX.to_le_bytes(), true);
    send_and_drain(&socket, &[0xff, 0xff, 0xff, 0x7f, 1, 2, 3], true);
    // A truncated frame: says 100 bytes, sends 10, closes.
    let mut truncated = 100u32.to_le_bytes().to_vec();
    truncated.extend_from_slice(&[7; 10]);
    send_and_drain(&socket, &truncated, true);
    // A valid length with garbage inside.
    let mut garbage = 8u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xfe; 8]);
    send_and_drain(&socket, &garbage, false);
    // An empty frame.
    send_and_drain(&socket, &0u32.to_le_bytes(), true);

    let status = d.status();
    assert_eq!(status.len(), 1);
    assert_eq!(d.wait_condition("a", "ready")["name"], "a");
}

#[test]
fn a_trace_saved_from_the_daemon_replays_identically() {
    let mut d = Daemon::start(
        r#"
[service.flaky]
run = ["/bin/sh", "-c", "echo x >> @DIR@/starts; [ $(wc -l < @DIR@/starts) -ge 3 ] && exec sleep 1000; exit 1"]

[service.dep]
run = ["/bin/sh", "-c", "exec sleep 1000"]
needs = ["flaky"]
"#,
    );
    d.wait_condition("dep", "ready");
    d.medic_ok(&["restart", "dep"]);
    d.wait_condition("dep", "ready");
    let trace = d.path("run.trace");
    d.medic_ok(&["trace", "save", trace.to_str().unwrap()]);
    let out = medic(&["replay", trace.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replay failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("identical"), "{stdout}");
    assert!(d.stop().success(), "clean shutdown");
}

#[test]
fn sigterm_stops_every_service_dependents_first_then_exits_0() {
    let mut d = Daemon::start(
        r#"
[service.base]
run = ["/bin/sh", "-c", "trap 'echo base >> @DIR@/order; exit 0' TERM; while :; do sleep 1 & wait $!; done"]

[service.top]
run = ["/bin/sh", "-c", "trap 'sleep 0.3; echo top >> @DIR@/order; exit 0' TERM; while :; do sleep 1 & wait $!; done"]
needs = ["base"]
"#,
    );
    d.wait_condition("top", "ready");
    let status = d.stop();
    assert!(status.success(), "exit status {status}\n{}", d.log());
    assert_eq!(d.read("order"), "top\nbase\n", "dependents stop first");
    assert!(
        !d.state.join("control.sock").exists(),
        "the control socket is removed"
    );
}

#[test]
fn the_example_configs_validate() {
    for name in ["router.toml", "demo.toml"] {
        let path = examples().join(name);
        let out = medic(&["check", "-c", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "medic check {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn logs_of_a_service_are_captured() {
    let d = Daemon::start(
        r#"
[service.talker]
run = ["/bin/sh", "-c", "echo hello from stdout; echo hello from stderr >&2; exec sleep 1000"]
"#,
    );
    wait_for(
        "both lines in medic logs",
        || {
            let out = d.medic_ok(&["logs", "talker"]);
            (out.contains("hello from stdout") && out.contains("hello from stderr")).then_some(())
        },
        || d.log(),
    );
}

/// `[daemon]` keys are read at startup only: a SIGHUP that changes them says so, naming each
/// changed key, and applies the rest; one that leaves them as the daemon runs says nothing.
#[test]
fn sighup_warns_that_changed_daemon_keys_need_a_restart() {
    let config = |state: &str, trace: &str, history: u32, v: u32| {
        format!(
            r#"
[daemon]
state-dir = "{state}"
trace-size = "{trace}"
history-size = {history}

[service.a]
run = ["/bin/sh", "-c", "exec sleep 1000"]
env = {{ V = "{v}" }}
"#
        )
    };
    let d = Daemon::start(&config("@DIR@/state", "1MiB", 64, 1));
    let first = d.wait_condition("a", "ready")["pid"].as_u64().unwrap() as u32;
    let warnings = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("restart needed"))
            .map(str::to_string)
            .collect()
    };

    d.write_config(&config("@DIR@/elsewhere", "2MiB", 128, 2));
    d.signal(Signal::SIGHUP);
    // The service's change is applied; by then the reload has been handled whole.
    let second = d.wait_new_pid("a", Some(first));
    let log = d.log();
    let found = warnings(&log);
    for key in ["state-dir", "trace-size", "history-size"] {
        assert!(
            found.iter().any(|w| w.contains(&format!("[daemon] {key}"))),
            "a warning naming {key}:\n{log}"
        );
    }
    assert_eq!(found.len(), 3, "one warning per changed key:\n{log}");

    // Back to what the daemon runs with: nothing to say.
    d.write_config(&config("@DIR@/state", "1MiB", 64, 3));
    d.signal(Signal::SIGHUP);
    d.wait_new_pid("a", Some(second));
    assert_eq!(warnings(&d.log()).len(), 3, "{}", d.log());
}
