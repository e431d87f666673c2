//! The daemon's log format: a `tracing` subscriber that writes each event as one line to the
//! log sink (stderr, [`logsink`]).
//!
//! ```text
//! 2026-11-30T09:22:08.954823Z  INFO medic_io::runtime: started /bin/sleep 100 service=a pid=22956
//! ```
//!
//! The UTC time to the microsecond ([`logsink::utc`]), the level right-aligned in five columns, the event's
//! target, the message, then every other field as `name=value` (`Debug` formatting: `%x`
//! fields show their `Display`, strings are quoted). On a terminal the time and target are
//! dimmed, the level coloured and field names in italics; escape and other control characters
//! in a message are shown escaped (`\x1b`) there and in a file alike.
//!
//! This is, byte for byte, the default format of `tracing_subscriber::fmt()`, which medic used
//! before (but for times before 1970, shown as 1970-01-01T00:00:00.000000Z): written out here
//! it costs about 1 KiB of the router binary instead of tracing-subscriber's span registry and
//! styling crates (DESIGN.md §8). Spans are not shown: medic opens none.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use medic_io::logsink;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

const DIM: &str = "\x1b[2m";
const ITALIC: &str = "\x1b[3m";
const RESET: &str = "\x1b[0m";

/// Installs the subscriber for the whole process: events up to `max` are logged, with terminal
/// styling when `ansi`. Does nothing when a subscriber is already installed.
pub fn init(max: Level, ansi: bool) {
    let subscriber = LogSubscriber {
        max: LevelFilter::from_level(max),
        ansi,
    };
    let _ = tracing::subscriber::set_global_default(subscriber);
}

struct LogSubscriber {
    max: LevelFilter,
    ansi: bool,
}

impl Subscriber for LogSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = String::with_capacity(128);
        // Writing to a String cannot fail.
        let _ = format_line(
            &mut line,
            event.metadata(),
            self.ansi,
            SystemTime::now(),
            |v| event.record(v),
        );
        logsink::push(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// One log line, ending with a newline: `record` hands the event's fields to the visitor.
fn format_line(
    out: &mut String,
    metadata: &Metadata<'_>,
    ansi: bool,
    now: SystemTime,
    record: impl FnOnce(&mut Fields<'_>),
) -> fmt::Result {
    let (dim, reset) = if ansi { (DIM, RESET) } else { ("", "") };
    write!(out, "{dim}{}{reset} ", logsink::utc(now))?;
    let (colour, level) = match *metadata.level() {
        Level::TRACE => ("\x1b[35m", "TRACE"),
        Level::DEBUG => ("\x1b[34m", "DEBUG"),
        Level::INFO => ("\x1b[32m", " INFO"),
        Level::WARN => ("\x1b[33m", " WARN"),
        Level::ERROR => ("\x1b[31m", "ERROR"),
    };
    match ansi {
        true => write!(out, "{colour}{level}{RESET} ")?,
        false => write!(out, "{level} ")?,
    }
    write!(out, "{dim}{}{reset}{dim}:{reset} ", metadata.target())?;
    let mut fields = Fields {
        out,
        ansi,
        first: true,
        result: Ok(()),
    };
    record(&mut fields);
    fields.result?;
    out.push('\n');
    Ok(())
}

/// Writes an event's fields: the message as it is, the others as `name=value`, separated by
/// spaces.
struct Fields<'a> {
    out: &'a mut String,
    ansi: bool,
    first: bool,
    result: fmt::Result,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.record_debug(field, &format_args!("{value}")),
            _ => self.record_debug(field, &value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if !std::mem::take(&mut self.first) {
            self.out.push(' ');
        }
        let name = field.name();
        self.result = match name {
            "message" => write!(Escaping(self.out), "{value:?}"),
            _ => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                match self.ansi {
                    true => write!(self.out, "{ITALIC}{name}{RESET}{DIM}={RESET}{value:?}"),
                    false => write!(self.out, "{name}={value:?}"),
                }
            }
        };
    }
}

/// Shows the control characters a terminal could act on as escapes: ESC, BEL, BS, FF, DEL
/// and the C1 controls.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => {
                    write!(self.0, "\\x{:02x}", u32::from(c))?
                }
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The line of the event `event` logs, formatted as the subscriber would at `now`.
    fn line(ansi: bool, now: SystemTime, event: impl FnOnce()) -> String {
        type Shared = std::sync::Arc<std::sync::Mutex<String>>;
        struct Capture {
            ansi: bool,
            now: SystemTime,
            line: Shared,
        }
        impl Subscriber for Capture {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, event: &Event<'_>) {
                let mut line = self.line.lock().unwrap();
                format_line(&mut line, event.metadata(), self.ansi, self.now, |v| {
                    event.record(v)
                })
                .unwrap();
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let line = Shared::default();
        let capture = Capture {
            ansi,
            now,
            line: line.clone(),
        };
        tracing::subscriber::with_default(capture, event);
        let line = line.lock().unwrap().clone();
        line
    }

    fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    #[test]
    fn a_line_is_what_tracing_subscribers_default_format_printed() {
        let now = at(1_796_030_528, 954_823); // 2026-11-30T09:22:08.954823Z
        let name = "a";
        let got = line(
            false,
            now,
            || tracing::info!(target: "medic_io::runtime", service = %name, pid = 22956, "started /bin/sleep {}", 100),
        );
        assert_eq!(
            got,
            "2026-11-30T09:22:08.954823Z  INFO medic_io::runtime: started /bin/sleep 100 service=a pid=22956\n"
        );
        let got = line(
            false,
            now,
            || tracing::error!(target: "t", text = "quoted", r#type = 1, "bad \x1b[31m\u{85}\t"),
        );
        assert_eq!(
            got,
            "2026-11-30T09:22:08.954823Z ERROR t: bad \\x1b[31m\\u{85}\t text=\"quoted\" type=1\n"
        );
        let got = line(false, now, || tracing::debug!(target: "t", n = 1));
        assert_eq!(got, "2026-11-30T09:22:08.954823Z DEBUG t: n=1\n");
    }

    /// As tracing-subscriber 0.3.23 printed them on a terminal (`script -qc 'medic daemon …'`).
    #[test]
    fn on_a_terminal_the_line_is_styled_the_same_way() {
        let now = at(1_796_030_528, 954_823);
        let got = line(
            true,
            now,
            || tracing::info!(target: "medic_io::runtime", service = %"a", pid = 7139, "started"),
        );
        assert_eq!(
            got,
            "\x1b[2m2026-11-30T09:22:08.954823Z\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2mmedic_io::runtime\x1b[0m\x1b[2m:\x1b[0m started \x1b[3mservice\x1b[0m\x1b[2m=\x1b[0ma \x1b[3mpid\x1b[0m\x1b[2m=\x1b[0m7139\n"
        );
        let got = line(
            true,
            now,
            || tracing::error!(target: "t", text = "quoted", r#type = 1, "bad \x1b[31m\u{85}\t"),
        );
        assert_eq!(
            got,
            "\x1b[2m2026-11-30T09:22:08.954823Z\x1b[0m \x1b[31mERROR\x1b[0m \x1b[2mt\x1b[0m\x1b[2m:\x1b[0m bad \\x1b[31m\\u{85}\t \x1b[3mtext\x1b[0m\x1b[2m=\x1b[0m\"quoted\" \x1b[3mtype\x1b[0m\x1b[2m=\x1b[0m1\n"
        );
        let got = line(true, now, || tracing::warn!(target: "t", "w"));
        assert!(got.contains(" \x1b[33m WARN\x1b[0m "), "{got:?}");
    }
}
