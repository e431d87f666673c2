//! The scenario runner: one seed → a graph, a world, faults; the kernel driven through a fault
//! phase, a liveness phase with faults off, and a shutdown, with every property checked.

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use medic_kernel::config::{self, Kind};
use medic_kernel::trace::{self, Trace};
use medic_kernel::{Effect, Input, Instant, Kernel, LinkState, Operator, ServiceId};

use crate::check::{Checker, Property, Violation};
use crate::fresh::FreshConfig;
use crate::graph::{random_graph, Graph, PATHS};
use crate::rng::Rng;
use crate::templates::Publish;
use crate::timed::TimedJobs;
use crate::world::{Faults, World, LINK_UP};
use crate::{OneInstant, Supervisor};

/// One thing done to the world or by the operator. Scenarios are lists of these: the swarm
/// draws them from the seed; proptest draws and shrinks them. Numbers pick a service (or link,
/// or path) modulo how many there are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Let this many milliseconds pass (scripts only; the swarm times ops itself).
    Wait(u32),
    /// The process of a service crashes (segfault, OOM killer).
    Crash(u8),
    /// The process of a service stops answering its probe.
    Hang(u8),
    /// A link disappears (USB NIC unplugged, driver unloaded).
    LinkAbsent(u8),
    /// A link is set administratively down.
    LinkAdminDown(u8),
    /// A link loses carrier.
    LinkNoCarrier(u8),
    /// A link loses its addresses.
    LinkNoAddress(u8),
    /// A link is back, up, with carrier and addresses.
    LinkRestore(u8),
    /// A watched file changes.
    FileChange(u8),
    /// `medic start`.
    Start(u8),
    /// `medic stop`.
    Stop(u8),
    /// `medic restart`.
    Restart(u8),
    /// `medic reload`.
    Reload(u8),
    /// SIGHUP with an edited config.
    Reconfigure,
    /// SIGHUP with a config that does not validate.
    BadConfig,
    /// The wall clock is stepped: to a trusted date, an hour back, hours ahead, or to 1970.
    ClockStep(u8),
    /// A publisher's outputs change (a new address), if its process runs.
    Publish(u8),
    /// A publisher renews: only the lifetime `valid-s` moves (no template renders it).
    Renew(u8),
    /// A publisher publishes a map without `addr` (the templates that read it fail).
    PublishPartial(u8),
}

/// How to run scenarios.
#[derive(Clone, Debug)]
pub struct Options {
    /// Fewest services in a graph.
    pub min_services: u32,
    /// Most services in a graph.
    pub max_services: u32,
    /// Length of the fault phase (simulated time).
    pub fault_time: Duration,
    /// Write the trace of a failing seed to the temp dir.
    pub write_trace: bool,
    /// The test these options belong to: a failure's reproduce line reruns it.
    pub origin: Origin,
}

/// Where a run comes from, for the reproduce line: `cargo test -p medic-sim --test TARGET --
/// NAME --exact`. The test must read its options back with [`Options::from_env`] and its seeds
/// with [`crate::seeds_from_env`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The test target (a file in `sim/tests/`).
    pub target: &'static str,
    /// The test function.
    pub name: &'static str,
}

impl Origin {
    /// `sim/tests/seeds.rs`, the swarm.
    pub const SEEDS: Origin = Origin {
        target: "seeds",
        name: "seeds",
    };
}

impl Default for Options {
    fn default() -> Options {
        Options {
            min_services: 1,
            max_services: 40,
            fault_time: Duration::from_secs(300),
            write_trace: true,
            origin: Origin::SEEDS,
        }
    }
}

impl Options {
    /// These options with the environment's overrides, as a reproduce line sets them:
    /// `SIM_MIN_SERVICES`, `SIM_MAX_SERVICES`, `SIM_FAULT_MS`.
    pub fn from_env(mut self) -> Options {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = var("SIM_MIN_SERVICES") {
            self.min_services = n as u32;
        }
        if let Some(n) = var("SIM_MAX_SERVICES") {
            self.max_services = n as u32;
        }
        if let Some(ms) = var("SIM_FAULT_MS") {
            self.fault_time = Duration::from_millis(ms);
        }
        self
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A script as one line, `Wait(200),Crash(3),Reconfigure` (what `SIM_SCRIPT` takes).
pub fn script_text(script: &[Op]) -> String {
    let ops: Vec<String> = script.iter().map(|o| o.to_string()).collect();
    ops.join(",")
}

/// Reads [`script_text`] back.
pub fn parse_script(text: &str) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, arg) = match part.split_once('(') {
            Some((name, rest)) => {
                let n = rest.trim_end_matches(')');
                let n: u32 = n.parse().map_err(|_| format!("bad number in `{part}`"))?;
                (name, Some(n))
            }
            None => (part, None),
        };
        let small = |n: Option<u32>| -> Result<u8, String> {
            n.and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("`{part}` wants a number 0..=255"))
        };
        let op = match name {
            "Wait" => Op::Wait(arg.ok_or_else(|| format!("`{part}` wants a number"))?),
            "Crash" => Op::Crash(small(arg)?),
            "Hang" => Op::Hang(small(arg)?),
            "LinkAbsent" => Op::LinkAbsent(small(arg)?),
            "LinkAdminDown" => Op::LinkAdminDown(small(arg)?),
            "LinkNoCarrier" => Op::LinkNoCarrier(small(arg)?),
            "LinkNoAddress" => Op::LinkNoAddress(small(arg)?),
            "LinkRestore" => Op::LinkRestore(small(arg)?),
            "FileChange" => Op::FileChange(small(arg)?),
            "Start" => Op::Start(small(arg)?),
            "Stop" => Op::Stop(small(arg)?),
            "Restart" => Op::Restart(small(arg)?),
            "Reload" => Op::Reload(small(arg)?),
            "Reconfigure" => Op::Reconfigure,
            "BadConfig" => Op::BadConfig,
            "ClockStep" => Op::ClockStep(small(arg)?),
            "Publish" => Op::Publish(small(arg)?),
            "Renew" => Op::Renew(small(arg)?),
            "PublishPartial" => Op::PublishPartial(small(arg)?),
            _ => return Err(format!("unknown op `{part}`")),
        };
        ops.push(op);
    }
    Ok(ops)
}

