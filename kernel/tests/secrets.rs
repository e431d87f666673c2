//! Secrets and confirm-or-roll-back (DESIGN §10) as small scenarios: a service waits for its
//! secret, a new generation is copied at once and applies `on-change`, a push or a config
//! applied with `confirm_within` is final on `Confirm` and rolled back at its deadline
//! otherwise, and one change waits at a time.

mod common;

use core::time::Duration;
use std::collections::BTreeMap;

use common::World;
use medic_kernel::config::{parse, Kind, TemplateSource};
use medic_kernel::{Effect, Input, JobId, RenderResult};

const CONFIG: &str = r#"
    [service.dropbear]
    run = ["/usr/sbin/dropbear", "-F"]
    reload = { signal = "HUP" }
    [service.dropbear.secret.authorized-keys]
    target = "/root/.ssh/authorized_keys"
    [service.dropbear.secret.host-key]
    target = "/etc/dropbear/host_key"
    on-change = "restart"

    [service.other]
    run = ["/bin/other"]
"#;

const KEYS: &str = "/root/.ssh/authorized_keys";
const HOST_KEY: &str = "/etc/dropbear/host_key";

fn push(w: &mut World, name: &str, generation: u64, confirm_ms: Option<u64>) {
    w.input(Input::SecretSet {
        name: name.into(),
        generation,
        confirm_within: confirm_ms.map(Duration::from_millis),
    });
}

/// The renders asked for `name`: (ms, job, the secrets' generations it carried).
fn renders(w: &World, name: &str) -> Vec<(u64, JobId, BTreeMap<String, u64>)> {
    let id = w.id(name);
    w.log
        .iter()
        .filter_map(|(t, e)| match e {
            Effect::Render {
                service,
                job,
                secrets,
                ..
            } if *service == id => Some((t.as_millis(), *job, secrets.clone())),
            _ => None,
        })
        .collect()
}

fn answer(w: &mut World, name: &str, result: RenderResult) {
    let (_, job, _) = renders(w, name).pop().expect("no render was asked for");
    let service = w.id(name);
    w.input(Input::RenderDone {
        service,
        job,
        result,
    });
}

fn changed(targets: &[&str]) -> RenderResult {
    RenderResult::Changed(targets.iter().map(|t| t.to_string()).collect())
}

fn notices(w: &World) -> Vec<String> {
    w.log
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::Notice { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn drops(w: &World) -> Vec<(String, u64)> {
    w.log
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::DropSecret { name, generation } => Some((name.clone(), *generation)),
            _ => None,
        })
        .collect()
}

fn reloads(w: &World, name: &str) -> usize {
    w.effects_of(name)
        .iter()
        .filter(|e| e.ends_with("signal HUP"))
        .count()
}

/// dropbear running with both secrets at generation 1, its copies made.
fn running() -> World {
    let mut w = World::new(CONFIG);
    // The store's secrets are told before boot: no history line, nothing copied yet.
    push(&mut w, "authorized-keys", 1, None);
    push(&mut w, "host-key", 1, None);
    let mut w = w.boot();
    let asked = renders(&w, "dropbear");
    assert_eq!(asked.len(), 1, "one render before the start");
    let expected: BTreeMap<String, u64> = [("authorized-keys".into(), 1), ("host-key".into(), 1)]
        .into_iter()
        .collect();
    assert_eq!(asked[0].2, expected, "the generations, never the bytes");
    answer(&mut w, "dropbear", changed(&[KEYS, HOST_KEY]));
    assert!(w.is_running("dropbear"));
    w
}

