//! One `[service.NAME]` table → a [`ServiceConfig`], with the `needs`/`after` references kept
//! at their places for the graph checks.

use std::collections::BTreeMap;

use toml::de::{DeTable, DeValue};

use super::model::limits::{MAX_TEMPLATES, MAX_TEMPLATE_TEXT, MIN_POLL_PERIOD, MIN_TIMER_PERIOD};
use super::model::{
    defaults, AtTime, Check, DeviceMatch, Heal, Kind, LinkReady, OnChange, Probe, Readiness,
    Reports, ServiceConfig, Template, TemplateSource, VerdictOverride,
};
use super::values::{entries, key_path, list, sub_place, Ctx, Field, Hint, Value};
use crate::health::{Condition, BUILT_IN};

/// A service as read, before the graph checks.
pub(super) struct Parsed {
    /// The service, with a placeholder kind if the table gave none.
    pub service: ServiceConfig,
    /// `needs`, each with the byte offset of its entry.
    pub needs: Vec<(String, usize)>,
    /// `after`, each with the byte offset of its entry.
    pub after: Vec<(String, usize)>,
    /// `uses`, each with the byte offset of its entry.
    pub uses: Vec<(String, usize)>,
}

/// Every key of a service table.
const KEYS: [&str; 37] = [
    "run",
    "oneshot",
    "interface",
    "device",
    "stop",
    "ready-when",
    "needs",
    "after",
    "stop-when-needs-fail",
    "ready",
    "probe",
    "memory-max",
    "memory-every",
    "reload-on",
    "restart-on",
    "debounce",
    "reload",
    "env",
    "user",
    "group",
    "cwd",
    "start-timeout",
    "stop-signal",
    "stop-timeout",
    "give-up-after",
    "forgive-after",
    "max-backoff",
    "retry-after",
    "every",
    "restart-every",
    "at",
    "jitter",
    "catch-up",
    "on",
    "uses",
    "template",
    "secret",
];

/// Every key of a `[[service.NAME.template]]`.
const TEMPLATE_KEYS: [&str; 10] = [
    "source",
    "text",
    "target",
    "mode",
    "owner",
    "group",
    "check",
    "on-change",
    "debounce",
    "secrets",
];

/// Every key of a `[service.NAME.secret.SECRET]`.
const SECRET_KEYS: [&str; 5] = ["target", "mode", "owner", "group", "on-change"];

/// The keys that choose the kind.
const KIND_KEYS: [&str; 4] = ["run", "oneshot", "interface", "device"];
/// The keys of a readiness or probe check.
const CHECK_KEYS: [&str; 4] = ["run", "tcp", "unix", "file"];

const PROCESS: u8 = 1;
const ONESHOT: u8 = 2;
const INTERFACE: u8 = 4;
const DEVICE: u8 = 8;

/// The kinds a key fits, as a mask.
fn kinds_of(key: &str) -> u8 {
    match key {
        "stop" | "every" => ONESHOT,
        "template" | "secret" => PROCESS | ONESHOT,
        "at" | "jitter" | "catch-up" => PROCESS | ONESHOT,
        "restart-every" => PROCESS,
        "ready-when" => INTERFACE,
        "ready" | "probe" | "memory-max" | "memory-every" => PROCESS,
        "reload-on" | "restart-on" | "debounce" | "reload" | "env" | "user" | "group" | "cwd"
        | "start-timeout" | "stop-signal" | "stop-timeout" => PROCESS | ONESHOT,
        _ => PROCESS | ONESHOT | INTERFACE | DEVICE,
    }
}

fn mask(kind: &Kind) -> u8 {
    match kind {
        Kind::Process { .. } => PROCESS,
        Kind::Oneshot { .. } => ONESHOT,
        Kind::Interface { .. } => INTERFACE,
        Kind::Device { .. } => DEVICE,
    }
}

/// "a process service", "an interface service".
fn a_kind(kind: &Kind) -> &'static str {
    match kind {
        Kind::Process { .. } => "a process service",
        Kind::Oneshot { .. } => "a oneshot service",
        Kind::Interface { .. } => "an interface service",
        Kind::Device { .. } => "a device service",
    }
}

