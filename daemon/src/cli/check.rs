//! `medic check`: validate a config and print its services in the order they start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use medic_kernel::config::{
    Action, Check, Config, Heal, Kind, MemoryLimit, Readiness, TemplateSource,
};

use super::format::{table, Cell};
use super::Failure;
use crate::daemon;

/// Reads and validates the config at `path`; returns its text and its model. Every problem is
/// printed on stderr as a `file:line:col: message` line; the failure counts them.
pub fn load(path: &Path) -> Result<(String, Config), Failure> {
    load_with(path, |errors| eprintln!("{errors}"))
}

/// [`load`], handing the text of every problem to `report` instead of printing it (the daemon
/// writes it through its log, which never blocks or panics on a broken stderr).
pub fn load_with(path: &Path, report: impl FnOnce(&str)) -> Result<(String, Config), Failure> {
    // Absolute, so that relative paths in it are taken from its directory, not from wherever
    // the daemon happens to run.
    let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::usage(format!(
            "cannot read the config {name}: {e}; name another with -c FILE or MEDIC_CONFIG"
        ))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let col = at
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        Failure::usage(format!(
            "{name}:{line}:{col}: not UTF-8: the byte at offset {at} (0x{:02x}) starts no \
             UTF-8 character; a config is UTF-8 text",
            e.as_bytes()[at]
        ))
    })?;
    match medic_kernel::config::parse(&text, &name) {
        Ok(config) => Ok((text, config)),
        Err(errors) => {
            report(&errors.to_string());
            let n = errors.total;
            let problems = if n == 1 { "problem" } else { "problems" };
            Err(Failure::usage(format!("{name}: {n} {problems}")))
        }
    }
}

/// `medic check [-c FILE] [--dot]`.
pub fn run(config: Option<PathBuf>, dot: bool) -> Result<(), Failure> {
    let path = daemon::config_path(config);
    let (_, config) = load(&path)?;
    if dot {
        print!("{}", graphviz(&config));
        return Ok(());
    }
    for warning in warnings(&config, &base_dir(&path)) {
        eprintln!("{}: warning: {warning}", path.display());
    }
    let problems = template_problems(&config, &path);
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("{problem}");
        }
        return Err(Failure::usage(""));
    }
    let n = config.services.len();
    let services = if n == 1 { "service" } else { "services" };
    println!(
        "{}: valid, {n} {services}, in the order they start:",
        path.display()
    );
    print!("{}", graph(&config));
    Ok(())
}

/// The service graph in Graphviz's language: a node per service (name and kind), a solid edge
/// to each need, a dashed one to each service it starts after. Deterministic: config order.
pub fn graphviz(config: &Config) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = String::from("digraph medic {\n  rankdir=LR;\n  node [shape=box];\n");
    for s in &config.services {
        let kind = match &s.kind {
            Kind::Process { .. } => "process".to_string(),
            Kind::Oneshot { .. } => "oneshot".to_string(),
            Kind::Interface { ifname, .. } => format!("interface {ifname}"),
            Kind::Device { matcher } => format!("device {}", matcher.describe()),
        };
        // `\n` is a line break in a Graphviz label.
        let label = format!("{}\\n{kind}", s.name);
        let label = quote(&label).replace("\\\\n", "\\n");
        out.push_str(&format!("  {} [label={label}];\n", quote(&s.name)));
    }
    for s in &config.services {
        for need in &s.needs {
            out.push_str(&format!("  {} -> {};\n", quote(&s.name), quote(need)));
        }
        for after in s.after.iter().filter(|a| !s.needs.contains(a)) {
            let (from, to) = (quote(&s.name), quote(after));
            out.push_str(&format!(
                "  {from} -> {to} [style=dashed, label=\"after\"];\n"
            ));
        }
    }
    out.push_str("}\n");
    out
}

/// The directory relative paths in the config are taken from: the config file's.
/// Every template that does not parse, names a filter medic does not have, or reads a service
/// it neither needs nor uses: one line each, `FILE: [service.X] template N: line L: …` (FILE
/// is the template's `source`, or the config file for a `text`).
pub fn template_problems(config: &Config, path: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for service in &config.services {
        let readable: Vec<String> = service.needs.iter().chain(&service.uses).cloned().collect();
        for (i, t) in service.templates.iter().enumerate() {
            let (file, text) = match &t.source {
                TemplateSource::Text(text) => (path.display().to_string(), Ok(text.clone())),
                TemplateSource::File(source) => (source.clone(), read_template(source)),
                // A secret's copy is its bytes as they are: nothing to parse.
                TemplateSource::Secret(_) => continue,
            };
            let place = format!("[service.{}] template {}", service.name, i + 1);
            let checked = text.and_then(|text| medic_io::render::check_text(&text, &readable));
            if let Err(why) = checked {
                problems.push(format!("{file}: {place}: {why}"));
            }
        }
    }
    problems
}

