//! Random service graphs for the simulator, rendered as TOML so they reach the kernel the way
//! an operator's config does (through [`medic_kernel::config::parse`]).

use core::fmt::Write as _;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use medic_kernel::config::{
    defaults, Action, AtTime, Check, Heal, Kind, LinkReady, MemoryLimit, OnChange, Probe,
    Readiness, Reports, ServiceConfig, Signal, Template, TemplateSource, VerdictOverride,
};
use medic_kernel::Condition;

use crate::rng::Rng;

/// A graph of services: what the simulator renders to a config text.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// The services, in file order; `needs` and `after` only name earlier services, so the
    /// graph is a DAG.
    pub services: Vec<ServiceConfig>,
    /// The number the next added service gets in its name.
    pub next_index: u32,
}

/// Custom conditions a `reports = "condition"` probe may print, besides `ready`.
pub const CUSTOM_CONDITIONS: [&str; 2] = ["connecting", "tunnel-down"];

/// Watched paths the simulated world may change.
pub const PATHS: [&str; 4] = [
    "/etc/sim/a.conf",
    "/etc/sim/b.conf",
    "/etc/sim/c.conf",
    "/etc/sim/d.conf",
];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pick_ms(rng: &mut Rng, menu: &[u64]) -> Duration {
    ms(*rng.pick(menu))
}

/// The link name of interface service number `i`.
pub fn ifname(i: u32) -> String {
    format!("eth{i}")
}

/// A random graph of `1..=max_services` services.
pub fn random_graph(rng: &mut Rng, max_services: u32) -> Graph {
    let n = rng.range(1, u64::from(max_services.max(1))) as u32;
    let mut g = Graph {
        services: Vec::new(),
        next_index: 0,
    };
    for _ in 0..n {
        let s = random_service(rng, &g);
        g.services.push(s);
    }
    g
}

