//! The simulated world: processes, links, files and commands standing in for the io-adapters.
//!
//! The world carries out every [`Effect`] the way the real adapters do (spawn a process group,
//! signal it, kill it, run a check or a command, set a link up, watch a path) and answers with
//! [`Input`]s after small, random latencies. How a process behaves (crashes, readiness, memory,
//! probe answers, SIGTERM) is drawn at spawn from the seed and the swarm's [`Faults`].

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use medic_kernel::config::{Kind, Readiness, Reports, ServiceConfig, Signal};
use medic_kernel::{
    CheckPurpose, CheckResult, CommandPurpose, Effect, ExitStatus, Input, Instant, JobId,
    LinkState, ServiceId,
};

use crate::graph::CUSTOM_CONDITIONS;
use crate::rng::Rng;
use crate::templates::{OutputsWorld, Publish};

/// Which faults a seed switches on, and how often (swarm testing: each seed a different mix).
/// Rates are per mille; intervals are mean gaps between injected events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Per spawn: the process crashes after a random delay.
    pub crash: u64,
    /// Per service: every process of it crashes within 300 ms (a crash loop).
    pub crash_loop: u64,
    /// Per spawn: readiness comes late (up to twice `start-timeout`).
    pub slow_ready: u64,
    /// Per spawn: readiness never comes.
    pub never_ready: u64,
    /// Per service: its processes ignore the stop signal (only SIGKILL ends them).
    pub ignore_term: u64,
    /// Per spawn: memory grows about 1 MiB/s.
    pub leak: u64,
    /// Per service: its probe flaps (fails this often per mille) or reports custom conditions.
    pub flaky_probe: u64,
    /// Per spawn: the exec fails.
    pub spawn_fail: u64,
    /// Per oneshot run: exits non-zero.
    pub oneshot_fail: u64,
    /// Per heal command: exits non-zero.
    pub command_fail: u64,
    /// Mean gap between link faults (absent, admin-down, no carrier, address lost, flapping).
    pub link_every: Option<Duration>,
    /// Mean gap between external crashes and hangs of running processes.
    pub crash_every: Option<Duration>,
    /// Mean gap between changes of watched files.
    pub file_every: Option<Duration>,
    /// Mean gap between operator commands.
    pub operator_every: Option<Duration>,
    /// Mean gap between config replacements.
    pub reconfigure_every: Option<Duration>,
    /// Mean gap between publishers' output events (bursts of changes, renews, partial maps).
    pub publish_every: Option<Duration>,
    /// A renew comes with a change right before it (well within a render's latency): a render
    /// asked for the change is made old by the renew while in flight (see
    /// [`Faults::render_races`]).
    pub render_races: bool,
}

impl Faults {
    /// How often publishers' outputs change, for `seed`: from a stream of its own, so that
    /// the rest of a seed's draws (and so the golden traces) did not move when it came.
    pub fn publish_every(seed: u64) -> Option<Duration> {
        let mut rng = Rng::new(seed ^ 0x7075_626c_6973_6821);
        rng.ratio(3, 4)
            .then(|| Duration::from_millis(*rng.pick(&[1_000, 10_000, 60_000])))
    }

    /// Whether renews race renders, for `seed`: a quarter of the seeds, from the seed alone
    /// (no draw), so that other seeds' scenarios did not move when it came.
    pub fn render_races(seed: u64) -> bool {
        seed.is_multiple_of(4)
    }

    /// A random mix: each kind on with probability one half, at a random rate (all but
    /// `publish_every`: see [`Faults::publish_every`]).
    pub fn swarm(rng: &mut Rng) -> Faults {
        let rate = |rng: &mut Rng, menu: &[u64]| {
            if rng.ratio(1, 2) {
                *rng.pick(menu)
            } else {
                0
            }
        };
        let crash = rate(rng, &[20, 100, 400]);
        let crash_loop = rate(rng, &[50, 200]);
        let slow_ready = rate(rng, &[50, 200]);
        let never_ready = rate(rng, &[20, 100]);
        let ignore_term = rate(rng, &[200, 500]);
        let leak = rate(rng, &[50, 200]);
        let flaky_probe = rate(rng, &[200, 600]);
        let spawn_fail = rate(rng, &[20, 200]);
        let oneshot_fail = rate(rng, &[100, 500]);
        let command_fail = rate(rng, &[200, 700]);
        let every = |rng: &mut Rng, menu: &[u64]| {
            rng.ratio(1, 2)
                .then(|| Duration::from_millis(*rng.pick(menu)))
        };
        Faults {
            crash,
            crash_loop,
            slow_ready,
            never_ready,
            ignore_term,
            leak,
            flaky_probe,
            spawn_fail,
            oneshot_fail,
            command_fail,
            link_every: every(rng, &[2_000, 20_000, 120_000]),
            crash_every: every(rng, &[1_000, 10_000, 60_000]),
            file_every: every(rng, &[500, 10_000, 60_000]),
            operator_every: every(rng, &[5_000, 30_000, 120_000]),
            reconfigure_every: every(rng, &[30_000, 300_000]),
            publish_every: None,
            render_races: false,
        }
    }
}

