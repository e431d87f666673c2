//! End to end: outputs and templates (DESIGN §9). A publisher sets its outputs with `medic
//! output set` (finding the daemon through the MEDIC_STATE_DIR and MEDIC_SERVICE it was given);
//! a consumer's template is rendered before it starts, again when the outputs change (it is
//! reloaded: same pid, new file), not when they are set to the same again; a failed render
//! keeps the old file.

use medic_tests::{medic_bin, wait_for, Daemon};

const CONFIG: &str = r#"
[service.dhcp]
run = ["/bin/sh", "-c", "@MEDIC@ output set \"$MEDIC_SERVICE\" prefix=2001:db8:1200::/56 && exec sleep 1000"]

[service.app]
run = ["/bin/sh", "-c", "trap 'echo reload >> @DIR@/reloads' HUP; echo $$ >> @DIR@/app-pids; while :; do sleep 0.05; done"]
needs = ["dhcp"]
reload = { signal = "HUP" }
[[service.app.template]]
text = "prefix {{ dhcp.prefix }}\nlan {{ dhcp.prefix | subnet(64, 1) | host(1) }}\n"
target = "@DIR@/app.conf"
mode = "0600"
debounce = "100ms"
"#;

fn reloads(d: &Daemon) -> usize {
    d.read("reloads").lines().count()
}

/// Waits for a line in `service`'s history containing `text`.
fn wait_history(d: &Daemon, service: &str, text: &str) {
    wait_for(
        &format!("{service}'s history to say `{text}`"),
        || {
            d.history(service)
                .iter()
                .any(|r| r["note"].as_str().unwrap_or("").contains(text))
                .then_some(())
        },
        || d.describe(service),
    );
}

