//! End to end: secrets and confirm-or-roll-back (DESIGN §10). `medic secret set` stores a
//! value (from stdin) and copies it to the service that declares it, which waits for it before
//! its first start and is reloaded on a new generation; the value is found nowhere but in the
//! secrets directory and the copy (the trace, every view in JSON and text, the daemon's log,
//! the state file are searched); a push with `--confirm-within` that is not confirmed is rolled
//! back (also across a restart of the daemon); `medic apply` applies a config and rolls it back
//! unless confirmed.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use medic_tests::{medic_bin, wait_for, Daemon};

const CONFIG: &str = r#"
[service.app]
run = ["/bin/sh", "-c", "trap 'echo reload >> @DIR@/reloads' HUP; echo $$ >> @DIR@/app-pids; while :; do sleep 0.05; done"]
reload = { signal = "HUP" }
[service.app.secret.token]
target = "@DIR@/copy/token"

[service.plain]
run = ["/bin/sh", "-c", "echo plain; exec sleep 1000"]
"#;

/// 32 random bytes as 64 hex digits: a value no artefact could hold by chance.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `medic ARGS…` against `d`, with `stdin` as its standard input.
fn medic_with_stdin(d: &Daemon, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(medic_bin())
        .args(args)
        .env("MEDIC_STATE_DIR", &d.state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running medic");
    // A command refused before it reads its stdin (a bad name) closes it: EPIPE is fine.
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    child.wait_with_output().expect("medic's output")
}

/// `medic secret set NAME [ARGS…]` with `value` on stdin; fails the test unless it succeeds.
fn push(d: &Daemon, name: &str, value: &str, args: &[&str]) {
    let mut all = vec!["secret", "set", name];
    all.extend_from_slice(args);
    let out = medic_with_stdin(d, &all, value.as_bytes());
    assert!(
        out.status.success(),
        "medic secret set {name} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

fn reloads(d: &Daemon) -> usize {
    d.read("reloads").lines().count()
}

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

fn wait_copy(d: &Daemon, value: &str) {
    wait_for(
        "the copy to hold the value",
        || (d.read("copy/token") == value).then_some(()),
        || d.describe("app"),
    );
}

/// Every file under `dir` whose bytes contain `needle`, relative to `dir`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.strip_prefix(dir).unwrap().to_path_buf());
                }
            }
        }
    }
    found.sort();
    found
}

fn list(d: &Daemon) -> Vec<serde_json::Value> {
    serde_json::from_str(&d.medic_ok(&["secret", "list", "--json"])).unwrap()
}

