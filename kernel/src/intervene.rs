//! Acting on a service: the start when its needs are healthy, the heal the medical rules
//! chose, and the operator's commands. Each builds the effects that carry everything the
//! adapter needs (the definition, or the service's [`Exec`] context).

use core::time::Duration;

use crate::config::{defaults, Action, Check, Heal, Kind, Readiness, Reports};
use crate::health::Condition;
use crate::kernel::Kernel;
use crate::protocol::{
    CheckPurpose, CommandPurpose, Effect, Exec, JobId, Operator, ServiceId, SignalTarget,
};
use crate::rules::Plan;
use crate::service::{AfterStop, FileAction, Proc, StopCommand};
use crate::timers::Timer;

impl Kernel {
    /// Brings `id` where it should be: stops it if a need failed and it must stop with it,
    /// starts it once its needs (and `after`) allow, or heals it as the rules say.
    pub(crate) fn act(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        self.advance_stop(id, out);
        let slot = &self.slots[id.index()];
        if slot.removed && !slot.is_live() {
            return;
        }
        if !slot.wanted || self.shutting_down {
            return;
        }
        if slot.unhealthy_needs > 0 {
            // Upstream first: no start, no heal. Stop it if the config says so (a oneshot
            // that is done is up too, and must be undone, or what it needs waits for ever).
            let up = slot.running().is_some()
                || (slot.oneshot_done && slot.stop_command == StopCommand::Idle);
            if slot.config.stop_when_needs_fail && up {
                let planned = self.needs_down_as_planned(id);
                let medical = &mut self.slots[id.index()].medical;
                medical.stopped_for_needs = true;
                medical.needs_planned = planned;
                self.stop_service(id, AfterStop::Nothing);
                self.advance_stop(id, out);
                self.mark(id);
            }
            return;
        }
        if slot.medical.given_up {
            return;
        }
        if !slot.is_hardware()
            && slot.proc.is_none()
            && slot.problem.is_none()
            && !slot.oneshot_done
            && slot.stop_command == StopCommand::Idle
        {
            if !self.after_satisfied(id) {
                return;
            }
            let now = self.now;
            let slot = &mut self.slots[id.index()];
            if now < slot.spawn_retry_at {
                let at = slot.spawn_retry_at;
                self.timers
                    .set_earliest(&mut slot.timers, id, Timer::Retry, at);
                return;
            }
            if let Err(at) = slot.medical.start_after_needs(now, slot.config.max_backoff) {
                self.timers
                    .set_earliest(&mut slot.timers, id, Timer::Retry, at);
                return;
            }
            if self.rendered_for_start(id, out) {
                self.start(id, out);
            }
            return;
        }
        match self.plan(id) {
            Plan::Nothing(_) => {}
            Plan::Defer(at, _) => {
                let slot = &mut self.slots[id.index()];
                self.timers
                    .set_earliest(&mut slot.timers, id, Timer::Retry, at);
            }
            Plan::GiveUp => {
                let now = self.now;
                let slot = &mut self.slots[id.index()];
                slot.medical.given_up = true;
                if let Some(after) = slot.config.retry_after {
                    self.timers
                        .set(&mut slot.timers, id, Timer::RetryAfter, now + after);
                }
                self.mark(id);
            }
            Plan::Heal(heal, settle) => self.intervene(id, heal, settle, out),
        }
    }

    /// Whether the needs of `id` are down for a planned restart or run: one of them, or one
    /// upstream of them, is in one (made, and its condition not yet past it). Judged when
    /// `stop-when-needs-fail` stops `id`, from the plans alone, whatever else is down at the
    /// same time: at most one uncounted start per plan, and plans come no faster than their
    /// period.
    fn needs_down_as_planned(&self, id: ServiceId) -> bool {
        self.closure(id, |s| &s.needs)
            .iter()
            .any(|n| self.slots[n.index()].planned)
    }

