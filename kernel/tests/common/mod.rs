//! A tiny scripted world for kernel scenarios: config text, timed inputs, expected effects.
//!
//! By default the world is obliging: every spawn succeeds at once, a stop signal ends the
//! process at once, SIGKILL always works, commands exit 0. Tests switch parts of that off
//! (`ignore_term`, `fail_spawns`) and answer checks and memory samples by hand.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use medic_kernel::config::{parse, Signal};
use medic_kernel::{
    CheckResult, Effect, ExitStatus, Input, Instant, JobId, Kernel, LinkState, Operator, ServiceId,
};

/// One process the world is running.
#[derive(Clone, Copy, Debug)]
pub struct Running {
    pub job: JobId,
    pub pid: u32,
}

pub struct World {
    pub kernel: Kernel,
    pub now: Instant,
    /// Every effect with the instant it was emitted.
    pub log: Vec<(Instant, Effect)>,
    pub running: BTreeMap<ServiceId, Running>,
    pub ignore_term: BTreeSet<String>,
    /// Spawns of these services fail with "No such file or directory".
    pub fail_spawns: BTreeSet<String>,
    /// Spawns answered with `SpawnDeferred` (the daemon out of descriptors).
    pub defer_spawns: BTreeSet<String>,
    /// Oneshots of these services exit with this code (default 0).
    pub oneshot_exit: BTreeMap<String, i32>,
    /// Oneshots whose runs go on until the test ends them (`crash(name, code)`).
    pub slow_oneshots: BTreeSet<String>,
    /// Heal and reload commands of these services exit with this code (default 0).
    pub command_exit: BTreeMap<String, i32>,
    next_pid: u32,
    queue: Vec<Input>,
}

impl World {
    /// A world running `toml`, booted at t = 0.
    pub fn new(toml: &str) -> World {
        let config = parse(toml, "test.toml").unwrap_or_else(|e| panic!("bad test config:\n{e}"));
        let w = World {
            kernel: Kernel::new(config),
            now: Instant::ZERO,
            log: Vec::new(),
            running: BTreeMap::new(),
            ignore_term: BTreeSet::new(),
            fail_spawns: BTreeSet::new(),
            defer_spawns: BTreeSet::new(),
            oneshot_exit: BTreeMap::new(),
            slow_oneshots: BTreeSet::new(),
            command_exit: BTreeMap::new(),
            next_pid: 100,
            queue: Vec::new(),
        };
        w.kernel.check_invariants().unwrap();
        w
    }

    /// A world whose links are set before boot, then booted.
    pub fn boot(mut self) -> World {
        self.input(Input::Tick);
        self
    }

