//! Outputs and templates (DESIGN §9) as small scenarios: who publishes what, when a consumer
//! renders, and what a changed, unchanged or failed render does.

mod common;

use common::World;
use medic_kernel::config::parse;
use medic_kernel::{Effect, Input, Kernel, Operator, Outputs, RenderResult, Value};

const CONFIG: &str = r#"
    [service.dhcp6]
    run = ["/sbin/odhcp6c"]

    [service.ntp]
    run = ["/sbin/ntpd"]

    [service.dnsmasq]
    run = ["/sbin/dnsmasq"]
    needs = ["dhcp6"]
    uses = ["ntp"]
    reload = { signal = "HUP" }
    [[service.dnsmasq.template]]
    text = "{{ dhcp6.prefixes }}"
    target = "/run/dnsmasq.conf"
"#;

fn prefixes(p: &str) -> Outputs {
    [(
        "prefixes".to_string(),
        Value::List(vec![Value::String(p.into())]),
    )]
    .into()
}

fn set(w: &mut World, name: &str, outputs: Outputs) {
    w.input(Input::SetOutputs {
        service: name.into(),
        outputs,
    });
}

/// The renders asked for `name`: (ms, job, the outputs it carried).
fn renders(w: &World, name: &str) -> Vec<(u64, medic_kernel::JobId, Vec<String>)> {
    let id = w.id(name);
    w.log
        .iter()
        .filter_map(|(t, e)| match e {
            Effect::Render {
                service,
                job,
                outputs,
                ..
            } if *service == id => Some((t.as_millis(), *job, outputs.keys().cloned().collect())),
            _ => None,
        })
        .collect()
}

/// Answers the last render of `name`.
fn answer(w: &mut World, name: &str, result: RenderResult) {
    let (_, job, _) = renders(w, name).pop().expect("no render was asked for");
    let service = w.id(name);
    w.input(Input::RenderDone {
        service,
        job,
        result,
    });
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

/// dnsmasq rendered (unchanged) and running, dhcp6 publishing 2001:db8:1::/56.
fn running_consumer() -> World {
    let mut w = World::new(CONFIG).boot();
    // dhcp6 is ready at once, so dnsmasq's first render is already asked for; the set makes
    // its answer old, and a second render follows it.
    assert_eq!(renders(&w, "dnsmasq").len(), 1);
    set(&mut w, "dhcp6", prefixes("2001:db8:1::/56"));
    answer(&mut w, "dnsmasq", RenderResult::Unchanged);
    assert!(
        !w.is_running("dnsmasq"),
        "the answer of a render made old by a change"
    );
    assert_eq!(renders(&w, "dnsmasq").len(), 2);
    answer(&mut w, "dnsmasq", RenderResult::Unchanged);
    assert!(w.is_running("dnsmasq"));
    w
}

#[test]
fn a_change_of_outputs_is_a_line_in_the_publishers_history_and_a_same_set_is_nothing() {
    let mut w = World::new(CONFIG).boot();
    set(&mut w, "dhcp6", prefixes("2001:db8:1::/56"));
    set(&mut w, "dhcp6", prefixes("2001:db8:2::/56"));
    let lines = w.history("dhcp6").len();
    set(&mut w, "dhcp6", prefixes("2001:db8:2::/56"));
    assert_eq!(
        w.history("dhcp6").len(),
        lines,
        "an identical map writes nothing"
    );
    let last = w.history("dhcp6").last().unwrap().clone();
    assert!(
        last.contains("outputs: prefixes 2001:db8:1::/56 → 2001:db8:2::/56"),
        "{last}"
    );
    assert_eq!(
        w.kernel.outputs("dhcp6"),
        Some(&prefixes("2001:db8:2::/56"))
    );
}

#[test]
fn a_bad_set_is_refused_whole_with_a_notice() {
    let mut w = World::new(CONFIG).boot();
    set(&mut w, "nobody", prefixes("x"));
    let bad: Outputs = [("Bad.Key".to_string(), Value::String("x".into()))].into();
    set(&mut w, "dhcp6", bad);
    let n = notices(&w);
    assert!(
        n.iter().any(|m| m.contains("no service called `nobody`")),
        "{n:?}"
    );
    assert!(
        n.iter().any(|m| m.contains("`Bad.Key` is not valid")),
        "{n:?}"
    );
    assert_eq!(w.kernel.outputs("dhcp6"), None);
}

#[test]
fn a_consumer_is_rendered_before_it_starts_with_the_outputs_of_its_needs_and_uses() {
    let mut w = World::new(CONFIG);
    set(
        &mut w,
        "ntp",
        [("server".to_string(), Value::String("ntp1".into()))].into(),
    );
    let mut w = w.boot();
    assert!(!w.is_running("dnsmasq"), "not started before its render");
    let asked = renders(&w, "dnsmasq");
    assert_eq!(asked.len(), 1, "one render before the start");
    // dhcp6 publishes nothing yet: only ntp's outputs are carried (the template will fail).
    assert_eq!(asked[0].2, vec!["ntp"]);
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Changed(vec!["/run/dnsmasq.conf".into()]),
    );
    assert!(w.is_running("dnsmasq"));
    assert!(w
        .history("dnsmasq")
        .iter()
        .any(|l| l.contains("rendered /run/dnsmasq.conf")));
    set(&mut w, "dhcp6", prefixes("2001:db8:1::/56"));
    w.wait(1_000);
    let asked = renders(&w, "dnsmasq");
    assert_eq!(asked.last().unwrap().2, vec!["dhcp6", "ntp"]);
}