/// How a service's probe answers while faults are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProbeMood {
    Healthy,
    /// Fails (or reports a custom condition) this often, per mille.
    Flaky(u64),
}

/// What the world knows of one service, whatever process it runs now.
#[derive(Clone, Debug)]
struct ServiceTraits {
    crash_loop: bool,
    ignores_term: bool,
    probe: ProbeMood,
}

/// A live process group.
#[derive(Clone, Debug)]
pub struct Proc {
    /// The service it belongs to.
    pub service: ServiceId,
    /// The service's name at spawn.
    pub name: String,
    config: Arc<ServiceConfig>,
    started: Instant,
    /// Ready (for polls) from this instant; `None`: never.
    ready_at: Option<Instant>,
    ignores_term: bool,
    leak_bytes_per_s: u64,
    base_rss: u64,
    /// Probes time out (an external "hang" fault).
    hung: bool,
    /// Exits of this crash token or older are void (the world healed the process).
    crash_token: u64,
    /// SIGKILL or the stop signal was delivered and the exit is scheduled.
    dying: bool,
    /// When the stop signal arrived: the group must be gone by `stop-timeout` (+ SIGKILL
    /// latency) after it.
    pub stop_deadline: Option<Instant>,
}

impl Proc {
    /// Its memory at `now`: a base, and a leak that grows each whole second.
    fn rss_at(&self, now: Instant) -> u64 {
        let secs = now.saturating_since(self.started).as_secs();
        self.base_rss + self.leak_bytes_per_s * secs
    }
}

/// Something the world will do at an instant.
#[derive(Clone, Debug)]
enum Event {
    /// Hand this input to the kernel.
    Input(Input),
    /// The process of `job` ends (if it still lives and the token is current).
    Exit {
        job: JobId,
        status: ExitStatus,
        crash_token: Option<u64>,
    },
    /// A check completes; the result is computed then.
    CheckDone {
        service: ServiceId,
        job: JobId,
        purpose: CheckPurpose,
    },
    /// A command (heal, reload, stop) finishes.
    CommandDone {
        service: ServiceId,
        job: JobId,
        status: ExitStatus,
        purpose: CommandPurpose,
    },
    /// The readiness notification of a process.
    Ready { job: JobId },
    /// Set a link administratively up.
    LinkUp { ifname: String },
    /// A driver was loaded: an absent link appears (down, as a fresh link is).
    LinkPresent { ifname: String },
    /// A publisher publishes (after its spawn, if it still runs; or before liveness).
    Publish {
        name: String,
        how: Publish,
        only_if_running: bool,
    },
}

/// A oneshot whose command succeeded and that has not been undone yet.
#[derive(Clone, Copy, Debug)]
struct OneshotUp {
    /// Its `stop-timeout`: how long the kernel waits for its `stop` command.
    stop_timeout: core::time::Duration,
    /// When the kernel abandons its running `stop` command, once one runs.
    abandoned_at: Option<Instant>,
}

