//! End to end: readiness protocols gate dependents; watched files reload services.

use medic_tests::{wait_for, Daemon};

#[test]
fn notify_fd_and_sd_notify_readiness_gate_dependents() {
    let d = Daemon::start(
        r#"
[service.fd]
run = ["/bin/sh", "-c", "sleep 1; touch @DIR@/fd.ready; echo >&3; exec sleep 1000"]
ready = { notify-fd = 3 }

[service.sd]
run = ["/bin/sh", "-c", "sleep 1; touch @DIR@/sd.ready; @NOTIFY@; exec sleep 1000"]
ready = "sd-notify"

[service.dependent]
run = ["/bin/sh", "-c", "for f in fd sd; do [ -e @DIR@/$f.ready ] || echo early-$f >> @DIR@/saw; done; echo started >> @DIR@/saw; exec sleep 1000"]
needs = ["fd", "sd"]
"#,
    );
    let early = d.status();
    let dependent = early.iter().find(|s| s["name"] == "dependent").unwrap();
    if d.read("fd.ready").is_empty() && !d.path("fd.ready").exists() {
        assert_eq!(
            dependent["condition"], "waiting",
            "not started before its needs: {early:#?}"
        );
        assert_eq!(dependent["pid"], serde_json::Value::Null);
    }
    d.wait_condition("dependent", "ready");
    assert_eq!(
        d.read("saw"),
        "started\n",
        "started only after both were ready"
    );
    assert_eq!(d.condition("fd"), "ready");
    assert_eq!(d.condition("sd"), "ready");
}

#[test]
fn a_service_that_never_notifies_times_out() {
    let d = Daemon::start(
        r#"
[service.mute]
run = ["/bin/sh", "-c", "exec sleep 1000"]
ready = { notify-fd = 4 }
start-timeout = "500ms"
give-up-after = 1
"#,
    );
    wait_for(
        "a start-timeout in the history",
        || {
            d.history("mute")
                .iter()
                .any(|r| r["condition"] == "start-timeout")
                .then_some(())
        },
        || d.describe("mute"),
    );
}

#[test]
fn a_watched_file_written_or_renamed_over_reloads_the_service() {
    let d = Daemon::start(
        r#"
[service.r]
run = ["/bin/sh", "-c", "trap 'echo hup >> @DIR@/hups' HUP; echo $$ > @DIR@/pid; while :; do sleep 1 & wait $!; done"]
reload = { signal = "HUP" }
reload-on = ["@DIR@/r.conf"]
debounce = "50ms"
"#,
    );
    let pid = d.wait_condition("r", "ready")["pid"].clone();
    // Created after the daemon started watching.
    std::fs::write(d.path("r.conf"), "a = 1\n").unwrap();
    wait_for(
        "one reload",
        || (d.read("hups").lines().count() == 1).then_some(()),
        || d.describe("r"),
    );
    // An editor's rename-over.
    std::fs::write(d.path("r.conf.tmp"), "a = 2\n").unwrap();
    std::fs::rename(d.path("r.conf.tmp"), d.path("r.conf")).unwrap();
    wait_for(
        "a second reload",
        || (d.read("hups").lines().count() == 2).then_some(()),
        || d.describe("r"),
    );
    assert_eq!(d.service("r")["pid"], pid, "reloaded, not restarted");
}
