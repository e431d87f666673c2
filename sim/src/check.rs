//! The property checkers of architecture.md §7: a reference model of what *should* happen,
//! compared after every step with what the kernel did.
//!
//! The model never asks the kernel whether a service is healthy. It works out each service's
//! condition itself, from what the world said (a process spawned, became ready, ended; a probe
//! answered; a memory sample; a link's state) and from the config, with the design's rules
//! written here a second time: the conditions table and its overrides, the precedence of
//! problems, the probe threshold, settle, strikes, backoff and its cap, the ladder, give-up and
//! new facts, the gate on starts after a need came back. It then judges every action of the
//! kernel against that truth — an intervention must be for an unhealthy condition of the
//! world, with the rung the ladder gives, no earlier than settle and backoff allow — and holds
//! the kernel to act in time: once the rules allow an intervention (or a start, or giving up)
//! and the world still needs it, the kernel must make it within [`PROMPTNESS_SLACK`].
//!
//! From the kernel the model takes only what an operator sees it *do*: its effects, its history
//! records (an intervention is a record with a pending outcome; its claims of forgiveness and
//! `retry-after` are checked before they are believed), whether it holds a service in a stop
//! (`is_stopping`: a stop that waits for dependents has no effect yet) and whether it says
//! `given-up` (checked against the model's strikes). Structure (ids, needs, dependents) comes
//! from the kernel's resolved graph.
//!
//! The cost of a step is proportional to the services it touches: the model re-derives only
//! those (and what their health change reaches), and keeps its deadlines in one ordered set.

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use medic_kernel::config::{Heal, Kind, LinkReady, Readiness, Reports, ServiceConfig};
use medic_kernel::health::Condition;
use medic_kernel::{
    CheckPurpose, CheckResult, CommandPurpose, Effect, Input, Instant, JobId, Kernel, LinkState,
    Operator, Outcome, Record, ServiceId, ServiceView, SignalTarget,
};

use crate::world::World;

/// How long after the rules allow (and the world still needs) an intervention, a start or
/// giving up, the kernel may take to do it. The kernel acts in the step that makes it allowed
/// (its timers fire at the instant); this is slack for instants that tie.
pub const PROMPTNESS_SLACK: Duration = Duration::from_millis(5);

/// How long after a sample could first see a process over its `memory-max` (the world knows
/// when its memory crosses the limit) the kill may come: `memory-every` plus this (the world
/// answers a sample within 2 ms).
pub const MEMORY_SLACK: Duration = Duration::from_millis(10);

/// The settle time of a restart: the gate on starts after a need came back doubles from it.
const RESTART_SETTLE: Duration = Duration::from_secs(1);

/// Which property a violation breaks (numbered as in architecture.md §7; the unnumbered ones
/// are the simulator's own, documented there too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Property {
    /// 1. No two automatic actions closer than settle or backoff (a start after a need came
    ///    back: closer than its gate).
    Settle,
    /// 2. At most `give-up-after` automatic interventions between new facts; none while
    ///    given up; every restart counted as one.
    BoundedHealing,
    /// 3. No intervention or start while a need is unhealthy, nor a start before what it is
    ///    ordered `after` has been tried.
    UpstreamFirst,
    /// 4. At most one live process group per service; none after a stop has run its course.
    OneInstance,
    /// 5. On shutdown, a service stops only after everything that needs it.
    StopOrder,
    /// 6. Once faults stop, wanted services become healthy and the kernel goes quiet.
    Liveness,
    /// 7. Same seed, same trace; a replay reproduces every effect.
    Determinism,
    /// A process over its `memory-max` is killed in the step that sees the sample, and within
    /// `memory-every` + [`MEMORY_SLACK`] of crossing the limit in the world.
    Containment,
    /// An intervention is for a condition the world shows unhealthy, with the heal of rung n
    /// for the n-th attempt since the last new fact.
    RightHeal,
    /// Once settle and backoff allow it and the world still needs it, the intervention (or
    /// start, or giving up) follows within [`PROMPTNESS_SLACK`].
    Promptness,
    /// A config replacement stops only services whose definitions changed (or that are
    /// removed, or must stop because a need they need is being restarted).
    MinimalReplace,
    /// The kernel's own `check_invariants` failed.
    Invariant,
    /// 8. Once outputs stop changing, every running consumer's last render used the latest
    ///    outputs within `debounce` + two render latencies (sim/src/fresh.rs).
    FreshConfig,
    /// 9. No `on-change` action without a change in rendered bytes, and at most one per
    ///    `debounce` window per consumer (sim/src/fresh.rs).
    NoStorms,
    /// 10. A timed job runs one run at a time, at most once per period, `at` jobs at their
    ///     wall-clock times only, planned restarts at their period (sim/src/timed.rs).
    Timed,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Property::Settle => "1 settle",
            Property::BoundedHealing => "2 bounded healing",
            Property::UpstreamFirst => "3 upstream first",
            Property::OneInstance => "4 one instance",
            Property::StopOrder => "5 stop order",
            Property::Liveness => "6 liveness",
            Property::Determinism => "7 determinism",
            Property::Containment => "memory containment",
            Property::RightHeal => "right heal",
            Property::Promptness => "promptness",
            Property::MinimalReplace => "minimal replace",
            Property::Invariant => "kernel invariant",
            Property::FreshConfig => "8 fresh config",
            Property::NoStorms => "9 no storms",
            Property::Timed => "10 timed jobs",
        };
        f.write_str(name)
    }
}

/// One broken expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property.
    pub property: Property,
    /// The service, when one is to blame.
    pub service: Option<ServiceId>,
    /// Its name (or `-`).
    pub name: String,
    /// When.
    pub at: Instant,
    /// What was expected and what happened.
    pub what: String,
}

// ----- the rules, written a second time ---------------------------------------------------

const RESTART: &[Heal] = &[Heal::Restart];
const KILL: &[Heal] = &[Heal::Kill];
const LINK_UP: &[Heal] = &[Heal::LinkUp];

/// The design's conditions table with the service's `[on.CONDITION]` overrides: healthy?,
/// the ladder, the settle override.
fn verdict<'a>(config: &'a ServiceConfig, c: &Condition) -> (bool, &'a [Heal], Option<Duration>) {
    use Condition::*;
    let (mut healthy, mut heal): (bool, &'a [Heal]) = match c {
        Ready => (true, &[]),
        Exited | Failed | StartTimeout | Unresponsive => (false, RESTART),
        MemoryHigh => (false, KILL),
        AdminDown => (false, LINK_UP),
        _ => (false, &[]),
    };
    let mut settle = None;
    if let Some(o) = config.on.get(c) {
        if let Some(h) = o.healthy {
            healthy = h;
        }
        if let Some(h) = &o.heal {
            heal = h;
        }
        settle = o.settle;
    }
    if matches!(c, Blocked | GivenUp) {
        heal = &[];
    }
    (healthy, heal, settle)
}

/// The design's default settle times.
fn default_settle(heal: &Heal) -> Duration {
    match heal {
        Heal::Restart | Heal::Kill => Duration::from_secs(1),
        Heal::Reload | Heal::Signal(_) | Heal::LinkUp => Duration::from_secs(5),
        Heal::Run(_) => Duration::from_secs(10),
    }
}

/// `min(settle × 2^(strikes−1), max_backoff)`.
fn model_backoff(settle: Duration, strikes: u32, max_backoff: Duration) -> Duration {
    let mut d = settle;
    for _ in 1..strikes.min(40) {
        d = d.saturating_mul(2);
        if d >= max_backoff {
            break;
        }
    }
    d.min(max_backoff)
}