/// The simulated world.
#[derive(Clone, Debug)]
pub struct World {
    rng: Rng,
    /// The faults of this seed (all zero once [`World::faults_off`]).
    pub faults: Faults,
    traits: BTreeMap<String, ServiceTraits>,
    procs: BTreeMap<JobId, Proc>,
    /// Oneshots whose command succeeded and whose `stop` command has not run yet.
    oneshots_up: BTreeMap<ServiceId, OneshotUp>,
    links: BTreeMap<String, Option<LinkState>>,
    watched: BTreeSet<String>,
    interfaces: BTreeMap<ServiceId, String>,
    /// Which service holds each slot, as of the last config change.
    holders: BTreeMap<ServiceId, String>,
    events: BTreeMap<(Instant, u64), Event>,
    seq: u64,
    next_pid: u32,
    crash_token: u64,
    /// Every live group's stop deadline, earliest first (so "is any group late?" costs O(1)).
    stop_deadlines: BTreeSet<(Instant, JobId)>,
    /// The kernel said shutdown is complete.
    pub shutdown_complete: bool,
    /// Publishers, rendered files and renders (DESIGN §9).
    pub outputs: OutputsWorld,
}

/// A link with everything up.
pub const LINK_UP: LinkState = LinkState {
    admin_up: true,
    carrier: true,
    ipv4: true,
    ipv6_global: true,
};

/// Total RAM of the simulated machine.
pub const TOTAL_RAM: u64 = 256 << 20;

/// The longest a render takes, in whole milliseconds ([`crate::templates::RENDER_LATENCY_MAX`]).
const RENDER_LATENCY_MAX_MS: u64 = crate::templates::RENDER_LATENCY_MAX.as_millis() as u64;

/// The latest SIGKILL takes to end a group.
pub const KILL_LATENCY: Duration = Duration::from_millis(1);

fn signal_number(s: Signal) -> i32 {
    match s {
        Signal::Hup => 1,
        Signal::Int => 2,
        Signal::Quit => 3,
        Signal::Kill => 9,
        Signal::Usr1 => 10,
        Signal::Usr2 => 12,
        Signal::Alrm => 14,
        Signal::Term => 15,
        Signal::Cont => 18,
        Signal::Stop => 19,
        Signal::Tstp => 20,
        Signal::Winch => 28,
        Signal::Pwr => 30,
    }
}

/// Whether a signal ends a process that does not handle it.
fn terminates(s: Signal) -> bool {
    matches!(
        s,
        Signal::Term | Signal::Int | Signal::Quit | Signal::Alrm | Signal::Pwr | Signal::Kill
    )
}

impl World {
    /// A world for `seed`'s faults, with every link of `ifnames` present and up.
    pub fn new(rng: Rng, faults: Faults) -> World {
        World {
            rng,
            faults,
            traits: BTreeMap::new(),
            procs: BTreeMap::new(),
            oneshots_up: BTreeMap::new(),
            links: BTreeMap::new(),
            watched: BTreeSet::new(),
            interfaces: BTreeMap::new(),
            holders: BTreeMap::new(),
            events: BTreeMap::new(),
            seq: 0,
            next_pid: 100,
            crash_token: 0,
            stop_deadlines: BTreeSet::new(),
            shutdown_complete: false,
            outputs: OutputsWorld::default(),
        }
    }

    fn at(&mut self, when: Instant, event: Event) {
        self.seq += 1;
        self.events.insert((when, self.seq), event);
    }

    fn latency(&mut self, max_ms: u64) -> Duration {
        Duration::from_micros(self.rng.below(max_ms * 1000 + 1))
    }

    fn traits(&mut self, name: &str) -> ServiceTraits {
        if let Some(t) = self.traits.get(name) {
            return t.clone();
        }
        let f = self.faults.clone();
        let t = ServiceTraits {
            crash_loop: self.rng.ratio(f.crash_loop, 1000),
            ignores_term: self.rng.ratio(f.ignore_term, 1000),
            probe: if self.rng.ratio(f.flaky_probe, 1000) {
                ProbeMood::Flaky(*self.rng.pick(&[100, 300, 700]))
            } else {
                ProbeMood::Healthy
            },
        };
        self.traits.insert(name.to_string(), t.clone());
        t
    }

    /// Makes a link exist (at setup) and returns the input that tells the kernel.
    pub fn add_link(&mut self, ifname: &str, state: Option<LinkState>) -> Input {
        self.links.insert(ifname.to_string(), state);
        Input::LinkChanged {
            ifname: ifname.to_string(),
            link: state,
        }
    }

    /// Changes a link now; the input to hand the kernel (`None` when nothing changed).
    pub fn set_link(
        &mut self,
        ifname: &str,
        f: impl FnOnce(&mut Option<LinkState>),
    ) -> Option<Input> {
        let slot = self.links.get_mut(ifname)?;
        let before = *slot;
        f(slot);
        (*slot != before).then(|| Input::LinkChanged {
            ifname: ifname.to_string(),
            link: *slot,
        })
    }