fn random_service(rng: &mut Rng, g: &Graph) -> ServiceConfig {
    let i = g.next_index_for_new();
    let roll = rng.below(100);
    let (name, kind) = if roll < 15 {
        (
            format!("link{i}"),
            Kind::Interface {
                ifname: ifname(i),
                ready_when: *rng.pick(&[
                    LinkReady::Present,
                    LinkReady::Up,
                    LinkReady::Carrier,
                    LinkReady::Carrier,
                    LinkReady::Ipv4,
                    LinkReady::Ipv6Global,
                ]),
            },
        )
    } else if roll < 35 {
        let stop = rng
            .ratio(1, 2)
            .then(|| vec![format!("/bin/shot{i}"), "down".into()]);
        (
            format!("shot{i}"),
            Kind::Oneshot {
                argv: vec![format!("/bin/shot{i}"), "up".into()],
                stop,
            },
        )
    } else {
        (
            format!("proc{i}"),
            Kind::Process {
                argv: vec![format!("/bin/proc{i}")],
            },
        )
    };
    let mut s = ServiceConfig::new(name, kind);
    // Needs: up to 3 earlier services, mostly near ones (deep chains and wide fans both occur).
    let earlier: Vec<&ServiceConfig> = g.services.iter().collect();
    if !earlier.is_empty() {
        let want = *rng.pick(&[0, 0, 1, 1, 1, 2, 3]);
        for _ in 0..want {
            let near = earlier.len().min(6) as u64;
            let idx = if rng.ratio(3, 4) {
                earlier.len() - 1 - rng.below(near) as usize
            } else {
                rng.below(earlier.len() as u64) as usize
            };
            let n = earlier[idx].name.clone();
            if !s.needs.contains(&n) {
                s.needs.push(n);
            }
        }
        if rng.ratio(1, 6) {
            let a = rng.pick(&earlier).name.clone();
            if !s.needs.contains(&a) {
                s.after.push(a);
            }
        }
    }
    s.stop_when_needs_fail = !s.needs.is_empty() && rng.ratio(1, 4);
    s.give_up_after = rng.range(1, 12) as u32;
    s.forgive_after = pick_ms(rng, &[500, 3_000, 20_000, 60_000, 600_000]);
    s.max_backoff = pick_ms(rng, &[500, 2_000, 10_000, 60_000, 300_000]);
    s.retry_after = match rng.below(4) {
        0 => None,
        _ => Some(pick_ms(rng, &[5_000, 30_000, 120_000, 600_000])),
    };
    let interface = matches!(s.kind, Kind::Interface { .. });
    let process = matches!(s.kind, Kind::Process { .. });
    if !interface {
        s.start_timeout = pick_ms(rng, &[300, 1_000, 5_000, 30_000]);
        s.stop_timeout = pick_ms(rng, &[50, 500, 2_000, 5_000]);
        s.stop_signal = *rng.pick(&[Signal::Term, Signal::Term, Signal::Int, Signal::Quit]);
        if rng.ratio(1, 4) {
            let path = rng.pick(&PATHS).to_string();
            if rng.ratio(1, 2) {
                s.reload_on.push(path);
            } else {
                s.restart_on.push(path);
            }
            s.debounce = pick_ms(rng, &[0, 50, 100, 1_000]);
        }
        s.reload = match rng.below(3) {
            0 => None,
            1 => Some(Action::Signal(Signal::Hup)),
            _ => Some(Action::Run(vec![format!("/bin/reload-{}", s.name)])),
        };
    }
    if process {
        s.ready = match rng.below(6) {
            0 | 1 => Readiness::Spawned,
            2 => Readiness::NotifyFd(3),
            3 => Readiness::SdNotify,
            4 => Readiness::Poll(Check::File(format!("/run/{}.ready", s.name))),
            _ => Readiness::Poll(Check::Tcp(format!("127.0.0.1:{}", 1000 + i))),
        };
        if rng.ratio(1, 2) {
            s.probe = Some(Probe {
                check: Check::Run(vec![format!("/bin/probe-{}", s.name)]),
                every: pick_ms(rng, &[1_000, 2_000, 10_000, 30_000]),
                timeout: pick_ms(rng, &[200, 2_000]),
                failures: rng.range(1, 4) as u32,
                reports: if rng.ratio(1, 3) {
                    Reports::Condition
                } else {
                    Reports::Exit
                },
            });
        }
        if rng.ratio(1, 3) {
            s.memory_max = Some(if rng.ratio(1, 2) {
                MemoryLimit::Bytes(48 << 20)
            } else {
                MemoryLimit::PerMille(250)
            });
            s.memory_every = pick_ms(rng, &[1_000, 5_000]);
        }
    }
    random_overrides(rng, &mut s);
    // Timed jobs: some oneshots run again, some processes are restarted on a schedule.
    match s.kind {
        Kind::Oneshot { .. } if rng.ratio(1, 4) => {
            s.every = Some(pick_ms(rng, &[60_000, 120_000, 600_000]));
        }
        Kind::Process { .. } if rng.ratio(1, 6) => {
            s.restart_every = Some(pick_ms(rng, &[120_000, 600_000]));
        }
        _ => {}
    }
    if !matches!(s.kind, Kind::Interface { .. }) && rng.ratio(1, 6) {
        for _ in 0..rng.range(1, 3) {
            let at = AtTime {
                weekday: rng.ratio(1, 3).then(|| rng.below(7) as u8),
                minute: rng.below(24 * 60) as u16,
            };
            s.at.push(at);
        }
        if rng.ratio(1, 2) {
            s.jitter = pick_ms(rng, &[60_000, 600_000]);
        }
        s.catch_up = rng.ratio(1, 2);
    }
    random_templates(rng, g, &mut s);
    s
}

