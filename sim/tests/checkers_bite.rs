//! A checker that cannot fail is a defect: each deliberately broken kernel here must be caught
//! by the property it breaks within a fixed number of seeds.
//!
//! Two kinds of broken kernel: wrappers that change what a correct kernel does on its way out
//! (late, hidden or extra effects), and kernels that run their own rules on a skewed reading of
//! the config (a probe threshold one lower, a cap ignored, a ladder shifted by one rung) while
//! the checkers judge by the config as written. Bugs written into the kernel's rules themselves
//! are the mutation tests' job (cargo-mutants over `kernel/src`).

use core::time::Duration;
use std::collections::BTreeSet;
use std::sync::Arc;

use medic_kernel::config::{self, Heal, Kind, ServiceConfig};
use medic_kernel::{
    Condition, Effect, Input, Instant, JobId, Kernel, Operator, Outcome, Record, RenderResult,
    ServiceId,
};
use medic_sim::graph::Graph;
use medic_sim::{run_with, seeds_from_env, Options, Origin, Property, Supervisor};

/// Seeds each broken kernel gets to be caught in.
const SEEDS: u64 = 200;

fn opts(name: &'static str) -> Options {
    Options {
        fault_time: Duration::from_secs(120),
        write_trace: false,
        origin: Origin {
            target: "checkers_bite",
            name,
        },
        ..Options::default()
    }
    .from_env()
}

/// Runs seeds until one fails; the property it broke and the seed.
fn first_failure<S: Supervisor>(
    name: &'static str,
    wrap: impl Fn(Kernel) -> S,
) -> Option<(Property, u64, String)> {
    seeds_from_env(SEEDS).into_iter().find_map(|seed| {
        run_with(seed, &opts(name), None, &wrap)
            .err()
            .map(|f| (f.property(), seed, f.to_string()))
    })
}

/// `name` is the test's own name, for the reproduce line.
fn assert_caught<S: Supervisor>(
    name: &'static str,
    expected: Property,
    wrap: impl Fn(Kernel) -> S,
) {
    match first_failure(name, wrap) {
        Some((p, seed, report)) => {
            assert_eq!(p, expected, "caught, but as another property:\n{report}");
            let what = report.lines().find(|l| l.trim_start().starts_with("what:"));
            eprintln!(
                "{name}: caught as {p} at seed {seed}: {}",
                what.unwrap_or("").trim()
            );
        }
        None => panic!("{expected} never caught in {SEEDS} seeds"),
    }
}

/// A kernel that runs its own rules on a skewed reading of every definition (the checkers
/// judge by the config as written): its first config and every replacement are skewed.
struct Skewed {
    inner: Kernel,
    skew: fn(&mut ServiceConfig),
}

fn skewed(kernel: Kernel, skew: fn(&mut ServiceConfig)) -> Skewed {
    let mut config = kernel.config().clone();
    config.services = config
        .services
        .iter()
        .map(|s| {
            let mut s = (**s).clone();
            skew(&mut s);
            Arc::new(s)
        })
        .collect();
    Skewed {
        inner: Kernel::new(config),
        skew,
    }
}

