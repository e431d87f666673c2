//! End to end with a real ssh server (DESIGN §10, the seed's "push a new root ssh key onto the
//! device and have ssh restart"): dropbear supervised by medic on a loopback port, root's
//! `authorized_keys` and its host key pushed as secrets.
//!
//! dropbear reads `~/.ssh/authorized_keys` of the user's home from the password database
//! (root: `/root`), and has no option to look elsewhere; so it runs in a mount namespace of
//! its own (`unshare --mount`, private propagation) with the test's directory bound over
//! `/root`: the machine's own `/root/.ssh` is never read or written. `dbclient -y -y` skips
//! host-key checking (no `known_hosts` is written), runs with `HOME` in the test's directory,
//! without a terminal (`setsid`) and against a server that refuses passwords (`-s`): a key
//! that is not authorised fails at once instead of prompting.
//!
//! Needs root (mount namespaces) and dropbear-bin (`dropbear`, `dbclient`, `dropbearkey`).

use std::path::Path;
use std::process::{Command, Stdio};

use medic_tests::{root_or_skip, skip, wait_for, Daemon};

const CONFIG: &str = r#"
[service.dropbear]
run = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
       "mount --bind @DIR@/home /root && exec dropbear -F -E -s -p 127.0.0.1:@PORT@ -r @HOSTKEY@"]
ready = { tcp = "127.0.0.1:@PORT@" }
[service.dropbear.secret.authorized-keys]
target = "@DIR@/home/.ssh/authorized_keys"
on-change = "none"        # dropbear reads it at each login
[service.dropbear.secret.host-key]
target = "@DIR@/host_key"
on-change = "restart"     # read once, at start
"#;

/// A TCP port free on the loopback now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    l.local_addr().unwrap().port()
}

/// `dropbearkey -t ed25519 -f PATH`; returns the public key line.
fn key(path: &Path) -> String {
    let out = Command::new("dropbearkey")
        .args(["-t", "ed25519", "-f"])
        .arg(path)
        .output()
        .expect("running dropbearkey");
    assert!(out.status.success(), "dropbearkey failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("ssh-ed25519 "))
        .expect("dropbearkey prints the public key");
    format!("{line}\n")
}

/// Whether `dbclient -i KEY` logs in as root and runs a command.
fn logs_in(d: &Daemon, port: u16, key: &str) -> bool {
    let out = Command::new("timeout")
        .args(["10", "setsid", "-w", "dbclient", "-y", "-y", "-i"])
        .arg(d.path(key))
        .args(["-p", &port.to_string(), "root@127.0.0.1", "echo logged-in"])
        .env("HOME", d.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("running dbclient");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("logged-in")
}

fn secret_set(d: &Daemon, name: &str, file: &str, args: &[&str]) {
    let from = d.path(file);
    let mut all = vec!["secret", "set", name, "--from", from.to_str().unwrap()];
    all.extend_from_slice(args);
    d.medic_ok(&all);
}

fn wait_history(d: &Daemon, text: &str) {
    wait_for(
        &format!("dropbear's history to say `{text}`"),
        || {
            d.history("dropbear")
                .iter()
                .any(|r| r["note"].as_str().unwrap_or("").contains(text))
                .then_some(())
        },
        || d.describe("dropbear"),
    );
}

#[test]
fn pushed_keys_log_in_unconfirmed_ones_roll_back_and_a_broken_config_comes_back() {
    let test = "pushed_keys_log_in_unconfirmed_ones_roll_back_and_a_broken_config_comes_back";
    if !root_or_skip(test, "for a mount namespace (dropbear reads root's home)") {
        return;
    }
    for tool in ["dropbear", "dbclient", "dropbearkey", "unshare"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return skip(
                test,
                &format!("`{tool}` is not installed (dropbear-bin, util-linux)"),
            );
        }
    }
    let port = free_port();
    let config = CONFIG
        .replace("@PORT@", &port.to_string())
        .replace("@HOSTKEY@", "@DIR@/host_key");
    let d = Daemon::start(&config);
    let k1 = key(&d.path("k1"));
    let k2 = key(&d.path("k2"));
    std::fs::write(d.path("k1.pub"), &k1).unwrap();
    std::fs::write(d.path("k2.pub"), &k2).unwrap();
    key(&d.path("host1"));
    key(&d.path("host2"));

    // Nothing pushed: dropbear waits for its secrets.
    wait_history(&d, "waiting for secret authorized-keys");
    secret_set(&d, "authorized-keys", "k1.pub", &[]);
    wait_history(&d, "waiting for secret host-key");
    secret_set(&d, "host-key", "host1", &[]);
    let first = d.wait_condition("dropbear", "ready");
    assert!(logs_in(&d, port, "k1"), "k1 logs in\n{}", d.log());
    assert!(!logs_in(&d, port, "k2"), "k2 is not authorised");

    // k2 pushed with 3 s to confirm: it works at once (dropbear reads the file per login) ...
    secret_set(&d, "authorized-keys", "k2.pub", &["--confirm-within", "3s"]);
    wait_for(
        "k2 to log in",
        || logs_in(&d, port, "k2").then_some(()),
        || d.describe("dropbear"),
    );
    assert!(!logs_in(&d, port, "k1"), "k2 replaced k1");
    // ... and, not confirmed, is rolled back: k1 again, not k2.
    wait_history(
        &d,
        "secret authorized-keys: generation 2 not confirmed within 3s; rolled back to generation 1",
    );
    wait_for(
        "k1 to log in again",
        || logs_in(&d, port, "k1").then_some(()),
        || d.describe("dropbear"),
    );
    assert!(
        !logs_in(&d, port, "k2"),
        "the unconfirmed key no longer works"
    );
    assert_eq!(
        d.service_pid("dropbear"),
        first["pid"].as_u64().map(|p| p as u32),
        "on-change none: the same dropbear throughout"
    );

    // A config that breaks dropbear (a host key that does not exist), applied unconfirmed:
    // dropbear fails, then the config before it is back and dropbear answers again.
    let broken = d.path("broken.toml");
    let broken_text = d.expand(
        &CONFIG
            .replace("@PORT@", &port.to_string())
            .replace("@HOSTKEY@", "@DIR@/no-such-key"),
    );
    std::fs::write(&broken, broken_text).unwrap();
    d.medic_ok(&["apply", broken.to_str().unwrap(), "--confirm-within", "3s"]);
    wait_history(
        &d,
        "definition changed (medic apply, to be confirmed within 3s)",
    );
    wait_history(
        &d,
        "definition changed (config rolled back: medic apply not confirmed within 3s)",
    );
    wait_for(
        "k1 to log in after the roll-back",
        || logs_in(&d, port, "k1").then_some(()),
        || d.describe("dropbear"),
    );

    // A new host key: on-change restart, a new dropbear, which lets k1 in.
    let before = d.service_pid("dropbear");
    secret_set(&d, "host-key", "host2", &[]);
    let after = d.wait_new_pid("dropbear", before);
    assert_ne!(Some(after), before);
    wait_history(&d, "secret host-key: generation 2");
    d.wait_condition("dropbear", "ready");
    wait_for(
        "k1 to log in to the restarted dropbear",
        || logs_in(&d, port, "k1").then_some(()),
        || d.describe("dropbear"),
    );
    assert_eq!(
        std::fs::read(d.path("host_key")).unwrap(),
        std::fs::read(d.path("host2")).unwrap(),
        "the copy is the pushed host key, byte for byte"
    );
}
