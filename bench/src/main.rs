//! `medic-bench`: measures the daemon against the targets of architecture.md §8 and prints a table.
//!
//! ```text
//! cargo build --release -p medic -p medic-bench && target/release/medic-bench
//! ```
//!
//! It runs the `medic` binary beside it (`target/release/medic`) on generated configs in a
//! temporary directory. Its own executable doubles as the services: `medic-bench stamp FILE`
//! and friends write `CLOCK_MONOTONIC` (system-wide, so comparable across processes) when they
//! start, become ready or receive SIGHUP.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("stamp") => service_stamp(&args[2]),
        Some("ready-after") => service_ready_after(&args[2], args.get(3), args.get(4).is_some()),
        Some("hup-stamp") => service_hup_stamp(&args[2]),
        // One row only: `medic-bench output-set`.
        Some("output-set") => {
            let dir = std::env::temp_dir().join(format!("medic-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut out = String::new();
            bench_output_set(&dir, &mut out);
            let _ = std::fs::remove_dir_all(&dir);
            print!("{out}");
        }
        _ => run_benchmarks(),
    }
}

// ----- the services ----------------------------------------------------------------------------

/// Nanoseconds of CLOCK_MONOTONIC.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn append(path: &str, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("stamp file");
    // One write(2) of the whole line: with O_APPEND, lines of concurrent writers never mix.
    let _ = f.write_all(format!("{line}\n").as_bytes());
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Writes `PID NS` at start, then sleeps.
fn service_stamp(file: &str) -> ! {
    append(file, &format!("{} {}", std::process::id(), mono_ns()));
    sleep_forever()
}

/// Sleeps MS, writes a newline to fd 3 (notify-fd readiness) and `NS` to FILE, then sleeps
/// (or exits with `--exit`).
fn service_ready_after(ms: &str, file: Option<&String>, exit: bool) {
    std::thread::sleep(Duration::from_millis(ms.parse().expect("milliseconds")));
    if let Some(file) = file.filter(|f| !f.is_empty()) {
        append(file, &mono_ns().to_string());
    }
    if !exit {
        // SAFETY: writing one byte to fd 3, which may not be open (then nothing happens).
        unsafe { libc::write(3, b"\n".as_ptr().cast(), 1) };
        sleep_forever();
    }
}

/// Appends `NS` to FILE on every SIGHUP.
fn service_hup_stamp(file: &str) -> ! {
    // SAFETY: blocking SIGHUP and waiting for it with sigwait; plain libc calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        append(file, "ready");
        loop {
            let mut sig = 0;
            if libc::sigwait(&set, &mut sig) == 0 {
                append(file, &mono_ns().to_string());
            }
        }
    }
}

// ----- the harness -----------------------------------------------------------------------------

struct Daemon {
    child: Child,
    state: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, config: &str) -> Daemon {
        let path = dir.join("medic.toml");
        std::fs::write(&path, config).expect("config");
        let state = dir.join("state");
        let mut cmd = Command::new(sibling("medic"));
        cmd.args(["daemon", "-c"])
            .arg(&path)
            .arg("--state-dir")
            .arg(&state)
            .env("MEDIC_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The daemon dies with the bench, even when the bench panics (panic = abort).
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("medic daemon");
        Daemon { child, state }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.state);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe.with_file_name(name);
    assert!(
        bin.exists(),
        "{} missing: cargo build --release -p medic -p medic-bench",
        bin.display()
    );
    bin
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// The complete lines of a stamp file (a line being written is left out).
fn lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete.lines().map(str::to_string).collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Kills the process recorded last in `stamps` N times; each time measures from the kill to
/// the replacement's first instruction (its stamp).
fn kill_respawn_samples(stamps: &Path, n: usize) -> Vec<f64> {
    let mut samples = Vec::new();
    for _ in 0..n {
        let last = wait_until("a stamp", Duration::from_secs(10), || {
            lines(stamps).last().cloned()
        });
        let pid: i32 = last.split(' ').next().unwrap().parse().unwrap();
        let count = lines(stamps).len();
        std::thread::sleep(Duration::from_millis(30));
        let t0 = mono_ns();
        // SAFETY: killing the service process we are measuring.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let next = wait_until("the replacement", Duration::from_secs(10), || {
            let l = lines(stamps);
            (l.len() > count).then(|| l[count].clone())
        });
        let t1: u64 = next.split(' ').nth(1).unwrap().parse().unwrap();
        samples.push(ms(t1.saturating_sub(t0)));
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples
}