impl Supervisor for Skewed {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        let input = match input {
            Input::ReplaceConfig { text } => match config::parse(&text, "sim.toml") {
                Ok(c) => {
                    let services = c
                        .services
                        .iter()
                        .map(|s| {
                            let mut s = (**s).clone();
                            (self.skew)(&mut s);
                            s
                        })
                        .collect();
                    Input::ReplaceConfig {
                        text: Graph::from_services(services).render(),
                    }
                }
                Err(_) => Input::ReplaceConfig { text },
            },
            other => other,
        };
        self.inner.step(now, input, out);
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

fn fake_record(condition: Condition, heal: Heal, at: Instant) -> Record {
    Record {
        seq: u64::MAX,
        at,
        condition,
        heal: Some(heal),
        outcome: Some(Outcome::Pending),
        outcome_at: None,
        note: "broken kernel".into(),
    }
}

/// Re-issues every intervention 1 ms later: it does not wait for the settle time.
struct DropsSettle {
    inner: Kernel,
    due: Vec<(Instant, ServiceId, Condition, Heal)>,
}

impl Supervisor for DropsSettle {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        self.inner.step(now, input, out);
        let mut again = Vec::new();
        self.due.retain(|(at, id, c, h)| {
            if *at <= now {
                again.push(Effect::Event {
                    service: *id,
                    record: fake_record(c.clone(), h.clone(), now),
                });
                false
            } else {
                true
            }
        });
        for e in out.iter() {
            if let Effect::Event { service, record } = e {
                if let (Some(h), Some(Outcome::Pending), false) =
                    (&record.heal, record.outcome, record.seq == u64::MAX)
                {
                    self.due.push((
                        now + Duration::from_millis(1),
                        *service,
                        record.condition.clone(),
                        h.clone(),
                    ));
                }
            }
        }
        out.extend(again);
    }
    fn next_deadline(&self) -> Option<Instant> {
        let own = self.due.iter().map(|d| d.0).min();
        [self.inner.next_deadline(), own]
            .into_iter()
            .flatten()
            .min()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

/// Restarts a service that has been blocked by a need for a whole step.
struct IntervenesWhileBlocked {
    inner: Kernel,
    blocked: BTreeSet<ServiceId>,
    done: BTreeSet<ServiceId>,
}

impl Supervisor for IntervenesWhileBlocked {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        self.inner.step(now, input, out);
        let blocked: BTreeSet<ServiceId> = self
            .inner
            .views()
            .filter(|s| *s.condition() == Condition::Blocked)
            .map(|s| s.id())
            .collect();
        for id in blocked.intersection(&self.blocked) {
            if self.done.insert(*id) {
                out.push(Effect::Event {
                    service: *id,
                    record: fake_record(Condition::Exited, Heal::Restart, now),
                });
            }
        }
        self.blocked = blocked;
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

/// Whenever a service gives up, quietly tells the inner kernel "operator start" (a new fact
/// nobody outside sees), so it heals for ever.
struct NeverGivesUp {
    inner: Kernel,
}

impl Supervisor for NeverGivesUp {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        self.inner.step(now, input, out);
        let given_up: Vec<String> = self
            .inner
            .views()
            .filter(|s| *s.condition() == Condition::GivenUp)
            .map(|s| s.name().to_string())
            .collect();
        for name in given_up {
            let mut hidden = Vec::new();
            self.inner
                .step(now, Input::Operator(Operator::Start(name)), &mut hidden);
            out.extend(hidden.into_iter().filter(|e| {
                !matches!(e, Effect::Event { record, .. } if record.note.starts_with("operator"))
            }));
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

/// Starts a never-started process as soon as it waits for a need.
struct StartsEarly {
    inner: Kernel,
    started: BTreeSet<ServiceId>,
    next_job: u64,
}

impl Supervisor for StartsEarly {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        self.inner.step(now, input, out);
        let k = &self.inner;
        let need_down = |n: &ServiceId| k.status(*n).is_some_and(|n| !n.healthy());
        let early: Vec<_> = k
            .views()
            .filter(|s| *s.condition() == Condition::Waiting && s.needs().iter().any(need_down))
            .filter(|s| matches!(s.config().kind, Kind::Process { .. }))
            .map(|s| (s.id(), s.config().clone()))
            .collect();
        for (id, config) in early {
            if self.started.insert(id) {
                self.next_job += 1;
                out.push(Effect::Spawn {
                    service: id,
                    job: JobId(self.next_job),
                    config,
                });
            }
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

/// Spawns every process twice.
struct DoublesInstance {
    inner: Kernel,
    next_job: u64,
}

impl Supervisor for DoublesInstance {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        self.inner.step(now, input, out);
        let spawns: Vec<Effect> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Spawn {
                    service, config, ..
                } if matches!(config.kind, Kind::Process { .. }) => {
                    self.next_job += 1;
                    Some(Effect::Spawn {
                        service: *service,
                        job: JobId(self.next_job),
                        config: config.clone(),
                    })
                }
                _ => None,
            })
            .collect();
        out.extend(spawns);
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

/// Holds back the SIGKILL that contains a process over its memory limit (the old rule: wait
/// out the backoff); the kill goes out with the next step instead.
struct DelaysContainment {
    inner: Kernel,
    held: Vec<Effect>,
}

impl Supervisor for DelaysContainment {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        let sample = matches!(input, Input::MemorySampled { .. });
        self.inner.step(now, input, out);
        out.append(&mut self.held);
        if sample {
            let (kills, rest): (Vec<Effect>, Vec<Effect>) = out
                .drain(..)
                .partition(|e| matches!(e, Effect::Kill { .. }));
            *out = rest;
            self.held = kills;
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

/// Holds back every step that makes an intervention for 50 ms (a heal decided late: a new
/// fact that kept the old backoff, a timer armed for the wrong instant).
struct LateHeals {
    inner: Kernel,
    held: Vec<(Instant, Vec<Effect>)>,
}

impl Supervisor for LateHeals {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        let mut fresh = Vec::new();
        self.inner.step(now, input, &mut fresh);
        let (due, later): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(at, _)| *at <= now);
        self.held = later;
        for (_, effects) in due {
            out.extend(effects);
        }
        if fresh.iter().any(medic_sim::Checker::is_intervention) {
            self.held.push((now + Duration::from_millis(50), fresh));
        } else {
            out.extend(fresh);
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        let own = self.held.iter().map(|h| h.0).min();
        [self.inner.next_deadline(), own]
            .into_iter()
            .flatten()
            .min()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

/// Samples each process's memory once (the timer not re-armed): later samples never go out.
struct SamplesMemoryOnce {
    inner: Kernel,
    sampled: BTreeSet<JobId>,
}

impl Supervisor for SamplesMemoryOnce {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        let from = out.len();
        self.inner.step(now, input, out);
        let mut kept = Vec::new();
        for e in out.drain(from..) {
            if let Effect::SampleMemory { job, .. } = &e {
                if !self.sampled.insert(*job) {
                    continue;
                }
            }
            kept.push(e);
        }
        out.extend(kept);
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

/// Drops the gate on starts after a need came back: a service stopped for its needs and
/// waiting with its needs healthy again is started at once (a hidden operator start).
struct DropsStartGate {
    inner: Kernel,
}

impl Supervisor for DropsStartGate {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        self.inner.step(now, input, out);
        let k = &self.inner;
        let gated: Vec<String> = k
            .views()
            .filter(|s| {
                s.config().stop_when_needs_fail
                    && s.wanted()
                    && s.ever_started()
                    && *s.condition() == Condition::Waiting
                    && s.needs()
                        .iter()
                        .all(|n| k.status(*n).is_some_and(|n| n.healthy()))
            })
            .map(|s| s.name().to_string())
            .collect();
        for name in gated {
            let mut hidden = Vec::new();
            self.inner
                .step(now, Input::Operator(Operator::Start(name)), &mut hidden);
            out.extend(hidden.into_iter().filter(|e| {
                !matches!(e, Effect::Event { record, .. } if record.note.starts_with("operator"))
            }));
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

/// Restarts every running service on a config replacement, changed or not.
struct RestartsAllOnReplace {
    inner: Kernel,
}

impl Supervisor for RestartsAllOnReplace {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        let replace = matches!(input, Input::ReplaceConfig { .. });
        self.inner.step(now, input, out);
        if !replace {
            return;
        }
        let running: Vec<String> = self
            .inner
            .views()
            .filter(|s| s.job().is_some() && !s.is_stopping())
            .map(|s| s.name().to_string())
            .collect();
        for name in running {
            let mut hidden = Vec::new();
            self.inner
                .step(now, Input::Operator(Operator::Restart(name)), &mut hidden);
            out.extend(hidden.into_iter().filter(|e| {
                !matches!(e, Effect::Event { record, .. } if record.note.starts_with("operator"))
            }));
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

/// Ignores `after`: a process waiting only for what it is ordered after (still starting) is
/// started anyway.
struct IgnoresAfter {
    inner: Kernel,
    started: BTreeSet<ServiceId>,
    next_job: u64,
}

impl Supervisor for IgnoresAfter {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        self.inner.step(now, input, out);
        let k = &self.inner;
        let early: Vec<_> = k
            .views()
            .filter(|s| {
                *s.condition() == Condition::Waiting
                    && matches!(s.config().kind, Kind::Process { .. })
                    && s.needs()
                        .iter()
                        .all(|n| k.status(*n).is_some_and(|n| n.healthy()))
                    && s.after().iter().any(|a| {
                        k.status(*a)
                            .is_some_and(|a| *a.condition() == Condition::Starting)
                    })
            })
            .map(|s| (s.id(), s.config().clone()))
            .collect();
        for (id, config) in early {
            if self.started.insert(id) {
                self.next_job += 1;
                out.push(Effect::Spawn {
                    service: id,
                    job: JobId(self.next_job),
                    config,
                });
            }
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

const FAKE_JOBS: u64 = 1 << 40;

#[test]
fn a_kernel_that_drops_settle_is_caught() {
    assert_caught(
        "a_kernel_that_drops_settle_is_caught",
        Property::Settle,
        |inner| DropsSettle {
            inner,
            due: Vec::new(),
        },
    );
}

#[test]
fn a_kernel_that_intervenes_while_a_need_is_down_is_caught() {
    assert_caught(
        "a_kernel_that_intervenes_while_a_need_is_down_is_caught",
        Property::UpstreamFirst,
        |inner| IntervenesWhileBlocked {
            inner,
            blocked: BTreeSet::new(),
            done: BTreeSet::new(),
        },
    );
}

#[test]
fn a_kernel_that_never_gives_up_is_caught() {
    assert_caught(
        "a_kernel_that_never_gives_up_is_caught",
        Property::BoundedHealing,
        |inner| NeverGivesUp { inner },
    );
}

#[test]
fn a_kernel_that_starts_a_dependent_early_is_caught() {
    assert_caught(
        "a_kernel_that_starts_a_dependent_early_is_caught",
        Property::UpstreamFirst,
        |inner| StartsEarly {
            inner,
            started: BTreeSet::new(),
            next_job: FAKE_JOBS,
        },
    );
}

#[test]
fn a_kernel_that_doubles_an_instance_is_caught() {
    assert_caught(
        "a_kernel_that_doubles_an_instance_is_caught",
        Property::OneInstance,
        |inner| DoublesInstance {
            inner,
            next_job: FAKE_JOBS,
        },
    );
}

#[test]
fn a_kernel_that_does_not_contain_memory_at_once_is_caught() {
    assert_caught(
        "a_kernel_that_does_not_contain_memory_at_once_is_caught",
        Property::Containment,
        |inner| DelaysContainment {
            inner,
            held: Vec::new(),
        },
    );
}

#[test]
fn a_kernel_that_heals_late_is_caught() {
    // A heal held back lands either too late for a condition that still stands (promptness)
    // or after the world has moved on, on a condition that has passed (right heal): which one
    // a seed shows first depends on the graph it draws.
    let name = "a_kernel_that_heals_late_is_caught";
    let caught = first_failure(name, |inner| LateHeals {
        inner,
        held: Vec::new(),
    });
    match caught {
        Some((p, seed, report)) => {
            assert!(
                matches!(p, Property::Promptness | Property::RightHeal),
                "caught, but as another property:\n{report}"
            );
            eprintln!("{name}: caught as {p} at seed {seed}");
        }
        None => panic!("late heals never caught in {SEEDS} seeds"),
    }
}

#[test]
fn a_kernel_that_ignores_max_backoff_is_caught() {
    assert_caught(
        "a_kernel_that_ignores_max_backoff_is_caught",
        Property::Promptness,
        |k| {
            skewed(k, |s| {
                s.max_backoff = Duration::from_secs(86_400);
            })
        },
    );
}

#[test]
fn a_kernel_whose_probe_threshold_is_one_low_is_caught() {
    assert_caught(
        "a_kernel_whose_probe_threshold_is_one_low_is_caught",
        Property::RightHeal,
        |k| {
            skewed(k, |s| {
                if let Some(p) = s.probe.as_mut() {
                    p.failures = p.failures.saturating_sub(1).max(1);
                }
            })
        },
    );
}

#[test]
fn a_kernel_whose_probe_threshold_is_one_high_is_caught() {
    assert_caught(
        "a_kernel_whose_probe_threshold_is_one_high_is_caught",
        Property::Promptness,
        |k| {
            skewed(k, |s| {
                if let Some(p) = s.probe.as_mut() {
                    p.failures += 1;
                }
            })
        },
    );
}

#[test]
fn a_kernel_whose_ladder_is_a_rung_off_is_caught() {
    assert_caught(
        "a_kernel_whose_ladder_is_a_rung_off_is_caught",
        Property::RightHeal,
        |k| {
            skewed(k, |s| {
                for o in s.on.values_mut() {
                    if let Some(ladder) = o.heal.as_mut().filter(|l| l.len() > 1) {
                        ladder.rotate_left(1);
                    }
                }
            })
        },
    );
}

#[test]
fn a_kernel_that_samples_memory_once_is_caught() {
    assert_caught(
        "a_kernel_that_samples_memory_once_is_caught",
        Property::Containment,
        |inner| SamplesMemoryOnce {
            inner,
            sampled: BTreeSet::new(),
        },
    );
}

#[test]
fn a_kernel_without_the_start_gate_is_caught() {
    assert_caught(
        "a_kernel_without_the_start_gate_is_caught",
        Property::Settle,
        |inner| DropsStartGate { inner },
    );
}

#[test]
fn a_kernel_that_restarts_unchanged_services_on_replace_is_caught() {
    assert_caught(
        "a_kernel_that_restarts_unchanged_services_on_replace_is_caught",
        Property::MinimalReplace,
        |inner| RestartsAllOnReplace { inner },
    );
}

#[test]
fn a_kernel_that_ignores_after_is_caught() {
    assert_caught(
        "a_kernel_that_ignores_after_is_caught",
        Property::UpstreamFirst,
        |inner| IgnoresAfter {
            inner,
            started: BTreeSet::new(),
            next_job: FAKE_JOBS,
        },
    );
}

/// When a timed oneshot's run succeeds, quietly tells the inner kernel "operator restart" (a
/// new fact nobody outside sees): it runs again at once, not a period later.
struct RerunsTimedJobsAtOnce {
    inner: Kernel,
}

impl Supervisor for RerunsTimedJobsAtOnce {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        let rerun = match &input {
            Input::Exited {
                service, status, ..
            } if status.success() => self
                .inner
                .status(*service)
                .filter(|v| v.config().every.is_some() && v.dependents().is_empty())
                .map(|v| v.name().to_string()),
            _ => None,
        };
        self.inner.step(now, input, out);
        if let Some(name) = rerun {
            self.inner
                .step(now, Input::Operator(Operator::Restart(name)), out);
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

#[test]
fn a_kernel_that_runs_a_timed_job_before_its_period_is_caught() {
    assert_caught(
        "a_kernel_that_runs_a_timed_job_before_its_period_is_caught",
        Property::Timed,
        |inner| RerunsTimedJobsAtOnce { inner },
    );
}

// ----- properties 8 and 9: outputs and templates -------------------------------------------

#[test]
fn a_kernel_without_the_render_debounce_is_caught() {
    assert_caught(
        "a_kernel_without_the_render_debounce_is_caught",
        Property::NoStorms,
        |k| {
            skewed(k, |s| {
                for t in &mut s.templates {
                    t.debounce = Duration::ZERO;
                }
            })
        },
    );
}

#[test]
fn a_kernel_that_renders_late_is_caught() {
    assert_caught(
        "a_kernel_that_renders_late_is_caught",
        Property::FreshConfig,
        |k| {
            skewed(k, |s| {
                for t in &mut s.templates {
                    t.debounce = t.debounce * 4 + Duration::from_secs(2);
                }
            })
        },
    );
}

/// Hears every `unchanged` render as `changed` (all its targets): it applies `on-change`
/// when no byte changed (a DHCP renew that moves only lifetimes reloads the service).
struct ActsOnUnchanged {
    inner: Kernel,
}

impl Supervisor for ActsOnUnchanged {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        let input = match input {
            Input::RenderDone {
                service,
                job,
                result: RenderResult::Unchanged,
            } => {
                let targets = self
                    .inner
                    .status(service)
                    .map(|v| {
                        v.config()
                            .templates
                            .iter()
                            .map(|t| t.target.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                Input::RenderDone {
                    service,
                    job,
                    result: RenderResult::Changed(targets),
                }
            }
            other => other,
        };
        self.inner.step(now, input, out);
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

#[test]
fn a_kernel_that_acts_on_unchanged_renders_is_caught() {
    assert_caught(
        "a_kernel_that_acts_on_unchanged_renders_is_caught",
        Property::NoStorms,
        |inner| ActsOnUnchanged { inner },
    );
}

/// Forgets the `on-change` a thrown-away `changed` answer owes (the kernel before the fix): a
/// `changed` answer the kernel is about to throw away (what the service reads changed while it
/// rendered) is handed to it as `unchanged`, so the files the world replaced are never applied
/// when the render after it finds nothing new.
struct ForgetsOwedOnChange {
    inner: Kernel,
}

impl Supervisor for ForgetsOwedOnChange {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        let input = match input {
            Input::RenderDone {
                service,
                job,
                result: result @ RenderResult::Changed(_),
            } => {
                // Whether the kernel throws this answer away: it asks for a render again.
                let mut probe = self.inner.clone();
                let mut seen = Vec::new();
                let done = Input::RenderDone {
                    service,
                    job,
                    result: result.clone(),
                };
                probe.step(now, done, &mut seen);
                let again = seen
                    .iter()
                    .any(|e| matches!(e, Effect::Render { service: s, .. } if *s == service));
                let result = if again {
                    RenderResult::Unchanged
                } else {
                    result
                };
                Input::RenderDone {
                    service,
                    job,
                    result,
                }
            }
            other => other,
        };
        self.inner.step(now, input, out);
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

#[test]
fn a_kernel_that_forgets_an_owed_on_change_is_caught() {
    assert_caught(
        "a_kernel_that_forgets_an_owed_on_change_is_caught",
        Property::FreshConfig,
        |inner| ForgetsOwedOnChange { inner },
    );
}

// ----- property 10: `at` and `restart-every` ---------------------------------------------------

/// When the wall clock is read (at start, after a step), quietly runs every `at` job at once
/// (an operator restart nobody outside sees: its history records are dropped), instead of
/// waiting for its wall-clock time.
struct RunsAtJobsOnClockStep {
    inner: Kernel,
}

impl Supervisor for RunsAtJobsOnClockStep {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        let stepped = matches!(input, Input::WallClock(_));
        self.inner.step(now, input, out);
        if !stepped {
            return;
        }
        let due: Vec<String> = self
            .inner
            .views()
            .filter(|v| !v.config().at.is_empty() && v.wanted() && v.healthy())
            .map(|v| v.name().to_string())
            .collect();
        for name in due {
            let mut hidden = Vec::new();
            self.inner
                .step(now, Input::Operator(Operator::Restart(name)), &mut hidden);
            out.extend(
                hidden
                    .into_iter()
                    .filter(|e| !matches!(e, Effect::Event { .. })),
            );
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.inner
    }
}

#[test]
fn a_kernel_that_runs_at_jobs_when_the_clock_steps_is_caught() {
    assert_caught(
        "a_kernel_that_runs_at_jobs_when_the_clock_steps_is_caught",
        Property::Timed,
        |inner| RunsAtJobsOnClockStep { inner },
    );
}

#[test]
fn a_kernel_whose_restart_every_is_half_is_caught() {
    assert_caught(
        "a_kernel_whose_restart_every_is_half_is_caught",
        Property::Timed,
        |k| {
            skewed(k, |s| {
                s.restart_every = s.restart_every.map(|p| p / 2);
            })
        },
    );
}

#[test]
fn a_kernel_whose_restart_every_is_double_is_caught() {
    assert_caught(
        "a_kernel_whose_restart_every_is_double_is_caught",
        Property::Timed,
        |k| {
            skewed(k, |s| {
                s.restart_every = s.restart_every.map(|p| p * 2);
            })
        },
    );
}

#[test]
fn the_real_kernel_passes_the_same_seeds() {
    let opts = opts("the_real_kernel_passes_the_same_seeds");
    for seed in seeds_from_env(20) {
        if let Err(f) = run_with(seed, &opts, None, |k| k) {
            panic!("{f}");
        }
    }
}