/// What a passing scenario did.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Kernel steps.
    pub steps: u64,
    /// Digest of the whole trace (property 7 compares it across runs).
    pub digest: u64,
    /// Simulated time at the end.
    pub end: Instant,
    /// Services in the initial graph.
    pub services: usize,
    /// Automatic interventions seen.
    pub interventions: u64,
    /// The trace of the run.
    pub trace: Trace,
}

/// A broken property, with everything needed to understand and reproduce it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The first violation.
    pub violation: Violation,
    /// Every violation of the step that failed.
    pub others: Vec<Violation>,
    /// The kernel's medical history of the service.
    pub history: Vec<String>,
    /// The reference model's notes about the service.
    pub notes: Vec<String>,
    /// Where the trace was written.
    pub trace_path: Option<PathBuf>,
    /// The trace.
    pub trace: Trace,
    /// The command that reruns it.
    pub reproduce: String,
}

impl Failure {
    /// The property broken.
    pub fn property(&self) -> Property {
        self.violation.property
    }
}

/// The command that reruns one seed with these options (and this script, for a scripted
/// run), in the test the options came from.
pub fn reproduce_command(seed: u64, opts: &Options, script: Option<&[Op]>) -> String {
    let mut env = format!("SIM_SEED={seed}");
    let default = Options::default();
    if opts.min_services != default.min_services {
        env.push_str(&format!(" SIM_MIN_SERVICES={}", opts.min_services));
    }
    if opts.max_services != default.max_services {
        env.push_str(&format!(" SIM_MAX_SERVICES={}", opts.max_services));
    }
    if opts.fault_time != default.fault_time {
        env.push_str(&format!(" SIM_FAULT_MS={}", opts.fault_time.as_millis()));
    }
    if let Some(script) = script {
        env.push_str(&format!(" SIM_SCRIPT='{}'", script_text(script)));
    }
    format!(
        "{env} cargo test -p medic-sim --test {} -- {} --exact --nocapture",
        opts.origin.target, opts.origin.name
    )
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.violation;
        writeln!(f, "medic-sim: property {} violated", v.property)?;
        writeln!(f, "  seed:      {}", self.seed)?;
        writeln!(f, "  service:   {}", v.name)?;
        writeln!(f, "  at:        {}", v.at)?;
        writeln!(f, "  what:      {}", v.what)?;
        for o in self.others.iter().skip(1).take(5) {
            writeln!(f, "  also:      {} {}: {}", o.property, o.name, o.what)?;
        }
        writeln!(f, "  history (kernel, newest last):")?;
        for line in self.history.iter().rev().take(20).rev() {
            writeln!(f, "    {line}")?;
        }
        writeln!(f, "  model:")?;
        for line in &self.notes {
            writeln!(f, "    {line}")?;
        }
        if let Some(p) = &self.trace_path {
            writeln!(f, "  trace:     {}", p.display())?;
            writeln!(f, "  replay:    medic replay {}", p.display())?;
        }
        write!(f, "  reproduce: {}", self.reproduce)
    }
}

/// A scenario in progress.
struct Sim<S: Supervisor> {
    sup: S,
    world: World,
    checker: Checker,
    /// Property 10.
    timed: TimedJobs,
    /// Properties 8 and 9.
    fresh: FreshConfig,
    graph: Graph,
    trace: Trace,
    now: Instant,
    steps: u64,
    effects: Vec<Effect>,
    ops: VecDeque<(Instant, Op)>,
    /// The wall clock (Unix ms) at `now` = 0: the wall time is this plus `now`.
    wall_base: i64,
    rng: Rng,
    /// In the quiet window: the candidates that were healthy when it began; an intervention
    /// on or a spawn of one of them is a liveness violation.
    quiet: Option<Vec<ServiceId>>,
    /// Consecutive ticks at one instant (a deadline that never advances).
    stuck: u32,
    /// Steps at one instant: a kernel that keeps answering its world without time moving.
    one_instant: OneInstant,
    /// `SIM_VERBOSE=1`: print every step.
    verbose: bool,
    /// The script to name in the reproduce line (a scripted run whose script is not the
    /// test's own).
    repro_script: Option<Vec<Op>>,
}