/// Why `key` does not fit a service of `kind`.
fn why_not(key: &str, kind: &Kind) -> &'static str {
    match (key, kind) {
        ("ready" | "ready-when", Kind::Oneshot { .. }) => {
            "a oneshot is ready when its command exits 0"
        }
        ("ready", Kind::Interface { .. }) => "an interface is ready as its `ready-when` says",
        ("ready" | "ready-when", Kind::Device { .. }) => {
            "a device is ready while at least one device matches"
        }
        ("ready-when", _) => {
            "`ready-when` is for interfaces; use `ready` to say when a process is ready"
        }
        ("stop", Kind::Process { .. }) => {
            "`stop` is the command that undoes a oneshot; a process is stopped with `stop-signal`"
        }
        ("every", Kind::Process { .. }) => {
            "`every` runs a oneshot again; a process is restarted on a schedule with `restart-every`"
        }
        ("restart-every", Kind::Oneshot { .. }) => {
            "`restart-every` restarts a process; a oneshot is run again with `every`"
        }
        (_, Kind::Interface { .. }) => "medic runs no process for an interface",
        (_, Kind::Device { .. }) => "medic runs no process for a device",
        _ => "it applies to long-running `run` services only",
    }
}

/// Reads the table of service `name` at `place` (e.g. `[service.ntpd]`).
pub(super) fn read(cx: &mut Ctx, name: &str, place: &str, value: &Value) -> Option<Parsed> {
    let table = cx.table(
        Field::new(name, "[service]", value),
        &format!("a table like {place}"),
    )?;
    let kind_entry = cx.one_of(table, value.span().start, place, &KIND_KEYS);
    let kind_known = kind_entry.is_some();
    let mut kind = kind_entry.map(|(k, v)| read_kind(cx, Field::new(k.get_ref(), place, v)));
    let mut s = ServiceConfig::new(name, Kind::Process { argv: Vec::new() });
    let (mut needs, mut after, mut uses, mut on) = (Vec::new(), Vec::new(), Vec::new(), None);
    let mut catch_up_at = None;
    let mut secret_copies = Vec::new();
    for (k, v) in entries(table) {
        let f = Field::new(k.get_ref(), place, v);
        if !KEYS.contains(&f.key) {
            cx.unknown_key(k, place, &KEYS);
            continue;
        }
        if let Some(kind) = kind
            .as_ref()
            .filter(|kind| kinds_of(f.key) & mask(kind) == 0)
        {
            let message = format!(
                "`{}` in {place} does not fit {}: {}",
                f.key,
                a_kind(kind),
                why_not(f.key, kind)
            );
            cx.error(k.span().start, message);
            continue;
        }
        match f.key {
            "run" | "oneshot" | "interface" | "device" => {} // the kind, read above
            "stop" => {
                if let (Some(Kind::Oneshot { stop, .. }), Some(argv)) = (&mut kind, cx.argv(f)) {
                    *stop = Some(argv);
                }
            }
            "ready-when" => {
                let when = cx.choice(f, &LinkReady::ALL.map(|r| (r.name(), r)));
                if let (Some(Kind::Interface { ready_when, .. }), Some(when)) = (&mut kind, when) {
                    *ready_when = when;
                }
            }
            "needs" => needs = cx.array(f, "service names", reference).unwrap_or_default(),
            "after" => after = cx.array(f, "service names", reference).unwrap_or_default(),
            "stop-when-needs-fail" => set(&mut s.stop_when_needs_fail, cx.boolean(f)),
            "ready" => set(&mut s.ready, readiness(cx, f)),
            "probe" => s.probe = probe(cx, f),
            "memory-max" => s.memory_max = cx.memory_limit(f),
            "memory-every" => set(&mut s.memory_every, cx.period_at_least(f, MIN_POLL_PERIOD)),
            "reload-on" => set(&mut s.reload_on, cx.array(f, "paths", Ctx::path)),
            "restart-on" => set(&mut s.restart_on, cx.array(f, "paths", Ctx::path)),
            "debounce" => set(&mut s.debounce, cx.duration(f)),
            "reload" => s.reload = cx.action(f),
            "env" => set(&mut s.env, cx.env(f)),
            "user" => s.user = account(cx, f),
            "group" => s.group = account(cx, f),
            "cwd" => s.cwd = cx.path(f),
            "start-timeout" => set(&mut s.start_timeout, cx.period(f)),
            "stop-signal" => set(&mut s.stop_signal, cx.signal(f)),
            "stop-timeout" => set(&mut s.stop_timeout, cx.duration(f)),
            "give-up-after" => set(&mut s.give_up_after, cx.integer32(f, 1..=1_000_000)),
            "forgive-after" => set(&mut s.forgive_after, cx.duration(f)),
            "max-backoff" => set(&mut s.max_backoff, cx.duration(f)),
            "retry-after" => set(&mut s.retry_after, retry_after(cx, f)),
            "every" => s.every = cx.period_at_least(f, MIN_TIMER_PERIOD),
            "restart-every" => s.restart_every = cx.period_at_least(f, MIN_TIMER_PERIOD),
            "at" => set(
                &mut s.at,
                cx.array(f, "times like \"03:00\" or \"Sun 04:30\"", at_time),
            ),
            "jitter" => set(&mut s.jitter, cx.duration(f)),
            "catch-up" => {
                catch_up_at = Some(f.at());
                set(&mut s.catch_up, cx.boolean(f));
            }
            "uses" => uses = cx.array(f, "service names", reference).unwrap_or_default(),
            "template" => s.templates = templates(cx, f),
            "secret" => secret_copies = secrets(cx, f),
            _ => on = Some(f), // "on", read once the rest of the service is known
        }
    }
    if let Some(kind) = kind {
        s.kind = kind;
    }
    if let Some(at) = catch_up_at.filter(|_| s.catch_up && s.at.is_empty()) {
        cx.error(
            at,
            format!("`catch-up` in {place} needs `at`: only wall-clock times can be missed"),
        );
    }
    // A secret's copy is rendered with the templates (before each start, atomically, with
    // its mode), after them.
    s.templates.extend(secret_copies);
    s.needs = needs.iter().map(|(n, _)| n.clone()).collect();
    s.after = after.iter().map(|(n, _)| n.clone()).collect();
    s.uses = uses.iter().map(|(n, _)| n.clone()).collect();
    if let Some(f) = on {
        s.on = conditions(cx, &s, kind_known, f);
    }
    Some(Parsed {
        service: s,
        needs,
        after,
        uses,
    })
}