/// Conditions the rules never act on (nobody wants the service yet, or it is in passage).
fn transient(c: &Condition) -> bool {
    matches!(
        c,
        Condition::Waiting | Condition::Starting | Condition::Stopping | Condition::Stopped
    )
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

/// The precedence of problems: a process's own end (or start failure, or start timeout)
/// always stands; `memory-high` replaces a probe's word; a probe's word replaces another.
fn weight(problem: &Condition) -> u8 {
    match problem {
        Condition::Unresponsive | Condition::Custom(_) => 1,
        Condition::MemoryHigh => 2,
        _ => 3,
    }
}

/// Whether a heal stops and starts the process (so the problem it answers is gone).
fn heal_restarts(heal: &Heal, running: bool, config: &ServiceConfig) -> bool {
    match heal {
        Heal::Restart | Heal::Kill => true,
        Heal::Reload => !(running && config.reload.is_some()),
        Heal::Signal(_) | Heal::Run(_) | Heal::LinkUp => false,
    }
}

// ----- the model of one service -----------------------------------------------------------

/// The process (or running oneshot command) of a service, as the world reported it.
#[derive(Clone, Debug)]
struct MProc {
    job: JobId,
    /// Ready, as the world answered (spawned, notified, a poll that succeeded).
    ready: bool,
    /// The kernel asked it to stop (a restart, a stop; its signal may wait for dependents).
    signalled: bool,
    /// The SIGKILL was containment: the problem stands after the exit.
    contained: bool,
    /// A sample over the limit arrived in the step numbered so (the kernel kills at once).
    over_step: u64,
    probe_failures: u32,
    /// Checks in flight for it, by job.
    checks: Vec<(JobId, CheckPurpose)>,
}

/// What the model knows and works out about one service.
#[derive(Clone, Debug)]
struct Model {
    config: Arc<ServiceConfig>,
    wanted: bool,
    removed: bool,
    // The medical rules.
    /// Automatic interventions since the last new fact or forgiveness.
    strikes: u32,
    settle_until: Instant,
    next_allowed: Instant,
    last_intervention: Option<Instant>,
    /// The kernel said `given-up` (with the strikes the model agrees with) since the last new
    /// fact.
    given_up: bool,
    /// Stopped because a need failed (`stop-when-needs-fail`): its next start waits for the
    /// gate.
    stopped_for_needs: bool,
    /// That stop was for needs down only for a planned restart or run (theirs or upstream):
    /// the start after it is not counted (the kernel's `needs_planned`).
    needs_planned: bool,
    /// In a planned restart or run (its history said so), until its condition changes to one
    /// that is not transient.
    planned: bool,
    needs_restarts: u32,
    start_gate: Instant,
    /// A watched file changed: a new fact once the debounce time has passed.
    file_fact_at: Option<Instant>,
    // The truth.
    proc: Option<MProc>,
    oneshot_done: bool,
    /// Its start after needs came back was counted when its render was asked for; the spawn
    /// that follows is that start.
    counted_start: bool,
    /// The standing problem (exited, failed, start-timeout, unresponsive, memory-high, a
    /// probe's word), until an observation or a restart ends it.
    problem: Option<Condition>,
    ever_started: bool,
    /// The kernel holds it in a stop (from its view; a stop waiting for dependents).
    kernel_stopping: bool,
    /// A oneshot's stop command running.
    stop_command: Option<JobId>,
    /// `up()` as it was before the kernel's stops of the step numbered `up_step` (the kernel
    /// decides a stop for failed needs on the state before it stops).
    up_before: bool,
    up_step: u64,
    /// A restart (heal, watched file, operator, changed definition) in the step numbered so:
    /// a stop in that step is not for failed needs.
    restart_step: u64,
    /// Spawned in the step numbered so (up, for a stop that comes later in the step).
    spawn_step: u64,
    needs_ok: bool,
    condition: Condition,
    since: Instant,
    healthy: bool,
    /// When `healthy` last changed.
    health_since: Instant,
    /// `forgive-after` as it was when the service last became healthy (a new definition does
    /// not move a forgiveness already counting).
    forgive_after: Duration,
    /// `healthy` as it was before the step numbered `health_step` changed it.
    healthy_before: bool,
    health_step: u64,
    /// The duty in force and when it is due.
    due: Option<(Instant, Duty)>,
    /// The model's own notes, newest last, for a failure report.
    notes: VecDeque<String>,
}

/// What the kernel owes a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Duty {
    Heal,
    GiveUp,
    Start,
}

const NOTES: usize = 24;

impl Model {
    fn new(config: Arc<ServiceConfig>, wanted: bool, now: Instant) -> Model {
        Model {
            config,
            wanted,
            removed: false,
            strikes: 0,
            settle_until: Instant::ZERO,
            next_allowed: Instant::ZERO,
            last_intervention: None,
            given_up: false,
            stopped_for_needs: false,
            needs_planned: false,
            planned: false,
            needs_restarts: 0,
            start_gate: Instant::ZERO,
            file_fact_at: None,
            proc: None,
            oneshot_done: false,
            counted_start: false,
            problem: None,
            ever_started: false,
            kernel_stopping: false,
            stop_command: None,
            up_before: false,
            up_step: 0,
            restart_step: u64::MAX,
            spawn_step: u64::MAX,
            needs_ok: true,
            condition: Condition::Stopped,
            since: now,
            healthy: false,
            health_since: now,
            forgive_after: Duration::MAX,
            healthy_before: false,
            health_step: 0,
            due: None,
            notes: VecDeque::new(),
        }
    }

    fn note(&mut self, now: Instant, text: String) {
        if self.notes.len() == NOTES {
            self.notes.pop_front();
        }
        self.notes.push_back(format!("{now} {text}"));
    }

    /// A new fact (or forgiveness): strikes and `given-up` cleared, and the backoff with them;
    /// the settle time of the last intervention still stands.
    fn reset(&mut self, now: Instant, why: &str) {
        if self.strikes > 0 || self.given_up {
            self.note(
                now,
                format!("model: reset ({why}), {} strikes cleared", self.strikes),
            );
        }
        self.strikes = 0;
        self.given_up = false;
        self.next_allowed = self.settle_until;
    }

    /// The one precedence rule for problems.
    fn observe(&mut self, problem: Condition) {
        let taken = match &self.problem {
            None => true,
            Some(old) => {
                let (new_w, old_w) = (weight(&problem), weight(old));
                new_w == 3 || new_w > old_w || (new_w == 1 && old_w == 1 && *old != problem)
            }
        };
        if taken {
            self.problem = Some(problem);
        }
    }

    fn cure(&mut self, cured: impl Fn(&Condition) -> bool) {
        if self.problem.as_ref().is_some_and(cured) {
            self.problem = None;
        }
    }

    /// A stop is under way: asked of the world, or held by the kernel for dependents.
    fn stopping(&self) -> bool {
        self.kernel_stopping || self.proc.as_ref().is_some_and(|p| p.signalled)
    }

    /// Up, as a stop would have to undo: a process not being stopped, or a done oneshot.
    fn up(&self) -> bool {
        (self.proc.is_some() && !self.stopping()) || self.oneshot_done
    }

    /// A stop, a restart or an operator's stop: whatever the problem was, it is over, and the
    /// process is on its way out (its stop signal may wait for dependents).
    fn restarted(&mut self) {
        self.problem = None;
        if let Some(p) = self.proc.as_mut() {
            p.signalled = true;
            p.checks.clear();
        }
        if matches!(self.config.kind, Kind::Oneshot { .. }) {
            self.oneshot_done = false;
        }
    }

    /// The condition that follows from the world's truth and the rules.
    fn derive(&self, world: &World) -> Condition {
        if self.stopping() || (!self.wanted && self.proc.is_some()) {
            return Condition::Stopping;
        }
        if !self.wanted {
            return Condition::Stopped;
        }
        if !self.needs_ok {
            return Condition::Blocked;
        }
        if let Kind::Interface {
            ifname, ready_when, ..
        } = &self.config.kind
        {
            let c = link_condition(*ready_when, world.link(ifname));
            return if self.given_up && c != Condition::Ready {
                Condition::GivenUp
            } else {
                c
            };
        }
        if self.given_up {
            return Condition::GivenUp;
        }
        if let Some(p) = &self.problem {
            return p.clone();
        }
        match &self.proc {
            None if self.oneshot_done => Condition::Ready,
            None => Condition::Waiting,
            Some(p) if p.ready => Condition::Ready,
            Some(_) => Condition::Starting,
        }
    }
}

/// Models by service id (ids are small and dense: a Vec beats a map on every step).
#[derive(Clone, Debug, Default)]
struct Models(Vec<Option<Model>>);

impl Models {
    fn get(&self, id: ServiceId) -> Option<&Model> {
        self.0.get(id.index()).and_then(Option::as_ref)
    }
    fn get_mut(&mut self, id: ServiceId) -> Option<&mut Model> {
        self.0.get_mut(id.index()).and_then(Option::as_mut)
    }
    fn insert(&mut self, id: ServiceId, m: Model) {
        if self.0.len() <= id.index() {
            self.0.resize(id.index() + 1, None);
        }
        self.0[id.index()] = Some(m);
    }
    fn ids(&self) -> impl Iterator<Item = ServiceId> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_some())
            .map(|(i, _)| ServiceId(i as u32))
    }
}

/// What the model waits for, in its one ordered set of deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    /// The process of this job is not ready within its `start-timeout`.
    StartTimeout(JobId),
    /// The duty of the service is due (plus slack).
    Duty,
    /// The process of this job crossed its memory limit `memory-every` + slack ago.
    Memory(JobId),
    /// A watched file's debounce time is over.
    FileFact,
}