const MAX_STEPS: u64 = 5_000_000;

enum Stop {
    Violated,
    Reached,
    Condition,
}

impl<S: Supervisor> Sim<S> {
    fn step(&mut self, input: Input) -> bool {
        self.effects.clear();
        self.timed
            .before_step(self.now, self.sup.kernel(), &self.world);
        self.sup.step(self.now, input.clone(), &mut self.effects);
        if self.verbose {
            let shown = match &input {
                Input::ReplaceConfig { text } => format!("ReplaceConfig ({} bytes)", text.len()),
                i => format!("{i:?}"),
            };
            eprintln!("{} {shown}", self.now);
            for e in &self.effects {
                match e {
                    Effect::Spawn { service, job, .. } => {
                        eprintln!("    Spawn {service:?} {job:?}")
                    }
                    Effect::Event { service, record } => {
                        eprintln!("    Event {} {}", self.sup.kernel().name(*service), record)
                    }
                    e => eprintln!("    {e:?}"),
                }
            }
        }
        self.world.apply(self.now, &self.effects);
        self.checker.after_step(
            self.now,
            &input,
            self.sup.kernel(),
            &self.effects,
            &self.world,
        );
        self.timed.after_step(
            self.now,
            self.wall_now(),
            &input,
            self.sup.kernel(),
            &self.effects,
            &self.world,
            &mut self.checker,
        );
        self.fresh.after_step(
            self.now,
            &input,
            self.sup.kernel(),
            &self.effects,
            &self.world,
            &mut self.checker,
        );
        self.steps += 1;
        if let Some(quiet) = &self.quiet {
            for e in &self.effects {
                let (id, what) = match e {
                    Effect::Spawn { service, .. } => (*service, "spawned".to_string()),
                    Effect::Event { service, record } if Checker::is_intervention(e) => {
                        (*service, format!("intervened ({:?})", record.heal))
                    }
                    _ => continue,
                };
                if !quiet.contains(&id) {
                    continue; // a service that could not be healthy before, now can
                }
                let name = self.sup.kernel().name(id).to_string();
                let what = format!("not quiet once everything was healthy: {what}");
                self.checker
                    .report(Property::Liveness, Some(id), &name, self.now, what);
            }
        }
        let replaced = matches!(input, Input::ReplaceConfig { .. });
        self.trace.push(self.now, input, &self.effects);
        if replaced {
            self.sync_links();
        }
        if self.steps > MAX_STEPS {
            let what = format!("more than {MAX_STEPS} steps: the kernel never settles");
            self.checker
                .report(Property::Liveness, None, "-", self.now, what);
        }
        if let Some(what) = self.one_instant.step(self.now) {
            self.checker
                .report(Property::Liveness, None, "-", self.now, what);
        }
        self.checker.violations.is_empty()
    }

    /// The wall clock as the adapter would read it now.
    fn wall_input(&self) -> Input {
        Input::WallClock(self.wall_now())
    }

    /// The world's wall clock now.
    fn wall_now(&self) -> medic_kernel::WallClock {
        medic_kernel::WallClock {
            unix_ms: self.wall_base + self.now.as_millis() as i64,
            utc_offset_s: 3600,
            host: 0x5eed,
        }
    }

    /// Makes every interface's link exist in the world (new services after a config change).
    fn sync_links(&mut self) {
        let mut interfaces = BTreeMap::new();
        let mut new = Vec::new();
        let holders = self
            .sup
            .kernel()
            .views()
            .map(|s| (s.id(), s.name().to_string()))
            .collect();
        self.world.set_holders(holders);
        self.world.set_publishers(self.now, self.graph.publishers());
        for s in self.sup.kernel().views() {
            if let Kind::Interface { ifname, .. } = &s.config().kind {
                interfaces.insert(s.id(), ifname.clone());
                if !self.world.links().any(|(n, _)| n == ifname) {
                    new.push(ifname.clone());
                }
            }
        }
        self.world.set_interfaces(interfaces);
        for ifname in new {
            let input = self.world.add_link(&ifname, Some(LINK_UP));
            self.step(input);
        }
    }