    /// Whether everything `id` is ordered `after` has been tried.
    fn after_satisfied(&self, id: ServiceId) -> bool {
        self.slots[id.index()].after.iter().all(|a| {
            let s = &self.slots[a.index()];
            s.is_hardware()
                || !s.wanted
                || s.medical.given_up
                || (s.ever_started && !s.proc.is_some_and(|p| !p.ready && p.stop.is_none()))
        })
    }

    /// Makes an automatic intervention: a strike, its settle time, a pending history record.
    fn intervene(&mut self, id: ServiceId, heal: Heal, settle: Duration, out: &mut Vec<Effect>) {
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        let strikes = slot.medical.intervene(now, settle, slot.config.max_backoff);
        let condition = slot.condition.clone();
        let note = format!("strike {strikes} of {}", slot.config.give_up_after);
        let seq = self.record(
            id,
            condition,
            Some(heal.clone()),
            Some(crate::history::Outcome::Pending),
            note,
            out,
        );
        let slot = &mut self.slots[id.index()];
        slot.medical.pending_attempt = Some(seq);
        let settle_at = slot.medical.settle_until;
        self.timers
            .set(&mut slot.timers, id, Timer::Settle, settle_at);
        self.apply_heal(id, heal, out);
        // A process contained for its memory is gone: whatever the heal of `memory-high` (a
        // `run` or a signal meant for a live process), the intervention starts it again.
        let slot = &self.slots[id.index()];
        if slot.problem == Some(Condition::MemoryHigh) && slot.proc.is_none() {
            self.restart(id);
        }
        self.mark(id);
    }

    /// Carries out a heal (automatic or the operator's).
    pub(crate) fn apply_heal(&mut self, id: ServiceId, heal: Heal, out: &mut Vec<Effect>) {
        match heal {
            Heal::Restart => self.restart(id),
            Heal::Kill => self.kill_and_start(id, out),
            Heal::Reload => self.reload(id, out),
            Heal::Signal(signal) => {
                if let Some(p) = self.slots[id.index()].running() {
                    out.push(Effect::Signal {
                        service: id,
                        job: p.job,
                        signal,
                        to: SignalTarget::Main,
                    });
                }
            }
            Heal::Run(argv) => {
                self.run_command(id, argv, CommandPurpose::Heal, out);
            }
            Heal::LinkUp => {
                if let Kind::Interface { ifname, .. } = &self.slots[id.index()].config.kind {
                    out.push(Effect::LinkUp {
                        service: id,
                        ifname: ifname.clone(),
                    });
                }
            }
        }
    }

    /// Asks for a command run as the service would run (its env, cwd, user and group); a
    /// oneshot's stop command may take its `stop-timeout`, any other command
    /// [`defaults::COMMAND_TIMEOUT`], after which the adapter kills it.
    pub(crate) fn run_command(
        &mut self,
        id: ServiceId,
        argv: Vec<String>,
        purpose: CommandPurpose,
        out: &mut Vec<Effect>,
    ) -> JobId {
        let job = self.new_job();
        let slot = &self.slots[id.index()];
        // A stop command is the running instance's own.
        let (config, timeout) = match purpose {
            CommandPurpose::Stop => (&slot.instance, slot.instance.stop_timeout),
            CommandPurpose::Heal | CommandPurpose::Reload => {
                (&slot.config, defaults::COMMAND_TIMEOUT)
            }
        };
        out.push(Effect::RunCommand {
            service: id,
            job,
            argv,
            purpose,
            exec: Exec::of(config),
            timeout,
        });
        job
    }

    /// A readiness poll or probe effect; a `run` check carries the service's context.
    pub(crate) fn check_effect(
        &self,
        id: ServiceId,
        job: JobId,
        check: Check,
        timeout: Duration,
        purpose: CheckPurpose,
    ) -> Effect {
        let config = &self.slots[id.index()].config;
        let reports = match (purpose, &config.probe) {
            (CheckPurpose::Probe, Some(p)) => p.reports,
            _ => Reports::Exit,
        };
        let exec = matches!(check, Check::Run(_)).then(|| Exec::of(config));
        Effect::Check {
            service: id,
            job,
            check,
            timeout,
            purpose,
            reports,
            exec,
        }
    }

