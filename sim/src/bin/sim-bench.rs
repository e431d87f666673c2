//! Prints how fast the simulator runs: one-hour, 20-service fault scenarios per second, and
//! kernel steps per second, by the wall clock and by the CPU time the process was given (on a
//! shared machine the second is the one to compare).
//! `cargo run --profile bench -p medic-sim --bin sim-bench [SCENARIOS]`.

use std::time::{Duration, Instant};

use medic_sim::{run_seed, Options};

fn main() {
    let scenarios: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let opts = Options {
        min_services: 20,
        max_services: 20,
        fault_time: Duration::from_secs(3600),
        write_trace: false,
        ..Options::default()
    };
    let cpu_started = cpu_time();
    let started = Instant::now();
    let (mut steps, mut failed) = (0u64, 0u64);
    for seed in 0..scenarios {
        match run_seed(seed, &opts) {
            Ok(r) => steps += r.steps,
            Err(f) => {
                failed += 1;
                eprintln!("{f}");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_time().zip(cpu_started).map(|(end, start)| end - start);
    println!("| what | value |");
    println!("|---|---|");
    println!("| scenarios (1 h faults, 20 services, one core) | {scenarios} |");
    println!("| failed | {failed} |");
    println!("| wall time | {secs:.2} s |");
    println!("| scenarios/s | {:.1} |", scenarios as f64 / secs);
    println!("| kernel steps | {steps} |");
    println!("| steps/s | {:.0} |", steps as f64 / secs);
    println!("| steps per scenario | {} |", steps / scenarios.max(1));
    if let Some(cpu) = cpu {
        let cpu = cpu.as_secs_f64();
        println!("| CPU time | {cpu:.2} s |");
        println!(
            "| scenarios per CPU-second | {:.1} |",
            scenarios as f64 / cpu
        );
        println!("| steps per CPU-second | {:.0} |", steps as f64 / cpu);
    }
}

/// The CPU time this process has run for (Linux: `/proc/self/schedstat`).
fn cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}
