//! What the work the loop does on a few occasions costs here, to compare with the daemon's
//! budget (`cargo run --release -p medic-io --example loop-costs`):
//!
//! * a memory sample of one service: its own processes vs a scan of every process in /proc;
//! * the sweep after an exit (runs after the round of inputs, off the restart's path);
//! * the kernel's parse and validation of a 5,000-service config (done on SIGHUP, on the loop,
//!   once the file has been read off it).

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let procs = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    let mut leader = std::process::Command::new("sh")
        .args(["-c", "sleep 60 & sleep 60 & wait"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = leader.id();
    std::thread::sleep(Duration::from_millis(100));
    let own = time(200, || medic_io::process::group_rss_bytes(pgid));
    let full = time(50, || {
        let mut sum = 0u64;
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(s) = medic_io::process::read_stat(pid) {
                if s.pgrp == pgid || s.session == pgid {
                    sum += s.rss_pages;
                }
            }
        }
        sum
    });
    println!("processes in /proc: {procs}");
    println!("memory sample, the group's own processes: {own:?} (median of 200)");
    println!("memory sample, every process in /proc:     {full:?} (median of 50)");
    let _ = medic_io::process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = leader.wait();
    let sweep = time(20, || {
        medic_io::process::sweep(4_000_000, "no.such.instance", false)
    });
    println!("sweep of a gone group (reads every process's stat, the daemon's descendants' environ): {sweep:?} (median of 20)");

    let mut config = String::new();
    for i in 0..5000 {
        let needs = if i > 0 {
            format!("needs = [\"s{}\"]\n", i - 1)
        } else {
            String::new()
        };
        config.push_str(&format!(
            "[service.s{i}]\nrun = [\"/bin/sleep\", \"1000\"]\n{needs}probe = {{ tcp = \"127.0.0.1:{}\", every = \"10s\" }}\n\n",
            1000 + i % 60000
        ));
    }
    let parse = time(3, || {
        medic_kernel::config::parse(&config, "config").map(|c| c.services.len())
    });
    println!(
        "kernel parse + validation of a 5,000-service config ({} KiB): {parse:?} (median of 3)",
        config.len() / 1024
    );
}