/// Outputs and templates (DESIGN §9): now and then a service renders files from what earlier
/// processes publish, reading each through `needs` or `uses`. The world's publishers are the
/// processes some template reads ([`Graph::publishers`]); what a template renders is the
/// world's business (`world.rs`, `render_text`): a template whose text begins `{% if P %}`
/// renders an absent publisher as nothing, the others fail on it.
fn random_templates(rng: &mut Rng, g: &Graph, s: &mut ServiceConfig) {
    if matches!(s.kind, Kind::Interface { .. } | Kind::Device { .. }) || !rng.ratio(1, 4) {
        return;
    }
    let publishers: Vec<String> = g
        .services
        .iter()
        .filter(|p| matches!(p.kind, Kind::Process { .. }))
        .map(|p| p.name.clone())
        .collect();
    if publishers.is_empty() {
        return;
    }
    let debounce = pick_ms(rng, &[0, 100, 1_000, 3_000]);
    for k in 0..rng.range(1, 2) {
        let p = rng.pick(&publishers).clone();
        if !s.needs.contains(&p) && !s.uses.contains(&p) {
            if rng.ratio(1, 2) && !s.after.contains(&p) {
                s.needs.push(p.clone());
            } else {
                s.uses.push(p.clone());
            }
        }
        let text = if s.needs.contains(&p) {
            format!("addr {{{{ {p}.addr }}}}\n")
        } else {
            format!("{{% if {p} %}}addr {{{{ {p}.addr }}}}{{% endif %}}\n")
        };
        s.templates.push(Template {
            source: TemplateSource::Text(text),
            target: format!("/run/sim/{}.{k}.conf", s.name),
            mode: defaults::TEMPLATE_MODE,
            owner: None,
            group: None,
            check: None,
            on_change: *rng.pick(&[
                OnChange::Reload,
                OnChange::Reload,
                OnChange::Restart,
                OnChange::None,
            ]),
            debounce,
            secrets: Vec::new(),
        });
    }
}

fn random_overrides(rng: &mut Rng, s: &mut ServiceConfig) {
    let settle = |rng: &mut Rng| {
        rng.ratio(1, 2)
            .then(|| pick_ms(rng, &[100, 1_000, 3_000, 30_000]))
    };
    match &s.kind {
        Kind::Process { .. } => {
            if rng.ratio(1, 4) {
                let ladder = match rng.below(4) {
                    0 => vec![Heal::Restart, Heal::Kill],
                    1 => vec![Heal::Signal(Signal::Usr1), Heal::Restart],
                    2 => vec![Heal::Reload, Heal::Restart],
                    _ => vec![Heal::Run(vec![format!("/bin/fix-{}", s.name)]), Heal::Kill],
                };
                // A process that exited is only brought back by a rung that starts it, and
                // with a low give-up-after only the first rungs are ever tried.
                let starts = matches!(ladder[0], Heal::Restart | Heal::Reload | Heal::Kill);
                let conditions: &[Condition] = if starts {
                    &[
                        Condition::Exited,
                        Condition::StartTimeout,
                        Condition::Unresponsive,
                        Condition::MemoryHigh,
                    ]
                } else {
                    &[
                        Condition::StartTimeout,
                        Condition::Unresponsive,
                        Condition::MemoryHigh,
                    ]
                };
                let condition = rng.pick(conditions).clone();
                let o = VerdictOverride {
                    healthy: None,
                    heal: Some(ladder),
                    settle: settle(rng),
                };
                s.on.insert(condition, o);
            }
            if s.probe
                .as_ref()
                .is_some_and(|p| p.reports == Reports::Condition)
            {
                s.on.insert(
                    Condition::Custom("tunnel-down".into()),
                    VerdictOverride {
                        healthy: None,
                        heal: Some(vec![Heal::Restart]),
                        settle: settle(rng),
                    },
                );
                if rng.ratio(1, 2) {
                    s.on.insert(
                        Condition::Custom("connecting".into()),
                        VerdictOverride {
                            healthy: Some(false),
                            heal: None,
                            settle: None,
                        },
                    );
                }
            }
        }
        Kind::Oneshot { .. } => {
            if rng.ratio(1, 4) {
                s.on.insert(
                    Condition::Failed,
                    VerdictOverride {
                        healthy: None,
                        // Every rung runs the oneshot again: a `run` rung would leave it
                        // failed for ever once reached (see the simulator's report).
                        heal: Some(vec![Heal::Restart, Heal::Reload]),
                        settle: settle(rng),
                    },
                );
            }
        }
        Kind::Interface { .. } => {
            if rng.ratio(1, 3) {
                s.on.insert(
                    Condition::Absent,
                    VerdictOverride {
                        healthy: None,
                        heal: Some(vec![Heal::Run(vec!["modprobe".into(), s.name.clone()])]),
                        settle: settle(rng),
                    },
                );
            }
            if rng.ratio(1, 4) {
                s.on.insert(
                    Condition::AdminDown,
                    VerdictOverride {
                        healthy: None,
                        heal: None,
                        settle: settle(rng),
                    },
                );
            }
        }
        Kind::Device { .. } => {
            if rng.ratio(1, 3) {
                s.on.insert(
                    Condition::Absent,
                    VerdictOverride {
                        healthy: None,
                        heal: Some(vec![Heal::Run(vec![
                            "usb_modeswitch".into(),
                            s.name.clone(),
                        ])]),
                        settle: settle(rng),
                    },
                );
            }
        }
    }
}

