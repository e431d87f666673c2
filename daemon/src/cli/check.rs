//! `medic check`: validate a config and print its services in the order they start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use medic_kernel::config::{Config, Kind};

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
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::usage(format!(
            "cannot read the config {name}: {e}; name another with -c FILE or MEDIC_CONFIG"
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

/// `medic check [-c FILE]`.
pub fn run(config: Option<PathBuf>) -> Result<(), Failure> {
    let path = daemon::config_path(config);
    let (_, config) = load(&path)?;
    let n = config.services.len();
    let services = if n == 1 { "service" } else { "services" };
    println!(
        "{}: valid, {n} {services}, in the order they start:",
        path.display()
    );
    print!("{}", graph(&config));
    Ok(())
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

/// What a service runs or watches: its command line, or its link and when that is ready.
fn what(kind: &Kind) -> String {
    match kind {
        Kind::Process { argv } | Kind::Oneshot { argv, .. } => argv.join(" "),
        Kind::Interface { ifname, ready_when } => {
            format!("link {ifname}, ready when {}", ready_when.name())
        }
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