#[test]
fn a_pushed_secret_is_copied_reloads_its_consumer_and_leaks_nowhere() {
    let d = Daemon::start(CONFIG);
    // No secret yet: app waits, and says for what.
    d.wait_condition("plain", "ready");
    wait_history(&d, "app", "waiting for secret token");
    assert_eq!(d.condition("app"), "waiting");
    let table = d.medic_ok(&["status"]);
    assert!(table.contains("waiting for secret token"), "{table}");
    assert!(
        table.contains("start once `medic secret set token` pushes it"),
        "{table}"
    );

    let first = random_hex();
    push(&d, "token", &first, &[]);
    let app = d.wait_condition("app", "ready");
    assert_eq!(d.read("copy/token"), first);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode(&d.path("copy/token")),
        0o600,
        "a copy is 0600 by default"
    );
    let secrets = d.state.join("secrets");
    assert_eq!(mode(&secrets), 0o700);
    assert_eq!(mode(&secrets.join("token.1")), 0o600);
    let rows = list(&d);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], "token");
    assert_eq!(rows[0]["size"], 64);
    assert_eq!(rows[0]["generation"], 1);
    assert_eq!(rows[0]["unconfirmed"], false);
    assert!(rows[0]["set_at"].as_str().unwrap().ends_with('Z'));
    let table = d.medic_ok(&["secret", "list"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["token", "64", "1"], "{table}");

    // A new generation: copied, and app reloaded (the same process).
    let second = random_hex();
    push(&d, "token", &second, &[]);
    wait_copy(&d, &second);
    wait_for(
        "app to be reloaded",
        || (reloads(&d) == 1).then_some(()),
        || d.describe("app"),
    );
    assert_eq!(d.service_pid("app"), app["pid"].as_u64().map(|p| p as u32));
    wait_history(&d, "app", "secret token: generation 2");
    wait_history(&d, "app", "rendered");
    // The superseded generation leaves the store.
    wait_for(
        "generation 1 to leave the store",
        || (!secrets.join("token.1").exists()).then_some(()),
        || d.log(),
    );

    // Refusals: a bad name, a value over the bound; nothing changes.
    let bad = medic_with_stdin(&d, &["secret", "set", "Bad.Name"], b"x");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a secret name"));
    let big = vec![b'x'; 60 * 1024 + 1];
    let over = medic_with_stdin(&d, &["secret", "set", "token"], &big);
    assert_eq!(over.status.code(), Some(1));
    let said = String::from_utf8_lossy(&over.stderr);
    assert!(said.contains("over 61440 bytes"), "{said}");
    let exactly = vec![b'y'; 60 * 1024];
    let fits = medic_with_stdin(&d, &["secret", "set", "big"], &exactly);
    assert!(
        fits.status.success(),
        "{}",
        String::from_utf8_lossy(&fits.stderr)
    );
    assert_eq!(list(&d).len(), 2);
    d.medic_ok(&["secret", "rm", "big"]);
    let rm = d.medic(&["secret", "rm", "nobody"]);
    assert_eq!(rm.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rm.stderr).contains("no secret called `nobody`"));

    // Every artefact a user or a bug report could carry: none holds either value.
    let dump = |name: &str, args: &[&str]| {
        std::fs::write(d.path(name), d.medic_ok(args)).unwrap();
    };
    dump("status.txt", &["status"]);
    dump("status.json", &["status", "--json"]);
    dump("status-v2.json", &["status", "--json=v2"]);
    dump("status-app.txt", &["status", "app"]);
    dump("history.txt", &["history", "app"]);
    dump("history.json", &["history", "app", "--json"]);
    dump("events.txt", &["events"]);
    dump("events.json", &["events", "--json"]);
    dump("logs.txt", &["logs", "app"]);
    dump("list.txt", &["secret", "list"]);
    dump("list.json", &["secret", "list", "--json"]);
    let trace = d.path("trace.bin");
    d.medic_ok(&["trace", "save", trace.to_str().unwrap()]);
    d.medic_ok(&["replay", trace.to_str().unwrap()]);
    assert!(std::fs::metadata(&trace).unwrap().len() > 0);
    // The state file is written by the time the history is (each round of events).
    assert!(d.state.join("state").exists());
    let found = files_containing(d.dir.path(), second.as_bytes());
    assert_eq!(
        found,
        vec![
            PathBuf::from("copy/token"),
            PathBuf::from("state/secrets/token.2")
        ],
        "the value is only in the store and the copy"
    );
    assert_eq!(
        files_containing(d.dir.path(), first.as_bytes()),
        Vec::<PathBuf>::new(),
        "the superseded value is nowhere"
    );
    // Nor in the daemon's log, searched as text too (it is among the files above).
    assert!(!d.log().contains(&second));

    // Removed: the store forgets it, the copy stays, app runs on.
    d.medic_ok(&["secret", "rm", "token"]);
    wait_history(&d, "app", "secret token: removed");
    assert!(list(&d).is_empty());
    wait_for(
        "the store to be empty",
        || (!secrets.join("token.2").exists()).then_some(()),
        || d.log(),
    );
    assert_eq!(d.read("copy/token"), second, "a copy already made stays");
    assert_eq!(d.condition("app"), "ready");
}

