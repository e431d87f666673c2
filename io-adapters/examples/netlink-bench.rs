//! netlink-bench: how long from a link change in the kernel to medic knowing, and deciding.
//!
//! ```text
//! sudo cargo run --release -p medic-io --example netlink-bench [-- FLAPS]   (default 200)
//! ```
//!
//! Inside a throw-away network namespace, a veth pair `wan` ⇄ `wanpeer`; the bench sets
//! `wanpeer` down and up FLAPS times through netlink (`netlink::link_set`), on the same
//! current-thread tokio runtime as the watcher (as in the daemon). Each flap measures, from just before the
//! request is sent:
//! * until `netlink::watch` has delivered `Input::LinkChanged { wan, carrier }`;
//! * until the kernel (`medic_kernel::Kernel`, fed that input at once) has emitted the stop of
//!   the dependent (`needs = ["wan"]`, `stop-when-needs-fail = true`) for carrier lost, or its
//!   start for carrier back. The dependent's process is simulated (answered at once), so this
//!   is the adapter plus the kernel's decision, without a real process.
//!
//! Prints median, p90, p99 and max. Target (architecture.md §8): < 10 ms. Needs root.

use std::process::Command;
use std::time::{Duration, Instant as StdInstant};

use medic_io::netlink;
use medic_kernel::{Effect, ExitStatus, Input, Instant, Kernel, ServiceId};
use tokio::sync::mpsc::Receiver;

const CONFIG: &str = r#"
[service.wan]
interface = "wan"
ready-when = "carrier"

[service.tunnel]
run = ["/bin/true"]
needs = ["wan"]
stop-when-needs-fail = true
"#;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(ns: &str, args: &[&str]) {
    let status = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .status()
        .expect("run ip");
    assert!(status.success(), "ip -n {ns} {}", args.join(" "));
}

fn main() {
    let flaps: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().expect("usage: netlink-bench [FLAPS]"),
        None => 200,
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("netlink-bench: needs root (network namespaces)");
        std::process::exit(2);
    }
    let ns = Netns(format!("medic-bench-{}", std::process::id()));
    let status = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .expect("run ip");
    assert!(status.success(), "ip netns add {}", ns.0);
    ip(
        &ns.0,
        &[
            "link", "add", "wan", "type", "veth", "peer", "name", "wanpeer",
        ],
    );
    ip(&ns.0, &["link", "set", "wanpeer", "up"]);
    ip(&ns.0, &["link", "set", "wan", "up"]);

    let name = ns.0.clone();
    let results = std::thread::spawn(move || {
        enter(&name);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(bench(flaps))
    })
    .join()
    .expect("bench thread");

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "netlink-bench: {flaps} flaps of a veth peer in netns {} (Linux {})",
        ns.0,
        kernel.trim()
    );
    println!(
        "{:<44} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "from the netlink request", "n", "median", "p90", "p99", "max"
    );
    for (label, samples) in &results {
        row(label, samples);
    }
    println!(
        "target (architecture.md §8): netlink link change -> dependents blocked/stopped < 10 ms"
    );
}

fn enter(ns: &str) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
    // SAFETY: a valid namespace fd; CLONE_NEWNET changes only this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

fn row(label: &str, samples: &[Duration]) {
    let mut s = samples.to_vec();
    s.sort();
    if s.is_empty() {
        println!("{label:<44} {:>5}", 0);
        return;
    }
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
    println!(
        "{label:<44} {:>5} {:>9} {:>9} {:>9} {:>9}",
        s.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(s[s.len() - 1])
    );
}

/// The kernel, driven the way the daemon drives it, with the dependent's process simulated.
struct Driver {
    kernel: Kernel,
    origin: StdInstant,
    effects: Vec<Effect>,
    next_pid: u32,
}

impl Driver {
    fn now(&self) -> Instant {
        Instant(self.origin.elapsed().as_nanos() as u64)
    }