    /// The links, by name.
    pub fn links(&self) -> impl Iterator<Item = (&String, &Option<LinkState>)> {
        self.links.iter()
    }

    /// Whether a path is watched (a change of an unwatched path reaches no one).
    pub fn watched(&self, path: &str) -> bool {
        self.watched.contains(path)
    }

    /// When the world next does something.
    pub fn next_event(&self) -> Option<Instant> {
        self.events.keys().next().map(|(at, _)| *at)
    }

    /// Carries out the next event (due at [`World::next_event`]); the input it produces, if any.
    pub fn pop_event(&mut self, now: Instant) -> Option<Input> {
        let (_, event) = self.events.pop_first()?;
        match event {
            Event::Input(input) => Some(input),
            Event::Exit {
                job,
                status,
                crash_token,
            } => {
                let p = self.procs.get(&job)?;
                if crash_token.is_some_and(|t| t < p.crash_token) {
                    return None;
                }
                let p = self.procs.remove(&job)?;
                if let Some(d) = p.stop_deadline {
                    self.stop_deadlines.remove(&(d, job));
                }
                let oneshot = matches!(p.config.kind, Kind::Oneshot { .. });
                // A oneshot asked to stop that still finishes its job counts as stopped, as the
                // kernel sees it (its `stop` command is not run: see the simulator's report).
                if oneshot && status.success() && !p.dying && p.stop_deadline.is_none() {
                    let up = OneshotUp {
                        stop_timeout: p.config.stop_timeout,
                        abandoned_at: None,
                    };
                    self.oneshots_up.insert(p.service, up);
                }
                Some(Input::Exited {
                    service: p.service,
                    job,
                    status,
                })
            }
            Event::Ready { job } => {
                let p = self.procs.get(&job)?;
                (p.ready_at.is_some_and(|r| r <= now)).then_some(Input::ReadyNotified {
                    service: p.service,
                    job,
                })
            }
            Event::CheckDone {
                service,
                job,
                purpose,
            } => Some(Input::CheckDone {
                service,
                job,
                result: self.check_result(service, purpose, now),
            }),
            Event::CommandDone {
                service,
                job,
                status,
                purpose,
            } => {
                if purpose == CommandPurpose::Stop {
                    self.oneshots_up.remove(&service);
                }
                Some(Input::CommandDone {
                    service,
                    job,
                    status,
                })
            }
            Event::LinkUp { ifname } => self.set_link(&ifname, |l| {
                if let Some(l) = l {
                    l.admin_up = true;
                }
            }),
            Event::Publish {
                name,
                how,
                only_if_running,
            } => {
                if only_if_running && self.groups_of(&name) == 0 {
                    return None;
                }
                self.outputs.publish(&name, how)
            }
            Event::LinkPresent { ifname } => self.set_link(&ifname, |l| {
                if l.is_none() {
                    *l = Some(LinkState {
                        admin_up: false,
                        carrier: true,
                        ipv4: false,
                        ipv6_global: false,
                    });
                }
            }),
        }
    }

    fn live_proc(&self, service: ServiceId) -> Option<&Proc> {
        self.procs.values().find(|p| p.service == service)
    }

    fn check_result(
        &mut self,
        service: ServiceId,
        purpose: CheckPurpose,
        now: Instant,
    ) -> CheckResult {
        let Some(p) = self.live_proc(service).cloned() else {
            return CheckResult::Failed("connection refused".into());
        };
        match purpose {
            CheckPurpose::Ready => {
                if p.ready_at.is_some_and(|r| r <= now) {
                    CheckResult::Ok
                } else {
                    CheckResult::Failed("not ready".into())
                }
            }
            CheckPurpose::Probe => {
                if p.hung {
                    return CheckResult::TimedOut;
                }
                let reports = p.config.probe.as_ref().map(|pr| pr.reports);
                let mood = self.traits(&p.name).probe;
                let bad = match mood {
                    ProbeMood::Healthy => false,
                    ProbeMood::Flaky(pm) => self.rng.ratio(pm, 1000),
                };
                match (reports, bad) {
                    (Some(Reports::Condition), false) => CheckResult::Condition("ready".into()),
                    (Some(Reports::Condition), true) => {
                        let name = *self.rng.pick(&CUSTOM_CONDITIONS);
                        CheckResult::Condition(name.into())
                    }
                    (_, false) => CheckResult::Ok,
                    (_, true) => CheckResult::Failed("exit code 1".into()),
                }
            }
        }
    }

