//! How answers look: aligned tables for people, JSON for scripts (architecture.md §4).
//!
//! Text for people never carries a service's control characters or escape sequences (from its
//! output, or a condition name its probe printed): they are shown as `\x1b`-style escapes
//! ([`medic_io::terminal::sanitize`]). JSON keeps the raw text.

use std::io::IsTerminal;

use medic_io::control::{
    DaemonInfo, DeviceStatus, EventRow, HistoryRow, LogRow, ServiceStatus, StatusRow,
};
use medic_io::terminal::sanitize;
use serde::Serialize;

use super::clock::{self, Clock};

/// An ANSI colour for a table cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    /// Healthy.
    Green,
    /// On its way (waiting, starting, stopping).
    Yellow,
    /// Unhealthy.
    Red,
}

impl Colour {
    fn code(self) -> &'static str {
        match self {
            Colour::Green => "\x1b[32m",
            Colour::Yellow => "\x1b[33m",
            Colour::Red => "\x1b[31m",
        }
    }
}

/// Whether to colour what goes to stdout: a terminal, `NO_COLOR` unset or empty, `TERM` not
/// `dumb`.
pub fn colour_stdout() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    std::io::stdout().is_terminal() && !no_color && !dumb
}

/// One cell of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    text: String,
    colour: Option<Colour>,
}

impl Cell {
    /// A plain cell; control characters in `text` are made visible.
    pub fn plain(text: impl AsRef<str>) -> Cell {
        Cell::coloured(text, None)
    }

    /// A cell coloured when colours are on; control characters in `text` are made visible.
    pub fn coloured(text: impl AsRef<str>, colour: Option<Colour>) -> Cell {
        Cell {
            text: sanitize(text.as_ref()).into_owned(),
            colour,
        }
    }
}

/// Renders a table: columns two spaces apart, each as wide as its widest cell, no trailing
/// spaces. Colours wrap the text only, so they never upset the alignment.
pub fn table(header: &[&str], rows: &[Vec<Cell>], colour: bool) -> String {
    fitted_table(header, rows, colour, None, 0)
}

/// The narrowest a column is cut to when the table is fitted to the terminal.
const MIN_FITTED: usize = 10;

/// [`table`] no wider than `fit` columns (when given), by cutting the text of the last
/// `shrinkable` columns, last first (a cut cell ends with `…`), each to no less than
/// [`MIN_FITTED`] characters.
pub fn fitted_table(
    header: &[&str],
    rows: &[Vec<Cell>],
    colour: bool,
    fit: Option<usize>,
    shrinkable: usize,
) -> String {
    let width = |c: &str| c.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(&cell.text));
            }
        }
    }
    if let Some(fit) = fit {
        let n = widths.len();
        for i in (n.saturating_sub(shrinkable)..n).rev() {
            let total = widths.iter().sum::<usize>() + 2 * n.saturating_sub(1);
            if total <= fit {
                break;
            }
            let floor = MIN_FITTED.max(width(header[i]));
            widths[i] = widths[i]
                .saturating_sub(total - fit)
                .max(floor.min(widths[i]));
        }
    }
    let cut = |text: &str, w: usize| -> String {
        match width(text) > w {
            true => text
                .chars()
                .take(w.saturating_sub(1))
                .chain(['…'])
                .collect(),
            false => text.to_string(),
        }
    };
    let mut out = String::new();
    let header: Vec<Cell> = header.iter().map(|h| Cell::plain(*h)).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let w = widths.get(i).copied().unwrap_or(usize::MAX);
            let text = cut(&cell.text, w);
            match cell.colour.filter(|_| colour) {
                Some(c) => {
                    line.push_str(c.code());
                    line.push_str(&text);
                    line.push_str("\x1b[0m");
                }
                None => line.push_str(&text),
            }
            line.push_str(&" ".repeat(w.saturating_sub(width(&text)).min(w)));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The width to fit tables to: the terminal's, when stdout is one, else `$COLUMNS` when set;
/// `None` (no limit) otherwise.
pub fn terminal_width() -> Option<usize> {
    if std::io::stdout().is_terminal() {
        // SAFETY: TIOCGWINSZ fills the zeroed winsize we own.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0
            && size.ws_col > 0
        {
            return Some(usize::from(size.ws_col));
        }
    }
    std::env::var("COLUMNS").ok()?.trim().parse().ok()
}

/// A duration for people: `850ms`, `42s`, `3m07s`, `2h05m`, `3d04h`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The health cell of a service: `-` for a service nobody wants up (its health says nothing),
/// yellow while it is on its way, green healthy, red unhealthy.
fn health(row: &StatusRow) -> Cell {
    match row.condition.as_str() {
        "stopped" | "stopping" => Cell::plain("-"),
        _ if row.healthy => Cell::coloured("healthy", Some(Colour::Green)),
        "waiting" | "starting" => Cell::coloured("unhealthy", Some(Colour::Yellow)),
        _ => Cell::coloured("unhealthy", Some(Colour::Red)),
    }
}