fn bench_kill_restart(dir: &Path, out: &mut String) {
    let me = std::env::current_exe().unwrap();
    let stamps = dir.join("restart.stamps");
    let config = format!(
        r#"
[service.victim]
run = ["{me}", "stamp", "{stamps}"]
give-up-after = 1000
max-backoff = "1ms"
[service.victim.on.exited]
settle = "1ms"
"#,
        me = me.display(),
        stamps = stamps.display()
    );
    let d = Daemon::start(dir, &config);
    let medic = kill_respawn_samples(&stamps, 40);
    drop(d);
    let shell_stamps = dir.join("shell.stamps");
    let mut shell = Command::new("/bin/sh")
        .process_group(0)
        .arg("-c")
        .arg(format!(
            "while :; do '{}' stamp '{}'; done",
            me.display(),
            shell_stamps.display()
        ))
        .spawn()
        .expect("sh");
    let sh = kill_respawn_samples(&shell_stamps, 40);
    // SAFETY: SIGKILL to the process group of the shell we started (it and its child).
    unsafe { libc::kill(-(shell.id() as i32), libc::SIGKILL) };
    let _ = shell.wait();
    writeln!(
        out,
        "| kill -9 → replacement exec'd | median {:.2} ms, p90 {:.2} ms | bare `sh` respawn loop: median {:.2} ms, p90 {:.2} ms (ratio {:.2}) | median < 5 ms, ≤ 1.2 × shell |",
        percentile(&medic, 0.5),
        percentile(&medic, 0.9),
        percentile(&sh, 0.5),
        percentile(&sh, 0.9),
        percentile(&medic, 0.5) / percentile(&sh, 0.5)
    )
    .unwrap();
}

fn bench_chain(dir: &Path, out: &mut String) {
    let me = std::env::current_exe().unwrap();
    let stamps = dir.join("chain.stamps");
    let mut config = String::new();
    for i in 0..10 {
        let needs = if i == 0 {
            String::new()
        } else {
            format!("needs = [\"s{}\"]\n", i - 1)
        };
        writeln!(
            config,
            "[service.s{i}]\nrun = [\"{}\", \"ready-after\", \"100\", \"{}\"]\nready = {{ notify-fd = 3 }}\n{needs}",
            me.display(),
            stamps.display()
        )
        .unwrap();
    }
    let t0 = mono_ns();
    let d = Daemon::start(dir, &config);
    let last = wait_until("the chain", Duration::from_secs(30), || {
        let l = lines(&stamps);
        (l.len() >= 10).then(|| l[9].parse::<u64>().unwrap())
    });
    let medic = ms(last - t0);
    drop(d);
    let script: String = (0..10)
        .map(|_| format!("'{}' ready-after 100 '' exit; ", me.display()))
        .collect();
    let t0 = Instant::now();
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .status()
        .expect("sh");
    let shell = t0.elapsed().as_secs_f64() * 1000.0;
    writeln!(
        out,
        "| boot: chain of 10, each ready 100 ms after start | {medic:.1} ms | same ten run one after another by `sh`: {shell:.1} ms (ratio {:.3}) | ≤ 1.02 × shell |",
        medic / shell
    )
    .unwrap();
}

