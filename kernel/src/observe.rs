//! What the world tells the kernel about a service's process: it was spawned, failed to
//! spawn, ended, became ready, answered a probe, used this much memory, finished a command.
//!
//! Readiness, probes and memory are [`Slot`] methods: each observation goes through the one
//! precedence rule of [`Slot::observe`] and [`Slot::cure`].

use crate::config::{defaults, Kind, Readiness, Reports};
use crate::health::Condition;
use crate::kernel::Kernel;
use crate::protocol::{CheckPurpose, CheckResult, Effect, ExitStatus, JobId, ServiceId};
use crate::service::{AfterStop, Proc, Slot, Stop, StopCommand};
use crate::time::Instant;
use crate::timers::{Timer, Timers};

impl Slot {
    /// A readiness poll answered; `true` when the process is ready now. A failed poll is
    /// tried again later, backing off from 10 ms to 1 s.
    fn ready_polled(&mut self, result: &CheckResult, timers: &mut Timers, now: Instant) -> bool {
        self.ready_check = None;
        if *result == CheckResult::Ok {
            return true;
        }
        self.ready_poll_every = (self.ready_poll_every * 2).min(defaults::READY_POLL_MAX);
        let at = now + self.ready_poll_every;
        timers.set(&mut self.timers, self.id, Timer::ReadyPoll, at);
        false
    }

    /// A probe answered: a success cures what probes said; a failure counts, and after
    /// `failures` in a row the service is `unresponsive`; a `reports = "condition"` probe
    /// names the condition itself. The next probe is due `every` after this one.
    fn probed(&mut self, result: CheckResult, timers: &mut Timers, now: Instant) {
        self.probe_check = None;
        let Some(probe) = self.config.probe.clone() else {
            return;
        };
        let probe_word =
            |c: &Condition| matches!(c, Condition::Unresponsive | Condition::Custom(_));
        match result {
            CheckResult::Ok => {
                self.probe_failures = 0;
                self.cure(probe_word);
            }
            CheckResult::Condition(name) if probe.reports == Reports::Condition => {
                let name = name.trim();
                if name == "ready" {
                    self.probe_failures = 0;
                    self.cure(probe_word);
                } else {
                    let reported = match Condition::from_name(name) {
                        Condition::Unresponsive => Condition::Unresponsive,
                        _ => Condition::Custom(name.to_string()),
                    };
                    self.observe(reported, || format!("probe reports {name}"));
                }
            }
            CheckResult::Condition(_) | CheckResult::Failed(_) | CheckResult::TimedOut => {
                self.probe_failures = self.probe_failures.saturating_add(1);
                if self.probe_failures >= probe.failures {
                    let failures = self.probe_failures;
                    self.observe(Condition::Unresponsive, || match result {
                        CheckResult::Failed(why) => {
                            format!("{failures} failed probes, last: {why}")
                        }
                        _ => format!("{failures} failed probes, last timed out"),
                    });
                }
            }
        }
        if self.running().is_some_and(|p| p.ready) {
            timers.set(&mut self.timers, self.id, Timer::Probe, now + probe.every);
        }
    }

    /// A memory sample of the process group: over `memory-max` is `memory-high`, under it
    /// cures that. Unknown is never taken for 0: a sample or a limit that cannot be known is
    /// not judged.
    fn memory_sampled(&mut self, rss: Option<u64>, total: Option<u64>) -> Memory {
        let Some(limit) = self.config.memory_max else {
            return Memory::NoLimit;
        };
        let Some(rss) = rss else {
            return Memory::Unknown("the process group's memory could not be read");
        };
        let Some(limit) = limit.bytes(total) else {
            return Memory::Unknown("the machine's total RAM is unknown");
        };
        if rss > limit {
            self.observe(Condition::MemoryHigh, || {
                format!(
                    "rss {} KiB > limit {} KiB: killed",
                    rss / 1024,
                    limit / 1024
                )
            });
            Memory::Over
        } else {
            self.cure(|c| *c == Condition::MemoryHigh);
            Memory::Under
        }
    }
}

/// What a memory sample says.
enum Memory {
    NoLimit,
    Unknown(&'static str),
    Over,
    Under,
}

impl Kernel {
    pub(crate) fn on_spawned(&mut self, id: ServiceId, job: JobId, pid: u32) {
        if self.proc_job(id) != Some(job) {
            return;
        }
        let slot = &mut self.slots[id.index()];
        slot.spawn_deferrals = 0;
        if let Some(p) = slot.proc.as_mut() {
            p.pid = Some(pid);
        }
        if matches!(slot.config.kind, Kind::Process { .. })
            && slot.config.ready == Readiness::Spawned
        {
            self.mark_ready(id);
        }
    }