    /// Carries out the effects of one step at `now`, in order.
    pub fn apply(&mut self, now: Instant, effects: &[Effect]) {
        for effect in effects {
            self.apply_one(now, effect);
        }
    }

    fn apply_one(&mut self, now: Instant, effect: &Effect) {
        match effect {
            Effect::Spawn {
                service,
                job,
                config,
            } => self.spawn(now, *service, *job, config.clone()),
            Effect::Signal { job, signal, .. } => self.signal(now, *job, *signal),
            Effect::Kill { job, .. } => self.signal(now, *job, Signal::Kill),
            Effect::Check {
                service,
                job,
                timeout,
                purpose,
                ..
            } => {
                let hung = self
                    .live_proc(*service)
                    .is_some_and(|p| p.hung && *purpose == CheckPurpose::Probe);
                let took = if hung {
                    *timeout
                } else {
                    self.latency(20).min(*timeout)
                };
                self.at(
                    now + took,
                    Event::CheckDone {
                        service: *service,
                        job: *job,
                        purpose: *purpose,
                    },
                );
            }
            Effect::SampleMemory { service, job } => {
                if let Some(p) = self.procs.get(job) {
                    let rss = p.rss_at(now);
                    let at = now + self.latency(2);
                    self.at(
                        at,
                        Event::Input(Input::MemorySampled {
                            service: *service,
                            job: *job,
                            rss_bytes: Some(rss),
                            total_bytes: Some(TOTAL_RAM),
                        }),
                    );
                }
            }
            Effect::RunCommand {
                service,
                job,
                purpose,
                ..
            } => {
                if *purpose == CommandPurpose::Stop {
                    if let Some(up) = self.oneshots_up.get_mut(service) {
                        up.abandoned_at = Some(now + up.stop_timeout);
                    }
                }
                let fail = *purpose == CommandPurpose::Heal
                    && self.rng.ratio(self.faults.command_fail, 1000);
                let took = self.latency(if *purpose == CommandPurpose::Stop {
                    50
                } else {
                    300
                });
                let status = ExitStatus::Code(i32::from(fail));
                if *purpose == CommandPurpose::Heal && !fail {
                    // A heal command of an interface (`modprobe`) brings its link back.
                    if let Some(ifname) = self.interfaces.get(service).cloned() {
                        self.at(now + took, Event::LinkPresent { ifname });
                    }
                }
                self.at(
                    now + took,
                    Event::CommandDone {
                        service: *service,
                        job: *job,
                        status,
                        purpose: *purpose,
                    },
                );
            }
            Effect::LinkUp { ifname, .. } => {
                let at = now + self.latency(5);
                self.at(
                    at,
                    Event::LinkUp {
                        ifname: ifname.clone(),
                    },
                );
            }
            Effect::Watch { path } => {
                self.watched.insert(path.clone());
            }
            Effect::Unwatch { path } => {
                self.watched.remove(path);
            }
            // The world's process group ends with its leader: nothing is left to sweep.
            // The simulated world keeps no secret store and no config file.
            Effect::Event { .. }
            | Effect::Notice { .. }
            | Effect::Sweep { .. }
            | Effect::DropSecret { .. }
            | Effect::ConfigRolledBack => {}
            Effect::ShutdownComplete => self.shutdown_complete = true,
            Effect::Adopt { job, was, .. } => self.adopt(*was, *job),
            // Rendered as the adapter would (see `templates.rs`).
            Effect::Render {
                service,
                job,
                templates,
                outputs,
                // The generated graphs have no secrets (sim/src/secrets.rs judges those).
                secrets: _,
            } => {
                let at = now + self.latency(RENDER_LATENCY_MAX_MS);
                let result = self
                    .outputs
                    .render(*service, *job, (now, at), templates, outputs);
                let input = Input::RenderDone {
                    service: *service,
                    job: *job,
                    result,
                };
                self.at(at, Event::Input(input));
            }
        }
    }