#[test]
fn a_failed_render_keeps_the_service_waiting_until_what_it_reads_changes() {
    let mut w = World::new(CONFIG).boot();
    let view = |w: &World| {
        let v = w.kernel.status(w.id("dnsmasq")).unwrap();
        (v.rendering(), v.render_failure().map(str::to_string))
    };
    assert_eq!(view(&w), (true, None), "its render is under way");
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Failed("undefined value: dhcp6".into()),
    );
    assert_eq!(
        view(&w),
        (false, Some("undefined value: dhcp6".to_string())),
        "what `medic status` shows"
    );
    assert!(!w.is_running("dnsmasq"));
    assert_eq!(w.condition("dnsmasq"), "waiting");
    let last = w.history("dnsmasq").last().unwrap().clone();
    assert!(
        last.contains("render failed: undefined value: dhcp6; not started"),
        "{last}"
    );
    w.wait(60_000);
    assert_eq!(
        renders(&w, "dnsmasq").len(),
        1,
        "no retry loop without a change"
    );
    set(&mut w, "dhcp6", prefixes("2001:db8:1::/56"));
    assert_eq!(
        renders(&w, "dnsmasq").len(),
        2,
        "a change renders again at once"
    );
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Changed(vec!["/run/dnsmasq.conf".into()]),
    );
    assert!(w.is_running("dnsmasq"));
}

#[test]
fn an_operator_restart_after_a_failed_render_renders_again() {
    let mut w = World::new(CONFIG).boot();
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Failed("check exited 1".into()),
    );
    assert_eq!(w.condition("dnsmasq"), "waiting");
    // The operator fixed what the check needed and says restart: a new fact, rendered again.
    w.operator(Operator::Restart("dnsmasq".into()));
    assert_eq!(
        renders(&w, "dnsmasq").len(),
        2,
        "{:?}",
        w.history("dnsmasq")
    );
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Changed(vec!["/run/dnsmasq.conf".into()]),
    );
    assert!(w.is_running("dnsmasq"));
}