/// `[[service.NAME.template]]`: an array of tables, each with `source` or `text` and a
/// `target`. The template language itself is checked by the adapter (`medic check`).
fn templates(cx: &mut Ctx, f: Field) -> Vec<Template> {
    let Some(items) = f.value.get_ref().as_array() else {
        return cx
            .wrong_type(f, "tables written [[service.NAME.template]]")
            .unwrap_or_default();
    };
    if items.len() > MAX_TEMPLATES {
        cx.invalid::<()>(
            f,
            format_args!(
                "{} templates; at most {MAX_TEMPLATES} per service",
                items.len()
            ),
        );
        return Vec::new();
    }
    let place = sub_place(f.place, "template");
    let mut found = Vec::new();
    for item in items.iter() {
        let f = Field::new("template", &place, item);
        let Some(table) = cx.table(f, "a table like { target = \"/run/x.conf\", text = \"…\" }")
        else {
            continue;
        };
        let source = cx.one_of(table, f.at(), &place, &["source", "text"]);
        let source = source.and_then(|(k, v)| {
            let f = Field::new(k.get_ref(), &place, v);
            match f.key {
                "source" => cx.path(f).map(TemplateSource::File),
                _ => match cx.string(f) {
                    Some(t) if t.len() > MAX_TEMPLATE_TEXT => cx.invalid(
                        f,
                        format_args!(
                            "the text is over {MAX_TEMPLATE_TEXT} bytes; put it in a `source` file"
                        ),
                    ),
                    t => t.map(TemplateSource::Text),
                },
            }
        });
        let mut t = Template {
            source: TemplateSource::Text(String::new()),
            target: String::new(),
            mode: defaults::TEMPLATE_MODE,
            owner: None,
            group: None,
            check: None,
            on_change: OnChange::Reload,
            debounce: defaults::RENDER_DEBOUNCE,
            secrets: Vec::new(),
        };
        let mut target = None;
        let mut mode_given = false;
        for (k, v) in entries(table) {
            let f = Field::new(k.get_ref(), &place, v);
            match f.key {
                "source" | "text" => {} // read above
                "target" => target = cx.path(f),
                "mode" => {
                    mode_given = true;
                    set(&mut t.mode, file_mode(cx, f));
                }
                "secrets" => t.secrets = secret_names(cx, f),
                "owner" => t.owner = account(cx, f),
                "group" => t.group = account(cx, f),
                "check" => t.check = cx.argv(f),
                "on-change" => set(&mut t.on_change, cx.choice(f, &OnChange::ALL)),
                "debounce" => set(&mut t.debounce, cx.duration(f)),
                _ => cx.unknown_key(k, &place, &TEMPLATE_KEYS),
            }
        }
        let Some(target) = target else {
            cx.error(
                f.at(),
                format!("{place} has no `target`: name the file to write"),
            );
            continue;
        };
        if let Some(source) = source {
            t.source = source;
            t.target = target;
            // A file that holds a secret is readable by its owner only, unless told.
            if !t.secrets.is_empty() && !mode_given {
                t.mode = 0o600;
            }
            found.push(t);
        }
    }
    found
}

