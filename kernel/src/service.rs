//! One service's runtime state in the kernel ([`Slot`]), how its condition follows from that
//! state, and how observations (exits, readiness, probes, memory) change it.
//!
//! Everything here is private to the kernel: adapters and the simulator read a service through
//! [`crate::ServiceView`].

use core::time::Duration;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Kind, LinkReady, ServiceConfig};
use crate::health::Condition;
use crate::history::History;
use crate::protocol::{JobId, LinkState, ServiceId};
use crate::rules::Medical;
use crate::time::Instant;
use crate::timers::ServiceTimers;

/// What to do once a stopping process has exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum AfterStop {
    /// Nothing: it was stopped for good (operator stop, shutdown, needs failed).
    Nothing,
    /// Start it again (a restart or kill heal, an operator restart, a changed definition).
    Start,
    /// It was killed for using too much memory: the problem stands, and the medical rules
    /// decide when it starts again (containment is immediate; the restart is a heal).
    Contain,
}

/// A stop in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stop {
    /// The stop signal has been sent (it waits while dependents are still stopping).
    pub signaled: bool,
    /// SIGKILL has been sent to the group.
    pub killed: bool,
    /// What happens after the exit.
    pub then: AfterStop,
}

/// The process (or running oneshot command) of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Proc {
    /// Names the process in inputs and effects.
    pub job: JobId,
    /// Known once [`crate::Input::Spawned`] arrived.
    pub pid: Option<u32>,
    /// When the spawn was asked for.
    pub started: Instant,
    /// Readiness reached.
    pub ready: bool,
    /// A stop in progress.
    pub stop: Option<Stop>,
}

/// A oneshot's `stop` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StopCommand {
    /// Not needed or finished.
    Idle,
    /// Must run once the dependents are down.
    Pending,
    /// Running.
    Running(JobId),
}

/// What a change of a watched file asks for (a restart outranks a reload).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum FileAction {
    /// `reload-on`.
    Reload,
    /// `restart-on`.
    Restart,
}

/// A service's slot in the kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Slot {
    /// Its id.
    pub id: ServiceId,
    /// The definition in force.
    pub config: Arc<ServiceConfig>,
    /// The definition the current instance (a process, or a done oneshot) was started from:
    /// it is stopped as it was started, whatever a new config says.
    pub instance: Arc<ServiceConfig>,
    /// Removed from the config; stopped and then forgotten (its slot free for a new service).
    pub removed: bool,
    /// Jobs before this one were asked for by an earlier service in this slot: inputs about
    /// them are stale.
    pub first_job: JobId,
    /// Resolved `needs`.
    pub needs: Vec<ServiceId>,
    /// Resolved `after`.
    pub after: Vec<ServiceId>,
    /// Services that need this one (reverse `needs`).
    pub dependents: Vec<ServiceId>,
    /// Services ordered after this one (reverse `after`).
    pub successors: Vec<ServiceId>,
    /// How many of `needs` are unhealthy now.
    pub unhealthy_needs: u32,
    /// Wanted up (boot, operator start) or not (operator stop, shutdown, removed).
    pub wanted: bool,
    /// The running process, if any.
    pub proc: Option<Proc>,
    /// A oneshot that exited 0 and has not been stopped since.
    pub oneshot_done: bool,
    /// A oneshot's `stop` command.
    pub stop_command: StopCommand,
    /// The unhealthy observation that stands until cured: exited, failed, start-timeout,
    /// unresponsive, memory-high or a probe's custom condition. Changed only through
    /// [`Slot::observe`] and [`Slot::cure`].
    pub problem: Option<Condition>,
    /// Words about `problem` for the history (`exit code 1`).
    pub problem_note: String,
    /// Has been started at least once (so a failing need makes it `blocked`, not `waiting`).
    pub ever_started: bool,
    /// The condition, as last derived.
    pub condition: Condition,
    /// In a planned restart or run (`restart-every`, `every`, `at`) since it was made, until
    /// its condition changes to one that is not transient: what needs it, directly or not, is
    /// down for a plan, not a failure.
    pub planned: bool,
    /// When `condition` began.
    pub since: Instant,
    /// The verdict's health bit for `condition`, as last derived.
    pub healthy: bool,
    /// Strikes, settle, backoff, give-up: what the medical rules keep.
    pub medical: Medical,
    /// Consecutive failed probes.
    pub probe_failures: u32,
    /// The readiness poll in flight.
    pub ready_check: Option<JobId>,
    /// The probe in flight.
    pub probe_check: Option<JobId>,
    /// The current readiness poll period (10 ms doubling to 1 s).
    pub ready_poll_every: Duration,
    /// A watched-file action waiting for its debounce time.
    pub file_pending: Option<FileAction>,
    /// The process's memory could not be judged and the history says so already.
    pub memory_unknown_noted: bool,
    /// Starts deferred in a row because the daemon ran short of resources.
    pub spawn_deferrals: u32,
    /// No start before this (after a deferred spawn).
    pub spawn_retry_at: Instant,
    /// The wall time (Unix ms) the pending `at` timer stands for.
    pub at_next: Option<i64>,
    /// The wall time of the last `at` time that fired: never again at or before it, whatever
    /// the clock does (stepped back, it would repeat the run).
    pub at_last: Option<i64>,
    /// Its templates' render state.
    pub render: crate::render::RenderState,
    /// Pending timers.
    pub timers: ServiceTimers,
    /// The medical history.
    pub history: History,
}