fn read_template(source: &str) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(source).map_err(|e| format!("cannot read it: {e}"))?;
    let mut text = String::new();
    file.take(medic_io::render::MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(text)
}

pub fn base_dir(config: &Path) -> PathBuf {
    match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What may be wrong on the machine that runs the config, though the config is valid (it may
/// be checked on a build host): programs that are missing or not executable, a `cwd` that does
/// not exist, unknown users and groups, an argv element that looks like a whole command line,
/// no services, a memory limit of 0.
pub fn warnings(config: &Config, base: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if config.services.is_empty() {
        out.push("no services: the daemon would supervise nothing".to_string());
    }
    for s in &config.services {
        let mut commands: Vec<(&str, &Vec<String>)> = Vec::new();
        match &s.kind {
            Kind::Process { argv } => commands.push(("run", argv)),
            Kind::Oneshot { argv, stop } => {
                commands.push(("oneshot", argv));
                commands.extend(stop.iter().map(|a| ("stop", a)));
            }
            Kind::Interface { .. } | Kind::Device { .. } => {}
        }
        if let Readiness::Poll(Check::Run(argv)) = &s.ready {
            commands.push(("ready", argv));
        }
        if let Some(Check::Run(argv)) = s.probe.as_ref().map(|p| &p.check) {
            commands.push(("probe", argv));
        }
        if let Some(Action::Run(argv)) = &s.reload {
            commands.push(("reload", argv));
        }
        for o in s.on.values() {
            for heal in o.heal.iter().flatten() {
                if let Heal::Run(argv) = heal {
                    commands.push(("heal", argv));
                }
            }
        }
        for (key, argv) in commands {
            if let Some(problem) = program_problem(argv, base) {
                out.push(format!("service {}: `{key}`: {problem}", s.name));
            }
        }
        if let Some(cwd) = &s.cwd {
            let dir = base.join(cwd);
            if !dir.is_dir() {
                out.push(format!(
                    "service {}: `cwd` {} is not a directory here",
                    s.name,
                    dir.display()
                ));
            }
        }
        if let Some(user) = s.user.as_deref().filter(|u| u.parse::<u32>().is_err()) {
            if !known(user, false) {
                out.push(format!("service {}: no user `{user}` here", s.name));
            }
        }
        if let Some(group) = s.group.as_deref().filter(|g| g.parse::<u32>().is_err()) {
            if !known(group, true) {
                out.push(format!("service {}: no group `{group}` here", s.name));
            }
        }
        if matches!(
            s.memory_max,
            Some(MemoryLimit::Bytes(0) | MemoryLimit::PerMille(0))
        ) {
            out.push(format!(
                "service {}: `memory-max` is 0: every sample is over it, so the service is \
                 killed as soon as it is sampled",
                s.name
            ));
        }
    }
    out
}

/// Why `argv` cannot run here, if it cannot: its program is missing, not executable, or
/// `argv[0]` is a whole command line.
fn program_problem(argv: &[String], base: &Path) -> Option<String> {
    let program = argv.first()?;
    let path = match program.contains('/') {
        true => Some(base.join(program)),
        false => std::env::var_os("PATH").and_then(|dirs| {
            std::env::split_paths(&dirs)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        }),
    };
    let shell_like = program.contains(' ') && program.split(' ').count() > 1;
    match path {
        Some(p) if p.is_file() => {
            use std::os::unix::fs::PermissionsExt;
            let mode = p.metadata().map(|m| m.permissions().mode()).unwrap_or(0);
            (mode & 0o111 == 0).then(|| format!("{} is not executable", p.display()))
        }
        _ if shell_like => {
            let words: Vec<&str> = program.split(' ').filter(|w| !w.is_empty()).collect();
            Some(format!(
                "`{program}` is not a program: argv is never passed through a shell; write \
                 each word as its own element: {words:?}"
            ))
        }
        Some(p) => Some(format!("{} does not exist here", p.display())),
        None => Some(format!("`{program}` is not in $PATH here")),
    }
}

/// Whether the user (or group) `name` exists on this machine.
fn known(name: &str, group: bool) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: getpwnam/getgrnam read the NUL-terminated name; the result is only compared
    // with null (this is a single-threaded command).
    unsafe {
        match group {
            true => !libc::getgrnam(c.as_ptr()).is_null(),
            false => !libc::getpwnam(c.as_ptr()).is_null(),
        }
    }
}

/// The services in a start order (every `needs` and `after` before the services naming them,
/// otherwise config order): NAME KIND NEEDS AFTER WHAT.
pub fn graph(config: &Config) -> String {
    let rows: Vec<Vec<Cell>> = start_order(config)
        .into_iter()
        .map(|i| {
            let s = &config.services[i];
            let list = |names: &[String]| match names.is_empty() {
                true => "-".to_string(),
                false => names.join(","),
            };
            let mut needs = list(&s.needs);
            if s.stop_when_needs_fail && !s.needs.is_empty() {
                needs.push_str(" (stops with them)");
            }
            vec![
                Cell::plain(&s.name),
                Cell::plain(s.kind.name()),
                Cell::plain(needs),
                Cell::plain(list(&s.after)),
                Cell::plain(what(&s.kind)),
            ]
        })
        .collect();
    table(&["NAME", "KIND", "NEEDS", "AFTER", "WHAT"], &rows, false)
}

/// What a service runs or watches: its command line, its link and when that is ready, or the
/// device it matches.
fn what(kind: &Kind) -> String {
    match kind {
        Kind::Process { argv } | Kind::Oneshot { argv, .. } => argv.join(" "),
        Kind::Interface { ifname, ready_when } => {
            format!("link {ifname}, ready when {}", ready_when.name())
        }
        Kind::Device { matcher } => format!("device {}", matcher.describe()),
    }
}

/// Indices of the services, each after its `needs` and `after`, ties in config order (Kahn's
/// algorithm taking the first ready service each time). A validated config has no cycles; a
/// service caught in one anyway is listed last rather than lost.
pub fn start_order(config: &Config) -> Vec<usize> {
    let services = &config.services;
    let index = |name: &String| services.iter().position(|s| &s.name == name);
    let mut waiting_on: Vec<usize> = vec![0; services.len()];
    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); services.len()];
    for (i, s) in services.iter().enumerate() {
        let before: BTreeSet<usize> = s.needs.iter().chain(&s.after).filter_map(index).collect();
        waiting_on[i] = before.len();
        for b in before {
            successors[b].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..services.len())
        .filter(|&i| waiting_on[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(services.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &next in &successors[i] {
            waiting_on[next] -= 1;
            if waiting_on[next] == 0 {
                ready.insert(next);
            }
        }
    }
    let placed: BTreeSet<usize> = order.iter().copied().collect();
    order.extend((0..services.len()).filter(|i| !placed.contains(i)));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTER: &str = r#"
[service.dnsmasq]
run = ["/usr/sbin/dnsmasq", "-k"]
needs = ["firewall", "lan"]

[service.l2tp]
run = ["/usr/sbin/xl2tpd", "-D"]
needs = ["wan"]
stop-when-needs-fail = true

[service.firewall]
oneshot = ["/etc/firewall.sh", "up"]
after = ["wan"]

[service.wan]
interface = "eth0"

[service.lan]
interface = "br-lan"
ready-when = "up"
"#;

    #[test]
    fn services_are_listed_after_what_they_need() {
        let config = medic_kernel::config::parse(ROUTER, "router.toml").unwrap();
        let order: Vec<&str> = start_order(&config)
            .into_iter()
            .map(|i| config.services[i].name.as_str())
            .collect();
        assert_eq!(order, ["wan", "l2tp", "firewall", "lan", "dnsmasq"]);
        let text = graph(&config);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME      KIND       NEEDS                  AFTER  WHAT",
                "wan       interface  -                      -      link eth0, ready when carrier",
                "l2tp      process    wan (stops with them)  -      /usr/sbin/xl2tpd -D",
                "firewall  oneshot    -                      wan    /etc/firewall.sh up",
                "lan       interface  -                      -      link br-lan, ready when up",
                "dnsmasq   process    firewall,lan           -      /usr/sbin/dnsmasq -k",
            ]
        );
    }
}
