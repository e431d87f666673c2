//! The daemon itself crashes (DESIGN §13 and §7: properties 2 and 4 hold across a crash of the
//! daemon itself).
//!
//! One seed draws a few process services (crash loops, slow readiness, notify readiness,
//! small `give-up-after`s, forgiveness and `retry-after`) and a simulated world, and runs the
//! real kernel while, at random instants, the daemon dies: its kernel is dropped with every
//! answer it was waiting for, the world goes on (processes crash meanwhile, unseen), and after
//! a random downtime a new kernel is built from the last state the daemon wrote (a state
//! written before an intervention is carried out, otherwise after the round, so sometimes one
//! step stale) and from which recorded processes still run ([`medic_kernel::Input::Resume`]);
//! what it does not adopt is stopped before its first tick, as the adapter does.
//!
//! A model of its own, by service name and across kernels, checks after every step:
//! * **2, bounded healing**: automatic interventions since the last reset are at most
//!   `give-up-after`; a reset is forgiveness after `forgive-after` healthy (the model credits
//!   no health across a crash) or `retry-after` after the last intervention;
//! * **4, one instance**: at most one live process group per service in the world; none
//!   after shutdown;
//! * **7, determinism**: each kernel's trace (from its fresh snapshot, through `Resume`, to
//!   its crash) replays identically through its file encoding.
//!
//! [`Mutant`]s prove the checkers bite: a kernel that forgets the processes it adopted, and
//! one that forgets strikes across a crash.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use medic_kernel::trace::{self, Trace};
use medic_kernel::{config, Effect, Input, Instant, JobId, Kernel, Operator, Outcome, Saved};

use crate::rng::Rng;
use crate::world::{Faults, World};
use crate::OneInstant;

/// A deliberately broken resume, to prove the checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    /// The real kernel.
    None,
    /// Says it adopts the surviving processes, then forgets them (starts them again).
    ForgetsAdopted,
    /// Takes back everything but the strikes (and the rest of the medical record).
    ForgetsStrikes,
}

/// What a passing seed did.
#[derive(Clone, Debug, Default)]
pub struct CrashReport {
    /// Crashes of the daemon.
    pub crashes: u32,
    /// Processes adopted, over all crashes.
    pub adopted: u32,
    /// Processes that ended while no daemon ran.
    pub ended_unseen: u32,
    /// Automatic interventions.
    pub interventions: u64,
    /// Kernel steps.
    pub steps: u64,
}

/// The model of one service (by name, across kernels).
#[derive(Clone, Debug)]
struct Model {
    give_up_after: u32,
    forgive_after: Duration,
    retry_after: Option<Duration>,
    strikes: u32,
    healthy_since: Option<Instant>,
    last_intervention: Option<Instant>,
}

struct Run {
    seed: u64,
    rng: Rng,
    text: String,
    kernel: Kernel,
    world: World,
    now: Instant,
    models: BTreeMap<String, Model>,
    /// The state file: as last written, and as written before that.
    state: Saved,
    previous: Saved,
    /// The last step wrote the state before its effects were carried out (an intervention).
    written_ahead: bool,
    mutant: Mutant,
    /// The trace of the current kernel.
    trace: Trace,
    report: CrashReport,
    violation: Option<String>,
    one_instant: OneInstant,
}

/// Runs one seed: `crashes_every` is the mean time between crashes of the daemon.
pub fn run_crash_seed(seed: u64, mutant: Mutant) -> Result<CrashReport, String> {
    let mut rng = Rng::new(seed ^ 0x6372_6173_6821);
    let text = config_text(&mut rng);
    let config =
        config::parse(&text, "crash.toml").unwrap_or_else(|e| panic!("bad config:\n{e}\n{text}"));
    let faults = Faults {
        crash: *rng.pick(&[0, 200, 600]),
        crash_loop: *rng.pick(&[0, 300, 700]),
        slow_ready: *rng.pick(&[0, 200]),
        never_ready: *rng.pick(&[0, 50]),
        ..Faults::default()
    };
    let world = World::new(rng.fork(), faults);
    let models = config
        .services
        .iter()
        .map(|s| {
            let m = Model {
                give_up_after: s.give_up_after,
                forgive_after: s.forgive_after,
                retry_after: s.retry_after,
                strikes: 0,
                healthy_since: None,
                last_intervention: None,
            };
            (s.name.clone(), m)
        })
        .collect();
    let kernel = Kernel::new(config);
    let state = kernel.saved();
    let trace = Trace::new(&text, kernel.clone());
    let mut run = Run {
        seed,
        rng,
        text,
        kernel,
        world,
        now: Instant::ZERO,
        models,
        previous: state.clone(),
        state,
        written_ahead: false,
        mutant,
        trace,
        report: CrashReport::default(),
        violation: None,
        one_instant: OneInstant::default(),
    };
    run.run();
    match run.violation {
        Some(v) => Err(format!(
            "seed {seed} ({mutant:?}): {v}\n  config:\n{}\n  reproduce: SIM_SEED={seed} cargo \
             test -p medic-sim --test daemon_crash -- --nocapture",
            run.text
        )),
        None => Ok(run.report),
    }
}