    fn spawn(&mut self, now: Instant, service: ServiceId, job: JobId, config: Arc<ServiceConfig>) {
        let answer_at = now + self.latency(1);
        if self.rng.ratio(self.faults.spawn_fail, 1000) {
            self.at(
                answer_at,
                Event::Input(Input::SpawnFailed {
                    service,
                    job,
                    error: "No such file or directory".into(),
                }),
            );
            return;
        }
        let traits = self.traits(&config.name);
        let f = self.faults.clone();
        let pid = self.next_pid;
        self.next_pid += 1;
        self.oneshots_up.remove(&service);
        let quick = self.latency(200.min(config.start_timeout.as_millis() as u64 / 2));
        let ready_at = if self.rng.ratio(f.never_ready, 1000) {
            None
        } else if self.rng.ratio(f.slow_ready, 1000) {
            let slow = config.start_timeout.as_millis() as u64 * 2;
            Some(now + Duration::from_millis(self.rng.range(1, slow)))
        } else {
            Some(now + quick)
        };
        let leak = if self.rng.ratio(f.leak, 1000) {
            1 << 20
        } else {
            0
        };
        let proc = Proc {
            service,
            name: config.name.clone(),
            config: config.clone(),
            started: now,
            ready_at,
            ignores_term: traits.ignores_term,
            leak_bytes_per_s: leak,
            base_rss: (4 + self.rng.below(16)) << 20,
            hung: false,
            crash_token: self.crash_token,
            dying: false,
            stop_deadline: None,
        };
        self.procs.insert(job, proc);
        self.at(
            answer_at,
            Event::Input(Input::Spawned { service, job, pid }),
        );
        if self.outputs.is_publisher(&config.name) {
            // A DHCP client publishes what it has soon after it starts.
            let at = now + self.latency(300);
            let publish = Event::Publish {
                name: config.name.clone(),
                how: Publish::Again,
                only_if_running: true,
            };
            self.at(at, publish);
        }
        match &config.kind {
            Kind::Oneshot { .. } => {
                let fail = self.rng.ratio(f.oneshot_fail, 1000);
                let took = match ready_at {
                    Some(r) => r.saturating_since(now),
                    None => config.start_timeout * 3,
                };
                self.at(
                    now + took,
                    Event::Exit {
                        job,
                        status: ExitStatus::Code(i32::from(fail)),
                        crash_token: Some(self.crash_token),
                    },
                );
            }
            Kind::Process { .. } => {
                let crash_in = if traits.crash_loop {
                    Some(self.rng.range(1, 300))
                } else if self.rng.ratio(f.crash, 1000) {
                    Some(self.rng.range(100, 600_000))
                } else {
                    None
                };
                if let Some(ms) = crash_in {
                    self.at(
                        now + Duration::from_millis(ms),
                        Event::Exit {
                            job,
                            status: ExitStatus::Code(1),
                            crash_token: Some(self.crash_token),
                        },
                    );
                }
                if matches!(config.ready, Readiness::NotifyFd(_) | Readiness::SdNotify) {
                    if let Some(r) = ready_at {
                        self.at(r, Event::Ready { job });
                    }
                }
            }
            Kind::Interface { .. } | Kind::Device { .. } => {}
        }
    }

    fn signal(&mut self, now: Instant, job: JobId, signal: Signal) {
        let Some(p) = self.procs.get_mut(&job) else {
            return;
        };
        if !terminates(signal) {
            return; // HUP, USR1…: handled by the process (a reload), nothing visible
        }
        let deadline = now + p.config.stop_timeout + KILL_LATENCY;
        if signal != Signal::Kill {
            let earliest = p.stop_deadline.map_or(deadline, |d| d.min(deadline));
            if let Some(old) = p.stop_deadline.replace(earliest) {
                self.stop_deadlines.remove(&(old, job));
            }
            self.stop_deadlines.insert((earliest, job));
            if p.ignores_term || p.dying {
                return;
            }
        }
        p.dying = true;
        let took = if signal == Signal::Kill {
            self.latency(KILL_LATENCY.as_millis() as u64)
        } else {
            self.latency(20)
        };
        self.at(
            now + took,
            Event::Exit {
                job,
                status: ExitStatus::Signal(signal_number(signal)),
                crash_token: None,
            },
        );
    }

    /// [`Effect::Adopt`]: the process that ran as `was` under the crashed daemon goes on as
    /// `job` (its pending end too).
    fn adopt(&mut self, was: JobId, job: JobId) {
        let Some(p) = self.procs.remove(&was) else {
            return;
        };
        self.procs.insert(job, p);
        for event in self.events.values_mut() {
            if let Event::Exit { job: j, .. } = event {
                if *j == was {
                    *j = job;
                }
            }
        }
    }