/// `31/32 MiB`: a memory sample against the limit, in the limit's unit; `-` when neither is
/// known.
pub fn memory(used: Option<u64>, max: Option<u64>) -> String {
    const KIB: u64 = 1024;
    let scale = max.or(used).unwrap_or(0);
    let (unit, div) = match scale {
        s if s >= KIB * KIB * KIB => ("GiB", KIB * KIB * KIB),
        s if s >= KIB * KIB => ("MiB", KIB * KIB),
        _ => ("KiB", KIB),
    };
    let show = |b: u64| {
        let x = b as f64 / div as f64;
        match unit == "GiB" && x < 10.0 {
            true => format!("{x:.1}"),
            false => format!("{}", (b + div / 2) / div),
        }
    };
    match (used, max) {
        (Some(u), Some(m)) => format!("{}/{} {unit}", show(u), show(m)),
        (None, Some(m)) => format!("-/{} {unit}", show(m)),
        (Some(u), None) => format!("{} {unit}", show(u)),
        (None, None) => "-".to_string(),
    }
}

/// NEXT: `restart in 2m40s`, `start-timeout in 28s`, `restart now`, `retry in 58m00s`,
/// ``nothing until `medic restart` ``, or what waits for an event; `-` when nothing is planned.
pub fn next(s: &ServiceStatus, clock: &Clock) -> String {
    if s.next.is_empty() {
        return "-".to_string();
    }
    let Some(at) = s.next_at_ms else {
        return s.next.clone();
    };
    match clock.now_ms() {
        Some(now) if at <= now => format!("{} now", s.next),
        Some(now) => format!("{} in {}", s.next, human_ms(at - now)),
        None => format!("{} at {}", s.next, clock.show(at)),
    }
}

/// The line above the status table: who the daemon is.
/// `medic 0.1.0, pid 1234, up 3m07s (since 2024-05-01T14:02:11+02:00), config /etc/medic.toml`.
pub fn daemon_line(info: &DaemonInfo, clock: &Clock) -> String {
    let since = match clock.unix_ms(0) {
        Some(unix) => {
            let local = clock::local_iso8601(unix);
            let local = local.split('.').next().unwrap_or(&local).to_string();
            format!(" (since {local}{})", clock::local_offset(unix))
        }
        None => String::new(),
    };
    sanitize(&format!(
        "medic {}, pid {}, up {}{since}, config {}",
        info.version,
        info.pid,
        human_ms(info.now_ms),
        info.config_path
    ))
    .into_owned()
}

/// `medic status`: a line about the daemon, then NAME CONDITION HEALTH PID UPTIME MEMORY
/// STRIKES NEXT WHY, fitted to `fit` columns by cutting WHY, then NEXT (the kind of each
/// service is in `status NAME` and the JSON).
pub fn status_table(
    info: Option<&DaemonInfo>,
    rows: &[ServiceStatus],
    clock: &Clock,
    colour: bool,
    fit: Option<usize>,
) -> String {
    let cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|s| {
            let r = &s.row;
            let strikes = match s.give_up_after {
                // An older daemon that did not say.
                0 => r.strikes.to_string(),
                n => format!("{}/{n}", r.strikes),
            };
            let why = clock.note(&s.why);
            vec![
                Cell::plain(&r.name),
                Cell::plain(&r.condition),
                health(r),
                Cell::plain(r.pid.map_or("-".to_string(), |p| p.to_string())),
                Cell::plain(r.uptime_ms.map_or("-".to_string(), human_ms)),
                Cell::plain(memory(s.memory_bytes, s.memory_max_bytes)),
                Cell::plain(strikes),
                Cell::plain(next(s, clock)),
                Cell::plain(if why.is_empty() { "-" } else { &why }),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "CONDITION",
        "HEALTH",
        "PID",
        "UPTIME",
        "MEMORY",
        "STRIKES",
        "NEXT",
        "WHY",
    ];
    let mut out = String::new();
    if let Some(info) = info {
        out.push_str(&daemon_line(info, clock));
        out.push('\n');
    }
    out.push_str(&fitted_table(&header, &cells, colour, fit, 2));
    out
}

/// One service as `status --json` shows it: the status row's fields, then the rest, with an
/// RFC 3339 time next to each `…_ms` time.
#[derive(Serialize)]
struct ServiceJson<'a> {
    #[serde(flatten)]
    row: &'a StatusRow,
    since: Option<String>,
    why: &'a str,
    next: &'a str,
    next_at_ms: Option<u64>,
    next_at: Option<String>,
    memory_bytes: Option<u64>,
    memory_max_bytes: Option<u64>,
    give_up_after: u32,
    dependents: &'a [String],
    last_exit: Option<&'a str>,
    last_exit_at_ms: Option<u64>,
    last_exit_at: Option<String>,
    /// Device services only: the matched device's `devname`, `devpath`, `subsystem`,
    /// `driver`, or `null` while none matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<Option<DeviceJson<'a>>>,
}