/// The checkers' state across a run.
#[derive(Clone, Debug, Default)]
pub struct Checker {
    models: Models,
    shutting_down: bool,
    /// Every violation found, in order.
    pub violations: Vec<Violation>,
    /// Automatic interventions seen, in total.
    pub interventions: u64,
    deadlines: BTreeSet<(Instant, ServiceId, Deadline)>,
    /// Interface services by link name.
    links: BTreeMap<String, Vec<ServiceId>>,
    /// Services touched by the step being checked (reused allocation).
    touched: Vec<ServiceId>,
    queued: Vec<bool>,
    /// Services the kernel asked to stop during the step being checked.
    stopped_now: Vec<ServiceId>,
    /// Steps checked (numbers them).
    step: u64,
    /// The definitions of the next config replacement, from whoever rendered its text.
    expected: Option<Vec<Arc<ServiceConfig>>>,
    booted: bool,
}

impl Checker {
    /// A checker for a kernel that has not booted yet, judging it by the kernel's config (read
    /// before anything runs; later configs are read from the inputs that replace it).
    pub fn new(kernel: &Kernel) -> Checker {
        let mut c = Checker::default();
        for service in &kernel.config().services {
            if let Some(id) = kernel.lookup(&service.name) {
                c.models
                    .insert(id, Model::new(service.clone(), true, Instant::ZERO));
            }
        }
        c.index_links();
        c
    }

    fn index_links(&mut self) {
        self.links.clear();
        for id in self.models.ids().collect::<Vec<_>>() {
            let m = self.models.get(id).expect("model");
            if let (Kind::Interface { ifname, .. }, false) = (&m.config.kind, m.removed) {
                self.links.entry(ifname.clone()).or_default().push(id);
            }
        }
    }

    /// The next config replacement's text was rendered from these definitions (the simulator's
    /// own graphs, which parse back to exactly what they were rendered from: see `graph.rs`),
    /// so the model need not parse it again.
    pub fn expect_config(&mut self, services: Vec<Arc<ServiceConfig>>) {
        self.expected = Some(services);
    }

    /// Records a violation (the checkers' own, and the runner's: liveness, determinism).
    pub fn report(
        &mut self,
        property: Property,
        service: Option<ServiceId>,
        name: &str,
        at: Instant,
        what: String,
    ) {
        self.violations.push(Violation {
            property,
            service,
            name: name.to_string(),
            at,
            what,
        });
    }

    fn blame(&mut self, property: Property, id: ServiceId, at: Instant, what: String) {
        let name = self
            .models
            .get(id)
            .map_or_else(|| "?".to_string(), |m| m.config.name.clone());
        self.report(property, Some(id), &name, at, what);
    }

    /// The model's notes about a service, for a failure report.
    pub fn notes(&self, id: ServiceId) -> Vec<String> {
        self.models
            .get(id)
            .map(|m| {
                let mut n: Vec<String> = m.notes.iter().cloned().collect();
                n.push(format!(
                    "model now: {} (healthy {}), problem {:?}, strikes {}, settle until {}, \
                     next allowed {}, needs ok {}, wanted {}, given up {}",
                    m.condition,
                    m.healthy,
                    m.problem,
                    m.strikes,
                    m.settle_until,
                    m.next_allowed,
                    m.needs_ok,
                    m.wanted,
                    m.given_up
                ));
                n
            })
            .unwrap_or_default()
    }

    /// Whether the operator wants the service.
    pub fn wanted(&self, id: ServiceId) -> bool {
        self.models.get(id).is_some_and(|m| m.wanted)
    }

