//! Prints how fast the simulator runs: one-hour, 20-service fault scenarios per second, and
//! kernel steps per second. `cargo run -p medic-sim --release --bin sim-bench [SCENARIOS]`.

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
    println!("| what | value |");
    println!("|---|---|");
    println!("| scenarios (1 h faults, 20 services, one core) | {scenarios} |");
    println!("| failed | {failed} |");
    println!("| wall time | {secs:.2} s |");
    println!("| scenarios/s | {:.1} |", scenarios as f64 / secs);
    println!("| kernel steps | {steps} |");
    println!("| steps/s | {:.0} |", steps as f64 / secs);
    println!("| steps per scenario | {} |", steps / scenarios.max(1));
}
