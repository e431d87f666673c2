//! Timed jobs (DESIGN.md §11): `every` runs a oneshot again that long after its last success;
//! `restart-every` restarts a process that long after each start; `at` runs a oneshot (restarts
//! a process) at wall-clock times, only while the wall clock is trusted. None of them is an
//! intervention: no strike, no settle time; the history says what was planned, and what was
//! skipped and why.
//!
//! The kernel reads no clock: the adapter tells it the wall time ([`Input::WallClock`]) at
//! start and whenever the clock is stepped, and the kernel counts from there on its own
//! monotonic `now`.
//!
//! [`Input::WallClock`]: crate::Input::WallClock

use crate::config::AtTime;
use crate::health::Condition;
use crate::kernel::Kernel;
use crate::protocol::{Effect, ServiceId, WallClock};
use crate::timers::Timer;

/// A wall clock reading before this (2025-01-01 00:00 UTC) is a clock nobody has set: a
/// router without a battery boots in 1970. Without `clock-trusted-after`, the clock is trusted
/// from the first reading at or after it.
pub const TRUSTED_FROM_UNIX_MS: i64 = 1_735_689_600_000;

const MS_PER_DAY: i64 = 86_400_000;

impl Kernel {
    /// The wall clock was read (at start, or after a step).
    pub(crate) fn on_wall_clock(&mut self, wall: WallClock, out: &mut Vec<Effect>) {
        let stepped = self.wall.is_some();
        self.wall = Some((wall, self.now));
        if stepped {
            out.push(Effect::Notice {
                message: format!(
                    "wall clock now {} (UTC offset {}s): `at` times planned again",
                    wall.unix_ms, wall.utc_offset_s
                ),
            });
        }
        self.schedule_all_at();
    }

    /// The wall time now, if known.
    fn wall_now(&self) -> Option<i64> {
        let (wall, at) = self.wall?;
        let since = self.now.saturating_since(at).as_millis();
        Some(
            wall.unix_ms
                .saturating_add(i64::try_from(since).unwrap_or(i64::MAX)),
        )
    }

    /// Whether `at` times may fire: the clock has been read and is believed.
    pub(crate) fn clock_is_trusted(&self) -> bool {
        let Some(now) = self.wall_now() else {
            return false;
        };
        match &self.config.daemon.clock_trusted_after {
            Some(name) => self
                .by_name
                .get(name)
                .is_some_and(|id| self.slots[id.index()].healthy),
            None => now >= TRUSTED_FROM_UNIX_MS,
        }
    }

    /// After each step: when trust in the clock comes or goes, every `at` time is planned
    /// again (or dropped). Whether it came.
    pub(crate) fn follow_clock_trust(&mut self, out: &mut Vec<Effect>) -> bool {
        let trusted = self.clock_is_trusted();
        if trusted != self.clock_trusted {
            self.clock_trusted = trusted;
            // Worth a line when a service's readiness decides it (the NTP client synced, or
            // fell ill); a clock that reads right from the start is no news.
            let decided_by = self.config.daemon.clock_trusted_after.as_deref();
            if let Some(name) =
                decided_by.filter(|_| self.slots.iter().any(|s| !s.config.at.is_empty()))
            {
                out.push(Effect::Notice {
                    message: if trusted {
                        format!("wall clock trusted ({name} is ready): `at` times planned")
                    } else {
                        format!("wall clock not trusted ({name} is not ready): `at` times wait")
                    },
                });
            }
            self.schedule_all_at();
            return trusted;
        }
        false
    }

    /// The wall time now, if the clock is trusted.
    pub(crate) fn trusted_wall_now(&self) -> Option<i64> {
        self.wall_now().filter(|_| self.clock_is_trusted())
    }

    /// `catch-up`: each service with it whose last run was before an `at` time that has passed
    /// (the clock was untrusted, or no daemon ran, when it came) runs once now. Called when the
    /// clock is read or comes to be trusted, and at boot (after a resumed state): at the end
    /// of the step, once the services it started have counted as runs.
    ///
    /// The last run (`at_last`, kept in the state file) is when the service last started, or
    /// last fired, with a trusted clock; with none known, watching starts now and nothing is
    /// caught up. One more than a day ahead of the clock was taken on a wrong clock and is
    /// forgotten.
    pub(crate) fn catch_up_all(&mut self, out: &mut Vec<Effect>) {
        let (Some(now_wall), Some((wall, _))) = (self.trusted_wall_now(), self.wall) else {
            return;
        };
        for i in 0..self.slots.len() {
            let id = ServiceId(i as u32);
            let slot = &mut self.slots[i];
            if !slot.config.catch_up || slot.config.at.is_empty() || slot.removed {
                continue;
            }
            let last = match slot.at_last {
                Some(last) if last <= now_wall.saturating_add(MS_PER_DAY) => last,
                _ => {
                    slot.at_last = Some(now_wall);
                    continue;
                }
            };
            let jitter = jitter_ms(wall.host, &slot.config.name, slot.config.jitter.as_millis());
            let missed = slot
                .config
                .at
                .iter()
                .filter_map(|at| next_occurrence(*at, last, wall.utc_offset_s, jitter))
                .filter(|t| *t <= now_wall)
                .min();
            let Some(missed) = missed else { continue };
            let label = format!("catch-up of {}", at_label(missed, wall.utc_offset_s));
            if self.planned(id, label, out) != Planned::NotNow {
                self.slots[i].at_last = Some(now_wall);
                self.schedule_at(id);
            }
        }
    }

