//! How answers look: aligned tables for people, JSON for scripts (architecture.md §4).
//!
//! Text for people never carries a service's control characters or escape sequences (from its
//! output, or a condition name its probe printed): they are shown as `\x1b`-style escapes
//! ([`medic_io::terminal::sanitize`]). JSON keeps the raw text.

use std::io::IsTerminal;

use medic_io::control::{EventRow, HistoryRow, StatusRow};
use medic_io::terminal::sanitize;
use serde::Serialize;

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
    let width = |c: &str| c.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(&cell.text));
            }
        }
    }
    let mut out = String::new();
    let header: Vec<Cell> = header.iter().map(|h| Cell::plain(*h)).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            match cell.colour.filter(|_| colour) {
                Some(c) => {
                    line.push_str(c.code());
                    line.push_str(&cell.text);
                    line.push_str("\x1b[0m");
                }
                None => line.push_str(&cell.text),
            }
            let pad = widths
                .get(i)
                .map_or(0, |w| w.saturating_sub(width(&cell.text)));
            line.push_str(&" ".repeat(pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
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

/// Milliseconds since the daemon started as `12.345s`, the way the kernel writes instants.
pub fn at(ms: u64) -> String {
    medic_kernel::Instant::from_millis(ms).to_string()
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

/// `medic status`: NAME KIND CONDITION HEALTH PID UPTIME STRIKES.
pub fn status_table(rows: &[StatusRow], colour: bool) -> String {
    let cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|r| {
            vec![
                Cell::plain(&r.name),
                Cell::plain(&r.kind),
                Cell::plain(&r.condition),
                health(r),
                Cell::plain(r.pid.map_or("-".to_string(), |p| p.to_string())),
                Cell::plain(r.uptime_ms.map_or("-".to_string(), human_ms)),
                Cell::plain(r.strikes.to_string()),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "KIND",
        "CONDITION",
        "HEALTH",
        "PID",
        "UPTIME",
        "STRIKES",
    ];
    table(&header, &cells, colour)
}

/// `medic status --json`: one array, an object per service.
pub fn status_json(rows: &[StatusRow]) -> String {
    to_json(rows)
}

/// The columns of a history record: AT CONDITION HEAL OUTCOME NOTE.
fn record_cells(r: &HistoryRow) -> Vec<Cell> {
    vec![
        Cell::plain(at(r.at_ms)),
        Cell::plain(&r.condition),
        Cell::plain(r.heal.as_deref().unwrap_or("-")),
        Cell::plain(match (&r.outcome, r.outcome_at_ms) {
            (Some(o), Some(ms)) => format!("{o} at {}", at(ms)),
            (Some(o), None) => o.clone(),
            (None, _) => "-".into(),
        }),
        Cell::plain(&r.note),
    ]
}

/// `medic history`: AT CONDITION HEAL OUTCOME NOTE, oldest first.
pub fn history_table(rows: &[HistoryRow]) -> String {
    let cells: Vec<Vec<Cell>> = rows.iter().map(record_cells).collect();
    table(
        &["AT", "CONDITION", "HEAL", "OUTCOME", "NOTE"],
        &cells,
        false,
    )
}

/// `medic history --json`: one array of records, oldest first.
pub fn history_json(rows: &[HistoryRow]) -> String {
    to_json(rows)
}

/// `medic events`, one line per event: `12.000s dnsmasq exited restart (pending): exit code 1`.
/// Lines are not aligned with each other: they are printed as they happen.
pub fn event_line(e: &EventRow) -> String {
    let r = &e.record;
    let (when, decided) = (at(r.at_ms), r.outcome_at_ms.map(at));
    let line = medic_kernel::history::Line {
        at: &when,
        service: Some(&e.service),
        condition: &r.condition,
        heal: r.heal.as_deref(),
        outcome: r.outcome.as_deref(),
        outcome_at: decided.as_ref().map(|d| d as &dyn std::fmt::Display),
        note: &r.note,
    }
    .to_string();
    sanitize(&line).into_owned()
}

/// `medic logs`, one captured line: control characters made visible.
pub fn log_line(line: &str) -> std::borrow::Cow<'_, str> {
    sanitize(line)
}

/// `medic logs --json`: one JSON string per line, the raw text.
pub fn log_json(line: &str) -> String {
    to_json(line)
}

/// `medic events --json`: one object per line, a history record with `service` added.
pub fn event_json(e: &EventRow) -> String {
    #[derive(Serialize)]
    struct Event<'a> {
        service: &'a str,
        #[serde(flatten)]
        record: &'a HistoryRow,
    }
    to_json(&Event {
        service: &e.service,
        record: &e.record,
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

    #[test]
    fn tables_are_aligned_without_trailing_spaces() {
        let rows = [
            row("dnsmasq", "ready", true, Some(1234)),
            row("l2tp", "tunnel-down", false, None),
        ];
        let text = status_table(&rows, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME     KIND     CONDITION    HEALTH     PID   UPTIME  STRIKES",
                "dnsmasq  process  ready        healthy    1234  1m01s   0",
                "l2tp     process  tunnel-down  unhealthy  -     -       0",
            ]
        );
        assert!(!text.contains('\x1b'), "no colour when asked for none");
    }

    #[test]
    fn colours_do_not_move_columns() {
        let rows = [
            row("dnsmasq", "ready", true, Some(1)),
            row("ntpd", "starting", false, Some(2)),
            row("l2tp", "exited", false, None),
            row("off", "stopped", false, None),
        ];
        let plain = status_table(&rows, false);
        let coloured = status_table(&rows, true);
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
        assert_eq!(off, ["off", "process", "stopped", "-", "-", "-", "0"]);
    }

    #[test]
    fn status_json_has_the_documented_shape() {
        let mut wan = row("wan", "no-carrier", false, None);
        wan.kind = "interface".into();
        wan.needs = vec![];
        wan.link = Some(LinkInfo {
            state: "up, no carrier".into(),
            addresses: vec![],
        });
        let rows = [row("dnsmasq", "ready", true, Some(1234)), wan];
        let value: Value = serde_json::from_str(&status_json(&rows)).unwrap();
        assert_eq!(
            value,
            json!([
                {"name": "dnsmasq", "kind": "process", "condition": "ready", "healthy": true,
                 "pid": 1234, "strikes": 0, "since_ms": 5230, "needs": ["firewall"],
                 "link": null, "uptime_ms": 61000},
                {"name": "wan", "kind": "interface", "condition": "no-carrier",
                 "healthy": false, "pid": null, "strikes": 0, "since_ms": 5230, "needs": [],
                 "link": {"state": "up, no carrier", "addresses": []}, "uptime_ms": null}
            ])
        );
        assert!(status_json(&rows).starts_with(r#"[{"name":"dnsmasq","kind":"process""#));
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
        let value: Value = serde_json::from_str(&history_json(&[record(), quiet])).unwrap();
        assert_eq!(
            value,
            json!([
                {"at_ms": 812, "condition": "exited", "heal": "restart",
                 "outcome": "resolved", "note": "exit code 1", "outcome_at_ms": 1812},
                {"at_ms": 12000, "condition": "blocked", "heal": null, "outcome": null,
                 "note": "blocked by wan", "outcome_at_ms": null}
            ])
        );
        let event = EventRow {
            service: "dnsmasq".into(),
            record: record(),
        };
        let line = event_json(&event);
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            json!({"service": "dnsmasq", "at_ms": 812, "condition": "exited",
                   "heal": "restart", "outcome": "resolved", "note": "exit code 1",
                   "outcome_at_ms": 1812})
        );
        assert_eq!(
            event_line(&event),
            "0.812s dnsmasq exited restart (resolved at 1.812s): exit code 1"
        );
        let table = history_table(&[record()]);
        assert_eq!(
            table.lines().collect::<Vec<_>>(),
            [
                "AT      CONDITION  HEAL     OUTCOME             NOTE",
                "0.812s  exited     restart  resolved at 1.812s  exit code 1",
            ]
        );
    }

    #[test]
    fn service_text_cannot_drive_the_terminal() {
        let mut evil = row("l2tp", "\x1b]0;pwned\x07down\x1b[2J", false, None);
        evil.kind = "process".into();
        let table = status_table(std::slice::from_ref(&evil), true);
        assert!(table.contains("\\x1b]0;pwned\\x07down\\x1b[2J"), "{table}");
        let raw_escapes = table.matches('\x1b').count();
        assert_eq!(
            raw_escapes, 2,
            "only medic's own colour on and off: {table:?}"
        );
        assert!(
            status_json(&[evil]).contains("\\u001b]0;pwned"),
            "JSON keeps the raw text (escaped as JSON does)"
        );
        let mut rec = record();
        rec.condition = "\x1b[8mhidden".into();
        rec.note = "probe said \u{9b}31m\r".into();
        let table = history_table(std::slice::from_ref(&rec));
        assert!(!table.contains('\x1b') && !table.contains('\u{9b}') && !table.contains('\r'));
        assert!(table.contains("\\x1b[8mhidden"), "{table}");
        let line = event_line(&EventRow {
            service: "l2tp".into(),
            record: rec,
        });
        assert!(line.contains("\\x1b[8mhidden") && line.contains("\\u{9b}31m\\x0d"));
        assert_eq!(log_line("a\tb\x1b[31mred"), "a\tb\\x1b[31mred");
        assert_eq!(log_json("\x1b[31m"), "\"\\u001b[31m\"");
    }

    #[test]
    fn durations_read_like_uptime() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(42_000), "42s");
        assert_eq!(human_ms(187_000), "3m07s");
        assert_eq!(human_ms(7_500_000), "2h05m");
        assert_eq!(human_ms(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
        assert_eq!(at(12_345), "12.345s");
    }
}