/// How much an observed problem weighs: a heavier one replaces a lighter one, never the
/// reverse. The process's own end (or start) is the heaviest and is always taken; a probe's
/// word replaces another probe's word.
fn weight(problem: &Condition) -> u8 {
    match problem {
        Condition::Unresponsive | Condition::Custom(_) => 1,
        Condition::MemoryHigh => 2,
        _ => 3,
    }
}

impl Slot {
    /// A fresh slot for `config`, stopped and wanted.
    pub fn new(
        id: ServiceId,
        config: Arc<ServiceConfig>,
        history_len: u32,
        first_job: JobId,
    ) -> Slot {
        Slot {
            id,
            instance: config.clone(),
            config,
            removed: false,
            first_job,
            needs: Vec::new(),
            after: Vec::new(),
            dependents: Vec::new(),
            successors: Vec::new(),
            unhealthy_needs: 0,
            wanted: true,
            proc: None,
            oneshot_done: false,
            stop_command: StopCommand::Idle,
            problem: None,
            problem_note: String::new(),
            ever_started: false,
            condition: Condition::Stopped,
            planned: false,
            since: Instant::ZERO,
            healthy: false,
            medical: Medical::default(),
            probe_failures: 0,
            ready_check: None,
            probe_check: None,
            ready_poll_every: crate::config::defaults::READY_POLL_FIRST,
            file_pending: None,
            memory_unknown_noted: false,
            spawn_deferrals: 0,
            spawn_retry_at: Instant::ZERO,
            at_next: None,
            at_last: None,
            render: crate::render::RenderState::default(),
            timers: ServiceTimers::default(),
            history: History::new(history_len),
        }
    }

    /// The one precedence rule for problems: `problem` stands from now on unless a heavier
    /// one already does (or the same probe word). Returns whether it was taken.
    pub fn observe(&mut self, problem: Condition, note: impl FnOnce() -> String) -> bool {
        let taken = match &self.problem {
            None => true,
            Some(old) => {
                let (new_w, old_w) = (weight(&problem), weight(old));
                new_w == 3 || new_w > old_w || (new_w == 1 && old_w == 1 && *old != problem)
            }
        };
        if taken {
            self.problem_note = note();
            self.problem = Some(problem);
        }
        taken
    }

    /// Clears the standing problem if `cured` says this observation ends it.
    pub fn cure(&mut self, cured: impl Fn(&Condition) -> bool) {
        if self.problem.as_ref().is_some_and(cured) {
            self.problem = None;
        }
    }

    /// The live process that is not being stopped.
    pub fn running(&self) -> Option<&Proc> {
        self.proc.as_ref().filter(|p| p.stop.is_none())
    }

    /// The job of the process, stopping or not.
    pub fn proc_job(&self) -> Option<JobId> {
        self.proc.map(|p| p.job)
    }

    /// Stopping: a process being stopped or a oneshot's stop command pending or running.
    pub fn is_stopping(&self) -> bool {
        self.proc.is_some_and(|p| p.stop.is_some()) || self.stop_command != StopCommand::Idle
    }

    /// Something of this service is still alive: a process, or a stop command to come.
    pub fn is_live(&self) -> bool {
        self.proc.is_some() || self.stop_command != StopCommand::Idle
    }

    /// A removed service that has stopped: its slot may be given to a new service.
    pub fn is_free(&self) -> bool {
        self.removed && !self.is_live()
    }

    /// Up: a process, or a oneshot that is done.
    pub fn is_up(&self) -> bool {
        self.proc.is_some() || self.oneshot_done
    }

    /// Whether this is an interface or device service: hardware, for which medic runs no
    /// process.
    pub fn is_hardware(&self) -> bool {
        matches!(
            self.config.kind,
            Kind::Interface { .. } | Kind::Device { .. }
        )
    }