    /// When the model next has something to decide on its own (a start timeout, a duty coming
    /// due): the runner calls [`Checker::on_time`] then if nothing else happens first.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _, _)| *at)
    }

    /// Time has passed to `now` with no step: the model's deadlines up to `now` are judged.
    pub fn on_time(&mut self, now: Instant, k: &Kernel, world: &World) {
        self.step += 1;
        self.touched.clear();
        self.advance(now, k, world, true);
        self.settle_touched(now, k, world, true);
    }

    fn touch(&mut self, id: ServiceId) {
        let i = id.index();
        if self.queued.len() <= i {
            self.queued.resize(i + 1, false);
        }
        if !self.queued[i] && self.models.get(id).is_some() {
            self.queued[i] = true;
            self.touched.push(id);
        }
    }

    fn touch_all(&mut self) {
        let ids: Vec<ServiceId> = self.models.ids().collect();
        for id in ids {
            self.touch(id);
        }
    }

    /// The model's own deadlines up to `now` (strictly before it for duties, which the step at
    /// `now` may still fulfil, unless `inclusive`).
    fn advance(&mut self, now: Instant, k: &Kernel, world: &World, inclusive: bool) {
        // Everything up to `now` in time order, passing over the duties at `now` that the step
        // at `now` may still fulfil (they must not hold back a model timer at the same instant).
        let last = (now, ServiceId(u32::MAX), Deadline::FileFact);
        loop {
            let next = self
                .deadlines
                .range(..=last)
                .copied()
                .find(|&(at, _, what)| match what {
                    Deadline::StartTimeout(_) | Deadline::FileFact => true,
                    Deadline::Duty | Deadline::Memory(_) => at < now || inclusive,
                });
            let Some(entry @ (at, id, what)) = next else {
                break;
            };
            self.deadlines.remove(&entry);
            match what {
                Deadline::StartTimeout(job) => {
                    let Some(m) = self.models.get_mut(id) else {
                        continue;
                    };
                    let stopping = m.stopping();
                    if let Some(p) = m.proc.as_mut().filter(|p| p.job == job) {
                        if !p.ready && !stopping {
                            m.observe(Condition::StartTimeout);
                            m.note(at, "model: start-timeout".into());
                            self.touch(id);
                        }
                    }
                }
                Deadline::FileFact => {
                    if let Some(m) = self.models.get_mut(id) {
                        if m.file_fact_at.is_some_and(|f| f <= now) {
                            m.file_fact_at = None;
                            m.reset(at, "watched file changed");
                            self.touch(id);
                        }
                    }
                }
                Deadline::Duty => self.judge_duty(now, id, k, world),
                Deadline::Memory(job) => self.judge_memory(now, id, job, k, world),
            }
        }
    }

    /// Checks one step: `input` was fed at `now`, the kernel produced `effects`, and the world
    /// has already carried them out.
    pub fn after_step(
        &mut self,
        now: Instant,
        input: &Input,
        k: &Kernel,
        effects: &[Effect],
        world: &World,
    ) {
        // The kernel's own invariants cost O(services) per call, as much as everything else the
        // simulator does: they are checked after every step that can change more than a probe's
        // or a sample's timer, and after every 8th step whatever it was (what they check is
        // state that stays broken once broken, so a later check still sees it).
        let idle = matches!(
            input,
            Input::Tick | Input::CheckDone { .. } | Input::MemorySampled { .. }
        ) && effects
            .iter()
            .all(|e| matches!(e, Effect::Check { .. } | Effect::SampleMemory { .. }));
        if !idle || self.step.is_multiple_of(8) {
            self.check_kernel_invariants(now, k);
        }
        self.step += 1;
        self.touched.clear();
        self.stopped_now.clear();
        self.advance(now, k, world, false);
        if !self.booted && matches!(input, Input::Tick) {
            // Boot: every service is looked at.
            self.booted = true;
            self.touch_all();
        }
        // What the input tells: the world's answers, and facts.
        let replace = matches!(input, Input::ReplaceConfig { .. });
        let mut changed_defs: Vec<ServiceId> = Vec::new();
        match input {
            Input::ReplaceConfig { text } => changed_defs = self.on_replace(now, k, text),
            Input::Operator(op) => self.on_operator(now, k, op),
            Input::FileChanged { path } => self.on_file_changed(now, k, path),
            Input::LinkChanged { ifname, .. } => {
                let ids = self.links.get(ifname).cloned().unwrap_or_default();
                for id in ids {
                    self.touch(id);
                }
            }
            _ => self.on_answer(now, k, input),
        }
        // The truth before the kernel's actions of this step are judged.
        self.settle_touched(now, k, world, false);
        for effect in effects {
            self.on_effect(now, k, world, effect, replace);
        }
        // After: the kernel's stops and `given-up`, then the truth again and the duties.
        for e in effects {
            if let Some(id) = effect_service(e) {
                self.touch(id);
            }
        }
        self.settle_touched(now, k, world, true);
        if replace {
            self.check_minimal_replace(now, &changed_defs);
        }
        if let Input::MemorySampled {
            service,
            job,
            rss_bytes: Some(rss),
            total_bytes,
        } = input
        {
            self.check_containment(now, effects, world, (*service, *job), *rss, *total_bytes);
        }
        let spawned = effects.iter().any(|e| matches!(e, Effect::Spawn { .. }));
        self.check_instances(now, k, world, spawned);
    }

    /// A sample over the limit: the kernel must kill the process in this very step, unless it
    /// is already being stopped (its stop signal went out earlier).
    fn check_containment(
        &mut self,
        now: Instant,
        effects: &[Effect],
        world: &World,
        (id, job): (ServiceId, JobId),
        rss: u64,
        total: Option<u64>,
    ) {
        let Some(m) = self.models.get(id) else { return };
        let Some(limit) = m.config.memory_max.and_then(|l| limit_bytes(l, total)) else {
            return;
        };
        if rss <= limit || m.proc.as_ref().is_none_or(|p| p.job != job) {
            return;
        }
        let killed = effects
            .iter()
            .any(|e| matches!(e, Effect::Kill { job: j, .. } if *j == job));
        let stopping = world
            .procs()
            .any(|(j, p)| *j == job && p.stop_deadline.is_some());
        let alive = world.procs().any(|(j, _)| *j == job);
        if alive && !killed && !stopping {
            let what = format!("rss {rss} over memory-max {limit} and not killed at once");
            self.blame(Property::Containment, id, now, what);
        }
    }

    /// The kernel's `check_invariants`, reported as violations (also called by the runner
    /// before it reports a failure or passes a seed).
    pub fn check_kernel_invariants(&mut self, now: Instant, k: &Kernel) {
        if let Err(broken) = k.check_invariants() {
            for b in broken {
                self.report(Property::Invariant, None, "-", now, b);
            }
        }
    }

    // ----- inputs ------------------------------------------------------------------------

    /// A new config: the model reads its definitions from the text itself (a config that does
    /// not validate changes nothing); the kernel only says which id each name has.
    fn on_replace(&mut self, now: Instant, k: &Kernel, text: &str) -> Vec<ServiceId> {
        let mut changed = Vec::new();
        let services = match self.expected.take() {
            Some(services) => services,
            None => match medic_kernel::config::parse(text, "sim.toml") {
                Ok(config) => config.services,
                Err(_) => return changed,
            },
        };
        let mut live = BTreeSet::new();
        for service in &services {
            let Some(id) = k.lookup(&service.name) else {
                continue;
            };
            live.insert(id);
            match self.models.get_mut(id) {
                Some(m) if !m.removed => {
                    if *m.config != **service {
                        m.config = service.clone();
                        m.note(now, "model: definition changed".into());
                        m.reset(now, "definition changed");
                        m.restarted();
                        m.restart_step = self.step;
                        changed.push(id);
                    }
                }
                _ => {
                    let m = Model::new(service.clone(), !self.shutting_down, now);
                    self.models.insert(id, m);
                }
            }
        }
        let gone: Vec<ServiceId> = self.models.ids().filter(|id| !live.contains(id)).collect();
        for id in gone {
            if let Some(m) = self.models.get_mut(id) {
                if !m.removed {
                    m.removed = true;
                    m.wanted = false;
                    m.restarted();
                    m.note(now, "model: removed from the config".into());
                }
            }
        }
        self.index_links();
        self.touch_all();
        changed
    }

    fn on_operator(&mut self, now: Instant, k: &Kernel, op: &Operator) {
        self.touch_all();
        if self.shutting_down {
            return;
        }
        let name = match op {
            Operator::Shutdown => {
                self.shutting_down = true;
                for id in self.models.ids().collect::<Vec<_>>() {
                    if let Some(m) = self.models.get_mut(id) {
                        m.wanted = false;
                        m.restarted();
                    }
                }
                return;
            }
            Operator::Start(n) | Operator::Stop(n) | Operator::Restart(n) | Operator::Reload(n) => {
                n
            }
        };
        let Some(id) = k.lookup(name) else { return };
        // A stop takes down what needs it, transitively; a start brings up what it needs
        // (each of those not wanted before is started as a new fact).
        let others = match op {
            Operator::Stop(_) => closure(k, id, |v| v.dependents()),
            Operator::Start(_) => closure(k, id, |v| v.needs()),
            _ => Vec::new(),
        };
        for other in others {
            let Some(m) = self.models.get_mut(other) else {
                continue;
            };
            match op {
                Operator::Stop(_) if m.wanted => {
                    m.wanted = false;
                    m.restarted();
                    m.note(now, format!("operator {op:?} (transitively)"));
                }
                Operator::Start(_) if !m.wanted => {
                    m.wanted = true;
                    m.stopped_for_needs = false;
                    m.reset(now, "operator");
                    m.note(now, format!("operator {op:?} (transitively)"));
                }
                _ => {}
            }
        }
        let Some(m) = self.models.get_mut(id) else {
            return;
        };
        m.note(now, format!("operator {op:?}"));
        match op {
            Operator::Start(_) => {
                m.wanted = true;
                m.stopped_for_needs = false;
                m.reset(now, "operator");
            }
            Operator::Restart(_) => {
                m.wanted = true;
                m.stopped_for_needs = false;
                m.reset(now, "operator");
                m.restarted();
            }
            Operator::Reload(_) => {
                m.wanted = true;
                let running = m.proc.is_some() && !m.stopping();
                if heal_restarts(&Heal::Reload, running, &m.config.clone()) {
                    m.restarted();
                }
            }
            Operator::Stop(_) => {
                m.wanted = false;
                m.restarted();
            }
            Operator::Shutdown => {}
        }
    }

    fn on_file_changed(&mut self, now: Instant, k: &Kernel, path: &str) {
        for v in k.views() {
            let Some(m) = self.models.get_mut(v.id()) else {
                continue;
            };
            if m.config.reload_on.iter().any(|p| p == path)
                || m.config.restart_on.iter().any(|p| p == path)
            {
                if let Some(old) = m.file_fact_at {
                    self.deadlines.remove(&(old, v.id(), Deadline::FileFact));
                }
                let at = now + m.config.debounce;
                m.file_fact_at = Some(at);
                self.deadlines.insert((at, v.id(), Deadline::FileFact));
            }
        }
    }

    /// The world's answer about one process.
    fn on_answer(&mut self, now: Instant, k: &Kernel, input: &Input) {
        let (id, job) = match input {
            Input::Spawned { service, job, .. }
            | Input::SpawnFailed { service, job, .. }
            | Input::SpawnDeferred { service, job, .. }
            | Input::Exited { service, job, .. }
            | Input::ReadyNotified { service, job }
            | Input::CheckDone { service, job, .. }
            | Input::MemorySampled { service, job, .. }
            | Input::CommandDone { service, job, .. } => (*service, *job),
            // A render answered: a start may wait on it (see `duty`).
            Input::RenderDone { service, .. } => {
                self.touch(*service);
                return;
            }
            _ => return,
        };
        self.touch(id);
        let Some(m) = self.models.get_mut(id) else {
            return;
        };
        let current = m.proc.as_ref().is_some_and(|p| p.job == job);
        let stopping = m.stopping();
        let oneshot = matches!(m.config.kind, Kind::Oneshot { .. });
        match input {
            Input::Spawned { .. } if current => {
                let spawned_ready = matches!(m.config.kind, Kind::Process { .. })
                    && m.config.ready == Readiness::Spawned;
                if spawned_ready && !stopping {
                    mark_ready(m);
                }
            }
            Input::SpawnFailed { .. } | Input::SpawnDeferred { .. } if current => {
                m.proc = None;
                m.kernel_stopping = false;
                if m.wanted && matches!(input, Input::SpawnFailed { .. }) {
                    m.observe(failure(&m.config));
                }
                self.touch_successors(k, id);
            }
            Input::Exited { status, .. } if current => {
                let p = m.proc.take().expect("current");
                // Whatever stop the kernel held it in is over with the process.
                m.kernel_stopping = false;
                if stopping {
                    if !p.contained {
                        m.problem = None;
                    }
                } else if oneshot && status.success() {
                    m.oneshot_done = true;
                    m.problem = None;
                } else {
                    m.observe(failure(&m.config));
                    m.note(now, format!("model: {} ({status})", failure(&m.config)));
                }
                self.touch_successors(k, id);
            }
            Input::ReadyNotified { .. } if current && !stopping => {
                mark_ready(m);
                self.touch_successors(k, id);
            }
            Input::CheckDone { result, .. } => {
                let Some(p) = m.proc.as_mut() else { return };
                let Some(i) = p.checks.iter().position(|(j, _)| *j == job) else {
                    return;
                };
                let (_, purpose) = p.checks.swap_remove(i);
                if stopping {
                    return;
                }
                match purpose {
                    CheckPurpose::Ready => {
                        if *result == CheckResult::Ok {
                            mark_ready(m);
                            self.touch_successors(k, id);
                        }
                    }
                    CheckPurpose::Probe => on_probe(m, result),
                }
            }
            Input::CommandDone { .. } if m.stop_command == Some(job) => {
                m.stop_command = None;
                m.kernel_stopping = false;
            }
            Input::MemorySampled {
                rss_bytes,
                total_bytes,
                ..
            } if current => {
                let limit = m
                    .config
                    .memory_max
                    .and_then(|l| limit_bytes(l, *total_bytes));
                if let (Some(limit), Some(rss)) = (limit, rss_bytes) {
                    if *rss > limit {
                        m.observe(Condition::MemoryHigh);
                        if let Some(p) = m.proc.as_mut() {
                            p.over_step = self.step;
                        }
                    } else {
                        m.cure(|c| *c == Condition::MemoryHigh);
                    }
                }
            }
            _ => {}
        }
    }

    fn touch_successors(&mut self, k: &Kernel, id: ServiceId) {
        if let Some(v) = k.status(id) {
            for s in v.successors() {
                self.touch(*s);
            }
        }
    }

    // ----- the kernel's actions ------------------------------------------------------------

    fn on_effect(&mut self, now: Instant, k: &Kernel, world: &World, e: &Effect, replace: bool) {
        let step = self.step;
        if let Some(m) = effect_service(e).and_then(|id| self.models.get_mut(id)) {
            if m.up_step != step {
                m.up_step = step;
                m.up_before = m.up();
            }
        }
        match e {
            Effect::Spawn { service, job, .. } => self.on_spawn(now, k, world, *service, *job),
            Effect::Check {
                service,
                job,
                purpose,
                ..
            } => {
                if let Some(p) = self.models.get_mut(*service).and_then(|m| m.proc.as_mut()) {
                    p.checks.push((*job, *purpose));
                }
            }
            Effect::Signal {
                service,
                job,
                to: SignalTarget::Group,
                ..
            }
            | Effect::Kill { service, job } => {
                let kill = matches!(e, Effect::Kill { .. });
                let step = self.step;
                let mut already = false;
                if let Some(m) = self.models.get_mut(*service) {
                    already = m.stopping();
                    if let Some(p) = m.proc.as_mut().filter(|p| p.job == *job) {
                        if kill && p.over_step == step && !already {
                            p.contained = true;
                        }
                        p.signalled = true;
                        p.checks.clear();
                    }
                }
                // A stop asked for earlier (its signal waited for dependents) is not this
                // replacement's doing.
                if replace && !already {
                    self.stopped_now.push(*service);
                }
            }
            Effect::RunCommand {
                service,
                job,
                purpose: CommandPurpose::Stop,
                ..
            } => {
                let mut already = false;
                if let Some(m) = self.models.get_mut(*service) {
                    already = m.stopping();
                    m.oneshot_done = false;
                    m.stop_command = Some(*job);
                }
                if replace && !already {
                    self.stopped_now.push(*service);
                }
            }
            Effect::Event { service, record } => self.on_record(now, k, world, *service, record),
            // A render before a start: the kernel has decided the start.
            Effect::Render { service, .. } => {
                let idle = self.models.get(*service).is_some_and(|m| m.proc.is_none());
                if idle {
                    if let Some((property, what)) = self.start_after_needs(now, *service) {
                        self.blame(property, *service, now, what);
                    }
                }
            }
            _ => {}
        }
        if self.shutting_down {
            self.check_stop_order(now, k, e, world);
        }
    }

    /// A start after `stop-when-needs-fail` stopped it is an automatic action too: no faster
    /// than a restart's settle time, doubling while the need flaps. Counted when the kernel
    /// decides the start: at the spawn, or, with templates, when it asks for the render that
    /// comes first (counted even when that render fails, as the kernel counts it).
    fn start_after_needs(&mut self, now: Instant, id: ServiceId) -> Option<(Property, String)> {
        let m = self.models.get_mut(id)?;
        if !m.stopped_for_needs {
            return None;
        }
        let mut violation = None;
        if now < m.start_gate {
            violation = Some((
                Property::Settle,
                format!(
                    "started again after its needs came back at {now}, before the gate at {} \
                     ({} such starts since it was last healthy for forgive-after)",
                    m.start_gate, m.needs_restarts
                ),
            ));
        }
        m.stopped_for_needs = false;
        m.counted_start = true;
        if std::mem::take(&mut m.needs_planned) {
            // Down for a plan, not a failure: not flapping, so not counted (DESIGN §11).
            m.note(
                now,
                "start after a planned restart upstream, not counted".into(),
            );
            return violation;
        }
        m.needs_restarts = m.needs_restarts.saturating_add(1);
        m.start_gate = now + model_backoff(RESTART_SETTLE, m.needs_restarts, m.config.max_backoff);
        m.note(
            now,
            format!(
                "start after needs came back ({}), next gate {}",
                m.needs_restarts, m.start_gate
            ),
        );
        violation
    }

    fn on_spawn(&mut self, now: Instant, k: &Kernel, world: &World, id: ServiceId, job: JobId) {
        let Some(m) = self.models.get(id) else { return };
        let config = m.config.clone();
        let mut wrong = Vec::new();
        // Upstream first, by the model's health of the needs (a need that failed in this
        // very step is not blamed: the kernel may have started before it saw it).
        for n in k.status(id).map(|v| v.needs()).unwrap_or_default() {
            if let Some(nm) = self.models.get(*n) {
                let before = if nm.health_step == self.step {
                    nm.healthy_before
                } else {
                    nm.healthy
                };
                // Fresh too: a fact earlier in this step (retry-after) may have healed it.
                let fresh = verdict(&nm.config, &nm.derive(world)).0;
                if !nm.healthy && !before && !fresh {
                    wrong.push(format!("its need {} is {}", nm.config.name, nm.condition));
                }
            }
        }
        for a in k.status(id).map(|v| v.after()).unwrap_or_default() {
            if let Some(am) = self.models.get(*a) {
                if !self.tried(am, true) {
                    wrong.push(format!(
                        "{}, which it is ordered after, has not been tried ({})",
                        am.config.name, am.condition
                    ));
                }
            }
        }
        // A process with readiness answered by the world only: ready in the world too.
        for n in &config.needs {
            let Some(v) = k.lookup(n).and_then(|nid| k.status(nid)) else {
                continue;
            };
            let polled = matches!(v.config().kind, Kind::Process { .. })
                && v.config().ready != Readiness::Spawned;
            if polled && world.ready_in_world(v.id(), now) == Some(false) {
                wrong.push(format!("its need {n} is not ready in the world"));
            }
        }
        if !wrong.is_empty() {
            let what = format!("started while {}", wrong.join("; "));
            self.blame(Property::UpstreamFirst, id, now, what);
        }
        let mut violation = self.start_after_needs(now, id);
        let m = self.models.get_mut(id).expect("model");
        if violation.is_some() || m.counted_start {
            m.counted_start = false;
        } else if let Some(problem) = &m.problem {
            violation = Some((
                Property::BoundedHealing,
                format!(
                    "started again while {problem} stands, with no intervention counted for it"
                ),
            ));
        }
        m.proc = Some(MProc {
            job,
            ready: false,
            signalled: false,
            contained: false,
            over_step: 0,
            probe_failures: 0,
            checks: Vec::new(),
        });
        m.problem = None;
        m.oneshot_done = false;
        m.ever_started = true;
        m.spawn_step = self.step;
        if !matches!(config.kind, Kind::Interface { .. }) {
            let at = now + config.start_timeout;
            self.deadlines.insert((at, id, Deadline::StartTimeout(job)));
        }
        if let Some(limit) = config
            .memory_max
            .and_then(|l| limit_bytes(l, Some(world.total_ram())))
        {
            if let Some(over) = world.memory_over_at(job, limit) {
                let at = over + config.memory_every + MEMORY_SLACK;
                self.deadlines.insert((at, id, Deadline::Memory(job)));
            }
        }
        if let Some((p, what)) = violation {
            self.blame(p, id, now, what);
        }
        self.touch_successors(k, id);
    }

    /// The kernel says `retry-after` has elapsed for a given-up service: checked, then a new
    /// fact, whose health reaches its dependents at once (they may start in this very step).
    fn retry_after(&mut self, now: Instant, k: &Kernel, world: &World, id: ServiceId) {
        let Some(m) = self.models.get_mut(id) else {
            return;
        };
        let ok = match (m.config.retry_after, m.last_intervention) {
            (Some(after), Some(last)) => now >= last + after,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !ok {
            let what = format!(
                "retried a given-up service early: last intervention {:?}, retry-after {:?}",
                m.last_intervention, m.config.retry_after
            );
            self.blame(Property::BoundedHealing, id, now, what);
            return;
        }
        m.reset(now, "retry-after elapsed");
        self.touch(id);
        self.settle_touched(now, k, world, false);
    }

    /// Whether one of the service's needs was unhealthy before this step, and still is.
    fn needs_down_before_step(&self, k: &Kernel, id: ServiceId) -> bool {
        let needs = k.status(id).map(|v| v.needs()).unwrap_or_default();
        needs.iter().any(|n| {
            self.models.get(*n).is_some_and(|nm| {
                let before = if nm.health_step == self.step {
                    nm.healthy_before
                } else {
                    nm.healthy
                };
                !nm.healthy && !before
            })
        })
    }

    /// Whether a service one is ordered `after` has been tried: an interface, not wanted,
    /// given up, or started and no longer starting. A start that has timed out has been tried
    /// too, but the kernel may wait for its heal to begin before it says so: `at_least` is the
    /// lenient reading (nothing may start before it), the strict one is what a start is owed.
    fn tried(&self, m: &Model, at_least: bool) -> bool {
        let timed_out = at_least && m.problem == Some(Condition::StartTimeout);
        let starting = m
            .proc
            .as_ref()
            .is_some_and(|p| !(p.ready || p.signalled || m.kernel_stopping || timed_out));
        matches!(m.config.kind, Kind::Interface { .. })
            || !m.wanted
            || m.given_up
            || (m.ever_started && !starting)
    }

    fn on_record(
        &mut self,
        now: Instant,
        k: &Kernel,
        world: &World,
        id: ServiceId,
        record: &Record,
    ) {
        // A need that failed in this very step is not blamed: the kernel may have decided
        // before it saw it (the old health of a need counts until the step ends).
        let lenient = !self.needs_down_before_step(k, id);
        let Some(m) = self.models.get_mut(id) else {
            return;
        };
        if record.note.starts_with("forgiven") {
            let healthy_for = now.saturating_since(m.health_since);
            if !m.healthy || healthy_for < m.config.forgive_after {
                let what = format!(
                    "forgave its strikes after {:?} healthy (healthy now: {}), forgive-after is {:?}",
                    healthy_for, m.healthy, m.config.forgive_after
                );
                self.blame(Property::BoundedHealing, id, now, what);
                return;
            }
            m.reset(now, "forgiven");
            return;
        }
        if record.note.starts_with("retry-after elapsed") {
            self.retry_after(now, k, world, id);
            return;
        }
        // Rendered files that changed are a new fact (DESIGN §9); their `on-change` is judged
        // below as an operator's action is. The service's health follows at once: what the
        // kernel does after it in this step (a dependent started or healed because this need
        // is healthy again, seed 3298) is judged with it.
        if record.note.ends_with("(outputs changed)") {
            m.reset(now, "rendered files changed");
            self.touch(id);
            self.settle_touched(now, k, world, false);
        }
        let Some(m) = self.models.get_mut(id) else {
            return;
        };
        // A planned run of a oneshot (`every`, `at`) ends its being done at once, though its
        // spawn waits for a render (DESIGN §9: rendered before each start).
        if record.note.ends_with(": run again") {
            m.oneshot_done = false;
        }
        if record.note.ends_with(": run again") || record.note.ends_with(": planned restart") {
            m.planned = true;
        }

        let Some(heal) = &record.heal else { return };
        let running = m.proc.is_some() && !m.stopping();
        if record.outcome.is_none() {
            // The operator's command or a watched file's action: not a strike, but a restart
            // ends the problem.
            if heal_restarts(heal, running, &m.config.clone()) {
                m.restarted();
                m.restart_step = self.step;
            }
            return;
        }
        if record.outcome != Some(Outcome::Pending) {
            return;
        }
        self.interventions += 1;
        let config = m.config.clone();
        // Fresh: a fact earlier in this step (retry-after, forgiveness) may have moved it.
        let mut c = m.derive(world);
        if c != m.condition {
            m.planned &= c.is_transient();
            m.condition = c.clone();
            m.since = now;
        }
        if c == Condition::Blocked && lenient {
            m.needs_ok = true;
            c = m.derive(world);
            m.needs_ok = false;
        }
        let (healthy, ladder, settle_override) = verdict(&config, &c);
        let settle = settle_override.unwrap_or_else(|| default_settle(heal));
        let mut broken: Vec<(Property, String)> = Vec::new();
        if now < m.next_allowed {
            broken.push((
                Property::Settle,
                format!(
                    "intervened ({}) at {now}, before {} (previous intervention at {}, settling \
                     until {})",
                    heal.describe(),
                    m.next_allowed,
                    m.last_intervention
                        .map(|l| l.to_string())
                        .unwrap_or_default(),
                    m.settle_until
                ),
            ));
        }
        if m.given_up {
            broken.push((
                Property::BoundedHealing,
                format!(
                    "intervened ({}) while given-up, with no new fact",
                    heal.describe()
                ),
            ));
        } else if m.strikes >= config.give_up_after {
            broken.push((
                Property::BoundedHealing,
                format!(
                    "intervention number {} since the last new fact, give-up-after is {}",
                    m.strikes + 1,
                    config.give_up_after
                ),
            ));
        }
        if c == Condition::Blocked {
            broken.push((
                Property::UpstreamFirst,
                format!(
                    "intervened ({}) while a need is unhealthy in the world",
                    heal.describe()
                ),
            ));
        } else if healthy || transient(&c) || ladder.is_empty() {
            broken.push((
                Property::RightHeal,
                format!(
                    "intervened ({}) on {} (the kernel says {}), which the world shows {}",
                    heal.describe(),
                    c,
                    record.condition,
                    if healthy {
                        "healthy"
                    } else {
                        "with no heal to try"
                    }
                ),
            ));
        } else {
            let rung = (m.strikes as usize).min(ladder.len() - 1);
            if ladder[rung] != *heal {
                broken.push((
                    Property::RightHeal,
                    format!(
                        "attempt {} on {} used {}, the ladder says {} (rung {})",
                        m.strikes + 1,
                        c,
                        heal.describe(),
                        ladder[rung].describe(),
                        rung + 1
                    ),
                ));
            }
        }
        m.strikes += 1;
        let backoff = model_backoff(settle, m.strikes, config.max_backoff);
        m.settle_until = now + settle;
        m.next_allowed = now + settle.max(backoff);
        m.last_intervention = Some(now);
        let contained = m.problem == Some(Condition::MemoryHigh) && m.proc.is_none();
        if heal_restarts(heal, running, &config) || contained {
            m.restarted();
            m.restart_step = self.step;
        }
        let strikes = m.strikes;
        m.note(
            now,
            format!(
                "intervention {} on {c} (model strike {strikes} of {}); settle {settle:?}, next \
                 allowed {}",
                heal.describe(),
                config.give_up_after,
                m.next_allowed
            ),
        );
        for (p, what) in broken {
            self.blame(p, id, now, what);
        }
    }

    // ----- the truth after a step, and the duties ----------------------------------------

    /// Re-derives every touched service (and what its health change reaches), reading the
    /// kernel's stops and `given-up` when `after_kernel`, and schedules the duties.
    fn settle_touched(&mut self, now: Instant, k: &Kernel, world: &World, after_kernel: bool) {
        // A worklist, as the kernel's: a service whose need changed after it was looked at in
        // this pass is looked at again.
        let mut i = 0;
        while i < self.touched.len() {
            let id = self.touched[i];
            i += 1;
            self.queued[id.index()] = false;
            self.rederive(now, k, world, id, after_kernel);
        }
        let touched = std::mem::take(&mut self.touched);
        if after_kernel {
            for &id in &touched {
                self.schedule_duty(k, world, id);
            }
        }
        self.touched = touched;
        self.touched.clear();
    }

    /// Whether `needs` are down for a planned restart or run: one of them, or one upstream
    /// of them, is in one (the kernel's rule: from the plans alone).
    fn needs_down_as_planned(&self, k: &Kernel, needs: &[ServiceId]) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = needs.to_vec();
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            if self.models.get(n).is_some_and(|m| m.planned) {
                return true;
            }
            stack.extend_from_slice(k.status(n).map(|v| v.needs()).unwrap_or_default());
        }
        false
    }

    fn rederive(&mut self, now: Instant, k: &Kernel, world: &World, id: ServiceId, after: bool) {
        let needs: &[ServiceId] = k.status(id).map(|v| v.needs()).unwrap_or_default();
        let needs_ok = needs
            .iter()
            .all(|n| self.models.get(*n).is_none_or(|m| m.healthy));
        let needs_planned = !needs_ok && self.needs_down_as_planned(k, needs);
        let view = k.status(id);
        let mut report = None;
        let m = self.models.get_mut(id).expect("touched");
        if after {
            let stopping = view.is_some_and(|v| v.is_stopping());
            m.kernel_stopping = stopping;
            if stopping {
                if let Some(p) = m.proc.as_mut() {
                    p.checks.clear();
                }
            }
            if view.is_some_and(|v| v.given_up()) && !m.given_up && !m.removed {
                m.given_up = true;
                m.note(now, format!("given-up with {} model strikes", m.strikes));
                if m.strikes < m.config.give_up_after {
                    report = Some(format!(
                        "gave up after {} strikes, give-up-after is {}",
                        m.strikes, m.config.give_up_after
                    ));
                }
            }
        }
        if needs_ok && !m.needs_ok && !m.removed {
            // A need went from unhealthy to healthy: a new fact (not for a removed service,
            // which has no needs left and is on its way out).
            m.reset(now, "needs healthy again");
        }
        m.needs_ok = needs_ok;
        // Up as the kernel saw it when it acted on the failed need, earlier in this step: a
        // process it started in this step runs (it starts nothing while a need is down); one it
        // restarted is not running; else as before its stops of this step.
        let up = if m.spawn_step == self.step {
            true
        } else if m.restart_step == self.step {
            false
        } else if m.up_step == self.step {
            m.up_before
        } else {
            m.up()
        };
        if !needs_ok && m.config.stop_when_needs_fail && m.wanted && up {
            m.stopped_for_needs = true;
            m.needs_planned = needs_planned;
            m.restarted();
            m.note(now, "model: stopped for its needs".into());
        }
        let c = m.derive(world);
        if c != m.condition {
            if model_debug() {
                eprintln!(
                    "  model {now} {}: {} -> {c} (after {after})",
                    m.config.name, m.condition
                );
            }
            m.planned &= c.is_transient();
            m.condition = c;
            m.since = now;
        }
        let healthy = verdict(&m.config, &m.condition).0;
        let mut reach = false;
        if healthy != m.healthy {
            let forgive_at = m.health_since + m.forgive_after;
            if !healthy && now >= forgive_at {
                // Healthy for forgive-after (as it was when the service became healthy): strikes
                // and the starts after needs came back are forgiven (the kernel says so with a
                // note when there were strikes).
                if m.strikes > 0 {
                    m.reset(now, "healthy for forgive-after");
                }
                if m.needs_restarts > 0 {
                    m.needs_restarts = 0;
                    m.start_gate = m.start_gate.min(forgive_at);
                }
            }
            if healthy {
                m.forgive_after = m.config.forgive_after;
            }
            if m.health_step != self.step {
                m.health_step = self.step;
                m.healthy_before = m.healthy;
            }
            m.healthy = healthy;
            m.health_since = now;
            reach = true;
        }
        if let Some(what) = report {
            self.blame(Property::BoundedHealing, id, now, what);
        }
        if reach {
            if let Some(v) = view {
                for d in v.dependents() {
                    self.touch(*d);
                }
                for s in v.successors() {
                    self.touch(*s);
                }
            }
        }
    }

    /// What the kernel owes the service now, and from when.
    fn duty(&self, k: &Kernel, world: &World, id: ServiceId) -> Option<(Instant, Duty)> {
        let m = self.models.get(id)?;
        if self.shutting_down || !m.wanted || m.removed || !m.needs_ok || m.stopping() {
            return None;
        }
        let view = k.status(id)?;
        // The kernel's hold on a need being stopped shows in the need's condition (stopping):
        // it is unhealthy, so `needs_ok` is false already.
        if m.condition == Condition::Waiting {
            if matches!(m.config.kind, Kind::Interface { .. }) || m.given_up {
                return None;
            }
            let after_ok = view
                .after()
                .iter()
                .all(|a| self.models.get(*a).is_none_or(|am| self.tried(am, false)));
            if !after_ok {
                return None;
            }
            let gate = if m.stopped_for_needs {
                m.start_gate
            } else {
                Instant::ZERO
            };
            // A service with templates starts once its render succeeded: not while the world's
            // last render of it failed (the kernel renders again when what it reads changes),
            // and not before a render in flight answers.
            let render = match world.outputs.last_render(id) {
                _ if m.config.templates.is_empty() => Instant::ZERO,
                Some(r) if r.failed => return None,
                Some(r) => r.answer_at,
                None => Instant::ZERO,
            };
            return Some((m.since.max(gate).max(render), Duty::Start));
        }
        if transient(&m.condition) || m.given_up {
            return None;
        }
        let (healthy, ladder, _) = verdict(&m.config, &m.condition);
        if healthy || ladder.is_empty() {
            return None;
        }
        if m.strikes >= m.config.give_up_after {
            return Some((m.since.max(m.settle_until), Duty::GiveUp));
        }
        Some((m.since.max(m.settle_until).max(m.next_allowed), Duty::Heal))
    }

    fn schedule_duty(&mut self, k: &Kernel, world: &World, id: ServiceId) {
        let due = self
            .duty(k, world, id)
            .map(|(at, d)| (at + PROMPTNESS_SLACK, d));
        let m = self.models.get_mut(id).expect("model");
        if m.due == due {
            return;
        }
        if let Some((deadline, _)) = m.due {
            self.deadlines.remove(&(deadline, id, Deadline::Duty));
        }
        m.due = due;
        if let Some((deadline, _)) = due {
            self.deadlines.insert((deadline, id, Deadline::Duty));
        }
    }

    fn judge_duty(&mut self, now: Instant, id: ServiceId, k: &Kernel, world: &World) {
        let Some(m) = self.models.get_mut(id) else {
            return;
        };
        m.due = None;
        // Fresh: the truth may have moved without a step that touched it.
        self.rederive(now, k, world, id, true);
        let Some((at, duty)) = self.duty(k, world, id) else {
            return;
        };
        if at + PROMPTNESS_SLACK > now {
            self.schedule_duty(k, world, id);
            return;
        }
        let m = self.models.get(id).expect("model");
        let what = match duty {
            Duty::Heal => format!(
                "{} since {}, allowed from {} (settle until {}, backoff until {}, {} strikes), \
                 and no intervention by {now}",
                m.condition, m.since, at, m.settle_until, m.next_allowed, m.strikes
            ),
            Duty::GiveUp => format!(
                "{} since {} with {} strikes of {} used, settled at {}, and not given up by {now}",
                m.condition, m.since, m.strikes, m.config.give_up_after, m.settle_until
            ),
            Duty::Start => format!(
                "wanted, its needs healthy since {}, nothing running, start allowed from {at}, and \
                 not started by {now}",
                m.since
            ),
        };
        self.blame(Property::Promptness, id, now, what);
    }

    /// A process over its limit in the world for `memory-every` + slack must be gone (or being
    /// stopped).
    fn judge_memory(&mut self, now: Instant, id: ServiceId, job: JobId, k: &Kernel, world: &World) {
        let Some(m) = self.models.get(id) else { return };
        let Some(limit) = m
            .config
            .memory_max
            .and_then(|l| limit_bytes(l, Some(world.total_ram())))
        else {
            return;
        };
        let Some(p) = world.procs().find(|(j, _)| **j == job).map(|(_, p)| p) else {
            return;
        };
        if p.stop_deadline.is_some() || k.status(id).is_some_and(|v| v.is_stopping()) {
            return;
        }
        let Some(rss) = world.rss_now(job, now).filter(|r| *r > limit) else {
            return;
        };
        let what = format!(
            "rss {rss} over memory-max {limit} in the world since {}, and not killed within \
             memory-every ({:?}) + {MEMORY_SLACK:?}",
            world
                .memory_over_at(job, limit)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            m.config.memory_every
        );
        self.blame(Property::Containment, id, now, what);
    }

    /// The services a replacement stopped must be changed, removed, or stopped for a need.
    fn check_minimal_replace(&mut self, now: Instant, changed: &[ServiceId]) {
        let stopped = std::mem::take(&mut self.stopped_now);
        for id in stopped {
            let Some(m) = self.models.get(id) else {
                continue;
            };
            let for_needs = m.config.stop_when_needs_fail && !m.needs_ok;
            if changed.contains(&id) || m.removed || !m.wanted || for_needs {
                continue;
            }
            let what =
                "stopped by a config replacement that left its definition unchanged".to_string();
            self.blame(Property::MinimalReplace, id, now, what);
        }
    }

    fn check_stop_order(&mut self, now: Instant, k: &Kernel, effect: &Effect, world: &World) {
        let (service, what) = match effect {
            Effect::Signal {
                service,
                to: SignalTarget::Group,
                ..
            } => (*service, "stop signal"),
            Effect::Kill { service, .. } => (*service, "SIGKILL"),
            Effect::RunCommand {
                service,
                purpose: CommandPurpose::Stop,
                ..
            } => (*service, "stop command"),
            _ => return,
        };
        let Some(slot) = k.status(service) else {
            return;
        };
        let name = slot.config().name.clone();
        let still_up: Vec<String> = slot
            .dependents()
            .iter()
            .filter_map(|d| k.status(*d))
            .filter(|d| world.is_up(d.id(), d.config(), now))
            .map(|d| d.config().name.clone())
            .collect();
        if !still_up.is_empty() {
            let what =
                format!("{what} during shutdown while {still_up:?}, which need it, are still up");
            self.report(Property::StopOrder, Some(service), &name, now, what);
        }
    }

    fn check_instances(&mut self, now: Instant, k: &Kernel, world: &World, spawned: bool) {
        if spawned {
            let mut per_name: BTreeMap<&str, usize> = BTreeMap::new();
            for (_, p) in world.procs() {
                *per_name.entry(p.name.as_str()).or_default() += 1;
            }
            for (name, n) in per_name {
                if n > 1 {
                    let id = k.lookup(name);
                    let what = format!("{n} live process groups");
                    self.report(Property::OneInstance, id, name, now, what);
                }
            }
        }
        if world.first_stop_deadline().is_some_and(|d| d < now) {
            let late: Vec<_> = world
                .procs()
                .filter(|(_, p)| p.stop_deadline.is_some_and(|d| d < now))
                .map(|(job, p)| (p.service, p.name.clone(), *job, p.stop_deadline))
                .collect();
            for (id, name, job, deadline) in late {
                let what = format!(
                    "process group of job {} still alive at {now}, stop-timeout plus SIGKILL \
                     latency ended at {}",
                    job.0,
                    deadline.map(|d| d.to_string()).unwrap_or_default()
                );
                self.report(Property::OneInstance, Some(id), &name, now, what);
            }
        }
    }

    /// The services that must become healthy once faults stop: wanted, not given up for good
    /// (`retry-after = "never"`), and needing only such services.
    pub fn liveness_candidates(&self, k: &Kernel) -> Vec<ServiceId> {
        // By id: `None` not decided yet. Config order is a topological order in the sim's
        // graphs, but a config may list services in any order, so iterate to a fixed point.
        let slots = k.views().map(|v| v.id().index() + 1).max().unwrap_or(0);
        let mut ok: Vec<Option<bool>> = vec![None; slots];
        loop {
            let mut changed = false;
            for s in k.views() {
                if ok[s.id().index()].is_some() {
                    continue;
                }
                // A need or `after` target outside the live config (removed) counts as known.
                let known = |n: &ServiceId| ok.get(n.index()).is_none_or(|o| o.is_some());
                if !s.needs().iter().chain(s.after()).all(known) {
                    continue;
                }
                let needs_ok = s
                    .needs()
                    .iter()
                    .all(|n| ok.get(n.index()) == Some(&Some(true)));
                // `after` waits until its targets have been tried; a target that never will be
                // (its own needs are down for good) holds the service back for ever. That is the
                // kernel's rule today (see the simulator's report); such services are not
                // required to become healthy.
                let after_ok = s.after().iter().all(|a| {
                    ok.get(a.index()) == Some(&Some(true))
                        || k.status(*a)
                            .is_none_or(|t| t.ever_started() || !t.wanted() || t.given_up())
                });
                let forever = s.given_up() && s.config().retry_after.is_none();
                let good = needs_ok && after_ok && self.wanted(s.id()) && !forever;
                ok[s.id().index()] = Some(good);
                changed = true;
            }
            if !changed {
                break;
            }
        }
        k.views()
            .filter(|s| ok[s.id().index()] == Some(true))
            .map(|s| s.id())
            .collect()
    }

    /// Whether every liveness candidate is healthy (the quick answer first: everything is).
    pub fn all_candidates_healthy(&self, k: &Kernel) -> bool {
        if k.views().all(|s| s.healthy()) {
            return true;
        }
        self.liveness_candidates(k)
            .iter()
            .all(|id| k.status(*id).is_some_and(|s| s.healthy()))
    }

    /// Whether the heal would be automatic (for the quiet check).
    pub fn is_intervention(effect: &Effect) -> bool {
        matches!(
            effect,
            Effect::Event { record, .. }
                if record.heal.is_some() && record.outcome == Some(Outcome::Pending)
        )
    }
}

