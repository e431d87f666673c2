//! Secrets and confirm-or-roll-back in the simulator (DESIGN §10): an operator pushes keys
//! (some with a time to confirm), removes them, applies configs (some of which break the
//! service), and confirms on time, late or never; the adapter refuses a push while a change
//! waits, as the daemon does. The kernel runs unchanged (or a broken wrapper of it, to prove
//! the checker bites).
//!
//! Judged from the world (the store, the copy on disk, the signals sshd received):
//! * **roll-back**: at the deadline of a push that was not confirmed, the generation before it
//!   is in force again (none, for a first push), and at the deadline of an apply that was not
//!   confirmed, the config before it;
//! * **acted once**: between a roll-back and the next change the copy is replaced exactly once
//!   when it held the unconfirmed value (then it holds the previous one), not at all otherwise,
//!   and sshd is reloaded at most once for it;
//! * **store**: every generation the kernel holds in force is still in the store (the kernel
//!   never drops what it uses);
//! * **liveness**: once the operator stops, sshd runs with the copy of the generation in force;
//! * the kernel's invariants after every step.
//!
//! ```text
//! SIM_SEEDS=10000 cargo test -p medic-sim --release --test secrets   # a soak
//! ```

use core::time::Duration;
use std::collections::BTreeMap;

use medic_kernel::{
    Config, Effect, ExitStatus, Input, Instant, JobId, Kernel, RenderResult, ServiceId,
};

use crate::rng::Rng;
use crate::{OneInstant, Supervisor};

const CONFIG: &str = r#"
[service.sshd]
run = ["/usr/sbin/dropbear", "-F"@BROKEN@]
reload = { signal = "HUP" }
max-backoff = "5s"
[service.sshd.secret.keys]
target = "/root/.ssh/authorized_keys"

[service.ntpd]
run = ["/usr/sbin/ntpd", "-n"]
"#;

const SECRET: &str = "keys";
const TARGET: &str = "/root/.ssh/authorized_keys";
/// A render is answered within this.
const RENDER_MAX: Duration = Duration::from_millis(50);
/// The operator acts, then the calm phase for liveness.
const FAULT_TIME: Duration = Duration::from_secs(900);
const CALM_TIME: Duration = Duration::from_secs(300);
/// A roll-back's window shorter than this (the next change came at once) is not judged: its
/// copy may still be on its way.
const WINDOW_MIN: Duration = Duration::from_millis(500);

fn config_text(broken: bool) -> String {
    CONFIG.replace("@BROKEN@", if broken { ", \"--broken\"" } else { "" })
}

#[derive(Debug)]
enum Event {
    /// The operator's next act (drawn when it happens).
    Operator,
    /// `medic confirm`.
    Confirm,
    /// An input for the kernel.
    Input(Input),
    /// A render's answer: the copy becomes this value (when changed).
    Rendered(ServiceId, JobId, Result<Option<u64>, String>),
}

/// What one run ended with.
#[derive(Debug, Default)]
pub struct SecretsReport {
    /// Steps taken.
    pub steps: u64,
    /// Pushes taken, and refused (a change was waiting).
    pub pushes: u64,
    /// Pushes refused while a change waited.
    pub refused: u64,
    /// Roll-backs of a secret, and of a config.
    pub secret_rollbacks: u64,
    /// Roll-backs of a config.
    pub config_rollbacks: u64,
    /// Confirmations that came late (nothing waited any more).
    pub late_confirms: u64,
    /// Roll-back windows judged.
    pub windows: u64,
}

/// A failed run.
#[derive(Debug)]
pub struct SecretsFailure {
    /// The seed.
    pub seed: u64,
    /// Every broken expectation, in order.
    pub broken: Vec<String>,
}

impl core::fmt::Display for SecretsFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(f, "secrets sim, seed {}:", self.seed)?;
        for b in self.broken.iter().take(20) {
            writeln!(f, "  {b}")?;
        }
        write!(
            f,
            "reproduce: SIM_SEED={} cargo test -p medic-sim --test secrets -- --nocapture",
            self.seed
        )
    }
}

/// A change waiting for its confirmation, as the operator made it.
#[derive(Debug)]
enum Watched {
    Secret {
        previous: Option<u64>,
        deadline: Instant,
    },
    Config {
        previous: Box<Config>,
        deadline: Instant,
    },
}