#[test]
fn a_secret_copy_is_0600_by_default_and_names_are_checked() {
    let config = parse(CONFIG, "test.toml").unwrap();
    let dropbear = config.service("dropbear").unwrap();
    let copies: Vec<_> = dropbear
        .templates
        .iter()
        .map(|t| (t.source.clone(), t.target.as_str(), t.mode, t.on_change))
        .collect();
    use medic_kernel::config::OnChange;
    assert_eq!(
        copies,
        vec![
            (
                TemplateSource::Secret("authorized-keys".into()),
                KEYS,
                0o600,
                OnChange::Reload
            ),
            (
                TemplateSource::Secret("host-key".into()),
                HOST_KEY,
                0o600,
                OnChange::Restart
            ),
        ]
    );
    let bad = r#"
        [service.x]
        run = ["/bin/x"]
        [service.x.secret.Bad]
        target = "/tmp/x"
        [service.x.secret.good]
        mode = "0640"
        colour = "red"
    "#;
    let errors = parse(bad, "bad.toml").unwrap_err().to_string();
    assert!(
        errors.contains("secret name `Bad` is not valid"),
        "{errors}"
    );
    assert!(errors.contains("has no `target`"), "{errors}");
    assert!(errors.contains("unknown key `colour`"), "{errors}");
    let iface = r#"
        [service.x]
        interface = "eth0"
        [service.x.secret.k]
        target = "/tmp/x"
    "#;
    let errors = parse(iface, "iface.toml").unwrap_err().to_string();
    assert!(errors.contains("`secret`"), "{errors}");
}

#[test]
fn a_service_waits_for_its_secrets_and_starts_once_they_are_pushed() {
    let mut w = World::new(CONFIG).boot();
    assert!(!w.is_running("dropbear"));
    assert!(
        w.is_running("other"),
        "a service without secrets is not held up"
    );
    assert_eq!(w.condition("dropbear"), "waiting");
    assert!(renders(&w, "dropbear").is_empty(), "nothing to copy yet");
    let view = w.kernel.status(w.id("dropbear")).unwrap();
    assert_eq!(view.waiting_secret(), Some("authorized-keys"));
    let history = w.history("dropbear");
    assert!(
        history
            .iter()
            .any(|l| l.contains("waiting for secret authorized-keys")),
        "{history:?}"
    );
    push(&mut w, "authorized-keys", 1, None);
    assert!(
        renders(&w, "dropbear").is_empty(),
        "host-key is missing still"
    );
    assert_eq!(
        w.kernel.status(w.id("dropbear")).unwrap().waiting_secret(),
        Some("host-key")
    );
    push(&mut w, "host-key", 1, None);
    assert_eq!(renders(&w, "dropbear").len(), 1);
    answer(&mut w, "dropbear", changed(&[KEYS, HOST_KEY]));
    assert!(w.is_running("dropbear"));
    let history = w.history("dropbear");
    assert!(
        history
            .iter()
            .any(|l| l.contains("secret host-key: generation 1")),
        "{history:?}"
    );
}

#[test]
fn a_new_generation_is_copied_at_once_and_applies_its_on_change() {
    let mut w = running();
    let job = w.job("dropbear");
    let before = renders(&w, "dropbear").len();
    push(&mut w, "authorized-keys", 2, None);
    let asked = renders(&w, "dropbear");
    assert_eq!(asked.len(), before + 1, "rendered at once, no debounce");
    assert_eq!(asked[before].2["authorized-keys"], 2);
    assert_eq!(drops(&w), vec![("authorized-keys".into(), 1)], "superseded");
    answer(&mut w, "dropbear", changed(&[KEYS]));
    assert_eq!(w.job("dropbear"), job, "reload: the same process");
    assert_eq!(reloads(&w, "dropbear"), 1);
    let history = w.history("dropbear");
    assert!(
        history
            .iter()
            .any(|l| l.contains("secret authorized-keys: generation 2")),
        "{history:?}"
    );
    // The host key's on-change is restart.
    push(&mut w, "host-key", 2, None);
    answer(&mut w, "dropbear", changed(&[HOST_KEY]));
    assert_ne!(w.job("dropbear"), job, "restarted");
    // The same bytes again: nothing.
    let before = w.effects_of("dropbear").len();
    push(&mut w, "host-key", 3, None);
    answer(&mut w, "dropbear", RenderResult::Unchanged);
    assert_eq!(
        w.effects_of("dropbear").len(),
        before + 1,
        "only the render"
    );
}

