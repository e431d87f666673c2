//! TOML text → validated [`Config`], reporting every problem at once.

use std::sync::Arc;

use toml::de::DeTable;

use super::graph;
use super::model::{Config, DaemonConfig};
use super::service::{self, Parsed};
use super::values::{entries, key_path, Ctx, Field, Hint};

/// At most this many problems are listed; the rest are counted in a last line
/// (`… and N more problems`), so that a broken file costs neither minutes nor pages.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line, when the problem has a place.
    pub line: Option<u32>,
    /// 1-based column (in characters), when the problem has a place.
    pub column: Option<u32>,
    /// What is wrong and what to do, e.g. ``unknown key `need` in [service.ntpd]; did you mean `needs`?``.
    pub message: String,
}

/// Every problem found in a config file. Displays as one `file:line:col: message` per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file name used in messages.
    pub file: String,
    /// The problems, in the order of the file: the first [`MAX_REPORTED_ERRORS`] of them.
    pub errors: Vec<ConfigError>,
    /// How many problems were found, `errors` and those left out.
    pub total: usize,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (e.line, e.column) {
                (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, e.message)?,
                (Some(l), None) => write!(f, "{}:{}: {}", self.file, l, e.message)?,
                _ => write!(f, "{}: {}", self.file, e.message)?,
            }
        }
        let more = self.total.saturating_sub(self.errors.len());
        if more > 0 {
            let problems = if more == 1 { "problem" } else { "problems" };
            write!(
                f,
                "\n{}: … and {more} more {problems}; fix these first, then check again",
                self.file
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses and validates a config. `file` names the file in messages; when it is an absolute
/// path, relative paths in the config (programs named with a `/`, `cwd`, watched files, check
/// paths) are taken from its directory, resolved now.
///
/// Every problem is reported, in the order of the file, each with its line and column: a TOML
/// syntax error alone (nothing else can be read then), otherwise unknown keys, wrong types, bad
/// values, keys and heals that do not fit the service's kind, unknown or cyclic dependencies.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let base = std::path::Path::new(file)
        .parent()
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.to_string_lossy().into_owned());
    parse_in(text, file, base.as_deref())
}

/// [`parse`], with relative paths taken from `base_dir` (the config file's directory; with
/// `None` only absolute paths are accepted).
pub fn parse_in(text: &str, file: &str, base_dir: Option<&str>) -> Result<Config, ConfigErrors> {
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span();
            let mut message = format!("TOML syntax: {}", e.message());
            if e.message() == "duplicate key" {
                let key = span.clone().and_then(|s| text.get(s)).unwrap_or_default();
                message = format!("TOML syntax: `{key}` is defined twice; merge the two");
            }
            let errors = vec![error_at(
                text,
                &mut Cursor::default(),
                span.map(|s| s.start),
                message,
            )];
            return Err(ConfigErrors {
                file: file.to_string(),
                errors,
                total: 1,
            });
        }
    };
    let mut cx = Ctx {
        base: base_dir.map(str::to_string),
        ..Ctx::default()
    };
    let mut daemon = DaemonConfig {
        base_dir: base_dir.map(str::to_string),
        ..DaemonConfig::default()
    };
    let mut services = Vec::new();
    let mut trusted_after_at = None;
    for (k, value) in entries(root.get_ref()) {
        let f = Field::new(k.get_ref(), "the top-level table", value);
        match f.key {
            "daemon" => trusted_after_at = read_daemon(&mut cx, f, &mut daemon),
            "service" => services = read_services(&mut cx, f),
            _ => cx.unknown_key(k, f.place, &["daemon", "service"]),
        }
    }
    graph::check(&mut cx, &services);
    if let (Some(name), Some(at)) = (&daemon.clock_trusted_after, trusted_after_at) {
        if !services.iter().any(|p| p.service.name == *name) {
            let message = format!("[daemon] clock-trusted-after `{name}`, which is not a service");
            cx.error_with_hint(at, message, Hint::Service(name.clone()));
        }
    }
    if cx.errors.is_empty() {
        let services = services.into_iter().map(|p| Arc::new(p.service)).collect();
        return Ok(Config { daemon, services });
    }
    // Only the first problems in file order are reported, and only they get their place and
    // their suggestion worked out: the cost stays linear in the file however many there are.
    let mut found = std::mem::take(&mut cx.errors);
    found.sort_by_key(|(at, _, _)| *at);
    let total = found.len();
    found.truncate(MAX_REPORTED_ERRORS);
    let names: Vec<&str> = services.iter().map(|p| p.service.name.as_str()).collect();
    let mut cursor = Cursor::default();
    let errors: Vec<ConfigError> = found
        .into_iter()
        .map(|(at, mut message, hint)| {
            if let Some(hint) = hint {
                message += &hint.resolve(&mut cx, &names);
            }
            error_at(text, &mut cursor, Some(at), message)
        })
        .collect();
    Err(ConfigErrors {
        file: file.to_string(),
        errors,
        total,
    })
}

