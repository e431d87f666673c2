//! The state machine: [`Kernel::step`] applies one [`Input`] and appends [`Effect`]s.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{self, Action, Config, Heal, Kind, ServiceConfig};
use crate::config::{defaults, Readiness, Reports};
use crate::graph;
use crate::health::{self, Condition};
use crate::history::{History, Outcome, Record};
use crate::protocol::{
    CheckPurpose, CheckResult, CommandPurpose, Effect, ExitStatus, Input, JobId, LinkState,
    Operator, ServiceId,
};
use crate::service::{AfterStop, FileAction, Proc, Slot, Stop, StopCommand};
use crate::time::Instant;
use crate::timers::{Timer, Timers};

/// The supervisor's pure state machine. See the crate documentation for the protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kernel {
    config: Config,
    slots: Vec<Slot>,
    /// Live services in config order.
    order: Vec<ServiceId>,
    by_name: BTreeMap<String, ServiceId>,
    /// Last known state of every link by name (`None`: absent).
    links: BTreeMap<String, LinkState>,
    /// Interface services by link name.
    link_services: BTreeMap<String, Vec<ServiceId>>,
    /// Watched paths and who reacts to them.
    watches: BTreeMap<String, Vec<(ServiceId, FileAction)>>,
    timers: Timers,
    next_job: u64,
    now: Instant,
    booted: bool,
    shutting_down: bool,
    shutdown_complete: bool,
    /// Services to re-derive before the step ends; always empty between steps.
    #[serde(skip)]
    dirty: VecDeque<ServiceId>,
    #[serde(skip)]
    queued: Vec<bool>,
}

/// What the medical rules say to do about an unhealthy service now.
enum Plan {
    /// Nothing to do (healthy, transient, or no heal); the reason when there is one.
    Nothing(Option<String>),
    /// A heal is due but must wait until the instant (settle or backoff).
    Defer(Instant, String),
    /// The strikes are used up: go `given-up`.
    GiveUp,
    /// Make this intervention now, with this settle time.
    Heal(Heal, Duration),
}

/// A bound on re-derivations in one step, far above what any real graph needs: a runaway here
/// is a kernel bug, reported by `check_invariants` rather than looping for ever.
const MAX_PASSES_PER_SERVICE: usize = 64;

impl Kernel {
    /// A kernel for `config`, every service stopped and wanted. Nothing happens until the first
    /// [`Input::Tick`] (see [`Kernel::next_deadline`]), which boots the graph.
    pub fn new(config: Config) -> Kernel {
        let history_len = config.daemon.history_len;
        let mut kernel = Kernel {
            config: config.clone(),
            slots: Vec::new(),
            order: Vec::new(),
            by_name: BTreeMap::new(),
            links: BTreeMap::new(),
            link_services: BTreeMap::new(),
            watches: BTreeMap::new(),
            timers: Timers::default(),
            next_job: 1,
            now: Instant::ZERO,
            booted: false,
            shutting_down: false,
            shutdown_complete: false,
            dirty: VecDeque::new(),
            queued: Vec::new(),
        };
        for service in &config.services {
            let id = ServiceId(kernel.slots.len() as u32);
            kernel
                .slots
                .push(Slot::new(id, service.clone(), history_len));
            kernel.order.push(id);
            kernel.by_name.insert(service.name.clone(), id);
        }
        kernel.rebuild_indexes();
        kernel
    }

    // ----- getters -------------------------------------------------------------------------

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The id of the service called `name`.
    pub fn lookup(&self, name: &str) -> Option<ServiceId> {
        self.by_name.get(name).copied()
    }

    /// The live services in config order.
    pub fn services(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.order.iter().map(|id| &self.slots[id.index()])
    }

    /// A service's slot (also for removed services that are still stopping).
    pub fn slot(&self, id: ServiceId) -> Option<&Slot> {
        self.slots.get(id.index())
    }

    /// A service's name.
    pub fn name(&self, id: ServiceId) -> &str {
        self.slots
            .get(id.index())
            .map(|s| s.config.name.as_str())
            .unwrap_or("?")
    }

    /// A service's medical history.
    pub fn history(&self, id: ServiceId) -> Option<&History> {
        self.slots.get(id.index()).map(|s| &s.history)
    }

    /// The last known state of a link.
    pub fn link(&self, ifname: &str) -> Option<&LinkState> {
        self.links.get(ifname)
    }

