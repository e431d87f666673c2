//! `medic secret set|rm|list` (DESIGN §10): the value is read here, checked against the
//! store's bounds (so a value too large is named as such, not as a frame too large), and sent
//! in one control request; the daemon stores it. Nothing here prints a secret's bytes.

use std::io::Read;
use std::time::Duration;

use medic_io::control::{Request, Response, SecretBytes, SecretRow};
use medic_io::secrets::{valid_name, MAX_SECRET_BYTES};
use serde::Serialize;

use super::client::{ask, emit, unexpected};
use super::clock::{local_iso8601, Clock};
use super::{Failure, SecretCommand};

/// A duration in whole milliseconds, for the wire.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reads the value: FILE or stdin, at most one byte more than the bound (to say it is over).
fn read_value(from: Option<&std::path::Path>) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    let limit = MAX_SECRET_BYTES as u64 + 1;
    let read = match from {
        Some(path) => std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        None => std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read stdin: {e}")),
    };
    read.map_err(Failure::failed)?;
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(Failure::failed(format!(
            "the secret is over {MAX_SECRET_BYTES} bytes (60 KiB), the most a secret may be; \
             nothing changed"
        )));
    }
    Ok(bytes)
}

/// Runs one `medic secret` command.
pub async fn run(command: SecretCommand) -> Result<(), Failure> {
    match command {
        SecretCommand::Set {
            name,
            from,
            confirm_within,
            target,
        } => {
            if !valid_name(&name) {
                return Err(Failure::usage(format!(
                    "`{name}` is not a secret name: 1 to 64 of a-z, 0-9, `_` and `-`"
                )));
            }
            let bytes = read_value(from.as_deref())?;
            let request = Request::SecretSet {
                name,
                bytes: SecretBytes(bytes),
                confirm_within_ms: confirm_within.map(millis),
            };
            match ask(&target, request).await? {
                Response::Done => Ok(()),
                other => Err(unexpected(other)),
            }
        }
        SecretCommand::Rm { name, target } => {
            match ask(&target, Request::SecretRemove { name }).await? {
                Response::Done => Ok(()),
                other => Err(unexpected(other)),
            }
        }
        SecretCommand::List { json, target } => {
            let rows = match ask(&target, Request::SecretList).await? {
                Response::Secrets(rows) => rows,
                other => return Err(unexpected(other)),
            };
            match json {
                true => emit(&list_json(&rows)),
                false => print!("{}", list_table(&rows)),
            }
            Ok(())
        }
    }
}

/// When a generation was set, as local time.
fn set_at(row: &SecretRow) -> String {
    u64::try_from(row.set_at_unix_ms).map_or_else(|_| "-".to_string(), local_iso8601)
}

/// `NAME SIZE GENERATION SET-AT`, one secret a line; `(unconfirmed)` after a push that waits
/// for `medic confirm`.
pub fn list_table(rows: &[SecretRow]) -> String {
    let mut lines = vec![(
        "NAME".to_string(),
        "SIZE".to_string(),
        "GENERATION".to_string(),
        "SET".to_string(),
    )];
    for r in rows {
        let mut generation = r.generation.to_string();
        if r.unconfirmed {
            generation.push_str(" (unconfirmed)");
        }
        lines.push((r.name.clone(), r.size.to_string(), generation, set_at(r)));
    }
    let w0 = lines.iter().map(|l| l.0.len()).max().unwrap_or(0);
    let w1 = lines.iter().map(|l| l.1.len()).max().unwrap_or(0);
    let w2 = lines.iter().map(|l| l.2.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(a, b, c, d)| format!("{a:w0$}  {b:>w1$}  {c:w2$}  {d}\n"))
        .collect()
}

/// One JSON array: `{"name", "size", "generation", "set_at" (RFC 3339, UTC),
/// "set_at_unix_ms", "unconfirmed"}`.
pub fn list_json(rows: &[SecretRow]) -> String {
    #[derive(Serialize)]
    struct Row<'a> {
        name: &'a str,
        size: u64,
        generation: u64,
        set_at: Option<String>,
        set_at_unix_ms: i64,
        unconfirmed: bool,
    }
    let rows: Vec<Row> = rows
        .iter()
        .map(|r| Row {
            name: &r.name,
            size: r.size,
            generation: r.generation,
            set_at: u64::try_from(r.set_at_unix_ms).ok().map(|ms| {
                let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
                humantime::format_rfc3339_millis(t).to_string()
            }),
            set_at_unix_ms: r.set_at_unix_ms,
            unconfirmed: r.unconfirmed,
        })
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
}

/// The line `medic status` adds while a change waits for its confirmation: what, and when it
/// is rolled back.
pub fn pending_line(what: &str, deadline_ms: u64, clock: &Clock) -> String {
    let when = match clock.relative_to_now(deadline_ms) {
        Some(rel) => format!("{} ({rel})", clock.show(deadline_ms)),
        None => clock.show(deadline_ms),
    };
    format!("waiting for `medic confirm`: {what}; rolled back at {when}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shows_no_bytes_and_marks_unconfirmed() {
        let rows = vec![SecretRow {
            name: "authorized-keys".into(),
            size: 81,
            generation: 3,
            set_at_unix_ms: 0,
            unconfirmed: true,
        }];
        let table = list_table(&rows);
        assert!(table.starts_with("NAME"), "{table}");
        assert!(
            table.contains("authorized-keys    81  3 (unconfirmed)"),
            "{table}"
        );
        let json = list_json(&rows);
        assert!(json.contains(r#""generation":3"#) && json.contains(r#""unconfirmed":true"#));
        assert!(
            json.contains(r#""set_at":"1970-01-01T00:00:00.000Z""#),
            "{json}"
        );
    }
}