fn mark_ready(m: &mut Model) {
    if let Some(p) = m.proc.as_mut() {
        if !p.ready {
            p.ready = true;
            m.cure(|c| *c == Condition::StartTimeout);
        }
    }
}

/// A probe answered: a success cures what probes said; a failure counts, and `failures` in a
/// row is `unresponsive`; a `reports = "condition"` probe names the condition itself.
fn on_probe(m: &mut Model, result: &CheckResult) {
    let Some(probe) = m.config.probe.clone() else {
        return;
    };
    let probe_word = |c: &Condition| matches!(c, Condition::Unresponsive | Condition::Custom(_));
    let p = m.proc.as_mut().expect("a probe of a process");
    match result {
        CheckResult::Ok => {
            p.probe_failures = 0;
            m.cure(probe_word);
        }
        CheckResult::Condition(name) if probe.reports == Reports::Condition => {
            let name = name.trim();
            if name == "ready" {
                p.probe_failures = 0;
                m.cure(probe_word);
            } else if name == "unresponsive" {
                m.observe(Condition::Unresponsive);
            } else {
                m.observe(Condition::Custom(name.to_string()));
            }
        }
        _ => {
            p.probe_failures = p.probe_failures.saturating_add(1);
            if p.probe_failures >= probe.failures {
                m.observe(Condition::Unresponsive);
            }
        }
    }
}