    /// The `now` of the last step.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// When the kernel next wants an [`Input::Tick`]; `None` when nothing is due, ever, until
    /// another input arrives. Before boot this is the origin: tick at once.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.booted {
            return Some(Instant::ZERO);
        }
        self.timers.next()
    }

    /// Whether shutdown has finished (every process gone, every stop command run).
    pub fn is_shut_down(&self) -> bool {
        self.shutdown_complete
    }

    /// How many timers are pending (bounded by services × [`Timer::COUNT`]).
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    // ----- the step --------------------------------------------------------------------------

    /// Applies one input at `now` and appends the effects to `out`, to be carried out in order.
    /// `now` earlier than a previous step's is taken as that step's `now` (time never runs
    /// backwards inside the kernel).
    pub fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        self.now = self.now.max(now);
        if self.queued.len() != self.slots.len() {
            self.queued = vec![false; self.slots.len()];
        }
        match input {
            Input::Tick => {
                if !self.booted {
                    self.boot(out);
                }
                self.fire_timers(out);
            }
            Input::Spawned { service, job, pid } => self.on_spawned(service, job, pid),
            Input::SpawnFailed {
                service,
                job,
                error,
            } => self.on_spawn_failed(service, job, error),
            Input::Exited {
                service,
                job,
                status,
            } => self.on_exited(service, job, status),
            Input::ReadyNotified { service, job } => {
                if self.proc_job(service) == Some(job) {
                    self.mark_ready(service);
                }
            }
            Input::CheckDone {
                service,
                job,
                result,
            } => self.on_check_done(service, job, result),
            Input::MemorySampled {
                service,
                job,
                rss_bytes,
                total_bytes,
            } => self.on_memory(service, job, rss_bytes, total_bytes),
            Input::CommandDone {
                service,
                job,
                status,
            } => self.on_command_done(service, job, status, out),
            Input::FileChanged { path } => self.on_file_changed(&path),
            Input::LinkChanged { ifname, link } => self.on_link(ifname, link),
            Input::Operator(op) => self.on_operator(op, out),
            Input::ReplaceConfig { text } => self.on_replace_config(&text, out),
        }
        if self.booted {
            self.settle_dirty(out);
            if self.shutting_down
                && !self.shutdown_complete
                && self.slots.iter().all(|s| !s.is_live())
            {
                self.shutdown_complete = true;
                out.push(Effect::ShutdownComplete);
            }
        }
    }

    fn boot(&mut self, out: &mut Vec<Effect>) {
        self.booted = true;
        for path in self.watches.keys() {
            out.push(Effect::Watch { path: path.clone() });
        }
        for i in 0..self.order.len() {
            let id = self.order[i];
            self.slots[id.index()].since = self.now;
            self.mark(id);
        }
    }

    fn fire_timers(&mut self, out: &mut Vec<Effect>) {
        while let Some((id, kind)) = self.timers.pop_due(self.now) {
            self.slots[id.index()].timers.fired(kind);
            self.on_timer(id, kind, out);
        }
    }

    // ----- inputs about processes ---------------------------------------------------------

    fn proc_job(&self, id: ServiceId) -> Option<JobId> {
        self.slots.get(id.index())?.proc.map(|p| p.job)
    }

    fn on_spawned(&mut self, id: ServiceId, job: JobId, pid: u32) {
        if self.proc_job(id) != Some(job) {
            return;
        }
        let slot = &mut self.slots[id.index()];
        if let Some(p) = slot.proc.as_mut() {
            p.pid = Some(pid);
        }
        if matches!(slot.config.kind, Kind::Process { .. })
            && slot.config.ready == Readiness::Spawned
        {
            self.mark_ready(id);
        }
    }

    fn on_spawn_failed(&mut self, id: ServiceId, job: JobId, error: String) {
        if self.proc_job(id) != Some(job) {
            return;
        }
        let condition = self.failure_condition(id);
        self.end_proc(id);
        let slot = &mut self.slots[id.index()];
        if slot.wanted {
            slot.problem = Some(condition);
            slot.problem_note = format!("spawn failed: {error}");
        }
        self.mark(id);
    }

    fn failure_condition(&self, id: ServiceId) -> Condition {
        if self.slots[id.index()].is_oneshot() {
            Condition::Failed
        } else {
            Condition::Exited
        }
    }

    fn on_exited(&mut self, id: ServiceId, job: JobId, status: ExitStatus) {
        if self.proc_job(id) != Some(job) {
            return;
        }
        let proc = self.end_proc(id);
        let failure = self.failure_condition(id);
        let slot = &mut self.slots[id.index()];
        match proc.stop {
            // Expected: a stop we asked for (a running oneshot is never also done).
            Some(_) => slot.problem = None,
            None if slot.is_oneshot() && status.success() => {
                slot.oneshot_done = true;
                slot.problem = None;
            }
            None => {
                slot.problem = Some(failure);
                slot.problem_note = status.to_string();
            }
        }
        self.mark(id);
    }

    /// Forgets the process of `id` and everything tied to it (timers, checks in flight) and
    /// lets the services it was holding up in a stop go on.
    fn end_proc(&mut self, id: ServiceId) -> Proc {
        let slot = &mut self.slots[id.index()];
        let proc = slot.proc.take().expect("end_proc with a process");
        slot.ready_check = None;
        slot.probe_check = None;
        for kind in [
            Timer::StartTimeout,
            Timer::StopTimeout,
            Timer::ReadyPoll,
            Timer::Probe,
            Timer::Memory,
        ] {
            self.timers.clear(&mut slot.timers, id, kind);
        }
        self.mark_stop_waiters(id);
        self.mark_successors(id);
        proc
    }

    /// Services ordered `after` this one re-check their ordering: it was tried, became ready
    /// or ended, which its condition alone does not always show (a blocked service stays
    /// `blocked` while its process becomes ready).
    fn mark_successors(&mut self, id: ServiceId) {
        for i in 0..self.slots[id.index()].successors.len() {
            let s = self.slots[id.index()].successors[i];
            self.mark(s);
        }
    }

    fn mark_stop_waiters(&mut self, id: ServiceId) {
        let waiters: Vec<ServiceId> = graph::stops_after(&self.slots[id.index()]).collect();
        for w in waiters {
            self.mark(w);
        }
    }

    fn mark_ready(&mut self, id: ServiceId) {
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
        if slot.problem == Some(Condition::StartTimeout) {
            slot.problem = None;
        }
        if let Some(probe) = &slot.config.probe {
            let at = now + probe.every;
            self.timers.set(&mut slot.timers, id, Timer::Probe, at);
        }
        self.mark(id);
        self.mark_successors(id);
    }

    fn on_check_done(&mut self, id: ServiceId, job: JobId, result: CheckResult) {
        let Some(slot) = self.slots.get_mut(id.index()) else {
            return;
        };
        let now = self.now;
        if slot.ready_check == Some(job) {
            slot.ready_check = None;
            if result == CheckResult::Ok {
                self.mark_ready(id);
            } else {
                slot.ready_poll_every = (slot.ready_poll_every * 2).min(defaults::READY_POLL_MAX);
                let at = now + slot.ready_poll_every;
                self.timers.set(&mut slot.timers, id, Timer::ReadyPoll, at);
            }
            return;
        }
        if slot.probe_check != Some(job) {
            return;
        }
        slot.probe_check = None;
        let Some(probe) = slot.config.probe.clone() else {
            return;
        };
        let healthy_problem = |c: &Option<Condition>| {
            matches!(
                c,
                Some(Condition::Unresponsive) | Some(Condition::Custom(_))
            )
        };
        match result {
            CheckResult::Ok => {
                slot.probe_failures = 0;
                if healthy_problem(&slot.problem) {
                    slot.problem = None;
                }
            }
            CheckResult::Condition(name) if probe.reports == Reports::Condition => {
                let name = name.trim();
                if name == "ready" {
                    slot.probe_failures = 0;
                    if healthy_problem(&slot.problem) {
                        slot.problem = None;
                    }
                } else if slot.problem.is_none() || healthy_problem(&slot.problem) {
                    let reported = match Condition::from_name(name) {
                        Condition::Unresponsive => Condition::Unresponsive,
                        _ => Condition::Custom(name.to_string()),
                    };
                    slot.problem_note = format!("probe reports {name}");
                    slot.problem = Some(reported);
                }
            }
            CheckResult::Condition(_) | CheckResult::Failed(_) | CheckResult::TimedOut => {
                slot.probe_failures = slot.probe_failures.saturating_add(1);
                if slot.probe_failures >= probe.failures
                    && (slot.problem.is_none()
                        || matches!(slot.problem, Some(Condition::Custom(_))))
                {
                    slot.problem = Some(Condition::Unresponsive);
                    slot.problem_note = match result {
                        CheckResult::Failed(why) => {
                            format!("{} failed probes, last: {why}", slot.probe_failures)
                        }
                        _ => format!("{} failed probes, last timed out", slot.probe_failures),
                    };
                }
            }
        }
        if slot.running().is_some_and(|p| p.ready) {
            let at = now + probe.every;
            self.timers.set(&mut slot.timers, id, Timer::Probe, at);
        }
        self.mark(id);
    }

    fn on_memory(&mut self, id: ServiceId, job: JobId, rss: u64, total: u64) {
        if self.proc_job(id) != Some(job) {
            return;
        }
        let slot = &mut self.slots[id.index()];
        let Some(limit) = slot.config.memory_max else {
            return;
        };
        let limit = limit.bytes(total);
        if rss > limit {
            if slot.problem.is_none()
                || matches!(
                    slot.problem,
                    Some(Condition::Unresponsive) | Some(Condition::Custom(_))
                )
            {
                slot.problem = Some(Condition::MemoryHigh);
                slot.problem_note = format!("rss {} KiB > limit {} KiB", rss / 1024, limit / 1024);
            }
        } else if slot.problem == Some(Condition::MemoryHigh) {
            slot.problem = None;
        }
        self.mark(id);
    }

    fn on_command_done(
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

    // ----- files, links ---------------------------------------------------------------------

    fn on_file_changed(&mut self, path: &str) {
        let Some(watchers) = self.watches.get(path) else {
            return;
        };
        let now = self.now;
        for &(id, action) in watchers {
            let slot = &mut self.slots[id.index()];
            slot.file_pending = slot.file_pending.max(Some(action));
            let at = now + slot.config.debounce;
            self.timers.set(&mut slot.timers, id, Timer::Debounce, at);
        }
    }

    fn on_link(&mut self, ifname: String, link: Option<LinkState>) {
        match link {
            Some(state) => self.links.insert(ifname.clone(), state),
            None => self.links.remove(&ifname),
        };
        if let Some(ids) = self.link_services.get(&ifname) {
            for id in ids.clone() {
                self.mark(id);
            }
        }
    }

    // ----- operator -----------------------------------------------------------------------

    fn on_operator(&mut self, op: Operator, out: &mut Vec<Effect>) {
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
                self.record(id, condition, None, None, note, out);
                self.new_fact(id);
                let slot = &mut self.slots[id.index()];
                slot.wanted = true;
                slot.stopped_for_needs = false; // the operator acts at once
                if let Some(stop) = slot.proc.as_mut().and_then(|p| p.stop.as_mut()) {
                    stop.then = AfterStop::Start;
                }
            }
            Operator::Stop(_) => {
                self.record(id, condition, None, None, note, out);
                self.slots[id.index()].wanted = false;
                self.stop_service(id, AfterStop::Nothing);
            }
            Operator::Restart(_) => {
                self.record(id, condition, Some(Heal::Restart), None, note, out);
                self.new_fact(id);
                self.slots[id.index()].wanted = true;
                self.slots[id.index()].stopped_for_needs = false;
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

    fn shutdown(&mut self, out: &mut Vec<Effect>) {
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
            self.mark(id);
        }
    }

    /// A new fact (DESIGN.md §2): strikes and `given-up` are cleared. The settle time of the
    /// last intervention still stands.
    fn new_fact(&mut self, id: ServiceId) {
        let slot = &mut self.slots[id.index()];
        slot.strikes = 0;
        slot.given_up = false;
        slot.next_allowed = slot.settle_until;
        self.timers.clear(&mut slot.timers, id, Timer::RetryAfter);
        self.mark(id);
    }

    // ----- config replacement ---------------------------------------------------------------

    fn on_replace_config(&mut self, text: &str, out: &mut Vec<Effect>) {
        let new = match config::parse(text, "config") {
            Ok(c) => c,
            Err(errors) => {
                out.push(Effect::Notice {
                    message: format!("new config refused, nothing changed:\n{errors}"),
                });
                return;
            }
        };
        let old_paths: BTreeSet<String> = self.watches.keys().cloned().collect();
        let history_len = new.daemon.history_len;
        let mut new_order = Vec::with_capacity(new.services.len());
        let mut changed = Vec::new();
        for service in &new.services {
            match self.by_name.get(&service.name).copied() {
                Some(id) if self.slots[id.index()].config == *service => new_order.push(id),
                Some(id) => {
                    self.slots[id.index()].config = service.clone();
                    changed.push(id);
                    new_order.push(id);
                }
                None => {
                    let id = ServiceId(self.slots.len() as u32);
                    let mut slot = Slot::new(id, service.clone(), history_len);
                    slot.wanted = !self.shutting_down;
                    slot.since = self.now;
                    self.slots.push(slot);
                    self.queued.push(false);
                    new_order.push(id);
                    self.by_name.insert(service.name.clone(), id);
                    self.mark(id);
                }
            }
        }
        let kept: BTreeSet<ServiceId> = new_order.iter().copied().collect();
        for id in self.order.clone() {
            if !kept.contains(&id) {
                let slot = &mut self.slots[id.index()];
                slot.removed = true;
                slot.wanted = false;
                self.by_name.remove(&slot.config.name);
                self.stop_service(id, AfterStop::Nothing);
                self.mark(id);
            }
        }
        self.order = new_order;
        self.config = new;
        self.rebuild_indexes();
        for id in changed {
            self.note(id, "definition changed".into(), out);
            self.new_fact(id);
            self.restart(id);
        }
        // Every service re-derives: needs may have changed anywhere.
        for i in 0..self.slots.len() {
            self.mark(ServiceId(i as u32));
        }
        let new_paths: BTreeSet<String> = self.watches.keys().cloned().collect();
        for path in old_paths.difference(&new_paths) {
            out.push(Effect::Unwatch { path: path.clone() });
        }
        for path in new_paths.difference(&old_paths) {
            out.push(Effect::Watch { path: path.clone() });
        }
    }

    /// Rebuilds the graph edges, the need counters, the link and watch maps.
    fn rebuild_indexes(&mut self) {
        graph::link_edges(&mut self.slots, &self.by_name);
        for i in 0..self.slots.len() {
            let unhealthy = self.slots[i]
                .needs
                .iter()
                .filter(|n| !self.slots[n.index()].healthy)
                .count() as u32;
            self.slots[i].unhealthy_needs = unhealthy;
        }
        self.link_services.clear();
        self.watches.clear();
        for &id in &self.order {
            let config = &self.slots[id.index()].config;
            if let Kind::Interface { ifname, .. } = &config.kind {
                self.link_services
                    .entry(ifname.clone())
                    .or_default()
                    .push(id);
            }
            for (paths, action) in [
                (&config.reload_on, FileAction::Reload),
                (&config.restart_on, FileAction::Restart),
            ] {
                for path in paths {
                    self.watches
                        .entry(path.clone())
                        .or_default()
                        .push((id, action));
                }
            }
        }
        self.queued = vec![false; self.slots.len()];
    }

    // ----- timers ---------------------------------------------------------------------------

    fn on_timer(&mut self, id: ServiceId, kind: Timer, out: &mut Vec<Effect>) {
        let now = self.now;
        match kind {
            Timer::Settle => {
                let slot = &mut self.slots[id.index()];
                if let Some(seq) = slot.pending_attempt.take() {
                    let outcome = if slot.healthy {
                        Outcome::Resolved
                    } else {
                        Outcome::Unresolved
                    };
                    if let Some(record) = slot.history.settle(seq, outcome) {
                        out.push(Effect::Event {
                            service: id,
                            record,
                        });
                    }
                }
            }
            Timer::Retry => {}
            Timer::StartTimeout => {
                let slot = &mut self.slots[id.index()];
                if slot.running().is_some_and(|p| !p.ready) {
                    slot.problem = Some(Condition::StartTimeout);
                    slot.problem_note = format!(
                        "not ready after {}",
                        humantime::format_duration(slot.config.start_timeout)
                    );
                }
            }
            Timer::StopTimeout => {
                let slot = &mut self.slots[id.index()];
                if let Some(p) = slot.proc.as_mut() {
                    if let Some(stop) = p.stop.as_mut() {
                        if !stop.killed {
                            stop.killed = true;
                            out.push(Effect::Kill {
                                service: id,
                                job: p.job,
                            });
                            let condition = slot.condition.clone();
                            let note = format!(
                                "still running {} after SIG{}: SIGKILL to the group",
                                humantime::format_duration(slot.config.stop_timeout),
                                slot.config.stop_signal.name()
                            );
                            self.record(id, condition, None, None, note, out);
                        }
                    }
                } else if let StopCommand::Running(_) = slot.stop_command {
                    self.finish_stop_command(id);
                    self.note(id, "stop command timed out".into(), out);
                }
            }
            Timer::ReadyPoll => {
                let slot = &mut self.slots[id.index()];
                if let (Some(_), Readiness::Poll(check)) = (slot.running(), &slot.config.ready) {
                    let job = JobId(self.next_job);
                    self.next_job += 1;
                    slot.ready_check = Some(job);
                    out.push(Effect::Check {
                        service: id,
                        job,
                        check: check.clone(),
                        timeout: defaults::PROBE_TIMEOUT.min(slot.config.start_timeout),
                        purpose: CheckPurpose::Ready,
                    });
                }
            }
            Timer::Probe => {
                let slot = &mut self.slots[id.index()];
                if let (Some(p), Some(probe)) = (slot.running(), &slot.config.probe) {
                    if p.ready && slot.probe_check.is_none() {
                        let job = JobId(self.next_job);
                        self.next_job += 1;
                        slot.probe_check = Some(job);
                        out.push(Effect::Check {
                            service: id,
                            job,
                            check: probe.check.clone(),
                            timeout: probe.timeout,
                            purpose: CheckPurpose::Probe,
                        });
                    }
                }
            }
            Timer::Memory => {
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
            Timer::Debounce => self.on_debounced(id, out),
            Timer::RetryAfter => {
                if self.slots[id.index()].given_up {
                    self.note(id, "retry-after elapsed".into(), out);
                    self.new_fact(id);
                }
            }
            Timer::Forgive => {
                let slot = &mut self.slots[id.index()];
                if slot.healthy && slot.needs_restarts > 0 {
                    slot.needs_restarts = 0;
                    slot.start_gate = now;
                }
                if slot.healthy && slot.strikes > 0 {
                    let note = format!(
                        "forgiven: healthy for {}, {} strikes cleared",
                        humantime::format_duration(slot.config.forgive_after),
                        slot.strikes
                    );
                    slot.strikes = 0;
                    slot.next_allowed = slot.settle_until;
                    // An interface that gave up and then came back by itself is forgiven too.
                    slot.given_up = false;
                    self.timers.clear(&mut slot.timers, id, Timer::RetryAfter);
                    self.note(id, note, out);
                }
            }
        }
        self.mark(id);
    }

    fn on_debounced(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let Some(action) = self.slots[id.index()].file_pending.take() else {
            return;
        };
        self.new_fact(id);
        let slot = &self.slots[id.index()];
        if !slot.wanted || slot.running().is_none() {
            return;
        }
        let condition = slot.condition.clone();
        match action {
            FileAction::Reload => {
                self.record(
                    id,
                    condition,
                    Some(Heal::Reload),
                    None,
                    "reload-on: file changed".into(),
                    out,
                );
                self.reload(id, out);
            }
            FileAction::Restart => {
                self.record(
                    id,
                    condition,
                    Some(Heal::Restart),
                    None,
                    "restart-on: file changed".into(),
                    out,
                );
                self.restart(id);
            }
        }
    }

    // ----- the worklist -----------------------------------------------------------------------

    fn mark(&mut self, id: ServiceId) {
        // Before boot nothing is derived; boot marks every service.
        if !self.booted {
            return;
        }
        let i = id.index();
        if i >= self.queued.len() {
            self.queued.resize(self.slots.len(), false);
        }
        if !self.queued[i] {
            self.queued[i] = true;
            self.dirty.push_back(id);
        }
    }

    fn settle_dirty(&mut self, out: &mut Vec<Effect>) {
        let mut budget = MAX_PASSES_PER_SERVICE * (self.slots.len() + 1);
        while let Some(id) = self.dirty.pop_front() {
            self.queued[id.index()] = false;
            self.reconcile(id, out);
            budget -= 1;
            if budget == 0 {
                out.push(Effect::Notice {
                    message: "kernel: re-derivation did not settle; this is a bug".into(),
                });
                break;
            }
        }
    }

    /// Re-derives the condition of `id`, propagates a change of health to its dependents,
    /// writes the history, and acts: starts, stops, heals.
    fn reconcile(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let link = match &self.slots[id.index()].config.kind {
            Kind::Interface { ifname, .. } => self.links.get(ifname).copied(),
            _ => None,
        };
        let condition = self.slots[id.index()].derive_condition(link.as_ref());
        if condition != self.slots[id.index()].condition {
            self.on_condition_change(id, condition, out);
        }
        self.act(id, out);
    }

    fn on_condition_change(&mut self, id: ServiceId, condition: Condition, out: &mut Vec<Effect>) {
        let now = self.now;
        let verdict_healthy = health::verdict(&self.slots[id.index()].config, &condition).healthy;
        let slot = &mut self.slots[id.index()];
        slot.condition = condition.clone();
        slot.since = now;
        self.mark_successors(id);
        let slot = &mut self.slots[id.index()];
        if verdict_healthy != slot.healthy {
            slot.healthy = verdict_healthy;
            if verdict_healthy {
                // Only a service with strikes has something to forgive: no idle wake-ups.
                if slot.strikes > 0 || slot.needs_restarts > 0 {
                    let at = now + slot.config.forgive_after;
                    self.timers.set(&mut slot.timers, id, Timer::Forgive, at);
                }
                if let Some(seq) = slot.pending_attempt.take() {
                    if let Some(record) = slot.history.settle(seq, Outcome::Resolved) {
                        out.push(Effect::Event {
                            service: id,
                            record,
                        });
                    }
                }
            } else {
                self.timers.clear(&mut slot.timers, id, Timer::Forgive);
            }
            let dependents = self.slots[id.index()].dependents.clone();
            for d in dependents {
                let dep = &mut self.slots[d.index()];
                if verdict_healthy {
                    dep.unhealthy_needs -= 1;
                    if dep.unhealthy_needs == 0 {
                        // A need went from unhealthy to healthy: a new fact for the dependent.
                        self.new_fact(d);
                    }
                } else {
                    dep.unhealthy_needs += 1;
                }
                self.mark(d);
            }
        }
        if condition.is_transient() {
            return;
        }
        let slot = &self.slots[id.index()];
        let mut note = match &condition {
            Condition::Blocked => format!("blocked by {}", self.unhealthy_need_names(id)),
            Condition::GivenUp => format!("given up after {} strikes", slot.strikes),
            Condition::Stopped if self.shutting_down => "shutdown".into(),
            Condition::Ready | Condition::Stopped => String::new(),
            _ if slot.problem.as_ref() == Some(&condition) => slot.problem_note.clone(),
            _ => String::new(),
        };
        if let Plan::Nothing(Some(why)) | Plan::Defer(_, why) = self.plan(id) {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str(&why);
        }
        self.record(id, condition, None, None, note, out);
    }

    fn unhealthy_need_names(&self, id: ServiceId) -> String {
        let names: Vec<&str> = self.slots[id.index()]
            .needs
            .iter()
            .filter(|n| !self.slots[n.index()].healthy)
            .map(|n| self.slots[n.index()].config.name.as_str())
            .collect();
        names.join(", ")
    }

    /// Writes a plain note (no heal, no outcome) at the service's current condition.
    fn note(&mut self, id: ServiceId, note: String, out: &mut Vec<Effect>) {
        let condition = self.slots[id.index()].condition.clone();
        self.record(id, condition, None, None, note, out);
    }

    /// A oneshot's stop command is over (finished or given up on): it is undone, and what
    /// waited for it to stop may go on.
    fn finish_stop_command(&mut self, id: ServiceId) {
        let slot = &mut self.slots[id.index()];
        slot.stop_command = StopCommand::Idle;
        slot.oneshot_done = false;
        self.timers.clear(&mut slot.timers, id, Timer::StopTimeout);
        self.mark_stop_waiters(id);
        self.mark(id);
    }

    fn record(
        &mut self,
        id: ServiceId,
        condition: Condition,
        heal: Option<Heal>,
        outcome: Option<Outcome>,
        note: String,
        out: &mut Vec<Effect>,
    ) -> u64 {
        let now = self.now;
        let record = self.slots[id.index()]
            .history
            .push(now, condition, heal, outcome, note);
        let seq = record.seq;
        out.push(Effect::Event {
            service: id,
            record,
        });
        seq
    }

    // ----- acting -------------------------------------------------------------------------------

    fn act(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
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
                self.slots[id.index()].stopped_for_needs = true;
                self.stop_service(id, AfterStop::Nothing);
                self.advance_stop(id, out);
                self.mark(id);
            }
            return;
        }
        if slot.given_up {
            return;
        }
        if !slot.is_interface()
            && slot.proc.is_none()
            && slot.problem.is_none()
            && !slot.oneshot_done
            && slot.stop_command == StopCommand::Idle
        {
            if !self.after_satisfied(id) {
                return;
            }
            if slot.stopped_for_needs {
                // Started again because its needs came back: a flapping need must not cycle
                // it faster than a restart's settle time, doubling while the flapping goes on.
                let now = self.now;
                let slot = &mut self.slots[id.index()];
                if now < slot.start_gate {
                    let at = slot.start_gate;
                    self.timers
                        .set_earliest(&mut slot.timers, id, Timer::Retry, at);
                    return;
                }
                slot.stopped_for_needs = false;
                slot.needs_restarts = slot.needs_restarts.saturating_add(1);
                let settle = Heal::Restart.default_settle();
                slot.start_gate =
                    now + backoff(settle, slot.needs_restarts, slot.config.max_backoff);
            }
            self.start(id, out);
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
                slot.given_up = true;
                if let Some(after) = slot.config.retry_after {
                    self.timers
                        .set(&mut slot.timers, id, Timer::RetryAfter, now + after);
                }
                self.mark(id);
            }
            Plan::Heal(heal, settle) => self.intervene(id, heal, settle, out),
        }
    }

    /// What the medical rules say about `id` in its current condition.
    fn plan(&self, id: ServiceId) -> Plan {
        let slot = &self.slots[id.index()];
        if !slot.wanted || self.shutting_down || slot.condition.is_transient() {
            return Plan::Nothing(None);
        }
        let verdict = health::verdict(&slot.config, &slot.condition);
        if verdict.healthy {
            return Plan::Nothing(None);
        }
        match slot.condition {
            Condition::Blocked | Condition::GivenUp | Condition::Stopped => {
                return Plan::Nothing(None)
            }
            _ => {}
        }
        if verdict.heal.is_empty() {
            return Plan::Nothing(Some(format!("no heal for {}", slot.condition)));
        }
        if slot.strikes >= slot.config.give_up_after {
            // The last intervention gets its whole settle time to work before giving up.
            if self.now < slot.settle_until {
                let at = slot.settle_until;
                return Plan::Defer(at, format!("settling until {at}, then giving up"));
            }
            return Plan::GiveUp;
        }
        let at = slot.settle_until.max(slot.next_allowed);
        if self.now < at {
            let why = if self.now < slot.settle_until {
                format!("settling until {at}")
            } else {
                format!("backing off until {at} after {} strikes", slot.strikes)
            };
            return Plan::Defer(at, why);
        }
        let rung = (slot.strikes as usize).min(verdict.heal.len() - 1);
        let heal = verdict.heal[rung].clone();
        let settle = health::settle_of(&verdict, &heal);
        Plan::Heal(heal, settle)
    }

    fn intervene(&mut self, id: ServiceId, heal: Heal, settle: Duration, out: &mut Vec<Effect>) {
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        slot.strikes += 1;
        let strikes = slot.strikes;
        let backoff = backoff(settle, strikes, slot.config.max_backoff);
        slot.settle_until = now + settle;
        slot.next_allowed = now + settle.max(backoff);
        let condition = slot.condition.clone();
        let note = format!("strike {strikes} of {}", slot.config.give_up_after);
        let seq = self.record(
            id,
            condition,
            Some(heal.clone()),
            Some(Outcome::Pending),
            note,
            out,
        );
        let slot = &mut self.slots[id.index()];
        slot.pending_attempt = Some(seq);
        let settle_at = slot.settle_until;
        self.timers
            .set(&mut slot.timers, id, Timer::Settle, settle_at);
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
        self.mark(id);
    }

    fn run_command(
        &mut self,
        id: ServiceId,
        argv: Vec<String>,
        purpose: CommandPurpose,
        out: &mut Vec<Effect>,
    ) -> JobId {
        let job = JobId(self.next_job);
        self.next_job += 1;
        out.push(Effect::RunCommand {
            service: id,
            job,
            argv,
            purpose,
        });
        job
    }

    /// Stop (if running) then start. With nothing running, the start happens when `act` next
    /// looks at the service.
    fn restart(&mut self, id: ServiceId) {
        let slot = &mut self.slots[id.index()];
        slot.problem = None;
        // Stop, then start: a done oneshot is undone first (its `stop` command, if it has one);
        // it starts again once that is over.
        self.undo_oneshot(id);
        if self.slots[id.index()].proc.is_some() {
            self.stop_service(id, AfterStop::Start);
        }
        self.mark(id);
    }

    fn kill_and_start(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let slot = &mut self.slots[id.index()];
        slot.problem = None;
        if let Some(p) = slot.proc.as_mut() {
            out.push(Effect::Kill {
                service: id,
                job: p.job,
            });
            p.stop = Some(Stop {
                signaled: true,
                killed: true,
                then: AfterStop::Start,
            });
        } else if slot.is_oneshot() {
            slot.oneshot_done = false;
        }
        self.mark(id);
    }

    fn reload(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let slot = &self.slots[id.index()];
        match (slot.running(), slot.config.reload.clone()) {
            (Some(p), Some(Action::Signal(signal))) => out.push(Effect::Signal {
                service: id,
                job: p.job,
                signal,
            }),
            (Some(_), Some(Action::Run(argv))) => {
                self.run_command(id, argv, CommandPurpose::Reload, out);
            }
            _ => self.restart(id),
        }
    }

    /// Asks `id` to stop; the stop signal goes out once nothing that must stop first is still
    /// up ([`Kernel::advance_stop`]).
    fn stop_service(&mut self, id: ServiceId, then: AfterStop) {
        let slot = &mut self.slots[id.index()];
        self.timers.clear(&mut slot.timers, id, Timer::Retry);
        self.timers.clear(&mut slot.timers, id, Timer::StartTimeout);
        self.timers.clear(&mut slot.timers, id, Timer::ReadyPoll);
        self.timers.clear(&mut slot.timers, id, Timer::Probe);
        self.timers.clear(&mut slot.timers, id, Timer::Memory);
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
    fn undo_oneshot(&mut self, id: ServiceId) {
        let slot = &mut self.slots[id.index()];
        if !slot.oneshot_done || slot.stop_command != StopCommand::Idle {
            return;
        }
        if matches!(slot.config.kind, Kind::Oneshot { stop: Some(_), .. }) {
            slot.stop_command = StopCommand::Pending;
        } else {
            slot.oneshot_done = false;
            self.mark_stop_waiters(id);
        }
    }

    /// Sends the stop signal (or runs the oneshot's stop command) once every service that must
    /// stop first has stopped.
    fn advance_stop(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
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
        let stop_timeout = slot.config.stop_timeout;
        if waiting_signal {
            let p = slot.proc.as_mut().expect("checked above");
            if let Some(stop) = p.stop.as_mut() {
                stop.signaled = true;
            }
            out.push(Effect::Signal {
                service: id,
                job: p.job,
                signal: slot.config.stop_signal,
            });
            self.timers
                .set(&mut slot.timers, id, Timer::StopTimeout, now + stop_timeout);
        } else if let Kind::Oneshot {
            stop: Some(argv), ..
        } = &slot.config.kind
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
        let up = s.proc.is_some() || s.oneshot_done;
        up && (!s.wanted
            || self.shutting_down
            || (s.config.stop_when_needs_fail && s.unhealthy_needs > 0))
    }

    fn after_satisfied(&self, id: ServiceId) -> bool {
        self.slots[id.index()].after.iter().all(|a| {
            let s = &self.slots[a.index()];
            s.is_interface()
                || !s.wanted
                || s.given_up
                || (s.ever_started && !s.proc.is_some_and(|p| !p.ready && p.stop.is_none()))
        })
    }

    fn start(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let now = self.now;
        let job = JobId(self.next_job);
        self.next_job += 1;
        let slot = &mut self.slots[id.index()];
        slot.proc = Some(Proc {
            job,
            pid: None,
            started: now,
            ready: false,
            stop: None,
        });
        slot.problem = None;
        slot.problem_note.clear();
        slot.ever_started = true;
        slot.probe_failures = 0;
        slot.ready_poll_every = defaults::READY_POLL_FIRST;
        out.push(Effect::Spawn {
            service: id,
            job,
            config: slot.config.clone(),
        });
        let config: Arc<ServiceConfig> = slot.config.clone();
        self.timers.set(
            &mut slot.timers,
            id,
            Timer::StartTimeout,
            now + config.start_timeout,
        );
        if matches!(config.kind, Kind::Process { .. }) {
            if let Readiness::Poll(_) = config.ready {
                self.timers.set(
                    &mut slot.timers,
                    id,
                    Timer::ReadyPoll,
                    now + defaults::READY_POLL_FIRST,
                );
            }
            if config.memory_max.is_some() {
                self.timers.set(
                    &mut slot.timers,
                    id,
                    Timer::Memory,
                    now + config.memory_every,
                );
            }
        }
        self.mark(id);
    }

    // ----- invariants ---------------------------------------------------------------------------

    /// Checks the kernel's internal consistency; the simulator calls it after every step.
    /// Returns every broken invariant, each saying which.
    pub fn check_invariants(&self) -> Result<(), Vec<String>> {
        let mut broken = Vec::new();
        if !self.dirty.is_empty() {
            broken.push(format!(
                "{} services left dirty after a step",
                self.dirty.len()
            ));
        }
        let per: Vec<_> = self.slots.iter().map(|s| &s.timers).collect();
        if let Err(e) = self.timers.check(&per) {
            broken.push(e);
        }
        for slot in &self.slots {
            let name = &slot.config.name;
            let unhealthy = slot
                .needs
                .iter()
                .filter(|n| !self.slots[n.index()].healthy)
                .count() as u32;
            if unhealthy != slot.unhealthy_needs {
                broken.push(format!(
                    "{name}: unhealthy_needs is {} but {unhealthy} needs are unhealthy",
                    slot.unhealthy_needs
                ));
            }
            if self.booted {
                let healthy = health::verdict(&slot.config, &slot.condition).healthy;
                if healthy != slot.healthy {
                    broken.push(format!(
                        "{name}: health bit disagrees with {}",
                        slot.condition
                    ));
                }
            }
            if slot.history.len() > slot.history.capacity() as usize {
                broken.push(format!("{name}: history over its bound"));
            }
            if slot.strikes > slot.config.give_up_after {
                broken.push(format!(
                    "{name}: {} strikes exceed give-up-after {}",
                    slot.strikes, slot.config.give_up_after
                ));
            }
            if slot.proc.is_some() && slot.stop_command != StopCommand::Idle {
                broken.push(format!("{name}: a process and a stop command at once"));
            }
            if self.booted && slot.healthy && slot.unhealthy_needs > 0 {
                broken.push(format!("{name}: healthy while a need is unhealthy"));
            }
        }
        if self.timers.len() > self.slots.len() * Timer::COUNT {
            broken.push("more timers than services × kinds".into());
        }
        if broken.is_empty() {
            Ok(())
        } else {
            Err(broken)
        }
    }
}

/// The wait after the `strikes`-th intervention: `min(settle × 2^(strikes−1), max_backoff)`.
pub fn backoff(settle: Duration, strikes: u32, max_backoff: Duration) -> Duration {
    let factor = 1u32 << strikes.saturating_sub(1).min(30);
    settle.saturating_mul(factor).min(max_backoff)
}

/// Every record of the history of `id` rendered for humans (for tests and the CLI).
pub fn render_history(history: &History) -> Vec<String> {
    history.iter().map(render_record).collect()
}

/// One record as `12.000s exited restart (pending): strike 1 of 10`.
pub fn render_record(r: &Record) -> String {
    let mut line = format!("{} {}", r.at, r.condition);
    if let Some(h) = &r.heal {
        line.push(' ');
        line.push_str(&h.describe());
    }
    if let Some(o) = r.outcome {
        line.push_str(&format!(" ({})", o.name()));
    }
    if !r.note.is_empty() {
        line.push_str(": ");
        line.push_str(&r.note);
    }
    line
}