/// `secrets = ["wg-key", …]`: names of secrets (`[a-z0-9_-]`, 1 to 64 bytes), each once.
fn secret_names(cx: &mut Ctx, f: Field) -> Vec<String> {
    let names = cx.array(f, "secret names", |cx, f| {
        let name = cx.string(f)?;
        if crate::outputs::valid_key(&name) {
            Some(name)
        } else {
            cx.invalid(
                f,
                format_args!("`{name}` is not a secret name: 1 to 64 of a-z, 0-9, `_` and `-`"),
            )
        }
    });
    let mut seen: Vec<String> = Vec::new();
    for name in names.unwrap_or_default() {
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen
}

/// `[service.NAME.secret.SECRET]`: a copy of a pushed secret at `target` (DESIGN §10), kept
/// as a [`Template`] whose source is the secret (mode 0600 by default; no `check`).
fn secrets(cx: &mut Ctx, f: Field) -> Vec<Template> {
    let Some(table) = cx.table(
        f,
        "tables like [service.NAME.secret.authorized-keys] with a `target`",
    ) else {
        return Vec::new();
    };
    let place = sub_place(f.place, "secret");
    let all = entries(table);
    if all.len() > MAX_TEMPLATES {
        cx.invalid::<()>(
            f,
            format_args!("{} secrets; at most {MAX_TEMPLATES} per service", all.len()),
        );
        return Vec::new();
    }
    let mut found = Vec::new();
    for (name, value) in all {
        let secret: &str = name.get_ref();
        if !crate::outputs::valid_key(secret) {
            cx.error(
                name.span().start,
                format!("secret name `{secret}` is not valid: 1 to 64 of a-z, 0-9, `_` and `-`"),
            );
            continue;
        }
        let place = sub_place(&place, secret);
        let f = Field::new(secret, &place, value);
        let Some(table) = cx.table(
            f,
            "a table like { target = \"/root/.ssh/authorized_keys\" }",
        ) else {
            continue;
        };
        let mut t = Template {
            source: TemplateSource::Secret(secret.to_string()),
            target: String::new(),
            mode: defaults::SECRET_MODE,
            owner: None,
            group: None,
            check: None,
            on_change: OnChange::Reload,
            debounce: defaults::RENDER_DEBOUNCE,
            secrets: Vec::new(),
        };
        let mut target = None;
        for (k, v) in entries(table) {
            let f = Field::new(k.get_ref(), &place, v);
            match f.key {
                "target" => target = cx.path(f),
                "mode" => set(&mut t.mode, file_mode(cx, f)),
                "owner" => t.owner = account(cx, f),
                "group" => t.group = account(cx, f),
                "on-change" => set(&mut t.on_change, cx.choice(f, &OnChange::ALL)),
                _ => cx.unknown_key(k, &place, &SECRET_KEYS),
            }
        }
        match target {
            Some(target) => {
                t.target = target;
                found.push(t);
            }
            None => cx.error(
                f.at(),
                format!("{place} has no `target`: name the file the secret is copied to"),
            ),
        }
    }
    found
}

/// A file mode written in octal as a string: `"0644"`, `"600"`.
fn file_mode(cx: &mut Ctx, f: Field) -> Option<u32> {
    let text = cx.string(f)?;
    match u32::from_str_radix(&text, 8) {
        Ok(mode) if !text.is_empty() && mode <= 0o7777 => Some(mode),
        _ => cx.invalid(
            f,
            format_args!(
                "`{text}` is not a file mode: write it in octal as a string, like \"0644\""
            ),
        ),
    }
}

/// Overwrites `slot` when the value was good.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// `run = […]`, `oneshot = […]` or `interface = "…"`; a bad value still gives the kind.
fn read_kind(cx: &mut Ctx, f: Field) -> Kind {
    match f.key {
        "run" => Kind::Process {
            argv: cx.argv(f).unwrap_or_default(),
        },
        "oneshot" => Kind::Oneshot {
            argv: cx.argv(f).unwrap_or_default(),
            stop: None,
        },
        "device" => Kind::Device {
            matcher: device(cx, f).unwrap_or_default(),
        },
        _ => Kind::Interface {
            ifname: ifname(cx, f).unwrap_or_default(),
            ready_when: LinkReady::Carrier,
        },
    }
}

/// `device = { subsystem, name, devtype, driver, attrs = { K = "v" } }`: at least one key.
fn device(cx: &mut Ctx, f: Field) -> Option<DeviceMatch> {
    let table = cx.table(
        f,
        "a table like { subsystem = \"tty\", name = \"ttyUSB*\", attrs = { idVendor = \"12d1\" } }",
    )?;
    let place = sub_place(f.place, "device");
    const KNOWN: [&str; 5] = ["subsystem", "name", "devtype", "driver", "attrs"];
    let mut m = DeviceMatch::default();
    let mut ok = true;
    for (k, value) in entries(table) {
        let f = Field::new(k.get_ref(), &place, value);
        let slot = match f.key {
            "subsystem" => &mut m.subsystem,
            "name" => &mut m.name,
            "devtype" => &mut m.devtype,
            "driver" => &mut m.driver,
            "attrs" => {
                match cx.env(f) {
                    Some(attrs) => m.attrs = attrs,
                    None => ok = false,
                }
                continue;
            }
            _ => {
                cx.unknown_key(k, &place, &KNOWN);
                ok = false;
                continue;
            }
        };
        match cx.string(f) {
            // A sysfs name: no `/`, and not empty (it could match nothing).
            Some(v) if v.is_empty() || v.contains('/') || v.len() > 255 => {
                ok = false;
                cx.invalid::<()>(
                    f,
                    format_args!(
                        "`{v}` cannot be a device's {}: 1 to 255 characters, no `/`",
                        f.key
                    ),
                );
            }
            Some(v) => *slot = Some(v),
            None => ok = false,
        }
    }
    if ok && m.is_empty() {
        return cx.invalid(
            f,
            "an empty `device` matches nothing; give at least one of subsystem, name, devtype, driver, attrs",
        );
    }
    ok.then_some(m)
}

/// A Linux link name: 1 to 15 bytes, no `/`, `:` or white space.
fn ifname(cx: &mut Ctx, f: Field) -> Option<String> {
    let name = cx.string(f)?;
    let bad = name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if name.is_empty() || name.len() > 15 || bad {
        cx.invalid(
            f,
            format_args!(
                "`{name}` is not a link name: Linux allows 1 to 15 characters without `/`, `:` or spaces"
            ),
        )
    } else {
        Some(name)
    }
}

/// A service name in `needs`/`after`, with its place (checked against the services later).
fn reference(cx: &mut Ctx, f: Field) -> Option<(String, usize)> {
    Some((cx.string(f)?, f.at()))
}

/// One `at` time: `"03:00"` or `"Sun 04:30"`.
fn at_time(cx: &mut Ctx, f: Field) -> Option<AtTime> {
    let text = cx.string(f)?;
    match AtTime::parse(&text) {
        Some(at) => Some(at),
        None => cx.invalid(
            f,
            format_args!(
                "`{text}` is not a time of day: write \"HH:MM\" (24-hour, local time) or \"Day HH:MM\" with Day one of Mon Tue Wed Thu Fri Sat Sun"
            ),
        ),
    }
}

/// `retry-after`: a duration or `"never"`.
fn retry_after(cx: &mut Ctx, f: Field) -> Option<Option<core::time::Duration>> {
    match f.value.get_ref().as_str() {
        Some("never") => Some(None),
        Some(other) if other.eq_ignore_ascii_case("never") => cx.invalid(
            f,
            format_args!(
                "`{other}` is not a duration; write \"never\" (lower case) or one like \"1h\""
            ),
        ),
        _ => cx.duration(f).map(Some),
    }
}

/// `user` or `group`: a name, or a numeric id written as a string or as a number (`group = 0`).
fn account(cx: &mut Ctx, f: Field) -> Option<String> {
    match f.value.get_ref() {
        DeValue::Integer(_) => cx.integer32(f, 0..=u32::MAX).map(|id| id.to_string()),
        _ => cx.string(f),
    }
}

/// `ready = "spawned" | "sd-notify" | { notify-fd = N } | { tcp | unix | file | run = … }`.
fn readiness(cx: &mut Ctx, f: Field) -> Option<Readiness> {
    match f.value.get_ref() {
        DeValue::String(_) => cx.choice(
            f,
            &[
                ("spawned", Readiness::Spawned),
                ("sd-notify", Readiness::SdNotify),
            ],
        ),
        DeValue::Table(_) => {
            cx.single(
                f,
                &["notify-fd", "tcp", "unix", "file", "run"],
                |cx, f| match f.key {
                    "notify-fd" => cx.integer32(f, 3..=65535).map(Readiness::NotifyFd),
                    _ => cx.check(f).map(Readiness::Poll),
                },
            )
        }
        _ => cx.wrong_type(
            f,
            "\"spawned\", \"sd-notify\" or a table like { tcp = \"127.0.0.1:53\" }",
        ),
    }
}

/// `probe = { run | tcp | unix | file = …, every, timeout, failures, reports }`.
fn probe(cx: &mut Ctx, f: Field) -> Option<Probe> {
    let table = cx.table(
        f,
        "a table like { run = [\"/etc/medic/check\"], every = \"10s\" }",
    )?;
    let place = sub_place(f.place, "probe");
    let check = cx.one_of(table, f.at(), &place, &CHECK_KEYS);
    let check = check.and_then(|(k, value)| cx.check(Field::new(k.get_ref(), &place, value)));
    let mut probe = Probe {
        check: Check::File(String::new()),
        every: defaults::PROBE_EVERY,
        timeout: defaults::PROBE_TIMEOUT,
        failures: defaults::PROBE_FAILURES,
        reports: Reports::Exit,
    };
    const KNOWN: [&str; 8] = [
        "run", "tcp", "unix", "file", "every", "timeout", "failures", "reports",
    ];
    for (k, value) in entries(table) {
        let f = Field::new(k.get_ref(), &place, value);
        match f.key {
            "run" | "tcp" | "unix" | "file" => {} // the check, read above
            "every" => set(&mut probe.every, cx.period_at_least(f, MIN_POLL_PERIOD)),
            "timeout" => set(&mut probe.timeout, cx.period(f)),
            "failures" => set(&mut probe.failures, cx.integer32(f, 1..=1_000_000)),
            "reports" => set(
                &mut probe.reports,
                cx.choice(
                    f,
                    &[("exit", Reports::Exit), ("condition", Reports::Condition)],
                ),
            ),
            _ => cx.unknown_key(k, &place, &KNOWN),
        }
    }
    probe.check = check?;
    Some(probe)
}

/// `on = { CONDITION = { healthy, heal, settle } }`, checked against the service's kind.
/// `kind_known` is false when the table gave no kind (already an error).
fn conditions(
    cx: &mut Ctx,
    s: &ServiceConfig,
    kind_known: bool,
    f: Field,
) -> BTreeMap<Condition, VerdictOverride> {
    let mut on = BTreeMap::new();
    let Some(table) = cx.table(f, "a table of conditions like [service.x.on.exited]") else {
        return on;
    };
    let on_place = sub_place(f.place, "on");
    for (k, value) in entries(table) {
        let condition = Condition::from_name(k.get_ref());
        if kind_known {
            if let Some((why, hint)) = misfit(&condition, s) {
                let message = format!("`{}` in {on_place}: {why}", k.get_ref());
                match hint {
                    Some(hint) => cx.error_with_hint(k.span().start, message, hint),
                    None => cx.error(k.span().start, message),
                }
            }
        }
        let place = sub_place(&on_place, k.get_ref());
        let f = Field::new(k.get_ref(), &on_place, value);
        if let Some(table) = cx.table(
            f,
            "a table like { healthy = false, heal = \"restart\", settle = \"5s\" }",
        ) {
            on.insert(
                condition.clone(),
                verdict(cx, s, kind_known, &condition, table, &place),
            );
        }
    }
    on
}

/// Why `condition` cannot happen to service `s`, if it cannot, and the suggestion to end that
/// with.
fn misfit(condition: &Condition, s: &ServiceConfig) -> Option<(String, Option<Hint>)> {
    let fitting = || -> Vec<&'static str> {
        BUILT_IN
            .iter()
            .filter(|c| c.applies_to(&s.kind))
            .map(|c| c.name())
            .collect()
    };
    let hint = || {
        Some(Hint::Among {
            word: condition.name().to_string(),
            candidates: fitting(),
            or_list: false,
        })
    };
    match condition {
        Condition::Custom(name) if !matches!(s.kind, Kind::Process { .. }) => Some((
            format!(
                "{} has no condition `{name}` (custom conditions come from probes, which only \
                 `run` services have)",
                a_kind(&s.kind),
            ),
            hint(),
        )),
        Condition::Custom(name) => {
            let reports = s.probe.as_ref().map(|p| p.reports);
            (reports != Some(Reports::Condition)).then(|| {
                let why = format!(
                    "`{name}` is not a built-in condition, and [service.{}] has no probe with \
                     reports = \"condition\" to name custom ones",
                    key_path(&s.name),
                );
                (why, hint())
            })
        }
        c if !c.applies_to(&s.kind) => Some((
            format!(
                "{} is never `{c}`; its conditions are {}",
                a_kind(&s.kind),
                list(&fitting())
            ),
            None,
        )),
        _ => None,
    }
}