    pub(crate) fn on_spawn_failed(&mut self, id: ServiceId, job: JobId, error: String) {
        if self.proc_job(id) != Some(job) {
            return;
        }
        self.end_proc(id);
        let slot = &mut self.slots[id.index()];
        if slot.wanted {
            let failure = slot.failure_condition();
            slot.observe(failure, || format!("spawn failed: {error}"));
        }
        self.mark(id);
    }

    /// The daemon could not start the process for want of resources: no strike, no problem;
    /// the start is tried again after 100 ms, doubling up to 10 s while it goes on.
    pub(crate) fn on_spawn_deferred(
        &mut self,
        id: ServiceId,
        job: JobId,
        error: String,
        out: &mut Vec<Effect>,
    ) {
        if self.proc_job(id) != Some(job) {
            return;
        }
        self.end_proc(id);
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        slot.spawn_deferrals = slot.spawn_deferrals.saturating_add(1);
        let wait = crate::rules::backoff(
            defaults::SPAWN_RETRY_FIRST,
            slot.spawn_deferrals,
            defaults::SPAWN_RETRY_MAX,
        );
        slot.spawn_retry_at = now + wait;
        let note = format!(
            "could not start: {error}; the daemon is short of resources, not the service's \
             fault: trying again in {}",
            humantime::format_duration(wait)
        );
        self.note(id, note, out);
        self.mark(id);
    }

    pub(crate) fn on_exited(
        &mut self,
        id: ServiceId,
        job: JobId,
        status: ExitStatus,
        out: &mut Vec<Effect>,
    ) {
        if self.proc_job(id) != Some(job) {
            return;
        }
        let proc = self.end_proc(id);
        let slot = &mut self.slots[id.index()];
        // Nothing a process service forked outlives it, nor what a stopped oneshot left.
        if !slot.is_oneshot() || proc.stop.is_some() {
            out.push(Effect::Sweep { service: id, job });
        }
        match proc.stop {
            // Contained: the problem stands until the rules restart it.
            Some(stop) if stop.then == AfterStop::Contain => {}
            // Expected: a stop we asked for (a running oneshot is never also done).
            Some(_) => slot.problem = None,
            None if slot.is_oneshot() && status.success() => {
                slot.oneshot_done = true;
                slot.problem = None;
                if let Some(every) = slot.config.every {
                    let at = self.now + every;
                    self.timers.set(&mut slot.timers, id, Timer::Periodic, at);
                }
            }
            None => {
                let failure = slot.failure_condition();
                slot.observe(failure, || status.to_string());
            }
        }
        self.mark(id);
    }

    /// Forgets the process of `id` and everything tied to it (timers, checks in flight) and
    /// lets the services it was holding up in a stop go on.
    pub(crate) fn end_proc(&mut self, id: ServiceId) -> Proc {
        let slot = &mut self.slots[id.index()];
        let proc = slot.proc.take().expect("end_proc with a process");
        slot.ready_check = None;
        slot.probe_check = None;
        self.timers
            .clear_each(&mut slot.timers, id, &Timer::OF_RUNNING_PROCESS);
        self.timers.clear(&mut slot.timers, id, Timer::StopTimeout);
        self.mark_stop_waiters(id);
        self.mark_successors(id);
        proc
    }

    pub(crate) fn mark_ready(&mut self, id: ServiceId) {
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        let Some(p) = slot.proc.as_mut() else { return };
        if p.ready || p.stop.is_some() {
            return;
        }
        p.ready = true;
        slot.ready_check = None;
        self.timers.clear(&mut slot.timers, id, Timer::StartTimeout);
        self.timers.clear(&mut slot.timers, id, Timer::ReadyPoll);
        slot.cure(|c| *c == Condition::StartTimeout);
        if let Some(probe) = &slot.config.probe {
            let at = now + probe.every;
            self.timers.set(&mut slot.timers, id, Timer::Probe, at);
        }
        self.mark(id);
        self.mark_successors(id);
    }