#[test]
fn a_burst_of_changes_renders_once_after_the_debounce_and_a_change_reloads_the_same_process() {
    let mut w = running_consumer();
    let job = w.job("dnsmasq");
    let t0 = w.now.as_millis();
    let before = renders(&w, "dnsmasq").len();
    set(&mut w, "dhcp6", prefixes("2001:db8:2::/56"));
    w.wait(500);
    set(&mut w, "dhcp6", prefixes("2001:db8:3::/56"));
    let view = w.kernel.status(w.id("dnsmasq")).unwrap();
    let next = view.next_action().map(|(at, what)| (at.as_millis(), what));
    assert_eq!(next, Some((t0 + 1_500, "render its templates".to_string())));
    w.wait(999);
    assert_eq!(
        renders(&w, "dnsmasq").len(),
        before,
        "still within the debounce"
    );
    w.wait(1);
    let asked = renders(&w, "dnsmasq");
    assert_eq!(asked.len(), before + 1);
    assert_eq!(
        asked[before].0,
        t0 + 1_500,
        "1 s after the last change of the burst"
    );
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Changed(vec!["/run/dnsmasq.conf".into()]),
    );
    assert_eq!(w.job("dnsmasq"), job, "reloaded, not restarted");
    let effects = w.effects_of("dnsmasq");
    assert!(
        effects.last().unwrap().ends_with("signal HUP"),
        "{effects:?}"
    );
    let last = w.history("dnsmasq").last().unwrap().clone();
    assert!(
        last.contains("rendered /run/dnsmasq.conf (outputs changed)"),
        "{last}"
    );
}

#[test]
fn unchanged_bytes_do_nothing() {
    let mut w = running_consumer();
    set(&mut w, "dhcp6", prefixes("2001:db8:2::/56"));
    w.wait(1_000);
    let before = w.effects_of("dnsmasq").len();
    answer(&mut w, "dnsmasq", RenderResult::Unchanged);
    assert_eq!(
        w.effects_of("dnsmasq").len(),
        before,
        "no reload, no restart"
    );
}

/// dnsmasq running, a render of 2001:db8:2::/56 in flight, and a renew (only a lifetime, which
/// the template does not render) arriving before its answer, `Changed`: that answer is thrown
/// away and the render asked again, though the file was replaced.
fn changed_answer_thrown_away() -> World {
    let mut w = running_consumer();
    set(&mut w, "dhcp6", prefixes("2001:db8:2::/56"));
    w.wait(1_000);
    let before = renders(&w, "dnsmasq").len();
    let mut renewed = prefixes("2001:db8:2::/56");
    renewed.insert("valid-s".into(), Value::String("3600".into()));
    set(&mut w, "dhcp6", renewed);
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Changed(vec!["/run/dnsmasq.conf".into()]),
    );
    assert_eq!(renders(&w, "dnsmasq").len(), before + 1, "rendered again");
    assert!(
        !w.effects_of("dnsmasq")
            .last()
            .unwrap()
            .ends_with("signal HUP"),
        "not yet: that answer is old"
    );
    w
}

#[test]
fn a_thrown_away_changed_answer_owes_its_on_change_to_the_render_after_it() {
    let mut w = changed_answer_thrown_away();
    let job = w.job("dnsmasq");
    // The file on disk is the first render's: the second finds nothing new to write.
    answer(&mut w, "dnsmasq", RenderResult::Unchanged);
    let effects = w.effects_of("dnsmasq");
    let hups = effects.iter().filter(|e| e.ends_with("signal HUP")).count();
    assert_eq!(hups, 1, "{effects:?}");
    assert_eq!(w.job("dnsmasq"), job, "reloaded, not restarted");
    let history = w.history("dnsmasq");
    let n = history.len();
    assert!(
        history[n - 2].contains("what it reads changed meanwhile"),
        "{history:?}"
    );
    assert!(
        history[n - 1].contains("rendered /run/dnsmasq.conf (outputs changed)"),
        "{history:?}"
    );
    // Owed once: the next unchanged render does nothing.
    set(&mut w, "dhcp6", prefixes("2001:db8:2::/56"));
    w.wait(1_000);
    answer(&mut w, "dnsmasq", RenderResult::Unchanged);
    let after = w.effects_of("dnsmasq");
    assert_eq!(
        after.iter().filter(|e| e.ends_with("signal HUP")).count(),
        1
    );
}