fn config_text(rng: &mut Rng) -> String {
    let mut text = String::new();
    for i in 0..rng.range(1, 6) {
        let ready = *rng.pick(&["\"spawned\"", "{ tcp = \"127.0.0.1:80\" }", "\"sd-notify\""]);
        text.push_str(&format!(
            "[service.s{i}]\nrun = [\"/bin/s{i}\"]\nready = {ready}\ngive-up-after = {}\n\
             max-backoff = \"{}\"\nforgive-after = \"{}\"\nretry-after = \"{}\"\n\
             start-timeout = \"2s\"\n\n",
            rng.range(1, 5),
            rng.pick(&["2s", "8s"]),
            rng.pick(&["20s", "2m"]),
            rng.pick(&["1m", "never"]),
        ));
    }
    text
}

/// Simulated time the faults run for.
const FAULT_TIME: Duration = Duration::from_secs(600);
/// Mean time between crashes of the daemon.
const CRASH_EVERY_MS: u64 = 15_000;

impl Run {
    fn run(&mut self) {
        self.step(Input::Tick);
        let end = Instant::ZERO + FAULT_TIME;
        let mut next_crash = self.now + self.crash_gap();
        while self.violation.is_none() && self.now < end {
            if self.advance(next_crash.min(end)) {
                continue;
            }
            if self.now >= next_crash {
                self.crash_and_restart();
                next_crash = self.now + self.crash_gap();
            }
        }
        if self.violation.is_some() {
            return;
        }
        // Faults off, a while to settle, then shutdown: nothing may be left running.
        self.world.faults_off(self.now);
        let settle = self.now + Duration::from_secs(120);
        while self.violation.is_none() && self.advance(settle) {}
        self.step(Input::Operator(Operator::Shutdown));
        let bound = self.now + Duration::from_secs(120);
        while self.violation.is_none() && !self.world.shutdown_complete && self.advance(bound) {}
        self.replay();
        if self.violation.is_none() {
            let left: Vec<String> = self.world.procs().map(|(_, p)| p.name.clone()).collect();
            if !self.world.shutdown_complete || !left.is_empty() {
                self.violation = Some(format!(
                    "property 4 one instance: shutdown (complete: {}) left {left:?} running",
                    self.world.shutdown_complete
                ));
            }
        }
    }

    fn crash_gap(&mut self) -> Duration {
        Duration::from_millis(self.rng.range(CRASH_EVERY_MS / 4, CRASH_EVERY_MS * 2))
    }

    /// One step of the kernel or the world before `until`; false when nothing is due before it
    /// (then `now` is `until`).
    fn advance(&mut self, until: Instant) -> bool {
        let kd = self.kernel.next_deadline();
        let wd = self.world.next_event();
        match [kd, wd].into_iter().flatten().min() {
            Some(t) if t <= until => {
                self.now = self.now.max(t);
                if kd.is_some_and(|d| d <= t) {
                    self.step(Input::Tick);
                } else if let Some(input) = self.world.pop_event(self.now) {
                    self.step(input);
                }
                true
            }
            _ => {
                self.now = self.now.max(until);
                false
            }
        }
    }

    fn step(&mut self, input: Input) {
        let mut effects = Vec::new();
        let changes_processes = matches!(input, Input::Spawned { .. } | Input::Exited { .. });
        self.kernel.step(self.now, input.clone(), &mut effects);
        self.trace.push(self.now, input, &effects);
        self.report.steps += 1;
        if let Some(why) = self.one_instant.step(self.now) {
            self.violation.get_or_insert(why);
        }
        // The daemon writes the state before carrying out an intervention, else after the round.
        let ahead = effects.iter().any(is_intervention);
        if ahead || changes_processes || effects.iter().any(|e| matches!(e, Effect::Event { .. })) {
            self.previous = std::mem::replace(&mut self.state, self.kernel.saved());
        }
        self.written_ahead = ahead;
        self.world.apply(self.now, &effects);
        self.check(&effects);
    }

