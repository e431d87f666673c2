//! The state machine: [`Kernel::step`] applies one [`Input`] and appends [`Effect`]s.
//!
//! This file holds the step, the worklist that re-derives conditions and the invariants. The
//! rules live by concern: [`crate::rules`] (what to try, when, and when to give up),
//! [`crate::observe`] (exits, readiness, probes, memory), [`crate::intervene`] (starts, heals,
//! operator commands), [`crate::stop`] (stop order and shutdown), [`crate::replace`] (a new
//! config).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Kind};
use crate::graph;
use crate::health::{self, Condition};
use crate::history::{History, Outcome};
use crate::protocol::{Effect, Input, JobId, LinkState, ServiceId, WallClock};
use crate::rules::{self, Plan};
use crate::service::{FileAction, Hardware, Slot};
use crate::time::Instant;
use crate::timers::{Timer, Timers};
use crate::view::ServiceView;

/// The supervisor's pure state machine. See the crate documentation for the protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kernel {
    pub(crate) config: Config,
    pub(crate) slots: Vec<Slot>,
    /// Live services in config order.
    pub(crate) order: Vec<ServiceId>,
    pub(crate) by_name: BTreeMap<String, ServiceId>,
    /// Last known state of every link by name (`None`: absent).
    pub(crate) links: BTreeMap<String, LinkState>,
    /// Interface services by link name.
    pub(crate) link_services: BTreeMap<String, Vec<ServiceId>>,
    /// Present devices, as the adapter last told (sorted by devpath).
    pub(crate) devices: Vec<crate::devices::Device>,
    /// Device services, in config order (rebuilt with the indexes).
    pub(crate) device_services: Vec<ServiceId>,
    /// The device each device service matches now.
    pub(crate) device_matches: BTreeMap<ServiceId, crate::devices::Device>,
    /// Watched paths and who reacts to them.
    pub(crate) watches: BTreeMap<String, Vec<(ServiceId, FileAction)>>,
    /// What each service publishes (DESIGN §9), by service name.
    pub(crate) outputs: BTreeMap<String, crate::outputs::Outputs>,
    /// The generation in force of every secret (DESIGN §10): never its bytes.
    pub(crate) secrets: BTreeMap<String, u64>,
    /// The change waiting for `medic confirm`, with its deadline.
    pub(crate) pending: Option<crate::secrets::Pending>,
    pub(crate) timers: Timers,
    next_job: u64,
    pub(crate) now: Instant,
    pub(crate) booted: bool,
    pub(crate) shutting_down: bool,
    pub(crate) shutdown_complete: bool,
    /// The wall clock, as last told, and the `now` it was told in.
    pub(crate) wall: Option<(WallClock, Instant)>,
    /// Whether the wall clock was trusted at the end of the last step.
    pub(crate) clock_trusted: bool,
    /// Services to re-derive before the step ends; always empty between steps.
    #[serde(skip)]
    dirty: VecDeque<ServiceId>,
    #[serde(skip)]
    queued: Vec<bool>,
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
            devices: Vec::new(),
            device_services: Vec::new(),
            device_matches: BTreeMap::new(),
            watches: BTreeMap::new(),
            timers: Timers::default(),
            next_job: 1,
            now: Instant::ZERO,
            booted: false,
            shutting_down: false,
            shutdown_complete: false,
            wall: None,
            clock_trusted: false,
            outputs: BTreeMap::new(),
            secrets: BTreeMap::new(),
            pending: None,
            dirty: VecDeque::new(),
            queued: Vec::new(),
        };
        for service in &config.services {
            let id = ServiceId(kernel.slots.len() as u32);
            let first_job = JobId(kernel.next_job);
            kernel
                .slots
                .push(Slot::new(id, service.clone(), history_len, first_job));
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
    pub fn views(&self) -> impl Iterator<Item = ServiceView<'_>> + '_ {
        self.order
            .iter()
            .map(|id| ServiceView::new(&self.slots[id.index()]))
    }

    /// One service (also a removed one that is still stopping; not one that has stopped).
    pub fn status(&self, id: ServiceId) -> Option<ServiceView<'_>> {
        self.slots
            .get(id.index())
            .filter(|s| !s.is_free())
            .map(ServiceView::new)
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
        let confirm = self.pending.as_ref().map(|p| p.deadline);
        match (self.timers.next(), confirm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether shutdown has finished (every process gone or abandoned, every stop command run).
    pub fn is_shut_down(&self) -> bool {
        self.shutdown_complete
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
        if let Some((service, job)) = input.job() {
            if self.stale(service, job) {
                return; // about a service that has left its slot: nothing changes
            }
        }
        let was_booted = self.booted;
        let clock_read = matches!(input, Input::WallClock(_));
        match input {
            Input::Tick => {
                if !self.booted {
                    self.boot(out);
                }
                self.fire_timers(out);
                self.roll_back_if_due(out);
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
            } => self.on_exited(service, job, status, out),
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
            } => self.on_memory(service, job, rss_bytes, total_bytes, out),
            Input::CommandDone {
                service,
                job,
                status,
            } => self.on_command_done(service, job, status, out),
            Input::FileChanged { path } => self.on_file_changed(&path),
            Input::LinkChanged { ifname, link } => self.on_link(ifname, link),
            Input::Operator(op) => self.on_operator(op, out),
            Input::ReplaceConfig { text } => self.on_replace_config(&text, out),
            Input::SpawnDeferred {
                service,
                job,
                error,
            } => self.on_spawn_deferred(service, job, error, out),
            Input::WallClock(wall) => self.on_wall_clock(wall, out),
            Input::Resume(saved) => self.on_resume(*saved, out),
            Input::Devices(devices) => self.on_devices(devices, out),
            Input::SetOutputs { service, outputs } => self.on_set_outputs(&service, outputs, out),
            Input::RenderDone {
                service,
                job,
                result,
            } => self.on_render_done(service, job, result, out),
            Input::SecretSet {
                name,
                generation,
                confirm_within,
            } => self.on_secret_set(name, generation, confirm_within, out),
            Input::SecretRemoved { name } => self.on_secret_removed(name, out),
            Input::ApplyConfig {
                text,
                confirm_within,
            } => self.on_apply_config(&text, confirm_within, out),
            Input::Confirm => self.on_confirm(out),
        }
        if self.booted {
            self.settle_dirty(out);
            let trust_came = self.follow_clock_trust(out);
            if !was_booted || clock_read || trust_came {
                self.catch_up_all(out);
                self.settle_dirty(out);
            }
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
        // A process adopted from a previous daemon may hold a copy of a secret that is no
        // longer in force (a push that daemon never saw confirmed is rolled back by the store
        // at start): its copies are made again, which changes nothing when they are right.
        for i in 0..self.order.len() {
            let id = self.order[i];
            let copies = self.slots[id.index()]
                .config
                .templates
                .iter()
                .any(|t| t.secrets_read().next().is_some());
            if copies && self.slots[id.index()].running().is_some() {
                self.on_render_timer(id, out);
            }
        }
    }

    fn fire_timers(&mut self, out: &mut Vec<Effect>) {
        while let Some((id, kind)) = self.timers.pop_due(self.now) {
            self.slots[id.index()].timers.fired(kind);
            self.on_timer(id, kind, out);
            self.mark(id);
        }
    }

    /// One timer of `id` is due: each kind belongs to one concern.
    fn on_timer(&mut self, id: ServiceId, kind: Timer, out: &mut Vec<Effect>) {
        match kind {
            Timer::Settle => self.settle_outcome(id, out),
            // The worklist re-plans the service: the backoff it waited for is over.
            Timer::Retry => {}
            Timer::StartTimeout => self.on_start_timeout(id),
            Timer::StopTimeout => self.on_stop_timeout(id, out),
            Timer::ReadyPoll => self.poll_ready(id, out),
            Timer::Probe => self.probe(id, out),
            Timer::Memory => self.sample_memory(id, out),
            Timer::Debounce => self.on_debounced(id, out),
            Timer::RetryAfter => {
                if self.slots[id.index()].medical.given_up {
                    self.note(id, "retry-after elapsed".into(), out);
                    self.new_fact(id);
                }
            }
            Timer::Forgive => self.forgive(id, out),
            Timer::Periodic => self.on_periodic(id, out),
            Timer::At => self.on_at(id, out),
            Timer::Render => self.on_render_timer(id, out),
        }
    }

    /// A fresh job id: every spawn, check and command has its own.
    pub(crate) fn new_job(&mut self) -> JobId {
        let job = JobId(self.next_job);
        self.next_job += 1;
        job
    }

    /// Whether an input about `job` of `service` is about a service that no longer holds the
    /// slot (or a slot that never was).
    fn stale(&self, service: ServiceId, job: JobId) -> bool {
        self.slots
            .get(service.index())
            .is_none_or(|s| job < s.first_job)
    }

    pub(crate) fn proc_job(&self, id: ServiceId) -> Option<JobId> {
        self.slots.get(id.index())?.proc_job()
    }

    // ----- facts about links and files ------------------------------------------------------

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

    // ----- the medical record ---------------------------------------------------------------

    /// A new fact (architecture.md §2): strikes and `given-up` are cleared, and so is the wait for
    /// `retry-after`.
    pub(crate) fn new_fact(&mut self, id: ServiceId) {
        let slot = &mut self.slots[id.index()];
        slot.medical.new_fact();
        self.timers.clear(&mut slot.timers, id, Timer::RetryAfter);
        self.forget_render_failure(id);
        self.mark(id);
    }

    fn forgive(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        if !slot.healthy {
            return;
        }
        if let Some(cleared) = slot.medical.forgive(now) {
            let note = format!(
                "forgiven: healthy for {}, {cleared} strikes cleared",
                humantime::format_duration(slot.config.forgive_after),
            );
            self.timers.clear(&mut slot.timers, id, Timer::RetryAfter);
            self.note(id, note, out);
        }
    }

    /// The settle time of the last intervention is over: its outcome is decided and written
    /// (healthy now, and not fallen ill since, is resolved).
    fn settle_outcome(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        let outcome = slot.medical.outcome(slot.healthy);
        if let Some(seq) = slot.medical.pending_attempt.take() {
            if let Some(record) = slot.history.settle(seq, outcome, now) {
                out.push(Effect::Event {
                    service: id,
                    record,
                });
            }
        }
    }

    /// What the medical rules say about `id` now.
    pub(crate) fn plan(&self, id: ServiceId) -> Plan {
        let slot = &self.slots[id.index()];
        if !slot.wanted || self.shutting_down {
            return Plan::Nothing(None);
        }
        rules::plan(&slot.medical, &slot.config, &slot.condition, self.now)
    }

    // ----- history ----------------------------------------------------------------------------

    /// Writes a plain note (no heal, no outcome) at the service's current condition.
    pub(crate) fn note(&mut self, id: ServiceId, note: String, out: &mut Vec<Effect>) {
        let condition = self.slots[id.index()].condition.clone();
        self.record(id, condition, None, None, note, out);
    }

    /// Writes a history record and sends it out as an event; returns its number.
    pub(crate) fn record(
        &mut self,
        id: ServiceId,
        condition: Condition,
        heal: Option<crate::config::Heal>,
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

    // ----- the worklist -----------------------------------------------------------------------

    /// Sizes the worklist's marks to the slots (after slots were added).
    pub(crate) fn reset_worklist_marks(&mut self) {
        self.queued = vec![false; self.slots.len()];
    }

    /// Queues `id` to be re-derived before the step ends.
    pub(crate) fn mark(&mut self, id: ServiceId) {
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

    /// Services ordered `after` this one re-check their ordering: it was tried, became ready
    /// or ended, which its condition alone does not always show (a blocked service stays
    /// `blocked` while its process becomes ready).
    pub(crate) fn mark_successors(&mut self, id: ServiceId) {
        for i in 0..self.slots[id.index()].successors.len() {
            let s = self.slots[id.index()].successors[i];
            self.mark(s);
        }
    }

    /// What waits for `id` to stop (its needs and what it is ordered after) may go on.
    pub(crate) fn mark_stop_waiters(&mut self, id: ServiceId) {
        let waiters: Vec<ServiceId> = graph::stops_after(&self.slots[id.index()]).collect();
        for w in waiters {
            self.mark(w);
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
        let hardware = match &self.slots[id.index()].config.kind {
            Kind::Interface { ifname, .. } => Hardware::Link(self.links.get(ifname)),
            Kind::Device { .. } => Hardware::Device(self.device_matches.contains_key(&id)),
            _ => Hardware::None,
        };
        let condition = self.slots[id.index()].derive_condition(hardware);
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
        if !condition.is_transient() {
            // A planned restart or run is over (done, or failed: then it is a failure).
            slot.planned = false;
        }
        self.mark_successors(id);
        let slot = &mut self.slots[id.index()];
        if verdict_healthy != slot.healthy {
            slot.healthy = verdict_healthy;
            if verdict_healthy {
                // Only a service with strikes has something to forgive: no idle wake-ups.
                if slot.medical.has_anything_to_forgive() {
                    let at = now + slot.config.forgive_after;
                    self.timers.set(&mut slot.timers, id, Timer::Forgive, at);
                }
            } else {
                if slot.medical.pending_attempt.is_some() {
                    slot.medical.relapsed = true;
                }
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
            Condition::GivenUp => format!("given up after {} strikes", slot.medical.strikes),
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

    pub(crate) fn unhealthy_need_names(&self, id: ServiceId) -> String {
        let names: Vec<&str> = self.slots[id.index()]
            .needs
            .iter()
            .filter(|n| !self.slots[n.index()].healthy)
            .map(|n| self.slots[n.index()].config.name.as_str())
            .collect();
        names.join(", ")
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
            if slot.medical.strikes > slot.config.give_up_after {
                broken.push(format!(
                    "{name}: {} strikes exceed give-up-after {}",
                    slot.medical.strikes, slot.config.give_up_after
                ));
            }
            if slot.proc.is_some() && slot.stop_command != crate::service::StopCommand::Idle {
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

    /// The next job number (for the snapshot check).
    pub(crate) fn next_job(&self) -> u64 {
        self.next_job
    }

    /// Jobs from now on are numbered from `next` at least (a resumed kernel, crate::adopt).
    pub(crate) fn advance_jobs(&mut self, next: u64) {
        self.next_job = self.next_job.max(next);
    }

    #[cfg(test)]
    pub(crate) fn set_next_job(&mut self, next: u64) {
        self.next_job = next;
    }
}