    /// The daemon itself crashed (DESIGN §13): every answer it was waiting for dies with it
    /// (spawn answers, checks, commands, readiness notifications); processes go on, and their
    /// ends, while no daemon runs, reach no one.
    pub fn daemon_crashed(&mut self) {
        self.events.retain(|_, e| {
            matches!(
                e,
                Event::Exit { .. }
                    | Event::LinkUp { .. }
                    | Event::LinkPresent { .. }
                    | Event::Publish { .. }
            )
        });
        self.oneshots_up.clear();
    }

    /// Whether the process of `job` still lives.
    pub fn alive(&self, job: JobId) -> bool {
        self.procs.contains_key(&job)
    }

    /// Before a restarted daemon's first tick: every process it did not adopt (`keep`) is
    /// stopped, and gone before anything starts (the adapter waits for it). Returns their
    /// services' names.
    pub fn stop_all_but(&mut self, keep: &BTreeSet<JobId>) -> Vec<String> {
        let gone: Vec<JobId> = self
            .procs
            .keys()
            .filter(|j| !keep.contains(j))
            .copied()
            .collect();
        gone.iter()
            .filter_map(|j| self.procs.remove(j))
            .map(|p| p.name)
            .collect()
    }

    /// An external crash of the service's process (OOM killer, a segfault).
    pub fn crash(&mut self, now: Instant, service: ServiceId) {
        let job = self
            .procs
            .iter()
            .find(|(_, p)| p.service == service && !p.dying)
            .map(|(j, _)| *j);
        if let Some(job) = job {
            let token = self.crash_token;
            self.at(
                now,
                Event::Exit {
                    job,
                    status: ExitStatus::Signal(11),
                    crash_token: Some(token),
                },
            );
        }
    }

    /// The service's process stops answering its probe until it is restarted.
    pub fn hang(&mut self, service: ServiceId) {
        for p in self.procs.values_mut().filter(|p| p.service == service) {
            p.hung = true;
        }
    }

    /// Faults end: no new fault is drawn, and every live process is repaired (pending crashes
    /// void, ready soon, no leak, no hang, probes healthy). Links are not touched here.
    pub fn faults_off(&mut self, now: Instant) {
        self.faults = Faults::default();
        // No map is left partial, and every running publisher has published: every template
        // can render.
        let (partial, silent) = self.outputs.partial_or_silent();
        for (name, only_if_running) in partial
            .into_iter()
            .map(|n| (n, false))
            .chain(silent.into_iter().map(|n| (n, true)))
        {
            let publish = Event::Publish {
                name,
                how: Publish::Again,
                only_if_running,
            };
            self.at(now, publish);
        }
        self.crash_token += 1;
        for t in self.traits.values_mut() {
            t.crash_loop = false;
            t.probe = ProbeMood::Healthy;
        }
        let token = self.crash_token;
        let mut notify = Vec::new();
        for (job, p) in self.procs.iter_mut() {
            p.crash_token = token;
            p.hung = false;
            p.leak_bytes_per_s = 0;
            if p.ready_at.is_none_or(|r| r > now) {
                p.ready_at = Some(now);
                match p.config.kind {
                    Kind::Oneshot { .. } if !p.dying => notify.push((*job, true)),
                    Kind::Process { .. }
                        if matches!(
                            p.config.ready,
                            Readiness::NotifyFd(_) | Readiness::SdNotify
                        ) =>
                    {
                        notify.push((*job, false))
                    }
                    _ => {}
                }
            }
        }
        for (job, oneshot) in notify {
            if oneshot {
                self.at(
                    now,
                    Event::Exit {
                        job,
                        status: ExitStatus::Code(0),
                        crash_token: Some(token),
                    },
                );
            } else {
                self.at(now, Event::Ready { job });
            }
        }
    }

    /// Live process groups of the service called `name` (by name, as an operator counts them).
    pub fn groups_of(&self, name: &str) -> usize {
        self.procs.values().filter(|p| p.name == name).count()
    }

    /// Every live process group.
    pub fn procs(&self) -> impl Iterator<Item = (&JobId, &Proc)> {
        self.procs.iter()
    }