    pub fn id(&self, name: &str) -> ServiceId {
        self.kernel
            .lookup(name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// Feeds one input at the current time, then whatever the obliging world answers.
    pub fn input(&mut self, input: Input) {
        self.queue.push(input);
        let mut chain = 0u32;
        while !self.queue.is_empty() {
            chain += 1;
            // A kernel that answers its world's answers for ever (a spawn, an exit, a spawn …)
            // fails here instead of hanging the test.
            assert!(
                chain <= 100_000,
                "100000 inputs at {} without time moving: the kernel never settles",
                self.now
            );
            let input = self.queue.remove(0);
            let mut out = Vec::new();
            self.kernel.step(self.now, input, &mut out);
            if let Err(broken) = self.kernel.check_invariants() {
                panic!("invariants broken at {}: {broken:#?}", self.now);
            }
            for effect in out {
                self.react(&effect);
                self.log.push((self.now, effect));
            }
        }
    }

    fn react(&mut self, effect: &Effect) {
        match effect {
            Effect::Spawn {
                service,
                job,
                config,
            } => {
                if self.defer_spawns.contains(&config.name) {
                    self.queue.push(Input::SpawnDeferred {
                        service: *service,
                        job: *job,
                        error: "Too many open files".into(),
                    });
                    return;
                }
                if self.fail_spawns.contains(&config.name) {
                    self.queue.push(Input::SpawnFailed {
                        service: *service,
                        job: *job,
                        error: "No such file or directory".into(),
                    });
                    return;
                }
                self.next_pid += 1;
                let pid = self.next_pid;
                self.running.insert(*service, Running { job: *job, pid });
                self.queue.push(Input::Spawned {
                    service: *service,
                    job: *job,
                    pid,
                });
                if let Some(code) = self.oneshot_code(&config.name, &config.kind) {
                    self.running.remove(service);
                    self.queue.push(Input::Exited {
                        service: *service,
                        job: *job,
                        status: ExitStatus::Code(code),
                    });
                }
            }
            Effect::Signal {
                service,
                job,
                signal,
                ..
            } => {
                let name = self.kernel.name(*service).to_string();
                let stops = matches!(signal, Signal::Term | Signal::Int | Signal::Quit)
                    && !self.ignore_term.contains(&name);
                if stops {
                    self.exit_job(*service, *job, ExitStatus::Signal(15));
                }
            }
            Effect::Kill { service, job } => self.exit_job(*service, *job, ExitStatus::Signal(9)),
            Effect::RunCommand { service, job, .. } => {
                let name = self.kernel.name(*service);
                let code = self.command_exit.get(name).copied().unwrap_or(0);
                self.queue.push(Input::CommandDone {
                    service: *service,
                    job: *job,
                    status: ExitStatus::Code(code),
                })
            }
            _ => {}
        }
    }

    fn oneshot_code(&self, name: &str, kind: &medic_kernel::config::Kind) -> Option<i32> {
        match kind {
            medic_kernel::config::Kind::Oneshot { .. } if !self.slow_oneshots.contains(name) => {
                Some(self.oneshot_exit.get(name).copied().unwrap_or(0))
            }
            _ => None,
        }
    }

    fn exit_job(&mut self, service: ServiceId, job: JobId, status: ExitStatus) {
        if self.running.get(&service).map(|r| r.job) == Some(job) {
            self.running.remove(&service);
            self.queue.push(Input::Exited {
                service,
                job,
                status,
            });
        }
    }

    /// The process of `name` crashes now with exit code `code`.
    pub fn crash(&mut self, name: &str, code: i32) {
        let id = self.id(name);
        let r = self.running[&id];
        self.running.remove(&id);
        self.input(Input::Exited {
            service: id,
            job: r.job,
            status: ExitStatus::Code(code),
        });
    }

    /// Advances time to `t_ms`, firing every deadline on the way, in order.
    pub fn run_until(&mut self, t_ms: u64) {
        let end = Instant::from_millis(t_ms);
        let mut at_one_instant = 0u32;
        while let Some(d) = self.kernel.next_deadline() {
            if d > end {
                break;
            }
            // A deadline a tick does not move on would loop here for ever.
            at_one_instant = if d <= self.now { at_one_instant + 1 } else { 0 };
            assert!(
                at_one_instant <= 10_000,
                "next_deadline stays at {d} (now {}): ticks do not advance it",
                self.now
            );
            self.now = self.now.max(d);
            self.input(Input::Tick);
        }
        self.now = self.now.max(end);
    }

    /// Advances time by `ms`.
    pub fn wait(&mut self, ms: u64) {
        let t = self.now.as_millis() + ms;
        self.run_until(t);
    }

    pub fn link(&mut self, ifname: &str, link: Option<LinkState>) {
        self.input(Input::LinkChanged {
            ifname: ifname.into(),
            link,
        });
    }

    pub fn operator(&mut self, op: Operator) {
        self.input(Input::Operator(op));
    }

    pub fn condition(&self, name: &str) -> String {
        let id = self.id(name);
        self.kernel.status(id).unwrap().condition().to_string()
    }

    pub fn healthy(&self, name: &str) -> bool {
        self.kernel.status(self.id(name)).unwrap().healthy()
    }

    pub fn strikes(&self, name: &str) -> u32 {
        self.kernel.status(self.id(name)).unwrap().strikes()
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.running.contains_key(&self.id(name))
    }

    pub fn job(&self, name: &str) -> JobId {
        self.running[&self.id(name)].job
    }

    /// Instants (ms) of every spawn of `name`.
    pub fn spawns(&self, name: &str) -> Vec<u64> {
        let id = self.id(name);
        self.log
            .iter()
            .filter(|(_, e)| matches!(e, Effect::Spawn { service, .. } if *service == id))
            .map(|(t, _)| t.as_millis())
            .collect()
    }

    /// Effects about `name` (or global ones) rendered compactly, for asserting sequences.
    pub fn effects_of(&self, name: &str) -> Vec<String> {
        let id = self.id(name);
        self.log
            .iter()
            .filter_map(|(t, e)| {
                let s = match e {
                    Effect::Spawn { service, .. } if *service == id => "spawn".to_string(),
                    Effect::Signal {
                        service, signal, ..
                    } if *service == id => format!("signal {}", signal.name()),
                    Effect::Kill { service, .. } if *service == id => "kill".into(),
                    Effect::RunCommand { service, argv, .. } if *service == id => {
                        format!("run {}", argv.join(" "))
                    }
                    Effect::LinkUp { service, .. } if *service == id => "link-up".into(),
                    Effect::Check {
                        service, purpose, ..
                    } if *service == id => format!("check {purpose:?}"),
                    Effect::SampleMemory { service, .. } if *service == id => "sample".into(),
                    Effect::Render { service, .. } if *service == id => "render".into(),
                    _ => return None,
                };
                Some(format!("{}ms {s}", t.as_millis()))
            })
            .collect()
    }

    /// Interventions (history records with a heal) of `name`, as `(ms, heal)`.
    pub fn heals(&self, name: &str) -> Vec<(u64, String)> {
        self.kernel
            .history(self.id(name))
            .unwrap()
            .iter()
            .filter(|r| r.heal.is_some() && !r.note.starts_with("operator"))
            .filter(|r| !r.note.contains("file changed"))
            .map(|r| (r.at.as_millis(), r.heal.as_ref().unwrap().describe()))
            .collect()
    }

    pub fn history(&self, name: &str) -> Vec<String> {
        self.kernel.history(self.id(name)).unwrap().lines()
    }

    /// Answers the readiness poll or probe in flight for `name`.
    pub fn answer_check(&mut self, name: &str, result: CheckResult) {
        let id = self.id(name);
        let job = self
            .log
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                Effect::Check { service, job, .. } if *service == id => Some(*job),
                _ => None,
            })
            .expect("no check was asked for");
        self.input(Input::CheckDone {
            service: id,
            job,
            result,
        });
    }

    pub fn count_checks(&self, name: &str) -> usize {
        self.effects_of(name)
            .iter()
            .filter(|e| e.contains("check"))
            .count()
    }
}

/// A link that is up with carrier and both kinds of address.
pub fn link_ok() -> Option<LinkState> {
    Some(LinkState {
        admin_up: true,
        carrier: true,
        ipv4: true,
        ipv6_global: true,
    })
}

/// A link that is up without carrier.
pub fn link_no_carrier() -> Option<LinkState> {
    Some(LinkState {
        admin_up: true,
        carrier: false,
        ipv4: false,
        ipv6_global: false,
    })
}

/// A link that is administratively down.
pub fn link_admin_down() -> Option<LinkState> {
    Some(LinkState {
        admin_up: false,
        carrier: false,
        ipv4: false,
        ipv6_global: false,
    })
}