    /// Runs until `end`, or until `until` holds after a step.
    fn run_until(&mut self, end: Instant, mut until: impl FnMut(&Self) -> bool) -> Stop {
        loop {
            if !self.checker.violations.is_empty() {
                return Stop::Violated;
            }
            if until(self) {
                return Stop::Condition;
            }
            let kd = self.sup.next_deadline();
            let wd = self.world.next_event();
            let od = self.ops.front().map(|(t, _)| *t);
            let cd = self.checker.next_deadline();
            let fd = self.fresh.next_deadline();
            let Some(t) = [kd, wd, od, cd, fd].into_iter().flatten().min() else {
                self.now = self.now.max(end);
                return Stop::Reached;
            };
            if t > end {
                self.now = self.now.max(end);
                return Stop::Reached;
            }
            let t = t.max(self.now);
            if t == self.now && kd.is_some_and(|d| d <= t) {
                self.stuck += 1;
                if self.stuck > 10_000 {
                    let what = format!("next_deadline stays at {t}: ticks do not advance it");
                    self.checker.report(Property::Liveness, None, "-", t, what);
                    continue;
                }
            } else {
                self.stuck = 0;
            }
            self.now = t;
            if kd.is_some_and(|d| d <= t) {
                self.step(Input::Tick);
            } else if wd.is_some_and(|d| d <= t) {
                if let Some(input) = self.world.pop_event(self.now) {
                    self.step(input);
                }
            } else if od.is_some_and(|d| d <= t) {
                if let Some((_, op)) = self.ops.pop_front() {
                    self.apply_op(op);
                }
            } else if cd.is_some_and(|d| d <= t) {
                // Only the model's own deadline: a duty may have come due with no step.
                self.checker
                    .on_time(self.now, self.sup.kernel(), &self.world);
            } else {
                // A consumer's renders are due to be fresh (property 8), with no step.
                self.fresh
                    .on_time(self.now, self.sup.kernel(), &self.world, &mut self.checker);
            }
        }
    }

    fn service_id(&self, i: u8) -> Option<(ServiceId, String)> {
        let k = self.sup.kernel();
        let n = k.views().count();
        if n == 0 {
            return None;
        }
        let slot = k.views().nth(usize::from(i) % n)?;
        Some((slot.id(), slot.config().name.clone()))
    }

    fn link_name(&self, i: u8) -> Option<String> {
        let names: Vec<&String> = self.world.links().map(|(n, _)| n).collect();
        (!names.is_empty()).then(|| names[usize::from(i) % names.len()].clone())
    }

    fn link_op(&mut self, i: u8, f: impl FnOnce(&mut Option<LinkState>)) {
        if let Some(ifname) = self.link_name(i) {
            if let Some(input) = self.world.set_link(&ifname, f) {
                self.step(input);
            }
        }
    }

