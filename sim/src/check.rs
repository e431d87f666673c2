//! The property checkers of architecture.md §7: a small reference model of what *should* happen,
//! compared after every step with what the kernel did and what the world saw.
//!
//! The model is fed only what an observer outside the kernel can see: the inputs, the effects
//! (interventions are the history records the kernel emits with an outcome of `pending`,
//! cross-checked with spawns and signals in the world), the conditions the kernel reports, and
//! the world's processes. Where the kernel's own records claim a reset of the strikes
//! (forgiveness, `retry-after`), the model checks the claim before it believes it.

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use medic_kernel::config::{Kind, Readiness, ServiceConfig};
use medic_kernel::health::{self, Condition};
use medic_kernel::{
    CommandPurpose, Effect, Input, Instant, JobId, Kernel, Operator, Outcome, ServiceId,
    ServiceView, SignalTarget,
};

use crate::world::World;

/// Which property a violation breaks (numbered as in architecture.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Property {
    /// 1. No two automatic interventions closer than settle or backoff.
    Settle,
    /// 2. At most `give-up-after` automatic interventions between new facts.
    BoundedHealing,
    /// 3. No intervention or start while a need is unhealthy.
    UpstreamFirst,
    /// 4. At most one live process group per service; none after a stop has run its course.
    OneInstance,
    /// 5. On shutdown, a service stops only after everything that needs it.
    StopOrder,
    /// 6. Once faults stop, wanted services become healthy and the kernel goes quiet.
    Liveness,
    /// 7. Same seed, same trace; a replay reproduces every effect.
    Determinism,
    /// A process over its `memory-max` is killed in the step that sees the sample, whatever
    /// the backoff or `given-up` (containment is not an intervention).
    Containment,
    /// The kernel's own `check_invariants` failed.
    Invariant,
    /// 10. A oneshot with `every` runs at most once per period (sim/src/timed.rs).
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
            Property::Invariant => "kernel invariant",
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

/// The model of one service's medical rules.
#[derive(Clone, Debug)]
struct Model {
    config: Arc<ServiceConfig>,
    /// Automatic interventions since the last new fact or forgiveness.
    strikes: u32,
    settle_until: Instant,
    next_allowed: Instant,
    last_intervention: Option<Instant>,
    /// Seen `given-up` since the last new fact.
    given_up: bool,
    healthy: bool,
    healthy_since: Instant,
    needs_ok: bool,
    /// A watched file changed: a new fact once the debounce time has passed.
    file_fact_at: Option<Instant>,
    /// The model's own notes, newest last, for a failure report.
    notes: VecDeque<String>,
}

const NOTES: usize = 24;

impl Model {
    fn new(config: Arc<ServiceConfig>) -> Model {
        Model {
            config,
            strikes: 0,
            settle_until: Instant::ZERO,
            next_allowed: Instant::ZERO,
            last_intervention: None,
            given_up: false,
            healthy: false,
            healthy_since: Instant::ZERO,
            needs_ok: true,
            file_fact_at: None,
            notes: VecDeque::new(),
        }
    }

    fn note(&mut self, now: Instant, text: String) {
        if self.notes.len() == NOTES {
            self.notes.pop_front();
        }
        self.notes.push_back(format!("{now} {text}"));
    }

    /// A new fact (or forgiveness): strikes and `given-up` cleared; the settle time of the last
    /// intervention still stands.
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
}

/// `min(settle × 2^(strikes−1), max_backoff)`, written here again so the model does not
/// borrow the kernel's arithmetic.
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

/// Models by service id (ids are small and dense: a Vec beats a map on every step).
#[derive(Clone, Debug, Default)]
struct Models(Vec<Option<Model>>);