/// A place in the text already counted: byte offset, 0-based line, characters since the start
/// of the line. Places asked for in increasing order cost one pass over the text in all.
#[derive(Default)]
struct Cursor {
    offset: usize,
    line: usize,
    column: usize,
}

impl Cursor {
    /// Moves to byte offset `at` (rounded down to a character boundary; never backwards).
    fn advance(&mut self, text: &str, at: usize) {
        let mut at = at.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        if at < self.offset {
            // Out of order (not expected): count again from the start.
            *self = Cursor::default();
        }
        let stretch = &text[self.offset..at];
        match stretch.rfind('\n') {
            Some(last) => {
                self.line += stretch.bytes().filter(|&b| b == b'\n').count();
                self.column = stretch[last + 1..].chars().count();
            }
            None => self.column += stretch.chars().count(),
        }
        self.offset = at;
    }
}

/// A [`ConfigError`] at byte offset `at` of `text`: 1-based line, column in characters.
/// `cursor` is where the previous error was placed.
fn error_at(text: &str, cursor: &mut Cursor, at: Option<usize>, message: String) -> ConfigError {
    let place = at.map(|at| {
        cursor.advance(text, at);
        (
            u32::try_from(cursor.line + 1).unwrap_or(u32::MAX),
            u32::try_from(cursor.column + 1).unwrap_or(u32::MAX),
        )
    });
    ConfigError {
        line: place.map(|p| p.0),
        column: place.map(|p| p.1),
        message,
    }
}

/// `[daemon]`.
/// Returns where `clock-trusted-after` was written, for the check that it names a service.
fn read_daemon(cx: &mut Ctx, f: Field, daemon: &mut DaemonConfig) -> Option<usize> {
    let mut trusted_after_at = None;
    let table = cx.table(f, "a table, [daemon]")?;
    for (k, value) in entries(table) {
        let f = Field::new(k.get_ref(), "[daemon]", value);
        match f.key {
            "state-dir" => set(&mut daemon.state_dir, cx.path(f).map(Some)),
            "secrets-dir" => set(&mut daemon.secrets_dir, cx.path(f).map(Some)),
            "trace-size" => set(&mut daemon.trace_size_bytes, cx.size(f)),
            "history-size" => set(&mut daemon.history_len, cx.integer32(f, 1..=4096)),
            "clock-trusted-after" => {
                if let Some(name) = cx.string(f) {
                    daemon.clock_trusted_after = Some(name);
                    trusted_after_at = Some(f.at());
                }
            }
            _ => cx.unknown_key(
                k,
                "[daemon]",
                &[
                    "state-dir",
                    "trace-size",
                    "history-size",
                    "clock-trusted-after",
                    "secrets-dir",
                ],
            ),
        }
    }
    trusted_after_at
}

/// `[service.NAME]`, every one, in file order.
fn read_services(cx: &mut Ctx, f: Field) -> Vec<Parsed> {
    let Some(table) = cx.table(f, "a table of services, like [service.ntpd]") else {
        return Vec::new();
    };
    let mut services = Vec::new();
    for (k, value) in entries(table) {
        let name: &str = k.get_ref();
        let valid = |c: char| c.is_ascii_alphanumeric() || "_.@-".contains(c);
        if name.is_empty() || !name.chars().all(valid) {
            let message = format!(
                "service name `{name}` may only contain letters, digits, `_`, `.`, `@` and `-`"
            );
            cx.error(k.span().start, message);
        }
        let place = format!("[service.{}]", key_path(name));
        services.extend(service::read(cx, name, &place, value));
    }
    services
}

/// Overwrites `slot` when the value was good.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}