/// Owed targets are kept once each, and only those of the service's own templates: two
/// answers thrown away in a row, the second naming its file again and a file no template of
/// it writes, owe one reload that names the file once.
#[test]
fn owed_targets_are_its_own_and_each_is_owed_once() {
    let mut w = changed_answer_thrown_away();
    let before = renders(&w, "dnsmasq").len();
    let mut renewed = prefixes("2001:db8:2::/56");
    renewed.insert("valid-s".into(), Value::String("7200".into()));
    set(&mut w, "dhcp6", renewed);
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Changed(vec!["/run/dnsmasq.conf".into(), "/etc/not-its-own".into()]),
    );
    if renders(&w, "dnsmasq").len() == before {
        w.wait(1_000);
    }
    assert_eq!(renders(&w, "dnsmasq").len(), before + 1, "rendered again");
    answer(&mut w, "dnsmasq", RenderResult::Unchanged);
    let hups = w
        .effects_of("dnsmasq")
        .iter()
        .filter(|e| e.ends_with("signal HUP"))
        .count();
    assert_eq!(hups, 1);
    let history = w.history("dnsmasq");
    assert!(
        history
            .last()
            .is_some_and(|l| l.contains("rendered /run/dnsmasq.conf (outputs changed)")),
        "{history:?}"
    );
}

#[test]
fn an_owed_on_change_is_applied_once_with_a_changed_or_failed_answer_after_it() {
    let mut w = changed_answer_thrown_away();
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Changed(vec!["/run/dnsmasq.conf".into()]),
    );
    let hups = |w: &World| {
        w.effects_of("dnsmasq")
            .iter()
            .filter(|e| e.ends_with("signal HUP"))
            .count()
    };
    assert_eq!(hups(&w), 1, "one reload for both renders");
    // A failed render after a thrown-away change: the files of that change stay (checked,
    // good), and the process is told of them.
    let mut w = changed_answer_thrown_away();
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Failed("check exited 1".into()),
    );
    assert_eq!(hups(&w), 1);
    let history = w.history("dnsmasq");
    let n = history.len();
    assert!(
        history[n - 2].contains("render failed: check exited 1; the old files stay"),
        "{history:?}"
    );
    assert!(
        history[n - 1].contains("rendered /run/dnsmasq.conf (outputs changed)"),
        "{history:?}"
    );
}

#[test]
fn a_failed_render_while_running_leaves_it_running() {
    let mut w = running_consumer();
    let job = w.job("dnsmasq");
    set(&mut w, "dhcp6", prefixes("bad"));
    w.wait(1_000);
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Failed("check exited 1".into()),
    );
    assert_eq!(w.job("dnsmasq"), job);
    assert_eq!(w.condition("dnsmasq"), "ready");
    let last = w.history("dnsmasq").last().unwrap().clone();
    assert!(
        last.contains("render failed: check exited 1; the old files stay"),
        "{last}"
    );
    // It crashes now: its next start renders first (what it reads is new), not at once on the
    // old files.
    let renders_before = renders(&w, "dnsmasq").len();
    let spawns_before = w.spawns("dnsmasq").len();
    w.crash("dnsmasq", 1);
    w.wait(5_000);
    assert_eq!(renders(&w, "dnsmasq").len(), renders_before + 1);
    assert_eq!(
        w.spawns("dnsmasq").len(),
        spawns_before,
        "waits for the render"
    );
}