/// After a secret's roll-back, until the next change: what must happen to the copy.
#[derive(Debug)]
struct Window {
    since: Instant,
    /// The copy held something else than the previous value at the roll-back.
    must_replace: bool,
    /// The value the copy must end with (the previous generation's).
    previous: Option<u64>,
    replaced: u64,
    reloads: u64,
}

struct World {
    rng: Rng,
    now: Instant,
    seq: u64,
    queue: BTreeMap<(Instant, u64), Event>,
    /// The store: (generation → value) of the secret.
    store: BTreeMap<u64, u64>,
    next_generation: u64,
    next_value: u64,
    /// What the target file holds.
    copy: Option<u64>,
    /// Live processes by job: (service, exits at once because its config is broken).
    procs: BTreeMap<JobId, ServiceId>,
    next_pid: u32,
    operating: bool,
    watched: Option<Watched>,
    window: Option<Window>,
    report: SecretsReport,
    broken: Vec<String>,
}

impl World {
    fn at(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn next_act(&mut self) {
        let at = self.now + Duration::from_millis(self.rng.range(500, 20_000));
        self.at(at, Event::Operator);
    }

    /// Ends a roll-back window (a new change, or the end of the run) and judges it.
    fn close_window(&mut self) {
        let Some(w) = self.window.take() else { return };
        if self.now.saturating_since(w.since) < WINDOW_MIN {
            return;
        }
        self.report.windows += 1;
        let expected = u64::from(w.must_replace);
        if w.replaced != expected {
            self.broken.push(format!(
                "{}: after the roll-back at {} the copy was replaced {} times, expected {expected}",
                self.now, w.since, w.replaced
            ));
        }
        if w.must_replace && self.copy != w.previous {
            self.broken.push(format!(
                "{}: after the roll-back at {} the copy holds {:?}, not the previous value {:?}",
                self.now, w.since, self.copy, w.previous
            ));
        }
        if w.reloads > 1 {
            self.broken.push(format!(
                "{}: sshd reloaded {} times for one roll-back (at {})",
                self.now, w.reloads, w.since
            ));
        }
    }

    /// The operator's act: its input for the kernel, if any.
    fn act(&mut self, kernel: &Kernel) -> Option<Input> {
        self.next_act();
        let confirm_within = match self.rng.below(3) {
            0 => None,
            _ => Some(Duration::from_millis(self.rng.range(1_000, 30_000))),
        };
        let waiting = kernel.pending().is_some();
        let input = match self.rng.below(10) {
            0..=5 => {
                if waiting {
                    self.report.refused += 1;
                    return None;
                }
                self.close_window();
                self.report.pushes += 1;
                let generation = self.next_generation;
                self.next_generation += 1;
                self.next_value += 1;
                self.store.insert(generation, self.next_value);
                if let Some(within) = confirm_within {
                    self.watched = Some(Watched::Secret {
                        previous: kernel.secrets().get(SECRET).copied(),
                        deadline: self.now + within,
                    });
                }
                Input::SecretSet {
                    name: SECRET.into(),
                    generation,
                    confirm_within,
                }
            }
            6 => {
                if waiting || !kernel.secrets().contains_key(SECRET) {
                    return None;
                }
                self.close_window();
                Input::SecretRemoved {
                    name: SECRET.into(),
                }
            }
            7 => {
                if waiting {
                    self.report.refused += 1;
                    return None;
                }
                self.close_window();
                if let Some(within) = confirm_within {
                    self.watched = Some(Watched::Config {
                        previous: Box::new(kernel.config().clone()),
                        deadline: self.now + within,
                    });
                }
                Input::ApplyConfig {
                    text: config_text(self.rng.ratio(1, 2)),
                    confirm_within,
                }
            }
            _ => {
                // A confirmation: on time, late, or for nothing.
                let at = self.now + Duration::from_millis(self.rng.range(0, 20_000));
                self.at(at, Event::Confirm);
                return None;
            }
        };
        Some(input)
    }

    fn carry_out(&mut self, kernel: &Kernel, effects: &[Effect], sshd: ServiceId) {
        for e in effects {
            match e {
                Effect::Spawn {
                    service,
                    job,
                    config,
                } => {
                    self.next_pid += 1;
                    self.procs.insert(*job, *service);
                    let pid = self.next_pid;
                    let spawned = Input::Spawned {
                        service: *service,
                        job: *job,
                        pid,
                    };
                    self.at(self.now, Event::Input(spawned));
                    let broken = match &config.kind {
                        medic_kernel::config::Kind::Process { argv } => {
                            argv.iter().any(|a| a == "--broken")
                        }
                        _ => false,
                    };
                    if broken {
                        let exited = Input::Exited {
                            service: *service,
                            job: *job,
                            status: ExitStatus::Code(1),
                        };
                        self.at(self.now + Duration::from_millis(100), Event::Input(exited));
                    }
                }
                Effect::Signal {
                    service,
                    job,
                    signal,
                    ..
                } if self.procs.contains_key(job) => {
                    if *signal == medic_kernel::config::Signal::Hup {
                        if *service == sshd {
                            if let Some(w) = self.window.as_mut() {
                                w.reloads += 1;
                            }
                        }
                        continue;
                    }
                    let exited = Input::Exited {
                        service: *service,
                        job: *job,
                        status: ExitStatus::Signal(15),
                    };
                    self.at(self.now + Duration::from_millis(20), Event::Input(exited));
                }
                Effect::Kill { service, job } if self.procs.contains_key(job) => {
                    let exited = Input::Exited {
                        service: *service,
                        job: *job,
                        status: ExitStatus::Signal(9),
                    };
                    self.at(self.now + Duration::from_millis(5), Event::Input(exited));
                }
                Effect::Render {
                    service,
                    job,
                    secrets,
                    ..
                } => {
                    let answer = match secrets.get(SECRET) {
                        None => Ok(None),
                        Some(g) => match self.store.get(g) {
                            Some(v) => Ok(Some(*v)),
                            None => Err(format!("generation {g} is not in the store")),
                        },
                    };
                    let d = Duration::from_millis(self.rng.range(1, RENDER_MAX.as_millis() as u64));
                    self.at(self.now + d, Event::Rendered(*service, *job, answer));
                }
                Effect::DropSecret { generation, .. } => {
                    self.store.remove(generation);
                }
                _ => {}
            }
        }
        let _ = kernel;
    }

    /// The checks after each step (`ticked`: the step was the kernel's tick; an event at the
    /// deadline's very instant comes before it).
    fn check(&mut self, kernel: &Kernel, ticked: bool) {
        if let Some(g) = kernel.secrets().get(SECRET) {
            if !self.store.contains_key(g) {
                self.broken.push(format!(
                    "{}: generation {g} is in force but the store dropped it",
                    self.now
                ));
            }
        }
        let due = match &self.watched {
            Some(Watched::Secret { deadline, .. }) | Some(Watched::Config { deadline, .. }) => {
                self.now > *deadline || (ticked && self.now == *deadline)
            }
            None => false,
        };
        if !due {
            return;
        }
        if kernel.pending().is_some() {
            self.broken.push(format!(
                "{}: the deadline has passed and the change still waits",
                self.now
            ));
            return;
        }
        match self.watched.take() {
            Some(Watched::Secret { previous, .. }) => {
                self.report.secret_rollbacks += 1;
                let now_in_force = kernel.secrets().get(SECRET).copied();
                if now_in_force != previous {
                    self.broken.push(format!(
                        "{}: an unconfirmed push's deadline passed: generation {now_in_force:?} \
                         is in force, not the previous {previous:?}",
                        self.now
                    ));
                }
                let previous_value = previous.and_then(|g| self.store.get(&g).copied());
                self.window = Some(Window {
                    since: self.now,
                    must_replace: previous.is_some() && self.copy != previous_value,
                    previous: previous_value,
                    replaced: 0,
                    reloads: 0,
                });
            }
            Some(Watched::Config { previous, .. }) => {
                self.report.config_rollbacks += 1;
                if kernel.config() != &*previous {
                    self.broken.push(format!(
                        "{}: an unconfirmed apply's deadline passed and its config is still in force",
                        self.now
                    ));
                }
            }
            None => {}
        }
    }
}

/// Runs the secrets scenario of `seed` on the kernel as wrapped by `wrap`.
pub fn run_secrets<S: Supervisor>(
    seed: u64,
    wrap: impl Fn(Kernel) -> S,
) -> Result<SecretsReport, SecretsFailure> {
    let rng = Rng::new(seed ^ 0x5ec2_e750_0000_0000);
    let config = medic_kernel::config::parse(&config_text(false), "secrets.toml")
        .expect("the secrets sim's config");
    let mut kernel = wrap(Kernel::new(config));
    let sshd = kernel.kernel().lookup("sshd").expect("sshd");
    let mut w = World {
        rng,
        now: Instant::ZERO,
        seq: 0,
        queue: BTreeMap::new(),
        store: BTreeMap::new(),
        next_generation: 1,
        next_value: 1000,
        copy: None,
        procs: BTreeMap::new(),
        next_pid: 1000,
        operating: true,
        watched: None,
        window: None,
        report: SecretsReport::default(),
        broken: Vec::new(),
    };
    w.next_act();
    let end_ops = Instant::ZERO + FAULT_TIME;
    let end = end_ops + CALM_TIME;
    let mut out = Vec::new();
    let mut one_instant = OneInstant::default();
    loop {
        let deadline = kernel.next_deadline();
        let event_at = w.queue.keys().next().map(|k| k.0);
        let next = match (deadline, event_at) {
            (Some(d), Some(e)) => d.min(e),
            (Some(d), None) => d,
            (None, Some(e)) => e,
            (None, None) => break,
        };
        if w.operating && next > end_ops {
            // The operator stops: a last confirmation for anything waiting, then calm.
            w.operating = false;
            w.queue
                .retain(|_, e| matches!(e, Event::Input(_) | Event::Rendered(..)));
            w.now = w.now.max(end_ops);
            if kernel.kernel().pending().is_some() {
                let at = w.now;
                w.at(at, Event::Confirm);
            }
            continue;
        }
        if next > end {
            break;
        }
        w.now = w.now.max(next);
        let input = if event_at == Some(next) {
            let (_, event) = w.queue.pop_first().expect("an event");
            match event {
                Event::Operator if w.operating => w.act(kernel.kernel()),
                Event::Operator => None,
                Event::Confirm => {
                    if kernel.kernel().pending().is_some() {
                        w.watched = None; // confirmed in time: nothing rolls back
                    } else {
                        w.report.late_confirms += 1;
                    }
                    Some(Input::Confirm)
                }
                Event::Input(input) => {
                    if let Input::Exited { job, .. } = &input {
                        w.procs.remove(job);
                    }
                    Some(input)
                }
                Event::Rendered(service, job, answer) => {
                    let result = match answer {
                        Err(why) => RenderResult::Failed(why),
                        Ok(value) if value == w.copy || value.is_none() => RenderResult::Unchanged,
                        Ok(value) => {
                            w.copy = value;
                            if let Some(win) = w.window.as_mut() {
                                win.replaced += 1;
                            }
                            RenderResult::Changed(vec![TARGET.to_string()])
                        }
                    };
                    Some(Input::RenderDone {
                        service,
                        job,
                        result,
                    })
                }
            }
        } else {
            Some(Input::Tick)
        };
        let Some(input) = input else { continue };
        let ticked = matches!(input, Input::Tick);
        out.clear();
        kernel.step(w.now, input, &mut out);
        w.report.steps += 1;
        if let Some(why) = one_instant.step(w.now) {
            w.broken.push(why);
            break;
        }
        if let Err(broken) = kernel.kernel().check_invariants() {
            w.broken.extend(
                broken
                    .into_iter()
                    .map(|b| format!("{}: invariant: {b}", w.now)),
            );
        }
        let effects = std::mem::take(&mut out);
        w.carry_out(kernel.kernel(), &effects, sshd);
        out = effects;
        w.check(kernel.kernel(), ticked);
        if w.broken.len() > 20 {
            break;
        }
    }
    w.now = w.now.max(end);
    w.close_window();
    // Liveness: calm, a config that works, and sshd runs with the copy in force.
    let k = kernel.kernel();
    let in_force = k
        .secrets()
        .get(SECRET)
        .and_then(|g| w.store.get(g))
        .copied();
    let broken_config = match &k.config().service("sshd").map(|s| s.kind.clone()) {
        Some(medic_kernel::config::Kind::Process { argv }) => argv.iter().any(|a| a == "--broken"),
        _ => false,
    };
    if w.broken.is_empty() && in_force.is_some() && !broken_config {
        let runs = w.procs.values().any(|s| *s == sshd);
        if !runs || w.copy != in_force {
            w.broken.push(format!(
                "{}: calm for {CALM_TIME:?}: sshd runs: {runs}, its copy {:?}, in force {in_force:?}: {:?}",
                w.now,
                w.copy,
                k.status(sshd).map(|v| format!("{v:?}"))
            ));
        }
    }
    if w.broken.is_empty() {
        Ok(w.report)
    } else {
        Err(SecretsFailure {
            seed,
            broken: w.broken,
        })
    }
}
