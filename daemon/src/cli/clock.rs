//! Times for people: the daemon counts in milliseconds since it started (`at_ms`); the command
//! line shows them on the wall clock, in local time (ISO 8601, `2024-05-01T14:02:11.123`), or
//! as the daemon counts them with `--relative` (`613.247s`). JSON gets RFC 3339 in UTC.
//!
//! The conversion uses the daemon's two clocks read at the same moment ([`DaemonInfo`]): a time
//! `at_ms` was `now_unix_ms - (now_ms - at_ms)` as the wall clock reads now, so a router whose
//! clock NTP set after boot still shows the right times. Local time comes from the C library
//! (`localtime_r`: `TZ`, else `/etc/localtime`), so medic needs no time-zone crate; without
//! zone data it is UTC.

use std::time::{Duration, UNIX_EPOCH};

use medic_io::control::DaemonInfo;

/// How to show the daemon's times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// The daemon's clocks, when it told them (an older daemon does not).
    anchor: Option<(u64, u64)>,
    /// Show `613.247s` rather than the wall clock.
    relative: bool,
}

impl Clock {
    /// A clock for the daemon described by `info` (`None`: it did not say; times stay relative).
    pub fn new(info: Option<&DaemonInfo>, relative: bool) -> Clock {
        Clock {
            anchor: info.map(|i| (i.now_ms, i.now_unix_ms)),
            relative,
        }
    }

    /// Whether times are shown on the wall clock (the daemon told its clocks, and `--relative`
    /// was not asked for).
    pub fn is_wall(&self) -> bool {
        self.anchor.is_some() && !self.relative
    }

    /// The daemon's monotonic time when it answered, in milliseconds since it started.
    pub fn now_ms(&self) -> Option<u64> {
        self.anchor.map(|a| a.0)
    }

    /// Milliseconds since the UNIX epoch of the daemon's time `at_ms`.
    pub fn unix_ms(&self, at_ms: u64) -> Option<u64> {
        let (now_ms, now_unix) = self.anchor?;
        Some(match at_ms <= now_ms {
            true => now_unix.saturating_sub(now_ms - at_ms),
            false => now_unix.saturating_add(at_ms - now_ms),
        })
    }

    /// `at_ms` for a table: local wall-clock time, or `613.247s` when relative or unknown.
    pub fn show(&self, at_ms: u64) -> String {
        match self.unix_ms(at_ms).filter(|_| !self.relative) {
            Some(unix) => local_iso8601(unix),
            None => medic_kernel::Instant::from_millis(at_ms).to_string(),
        }
    }

    /// `at_ms` as RFC 3339 in UTC with milliseconds, for JSON; `None` when the daemon did not
    /// tell its clocks.
    pub fn rfc3339(&self, at_ms: u64) -> Option<String> {
        let unix = self.unix_ms(at_ms)?;
        let t = UNIX_EPOCH + Duration::from_millis(unix);
        Some(humantime::format_rfc3339_millis(t).to_string())
    }

    /// How far `at_ms` is from the daemon's now: `3m07s ago`, `in 2m40s`, `now`.
    pub fn relative_to_now(&self, at_ms: u64) -> Option<String> {
        let now = self.now_ms()?;
        Some(match at_ms.cmp(&now) {
            std::cmp::Ordering::Less => format!("{} ago", super::format::human_ms(now - at_ms)),
            std::cmp::Ordering::Greater => format!("in {}", super::format::human_ms(at_ms - now)),
            std::cmp::Ordering::Equal => "now".to_string(),
        })
    }

    /// A history note with the daemon's instants in it (`backing off until 12.000s after 3
    /// strikes`) with each shown as [`Clock::show`] does.
    pub fn note(&self, note: &str) -> String {
        if self.relative || self.anchor.is_none() {
            return note.to_string();
        }
        let mut out = String::with_capacity(note.len());
        let mut rest = note;
        while let Some(i) = rest.find("until ") {
            let (head, tail) = rest.split_at(i + "until ".len());
            out.push_str(head);
            match instant_prefix(tail) {
                Some((ms, len)) => {
                    out.push_str(&self.show(ms));
                    rest = &tail[len..];
                }
                None => rest = tail,
            }
        }
        out.push_str(rest);
        out
    }
}

