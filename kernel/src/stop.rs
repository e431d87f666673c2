//! Stopping: in reverse dependency order (what needs a service, and what is ordered after it,
//! stops first), with `stop-timeout` then SIGKILL, a oneshot's `stop` command, and shutdown.

use crate::config::{defaults, Kind};
use crate::graph;
use crate::kernel::Kernel;
use crate::protocol::{CommandPurpose, Effect, ServiceId, SignalTarget};
use crate::service::{AfterStop, Stop, StopCommand};
use crate::timers::Timer;

impl Kernel {
    /// Stops everything, dependents first; [`Effect::ShutdownComplete`] follows once all is
    /// down.
    pub(crate) fn shutdown(&mut self, out: &mut Vec<Effect>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        out.push(Effect::Notice {
            message: "shutting down: stopping every service, dependents first".into(),
        });
        for i in 0..self.slots.len() {
            let id = ServiceId(i as u32);
            self.slots[i].wanted = false;
            self.stop_service(id, AfterStop::Nothing);
            self.clear_outputs(id, "shutdown", out);
            self.mark(id);
        }
    }

    /// Asks `id` to stop; the stop signal goes out once nothing that must stop first is still
    /// up ([`Kernel::advance_stop`]).
    pub(crate) fn stop_service(&mut self, id: ServiceId, then: AfterStop) {
        let slot = &mut self.slots[id.index()];
        self.timers.clear(&mut slot.timers, id, Timer::Retry);
        self.timers
            .clear_each(&mut slot.timers, id, &Timer::OF_RUNNING_PROCESS);
        slot.ready_check = None;
        slot.probe_check = None;
        if then == AfterStop::Nothing {
            slot.problem = None;
        }
        match slot.proc.as_mut() {
            Some(p) => match p.stop.as_mut() {
                Some(stop) => stop.then = then,
                None => {
                    p.stop = Some(Stop {
                        signaled: false,
                        killed: false,
                        then,
                    })
                }
            },
            None if then == AfterStop::Nothing => self.undo_oneshot(id),
            None => {}
        }
        self.mark(id);
    }

    /// Undoes a done oneshot: its `stop` command runs once what needs it has stopped; with
    /// none, it is undone at once and whatever waited for it may go on.
    pub(crate) fn undo_oneshot(&mut self, id: ServiceId) {
        let slot = &mut self.slots[id.index()];
        if !slot.oneshot_done || slot.stop_command != StopCommand::Idle {
            return;
        }
        if matches!(slot.instance.kind, Kind::Oneshot { stop: Some(_), .. }) {
            slot.stop_command = StopCommand::Pending;
        } else {
            slot.oneshot_done = false;
            self.mark_stop_waiters(id);
        }
    }

    /// Sends the stop signal (or runs the oneshot's stop command) once every service that must
    /// stop first has stopped.
    pub(crate) fn advance_stop(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let slot = &self.slots[id.index()];
        let waiting_signal = slot
            .proc
            .is_some_and(|p| p.stop.is_some_and(|s| !s.signaled));
        let waiting_command = slot.stop_command == StopCommand::Pending;
        if !waiting_signal && !waiting_command {
            return;
        }
        if graph::stop_before(slot).any(|d| self.will_stop(d)) {
            return;
        }
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        // The instance stops as it was started, whatever a new config says.
        let instance = slot.instance.clone();
        let stop_timeout = instance.stop_timeout;
        if waiting_signal {
            let Some(p) = slot.proc.as_mut() else { return };
            if let Some(stop) = p.stop.as_mut() {
                stop.signaled = true;
            }
            out.push(Effect::Signal {
                service: id,
                job: p.job,
                signal: instance.stop_signal,
                to: SignalTarget::Group,
            });
            self.timers
                .set(&mut slot.timers, id, Timer::StopTimeout, now + stop_timeout);
        } else if let Kind::Oneshot {
            stop: Some(argv), ..
        } = &instance.kind
        {
            let argv = argv.clone();
            let job = self.run_command(id, argv, CommandPurpose::Stop, out);
            let slot = &mut self.slots[id.index()];
            slot.stop_command = StopCommand::Running(job);
            self.timers
                .set(&mut slot.timers, id, Timer::StopTimeout, now + stop_timeout);
        }
    }

    /// Whether `id` is up and about to stop or stopping, so what it needs must wait for it.
    fn will_stop(&self, id: ServiceId) -> bool {
        let s = &self.slots[id.index()];
        if s.is_stopping() {
            return true;
        }
        s.is_up()
            && (!s.wanted
                || self.shutting_down
                || (s.config.stop_when_needs_fail && s.unhealthy_needs > 0))
    }

    /// `stop-timeout` is over: SIGKILL to a process that is still there; a process that
    /// survives SIGKILL for [`defaults::KILL_GRACE`] is abandoned; a oneshot's stop command
    /// is given up on.
    pub(crate) fn on_stop_timeout(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        let Some(p) = slot.proc.as_mut() else {
            if let StopCommand::Running(_) = slot.stop_command {
                self.finish_stop_command(id);
                self.note(id, "stop command timed out".into(), out);
            }
            return;
        };
        let Some(stop) = p.stop.as_mut() else { return };
        let job = p.job;
        if !stop.killed {
            stop.killed = true;
            out.push(Effect::Kill { service: id, job });
            let at = now + defaults::KILL_GRACE;
            self.timers
                .set(&mut slot.timers, id, Timer::StopTimeout, at);
            let note = format!(
                "still running {} after SIG{}: SIGKILL to the group",
                humantime::format_duration(slot.instance.stop_timeout),
                slot.instance.stop_signal.name()
            );
            self.note(id, note, out);
            return;
        }
        // Stuck in the kernel (uninterruptible sleep): nothing more can be done to it, and
        // what waits for it to stop must not wait for ever.
        self.end_proc(id);
        self.slots[id.index()].problem = None;
        out.push(Effect::Sweep { service: id, job });
        let note = format!(
            "still alive {} after SIGKILL: abandoned",
            humantime::format_duration(defaults::KILL_GRACE)
        );
        self.note(id, note, out);
    }

    /// A oneshot's stop command is over (finished or given up on): it is undone, and what
    /// waited for it to stop may go on.
    pub(crate) fn finish_stop_command(&mut self, id: ServiceId) {
        let slot = &mut self.slots[id.index()];
        slot.stop_command = StopCommand::Idle;
        slot.oneshot_done = false;
        self.timers.clear(&mut slot.timers, id, Timer::StopTimeout);
        self.mark_stop_waiters(id);
        self.mark(id);
    }
}