    fn apply_op(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Wait(_) => {}
            Op::Crash(i) => {
                if let Some((id, _)) = self.service_id(i) {
                    self.world.crash(now, id);
                }
            }
            Op::Hang(i) => {
                if let Some((id, _)) = self.service_id(i) {
                    self.world.hang(id);
                }
            }
            Op::LinkAbsent(i) => self.link_op(i, |l| *l = None),
            Op::LinkAdminDown(i) => self.link_op(i, |l| {
                if let Some(l) = l {
                    l.admin_up = false;
                }
            }),
            Op::LinkNoCarrier(i) => self.link_op(i, |l| {
                if let Some(l) = l {
                    l.carrier = false;
                }
            }),
            Op::LinkNoAddress(i) => self.link_op(i, |l| {
                if let Some(l) = l {
                    l.ipv4 = false;
                    l.ipv6_global = false;
                }
            }),
            Op::LinkRestore(i) => self.link_op(i, |l| *l = Some(LINK_UP)),
            Op::FileChange(i) => {
                let path = PATHS[usize::from(i) % PATHS.len()];
                if self.world.watched(path) {
                    self.step(Input::FileChanged { path: path.into() });
                }
            }
            Op::Start(i) | Op::Stop(i) | Op::Restart(i) | Op::Reload(i) => {
                let Some((_, name)) = self.service_id(i) else {
                    return;
                };
                let command = match op {
                    Op::Start(_) => Operator::Start(name),
                    Op::Stop(_) => Operator::Stop(name),
                    Op::Restart(_) => Operator::Restart(name),
                    _ => Operator::Reload(name),
                };
                self.step(Input::Operator(command));
            }
            Op::Reconfigure => {
                let next = self.graph.mutate(&mut self.rng);
                let text = next.render();
                let services = next.services.iter().cloned().map(Arc::new).collect();
                self.checker.expect_config(services);
                self.fresh.set_graph(&next);
                self.timed.set_graph(&next);
                self.graph = next;
                self.step(Input::ReplaceConfig { text });
            }
            Op::ClockStep(i) => {
                let now_ms = self.now.as_millis() as i64;
                let wall = self.wall_base + now_ms;
                let to = match i % 4 {
                    0 => SIM_MONDAY + i64::from(i) * 13 * 60_000,
                    1 => wall - 3_600_000,
                    2 => wall + 5 * 3_600_000,
                    _ => 10_000,
                };
                self.wall_base = to - now_ms;
                self.step(self.wall_input());
            }
            Op::Publish(i) | Op::Renew(i) | Op::PublishPartial(i) => {
                let names: Vec<String> = self.world.outputs.publisher_names().cloned().collect();
                if names.is_empty() {
                    return;
                }
                let name = &names[usize::from(i) % names.len()];
                // A DHCP client publishes only while it runs.
                if self.world.groups_of(name) == 0 {
                    return;
                }
                let how = match op {
                    Op::Publish(_) => Publish::Change,
                    Op::Renew(_) => Publish::Renew,
                    _ => Publish::Partial,
                };
                if let Some(input) = self.world.outputs.publish(name, how) {
                    self.step(input);
                }
            }
            Op::BadConfig => {
                let text = format!(
                    "{}\n[service.broken]\nneeds = [\"nowhere\"]\n",
                    self.graph.render()
                );
                self.step(Input::ReplaceConfig { text });
            }
        }
    }

    fn failure(&self, seed: u64, opts: &Options) -> Failure {
        let violation = self.checker.violations[0].clone();
        let k = self.sup.kernel();
        if self.verbose {
            if let Some(slot) = violation.service.and_then(|id| k.status(id)) {
                let ids = slot.dependents().iter().chain(slot.successors());
                for d in ids.chain(Some(&slot.id())).filter_map(|d| k.status(*d)) {
                    eprintln!("{d:?}");
                }
            }
        }
        let (history, notes) = match violation.service {
            Some(id) => (
                k.history(id).map(|h| h.lines()).unwrap_or_default(),
                self.checker.notes(id),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let trace_path = opts.write_trace.then(|| {
            let path = std::env::temp_dir().join(format!("medic-sim-{seed}.trace"));
            match std::fs::write(&path, self.trace.to_file_bytes()) {
                Ok(()) => Some(path),
                Err(_) => None,
            }
        });
        Failure {
            seed,
            violation,
            others: self.checker.violations.clone(),
            history,
            notes,
            trace_path: trace_path.flatten(),
            trace: self.trace.clone(),
            reproduce: reproduce_command(seed, opts, self.repro_script.as_deref()),
        }
    }

    /// How long, after faults stop, every candidate may take to become healthy: per level of
    /// the graph, the longest wait the medical rules allow (backoff or settle, `retry-after`,
    /// a start and a stop timeout, a probe's failures, a memory sample, a debounce), plus slack.
    fn liveness_bound(&self) -> Duration {
        let k = self.sup.kernel();
        let mut worst = Duration::ZERO;
        for s in k.views() {
            let c = &s.config();
            let settles =
                c.on.values()
                    .filter_map(|o| o.settle)
                    .max()
                    .unwrap_or(Duration::ZERO)
                    .max(Duration::from_secs(10));
            let probe = c
                .probe
                .as_ref()
                .map(|p| (p.every + p.timeout) * (p.failures + 1))
                .unwrap_or_default();
            let level = c.max_backoff.max(settles)
                + c.retry_after.unwrap_or_default()
                + c.start_timeout
                + c.stop_timeout
                + probe
                + c.memory_every
                + c.debounce
                + Duration::from_secs(2);
            worst = worst.max(level);
        }
        let depth = self.graph.depth().max(k.views().count().min(40) as u32);
        worst * (depth + 2) + Duration::from_secs(30)
    }

    fn quiet_window(&self) -> Duration {
        let mut w = Duration::from_secs(5);
        for s in self.sup.kernel().views() {
            if let Some(p) = &s.config().probe {
                w = w.max((p.every + p.timeout) * (p.failures + 1));
            }
            if s.config().memory_max.is_some() {
                w = w.max(s.config().memory_every * 2);
            }
        }
        w * 2
    }

    /// Every candidate healthy, no watched-file change still waiting for its debounce, and
    /// no consumer's render still to come after a change of outputs (the reload or restart
    /// they bring is not a fault).
    fn all_candidates_healthy(&self) -> bool {
        let k = self.sup.kernel();
        k.views().all(|s| !s.file_change_pending())
            && self.fresh.settled()
            && self.checker.all_candidates_healthy(k)
    }

    fn report_unhealthy(&mut self, why: &str) {
        let k = self.sup.kernel();
        let bad: Vec<(ServiceId, String, String)> = self
            .checker
            .liveness_candidates(k)
            .into_iter()
            .filter_map(|id| {
                let s = k.status(id)?;
                (!s.healthy()).then(|| (id, s.config().name.clone(), s.condition().to_string()))
            })
            .collect();
        let now = self.now;
        for (id, name, condition) in bad {
            let what = format!("{why}: still {condition}");
            self.checker
                .report(Property::Liveness, Some(id), &name, now, what);
        }
    }

    /// Faults off, then liveness, then shutdown. False when a property broke.
    fn finish(&mut self) -> bool {
        // Liveness: the world is repaired; every link is back.
        self.ops.clear();
        self.world.faults_off(self.now);
        let links: Vec<String> = self.world.links().map(|(n, _)| n.clone()).collect();
        for ifname in links {
            if let Some(input) = self.world.set_link(&ifname, |l| *l = Some(LINK_UP)) {
                if !self.step(input) {
                    return false;
                }
            }
        }
        let bound = self.liveness_bound();
        let deadline = self.now + bound;
        // A service that could not become healthy (a need given up for good) may become able
        // to when that need recovers: then liveness is required of it too, in another round.
        for round in 0.. {
            match self.run_until(deadline, |s| s.all_candidates_healthy()) {
                Stop::Violated => return false,
                Stop::Reached => {
                    self.report_unhealthy(&format!(
                        "not healthy {} after faults stopped",
                        humantime_secs(bound)
                    ));
                    return false;
                }
                Stop::Condition => {}
            }
            let before = self.checker.liveness_candidates(self.sup.kernel());
            // Timed jobs run again, planned restarts happen, and late publishers' readers apply
            // `on-change`, in the quiet window too: they and what needs them are not held to
            // quiet (their own properties judge them: 8, 9 and 10).
            let timed = timed_and_downstream(self.sup.kernel());
            self.quiet = Some(
                before
                    .iter()
                    .copied()
                    .filter(|id| !timed.contains(id))
                    .collect(),
            );
            let end = self.now + self.quiet_window();
            if let Stop::Violated = self.run_until(end, |_| false) {
                return false;
            }
            self.quiet = None;
            let after = self.checker.liveness_candidates(self.sup.kernel());
            if after.iter().all(|id| before.contains(id)) || round == 8 {
                // A timed job may be in a run, or a planned restart under way, right now.
                if !timed.is_empty() {
                    let settled = self.now + bound;
                    if let Stop::Violated = self.run_until(settled, |s| s.all_candidates_healthy())
                    {
                        return false;
                    }
                }
                if !self.all_candidates_healthy() {
                    self.report_unhealthy("fell ill again with faults off");
                    return false;
                }
                break;
            }
        }
        // Services the operator stopped have no process left.
        let k = self.sup.kernel();
        let stray: Vec<(ServiceId, String)> = k
            .views()
            .filter(|s| !self.checker.wanted(s.id()) && self.world.groups_of(&s.config().name) > 0)
            .map(|s| (s.id(), s.config().name.clone()))
            .collect();
        for (id, name) in stray {
            let what = "still running long after the operator stopped it".to_string();
            self.checker
                .report(Property::OneInstance, Some(id), &name, self.now, what);
        }
        if !self.checker.violations.is_empty() {
            return false;
        }
        // Shutdown.
        if !self.step(Input::Operator(Operator::Shutdown)) {
            return false;
        }
        let k = self.sup.kernel();
        let per_level: Duration = k
            .views()
            .map(|s| s.config().stop_timeout)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(1);
        let bound = per_level * (k.views().count() as u32 + 2);
        let end = self.now + bound;
        match self.run_until(end, |s| s.world.shutdown_complete) {
            Stop::Violated => return false,
            Stop::Reached => {
                let what = format!(
                    "shutdown not complete {} after it was asked for",
                    humantime_secs(bound)
                );
                self.checker
                    .report(Property::StopOrder, None, "-", self.now, what);
                return false;
            }
            Stop::Condition => {}
        }
        let left: Vec<String> = self.world.procs().map(|(_, p)| p.name.clone()).collect();
        if !left.is_empty() {
            let what = format!("shutdown complete while {left:?} still run");
            self.checker
                .report(Property::OneInstance, None, "-", self.now, what);
            return false;
        }
        // The kernel's invariants are checked on most steps (see `Checker::after_step`): the
        // last state is checked whatever the last step was.
        self.checker
            .check_kernel_invariants(self.now, self.sup.kernel());
        self.checker.violations.is_empty()
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Ops at instants.
type Timed = Vec<(Instant, Op)>;

/// The swarm's external events for a fault phase of `length`.
fn swarm_ops(rng: &mut Rng, faults: &Faults, length: Duration) -> Timed {
    let mut ops = Vec::new();
    let end = Instant::ZERO + length;
    let family = |rng: &mut Rng,
                  every: Option<Duration>,
                  ops: &mut Timed,
                  f: &mut dyn FnMut(&mut Rng, Instant, &mut Timed)| {
        let Some(every) = every else { return };
        let mean = every.as_millis() as u64;
        let mut t = Instant::ZERO;
        loop {
            t = t + Duration::from_millis(rng.range(mean / 4, mean * 2).max(1));
            if t >= end {
                break;
            }
            f(rng, t, ops);
        }
    };
    family(rng, faults.link_every, &mut ops, &mut |rng, t, ops| {
        let i = rng.below(256) as u8;
        let op = match rng.below(5) {
            0 => Op::LinkAbsent(i),
            1 => Op::LinkAdminDown(i),
            2 => Op::LinkNoCarrier(i),
            3 => Op::LinkNoAddress(i),
            _ => {
                // Flapping: carrier on and off, each state held at least 100 ms.
                let mut at = t;
                for _ in 0..rng.range(2, 6) {
                    ops.push((at, Op::LinkNoCarrier(i)));
                    at = at + Duration::from_millis(rng.range(100, 2_000));
                    ops.push((at, Op::LinkRestore(i)));
                    at = at + Duration::from_millis(rng.range(100, 2_000));
                }
                return;
            }
        };
        ops.push((t, op));
        let held = Duration::from_millis(rng.range(500, 60_000));
        ops.push((t + held, Op::LinkRestore(i)));
    });
    family(rng, faults.crash_every, &mut ops, &mut |rng, t, ops| {
        let i = rng.below(256) as u8;
        ops.push((
            t,
            if rng.ratio(3, 4) {
                Op::Crash(i)
            } else {
                Op::Hang(i)
            },
        ));
    });
    family(rng, faults.file_every, &mut ops, &mut |rng, t, ops| {
        ops.push((t, Op::FileChange(rng.below(256) as u8)));
    });
    family(rng, faults.operator_every, &mut ops, &mut |rng, t, ops| {
        let i = rng.below(256) as u8;
        match rng.below(4) {
            0 => {
                ops.push((t, Op::Stop(i)));
                if rng.ratio(3, 4) {
                    let later = Duration::from_millis(rng.range(10, 60_000));
                    ops.push((t + later, Op::Start(i)));
                }
            }
            1 => ops.push((t, Op::Start(i))),
            2 => ops.push((t, Op::Restart(i))),
            _ => ops.push((t, Op::Reload(i))),
        }
    });
    family(
        rng,
        faults.reconfigure_every,
        &mut ops,
        &mut |rng, t, ops| {
            ops.push((
                t,
                if rng.ratio(9, 10) {
                    Op::Reconfigure
                } else {
                    Op::BadConfig
                },
            ));
        },
    );
    // Publishers: bursts of changes (a DHCP client publishes several times in a row), renews
    // that move only lifetimes, and partial maps made whole again a little later.
    let races = faults.render_races;
    family(rng, faults.publish_every, &mut ops, &mut |rng, t, ops| {
        let i = rng.below(256) as u8;
        match rng.below(4) {
            0 | 1 => {
                let mut at = t;
                for _ in 0..rng.range(1, 4) {
                    ops.push((at, Op::Publish(i)));
                    at = at + Duration::from_millis(rng.range(10, 1_500));
                }
            }
            2 => {
                if races {
                    // The address, then the lease a moment later: a render asked for the
                    // change is still in flight when the renew comes.
                    ops.push((t, Op::Publish(i)));
                    let gap = Duration::from_micros(100 + u64::from(i) * 3);
                    ops.push((t + gap, Op::Renew(i)));
                } else {
                    ops.push((t, Op::Renew(i)));
                }
            }
            _ => {
                ops.push((t, Op::PublishPartial(i)));
                let later = Duration::from_millis(rng.range(200, 5_000));
                ops.push((t + later, Op::Publish(i)));
            }
        }
    });
    // Stable: ops at the same instant keep their drawing order.
    ops.sort_by_key(|(t, _)| *t);
    ops
}

/// Runs one seed against the real kernel.
pub fn run_seed(seed: u64, opts: &Options) -> Result<Report, Box<Failure>> {
    run_with(seed, opts, None, |k| k)
}

/// Runs a scripted scenario: the graph and the processes' behaviours come from `seed`, the
/// external events from `script` (proptest shrinks the script, never the seed).
pub fn run_script(seed: u64, script: &[Op], opts: &Options) -> Result<Report, Box<Failure>> {
    run_with(seed, opts, Some(script), |k| k)
}

/// Runs one seed against any [`Supervisor`] built from the kernel (the checkers' own tests
/// use deliberately broken ones).
pub fn run_with<S: Supervisor>(
    seed: u64,
    opts: &Options,
    script: Option<&[Op]>,
    wrap: impl FnOnce(Kernel) -> S,
) -> Result<Report, Box<Failure>> {
    let mut rng = Rng::new(seed);
    let mut graph_rng = rng.fork();
    let mut graph = random_graph(&mut graph_rng, opts.max_services);
    while (graph.services.len() as u32) < opts.min_services {
        graph = random_graph(&mut graph_rng, opts.max_services);
    }
    let faults = Faults {
        publish_every: Faults::publish_every(seed),
        render_races: Faults::render_races(seed),
        ..Faults::swarm(&mut rng)
    };
    let repro = script.map(<[Op]>::to_vec);
    run_inner(seed, rng, graph, faults, opts, script, repro, wrap)
}

/// Runs a fixed config under fixed faults (golden traces, hand-written scenarios). `text` must
/// list every service after the services it needs.
pub fn run_config(
    seed: u64,
    text: &str,
    faults: Faults,
    script: &[Op],
    opts: &Options,
) -> Result<Report, Box<Failure>> {
    let config = config::parse(text, "sim.toml").unwrap_or_else(|e| panic!("bad config:\n{e}"));
    let graph = Graph::from_services(config.services.iter().map(|s| (**s).clone()).collect());
    let mut rng = Rng::new(seed);
    let _ = rng.fork();
    let _ = Faults::swarm(&mut rng);
    run_inner(seed, rng, graph, faults, opts, Some(script), None, |k| k)
}

#[allow(clippy::too_many_arguments)]
fn run_inner<S: Supervisor>(
    seed: u64,
    mut rng: Rng,
    graph: Graph,
    faults: Faults,
    opts: &Options,
    script: Option<&[Op]>,
    repro_script: Option<Vec<Op>>,
    wrap: impl FnOnce(Kernel) -> S,
) -> Result<Report, Box<Failure>> {
    let world = World::new(rng.fork(), faults.clone());
    let mut ops_rng = rng.fork();
    let (ops, fault_end) = match script {
        None => (
            swarm_ops(&mut ops_rng, &faults, opts.fault_time),
            Instant::ZERO + opts.fault_time,
        ),
        Some(script) => {
            let mut t = Instant::ZERO;
            let mut ops = Vec::new();
            for op in script {
                match op {
                    Op::Wait(ms) => t = t + Duration::from_millis(u64::from(*ms)),
                    op => ops.push((t, op.clone())),
                }
            }
            (ops, t + Duration::from_secs(1))
        }
    };
    let text = graph.render();
    let config = config::parse(&text, "sim.toml").unwrap_or_else(|e| {
        panic!("seed {seed}: the simulator rendered a bad config:\n{e}\n{text}")
    });
    let kernel = Kernel::new(config);
    let checker = Checker::new(&kernel);
    let trace = Trace::new(&text, kernel.clone());
    let services = graph.services.len();
    let mut sim = Sim {
        sup: wrap(kernel),
        world,
        checker,
        timed: TimedJobs::new(&graph),
        fresh: FreshConfig::new(&graph),
        graph,
        trace,
        now: Instant::ZERO,
        steps: 0,
        effects: Vec::new(),
        ops: ops.into(),
        wall_base: 0,
        rng: ops_rng.fork(),
        quiet: None,
        stuck: 0,
        one_instant: OneInstant::default(),
        verbose: std::env::var_os("SIM_VERBOSE").is_some(),
        repro_script,
    };
    // The initial link dump, before boot; some links start broken when link faults are on.
    let mut link_rng = rng.fork();
    let ifnames: Vec<String> = sim
        .graph
        .services
        .iter()
        .filter_map(|s| match &s.kind {
            Kind::Interface { ifname, .. } => Some(ifname.clone()),
            _ => None,
        })
        .collect();
    for ifname in ifnames {
        let state = if faults.link_every.is_some() && link_rng.ratio(1, 4) {
            *link_rng.pick(&[
                None,
                Some(LinkState {
                    admin_up: false,
                    ..LINK_UP
                }),
                Some(LinkState {
                    carrier: false,
                    ..LINK_UP
                }),
            ])
        } else {
            Some(LINK_UP)
        };
        let input = sim.world.add_link(&ifname, state);
        sim.step(input);
    }
    sim.sync_links();
    // The wall clock: a router without a battery clock boots in 1970, others with the date
    // right; now and then it is stepped (an NTP sync, a bad hand).
    sim.wall_base = if link_rng.ratio(1, 2) {
        10_000
    } else {
        SIM_MONDAY + link_rng.range(0, 7 * 24 * 3_600_000) as i64
    };
    sim.step(sim.wall_input());
    let mut steps: Vec<(Instant, Op)> = (0..link_rng.below(3))
        .map(|_| {
            let at = Instant::from_millis(link_rng.range(0, fault_end.as_millis().max(1)));
            (at, Op::ClockStep(link_rng.below(256) as u8))
        })
        .collect();
    steps.extend(sim.ops.drain(..));
    steps.sort_by_key(|(t, _)| *t);
    sim.ops = steps.into();
    let ok = match sim.run_until(fault_end, |_| false) {
        Stop::Violated => false,
        _ => sim.finish(),
    };
    if !ok {
        return Err(Box::new(sim.failure(seed, opts)));
    }
    Ok(Report {
        seed,
        steps: sim.steps,
        digest: sim.trace.digest(),
        end: sim.now,
        services,
        interventions: sim.checker.interventions,
        trace: sim.trace,
    })
}

/// Property 7 for one seed: run it twice, compare the digests, and replay the trace (through
/// its file encoding) against a fresh kernel.
pub fn check_determinism(seed: u64, opts: &Options, first: &Report) -> Result<(), String> {
    let again = run_seed(seed, opts).map_err(|f| format!("second run failed:\n{f}"))?;
    if again.digest != first.digest || again.steps != first.steps {
        return Err(format!(
            "seed {seed}: property 7 determinism: run twice, digests {:016x} ({} steps) and \
             {:016x} ({} steps)\n  reproduce: {}",
            first.digest,
            first.steps,
            again.digest,
            again.steps,
            reproduce_command(seed, opts, None)
        ));
    }
    let decoded = trace::decode(&first.trace.to_file_bytes()).map_err(|e| e.to_string())?;
    let report = trace::replay(&decoded);
    if !report.identical() || report.steps() != first.steps {
        return Err(format!(
            "seed {seed}: property 7 determinism: replay: {report}\n  reproduce: {}",
            reproduce_command(seed, opts, None)
        ));
    }
    Ok(())
}

/// 2026-11-30, a Monday, 00:00 UTC (Unix ms): the sim's trusted dates start here.
const SIM_MONDAY: i64 = 1_795_996_800_000;

/// The services with `every`, `restart-every` or `at`, or with templates (a publisher that
/// comes up late publishes, and its readers render again and apply `on-change`), and every
/// service that needs one of them, directly or not.
fn timed_and_downstream(k: &Kernel) -> BTreeSet<ServiceId> {
    let mut found: BTreeSet<ServiceId> = k
        .views()
        .filter(|v| {
            let c = v.config();
            c.every.is_some()
                || c.restart_every.is_some()
                || !c.at.is_empty()
                || !c.templates.is_empty()
        })
        .map(|v| v.id())
        .collect();
    let mut todo: Vec<ServiceId> = found.iter().copied().collect();
    while let Some(id) = todo.pop() {
        if let Some(v) = k.status(id) {
            for d in v.dependents() {
                if found.insert(*d) {
                    todo.push(*d);
                }
            }
        }
    }
    found
}