/// The device of a device service in `status --json`.
#[derive(Serialize)]
struct DeviceJson<'a> {
    devname: Option<&'a str>,
    devpath: &'a str,
    subsystem: &'a str,
    driver: Option<&'a str>,
}

/// The device `s` matches, if it is a device service (`Some(None)`: none matches now).
fn device_of<'a>(
    s: &ServiceStatus,
    devices: &'a [DeviceStatus],
) -> Option<Option<&'a DeviceStatus>> {
    (s.row.kind == "device").then(|| devices.iter().find(|d| d.service == s.row.name))
}

fn service_json<'a>(
    s: &'a ServiceStatus,
    devices: &'a [DeviceStatus],
    clock: &Clock,
) -> ServiceJson<'a> {
    ServiceJson {
        device: device_of(s, devices).map(|d| {
            d.map(|d| DeviceJson {
                devname: d.devname.as_deref(),
                devpath: &d.devpath,
                subsystem: &d.subsystem,
                driver: d.driver.as_deref(),
            })
        }),
        row: &s.row,
        since: clock.rfc3339(s.row.since_ms),
        why: &s.why,
        next: &s.next,
        next_at_ms: s.next_at_ms,
        next_at: s.next_at_ms.and_then(|ms| clock.rfc3339(ms)),
        memory_bytes: s.memory_bytes,
        memory_max_bytes: s.memory_max_bytes,
        give_up_after: s.give_up_after,
        dependents: &s.dependents,
        last_exit: s.last_exit.as_deref(),
        last_exit_at_ms: s.last_exit_at_ms,
        last_exit_at: s.last_exit_at_ms.and_then(|ms| clock.rfc3339(ms)),
    }
}

/// `medic status --json`: one array, an object per service.
pub fn status_json(rows: &[ServiceStatus], devices: &[DeviceStatus], clock: &Clock) -> String {
    let rows: Vec<ServiceJson<'_>> = rows
        .iter()
        .map(|s| service_json(s, devices, clock))
        .collect();
    to_json(&rows)
}

/// `medic status --json=v2`: `{"daemon": {…}, "services": [… as --json …]}`; the daemon object
/// has `pid`, `version`, `config_path`, `state_dir`, `now_ms`, `now_unix_ms`, `started` (RFC
/// 3339).
pub fn status_json_v2(
    info: Option<&DaemonInfo>,
    rows: &[ServiceStatus],
    devices: &[DeviceStatus],
    clock: &Clock,
    pending: Option<&medic_io::control::PendingRow>,
) -> String {
    /// The change waiting for `medic confirm`.
    #[derive(Serialize)]
    struct Pending<'a> {
        what: &'a str,
        deadline_ms: u64,
        deadline: Option<String>,
    }
    #[derive(Serialize)]
    struct Daemon<'a> {
        #[serde(flatten)]
        info: &'a DaemonInfo,
        started: Option<String>,
    }
    #[derive(Serialize)]
    struct V2<'a> {
        daemon: Option<Daemon<'a>>,
        services: Vec<ServiceJson<'a>>,
        pending: Option<Pending<'a>>,
    }
    to_json(&V2 {
        daemon: info.map(|info| Daemon {
            info,
            started: clock.rfc3339(0),
        }),
        services: rows
            .iter()
            .map(|s| service_json(s, devices, clock))
            .collect(),
        pending: pending.map(|p| Pending {
            what: &p.what,
            deadline_ms: p.deadline_ms,
            deadline: clock.rfc3339(p.deadline_ms),
        }),
    })
}