/// A small xorshift generator, so the DAG is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn dag_config(dir: &Path, n: usize, stamps: &Path) -> (String, u64) {
    let me = std::env::current_exe().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut config = String::new();
    let mut finish = vec![0u64; n];
    for i in 0..n {
        let delay = 10 + rng.next() % 41; // 10..=50 ms
        let mut needs = Vec::new();
        if i > 0 {
            for _ in 0..(rng.next() % 3) {
                let j = (rng.next() % i as u64) as usize;
                if !needs.contains(&j) {
                    needs.push(j);
                }
            }
        }
        let start = needs.iter().map(|&j| finish[j]).max().unwrap_or(0);
        finish[i] = start + delay;
        let needs: Vec<String> = needs.iter().map(|j| format!("\"d{j}\"")).collect();
        writeln!(
            config,
            "[service.d{i}]\nrun = [\"{}\", \"ready-after\", \"{delay}\", \"{}\"]\nready = {{ notify-fd = 3 }}\nneeds = [{}]\n",
            me.display(),
            stamps.display(),
            needs.join(", ")
        )
        .unwrap();
    }
    let _ = dir;
    (config, finish.into_iter().max().unwrap_or(0))
}

fn bench_dag(dir: &Path, out: &mut String) -> Option<u64> {
    let stamps = dir.join("dag.stamps");
    let (config, critical_ms) = dag_config(dir, 100, &stamps);
    let t0 = mono_ns();
    let d = Daemon::start(dir, &config);
    let last = wait_until("the DAG", Duration::from_secs(60), || {
        let l = lines(&stamps);
        (l.len() >= 100).then(|| {
            l.iter()
                .filter_map(|s| s.parse::<u64>().ok())
                .max()
                .unwrap_or(0)
        })
    });
    let medic = ms(last - t0);
    std::thread::sleep(Duration::from_millis(300));
    let rss = rss_kib(d.pid());
    drop(d);
    writeln!(
        out,
        "| boot: 100 services in a random DAG (each ready 10–50 ms after start) | {medic:.1} ms | critical path {critical_ms} ms (+{:.1} ms) | critical path + < 50 ms |",
        medic - critical_ms as f64
    )
    .unwrap();
    rss
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 20 times: `act(i)`, then the time until the next SIGHUP stamp in `stamps`, less the 10 ms
/// debounce both reload benchmarks use; sorted.
fn hup_samples(stamps: &Path, mut act: impl FnMut(usize)) -> Vec<f64> {
    let mut samples = Vec::new();
    for i in 0..20 {
        let count = lines(stamps).len();
        let t0 = mono_ns();
        act(i);
        let t1: u64 = wait_until("the SIGHUP", Duration::from_secs(10), || {
            let l = lines(stamps);
            (l.len() > count).then(|| l[count].parse().unwrap())
        });
        samples.push(ms(t1 - t0) - 10.0);
        // Apart, so that the next change is not folded into this one's debounce.
        std::thread::sleep(Duration::from_millis(50));
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples
}

fn bench_reload(dir: &Path, out: &mut String) {
    let me = std::env::current_exe().unwrap();
    let stamps = dir.join("hup.stamps");
    let watched = dir.join("watched.conf");
    let config = format!(
        r#"
[service.reloader]
run = ["{me}", "hup-stamp", "{stamps}"]
reload = {{ signal = "HUP" }}
reload-on = ["{watched}"]
debounce = "10ms"
"#,
        me = me.display(),
        stamps = stamps.display(),
        watched = watched.display()
    );
    let d = Daemon::start(dir, &config);
    wait_until("the reloader", Duration::from_secs(10), || {
        lines(&stamps).first().cloned()
    });
    std::thread::sleep(Duration::from_millis(200));
    let samples = hup_samples(&stamps, |i| {
        std::fs::write(&watched, format!("generation {i}\n")).unwrap();
    });
    drop(d);
    writeln!(
        out,
        "| watched file written → SIGHUP delivered, minus the 10 ms debounce | median {:.2} ms, p90 {:.2} ms | | debounce + < 10 ms |",
        percentile(&samples, 0.5),
        percentile(&samples, 0.9)
    )
    .unwrap();
}

/// `medic output set` (the whole command, as a DHCP hook runs it) → the consumer's template
/// rendered and its reload signal delivered, less the consumer's 10 ms debounce.
fn bench_output_set(dir: &Path, out: &mut String) {
    let me = std::env::current_exe().unwrap();
    let stamps = dir.join("render.stamps");
    let config = format!(
        r#"
[service.dhcp]
run = ["sleep", "100000"]

[service.consumer]
run = ["{me}", "hup-stamp", "{stamps}"]
uses = ["dhcp"]
reload = {{ signal = "HUP" }}
[[service.consumer.template]]
text = "prefix {{{{ dhcp.prefix }}}}\n"
target = "{target}"
debounce = "10ms"
"#,
        me = me.display(),
        stamps = stamps.display(),
        target = dir.join("consumer.conf").display(),
    );
    let d = Daemon::start(dir, &config);
    let set = |prefix: String| {
        Command::new(sibling("medic"))
            .args(["output", "set", "dhcp"])
            .arg(format!("prefix={prefix}"))
            .env("MEDIC_STATE_DIR", &d.state)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // The consumer waits for a prefix to render: the first one starts it.
    wait_until(
        "the daemon to take outputs",
        Duration::from_secs(10),
        || set("2001:db8::/56".into()).then_some(()),
    );
    wait_until("the consumer", Duration::from_secs(10), || {
        lines(&stamps).first().cloned()
    });
    std::thread::sleep(Duration::from_millis(200));
    let samples = hup_samples(&stamps, |i| {
        assert!(
            set(format!("2001:db8:{:x}00::/56", i + 1)),
            "medic output set"
        );
    });
    drop(d);
    writeln!(
        out,
        "| `medic output set` → template rendered → SIGHUP delivered, minus the 10 ms debounce | median {:.2} ms, p90 {:.2} ms | | debounce + < 10 ms |",
        percentile(&samples, 0.5),
        percentile(&samples, 0.9)
    )
    .unwrap();
}

fn bench_idle(dir: &Path, out: &mut String) {
    let mut config = String::new();
    for i in 0..10 {
        writeln!(
            config,
            "[service.idle{i}]\nrun = [\"/bin/sleep\", \"1000\"]\n"
        )
        .unwrap();
    }
    let d = Daemon::start(dir, &config);
    std::thread::sleep(Duration::from_secs(1));
    let trace = dir.join("strace.out");
    let errors = dir.join("strace.err");
    let status = Command::new("timeout")
        .args(["-s", "INT", "10", "strace", "-c", "-f", "-o"])
        .arg(&trace)
        .arg("-p")
        .arg(d.pid().to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errors).expect("strace.err"))
        .status();
    drop(d);
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let attached = std::fs::read_to_string(&errors)
        .unwrap_or_default()
        .contains("attached");
    // strace -c prints no table at all when it saw no system call.
    let calls = text
        .lines()
        .find(|l| l.contains("total"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|c| c.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let result = match status {
        Ok(_) if !attached => "strace could not attach".to_string(),
        Ok(_) => format!("{calls} syscalls"),
        Err(e) => format!("strace failed: {e}"),
    };
    writeln!(
        out,
        "| idle 10 s, 10 services, no probes (`strace -c -f`) | {result} | | no wake-ups at all |"
    )
    .unwrap();
}

fn run_benchmarks() {
    let dir = std::env::temp_dir().join(format!("medic-bench-{}", std::process::id()));
    let sub = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let mut out = String::new();
    writeln!(
        out,
        "| what | medic | comparison | target (architecture.md §8) |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|").unwrap();
    bench_kill_restart(&sub("restart"), &mut out);
    bench_chain(&sub("chain"), &mut out);
    let rss = bench_dag(&sub("dag"), &mut out);
    bench_reload(&sub("reload"), &mut out);
    bench_output_set(&sub("output-set"), &mut out);
    bench_idle(&sub("idle"), &mut out);
    match rss {
        Some(kib) => writeln!(
            out,
            "| daemon RSS with 100 services | {:.2} MiB | | < 4 MiB (glibc) |",
            kib as f64 / 1024.0
        )
        .unwrap(),
        None => writeln!(
            out,
            "| daemon RSS with 100 services | unknown | | < 4 MiB (glibc) |"
        )
        .unwrap(),
    }
    let size = std::fs::metadata(sibling("medic"))
        .map(|m| m.len())
        .unwrap_or(0);
    writeln!(
        out,
        "| `medic` binary (release profile: opt-level z, LTO, stripped) | {:.2} MiB | | < 2 MiB |",
        size as f64 / 1024.0 / 1024.0
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    print!("{out}");
}