/// `12.345s…` at the start of `text`: the milliseconds and the length of the instant.
fn instant_prefix(text: &str) -> Option<(u64, usize)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let rest = text[digits..].strip_prefix('.')?;
    let millis = rest
        .get(..3)
        .filter(|m| m.bytes().all(|b| b.is_ascii_digit()))?;
    rest[3..].strip_prefix('s')?;
    let secs: u64 = text[..digits].parse().ok()?;
    let ms = secs.checked_mul(1000)?.checked_add(millis.parse().ok()?)?;
    Some((ms, digits + 1 + 3 + 1))
}

/// The local time of `unix_ms` as `2024-05-01T14:02:11.123`.
pub fn local_iso8601(unix_ms: u64) -> String {
    match local_tm(unix_ms) {
        Some(tm) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}",
            i64::from(tm.tm_year) + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            unix_ms % 1000
        ),
        None => {
            let t = UNIX_EPOCH + Duration::from_millis(unix_ms);
            humantime::format_rfc3339_millis(t).to_string()
        }
    }
}

/// The local zone's offset at `unix_ms` as `+02:00` (`Z` for UTC).
pub fn local_offset(unix_ms: u64) -> String {
    let Some(tm) = local_tm(unix_ms) else {
        return "Z".to_string();
    };
    let off = tm.tm_gmtoff;
    if off == 0 {
        return "Z".to_string();
    }
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.unsigned_abs();
    format!("{sign}{:02}:{:02}", off / 3600, off % 3600 / 60)
}

fn local_tm(unix_ms: u64) -> Option<libc::tm> {
    let secs = libc::time_t::try_from(unix_ms / 1000).ok()?;
    // SAFETY: localtime_r writes only into `tm`, which we own; tzset reads the environment
    // and the zone files, once, before any thread of ours could change them.
    unsafe {
        static TZSET: std::sync::Once = std::sync::Once::new();
        TZSET.call_once(|| tzset());
        let mut tm: libc::tm = std::mem::zeroed();
        (!libc::localtime_r(&secs, &mut tm).is_null()).then_some(tm)
    }
}

extern "C" {
    fn tzset();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(now_ms: u64, now_unix_ms: u64) -> DaemonInfo {
        DaemonInfo {
            pid: 1,
            version: "0".into(),
            config_path: "/etc/medic.toml".into(),
            state_dir: "/run/medic".into(),
            now_ms,
            now_unix_ms,
        }
    }

    #[test]
    fn daemon_times_become_wall_clock_times() {
        // The daemon has run 10 s; the wall clock says 2024-05-01T12:00:10Z.
        let clock = Clock::new(Some(&info(10_000, 1_714_564_810_000)), false);
        assert_eq!(
            clock.rfc3339(1_500).as_deref(),
            Some("2024-05-01T12:00:01.500Z")
        );
        assert_eq!(
            clock.rfc3339(12_000).as_deref(),
            Some("2024-05-01T12:00:12.000Z")
        );
        assert_eq!(clock.relative_to_now(7_000).as_deref(), Some("3s ago"));
        assert_eq!(clock.relative_to_now(70_000).as_deref(), Some("in 1m00s"));
        let relative = Clock::new(Some(&info(10_000, 1_714_564_810_000)), true);
        assert_eq!(relative.show(1_500), "1.500s");
        assert_eq!(
            relative.note("backing off until 12.000s"),
            "backing off until 12.000s"
        );
        let unknown = Clock::new(None, false);
        assert_eq!(unknown.show(2_592_000_123), "2592000.123s");
        assert_eq!(unknown.rfc3339(1), None);
    }

    #[test]
    fn notes_get_wall_clock_instants() {
        let clock = Clock::new(Some(&info(10_000, 1_714_564_810_000)), false);
        let note = clock.note("exit code 1; backing off until 12.000s after 3 strikes");
        let shown = clock.show(12_000);
        assert_eq!(
            note,
            format!("exit code 1; backing off until {shown} after 3 strikes")
        );
        assert!(shown.ends_with(":12.000"), "{shown}");
        assert_eq!(clock.note("until tomorrow"), "until tomorrow");
        assert_eq!(clock.note("until 5.1s"), "until 5.1s");
    }
}