#[test]
fn a_changed_render_is_a_new_fact_and_on_change_restart_restarts() {
    let text = CONFIG.replace(
        "target = \"/run/dnsmasq.conf\"",
        "target = \"/run/dnsmasq.conf\"\n    on-change = \"restart\"",
    );
    let mut w = World::new(&text);
    set(&mut w, "dhcp6", prefixes("2001:db8:1::/56"));
    let mut w = w.boot();
    answer(&mut w, "dnsmasq", RenderResult::Unchanged);
    assert!(w.is_running("dnsmasq"));
    w.crash("dnsmasq", 1);
    assert_eq!(
        renders(&w, "dnsmasq").len(),
        2,
        "rendered again before each start"
    );
    answer(&mut w, "dnsmasq", RenderResult::Unchanged);
    assert!(w.is_running("dnsmasq"));
    assert_eq!(w.strikes("dnsmasq"), 1);
    set(&mut w, "dhcp6", prefixes("2001:db8:2::/56"));
    w.wait(1_000);
    let job = w.job("dnsmasq");
    answer(
        &mut w,
        "dnsmasq",
        RenderResult::Changed(vec!["/run/dnsmasq.conf".into()]),
    );
    assert_eq!(w.strikes("dnsmasq"), 0, "a changed file is a new fact");
    assert!(w.is_running("dnsmasq"), "restarted without rendering again");
    assert_ne!(w.job("dnsmasq"), job, "on-change = restart");
    assert_eq!(renders(&w, "dnsmasq").len(), 3);
}

#[test]
fn outputs_survive_a_restart_and_are_cleared_by_an_operator_stop() {
    let mut w = running_consumer();
    w.crash("dhcp6", 1);
    w.wait(10);
    assert!(w.is_running("dhcp6"));
    assert_eq!(
        w.kernel.outputs("dhcp6"),
        Some(&prefixes("2001:db8:1::/56")),
        "kept across its restart"
    );
    w.operator(Operator::Stop("dhcp6".into()));
    assert_eq!(w.kernel.outputs("dhcp6"), None);
    assert!(w
        .history("dhcp6")
        .iter()
        .any(|l| l.contains("outputs cleared: stopped by the operator")));
}

#[test]
fn outputs_are_cleared_on_removal_and_at_shutdown() {
    let mut w = running_consumer();
    set(
        &mut w,
        "ntp",
        [("server".to_string(), Value::String("a".into()))].into(),
    );
    let without_ntp = CONFIG
        .replace("[service.ntp]\n    run = [\"/sbin/ntpd\"]\n", "")
        .replace("uses = [\"ntp\"]\n", "");
    w.input(Input::ReplaceConfig { text: without_ntp });
    assert_eq!(w.kernel.outputs("ntp"), None);
    w.operator(Operator::Shutdown);
    w.wait(10_000);
    assert_eq!(w.kernel.outputs("dhcp6"), None);
    assert!(w.kernel.is_shut_down());
}

#[test]
fn outputs_are_kept_in_the_state_file_and_taken_back() {
    let w = running_consumer();
    let saved = w.kernel.saved();
    let config = parse(CONFIG, "test.toml").unwrap();
    let mut kernel = Kernel::new(config);
    let mut out = Vec::new();
    kernel.step(
        medic_kernel::Instant::ZERO,
        Input::Resume(Box::new(saved)),
        &mut out,
    );
    assert_eq!(kernel.outputs("dhcp6"), Some(&prefixes("2001:db8:1::/56")));
}

#[test]
fn template_and_uses_mistakes_are_named_with_their_place() {
    let text = r#"
[service.a]
run = ["/bin/a"]
uses = ["nobody", "a"]
[[service.a.template]]
text = "x"
source = "/etc/x.in"
mode = "0999"
on-change = "reboot"
[[service.a.template]]
text = "y"
colour = "red"
"#;
    let errors = parse(text, "t.toml").unwrap_err().to_string();
    for expected in [
        "uses `nobody`, which is not a service",
        "uses itself",
        "has both `text` and `source`",
        "`0999` is not a file mode",
        "`reboot` is not one of",
        "unknown key `colour`",
        "has no `target`",
    ] {
        assert!(errors.contains(expected), "{expected}: {errors}");
    }
    let good = parse(CONFIG, "t.toml").unwrap();
    let t = &good.service("dnsmasq").unwrap().templates[0];
    assert_eq!((t.mode, t.debounce.as_millis()), (0o644, 1_000));
}
