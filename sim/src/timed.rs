//! Property 10 (DESIGN §11): a timed job never has two runs at once (property 4 holds that for
//! every service), runs at most once per period, and runs when it is due:
//!
//! * **`every`** (a oneshot): after a run the world saw succeed, the next spawn comes `every`
//!   later at the earliest.
//! * **`at`** (a oneshot's next run, a process's planned restart): only at one of its
//!   wall-clock times (up to its `jitter` later, plus [`AT_SLACK`]), and only while the world's
//!   wall clock is trusted: the wall clock starts in 1970 on a router without a battery clock
//!   and is stepped (NTP); times skipped by a step are not run, except once at the step with
//!   `catch-up`. Each time allows one run.
//! * **`restart-every`** (a process): a planned restart (the stop of a process nobody else
//!   asked to stop, in a step driven by time: a tick or a clock reading) comes `restart-every`
//!   after the process's spawn at the earliest; and when it is due while the process is ready,
//!   its needs healthy, the restart comes then (the kernel skips it, and waits a period more,
//!   only while it is not ready or a need is down). That a planned restart is no strike is
//!   property "right heal"'s: an intervention on a service the world shows healthy is caught
//!   there.
//!
//! Judged from what the world saw (its wall clock, its processes) and the inputs, with the
//! config as written (the simulator's graph), not from the kernel's record. A run sooner is
//! excused only by something that may rightly start it again: an operator command, a new
//! config, a watched file, new outputs, a render's answer, or anything happening to one of its
//! needs (a need that failed may have stopped it, with `stop-when-needs-fail`, and its recovery
//! starts it).

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use medic_kernel::config::{AtTime, Kind, ServiceConfig};
use medic_kernel::{
    Condition, Effect, Input, Instant, JobId, Kernel, Operator, ServiceId, SignalTarget, WallClock,
};

use crate::check::{Checker, Property};
use crate::graph::Graph;
use crate::world::World;

/// A wall clock before this (2025-01-01 UTC, Unix ms) has not been set: `at` times wait.
pub const TRUSTED_FROM_UNIX_MS: i64 = 1_735_689_600_000;

/// How late after its time (and jitter) an `at` run may still start: a render before the
/// start, a spawn's answer.
pub const AT_SLACK: Duration = Duration::from_secs(1);

const MS_PER_DAY: i64 = 86_400_000;

/// What the config (as written) says of one service's timing.
#[derive(Clone, Debug)]
struct Timing {
    every: Option<Duration>,
    restart_every: Option<Duration>,
    at: Vec<AtTime>,
    jitter: Duration,
    catch_up: bool,
}

/// What the checker remembers of one timed oneshot.
#[derive(Clone, Debug, Default)]
struct Track {
    /// The last run that succeeded, and when.
    succeeded_at: Option<Instant>,
    /// Since then, something may rightly have started it again.
    excused: bool,
}

/// One service's `at` times as the world's clock passes them.
#[derive(Clone, Debug, Default)]
struct AtTrack {
    /// The next of its times (wall ms, without jitter) still to pass; `None` while the clock
    /// is not trusted.
    next: Option<i64>,
    /// A run (or planned restart) may start until then.
    permit_until: Option<Instant>,
}

/// A process with `restart-every`, since its spawn.
#[derive(Clone, Copy, Debug)]
struct Periodic {
    job: JobId,
    spawned_at: Instant,
    /// When its planned restart is due.
    due: Instant,
    /// Due now, it would be restarted (ready, needs healthy, wanted), as of the step before
    /// the one that judges it ([`TimedJobs::before_step`]).
    eligible: bool,
}

/// The property 10 checker.
#[derive(Clone, Debug, Default)]
pub struct TimedJobs {
    timing: BTreeMap<String, Timing>,
    /// Every service's definition as written now, and the names whose definition the last
    /// [`TimedJobs::set_graph`] left as it was: the kernel keeps their plans across the
    /// replacement (an `at` run drawn before it still comes), so the checker keeps what it
    /// knows of them.
    defs: BTreeMap<String, ServiceConfig>,
    unchanged: BTreeSet<String>,
    tracks: BTreeMap<ServiceId, Track>,
    /// Services whose current run has been sent a stop signal (its exit, even 0, is a stop).
    signaled: BTreeSet<ServiceId>,
    /// The job of each service's latest spawn: only its exit is the run's end.
    current: BTreeMap<ServiceId, JobId>,
    at: BTreeMap<ServiceId, AtTrack>,
    /// When the next `at` time of any service passes (monotonic): nothing to scan before.
    at_wake: Option<Instant>,
    periodic: BTreeMap<ServiceId, Periodic>,
    /// The earliest `due` in `periodic`: nothing to look at before.
    next_due: Option<Instant>,
    shutting_down: bool,
    /// Reused per step: the services touched, and those acted on (heal, operator, file).
    touched: Vec<ServiceId>,
    acted: Vec<ServiceId>,
}