    /// Plans the next `at` time of every service that has them.
    pub(crate) fn schedule_all_at(&mut self) {
        for i in 0..self.slots.len() {
            if !self.slots[i].config.at.is_empty() || self.slots[i].at_next.is_some() {
                self.schedule_at(ServiceId(i as u32));
            }
        }
    }

    /// Plans the next `at` time of `id`: the earliest of its times after now (and after the
    /// last one that fired), moved by its jitter; none while the clock is not trusted.
    fn schedule_at(&mut self, id: ServiceId) {
        let trusted = self.clock_is_trusted();
        let (wall, now_wall) = match (self.wall, self.wall_now()) {
            (Some((wall, _)), Some(now)) if trusted => (wall, now),
            _ => {
                let slot = &mut self.slots[id.index()];
                slot.at_next = None;
                self.timers.clear(&mut slot.timers, id, Timer::At);
                return;
            }
        };
        let slot = &self.slots[id.index()];
        let jitter = jitter_ms(wall.host, &slot.config.name, slot.config.jitter.as_millis());
        let after = slot
            .at_last
            .map_or(now_wall - 1, |last| last.max(now_wall - 1));
        let next = slot
            .config
            .at
            .iter()
            .filter_map(|at| next_occurrence(*at, after, wall.utc_offset_s, jitter))
            .min();
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        slot.at_next = next;
        match next {
            Some(t) => {
                let wait = u64::try_from(t - now_wall).unwrap_or(0);
                let at = now.saturating_add(core::time::Duration::from_millis(wait));
                self.timers.set(&mut slot.timers, id, Timer::At, at);
            }
            None => self.timers.clear(&mut slot.timers, id, Timer::At),
        }
    }

    /// An `at` time of `id` has come.
    pub(crate) fn on_at(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let slot = &mut self.slots[id.index()];
        let Some(fired) = slot.at_next.take() else {
            return;
        };
        slot.at_last = Some(fired);
        let offset = self.wall.map_or(0, |(w, _)| w.utc_offset_s);
        self.planned(id, at_label(fired, offset), out);
        self.schedule_at(id);
    }

    /// The `every` or `restart-every` timer of `id` is due.
    pub(crate) fn on_periodic(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let slot = &self.slots[id.index()];
        let period = match (slot.config.every, slot.config.restart_every) {
            (Some(every), _) if slot.is_oneshot() => every,
            (_, Some(every)) if !slot.is_oneshot() => every,
            _ => return, // the definition changed meanwhile
        };
        let key = if slot.is_oneshot() {
            "every"
        } else {
            "restart-every"
        };
        let label = format!("{key} {}", humantime::format_duration(period));
        if self.planned(id, label, out) == Planned::Skipped {
            let at = self.now + period;
            let slot = &mut self.slots[id.index()];
            self.timers.set(&mut slot.timers, id, Timer::Periodic, at);
        }
    }

    /// A planned run (a oneshot) or restart (a process) of `id`, as `label` says: made, skipped
    /// (with the reason in the history), or not for now (stopped, failed: the rules own it).
    fn planned(&mut self, id: ServiceId, label: String, out: &mut Vec<Effect>) -> Planned {
        let slot = &self.slots[id.index()];
        if !slot.wanted || self.shutting_down || slot.removed {
            return Planned::NotNow; // stopped: its next start arms the timer again
        }
        let oneshot = slot.is_oneshot();
        let what = if oneshot {
            "run again"
        } else {
            "planned restart"
        };
        let skip = if slot.unhealthy_needs > 0 {
            Some(format!("needs {} down", self.unhealthy_need_names(id)))
        } else if oneshot && slot.proc.is_some() {
            Some("the previous run is still going".to_string())
        } else if oneshot && !slot.oneshot_done {
            return Planned::NotNow; // failed or stopped: its next success re-arms `every`
        } else if !oneshot && slot.proc.is_none() {
            return Planned::NotNow; // not running: its next start re-arms `restart-every`
        } else if slot.condition != Condition::Ready {
            Some(format!("it is {}", slot.condition.name()))
        } else {
            None
        };
        if let Some(why) = skip {
            self.note(id, format!("{label}: {what} skipped: {why}"), out);
            return Planned::Skipped;
        }
        self.note(id, format!("{label}: {what}"), out);
        self.slots[id.index()].planned = true;
        if oneshot {
            // Up to now it was done; `act` starts the next run.
            self.slots[id.index()].oneshot_done = false;
            self.mark(id);
        } else {
            self.restart(id);
        }
        Planned::Made
    }
}