#[test]
fn a_consumer_is_rendered_before_it_starts_reloaded_on_a_change_and_keeps_a_good_file() {
    let config = CONFIG.replace("@MEDIC@", &medic_bin().display().to_string());
    let d = Daemon::start(&config);
    // dhcp is ready at once, before it has published: app's first render fails (dhcp.prefix
    // undefined), so it waits; the publication renders it again and it starts.
    let app = d.wait_condition("app", "ready");
    let pid = app["pid"].as_u64().expect("app runs");
    assert_eq!(
        d.read("app.conf"),
        "prefix 2001:db8:1200::/56\nlan 2001:db8:1200:1::1\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.path("app.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    assert_eq!(
        d.medic_ok(&["output", "dhcp"]),
        "prefix = 2001:db8:1200::/56\n"
    );
    let json = d.medic_ok(&["output", "dhcp", "--json"]);
    assert_eq!(json.trim(), r#"{"prefix":"2001:db8:1200::/56"}"#);

    // A new prefix: the file changes, app is reloaded (the same process), not restarted.
    d.medic_ok(&["output", "set", "dhcp", "prefix=2001:db8:3400::/56"]);
    wait_for(
        "app.conf to have the new prefix and app to be reloaded",
        || (d.read("app.conf").contains("2001:db8:3400:1::1") && reloads(&d) == 1).then_some(()),
        || d.describe("app"),
    );
    assert_eq!(
        d.service_pid("app"),
        Some(pid as u32),
        "reloaded, not restarted"
    );
    wait_history(
        &d,
        "dhcp",
        "outputs: prefix 2001:db8:1200::/56 → 2001:db8:3400::/56",
    );

    // The same map again changes nothing; a change that leaves the file's bytes as they are
    // (a key the template does not read) renders, finds them unchanged and reloads nothing.
    // Renders of one service run one after another, so a reload they caused would come
    // before the one the next real change causes: after that one, exactly two.
    d.medic_ok(&["output", "set", "dhcp", "prefix=2001:db8:3400::/56"]);
    d.medic_ok(&[
        "output",
        "set",
        "dhcp",
        "prefix=2001:db8:3400::/56",
        "lease=3600",
    ]);
    d.medic_ok(&[
        "output",
        "set",
        "dhcp",
        "prefix=2001:db8:5600::/56",
        "lease=3600",
    ]);
    wait_for(
        "app.conf to have the third prefix",
        || {
            d.read("app.conf")
                .contains("2001:db8:5600:1::1")
                .then_some(())
        },
        || d.describe("app"),
    );
    wait_for(
        "the second reload",
        || (reloads(&d) >= 2).then_some(()),
        || d.describe("app"),
    );
    assert_eq!(reloads(&d), 2, "no reload without a change of bytes");

    // A prefix the filter cannot read: the render fails, the old file stays, app runs on.
    let before = d.read("app.conf");
    d.medic_ok(&["output", "set", "dhcp", "prefix=garbage"]);
    wait_history(&d, "app", "render failed");
    assert_eq!(
        d.read("app.conf"),
        before,
        "a bad render never replaces a good file"
    );
    assert_eq!(d.service_pid("app"), Some(pid as u32));
    assert_eq!(reloads(&d), 2);
    let leftovers: Vec<_> = std::fs::read_dir(d.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".medic-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no candidate left behind: {leftovers:?}"
    );
}

#[test]
fn output_set_refuses_a_bad_request_with_a_clear_error() {
    let config = CONFIG.replace("@MEDIC@", &medic_bin().display().to_string());
    let d = Daemon::start(&config);
    let out = d.medic(&["output", "set", "nobody", "a=b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service called `nobody`"));
    let out = d.medic(&["output", "set", "dhcp", "Bad.Key=1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`Bad.Key` is not valid"));
    let out = d.medic(&["output", "set", "dhcp", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    let many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
    let mut args = vec!["output", "set", "dhcp"];
    args.extend(many.iter().map(String::as_str));
    let out = d.medic(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("65 output keys"));
    let big = format!("k={}", "x".repeat(40_000));
    let out = d.medic(&["output", "set", "dhcp", &big]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("more than 32768 bytes"), "{stderr}");
    let huge = format!("k={}", "x".repeat(100_000));
    let out = d.medic(&["output", "set", "dhcp", &huge]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("more than 32768 bytes"), "{stderr}");
    // The daemon is still there, and what dhcp publishes is its own map, not these.
    wait_for(
        "dhcp's own outputs",
        || (d.medic_ok(&["output", "dhcp"]) == "prefix = 2001:db8:1200::/56\n").then_some(()),
        || d.describe("dhcp"),
    );
}

#[test]
fn medic_check_names_a_broken_template_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("app.conf.in");
    std::fs::write(&source, "ok {{ dhcp.prefix }}\n{{ dhcp.prefix | upper }}\n").unwrap();
    let config = dir.path().join("medic.toml");
    let text = format!(
        r#"
[service.dhcp]
run = ["/bin/true"]
[service.app]
run = ["/bin/true"]
uses = ["dhcp"]
[[service.app.template]]
source = "{}"
target = "/tmp/never-written.conf"
[[service.app.template]]
text = "{{{{ ntp.server }}}} {{% if %}}"
target = "/tmp/never-written-2.conf"
"#,
        source.display()
    );
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(medic_bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let first = format!(
        "{}: [service.app] template 1: line 2: unknown filter `upper`",
        source.display()
    );
    assert!(stderr.contains(&first), "{stderr}");
    let second = format!("{}: [service.app] template 2: ", config.display());
    assert!(stderr.contains(&second), "{stderr}");
}

#[test]
fn a_check_that_fails_keeps_the_old_file_and_one_that_passes_lets_the_new_one_in() {
    let d = Daemon::start(
        r#"
[service.src]
run = ["/bin/sleep", "1000"]

[service.user]
run = ["/bin/sleep", "1000"]
uses = ["src"]
[[service.user.template]]
text = "word={{ src.word }}\n"
target = "@DIR@/user.conf"
check = ["/bin/sh", "-c", "grep -q good {file}"]
on-change = "none"
debounce = "50ms"
"#,
    );
    // src publishes nothing yet: the first render fails, and user waits.
    wait_history(&d, "user", "waiting for src.word");
    let user = d.service("user");
    assert_eq!(user["condition"], "waiting");
    let why = user["why"].as_str().unwrap_or_default();
    assert!(why.starts_with("render failed: "), "{user:#}");
    assert!(why.contains("waiting for src.word"), "{user:#}");
    let next = user["next"].as_str().unwrap_or_default();
    assert!(
        next.starts_with("render again when what it reads changes"),
        "{user:#}"
    );
    d.medic_ok(&["output", "set", "src", "word=good"]);
    d.wait_condition("user", "ready");
    assert_eq!(d.read("user.conf"), "word=good\n");
    d.medic_ok(&["output", "set", "src", "word=bad"]);
    wait_history(&d, "user", "check of");
    assert_eq!(
        d.read("user.conf"),
        "word=good\n",
        "the check refused the candidate"
    );
    d.medic_ok(&["output", "set", "src", "word=good-again"]);
    wait_for(
        "the file the check accepts",
        || (d.read("user.conf") == "word=good-again\n").then_some(()),
        || d.describe("user"),
    );
}

/// A check that refuses a candidate says why on its stdout or stderr: the end of what it
/// printed is in the reason the render failed, in the history and in `medic status NAME`. A
/// check that prints far more than a pipe holds is read as it prints (never blocked on a full
/// pipe) and only its last bytes are kept.
#[test]
fn a_refused_render_shows_what_the_check_printed() {
    let d = Daemon::start(
        r#"
[service.src]
run = ["/bin/sleep", "1000"]

[service.user]
run = ["/bin/sleep", "1000"]
uses = ["src"]
[[service.user.template]]
text = "word={{ src.word }}\n"
target = "@DIR@/user.conf"
# $0 is the candidate. "loud": 240 KB of filler on stdout first.
# "held": something it leaves behind holds its output open (its pid in @DIR@/held).
check = ["/bin/sh", "-c", "grep -q good \"$0\" && exit 0; grep -q loud \"$0\" && yes filler | head -n 30000; grep -q held \"$0\" && { sleep 1000 & echo $! > @DIR@/held; }; echo \"refused $(cat \"$0\")\" >&2; exit 3", "{file}"]
on-change = "none"
debounce = "50ms"
"#,
    );
    // Refused before the first start: it waits, and says why.
    d.medic_ok(&["output", "set", "src", "word=bad"]);
    let target = d.path("user.conf").display().to_string();
    let refused = format!("check of {target} (/bin/sh): exit code 3, saying: refused word=bad");
    wait_history(
        &d,
        "user",
        &format!("render failed: {refused}; not started"),
    );
    let user = d.service("user");
    assert_eq!(user["condition"], "waiting", "{user:#}");
    assert!(
        user["why"].as_str().unwrap_or_default().contains(&refused),
        "{user:#}"
    );
    let shown = d.medic_ok(&["status", "user"]);
    assert!(shown.contains(&refused), "{shown}");
    assert!(!std::path::Path::new(&target).exists());

    d.medic_ok(&["output", "set", "src", "word=good"]);
    d.wait_condition("user", "ready");
    assert_eq!(d.read("user.conf"), "word=good\n");

    // Refused while it runs: it runs on, the old file stays, the history says why.
    d.medic_ok(&["output", "set", "src", "word=bad"]);
    wait_history(
        &d,
        "user",
        &format!("render failed: {refused}; the old files stay"),
    );
    assert_eq!(d.condition("user"), "ready");
    assert_eq!(d.read("user.conf"), "word=good\n");

    d.medic_ok(&["output", "set", "src", "word=loud"]);
    wait_history(&d, "user", "refused word=loud");
    let note = d
        .history("user")
        .iter()
        .filter_map(|r| r["note"].as_str().map(str::to_string))
        .find(|n| n.contains("refused word=loud"))
        .unwrap();
    assert!(
        note.contains("exit code 3, saying: …filler / filler / "),
        "the end of what it printed, the start dropped: {}",
        &note[..200.min(note.len())]
    );
    assert!(
        note.ends_with("filler / refused word=loud; the old files stay"),
        "{}",
        &note[note.len().saturating_sub(200)..]
    );
    assert!(note.len() < 4096 + 300, "bounded: {} bytes", note.len());
    assert_eq!(d.read("user.conf"), "word=good\n");

    // A check whose leftover holds the pipes: its end is read when it is reaped, not when
    // the leftover lets go.
    d.medic_ok(&["output", "set", "src", "word=held"]);
    wait_history(&d, "user", "exit code 3, saying: refused word=held");
    let held = medic_tests::pids_in(&d.path("held"));
    for pid in &held {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(held.len(), 1, "the leftover ran");
    assert_eq!(d.read("user.conf"), "word=good\n");
}

/// `medic hook udhcpc`, run as udhcpc runs its script (`$1` the event, the lease in the
/// environment), publishes the normalised map; a template renders from it; a renew with the
/// same lease reloads nothing; `deconfig` publishes an unbound map and the render fails,
/// keeping the good file.
#[test]
fn a_dhcp_hook_publishes_the_lease_and_a_template_renders_from_it() {
    let d = Daemon::start(
        r#"
[service.wan]
run = ["sleep", "1000"]

[service.fw]
run = ["/bin/sh", "-c", "trap 'echo reload >> @DIR@/reloads' HUP; while :; do sleep 0.05; done"]
uses = ["wan"]
reload = { signal = "HUP" }
[[service.fw.template]]
text = "snat to {{ wan.ipv4.address }} via {{ wan.ipv4.router }}\n"
target = "@DIR@/fw.conf"
debounce = "100ms"
"#,
    );
    let hook = |event: &str, ip: &str| {
        let out = std::process::Command::new(medic_bin())
            .args(["hook", "udhcpc", "--service", "wan", event])
            .env_clear()
            .env("MEDIC_STATE_DIR", &d.state)
            .env("interface", "eth1")
            .env("ip", ip)
            .env("subnet", "255.255.255.0")
            .env("router", "192.0.2.1")
            .env("dns", "192.0.2.53")
            .env("lease", "600")
            .output()
            .expect("running medic hook");
        assert!(
            out.status.success(),
            "medic hook udhcpc {event}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log()
        );
    };
    hook("bound", "192.0.2.101");
    wait_for(
        "fw.conf from the lease",
        || (d.read("fw.conf") == "snat to 192.0.2.101 via 192.0.2.1\n").then_some(()),
        || d.describe("fw"),
    );
    let shown = d.medic_ok(&["output", "wan", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["state"], "bound");
    assert_eq!(shown["ipv4"]["prefix-len"], "24");
    assert_eq!(shown["ipv4"]["lease-s"], "600");
    assert_eq!(shown["raw"]["ip"], "192.0.2.101");
    // A new address: re-rendered, fw reloaded.
    hook("renew", "192.0.2.102");
    wait_for(
        "fw.conf with the new address, fw reloaded",
        || {
            (d.read("fw.conf") == "snat to 192.0.2.102 via 192.0.2.1\n" && reloads(&d) == 1)
                .then_some(())
        },
        || d.describe("fw"),
    );
    // The same lease renewed: the map's `reason` changes, the rendered bytes do not.
    hook("bound", "192.0.2.102");
    wait_history(&d, "wan", "outputs: reason renew → bound");
    // The lease lost: no ipv4 to render; the good file stays.
    let out = std::process::Command::new(medic_bin())
        .args(["hook", "udhcpc", "--service", "wan", "deconfig"])
        .env_clear()
        .env("MEDIC_STATE_DIR", &d.state)
        .env("interface", "eth1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_history(&d, "fw", "render failed");
    assert_eq!(d.read("fw.conf"), "snat to 192.0.2.102 via 192.0.2.1\n");
    assert_eq!(reloads(&d), 1, "no reload without a change of bytes");
}