impl TimedJobs {
    /// A checker for the config of `graph`.
    pub fn new(graph: &Graph) -> TimedJobs {
        let mut t = TimedJobs::default();
        t.set_graph(graph);
        t
    }

    /// The config as written now (after a replacement).
    pub fn set_graph(&mut self, graph: &Graph) {
        let defs: BTreeMap<String, ServiceConfig> = graph
            .services
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        self.unchanged = defs
            .iter()
            .filter(|(name, def)| self.defs.get(*name) == Some(*def))
            .map(|(name, _)| name.clone())
            .collect();
        self.defs = defs;
        self.timing = graph
            .services
            .iter()
            .filter(|s| s.every.is_some() || s.restart_every.is_some() || !s.at.is_empty())
            .map(|s| {
                let t = Timing {
                    every: s.every.filter(|_| matches!(s.kind, Kind::Oneshot { .. })),
                    restart_every: s
                        .restart_every
                        .filter(|_| matches!(s.kind, Kind::Process { .. })),
                    at: s.at.clone(),
                    jitter: s.jitter,
                    catch_up: s.catch_up,
                };
                (s.name.clone(), t)
            })
            .collect();
    }

    fn timing(&self, k: &Kernel, id: ServiceId) -> Option<&Timing> {
        self.timing.get(k.status(id)?.name())
    }