/// The problem an unexpected end of the service's process (or command) is.
fn failure(config: &ServiceConfig) -> Condition {
    if matches!(config.kind, Kind::Oneshot { .. }) {
        Condition::Failed
    } else {
        Condition::Exited
    }
}

/// `memory-max` in bytes on a machine with `total` bytes of RAM.
fn limit_bytes(limit: medic_kernel::config::MemoryLimit, total: Option<u64>) -> Option<u64> {
    use medic_kernel::config::MemoryLimit;
    match limit {
        MemoryLimit::Bytes(b) => Some(b),
        MemoryLimit::PerMille(pm) => {
            Some((u128::from(total?) * u128::from(pm) / 1000).min(u128::from(u64::MAX)) as u64)
        }
    }
}

/// `SIM_MODEL_DEBUG=1`: print every change of the model's conditions.
fn model_debug() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SIM_MODEL_DEBUG").is_some())
}

/// The service an effect names, if any.
fn effect_service(e: &Effect) -> Option<ServiceId> {
    match e {
        Effect::Spawn { service, .. }
        | Effect::Signal { service, .. }
        | Effect::Kill { service, .. }
        | Effect::Check { service, .. }
        | Effect::SampleMemory { service, .. }
        | Effect::RunCommand { service, .. }
        | Effect::LinkUp { service, .. }
        | Effect::Event { service, .. }
        | Effect::Sweep { service, .. }
        | Effect::Render { service, .. } => Some(*service),
        _ => None,
    }
}

/// Every service reachable from `id` along `edges` (not `id` itself).
fn closure<'k>(
    k: &'k Kernel,
    id: ServiceId,
    edges: impl Fn(&ServiceView<'k>) -> &'k [ServiceId],
) -> Vec<ServiceId> {
    let mut seen = BTreeSet::from([id]);
    let mut frontier = vec![id];
    let mut found = Vec::new();
    while let Some(next) = frontier.pop() {
        let Some(v) = k.status(next) else { continue };
        for n in edges(&v) {
            if seen.insert(*n) {
                found.push(*n);
                frontier.push(*n);
            }
        }
    }
    found
}