/// `medic status NAME`: everything about one service, `systemctl status` style. `all` is the
/// status of every service (for the health of its needs and dependents); `logs` its last lines;
/// `devices` the matched devices of the report (for a device service).
pub fn status_detail(
    s: &ServiceStatus,
    devices: &[DeviceStatus],
    all: &[ServiceStatus],
    logs: Option<&[LogRow]>,
    clock: &Clock,
    colour: bool,
) -> String {
    let r = &s.row;
    let mut out = String::new();
    let head = health(r);
    let dot = Cell::coloured("●", head.colour);
    let dot = match dot.colour.filter(|_| colour) {
        Some(c) => format!("{}●\x1b[0m", c.code()),
        None => "●".to_string(),
    };
    let headline = format!("{} ({}): {}, {}", r.name, r.kind, r.condition, head.text);
    out.push_str(&format!("{dot} {}\n", sanitize(&headline)));
    let mut fields: Vec<(&str, String)> = Vec::new();
    let when = |ms: u64| match clock.relative_to_now(ms) {
        Some(rel) => format!("{} ({rel})", clock.show(ms)),
        None => clock.show(ms),
    };
    fields.push(("since", when(r.since_ms)));
    if !s.why.is_empty() {
        fields.push(("why", clock.note(&s.why)));
    }
    if !s.next.is_empty() {
        fields.push(("next", next(s, clock)));
    }
    if let Some(at) = s
        .next_at_ms
        .filter(|_| !s.next.is_empty() && clock.is_wall())
    {
        let last = fields.last_mut().expect("next was pushed");
        last.1 = format!("{} ({})", last.1, clock.show(at));
    }
    if let Some(pid) = r.pid {
        let up = r.uptime_ms.map(|u| format!(", up {}", human_ms(u)));
        fields.push(("pid", format!("{pid}{}", up.unwrap_or_default())));
    }
    if let (Some(exit), Some(at)) = (&s.last_exit, s.last_exit_at_ms) {
        fields.push(("last exit", format!("{exit}, {}", when(at))));
    }
    if s.memory_bytes.is_some() || s.memory_max_bytes.is_some() {
        fields.push(("memory", memory(s.memory_bytes, s.memory_max_bytes)));
    }
    fields.push(("strikes", format!("{} of {}", r.strikes, s.give_up_after)));
    let others = |names: &[String]| -> String {
        if names.is_empty() {
            return "-".to_string();
        }
        let each = names
            .iter()
            .map(|n| match all.iter().find(|o| &o.row.name == n) {
                Some(o) => format!("{n} ({}, {})", o.row.condition, health(&o.row).text),
                None => n.clone(),
            });
        each.collect::<Vec<_>>().join(", ")
    };
    fields.push(("needs", others(&r.needs)));
    fields.push(("needed by", others(&s.dependents)));
    if let Some(link) = &r.link {
        let mut text = link.state.clone();
        if !link.addresses.is_empty() {
            text.push_str(&format!(" {}", link.addresses.join(" ")));
        }
        fields.push(("link", text));
    }
    match device_of(s, devices) {
        Some(Some(d)) => {
            fields.push(("devname", d.devname.clone().unwrap_or_else(|| "-".into())));
            fields.push(("devpath", d.devpath.clone()));
            fields.push(("subsystem", d.subsystem.clone()));
            fields.push(("driver", d.driver.clone().unwrap_or_else(|| "-".into())));
        }
        Some(None) => fields.push(("device", "none matches".into())),
        None => {}
    }
    let width = fields.iter().map(|f| f.0.len()).max().unwrap_or(0);
    for (key, value) in fields {
        let line = format!("{key:>width$}: {value}");
        out.push_str(&sanitize(&line));
        out.push('\n');
    }
    if let Some(logs) = logs {
        out.push('\n');
        if logs.is_empty() {
            out.push_str("no output captured\n");
        }
        for l in logs {
            out.push_str(&log_record(l, clock));
            out.push('\n');
        }
    }
    out
}

/// The columns of a history record: AT CONDITION HEAL OUTCOME NOTE.
fn record_cells(r: &HistoryRow, clock: &Clock) -> Vec<Cell> {
    vec![
        Cell::plain(clock.show(r.at_ms)),
        Cell::plain(&r.condition),
        Cell::plain(r.heal.as_deref().unwrap_or("-")),
        Cell::plain(match (&r.outcome, r.outcome_at_ms) {
            (Some(o), Some(ms)) => format!("{o} at {}", clock.show(ms)),
            (Some(o), None) => o.clone(),
            (None, _) => "-".into(),
        }),
        Cell::plain(clock.note(&r.note)),
    ]
}

/// `medic history`: AT CONDITION HEAL OUTCOME NOTE, oldest first.
pub fn history_table(rows: &[HistoryRow], clock: &Clock) -> String {
    let cells: Vec<Vec<Cell>> = rows.iter().map(|r| record_cells(r, clock)).collect();
    table(
        &["AT", "CONDITION", "HEAL", "OUTCOME", "NOTE"],
        &cells,
        false,
    )
}

/// A history record for JSON: its fields, with `at` and `outcome_at` (RFC 3339) added.
#[derive(Serialize)]
struct RecordJson<'a> {
    #[serde(flatten)]
    row: &'a HistoryRow,
    at: Option<String>,
    outcome_at: Option<String>,
}

fn record_json<'a>(row: &'a HistoryRow, clock: &Clock) -> RecordJson<'a> {
    RecordJson {
        row,
        at: clock.rfc3339(row.at_ms),
        outcome_at: row.outcome_at_ms.and_then(|ms| clock.rfc3339(ms)),
    }
}

