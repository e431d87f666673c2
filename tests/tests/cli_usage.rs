//! The command line without a daemon: usage errors exit 2, `--help` everywhere, and a client
//! command with no daemon answering exits 3 and says where it looked.

use std::process::{Command, Output, Stdio};

use medic_tests::{medic, medic_bin};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["start"],
        &["history"],
        &["status", "--bogus"],
        &["logs", "x", "-n", "many"],
        &["trace"],
        &["replay"],
    ] {
        let out = medic(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "medic {args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "medic {args:?} says what is wrong");
    }
}

#[test]
fn every_command_has_help_that_exits_0() {
    let commands = [
        "daemon", "check", "status", "start", "stop", "restart", "reload", "history", "logs",
        "events", "trace", "replay",
    ];
    let top = medic(&["--help"]);
    assert_eq!(top.status.code(), Some(0));
    let top = text(&top.stdout);
    for command in commands {
        assert!(top.contains(command), "`medic --help` lists {command}");
        let out = medic(&[command, "--help"]);
        let help = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "medic {command} --help");
        assert!(
            help.contains("Usage: medic"),
            "medic {command} --help:\n{help}"
        );
    }
    let save = medic(&["trace", "save", "--help"]);
    assert!(
        text(&save.stdout).contains("absolute"),
        "trace save says how FILE is read"
    );
}

fn client(args: &[&str], state_dir: &std::path::Path) -> Output {
    Command::new(medic_bin())
        .args(args)
        .env("MEDIC_STATE_DIR", state_dir)
        .env_remove("MEDIC_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn no_daemon_answering_is_exit_3_for_every_client_command() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["start", "x"],
        &["stop", "x"],
        &["restart", "x"],
        &["reload", "x"],
        &["history", "x"],
        &["logs", "x"],
        &["events"],
        &["trace", "save", "/tmp/never-written.trace"],
    ] {
        let out = client(args, dir.path());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "medic {args:?}: {stderr}");
        assert!(stderr.contains("no medic daemon is answering"), "{stderr}");
        assert!(
            stderr.contains(&dir.path().display().to_string()),
            "names where: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_stale_socket_is_no_daemon_too() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(
        socket.exists(),
        "the socket file stays behind, like after a crash"
    );
    let out = client(&["status"], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn state_dir_flag_wins_over_the_environment() {
    let env_dir = tempfile::tempdir().unwrap();
    let flag_dir = tempfile::tempdir().unwrap();
    let flag = flag_dir.path().to_str().unwrap();
    let out = client(&["status", "--state-dir", flag], env_dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(flag), "{stderr}");
}
