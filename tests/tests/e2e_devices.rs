//! Device services end to end (DESIGN §12): real kernel uevents from a veth network device
//! added and deleted in a throw-away network namespace, a daemon in that namespace, and a
//! service that needs the device.
//!
//! The daemon runs inside the namespace because the kernel sends the uevents of a network
//! device only to uevent sockets of the device's own namespace. Needs root (a skip otherwise,
//! a failure under `CI`).
//!
//! The latency figure (uevent → dependent started, median and p90 over 20 runs) is printed by
//! `cargo test -p medic-tests --test e2e_devices -- --ignored --nocapture`.

mod netns_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medic_tests::{wait_for, Daemon};
use netns_common::Netns;

const CONFIG: &str = r#"
[service.stick]
device = { subsystem = "net", name = "medtest*" }

[service.user]
run = ["/bin/sh", "-c", "date +%s%N >> @DIR@/starts; exec sleep 1000"]
needs = ["stick"]
stop-when-needs-fail = true
"#;

fn start(ns: &Netns) -> Daemon {
    ns.run(|| Daemon::start(CONFIG))
}

/// The instants (ns since 1970) at which `user` was started.
fn starts(d: &Daemon) -> Vec<u128> {
    d.read("starts")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A veth pair `NAME` ⇄ `peer-NAME` (the kernel here may lack the dummy driver; veth is
/// always there where namespaces are): two net devices, of which only `NAME` matches.
fn add(ns: &Netns, name: &str) {
    let peer = name.replace("medtest", "medpeer");
    ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
}

/// Waits until `user` has written its start line `n` times (it is `ready` once spawned,
/// maybe before its shell has written).
fn wait_started(d: &Daemon, n: usize) {
    wait_for(
        &format!("{n} starts of user"),
        || (starts(d).len() == n).then_some(()),
        || d.describe("user"),
    );
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos()
}

#[test]
fn a_service_that_needs_a_device_starts_when_it_appears_and_stops_when_it_goes() {
    let Some(ns) = Netns::new("dev") else { return };
    let d = start(&ns);
    d.wait_condition("stick", "absent");
    assert_eq!(d.condition("user"), "waiting");

    add(&ns, "medtest0");
    let stick = d.wait_condition("stick", "ready");
    let device = &stick["device"];
    assert_eq!(
        device["devpath"], "/devices/virtual/net/medtest0",
        "{stick}"
    );
    assert_eq!(device["subsystem"], "net", "{stick}");
    let user = d.wait_condition("user", "ready");
    let pid = user["pid"].as_u64().expect("user runs");
    wait_started(&d, 1);
    let detail = d.medic_ok(&["status", "stick"]);
    assert!(
        detail.contains("/devices/virtual/net/medtest0"),
        "status NAME shows the device:\n{detail}"
    );

    ns.ip(&["link", "del", "medtest0"]);
    d.wait_condition("stick", "absent");
    let user = d.wait_condition("user", "blocked");
    assert!(user["pid"].is_null(), "stopped with its need: {user}");
    assert!(medic_tests::process_gone(pid as u32));
    assert!(d.service("stick")["device"].is_null());

    // Back again (a re-enumeration): started again.
    add(&ns, "medtest1");
    d.wait_condition("user", "ready");
    wait_started(&d, 2);
}

#[test]
fn coldplug_sees_a_device_that_is_already_there() {
    // The loopback link exists before the daemon: found by the sysfs walk, no uevent needed.
    // Neither root nor a namespace is needed for this one.
    let d = Daemon::start(
        r#"
[service.lo]
device = { subsystem = "net", name = "lo" }
[service.none]
device = { subsystem = "net", name = "no-such-link-*" }
"#,
    );
    let lo = d.wait_condition("lo", "ready");
    assert_eq!(lo["device"]["devpath"], "/devices/virtual/net/lo", "{lo}");
    assert_eq!(lo["kind"], "device");
    let none = d.wait_condition("none", "absent");
    assert!(none["device"].is_null(), "{none}");
}

/// Deletes the links it names when dropped (they live in the host namespace).
struct Links(Vec<String>);

impl Drop for Links {
    fn drop(&mut self) {
        for l in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", l])
                .output();
        }
    }
}

/// The names of the devices in a device set.
fn names(input: &medic_kernel::Input) -> Vec<String> {
    match input {
        medic_kernel::Input::Devices(set) => set.iter().map(|d| d.name.clone()).collect(),
        other => panic!("not a device set: {other:?}"),
    }
}

#[test]
fn an_overflowed_uevent_socket_is_repaired_by_a_rewalk() {
    // In the host namespace: sysfs there shows the links (a namespace's do not appear in the
    // host's /sys). The names are this test's own.
    if !medic_tests::root_or_skip(
        "an_overflowed_uevent_socket_is_repaired_by_a_rewalk",
        "to add links",
    ) {
        return;
    }
    const N: usize = 24;
    let tag = std::process::id() % 1000;
    let names_of: Vec<String> = (0..N).map(|i| format!("mdo{tag}x{i}")).collect();
    let mut links = Links(Vec::new());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let local = tokio::task::LocalSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let matcher = medic_kernel::DeviceMatch {
        subsystem: Some("net".into()),
        name: Some(format!("mdo{tag}x*")),
        ..Default::default()
    };
    // A receive buffer as small as the kernel allows: a few uevents fill it.
    let (watcher, first) = local.block_on(&rt, async {
        medic_io::devices::watch_with("/sys".into(), vec![matcher], tx, Some(1)).expect("watch")
    });
    assert!(names(&first).is_empty(), "{first:?}");
    // The watcher's task is not polled while nothing drives the runtime: every uevent of these
    // waits in the tiny buffer, and most are lost.
    for name in &names_of {
        let peer = name.replace("mdo", "mdp");
        let out = std::process::Command::new("ip")
            .args(["link", "add", name, "type", "veth", "peer", "name", &peer])
            .output()
            .expect("ip");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        links.0.push(name.clone());
    }
    let mut want = names_of.clone();
    want.sort();
    let got = local.block_on(&rt, async {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let input = rx.recv().await.expect("the watcher runs");
                if names(&input) == want {
                    return input;
                }
            }
        })
        .await
    });
    assert!(got.is_ok(), "the set of {N} links was never reported whole");
    drop(links);
    let gone = local.block_on(&rt, async {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if names(&rx.recv().await.expect("the watcher runs")).is_empty() {
                    return;
                }
            }
        })
        .await
    });
    assert!(gone.is_ok(), "the links' removal was never reported");
    drop(watcher);
}