    /// Stop (if running) then start. With nothing running, the start happens when `act` next
    /// looks at the service.
    pub(crate) fn restart(&mut self, id: ServiceId) {
        self.slots[id.index()].problem = None;
        // Stop, then start: a done oneshot is undone first (its `stop` command, if it has one);
        // it starts again once that is over.
        self.undo_oneshot(id);
        if self.slots[id.index()].proc.is_some() {
            self.stop_service(id, AfterStop::Start);
        }
        self.mark(id);
    }

    /// SIGKILL to the group, then start.
    fn kill_and_start(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        slot.problem = None;
        if let Some(p) = slot.proc.as_mut() {
            out.push(Effect::Kill {
                service: id,
                job: p.job,
            });
            p.stop = Some(crate::service::Stop {
                signaled: true,
                killed: true,
                then: AfterStop::Start,
            });
            let at = now + defaults::KILL_GRACE;
            self.timers
                .set(&mut slot.timers, id, Timer::StopTimeout, at);
        } else if slot.is_oneshot() {
            slot.oneshot_done = false;
        }
        self.mark(id);
    }

    /// The service's `reload`, or a restart when it has none (or nothing runs).
    fn reload(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let slot = &self.slots[id.index()];
        match (slot.running(), slot.config.reload.clone()) {
            (Some(p), Some(Action::Signal(signal))) => out.push(Effect::Signal {
                service: id,
                job: p.job,
                signal,
                to: SignalTarget::Main,
            }),
            (Some(_), Some(Action::Run(argv))) => {
                self.run_command(id, argv, CommandPurpose::Reload, out);
            }
            _ => self.restart(id),
        }
    }

    /// Spawns the service's process (or oneshot command) and arms the timers that watch it.
    fn start(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let now = self.now;
        let job = self.new_job();
        let wall = self.trusted_wall_now();
        let slot = &mut self.slots[id.index()];
        if slot.config.catch_up && wall.is_some() {
            // A run: what `catch-up` counts missed times from.
            slot.at_last = wall;
        }
        slot.proc = Some(Proc {
            job,
            pid: None,
            started: now,
            ready: false,
            stop: None,
        });
        slot.problem = None;
        slot.problem_note.clear();
        slot.render.owed.clear(); // the new process reads the files as they are
        slot.ever_started = true;
        slot.probe_failures = 0;
        slot.ready_poll_every = defaults::READY_POLL_FIRST;
        slot.memory_unknown_noted = false;
        slot.instance = slot.config.clone();
        let config = slot.config.clone();
        out.push(Effect::Spawn {
            service: id,
            job,
            config: config.clone(),
        });
        let timers = &mut self.timers;
        timers.set(
            &mut slot.timers,
            id,
            Timer::StartTimeout,
            now + config.start_timeout,
        );
        if matches!(config.kind, Kind::Process { .. }) {
            if let Some(every) = config.restart_every {
                timers.set(&mut slot.timers, id, Timer::Periodic, now + every);
            }
            if let Readiness::Poll(_) = config.ready {
                let at = now + defaults::READY_POLL_FIRST;
                timers.set(&mut slot.timers, id, Timer::ReadyPoll, at);
            }
            if config.memory_max.is_some() {
                let at = now + config.memory_every;
                timers.set(&mut slot.timers, id, Timer::Memory, at);
            }
        }
        self.mark(id);
    }

    // ----- the operator and watched files ---------------------------------------------------