/// One `[service.X.on.CONDITION]` table.
fn verdict(
    cx: &mut Ctx,
    s: &ServiceConfig,
    kind_known: bool,
    condition: &Condition,
    table: &DeTable,
    place: &str,
) -> VerdictOverride {
    let mut v = VerdictOverride::default();
    for (k, value) in entries(table) {
        let f = Field::new(k.get_ref(), place, value);
        match f.key {
            "healthy" => v.healthy = cx.boolean(f),
            "settle" => v.settle = cx.duration(f),
            "heal" if condition.heal_forbidden() => {
                let why = match condition {
                    Condition::Blocked => "a blocked service is never healed: the cure is upstream",
                    _ => {
                        "a given-up service waits for a new fact (an operator command, a changed \
                          config or file, a need recovering, or `retry-after`)"
                    }
                };
                cx.error(
                    k.span().start,
                    format!("`heal` in {place}: {why}; remove `heal`"),
                );
            }
            "heal" => {
                let rungs = cx.heals(f).unwrap_or_default();
                for (heal, value) in &rungs {
                    if let Some(why) = heal_misfit(heal, &s.kind).filter(|_| kind_known) {
                        cx.invalid::<()>(f.with(value), why);
                    }
                }
                v.heal = Some(rungs.into_iter().map(|(h, _)| h).collect());
            }
            _ => cx.unknown_key(k, place, &["healthy", "heal", "settle"]),
        }
    }
    v
}

/// Why `heal` cannot heal a service of `kind`, if it cannot.
fn heal_misfit(heal: &Heal, kind: &Kind) -> Option<String> {
    let interface = matches!(kind, Kind::Interface { .. });
    let device = matches!(kind, Kind::Device { .. });
    match heal {
        Heal::Restart | Heal::Reload | Heal::Kill | Heal::Signal(_) if device => Some(format!(
            "`{}` cannot heal a device, medic runs no process for it; use {{ run = [...] }}",
            heal.describe()
        )),
        Heal::LinkUp if !interface => Some(format!(
            "`link-up` heals interfaces only, and this is {}",
            a_kind(kind)
        )),
        Heal::Restart | Heal::Reload | Heal::Kill | Heal::Signal(_) if interface => Some(format!(
            "`{}` cannot heal an interface, medic runs no process for it; use \"link-up\" or \
             {{ run = [...] }}",
            heal.describe()
        )),
        _ => None,
    }
}