/// What became of a planned run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Planned {
    Made,
    Skipped,
    NotNow,
}

/// `at HH:MM` of a wall time, in local time.
fn at_label(unix_ms: i64, utc_offset_s: i32) -> String {
    let local = unix_ms + i64::from(utc_offset_s) * 1000;
    let minute = local.rem_euclid(MS_PER_DAY) / 60_000;
    format!("at {:02}:{:02}", minute / 60, minute % 60)
}

/// The part of `jitter_ms` this service takes on this host: fixed, never random.
fn jitter_ms(host: u64, name: &str, jitter_ms: u128) -> i64 {
    if jitter_ms == 0 {
        return 0;
    }
    let h = crate::trace::fnv1a(host, name.as_bytes());
    let span = u64::try_from(jitter_ms).unwrap_or(u64::MAX);
    i64::try_from(h % span).unwrap_or(0)
}

/// The first wall time (Unix ms) after `after` at which `at` falls, in local time `offset_s`
/// from UTC, moved later by `jitter`.
pub(crate) fn next_occurrence(at: AtTime, after: i64, offset_s: i32, jitter: i64) -> Option<i64> {
    let offset = i64::from(offset_s) * 1000;
    // The local day of `after`, minus one: the jitter may carry yesterday's time past `after`.
    let first_day = (after + offset - jitter).div_euclid(MS_PER_DAY) - 1;
    (first_day..first_day + 9).find_map(|day| {
        // 1970-01-01 was a Thursday (3, Monday being 0).
        let weekday = (day + 3).rem_euclid(7) as u8;
        if at.weekday.is_some_and(|d| d != weekday) {
            return None;
        }
        let t = day * MS_PER_DAY + i64::from(at.minute) * 60_000 - offset + jitter;
        (t > after).then_some(t)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    // 2026-11-30 (a Monday) 00:00 UTC.
    const MONDAY: i64 = 1_795_996_800_000;

    #[test]
    fn the_next_daily_time_is_today_or_tomorrow() {
        let three = AtTime::parse("03:00").unwrap();
        assert_eq!(
            next_occurrence(three, MONDAY + H, 0, 0),
            Some(MONDAY + 3 * H)
        );
        assert_eq!(
            next_occurrence(three, MONDAY + 3 * H, 0, 0),
            Some(MONDAY + 27 * H)
        );
        // In UTC+2, 03:00 local is 01:00 UTC.
        assert_eq!(next_occurrence(three, MONDAY, 7200, 0), Some(MONDAY + H));
        // West of Greenwich, 03:00 local on Monday is Monday 08:00 UTC (UTC-5).
        assert_eq!(
            next_occurrence(three, MONDAY, -5 * 3600, 0),
            Some(MONDAY + 8 * H)
        );
    }

    #[test]
    fn a_weekly_time_waits_for_its_day() {
        let sunday = AtTime::parse("Sun 04:30").unwrap();
        let next = next_occurrence(sunday, MONDAY, 0, 0).unwrap();
        assert_eq!(next, MONDAY + 6 * 24 * H + 4 * H + H / 2);
        assert_eq!(AtTime::parse("mon 00:00").unwrap().weekday, Some(0));
        assert_eq!(
            next_occurrence(AtTime::parse("Mon 00:00").unwrap(), MONDAY, 0, 0),
            Some(MONDAY + 7 * 24 * H)
        );
    }

    #[test]
    fn jitter_is_fixed_per_host_and_service_and_within_its_span() {
        let a = jitter_ms(1, "dyndns", 600_000);
        assert_eq!(
            a, 263_962,
            "FNV-1a of the name, seeded with the host, modulo the span"
        );
        assert_eq!(jitter_ms(2, "dyndns", 600_000), 348_301);
        assert!((0..600_000).contains(&a));
        assert_ne!(a, jitter_ms(2, "dyndns", 600_000));
        assert_eq!(jitter_ms(1, "dyndns", 0), 0);
        let three = AtTime::parse("03:00").unwrap();
        assert_eq!(
            next_occurrence(three, MONDAY + 3 * H, 0, 60_000),
            Some(MONDAY + 3 * H + 60_000)
        );
    }

    #[test]
    fn bad_times_are_refused() {
        for bad in [
            "3",
            "24:00",
            "03:60",
            "3:5",
            "Sun",
            "Sunday 03:00",
            "03:00:00",
            "-1:00",
        ] {
            assert_eq!(AtTime::parse(bad), None, "{bad}");
        }
        assert_eq!(AtTime::parse("3:05").unwrap().minute, 185);
        assert_eq!(AtTime::parse("Sun 04:30").unwrap().to_string(), "Sun 04:30");
    }
}
