//! Kernel throughput: inputs per second through `Kernel::step` for graphs of 10, 100 and 1000
//! services, with a mix of crashes, spawns, readiness, probe results, memory samples and ticks.
//!
//! Run: `cargo bench -p medic-sim --bench kernel-throughput` (prints a table). The time measured
//! includes the small driver that answers effects, so the kernel's own cost is lower still.
//! The graph is made of clusters of ten services with random needs inside each cluster, and
//! the clock advances so that each tick finds the same number of due timers at every size:
//! what is compared is the cost of one input, which must not grow with the graph.
//! `BENCH_NO_CRASH=1` leaves crashes out of the mix; `BENCH_INPUTS=N` sets the inputs per run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant as WallClock;

use medic_kernel::config::parse;
use medic_kernel::{CheckResult, Effect, ExitStatus, Input, Instant, JobId, Kernel, ServiceId};
use medic_sim::rng::Rng;

fn config_text(services: usize, rng: &mut Rng) -> String {
    let mut text = String::new();
    for i in 0..services {
        writeln!(text, "[service.s{i}]\nrun = [\"/bin/s{i}\"]").unwrap();
        writeln!(text, "give-up-after = 1000000\nmax-backoff = \"50ms\"").unwrap();
        // Needs within clusters of ten, as on a real device (a few short chains per link),
        // so that a crash touches a bounded set of dependents whatever the graph's size.
        let base = i - i % 10;
        if i > base {
            let mut needs = Vec::new();
            for _ in 0..rng.below(3) {
                let n = base as u64 + rng.below((i - base) as u64);
                if !needs.contains(&n) {
                    needs.push(n);
                }
            }
            let needs: Vec<String> = needs.iter().map(|n| format!("\"s{n}\"")).collect();
            writeln!(text, "needs = [{}]", needs.join(", ")).unwrap();
        }
        if i % 3 == 0 {
            writeln!(text, "probe = {{ run = [\"/bin/p\"], every = \"1s\" }}").unwrap();
        }
        if i % 5 == 0 {
            writeln!(text, "memory-max = \"48MiB\"").unwrap();
        }
    }
    text
}

struct Driver {
    kernel: Kernel,
    now: Instant,
    running: BTreeMap<ServiceId, JobId>,
    checks: BTreeMap<ServiceId, JobId>,
    pending: Vec<Input>,
    out: Vec<Effect>,
    steps: u64,
}

impl Driver {
    fn step(&mut self, input: Input) {
        self.kernel.step(self.now, input, &mut self.out);
        self.steps += 1;
        for effect in self.out.drain(..) {
            match effect {
                Effect::Spawn { service, job, .. } => {
                    self.running.insert(service, job);
                    self.pending.push(Input::Spawned {
                        service,
                        job,
                        pid: job.0 as u32,
                    });
                }
                Effect::Signal { service, job, .. } | Effect::Kill { service, job }
                    if self.running.get(&service) == Some(&job) =>
                {
                    self.running.remove(&service);
                    self.pending.push(Input::Exited {
                        service,
                        job,
                        status: ExitStatus::Signal(15),
                    });
                }
                Effect::Check { service, job, .. } => {
                    self.checks.insert(service, job);
                }
                _ => {}
            }
        }
        while let Some(input) = self.pending.pop() {
            self.step(input);
        }
    }
}

fn run(services: usize, inputs: u64, crashes: bool) -> (u64, f64) {
    let mut rng = Rng::new(services as u64);
    let config = parse(&config_text(services, &mut rng), "bench.toml").expect("bench config");
    let mut d = Driver {
        kernel: Kernel::new(config),
        now: Instant::ZERO,
        running: BTreeMap::new(),
        checks: BTreeMap::new(),
        pending: Vec::new(),
        out: Vec::with_capacity(64),
        steps: 0,
    };
    d.step(Input::Tick);
    let start = WallClock::now();
    let first = d.steps;
    while d.steps - first < inputs {
        let service = ServiceId(rng.below(services as u64) as u32);
        match rng.below(10) {
            0..=3 => {
                if let Some(job) = d.checks.remove(&service) {
                    let result = if rng.below(20) == 0 {
                        CheckResult::TimedOut
                    } else {
                        CheckResult::Ok
                    };
                    d.step(Input::CheckDone {
                        service,
                        job,
                        result,
                    });
                } else {
                    d.step(Input::ReadyNotified {
                        service,
                        job: JobId(0),
                    });
                }
            }
            4 if crashes => {
                if let Some(job) = d.running.remove(&service) {
                    d.step(Input::Exited {
                        service,
                        job,
                        status: ExitStatus::Code(1),
                    });
                }
            }
            5..=6 => {
                if let Some(&job) = d.running.get(&service) {
                    d.step(Input::MemorySampled {
                        service,
                        job,
                        rss_bytes: 1 << 20,
                        total_bytes: 1 << 30,
                    });
                }
            }
            _ => {
                // Time runs so that the timers due per tick stay the same at every size.
                d.now = Instant(d.now.0 + 10_000_000 * 10 / services as u64);
                d.step(Input::Tick);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let steps = d.steps - first;
    (steps, steps as f64 / elapsed)
}

fn main() {
    let inputs: u64 = std::env::var("BENCH_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    println!("| services | inputs | inputs/s (median of 5) | ns/input |");
    println!("|---:|---:|---:|---:|");
    for services in [10, 100, 1000] {
        let crashes = std::env::var("BENCH_NO_CRASH").is_err();
        let mut rates: Vec<f64> = (0..5).map(|_| run(services, inputs, crashes).1).collect();
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = rates[2];
        println!(
            "| {services} | {inputs} | {:.2} M | {:.0} |",
            median / 1e6,
            1e9 / median
        );
    }
}
