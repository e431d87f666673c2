//! A checker that cannot fail is a defect: each deliberately broken kernel here must be caught
//! by the property it breaks within a fixed number of seeds.

use core::time::Duration;
use std::collections::BTreeSet;

use medic_kernel::config::{Heal, Kind};
use medic_kernel::{
    Condition, Effect, Input, Instant, JobId, Kernel, Operator, Outcome, Record, ServiceId,
};
use medic_sim::{run_with, Options, Property, Supervisor};

/// Seeds each broken kernel gets to be caught in.
const SEEDS: u64 = 200;

fn opts() -> Options {
    Options {
        fault_time: Duration::from_secs(120),
        write_trace: false,
        ..Options::default()
    }
}

/// Runs seeds until one fails; the property it broke and the seed.
fn first_failure<S: Supervisor>(wrap: impl Fn(Kernel) -> S) -> Option<(Property, u64, String)> {
    (0..SEEDS).find_map(|seed| {
        run_with(seed, &opts(), None, &wrap)
            .err()
            .map(|f| (f.property(), seed, f.to_string()))
    })
}

fn assert_caught<S: Supervisor>(expected: Property, wrap: impl Fn(Kernel) -> S) {
    match first_failure(wrap) {
        Some((p, _, report)) => {
            assert_eq!(p, expected, "caught, but as another property:\n{report}")
        }
        None => panic!("{expected} never caught in {SEEDS} seeds"),
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

const FAKE_JOBS: u64 = 1 << 40;

#[test]
fn a_kernel_that_drops_settle_is_caught() {
    assert_caught(Property::Settle, |inner| DropsSettle {
        inner,
        due: Vec::new(),
    });
}

#[test]
fn a_kernel_that_intervenes_while_a_need_is_down_is_caught() {
    assert_caught(Property::UpstreamFirst, |inner| IntervenesWhileBlocked {
        inner,
        blocked: BTreeSet::new(),
        done: BTreeSet::new(),
    });
}

#[test]
fn a_kernel_that_never_gives_up_is_caught() {
    assert_caught(Property::BoundedHealing, |inner| NeverGivesUp { inner });
}

#[test]
fn a_kernel_that_starts_a_dependent_early_is_caught() {
    assert_caught(Property::UpstreamFirst, |inner| StartsEarly {
        inner,
        started: BTreeSet::new(),
        next_job: FAKE_JOBS,
    });
}

#[test]
fn a_kernel_that_doubles_an_instance_is_caught() {
    assert_caught(Property::OneInstance, |inner| DoublesInstance {
        inner,
        next_job: FAKE_JOBS,
    });
}

#[test]
fn a_kernel_that_does_not_contain_memory_at_once_is_caught() {
    assert_caught(Property::Containment, |inner| DelaysContainment {
        inner,
        held: Vec::new(),
    });
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
    assert_caught(Property::Timed, |inner| RerunsTimedJobsAtOnce { inner });
}

#[test]
fn the_real_kernel_passes_the_same_seeds() {
    for seed in 0..20 {
        if let Err(f) = run_with(seed, &opts(), None, |k| k) {
            panic!("{f}");
        }
    }
}