    pub(crate) fn on_operator(&mut self, op: Operator, out: &mut Vec<Effect>) {
        let (name, verb) = match &op {
            Operator::Shutdown => {
                self.shutdown(out);
                return;
            }
            Operator::Start(n) => (n, "start"),
            Operator::Stop(n) => (n, "stop"),
            Operator::Restart(n) => (n, "restart"),
            Operator::Reload(n) => (n, "reload"),
        };
        let Some(id) = self.lookup(name) else {
            out.push(Effect::Notice {
                message: format!("operator {verb}: no service called `{name}`"),
            });
            return;
        };
        if self.shutting_down {
            out.push(Effect::Notice {
                message: format!("operator {verb} {name}: refused, shutting down"),
            });
            return;
        }
        let condition = self.slots[id.index()].condition.clone();
        let note = format!("operator {verb}");
        match op {
            Operator::Start(_) => {
                // Its needs first (as s6-rc, dinit and systemd do): what it needs is wanted too.
                for n in self.closure(id, |s| &s.needs) {
                    if !self.slots[n.index()].wanted {
                        let why = format!("operator start of {name}, which needs it");
                        self.operator_start(n, why, out);
                    }
                }
                self.operator_start(id, note, out);
            }
            Operator::Stop(_) => {
                // What needs it first, transitively; the stop order then waits for them.
                for d in self.closure(id, |s| &s.dependents) {
                    if self.slots[d.index()].wanted {
                        let why = format!("operator stop of {name}, which it needs");
                        self.operator_stop(d, why, out);
                    }
                }
                self.operator_stop(id, note, out);
            }
            Operator::Restart(_) => {
                self.record(id, condition, Some(Heal::Restart), None, note, out);
                self.new_fact(id);
                let slot = &mut self.slots[id.index()];
                slot.wanted = true;
                slot.medical.stopped_for_needs = false;
                self.restart(id);
            }
            Operator::Reload(_) => {
                self.record(id, condition, Some(Heal::Reload), None, note, out);
                self.slots[id.index()].wanted = true;
                self.reload(id, out);
            }
            Operator::Shutdown => unreachable!("handled above"),
        }
        self.mark(id);
    }

    /// The operator wants `id` up: a new fact, at once (no gate for flapping needs).
    fn operator_start(&mut self, id: ServiceId, note: String, out: &mut Vec<Effect>) {
        let condition = self.slots[id.index()].condition.clone();
        self.record(id, condition, None, None, note, out);
        self.new_fact(id);
        let slot = &mut self.slots[id.index()];
        slot.wanted = true;
        slot.medical.stopped_for_needs = false;
        if let Some(stop) = slot.proc.as_mut().and_then(|p| p.stop.as_mut()) {
            stop.then = AfterStop::Start;
        }
        self.mark(id);
    }

    /// The operator wants `id` down.
    fn operator_stop(&mut self, id: ServiceId, note: String, out: &mut Vec<Effect>) {
        let condition = self.slots[id.index()].condition.clone();
        self.record(id, condition, None, None, note, out);
        self.slots[id.index()].wanted = false;
        self.stop_service(id, AfterStop::Nothing);
        self.clear_outputs(id, "stopped by the operator", out);
    }

    /// Every service reachable from `id` along `edges` (not `id` itself), nearest first.
    fn closure(
        &self,
        id: ServiceId,
        edges: impl Fn(&crate::service::Slot) -> &Vec<ServiceId>,
    ) -> Vec<ServiceId> {
        let mut seen = vec![false; self.slots.len()];
        seen[id.index()] = true;
        let mut found = Vec::new();
        let mut i = 0;
        let mut frontier = vec![id];
        while i < frontier.len() {
            for &n in edges(&self.slots[frontier[i].index()]) {
                if !seen[n.index()] {
                    seen[n.index()] = true;
                    found.push(n);
                    frontier.push(n);
                }
            }
            i += 1;
        }
        found
    }

    /// Watched files changed and the debounce time is over: a new fact, and the reload or
    /// restart they ask for if the service runs.
    pub(crate) fn on_debounced(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let Some(action) = self.slots[id.index()].file_pending.take() else {
            return;
        };
        self.new_fact(id);
        let slot = &self.slots[id.index()];
        if !slot.wanted || slot.running().is_none() {
            return;
        }
        let condition = slot.condition.clone();
        let (heal, note) = match action {
            FileAction::Reload => (Heal::Reload, "reload-on: file changed"),
            FileAction::Restart => (Heal::Restart, "restart-on: file changed"),
        };
        self.record(id, condition, Some(heal.clone()), None, note.into(), out);
        self.apply_heal(id, heal, out);
    }
}