impl Graph {
    fn next_index_for_new(&self) -> u32 {
        self.next_index.max(self.services.len() as u32)
    }

    /// A graph from an explicit list of services (tests).
    pub fn from_services(services: Vec<ServiceConfig>) -> Graph {
        let next_index = services.len() as u32;
        Graph {
            services,
            next_index,
        }
    }

    /// A changed copy, as an operator's edit of the config would be: some services' settings
    /// changed, perhaps a service added, perhaps one that nothing needs removed.
    pub fn mutate(&self, rng: &mut Rng) -> Graph {
        let mut g = self.clone();
        g.next_index = g.next_index_for_new();
        let changes = rng.range(1, 3);
        for _ in 0..changes {
            match rng.below(5) {
                0 => {
                    let s = random_service(rng, &g);
                    g.next_index += 1;
                    g.services.push(s);
                }
                1 if g.services.len() > 1 => {
                    let idx = rng.below(g.services.len() as u64) as usize;
                    let name = g.services[idx].name.clone();
                    let needed = g.services.iter().any(|s| {
                        s.needs.contains(&name) || s.after.contains(&name) || s.uses.contains(&name)
                    });
                    if !needed {
                        g.services.remove(idx);
                    }
                }
                _ => {
                    let idx = rng.below(g.services.len() as u64) as usize;
                    let s = &mut g.services[idx];
                    match rng.below(4) {
                        0 => s.give_up_after = rng.range(1, 12) as u32,
                        1 => s.max_backoff = pick_ms(rng, &[500, 2_000, 10_000]),
                        2 => s.forgive_after = pick_ms(rng, &[500, 3_000, 20_000]),
                        _ => s.retry_after = Some(pick_ms(rng, &[5_000, 30_000])),
                    }
                }
            }
        }
        g
    }

    /// The config text of this graph.
    pub fn render(&self) -> String {
        let mut t = String::new();
        for s in &self.services {
            render_service(&mut t, s);
        }
        t
    }

    /// The processes whose outputs some template reads (through `needs` or `uses`): the
    /// world's publishers.
    pub fn publishers(&self) -> BTreeSet<String> {
        let processes: BTreeSet<&str> = self
            .services
            .iter()
            .filter(|s| matches!(s.kind, Kind::Process { .. }))
            .map(|s| s.name.as_str())
            .collect();
        self.services
            .iter()
            .filter(|s| !s.templates.is_empty())
            .flat_map(|s| s.needs.iter().chain(&s.uses))
            .filter(|n| processes.contains(n.as_str()))
            .cloned()
            .collect()
    }

    /// The longest chain of `needs`/`after` edges, counted in services.
    pub fn depth(&self) -> u32 {
        let mut depth: BTreeMap<&str, u32> = BTreeMap::new();
        for s in &self.services {
            let d = s
                .needs
                .iter()
                .chain(s.after.iter())
                .filter_map(|n| depth.get(n.as_str()))
                .max()
                .copied()
                .unwrap_or(0)
                + 1;
            depth.insert(&s.name, d);
        }
        depth.values().max().copied().unwrap_or(0)
    }
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", items.join(", "))
}

fn dur(d: Duration) -> String {
    q(&format!("{}ms", d.as_millis()))
}