#[test]
fn a_confirmed_push_is_final_and_drops_the_previous_generation() {
    let mut w = running();
    push(&mut w, "authorized-keys", 2, Some(3_000));
    let pending = w.kernel.pending().expect("pending").clone();
    assert_eq!(
        pending.describe(),
        "secret authorized-keys generation 2 (else back to generation 1)"
    );
    assert!(drops(&w).is_empty(), "the previous generation is kept");
    assert!(w.kernel.next_deadline().unwrap().as_millis() <= w.now.as_millis() + 3_000);
    answer(&mut w, "dropbear", changed(&[KEYS]));
    w.wait(1_000);
    w.input(Input::Confirm);
    assert!(w.kernel.pending().is_none());
    assert_eq!(drops(&w), vec![("authorized-keys".into(), 1)]);
    w.wait(10_000);
    assert_eq!(w.kernel.secrets()["authorized-keys"], 2, "no roll-back");
    assert!(w
        .history("dropbear")
        .iter()
        .any(|l| l.contains("secret authorized-keys: generation 2 confirmed")));
    // Nothing waits now: a confirm says so.
    w.input(Input::Confirm);
    assert!(notices(&w)
        .iter()
        .any(|n| n.contains("nothing waits for a confirmation")));
}

#[test]
fn an_unconfirmed_push_is_rolled_back_at_its_deadline_and_consumers_act_again() {
    let mut w = running();
    let t0 = w.now.as_millis();
    push(&mut w, "authorized-keys", 2, Some(3_000));
    answer(&mut w, "dropbear", changed(&[KEYS]));
    assert_eq!(reloads(&w, "dropbear"), 1);
    let view = w.kernel.pending().unwrap();
    assert_eq!(view.deadline.as_millis(), t0 + 3_000);
    w.run_until(t0 + 2_999);
    assert_eq!(w.kernel.secrets()["authorized-keys"], 2, "not yet");
    w.run_until(t0 + 3_000);
    assert!(w.kernel.pending().is_none());
    assert_eq!(
        w.kernel.secrets()["authorized-keys"],
        1,
        "back to generation 1"
    );
    assert_eq!(drops(&w), vec![("authorized-keys".into(), 2)]);
    let asked = renders(&w, "dropbear");
    let last = asked.last().unwrap();
    assert_eq!((last.0, last.2["authorized-keys"]), (t0 + 3_000, 1));
    answer(&mut w, "dropbear", changed(&[KEYS]));
    assert_eq!(reloads(&w, "dropbear"), 2, "its on-change again, once");
    let history = w.history("dropbear");
    assert!(
        history.iter().any(|l| l.contains(
            "secret authorized-keys: generation 2 not confirmed within 3s; rolled back to generation 1"
        )),
        "{history:?}"
    );
    // A late confirm finds nothing.
    w.input(Input::Confirm);
    assert_eq!(w.kernel.secrets()["authorized-keys"], 1);
    w.wait(60_000);
    assert_eq!(reloads(&w, "dropbear"), 2, "and nothing more happens");
}

#[test]
fn a_first_push_unconfirmed_leaves_no_secret_and_the_copy_stays() {
    let mut w = running();
    push(&mut w, "wg-key", 1, Some(1_000));
    w.wait(1_000);
    assert!(!w.kernel.secrets().contains_key("wg-key"));
    assert_eq!(drops(&w), vec![("wg-key".into(), 1)]);
}

#[test]
fn one_change_waits_at_a_time() {
    let mut w = running();
    push(&mut w, "authorized-keys", 2, Some(60_000));
    push(&mut w, "host-key", 2, None);
    push(&mut w, "authorized-keys", 3, Some(1_000));
    w.input(Input::SecretRemoved {
        name: "host-key".into(),
    });
    w.input(Input::ApplyConfig {
        text: CONFIG.into(),
        confirm_within: None,
    });
    let refused: Vec<String> = notices(&w)
        .into_iter()
        .filter(|n| n.contains("refused") && n.contains("waits for `medic confirm`"))
        .collect();
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert_eq!(w.kernel.secrets()["host-key"], 1);
    assert_eq!(w.kernel.secrets()["authorized-keys"], 2);
    w.wait(60_000);
    assert_eq!(w.kernel.secrets()["authorized-keys"], 1, "rolled back");
    // Now another push is taken.
    push(&mut w, "host-key", 2, None);
    assert_eq!(w.kernel.secrets()["host-key"], 2);
}