/// The daemon's `NETLINK_KOBJECT_UEVENT` sockets (protocol 15 in `/proc/PID/net/netlink`).
fn uevent_sockets(d: &Daemon) -> usize {
    let pid = d.pid();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")).unwrap_or_default();
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let inode = cols.last()?;
            (cols.get(1) == Some(&"15")).then(|| format!("socket:[{inode}]"))
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter(|t| inodes.iter().any(|i| t.to_string_lossy() == *i))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn the_uevent_socket_is_open_only_while_a_device_service_is_configured() {
    let d = Daemon::start("[service.idle]\nrun = [\"/bin/sleep\", \"1000\"]\n");
    d.wait_condition("idle", "ready");
    assert_eq!(uevent_sockets(&d), 0, "no device service, no socket");
    d.write_config(
        "[service.idle]\nrun = [\"/bin/sleep\", \"1000\"]\n\
         [service.lo]\ndevice = { subsystem = \"net\", name = \"lo\" }\n",
    );
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_condition("lo", "ready");
    assert_eq!(uevent_sockets(&d), 1);
    d.write_config("[service.idle]\nrun = [\"/bin/sleep\", \"1000\"]\n");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(
        "the uevent socket to be closed",
        || (uevent_sockets(&d) == 0).then_some(()),
        || d.log(),
    );
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn a_sysfs_walk_takes() {
    let sysfs = medic_io::devices::Sysfs {
        root: "/sys".into(),
        matchers: std::sync::Arc::new(vec![medic_kernel::DeviceMatch {
            subsystem: Some("tty".into()),
            name: Some("ttyUSB*".into()),
            attrs: [("idVendor".to_string(), "12d1".to_string())].into(),
            ..Default::default()
        }]),
    };
    let mut took = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let _ = sysfs.walk();
        took.push(t.elapsed());
    }
    took.sort();
    let devices = std::fs::read_dir("/sys/class")
        .map(|d| {
            d.flatten()
                .filter_map(|c| std::fs::read_dir(c.path()).ok())
                .map(|e| e.count())
                .sum::<usize>()
        })
        .unwrap_or(0);
    println!(
        "sysfs walk ({devices} entries under /sys/class), 20 runs: median {:?}, max {:?}",
        took[10], took[19]
    );
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn uevent_to_dependent_started_latency() {
    const RUNS: usize = 20;
    let Some(ns) = Netns::new("devlat") else {
        return;
    };
    let mut latencies = Vec::new();
    // From `ip` having returned (the uevent was sent before): what the daemon itself adds.
    let mut after_ip = Vec::new();
    for i in 0..RUNS {
        // A fresh daemon each run: restarts of a dependent whose need flaps are backed off
        // (as they must be), and this measures the first start.
        let d = start(&ns);
        d.wait_condition("stick", "absent");
        let t0 = now_ns();
        // `ip` returns once the kernel has made the device (and sent its uevent).
        add(&ns, "medtest0");
        let t1 = now_ns();
        let started = wait_for(
            &format!("run {i}: user started"),
            || starts(&d).first().copied(),
            || d.describe("user"),
        );
        latencies.push(Duration::from_nanos(started.saturating_sub(t0) as u64));
        after_ip.push(Duration::from_nanos(started.saturating_sub(t1) as u64));
        drop(d);
        ns.ip(&["link", "del", "medtest0"]);
    }
    for (what, mut l) in [
        ("`ip link add` (veth) started", latencies),
        ("`ip link add` returned", after_ip),
    ] {
        l.sort();
        println!(
            "{what} → dependent's first instruction (`sh` spawned), {RUNS} runs: median {:?}, \
             p90 {:?}, min {:?}, max {:?}",
            l[RUNS / 2],
            l[RUNS * 9 / 10],
            l[0],
            l[RUNS - 1]
        );
    }
}