fn check(c: &Check) -> String {
    match c {
        Check::Run(argv) => format!("run = {}", list(argv)),
        Check::Tcp(a) => format!("tcp = {}", q(a)),
        Check::Unix(p) => format!("unix = {}", q(p)),
        Check::File(p) => format!("file = {}", q(p)),
    }
}

fn heal(h: &Heal) -> String {
    match h {
        Heal::Restart => q("restart"),
        Heal::Reload => q("reload"),
        Heal::Kill => q("kill"),
        Heal::LinkUp => q("link-up"),
        Heal::Signal(s) => format!("{{ signal = {} }}", q(s.name())),
        Heal::Run(argv) => format!("{{ run = {} }}", list(argv)),
    }
}

fn render_service(t: &mut String, s: &ServiceConfig) {
    let d = ServiceConfig::new(&s.name, s.kind.clone());
    let _ = writeln!(t, "[service.{}]", s.name);
    match &s.kind {
        Kind::Process { argv } => {
            let _ = writeln!(t, "run = {}", list(argv));
        }
        Kind::Oneshot { argv, stop } => {
            let _ = writeln!(t, "oneshot = {}", list(argv));
            if let Some(stop) = stop {
                let _ = writeln!(t, "stop = {}", list(stop));
            }
        }
        Kind::Interface { ifname, ready_when } => {
            let _ = writeln!(
                t,
                "interface = {}\nready-when = {}",
                q(ifname),
                q(ready_when.name())
            );
        }
        Kind::Device { matcher } => {
            let mut keys = Vec::new();
            for (key, value) in [
                ("subsystem", &matcher.subsystem),
                ("name", &matcher.name),
                ("devtype", &matcher.devtype),
                ("driver", &matcher.driver),
            ] {
                if let Some(v) = value {
                    keys.push(format!("{key} = {}", q(v)));
                }
            }
            if !matcher.attrs.is_empty() {
                let attrs: Vec<String> = matcher
                    .attrs
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", q(v)))
                    .collect();
                keys.push(format!("attrs = {{ {} }}", attrs.join(", ")));
            }
            let _ = writeln!(t, "device = {{ {} }}", keys.join(", "));
        }
    }
    if !s.needs.is_empty() {
        let _ = writeln!(t, "needs = {}", list(&s.needs));
    }
    if !s.after.is_empty() {
        let _ = writeln!(t, "after = {}", list(&s.after));
    }
    if !s.uses.is_empty() {
        let _ = writeln!(t, "uses = {}", list(&s.uses));
    }
    if s.stop_when_needs_fail {
        let _ = writeln!(t, "stop-when-needs-fail = true");
    }
    match &s.ready {
        Readiness::Spawned => {}
        Readiness::SdNotify => {
            let _ = writeln!(t, "ready = \"sd-notify\"");
        }
        Readiness::NotifyFd(fd) => {
            let _ = writeln!(t, "ready = {{ notify-fd = {fd} }}");
        }
        Readiness::Poll(c) => {
            let _ = writeln!(t, "ready = {{ {} }}", check(c));
        }
    }
    if let Some(p) = &s.probe {
        let reports = match p.reports {
            Reports::Exit => "exit",
            Reports::Condition => "condition",
        };
        let _ = writeln!(
            t,
            "probe = {{ {}, every = {}, timeout = {}, failures = {}, reports = {} }}",
            check(&p.check),
            dur(p.every),
            dur(p.timeout),
            p.failures,
            q(reports)
        );
    }
    if let Some(m) = s.memory_max {
        let text = match m {
            MemoryLimit::Bytes(b) => format!("{}KiB", b / 1024),
            MemoryLimit::PerMille(pm) => format!("{}.{}%", pm / 10, pm % 10),
        };
        let _ = writeln!(
            t,
            "memory-max = {}\nmemory-every = {}",
            q(&text),
            dur(s.memory_every)
        );
    }
    if !s.reload_on.is_empty() {
        let _ = writeln!(t, "reload-on = {}", list(&s.reload_on));
    }
    if !s.restart_on.is_empty() {
        let _ = writeln!(t, "restart-on = {}", list(&s.restart_on));
    }
    if s.debounce != d.debounce {
        let _ = writeln!(t, "debounce = {}", dur(s.debounce));
    }
    match &s.reload {
        None => {}
        Some(Action::Signal(sig)) => {
            let _ = writeln!(t, "reload = {{ signal = {} }}", q(sig.name()));
        }
        Some(Action::Run(argv)) => {
            let _ = writeln!(t, "reload = {{ run = {} }}", list(argv));
        }
    }
    if s.start_timeout != d.start_timeout {
        let _ = writeln!(t, "start-timeout = {}", dur(s.start_timeout));
    }
    if s.stop_signal != d.stop_signal {
        let _ = writeln!(t, "stop-signal = {}", q(s.stop_signal.name()));
    }
    if s.stop_timeout != d.stop_timeout {
        let _ = writeln!(t, "stop-timeout = {}", dur(s.stop_timeout));
    }
    let _ = writeln!(t, "give-up-after = {}", s.give_up_after);
    let _ = writeln!(t, "forgive-after = {}", dur(s.forgive_after));
    let _ = writeln!(t, "max-backoff = {}", dur(s.max_backoff));
    if let Some(every) = s.every {
        let _ = writeln!(t, "every = {}", dur(every));
    }
    if let Some(every) = s.restart_every {
        let _ = writeln!(t, "restart-every = {}", dur(every));
    }
    if !s.at.is_empty() {
        let times: Vec<String> = s.at.iter().map(|a| q(&a.to_string())).collect();
        let _ = writeln!(t, "at = [{}]", times.join(", "));
    }
    if !s.jitter.is_zero() {
        let _ = writeln!(t, "jitter = {}", dur(s.jitter));
    }
    if s.catch_up {
        let _ = writeln!(t, "catch-up = true");
    }
    match s.retry_after {
        None => {
            let _ = writeln!(t, "retry-after = \"never\"");
        }
        Some(r) => {
            let _ = writeln!(t, "retry-after = {}", dur(r));
        }
    }
    for (condition, o) in &s.on {
        let _ = writeln!(t, "[service.{}.on.{}]", s.name, condition.name());
        if let Some(h) = o.healthy {
            let _ = writeln!(t, "healthy = {h}");
        }
        if let Some(ladder) = &o.heal {
            let rungs: Vec<String> = ladder.iter().map(heal).collect();
            let _ = writeln!(t, "heal = [{}]", rungs.join(", "));
        }
        if let Some(settle) = o.settle {
            let _ = writeln!(t, "settle = {}", dur(settle));
        }
    }
    for tpl in &s.templates {
        let source = match &tpl.source {
            TemplateSource::Text(text) => format!("text = {}", q(text)),
            TemplateSource::File(path) => format!("source = {}", q(path)),
            // A secret's copy: the generated graphs declare no secrets (sim/src/secrets.rs
            // writes its own configs), so there is none to write back.
            TemplateSource::Secret(_) => continue,
        };
        let _ = writeln!(t, "[[service.{}.template]]", s.name);
        let _ = writeln!(t, "{source}");
        let _ = writeln!(t, "target = {}", q(&tpl.target));
        let on_change = OnChange::ALL
            .iter()
            .find(|(_, o)| *o == tpl.on_change)
            .map_or("reload", |(name, _)| name);
        let _ = writeln!(t, "on-change = {}", q(on_change));
        let _ = writeln!(t, "debounce = {}", dur(tpl.debounce));
    }
    t.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every random graph renders to a text the kernel's parser reads back as the same graph:
    /// the simulator tests the configs it means to test.
    #[test]
    fn random_graphs_round_trip_through_the_parser() {
        for seed in 0..300 {
            let mut rng = Rng::new(seed);
            let mut g = random_graph(&mut rng, 40);
            for _ in 0..3 {
                let text = g.render();
                let parsed = medic_kernel::config::parse(&text, "sim.toml")
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
                let parsed: Vec<ServiceConfig> =
                    parsed.services.iter().map(|s| (**s).clone()).collect();
                assert_eq!(parsed, g.services, "seed {seed}:\n{text}");
                g = g.mutate(&mut rng);
            }
        }
    }
}