    /// Step one input and answer every effect of a simulated process at once; returns whether
    /// `service` was started (`Some(true)`) or stopped (`Some(false)`) by that input.
    fn step(&mut self, input: Input, service: ServiceId) -> Option<bool> {
        let mut queue = vec![input];
        let mut decided = None;
        while let Some(input) = queue.pop() {
            let now = self.now();
            self.kernel.step(now, input, &mut self.effects);
            for effect in self.effects.drain(..) {
                match effect {
                    Effect::Spawn {
                        service: s, job, ..
                    } => {
                        if s == service && decided.is_none() {
                            decided = Some(true);
                        }
                        self.next_pid += 1;
                        let pid = self.next_pid;
                        queue.push(Input::Spawned {
                            service: s,
                            job,
                            pid,
                        });
                    }
                    Effect::Signal {
                        service: s, job, ..
                    }
                    | Effect::Kill { service: s, job } => {
                        if s == service && decided.is_none() {
                            decided = Some(false);
                        }
                        queue.push(Input::Exited {
                            service: s,
                            job,
                            status: ExitStatus::Signal(libc::SIGTERM),
                        });
                    }
                    _ => {}
                }
            }
        }
        decided
    }

    /// Tick if a deadline has passed.
    fn tick_if_due(&mut self, service: ServiceId) {
        if self.kernel.next_deadline().is_some_and(|d| d <= self.now()) {
            self.step(Input::Tick, service);
        }
    }

    fn condition(&self, service: ServiceId) -> String {
        let view = self.kernel.status(service).expect("service");
        format!("{:?}", view.condition())
    }
}

async fn next_link(rx: &mut Receiver<Input>, d: &mut Driver, service: ServiceId) -> Input {
    loop {
        let wait = match d.kernel.next_deadline() {
            Some(at) => at.saturating_since(d.now()),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            input = rx.recv() => return input.expect("watcher stopped"),
            () = tokio::time::sleep(wait) => d.tick_if_due(service),
        }
    }
}

async fn bench(flaps: usize) -> Vec<(String, Vec<Duration>)> {
    let config = medic_kernel::config::parse(CONFIG, "netlink-bench.toml").expect("config");
    let mut d = Driver {
        kernel: Kernel::new(config),
        origin: StdInstant::now(),
        effects: Vec::new(),
        next_pid: 1000,
    };
    let tunnel = d.kernel.lookup("tunnel").expect("tunnel");

    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let _watcher = netlink::watch(tx).await.expect("netlink::watch");
    while let Ok(input) = rx.try_recv() {
        d.step(input, tunnel);
    }
    d.step(Input::Tick, tunnel); // boot
    assert_eq!(d.condition(tunnel), "Ready", "the dependent did not start");

    let mut delivered = [Vec::new(), Vec::new()];
    let mut decided = [Vec::new(), Vec::new()];
    let mut undecided = [0usize, 0usize];
    for i in 0..flaps * 2 {
        let up = i % 2 == 1;
        // Let pending timers (settle, backoff) fire first, as they would in the daemon.
        tokio::time::sleep(Duration::from_millis(2)).await;
        d.tick_if_due(tunnel);
        let start = StdInstant::now();
        let request = tokio::spawn(netlink::link_set("wanpeer", up));
        loop {
            let input = next_link(&mut rx, &mut d, tunnel).await;
            let seen = start.elapsed();
            let ours = matches!(&input,
                Input::LinkChanged { ifname, link: Some(l) } if ifname == "wan" && l.carrier == up);
            let outcome = d.step(input, tunnel);
            if ours {
                delivered[up as usize].push(seen);
                match outcome {
                    Some(started) if started == up => decided[up as usize].push(start.elapsed()),
                    _ => undecided[up as usize] += 1,
                }
                break;
            }
        }
        request.await.expect("join").expect("set wanpeer");
    }
    let mut out = vec![
        (
            "carrier lost -> Input delivered".to_string(),
            delivered[0].clone(),
        ),
        (
            "carrier back -> Input delivered".to_string(),
            delivered[1].clone(),
        ),
        (
            "carrier lost -> kernel stops dependent".to_string(),
            decided[0].clone(),
        ),
        (
            "carrier back -> kernel starts dependent".to_string(),
            decided[1].clone(),
        ),
    ];
    for (label, n) in [("lost", undecided[0]), ("back", undecided[1])] {
        if n > 0 {
            out.push((
                format!("carrier {label}: kernel decided later ({n}x)"),
                Vec::new(),
            ));
        }
    }
    out
}
