//! Helpers shared by the `netns_*` tests: a throw-away network namespace per test, `ip`
//! commands inside it, and the netlink watcher running inside it on its own thread.
//!
//! Namespaces need root. Without it (or when `ip netns add` fails) a test prints `SKIP: …`
//! and passes, except when the `CI` environment variable is set: there a missing privilege
//! fails the test ([`medic_tests::skip`]), so CI never skips.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use medic_io::netlink::{self, LinkTable, WatchOptions};
use medic_kernel::{Input, LinkState};

/// A network namespace named `medic-TAG-PID-N`, deleted on drop.
pub struct Netns {
    /// The name under `/run/netns`.
    pub name: String,
}

impl Netns {
    /// Create a fresh namespace, or `None` (after printing why) when this machine cannot, which
    /// is a failure when `CI` is set.
    pub fn new(tag: &str) -> Option<Netns> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return skip(&format!("running as uid {euid}"));
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("medic-{tag}-{}-{n}", std::process::id());
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Err(e) => skip(&format!("cannot run `ip` (install iproute2): {e}")),
            Ok(out) if !out.status.success() => skip(&format!(
                "`ip netns add {name}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(_) => {
                let ns = Netns { name };
                ns.ip(&["link", "set", "lo", "up"]);
                Some(ns)
            }
        }
    }

    /// Run `ip -n NAME ARGS…`; panics with `ip`'s stderr when it fails.
    pub fn ip(&self, args: &[&str]) {
        let out = self.try_ip(args);
        assert!(
            out.status.success(),
            "`ip -n {} {}` failed: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Run `ip -n NAME ARGS…` and return what happened.
    pub fn try_ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip")
    }

    /// A veth pair `wan` ⇄ `wanpeer`, both up: `wan` has carrier while `wanpeer` is up.
    pub fn veth_wan(&self) {
        self.ip(&[
            "link", "add", "wan", "type", "veth", "peer", "name", "wanpeer",
        ]);
        self.ip(&["link", "set", "wanpeer", "up"]);
        self.ip(&["link", "set", "wan", "up"]);
    }

    /// A veth pair `ifname` (here) ⇄ `peer_ifname` (in `peer`), both up.
    pub fn veth_to(&self, ifname: &str, peer: &Netns, peer_ifname: &str) {
        self.ip(&[
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            peer_ifname,
            "netns",
            &peer.name,
        ]);
        peer.ip(&["link", "set", peer_ifname, "up"]);
        self.ip(&["link", "set", ifname, "up"]);
    }

    /// Write `value` to `/proc/sys/net/KEY` of this namespace (`ipv6/conf/all/forwarding`).
    pub fn sysctl(&self, key: &str, value: &str) {
        // Writes to /proc/sys/net apply to the namespace of the writing thread.
        self.run(|| {
            let path = format!("/proc/sys/net/{key}");
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
        });
    }

    /// Move the calling thread into this namespace (for good: call it on a dedicated thread).
    pub fn enter(&self) {
        enter(&self.name);
    }

    /// Run `f` on a thread inside this namespace and return its result.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter();
                f()
            })
            .join()
            .expect("thread in namespace panicked")
        })
    }

    /// `netlink::link_up(ifname)`, run inside this namespace.
    pub fn link_up(&self, ifname: &str) -> std::io::Result<()> {
        self.run(|| runtime().block_on(netlink::link_up(ifname)))
    }

    /// `netlink::link_set(ifname, up)`, run inside this namespace.
    pub fn link_set(&self, ifname: &str, up: bool) -> std::io::Result<()> {
        self.run(|| runtime().block_on(netlink::link_set(ifname, up)))
    }

    /// Start the netlink watcher inside this namespace.
    pub fn watch(&self) -> Watcher {
        self.watch_with(WatchOptions::default())
    }

    /// Start the netlink watcher inside this namespace, with options.
    pub fn watch_with(&self, options: WatchOptions) -> Watcher {
        Watcher::start(self, options, 1024)
    }

    /// Start the netlink watcher inside this namespace, its queue to the reader bounded by
    /// `queue` inputs.
    pub fn watch_with_queue(&self, options: WatchOptions, queue: usize) -> Watcher {
        Watcher::start(self, options, queue)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes every link in it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Move the calling thread into the namespace `name` (for good: use a dedicated thread).
pub fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: a valid namespace fd; CLONE_NEWNET changes only this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

fn skip(why: &str) -> Option<Netns> {
    medic_tests::skip(
        "this network namespace test",
        &format!("needs root and `ip` for network namespaces: {why}"),
    );
    None
}

/// A current-thread tokio runtime, like the daemon's.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

enum Control {
    /// Block the watcher's runtime (so its socket fills up).
    Stall(Duration),
    /// Stop reading the watcher's inputs for a while (so its queue fills up); says when it
    /// has begun.
    Ignore(Duration, std::sync::mpsc::Sender<()>),
}

/// The netlink watcher running on its own thread inside a namespace; its inputs arrive here.
pub struct Watcher {
    /// The inputs of the initial dump, sent before `watch` returned.
    pub initial: Vec<Input>,
    /// The watcher's table, as `medic status` would read it.
    pub table: LinkTable,
    /// Every `LinkChanged` received after the initial dump, for failure messages.
    pub seen: Vec<(String, Option<LinkState>)>,
    inputs: mpsc::Receiver<Input>,
    control: Option<tokio::sync::mpsc::UnboundedSender<Control>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(ns: &Netns, options: WatchOptions, queue: usize) -> Watcher {
        let (inputs_tx, inputs) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let (control, mut control_rx) = tokio::sync::mpsc::unbounded_channel();
        let ns_name = ns.name.clone();
        let thread = std::thread::spawn(move || {
            enter(&ns_name);
            runtime().block_on(async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel(queue);
                let watcher = netlink::watch_with(tx, options).await.expect("watch");
                let mut initial = Vec::new();
                while let Ok(input) = rx.try_recv() {
                    initial.push(input);
                }
                ready_tx.send((initial, watcher.table())).unwrap();
                loop {
                    tokio::select! {
                        input = rx.recv() => match input {
                            Some(input) => {
                                if inputs_tx.send(input).is_err() {
                                    break;
                                }
                            }
                            None => break,
                        },
                        control = control_rx.recv() => match control {
                            Some(Control::Stall(d)) => std::thread::sleep(d),
                            Some(Control::Ignore(d, began)) => {
                                let _ = began.send(());
                                tokio::time::sleep(d).await;
                            }
                            None => break,
                        },
                    }
                }
                drop(watcher);
            });
        });
        let (initial, table) = ready
            .recv_timeout(Duration::from_secs(10))
            .expect("the watcher's initial dump");
        Watcher {
            initial,
            table,
            seen: Vec::new(),
            inputs,
            control: Some(control),
            thread: Some(thread),
        }
    }

    /// The state of `ifname` in the initial dump (`None`: not in it).
    pub fn initial_state(&self, ifname: &str) -> Option<LinkState> {
        self.initial.iter().find_map(|i| match i {
            Input::LinkChanged { ifname: n, link } if n == ifname => *link,
            _ => None,
        })
    }

    /// Stop reading the watcher's inputs for `d` (the watcher itself goes on); returns once
    /// that has begun.
    pub fn ignore(&self, d: Duration) {
        let (began, begun) = std::sync::mpsc::channel();
        let control = self.control.as_ref().unwrap();
        control.send(Control::Ignore(d, began)).unwrap();
        begun
            .recv_timeout(Duration::from_secs(10))
            .expect("the reader to pause");
    }

    /// Block the watcher's runtime for `d`, starting now.
    pub fn stall(&self, d: Duration) {
        let control = self.control.as_ref().unwrap();
        control.send(Control::Stall(d)).unwrap();
    }

    /// Wait until a `LinkChanged` for `ifname` satisfies `want`; returns how long it took.
    /// Panics after `timeout`, listing what did arrive.
    pub fn wait_for(
        &mut self,
        ifname: &str,
        timeout: Duration,
        want: impl Fn(Option<LinkState>) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.inputs.recv_timeout(left) {
                Ok(Input::LinkChanged { ifname: n, link }) => {
                    self.seen.push((n.clone(), link));
                    if n == ifname && want(link) {
                        return start.elapsed();
                    }
                }
                Ok(other) => panic!("the watcher sent a non-link input: {other:?}"),
                Err(_) => panic!(
                    "no matching LinkChanged for {ifname} within {timeout:?}; received: {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Every `LinkChanged` for `ifname` that arrives within `d`.
    pub fn collect(&mut self, ifname: &str, d: Duration) -> Vec<Option<LinkState>> {
        let end = Instant::now() + d;
        let mut found = Vec::new();
        while let Ok(input) = self
            .inputs
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            if let Input::LinkChanged { ifname: n, link } = input {
                self.seen.push((n.clone(), link));
                if n == ifname {
                    found.push(link);
                }
            }
        }
        found
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.control = None; // ends the forwarding loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
