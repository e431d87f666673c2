//! The kernel's read model: what adapters, the control socket and the simulator may know of a
//! service. The state behind it is the kernel's own and may change shape freely.

use std::sync::Arc;

use crate::config::ServiceConfig;
use crate::health::{self, Condition};
use crate::history::History;
use crate::protocol::{JobId, ServiceId};
use crate::service::Slot;
use crate::time::Instant;
use crate::timers::Timer;

/// A read-only view of one service, from [`crate::Kernel::status`] or
/// [`crate::Kernel::views`].
#[derive(Clone, Copy)]
pub struct ServiceView<'a> {
    slot: &'a Slot,
}

impl<'a> ServiceView<'a> {
    pub(crate) fn new(slot: &'a Slot) -> ServiceView<'a> {
        ServiceView { slot }
    }

    /// Its id.
    pub fn id(&self) -> ServiceId {
        self.slot.id
    }

    /// Its name.
    pub fn name(&self) -> &'a str {
        &self.slot.config.name
    }

    /// The definition in force (for a running process: the one it was started from, until it
    /// is restarted).
    pub fn config(&self) -> &'a Arc<ServiceConfig> {
        &self.slot.config
    }

    /// Its condition.
    pub fn condition(&self) -> &'a Condition {
        &self.slot.condition
    }

    /// When the condition began.
    pub fn since(&self) -> Instant {
        self.slot.since
    }

    /// Whether its condition's verdict says healthy.
    pub fn healthy(&self) -> bool {
        self.slot.healthy
    }

    /// The pid of its process (running or stopping), once spawned.
    pub fn pid(&self) -> Option<u32> {
        self.slot.proc.and_then(|p| p.pid)
    }

    /// The job of its process (running or stopping).
    pub fn job(&self) -> Option<JobId> {
        self.slot.proc_job()
    }

    /// When its process was started, while it has one.
    pub fn process_started(&self) -> Option<Instant> {
        self.slot.proc.map(|p| p.started)
    }

    /// Its process has been asked to stop, or its stop command is still to run or running.
    pub fn is_stopping(&self) -> bool {
        self.slot.is_stopping()
    }

    /// Interventions since it was last healthy for `forgive-after`.
    pub fn strikes(&self) -> u32 {
        self.slot.medical.strikes
    }

    /// The medical history says stop trying until a new fact.
    pub fn given_up(&self) -> bool {
        self.slot.medical.given_up
    }

    /// Wanted up (boot, operator start), or not (operator stop, shutdown, removed).
    pub fn wanted(&self) -> bool {
        self.slot.wanted
    }

    /// Has been started at least once.
    pub fn ever_started(&self) -> bool {
        self.slot.ever_started
    }

    /// Its resolved `needs`.
    pub fn needs(&self) -> &'a [ServiceId] {
        &self.slot.needs
    }

    /// Its resolved `after`.
    pub fn after(&self) -> &'a [ServiceId] {
        &self.slot.after
    }

    /// What needs it.
    pub fn dependents(&self) -> &'a [ServiceId] {
        &self.slot.dependents
    }

    /// What is ordered after it.
    pub fn successors(&self) -> &'a [ServiceId] {
        &self.slot.successors
    }

    /// Its medical history.
    pub fn history(&self) -> &'a History {
        &self.slot.history
    }

    /// What the kernel will do next about this service on its own, and when (for `medic
    /// status`): the heal or start a backoff waits for, SIGKILL after `stop-timeout`, the
    /// retry of a given-up service, a start timeout, the decision of a pending outcome. `None`
    /// when nothing is scheduled (healthy and idle, or given up with `retry-after = "never"`).
    pub fn next_action(&self) -> Option<(Instant, String)> {
        let s = self.slot;
        let timer = |kind| s.timers.get(kind);
        if let Some(at) = timer(Timer::RetryAfter) {
            return Some((at, "retry (given up)".into()));
        }
        if let (Some(at), Some(p)) = (timer(Timer::StopTimeout), s.proc) {
            let what = match p.stop {
                Some(stop) if stop.killed => "abandon (still alive after SIGKILL)",
                _ => "SIGKILL to the group",
            };
            return Some((at, what.into()));
        }
        if let Some(at) = timer(Timer::Retry) {
            let verdict = health::verdict(&s.config, &s.condition);
            let what = match verdict.heal {
                [] => "start".to_string(),
                ladder => {
                    let rung = (s.medical.strikes as usize).min(ladder.len() - 1);
                    if s.medical.strikes >= s.config.give_up_after {
                        "give up".to_string()
                    } else {
                        ladder[rung].describe()
                    }
                }
            };
            return Some((at, what));
        }
        if let Some(at) = timer(Timer::StartTimeout) {
            return Some((at, "start-timeout".into()));
        }
        if let Some(at) = timer(Timer::Settle) {
            return Some((at, "decide the outcome".into()));
        }
        if let Some(at) = timer(Timer::Render) {
            return Some((at, "render its templates".into()));
        }
        let what = if s.is_oneshot() {
            "run again"
        } else {
            "planned restart"
        };
        [timer(Timer::Periodic), timer(Timer::At)]
            .into_iter()
            .flatten()
            .min()
            .map(|at| (at, what.into()))
    }

    /// How many of its needs are unhealthy now.
    pub fn unhealthy_needs(&self) -> u32 {
        self.slot.unhealthy_needs
    }

    /// Why the last render before a start failed, while the service waits for a change of
    /// what its templates read (DESIGN §9).
    pub fn render_failure(&self) -> Option<&str> {
        self.slot.render.failed.as_deref()
    }

    /// The secret it waits for before it may start (DESIGN §10), if any.
    pub fn waiting_secret(&self) -> Option<&str> {
        self.slot.render.waiting_secret.as_deref()
    }

    /// A render of its templates is under way.
    pub fn rendering(&self) -> bool {
        self.slot.render.in_flight.is_some()
    }

    /// A watched file changed and its debounce time has not passed yet.
    pub fn file_change_pending(&self) -> bool {
        self.slot.file_pending.is_some()
    }
}

/// Everything the kernel holds about the service, for a failure report.
impl core::fmt::Debug for ServiceView<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = self.slot;
        f.debug_struct("ServiceView")
            .field("name", &s.config.name)
            .field("condition", &s.condition)
            .field("wanted", &s.wanted)
            .field("proc", &s.proc)
            .field("oneshot_done", &s.oneshot_done)
            .field("stop_command", &s.stop_command)
            .field("problem", &s.problem)
            .field("unhealthy_needs", &s.unhealthy_needs)
            .field("medical", &s.medical)
            .finish()
    }
}