/// `medic history --json`: one array of records, oldest first.
pub fn history_json(rows: &[HistoryRow], clock: &Clock) -> String {
    let rows: Vec<RecordJson<'_>> = rows.iter().map(|r| record_json(r, clock)).collect();
    to_json(&rows)
}

/// `medic events`, one line per event: `… dnsmasq exited restart (pending): exit code 1`.
/// Lines are not aligned with each other: they are printed as they happen.
///
/// With `update`, the event is the outcome of an earlier intervention, decided now: it is shown
/// at the time it was decided (`… dnsmasq exited restart (resolved): outcome of the restart at
/// …`), so that a followed stream stays in time order.
pub fn event_line(e: &EventRow, clock: &Clock, update: bool) -> String {
    let r = &e.record;
    let decided = r.outcome_at_ms.map(|ms| clock.show(ms));
    let (when, decided, note) = match (update, r.outcome_at_ms, &r.heal) {
        (true, Some(ms), Some(heal)) => {
            let note = format!("outcome of the {heal} at {}", clock.show(r.at_ms));
            (clock.show(ms), None, note)
        }
        _ => (clock.show(r.at_ms), decided, clock.note(&r.note)),
    };
    let line = medic_kernel::history::Line {
        at: &when,
        service: Some(&e.service),
        condition: &r.condition,
        heal: r.heal.as_deref(),
        outcome: r.outcome.as_deref(),
        outcome_at: decided.as_ref().map(|d| d as &dyn std::fmt::Display),
        note: &note,
    }
    .to_string();
    sanitize(&line).into_owned()
}

/// `medic logs`, one captured line: control characters made visible.
pub fn log_line(line: &str) -> std::borrow::Cow<'_, str> {
    sanitize(line)
}

/// `medic logs`, one captured line with its time and stream, `2024-05-01T14:02:11.123 err  text`,
/// or the mark of a new run: `-- started 2024-05-01T14:02:11.123, pid 1234 --`.
pub fn log_record(l: &LogRow, clock: &Clock) -> String {
    let when = clock.show(l.at_ms);
    match l.pid.filter(|_| l.stream == "start") {
        Some(pid) => format!("-- started {when}, pid {pid} --"),
        None => sanitize(&format!("{when} {:<3}  {}", l.stream, l.text)).into_owned(),
    }
}

/// `medic logs --json`: one JSON string per line, the raw text (run marks are not output and
/// are left out).
pub fn log_record_json(l: &LogRow) -> Option<String> {
    (l.stream != "start").then(|| log_json(&l.text))
}

/// `medic logs --json`: one JSON string per line, the raw text.
pub fn log_json(line: &str) -> String {
    to_json(line)
}