#[test]
fn a_removed_secret_leaves_a_running_copy_and_holds_the_next_start() {
    let mut w = running();
    w.input(Input::SecretRemoved {
        name: "host-key".into(),
    });
    assert!(w.is_running("dropbear"), "a running consumer goes on");
    assert_eq!(drops(&w), vec![("host-key".into(), 1)]);
    let renders_before = renders(&w, "dropbear").len();
    w.wait(10);
    assert_eq!(
        renders(&w, "dropbear").len(),
        renders_before,
        "nothing to copy"
    );
    let history = w.history("dropbear");
    assert!(
        history
            .iter()
            .any(|l| l.contains("secret host-key: removed")),
        "{history:?}"
    );
    w.crash("dropbear", 1);
    w.wait(5_000);
    assert!(!w.is_running("dropbear"), "its next start waits");
    assert_eq!(
        w.kernel.status(w.id("dropbear")).unwrap().waiting_secret(),
        Some("host-key")
    );
    push(&mut w, "host-key", 1, None);
    answer(&mut w, "dropbear", changed(&[HOST_KEY]));
    assert!(w.is_running("dropbear"));
}

#[test]
fn an_applied_config_is_rolled_back_unless_confirmed() {
    let mut w = running();
    let broken = CONFIG.replace("\"-F\"", "\"-F\", \"--broken\"");
    let job = w.job("dropbear");
    w.input(Input::ApplyConfig {
        text: broken.clone(),
        confirm_within: Some(Duration::from_secs(3)),
    });
    let argv = |w: &World| match &w.kernel.config().service("dropbear").unwrap().kind {
        Kind::Process { argv } => argv.clone(),
        _ => unreachable!(),
    };
    assert!(argv(&w).contains(&"--broken".to_string()));
    assert_eq!(
        w.kernel.pending().unwrap().describe(),
        "the config applied by medic apply (else back to the config before it)"
    );
    // The changed definition restarts it (rendered first).
    answer(&mut w, "dropbear", RenderResult::Unchanged);
    assert_ne!(w.job("dropbear"), job);
    let history = w.history("dropbear");
    assert!(
        history
            .iter()
            .any(|l| l.contains("definition changed (medic apply, to be confirmed within 3s)")),
        "{history:?}"
    );
    w.wait(3_000);
    assert!(w.kernel.pending().is_none());
    assert!(
        !argv(&w).contains(&"--broken".to_string()),
        "the config before"
    );
    assert!(w
        .log
        .iter()
        .any(|(_, e)| matches!(e, Effect::ConfigRolledBack)));
    answer(&mut w, "dropbear", RenderResult::Unchanged);
    assert!(w.is_running("dropbear"));
    let history = w.history("dropbear");
    assert!(
        history.iter().any(|l| l.contains(
            "definition changed (config rolled back: medic apply not confirmed within 3s)"
        )),
        "{history:?}"
    );
    // Confirmed: final.
    w.input(Input::ApplyConfig {
        text: broken,
        confirm_within: Some(Duration::from_secs(3)),
    });
    w.input(Input::Confirm);
    w.wait(10_000);
    assert!(argv(&w).contains(&"--broken".to_string()));
    // An apply that does not validate changes nothing and sets no deadline.
    w.input(Input::ApplyConfig {
        text: "[service.x]\nrun = 3".into(),
        confirm_within: Some(Duration::from_secs(3)),
    });
    assert!(w.kernel.pending().is_none());
    assert!(argv(&w).contains(&"--broken".to_string()));
}

#[test]
fn the_deadline_survives_a_snapshot_and_replays() {
    let mut w = running();
    push(&mut w, "authorized-keys", 2, Some(3_000));
    // The kernel's state, as a trace's snapshot holds it, keeps the change and its deadline.
    let bytes = postcard::to_stdvec(&w.kernel).unwrap();
    let copy: medic_kernel::Kernel = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(copy.pending(), w.kernel.pending());
    assert_eq!(copy.next_deadline(), w.kernel.next_deadline());
    assert_eq!(copy.secrets(), w.kernel.secrets());
}