    pub(crate) fn on_check_done(&mut self, id: ServiceId, job: JobId, result: CheckResult) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(id.index()) else {
            return;
        };
        if slot.ready_check == Some(job) {
            if slot.ready_polled(&result, &mut self.timers, now) {
                self.mark_ready(id);
            }
            return;
        }
        if slot.probe_check == Some(job) {
            slot.probed(result, &mut self.timers, now);
            self.mark(id);
        }
    }

    pub(crate) fn on_memory(
        &mut self,
        id: ServiceId,
        job: JobId,
        rss: Option<u64>,
        total: Option<u64>,
        out: &mut Vec<Effect>,
    ) {
        if self.proc_job(id) != Some(job) {
            return;
        }
        match self.slots[id.index()].memory_sampled(rss, total) {
            Memory::NoLimit => return,
            Memory::Unknown(why) => {
                let slot = &mut self.slots[id.index()];
                if !slot.memory_unknown_noted {
                    slot.memory_unknown_noted = true;
                    self.note(id, format!("memory-max not enforced: {why}"), out);
                }
            }
            Memory::Over => self.contain(id, out),
            Memory::Under => {}
        }
        self.mark(id);
    }

    /// Over its memory limit: SIGKILL to the group at once, every time, whatever the backoff
    /// (containment is not an intervention); when to start it again is the rules' decision.
    fn contain(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        let Some(p) = slot.proc.as_mut() else { return };
        if p.stop.is_some() {
            return; // already being stopped or killed
        }
        out.push(Effect::Kill {
            service: id,
            job: p.job,
        });
        p.stop = Some(Stop {
            signaled: true,
            killed: true,
            then: AfterStop::Contain,
        });
        self.timers
            .clear_each(&mut slot.timers, id, &Timer::OF_RUNNING_PROCESS);
        slot.ready_check = None;
        slot.probe_check = None;
        let at = now + defaults::KILL_GRACE;
        self.timers
            .set(&mut slot.timers, id, Timer::StopTimeout, at);
    }

    pub(crate) fn on_command_done(
        &mut self,
        id: ServiceId,
        job: JobId,
        status: ExitStatus,
        out: &mut Vec<Effect>,
    ) {
        let Some(slot) = self.slots.get_mut(id.index()) else {
            return;
        };
        if slot.stop_command == StopCommand::Running(job) {
            self.finish_stop_command(id);
            if !status.success() {
                self.note(id, format!("stop command: {status}"), out);
            }
        } else if !status.success() {
            // A heal or reload command that failed: worth a line; the settle time decides.
            self.note(id, format!("command: {status}"), out);
        }
    }

    /// Not ready within `start-timeout`.
    pub(crate) fn on_start_timeout(&mut self, id: ServiceId) {
        let slot = &mut self.slots[id.index()];
        if slot.running().is_some_and(|p| !p.ready) {
            let timeout = slot.config.start_timeout;
            slot.observe(Condition::StartTimeout, || {
                format!("not ready after {}", humantime::format_duration(timeout))
            });
        }
    }

    /// Time for the next readiness poll of a starting process.
    pub(crate) fn poll_ready(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let slot = &self.slots[id.index()];
        let (Some(_), Readiness::Poll(check)) = (slot.running(), &slot.config.ready) else {
            return;
        };
        let check = check.clone();
        let timeout = defaults::PROBE_TIMEOUT.min(slot.config.start_timeout);
        let job = self.new_job();
        self.slots[id.index()].ready_check = Some(job);
        out.push(self.check_effect(id, job, check, timeout, CheckPurpose::Ready));
    }

    /// Time for the next probe of a ready process (one at a time).
    pub(crate) fn probe(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let slot = &self.slots[id.index()];
        let (Some(p), Some(probe)) = (slot.running(), &slot.config.probe) else {
            return;
        };
        if !p.ready || slot.probe_check.is_some() {
            return;
        }
        let (check, timeout) = (probe.check.clone(), probe.timeout);
        let job = self.new_job();
        self.slots[id.index()].probe_check = Some(job);
        out.push(self.check_effect(id, job, check, timeout, CheckPurpose::Probe));
    }

    /// Time for the next memory sample of a running process.
    pub(crate) fn sample_memory(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        if let Some(p) = slot.running() {
            out.push(Effect::SampleMemory {
                service: id,
                job: p.job,
            });
            let at = now + slot.config.memory_every;
            self.timers.set(&mut slot.timers, id, Timer::Memory, at);
        }
    }
}