/// `medic events --json`: one object per line, a history record (with `at` and `outcome_at`)
/// with `service` added.
pub fn event_json(e: &EventRow, clock: &Clock) -> String {
    #[derive(Serialize)]
    struct Event<'a> {
        service: &'a str,
        #[serde(flatten)]
        record: RecordJson<'a>,
    }
    to_json(&Event {
        service: &e.service,
        record: record_json(&e.record, clock),
    })
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    // Plain data of strings, numbers and options: serialising it cannot fail.
    serde_json::to_string(value).expect("rows serialise to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_io::control::LinkInfo;
    use serde_json::{json, Value};

    fn row(name: &str, condition: &str, healthy: bool, pid: Option<u32>) -> StatusRow {
        StatusRow {
            name: name.into(),
            kind: "process".into(),
            condition: condition.into(),
            healthy,
            pid,
            strikes: 0,
            since_ms: 5230,
            needs: vec!["firewall".into()],
            link: None,
            uptime_ms: pid.map(|_| 61_000),
        }
    }

    fn status(row: StatusRow) -> ServiceStatus {
        ServiceStatus::from_row(row, 10)
    }

    /// The daemon has run 10 s; the wall clock says 2024-05-01T12:00:10Z.
    fn info() -> DaemonInfo {
        DaemonInfo {
            pid: 42,
            version: "0.1.0".into(),
            config_path: "/etc/medic.toml".into(),
            state_dir: "/run/medic".into(),
            now_ms: 10_000,
            now_unix_ms: 1_714_564_810_000,
        }
    }

    /// Times as the daemon counts them: the tables do not depend on the local zone.
    fn relative() -> Clock {
        Clock::new(Some(&info()), true)
    }

    #[test]
    fn tables_are_aligned_without_trailing_spaces() {
        let mut l2tp = status(row("l2tp", "tunnel-down", false, None));
        l2tp.row.strikes = 3;
        l2tp.why = "probe reports tunnel-down".into();
        l2tp.next = "restart".into();
        l2tp.next_at_ms = Some(170_000);
        let mut dnsmasq = status(row("dnsmasq", "ready", true, Some(1234)));
        dnsmasq.memory_bytes = Some(31 << 20);
        dnsmasq.memory_max_bytes = Some(32 << 20);
        let rows = [dnsmasq, l2tp];
        let text = status_table(None, &rows, &relative(), false, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME     CONDITION    HEALTH     PID   UPTIME  MEMORY     STRIKES  NEXT              WHY",
                "dnsmasq  ready        healthy    1234  1m01s   31/32 MiB  0/10     -                 -",
                "l2tp     tunnel-down  unhealthy  -     -       -          3/10     restart in 2m40s  probe reports tunnel-down",
            ]
        );
        assert!(!text.contains('\x1b'), "no colour when asked for none");
        // Fitted: WHY is cut first, then NEXT, never below 10 characters.
        let fitted = status_table(None, &rows, &relative(), false, Some(100));
        let lines: Vec<&str> = fitted.lines().collect();
        assert!(lines.iter().all(|l| l.chars().count() <= 100), "{fitted}");
        assert!(
            lines[2].ends_with("restart in 2m40s  probe reports …"),
            "{fitted}"
        );
        let fitted = status_table(None, &rows, &relative(), false, Some(40));
        let lines: Vec<&str> = fitted.lines().collect();
        assert!(
            lines[2].ends_with("3/10     restart i…  probe rep…"),
            "{fitted}"
        );
        let with_daemon = status_table(Some(&info()), &rows, &relative(), false, None);
        let first = with_daemon.lines().next().unwrap();
        assert!(
            first.starts_with("medic 0.1.0, pid 42, up 10s (since 2024-05-01T")
                && first.ends_with(", config /etc/medic.toml"),
            "{first}"
        );
    }

    #[test]
    fn memory_is_shown_against_its_limit() {
        assert_eq!(memory(Some(31 << 20), Some(32 << 20)), "31/32 MiB");
        assert_eq!(memory(Some(300 << 10), Some(512 << 10)), "300/512 KiB");
        assert_eq!(memory(Some(3 << 29), Some(2 << 30)), "1.5/2.0 GiB");
        assert_eq!(memory(None, Some(24 << 20)), "-/24 MiB");
        assert_eq!(memory(None, None), "-");
    }

    #[test]
    fn colours_do_not_move_columns() {
        let rows = [
            status(row("dnsmasq", "ready", true, Some(1))),
            status(row("ntpd", "starting", false, Some(2))),
            status(row("l2tp", "exited", false, None)),
            status(row("off", "stopped", false, None)),
        ];
        let plain = status_table(None, &rows, &relative(), false, None);
        let coloured = status_table(None, &rows, &relative(), true, None);
        assert!(coloured.contains("\x1b[32mhealthy\x1b[0m"));
        assert!(coloured.contains("\x1b[33munhealthy\x1b[0m"));
        assert!(coloured.contains("\x1b[31munhealthy\x1b[0m"));
        let stripped = coloured
            .replace("\x1b[32m", "")
            .replace("\x1b[33m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
        let off: Vec<&str> = plain.lines().nth(4).unwrap().split_whitespace().collect();
        assert_eq!(
            off,
            ["off", "stopped", "-", "-", "-", "-", "0/10", "-", "-"]
        );
    }

    #[test]
    fn status_json_has_the_documented_shape() {
        let mut wan = status(row("wan", "no-carrier", false, None));
        wan.row.kind = "interface".into();
        wan.row.needs = vec![];
        wan.row.link = Some(LinkInfo {
            state: "up, no carrier".into(),
            addresses: vec![],
        });
        wan.next = "nothing: no heal for no-carrier".into();
        wan.dependents = vec!["l2tp".into()];
        let mut dnsmasq = status(row("dnsmasq", "ready", true, Some(1234)));
        dnsmasq.last_exit = Some("exit code 1".into());
        dnsmasq.last_exit_at_ms = Some(5000);
        let rows = [dnsmasq, wan];
        let clock = Clock::new(Some(&info()), false);
        let value: Value = serde_json::from_str(&status_json(&rows, &[], &clock)).unwrap();
        assert_eq!(
            value,
            json!([
                {"name": "dnsmasq", "kind": "process", "condition": "ready", "healthy": true,
                 "pid": 1234, "strikes": 0, "since_ms": 5230, "needs": ["firewall"],
                 "link": null, "uptime_ms": 61000, "since": "2024-05-01T12:00:05.230Z",
                 "why": "", "next": "", "next_at_ms": null, "next_at": null,
                 "memory_bytes": null, "memory_max_bytes": null, "give_up_after": 10,
                 "dependents": [], "last_exit": "exit code 1", "last_exit_at_ms": 5000,
                 "last_exit_at": "2024-05-01T12:00:05.000Z"},
                {"name": "wan", "kind": "interface", "condition": "no-carrier",
                 "healthy": false, "pid": null, "strikes": 0, "since_ms": 5230, "needs": [],
                 "link": {"state": "up, no carrier", "addresses": []}, "uptime_ms": null,
                 "since": "2024-05-01T12:00:05.230Z", "why": "",
                 "next": "nothing: no heal for no-carrier", "next_at_ms": null,
                 "next_at": null, "memory_bytes": null, "memory_max_bytes": null,
                 "give_up_after": 10, "dependents": ["l2tp"], "last_exit": null,
                 "last_exit_at_ms": null, "last_exit_at": null}
            ])
        );
        let text = status_json(&rows, &[], &clock);
        assert!(text.starts_with(r#"[{"name":"dnsmasq","kind":"process""#));
        let v2: Value =
            serde_json::from_str(&status_json_v2(Some(&info()), &rows, &[], &clock, None)).unwrap();
        assert_eq!(v2["services"], value, "v2 holds the same objects");
        assert_eq!(v2["daemon"]["pid"], 42);
        assert_eq!(v2["daemon"]["config_path"], "/etc/medic.toml");
        assert_eq!(v2["daemon"]["started"], "2024-05-01T12:00:00.000Z");
    }

    #[test]
    fn a_device_service_shows_its_device_and_only_it_has_the_key() {
        let mut modem = status(row("modem", "ready", true, None));
        modem.row.kind = "device".into();
        let mut gone = status(row("gone", "absent", false, None));
        gone.row.kind = "device".into();
        let pppd = status(row("pppd", "ready", true, Some(7)));
        let devices = [DeviceStatus {
            service: "modem".into(),
            devname: Some("/dev/ttyUSB0".into()),
            devpath: "/devices/pci0000:00/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0".into(),
            subsystem: "tty".into(),
            driver: Some("option".into()),
        }];
        let rows = [modem, gone, pppd];
        let clock = Clock::new(Some(&info()), false);
        let value: Value = serde_json::from_str(&status_json(&rows, &devices, &clock)).unwrap();
        assert_eq!(
            value[0]["device"],
            json!({"devname": "/dev/ttyUSB0",
                   "devpath": "/devices/pci0000:00/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0",
                   "subsystem": "tty", "driver": "option"})
        );
        assert!(value[1]["device"].is_null() && value[1].get("device").is_some());
        assert!(value[2].get("device").is_none(), "{}", value[2]);
        let text = status_detail(&rows[0], &devices, &rows, None, &relative(), false);
        assert!(text.contains("devname: /dev/ttyUSB0"), "{text}");
        assert!(text.contains("driver: option"), "{text}");
        let text = status_detail(&rows[1], &devices, &rows, None, &relative(), false);
        assert!(text.contains("device: none matches"), "{text}");
    }

    fn record() -> HistoryRow {
        HistoryRow {
            at_ms: 812,
            condition: "exited".into(),
            heal: Some("restart".into()),
            outcome: Some("resolved".into()),
            note: "exit code 1".into(),
            outcome_at_ms: Some(1812),
        }
    }

    #[test]
    fn history_and_events_have_the_documented_shape() {
        let quiet = HistoryRow {
            at_ms: 12_000,
            condition: "blocked".into(),
            heal: None,
            outcome: None,
            note: "blocked by wan".into(),
            outcome_at_ms: None,
        };
        let clock = Clock::new(Some(&info()), false);
        let value: Value = serde_json::from_str(&history_json(&[record(), quiet], &clock)).unwrap();
        assert_eq!(
            value,
            json!([
                {"at_ms": 812, "condition": "exited", "heal": "restart",
                 "outcome": "resolved", "note": "exit code 1", "outcome_at_ms": 1812,
                 "at": "2024-05-01T12:00:00.812Z", "outcome_at": "2024-05-01T12:00:01.812Z"},
                {"at_ms": 12000, "condition": "blocked", "heal": null, "outcome": null,
                 "note": "blocked by wan", "outcome_at_ms": null,
                 "at": "2024-05-01T12:00:12.000Z", "outcome_at": null}
            ])
        );
        let event = EventRow {
            service: "dnsmasq".into(),
            record: record(),
        };
        let line = event_json(&event, &clock);
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            json!({"service": "dnsmasq", "at_ms": 812, "condition": "exited",
                   "heal": "restart", "outcome": "resolved", "note": "exit code 1",
                   "outcome_at_ms": 1812, "at": "2024-05-01T12:00:00.812Z",
                   "outcome_at": "2024-05-01T12:00:01.812Z"})
        );
        assert_eq!(
            event_line(&event, &relative(), false),
            "0.812s dnsmasq exited restart (resolved at 1.812s): exit code 1"
        );
        assert_eq!(
            event_line(&event, &relative(), true),
            "1.812s dnsmasq exited restart (resolved): outcome of the restart at 0.812s",
            "an outcome decided while following is shown when it was decided"
        );
        let table = history_table(&[record()], &relative());
        assert_eq!(
            table.lines().collect::<Vec<_>>(),
            [
                "AT      CONDITION  HEAL     OUTCOME             NOTE",
                "0.812s  exited     restart  resolved at 1.812s  exit code 1",
            ]
        );
    }

    #[test]
    fn log_lines_have_time_and_stream_and_runs_are_marked() {
        let line = |stream: &str, text: &str, pid| LogRow {
            at_ms: 1500,
            stream: stream.into(),
            text: text.into(),
            pid,
        };
        let clock = relative();
        assert_eq!(
            log_record(&line("start", "", Some(77)), &clock),
            "-- started 1.500s, pid 77 --"
        );
        assert_eq!(
            log_record(&line("out", "hi", None), &clock),
            "1.500s out  hi"
        );
        assert_eq!(
            log_record(&line("err", "\x1b[2J", None), &clock),
            "1.500s err  \\x1b[2J"
        );
        assert_eq!(log_record_json(&line("start", "", Some(1))), None);
        assert_eq!(
            log_record_json(&line("err", "\x1b", None)).as_deref(),
            Some("\"\\u001b\"")
        );
    }

    #[test]
    fn service_text_cannot_drive_the_terminal() {
        let mut evil = status(row("l2tp", "\x1b]0;pwned\x07down\x1b[2J", false, None));
        evil.why = "\x1b[31mred".into();
        let table = status_table(None, std::slice::from_ref(&evil), &relative(), true, None);
        assert!(table.contains("\\x1b]0;pwned\\x07down\\x1b[2J"), "{table}");
        let raw_escapes = table.matches('\x1b').count();
        assert_eq!(
            raw_escapes, 2,
            "only medic's own colour on and off: {table:?}"
        );
        let detail = status_detail(&evil, &[], &[], None, &relative(), false);
        assert!(!detail.contains('\x1b'), "{detail:?}");
        assert!(
            status_json(&[evil], &[], &relative()).contains("\\u001b]0;pwned"),
            "JSON keeps the raw text (escaped as JSON does)"
        );
        let mut rec = record();
        rec.condition = "\x1b[8mhidden".into();
        rec.note = "probe said \u{9b}31m\r".into();
        let table = history_table(std::slice::from_ref(&rec), &relative());
        assert!(!table.contains('\x1b') && !table.contains('\u{9b}') && !table.contains('\r'));
        assert!(table.contains("\\x1b[8mhidden"), "{table}");
        let line = event_line(
            &EventRow {
                service: "l2tp".into(),
                record: rec,
            },
            &relative(),
            false,
        );
        assert!(line.contains("\\x1b[8mhidden") && line.contains("\\u{9b}31m\\x0d"));
        assert_eq!(log_line("a\tb\x1b[31mred"), "a\tb\\x1b[31mred");
        assert_eq!(log_json("\x1b[31m"), "\"\\u001b[31m\"");
    }

    #[test]
    fn the_detailed_view_says_everything_about_one_service() {
        let mut crasher = status(row("crasher", "exited", false, None));
        crasher.row.strikes = 2;
        crasher.give_up_after = 4;
        crasher.why = "exit code 1".into();
        crasher.next = "restart".into();
        crasher.next_at_ms = Some(12_000);
        crasher.last_exit = Some("exit code 1".into());
        crasher.last_exit_at_ms = Some(9_000);
        crasher.dependents = vec!["web".into()];
        let firewall = status(row("firewall", "ready", true, None));
        let all = [crasher.clone(), firewall];
        let logs = [LogRow {
            at_ms: 8_500,
            stream: "err".into(),
            text: "boom".into(),
            pid: None,
        }];
        let text = status_detail(&crasher, &[], &all, Some(&logs), &relative(), false);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "● crasher (process): exited, unhealthy",
                "    since: 5.230s (4s ago)",
                "      why: exit code 1",
                "     next: restart in 2s",
                "last exit: exit code 1, 9.000s (1s ago)",
                "  strikes: 2 of 4",
                "    needs: firewall (ready, healthy)",
                "needed by: web",
                "",
                "8.500s err  boom",
            ]
        );
    }

    #[test]
    fn durations_read_like_uptime() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(42_000), "42s");
        assert_eq!(human_ms(187_000), "3m07s");
        assert_eq!(human_ms(7_500_000), "2h05m");
        assert_eq!(human_ms(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }
}