    /// Checks one step (after the world has carried out `effects`); `wall` is the world's
    /// wall clock now.
    #[allow(clippy::too_many_arguments)]
    pub fn after_step(
        &mut self,
        now: Instant,
        wall: WallClock,
        input: &Input,
        k: &Kernel,
        effects: &[Effect],
        world: &World,
        checker: &mut Checker,
    ) {
        if matches!(input, Input::Operator(Operator::Shutdown)) {
            self.shutting_down = true;
        }
        if matches!(
            input,
            Input::Operator(_)
                | Input::ReplaceConfig { .. }
                | Input::FileChanged { .. }
                | Input::SetOutputs { .. }
                | Input::Devices(_)
        ) {
            self.tracks.values_mut().for_each(|t| t.excused = true);
            if matches!(input, Input::ReplaceConfig { .. }) {
                // A slot may hold another service now, and a changed definition is planned
                // afresh: start afresh, except for a service whose definition is unchanged (it
                // keeps its slot, and the kernel its plans: seed 5356, an `at` run drawn before
                // a replacement came after it, within its jitter).
                let unchanged = &self.unchanged;
                let kept = |id: &ServiceId| {
                    k.status(*id).is_some_and(|v| {
                        unchanged.contains(v.name()) && k.lookup(v.name()) == Some(*id)
                    })
                };
                self.tracks.retain(|id, _| kept(id));
                self.at.retain(|id, _| kept(id));
                self.periodic.retain(|id, _| kept(id));
                // Plan every `at` time afresh at once (none passed is owed a run).
                self.at_wake = Some(Instant::ZERO);
            }
        }
        if self.timing.is_empty() {
            return; // no timed job in the config: nothing to judge
        }
        self.follow_wall(now, wall, input, k);
        // What happened to which service in this step (a handful: a small sorted vector).
        let mut touched = std::mem::take(&mut self.touched);
        touched.clear();
        if let Some((service, _)) = input.job() {
            touched.push(service);
        }
        if let Input::LinkChanged { ifname, .. } = input {
            for v in k.views() {
                if matches!(&v.config().kind, Kind::Interface { ifname: i, .. } if i == ifname) {
                    touched.push(v.id());
                }
            }
        }
        // A heal, an operator's or a watched file's action on a service: not a planned run.
        let mut acted = std::mem::take(&mut self.acted);
        acted.clear();
        for e in effects {
            if let Some(service) = effect_service(e) {
                touched.push(service);
            }
            if let Effect::Event { service, record } = e {
                if record.heal.is_some() {
                    acted.push(*service);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let touched_any = |ids: &[ServiceId]| ids.iter().any(|n| touched.binary_search(n).is_ok());
        if !touched.is_empty() {
            for (id, t) in self.tracks.iter_mut() {
                let Some(v) = k.status(*id) else { continue };
                if touched_any(v.needs()) {
                    t.excused = true;
                }
            }
        }
        let timed_step = matches!(input, Input::Tick | Input::WallClock(_));
        let mut restarting: BTreeSet<ServiceId> = BTreeSet::new();
        for e in effects {
            let (service, job) = match e {
                Effect::Signal {
                    service,
                    job,
                    to: SignalTarget::Group,
                    ..
                }
                | Effect::Kill { service, job } => (*service, *job),
                _ => continue,
            };
            if !self.signaled.insert(service) || self.current.get(&service) != Some(&job) {
                continue; // not the first stop of its current process
            }
            restarting.insert(service);
            // A stop for its needs (`stop-when-needs-fail`) is theirs, not a planned restart,
            // which the kernel makes only while every need is healthy.
            let needs_touched = k.status(service).is_some_and(|v| {
                touched_any(v.needs())
                    || v.needs()
                        .iter()
                        .any(|n| k.status(*n).is_none_or(|nv| !nv.healthy()))
            });
            if timed_step && !acted.contains(&service) && !needs_touched && !self.shutting_down {
                self.judge_planned_stop(now, wall, k, service, checker);
            }
        }
        self.touched = touched;
        self.acted = acted;
        self.judge_periodic_due(now, k, world, &restarting, checker);
        for e in effects {
            let Effect::Spawn { service, job, .. } = e else {
                continue;
            };
            self.signaled.remove(service);
            self.current.insert(*service, *job);
            let Some(timing) = self.timing(k, *service).cloned() else {
                continue;
            };
            if let Some(every) = timing.restart_every {
                self.periodic.insert(
                    *service,
                    Periodic {
                        job: *job,
                        spawned_at: now,
                        due: now + every,
                        eligible: false,
                    },
                );
            }
            let t = self.tracks.entry(*service).or_default();
            let (succeeded_at, excused) = (t.succeeded_at.take(), t.excused);
            let judged = timing.every.is_some() || !timing.at.is_empty();
            if let (Some(at), false, true) = (succeeded_at, excused, judged) {
                let by_every = timing.every.is_some_and(|every| now >= at + every);
                let by_at = !timing.at.is_empty() && self.take_permit(now, *service);
                if !by_every && !by_at {
                    let name = k.name(*service).to_string();
                    let what = match timing.every {
                        Some(every) if timing.at.is_empty() => format!(
                            "ran again {:?} after its last success, `every` is {every:?}",
                            now.saturating_since(at),
                        ),
                        _ => format!(
                            "ran again {:?} after its last success, at wall time {} ({}), \
                             not at one of its `at` times {} (jitter {:?}){}",
                            now.saturating_since(at),
                            wall.unix_ms,
                            trust_word(wall),
                            at_list(&timing.at),
                            timing.jitter,
                            timing
                                .every
                                .map(|e| format!(", nor `every` {e:?} after it"))
                                .unwrap_or_default()
                        ),
                    };
                    checker.report(Property::Timed, Some(*service), &name, now, what);
                }
            }
        }
        if let Input::Exited {
            service,
            status,
            job,
        } = input
        {
            let this_run = self.current.get(service) == Some(job);
            let timed = self
                .timing(k, *service)
                .is_some_and(|t| t.every.is_some() || !t.at.is_empty());
            if timed && this_run && status.success() && !self.signaled.contains(service) {
                self.tracks.insert(
                    *service,
                    Track {
                        succeeded_at: Some(now),
                        excused: false,
                    },
                );
            }
        }
        self.next_due = self.periodic.values().map(|p| p.due).min();
    }

    /// Before the step at `now`: the processes whose planned restart is due by then note
    /// whether it would be made (the state the kernel decides on).
    pub fn before_step(&mut self, now: Instant, k: &Kernel, world: &World) {
        if self.next_due.is_none_or(|d| now < d) {
            return;
        }
        let due: Vec<(ServiceId, JobId)> = self
            .periodic
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(id, p)| (*id, p.job))
            .collect();
        for (id, job) in due {
            let e = self.eligible(k, world, id, job);
            if let Some(p) = self.periodic.get_mut(&id) {
                p.eligible = e;
            }
        }
    }

    /// The world's wall clock at this step: `at` times that passed while it was trusted give a
    /// permit; a clock reading (a step) skips what it jumped over, and with `catch-up` gives
    /// one permit now.
    fn follow_wall(&mut self, now: Instant, wall: WallClock, input: &Input, k: &Kernel) {
        let stepped = matches!(input, Input::WallClock(_));
        if !stepped && self.at_wake.is_none_or(|w| now < w) {
            return;
        }
        let trusted = wall.unix_ms >= TRUSTED_FROM_UNIX_MS;
        let ids: Vec<(ServiceId, Timing)> = k
            .views()
            .filter_map(|v| Some((v.id(), self.timing.get(v.name())?.clone())))
            .filter(|(_, t)| !t.at.is_empty())
            .collect();
        let mut wake: Option<Instant> = None;
        for (id, timing) in ids {
            let track = self.at.entry(id).or_default();
            if !trusted {
                track.next = None;
                continue;
            }
            match track.next {
                Some(next) if !stepped && next <= wall.unix_ms => {
                    // Its time passed: one run, until its jitter and the slack are over.
                    let until_ms =
                        next + timing.jitter.as_millis() as i64 + AT_SLACK.as_millis() as i64
                            - wall.unix_ms;
                    let until = now + Duration::from_millis(until_ms.max(0) as u64);
                    track.permit_until = Some(until);
                }
                _ => {}
            }
            if stepped || track.next.is_none_or(|n| n <= wall.unix_ms) {
                // After a clock reading, a time whose jitter window is still open is still
                // run (the kernel plans the jittered time): the scan starts a jitter back.
                let from = if stepped || track.next.is_none() {
                    wall.unix_ms - timing.jitter.as_millis() as i64
                } else {
                    wall.unix_ms
                };
                track.next = next_time(&timing.at, from, wall.utc_offset_s);
            }
            if stepped && timing.catch_up {
                track.permit_until = Some(now + AT_SLACK);
            }
            if let Some(next) = track.next {
                let in_ms = (next - wall.unix_ms).max(0) as u64;
                let at = now + Duration::from_millis(in_ms);
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        self.at_wake = wake;
    }

    /// Uses the `at` permit of `id`, if one is valid now.
    fn take_permit(&mut self, now: Instant, id: ServiceId) -> bool {
        let Some(track) = self.at.get_mut(&id) else {
            return false;
        };
        track.permit_until.take().is_some_and(|until| now <= until)
    }

    /// The first stop of a process, in a step driven by time, that no heal, operator, file or
    /// need asked for: a planned restart, due by `restart-every` or an `at` time.
    fn judge_planned_stop(
        &mut self,
        now: Instant,
        wall: WallClock,
        k: &Kernel,
        id: ServiceId,
        checker: &mut Checker,
    ) {
        let Some(timing) = self.timing(k, id).cloned() else {
            return;
        };
        if timing.restart_every.is_none() && timing.at.is_empty() {
            return;
        }
        let periodic = self.periodic.remove(&id);
        let by_period = match (timing.restart_every, periodic) {
            (Some(every), Some(p)) => now >= p.spawned_at + every,
            // Its spawn was before the checker knew it (a config replacement): not judged.
            (Some(_), None) => true,
            _ => false,
        };
        // A restart due by its period leaves an `at` permit for the `at` run (the kernel plans
        // the two apart: seed 5356).
        let by_at = !by_period && !timing.at.is_empty() && self.take_permit(now, id);
        if by_period || by_at {
            return;
        }
        let name = k.name(id).to_string();
        let what = match (timing.restart_every, periodic) {
            (Some(every), Some(p)) if timing.at.is_empty() => format!(
                "planned restart {:?} after its spawn, `restart-every` is {every:?}",
                now.saturating_since(p.spawned_at)
            ),
            _ => format!(
                "planned restart at wall time {} ({}), not at one of its `at` times {} \
                 (jitter {:?})",
                wall.unix_ms,
                trust_word(wall),
                at_list(&timing.at),
                timing.jitter
            ),
        };
        checker.report(Property::Timed, Some(id), &name, now, what);
    }

    /// `restart-every` due by `now`: a process that was, and still is, ready with its needs
    /// healthy must be restarting; otherwise the kernel waits a period more.
    fn judge_periodic_due(
        &mut self,
        now: Instant,
        k: &Kernel,
        world: &World,
        restarting: &BTreeSet<ServiceId>,
        checker: &mut Checker,
    ) {
        if self.next_due.is_none_or(|d| now < d) {
            return;
        }
        let due: Vec<ServiceId> = self
            .periodic
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(p) = self.periodic.get(&id).copied() else {
                continue;
            };
            let under_way =
                restarting.contains(&id) || k.status(id).is_some_and(|v| v.is_stopping());
            if under_way {
                self.periodic.remove(&id);
                continue;
            }
            if p.eligible && self.eligible(k, world, id, p.job) {
                let name = k.name(id).to_string();
                let what = format!(
                    "`restart-every` due at {} (spawned at {}), ready with its needs healthy \
                     all along, and not restarted by {now}",
                    p.due, p.spawned_at
                );
                checker.report(Property::Timed, Some(id), &name, now, what);
                self.periodic.remove(&id);
                continue;
            }
            let every = self
                .timing(k, id)
                .and_then(|t| t.restart_every)
                .unwrap_or(Duration::from_secs(3600));
            if let Some(p) = self.periodic.get_mut(&id) {
                p.due = p.due + every;
            }
        }
    }

    /// Whether a planned restart of `id`'s process `job` would be made now (the kernel's rule:
    /// wanted, ready, no need down, not stopping), with the process alive in the world.
    fn eligible(&self, k: &Kernel, world: &World, id: ServiceId, job: JobId) -> bool {
        let Some(v) = k.status(id) else { return false };
        !self.shutting_down
            && v.wanted()
            && !v.is_stopping()
            && v.job() == Some(job)
            && *v.condition() == Condition::Ready
            && v.needs()
                .iter()
                .all(|n| k.status(*n).is_some_and(|nv| nv.healthy()))
            && world.running_job(job)
    }
}

/// The first of `times` (local, `offset_s` from UTC) strictly after `after` (wall ms), without
/// jitter; the reference model's own reckoning (1970-01-01 was a Thursday).
fn next_time(times: &[AtTime], after: i64, offset_s: i32) -> Option<i64> {
    let offset = i64::from(offset_s) * 1000;
    let first_day = (after + offset).div_euclid(MS_PER_DAY);
    times
        .iter()
        .filter_map(|at| {
            (first_day..first_day + 8).find_map(|day| {
                let weekday = (day + 3).rem_euclid(7) as u8;
                if at.weekday.is_some_and(|d| d != weekday) {
                    return None;
                }
                let t = day * MS_PER_DAY + i64::from(at.minute) * 60_000 - offset;
                (t > after).then_some(t)
            })
        })
        .min()
}

fn trust_word(wall: WallClock) -> &'static str {
    if wall.unix_ms >= TRUSTED_FROM_UNIX_MS {
        "trusted"
    } else {
        "not trusted"
    }
}

fn at_list(times: &[AtTime]) -> String {
    let t: Vec<String> = times.iter().map(|a| a.to_string()).collect();
    t.join(", ")
}

/// The service an effect is about, if any.
fn effect_service(e: &Effect) -> Option<ServiceId> {
    match e {
        Effect::Spawn { service, .. }
        | Effect::Signal { service, .. }
        | Effect::Kill { service, .. }
        | Effect::RunCommand { service, .. }
        | Effect::Render { service, .. }
        | Effect::Event { service, .. } => Some(*service),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    /// 2026-11-30, a Monday, 00:00 UTC.
    const MONDAY: i64 = 1_795_996_800_000;

    fn at(text: &str) -> AtTime {
        AtTime::parse(text).expect("an `at` time")
    }

    #[test]
    fn the_model_reckons_daily_and_weekly_times() {
        assert_eq!(
            next_time(&[at("03:00")], MONDAY + H, 0),
            Some(MONDAY + 3 * H)
        );
        assert_eq!(
            next_time(&[at("03:00")], MONDAY + 3 * H, 0),
            Some(MONDAY + 27 * H)
        );
        // Local time one hour east of UTC: 03:00 local is 02:00 UTC.
        assert_eq!(
            next_time(&[at("03:00")], MONDAY, 3600),
            Some(MONDAY + 2 * H)
        );
        let sunday = MONDAY + 6 * 24 * H + 4 * H + H / 2;
        assert_eq!(next_time(&[at("Sun 04:30")], MONDAY, 0), Some(sunday));
        assert_eq!(
            next_time(&[at("Sun 04:30"), at("12:00")], MONDAY, 0),
            Some(MONDAY + 12 * H)
        );
    }
}