impl Models {
    fn get(&self, id: &ServiceId) -> Option<&Model> {
        self.0.get(id.index()).and_then(Option::as_ref)
    }
    fn get_mut(&mut self, id: &ServiceId) -> Option<&mut Model> {
        self.0.get_mut(id.index()).and_then(Option::as_mut)
    }
    fn insert(&mut self, id: ServiceId, m: Model) {
        if self.0.len() <= id.index() {
            self.0.resize(id.index() + 1, None);
        }
        self.0[id.index()] = Some(m);
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn values_mut(&mut self) -> impl Iterator<Item = &mut Model> {
        self.0.iter_mut().flatten()
    }
}

/// The checkers' state across a run.
#[derive(Clone, Debug, Default)]
pub struct Checker {
    /// The model of every service, by id index.
    models: Models,
    /// Wanted by the operator, by name.
    wanted: BTreeMap<String, bool>,
    shutting_down: bool,
    /// Every violation found, in order.
    pub violations: Vec<Violation>,
    /// Automatic interventions seen, in total.
    pub interventions: u64,
    /// Health of every slot after the current step, by index (kept to reuse its allocation).
    post: Vec<bool>,
    /// Services the kernel has spawned at least once.
    spawned: BTreeSet<ServiceId>,
}

fn healthy(config: &ServiceConfig, condition: &Condition) -> bool {
    health::verdict(config, condition).healthy
}

impl Checker {
    /// A checker for a kernel that has not booted yet.
    pub fn new(kernel: &Kernel) -> Checker {
        let mut c = Checker::default();
        for slot in kernel.views() {
            c.wanted.insert(slot.config().name.clone(), true);
            c.models
                .insert(slot.id(), Model::new(slot.config().clone()));
        }
        c
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

    /// The model's notes about a service, for a failure report.
    pub fn notes(&self, id: ServiceId) -> Vec<String> {
        self.models
            .get(&id)
            .map(|m| m.notes.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the operator wants the service called `name`.
    pub fn wanted(&self, name: &str) -> bool {
        self.wanted.get(name).copied().unwrap_or(false)
    }

    fn unhealthy_needs_now(k: &Kernel, config: &ServiceConfig) -> Vec<String> {
        config
            .needs
            .iter()
            .filter(|n| {
                !k.lookup(n)
                    .and_then(|id| k.status(id))
                    .is_some_and(|s| healthy(s.config(), s.condition()))
            })
            .cloned()
            .collect()
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
        if let Err(broken) = k.check_invariants() {
            for b in broken {
                self.report(Property::Invariant, None, "-", now, b);
            }
        }
        // Definitions: a changed one is a new fact; a new service starts a fresh model. Only
        // a config replacement changes them (the kernel keeps an unchanged definition's Arc).
        if self.models.is_empty() || matches!(input, Input::ReplaceConfig { .. }) {
            for slot in k.views() {
                match self.models.get_mut(&slot.id()) {
                    // The slot of a removed service, now another's: a fresh model.
                    Some(m) if m.config.name != slot.config().name => {
                        *m = Model::new(slot.config().clone());
                        self.spawned.remove(&slot.id());
                        self.wanted
                            .insert(slot.config().name.clone(), !self.shutting_down);
                    }
                    Some(m) if !Arc::ptr_eq(&m.config, slot.config()) => {
                        let changed = *m.config != **slot.config();
                        m.config = slot.config().clone();
                        if changed {
                            m.note(now, "model: definition changed".into());
                            m.reset(now, "definition changed");
                        }
                    }
                    Some(_) => {}
                    None => {
                        self.models
                            .insert(slot.id(), Model::new(slot.config().clone()));
                        self.wanted
                            .insert(slot.config().name.clone(), !self.shutting_down);
                    }
                }
            }
            self.wanted.retain(|name, _| k.lookup(name).is_some());
        }
        // A watched file's change becomes a fact when its debounce timer fires, in a later step
        // than the change itself.
        for m in self.models.values_mut() {
            if m.file_fact_at.is_some_and(|at| at <= now) {
                m.file_fact_at = None;
                m.reset(now, "watched file changed");
            }
        }
        // Facts told by the input.
        match input {
            Input::Operator(op) if !self.shutting_down => {
                let (name, wanted, fact) = match op {
                    Operator::Start(n) => (n, true, true),
                    Operator::Restart(n) => (n, true, true),
                    Operator::Reload(n) => (n, true, false),
                    Operator::Stop(n) => (n, false, false),
                    Operator::Shutdown => {
                        self.shutting_down = true;
                        for w in self.wanted.values_mut() {
                            *w = false;
                        }
                        (&String::new(), false, false)
                    }
                };
                if let Some(id) = k.lookup(name) {
                    self.wanted.insert(name.clone(), wanted);
                    if let Some(m) = self.models.get_mut(&id) {
                        m.note(now, format!("operator {op:?}"));
                        if fact {
                            m.reset(now, "operator");
                        }
                    }
                    // A stop takes down what needs it, transitively; a start brings up what
                    // it needs (each of those not wanted before is started as a new fact).
                    let (edges, now_wanted): (fn(&ServiceView<'_>) -> Vec<ServiceId>, _) = match op
                    {
                        Operator::Stop(_) => (|v| v.dependents().to_vec(), false),
                        _ => (|v| v.needs().to_vec(), true),
                    };
                    if matches!(op, Operator::Stop(_) | Operator::Start(_)) {
                        for other in closure(k, id, edges) {
                            let name = k.name(other).to_string();
                            if self.wanted(&name) != now_wanted {
                                self.wanted.insert(name, now_wanted);
                                if let Some(m) = self.models.get_mut(&other) {
                                    m.note(now, format!("operator {op:?} (transitively)"));
                                    if now_wanted {
                                        m.reset(now, "operator");
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Input::FileChanged { path } => {
                for slot in k.views() {
                    let m = self
                        .models
                        .get_mut(&slot.id())
                        .expect("model of a live service");
                    if m.config.reload_on.contains(path) || m.config.restart_on.contains(path) {
                        m.file_fact_at = Some(now + m.config.debounce);
                    }
                }
            }
            _ => {}
        }
        // A need recovering is a new fact (judged on this step's health of the needs).
        self.post.clear();
        let slots = k.views().map(|s| s.id().index() + 1).max().unwrap_or(0);
        self.post.resize(slots, false);
        for slot in k.views() {
            self.post[slot.id().index()] = healthy(slot.config(), slot.condition());
        }
        for slot in k.views() {
            let ok = slot
                .needs()
                .iter()
                .all(|n| self.post.get(n.index()) == Some(&true));
            let m = self.models.get_mut(&slot.id()).expect("model");
            if ok && !m.needs_ok {
                m.reset(now, "needs healthy again");
            }
            m.needs_ok = ok;
        }
        if let Input::MemorySampled {
            service,
            job,
            rss_bytes: Some(rss),
            total_bytes,
        } = input
        {
            self.check_containment(now, k, effects, world, (*service, *job), *rss, *total_bytes);
        }
        // What the kernel did.
        for effect in effects {
            match effect {
                Effect::Event { service, record } => {
                    self.on_record(now, k, *service, record);
                }
                Effect::Spawn {
                    service, config, ..
                } => {
                    let unhealthy: Vec<String> = Self::unhealthy_needs_now(k, config)
                        .into_iter()
                        .filter(|n| self.was_unhealthy(k, n))
                        .collect();
                    if !unhealthy.is_empty() {
                        self.report(
                            Property::UpstreamFirst,
                            Some(*service),
                            &config.name,
                            now,
                            format!("started while its needs {unhealthy:?} are unhealthy"),
                        );
                    }
                    self.check_start_against_world(now, k, world, *service, config);
                    self.spawned.insert(*service);
                }
                _ => {}
            }
            if self.shutting_down {
                self.check_stop_order(now, k, effect, world);
            }
        }
        // Health as of now.
        for slot in k.views() {
            let h = self.post[slot.id().index()];
            let m = self.models.get_mut(&slot.id()).expect("model");
            if h && !m.healthy {
                m.healthy_since = now;
            }
            m.healthy = h;
            if *slot.condition() == Condition::GivenUp && !m.given_up {
                m.given_up = true;
                m.note(now, format!("given-up with {} model strikes", m.strikes));
                if m.strikes < m.config.give_up_after {
                    let (name, strikes, limit) =
                        (m.config.name.clone(), m.strikes, m.config.give_up_after);
                    self.report(
                        Property::BoundedHealing,
                        Some(slot.id()),
                        &name,
                        now,
                        format!("gave up after {strikes} strikes, give-up-after is {limit}"),
                    );
                }
            }
        }
        let spawned = effects.iter().any(|e| matches!(e, Effect::Spawn { .. }));
        self.check_instances(now, k, world, spawned);
    }

    /// A start judged by the world, not by what the kernel believes: every need that is a
    /// process with a readiness protocol must be ready in the world, and every service it is
    /// ordered `after` must have been tried (spawned at least once), unless that one is an
    /// interface, not wanted, or given up.
    fn check_start_against_world(
        &mut self,
        now: Instant,
        k: &Kernel,
        world: &World,
        service: ServiceId,
        config: &ServiceConfig,
    ) {
        let mut wrong = Vec::new();
        for n in &config.needs {
            let Some(v) = k.lookup(n).and_then(|id| k.status(id)) else {
                continue;
            };
            let polled = matches!(v.config().kind, Kind::Process { .. })
                && v.config().ready != Readiness::Spawned;
            if polled && world.ready_in_world(v.id(), now) == Some(false) {
                wrong.push(format!("its need {n} is not ready in the world"));
            }
        }
        for a in &config.after {
            let Some(v) = k.lookup(a).and_then(|id| k.status(id)) else {
                continue;
            };
            let exempt = matches!(v.config().kind, Kind::Interface { .. })
                || !self.wanted(a)
                || v.given_up();
            if !exempt && !self.spawned.contains(&v.id()) {
                wrong.push(format!("{a}, which it is ordered after, was never tried"));
            }
        }
        if !wrong.is_empty() {
            let what = format!("started while {}", wrong.join("; "));
            self.report(
                Property::UpstreamFirst,
                Some(service),
                &config.name,
                now,
                what,
            );
        }
    }

    /// Whether `name` was unhealthy before this step too (so the step could not have seen it
    /// healthy: an intervention in the same step as a need failing is not blamed).
    fn was_unhealthy(&self, k: &Kernel, name: &str) -> bool {
        !k.lookup(name)
            .and_then(|id| self.models.get(&id))
            .is_some_and(|m| m.healthy)
    }

    fn on_record(
        &mut self,
        now: Instant,
        k: &Kernel,
        id: ServiceId,
        record: &medic_kernel::Record,
    ) {
        let Some(m) = self.models.get_mut(&id) else {
            return;
        };
        let name = m.config.name.clone();
        if record.note.starts_with("forgiven") {
            let healthy_for = now.saturating_since(m.healthy_since);
            if !m.healthy || healthy_for < m.config.forgive_after {
                let what = format!(
                    "forgave its strikes after {:?} healthy (healthy now: {}), forgive-after is {:?}",
                    healthy_for, m.healthy, m.config.forgive_after
                );
                self.report(Property::BoundedHealing, Some(id), &name, now, what);
                return;
            }
            m.reset(now, "forgiven");
            return;
        }
        if record.note.starts_with("retry-after elapsed") {
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
                self.report(Property::BoundedHealing, Some(id), &name, now, what);
                return;
            }
            m.reset(now, "retry-after elapsed");
            return;
        }
        let (Some(heal), Some(Outcome::Pending)) = (&record.heal, record.outcome) else {
            return;
        };
        self.interventions += 1;
        let config = m.config.clone();
        let verdict = health::verdict(&config, &record.condition);
        let settle = health::settle_of(&verdict, heal);
        // The ladder: the n-th attempt since the last new fact uses rung n, the last repeating.
        let expected = match verdict.heal {
            [] => None,
            ladder => Some(&ladder[(m.strikes as usize).min(ladder.len() - 1)]),
        };
        if expected != Some(heal) {
            let what = format!(
                "attempt {} on {} used {}, the ladder says {}",
                m.strikes + 1,
                record.condition,
                heal.describe(),
                expected.map_or("no heal".into(), |h| h.describe())
            );
            self.report(Property::BoundedHealing, Some(id), &name, now, what);
        }
        let Some(m) = self.models.get_mut(&id) else {
            return;
        };
        m.strikes += 1;
        let strikes = m.strikes;
        m.note(
            now,
            format!(
                "intervention {} on {} (model strike {strikes} of {}); settle {:?}",
                heal.describe(),
                record.condition,
                config.give_up_after,
                settle
            ),
        );
        let early = now < m.next_allowed;
        let (next_allowed, settle_until, last) =
            (m.next_allowed, m.settle_until, m.last_intervention);
        let given_up = m.given_up;
        let backoff = model_backoff(settle, strikes, config.max_backoff);
        m.settle_until = now + settle;
        m.next_allowed = now + settle.max(backoff);
        m.last_intervention = Some(now);
        if early {
            let what = format!(
                "intervened ({}) at {now}, before {next_allowed} (previous intervention at {}, \
                 settling until {settle_until})",
                heal.describe(),
                last.map(|l| l.to_string()).unwrap_or_default()
            );
            self.report(Property::Settle, Some(id), &name, now, what);
        }
        if given_up {
            let what = format!(
                "intervened ({}) while given-up, with no new fact",
                heal.describe()
            );
            self.report(Property::BoundedHealing, Some(id), &name, now, what);
        } else if strikes > config.give_up_after {
            let what = format!(
                "intervention number {strikes} since the last new fact, give-up-after is {}",
                config.give_up_after
            );
            self.report(Property::BoundedHealing, Some(id), &name, now, what);
        }
        if record.condition.heal_forbidden() {
            let what = format!(
                "intervened ({}) on a {} service",
                heal.describe(),
                record.condition
            );
            self.report(Property::UpstreamFirst, Some(id), &name, now, what);
        }
        let down: Vec<String> = Self::unhealthy_needs_now(k, &config)
            .into_iter()
            .filter(|n| self.was_unhealthy(k, n))
            .collect();
        if !down.is_empty() {
            let what = format!(
                "intervened ({}) while its needs {down:?} are unhealthy",
                heal.describe()
            );
            self.report(Property::UpstreamFirst, Some(id), &name, now, what);
        }
    }

    /// Over its limit in the world: the kernel must kill the process in this very step, unless
    /// it is already being stopped (its stop signal went out earlier).
    #[allow(clippy::too_many_arguments)]
    fn check_containment(
        &mut self,
        now: Instant,
        k: &Kernel,
        effects: &[Effect],
        world: &World,
        (service, job): (ServiceId, JobId),
        rss: u64,
        total: Option<u64>,
    ) {
        let Some(m) = self.models.get(&service) else {
            return;
        };
        let Some(limit) = m.config.memory_max.and_then(|l| l.bytes(total)) else {
            return;
        };
        if rss <= limit || k.status(service).and_then(|v| v.job()) != Some(job) {
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
            let name = m.config.name.clone();
            let what = format!("rss {rss} over memory-max {limit} and not killed at once");
            self.report(Property::Containment, Some(service), &name, now, what);
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
        let mut per_name: BTreeMap<&str, usize> = BTreeMap::new();
        let mut late = Vec::new();
        for (job, p) in world.procs() {
            // A second group can only appear with a spawn.
            if spawned {
                *per_name.entry(p.name.as_str()).or_default() += 1;
            }
            if p.stop_deadline.is_some_and(|d| d < now) {
                late.push((p.service, p.name.clone(), *job, p.stop_deadline));
            }
        }
        for (name, n) in per_name {
            if n > 1 {
                let id = k.lookup(name);
                let what = format!("{n} live process groups");
                self.report(Property::OneInstance, id, name, now, what);
            }
        }
        for (id, name, job, deadline) in late {
            let what = format!(
                "process group of job {} still alive at {now}, stop-timeout plus SIGKILL latency \
                 ended at {}",
                job.0,
                deadline.map(|d| d.to_string()).unwrap_or_default()
            );
            self.report(Property::OneInstance, Some(id), &name, now, what);
        }
    }

    /// The services that must become healthy once faults stop: wanted, not given up for good
    /// (`retry-after = "never"`), and needing only such services.
    pub fn liveness_candidates(&self, k: &Kernel) -> Vec<ServiceId> {
        let mut ok: BTreeMap<&str, bool> = BTreeMap::new();
        let mut out = Vec::new();
        // Config order is a topological order: needs come first in the sim's graphs, but a
        // config may list them in any order, so iterate to a fixed point.
        let services: Vec<_> = k.views().collect();
        loop {
            let mut changed = false;
            for s in &services {
                if ok.contains_key(s.config().name.as_str()) {
                    continue;
                }
                let known = |n: &String| ok.contains_key(n.as_str()) || k.lookup(n).is_none();
                if !s
                    .config()
                    .needs
                    .iter()
                    .chain(s.config().after.iter())
                    .all(known)
                {
                    continue;
                }
                let needs_ok = s
                    .config()
                    .needs
                    .iter()
                    .all(|n| ok.get(n.as_str()) == Some(&true));
                // `after` waits until its targets have been tried; a target that never will be
                // (its own needs are down for good) holds the service back for ever. That is the
                // kernel's rule today (see the simulator's report); such services are not
                // required to become healthy.
                let after_ok = s.config().after.iter().all(|a| {
                    ok.get(a.as_str()) == Some(&true)
                        || k.lookup(a)
                            .and_then(|id| k.status(id))
                            .is_none_or(|t| t.ever_started() || !t.wanted() || t.given_up())
                });
                let forever = s.given_up() && s.config().retry_after.is_none();
                let good = needs_ok && after_ok && self.wanted(&s.config().name) && !forever;
                ok.insert(s.config().name.as_str(), good);
                changed = true;
            }
            if !changed {
                break;
            }
        }
        for s in &services {
            if ok.get(s.config().name.as_str()) == Some(&true) {
                out.push(s.id());
            }
        }
        out
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

/// Every service reachable from `id` along `edges` (not `id` itself).
fn closure(
    k: &Kernel,
    id: ServiceId,
    edges: fn(&ServiceView<'_>) -> Vec<ServiceId>,
) -> Vec<ServiceId> {
    let mut seen = BTreeSet::from([id]);
    let mut frontier = vec![id];
    let mut found = Vec::new();
    while let Some(next) = frontier.pop() {
        let Some(v) = k.status(next) else { continue };
        for n in edges(&v) {
            if seen.insert(n) {
                found.push(n);
                frontier.push(n);
            }
        }
    }
    found
}