/// A template reads a secret it names in `secrets` (DESIGN §10: `{{ secret("NAME") }}`): it
/// waits for it, renders it into a 0600 file, renders again on a new generation; and a
/// template whose render fails on a secret says where, never what (a filter's message would
/// quote the value it was given).
#[test]
fn a_template_reads_a_secret_and_its_errors_never_quote_it() {
    let d = Daemon::start(
        r#"
[service.wg]
run = ["/bin/sh", "-c", "trap 'echo reload >> @DIR@/reloads' HUP; while :; do sleep 0.05; done"]
reload = { signal = "HUP" }
[[service.wg.template]]
text = "[Interface]\nPrivateKey = {{ secret(\"wg-key\") }}\n"
target = "@DIR@/wg.conf"
secrets = ["wg-key"]

[service.leaky]
run = ["/bin/sh", "-c", "exec sleep 1000"]
[[service.leaky.template]]
text = "address {{ secret(\"wg-key\") | host(1) }}\n"
target = "@DIR@/leaky.conf"
secrets = ["wg-key"]

[service.undeclared]
run = ["/bin/sh", "-c", "exec sleep 1000"]
[[service.undeclared.template]]
text = "{{ secret(\"wg-key\") }}\n"
target = "@DIR@/undeclared.conf"
"#,
    );
    wait_history(&d, "wg", "waiting for secret wg-key");
    let first = random_hex();
    push(&d, "wg-key", &first, &[]);
    d.wait_condition("wg", "ready");
    assert_eq!(
        d.read("wg.conf"),
        format!("[Interface]\nPrivateKey = {first}\n")
    );
    let mode = std::fs::metadata(d.path("wg.conf"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(
        mode, 0o600,
        "a file a secret is rendered into is 0600 by default"
    );
    wait_history(&d, "leaky", "details withheld: this template reads secrets");
    assert_eq!(d.condition("leaky"), "waiting");
    wait_history(&d, "undeclared", "name it in the template's `secrets");

    let second = random_hex();
    push(&d, "wg-key", &second, &[]);
    wait_for(
        "wg.conf rendered with the new generation, and wg reloaded",
        || (d.read("wg.conf").contains(&second) && reloads(&d) == 1).then_some(()),
        || d.describe("wg"),
    );
    wait_history(&d, "wg", "outputs or a secret changed");
    // The failed render of the new generation was written too: then search everything.
    wait_for(
        "leaky's render of generation 2 to fail",
        || {
            (d.history("leaky")
                .iter()
                .filter(|r| {
                    r["note"]
                        .as_str()
                        .unwrap_or("")
                        .contains("details withheld")
                })
                .count()
                >= 2)
                .then_some(())
        },
        || d.describe("leaky"),
    );
    for (name, args) in [
        ("status.txt", vec!["status"]),
        ("status.json", vec!["status", "--json"]),
        ("leaky.txt", vec!["status", "leaky"]),
        ("history.json", vec!["history", "leaky", "--json"]),
        ("events.json", vec!["events", "--json"]),
    ] {
        std::fs::write(d.path(name), d.medic_ok(&args)).unwrap();
    }
    let trace = d.path("trace.bin");
    d.medic_ok(&["trace", "save", trace.to_str().unwrap()]);
    assert_eq!(
        files_containing(d.dir.path(), second.as_bytes()),
        vec![
            PathBuf::from("state/secrets/wg-key.2"),
            PathBuf::from("wg.conf")
        ],
        "the value is only in the store and the file rendered from it"
    );
    assert!(!d.log().contains(&second));
}

#[test]
fn an_unconfirmed_push_rolls_back_and_a_confirmed_one_stays() {
    let mut d = Daemon::start(CONFIG);
    let one = random_hex();
    push(&d, "token", &one, &[]);
    d.wait_condition("app", "ready");

    // Pushed with 2 s to confirm, not confirmed.
    let two = random_hex();
    push(&d, "token", &two, &["--confirm-within", "2s"]);
    wait_copy(&d, &two);
    let table = d.medic_ok(&["status"]);
    assert!(
        table.contains(
            "waiting for `medic confirm`: secret token generation 2 (else back to generation 1); rolled back at"
        ),
        "{table}"
    );
    let v2: serde_json::Value =
        serde_json::from_str(&d.medic_ok(&["status", "--json=v2"])).unwrap();
    assert_eq!(
        v2["pending"]["what"],
        "secret token generation 2 (else back to generation 1)"
    );
    assert!(v2["pending"]["deadline_ms"].as_u64().is_some());
    assert_eq!(list(&d)[0]["unconfirmed"], true);
    // One change at a time.
    let again = medic_with_stdin(&d, &["secret", "set", "token"], b"three");
    assert_eq!(again.status.code(), Some(1));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("waits for `medic confirm`"), "{said}");
    let reload = d.medic(&["reload-config"]);
    assert_eq!(reload.status.code(), Some(1));
    let reexec = d.medic(&["reexec"]);
    assert_eq!(reexec.status.code(), Some(1));
    let said = String::from_utf8_lossy(&reexec.stderr);
    assert!(
        said.contains("reexec refused") && said.contains("medic confirm"),
        "{said}"
    );
    // The deadline passes: the first value is back, app is reloaded again, the history says.
    wait_copy(&d, &one);
    wait_history(
        &d,
        "app",
        "secret token: generation 2 not confirmed within 2s; rolled back to generation 1",
    );
    wait_for(
        "app's second reload",
        || (reloads(&d) == 2).then_some(()),
        || d.describe("app"),
    );
    assert_eq!(list(&d)[0]["generation"], 1);
    let v2: serde_json::Value =
        serde_json::from_str(&d.medic_ok(&["status", "--json=v2"])).unwrap();
    assert!(v2["pending"].is_null());
    let late = d.medic(&["confirm"]);
    assert_eq!(late.status.code(), Some(1), "nothing waits any more");

    // Pushed and confirmed: it stays.
    let three = random_hex();
    push(&d, "token", &three, &["--confirm-within", "2s"]);
    wait_copy(&d, &three);
    d.medic_ok(&["confirm"]);
    wait_history(&d, "app", "secret token: generation 3 confirmed");
    std::thread::sleep(std::time::Duration::from_millis(2_500)); // past the old deadline
    assert_eq!(d.read("copy/token"), three);
    assert_eq!(
        list(&d)[0]["generation"],
        3,
        "generation 2 is never given twice"
    );
    assert_eq!(list(&d)[0]["unconfirmed"], false);

    // Pushed, then the daemon dies before the confirmation: the next start rolls it back.
    let four = random_hex();
    push(&d, "token", &four, &["--confirm-within", "1h"]);
    wait_copy(&d, &four);
    d.crash();
    d.restart();
    assert!(
        d.log()
            .contains("secret token: generation 4 was never confirmed"),
        "{}",
        d.log()
    );
    assert_eq!(list(&d)[0]["generation"], 3);
    wait_copy(&d, &three);
}

const APPLIED: &str = r#"
[service.app]
run = ["/bin/sh", "-c", "echo @WORD@ > @DIR@/word; exec sleep 1000"]
"#;

#[test]
fn an_applied_config_rolls_back_unless_confirmed() {
    let d = Daemon::start(&APPLIED.replace("@WORD@", "first"));
    d.wait_condition("app", "ready");
    assert_eq!(d.read("word").trim(), "first");
    let second = d.path("second.toml");
    std::fs::write(&second, d.expand(&APPLIED.replace("@WORD@", "second"))).unwrap();
    let second = second.to_str().unwrap();

    // An invalid file changes nothing.
    let broken = d.path("broken.toml");
    std::fs::write(&broken, "[service.app]\nrun = 3\n").unwrap();
    let out = d.medic(&["apply", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not validate"));

    // Applied with 2 s to confirm: app is restarted on the new definition, then, unconfirmed,
    // on the old one again.
    d.medic_ok(&["apply", second, "--confirm-within", "2s"]);
    wait_for(
        "app to run the applied config",
        || (d.read("word").trim() == "second").then_some(()),
        || d.describe("app"),
    );
    let table = d.medic_ok(&["status"]);
    assert!(
        table.contains("the config applied by medic apply"),
        "{table}"
    );
    wait_for(
        "app to run the config before it",
        || (d.read("word").trim() == "first").then_some(()),
        || d.describe("app"),
    );
    wait_history(
        &d,
        "app",
        "definition changed (config rolled back: medic apply not confirmed within 2s)",
    );
    // The daemon's config file is the first one again: a reload reads it.
    d.medic_ok(&["reload-config"]);
    let v2: serde_json::Value =
        serde_json::from_str(&d.medic_ok(&["status", "--json=v2"])).unwrap();
    assert_eq!(
        v2["daemon"]["config_path"].as_str(),
        d.config.to_str(),
        "{v2}"
    );

    // Applied and confirmed: it stays, and is the config file from then on.
    d.medic_ok(&["apply", second, "--confirm-within", "2s"]);
    wait_for(
        "app to run the applied config",
        || (d.read("word").trim() == "second").then_some(()),
        || d.describe("app"),
    );
    d.medic_ok(&["confirm"]);
    std::thread::sleep(std::time::Duration::from_millis(2_500)); // past the old deadline
    assert_eq!(d.read("word").trim(), "second");
    let v2: serde_json::Value =
        serde_json::from_str(&d.medic_ok(&["status", "--json=v2"])).unwrap();
    assert_eq!(v2["daemon"]["config_path"].as_str(), Some(second));
}