    /// Whether the service is up in the world: a live process, or a oneshot that succeeded and
    /// has not been undone by its `stop` command.
    /// A oneshot whose stop command has run past `stop-timeout` is not up any more: the kernel
    /// abandons such a command (the design leaves this open; see kernel `Timer::StopTimeout`).
    pub fn is_up(&self, service: ServiceId, config: &ServiceConfig, now: Instant) -> bool {
        let undoable = matches!(config.kind, Kind::Oneshot { stop: Some(_), .. });
        self.procs.values().any(|p| p.service == service)
            || (undoable
                && self
                    .oneshots_up
                    .get(&service)
                    .is_some_and(|up| up.abandoned_at.is_none_or(|at| now < at)))
    }

    /// The publishers of the config in force ([`crate::graph::Graph::publishers`]): a
    /// running process that has just become one publishes soon, as it would after a spawn.
    pub fn set_publishers(&mut self, now: Instant, names: BTreeSet<String>) {
        for name in self.outputs.set_publishers(names) {
            if self.groups_of(&name) > 0 {
                let at = now + self.latency(300);
                let publish = Event::Publish {
                    name,
                    how: Publish::Again,
                    only_if_running: true,
                };
                self.at(at, publish);
            }
        }
    }

    /// Whether the process of `job` lives and nobody has asked it to stop.
    pub fn running_job(&self, job: JobId) -> bool {
        self.procs
            .get(&job)
            .is_some_and(|p| !p.dying && p.stop_deadline.is_none())
    }

    /// Whether `service` has a live process that nobody has asked to stop.
    pub fn running_in_world(&self, service: ServiceId) -> bool {
        self.procs
            .values()
            .any(|p| p.service == service && !p.dying && p.stop_deadline.is_none())
    }

    /// Whether the live process of `service` is ready in the world (its readiness has come), or
    /// `None` when it has no live process.
    pub fn ready_in_world(&self, service: ServiceId, now: Instant) -> Option<bool> {
        let p = self
            .procs
            .values()
            .find(|p| p.service == service && !p.dying)?;
        Some(p.ready_at.is_some_and(|r| r <= now))
    }

    /// Tells the world which service holds each slot (after a config change): the kernel gives a
    /// removed service's slot to a new one, and what is left in the world of the old one (its
    /// oneshot's effect, a process the kernel abandoned) is no longer the slot's.
    pub fn set_holders(&mut self, holders: BTreeMap<ServiceId, String>) {
        for (id, name) in &holders {
            if self.holders.get(id).is_some_and(|old| old != name) {
                self.oneshots_up.remove(id);
                self.outputs.forget(*id);
                for p in self.procs.values_mut() {
                    if p.service == *id && p.name != *name {
                        p.service = ServiceId(u32::MAX);
                    }
                }
            }
        }
        self.holders = holders;
    }

    /// The earliest stop deadline of a live group, if any is being stopped.
    pub fn first_stop_deadline(&self) -> Option<Instant> {
        self.stop_deadlines.first().map(|(d, _)| *d)
    }

    /// The state of a link (`None`: absent or unknown).
    pub fn link(&self, ifname: &str) -> Option<&LinkState> {
        self.links.get(ifname).and_then(Option::as_ref)
    }

    /// The machine's RAM.
    pub fn total_ram(&self) -> u64 {
        TOTAL_RAM
    }

    /// The memory of a live group at `now`, as a sample would read it.
    pub fn rss_now(&self, job: JobId, now: Instant) -> Option<u64> {
        let p = self.procs.get(&job)?;
        Some(p.rss_at(now))
    }

    /// When the group's memory, as samples read it, first exceeds `limit` (at its present
    /// rate of growth); `None`: never.
    pub fn memory_over_at(&self, job: JobId, limit: u64) -> Option<Instant> {
        let p = self.procs.get(&job)?;
        if p.base_rss > limit {
            return Some(p.started);
        }
        if p.leak_bytes_per_s == 0 {
            return None;
        }
        let secs = (limit - p.base_rss) / p.leak_bytes_per_s + 1;
        Some(p.started + Duration::from_secs(secs))
    }

    /// Tells the world which services are interfaces on which links (after a config change).
    pub fn set_interfaces(&mut self, interfaces: BTreeMap<ServiceId, String>) {
        self.interfaces = interfaces;
    }
}