    /// The model's checks after a step.
    fn check(&mut self, effects: &[Effect]) {
        let now = self.now;
        for e in effects {
            let Effect::Event { service, record } = e else {
                continue;
            };
            let name = self.kernel.name(*service).to_string();
            let Some(m) = self.models.get_mut(&name) else {
                continue;
            };
            if record.note.starts_with("forgiven") {
                if m.healthy_since.is_none_or(|h| now < h + m.forgive_after) {
                    self.violation = Some(format!(
                        "property 2 bounded healing: {name} forgiven at {now}, healthy since \
                         {:?}, forgive-after {:?}",
                        m.healthy_since, m.forgive_after
                    ));
                }
                m.strikes = 0;
            } else if record.note.starts_with("retry-after elapsed") {
                let due = m.retry_after.zip(m.last_intervention).map(|(r, l)| l + r);
                if due.is_none_or(|d| now < d) {
                    self.violation = Some(format!(
                        "property 2 bounded healing: {name} retried at {now}, due {due:?}"
                    ));
                }
                m.strikes = 0;
            } else if record.heal.is_some() && record.outcome == Some(Outcome::Pending) {
                self.report.interventions += 1;
                m.strikes += 1;
                m.last_intervention = Some(now);
                if m.strikes > m.give_up_after {
                    self.violation = Some(format!(
                        "property 2 bounded healing: {name}: intervention {} since the last \
                         reset, give-up-after is {} (at {now}, {} crashes of the daemon so far)",
                        m.strikes, m.give_up_after, self.report.crashes
                    ));
                }
            }
        }
        for view in self.kernel.views() {
            if let Some(m) = self.models.get_mut(view.name()) {
                match (view.healthy(), m.healthy_since) {
                    (true, None) => m.healthy_since = Some(now),
                    (false, _) => m.healthy_since = None,
                    _ => {}
                }
            }
        }
        for name in self.models.keys() {
            let groups = self.world.groups_of(name);
            if groups > 1 && self.violation.is_none() {
                self.violation = Some(format!(
                    "property 4 one instance: {name} has {groups} live process groups at {now} \
                     ({} crashes of the daemon so far)",
                    self.report.crashes
                ));
            }
        }
        if let Err(broken) = self.kernel.check_invariants() {
            self.violation = Some(format!("kernel invariants: {broken:?}"));
        }
    }

    /// The daemon dies now; it is started again after a downtime, from its last state file.
    fn crash_and_restart(&mut self) {
        self.replay();
        self.report.crashes += 1;
        let mut saved = match !self.written_ahead && self.rng.ratio(1, 2) {
            true => self.previous.clone(),
            false => self.state.clone(),
        };
        self.world.daemon_crashed();
        // Downtime: the world goes on, unseen.
        let back = self.now + Duration::from_millis(self.rng.range(0, 3_000));
        while let Some(t) = self.world.next_event().filter(|t| *t <= back) {
            self.now = self.now.max(t);
            let _ = self.world.pop_event(self.now);
        }
        self.now = back;
        // The new daemon: which recorded processes survived.
        for s in &mut saved.services {
            if let Some(p) = s.process.as_mut() {
                p.survived = self.world.alive(p.job);
                if !p.survived {
                    self.report.ended_unseen += 1;
                }
            }
        }
        let config = config::parse(&self.text, "crash.toml").expect("valid");
        self.kernel = Kernel::new(config);
        self.trace = Trace::new(&self.text, self.kernel.clone());
        for m in self.models.values_mut() {
            m.healthy_since = None;
        }
        let mut effects = Vec::new();
        match self.mutant {
            Mutant::None => self.resume(saved, &mut effects),
            Mutant::ForgetsAdopted => {
                let survivors: Vec<_> = saved
                    .services
                    .iter_mut()
                    .filter_map(|s| Some((s.name.clone(), s.process.take()?)))
                    .filter(|(_, p)| p.survived)
                    .collect();
                self.resume(saved, &mut effects);
                for (i, (name, p)) in survivors.into_iter().enumerate() {
                    let Some(service) = self.kernel.lookup(&name) else {
                        continue;
                    };
                    let job = JobId(u64::MAX / 2 - i as u64);
                    let (pid, was) = (p.pid, p.job);
                    effects.push(Effect::Adopt {
                        service,
                        job,
                        pid,
                        was,
                    });
                }
            }
            Mutant::ForgetsStrikes => {
                let fresh = self.kernel.saved();
                for s in &mut saved.services {
                    if let Some(f) = fresh.services.iter().find(|f| f.name == s.name) {
                        let (process, history) = (s.process.take(), s.history.clone());
                        *s = f.clone();
                        s.process = process;
                        s.history = history;
                    }
                }
                self.resume(saved, &mut effects);
            }
        }
        self.world.apply(self.now, &effects);
        // What was not adopted is stopped before the first tick.
        let adopted: BTreeSet<JobId> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Adopt { job, .. } => Some(*job),
                _ => None,
            })
            .collect();
        self.report.adopted += adopted.len() as u32;
        self.world.stop_all_but(&adopted);
        self.check(&effects);
        self.state = self.kernel.saved();
        self.previous = self.state.clone();
    }

    fn resume(&mut self, saved: Saved, effects: &mut Vec<Effect>) {
        let input = Input::Resume(Box::new(saved));
        let first = effects.len();
        self.kernel.step(self.now, input.clone(), effects);
        self.trace.push(self.now, input, &effects[first..]);
        self.report.steps += 1;
    }

    /// Property 7 for the current kernel: its trace, through its file encoding, replays
    /// identically.
    fn replay(&mut self) {
        let bytes = self.trace.to_file_bytes();
        let report = match trace::decode(&bytes) {
            Ok(decoded) => trace::replay(&decoded),
            Err(e) => {
                self.violation = Some(format!("property 7: the trace does not decode: {e}"));
                return;
            }
        };
        if !report.identical() && self.violation.is_none() {
            self.violation = Some(format!(
                "property 7 determinism (seed {}): replay after {} crashes: {report}",
                self.seed, self.report.crashes
            ));
        }
    }
}

fn is_intervention(e: &Effect) -> bool {
    matches!(e, Effect::Event { record, .. }
        if record.heal.is_some() && record.outcome == Some(Outcome::Pending))
}