    /// Whether this is a oneshot service.
    pub fn is_oneshot(&self) -> bool {
        matches!(self.config.kind, Kind::Oneshot { .. })
    }

    /// The problem an unexpected end of this service's process (or command) is.
    pub fn failure_condition(&self) -> Condition {
        if self.is_oneshot() {
            Condition::Failed
        } else {
            Condition::Exited
        }
    }

    /// The condition that follows from the state (architecture.md §2). `hardware` is the state
    /// of the interface's link or whether the device is present, for those kinds.
    pub fn derive_condition(&self, hardware: Hardware<'_>) -> Condition {
        if self.is_stopping() {
            return Condition::Stopping;
        }
        if !self.wanted && self.proc.is_none() {
            return Condition::Stopped;
        }
        if self.unhealthy_needs > 0 {
            return if self.ever_started {
                Condition::Blocked
            } else {
                Condition::Waiting
            };
        }
        let hardware = match (&self.config.kind, hardware) {
            (Kind::Interface { ready_when, .. }, Hardware::Link(link)) => {
                Some(link_condition(*ready_when, link))
            }
            (Kind::Device { .. }, Hardware::Device(present)) => Some(if present {
                Condition::Ready
            } else {
                Condition::Absent
            }),
            _ => None,
        };
        if let Some(condition) = hardware {
            return if self.medical.given_up && condition != Condition::Ready {
                Condition::GivenUp
            } else {
                condition
            };
        }
        if self.medical.given_up {
            return Condition::GivenUp;
        }
        if let Some(problem) = &self.problem {
            return problem.clone();
        }
        match &self.proc {
            None if self.oneshot_done => Condition::Ready,
            None => Condition::Waiting,
            Some(p) if p.ready => Condition::Ready,
            Some(_) => Condition::Starting,
        }
    }
}

/// What the kernel knows of a hardware service's hardware, for [`Slot::derive_condition`].
#[derive(Clone, Copy, Debug)]
pub enum Hardware<'a> {
    /// Not a hardware service.
    None,
    /// An interface: its link's state (`None`: absent).
    Link(Option<&'a LinkState>),
    /// A device service: whether a device matches.
    Device(bool),
}

/// The condition of a link for `ready-when`.
fn link_condition(ready_when: LinkReady, link: Option<&LinkState>) -> Condition {
    let Some(link) = link else {
        return Condition::Absent;
    };
    if ready_when == LinkReady::Present {
        return Condition::Ready;
    }
    if !link.admin_up {
        return Condition::AdminDown;
    }
    if ready_when == LinkReady::Up {
        return Condition::Ready;
    }
    if !link.carrier {
        return Condition::NoCarrier;
    }
    match ready_when {
        LinkReady::Ipv4 if !link.ipv4 => Condition::NoAddress,
        LinkReady::Ipv6Global if !link.ipv6_global => Condition::NoAddress,
        _ => Condition::Ready,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        let config = ServiceConfig::new(
            "x",
            Kind::Process {
                argv: vec!["/bin/x".into()],
            },
        );
        Slot::new(ServiceId(0), Arc::new(config), 8, JobId(0))
    }

    #[test]
    fn a_heavier_problem_replaces_a_lighter_one_never_the_reverse() {
        let mut s = slot();
        let word = |w: &str| Condition::Custom(w.into());
        let saw = |s: &mut Slot, c: Condition| s.observe(c, || "seen".into());
        assert!(saw(&mut s, Condition::Unresponsive));
        // A probe's word replaces another probe's word, not itself.
        assert!(saw(&mut s, word("tunnel-down")));
        assert!(!saw(&mut s, word("tunnel-down")));
        assert_eq!(s.problem, Some(word("tunnel-down")));
        // Memory over its limit outweighs a probe's word, and not the other way round.
        assert!(saw(&mut s, Condition::MemoryHigh));
        assert!(!saw(&mut s, Condition::Unresponsive));
        assert!(!saw(&mut s, word("tunnel-down")));
        assert!(!saw(&mut s, Condition::MemoryHigh));
        assert_eq!(s.problem, Some(Condition::MemoryHigh));
        // The process's own end is always taken, even over another end; nothing lighter
        // replaces it.
        assert!(saw(&mut s, Condition::Exited));
        assert!(saw(&mut s, Condition::StartTimeout));
        assert!(!saw(&mut s, Condition::MemoryHigh));
        assert!(!saw(&mut s, Condition::Unresponsive));
        assert_eq!(s.problem, Some(Condition::StartTimeout));
    }
}