#[test]
fn a_rolled_back_key_leaves_the_disk_even_while_its_consumer_is_down() {
    let mut w = running();
    push(&mut w, "authorized-keys", 2, Some(1_000));
    answer(&mut w, "dropbear", changed(&[KEYS]));
    w.operator(medic_kernel::Operator::Stop("dropbear".into()));
    assert!(!w.is_running("dropbear"));
    let before = renders(&w, "dropbear").len();
    w.wait(1_000);
    let asked = renders(&w, "dropbear");
    assert_eq!(
        asked.len(),
        before + 1,
        "copied again though it does not run"
    );
    assert_eq!(asked[before].2["authorized-keys"], 1);
    answer(&mut w, "dropbear", changed(&[KEYS]));
    assert!(!w.is_running("dropbear"), "not started by the copy");
    // Its next start needs no other render: the files are ready.
    w.operator(medic_kernel::Operator::Start("dropbear".into()));
    assert!(w.is_running("dropbear"));
    assert_eq!(renders(&w, "dropbear").len(), before + 1);
}

/// A template that names secrets in `secrets` reads them (`{{ secret("wg-key") }}`): its
/// service waits for them, its render carries their generations, a new generation renders it
/// again at once; its target defaults to 0600 unless a mode is given.
#[test]
fn a_template_that_reads_secrets_waits_for_them_and_follows_their_generations() {
    let config = r#"
        [service.wg]
        run = ["/usr/bin/wg-daemon"]
        reload = { signal = "HUP" }
        [[service.wg.template]]
        text = "PrivateKey = {{ secret(\"wg-key\") }}\n"
        target = "/run/wg/wg0.conf"
        secrets = ["wg-key", "wg-key", "psk"]
        [[service.wg.template]]
        text = "PresharedKey = {{ secret(\"psk\") }}\n"
        target = "/run/wg/psk.conf"
        secrets = ["psk"]
        mode = "0640"
    "#;
    let parsed = parse(config, "wg.toml").unwrap();
    let wg = parsed.service("wg").unwrap();
    assert_eq!(wg.templates[0].secrets, ["wg-key", "psk"], "each once");
    assert_eq!(
        wg.templates[0].mode, 0o600,
        "a file holding a secret is 0600"
    );
    assert_eq!(wg.templates[1].mode, 0o640, "unless told");
    let bad = r#"
        [service.x]
        run = ["/bin/x"]
        [[service.x.template]]
        text = "x"
        target = "/tmp/x"
        secrets = ["Bad.Name"]
    "#;
    let errors = parse(bad, "bad.toml").unwrap_err().to_string();
    assert!(
        errors.contains("`Bad.Name` is not a secret name"),
        "{errors}"
    );

    let mut w = World::new(config).boot();
    assert_eq!(w.condition("wg"), "waiting");
    assert!(renders(&w, "wg").is_empty());
    assert_eq!(
        w.kernel.status(w.id("wg")).unwrap().waiting_secret(),
        Some("wg-key")
    );
    push(&mut w, "wg-key", 1, None);
    assert!(renders(&w, "wg").is_empty(), "psk is missing still");
    push(&mut w, "psk", 1, None);
    let asked = renders(&w, "wg");
    assert_eq!(asked.len(), 1);
    let expected: BTreeMap<String, u64> = [("psk".into(), 1), ("wg-key".into(), 1)]
        .into_iter()
        .collect();
    assert_eq!(asked[0].2, expected, "the generations, never the bytes");
    answer(
        &mut w,
        "wg",
        changed(&["/run/wg/wg0.conf", "/run/wg/psk.conf"]),
    );
    assert!(w.is_running("wg"));
    let job = w.job("wg");
    push(&mut w, "wg-key", 2, None);
    let asked = renders(&w, "wg");
    assert_eq!(asked.len(), 2, "rendered again at once");
    assert_eq!(asked[1].2["wg-key"], 2);
    answer(&mut w, "wg", changed(&["/run/wg/wg0.conf"]));
    assert_eq!(w.job("wg"), job, "reloaded, not restarted");
    assert_eq!(reloads(&w, "wg"), 1);
    let history = w.history("wg");
    assert!(
        history
            .iter()
            .any(|l| l.contains("rendered /run/wg/wg0.conf (outputs or a secret changed)")),
        "{history:?}"
    );
}

#[test]
fn a_push_while_shutting_down_copies_nothing() {
    let mut w = running();
    w.input(Input::Operator(medic_kernel::Operator::Shutdown));
    let before = renders(&w, "dropbear").len();
    push(&mut w, "authorized-keys", 2, None);
    assert_eq!(
        renders(&w, "dropbear").len(),
        before,
        "nothing is rewritten while everything stops"
    );
}
